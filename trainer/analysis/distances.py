"""Distances: the metrics a run can use, input checks and the one normalisation policy.
"""

from __future__ import annotations

import numpy as np

METRICS = ("cosine", "euclidean")


def _check_inputs(embeddings, labels, metric: str, *, source: str = "embeddings") -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (float32 C-contiguous (N, D) array, int64 dense labels 0..C-1)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"{source}: expected a 2-D (N, D) array, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{source}: no samples (N = 0); nothing to evaluate")
    if x.shape[1] == 0:
        raise ValueError(f"{source}: embeddings have dimension 0")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{source}: labels must be 1-D with one entry per row ({len(x)}), got shape {y.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{source}: {int(bad.sum())} rows contain NaN or inf (first: row {int(np.argmax(bad))})")
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1)
        zero = norms == 0
        if zero.any():
            raise ValueError(
                f"{source}: {int(zero.sum())} rows are all zeros (first: row {int(np.argmax(zero))}); "
                "cosine distance is undefined for them"
            )
        x = np.ascontiguousarray(x / norms[:, None].astype(np.float32))
    _, dense = np.unique(y, return_inverse=True)
    return x, dense.astype(np.int64).reshape(-1)


def to_similarity(d, metric: str = "cosine"):
    """Distance -> similarity for display: cosine gives cos = 1 - d; euclidean gives -d (larger = more alike)."""
    return 1.0 - np.asarray(d) if metric == "cosine" else -np.asarray(d)


def from_similarity(s, metric: str = "cosine"):
    """Similarity -> distance, the inverse of :func:`to_similarity`."""
    return 1.0 - np.asarray(s) if metric == "cosine" else -np.asarray(s)
