"""Comparing runs (issue 18 item 1): per-query MAP@R, the class bootstrap and the paired difference, against loops
and against pytorch-metric-learning's MAP@R."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.support import ROOT
from tests.support.twins import brute_distance
from trainer.analysis.compare import class_bootstrap, per_query_map_at_r
from trainer.comparison import compare, load_entries
from trainer.store import SPLIT_HELDOUT


def _data(seed=0, n_classes=6, per=7, d=8):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per)
    x = rng.normal(size=(n_classes, d))[y] + 0.9 * rng.normal(size=(len(y), d))
    return x.astype(np.float32), y


def _brute_ap(x, y, metric):
    out = []
    for i in range(len(x)):
        order = sorted((brute_distance(x[i], x[j], metric), j) for j in range(len(x)) if j != i)
        r = int((y == y[i]).sum()) - 1
        hits, ap = 0, 0.0
        for rank, (_, j) in enumerate(order[:r], 1):
            if y[j] == y[i]:
                hits += 1
                ap += hits / rank
        out.append(ap / r if r else np.nan)
    return np.array(out)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_per_query_map_at_r_equals_a_loop_and_averages_to_pmls_figure(metric):
    from trainer.analysis.retrieval import retrieval_metrics

    x, y = _data()
    q = per_query_map_at_r(x, y, metric)
    np.testing.assert_allclose(q, _brute_ap(x, y, metric), atol=1e-6)
    assert np.nanmean(q) == pytest.approx(retrieval_metrics(x, y, metric=metric)["mean_average_precision_at_r"],
                                          abs=1e-6)


def test_the_class_bootstrap_equals_a_loop_over_the_same_draws():
    x, y = _data(1)
    a = per_query_map_at_r(x, y, "cosine")
    b = per_query_map_at_r(x + 0.3 * np.random.default_rng(2).normal(size=x.shape).astype(np.float32), y, "cosine")
    got = class_bootstrap(a, y, n_boot=50, seed=4, others=[b])
    classes = np.unique(y)
    draws = np.random.default_rng(4).integers(0, len(classes), size=(50, len(classes)))
    for k in range(50):
        rows = np.concatenate([np.flatnonzero(y == classes[c]) for c in draws[k]])
        assert got[k, 0] == pytest.approx(a[rows].mean()) and got[k, 1] == pytest.approx(b[rows].mean())


def test_two_runs_on_the_same_samples_are_compared_pairwise_with_their_config_difference(trained, tmp_path):
    from tests.support.runs import run_collect, tiny_config

    run_a, data = trained
    run_b = tmp_path / "contrastive"
    run_collect(tiny_config(data, **{"loss.name": "contrastive", "loss.miner": "none"}), run_b)
    entries = load_entries([run_a, run_b])
    result = compare(entries, n_boot=200)
    a, b = result["runs"]
    assert a["vs_first"] is None and b["vs_first"] is not None
    for row, e in ((a, entries[0]), (b, entries[1])):
        assert row["best"]["epoch"] == e.best_epoch
        assert row["best"]["map_at_r"] == pytest.approx(e.history[e.best_epoch], abs=1e-6)  # the run's own figure
        lo, hi = row["best"]["ci95"]
        assert lo <= row["best"]["map_at_r"] <= hi
    assert b["vs_first"]["difference"] == pytest.approx(b["best"]["map_at_r"] - a["best"]["map_at_r"])
    assert result["config_diff"]["loss.name"] == ["triplet", "contrastive"]
    # the ROC of each run's best epoch over all held-out pairs (drawn overlaid in the window)
    from trainer.analysis import verification
    from trainer.comparison import image_changes

    for row, e in ((a, entries[0]), (b, entries[1])):
        ids = np.flatnonzero(np.asarray(e.run.samples.split) == SPLIT_HELDOUT)
        h = verification.pair_histograms(e.run.rows(e.best_epoch, ids), np.asarray(e.run.samples.labels)[ids],
                                         metric=e.run.metric)
        assert row["roc"]["auc"] == pytest.approx(verification.roc_from_histograms(h).auc)
        assert row["roc"]["far"][0] == 0.0 and row["roc"]["tar"][-1] == pytest.approx(1.0)
    # image by image: the neighbours are sample ids of held-out images, as the loop over the two epochs finds them
    ch = image_changes(entries[0], entries[1], k=5)
    held = set(ch["ids"].tolist())
    assert set(ch["nbr_a"].ravel().tolist()) <= held and set(ch["nbr_b"].ravel().tolist()) <= held
    from trainer.analysis.compare import neighbour_changes

    want = neighbour_changes(ch["xa"], ch["xb"], ch["labels"], ch["metric"], k=5)
    assert np.array_equal(ch["ids"][want["nbr_b"]], ch["nbr_b"]) and np.array_equal(want["rank_a"], ch["rank_a"])
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), "compare", str(run_a), str(run_b), "--images", "3"],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    assert "contrastive" in res.stdout and "loss.name" in res.stdout and "[" in res.stdout
    assert "ROC AUC" in res.stdout and "image by image" in res.stdout and "worse in contrastive" in res.stdout


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbour_changes_equal_a_loop(metric):
    from tests.support.twins import brute_neighbours
    from trainer.analysis.compare import neighbour_changes

    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(6), 5)
    xa = (rng.normal(size=(6, 8))[y] + 0.9 * rng.normal(size=(len(y), 8))).astype(np.float32)
    xb = (xa + 0.6 * rng.normal(size=xa.shape)).astype(np.float32)
    got = neighbour_changes(xa, xb, y, metric, k=7)
    for q in range(len(y)):
        others = [j for j in range(len(y)) if j != q]
        na = [j for _, j in brute_neighbours(xa, q, others, 7, metric)]
        nb = [j for _, j in brute_neighbours(xb, q, others, 7, metric)]
        assert got["nbr_a"][q].tolist() == na and got["nbr_b"][q].tolist() == nb
        assert got["gained"][q] == len(set(nb) - set(na))
        for rank, nbrs in ((got["rank_a"][q], na), (got["rank_b"][q], nb)):
            want = next((r + 1 for r, j in enumerate(nbrs) if y[j] == y[q]), 0)
            assert rank == want
    assert got["gained"].max() > 0  # the noise moved some neighbours
