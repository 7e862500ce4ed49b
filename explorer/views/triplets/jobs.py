"""The triplet view's background work (no Qt): the census of an epoch, its history over epochs, example triplets, the miner's tuples with their distances.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any
import numpy as np

from trainer.analysis.pairs import pair_distances
from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN

CATEGORY_TITLES = {"easy": "Easy", "semihard": "Semi-hard", "hard": "Hard"}
SPLITS = {"heldout": ("Held-out", SPLIT_HELDOUT), "train": ("Train", SPLIT_TRAIN)}
HISTORY_MAX_ANCHORS = 4096  # the chart samples anchors of large splits
CENSUS_EXACT_ANCHORS = 60_000  # the epoch shown is censused over every anchor up to this split size (~20 s here)
CENSUS_ROW_BUDGET = CENSUS_EXACT_ANCHORS ** 2  # beyond it: as many sampled anchors as fit this many distances
N_EXAMPLES = 40
MAX_MINED_ROWS = 400


def tuple_distances(x: np.ndarray, a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Distances between rows x[a] and x[b] (trainer.analysis.pairs.pair_distances); NaN where a or b is -1."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    out = np.full(len(a), np.nan, np.float64)
    ok = (a >= 0) & (b >= 0)
    if ok.any():
        out[ok] = pair_distances(x, a[ok], b[ok], metric=metric)
    return out


def mined_distances(x: np.ndarray, telemetry: dict[str, np.ndarray], metric: str) -> dict[str, np.ndarray]:
    """The mined tuples of the telemetry with d(a,p) and d(a,n) from the epoch's embeddings (NaN where absent)."""
    keys = ("mined_batch", "mined_anchor", "mined_positive", "mined_negative")
    if not all(k in telemetry for k in keys):
        return {k: np.zeros(0, np.int64) for k in ("batch", "anchor", "positive", "negative")} | {
            "d_ap": np.zeros(0), "d_an": np.zeros(0)}
    b, a, p, n = (np.asarray(telemetry[k], np.int64) for k in keys)
    return {"batch": b, "anchor": a, "positive": p, "negative": n,
            "d_ap": tuple_distances(x, a, p, metric), "d_an": tuple_distances(x, a, n, metric)}


@dataclass
class CensusResult:
    """Everything the view shows for one (epoch, split, margin)."""

    epoch: int
    split: str
    margin: float
    metric: str
    ids: np.ndarray  # global sample ids of the split (row i of x)
    x: np.ndarray  # embeddings of the split
    labels: np.ndarray
    census: Any  # trainer.analysis.census.Census (anchors are row indices into ids)
    diagnostics: list = field(default_factory=list)  # trainer.analysis.diagnostics.Diagnostic, sample_ids made global
    telemetry: dict = field(default_factory=dict)
    mined: dict = field(default_factory=dict)
    problem: str = ""
    seconds: float = 0.0
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # np.unique(labels), from the job:


def census_job(run, epoch: int, split: str, margin: float, metric: str, *, progress, partial,
               is_cancelled) -> CensusResult:
    """Census of every anchor of ``split`` at ``margin``, diagnostics, and the miner's tuples with distances."""
    from dataclasses import replace

    from trainer.analysis.diagnostics import diagnose
    from trainer.analysis.census import epoch_census

    t0 = time.perf_counter()
    progress(0.05, f"reading epoch {epoch}")
    ed = run.load_epoch(epoch)
    ids, x = run.split_rows(epoch, SPLITS[split][1])  # shared with the threshold studio
    y = np.asarray(run.samples.labels, np.int64)[ids]
    out = CensusResult(int(epoch), split, float(margin), metric, ids, x, y, None, telemetry=dict(ed.telemetry))
    out.mined = mined_distances(ed.embeddings, ed.telemetry, metric)
    out.classes = np.unique(y)
    if len(out.classes) < 2:
        out.problem = (f"The {SPLITS[split][0].lower()} split of epoch {epoch} has {len(out.classes)} class(es) and "
                       f"{len(ids)} sample(s): a triplet needs two classes.")
        return out
    max_anchors = None
    if len(ids) > CENSUS_EXACT_ANCHORS:  # N^2 distances: a stated random sample of anchors, each against all
        max_anchors = max(HISTORY_MAX_ANCHORS, CENSUS_ROW_BUDGET // len(ids))
    progress(0.15, f"counting the triplets of {max_anchors or len(ids):,} anchors")
    out.census = epoch_census(x, y, margin=margin, metric=metric, max_anchors=max_anchors)
    if is_cancelled():
        return out
    partial(out)
    progress(0.7, "diagnostics")
    diags = diagnose(x, y, margin=margin, metric=metric, census=out.census)
    out.diagnostics = [replace(d, sample_ids=ids[np.asarray(d.sample_ids, np.int64)]) for d in diags]
    out.seconds = time.perf_counter() - t0
    return out


def history_job(run, epochs: list[int], split: str, margin: float, metric: str, done: dict, *, progress, partial,
                is_cancelled) -> dict:
    """Shares of easy / semi-hard / hard for each epoch not in ``done``; each epoch is sent as a partial result."""
    from trainer.analysis.census import epoch_census, sample_anchors

    want = SPLITS[split][1]
    ids = np.flatnonzero(np.asarray(run.samples.split) == want).astype(np.int64)
    y = np.asarray(run.samples.labels, np.int64)[ids]
    # each past epoch's rows are read in class order and handed to the census, which then normalises them in
    # place (no sorted copy); its anchors stay the samples a census in the split's own order would sample
    order = np.argsort(y, kind="stable")
    where = np.empty(len(order), np.int64)
    where[order] = np.arange(len(order))
    picked = sample_anchors(len(ids), HISTORY_MAX_ANCHORS)
    anchors = None if picked is None else np.sort(where[picked])
    out = dict(done)
    todo = [e for e in epochs if e not in done]
    for i, e in enumerate(todo):
        if is_cancelled():
            break
        progress(i / max(len(todo), 1), f"census of epoch {e} ({i + 1} of {len(todo)})")
        if len(np.unique(y)) < 2:
            out[e] = (math.nan, math.nan, math.nan, False)
        else:
            c = epoch_census(run.rows(e, ids[order]), y[order], margin=margin, metric=metric, anchors=anchors,
                             overwrite=True)
            out[e] = (c.share_easy, c.share_semihard, c.share_hard, c.sampled)
        partial({e: out[e]})
    return out


def examples_job(x: np.ndarray, labels: np.ndarray, ids: np.ndarray, category: str, margin: float, metric: str,
                 class_id: int | None, sort: str, n: int, *, progress, partial, is_cancelled):
    """Example triplets of one category (global sample ids), hardest or easiest first, optionally of one class."""
    from trainer.analysis.triplet_examples import TripletExamples, triplet_examples

    progress(0.1, f"finding {CATEGORY_TITLES[category].lower()} triplets")
    ex = triplet_examples(x, labels, category, margin=margin, metric=metric, n=n,
                          classes=None if class_id is None else [class_id], sort=sort, max_anchors=2048,
                          max_per_anchor=3)
    return TripletExamples(ids[ex.anchor], ids[ex.positive], ids[ex.negative], ex.d_ap, ex.d_an)
