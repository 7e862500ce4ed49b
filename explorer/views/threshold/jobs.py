"""The threshold view's background work (no Qt): exact pair histograms and ROC of an epoch, intervals, cross-validated rules, the nearest errors at a threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
import numpy as np
from trainer.analysis import retrieval
from trainer.analysis import verification
from trainer.store import SPLIT_HELDOUT
from trainer.analysis.thresholds import opis, per_class_rates, rates_ci_at_threshold, spread_summary, threshold_grid

N_NEAREST = 12  # false accepts / rejects shown nearest to the threshold
CV_FOLDS = 10
N_BOOT = 300


@dataclass
class RocData:
    """What the main job found for one (run, epoch): held-out embeddings, exact pair histograms, the ROC."""

    run_dir: Path
    epoch: int
    metric: str
    problem: str = ""  # why there is nothing to show (no held-out classes, ...); empty when fine
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # global sample ids of held-out rows
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # class index into run.classes
    embeddings: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    hist: verification.PairHistograms | None = None
    roc: verification.Roc | None = None
    step: float = 1e-4
    checkpoint: str | None = None
    seconds: float = 0.0
    pairs_note: str = ""  # which pairs were counted: all of them, or a class-stratified sample beyond EXACT_LIMIT
    # beyond EXACT_LIMIT: the rows (into embeddings) of a class-stratified image sample on which the 10-fold CV,
    # the bootstrap intervals and the errors at the threshold are computed (each is several passes over all pairs)
    analysis_rows: np.ndarray | None = None
    analysis_note: str = ""
    n_classes: int = 0  # held-out classes (counted in the job: np.unique of 5e5 labels is ~40 ms of GUI thread)


EXACT_LIMIT = 60_000  # held-out images up to which every pair is counted (1.8e9 pairs, about 15 s on 2 cores)
ANALYSIS_LIMIT = 20_000  # beyond EXACT_LIMIT, CV / intervals / nearest errors use a class-stratified image sample


ROC_DRAWN_POINTS = 2000  # the ROC drawn on the log FAR axis: at most twice this many points


def curve_points(far: np.ndarray, tar: np.ndarray, max_points: int = ROC_DRAWN_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The ROC points to draw on a log FAR axis: FAR > 0, repeats dropped, and beyond ``max_points`` the first point
    of each step of 1 / max_points of the log FAR range or of TAR, and the last (so at most 2 x max_points + 1;
    millions of sampled pairs gave a curve whose painting held the window ~0.2 s; the drawn shape is the same)."""
    far = np.asarray(far, np.float64)
    tar = np.asarray(tar, np.float64)
    keep = far > 0
    keep[1:] &= (np.diff(far) > 0) | (np.diff(tar) > 0)
    far, tar = far[keep], tar[keep]
    if len(far) <= max_points:
        return far, tar
    lf = np.log10(far)
    step = (lf[-1] - lf[0]) / max_points or 1.0
    cell = np.floor((lf - lf[0]) / step)
    level = np.floor(tar * max_points)
    first = np.r_[True, (np.diff(cell) != 0) | (np.diff(level) != 0)]
    first[-1] = True
    return far[first], tar[first]


def compute_roc(run, epoch: int, *, progress, partial, is_cancelled) -> RocData:
    """Read the held-out rows of ``epoch`` and build the exact pair histograms and ROC (runs in a worker)."""
    t0 = time.perf_counter()
    metric = run.metric
    out = RocData(run_dir=Path(run.run_dir), epoch=int(epoch), metric=metric)
    ckpt = run.checkpoint_path(epoch)
    out.checkpoint = str(ckpt) if ckpt is not None else None
    samples = run.samples
    ids = np.flatnonzero(np.asarray(samples.split) == SPLIT_HELDOUT).astype(np.int64)
    labels = np.asarray(samples.labels, dtype=np.int64)[ids]
    n_classes = len(np.unique(labels))
    if n_classes < 2:
        out.problem = (f"Run {run.run_dir} has {n_classes} held-out class(es) with {len(ids)} image(s): the threshold "
                       "studio needs at least two classes that were never trained on (set held-out classes in the "
                       "data settings).")
        return out
    progress(0.1, f"reading {len(ids):,} held-out embeddings of epoch {epoch}")
    ids, x = run.split_rows(epoch, SPLIT_HELDOUT)  # the same array as the Triplets tab's
    if is_cancelled():
        return out
    bins, hi, step = threshold_grid(x, metric)
    n_pairs = len(ids) * (len(ids) - 1) // 2
    if len(ids) <= EXACT_LIMIT:
        progress(0.3, f"counting all {n_pairs:,} pair distances")
        hist = verification.pair_histograms(x, labels, metric=metric, bins=bins,
                                  max_distance=hi if metric == "euclidean" else None)
        out.pairs_note = "all counted exactly"
    else:  # beyond the exact range (10^9+ pairs): a sample stratified by class, said in the title
        from trainer.analysis.pairs import sampled_pair_histograms, stratified_pair_sample

        progress(0.3, f"sampling pairs of {len(ids):,} images, stratified by class")
        sample = stratified_pair_sample(labels)
        hist = sampled_pair_histograms(x, labels, sample, metric=metric, bins=bins,
                                       max_distance=hi if metric == "euclidean" else None)
        out.pairs_note = sample.describe()
        from trainer.analysis.pairs import stratified_image_sample

        out.analysis_rows = stratified_image_sample(labels, ANALYSIS_LIMIT, seed=0)
        out.analysis_note = (f"intervals, the cross-validated threshold and the errors below come from all pairs of "
                             f"a class-stratified sample of {len(out.analysis_rows):,} of the {len(ids):,} images")
    if is_cancelled():
        return out
    out.ids, out.labels, out.embeddings, out.step = ids, labels, x, step
    out.n_classes = n_classes
    out.hist = hist
    if hist.n_genuine == 0:
        out.problem = ("No genuine pairs: every held-out class has a single image, so no pair of the same class "
                       "exists to accept.")
    progress(0.9, "ROC")
    out.roc = verification.roc_from_histograms(hist)
    out.seconds = time.perf_counter() - t0
    return out


def compute_extras(x: np.ndarray, labels: np.ndarray, metric: str, rows: np.ndarray | None = None, *, progress,
                   partial, is_cancelled) -> dict:
    """10-fold CV threshold (sent as a partial result first), OPIS (another partial), then class-bootstrap
    intervals of AUC/EER/TAR@FAR.

    ``rows``: compute on those images only (a stratified sample of a split too large for all its pairs)."""
    if rows is not None:
        x, labels = x[rows], labels[rows]
    progress(0.05, f"{CV_FOLDS}-fold cross-validated threshold")
    cv = verification.best_accuracy_threshold_cv(x, labels, metric=metric, folds=CV_FOLDS)
    partial({"cv": cv})
    if is_cancelled():
        return {"cv": cv}
    progress(0.3, "threshold consistency across classes (OPIS)")
    partial({"opis": opis(x, labels, metric=metric)})
    if is_cancelled():
        return {"cv": cv}
    progress(0.4, f"bootstrap intervals ({N_BOOT} class resamples)")
    boot = verification.bootstrap_ci(x, labels, metric=metric, n_boot=N_BOOT, far_levels=verification.FAR_LEVELS)
    return {"cv": cv, "boot": boot}


def compute_errors(x: np.ndarray, labels: np.ndarray, metric: str, threshold: float,
                   rows: np.ndarray | None = None, *, progress, partial, is_cancelled) -> dict:
    """Nearest false accepts / rejects, per-class error counts and bootstrap intervals of FAR/FRR at ``threshold``.

    ``rows``: on those images only; the pairs come back as indices into the full ``x``."""
    out: dict[str, Any] = {"threshold": threshold}
    back = np.arange(len(x)) if rows is None else np.asarray(rows, np.int64)
    if rows is not None:
        x, labels = x[rows], labels[rows]
    progress(0.05, "false accepts nearest the threshold")
    i, j, d = retrieval.nearest_pairs(x, labels, threshold, kind="false_accept", k=N_NEAREST, metric=metric)
    out["false_accept"] = (back[i], back[j], d)
    if is_cancelled():
        return out
    progress(0.25, "false rejects nearest the threshold")
    i, j, d = retrieval.nearest_pairs(x, labels, threshold, kind="false_reject", k=N_NEAREST, metric=metric)
    out["false_reject"] = (back[i], back[j], d)
    if is_cancelled():
        return out
    progress(0.45, "errors per class")
    out["classes"] = retrieval.class_error_counts(x, labels, threshold, metric=metric)
    if is_cancelled():
        return out
    progress(0.6, "FAR and FRR of each class")
    out["per_class"] = per_class_rates(x, labels, threshold, metric=metric)
    out["spread"] = spread_summary(out["per_class"])
    if is_cancelled():
        return out
    progress(0.7, "intervals of FAR and FRR at the threshold")
    out["rates_ci"] = rates_ci_at_threshold(x, labels, threshold, metric=metric, n_boot=N_BOOT)
    return out
