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


def first_correct_rank(neighbours: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of each query's first neighbour of its own class in ``neighbours`` (N, k; -1 = none), 0 when
    none of the k is."""
    y = np.asarray(labels)
    nb = np.asarray(neighbours, np.int64)
    hit = (nb >= 0) & (y[np.clip(nb, 0, None)] == y[:, None])
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0).astype(np.int64)


def neighbour_changes(xa: np.ndarray, xb: np.ndarray, labels: np.ndarray, metric: str, k: int = 10) -> dict:
    """What changed for each image between two embeddings of the same images (two runs, or two epochs).

    Each image is a query against the others in each embedding; per image: its k nearest neighbours in A and in B
    (``nbr_a``, ``nbr_b``, row indices), how many of B's are new (``gained``; as many of A's are gone), and the rank
    of its first neighbour of its own class in each (``rank_a``, ``rank_b``; 0 = not among the k)."""
    from trainer.analysis.index import NeighbourIndex

    xa = np.ascontiguousarray(np.asarray(xa, np.float32))
    xb = np.ascontiguousarray(np.asarray(xb, np.float32))
    if xa.shape[0] != xb.shape[0] or xa.shape[0] != len(labels):
        raise ValueError(f"the two embeddings ({len(xa)}, {len(xb)} rows) and {len(labels)} labels must match")
    n = len(xa)
    k = int(min(k, max(n - 1, 0)))
    if k <= 0:
        empty = np.zeros((n, 0), np.int64)
        return {"nbr_a": empty, "nbr_b": empty, "gained": np.zeros(n, np.int64), "rank_a": np.zeros(n, np.int64),
                "rank_b": np.zeros(n, np.int64), "k": 0}
    self_ids = np.arange(n)
    _, na = NeighbourIndex(xa, metric=metric).exact_search(xa, k, exclude_self_ids=self_ids)
    _, nb = NeighbourIndex(xb, metric=metric).exact_search(xb, k, exclude_self_ids=self_ids)
    sa = np.sort(na, axis=1)
    # gained: B's neighbours not among A's (a sorted search per row, vectorised over rows)
    row = np.repeat(np.arange(n), k)
    flat_pos = np.clip(_rowwise_searchsorted(sa, nb), 0, k - 1)
    found = sa[row, flat_pos.ravel()].reshape(n, k) == nb
    return {"nbr_a": na, "nbr_b": nb, "gained": (~found).sum(axis=1).astype(np.int64),
            "rank_a": first_correct_rank(na, labels), "rank_b": first_correct_rank(nb, labels), "k": k}


def _rowwise_searchsorted(sorted_rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """np.searchsorted of each row of ``values`` in the same row of ``sorted_rows`` (rows offset into one array)."""
    n, k = sorted_rows.shape
    span = int(max(sorted_rows.max(initial=0), values.max(initial=0))) + 2
    offset = (np.arange(n, dtype=np.int64) * span)[:, None]
    flat = (sorted_rows.astype(np.int64) + 1 + offset).ravel()  # +1: the -1 of "no neighbour" stays in its row
    return np.searchsorted(flat, (values.astype(np.int64) + 1 + offset).ravel()).reshape(n, -1) - np.arange(n)[:, None] * k
