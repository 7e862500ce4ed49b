"""A right-click menu for any view that lists images (the neighbour grid, the threshold's error pairs, triplet
examples): mark the images under the cursor (exclude, relabel, duplicate: the window's Edit actions), copy the
paths of all listed, or export them as CSV (id, path, label, split; pairs with both images and their distance)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QPoint, QSize, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QListView, QListWidget, QMenu, QMessageBox, QWidget


class ImageListMenu:
    """Attach to ``widget``: ``ids()`` gives the sample ids listed (in order), ``pairs()`` (optional) the
    (id_a, id_b, distance) rows when the list is of pairs; ``run()`` the open run; ``what`` names them in
    messages ("neighbours", "false accepts")."""

    def __init__(self, widget: QWidget, run: Callable[[], object], ids: Callable[[], list[int]], what: str,
                 pairs: Callable[[], list[tuple[int, int, float]]] | None = None, status=None,
                 at: Callable[[QPoint], list[int]] | None = None,
                 duplicate_of: Callable[[QPoint], int | None] | None = None) -> None:
        """``at(pos)``: the sample ids under the cursor (marked by the Edit actions); ``duplicate_of(pos)``: the
        image they may duplicate (the query, the pair's first image)."""
        self.widget, self._run, self._ids, self._pairs, self.what = widget, run, ids, pairs, what
        self._at, self._duplicate_of = at, duplicate_of
        self._status = status or self._window_status
        widget.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        widget.customContextMenuRequested.connect(self._menu)

    def _window_status(self, text: str) -> None:
        win = self.widget.window()
        if hasattr(win, "show_status"):
            win.show_status(text)
        elif hasattr(win, "statusBar"):
            win.statusBar().showMessage(text, 8000)

    def _menu(self, pos: QPoint) -> None:
        if not self._ids() or self._run() is None:
            return
        menu = self.build_menu(pos)
        menu.exec(self.widget.viewport().mapToGlobal(pos) if hasattr(self.widget, "viewport")
                  else self.widget.mapToGlobal(pos))

    def build_menu(self, pos: QPoint) -> QMenu:
        """The menu for a right click at ``pos`` (tests read its actions)."""
        menu = QMenu(self.widget)
        here = self._at(pos) if self._at is not None else []
        curate = getattr(self.widget.window(), "curate", None)
        if here and curate is not None:
            of = self._duplicate_of(pos) if self._duplicate_of is not None else None
            curate.add_mark_actions(menu, here, of, "this image" if len(here) == 1 else "these two images")
            if len(here) == 2 and of is None:
                menu.addAction(f"Mark #{here[1]} as a duplicate of #{here[0]}",
                               lambda: curate.duplicate_ids([here[1]], here[0]))
            menu.addSeparator()
        menu.addAction(f"Copy the paths of these {self.what}", self.copy_paths)
        menu.addAction(f"Export these {self.what} as CSV…", self.export_csv)
        return menu

    def copy_paths(self) -> int:
        from trainer.export.formats import sample_files

        run, ids = self._run(), self._ids()
        if run is None or not ids:
            return 0
        files = sample_files(run.samples)
        QGuiApplication.clipboard().setText("\n".join(files[int(i)] for i in ids))
        self._status(f"Copied the paths of {len(ids):,} {self.what}")
        return len(ids)

    def export_csv(self, path: str | None = None) -> bool:
        from trainer.export.formats import (
            selection_rows,
            write_pairs_csv,
            write_selection_csv,
        )

        run, ids = self._run(), self._ids()
        if run is None or not ids:
            return False
        if path is None:
            start = str(Path(run.run_dir).parent / f"{Path(run.run_dir).name}-{self.what.replace(' ', '-')}.csv")
            path, _ = QFileDialog.getSaveFileName(self.widget, f"Export the {self.what}", start, "CSV (*.csv)")
            if not path:
                return False
        try:
            if self._pairs is not None:
                write_pairs_csv(path, run.samples, list(run.classes), self._pairs(), self.what)
            else:
                write_selection_csv(path, selection_rows(run.samples, list(run.classes), ids))
        except OSError as exc:
            QMessageBox.critical(self.widget, f"Export {self.what}", f"Could not write {path}: {exc.strerror or exc}")
            return False
        self._status(f"Wrote {len(ids):,} {self.what} to {path}")
        return True


def icon_grid(icon: int, cell: tuple[int, int], *, max_height: int | None = None) -> QListWidget:
    """A list of thumbnails laid out as a grid that reflows with its width (galleries, neighbour strips)."""
    w = QListWidget()
    w.setViewMode(QListView.ViewMode.IconMode)
    w.setIconSize(QSize(icon, icon))
    w.setGridSize(QSize(*cell))
    w.setResizeMode(QListView.ResizeMode.Adjust)
    w.setMovement(QListView.Movement.Static)
    if max_height is not None:
        w.setMaximumHeight(max_height)
    return w
