"""Suspected mislabels, ranked: cleanlab on out-of-sample neighbour votes.

Every image's class probabilities come from its k nearest *other* images of the same split in the embedding
(their labels' shares, smoothed: the image's own label never votes for itself). cleanlab's
``get_label_quality_scores`` (method "normalized_margin") scores how well the given label fits those
probabilities; the lowest scores are the likeliest label errors. Without cleanlab installed the score is the
probability of the given label ("self-confidence", cleanlab's simplest method), and the result says so.
"""

from __future__ import annotations

import numpy as np


def neighbour_probabilities(embeddings: np.ndarray, labels: np.ndarray, metric: str, k: int = 10,
                            smoothing: float = 0.5) -> np.ndarray:
    """(N, C) class shares among each row's k nearest other rows, with ``smoothing`` added per class."""
    from trainer.analysis.index import NeighbourIndex

    x = np.ascontiguousarray(np.asarray(embeddings, np.float32))
    y = np.asarray(labels, np.int64)
    n_classes = int(y.max()) + 1 if len(y) else 0
    k = max(1, min(int(k), len(x) - 1))
    _, ids = NeighbourIndex(x, metric=metric).exact_search(x, k, exclude_self_ids=np.arange(len(x)))
    votes = np.zeros((len(x), n_classes))
    valid = ids >= 0
    rows = np.repeat(np.arange(len(x)), k).reshape(len(x), k)
    np.add.at(votes, (rows[valid], y[ids[valid]]), 1.0)
    votes += smoothing
    return votes / votes.sum(axis=1, keepdims=True)


def rank_label_issues(embeddings: np.ndarray, labels: np.ndarray, metric: str, k: int = 10) -> dict:
    """``order`` (row indices, likeliest mislabel first), ``scores`` (per row, low = suspicious), ``method``,
    ``pred_probs`` and ``suggested`` (the neighbours' majority class per row)."""
    y = np.asarray(labels, np.int64)
    classes, y_dense = np.unique(y, return_inverse=True)
    probs = neighbour_probabilities(embeddings, y_dense, metric, k)
    try:
        from cleanlab.rank import get_label_quality_scores

        scores = np.asarray(get_label_quality_scores(y_dense, probs, method="normalized_margin"), np.float64)
        method = "cleanlab normalized margin on out-of-sample neighbour votes"
    except ImportError:
        scores = probs[np.arange(len(y)), y_dense]
        method = "self-confidence on out-of-sample neighbour votes (cleanlab not installed)"
    order = np.argsort(scores, kind="stable")
    return {"order": order, "scores": scores, "method": method, "pred_probs": probs,
            "suggested": classes[np.argmax(probs, axis=1)]}


def closest_pairs(embeddings: np.ndarray, metric: str, n: int = 100, knn: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n`` closest pairs of rows (i < j) of the whole set, closest first: (i, j, distance).

    Near-duplicates are the pairs far closer than an image's usual nearest neighbour; whether their labels agree
    is for the caller to show. Exact: every row's n nearest others are searched (a pair among the n closest
    overall has at most n - 1 closer pairs through either of its rows, so each row finds it). ``knn``: (distances,
    ids) of that search done already (self excluded, at least min(n, N - 1) columns), so a caller that needs the
    neighbours anyway searches once."""
    from trainer.analysis.index import NeighbourIndex

    x = np.ascontiguousarray(np.asarray(embeddings, np.float32))
    if len(x) < 2 or n <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    k = max(1, min(int(n), len(x) - 1))
    if knn is None:
        d, ids = NeighbourIndex(x, metric=metric).exact_search(x, k, exclude_self_ids=np.arange(len(x)))
    else:
        d, ids = knn[0][:, :k], knn[1][:, :k]
    rows = np.repeat(np.arange(len(x)), k)
    j = ids.ravel()
    ok = j >= 0
    a, b, dist = np.minimum(rows, j)[ok], np.maximum(rows, j)[ok], d.ravel()[ok]
    key = a.astype(np.int64) * len(x) + b
    order = np.lexsort((key, dist))  # by distance, then by pair: one copy of each pair, deterministic
    key, dist = key[order], dist[order]
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)[:n]
    return key[first] // len(x), key[first] % len(x), dist[first].astype(np.float32)
