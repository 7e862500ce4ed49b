"""Suspected mislabels (issue 18 item 3): neighbour votes against a loop, and flipped labels ranked first."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.twins import brute_distance
from trainer.analysis.label_issues import neighbour_probabilities, rank_label_issues


def test_neighbour_votes_equal_a_loop():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, size=40)
    x = (rng.normal(size=(4, 5))[y] + rng.normal(size=(40, 5))).astype(np.float32)
    got = neighbour_probabilities(x, y, "euclidean", k=6, smoothing=0.5)
    for i in range(40):
        near = sorted(((brute_distance(x[i], x[j], "euclidean"), j) for j in range(40) if j != i))[:6]
        votes = np.full(4, 0.5)
        for _, j in near:
            votes[y[j]] += 1
        np.testing.assert_allclose(got[i], votes / votes.sum(), atol=1e-9)


def test_flipped_labels_are_ranked_first():
    rng = np.random.default_rng(2)
    n_classes, per = 8, 40
    y_true = np.repeat(np.arange(n_classes), per)
    x = (4 * rng.normal(size=(n_classes, 16))[y_true] + rng.normal(size=(len(y_true), 16))).astype(np.float32)
    flipped = rng.choice(len(y_true), size=len(y_true) // 10, replace=False)
    y = y_true.copy()
    y[flipped] = (y[flipped] + rng.integers(1, n_classes, size=len(flipped))) % n_classes
    r = rank_label_issues(x, y, "euclidean", k=10)
    top = set(r["order"][: len(flipped)].tolist())
    assert len(top & set(flipped.tolist())) / len(flipped) >= 0.9
    assert "cleanlab" in r["method"]
    assert (r["suggested"][flipped] == y_true[flipped]).mean() >= 0.9  # the neighbours know the right class


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_closest_pairs_equal_a_sort_of_every_pair(metric):
    from tests.support.twins import brute_distance
    from trainer.analysis.label_issues import closest_pairs

    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    x[7] = x[3] + 0.01  # near-duplicates, and a little cluster of three (distances far apart: no float ties)
    x[20] = x[21] + 0.03
    x[22] = x[21] + 0.07
    pairs = sorted((brute_distance(x[i], x[j], metric), i, j) for i in range(40) for j in range(i + 1, 40))
    i, j, d = closest_pairs(x, metric, n=15)
    assert [(int(a), int(b)) for a, b in zip(i, j)] == [(a, b) for _, a, b in pairs[:15]]
    np.testing.assert_allclose(d, [v for v, _, _ in pairs[:15]], rtol=1e-4, atol=1e-5)


def test_closest_pairs_from_a_search_done_already_are_the_same():
    from trainer.analysis.index import NeighbourIndex
    from trainer.analysis.label_issues import closest_pairs

    x = np.random.default_rng(9).normal(size=(60, 5)).astype(np.float32)
    knn = NeighbourIndex(x, metric="euclidean").exact_search(x, 30, exclude_self_ids=np.arange(60))
    a = closest_pairs(x, "euclidean", n=20)
    b = closest_pairs(x, "euclidean", n=20, knn=knn)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
