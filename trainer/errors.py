"""The error a user can act on; its message says what.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A problem the user can act on (bad data, NaN loss, mismatched checkpoint); its message says what."""
