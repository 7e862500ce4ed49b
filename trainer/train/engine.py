"""The training loop: one epoch after another, each committed to the run.
"""

from __future__ import annotations

import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import events as ev
from trainer.config import TrainConfig
from trainer.data.loader import (
    ClassBalancedBatchSampler,
    ImageDataset,
    epoch_seed,
    sample_files,
    seed_everything,
)
from trainer.data.split import class_disjoint_split
from trainer.errors import ExplorerError, TrainingError, short_reason
from trainer.model.checkpoint import (
    CHECKPOINT_FORMAT,
    check_checkpoint,
    load_checkpoint,
)
from trainer.model.device import pick_amp, pick_device
from trainer.store import (
    SPLIT_HELDOUT,
    SPLIT_TRAIN,
    RunError,
    RunLock,
    RunReader,
    RunWriter,
    SampleTable,
    is_run_dir,
)
from trainer.train import distributed
from trainer.train.handlers import Checkpoint, EpochCommit, Evaluation, NanGuard, Report, Telemetry
from trainer.train.loop import Event, Loop, LoopState
from trainer.train.optim import build_optimizer, lr_schedule

PRELOAD_LIMIT_BYTES = 1 << 30  # decoded-image cache for small data sets


class _Stop(Exception):
    pass


@dataclass
class _Parts:
    """What one run trains with, built once by Trainer._build."""

    device: torch.device
    amp_dtype: torch.dtype | None
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    miner: Any
    spec: Any  # the loss's LossSpec
    margin: float
    optimizer: torch.optim.Optimizer
    extra: list  # parameters whose gradients are averaged by hand (proxies, classifier weights)
    scheduler: Any
    sampler: ClassBalancedBatchSampler
    train_idx: np.ndarray
    labels: torch.Tensor
    train_ds: ImageDataset
    eval_ds: ImageDataset
    workers: int
    classes: list[str]
    features: torch.Tensor | None = None  # head-only: the frozen backbone's features
    forward: Any = None  # the training forward, wrapped for DDP
    forward_frozen: bool | None = None
    scaler: Any = None  # fp16 on CUDA: the loss is scaled so small gradients do not underflow to zero


@dataclass
class _Setup:
    samples: SampleTable
    classes: list[str]
    writer: RunWriter | None
    start_epoch: int


def resume_config(saved: dict, cfg: TrainConfig) -> TrainConfig:
    """The configuration a resumed run trains with: the run's stored one (its recipe was resolved when it
    started), with what the user may change on resume taken from `cfg`: epochs, device, amp, workers."""
    return TrainConfig.from_dict(saved).replace(
        device=cfg.device, amp=cfg.amp, **{"optim.epochs": cfg.optim.epochs, "data.num_workers": cfg.data.num_workers}
    )


class Trainer:
    """One training run. Thread-safe control through ``stop`` and ``pause`` (threading.Event)."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path | str,
        *,
        emit: Callable[[ev.Event], None] | None = None,
        stop: threading.Event | None = None,
        pause: threading.Event | None = None,
        resume: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.emit = emit or (lambda e: None)
        self.stop = stop or threading.Event()
        self.pause = pause or threading.Event()
        self.resume = resume
        self._lock: RunLock | None = None
        self._telemetry: Telemetry | None = None
        self._made_dir = False  # this trainer created the run folder (removed again if no run was committed)
        self.rank = rank
        self.world_size = world_size
        self.dist = distributed.DistInfo()
        self.last_committed = -1
        if rank != 0:  # the other ranks of a torchrun job speak only when something goes wrong
            self.emit = _quiet_rank_emit(self.emit, rank)

    # ------------------------------------------------------------------ public
    def run(self) -> None:
        """Train; report through ``emit``; never raise (a failure becomes a :class:`Failed` event)."""
        try:
            self._run()
        except distributed.DistributedError as exc:
            self.emit(ev.Log(str(exc), level="error"))
            self.emit(ev.Failed(str(exc)))
        except _Stop:
            self.emit(ev.Stopped(epoch=self.last_committed, reason="user", run_dir=self.run_dir))
        except ExplorerError as exc:  # a bad run, checkpoint, option or divergence: one line, no traceback
            self.emit(ev.Log(str(exc), level="error"))
            self.emit(ev.Failed(str(exc)))
        except Exception as exc:  # a bug or an unexpected environment problem: say what and keep the run valid
            detail = traceback.format_exc()
            self.emit(ev.Log(f"{type(exc).__name__}: {exc}", level="error"))
            self.emit(ev.Failed(f"{type(exc).__name__}: {exc}", detail=detail))
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            if self._made_dir and not is_run_dir(self.run_dir):  # a failed start leaves nothing behind
                shutil.rmtree(self.run_dir, ignore_errors=True)
            if self.dist.active:
                distributed.shutdown()

    # ------------------------------------------------------------------ internals
    def _log(self, message: str, level: str = "info") -> None:
        self.emit(ev.Log(message, level=level))

    def _acquire_lock(self) -> RunLock:
        try:
            return RunLock(self.run_dir).acquire()
        except RunError as exc:
            raise TrainingError(str(exc)) from None
        except OSError as exc:
            raise TrainingError(f"cannot lock the run folder {self.run_dir}: {exc.strerror or exc}") from None

    def _check_control(self) -> None:
        if self.stop.is_set():
            raise _Stop
        if self.pause.is_set():
            self.emit(ev.Paused(True))
            t0 = time.perf_counter()
            while self.pause.is_set():
                if self.stop.wait(0.05):
                    raise _Stop
            if self._telemetry is not None:  # the pause is not training time
                self._telemetry.exclude(time.perf_counter() - t0)
            self.emit(ev.Paused(False))

    def _prepare_data(self) -> _Setup:

        cfg = self.cfg
        if self.resume:
            if not self.run_dir.is_dir():
                raise TrainingError(f"cannot resume {self.run_dir}: the folder does not exist")
            if not is_run_dir(self.run_dir):
                RunReader(self.run_dir)  # raises the reason it is not a readable run
            if self.rank == 0:  # before open(): it deletes leftovers, which would be another trainer's files
                self._lock = self._acquire_lock()
            writer = RunWriter.open(self.run_dir) if self.rank == 0 else None
            distributed.barrier(self.dist)  # rank 0 has cleaned leftovers before the others read the run
            reader = RunReader(self.run_dir)
            for m in (writer.messages if writer else reader.messages):
                self._log(m, "warning")
            self.cfg = resume_config(reader.config, cfg)
            # continue after the last epoch that has a checkpoint; a later epoch committed without one (killed
            # between the two writes) is trained again and rewritten
            done = reader.checkpoints
            start = done[-1] + 1 if done else 0
            later = [e for e in reader.epochs if e >= start]
            if later:
                self._log(f"epochs {later} have no checkpoint and will be trained again", "warning")
            return _Setup(reader.samples, reader.classes, writer, start)

        if self.rank != 0:  # rank 0 scans and creates the run; the others read its sample table and its config
            distributed.barrier(self.dist)
            reader = RunReader(self.run_dir)
            self.cfg = TrainConfig.from_dict(reader.config).replace(device=cfg.device, amp=cfg.amp)
            return _Setup(reader.samples, reader.classes, None, 0)

        samples, classes = scan_samples(cfg, self._log)
        split, paths, labels = samples.split, samples.paths, samples.labels
        if cfg.auto:
            cfg = self.cfg = self._resolve_recipe(cfg, samples)
        from trainer.model.losses import LOSSES, loss_margin, loss_metric
        from trainer.train.checks import config_problems

        if cfg.loss.name not in LOSSES:  # refused before the run folder exists
            raise TrainingError(f"unknown loss {cfg.loss.name!r}; `python main.py losses` lists them")
        problems = config_problems(cfg, run_dir=self.run_dir)
        n_train_classes = len(np.unique(labels[split == SPLIT_TRAIN]))
        if cfg.data.batch_classes > n_train_classes:  # the form's words, with the split as it was made
            problems.append(f"C = {cfg.data.batch_classes} classes per batch, but only {n_train_classes} training "
                            f"classes; lower C.")
        if problems:
            raise TrainingError(" ".join(problems))
        writer = None
        if self.rank == 0:  # lock first, then create: a second trainer on the same folder is refused, not raced
            made = not self.run_dir.exists()
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrainingError(f"cannot create the run folder {self.run_dir}: {exc.strerror or exc}") from None
            self._lock = self._acquire_lock()
            self._made_dir = made  # only the lock holder may remove the folder again if its start fails
            writer = RunWriter.create(self.run_dir, config=cfg.to_dict(), classes=classes, samples=samples,
                                      metric=loss_metric(cfg.loss.name),
                                      margin=loss_margin(cfg.loss.name, cfg.loss.params))
            if self.dist.active:
                distributed.record_world_size(self.dist, writer)
            if cfg.data.edits:  # the run keeps the edits it was trained with, whatever becomes of the file
                from trainer.data.edits import Edits

                writer.save_json("edits.json", Edits.load(cfg.data.edits).to_dict())
            distributed.barrier(self.dist)
        n_train = int((split == SPLIT_TRAIN).sum())
        self._log(
            f"{len(paths)} images in {len(classes)} classes: {n_train} for training, "
            f"{len(paths) - n_train} held out ({int(len(np.unique(labels[split == SPLIT_HELDOUT])))} classes)"
        )
        return _Setup(samples, classes, writer, 0)

    def _resolve_recipe(self, cfg: TrainConfig, samples: SampleTable) -> TrainConfig:
        """Set the keys the user left to the recipe, from the data, the weights as loaded, and the device."""
        from trainer.train.recipe import resolve_logged

        return resolve_logged(cfg, samples, pick_device(cfg.device).type, self._log)

    def _run(self) -> None:
        if self.resume and is_run_dir(self.run_dir):  # refuse before joining the group: no rank waits on it
            distributed.check_resume_world_size(self.run_dir, self.world_size)
        device = pick_device(self.cfg.device)  # the device is the caller's choice, also on resume
        self.dist = distributed.init(self.rank, self.world_size, device)
        device = distributed.local_device(device, self.dist)
        setup = self._prepare_data()
        cfg = self.cfg  # may have been replaced by the saved config on resume
        seed_everything(cfg.seed)
        p = self._build(cfg, setup, device)
        start_epoch = self._restore(p, setup)
        self.emit(ev.Started(run_dir=self.run_dir, epochs=cfg.optim.epochs, batches_per_epoch=len(p.sampler),
                             device=str(device), start_epoch=start_epoch,
                             message=f"{cfg.loss.name} + {cfg.loss.miner} miner on {cfg.model.backbone}"))
        if start_epoch > cfg.optim.epochs:
            self.emit(ev.Stopped(epoch=start_epoch - 1, reason="finished", run_dir=self.run_dir))
            return
        loop = Loop(batches=lambda epoch: self._batches(p, epoch), forward=lambda s, batch: self._forward(p, s, batch),
                    update=lambda s: self._update(p, s), embed=lambda: self._embed_all(p), check_control=self._check_control)
        loop.on(Event.EPOCH_STARTED, lambda s: self._start_epoch(p, s))
        telemetry = self._telemetry = Telemetry(self.emit, margin=p.margin, metric=p.spec.metric)
        commit = EpochCommit(setup.writer, telemetry)
        for handler in (NanGuard(cfg.optim.lr), telemetry, Evaluation(setup.samples, p.spec.metric, telemetry,
                                                                        self._check_control),
                        commit, Checkpoint(setup.writer, commit, lambda epoch: self._checkpoint_state(epoch, p),
                                   keep_all=cfg.keep_checkpoints == "all"),
                        Report(self.emit, self.run_dir, commit, self._committed)):
            handler.attach(loop)
        loop.on(Event.EPOCH_COMPLETED, self._synchronise)
        loop.run(LoopState(batches_per_epoch=len(p.sampler)), range(start_epoch, cfg.optim.epochs + 1))
        self.emit(ev.Stopped(epoch=self.last_committed, reason="finished", run_dir=self.run_dir))

    def _build(self, cfg: TrainConfig, setup: _Setup, device: torch.device) -> _Parts:
        """The model, loss, miner, optimiser and schedule, the sampler and the two datasets of this run."""
        from trainer.model.backbones import build_model, default_transforms, weights_note_is_trained
        from trainer.model.losses import LOSSES, build_loss, build_miner, loss_margin

        samples = setup.samples
        train_idx = np.flatnonzero(samples.split == SPLIT_TRAIN)
        if len(train_idx) == 0:
            raise TrainingError("no training images: every class is held out")
        spec = LOSSES.get(cfg.loss.name)
        if spec is None:
            raise TrainingError(f"unknown loss {cfg.loss.name!r}; `python main.py losses` lists them")
        def log_weights(note: str) -> None:  # once; a fallback from asked-for weights is a warning
            fell_back = cfg.model.pretrained and note.startswith("random init: could not")
            self._log(f"backbone {cfg.model.backbone}: {note}", "warning" if fell_back else "info")

        model, weights_note = build_model(cfg.model, normalize=spec.normalized, log=log_weights)
        model.to(device)
        if self.dist.active and device.type == "cuda":  # BN statistics over the global batch, as one process
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        loss_fn = build_loss(cfg.loss.name, dict(cfg.loss.params), embedding_dim=cfg.model.embedding_dim,
                             num_classes=len(setup.classes)).to(device)
        miner = build_miner(cfg.loss.miner, dict(cfg.loss.miner_params), metric=spec.metric)
        optimizer, extra = build_optimizer(cfg, model, loss_fn, weights_note_is_trained(weights_note))
        self._log("learning rates: " + ", ".join(f"{g['name']} {g['lr']:g}" for g in optimizer.param_groups))
        sampler = ClassBalancedBatchSampler(
            samples.labels[train_idx], cfg.data.batch_classes, cfg.data.batch_per_class,
            batches_per_epoch=cfg.optim.batches_per_epoch, seed=cfg.seed, rank=self.rank, world_size=self.world_size,
        )
        n_batches = len(sampler)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(
            cfg.optim.scheduler, cfg.optim.epochs * n_batches, cfg.optim.warmup_epochs * n_batches))

        files = sample_files(samples)
        size = cfg.data.image_size
        load_size = int(size * 1.15)
        eval_tf = default_transforms(size, augment=False, train=False)
        train_tf = default_transforms(size, augment=cfg.data.augment, train=True, flip=cfg.data.flip,
                                      crop_scale=cfg.data.crop_scale)
        small = len(files) * load_size * load_size * 3 <= PRELOAD_LIMIT_BYTES
        eval_ds = ImageDataset(files, eval_tf, load_size=load_size, cache_decoded=small)
        train_ds = ImageDataset(files, train_tf, load_size=load_size, cache_decoded=small)
        if small:
            self._log(f"decoding {len(files)} images into memory (small data set)")
            eval_ds.preload(progress=lambda d, t: None)
            train_ds.cache = eval_ds.cache  # same decoded images, different transforms
        return _Parts(device=device, amp_dtype=pick_amp(cfg.amp, device), model=model, loss_fn=loss_fn, miner=miner,
                      spec=spec, margin=loss_margin(cfg.loss.name, dict(cfg.loss.params)), optimizer=optimizer,
                      extra=extra, scheduler=scheduler, sampler=sampler, train_idx=train_idx,
                      labels=torch.as_tensor(samples.labels, dtype=torch.long), train_ds=train_ds, eval_ds=eval_ds,
                      workers=0 if small else cfg.data.num_workers, classes=list(setup.classes))

    def _restore(self, p: _Parts, setup: _Setup) -> int:
        """On resume, the state of the last checkpoint; in head-only mode, the backbone's features. The first epoch."""
        cfg = self.cfg
        start_epoch = setup.start_epoch
        if self.resume and start_epoch > 0:
            state = self._load_checkpoint(start_epoch - 1, n_classes=len(p.classes), dim=cfg.model.embedding_dim)
            try:
                p.model.load_state_dict(state["model"])
                p.loss_fn.load_state_dict(state["loss"])
                p.optimizer.load_state_dict(state["optimizer"])
                p.scheduler.load_state_dict(state["scheduler"])
            except (KeyError, RuntimeError, ValueError, TypeError) as exc:
                raise TrainingError(f"cannot continue from the checkpoint of epoch {start_epoch - 1}: it does not "
                                    f"fit this run's network and optimiser ({short_reason(exc)}); start a new "
                                    f"run") from None
            self._log(f"resumed from the checkpoint of epoch {start_epoch - 1}")
        if cfg.model.head_only:
            if self.rank != 0:  # rank 0 computes and caches the features; the others read them
                distributed.barrier(self.dist)
            p.features = self._head_only_features(p, setup.writer)
            if self.rank == 0:
                distributed.barrier(self.dist)
            p.model.freeze_backbone(True)
        return start_epoch

    # ------------------------------------------------------------------ the loop's steps
    def _start_epoch(self, p: _Parts, s: LoopState) -> None:
        if s.epoch == 0:  # the untrained network is only embedded
            return
        cfg = self.cfg
        torch.manual_seed(epoch_seed(cfg.seed, s.epoch))
        p.sampler.set_epoch(s.epoch)
        frozen = cfg.model.head_only or s.epoch <= cfg.model.freeze_backbone_epochs
        p.model.freeze_backbone(frozen)
        p.model.train()
        if frozen:
            p.model.backbone.eval()
        if p.forward is None or p.forward_frozen != frozen:  # DDP is rebuilt when the trained parameters change
            p.forward = distributed.wrap_model(_Forward(p.model, p.features is not None), self.dist, p.device)
            p.forward_frozen = frozen

    def _forward(self, p: _Parts, s: LoopState, batch) -> None:
        x, ids = batch
        with torch.autocast(p.device.type, dtype=p.amp_dtype, enabled=p.amp_dtype is not None):
            emb = p.forward(x.to(p.device, non_blocking=True))
        emb = emb.float()
        if self.dist.active:  # mine the global batch: every rank's rows, in the sampler's order
            order = distributed.batch_order(self.rank, self.world_size, len(ids), p.sampler.per_class)
            emb, ids = distributed.gather_batch(emb, ids, order, self.dist)
        s.ids = ids.cpu().numpy()
        s.labels = p.labels[s.ids].to(p.device)
        s.embeddings_batch = emb
        s.tuples = p.miner(emb, s.labels) if p.miner is not None else None
        s.loss = p.loss_fn(emb, s.labels, s.tuples) if s.tuples is not None else p.loss_fn(emb, s.labels)

    def _update(self, p: _Parts, s: LoopState) -> None:
        p.optimizer.zero_grad(set_to_none=True)
        if p.scaler is None and p.amp_dtype == torch.float16 and p.device.type == "cuda":
            p.scaler = torch.amp.GradScaler("cuda")
        if p.scaler is not None:
            p.scaler.scale(s.loss).backward()
            p.scaler.unscale_(p.optimizer)  # real gradients before they are averaged across ranks
            distributed.average_gradients(p.extra, self.dist)
            p.scaler.step(p.optimizer)  # skipped when a gradient overflowed; the scale is lowered
            p.scaler.update()
        else:
            s.loss.backward()
            distributed.average_gradients(p.extra, self.dist)  # proxies / classifier weights stay in sync
            p.optimizer.step()
        p.scheduler.step()
        s.lr = p.optimizer.param_groups[0]["lr"]

    def _committed(self, epoch: int) -> None:
        self.last_committed = epoch

    def _synchronise(self, s: LoopState) -> None:
        distributed.barrier(self.dist)
        if self.rank != 0:
            self.last_committed = s.epoch  # rank 0 has committed it

    # ------------------------------------------------------------------ helpers
    def _batches(self, p: _Parts, epoch: int):
        """(inputs, global ids) of each batch of the epoch; images decoded by DataLoader workers."""
        if p.features is not None:
            for local in p.sampler:
                ids = torch.as_tensor(p.train_idx[np.asarray(local)])
                yield p.features[ids], ids
            return
        gen = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch))
        batch_ids = _GlobalBatches(p.sampler, p.train_idx)
        loader = torch.utils.data.DataLoader(
            p.train_ds, batch_sampler=batch_ids, num_workers=p.workers, generator=gen,
            pin_memory=torch.cuda.is_available(), persistent_workers=False)
        yield from loader

    @torch.no_grad()
    def _embed_all(self, p: _Parts, batch_size: int = 256) -> np.ndarray | None:
        """The embeddings of every image, in sample order, on rank 0 (None on the other ranks).

        In a torchrun job each rank embeds one contiguous block of the images (:func:`distributed.shard`) with
        rank 0's BatchNorm statistics, and the blocks are gathered on rank 0."""
        model, ds, features, device, workers, amp_dtype = p.model, p.eval_ds, p.features, p.device, p.workers, p.amp_dtype
        model.eval()
        distributed.broadcast_buffers(model, self.dist)
        n = len(features) if features is not None else len(ds)
        lo, hi = distributed.shard(n, self.rank, self.world_size)
        out = []
        if features is not None:
            for s in range(lo, hi, 4096):
                self._check_control()
                out.append(model.embed_features(features[s:min(s + 4096, hi)].to(device)).float())
        else:
            part = ds if (lo, hi) == (0, n) else torch.utils.data.Subset(ds, range(lo, hi))
            loader = torch.utils.data.DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=workers)
            for x, _ in loader:
                self._check_control()
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out.append(model(x.to(device)).float())
        dim = int(getattr(model, "embedding_dim", 0)) or (out[0].shape[1] if out else 0)
        local = torch.cat(out) if out else torch.zeros((0, dim), device=device)
        if not self.dist.active:
            return local.cpu().numpy().astype(np.float32)
        if self.dist.backend != "nccl":
            local = local.cpu()
        gathered = distributed.gather_rows(local, self.dist)
        return None if gathered is None else gathered.cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def _head_only_features(self, p: _Parts, writer: RunWriter | None) -> torch.Tensor:
        model, ds, device, workers, amp_dtype = p.model, p.eval_ds, p.device, p.workers, p.amp_dtype
        cached = None
        try:
            cached = RunReader(self.run_dir).features()
        except Exception:
            cached = None
        if cached is not None and len(cached) == len(ds):
            self._log("head-only mode: using the backbone features cached in the run")
            return torch.from_numpy(np.ascontiguousarray(cached, dtype=np.float32))
        self._log("head-only mode: computing the frozen backbone's features once")
        model.eval()
        out = []
        loader = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=False, num_workers=workers)
        for x, _ in loader:
            self._check_control()
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out.append(model.features(x.to(device)).float().cpu())
        feats = torch.cat(out)
        if writer is not None:
            writer.write_features(feats.numpy())
        return feats

    def _checkpoint_state(self, epoch: int, p: _Parts) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "config": self.cfg.to_json(),
            "classes": list(p.classes),
            "embedding_dim": self.cfg.model.embedding_dim,
            "backbone": self.cfg.model.backbone,
            "model": p.model.state_dict(),
            "loss": p.loss_fn.state_dict(),
            "optimizer": p.optimizer.state_dict(),
            "scheduler": p.scheduler.state_dict(),
            "sampler": p.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "world_size": self.world_size,
        }

    def _load_checkpoint(self, epoch: int, *, n_classes: int, dim: int) -> dict:
        reader = RunReader(self.run_dir)
        path = reader.checkpoint_path(epoch)
        if path is None:
            raise TrainingError(f"cannot resume: the run has no checkpoint for epoch {epoch}")
        state = load_checkpoint(path)
        check_checkpoint(state, path, classes=reader.classes, dim=dim)
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world_size:
            raise TrainingError(f"cannot resume from {path}: it was written by a job of {saved_world} process(es), "
                                f"this one has {self.world_size}; resume with the same number of processes")
        return state


def scan_samples(cfg: TrainConfig, log: Callable[..., None]) -> tuple[SampleTable, list[str]]:
    """Scan the data folder (and the test folder) and split the samples as ``cfg`` says."""
    from trainer.data.scan import scan_folder

    def progress(done: int, total: int) -> None:
        if done == total or done % 500 == 0:
            log(f"scanning {cfg.data.data_dir}: {done}/{total} files")

    scan = scan_folder(cfg.data.data_dir, progress=progress)
    for s in scan.skipped[:20]:
        log(f"skipped {s.path}: {s.reason}", "warning")
    if len(scan.skipped) > 20:
        log(f"... and {len(scan.skipped) - 20} more skipped files (see the data view)", "warning")
    classes = list(scan.classes)
    paths = list(scan.paths)
    labels = np.asarray(scan.labels, dtype=np.int64)
    if cfg.data.edits:
        from trainer.data.edits import Edits, EditsError, apply_edits

        try:
            keep, labels, report = apply_edits(paths, labels, classes, Edits.load(cfg.data.edits))
        except EditsError as exc:
            raise TrainingError(str(exc)) from None
        paths = [paths[int(i)] for i in keep]
        log(f"edits {cfg.data.edits}: {report['excluded']} images excluded, {report['relabelled']} relabelled, "
            f"{report['duplicates']} duplicates left out"
            + (f"; {len(report['missing'])} edited files are not in the folder (first: {report['missing'][0]})"
               if report["missing"] else ""), "warning" if report["missing"] else "info")
    roots = [str(scan.root)]
    root_index = np.zeros(len(paths), dtype=np.int16)
    if cfg.data.test_dir:
        test = scan_folder(cfg.data.test_dir)
        split = np.full(len(paths), SPLIT_TRAIN, dtype=np.int8)
        index = {c: i for i, c in enumerate(classes)}
        for c in test.classes:
            if c not in index:
                index[c] = len(classes)
                classes.append(c)
        test_labels = np.array([index[test.classes[int(lab)]] for lab in test.labels], dtype=np.int64)
        paths += list(test.paths)
        labels = np.concatenate([labels, test_labels])
        split = np.concatenate([split, np.full(len(test.paths), SPLIT_HELDOUT, dtype=np.int8)])
        roots.append(str(test.root))
        root_index = np.concatenate([root_index, np.ones(len(test.paths), dtype=np.int16)])
    else:
        split = class_disjoint_split(
            labels,
            classes,
            holdout_fraction=cfg.data.holdout_fraction,
            holdout_classes=cfg.data.holdout_classes,
            seed=cfg.seed,
        )
    samples = SampleTable(paths=paths, labels=labels, split=split, roots=roots, root_index=root_index)
    return samples, classes


class _Forward(torch.nn.Module):
    """The training forward (images, or cached backbone features in head-only mode) as one module for DDP."""

    def __init__(self, net: torch.nn.Module, from_features: bool) -> None:
        super().__init__()
        self.net, self.from_features = net, from_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed_features(x) if self.from_features else self.net(x)


def _quiet_rank_emit(emit: Callable[[ev.Event], None], rank: int) -> Callable[[ev.Event], None]:
    """The emit of a rank other than 0: only failures, the end, and warnings/errors (prefixed with the rank)."""

    def quiet(e: ev.Event) -> None:
        if isinstance(e, (ev.Failed, ev.Stopped)):
            emit(e)
        elif isinstance(e, ev.Log) and e.level in ("warning", "error"):
            emit(ev.Log(f"rank {rank}: {e.message}", level=e.level))

    return quiet


class _GlobalBatches:
    """The sampler's batches (indices into the training subset) as dataset-wide sample ids."""

    def __init__(self, sampler: ClassBalancedBatchSampler, train_idx: np.ndarray) -> None:
        self.sampler, self.train_idx = sampler, train_idx

    def __iter__(self):
        for local in self.sampler:
            yield self.train_idx[np.asarray(local)].tolist()

    def __len__(self) -> int:
        return len(self.sampler)
