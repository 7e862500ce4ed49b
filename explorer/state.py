"""The shared model of the main window: which run, which epoch, what is selected, which threshold.

Views take an :class:`AppState` in their constructor and subscribe to its signals; they never talk to each
other directly (the napari model/view split).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal


class AppState(QObject):
    run_changed = Signal(object)  # trainer.store.RunReader | None
    epochs_available = Signal(list)  # committed epochs of the run, ascending
    epoch_changed = Signal(int)  # the epoch shown
    selection_changed = Signal(object)  # np.ndarray[int64] of sample ids
    highlight_changed = Signal(object)  # np.ndarray[int64] of sample ids to mark (neighbours, a triplet)
    threshold_changed = Signal(float)  # verification distance threshold
    marks_changed = Signal(object)  # dict sample id -> (action, text) of the open run's edits (curate)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.run = None
        self.epochs: list[int] = []
        self.epoch: int = -1
        self.selection = np.empty(0, dtype=np.int64)
        self.highlight = np.empty(0, dtype=np.int64)
        self.threshold: float | None = None
        self.marks: dict[int, tuple[str, str]] = {}

    def set_run(self, run) -> None:
        self.run = run
        self.selection = np.empty(0, dtype=np.int64)
        self.highlight = np.empty(0, dtype=np.int64)
        self.marks = {}
        self.epochs = list(run.epochs) if run is not None else []
        self.epoch = self.epochs[-1] if self.epochs else -1
        self.run_changed.emit(run)
        self.epochs_available.emit(list(self.epochs))
        if self.epoch >= 0:
            self.epoch_changed.emit(self.epoch)

    def add_epochs(self, epochs: list[int], follow: bool = True) -> None:
        """New epochs were committed; show the newest if ``follow`` (the user is watching live)."""
        new = sorted(set(self.epochs) | set(epochs))
        if new == self.epochs:
            return
        self.epochs = new
        self.epochs_available.emit(list(new))
        if follow:
            self.set_epoch(new[-1])

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.epoch_changed.emit(self.epoch)

    def set_selection(self, ids) -> None:
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        if not np.array_equal(ids, self.selection):
            self.selection = ids
            self.selection_changed.emit(ids)

    def set_highlight(self, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.highlight = ids
        self.highlight_changed.emit(ids)

    def set_threshold(self, value: float) -> None:
        value = float(value)
        if self.threshold is None or value != self.threshold:
            self.threshold = value
            self.threshold_changed.emit(value)

    def set_marks(self, marks: dict[int, tuple[str, str]]) -> None:
        """The edits of the open run by sample id: ("exclude" | "relabel" | "duplicate", a short text)."""
        marks = dict(marks)
        if marks != self.marks:
            self.marks = marks
            self.marks_changed.emit(marks)
