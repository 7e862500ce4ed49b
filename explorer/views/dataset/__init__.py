"""The dataset view."""
