"""The neighbour view's background work (no Qt): build the faiss index of a gallery, search it, embed a dropped image, filter the sample list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
import numpy as np
from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN
from explorer.widgets.texts import SPLIT_NAMES

GALLERIES = {"all": "All samples", "heldout": "Held-out only", "train": "Train only"}
INDEX_CACHE = 4  # (epoch, gallery) indexes kept
INDEX_ROWS_BUDGET = 1_500_000  # ... and no more indexed rows than this in all (one 1e6 index: ~0.5 GB at 128-d)


def gallery_ids(split: np.ndarray, gallery: str) -> np.ndarray:
    """Sample ids of a gallery option ("all", "heldout", "train"), ascending."""
    split = np.asarray(split)
    if gallery == "all":
        return np.arange(len(split), dtype=np.int64)
    if gallery not in GALLERIES:
        raise ValueError(f"unknown gallery {gallery!r}; expected one of {list(GALLERIES)}")
    want = SPLIT_HELDOUT if gallery == "heldout" else SPLIT_TRAIN
    return np.flatnonzero(split == want).astype(np.int64)


def checkpoint_for(run, epoch: int) -> Path | None:
    """The checkpoint of ``epoch``, else the newest one before it, else the run's newest."""
    try:
        ckpts = list(run.checkpoints)
    except AttributeError:
        ckpts = []
    before = [c for c in ckpts if c <= epoch]
    if before:
        return run.checkpoint_path(max(before))
    return run.checkpoint_path(None)


@dataclass
class IndexEntry:
    """A neighbour index over one gallery of one epoch; ``ids[j]`` is the sample id of index row j."""

    epoch: int
    gallery: str
    ids: np.ndarray
    index: Any  # trainer.analysis.index.NeighbourIndex
    seconds: float = 0.0


@dataclass
class NeighbourQuery:
    """What to search for: a sample of the run (``sample_id``) or an embedded image file (``vector``)."""

    kind: str  # "sample" | "file"
    sample_id: int = -1  # the run's sample (for a file: the sample with the same file, or -1)
    label: int = -1  # class of the query, -1 when unknown
    path: str = ""  # the image file (file queries)
    vector: np.ndarray | None = None  # embedding of the file with the checkpoint below
    checkpoint_epoch: int = -1

    def same_as(self, other: "NeighbourQuery | None") -> bool:
        return other is not None and self.kind == other.kind and self.sample_id == other.sample_id and \
            self.path == other.path


@dataclass
class NeighbourResult:
    """The answer of one search: neighbours nearest first, and what changed since the previous epoch."""

    query: NeighbourQuery
    epoch: int
    gallery: str
    k: int
    metric: str
    ids: np.ndarray
    distances: np.ndarray
    labels: np.ndarray
    n_gallery: int
    is_exact: bool
    recall_at_10: float
    index_description: str = "exact"
    prev_epoch: int | None = None
    prev_ids: np.ndarray | None = None
    new_entries: list[IndexEntry] = field(default_factory=list)
    seconds: float = 0.0
    comparing: bool = False  # shown before the comparison with prev_epoch is done (it follows)

    @property
    def precision_at_k(self) -> float:
        """Share of the neighbours that have the query's class (NaN when the query has no class)."""
        if self.query.label < 0 or len(self.ids) == 0:
            return float("nan")
        return float(np.mean(self.labels == self.query.label))

    @property
    def new_mask(self) -> np.ndarray:
        """True for neighbours that were not among the previous epoch's k nearest."""
        if self.prev_ids is None:
            return np.zeros(len(self.ids), bool)
        return ~np.isin(self.ids, self.prev_ids)


def build_index_entry(run, epoch: int, gallery: str, metric: str, progress=None) -> IndexEntry:
    """Read the gallery rows of ``epoch`` and index them (exact below 1M rows, IVF-SQ8 with measured recall from 1M)."""
    from trainer.analysis.index import NeighbourIndex

    t0 = time.perf_counter()
    ids = gallery_ids(run.samples.split, gallery)
    if progress is not None:
        progress(0.1, f"reading {len(ids):,} embeddings of epoch {epoch}")
    if gallery == "all":  # the loaded epoch as it is: no second copy (the index makes its own)
        x = run.load_epoch(epoch).embeddings
    elif len(ids) > len(run.samples.split) // 2:
        x = run.load_epoch(epoch).embeddings[ids]
    else:
        x = run.rows(epoch, ids)
    if progress is not None:
        progress(0.4, f"indexing {len(ids):,} embeddings"
                      + (" (approximate: k-means cells, then measuring recall)" if len(ids) >= 1_000_000 else ""))
    index = NeighbourIndex(x, metric=metric)
    del x
    # the panel only searches: an exact index is its own copy; an approximate one (8-bit codes) re-ranks its
    # candidates with their rows, read back from the run a few at a time (its 512 MB are not kept)
    index.release_rows(fetch=lambda local: run.rows(epoch, ids[local]))
    return IndexEntry(int(epoch), gallery, ids, index, time.perf_counter() - t0)


STREAM_FROM = 200_000  # galleries this large: the previous epoch's neighbours by a streamed exact scan, no 2nd index
STREAM_BLOCK = 65_536


def streamed_neighbours(run, epoch: int, ids: np.ndarray, q: np.ndarray, k: int, metric: str,
                        exclude: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest rows of ``ids`` in ``epoch`` to ``q`` (distances, sample ids), nearest first, read
    in blocks from the run: no index and no copy of the epoch is kept (the "new since epoch" comparison)."""
    from trainer.analysis.distances import unit_rows

    q = np.asarray(q, np.float32).reshape(-1)
    if metric == "cosine":
        q = unit_rows(q.reshape(1, -1))[0]
    ids = np.asarray(ids, np.int64)
    best_d = np.zeros(0, np.float32)
    best_i = np.zeros(0, np.int64)
    for start in range(0, len(ids), STREAM_BLOCK):
        block = ids[start:start + STREAM_BLOCK]
        # a block at a time through the reader (a short-lived map of its span): the previous epoch's pages do not
        # stay in the window's memory (the shared map of it kept all 512 MB of a 1e6 x 128 epoch resident)
        x = run.rows(epoch, block)
        if metric == "cosine":
            norms = np.sqrt(np.einsum("ij,ij->i", x, x))
            d = 1.0 - (x @ q) / np.maximum(norms, 1e-12)
        else:
            d = np.sqrt(np.maximum(((x - q) ** 2).sum(axis=1), 0.0))
        d = np.asarray(d, np.float32)
        d[block == exclude] = np.inf
        cand_d, cand_i = np.concatenate([best_d, d]), np.concatenate([best_i, block])
        keep = np.argpartition(cand_d, k)[:k] if len(cand_d) > k else np.arange(len(cand_d))
        keep = keep[np.lexsort((cand_i[keep], cand_d[keep]))]
        best_d, best_i = cand_d[keep], cand_i[keep]
    ok = np.isfinite(best_d)
    return best_d[ok], best_i[ok]


def _search(entry: IndexEntry, q: np.ndarray, k: int, exclude: int) -> tuple[np.ndarray, np.ndarray]:
    pos = int(np.searchsorted(entry.ids, exclude)) if exclude >= 0 else -1
    excl = None
    if 0 <= pos < len(entry.ids) and entry.ids[pos] == exclude:
        excl = np.array([pos])
    d, local = entry.index.search(q.reshape(1, -1), k, exclude_self_ids=excl)
    d, local = d[0], local[0]
    ok = local >= 0
    return d[ok], entry.ids[local[ok]]


def neighbour_job(run, epoch: int, prev_epoch: int | None, gallery: str, metric: str, query: NeighbourQuery, k: int,
                  cache: dict, *, progress, partial, is_cancelled) -> NeighbourResult:
    """k nearest neighbours of ``query`` in the gallery of ``epoch`` (and, for a sample, of ``prev_epoch``)."""
    t0 = time.perf_counter()
    new: list[IndexEntry] = []

    def entry_for(e: int) -> IndexEntry:
        hit = cache.get((e, gallery))
        if hit is None:
            hit = build_index_entry(run, e, gallery, metric, progress)
            new.append(hit)
        return hit

    entry = entry_for(epoch)
    if is_cancelled():
        return None  # type: ignore[return-value]
    progress(0.8, "searching")
    if query.kind == "sample":
        q = run.rows(epoch, np.array([query.sample_id]))[0]
        exclude = query.sample_id
    else:
        q = np.asarray(query.vector, np.float32)
        exclude = -1
    dist, ids = _search(entry, q, k, exclude)
    out = NeighbourResult(query=query, epoch=int(epoch), gallery=gallery, k=int(k), metric=metric, ids=ids,
                          distances=dist, labels=np.asarray(run.samples.labels)[ids].astype(np.int64),
                          n_gallery=len(entry.ids), is_exact=bool(entry.index.is_exact),
                          recall_at_10=float(entry.index.recall_at_10),
                          index_description=entry.index.description)
    if prev_epoch is not None and query.kind == "sample" and not is_cancelled():
        progress(0.9, f"neighbours in epoch {prev_epoch}")
        qp = run.rows(prev_epoch, np.array([query.sample_id]))[0]
        out.prev_epoch = int(prev_epoch)
        pe = cache.get((prev_epoch, gallery))
        if pe is None and len(entry.ids) >= STREAM_FROM:  # a second 1e6 index would hold another 0.5-1 GB
            # the scan reads the whole previous epoch (~0.5 s at 1e6): the neighbours are shown first
            partial(replace(out, new_entries=list(new), comparing=True))
            out.prev_ids = streamed_neighbours(run, prev_epoch, entry.ids, qp, k, metric, exclude)[1]
        else:
            out.prev_ids = _search(entry_for(prev_epoch), qp, k, exclude)[1]
    out.new_entries = new
    out.seconds = time.perf_counter() - t0
    return out


def embed_file_job(run, epoch: int, path: str, model_cache: dict, *, progress, partial, is_cancelled) -> dict:
    """Embed one image file with the run's checkpoint for ``epoch``; find the run's sample with that file, if any."""
    from explorer.widgets.thumbnails import load_thumbnail_array, sample_path

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such image file")
    ckpt = checkpoint_for(run, epoch)
    if ckpt is None:
        raise RuntimeError(f"{run.run_dir}: the run has no checkpoint yet, so an image cannot be embedded")
    model = model_cache.get(str(ckpt))
    if model is None:
        progress(0.1, f"loading the network of {ckpt.name}")
        from trainer.inference import RunModel

        model = RunModel(run.run_dir, ckpt, device="cpu")
    progress(0.5, f"embedding {p.name}")
    try:
        vec = model.embed_files([p])[0]
    except Exception as exc:  # a bad image: name the file and the reason
        raise ValueError(f"{p}: cannot embed this image ({exc})") from exc
    thumb = None
    try:
        thumb = load_thumbnail_array(p, 128)
    except Exception:  # the thumbnail is cosmetic; the embedding worked
        thumb = None
    resolved = p.resolve()
    sid, label = -1, -1
    s = run.samples
    name = p.name
    for i, rel in enumerate(s.paths):  # cheap name test first, full path only for candidates
        if rel.endswith(name) and sample_path(s, i).resolve() == resolved:
            sid, label = i, int(s.labels[i])
            break
    return {"path": str(p), "vector": vec, "thumb": thumb, "model": model, "checkpoint": str(ckpt),
            "checkpoint_epoch": int(model.epoch), "sample_id": sid, "label": label, "epoch": int(epoch)}


def sample_haystack(samples, classes: list[str]) -> np.ndarray:
    """Lower-case "path class split" of every sample, the text the sample list's search matches."""
    split = np.asarray(samples.split)
    labels = np.asarray(samples.labels)
    return np.array([f"{p} {classes[int(c)] if 0 <= int(c) < len(classes) else c} {SPLIT_NAMES.get(int(s), s)}".lower()
                     for p, c, s in zip(samples.paths, labels, split)], dtype=object)


def filter_samples_job(haystack: np.ndarray | None, samples, classes: list[str], text: str, *, progress, partial,
                       is_cancelled) -> tuple[np.ndarray, np.ndarray]:
    """(haystack, ids of samples whose text contains every word of ``text``), case-insensitive."""
    if haystack is None:
        progress(0.1, "indexing sample names")
        haystack = sample_haystack(samples, classes)
    words = text.lower().split()
    keep = np.ones(len(haystack), bool)
    for w in words:
        if is_cancelled():
            break
        keep &= np.fromiter((w in h for h in haystack), bool, count=len(haystack))
    return haystack, np.flatnonzero(keep).astype(np.int64)
