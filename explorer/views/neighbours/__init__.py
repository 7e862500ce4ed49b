"""The neighbours view."""
