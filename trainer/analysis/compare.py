"""Comparing runs with honest intervals, on arrays: per-query MAP@R and a bootstrap over held-out classes.

For one epoch of one run, every held-out image is a query against the other held-out images; its AP@R (the
average precision over its R nearest neighbours, R = the number of other images of its class) averages to the
MAP@R that pytorch-metric-learning's AccuracyCalculator reports. The 95 % interval resamples the held-out
*classes* with replacement and averages the AP@R of their queries (the gallery stays the run's own): it answers
"how much would this figure move with other classes of the same kind". For two runs on the same samples, the
same resampled classes are used for both (a paired bootstrap), which gives the interval of their difference.
"""

from __future__ import annotations

import numpy as np


def per_query_map_at_r(embeddings: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
    """AP@R of every query (self excluded); NaN for a query whose class has no other image."""
    from trainer.analysis.index import NeighbourIndex

    x = np.ascontiguousarray(np.asarray(embeddings, np.float32))
    y = np.asarray(labels)
    counts = {c: int(n) for c, n in zip(*np.unique(y, return_counts=True))}
    r = np.array([counts[c] - 1 for c in y], np.int64)
    out = np.full(len(y), np.nan)
    k = int(r.max()) if len(r) else 0
    if k <= 0:
        return out
    _, ids = NeighbourIndex(x, metric=metric).exact_search(x, k, exclude_self_ids=np.arange(len(x)))
    hits = (y[ids] == y[:, None]) & (ids >= 0)
    ranks = np.arange(1, k + 1)
    within = ranks[None, :] <= r[:, None]
    rel = hits & within
    precision = np.cumsum(rel, axis=1) / ranks[None, :]
    ap = (precision * rel).sum(axis=1) / np.maximum(r, 1)
    out[r > 0] = ap[r > 0]
    return out


def class_bootstrap(values: np.ndarray, labels: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                    others: list[np.ndarray] | None = None) -> np.ndarray:
    """Bootstrap means of ``values`` (one per query) resampling classes; with ``others`` (per-query values of
    other runs on the same queries), the same draws for each: returns (n_boot, 1 + len(others))."""
    series = [np.asarray(values, np.float64)] + [np.asarray(o, np.float64) for o in (others or [])]
    y = np.asarray(labels)
    classes, inv = np.unique(y, return_inverse=True)
    sums = np.stack([np.bincount(inv, weights=np.nan_to_num(s), minlength=len(classes)) for s in series])
    ok = np.isfinite(series[0])
    counts = np.bincount(inv, weights=ok.astype(np.float64), minlength=len(classes))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(classes), size=(n_boot, len(classes)))
    weight = np.zeros((n_boot, len(classes)))
    np.add.at(weight, (np.repeat(np.arange(n_boot), len(classes)), draws.ravel()), 1.0)
    total = weight @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weight @ sums.T) / total[:, None]


def interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    a = (1 - confidence) / 2
    s = np.asarray(samples, np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return float("nan"), float("nan")
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))
