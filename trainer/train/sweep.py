"""A fair loss comparison: every loss with its recipe, on one split and one budget, over several seeds.

As the Metric Learning Reality Check asks: the same data split, backbone, image size, epochs and batches for
every loss, each loss with its own recipe (its usual miner and literature parameters; learning rates and the
rest from :mod:`trainer.train.recipe`), several seeds, and the held-out MAP@R as a mean with a 95 % interval (Student's
t over the seeds). The result is a folder of ordinary runs, one per loss and seed (``LOSS-sSEED/``), which the app
opens one by one, plus ``sweep.json``: what was swept and the summary.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer.config import TrainConfig

SWEEP_FILE = "sweep.json"
SWEEP_FORMAT = "embedding-explorer-sweep"
METRIC = "heldout/mean_average_precision_at_r"


@dataclass(frozen=True)
class LossSummary:
    loss: str
    values: tuple[float, ...]  # held-out MAP@R of the last epoch, one per finished seed
    untrained: tuple[float, ...]  # the same at epoch 0
    mean: float
    low: float  # 95 % interval
    high: float


def interval95(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 95 % Student-t interval; (v, v, v) for one value."""
    from scipy import stats

    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan, math.nan
    m = statistics.fmean(vals)
    if len(vals) < 2:
        return m, m, m
    half = float(stats.t.ppf(0.975, len(vals) - 1)) * statistics.stdev(vals) / math.sqrt(len(vals))
    return m, m - half, m + half


def run_name(loss: str, seed: int) -> str:
    return f"{loss}-s{seed}"


def sweep_config(base: TrainConfig, loss: str, seed: int) -> TrainConfig:
    """`base` with the loss and the seed set; the loss's miner is left to the recipe (its usual one), and of the
    base's loss parameters those that are this loss's own are kept (``--temperature 0.1`` for a sweep of
    temperatures), the others dropped."""
    from trainer.model.losses import LOSSES

    own = {p.name for p in LOSSES[loss].params}
    params = {k: v for k, v in base.loss.params.items() if k in own}
    auto = tuple(k for k in base.auto if k not in ("loss.name", "loss.params"))
    auto = auto + (() if "loss.miner" in auto else ("loss.miner",))
    return base.replace(**{"loss.name": loss, "loss.params": params, "seed": seed, "auto": auto})


def summarize(out: Path, losses: Sequence[str], seeds: int) -> list[LossSummary]:
    """Read every finished run of the sweep under `out`."""
    from trainer.store import RunError, RunReader

    summary = []
    for loss in losses:
        vals, untrained = [], []
        for seed in range(seeds):
            try:
                r = RunReader(out / run_name(loss, seed))
                if not r.epochs or r.epochs[-1] < 1:
                    continue
                vals.append(float(r.load_epoch(r.epochs[-1]).metrics[METRIC]))
                untrained.append(float(r.load_epoch(r.epochs[0]).metrics[METRIC]))
            except (RunError, OSError, KeyError, ValueError):
                continue
        m, lo, hi = interval95(vals)
        summary.append(LossSummary(loss, tuple(vals), tuple(untrained), m, lo, hi))
    return summary


def write_summary(out: Path, base: TrainConfig, losses: Sequence[str], seeds: int,
                  summary: Sequence[LossSummary]) -> Path:
    doc = {
        "format": SWEEP_FORMAT,
        "version": 1,
        "metric": METRIC,
        "losses": list(losses),
        "seeds": seeds,
        "config": base.to_dict(),
        "runs": {s.loss: [run_name(s.loss, i) for i in range(seeds)] for s in summary},
        "summary": [
            {"loss": s.loss, "values": list(s.values), "untrained": list(s.untrained),
             "mean": _finite(s.mean),
             "ci95": [_finite(s.low), _finite(s.high)] if len(s.values) > 1 else None}
            for s in summary
        ],
    }
    path = out / SWEEP_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
    os.replace(tmp, path)
    return path


def _finite(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def run_sweep(base: TrainConfig, losses: Sequence[str], seeds: int, out: Path, *,
              emit_for: Callable[[str, int], Callable] | None = None,
              stop: threading.Event | None = None) -> list[LossSummary]:
    """Train every (loss, seed) that has no finished run under `out` yet; write ``sweep.json`` after each."""
    from trainer.store import RunReader, is_run_dir
    from trainer.train.engine import Trainer

    out.mkdir(parents=True, exist_ok=True)
    for loss in losses:
        for seed in range(seeds):
            if stop is not None and stop.is_set():
                break
            run_dir = out / run_name(loss, seed)
            cfg = sweep_config(base, loss, seed)
            resume = is_run_dir(run_dir)
            if resume and RunReader(run_dir).epochs[-1:] == [cfg.optim.epochs]:
                continue  # finished in an earlier call: a stopped sweep continues where it was
            emit = emit_for(loss, seed) if emit_for else (lambda e: None)
            Trainer(cfg, run_dir, emit=emit, resume=resume, stop=stop).run()
            write_summary(out, base, losses, seeds, summarize(out, losses, seeds))
    summary = summarize(out, losses, seeds)
    write_summary(out, base, losses, seeds, summary)
    return summary


def format_table(summary: Sequence[LossSummary]) -> list[str]:
    lines = ["| loss | held-out MAP@R (mean) | 95 % interval | untrained | seeds |", "|---|---|---|---|---|"]
    for s in sorted(summary, key=lambda s: -s.mean if math.isfinite(s.mean) else math.inf):
        u = statistics.fmean(s.untrained) if s.untrained else math.nan
        ci = f"{s.low:.3f} - {s.high:.3f}" if len(s.values) > 1 else "-"
        lines.append(f"| {s.loss} | {s.mean:.3f} | {ci} | {u:.3f} | {len(s.values)} |")
    return lines
