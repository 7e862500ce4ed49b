"""The training view."""
