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

Metric = Literal["cosine", "euclidean"]
CATEGORIES = ("easy", "semihard", "hard")

__all__ = [
    "CATEGORIES",
    "Census",
    "Diagnostic",
    "TripletCounts",
    "TripletExamples",
    "batch_census",
    "batch_triplet_examples",
    "diagnose",
    "epoch_census",
    "near_duplicates_across_classes",
    "suspected_mislabels",
    "triplet_examples",
]


# ----------------------------------------------------------------------------------------------------------------
# results


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


@dataclass(frozen=True)
class TripletExamples:
    """Example triplets (global sample ids) with their distances; hardness = d_an - d_ap."""

    anchor: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    d_ap: np.ndarray
    d_an: np.ndarray

    def __len__(self) -> int:
        return len(self.anchor)

    def __iter__(self):  # allows ``a, p, n, d_ap, d_an = triplet_examples(...)``
        return iter((self.anchor, self.positive, self.negative, self.d_ap, self.d_an))


@dataclass(frozen=True)
class Diagnostic:
    """One finding about an embedding: level "warning" | "info", a short title, a sentence, sample ids involved."""

    level: str
    title: str
    detail: str
    sample_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


# ----------------------------------------------------------------------------------------------------------------
# input checks


DIAGNOSE_EXACT_LIMIT = 50_000  # label checks of larger splits look at a random sample of images ...
DIAGNOSE_SAMPLE = 20_000  # ... this many, each against all (at 5e5 images: ~1 min here instead of hours)


def _check_category(category: str) -> str:
    if category not in CATEGORIES:
        raise ValueError(f"unknown triplet category {category!r}; expected one of {CATEGORIES}")
    return category


def _check_metric(metric: str) -> str:
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown metric {metric!r}; expected 'cosine' or 'euclidean'")
    return metric


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


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """Rows as used by the distance: L2-normalised for cosine (as torch.nn.functional.normalize), else as is."""
    if metric == "cosine":
        return np.ascontiguousarray(torch.nn.functional.normalize(torch.from_numpy(x), dim=1).numpy())
    return x


# ----------------------------------------------------------------------------------------------------------------
# batch census (torch; exact; equals PML's TripletMarginMiner counts)


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
    _check_metric(metric)
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
    b = key.shape[0]
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


# Batches up to this size would run the census on one torch thread. Off (0): switching the thread count around
# every training step cost the loop 9-13 % of its images/s (bench_train (a): 0.87 with the switch, 1.01 without),
# more than the census itself gains on one thread.
_SMALL_BATCH = 0


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
    x = dist_or_embeddings.detach() if isinstance(dist_or_embeddings, torch.Tensor) else torch.as_tensor(dist_or_embeddings)
    lab = torch.as_tensor(labels).detach().to(x.device)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(lab.shape)}")
    if not x.is_floating_point():
        x = x.float()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    with _torch_threads(1 if x.shape[0] <= _SMALL_BATCH else None):
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


@torch.no_grad()
def batch_triplet_examples(
    dist_or_embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    category: str,
    *,
    metric: Metric | None = None,
    n: int = 16,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A uniform random sample of up to ``n`` (anchor, positive, negative) batch indices of one category."""
    _check_category(category)
    margin = _check_margin(margin)
    x = torch.as_tensor(dist_or_embeddings).detach().float()
    lab = torch.as_tensor(labels).detach().to(x.device)
    key, _ = _key_matrix(x, lab, metric, None)
    same = lab.unsqueeze(0) == lab.unsqueeze(1)
    pos = same & ~torch.eye(len(lab), dtype=torch.bool, device=x.device)
    a_idx, p_idx = torch.nonzero(pos, as_tuple=True)
    gen = torch.Generator().manual_seed(seed)
    picked_a, picked_p, picked_n = [], [], []
    # rejection-free: per sampled pair, choose among the negatives of the right category
    perm = torch.randperm(len(a_idx), generator=gen)
    m = torch.tensor(margin, dtype=key.dtype)
    for j in perm.tolist():
        a, p = int(a_idx[j]), int(p_idx[j])
        diff = key[a] - key[a, p]
        ok = ~same[a] & _category_mask(diff, m, category)
        cand = torch.nonzero(ok).flatten()
        if len(cand):
            picked_a.append(a)
            picked_p.append(p)
            picked_n.append(int(cand[torch.randint(len(cand), (1,), generator=gen)]))
            if len(picked_a) >= n:
                break
    return (np.array(picked_a, np.int64), np.array(picked_p, np.int64), np.array(picked_n, np.int64))


def _category_mask(diff: Any, m: Any, category: str) -> Any:
    """PML's rule on diff = key(a,n) - key(a,p)."""
    if category == "easy":
        return diff > m
    if category == "hard":
        return (diff <= m) & (diff <= 0)
    return (diff <= m) & (diff > 0)


# ----------------------------------------------------------------------------------------------------------------
# epoch census (chunked matmul + a numba kernel that buckets each anchor's negatives)


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
) -> Census:
    """Exact census of every triplet of every anchor of a split (or of a random sample of ``max_anchors``).

    Distances come from row chunks of a matmul; each anchor's negatives are bucketed once and every positive's
    easy / hard bounds are read off the buckets, so the cost is O(N^2), never O(N^3).  Explicit ``anchors``
    (sample ids) may be given instead of sampling.
    """
    margin = _check_margin(margin)
    _check_metric(metric)
    x, y = _as_embeddings(embeddings, labels)
    n = len(x)
    sampled = False
    if anchors is not None:
        anc = np.asarray(anchors, dtype=np.int64).ravel()
        if len(anc) and (anc.min() < 0 or anc.max() >= n):
            raise ValueError(f"anchor ids must lie in [0, {n}), got range [{anc.min()}, {anc.max()}]")
        sampled = len(np.unique(anc)) < n
    elif max_anchors is not None and n > max_anchors:
        if max_anchors < 1:
            raise ValueError(f"max_anchors must be >= 1, got {max_anchors}")
        anc = np.sort(np.random.default_rng(seed).choice(n, size=int(max_anchors), replace=False)).astype(np.int64)
        sampled = True
    else:
        anc = np.arange(n, dtype=np.int64)
    xp = _prepare(x, metric)
    euclid = metric == "euclidean"
    # columns sorted by class: each anchor's positives are one contiguous slice, its negatives the rest
    order = np.argsort(y, kind="stable")
    xs = np.ascontiguousarray(xp[order])
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


# ----------------------------------------------------------------------------------------------------------------
# example triplets for the gallery


def _row_keys(xp: np.ndarray, rows: np.ndarray, metric: str, sq: np.ndarray | None) -> torch.Tensor:
    """Ordering keys (larger = farther) of anchor rows against every sample, as the epoch census computes them."""
    sims = torch.from_numpy(xp[rows] @ xp.T)
    if metric == "cosine":
        return -sims
    v = torch.from_numpy(sq[rows]).unsqueeze(1) + torch.from_numpy(sq).unsqueeze(0) - 2.0 * sims
    return torch.sqrt(torch.clamp(v, min=0.0))


EXAMPLES_BUFFER_BYTES = 256 << 20  # the example search's working set per block of anchors
EXAMPLES_BYTES_PER_KEY = 40  # per (anchor, sample): keys, masked and sorted copies, sort indices, masks


def examples_chunk(n: int) -> int:
    """Anchors per block of the example search: 256 up to ~25k samples, fewer beyond. A fixed 256 took ~6.5 GB
    for a 500,000-image split (bench_gui_scale --stalls: the Triplets tab raised the window's memory 4.5 -> 11 GB)."""
    return int(min(256, max(1, EXAMPLES_BUFFER_BYTES // (EXAMPLES_BYTES_PER_KEY * max(n, 1)))))


def triplet_examples(
    embeddings: Any,
    labels: Any,
    category: str,
    *,
    margin: float,
    metric: Metric = "cosine",
    n: int = 32,
    classes: Sequence[int] | None = None,
    sort: Literal["hardest", "easiest"] = "hardest",
    seed: int = 0,
    max_anchors: int | None = 1024,
    max_per_anchor: int | None = None,
    chunk: int | None = None,
) -> TripletExamples:
    """Up to ``n`` triplets of one category, hardest (smallest d_an - d_ap) or easiest first.

    Anchors are all samples of ``classes`` (all classes if None), or a seeded random sample of ``max_anchors`` of
    them; among those anchors' triplets the selection is exact.  Per anchor, each positive's triplets of the
    category are a contiguous run of its sorted negatives, so only ``n`` candidates per positive are looked at.
    Anchors go ``chunk`` at a time (default: :func:`examples_chunk`, so a block stays ~256 MB at any N).
    """
    _check_category(category)
    margin = _check_margin(margin)
    _check_metric(metric)
    if sort not in ("hardest", "easiest"):
        raise ValueError(f"sort must be 'hardest' or 'easiest', got {sort!r}")
    x, y = _as_embeddings(embeddings, labels)
    empty = TripletExamples(*(np.zeros(0, np.int64),) * 3, np.zeros(0, np.float32), np.zeros(0, np.float32))
    if n <= 0 or len(x) == 0:
        return empty
    cand = np.arange(len(x), dtype=np.int64) if classes is None else np.flatnonzero(np.isin(y, np.asarray(classes)))
    if max_anchors is not None and len(cand) > max_anchors:
        cand = np.sort(np.random.default_rng(seed).choice(cand, size=int(max_anchors), replace=False))
    if len(cand) == 0:
        return empty
    xp = _prepare(x, metric)
    sq = np.einsum("ij,ij->i", xp, xp).astype(np.float32) if metric == "euclidean" else None
    yt = torch.from_numpy(y)
    per_anchor = n if max_per_anchor is None else max(1, min(n, int(max_per_anchor)))
    best: list[tuple[torch.Tensor, ...]] = []
    chunk = examples_chunk(len(x)) if chunk is None else max(1, int(chunk))
    for s in range(0, len(cand), chunk):
        rows = torch.from_numpy(cand[s : s + chunk])
        key = _row_keys(xp, rows.numpy(), metric, sq)  # (R, N)
        la = yt[rows].unsqueeze(1)
        same = yt.unsqueeze(0) == la
        self_mask = torch.zeros_like(same)
        self_mask[torch.arange(len(rows)), rows] = True
        pos_mask, neg_mask = same & ~self_mask, ~same
        n_neg = neg_mask.sum(1)
        sorted_neg, neg_order = torch.sort(torch.where(neg_mask, key, torch.tensor(float("inf"))), dim=1)
        n_pos = pos_mask.sum(1)
        p_max = int(n_pos.max())
        if p_max == 0 or int(n_neg.max()) == 0:
            continue
        pos_ids = torch.sort(pos_mask.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :p_max]
        pos_keys = torch.gather(key, 1, pos_ids)
        pos_valid = torch.arange(p_max).unsqueeze(0) < n_pos.unsqueeze(1)
        le0 = torch.minimum(torch.searchsorted(sorted_neg, pos_keys.contiguous(), right=True), n_neg.unsqueeze(1))
        lem = _first_true(sorted_neg, pos_keys, margin, n_neg)
        hard_end = torch.minimum(le0, lem)
        start, stop = {
            "hard": (torch.zeros_like(lem), hard_end),
            "semihard": (hard_end, lem),
            "easy": (lem, n_neg.unsqueeze(1).expand_as(lem)),
        }[category]
        offs = torch.arange(per_anchor).view(1, 1, -1)
        pos_in_run = start.unsqueeze(2) + offs if sort == "hardest" else stop.unsqueeze(2) - 1 - offs
        ok = pos_valid.unsqueeze(2) & (pos_in_run >= start.unsqueeze(2)) & (pos_in_run < stop.unsqueeze(2))
        pos_in_run = pos_in_run.clamp(0, key.shape[1] - 1)
        r_, k_, o_ = torch.nonzero(ok, as_tuple=True)
        j = pos_in_run[r_, k_, o_]
        kan = sorted_neg[r_, j]
        kap = pos_keys[r_, k_]
        hardness = (kan - kap).double()
        score = hardness if sort == "hardest" else -hardness
        # keep at most per_anchor per anchor, then the chunk's best n
        order = torch.argsort(score, stable=True)
        r_sorted = r_[order]
        rank_in_anchor = _rank_within_groups(r_sorted)
        order = order[rank_in_anchor < per_anchor][:n]
        best.append((rows[r_[order]], pos_ids[r_[order], k_[order]], neg_order[r_[order], j[order]],
                     kap[order], kan[order], score[order]))
    if not best:
        return empty
    a, p, ng, kap, kan, score = (torch.cat(t) for t in zip(*best))
    order = torch.argsort(score, stable=True)[:n]
    off = 1.0 if metric == "cosine" else 0.0
    return TripletExamples(
        anchor=a[order].numpy().astype(np.int64),
        positive=p[order].numpy().astype(np.int64),
        negative=ng[order].numpy().astype(np.int64),
        d_ap=(kap[order].double() + off).numpy().astype(np.float32),
        d_an=(kan[order].double() + off).numpy().astype(np.float32),
    )


def _rank_within_groups(groups: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... in order of appearance within each group value (groups in any order)."""
    if len(groups) == 0:
        return groups
    order = torch.argsort(groups, stable=True)
    g = groups[order]
    idx = torch.arange(len(g))
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    group_start = torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), 0).values
    rank = torch.empty_like(idx)
    rank[order] = idx - group_start
    return rank


# ----------------------------------------------------------------------------------------------------------------
# diagnostics


def suspected_mislabels(
    embeddings: Any, labels: Any, *, metric: Metric = "cosine", k: int = 5, index: Any = None,
    query_ids: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples whose k nearest neighbours (self excluded) all carry one other label: (ids, suggested label).

    ``query_ids`` checks only those samples (against every sample): how a very large split is checked in time."""
    from trainer.index import NeighborIndex

    x, y = _as_embeddings(embeddings, labels)
    if len(x) <= k or k < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    idx = index if index is not None else NeighborIndex(x, metric=metric)
    ids = np.arange(len(x)) if query_ids is None else np.unique(np.asarray(query_ids, np.int64))
    _, nb = idx.search(x[ids], k, exclude_self_ids=ids)
    valid = (nb >= 0).all(axis=1)
    nb_lab = y[np.maximum(nb, 0)]
    flagged = valid & (nb_lab == nb_lab[:, :1]).all(axis=1) & (nb_lab[:, 0] != y[ids])
    return ids[flagged].astype(np.int64), nb_lab[flagged, 0].astype(np.int64)


def _sample_pair_distances(xp: np.ndarray, metric: str, n_pairs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(xp), n_pairs)
    j = rng.integers(0, len(xp), n_pairs)
    keep = i != j
    i, j = i[keep], j[keep]
    if metric == "cosine":
        return 1.0 - np.einsum("ij,ij->i", xp[i].astype(np.float64), xp[j].astype(np.float64))
    return np.linalg.norm(xp[i].astype(np.float64) - xp[j], axis=1)


def near_duplicates_across_classes(
    embeddings: Any, labels: Any, *, metric: Metric = "cosine", eps: float | None = None, index: Any = None,
    query_ids: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) of different labels closer than ``eps``: (i, j, distance), closest first.

    ``eps`` defaults to 1e-3 x the median distance of random pairs, so it follows the embedding's scale.
    ``query_ids`` finds only the pairs that involve one of those samples.
    """
    from trainer.index import NeighborIndex

    x, y = _as_embeddings(embeddings, labels)
    if len(x) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    if eps is None:
        eps = 1e-3 * float(np.median(_sample_pair_distances(_prepare(x, metric), metric, 4000, 0)))
    idx = index if index is not None else NeighborIndex(x, metric=metric)
    i, j, d = idx.range_pairs(float(eps), query_ids=query_ids)
    cross = y[i] != y[j]
    i, j, d = i[cross], j[cross], d[cross]
    order = np.lexsort((j, i, d))
    return i[order], j[order], d[order]


def diagnose(
    embeddings: Any,
    labels: Any,
    *,
    margin: float,
    metric: Metric = "cosine",
    census: Census | None = None,
    k: int = 5,
    eps: float | None = None,
    max_anchors: int = 4096,
    max_checked: int = DIAGNOSE_EXACT_LIMIT,
    n_checked: int = DIAGNOSE_SAMPLE,
    seed: int = 0,
) -> list[Diagnostic]:
    """Plain-language findings about an epoch: collapse, overlap, all-easy triplets, label problems.

    Label problems need every sample's neighbours (N^2 distances); beyond ``max_checked`` samples a random sample
    of ``n_checked`` is checked against all of them, and the findings say so."""
    from trainer.index import NeighborIndex

    x, y = _as_embeddings(embeddings, labels)
    out: list[Diagnostic] = []
    if len(x) < 2:
        return [Diagnostic("info", "Too few samples", f"{len(x)} embedding(s): nothing to diagnose.")]
    xp = _prepare(x, metric)
    d = _sample_pair_distances(xp, metric, 20000, 0)
    # scale of the space: cosine distances live in [0, 2]; euclidean ones are compared with the vectors' size
    scale = 1.0 if metric == "cosine" else max(float(np.median(np.linalg.norm(x, axis=1))), 1e-30)
    if float(np.percentile(d, 99)) < 1e-3 * scale:
        out.append(Diagnostic(
            "warning", "Embeddings collapsed",
            f"99% of random pairs lie within {np.percentile(d, 99):.3g} of each other ({metric}), tiny for this "
            "space: the network maps every image to about the same point.",
        ))
    if census is None:
        census = epoch_census(x, y, margin=margin, metric=metric, max_anchors=max_anchors)
    if census.total:
        auc = 1.0 - census.share_hard  # P(d_an > d_ap) over triplets, ties counted as failures
        if auc < 0.6:
            out.append(Diagnostic(
                "warning", "Positives and negatives overlap",
                f"a negative is farther than a positive in only {auc:.1%} of triplets (0.5 is chance): "
                "the embedding does not separate the classes yet.",
            ))
        if census.share_easy > 0.99:
            out.append(Diagnostic(
                "warning", "Nearly all triplets are easy",
                f"{census.share_easy:.2%} of triplets satisfy d(a,n) > d(a,p) + {census.margin:g}: a triplet "
                "loss at this margin is about zero; raise the margin or mine harder negatives.",
            ))
    else:
        out.append(Diagnostic("info", "No triplets", "no anchor has both a positive and a negative."))
    index = NeighborIndex(x, metric=metric)
    checked = None
    among = ""
    if len(x) > max_checked:
        size = min(n_checked, len(x))
        checked = np.sort(np.random.default_rng(seed).choice(len(x), size=size, replace=False))
        among = f" among a random sample of {size:,} of the {len(x):,} images (each against all)"
    ids, suggested = suspected_mislabels(x, y, metric=metric, k=k, index=index, query_ids=checked)
    if len(ids):
        out.append(Diagnostic(
            "warning", f"{len(ids)} suspected label problem(s)",
            f"these images' {k} nearest neighbours all belong to one other class{among} "
            f"(e.g. sample {ids[0]} labelled {y[ids[0]]} looks like class {suggested[0]}).",
            ids,
        ))
    i, j, dist = near_duplicates_across_classes(x, y, metric=metric, eps=eps, index=index, query_ids=checked)
    if len(i):
        out.append(Diagnostic(
            "warning", f"{len(i)} near-duplicate pair(s) across classes",
            f"images of different classes with almost the same embedding{among} (e.g. samples {i[0]} and {j[0]}, "
            f"distance {dist[0]:.2g}): duplicates filed under two labels, or a collapsed embedding.",
            np.unique(np.concatenate([i, j])),
        ))
    if checked is not None:
        out.append(Diagnostic("info", "Label checks sampled",
                              f"suspected label problems and near duplicates were looked for{among}: finding "
                              f"every one would take {len(x):,}^2 distances."))
    return out
