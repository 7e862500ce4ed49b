"""The triplets view."""
