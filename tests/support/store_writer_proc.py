"""Subprocess for the SIGKILL test of trainer/store.py: writes synthetic epochs as fast as it can.

Usage: python store_writer_proc.py RUN_DIR SEED N D MAX_EPOCHS
With the environment variable ``EE_HOLD_IN`` = ``epoch`` or ``checkpoint``, the process stops inside that kind of
write (its temporary file written, before the rename) and prints ``holding E``, so the parent can kill it there.
Creates the run (or reopens it to resume), then writes epochs last_epoch+1 .. MAX_EPOCHS-1 whose content is
a deterministic function of (epoch, seed) (see :func:`synthetic_epoch`), so the parent can verify every
committed epoch after killing this process at a random moment. Prints ``imported`` once its imports are done,
``opened LAST`` after opening, ``committed E`` after each write_epoch returns.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repository root

import os  # noqa: E402
import time  # noqa: E402

from trainer import store  # noqa: E402
from trainer.store import RunWriter, SampleTable, is_run_dir  # noqa: E402


def synthetic_samples(n: int, n_classes: int = 7) -> SampleTable:
    """A sample table of n fake files (one with a non-UTF-8 byte) spread over n_classes classes."""
    paths = [f"c{i % n_classes}/img_{i:05d}.png" for i in range(n)]
    paths[0] = "c0/caf\udce9.png"  # the byte 0xE9 alone: not UTF-8
    return SampleTable(paths=paths, labels=np.arange(n, dtype=np.int64) % n_classes,
                       split=(np.arange(n) % 3 == 0).astype(np.int8), roots=["/data/root"],
                       root_index=np.zeros(n, dtype=np.int16))


def synthetic_epoch(epoch: int, seed: int, n: int, d: int) -> tuple[np.ndarray, dict[str, float], dict[str, np.ndarray]]:
    """Embeddings, metrics and telemetry of one synthetic epoch: a pure function of its arguments."""
    rng = np.random.default_rng([seed, epoch])
    emb = rng.standard_normal((n, d), dtype=np.float32)
    metrics = {"precision_at_1": float(rng.random()), "epoch_x2": 2.0 * epoch}
    b = 5 + epoch % 4
    telemetry = {"loss": rng.random(b).astype(np.float32), "n_tuples": rng.integers(0, 100, b)}
    return emb, metrics, telemetry


def main(argv: list[str]) -> None:
    run_dir, seed, n, d, max_epochs = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    print("imported", flush=True)
    if is_run_dir(run_dir):
        w = RunWriter.open(run_dir)
    else:
        w = RunWriter.create(run_dir, config={"seed": seed, "n": n, "d": d}, classes=[f"c{i}" for i in range(7)],
                             samples=synthetic_samples(n), overwrite=True)
    print(f"opened {w.last_epoch}", flush=True)
    hold = os.environ.get("EE_HOLD_IN")
    replace = store._replace

    def holding_replace(tmp: Path, final: Path) -> None:
        if hold and final.parent.name == {"epoch": "epochs", "checkpoint": "checkpoints"}[hold]:
            print(f"holding {final.name}", flush=True)
            time.sleep(60)  # the parent kills us here
        replace(tmp, final)

    store._replace = holding_replace
    for epoch in range(w.last_epoch + 1, max_epochs):
        emb, metrics, telemetry = synthetic_epoch(epoch, seed, n, d)
        w.write_epoch(epoch, emb, metrics, telemetry)
        w.write_checkpoint(epoch, {"epoch": epoch})
        print(f"committed {epoch}", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
