"""Plain dataclasses the trainer emits through its ``emit`` callback.

They cross threads (trainer thread -> GUI) and processes (CLI), so they hold only numbers, strings, paths and
small numpy arrays, never tensors or widgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Started:
    run_dir: Path
    epochs: int
    batches_per_epoch: int
    device: str
    start_epoch: int = 0
    message: str = ""


@dataclass(frozen=True)
class Log:
    message: str
    level: str = "info"  # "info" | "warning" | "error"


@dataclass(frozen=True)
class BatchDone:
    epoch: int
    batch: int  # index within the epoch
    batches_per_epoch: int
    loss: float
    lr: float
    images_per_second: float
    n_tuples: int  # tuples the miner chose (0 for "all" when the loss takes the whole batch)
    n_easy: int  # triplet census of the batch at the miner's margin (PML rules)
    n_semihard: int
    n_hard: int
    mean_d_ap: float
    mean_d_an: float
    seconds_elapsed: float = 0.0


@dataclass(frozen=True)
class EpochDone:
    epoch: int
    metrics: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class SnapshotReady:
    """An epoch file has been committed to the run store and may be read."""

    run_dir: Path
    epoch: int
    path: Path


@dataclass(frozen=True)
class Failed:
    message: str
    detail: str = ""


@dataclass(frozen=True)
class Stopped:
    epoch: int  # last committed epoch, -1 if none
    reason: str = "user"  # "user" | "finished"
    run_dir: Path | None = None


@dataclass(frozen=True)
class Paused:
    paused: bool


Event = Started | Log | BatchDone | EpochDone | SnapshotReady | Failed | Stopped | Paused
