"""The built-in demo folder (trainer/demo.py): digits as PNGs, built once, atomically, into the cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.data import demo
from trainer.data.images import load_image
from trainer.data.scan import scan_folder
from trainer.cache import cache_root
from trainer.data.demo import ensure_demo_folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_folder(tmp_path_factory.mktemp("democache"))


def test_demo_has_1797_pngs_in_10_classes(built):
    classes = sorted(p.name for p in built.iterdir() if p.is_dir())
    assert classes == [str(d) for d in range(10)]
    files = list(built.glob("*/*.png"))
    assert len(files) == 1797
    counts = {c: len(list((built / c).glob("*.png"))) for c in classes}
    assert min(counts.values()) >= 170 and sum(counts.values()) == 1797
    with Image.open(files[0]) as im:
        assert im.size == (64, 64) and im.format == "PNG"


def test_demo_images_match_sklearn_digits(built):
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in (0, 1, 500, 1796):  # smooth upscaling of the real scan: shrinking it back gives the scan again
        label = int(digits.target[i])
        with Image.open(built / str(label) / f"{i:04d}.png") as im:
            arr = np.asarray(im, dtype=np.float64)
        small = np.zeros((8, 8))
        for y in range(8):  # brute force 8x8 block means
            for x in range(8):
                small[y, x] = arr[8 * y : 8 * y + 8, 8 * x : 8 * x + 8].mean()
        expected = digits.images[i] * 255.0 / 16.0
        assert np.abs(small - expected).mean() < 20  # bicubic smooths edges a little
        assert np.corrcoef(small.ravel(), expected.ravel())[0, 1] > 0.95


def test_demo_builds_once(built, monkeypatch):
    marker = built / demo.MARKER
    stamp = marker.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(demo, "_write_digits", fail)
    assert ensure_demo_folder(built.parent) == built
    assert marker.stat().st_mtime_ns == stamp
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no temp folders left behind


def test_half_built_folder_is_rebuilt(tmp_path, monkeypatch):
    target = tmp_path / demo.DEMO_DIRNAME
    (target / "3").mkdir(parents=True)  # no marker: a crash left it half-built
    (target / "3" / "junk.png").write_bytes(b"")

    def tiny(folder: Path, size: int) -> int:  # a small stand-in for the 1,797 digits, same layout
        for label in range(2):
            (folder / str(label)).mkdir()
            Image.new("L", (size, size), 100 * label).save(folder / str(label) / "0000.png")
        return 2

    monkeypatch.setattr(demo, "_write_digits", tiny)
    out = ensure_demo_folder(tmp_path)
    assert out == target and (out / demo.MARKER).is_file()
    assert sorted(p.name for p in out.iterdir()) == [demo.MARKER, "0", "1"]
    assert [p.name for p in tmp_path.iterdir()] == [demo.DEMO_DIRNAME]


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def broken(folder: Path, size: int) -> int:
        (folder / "0").mkdir()
        raise OSError("disk full")

    monkeypatch.setattr(demo, "_write_digits", broken)
    with pytest.raises(OSError, match="disk full"):
        ensure_demo_folder(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cache_root_from_env_or_platformdirs(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDDING_EXPLORER_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("EMBEDDING_EXPLORER_CACHE")
    import platformdirs

    assert cache_root() == Path(platformdirs.user_cache_dir("embedding-explorer"))  # computed, not created


def test_default_location_is_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBEDDING_EXPLORER_CACHE", os.fspath(tmp_path))
    monkeypatch.setattr(demo, "_write_digits", lambda folder, size: 0)
    assert ensure_demo_folder() == tmp_path / demo.DEMO_DIRNAME


def test_demo_scans_clean(built, tmp_path):
    result = scan_folder(built, workers=2, cache_dir=tmp_path)
    assert len(result.paths) == 1797 and result.classes == [str(d) for d in range(10)]
    assert result.skipped == [] and result.notes == [] and result.duplicates == []
    assert load_image(result.abspath(0)).mode == "RGB"
