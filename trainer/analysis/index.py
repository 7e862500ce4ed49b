"""Nearest-neighbour index over an epoch's embeddings, wrapping faiss.

Exact (``IndexFlatIP`` on normalised rows for cosine, ``IndexFlatL2`` for euclidean) up to ``exact_limit``
rows, approximate above it (or when asked), with its recall@10 measured against exact search on a sample so the
GUI can say how approximate it is.  Distances are reported as ``1 - cos`` (cosine) or the plain L2 distance.

The approximate index is IVF-SQ8 by default: k-means cells (about sqrt(N) of them, trained on a sample) holding
each row as 8-bit codes (a quarter of the rows' memory: 128 MB at 1e6 x 128 instead of 512 MB), and a query scans
the ``nprobe`` nearest cells for ``REFINE_FACTOR`` x k candidates, which are re-ranked by their exact distances
from the rows themselves (read back from the caller's rows, or through the ``fetch`` given to :meth:`release_rows`):
the distances it reports are exact, only which rows it finds is approximate. ``nprobe`` is raised until the
measured recall@10 of that final answer reaches ``TARGET_RECALL`` (bench_index: 200,000 rows built and measured in
1.8 s, recall@10 1.000). HNSW (``kind="hnsw"``, flat storage) is slower to build (11.9 s at 1e5 against 1.1 s for
IVF-Flat, bench_index).

Thread safety: searches only read the index, so they may run in a worker thread; faiss parallelises with
OpenMP, whose thread count is process-wide — pass ``threads`` to cap it (e.g. while training also runs).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import faiss
import numpy as np

from trainer.analysis.distances import check_metric, unit_rows

Metric = Literal["cosine", "euclidean"]

__all__ = ["NeighbourIndex"]

TARGET_RECALL = 0.95  # IVF: nprobe grows until recall@10 on sampled queries reaches this
IVF_TRAIN_PER_CELL = 40  # k-means training rows per cell (faiss warns below 39)
IVF_MAX_NPROBE_SHARE = 0.25  # never scan more than this share of the cells
HNSW_M = 32  # links per node
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
SMALL_BATCH = 16  # fewer queries than this search single-threaded: OpenMP start-up costs more than it saves
ROW_CHUNK = 65_536  # rows copied (and normalised) at a time: the index never holds a second copy of the gallery
REFINE_FACTOR = 2  # IVF-SQ8: candidates per wanted neighbour, re-ranked by exact distance
REFINE_MIN_EXTRA = 16  # ... and at least this many more than wanted
REFINE_QUERY_BLOCK = 256  # queries re-ranked at a time (their candidates' rows are gathered per block)


def _checked(x: Any, what: str, dim: int | None = None) -> np.ndarray:
    """``x`` as a 2-D numeric array, not copied; clear error naming ``what``."""
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.ndim == 1 and dim is not None:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (N, D), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{what} have dimension {arr.shape[1]}, the index has {dim}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{what} must be numeric, got dtype {arr.dtype}")
    return arr


def _finite_copy(arr: np.ndarray, what: str, first_row: int = 0) -> np.ndarray:
    """float32, C-contiguous copy (faiss needs exactly this); NaN / inf named by row (counted from ``first_row``)."""
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1)) + first_row
        raise ValueError(f"{what} contain NaN or infinite values (rows {bad[:10].tolist()})")
    return out


def _as_rows(x: Any, what: str, dim: int | None = None) -> np.ndarray:
    """float32, C-contiguous 2-D copy of ``x`` (queries); clear error naming ``what``."""
    return _finite_copy(_checked(x, what, dim), what)


class _ScanIndex:
    """Exact k-nearest search by scanning the gallery in row chunks (faiss.knn per chunk, merged in a
    faiss.ResultHeap): what a flat index answers, without a second N x D copy (512 MB at 1e6 x 128)."""

    def __init__(self, owner: "NeighbourIndex") -> None:
        self.owner = owner

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        o = self.owner
        heap = faiss.ResultHeap(len(q), k, keep_max=o.metric == "cosine")
        for start, rows in o._chunks():
            d, i = faiss.knn(q, rows, min(k, len(rows)), metric=o._faiss_metric)
            heap.add_result(d, np.where(i >= 0, i + start, -1))
        heap.finalize()
        return heap.D, heap.I

    def range_search(self, q: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """faiss's range_search answer (lims, raw scores, ids) over the whole gallery, a chunk of rows at a time."""
        o = self.owner
        qid, raw, ids = [], [], []
        for start, rows in o._chunks():
            flat = faiss.IndexFlatIP(o.dim) if o.metric == "cosine" else faiss.IndexFlatL2(o.dim)
            flat.add(rows)
            lims, d, i = flat.range_search(q, r)
            qid.append(np.repeat(np.arange(len(q)), np.diff(lims).astype(np.int64)))
            raw.append(d)
            ids.append(i.astype(np.int64) + start)
        qid_a = np.concatenate(qid) if qid else np.zeros(0, np.int64)
        order = np.argsort(qid_a, kind="stable")  # by query, each query's hits in gallery order
        lims = np.r_[0, np.cumsum(np.bincount(qid_a, minlength=len(q)))]
        raw_a = np.concatenate(raw) if raw else np.zeros(0, np.float32)
        ids_a = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        return lims, raw_a[order], ids_a[order]


def _recall(exact: np.ndarray, approx: np.ndarray) -> float:
    """Share of the exact neighbour ids (>= 0) that the approximate rows also hold."""
    hits = sum(len(np.intersect1d(e[e >= 0], a[a >= 0])) for e, a in zip(exact, approx))
    total = int((exact >= 0).sum())
    return hits / total if total else 1.0


class NeighbourIndex:
    """k-nearest-neighbour search over a fixed gallery of embeddings (exact, or IVF / HNSW when large)."""

    def __init__(
        self,
        embeddings: Any,
        *,
        metric: Metric = "cosine",
        exact_limit: int = 1_000_000,
        approximate: bool | None = None,
        threads: int | None = None,
        recall_queries: int = 200,
        seed: int = 0,
        kind: str = "ivf",
        target_recall: float = TARGET_RECALL,
        copy_rows: bool = True,
    ) -> None:
        """``copy_rows=False``: exact search that scans the caller's rows a chunk at a time instead of holding a
        prepared copy of them (256 MB for a 500,000 x 128 split): for a gallery searched once or twice, as the
        label checks of a large split are; the rows must then stay readable and unchanged."""
        check_metric(metric)
        if kind not in ("ivf", "hnsw"):
            raise ValueError(f"unknown approximate index {kind!r}; expected 'ivf' or 'hnsw'")
        self.metric: str = metric
        self.kind: str = kind
        self.nprobe: int = 0  # IVF: cells scanned per query (0: not IVF)
        self.nlist: int = 0
        self._seed = seed
        if threads is not None:
            faiss.omp_set_num_threads(max(1, int(threads)))
        src = _checked(embeddings, "embeddings")
        self.n, self.dim = src.shape
        # the caller's rows, not a copy (an epoch's shared memory map at 1e6): they are read again, a chunk at a
        # time, to build the index, to measure its recall and for exact searches, so they must not change meanwhile
        self._src: np.ndarray | None = src
        self._fetch: Callable[[np.ndarray], np.ndarray] | None = None  # rows by id once released (re-ranking)
        # a gallery of exact_limit rows or more is searched approximately (a 1e6 epoch by default)
        self.scans: bool = not copy_rows
        self.is_exact: bool = self.scans or not (approximate if approximate is not None else self.n >= exact_limit)
        self._faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        self._index = _ScanIndex(self) if self.scans else self._build(exact=self.is_exact)
        self.recall_at_10: float = 1.0
        if not self.is_exact and self.n > 0:
            if self.nlist:
                self._tune_nprobe(recall_queries, target_recall)
            else:
                self.recall_at_10 = self.measure_recall(k=10, n_queries=recall_queries, seed=seed)
            self._flat = None  # range_pairs builds a flat index when it is asked

    def release_rows(self, fetch: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """Let go of the caller's rows when only :meth:`search` will be asked (the neighbour panel's gallery: the
        epoch's map may then be unmapped). :meth:`exact_search` of an exact index still works (it is the index
        itself); what needs all the rows afterwards raises a clear error.

        ``fetch(ids)`` returns the gallery rows ``ids`` (sorted, unique) as given to the constructor: an IVF-SQ8
        index re-ranks its candidates with them, so :meth:`search` is unchanged. Without it, its results are
        ranked and measured by the 8-bit codes (approximate distances)."""
        if self.scans:
            raise RuntimeError("an index made with copy_rows=False searches the caller's rows: it cannot let go of "
                               "them")
        self._src = None
        self._flat = None
        self._fetch = fetch

    def _source(self) -> np.ndarray:
        if self._src is None:
            raise RuntimeError("this index no longer keeps its rows (release_rows): only search() can be asked")
        return self._src

    def _prepared(self, rows: np.ndarray, first_row: int = 0) -> np.ndarray:
        """A float32 copy of some gallery rows as the index compares them (unit length for cosine)."""
        out = _finite_copy(rows, "embeddings", first_row)
        if self.metric == "cosine":
            unit_rows(out, out=out)
        return out

    def _chunks(self):
        """(first row, prepared rows) for the whole gallery, ROW_CHUNK rows at a time."""
        src = self._source()
        for start in range(0, self.n, ROW_CHUNK):
            yield start, self._prepared(src[start:start + ROW_CHUNK], start)

    def _gather(self, ids: np.ndarray) -> np.ndarray:
        """Prepared rows ``ids`` (any order)."""
        ids = np.asarray(ids, np.int64)
        return self._prepared(self._source()[ids]) if len(ids) else np.zeros((0, self.dim), np.float32)

    @property
    def _refines(self) -> bool:
        """Whether searches re-rank the quantised index's candidates by exact distance (rows still readable)."""
        return bool(self.nlist) and (self._src is not None or self._fetch is not None)

    def _candidate_rows(self, ids: np.ndarray) -> np.ndarray:
        """Prepared rows of the sorted unique ``ids``, from the caller's rows or through ``fetch``."""
        if self._src is not None:
            return self._gather(ids)
        rows = _checked(self._fetch(ids), "fetched rows", dim=self.dim)
        if len(rows) != len(ids):
            raise ValueError(f"fetch returned {len(rows)} rows for {len(ids)} ids")
        return self._prepared(rows)

    def _rerank(self, q: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best of each query's candidate ``ids`` (-1: none) by exact raw score (IP or squared L2)."""
        nq, width = ids.shape
        out_raw = np.empty((nq, k), np.float32)
        out_ids = np.empty((nq, k), np.int64)
        worst = np.float32(-np.inf if self.metric == "cosine" else np.inf)
        for s in range(0, nq, REFINE_QUERY_BLOCK):
            cand = ids[s:s + REFINE_QUERY_BLOCK].astype(np.int64)
            qb = q[s:s + REFINE_QUERY_BLOCK]
            found = cand >= 0
            uniq = np.unique(cand[found])
            rows = self._candidate_rows(uniq) if len(uniq) else np.zeros((0, self.dim), np.float32)
            r = rows[np.searchsorted(uniq, np.where(found, cand, uniq[0] if len(uniq) else 0))] if len(uniq) else \
                np.zeros(cand.shape + (self.dim,), np.float32)
            if self.metric == "cosine":
                raw = np.einsum("qd,qkd->qk", qb, r)
            else:
                diff = r - qb[:, None, :]
                raw = np.einsum("qkd,qkd->qk", diff, diff)
            raw = np.where(found, raw, worst).astype(np.float32)
            key = -raw if self.metric == "cosine" else raw
            # best first, ties by id; missing candidates last
            order = np.lexsort((np.where(found, cand, np.iinfo(np.int64).max), key), axis=-1)[:, :k]
            out_raw[s:s + REFINE_QUERY_BLOCK] = np.take_along_axis(raw, order, axis=1)
            out_ids[s:s + REFINE_QUERY_BLOCK] = np.where(np.take_along_axis(found, order, axis=1),
                                                         np.take_along_axis(cand, order, axis=1), -1)
        return out_raw, out_ids

    def _add_all(self, index: Any) -> None:
        if isinstance(index, faiss.IndexFlat) and index.ntotal == 0 and self.n:
            # a flat index's storage is sized once and filled a chunk at a time: chunked add() grew it by doubling,
            # old and new buffers side by side (1.5 copies of the gallery at the peak)
            index.codes.resize(self.n * self.dim * 4)
            store = faiss.rev_swig_ptr(index.codes.data(), self.n * self.dim * 4).view(np.float32)
            store = store.reshape(self.n, self.dim)
            for start, rows in self._chunks():
                store[start:start + len(rows)] = rows
            index.ntotal = self.n
            return
        for _, rows in self._chunks():
            index.add(rows)

    @property
    def description(self) -> str:
        """What kind of search this is, for the user ("exact", "IVF-SQ8, 64 of 1,000 cells per query, ...")."""
        if self.is_exact:
            return "exact (scanned)" if self.scans else "exact"
        if self.nlist:
            how = "re-ranked by exact distance" if self._refines else "distances from 8-bit codes"
            return f"IVF-SQ8, {self.nprobe} of {self.nlist:,} cells per query, {how}"
        return f"HNSW (M = {HNSW_M})"

    def _build(self, *, exact: bool) -> Any:
        d = max(self.dim, 1)
        if exact:
            index = faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
        elif self.kind == "ivf" and self.n >= 2:
            return self._build_ivf(d)
        else:
            index = faiss.IndexHNSWFlat(d, HNSW_M, self._faiss_metric)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = HNSW_EF_SEARCH
        if self.n and self.dim:
            self._add_all(index)
        return index

    def _build_ivf(self, d: int) -> Any:
        # about sqrt(N) cells (at least 40 rows each), k-means and the 8-bit codes' ranges on a sample of ~80 rows
        # per cell, then every row goes to its cell as one byte per dimension
        nlist = int(max(1, min(round(np.sqrt(self.n)), self.n // IVF_TRAIN_PER_CELL or 1, 65536)))
        quantizer = faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, self._faiss_metric)
        n_train = min(self.n, nlist * IVF_TRAIN_PER_CELL * 2)
        rng = np.random.default_rng(self._seed)
        train = self._gather(np.arange(self.n) if n_train >= self.n else
                             np.sort(rng.choice(self.n, n_train, replace=False)))
        index.cp.seed = int(self._seed)
        index.cp.niter = 20
        index.train(train)
        del train
        self._add_all(index)
        self._quantizer = quantizer  # the IVF index does not own it from Python: keep it alive
        self.nlist = nlist
        self.nprobe = 1
        index.nprobe = 1
        return index

    def _tune_nprobe(self, n_queries: int, target: float) -> None:
        """Double ``nprobe`` until recall@10 (against exact search, self excluded) reaches ``target``."""
        if self.n <= 1:
            return
        rng = np.random.default_rng(self._seed)
        ids = rng.choice(self.n, size=min(n_queries, self.n), replace=False)
        q = self._gather(ids)
        _, exact = self.exact_search(q, 10, exclude_self_ids=ids)
        limit = max(1, int(np.ceil(self.nlist * IVF_MAX_NPROBE_SHARE)))
        nprobe = min(8, limit)
        while True:
            self._index.nprobe = self.nprobe = nprobe
            _, approx = self.search(q, 10, exclude_self_ids=ids)
            self.recall_at_10 = _recall(exact, approx)
            if self.recall_at_10 >= target or nprobe >= limit:
                return
            nprobe = min(limit, nprobe * 2)

    def __len__(self) -> int:
        return self.n

    def _to_distance(self, raw: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return (1.0 - raw).astype(np.float32)
        return np.sqrt(np.maximum(raw, 0.0)).astype(np.float32)

    def search(
        self, queries: Any, k: int, exclude_self_ids: Any = None, *, _index: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids), each (Q, k'), nearest first; k' = min(k, n) (n - 1 when excluding self).

        ``exclude_self_ids[i]`` is the gallery id of query i (or -1): that id is dropped from its results.
        Missing results (HNSW may find fewer) are id -1 with distance inf.
        """
        q = _as_rows(queries, "queries", dim=self.dim)
        if self.metric == "cosine":
            unit_rows(q, out=q)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        nq = len(q)
        excl = None
        if exclude_self_ids is not None:
            excl = np.asarray(exclude_self_ids, dtype=np.int64).reshape(-1)
            if len(excl) != nq:
                raise ValueError(f"exclude_self_ids has {len(excl)} entries for {nq} queries")
        k_out = min(int(k), self.n - (1 if excl is not None and (excl >= 0).any() else 0))
        k_out = max(k_out, 0)
        if nq == 0 or k_out == 0 or self.n == 0:
            return np.zeros((nq, k_out), np.float32), np.full((nq, k_out), -1, np.int64)
        k_search = min(k_out + (1 if excl is not None else 0), self.n)
        index = self._index if _index is None else _index
        if index is self._index and self._refines:  # quantised candidates, re-ranked by exact distance
            raw, ids = self._faiss_search(index, q, min(self.n, max(REFINE_FACTOR * k_search,
                                                                    k_search + REFINE_MIN_EXTRA)))
            raw, ids = self._rerank(q, ids, k_search)
        else:
            raw, ids = self._faiss_search(index, q, k_search)
        dist = self._to_distance(raw)
        ids = ids.astype(np.int64)
        dist[ids < 0] = np.inf
        if excl is None:
            return dist[:, :k_out], ids[:, :k_out]
        keep = ids != excl[:, None]
        # kept results first, in their order; when the query's own id was not returned this drops the last one
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k_out]
        kept = np.take_along_axis(keep, order, axis=1)
        out_d = np.where(kept, np.take_along_axis(dist, order, axis=1), np.float32(np.inf))
        out_i = np.where(kept, np.take_along_axis(ids, order, axis=1), -1)
        return out_d.astype(np.float32), out_i.astype(np.int64)

    @staticmethod
    def _faiss_search(index: Any, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss search; a handful of queries runs on one OpenMP thread (measured 5x faster on a busy 2-core box)."""
        if len(q) >= SMALL_BATCH:
            return index.search(q, k)
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # OpenMP's thread count is per calling thread: worker threads stay isolated
        try:
            return index.search(q, k)
        finally:
            faiss.omp_set_num_threads(before)

    def exact_search(self, queries: Any, k: int, exclude_self_ids: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search` but always exact (an approximate index scans the rows it was built from)."""
        if self.is_exact:
            return self.search(queries, k, exclude_self_ids)
        self._source()
        return self.search(queries, k, exclude_self_ids, _index=_ScanIndex(self))

    def measure_recall(self, k: int = 10, n_queries: int = 200, seed: int = 0) -> float:
        """Share of the exact k nearest neighbours (self excluded) that the index returns, on sampled gallery points."""
        if self.n <= 1:
            return 1.0
        rng = np.random.default_rng(seed)
        ids = rng.choice(self.n, size=min(n_queries, self.n), replace=False)
        q = self._gather(ids)
        _, exact = self.exact_search(q, k, exclude_self_ids=ids)
        _, approx = self.search(q, k, exclude_self_ids=ids)
        recall = _recall(exact, approx)
        if k == 10:
            self.recall_at_10 = recall
        return recall

    def range_pairs(self, radius: float, query_ids: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All gallery pairs (i < j) closer than ``radius`` (reported distance), exact: (i, j, distance).

        With ``query_ids`` only the pairs that involve one of those rows (each pair once)."""
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
        if self.n < 2 or radius <= 0:
            return empty
        self._source()
        if getattr(self, "_flat", None) is None:
            self._flat = self._build(exact=True) if not self.is_exact else self._index
        q_ids = np.arange(self.n, dtype=np.int64) if query_ids is None else \
            np.unique(np.asarray(query_ids, np.int64))
        if not len(q_ids):
            return empty
        # faiss: IP keeps ip > r, L2 keeps squared d < r
        r = 1.0 - radius if self.metric == "cosine" else radius * radius
        lims, raw, ids = self._flat.range_search(self._gather(q_ids), float(r))
        rows = np.repeat(q_ids, np.diff(lims).astype(np.int64))
        ids = ids.astype(np.int64)
        dist = self._to_distance(raw)
        keep = (rows != ids) & (dist < radius)
        rows, ids, dist = rows[keep], ids[keep], dist[keep]
        i, j = np.minimum(rows, ids), np.maximum(rows, ids)
        # a pair of two queried rows was found from both ends: keep it once
        _, first = np.unique(i * self.n + j, return_index=True)
        return i[first], j[first], dist[first]
