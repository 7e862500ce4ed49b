"""The learning-rate range test in a dialog: the loss against the rising rate, drawn live; Apply puts the
suggested rate (or one picked with a click on the curve) into the form."""

from __future__ import annotations

import math
import threading

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel,
                               QProgressBar, QPushButton, QSpinBox, QVBoxLayout)

from trainer.config import TrainConfig


class LRFindDialog(QDialog):
    """Runs :func:`trainer.train.lr_find.lr_range_test` in a thread; closing the dialog stops it."""

    applied = Signal(float)
    _step = Signal(int, int, float, float)
    _done = Signal(object)
    _failed = Signal(str)

    def __init__(self, cfg: TrainConfig, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Find a learning rate")
        self.resize(720, 520)
        self.cfg = cfg
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.result = None
        self.chosen: float | None = None

        self.start_lr = QDoubleSpinBox()
        self.start_lr.setDecimals(8)
        self.start_lr.setRange(1e-9, 1.0)
        self.start_lr.setValue(1e-6)
        self.end_lr = QDoubleSpinBox()
        self.end_lr.setDecimals(4)
        self.end_lr.setRange(1e-6, 100.0)
        self.end_lr.setValue(1.0)
        self.steps = QSpinBox()
        self.steps.setRange(10, 1000)
        self.steps.setValue(100)
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.start)
        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(QLabel("from"))
        row.addWidget(self.start_lr)
        row.addWidget(QLabel("to"))
        row.addWidget(self.end_lr)
        row.addWidget(QLabel("in"))
        row.addWidget(self.steps)
        row.addWidget(QLabel("batches"))
        row.addStretch(1)
        row.addWidget(self.run_button)
        form.addRow("Learning rate", row)

        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.setLogMode(x=True, y=False)
        self.plot.setLabel("bottom", "learning rate (backbone)")
        self.plot.setLabel("left", "loss")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        for side in ("bottom", "left"):  # "(x0.001)" on a log axis of rates reads as a wrong scale
            self.plot.getAxis(side).enableAutoSIPrefix(False)
        self.raw_curve = self.plot.plot(pen=pg.mkPen("#bbbbbb", width=1), name="loss")
        self.smooth_curve = self.plot.plot(pen=pg.mkPen("#1f77b4", width=2), name="smoothed")
        self.marker = pg.InfiniteLine(angle=90, pen=pg.mkPen("#d62728", width=2, style=Qt.PenStyle.DashLine))
        self.marker.setVisible(False)
        self.plot.addItem(self.marker)
        self.plot.scene().sigMouseClicked.connect(self._on_click)

        self.progress = QProgressBar()
        self.progress.setRange(0, self.steps.value())
        self.status = QLabel("A short run whose learning rate rises exponentially, one batch per rate, on this "
                             "folder's own batches (nothing is saved). Press Run.")
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Apply | QDialogButtonBox.StandardButton.Close)
        self.apply_button = self.buttons.button(QDialogButtonBox.StandardButton.Apply)
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self._apply)
        self.buttons.rejected.connect(self.reject)

        v = QVBoxLayout(self)
        v.addLayout(form)
        v.addWidget(self.plot, 1)
        v.addWidget(self.progress)
        v.addWidget(self.status)
        v.addWidget(self.buttons)
        self._lrs: list[float] = []
        self._losses: list[float] = []
        self._step.connect(self._on_step)
        self._done.connect(self._on_done)
        self._failed.connect(self._on_failed)

    # ---- running ----------------------------------------------------------------------------------------------
    @Slot()
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        start, end = float(self.start_lr.value()), float(self.end_lr.value())
        if not start < end:
            self.status.setText(f"The start rate ({start:g}) must be below the end rate ({end:g}).")
            return
        self._stop.clear()
        self._lrs, self._losses = [], []
        self.raw_curve.setData([], [])
        self.smooth_curve.setData([], [])
        self.marker.setVisible(False)
        self.apply_button.setEnabled(False)
        self.run_button.setEnabled(False)
        self.progress.setRange(0, self.steps.value())
        self.progress.setValue(0)
        self.status.setText("Scanning the folder and building the model …")
        steps = int(self.steps.value())
        self._thread = threading.Thread(target=self._work, args=(start, end, steps), name="lr-find", daemon=True)
        self._thread.start()

    def _work(self, start: float, end: float, steps: int) -> None:
        from trainer.train.lr_find import lr_range_test

        try:
            res = lr_range_test(self.cfg, start_lr=start, end_lr=end, steps=steps, stop=self._stop,
                                progress=lambda i, n, lr, loss: self._step.emit(i, n, lr, loss))
        except Exception as exc:  # shown in the dialog: a bad folder, an option the model refuses, ...
            self._failed.emit(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))
            return
        self._done.emit(res)

    @Slot(int, int, float, float)
    def _on_step(self, i: int, n: int, lr: float, loss: float) -> None:
        self._lrs.append(lr)
        self._losses.append(loss)
        self.progress.setValue(i)
        self.status.setText(f"batch {i} of {n}: learning rate {lr:.2g}, loss {loss:.4f}")
        ok = np.isfinite(self._losses)
        if ok.any():
            self.raw_curve.setData(np.asarray(self._lrs)[ok], np.asarray(self._losses)[ok])

    @Slot(object)
    def _on_done(self, res) -> None:
        self.result = res
        self.run_button.setEnabled(True)
        self.progress.setValue(self.progress.maximum())
        ok = np.isfinite(res.smoothed)
        if ok.any():
            y = res.smoothed[ok]
            self.smooth_curve.setData(res.lrs[ok], y)
            raw = res.losses[np.isfinite(res.losses)]
            lo, first = float(min(y.min(), raw.min())), float(y[0])
            span = max(abs(first - lo), 1e-6)  # from the lowest loss to a little above the start: the blow-up is cut
            self.plot.setYRange(lo - 0.1 * span, first + 0.5 * span)
        if res.suggestion is None:
            self.status.setText(f"No suggestion: {res.reason}. Click the curve to pick a rate yourself.")
            return
        self._choose(res.suggestion, f"Suggested: {res.suggestion:.2g} — {res.reason}. Apply puts it into the "
                                     f"form; a click on the curve picks another rate.")

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.run_button.setEnabled(True)
        self.status.setText(f"The range test failed: {message}")

    # ---- choosing ---------------------------------------------------------------------------------------------
    def _choose(self, lr: float, text: str) -> None:
        self.chosen = float(lr)
        self.marker.setValue(math.log10(lr))
        self.marker.setVisible(True)
        self.apply_button.setEnabled(True)
        self.apply_button.setText(f"Apply {lr:.2g}")
        self.status.setText(text)

    def _on_click(self, event) -> None:
        if self.result is None or not len(self.result.lrs):
            return
        pos = self.plot.getPlotItem().vb.mapSceneToView(event.scenePos())
        lr = float(10 ** pos.x())
        lr = float(np.clip(lr, self.result.lrs[0], self.result.lrs[-1]))
        self._choose(lr, f"Picked {lr:.2g}. Apply puts it into the form.")

    @Slot()
    def _apply(self) -> None:
        if self.chosen is not None:
            self.applied.emit(self.chosen)
            self.accept()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a running test and wait for its thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def done(self, r: int) -> None:
        # closing in any way stops the test and waits for its thread (it checks between batches): a thread left
        # inside torch when the app quits aborts the process ("terminate called without an active exception")
        self.stop(timeout=30.0)
        super().done(r)
