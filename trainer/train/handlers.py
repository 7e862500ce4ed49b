"""The handlers of the training loop's events (trainer/train/loop.py): each does one job and is attached in the
order it must run. ``NanGuard`` stops a diverging run before its epoch is saved; ``Telemetry`` counts every batch's
triplets and reports it; ``Evaluation`` computes the held-out and train metrics; ``EpochCommit`` writes the epoch
file, ``Checkpoint`` the training state, and ``Report`` tells the window."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from trainer import events as ev
from trainer.errors import TrainingError
from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN, RunWriter, SampleTable
from trainer.train.loop import Event, Loop, LoopState

MINED_BATCHES_KEPT = 20  # mined tuples of the last batches of each epoch kept in telemetry
TELEMETRY_KEYS = ("loss", "lr", "n_tuples", "n_easy", "n_semihard", "n_hard", "mean_d_ap", "mean_d_an")
_FLOAT_KEYS = ("loss", "lr", "mean_d_ap", "mean_d_an")
MINED_KEYS = ("mined_batch", "mined_anchor", "mined_positive", "mined_negative")


class NanGuard:
    """A loss or an embedding that is NaN or infinite stops the run; the epoch is not saved."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def attach(self, loop: Loop) -> None:
        loop.on(Event.LOSS_COMPUTED, self.check_loss).on(Event.EPOCH_EMBEDDED, self.check_embeddings)

    def check_loss(self, s: LoopState) -> None:
        if not torch.isfinite(s.loss):
            raise TrainingError(f"the loss became {s.loss.item()} at epoch {s.epoch}, batch {s.batch}: training "
                                f"stopped and this epoch was not saved. Try a lower learning rate (now {self.lr:g}).")

    def check_embeddings(self, s: LoopState) -> None:
        if s.embeddings is not None and not np.isfinite(s.embeddings).all():
            raise TrainingError(f"the embeddings of epoch {s.epoch} contain NaN or Inf: this epoch was not saved. "
                                f"Try a lower learning rate (now {self.lr:g}).")


class Telemetry:
    """Per batch: the triplet census of the batch (PML's rules), the loss, the rate, the mined tuples of the last
    batches; reported as a BatchDone event and kept for the epoch file."""

    def __init__(self, emit: Callable[[ev.Event], None], *, margin: float, metric: str) -> None:
        from trainer.analysis.census import batch_census

        self.emit, self.margin, self.metric, self._census = emit, margin, metric, batch_census
        self.values: dict[str, list] = {}
        self.mined: list[np.ndarray] = []
        self._t_batch = 0.0

    def attach(self, loop: Loop) -> None:
        loop.on(Event.EPOCH_STARTED, self.reset).on(Event.BATCH_COMPLETED, self.record)

    def reset(self, s: LoopState) -> None:
        self.values = {k: [] for k in TELEMETRY_KEYS}
        self.mined = []
        self._t_batch = time.perf_counter()

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` (a pause) out of the current batch's time: after Pause -> Resume the first batch
        reported 2 images/s and the window's ETA tripled."""
        self._t_batch += max(0.0, float(seconds))

    def record(self, s: LoopState) -> None:
        with torch.no_grad():
            counts = self._census(s.embeddings_batch.detach(), s.labels, self.margin, metric=self.metric)
        n_tuples = count_tuples(s.tuples)
        now = time.perf_counter()
        ips = len(s.ids) / max(now - self._t_batch, 1e-9)
        self._t_batch = now
        loss = float(s.loss.item())
        for k, v in (("loss", loss), ("lr", s.lr), ("n_tuples", n_tuples), ("n_easy", counts.n_easy),
                     ("n_semihard", counts.n_semihard), ("n_hard", counts.n_hard), ("mean_d_ap", counts.mean_d_ap),
                     ("mean_d_an", counts.mean_d_an)):
            self.values[k].append(v)
        if s.tuples is not None and s.batch >= s.batches_per_epoch - MINED_BATCHES_KEPT:
            self.mined.append(mined_rows(s.batch, s.tuples, s.ids))
        self.emit(ev.BatchDone(
            epoch=s.epoch, batch=s.batch, batches_per_epoch=s.batches_per_epoch, loss=loss, lr=s.lr,
            images_per_second=ips, n_tuples=n_tuples, n_easy=int(counts.n_easy), n_semihard=int(counts.n_semihard),
            n_hard=int(counts.n_hard), mean_d_ap=float(counts.mean_d_ap), mean_d_an=float(counts.mean_d_an),
            seconds_elapsed=now - s.run_started))

    def arrays(self) -> dict[str, np.ndarray]:
        """The epoch's telemetry as the run stores it (docs/FORMAT.md)."""
        tel = {k: np.asarray(v, dtype=np.float32 if k in _FLOAT_KEYS else np.int64) for k, v in self.values.items()}
        if self.mined:
            rows = np.concatenate(self.mined)
            for j, k in enumerate(MINED_KEYS):
                tel[k] = rows[:, j].copy()
        return tel


class Evaluation:
    """Held-out and train retrieval metrics, held-out verification, the mean training loss, the epoch's time."""

    def __init__(self, samples: SampleTable, metric: str, telemetry: Telemetry,
                 check_control: Callable[[], None]) -> None:
        self.samples, self.metric, self.telemetry, self.check_control = samples, metric, telemetry, check_control

    def attach(self, loop: Loop) -> None:
        loop.on(Event.EPOCH_COMPLETED, self.evaluate)

    def evaluate(self, s: LoopState) -> None:
        if s.embeddings is None:  # another rank than 0: rank 0 evaluates
            return
        from trainer.analysis.retrieval import retrieval_metrics
        from trainer.analysis.verification import verification_metrics

        metrics: dict[str, float] = {}
        for name, code in (("heldout", SPLIT_HELDOUT), ("train", SPLIT_TRAIN)):
            sel = self.samples.split == code
            labels = self.samples.labels[sel]
            if sel.sum() < 2 or len(np.unique(labels)) < 2:
                continue
            self.check_control()
            for k, v in retrieval_metrics(s.embeddings[sel], labels, metric=self.metric).items():
                metrics[f"{name}/{k}"] = float(v)
            if name == "heldout":
                for k, v in verification_metrics(s.embeddings[sel], labels, metric=self.metric).items():
                    metrics[f"{name}/{k}"] = float(v)
        if self.telemetry.values.get("loss"):
            metrics["train_loss"] = float(np.mean(self.telemetry.values["loss"]))
        metrics["epoch_seconds"] = time.perf_counter() - s.epoch_started
        s.metrics = metrics


class EpochCommit:
    """Writes the epoch file (embeddings, metrics, telemetry): the epoch is committed when this returns."""

    def __init__(self, writer: RunWriter | None, telemetry: Telemetry) -> None:
        self.writer, self.telemetry = writer, telemetry
        self.path: Path | None = None

    def attach(self, loop: Loop) -> None:
        loop.on(Event.EPOCH_COMPLETED, self.commit)

    def commit(self, s: LoopState) -> None:
        self.path = None
        if self.writer is not None and s.embeddings is not None:
            self.path = Path(self.writer.write_epoch(s.epoch, s.embeddings, s.metrics, self.telemetry.arrays()))


BEST_BY = "heldout/mean_average_precision_at_r"  # what "the best checkpoint" is best at


def checkpoints_to_keep(epoch_metrics: dict[int, dict], with_checkpoint: list[int]) -> set[int]:
    """The last checkpointed epoch and the best one by held-out MAP@R (the first of equals; epochs without the
    metric never count as best)."""
    if not with_checkpoint:
        return set()
    keep = {max(with_checkpoint)}
    scored = [(float(epoch_metrics.get(e, {}).get(BEST_BY, float("nan"))), -e) for e in with_checkpoint]
    scored = [t for t in scored if t[0] == t[0]]  # drop NaN
    if scored:
        keep.add(-max(scored)[1])
    return keep


class Checkpoint:
    """Writes the training state of a committed epoch (after its epoch file: a kill in between retrains it), then
    drops the checkpoints that are neither the last nor the best, unless the config keeps them all."""

    def __init__(self, writer: RunWriter | None, commit: EpochCommit, state: Callable[[int], dict],
                 keep_all: bool = False) -> None:
        self.writer, self.commit, self.state, self.keep_all = writer, commit, state, keep_all

    def attach(self, loop: Loop) -> None:
        loop.on(Event.EPOCH_COMPLETED, self.save)

    def save(self, s: LoopState) -> None:
        if self.writer is None or self.commit.path is None:
            return
        self.writer.write_checkpoint(s.epoch, self.state(s.epoch))
        if not self.keep_all:
            keep = checkpoints_to_keep(self.writer.epoch_metrics(), self.writer.checkpoint_epochs)
            self.writer.prune_checkpoints(keep)


class Report:
    """Tells the window: SnapshotReady for a committed epoch, EpochDone with its metrics, a log line."""

    def __init__(self, emit: Callable[[ev.Event], None], run_dir: Path, commit: EpochCommit,
                 on_committed: Callable[[int], None]) -> None:
        self.emit, self.run_dir, self.commit, self.on_committed = emit, run_dir, commit, on_committed

    def attach(self, loop: Loop) -> None:
        loop.on(Event.EPOCH_COMPLETED, self.report)

    def report(self, s: LoopState) -> None:
        if s.embeddings is None:
            return
        if self.commit.path is not None:
            self.on_committed(s.epoch)
            self.emit(ev.SnapshotReady(run_dir=self.run_dir, epoch=s.epoch, path=self.commit.path))
        self.emit(ev.EpochDone(epoch=s.epoch, metrics=s.metrics, seconds=time.perf_counter() - s.epoch_started))
        self.emit(ev.Log(metrics_line(s.epoch, s.metrics)))


def count_tuples(tuples) -> int:
    if tuples is None:
        return 0
    if len(tuples) == 3:
        return int(len(tuples[0]))
    return int(len(tuples[0]) + len(tuples[2]))


def mined_rows(batch: int, tuples, global_ids: np.ndarray) -> np.ndarray:
    """(batch, anchor, positive, negative) rows with global sample ids; -1 where a pair has no such member."""
    t = [x.detach().cpu().numpy() for x in tuples]
    if len(t) == 3:
        a, p, n = t
        rows = np.stack([np.full(len(a), batch), global_ids[a], global_ids[p], global_ids[n]], axis=1)
    else:
        a1, p, a2, n = t
        pos = np.stack([np.full(len(a1), batch), global_ids[a1], global_ids[p], np.full(len(a1), -1)], axis=1)
        neg = np.stack([np.full(len(a2), batch), global_ids[a2], np.full(len(a2), -1), global_ids[n]], axis=1)
        rows = np.concatenate([pos, neg])
    return rows.astype(np.int64)


def metrics_line(epoch: int, m: dict[str, float]) -> str:
    keys = [("heldout/precision_at_1", "P@1"), ("heldout/mean_average_precision_at_r", "MAP@R"),
            ("heldout/r_precision", "RP"), ("heldout/auc", "AUC"), ("train_loss", "loss")]
    parts = [f"{short} {m[k]:.4f}" for k, short in keys if k in m]
    return f"epoch {epoch}: " + ", ".join(parts) + f" ({m.get('epoch_seconds', 0):.1f} s)"
