"""Distributed training (torchrun, 2 CPU processes over gloo) against one process on the same global batch;
class-stratified pair sampling (trainer/sampling.py) against plain loops over every pair (at the end).

BatchNorm: small_cnn has BN layers, and on CPU each rank normalises its own share of the batch (SyncBatchNorm is
CUDA-only, and is used there). The comparison therefore freezes the backbone (``--freeze-backbone-epochs``), which
puts its BN in eval mode, and trains the head only: that part of the computation is then the same function on both
sides, so the per-batch loss must agree to float32 round-off (tolerance 1e-4 absolute + 1e-3 relative; the sums run
in a different order after the gather). With BN in train mode the two runs differ by design, not by a bug.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.train import distributed
from trainer import events as ev
from trainer.data.loader import ClassBalancedBatchSampler
from trainer.config import TrainConfig
from trainer.store import RunReader

from tests.support.runs import make_folder, run_collect, tiny_config
from tests.support import ROOT

EPOCHS, BATCHES, C, K = 2, 4, 3, 4  # C = 3 classes over 2 ranks: uneven shares, the gather pads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flags(data: Path, out: Path) -> list[str]:
    return [str(ROOT / "main.py"), "train", str(data), "--out", str(out), "--backbone", "small_cnn", "--no-pretrained",
            "--image-size", "24", "--embedding-dim", "16", "--batch-classes", str(C), "--batch-per-class", str(K),
            "--batches-per-epoch", str(BATCHES), "--lr", "1e-3", "--loss", "triplet", "--miner", "semihard_triplets",
            "--device", "cpu", "--amp", "off", "--seed", "3", "--workers", "0", "--no-augment",
            "--holdout-fraction", "0.34", "--quiet", "--epochs", str(EPOCHS),
            "--freeze-backbone-epochs", str(EPOCHS)]


def _single_config(data: Path):
    return tiny_config(data, **{"data.batch_classes": C, "data.batch_per_class": K, "optim.batches_per_epoch": BATCHES,
                                "optim.epochs": EPOCHS, "model.freeze_backbone_epochs": EPOCHS})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 2-process torchrun run and the same run in one process (module-scoped: the launch costs ~20 s)."""
    base = tmp_path_factory.mktemp("dist")
    data = make_folder(base / "data")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", EE_DIST_TIMEOUT_S="120")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", *_flags(data, base / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # the same settings in one process: the command line left some to the recipe, so take the config it stored
    stored = TrainConfig.from_dict(RunReader(base / "two").config).replace(auto=())
    events = run_collect(stored, base / "one")
    assert not [e for e in events if isinstance(e, ev.Failed)]
    return base / "two", base / "one", proc.stdout + proc.stderr


def test_two_processes_train_like_one_on_the_same_global_batch(runs):
    two, one, _ = runs
    a, b = RunReader(two), RunReader(one)
    assert a.epochs == b.epochs == list(range(EPOCHS + 1))
    assert json.loads((two / distributed.DIST_FILE).read_text())["world_size"] == 2
    for e in range(1, EPOCHS + 1):
        ea, eb = a.load_epoch(e), b.load_epoch(e)
        assert len(ea.telemetry["loss"]) == BATCHES
        # the loss curve of the gathered global batch equals the single-process one
        np.testing.assert_allclose(ea.telemetry["loss"], eb.telemetry["loss"], rtol=1e-3, atol=1e-4)
        # every rank mined the whole global batch: same tuple counts as one process
        np.testing.assert_array_equal(ea.telemetry["n_tuples"], eb.telemetry["n_tuples"])
        for key in ("heldout/precision_at_1", "heldout/auc", "train/r_precision", "train_loss"):
            assert key in ea.metrics, key
        # after the same updates the network is the same: every image embeds to the same point (in the 2-process
        # run each rank embedded half of the images and rank 0 gathered them: the order must be the sample order)
        np.testing.assert_allclose(ea.embeddings, eb.embeddings, rtol=0, atol=1e-4)
    assert not (np.abs(a.load_epoch(EPOCHS).embeddings - a.load_epoch(0).embeddings) < 1e-6).all(), "nothing trained"
    state = torch.load(a.checkpoint_path(EPOCHS), map_location="cpu", weights_only=True)
    assert state["world_size"] == 2


def test_resume_with_another_world_size_is_refused_before_joining(runs, monkeypatch):
    two, one, _ = runs
    for k in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    cfg = _single_config(Path("unused")).replace(**{"optim.epochs": EPOCHS + 1})
    events = run_collect(cfg, two, resume=True)  # a 2-process run resumed by one process
    failed = [e for e in events if isinstance(e, ev.Failed)]
    assert failed and "trained with 2 process(es) and this start has 1" in failed[0].message
    assert "--nproc_per_node" in failed[0].message
    events = run_collect(cfg, one, resume=True, rank=0, world_size=2)  # the other way round: no group is joined
    failed = [e for e in events if isinstance(e, ev.Failed)]
    assert failed and "trained with 1 process(es) and this start has 2" in failed[0].message
    assert RunReader(two).epochs == list(range(EPOCHS + 1))  # refusing left the run as it was


def test_world_size_without_torchrun_says_how_to_start(tmp_path, monkeypatch):
    for k in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    events = run_collect(_single_config(tmp_path / "data"), tmp_path / "run", rank=0, world_size=2)
    failed = [e for e in events if isinstance(e, ev.Failed)]
    assert failed and "torchrun" in failed[0].message and "MASTER_ADDR" in failed[0].message
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(distributed.DistributedError, match="EE_DIST_TIMEOUT_S"):
        distributed.timeout_seconds()


def _batch_order_loops(rank: int, world: int, n_rows: int, per_class: int) -> list[int]:
    out = []
    for row in range(n_rows):
        block, within = row // per_class, row % per_class
        out.append((rank + block * world) * per_class + within)
    return out


@pytest.mark.parametrize("world,classes", [(2, 3), (2, 4), (3, 5), (4, 4)])
def test_batch_order_puts_every_rank_row_back_where_the_sampler_took_it(world, classes):
    labels = np.repeat(np.arange(9), 5)
    per_class = 3
    ranks = [ClassBalancedBatchSampler(labels, classes, per_class, batches_per_epoch=4, seed=1, rank=r,
                                       world_size=world) for r in range(world)]
    for s in ranks:
        s.set_epoch(2)
    for b, glob in enumerate(ranks[0].global_batches()):
        rebuilt = np.full(len(glob), -1)
        for r, s in enumerate(ranks):
            local = np.asarray(list(s)[b])
            order = distributed.batch_order(r, world, len(local), per_class).numpy()
            assert order.tolist() == _batch_order_loops(r, world, len(local), per_class)
            rebuilt[order] = local
        np.testing.assert_array_equal(rebuilt, glob)


@pytest.mark.parametrize("n", [0, 1, 5, 7, 100])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_row_once_in_order(n, world):
    blocks = [distributed.shard(n, r, world) for r in range(world)]
    rows = [i for lo, hi in blocks for i in range(lo, hi)]
    assert rows == list(range(n))  # what gather_rows concatenates in rank order is the sample order
    sizes = [hi - lo for lo, hi in blocks]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="outside world size"):
        distributed.shard(n, world, world)


def test_gather_rows_and_buffers_in_one_process_are_the_identity():
    x = torch.arange(12.0).reshape(4, 3)
    assert distributed.gather_rows(x, distributed.DistInfo()) is x
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean += 1.0
    distributed.broadcast_buffers(bn, distributed.DistInfo())
    assert torch.equal(bn.running_mean, torch.ones(3))


def test_gather_batch_in_one_process_sorts_by_position():
    emb = torch.arange(12, dtype=torch.float32).reshape(6, 2).requires_grad_()
    ids = torch.tensor([10, 11, 12, 13, 14, 15])
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    out, out_ids = distributed.gather_batch(emb, ids, order, distributed.DistInfo())
    expected = [int(ids[int(np.flatnonzero(order.numpy() == p)[0])]) for p in range(6)]
    assert out_ids.tolist() == expected
    out.sum().backward()
    assert torch.equal(emb.grad, torch.ones_like(emb))
