"""The training panel: Start / Pause / Stop, progress with ETA, live loss, miner and held-out metric curves, a log.

It only draws what :class:`~explorer.training.TrainingController` reports; starting a run is asked of the main
window through :attr:`TrainingView.start_requested` (it owns the configuration panel).
"""

from __future__ import annotations

import time
from pathlib import Path
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (QGridLayout, QHBoxLayout, QLabel, QMessageBox, QPlainTextEdit, QProgressBar,
                               QPushButton, QSplitter, QVBoxLayout, QWidget)
from explorer.widgets.labels import shrinkable
from explorer.widgets.charts import count_chart, set_legend_title
from explorer.jobs import JobRunner
from explorer.state import AppState
from explorer.training import TrainingController
from trainer import events as ev
from explorer.views.training.jobs import read_batch_telemetry

# metric keys (trainer.analysis.retrieval.retrieval_metrics) shown as curves, with the label a person reads
METRIC_LABELS = {
    "precision_at_1": "P@1",
    "mean_average_precision_at_r": "MAP@R",
    "r_precision": "R-Precision",
    "recall_at_4": "Recall@4",
    "auc": "ROC AUC",
}


def metric_label(key: str) -> str | None:
    """The curve label for a metric key, or None when the key is not drawn (train P@1 is, as an overfit hint)."""
    split, _, base = key.rpartition("/")
    split = split or "heldout"
    if split == "heldout" and base in METRIC_LABELS:
        return METRIC_LABELS[base]
    if split == "train" and base == "precision_at_1":
        return "train P@1"
    return None


_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f"]


def format_seconds(seconds: float) -> str:
    """'1 h 02 min', '3 min 05 s' or '12 s': a duration a person reads at a glance."""
    if not np.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


class _Series:
    """A growing (x, y) series for one curve: amortised O(1) append, setData on a view of the buffer."""

    def __init__(self, curve: pg.PlotDataItem, capacity: int = 1024) -> None:
        self.curve = curve
        self.x = np.empty(capacity, dtype=np.float64)
        self.y = np.empty(capacity, dtype=np.float64)
        self.n = 0

    def append(self, x: float, y: float) -> None:
        if self.n == len(self.x):
            self.x = np.concatenate([self.x, np.empty_like(self.x)])
            self.y = np.concatenate([self.y, np.empty_like(self.y)])
        self.x[self.n] = x
        self.y[self.n] = y
        self.n += 1

    def extend(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """Append many points at once (a stored epoch's batches): one copy, no per-point Python loop."""
        xs, ys = np.asarray(xs, np.float64).ravel(), np.asarray(ys, np.float64).ravel()
        need = self.n + len(xs)
        if need > len(self.x):
            size = max(need, 2 * len(self.x))
            self.x = np.concatenate([self.x[: self.n], np.empty(size - self.n)])
            self.y = np.concatenate([self.y[: self.n], np.empty(size - self.n)])
        self.x[self.n: need] = xs
        self.y[self.n: need] = ys
        self.n = need

    def flush(self) -> None:
        self.curve.setData(self.x[: self.n], self.y[: self.n])

    def clear(self) -> None:
        self.n = 0
        self.curve.setData([], [])


METRIC_TITLE = "Metrics per epoch"


class TrainingView(QWidget):
    """Buttons, progress and live curves of the trainer; also shows a followed (CLI) run's epochs."""

    start_requested = Signal()  # the main window validates the config and calls controller.start
    continue_requested = Signal()  # "Continue this run": the main window resumes the opened run

    def __init__(self, state: AppState, controller: TrainingController, parent: QWidget | None = None, *,
                 jobs: JobRunner | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.controller = controller
        self.jobs = jobs if jobs is not None else JobRunner(self, max_threads=1)
        self._tel_key = f"telemetry-{id(self)}"
        self._tel_run = None  # the run whose stored batches are being read in the background
        self._tel_queue: list[int] = []  # its epochs not yet asked for, in order
        self._tel_asked: list[int] = []  # the epochs of the job in flight
        self._batches_per_epoch = 1
        self._epochs = 1
        self._start_epoch = 0
        self._t0 = 0.0
        self._batches_done = 0  # since this session's Started
        self._paused_seconds = 0.0  # of that time, spent paused (not training): left out of the ETA
        self._paused_at: float | None = None
        self._epoch_t0 = 0.0
        self._last_draw = 0.0
        self._dirty = False
        self._last_batch: ev.BatchDone | None = None
        self._metric_series: dict[str, _Series] = {}
        self._live = False  # between running_changed(True) and (False): curves come from events, not the store
        self._drawn_epochs: list[int] = []  # epochs of an opened run whose batch curves are drawn
        self.errors: list[str] = []  # messages shown to the user (tests read them)
        self._build()
        controller.started.connect(self._on_started)
        controller.batch_done.connect(self._on_batch)
        controller.epoch_done.connect(self._on_epoch)
        controller.log.connect(self._on_log)
        controller.failed.connect(self._on_failed)
        controller.stopped.connect(self._on_stopped)
        controller.paused.connect(self._on_paused)
        controller.running_changed.connect(self._on_running_changed)
        controller.snapshot_ready.connect(self._on_snapshot)
        state.run_changed.connect(self._on_run_changed)
        state.epochs_available.connect(self._on_epochs_available)
        controller.following_changed.connect(self._on_following)
        self._update_buttons()

    # ---- layout -----------------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.start_button = QPushButton("Start")
        self.start_button.setShortcut(QKeySequence("Ctrl+Return"))
        self.start_button.setToolTip("Start training with the configuration on the left (Ctrl+Enter)")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setShortcut(QKeySequence("Ctrl+P"))
        self.pause_button.setToolTip("Pause between two batches; press again to resume (Ctrl+P)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setShortcut(QKeySequence("Ctrl+."))
        self.stop_button.setToolTip("Stop within one batch; the epochs already committed stay usable (Ctrl+.)")
        self.start_button.clicked.connect(self.start_requested)
        self.continue_button = QPushButton("Continue this run")
        self.continue_button.setShortcut(QKeySequence("Ctrl+Shift+Return"))
        self.continue_button.setToolTip(
            "Train the opened run further from its last checkpoint, with its own configuration; raise Epochs on "
            "the left to train longer (Ctrl+Shift+Enter)")
        self.continue_button.clicked.connect(self.continue_requested)
        self.pause_button.toggled.connect(self._on_pause_toggled)
        self.stop_button.clicked.connect(self.request_stop)
        self.status_label = shrinkable(QLabel("Idle"))  # a long status wraps; it never widens the window
        self.status_label.setObjectName("trainingStatus")

        buttons = QHBoxLayout()
        for b in (self.start_button, self.continue_button, self.pause_button, self.stop_button):
            buttons.addWidget(b)
        buttons.addWidget(self.status_label, 1)

        self.epoch_progress = QProgressBar()
        self.epoch_progress.setFormat("Epoch: %p%")
        self.run_progress = QProgressBar()
        self.run_progress.setFormat("Run: %p%")
        self.epoch_eta = QLabel("")
        self.run_eta = QLabel("")
        self.speed_label = QLabel("")
        progress = QGridLayout()
        progress.addWidget(self.epoch_progress, 0, 0)
        progress.addWidget(self.epoch_eta, 0, 1)
        progress.addWidget(self.run_progress, 1, 0)
        progress.addWidget(self.run_eta, 1, 1)
        progress.addWidget(self.speed_label, 2, 0, 1, 2)
        progress.setColumnStretch(0, 1)

        self.loss_plot = count_chart("Loss per batch", "batch")
        self.loss_plot.showGrid(x=True, y=True, alpha=0.2)
        self.loss_series = _Series(self.loss_plot.plot(pen=pg.mkPen("#1f77b4", width=1.5)))
        for plot in (self.loss_plot,):  # long per-batch curves: draw about one point per pixel
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)

        self.miner_plot = count_chart("Miner: triplets per batch (PML rules)", "batch")
        set_legend_title(self.miner_plot, "Miner: triplets per batch (PML rules)",
                         [("easy", "#2ca02c"), ("semi-hard", "#ff7f0e"), ("hard", "#d62728")])
        self.miner_series = {
            "easy": _Series(self.miner_plot.plot(pen=pg.mkPen("#2ca02c", width=1.5), name="easy")),
            "semi-hard": _Series(self.miner_plot.plot(pen=pg.mkPen("#ff7f0e", width=1.5), name="semi-hard")),
            "hard": _Series(self.miner_plot.plot(pen=pg.mkPen("#d62728", width=1.5), name="hard")),
        }
        self.miner_plot.setDownsampling(auto=True, mode="peak")
        self.miner_plot.setClipToView(True)
        self.miner_plot.setToolTip("easy: d(a,n) > d(a,p) + margin; semi-hard: d(a,p) < d(a,n) <= d(a,p) + margin; "
                                   "hard: d(a,n) <= d(a,p)")

        self.metric_plot = count_chart(METRIC_TITLE, "epoch")
        self.metric_plot.showGrid(x=True, y=True, alpha=0.2)
        self._metric_legend: list[tuple[str, str]] = []

        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setPlaceholderText("Trainer messages appear here.")
        # the log follows new lines unless the user scrolled up to read (then it stays where they are until they
        # scroll back to the end); it stopped following after a few epochs before
        self._log_follows = True

        plots = QSplitter(Qt.Orientation.Vertical)
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.loss_plot)
        top.addWidget(self.miner_plot)
        plots.addWidget(top)
        plots.addWidget(self.metric_plot)
        plots.addWidget(self.log_view)
        plots.setSizes([300, 250, 120])

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addLayout(progress)
        layout.addWidget(plots, 1)

    # ---- buttons ----------------------------------------------------------------------------------------------
    def _update_buttons(self, running: bool | None = None) -> None:
        if running is None:
            running = self.controller.is_running()
        self.start_button.setEnabled(not running)
        run = self.state.run
        self.continue_button.setEnabled(not running and run is not None and bool(getattr(run, "checkpoints", [])))
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        if not running:
            self.pause_button.blockSignals(True)
            self.pause_button.setChecked(False)
            self.pause_button.setText("Pause")
            self.pause_button.blockSignals(False)

    @Slot()
    def request_stop(self) -> None:
        """Stop: said at once (the trainer ends its batch, or its evaluation pass, first)."""
        if not self.controller.is_running():
            return
        self.controller.stop()
        self.stop_button.setEnabled(False)
        self.pause_button.setEnabled(False)
        self.status_label.setText("Stopping after this batch… (the epochs already committed are kept)")
        self.append_log("Stop requested")

    @Slot(bool)
    def _on_pause_toggled(self, checked: bool) -> None:
        self.controller.set_paused(checked)
        self.pause_button.setText("Resume" if checked else "Pause")
        if checked:
            self.status_label.setText("Pausing after this batch…")

    @Slot(bool)
    def _on_running_changed(self, running: bool) -> None:
        self._live = running
        self._update_buttons(running)  # the thread may still be finishing its last line: trust the signal

    # ---- events -----------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Clear curves and progress (a new run starts)."""
        self._cancel_telemetry()
        self._last_batch = None
        self.loss_series.clear()
        for s in self.miner_series.values():
            s.clear()
        for s in self._metric_series.values():
            s.clear()
        self.metric_plot.clear()
        self._metric_legend = []
        set_legend_title(self.metric_plot, METRIC_TITLE, [])
        self._metric_series.clear()
        self.epoch_progress.setValue(0)
        self.run_progress.setValue(0)
        self.epoch_eta.setText("")
        self.run_eta.setText("")
        self.speed_label.setText("")

    def append_log(self, message: str, level: str = "info") -> None:
        """Add a time-stamped line to the log panel."""
        prefix = {"warning": "WARNING ", "error": "ERROR "}.get(level, "")
        self._append_log_text(f"{time.strftime('%H:%M:%S')}  {prefix}{message}")

    def _append_log_text(self, text: str) -> None:
        bar = self.log_view.verticalScrollBar()
        if self.log_view.isVisible():  # hidden, its range is not laid out: keep what the user last chose
            self._log_follows = bar.value() >= bar.maximum() - 1
        self.log_view.appendPlainText(text)
        if self._log_follows:
            self.scroll_log_to_end()

    def scroll_log_to_end(self) -> None:
        bar = self.log_view.verticalScrollBar()
        bar.setValue(bar.maximum())

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if self._log_follows:  # lines added while the tab was hidden: the range was not laid out then
            QTimer.singleShot(0, self.scroll_log_to_end)

    @Slot(object)
    def _on_started(self, e: ev.Started) -> None:
        if e.start_epoch == 0:
            self.reset()
        else:  # continuing an opened run: its stored batches go on the curves before the new ones
            self._finish_telemetry_now()
        self._batches_per_epoch = max(1, int(e.batches_per_epoch))
        self._epochs = max(1, int(e.epochs))
        self._start_epoch = int(e.start_epoch)
        self._t0 = self._epoch_t0 = time.monotonic()
        self._batches_done = 0
        self._paused_seconds, self._paused_at = 0.0, None
        self.epoch_progress.setMaximum(self._batches_per_epoch)
        self.run_progress.setMaximum(self._epochs * self._batches_per_epoch)
        self.run_progress.setValue(max(0, self._start_epoch - 1) * self._batches_per_epoch)
        self.status_label.setText(f"Training on {e.device}")
        self.append_log(f"Started: {self._epochs} epochs x {self._batches_per_epoch} batches on {e.device}"
                        + (f", resuming at epoch {e.start_epoch}" if e.start_epoch else "")
                        + (f" — {e.message}" if e.message else ""))
        self._update_buttons()

    @Slot(object)
    def _on_batch(self, e: ev.BatchDone) -> None:
        bpe = max(1, int(e.batches_per_epoch))
        x = max(0, e.epoch - 1) * bpe + e.batch  # training epochs count from 1 (epoch 0 is the untrained net)
        self.loss_series.append(x, e.loss)
        self.miner_series["easy"].append(x, e.n_easy)
        self.miner_series["semi-hard"].append(x, e.n_semihard)
        self.miner_series["hard"].append(x, e.n_hard)
        self._batches_done += 1
        self._last_batch = e
        now = time.monotonic()
        # widgets and curves are redrawn at most ~10 times a second: painting, not the data, is the cost
        if now - self._last_draw > 0.1 or e.batch + 1 == bpe:
            self._redraw()
        else:
            self._dirty = True

    def _update_progress(self, e: ev.BatchDone) -> None:
        bpe = max(1, int(e.batches_per_epoch))
        x = max(0, e.epoch - 1) * bpe + e.batch
        now = time.monotonic()
        self.epoch_progress.setMaximum(bpe)
        self.epoch_progress.setValue(e.batch + 1)
        self.run_progress.setValue(min(self.run_progress.maximum(), x + 1))
        seconds_per_batch = max(0.0, now - self._t0 - self._paused_seconds) / self._batches_done
        left_epoch = (bpe - e.batch - 1) * seconds_per_batch
        left_run = max(0, self._epochs * bpe - x - 1) * seconds_per_batch
        self.epoch_eta.setText(f"epoch {e.epoch}/{self._epochs}, {format_seconds(left_epoch)} left")
        self.run_eta.setText(f"{format_seconds(left_run)} left")
        self.speed_label.setText(f"loss {e.loss:.4f}   lr {e.lr:.2e}   {e.images_per_second:.0f} images/s   "
                                 f"mined {e.n_tuples} tuples")
        if not self.pause_button.isChecked():
            self.status_label.setText("Training")

    def _redraw(self) -> None:
        if self._last_batch is not None:
            self._update_progress(self._last_batch)
        self.loss_series.flush()
        for s in self.miner_series.values():
            s.flush()
        self._last_draw = time.monotonic()
        self._dirty = False

    @Slot(object)
    def _on_epoch(self, e: ev.EpochDone) -> None:
        if self._dirty:
            self._redraw()
        self._add_metrics(e.epoch, e.metrics)
        shown = ", ".join(f"{metric_label(k)} {v:.3f}" for k, v in e.metrics.items() if metric_label(k))
        what = f"Epoch {e.epoch} done" if e.epoch > 0 else "Untrained network evaluated"
        self.append_log(f"{what} in {format_seconds(e.seconds)}" + (f": {shown}" if shown else ""))

    def _add_metrics(self, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            label = metric_label(key)
            if label is None or value is None or not np.isfinite(value):
                continue
            series = self._metric_series.get(key)
            if series is None:
                color = _PALETTE[len(self._metric_series) % len(_PALETTE)]
                style = Qt.PenStyle.DashLine if key.startswith("train/") else Qt.PenStyle.SolidLine
                curve = self.metric_plot.plot(pen=pg.mkPen(color, width=2, style=style), symbol="o", symbolSize=5,
                                              symbolBrush=color, symbolPen=None, name=label)
                series = self._metric_series[key] = _Series(curve, 64)
                self._metric_legend.append((label, color))
                set_legend_title(self.metric_plot, METRIC_TITLE, self._metric_legend,
                                 dashed={metric_label(k) for k in self._metric_series if k.startswith("train/")})
            series.append(epoch, float(value))
            series.flush()

    @Slot(object)
    def _on_log(self, e: ev.Log) -> None:
        self.append_log(e.message, e.level)

    @Slot(object)
    def _on_failed(self, e: ev.Failed) -> None:
        self.append_log(f"Training failed: {e.message}", "error")
        if e.detail:
            self._append_log_text(e.detail.rstrip())
        self.status_label.setText("Failed")
        self.errors.append(e.message)
        box = QMessageBox(QMessageBox.Icon.Critical, "Training failed", e.message, QMessageBox.StandardButton.Ok,
                          self)
        if e.detail:
            box.setDetailedText(e.detail)
        box.open()  # not exec(): the GUI keeps running and the box never blocks the event loop

    @Slot(object)
    def _on_stopped(self, e: ev.Stopped) -> None:
        if self._dirty:
            self._redraw()
        last = f"last committed epoch {e.epoch}" if e.epoch >= 0 else "no epoch committed"
        what = {"finished": "Finished", "user": "Stopped"}.get(e.reason, f"Ended ({e.reason})")
        self.status_label.setText(f"{what} — {last}")
        self.append_log(f"{what}: {last}" + (f" in {e.run_dir}" if e.run_dir else ""))

    @Slot(bool)
    def _on_paused(self, paused: bool) -> None:
        now = time.monotonic()
        if paused and self._paused_at is None:
            self._paused_at = now
        elif not paused and self._paused_at is not None:
            self._paused_seconds += now - self._paused_at
            self._paused_at = None
        if self._dirty:
            self._redraw()
        if self.controller.stopping():
            return  # a stop wakes a paused loop: "Training" would be wrong
        self.status_label.setText("Paused" if paused else "Training")
        self.append_log("Paused" if paused else "Resumed")

    @Slot(object)
    def _on_snapshot(self, e: ev.SnapshotReady) -> None:
        self.append_log(f"Epoch {e.epoch} saved: {e.path}")

    @Slot(object)
    def _on_following(self, run_dir) -> None:
        """A run opened while another process trains it: say so (it read "Idle", 0 %, until its first epoch)."""
        if run_dir is None or self._live:
            return
        from trainer.store import run_in_training

        holder = run_in_training(run_dir)
        if holder:
            done = list(self.state.epochs)
            self.status_label.setText(f"Following {Path(run_dir).name}: trained by {holder}; "
                                      + (f"epochs 0-{done[-1]} committed so far" if done
                                         else "waiting for its first epoch"))
            self.continue_button.setEnabled(False)
            self.continue_button.setToolTip(f"This run is being trained by {holder}")

    @Slot(object)
    def _on_run_changed(self, run) -> None:
        """An opened (or followed) run: draw its stored metric history and per-batch curves."""
        self._update_buttons()
        if run is None or self._live:
            return
        self.reset()
        self._drawn_epochs = []
        try:
            history = run.metrics_history()
        except Exception:  # an old or partial run: curves stay empty, the map still works
            return
        epochs = np.asarray(history.get("epoch", []))
        for i, epoch in enumerate(epochs):
            self._add_metrics(int(epoch), {k: float(v[i]) for k, v in history.items() if k != "epoch"})
        self._draw_batches(run, [int(e) for e in epochs])
        done = [int(e) for e in epochs]
        try:  # the progress bars show how far the opened run got, in epochs of its configuration
            planned = int(run.config.get("optim", {}).get("epochs", 0))
        except (AttributeError, TypeError, ValueError):
            planned = 0
        if done and planned > 0:
            self.run_progress.setMaximum(planned)
            self.run_progress.setValue(min(planned, done[-1]))
            self.epoch_progress.setMaximum(1)
            self.epoch_progress.setValue(1)
        if done:
            self.status_label.setText(f"Opened run: epochs 0-{done[-1]} committed"
                                      + (", checkpoint saved" if getattr(run, "checkpoints", []) else ""))
        self._on_following(self.controller.following)

    def _draw_batches(self, run, epochs: list[int]) -> None:
        """Append the stored per-batch loss and miner counts of ``epochs`` (in order) to the batch curves.

        The files are read by a background job, one at a time and in order: a run with hundreds of epochs is
        hundreds of HDF5 reads, which the window must not wait for."""
        if run is not self._tel_run:
            self._cancel_telemetry()
            self._tel_run = run
        self._tel_queue.extend(int(e) for e in epochs)
        self._ask_telemetry()

    def telemetry_pending(self) -> bool:
        """True while stored batches of the opened run are still being read (tests, status)."""
        return bool(self._tel_queue or self._tel_asked)

    def _ask_telemetry(self) -> None:
        if self._tel_asked or not self._tel_queue or self._tel_run is None:
            return
        self._tel_asked, self._tel_queue = self._tel_queue, []
        self.jobs.submit(self._tel_key, read_batch_telemetry, self._tel_run, list(self._tel_asked),
                         on_result=self._on_telemetry, on_failed=self._on_telemetry_failed)

    def _cancel_telemetry(self) -> None:
        self.jobs.cancel(self._tel_key)
        self._tel_run = None
        self._tel_queue = []
        self._tel_asked = []

    def _finish_telemetry_now(self) -> None:
        """Read what is still pending here and now (the run is being continued: order matters more than a pause)."""
        if not self.telemetry_pending() or self._tel_run is None:
            return
        run, epochs = self._tel_run, self._tel_asked + self._tel_queue
        self.jobs.cancel(self._tel_key)
        self._tel_asked, self._tel_queue = [], []
        self._extend_batches(read_batch_telemetry(run, epochs))

    def _on_telemetry(self, result) -> None:
        self._tel_asked = []
        self._extend_batches(result)
        self._ask_telemetry()

    def _on_telemetry_failed(self, message: str) -> None:
        self._tel_asked = []
        self.append_log(f"Could not read the run's stored batches: {message}", "warning")
        self._ask_telemetry()

    def _extend_batches(self, stored: list[tuple[int, dict[str, np.ndarray]]]) -> None:
        for epoch, tel in stored:
            loss = np.asarray(tel.get("loss", []), np.float64)
            if len(loss):
                x = (epoch - 1) * len(loss) + np.arange(len(loss), dtype=np.float64)
                self.loss_series.extend(x, loss)
                for name, key in (("easy", "n_easy"), ("semi-hard", "n_semihard"), ("hard", "n_hard")):
                    if key in tel:
                        self.miner_series[name].extend(x, tel[key])
            self._drawn_epochs.append(epoch)
        self.loss_series.flush()
        for s in self.miner_series.values():
            s.flush()

    @Slot(list)
    def _on_epochs_available(self, epochs: list) -> None:
        """A followed run (the command line training) committed epochs: add them to the curves."""
        run = self.state.run
        if self._live or run is None or not epochs:
            return
        new = sorted(int(e) for e in epochs)
        seen = self._drawn_epochs + self._tel_asked + self._tel_queue
        if seen and new[0] <= max(seen):  # an epoch was rewritten: draw it all again
            self._on_run_changed(run)
            return
        try:
            history = run.metrics_history()
        except Exception:
            return
        for i, epoch in enumerate(np.asarray(history.get("epoch", []))):
            if int(epoch) in new:
                self._add_metrics(int(epoch), {k: float(v[i]) for k, v in history.items() if k != "epoch"})
        self._draw_batches(run, new)
        self._update_buttons()
        self._on_following(self.controller.following)
