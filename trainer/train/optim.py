"""Optimiser parameter groups and the learning-rate schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from trainer.config import TrainConfig
from trainer.errors import TrainingError


def head_lr_multiplier(cfg: TrainConfig, trained_weights: bool) -> float:
    """The embedding head's learning rate over the backbone's: ``optim.head_lr_mult`` when set; otherwise 10 when
    the backbone really starts from trained weights (ImageNet or a weights file, as loaded, not as asked for) and
    1 when it starts at random, including a fallback to random weights after a failed download.

    A larger head rate helps a new head catch up with trained features; on a network that is random throughout it
    only lets the head, which has no normalisation of its own, outrun the backbone: with 10x, every proxy and
    classifier loss on the demo digits ended its first short epoch below the untrained network's held-out MAP@R.
    """
    if cfg.optim.head_lr_mult is not None:
        return float(cfg.optim.head_lr_mult)
    return 10.0 if trained_weights else 1.0


def build_optimizer(cfg: TrainConfig, model, loss_fn, trained_weights: bool):
    """AdamW over the parameter groups of a run: the head (at lr x the head multiplier), the backbone (at lr,
    unless it is frozen for good) and the loss's proxies / class weights (at loss_lr, no weight decay); and the
    loss's parameters (kept in sync across ranks)."""
    from trainer.model.losses import loss_parameters

    head_mult = head_lr_multiplier(cfg, trained_weights)
    if not (head_mult > 0 and math.isfinite(head_mult)):
        raise TrainingError(f"optim.head_lr_mult must be a positive number, got {cfg.optim.head_lr_mult!r}")
    groups = [{"params": list(model.head.parameters()), "lr": cfg.optim.lr * head_mult, "name": "head"}]
    if not cfg.model.head_only:
        groups.append({"params": list(model.backbone.parameters()), "lr": cfg.optim.lr, "name": "backbone"})
    extra = loss_parameters(loss_fn)
    if extra:
        groups.append({"params": extra, "lr": cfg.optim.loss_lr, "name": "loss", "weight_decay": 0.0})
    return torch.optim.AdamW(groups, weight_decay=cfg.optim.weight_decay), extra


def lr_schedule(kind: str, total_steps: float, warmup_steps: float = 0.0) -> Callable[[int], float]:
    """The learning-rate factor of each optimiser step: a linear warm-up from 0 over `warmup_steps`, then cosine
    decay to 0 at `total_steps` ("cosine") or a constant 1 ("none")."""
    total = max(1.0, float(total_steps))
    warm = max(0.0, min(float(warmup_steps), total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if kind != "cosine":
            return 1.0
        t = min(step - warm, total - warm) / max(total - warm, 1.0)
        return 0.5 * (1 + math.cos(math.pi * t))

    return factor
