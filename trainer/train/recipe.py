"""The training recipe: settings derived from what is known before training, each with its reason.

What is known: whether the backbone really starts from trained weights (after the download or the weights file
succeeded or failed), the folder's image sizes and colours, its number of training classes and images per
class, and the device. :func:`derive` turns these :class:`Facts` into values for the keys the user left to the
recipe (``TrainConfig.auto``); a key the user set is never changed. The CLI (``train``, ``train --dry-run``), the
trainer (which resolves the recipe when a run starts, after loading the weights) and the GUI's form all use
this one function.

The rules, and the measurements behind them, are in bench/README.md ("Open-set quality").
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trainer.config import TrainConfig

RECIPE_LOSS = "normalized_softmax"  # the recipe's loss from FEW_CLASSES training classes on
FEW_CLASSES = 20
RECIPE_TEMPERATURE = 0.07  # normalized softmax, chosen by the recipe (bench/README.md, quality.temperature)
FEW_CLASSES_LOSS = "multi_similarity"
# normalized softmax from random weights: Adam at 2e-3 instead of 1e-3 from this median of images per training
# class on (scratch_lr)
MANY_IMAGES_PER_CLASS = 48
# losses that ask every same-class pair to (nearly) coincide: from random weights they get a BatchNorm head
# (head_bn_for_loss)
BN_HEAD_FROM_SCRATCH = frozenset({"lifted_structure", "generalized_lifted_structure", "threshold_consistent"})

# every key the recipe may choose; the CLI and the GUI leave the ones the user did not set to it
RECIPE_KEYS: tuple[str, ...] = (
    "model.backbone", "model.embedding_dim", "model.head_bn", "data.image_size", "data.augment", "data.crop_scale", "data.flip",
    "data.batch_classes", "data.batch_per_class", "optim.lr", "optim.loss_lr", "optim.head_lr_mult",
    "optim.warmup_epochs", "optim.weight_decay", "optim.scheduler", "loss.name", "loss.miner", "loss.params",
)


@dataclass(frozen=True)
class Facts:
    """What is known about the run before its first batch."""

    trained_weights: bool  # the backbone's weights were really loaded (ImageNet or a weights file)
    n_train_classes: int
    images_per_class: int  # median over the training classes
    median_side: int | None = None  # median of min(width, height) over the images looked at; None: unknown
    grayscale_share: float | None = None  # share of the images looked at whose three channels are equal
    device: str = "cpu"  # "cpu" | "cuda" | "mps"

    def describe(self) -> str:
        parts = [
            "trained weights loaded" if self.trained_weights else "backbone starts from random weights",
            f"{self.n_train_classes} training classes, median {self.images_per_class} images per class",
        ]
        if self.median_side is not None:
            parts.append(f"images ~{self.median_side} px on their short side")
        if self.grayscale_share is not None:
            parts.append(f"{100 * self.grayscale_share:.0f} % grayscale")
        parts.append(f"device {self.device}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Choice:
    key: str
    value: object
    reason: str


def _round_up(x: float, step: int) -> int:
    return int(step * max(1, math.ceil(x / step)))


CPU_BACKBONE = "small_cnn"


def choose_backbone(facts: Facts, configured: str) -> Choice:
    """Without trained weights on a CPU, the small CNN; otherwise the configured backbone (ResNet-18 by default)."""
    if not facts.trained_weights and facts.device == "cpu":
        return Choice("model.backbone", CPU_BACKBONE,
                      "no trained weights and no GPU: a small CNN trains in minutes where a ResNet trained from "
                      "scratch on a CPU takes hours (choose a ResNet yourself to train one anyway)")
    return Choice("model.backbone", configured, "trained weights loaded" if facts.trained_weights else
                  "a GPU trains this backbone from scratch in reasonable time")


def rules(facts: Facts, backbone_default_size: int, fixed_image_size: bool,
          backbone: Choice | None = None) -> list[Choice]:
    """The recipe for `facts`, every key of RECIPE_KEYS with its value and reason (the backbone's, when given,
    first: the image size depends on it)."""
    out: list[Choice] = [backbone] if backbone is not None else []

    def add(key: str, value: object, reason: str) -> None:
        out.append(Choice(key, value, reason))

    trained = facts.trained_weights
    gpu = facts.device in ("cuda", "mps")
    # ---- image size
    if fixed_image_size:
        add("data.image_size", backbone_default_size, "the backbone only takes this size")
    elif trained:
        add("data.image_size", backbone_default_size,
            "trained weights work best at the scale they were trained at")
    else:
        cap = 128 if gpu else 64
        side = facts.median_side
        size = cap if side is None else max(32, min(cap, _round_up(side, 16)))
        why = (f"from random weights small inputs train many times faster{'' if gpu else ' on a CPU'}, "
               f"and a network trained from scratch does not need ImageNet's scale (cap {cap} px")
        why += ")" if side is None else f"; the images are ~{side} px)"
        add("data.image_size", size, why)
    # ---- learning rates and schedule
    if trained:
        add("optim.lr", 1e-4, "trained features are fine-tuned gently (Adam)")
        add("optim.head_lr_mult", 10.0, "the new head starts at random and must catch up with trained features")
        add("optim.warmup_epochs", 1.0, "one epoch of warm-up keeps the random head from disturbing trained "
                                        "features while it settles")
    else:
        out.append(scratch_lr(facts, recipe_loss(facts)))
        add("optim.head_lr_mult", 1.0, "from scratch the whole network is new: head and backbone at one rate")
        add("optim.warmup_epochs", 0.5, "half an epoch of warm-up lets BatchNorm statistics settle before full "
                                        "steps")
    add("optim.scheduler", "cosine", "cosine decay to zero: the last epochs refine instead of jumping around")
    add("optim.weight_decay", 5e-4 if not trained else 1e-4,
        "weight decay against over-fitting the training classes" + ("" if trained else " (stronger from scratch)"))
    add("optim.loss_lr", 1e-2, "class weights of the loss move 10-100x faster than the network, or they drag it "
                               "towards random directions")
    # ---- loss
    if recipe_loss(facts) == FEW_CLASSES_LOSS:
        add("loss.name", FEW_CLASSES_LOSS,
            f"only {facts.n_train_classes} training classes: a classification loss would learn little more than "
            f"{facts.n_train_classes} directions; a pair loss keeps more of what unseen classes need")
        add("loss.miner", "multi_similarity", "the loss's own miner: the informative pairs of each batch")
        add("loss.params", {}, "the loss's literature defaults")
    else:
        add("loss.name", RECIPE_LOSS,
            "normalized softmax is among the strongest losses in the Metric Learning Reality Check and needs no "
            "miner")
        add("loss.miner", "none", "a classification loss sees every sample against every class weight")
        add("loss.params", {"temperature": RECIPE_TEMPERATURE},
            f"temperature {RECIPE_TEMPERATURE}: the middle of the peak in our sweeps (0.03-0.05 on photographs, "
            f"0.1 on glyphs; the survey's 0.05-0.1), where the literature default 0.05 sits at its low edge")
    add("model.embedding_dim", 128, "128 dimensions: the usual size for retrieval benchmarks")
    add("model.head_bn", False, "a plain linear head")
    # ---- batches
    k = batch_per_class(facts)
    add("data.batch_per_class", k, f"K = {k} images per class" + (
        "" if k == 4 else f" (median {facts.images_per_class} images per class leaves room for no more)"))
    out.append(batch_classes(facts, recipe_loss(facts)))
    # ---- augmentation
    add("data.augment", True, "random crops and colour changes keep the network from memorising its images")
    if trained:
        add("data.crop_scale", 0.5, "crops keep at least 50 % of the image: trained features tolerate strong crops")
    else:
        add("data.crop_scale", 0.8, "crops keep at least 80 % of the image: from scratch, smaller crops cut centred "
                                    "objects (icons, characters) into other things (measured on the open-set "
                                    "benchmark, bench/README.md)")
    gray = facts.grayscale_share is not None and facts.grayscale_share >= 0.9
    add("data.flip", not gray, "no mirroring: the images are grayscale (characters, documents, sketches), where "
                               "a mirror image is often another thing" if gray else
        "left-right mirroring: colour photographs usually mean the same mirrored")
    return out


def recipe_loss(facts: Facts) -> str:
    """The recipe's loss: a pair loss for few training classes, normalized softmax from FEW_CLASSES on."""
    return FEW_CLASSES_LOSS if facts.n_train_classes < FEW_CLASSES else RECIPE_LOSS


def scratch_lr(facts: Facts, loss_name: str) -> Choice:
    """Adam's rate from random weights for `loss_name`: 2e-3 for normalized softmax with many images per class
    (median >= MANY_IMAGES_PER_CLASS), Adam's usual 1e-3 otherwise.

    Measured (held-out MAP@R, 3 seeds, bench/README.md "recipe.lr"): normalized softmax on glyphs (64 images per
    class) 0.691 at 2e-3 against 0.663 at 1e-3; photos (24 per class) 0.341 against 0.364 and icons (9) 0.035
    against 0.056 lose; multi-similarity on the demo digits (180 per class) loses too (0.473 against 0.568 after
    10 epochs of the Quick look preset), so the rule stays with the loss it was measured for."""
    if loss_name == RECIPE_LOSS and facts.images_per_class >= MANY_IMAGES_PER_CLASS:
        return Choice("optim.lr", 2e-3, f"normalized softmax from scratch with many images per class (median "
                                        f"{facts.images_per_class}): twice Adam's usual rate learns more in a short "
                                        f"run (measured on the open-set benchmark, bench/README.md \"recipe.lr\")")
    return Choice("optim.lr", 1e-3, "a network trained from scratch needs Adam's usual rate")


def batch_per_class(facts: Facts) -> int:
    """K: 4 images of each class in a batch, 2 when the median class has fewer than 8."""
    return 4 if facts.images_per_class >= 8 else 2


def batch_classes(facts: Facts, loss_name: str) -> Choice:
    """C, the classes of a batch, for `loss_name`: 16 on a CPU and 32 on a GPU (fewer when the folder has fewer
    training classes), half that for normalized softmax from random weights with many images per class (median >=
    MANY_IMAGES_PER_CLASS).

    Measured (held-out MAP@R, ResNet-18 from scratch at 48 px, 4 epochs, bench/README.md "recipe.batch"): normalized
    softmax on glyphs (64 images per class) with 8 classes of 4 a batch 0.694 / 0.682 / 0.698 on seeds 0 / 1 / 2
    against 0.671 / 0.676 / 0.673 with 16: twice the steps help a short run under-fit on many images per class, as
    twice the rate does (scratch_lr). On photos (24 per class) it loses (0.330 against 0.361, seed 0), as twice the
    rate does there, so the rule keeps scratch_lr's condition. A classification loss compares every sample with
    every class weight, so it does not need many classes in a batch; pair losses keep the full batch."""
    gpu = facts.device in ("cuda", "mps")
    k = batch_per_class(facts)
    c_cap = 32 if gpu else 16
    halved = (loss_name == RECIPE_LOSS and not facts.trained_weights
              and facts.images_per_class >= MANY_IMAGES_PER_CLASS)
    if halved:
        c_cap //= 2
    c = max(2, min(c_cap, facts.n_train_classes))
    if c == facts.n_train_classes:
        why = f"all {facts.n_train_classes} training classes"
    elif halved:
        why = (f"{c_cap} for normalized softmax from scratch with many images per class (median "
               f"{facts.images_per_class}), {c * k} images per batch: twice the steps of an epoch learn more in a "
               f"short run (measured on the open-set benchmark, bench/README.md \"recipe.batch\")")
    else:
        why = f"{c_cap} on {'a GPU' if gpu else 'a CPU'}, for {c * k} images per batch"
    return Choice("data.batch_classes", c, f"C = {c} classes per batch: {why}")


def miner_for_loss(loss_name: str, facts: Facts) -> Choice | None:
    """The miner for a loss the user picked: its usual one, except semi-hard mining from random weights.

    A random network's embeddings start nearly collinear (mean cosine ~0.8 within a batch of icons): the
    semi-hard triplets all sit inside the margin and the loss does not fall (~0.05 of its margin 0.1 from the first
    epoch to the last, train MAP@R not rising: icons 0.016 held-out after 10 epochs, 0.016 after 30, against 0.035
    untrained). Every triplet of
    the batch (no miner; the loss averages the ones inside the margin) learns from the first batches: icons
    0.041, photos 0.369 against 0.336 with semi-hard (bench/README.md, "recipe.miner")."""
    from trainer.model.losses import LOSSES

    loss = LOSSES.get(loss_name)
    if loss is None:
        return None
    if loss.default_miner == "semihard_triplets" and not facts.trained_weights:
        return Choice("loss.miner", "none", f"every triplet of the batch: from random weights, semi-hard mining "
                                            f"keeps {loss.name} stuck inside its margin (the embeddings start nearly "
                                            f"collinear); semi-hard is its usual miner on trained weights")
    return Choice("loss.miner", loss.default_miner, f"the usual miner of {loss.name}")


def head_bn_for_loss(loss_name: str, facts: Facts) -> Choice | None:
    """The head for a loss the user picked: a BatchNorm head from random weights for the losses of
    BN_HEAD_FROM_SCRATCH; None (the rules' plain linear head) otherwise.

    Lifted structure and generalized lifted structure pull every positive pair to distance 0 and the
    threshold-consistent margin term pulls it above cosine 0.9. A random network's embeddings start nearly collinear
    (mean cosine 0.77 within a training batch of icons), and these pulls collapse them: after 30 epochs on icons
    held-out MAP@R 0.035 and 0.021 for the last two against 0.035 untrained. The BatchNorm head centres the
    embeddings (mean cosine ~0 within a batch) and both climb, to 0.047 and 0.073 after 30 epochs (bench/README.md,
    "recipe.head_bn"); lifted structure (with its distances scaled by 8) ends at 0.107 with it against 0.087
    without on icons' seed 1, 0.392 against 0.361 on photos, 0.650 against 0.657 on glyphs. Other losses lost with it
    (triplet 0.019 against 0.041 on icons after 10 epochs, contrastive 0.024 against 0.033), and trained features
    need no centring, so the rule stays with these two and random weights."""
    if loss_name in BN_HEAD_FROM_SCRATCH and not facts.trained_weights:
        return Choice("model.head_bn", True, f"BatchNorm in the head: from random weights the embeddings start "
                                             f"nearly collinear, and {loss_name}'s pull of same-class pairs "
                                             f"together collapses them without it (measured on the open-set "
                                             f"benchmark, bench/README.md \"recipe.head_bn\")")
    return None


def derive(cfg: TrainConfig, facts: Facts) -> tuple[TrainConfig, list[Choice]]:
    """`cfg` with the keys of ``cfg.auto`` set by the recipe for `facts`; the choices made, with reasons."""
    from trainer.model.backbone_specs import backbone_spec

    auto = set(cfg.auto)
    bb = choose_backbone(facts, cfg.model.backbone) if "model.backbone" in auto else None
    spec = backbone_spec(bb.value if bb is not None else cfg.model.backbone)
    chosen = [c for c in rules(facts, spec.default_image_size, spec.fixed_image_size, bb) if c.key in auto]
    changes = {c.key: c.value for c in chosen}
    if "loss.miner" in auto and "loss.name" not in auto:
        # the user picked the loss: its own usual miner, not the recipe's
        miner = miner_for_loss(cfg.loss.name, facts)
        if miner is not None:
            changes["loss.miner"] = miner.value
            chosen = [miner if c.key == "loss.miner" else c for c in chosen]
    if "optim.lr" in auto and "loss.name" not in auto and not facts.trained_weights:
        # the user picked the loss: the rate from random weights for that loss
        lr = scratch_lr(facts, cfg.loss.name)
        changes["optim.lr"] = lr.value
        chosen = [lr if c.key == "optim.lr" else c for c in chosen]
    if "data.batch_classes" in auto and "loss.name" not in auto:
        # the user picked the loss: the batch for that loss
        c = batch_classes(facts, cfg.loss.name)
        changes["data.batch_classes"] = c.value
        chosen = [c if ch.key == "data.batch_classes" else ch for ch in chosen]
    if "model.head_bn" in auto and "loss.name" not in auto:
        # the user picked the loss: the head for that loss
        head = head_bn_for_loss(cfg.loss.name, facts)
        if head is not None:
            changes["model.head_bn"] = head.value
            chosen = [head if c.key == "model.head_bn" else c for c in chosen]
    if "loss.params" in auto and "loss.name" not in auto:
        changes.pop("loss.params", None)
        chosen = [c for c in chosen if c.key != "loss.params"]
    return cfg.replace(**changes), chosen


def format_choices(choices: Sequence[Choice], facts: Facts) -> list[str]:
    """Lines for the log and ``--dry-run``: what was known, then each choice with its reason."""
    lines = [f"recipe from: {facts.describe()}"]
    for c in choices:
        value = c.value if not isinstance(c.value, float) else f"{c.value:g}"
        lines.append(f"recipe: {c.key} = {value}  ({c.reason})")
    return lines


# ---------------------------------------------------------------------------------------------------- facts
def image_facts(paths: Sequence[str | os.PathLike], *, limit: int = 200, seed: int = 0) -> tuple[int | None,
                                                                                               float | None]:
    """(median short side, share of grayscale images) over a seeded sample of at most `limit` images.

    Sizes come from the file headers; the colour test decodes a 32-px draft of each image. Files that cannot be
    read are passed over (the scan has reported them already)."""
    from PIL import Image

    if not paths:
        return None, None
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(paths))[:limit]
    sides: list[int] = []
    gray = 0
    looked = 0
    for i in pick:
        try:
            with Image.open(paths[int(i)]) as im:
                sides.append(min(im.size))
                if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
                    gray += 1
                else:
                    im.draft("RGB", (32, 32))
                    a = np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.int16)
                    if np.abs(a[..., 0] - a[..., 1]).max() <= 8 and np.abs(a[..., 1] - a[..., 2]).max() <= 8:
                        gray += 1
                looked += 1
        except (OSError, ValueError):
            continue
    if not looked:
        return None, None
    return int(statistics.median(sides)), gray / looked


def data_facts(paths: Sequence[str | os.PathLike], labels: np.ndarray, train_mask: np.ndarray, *,
               trained_weights: bool, device: str, seed: int = 0) -> Facts:
    """Facts of a scanned folder and its split (the images looked at are the training images)."""
    labels = np.asarray(labels)
    train = np.flatnonzero(np.asarray(train_mask))
    counts = np.bincount(labels[train]) if len(train) else np.zeros(0, dtype=np.int64)
    counts = counts[counts > 0]
    side, gray = image_facts([paths[int(i)] for i in train], seed=seed)
    return Facts(trained_weights=trained_weights, n_train_classes=int(len(counts)),
                 images_per_class=int(np.median(counts)) if len(counts) else 0, median_side=side,
                 grayscale_share=gray, device=device)


def resolve(cfg: TrainConfig, samples, device_type: str) -> tuple[TrainConfig, list[Choice], Facts, str | None]:
    """The recipe for a run's scanned samples: (resolved config, choices, facts, a warning or None).

    Tries the backbone's trained weights first (the download fills torchvision's cache), so the recipe is the one
    for the weights the run will really start from."""
    from trainer.data.loader import sample_files
    from trainer.model.backbones import probe_weights
    from trainer.store import SPLIT_TRAIN

    trained, why = probe_weights(cfg.model)
    warning = None
    if cfg.model.pretrained and not trained and cfg.model.weights_file is None and "random init" not in why:
        warning = f"{why}: the recipe is the one for random weights"
    facts = data_facts(sample_files(samples), samples.labels, samples.split == SPLIT_TRAIN,
                       trained_weights=trained, device=device_type, seed=cfg.seed)
    resolved, choices = derive(cfg, facts)
    return resolved, choices, facts, warning


def resolve_logged(cfg: TrainConfig, samples, device_type: str, log) -> TrainConfig:
    """:func:`resolve`, with its warning and every choice said through ``log(message, level)``: the one way the
    trainer, lr-find and ``train --dry-run`` report the recipe."""
    resolved, choices, facts, warning = resolve(cfg, samples, device_type)
    if warning:
        log(warning, "warning")
    for line in format_choices(choices, facts):
        log(line, "info")
    return resolved


def estimate_epoch_seconds(cfg: TrainConfig, n_train: int, n_all: int, device_type: str = "cpu",
                           n_classes: int = 10) -> tuple[float, float]:
    """(training seconds, embedding seconds) of one epoch, timed on two synthetic batches of the configured
    network and batch size after one warm-up step; image decoding is not included."""
    import time

    import torch

    from trainer.model.backbones import build_model
    from trainer.model.losses import LOSSES, build_loss

    spec = LOSSES[cfg.loss.name]
    model_cfg = cfg.model.__class__(**{**cfg.model.__dict__, "pretrained": False, "weights_file": None})
    model, _ = build_model(model_cfg, normalize=spec.normalized, log=lambda m: None)
    dev = torch.device(device_type)
    model.to(dev).train()
    loss_fn = build_loss(cfg.loss.name, dict(cfg.loss.params), embedding_dim=cfg.model.embedding_dim,
                         num_classes=max(2, n_classes)).to(dev)
    batch = cfg.data.batch_classes * cfg.data.batch_per_class
    s = cfg.data.image_size
    x = torch.randn(batch, 3, s, s, device=dev)
    y = torch.arange(batch, device=dev) % max(2, min(n_classes, cfg.data.batch_classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    per_batch = min(times[1:])
    model.eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        per_image_eval = (time.perf_counter() - t0) / batch
    n_batches = cfg.optim.batches_per_epoch or max(1, n_train // batch)
    return per_batch * n_batches, per_image_eval * n_all


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe_estimate(train_s: float, embed_s: float, device: str, epochs: int) -> str:
    per = train_s + embed_s
    return (f"about {format_duration(per)} per epoch on {device} ({format_duration(train_s)} training, "
            f"{format_duration(embed_s)} embedding every image); {epochs} epochs: about "
            f"{format_duration(per * epochs)}")
