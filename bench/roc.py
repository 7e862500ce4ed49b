"""Benchmark: exact all-pairs verification histograms + ROC (trainer.analysis.verification) against what a user would otherwise
write: a plain chunked torch.histc over masked distance blocks, and scikit-learn's roc_curve + roc_auc_score on
the full list of pair distances. Synthetic clustered embeddings (Gaussian around class centres, L2-normalised).

    python -m bench.roc            # 20,000 x 128 (2 x 10^8 pairs); sklearn on 5,000 (1.25 x 10^7 pairs)
    python -m bench.roc --quick    # small sizes
Timings are wall-clock on whatever CPU this runs on; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


from trainer.analysis.verification import pair_histograms, roc_from_histograms
from bench.common import clustered, peak_rss_mb


def plain_torch_histc(x: np.ndarray, y: np.ndarray, bins: int, rows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward version: cosine distance row blocks, boolean masks, torch.histc per class kind."""
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    n = len(xt)
    gen = torch.zeros(bins, dtype=torch.float64)
    imp = torch.zeros(bins, dtype=torch.float64)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        d = 1.0 - xt[r0:r1] @ xt.T
        upper = torch.arange(n)[None, :] > torch.arange(r0, r1)[:, None]
        same = yt[r0:r1, None] == yt[None, :]
        gen += torch.histc(d[upper & same], bins, 0.0, 2.0).double()
        imp += torch.histc(d[upper & ~same], bins, 0.0, 2.0).double()
    return gen.numpy(), imp.numpy()


def eer_from_curve(far: np.ndarray, tar: np.ndarray) -> float:
    """EER by linear interpolation where FAR crosses FRR (same rule as trainer.analysis.verification)."""
    diff = far - (1.0 - tar)
    k = int(np.argmax(diff >= 0))
    if k == 0:
        return float(far[0])
    a = -diff[k - 1] / (diff[k] - diff[k - 1])
    return float(far[k - 1] + a * (far[k] - far[k - 1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n_big, n_sk, n_classes = (4000, 1500, 100) if args.quick else (20000, 5000, 500)
    dim = 128
    print(f"torch threads: {torch.get_num_threads()}  (timings noisy on a shared CPU)")

    # --- ours on the big set ------------------------------------------------------------------------------------
    x, y = clustered(n_big, dim, n_classes, spread=1.05)
    n_pairs = n_big * (n_big - 1) // 2
    rss0 = peak_rss_mb()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        h = pair_histograms(x, y, metric="cosine")
        roc = roc_from_histograms(h)
        times.append(time.perf_counter() - t0)
    rss1 = peak_rss_mb()
    assert h.n_genuine + h.n_impostor == n_pairs
    ours = min(times)
    print(
        f"ours   N={n_big} D={dim} pairs={n_pairs:.3g} bins={h.bins}: histograms+ROC "
        f"best {ours:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}); "
        f"{n_pairs / ours / 1e6:.0f} M pairs/s; AUC {roc.auc:.5f} (+-{roc.auc_error_bound:.1e}) EER {roc.eer:.5f}"
    )
    print(f"peak RSS {rss1:.0f} MB (before: {rss0:.0f} MB, increase {rss1 - rss0:.0f} MB)")

    t0 = time.perf_counter()
    pg, pi = plain_torch_histc(x, y, h.bins)
    plain = time.perf_counter() - t0
    # same counts up to float rounding of boundary pairs (histc uses left-closed bins)
    l1 = np.abs(np.cumsum(pg) - np.cumsum(h.genuine)).max() + np.abs(np.cumsum(pi) - np.cumsum(h.impostor)).max()
    print(f"plain chunked torch.histc: {plain:.2f} s  -> ours is {plain / ours:.1f}x faster (max cum. count diff {l1:.0f})")

    # --- against scikit-learn on the smaller set ----------------------------------------------------------------
    from sklearn.metrics import roc_auc_score, roc_curve

    xs, ys = clustered(n_sk, dim, n_classes, seed=1, spread=1.05)
    n_pairs_s = n_sk * (n_sk - 1) // 2
    t0 = time.perf_counter()
    h_s = pair_histograms(xs, ys, metric="cosine")
    roc_s = roc_from_histograms(h_s)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    iu, ju = np.triu_indices(n_sk, 1)
    d = 1.0 - (xs @ xs.T)[iu, ju]
    same = ys[iu] == ys[ju]
    t_dist = time.perf_counter() - t0
    t0 = time.perf_counter()
    fpr, tpr, _ = roc_curve(same, -d)
    auc_sk = roc_auc_score(same, -d)
    t_sk = time.perf_counter() - t0
    eer_sk = eer_from_curve(fpr, tpr)
    print(
        f"sklearn N={n_sk} pairs={n_pairs_s:.3g}: distances {t_dist:.2f} s + roc_curve/roc_auc_score {t_sk:.2f} s; "
        f"ours {t_ours:.3f} s -> {(t_dist + t_sk) / t_ours:.0f}x faster ({t_sk / t_ours:.0f}x vs sklearn alone)"
    )
    print(
        f"  AUC ours {roc_s.auc:.6f} sklearn {auc_sk:.6f} |diff| {abs(roc_s.auc - auc_sk):.1e} "
        f"(bound {roc_s.auc_error_bound:.1e}); EER ours {roc_s.eer:.6f} sklearn {eer_sk:.6f} "
        f"|diff| {abs(roc_s.eer - eer_sk):.1e}"
    )
    ok = abs(roc_s.auc - auc_sk) <= 1e-3 and abs(roc_s.eer - eer_sk) <= 1e-3
    print("within 1e-3 of scikit-learn:", "yes" if ok else "NO")


if __name__ == "__main__":
    main()
