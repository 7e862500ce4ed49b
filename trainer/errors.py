"""The errors a user can act on; each message says what went wrong, with which file or option, and what to do.

Every entry point (the commands of main.py, the window) turns an ``ExplorerError`` into one line, never a
traceback."""

from __future__ import annotations


class ExplorerError(RuntimeError):
    """Base of the errors whose message is meant for the user."""


class TrainingError(ExplorerError):
    """A problem the user can act on (bad data, NaN loss, mismatched checkpoint, a bad option)."""
