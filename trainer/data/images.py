"""Decoding one image file safely: size limits, EXIF orientation, colour modes to RGB, thumbnails.
"""

from __future__ import annotations

import os
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse images above this many pixels without decoding them (Pillow's own default limit, applied by us too,
# so it holds even if someone sets Image.MAX_IMAGE_PIXELS = None).
MAX_PIXELS = 89_478_485
_WHITE = (255, 255, 255)


class ImageLoadError(OSError):
    """An image file that cannot be used; ``reason`` is the short why, the message names the file."""

    def __init__(self, path: str | os.PathLike[str] | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(f"{display_name(self.path)}: {reason}" if self.path is not None else reason)


def display_name(path: str | os.PathLike[str] | None) -> str:
    """A printable form of a path whose bytes may not be valid UTF-8 (bad bytes shown as U+FFFD)."""
    if path is None:
        return "<unknown>"
    return os.fsencode(os.fspath(path)).decode("utf-8", errors="replace")


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """Convert any decoded mode to RGB: 16-bit scaled (not clipped), alpha composited on white, CMYK converted."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        if mode == "I":
            arr = np.clip(arr, 0, 65535)
        arr = arr.astype(np.uint32)
        arr8 = ((arr * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
        notes.append("16-bit: scaled to 8-bit")
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0
        scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        notes.append("floating point: scaled to 8-bit")
        return Image.fromarray(np.rint(scaled * 255).astype(np.uint8), mode="L").convert("RGB")
    if mode == "P" and "transparency" in im.info or mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "La", "RGBA", "RGBa"):
        rgba = im.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] < 255:
            notes.append("transparency: composited on white")
            background = Image.new("RGB", rgba.size, _WHITE)
            background.paste(rgba.convert("RGB"), mask=alpha)
            return background
        return rgba.convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK: converted to RGB")
    return im.convert("RGB")


def _decode(fp: IO[bytes], *, draft_size: int | None, max_pixels: int) -> tuple[Image.Image, list[str]]:
    """Open, guard, fully decode and convert one image; raises ImageLoadError(None, reason)."""
    notes: list[str] = []
    try:
        im = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(None, f"decompression bomb: refused without decoding ({exc})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(None, "not a decodable image: unknown or corrupt format") from None
    except Exception as exc:  # a plugin may raise anything on a malformed header
        raise ImageLoadError(None, f"truncated or corrupt: {exc}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise ImageLoadError(
            None, f"decompression bomb: {w}x{h} = {w * h:,} pixels is above the limit of {max_pixels:,}"
        )
    if w <= 0 or h <= 0:
        raise ImageLoadError(None, f"truncated or corrupt: size {w}x{h}")
    try:
        n_frames = int(getattr(im, "n_frames", 1))
        if n_frames > 1:
            im.seek(0)
            kind = "animated" if im.format in ("GIF", "PNG", "WEBP") else "multi-frame"
            notes.append(f"{kind}: first of {n_frames} frames used")
        if draft_size and im.format == "JPEG":
            im.draft("RGB", (draft_size, draft_size))
        im.load()
    except Exception as exc:  # OSError("image file is truncated"), SyntaxError, ValueError, ...
        raise ImageLoadError(None, f"truncated or corrupt: {exc}") from None
    try:
        orientation = int(im.getexif().get(0x0112, 1))
    except Exception:  # unreadable EXIF: ignore it, the pixels are fine
        orientation = 1
    try:
        if 2 <= orientation <= 8:
            im = ImageOps.exif_transpose(im)
            notes.append(f"EXIF orientation {orientation}: applied")
        rgb = _to_rgb(im, notes)
    except Exception as exc:
        raise ImageLoadError(None, f"truncated or corrupt: {exc}") from None
    return rgb, notes


def load_image(
    path: str | os.PathLike[str], *, draft_size: int | None = None, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Load an image as RGB the way training sees it: EXIF orientation applied, 16-bit scaled to 8-bit,
    transparency (palette, LA, RGBA) composited on white, first frame of animations, bomb-guarded.

    ``draft_size`` lets JPEG decode at a reduced scale (at least that many pixels per side) when the target is
    small. Raises :class:`ImageLoadError` naming the file and the reason.
    """
    try:
        with open(path, "rb") as f:
            im, _ = _decode(f, draft_size=draft_size, max_pixels=max_pixels)
    except ImageLoadError as exc:
        raise ImageLoadError(path, exc.reason) from None
    except OSError as exc:
        raise ImageLoadError(path, f"unreadable: {exc.strerror or exc}") from None
    return im


def make_thumbnail(path: str | os.PathLike[str], size_px: int) -> Image.Image:
    """An RGB thumbnail fitting in size_px x size_px (aspect kept), decoded cheaply via JPEG draft mode."""
    im = load_image(path, draft_size=size_px)
    im.thumbnail((size_px, size_px), Image.Resampling.LANCZOS)
    return im
