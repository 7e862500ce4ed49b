"""The learning-rate range test and the loss sweep: their arithmetic against brute-force twins, and real short
runs through the library functions and the command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from tests.support.runs import make_folder, tiny_config
from trainer.train.lr_find import lr_at_step, lr_range_test, smooth, suggest
from trainer.store import RunReader
from trainer.train.sweep import SWEEP_FILE, interval95, run_sweep, summarize
from tests.support import ROOT



def test_the_schedule_is_geometric_from_start_to_end():
    lrs = [lr_at_step(i, 11, 1e-5, 1e-1) for i in range(11)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1e-1)
    ratios = np.asarray(lrs[1:]) / np.asarray(lrs[:-1])
    assert np.allclose(ratios, 10 ** 0.4)


def test_smoothing_equals_the_closed_form():
    x = np.random.default_rng(0).normal(size=50)
    beta = 0.9
    brute = [sum((1 - beta) * beta ** (i - j) * x[j] for j in range(i + 1)) / (1 - beta ** (i + 1))
             for i in range(len(x))]
    assert np.allclose(smooth(x, beta), brute)


def test_the_suggestion_is_the_steepest_fall_before_the_minimum():
    lrs = np.geomspace(1e-6, 1, 200)
    t = np.log10(lrs)
    # a sigmoid fall centred at 1e-3, then a blow-up after 1e-1
    loss = 1 + 2 / (1 + np.exp(3 * (t + 3))) + np.where(t > -1, (t + 1) * 50, 0)
    got, why = suggest(lrs, loss)
    assert got == pytest.approx(1e-3, rel=0.1)
    # brute force: the largest fall between neighbours, over the same range
    lo, n = int(200 * 0.1), int(np.argmin(loss)) + 1
    slopes = [(loss[i + 1] - loss[i - 1]) / (np.log(lrs[i + 1]) - np.log(lrs[i - 1])) for i in range(lo + 1, n - 1)]
    assert got == pytest.approx(lrs[lo + 1 + int(np.argmin(slopes))], rel=0.05)
    assert suggest(lrs, np.linspace(1, 2, 200))[0] is None  # a loss that only rises: no suggestion


def test_a_range_test_on_a_small_folder_suggests_a_rate_inside_the_range(tmp_path):
    data = make_folder(tmp_path / "data", n_classes=6, per_class=8)
    cfg = tiny_config(data, **{"loss.name": "normalized_softmax", "loss.miner": "none"})
    seen = []
    res = lr_range_test(cfg, start_lr=1e-5, end_lr=1.0, steps=30, progress=lambda i, n, lr, loss: seen.append(lr))
    assert 5 <= len(res.lrs) <= 30 and len(seen) == len(res.lrs)
    assert np.all(np.diff(res.lrs) > 0) and res.lrs[0] == pytest.approx(1e-5)
    assert np.isfinite(res.losses[:-1]).all()
    if res.suggestion is not None:
        assert 1e-5 <= res.suggestion <= 1.0
    assert not (tmp_path / "run").exists()


def test_interval95_equals_scipy_t_interval():
    vals = [0.41, 0.45, 0.39, 0.47]
    m, lo, hi = interval95(vals)
    ref = stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
    assert m == pytest.approx(np.mean(vals)) and (lo, hi) == pytest.approx(ref)
    assert interval95([0.5]) == (0.5, 0.5, 0.5)
    assert all(math.isnan(v) for v in interval95([]))


def test_a_sweep_writes_one_run_per_loss_and_seed_and_a_strict_json_summary(tmp_path):
    data = make_folder(tmp_path / "data", n_classes=6, per_class=8)
    base = tiny_config(data, **{"optim.epochs": 1, "optim.batches_per_epoch": 2,
                                "auto": ("loss.miner", "loss.params")})
    out = tmp_path / "sweep"
    summary = run_sweep(base, ["triplet", "normalized_softmax"], 2, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["triplet-s0", "triplet-s1", "normalized_softmax-s0", "normalized_softmax-s1", SWEEP_FILE])
    doc = json.loads((out / SWEEP_FILE).read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert doc["losses"] == ["triplet", "normalized_softmax"] and doc["seeds"] == 2
    for s in summary:
        vals = [RunReader(out / f"{s.loss}-s{i}").load_epoch(1).metrics["heldout/mean_average_precision_at_r"]
                for i in range(2)]
        assert s.values == pytest.approx(vals)
        assert s.mean == pytest.approx(np.mean(vals))
        row = next(r for r in doc["summary"] if r["loss"] == s.loss)
        assert row["mean"] == pytest.approx(s.mean)
        assert row["ci95"][0] <= row["mean"] <= row["ci95"][1]
    assert RunReader(out / "triplet-s1").config["seed"] == 1
    # the recipe's miner for the loss: from random weights, every triplet of the batch (not its usual semi-hard)
    assert RunReader(out / "triplet-s0").config["loss"]["miner"] == "none"
    # a second call trains nothing again
    stamp = (out / "triplet-s0" / "manifest.json").stat().st_mtime_ns
    run_sweep(base, ["triplet", "normalized_softmax"], 2, out)
    assert (out / "triplet-s0" / "manifest.json").stat().st_mtime_ns == stamp
    assert summarize(out, ["triplet"], 2)[0].values == pytest.approx(summary[0].values)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_lr_find_and_sweep_from_the_command_line(tmp_path):
    data = make_folder(tmp_path / "data", n_classes=6, per_class=8)
    small = ["--backbone", "small_cnn", "--image-size", "24", "--workers", "0", "--quiet"]
    res = _cli("lr-find", str(data), *small, "--steps", "20", "--start-lr", "1e-5", "--out", str(tmp_path / "c.csv"))
    assert res.returncode == 0, res.stderr
    assert "suggested --lr" in res.stdout or "no suggestion" in res.stdout
    assert (tmp_path / "c.csv").read_text().startswith("lr,loss,smoothed")
    res = _cli("sweep", str(data), "--out", str(tmp_path / "sw"), "--losses", "triplet,arcface", "--seeds", "1",
               "--epochs", "1", "--batches-per-epoch", "2", *small)
    assert res.returncode == 0, res.stderr
    assert "| triplet |" in res.stdout and "| arcface |" in res.stdout
    doc = json.loads((tmp_path / "sw" / SWEEP_FILE).read_text())
    assert doc["losses"] == ["triplet", "arcface"]
    assert all(row["ci95"] is None for row in doc["summary"])  # one seed: no interval
    res = _cli("sweep", str(data), "--out", str(tmp_path / "sw2"), "--losses", "nope", *small)
    assert res.returncode == 2 and "unknown loss nope" in res.stderr
    # a seed the sweep would not use is refused, not silently replaced by seed 0
    res = _cli("sweep", str(data), "--out", str(tmp_path / "sw3"), "--losses", "triplet", "--seed", "1", *small)
    assert res.returncode == 2 and "--seed is for train" in res.stderr and "--seeds N" in res.stderr
    assert not (tmp_path / "sw3").exists()


def test_a_sweep_keeps_the_parameters_that_belong_to_each_loss():
    from trainer.config import TrainConfig
    from trainer.train.sweep import sweep_config

    base = TrainConfig().replace(**{"loss.params": {"temperature": 0.1}, "auto": ("loss.miner", "optim.lr")})
    cfg = sweep_config(base, "normalized_softmax", 2)
    assert cfg.loss.params == {"temperature": 0.1} and cfg.seed == 2 and "optim.lr" in cfg.auto
    assert sweep_config(base, "triplet", 0).loss.params == {}  # not a triplet parameter
    sys.path.insert(0, str(ROOT))
    import main

    args = main._train_parser().parse_args(["data", "--out", "o", "--temperature", "0.2"])
    cfg = main._config_from_args(args)  # a parameter without --loss is the recipe loss's, and pins it
    assert cfg.loss.name == "normalized_softmax" and cfg.loss.params == {"temperature": 0.2}
    assert "loss.name" not in cfg.auto
