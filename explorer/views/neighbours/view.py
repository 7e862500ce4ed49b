"""Neighbour query panel: the k nearest samples of a query in the embedding of the epoch shown.

A query is the point selected in the map, a row of the searchable sample list, or an image file (chosen or
dropped on the panel) embedded with the run's checkpoint. The faiss index (trainer.analysis.index.NeighbourIndex: exact up
below 1M rows, IVF with measured recall from there) is built per (epoch, gallery) in a background job and cached; the
search, the image embedding and the sample-list filter run in background jobs too. Switching epochs re-queries and
marks the neighbours that are new since the previous epoch.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any
import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, QTimer, Slot
from PySide6.QtGui import QIcon, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QListWidgetItem, QProgressBar, QPushButton,
                               QSpinBox, QSplitter, QTableView, QVBoxLayout, QWidget)
from explorer.jobs import JobRunner
from explorer.state import AppState
from explorer.widgets.labels import PathLabel, shrinkable
from explorer.widgets.view_setup import job_reporting, setup_view, subscribe
from explorer.views.neighbours.jobs import GALLERIES, INDEX_CACHE, INDEX_ROWS_BUDGET, IndexEntry, NeighbourQuery, NeighbourResult, checkpoint_for, embed_file_job, filter_samples_job, neighbour_job
from explorer.widgets.framed import OTHER, QUERY, SAME, framed_pixmap
from explorer.widgets.texts import SPLIT_NAMES, metric_words



class SampleTableModel(QAbstractTableModel):
    """The run's samples (file, class, split) as a table over an array of row ids (the search result)."""

    HEAD = ("file", "class", "split")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.samples = None
        self.classes: list[str] = []
        self.rows = np.empty(0, np.int64)

    def set_run(self, samples, classes: list[str]) -> None:
        self.beginResetModel()
        self.samples, self.classes = samples, list(classes)
        self.rows = np.arange(len(samples.paths), dtype=np.int64) if samples is not None else np.empty(0, np.int64)
        self.endResetModel()

    def set_rows(self, rows: np.ndarray) -> None:
        self.beginResetModel()
        self.rows = np.asarray(rows, np.int64)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else 3

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt override
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEAD[section]
        return None

    def sample_id(self, row: int) -> int:
        return int(self.rows[row])

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.samples is None:
            return None
        sid = int(self.rows[index.row()])
        if role == Qt.ItemDataRole.DisplayRole:
            col = index.column()
            if col == 0:  # the file's name: its folder is the class, in the next column (the full path: tooltip)
                return self.samples.paths[sid].replace("\\", "/").rsplit("/", 1)[-1]
            if col == 1:
                c = int(self.samples.labels[sid])
                return self.classes[c] if 0 <= c < len(self.classes) else str(c)
            return SPLIT_NAMES.get(int(self.samples.split[sid]), "?")
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"sample {sid}: {self.samples.paths[sid]} — click to query with it"
        return None


SELECTION_GALLERY = 200  # thumbnails of a multi-selection shown in the grid


class NeighboursView(QWidget):
    """Top-k neighbours of a query (map selection, sample list row or image file) with class marks and P@k."""

    def __init__(self, state: AppState, jobs: JobRunner | None = None, thumbnails=None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        setup_view(self, state, jobs, thumbnails, name="neighbours", thumb_px=128)
        self.distance_metric = "cosine"
        self.query: NeighbourQuery | None = None
        self.result: NeighbourResult | None = None
        self._last_file_result: NeighbourResult | None = None  # for "new since" of file queries
        self._file_thumb: QPixmap | None = None
        self._cache: OrderedDict[tuple[int, str], IndexEntry] = OrderedDict()
        self._models: dict[str, Any] = {}
        self._haystack: np.ndarray | None = None
        self._items: dict[int, list[QListWidgetItem]] = {}
        self.selected = np.zeros(0, np.int64)  # the map's selection when it has several samples
        self._list_shows_selection = False
        self._build()
        self.setAcceptDrops(True)
        self._filter_timer = QTimer(self, singleShot=True, interval=200)
        self._filter_timer.timeout.connect(self._start_filter)

        subscribe(self, state, run_changed=self._on_run, epoch_changed=self._on_epoch,
                  selection_changed=self._on_selection, marks_changed=self._on_marks)

    # ---- layout -------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        bar = QHBoxLayout()
        self.file_button = QPushButton("Query with an image file…")
        self.file_button.setToolTip("Embed an image with the run's checkpoint and find its neighbours "
                                    "(or drop an image file on this panel)")
        self.file_button.clicked.connect(self.choose_file)
        bar.addWidget(self.file_button)
        bar.addWidget(QLabel("k:"))
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 200)
        self.k_spin.setValue(12)
        self.k_spin.setToolTip("How many nearest neighbours to show")
        self.k_spin.valueChanged.connect(lambda _v: self.requery())
        bar.addWidget(self.k_spin)
        # two rows: in one the panel asked for 577 px and left the map a third of a 1280 px window
        bar2 = QHBoxLayout()
        bar2.addWidget(QLabel("Gallery:"))
        self.gallery_combo = QComboBox()
        for key, text in GALLERIES.items():
            self.gallery_combo.addItem(text, key)
        self.gallery_combo.setToolTip("Which samples of the epoch the neighbours are drawn from")
        self.gallery_combo.currentIndexChanged.connect(lambda _i: self.requery())
        bar2.addWidget(self.gallery_combo, 1)
        self.map_button = QPushButton("Show in map")
        self.map_button.setToolTip("Highlight the query and its neighbours in the map (Ctrl+M)")
        self.map_button.setEnabled(False)
        self.map_button.clicked.connect(self.show_in_map)
        bar2.addWidget(self.map_button)
        bar.addStretch(1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setMaximumWidth(220)
        self.progress.setMinimumWidth(1)  # it takes the room there is: showing it must not widen the window
        self.progress.hide()
        bar.addWidget(self.progress)
        lay.addLayout(bar)
        lay.addLayout(bar2)

        self.info = PathLabel("Open a run, then select a point in the map, a sample in the list, or drop an image here.")
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.info)

        split = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search samples: file, class, split (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self._filter_timer.start())
        ll.addWidget(self.search)
        self.model = SampleTableModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2):  # widths from the class names (_fit_columns): ResizeToContents asked every row's text
            # on each reset of the model, ~1.5 s of the GUI thread per committed epoch for 1,800 samples
            self.table.horizontalHeader().setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
        self.table.setToolTip("Click a sample to query with it")
        self.table.setTextElideMode(Qt.TextElideMode.ElideLeft)  # a path's end (its file name) is what tells
        self.table.selectionModel().currentRowChanged.connect(self._on_table_row)
        ll.addWidget(self.table)
        self.count_label = shrinkable(QLabel(""))  # "179 selected of ..." wraps; it widened the list column
        ll.addWidget(self.count_label)
        split.addWidget(left)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        qrow = QHBoxLayout()
        self.query_icon = QLabel()
        self.query_icon.setFixedSize(96, 96)
        self.query_icon.setToolTip("The query")
        qrow.addWidget(self.query_icon)
        self.query_label = PathLabel("No query yet")  # a long file path wraps; it never widens the window
        qrow.addWidget(self.query_label, 1)
        rl.addLayout(qrow)
        from explorer.widgets.image_menu import icon_grid

        self.grid = icon_grid(104, (132, 160))
        self.grid.setWordWrap(True)
        self.grid.setUniformItemSizes(True)
        self.grid.itemDoubleClicked.connect(self._on_grid_double_click)
        self.grid.itemClicked.connect(self._on_grid_click)
        from explorer.widgets.image_menu import ImageListMenu

        self.grid_menu = ImageListMenu(  # right click: mark the image, copy the paths / export them as CSV
            self.grid, lambda: self.state.run, lambda: self.shown_ids().tolist(), "neighbours",
            at=self._ids_at, duplicate_of=lambda _pos: self._query_sample())
        rl.addWidget(self.grid, 1)
        legend = QLabel("<span style='color:#2ca02c'>■</span> same class &nbsp; "
                        "<span style='color:#d62728'>■</span> other class &nbsp; "
                        "<span style='background:#ff8c00;color:white'>&nbsp;NEW&nbsp;</span> not a neighbour in "
                        "the previous epoch &nbsp; — click: highlight in map, double-click: query with it")
        legend.setWordWrap(True)
        rl.addWidget(legend)
        split.addWidget(right)
        # the list needs room for file names (it showed "...ng"), the grid for two columns of thumbnails
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([190, 310])
        lay.addWidget(split, 1)

        for keys, slot in (("Ctrl+F", self.search.setFocus), ("Ctrl+M", self.show_in_map)):
            sc = QShortcut(QKeySequence(keys), self)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(slot)

    # ---- public API ---------------------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return int(self.k_spin.value())

    @property
    def gallery(self) -> str:
        return str(self.gallery_combo.currentData())

    def is_busy(self) -> bool:
        """True while a search, an image embedding or the sample filter has not delivered (tests, status bar)."""
        return any(self.jobs.is_running((self._key, p)) for p in ("search", "embed", "filter"))

    def query_sample(self, sample_id: int) -> None:
        """Find the neighbours of sample ``sample_id`` of the run in the epoch shown."""
        if self.run is None:
            return
        sid = int(sample_id)
        if not 0 <= sid < len(self.run.samples.paths):
            self.info.setText(f"Sample {sid} is not in this run ({len(self.run.samples.paths)} samples).")
            return
        self.query = NeighbourQuery("sample", sample_id=sid, label=int(self.run.samples.labels[sid]))
        self._file_thumb = None
        self.requery()

    def query_file(self, path: str | Path) -> None:
        """Embed ``path`` with the run's checkpoint (in the background) and find its neighbours."""
        if self.run is None:
            self.info.setText("Open a run first: an image is embedded with the run's own network.")
            return
        p = Path(path)
        if not p.is_file():
            self.info.setText(f"{p}: not a file, so it cannot be used as a query.")
            return
        self.info.setText(f"Embedding {p.name} with the checkpoint of epoch ≤ {self.state.epoch}…")
        self.jobs.submit((self._key, "embed"), embed_file_job, self.run, self.state.epoch, str(p), dict(self._models),
                         on_result=self._on_embedded, **self._reporting)

    def choose_file(self) -> None:
        """Ask for an image file and query with it."""
        roots = list(getattr(getattr(self.run, "samples", None), "roots", []) or [])
        start = str(roots[0]) if roots else ""  # the run's image folder, not the program's working folder
        path, _ = QFileDialog.getOpenFileName(self, "Query with an image file", start,
                                              "Images (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp);;All files (*)")
        if path:
            self.query_file(path)

    def requery(self) -> None:
        """Search again for the current query (k, gallery or epoch changed)."""
        if self.run is None or self.query is None or self.state.epoch < 0:
            return
        q = self.query
        if q.kind == "file":
            ck = checkpoint_for(self.run, self.state.epoch)
            if ck is not None and self._checkpoint_epoch(ck) != q.checkpoint_epoch:
                self.query_file(q.path)  # another epoch's network: embed the file again
                return
        epochs = [e for e in self.run.epochs if e < self.state.epoch]
        prev = epochs[-1] if epochs else None
        self.jobs.submit((self._key, "search"), neighbour_job, self.run, self.state.epoch, prev, self.gallery,
                         self.distance_metric, q, self.k, dict(self._cache), on_result=self._on_searched,
                         on_partial=self._on_partly_searched, **self._reporting)

    def show_in_map(self) -> None:
        """Highlight the query (when it is a sample) and its neighbours in the map."""
        if self.result is None:
            return
        ids = list(self.result.ids)
        if self.result.query.sample_id >= 0:
            ids = [self.result.query.sample_id] + ids
        self.state.set_highlight(np.asarray(ids, np.int64))

    # ---- state --------------------------------------------------------------------------------------------------
    @Slot(object)
    def _on_run(self, run) -> None:
        for p in ("search", "embed", "filter"):
            self.jobs.cancel((self._key, p))
        self.run = run
        self.query = self.result = self._last_file_result = None
        self._cache.clear()
        self._models.clear()
        self._haystack = None
        self.grid.clear()
        self._items.clear()
        self.query_icon.clear()
        self.query_label.setText("No query yet")
        self.map_button.setEnabled(False)
        self.search.blockSignals(True)
        self.search.clear()
        self.search.blockSignals(False)
        if run is None:
            self.model.set_run(None, [])
            self.info.setText("Open a run, then select a point in the map, a sample in the list, or drop an image.")
            self.count_label.setText("")
            return
        if getattr(self.thumbs, "_samples", None) is not run.samples:  # a shared cache may already have it
            self.thumbs.set_samples(run.samples)
        self.distance_metric = run.metric
        self.model.set_run(run.samples, run.classes)
        self._fit_columns(run.classes)
        self.count_label.setText(f"{len(run.samples.paths):,} samples")
        self.info.setText(f"Distance: {metric_words(self.distance_metric)} (the loss's metric). Select a point in the map, "
                          "a sample in the list, or drop an image file here.")

    def _fit_columns(self, classes: list[str]) -> None:
        """Class and split columns as wide as their longest text (class names, not every row: O(classes))."""
        fm = self.table.fontMetrics()
        pad = 18
        # the 20 longest names by character count: measuring 2,000 names took ~20 ms of the open
        names = sorted((str(c) for c in classes), key=len)[-20:] + [self.model.HEAD[1]]
        self.table.setColumnWidth(1, min(240, max(fm.horizontalAdvance(n) for n in names) + pad))
        self.table.setColumnWidth(2, max(fm.horizontalAdvance(t) for t in (*SPLIT_NAMES.values(), "split")) + pad)

    @Slot(int)
    def _on_epoch(self, epoch: int) -> None:
        self.requery()

    @Slot(object)
    def _on_selection(self, ids) -> None:
        """One selected sample is the query; several (a lasso, a box, a search) are shown as a gallery and fill
        the sample list, and the query stays (it was replaced by the first id, an unrelated sample)."""
        ids = np.asarray(ids, np.int64)
        if len(ids) == 1:
            self.selected = ids
            self._restore_rows()
            self.query_sample(int(ids[0]))
        elif len(ids) > 1:
            self.show_selection(ids)
        else:
            was_gallery = len(self.selected) > 1
            self.selected = ids
            self._restore_rows()
            if was_gallery:  # the selection's gallery goes; the query's neighbours (if any) come back
                self.grid.clear()
                self._items.clear()
                if self.query is not None:
                    self.requery()
                else:
                    self.query_label.setText("No query yet")

    def show_selection(self, ids: np.ndarray) -> None:
        """The selected images: their thumbnails in the grid (first SELECTION_GALLERY), all of them in the list."""
        if self.run is None:
            return
        ids = np.asarray(ids, np.int64)
        ids = ids[(ids >= 0) & (ids < len(self.run.samples.paths))]
        self.selected = ids
        self.model.set_rows(ids)
        self._list_shows_selection = True
        self.count_label.setText(f"{len(ids):,} selected of {len(self.run.samples.paths):,} samples (Esc in the "
                                 "map clears)")
        self.result = None
        self.grid.clear()
        self._items.clear()
        labels = np.asarray(self.run.samples.labels)
        names = list(self.run.classes)
        for sid in ids[:SELECTION_GALLERY]:
            sid = int(sid)
            c = int(labels[sid])
            item = QListWidgetItem(f"{names[c] if 0 <= c < len(names) else c}\n#{sid}")
            item.setData(Qt.ItemDataRole.UserRole, sid)
            item.setData(Qt.ItemDataRole.UserRole + 1, (True, False))
            item.setToolTip(f"sample {sid}: {self.run.samples.paths[sid]} — double-click to query with it")
            self._set_item_icon(item, self.thumbs.request(sid))
            self.grid.addItem(item)
            self._items.setdefault(sid, []).append(item)
        shown = min(len(ids), SELECTION_GALLERY)
        self.query_icon.clear()  # no query image beside a selection (the last query's stayed there)
        self.query_label.setText(f"Selection: {len(ids):,} images" + (f" (the first {shown:,} shown)"
                                                                       if shown < len(ids) else "")
                                 + " — double-click one to find its neighbours")
        self.map_button.setEnabled(False)

    def _restore_rows(self) -> None:
        """The sample list as the search box filters it (after a selection filled it)."""
        if self._list_shows_selection:
            self._list_shows_selection = False
            self._start_filter()

    def _on_table_row(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.query_sample(self.model.sample_id(current.row()))

    def _on_grid_click(self, item: QListWidgetItem) -> None:
        sid = item.data(Qt.ItemDataRole.UserRole)
        if sid is not None:
            q = self.result.query.sample_id if self.result is not None else -1
            self.state.set_highlight(np.asarray([x for x in (q, int(sid)) if x >= 0], np.int64))

    def _on_grid_double_click(self, item: QListWidgetItem) -> None:
        sid = item.data(Qt.ItemDataRole.UserRole)
        if sid is not None:
            self.query_sample(int(sid))

    def _start_filter(self) -> None:
        if self.run is None:
            return
        self.jobs.submit((self._key, "filter"), filter_samples_job, self._haystack, self.run.samples,
                         self.run.classes, self.search.text(), on_result=self._on_filtered, **self._reporting)

    def _checkpoint_epoch(self, ckpt: Path) -> int:
        m = self._models.get(str(ckpt))
        if m is not None:
            return int(m.epoch)
        try:
            return int(Path(ckpt).stem.split("_")[-1])
        except ValueError:
            return -1

    # ---- drag and drop ------------------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt override
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.query_file(files[0])

    # ---- jobs ---------------------------------------------------------------------------------------------------
    @property
    def _reporting(self) -> dict:
        """The progress and failure callbacks every job of this view shares."""
        return job_reporting(self.progress, self.info, "Could not answer: ")

    def _job_done(self) -> None:
        """Hide the progress bar when nothing else runs."""
        if not self.is_busy():
            self.progress.hide()

    def _on_filtered(self, result) -> None:
        self._job_done()
        if result is None:
            return
        self._haystack, rows = result
        self.model.set_rows(rows)
        self.count_label.setText(f"{len(rows):,} of {len(self.run.samples.paths):,} samples")

    def _on_embedded(self, result) -> None:
        self._job_done()
        if result is None:
            return
        self._models[result["checkpoint"]] = result["model"]
        if result["thumb"] is not None:
            from explorer.widgets.thumbnails import array_to_pixmap

            self._file_thumb = array_to_pixmap(result["thumb"])
        self.query = NeighbourQuery("file", sample_id=result["sample_id"], label=result["label"],
                                    path=result["path"], vector=result["vector"],
                                    checkpoint_epoch=result["checkpoint_epoch"])
        self.requery()

    def _on_searched(self, result) -> None:
        self._job_done()
        if result is not None:
            self._show(result)

    def _on_partly_searched(self, result) -> None:
        """The neighbours, before the comparison with the previous epoch (a streamed scan at 1e6) is done."""
        if result is not None:
            self._show(result)

    # ---- showing a result ---------------------------------------------------------------------------------------
    def _show(self, r: NeighbourResult) -> None:
        for e in r.new_entries:
            self._cache[(e.epoch, e.gallery)] = e
            self._cache.move_to_end((e.epoch, e.gallery))
        while len(self._cache) > INDEX_CACHE or (
                len(self._cache) > 1 and sum(len(c.ids) for c in self._cache.values()) > INDEX_ROWS_BUDGET):
            self._cache.popitem(last=False)  # the least recently used index goes first
        r.new_entries = []
        if len(self.selected) > 1:  # the selection's gallery is on screen (a new epoch re-ran the query): it stays,
            return                   # and the query's neighbours come back when the selection is cleared
        if r.query.kind == "file" and r.prev_ids is None:
            last = self._last_file_result
            if last is not None and last.query.same_as(r.query) and last.epoch != r.epoch and \
                    last.gallery == r.gallery:
                r.prev_epoch, r.prev_ids = last.epoch, last.ids
            self._last_file_result = r
        self.result = r
        self.map_button.setEnabled(len(r.ids) > 0)
        run = self.run
        classes = run.classes
        q = r.query

        def cname(c: int) -> str:
            return classes[c] if 0 <= c < len(classes) else "?"

        if q.kind == "sample":
            what = f"sample {q.sample_id}: {run.samples.paths[q.sample_id]}"
            pm = self.thumbs.request(q.sample_id)
        else:
            what = f"image file {q.path}"
            if q.sample_id >= 0:
                what += f" (sample {q.sample_id} of the run)"
            what += f", embedded with the checkpoint of epoch {q.checkpoint_epoch}"
            pm = self._file_thumb
        self._set_query_icon(pm)
        cls = f"class <b>{cname(q.label)}</b>" if q.label >= 0 else "no class (P@k needs one)"
        pk = r.precision_at_k
        pk_text = f"P@{len(r.ids)} = <b>{pk:.3f}</b> ({int(round(pk * len(r.ids)))} of {len(r.ids)} same class)" \
            if np.isfinite(pk) else "P@k: n/a"
        self.query_label.setText(f"Query: {what}<br>{cls} — {pk_text}")
        index = "exact search" if r.is_exact else \
            f"approximate ({r.index_description}), measured recall@10 = {r.recall_at_10:.3f}"
        change = f" Comparing with epoch {r.prev_epoch}…" if r.comparing else ""
        if r.prev_ids is not None:
            overlap = int(np.isin(r.ids, r.prev_ids).sum())
            change = (f" Since epoch {r.prev_epoch}: {overlap} of {len(r.ids)} neighbours kept, "
                      f"{len(r.ids) - overlap} new.")
        self.info.setToolTip("")
        self.info.setText(f"Epoch {r.epoch}, gallery: {GALLERIES[r.gallery].lower()} ({r.n_gallery:,} samples), "
                          f"{metric_words(r.metric)}, {index}.{change}")
        self.grid.clear()
        self._items.clear()
        new = r.new_mask
        for rank, (sid, d, c, is_new) in enumerate(zip(r.ids, r.distances, r.labels, new), 1):
            sid = int(sid)
            same = q.label >= 0 and c == q.label
            mark = "✓" if same else ("✗" if q.label >= 0 else "")
            item = QListWidgetItem(f"#{rank} d={d:.4f}\n{mark} {cname(int(c))}")
            item.setData(Qt.ItemDataRole.UserRole, sid)
            item.setData(Qt.ItemDataRole.UserRole + 1, (bool(same) or q.label < 0, bool(is_new)))
            item.setToolTip(f"sample {sid}: {run.samples.paths[sid]}\nclass {cname(int(c))}, "
                            f"{SPLIT_NAMES.get(int(run.samples.split[sid]), '?')}\ndistance {d:.6f}"
                            + (f"\nnew since epoch {r.prev_epoch}" if is_new else ""))
            self._set_item_icon(item, self.thumbs.request(sid))
            self.grid.addItem(item)
            self._items.setdefault(sid, []).append(item)

    def _set_query_icon(self, pm: QPixmap | None) -> None:
        self.query_icon.setPixmap(framed_pixmap(pm, QUERY, 96))

    def _set_item_icon(self, item: QListWidgetItem, pm: QPixmap | None) -> None:
        from explorer.widgets.badges import badged, mark_words

        same, is_new = item.data(Qt.ItemDataRole.UserRole + 1)
        sid = int(item.data(Qt.ItemDataRole.UserRole))
        mark = self.state.marks.get(sid)
        item.setIcon(QIcon(framed_pixmap(badged(pm, mark), SAME if same else OTHER, 104,
                                         badge="NEW" if is_new else "")))
        tip = item.toolTip().split("\nedit: ")[0]
        item.setToolTip(tip + (f"\nedit: {mark_words(mark)}" if mark else ""))

    @Slot(object)
    def _on_marks(self, _marks) -> None:
        """Edits changed: redraw the badges of the images in the grid."""
        for sid, items in self._items.items():
            pm = self.thumbs.get(sid)
            for item in items:
                self._set_item_icon(item, pm)

    @Slot(int, QPixmap)
    def _on_thumb(self, sid: int, pm: QPixmap) -> None:
        for item in self._items.get(int(sid), []):
            self._set_item_icon(item, pm)
        if self.result is not None and self.result.query.kind == "sample" and self.result.query.sample_id == sid:
            self._set_query_icon(pm)

    def _ids_at(self, pos) -> list[int]:
        item = self.grid.itemAt(pos)
        return [] if item is None else [int(item.data(Qt.ItemDataRole.UserRole))]

    def _query_sample(self) -> int | None:
        """The query's sample id when the query is one of the run's images (a neighbour may duplicate it)."""
        r = self.result
        return int(r.query.sample_id) if r is not None and r.query.kind == "sample" and r.query.sample_id >= 0 else None

    # ---- accessors for tests and the status bar -------------------------------------------------------------------
    def shown_ids(self) -> np.ndarray:
        """Sample ids in the neighbour grid, nearest first."""
        return np.array([int(self.grid.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.grid.count())],
                        np.int64)
