"""Embeddings in the formats people already look at them with: TensorBoard's projector and a Parquet table.

- **Projector folder** (TensorBoard's embedding projector loads it: ``tensorboard --logdir DIR``, Projector tab):
  ``tensors.tsv`` (one row of floats per image), ``metadata.tsv`` (a header row, then path, label, split per
  image), ``sprite.png`` (the images as one grid, within the projector's 8192 x 8192 px limit) and
  ``projector_config.pbtxt`` naming them.
- **Parquet table** (pyarrow; the layout Apple's Embedding Atlas and Hugging Face ``datasets`` read): one row per
  image with ``id``, ``path``, ``label``, ``split``, ``vector`` (a list of float32) and, when the map is known,
  ``x`` / ``y``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

SPRITE_LIMIT = 8192  # px: the projector refuses larger sprite images
SPRITE_MAX_THUMB = 64


def _tsv_cell(value: object) -> str:
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def sprite_layout(n: int) -> tuple[int, int]:
    """(thumbnail size, images per row) for ``n`` images in one square sprite of at most SPRITE_LIMIT px."""
    per_row = max(1, math.ceil(math.sqrt(max(n, 1))))
    return max(1, min(SPRITE_MAX_THUMB, SPRITE_LIMIT // per_row)), per_row


def write_projector(folder: str | Path, embeddings: np.ndarray, paths: Sequence[str], labels: Sequence[str],
                    splits: Sequence[str], *, images: Callable[[int], object] | None = None,
                    tensor_name: str = "embeddings") -> Path:
    """Write a projector folder (see the module docstring); ``images(i)`` gives image i as a PIL image for the
    sprite (no sprite without it). Returns the folder."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x = np.asarray(embeddings, np.float32)
    if x.ndim != 2 or len(x) != len(paths) or len(paths) != len(labels) or len(labels) != len(splits):
        raise ValueError(f"embeddings {x.shape}, {len(paths)} paths, {len(labels)} labels, {len(splits)} splits: "
                         "one of each per image is needed")
    with open(folder / "tensors.tsv", "w", encoding="utf-8") as f:
        for row in x:
            f.write("\t".join(f"{v:.6g}" for v in row) + "\n")
    with open(folder / "metadata.tsv", "w", encoding="utf-8") as f:
        f.write("path\tlabel\tsplit\n")  # with more than one column the projector wants a header row
        for p, lab, sp in zip(paths, labels, splits):
            f.write(f"{_tsv_cell(p)}\t{_tsv_cell(lab)}\t{_tsv_cell(sp)}\n")
    lines = ["embeddings {", f'  tensor_name: "{tensor_name}"', f"  tensor_shape: {len(x)}",
             f"  tensor_shape: {x.shape[1]}", '  tensor_path: "tensors.tsv"', '  metadata_path: "metadata.tsv"']
    if images is not None and len(x):
        thumb, per_row = sprite_layout(len(x))
        rows = math.ceil(len(x) / per_row)
        sheet = Image.new("RGB", (per_row * thumb, rows * thumb), (255, 255, 255))
        for i in range(len(x)):
            try:
                im = images(i).convert("RGB")
            except Exception:  # an unreadable image leaves its cell white; the tensors are what matters
                continue
            im.thumbnail((thumb, thumb))
            cell = Image.new("RGB", (thumb, thumb), (255, 255, 255))
            cell.paste(im, ((thumb - im.width) // 2, (thumb - im.height) // 2))
            sheet.paste(cell, ((i % per_row) * thumb, (i // per_row) * thumb))
        sheet.save(folder / "sprite.png")
        lines += ["  sprite {", '    image_path: "sprite.png"', f"    single_image_dim: {thumb}",
                  f"    single_image_dim: {thumb}", "  }"]
    lines.append("}")
    (folder / "projector_config.pbtxt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_parquet(path: str | Path, embeddings: np.ndarray, paths: Sequence[str], labels: Sequence[str],
                  splits: Sequence[str], *, ids: Sequence[int] | None = None, xy: np.ndarray | None = None) -> Path:
    """Write the Parquet table (see the module docstring). Returns ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.ascontiguousarray(np.asarray(embeddings, np.float32))
    n, d = x.shape
    columns = {
        "id": pa.array(np.arange(n) if ids is None else np.asarray(ids), pa.int64()),
        "path": pa.array([str(p) for p in paths], pa.string()),
        "label": pa.array([str(lab) for lab in labels], pa.string()),
        "split": pa.array([str(s) for s in splits], pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), d),
    }
    if xy is not None:
        xy = np.asarray(xy, np.float32)
        columns["x"] = pa.array(xy[:, 0], pa.float32())
        columns["y"] = pa.array(xy[:, 1], pa.float32())
    table = pa.table(columns)
    table = table.replace_schema_metadata({"producer": "Embedding Explorer", "dimension": str(d)})
    tmp = Path(str(path) + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return Path(path)


SPLIT_WORDS = {0: "train", 1: "held-out"}


def sample_files(samples) -> list[str]:
    """The absolute file of every sample of a run's sample table."""
    roots = [Path(r) if r else None for r in samples.roots]
    index = np.asarray(samples.root_index)
    return [str(roots[int(index[i])] / p) if roots[int(index[i])] is not None else str(p)
            for i, p in enumerate(samples.paths)]


def selection_rows(samples, classes: Sequence[str], ids: Sequence[int]) -> list[tuple[int, str, str, str]]:
    """(id, file, class, split) of the samples ``ids`` (a map selection, neighbours, error pairs ...)."""
    files = sample_files(samples)
    labels, split = np.asarray(samples.labels), np.asarray(samples.split)
    out = []
    for i in ids:
        i = int(i)
        c = int(labels[i])
        out.append((i, files[i], classes[c] if 0 <= c < len(classes) else str(c), SPLIT_WORDS.get(int(split[i]), "?")))
    return out


def write_selection_csv(path: str | Path, rows: Sequence[tuple[int, str, str, str]]) -> Path:
    """A CSV of selected samples: id, path, label, split (a header row first)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "label", "split"])
        w.writerows(rows)
    return Path(path)


def write_pairs_csv(path: str | Path, samples, classes: Sequence[str], pairs: Sequence[tuple[int, int, float]],
                    kind: str) -> Path:
    """A CSV of image pairs (the threshold's false accepts or rejects): both images' id, path and label, the
    distance and the kind of error (a header row first)."""
    import csv

    files = sample_files(samples)
    labels = np.asarray(samples.labels)

    def name(i: int) -> str:
        c = int(labels[i])
        return classes[c] if 0 <= c < len(classes) else str(c)

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id_a", "path_a", "label_a", "id_b", "path_b", "label_b", "distance", "kind"])
        for a, b, d in pairs:
            a, b = int(a), int(b)
            w.writerow([a, files[a], name(a), b, files[b], name(b), f"{float(d):.6f}", kind])
    return Path(path)
