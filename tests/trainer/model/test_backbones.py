"""Backbones and the embedding head: shapes, head-only path, freezing, weights files, the offline fallback."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from PIL import Image

from trainer.model import backbones as M
from trainer.config import ModelConfig


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """An empty torch hub cache in tmp_path, and any download attempt fails as it would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path


def _quiet(msg: str) -> None:
    pass


def _cfg(backbone: str, **kw) -> ModelConfig:
    return ModelConfig(backbone=backbone, pretrained=kw.pop("pretrained", False), **kw)


COMPUTED = ("small_cnn", "resnet18", "mobilenet_v3_small")  # cheap enough to run for real on 2 shared cores


@pytest.mark.parametrize("name", COMPUTED)
def test_backbone_embeds_and_head_only_path_matches(name: str) -> None:
    spec = M.BACKBONES[name]
    model, note = M.build_model(_cfg(name, embedding_dim=12), normalize=True, log=_quiet)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = model.features(x)
        e = model(x)
        e_head = model.embed_features(f)
    assert f.shape == (2, spec.feature_dim)
    assert e.shape == (2, 12)
    assert torch.allclose(e, e_head, atol=1e-6)  # head-only mode sees the same embeddings
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    assert note.startswith("random init")


@pytest.mark.parametrize("name", [n for n in M.BACKBONES if n not in COMPUTED])
def test_large_backbone_shapes_on_meta_device(name: str) -> None:
    """The big networks are built and run on the meta device: every shape is checked, no arithmetic is done."""
    spec = M.BACKBONES[name]
    size = spec.default_image_size if spec.fixed_image_size else spec.min_image_size
    with torch.device("meta"):
        model, note = M.build_model(_cfg(name, embedding_dim=12), normalize=True, log=_quiet)
        model.eval()
        x = torch.empty(2, 3, size, size)
        assert model.features(x).shape == (2, spec.feature_dim)
        assert model(x).shape == (2, 12)
    assert note.startswith("random init")
    if spec.fixed_image_size:
        with pytest.raises(ValueError, match="only accepts 224"):
            M.check_image_size(name, 112)


def test_small_cnn_is_small_and_takes_small_images() -> None:
    model, note = M.build_model(_cfg("small_cnn", embedding_dim=64), normalize=False, log=_quiet)
    n_params = sum(p.numel() for p in model.backbone.parameters())
    assert 100_000 <= n_params <= 300_000
    assert "no pretrained weights" in note
    model.eval()
    for size in (16, 32, 64):
        assert model(torch.randn(3, 3, size, size)).shape == (3, 64)


def test_head_options_and_head_only_equivalence_with_batchnorm() -> None:
    model, _ = M.build_model(_cfg("small_cnn", embedding_dim=8, head_bn=True), normalize=False, log=_quiet)
    assert isinstance(model.head[-1], torch.nn.BatchNorm1d)
    x = torch.randn(6, 3, 32, 32)
    model.train()
    model(x)  # move the BatchNorm statistics away from their initial values
    model.eval()
    with torch.no_grad():
        e = model(x)
        assert torch.allclose(e, model.embed_features(model.features(x)), atol=1e-6)
    assert not torch.allclose(e.norm(dim=1), torch.ones(6), atol=1e-3)  # normalize=False keeps norms


def test_freezing_keeps_backbone_weights_and_statistics() -> None:
    model, _ = M.build_model(_cfg("small_cnn", embedding_dim=8), log=_quiet)
    model.freeze_backbone(True)
    model.train()
    assert model.backbone_frozen and not model.backbone.training and model.head.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head[0].weight.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model(torch.randn(4, 3, 32, 32)).sum()
    loss.backward()
    opt.step()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BatchNorm running statistics
    assert not torch.equal(model.head[0].weight, head_before)

    model.freeze_backbone(False)
    model.train()
    assert model.backbone.training and all(p.requires_grad for p in model.backbone.parameters())
    model(torch.randn(4, 3, 32, 32))
    assert not torch.equal(model.backbone.state_dict()["body.1.running_mean"], before["body.1.running_mean"])

    head_only, _ = M.build_model(_cfg("small_cnn", head_only=True), log=_quiet)
    assert head_only.backbone_frozen


def test_weights_file_loads_torchvision_state_dict(tmp_path) -> None:
    torch.manual_seed(3)
    reference = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)  # a fine-tuned classifier
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in reference.state_dict().items()}}, path)
    messages: list[str] = []
    model, note = M.build_model(_cfg("mobilenet_v3_small", weights_file=str(path)), log=messages.append)
    assert note == f"weights file: {path}" and messages == [note]
    got = model.backbone.state_dict()
    for k, v in reference.state_dict().items():
        if not k.startswith("classifier."):
            assert torch.equal(got[k], v), k
    assert isinstance(model.backbone.classifier, torch.nn.Identity)


def test_weights_file_mismatch_is_refused_with_file_and_keys(tmp_path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"resnet18\.pth \(resnet34\).*missing keys: layer1\.2\."):
        M.build_model(_cfg("resnet34", weights_file=str(path)), log=_quiet)

    small = M.SmallCNN().state_dict()
    small["body.0.weight"] = torch.zeros(16, 3, 3, 3)
    small["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "small.pth"
    torch.save(small, bad)
    with pytest.raises(ValueError, match=r"small\.pth.*unexpected keys: extra\.weight.*shape mismatches: "
                                         r"body\.0\.weight: file \(16, 3, 3, 3\) vs model \(32, 3, 3, 3\)"):
        M.build_model(_cfg("small_cnn", weights_file=str(bad)), log=_quiet)

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pth: cannot be read"):
        M.build_model(_cfg("small_cnn", weights_file=str(junk)), log=_quiet)
    with pytest.raises(ValueError, match=r"nothere\.pth: no such file"):
        M.build_model(_cfg("small_cnn", weights_file=str(tmp_path / "nothere.pth")), log=_quiet)
    listing = tmp_path / "list.pth"
    torch.save([1, 2], listing)
    with pytest.raises(ValueError, match=r"list\.pth: expected a state_dict"):
        M.build_model(_cfg("small_cnn", weights_file=str(listing)), log=_quiet)


def test_offline_pretrained_falls_back_to_random_init_with_a_message(no_download) -> None:
    messages: list[str] = []
    model, note = M.build_model(_cfg("mobilenet_v3_small", pretrained=True), log=messages.append)
    assert note.startswith("random init: could not download ImageNet weights for mobilenet_v3_small (URLError")
    assert "trained from scratch" in note and str(no_download / "torch" / "hub" / "checkpoints") in note
    assert messages == [note]
    model.eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 128)


def test_cached_pretrained_weights_load_offline(no_download) -> None:
    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    torch.manual_seed(4)
    fake = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    cached = M._cached_weights_path(weights)
    assert str(cached).startswith(str(no_download))
    cached.parent.mkdir(parents=True)
    torch.save(fake, cached)
    model, note = M.build_model(_cfg("mobilenet_v3_small", pretrained=True), log=_quiet)
    assert note == f"pretrained: ImageNet ({weights.name}) from {cached}"
    assert torch.equal(model.backbone.state_dict()["features.0.0.weight"], fake["features.0.0.weight"])


def test_corrupt_cached_file_is_reported_not_fatal(no_download) -> None:
    cached = M._cached_weights_path(torchvision.models.ResNet18_Weights.DEFAULT)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    _, note = M.build_model(_cfg("resnet18", pretrained=True), log=_quiet)
    assert note.startswith(f"random init: could not read the cached ImageNet weights {cached} for resnet18")
    assert "delete that file" in note


def test_unknown_backbone_and_image_sizes() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet19'.*resnet18.*vit_b_16"):
        M.build_model(_cfg("resnet19"), log=_quiet)
    with pytest.raises(ValueError, match=r"only accepts 224 px"):
        M.check_image_size("vit_b_16", 128)
    with pytest.raises(ValueError, match=r"at least 16 px"):
        M.check_image_size("small_cnn", 8)
    M.check_image_size("vit_b_16", 224)
    M.check_image_size("resnet18", 64)
    with pytest.raises(ValueError, match="embedding_dim"):
        M.EmbeddingNet(torch.nn.Identity(), 4, 0)


def test_default_transforms() -> None:
    image = Image.new("RGB", (80, 50), (255, 0, 0))
    image.putpixel((0, 0), (0, 0, 255))
    ev = M.default_transforms(32, augment=True, train=False)
    out = ev(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    red = (1.0 - M.IMAGENET_MEAN[0]) / M.IMAGENET_STD[0]
    assert torch.allclose(out[0], torch.full((32, 32), red), atol=1e-5)  # center crop drops the blue corner
    assert torch.equal(ev(image), out)

    names = lambda t: [type(s).__name__ for s in t.transforms]  # noqa: E731
    train = M.default_transforms(32, augment=True, train=True)
    assert "RandomResizedCrop" in names(train) and "RandomHorizontalFlip" in names(train)
    assert "ColorJitter" in names(train)
    assert "RandomHorizontalFlip" not in names(M.default_transforms(32, augment=True, train=True, flip=False))
    assert "RandomResizedCrop" not in names(M.default_transforms(32, augment=False, train=True))
    noisy = Image.effect_noise((64, 64), 80).convert("RGB")
    torch.manual_seed(0)
    a, b = train(noisy), train(noisy)
    assert a.shape == b.shape == (3, 32, 32) and not torch.equal(a, b)
    plain = M.default_transforms(32, augment=False, train=False, mean=(0, 0, 0), std=(1, 1, 1))(image)
    assert plain.min() >= 0 and plain.max() <= 1
