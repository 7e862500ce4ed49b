"""Embedding Explorer's trainer: data, models, losses, training loop, run store and evaluation.

This package never imports Qt, so the same code runs headless on a GPU server and behind the desktop app.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
