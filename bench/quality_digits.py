"""Quality check on the demo digits: classes 0-4 train, 5-9 held out.

Trains the default CPU recipe (the "Quick look (CPU)" preset) and, with --all-losses, every loss for a short run,
and prints held-out MAP@R / P@1 of the untrained network (epoch 0) against the trained one.

    python -m bench.quality_digits [--epochs 10] [--all-losses] [--loss-epochs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from trainer import events as ev
from trainer.config import PRESETS, TrainConfig
from trainer.data.demo import ensure_demo_folder
from trainer.train.engine import Trainer
from trainer.model.losses import LOSSES
from trainer.store import RunReader


def train(cfg: TrainConfig, out: Path) -> tuple[dict, dict, float]:
    failed = []
    t0 = time.perf_counter()
    Trainer(cfg, out, emit=lambda e: failed.append(e) if isinstance(e, ev.Failed) else None).run()
    if failed:
        raise RuntimeError(failed[0].message + "\n" + failed[0].detail)
    r = RunReader(out)
    return r.load_epoch(0).metrics, r.load_epoch(r.epochs[-1]).metrics, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--all-losses", action="store_true")
    p.add_argument("--loss-epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loss-batches", type=int, default=None, help="batches per epoch in the all-losses runs")
    p.add_argument("--skip-default", action="store_true", help="only the all-losses table")
    p.add_argument("--loss-dim", type=int, default=64,
                   help="embedding dimension in the all-losses short runs (default 64; the preset uses 128, which "
                        "pays off over ten epochs but leaves some classifier losses behind after 25 batches)")
    p.add_argument("--loss-augment", action=argparse.BooleanOptionalAction, default=False,
                   help="augment in the all-losses short runs (default: off; augmentation pays off over many "
                        "epochs and slows the first batches, which is all a short run has)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = ensure_demo_folder()
    base = TrainConfig().replace(**PRESETS["Quick look (CPU)"]).replace(**{
        "data.data_dir": str(data), "data.holdout_classes": tuple("56789"), "optim.epochs": args.epochs,
        "device": "cpu", "amp": "off"})
    key, p1 = "heldout/mean_average_precision_at_r", "heldout/precision_at_1"
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_default:
            before, after, secs = train(base, Path(tmp) / "default")
            print(f"default recipe ({base.model.backbone}, {base.loss.name} + {base.loss.miner}, {args.epochs} epochs, "
                  f"{secs:.0f} s): held-out MAP@R {before[key]:.3f} -> {after[key]:.3f}, P@1 {before[p1]:.3f} -> "
                  f"{after[p1]:.3f}, AUC {before['heldout/auc']:.3f} -> {after['heldout/auc']:.3f}")
            r = RunReader(Path(tmp) / "default")
            curve = [r.load_epoch(e).metrics[key] for e in r.epochs]
            best = max(range(len(curve)), key=curve.__getitem__)
            print("  held-out MAP@R per epoch: " + " -> ".join(f"{v:.3f}" for v in curve)
                  + f" (best: epoch {best}, {curve[best]:.3f}, {100 * (curve[best] / curve[0] - 1):+.0f} %)",
                  flush=True)
        if args.all_losses:
            print(f"\n| loss | miner | MAP@R epoch 0 | MAP@R epoch {args.loss_epochs} | P@1 | seconds |")
            print("|---|---|---|---|---|---|")
            for name, spec in LOSSES.items():
                cfg = base.replace(**{"loss.name": name, "loss.miner": spec.default_miner, "loss.params": {},
                                      "optim.epochs": args.loss_epochs, "data.augment": args.loss_augment,
                                      "model.embedding_dim": args.loss_dim,
                                      "optim.batches_per_epoch": args.loss_batches})
                try:
                    b, a, s = train(cfg, Path(tmp) / name)
                    mark = "" if a[key] > b[key] else " (no gain)"
                    print(f"| {name} | {spec.default_miner} | {b[key]:.3f} | {a[key]:.3f}{mark} | {a[p1]:.3f} | "
                          f"{s:.0f} |", flush=True)
                except RuntimeError as exc:
                    print(f"| {name} | {spec.default_miner} | failed: {str(exc).splitlines()[0]} | | | |", flush=True)


if __name__ == "__main__":
    main()
