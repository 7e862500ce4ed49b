"""Use an Embedding Explorer model bundle with onnxruntime, Pillow and NumPy only: no PyTorch, no app, no run.

This file is copied into every bundle as ``embed.py``; the app runs bundles with this same code.

    python embed.py embed IMAGE... --out embeddings.npy
    python embed.py verify IMAGE_A IMAGE_B          # same / not same at the bundle's threshold

Preprocessing (stated in ``bundle.json`` under "preprocessing", done here exactly as the trainer evaluates):
EXIF orientation applied, converted to RGB (transparency on white); the shorter side first reduced to
``load_size`` (Pillow's default resampling) when larger; then resized so the shorter side is ``image_size``
(bilinear, antialiased) and centre-cropped to ``image_size`` x ``image_size``; scaled to [0, 1] and normalised
with ``mean`` / ``std`` per channel; NCHW float32. The network's output is the embedding (L2-normalised when
``normalized`` is true); two images are "the same" when their ``metric`` distance is <= ``threshold``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

FORMAT = "embedding-explorer-bundle"
VERSION = 1
MANIFEST = "bundle.json"


def load_rgb(path: str | Path):
    """An image file as an RGB PIL image, oriented by its EXIF tag, transparency composited on white."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.seek(0)
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            im = Image.fromarray(np.clip(arr / max(arr.max(), 1) * 255, 0, 255).astype(np.uint8))
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, rgba)
        return im.convert("RGB")


def preprocess(image, spec: dict) -> np.ndarray:
    """One RGB PIL image -> (3, S, S) float32, as described in this module's docstring."""
    from PIL import Image

    size = int(spec["image_size"])
    load = spec.get("load_size")
    if load and min(image.size) > load:
        scale = load / min(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    w, h = image.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    image = image.resize(new, Image.Resampling.BILINEAR)
    w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Row-wise distances between embeddings ``a`` (N, D) and ``b`` (N, D) (cosine: 1 - cos)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "cosine":
        na = np.linalg.norm(a, axis=1).clip(1e-12)
        nb = np.linalg.norm(b, axis=1).clip(1e-12)
        return 1.0 - (a * b).sum(axis=1) / (na * nb)
    return np.linalg.norm(a - b, axis=1)


class BundleModel:
    """A bundle folder's network (ONNX, run by onnxruntime on the CPU), preprocessing and threshold."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        try:
            self.info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.folder} is not a model bundle: {path} cannot be read ({exc})") from None
        if not isinstance(self.info, dict) or self.info.get("format") != FORMAT:
            raise ValueError(f"{path} is not an Embedding Explorer model bundle")
        if int(self.info.get("version", 0)) > VERSION:
            raise ValueError(f"{path} was written by a newer Embedding Explorer (bundle version "
                             f"{self.info.get('version')}); please update")
        self.preprocessing = self.info["preprocessing"]
        self.metric = self.info["metric"]
        self.threshold = self.info.get("threshold") or {}
        self._session = None

    @property
    def session(self):
        if self._session is None:
            import onnxruntime as ort

            onnx = self.folder / self.info["files"]["onnx"]
            self._session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        return self._session

    def embed_arrays(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Embeddings of preprocessed images (N, 3, S, S)."""
        name = self.session.get_inputs()[0].name
        out = [self.session.run(None, {name: np.ascontiguousarray(x[i:i + batch_size], np.float32)})[0]
               for i in range(0, len(x), batch_size)]
        dim = int(self.info.get("embedding_dim", 0))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)

    def embed_files(self, files, batch_size: int = 64) -> np.ndarray:
        """Embeddings (N, D) of image files."""
        x = [preprocess(load_rgb(f), self.preprocessing) for f in files]
        size = int(self.preprocessing["image_size"])
        return self.embed_arrays(np.stack(x) if x else np.zeros((0, 3, size, size), np.float32), batch_size)

    def verify(self, a: str | Path, b: str | Path, threshold: float | None = None) -> dict:
        """Same or not: the distance of two image files and the decision at the bundle's (or a given) threshold."""
        t = float(self.threshold["value"] if threshold is None else threshold)
        e = self.embed_files([a, b])
        d = float(distances(e[:1], e[1:], self.metric)[0])
        return {"same": d <= t, "distance": d, "threshold": t}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Use the model bundle this file sits in (onnxruntime, no PyTorch).")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("embed", help="embed image files into a .npy file")
    e.add_argument("images", nargs="+")
    e.add_argument("--out", required=True)
    v = sub.add_parser("verify", help="are two images of the same class?")
    v.add_argument("image_a")
    v.add_argument("image_b")
    v.add_argument("--threshold", type=float, help="instead of the bundle's threshold")
    args = p.parse_args(argv)
    model = BundleModel(Path(__file__).resolve().parent)
    if args.command == "embed":
        np.save(args.out, model.embed_files(args.images))
        print(f"wrote {len(args.images)} embeddings to {args.out}")
        return 0
    r = model.verify(args.image_a, args.image_b, args.threshold)
    print(f"{'same' if r['same'] else 'not the same'}: distance {r['distance']:.4f} "
          f"{'<=' if r['same'] else '>'} threshold {r['threshold']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
