"""The training loop as a small engine: it runs epochs of batches and fires events; everything else (the NaN
guard, telemetry, evaluation, the epoch commit, checkpoints) is a handler of those events (trainer/train/handlers.py),
as in Ignite. Stop and pause are checked between batches by ``check_control``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

import numpy as np
import torch


class Event(Enum):
    EPOCH_STARTED = auto()
    LOSS_COMPUTED = auto()  # after the forward pass and the loss, before the backward pass
    BATCH_COMPLETED = auto()  # after the optimiser step
    EPOCH_EMBEDDED = auto()  # every image embedded (on rank 0; None elsewhere)
    EPOCH_COMPLETED = auto()


@dataclass
class LoopState:
    """What the handlers see: the current epoch and batch, and what the loop computed for them."""

    batches_per_epoch: int
    epoch: int = -1
    batch: int = -1
    ids: np.ndarray | None = None  # global sample ids of the batch
    embeddings_batch: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    tuples: Any = None  # the miner's tuples, None without a miner
    loss: torch.Tensor | None = None
    lr: float = 0.0
    embeddings: np.ndarray | None = None  # every image of the epoch, in sample order
    metrics: dict[str, float] = field(default_factory=dict)
    epoch_started: float = 0.0
    run_started: float = 0.0


Handler = Callable[[LoopState], None]


class Loop:
    """Epoch 0 embeds the untrained network; epochs 1.. train a pass of batches first.

    ``forward(state, batch)`` sets ``embeddings_batch``, ``labels``, ``tuples`` and ``loss``; ``update(state)``
    runs the backward pass and the optimiser step; ``embed()`` returns every image's embedding (or None)."""

    def __init__(self, *, batches: Callable[[int], Iterable], forward: Callable[[LoopState, Any], None],
                 update: Callable[[LoopState], None], embed: Callable[[], np.ndarray | None],
                 check_control: Callable[[], None]) -> None:
        self.batches, self.forward, self.update, self.embed = batches, forward, update, embed
        self.check_control = check_control
        self._handlers: dict[Event, list[Handler]] = {e: [] for e in Event}

    def on(self, event: Event, handler: Handler) -> "Loop":
        """Call ``handler(state)`` at ``event``, after the handlers registered before it."""
        self._handlers[event].append(handler)
        return self

    def fire(self, event: Event, state: LoopState) -> None:
        for handler in self._handlers[event]:
            handler(state)

    def run(self, state: LoopState, epochs: Iterable[int]) -> None:
        state.run_started = time.perf_counter()
        for epoch in epochs:
            state.epoch, state.epoch_started = epoch, time.perf_counter()
            state.embeddings, state.metrics = None, {}
            self.fire(Event.EPOCH_STARTED, state)
            if epoch > 0:  # epoch 0 is the untrained network
                for b, batch in enumerate(self.batches(epoch)):
                    self.check_control()
                    state.batch = b
                    self.forward(state, batch)
                    self.fire(Event.LOSS_COMPUTED, state)
                    self.update(state)
                    self.fire(Event.BATCH_COMPLETED, state)
            self.check_control()
            state.embeddings = self.embed()
            self.fire(Event.EPOCH_EMBEDDED, state)
            self.fire(Event.EPOCH_COMPLETED, state)
