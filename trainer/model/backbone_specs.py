"""The backbones the program knows, as data: names, titles, sizes, weights (no torch or torchvision import).

The window lists them before PyTorch is loaded: importing torchvision for the list took 2 s of its start-up.
:mod:`trainer.model.backbones` builds the networks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    """What the GUI and the trainer need to know about one backbone."""

    name: str
    title: str
    feature_dim: int  # length of the pooled feature vector the head receives
    default_image_size: int
    min_image_size: int
    builder: str | None  # torchvision.models builder name; None for our own small_cnn
    weights_enum: str | None  # torchvision weights enum class name, e.g. "ResNet18_Weights"
    classifier: str | None  # dotted path of the ImageNet classifier that is replaced by Identity
    fixed_image_size: bool = False  # True when the network only accepts default_image_size (ViT)


BACKBONES: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec("small_cnn", "Small CNN (fast on CPU, 32-64 px)", 128, 64, 16, None, None, None),
        BackboneSpec("resnet18", "ResNet-18", 512, 224, 32, "resnet18", "ResNet18_Weights", "fc"),
        BackboneSpec("resnet34", "ResNet-34", 512, 224, 32, "resnet34", "ResNet34_Weights", "fc"),
        BackboneSpec("resnet50", "ResNet-50", 2048, 224, 32, "resnet50", "ResNet50_Weights", "fc"),
        BackboneSpec(
            "mobilenet_v3_small", "MobileNetV3 Small", 576, 224, 32, "mobilenet_v3_small",
            "MobileNet_V3_Small_Weights", "classifier",
        ),
        BackboneSpec(
            "mobilenet_v3_large", "MobileNetV3 Large", 960, 224, 32, "mobilenet_v3_large",
            "MobileNet_V3_Large_Weights", "classifier",
        ),
        BackboneSpec(
            "efficientnet_b0", "EfficientNet-B0", 1280, 224, 32, "efficientnet_b0", "EfficientNet_B0_Weights",
            "classifier",
        ),
        BackboneSpec(
            "convnext_tiny", "ConvNeXt-Tiny", 768, 224, 32, "convnext_tiny", "ConvNeXt_Tiny_Weights",
            "classifier.2",
        ),
        BackboneSpec(
            "vit_b_16", "ViT-B/16 (224 px only)", 768, 224, 224, "vit_b_16", "ViT_B_16_Weights", "heads",
            fixed_image_size=True,
        ),
    )
}


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of backbone `name`; a clear ValueError listing the known ones otherwise."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}") from None


def check_image_size(backbone: str, image_size: int) -> None:
    """Refuse an image size the backbone cannot take (too small to pool, or ViT at anything but 224)."""
    spec = backbone_spec(backbone)
    if spec.fixed_image_size and image_size != spec.default_image_size:
        raise ValueError(f"{spec.title} only accepts {spec.default_image_size} px images, not {image_size} px")
    if image_size < spec.min_image_size:
        raise ValueError(f"{spec.title} needs images of at least {spec.min_image_size} px, not {image_size} px")
