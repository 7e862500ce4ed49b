"""Projection: Procrustes against a brute-force search, warm starts keep the map still, sampling, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trainer import projection as P


def _blobs(n=300, d=16, k=5, seed=0, spread=4.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * spread
    labels = np.arange(n) % k
    return (centres[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def _brute_procrustes(src, dst):
    """Plain search: every angle on a fine grid, with and without reflection; best scale/shift in closed form."""
    best = (np.inf, None)
    for reflect, deg in itertools.product((False, True), np.arange(0, 360, 0.25)):
        a = np.deg2rad(deg)
        r = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
        if reflect:
            r = np.array([[1.0, 0.0], [0.0, -1.0]]) @ r
        rows = []
        for p in src:  # rotate point by point
            rows.append([p[0] * r[0, 0] + p[1] * r[1, 0], p[0] * r[0, 1] + p[1] * r[1, 1]])
        q = np.array(rows)
        qc, dc = q - q.mean(0), dst - dst.mean(0)
        s = max((qc * dc).sum() / (qc * qc).sum(), 0.0)
        t = dst.mean(0) - s * q.mean(0)
        err = sum(((s * q[i] + t - dst[i]) ** 2).sum() for i in range(len(q)))
        if err < best[0]:
            best = (err, s * q + t)
    return best


def test_procrustes_matches_brute_force_search():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(40, 2))
    a = 0.7
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.diag([1, -1])
    dst = 2.5 * src @ r + [3.0, -1.0] + rng.normal(scale=0.05, size=src.shape)
    aligned = P.procrustes_align(src, dst)
    err = ((aligned - dst) ** 2).sum()
    brute_err, brute_xy = _brute_procrustes(src, dst)
    assert err <= brute_err + 1e-6  # closed form is at least as good as the grid optimum
    assert np.allclose(aligned, brute_xy, atol=0.05)
    s, rot, t = P.procrustes_fit(src, dst)
    assert s == pytest.approx(2.5, rel=0.02)
    assert np.allclose(rot @ rot.T, np.eye(2), atol=1e-9)


def test_procrustes_mask_uses_only_common_points():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(30, 2))
    ref = src * 3.0 + 1.0
    mask = np.zeros(30, bool)
    mask[:20] = True
    moved = src.copy()
    moved[20:] += 100.0  # outliers outside the mask must not influence the fit
    out = P.procrustes_align(moved, ref[:20], mask)
    assert np.allclose(out[:20], ref[:20], atol=1e-4)


@pytest.mark.filterwarnings("ignore:Graph is not fully connected:UserWarning")
def test_umap_warm_start_moves_points_less_than_a_cold_refit():
    x, labels = _blobs(300)
    first = P.project(x, "umap", seed=0, n_epochs=60)
    assert first.xy.shape == (300, 2) and first.xy.dtype == np.float32 and np.isfinite(first.xy).all()
    x2 = x + np.random.default_rng(5).normal(scale=0.02, size=x.shape).astype(np.float32)
    warm = P.project(x2, "umap", previous=first.xy, previous_ids=np.arange(300), seed=0, n_epochs=30)
    cold = P.project(x2, "umap", seed=7, n_epochs=60)
    assert warm.warm and "aligned" in warm.note
    scale = np.ptp(first.xy, axis=0).max()
    d_warm = np.linalg.norm(warm.xy - first.xy, axis=1).mean() / scale
    cold_aligned = P.procrustes_align(cold.xy, first.xy)  # even the fairest cold map moves more
    d_cold = np.linalg.norm(cold_aligned - first.xy, axis=1).mean() / scale
    assert d_warm < 0.5 * d_cold
    assert d_warm < 0.05


def test_pca_layout_is_aligned_and_handles_new_ids():
    x, _ = _blobs(200, seed=3)
    first = P.project(x, "pca", ids=np.arange(200))
    # next epoch: sign flip of the embedding (PCA would flip the map) and ten new samples, five dropped
    x2 = np.concatenate([-x[5:], _blobs(10, seed=9)[0]])
    ids2 = np.concatenate([np.arange(5, 200), np.arange(1000, 1010)])
    second = P.project(x2, "pca", previous=first.xy, previous_ids=np.arange(200), ids=ids2)
    assert second.xy.shape == (205, 2)
    # the flip is undone by the alignment; the axes shift only a little with 10 new and 5 dropped samples
    span = np.ptp(first.xy, axis=0).max()
    assert np.abs(second.xy[:195] - first.xy[5:]).max() < 0.02 * span
    unaligned = P.project(x2, "pca", ids=ids2)
    assert np.abs(unaligned.xy[:195] - first.xy[5:]).max() > 0.5 * span


def test_large_n_is_fitted_on_a_stratified_sample():
    x, labels = _blobs(900, d=8, k=3)
    lay = P.project(x, "pca", labels=labels, max_fit=300)
    assert lay.xy.shape == (900, 2)
    rows = P._stratified_sample(900, labels, 300, seed=0)
    assert len(np.unique(rows)) == len(rows) and np.bincount(labels[rows]).min() >= 90
    lay = P.project(x, "tsne", labels=labels, max_fit=150, n_epochs=250)
    assert "stratified sample of" in lay.note and np.isfinite(lay.xy).all()
    # points outside the sample land in their own cluster: nearest sampled neighbour has their label
    centre = np.array([lay.xy[labels == c].mean(0) for c in range(3)])
    nearest = np.argmin(((lay.xy[:, None] - centre[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.95


def test_knn_graph_matches_brute_force():
    x, _ = _blobs(120, d=6)
    ind, dist = P.knn_graph(x, 5)
    for i in range(len(x)):
        d = [float(np.sqrt(((x[i] - x[j]) ** 2).sum())) for j in range(len(x))]
        order = sorted(range(len(x)), key=lambda j: d[j])[:5]
        assert ind[i, 0] == i
        assert np.allclose(sorted(dist[i]), [d[j] for j in order], atol=1e-3)


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="NaN"):
        P.project(np.full((10, 3), np.nan, np.float32), "pca")
    with pytest.raises(ValueError, match="unknown projection method"):
        P.project(np.zeros((10, 3), np.float32), "mds")
    with pytest.raises(P.ProjectionCancelled):
        P.project(_blobs(50)[0], "umap", is_cancelled=lambda: True)
