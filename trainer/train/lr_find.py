"""Learning-rate range test (Smith 2017; the "LR finder" of fastai and torch-lr-finder).

A short run whose learning rate rises exponentially from `start_lr` to `end_lr`, one step per batch, on the
run's own model, loss, miner, batches and augmentation. The loss is smoothed with an exponential moving average
(bias-corrected, as fastai does); the test stops early once the smoothed loss exceeds 4x its minimum or becomes
non-finite. The suggestion is the rate of the steepest descent of the smoothed loss against log(lr), taken
before the minimum. Nothing is written to disk.

Every parameter group keeps its ratio to the backbone rate (the head multiplier, the loss's own rate): the test
scales all groups together and reports the backbone rate, which is what ``--lr`` sets. torch-lr-finder drives
every group to the same rate and calls ``criterion(outputs, labels)`` without a miner, which is why the loop is
ours; the schedule is torch's LambdaLR.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from trainer.config import TrainConfig


@dataclass(frozen=True)
class LRFindResult:
    lrs: np.ndarray  # backbone learning rate of each step
    losses: np.ndarray  # raw loss of each step
    smoothed: np.ndarray  # bias-corrected exponential moving average of the losses
    suggestion: float | None
    reason: str
    config: TrainConfig  # the configuration tested (the recipe resolved)


def lr_at_step(step: int, steps: int, start_lr: float, end_lr: float) -> float:
    """The exponential schedule: start_lr at step 0, end_lr at step steps - 1."""
    if steps <= 1:
        return float(start_lr)
    return float(start_lr * (end_lr / start_lr) ** (step / (steps - 1)))


def smooth(losses: np.ndarray, beta: float = 0.9) -> np.ndarray:
    """Bias-corrected exponential moving average: avg_i = (beta avg_{i-1} + (1 - beta) x_i) / (1 - beta^(i+1))."""
    out = np.empty(len(losses), dtype=np.float64)
    avg = 0.0
    for i, x in enumerate(np.asarray(losses, dtype=np.float64)):
        avg = beta * avg + (1 - beta) * x
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def suggest(lrs: np.ndarray, smoothed: np.ndarray, skip_start: float = 0.1) -> tuple[float | None, str]:
    """The rate of the steepest descent of `smoothed` against log(lr), up to the minimum; (None, why) when the
    curve does not descend."""
    lrs, smoothed = np.asarray(lrs, dtype=np.float64), np.asarray(smoothed, dtype=np.float64)
    finite = np.isfinite(smoothed)
    n = int(np.argmin(np.where(finite, smoothed, np.inf))) + 1 if finite.any() else 0
    lo = int(len(lrs) * skip_start)
    if n - lo < 3:
        return None, "the loss did not fall over the tested range: try a lower start rate or more steps"
    grad = np.gradient(smoothed[lo:n], np.log(lrs[lo:n]))
    i = int(np.argmin(grad))
    if grad[i] >= 0:
        return None, "the loss did not fall over the tested range: try a lower start rate or more steps"
    return float(lrs[lo + i]), (f"steepest fall of the smoothed loss at lr {lrs[lo + i]:.2g}; the loss is lowest "
                                f"at {lrs[n - 1]:.2g}")


def lr_range_test(
    cfg: TrainConfig,
    *,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    steps: int = 100,
    log: Callable[..., None] = lambda *a, **k: None,
    progress: Callable[[int, int, float, float], None] | None = None,
    stop: threading.Event | None = None,
) -> LRFindResult:
    """Run the test on ``cfg``'s data, model and loss (recipe keys resolved as a run would)."""
    from trainer.data.loader import (
        ClassBalancedBatchSampler,
        ImageDataset,
        sample_files,
        seed_everything,
    )
    from trainer.errors import TrainingError
    from trainer.model.backbones import (
        build_model,
        default_transforms,
        weights_note_is_trained,
    )
    from trainer.model.device import pick_amp, pick_device
    from trainer.model.losses import LOSSES, build_loss, build_miner
    from trainer.store import SPLIT_TRAIN
    from trainer.train.engine import scan_samples
    from trainer.train.optim import build_optimizer
    from trainer.train.recipe import resolve_logged

    if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise TrainingError(f"the learning-rate range must satisfy 0 < start ({start_lr:g}) < end ({end_lr:g})")
    if steps < 5:
        raise TrainingError(f"the range test needs at least 5 steps, not {steps}")
    samples, classes = scan_samples(cfg, log)
    device = pick_device(cfg.device)
    if cfg.auto:
        cfg = resolve_logged(cfg, samples, device.type, log)
    seed_everything(cfg.seed)
    spec = LOSSES[cfg.loss.name]
    model, note = build_model(cfg.model, normalize=spec.normalized, log=lambda m: None)
    model.to(device).train()
    loss_fn = build_loss(cfg.loss.name, dict(cfg.loss.params), embedding_dim=cfg.model.embedding_dim,
                         num_classes=len(classes)).to(device)
    miner = build_miner(cfg.loss.miner, dict(cfg.loss.miner_params), metric=spec.metric)
    optimizer, _ = build_optimizer(cfg, model, loss_fn, weights_note_is_trained(note))
    ratios = [g["lr"] / cfg.optim.lr for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["initial_lr"] = g["lr"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [lambda i, r=r: r * lr_at_step(i, steps, start_lr, end_lr) / cfg.optim.lr for r in ratios])

    train_idx = np.flatnonzero(samples.split == SPLIT_TRAIN)
    sampler = ClassBalancedBatchSampler(samples.labels[train_idx], cfg.data.batch_classes, cfg.data.batch_per_class,
                                        batches_per_epoch=steps, seed=cfg.seed)
    size = cfg.data.image_size
    tf = default_transforms(size, augment=cfg.data.augment, train=True, flip=cfg.data.flip,
                            crop_scale=cfg.data.crop_scale)
    files = sample_files(samples)
    ds = ImageDataset(files, tf, load_size=int(size * 1.15))
    labels_all = torch.as_tensor(samples.labels, dtype=torch.long)
    amp_dtype = pick_amp(cfg.amp, device)
    lrs, losses = [], []
    best = math.inf
    avg = 0.0
    batches = (train_idx[np.asarray(b)] for b in sampler)
    for i, ids in enumerate(batches):
        if i >= steps or (stop is not None and stop.is_set()):
            break
        x = torch.stack([ds[int(j)][0] for j in ids]).to(device)
        y = labels_all[ids].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            emb = model(x)
        emb = emb.float()
        tuples = miner(emb, y) if miner is not None else None
        loss = loss_fn(emb, y, tuples) if tuples is not None else loss_fn(emb, y)
        lr = optimizer.param_groups[[g["name"] for g in optimizer.param_groups].index("backbone")]["lr"] \
            if not cfg.model.head_only else optimizer.param_groups[0]["lr"] / ratios[0]
        value = float(loss.item())
        lrs.append(lr)
        losses.append(value)
        if progress is not None:
            progress(i + 1, steps, lr, value)
        if not math.isfinite(value):
            break
        avg = 0.9 * avg + 0.1 * value
        s = avg / (1 - 0.9 ** (i + 1))
        best = min(best, s)
        if s > 4 * best and i > steps // 10:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    lrs_a, losses_a = np.asarray(lrs), np.asarray(losses)
    sm = smooth(losses_a)
    suggestion, reason = suggest(lrs_a, sm)
    return LRFindResult(lrs_a, losses_a, sm, suggestion, reason, cfg)
