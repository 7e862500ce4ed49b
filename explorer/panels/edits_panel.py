"""The Edits tab: every mark of the open run's edits file in one list, with thumbnails.

Each row is one image: its thumbnail (with the mark painted on), the file, what was done (excluded, relabelled as a
class, a duplicate of another image) and its class now. Select rows to clear their marks, select the images in the
map, or act on all: undo, export the CSV, train again. The list follows AppState.marks, which the Edit actions
(explorer/panels/curate.py) keep in step with the edits file beside the run.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, QSize, Qt, Slot
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from explorer.widgets.badges import badged, mark_words
from explorer.widgets.labels import shrinkable

THUMB = 56


class EditsPanel(QWidget):
    def __init__(self, state, curate, thumbnails, parent=None) -> None:
        super().__init__(parent)
        self.state, self.curate, self.thumbs = state, curate, thumbnails
        self.ids: list[int] = []
        self._items: dict[int, QTableWidgetItem] = {}
        self.summary = shrinkable(QLabel("No run open."))
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["image", "file", "edit", "class in the run"])
        self.table.verticalHeader().hide()
        self.table.setIconSize(QSize(THUMB, THUMB))
        self.table.verticalHeader().setDefaultSectionSize(THUMB + 6)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setColumnWidth(0, THUMB + 60)
        self.table.setColumnWidth(2, 220)
        self.table.setColumnWidth(3, 140)
        self.table.itemDoubleClicked.connect(lambda _it: self.select_in_map())
        self.table.setToolTip("Double-click: select the image in the map; Delete: clear the selected marks")
        buttons = QHBoxLayout()
        self.clear_btn = QPushButton("Clear the selected marks")
        self.table.installEventFilter(self)  # Delete / Backspace in the list (a window shortcut needs focus there)
        self.clear_btn.clicked.connect(self.clear_selected_rows)
        self.map_btn = QPushButton("Select in the map")
        self.map_btn.clicked.connect(self.select_in_map)
        self.undo_btn = QPushButton("Undo")
        self.undo_btn.clicked.connect(curate.undo)
        self.export_btn = QPushButton("Export as CSV…")
        self.export_btn.clicked.connect(lambda: curate.export_csv())
        self.train_btn = QPushButton("Train again with these edits")
        self.train_btn.clicked.connect(curate.train_again)
        for b in (self.clear_btn, self.map_btn, self.undo_btn, self.export_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.train_btn)
        lay = QVBoxLayout(self)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)
        lay.addLayout(buttons)
        state.marks_changed.connect(self._on_marks)
        state.run_changed.connect(lambda _run: self._on_marks(state.marks))
        thumbnails.ready.connect(self._on_thumb)
        self._on_marks(state.marks)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt override
        if obj is self.table and event.type() == QEvent.Type.KeyPress and event.key() in (Qt.Key.Key_Delete,
                                                                                         Qt.Key.Key_Backspace):
            self.clear_selected_rows()
            return True
        return super().eventFilter(obj, event)

    @Slot(object)
    def _on_marks(self, marks) -> None:
        run = self.state.run
        self.table.setRowCount(0)
        self._items.clear()
        self.ids = sorted(int(i) for i in marks) if run is not None else []
        for b in (self.clear_btn, self.map_btn, self.export_btn, self.train_btn):
            b.setEnabled(bool(self.ids))
        if run is None:
            self.summary.setText("No run open.")
            return
        path = getattr(self.curate, "path", None)
        counts = {a: sum(1 for m in marks.values() if m[0] == a) for a in ("exclude", "relabel", "duplicate")}
        where = f" in {path.name}, beside the run (your image folder is not changed)" if path is not None else ""
        self.summary.setText(
            f"{len(self.ids):,} edits{where}: {counts['exclude']} excluded, {counts['relabel']} relabelled, "
            f"{counts['duplicate']} marked as a duplicate. Mark images from the map's selection (Edit menu) or by right-clicking "
            "them in the neighbours, triplets and threshold views." if self.ids else
            "No edits yet: select images in the map and use the Edit menu, or right-click an image in the "
            "neighbours, triplets or threshold views.")
        self.table.setRowCount(len(self.ids))
        labels, classes = np.asarray(run.samples.labels), list(run.classes)
        for r, sid in enumerate(self.ids):
            mark = marks[sid]
            img = QTableWidgetItem(f"#{sid}")
            img.setData(Qt.ItemDataRole.UserRole, sid)
            self._items[sid] = img
            self._set_icon(sid, self.thumbs.request(sid))
            c = int(labels[sid])
            for col, item in enumerate((img, QTableWidgetItem(run.samples.paths[sid]), QTableWidgetItem(mark_words(mark)),
                                        QTableWidgetItem(classes[c] if 0 <= c < len(classes) else str(c)))):
                self.table.setItem(r, col, item)

    def _set_icon(self, sid: int, pm: QPixmap | None) -> None:
        item = self._items.get(int(sid))
        if item is not None and pm is not None:
            item.setIcon(QIcon(badged(pm, self.state.marks.get(int(sid)))))

    @Slot(int, QPixmap)
    def _on_thumb(self, sid: int, pm: QPixmap) -> None:
        self._set_icon(sid, pm)

    def selected_ids(self) -> list[int]:
        rows = sorted({ix.row() for ix in self.table.selectedIndexes()})
        return [self.ids[r] for r in rows if r < len(self.ids)]

    def clear_selected_rows(self) -> int:
        ids = self.selected_ids()
        return self.curate.clear_ids(ids) if ids else 0

    def select_in_map(self) -> None:
        ids = self.selected_ids() or self.ids
        if ids:
            self.state.set_selection(ids)
