"""Curating a folder without touching it: an edits file of exclusions and relabellings that a new run applies.

The file lives beside the run it was made from (``RUN_DIR.edits.json``), never in the user's image folder::

    {"format": "embedding-explorer-edits", "version": 1, "data_dir": "/path/to/images",
     "edits": [{"path": "cat/017.jpg", "action": "exclude", "note": "suspected mislabel"},
               {"path": "dog/033.jpg", "action": "relabel", "label": "cat"},
               {"path": "dog/034.jpg", "action": "duplicate", "of": "dog/012.jpg"}]}

Paths are relative to ``data_dir`` as a run's sample table holds them. ``train --edits FILE`` (and "Train again
with these edits" in the window) drops the excluded images and the duplicates (keeping the image each duplicates)
and gives relabelled ones their new class; the run
records the file in its configuration and keeps a copy (``edits.json``).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

FORMAT = "embedding-explorer-edits"
VERSION = 1
ACTIONS = ("exclude", "relabel", "duplicate")


@dataclass(frozen=True)
class Edit:
    path: str
    action: str  # "exclude" | "relabel" | "duplicate"
    label: str | None = None  # the new class of a relabel
    note: str = ""
    of: str | None = None  # the image a duplicate duplicates (kept; the duplicate is left out)


class EditsError(ValueError):
    """An edits file that cannot be used: named with the reason."""


def edits_path_for(run_dir: str | Path) -> Path:
    """Where the edits of a run live: beside it, ``RUN_DIR.edits.json``."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + ".edits.json")


class Edits:
    """The edits of one image folder, one per path (a later mark replaces an earlier one; undo removes it)."""

    def __init__(self, data_dir: str | Path = "", edits: list[Edit] | None = None) -> None:
        self.data_dir = str(data_dir)
        self._by_path: dict[str, Edit] = {}
        self.history: list[list[tuple[str, Edit | None]]] = []  # for undo: what each change replaced
        for e in edits or []:
            self._by_path[e.path] = e

    # ---- reading and writing ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "Edits":
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise EditsError(f"{path} cannot be read as an edits file: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise EditsError(f"{path} is not an Embedding Explorer edits file")
        if not isinstance(raw.get("version"), int) or raw["version"] > VERSION:
            raise EditsError(f"{path}: edits format version {raw.get('version')!r} is not one this program reads")
        items = raw.get("edits")
        if not isinstance(items, list):
            raise EditsError(f"{path}: 'edits' must be a list")
        edits = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("path"), str) or item.get("action") not in ACTIONS:
                raise EditsError(f"{path}: edit {i + 1} needs a 'path' and an 'action' ({' or '.join(ACTIONS)})")
            p = item["path"]
            if Path(p).is_absolute() or ".." in Path(p).parts:
                raise EditsError(f"{path}: edit {i + 1} names {p!r}; paths are relative to the image folder")
            if item["action"] == "relabel" and not isinstance(item.get("label"), str):
                raise EditsError(f"{path}: edit {i + 1} relabels {p!r} but gives no 'label'")
            of = item.get("of")
            if item["action"] == "duplicate" and (not isinstance(of, str) or Path(of).is_absolute()
                                                  or ".." in Path(of).parts or of == p):
                raise EditsError(f"{path}: edit {i + 1} marks {p!r} as a duplicate but 'of' does not name another "
                                 "image of the folder (a relative path)")
            edits.append(Edit(p, item["action"], item.get("label"), str(item.get("note", "")),
                              of if item["action"] == "duplicate" else None))
        return cls(raw.get("data_dir", ""), edits)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "data_dir": self.data_dir,
                "edits": [{k: v for k, v in e.__dict__.items() if v not in (None, "")} for e in self.edits]}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        os.replace(tmp, path)
        return path

    # ---- changes ------------------------------------------------------------------------------------------------
    @property
    def edits(self) -> list[Edit]:
        return sorted(self._by_path.values(), key=lambda e: e.path)

    def get(self, path: str) -> Edit | None:
        return self._by_path.get(path)

    def __len__(self) -> int:
        return len(self._by_path)

    def _change(self, new: list[Edit]) -> int:
        before = [(e.path, self._by_path.get(e.path)) for e in new]
        for e in new:
            self._by_path[e.path] = e
        self.history.append(before)
        return len(new)

    def exclude(self, paths, note: str = "") -> int:
        return self._change([Edit(str(p), "exclude", None, note) for p in paths])

    def relabel(self, paths, label: str, note: str = "") -> int:
        return self._change([Edit(str(p), "relabel", str(label), note) for p in paths])

    def duplicate(self, paths, of: str, note: str = "") -> int:
        """Mark ``paths`` as duplicates of ``of`` (which stays; a mark on ``of`` itself is skipped)."""
        return self._change([Edit(str(p), "duplicate", None, note, str(of)) for p in paths if str(p) != str(of)])

    def clear(self, paths) -> int:
        """Take the marks off ``paths`` (undoable like the others)."""
        gone = [p for p in map(str, paths) if p in self._by_path]
        self.history.append([(p, self._by_path.pop(p)) for p in gone])
        return len(gone)

    def undo(self) -> bool:
        """Undo the last change; False when there is none."""
        if not self.history:
            return False
        for path, previous in reversed(self.history.pop()):
            if previous is None:
                self._by_path.pop(path, None)
            else:
                self._by_path[path] = previous
        return True

    # ---- out ----------------------------------------------------------------------------------------------------
    def write_csv(self, path: str | Path, old_labels: dict[str, str]) -> Path:
        """path, old label, new label or "excluded" or "duplicate of PATH", note."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "old_label", "new_label", "note"])
            for e in self.edits:
                new = {"exclude": "excluded", "duplicate": f"duplicate of {e.of}"}.get(e.action, e.label)
                w.writerow([e.path, old_labels.get(e.path, ""), new, e.note])
        return Path(path)


def apply_edits(paths: list[str], labels, classes: list[str], edits: Edits):
    """(kept row indices, new labels of the kept rows, report) for a scan's relative paths and labels.

    A relabel must name one of ``classes``; edits of paths that are not in the folder are reported, not fatal."""
    import numpy as np

    labels = np.asarray(labels, np.int64)
    index = {c: i for i, c in enumerate(classes)}
    known = set(paths)
    unknown_labels = sorted({e.label for e in edits.edits if e.action == "relabel" and e.label not in index})
    if unknown_labels:
        raise EditsError(f"relabels to classes the folder does not have: {', '.join(unknown_labels)} (its classes: "
                         f"{', '.join(classes[:20])}{' ...' if len(classes) > 20 else ''})")
    keep, new = [], []
    excluded = relabelled = duplicates = 0
    for i, p in enumerate(paths):
        e = edits.get(p)
        if e is not None and e.action == "exclude":
            excluded += 1
            continue
        if e is not None and e.action == "duplicate":
            kept = edits.get(e.of) if e.of is not None else None
            if e.of in known and (kept is None or kept.action == "relabel"):
                duplicates += 1  # the image it duplicates stays: this copy goes
                continue
        keep.append(i)
        if e is not None and e.action == "relabel":
            relabelled += int(index[e.label] != labels[i])
            new.append(index[e.label])
        else:
            new.append(int(labels[i]))
    missing = sorted(p for p in (e.path for e in edits.edits) if p not in known)
    report = {"excluded": excluded, "relabelled": relabelled, "duplicates": duplicates, "missing": missing}
    return np.asarray(keep, np.int64), np.asarray(new, np.int64), report
