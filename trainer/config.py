"""Frozen, JSON-serialisable configuration of a training run.

A run directory stores the config it was trained with (``config.json`` inside the manifest), so a run can
be resumed, re-evaluated or re-embedded later without guessing its settings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

CONFIG_VERSION = 2
# Loss parameters added since a config version, with the value a run of that loss written before it trained with
# (a config stores only the parameters set away from their defaults, so an older run must not pick up a new
# default when it is resumed or shown). Version 2: the distance_scale of lifted structure and generalized lifted
# structure (1 before; bench/README.md "recipe.lifted_scale").
LOSS_PARAMS_BEFORE: dict[int, dict[str, dict[str, Any]]] = {
    2: {"lifted_structure": {"distance_scale": 1.0}, "generalized_lifted_structure": {"distance_scale": 1.0}},
}


@dataclass(frozen=True)
class LossConfig:
    """Which metric-learning loss, its parameters (name -> value) and the miner feeding it."""

    name: str = "multi_similarity"
    params: dict[str, Any] = field(default_factory=dict)
    miner: str = "multi_similarity"
    miner_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet18"
    pretrained: bool = True
    weights_file: str | None = None  # a local torchvision state_dict; overrides `pretrained`
    embedding_dim: int = 128
    head_bn: bool = False
    freeze_backbone_epochs: int = 0
    head_only: bool = False  # backbone frozen for good; its features are cached in the run


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = ""
    test_dir: str | None = None  # explicit held-out folder; otherwise a class-disjoint split
    holdout_fraction: float = 0.5  # share of classes held out when no test_dir is given
    holdout_classes: tuple[str, ...] | None = None  # explicit held-out class names
    image_size: int = 224
    augment: bool = True
    crop_scale: float = 0.5  # smallest share of the image area a training crop keeps (RandomResizedCrop)
    # mirror training images left-right when augmenting: right for most photos, wrong where mirroring changes
    # what the image shows (digits, letters, text)
    flip: bool = True
    batch_classes: int = 8  # C
    batch_per_class: int = 4  # K
    num_workers: int = 2
    # an edits file (trainer/data/edits.py): images excluded or relabelled without touching the folder
    edits: str | None = None


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 10
    lr: float = 1e-4
    loss_lr: float = 1e-2  # learning rate of proxies / classifier weights (their own group, no weight decay)
    # embedding head's lr = lr x this. None: 10 when the backbone starts from trained weights (a new head on
    # trained features), 1 when the whole network starts at random (see head_lr_multiplier)
    head_lr_mult: float | None = None
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # "cosine" | "none"
    warmup_epochs: float = 0.0  # learning rates rise linearly from 0 over this many epochs, then the schedule
    batches_per_epoch: int | None = None  # None: about one pass over the training images


def _migrate(d: dict[str, Any], version: int) -> dict[str, Any]:
    """A config dict of an older version as the current one: the loss parameters added since, at the values the
    older run trained with (LOSS_PARAMS_BEFORE)."""
    loss = d.get("loss")
    if not isinstance(loss, dict):
        return d
    added: dict[str, Any] = {}
    for since, by_loss in sorted(LOSS_PARAMS_BEFORE.items()):
        if version < since:
            added.update(by_loss.get(loss.get("name", LossConfig.name), {}))
    if not added:
        return d
    params = loss.get("params", {})
    if not isinstance(params, dict):
        return d  # _build refuses it with its name
    return {**d, "loss": {**loss, "params": {**added, **params}}}


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    amp: str = "auto"  # "auto" | "off" | "fp16" | "bf16"
    eval_every: int = 1
    # "last_best": keep the checkpoints of the last epoch and of the best one by held-out MAP@R (a ResNet-18
    # checkpoint is 135 MB); "all": every epoch's
    keep_checkpoints: str = "last_best"
    # dotted keys (``optim.lr``, ``loss.name``, ...) whose values the recipe (trainer/recipe.py) chooses when the
    # run starts, from what is known then; every other key is the user's choice and is kept as it is
    auto: tuple[str, ...] = ()
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a dict written by :meth:`to_dict`; unknown keys are refused with their name."""
        if not isinstance(d, dict):
            raise ValueError(f"a config must be an object, not {d!r}")
        d = dict(d)
        version = d.pop("version", CONFIG_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"config version {version!r} is not a number")
        if version > CONFIG_VERSION:
            raise ValueError(f"config version {version} is newer than this program understands ({CONFIG_VERSION})")
        d = _migrate(d, version)
        parts = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "optim": OptimConfig}
        kwargs: dict[str, Any] = {}
        own = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in d.items():
            if key in parts:
                kwargs[key] = _build(parts[key], value)
            elif key in own:
                kwargs[key] = _check_type("TrainConfig", key, str(own[key].type), value)
            else:
                raise ValueError(f"unknown config key {key!r}")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "TrainConfig":
        """Like dataclasses.replace, also for nested parts: ``cfg.replace(**{"optim.lr": 1e-3})``."""
        nested: dict[str, dict[str, Any]] = {}
        flat: dict[str, Any] = {}
        for key, value in changes.items():
            if "." in key:
                part, name = key.split(".", 1)
                nested.setdefault(part, {})[name] = value
            else:
                flat[key] = value
        for part, values in nested.items():
            flat[part] = dataclasses.replace(getattr(self, part), **values)
        return dataclasses.replace(self, **flat)


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),),
          "dict": (dict,), "tuple": (list, tuple)}


def _check_type(owner: str, name: str, annotation: str, value: Any) -> Any:
    """``value`` if it has the field's type (JSON spelling: a list for a tuple, an int for a float)."""
    allowed: tuple[type, ...] = ()
    for part in annotation.split("|"):
        allowed += _TYPES.get(part.strip().split("[")[0], ())
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if ok and isinstance(value, (list, tuple)):
        ok = all(isinstance(v, str) for v in value)
    if ok and isinstance(value, dict):
        ok = all(isinstance(k, str) for k in value)
    if not ok:
        raise ValueError(f"config {owner}.{name} must be {annotation.replace('tuple[str, ...]', 'a list of names')}, "
                         f"not {value!r}")
    return tuple(value) if isinstance(value, list) else value


def _build(klass: type, value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"config section {klass.__name__} must be an object, not {value!r}")
    fields = {f.name: f for f in dataclasses.fields(klass)}
    unknown = set(value) - set(fields)
    if unknown:
        raise ValueError(f"unknown {klass.__name__} keys: {sorted(unknown)}")
    checked = {k: _check_type(klass.__name__, k, str(fields[k].type), v) for k, v in value.items()}
    return klass(**checked)


# Named starting points for the GUI and the CLI (``--preset``): dotted keys for :meth:`TrainConfig.replace`.
PRESETS: dict[str, dict[str, Any]] = {
    "Quick look (CPU)": {
        # what makes it quick: the small CNN at 48 px from random weights, ten epochs. Everything else (learning
        # rates, loss and miner, C x K, augmentation, mirroring, dimensions) is left to the recipe, which fits
        # it to the folder. The preset used to fix triplet + semi-hard at lr 3e-4 with 8 x 8 batches: on the
        # demo digits cut to 2 epochs that fell below the untrained network (held-out MAP@R 0.442 -> 0.426 ->
        # 0.411); with the recipe 0.442 -> 0.547 -> 0.540, and 0.568 after ten epochs, above it at every one
        # (bench/README.md, "quality.presets")
        "model.backbone": "small_cnn",
        "model.pretrained": False,
        "data.image_size": 48,
        "data.batch_classes": 8,
        "optim.epochs": 10,
    },
    "Head only (frozen pretrained backbone)": {
        "model.backbone": "resnet18",
        "model.pretrained": True,
        "model.head_only": True,
        "model.embedding_dim": 128,
        "data.image_size": 224,
        "data.augment": False,
        "optim.epochs": 30,
        "optim.lr": 1e-3,
    },
    "Quality": {
        "model.backbone": "resnet50",
        "model.pretrained": True,
        "model.embedding_dim": 512,
        "model.head_bn": True,
        "model.freeze_backbone_epochs": 1,
        "data.image_size": 224,
        "data.augment": True,
        "data.batch_classes": 16,
        "data.batch_per_class": 4,
        "optim.epochs": 40,
        "optim.lr": 1e-5,
        "loss.name": "proxy_anchor",
        "loss.miner": "none",
    },
}


# plain ids for the command line (``--preset quick-cpu``); the titles stay the GUI's names
PRESET_IDS: dict[str, str] = {
    "quick-cpu": "Quick look (CPU)",
    "head-only": "Head only (frozen pretrained backbone)",
    "quality": "Quality",
}


def preset_title(name: str) -> str:
    """The preset's title for an id or a title; ValueError naming the ids otherwise."""
    if name in PRESETS:
        return name
    if name in PRESET_IDS:
        return PRESET_IDS[name]
    raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESET_IDS)}")


def flat_config(d: dict, prefix: str = "") -> dict:
    """A configuration dict as dotted keys (``optim.lr``); loss and miner parameters stay one value each."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("params", "miner_params"):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
