"""Neighbour query panel (issue #5): the k nearest samples of a query in the embedding of the epoch shown.

A query is the point selected in the map, a row of the searchable sample list, or an image file (chosen or
dropped on the panel) embedded with the run's checkpoint. The faiss index (trainer.analysis.index.NeighborIndex: exact up
below 1M rows, IVF with measured recall from there) is built per (epoch, gallery) in a background job and cached; the
search, the image embedding and the sample-list filter run in background jobs too. Switching epochs re-queries and
marks the neighbours that are new since the previous epoch.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPoint, QSize, Qt, QTimer, Slot
from PySide6.QtGui import QColor, QIcon, QKeySequence, QPainter, QPen, QPixmap, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QListView, QListWidget, QListWidgetItem, QProgressBar, QPushButton,
                               QSpinBox, QSplitter, QTableView, QVBoxLayout, QWidget)

from explorer.jobs import JobRunner
from explorer.state import AppState

__all__ = ["NeighborsView", "NeighbourQuery", "NeighbourResult", "IndexEntry", "neighbour_job", "build_index_entry",
           "embed_file_job", "filter_samples_job", "framed_pixmap", "GALLERIES"]

SPLIT_TRAIN, SPLIT_HELDOUT = 0, 1  # trainer.store constants (kept here so the view imports no torch)
GALLERIES = {"all": "All samples", "heldout": "Held-out only", "train": "Train only"}
SPLIT_NAMES = {SPLIT_TRAIN: "train", SPLIT_HELDOUT: "held-out"}
SAME = QColor(44, 160, 44)
OTHER = QColor(214, 39, 40)
QUERY = QColor(31, 119, 180)
NEW = QColor(255, 140, 0)
INDEX_CACHE = 4  # (epoch, gallery) indexes kept


# ---------------------------------------------------------------------------------------------------------------
# run facts
# ---------------------------------------------------------------------------------------------------------------


def metric_words(metric: str) -> str:
    """How a distance of this metric is computed, for labels."""
    return "cosine distance 1 − cos(a, b)" if metric == "cosine" else "Euclidean distance ‖a − b‖"


def gallery_ids(split: np.ndarray, gallery: str) -> np.ndarray:
    """Sample ids of a gallery option ("all", "heldout", "train"), ascending."""
    split = np.asarray(split)
    if gallery == "all":
        return np.arange(len(split), dtype=np.int64)
    if gallery not in GALLERIES:
        raise ValueError(f"unknown gallery {gallery!r}; expected one of {list(GALLERIES)}")
    want = SPLIT_HELDOUT if gallery == "heldout" else SPLIT_TRAIN
    return np.flatnonzero(split == want).astype(np.int64)


def checkpoint_for(run, epoch: int) -> Path | None:
    """The checkpoint of ``epoch``, else the newest one before it, else the run's newest."""
    try:
        ckpts = list(run.checkpoints)
    except AttributeError:
        ckpts = []
    before = [c for c in ckpts if c <= epoch]
    if before:
        return run.checkpoint_path(max(before))
    return run.checkpoint_path(None)


# ---------------------------------------------------------------------------------------------------------------
# background work (plain functions, no widgets)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class IndexEntry:
    """A neighbour index over one gallery of one epoch; ``ids[j]`` is the sample id of index row j."""

    epoch: int
    gallery: str
    ids: np.ndarray
    index: Any  # trainer.analysis.index.NeighborIndex
    seconds: float = 0.0


@dataclass
class NeighbourQuery:
    """What to search for: a sample of the run (``sample_id``) or an embedded image file (``vector``)."""

    kind: str  # "sample" | "file"
    sample_id: int = -1  # the run's sample (for a file: the sample with the same file, or -1)
    label: int = -1  # class of the query, -1 when unknown
    path: str = ""  # the image file (file queries)
    vector: np.ndarray | None = None  # embedding of the file with the checkpoint below
    checkpoint_epoch: int = -1

    def same_as(self, other: "NeighbourQuery | None") -> bool:
        return other is not None and self.kind == other.kind and self.sample_id == other.sample_id and \
            self.path == other.path


@dataclass
class NeighbourResult:
    """The answer of one search: neighbours nearest first, and what changed since the previous epoch."""

    query: NeighbourQuery
    epoch: int
    gallery: str
    k: int
    metric: str
    ids: np.ndarray
    distances: np.ndarray
    labels: np.ndarray
    n_gallery: int
    is_exact: bool
    recall_at_10: float
    index_description: str = "exact"
    prev_epoch: int | None = None
    prev_ids: np.ndarray | None = None
    new_entries: list[IndexEntry] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def precision_at_k(self) -> float:
        """Share of the neighbours that have the query's class (NaN when the query has no class)."""
        if self.query.label < 0 or len(self.ids) == 0:
            return float("nan")
        return float(np.mean(self.labels == self.query.label))

    @property
    def new_mask(self) -> np.ndarray:
        """True for neighbours that were not among the previous epoch's k nearest."""
        if self.prev_ids is None:
            return np.zeros(len(self.ids), bool)
        return ~np.isin(self.ids, self.prev_ids)


def build_index_entry(run, epoch: int, gallery: str, metric: str, progress=None) -> IndexEntry:
    """Read the gallery rows of ``epoch`` and index them (exact below 1M rows, IVF with measured recall from 1M)."""
    from trainer.analysis.index import NeighborIndex

    t0 = time.perf_counter()
    ids = gallery_ids(run.samples.split, gallery)
    if progress is not None:
        progress(0.1, f"reading {len(ids):,} embeddings of epoch {epoch}")
    if gallery == "all":  # the loaded epoch as it is: no second copy (the index makes its own)
        x = run.load_epoch(epoch).embeddings
    elif len(ids) > len(run.samples.split) // 2:
        x = run.load_epoch(epoch).embeddings[ids]
    else:
        x = run.rows(epoch, ids)
    if progress is not None:
        progress(0.4, f"indexing {len(ids):,} embeddings"
                      + (" (approximate: k-means cells, then measuring recall)" if len(ids) >= 1_000_000 else ""))
    index = NeighborIndex(x, metric=metric)
    return IndexEntry(int(epoch), gallery, ids, index, time.perf_counter() - t0)


def _search(entry: IndexEntry, q: np.ndarray, k: int, exclude: int) -> tuple[np.ndarray, np.ndarray]:
    pos = int(np.searchsorted(entry.ids, exclude)) if exclude >= 0 else -1
    excl = None
    if 0 <= pos < len(entry.ids) and entry.ids[pos] == exclude:
        excl = np.array([pos])
    d, local = entry.index.search(q.reshape(1, -1), k, exclude_self_ids=excl)
    d, local = d[0], local[0]
    ok = local >= 0
    return d[ok], entry.ids[local[ok]]


def neighbour_job(run, epoch: int, prev_epoch: int | None, gallery: str, metric: str, query: NeighbourQuery, k: int,
                  cache: dict, *, progress, partial, is_cancelled) -> NeighbourResult:
    """k nearest neighbours of ``query`` in the gallery of ``epoch`` (and, for a sample, of ``prev_epoch``)."""
    t0 = time.perf_counter()
    new: list[IndexEntry] = []

    def entry_for(e: int) -> IndexEntry:
        hit = cache.get((e, gallery))
        if hit is None:
            hit = build_index_entry(run, e, gallery, metric, progress)
            new.append(hit)
        return hit

    entry = entry_for(epoch)
    if is_cancelled():
        return None  # type: ignore[return-value]
    progress(0.8, "searching")
    if query.kind == "sample":
        q = run.rows(epoch, np.array([query.sample_id]))[0]
        exclude = query.sample_id
    else:
        q = np.asarray(query.vector, np.float32)
        exclude = -1
    dist, ids = _search(entry, q, k, exclude)
    out = NeighbourResult(query=query, epoch=int(epoch), gallery=gallery, k=int(k), metric=metric, ids=ids,
                          distances=dist, labels=np.asarray(run.samples.labels)[ids].astype(np.int64),
                          n_gallery=len(entry.ids), is_exact=bool(entry.index.is_exact),
                          recall_at_10=float(entry.index.recall_at_10),
                          index_description=entry.index.description)
    if prev_epoch is not None and query.kind == "sample" and not is_cancelled():
        progress(0.9, f"neighbours in epoch {prev_epoch}")
        pe = entry_for(prev_epoch)
        qp = run.rows(prev_epoch, np.array([query.sample_id]))[0]
        out.prev_epoch = int(prev_epoch)
        out.prev_ids = _search(pe, qp, k, exclude)[1]
    out.new_entries = new
    out.seconds = time.perf_counter() - t0
    return out


def embed_file_job(run, epoch: int, path: str, model_cache: dict, *, progress, partial, is_cancelled) -> dict:
    """Embed one image file with the run's checkpoint for ``epoch``; find the run's sample with that file, if any."""
    from explorer.thumbnails import load_thumbnail_array, sample_path

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such image file")
    ckpt = checkpoint_for(run, epoch)
    if ckpt is None:
        raise RuntimeError(f"{run.run_dir}: the run has no checkpoint yet, so an image cannot be embedded")
    model = model_cache.get(str(ckpt))
    if model is None:
        progress(0.1, f"loading the network of {ckpt.name}")
        from trainer.model.inference import RunModel

        model = RunModel(run.run_dir, ckpt, device="cpu")
    progress(0.5, f"embedding {p.name}")
    try:
        vec = model.embed_files([p])[0]
    except Exception as exc:  # a bad image: name the file and the reason
        raise ValueError(f"{p}: cannot embed this image ({exc})") from exc
    thumb = None
    try:
        thumb = load_thumbnail_array(p, 128)
    except Exception:  # the thumbnail is cosmetic; the embedding worked
        thumb = None
    resolved = p.resolve()
    sid, label = -1, -1
    s = run.samples
    name = p.name
    for i, rel in enumerate(s.paths):  # cheap name test first, full path only for candidates
        if rel.endswith(name) and sample_path(s, i).resolve() == resolved:
            sid, label = i, int(s.labels[i])
            break
    return {"path": str(p), "vector": vec, "thumb": thumb, "model": model, "checkpoint": str(ckpt),
            "checkpoint_epoch": int(model.epoch), "sample_id": sid, "label": label, "epoch": int(epoch)}


def sample_haystack(samples, classes: list[str]) -> np.ndarray:
    """Lower-case "path class split" of every sample, the text the sample list's search matches."""
    split = np.asarray(samples.split)
    labels = np.asarray(samples.labels)
    return np.array([f"{p} {classes[int(c)] if 0 <= int(c) < len(classes) else c} {SPLIT_NAMES.get(int(s), s)}".lower()
                     for p, c, s in zip(samples.paths, labels, split)], dtype=object)


def filter_samples_job(haystack: np.ndarray | None, samples, classes: list[str], text: str, *, progress, partial,
                       is_cancelled) -> tuple[np.ndarray, np.ndarray]:
    """(haystack, ids of samples whose text contains every word of ``text``), case-insensitive."""
    if haystack is None:
        progress(0.1, "indexing sample names")
        haystack = sample_haystack(samples, classes)
    words = text.lower().split()
    keep = np.ones(len(haystack), bool)
    for w in words:
        if is_cancelled():
            break
        keep &= np.fromiter((w in h for h in haystack), bool, count=len(haystack))
    return haystack, np.flatnonzero(keep).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# widgets
# ---------------------------------------------------------------------------------------------------------------


def framed_pixmap(pm: QPixmap | None, colour: QColor, size: int, *, width: int = 4, badge: str = "") -> QPixmap:
    """``pm`` scaled into a size x size square with a coloured frame (grey placeholder while loading)."""
    out = QPixmap(size, size)
    out.fill(QColor(245, 245, 245))
    p = QPainter(out)
    if pm is not None and not pm.isNull():
        inner = size - 2 * width
        scaled = pm.scaled(inner, inner, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        p.drawPixmap((size - scaled.width()) // 2, (size - scaled.height()) // 2, scaled)
    else:
        p.setPen(QColor(150, 150, 150))
        p.drawText(out.rect(), Qt.AlignmentFlag.AlignCenter, "…")
    pen = QPen(colour)
    pen.setWidth(width)
    p.setPen(pen)
    p.drawRect(width // 2, width // 2, size - width, size - width)
    if badge:
        f = p.font()
        f.setBold(True)
        p.setFont(f)
        rect = p.fontMetrics().boundingRect(badge).adjusted(-3, -1, 3, 1)
        rect.moveTopLeft(QPoint(width, width))
        p.fillRect(rect, NEW)
        p.setPen(QColor("white"))
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, badge)
    p.end()
    return out


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
            if col == 0:
                return self.samples.paths[sid]
            if col == 1:
                c = int(self.samples.labels[sid])
                return self.classes[c] if 0 <= c < len(self.classes) else str(c)
            return SPLIT_NAMES.get(int(self.samples.split[sid]), "?")
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"sample {sid}: {self.samples.paths[sid]} — click to query with it"
        return None


class NeighborsView(QWidget):
    """Top-k neighbours of a query (map selection, sample list row or image file) with class marks and P@k."""

    def __init__(self, state: AppState, jobs: JobRunner | None = None, thumbnails=None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.jobs = jobs if jobs is not None else JobRunner(self)
        if thumbnails is None:
            from explorer.thumbnails import ThumbnailCache

            thumbnails = ThumbnailCache(self, size_px=128)
        self.thumbs = thumbnails
        self._key = f"neighbours-{id(self)}"
        self.run = None
        self.distance_metric = "cosine"
        self.query: NeighbourQuery | None = None
        self.result: NeighbourResult | None = None
        self._last_file_result: NeighbourResult | None = None  # for "new since" of file queries
        self._file_thumb: QPixmap | None = None
        self._cache: OrderedDict[tuple[int, str], IndexEntry] = OrderedDict()
        self._models: dict[str, Any] = {}
        self._haystack: np.ndarray | None = None
        self._items: dict[int, list[QListWidgetItem]] = {}
        self._build()
        self.setAcceptDrops(True)
        self._filter_timer = QTimer(self, singleShot=True, interval=200)
        self._filter_timer.timeout.connect(self._start_filter)

        state.run_changed.connect(self._on_run)
        state.epoch_changed.connect(self._on_epoch)
        state.selection_changed.connect(self._on_selection)
        self.jobs.finished.connect(self._on_job_finished)
        self.jobs.progress.connect(self._on_job_progress)
        self.jobs.failed.connect(self._on_job_failed)
        self.thumbs.ready.connect(self._on_thumb)
        if state.run is not None:
            self._on_run(state.run)

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
        bar.addWidget(QLabel("Gallery:"))
        self.gallery_combo = QComboBox()
        for key, text in GALLERIES.items():
            self.gallery_combo.addItem(text, key)
        self.gallery_combo.setToolTip("Which samples of the epoch the neighbours are drawn from")
        self.gallery_combo.currentIndexChanged.connect(lambda _i: self.requery())
        bar.addWidget(self.gallery_combo)
        self.map_button = QPushButton("Show in map")
        self.map_button.setToolTip("Highlight the query and its neighbours in the map (Ctrl+M)")
        self.map_button.setEnabled(False)
        self.map_button.clicked.connect(self.show_in_map)
        bar.addWidget(self.map_button)
        bar.addStretch(1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        bar.addWidget(self.progress)
        lay.addLayout(bar)

        self.info = QLabel("Open a run, then select a point in the map, a sample in the list, or drop an image here.")
        self.info.setWordWrap(True)
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
        self.table.selectionModel().currentRowChanged.connect(self._on_table_row)
        ll.addWidget(self.table)
        self.count_label = QLabel("")
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
        self.query_label = QLabel("No query yet")
        self.query_label.setWordWrap(True)
        qrow.addWidget(self.query_label, 1)
        rl.addLayout(qrow)
        self.grid = QListWidget()
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        self.grid.setIconSize(QSize(104, 104))
        self.grid.setGridSize(QSize(132, 160))
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.setWordWrap(True)
        self.grid.setUniformItemSizes(True)
        self.grid.itemDoubleClicked.connect(self._on_grid_double_click)
        self.grid.itemClicked.connect(self._on_grid_click)
        rl.addWidget(self.grid, 1)
        legend = QLabel("<span style='color:#2ca02c'>■</span> same class &nbsp; "
                        "<span style='color:#d62728'>■</span> other class &nbsp; "
                        "<span style='background:#ff8c00;color:white'>&nbsp;NEW&nbsp;</span> not a neighbour in "
                        "the previous epoch &nbsp; — click: highlight in map, double-click: query with it")
        legend.setWordWrap(True)
        rl.addWidget(legend)
        split.addWidget(right)
        split.setSizes([330, 900])
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
        self.jobs.submit((self._key, "embed"), embed_file_job, self.run, self.state.epoch, str(p), dict(self._models))

    def choose_file(self) -> None:
        """Ask for an image file and query with it."""
        path, _ = QFileDialog.getOpenFileName(self, "Query with an image file", "",
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
                         self.distance_metric, q, self.k, dict(self._cache))

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
        names = [str(c) for c in classes[:5000]] + [self.model.HEAD[1]]
        self.table.setColumnWidth(1, min(240, max(fm.horizontalAdvance(n) for n in names) + pad))
        self.table.setColumnWidth(2, max(fm.horizontalAdvance(t) for t in (*SPLIT_NAMES.values(), "split")) + pad)

    @Slot(int)
    def _on_epoch(self, epoch: int) -> None:
        self.requery()

    @Slot(object)
    def _on_selection(self, ids) -> None:
        ids = np.asarray(ids)
        if len(ids):
            self.query_sample(int(ids[0]))

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
                         self.run.classes, self.search.text())

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
    def _mine(self, key) -> str | None:
        return key[1] if isinstance(key, tuple) and len(key) == 2 and key[0] == self._key else None

    @Slot(object, object)
    def _on_job_finished(self, key, result) -> None:
        part = self._mine(key)
        if part is None:
            return
        if not self.is_busy():
            self.progress.hide()
        if result is None:
            return
        if part == "filter":
            self._haystack, rows = result
            self.model.set_rows(rows)
            self.count_label.setText(f"{len(rows):,} of {len(self.run.samples.paths):,} samples")
        elif part == "embed":
            self._models[result["checkpoint"]] = result["model"]
            if result["thumb"] is not None:
                from explorer.thumbnails import array_to_pixmap

                self._file_thumb = array_to_pixmap(result["thumb"])
            self.query = NeighbourQuery("file", sample_id=result["sample_id"], label=result["label"],
                                        path=result["path"], vector=result["vector"],
                                        checkpoint_epoch=result["checkpoint_epoch"])
            self.requery()
        elif part == "search":
            self._show(result)

    @Slot(object, float, str)
    def _on_job_progress(self, key, fraction: float, text: str) -> None:
        if self._mine(key) is None:
            return
        self.progress.show()
        self.progress.setValue(int(100 * fraction))
        self.progress.setFormat(text or "%p%")

    @Slot(object, str)
    def _on_job_failed(self, key, message: str) -> None:
        if self._mine(key) is None:
            return
        self.progress.hide()
        self.info.setText("Could not answer: " + message.splitlines()[0])
        self.info.setToolTip(message)

    # ---- showing a result ---------------------------------------------------------------------------------------
    def _show(self, r: NeighbourResult) -> None:
        for e in r.new_entries:
            self._cache[(e.epoch, e.gallery)] = e
            self._cache.move_to_end((e.epoch, e.gallery))
        while len(self._cache) > INDEX_CACHE:
            self._cache.popitem(last=False)
        r.new_entries = []
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
        change = ""
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
        same, is_new = item.data(Qt.ItemDataRole.UserRole + 1)
        item.setIcon(QIcon(framed_pixmap(pm, SAME if same else OTHER, 104, badge="NEW" if is_new else "")))

    @Slot(int, QPixmap)
    def _on_thumb(self, sid: int, pm: QPixmap) -> None:
        for item in self._items.get(int(sid), []):
            self._set_item_icon(item, pm)
        if self.result is not None and self.result.query.kind == "sample" and self.result.query.sample_id == sid:
            self._set_query_icon(pm)

    # ---- accessors for tests and the status bar -------------------------------------------------------------------
    def shown_ids(self) -> np.ndarray:
        """Sample ids in the neighbour grid, nearest first."""
        return np.array([int(self.grid.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.grid.count())],
                        np.int64)
