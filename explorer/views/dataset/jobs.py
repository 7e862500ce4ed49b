"""The dataset view's background work (no Qt): the folder scan and a few thumbnails per class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
import numpy as np

THUMB_PX = 56
THUMBS_PER_CLASS = 8  # a class is judged at a glance by a row of its images (four were too few)
MAX_CLASSES_WITH_THUMBS = 300


@dataclass
class ScanReport:
    """What the scan job hands back to the GUI thread: the scan or its error, plus thumbnails as arrays."""

    root: Path
    scan: Any = None  # trainer.data.scan.ScanResult
    error: str = ""
    partial: Any = None  # with an error: what the listing found (its skipped files and why), if it got that far
    thumbnails: dict[str, list[np.ndarray]] = field(default_factory=dict)  # class -> RGB uint8 (h, w, 3)


def scan_job(root: Path, *, progress: Callable[[float, str], None], partial: Callable[[Any], None],
             is_cancelled: Callable[[], bool], scan_fn: Callable[..., Any] | None = None) -> ScanReport:
    """Scan ``root`` and make a few thumbnails per class; a bad folder comes back as ``error``, not an exception."""
    from trainer.data.images import make_thumbnail
    from trainer.data.scan import scan_folder

    scan_fn = scan_fn or scan_folder
    report = ScanReport(Path(root))

    def on_progress(done: int, total: int) -> None:
        progress(0.9 * done / max(1, total), f"scanning {done}/{total} files")

    try:
        scan = scan_fn(root, progress=on_progress)
    except (ValueError, OSError) as exc:  # ScanError is a ValueError: missing root, fewer than two classes, ...
        report.error = str(exc) or type(exc).__name__
        report.partial = getattr(exc, "result", None)
        return report
    report.scan = scan
    labels = np.asarray(scan.labels)
    n_classes = min(len(scan.classes), MAX_CLASSES_WITH_THUMBS)
    for c in range(n_classes):
        if is_cancelled():
            return report
        name = scan.classes[c]
        report.thumbnails[name] = []
        for i in np.flatnonzero(labels == c)[:THUMBS_PER_CLASS]:
            try:
                img = make_thumbnail(scan.abspath(int(i)), THUMB_PX).convert("RGB")
            except Exception:  # a thumbnail is a nicety; the scan already vetted the file
                continue
            report.thumbnails[name].append(np.ascontiguousarray(np.asarray(img, dtype=np.uint8)))
        progress(0.9 + 0.1 * (c + 1) / max(1, n_classes), "thumbnails")
    return report
