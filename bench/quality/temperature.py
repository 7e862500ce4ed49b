"""The temperature of normalized softmax, swept with the sweep command on the open-set tasks.

For each T, ``main.py sweep TASK/train --test-dir TASK/test --losses normalized_softmax --temperature T`` (the
recipe for everything else, the benchmark's backbone, image size and epochs), and a table of held-out MAP@R and
Recall@1 (= P@1) per T beside the survey's figures (pretrained network on CUB-200, Recall@1).

    python -m bench.quality.temperature --root ~/.cache/ee-quality [--tasks photos] [--seeds 1] [--epochs 4]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.quality.tasks import TASKS, ensure_task

TEMPERATURES = (0.005, 0.01, 0.03, 0.05, 0.1, 0.5, 1.0)
SURVEY_RECALL_AT_1 = {0.005: 19.3, 0.01: 38.8, 0.03: 57.0, 0.05: 61.3, 0.1: 61.6, 0.5: 54.8, 1.0: 50.5}
ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    from trainer.store import RunReader
    from trainer.train.sweep import run_name

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--temperatures", default=",".join(str(t) for t in TEMPERATURES))
    a = p.parse_args(argv)
    temps = [float(t) for t in a.temperatures.split(",")]
    rows: dict[tuple[str, float], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task_name in [t for t in a.tasks.split(",") if t]:
            task = ensure_task(a.root, task_name)
            for t in temps:
                out = Path(tmp) / f"{task_name}-T{t:g}"
                cmd = [sys.executable, str(ROOT / "main.py"), "sweep", str(task / "train"), "--test-dir",
                       str(task / "test"), "--losses", "normalized_softmax", "--temperature", str(t), "--seeds",
                       str(a.seeds), "--epochs", str(a.epochs), "--backbone", a.backbone, "--no-pretrained",
                       "--image-size", str(a.image_size), "--workers", "0", "--quiet", "--out", str(out)]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                maps, p1s = [], []
                for seed in range(a.seeds):
                    m = RunReader(out / run_name("normalized_softmax", seed))
                    last = m.load_epoch(m.epochs[-1]).metrics
                    maps.append(last["heldout/mean_average_precision_at_r"])
                    p1s.append(last["heldout/precision_at_1"])
                rows[(task_name, t)] = (statistics.mean(maps), statistics.mean(p1s))
                print(f"{task_name} T={t:g}: MAP@R {rows[(task_name, t)][0]:.3f}, Recall@1 {rows[(task_name, t)][1]:.3f}",
                      flush=True)
    tasks = sorted({k[0] for k in rows})
    print("\n| T | " + " | ".join(f"{t} MAP@R | {t} R@1" for t in tasks) + " | survey R@1 (CUB-200, pretrained) |")
    print("|---|" + "---|---|" * len(tasks) + "---|")
    for t in temps:
        cells = " | ".join(f"{rows[(k, t)][0]:.3f} | {rows[(k, t)][1]:.3f}" for k in tasks)
        print(f"| {t:g} | {cells} | {SURVEY_RECALL_AT_1.get(t, '-')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
