"""Folder scan, image loading and scan cache (trainer/dataset.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from trainer.data import images

from trainer.data import scan
from tests.support.images import (
    make_class_folder,
    make_symlink_loop,
    write_16bit_png,
    write_animated_gif,
    write_cmyk_jpeg,
    write_exif_rotated_jpeg,
    write_la_png,
    write_non_utf8_name,
    write_palette_transparent_png,
    write_png,
    write_png_bomb,
    write_rgba_png,
    write_text_as_jpg,
    write_truncated_jpeg,
    write_zero_byte,
)
from trainer.data.images import ImageLoadError, display_name, load_image, make_thumbnail
from trainer.data.scan import ScanError, ScanResult, scan_folder

NON_UTF8 = os.fsdecode(b"caf\xe9.png")


def tree_digest(root: Path) -> str:
    """Hash of every name, kind, size, mtime and file content under root (symlinks not followed)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        dirnames.sort()
        for name in sorted(filenames) + dirnames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(p + repr((st.st_mode, st.st_size, st.st_mtime_ns)).encode())
            if os.path.isfile(p) and not os.path.islink(p) and st.st_mode & 0o444:
                with open(p, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ScanResult, str, str]:
    """One folder holding every odd case, scanned once (threads, cache in its own temp folder)."""
    root = tmp_path_factory.mktemp("zoo")
    make_class_folder(root, n_classes=2, per_class=3)
    good, odd, dup, single, empty = (root / n for n in ("class_0", "odd", "dup", "single", "empty"))
    for d in (odd, dup, single, empty, root / "odd" / "deeper", root / ".hidden_class"):
        d.mkdir()
    write_zero_byte(odd / "zero.png")
    write_text_as_jpg(odd / "text.jpg")
    write_truncated_jpeg(odd / "truncated.jpg")
    write_png_bomb(odd / "bomb.png")
    write_cmyk_jpeg(odd / "cmyk.jpg")
    write_palette_transparent_png(odd / "palette.png")
    write_la_png(odd / "la.png")
    write_rgba_png(odd / "rgba.png")
    write_16bit_png(odd / "deeper" / "gray16.png")
    write_exif_rotated_jpeg(odd / "rotated.jpg")
    write_animated_gif(odd / "anim.gif")
    make_symlink_loop(odd)
    write_non_utf8_name(odd)
    (odd / "notes.txt").write_text("hello", encoding="utf-8")
    (odd / ".DS_Store").write_bytes(b"\x00\x01")
    write_png(odd / ".hidden.png")
    write_png(root / ".hidden_class" / "x.png")
    write_png(root / "loose.png")
    shutil.copy(good / "img_000.png", dup / "copy_a.png")
    shutil.copy(good / "img_000.png", dup / "copy_b.png")
    write_png(single / "only.png", seed=7)
    before = tree_digest(root)
    result = scan_folder(root, workers=2, cache_dir=tmp_path_factory.mktemp("zoo_cache"))
    return root, result, before, tree_digest(root)


def reason_of(result: ScanResult, rel: str) -> str:
    found = [s.reason for s in result.skipped if s.path == rel]
    assert found, f"{rel} not in skipped: {result.skipped}"
    return found[0]


def note_of(result: ScanResult, rel: str) -> str:
    found = [s.reason for s in result.notes if s.path == rel]
    assert found, f"{rel} has no note: {result.notes}"
    return found[0]


# ------------------------------------------------------------------------------------------- the zoo, per case


def test_zero_byte_file_skipped(zoo):
    assert reason_of(zoo[1], "odd/zero.png").startswith("empty file")


def test_text_named_jpg_skipped(zoo):
    assert reason_of(zoo[1], "odd/text.jpg").startswith("not a decodable image")


def test_truncated_jpeg_skipped(zoo):
    reason = reason_of(zoo[1], "odd/truncated.jpg")
    assert reason.startswith("truncated or corrupt") and "truncated" in reason.split(":", 1)[1]


def test_truncated_jpeg_load_image_names_file(tmp_path):
    path = write_truncated_jpeg(tmp_path / "t.jpg")
    with pytest.raises(ImageLoadError, match=r"t\.jpg: truncated or corrupt"):
        load_image(path)


def test_decompression_bomb_refused_without_decoding(tmp_path, monkeypatch):
    path = write_png_bomb(tmp_path / "bomb.png")
    assert path.stat().st_size < 1_000_000
    loaded: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def spy(self):  # record every full decode
        loaded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(ImageLoadError, match="bomb.png: decompression bomb"):
        load_image(path)
    assert scan._verify_file(str(path), path.stat().st_size, images.MAX_PIXELS)[1].startswith("decompression bomb")
    assert (20000, 20000) not in loaded
    # an image under Pillow's limit but over ours is refused by our own check, also without decoding
    small_bomb = write_png_bomb(tmp_path / "small.png", side=200)
    with pytest.raises(ImageLoadError, match="200x200 = 40,000 pixels is above the limit of 10,000"):
        load_image(small_bomb, max_pixels=10_000)
    assert (200, 200) not in loaded


def test_decompression_bomb_in_scan(zoo):
    assert reason_of(zoo[1], "odd/bomb.png").startswith("decompression bomb")


@pytest.mark.parametrize("action", ["error", "ignore"])
def test_warning_sized_bomb_refused_under_any_filter(tmp_path, monkeypatch, action):
    # between 1x and 2x Pillow's limit Pillow only warns; whether that warning raises or not, we refuse
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30_000)
    path = write_png_bomb(tmp_path / "warn.png", side=200)  # 40,000 pixels
    with warnings.catch_warnings():
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        with pytest.raises(ImageLoadError, match="warn.png: decompression bomb"):
            load_image(path, max_pixels=30_000)


def test_cmyk_converted(zoo, tmp_path):
    assert note_of(zoo[1], "odd/cmyk.jpg").startswith("CMYK")
    im = load_image(write_cmyk_jpeg(tmp_path / "c.jpg"))
    assert im.mode == "RGB" and im.size == (20, 12)
    r, g, b = np.asarray(im).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60  # (0, 255, 255, 0) CMYK is red


def test_palette_transparency_composited_on_white(zoo, tmp_path):
    assert note_of(zoo[1], "odd/palette.png").startswith("transparency")
    arr = np.asarray(load_image(write_palette_transparent_png(tmp_path / "p.png")))
    assert (arr[:, :2] == 255).all()  # transparent red -> white
    assert (arr[:, 2:] == (0, 0, 255)).all()


def composite_on_white_loops(gray_alpha: list[tuple[int, int]]) -> list[int]:
    """Brute-force twin of the alpha compositing: out = v * a / 255 + 255 * (1 - a / 255)."""
    out = []
    for v, a in gray_alpha:
        out.append(int(round((v * a + 255 * (255 - a)) / 255)))
    return out


def test_la_and_rgba_composited_on_white(zoo, tmp_path):
    assert note_of(zoo[1], "odd/la.png").startswith("transparency")
    assert note_of(zoo[1], "odd/rgba.png").startswith("transparency")
    la = np.asarray(load_image(write_la_png(tmp_path / "la.png")))
    expected = composite_on_white_loops([(0, 0), (0, 128), (0, 255)])
    for x in range(3):
        assert all(abs(int(c) - expected[x]) <= 1 for c in la[0, x])
    rgba = np.asarray(load_image(write_rgba_png(tmp_path / "rgba.png")))
    assert rgba[0, 0].tolist() == [255, 255, 255]
    assert rgba[0, 1].tolist() == [0, 255, 0]


def scale16_loops(values: np.ndarray) -> np.ndarray:
    """Brute-force twin of the 16-bit scaling: round half up of v * 255 / 65535, pixel by pixel."""
    out = np.zeros(values.shape, dtype=np.uint8)
    for y in range(values.shape[0]):
        for x in range(values.shape[1]):
            out[y, x] = int(int(values[y, x]) * 255 / 65535 + 0.5)
    return out


def test_16bit_scaled_not_saturated(zoo, tmp_path):
    assert note_of(zoo[1], "odd/deeper/gray16.png").startswith("16-bit")
    path, values = write_16bit_png(tmp_path / "g.png")
    arr = np.asarray(load_image(path))
    assert arr.shape == (8, 32, 3)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()
    np.testing.assert_array_equal(arr[..., 0], scale16_loops(values))
    assert arr[0, 0, 0] == 0 and arr[0, 1, 0] == 255 and 50 < arr.mean() < 200  # not clipped to white


def rotate_cw_loops(arr: np.ndarray) -> np.ndarray:
    """Brute-force twin of a 90 degree clockwise rotation (EXIF orientation 6)."""
    h, w = arr.shape[:2]
    out = np.zeros((w, h) + arr.shape[2:], dtype=arr.dtype)
    for r in range(w):
        for c in range(h):
            out[r, c] = arr[h - 1 - c, r]
    return out


def test_exif_rotation_applied(zoo, tmp_path):
    assert note_of(zoo[1], "odd/rotated.jpg") == "EXIF orientation 6: applied"
    path, pixels = write_exif_rotated_jpeg(tmp_path / "r.jpg", orientation=6)
    im = load_image(path)
    assert im.size == (20, 40)  # width and height swapped
    arr = np.asarray(im).astype(int)
    diff = np.abs(arr - rotate_cw_loops(pixels).astype(int))
    assert diff[:16].max() < 40 and diff[24:].max() < 40  # JPEG: close, except where chroma blurs the edge
    assert arr[:18, :, 0].min() > 200 and arr[22:, :, 2].min() > 200  # red on top, blue at the bottom
    idx = zoo[1].paths.index("odd/rotated.jpg")
    assert zoo[1].sizes[idx].tolist() == [20, 40]


def test_animated_gif_first_frame(zoo, tmp_path):
    assert note_of(zoo[1], "odd/anim.gif") == "animated: first of 3 frames used"
    arr = np.asarray(load_image(write_animated_gif(tmp_path / "a.gif")))
    assert (arr == (255, 0, 0)).all()


def test_symlink_loop_terminates_and_is_reported(zoo):
    result = zoo[1]
    assert reason_of(result, "odd/loop").startswith("symlink loop")
    assert reason_of(result, "odd/self.png").startswith("symlink loop")
    assert not any("loop/" in p for p in result.paths)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads chmod 000 files anyway")
def test_unreadable_file_chmod(tmp_path):
    make_class_folder(tmp_path, n_classes=2, per_class=2)
    locked = write_png(tmp_path / "class_0" / "locked.png")
    locked.chmod(0)
    try:
        result = scan_folder(tmp_path, workers=1, use_cache=False)
    finally:
        locked.chmod(0o644)
    assert reason_of(result, "class_0/locked.png") == "unreadable: permission denied"


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    make_class_folder(tmp_path, n_classes=2, per_class=2)
    locked = write_png(tmp_path / "class_0" / "locked.png")
    real_open = open

    def guarded_open(file, mode="r", *args, **kwargs):
        if os.fspath(file) == os.fspath(locked):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    cache = tmp_path.parent / (tmp_path.name + "_cache")
    result = scan_folder(tmp_path, workers=2, cache_dir=cache)
    assert reason_of(result, "class_0/locked.png") == "unreadable: permission denied"
    with pytest.raises(ImageLoadError, match="locked.png: unreadable"):
        load_image(locked)
    monkeypatch.undo()  # permission fixed (mtime unchanged): the next open must verify it again
    assert "class_0/locked.png" in scan_folder(tmp_path, workers=1, cache_dir=cache).paths


@pytest.mark.skipif(os.name != "posix", reason="byte file names are a POSIX thing")
def test_non_utf8_name_survives(zoo):
    result = zoo[1]
    rel = f"odd/{NON_UTF8}"
    assert rel in result.paths
    i = result.paths.index(rel)
    assert result.abspath(i).is_file()
    assert load_image(result.abspath(i)).size == (24, 16)
    assert display_name(rel) == "odd/caf\ufffd.png"
    display_name(result.abspath(i)).encode("utf-8")  # printable
    back = ScanResult.from_json(result.to_json())
    assert back.paths == result.paths and os.fsencode(back.abspath(i)).endswith(b"caf\xe9.png")


def test_identical_files_reported_across_classes(zoo):
    groups = zoo[1].duplicates
    assert ["class_0/img_000.png", "dup/copy_a.png", "dup/copy_b.png"] in groups
    assert len(groups) == 1  # nothing else is byte-identical
    assert {"dup/copy_a.png", "dup/copy_b.png"} <= set(zoo[1].paths)  # kept


def test_empty_class_folder_reported(zoo):
    assert "empty" in zoo[1].empty_classes and "empty" not in zoo[1].classes


def test_singleton_class_kept_and_flagged(zoo):
    result = zoo[1]
    assert result.singleton_classes == ["single"]
    assert "single/only.png" in result.paths
    assert result.labels[result.paths.index("single/only.png")] == result.classes.index("single")


def test_non_images_and_hidden_files(zoo):
    result = zoo[1]
    assert reason_of(result, "odd/notes.txt") == "not an image file"
    assert reason_of(result, "loose.png") == "not inside a class folder"
    every = [s.path for s in result.skipped + result.notes] + result.paths
    assert not any(part.startswith(".") for p in every for part in p.split("/"))
    assert ".hidden_class" not in result.classes + result.empty_classes


def test_zoo_samples_classes_and_sizes(zoo):
    result = zoo[1]
    assert result.classes == ["class_0", "class_1", "dup", "odd", "single"]
    assert result.labels.dtype == np.int64 and len(result.labels) == len(result.paths) == len(result.sizes)
    order = [(int(lab), p) for lab, p in zip(result.labels, result.paths)]
    assert order == sorted(order)
    for i, p in enumerate(result.paths):  # brute force: every kept file loads, at the size recorded
        assert p.startswith(result.classes[result.labels[i]] + "/")
        assert list(load_image(result.abspath(i)).size) == result.sizes[i].tolist()
    kept_odd = {p for p in result.paths if p.startswith("odd/")}
    assert kept_odd == {f"odd/{n}" for n in ("cmyk.jpg", "palette.png", "la.png", "rgba.png", "deeper/gray16.png",
                                             "rotated.jpg", "anim.gif", NON_UTF8)}


def test_summary_mentions_everything(zoo):
    text = zoo[1].summary()
    n = len(zoo[1].paths)
    assert text.startswith(f"{n} images in 5 classes.")
    for words in ("not an image file", "decompression bomb", "empty file", "1 groups of identical files (3 files)",
                  "single image (no positive pair): single", "without usable images: empty"):
        assert words in text, words


def test_user_folder_not_modified(zoo):
    assert zoo[2] == zoo[3]


def test_fewer_than_two_classes_refused(tmp_path):
    make_class_folder(tmp_path, n_classes=1, per_class=3)
    (tmp_path / "broken").mkdir()
    write_zero_byte(tmp_path / "broken" / "a.png")
    with pytest.raises(ScanError, match=r"need at least two class sub-folders with usable images, found 1 \(class_0\)") as info:
        scan_folder(tmp_path, workers=1, use_cache=False)
    assert info.value.result is not None and info.value.result.empty_classes == ["broken"]


def test_missing_root_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ScanError, match="image folder not found: .*nope"):
        scan_folder(missing)
    write_png(tmp_path / "file.png")
    with pytest.raises(ScanError, match="not a folder: .*file.png"):
        scan_folder(tmp_path / "file.png")


# ---------------------------------------------------------------------------------- cache, progress, parallel


def count_verifications(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = scan._verify_file

    def counting(path, size, max_pixels):
        seen.append(path)
        return real(path, size, max_pixels)

    monkeypatch.setattr(scan, "_verify_file", counting)
    return seen


def test_reopen_uses_cache_and_reverifies_changes(tmp_path, monkeypatch):
    root = make_class_folder(tmp_path / "data", n_classes=2, per_class=4)
    cache = tmp_path / "cache"
    seen = count_verifications(monkeypatch)
    first = scan_folder(root, workers=2, cache_dir=cache)
    assert len(seen) == 8 and len(list((cache / "scans").glob("*.json"))) == 1
    seen.clear()
    (cache_file,) = (cache / "scans").glob("*.json")
    stamp = cache_file.stat().st_mtime_ns
    again = scan_folder(root, workers=2, cache_dir=cache)
    assert seen == [] and again.paths == first.paths and (again.sizes == first.sizes).all()
    assert cache_file.stat().st_mtime_ns == stamp  # nothing changed: nothing rewritten

    changed = root / "class_0" / "img_001.png"
    write_truncated_jpeg(changed)  # same name, new content: now broken
    (root / "class_1" / "img_002.png").unlink()
    write_png(root / "class_1" / "new.png", seed=99, size=(10, 5))
    seen.clear()
    third = scan_folder(root, workers=2, cache_dir=cache)
    assert sorted(os.path.basename(p) for p in seen) == ["img_001.png", "new.png"]
    assert "class_0/img_001.png" not in third.paths
    assert reason_of(third, "class_0/img_001.png").startswith(("truncated or corrupt", "not a decodable image"))
    assert "class_1/img_002.png" not in third.paths and "class_1/new.png" in third.paths
    assert third.sizes[third.paths.index("class_1/new.png")].tolist() == [10, 5]

    seen.clear()
    scan_folder(root, workers=1, use_cache=False)
    assert len(seen) == 8  # use_cache=False verifies everything


def test_corrupt_cache_file_is_ignored(tmp_path):
    root = make_class_folder(tmp_path / "data", n_classes=2, per_class=2)
    cache = tmp_path / "cache"
    first = scan_folder(root, workers=1, cache_dir=cache)
    (cache_file,) = (cache / "scans").glob("*.json")
    cache_file.write_text("{not json", encoding="ascii")
    assert scan_folder(root, workers=1, cache_dir=cache).paths == first.paths
    assert json.loads(cache_file.read_text(encoding="ascii"))["version"] == 1  # rewritten


def test_default_cache_goes_to_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDDING_EXPLORER_CACHE", str(tmp_path / "envcache"))
    root = make_class_folder(tmp_path / "data", n_classes=2, per_class=2)
    scan_folder(root, workers=1)
    assert len(list((tmp_path / "envcache" / "scans").glob("*.json"))) == 1


def test_progress_monotonic_up_to_total(tmp_path):
    root = make_class_folder(tmp_path / "data", n_classes=3, per_class=5)
    calls: list[tuple[int, int]] = []
    scan_folder(root, workers=2, use_cache=False, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 15) and calls[-1] == (15, 15)
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and len(set(dones)) == len(dones)
    assert all(t == 15 for _, t in calls)


def test_progress_raising_cancels_promptly(tmp_path, monkeypatch):
    root = make_class_folder(tmp_path / "data", n_classes=2, per_class=40, size=8)
    seen = count_verifications(monkeypatch)

    class Cancelled(Exception):
        pass

    def progress(done: int, total: int) -> None:
        if done > 0:
            raise Cancelled

    with pytest.raises(Cancelled):
        scan_folder(root, workers=2, use_cache=False, progress=progress)
    assert 0 < len(seen) < 80  # queued chunks were dropped, not decoded


def assert_same_result(a: ScanResult, b: ScanResult) -> None:
    assert a.classes == b.classes and a.paths == b.paths
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.sizes, b.sizes)
    assert a.skipped == b.skipped and a.notes == b.notes and a.duplicates == b.duplicates
    assert a.empty_classes == b.empty_classes and a.singleton_classes == b.singleton_classes


def test_parallel_equals_serial(zoo):
    root, parallel = zoo[0], zoo[1]
    serial = scan_folder(root, workers=1, use_cache=False)
    assert_same_result(serial, parallel)


def test_process_pool_equals_thread_pool(tmp_path):
    root = make_class_folder(tmp_path / "data", n_classes=2, per_class=3)
    write_truncated_jpeg(root / "class_0" / "bad.jpg")
    write_exif_rotated_jpeg(root / "class_1" / "rot.jpg")
    threads = scan_folder(root, workers=2, use_cache=False, pool="thread")
    procs = scan_folder(root, workers=2, use_cache=False, pool="process")
    assert_same_result(threads, procs)
    assert len(threads.skipped) == 1 and len(threads.notes) == 1


def test_to_json_round_trip(zoo):
    back = ScanResult.from_json(zoo[1].to_json())
    assert_same_result(back, zoo[1])
    assert back.root == zoo[1].root


def test_draft_and_thumbnail(tmp_path):
    path = tmp_path / "big.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (400, 600, 3), dtype=np.uint8)).save(path, quality=90)
    drafted = load_image(path, draft_size=100)
    assert drafted.mode == "RGB" and 100 <= min(drafted.size) < 400  # decoded at a reduced JPEG scale
    assert load_image(path).size == (600, 400)
    thumb = make_thumbnail(path, 64)
    assert thumb.mode == "RGB" and thumb.size == (64, 43)


def test_a_huge_file_that_is_not_an_image_is_refused_without_reading_it_into_memory(tmp_path):
    """A 400 MB file named .png (zeros, sparse on disk): refused from its header, hashed in blocks."""
    import subprocess
    import sys

    from tests.support import ROOT

    make_class_folder(tmp_path / "data", n_classes=2, per_class=2)
    with open(tmp_path / "data" / "class_0" / "huge.png", "wb") as f:
        f.truncate(400 << 20)
    code = ("import resource, sys; from trainer.data.scan import scan_folder; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            f"r = scan_folder({str(tmp_path / 'data')!r}, workers=1, use_cache=False); "
            "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before; "
            "print(grown // 1024, [s.reason for s in r.skipped if s.path.endswith('huge.png')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    grown_mb, reasons = out.stdout.split(" ", 1)
    assert "not a decodable image" in reasons
    assert int(grown_mb) < 100  # it was 2.1 GB for a 2 GiB file when the scan read every file whole
