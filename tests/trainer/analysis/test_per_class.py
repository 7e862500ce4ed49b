"""Per-class FAR / FRR at one threshold (issue 17 item 7) against a pair-by-pair loop."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.twins import brute_distance
from trainer.analysis.thresholds import per_class_rates, spread_summary


def _brute(x, y, t, metric):
    classes = sorted(set(y.tolist()))
    gen = {c: [0, 0] for c in classes}
    imp = {c: [0, 0] for c in classes}
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            acc = brute_distance(x[i], x[j], metric) <= t
            if y[i] == y[j]:
                gen[y[i]][0] += 1
                gen[y[i]][1] += acc
            else:
                for c in (y[i], y[j]):
                    imp[c][0] += 1
                    imp[c][1] += acc
    far = [imp[c][1] / imp[c][0] if imp[c][0] else np.nan for c in classes]
    frr = [1 - gen[c][1] / gen[c][0] if gen[c][0] else np.nan for c in classes]
    return classes, far, frr


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_per_class_rates_equal_a_pair_by_pair_count(metric):
    rng = np.random.default_rng(3)
    y = np.repeat([4, 7, 9, 11, 12], [6, 5, 1, 7, 4])  # class 9 has a single image: no genuine pair
    x = (rng.normal(size=(5, 6))[np.searchsorted([4, 7, 9, 11, 12], y)] + 0.8 * rng.normal(size=(len(y), 6)))
    x = x.astype(np.float32)
    t = 0.6 if metric == "cosine" else 2.5
    got = per_class_rates(x, y, t, metric=metric, block_bytes=2048)  # several blocks
    classes, far, frr = _brute(x, y, t, metric)
    assert got["classes"].tolist() == classes
    np.testing.assert_allclose(got["far"], far, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(got["frr"], frr, rtol=1e-6, equal_nan=True)
    s = spread_summary(got, class_names={c: f"class {c}" for c in classes})
    ok = np.asarray(far)[np.isfinite(far)]
    assert s["far"]["max"] == pytest.approx(ok.max()) and s["far"]["std"] == pytest.approx(ok.std())
    assert s["frr"]["n_classes"] == 4 and s["far"]["worst"][0][1] == pytest.approx(ok.max())


def _brute_opis(x, y, edges, metric, far_range):
    """OPIS by a loop over the pairs at every threshold: per-class and overall TAR / TNR, their harmonic means."""
    pairs = [(i, j, brute_distance(x[i], x[j], metric), y[i] == y[j]) for i in range(len(x)) for j in range(i + 1, len(x))]
    classes = sorted(set(y.tolist()))
    n_imp = sum(1 for p in pairs if not p[3])
    fars = [sum(1 for p in pairs if not p[3] and p[2] <= t) / n_imp for t in edges]
    inside = [k for k, f in enumerate(fars) if far_range[0] <= f <= far_range[1]]
    if not inside:
        inside = [k for k, f in enumerate(fars) if 0 < f <= far_range[1]]

    def u(tar, tnr):
        return 0.0 if tar + tnr == 0 else 2 * tar * tnr / (tar + tnr)

    sq = []
    for c in classes:
        gen = [p for p in pairs if p[3] and y[p[0]] == c]
        imp = [p for p in pairs if not p[3] and c in (y[p[0]], y[p[1]])]
        if not gen or not imp:
            continue
        for k in inside:
            t = edges[k]
            tar_all = sum(1 for p in pairs if p[3] and p[2] <= t) / sum(1 for p in pairs if p[3])
            uc = u(sum(p[2] <= t for p in gen) / len(gen), 1 - sum(p[2] <= t for p in imp) / len(imp))
            sq.append((uc - u(tar_all, 1 - fars[k])) ** 2)
    return float(np.mean(sq)), len(inside)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_per_class_histograms_and_opis_equal_pair_loops(metric):
    from trainer.analysis.thresholds import opis, per_class_histograms

    rng = np.random.default_rng(5)
    y = np.repeat([0, 3, 5, 8], [7, 6, 1, 5])
    x = (rng.normal(size=(4, 5))[np.searchsorted([0, 3, 5, 8], y)] + 0.9 * rng.normal(size=(len(y), 5)))
    x = x.astype(np.float32)
    edges = np.linspace(0.05, 2.0 if metric == "cosine" else 6.0, 23)
    h = per_class_histograms(x, y, edges, metric=metric, block_bytes=1024)
    for ci, c in enumerate([0, 3, 5, 8]):
        gen = [brute_distance(x[i], x[j], metric) for i in range(len(x)) for j in range(i + 1, len(x))
               if y[i] == y[j] == c]
        imp = [brute_distance(x[i], x[j], metric) for i in range(len(x)) for j in range(i + 1, len(x))
               if y[i] != y[j] and c in (y[i], y[j])]
        for k, t in enumerate(edges):  # accepted at edges[k] = the cumulative count up to bin k
            assert h["genuine"][ci, : k + 1].sum() == sum(d <= t for d in gen)
            assert h["impostor"][ci, : k + 1].sum() == sum(d <= t for d in imp)
        assert h["genuine"][ci].sum() == len(gen) and h["impostor"][ci].sum() == len(imp)

    got = opis(x, y, metric=metric, far_range=(0.05, 0.4), bins=40)
    top = 2.0 if metric == "cosine" else float(2 * np.sqrt(((x - x.mean(0)) ** 2).sum(1)).max())
    want, n_t = _brute_opis(x, y, np.linspace(0, top, 41)[1:], metric, (0.05, 0.4))
    assert got["n_thresholds"] == n_t > 1 and got["n_classes"] == 3  # class 5 has no genuine pair
    assert got["opis"] == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert 0.05 <= got["far_range"][0] <= got["far_range"][1] <= 0.4


def test_opis_is_zero_for_identical_classes_and_grows_with_unequal_ones():
    from trainer.analysis.thresholds import opis

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16)).astype(np.float32)
    y = np.repeat(np.arange(8), 12)
    tight = centres[y] + 0.05 * rng.normal(size=(len(y), 16)).astype(np.float32)
    spread = np.where((y % 2 == 0)[:, None], 0.05, 0.6).astype(np.float32)  # half the classes far looser
    loose = centres[y] + spread * rng.normal(size=(len(y), 16)).astype(np.float32)
    a = opis(tight, y, far_range=(1e-3, 1e-1))["opis"]
    b = opis(loose, y, far_range=(1e-3, 1e-1))["opis"]
    assert a < 1e-3 < b
