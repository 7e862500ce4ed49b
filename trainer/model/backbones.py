"""Backbone registry (torchvision + a small CPU CNN) and the embedding head on top of it.

A backbone maps images to pooled feature vectors (its ImageNet classifier removed); the head maps those
features to the D-dimensional embedding, L2-normalised when the loss works on the unit sphere.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.transforms import v2

from trainer.config import ModelConfig

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


from trainer.model.backbone_specs import BACKBONES, BackboneSpec, backbone_spec, check_image_size  # noqa: F401,E402


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU-maxpool blocks and global average pooling: ~190k parameters, for 32-64 px images."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 96, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in channels:
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.body(x)), 1)


class EmbeddingNet(nn.Module):
    """Backbone features -> Linear(feature_dim, D) [-> BatchNorm1d] [-> L2 normalisation]."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        embedding_dim: int,
        *,
        head_bn: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.embedding_dim = embedding_dim
        self.normalize = normalize
        head: list[nn.Module] = [nn.Linear(feature_dim, embedding_dim)]
        if head_bn:
            head.append(nn.BatchNorm1d(embedding_dim))
        self.head = nn.Sequential(*head)
        self._backbone_frozen = False

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone only: (B, 3, H, W) -> (B, feature_dim); what the head-only mode caches once."""
        return self.backbone(x)

    def embed_features(self, f: torch.Tensor) -> torch.Tensor:
        """Head only: (B, feature_dim) -> (B, D), normalised when the loss expects the unit sphere."""
        e = self.head(f)
        return F.normalize(e, p=2, dim=1) if self.normalize else e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_features(self.features(x))

    @property
    def backbone_frozen(self) -> bool:
        return self._backbone_frozen

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or restart) training the backbone: no gradients, and its BatchNorm statistics kept fixed."""
        self._backbone_frozen = bool(frozen)
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.backbone.train(self.training and not frozen)

    def train(self, mode: bool = True) -> "EmbeddingNet":
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()
        return self


def _weights_enum(spec: BackboneSpec):
    return torchvision.models.get_weight(f"{spec.weights_enum}.DEFAULT")


def _cached_weights_path(weights) -> Path:
    """Where torch.hub keeps (or would keep) the downloaded weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _download_state_dict(weights) -> dict[str, torch.Tensor]:
    """The ImageNet state_dict from torchvision's cache, downloading it when missing."""
    return weights.get_state_dict(progress=False)


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):  # saved from DataParallel
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ValueError(f"weights file {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, ... are all "not a state_dict"
        raise ValueError(f"weights file {path}: cannot be read as a torch state_dict ({e})") from e
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {path}: expected a state_dict (parameter name -> tensor), got {type(obj).__name__}")
    return _strip_prefixes(obj)


def _load_backbone_state(
    net: nn.Module, state: Mapping[str, torch.Tensor], classifier: str | None, source: str
) -> None:
    """Load `state` into `net` strictly, ignoring the ImageNet classifier (it is replaced by Identity anyway)."""

    def keep(k: str) -> bool:
        return classifier is None or not (k == classifier or k.startswith(classifier + "."))

    expected = {k: v for k, v in net.state_dict().items() if keep(k)}
    given = {k: v for k, v in state.items() if keep(k)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k}: file {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(given)
        if given[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" ... (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {what}: {', '.join(items[:5])}{more}")
        raise ValueError(f"{source} does not match the architecture: " + "; ".join(parts))
    net.load_state_dict(given, strict=False)


def _replace_submodule(net: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    setattr(parent, child, new)  # Sequential children are named "0", "1", ...: setattr works for them too


def build_backbone(
    name: str, *, pretrained: bool, weights_file: str | os.PathLike | None = None, log: Callable[[str], None] = print
) -> tuple[nn.Module, str]:
    """The backbone without its classifier, and a note saying where its weights came from."""
    spec = backbone_spec(name)
    if spec.builder is None:
        net: nn.Module = SmallCNN()
        note = "random init: small_cnn has no pretrained weights; trained from scratch"
    else:
        net = torchvision.models.get_model(spec.builder, weights=None)
        note = f"random init: pretrained weights not requested for {name}"
    if weights_file is not None:
        path = Path(weights_file)
        _load_backbone_state(net, _read_weights_file(path), spec.classifier, f"weights file {path} ({name})")
        note = f"weights file: {path}"
    elif pretrained and spec.weights_enum is not None:
        weights = _weights_enum(spec)
        cached = _cached_weights_path(weights)
        was_cached = cached.is_file()
        try:
            state = _download_state_dict(weights)
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as e:
            # URLError is an OSError; a truncated or corrupt cached file raises RuntimeError / UnpicklingError
            if was_cached:
                what = f"could not read the cached ImageNet weights {cached} for {name}"
                fix = "delete that file to download it again"
            else:
                what = f"could not download ImageNet weights for {name}"
                fix = f"to use them offline, put {cached.name} from {weights.url} into {cached.parent}"
            note = f"random init: {what} ({type(e).__name__}: {e}); trained from scratch. To fix: {fix}"
        else:
            _load_backbone_state(net, state, spec.classifier, f"ImageNet weights {cached}")
            note = f"pretrained: ImageNet ({weights.name}) from {cached}"
    if spec.classifier is not None:
        _replace_submodule(net, spec.classifier, nn.Identity())
    log(note)
    return net, note


def weights_note_is_trained(note: str) -> bool:
    """Whether a weights note of :func:`build_backbone` says trained weights were loaded."""
    return note.startswith(("pretrained:", "weights file:"))


def probe_weights(model_cfg: ModelConfig) -> tuple[bool, str]:
    """Before a run: (whether the backbone will start from trained weights, why). Tries the ImageNet download
    (which fills torchvision's cache, so the build that follows reads it from disk); a weights file counts as
    trained (a file that does not load is refused by the build with its reason)."""
    spec = backbone_spec(model_cfg.backbone)
    if model_cfg.weights_file is not None:
        return True, f"weights file {model_cfg.weights_file}"
    if not model_cfg.pretrained or spec.weights_enum is None:
        return False, "random init" + ("" if spec.weights_enum is not None else f": {spec.name} has no trained "
                                                                                  f"weights")
    weights = _weights_enum(spec)
    try:
        _download_state_dict(weights)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as e:
        return False, f"ImageNet weights for {spec.name} could not be loaded ({type(e).__name__}: {e})"
    return True, f"ImageNet weights {weights.name}"


def build_model(
    model_cfg: ModelConfig, *, normalize: bool = True, log: Callable[[str], None] = print
) -> tuple[EmbeddingNet, str]:
    """Backbone + embedding head from the config; returns the model and its weights note for the run log."""
    spec = backbone_spec(model_cfg.backbone)
    backbone, note = build_backbone(
        model_cfg.backbone, pretrained=model_cfg.pretrained, weights_file=model_cfg.weights_file, log=log
    )
    model = EmbeddingNet(
        backbone, spec.feature_dim, model_cfg.embedding_dim, head_bn=model_cfg.head_bn, normalize=normalize
    )
    if model_cfg.head_only:
        model.freeze_backbone(True)
    return model, note


def default_transforms(
    image_size: int,
    augment: bool,
    train: bool,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    *,
    flip: bool = True,
    crop_scale: float = 0.5,
) -> v2.Compose:
    """PIL image -> normalised float tensor (3, S, S); random crop/flip/jitter only when training with augment.

    Set flip=False for data where mirroring changes the class (digits, text).
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    steps: list[nn.Module] = [v2.ToImage()]
    if train and augment:
        steps.append(v2.RandomResizedCrop(image_size, scale=(float(crop_scale), 1.0), antialias=True))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
    else:
        steps += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    return v2.Compose(steps)
