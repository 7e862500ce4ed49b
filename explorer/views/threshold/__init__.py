"""The threshold view."""
