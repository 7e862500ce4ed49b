"""Thumbnail cache shared by the views: images decoded in background threads, kept in an in-memory LRU.

Workers only decode (PIL -> numpy RGB); the QPixmap is made on the GUI thread (pixmaps are GUI-thread objects)
and handed out through ``ready(sample_id, QPixmap)``. Paths come from the run's SampleTable:
``roots[root_index[i]] / paths[i]``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QImage, QPixmap

__all__ = ["ThumbnailCache", "load_thumbnail_array", "sample_path"]


def sample_path(samples, i: int) -> Path:
    """The file of sample ``i`` of a SampleTable (absolute paths in ``paths`` are kept as they are)."""
    root = samples.roots[int(samples.root_index[i])] if len(samples.roots) else ""
    return Path(root) / samples.paths[int(i)]


def load_thumbnail_array(path: Path, size_px: int) -> np.ndarray:
    """Decode ``path`` into an RGB uint8 (h, w, 3) thumbnail fitting in size_px; errors name the file."""
    from trainer.data.images import make_thumbnail

    img = make_thumbnail(path, size_px)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def array_to_pixmap(arr: np.ndarray) -> QPixmap:
    """RGB uint8 (h, w, 3) -> QPixmap (GUI thread only)."""
    h, w = arr.shape[:2]
    img = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(img.copy())  # copy: the QImage must not outlive the numpy buffer


class _Bridge(QObject):
    loaded = Signal(int, int, object)  # generation, sample id, RGB array
    error = Signal(int, int, str)


class ThumbnailCache(QObject):
    """Asynchronous thumbnails by sample id: ``request(i)`` returns a cached QPixmap or None and emits ``ready`` later."""

    ready = Signal(int, QPixmap)  # sample id, pixmap
    failed = Signal(int, str)  # sample id, message naming the file and the reason

    def __init__(self, parent: QObject | None = None, *, size_px: int = 128, capacity: int = 512,
                 workers: int = 2) -> None:
        super().__init__(parent)
        self.size_px = int(size_px)
        self.capacity = int(capacity)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="thumbs")
        self._lru: OrderedDict[int, QPixmap] = OrderedDict()
        self._pending: set[int] = set()
        self._errors: dict[int, str] = {}
        self._samples = None
        self._generation = 0
        self._lock = threading.Lock()
        self._bridge = _Bridge(self)
        self._bridge.loaded.connect(self._on_loaded)
        self._bridge.error.connect(self._on_error)

    def set_samples(self, samples) -> None:
        """Use this SampleTable (a new run): forget cached images and drop results still in flight."""
        self._samples = samples
        self._generation += 1
        self._lru.clear()
        self._pending.clear()
        self._errors.clear()

    def path(self, sample_id: int) -> Path | None:
        """File of ``sample_id`` in the current run, or None without a run."""
        if self._samples is None:
            return None
        return sample_path(self._samples, sample_id)

    def get(self, sample_id: int) -> QPixmap | None:
        """The cached pixmap, or None (does not load)."""
        pm = self._lru.get(int(sample_id))
        if pm is not None:
            self._lru.move_to_end(int(sample_id))
        return pm

    def error(self, sample_id: int) -> str | None:
        """Why the thumbnail of ``sample_id`` could not be made, if it failed."""
        return self._errors.get(int(sample_id))

    def request(self, sample_id: int) -> QPixmap | None:
        """Return the pixmap if cached; otherwise start loading it and emit ``ready`` when done."""
        sid = int(sample_id)
        pm = self.get(sid)
        if pm is not None or sid in self._pending or sid in self._errors:
            return pm
        path = self.path(sid)
        if path is None:
            return None
        self._pending.add(sid)
        self._pool.submit(self._work, self._generation, sid, path)
        return None

    def _work(self, generation: int, sid: int, path: Path) -> None:
        if generation != self._generation:
            return
        try:
            arr = load_thumbnail_array(path, self.size_px)
        except Exception as exc:  # reported, never raised into the pool
            msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            self._bridge.error.emit(generation, sid, msg)
            return
        self._bridge.loaded.emit(generation, sid, arr)

    @Slot(int, int, object)
    def _on_loaded(self, generation: int, sid: int, arr: np.ndarray) -> None:
        if generation != self._generation:
            return
        self._pending.discard(sid)
        pm = array_to_pixmap(arr)
        self._lru[sid] = pm
        self._lru.move_to_end(sid)
        while len(self._lru) > self.capacity:
            self._lru.popitem(last=False)
        self.ready.emit(sid, pm)

    @Slot(int, int, str)
    def _on_error(self, generation: int, sid: int, message: str) -> None:
        if generation != self._generation:
            return
        self._pending.discard(sid)
        self._errors[sid] = message
        self.failed.emit(sid, message)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the worker threads (pending loads are dropped)."""
        self._generation += 1
        self._pool.shutdown(wait=wait, cancel_futures=True)
