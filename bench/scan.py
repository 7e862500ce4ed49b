"""Benchmark the folder scan against what a user would otherwise run: torchvision's ImageFolder + PIL.

    python -m bench.scan [--quick] [--dir PATH] [--workers N]

Generates (once, into a temp folder or --dir) 5,000 noisy 256x256 JPEGs in 20 classes (--quick: 500), then times,
side by side in the same run:
  * baseline: torchvision.datasets.ImageFolder listing + PIL open/convert('RGB') of every file (its default loader)
  * scan_folder cold (no cache), full decode-verify, thread pool and process pool
  * scan_folder reopen with the per-file cache
and prints images/s and ratios against the baseline.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


from torchvision.datasets import ImageFolder  # noqa: E402  (imported up front: not part of the timing)

from trainer.data.scan import scan_folder
from bench.common import timed


def make_folder(root: Path, n_images: int, n_classes: int = 20, size: int = 256, seed: int = 0) -> None:
    """Noisy smooth-ish JPEGs so decoding is not trivial; skipped if the folder already holds them."""
    if len(list(root.glob("*/*.jpg"))) == n_images:
        return
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n_images):
        c = i % n_classes
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        phase = rng.uniform(0, 6.3, 3)
        base = 127 + 80 * np.sin(np.stack([xx * (c + 1) + phase[0], yy * 3 + phase[1], (xx + yy) * 2 + phase[2]], -1))
        img = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img, "RGB").save(folder / f"{i:05d}.jpg", quality=90)


def baseline(root: Path) -> int:
    """What a user would otherwise do: ImageFolder's listing and its loader (PIL open + convert('RGB'))."""
    ds = ImageFolder(str(root), loader=lambda p: p)
    for path, _ in ds.samples:
        with open(path, "rb") as f:
            Image.open(f).convert("RGB")
    return len(ds.samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 images instead of 5,000")
    ap.add_argument("--dir", type=Path, help="where to generate the images (kept); default a temp folder")
    ap.add_argument("--workers", type=int, default=None, help="scan workers (default: CPU count)")
    args = ap.parse_args()
    n = 500 if args.quick else 5000
    workers = args.workers or os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        root = args.dir or Path(tmp) / "images"
        cache = Path(tmp) / "cache"
        t, _ = timed(lambda: make_folder(root, n))
        print(f"folder: {root} ({n} JPEGs 256x256, 20 classes; generated in {t:.1f} s); workers={workers}, "
              f"cpu_count={os.cpu_count()}")

        rows: list[tuple[str, float]] = []
        t, count = timed(lambda: baseline(root))
        assert count == n
        rows.append(("ImageFolder + PIL open/convert (serial)", t))
        t, res = timed(lambda: scan_folder(root, workers=1, use_cache=False))
        assert len(res.paths) == n
        rows.append(("scan_folder cold, serial", t))
        t, res = timed(lambda: scan_folder(root, workers=workers, use_cache=False, pool="thread"))
        assert len(res.paths) == n
        rows.append((f"scan_folder cold, {workers} threads", t))
        t, res = timed(lambda: scan_folder(root, workers=workers, use_cache=False, pool="process"))
        assert len(res.paths) == n
        rows.append((f"scan_folder cold, {workers} processes (spawn)", t))
        scan_folder(root, workers=workers, cache_dir=cache)  # fill the cache
        t, res = timed(lambda: scan_folder(root, workers=workers, cache_dir=cache))
        assert len(res.paths) == n
        rows.append(("scan_folder reopen (cached)", t))

        base = rows[0][1]
        print(f"{'method':48s} {'seconds':>9s} {'images/s':>10s} {'vs ImageFolder':>15s}")
        for name, secs in rows:
            print(f"{name:48s} {secs:9.3f} {n / secs:10.0f} {base / secs:14.2f}x")
        print("(scan_folder also hashes every file for duplicates and records sizes; the baseline does neither.)")


if __name__ == "__main__":
    main()
