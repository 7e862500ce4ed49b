"""Generators of small class folders and of odd image files, for any test (``from image_fixtures import ...``).

Every generator writes under the folder it is given (use pytest's tmp_path) and returns what it wrote.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def make_class_folder(root: str | os.PathLike[str], n_classes: int = 3, per_class: int = 6, size: int = 32,
                      seed: int = 0) -> Path:
    """Write ``root/class_<c>/img_<i>.png``: noisy images around a distinct colour per class; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        hue = (c / max(1, n_classes)) * 6.0
        x = 1 - abs(hue % 2 - 1)
        base = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(hue) % 6]
        colour = np.array(base, dtype=np.float64) * 200 + 30
        for i in range(per_class):
            noise = rng.normal(0, 25, size=(size, size, 3))
            img = np.clip(colour + noise, 0, 255).astype(np.uint8)
            Image.fromarray(img, mode="RGB").save(folder / f"img_{i:03d}.png")
    return root


def noise_image(size: tuple[int, int] = (24, 16), seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A random image (width, height) in the given 8-bit mode."""
    rng = np.random.default_rng(seed)
    w, h = size
    bands = len(Image.new(mode, (1, 1)).getbands())
    arr = rng.integers(0, 256, size=(h, w, bands), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if bands == 1 else arr, mode=mode)


def write_png(path: Path, seed: int = 0, size: tuple[int, int] = (24, 16)) -> Path:
    """A plain valid RGB PNG."""
    noise_image(size, seed).save(path)
    return path


def write_zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_text_as_jpg(path: Path) -> Path:
    """A text file that pretends to be a JPEG by its name."""
    path.write_text("this is not a picture\n", encoding="utf-8")
    return path


def write_truncated_jpeg(path: Path, size: tuple[int, int] = (64, 64)) -> Path:
    """A JPEG cut off halfway through its scan data."""
    buf = io.BytesIO()
    noise_image(size, seed=1).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_png_bomb(path: Path, side: int = 20000) -> Path:
    """A 1-bit grayscale PNG of side x side pixels (all black), a few tens of KB on disk: a decompression bomb."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 1000) for _ in range(side // 1000)]
    parts.append(comp.compress(row * (side % 1000)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def write_cmyk_jpeg(path: Path, size: tuple[int, int] = (20, 12)) -> Path:
    Image.new("CMYK", size, (0, 255, 255, 0)).save(path, "JPEG", quality=95)  # pure red in CMYK
    return path


def write_palette_transparent_png(path: Path) -> Path:
    """A 4x2 palette image: left half index 0 (transparent), right half index 1 (opaque blue)."""
    im = Image.new("P", (4, 2), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    for y in range(2):
        for x in range(2, 4):
            im.putpixel((x, y), 1)
    im.save(path, transparency=0)
    return path


def write_la_png(path: Path) -> Path:
    """A 3x1 LA image: gray 0 with alpha 0, 128 and 255."""
    im = Image.new("LA", (3, 1))
    for x, a in enumerate((0, 128, 255)):
        im.putpixel((x, 0), (0, a))
    im.save(path)
    return path


def write_rgba_png(path: Path) -> Path:
    """A 2x1 RGBA image: a fully transparent red pixel, an opaque green one."""
    im = Image.new("RGBA", (2, 1))
    im.putpixel((0, 0), (255, 0, 0, 0))
    im.putpixel((1, 0), (0, 255, 0, 255))
    im.save(path)
    return path


def write_16bit_png(path: Path, size: tuple[int, int] = (32, 8), seed: int = 0) -> tuple[Path, np.ndarray]:
    """A 16-bit grayscale PNG spanning 0..65535; returns its path and the uint16 values written."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = rng.integers(0, 65536, size=(h, w), dtype=np.uint16)
    arr[0, 0], arr[0, 1] = 0, 65535
    Image.fromarray(arr).save(path)
    return path, arr


def write_exif_rotated_jpeg(path: Path, orientation: int = 6) -> tuple[Path, np.ndarray]:
    """A 40x20 JPEG (left half red, right half blue) tagged with an EXIF orientation; returns path and pixels."""
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    im = Image.fromarray(arr, mode="RGB")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    im.save(path, "JPEG", quality=100, exif=exif.tobytes())
    return path, arr


def write_animated_gif(path: Path, colours: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255))) -> Path:
    """An animated GIF, one solid colour per frame (first frame: the first colour)."""
    frames = [Image.new("RGB", (8, 8), c) for c in colours]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return path


def make_symlink_loop(folder: Path) -> tuple[Path, Path]:
    """A folder symlink pointing back at its parent, and a file symlink pointing at itself."""
    folder_link = folder / "loop"
    os.symlink(folder, folder_link, target_is_directory=True)
    self_link = folder / "self.png"
    os.symlink(self_link, self_link)
    return folder_link, self_link


def write_non_utf8_name(folder: Path, seed: int = 0) -> str:
    """A valid PNG whose file name is Latin-1 bytes (not UTF-8); returns its name as str (surrogateescape)."""
    raw = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    buf = io.BytesIO()
    noise_image(seed=seed).save(buf, "PNG")
    with open(raw, "wb") as f:
        f.write(buf.getvalue())
    return os.fsdecode(b"caf\xe9.png")
