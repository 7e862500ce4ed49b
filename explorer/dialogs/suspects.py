"""Edit > Review suspected mislabels and near-duplicates: ranked galleries with the evidence, and the actions.

Suspected mislabels (the training images whose neighbours mostly carry another label, ranked by cleanlab on
out-of-sample neighbour votes, trainer/analysis/label_issues.py): a row per image with its label, the class its
neighbours vote for and their share; the selected image's 10 nearest neighbours below it, with their classes and
distances (red: another class). Near-duplicates: the closest pairs of the epoch, with both images, their classes and
how far apart they are against the usual nearest-neighbour distance. The buttons mark images through the window's
Edit actions (the edits file beside the run), and the rows show the marks as they are made.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QIcon
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QHBoxLayout, QLabel, QListWidgetItem, QPushButton, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout,
                               QWidget)

from explorer.widgets.badges import badged, mark_words
from explorer.widgets.image_menu import icon_grid
from explorer.widgets.labels import shrinkable

JOB = "review-suspects"
K = 10
SUSPECTS = 200  # rows of the mislabel ranking shown
PAIRS = 100  # closest pairs shown
THUMB = 56


def _review_job(run, epoch: int, *, progress, partial, is_cancelled) -> dict:
    from trainer.analysis.index import NeighbourIndex
    from trainer.analysis.label_issues import closest_pairs, rank_label_issues
    from trainer.store import SPLIT_TRAIN

    progress(0.05, f"reading the training images of epoch {epoch}")
    ids = np.flatnonzero(np.asarray(run.samples.split) == SPLIT_TRAIN).astype(np.int64)
    x = run.rows(epoch, ids)
    y = np.asarray(run.samples.labels, np.int64)[ids]
    progress(0.2, "ranking by out-of-sample neighbour votes")
    r = rank_label_issues(x, y, run.metric, k=K)
    rows = [int(i) for i in r["order"] if r["suggested"][int(i)] != y[int(i)]][:SUSPECTS]
    progress(0.5, "every image's nearest neighbours: the evidence and the closest pairs")
    k = max(1, min(K, len(x) - 1))
    # one search serves the suspects' evidence (their K nearest), the closest pairs and the usual nearest distance
    knn = NeighbourIndex(x, metric=run.metric).exact_search(x, max(k, min(PAIRS, len(x) - 1)),
                                                            exclude_self_ids=np.arange(len(x)))
    d, nb = knn[0][rows, :k], knn[1][rows, :k]
    if is_cancelled():
        return {}
    progress(0.7, "the closest pairs")
    pi, pj, pd = closest_pairs(x, run.metric, n=PAIRS, knn=knn)
    d1 = knn[0][:, :1]
    share = r["pred_probs"][rows, :] if rows else np.zeros((0, 1))
    classes_dense = np.unique(y)
    suggested = r["suggested"][rows] if rows else np.zeros(0, np.int64)
    vote = [float(share[t, int(np.searchsorted(classes_dense, suggested[t]))]) for t in range(len(rows))]
    return {"epoch": int(epoch), "method": r["method"], "n_train": len(ids),
            "ids": ids[rows], "labels": y[rows], "suggested": np.asarray(suggested, np.int64),
            "vote": np.asarray(vote), "score": r["scores"][rows],
            "nbr_ids": np.where(nb >= 0, ids[np.clip(nb, 0, None)], -1), "nbr_dist": d,
            "pair_a": ids[pi], "pair_b": ids[pj], "pair_dist": pd,
            "median_nn": float(np.median(d1[:, 0])) if d1.size else float("nan")}


class SuspectsDialog(QDialog):
    def __init__(self, window, parent=None) -> None:
        super().__init__(parent or window)
        self.window = window
        self.state, self.curate = window.state, window.curate
        self.thumbs = window.thumbnails
        self.setWindowTitle("Review suspected mislabels and near-duplicates")
        self.resize(1100, 720)
        self.result: dict | None = None
        self._cells: dict[int, list] = {}
        self.status = shrinkable(QLabel("Ranking the training images …"))
        # suspected mislabels
        self.table = self._table(["image", "label", "neighbours say", "their share", "edit"])
        self.table.itemSelectionChanged.connect(self._show_evidence)
        self.evidence_label = shrinkable(QLabel(""))
        self.evidence = icon_grid(72, (100, 112), max_height=240)
        self.relabel_btn = QPushButton("Relabel as the neighbours say")
        self.relabel_btn.setShortcut("Ctrl+R")
        self.relabel_btn.clicked.connect(self.relabel_current)
        self.exclude_btn = QPushButton("Exclude from training")
        self.exclude_btn.setShortcut("Ctrl+X")
        self.exclude_btn.clicked.connect(self.exclude_current)
        self.keep_btn = QPushButton("Keep the label (next)")
        self.keep_btn.setShortcut("Ctrl+N")
        self.keep_btn.clicked.connect(self._next)
        self.map_btn = QPushButton("Show in the map")
        self.map_btn.clicked.connect(self.show_in_map)
        buttons = QHBoxLayout()
        for b in (self.relabel_btn, self.exclude_btn, self.keep_btn, self.map_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)
        mis = QWidget()
        ml = QVBoxLayout(mis)
        ml.addWidget(self.table, 1)
        ml.addWidget(self.evidence_label)
        ml.addWidget(self.evidence)
        ml.addLayout(buttons)
        # near-duplicates
        self.pairs = self._table(["image A", "image B", "classes", "distance", "edit"])
        self.pairs.setColumnWidth(3, 330)
        self.dup_btn = QPushButton("Mark B as a duplicate of A")
        self.dup_btn.setShortcut("Ctrl+D")
        self.dup_btn.clicked.connect(self.duplicate_current)
        self.pair_map_btn = QPushButton("Show in the map")
        self.pair_map_btn.clicked.connect(self.show_pair_in_map)
        pb = QHBoxLayout()
        pb.addWidget(self.dup_btn)
        pb.addWidget(self.pair_map_btn)
        pb.addStretch(1)
        self.pairs_note = shrinkable(QLabel(""))
        dup = QWidget()
        dl = QVBoxLayout(dup)
        dl.addWidget(self.pairs_note)
        dl.addWidget(self.pairs, 1)
        dl.addLayout(pb)
        self.tabs = QTabWidget()
        self.tabs.addTab(mis, "Suspected mislabels")
        self.tabs.addTab(dup, "Near-duplicates")
        lay = QVBoxLayout(self)
        lay.addWidget(self.tabs, 1)
        lay.addWidget(self.status)
        self.thumbs.ready.connect(self._on_thumb)
        self.state.marks_changed.connect(lambda _m: self._refresh_marks())
        self.refresh()

    def _table(self, headers: list[str]) -> QTableWidget:
        t = QTableWidget(0, len(headers))
        t.setHorizontalHeaderLabels(headers)
        t.verticalHeader().hide()
        t.setIconSize(QSize(THUMB, THUMB))
        t.verticalHeader().setDefaultSectionSize(THUMB + 6)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        t.horizontalHeader().setStretchLastSection(True)
        for c in range(len(headers) - 1):
            t.setColumnWidth(c, THUMB + 90 if headers[c].startswith("image") else 150)
        return t

    # ---- the data -----------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        run, epoch = self.state.run, self.state.epoch
        if run is None or epoch < 0:
            self.status.setText("Open a run first.")
            return
        self.status.setText(f"Ranking the training images of epoch {epoch} by how much their neighbours disagree …")
        self.window.jobs.submit(JOB, _review_job, run, epoch, on_result=self._show,
                                on_progress=lambda f, t: self.status.setText(f"{t} ({100 * f:.0f} %)"),
                                on_failed=lambda m: self.status.setText(f"Could not rank: {m.splitlines()[0]}"))

    def _class(self, c: int) -> str:
        classes = list(self.state.run.classes)
        return classes[c] if 0 <= c < len(classes) else str(c)

    def _image_item(self, sid: int) -> QTableWidgetItem:
        it = QTableWidgetItem(f"#{sid}")
        it.setData(Qt.ItemDataRole.UserRole, int(sid))
        it.setToolTip(f"sample {sid}: {self.state.run.samples.paths[int(sid)]}")
        self._cells.setdefault(int(sid), []).append(it)
        self._icon(it, int(sid), self.thumbs.request(int(sid)))
        return it

    def _icon(self, item, sid: int, pm) -> None:
        if pm is not None:
            item.setIcon(QIcon(badged(pm, self.state.marks.get(sid))))

    def _on_thumb(self, sid: int, pm) -> None:
        for item in self._cells.get(int(sid), []):
            try:
                self._icon(item, int(sid), pm)
            except RuntimeError:  # gone with a refilled table
                pass

    def _show(self, r: dict) -> None:
        if not r:
            return
        self.result = r
        self._cells.clear()
        self.table.setRowCount(len(r["ids"]))
        for row, sid in enumerate(r["ids"]):
            sid = int(sid)
            self.table.setItem(row, 0, self._image_item(sid))
            self.table.setItem(row, 1, QTableWidgetItem(self._class(int(r["labels"][row]))))
            self.table.setItem(row, 2, QTableWidgetItem(self._class(int(r["suggested"][row]))))
            self.table.setItem(row, 3, QTableWidgetItem(f"{100 * r['vote'][row]:.0f} %"))
            self.table.setItem(row, 4, QTableWidgetItem(""))
        self.pairs.setRowCount(len(r["pair_a"]))
        labels = np.asarray(self.state.run.samples.labels)
        for row, (a, b, d) in enumerate(zip(r["pair_a"], r["pair_b"], r["pair_dist"])):
            a, b = int(a), int(b)
            la, lb = int(labels[a]), int(labels[b])
            self.pairs.setItem(row, 0, self._image_item(a))
            self.pairs.setItem(row, 1, self._image_item(b))
            same = QTableWidgetItem(self._class(la) if la == lb else f"{self._class(la)} · {self._class(lb)}")
            same.setForeground(QColor("#2ca02c" if la == lb else "#d62728"))
            self.pairs.setItem(row, 2, same)
            rel = d / r["median_nn"] if r["median_nn"] > 0 else float("nan")
            dist = QTableWidgetItem(f"{d:.4g}  ({rel:.2f} x a usual nearest neighbour)")
            dist.setToolTip(f"The median distance of a training image to its nearest neighbour is {r['median_nn']:.4g}")
            self.pairs.setItem(row, 3, dist)
            self.pairs.setItem(row, 4, QTableWidgetItem(""))
        self.pairs_note.setText(f"The {len(r['pair_a'])} closest pairs of the {r['n_train']:,} training images at "
                                f"epoch {r['epoch']}, closest first; a typical image's nearest neighbour is "
                                f"{r['median_nn']:.4g} away. Red: filed under two classes.")
        self.status.setText(f"{len(r['ids'])} suspected mislabels of {r['n_train']:,} training images (their neighbours "
                            f"mostly carry another label; {r['method']}), likeliest first")
        self._refresh_marks()
        if len(r["ids"]):
            self.table.selectRow(0)

    def _refresh_marks(self) -> None:
        if self.result is None:
            return
        for table, cols in ((self.table, (0,)), (self.pairs, (0, 1))):
            for row in range(table.rowCount()):
                words = []
                for c in cols:
                    item = table.item(row, c)
                    if item is None:
                        continue
                    sid = int(item.data(Qt.ItemDataRole.UserRole))
                    self._icon(item, sid, self.thumbs.get(sid))
                    mark = self.state.marks.get(sid)
                    if mark:
                        words.append(("" if len(cols) == 1 else f"#{sid} ") + mark_words(mark))
                edit = table.item(row, table.columnCount() - 1)
                if edit is not None:
                    edit.setText("; ".join(words))

    # ---- evidence and actions -----------------------------------------------------------------------------------
    def _row(self) -> int:
        rows = {ix.row() for ix in self.table.selectedIndexes()}
        return min(rows) if rows else -1

    def _show_evidence(self) -> None:
        r, row = self.result, self._row()
        self.evidence.clear()
        if r is None or row < 0:
            return
        own = int(r["labels"][row])
        for sid, d in zip(r["nbr_ids"][row], r["nbr_dist"][row]):
            sid = int(sid)
            if sid < 0:
                continue
            c = int(self.state.run.samples.labels[sid])
            item = QListWidgetItem(f"{self._class(c)}\nd={d:.3f}")
            item.setForeground(QColor("#2ca02c" if c == own else "#d62728"))
            item.setData(Qt.ItemDataRole.UserRole, sid)
            item.setToolTip(f"sample {sid}: {self.state.run.samples.paths[sid]}")
            pm = self.thumbs.request(sid)
            if pm is not None:
                item.setIcon(QIcon(pm))
            self._cells.setdefault(sid, []).append(item)
            self.evidence.addItem(item)
        sid = int(r["ids"][row])
        self.evidence_label.setText(f"#{sid}, labelled {self._class(own)}: its {self.evidence.count()} nearest "
                                    f"training images (green: {self._class(own)}, red: another class), nearest first")
        self.relabel_btn.setText(f"Relabel as {self._class(int(r['suggested'][row]))}")

    def _next(self) -> None:
        row = self._row()
        if row + 1 < self.table.rowCount():
            self.table.selectRow(row + 1)

    def relabel_current(self) -> int:
        r, row = self.result, self._row()
        if r is None or row < 0:
            return 0
        n = self.curate.relabel_ids([int(r["ids"][row])], self._class(int(r["suggested"][row])))
        self._next()
        return n

    def exclude_current(self) -> int:
        r, row = self.result, self._row()
        if r is None or row < 0:
            return 0
        n = self.curate.exclude_ids([int(r["ids"][row])])
        self._next()
        return n

    def show_in_map(self) -> None:
        r, row = self.result, self._row()
        if r is not None and row >= 0:
            self.state.set_selection([int(r["ids"][row])])

    def _pair(self) -> tuple[int, int] | None:
        rows = {ix.row() for ix in self.pairs.selectedIndexes()}
        if self.result is None or not rows:
            return None
        row = min(rows)
        return int(self.result["pair_a"][row]), int(self.result["pair_b"][row])

    def duplicate_current(self) -> int:
        p = self._pair()
        if p is None:
            return 0
        n = self.curate.duplicate_ids([p[1]], p[0])
        row = min(ix.row() for ix in self.pairs.selectedIndexes())
        if row + 1 < self.pairs.rowCount():
            self.pairs.selectRow(row + 1)
        return n

    def show_pair_in_map(self) -> None:
        p = self._pair()
        if p is not None:
            self.state.set_selection(list(p))
