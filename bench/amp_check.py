"""Mixed precision gives the same training: fp16 and bf16 autocast against fp32, same seed, same steps.

Trains the same small run (a synthetic class folder, small CNN or --backbone, a few epochs) in fp32 and under each
autocast dtype, and checks that every loss stays finite and that the held-out MAP@R after the same steps is within
--tolerance of fp32's. Exit status 1 when a check fails (bench/gpu_check.sh runs it on CUDA).

    python -m bench.amp_check [--device cuda] [--dtypes fp16,bf16] [--epochs 3] [--tolerance 0.05]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from trainer import events as ev
from trainer.config import TrainConfig
from trainer.store import RunReader


def folder(root: Path, n_classes: int = 24, per_class: int = 16, size: int = 40) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    shared = rng.integers(60, 200, size=(5, 5, 3))  # classes differ a little, images a lot: MAP@R far from 1
    for c in range(n_classes):
        d = root / f"c{c:02d}"
        d.mkdir(parents=True)
        base = shared + rng.normal(0, 18, size=(5, 5, 3))
        for i in range(per_class):
            img = np.kron(base, np.ones((size // 5, size // 5, 1))) + rng.normal(0, 70, size=(size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


def train(data: Path, out: Path, *, device: str, amp: str, epochs: int, backbone: str) -> tuple[list[float], float]:
    from trainer.train.engine import Trainer

    cfg = TrainConfig().replace(**{
        "data.data_dir": str(data), "data.image_size": 32, "data.augment": False, "data.batch_classes": 4,
        "data.batch_per_class": 4, "data.num_workers": 0, "data.holdout_fraction": 0.34,
        "model.backbone": backbone, "model.pretrained": False, "model.embedding_dim": 32, "optim.epochs": epochs,
        "optim.batches_per_epoch": 8, "optim.lr": 1e-3, "loss.name": "normalized_softmax",
        "loss.miner": "none", "device": device, "amp": amp, "seed": 5})
    losses: list[float] = []
    failed: list[str] = []

    def emit(e) -> None:
        if isinstance(e, ev.BatchDone):
            losses.append(float(e.loss))
        elif isinstance(e, ev.Failed):
            failed.append(e.message)

    Trainer(cfg, out, emit=emit).run()
    if failed:
        raise SystemExit(f"{amp}: training failed: {failed[0]}")
    history = RunReader(out).metrics_history()
    return losses, float(history["heldout/mean_average_precision_at_r"][-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", default="fp16,bf16")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--tolerance", type=float, default=0.05, help="largest |MAP@R - fp32's| accepted")
    a = p.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        data = folder(Path(tmp) / "data")
        base_losses, base = train(data, Path(tmp) / "fp32", device=a.device, amp="off", epochs=a.epochs,
                                  backbone=a.backbone)
        print(f"{a.device} fp32: held-out MAP@R {base:.4f}, last loss {base_losses[-1]:.4f}")
        for dtype in [d.strip() for d in a.dtypes.split(",") if d.strip()]:
            losses, value = train(data, Path(tmp) / dtype, device=a.device, amp=dtype, epochs=a.epochs,
                                  backbone=a.backbone)
            finite = all(math.isfinite(v) for v in losses)
            close = abs(value - base) <= a.tolerance
            ok &= finite and close
            print(f"{a.device} {dtype}: held-out MAP@R {value:.4f} (fp32 {base:.4f}, difference {value - base:+.4f}, "
                  f"tolerance {a.tolerance}); losses finite: {finite} -> {'ok' if finite and close else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
