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
