"""Compare runs, image by image: two maps side by side with one selection, and per held-out image what changed.

For two runs on the same samples (the reference and one other), at their best epochs: a map of each run's held-out
embeddings (UMAP; the second aligned to the first so the same region sits in the same place), coloured by class.
Clicking a point in either map, or a row of the table, selects that image in both maps and rings its neighbours of
each run; the table lists every held-out image with the rank of its first neighbour of its own class in each run
and how many of its neighbours changed, the images that got most worse first; below it, the selected image's
neighbours that are new in the second run and those it lost. The numbers come from
:func:`trainer.comparison.image_changes` in the window's job runner.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidgetItem,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from explorer.widgets.image_menu import icon_grid
from explorer.widgets.labels import shrinkable
from explorer.widgets.palette import class_colour

JOB = "compare-images"
K = 10
TABLE_THUMBS = 300  # rows whose thumbnails are asked for at once (the rest when scrolled to: not needed for 1e4)


def _images_job(path_a: str, path_b: str, method: str, worker, *, progress, partial, is_cancelled) -> dict:
    """``worker``: the map's projection process when the window has one (UMAP holds the GIL for the whole fit when
    it runs in one of this process's threads), else None (projected here)."""
    from trainer.analysis.projection import project as project_here
    from trainer.comparison import image_changes, load_entries

    def project(x, method, **kw):
        if worker is not None and method != "pca":
            return worker.project(x, method, is_cancelled=is_cancelled, **kw)
        return project_here(x, method, **kw)

    progress(0.05, "reading the two runs")
    a, b = load_entries([path_a, path_b])
    progress(0.15, "neighbours of every held-out image in both runs")
    ch = image_changes(a, b, k=K)
    progress(0.3, f"the map of {a.name}")
    la = project(ch["xa"], method, labels=ch["labels"], metric=ch["metric"], ids=ch["ids"])
    if is_cancelled():
        return ch
    progress(0.65, f"the map of {b.name}, aligned to the first")
    lb = project(ch["xb"], method, labels=ch["labels"], metric=ch["metric"], ids=ch["ids"],
                 previous=la.xy, previous_ids=la.ids if la.ids is not None else ch["ids"])
    ch["xy_a"], ch["xy_b"] = np.asarray(la.xy, np.float32), np.asarray(lb.xy, np.float32)
    ch["classes"] = list(a.run.classes)
    ch["run_a"], ch["run_b"] = str(a.run.run_dir), str(b.run.run_dir)
    ch["reader"] = a.run  # read in this thread: its sample table (1.3 s at 1e6) is not read again on the GUI's
    return ch


class ImageByImage(QWidget):
    """The "Image by image" tab of the compare dialog."""

    def __init__(self, jobs, parent=None, worker=None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.worker = worker  # the map's projection process (explorer/views/map), when there is one
        self.method = "umap"
        self.result: dict | None = None
        self.selected: int | None = None  # row into result["ids"]
        self._paths: list[str] = []
        self._thumbs = None
        self._thumb_items: dict[int, list] = {}
        self.other = QComboBox()
        self.other.setToolTip("The run compared with the first (reference) run; only runs on the same samples")
        self.other.activated.connect(lambda _i: self.compute())
        self.status = shrinkable(QLabel("Add two runs on the same samples (a sweep's runs, or Train again)."))
        top = QHBoxLayout()
        top.addWidget(QLabel("Compare the first run with"))
        top.addWidget(self.other, 1)
        self.plots, self.scatters, self.rings = [], [], []
        maps = QHBoxLayout()
        for side in range(2):
            plot = pg.PlotWidget(background="w")
            plot.setAspectLocked(True)
            plot.hideAxis("left")
            plot.hideAxis("bottom")
            plot.setMenuEnabled(False)
            scatter = pg.ScatterPlotItem(size=6, pen=None, hoverable=True)
            scatter.sigClicked.connect(lambda _item, points, _ev, side=side: self._clicked(points))
            ring = pg.ScatterPlotItem(size=14, brush=None, pen=pg.mkPen("#111", width=2))
            nbrs = pg.ScatterPlotItem(size=11, brush=None, pen=pg.mkPen("#ff7f0e", width=1.5))
            plot.addItem(scatter)
            plot.addItem(nbrs)
            plot.addItem(ring)
            self.plots.append(plot)
            self.scatters.append(scatter)
            self.rings.append((ring, nbrs))
            maps.addWidget(plot, 1)
        self.titles = [QLabel(""), QLabel("")]
        heads = QHBoxLayout()
        for t in self.titles:
            t.setAlignment(Qt.AlignmentFlag.AlignCenter)
            heads.addWidget(t, 1)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["image", "class", "1st of its class", f"new of {K}", "file"])
        self.table.horizontalHeaderItem(2).setToolTip("Rank of the image's first neighbour of its own class: in the "
                                                      "first run → in the second (red: worse, green: better)")
        self.table.horizontalHeaderItem(3).setToolTip(f"How many of its {K} nearest neighbours are new in the second "
                                                      "run")
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setIconSize(QSize(40, 40))
        self.table.verticalHeader().setDefaultSectionSize(44)
        self.table.horizontalHeader().setStretchLastSection(True)
        for col, width in ((0, 96), (1, 90), (2, 110), (3, 70)):
            self.table.setColumnWidth(col, width)
        self.table.itemSelectionChanged.connect(self._on_table)
        self.detail_label = shrinkable(QLabel("Click an image in either map or in the table."))
        self.detail = icon_grid(64, (92, 100))
        self.detail.setMinimumWidth(200)
        maps_w = QWidget()
        mw = QVBoxLayout(maps_w)
        mw.setContentsMargins(0, 0, 0, 0)
        mw.addLayout(heads)
        mw.addLayout(maps, 1)
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(self.detail_label)
        sl.addWidget(self.detail, 1)
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.table)
        lower.addWidget(side)
        lower.setSizes([560, 300])
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(maps_w)
        split.addWidget(lower)
        split.setSizes([360, 280])
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        lay.addWidget(self.status)

    # ---- which runs -------------------------------------------------------------------------------------------
    def set_runs(self, rows: list[dict]) -> None:
        """The compare result's rows: the first is the reference; those paired with it can be compared."""
        self._paths = [r["run"] for r in rows]
        self.other.clear()
        for i, r in enumerate(rows[1:], start=1):
            if r.get("vs_first") is not None:
                self.other.addItem(r["name"], i)
        if self.other.count() == 0:
            self.status.setText("No run here holds the same samples as the first: an image-by-image comparison "
                                "needs the same images, labels and split.")
            return
        self.compute()

    def compute(self) -> None:
        if self.other.currentIndex() < 0 or not self._paths:
            return
        b = self._paths[int(self.other.currentData())]
        self.status.setText(f"Finding every held-out image's neighbours in both runs and drawing the two maps "
                            f"({self.method.upper()}) …")
        self.jobs.submit(JOB, _images_job, self._paths[0], b, self.method, self.worker, on_result=self._show,
                         on_progress=lambda f, text: self.status.setText(f"{text} ({100 * f:.0f} %)"),
                         on_failed=lambda m: self.status.setText(f"Could not compare image by image: "
                                                                 f"{m.splitlines()[0]}"))

    # ---- showing ------------------------------------------------------------------------------------------------
    def _show(self, r: dict) -> None:
        if "xy_a" not in r:
            return
        from trainer.comparison import rank_change_order

        self.result, self.selected = r, None
        run = r["reader"]
        if self._thumbs is None:
            from explorer.widgets.thumbnails import ThumbnailCache

            self._thumbs = ThumbnailCache(self, size_px=64)
            self._thumbs.ready.connect(self._on_thumb)
        self._thumbs.set_samples(run.samples)
        self._thumb_items.clear()
        brushes = [pg.mkBrush(class_colour(int(c))) for c in r["labels"]]
        for side, xy in enumerate((r["xy_a"], r["xy_b"])):
            self.scatters[side].setData(x=xy[:, 0], y=xy[:, 1], brush=brushes, data=np.arange(len(xy)))
            for item in self.rings[side]:
                item.setData([], [])
            self.plots[side].autoRange()
        a, b = r["names"]
        self.titles[0].setText(f"<b>{a}</b> (epoch {r['epochs'][0]})")
        self.titles[1].setText(f"<b>{b}</b> (epoch {r['epochs'][1]}), aligned to the first")
        self.order = rank_change_order(r)
        k1 = r["k"] + 1
        self.table.setRowCount(len(self.order))
        paths = run.samples.paths
        for row, i in enumerate(self.order):
            sid = int(r["ids"][i])
            img = QTableWidgetItem(str(sid))
            img.setData(Qt.ItemDataRole.UserRole, int(i))
            if row < TABLE_THUMBS:
                self._ask_thumb(sid, img)
            ra, rb = int(r["rank_a"][i]) or k1, int(r["rank_b"][i]) or k1
            moved = QTableWidgetItem(f"{self._rank(ra, k1)} → {self._rank(rb, k1)}")
            moved.setForeground(pg.mkColor("#d62728" if rb > ra else "#2ca02c" if rb < ra else "#555"))
            for c, item in enumerate((img, QTableWidgetItem(r["classes"][int(r["labels"][i])]), moved,
                                      QTableWidgetItem(str(int(r["gained"][i]))), QTableWidgetItem(paths[sid]))):
                self.table.setItem(row, c, item)
        ra = np.where(r["rank_a"] > 0, r["rank_a"], k1)
        rb = np.where(r["rank_b"] > 0, r["rank_b"], k1)
        self.status.setText(f"{len(ra):,} held-out images: {int((rb < ra).sum()):,} better in {b}, "
                            f"{int((rb > ra).sum()):,} worse, {int((rb == ra).sum()):,} the same (first neighbour "
                            f"of its own class among {r['k']}); worst first")

    @staticmethod
    def _rank(v: int, k1: int) -> str:
        return f">{k1 - 1}" if v == k1 else str(v)

    def _ask_thumb(self, sid: int, item) -> None:
        self._thumb_items.setdefault(sid, []).append(item)
        pm = self._thumbs.request(sid)
        if pm is not None:
            item.setIcon(QIcon(pm))

    def _on_thumb(self, sid: int, pm) -> None:
        for item in self._thumb_items.get(int(sid), []):
            try:
                item.setIcon(QIcon(pm))
            except RuntimeError:  # the item went with a new table
                pass

    def _clicked(self, points) -> None:
        if len(points):
            self.select(int(points[0].data()))

    def _on_table(self) -> None:
        items = self.table.selectedItems()
        if items:
            row = self.table.row(items[0])
            self.select(int(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)), from_table=True)

    def select(self, i: int, *, from_table: bool = False) -> None:
        """Select held-out row ``i`` in both maps (linked by sample id), ring its neighbours, list what changed."""
        r = self.result
        if r is None or not 0 <= i < len(r["ids"]):
            return
        self.selected = i
        pos = {int(s): j for j, s in enumerate(r["ids"])}
        for side, (xy, nbr) in enumerate(((r["xy_a"], r["nbr_a"]), (r["xy_b"], r["nbr_b"]))):
            ring, nbrs = self.rings[side]
            ring.setData([xy[i, 0]], [xy[i, 1]])
            rows = [pos[int(s)] for s in nbr[i] if int(s) in pos]
            nbrs.setData(xy[rows, 0], xy[rows, 1])
        if not from_table:
            row = int(np.flatnonzero(self.order == i)[0])
            self.table.blockSignals(True)
            self.table.selectRow(row)
            self.table.blockSignals(False)
            self.table.scrollToItem(self.table.item(row, 0))
        new = [int(s) for s in r["nbr_b"][i] if int(s) not in set(r["nbr_a"][i].tolist())]
        gone = [int(s) for s in r["nbr_a"][i] if int(s) not in set(r["nbr_b"][i].tolist())]
        y = {int(s): int(c) for s, c in zip(r["ids"], r["labels"])}
        own = int(r["labels"][i])
        self.detail.clear()
        for sid, tag in [(s, "new") for s in new] + [(s, "gone") for s in gone]:
            same = y.get(sid) == own
            item = QListWidgetItem(f"{tag}: {r['classes'][y[sid]]}")
            item.setToolTip(f"sample {sid}, class {r['classes'][y[sid]]} ({'same' if same else 'other'} class); "
                            f"{'a neighbour in the second run only' if tag == 'new' else 'a neighbour in the first run only'}")
            item.setForeground(pg.mkColor("#2ca02c" if same else "#d62728"))
            item.setData(Qt.ItemDataRole.UserRole, sid)
            self.detail.addItem(item)
            self._ask_thumb(sid, item)
        a, b = r["names"]
        sid = int(r["ids"][i])
        self.detail_label.setText(f"Image {sid} ({r['classes'][own]}): {len(new)} neighbour(s) new in {b}, "
                                  f"{len(gone)} gone from {a} (green: same class, red: another); ringed in the maps")

    def new_ids(self) -> list[int]:
        """The sample ids listed as new neighbours of the selected image (tests)."""
        return [int(self.detail.item(j).data(Qt.ItemDataRole.UserRole)) for j in range(self.detail.count())
                if self.detail.item(j).text().startswith("new")]

    def shutdown(self) -> None:
        if self._thumbs is not None:
            self._thumbs.shutdown()
