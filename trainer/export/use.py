"""Verify and search with a model bundle or a run: one interface for both (the commands ``verify`` and ``search``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.errors import TrainingError
from trainer.export import runtime
from trainer.export.bundle import calibrate, choose_epoch, heldout_rows, saved_threshold, threshold_at_far_from_table


@dataclass
class Model:
    """Something that embeds image files, with its metric and its threshold on the held-out classes."""

    source: str
    metric: str
    threshold: dict  # value, rule, far, frr, tar, ... (as in bundle.json)
    roc: dict | None  # threshold / far / frr lists, for choosing another operating point
    embed_files: object  # callable: list of paths -> (N, D) float32

    def threshold_at(self, far: float | None) -> tuple[float, str, dict]:
        """(threshold, rule, rates) at the stored threshold, or the largest one with FAR <= ``far``."""
        if far is None:
            return float(self.threshold["value"]), self.threshold["rule"], self.threshold
        if not self.roc:
            raise TrainingError(f"{self.source} stores no ROC to choose a threshold at FAR <= {far:g}")
        t = threshold_at_far_from_table(self.roc, far)
        i = int(np.searchsorted(np.asarray(self.roc["threshold"]), t))
        rates = {"far": self.roc["far"][i], "frr": self.roc["frr"][i]}
        return t, f"largest stored threshold with FAR <= {far:g} on the held-out classes", rates


def open_model(path: str | Path, device: str = "cpu") -> Model:
    """A bundle folder (bundle.json) or a run folder (its best checkpoint and held-out threshold)."""
    path = Path(path)
    if (path / runtime.MANIFEST).is_file():
        try:
            b = runtime.BundleModel(path)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        return Model(str(path), b.metric, b.threshold, b.info.get("roc"), b.embed_files)
    from trainer.inference import RunModel
    from trainer.store import RunReader

    reader = RunReader(path)
    epoch = choose_epoch(reader, "best")
    rm = RunModel(path, reader.verified_checkpoint(epoch), device)
    x, labels = heldout_rows(reader, epoch)
    threshold = calibrate(x, labels, reader.metric, saved=saved_threshold(reader, epoch), n_boot=100,
                          class_names=reader.classes)
    roc = threshold.pop("roc")
    return Model(f"{path} (epoch {epoch})", reader.metric, threshold, roc, rm.embed_files)


def _pct(v) -> str:
    return f"{100 * v:.2f} %" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def meaning(rates: dict) -> str:
    """What a threshold means on the held-out classes, in words."""
    return (f"on the held-out classes it accepts {_pct(rates.get('far'))} of impostor pairs and rejects "
            f"{_pct(rates.get('frr'))} of genuine ones")


def verify_pairs(model: Model, pairs: list[tuple[str, str]], far: float | None = None) -> list[dict]:
    """Decisions for image pairs: distance, threshold, same or not."""
    t, rule, _ = model.threshold_at(far)
    files = sorted({p for pair in pairs for p in pair})
    for f in files:
        if not Path(f).is_file():
            raise TrainingError(f"{f}: no such image file")
    emb = dict(zip(files, model.embed_files([Path(f) for f in files])))
    a = np.stack([emb[p] for p, _ in pairs]) if pairs else np.zeros((0, 1), np.float32)
    b = np.stack([emb[q] for _, q in pairs]) if pairs else np.zeros((0, 1), np.float32)
    d = runtime.distances(a, b, model.metric) if pairs else np.zeros(0)
    return [{"a": p, "b": q, "distance": float(dist), "threshold": t, "same": bool(dist <= t), "rule": rule}
            for (p, q), dist in zip(pairs, d)]


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Pairs from a CSV of two columns (a header row is skipped when its cells are not files)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f)):
            if len(row) < 2:
                raise TrainingError(f"{path}, line {i + 1}: expected two image paths, got {len(row)} column(s)")
            if i == 0 and not Path(row[0]).is_file() and not Path(row[1]).is_file():
                continue  # a header
            rows.append((row[0].strip(), row[1].strip()))
    return rows


def write_decisions(path: str | Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "distance", "threshold", "same"])
        for r in rows:
            w.writerow([r["a"], r["b"], f"{r['distance']:.6f}", f"{r['threshold']:.6f}", int(r["same"])])


def gallery(model: Model, source: str | Path) -> tuple[np.ndarray, list[str]]:
    """Gallery embeddings and paths: an image folder (embedded now) or an .h5 file written by ``embed``."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        with h5py.File(source, "r") as f:
            if "embeddings" not in f or "paths" not in f:
                raise TrainingError(f"{source} has no 'embeddings' and 'paths' (write one with main.py embed)")
            x = np.asarray(f["embeddings"][:], np.float32)
            paths = [p.decode("utf-8", "surrogateescape") if isinstance(p, bytes) else str(p) for p in f["paths"][:]]
        return x, paths
    if not source.is_dir():
        raise TrainingError(f"--gallery {source}: neither an image folder nor an .h5 file from main.py embed")
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in exts and p.is_file())
    if not files:
        raise TrainingError(f"--gallery {source}: no images in it")
    return model.embed_files(files), [str(p) for p in files]


def search(model: Model, queries: list[str], gallery_x: np.ndarray, gallery_paths: list[str], k: int = 5
           ) -> list[list[dict]]:
    """The ``k`` nearest gallery images of each query (faiss, exact), with distances and the threshold's verdict."""
    from trainer.analysis.index import NeighbourIndex

    for q in queries:
        if not Path(q).is_file():
            raise TrainingError(f"{q}: no such image file")
    qx = model.embed_files([Path(q) for q in queries])
    k = max(1, min(int(k), len(gallery_paths)))
    dist, idx = NeighbourIndex(gallery_x, metric=model.metric).exact_search(qx, k)
    t = float(model.threshold["value"])
    return [[{"path": gallery_paths[int(j)], "distance": float(d), "within": bool(d <= t)}
             for d, j in zip(dist[r], idx[r])] for r in range(len(queries))]
