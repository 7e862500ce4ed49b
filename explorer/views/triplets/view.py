"""Triplet inspection view: easy / semi-hard / hard census of an epoch, example triplets, what the miner
chose in the last batches, and plain-language diagnostics.

All counting is trainer.analysis.census (exact, PML's rules); this module only schedules it in background jobs, caches
the per-epoch shares for the chart, and shows the results. Clicking a triplet, a mined tuple or a diagnostic
highlights its samples in the map (AppState.set_highlight).
"""

from __future__ import annotations

import math
from typing import Any
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, QTimer, Slot
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDoubleSpinBox, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QListWidget, QListWidgetItem, QProgressBar, QSplitter,
                               QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)
from explorer.widgets.charts import count_chart, set_legend_title
from explorer.jobs import JobRunner
from explorer.state import AppState
from explorer.widgets.view_setup import job_reporting, setup_view, subscribe
from explorer.widgets.lazy import DeferWhileHidden
from explorer.widgets.framed import OTHER, QUERY, SAME, framed_pixmap
from trainer.store import SPLIT_HELDOUT
from explorer.widgets.texts import metric_words
from explorer.views.triplets.jobs import CATEGORY_TITLES, CensusResult, HISTORY_MAX_ANCHORS, MAX_MINED_ROWS, N_EXAMPLES, SPLITS, census_job, examples_job, history_job

RULES_TEXT = ("PML rules, d = distance: easy d(a,n) > d(a,p)+m; semi-hard d(a,p) < d(a,n) <= d(a,p)+m; "
              "hard d(a,n) <= d(a,p)")
COLOURS = {"easy": (44, 160, 44), "semihard": (255, 127, 14), "hard": (214, 39, 40)}
THUMB = 56


HISTORY_AFTER_CENSUS_FROM = 200_000  # samples from which the past epochs' census waits for this epoch's


class _Num(QTableWidgetItem):
    """A table cell that sorts by its number."""

    def __init__(self, value: float, text: str | None = None) -> None:
        super().__init__(text if text is not None else ("" if not math.isfinite(value) else f"{value:.4f}"))
        self.value = float(value) if math.isfinite(value) else math.inf
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other) -> bool:
        return self.value < getattr(other, "value", math.inf)


class TripletsView(DeferWhileHidden, QWidget):
    """Triplet census of an epoch with examples, the miner's choices and diagnostics, all linked to the map."""

    def __init__(self, state: AppState, jobs: JobRunner | None = None, thumbnails=None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        setup_view(self, state, jobs, thumbnails, name="triplets", thumb_px=96)
        self.distance_metric = "cosine"
        self.result: CensusResult | None = None
        self.examples = None
        self.history: dict[tuple[str, float], dict[int, tuple]] = {}
        self._history_after_examples = False  # a large run: the past epochs' census waits for the examples
        self._thumb_cells: dict[int, list[tuple[Any, int, int]]] = {}
        self._build()
        self._restart = QTimer(self, singleShot=True, interval=250)
        self._restart.timeout.connect(self.recompute)

        subscribe(self, state, replay=("run_changed", "epoch_changed"), run_changed=self._on_run,
                  epoch_changed=self._on_epoch, epochs_available=self._on_epochs, marks_changed=self._on_marks)

    # ---- layout -------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        bar = QHBoxLayout()
        self.title = QLabel("Triplets: open a run")
        self.title.setStyleSheet("font-weight: bold")
        bar.addWidget(self.title)
        bar.addSpacing(12)
        bar.addWidget(QLabel("Anchors of:"))
        self.split_combo = QComboBox()
        for key, (text, _) in SPLITS.items():
            self.split_combo.addItem(text, key)
        self.split_combo.setToolTip("Count the triplets whose anchor, positive and negative lie in this split")
        self.split_combo.currentIndexChanged.connect(lambda _i: self._restart.start())
        bar.addWidget(self.split_combo)
        bar.addWidget(QLabel("Margin m:"))
        self.margin_spin = QDoubleSpinBox()
        self.margin_spin.setDecimals(4)
        self.margin_spin.setRange(0.0, 100.0)
        self.margin_spin.setSingleStep(0.01)
        self.margin_spin.setValue(0.1)
        self.margin_spin.setToolTip("The margin of the census; defaults to the loss's margin")
        self.margin_spin.valueChanged.connect(lambda _v: self._restart.start())
        bar.addWidget(self.margin_spin)
        self.metric_label = QLabel("")
        bar.addWidget(self.metric_label)
        bar.addStretch(1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setMaximumWidth(260)
        self.progress.setMinimumWidth(1)  # it takes the room there is: showing it must not widen the window
        self.progress.hide()
        bar.addWidget(self.progress)
        lay.addLayout(bar)
        self.rules_label = QLabel(RULES_TEXT)
        self.rules_label.setToolTip("Categories exactly as pytorch-metric-learning's TripletMarginMiner assigns them; "
                                    "for cosine the distance is 1 − cos")
        self.rules_label.setStyleSheet("color: #444")
        lay.addWidget(self.rules_label)

        top = QSplitter(Qt.Orientation.Horizontal)
        box = QGroupBox("Census of the epoch")
        bl = QVBoxLayout(box)
        self.census_table = QTableWidget(3, 3)
        self.census_table.setHorizontalHeaderLabels(["category", "triplets", "share"])
        self.census_table.verticalHeader().hide()
        self.census_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.census_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for r, cat in enumerate(CATEGORY_TITLES):
            it = QTableWidgetItem(CATEGORY_TITLES[cat])
            it.setForeground(QColor(*COLOURS[cat]))
            self.census_table.setItem(r, 0, it)
        # three rows, always all shown: the table is exactly as tall as its header and rows ("Hard" was cut off
        # behind a scroll bar)
        self.census_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.census_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.census_table.resizeRowsToContents()
        t = self.census_table
        t.setFixedHeight(t.horizontalHeader().sizeHint().height() + sum(t.rowHeight(r) for r in range(t.rowCount()))
                         + 2 * t.frameWidth() + 2)
        bl.addWidget(self.census_table)
        self.census_label = QLabel("")
        self.census_label.setWordWrap(True)
        bl.addWidget(self.census_label)
        bl.addStretch(1)
        top.addWidget(box)
        self.share_plot = count_chart("Share of triplets per epoch", "epoch", y_label="share of triplets")
        set_legend_title(self.share_plot, "Share of triplets per epoch",
                         [(CATEGORY_TITLES[c], COLOURS[c]) for c in CATEGORY_TITLES])
        sp = self.share_plot.getPlotItem()
        sp.showGrid(x=True, y=True, alpha=0.2)
        sp.setYRange(0, 1)
        self.share_curves = {cat: sp.plot([], [], name=CATEGORY_TITLES[cat], pen=pg.mkPen(COLOURS[cat], width=2),
                                          symbol="o", symbolSize=6, symbolBrush=COLOURS[cat])
                             for cat in CATEGORY_TITLES}
        self.epoch_line = pg.InfiniteLine(angle=90, pen=pg.mkPen((120, 120, 120), style=Qt.PenStyle.DashLine))
        sp.addItem(self.epoch_line)
        top.addWidget(self.share_plot)
        top.setSizes([380, 700])

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_examples(), "Examples")
        self.tabs.addTab(self._build_miner(), "What the miner chose")
        self.tabs.addTab(self._build_diagnostics(), "Diagnostics")
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(top)
        main.addWidget(self.tabs)
        main.setSizes([240, 560])
        lay.addWidget(main, 1)

    def _triplet_table(self, extra: list[str]) -> QTableWidget:
        t = QTableWidget(0, 3 + len(extra))
        t.setHorizontalHeaderLabels(["anchor", "positive", "negative"] + extra)
        t.setIconSize(QSize(THUMB, THUMB))
        t.verticalHeader().setDefaultSectionSize(THUMB + 6)
        t.verticalHeader().hide()
        for c in range(3):
            t.setColumnWidth(c, THUMB + 90)
        t.horizontalHeader().setStretchLastSection(True)
        t.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # the job's order until a header click
        t.horizontalHeader().setSortIndicatorClearable(True)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        t.setToolTip("Click a row to highlight its three points in the map")
        t.currentCellChanged.connect(lambda r, _c, _pr, _pc, table=t: self._on_triplet_row(table, r))
        from explorer.widgets.image_menu import ImageListMenu

        t.image_menu = ImageListMenu(t, lambda: self.run, lambda table=t: self._table_ids(table), "triplets' images",
                                     at=lambda pos, table=t: self._ids_at(table, pos))
        return t

    @staticmethod
    def _cell_id(item) -> int | None:
        data = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        return int(data[0]) if isinstance(data, (tuple, list)) and data else None

    def _table_ids(self, t: QTableWidget) -> list[int]:
        """The images of a triplet table, row by row (anchor, positive, negative)."""
        out = []
        for r in range(t.rowCount()):
            for c in range(3):
                sid = self._cell_id(t.item(r, c))
                if sid is not None:
                    out.append(sid)
        return out

    def _ids_at(self, t: QTableWidget, pos) -> list[int]:
        ix = t.indexAt(pos)
        if not ix.isValid() or ix.column() > 2:
            return []
        sid = self._cell_id(t.item(ix.row(), ix.column()))
        return [] if sid is None else [sid]

    def _build_examples(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        row = QHBoxLayout()
        row.addWidget(QLabel("Category:"))
        self.category_combo = QComboBox()
        for cat in ("hard", "semihard", "easy"):
            self.category_combo.addItem(CATEGORY_TITLES[cat], cat)
        self.category_combo.setToolTip("Which kind of triplet to show")
        row.addWidget(self.category_combo)
        row.addWidget(QLabel("Class:"))
        self.class_combo = QComboBox()
        self.class_combo.addItem("All classes", None)
        self.class_combo.setToolTip("Only triplets whose anchor has this class")
        row.addWidget(self.class_combo)
        row.addWidget(QLabel("Order:"))
        self.sort_combo = QComboBox()
        self.sort_combo.addItem("Hardest first (smallest d(a,n) − d(a,p))", "hardest")
        self.sort_combo.addItem("Easiest first", "easiest")
        row.addWidget(self.sort_combo)
        row.addStretch(1)
        self.examples_label = QLabel("")
        row.addWidget(self.examples_label)
        lay.addLayout(row)
        for combo in (self.category_combo, self.class_combo, self.sort_combo):
            combo.currentIndexChanged.connect(lambda _i: self.start_examples())
        self.examples_table = self._triplet_table(["d(a,p)", "d(a,n)", "d(a,n) − d(a,p)"])
        self.examples_table.setSortingEnabled(True)
        lay.addWidget(self.examples_table)
        return w

    def _build_miner(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        split = QSplitter(Qt.Orientation.Horizontal)
        self.miner_plot = count_chart("Per-batch triplet census during the epoch", "batch",
                                      y_label="triplets in the batch")
        set_legend_title(self.miner_plot, "Per-batch triplet census during the epoch",
                         [(CATEGORY_TITLES[c], COLOURS[c]) for c in CATEGORY_TITLES])
        mp = self.miner_plot.getPlotItem()
        mp.showGrid(x=True, y=True, alpha=0.2)
        self.miner_curves = {cat: mp.plot([], [], name=CATEGORY_TITLES[cat], pen=pg.mkPen(COLOURS[cat], width=2))
                             for cat in CATEGORY_TITLES}
        split.addWidget(self.miner_plot)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Batch:"))
        self.batch_combo = QComboBox()
        self.batch_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.batch_combo.setToolTip("Mined tuples are kept for the last batches of each epoch")
        self.batch_combo.currentIndexChanged.connect(lambda _i: self._fill_mined())
        row.addWidget(self.batch_combo)
        row.addStretch(1)
        self.miner_label = QLabel("")
        self.miner_label.setWordWrap(True)
        row.addWidget(self.miner_label, 2)
        rl.addLayout(row)
        self.mined_table = self._triplet_table(["d(a,p)", "d(a,n)", "kind"])
        self.mined_table.setSortingEnabled(True)
        rl.addWidget(self.mined_table)
        split.addWidget(right)
        split.setSizes([420, 700])
        lay.addWidget(split)
        return w

    def _build_diagnostics(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        self.diag_list = QListWidget()
        self.diag_list.setWordWrap(True)
        self.diag_list.setToolTip("Click a finding to highlight its samples in the map")
        self.diag_list.currentRowChanged.connect(self._on_diag_row)
        lay.addWidget(self.diag_list, 1)
        from explorer.widgets.image_menu import ImageListMenu, icon_grid

        self.diag_images = icon_grid(72, (96, 104), max_height=230)
        self.diag_images.hide()  # shown with the images of a finding that names samples

        def diag_ids() -> list[int]:
            return [int(self.diag_images.item(i).data(Qt.ItemDataRole.UserRole)[0])
                    for i in range(self.diag_images.count())]

        def diag_at(pos) -> list[int]:
            it = self.diag_images.itemAt(pos)
            return [] if it is None else [int(it.data(Qt.ItemDataRole.UserRole)[0])]

        self.diag_menu = ImageListMenu(self.diag_images, lambda: self.run, diag_ids, "finding's images", at=diag_at)
        lay.addWidget(self.diag_images)
        return w

    # ---- public API ---------------------------------------------------------------------------------------------
    @property
    def split(self) -> str:
        return str(self.split_combo.currentData())

    @property
    def margin(self) -> float:
        return float(self.margin_spin.value())

    def is_busy(self) -> bool:
        """True while any of this view's background jobs has not delivered (tests, status bar)."""
        return any(self.jobs.is_running((self._key, p)) for p in ("census", "history", "examples")) or \
            self._restart.isActive()

    def recompute(self) -> None:
        """Start the census of the epoch shown (and the missing epochs of the shares chart)."""
        self._restart.stop()
        if self.run is None or self.state.epoch < 0 or self._defer():
            return
        self.jobs.submit((self._key, "census"), census_job, self.run, self.state.epoch, self.split, self.margin,
                         self.distance_metric, on_result=self._on_census, on_partial=self._on_census_partial,
                         **self._reporting)
        if len(self.run.samples.split) < HISTORY_AFTER_CENSUS_FROM:
            self._start_history()
        # else: after the census (_on_census): at 1e6 both at once held two copies of the split and their work

    def start_examples(self) -> None:
        """Find example triplets of the chosen category / class / order for the current census."""
        r = self.result
        if r is None or r.census is None:
            return
        self.jobs.submit((self._key, "examples"), examples_job, r.x, r.labels, r.ids,
                         str(self.category_combo.currentData()), r.margin, r.metric, self.class_combo.currentData(),
                         str(self.sort_combo.currentData()), N_EXAMPLES, on_result=self._on_examples,
                         **self._reporting)

    # ---- state --------------------------------------------------------------------------------------------------
    @Slot(object)
    def _on_run(self, run) -> None:
        for p in ("census", "history", "examples"):
            self.jobs.cancel((self._key, p))
        self.run = run
        self.result = self.examples = None
        self.history.clear()
        self._clear()
        if run is None:
            self.title.setText("Triplets: open a run")
            return
        if getattr(self.thumbs, "_samples", None) is not run.samples:
            self.thumbs.set_samples(run.samples)
        self.distance_metric = run.metric
        self.margin_spin.blockSignals(True)
        self.margin_spin.setValue(run.margin)
        self.margin_spin.blockSignals(False)
        self.metric_label.setText(f"  d = {metric_words(self.distance_metric)}")
        has_heldout = bool((np.asarray(run.samples.split) == SPLIT_HELDOUT).any())
        self.split_combo.blockSignals(True)
        self.split_combo.setCurrentIndex(0 if has_heldout else 1)
        self.split_combo.blockSignals(False)
        self.title.setText("Triplets")

    @Slot(int)
    def _on_epoch(self, epoch: int) -> None:
        if self.run is not None and epoch >= 0:
            self.recompute()

    @Slot(list)
    def _on_epochs(self, epochs: list) -> None:
        if self.run is not None and self.result is not None and not self._defer():
            self._start_history()

    def _catch_up(self) -> None:
        self.recompute()

    def _start_history(self) -> None:
        done = self.history.setdefault((self.split, self.margin), {})
        self._draw_history()
        epochs = list(self.run.epochs)
        if any(e not in done for e in epochs):
            self.jobs.submit((self._key, "history"), history_job, self.run, epochs, self.split, self.margin,
                             self.distance_metric, dict(done), on_result=self._on_history,
                             on_partial=self._on_history, **self._reporting)

    def _clear(self) -> None:
        for r in range(3):
            for c in (1, 2):
                self.census_table.setItem(r, c, QTableWidgetItem(""))
        self.census_label.setText("")
        for curve in list(self.share_curves.values()) + list(self.miner_curves.values()):
            curve.setData([], [])
        self.examples_table.setRowCount(0)
        self.mined_table.setRowCount(0)
        self.batch_combo.clear()
        self.diag_list.clear()
        self.diag_images.clear()
        self._thumb_cells.clear()
        self.class_combo.blockSignals(True)
        while self.class_combo.count() > 1:
            self.class_combo.removeItem(1)
        self.class_combo.blockSignals(False)

    # ---- jobs ---------------------------------------------------------------------------------------------------
    @property
    def _reporting(self) -> dict:
        """The progress and failure callbacks every job of this view shares."""
        return job_reporting(self.progress, self.census_label, "Failed: ")

    def _job_done(self) -> None:
        if not any(self.jobs.is_running((self._key, p)) for p in ("census", "history", "examples")):
            self.progress.hide()

    def _one_at_a_time(self) -> bool:
        """A run so large that the census, the examples and the past epochs' census run one after another (at 1e6
        each holds a copy of the split and its work)."""
        return self.run is not None and len(self.run.samples.split) >= HISTORY_AFTER_CENSUS_FROM

    def _on_census(self, result) -> None:
        self._job_done()
        self._history_after_examples = False
        self._show_census(result)
        if self._one_at_a_time() and not self._defer():
            if self.jobs.is_running((self._key, "examples")):
                self._history_after_examples = True  # _on_examples starts it
            else:
                self._start_history()

    def _on_census_partial(self, result) -> None:
        if result.census is not None and self.result is None:
            self._show_census(result, partial=True)

    def _on_history(self, result) -> None:
        if not self.jobs.is_running((self._key, "history")):
            self._job_done()
        self.history.setdefault((self.split, self.margin), {}).update(result)
        self._draw_history()

    def _on_examples(self, result) -> None:
        self._job_done()
        self._show_examples(result)
        if self._history_after_examples:
            self._history_after_examples = False
            if self.run is not None and not self._defer():
                self._start_history()

    # ---- showing results ----------------------------------------------------------------------------------------
    def _class_name(self, c: int) -> str:
        classes = self.run.classes if self.run is not None else []
        return classes[c] if 0 <= c < len(classes) else str(c)

    def _show_census(self, r: CensusResult, partial: bool = False) -> None:
        new_key = self.result is None or (self.result.epoch, self.result.split, self.result.margin) != \
            (r.epoch, r.split, r.margin)
        self.result = r
        split_name = SPLITS[r.split][0].lower()
        self.title.setText(f"Triplets of epoch {r.epoch}, {split_name} anchors")
        c = r.census
        if c is None:
            self.census_label.setText(r.problem)
            for row in range(3):
                for col in (1, 2):
                    self.census_table.setItem(row, col, QTableWidgetItem("–"))
        else:
            for row, cat in enumerate(CATEGORY_TITLES):
                n = getattr(c, f"total_{cat}")
                share = getattr(c, f"share_{cat}")
                self.census_table.setItem(row, 1, _Num(n, f"{n:,}"))
                self.census_table.setItem(row, 2, _Num(share, f"{share:.2%}" if math.isfinite(share) else "–"))
            which = f"{c.n_anchors:,} anchors" if not c.sampled else \
                f"a random sample of {c.n_anchors:,} of the {len(r.ids):,} anchors (each against every sample)"
            self.census_label.setText(
                f"{which} ({len(r.classes)} classes) of the {split_name} split, "
                f"{c.total:,} triplets, margin m = {r.margin:g}. Mean over triplets: d(a,p) = "
                f"{c.triplet_mean_d_ap:.4f}, d(a,n) = {c.triplet_mean_d_an:.4f}."
                + ("" if not partial else " Diagnostics…"))
            # the current point of the chart is exactly this census
            self.history.setdefault((r.split, r.margin), {})[r.epoch] = (c.share_easy, c.share_semihard,
                                                                         c.share_hard, c.sampled)
            self._draw_history()
        if new_key:
            self.class_combo.blockSignals(True)
            keep = self.class_combo.currentData()
            while self.class_combo.count() > 1:
                self.class_combo.removeItem(1)
            for cl in r.classes:
                self.class_combo.addItem(self._class_name(int(cl)), int(cl))
            i = self.class_combo.findData(keep)
            self.class_combo.setCurrentIndex(max(i, 0))
            self.class_combo.blockSignals(False)
            self._show_miner(r)
            if not self._one_at_a_time():
                self.start_examples()
        if not partial:
            self._show_diagnostics(r)
            if self._one_at_a_time():  # after the diagnostics: their index and the examples' search at once
                self.start_examples()  # were 0.5 GB more at 1e6

    def _draw_history(self) -> None:
        done = self.history.get((self.split, self.margin), {})
        epochs = sorted(e for e, v in done.items() if math.isfinite(v[0]))
        for i, cat in enumerate(CATEGORY_TITLES):
            self.share_curves[cat].setData(epochs, [done[e][i] for e in epochs])
        if self.state.epoch >= 0:
            self.epoch_line.setValue(self.state.epoch)
        sampled = any(done[e][3] for e in epochs)
        set_legend_title(self.share_plot, "Share of triplets per epoch"
                         + (f" (large split: {HISTORY_MAX_ANCHORS:,} sampled anchors per past epoch)" if sampled else ""),
                         [(CATEGORY_TITLES[c], COLOURS[c]) for c in CATEGORY_TITLES])

    def history_points(self) -> dict[int, tuple]:
        """Epoch -> (share easy, semi-hard, hard, sampled) of the current split and margin (the chart's data)."""
        return dict(self.history.get((self.split, self.margin), {}))

    def _thumb_icon(self, sid: int, colour: QColor, pm: QPixmap | None = None, size: int = THUMB + 8) -> QIcon:
        """The framed thumbnail with the image's edit mark (excluded, relabelled, duplicate) painted on."""
        from explorer.widgets.badges import badged

        pm = self.thumbs.request(sid) if pm is None else pm
        return QIcon(framed_pixmap(badged(pm, self.state.marks.get(int(sid))), colour, size, width=3))

    @Slot(object)
    def _on_marks(self, _marks) -> None:
        for sid in list(self._thumb_cells):
            pm = self.thumbs.get(sid)
            if pm is not None:
                self._on_thumb(sid, pm)

    def _thumb_item(self, table: QTableWidget, row: int, col: int, sid: int, colour: QColor) -> None:
        if sid < 0:
            table.setItem(row, col, QTableWidgetItem("—"))
            return
        it = _Num(sid, f"{self._class_name(int(self.run.samples.labels[sid]))}\n#{sid}")
        it.setIcon(self._thumb_icon(sid, colour))
        it.setData(Qt.ItemDataRole.UserRole, (sid, colour.name()))
        it.setToolTip(f"sample {sid}: {self.run.samples.paths[sid]}")
        table.setItem(row, col, it)
        self._thumb_cells.setdefault(sid, []).append((table, it))

    def _show_examples(self, ex) -> None:
        self.examples = ex
        t = self.examples_table
        t.setSortingEnabled(False)
        t.setRowCount(len(ex))
        for row in range(len(ex)):
            a, p, n = int(ex.anchor[row]), int(ex.positive[row]), int(ex.negative[row])
            self._thumb_item(t, row, 0, a, QUERY)
            self._thumb_item(t, row, 1, p, SAME)
            self._thumb_item(t, row, 2, n, OTHER)
            t.setItem(row, 3, _Num(float(ex.d_ap[row])))
            t.setItem(row, 4, _Num(float(ex.d_an[row])))
            t.setItem(row, 5, _Num(float(ex.d_an[row]) - float(ex.d_ap[row])))
        t.setSortingEnabled(True)
        cat = CATEGORY_TITLES[str(self.category_combo.currentData())].lower()
        self.examples_label.setText(f"{len(ex)} {cat} triplet(s)" if len(ex) else f"no {cat} triplets here")

    def _show_miner(self, r: CensusResult) -> None:
        tel = r.telemetry
        x = np.arange(len(tel.get("n_easy", [])))
        for cat in CATEGORY_TITLES:
            y = np.asarray(tel.get(f"n_{cat}", []), float)
            self.miner_curves[cat].setData(x[: len(y)], y)
        m = r.mined
        batches = np.unique(m["batch"]) if len(m.get("batch", [])) else np.zeros(0, np.int64)
        self.batch_combo.blockSignals(True)
        self.batch_combo.clear()
        for b in batches[::-1]:
            self.batch_combo.addItem(f"batch {int(b)} ({int((m['batch'] == b).sum())} tuples)", int(b))
        self.batch_combo.blockSignals(False)
        if len(batches):
            self.miner_label.setText(f"The miner's tuples of the last {len(batches)} batches of epoch {r.epoch}; "
                                     "distances from the epoch's stored embeddings (after the epoch's updates).")
        else:
            self.miner_label.setText("This epoch's telemetry holds no mined tuples (epoch 0 is the untrained net, "
                                     "or the loss uses no miner).")
        self._fill_mined()

    def _fill_mined(self) -> None:
        t = self.mined_table
        t.setSortingEnabled(False)
        t.setRowCount(0)
        r = self.result
        if r is None or self.batch_combo.currentData() is None:
            return
        m = r.mined
        rows = np.flatnonzero(m["batch"] == int(self.batch_combo.currentData()))[:MAX_MINED_ROWS]
        t.setRowCount(len(rows))
        for i, j in enumerate(rows):
            a, p, n = int(m["anchor"][j]), int(m["positive"][j]), int(m["negative"][j])
            self._thumb_item(t, i, 0, a, QUERY)
            self._thumb_item(t, i, 1, p, SAME)
            self._thumb_item(t, i, 2, n, OTHER)
            t.setItem(i, 3, _Num(float(m["d_ap"][j])))
            t.setItem(i, 4, _Num(float(m["d_an"][j])))
            kind = "triplet" if p >= 0 and n >= 0 else ("positive pair" if p >= 0 else "negative pair")
            t.setItem(i, 5, QTableWidgetItem(kind))
        t.setSortingEnabled(True)

    def _show_diagnostics(self, r: CensusResult) -> None:
        self.diag_list.blockSignals(True)
        self.diag_list.clear()
        self.diag_images.clear()
        for d in r.diagnostics:
            mark = "⚠" if d.level == "warning" else "ℹ"
            it = QListWidgetItem(f"{mark} {d.title}: {d.detail}")
            it.setData(Qt.ItemDataRole.UserRole, np.asarray(d.sample_ids, np.int64))
            if d.level == "warning":
                it.setForeground(QColor(170, 60, 0))
            n = len(d.sample_ids)
            it.setToolTip(f"{n} sample(s): click to highlight them in the map" if n else d.detail)
            self.diag_list.addItem(it)
        if not r.diagnostics:
            self.diag_list.addItem(QListWidgetItem("✓ Nothing to report for this epoch."))
        self.diag_list.blockSignals(False)

    # ---- clicks -------------------------------------------------------------------------------------------------
    def _row_ids(self, table: QTableWidget, row: int) -> list[int]:
        ids = []
        for c in range(3):
            it = table.item(row, c)
            data = it.data(Qt.ItemDataRole.UserRole) if it is not None else None
            if data is not None:
                ids.append(int(data[0]))
        return ids

    def _on_triplet_row(self, table: QTableWidget, row: int) -> None:
        if row >= 0:
            ids = self._row_ids(table, row)
            if ids:
                self.state.set_highlight(np.asarray(ids, np.int64))

    def _on_diag_row(self, row: int) -> None:
        self.diag_images.clear()
        self.diag_images.hide()
        it = self.diag_list.item(row) if row >= 0 else None
        ids = it.data(Qt.ItemDataRole.UserRole) if it is not None else None
        if ids is None or len(ids) == 0:
            return
        self.state.set_highlight(np.asarray(ids, np.int64))
        self.diag_images.show()
        for sid in np.asarray(ids)[:60]:
            sid = int(sid)
            img = QListWidgetItem(f"{self._class_name(int(self.run.samples.labels[sid]))}\n#{sid}")
            img.setIcon(self._thumb_icon(sid, OTHER, size=80))
            img.setData(Qt.ItemDataRole.UserRole, (sid, OTHER.name()))
            img.setToolTip(f"sample {sid}: {self.run.samples.paths[sid]}")
            self.diag_images.addItem(img)
            self._thumb_cells.setdefault(sid, []).append((self.diag_images, img))

    @Slot(int, QPixmap)
    def _on_thumb(self, sid: int, pm: QPixmap) -> None:
        alive = []
        for owner, it in self._thumb_cells.get(int(sid), []):
            try:
                data = it.data(Qt.ItemDataRole.UserRole)
            except RuntimeError:  # the item was deleted with its table contents
                continue
            size = 80 if owner is self.diag_images else THUMB + 8
            it.setIcon(self._thumb_icon(int(sid), QColor(data[1]), pm, size))
            alive.append((owner, it))
        if alive:
            self._thumb_cells[int(sid)] = alive
        else:
            self._thumb_cells.pop(int(sid), None)
