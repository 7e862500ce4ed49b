"""The errors a user can act on; each message says what went wrong, with which file or option, and what to do.

Every entry point (the commands of main.py, the window) turns an ``ExplorerError`` into one line, never a
traceback."""

from __future__ import annotations


class ExplorerError(RuntimeError):
    """Base of the errors whose message is meant for the user."""


class TrainingError(ExplorerError):
    """A problem the user can act on (bad data, NaN loss, mismatched checkpoint, a bad option)."""


def short_reason(exc: BaseException, limit: int = 240) -> str:
    """An exception's message in one line: its first two non-empty lines (torch puts the useful part second)."""
    lines = [line.strip().rstrip(":") for line in str(exc).splitlines() if line.strip()]
    text = "; ".join(lines[:2]) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
