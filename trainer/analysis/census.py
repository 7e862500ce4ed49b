"""Easy / semi-hard / hard triplet census of a training batch or a whole epoch, example triplets and diagnostics.

Categories follow pytorch-metric-learning's ``TripletMarginMiner`` exactly.  With ``diff = d(a,n) - d(a,p)``
computed in the embeddings' float type and the margin ``m`` cast to it (as torch does):

* easy       ``diff > m``
* semi-hard  ``0 < diff <= m``
* hard       ``diff <= 0`` (and ``diff <= m``: for a negative margin there is no semi-hard band)

For a similarity PML flips the comparison (``diff = s(a,p) - s(a,n)``).  Our census works on distances; for
``metric="cosine"`` the distance is ``1 - cos`` of L2-normalised vectors and internally we order by ``-cos``, so
``diff`` is bit-for-bit PML's ``s(a,p) - s(a,n)`` and the categories equal PML with ``CosineSimilarity()``.
``metric="euclidean"`` is the plain (not normalised) L2 distance, PML's ``LpDistance(normalize_embeddings=False)``.

Nothing here materialises the B^3 / N^3 triplet mask: per anchor, triplets are counted from sorted negative distances
(batch) or from each anchor's sorted thresholds (epoch), exactly, including ties.  No Qt here: the GUI calls these
from worker threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import numba
import numpy as np
import torch

from trainer.analysis.distances import check_metric, tensor_view, unit_rows

Metric = Literal["cosine", "euclidean"]
CATEGORIES = ("easy", "semihard", "hard")


@dataclass(frozen=True)
class TripletCounts:
    """Census of one batch; means are over all triplets (as PML's miner stats), as distances; NaN if none."""

    n_easy: int
    n_semihard: int
    n_hard: int
    n_total: int
    mean_d_ap: float
    mean_d_an: float


@dataclass
class Census:
    """Census of an epoch: totals, shares and per-anchor arrays (row i describes sample ``anchors[i]``)."""

    margin: float
    metric: str
    sampled: bool  # True when only a random sample of anchors was counted
    n_anchors: int  # anchors counted (== len(anchors))
    n_samples: int  # samples in the split
    anchors: np.ndarray  # (A,) int64 sample ids
    anchor_labels: np.ndarray  # (A,) int64
    n_easy: np.ndarray  # (A,) int64 per-anchor triplet counts
    n_semihard: np.ndarray
    n_hard: np.ndarray
    n_pos: np.ndarray  # (A,) positives of each anchor
    n_neg: np.ndarray  # (A,) negatives of each anchor
    mean_d_ap: np.ndarray  # (A,) float64 mean distance to the anchor's positives (NaN if none)
    mean_d_an: np.ndarray  # (A,) float64 mean distance to the anchor's negatives (NaN if none)
    total_easy: int = 0
    total_semihard: int = 0
    total_hard: int = 0
    total: int = 0
    share_easy: float = float("nan")
    share_semihard: float = float("nan")
    share_hard: float = float("nan")
    triplet_mean_d_ap: float = float("nan")  # over all counted triplets
    triplet_mean_d_an: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    def counts(self, category: str) -> np.ndarray:
        """Per-anchor counts of one category ("easy", "semihard" or "hard")."""
        return {"easy": self.n_easy, "semihard": self.n_semihard, "hard": self.n_hard}[_check_category(category)]


def _check_category(category: str) -> str:
    if category not in CATEGORIES:
        raise ValueError(f"unknown triplet category {category!r}; expected one of {CATEGORIES}")
    return category


def _check_margin(margin: float) -> float:
    margin = float(margin)
    if not np.isfinite(margin):
        raise ValueError(f"margin must be a finite number, got {margin!r}")
    return margin


def _as_embeddings(embeddings: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """float32 C-contiguous (N, D) copy-if-needed and int64 labels; clear errors for bad shapes or values."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (N, D), got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"labels must be 1-D with one label per embedding row ({len(x)}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ValueError(f"embeddings contain NaN or infinite values (rows {bad[:10].tolist()}...)")
    return x, y.astype(np.int64, copy=False)


def _key_matrix(
    x: torch.Tensor, labels: torch.Tensor, metric: str | None, distance: Any
) -> tuple[torch.Tensor, bool]:
    """(B, B) ordering key (larger = farther) and whether it is a negated similarity."""
    if distance is not None:
        mat = distance(x)
        inverted = bool(getattr(distance, "is_inverted", False))
        return (-mat if inverted else mat), inverted
    if metric is None:
        if x.ndim != 2 or x.shape[0] != x.shape[1] or x.shape[0] != labels.shape[0]:
            raise ValueError(
                f"batch_census without a metric expects a square (B, B) distance matrix matching "
                f"{labels.shape[0]} labels, got shape {tuple(x.shape)}"
            )
        return x, False
    check_metric(metric)
    if x.ndim != 2 or x.shape[0] != labels.shape[0]:
        raise ValueError(f"embeddings must be (B, D) with B == len(labels), got {tuple(x.shape)}")
    if metric == "cosine":
        xn = torch.nn.functional.normalize(x, p=2, dim=1)
        return -torch.matmul(xn, xn.t()), True
    return torch.cdist(x, x, p=2), False


def _first_true(sorted_keys: torch.Tensor, a: torch.Tensor, margin: float, n_valid: torch.Tensor) -> torch.Tensor:
    """For each row r and query a[r, k]: the first j with fl(sorted[r, j] - a[r, k]) > margin (PML's arithmetic).

    The predicate is monotone in j, so a searchsorted guess at a + margin is bracketed by a few ulps and the
    bracket is bisected with the exact predicate; ties and rounding give PML's counts bit for bit.
    """
    dtype = sorted_keys.dtype
    m = torch.tensor(margin, dtype=dtype)
    t = a + m
    # generous bound on the rounding of t and of (x - a): 16 ulps of the magnitudes involved
    tol = 16 * torch.finfo(dtype).eps * (a.abs() + m.abs() + t.abs()) + torch.finfo(dtype).tiny
    lo = torch.searchsorted(sorted_keys, t - tol, right=True)
    hi = torch.searchsorted(sorted_keys, t + tol, right=True)
    width = sorted_keys.shape[1]
    while bool((hi > lo).any()):
        mid = (lo + hi) // 2
        vals = torch.gather(sorted_keys, 1, mid.clamp(max=width - 1))
        q = ((vals - a) > m) | (mid >= width)
        open_ = hi > lo
        hi = torch.where(open_ & q, mid, hi)
        lo = torch.where(open_ & ~q, mid + 1, lo)
    return torch.minimum(lo, n_valid.unsqueeze(1))


def _count_from_keys(
    key: torch.Tensor, labels: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-anchor (easy, semihard, hard) counts and triplet-weighted key sums, from a (B, B) key matrix.

    Every column is looked up in the anchor's sorted negatives (B^2 binary searches, no B^3 mask); the counts
    are then kept for the positive columns only.
    """
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    pos_mask = same.clone()
    pos_mask.fill_diagonal_(False)
    neg_mask = ~same
    n_neg = neg_mask.sum(1)
    n_pos = pos_mask.sum(1)
    sorted_neg = torch.sort(key.masked_fill(same, float("inf")), dim=1).values
    n_le_0 = torch.minimum(torch.searchsorted(sorted_neg, key, right=True), n_neg.unsqueeze(1))
    n_le_m = _first_true(sorted_neg, key, margin, n_neg)
    hard = torch.minimum(n_le_0, n_le_m)
    pos_l = pos_mask.long()
    hard_sum = (hard * pos_l).sum(1)
    le_m_sum = (n_le_m * pos_l).sum(1)
    easy = n_neg * n_pos - le_m_sum
    semi = le_m_sum - hard_sum
    sum_ap = (key.double() * pos_mask).sum(1)
    sum_an = (key.double() * neg_mask).sum(1)
    return easy, semi, hard_sum, sum_ap * n_neg, sum_an * n_pos


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave as is), restoring the setting afterwards."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def batch_census(
    dist_or_embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    *,
    metric: Metric | None = None,
    distance: Any = None,
) -> TripletCounts:
    """Exact easy / semi-hard / hard counts of one batch, as PML's TripletMarginMiner would mine them.

    Pass a (B, B) distance matrix with ``metric=None`` (the contract), or (B, D) embeddings with
    ``metric="cosine" | "euclidean"``, or embeddings with a PML ``distance`` object (used as the miner uses it).
    """
    margin = _check_margin(margin)
    if isinstance(dist_or_embeddings, torch.Tensor):
        x = dist_or_embeddings.detach()
    elif isinstance(dist_or_embeddings, np.ndarray):
        x = tensor_view(dist_or_embeddings)
    else:
        x = torch.as_tensor(dist_or_embeddings)
    lab = torch.as_tensor(labels).detach().to(x.device)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(lab.shape)}")
    if not x.is_floating_point():
        x = x.float()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    key, inverted = _key_matrix(x, lab, metric, distance)
    key = key.contiguous()
    if key.shape[0] == 0:
        return TripletCounts(0, 0, 0, 0, float("nan"), float("nan"))
    if not bool(torch.isfinite(key).all()):
        raise ValueError("batch_census: the distance matrix contains NaN or infinite values")
    easy, semi, hard, w_ap, w_an = _count_from_keys(key, lab, margin)
    n_e, n_s, n_h = int(easy.sum()), int(semi.sum()), int(hard.sum())
    total = n_e + n_s + n_h
    if total == 0:
        return TripletCounts(0, 0, 0, 0, float("nan"), float("nan"))
    mean_ap = float(w_ap.sum()) / total
    mean_an = float(w_an.sum()) / total
    if inverted:  # keys are -similarity; report distances (1 - cos for cosine)
        mean_ap, mean_an = 1.0 + mean_ap, 1.0 + mean_an
    return TripletCounts(n_e, n_s, n_h, total, mean_ap, mean_an)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _range_stats(keys, lo, hi):  # pragma: no cover - compiled; fastmath lets these reductions vectorise
    s = 0.0
    mn = np.float32(np.inf)
    mx = np.float32(-np.inf)
    for j in range(lo, hi):
        v = keys[j]
        s += v
        mn = min(mn, v)
        mx = max(mx, v)
    return s, mn, mx


@numba.njit(cache=True, nogil=True)
def _count_row(keys, s, e, self_id, m, out_counts, out_sums):  # pragma: no cover - compiled
    """One anchor's census.  Columns are sorted by class, so its positives are keys[s:e] less itself and its
    negatives keys[:s] and keys[e:]: no per-column label test."""
    n = keys.shape[0]
    n_pos = e - s - 1
    n_neg = n - (e - s)
    sum_c, _, _ = _range_stats(keys, s, e)
    sum_a, lo_a, hi_a = _range_stats(keys, 0, s)
    sum_b, lo_b, hi_b = _range_stats(keys, e, n)
    lo = min(lo_a, lo_b)
    hi = max(hi_a, hi_b)
    out_counts[3] = n_pos
    out_counts[4] = n_neg
    out_sums[0] = sum_c - keys[self_id]
    out_sums[1] = sum_a + sum_b
    out_counts[0] = 0
    out_counts[1] = 0
    out_counts[2] = 0
    if n_neg == 0 or n_pos <= 0:
        return
    pos = np.empty(n_pos, np.float32)
    i_p = 0
    for j in range(s, e):
        if j != self_id:
            pos[i_p] = keys[j]
            i_p += 1
    # bucket the negatives on a uniform grid (counting sort); bin() is monotone, so ranks are exact
    nb = n_neg // 4 + 1
    if nb > 16384:
        nb = 16384
    lo64 = np.float64(lo)
    span = np.float64(hi) - lo64
    # bins in float32 arithmetic (monotone too; the same function for negatives, positives and margin brackets)
    inv = np.float32(min(nb / span, 1e30)) if span > 0 else np.float32(0.0)
    start = np.zeros(nb + 1, np.int64)
    bins = np.empty(n, np.int32)
    for seg in range(2):
        j0 = 0 if seg == 0 else e
        j1 = s if seg == 0 else n
        for j in range(j0, j1):
            b = np.int64((keys[j] - lo) * inv)
            b = b if b < nb else nb - 1
            bins[j] = b
            start[b + 1] += 1
    for b in range(nb):
        start[b + 1] += start[b]
    fill = start[:nb].copy()
    buck = np.empty(n_neg, np.float32)
    for seg in range(2):
        j0 = 0 if seg == 0 else e
        j1 = s if seg == 0 else n
        for j in range(j0, j1):
            b = bins[j]
            buck[fill[b]] = keys[j]
            fill[b] += 1
    eps = np.float64(np.finfo(np.float32).eps)
    tiny = np.float64(np.finfo(np.float32).tiny)
    m64 = np.float64(m)
    easy = 0
    semi = 0
    hard = 0
    for k in range(n_pos):
        a = pos[k]
        a64 = np.float64(a)
        # n_le_0: negatives with x <= a  (fl(x - a) <= 0  <=>  x <= a)
        if a64 < lo64:
            le0 = 0
        elif a64 >= np.float64(hi):
            le0 = n_neg
        else:
            b = np.int64((a - lo) * inv)
            if b >= nb:
                b = nb - 1
            le0 = start[b]
            for j in range(start[b], start[b + 1]):
                if buck[j] <= a:
                    le0 += 1
        # n_le_m: negatives with fl(x - a) <= m; bracket a + m by a few ulps, test the bracket exactly
        t = a64 + m64
        tol = 8.0 * eps * (abs(a64) + abs(m64) + abs(t)) + tiny
        tl = np.float32(t - tol)  # the bracket is 8 ulps wide: rounding it to float32 keeps it a bracket
        th = np.float32(t + tol)
        if tl < lo:
            b_lo = 0
        else:
            b_lo = np.int64((tl - lo) * inv)
            if b_lo >= nb:
                b_lo = nb - 1
        if th < lo:
            b_hi = -1
        else:
            b_hi = np.int64((th - lo) * inv)
            if b_hi >= nb:
                b_hi = nb - 1
        if b_hi < b_lo:
            lem = 0
        else:
            lem = start[b_lo]
            for j in range(start[b_lo], start[b_hi + 1]):
                if not (buck[j] - a > m):
                    lem += 1
        h = le0 if le0 < lem else lem
        hard += h
        semi += lem - h
        easy += n_neg - lem
    out_counts[0] = easy
    out_counts[1] = semi
    out_counts[2] = hard


@numba.njit(cache=True, nogil=True)
def _count_chunk(sims, sq_rows, sq_all, euclid, pos, cls_start, cls_end, m, out_counts, out_sums):  # pragma: no cover
    r = sims.shape[0]
    n = sims.shape[1]
    keys = np.empty(n, np.float32)
    for i in range(r):
        if euclid:
            for j in range(n):
                v = sq_rows[i] + sq_all[j] - np.float32(2.0) * sims[i, j]
                keys[j] = np.sqrt(v) if v > 0 else np.float32(0.0)
            p = pos[i]
            _count_row(keys, cls_start[p], cls_end[p], p, m, out_counts[i], out_sums[i])
        else:  # the caller multiplied negated rows: the product already holds the keys, -cos
            p = pos[i]
            _count_row(sims[i], cls_start[p], cls_end[p], p, m, out_counts[i], out_sums[i])


CENSUS_BUFFER_BYTES = 64 << 20  # each census thread's block of distances (rows x N float32)


def census_chunk(n: int) -> int:
    """Anchor rows per block: 512 up to ~32k samples, fewer beyond, so a thread's block stays ~64 MB (a
    500,000-sample split would otherwise take 1 GB per thread)."""
    return int(min(512, max(8, CENSUS_BUFFER_BYTES // (4 * max(n, 1)))))


def sample_anchors(n: int, max_anchors: int | None, seed: int = 0) -> np.ndarray | None:
    """The anchors a census of ``n`` samples looks at: a seeded random sample of ``max_anchors`` positions, sorted
    (None: every sample)."""
    if max_anchors is None or n <= max_anchors:
        return None
    if max_anchors < 1:
        raise ValueError(f"max_anchors must be >= 1, got {max_anchors}")
    return np.sort(np.random.default_rng(seed).choice(n, size=int(max_anchors), replace=False)).astype(np.int64)


def epoch_census(
    embeddings: Any,
    labels: Any,
    *,
    margin: float,
    metric: Metric = "cosine",
    max_anchors: int | None = None,
    seed: int = 0,
    chunk: int | None = None,
    anchors: Sequence[int] | np.ndarray | None = None,
    overwrite: bool = False,
) -> Census:
    """Exact census of every triplet of every anchor of a split (or of a random sample of ``max_anchors``).

    Distances come from row chunks of a matmul; each anchor's negatives are bucketed once and every positive's
    easy / hard bounds are read off the buckets, so the cost is O(N^2), never O(N^3).  Explicit ``anchors``
    (sample ids) may be given instead of sampling. ``overwrite``: the caller gives ``embeddings`` up; when its
    labels are already sorted, its rows are made unit length in place instead of in a copy (a past epoch's
    500,000 held-out rows, read for this census only, were copied once more: 256 MB).
    """
    margin = _check_margin(margin)
    check_metric(metric)
    x, y = _as_embeddings(embeddings, labels)
    n = len(x)
    sampled = False
    if anchors is not None:
        anc = np.asarray(anchors, dtype=np.int64).ravel()
        if len(anc) and (anc.min() < 0 or anc.max() >= n):
            raise ValueError(f"anchor ids must lie in [0, {n}), got range [{anc.min()}, {anc.max()}]")
        sampled = len(np.unique(anc)) < n
    elif (picked := sample_anchors(n, max_anchors, seed)) is not None:
        anc, sampled = picked, True
    else:
        anc = np.arange(n, dtype=np.int64)
    euclid = metric == "euclidean"
    # columns sorted by class: each anchor's positives are one contiguous slice, its negatives the rest. One copy
    # (sorted, then normalised in place): a 500,000 x 128 split held a normalised and a sorted copy (512 MB)
    order = np.argsort(y, kind="stable")
    in_place = overwrite and x.flags.writeable and bool(np.all(y[1:] >= y[:-1]))
    xs = x if in_place else np.ascontiguousarray(x[order])
    if not euclid:
        unit_rows(xs, out=xs)
    ys = y[order]
    first = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]]) if n else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[first, n])
    cls_start = np.repeat(first, sizes).astype(np.int64)
    cls_end = cls_start + np.repeat(sizes, sizes).astype(np.int64)
    where = np.empty(n, np.int64)
    where[order] = np.arange(n)
    pos = where[anc]
    sq = np.einsum("ij,ij->i", xs, xs).astype(np.float32) if euclid else np.zeros(n, np.float32)
    counts = np.zeros((len(anc), 5), np.int64)
    sums = np.zeros((len(anc), 2), np.float64)
    m32 = np.float32(margin)
    chunk = max(1, int(chunk)) if chunk is not None else census_chunk(n)
    workers = max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
    xt = torch.from_numpy(xs)

    starts = iter(range(0, len(anc), chunk))
    take = threading.Lock()

    def run() -> None:
        # each thread multiplies its own rows on one BLAS thread: no barrier waiting on a descheduled GEMM thread
        # (on the shared, oversubscribed 2-core box a 2-thread GEMM ran several times slower than this); chunks
        # are taken from a shared queue, so a thread the OS sets aside does not leave the other idle at the end.
        # One reused output buffer per thread: a fresh 20-40 MB result per chunk cost more in page faults than
        # the GEMM itself (bench_triplets: 3.1 -> 2.0 s of GEMM per 20k epoch)
        buf = torch.empty((min(chunk, len(anc)), n), dtype=torch.float32)
        while True:
            with take:
                s = next(starts, None)
            if s is None:
                return
            e = min(s + chunk, len(anc))
            rows = pos[s:e]
            a = xt[torch.from_numpy(rows)]
            if not euclid:  # (-x_a) . x_j is exactly -(x_a . x_j): the cosine keys come out of the GEMM
                a.neg_()
            sims = torch.mm(a, xt.t(), out=buf[: e - s]).numpy()
            _count_chunk(sims, sq[rows], sq, euclid, rows, cls_start, cls_end, m32, counts[s:e], sums[s:e])

    workers = max(1, min(workers, -(-len(anc) // chunk)))
    with _torch_threads(1), ThreadPoolExecutor(max_workers=workers) as pool:  # the kernel releases the GIL
        jobs = [pool.submit(run) for _ in range(workers)]
        for job in jobs:
            job.result()
    n_easy, n_semi, n_hard, n_pos, n_neg = (counts[:, i].copy() for i in range(5))
    offset = 1.0 if metric == "cosine" else 0.0  # cosine keys are -cos: distance = 1 + key
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_ap = np.where(n_pos > 0, sums[:, 0] / np.maximum(n_pos, 1) + offset, np.nan)
        mean_an = np.where(n_neg > 0, sums[:, 1] / np.maximum(n_neg, 1) + offset, np.nan)
    census = Census(
        margin=margin,
        metric=metric,
        sampled=sampled,
        n_anchors=len(anc),
        n_samples=n,
        anchors=anc,
        anchor_labels=y[anc],
        n_easy=n_easy,
        n_semihard=n_semi,
        n_hard=n_hard,
        n_pos=n_pos,
        n_neg=n_neg,
        mean_d_ap=mean_ap,
        mean_d_an=mean_an,
    )
    total = int(n_easy.sum() + n_semi.sum() + n_hard.sum())
    census.total_easy, census.total_semihard, census.total_hard = int(n_easy.sum()), int(n_semi.sum()), int(n_hard.sum())
    census.total = total
    if total:
        census.share_easy = census.total_easy / total
        census.share_semihard = census.total_semihard / total
        census.share_hard = census.total_hard / total
        w = n_pos * n_neg  # triplets per anchor
        has = w > 0
        census.triplet_mean_d_ap = float(np.sum(mean_ap[has] * w[has]) / total)
        census.triplet_mean_d_an = float(np.sum(mean_an[has] * w[has]) / total)
    return census


def warm_up() -> None:
    """Load the census kernels now (compile them the first time; numba caches them on disk).

    Loading holds the GIL for ~0.4 s: a window calls this before it shows, not in the first census it runs."""
    x = np.arange(24, dtype=np.float32).reshape(6, 4) % 5
    epoch_census(x, np.arange(6) % 2, margin=0.1, metric="euclidean")
