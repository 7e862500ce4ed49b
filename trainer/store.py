"""The run on disk: a crash-safe writer and a read-only reader that can follow a run while it is written.

Layout of a run directory (see docs/FORMAT.md for reading it with plain h5py)::

    manifest.json            the one commit point: format, config, classes, committed epochs, checkpoints
    samples.h5               paths (UTF-8 bytes, surrogateescape), labels, split, roots, root_index
    epochs/epoch_NNNN.h5     embeddings (N, D) float32, labels, sample_ids, split, metrics, telemetry/
    checkpoints/epoch_NNNN.pt
    features.h5              optional head-only feature cache
    *.json                   small side files (thresholds.json, ...)

Every file is written under a ``.tmp`` name, flushed, fsync'ed, moved into place with ``os.replace`` and the
directory fsync'ed; the manifest is rewritten the same way last. A file the manifest does not list is not
committed, so a writer killed at any moment (SIGKILL, power loss) loses at most the epoch it was writing.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from trainer.errors import ExplorerError
from trainer.model.checkpoint import CHECKPOINT_FORMAT

SPLIT_TRAIN = 0
SPLIT_HELDOUT = 1

FORMAT_NAME = "embedding-explorer-run"
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
SAMPLES_FILE = "samples.h5"
FEATURES_FILE = "features.h5"
EPOCHS_DIR = "epochs"
CHECKPOINTS_DIR = "checkpoints"
TMP_SUFFIX = ".tmp"

_EPOCH_RE = re.compile(r"^epoch_(\d+)\.h5$")
_CKPT_RE = re.compile(r"^epoch_(\d+)\.pt$")
_JSON_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.json$")
# what a run directory may hold; a folder with anything else is never deleted by create(overwrite=True)
LOCK_FILE = "trainer.lock"
_OWN_NAMES = {MANIFEST, SAMPLES_FILE, FEATURES_FILE, EPOCHS_DIR, CHECKPOINTS_DIR, LOCK_FILE}
_PATH_ENCODING = ("utf-8", "surrogateescape")


DEFAULT_METRIC = "cosine"  # runs written before the metric was recorded, whose loss is unknown
DEFAULT_MARGIN = 0.1
METRICS = ("cosine", "euclidean")


class RunError(ExplorerError):
    """A run directory is missing, not a run, written by a newer version, or damaged beyond repair."""


@dataclass
class SampleTable:
    """Every sample of a run: where its file is, its class and whether it is trained on or held out."""

    paths: list[str]  # relative to roots[root_index[i]] (or absolute when the root is "")
    labels: np.ndarray  # int64, index into classes
    split: np.ndarray  # int8, SPLIT_TRAIN / SPLIT_HELDOUT
    roots: list[str]
    root_index: np.ndarray  # int16

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class EpochData:
    """One committed epoch: row i of ``embeddings`` is sample i of the run's SampleTable."""

    epoch: int
    embeddings: np.ndarray  # (N, D) float32
    metrics: dict[str, float]
    telemetry: dict[str, np.ndarray]
    # extension of the contract: the per-row arrays stored with the epoch (copies of the sample table's)
    labels: np.ndarray | None = None
    sample_ids: np.ndarray | None = None
    split: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------- low level
def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened, i.e. Windows)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it over ``final`` and fsync the directory: after this, ``final`` is whole."""
    _fsync_file(tmp)
    for attempt in range(50):  # Windows refuses to replace a file a reader holds open for a moment
        try:
            os.replace(tmp, final)
            break
        except PermissionError:
            if os.name == "posix" or attempt == 49:
                raise
            time.sleep(0.02)
    _fsync_dir(final.parent)


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + TMP_SUFFIX)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
    _replace(tmp, path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as strict JSON to ``path`` crash-safely (a side file of a run: thresholds, notes)."""
    path = Path(path)
    try:
        data = json.dumps(obj, indent=1, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save {path}: {exc}") from None
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save {path}: the folder {path.parent} does not exist")
    _write_bytes_atomic(path, data)
    return path


def _h5open(path: Path, mode: str = "r") -> h5py.File:
    """Open without HDF5's file locks: committed files are immutable and temporary files private, so locks
    only get in the way (a reader must never block the writer; network file systems refuse locks)."""
    return h5py.File(path, mode, locking=False)


def _h5open_member(path: Path) -> h5py.File:
    """Open one of a run's own HDF5 files for reading, refusing anything that would read outside it: external
    links, soft links, virtual datasets and external storage (RunError naming the file and the object)."""
    f = _h5open(path)
    try:
        _check_h5_self_contained(f, path)
    except BaseException:
        f.close()
        raise
    return f


def _check_h5_self_contained(group: h5py.Group, path: Path) -> None:
    for name in group:
        link = group.get(name, getlink=True)
        if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
            raise RunError(f"{path} is damaged: {group.name.rstrip('/')}/{name} is a link "
                           f"({type(link).__name__}); a run's files hold their data themselves")
        obj = group[name]
        if isinstance(obj, h5py.Group):
            _check_h5_self_contained(obj, path)
        elif isinstance(obj, h5py.Dataset) and (obj.is_virtual or obj.external):
            raise RunError(f"{path} is damaged: dataset {obj.name} keeps its data "
                           f"{'in other files (virtual)' if obj.is_virtual else 'in external files'}")


def file_crc32(path: Path, chunk: int = 1 << 22) -> int:
    """CRC-32 of a file's bytes (the integrity record of an epoch or checkpoint in the manifest)."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def _encode_paths(paths: list[str]) -> np.ndarray:
    return np.array([p.encode(*_PATH_ENCODING) for p in paths], dtype=object)


def _decode_paths(raw: np.ndarray) -> list[str]:
    return [bytes(b).decode(*_PATH_ENCODING) for b in raw]


def _json_float(v: float) -> float | None:
    return v if math.isfinite(v) else None  # strict JSON has no NaN / Infinity


def _epoch_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


# ---------------------------------------------------------------------------------------------- manifest
def _read_manifest(run_dir: Path) -> dict[str, Any]:
    """Parse and check a run's manifest; RunError naming the path for anything that is not our run."""
    if not run_dir.exists():
        raise RunError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory, so not a run")
    path = run_dir / MANIFEST
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run: it has no {MANIFEST}")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path} cannot be read as JSON: {exc}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise RunError(f"{path} is not an Embedding Explorer run manifest (format {m.get('format')!r})"
                       if isinstance(m, dict) else f"{path} is not an Embedding Explorer run manifest")
    version = m.get("version")
    if not isinstance(version, int) or version < 1:
        raise RunError(f"{path} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise RunError(f"{path} was written by a newer Embedding Explorer (run format version {version}; this "
                       f"program reads up to version {FORMAT_VERSION}): please update the program")
    for key, kind in (("config", dict), ("classes", list), ("epochs", list), ("checkpoints", list),
                      ("samples", dict)):
        if not isinstance(m.get(key), kind):
            raise RunError(f"{path} is damaged: {key!r} is missing or not a {kind.__name__}")
    _check_entries(run_dir, m)
    return m


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_entries(run_dir: Path, m: dict[str, Any]) -> None:
    """The path rule: every file the manifest names is the run's own file under its own name (so nothing it names
    can lead outside the run), the run's folders are not links, and each listed file is a regular file."""
    where = run_dir / MANIFEST
    for sub in (EPOCHS_DIR, CHECKPOINTS_DIR):
        if (run_dir / sub).is_symlink():
            raise RunError(f"{run_dir} is damaged: {sub}/ is a link to {os.readlink(run_dir / sub)!r}; a run's "
                           f"folders must be real folders inside it")
    named: list[tuple[str, Any, str]] = []
    seen: dict[str, set[int]] = {"epochs": set(), "checkpoints": set()}
    for key, folder, suffix in (("epochs", EPOCHS_DIR, ".h5"), ("checkpoints", CHECKPOINTS_DIR, ".pt")):
        for i, entry in enumerate(m[key]):
            what = f"{key} entry {i}"
            if not isinstance(entry, dict) or not _is_int(entry.get("epoch")) or entry["epoch"] < 0:
                raise RunError(f"{where} is damaged: {what} has no valid epoch number")
            if entry["epoch"] in seen[key]:
                raise RunError(f"{where} is damaged: epoch {entry['epoch']} is listed twice in {key!r}")
            seen[key].add(entry["epoch"])
            if not _is_int(entry.get("size")) or (key == "epochs" and not (
                    _is_int(entry.get("n")) and _is_int(entry.get("d")))):
                raise RunError(f"{where} is damaged: {what} (epoch {entry['epoch']}) lacks its size or shape")
            if "crc32" in entry and not _is_int(entry["crc32"]):
                raise RunError(f"{where} is damaged: {what} has an invalid checksum {entry['crc32']!r}")
            metrics = entry.get("metrics", {})
            if not isinstance(metrics, dict) or not all(
                    isinstance(v, (int, float, type(None))) and not isinstance(v, bool) for v in metrics.values()):
                raise RunError(f"{where} is damaged: {what} (epoch {entry['epoch']}) has invalid metrics")
            if not isinstance(entry.get("written", 0.0), (int, float)):
                raise RunError(f"{where} is damaged: {what} (epoch {entry['epoch']}) has an invalid time")
            named.append((what, entry.get("file"), f"{folder}/{_epoch_name(entry['epoch'])}{suffix}"))
    feat = m.get("features")
    if feat is not None:
        if not isinstance(feat, dict) or not _is_int(feat.get("size")):
            raise RunError(f"{where} is damaged: the 'features' entry is not valid")
        named.append(("the feature cache", feat.get("file"), FEATURES_FILE))
    if not all(isinstance(c, str) for c in m["classes"]):
        raise RunError(f"{where} is damaged: the class names are not all text")
    if not _is_int(m["samples"].get("n")):
        raise RunError(f"{where} is damaged: the 'samples' entry has no sample count")
    named.append(("the sample table", m["samples"].get("file"), SAMPLES_FILE))
    for what, got, want in named:
        if got != want:
            raise RunError(f"{where} is damaged: {what} names {got!r}; a run's files have fixed names inside it "
                           f"(expected {want!r})")
        p = run_dir / want
        if p.is_symlink() or (p.exists() and not p.is_file()):
            raise RunError(f"{where} is damaged: {want} is {'a link' if p.is_symlink() else 'not a regular file'}; "
                           f"a run's files must be regular files inside it")


def _check_metric_margin(metric: Any, margin: Any, what: str) -> tuple[str, float]:
    if metric not in METRICS:
        raise RunError(f"{what}: unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise RunError(f"{what}: the margin {margin!r} is not a finite number")
    return metric, float(margin)


def run_metric_margin(manifest: dict[str, Any], where: Path) -> tuple[str, float]:
    """The run's recorded metric and margin; for a run written before they were recorded, derived once from its
    loss (the loss registry's metric and census margin), and cosine / 0.1 when that loss is unknown."""
    if "metric" in manifest or "margin" in manifest:
        return _check_metric_margin(manifest.get("metric"), manifest.get("margin"), f"{where / MANIFEST}")
    loss = manifest["config"].get("loss")
    try:
        from trainer.model.losses import loss_margin, loss_metric

        return loss_metric(loss["name"]), float(loss_margin(loss["name"], loss.get("params") or {}))
    except (KeyError, TypeError, ValueError, AttributeError):
        return DEFAULT_METRIC, DEFAULT_MARGIN


def _clear_run_folder(run_dir: Path) -> None:
    """Remove a run's own files from ``run_dir`` (never following links), keeping the lock file its creator holds."""
    for p in run_dir.iterdir():
        if p.name == LOCK_FILE:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def refuse_run_file(out: Path) -> None:
    """An export (a picture, a table) may go into a run folder, but never over one of the run's own files."""
    target = Path(out).resolve()
    for run, rel in ((target.parent, target.name), (target.parent.parent, f"{target.parent.name}/{target.name}")):
        if is_run_dir(run) and (rel in _OWN_NAMES or rel.split("/")[0] in (EPOCHS_DIR, CHECKPOINTS_DIR)
                                or rel.endswith(TMP_SUFFIX)):
            raise RunError(f"refusing to write {out}: it is one of the files of the run {run}; choose another name")


def refuse_output_in_run(out: Path, run_dir: Path | None = None) -> None:
    """An output file (embeddings, exports) may not land inside a run: RunError naming both. A run's files are
    only ever written by the run's own writer."""
    target = Path(out).resolve()
    runs = [Path(run_dir).resolve()] if run_dir is not None else []
    runs += [p for p in (target.parent, target.parent.parent) if is_run_dir(p)]
    for run in runs:
        if target == run or run in target.parents:
            raise RunError(f"refusing to write {out}: it is inside the run {run}, whose files only the trainer "
                           f"writes; choose a path outside it")


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a run this program can read (cheap: reads only the manifest)."""
    try:
        _read_manifest(Path(path))
        return True
    except (RunError, OSError):
        return False


@dataclass(frozen=True)
class RunSummary:
    """What a list of recent runs shows, from the manifest alone."""

    epochs: int  # committed epochs, the untrained epoch 0 included
    last_epoch: int  # -1 when none
    updated: str  # the manifest's last commit time, "YYYY-mm-ddTHH:MM:SS+zzzz" ("" when unknown)
    best_map_at_r: float | None  # held-out MAP@R of the best epoch, None when no epoch has it


def run_summary(path: str | os.PathLike[str]) -> RunSummary | None:
    """The summary of the run in ``path``; None when it is not a readable run."""
    try:
        m = _read_manifest(Path(path))
    except (RunError, OSError):
        return None
    values = []
    for e in m["epochs"]:
        v = e.get("metrics", {}).get("heldout/mean_average_precision_at_r") if isinstance(e, dict) else None
        if isinstance(v, (int, float)) and math.isfinite(v):
            values.append(float(v))
    last = max((int(e.get("epoch", -1)) for e in m["epochs"] if isinstance(e, dict)), default=-1)
    return RunSummary(epochs=len(m["epochs"]), last_epoch=last, updated=str(m.get("updated") or m.get("created") or ""),
                      best_map_at_r=max(values) if values else None)


def looks_like_run(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` has a run's manifest, readable or not: such a folder is opened as a run, so that a
    damaged manifest is named as such instead of the folder being scanned as images."""
    return (Path(path) / MANIFEST).is_file()


def _leftovers(run_dir: Path, manifest: dict[str, Any]) -> list[Path]:
    """Files of ours that the manifest does not account for: ``*.tmp`` and uncommitted epochs/checkpoints."""
    listed = {e["file"] for e in manifest["epochs"]} | {c["file"] for c in manifest["checkpoints"]}
    if manifest.get("features"):
        listed.add(manifest["features"]["file"])
    found: list[Path] = []
    for sub, pattern in (("", None), (EPOCHS_DIR, _EPOCH_RE), (CHECKPOINTS_DIR, _CKPT_RE)):
        d = run_dir / sub if sub else run_dir
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            rel = f"{sub}/{p.name}" if sub else p.name
            if p.name.endswith(TMP_SUFFIX) and p.is_file():
                found.append(p)
            elif pattern is not None and pattern.match(p.name) and rel not in listed:
                found.append(p)
    return found


# ---------------------------------------------------------------------------------------------- samples
def _check_samples(samples: SampleTable, n_classes: int) -> SampleTable:
    n = len(samples.paths)
    labels = np.asarray(samples.labels)
    split = np.asarray(samples.split)
    root_index = np.asarray(samples.root_index)
    for name, arr in (("labels", labels), ("split", split), ("root_index", root_index)):
        if arr.shape != (n,):
            raise ValueError(f"SampleTable.{name} has shape {arr.shape}, expected ({n},) like paths")
        if n and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"SampleTable.{name} must hold integers, not {arr.dtype}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"SampleTable.labels must lie in [0, {n_classes}) (the class list), "
                         f"found {labels.min()}..{labels.max()}")
    if n and not np.isin(split, (SPLIT_TRAIN, SPLIT_HELDOUT)).all():
        raise ValueError("SampleTable.split may only hold SPLIT_TRAIN (0) or SPLIT_HELDOUT (1)")
    if n and (root_index.min() < 0 or root_index.max() >= len(samples.roots)):
        raise ValueError(f"SampleTable.root_index must lie in [0, {len(samples.roots)}) (the roots list)")
    if len(samples.roots) > np.iinfo(np.int16).max:
        raise ValueError("SampleTable.roots: at most 32767 roots")
    for p in list(samples.paths) + list(samples.roots):
        if not isinstance(p, str):
            raise ValueError(f"SampleTable paths and roots must be str, got {type(p).__name__}: {p!r}")
    return SampleTable(list(samples.paths), labels.astype(np.int64), split.astype(np.int8),
                       list(samples.roots), root_index.astype(np.int16))


def _write_samples(path: Path, samples: SampleTable) -> None:
    tmp = _tmp(path)
    bytes_t = h5py.string_dtype(encoding="ascii")  # raw bytes: UTF-8 with surrogateescape, see FORMAT.md
    with _h5open(tmp, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["version"] = FORMAT_VERSION
        f.create_dataset("paths", data=_encode_paths(samples.paths), dtype=bytes_t)
        f.create_dataset("labels", data=samples.labels)
        f.create_dataset("split", data=samples.split)
        f.create_dataset("roots", data=_encode_paths(samples.roots), dtype=bytes_t)
        f.create_dataset("root_index", data=samples.root_index)
    _replace(tmp, path)


def _read_samples(path: Path) -> SampleTable:
    try:
        with _h5open_member(path) as f:
            return SampleTable(
                paths=_decode_paths(f["paths"][()]),
                labels=f["labels"][()].astype(np.int64),
                split=f["split"][()].astype(np.int8),
                roots=_decode_paths(f["roots"][()]),
                root_index=f["root_index"][()].astype(np.int16),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise RunError(f"{path} is damaged or not a sample table: {exc}") from None


# ---------------------------------------------------------------------------------------------- epochs
def _check_epoch_file(path: Path, entry: dict[str, Any]) -> str | None:
    """Why the committed epoch file at ``path`` is not what the manifest says, or None when it is."""
    if not path.is_file():
        return "the file is missing"
    size = path.stat().st_size
    if size != entry.get("size"):
        return f"its size is {size} bytes, the manifest says {entry.get('size')}"
    if "crc32" in entry and file_crc32(path) != entry["crc32"]:
        return "its checksum does not match the manifest (the file changed after it was committed)"
    try:
        with _h5open_member(path) as f:
            shape = f["embeddings"].shape
            if shape != (entry["n"], entry["d"]):
                return f"embeddings have shape {shape}, the manifest says {(entry['n'], entry['d'])}"
            if f["embeddings"].dtype != np.float32:
                return f"embeddings are {f['embeddings'].dtype}, not float32"
            for key in ("labels", "sample_ids", "split"):
                if f[key].shape != (entry["n"],):
                    return f"{key} has shape {f[key].shape}, expected ({entry['n']},)"
    except (OSError, KeyError, ValueError) as exc:
        return f"it cannot be read as HDF5 ({exc})"
    except RunError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def _contiguous_offset(ds: h5py.Dataset) -> int | None:
    """Byte offset of a dataset's data when it is stored as one plain array (contiguous, unfiltered), else None."""
    if ds.chunks is not None or ds.compression is not None or ds.dtype.kind != "f":
        return None
    offset = ds.id.get_offset()
    return None if offset is None else int(offset)


class RunLock:
    """The advisory lock a trainer holds on its run for as long as it trains it.

    Two trainers writing one run (the app resuming a run the command line is still training, or two ``--resume``)
    would delete each other's files; the second is refused with a message naming the first.  The operating system
    drops the lock when its process dies, so a killed run never stays locked.  Where ``fcntl`` is missing
    (Windows) this does nothing.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._f: Any = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        for _ in range(5):
            f = open(self.path, "a+")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise RunError(f"{self.path.parent} is being trained by {holder}; wait for it to finish or stop "
                               f"it before continuing this run") from None
            # the holder before us removes the file as it lets go: a lock on the file it removed locks nothing
            try:
                same = os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()
        else:  # pragma: no cover - five holders in a row let go while we opened
            raise RunError(f"{self.path} keeps being replaced; is another program training this run?")
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}")
        f.flush()
        self._f = f
        return self

    def release(self) -> None:
        """Let go of the lock and remove the lock file (a clean exit leaves no trainer.lock behind)."""
        if self._f is not None:
            try:
                self.path.unlink(missing_ok=True)  # while still holding it: nobody can take the lock in between
            except OSError:
                pass
            self._f.close()  # closing the file releases the flock
            self._f = None


def run_in_training(run_dir: str | os.PathLike[str]) -> str | None:
    """Who trains ``run_dir`` now ("process 123 on host"), or None when nobody holds its lock."""
    if not (Path(run_dir) / LOCK_FILE).exists():
        return None
    try:
        RunLock(run_dir).acquire().release()
    except RunError as exc:
        return str(exc).split(" is being trained by ")[-1].split(";")[0]
    except OSError:
        return None
    return None


class RunWriter:
    """Writes a run; every public write is atomic and committed by rewriting the manifest last."""

    def __init__(self, run_dir: Path, manifest: dict[str, Any], samples: SampleTable) -> None:
        # use create() or open()
        self.run_dir = run_dir
        self._m = manifest
        self.samples = samples
        self.messages: list[str] = []

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, run_dir: str | os.PathLike[str], *, config: dict, classes: list[str], samples: SampleTable,
               metric: str = DEFAULT_METRIC, margin: float = DEFAULT_MARGIN, overwrite: bool = False) -> "RunWriter":
        """Start a new run in ``run_dir`` (empty or absent; an existing run only with ``overwrite=True``).

        ``metric`` (the distance its loss works with) and ``margin`` (the gap of the triplet census) are recorded
        for every view to read, so none has to guess them from the config.
        """
        run_dir = Path(run_dir)
        metric, margin = _check_metric_margin(metric, margin, f"run {run_dir}")
        try:
            config_json = json.loads(json.dumps(config, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the config of run {run_dir} is not JSON-serialisable: {exc}") from None
        classes = list(classes)
        if not all(isinstance(c, str) for c in classes):
            raise ValueError("class names must be str")
        samples = _check_samples(samples, len(classes))
        if run_dir.exists():
            if not run_dir.is_dir():
                raise RunError(f"cannot create a run at {run_dir}: a file of that name exists")
            names = {p.name for p in run_dir.iterdir()}
            if MANIFEST in names:
                if not overwrite:
                    raise RunError(f"{run_dir} already holds a run: continue it (train --resume, or Continue in the "
                                   f"app) or choose another output folder")
                foreign = sorted(n for n in names if n not in _OWN_NAMES and not n.endswith((TMP_SUFFIX, ".json")))
                if foreign:
                    raise RunError(f"refusing to overwrite {run_dir}: it holds files that are not part of a run "
                                   f"({', '.join(foreign[:5])})")
                _clear_run_folder(run_dir)
            elif names:
                # only the leftovers of a create() that was interrupted before its manifest may be cleared
                crashed = {SAMPLES_FILE, SAMPLES_FILE + TMP_SUFFIX, MANIFEST + TMP_SUFFIX, EPOCHS_DIR, CHECKPOINTS_DIR,
                           LOCK_FILE}
                if names <= crashed and not any(
                        (run_dir / d).is_dir() and any((run_dir / d).iterdir()) for d in (EPOCHS_DIR, CHECKPOINTS_DIR)):
                    _clear_run_folder(run_dir)
                else:
                    raise RunError(f"cannot create a run in {run_dir}: the folder is not empty and is not a run")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / EPOCHS_DIR).mkdir(exist_ok=True)
        (run_dir / CHECKPOINTS_DIR).mkdir(exist_ok=True)
        _write_samples(run_dir / SAMPLES_FILE, samples)
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "created": now,
            "updated": now,
            "config": config_json,
            "metric": metric,
            "margin": margin,
            "classes": classes,
            "samples": {"file": SAMPLES_FILE, "n": len(samples),
                        "size": (run_dir / SAMPLES_FILE).stat().st_size},
            "epochs": [],
            "checkpoints": [],
            "features": None,
            "notes": [],
        }
        w = cls(run_dir, manifest, samples)
        w._commit()
        return w

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str]) -> "RunWriter":
        """Reopen a run to continue it: drop leftovers of an interrupted write and roll back to the last
        epoch whose file is intact; what was found is listed in ``messages``."""
        run_dir = Path(run_dir)
        m = _read_manifest(run_dir)
        samples_path = run_dir / SAMPLES_FILE
        if not samples_path.is_file():
            raise RunError(f"{run_dir} is damaged: {SAMPLES_FILE} is missing")
        samples = _read_samples(samples_path)
        if len(samples) != m["samples"]["n"]:
            raise RunError(f"{samples_path} holds {len(samples)} samples, the manifest says {m['samples']['n']}")
        w = cls(run_dir, m, samples)
        msgs = w.messages
        changed = False

        # epochs: keep the longest intact prefix
        epochs = sorted(m["epochs"], key=lambda e: e["epoch"])
        for i, entry in enumerate(epochs):
            why = _check_epoch_file(run_dir / entry["file"], entry)
            if why is not None:
                dropped = [e["epoch"] for e in epochs[i:]]
                keep = epochs[i - 1]["epoch"] if i else -1
                msgs.append(f"{run_dir / entry['file']} is damaged ({why}): rolled the run back to epoch {keep} "
                            f"(dropped epoch{'s' if len(dropped) > 1 else ''} {', '.join(map(str, dropped))})")
                epochs = epochs[:i]
                changed = True
                break
        m["epochs"] = epochs
        last = epochs[-1]["epoch"] if epochs else -1
        ckpts = []
        for c in sorted(m["checkpoints"], key=lambda c: c["epoch"]):
            p = run_dir / c["file"]
            if c["epoch"] > last:
                msgs.append(f"dropped checkpoint {p}: its epoch {c['epoch']} was rolled back")
            elif not p.is_file() or p.stat().st_size != c.get("size"):
                msgs.append(f"dropped checkpoint {p}: the file is missing or has the wrong size")
            elif "crc32" in c and file_crc32(p) != c["crc32"]:
                msgs.append(f"dropped checkpoint {p}: its checksum does not match the manifest")
            else:
                ckpts.append(c)
                continue
            changed = True
        m["checkpoints"] = ckpts
        feat = m.get("features")
        if feat:
            p = run_dir / feat["file"]
            if not p.is_file() or p.stat().st_size != feat.get("size"):
                msgs.append(f"dropped the feature cache {p}: the file is missing or has the wrong size")
                m["features"] = None
                changed = True
        if changed:
            w._commit()  # commit the rollback before deleting anything
        for p in _leftovers(run_dir, m):
            what = "an interrupted write" if p.name.endswith(TMP_SUFFIX) else "an uncommitted or rolled-back epoch"
            msgs.append(f"removed {p.relative_to(run_dir)}, left over from {what}")
            p.unlink(missing_ok=True)
        return w

    # ------------------------------------------------------------------ properties
    @property
    def last_epoch(self) -> int:
        """The last committed epoch, -1 if none."""
        return self._m["epochs"][-1]["epoch"] if self._m["epochs"] else -1

    @property
    def epochs(self) -> list[int]:
        """Committed epochs, ascending."""
        return [e["epoch"] for e in self._m["epochs"]]

    @property
    def config(self) -> dict:
        return self._m["config"]

    @property
    def classes(self) -> list[str]:
        return list(self._m["classes"])

    @property
    def checkpoint_epochs(self) -> list[int]:
        """Epochs with a committed checkpoint, ascending."""
        return [int(c["epoch"]) for c in self._m["checkpoints"]]

    def epoch_metrics(self) -> dict[int, dict]:
        """The metrics the manifest holds for each committed epoch."""
        return {int(e["epoch"]): dict(e.get("metrics", {})) for e in self._m["epochs"]}

    # ------------------------------------------------------------------ writes
    def _commit(self) -> None:
        self._m["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        data = json.dumps(self._m, indent=1, allow_nan=False).encode("utf-8")
        _write_bytes_atomic(self.run_dir / MANIFEST, data)

    def _truncate_from(self, epoch: int) -> None:
        """Forget committed epochs >= ``epoch`` and their checkpoints (committed before anything new is written)."""
        old = [e for e in self._m["epochs"] if e["epoch"] >= epoch]
        old_ck = [c for c in self._m["checkpoints"] if c["epoch"] >= epoch]
        if not old and not old_ck:
            return
        self._m["epochs"] = [e for e in self._m["epochs"] if e["epoch"] < epoch]
        self._m["checkpoints"] = [c for c in self._m["checkpoints"] if c["epoch"] < epoch]
        self._commit()
        for entry in old + old_ck:
            (self.run_dir / entry["file"]).unlink(missing_ok=True)
        if old:
            self.messages.append(f"epochs {', '.join(str(e['epoch']) for e in old)} were replaced: "
                                 f"the run continues from epoch {epoch}")

    def write_epoch(self, epoch: int, embeddings: np.ndarray, metrics: dict[str, float],
                    telemetry: dict[str, np.ndarray] | None = None) -> Path:
        """Commit one epoch's embeddings (row i = sample i), metrics and per-batch telemetry; returns its file.

        Writing an epoch that is already committed replaces it and drops every later epoch."""
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        n = len(self.samples)
        if emb.ndim != 2 or emb.shape[0] != n or emb.shape[1] < 1:
            raise ValueError(f"embeddings of epoch {epoch} have shape {emb.shape}; this run needs ({n}, D), "
                             f"one row per sample")
        clean_metrics: dict[str, float] = {}
        for k, v in metrics.items():
            if not isinstance(k, str) or not k:
                raise ValueError(f"metric names must be non-empty str, got {k!r}")
            try:
                clean_metrics[k] = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"metric {k!r} of epoch {epoch} is not a number: {v!r}") from None
        tel: dict[str, np.ndarray] = {}
        for k, v in (telemetry or {}).items():
            arr = np.asarray(v)
            if not isinstance(k, str) or not k or "/" in k:
                raise ValueError(f"telemetry names must be non-empty str without '/', got {k!r}")
            if arr.dtype.kind not in "biuf":
                raise ValueError(f"telemetry {k!r} of epoch {epoch} must be numeric, not {arr.dtype}")
            tel[k] = arr
        self._truncate_from(epoch)

        rel = f"{EPOCHS_DIR}/{_epoch_name(epoch)}.h5"
        path = self.run_dir / rel
        tmp = _tmp(path)
        with _h5open(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["version"] = FORMAT_VERSION
            f.attrs["epoch"] = epoch
            f.create_dataset("embeddings", data=emb)
            f.create_dataset("labels", data=self.samples.labels)
            f.create_dataset("sample_ids", data=np.arange(n, dtype=np.int64))
            f.create_dataset("split", data=self.samples.split)
            g = f.create_group("metrics")
            for k, v in clean_metrics.items():
                g.attrs[k] = v
            t = f.create_group("telemetry")
            for k, v in tel.items():
                t.create_dataset(k, data=v)
        crc = file_crc32(tmp)
        _replace(tmp, path)
        self._m["epochs"].append({
            "epoch": epoch, "file": rel, "n": n, "d": int(emb.shape[1]), "size": path.stat().st_size,
            "crc32": crc, "written": time.time(), "metrics": {k: _json_float(v) for k, v in clean_metrics.items()},
        })
        self._commit()
        return path

    def write_checkpoint(self, epoch: int, state: dict) -> Path:
        """Save a training state with torch.save (atomic) and record it; reload it with :func:`load_checkpoint`.

        Only tensors, numbers, strings and containers of them load back under ``weights_only=True``."""
        import torch  # lazily: readers should not pay for importing torch

        epoch = int(epoch)
        if epoch not in self.epochs:
            raise ValueError(f"cannot checkpoint epoch {epoch}: write_epoch({epoch}, ...) must be committed first")
        if not isinstance(state, dict):
            raise ValueError(f"a checkpoint state must be a dict, not {type(state).__name__}")
        if state.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
            raise ValueError(f"the checkpoint state's 'format' key is {state['format']!r}; it is reserved for "
                             f"{CHECKPOINT_FORMAT!r}")
        rel = f"{CHECKPOINTS_DIR}/{_epoch_name(epoch)}.pt"
        path = self.run_dir / rel
        tmp = _tmp(path)
        with open(tmp, "wb") as f:
            torch.save({**state, "format": CHECKPOINT_FORMAT}, f)
            f.flush()
        crc = file_crc32(tmp)
        _replace(tmp, path)
        self._m["checkpoints"] = [c for c in self._m["checkpoints"] if c["epoch"] != epoch]
        self._m["checkpoints"].append({"epoch": epoch, "file": rel, "size": path.stat().st_size, "crc32": crc})
        self._m["checkpoints"].sort(key=lambda c: c["epoch"])
        self._commit()
        return path

    def prune_checkpoints(self, keep: set[int]) -> list[int]:
        """Forget and delete every checkpoint whose epoch is not in ``keep``; returns the epochs removed.

        The manifest is committed first: a kill before the files go leaves files that no manifest names, which
        readers ignore and the next write of the run removes."""
        gone = [c for c in self._m["checkpoints"] if c["epoch"] not in keep]
        if not gone:
            return []
        self._m["checkpoints"] = [c for c in self._m["checkpoints"] if c["epoch"] in keep]
        self._commit()
        for c in gone:
            (self.run_dir / CHECKPOINTS_DIR / f"{_epoch_name(int(c['epoch']))}.pt").unlink(missing_ok=True)
        return [int(c["epoch"]) for c in gone]

    def write_features(self, features: np.ndarray) -> Path:
        """Cache the frozen backbone's features (N, F) for head-only training (atomic, recorded in the manifest)."""
        feats = np.ascontiguousarray(features, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[0] != len(self.samples):
            raise ValueError(f"features have shape {feats.shape}; this run needs ({len(self.samples)}, F)")
        path = self.run_dir / FEATURES_FILE
        tmp = _tmp(path)
        with _h5open(tmp, "w") as f:
            f.create_dataset("features", data=feats)
        _replace(tmp, path)
        self._m["features"] = {"file": FEATURES_FILE, "n": int(feats.shape[0]), "d": int(feats.shape[1]),
                               "size": path.stat().st_size}
        self._commit()
        return path

    def save_json(self, name: str, obj: Any) -> Path:
        """Write a small side file such as ``thresholds.json`` atomically into the run."""
        if not _JSON_NAME_RE.match(name) or name == MANIFEST:
            raise ValueError(f"{name!r} is not allowed as a side-file name: use a plain file name ending in "
                             f".json (not {MANIFEST})")
        try:
            data = json.dumps(obj, indent=1, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot save {name} in {self.run_dir}: {exc}") from None
        path = self.run_dir / name
        _write_bytes_atomic(path, data)
        return path

    def close(self) -> None:
        """Nothing is held open between writes; kept so a writer can be used as a context manager."""

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunReader:
    """Read-only view of a run, safe while a writer is adding epochs: it sees only what the manifest commits."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        m = _read_manifest(self.run_dir)
        self.config: dict = m["config"]
        self.metric, self.margin = run_metric_margin(m, self.run_dir)
        self.classes: list[str] = list(m["classes"])
        self.created: str = m.get("created", "")
        path = self.run_dir / SAMPLES_FILE
        if not path.is_file():
            raise RunError(f"{self.run_dir} is damaged: {SAMPLES_FILE} is missing")
        self.samples: SampleTable = _read_samples(path)
        self.messages: list[str] = []
        self._entries: dict[int, dict[str, Any]] = {}
        self._layout: dict[tuple[str, Any], tuple[int, np.dtype]] = {}  # (file, written) -> data offset, dtype
        # the embeddings of the last epochs read, memory-mapped once and shared by every caller (the map, the
        # neighbour, triplet and threshold views each used to read a copy: 4 x 512 MB at 1e6 x 128)
        self._mapped: dict[tuple[str, Any], np.ndarray] = {}
        self._mapped_lock = threading.Lock()
        self._split_rows: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # see split_rows
        self._verified: set[tuple] = set()  # files whose checksum was checked
        self._m: dict[str, Any] = {}
        self.epochs: list[int] = []
        self._apply(m)
        for p in _leftovers(self.run_dir, m):
            self.messages.append(f"ignored {p.relative_to(self.run_dir)}: not committed (a write in progress "
                                 f"or interrupted; the writer removes leftovers when it reopens the run)")

    def _apply(self, m: dict[str, Any]) -> list[int]:
        new: list[int] = []
        entries: dict[int, dict[str, Any]] = {}
        for e in sorted(m["epochs"], key=lambda e: e["epoch"]):
            p = self.run_dir / e["file"]
            try:
                size = p.stat().st_size
            except OSError:
                size = None
            if size != e.get("size"):
                # the manifest is newer than a rollback or the file was damaged after its commit
                msg = f"ignored epoch {e['epoch']}: {p} is missing or has the wrong size"
                if msg not in self.messages:
                    self.messages.append(msg)
                continue
            old = self._entries.get(e["epoch"])
            if old is None or old.get("written") != e.get("written") or old.get("file") != e.get("file"):
                new.append(e["epoch"])
            entries[e["epoch"]] = e
        self._entries = entries
        self._m = m
        self.epochs = sorted(entries)
        return new

    @property
    def listed_epochs(self) -> list[int]:
        """Every epoch the manifest commits, the damaged ones included (``epochs`` holds the usable ones)."""
        return sorted(e["epoch"] for e in self._m["epochs"])

    def refresh(self) -> list[int]:
        """Re-read the manifest; returns the epochs committed (or rewritten) since the last look."""
        return self._apply(_read_manifest(self.run_dir))

    @property
    def last_epoch(self) -> int:
        return self.epochs[-1] if self.epochs else -1

    def _entry(self, epoch: int) -> dict[str, Any]:
        try:
            return self._entries[int(epoch)]
        except KeyError:
            raise RunError(f"epoch {epoch} is not committed in run {self.run_dir} "
                           f"(committed: {self.epochs or 'none'})") from None

    def _open_epoch(self, epoch: int) -> tuple[h5py.File, Path]:
        entry = self._entry(epoch)
        path = self.run_dir / entry["file"]
        try:
            self._verify(entry, path, f"epoch {epoch}")
            return _h5open_member(path), path
        except OSError as exc:
            raise RunError(f"cannot read epoch {epoch} from {path}: {exc}") from None

    def _verify(self, entry: dict[str, Any], path: Path, what: str) -> None:
        """Check a committed file against its integrity record once (size at open, the checksum here)."""
        key = (entry["file"], entry.get("written"), entry.get("crc32"))
        if key in self._verified or "crc32" not in entry:
            return
        if file_crc32(path) != entry["crc32"]:
            raise RunError(f"{path} is damaged: the checksum of {what} does not match the manifest (the file "
                           f"changed after it was committed)")
        self._verified.add(key)

    def verified_checkpoint_file(self, path: Path | str) -> Path:
        """``path`` itself; when it is one of this run's checkpoints, after checking it against its record."""
        path = Path(path)
        for c in self._m["checkpoints"]:
            if (self.run_dir / c["file"]).resolve() == path.resolve():
                return self.verified_checkpoint(c["epoch"])
        return path

    def verified_checkpoint(self, epoch: int | None = None) -> Path | None:
        """:meth:`checkpoint_path`, after checking the file against its integrity record (RunError if damaged)."""
        path = self.checkpoint_path(epoch)
        if path is None:
            return None
        entry = next(c for c in self._m["checkpoints"] if self.run_dir / c["file"] == path)
        if not path.is_file() or path.stat().st_size != entry["size"]:
            raise RunError(f"{path} is damaged: the checkpoint is missing or has the wrong size")
        self._verify(entry, path, f"the checkpoint of epoch {entry['epoch']}")
        return path

    MAPPED_EPOCHS = 2  # epochs whose mapping is kept (the one shown and the one before)
    STREAM_ROWS = 65_536  # rows() of more ids than this reads them in runs (see rows)

    def load_epoch(self, epoch: int) -> EpochData:
        """All of one committed epoch: embeddings, metrics, telemetry and the per-row arrays.

        The embeddings of a contiguous dataset (what RunWriter writes) are one copy-on-write memory map of the file,
        the same array for every caller of this reader: treat it as read-only (an in-place change would be seen by
        the other views; the file never changes). Other layouts are read into memory."""
        f, path = self._open_epoch(epoch)
        try:
            with f:
                ds = f["embeddings"]
                emb = self._mapped_embeddings(epoch, path, ds)
                return EpochData(
                    epoch=int(epoch),
                    embeddings=ds[()] if emb is None else emb,
                    metrics={k: float(v) for k, v in f["metrics"].attrs.items()},
                    telemetry={k: d[()] for k, d in f["telemetry"].items()},
                    labels=f["labels"][()],
                    sample_ids=f["sample_ids"][()],
                    split=f["split"][()],
                )
        except (OSError, KeyError, ValueError) as exc:
            raise RunError(f"epoch file {path} is damaged: {exc}") from None

    def _mapped_embeddings(self, epoch: int, path: Path, ds) -> np.ndarray | None:
        entry = self._entry(epoch)
        key = (entry["file"], entry.get("written"))
        with self._mapped_lock:
            hit = self._mapped.pop(key, None)
            if hit is None:
                offset = _contiguous_offset(ds)
                if offset is None or ds.shape != (entry["n"], entry["d"]) or ds.dtype != np.float32 or ds.size == 0:
                    return None
                hit = np.memmap(path, dtype=np.float32, mode="c", offset=offset, shape=tuple(ds.shape))
            self._mapped[key] = hit  # most recently used last
            while len(self._mapped) > self.MAPPED_EPOCHS:
                self._mapped.pop(next(iter(self._mapped)))
            return hit

    def telemetry(self, epoch: int) -> dict[str, np.ndarray]:
        """One epoch's per-batch telemetry (loss, lr, miner counts, ...) without reading its embeddings."""
        f, path = self._open_epoch(epoch)
        try:
            with f:
                group = f.get("telemetry")
                return {} if group is None else {k: d[()] for k, d in group.items()}
        except (OSError, KeyError, ValueError) as exc:
            raise RunError(f"epoch file {path} is damaged: {exc}") from None

    def rows(self, epoch: int, ids: np.ndarray) -> np.ndarray:
        """Embedding rows ``ids`` (any order, repeats allowed) of one epoch, without reading the whole array."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        entry = self._entry(epoch)
        n, d = entry["n"], entry["d"]
        if ids.size and (ids.min() < -n or ids.max() >= n):
            raise IndexError(f"sample ids must lie in [0, {n}) for epoch {epoch}")
        if ids.size == 0:
            return np.empty((0, d), np.float32)
        ids = np.where(ids < 0, ids + n, ids)
        path = self.run_dir / entry["file"]
        key = (entry["file"], entry.get("written"))
        try:
            if key not in self._layout:
                f, path = self._open_epoch(epoch)
                with f:
                    ds = f["embeddings"]
                    if ds.shape != (n, d):
                        raise ValueError(f"embeddings have shape {ds.shape}, the manifest says {(n, d)}")
                    offset = _contiguous_offset(ds)
                    if offset is None:  # chunked or compressed: h5py wants increasing, unique indices
                        uniq, inverse = np.unique(ids, return_inverse=True)
                        return np.asarray(ds[uniq], dtype=np.float32)[inverse.reshape(-1)]
                    self._layout[key] = (offset, ds.dtype)
            # a contiguous, unfiltered dataset is a plain C array in the file: map it (~20x faster than
            # h5py's per-row selection for 1,000 scattered rows, see bench/bench_store.py)
            offset, dtype = self._layout[key]
            if len(ids) < self.STREAM_ROWS:
                mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(n, d))
                try:
                    return np.array(mm[ids], dtype=np.float32)
                finally:
                    del mm
            return self._rows_in_runs(path, offset, dtype, ids, d)
        except (OSError, KeyError, ValueError) as exc:
            raise RunError(f"epoch file {path} is damaged: {exc}") from None

    SHARED_SPLITS = 2  # split_rows keeps this many (epoch, split) copies

    def split_rows(self, epoch: int, split: int) -> tuple[np.ndarray, np.ndarray]:
        """(sample ids, embedding rows) of one split of one epoch, read once and the same arrays for every caller
        (the Triplets and Threshold tabs each read a copy of the held-out rows: 2 x 256 MB at 1e6 x 128). Both
        arrays are read-only (a caller that writes into them gets numpy's ValueError instead of changing what the
        other tab sees); copy them to change them."""
        entry = self._entry(epoch)
        key = (entry["file"], entry.get("written"), int(split))
        with self._mapped_lock:
            hit = self._split_rows.pop(key, None)
            if hit is not None:
                self._split_rows[key] = hit  # most recently used last
                return hit
        ids = np.flatnonzero(np.asarray(self.samples.split) == split).astype(np.int64)
        rows = self.rows(epoch, ids)
        ids.flags.writeable = False
        rows.flags.writeable = False
        hit = (ids, rows)
        with self._mapped_lock:
            hit = self._split_rows.setdefault(key, hit)  # two callers at once: the first one's copy
            while len(self._split_rows) > self.SHARED_SPLITS:
                self._split_rows.pop(next(iter(self._split_rows)))
        return hit

    def _rows_in_runs(self, path: Path, offset: int, dtype, ids: np.ndarray, d: int) -> np.ndarray:
        """Many rows of a contiguous dataset, in sorted runs of STREAM_ROWS ids: a dense run is read with one
        ``readinto`` of its span, a sparse one gathered through a short-lived map of its span. Either way the
        file's pages do not pile up in this process (the whole epoch mapped for half of its rows kept 256-512 MB
        of a 1e6 x 128 epoch resident)."""
        ordered = bool(np.all(ids[1:] >= ids[:-1]))
        order = None if ordered else np.argsort(ids, kind="stable")
        sids = ids if ordered else ids[order]
        out = np.empty((len(ids), d), np.float32)
        row_bytes = d * np.dtype(dtype).itemsize
        with open(path, "rb", buffering=0) as fh:
            for s in range(0, len(ids), self.STREAM_ROWS):
                part = sids[s:s + self.STREAM_ROWS]
                lo, span = int(part[0]), int(part[-1]) - int(part[0]) + 1
                where = slice(s, s + len(part)) if ordered else order[s:s + len(part)]
                if span <= 2 * len(part):  # dense: read the span, then pick its rows
                    whole = span == len(part) and bool(np.all(np.diff(part) == 1))  # not repeats and gaps
                    direct = whole and ordered and np.dtype(dtype) == np.float32
                    buf = out[s:s + span] if direct else np.empty((span, d), dtype)  # straight into the result
                    fh.seek(offset + lo * row_bytes)
                    view, got = memoryview(buf).cast("B"), 0
                    while got < buf.nbytes:
                        n_read = fh.readinto(view[got:])
                        if not n_read:
                            raise ValueError(f"the file ends inside row {lo + got // row_bytes}")
                        got += n_read
                    if not direct:
                        out[where] = buf if whole else buf[part - lo]
                else:
                    mm = np.memmap(path, dtype=dtype, mode="r", offset=offset + lo * row_bytes, shape=(span, d))
                    try:
                        out[where] = mm[part - lo]
                    finally:
                        del mm
        return out

    def metrics_history(self) -> dict[str, np.ndarray]:
        """'epoch' plus one float array per metric (NaN where an epoch lacks it), from the manifest alone."""
        entries = [self._entries[e] for e in self.epochs]
        names: list[str] = []
        for e in entries:
            for k in e.get("metrics", {}):
                if k not in names:
                    names.append(k)
        out: dict[str, np.ndarray] = {"epoch": np.array([e["epoch"] for e in entries], dtype=np.int64)}
        for k in names:
            vals = [e.get("metrics", {}).get(k) for e in entries]
            out[k] = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
        return out

    def checkpoint_path(self, epoch: int | None = None) -> Path | None:
        """The checkpoint of ``epoch`` (the latest one when None), or None when there is none."""
        ckpts = {c["epoch"]: c for c in self._m["checkpoints"] if c["epoch"] in self._entries}
        if not ckpts:
            return None
        key = max(ckpts) if epoch is None else int(epoch)
        c = ckpts.get(key)
        return None if c is None else self.run_dir / c["file"]

    @property
    def checkpoints(self) -> list[int]:
        """Epochs that have a committed checkpoint."""
        return sorted(c["epoch"] for c in self._m["checkpoints"] if c["epoch"] in self._entries)

    def features(self) -> np.ndarray | None:
        """The cached head-only backbone features (N, F), or None when the run has none."""
        feat = self._m.get("features")
        if not feat:
            return None
        path = self.run_dir / feat["file"]
        try:
            with _h5open_member(path) as f:
                return f["features"][()]
        except (OSError, KeyError) as exc:
            raise RunError(f"feature cache {path} cannot be read: {exc}") from None
