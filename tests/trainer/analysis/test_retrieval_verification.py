"""trainer.analysis.verification against brute-force twins (plain loops over samples / pairs) and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from trainer.analysis import retrieval

from trainer.analysis import verification
# data and brute-force twins
# ---------------------------------------------------------------------------------------------------------------


def clustered(n: int, n_classes: int, dim: int = 8, seed: int = 0, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = rng.integers(0, n_classes, size=n)
    x = centres[labels] + spread * rng.normal(size=(n, dim))
    return x.astype(np.float32), labels


def bf_distance(x: np.ndarray, metric: str) -> np.ndarray:
    """Full distance matrix by a loop over pairs, float64."""
    x = x.astype(np.float64)
    n = len(x)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if metric == "cosine":
                d[i, j] = 1.0 - x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
            else:
                d[i, j] = math.sqrt(((x[i] - x[j]) ** 2).sum())
    return d


def bf_pairs(x, y, metric):
    """Lists (i, j, d, genuine) over all i < j."""
    d = bf_distance(x, metric)
    out = []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            out.append((i, j, d[i, j], y[i] == y[j]))
    return out


def bf_histograms(x, y, metric, bins, hi):
    gen = np.zeros(bins, dtype=np.int64)
    imp = np.zeros(bins, dtype=np.int64)
    w = hi / bins
    for _, _, d, same in bf_pairs(x, y, metric):
        b = min(max(math.ceil(d / w) - 1, 0), bins - 1)  # right-closed bins (edge_b, edge_b+1]
        if same:
            gen[b] += 1
        else:
            imp[b] += 1
    return gen, imp


def bf_retrieval(x, y, metric, k_values):
    """P@1, R-Precision, MAP@R, Recall@K by loops over queries (self excluded, singleton classes not queried)."""
    d = bf_distance(x, metric)
    n = len(x)
    p1, rp, mapr = [], [], []
    rec = {k: [] for k in k_values}
    for q in range(n):
        r = sum(1 for j in range(n) if j != q and y[j] == y[q])
        if r == 0:
            continue
        ranked = sorted((d[q, j], j) for j in range(n) if j != q)
        rel = [1 if y[j] == y[q] else 0 for _, j in ranked]
        p1.append(rel[0])
        rp.append(sum(rel[:r]) / r)
        hits, ap = 0, 0.0
        for pos in range(r):
            if rel[pos]:
                hits += 1
                ap += hits / (pos + 1)
        mapr.append(ap / r)
        for k in k_values:
            rec[k].append(1 if any(rel[:k]) else 0)
    out = {"precision_at_1": np.mean(p1), "r_precision": np.mean(rp), "mean_average_precision_at_r": np.mean(mapr)}
    out.update({f"recall_at_{k}": np.mean(v) for k, v in rec.items()})
    return out


# ---------------------------------------------------------------------------------------------------------------
# retrieval
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_retrieval_matches_brute_force(metric):
    x, y = clustered(80, 9, seed=1, spread=1.5)
    y[:3] = [100, 101, 102]  # three singleton classes: never queried, still retrievable as negatives
    got = retrieval.retrieval_metrics(x, y, metric=metric, k_values=(1, 2, 4, 8))
    want = bf_retrieval(x, y, metric, (1, 2, 4, 8))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert 0.0 < got["precision_at_1"] < 1.0  # not a degenerate case
    assert 0.0 <= got["ami"] <= got["nmi"] <= 1.0


def test_retrieval_clustering_scores_separated_clusters():
    x, y = clustered(120, 4, seed=2, spread=0.01)
    got = retrieval.retrieval_metrics(x, y)
    assert got["nmi"] == pytest.approx(1.0) and got["ami"] == pytest.approx(1.0)
    assert got["precision_at_1"] == 1.0 and got["mean_average_precision_at_r"] == pytest.approx(1.0)


def test_retrieval_edge_cases():
    with pytest.raises(ValueError, match="N = 0"):
        retrieval.retrieval_metrics(np.zeros((0, 4)), np.zeros(0))
    x, _ = clustered(10, 2)
    one = retrieval.retrieval_metrics(x, np.zeros(10))
    assert all(math.isnan(v) for v in one.values())
    lone = retrieval.retrieval_metrics(x, np.arange(10))  # every class a singleton: nothing to query
    assert math.isnan(lone["precision_at_1"]) and math.isnan(lone["recall_at_1"])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        retrieval.retrieval_metrics(bad, np.zeros(10))
    with pytest.raises(ValueError, match="labels"):
        retrieval.retrieval_metrics(x, np.zeros(9))
    with pytest.raises(ValueError, match="metric"):
        retrieval.retrieval_metrics(x, np.zeros(10), metric="manhattan")


# ---------------------------------------------------------------------------------------------------------------
# pair histograms
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_histograms_exact_counts(metric):
    x, y = clustered(60, 5, seed=3)
    h = verification.pair_histograms(x, y, metric=metric, bins=256)
    gen, imp = bf_histograms(x, y, metric, 256, h.edges[-1])
    assert h.genuine.dtype == np.int64
    np.testing.assert_array_equal(h.genuine, gen)
    np.testing.assert_array_equal(h.impostor, imp)
    assert h.n_genuine + h.n_impostor == 60 * 59 // 2


def test_histograms_fine_bins_and_chunking():
    """Many row blocks and diagonal tiles (N > tile size) give the same counts as one block; fine bins agree with
    the loops up to pairs within float32 rounding (~1e-7) of a bin edge."""
    x, y = clustered(300, 12, seed=4)
    one = verification.pair_histograms(x, y, bins=2**15)
    many = verification.pair_histograms(x, y, bins=2**15, block_bytes=4 * 303 * 70)  # 70-row blocks
    np.testing.assert_array_equal(one.genuine, many.genuine)
    np.testing.assert_array_equal(one.impostor, many.impostor)
    gen, imp = bf_histograms(x, y, "cosine", 2**15, 2.0)
    assert one.n_genuine == gen.sum() and one.n_impostor == imp.sum()
    assert np.abs(np.cumsum(one.genuine) - np.cumsum(gen)).max() <= 2
    assert np.abs(np.cumsum(one.impostor) - np.cumsum(imp)).max() <= 2
    assert np.abs(one.genuine - gen).sum() + np.abs(one.impostor - imp).sum() <= 0.01 * len(y) ** 2 / 2


def test_histogram_bins_are_right_closed():
    """Integer coordinates make every distance exact: a pair at d = 5 lies in (4, 5] and is accepted at t = 5."""
    x = np.array([[0, 0], [3, 4], [-3, -4], [0, 0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    h = verification.pair_histograms(x, y, metric="euclidean", bins=16, max_distance=16.0)
    # pairs: (0,1) d=5 gen, (0,2) d=5 imp, (0,3) d=0 imp, (1,2) d=10 imp, (1,3) d=5 imp, (2,3) d=5 gen
    assert h.genuine[4] == 2 and h.genuine.sum() == 2
    assert h.impostor[0] == 1 and h.impostor[4] == 2 and h.impostor[9] == 1
    op = verification.operating_point(h, 5.0)
    assert (op["genuine_accepted"], op["impostor_accepted"]) == (2, 3)
    op = verification.operating_point(h, 4.999)  # rounds down to the edge 4.0
    assert (op["genuine_accepted"], op["impostor_accepted"], op["threshold"]) == (0, 1, 4.0)


# ---------------------------------------------------------------------------------------------------------------
# ROC
# ---------------------------------------------------------------------------------------------------------------


def _sk_eer(same, d):
    fpr, tpr, thr = roc_curve(same, -d, drop_intermediate=False)
    diff = fpr - (1 - tpr)
    k = int(np.argmax(diff >= 0))
    a = -diff[k - 1] / (diff[k] - diff[k - 1])
    return fpr[k - 1] + a * (fpr[k] - fpr[k - 1])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_roc_matches_sklearn(metric):
    x, y = clustered(150, 10, seed=5, spread=1.3)
    h = verification.pair_histograms(x, y, metric=metric)
    roc = verification.roc_from_histograms(h)
    pairs = bf_pairs(x, y, metric)
    d = np.array([p[2] for p in pairs])
    same = np.array([p[3] for p in pairs])
    auc = roc_auc_score(same, -d)
    assert 0.6 < auc < 0.99
    assert abs(roc.auc - auc) <= roc.auc_error_bound + 1e-7
    assert roc.auc_error_bound < 1e-3
    assert roc.eer == pytest.approx(_sk_eer(same, d), abs=1e-3)
    assert roc.n_genuine == same.sum() and roc.n_impostor == (~same).sum()
    # FAR and TAR at every edge, by counting pairs
    for k in (0, 100, len(h.edges) // 3, len(h.edges) // 2, len(h.edges) - 1):
        t = h.edges[k]
        if k == 0:
            assert roc.far[0] == 0.0 and roc.tar[0] == 0.0
            continue
        w = h.bin_width
        accepted = np.array([min(max(math.ceil(v / w) - 1, 0), h.bins - 1) < k for v in d])
        assert roc.far[k] == pytest.approx(accepted[~same].mean(), abs=1e-12)
        assert roc.tar[k] == pytest.approx(accepted[same].mean(), abs=1e-12)
        assert np.isclose(t, k * w)


def test_operating_point_and_threshold_pickers_exact():
    x, y = clustered(90, 6, seed=6, spread=1.2)
    h = verification.pair_histograms(x, y, bins=512)
    pairs = bf_pairs(x, y, "cosine")
    w = h.bin_width
    binned = [(min(max(math.ceil(d / w) - 1, 0), 511), s) for _, _, d, s in pairs]
    for t in (h.edges[200], h.edges[300], 0.77):
        k = int(np.searchsorted(h.edges, t, side="right")) - 1
        ga = sum(1 for b, s in binned if s and b < k)
        ia = sum(1 for b, s in binned if not s and b < k)
        ng = sum(1 for _, s in binned if s)
        ni = len(binned) - ng
        op = verification.operating_point(h, t)
        assert (op["genuine_accepted"], op["genuine_rejected"]) == (ga, ng - ga)
        assert (op["impostor_accepted"], op["impostor_rejected"]) == (ia, ni - ia)
        assert op["accuracy"] == pytest.approx((ga + ni - ia) / len(binned))
        assert op["far"] == pytest.approx(ia / ni) and op["frr"] == pytest.approx(1 - ga / ng)
    for far in (0.3, 0.1, 0.01, 1e-3):
        t = verification.threshold_at_far(h, far)
        got = verification.operating_point(h, t)["far"]
        assert got <= far
        nxt = verification.operating_point(h, t + w)["far"]  # the next edge would exceed it (largest such threshold)
        assert nxt > far or t + w > h.edges[-1]
    roc = verification.roc_from_histograms(h)
    t = roc.eer_threshold
    lo = verification.operating_point(h, t - w)
    hi = verification.operating_point(h, t + w)
    assert lo["far"] <= roc.eer <= hi["far"] and hi["frr"] <= roc.eer <= lo["frr"]


def test_insufficient_pairs_guard():
    x, y = clustered(40, 4, seed=7)
    h = verification.pair_histograms(x, y)
    roc = verification.roc_from_histograms(h)
    ni = h.n_impostor  # ~585: 1e-1 -> 58 expected false accepts (ok), 1e-2 -> 5.8 (too few)
    for far, entry in roc.tar_at_far.items():
        assert entry.sufficient == (ni * far >= verification.MIN_FALSE_ACCEPTS)
        assert math.isnan(entry.tar) != entry.sufficient
        assert entry.achieved_far <= far
    assert roc.tar_at_far[0.1].sufficient and not roc.tar_at_far[0.01].sufficient
    m = verification.verification_metrics(x, y)
    assert set(m) == {"auc", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3"}
    assert math.isnan(m["tar_at_far_1e-2"]) and m["auc"] == pytest.approx(roc.auc)
    empty = verification.roc_from_histograms(verification.pair_histograms(x, np.arange(40)))  # no genuine pairs
    assert math.isnan(empty.auc) and math.isnan(empty.eer)


# ---------------------------------------------------------------------------------------------------------------
# grouped counts (engine of CV and bootstrap), CV threshold, bootstrap
# ---------------------------------------------------------------------------------------------------------------


def test_grouped_counts_match_loops():
    x, y = clustered(160, 9, seed=8)
    group_of_class = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    bins = 128
    gen, imp = verification._grouped_counts(xn, y, "cosine", bins, 2.0, groups=group_of_class[y], n_groups=3,
                                  block_bytes=4 * 163 * 50)
    pid = {(g, h): n for n, (g, h) in enumerate(zip(*np.triu_indices(3)))}
    bg = np.zeros_like(gen)
    bi = np.zeros_like(imp)
    for i, j, d, same in bf_pairs(x, y, "cosine"):
        g, h = sorted((group_of_class[y[i]], group_of_class[y[j]]))
        b = min(max(math.ceil(d / (2.0 / bins)) - 1, 0), bins - 1)
        (bg if same else bi)[pid[(g, h)], b] += 1
    np.testing.assert_array_equal(gen, bg)
    np.testing.assert_array_equal(imp, bi)


def test_cv_threshold_against_loops():
    x, y = clustered(120, 10, seed=9, spread=1.3)
    bins = 64
    res = verification.best_accuracy_threshold_cv(x, y, folds=5, seed=3, bins=bins)
    # twin: the same class split, then loops over pairs and thresholds
    rng = np.random.default_rng(3)
    fold_of_class = np.empty(10, dtype=int)
    for f, part in enumerate(np.array_split(rng.permutation(10), 5)):
        fold_of_class[part] = f
    w = 2.0 / bins
    pairs = [(fold_of_class[y[i]], fold_of_class[y[j]], min(max(math.ceil(d / w) - 1, 0), bins - 1), s)
             for i, j, d, s in bf_pairs(x, y, "cosine")]

    def bal_acc(sel, k):
        g = [b for _, _, b, s in sel if s]
        im = [b for _, _, b, s in sel if not s]
        return 0.5 * (sum(b < k for b in g) / len(g) + sum(b >= k for b in im) / len(im))

    accs, thrs = [], []
    for f in range(5):
        train = [p for p in pairs if p[0] != f and p[1] != f]
        test = [p for p in pairs if p[0] == f and p[1] == f]
        scores = [bal_acc(train, k) for k in range(bins + 1)]
        best = [k for k in range(bins + 1) if scores[k] == max(scores)]
        run = [best[0]]
        for k in best[1:]:
            if k != run[-1] + 1:
                break
            run.append(k)
        k = run[len(run) // 2]  # middle of the first run of best thresholds
        accs.append(bal_acc(test, k))
        thrs.append(k * w)
    np.testing.assert_allclose(res["fold_thresholds"], thrs)
    np.testing.assert_allclose(res["fold_accuracies"], accs)
    assert res["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert 0.5 < res["accuracy_mean"] < 1.0
    sep = verification.best_accuracy_threshold_cv(*clustered(100, 10, seed=1, spread=0.01))
    assert sep["accuracy_mean"] == 1.0 and sep["accuracy_std"] == 0.0


def test_bootstrap_ci():
    x, y = clustered(200, 12, seed=10, spread=1.3)
    ci = verification.bootstrap_ci(x, y, n_boot=200, seed=1, bins=4096, far_levels=(1e-2, 1e-4))
    roc = verification.roc_from_histograms(verification.pair_histograms(x, y, bins=4096), far_levels=(1e-2, 1e-4))
    assert ci["auc"].estimate == pytest.approx(roc.auc, abs=1e-12)
    assert ci["eer"].estimate == pytest.approx(roc.eer, abs=1e-12)
    for key in ("auc", "eer", "tar_at_far_0.01"):
        c = ci[key]
        assert c.low < c.estimate < c.high and c.std > 0, key
    assert ci["tar_at_far_0.01"].estimate == pytest.approx(roc.tar_at_far[1e-2].tar, abs=1e-12)
    assert roc.n_impostor * 1e-4 < verification.MIN_FALSE_ACCEPTS  # ~18k impostor pairs: too few for 1e-4
    assert math.isnan(ci["tar_at_far_0.0001"].estimate) and math.isnan(ci["tar_at_far_0.0001"].low)
    again = verification.bootstrap_ci(x, y, n_boot=200, seed=1, bins=4096, far_levels=(1e-2, 1e-4))
    assert again["auc"] == ci["auc"]
    # more classes at the same spread -> narrower interval
    xb, yb = clustered(800, 48, seed=11, spread=1.3)
    wide = ci["auc"].high - ci["auc"].low
    narrow = verification.bootstrap_ci(xb, yb, n_boot=200, seed=1, bins=4096)["auc"]
    assert narrow.high - narrow.low < wide


# ---------------------------------------------------------------------------------------------------------------
# error inspection
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_pairs_and_class_errors(metric):
    x, y = clustered(70, 6, seed=12, spread=1.2)
    pairs = bf_pairs(x, y, metric)
    ds = np.array([p[2] for p in pairs])
    t = float(np.median(ds[[p[3] for p in pairs]]))
    for kind in ("false_accept", "false_reject"):
        i, j, d = retrieval.nearest_pairs(x, y, t, kind=kind, k=7, metric=metric)
        if kind == "false_accept":
            cand = [(abs(dd - t), a, b, dd) for a, b, dd, s in pairs if not s and dd <= t]
        else:
            cand = [(abs(dd - t), a, b, dd) for a, b, dd, s in pairs if s and dd > t]
        cand.sort()
        assert len(cand) > 7
        assert [(a, b) for _, a, b, _ in cand[:7]] == list(zip(i.tolist(), j.tolist()))
        np.testing.assert_allclose(d, [dd for *_, dd in cand[:7]], atol=1e-5)
    got = retrieval.class_error_counts(x, y, t, metric=metric)
    classes = np.unique(y)
    fa = np.zeros(len(classes), dtype=int)
    fr = np.zeros(len(classes), dtype=int)
    ng = np.zeros(len(classes), dtype=int)
    for a, b, dd, s in pairs:
        ca, cb = np.searchsorted(classes, y[a]), np.searchsorted(classes, y[b])
        if s:
            ng[ca] += 1
            fr[ca] += dd > t
        elif dd <= t:
            fa[ca] += 1
            fa[cb] += 1
    np.testing.assert_array_equal(got["classes"], classes)
    np.testing.assert_array_equal(got["false_accepts"], fa)
    np.testing.assert_array_equal(got["false_rejects"], fr)
    np.testing.assert_array_equal(got["genuine_pairs"], ng)
    with pytest.raises(ValueError, match="kind"):
        retrieval.nearest_pairs(x, y, t, kind="both")
