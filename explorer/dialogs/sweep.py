"""A loss sweep from the window: the losses to compare, seeds and epochs; the runs train one after another in a
thread (:func:`trainer.train.sweep.run_sweep`), and the table fills with each loss's held-out MAP@R and its 95 %
interval. The result is a folder of ordinary runs (open any of them with File > Open run) and sweep.json."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel,
                               QListWidget, QListWidgetItem, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem,
                               QVBoxLayout)

from trainer.config import TrainConfig

# a first comparison that finishes: one loss of each family, the recipe's own first
DEFAULT_LOSSES = ("normalized_softmax", "arcface", "proxy_anchor", "multi_similarity", "triplet", "contrastive")


class SweepDialog(QDialog):
    run_finished = Signal(str)  # a run folder that has finished (for Recent runs)
    _progress = Signal(str)
    _summary = Signal(object)
    _ended = Signal(str)

    def __init__(self, cfg: TrainConfig, out: Path, parent=None) -> None:
        from trainer.model.losses import LOSSES

        super().__init__(parent)
        self.setWindowTitle("Compare losses")
        self.resize(760, 560)
        self.cfg = cfg
        self.out = Path(out)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.summary = []

        self.losses = QListWidget()
        self.losses.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        for name, spec in LOSSES.items():
            item = QListWidgetItem(spec.title)
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if name in DEFAULT_LOSSES else Qt.CheckState.Unchecked)
            item.setToolTip(spec.description)
            self.losses.addItem(item)
        self.seeds = QSpinBox()
        self.seeds.setRange(1, 20)
        self.seeds.setValue(3)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 10000)
        self.epochs.setValue(cfg.optim.epochs)
        self.where = QLabel(str(self.out))
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form = QFormLayout()
        form.addRow("Seeds per loss", self.seeds)
        form.addRow("Epochs", self.epochs)
        form.addRow("Runs go to", self.where)
        note = QLabel("Every loss trains with its recipe (its usual miner and parameters; learning rates and the "
                      "rest as the form leaves them to the recipe) on the same split and budget.")
        note.setWordWrap(True)
        note.setObjectName("help")

        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["loss", "held-out MAP@R", "95 % interval", "untrained", "seeds"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.status = QLabel("Tick the losses to compare and press Start.")
        self.status.setWordWrap(True)
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self._stop.set)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.stop_button)
        row.addStretch(1)
        row.addWidget(buttons)

        top = QHBoxLayout()
        top.addWidget(self.losses, 1)
        right = QVBoxLayout()
        right.addLayout(form)
        right.addWidget(note)
        right.addStretch(1)
        top.addLayout(right, 1)
        v = QVBoxLayout(self)
        v.addLayout(top, 1)
        v.addWidget(self.table, 1)
        v.addWidget(self.status)
        v.addLayout(row)
        self._progress.connect(self.status.setText)
        self._summary.connect(self._show_summary)
        self._ended.connect(self._on_ended)

    def chosen_losses(self) -> list[str]:
        return [self.losses.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.losses.count())
                if self.losses.item(i).checkState() == Qt.CheckState.Checked]

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @Slot()
    def start(self) -> None:
        losses = self.chosen_losses()
        if not losses or self.is_running():
            self.status.setText("Tick at least one loss." if not losses else self.status.text())
            return
        self._stop.clear()
        cfg = self.cfg.replace(**{"optim.epochs": int(self.epochs.value())})
        seeds = int(self.seeds.value())
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.losses.setEnabled(False)
        self._thread = threading.Thread(target=self._work, args=(cfg, losses, seeds), name="sweep", daemon=True)
        self._thread.start()

    def _work(self, cfg: TrainConfig, losses: list[str], seeds: int) -> None:
        from trainer import events as ev
        from trainer.train.sweep import run_name, run_sweep, summarize

        t0 = time.monotonic()
        total = len(losses) * seeds

        def emit_for(loss: str, seed: int):
            k = losses.index(loss) * seeds + seed + 1

            def emit(e) -> None:
                if isinstance(e, ev.EpochDone):
                    m = e.metrics.get("heldout/mean_average_precision_at_r")
                    self._progress.emit(f"run {k} of {total} ({loss}, seed {seed}): epoch {e.epoch}, held-out MAP@R "
                                        f"{'-' if m is None else f'{m:.3f}'}; {time.monotonic() - t0:.0f} s so far")
                elif isinstance(e, ev.Stopped) and e.reason == "finished":
                    self._summary.emit(summarize(self.out, losses, seeds))
                    self.run_finished.emit(str(self.out / run_name(loss, seed)))
                elif isinstance(e, ev.Failed):
                    self._progress.emit(f"{loss}, seed {seed} failed: {e.message}")
            return emit

        try:
            summary = run_sweep(cfg, losses, seeds, self.out, emit_for=emit_for, stop=self._stop)
        except Exception as exc:  # shown in the dialog
            self._ended.emit(f"The sweep failed: {exc}")
            return
        self._summary.emit(summary)
        self._ended.emit("Stopped; press Start to continue where it was." if self._stop.is_set() else
                         f"Done in {time.monotonic() - t0:.0f} s: runs and sweep.json are in {self.out}.")

    @Slot(object)
    def _show_summary(self, summary) -> None:
        import math

        self.summary = list(summary)
        rows = sorted(self.summary, key=lambda s: -s.mean if math.isfinite(s.mean) else math.inf)
        self.table.setRowCount(len(rows))
        for r, s in enumerate(rows):
            untrained = sum(s.untrained) / len(s.untrained) if s.untrained else math.nan
            cells = [s.loss, f"{s.mean:.3f}" if s.values else "-",
                     f"{s.low:.3f} – {s.high:.3f}" if len(s.values) > 1 else "-",
                     f"{untrained:.3f}" if s.untrained else "-", str(len(s.values))]
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))

    @Slot(str)
    def _on_ended(self, message: str) -> None:
        self.status.setText(message)
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.losses.setEnabled(True)

    def done(self, r: int) -> None:  # closing stops the sweep after the batch in progress
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)
        super().done(r)
