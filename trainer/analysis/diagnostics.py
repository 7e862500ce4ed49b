"""Label checks: suspected mislabels and near-duplicates across classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer.analysis.census import (
    Census,
    Metric,
    _as_embeddings,
    epoch_census,
)


@dataclass(frozen=True)
class Diagnostic:
    """One finding about an embedding: level "warning" | "info", a short title, a sentence, sample ids involved."""

    level: str
    title: str
    detail: str
    sample_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


DIAGNOSE_EXACT_LIMIT = 50_000  # label checks of larger splits look at a random sample of images ...
DIAGNOSE_SAMPLE = 20_000  # ... this many, each against all (at 5e5 images: ~1 min here instead of hours)


def suspected_mislabels(
    embeddings: Any, labels: Any, *, metric: Metric = "cosine", k: int = 5, index: Any = None,
    query_ids: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples whose k nearest neighbours (self excluded) all carry one other label: (ids, suggested label).

    ``query_ids`` checks only those samples (against every sample): how a very large split is checked in time."""
    from trainer.analysis.index import NeighbourIndex

    x, y = _as_embeddings(embeddings, labels)
    if len(x) <= k or k < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    idx = index if index is not None else NeighbourIndex(x, metric=metric)
    ids = np.arange(len(x)) if query_ids is None else np.unique(np.asarray(query_ids, np.int64))
    _, nb = idx.search(x[ids], k, exclude_self_ids=ids)
    valid = (nb >= 0).all(axis=1)
    nb_lab = y[np.maximum(nb, 0)]
    flagged = valid & (nb_lab == nb_lab[:, :1]).all(axis=1) & (nb_lab[:, 0] != y[ids])
    return ids[flagged].astype(np.int64), nb_lab[flagged, 0].astype(np.int64)


def _sample_pair_distances(x: np.ndarray, metric: str, n_pairs: int, seed: int) -> np.ndarray:
    """Distances of ``n_pairs`` random pairs of rows (self pairs dropped); only the sampled rows are normalised
    (normalising a 500,000-row split for 20,000 pairs took a 256 MB copy)."""
    from trainer.analysis.pairs import pair_distances

    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(x), n_pairs)
    j = rng.integers(0, len(x), n_pairs)
    keep = i != j
    return pair_distances(x, i[keep], j[keep], metric=metric)


def near_duplicates_across_classes(
    embeddings: Any, labels: Any, *, metric: Metric = "cosine", eps: float | None = None, index: Any = None,
    query_ids: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) of different labels closer than ``eps``: (i, j, distance), closest first.

    ``eps`` defaults to 1e-3 x the median distance of random pairs, so it follows the embedding's scale.
    ``query_ids`` finds only the pairs that involve one of those samples.
    """
    from trainer.analysis.index import NeighbourIndex

    x, y = _as_embeddings(embeddings, labels)
    if len(x) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    if eps is None:
        eps = 1e-3 * float(np.median(_sample_pair_distances(x, metric, 4000, 0)))
    idx = index if index is not None else NeighbourIndex(x, metric=metric)
    i, j, d = idx.range_pairs(float(eps), query_ids=query_ids)
    cross = y[i] != y[j]
    i, j, d = i[cross], j[cross], d[cross]
    order = np.lexsort((j, i, d))
    return i[order], j[order], d[order]


def diagnose(
    embeddings: Any,
    labels: Any,
    *,
    margin: float,
    metric: Metric = "cosine",
    census: Census | None = None,
    k: int = 5,
    eps: float | None = None,
    max_anchors: int = 4096,
    max_checked: int = DIAGNOSE_EXACT_LIMIT,
    n_checked: int = DIAGNOSE_SAMPLE,
    seed: int = 0,
) -> list[Diagnostic]:
    """Plain-language findings about an epoch: collapse, overlap, all-easy triplets, label problems.

    Label problems need every sample's neighbours (N^2 distances); beyond ``max_checked`` samples a random sample
    of ``n_checked`` is checked against all of them, and the findings say so."""
    from trainer.analysis.index import NeighbourIndex

    x, y = _as_embeddings(embeddings, labels)
    out: list[Diagnostic] = []
    if len(x) < 2:
        return [Diagnostic("info", "Too few samples", f"{len(x)} embedding(s): nothing to diagnose.")]
    d = _sample_pair_distances(x, metric, 20000, 0)
    # scale of the space: cosine distances live in [0, 2]; euclidean ones are compared with the vectors' size
    scale = 1.0 if metric == "cosine" else max(float(np.median(np.linalg.norm(x, axis=1))), 1e-30)
    if float(np.percentile(d, 99)) < 1e-3 * scale:
        out.append(Diagnostic(
            "warning", "Embeddings collapsed",
            f"99% of random pairs lie within {np.percentile(d, 99):.3g} of each other ({metric}), tiny for this "
            "space: the network maps every image to about the same point.",
        ))
    if census is None:
        census = epoch_census(x, y, margin=margin, metric=metric, max_anchors=max_anchors)
    if census.total:
        auc = 1.0 - census.share_hard  # P(d_an > d_ap) over triplets, ties counted as failures
        if auc < 0.6:
            out.append(Diagnostic(
                "warning", "Positives and negatives overlap",
                f"a negative is farther than a positive in only {auc:.1%} of triplets (0.5 is chance): "
                "the embedding does not separate the classes yet.",
            ))
        if census.share_easy > 0.99:
            out.append(Diagnostic(
                "warning", "Nearly all triplets are easy",
                f"{census.share_easy:.2%} of triplets satisfy d(a,n) > d(a,p) + {census.margin:g}: a triplet "
                "loss at this margin is about zero; raise the margin or mine harder negatives.",
            ))
    else:
        out.append(Diagnostic("info", "No triplets", "no anchor has both a positive and a negative."))
    # a sample of a large split is checked against all of it: one scan of the rows, no copy of them (256 MB at
    # 500,000 x 128); a small split is checked whole, from an index that holds its rows
    index = NeighbourIndex(x, metric=metric, copy_rows=len(x) <= max_checked)
    checked = None
    among = ""
    if len(x) > max_checked:
        size = min(n_checked, len(x))
        checked = np.sort(np.random.default_rng(seed).choice(len(x), size=size, replace=False))
        among = f" among a random sample of {size:,} of the {len(x):,} images (each against all)"
    ids, suggested = suspected_mislabels(x, y, metric=metric, k=k, index=index, query_ids=checked)
    if len(ids):
        out.append(Diagnostic(
            "warning", f"{len(ids)} suspected label problem(s)",
            f"these images' {k} nearest neighbours all belong to one other class{among} "
            f"(e.g. sample {ids[0]} labelled {y[ids[0]]} looks like class {suggested[0]}).",
            ids,
        ))
    i, j, dist = near_duplicates_across_classes(x, y, metric=metric, eps=eps, index=index, query_ids=checked)
    if len(i):
        out.append(Diagnostic(
            "warning", f"{len(i)} near-duplicate pair(s) across classes",
            f"images of different classes with almost the same embedding{among} (e.g. samples {i[0]} and {j[0]}, "
            f"distance {dist[0]:.2g}): duplicates filed under two labels, or a collapsed embedding.",
            np.unique(np.concatenate([i, j])),
        ))
    if checked is not None:
        out.append(Diagnostic("info", "Label checks sampled",
                              f"suspected label problems and near duplicates were looked for{among}: finding "
                              f"every one would take {len(x):,}^2 distances."))
    return out
