"""One normalisation policy for every routine that compares rows by cosine: torch.nn.functional.normalize's (the
model's head and PML's CosineSimilarity), where a zero row stays zero, so its distance to every row is 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.twins import brute_distance
from trainer.analysis.distances import check_metric, metric_rows, unit_rows
from trainer.analysis.index import NeighbourIndex
from trainer.analysis.pairs import pair_distances
from trainer.analysis.verification import pair_histograms


def _rows(seed=0, n=12, d=5):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    x[4] = 0.0  # a zero row
    return x


def test_unit_rows_is_torch_normalize_bit_for_bit_and_keeps_zero_rows():
    x = _rows()
    want = torch.nn.functional.normalize(torch.from_numpy(x), p=2, dim=1).numpy()
    np.testing.assert_array_equal(unit_rows(x), want)
    assert not unit_rows(x)[4].any()
    for i in range(len(x)):  # against a plain loop
        norm = sum(float(v) ** 2 for v in x[i]) ** 0.5
        for j in range(x.shape[1]):
            assert unit_rows(x)[i, j] == pytest.approx(x[i, j] / max(norm, 1e-12), abs=1e-6)
    inplace = x.copy()
    assert unit_rows(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, want)
    np.testing.assert_array_equal(metric_rows(x, "euclidean"), x)
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        check_metric("l1")


def test_read_only_rows_give_the_same_unit_rows_without_a_warning_and_stay_untouched():
    x = _rows(n=23, d=7)
    want = unit_rows(x)
    ro = x.copy()
    ro.flags.writeable = False
    got = unit_rows(ro)  # pytest turns torch's "not writable" warning into an error
    np.testing.assert_array_equal(got, want)
    assert got.flags.writeable and not ro.flags.writeable
    np.testing.assert_array_equal(ro, x)
    np.testing.assert_array_equal(metric_rows(ro, "cosine"), want)
    with pytest.raises(ValueError, match="read-only"):
        unit_rows(ro, out=ro)
    np.testing.assert_array_equal(ro, x)


def test_a_zero_row_is_at_distance_one_in_every_routine():
    x = _rows()
    others = np.array([j for j in range(len(x)) if j != 4])
    d = pair_distances(x, np.full(len(others), 4), others, metric="cosine")
    np.testing.assert_allclose(d, 1.0, atol=1e-6)
    for j in others[:3]:  # away from the zero row, the brute-force distance
        assert pair_distances(x, np.array([0]), np.array([j]))[0] == pytest.approx(brute_distance(x[0], x[j], "cosine"),
                                                                                   abs=1e-6)
    index = NeighbourIndex(x, metric="cosine")
    dist, ids = index.search(x[4:5], k=len(x), exclude_self_ids=[4])
    assert sorted(ids[0].tolist()) == others.tolist()
    np.testing.assert_allclose(dist[0], 1.0, atol=1e-6)
    labels = np.arange(len(x)) % 3
    h = pair_histograms(x, labels, metric="cosine", bins=2000, max_distance=2.0)
    counts = h.genuine + h.impostor
    edges = h.edges
    near_one = (edges[:-1] <= 1.0) & (edges[1:] >= 1.0 - 1e-3)
    assert counts[near_one].sum() >= len(others)  # the zero row's 11 pairs sit at d = 1
