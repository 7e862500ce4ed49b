"""What every analysis view (neighbours, triplets, threshold) sets up the same way: its state, its own job runner,
its thumbnail cache, its job key, and its subscriptions to the shared AppState."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QLabel, QProgressBar, QWidget

from explorer.jobs import JobRunner
from explorer.state import AppState


def setup_view(view: QWidget, state: AppState, jobs: JobRunner | None, thumbnails: Any, *, name: str,
               thumb_px: int) -> None:
    """``view.state``, ``view.jobs`` (its own runner unless one is given), ``view.thumbs`` (its own cache of
    ``thumb_px`` thumbnails unless one is shared), ``view._key`` (unique per view) and ``view.run``."""
    from explorer.widgets.thumbnails import ThumbnailCache

    view.state = state
    view.jobs = jobs if jobs is not None else JobRunner(view, max_threads=2)
    view._own_thumbs = thumbnails is None
    view.thumbs = thumbnails if thumbnails is not None else ThumbnailCache(view, size_px=thumb_px)
    view._key = f"{name}-{id(view)}"
    view.run = None


def subscribe(view: QWidget, state: AppState, *, replay: tuple[str, ...] = ("run_changed",),
              **slots: Callable[..., None]) -> None:
    """Connect ``state.<signal>`` to each slot and the thumbnail cache to ``view._on_thumb``; when a run is
    already open, call the slots named in ``replay`` with the state's current run and epoch."""
    for signal, slot in slots.items():
        getattr(state, signal).connect(slot)
    view.thumbs.ready.connect(view._on_thumb)
    if state.run is not None:
        current = {"run_changed": state.run, "epoch_changed": state.epoch}
        for signal in replay:
            slots[signal](current[signal])


def job_reporting(bar: QProgressBar, label: QLabel, failure: str) -> dict[str, Callable[..., None]]:
    """``on_progress`` / ``on_failed`` callbacks for a view's jobs: the bar shows the fraction and the step; a failure
    hides it and writes ``failure`` + the message's first line into ``label`` (the whole message in its tooltip)."""

    def on_progress(fraction: float, text: str) -> None:
        bar.show()
        bar.setValue(int(100 * fraction))
        bar.setFormat(text or "%p%")

    def on_failed(message: str) -> None:
        bar.hide()
        label.setText(failure + (message.splitlines()[0] if message else "unknown error"))
        label.setToolTip(message)

    return {"on_progress": on_progress, "on_failed": on_failed}
