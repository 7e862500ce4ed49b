"""Benchmark of the run store (trainer/store.py) against what a user would otherwise use.

Writes and reads one epoch of N x 128 float32 embeddings (N = 100,000; 10,000 with --quick) and reads 1,000
random rows, with
  - ours:      RunWriter.write_epoch (HDF5 + fsync + atomic rename + manifest commit), RunReader.load_epoch / rows
  - np.save:   numpy's .npy (no fsync), np.load, and np.load(mmap_mode="r")[ids] for the rows
  - h5py:      plain h5py dataset write without our fsync/atomic steps, read, fancy-indexed rows
and prints seconds, MB/s and the ratio ours / baseline (> 1 means ours is slower). Each figure is the median of
several repeats; each repeated write goes to a new file (one file per epoch, for all three); reads are from the
page cache (the file was just written), as they are in the app.

    python -m bench.store [--quick] [--repeats R]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import h5py
import numpy as np


from trainer import store  # noqa: E402
from trainer.store import RunReader, RunWriter, SampleTable  # noqa: E402
from bench.common import timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 rows instead of 100,000")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n, d, k = (10_000 if args.quick else 100_000), 128, 1_000
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, d), dtype=np.float32)
    ids = rng.choice(n, size=k, replace=False)
    mb = emb.nbytes / 1e6
    samples = SampleTable(paths=[f"c{i % 100}/{i}.png" for i in range(n)], labels=np.arange(n) % 100,
                          split=(np.arange(n) % 2).astype(np.int8), roots=["/data"], root_index=np.zeros(n, np.int16))
    tel = {"loss": rng.random(500).astype(np.float32), "n_tuples": rng.integers(0, 1000, 500)}
    metrics = {"precision_at_1": 0.5, "map_at_r": 0.3}

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        tmp_path = Path(tmp)
        w = RunWriter.create(tmp_path / "run", config={}, classes=[f"c{i}" for i in range(100)], samples=samples)
        counter = iter(range(10_000))
        t_ours_w, _ = timed(lambda: w.write_epoch(next(counter), emb, metrics, tel), args.repeats)
        # diagnostic: the same write with the fsync calls switched off, to show what durability costs
        real = store._fsync_file, store._fsync_dir
        store._fsync_file = store._fsync_dir = lambda path: None
        try:
            t_ours_nosync, _ = timed(lambda: w.write_epoch(next(counter), emb, metrics, tel), args.repeats)
        finally:
            store._fsync_file, store._fsync_dir = real
        r = RunReader(tmp_path / "run")
        last = r.epochs[-1]
        t_ours_r, got = timed(lambda: r.load_epoch(last).embeddings, args.repeats)
        assert np.array_equal(got, emb)
        t_ours_rows, rows = timed(lambda: r.rows(last, ids), args.repeats)
        assert np.array_equal(rows, emb[ids])

        # like the run, each repeat writes a new file (one file per epoch)
        np_count = iter(range(10_000))
        npy = tmp_path / "emb.npy"

        def np_write() -> None:
            nonlocal npy
            npy = tmp_path / f"emb_{next(np_count)}.npy"
            np.save(npy, emb)

        t_np_w, _ = timed(np_write, args.repeats)
        t_np_r, got = timed(lambda: np.load(npy), args.repeats)
        assert np.array_equal(got, emb)
        t_np_rows, rows = timed(lambda: np.asarray(np.load(npy, mmap_mode="r")[ids]), args.repeats)
        assert np.array_equal(rows, emb[ids])

        h5_count = iter(range(10_000))
        h5 = tmp_path / "plain.h5"

        def h5_write() -> None:
            nonlocal h5
            h5 = tmp_path / f"plain_{next(h5_count)}.h5"
            with h5py.File(h5, "w") as f:
                f.create_dataset("embeddings", data=emb)

        def h5_read() -> np.ndarray:
            with h5py.File(h5, "r") as f:
                return f["embeddings"][()]

        def h5_rows() -> np.ndarray:
            order = np.argsort(ids)
            with h5py.File(h5, "r") as f:
                block = f["embeddings"][ids[order]]
            out = np.empty_like(block)
            out[order] = block
            return out

        t_h5_w, _ = timed(h5_write, args.repeats)
        t_h5_r, got = timed(h5_read, args.repeats)
        assert np.array_equal(got, emb)
        t_h5_rows, rows = timed(h5_rows, args.repeats)
        assert np.array_equal(rows, emb[ids])

    print(f"run store benchmark: one epoch of {n:,} x {d} float32 ({mb:.1f} MB), {k:,} random rows, "
          f"median of {args.repeats}")
    def cell(t: float) -> str:
        return f"{t:8.4f} s {mb / t:6.0f} MB/s"

    print(f"{'':20s}{'ours':>22s}{'np.save / np.load':>22s}{'plain h5py':>22s}{'ours/np':>9s}{'ours/h5py':>10s}")
    for name, o, a, b in (("write epoch", t_ours_w, t_np_w, t_h5_w), ("read epoch", t_ours_r, t_np_r, t_h5_r)):
        print(f"{name:20s}{cell(o):>22s}{cell(a):>22s}{cell(b):>22s}{o / a:9.2f}{o / b:10.2f}")
    print(f"{'1,000 random rows':20s}{t_ours_rows * 1e3:19.2f} ms{t_np_rows * 1e3:19.2f} ms{t_h5_rows * 1e3:19.2f} ms"
          f"{t_ours_rows / t_np_rows:9.2f}{t_ours_rows / t_h5_rows:10.2f}")
    print(f"{'  ours without fsync':20s}{cell(t_ours_nosync):>22s}{'':44s}{t_ours_nosync / t_np_w:9.2f}"
          f"{t_ours_nosync / t_h5_w:10.2f}   (diagnostic: the price of durability is the rest)")
    print("ours includes fsync of the file, the directory and the manifest (the baselines do not sync); "
          "timings on a shared machine are noisy.")


if __name__ == "__main__":
    main()
