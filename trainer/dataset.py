"""Scan an image folder (one sub-folder per class) into usable samples plus a report of every file skipped.

Every candidate file is fully decoded and converted exactly as training will load it (:func:`load_image`), so a
file that scans fine also loads fine later. Decoding runs in a thread pool (Pillow releases the GIL while it
decodes) or, on request, a process pool. Results are cached per file, keyed by (size, mtime_ns), in
``<cache>/scans/<hash of root>.json`` so reopening a large folder only re-verifies what changed. The user's folder
is only ever read.

File names are kept as ``str``; bytes that are not valid UTF-8 survive through Python's surrogateescape
(``os.fsencode`` gives the original bytes back). Use :func:`display_name` to show such a name.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import time
from collections import Counter, defaultdict
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageLoadError",
    "ScanError",
    "ScanResult",
    "SkippedFile",
    "display_name",
    "load_image",
    "make_thumbnail",
    "scan_folder",
]

# Refuse images above this many pixels without decoding them (Pillow's own default limit, applied by us too,
# so it holds even if someone sets Image.MAX_IMAGE_PIXELS = None).
MAX_PIXELS = 89_478_485

_COMMON_EXTENSIONS = {
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi", ".avif",
}  # fmt: skip
Image.init()
IMAGE_EXTENSIONS: frozenset[str] = frozenset(_COMMON_EXTENSIONS & set(Image.registered_extensions()))

NOT_AN_IMAGE = "not an image file"
_CACHE_VERSION = 1
_WHITE = (255, 255, 255)


class ScanError(ValueError):
    """The folder cannot be used for training: missing root, fewer than two usable classes, ...

    ``result`` holds the partial :class:`ScanResult` (its report) when the listing itself succeeded.
    """

    result: "ScanResult | None" = None


class ImageLoadError(OSError):
    """An image file that cannot be used; ``reason`` is the short why, the message names the file."""

    def __init__(self, path: str | os.PathLike[str] | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(f"{display_name(self.path)}: {reason}" if self.path is not None else reason)


@dataclass(frozen=True)
class SkippedFile:
    """A file (relative to the root) and why it was skipped, or a remark about a kept file."""

    path: str
    reason: str

    @property
    def category(self) -> str:
        """The reason without its detail ("truncated or corrupt", "not an image file", ...), for counting."""
        return self.reason.split(":", 1)[0]


@dataclass
class ScanResult:
    """Usable samples of a class folder, and everything that was skipped, noted or flagged on the way."""

    root: Path
    classes: list[str]
    paths: list[str]
    labels: np.ndarray
    skipped: list[SkippedFile]
    notes: list[SkippedFile]
    duplicates: list[list[str]]
    empty_classes: list[str]
    singleton_classes: list[str]
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))  # (N, 2) width, height

    def abspath(self, i: int) -> Path:
        """The absolute path of sample ``i``."""
        return self.root / self.paths[i]

    def __len__(self) -> int:
        return len(self.paths)

    def summary(self) -> str:
        """One paragraph of human text: counts, skipped files by reason, duplicates, flagged classes."""
        parts = [f"{len(self.paths):,} images in {len(self.classes)} classes."]
        if self.skipped:
            by_reason = Counter(s.category for s in self.skipped)
            detail = ", ".join(f"{n:,} {reason}" for reason, n in sorted(by_reason.items(), key=lambda kv: -kv[1]))
            parts.append(f"{len(self.skipped):,} skipped ({detail}).")
        else:
            parts.append("Nothing skipped.")
        if self.notes:
            by_note = Counter(n.category for n in self.notes)
            detail = ", ".join(f"{n:,} {note}" for note, n in sorted(by_note.items(), key=lambda kv: -kv[1]))
            parts.append(f"{len(self.notes):,} kept with a remark ({detail}).")
        if self.duplicates:
            n_files = sum(len(g) for g in self.duplicates)
            parts.append(f"{len(self.duplicates):,} groups of identical files ({n_files:,} files).")
        if self.singleton_classes:
            names = ", ".join(display_name(c) for c in self.singleton_classes[:5])
            more = "" if len(self.singleton_classes) <= 5 else ", ..."
            parts.append(
                f"{len(self.singleton_classes)} classes with a single image (no positive pair): {names}{more}."
            )
        if self.empty_classes:
            names = ", ".join(display_name(c) for c in self.empty_classes[:5])
            more = "" if len(self.empty_classes) <= 5 else ", ..."
            parts.append(f"{len(self.empty_classes)} class folders without usable images: {names}{more}.")
        return " ".join(parts)

    def to_json(self) -> str:
        """Serialise to JSON (ASCII; non-UTF-8 names survive as escaped surrogates)."""
        d = {
            "root": os.fspath(self.root),
            "classes": self.classes,
            "paths": self.paths,
            "labels": self.labels.tolist(),
            "sizes": self.sizes.tolist(),
            "skipped": [[s.path, s.reason] for s in self.skipped],
            "notes": [[s.path, s.reason] for s in self.notes],
            "duplicates": self.duplicates,
            "empty_classes": self.empty_classes,
            "singleton_classes": self.singleton_classes,
        }
        return json.dumps(d, ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str) -> "ScanResult":
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        return cls(
            root=Path(d["root"]),
            classes=list(d["classes"]),
            paths=list(d["paths"]),
            labels=np.asarray(d["labels"], dtype=np.int64),
            skipped=[SkippedFile(p, r) for p, r in d["skipped"]],
            notes=[SkippedFile(p, r) for p, r in d["notes"]],
            duplicates=[list(g) for g in d["duplicates"]],
            empty_classes=list(d["empty_classes"]),
            singleton_classes=list(d["singleton_classes"]),
            sizes=np.asarray(d["sizes"], dtype=np.int64).reshape(-1, 2),
        )


def display_name(path: str | os.PathLike[str] | None) -> str:
    """A printable form of a path whose bytes may not be valid UTF-8 (bad bytes shown as U+FFFD)."""
    if path is None:
        return "<unknown>"
    return os.fsencode(os.fspath(path)).decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------- image loading


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


# -------------------------------------------------------------------------------------------- verification


# One verified file: ok, reason-or-notes, width, height, content hash ("" when unreadable).
_Record = tuple[bool, str, int, int, str]


def _verify_file(abspath: str, size: int, max_pixels: int) -> _Record:
    """Read, hash and fully decode one file, returning a plain picklable record."""
    if size == 0:
        return (False, "empty file: 0 bytes", 0, 0, "")
    try:
        with open(abspath, "rb") as f:
            data = f.read()
    except PermissionError:
        return (False, "unreadable: permission denied", 0, 0, "")
    except OSError as exc:
        return (False, f"unreadable: {exc.strerror or exc}", 0, 0, "")
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    try:
        im, notes = _decode(io.BytesIO(data), draft_size=None, max_pixels=max_pixels)
    except ImageLoadError as exc:
        return (False, exc.reason, 0, 0, digest)
    return (True, "; ".join(notes), im.width, im.height, digest)


def _verify_chunk(items: list[tuple[str, int]], max_pixels: int) -> list[_Record]:
    return [_verify_file(p, s, max_pixels) for p, s in items]


# ---------------------------------------------------------------------------------------------------- listing


@dataclass
class _Listing:
    classes: list[str] = field(default_factory=list)  # every class folder, sorted
    files: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)  # class -> (rel, size, mtime_ns)
    skipped: list[SkippedFile] = field(default_factory=list)


def _list_folder(root: Path) -> _Listing:
    """Walk root/<class>/** following symlinks, ignoring hidden entries, never entering a folder twice."""
    listing = _Listing()
    visited: set[tuple[int, int]] = set()
    root_st = os.stat(root)
    visited.add((root_st.st_dev, root_st.st_ino))

    def stat_entry(path: str, rel: str) -> os.stat_result | None:
        try:
            return os.stat(path)
        except OSError as exc:
            if os.path.islink(path):
                reason = "symlink loop" if exc.errno == errno.ELOOP else "broken symlink"
                listing.skipped.append(SkippedFile(rel, f"{reason}: {exc.strerror}"))
            else:
                listing.skipped.append(SkippedFile(rel, f"unreadable: {exc.strerror}"))
            return None

    with os.scandir(root) as it:
        top = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    for entry in top:
        st = stat_entry(entry.path, entry.name)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in visited:
                listing.skipped.append(SkippedFile(entry.name, "symlink loop: folder already scanned"))
                continue
            visited.add(key)
            listing.classes.append(entry.name)
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            listing.skipped.append(SkippedFile(entry.name, "not inside a class folder"))
        else:
            listing.skipped.append(SkippedFile(entry.name, NOT_AN_IMAGE))

    for cls in listing.classes:
        found: list[tuple[str, int, int]] = []
        stack = [cls]
        while stack:
            rel_dir = stack.pop()
            try:
                with os.scandir(root / rel_dir) as it:
                    entries = [e for e in it if not e.name.startswith(".")]
            except OSError as exc:
                listing.skipped.append(SkippedFile(rel_dir, f"unreadable: {exc.strerror}"))
                continue
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}"
                st = stat_entry(entry.path, rel)
                if st is None:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key in visited:
                        listing.skipped.append(SkippedFile(rel, "symlink loop: folder already scanned"))
                    else:
                        visited.add(key)
                        stack.append(rel)
                elif not stat.S_ISREG(st.st_mode):
                    listing.skipped.append(SkippedFile(rel, NOT_AN_IMAGE))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    found.append((rel, st.st_size, st.st_mtime_ns))
                else:
                    listing.skipped.append(SkippedFile(rel, NOT_AN_IMAGE))
        found.sort()
        listing.files[cls] = found
    return listing


# ------------------------------------------------------------------------------------------------------ cache


def _cache_file(root: Path, cache_dir: Path | None) -> Path:
    if cache_dir is None:
        from trainer.demo import cache_root

        cache_dir = cache_root()
    key = hashlib.blake2b(os.fsencode(os.fspath(root)), digest_size=10).hexdigest()
    return Path(cache_dir) / "scans" / f"{key}.json"


def _load_cache(path: Path, root: Path, max_pixels: int) -> dict[str, list[Any]]:
    try:
        with open(path, encoding="ascii") as f:
            d = json.load(f)
        if d.get("version") != _CACHE_VERSION or d.get("root") != os.fspath(root) or d.get("max_pixels") != max_pixels:
            return {}
        files = d["files"]
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}  # no cache, or an unreadable one: verify everything again


def _save_cache(path: Path, root: Path, max_pixels: int, files: dict[str, list[Any]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="ascii") as f:
            json.dump({"version": _CACHE_VERSION, "root": os.fspath(root), "max_pixels": max_pixels, "files": files}, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache we cannot write only costs time on the next open


# ------------------------------------------------------------------------------------------------------- scan


def _chunks(items: list[tuple[str, int]], size: int) -> Iterable[tuple[int, list[tuple[str, int]]]]:
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def scan_folder(
    root: str | os.PathLike[str],
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    pool: Literal["thread", "process"] = "thread",
    max_pixels: int = MAX_PIXELS,
) -> ScanResult:
    """Scan ``root/<class>/**`` into usable samples and a report of every skipped file; see the module docstring.

    ``progress(done, total)`` is called from the calling thread with ``done`` rising to ``total``. ``workers``
    defaults to the CPU count; 1 runs serially. ``pool="thread"`` (default) was measured faster than
    ``"process"``, whose spawned workers re-import the main module. An exception raised by ``progress`` (e.g. to
    cancel) stops the scan promptly and propagates; the cache is left as it was. Raises :class:`ScanError` for a missing root or fewer than two
    classes with usable images.
    """
    root_path = Path(os.path.abspath(os.fspath(root)))
    if not root_path.exists():
        raise ScanError(f"image folder not found: {display_name(root_path)}")
    if not root_path.is_dir():
        raise ScanError(f"not a folder: {display_name(root_path)}")
    try:
        listing = _list_folder(root_path)
    except OSError as exc:
        raise ScanError(f"cannot read image folder {display_name(root_path)}: {exc.strerror or exc}") from None

    cache_path = _cache_file(root_path.resolve(), cache_dir) if use_cache else None
    cached = _load_cache(cache_path, root_path.resolve(), max_pixels) if cache_path else {}

    records: dict[str, _Record] = {}
    todo: list[tuple[str, int]] = []
    keys: dict[str, tuple[int, int]] = {}
    for files in listing.files.values():
        for rel, size, mtime_ns in files:
            keys[rel] = (size, mtime_ns)
            hit = cached.get(rel)
            if hit is not None and hit[0] == size and hit[1] == mtime_ns:
                records[rel] = (bool(hit[2]), str(hit[3]), int(hit[4]), int(hit[5]), str(hit[6]))
            else:
                todo.append((rel, size))

    total = len(keys)
    done = len(records)
    last_reported = -1
    step = max(1, total // 200)

    def report(force: bool = False) -> None:
        nonlocal last_reported
        if progress is not None and done != last_reported and (force or done - last_reported >= step):
            progress(done, total)
            last_reported = done

    report(force=True)
    n_workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    jobs = [(os.fspath(root_path / rel), size) for rel, size in todo]
    if n_workers == 1 or len(jobs) <= 1:
        for (rel, _), job in zip(todo, jobs):
            records[rel] = _verify_file(job[0], job[1], max_pixels)
            done += 1
            report(force=done == total)
    else:
        chunk = 8 if pool == "thread" else 64
        executor: Executor
        if pool == "process":
            import multiprocessing

            executor = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"))
        else:
            executor = ThreadPoolExecutor(n_workers, thread_name_prefix="scan")
        try:
            futures = {executor.submit(_verify_chunk, items, max_pixels): start for start, items in _chunks(jobs, chunk)}
            for fut in as_completed(futures):
                start = futures[fut]
                results = fut.result()
                for offset, rec in enumerate(results):
                    records[todo[start + offset][0]] = rec
                done += len(results)
                report(force=done == total)
        finally:  # on an exception (e.g. progress raising to cancel) drop the queued work instead of finishing it
            executor.shutdown(wait=True, cancel_futures=True)
    report(force=True)

    if cache_path is not None:
        entries = {
            rel: [keys[rel][0], keys[rel][1], rec[0], rec[1], rec[2], rec[3], rec[4]]
            for rel, rec in records.items()
            if not rec[1].startswith("unreadable")  # permissions may be fixed without touching mtime
        }
        if todo or entries.keys() != cached.keys():  # reopening an unchanged folder writes nothing
            _save_cache(cache_path, root_path.resolve(), max_pixels, entries)

    return _assemble(root_path, listing, records)


def _assemble(root: Path, listing: _Listing, records: dict[str, _Record]) -> ScanResult:
    skipped = list(listing.skipped)
    notes: list[SkippedFile] = []
    by_hash: dict[str, list[str]] = defaultdict(list)
    classes: list[str] = []
    empty: list[str] = []
    singletons: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    sizes: list[tuple[int, int]] = []
    for cls in listing.classes:
        usable = []
        for rel, _, _ in listing.files[cls]:
            ok, text, w, h, digest = records[rel]
            if not ok:
                skipped.append(SkippedFile(rel, text))
                continue
            usable.append(rel)
            sizes.append((w, h))
            by_hash[digest].append(rel)
            if text:
                notes.append(SkippedFile(rel, text))
        if not usable:
            empty.append(cls)
            continue
        if len(usable) == 1:
            singletons.append(cls)
        labels.extend([len(classes)] * len(usable))
        classes.append(cls)
        paths.extend(usable)
    skipped.sort(key=lambda s: s.path)
    duplicates = sorted(sorted(g) for g in by_hash.values() if len(g) > 1)
    result = ScanResult(
        root=root,
        classes=classes,
        paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        skipped=skipped,
        notes=notes,
        duplicates=duplicates,
        empty_classes=empty,
        singleton_classes=singletons,
        sizes=np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
    )
    if len(classes) < 2:
        found = ", ".join(display_name(c) for c in classes) or "none"
        error = ScanError(
            f"{display_name(root)}: need at least two class sub-folders with usable images, found "
            f"{len(classes)} ({found}). {result.summary()}"
        )
        error.result = result  # the report is still useful to show
        raise error
    return result
