"""Distributed training (torchrun, 2 CPU processes over gloo) against one process on the same global batch;
class-stratified pair sampling (trainer/sampling.py) against plain loops over every pair (at the end).

BatchNorm: small_cnn has BN layers, and on CPU each rank normalises its own share of the batch (SyncBatchNorm is
CUDA-only, and is used there). The comparison therefore freezes the backbone (``--freeze-backbone-epochs``), which
puts its BN in eval mode, and trains the head only: that part of the computation is then the same function on both
sides, so the per-batch loss must agree to float32 round-off (tolerance 1e-4 absolute + 1e-3 relative; the sums run
in a different order after the gather). With BN in train mode the two runs differ by design, not by a bug.
"""

from __future__ import annotations

import itertools
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
from trainer.analysis.verification import pair_histograms, roc_from_histograms
from trainer.analysis.pairs import (
    _largest_remainder, _triangle_pairs, pair_distances, pair_totals, sampled_pair_histograms,
    stratified_pair_sample,
)
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


# ---------------------------------------------------------------- trainer/sampling.py: pairs beyond the exact range

def _all_pairs_loops(labels) -> tuple[set, set]:
    gen, imp = set(), set()
    for a, b in itertools.combinations(range(len(labels)), 2):
        (gen if labels[a] == labels[b] else imp).add((a, b))
    return gen, imp


def _largest_remainder_loops(weights, total) -> list[int]:
    s = sum(weights)
    quotas = [w * total / s for w in weights]
    out = [int(np.floor(q)) for q in quotas]
    rema = sorted(range(len(weights)), key=lambda k: (-(quotas[k] - out[k]), k))
    for k in rema[: total - sum(out)]:
        out[k] += 1
    return out


@pytest.mark.parametrize("n", [2, 3, 7, 50, 1001])
def test_triangle_index_matches_a_loop(n):
    want = [(a, b) for a in range(n) for b in range(a + 1, n)]
    a, b = _triangle_pairs(np.arange(len(want)), n)
    assert list(zip(a.tolist(), b.tolist())) == want


def test_largest_remainder_matches_a_loop():
    rng = np.random.default_rng(0)
    for _ in range(50):
        w = rng.integers(0, 40, size=rng.integers(1, 12))
        if w.sum() == 0:
            continue
        total = int(rng.integers(0, 500))
        got = _largest_remainder(w, total)
        assert got.tolist() == _largest_remainder_loops(w.tolist(), total)
        assert got.sum() == total


def test_small_sets_are_taken_whole_and_equal_every_pair():
    labels = np.array([2, 0, 1, 0, 2, 2, 1, 0, 5])
    s = stratified_pair_sample(labels, max_genuine=100, max_impostor=100)
    gen, imp = _all_pairs_loops(labels.tolist())
    got_gen = set(zip(s.i[s.genuine].tolist(), s.j[s.genuine].tolist()))
    got_imp = set(zip(s.i[~s.genuine].tolist(), s.j[~s.genuine].tolist()))
    assert got_gen == gen and got_imp == imp
    assert s.genuine.sum() == len(gen) and (~s.genuine).sum() == len(imp)  # no repeats
    assert s.exact and (s.n_genuine_total, s.n_impostor_total) == (len(gen), len(imp)) == pair_totals(labels)
    assert "exactly" in s.describe()


def test_a_sample_is_stratified_by_class_and_valid():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(12), rng.integers(2, 30, size=12))
    rng.shuffle(labels)
    s = stratified_pair_sample(labels, max_genuine=300, max_impostor=900, seed=4)
    assert not s.genuine_exact and not s.impostor_exact
    assert (s.i < s.j).all()
    assert (labels[s.i][s.genuine] == labels[s.j][s.genuine]).all()
    assert (labels[s.i][~s.genuine] != labels[s.j][~s.genuine]).all()
    # genuine: per class exactly its proportional share, no pair twice
    counts = [int((labels == c).sum()) for c in range(12)]
    want = _largest_remainder_loops([n * (n - 1) // 2 for n in counts], 300)
    got = [int((labels[s.i][s.genuine] == c).sum()) for c in range(12)]
    assert got == want
    pairs = list(zip(s.i[s.genuine].tolist(), s.j[s.genuine].tolist()))
    assert len(set(pairs)) == len(pairs)
    # impostor: class c "owns" its share n_c (N - n_c); each draw has one member in its owner class
    assert (~s.genuine).sum() == 900
    assert "900 of" in s.describe() and "stratified by class" in s.describe()


def test_sampled_impostors_are_uniform_over_all_impostor_pairs():
    """Over many seeds every impostor pair is drawn about equally often (the sample is self-weighting)."""
    labels = np.array([0] * 2 + [1] * 5 + [2] * 9)
    _, imp = _all_pairs_loops(labels.tolist())
    hits = dict.fromkeys(imp, 0)
    draws = 0
    for seed in range(300):
        s = stratified_pair_sample(labels, max_genuine=0, max_impostor=len(imp) - 1, seed=seed)
        for a, b in zip(s.i[~s.genuine].tolist(), s.j[~s.genuine].tolist()):
            hits[(a, b)] += 1
        draws += int((~s.genuine).sum())
    expected = draws / len(imp)
    rel = np.array(list(hits.values())) / expected
    assert abs(rel.mean() - 1) < 1e-9 and rel.min() > 0.75 and rel.max() < 1.25


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_pair_distances_and_histograms_match_loops(metric):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    labels = rng.integers(0, 5, size=40)
    s = stratified_pair_sample(labels)
    d = pair_distances(x, s.i, s.j, metric=metric)
    for p in range(0, len(d), 37):
        a, b = x[s.i[p]].astype(np.float64), x[s.j[p]].astype(np.float64)
        want = (1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)) if metric == "cosine" else np.linalg.norm(a - b)
        assert d[p] == pytest.approx(want, abs=1e-6)
    # the exact case equals evaluate.pair_histograms (same right-closed bins), up to a pair on a bin edge
    h = sampled_pair_histograms(x, labels, s, metric=metric, bins=200)
    ref = pair_histograms(x, labels, metric=metric, bins=200)
    np.testing.assert_allclose(h.edges, ref.edges)
    assert h.n_genuine == ref.n_genuine and h.n_impostor == ref.n_impostor
    assert np.abs(h.genuine - ref.genuine).sum() <= 2 and np.abs(h.impostor - ref.impostor).sum() <= 2
    # pairs histogrammed a few at a time count the same
    import trainer.analysis.pairs as pairs_mod

    old = pairs_mod.HIST_PAIR_CHUNK
    pairs_mod.HIST_PAIR_CHUNK = 7
    try:
        small = sampled_pair_histograms(x, labels, s, metric=metric, bins=200)
    finally:
        pairs_mod.HIST_PAIR_CHUNK = old
    assert np.array_equal(small.genuine, h.genuine) and np.array_equal(small.impostor, h.impostor)


def test_a_sampled_roc_estimates_the_exact_one():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(30, 8))
    labels = rng.integers(0, 30, size=1500)
    x = (centres[labels] + rng.normal(scale=0.8, size=(1500, 8))).astype(np.float32)
    exact = roc_from_histograms(pair_histograms(x, labels, bins=400))
    s = stratified_pair_sample(labels, max_genuine=10_000, max_impostor=60_000, seed=0)
    approx = roc_from_histograms(sampled_pair_histograms(x, labels, s, bins=400))
    assert not s.exact
    assert approx.auc == pytest.approx(exact.auc, abs=0.01)
    assert approx.eer == pytest.approx(exact.eer, abs=0.02)


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least 2 samples"):
        stratified_pair_sample([3])
    with pytest.raises(ValueError, match="budgets"):
        stratified_pair_sample([0, 1], max_genuine=-1)
    with pytest.raises(ValueError, match="unknown metric"):
        pair_distances(np.ones((2, 3)), np.array([0]), np.array([1]), metric="l1")


@pytest.mark.parametrize("n", [0, 7, 40, 150, 299, 300])
def test_stratified_image_sample_keeps_every_class_in_proportion(n):
    from trainer.analysis.pairs import stratified_image_sample

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(12), rng.integers(1, 50, 12))[:300]
    got = stratified_image_sample(labels, n, seed=1)
    assert len(got) == min(n, len(labels)) and len(np.unique(got)) == len(got) and (np.diff(got) > 0).all()
    if n >= len(labels):
        return
    # a loop over the classes: two each first (when they fit), then a share of what is left within one image
    counts = {c: int((labels == c).sum()) for c in np.unique(labels)}
    floor = {c: min(2, k) for c, k in counts.items()}
    if sum(floor.values()) > n:
        floor = {c: 0 for c in counts}
    rest = n - sum(floor.values())
    left = sum(k - floor[c] for c, k in counts.items())
    for c, k in counts.items():
        taken = int((labels[got] == c).sum())
        want = floor[c] + rest * (k - floor[c]) / left
        assert abs(taken - want) < 1 + 1e-9, (c, taken, want)
