"""Neighbour search speed: NeighbourIndex (faiss) vs sklearn brute-force NearestNeighbors and plain numpy.

    python -m bench.index [--quick] [--hnsw-n N] [--skip-hnsw]

Single queries (one at a time, as the GUI asks when a point is clicked) on a 100,000-image gallery (D=128;
10,000 with --quick), cosine; ids must agree with the numpy search.  Then the approximate indexes on ``--hnsw-n``
images (default 200,000; 20,000 with --quick): our IVF (nprobe tuned to recall@10 >= 0.95) against faiss HNSW, each
with its build time, recall@10 against exact search and single-query time.
Timings are medians; the machine is shared, so expect noise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


from sklearn.neighbors import NearestNeighbors  # noqa: E402

from trainer.analysis.index import NeighbourIndex


def gallery(n: int, dim: int = 128, classes: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)).astype(np.float32)
    return centers[rng.integers(0, classes, n)] + 0.7 * rng.normal(size=(n, dim)).astype(np.float32)


def per_query(fn, queries: np.ndarray) -> tuple[float, list]:
    times, out = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q[None, :]))
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--hnsw-n", type=int, default=None, help="gallery size of the approximate-index comparison")
    ap.add_argument("--skip-hnsw", action="store_true", help="IVF only (HNSW's build is slow at large N)")
    args = ap.parse_args()
    n = 10_000 if args.quick else 100_000
    k = 10
    x = gallery(n)
    queries = x[np.random.default_rng(1).choice(n, 50, replace=False)] + 0.01
    print(f"== single-query k={k} search, gallery {n} x 128, cosine, median of {len(queries)} queries")
    t = time.perf_counter()
    index = NeighbourIndex(x, metric="cosine")
    print(f"  NeighbourIndex build {time.perf_counter() - t:.2f} s (exact={index.is_exact})")
    t_ours, res_ours = per_query(lambda q: index.search(q, k)[1][0], queries)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)

    def numpy_search(q):
        qn = q[0] / np.linalg.norm(q[0])
        d = 1.0 - xn @ qn
        part = np.argpartition(d, k)[:k]
        return part[np.argsort(d[part], kind="stable")]

    t_np, res_np = per_query(numpy_search, queries)
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(x)
    t_sk, res_sk = per_query(lambda q: nn.kneighbors(q, return_distance=True)[1][0], queries)
    agree_np = np.mean([len(set(a) & set(b)) / k for a, b in zip(res_ours, res_np)])
    agree_sk = np.mean([len(set(a) & set(b)) / k for a, b in zip(res_ours, res_sk)])
    print(f"  NeighbourIndex.search {t_ours * 1e3:7.2f} ms/query")
    print(f"  numpy argpartition   {t_np * 1e3:7.2f} ms/query  (ours is x{t_np / t_ours:.1f} faster; id overlap {agree_np:.3f})")
    print(f"  sklearn brute        {t_sk * 1e3:7.2f} ms/query  (ours is x{t_sk / t_ours:.1f} faster; id overlap {agree_sk:.3f})")

    hn = args.hnsw_n or (20_000 if args.quick else 200_000)
    xh = gallery(hn, seed=2)
    qh = xh[:50] + 0.01
    print(f"== approximate indexes, gallery {hn} x 128, cosine: build (with the recall measurement) and one query")
    t = time.perf_counter()
    ivf = NeighbourIndex(xh, metric="cosine", approximate=True, recall_queries=200)
    t_ivf_build = time.perf_counter() - t
    t_ivf, _ = per_query(lambda q: ivf.search(q, k), qh)
    t_e, _ = per_query(lambda q: ivf.exact_search(q, k), qh)
    print(f"  IVF (ours, {ivf.description}): build {t_ivf_build:.1f} s, recall@10 {ivf.recall_at_10:.3f}, "
          f"{t_ivf * 1e3:.2f} ms/query (exact flat {t_e * 1e3:.2f} ms/query, x{t_e / t_ivf:.1f})")
    if not args.skip_hnsw:
        t = time.perf_counter()
        h = NeighbourIndex(xh, metric="cosine", approximate=True, recall_queries=200, kind="hnsw")
        t_h_build = time.perf_counter() - t
        t_h, _ = per_query(lambda q: h.search(q, k), qh)
        print(f"  HNSW (M=32, efSearch=128): build {t_h_build:.1f} s, recall@10 {h.recall_at_10:.3f}, "
              f"{t_h * 1e3:.2f} ms/query -> IVF builds x{t_h_build / t_ivf_build:.1f} faster")


if __name__ == "__main__":
    main()
