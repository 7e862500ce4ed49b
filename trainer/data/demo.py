"""The built-in demo folder: scikit-learn's digits written as PNG files, one sub-folder per class.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from trainer.cache import cache_root

DEMO_DIRNAME = "demo-digits-v1"
MARKER = ".complete"  # hidden, so the folder scan ignores it
DEMO_SIZE = 64
DEMO_COUNT = 1797


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _write_digits(folder: Path, size: int) -> int:
    """Write every digit as ``<label>/<index>.png`` under ``folder``; returns the number written."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float64)  # (N, 8, 8), values 0..16
    labels = np.asarray(digits.target, dtype=np.int64)
    pixels = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    for label in np.unique(labels):
        (folder / str(int(label))).mkdir()
    for i, (img, label) in enumerate(zip(pixels, labels)):
        big = Image.fromarray(img, mode="L").resize((size, size), Image.Resampling.BICUBIC)
        big.save(folder / str(int(label)) / f"{i:04d}.png", compress_level=1)
    return len(pixels)


def ensure_demo_folder(cache_dir: Path | None = None) -> Path:
    """Return the demo image folder, building it once (atomically: temp folder, marker, ``os.replace``)."""
    base = Path(cache_dir) if cache_dir is not None else cache_root()
    target = base / DEMO_DIRNAME
    if _is_complete(target):
        return target
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEMO_DIRNAME}-", dir=base))
    try:
        n = _write_digits(tmp, DEMO_SIZE)
        (tmp / MARKER).write_text(f"{n}\n", encoding="ascii")
        if target.exists() and not _is_complete(target):
            shutil.rmtree(target)  # a stale half-built folder from an older version or a crash
        try:
            os.replace(tmp, target)
        except OSError:
            if not _is_complete(target):  # lost a race to a concurrent builder that did finish: use theirs
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
