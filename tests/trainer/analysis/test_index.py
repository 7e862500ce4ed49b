"""NeighbourIndex against a brute-force numpy search written with plain loops."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from trainer.analysis.index import NeighbourIndex


def brute_knn(gallery: np.ndarray, queries: np.ndarray, k: int, metric: str, exclude=None):
    """Plain-loop twin: distances in float64, stable sort by (distance, id)."""
    g = gallery.astype(np.float64)
    q = queries.astype(np.float64)
    out_d, out_i = [], []
    for r in range(len(q)):
        cand = []
        for j in range(len(g)):
            if exclude is not None and exclude[r] == j:
                continue
            if metric == "cosine":
                na, nb = np.sqrt(np.dot(q[r], q[r])), np.sqrt(np.dot(g[j], g[j]))
                d = 1.0 - np.dot(q[r], g[j]) / (na * nb)
            else:
                d = np.sqrt(sum((q[r][t] - g[j][t]) ** 2 for t in range(g.shape[1])))
            cand.append((d, j))
        cand.sort()
        cand = cand[:k]
        out_d.append([c[0] for c in cand])
        out_i.append([c[1] for c in cand])
    return np.array(out_d), np.array(out_i, dtype=np.int64)


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(60, 6)).astype(np.float32), rng.normal(size=(7, 6)).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_search_equals_brute_force(data, metric):
    gallery, queries = data
    idx = NeighbourIndex(gallery, metric=metric)
    assert idx.is_exact and idx.recall_at_10 == 1.0
    d, i = idx.search(queries, 5)
    bd, bi = brute_knn(gallery, queries, 5, metric)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, atol=2e-5)
    assert d.dtype == np.float32 and i.dtype == np.int64


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exclude_self_and_k_larger_than_n(data, metric):
    gallery, _ = data
    ids = np.array([0, 13, 59])
    idx = NeighbourIndex(gallery, metric=metric)
    d, i = idx.search(gallery[ids], 100, exclude_self_ids=ids)
    assert i.shape == (3, 59)  # k clamped to n - 1
    bd, bi = brute_knn(gallery, gallery[ids], 100, metric, exclude=ids)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, atol=2e-5)
    assert not (i == ids[:, None]).any()
    # without exclusion the point finds itself first at distance ~0
    d2, i2 = idx.search(gallery[ids], 1000)
    assert i2.shape == (3, 60)
    np.testing.assert_array_equal(i2[:, 0], ids)
    assert np.all(np.abs(d2[:, 0]) < 1e-3)


def test_exclude_self_with_exact_duplicates():
    g = np.ones((5, 3), np.float32)  # all identical: the own id may or may not come back first
    idx = NeighbourIndex(g, metric="euclidean")
    ids = np.arange(5)
    _, i = idx.search(g, 2, exclude_self_ids=ids)
    for r in range(5):
        assert r not in i[r] and len(set(i[r])) == 2


def test_single_vector_query_and_empty_index():
    g = np.eye(4, dtype=np.float32)
    idx = NeighbourIndex(g, metric="cosine")
    d, i = idx.search(g[2], 2)  # 1-D query
    assert i.shape == (1, 2) and i[0, 0] == 2
    empty = NeighbourIndex(np.zeros((0, 4), np.float32))
    d, i = empty.search(g, 3)
    assert d.shape == (4, 0) and i.shape == (4, 0) and len(empty) == 0
    assert empty.measure_recall() == 1.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="2-D"):
        NeighbourIndex(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        NeighbourIndex(np.array([[0.0, np.nan]]))
    idx = NeighbourIndex(np.zeros((3, 4)), metric="euclidean")
    with pytest.raises(ValueError, match="dimension 3"):
        idx.search(np.zeros((1, 3)), 1)
    with pytest.raises(ValueError, match="metric"):
        NeighbourIndex(np.zeros((3, 4)), metric="manhattan")


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_approximate_recall_is_measured(metric, kind):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 16))
    g = (centers[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 16))).astype(np.float32)
    idx = NeighbourIndex(g, metric=metric, exact_limit=1000, recall_queries=100, kind=kind)
    assert not idx.is_exact and idx.kind == kind
    assert idx._flat is None  # the exact copy used to measure recall is not kept with the index
    # recompute the recall by hand against the brute-force twin on other points than the index sampled
    ids = np.arange(7, 3000, 150)
    _, approx = idx.search(g[ids], 10, exclude_self_ids=ids)
    _, exact = brute_knn(g, g[ids], 10, metric, exclude=ids)
    manual = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert manual >= 0.85
    if kind == "ivf":
        # ~sqrt(N) cells; nprobe was raised until the measured recall reached the target (or the cap)
        assert idx.nlist == round(np.sqrt(3000)) and 1 <= idx.nprobe <= np.ceil(idx.nlist * 0.25)
        assert idx.recall_at_10 >= 0.95 or idx.nprobe == np.ceil(idx.nlist * 0.25)
        assert idx.description == (f"IVF-SQ8, {idx.nprobe} of {idx.nlist} cells per query, "
                                   "re-ranked by exact distance")
        # the recall it reports is the one its own search gives (recomputed here on its sample)
        assert idx.recall_at_10 == pytest.approx(idx.measure_recall(k=10, n_queries=100, seed=0))
    else:
        assert 0.8 <= idx.recall_at_10 <= 1.0 and idx.description.startswith("HNSW")
    forced = NeighbourIndex(g[:200], metric=metric, approximate=True, kind=kind)
    assert not forced.is_exact and 0.0 < forced.recall_at_10 <= 1.0
    assert NeighbourIndex(g[:50], metric=metric).description == "exact"


def test_ivf_reaches_a_demanding_recall_by_scanning_more_cells():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(4000, 24)).astype(np.float32)  # no clusters: the hard case for cells
    loose = NeighbourIndex(g, approximate=True, target_recall=0.5, recall_queries=100)
    tight = NeighbourIndex(g, approximate=True, target_recall=0.99, recall_queries=100)
    assert loose.nlist == tight.nlist
    assert tight.nprobe > loose.nprobe and tight.recall_at_10 > loose.recall_at_10
    with pytest.raises(ValueError, match="approximate index"):
        NeighbourIndex(g, approximate=True, kind="annoy")


def test_search_from_worker_threads(data):
    gallery, queries = data
    idx = NeighbourIndex(gallery, metric="cosine")
    expected = idx.search(queries, 4)[1]
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(idx.search(queries, 4)[1])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(np.array_equal(r, expected) for r in results)


def test_release_rows_keeps_search_and_refuses_what_needs_the_rows():
    from trainer.analysis.index import NeighbourIndex

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    for approximate in (False, True):
        idx = NeighbourIndex(x, metric="cosine", approximate=approximate)
        before = idx.search(x[:20], 5, exclude_self_ids=np.arange(20))
        asked = []
        # the panel's fetch reads rows back from the run: here a copy, so the index cannot reach the original
        idx.release_rows(fetch=lambda ids: asked.append(ids.copy()) or x.copy()[ids])
        assert idx._src is None
        after = idx.search(x[:20], 5, exclude_self_ids=np.arange(20))
        assert np.array_equal(before[1], after[1]) and np.allclose(before[0], after[0])
        if approximate:  # only the candidates' rows were read back, sorted and unique
            assert asked and all(len(a) < len(x) and np.array_equal(a, np.unique(a)) for a in asked)
        else:
            assert not asked  # an exact index holds its rows
        if approximate:
            with pytest.raises(RuntimeError, match="no longer keeps its rows"):
                idx.exact_search(x[:2], 3)
        else:  # an exact index is its own exact search
            assert np.array_equal(idx.exact_search(x[:20], 5, exclude_self_ids=np.arange(20))[1], before[1])
        with pytest.raises(RuntimeError, match="no longer keeps its rows"):
            idx.measure_recall(k=5, n_queries=5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_an_approximate_index_reads_its_rows_in_chunks_and_its_exact_search_is_brute_force(monkeypatch, metric, kind):
    import trainer.analysis.index as index_mod

    monkeypatch.setattr(index_mod, "ROW_CHUNK", 37)  # many chunks, the last one short
    rng = np.random.default_rng(4)
    g = rng.normal(size=(500, 6)).astype(np.float32)
    idx = NeighbourIndex(g, metric=metric, approximate=True, kind=kind, recall_queries=50)
    assert idx._src is g  # the caller's rows, not a copy of them
    assert len(idx) == 500 and idx._index.ntotal == 500
    ids = np.array([0, 36, 37, 499])
    d, i = idx.exact_search(g[ids], 8, exclude_self_ids=ids)
    bd, bi = brute_knn(g, g[ids], 8, metric, exclude=ids)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, atol=2e-5)
    q = rng.normal(size=(3, 6)).astype(np.float32)
    np.testing.assert_array_equal(idx.exact_search(q, 5)[1], brute_knn(g, q, 5, metric)[1])
    bad = g.copy()
    bad[200, 1] = np.nan  # in the sixth chunk: named by its row in the whole gallery
    with pytest.raises(ValueError, match=r"rows \[200\]"):
        NeighbourIndex(bad, metric=metric, approximate=True, kind=kind)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_an_exact_index_filled_a_chunk_at_a_time_searches_like_brute_force(monkeypatch, metric):
    import trainer.analysis.index as index_mod

    monkeypatch.setattr(index_mod, "ROW_CHUNK", 7)
    rng = np.random.default_rng(6)
    g = rng.normal(size=(100, 5)).astype(np.float32)
    idx = NeighbourIndex(g, metric=metric)
    assert idx.is_exact and idx._index.ntotal == 100
    stored = idx._index.reconstruct_n(0, 100)
    want = g / np.linalg.norm(g, axis=1, keepdims=True) if metric == "cosine" else g
    np.testing.assert_allclose(stored, want, rtol=1e-6, atol=1e-7)
    q = rng.normal(size=(4, 5)).astype(np.float32)
    d, i = idx.search(q, 6)
    bd, bi = brute_knn(g, q, 6, metric)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, atol=2e-5)
    idx._index.add(q)  # the storage stays an ordinary flat index: it can grow
    assert idx._index.ntotal == 104


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ivf_sq8_keeps_a_quarter_of_the_rows_and_reports_exact_distances(metric):
    rng = np.random.default_rng(8)
    centers = rng.normal(size=(30, 32))
    g = (centers[rng.integers(0, 30, 4000)] + 0.4 * rng.normal(size=(4000, 32))).astype(np.float32)
    idx = NeighbourIndex(g, metric=metric, approximate=True, recall_queries=100)
    # one byte per dimension: the index's codes are a quarter of the rows' float32 bytes
    inv = idx._index.invlists
    code_bytes = sum(inv.list_size(c) for c in range(idx.nlist)) * idx._index.code_size
    assert idx._index.code_size == 32 and code_bytes == 4000 * 32
    q_ids = np.arange(3, 4000, 97)
    d, i = idx.search(g[q_ids], 10, exclude_self_ids=q_ids)
    # every returned id carries its exact distance (brute force), nearest first, ties by id
    x = g / np.linalg.norm(g, axis=1, keepdims=True) if metric == "cosine" else g
    q = x[q_ids]
    for row, ids_row, d_row in zip(q, i, d):
        ok = ids_row >= 0
        want = 1.0 - x[ids_row[ok]] @ row if metric == "cosine" else np.linalg.norm(x[ids_row[ok]] - row, axis=1)
        np.testing.assert_allclose(d_row[ok], want, atol=2e-5)
        assert np.all(np.diff(d_row[ok]) >= -1e-6)
    _, exact = brute_knn(g, g[q_ids], 10, metric, exclude=q_ids)
    assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(i, exact)]) >= 0.9
    # released without a way to read rows back: ranked by the codes, distances close to the exact ones
    idx.release_rows()
    assert idx.description.endswith("distances from 8-bit codes")
    d2, i2 = idx.search(g[q_ids], 10, exclude_self_ids=q_ids)
    for row, ids_row, d_row in zip(q, i2, d2):
        ok = ids_row >= 0
        want = 1.0 - x[ids_row[ok]] @ row if metric == "cosine" else np.linalg.norm(x[ids_row[ok]] - row, axis=1)
        np.testing.assert_allclose(d_row[ok], want, atol=0.05 * (1 if metric == "cosine" else float(want.max())))


def test_the_rerank_picks_the_exact_best_of_its_candidates_like_a_loop():
    rng = np.random.default_rng(9)
    g = rng.normal(size=(300, 8)).astype(np.float32)
    for metric in ("cosine", "euclidean"):
        idx = NeighbourIndex(g, metric=metric, approximate=True, recall_queries=20)
        q = idx._gather(np.arange(5))
        cand = np.stack([rng.choice(300, 12, replace=False) for _ in range(5)])  # as faiss: no repeats
        cand[rng.random(cand.shape) < 0.3] = -1  # and some slots without a candidate
        raw, ids = idx._rerank(q, cand, 4)
        x = idx._gather(np.arange(300))
        for r in range(5):  # the loop: score each real candidate, sort by (score, id), take 4
            scored = sorted({(-(x[c] @ q[r]) if metric == "cosine" else float(((x[c] - q[r]) ** 2).sum()), c)
                             for c in cand[r] if c >= 0})[:4]
            assert list(ids[r][:len(scored)]) == [c for _, c in scored]
            np.testing.assert_allclose(raw[r][:len(scored)], [-v if metric == "cosine" else v for v, _ in scored],
                                       rtol=1e-5, atol=1e-5)
            assert np.all(ids[r][len(scored):] == -1)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_an_index_without_a_copy_scans_the_callers_rows_like_brute_force(monkeypatch, metric):
    import trainer.analysis.index as index_mod

    monkeypatch.setattr(index_mod, "ROW_CHUNK", 29)  # many chunks, the last one short
    rng = np.random.default_rng(11)
    g = rng.normal(size=(300, 6)).astype(np.float32)
    g[50] = g[7] + 1e-4  # a near pair across chunks
    g[60] = g[58] + 2e-4  # ... and one inside a chunk
    idx = NeighbourIndex(g, metric=metric, copy_rows=False)
    assert idx.is_exact and idx.scans and idx._src is g and idx.description == "exact (scanned)"
    ids = np.array([0, 7, 28, 29, 299])
    d, i = idx.search(g[ids], 9, exclude_self_ids=ids)
    bd, bi = brute_knn(g, g[ids], 9, metric, exclude=ids)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, atol=2e-5)
    # range pairs: the same as a flat index that holds the rows, and as a loop over all pairs
    flat = NeighbourIndex(g, metric=metric)
    radius = float(np.quantile(brute_knn(g, g, 2, metric, exclude=np.arange(300))[0][:, 0], 0.1))
    for q_ids in (None, np.array([7, 58, 100])):
        got, want = idx.range_pairs(radius, q_ids), flat.range_pairs(radius, q_ids)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, atol=1e-6)
    x = g / np.linalg.norm(g, axis=1, keepdims=True) if metric == "cosine" else g
    loop = {(a, b) for a in range(300) for b in range(a + 1, 300)
            if (1 - x[a] @ x[b] if metric == "cosine" else np.linalg.norm(x[a] - x[b])) < radius - 1e-5}
    pairs = set(zip(*idx.range_pairs(radius)[:2]))
    assert loop <= pairs and (7, 50) in pairs and (58, 60) in pairs
    with pytest.raises(RuntimeError, match="cannot let go"):
        idx.release_rows()
