"""Class-stratified pair samples for verification beyond the exact range (millions of held-out images).

``trainer.analysis.verification.pair_histograms`` counts ALL pairs: N^2/2 distances, fine up to ~1e5 held-out images (5e9
pairs) and out of reach at 1e6 (5e11). Above that the threshold studio works from a sample of pairs drawn
stratified by class: every class contributes genuine pairs in proportion to its n_c (n_c - 1) / 2 genuine pairs,
and impostor pairs in proportion to its n_c (N - n_c) share of cross-class pairs (largest-remainder rounding), so
the sample is self-weighting (every pair of a kind has the same chance, up to rounding of one pair per class) and
plain counts of the sampled distances estimate the FAR / TAR curves without weights. When the budget covers every
pair of a kind, that kind is taken whole and its counts are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.analysis.distances import check_metric, unit_rows
from trainer.analysis.verification import DEFAULT_BINS, PairHistograms

DEFAULT_MAX_GENUINE = 2_000_000
DEFAULT_MAX_IMPOSTOR = 8_000_000


@dataclass
class PairSample:
    """Row pairs (i < j) to measure, with whether each is genuine, and what the sample stands for."""

    i: np.ndarray  # (P,) row indices: int32 (int64 beyond 2^31 rows)
    j: np.ndarray  # (P,) same dtype, i < j
    genuine: np.ndarray  # (P,) bool
    n_genuine_total: int  # genuine pairs in the whole set
    n_impostor_total: int
    genuine_exact: bool  # every genuine pair is in the sample
    impostor_exact: bool

    @property
    def exact(self) -> bool:
        return self.genuine_exact and self.impostor_exact

    def describe(self) -> str:
        """One line for the view: what was measured, exactly or as a stratified sample."""
        n_gen = int(self.genuine.sum())
        n_imp = len(self.genuine) - n_gen
        if self.exact:
            return f"all {n_gen:,} genuine and {n_imp:,} impostor pairs, counted exactly"

        def part(n: int, total: int, exact: bool, kind: str) -> str:
            return f"all {total:,} {kind}" if exact else f"{n:,} of {total:,} {kind} (sampled)"

        return (f"{part(n_gen, self.n_genuine_total, self.genuine_exact, 'genuine')} and "
                f"{part(n_imp, self.n_impostor_total, self.impostor_exact, 'impostor')} pairs, "
                f"stratified by class")


def _dense_labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {y.shape}")
    if len(y) < 2:
        raise ValueError(f"at least 2 samples are needed to form a pair, got {len(y)}")
    return np.unique(y, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``weights`` summing to ``total`` (Hamilton's method; ties go to the lower index)."""
    w = np.asarray(weights, dtype=np.float64)
    if total <= 0 or w.sum() <= 0:
        return np.zeros(len(w), dtype=np.int64)
    quota = w * (total / w.sum())
    base = np.floor(quota).astype(np.int64)
    short = int(total - base.sum())
    if short > 0:
        order = np.lexsort((np.arange(len(w)), -(quota - base)))
        base[order[:short]] += 1
    return base


def _triangle_pairs(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major index k of the strict upper triangle of an n x n matrix -> (a, b), a < b."""
    k = np.asarray(k, dtype=np.int64)
    # rows a hold n - 1 - a pairs; start(a) = a (2n - a - 1) / 2
    a = (2 * n - 1 - np.sqrt((2.0 * n - 1) ** 2 - 8.0 * k)) // 2
    a = a.astype(np.int64)
    start = a * (2 * n - a - 1) // 2
    a = np.where(start > k, a - 1, a)  # float rounding near a row boundary
    start = a * (2 * n - a - 1) // 2
    nxt = (a + 1) * (2 * n - a - 2) // 2
    a = np.where(k >= nxt, a + 1, a)
    start = a * (2 * n - a - 1) // 2
    b = a + 1 + (k - start)
    return a, b


def pair_totals(labels) -> tuple[int, int]:
    """(genuine, impostor) unordered pair counts of a labelling."""
    y = _dense_labels(labels)
    counts = np.bincount(y).astype(np.int64)
    n = int(len(y))
    genuine = int((counts * (counts - 1) // 2).sum())
    return genuine, n * (n - 1) // 2 - genuine


def stratified_pair_sample(
    labels,
    *,
    max_genuine: int = DEFAULT_MAX_GENUINE,
    max_impostor: int = DEFAULT_MAX_IMPOSTOR,
    seed: int = 0,
) -> PairSample:
    """Every pair when the budget allows, else a class-stratified sample (genuine without replacement).

    Genuine pairs of class c: ``max_genuine * g_c / sum(g)`` drawn without replacement among its g_c pairs.
    Impostor pairs "owned" by class c (one member in c): ``max_impostor * n_c (N - n_c) / sum`` draws of a
    member of c and a member outside c, uniformly (with replacement: repeats are rare when sampling is needed).
    """
    y = _dense_labels(labels)
    if max_genuine < 0 or max_impostor < 0:
        raise ValueError(f"pair budgets must be >= 0, got max_genuine={max_genuine}, max_impostor={max_impostor}")
    rng = np.random.default_rng(seed)
    n = len(y)
    order = np.argsort(y, kind="stable")
    counts = np.bincount(y).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    g_tot, i_tot = pair_totals(y)
    # 4-byte row ids: 10 million sampled pairs hold 80 MB of ids, not 160 (each piece is narrowed as it is drawn)
    dt = np.int32 if n <= np.iinfo(np.int32).max else np.int64
    gi, gj = [], []

    # ---- genuine
    g_c = counts * (counts - 1) // 2
    gen_exact = g_tot <= max_genuine
    take = g_c if gen_exact else _largest_remainder(g_c, max_genuine)
    for c in np.flatnonzero(take):
        members = order[starts[c]:starts[c] + counts[c]]
        m = int(take[c])
        k = np.arange(m) if m == g_c[c] else rng.choice(int(g_c[c]), size=m, replace=False)
        a, b = _triangle_pairs(k, int(counts[c]))
        gi.append(members[a].astype(dt))
        gj.append(members[b].astype(dt))

    # ---- impostor
    imp_exact = i_tot <= max_impostor
    ii, ij = [], []
    if imp_exact:
        for c in range(len(counts)):
            members = order[starts[c]:starts[c] + counts[c]]
            later = order[starts[c] + counts[c]:]  # classes after c: each cross pair once
            ii.append(np.repeat(members.astype(dt), len(later)))
            ij.append(np.tile(later.astype(dt), len(members)))
    else:
        owned = counts * (n - counts)
        take_i = _largest_remainder(owned, max_impostor)
        for c in np.flatnonzero(take_i):
            m = int(take_i[c])
            members = order[starts[c]:starts[c] + counts[c]]
            a = members[rng.integers(0, counts[c], size=m)]
            # a uniform row outside class c: draw among the n - n_c others and skip over the block of c
            r = rng.integers(0, n - counts[c], size=m)
            r = np.where(r >= starts[c], r + counts[c], r)
            ii.append(a.astype(dt))
            ij.append(order[r].astype(dt))

    # one concatenation per side, ordered in place: 10 million sampled pairs went through five int64 copies
    n_gen = sum(len(p) for p in gi)
    n_imp = sum(len(p) for p in ii)
    lo = np.concatenate(gi + ii) if gi or ii else np.empty(0, dt)
    del gi, ii
    hi = np.concatenate(gj + ij) if gj or ij else np.empty(0, dt)
    del gj, ij
    swap = lo > hi
    lo[swap], hi[swap] = hi[swap], lo[swap]
    genuine = np.zeros(n_gen + n_imp, bool)
    genuine[:n_gen] = True
    return PairSample(lo, hi, genuine, g_tot, i_tot, bool(gen_exact), bool(imp_exact))


def stratified_image_sample(labels, n: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` images drawn without replacement, stratified by class.

    Every class keeps min(2, its size) images first (so genuine pairs remain where they existed), the rest of
    ``n`` is split in proportion to what each class has left (largest remainder); when two per class do not fit in
    ``n``, all of ``n`` is split in proportion to the class sizes. All images when ``n`` >= N."""
    y = np.asarray(labels).reshape(-1)
    total = len(y)
    if n >= total:
        return np.arange(total, dtype=np.int64)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    floor = np.minimum(counts, 2)
    if floor.sum() > n:  # too many classes for two each: the whole sample in proportion to class sizes
        floor = np.zeros_like(counts)
    take = floor + _largest_remainder(counts - floor, n - int(floor.sum()))
    rng = np.random.default_rng(seed)
    order = np.argsort(inv.reshape(-1), kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    picked = [order[s + rng.choice(c, size=t, replace=False)] for s, c, t in zip(starts, counts, take) if t]
    return np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.zeros(0, np.int64)


def pair_distances(embeddings, i: np.ndarray, j: np.ndarray, *, metric: str = "cosine",
                   chunk: int = 1 << 15) -> np.ndarray:
    """Distances of the row pairs (i[p], j[p]): 1 - cos for "cosine", L2 for "euclidean" (float32 maths, chunked)."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (N, D) array, got shape {x.shape}")
    return _chunked_pair_distances(x, i, j, metric=check_metric(metric), chunk=chunk)


def _chunked_pair_distances(x: np.ndarray, i: np.ndarray, j: np.ndarray, *, metric: str,
                            chunk: int = 1 << 15) -> np.ndarray:
    """:func:`pair_distances` of float32 rows ``x``: the rows of a chunk of pairs are gathered and made unit length
    there (cosine; ``unit_rows``, as ``metric_rows`` does), so no normalised copy of ``x`` is made (256 MB for
    the 500,000 held-out rows of a 1e6 x 128 run)."""
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):  # float32 products in cache-sized chunks, float64 result
        a, b = x[i[s:s + chunk]], x[j[s:s + chunk]]
        if metric == "cosine":
            unit_rows(a, out=a)
            unit_rows(b, out=b)
            out[s:s + chunk] = 1.0 - np.einsum("ij,ij->i", a, b)
        else:
            diff = a - b
            out[s:s + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


HIST_PAIR_CHUNK = 1 << 20  # sampled pairs histogrammed at a time


def sampled_pair_histograms(embeddings, labels, sample: PairSample, *, metric: str = "cosine",
                            bins: int = DEFAULT_BINS, max_distance: float | None = None) -> PairHistograms:
    """Genuine / impostor histograms of a pair sample, in the bins of ``evaluate.pair_histograms`` (right-closed).

    The result feeds ``evaluate.roc_from_histograms`` unchanged; its counts are those of the sample.
    """
    x = np.asarray(embeddings)
    y = _dense_labels(labels)
    if len(x) != len(y):
        raise ValueError(f"labels must have one entry per row ({len(x)}), got {len(y)}")
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (N, D) array, got shape {x.shape}")
    metric = check_metric(metric)
    xf = np.asarray(x, dtype=np.float32)
    if metric == "cosine":
        hi = 2.0
    elif max_distance is not None:
        hi = float(max_distance)
    else:
        xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
        hi = 2.0 * float(np.sqrt((xc * xc).sum(axis=1)).max()) * (1 + 1e-6) or 1.0
    width = hi / bins
    gen = np.zeros(bins, np.int64)
    imp = np.zeros(bins, np.int64)
    # a million pairs at a time: 10 million sampled pairs held their distances, bins and masks at once (~0.3 GB)
    for s in range(0, len(sample.i), HIST_PAIR_CHUNK):
        d = _chunked_pair_distances(xf, sample.i[s:s + HIST_PAIR_CHUNK], sample.j[s:s + HIST_PAIR_CHUNK],
                                    metric=metric)
        b = np.clip(np.ceil(d / width) - 1, 0, bins - 1).astype(np.int64)
        g = sample.genuine[s:s + HIST_PAIR_CHUNK]
        gen += np.bincount(b[g], minlength=bins)
        imp += np.bincount(b[~g], minlength=bins)
    return PairHistograms(metric, np.linspace(0.0, hi, bins + 1), gen, imp, n_samples=len(x),
                          n_classes=int(y.max()) + 1)
