"""Small pure helpers for the verification threshold studio that trainer.analysis.verification does not provide.

* :func:`threshold_grid` picks histogram bins whose edges are round numbers (multiples of 1e-4 by default), so a
  threshold typed with four decimals IS a bin edge and the rates read from the histograms are exact for it.
* :func:`snap_threshold` rounds any threshold to the nearest edge; :func:`coarsen` sums fine bins for display.
* :func:`rates_ci_at_threshold` gives class-bootstrap intervals of FAR / FRR at one threshold (evaluate's
  :func:`~trainer.analysis.verification.bootstrap_ci` covers AUC, EER and TAR@FAR, not a fixed threshold).
* :func:`write_json_atomic` writes a side file into a run (tmp + fsync + os.replace) when only a read-only
  RunReader is at hand.

Direction convention as in trainer.analysis.verification: distances, smaller = more alike, accept a pair when d <= t.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from trainer.analysis.distances import METRICS, tensor_view, unit_rows
from trainer.analysis.verification import PairHistograms

# rows x N of pair distances at a time, sized so one block with its masks and bin keys stays ~100 MB (64 MB blocks
# raised the window's memory by 0.3-0.45 GB during each per-class pass of a 20,000-image sample)
BLOCK_BYTES = 32 * 2**20


def threshold_grid(embeddings: np.ndarray, metric: str, *, step: float = 1e-4,
                   max_bins: int = 2**18) -> tuple[int, float, float]:
    """(bins, max_distance, step) for pair_histograms so that edge k is k * step: typed thresholds are edges.

    Cosine distances lie in [0, 2]; Euclidean ones are bounded by twice the largest distance to the centroid. The
    step grows by powers of ten when the range would need more than ``max_bins`` bins.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if not step > 0:
        raise ValueError(f"step must be positive, got {step}")
    if metric == "cosine":
        hi = 2.0
    else:
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"embeddings: expected a non-empty (N, D) array, got shape {x.shape}")
        radius = float(np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1)).max())
        hi = max(2.0 * radius * (1 + 1e-6), step)
    while math.ceil(hi / step - 1e-9) > max_bins:
        step *= 10.0
    bins = max(2, int(math.ceil(hi / step - 1e-9)))
    return bins, bins * step, step


def snap_threshold(h: PairHistograms, threshold: float) -> float:
    """The bin edge nearest to ``threshold`` (clipped to the histogram range; a tie goes to the smaller, stricter
    edge): the threshold the rates are exact for."""
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    k = int(np.clip(math.ceil((threshold - h.edges[0]) / h.bin_width - 0.5), 0, h.bins))
    return float(h.edges[k])


def coarsen(h: PairHistograms, max_bins: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, genuine, impostor) with groups of fine bins summed so at most ``max_bins`` remain (for plotting).

    The range is cut to the occupied bins (plus one empty group either side) so the plot is not mostly empty.
    """
    total = h.genuine + h.impostor
    nz = np.flatnonzero(total)
    if len(nz) == 0:
        lo_bin, hi_bin = 0, h.bins
    else:
        lo_bin, hi_bin = int(nz[0]), int(nz[-1]) + 1
    span = hi_bin - lo_bin
    factor = max(1, int(math.ceil(span / max(1, max_bins - 2))))
    lo_bin = max(0, (lo_bin // factor - 1) * factor)
    n_groups = int(math.ceil((min(h.bins, hi_bin + factor) - lo_bin) / factor))
    stop = min(h.bins, lo_bin + n_groups * factor)
    pad = lo_bin + n_groups * factor - stop

    def group(a: np.ndarray) -> np.ndarray:
        part = np.concatenate([a[lo_bin:stop], np.zeros(pad, dtype=a.dtype)])
        return part.reshape(n_groups, factor).sum(axis=1)

    idx = lo_bin + factor * np.arange(n_groups + 1)
    edges = h.edges[0] + idx * h.bin_width
    return edges, group(h.genuine), group(h.impostor)


def _group_accept_counts(x: torch.Tensor, g: np.ndarray, y: np.ndarray, metric: str, threshold: float,
                         n_groups: int, block_rows: int) -> tuple[np.ndarray, ...]:
    """Per (group, group) pair counts over i < j: impostor pairs, accepted impostors; per group: genuine pairs,
    accepted genuine. Groups are constant within a class."""
    n = len(x)
    gg = torch.from_numpy(g)
    yy = torch.from_numpy(y)
    cells = n_groups * n_groups
    imp_all = torch.zeros(cells + 1, dtype=torch.int64)
    imp_acc = torch.zeros(cells + 1, dtype=torch.int64)
    gen_all = torch.zeros(n_groups, dtype=torch.int64)
    gen_acc = torch.zeros(n_groups, dtype=torch.int64)
    sq = (x * x).sum(dim=1)
    for r0 in range(0, n, block_rows):
        r1 = min(n, r0 + block_rows)
        s = x[r0:r1] @ x.T
        d = 1.0 - s if metric == "cosine" else (sq[r0:r1, None] + sq[None, :] - 2.0 * s).clamp_(min=0.0).sqrt_()
        upper = torch.arange(n).unsqueeze(0) > torch.arange(r0, r1).unsqueeze(1)
        same = yy[r0:r1, None] == yy[None, :]
        acc = d <= threshold
        cell = gg[r0:r1, None] * n_groups + gg[None, :]
        imp = upper & ~same
        imp_all += torch.bincount(torch.where(imp, cell, cells).view(-1), minlength=cells + 1)
        imp_acc += torch.bincount(torch.where(imp & acc, cell, cells).view(-1), minlength=cells + 1)
        gen = upper & same
        gen_all += torch.bincount(gg[r0:r1], weights=gen.sum(dim=1).double(), minlength=n_groups).long()
        gen_acc += torch.bincount(gg[r0:r1], weights=(gen & acc).sum(dim=1).double(), minlength=n_groups).long()
    ia = imp_all[:cells].view(n_groups, n_groups).numpy()
    ic = imp_acc[:cells].view(n_groups, n_groups).numpy()
    # fold (g, h) and (h, g) into one symmetric count per unordered group pair
    ia = np.triu(ia + ia.T) - np.diag(np.diag(ia))
    ic = np.triu(ic + ic.T) - np.diag(np.diag(ic))
    return ia, ic, gen_all.numpy(), gen_acc.numpy()


def rates_ci_at_threshold(embeddings, labels, threshold: float, *, metric: str = "cosine", n_boot: int = 500,
                          seed: int = 0, confidence: float = 0.95, max_groups: int = 64,
                          block_bytes: int = BLOCK_BYTES) -> dict[str, dict[str, float]]:
    """FAR and FRR at ``threshold`` (accept d <= t) with percentile class-bootstrap intervals.

    Classes (not pairs) are resampled, as in :func:`trainer.analysis.verification.bootstrap_ci`: classes are dealt into at most
    ``max_groups`` groups, whole groups are drawn with replacement, pairs between two copies of a group are left
    out. Returns ``{"far": {...}, "frr": {...}}`` each with estimate, low, high, std (NaN where undefined).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"embeddings: expected a non-empty (N, D) array, got shape {x.shape}")
    lab = np.asarray(labels)
    if lab.shape != (len(x),):
        raise ValueError(f"labels must be 1-D with one entry per row ({len(x)}), got shape {lab.shape}")
    if metric == "cosine":
        x = unit_rows(x)
    else:
        x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    _, y = np.unique(lab, return_inverse=True)
    y = y.reshape(-1).astype(np.int64)
    n_classes = int(y.max()) + 1
    n_groups = min(int(max_groups), n_classes)
    rng = np.random.default_rng(seed)
    group_of_class = np.empty(n_classes, dtype=np.int64)
    for k, part in enumerate(np.array_split(rng.permutation(n_classes), n_groups)):
        group_of_class[part] = k
    rows = int(max(1, min(len(x), block_bytes // (4 * len(x) * 4))))
    ia, ic, ga, gc = _group_accept_counts(tensor_view(np.ascontiguousarray(x)), group_of_class[y], y, metric,
                                          float(threshold), n_groups, rows)
    m = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=int(n_boot)).astype(np.float64)
    # within a group: weight m_g (copies are not paired with each other); across groups g < h: m_g * m_h
    w = m[:, :, None] * m[:, None, :]
    idx = np.arange(n_groups)
    w[:, idx, idx] = m
    boot_ia = np.einsum("bgh,gh->b", w, ia.astype(np.float64))
    boot_ic = np.einsum("bgh,gh->b", w, ic.astype(np.float64))
    boot_ga = m @ ga.astype(np.float64)
    boot_gc = m @ gc.astype(np.float64)
    alpha = (1.0 - confidence) / 2.0

    def summary(num_full: float, den_full: float, num: np.ndarray, den: np.ndarray) -> dict[str, float]:
        est = num_full / den_full if den_full else float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            vals = num / den
        vals = vals[np.isfinite(vals)]
        if len(vals) == 0 or not math.isfinite(est):
            return {"estimate": est, "low": float("nan"), "high": float("nan"), "std": float("nan")}
        lo, hi = np.quantile(vals, [alpha, 1.0 - alpha])
        return {"estimate": float(est), "low": float(lo), "high": float(hi), "std": float(vals.std())}

    far = summary(float(ic.sum()), float(ia.sum()), boot_ic, boot_ia)
    frr = summary(float(ga.sum() - gc.sum()), float(ga.sum()), boot_ga - boot_gc, boot_ga)
    return {"far": far, "frr": frr}


def per_class_rates(embeddings, labels, threshold: float, *, metric: str = "cosine",
                    block_bytes: int = BLOCK_BYTES) -> dict:
    """FAR and FRR of each class at one threshold (accept d <= t), all pairs i < j counted exactly.

    A class's FRR is the share of its genuine pairs rejected; its FAR the share of the impostor pairs with one image
    in it that are accepted. One threshold can be strict for some classes and lax for others (the threshold
    inconsistency of Zhang et al., ICLR 2024, whose OPIS measure integrates this spread over a range of thresholds);
    this is its value at the chosen threshold. Returns ``classes`` (label values), ``far``, ``frr``, ``n_genuine``,
    ``n_impostor`` (one entry per class; NaN where a class has no pair of that kind)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    lab = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(lab):
        raise ValueError(f"embeddings {x.shape} and {len(lab)} labels do not match")
    classes, y = np.unique(lab, return_inverse=True)
    y = y.astype(np.int64)
    t = tensor_view(x)
    if metric == "cosine":
        t = torch.nn.functional.normalize(t, dim=1)
    rows = max(1, int(block_bytes // max(1, 4 * len(x) * 4)))
    ia, ic, gen_all, gen_acc = _group_accept_counts(t, y, y, metric, float(threshold), len(classes), rows)
    imp = ia.sum(axis=0) + ia.sum(axis=1)  # upper-triangular per class pair: both sides of each impostor pair
    imp_acc = ic.sum(axis=0) + ic.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        far = np.where(imp > 0, imp_acc / np.maximum(imp, 1), np.nan)
        frr = np.where(gen_all > 0, 1.0 - gen_acc / np.maximum(gen_all, 1), np.nan)
    return {"classes": classes, "far": far, "frr": frr, "n_genuine": gen_all, "n_impostor": imp}


def spread_summary(rates: dict, class_names=None, worst: int = 5) -> dict:
    """Mean, standard deviation, min and max of the per-class FAR and FRR, and the classes with the highest."""
    out: dict = {}
    names = [str(c) if class_names is None else str(class_names[int(c)]) for c in rates["classes"]]
    for key in ("far", "frr"):
        v = np.asarray(rates[key], np.float64)
        ok = np.isfinite(v)
        if not ok.any():
            out[key] = None
            continue
        order = np.argsort(-np.where(ok, v, -np.inf), kind="stable")[:worst]
        out[key] = {"mean": float(v[ok].mean()), "std": float(v[ok].std()), "min": float(v[ok].min()),
                    "max": float(v[ok].max()), "n_classes": int(ok.sum()),
                    "worst": [[names[int(i)], float(v[int(i)])] for i in order if ok[int(i)]]}
    return out


def per_class_histograms(embeddings, labels, edges, *, metric: str = "cosine",
                         block_bytes: int = BLOCK_BYTES) -> dict:
    """Per class, the distances of its genuine and its impostor pairs binned at ``edges`` (ascending).

    Bin k (0 <= k <= len(edges)) holds the pairs with ``edges[k-1] < d <= edges[k]``, so the pairs accepted at
    threshold ``edges[k]`` (d <= t) are the cumulative sum up to k; bin len(edges) holds those above the last edge.
    A class's impostor pairs are those with one image in it (each counted once for each of its two classes, as in
    :func:`per_class_rates`); its genuine pairs are counted once each. Returns ``classes``, ``genuine`` and
    ``impostor`` (int64, shape (classes, len(edges) + 1))."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    lab = np.asarray(labels)
    e = np.asarray(edges, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(lab):
        raise ValueError(f"embeddings {x.shape} and {len(lab)} labels do not match")
    if e.ndim != 1 or len(e) == 0 or np.any(np.diff(e) <= 0):
        raise ValueError("edges must be a non-empty ascending 1-d array")
    classes, y = np.unique(lab, return_inverse=True)
    n, c, nb = len(x), len(classes), len(e) + 1
    t = tensor_view(x)
    if metric == "cosine":
        t = torch.nn.functional.normalize(t, dim=1)
    te = torch.from_numpy(e.astype(np.float32))
    yy = torch.from_numpy(y.astype(np.int64))
    sq = (t * t).sum(dim=1)
    gen = torch.zeros(c * nb, dtype=torch.int64)
    imp = torch.zeros(c * nb, dtype=torch.int64)
    rows = max(1, int(block_bytes // max(1, 4 * n * 4)))
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        s = t[r0:r1] @ t.T
        d = 1.0 - s if metric == "cosine" else (sq[r0:r1, None] + sq[None, :] - 2.0 * s).clamp_(min=0.0).sqrt_()
        b = torch.bucketize(d, te)
        upper = torch.arange(n).unsqueeze(0) > torch.arange(r0, r1).unsqueeze(1)
        same = yy[r0:r1, None] == yy[None, :]
        key_i = yy[r0:r1, None] * nb + b
        key_j = yy[None, :] * nb + b
        gen += torch.bincount(key_i[upper & same], minlength=c * nb)
        cross = upper & ~same
        imp += torch.bincount(key_i[cross], minlength=c * nb) + torch.bincount(key_j[cross], minlength=c * nb)
    return {"classes": classes, "genuine": gen.view(c, nb).numpy(), "impostor": imp.view(c, nb).numpy()}


def _utility(tar: np.ndarray, tnr: np.ndarray) -> np.ndarray:
    """The harmonic mean of the true accept and true reject rates (0 where both are 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tar + tnr > 0, 2.0 * tar * tnr / np.maximum(tar + tnr, 1e-300), 0.0)


def opis(embeddings, labels, *, metric: str = "cosine", far_range: tuple[float, float] = (1e-4, 1e-2),
         bins: int = 4000, block_bytes: int = BLOCK_BYTES) -> dict:
    """The operating-point-inconsistency score of Zhang et al. (ICLR 2024): how far each class's utility departs
    from the whole set's, averaged over the classes and over a range of thresholds.

    OPIS = mean over classes i and thresholds d in [d_lo, d_hi] of (U(i, d) - U(d))^2, with U the harmonic mean of
    TAR and TNR (= 1 - FAR) of the class's own pairs (U(d): of all pairs) and [d_lo, d_hi] the thresholds whose
    overall FAR lies within ``far_range`` (the calibration range; where the held-out pairs cannot resolve its low
    end, the range starts at the strictest threshold that accepts an impostor pair). Thresholds are ``bins``
    equal steps over the distances' range, so the mean over them is the integral over d divided by its length.
    Classes without a genuine or an impostor pair are left out. Lower is more consistent: 0 when one threshold
    means the same for every class. Returns ``opis``, the range (``threshold_range``, ``far_range`` as covered),
    ``n_thresholds`` and ``n_classes``; ``opis`` is None, with the ``reason``, when the pairs cannot resolve the
    range (too few impostor pairs for its FAR)."""
    lo, hi = (float(v) for v in far_range)
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"far_range must be 0 <= low < high <= 1, got {far_range}")
    x = np.asarray(embeddings, dtype=np.float32)
    if metric == "cosine":
        top = 2.0
    else:
        top = float(2.0 * np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1)).max()) if len(x) else 1.0
        top = max(top, 1e-6)
    edges = np.linspace(0.0, top, int(bins) + 1)[1:]
    h = per_class_histograms(x, labels, edges, metric=metric, block_bytes=block_bytes)
    ng, ni = h["genuine"].sum(axis=1).astype(np.float64), h["impostor"].sum(axis=1).astype(np.float64)
    out = {"opis": None, "threshold_range": None, "far_range": None, "n_thresholds": 0,
           "n_classes": int(((ng > 0) & (ni > 0)).sum()), "utility": "harmonic mean of TAR and 1 - FAR",
           "reason": ""}
    if ng.sum() == 0 or ni.sum() == 0 or out["n_classes"] == 0:
        out["reason"] = "no class has both a genuine and an impostor pair"
        return out
    # each impostor pair was counted for both of its classes, each genuine pair once
    # the whole set's curves from the column sums (integer counts, so the same numbers as summing per-class
    # cumulative counts in float64); per class only the thresholds inside the range are made (classes x bins float
    # arrays were ~0.2 GB for 1,000 classes)
    far_all = (np.cumsum(h["impostor"].sum(axis=0))[:-1].astype(np.float64) / 2.0) / (ni.sum() / 2.0)
    tar_all = np.cumsum(h["genuine"].sum(axis=0))[:-1].astype(np.float64) / ng.sum()
    inside = (far_all >= lo) & (far_all <= hi)
    if not inside.any():
        inside = (far_all > 0) & (far_all <= hi)
    if not inside.any():
        n_imp = int(round(ni.sum() / 2))
        out["reason"] = (f"{n_imp:,} impostor pairs cannot resolve a FAR of {hi:g} or less (one accepted pair is "
                         f"{1 / n_imp:.2g})")
        return out
    keep = (ng > 0) & (ni > 0)
    cols = np.flatnonzero(inside)
    g = np.cumsum(h["genuine"][keep], axis=1)[:, cols].astype(np.float64)  # accepted at edges[k], k inside
    m = np.cumsum(h["impostor"][keep], axis=1)[:, cols].astype(np.float64)
    tar_c = g / ng[keep, None]
    tnr_c = 1.0 - m / ni[keep, None]
    u_c = _utility(tar_c, tnr_c)
    u = _utility(tar_all[inside], 1.0 - far_all[inside])
    k = np.flatnonzero(inside)
    out.update(opis=float(((u_c - u[None, :]) ** 2).mean()), n_thresholds=int(len(k)),
               threshold_range=[float(edges[k[0]]), float(edges[k[-1]])],
               far_range=[float(far_all[k[0]]), float(far_all[k[-1]])])
    return out
