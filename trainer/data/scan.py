"""The folder scan: one sub-folder per class, every file verified, every skipped file reported with its reason.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections import Counter, defaultdict
from concurrent.futures import (
    Executor,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np
from PIL import Image

from trainer.data.images import MAX_PIXELS, ImageLoadError, _decode, display_name

_COMMON_EXTENSIONS = {
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi", ".avif",
}  # fmt: skip
Image.init()
IMAGE_EXTENSIONS: frozenset[str] = frozenset(_COMMON_EXTENSIONS & set(Image.registered_extensions()))
NOT_AN_IMAGE = "not an image file"
_CACHE_VERSION = 1


class ScanError(ValueError):
    """The folder cannot be used for training: missing root, fewer than two usable classes, ...

    ``result`` holds the partial :class:`ScanResult` (its report) when the listing itself succeeded.
    """

    result: "ScanResult | None" = None


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


# One verified file: ok, reason-or-notes, width, height, content hash ("" when unreadable).
HASH_BLOCK_BYTES = 1 << 22
_Record = tuple[bool, str, int, int, str]


def _verify_file(abspath: str, size: int, max_pixels: int) -> _Record:
    """Read, hash and fully decode one file, returning a plain picklable record."""
    if size == 0:
        return (False, "empty file: 0 bytes", 0, 0, "")
    try:
        with open(abspath, "rb") as f:
            try:  # decoded straight from the file: a huge file that is not an image is refused from its header
                im, notes = _decode(f, draft_size=None, max_pixels=max_pixels)
                ok, reason, width, height = True, "; ".join(notes), im.width, im.height
                del im
            except ImageLoadError as exc:
                ok, reason, width, height = False, exc.reason, 0, 0
            f.seek(0)
            h = hashlib.blake2b(digest_size=16)
            while block := f.read(HASH_BLOCK_BYTES):  # in blocks: memory stays small whatever the file's size
                h.update(block)
    except PermissionError:
        return (False, "unreadable: permission denied", 0, 0, "")
    except OSError as exc:
        return (False, f"unreadable: {exc.strerror or exc}", 0, 0, "")
    return (ok, reason, width, height, h.hexdigest())


def _verify_chunk(items: list[tuple[str, int]], max_pixels: int) -> list[_Record]:
    return [_verify_file(p, s, max_pixels) for p, s in items]


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


def _cache_file(root: Path, cache_dir: Path | None) -> Path:
    if cache_dir is None:
        from trainer.cache import cache_root

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
