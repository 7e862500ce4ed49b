"""The Start page: what the app does in three steps, big buttons to open a folder, a run or the demo, and recents."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QGridLayout, QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPushButton, QVBoxLayout, QWidget)

INTRO = (
    "<h2>Embedding Explorer</h2>"
    "<p>Teach a network to place similar images close together, and watch it happen.</p>"
    "<ol>"
    "<li><b>Open an image folder</b> with one sub-folder per class (or try the built-in digits demo).</li>"
    "<li><b>Train</b>: pick a backbone and a metric-learning loss, press Start.</li>"
    "<li><b>Explore</b>: the map, nearest neighbours, easy / semi-hard / hard triplets and a verification "
    "threshold update after every epoch.</li>"
    "</ol>"
    "<p style='color:#666'>Tip: drop a folder or a run onto this window to open it.</p>"
)


class StartPage(QWidget):
    """Landing page; it only emits requests, the main window acts on them."""

    open_folder_requested = Signal()  # ask for a folder with a dialog
    open_run_requested = Signal()  # ask for a run with a dialog
    open_demo_requested = Signal()
    open_path_requested = Signal(str)  # a recent folder or run was picked

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        intro.setTextFormat(Qt.TextFormat.RichText)
        self.folder_button = QPushButton("Open image folder…")
        self.folder_button.setToolTip("A folder with one sub-folder per class (Ctrl+O)")
        self.run_button = QPushButton("Open a run…")
        self.run_button.setToolTip("A run folder written by this app or the command line (Ctrl+Shift+O)")
        self.demo_button = QPushButton("Try the demo (digits)")
        self.demo_button.setToolTip("scikit-learn's 8x8 handwritten digits as a ten-class image folder")
        for b in (self.folder_button, self.run_button, self.demo_button):
            b.setMinimumHeight(40)
            b.setObjectName("bigButton")
        self.folder_button.clicked.connect(self.open_folder_requested)
        self.run_button.clicked.connect(self.open_run_requested)
        self.demo_button.clicked.connect(self.open_demo_requested)
        buttons = QHBoxLayout()
        for b in (self.folder_button, self.run_button, self.demo_button):
            buttons.addWidget(b)

        self.recent_folders = QListWidget()
        self.recent_runs = QListWidget()
        for lst in (self.recent_folders, self.recent_runs):
            lst.itemActivated.connect(lambda item: self.open_path_requested.emit(item.data(Qt.ItemDataRole.UserRole)))
            lst.setToolTip("Double-click to open")
        recent = QGridLayout()
        fbox = QGroupBox("Recent folders")
        QVBoxLayout(fbox).addWidget(self.recent_folders)
        rbox = QGroupBox("Recent runs")
        QVBoxLayout(rbox).addWidget(self.recent_runs)
        recent.addWidget(fbox, 0, 0)
        recent.addWidget(rbox, 0, 1)

        column = QVBoxLayout()
        column.addWidget(intro)
        column.addLayout(buttons)
        column.addLayout(recent, 1)
        holder = QWidget()
        holder.setLayout(column)
        holder.setMaximumWidth(900)
        outer = QHBoxLayout(self)
        outer.addStretch(1)
        outer.addWidget(holder, 4)
        outer.addStretch(1)

    def set_recent(self, folders: list[str], runs: list[str]) -> None:
        """Show the recent lists (newest first); entries that no longer exist are greyed out. A run shows when it
        was last written, how many epochs it has and its best held-out MAP@R; one without a committed epoch is
        greyed out (a run stopped before its first epoch, or one whose first epoch is still training)."""
        from trainer.store import run_summary

        for lst, paths in ((self.recent_folders, folders), (self.recent_runs, runs)):
            lst.clear()
            for p in paths:
                text, tip, grey = f"{Path(p).name}    —    {p}", p, not Path(p).exists()
                if grey:
                    tip = f"{p} (not found)"
                elif lst is self.recent_runs:
                    summary = run_summary(p)
                    if summary is None:
                        text, tip, grey = f"{Path(p).name}    —    not a readable run", f"{p} (not a readable run)", True
                    elif summary.last_epoch < 0:
                        text, tip, grey = f"{Path(p).name}    —    no epoch committed", f"{p} (no epoch committed)", True
                    else:
                        when = summary.updated[:16].replace("T", " ")
                        best = (f", best MAP@R {summary.best_map_at_r:.3f}" if summary.best_map_at_r is not None
                                else "")
                        text = f"{Path(p).name}    —    {when}, epochs 0-{summary.last_epoch}{best}"
                        tip = f"{p}\nlast written {when}; {summary.epochs} epochs committed{best}"
                item = QListWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, p)
                item.setToolTip(tip)
                if grey:
                    item.setForeground(Qt.GlobalColor.gray)
                lst.addItem(item)
