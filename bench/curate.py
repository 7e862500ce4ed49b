"""The curation loop, measured: the demo digits with 10 % of the training labels flipped (seeded).

1. (a) the clean folder and (b) the noisy folder are trained with the command-line defaults;
2. the noisy run's training images are ranked by cleanlab on out-of-sample neighbour votes
   (trainer/analysis/label_issues.py): the share of flipped images among the top 10 % is printed (target >= 0.8);
3. (c) the noisy folder is trained again with the top-ranked 10 % excluded through an edits file.

It prints held-out MAP@R of (a), (b), (c) and the share of the (a)-(b) gap that (c) recovers.

    python -m bench.curate [--epochs 6] [--seed 0] [--flip 0.1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def train(data: Path, out: Path, epochs: int, seed: int, edits: Path | None = None) -> float:
    cmd = [sys.executable, str(ROOT / "main.py"), "train", str(data), "--out", str(out), "--epochs", str(epochs),
           "--seed", str(seed), "--quiet"]
    if edits is not None:
        cmd += ["--edits", str(edits)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    from trainer.store import RunReader

    history = RunReader(out).metrics_history()
    return float(history["heldout/mean_average_precision_at_r"][-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flip", type=float, default=0.1)
    a = p.parse_args()
    from trainer.analysis.label_issues import rank_label_issues
    from trainer.data.demo import ensure_demo_folder
    from trainer.data.edits import Edits
    from trainer.data.scan import scan_folder
    from trainer.data.split import class_disjoint_split
    from trainer.store import SPLIT_TRAIN, RunReader

    clean = ensure_demo_folder()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scan = scan_folder(clean)
        split = class_disjoint_split(np.asarray(scan.labels), scan.classes, holdout_fraction=0.5, seed=a.seed)
        train_classes = sorted({int(c) for c, s in zip(scan.labels, split) if s == SPLIT_TRAIN})
        train_rows = np.flatnonzero(split == SPLIT_TRAIN)
        rng = np.random.default_rng(a.seed)
        flipped = rng.choice(train_rows, size=int(round(a.flip * len(train_rows))), replace=False)
        noisy = tmp / "noisy"
        shutil.copytree(clean, noisy)
        moved: dict[str, str] = {}  # new relative path -> the true class
        for i in flipped:
            rel = Path(scan.paths[int(i)])
            true = int(scan.labels[int(i)])
            wrong = int(rng.choice([c for c in train_classes if c != true]))
            dst = Path(scan.classes[wrong]) / f"flipped_{rel.name}"
            (noisy / rel).rename(noisy / dst)
            moved[dst.as_posix()] = scan.classes[true]
        print(f"{len(flipped)} of {len(train_rows)} training images ({100 * a.flip:.0f} %) moved to a wrong class")
        got = {"clean": train(clean, tmp / "clean", a.epochs, a.seed), "noisy": train(noisy, tmp / "noisy-run",
                                                                                        a.epochs, a.seed)}
        run = RunReader(tmp / "noisy-run")
        ids = np.flatnonzero(np.asarray(run.samples.split) == SPLIT_TRAIN)
        x = run.rows(run.epochs[-1], ids)
        y = np.asarray(run.samples.labels)[ids]
        ranking = rank_label_issues(x, y, run.metric, k=10)
        top = ids[ranking["order"][: len(flipped)]]
        paths = [run.samples.paths[int(i)] for i in top]
        found = sum(p in moved for p in paths) / len(flipped)
        print(f"ranking ({ranking['method']}): {100 * found:.0f} % of the top {len(flipped)} are flipped images "
              f"(target >= 80 %)")
        edits = Edits(str(noisy))
        edits.exclude(paths, note="suspected mislabel (bench.curate)")
        edits_file = edits.save(tmp / "noisy-run.edits.json")
        got["noisy, suspects excluded"] = train(noisy, tmp / "excluded", a.epochs, a.seed, edits_file)
    gap = got["clean"] - got["noisy"]
    recovered = (got["noisy, suspects excluded"] - got["noisy"]) / gap if gap > 0 else float("nan")
    print(f"held-out MAP@R after {a.epochs} epochs (seed {a.seed}): " + ", ".join(f"{k} {v:.3f}" for k, v in got.items())
          + f"; the exclusion recovers {100 * recovered:.0f} % of the gap")
    print(json.dumps({"found_share": found, **got, "recovered_share": recovered}))


if __name__ == "__main__":
    main()
