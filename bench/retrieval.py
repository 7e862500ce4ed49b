"""Benchmark: trainer.analysis.retrieval.retrieval_metrics (one faiss k-NN with k = largest class, Recall@K from the same
neighbours) against what a user would otherwise run: pytorch-metric-learning's AccuracyCalculator with its default
k (all N - 1 neighbours) plus a separate faiss search for Recall@K. Also prints the per-epoch cost of
verification_metrics. Synthetic clustered embeddings (Gaussian around class centres, L2-normalised).

    python -m bench.retrieval            # 10,000 x 128, 500 classes
    python -m bench.retrieval --quick    # 2,000 x 128, 100 classes
Timings are wall-clock and noisy on a shared CPU.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
import torch


from trainer.analysis.retrieval import retrieval_metrics
from trainer.analysis.verification import verification_metrics
from bench.common import clustered


def pml_default(x: np.ndarray, y: np.ndarray, k_values=(1, 2, 4, 8)) -> dict[str, float]:
    """The library route: AccuracyCalculator (default k = all) + a separate faiss k-NN for Recall@K."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKMeans

    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI", "AMI"),
        device=torch.device("cpu"),
        kmeans_func=FaissKMeans(niter=20, nredo=5, seed=0, min_points_per_centroid=1),
    )
    res = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, nn = index.search(x, max(k_values) + 1)
    nn_labels = y[nn[:, 1:]]  # column 0 is the query itself (no exact duplicates in this data)
    counts = np.bincount(y)
    keep = counts[y] > 1
    out = {k: float(v) for k, v in res.items()}
    for k in k_values:
        out[f"recall_at_{k}"] = float((nn_labels[keep, :k] == y[keep, None]).any(axis=1).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, n_classes = (2000, 100) if args.quick else (10000, 500)
    x, y = clustered(n, 128, n_classes)
    print(f"N={n} D=128 classes={n_classes}; torch threads {torch.get_num_threads()} (timings noisy on a shared CPU)")

    retrieval_metrics(x[:200], y[:200])  # warm-up: imports and faiss / OpenMP start-up, paid by neither side
    pml_default(x[:200], y[:200])
    t0 = time.perf_counter()
    ours = retrieval_metrics(x, y)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = pml_default(x, y)
    t_ref = time.perf_counter() - t0
    print(f"retrieval_metrics: ours {t_ours:.2f} s, PML default k + faiss Recall@K {t_ref:.2f} s "
          f"-> ours is {t_ref / t_ours:.1f}x faster")
    for key in ("precision_at_1", "r_precision", "mean_average_precision_at_r", "recall_at_1", "recall_at_8"):
        print(f"  {key:30s} ours {ours[key]:.6f}  reference {ref[key]:.6f}")
    print(f"  nmi ours {ours['nmi']:.4f} (PML {ref['NMI']:.4f}), ami ours {ours['ami']:.4f} (PML {ref['AMI']:.4f})")

    for m in (5000, 10000) if not args.quick else (2000,):
        xm, ym = x[:m], y[:m]
        t0 = time.perf_counter()
        v = verification_metrics(xm, ym)
        t = time.perf_counter() - t0
        print(f"verification_metrics N={m} (all {m * (m - 1) // 2:.3g} pairs): {t:.2f} s  "
              + ", ".join(f"{k} {val:.4f}" for k, val in v.items()))


if __name__ == "__main__":
    main()
