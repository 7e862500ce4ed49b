"""What each stage of a run costs as N grows: store, neighbour index, census, pair histograms, map.

    python -m bench.scaling [--quick] [--sizes 10000,100000,1000000] [--dim 128]

Synthetic clustered embeddings (N/50 classes, D = 128). Each stage is timed side by side with what a user would
otherwise reach for: np.save/np.load for the store, exact faiss for HNSW, exact all-pairs histograms for the
stratified pair sample, UMAP on every point for the sampled map. Stages whose cost grows as N^2 are measured at
the sizes where they fit and projected beyond (printed as "proj."). --quick: N = 10k and 100k, fewer repeats.
The machine is shared: figures are noisy.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bench.common import peak_rss_mb
from bench.common import timed as _timed

timed = functools.partial(_timed, best=True)  # each stage's best of its repeats



def data(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_classes = max(2, n // 50)
    labels = rng.integers(0, n_classes, size=n)
    centres = rng.normal(size=(n_classes, dim)).astype(np.float32)
    x = centres[labels] + rng.normal(scale=2.0, size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels.astype(np.int64)


def bench_store(x, labels, tmp: Path) -> None:
    from trainer.store import RunReader, RunWriter, SampleTable

    n = len(x)
    samples = SampleTable(paths=[f"c/{i}.png" for i in range(n)], labels=labels, split=np.zeros(n, np.int8),
                          roots=["/data"], root_index=np.zeros(n, np.int16))
    run = tmp / f"run_{n}"
    t_create, w = timed(lambda: RunWriter.create(run, config={}, classes=[str(c) for c in range(labels.max() + 1)],
                                                 samples=samples))
    t_write, _ = timed(lambda: w.write_epoch(1, x, {"m": 1.0}))
    reader = RunReader(run)
    t_load, _ = timed(lambda: reader.load_epoch(1), 2)
    ids = np.random.default_rng(0).integers(0, n, 1000)
    t_rows, _ = timed(lambda: reader.rows(1, ids), 3)
    npy = tmp / f"x_{n}.npy"
    t_npsave, _ = timed(lambda: np.save(npy, x))
    t_npload, _ = timed(lambda: np.load(npy), 2)
    t_npmm, _ = timed(lambda: np.asarray(np.load(npy, mmap_mode="r")[ids]), 3)
    print(f"  store   create (sample table) {t_create:7.2f} s | write epoch {t_write:6.2f} s "
          f"(np.save {t_npsave:5.2f} s, x{t_write / t_npsave:4.1f}) | load_epoch {t_load:6.2f} s "
          f"(np.load {t_npload:5.2f} s, x{t_load / t_npload:4.1f}) | 1000 rows {t_rows * 1e3:6.1f} ms "
          f"(np.load mmap {t_npmm * 1e3:5.1f} ms, x{t_rows / t_npmm:4.1f}) | epoch file "
          f"{sum(f.stat().st_size for f in (run / 'epochs').glob('*.h5')) / 2**20:6.0f} MB")


def bench_index(x, hnsw: bool) -> None:
    from trainer.analysis.index import NeighbourIndex

    rng = np.random.default_rng(1)
    q = x[rng.integers(0, len(x), 1000)]
    t_b_exact, exact = timed(lambda: NeighbourIndex(x, approximate=False))
    t_q_exact, _ = timed(lambda: exact.search(q, 10), 2)
    line = f"  faiss   exact build {t_b_exact:6.2f} s, 1000 queries k=10 {t_q_exact:6.2f} s"
    t_b_ivf, ivf = timed(lambda: NeighbourIndex(x, approximate=True, recall_queries=200))
    t_q_ivf, _ = timed(lambda: ivf.search(q, 10), 2)
    line += (f" | IVF build {t_b_ivf:7.2f} s ({ivf.description}), queries {t_q_ivf:6.3f} s "
             f"(x{t_q_exact / t_q_ivf:5.1f} faster), recall@10 {ivf.recall_at_10:.3f}")
    if hnsw:
        t_b_h, h = timed(lambda: NeighbourIndex(x, approximate=True, recall_queries=200, kind="hnsw"))
        t_q_h, _ = timed(lambda: h.search(q, 10), 2)
        line += (f" | HNSW build {t_b_h:7.2f} s, queries {t_q_h:6.3f} s (x{t_q_exact / t_q_h:5.1f} faster), "
                 f"recall@10 {h.recall_at_10:.3f}")
    print(line)


def bench_census(x, labels, exact_upto: int) -> float | None:
    from trainer.analysis.census import epoch_census

    n = len(x)
    anchors = min(n, 2000 if n <= 100_000 else 200)
    t, _ = timed(lambda: epoch_census(x, labels, margin=0.1, metric="cosine", max_anchors=anchors))
    per_anchor = t / anchors
    full = per_anchor * n
    tag = "measured" if anchors == n else "proj."
    print(f"  census  {anchors} anchors {t:6.2f} s -> all {n:,} anchors {full:8.1f} s ({tag}; grows as N^2)")
    return full


EXACT_PAIR_SECONDS: list[float] = []  # seconds per pair of the exact histograms, measured at the sizes that fit


def bench_pairs(x, labels, exact_upto: int) -> None:
    from trainer.analysis.verification import pair_histograms, roc_from_histograms
    from trainer.analysis.pairs import sampled_pair_histograms, stratified_pair_sample

    n = len(x)
    t_s, s = timed(lambda: stratified_pair_sample(labels))
    t_h, h = timed(lambda: sampled_pair_histograms(x, labels, s))
    roc_s = roc_from_histograms(h)
    line = (f"  pairs   stratified sample {len(s.i):,} pairs: draw {t_s:5.2f} s + histogram {t_h:5.2f} s, "
            f"AUC {roc_s.auc:.4f}")
    if n <= exact_upto:
        t_e, he = timed(lambda: pair_histograms(x, labels))
        roc_e = roc_from_histograms(he)
        EXACT_PAIR_SECONDS.append(t_e / (n * (n - 1) / 2))
        line += (f" | exact all {he.n_genuine + he.n_impostor:,} pairs {t_e:6.2f} s, AUC {roc_e.auc:.4f} "
                 f"(sample x{t_e / (t_s + t_h):5.1f} faster, |dAUC| {abs(roc_s.auc - roc_e.auc):.4f})")
    else:
        pairs = n * (n - 1) / 2
        proj = f"{min(EXACT_PAIR_SECONDS) * pairs:,.0f} s (proj.)" if EXACT_PAIR_SECONDS else "not measured"
        line += f" | exact all {pairs:.2e} pairs: {proj}"
    print(line)


def bench_map(x, labels, full_upto: int) -> None:
    from trainer.analysis.projection import project

    n = len(x)
    t_s, lay = timed(lambda: project(x, "umap", labels=labels, metric="cosine", max_fit=min(n, 50_000)))
    line = f"  map     UMAP (fit on <= 50k stratified, rest placed) {t_s:7.1f} s, peak RSS {peak_rss_mb():6.0f} MB"
    if n <= full_upto:
        import umap

        t_u, _ = timed(lambda: umap.UMAP(n_components=2, metric="cosine", random_state=0).fit_transform(x))
        line += f" | umap-learn on all {n:,} points {t_u:7.1f} s (x{t_u / t_s:4.1f})"
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 10k and 100k only")
    ap.add_argument("--sizes", help="comma-separated N values (default 10000,100000,1000000)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--skip", default="", help="comma-separated stages to skip: store,index,census,pairs,map")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    skip = set(filter(None, args.skip.split(",")))
    print(f"bench_scaling: sizes {sizes}, D = {args.dim}, {os.cpu_count()} CPUs (shared: figures are noisy)")
    exact_pairs_t = {}
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        for n in sizes:
            x, labels = data(n, args.dim)
            print(f"N = {n:,}: embeddings {x.nbytes / 2**20:.0f} MB")
            if "store" not in skip:
                bench_store(x, labels, Path(tmp))
            if "index" not in skip:
                bench_index(x, hnsw=n <= 100_000)  # HNSW's build at 1e6: ~25 min here
            if "census" not in skip:
                bench_census(x, labels, 0)
            if "pairs" not in skip:
                t0 = time.perf_counter()
                bench_pairs(x, labels, exact_upto=30_000 if args.quick else 100_000)
                exact_pairs_t[n] = time.perf_counter() - t0
            if "map" not in skip:
                bench_map(x, labels, full_upto=10_000)
            del x, labels
            gc.collect()
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
