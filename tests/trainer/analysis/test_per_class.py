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
