"""Triplet census speed against pytorch-metric-learning's TripletMarginMiner, side by side in one run.

    python -m bench.triplets [--quick]

1. One training batch (32 classes x 8 = 256 images, D=128): our batch_census (all three categories in one
   call) vs PML's miner called once per type ("easy", "semihard", "hard"); counts must be identical.
2. An epoch (20,000 images, 100 classes, D=128; 4,000 with --quick) of unit-length rows whose spread gives a real
   mix of easy / semi-hard / hard triplets: epoch_census over every anchor.  PML's miner cannot hold N^3 triplets,
   so it runs on a handful of anchors (query = the anchor, reference = every other sample) and its per-anchor time
   is extrapolated; its per-category counts on those anchors are compared with ours.
Timings are medians of repeats; the machine is shared, so expect noise.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


from pytorch_metric_learning.distances import CosineSimilarity, LpDistance  # noqa: E402
from pytorch_metric_learning.miners import TripletMarginMiner  # noqa: E402

from trainer.analysis.census import batch_census, epoch_census
from bench.common import timed


def clustered(n: int, classes: int, dim: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim))
    y = np.arange(n) % classes
    return (centers[y] + spread * rng.normal(size=(n, dim))).astype(np.float32), y.astype(np.int64)


def bench_batch(repeats: int) -> None:
    print("== one batch: 256 images (32 classes x 8), D=128, margin 0.2")
    x_np, y_np = clustered(256, 32, 128, spread=1.0)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    for metric, distance in (("cosine", CosineSimilarity()), ("euclidean", LpDistance(normalize_embeddings=False))):
        batch_census(x, y, 0.2, metric=metric)  # warm-up

        def pml():
            return [len(TripletMarginMiner(margin=0.2, type_of_triplets=t, distance=distance)(x, y)[0])
                    for t in ("easy", "semihard", "hard")]

        t_pml, counts_pml = timed(pml, repeats)
        t_ours, c = timed(lambda: batch_census(x, y, 0.2, metric=metric), repeats * 3)
        same = counts_pml == [c.n_easy, c.n_semihard, c.n_hard]
        print(f"  {metric:9s} PML miner x3 types {t_pml * 1e3:7.1f} ms ({t_pml / 3 * 1e3:.1f} ms/type) | "
              f"batch_census {t_ours * 1e3:6.2f} ms | speed-up x{t_pml / t_ours:5.1f} | "
              f"counts easy/semi/hard {counts_pml} identical={same}")
        if not same:
            raise SystemExit("counts differ from PML")


def unit_clusters(n: int, classes: int, dim: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length rows around class centres, as a normalised embedding head gives; ``spread`` sets the mix."""
    x, y = clustered(n, classes, dim, spread, seed)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def bench_epoch(n: int, repeats: int, pml_anchors: int) -> None:
    classes, dim = 100, 128
    print(f"== one epoch: {n} images, {classes} classes, D={dim}, unit-length rows, margin 0.2, every anchor")
    for spread, what in ((2.0, "part-trained (mixed)"), (8.0, "untrained-like (overlap)")):
        x, y = unit_clusters(n, classes, dim, spread=spread, seed=1)
        epoch_census(x[:200], y[:200], margin=0.2, metric="cosine")  # compile / warm-up
        for metric, distance in (("cosine", CosineSimilarity()), ("euclidean", LpDistance(normalize_embeddings=False))):
            t_ours, c = timed(lambda: epoch_census(x, y, margin=0.2, metric=metric), repeats)
            # PML on a few anchors: query = the anchor, reference = every other sample (so the anchor is not its
            # own positive), one miner call per category
            ids = np.arange(0, n, n // pml_anchors)[:pml_anchors]
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)

            def pml():
                out = []
                for a in ids:
                    keep = torch.arange(n) != int(a)
                    row = []
                    for t in ("easy", "semihard", "hard"):
                        miner = TripletMarginMiner(margin=0.2, type_of_triplets=t, distance=distance)
                        row.append(len(miner(xt[a : a + 1], yt[a : a + 1], xt[keep], yt[keep])[0]))
                    out.append(row)
                return np.array(out)

            t_pml, counts_pml = timed(pml, 1)
            ours = np.stack([c.n_easy, c.n_semihard, c.n_hard], 1)[ids]
            pml_epoch = t_pml / len(ids) * n
            diff = int(np.abs(counts_pml - ours).max())
            print(f"  {what:25s} {metric:9s} epoch_census {t_ours:6.2f} s | PML miner (3 types, extrapolated from "
                  f"{len(ids)} anchors) {pml_epoch:8.1f} s | speed-up x{pml_epoch / t_ours:6.1f} | shares "
                  f"easy/semi/hard {c.share_easy:.3f}/{c.share_semihard:.3f}/{c.share_hard:.3f}")
            print(f"    per-category counts on anchors {ids.tolist()}: identical to PML={diff == 0} "
                  f"(ours {ours.tolist()}, max |diff| {diff})")
            if diff:
                print("    note: a difference can only come from float32 rounding of a distance lying on a boundary")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes for a fast check")
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    bench_batch(repeats=3 if args.quick else 10)
    bench_epoch(4000 if args.quick else 20000, repeats=1 if args.quick else 2, pml_anchors=4 if args.quick else 1)


if __name__ == "__main__":
    main()
