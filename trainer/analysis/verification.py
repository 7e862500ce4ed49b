"""Verification: exact pair histograms, ROC, EER, TAR@FAR, operating points and their intervals.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from trainer.analysis.distances import _check_inputs

DEFAULT_BINS = 2**15
FAR_LEVELS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
MIN_FALSE_ACCEPTS = 10
_BLOCK_BYTES = 32 * 2**20  # per float32 buffer: a block of pair distances with its bins and masks stays ~150 MB


@dataclass
class PairHistograms:
    """Counts of pair distances in right-closed bins ``(edges[b], edges[b+1]]``; genuine = same class, i < j."""

    metric: str
    edges: np.ndarray  # (bins + 1,) float64, edges[0] = 0
    genuine: np.ndarray  # (bins,) int64
    impostor: np.ndarray  # (bins,) int64
    n_samples: int = 0
    n_classes: int = 0

    @property
    def n_genuine(self) -> int:
        return int(self.genuine.sum())

    @property
    def n_impostor(self) -> int:
        return int(self.impostor.sum())

    @property
    def bins(self) -> int:
        return len(self.genuine)

    @property
    def bin_width(self) -> float:
        return float(self.edges[1] - self.edges[0])


def _sorted_by(y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    return np.lexsort((y,)) if groups is None else np.lexsort((y, groups))


def _distance_range(x: np.ndarray, metric: str, max_distance: float | None) -> float:
    if metric == "cosine":
        return 2.0
    if max_distance is not None:
        if not max_distance > 0:
            raise ValueError(f"max_distance must be positive, got {max_distance}")
        return float(max_distance)
    centre = x.astype(np.float64).mean(axis=0)
    radius = float(np.sqrt(((x - centre) ** 2).sum(axis=1)).max())
    hi = 2.0 * radius * (1 + 1e-6)
    return hi if hi > 0 else 1.0


_TILE = 128
_POOL: ThreadPoolExecutor | None = None


def _bincount(flat: torch.Tensor, length: int) -> torch.Tensor:
    """torch.bincount is single-threaded; count the halves in two threads (torch releases the GIL)."""
    global _POOL
    if torch.get_num_threads() < 2 or len(flat) < 2**20:
        return torch.bincount(flat, minlength=length)
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluate-bincount")
    half = len(flat) // 2
    job = _POOL.submit(torch.bincount, flat[:half], None, length)
    out = torch.bincount(flat[half:], minlength=length)
    return out + job.result()


def _block_rows(n: int, block_bytes: int) -> int:
    return int(max(1, min(n, block_bytes // (4 * (n + 3)))))


def _grouped_counts(
    x: np.ndarray,
    y: np.ndarray,
    metric: str,
    bins: int,
    hi: float,
    groups: np.ndarray | None = None,
    n_groups: int = 1,
    block_bytes: int = _BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor counts per (group g <= group h) pair: arrays (n_pairs, bins), d-bins right-closed.

    ``groups`` (per sample, constant within a class) splits the pairs by the groups of their two samples; pair
    index of (g, h), g <= h, is the row-major index in the upper triangle of the n_groups x n_groups matrix.
    """
    order = _sorted_by(y, groups)
    xs = torch.from_numpy(np.ascontiguousarray(x[order]))
    ys = y[order]
    n, dim = xs.shape
    # class end (exclusive) of each sorted sample: genuine partners of i are i+1 .. end[i]-1
    change = np.flatnonzero(np.diff(ys) != 0) + 1 if groups is None else np.flatnonzero(
        (np.diff(ys) != 0) | (np.diff(groups[order]) != 0)
    ) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n]])
    end_of = np.repeat(ends, ends - starts)
    end_t = torch.from_numpy(end_of)

    w = hi / bins
    if metric == "cosine":
        # q = (1 + s) * bins / 2 + 1 = bins + 1 - d / w, folded into the matmul
        a = torch.cat([xs * (bins / 2.0), torch.full((n, 1), bins / 2.0 + 1.0)], dim=1)
        b = torch.cat([xs, torch.ones(n, 1)], dim=1)
    else:
        xc = xs.double() - xs.double().mean(dim=0)
        sq = (xc * xc).sum(dim=1, keepdim=True)
        a = torch.cat([-2.0 * xc, sq, torch.ones(n, 1, dtype=torch.float64)], dim=1).float()
        b = torch.cat([xc, torch.ones(n, 1, dtype=torch.float64), sq], dim=1).float()
    a = a.contiguous()
    b = b.contiguous()

    kind_stride = bins + 2
    pair_stride = 2 * kind_stride
    n_pairs = n_groups * (n_groups + 1) // 2
    trash = n_pairs * pair_stride
    if trash >= 2**31 - 1:
        raise ValueError(f"too many groups x bins ({n_pairs} x {bins}) for one histogram")
    if groups is not None:
        gs = groups[order]
        gstart = np.searchsorted(gs, np.arange(n_groups), side="left")
        gend = np.searchsorted(gs, np.arange(n_groups), side="right")

    def pair_id(g: int, h: int) -> int:
        return g * n_groups - g * (g - 1) // 2 + (h - g)

    rows = _block_rows(n, block_bytes)
    fbuf = torch.empty(rows * n, dtype=torch.float32)
    ibuf = torch.empty(rows * n, dtype=torch.int32)
    total = torch.zeros(trash + 1, dtype=torch.int64)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        nr, nc = r1 - r0, n - r0
        yq = fbuf[: nr * nc].view(nr, nc)
        torch.mm(a[r0:r1], b[r0:].T, out=yq)
        if metric == "euclidean":
            yq.clamp_(min=0.0).sqrt_().mul_(-1.0 / w).add_(bins + 1.0).clamp_(0.0, bins + 1.0)
        idx = ibuf[: nr * nc].view(nr, nc)
        idx.copy_(yq)  # truncation: q-bin k = floor(q), d-bin = bins - k
        if groups is not None:
            for g in np.unique(gs[r0:r1]):
                ra, rb = max(r0, gstart[g]) - r0, min(r1, gend[g]) - r0
                for h in range(g, n_groups):
                    ca, cb = max(r0, gstart[h]) - r0, gend[h] - r0
                    if cb > ca:
                        idx[ra:rb, ca:cb] += pair_id(int(g), h) * pair_stride
        for s in range(r0, r1, _TILE):  # diagonal tiles: the only places with genuine or j <= i entries
            e = min(r1, s + _TILE)
            cn = int(max(e, end_of[e - 1]))
            if s > r0:
                idx[s - r0 : e - r0, : s - r0].fill_(trash)  # strictly below the diagonal
            tile = idx[s - r0 : e - r0, s - r0 : cn - r0]
            ii = torch.arange(s, e).unsqueeze(1)
            jj = torch.arange(s, cn).unsqueeze(0)
            genuine = (jj > ii) & (jj < end_t[s:e].unsqueeze(1))
            tile += genuine.to(torch.int32) * kind_stride
            tile.masked_fill_(jj <= ii, trash)
        total += _bincount(idx.view(-1), trash + 1)
    counts = total[:trash].numpy().reshape(n_pairs, 2, kind_stride)[:, :, ::-1]
    # reversed: position m holds d-bin m - 1; fold d-bin -1 (d <= 0) into 0 and d-bin `bins` (rounding) into bins-1
    d = np.ascontiguousarray(counts[:, :, 1 : bins + 1]).astype(np.int64)
    d[:, :, 0] += counts[:, :, 0]
    d[:, :, -1] += counts[:, :, bins + 1]
    return d[:, 1, :], d[:, 0, :]


def pair_histograms(
    embeddings,
    labels,
    *,
    metric: str = "cosine",
    bins: int = DEFAULT_BINS,
    max_distance: float | None = None,
    block_bytes: int = _BLOCK_BYTES,
) -> PairHistograms:
    """Exact genuine / impostor histograms of ALL pair distances (i < j), chunked so memory stays bounded.

    Cosine bins cover [0, 2]; euclidean bins cover [0, max_distance] (default: an upper bound on the largest pair
    distance, twice the largest distance to the centroid; larger distances count in the last bin).
    """
    x, y = _check_inputs(embeddings, labels, metric)
    bins = int(bins)
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    hi = _distance_range(x, metric, max_distance)
    gen, imp = _grouped_counts(x, y, metric, bins, hi, block_bytes=block_bytes)
    edges = np.linspace(0.0, hi, bins + 1)
    return PairHistograms(metric, edges, gen[0], imp[0], n_samples=len(x), n_classes=int(y.max()) + 1)


@dataclass
class TarAtFar:
    """TAR at the largest threshold whose FAR does not exceed ``far``; NaN when ``sufficient`` is False."""

    far: float
    tar: float
    threshold: float
    achieved_far: float
    sufficient: bool


@dataclass
class Roc:
    """ROC on the bin edges: ``far[k]``, ``tar[k]`` at ``thresholds[k]`` (accept if d <= t); k = 0 rejects all."""

    thresholds: np.ndarray
    far: np.ndarray
    tar: np.ndarray
    auc: float
    auc_error_bound: float  # |auc - exact AUC of the unbinned distances| <= this (same-bin pairs counted half)
    eer: float
    eer_threshold: float
    n_genuine: int
    n_impostor: int
    tar_at_far: dict[float, TarAtFar] = field(default_factory=dict)

    @property
    def frr(self) -> np.ndarray:
        return 1.0 - self.tar


def _curves(gen: np.ndarray, imp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative TAR, FAR (last axis = bins, a leading 0 point prepended); works on (..., bins) float arrays."""
    cg = np.cumsum(gen, axis=-1, dtype=np.float64)
    ci = np.cumsum(imp, axis=-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tar = cg / cg[..., -1:]
        far = ci / ci[..., -1:]
    pad = [(0, 0)] * (tar.ndim - 1) + [(1, 0)]
    return np.pad(tar, pad), np.pad(far, pad)


def _auc(tar: np.ndarray, far: np.ndarray) -> np.ndarray:
    return np.sum(np.diff(far, axis=-1) * (tar[..., 1:] + tar[..., :-1]) * 0.5, axis=-1)


def _eer(far: np.ndarray, tar: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """Where FAR = FRR, linearly interpolated between the two bracketing edges."""
    diff = far - (1.0 - tar)
    k = int(np.argmax(diff >= 0))
    if diff[k] < 0:
        return float("nan"), float("nan")
    if k == 0:
        return float(far[0]), float(thresholds[0])
    d0, d1 = diff[k - 1], diff[k]
    alpha = -d0 / (d1 - d0)
    eer = far[k - 1] + alpha * (far[k] - far[k - 1])
    return float(eer), float(thresholds[k - 1] + alpha * (thresholds[k] - thresholds[k - 1]))


def _tar_at_far(far_curve, tar_curve, thresholds, n_impostor: int, far: float, min_fa: int) -> TarAtFar:
    k = int(np.searchsorted(far_curve, far, side="right")) - 1  # last edge with FAR <= far (FAR is non-decreasing)
    sufficient = n_impostor * far >= min_fa
    return TarAtFar(
        far=far,
        tar=float(tar_curve[k]) if sufficient else float("nan"),
        threshold=float(thresholds[k]),
        achieved_far=float(far_curve[k]),
        sufficient=bool(sufficient),
    )


def roc_from_histograms(
    h: PairHistograms, *, far_levels: Sequence[float] = FAR_LEVELS, min_false_accepts: int = MIN_FALSE_ACCEPTS
) -> Roc:
    """ROC, AUC (trapezoid, with its bin-width error bound), EER and TAR@FAR from pair histograms."""
    ng, ni = h.n_genuine, h.n_impostor
    thresholds = h.edges.copy()
    if ng == 0 or ni == 0:
        nan = float("nan")
        empty = np.full(len(thresholds), np.nan)
        levels = {f: TarAtFar(f, nan, nan, nan, False) for f in far_levels}
        return Roc(thresholds, empty, empty.copy(), nan, nan, nan, nan, ng, ni, levels)
    tar, far = _curves(h.genuine, h.impostor)
    auc = float(_auc(tar, far))
    bound = float(0.5 * np.dot(h.genuine / ng, h.impostor / ni))
    eer, eer_t = _eer(far, tar, thresholds)
    levels = {float(f): _tar_at_far(far, tar, thresholds, ni, float(f), min_false_accepts) for f in far_levels}
    return Roc(thresholds, far, tar, auc, bound, eer, eer_t, ng, ni, levels)


def operating_point(h: PairHistograms, threshold: float) -> dict[str, float]:
    """Counts and rates when accepting pairs with d <= threshold (rounded down to the nearest bin edge)."""
    k = int(np.searchsorted(h.edges, threshold, side="right")) - 1
    k = max(0, min(k, h.bins))
    ga = int(h.genuine[:k].sum())
    ia = int(h.impostor[:k].sum())
    ng, ni = h.n_genuine, h.n_impostor
    tar = ga / ng if ng else float("nan")
    far = ia / ni if ni else float("nan")
    total = ng + ni
    return {
        "threshold": float(h.edges[k]),
        "far": far,
        "tar": tar,
        "frr": 1.0 - tar,
        "accuracy": (ga + ni - ia) / total if total else float("nan"),
        "balanced_accuracy": 0.5 * (tar + 1.0 - far),
        "genuine_accepted": ga,
        "genuine_rejected": ng - ga,
        "impostor_accepted": ia,
        "impostor_rejected": ni - ia,
    }


def threshold_at_far(h: PairHistograms, far: float) -> float:
    """The largest bin edge whose FAR is <= ``far`` (so the achieved FAR never exceeds the request)."""
    if h.n_impostor == 0:
        return float("nan")
    _, far_curve = _curves(h.genuine, h.impostor)
    k = int(np.searchsorted(far_curve, far, side="right")) - 1
    return float(h.edges[k])




def verification_metrics(
    embeddings, labels, *, metric: str = "cosine", bins: int = DEFAULT_BINS
) -> dict[str, float]:
    """AUC, EER, TAR@FAR=1e-2 and 1e-3 over all pairs (NaN where there are too few pairs); cheap per epoch."""
    roc = roc_from_histograms(pair_histograms(embeddings, labels, metric=metric, bins=bins), far_levels=(1e-2, 1e-3))
    return {
        "auc": roc.auc,
        "eer": roc.eer,
        "tar_at_far_1e-2": roc.tar_at_far[1e-2].tar,
        "tar_at_far_1e-3": roc.tar_at_far[1e-3].tar,
    }


def _group_pair_histograms(x, y, metric, bins, hi, group_of_class: np.ndarray, n_groups: int):
    groups = group_of_class[y]
    return _grouped_counts(x, y, metric, bins, hi, groups=groups, n_groups=n_groups)


def _plateau_middle(score: np.ndarray) -> int:
    """Index in the middle of the first run of maximal scores (generalises better than the run's first edge)."""
    ks = np.flatnonzero(score == score.max())
    gaps = np.flatnonzero(np.diff(ks) > 1)
    run = ks[: gaps[0] + 1] if len(gaps) else ks
    return int(run[len(run) // 2])


def best_accuracy_threshold_cv(
    embeddings,
    labels,
    *,
    metric: str = "cosine",
    folds: int = 10,
    seed: int = 0,
    balanced: bool = True,
    bins: int = DEFAULT_BINS,
) -> dict[str, object]:
    """LFW-style threshold: classes are split into ``folds``; the best-accuracy threshold on the pairs within the
    other folds is scored on the pairs within the held-out fold. Pairs across folds are used by neither. When
    several thresholds tie for the best training accuracy, the middle of that run of edges is taken.

    ``balanced=True`` scores (TAR + TRR) / 2, i.e. accuracy on equal numbers of genuine and impostor pairs as in
    LFW; ``False`` uses plain accuracy over all pairs (dominated by impostors). ``folds`` is lowered to
    n_classes // 2 when needed so every held-out fold has impostor pairs.
    """
    x, y = _check_inputs(embeddings, labels, metric)
    n_classes = int(y.max()) + 1
    folds = min(int(folds), n_classes // 2)  # each held-out fold needs >= 2 classes to have impostor pairs
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 4 classes (2 folds of 2), got {n_classes}")
    rng = np.random.default_rng(seed)
    group_of_class = np.empty(n_classes, dtype=np.int64)
    for f, part in enumerate(np.array_split(rng.permutation(n_classes), folds)):
        group_of_class[part] = f
    hi = _distance_range(x, metric, None)
    gen, imp = _group_pair_histograms(x, y, metric, int(bins), hi, group_of_class, folds)
    edges = np.linspace(0.0, hi, int(bins) + 1)
    diag = np.array([g * folds - g * (g - 1) // 2 for g in range(folds)])
    gi, hj = np.triu_indices(folds)
    accs, thrs = [], []
    for f in range(folds):
        train = (gi != f) & (hj != f)
        tg, ti = gen[train].sum(axis=0), imp[train].sum(axis=0)
        tar, far = _curves(tg, ti)
        if balanced:
            score = 0.5 * (tar + 1.0 - far)
        else:
            score = (np.pad(np.cumsum(tg), (1, 0)) + ti.sum() - np.pad(np.cumsum(ti), (1, 0))) / (tg.sum() + ti.sum())
        score = np.nan_to_num(score, nan=-1.0)
        k = _plateau_middle(score)
        hf = PairHistograms(metric, edges, gen[diag[f]], imp[diag[f]])
        op = operating_point(hf, edges[k])
        accs.append(op["balanced_accuracy"] if balanced else op["accuracy"])
        thrs.append(float(edges[k]))
    accs_a, thrs_a = np.array(accs, dtype=np.float64), np.array(thrs)
    return {
        "accuracy_mean": float(np.nanmean(accs_a)) if np.isfinite(accs_a).any() else float("nan"),
        "accuracy_std": float(np.nanstd(accs_a)) if np.isfinite(accs_a).any() else float("nan"),
        "threshold_mean": float(thrs_a.mean()),
        "threshold_std": float(thrs_a.std()),
        "fold_accuracies": accs_a,
        "fold_thresholds": thrs_a,
        "balanced": balanced,
    }


@dataclass
class BootstrapCI:
    """Point estimate (all data, at the bootstrap's bin resolution) and percentile interval."""

    estimate: float
    low: float
    high: float
    std: float


def bootstrap_ci(
    embeddings,
    labels,
    *,
    metric: str = "cosine",
    n_boot: int = 500,
    seed: int = 0,
    confidence: float = 0.95,
    far_levels: Sequence[float] = (1e-2, 1e-3),
    max_groups: int = 32,
    bins: int = 4096,
    min_false_accepts: int = MIN_FALSE_ACCEPTS,
) -> dict[str, BootstrapCI]:
    """Percentile bootstrap CIs for AUC, EER and TAR@FAR, resampling CLASSES with replacement.

    Pairs are not independent, classes are. To stay fast, classes are dealt at random into ``max_groups`` groups
    (each group = one class when there are at most ``max_groups`` classes) and whole groups are resampled: one
    exact pass over all pairs builds per-group-pair histograms, after which each replicate is a weighted sum
    (genuine: m_g per draw count; impostor: m_g * m_h across groups, m_g within). Pairs between two copies of the
    same group are left out. Histograms use ``bins`` bins (coarser than the default; AUC error bound applies).
    """
    x, y = _check_inputs(embeddings, labels, metric)
    n_classes = int(y.max()) + 1
    n_groups = min(int(max_groups), n_classes)
    if n_groups < 2:
        raise ValueError(f"bootstrap needs at least 2 classes, got {n_classes}")
    rng = np.random.default_rng(seed)
    group_of_class = np.empty(n_classes, dtype=np.int64)
    for g, part in enumerate(np.array_split(rng.permutation(n_classes), n_groups)):
        group_of_class[part] = g
    hi = _distance_range(x, metric, None)
    gen, imp = _group_pair_histograms(x, y, metric, int(bins), hi, group_of_class, n_groups)
    thresholds = np.linspace(0.0, hi, int(bins) + 1)
    gi, hj = np.triu_indices(n_groups)
    diag = gi == hj
    m = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=int(n_boot)).astype(np.float64)
    w_imp = np.where(diag[None, :], m[:, gi], m[:, gi] * m[:, hj])
    w_gen = np.where(diag[None, :], m[:, gi], 0.0)
    boot_gen = w_gen @ gen.astype(np.float64)
    boot_imp = w_imp @ imp.astype(np.float64)
    full_gen = gen.sum(axis=0).astype(np.float64)
    full_imp = imp.sum(axis=0).astype(np.float64)

    def stats(g: np.ndarray, i: np.ndarray) -> dict[str, float]:
        out = {"auc": float("nan"), "eer": float("nan")}
        for f in far_levels:
            out[f"tar_at_far_{f:g}"] = float("nan")
        if g.sum() == 0 or i.sum() == 0:
            return out
        tar, far = _curves(g, i)
        out["auc"] = float(_auc(tar, far))
        out["eer"] = _eer(far, tar, thresholds)[0]
        n_imp = int(round(i.sum()))
        for f in far_levels:
            out[f"tar_at_far_{f:g}"] = _tar_at_far(far, tar, thresholds, n_imp, f, min_false_accepts).tar
        return out

    point = stats(full_gen, full_imp)
    reps = [stats(boot_gen[r], boot_imp[r]) for r in range(int(n_boot))]
    alpha = (1.0 - confidence) / 2.0
    result = {}
    for key, est in point.items():
        vals = np.array([r[key] for r in reps], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        if len(vals) == 0 or not math.isfinite(est):
            result[key] = BootstrapCI(est, float("nan"), float("nan"), float("nan"))
        else:
            lo, hi_q = np.quantile(vals, [alpha, 1.0 - alpha])
            result[key] = BootstrapCI(est, float(lo), float(hi_q), float(vals.std()))
    return result
