"""trainer/analysis/pairs.py: class-stratified pair samples beyond the exact range, each against a loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trainer.analysis.verification import pair_histograms, roc_from_histograms
from trainer.analysis.pairs import (
    _largest_remainder, _triangle_pairs, pair_distances, pair_totals, sampled_pair_histograms,
    stratified_pair_sample, stratified_image_sample,
)

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
    assert s.i.dtype == s.j.dtype == np.int32  # 4-byte ids: half the memory of 10 million sampled pairs
    assert (s.i < s.j).all() and s.j.max() < len(labels)
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
