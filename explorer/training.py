"""The GUI's handle on training: a trainer thread with stop/pause flags, and a follower for runs written elsewhere.

The trainer (``trainer.train.engine.Trainer``) runs in a plain ``threading.Thread`` and reports through its ``emit``
callback; every event is posted to the GUI thread through a queued signal and re-emitted as a typed Qt signal.
Committed epochs reach :class:`~explorer.state.AppState`. A run written by the command-line trainer is followed by
polling ``RunReader.refresh()`` on a timer.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot

from explorer.state import AppState
from trainer import events as ev
from trainer.config import TrainConfig

# The trainer thread (and the torch worker threads it starts) yields the CPU to the GUI thread when both want it:
# on two cores a 10 ms timer of the window fired up to 2 s late while the trainer and the map shared them.
TRAINER_NICE = 5


def lower_thread_priority(nice: int) -> bool:
    """Raise the calling thread's niceness by ``nice`` (Linux: per thread); False where that is not possible."""
    if not sys.platform.startswith("linux"):  # elsewhere a thread id is not a valid target of setpriority
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + int(nice))
        return True
    except (AttributeError, OSError):  # Windows, macOS (per-process only), or not permitted
        return False


TrainerFactory = Callable[..., Any]  # (cfg, run_dir, *, emit, stop, pause, resume) -> object with .run()
ReaderFactory = Callable[[Path], Any]  # run_dir -> RunReader


class _ThreadEnded:
    """Posted by the trainer thread as its very last message."""


def _default_trainer_factory(cfg: TrainConfig, run_dir: Path, **kwargs: Any) -> Any:
    from trainer.train.engine import Trainer  # imported late: torch is heavy and the GUI starts without it

    return Trainer(cfg, run_dir, **kwargs)


def _default_reader_factory(run_dir: Path) -> Any:
    from trainer.store import RunReader

    return RunReader(run_dir)


class TrainingController(QObject):
    """Owns the trainer thread and its stop/pause events; turns trainer events into Qt signals and state updates."""

    started = Signal(object)  # events.Started
    log = Signal(object)  # events.Log
    batch_done = Signal(object)  # events.BatchDone
    epoch_done = Signal(object)  # events.EpochDone
    snapshot_ready = Signal(object)  # events.SnapshotReady
    failed = Signal(object)  # events.Failed
    stopped = Signal(object)  # events.Stopped
    paused = Signal(bool)  # True when the loop is waiting, False when it runs again
    running_changed = Signal(bool)  # the trainer thread started (True) or ended (False)
    event = Signal(object)  # every trainer event, in order (for logs and tests)
    following_changed = Signal(object)  # Path of the run being followed, or None

    _posted = Signal(object)  # trainer thread -> GUI thread (queued)

    def __init__(self, state: AppState, parent: QObject | None = None, *,
                 trainer_factory: TrainerFactory | None = None,
                 reader_factory: ReaderFactory | None = None,
                 poll_interval_ms: int = 1000) -> None:
        super().__init__(parent)
        self.state = state
        self._trainer_factory = trainer_factory or _default_trainer_factory
        self._reader_factory = reader_factory or _default_reader_factory
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._run_dir: Path | None = None
        self._follow_dir: Path | None = None
        self._reader_dir: Path | None = None  # the run the state's reader belongs to
        self._terminal_seen = False
        self.last_event_time = 0.0
        self._posted.connect(self._on_posted, Qt.ConnectionType.QueuedConnection)
        self._timer = QTimer(self)
        self._timer.setInterval(poll_interval_ms)
        self._timer.timeout.connect(self.poll)

    # ---- training -------------------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path | None:
        """The run being trained (or last trained)."""
        return self._run_dir

    def is_running(self) -> bool:
        """True while the trainer thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False) -> None:
        """Start training ``cfg`` into ``run_dir`` in a background thread; refuses if a run is already going."""
        if self.is_running():
            raise RuntimeError("a training run is already in progress; stop it first")
        self.unfollow()
        self._run_dir = Path(run_dir)
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._terminal_seen = False
        stop, pause = self._stop, self._pause

        def target() -> None:
            lower_thread_priority(TRAINER_NICE)
            try:
                trainer = self._trainer_factory(cfg, self._run_dir, emit=self._posted.emit, stop=stop,
                                                pause=pause, resume=resume)
                trainer.run()
            except BaseException as exc:  # Trainer.run never raises by contract; a bug must still reach the user
                self._posted.emit(ev.Failed(f"The trainer crashed: {type(exc).__name__}: {exc}",
                                            traceback.format_exc()))
            finally:
                self._posted.emit(_ThreadEnded())

        self._thread = threading.Thread(target=target, name="embedding-explorer-trainer", daemon=True)
        self._thread.start()
        self.running_changed.emit(True)

    def pause(self) -> None:
        """Ask the loop to wait between batches."""
        if self.is_running() and not self._pause.is_set():
            self._pause.set()

    def resume(self) -> None:
        """Let a paused loop continue."""
        if self._pause.is_set():
            self._pause.clear()

    def set_paused(self, paused: bool) -> None:
        self.pause() if paused else self.resume()

    def stop(self) -> None:
        """Ask the loop to stop within one batch (it commits nothing half-written)."""
        self._stop.set()
        self._pause.clear()  # a paused loop must wake up to notice the stop

    def stopping(self) -> bool:
        """True once a stop was asked for and the trainer has not ended yet."""
        return self._stop.is_set() and self.is_running()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the trainer thread; True if it has ended."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def shutdown(self, timeout: float = 15.0) -> bool:
        """Stop following, stop the trainer and wait up to ``timeout`` seconds (window close, aboutToQuit)."""
        self._timer.stop()
        if not self.is_running():
            return True
        self.stop()
        return self.join(timeout)

    # ---- following a run written by someone else (the CLI) ----------------------------------------------------
    @property
    def following(self) -> Path | None:
        return self._follow_dir

    def follow(self, run_dir: str | Path) -> None:
        """Poll ``run_dir`` every interval and push newly committed epochs to the state."""
        self._follow_dir = Path(run_dir)
        self._timer.start()
        self.following_changed.emit(self._follow_dir)

    def unfollow(self) -> None:
        if self._follow_dir is not None:
            self._follow_dir = None
            self._timer.stop()
            self.following_changed.emit(None)

    @Slot()
    def poll(self) -> list[int]:
        """Refresh the state's reader once; returns the new epochs (also used by the follow timer)."""
        run = self.state.run
        if run is None:
            if self._follow_dir is None:
                return []
            try:  # the CLI may not have committed its manifest yet
                self._open_reader(self._follow_dir)
            except Exception:
                return []
            return list(self.state.epochs)
        try:
            new = list(run.refresh())
        except Exception as exc:  # e.g. the run folder was deleted: say so once, stop polling
            self.log.emit(ev.Log(f"Stopped following the run: {exc}", "warning"))
            self.unfollow()
            return []
        if new:
            self.state.add_epochs(new)
        return new

    # ---- delivery on the GUI thread ---------------------------------------------------------------------------
    def _open_reader(self, run_dir: Path) -> None:
        reader = self._reader_factory(run_dir)
        self._reader_dir = Path(run_dir)
        self.state.set_run(reader)

    @Slot(object)
    def _on_posted(self, event: object) -> None:
        self.last_event_time = time.monotonic()
        if isinstance(event, _ThreadEnded):
            if self._thread is not None:  # it posted this as its last act: let it finish, so is_running() is False
                self._thread.join(timeout=2.0)
            if not self._terminal_seen:
                # the loop ended without saying why (a bug): never leave the user with a silent hang
                self._terminal_seen = True
                self.stopped.emit(ev.Stopped(self.state.epochs[-1] if self.state.epochs else -1,
                                             "ended", self._run_dir))
            self.running_changed.emit(False)
            return
        self.event.emit(event)
        if isinstance(event, ev.BatchDone):
            self.batch_done.emit(event)
        elif isinstance(event, ev.Log):
            self.log.emit(event)
        elif isinstance(event, ev.EpochDone):
            self.epoch_done.emit(event)
        elif isinstance(event, ev.SnapshotReady):
            self._on_snapshot(event)
            self.snapshot_ready.emit(event)
        elif isinstance(event, ev.Started):
            self.started.emit(event)
        elif isinstance(event, ev.Paused):
            self.paused.emit(bool(event.paused))
        elif isinstance(event, ev.Failed):
            self._terminal_seen = True
            self.failed.emit(event)
        elif isinstance(event, ev.Stopped):
            self._terminal_seen = True
            self.stopped.emit(event)

    def _on_snapshot(self, snap: ev.SnapshotReady) -> None:
        run_dir = Path(snap.run_dir)
        try:
            if self.state.run is None or self._reader_dir != run_dir:
                self._open_reader(run_dir)  # the run's first committed epoch: the views may open it now
            else:
                self.state.run.refresh()
            self.state.add_epochs([int(snap.epoch)])
        except Exception as exc:
            self.log.emit(ev.Log(f"Could not open epoch {snap.epoch} of {run_dir}: {exc}", "error"))

    def note_run_opened(self, run_dir: str | Path) -> None:
        """Tell the controller the state's reader now belongs to ``run_dir`` (opened from the File menu)."""
        self._reader_dir = Path(run_dir)
