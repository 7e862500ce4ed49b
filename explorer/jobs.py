"""Background jobs for the GUI: plain functions run in a view's own thread pool, one live job per key.

A job is ``fn(*args, progress=cb, partial=cb, is_cancelled=cb)``; it never touches widgets. Its results go to the
callbacks given when it was submitted (``on_result``, ``on_partial``, ``on_progress``, ``on_failed``), on the GUI
thread, and to no one else. Submitting a new job under the same key cancels the old one (cooperatively, through
``is_cancelled``) and drops its late results, so a view only ever sees the answer to its latest question. Each view
owns a runner, so a long job of one view never queues another view's.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

__all__ = ["JobRunner", "JobCancelled"]

TRIM_AFTER_S = 0.25  # a job that ran this long gives the heap's free pages back to the system when it ends
_trim: list = []  # glibc's malloc_trim once looked up ([None] where there is none)


def give_back_free_memory() -> bool:
    """Return the free pages inside the heap to the system (glibc ``malloc_trim``); False where there is none.

    The analysis jobs allocate and free blocks of tens of MB from worker threads; glibc keeps what was freed inside
    its heaps, so the window's resident memory only grew (by 0.7 GB over the Triplets and Threshold tabs of a
    1e6 x 128 run, given back by one trim)."""
    if not _trim:
        import ctypes
        import ctypes.util

        fn = None
        try:
            name = ctypes.util.find_library("c")
            fn = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
        except OSError:
            fn = None
        if fn is not None:
            fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
        _trim.append(fn)
    fn = _trim[0]
    if fn is None:
        return False
    fn(0)
    return True


class JobCancelled(Exception):
    """Raised by a job (optionally) when it notices it was cancelled; treated as a quiet exit."""


class _Bridge(QObject):
    """Lives on the GUI thread; workers emit through it so delivery is queued onto the GUI thread."""

    finished = Signal(object, int, object)
    partial = Signal(object, int, object)
    progress = Signal(object, int, float, str)
    failed = Signal(object, int, str)
    done = Signal(object, int)


@dataclass
class _Job:
    key: Hashable
    generation: int
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    on_result: Callable[[Any], None] | None = None
    on_partial: Callable[[Any], None] | None = None
    on_progress: Callable[[float, str], None] | None = None
    on_failed: Callable[[str], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class _Runnable(QRunnable):
    def __init__(self, job: _Job, bridge: _Bridge, min_progress_interval: float) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the runner keeps the Python object alive until the job is done
        self.job = job
        self.bridge = bridge
        self.min_interval = min_progress_interval
        self._last_progress = 0.0

    def _progress(self, fraction: float, text: str = "") -> None:
        # Throttled: a tight loop reporting progress must not flood the GUI event queue.
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress < self.min_interval:
            return
        self._last_progress = now
        if not self.job.cancel.is_set():
            self.bridge.progress.emit(self.job.key, self.job.generation, float(fraction), str(text))

    def _partial(self, result: Any) -> None:
        if not self.job.cancel.is_set():
            self.bridge.partial.emit(self.job.key, self.job.generation, result)

    def run(self) -> None:  # noqa: D401 - Qt override
        job = self.job
        started = time.monotonic()
        try:
            if job.cancel.is_set():
                return
            result = job.fn(*job.args, progress=self._progress, partial=self._partial,
                            is_cancelled=job.cancel.is_set, **job.kwargs)
            if not job.cancel.is_set():
                self.bridge.finished.emit(job.key, job.generation, result)
        except JobCancelled:
            pass
        except Exception as exc:  # a failed job is reported, never raised into Qt's thread
            if not job.cancel.is_set():
                detail = traceback.format_exc(limit=6)
                self.bridge.failed.emit(job.key, job.generation, f"{type(exc).__name__}: {exc}\n{detail}")
        finally:
            if time.monotonic() - started >= TRIM_AFTER_S:
                give_back_free_memory()
            self.bridge.done.emit(job.key, job.generation)


class JobRunner(QObject):
    """Runs background jobs by key; a newer job with the same key supersedes (cancels) the older one."""

    def __init__(self, parent: QObject | None = None, *, max_threads: int = 2,
                 min_progress_interval: float = 0.05) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, max_threads))
        self._bridge = _Bridge(self)
        self._bridge.finished.connect(self._on_finished)
        self._bridge.partial.connect(self._on_partial)
        self._bridge.progress.connect(self._on_progress)
        self._bridge.failed.connect(self._on_failed)
        self._bridge.done.connect(self._on_done)
        self._generation: dict[Hashable, int] = {}
        self._current: dict[Hashable, _Job] = {}
        self._alive: dict[tuple[Hashable, int], _Runnable] = {}
        self._min_interval = min_progress_interval
        self._closed = False

    # ---- public API -------------------------------------------------------------------------------------------
    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any,
               on_result: Callable[[Any], None] | None = None, on_partial: Callable[[Any], None] | None = None,
               on_progress: Callable[[float, str], None] | None = None, on_failed: Callable[[str], None] | None = None,
               **kwargs: Any) -> int:
        """Run ``fn(*args, progress=, partial=, is_cancelled=, **kwargs)`` in the pool; cancel ``key``'s old job.
        Its result, partial results, progress (fraction 0..1, text) and failure message go to the given callbacks.

        After :meth:`shutdown` (the window is closing) a late request, e.g. from a debounce timer, is dropped: -1.
        """
        if self._closed:
            return -1
        self.cancel(key)
        gen = self._generation.get(key, 0) + 1
        self._generation[key] = gen
        job = _Job(key, gen, fn, args, kwargs, on_result, on_partial, on_progress, on_failed)
        self._current[key] = job
        runnable = _Runnable(job, self._bridge, self._min_interval)
        self._alive[(key, gen)] = runnable
        self._pool.start(runnable)
        return gen

    def cancel(self, key: Hashable) -> None:
        """Ask ``key``'s running job to stop and forget its results."""
        job = self._current.pop(key, None)
        if job is not None:
            job.cancel.set()
        if key in self._generation:
            self._generation[key] += 1  # anything still in flight for this key is now stale

    def is_running(self, key: Hashable) -> bool:
        """True while the latest job submitted under ``key`` has not delivered its result."""
        return key in self._current

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until all workers are done (tests, shutdown); queued results are delivered by the event loop."""
        return bool(self._pool.waitForDone(timeout_ms))

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Cancel everything and wait up to ``timeout`` seconds for the workers (connect to aboutToQuit)."""
        self._closed = True
        for key in list(self._current):
            self.cancel(key)
        self._pool.clear()  # jobs not started yet never start
        return bool(self._pool.waitForDone(int(timeout * 1000)))

    # ---- delivery (GUI thread) ---------------------------------------------------------------------------------
    def _stale(self, key: Hashable, gen: int) -> bool:
        return self._generation.get(key) != gen or key not in self._current

    @Slot(object, int, object)
    def _on_finished(self, key, gen, result) -> None:
        if self._stale(key, gen):
            return
        job = self._current.pop(key)
        if job.on_result is not None:
            job.on_result(result)

    @Slot(object, int, object)
    def _on_partial(self, key, gen, result) -> None:
        if not self._stale(key, gen) and self._current[key].on_partial is not None:
            self._current[key].on_partial(result)

    @Slot(object, int, float, str)
    def _on_progress(self, key, gen, fraction, text) -> None:
        if not self._stale(key, gen) and self._current[key].on_progress is not None:
            self._current[key].on_progress(fraction, text)

    @Slot(object, int, str)
    def _on_failed(self, key, gen, message) -> None:
        if self._stale(key, gen):
            return
        job = self._current.pop(key)
        if job.on_failed is not None:
            job.on_failed(message)

    @Slot(object, int)
    def _on_done(self, key, gen) -> None:
        self._alive.pop((key, gen), None)
        job = self._current.get(key)
        if job is not None and job.generation == gen:
            # the job returned without a result (cancelled itself): nothing more will come
            del self._current[key]
