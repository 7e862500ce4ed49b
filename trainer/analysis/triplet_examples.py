"""Example triplets of each category, with their distances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch

from trainer.analysis.census import (
    Metric,
    _as_embeddings,
    _check_category,
    _check_margin,
    _first_true,
)
from trainer.analysis.distances import check_metric, metric_rows


@dataclass(frozen=True)
class TripletExamples:
    """Example triplets (global sample ids) with their distances; hardness = d_an - d_ap."""

    anchor: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    d_ap: np.ndarray
    d_an: np.ndarray

    def __len__(self) -> int:
        return len(self.anchor)

    def __iter__(self):  # allows ``a, p, n, d_ap, d_an = triplet_examples(...)``
        return iter((self.anchor, self.positive, self.negative, self.d_ap, self.d_an))



def _category_mask(diff: Any, m: Any, category: str) -> Any:
    """PML's rule on diff = key(a,n) - key(a,p)."""
    if category == "easy":
        return diff > m
    if category == "hard":
        return (diff <= m) & (diff <= 0)
    return (diff <= m) & (diff > 0)


def _row_keys(xp: np.ndarray, rows: np.ndarray, metric: str, sq: np.ndarray | None) -> torch.Tensor:
    """Ordering keys (larger = farther) of anchor rows against every sample, as the epoch census computes them."""
    sims = torch.from_numpy(xp[rows] @ xp.T)
    if metric == "cosine":
        return -sims
    v = torch.from_numpy(sq[rows]).unsqueeze(1) + torch.from_numpy(sq).unsqueeze(0) - 2.0 * sims
    return torch.sqrt(torch.clamp(v, min=0.0))


EXAMPLES_BUFFER_BYTES = 64 << 20  # the example search's working set per block of anchors (~4 anchors at 5e5)
EXAMPLES_BYTES_PER_KEY = 40  # per (anchor, sample): keys, masked and sorted copies, sort indices, masks


def examples_chunk(n: int) -> int:
    """Anchors per block of the example search: 256 up to ~6k samples, fewer beyond. A fixed 256 took ~6.5 GB
    for a 500,000-image split (bench_gui_scale --stalls: the Triplets tab raised the window's memory 4.5 -> 11 GB)."""
    return int(min(256, max(1, EXAMPLES_BUFFER_BYTES // (EXAMPLES_BYTES_PER_KEY * max(n, 1)))))


def triplet_examples(
    embeddings: Any,
    labels: Any,
    category: str,
    *,
    margin: float,
    metric: Metric = "cosine",
    n: int = 32,
    classes: Sequence[int] | None = None,
    sort: Literal["hardest", "easiest"] = "hardest",
    seed: int = 0,
    max_anchors: int | None = 1024,
    max_per_anchor: int | None = None,
    chunk: int | None = None,
) -> TripletExamples:
    """Up to ``n`` triplets of one category, hardest (smallest d_an - d_ap) or easiest first.

    Anchors are all samples of ``classes`` (all classes if None), or a seeded random sample of ``max_anchors`` of
    them; among those anchors' triplets the selection is exact.  Per anchor, each positive's triplets of the
    category are a contiguous run of its sorted negatives, so only ``n`` candidates per positive are looked at.
    Anchors go ``chunk`` at a time (default: :func:`examples_chunk`, so a block stays ~64 MB at any N).
    """
    _check_category(category)
    margin = _check_margin(margin)
    check_metric(metric)
    if sort not in ("hardest", "easiest"):
        raise ValueError(f"sort must be 'hardest' or 'easiest', got {sort!r}")
    x, y = _as_embeddings(embeddings, labels)
    empty = TripletExamples(*(np.zeros(0, np.int64),) * 3, np.zeros(0, np.float32), np.zeros(0, np.float32))
    if n <= 0 or len(x) == 0:
        return empty
    cand = np.arange(len(x), dtype=np.int64) if classes is None else np.flatnonzero(np.isin(y, np.asarray(classes)))
    if max_anchors is not None and len(cand) > max_anchors:
        cand = np.sort(np.random.default_rng(seed).choice(cand, size=int(max_anchors), replace=False))
    if len(cand) == 0:
        return empty
    xp = metric_rows(x, metric)
    sq = np.einsum("ij,ij->i", xp, xp).astype(np.float32) if metric == "euclidean" else None
    yt = torch.from_numpy(y)
    per_anchor = n if max_per_anchor is None else max(1, min(n, int(max_per_anchor)))
    best: list[tuple[torch.Tensor, ...]] = []
    chunk = examples_chunk(len(x)) if chunk is None else max(1, int(chunk))
    for s in range(0, len(cand), chunk):
        rows = torch.from_numpy(cand[s : s + chunk])
        key = _row_keys(xp, rows.numpy(), metric, sq)  # (R, N)
        la = yt[rows].unsqueeze(1)
        same = yt.unsqueeze(0) == la
        self_mask = torch.zeros_like(same)
        self_mask[torch.arange(len(rows)), rows] = True
        pos_mask, neg_mask = same & ~self_mask, ~same
        n_neg = neg_mask.sum(1)
        sorted_neg, neg_order = torch.sort(torch.where(neg_mask, key, torch.tensor(float("inf"))), dim=1)
        n_pos = pos_mask.sum(1)
        p_max = int(n_pos.max())
        if p_max == 0 or int(n_neg.max()) == 0:
            continue
        pos_ids = torch.sort(pos_mask.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :p_max]
        pos_keys = torch.gather(key, 1, pos_ids)
        pos_valid = torch.arange(p_max).unsqueeze(0) < n_pos.unsqueeze(1)
        le0 = torch.minimum(torch.searchsorted(sorted_neg, pos_keys.contiguous(), right=True), n_neg.unsqueeze(1))
        lem = _first_true(sorted_neg, pos_keys, margin, n_neg)
        hard_end = torch.minimum(le0, lem)
        start, stop = {
            "hard": (torch.zeros_like(lem), hard_end),
            "semihard": (hard_end, lem),
            "easy": (lem, n_neg.unsqueeze(1).expand_as(lem)),
        }[category]
        offs = torch.arange(per_anchor).view(1, 1, -1)
        pos_in_run = start.unsqueeze(2) + offs if sort == "hardest" else stop.unsqueeze(2) - 1 - offs
        ok = pos_valid.unsqueeze(2) & (pos_in_run >= start.unsqueeze(2)) & (pos_in_run < stop.unsqueeze(2))
        pos_in_run = pos_in_run.clamp(0, key.shape[1] - 1)
        r_, k_, o_ = torch.nonzero(ok, as_tuple=True)
        j = pos_in_run[r_, k_, o_]
        kan = sorted_neg[r_, j]
        kap = pos_keys[r_, k_]
        hardness = (kan - kap).double()
        score = hardness if sort == "hardest" else -hardness
        # keep at most per_anchor per anchor, then the chunk's best n
        order = torch.argsort(score, stable=True)
        r_sorted = r_[order]
        rank_in_anchor = _rank_within_groups(r_sorted)
        order = order[rank_in_anchor < per_anchor][:n]
        best.append((rows[r_[order]], pos_ids[r_[order], k_[order]], neg_order[r_[order], j[order]],
                     kap[order], kan[order], score[order]))
    if not best:
        return empty
    a, p, ng, kap, kan, score = (torch.cat(t) for t in zip(*best))
    order = torch.argsort(score, stable=True)[:n]
    off = 1.0 if metric == "cosine" else 0.0
    return TripletExamples(
        anchor=a[order].numpy().astype(np.int64),
        positive=p[order].numpy().astype(np.int64),
        negative=ng[order].numpy().astype(np.int64),
        d_ap=(kap[order].double() + off).numpy().astype(np.float32),
        d_an=(kan[order].double() + off).numpy().astype(np.float32),
    )


def _rank_within_groups(groups: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... in order of appearance within each group value (groups in any order)."""
    if len(groups) == 0:
        return groups
    order = torch.argsort(groups, stable=True)
    g = groups[order]
    idx = torch.arange(len(g))
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    group_start = torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), 0).values
    rank = torch.empty_like(idx)
    rank[order] = idx - group_start
    return rank
