"""The Edit menu: mark the selected images (exclude, relabel), undo, find suspected mislabels, export the edits,
and train again with them. The marks live in the edits file beside the open run (trainer/data/edits.py), never
in the image folder; a new run applies them (``train --edits``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMenu, QMessageBox

from trainer.data.edits import Edits, EditsError, edits_path_for

SUSPECTS_JOB = "suspected-mislabels"
SUSPECT_SHARE = 0.05  # the share of training images "Select suspected mislabels" selects


def _suspects_job(run, epoch: int, *, progress, partial, is_cancelled) -> dict:
    from trainer.analysis.label_issues import rank_label_issues
    from trainer.store import SPLIT_TRAIN

    progress(0.1, f"reading the training images of epoch {epoch}")
    ids = np.flatnonzero(np.asarray(run.samples.split) == SPLIT_TRAIN).astype(np.int64)
    x = run.rows(epoch, ids)
    y = np.asarray(run.samples.labels)[ids]
    progress(0.4, "ranking by out-of-sample neighbour votes")
    r = rank_label_issues(x, y, run.metric)
    # suspects are the images whose neighbours mostly carry another label, likeliest first, at most a share of the
    # training images; an image its neighbours agree with is never one (its score ties with the others')
    order = [int(i) for i in r["order"] if r["suggested"][int(i)] != y[int(i)]]
    order = order[: max(1, int(round(SUSPECT_SHARE * len(ids))))]
    return {"ids": ids[order], "method": r["method"], "suggested": r["suggested"][order], "n_train": len(ids)}


class CurateActions:
    """The window's Edit menu and the edits file of the open run."""

    def __init__(self, window) -> None:
        self.window = window
        self.edits = None  # trainer.data.edits.Edits of the open run
        self.path: Path | None = None
        self._index: dict[str, int] | None = None
        window.state.run_changed.connect(self._on_run)

    def add_to(self, menu: QMenu) -> None:
        w = self.window
        self.exclude_action = w._action(menu, "E&xclude selected images from training", self.exclude_selected,
                                        QKeySequence("Ctrl+Shift+X"), "Mark the map's selection as excluded: a "
                                        "new run leaves them out (your folder is not touched)")
        self.relabel_action = w._action(menu, "&Relabel selected images…", self.relabel_selected,
                                        QKeySequence("Ctrl+Shift+R"), "Give the selection another class in the "
                                        "next run")
        self.duplicate_action = w._action(menu, "Mark as &duplicates of the first selected", self.duplicate_selected,
                                          tip="The first selected image stays; a new run leaves the others out")
        self.clear_action = w._action(menu, "&Clear the marks of the selection", self.clear_selected)
        self.undo_action = w._action(menu, "&Undo the last edit", self.undo, QKeySequence("Ctrl+Z"))
        menu.addSeparator()
        self.suspects_action = w._action(menu, "Select suspected &mislabels", self.select_suspects,
                                         QKeySequence("Ctrl+Shift+L"), "The training images whose neighbours "
                                         "disagree most with their label (cleanlab on neighbour votes)")
        self.review_action = w._action(menu, "Re&view suspected mislabels and near-duplicates…", self.review,
                                       QKeySequence("Ctrl+Shift+M"), "Ranked galleries with the neighbours that "
                                       "disagree and the closest pairs; relabel, exclude or mark duplicates")
        menu.addSeparator()
        self.list_action = w._action(menu, "&List the edits", lambda: w.show_view("Edits"),
                                     QKeySequence("Ctrl+Alt+D"), "Every mark with its thumbnail (the Edits tab)")
        self.export_action = w._action(menu, "&Export the edits as CSV…", self.export_csv)
        self.retrain_action = w._action(menu, "&Train again with these edits", self.train_again,
                                        tip="A new run with the open run's settings, the edits applied")

    # ---- the edits file of the open run -------------------------------------------------------------------------
    def _on_run(self, run) -> None:
        self.edits, self.path, self._index = None, None, None
        map_view = getattr(self.window, "map_view", None)
        if hasattr(map_view, "set_marks"):
            map_view.set_marks([], [], [])
        if run is None:
            return
        self.path = edits_path_for(run.run_dir)
        data_dir = str((run.config.get("data") or {}).get("data_dir", "")) if isinstance(run.config, dict) else ""
        try:
            self.edits = Edits.load(self.path) if self.path.is_file() else Edits(data_dir)
        except EditsError as exc:
            self.window.show_status(f"The edits beside this run cannot be read: {exc}")
            self.edits = Edits(data_dir)
        self.show_marks()

    def _selected_paths(self) -> list[str]:
        w = self.window
        ids = np.asarray(w.state.selection, np.int64)
        if w.state.run is None or self.edits is None or len(ids) == 0:
            w.show_status("Select images in the map first (click, box, lasso, search or suspected mislabels)")
            return []
        return self._paths(ids)

    def _paths(self, ids) -> list[str]:
        run = self.window.state.run
        return [run.samples.paths[int(i)] for i in ids] if run is not None and self.edits is not None else []

    # ---- marks on any images (the map's selection, a neighbour, a triplet's image, an error pair ...) ------------
    def exclude_ids(self, ids) -> int:
        paths = self._paths(ids)
        if not paths:
            return 0
        n = self.edits.exclude(paths)
        self._saved("Excluded", n)
        return n

    def relabel_ids(self, ids, label: str | None = None) -> int:
        paths = self._paths(ids)
        if not paths:
            return 0
        classes = list(self.window.state.run.classes)
        if label is None:
            label, ok = QInputDialog.getItem(self.window, "Relabel", f"New class of the {len(paths)} image(s):",
                                             classes, 0, False)
            if not ok:
                return 0
        n = self.edits.relabel(paths, label)
        self._saved(f"Relabelled as {label}:", n)
        return n

    def duplicate_ids(self, ids, of: int) -> int:
        """Mark ``ids`` as duplicates of sample ``of``: a new run keeps ``of`` and leaves them out."""
        paths = self._paths(ids)
        keep = self._paths([of])
        if not paths or not keep:
            return 0
        n = self.edits.duplicate(paths, keep[0])
        self._saved(f"Marked as duplicates of #{int(of)}:", n)
        return n

    def clear_ids(self, ids) -> int:
        paths = self._paths(ids)
        if not paths:
            return 0
        n = self.edits.clear(paths)
        self._saved("Cleared the marks of", n)
        return n

    def add_mark_actions(self, menu: QMenu, ids: list[int], duplicate_of: int | None = None,
                         what: str = "this image") -> None:
        """Exclude / relabel / duplicate / clear items for ``ids`` in a view's right-click menu."""
        if self.window.state.run is None or self.edits is None or not ids:
            return
        ids = [int(i) for i in ids]
        menu.addAction(f"Exclude {what} from training", lambda: self.exclude_ids(ids))
        menu.addAction(f"Relabel {what}…", lambda: self.relabel_ids(ids))
        if duplicate_of is not None and int(duplicate_of) not in ids:
            menu.addAction(f"Mark {what} as a duplicate of #{int(duplicate_of)}",
                           lambda: self.duplicate_ids(ids, int(duplicate_of)))
        if any(int(i) in self.window.state.marks for i in ids):
            menu.addAction(f"Clear the marks of {what}", lambda: self.clear_ids(ids))

    def show_marks(self) -> None:
        """Draw the edits in the map (excluded crossed out, relabelled ringed in the new class's colour) and tell
        every other view (AppState.marks: badges on their thumbnails)."""
        w = self.window
        if w.state.run is None or self.edits is None:
            return
        if not len(self.edits) and self._index is None:  # nothing to draw: no path index (0.9 s of GUI at 1e6)
            w.state.set_marks({})
            map_view = getattr(w, "map_view", None)
            if hasattr(map_view, "set_marks"):
                map_view.set_marks([], [], [])
            return
        if self._index is None:  # path -> sample id, once per run (a million paths took ~0.3 s per mark)
            self._index = {p: i for i, p in enumerate(w.state.run.samples.paths)}
        index = self._index
        marks: dict[int, tuple[str, str]] = {}
        for e in self.edits.edits:
            sid = index.get(e.path)
            if sid is None:
                continue
            if e.action == "relabel":
                marks[sid] = ("relabel", str(e.label))
            elif e.action == "duplicate":
                of = index.get(e.of or "")
                marks[sid] = ("duplicate", f"#{of}" if of is not None else str(e.of))
            else:
                marks[sid] = ("exclude", "")
        w.state.set_marks(marks)
        map_view = getattr(w, "map_view", None)
        if not hasattr(map_view, "set_marks"):
            return
        classes = {c: i for i, c in enumerate(w.state.run.classes)}
        excluded = [index[e.path] for e in self.edits.edits if e.action in ("exclude", "duplicate") and e.path in index]
        relabel = [(index[e.path], classes.get(e.label, -1)) for e in self.edits.edits
                   if e.action == "relabel" and e.path in index]
        map_view.set_marks(excluded, [i for i, _ in relabel], [c for _, c in relabel])

    def _saved(self, what: str, n: int) -> None:
        self.edits.save(self.path)
        self.show_marks()
        self.window.show_status(f"{what} {n} image(s); {len(self.edits)} edits in {self.path.name} "
                                f"(Edit ▸ Train again with these edits)")

    def exclude_selected(self) -> int:
        return self.exclude_ids(self.window.state.selection) if self._selected_paths() else 0

    def relabel_selected(self, label: str | None = None) -> int:
        return self.relabel_ids(self.window.state.selection, label) if self._selected_paths() else 0

    def duplicate_selected(self) -> int:
        """The selection as duplicates of its first image (by sample id)."""
        ids = np.asarray(self.window.state.selection, np.int64)
        if len(ids) < 2 or not self._selected_paths():
            self.window.show_status("Select two images or more: the first stays, the others are marked as its "
                                    "duplicates")
            return 0
        return self.duplicate_ids(ids[1:], int(ids[0]))

    def clear_selected(self) -> int:
        return self.clear_ids(self.window.state.selection) if self._selected_paths() else 0

    def undo(self) -> bool:
        if self.edits is None or not self.edits.undo():
            self.window.show_status("Nothing to undo")
            return False
        self._saved("Undone; now", len(self.edits))
        return True

    # ---- suspects -----------------------------------------------------------------------------------------------
    def select_suspects(self) -> bool:
        w = self.window
        if w.state.run is None or w.state.epoch < 0:
            w.show_status("Open a run first")
            return False
        w.show_status("Ranking the training images by how much their neighbours disagree with their label …")
        w.jobs.submit(SUSPECTS_JOB, _suspects_job, w.state.run, w.state.epoch, on_result=self._suspects_done,
                      on_failed=lambda m: w.show_status(f"Could not rank the suspects: {m.splitlines()[0]}"))
        return True

    def _suspects_done(self, result: dict) -> None:
        w = self.window
        if not len(result["ids"]):
            w.show_status(f"No suspected mislabels: every training image's neighbours mostly share its label "
                          f"({result['method']})")
            return
        w.state.set_selection(result["ids"])
        w.show_status(f"Selected the {len(result['ids'])} likeliest mislabels of {result['n_train']} training images "
                      f"({result['method']}); Edit ▸ Exclude or Relabel acts on them")
        w.show_view("Map")

    def review(self):
        """Edit > Review suspected mislabels and near-duplicates (a dialog; the window keeps working)."""
        w = self.window
        if w.state.run is None or w.state.epoch < 0:
            w.show_status("Open a run first")
            return None
        from explorer.dialogs.suspects import SuspectsDialog

        self._review = SuspectsDialog(w)
        self._review.show()
        return self._review

    # ---- out ----------------------------------------------------------------------------------------------------
    def export_csv(self, path: str | None = None) -> bool:
        w = self.window
        if self.edits is None or not len(self.edits):
            w.show_status("No edits yet")
            return False
        if path is None:
            path, _ = QFileDialog.getSaveFileName(w, "Export the edits", str(self.path.with_suffix(".csv")),
                                                  "CSV (*.csv)")
            if not path:
                return False
        run = w.state.run
        old = {p: run.classes[int(c)] for p, c in zip(run.samples.paths, run.samples.labels)}
        self.edits.write_csv(path, old)
        w.show_status(f"Wrote {len(self.edits)} edits to {path}")
        return True

    def train_again(self) -> Path | None:
        """A new run: the open run's configuration with the edits file, into a new folder beside it."""
        from trainer.config import TrainConfig

        w = self.window
        run = w.state.run
        if run is None or self.edits is None or not len(self.edits) or w.controller.is_running():
            w.show_status("Open a run and mark some images first (Edit ▸ Exclude / Relabel)")
            return None
        try:
            cfg = TrainConfig.from_dict(run.config)
        except (ValueError, TypeError) as exc:
            QMessageBox.critical(w, "Train again", f"The run's configuration cannot be read: {exc}")
            return None
        self.edits.save(self.path)
        from explorer.main_window import new_run_dir

        out = new_run_dir(Path(run.run_dir).parent, Path(run.run_dir).name + "-edited")
        cfg = cfg.replace(**{"data.edits": str(self.path)})
        w.training_view.append_log(f"Training {out} with the {len(self.edits)} edits of {self.path}")
        w.controller.start(cfg, out, resume=False)
        w.show_view("Train")
        return out
