"""The six runtime patterns, composed from the boundary and the runtime."""
