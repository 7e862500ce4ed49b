"""The projection's child process: requests in, layouts out; restarted when it dies.
"""

from __future__ import annotations

import os
import pickle
import threading
import time

import numpy as np

from trainer.analysis.projection import (
    CancelFn,
    Layout,
    ProgressFn,
    ProjectionCancelled,
    project,
    warm_up,
)

# ---------------------------------------------------------------------------------------------------------------
# A long-lived child process for UMAP / t-SNE
# ---------------------------------------------------------------------------------------------------------------
WORKER_NICE = 10  # scheduling niceness of the projection process (Unix)


def _send_request(conn, msg) -> None:
    """Send one request to the child with its arrays out of band (pickle protocol 5).

    ``conn.send`` would pickle a 1e6 x 128 epoch into one 512 MB bytes object first, holding the GIL for about a
    second: the GUI thread stood still for that long when a map of a million images started. Here the pickle holds
    only the small parts; each array goes as its own message, written straight from its memory by ``os.write``,
    which releases the GIL."""
    buffers: list = []
    head = pickle.dumps(msg, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    conn.send(([v.nbytes for v in views], head))
    for v in views:
        conn.send_bytes(v)


def _recv_request(conn):
    """The child's side of :func:`_send_request`: arrays come back writable, in buffers of their own."""
    sizes, head = conn.recv()
    buffers = []
    for size in sizes:
        buf = bytearray(size)
        conn.recv_bytes_into(buf)
        buffers.append(buf)
    return pickle.loads(head, buffers=buffers)


def _worker_main(conn) -> None:
    """Child process loop: requests ``(rid, op, kwargs)`` in, ``(kind, rid, payload)`` out, until EOF or None.

    Runs UMAP/t-SNE here so numba never holds the GUI process's GIL. A reader thread takes ``(rid, "cancel",
    target)`` messages while a fit runs, and the fit stops at its next epoch. Imports nothing but numpy,
    umap-learn, faiss and this module (spawned children re-import only what they unpickle).
    """
    import queue

    try:  # the map can wait; the window it feeds must not: yield the CPU to the GUI process when both want it
        os.nice(WORKER_NICE)
    except (AttributeError, OSError):  # pragma: no cover - Windows
        pass
    requests: "queue.Queue" = queue.Queue()
    cancelled: set[int] = set()
    send_lock = threading.Lock()

    def send(msg) -> None:
        with send_lock:
            conn.send(msg)

    def reader() -> None:
        while True:
            try:
                msg = _recv_request(conn)
            except (EOFError, OSError):
                msg = None
            if msg is None:
                requests.put(None)
                return
            if msg[1] == "cancel":
                cancelled.add(msg[2])
            else:
                requests.put(msg)

    threading.Thread(target=reader, name="requests", daemon=True).start()
    while True:
        msg = requests.get()
        if msg is None:
            return
        rid, op, kwargs = msg

        def progress(fraction: float, text: str = "", _rid=rid) -> None:
            send(("progress", _rid, (float(fraction), str(text))))

        try:
            if rid in cancelled:
                raise ProjectionCancelled()
            if op == "warm_up":
                result = warm_up()
            elif op == "project":
                result = project(progress=progress, is_cancelled=lambda _rid=rid: _rid in cancelled, **kwargs)
            elif op == "ping":
                result = os.getpid()
            else:
                raise ValueError(f"unknown request {op!r}")
            send(("ok", rid, result))
        except ProjectionCancelled:
            send(("cancelled", rid, None))
        except Exception as exc:  # reported to the caller, the process lives on
            import traceback

            send(("error", rid, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"))
        cancelled.discard(rid)


def _stop_process(proc, conn, timeout: float) -> None:
    """Ask the child to exit, then terminate / kill it if it does not within ``timeout`` seconds."""
    try:
        _send_request(conn, None)
    except (OSError, ValueError, BrokenPipeError):
        pass
    proc.join(min(timeout, 0.2))
    if proc.is_alive():  # busy in a long fit: it cannot read the request
        proc.terminate()
        proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join(1.0)
    try:
        conn.close()
    except OSError:
        pass


class WorkerDied(RuntimeError):
    """The child process went away while it worked on a request (``cause``: why, as far as it can be told)."""

    def __init__(self, cause: str, again: bool = False) -> None:
        self.cause = cause
        what = "ended unexpectedly again, in the process started anew for this map" if again else "ended unexpectedly"
        super().__init__(f"the projection process {what} ({cause}); it is restarted on the next map")


class ProjectionWorker:
    """UMAP / t-SNE in one long-lived ``spawn`` child process, compiled (warmed up) once when it starts.

    :meth:`project` blocks the calling (background) thread, not the GUI: the child holds its own GIL. A cancelled
    call returns at once; the child finishes the abandoned fit and its late answer is dropped. Thread-safe.
    """

    def __init__(self, *, warm: bool = True, start: bool = True) -> None:
        self._warm_on_start = warm
        self._lock = threading.Lock()  # one caller talks to the pipe at a time
        self._send_lock = threading.Lock()  # the messages of one request go out together
        self._proc = None
        self._conn = None
        self._next_id = 0
        self._abandoned: set[int] = set()
        self._warmed = threading.Event()
        self._finalizer = None
        self.closed = False
        self.restarts = 0  # requests sent again to a fresh child after one died under them
        if start:
            self.start()

    # ---- life cycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn the child (if not running) and queue its warm-up, which runs while the caller goes on."""
        import multiprocessing as mp
        import weakref

        if self.closed:
            raise RuntimeError("ProjectionWorker is closed")
        if self._proc is not None and self._proc.is_alive():
            return
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_worker_main, args=(child,), name="embedding-explorer-projection", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self._abandoned.clear()
        self._warmed.clear()
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _stop_process, proc, parent, 1.0)
        if self._warm_on_start:
            self._abandoned.add(self._send("warm_up", {}))  # nobody waits for it; the reply marks it warm

    def close(self, timeout: float = 2.0) -> None:
        """Stop the child promptly (terminated if it is in the middle of a fit); safe to call twice."""
        self.closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None:
            _stop_process(self._proc, self._conn, timeout)
        self._proc = self._conn = None

    @property
    def pid(self) -> int | None:
        """The child's process id (None when not running)."""
        return None if self._proc is None else self._proc.pid

    def is_alive(self) -> bool:
        """True while the child process runs."""
        return self._proc is not None and self._proc.is_alive()

    def is_warm(self) -> bool:
        """True once the child has reported its warm-up done."""
        return self._warmed.is_set()

    # ---- calls ---------------------------------------------------------------------------------------------
    def _ended_why(self) -> str:
        """Why the child went away, as far as can be told; forgets it (the next call starts a new one).

        The pipe closes before the kernel has reaped the child, so its exit code is waited for briefly (a report
        once read "exit code None" for a child that had died)."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            proc.join(1.0)
            code = proc.exitcode
        if code is None:
            why = "its pipe closed while it still ran" if proc is not None else "it was shut down"
        elif code < 0:
            import signal

            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            why = f"killed by {name}" + (" (the system ran out of memory?)" if -code == signal.SIGKILL else
                                         " (a crash in native code)" if -code in (signal.SIGSEGV, signal.SIGABRT)
                                         else "")
        else:
            why = f"exit code {code}"
        return why

    def _send(self, op: str, kwargs) -> int:
        with self._send_lock:  # a request's messages must not interleave with another's
            self._next_id += 1
            _send_request(self._conn, (self._next_id, op, kwargs))
            return self._next_id

    def call(self, op: str, kwargs: dict | None = None, *, progress: ProgressFn | None = None,
             is_cancelled: CancelFn | None = None, timeout: float | None = None, retries: int = 0):
        """Run request ``op`` in the child and return its result; raises ProjectionCancelled when cancelled.

        ``retries``: how many times the request is sent again, to a fresh child, when the child dies while it
        works on it (a map must not be lost to one crash; its request is the same again). The error says why
        the child went away the last time."""
        cancelled = is_cancelled or (lambda: False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._lock.acquire(timeout=0.05):
            if cancelled():
                raise ProjectionCancelled()
        try:
            attempt = 0
            while True:
                try:
                    return self._call_locked(op, kwargs or {}, progress, cancelled, deadline, timeout)
                except WorkerDied as died:
                    attempt += 1
                    if self.closed or attempt > retries:
                        if attempt > 1:
                            raise WorkerDied(died.cause, again=True) from None
                        raise
                    self.restarts += 1
                    if progress is not None:
                        progress(0.0, f"the projection process ended ({died.cause}); starting it again")
        finally:
            self._lock.release()

    def _call_locked(self, op: str, kwargs: dict, progress, cancelled, deadline, timeout):
        """One attempt of :meth:`call` (its lock held)."""
        if self.closed:
            raise RuntimeError("the projection process was shut down")
        if not self.is_alive():
            self.start()
        rid = self._send(op, kwargs)
        while True:
            if cancelled():
                self._abandoned.add(rid)
                self._send("cancel", rid)  # the child stops the fit at its next epoch
                raise ProjectionCancelled()
            if deadline is not None and time.monotonic() > deadline:
                self._abandoned.add(rid)
                raise TimeoutError(f"the projection process did not answer {op!r} within {timeout} s")
            try:
                ready = self._conn.poll(0.05)
                if not ready:
                    if not self._proc.is_alive():
                        raise EOFError
                    continue
                kind, got, payload = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                raise WorkerDied(self._ended_why()) from None
            if kind == "ok" and got in self._abandoned and isinstance(payload, float):
                self._warmed.set()  # only warm_up answers with a float
            if got != rid:  # a late message of an abandoned request
                if kind != "progress":
                    self._abandoned.discard(got)
                continue
            if kind == "progress":
                if progress is not None:
                    progress(*payload)
                continue
            if kind == "error":
                raise RuntimeError(payload)
            return payload

    def warm_up(self, timeout: float | None = None) -> float:
        """Block until the child is compiled (its warm-up done); returns the seconds its warm-up took."""
        secs = self.call("warm_up", timeout=timeout)
        self._warmed.set()
        return float(secs)

    def project(self, embeddings: np.ndarray, method: str = "umap", *, progress: ProgressFn | None = None,
                is_cancelled: CancelFn | None = None, **kwargs) -> Layout:
        """:func:`project` in the child process (same arguments); the result is the same Layout."""
        kwargs = dict(kwargs, embeddings=np.ascontiguousarray(embeddings, dtype=np.float32), method=method)
        return self.call("project", kwargs, progress=progress, is_cancelled=is_cancelled, retries=1)
