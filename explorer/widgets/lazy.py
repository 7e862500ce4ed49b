"""Deferring the work of analysis views that cannot be seen.

The triplet census and the threshold studio recompute for every committed epoch in worker threads; during
training on two cores a view the user is not looking at would take CPU from the trainer and the map. A view with
``defer_while_hidden`` set (the main window sets it on its tabs) only notes that it is stale while hidden and
catches up once when it is shown.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer


class DeferWhileHidden:
    """Mixin for a QWidget: call :meth:`_defer` before starting work; implement :meth:`_catch_up`."""

    defer_while_hidden = False
    _stale = False

    def _defer(self) -> bool:
        """True (and remember to catch up) when the work should wait until the view is shown."""
        if self.defer_while_hidden and not self.isVisible():  # type: ignore[attr-defined]
            self._stale = True
            return True
        return False

    def is_stale(self) -> bool:
        """True while work was deferred and the view has not been shown since."""
        return self._stale

    def _catch_up(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)  # type: ignore[misc]
        if self._stale:
            self._stale = False
            QTimer.singleShot(0, self._catch_up)  # after the show: isVisible() is true by then
