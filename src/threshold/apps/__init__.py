"""Reference applications written against the public API."""
