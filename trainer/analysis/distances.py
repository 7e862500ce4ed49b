"""Distances: the metrics a run can use, input checks and the one normalisation policy.

Every distance here is smaller = more alike. ``"cosine"`` is 1 - cos of rows scaled to unit length by
:func:`unit_rows`, which is exactly ``torch.nn.functional.normalize`` (the rule of the model's own head and of
pytorch-metric-learning's CosineSimilarity): a row of zeros stays zeros, so its cosine to every row is 0 and its
distance 1. ``"euclidean"`` is the plain L2 distance of the rows as they are.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

METRICS = ("cosine", "euclidean")


def check_metric(metric: str) -> str:
    """``metric`` if it is one of :data:`METRICS`; a ValueError naming the choices otherwise."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    return metric


def tensor_view(x: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy(x)``, also for read-only rows (the ones a run shares between views,
    ``RunReader.split_rows``), without torch's warning that it cannot protect them. The caller must only read the
    tensor (what normalises in place checks ``flags.writeable`` first: unit_rows, epoch_census)."""
    if x.flags.writeable:
        return _FROM_NUMPY(x)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return _FROM_NUMPY(x)


_FROM_NUMPY = torch.from_numpy  # tensor_view's own reference (a test replaces torch.from_numpy with a strict one)


def unit_rows(x: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``x`` (float32 or float64) scaled to length 1 as torch.nn.functional.normalize does (zero rows stay
    zero); into ``out`` when given (which may be ``x`` itself, then writeable)."""
    t = tensor_view(np.ascontiguousarray(x))
    if out is None:
        return torch.nn.functional.normalize(t, p=2, dim=1).numpy()
    if not out.flags.writeable:
        raise ValueError("unit_rows: out is read-only")
    torch.nn.functional.normalize(t, p=2, dim=1, out=torch.from_numpy(out))
    return out


def metric_rows(x: np.ndarray, metric: str) -> np.ndarray:
    """The rows the metric compares: unit rows for cosine, the rows themselves for euclidean."""
    return np.ascontiguousarray(unit_rows(x)) if check_metric(metric) == "cosine" else x


def _check_inputs(embeddings, labels, metric: str, *, source: str = "embeddings") -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (float32 C-contiguous (N, D) array, int64 dense labels 0..C-1)."""
    check_metric(metric)
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
    x = metric_rows(x, metric)
    _, dense = np.unique(y, return_inverse=True)
    return x, dense.astype(np.int64).reshape(-1)
