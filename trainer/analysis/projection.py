"""2-D layouts of an epoch's embeddings (UMAP, PCA, t-SNE) that stay still from epoch to epoch.

The map of epoch e+1 starts from the map of epoch e (UMAP/t-SNE ``init=previous``, fewer optimisation epochs) and
is then aligned to it by an orthogonal Procrustes fit with scaling on the points both epochs share, so a point moves
on screen only about as far as its embedding changed. The k-NN graph UMAP needs is computed with faiss and handed
to umap-learn as ``precomputed_knn``. Large runs are fitted on a stratified sample; the other points are placed at
the weighted mean of their nearest sampled neighbours. No Qt here: the GUI runs this in a background job.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from trainer.analysis.distances import unit_rows

if TYPE_CHECKING:  # the worker module imports this one
    from trainer.analysis.projection_worker import ProjectionWorker

METHODS = ("umap", "pca", "tsne")
MAX_FIT_DEFAULT = 50_000
UMAP_NEIGHBORS = 15
COLD_EPOCHS = 200
ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


class ProjectionCancelled(Exception):
    """The caller's ``is_cancelled`` said stop; raised between stages."""


@dataclass
class Layout:
    """A 2-D map: ``xy[i]`` is the position of row i (sample ``ids[i]``)."""

    xy: np.ndarray  # (N, 2) float32
    method: str
    note: str = ""
    ids: np.ndarray | None = None  # (N,) int64 sample ids, or None for 0..N-1
    warm: bool = False  # started from / aligned to a previous layout
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# numba cache: umap-learn compiles with cache=True; the cache must land somewhere writable.
# ---------------------------------------------------------------------------------------------------------------
def _cache_base() -> Path:
    env = os.environ.get("EMBEDDING_EXPLORER_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("EmbeddingExplorer", "EmbeddingExplorer"))


def ensure_numba_cache() -> str | None:
    """Point NUMBA_CACHE_DIR at a writable folder when umap's package folder is read-only; returns the folder set.

    Must run before numba is imported (this module imports umap lazily for that reason).
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    import importlib.util

    spec = importlib.util.find_spec("umap")
    pkg_dir = Path(spec.origin).parent if spec is not None and spec.origin else None
    if pkg_dir is not None and os.access(pkg_dir, os.W_OK):
        return None  # numba writes its index files next to the sources, as usual
    target = _cache_base() / "numba"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    os.environ["NUMBA_CACHE_DIR"] = str(target)
    return str(target)


ensure_numba_cache()
_warm_lock = threading.Lock()
_warmed = threading.Event()


def warm_up() -> float:
    """Compile umap-learn's numba kernels on tiny data (same dtypes and code paths as a real map); returns seconds.

    Called in a background thread at app start so the first real map does not pay the compile time.
    """
    t0 = time.perf_counter()
    with _warm_lock:
        if _warmed.is_set():
            return 0.0
        rng = np.random.default_rng(0)
        x = rng.normal(size=(120, 8)).astype(np.float32)
        x[:60] += 3.0
        first = project(x, "umap", seed=0, n_epochs=20)
        project(x + 0.01, "umap", previous=first.xy, previous_ids=np.arange(120), ids=np.arange(120), seed=0,
                n_epochs=20)
        _warmed.set()
    return time.perf_counter() - t0


def is_warm() -> bool:
    """True once :func:`warm_up` has finished in this process."""
    return _warmed.is_set()


# ---------------------------------------------------------------------------------------------------------------
# Procrustes
# ---------------------------------------------------------------------------------------------------------------
def procrustes_fit(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale s, orthogonal R (reflection allowed) and shift t minimising ||s * src @ R + t - dst||^2."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2:
        raise ValueError(f"procrustes_fit: shapes differ or are not 2-D: {src.shape} vs {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    norm_a = float((a * a).sum())
    if norm_a <= 0.0 or not np.isfinite(norm_a):
        return 1.0, np.eye(src.shape[1]), mu_d - mu_s
    u, sv, vt = np.linalg.svd(a.T @ b)
    r = u @ vt
    s = float(sv.sum() / norm_a)
    t = mu_d - s * mu_s @ r
    return s, r, t


def procrustes_align(xy: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Return ``xy`` rotated/reflected, scaled and shifted to best match ``reference`` on the rows in ``mask``."""
    xy = np.asarray(xy)
    if mask is None:
        s, r, t = procrustes_fit(xy, reference)
    else:
        if mask.sum() < 3:
            return xy.astype(np.float32, copy=True)
        s, r, t = procrustes_fit(xy[mask], reference)
    return (s * (xy.astype(np.float64) @ r) + t).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# k-NN with faiss
# ---------------------------------------------------------------------------------------------------------------
def knn_graph(x: np.ndarray, k: int, *, queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours (Euclidean) of ``queries`` (default: ``x`` itself, self included) with faiss.

    Exact (IndexFlatL2) up to 20k points, HNSW above. Returns (indices int64, distances float32, not squared).
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    q = x if queries is None else np.ascontiguousarray(queries, dtype=np.float32)
    k = int(min(k, x.shape[0]))
    d = x.shape[1]
    if x.shape[0] <= 20_000:
        index = faiss.IndexFlatL2(d)
    else:
        index = faiss.IndexHNSWFlat(d, 32)
        index.hnsw.efConstruction = 64
        index.hnsw.efSearch = max(64, 2 * k)
    index.add(x)
    dist, ind = index.search(q, k)
    if queries is None:
        # make sure each point is its own first neighbour (as umap's own k-NN does), even with duplicates
        n = x.shape[0]
        own = np.arange(n)
        first_is_self = ind[:, 0] == own
        if not first_is_self.all():
            rows = np.flatnonzero(~first_is_self)
            for r in rows:  # rare: exact duplicates or HNSW misses
                others = ind[r][ind[r] != r][: k - 1]
                od = dist[r][ind[r] != r][: k - 1]
                ind[r, 0], dist[r, 0] = r, 0.0
                ind[r, 1: 1 + len(others)] = others
                dist[r, 1: 1 + len(others)] = od
    bad = ind < 0  # HNSW may return -1 when it finds fewer than k
    if bad.any():
        ind = np.where(bad, ind[:, :1], ind)
        dist = np.where(bad, np.float32(np.inf), dist)
        dist = np.where(np.isinf(dist), np.nanmax(np.where(np.isinf(dist), np.nan, dist)), dist)
    return ind.astype(np.int64), np.sqrt(np.maximum(dist, 0)).astype(np.float32)


def _import_umap():
    """Import umap-learn without its ImportWarning about TensorFlow (ParametricUMAP is not used here)."""
    import sys
    import warnings

    if "umap" in sys.modules:
        return sys.modules["umap"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Tensorflow not installed", category=ImportWarning)
        import umap
    return umap


class _EpochWatch:
    """File-like sink for umap's tqdm epoch bar: reports the fraction done and lets a cancel stop the fit."""

    def __init__(self, check: Callable[[], None], report: Callable[[float], None]) -> None:
        self._check, self._report, self._dead = check, report, False

    def write(self, text: str) -> int:
        if self._dead:  # after a cancel tqdm still closes its bar: stay quiet
            return len(text)
        try:
            self._check()
        except ProjectionCancelled:
            self._dead = True
            raise
        done = re.findall(r"(\d+)/(\d+)", text)
        if done:
            n, total = map(int, done[-1])
            self._report(n / max(total, 1))
        return len(text)

    def flush(self) -> None:
        """Nothing buffered."""


def _weighted_place(anchor_xy: np.ndarray, nbr_idx: np.ndarray, nbr_dist: np.ndarray) -> np.ndarray:
    """Position = inverse-distance-weighted mean of the neighbours' positions (the umap transform's init)."""
    w = 1.0 / (nbr_dist.astype(np.float64) + 1e-6)
    w /= w.sum(1, keepdims=True)
    return np.einsum("nk,nkc->nc", w, anchor_xy[nbr_idx].astype(np.float64)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# project()
# ---------------------------------------------------------------------------------------------------------------
def _stratified_sample(n: int, labels: np.ndarray | None, size: int, seed: int) -> np.ndarray:
    """Sorted row indices of a sample of ``size`` rows, proportional per label (every label keeps >= 1 row)."""
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n, size=size, replace=False))
    labels = np.asarray(labels)
    chosen = []
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts * (size / n)).astype(int))
    for c, q in zip(classes, quota):
        rows = np.flatnonzero(labels == c)
        chosen.append(rng.choice(rows, size=min(q, len(rows)), replace=False))
    return np.sort(np.concatenate(chosen))


def _match_previous(ids: np.ndarray, previous: np.ndarray, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each id: (row in previous or -1, mask of ids found)."""
    order = np.argsort(previous_ids, kind="stable")
    sorted_ids = previous_ids[order]
    pos = np.searchsorted(sorted_ids, ids)
    if len(sorted_ids) == 0:
        return np.full(len(ids), -1), np.zeros(len(ids), bool)
    pos_c = np.clip(pos, 0, len(sorted_ids) - 1)
    found = sorted_ids[pos_c] == ids
    rows = np.where(found, order[pos_c], -1)
    return rows, found


def _scale_for_umap(xy: np.ndarray) -> np.ndarray:
    """Shift/scale a starting layout into UMAP's usual coordinate box (max |coord| = 10)."""
    xy = xy.astype(np.float64) - xy.mean(0)
    m = np.abs(xy).max()
    return (xy * (10.0 / m if m > 0 else 1.0)).astype(np.float32)


_gc_pause_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = True


@contextlib.contextmanager
def _gc_paused_while_compiling(method: str):
    """Pause the cyclic garbage collector while numba may compile in a thread other than the main one.

    numba compiles with LLVM in the calling thread; a collection in another thread can free llvmlite objects
    (whose finalizers call into LLVM) at the same moment, and that aborted the test process once, during the first
    UMAP of a map projected in a worker thread. The app projects in its own child process (its main thread); this
    guards the in-thread mode (tests, benchmarks) until the kernels are compiled."""
    global _gc_pauses, _gc_was_enabled
    if method == "pca" or is_warm() or threading.current_thread() is threading.main_thread():
        yield
        return
    with _gc_pause_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_pause_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def project(*args, **kwargs) -> Layout:
    """:func:`_project` (see there), with the garbage collector paused while numba may compile in this thread."""
    method = str(kwargs.get("method", args[1] if len(args) > 1 else "umap")).lower()
    with _gc_paused_while_compiling(method):
        return _project(*args, **kwargs)


def _project(
    embeddings: np.ndarray,
    method: str = "umap",
    *,
    previous: np.ndarray | None = None,
    previous_ids: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    is_cancelled: CancelFn | None = None,
    labels: np.ndarray | None = None,
    metric: str = "euclidean",
    max_fit: int = MAX_FIT_DEFAULT,
    n_epochs: int | None = None,
    n_neighbors: int = UMAP_NEIGHBORS,
) -> Layout:
    """2-D layout of ``embeddings`` (N, D) by ``method`` ("umap" | "pca" | "tsne"), warm-started from ``previous``.

    ``previous`` (M, 2) with ``previous_ids`` (M,) is the last map; rows are matched by ``ids`` (default 0..N-1).
    The result is aligned to it (Procrustes with scaling on the shared ids). ``metric="cosine"`` L2-normalises first.
    Extensions to the contract: ``labels`` (stratified sampling above ``max_fit``), ``metric``, ``n_epochs``.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; choose one of {', '.join(METHODS)}")
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (N, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x).all(1)).sum())
        raise ValueError(f"embeddings contain NaN/inf in {bad} rows; the map cannot be drawn (did training diverge?)")
    if metric == "cosine":
        x = unit_rows(x)
    n = x.shape[0]
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"ids must have shape ({n},), got {ids.shape}")
    cancelled = is_cancelled or (lambda: False)
    say = progress or (lambda f, t="": None)

    def check() -> None:
        if cancelled():
            raise ProjectionCancelled()

    prev_rows = np.full(n, -1)
    common = np.zeros(n, bool)
    if previous is not None:
        previous = np.asarray(previous, dtype=np.float32)
        pids = np.arange(len(previous), dtype=np.int64) if previous_ids is None else np.asarray(previous_ids, np.int64)
        if pids.shape[0] != previous.shape[0] or previous.ndim != 2 or previous.shape[1] != 2:
            raise ValueError(f"previous layout {previous.shape} does not match previous_ids {pids.shape}")
        prev_rows, common = _match_previous(ids, previous, pids)
        if common.sum() < 3:
            common[:] = False
    warm = bool(common.any())
    notes: list[str] = []

    if method == "pca" or n < 4:
        from sklearn.decomposition import PCA

        say(0.1, "PCA")
        if n < 3 or x.shape[1] < 2:
            xy = np.zeros((n, 2), np.float32)
            xy[:, : min(2, x.shape[1])] = x[:, :2] if x.shape[1] else 0
        else:
            xy = PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
        t = time.perf_counter()
        timings["fit"] = t - t_start
        method_used = "pca"
    else:
        # fit set: all points, or a stratified sample for very large runs
        fit_rows = np.arange(n)
        if n > max_fit:
            fit_rows = _stratified_sample(n, labels, max_fit, seed)
            notes.append(f"fitted on a stratified sample of {len(fit_rows):,} of {n:,} points; "
                         f"the others are placed by their nearest sampled neighbours")
        xf = x[fit_rows]
        nf = len(fit_rows)
        k = int(min(n_neighbors, nf - 1))
        say(0.05, "nearest neighbours (faiss)")
        t0 = time.perf_counter()
        knn_i, knn_d = knn_graph(xf, k)
        timings["knn"] = time.perf_counter() - t0
        check()

        init = None
        if warm:
            init = np.zeros((nf, 2), np.float32)
            c_f = common[fit_rows]
            init[c_f] = previous[prev_rows[fit_rows][c_f]]
            if (~c_f).any():  # new points start at their old neighbours' place
                nbrs = knn_i[~c_f]
                ok = c_f[nbrs]
                w = ok / (knn_d[~c_f] + 1e-6)
                w_sum = w.sum(1, keepdims=True)
                centre = init[c_f].mean(0)
                placed = (w[:, :, None] * init[nbrs]).sum(1) / np.maximum(w_sum, 1e-12)
                init[~c_f] = np.where(w_sum > 0, placed, centre)
        t0 = time.perf_counter()
        if method == "umap":
            umap = _import_umap()
            if n_epochs is None:
                # umap's default is 500 epochs up to 10k points and 200 above: 200 is plenty from a PCA start
                # from the previous epoch's layout 60 suffice at 10k points and above (bench_map: median move
                # 0.022 of the map width); 100 below, where an epoch costs little
                n_epochs = (60 if nf >= 10_000 else 100) if warm else COLD_EPOCHS
            say(0.15, "UMAP (warm start)" if warm else "UMAP")
            # cold start: PCA init. umap's spectral init costs seconds at 10k and, on a graph with several
            # components (one per well-separated class), compiles a fresh numba metric for each new run
            u_init = _scale_for_umap(init) if init is not None else "pca"
            reducer = umap.UMAP(
                n_components=2,
                n_neighbors=k,
                random_state=seed,
                n_jobs=1,
                init=u_init,
                n_epochs=n_epochs,
                # a warm start is already a good layout: a gentle step keeps points where they were
                learning_rate=0.2 if init is not None else 1.0,
                precomputed_knn=(knn_i, knn_d),
                low_memory=True,
                verbose=False,
                # umap's per-epoch tqdm bar goes to a sink that reports progress and stops a cancelled fit
                tqdm_kwds={"disable": False, "file": _EpochWatch(check, lambda f: say(0.15 + 0.8 * f, "UMAP")),
                           "bar_format": "{n}/{total}", "mininterval": 0.1},
            )
            with warnings.catch_warnings():  # we pass our own faiss k-NN graph, so umap's transform() is off: known
                warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
                xy_fit = reducer.fit_transform(xf).astype(np.float32)
            if init is not None:
                # umap-learn rescales each axis of the start layout to [0, 10] on its own; undo that stretch so
                # the map keeps its aspect ratio (Procrustes below only handles one uniform scale)
                span = np.ptp(u_init, axis=0).astype(np.float64)
                xy_fit = (xy_fit * np.where(span > 0, span / 10.0, 1.0)).astype(np.float32)
            method_used = "umap"
        else:
            from sklearn.manifold import TSNE

            say(0.15, "t-SNE (warm start)" if warm else "t-SNE")
            perplexity = float(min(30.0, max(2.0, (nf - 1) / 3.0)))
            if init is not None:
                t_init = init.astype(np.float64) - init.mean(0)
                t_init = (t_init / max(t_init[:, 0].std(), 1e-12) * 1e-4).astype(np.float32)
            else:
                t_init = "pca"
            max_iter = n_epochs if n_epochs is not None else (500 if warm else 1000)
            xy_fit = TSNE(n_components=2, perplexity=perplexity, init=t_init, random_state=seed,
                          max_iter=max(250, max_iter), learning_rate="auto").fit_transform(xf).astype(np.float32)
            method_used = "tsne"
        timings["fit"] = time.perf_counter() - t0
        check()
        if nf < n:
            say(0.85, "placing the points outside the sample")
            rest = np.setdiff1d(np.arange(n), fit_rows, assume_unique=True)
            t0 = time.perf_counter()
            ri, rd = knn_graph(xf, min(8, nf), queries=x[rest])
            xy = np.empty((n, 2), np.float32)
            xy[fit_rows] = xy_fit
            xy[rest] = _weighted_place(xy_fit, ri, rd)
            timings["place"] = time.perf_counter() - t0
        else:
            xy = xy_fit

    if warm:
        xy = procrustes_align(xy, previous[prev_rows[common]], common)
        notes.insert(0, f"aligned to the previous map on {int(common.sum()):,} shared points")
    say(1.0, "map ready")
    return Layout(xy=np.ascontiguousarray(xy, dtype=np.float32), method=method_used, note="; ".join(notes), ids=ids,
                  warm=warm, seconds=time.perf_counter() - t_start, timings=timings)


class Projector:
    """Keeps the last layout per method so each new epoch's map starts from (and is aligned to) the previous one."""

    def __init__(self, method: str = "umap", *, seed: int = 0, metric: str = "euclidean",
                 max_fit: int = MAX_FIT_DEFAULT, worker: "ProjectionWorker | None" = None) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown projection method {method!r}; choose one of {', '.join(METHODS)}")
        self.method = method
        self.seed = seed
        self.metric = metric
        self.max_fit = max_fit
        self._last: dict[str, Layout] = {}
        self._lock = threading.Lock()
        self.worker = worker  # when set, UMAP / t-SNE run in its child process; PCA stays here (it is instant)

    def previous(self, method: str | None = None) -> Layout | None:
        """The last layout computed with ``method`` (default: this projector's method)."""
        with self._lock:
            return self._last.get(method or self.method)

    def reset(self) -> None:
        """Forget the history (a different run was opened)."""
        with self._lock:
            self._last.clear()

    def remember(self, layout: Layout) -> None:
        """Record ``layout`` as the reference for the next warm start of its method."""
        with self._lock:
            self._last[layout.method] = layout

    def project(self, embeddings: np.ndarray, *, ids: np.ndarray | None = None, labels: np.ndarray | None = None,
                method: str | None = None, progress: ProgressFn | None = None,
                is_cancelled: CancelFn | None = None) -> Layout:
        """Project one epoch, warm-started from the last layout of the same method (or, failing that, any method)."""
        method = method or self.method
        with self._lock:
            prev = self._last.get(method) or next(iter(self._last.values()), None)
        worker = self.worker
        fn = worker.project if worker is not None and not worker.closed and method != "pca" else project
        layout = fn(embeddings, method, previous=None if prev is None else prev.xy,
                    previous_ids=None if prev is None else prev.ids, ids=ids, seed=self.seed,
                    progress=progress, is_cancelled=is_cancelled, labels=labels, metric=self.metric,
                    max_fit=self.max_fit)
        self.remember(layout)
        return layout

    @staticmethod
    def warm_up() -> float:
        """Compile umap's numba kernels (see :func:`warm_up`)."""
        return warm_up()
