"""Retrieval metrics (P@1, R-Precision, MAP@R, Recall@K, NMI) and the nearest errors at a threshold.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from trainer.analysis.distances import _check_inputs, tensor_view
from trainer.analysis.verification import _BLOCK_BYTES, _block_rows


def _recall_calculator():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    class _Calculator(AccuracyCalculator):
        """PML's calculator, also reporting Recall@K from the k-NN labels it already computed."""

        k_values: tuple[int, ...] = ()
        recall: dict[str, float]

        def _get_accuracy(self, function_dict, **kwargs):
            out = super()._get_accuracy(function_dict, **kwargs)
            knn_labels = kwargs.get("knn_labels")
            self.recall = {}
            if knn_labels is not None:
                keep = kwargs["not_lone_query_mask"]
                q = kwargs["query_labels"][keep]
                hits = knn_labels[keep] == q[:, None]
                for k in self.k_values:
                    if len(q) == 0:
                        self.recall[f"recall_at_{k}"] = float("nan")
                    else:
                        self.recall[f"recall_at_{k}"] = float(hits[:, :k].any(dim=1).double().mean())
            return out

    return _Calculator


def retrieval_metrics(
    embeddings,
    labels,
    *,
    metric: str = "cosine",
    k_values: Sequence[int] = (1, 2, 4, 8),
    seed: int = 0,
) -> dict[str, float]:
    """P@1, R-Precision, MAP@R, Recall@K, NMI, AMI (query = reference, self-match excluded) via PML + faiss.

    Queries whose class has a single sample are excluded (no positive), as PML does. With fewer than two classes
    every metric is NaN (undefined). ``seed`` seeds faiss k-means for NMI/AMI (an extension of the contract).
    """
    from pytorch_metric_learning.utils.inference import FaissKMeans

    x, y = _check_inputs(embeddings, labels, metric)
    k_values = tuple(int(k) for k in k_values)
    if any(k < 1 for k in k_values):
        raise ValueError(f"k_values must be positive integers, got {k_values}")
    keys = ["precision_at_1", "r_precision", "mean_average_precision_at_r"]
    keys += [f"recall_at_{k}" for k in k_values] + ["nmi", "ami"]
    counts = np.bincount(y)
    if len(counts) < 2:
        return {k: float("nan") for k in keys}
    n = len(x)
    num_k = int(min(n - 1, max(int(counts.max()), max(k_values, default=1))))
    calc_cls = _recall_calculator()
    calc = calc_cls(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI", "AMI"),
        k=num_k,
        device=torch.device("cpu"),
        kmeans_func=FaissKMeans(niter=20, nredo=5, seed=int(seed), min_points_per_centroid=1),
    )
    calc.k_values = k_values
    # Euclidean k-NN (faiss IndexFlatL2) on L2-normalised rows ranks exactly as cosine similarity does.
    res = calc.get_accuracy(tensor_view(x), torch.from_numpy(y))
    out = {
        "precision_at_1": float(res["precision_at_1"]),
        "r_precision": float(res["r_precision"]),
        "mean_average_precision_at_r": float(res["mean_average_precision_at_r"]),
    }
    out.update(calc.recall)
    out["nmi"] = float(res["NMI"])
    out["ami"] = float(res["AMI"])
    return {k: out[k] for k in keys}


def _distance_blocks(
    x: np.ndarray, y: np.ndarray, metric: str, block_bytes: int = _BLOCK_BYTES
) -> Iterator[tuple[np.ndarray, int, int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (order, r0, r1, d, genuine_mask, upper_mask): distances of sorted rows r0..r1 to sorted columns r0..N."""
    order = np.argsort(y, kind="stable")
    xs = torch.from_numpy(np.ascontiguousarray(x[order]))
    ys = torch.from_numpy(y[order])
    n = len(xs)
    if metric == "euclidean":
        xd = xs.double()
        xs = (xd - xd.mean(dim=0)).float()
    sq = (xs * xs).sum(dim=1)
    rows = _block_rows(n, block_bytes)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        s = xs[r0:r1] @ xs[r0:].T
        if metric == "cosine":
            d = 1.0 - s
        else:
            d = (sq[r0:r1, None] + sq[None, r0:] - 2.0 * s).clamp_(min=0.0).sqrt_()
        upper = torch.arange(r0, n).unsqueeze(0) > torch.arange(r0, r1).unsqueeze(1)
        genuine = (ys[r0:r1, None] == ys[None, r0:]) & upper
        yield order, r0, r1, d, genuine, upper


def nearest_pairs(
    embeddings,
    labels,
    threshold: float,
    *,
    kind: str = "false_accept",
    k: int = 20,
    metric: str = "cosine",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` false accepts (impostor, d <= t) or false rejects (genuine, d > t) nearest to the threshold.

    Returns (i, j, d) arrays with i < j (original sample indices), sorted by |d - t|, closest first.
    """
    if kind not in ("false_accept", "false_reject"):
        raise ValueError(f"kind must be 'false_accept' or 'false_reject', got {kind!r}")
    x, y = _check_inputs(embeddings, labels, metric)
    t = float(threshold)
    best_gap = torch.empty(0)
    best_i = np.empty(0, dtype=np.int64)
    best_j = np.empty(0, dtype=np.int64)
    best_d = np.empty(0, dtype=np.float64)
    for order, r0, r1, d, genuine, upper in _distance_blocks(x, y, metric):
        if kind == "false_accept":
            sel = upper & ~genuine & (d <= t)
        else:
            sel = genuine & (d > t)
        rr, cc = torch.nonzero(sel, as_tuple=True)
        if len(rr) == 0:
            continue
        dv = d[rr, cc]
        gap = (dv - t).abs()
        if len(gap) > k:
            top = torch.topk(gap, k, largest=False).indices
            rr, cc, dv, gap = rr[top], cc[top], dv[top], gap[top]
        oi = order[(rr + r0).numpy()]
        oj = order[(cc + r0).numpy()]
        best_i = np.concatenate([best_i, np.minimum(oi, oj)])
        best_j = np.concatenate([best_j, np.maximum(oi, oj)])
        best_d = np.concatenate([best_d, dv.double().numpy()])
        best_gap = torch.cat([best_gap, gap])
    keep = np.lexsort((best_j, best_i, best_gap.double().numpy()))[:k]
    return best_i[keep], best_j[keep], best_d[keep]


def class_error_counts(
    embeddings, labels, threshold: float, *, metric: str = "cosine"
) -> dict[str, np.ndarray]:
    """Per class (sorted unique labels): false accepts (impostor pairs with d <= t that involve the class; each
    pair counts for both its classes), false rejects (its genuine pairs with d > t), and its pair totals."""
    x, y = _check_inputs(embeddings, labels, metric)
    uniq = np.unique(np.asarray(labels))
    c = len(uniq)
    t = float(threshold)
    fa = np.zeros(c, dtype=np.int64)
    fr = np.zeros(c, dtype=np.int64)
    for order, r0, r1, d, genuine, upper in _distance_blocks(x, y, metric):
        ys = y[order]
        acc = d <= t
        fa_mask = acc & upper & ~genuine
        fa += np.bincount(ys[r0:r1], weights=fa_mask.sum(dim=1).numpy(), minlength=c).astype(np.int64)
        fa += np.bincount(ys[r0:], weights=fa_mask.sum(dim=0).numpy(), minlength=c).astype(np.int64)
        fr += np.bincount(ys[r0:r1], weights=(genuine & ~acc).sum(dim=1).numpy(), minlength=c).astype(np.int64)
    counts = np.bincount(y, minlength=c).astype(np.int64)
    n = len(y)
    return {
        "classes": uniq,
        "false_accepts": fa,
        "false_rejects": fr,
        "genuine_pairs": counts * (counts - 1) // 2,
        "impostor_pairs": counts * (n - counts),
    }
