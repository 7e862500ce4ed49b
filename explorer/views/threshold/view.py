"""Verification threshold studio: choose the distance at which two images count as "the same",
with known error rates on the held-out classes of the epoch shown.

Everything is a DISTANCE, smaller = more alike; a pair is accepted as "same" when d <= t. The exact all-pairs
genuine / impostor histograms (trainer.analysis.verification.pair_histograms) are computed in a background job; their bin edges
are multiples of 1e-4 (trainer.analysis.thresholds.threshold_grid), so a threshold typed with four decimals is an
edge and FAR / FRR read from the histograms are exact for it (that part is cheap and runs on the GUI thread as the
threshold moves). Bootstrap intervals and the 10-fold cross-validated threshold follow in a second job; the pairs
nearest the threshold and the per-class error counts in a third, restarted (debounced) whenever the threshold moves.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, QTimer, Slot
from PySide6.QtGui import QIcon, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QGridLayout,
                               QGroupBox, QHBoxLayout, QHeaderView, QLabel, QMessageBox, QProgressBar, QPushButton,
                               QSplitter, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)
from explorer.jobs import JobRunner
from explorer.state import AppState
from explorer.widgets.labels import room_for_lines, shrinkable
from explorer.widgets.view_setup import setup_view, subscribe
from explorer.widgets.lazy import DeferWhileHidden
from explorer.widgets.texts import metric_words
from trainer.analysis import verification
from trainer.analysis.thresholds import coarsen, snap_threshold
from trainer.store import write_json_atomic
from explorer.views.threshold.jobs import (
    CV_FOLDS,
    RocData,
    compute_errors,
    compute_extras,
    compute_roc,
    curve_points,
)

THRESHOLDS_FILE = "thresholds.json"
DIRECTION = "distance (smaller = more alike)"
_GENUINE = (44, 160, 44)
_IMPOSTOR = (214, 39, 40)
_PICK_NONE = "Pick a rule…"
_PICK_EER = "EER (FAR = FRR)"
_PICK_CV = f"Best accuracy ({CV_FOLDS}-fold CV, LFW protocol)"


def _far_key(far: float) -> str:
    return f"{far:.0e}".replace("e-0", "e-")  # 1e-1 ... 1e-6


def _rate(v: float) -> str:
    """A rate as a percentage a person reads at a glance: 12.3 %, 0.0457 %, 0 %."""
    if v is None or not math.isfinite(v):
        return "n/a"
    if v == 0:
        return "0 %"
    p = 100.0 * v
    return f"{p:.3g} %" if p < 10 else f"{p:.1f} %"


def _ci_text(ci: dict) -> str:
    """The interval text after a rate, with non-breaking spaces: it wraps as a whole (it broke inside its numbers)."""
    return "   " + f"95 % CI {_interval(ci['low'], ci['high'])}".replace(" ", "\u00a0")


def _interval(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    return f"{_rate(lo)} – {_rate(hi)}"


def _num(v: float | None) -> float | None:
    """Strict-JSON number: NaN / inf become null."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _render_svg(widget: QWidget, path: Path) -> None:
    """Paint ``widget`` into an SVG file with QtSvg (vector output of the plot as shown)."""
    from PySide6.QtCore import QRect
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    gen = QSvgGenerator()
    gen.setFileName(str(path))
    size = widget.size()
    gen.setSize(size)
    gen.setViewBox(QRect(0, 0, size.width(), size.height()))
    gen.setTitle(widget.windowTitle() or path.stem)
    painter = QPainter()
    if not painter.begin(gen):
        raise OSError(f"cannot write {path}: Qt could not open it for SVG output")
    try:
        widget.render(painter)
    finally:
        painter.end()
    if not path.is_file():
        raise OSError(f"cannot write {path}: no file was produced")


class ThresholdView(DeferWhileHidden, QWidget):
    """Histograms, ROC and the operating point of a shared distance threshold on the held-out classes."""

    def __init__(self, state: AppState, jobs: JobRunner | None = None, thumbnails=None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        setup_view(self, state, jobs, thumbnails, name="threshold", thumb_px=72)
        self.data: RocData | None = None
        self.cv: dict | None = None
        self.boot: dict | None = None
        self.opis: dict | None = None  # threshold consistency over classes (OPIS), per epoch
        self.errors: dict | None = None
        self.threshold: float | None = None
        self.point: dict[str, float] | None = None
        self.rule = "manual"
        self._pending_cv_pick = False
        self._updating = False
        self._thumb_cells: dict[int, list[tuple[QTableWidget, int, int]]] = {}
        self._build()
        self._errors_timer = QTimer(self, singleShot=True, interval=200)
        self._errors_timer.timeout.connect(self._start_errors_job)
        # a split beyond the exact range: the errors at the threshold wait for the intervals' job (each holds a few
        # hundred MB of pair blocks; both at once raised the window's memory by 0.9 GB at 1e6 x 128)
        self._errors_after_extras = False

        subscribe(self, state, replay=("run_changed", "epoch_changed"), run_changed=self._on_run,
                  epoch_changed=self._on_epoch, threshold_changed=self._on_state_threshold,
                  marks_changed=self._on_marks)

    # ---- layout -------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        head = QHBoxLayout()
        self.title = QLabel("Verification threshold: open a run with held-out classes")
        self.title.setWordWrap(True)
        self.title.setStyleSheet("font-weight: bold")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setMinimumWidth(1)  # it takes the room there is: showing it must not widen the window
        self.progress.setRange(0, 100)
        self.progress.setTextVisible(True)
        self.progress.hide()
        head.addWidget(self.title, 1)
        head.addWidget(self.progress)
        lay.addLayout(head)

        # plots
        pg.setConfigOptions(antialias=True)
        self.hist_plot = pg.PlotWidget(background="w")
        hp = self.hist_plot.getPlotItem()
        hp.setTitle("Pair distances on held-out classes (all pairs)")
        hp.setLabel("bottom", f"{DIRECTION}")
        hp.setLabel("left", "pairs (fraction of each kind)")
        hp.showGrid(x=True, y=True, alpha=0.2)
        hp.addLegend(offset=(-10, 10))
        self.gen_curve = hp.plot([0, 1], [0], stepMode="center", fillLevel=0, name="genuine (same class)",
                                 pen=pg.mkPen(_GENUINE, width=1.5), brush=pg.mkBrush(*_GENUINE, 90))
        self.imp_curve = hp.plot([0, 1], [0], stepMode="center", fillLevel=0, name="impostor (different classes)",
                                 pen=pg.mkPen(_IMPOSTOR, width=1.5), brush=pg.mkBrush(*_IMPOSTOR, 90))
        self.line = pg.InfiniteLine(pos=0.5, angle=90, movable=True, pen=pg.mkPen((30, 30, 30), width=2),
                                    hoverPen=pg.mkPen((255, 140, 0), width=3),
                                    label="t = {value:.4f}", labelOpts={"position": 0.92, "color": (30, 30, 30),
                                                                       "fill": (255, 255, 255, 200)})
        self.line.setToolTip("Drag: accept pairs with distance ≤ this threshold as the same")
        self.line.setVisible(False)
        hp.addItem(self.line)
        self.line.sigPositionChanged.connect(self._on_line_moved)

        self.roc_plot = pg.PlotWidget(background="w")
        rp = self.roc_plot.getPlotItem()
        rp.setTitle("ROC (held-out classes)")
        rp.setLabel("bottom", "false accept rate FAR (log scale)")
        rp.setLabel("left", "true accept rate TAR = 1 − FRR")
        rp.setLogMode(x=True, y=False)
        rp.showGrid(x=True, y=True, alpha=0.2)
        rp.addLegend(offset=(-10, -10))
        self.roc_curve = rp.plot([], [], pen=pg.mkPen((31, 119, 180), width=2), name="ROC")
        # markers are PlotDataItems (not bare ScatterPlotItems) so the plot's log FAR axis maps them too
        self.eer_marker = rp.plot([], [], pen=None, symbol="s", symbolSize=9, symbolBrush=(120, 120, 120),
                                  symbolPen=None, name="EER")
        self.op_marker = rp.plot([], [], pen=None, symbol="o", symbolSize=14, symbolBrush=(255, 140, 0),
                                 symbolPen=pg.mkPen((30, 30, 30), width=1.5), name="threshold")
        rp.setYRange(0, 1.02, padding=0)

        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(self.hist_plot)
        plots.addWidget(self.roc_plot)
        plots.setSizes([600, 450])

        # controls
        ctl = QHBoxLayout()
        ctl.addWidget(QLabel("Threshold t:"))
        self.spin = QDoubleSpinBox()
        self.spin.setDecimals(4)
        self.spin.setRange(0.0, 2.0)
        self.spin.setSingleStep(1e-3)
        self.spin.setKeyboardTracking(False)
        self.spin.setMinimumWidth(100)
        self.spin.setToolTip("Accept a pair as the same image class when its distance ≤ t (smaller = more alike).\n"
                             "Up/Down: 0.001, Page Up/Down: 0.01")
        self.spin.setEnabled(False)
        self.spin.valueChanged.connect(self._on_spin)
        ctl.addWidget(self.spin)
        self.pick = QComboBox()
        self.pick.addItem(_PICK_NONE)
        for far in verification.FAR_LEVELS:
            self.pick.addItem(f"FAR = {_far_key(far)}", far)
        self.pick.addItem(_PICK_EER, "eer")
        self.pick.addItem(_PICK_CV, "cv")
        self.pick.setToolTip("Set the threshold by a rule: the largest t whose FAR does not exceed the level, the "
                             "equal-error point, or the best-accuracy threshold chosen by cross-validation over "
                             "held-out classes (Ctrl+T focuses this list)")
        self.pick.setEnabled(False)
        self.pick.activated.connect(self._on_pick)
        ctl.addWidget(self.pick)
        self.log_box = QCheckBox("Log counts")
        self.log_box.setToolTip("Logarithmic count axis: shows the thin tails where the errors are (L)")
        self.log_box.toggled.connect(self._redraw_hist)
        ctl.addWidget(self.log_box)
        self.frac_box = QCheckBox("Fraction of each kind")
        self.frac_box.setChecked(True)
        self.frac_box.setToolTip("Scale each histogram to its own total (impostor pairs far outnumber genuine ones)")
        self.frac_box.toggled.connect(self._redraw_hist)
        ctl.addWidget(self.frac_box)
        ctl.addStretch(1)
        self.save_btn = QPushButton("Save threshold to run")
        self.save_btn.setToolTip(f"Write the threshold, its metric, direction and error rates with intervals to "
                                 f"{THRESHOLDS_FILE} in the run folder (Ctrl+S)")
        self.save_btn.setEnabled(False)
        self.save_btn.clicked.connect(self._on_save_clicked)
        ctl.addWidget(self.save_btn)
        self.plots_btn = QPushButton("Export plots…")
        self.plots_btn.setToolTip("Save the histogram and ROC as PNG and SVG (Ctrl+E)")
        self.plots_btn.setEnabled(False)
        self.plots_btn.clicked.connect(self._on_export_plots_clicked)
        ctl.addWidget(self.plots_btn)

        # readout + summary
        self.readout = QGroupBox("At this threshold")
        grid = QGridLayout(self.readout)
        self.lbl: dict[str, QLabel] = {}
        rows = [("rule", "Accept when"), ("far", "False accepts (FAR)"), ("frr", "False rejects (FRR)"),
                ("tar", "True accepts (TAR)"), ("accuracy", "Accuracy"), ("spread", "Per class")]
        for r, (key, text) in enumerate(rows):
            name = QLabel(text + ":")
            name.setStyleSheet("color: #555")
            val = shrinkable(QLabel("–"))  # new numbers during a drag wrap in place; the layout does not jump
            val.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(name, r, 0, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            grid.addWidget(val, r, 1)
            self.lbl[key] = val
        grid.setColumnStretch(1, 1)
        # room for three lines: with both rates and their highest classes it wraps to three at 1280 x 800, and a
        # shrinkable label is given the height of its first layout (the third line was clipped)
        room_for_lines(self.lbl["spread"], 3)
        for key in ("far", "frr"):  # with its interval a rate wraps to two lines (the interval was clipped)
            room_for_lines(self.lbl[key], 2)
        self.lbl["spread"].setToolTip(
            "Each held-out class's own FAR and FRR at this threshold (the class table lists them). Over a range of "
            "thresholds the same question is OPIS, in the whole-curve table below. Train with the threshold-"
            "consistent loss to even them out.")

        self.summary = QTableWidget(0, 3)
        self.summary.setHorizontalHeaderLabels(["Whole curve", "Value", "95 % interval (class bootstrap)"])
        self.summary.verticalHeader().hide()
        self.summary.verticalHeader().setDefaultSectionSize(24)
        self.summary.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.summary.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.summary.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)  # the row names do not change
        # the values do ("computing…" while a drag refreshes them): fixed widths, or the table jumped
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        self.summary.setColumnWidth(1, 190)
        header.setStretchLastSection(True)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.readout)
        ll.addWidget(self.summary, 1)

        # error inspection
        self.fa_table = self._pair_table()
        self.fr_table = self._pair_table()
        self.class_table = QTableWidget(0, 7)
        self.class_table.setHorizontalHeaderLabels(["Class", "Errors", "False accepts", "False rejects",
                                                    "Genuine pairs", "FAR", "FRR"])
        self.class_table.verticalHeader().hide()
        self.class_table.verticalHeader().setDefaultSectionSize(24)
        self.class_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.class_table.setSortingEnabled(True)
        self.class_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.class_table.setToolTip("Held-out classes with the most errors at this threshold (a false accept counts "
                                    "for both its classes)")
        self.tabs = QTabWidget()
        self.tabs.addTab(self.fa_table, "Nearest false accepts")
        self.tabs.addTab(self.fr_table, "Nearest false rejects")
        self.tabs.addTab(self.class_table, "Classes with most errors")
        self.errors_note = QLabel("")
        self.errors_note.setStyleSheet("color: #555")
        self.errors_note.setWordWrap(True)  # the note of a sampled split is long: wrap it, never widen the window
        # ... on up to three lines at 1280 x 800 (its second line was cut off under the tables)
        room_for_lines(self.errors_note, 3)
        self.errors_note.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.tabs, 1)
        rl.addWidget(self.errors_note)

        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(left)
        bottom.addWidget(right)
        bottom.setSizes([480, 620])

        outer = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(plots, 1)
        tl.addLayout(ctl)
        outer.addWidget(top)
        outer.addWidget(bottom)
        outer.setSizes([430, 380])
        lay.addWidget(outer, 1)

        for seq, slot in (("Ctrl+S", self._on_save_clicked), ("Ctrl+E", self._on_export_plots_clicked),
                          ("Ctrl+T", self.pick.setFocus), ("L", self.log_box.toggle)):
            sc = QShortcut(QKeySequence(seq), self)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(slot)

    def _pair_table(self) -> QTableWidget:
        t = QTableWidget(0, 4)
        t.setHorizontalHeaderLabels(["Image A", "Image B", "Distance", "Classes"])
        t.verticalHeader().hide()
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        t.setIconSize(QSize(64, 64))
        t.verticalHeader().setDefaultSectionSize(70)
        t.setColumnWidth(0, 80)
        t.setColumnWidth(1, 80)
        t.setColumnWidth(2, 110)
        t.horizontalHeader().setStretchLastSection(True)
        t.setToolTip("Click a pair to mark its two images in the map; right-click to copy or export the pairs")
        t.itemSelectionChanged.connect(lambda t=t: self._on_pair_selected(t))
        from explorer.widgets.image_menu import ImageListMenu

        what = "false accepts" if not hasattr(self, "fa_table") else "false rejects"
        t.image_menu = ImageListMenu(t, lambda: self.state.run, lambda t=t: [i for a, b, _ in self._table_pairs(t)
                                                                             for i in (a, b)],
                                     what, pairs=lambda t=t: self._table_pairs(t), at=lambda pos, t=t:
                                     self._pair_at(t, pos), duplicate_of=lambda pos, t=t: self._other_at(t, pos))
        return t

    def _pair_at(self, t: QTableWidget, pos) -> list[int]:
        """The two images of the pair under the cursor (one image when the cursor is on an image cell)."""
        ix = t.indexAt(pos)
        if not ix.isValid():
            return []
        a, b = t.item(ix.row(), 0), t.item(ix.row(), 1)
        if a is None or b is None:
            return []
        ids = [int(a.data(Qt.ItemDataRole.UserRole)), int(b.data(Qt.ItemDataRole.UserRole))]
        return [ids[ix.column()]] if ix.column() in (0, 1) else ids

    def _other_at(self, t: QTableWidget, pos) -> int | None:
        """On an image cell: the pair's other image (the one it may duplicate)."""
        ix = t.indexAt(pos)
        if not ix.isValid() or ix.column() not in (0, 1):
            return None
        other = t.item(ix.row(), 1 - ix.column())
        return None if other is None else int(other.data(Qt.ItemDataRole.UserRole))

    def _table_pairs(self, t: QTableWidget) -> list[tuple[int, int, float]]:
        """(id_a, id_b, distance) of the pairs a table lists, top to bottom."""
        out = []
        for r in range(t.rowCount()):
            a, b, d = t.item(r, 0), t.item(r, 1), t.item(r, 2)
            if a is None or b is None or d is None:
                continue
            out.append((int(a.data(Qt.ItemDataRole.UserRole)), int(b.data(Qt.ItemDataRole.UserRole)),
                        float(d.data(Qt.ItemDataRole.UserRole))))
        return out

    # ---- run / epoch ----------------------------------------------------------------------------------------------
    @Slot(object)
    def _on_run(self, run) -> None:
        self._cancel_all()
        self.data = None
        self._clear()
        if run is None:
            self.title.setText("Verification threshold: open a run with held-out classes")
            return
        if self.thumbs is not None and getattr(self.thumbs, "_samples", None) is not run.samples:
            self.thumbs.set_samples(run.samples)
        # AppState.set_run emits epoch_changed right after this when the run has an epoch

    @Slot(int)
    def _on_epoch(self, epoch: int) -> None:
        run = self.state.run
        if run is None or epoch < 0:
            return
        if self.data is not None and self.data.epoch == epoch and Path(run.run_dir) == self.data.run_dir:
            return
        if self._defer():
            return
        self._cancel_all()
        self.cv = self.boot = self.errors = None
        self.title.setText(f"Epoch {epoch}: computing all pair distances of the held-out classes…")
        self.progress.setValue(0)
        self.progress.show()
        self.jobs.submit((self._key, "main"), compute_roc, run, int(epoch), on_result=self._on_roc,
                         on_progress=self._on_job_progress, on_failed=lambda m: self._on_job_failed("main", m))

    def _catch_up(self) -> None:
        self._on_epoch(self.state.epoch)

    def _cancel_all(self) -> None:
        self._errors_timer.stop()
        self._errors_after_extras = False
        for part in ("main", "extras", "errors"):
            self.jobs.cancel((self._key, part))

    def is_busy(self) -> bool:
        """True while any of this view's background jobs has not delivered (tests, status bar)."""
        return any(self.jobs.is_running((self._key, p)) for p in ("main", "extras", "errors")) or \
            self._errors_timer.isActive() or self._errors_after_extras

    def _clear(self) -> None:
        self.gen_curve.setData([0, 1], [0])
        self.imp_curve.setData([0, 1], [0])
        self.roc_curve.setData([], [])
        self.eer_marker.setData([], [])
        self.op_marker.setData([], [])
        self.line.setVisible(False)
        for w in (self.spin, self.pick, self.save_btn, self.plots_btn):
            w.setEnabled(False)
        for v in self.lbl.values():
            v.setText("–")
        self.summary.setRowCount(0)
        for t in (self.fa_table, self.fr_table, self.class_table):
            t.setRowCount(0)
        self.errors_note.setText("")
        self.progress.hide()

    # ---- job results ----------------------------------------------------------------------------------------------
    @Slot(object, float, str)
    def _on_job_progress(self, fraction: float, text: str) -> None:
        self.progress.show()
        self.progress.setValue(int(100 * fraction))
        self.progress.setFormat(f"{text} (%p%)" if text else "%p%")

    def _on_job_failed(self, part: str, message: str) -> None:
        self.progress.hide()
        first = message.strip().splitlines()[0] if message.strip() else "unknown error"
        if part == "main":
            self.title.setText(f"Could not compute the ROC: {first}")
        else:
            self.errors_note.setText(f"{part} failed: {first}")
        self.title.setToolTip(message)
        if part == "extras":
            self._errors_after_waiting()

    def _on_extras_partial(self, result) -> None:
        if "opis" in result:
            self.opis = result["opis"]
            self._fill_summary()
        if "cv" in result:
            self.cv = result["cv"]
            self._fill_summary()
            if self._pending_cv_pick:
                self._pending_cv_pick = False
                self._pick_cv()

    def _job_done(self) -> None:
        if not self.is_busy():
            self.progress.hide()

    def _on_roc(self, result: RocData) -> None:
        self._show_main(result)
        self._job_done()

    def _on_extras(self, result) -> None:
        self.cv = result.get("cv", self.cv)
        self.boot = result.get("boot")
        self._fill_summary()
        if self._pending_cv_pick:
            self._pending_cv_pick = False
            self._pick_cv()
        self._errors_after_waiting()
        self._job_done()

    def _errors_after_waiting(self) -> None:
        if self._errors_after_extras:
            self._errors_after_extras = False
            self._start_errors_job()

    def _on_errors(self, result) -> None:
        if self.threshold is not None and result["threshold"] == self.threshold:
            self.errors = result
            self._show_errors()
        self._job_done()

    def _show_main(self, d: RocData) -> None:
        self.data = d
        self.cv = self.boot = self.errors = self.opis = None
        if d.hist is None or d.roc is None or d.problem:
            self._clear()
            self.title.setText(f"Epoch {d.epoch}: {d.problem or 'nothing to show'}")
            return
        h, roc = d.hist, d.roc
        n_cls = d.n_classes or len(np.unique(d.labels))
        sampled = bool(d.pairs_note) and d.pairs_note != "all counted exactly"
        self.hist_plot.getPlotItem().setTitle("Pair distances on held-out classes ("
                                              + ("pairs sampled by class)" if sampled else "all pairs)"))
        self.title.setText(
            f"Epoch {d.epoch} · {len(d.ids):,} held-out images in {n_cls} classes never trained on · "
            f"{h.n_genuine:,} genuine and {h.n_impostor:,} impostor pairs, {d.pairs_note or 'all counted exactly'} · "
            + (f"{d.analysis_note} · " if d.analysis_note else "") +
            f"{metric_words(d.metric)}, smaller = more alike")
        decimals = max(0, int(round(-math.log10(d.step))))
        self._updating = True
        try:
            self.spin.setDecimals(decimals)
            self.spin.setRange(0.0, float(h.edges[-1]))
            self.spin.setSingleStep(10 * d.step)
            self.line.setBounds((0.0, float(h.edges[-1])))
            self.line.label.setFormat("t = {value:.%df}" % decimals)
        finally:
            self._updating = False
        for w in (self.spin, self.pick, self.save_btn, self.plots_btn):
            w.setEnabled(True)
        self.line.setVisible(True)
        self._redraw_hist()
        # ROC on a log FAR axis: FAR = 0 cannot be drawn; curve_points keeps FAR > 0, drops repeats, thins
        far, tar = curve_points(roc.far, roc.tar)
        self.roc_curve.setData(far, tar)
        self.roc_plot.getPlotItem().setXRange(math.log10(max(1.0 / max(h.n_impostor, 1), 1e-7)), 0, padding=0.02)
        if math.isfinite(roc.eer) and roc.eer > 0:
            self.eer_marker.setData([roc.eer], [1.0 - roc.eer])
        # a threshold chosen by a rule follows the rule on the new epoch (it stayed at the old EER, still labelled
        # "EER"); one the user set by hand (drag, spin box) stays where they put it
        rule = self.pick.currentData()
        far_rule = rule not in (None, "eer", "cv") and self.rule.startswith("FAR")
        if self.state.threshold is None or self.rule == "EER":
            start, self.rule = roc.eer_threshold, "EER"
        elif far_rule:
            start = verification.threshold_at_far(h, float(rule))
        else:
            start = self.state.threshold
            if self.rule.startswith("best accuracy"):
                self._pending_cv_pick = True  # set again once this epoch's cross-validation is done
        by_rule = self.rule == "EER" or far_rule
        if start is None or not math.isfinite(start):
            start, by_rule = float(h.edges[h.bins // 2]), False
        self.threshold = None  # force a refresh for the new data
        # by a rule: as if picked again (the pick box keeps showing the rule)
        self._apply_threshold(float(start), source="pick" if by_rule else "init", rule=self.rule if by_rule else None)
        self._fill_summary()
        self.jobs.submit((self._key, "extras"), compute_extras, d.embeddings, d.labels, d.metric, d.analysis_rows,
                         on_result=self._on_extras, on_partial=self._on_extras_partial,
                         on_progress=self._on_job_progress, on_failed=lambda m: self._on_job_failed("extras", m))

    # ---- drawing --------------------------------------------------------------------------------------------------
    def _redraw_hist(self) -> None:
        d = self.data
        if d is None or d.hist is None:
            return
        edges, gen, imp = coarsen(d.hist, 200)
        g = gen.astype(np.float64)
        i = imp.astype(np.float64)
        frac = self.frac_box.isChecked()
        if frac:
            g = g / max(g.sum(), 1.0)
            i = i / max(i.sum(), 1.0)
        log = self.log_box.isChecked()
        hp = self.hist_plot.getPlotItem()
        if log:
            # empty bins cannot be drawn on a log axis: show them at a floor below the smallest non-zero bar
            nz = np.concatenate([g[g > 0], i[i > 0]])
            floor = float(nz.min()) / 3.0 if len(nz) else 1e-9
            g = np.maximum(g, floor)
            i = np.maximum(i, floor)
            for c in (self.gen_curve, self.imp_curve):
                c.setFillLevel(math.log10(floor))
        else:
            for c in (self.gen_curve, self.imp_curve):
                c.setFillLevel(0)
        hp.setLogMode(x=False, y=log)
        self.gen_curve.setData(edges, g)
        self.imp_curve.setData(edges, i)
        what = "fraction of each kind" if frac else "number of pairs"
        hp.setLabel("left", f"{what}{' (log scale)' if log else ''}")
        hp.enableAutoRange()

    # ---- threshold ------------------------------------------------------------------------------------------------
    @Slot()
    def _on_line_moved(self) -> None:
        if not self._updating:
            self._apply_threshold(float(self.line.value()), source="line")

    @Slot(float)
    def _on_spin(self, value: float) -> None:
        if not self._updating:
            self._apply_threshold(float(value), source="spin")

    @Slot(float)
    def _on_state_threshold(self, value: float) -> None:
        if not self._updating:
            self._apply_threshold(float(value), source="state")

    @Slot(int)
    def _on_pick(self, index: int) -> None:
        d = self.data
        rule = self.pick.itemData(index)
        if d is None or d.hist is None or rule is None:
            return
        if rule == "eer":
            self._apply_threshold(d.roc.eer_threshold, source="pick", rule="EER")
        elif rule == "cv":
            if self.cv is None:
                self._pending_cv_pick = True
                self.lbl["rule"].setText("cross-validating… the threshold is set when it is done")
            else:
                self._pick_cv()
        else:
            far = float(rule)
            t = verification.threshold_at_far(d.hist, far)
            self._apply_threshold(t, source="pick", rule=f"FAR ≤ {_far_key(far)}")
        self.pick.setCurrentIndex(index)

    def _pick_cv(self) -> None:
        if self.cv is None or self.data is None:
            return
        t = float(self.cv["threshold_mean"])
        # the mean of the fold thresholds is not an edge: it is snapped to the nearest one like any other
        self._apply_threshold(t, source="pick", rule=f"best accuracy, {CV_FOLDS}-fold CV")
        self.pick.setCurrentIndex(self.pick.findData("cv"))

    def set_threshold(self, value: float) -> None:
        """Set the threshold (snapped to the nearest histogram edge) as if typed; shared through the AppState."""
        self._apply_threshold(float(value), source="api")

    def _apply_threshold(self, value: float, *, source: str, rule: str | None = None) -> None:
        d = self.data
        if d is None or d.hist is None or not math.isfinite(value):
            return
        t = snap_threshold(d.hist, value)
        changed = t != self.threshold
        self.threshold = t
        if rule is not None:
            self.rule = rule
        elif source in ("line", "spin", "api", "state") and changed:
            self.rule = "manual"
        if source != "pick" and changed:
            self.pick.setCurrentIndex(0)
        self._updating = True
        try:
            if source != "line" or abs(self.line.value() - t) > 0.5 * d.step:
                self.line.setValue(t)
            if self.spin.value() != round(t, self.spin.decimals()):
                self.spin.setValue(t)
            self.state.set_threshold(t)
        finally:
            self._updating = False
        self._show_point()
        if changed or self.errors is None:
            self.errors = None
            self._mark_errors_stale()
            self._errors_timer.start()

    def _spread_text(self) -> str:
        """How evenly the one threshold treats the held-out classes (their own FAR and FRR)."""
        spread = (self.errors or {}).get("spread") if self.errors else None
        if not spread:
            return "computing…" if self.errors is None else "–"
        classes = self.state.run.classes if self.state.run is not None else []

        def name(v) -> str:
            try:
                return classes[int(v)]
            except (ValueError, IndexError, TypeError):
                return str(v)

        parts = []
        for key in ("far", "frr"):
            s = spread.get(key)
            if s:
                worst = s["worst"][0] if s["worst"] else None
                parts.append(f"{key.upper()} {_rate(s['min'])} – {_rate(s['max'])} (sd {_rate(s['std'])}"
                             + (f"; highest {name(worst[0])}" if worst else "") + ")")
        return "; ".join(parts) + " — one threshold is stricter for some classes than for others"

    def _show_point(self) -> None:
        d = self.data
        if d is None or d.hist is None or self.threshold is None:
            return
        p = verification.operating_point(d.hist, self.threshold)
        self.point = p
        ng, ni = d.hist.n_genuine, d.hist.n_impostor
        dec = self.spin.decimals()
        self.lbl["rule"].setText(f"distance ≤ {p['threshold']:.{dec}f}  ({self.rule}; smaller = more alike)")
        ci = (self.errors or {}).get("rates_ci") if self.errors else None
        far_ci = _ci_text(ci["far"]) if ci else ""
        frr_ci = _ci_text(ci["frr"]) if ci else ""
        self.lbl["far"].setText(f"{_rate(p['far'])}  —  {p['impostor_accepted']:,} of {ni:,} impostor pairs "
                                f"accepted{far_ci}")
        self.lbl["frr"].setText(f"{_rate(p['frr'])}  —  {p['genuine_rejected']:,} of {ng:,} genuine pairs "
                                f"rejected{frr_ci}")
        self.lbl["tar"].setText(f"{_rate(p['tar'])}  —  {p['genuine_accepted']:,} of {ng:,} genuine pairs accepted")
        self.lbl["accuracy"].setText(f"{_rate(p['accuracy'])} of all pairs;  balanced (TAR + TRR) / 2: "
                                     f"{_rate(p['balanced_accuracy'])}")
        self.lbl["spread"].setText(self._spread_text())
        if p["far"] > 0:
            self.op_marker.setData([p["far"]], [p["tar"]])
        else:  # FAR = 0 sits left of the log axis: pin the marker to its left edge
            self.op_marker.setData([max(1.0 / max(ni, 1), 1e-7)], [p["tar"]])

    # ---- summary table ----------------------------------------------------------------------------------------------
    def _fill_summary(self) -> None:
        d = self.data
        if d is None or d.roc is None:
            return
        roc = d.roc
        boot = self.boot or {}
        rows: list[tuple[str, str, str, str]] = []

        def ci_text(key: str, as_rate: bool = True) -> str:
            if self.boot is None:
                return "computing…"
            b = boot.get(key)
            if b is None or not math.isfinite(b.low):
                return "n/a"
            return _interval(b.low, b.high) if as_rate else f"{b.low:.4f} – {b.high:.4f}"

        rows.append(("AUC", f"{roc.auc:.4f}", ci_text("auc", False),
                     f"area under the ROC; binning error ≤ {roc.auc_error_bound:.1e}"))
        rows.append(("EER", f"{_rate(roc.eer)} at t = {roc.eer_threshold:.4f}", ci_text("eer"),
                     "where false accepts and false rejects are equally frequent"))
        for far in verification.FAR_LEVELS:
            ta = roc.tar_at_far[far]
            label = f"TAR @ FAR = {_far_key(far)}"
            if ta.sufficient:
                rows.append((label, f"{_rate(ta.tar)} at t = {ta.threshold:.4f}", ci_text(f"tar_at_far_{far:g}"),
                             f"achieved FAR {ta.achieved_far:.2e}"))
            else:
                need = int(math.ceil(verification.MIN_FALSE_ACCEPTS / far))
                rows.append((label, "insufficient pairs", "",
                             f"needs ≥ {need:,} impostor pairs (≥ {verification.MIN_FALSE_ACCEPTS} expected false accepts); "
                             f"this epoch has {d.hist.n_impostor:,}"))
        o = self.opis
        if o is None:
            rows.append(("OPIS (threshold consistency)", "computing…", "", ""))
        elif o.get("opis") is None:
            rows.append(("OPIS (threshold consistency)", "n/a", "", o.get("reason", "")))
        else:
            t0, t1 = o["threshold_range"]
            rows.append(("OPIS (threshold consistency)", f"{o['opis']:.4f}", "",
                         f"Zhang et al. 2024: mean over classes and over the thresholds {t0:.3f} – {t1:.3f} (FAR "
                         f"{o['far_range'][0]:.0e} – {o['far_range'][1]:.0e}) of the squared gap between a class's "
                         "utility (harmonic mean of TAR and 1 − FAR) and the whole set's; 0 = one threshold means the "
                         "same for every class"))
        if self.cv is None:
            rows.append((f"Best accuracy ({CV_FOLDS}-fold CV)", "computing…", "", ""))
        else:
            cv = self.cv
            rows.append((f"Best accuracy ({CV_FOLDS}-fold CV)",
                         f"{_rate(cv['accuracy_mean'])} ± {100 * cv['accuracy_std']:.2g} pt",
                         f"t = {cv['threshold_mean']:.4f} ± {cv['threshold_std']:.4f}",
                         "balanced accuracy on held-out folds of classes, LFW protocol"))
        self.summary.setRowCount(len(rows))
        for r, (name, value, ci, tip) in enumerate(rows):
            for c, text in enumerate((name, value, ci)):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                if value == "insufficient pairs" and c == 1:
                    item.setForeground(pg.mkColor(150, 150, 150))
                self.summary.setItem(r, c, item)
        self.summary.resizeColumnsToContents()

    # ---- errors at the threshold --------------------------------------------------------------------------------
    def _mark_errors_stale(self) -> None:
        self.errors_note.setText("updating the pairs for this threshold…")

    @Slot()
    def _start_errors_job(self) -> None:
        d = self.data
        if d is None or d.hist is None or self.threshold is None:
            return
        if d.analysis_rows is not None and self.jobs.is_running((self._key, "extras")):
            self._errors_after_extras = True  # started by _on_extras, at the threshold of that moment
            self.errors_note.setText("the pairs at this threshold follow once the intervals are done…")
            return
        self.jobs.submit((self._key, "errors"), compute_errors, d.embeddings, d.labels, d.metric, self.threshold,
                         d.analysis_rows, on_result=self._on_errors, on_progress=self._on_job_progress,
                         on_failed=lambda m: self._on_job_failed("errors", m))

    def _show_errors(self) -> None:
        d, e = self.data, self.errors
        if d is None or e is None:
            return
        classes = self.state.run.classes if self.state.run is not None else []

        def cname(lab: int) -> str:
            return classes[lab] if 0 <= lab < len(classes) else str(lab)

        self._thumb_cells.clear()
        for table, kind in ((self.fa_table, "false_accept"), (self.fr_table, "false_reject")):
            i, j, dist = e[kind]
            table.setRowCount(len(i))
            for r in range(len(i)):
                gi, gj = int(d.ids[i[r]]), int(d.ids[j[r]])
                for c, gid in ((0, gi), (1, gj)):
                    item = QTableWidgetItem()
                    item.setData(Qt.ItemDataRole.UserRole, gid)
                    table.setItem(r, c, item)
                    self._thumb_cells.setdefault(gid, []).append((table, r, c))
                    self._set_thumb(item, gid, self.thumbs.request(gid) if self.thumbs is not None else None)
                dist_item = QTableWidgetItem(f"{dist[r]:.5f}")
                dist_item.setData(Qt.ItemDataRole.UserRole, float(dist[r]))
                dist_item.setToolTip(f"{DIRECTION}; threshold {self.threshold:.4f}")
                table.setItem(r, 2, dist_item)
                table.setItem(r, 3, QTableWidgetItem(f"{cname(int(d.labels[i[r]]))}  ·  {cname(int(d.labels[j[r]]))}"))
            table.setHorizontalHeaderLabels(["Image A", "Image B", f"Distance ({'≤' if kind == 'false_accept' else '>'}"
                                             f" t)", "Classes"])
        ce = e["classes"]
        order = np.lexsort((-ce["false_rejects"], -ce["false_accepts"]))
        worst = [k for k in order if ce["false_accepts"][k] + ce["false_rejects"][k] > 0]
        worst = sorted(worst, key=lambda k: -(ce["false_accepts"][k] + ce["false_rejects"][k]))[:50]
        self.class_table.setSortingEnabled(False)
        self.class_table.setRowCount(len(worst))
        for r, k in enumerate(worst):
            self.class_table.setItem(r, 0, QTableWidgetItem(cname(int(ce["classes"][k]))))
            values = (int(ce["false_accepts"][k] + ce["false_rejects"][k]), int(ce["false_accepts"][k]),
                      int(ce["false_rejects"][k]), int(ce["genuine_pairs"][k]))
            for c, val in enumerate(values, start=1):
                item = QTableWidgetItem()
                item.setData(Qt.ItemDataRole.DisplayRole, val)
                self.class_table.setItem(r, c, item)
            pc = e.get("per_class")
            if pc is not None:  # this class's own rates: one threshold is stricter for some classes than others
                at = int(np.searchsorted(pc["classes"], ce["classes"][k]))
                for c, key in ((5, "far"), (6, "frr")):
                    v = float(pc[key][at]) if at < len(pc["classes"]) else float("nan")
                    item = QTableWidgetItem()
                    item.setData(Qt.ItemDataRole.DisplayRole, round(100 * v, 2) if math.isfinite(v) else None)
                    item.setToolTip(f"{key.upper()} of this class at t = {self.threshold:.4f}: {_rate(v)}")
                    self.class_table.setItem(r, c, item)
        self.class_table.setSortingEnabled(True)
        self.class_table.sortItems(1, Qt.SortOrder.DescendingOrder)
        n_fa, n_fr = len(e["false_accept"][0]), len(e["false_reject"][0])
        self.errors_note.setText(f"At t = {self.threshold:.4f}: the {n_fa} false accepts and {n_fr} false rejects "
                                 f"nearest the threshold; click a pair to mark it in the map."
                                 + (f" ({d.analysis_note}.)" if d.analysis_note else ""))
        self._show_point()  # adds the intervals of FAR / FRR

    @Slot(int, QPixmap)
    def _on_thumb(self, sid: int, pm: QPixmap) -> None:
        for table, r, c in self._thumb_cells.get(int(sid), []):
            item = table.item(r, c)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == sid:
                self._set_thumb(item, sid, pm)

    def _set_thumb(self, item: QTableWidgetItem, sid: int, pm: QPixmap | None) -> None:
        """The image's thumbnail with its edit mark (excluded, relabelled, duplicate) painted on."""
        from explorer.widgets.badges import badged, mark_words

        mark = self.state.marks.get(int(sid))
        if pm is not None:
            item.setIcon(QIcon(badged(pm, mark)))
        path = self.thumbs.path(sid) if self.thumbs is not None else None
        item.setToolTip(f"sample {sid}: {path}" + (f"\nedit: {mark_words(mark)}" if mark else ""))

    @Slot(object)
    def _on_marks(self, _marks) -> None:
        for sid, cells in self._thumb_cells.items():
            for table, r, c in cells:
                item = table.item(r, c)
                if item is not None and item.data(Qt.ItemDataRole.UserRole) == sid:
                    self._set_thumb(item, sid, self.thumbs.get(sid) if self.thumbs is not None else None)

    def _on_pair_selected(self, table: QTableWidget) -> None:
        rows = {ix.row() for ix in table.selectedIndexes()}
        if not rows:
            return
        r = min(rows)
        a, b = table.item(r, 0), table.item(r, 1)
        if a is None or b is None:
            return
        self.state.set_highlight([int(a.data(Qt.ItemDataRole.UserRole)), int(b.data(Qt.ItemDataRole.UserRole))])

    # ---- export ---------------------------------------------------------------------------------------------------
    def threshold_record(self) -> dict:
        """Everything a deployment needs about the chosen threshold, as strict-JSON-ready plain data."""
        d, p = self.data, self.point
        if d is None or d.hist is None or p is None or self.threshold is None:
            raise RuntimeError("no threshold to export: the ROC of a run with held-out classes is not ready")
        roc = d.roc
        boot = self.boot or {}
        rates_ci = (self.errors or {}).get("rates_ci") or {}

        def ci(key: str, src: dict) -> list | None:
            b = src.get(key)
            if b is None:
                return None
            lo, hi = (b.low, b.high) if hasattr(b, "low") else (b["low"], b["high"])
            return None if not (math.isfinite(lo) and math.isfinite(hi)) else [float(lo), float(hi)]

        levels = {}
        for far in verification.FAR_LEVELS:
            ta = roc.tar_at_far[far]
            levels[_far_key(far)] = {
                "tar": _num(ta.tar) if ta.sufficient else None,
                "threshold": _num(ta.threshold),
                "achieved_far": _num(ta.achieved_far),
                "sufficient_pairs": ta.sufficient,
                "tar_ci95": ci(f"tar_at_far_{far:g}", boot) if ta.sufficient else None,
            }
        return {
            "format": "embedding-explorer-threshold",
            "version": 1,
            "threshold": float(self.threshold),
            "metric": d.metric,
            "distance": metric_words(d.metric),
            "direction": "accept a pair as the same class when distance <= threshold (smaller = more alike)",
            "chosen_by": self.rule,
            "run": str(d.run_dir),
            "epoch": int(d.epoch),
            "checkpoint": d.checkpoint,
            "evaluated_on": {
                "split": "held-out classes (never trained on)",
                "n_samples": int(len(d.ids)),
                "n_classes": int(len(np.unique(d.labels))),
                "n_genuine_pairs": int(d.hist.n_genuine),
                "n_impostor_pairs": int(d.hist.n_impostor),
            },
            "at_threshold": {
                "far": _num(p["far"]),
                "frr": _num(p["frr"]),
                "tar": _num(p["tar"]),
                "accuracy": _num(p["accuracy"]),
                "balanced_accuracy": _num(p["balanced_accuracy"]),
                "far_ci95": ci("far", rates_ci),
                "frr_ci95": ci("frr", rates_ci),
                "impostor_pairs_accepted": int(p["impostor_accepted"]),
                "genuine_pairs_rejected": int(p["genuine_rejected"]),
            },
            "curve": {
                "auc": _num(roc.auc),
                "auc_ci95": ci("auc", boot),
                "eer": _num(roc.eer),
                "eer_ci95": ci("eer", boot),
                "eer_threshold": _num(roc.eer_threshold),
                "tar_at_far": levels,
            },
            "intervals": "95 % percentile bootstrap over classes" if (boot or rates_ci) else "not computed yet",
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def export_threshold(self) -> Path:
        """Write :meth:`threshold_record` to ``thresholds.json`` in the run folder (atomic); returns the path."""
        record = self.threshold_record()
        return write_json_atomic(Path(record["run"]) / THRESHOLDS_FILE, record)

    def export_plots(self, folder: str | Path) -> list[Path]:
        """Save the histogram and the ROC as PNG and SVG into ``folder``; returns the files written."""
        from pyqtgraph.exporters import ImageExporter, SVGExporter

        from trainer.store import refuse_run_file

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"cannot export plots to {folder}: not an existing folder")
        refuse_run_file(folder / "plot.png")  # beside a run's files is fine, among its epochs or checkpoints not
        epoch = self.data.epoch if self.data is not None else 0
        out = []
        for name, widget in (("pair_histogram", self.hist_plot), ("roc", self.roc_plot)):
            item = widget.getPlotItem()
            png = folder / f"{name}_epoch{epoch:04d}.png"
            exp = ImageExporter(item)
            exp.parameters()["width"] = max(800, int(item.sceneBoundingRect().width()))
            exp.export(str(png))
            svg = folder / f"{name}_epoch{epoch:04d}.svg"
            try:
                SVGExporter(item).export(str(svg))
            except ValueError:
                # pyqtgraph 0.14's SVG exporter cannot parse the closed paths ("... Z") that recent Qt writes
                # (pyqtgraph issue #3495); draw the plot through Qt's own SVG generator instead
                _render_svg(widget, svg)
            out += [png, svg]
        return out

    @Slot()
    def _on_save_clicked(self) -> None:
        if self.data is None or self.point is None:
            return
        try:
            path = self.export_threshold()
        except (OSError, ValueError, RuntimeError) as exc:
            QMessageBox.warning(self, "Save threshold", f"Could not save the threshold: {exc}")
            return
        note = "" if self.boot is not None and self.errors is not None else \
            " (intervals still being computed were saved as null; save again when they appear)"
        self.errors_note.setText(f"Saved to {path}{note}")

    @Slot()
    def _on_export_plots_clicked(self) -> None:
        if self.data is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Export plots to folder", str(self.data.run_dir))
        if not folder:
            return
        try:
            files = self.export_plots(folder)
        except (OSError, ValueError, RuntimeError) as exc:  # RunError: a run's own folder
            QMessageBox.warning(self, "Export plots", f"Could not export the plots: {exc}")
            return
        self.errors_note.setText(f"Wrote {', '.join(p.name for p in files)} to {folder}")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self._cancel_all()
        if self._own_thumbs:
            self.thumbs.shutdown(wait=False)
        super().closeEvent(event)
