"""Triplet census, examples and diagnostics against plain-loop twins and pytorch-metric-learning's miner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.miners import TripletMarginMiner

from tests.support.twins import brute_distances
from trainer.analysis.census import batch_census, epoch_census
from trainer.analysis.triplet_examples import triplet_examples
from trainer.analysis.diagnostics import diagnose, near_duplicates_across_classes, suspected_mislabels

MARGINS = [-0.1, 0.0, 0.05, 0.2, 1.0]


# ---------------------------------------------------------------- brute-force twins (plain loops, float64)




def category(d_ap: float, d_an: float, m: float) -> str:
    diff = d_an - d_ap
    if diff > m:
        return "easy"
    if diff <= 0:
        return "hard"
    return "semihard"


def brute_census(x, y, m, metric):
    """Per-anchor {category: count} over every triplet, with plain loops."""
    d = brute_distances(x, metric)
    n = len(x)
    per = np.zeros((n, 3), np.int64)
    col = {"easy": 0, "semihard": 1, "hard": 2}
    for a in range(n):
        for p in range(n):
            if p == a or y[p] != y[a]:
                continue
            for q in range(n):
                if y[q] != y[a]:
                    per[a, col[category(d[a, p], d[a, q], m)]] += 1
    return per


def random_data(seed=0, n=36, dim=5, classes=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), rng.integers(0, classes, n)


def tie_data(metric, seed=0, n=30):
    """Embeddings whose distances are exact in float32, so differences hit the margins exactly (ties)."""
    rng = np.random.default_rng(seed)
    if metric == "cosine":  # four entries of +-0.5: unit norm, dot products are multiples of 0.25
        x = np.zeros((n, 8), np.float32)
        for i in range(n):
            cols = rng.choice(8, 4, replace=False)
            x[i, cols] = rng.choice([-0.5, 0.5], 4)
        x[5] = x[3]  # exact duplicates too
    else:  # coordinates in quarters: squared distances are exact, e.g. d = 1 and d = 1.25 differ by exactly 0.25
        x = (rng.integers(-4, 5, size=(n, 3)) * 0.25).astype(np.float32)
    return x, rng.integers(0, 3, n)


# ---------------------------------------------------------------- epoch census


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("margin", MARGINS)
def test_epoch_census_equals_brute_force(metric, margin):
    x, y = random_data(seed=int(abs(margin) * 100) + (7 if margin < 0 else 0))
    c = epoch_census(x, y, margin=margin, metric=metric, chunk=7)
    per = brute_census(x, y, margin, metric)
    assert not c.sampled and c.n_anchors == len(x)
    np.testing.assert_array_equal(np.stack([c.n_easy, c.n_semihard, c.n_hard], 1), per[c.anchors])
    assert (c.total_easy, c.total_semihard, c.total_hard) == tuple(per.sum(0))
    assert c.total == per.sum() > 0
    assert c.share_easy + c.share_semihard + c.share_hard == pytest.approx(1.0)
    np.testing.assert_array_equal(c.n_easy + c.n_semihard + c.n_hard, c.n_pos * c.n_neg)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("margin", [0.0, 0.25, 0.5, 1.0])
def test_epoch_census_exact_ties(metric, margin):
    x, y = tie_data(metric)
    d = brute_distances(x, metric)
    diffs = {round(d[a, q] - d[a, p], 9) for a in range(len(x)) for p in range(len(x)) for q in range(len(x))}
    assert margin in diffs  # the data really puts triplets on the boundary
    c = epoch_census(x, y, margin=margin, metric=metric)
    per = brute_census(x, y, margin, metric)
    np.testing.assert_array_equal(np.stack([c.n_easy, c.n_semihard, c.n_hard], 1), per)


def test_epoch_census_means_and_sampling():
    x, y = random_data(seed=3, n=50)
    full = epoch_census(x, y, margin=0.1, metric="cosine")
    d = brute_distances(x, "cosine")
    a = 7
    pos = [p for p in range(50) if p != a and y[p] == y[a]]
    neg = [q for q in range(50) if y[q] != y[a]]
    assert full.mean_d_ap[a] == pytest.approx(np.mean(d[a, pos]), abs=1e-5)
    assert full.mean_d_an[a] == pytest.approx(np.mean(d[a, neg]), abs=1e-5)
    tri_ap = sum(d[i, p] * full.n_neg[i] for i in range(50) for p in range(50) if p != i and y[p] == y[i])
    assert full.triplet_mean_d_ap == pytest.approx(tri_ap / full.total, abs=1e-5)
    part = epoch_census(x, y, margin=0.1, metric="cosine", max_anchors=20, seed=5)
    assert part.sampled and part.n_anchors == 20 and len(np.unique(part.anchors)) == 20
    np.testing.assert_array_equal(part.n_hard, full.n_hard[part.anchors])
    np.testing.assert_array_equal(part.anchor_labels, y[part.anchors])
    assert part.counts("semihard").sum() == part.total_semihard


def test_epoch_census_singletons_and_bad_input(tmp_path):
    x = np.eye(4, dtype=np.float32)
    c = epoch_census(x, np.array([0, 1, 2, 3]), margin=0.2)
    assert c.total == 0 and np.isnan(c.share_easy) and np.all(np.isnan(c.mean_d_ap))
    with pytest.raises(ValueError, match="one label per embedding"):
        epoch_census(x, np.array([0, 1]), margin=0.2)
    with pytest.raises(ValueError, match="NaN"):
        epoch_census(np.full((3, 2), np.nan), np.array([0, 0, 1]), margin=0.2)
    with pytest.raises(ValueError, match="metric"):
        epoch_census(x, np.arange(4), margin=0.2, metric="dot")
    with pytest.raises(ValueError, match="margin"):
        epoch_census(x, np.arange(4), margin=float("nan"))


# ---------------------------------------------------------------- batch census vs PML


def pml_counts(x, y, margin, distance):
    out = []
    for kind in ("easy", "semihard", "hard"):
        miner = TripletMarginMiner(margin=margin, type_of_triplets=kind, distance=distance)
        out.append(len(miner(x, y)[0]))
    return out


@pytest.mark.parametrize("margin", MARGINS + [0.25])
def test_batch_census_equals_pml_miner(margin):
    g = torch.Generator().manual_seed(int(abs(margin) * 100) + (7 if margin < 0 else 0))
    x = torch.randn(64, 16, generator=g)
    y = torch.arange(8).repeat_interleave(8)
    for metric, distance in (("cosine", CosineSimilarity()), ("euclidean", LpDistance(normalize_embeddings=False))):
        c = batch_census(x, y, margin, metric=metric)
        assert [c.n_easy, c.n_semihard, c.n_hard] == pml_counts(x, y, margin, distance)
        assert c.n_total == 64 * 7 * 56
        assert c == batch_census(x, y, margin, distance=distance)
    # PML's default miner distance (normalised L2), passed as the distance object
    c = batch_census(x, y, margin, distance=LpDistance())
    assert [c.n_easy, c.n_semihard, c.n_hard] == pml_counts(x, y, margin, LpDistance())


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_batch_census_ties_equal_pml(metric):
    x, y = tie_data(metric, seed=2, n=40)
    distance = CosineSimilarity() if metric == "cosine" else LpDistance(normalize_embeddings=False)
    for margin in (0.0, 0.25, 0.5, 1.0):
        c = batch_census(torch.from_numpy(x), torch.from_numpy(y), margin, metric=metric)
        assert [c.n_easy, c.n_semihard, c.n_hard] == pml_counts(torch.from_numpy(x), torch.from_numpy(y), margin, distance)
        per = brute_census(x, y, margin, metric)
        assert [c.n_easy, c.n_semihard, c.n_hard] == per.sum(0).tolist()


def test_batch_census_stats_match_pml_and_distance_matrix_input():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, generator=g)
    y = torch.arange(4).repeat(8)
    miner = TripletMarginMiner(margin=0.2, type_of_triplets="all", distance=CosineSimilarity(), collect_stats=True)
    miner(x, y)
    c = batch_census(x, y, 0.2, metric="cosine")
    assert c.mean_d_ap == pytest.approx(1.0 - miner.pos_pair_dist, abs=1e-5)
    assert c.mean_d_an == pytest.approx(1.0 - miner.neg_pair_dist, abs=1e-5)
    dist = torch.cdist(x, x)
    from_matrix = batch_census(dist, y, 0.2)  # the contract: a (B, B) distance matrix
    assert from_matrix == batch_census(x, y, 0.2, metric="euclidean")
    with pytest.raises(ValueError, match="square"):
        batch_census(x, y, 0.2)
    empty = batch_census(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), 0.2)
    assert empty.n_total == 0


# ---------------------------------------------------------------- examples for the gallery


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("cat", ["easy", "semihard", "hard"])
def test_triplet_examples_exact_selection(metric, cat):
    x, y = random_data(seed=9, n=30, classes=3)
    d = brute_distances(x, metric)
    m = 0.3
    hardness = []
    for a in range(30):
        for p in range(30):
            if p != a and y[p] == y[a]:
                for q in range(30):
                    if y[q] != y[a] and category(d[a, p], d[a, q], m) == cat:
                        hardness.append(d[a, q] - d[a, p])
    for sort in ("hardest", "easiest"):
        ex = triplet_examples(x, y, cat, margin=m, metric=metric, n=12, sort=sort, max_anchors=None)
        assert len(ex) == min(12, len(hardness))
        for a, p, q, dap, dan in zip(*ex):
            assert y[a] == y[p] != y[q] and a != p
            assert category(d[a, p], d[a, q], m) == cat
            assert dap == pytest.approx(d[a, p], abs=1e-5) and dan == pytest.approx(d[a, q], abs=1e-5)
        h = ex.d_an.astype(np.float64) - ex.d_ap
        want = sorted(hardness) if sort == "hardest" else sorted(hardness, reverse=True)
        np.testing.assert_allclose(h, want[: len(h)], atol=1e-5)
        # anchors taken a few at a time (as for a huge split) select the same triplets
        small = triplet_examples(x, y, cat, margin=m, metric=metric, n=12, sort=sort, max_anchors=None, chunk=4)
        np.testing.assert_allclose(small.d_an.astype(np.float64) - small.d_ap, h, atol=1e-6)


def test_example_blocks_shrink_with_the_split():
    from trainer.analysis.triplet_examples import EXAMPLES_BUFFER_BYTES, EXAMPLES_BYTES_PER_KEY, examples_chunk

    assert examples_chunk(1000) == 256 and examples_chunk(10**9) == 1
    for n in (30_000, 500_000, 1_000_000):
        c = examples_chunk(n)
        assert 1 <= c < 256 and c * n * EXAMPLES_BYTES_PER_KEY <= EXAMPLES_BUFFER_BYTES


def test_triplet_examples_class_filter_and_per_anchor_cap():
    x, y = random_data(seed=2, n=40, classes=4)
    ex = triplet_examples(x, y, "hard", margin=0.2, classes=[1, 3], n=30, max_per_anchor=2)
    assert len(ex) > 0 and set(y[ex.anchor]) <= {1, 3}
    _, counts = np.unique(ex.anchor, return_counts=True)
    assert counts.max() <= 2
    with pytest.raises(ValueError, match="category"):
        triplet_examples(x, y, "medium", margin=0.2)


# ---------------------------------------------------------------- diagnostics


def brute_mislabels(x, y, k, metric):
    d = brute_distances(x, metric)
    ids, sugg = [], []
    for i in range(len(x)):
        nb = sorted((d[i, j], j) for j in range(len(x)) if j != i)[:k]
        labs = {int(y[j]) for _, j in nb}
        if len(labs) == 1 and y[i] not in labs:
            ids.append(i)
            sugg.append(labs.pop())
    return np.array(ids), np.array(sugg)


def clusters(seed=0, n_classes=4, per=15, dim=8, spread=0.05):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim)) * 3
    y = np.repeat(np.arange(n_classes), per)
    return (centers[y] + spread * rng.normal(size=(len(y), dim))).astype(np.float32), y


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_suspected_mislabels_equal_brute_force(metric):
    x, y = clusters(seed=1)
    y = y.copy()
    y[[3, 20]] = [2, 0]  # two planted label errors
    rng = np.random.default_rng(0)
    noisy, yn = random_data(seed=5, n=40, dim=4)
    for xx, yy in ((x, y), (noisy, yn)):
        ids, sugg = suspected_mislabels(xx, yy, metric=metric, k=5)
        bi, bs = brute_mislabels(xx, yy, 5, metric)
        np.testing.assert_array_equal(ids, bi)
        np.testing.assert_array_equal(sugg, bs)
    ids, sugg = suspected_mislabels(x, y, metric=metric)
    assert ids.tolist() == [3, 20] and sugg.tolist() == [0, 1]
    del rng


def test_near_duplicates_across_classes():
    x, y = clusters(seed=2)
    x = x.copy()
    x[40] = x[2] + 1e-6  # class 2 sample duplicating a class 0 sample
    x[7] = x[8]  # duplicate within a class: not reported
    i, j, d = near_duplicates_across_classes(x, y, metric="euclidean")
    assert list(zip(i.tolist(), j.tolist())) == [(2, 40)] and d[0] < 1e-4
    i, j, _ = near_duplicates_across_classes(x, y, metric="cosine", eps=1e-4)
    assert (2, 40) in list(zip(i.tolist(), j.tolist()))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_label_checks_of_a_sample_equal_brute_force_restricted_to_it(metric):
    x, y = clusters(seed=1)
    y = y.copy()
    y[[3, 20]] = [2, 0]  # two planted label errors
    x = x.copy()
    x[40] = x[2] + 1e-6  # a near duplicate across classes
    checked = np.array([3, 7, 40, 55])
    ids, sugg = suspected_mislabels(x, y, metric=metric, k=5, query_ids=checked)
    bi, bs = brute_mislabels(x, y, 5, metric)
    inside = np.isin(bi, checked)
    np.testing.assert_array_equal(ids, bi[inside])
    np.testing.assert_array_equal(sugg, bs[inside])
    # pairs closer than eps that involve a checked sample, each once, against a loop over all pairs
    d = brute_distances(x, metric)
    eps = 0.05 if metric == "euclidean" else 1e-4
    want = sorted((i, j) for i in range(len(x)) for j in range(i + 1, len(x))
                  if d[i, j] < eps and y[i] != y[j] and (i in checked or j in checked))
    i, j, _ = near_duplicates_across_classes(x, y, metric=metric, eps=eps, query_ids=checked)
    assert sorted(zip(i.tolist(), j.tolist())) == want and (2, 40) in want
    found = {f.title: f for f in diagnose(x, y, margin=0.2, metric=metric, max_checked=30, n_checked=20, seed=0)}
    assert "Label checks sampled" in found and "random sample of 20 of the 60" in found["Label checks sampled"].detail


def test_diagnose_findings():
    x, y = clusters(seed=3)
    titles = [f.title for f in diagnose(x, y, margin=0.01, metric="euclidean")]
    assert "Nearly all triplets are easy" in titles
    assert not any("overlap" in t or "collapsed" in t for t in titles)
    rng = np.random.default_rng(0)
    xr = rng.normal(size=(60, 8)).astype(np.float32)
    titles = [f.title for f in diagnose(xr, y, margin=0.2)]
    assert "Positives and negatives overlap" in titles
    xc = np.ones((60, 8), np.float32) + 1e-7 * rng.normal(size=(60, 8)).astype(np.float32)
    found = diagnose(xc, y, margin=0.2, metric="euclidean")
    assert "Embeddings collapsed" in [f.title for f in found]
    yl = y.copy()
    yl[5] = 3
    found = {f.title: f for f in diagnose(x, yl, margin=0.2)}
    assert "1 suspected label problem(s)" in found
    assert found["1 suspected label problem(s)"].sample_ids.tolist() == [5]


def test_epoch_census_repeated_unsorted_anchors():
    x, y = random_data(seed=11, n=45, classes=3)
    per = brute_census(x, y, 0.2, "euclidean")
    anchors = np.array([5, 3, 5, 40])  # repeated and unsorted explicit anchors keep their order
    part = epoch_census(x, y, margin=0.2, metric="euclidean", anchors=anchors, chunk=3)
    np.testing.assert_array_equal(np.stack([part.n_easy, part.n_semihard, part.n_hard], 1), per[anchors])


def test_batch_census_restores_torch_threads():
    before = torch.get_num_threads()
    x = torch.randn(16, 4)
    y = torch.arange(4).repeat(4)
    torch.set_num_threads(2)
    try:
        batch_census(x, y, 0.2, metric="cosine")
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="square"):
            batch_census(x, y, 0.2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)




def test_census_blocks_stay_small_for_huge_splits():
    from trainer.analysis.census import CENSUS_BUFFER_BYTES, census_chunk

    assert census_chunk(20_000) == 512 and census_chunk(0) == 512
    for n in (100_000, 500_000, 1_000_000, 10_000_000):
        c = census_chunk(n)
        assert 8 <= c < 512 and (c * n * 4 <= CENSUS_BUFFER_BYTES or c == 8)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_a_census_given_its_rows_in_class_order_works_in_place_and_counts_the_same(metric):
    from trainer.analysis.census import sample_anchors

    rng = np.random.default_rng(21)
    y = rng.integers(0, 5, 60)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    want = tuple(int(v) for v in brute_census(x, y, 0.3, metric).sum(axis=0))
    order = np.argsort(y, kind="stable")
    owned = x[order].copy()
    c = epoch_census(owned, y[order], margin=0.3, metric=metric, overwrite=True)
    assert (c.total_easy, c.total_semihard, c.total_hard) == want
    if metric == "cosine":  # normalised where it lay: no copy was made
        np.testing.assert_allclose(owned, x[order] / np.linalg.norm(x[order], axis=1, keepdims=True), rtol=1e-6)
    else:
        np.testing.assert_array_equal(owned, x[order])
    # labels out of order: the caller's rows are left alone even when given up
    mine = x.copy()
    c2 = epoch_census(mine, y, margin=0.3, metric=metric, overwrite=True)
    assert (c2.total_easy, c2.total_semihard, c2.total_hard) == want
    np.testing.assert_array_equal(mine, x)
    # the sampled anchors are the ones a census samples itself, and the same samples in class order count the same
    picked = sample_anchors(60, 11, seed=0)
    own = epoch_census(x, y, margin=0.3, metric=metric, max_anchors=11)
    np.testing.assert_array_equal(own.anchors, picked)
    where = np.empty(60, np.int64)
    where[order] = np.arange(60)
    moved = epoch_census(x[order].copy(), y[order], margin=0.3, metric=metric, anchors=np.sort(where[picked]),
                         overwrite=True)
    assert (moved.total_easy, moved.total_semihard, moved.total_hard) == (own.total_easy, own.total_semihard,
                                                                           own.total_hard)
    assert sample_anchors(60, 60) is None and sample_anchors(60, None) is None
