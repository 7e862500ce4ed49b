"""Which settings cannot train: one set of checks for the command line, the window's form and the trainer, so all
three refuse the same settings with the same words."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from trainer.config import DataConfig, TrainConfig


def miner_problem(loss: str, miner: str, loss_params: dict | None = None, miner_params: dict | None = None) -> str:
    """Why ``miner`` cannot feed ``loss`` ("" if it can), from trainer.model.losses.compatible."""
    from trainer.model.losses import compatible

    try:
        res = compatible(loss, miner, loss_params or {}, miner_params or {})
    except (KeyError, ValueError) as exc:
        return str(exc)
    return res or ""  # None (or "") when the miner can feed the loss, else a sentence saying why not


def image_size_problem(backbone: str, size: int) -> str:
    """Why ``size`` px images do not suit ``backbone`` ("" if they do), from trainer.model.backbones.check_image_size."""
    from trainer.model.backbone_specs import check_image_size

    try:
        check_image_size(backbone, size)
    except ValueError as exc:
        return str(exc)
    return ""


def fit_to_folder(cfg: TrainConfig, class_counts: dict[str, int] | None) -> TrainConfig:
    """``cfg`` with C lowered to the folder's number of training classes where it asks for more (a preset's C of
    8 on the demo digits, which keep 5 training classes). The form and ``train --preset`` both apply it."""
    if class_counts:
        train, _ = split_counts(class_counts, cfg.data)
        if len(train) >= 2 and cfg.data.batch_classes > len(train):
            return cfg.replace(**{"data.batch_classes": len(train)})
    return cfg


def split_counts(counts: dict[str, int], data: DataConfig) -> tuple[dict[str, int], int]:
    """Training classes with their image counts, and the number of held-out classes, as the split will make them."""
    names = sorted(counts)
    if data.test_dir:
        return dict(counts), 0
    if data.holdout_classes:
        held = set(data.holdout_classes)
        return {n: counts[n] for n in names if n not in held}, len(held & set(names))
    n_hold = int(round(data.holdout_fraction * len(names)))
    n_train = len(names) - n_hold
    # which classes are held out is random; a middle estimate: assume training classes of typical size
    ordered = sorted(names, key=lambda n: counts[n])
    lo = (len(ordered) - n_train) // 2
    return {n: counts[n] for n in ordered[lo:lo + n_train]}, n_hold


def config_problems(cfg: TrainConfig, class_counts: dict[str, int] | None = None, *,
                    run_dir: str | Path | None = None) -> list[str]:
    """Every reason ``cfg`` cannot (or should not) start on a folder with ``class_counts`` into ``run_dir``, in
    plain words that name the setting (the form's label, the command line's option in parentheses)."""
    out: list[str] = []
    d, m, lo, o = cfg.data, cfg.model, cfg.loss, cfg.optim
    if not d.data_dir:
        out.append("Open an image folder first (File ▸ Open folder…).")
    elif not Path(d.data_dir).is_dir():
        out.append(f"The image folder {d.data_dir} does not exist.")
    if d.test_dir and not Path(d.test_dir).is_dir():
        out.append(f"The test folder {d.test_dir} does not exist.")
    if d.edits and not Path(d.edits).is_file():
        out.append(f"The edits file {d.edits} does not exist (--edits).")
    auto = set(cfg.auto)  # what the recipe still chooses is checked once it has chosen (the trainer checks again)
    problem = None if "data.image_size" in auto else image_size_problem(m.backbone, d.image_size)
    if problem:
        out.append(problem + ".")
    problem = None if "loss.miner" in auto else miner_problem(lo.name, lo.miner, lo.params, lo.miner_params)
    if problem:
        out.append(problem[0].upper() + problem[1:] + ("" if problem.endswith(".") else "."))
    if cfg.keep_checkpoints not in ("last_best", "all"):
        out.append(f"Keep checkpoints is {cfg.keep_checkpoints!r}: use \"last_best\" (the last and the best epoch's) "
                   f"or \"all\" (--keep-all-checkpoints).")
    C, K = d.batch_classes, d.batch_per_class
    if K < 2:
        out.append(f"K = {K} image per class gives no positive pair; use K >= 2.")
    if C < 2:
        out.append(f"C = {C} class per batch gives no negative pair; use C >= 2.")
    if not d.test_dir and d.holdout_classes is None and not 0.0 < d.holdout_fraction < 1.0:
        out.append(f"The held-out fraction {d.holdout_fraction} must be between 0 and 1.")
    if class_counts:
        if d.holdout_classes:
            unknown = sorted(set(d.holdout_classes) - set(class_counts))
            if unknown:
                out.append(f"Held-out classes not in the folder: {', '.join(unknown[:5])}.")
        train, n_hold = split_counts(class_counts, d)
        n_train_images = int(sum(train.values()))
        if len(train) < 2:
            out.append(f"Only {len(train)} training class(es) would remain after holding classes out; "
                       "hold out fewer classes or give a test folder.")
        if not d.test_dir and n_hold == 1:
            out.append("Only one held-out class: retrieval metrics need at least two; hold out more classes.")
        if not d.test_dir and n_hold == 0:
            out.append("No class is held out: pick held-out classes, a fraction, or a test folder.")
        if train and C * K > n_train_images:
            out.append(f"A batch of C x K = {C} x {K} = {C * K} images is larger than the {n_train_images} "
                       "training images; lower C or K.")
        if train and C > len(train):
            out.append(f"C = {C} classes per batch, but only {len(train)} training classes; lower C.")
        if train:
            median = float(np.median(list(train.values())))
            if K > median:
                out.append(f"K = {K} images per class is larger than most classes have (median {median:g}); "
                           "images would repeat within a batch — lower K.")
    if o.epochs < 1:
        out.append(f"Train for at least one epoch (epochs = {o.epochs}).")
    for name, value in (("learning rate (lr)", o.lr), ("loss learning rate (loss-lr)", o.loss_lr)):
        if value is not None and not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            out.append(f"The {name} must be a positive number, not {value}.")
    if o.head_lr_mult is not None and not (o.head_lr_mult > 0 and math.isfinite(o.head_lr_mult)):
        out.append(f"The head rate multiplier (head-lr-mult) must be a positive number, not {o.head_lr_mult}.")
    if not (o.weight_decay >= 0 and math.isfinite(o.weight_decay)):
        out.append(f"The weight decay must be 0 or more, not {o.weight_decay}.")
    if o.batches_per_epoch is not None and o.batches_per_epoch < 1:
        out.append(f"Batches per epoch must be at least 1 (batches-per-epoch = {o.batches_per_epoch}).")
    if not (o.warmup_epochs >= 0 and math.isfinite(o.warmup_epochs)):
        out.append(f"The warm-up must be 0 epochs or more (warmup-epochs = {o.warmup_epochs}).")
    if not 0 <= cfg.seed < 2**32:
        out.append(f"The seed must be between 0 and 2^32 - 1 (seed = {cfg.seed}).")
    if m.freeze_backbone_epochs < 0:
        out.append(f"Epochs with a frozen backbone must be 0 or more (freeze-backbone-epochs = "
                   f"{m.freeze_backbone_epochs}).")
    if d.num_workers < 0:
        out.append(f"Loader workers must be 0 or more (workers = {d.num_workers}).")
    if not 0 < d.crop_scale <= 1:
        out.append(f"The crop scale must be above 0 and at most 1 (crop-scale = {d.crop_scale}).")
    if d.data_dir and d.test_dir and _same_or_inside(Path(d.test_dir), Path(d.data_dir)):
        out.append(f"The test folder {d.test_dir} is the training folder or inside it: its \"held-out\" metrics "
                   "would be computed on training images; give a folder of other classes.")
    if d.data_dir and run_dir is not None and _same_or_inside(Path(run_dir), Path(d.data_dir)):
        out.append(f"The run folder {run_dir} is inside the image folder {d.data_dir}: its files would be "
                   "scanned as images the next time; choose a folder outside it.")
    return out


def _same_or_inside(path: Path, folder: Path) -> bool:
    try:
        p, f = path.resolve(), folder.resolve()
    except OSError:
        return False
    return p == f or f in p.parents
