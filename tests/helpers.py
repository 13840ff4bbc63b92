"""Small builders shared by tests (not fixtures: plain functions)."""
