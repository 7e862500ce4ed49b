"""Open-set quality: the app's defaults (and presets) against a plain PyTorch + PML script, side by side.

For each task of :mod:`bench.quality.tasks` and each seed, trains

- ``defaults``: ``main.py train TASK/train --test-dir TASK/test`` with only the backbone, image size, epochs and
  seed given (every other setting is the app's default recipe);
- ``plain``: :mod:`bench.quality.plain`, the script a practitioner writes (same backbone, image size, epochs);
- each ``--presets`` id as a user who picks it gets it: the preset's own backbone and image size, from random
  weights, with the task's epochs and the seed on top;

and prints held-out MAP@R and P@1 as mean +- standard deviation over the seeds, and the ratio of each variant's
mean MAP@R to the plain script's.

    python -m bench.quality.compare --root ~/.cache/ee-quality [--tasks glyphs,icons,photos] [--seeds 3]
        [--epochs E] [--image-size 48] [--backbone resnet18] [--presets quick-cpu] [--set KEY=VALUE ...]

``--set`` passes extra CLI options to the defaults variant (``--set lr=3e-4``) for experiments; a result with
``--set`` is not the defaults' result, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.quality import plain
from bench.quality.tasks import TASKS, describe, ensure_task

MAP, P1 = "heldout/mean_average_precision_at_r", "heldout/precision_at_1"
# the budget of each task: icons have ~9 images per class, and neither the app nor the plain script learns
# anything that carries to unseen icon names in 4 epochs (both end below the untrained network)
TASK_EPOCHS = {"glyphs": 4, "photos": 4, "icons": 10}


def run_app(task: Path, out: Path, *, backbone: str | None, image_size: int | None, epochs: int, seed: int,
            extra: list[str]) -> dict[str, float]:
    """One CLI-default training run, in process; the held-out metrics of every epoch. ``backbone`` and
    ``image_size`` None: the preset's (or the recipe's) own."""
    import main as cli
    from trainer import events as ev
    from trainer.train.engine import Trainer
    from trainer.store import RunReader

    argv = [str(task / "train"), "--out", str(out), "--test-dir", str(task / "test"), "--no-pretrained",
            "--epochs", str(epochs), "--seed", str(seed), "--workers", "0", *extra]
    if backbone is not None:
        argv += ["--backbone", backbone]
    if image_size is not None:
        argv += ["--image-size", str(image_size)]
    args = cli._train_parser().parse_args(argv)
    cfg = cli._config_from_args(args)
    failed: list = []
    Trainer(cfg, out, emit=lambda e: failed.append(e) if isinstance(e, ev.Failed) else None).run()
    if failed:
        raise RuntimeError(failed[0].message + "\n" + failed[0].detail)
    r = RunReader(out)
    curve = [r.load_epoch(e).metrics for e in r.epochs]
    used = r.config
    return {"map_at_r": curve[-1][MAP], "p_at_1": curve[-1][P1], "untrained_map_at_r": curve[0][MAP],
            "curve": [m[MAP] for m in curve],
            "setup": f"{used['model']['backbone']} {used['data']['image_size']} px, {used['loss']['name']}, "
                     f"lr {used['optim']['lr']:g}"}


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="where the task folders are (built on first use)")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, help=f"epochs of every task (default: per task, {TASK_EPOCHS})")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--presets", default="", help="comma-separated preset ids to run as well")
    p.add_argument("--variants", default="defaults,plain", help="which of defaults, plain to run")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                   help="extra train option for the defaults variant, e.g. --set lr=3e-4 (experiments)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write every result to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    extra: list[str] = []
    for item in a.set:
        k, _, v = item.partition("=")
        extra += [f"--{k}"] + ([v] if v else [])
    variants = [v for v in a.variants.split(",") if v] + [f"preset:{x}" for x in a.presets.split(",") if x]
    results: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task_name in [t for t in a.tasks.split(",") if t]:
            task = ensure_task(a.root, task_name)
            epochs = a.epochs or TASK_EPOCHS.get(task_name, 4)
            print(f"# {task_name}: {describe(task)}; {a.backbone} from scratch, {a.image_size} px, {epochs} epochs",
                  flush=True)
            results[task_name] = {}
            for variant in variants:
                for seed in range(a.seeds):
                    t0 = time.perf_counter()
                    if variant == "plain":
                        r = plain.run(str(task), epochs, seed, a.image_size, a.backbone)
                    else:
                        preset = variant != "defaults"
                        opts = list(extra) if not preset else ["--preset", variant.split(":", 1)[1]]
                        out = Path(tmp) / f"{task_name}-{variant.replace(':', '_')}-{seed}"
                        # a preset runs as a user who picks it gets it: its own backbone and image size, the
                        # task's epochs, from random weights
                        r = run_app(task, out, backbone=None if preset else a.backbone,
                                    image_size=None if preset else a.image_size, epochs=epochs, seed=seed,
                                    extra=opts)
                    r["seconds"] = time.perf_counter() - t0
                    results[task_name].setdefault(variant, []).append(r)
                    curve = " curve " + " ".join(f"{x:.3f}" for x in r["curve"]) if "curve" in r else ""
                    setup = f" [{r['setup']}]" if "setup" in r else ""
                    print(f"  {variant} seed {seed}{setup}: MAP@R {r['map_at_r']:.3f} P@1 {r['p_at_1']:.3f} "
                          f"({r['seconds']:.0f} s){curve}", flush=True)
    label = "defaults" + (f" (with {' '.join(extra)})" if extra else "")
    print(f"\n| task | variant | held-out MAP@R | P@1 | MAP@R / plain |")
    print("|---|---|---|---|---|")
    for task_name, by_variant in results.items():
        base = statistics.mean(r["map_at_r"] for r in by_variant["plain"]) if "plain" in by_variant else None
        for variant, rs in by_variant.items():
            maps = [r["map_at_r"] for r in rs]
            ratio = f"{statistics.mean(maps) / base:.2f}x" if base else "-"
            name = label if variant == "defaults" else variant
            print(f"| {task_name} | {name} | {_fmt(maps)} | {_fmt([r['p_at_1'] for r in rs])} | {ratio} |")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
