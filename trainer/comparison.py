"""Runs side by side (``main.py compare``, File > Compare runs): each run's held-out MAP@R at its best and last epoch
with 95 % intervals over held-out classes, the paired difference to the first run, the settings that differ.
The statistics are in :mod:`trainer.analysis.compare`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.analysis.compare import class_bootstrap, interval, per_query_map_at_r
from trainer.config import flat_config
from trainer.store import SPLIT_HELDOUT, RunReader

KEY = "heldout/mean_average_precision_at_r"


@dataclass
class RunEntry:
    """One compared run."""

    name: str
    run: RunReader
    history: dict = field(default_factory=dict)  # epoch -> held-out MAP@R (the manifest's figure)
    best_epoch: int = -1
    last_epoch: int = -1


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders from the arguments: a run itself, or a sweep folder (sweep.json names its runs)."""
    out: list[Path] = []
    for p in map(Path, paths):
        sweep = p / "sweep.json"
        if sweep.is_file() and not (p / "manifest.json").is_file():
            try:
                names = [n for runs in json.loads(sweep.read_text(encoding="utf-8"))["runs"].values() for n in runs]
            except (OSError, ValueError, KeyError, AttributeError) as exc:
                raise ValueError(f"{sweep} cannot be read as a sweep summary: {exc}") from None
            out += [p / n for n in names if (p / n / "manifest.json").is_file()]
        else:
            out.append(p)
    return out


def load_entries(paths: list[str | Path]) -> list[RunEntry]:
    entries = []
    for p in expand_runs(paths):
        run = RunReader(p)
        table = run.metrics_history()
        values = table.get(KEY, np.full(len(table["epoch"]), np.nan))
        history = {int(e): float(v) for e, v in zip(table["epoch"], values) if math.isfinite(v)}
        e = RunEntry(p.name, run, history)
        if history:
            e.best_epoch = max(history, key=lambda k: (history[k], -k))
            e.last_epoch = max(history)
        entries.append(e)
    names = [e.name for e in entries]
    for e in entries:  # two runs of the same name (sweeps of two folders): told apart by their parent
        if names.count(e.name) > 1:
            e.name = f"{Path(e.run.run_dir).parent.name}/{e.name}"
    return entries


def _heldout(run: RunReader) -> tuple[np.ndarray, np.ndarray]:
    ids = np.flatnonzero(np.asarray(run.samples.split) == SPLIT_HELDOUT).astype(np.int64)
    return ids, np.asarray(run.samples.labels)[ids]


def same_samples(a: RunReader, b: RunReader) -> bool:
    """True when two runs hold the same images with the same labels and split (paired comparisons apply)."""
    sa, sb = a.samples, b.samples
    return (list(sa.paths) == list(sb.paths) and np.array_equal(sa.labels, sb.labels)
            and np.array_equal(sa.split, sb.split))


def compare(entries: list[RunEntry], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The comparison table: per run, MAP@R at its best and last epoch with 95 % class-bootstrap intervals;
    against the first run, the difference at the best epochs with its paired interval when the samples match."""
    rows = []
    base_q = base_y = None
    for i, e in enumerate(entries):
        row = {"name": e.name, "run": str(e.run.run_dir), "epochs": len(e.history), "best_epoch": e.best_epoch,
               "last_epoch": e.last_epoch}
        ids, y = _heldout(e.run)
        for which, epoch in (("best", e.best_epoch), ("last", e.last_epoch)):
            if epoch < 0 or len(ids) < 2:
                row[which] = None
                continue
            q = per_query_map_at_r(e.run.rows(epoch, ids), y, e.run.metric)
            boot = class_bootstrap(q, y, n_boot=n_boot, seed=seed)[:, 0]
            lo, hi = interval(boot)
            row[which] = {"epoch": epoch, "map_at_r": float(np.nanmean(q)), "ci95": [lo, hi]}
            if which == "best":
                row["_q"], row["_y"] = q, y
                row["roc"] = _roc(e.run.rows(epoch, ids), y, e.run.metric)
        rows.append(row)
        if i == 0 and row.get("best"):
            base_q, base_y = row["_q"], row["_y"]
    first = entries[0] if entries else None
    for row, e in zip(rows, entries):
        q = row.pop("_q", None)
        row.pop("_y", None)
        row["vs_first"] = None
        if e is first or q is None or base_q is None or not same_samples(first.run, e.run):
            continue
        boot = class_bootstrap(q, base_y, n_boot=n_boot, seed=seed, others=[base_q])
        diff = boot[:, 0] - boot[:, 1]
        lo, hi = interval(diff)
        row["vs_first"] = {"difference": float(np.nanmean(q) - np.nanmean(base_q)), "ci95": [lo, hi],
                           "real": bool(lo > 0 or hi < 0)}
    for row in rows:  # do the intervals of the best epochs overlap the first run's?
        b0, b = (rows[0].get("best") if rows else None), row.get("best")
        row["overlaps_first"] = None if not (b0 and b) else bool(b["ci95"][0] <= b0["ci95"][1]
                                                                 and b0["ci95"][0] <= b["ci95"][1])
    return {"metric": KEY, "n_boot": n_boot, "runs": rows, "config_diff": config_diff([e.run for e in entries])}


def _roc(x: np.ndarray, y: np.ndarray, metric: str, points: int = 200) -> dict | None:
    """The held-out ROC of one epoch (all pairs), thinned to about ``points`` (FAR, TAR) pairs for drawing."""
    from trainer.analysis import verification

    h = verification.pair_histograms(x, y, metric=metric)
    if h.n_genuine == 0 or h.n_impostor == 0:
        return None
    roc = verification.roc_from_histograms(h)
    keep = np.unique(np.linspace(0, len(roc.far) - 1, min(points, len(roc.far))).round().astype(np.int64))
    return {"far": roc.far[keep].tolist(), "tar": roc.tar[keep].tolist(), "auc": float(roc.auc),
            "eer": float(roc.eer)}


def image_changes(a: RunEntry, b: RunEntry, *, k: int = 10) -> dict:
    """Image by image between two runs on the same samples, at their best epochs, on the held-out images: each
    image's k nearest held-out neighbours in each run, how many are new, and the rank of its first neighbour of its
    own class (:func:`trainer.analysis.compare.neighbour_changes`). ``ids`` are sample ids; neighbours are too."""
    from trainer.analysis.compare import neighbour_changes

    if not same_samples(a.run, b.run):
        raise ValueError(f"{a.name} and {b.name} hold different samples: an image-by-image comparison needs the same "
                         "images with the same labels and split")
    if a.best_epoch < 0 or b.best_epoch < 0:
        raise ValueError("both runs need an evaluated epoch")
    ids, y = _heldout(a.run)
    if len(ids) < 2:
        raise ValueError(f"{a.name} has {len(ids)} held-out image(s): nothing to compare image by image")
    xa, xb = a.run.rows(a.best_epoch, ids), b.run.rows(b.best_epoch, ids)
    ch = neighbour_changes(xa, xb, y, a.run.metric, k=k)
    to_ids = lambda nbr: np.where(nbr >= 0, ids[np.clip(nbr, 0, None)], -1)
    return {"ids": ids, "labels": y, "epochs": (a.best_epoch, b.best_epoch), "names": (a.name, b.name),
            "nbr_a": to_ids(ch["nbr_a"]), "nbr_b": to_ids(ch["nbr_b"]), "gained": ch["gained"],
            "rank_a": ch["rank_a"], "rank_b": ch["rank_b"], "k": ch["k"], "xa": xa, "xb": xb,
            "metric": a.run.metric}


def config_diff(runs: list[RunReader]) -> dict[str, list]:
    """The configuration keys whose values differ between the runs, with each run's value (data folders aside:
    the path of the same data differs by where it was mounted)."""
    flats = [flat_config(r.config) for r in runs]
    keys = sorted(set().union(*flats)) if flats else []
    skip = {"auto", "version"}
    return {k: [f.get(k) for f in flats] for k in keys
            if k not in skip and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1}


def format_table(result: dict) -> list[str]:
    """The comparison as lines of text (the command's output)."""
    def cell(v) -> str:
        if not v:
            return "-"
        return f"{v['map_at_r']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] @{v['epoch']}"

    rows = result["runs"]
    width = max([len(r["name"]) for r in rows] + [4])
    lines = [f"held-out MAP@R, 95 % interval over held-out classes ({result['n_boot']} resamples), @epoch",
             f"{'run':<{width}}  {'best':<28}  {'last':<28}  vs the first run (best epochs)"]
    for r in rows:
        vs = r.get("vs_first")
        if vs:
            verdict = "a real difference" if vs["real"] else "within noise"
            vs_text = f"{vs['difference']:+.3f} [{vs['ci95'][0]:+.3f}, {vs['ci95'][1]:+.3f}] {verdict}"
        elif r is rows[0]:
            vs_text = "(reference)"
        else:
            vs_text = "not paired (other samples)" + ("; intervals overlap" if r.get("overlaps_first") else
                                                     "; intervals do not overlap" if r.get("overlaps_first")
                                                     is False else "")
        lines.append(f"{r['name']:<{width}}  {cell(r.get('best')):<28}  {cell(r.get('last')):<28}  {vs_text}")
    aucs = [f"{r['name']} {r['roc']['auc']:.3f}" for r in rows if r.get("roc")]
    if aucs:
        lines.append("held-out ROC AUC at the best epoch (all pairs): " + ", ".join(aucs))
    diff = result["config_diff"]
    if diff:
        lines.append("settings that differ: " + "; ".join(
            f"{k} = " + " / ".join(json.dumps(v, default=str) for v in vals) for k, vals in diff.items()
            if not k.startswith("data.data_dir") and not k.startswith("data.test_dir")))
    return lines


def rank_change_order(ch: dict) -> np.ndarray:
    """Rows of :func:`image_changes` ordered by how much the first correct neighbour moved, worse in B first (a rank
    of 0, none among the k, counts as k + 1); ties by the number of neighbours that changed."""
    k1 = ch["k"] + 1
    ra = np.where(ch["rank_a"] > 0, ch["rank_a"], k1)
    rb = np.where(ch["rank_b"] > 0, ch["rank_b"], k1)
    return np.lexsort((-ch["gained"], -(rb - ra)))


def format_image_changes(ch: dict, paths, classes, n: int = 10) -> list[str]:
    """The images that lost and gained most from run A to run B (the command's ``--images N``)."""
    k1 = ch["k"] + 1
    ra = np.where(ch["rank_a"] > 0, ch["rank_a"], k1)
    rb = np.where(ch["rank_b"] > 0, ch["rank_b"], k1)
    order = rank_change_order(ch)
    a, b = ch["names"]

    def rank(v: int) -> str:
        return f">{ch['k']}" if v == k1 else str(int(v))

    def line(i: int) -> str:
        sid = int(ch["ids"][i])
        return (f"  {sid:>7}  {classes[int(ch['labels'][i])]:<16.16}  first correct neighbour {rank(ra[i]):>3} -> "
                f"{rank(rb[i]):<3}  {int(ch['gained'][i])} of {ch['k']} neighbours new  {paths[sid]}")

    worse = [int(i) for i in order if rb[i] > ra[i]][:n]
    better = [int(i) for i in order[::-1] if rb[i] < ra[i]][:n]
    out = [f"image by image, {a} (epoch {ch['epochs'][0]}) -> {b} (epoch {ch['epochs'][1]}), {len(ch['ids'])} held-out "
           f"images, {ch['k']} neighbours: {int((rb < ra).sum())} better, {int((rb > ra).sum())} worse, "
           f"{int((rb == ra).sum())} the same",
           f"worse in {b}:"] + [line(i) for i in worse] + [f"better in {b}:"] + [line(i) for i in better]
    return out
