"""The Data tab: what a folder scan found — classes with counts and sample thumbnails, every skipped file and why.

The scan (``trainer.data.scan.scan_folder``) and the thumbnails run as a background job; the view only draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable
import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton,
                               QSplitter, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)
from explorer.jobs import JobRunner
from explorer.views.dataset.jobs import ScanReport, THUMB_PX, scan_job

JOB_KEY = "dataset-scan"


def _pixmap(rgb: np.ndarray) -> QPixmap:
    h, w = rgb.shape[:2]
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()  # copy: the array may go away
    return QPixmap.fromImage(img)


def _table(headers: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.verticalHeader().setVisible(False)
    t.setAlternatingRowColors(True)
    t.horizontalHeader().setStretchLastSection(True)
    return t


class DatasetView(QWidget):
    """Scan report of the open image folder; emits :attr:`scan_finished` with the ScanResult when done."""

    scan_started = Signal(object)  # Path
    scan_finished = Signal(object)  # trainer.data.scan.ScanResult
    scan_failed = Signal(str)  # a message naming the folder and the reason

    def __init__(self, jobs: JobRunner | None = None, parent: QWidget | None = None, *,
                 scan_fn: Callable[..., Any] | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs if jobs is not None else JobRunner(self, max_threads=1)
        self.scan_fn = scan_fn
        self.scan = None
        self.root: Path | None = None
        self._build()

    def _build(self) -> None:
        self.title = QLabel("No folder open. Use File ▸ Open folder… (Ctrl+O) or drop a folder on the window.")
        self.title.setObjectName("dataTitle")
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop scanning this folder")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel)
        top = QHBoxLayout()
        top.addWidget(self.progress, 1)
        top.addWidget(self.cancel_button)

        self.classes_table = _table(["Class", "Images", "Samples", "Split"])
        header = self.classes_table.horizontalHeader()
        header.setStretchLastSection(False)  # the thumbnails get the room, the split its words
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        self._held: set[str] | None = None  # classes the next run holds out (None: not known)
        self.classes_table.setSortingEnabled(False)
        header = self.classes_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.classes_table.verticalHeader().setDefaultSectionSize(THUMB_PX + 6)

        self.skipped_table = _table(["File", "Reason"])
        self.notes_table = _table(["File", "Note"])
        self.duplicates_table = _table(["Identical files"])
        self.issues = QTabWidget()
        self.issues.addTab(self.skipped_table, "Skipped")
        self.issues.addTab(self.notes_table, "Notes")
        self.issues.addTab(self.duplicates_table, "Duplicates")

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.classes_table)
        split.addWidget(self.issues)
        split.setSizes([600, 400])

        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(top)
        layout.addWidget(split, 1)

    # ---- scanning ---------------------------------------------------------------------------------------------
    def open_folder(self, root: str | Path) -> None:
        """Scan ``root`` in the background (a running scan is cancelled)."""
        self.root = Path(root)
        self.scan = None
        self.title.setText(f"Scanning {self.root} …")
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        kwargs = {"scan_fn": self.scan_fn} if self.scan_fn else {}
        self.jobs.submit(JOB_KEY, scan_job, self.root, on_result=self._on_scanned, on_failed=self._on_scan_failed,
                         on_progress=self._on_scan_progress, **kwargs)
        self.scan_started.emit(self.root)

    def cancel(self) -> None:
        self.jobs.cancel(JOB_KEY)
        self._done()
        self.title.setText(f"Scan of {self.root} cancelled.")

    def is_scanning(self) -> bool:
        return self.jobs.is_running(JOB_KEY)

    def _done(self) -> None:
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)

    def _on_scan_progress(self, fraction: float, text: str) -> None:
        self.progress.setValue(int(fraction * 1000))
        self.progress.setFormat(f"{text}  %p%")

    def _on_scan_failed(self, message: str) -> None:
        self._done()
        first = message.splitlines()[0] if message else "unknown error"
        self._show_error(f"Could not scan {self.root}: {first}")

    def _on_scanned(self, report: ScanReport) -> None:
        self._done()
        if report.error:
            self._show_error(f"Could not scan {report.root}: {report.error}", report.partial)
            return
        self.show_scan(report.scan, report.thumbnails)
        self.scan_finished.emit(report.scan)

    def _show_error(self, message: str, partial=None) -> None:
        """Show why the folder cannot be used; ``partial`` (the listing, if it got that far) fills the lists of
        skipped files and notes, so that the "N skipped" of the message can be read file by file."""
        self.title.setText(message)
        self.title.setProperty("error", True)
        self.title.style().unpolish(self.title)
        self.title.style().polish(self.title)
        self.classes_table.setRowCount(0)
        skipped = [(s.path, s.reason) for s in getattr(partial, "skipped", [])]
        notes = [(s.path, s.reason) for s in getattr(partial, "notes", [])]
        self._fill(self.skipped_table, skipped)
        self._fill(self.notes_table, notes)
        self.duplicates_table.setRowCount(0)
        self.issues.setTabText(0, f"Skipped ({len(skipped)})")
        self.issues.setTabText(1, f"Notes ({len(notes)})")
        self.issues.setTabText(2, "Duplicates (0)")
        if skipped:
            self.issues.setCurrentIndex(0)
        self.scan_failed.emit(message)

    # ---- drawing ----------------------------------------------------------------------------------------------
    def show_scan(self, scan, thumbnails: dict[str, list[np.ndarray]] | None = None) -> None:
        """Fill the tables from a ScanResult (and thumbnails per class, if any)."""
        self.scan = scan
        self.title.setProperty("error", False)
        self.title.style().unpolish(self.title)
        self.title.style().polish(self.title)
        thumbnails = thumbnails or {}
        counts = np.bincount(np.asarray(scan.labels, dtype=np.int64), minlength=len(scan.classes))
        singles = set(scan.singleton_classes)
        self.title.setText(
            f"<b>{scan.root}</b>: {len(scan.paths)} images in {len(scan.classes)} classes; "
            f"{len(scan.skipped)} skipped, {len(scan.duplicates)} duplicate groups"
            + (f"; empty folders: {', '.join(scan.empty_classes)}" if scan.empty_classes else "")
            + (f"; {len(singles)} classes with a single image (no positive pair)" if singles else ""))

        t = self.classes_table
        t.setRowCount(len(scan.classes))
        for row, (name, n) in enumerate(zip(scan.classes, counts)):
            item = QTableWidgetItem(name)
            if name in singles:
                item.setToolTip("Only one image: it can never form a positive pair")
                item.setForeground(Qt.GlobalColor.darkRed)
            t.setItem(row, 0, item)
            count = QTableWidgetItem()
            count.setData(Qt.ItemDataRole.DisplayRole, int(n))
            count.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            t.setItem(row, 1, count)
            thumbs = thumbnails.get(name) or []
            if thumbs:
                strip = QWidget()
                lay = QHBoxLayout(strip)
                lay.setContentsMargins(2, 2, 2, 2)
                lay.setSpacing(3)
                for rgb in thumbs:
                    lab = QLabel()
                    lab.setPixmap(_pixmap(rgb))
                    lay.addWidget(lab)
                lay.addStretch(1)
                t.setCellWidget(row, 2, strip)
            else:
                t.removeCellWidget(row, 2)

        self.set_held_out(self._held)
        self._fill(self.skipped_table, [(s.path, s.reason) for s in scan.skipped])
        self._fill(self.notes_table, [(s.path, s.reason) for s in scan.notes])
        self._fill(self.duplicates_table, [(" = ".join(g),) for g in scan.duplicates])
        self.issues.setTabText(0, f"Skipped ({len(scan.skipped)})")
        self.issues.setTabText(1, f"Notes ({len(scan.notes)})")
        self.issues.setTabText(2, f"Duplicates ({len(scan.duplicates)})")

    def set_held_out(self, held: set[str] | None, note: str = "") -> None:
        """Mark the classes the next run holds out (never trained on, evaluated on); ``note`` explains the
        column when nothing of this folder is held out (a separate test folder)."""
        self._held = held
        t = self.classes_table
        for row in range(t.rowCount()):
            name_item = t.item(row, 0)
            if name_item is None:
                continue
            if held is None:
                t.setItem(row, 3, QTableWidgetItem(""))
                continue
            out = name_item.text() in held
            item = QTableWidgetItem("held out" if out else "train")
            item.setToolTip(note or ("never trained on: the held-out metrics, the threshold and the triplet "
                                     "census of held-out anchors are measured on it" if out else
                                     "trained on"))
            if out:
                item.setForeground(QColor(120, 60, 160))
            t.setItem(row, 3, item)

    @staticmethod
    def _fill(table: QTableWidget, rows: list[tuple[str, ...]]) -> None:
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                table.setItem(r, c, item)
        table.resizeColumnToContents(0)

    def class_counts(self) -> dict[str, int]:
        """Images per class as shown in the table (tests, config checks)."""
        return {self.classes_table.item(r, 0).text(): int(self.classes_table.item(r, 1).text())
                for r in range(self.classes_table.rowCount())}

    def skipped_rows(self) -> list[tuple[str, str]]:
        """(file, reason) rows as shown in the Skipped table."""
        t = self.skipped_table
        return [(t.item(r, 0).text(), t.item(r, 1).text()) for r in range(t.rowCount())]
