"""Projection: Procrustes against a brute-force search, warm starts keep the map still, sampling, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trainer.analysis import projection

from trainer.analysis import projection_worker
from tests.support.processes import kill_under_request
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
    aligned = projection.procrustes_align(src, dst)
    err = ((aligned - dst) ** 2).sum()
    brute_err, brute_xy = _brute_procrustes(src, dst)
    assert err <= brute_err + 1e-6  # closed form is at least as good as the grid optimum
    assert np.allclose(aligned, brute_xy, atol=0.05)
    s, rot, t = projection.procrustes_fit(src, dst)
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
    out = projection.procrustes_align(moved, ref[:20], mask)
    assert np.allclose(out[:20], ref[:20], atol=1e-4)


@pytest.mark.filterwarnings("ignore:Graph is not fully connected:UserWarning")
def test_umap_warm_start_moves_points_less_than_a_cold_refit():
    x, labels = _blobs(300)
    first = projection.project(x, "umap", seed=0, n_epochs=60)
    assert first.xy.shape == (300, 2) and first.xy.dtype == np.float32 and np.isfinite(first.xy).all()
    x2 = x + np.random.default_rng(5).normal(scale=0.02, size=x.shape).astype(np.float32)
    warm = projection.project(x2, "umap", previous=first.xy, previous_ids=np.arange(300), seed=0, n_epochs=30)
    cold = projection.project(x2, "umap", seed=7, n_epochs=60)
    assert warm.warm and "aligned" in warm.note
    scale = np.ptp(first.xy, axis=0).max()
    d_warm = np.linalg.norm(warm.xy - first.xy, axis=1).mean() / scale
    cold_aligned = projection.procrustes_align(cold.xy, first.xy)  # even the fairest cold map moves more
    d_cold = np.linalg.norm(cold_aligned - first.xy, axis=1).mean() / scale
    # (a cold fit starts from PCA, itself fairly stable; the warm start still moves points clearly less)
    assert d_warm < 0.75 * d_cold
    assert d_warm < 0.07


def test_pca_layout_is_aligned_and_handles_new_ids():
    x, _ = _blobs(200, seed=3)
    first = projection.project(x, "pca", ids=np.arange(200))
    # next epoch: sign flip of the embedding (PCA would flip the map) and ten new samples, five dropped
    x2 = np.concatenate([-x[5:], _blobs(10, seed=9)[0]])
    ids2 = np.concatenate([np.arange(5, 200), np.arange(1000, 1010)])
    second = projection.project(x2, "pca", previous=first.xy, previous_ids=np.arange(200), ids=ids2)
    assert second.xy.shape == (205, 2)
    # the flip is undone by the alignment; the axes shift only a little with 10 new and 5 dropped samples
    span = np.ptp(first.xy, axis=0).max()
    assert np.abs(second.xy[:195] - first.xy[5:]).max() < 0.02 * span
    unaligned = projection.project(x2, "pca", ids=ids2)
    assert np.abs(unaligned.xy[:195] - first.xy[5:]).max() > 0.5 * span


def test_large_n_is_fitted_on_a_stratified_sample():
    x, labels = _blobs(900, d=8, k=3)
    lay = projection.project(x, "pca", labels=labels, max_fit=300)
    assert lay.xy.shape == (900, 2)
    rows = projection._stratified_sample(900, labels, 300, seed=0)
    assert len(np.unique(rows)) == len(rows) and np.bincount(labels[rows]).min() >= 90
    lay = projection.project(x, "tsne", labels=labels, max_fit=150, n_epochs=250)
    assert "stratified sample of" in lay.note and np.isfinite(lay.xy).all()
    # points outside the sample land in their own cluster: nearest sampled neighbour has their label
    centre = np.array([lay.xy[labels == c].mean(0) for c in range(3)])
    nearest = np.argmin(((lay.xy[:, None] - centre[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.95


def test_knn_graph_matches_brute_force():
    x, _ = _blobs(120, d=6)
    ind, dist = projection.knn_graph(x, 5)
    for i in range(len(x)):
        d = [float(np.sqrt(((x[i] - x[j]) ** 2).sum())) for j in range(len(x))]
        order = sorted(range(len(x)), key=lambda j: d[j])[:5]
        assert ind[i, 0] == i
        assert np.allclose(sorted(dist[i]), [d[j] for j in order], atol=1e-3)


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="NaN"):
        projection.project(np.full((10, 3), np.nan, np.float32), "pca")
    with pytest.raises(ValueError, match="unknown projection method"):
        projection.project(np.zeros((10, 3), np.float32), "mds")
    with pytest.raises(projection.ProjectionCancelled):
        projection.project(_blobs(50)[0], "umap", is_cancelled=lambda: True)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie not yet reaped counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def test_projection_worker_process_matches_in_process_and_survives_errors_cancels_and_crashes():
    import os
    import signal
    import time

    x, _ = _blobs(200, seed=4)
    w = projection_worker.ProjectionWorker(warm=False)  # PCA only: no numba compile, the test stays fast
    try:
        pid = w.pid
        assert pid != os.getpid() and w.is_alive()
        if hasattr(os, "getpriority"):  # the map yields the CPU to the window
            w.call("ping")  # the child has started its loop (and reniced itself)
            assert os.getpriority(os.PRIO_PROCESS, pid) >= os.getpriority(os.PRIO_PROCESS, 0) + projection_worker.WORKER_NICE or \
                os.getpriority(os.PRIO_PROCESS, pid) == 19
        first = w.project(x, "pca", ids=np.arange(200))
        ref = projection.project(x, "pca", ids=np.arange(200))
        assert np.array_equal(first.xy, ref.xy) and first.method == "pca"
        # warm start arguments travel too
        second = w.project(-x, "pca", previous=first.xy, previous_ids=np.arange(200))
        assert second.warm and np.allclose(second.xy, first.xy, atol=1e-3 * np.ptp(first.xy))
        # bad input: the child's clear error comes back, the child lives on
        with pytest.raises(RuntimeError, match="NaN"):
            w.project(np.full((10, 3), np.nan, np.float32), "pca")
        # a cancelled call returns at once; its late answer is dropped, the next call gets its own result
        with pytest.raises(projection.ProjectionCancelled):
            w.project(x, "pca", is_cancelled=lambda: True)
        third = w.project(x[:50], "pca")
        assert third.xy.shape == (50, 2)
        assert w.call("ping") == pid
        # the child dies: a clear error, then a fresh child on the next call
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"ended unexpectedly \(killed by SIGKILL"):  # the real cause
            w.call("ping", timeout=10)
        new_pid = w.call("ping", timeout=60)
        assert new_pid != pid
    finally:
        t0 = time.perf_counter()
        w.close()
    assert time.perf_counter() - t0 < 3.0
    assert not w.is_alive() and not _alive(new_pid)
    with pytest.raises(RuntimeError, match="shut down|closed"):
        w.call("ping")


def test_a_map_whose_process_dies_under_it_is_computed_again_in_a_fresh_one():
    # issue 15 item 1: after continued training the map of the last epoch failed with "the projection process
    # ended unexpectedly" and was never drawn. One death under a request now costs a restart, not the map.
    x, _ = _blobs(200, seed=5)
    ref = projection.project(x, "pca", ids=np.arange(200))
    w = projection_worker.ProjectionWorker(warm=False)
    try:
        first_pid = w.call("ping", timeout=60)
        killed = kill_under_request(w, 1)
        said = []
        layout = w.project(x, "pca", ids=np.arange(200), progress=lambda f, t="": said.append(t))
        assert killed == [first_pid] and w.restarts == 1
        assert np.array_equal(layout.xy, ref.xy)  # the same request, answered by the new child
        assert w.pid != first_pid and w.is_alive()
        assert any("killed by SIGKILL" in t and "starting it again" in t for t in said)
        # a second death in the same request is an error that names the cause; the worker still recovers
        kill_under_request(w, 2)
        with pytest.raises(projection_worker.WorkerDied, match=r"ended unexpectedly again.*killed by SIGKILL"):
            w.project(x, "pca", ids=np.arange(200))
        assert w.restarts == 2
        del w._send  # the class's own again
        assert np.array_equal(w.project(x, "pca", ids=np.arange(200)).xy, ref.xy)
    finally:
        w.close()


@pytest.mark.filterwarnings("ignore:Graph is not fully connected:UserWarning")
def test_umap_fit_stops_within_an_epoch_when_cancelled():
    x, _ = _blobs(300)
    seen = []

    def progress(f, text=""):
        seen.append(f)

    stop = lambda: any(0.3 < f < 0.95 for f in seen)  # noqa: E731 - cancel once the epochs are well under way
    with pytest.raises(projection.ProjectionCancelled):
        projection.project(x, "umap", n_epochs=400, progress=progress, is_cancelled=stop)
    umap_part = [f for f in seen if f >= 0.15]
    assert len(umap_part) >= 2 and umap_part == sorted(umap_part)  # per-epoch progress, rising
    assert max(seen) < 0.95  # stopped long before the end


def test_requests_to_the_worker_carry_arrays_out_of_band_and_arrive_intact():
    # the epoch goes to the child as raw buffers (no 512 MB pickle built under the GIL); it must arrive equal,
    # with its dtype and shape, and writable (the child normalises rows in place)
    import multiprocessing

    a, b = multiprocessing.Pipe()
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3000, 17)).astype(np.float32)
    ids = np.arange(3000, dtype=np.int64)[::-1].copy()
    msg = (7, "project", {"embeddings": emb, "ids": ids, "previous": None, "method": "umap", "seed": 3})
    import threading

    got = []
    t = threading.Thread(target=lambda: got.append(projection_worker._recv_request(b)))
    t.start()
    projection_worker._send_request(a, msg)
    t.join(10)
    rid, op, kw = got[0]
    assert (rid, op, kw["method"], kw["seed"], kw["previous"]) == (7, "project", "umap", 3, None)
    assert kw["embeddings"].dtype == np.float32 and np.array_equal(kw["embeddings"], emb)
    assert kw["ids"].dtype == np.int64 and np.array_equal(kw["ids"], ids)
    assert kw["embeddings"].flags.writeable and kw["embeddings"].base is not emb
    kw["embeddings"] *= 2  # writable, and not the sender's memory
    assert np.array_equal(emb * 2, kw["embeddings"])
    projection_worker._send_request(a, None)
    assert projection_worker._recv_request(b) is None


def test_the_garbage_collector_is_paused_while_a_worker_thread_may_compile_and_restored_after(monkeypatch, request):
    import gc
    import threading

    from trainer.analysis import projection as proj

    monkeypatch.setattr(proj, "is_warm", lambda: False)
    seen = {}

    def fake(*args, **kwargs):
        seen[threading.current_thread().name] = gc.isenabled()
        return "layout"

    monkeypatch.setattr(proj, "_project", fake)
    was_enabled = gc.isenabled()  # off after the GUI tests, which collect on the GUI thread's timer instead
    gc.enable()  # this test starts from Python's usual state
    request.addfinalizer(lambda: None if was_enabled else gc.disable())
    assert gc.isenabled()
    t = threading.Thread(target=lambda: proj.project(np.zeros((3, 2)), "umap"), name="worker")
    t.start()
    t.join()
    assert seen["worker"] is False and gc.isenabled()  # paused in the worker, enabled again after
    proj.project(np.zeros((3, 2)), "umap")  # on the main thread nothing is paused
    assert seen[threading.main_thread().name] is True
    t = threading.Thread(target=lambda: proj.project(np.zeros((3, 2)), method="pca"), name="pca")
    t.start()
    t.join()
    assert seen["pca"] is True  # PCA compiles nothing
