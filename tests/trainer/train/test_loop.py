"""The loop engine fires its events in order, stops between batches, and its handlers each do their one job."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.errors import TrainingError
from trainer.train.handlers import NanGuard, Telemetry, count_tuples, mined_rows
from trainer.train.loop import Event, Loop, LoopState


class _Stop(Exception):
    pass


def _loop(calls, *, batches=2, stop_after=None, loss=1.0):
    seen = {"batches": 0}

    def control():
        if stop_after is not None and seen["batches"] >= stop_after:
            raise _Stop

    def forward(s, batch):
        seen["batches"] += 1
        calls.append(("forward", s.epoch, s.batch))
        s.loss = torch.tensor(loss)

    loop = Loop(batches=lambda e: range(batches), forward=forward, update=lambda s: calls.append(("update", s.epoch)),
                embed=lambda: np.zeros((3, 2), np.float32), check_control=control)
    for event in Event:
        loop.on(event, lambda s, event=event: calls.append((event.name, s.epoch)))
    return loop


def test_events_come_in_order_and_epoch_zero_only_embeds():
    calls: list = []
    _loop(calls).run(LoopState(batches_per_epoch=2), range(0, 2))
    assert calls == [
        ("EPOCH_STARTED", 0), ("EPOCH_EMBEDDED", 0), ("EPOCH_COMPLETED", 0),
        ("EPOCH_STARTED", 1),
        ("forward", 1, 0), ("LOSS_COMPUTED", 1), ("update", 1), ("BATCH_COMPLETED", 1),
        ("forward", 1, 1), ("LOSS_COMPUTED", 1), ("update", 1), ("BATCH_COMPLETED", 1),
        ("EPOCH_EMBEDDED", 1), ("EPOCH_COMPLETED", 1),
    ]


def test_a_stop_between_batches_ends_the_epoch_before_its_commit():
    calls: list = []
    with pytest.raises(_Stop):
        _loop(calls, batches=5, stop_after=2).run(LoopState(batches_per_epoch=5), range(1, 3))
    assert [c for c in calls if c[0] == "forward"] == [("forward", 1, 0), ("forward", 1, 1)]
    assert ("EPOCH_COMPLETED", 1) not in calls


def test_the_nan_guard_stops_before_the_update():
    calls: list = []
    loop = _loop(calls, loss=float("nan"))
    NanGuard(lr=0.01).attach(loop)
    with pytest.raises(TrainingError, match="loss became nan at epoch 1, batch 0.*lower learning rate \\(now 0.01\\)"):
        loop.run(LoopState(batches_per_epoch=2), [1])
    assert ("update", 1) not in calls
    guard = NanGuard(lr=0.01)
    s = LoopState(batches_per_epoch=1, epoch=3, embeddings=np.array([[0.0, np.inf]], np.float32))
    with pytest.raises(TrainingError, match="embeddings of epoch 3 contain NaN or Inf"):
        guard.check_embeddings(s)


def test_telemetry_counts_each_batch_and_keeps_the_last_mined_tuples():
    events: list = []
    tel = Telemetry(events.append, margin=0.1, metric="euclidean")
    emb = torch.tensor([[0.0, 0.0], [0.0, 0.1], [1.0, 0.0], [1.0, 0.1]])
    y = torch.tensor([0, 0, 1, 1])
    tuples = (torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 3]))
    s = LoopState(batches_per_epoch=1, epoch=1, batch=0, ids=np.array([10, 11, 12, 13]), embeddings_batch=emb,
                  labels=y, tuples=tuples, loss=torch.tensor(0.5), lr=1e-3)
    tel.reset(s)
    tel.record(s)
    arrays = tel.arrays()
    assert arrays["loss"].tolist() == [0.5] and arrays["n_tuples"].tolist() == [2]
    # 4 anchors x 1 positive x 2 negatives, all far beyond the margin: 8 easy triplets (PML's rule)
    assert (arrays["n_easy"][0], arrays["n_semihard"][0], arrays["n_hard"][0]) == (8, 0, 0)
    assert arrays["mined_anchor"].tolist() == [10, 11] and arrays["mined_negative"].tolist() == [12, 13]
    assert events[0].n_easy == 8 and events[0].batch == 0
    pairs = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2, 3]), torch.tensor([0, 1]))
    assert count_tuples(pairs) == 3 and count_tuples(None) == 0
    rows = mined_rows(4, pairs, np.array([10, 11, 12, 13]))
    assert rows.tolist() == [[4, 10, 11, -1], [4, 12, -1, 10], [4, 13, -1, 11]]
