"""Tests of trainer/store.py: round trip, following a live run, crash safety (SIGKILL and injected faults),
cleaning and rollback on reopen, refusals, and the plain-h5py snippet of docs/FORMAT.md."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from trainer import store
from trainer.store import (
    SPLIT_HELDOUT,
    SPLIT_TRAIN,
    RunError,
    RunReader,
    RunWriter,
    SampleTable,
    is_run_dir,
)
from trainer.errors import TrainingError
from trainer.model.checkpoint import CHECKPOINT_FORMAT, load_checkpoint

from tests.support.store_writer_proc import synthetic_epoch, synthetic_samples
from tests.support import ROOT

WRITER_PROC = ROOT / "tests" / "support" / "store_writer_proc.py"
CLASSES = [f"c{i}" for i in range(7)]


def make_run(tmp_path: Path, n: int = 50, d: int = 8, epochs: int = 3, seed: int = 0, name: str = "run") -> RunWriter:
    w = RunWriter.create(tmp_path / name, config={"seed": seed, "n": n}, classes=CLASSES, samples=synthetic_samples(n))
    for e in range(epochs):
        w.write_epoch(e, *synthetic_epoch(e, seed, n, d))
    return w


def assert_epoch_intact(reader: RunReader, epoch: int, seed: int, n: int, d: int) -> None:
    emb, metrics, telemetry = synthetic_epoch(epoch, seed, n, d)
    got = reader.load_epoch(epoch)
    assert got.epoch == epoch
    np.testing.assert_array_equal(got.embeddings, emb)
    assert got.metrics == metrics
    assert set(got.telemetry) == set(telemetry)
    for k, v in telemetry.items():
        np.testing.assert_array_equal(got.telemetry[k], v)
    np.testing.assert_array_equal(got.labels, reader.samples.labels)
    np.testing.assert_array_equal(got.sample_ids, np.arange(n))


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file below path with its size and mtime: detects any change a reader might make."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


# ------------------------------------------------------------------------------------------ round trip
def test_round_trip_everything(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    n, d = 40, 6
    samples = synthetic_samples(n)
    samples.roots = ["/data/root", "/other/test\udcfe"]
    samples.root_index = (np.arange(n) % 2).astype(np.int16)
    config = {"model": {"backbone": "small_cnn", "embedding_dim": d}, "seed": 3, "holdout": None}
    w = RunWriter.create(tmp_path / "run", config=config, classes=CLASSES, samples=samples)
    assert w.last_epoch == -1 and w.messages == []
    rng = np.random.default_rng(0)
    mined = {"mined_batch": np.array([0, 0, 1]), "mined_anchor": np.array([3, 4, 5]),
             "mined_positive": np.array([7, -1, 9]), "mined_negative": np.array([-1, 2, 11])}
    written = {}
    for e in range(3):
        emb = rng.standard_normal((n, d)).astype(np.float32)
        metrics = {"heldout/precision_at_1": 0.1 * e, "train_loss": 1.0 / (e + 1)}
        if e == 1:
            metrics["only_one"] = 7.0
            metrics["nan_metric"] = float("nan")
        tel = {"loss": rng.random(4).astype(np.float32), "n_hard": np.arange(4), **mined}
        p = w.write_epoch(e, emb, metrics, tel)
        assert p == tmp_path / "run" / "epochs" / f"epoch_{e:04d}.h5" and p.is_file()
        written[e] = (emb, metrics, tel)
    state = {"model": {"w": torch.arange(6.0)}, "epoch": 2, "classes": CLASSES}
    ck = w.write_checkpoint(2, state)
    feats = rng.standard_normal((n, 5)).astype(np.float32)
    w.write_features(feats)
    w.save_json("thresholds.json", {"cosine": 0.42})

    assert is_run_dir(tmp_path / "run") and not is_run_dir(tmp_path)
    r = RunReader(tmp_path / "run")
    assert r.config == config and r.classes == CLASSES and r.epochs == [0, 1, 2] and r.messages == []
    assert r.samples.paths == samples.paths and r.samples.roots == samples.roots
    for name in ("labels", "split", "root_index"):
        np.testing.assert_array_equal(getattr(r.samples, name), getattr(samples, name))
    assert r.samples.labels.dtype == np.int64 and r.samples.split.dtype == np.int8
    assert r.samples.root_index.dtype == np.int16
    for e, (emb, metrics, tel) in written.items():
        got = r.load_epoch(e)
        np.testing.assert_array_equal(got.embeddings, emb)
        assert got.embeddings.dtype == np.float32
        np.testing.assert_equal(got.metrics, metrics)
        assert set(got.telemetry) == set(tel)
        for k in tel:
            np.testing.assert_array_equal(got.telemetry[k], tel[k])
        np.testing.assert_array_equal(got.split, samples.split)
    hist = r.metrics_history()
    np.testing.assert_array_equal(hist["epoch"], [0, 1, 2])
    np.testing.assert_allclose(hist["train_loss"], [1.0, 0.5, 1 / 3])
    np.testing.assert_array_equal(hist["only_one"], [np.nan, 7.0, np.nan])
    assert np.isnan(hist["nan_metric"]).all()
    assert r.checkpoint_path() == ck == r.checkpoint_path(2) and r.checkpoint_path(1) is None
    loaded = load_checkpoint(ck)
    assert loaded["format"] == CHECKPOINT_FORMAT and loaded["classes"] == CLASSES
    assert torch.equal(loaded["model"]["w"], torch.arange(6.0))
    np.testing.assert_array_equal(r.features(), feats)
    assert json.loads((tmp_path / "run" / "thresholds.json").read_text()) == {"cosine": 0.42}
    # the manifest is strict JSON (NaN stored as null) readable by any JSON parser
    json.loads((tmp_path / "run" / "manifest.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    # reopening for writing finds nothing to clean and continues after the last epoch
    w2 = RunWriter.open(tmp_path / "run")
    assert w2.messages == [] and w2.last_epoch == 2 and w2.config == config


def test_non_utf8_path_survives_as_its_bytes(tmp_path: Path) -> None:
    raw = b"caf\xe9/\xff\xfe image.png"  # Latin-1 name: not valid UTF-8
    name = raw.decode("utf-8", "surrogateescape")
    samples = SampleTable([name, "ok/\u00e9t\u00e9.png"], np.array([0, 1]), np.array([SPLIT_TRAIN, SPLIT_HELDOUT]),
                          [os.fsdecode(b"/r\xe9")], np.array([0, 0]))
    RunWriter.create(tmp_path / "run", config={}, classes=["a", "b"], samples=samples)
    r = RunReader(tmp_path / "run")
    assert r.samples.paths == samples.paths and r.samples.paths[0].encode("utf-8", "surrogateescape") == raw
    assert r.samples.roots == samples.roots
    with h5py.File(tmp_path / "run" / "samples.h5", "r") as f:
        assert f["paths"][0] == raw and f["paths"][1] == "ok/\u00e9t\u00e9.png".encode()
    if os.name == "posix":  # what os functions accept for the real file
        assert os.fsencode(r.samples.paths[0]) == raw


@pytest.mark.parametrize("mapped", [True, False, "runs"], ids=["memmap", "h5py-selection", "runs-of-ids"])
def test_rows_match_a_plain_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapped) -> None:
    if not mapped:  # the path taken for chunked / compressed datasets
        monkeypatch.setattr(store, "_contiguous_offset", lambda ds: None)
    if mapped == "runs":  # many ids: read in sorted runs, each through a map of its own span
        monkeypatch.setattr(RunReader, "STREAM_ROWS", 16)
    n, d = 300, 5
    make_run(tmp_path, n=n, d=d, epochs=2, seed=4)
    r = RunReader(tmp_path / "run")
    emb = synthetic_epoch(1, 4, n, d)[0]
    rng = np.random.default_rng(1)
    # few rows (per-row selection), many rows (one read), repeats, any order, negative ids, empty
    for ids in (rng.integers(0, n, 7), rng.integers(0, n, 200), np.array([5, 5, 0, 299, 5]), np.array([-1, 3]),
                rng.permutation(n), np.array([], dtype=np.int64), np.arange(n), np.arange(3, n, 7)[::-1],
                np.sort(rng.integers(0, n, 150))):  # sorted; sparse (runs span more than twice their ids)
        brute = np.array([emb[i] for i in ids], dtype=np.float32).reshape(len(ids), d)
        got = r.rows(1, ids)
        assert got.shape == (len(ids), d) and got.dtype == np.float32
        np.testing.assert_array_equal(got, brute)
    with pytest.raises(IndexError, match=r"\[0, 300\)"):
        r.rows(1, np.array([300]))
    with pytest.raises(ValueError, match="integer"):
        r.rows(1, np.array([0.5]))
    with pytest.raises(RunError, match="epoch 9 is not committed"):
        r.rows(9, np.array([0]))


def test_metrics_history_matches_a_loop_over_epoch_files(tmp_path: Path) -> None:
    make_run(tmp_path, n=20, d=3, epochs=5, seed=2)
    r = RunReader(tmp_path / "run")
    hist = r.metrics_history()
    for i, e in enumerate(r.epochs):
        assert hist["epoch"][i] == e
        for k, v in r.load_epoch(e).metrics.items():
            assert hist[k][i] == v
    assert set(hist) == {"epoch", "precision_at_1", "epoch_x2"}


@pytest.mark.skipif(os.name != "posix", reason="flock is POSIX")
def test_reader_is_read_only_and_not_blocked_by_hdf5_locks(tmp_path: Path) -> None:
    make_run(tmp_path, n=30, d=4, epochs=2, seed=1)
    run = tmp_path / "run"
    (run / "epochs" / "epoch_0007.h5.tmp").write_bytes(b"partial")
    (run / "epochs" / "epoch_0005.h5").write_bytes(b"uncommitted")
    before = tree(run)
    # a writer elsewhere holding HDF5's exclusive file lock (flock) must not block the reader
    import fcntl

    locked = run / "epochs" / "epoch_0001.h5"
    with open(locked, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OSError):  # what a reader with HDF5's default locking would hit
            h5py.File(locked, "r", locking=True)
        r = RunReader(run)
        assert_epoch_intact(r, 1, 1, 30, 4)
        np.testing.assert_array_equal(r.rows(1, np.array([2, 1])), synthetic_epoch(1, 1, 30, 4)[0][[2, 1]])
        r.metrics_history()
        assert r.refresh() == [] and r.features() is None
    assert tree(run) == before
    assert r.epochs == [0, 1]
    assert len(r.messages) == 2 and all("not committed" in m for m in r.messages)
    assert any("epoch_0005.h5" in m for m in r.messages) and any("epoch_0007.h5.tmp" in m for m in r.messages)


# ------------------------------------------------------------------------------------------ live runs
def test_reader_follows_a_writer_thread_and_never_sees_a_partial_epoch(tmp_path: Path) -> None:
    n, d, seed, total = 400, 16, 9, 25
    w = RunWriter.create(tmp_path / "run", config={}, classes=CLASSES, samples=synthetic_samples(n))
    r = RunReader(tmp_path / "run")
    assert r.epochs == [] and r.refresh() == []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for e in range(total):
                w.write_epoch(e, *synthetic_epoch(e, seed, n, d))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=write)
    t.start()
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while len(seen) < total and time.monotonic() < deadline:
        new = r.refresh()
        assert new == sorted(new) and not set(new) & set(seen)
        for e in new:
            assert_epoch_intact(r, e, seed, n, d)
            # an epoch file written to its final name is always whole
            assert (tmp_path / "run" / "epochs" / f"epoch_{e:04d}.h5").is_file()
        seen += new
    t.join()
    assert not errors
    assert seen == list(range(total))
    assert r.refresh() == []


def test_rewriting_an_epoch_drops_the_later_ones(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    w = make_run(tmp_path, n=20, d=4, epochs=5, seed=0)
    for e in (1, 3):
        w.write_checkpoint(e, {"x": torch.zeros(1)})
    r = RunReader(tmp_path / "run")
    np.testing.assert_array_equal(r.rows(2, np.array([3, 1])), synthetic_epoch(2, 0, 20, 4)[0][[3, 1]])
    w.write_epoch(2, *synthetic_epoch(2, 77, 20, 4))
    assert w.epochs == [0, 1, 2] and w.last_epoch == 2 and "replaced" in w.messages[-1]
    assert r.refresh() == [2] and r.epochs == [0, 1, 2]
    assert_epoch_intact(r, 2, 77, 20, 4)
    np.testing.assert_array_equal(r.rows(2, np.array([3, 1])), synthetic_epoch(2, 77, 20, 4)[0][[3, 1]])
    assert r.checkpoint_path() == tmp_path / "run" / "checkpoints" / "epoch_0001.pt"
    assert sorted(p.name for p in (tmp_path / "run" / "epochs").iterdir()) == [f"epoch_{e:04d}.h5" for e in range(3)]
    assert not (tmp_path / "run" / "checkpoints" / "epoch_0003.pt").exists()


# ------------------------------------------------------------------------------------------ crash safety
def _verify_after_crash(run: Path, seed: int, n: int, d: int, committed_before: list[int], reported: list[int]) -> RunReader:
    r = RunReader(run)
    assert r.epochs == list(range(len(r.epochs))), r.epochs  # a gap-free prefix
    assert set(committed_before) <= set(r.epochs), "an epoch committed earlier was lost"
    assert set(reported) <= set(r.epochs), "an epoch reported as committed was lost"
    for e in r.epochs:
        assert_epoch_intact(r, e, seed, n, d)
    return r


def test_sigkill_at_random_moments_keeps_every_committed_epoch(tmp_path: Path) -> None:
    n, d, max_epochs, trials = 2000, 64, 40, 20
    rnd = random.Random(1234)
    run_no, seed = 0, 100
    run = tmp_path / f"run{run_no}"
    committed: list[int] = []
    stats = {"cleaned": 0, "resumed": 0, "mid_open": 0}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # at least `trials` kills; more (up to 6x) until one has landed inside a write, which a busy machine's timing
    # can delay (20 kills once all fell between writes; 60 once, with the rest of the suite running beside it)
    for trial in range(6 * trials):
        if trial >= trials and stats["cleaned"] >= 1 and stats["resumed"] >= 1:
            break
        proc = subprocess.Popen([sys.executable, str(WRITER_PROC), str(run), str(seed), str(n), str(d),
                                 str(max_epochs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "imported"
            if trial % 2:  # half the kills land while epochs are written, half may land during open()
                assert proc.stdout.readline().startswith("opened")
            # follow the run while it is written, until a random moment, then kill -9
            kill_at = time.monotonic() + rnd.uniform(0.0, 0.2)
            reader = RunReader(run) if is_run_dir(run) else None
            while time.monotonic() < kill_at:
                if reader is not None:
                    for e in reader.refresh():
                        assert_epoch_intact(reader, e, seed, n, d)
                else:
                    time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode in (-signal.SIGKILL, 0), err
        lines = ("opened " if trial % 2 else "") + out
        reported = [int(x) for x in re.findall(r"committed (\d+)", out)]
        if "opened" not in lines.split():
            stats["mid_open"] += 1
        if not is_run_dir(run):  # killed during create(): nothing was committed, so nothing may be lost
            assert committed == [] and reported == []
            continue
        r = _verify_after_crash(run, seed, n, d, committed, reported)
        committed = list(r.epochs)
        # reopening for writing cleans the leftovers, says so, and leaves a run the reader finds clean
        w = RunWriter.open(run)
        assert w.last_epoch == (committed[-1] if committed else -1)
        stats["cleaned"] += bool(w.messages)
        assert all(m.startswith("removed ") for m in w.messages), w.messages
        assert RunReader(run).messages == []
        assert not list(run.rglob("*.tmp"))
        stats["resumed"] += bool(committed)
        if len(committed) == max_epochs:  # this run is complete: the next trials start a fresh one
            run_no, seed, committed = run_no + 1, seed + 1, []
            run = tmp_path / f"run{run_no}"
    # the kills really landed in the middle of writes: some left leftovers behind, some runs were resumed
    print(stats)
    assert stats["cleaned"] >= 1 and stats["resumed"] >= 1, stats


class _Crash(Exception):
    pass


@pytest.mark.parametrize("victim", ["_fsync_file", "replace", "_fsync_dir"])
def test_crash_at_every_step_of_a_write_loses_at_most_that_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 victim: str) -> None:
    """Deterministic twin of the SIGKILL test: the k-th low-level step of a sequence of writes fails."""
    torch = pytest.importorskip("torch")
    n, d, seed = 30, 4, 5
    step = 0
    while True:
        run = tmp_path / f"{victim}{step}"
        w = make_run(tmp_path, n=n, d=d, epochs=2, seed=seed, name=run.name)
        w.write_checkpoint(1, {"x": torch.ones(2)})
        calls = 0
        real = {"_fsync_file": store._fsync_file, "replace": os.replace, "_fsync_dir": store._fsync_dir}[victim]

        def failing(*args, _real=real):
            nonlocal calls
            calls += 1
            if calls == step + 1:
                raise _Crash
            return _real(*args)

        if victim == "replace":
            monkeypatch.setattr(store.os, "replace", failing)
        else:
            monkeypatch.setattr(store, victim, failing)
        phase = 0
        try:
            w.write_epoch(2, *synthetic_epoch(2, seed, n, d))
            phase = 1
            w.write_checkpoint(2, {"x": torch.ones(3)})
            phase = 2
            w.write_epoch(1, *synthetic_epoch(1, seed + 1, n, d))  # a rewrite (resume from an earlier checkpoint)
            phase = 3
        except _Crash:
            pass
        finally:
            monkeypatch.undo()
        r = RunReader(run)
        allowed = {0: ([0, 1], [0, 1, 2]), 1: ([0, 1, 2],), 2: ([0, 1, 2], [0], [0, 1]), 3: ([0, 1],)}[phase]
        assert r.epochs in allowed, (phase, r.epochs)
        for e in r.epochs:
            rewritten = e == 1 and phase >= 2 and r.epochs == [0, 1]
            assert_epoch_intact(r, e, seed + rewritten, n, d)
        w2 = RunWriter.open(run)
        assert w2.epochs == r.epochs and not list(run.rglob("*.tmp"))
        assert RunReader(run).messages == []
        ck = RunReader(run).checkpoint_path()
        if ck is not None:
            load_checkpoint(ck)
        if phase == 3:
            break
        step += 1
    assert step >= 3  # every step of every write above was made to fail once


def test_open_cleans_leftovers_with_messages(tmp_path: Path) -> None:
    make_run(tmp_path, n=10, d=3, epochs=2)
    run = tmp_path / "run"
    junk = [run / "manifest.json.tmp", run / "epochs" / "epoch_0002.h5.tmp", run / "epochs" / "epoch_0003.h5",
            run / "checkpoints" / "epoch_0001.pt.tmp", run / "checkpoints" / "epoch_0004.pt"]
    for p in junk:
        p.write_bytes(b"x" * 10)
    user_file = run / "epochs" / "my notes.txt"
    user_file.write_text("keep me")
    w = RunWriter.open(run)
    assert w.last_epoch == 1 and w.epochs == [0, 1]
    assert len(w.messages) == len(junk)
    for p in junk:
        assert not p.exists()
        assert any(str(p.relative_to(run)) in m for m in w.messages)
    assert user_file.read_text() == "keep me"
    assert RunReader(run).messages == []


@pytest.mark.parametrize("damage", ["truncate", "zero_header", "delete"])
def test_open_rolls_back_a_damaged_epoch_and_all_after_it(tmp_path: Path, damage: str) -> None:
    torch = pytest.importorskip("torch")
    n, d, seed = 50, 8, 3
    w = make_run(tmp_path, n=n, d=d, epochs=5, seed=seed)
    for e in range(5):
        w.write_checkpoint(e, {"e": torch.tensor(e)})
    run = tmp_path / "run"
    bad = run / "epochs" / "epoch_0002.h5"
    if damage == "truncate":
        with open(bad, "r+b") as f:
            f.truncate(bad.stat().st_size // 2)
    elif damage == "zero_header":  # same size, unreadable
        with open(bad, "r+b") as f:
            f.write(b"\0" * 64)
    else:
        bad.unlink()
    r = RunReader(run)  # the reader notices what it cheaply can, changes nothing
    if damage != "zero_header":
        assert r.epochs == [0, 1, 3, 4] and any("epoch 2" in m for m in r.messages)
    w2 = RunWriter.open(run)
    assert w2.epochs == [0, 1] and w2.last_epoch == 1
    assert any(str(bad) in m and "rolled the run back to epoch 1" in m and "2, 3, 4" in m for m in w2.messages)
    assert sorted(p.name for p in (run / "epochs").iterdir()) == ["epoch_0000.h5", "epoch_0001.h5"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0000.pt", "epoch_0001.pt"]
    r = RunReader(run)
    assert r.epochs == [0, 1] and r.messages == [] and r.checkpoint_path() == run / "checkpoints" / "epoch_0001.pt"
    for e in r.epochs:
        assert_epoch_intact(r, e, seed, n, d)
    # and training continues from there
    w2.write_epoch(2, *synthetic_epoch(2, seed, n, d))
    assert RunReader(run).epochs == [0, 1, 2]


# ------------------------------------------------------------------------------------------ refusals
def test_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=re.escape(str(tmp_path / "nope")) + ".*does not exist"):
        RunReader(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="not a directory"):
        RunReader(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    for opener in (RunReader, RunWriter.open):
        with pytest.raises(RunError, match=re.escape(str(tmp_path / "empty")) + ".*no manifest.json"):
            opener(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(RunError, match="manifest.json cannot be read as JSON"):
        RunReader(bad)
    (bad / "manifest.json").write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(RunError, match="not an Embedding Explorer run manifest"):
        RunReader(bad)
    assert not is_run_dir(bad) and not is_run_dir(tmp_path / "nope")


def test_refuses_a_run_from_a_future_version(tmp_path: Path) -> None:
    make_run(tmp_path, epochs=1)
    path = tmp_path / "run" / "manifest.json"
    m = json.loads(path.read_text())
    m["version"] = store.FORMAT_VERSION + 1
    path.write_text(json.dumps(m))
    for opener in (RunReader, RunWriter.open):
        with pytest.raises(RunError, match=f"newer.*version {store.FORMAT_VERSION + 1}.*update"):
            opener(tmp_path / "run")


def test_refuses_foreign_checkpoints(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    plain = tmp_path / "plain.pt"
    torch.save({"model": {"w": torch.ones(1)}}, plain)
    with pytest.raises(TrainingError, match=re.escape(str(plain)) + ".*not an Embedding Explorer checkpoint"):
        load_checkpoint(plain)
    code = tmp_path / "code.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "obj": threading.Lock}, code)  # needs unpickling a class
    with pytest.raises(TrainingError, match=re.escape(str(code)) + ".*can load safely: it holds objects other than tensors"):
        load_checkpoint(code)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(TrainingError, match=re.escape(str(text)) + " is not a checkpoint.*not a zip archive"):
        load_checkpoint(text)
    with pytest.raises(TrainingError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    w = make_run(tmp_path, epochs=1)
    with pytest.raises(ValueError, match="reserved"):
        w.write_checkpoint(0, {"format": "other"})
    with pytest.raises(ValueError, match="must be committed first"):
        w.write_checkpoint(5, {})


def test_create_refuses_to_clobber(tmp_path: Path) -> None:
    make_run(tmp_path, epochs=1)
    with pytest.raises(RunError, match="already holds a run"):
        RunWriter.create(tmp_path / "run", config={}, classes=CLASSES, samples=synthetic_samples(5))
    w = RunWriter.create(tmp_path / "run", config={"new": 1}, classes=CLASSES, samples=synthetic_samples(5),
                         overwrite=True)
    assert w.last_epoch == -1 and RunReader(tmp_path / "run").config == {"new": 1}
    (tmp_path / "run" / "precious.txt").write_text("x")
    with pytest.raises(RunError, match="not part of a run.*precious.txt"):
        RunWriter.create(tmp_path / "run", config={}, classes=CLASSES, samples=synthetic_samples(5), overwrite=True)
    user = tmp_path / "photos"
    user.mkdir()
    (user / "a.jpg").write_text("x")
    with pytest.raises(RunError, match="not empty and is not a run"):
        RunWriter.create(user, config={}, classes=CLASSES, samples=synthetic_samples(5), overwrite=True)
    assert (user / "a.jpg").exists()
    # the leftovers of a create() killed before its manifest are cleared
    crashed = tmp_path / "crashed"
    (crashed / "epochs").mkdir(parents=True)
    (crashed / "samples.h5.tmp").write_bytes(b"x")
    RunWriter.create(crashed, config={}, classes=CLASSES, samples=synthetic_samples(5))
    assert is_run_dir(crashed) and not (crashed / "samples.h5.tmp").exists()


def test_bad_input_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    s = synthetic_samples(10)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        RunWriter.create(tmp_path / "a", config={}, classes=["x", "y"], samples=s)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        RunWriter.create(tmp_path / "a", config={"f": object()}, classes=CLASSES, samples=s)
    bad_split = SampleTable(s.paths, s.labels, np.full(10, 5), s.roots, s.root_index)
    with pytest.raises(ValueError, match="split"):
        RunWriter.create(tmp_path / "a", config={}, classes=CLASSES, samples=bad_split)
    short = SampleTable(s.paths, s.labels[:3], s.split, s.roots, s.root_index)
    with pytest.raises(ValueError, match=r"labels has shape \(3,\), expected \(10,\)"):
        RunWriter.create(tmp_path / "a", config={}, classes=CLASSES, samples=short)
    w = RunWriter.create(tmp_path / "a", config={}, classes=CLASSES, samples=s)
    with pytest.raises(ValueError, match=r"shape \(9, 4\).*\(10, D\)"):
        w.write_epoch(0, np.zeros((9, 4)), {})
    with pytest.raises(ValueError, match="metric 'm' of epoch 0 is not a number"):
        w.write_epoch(0, np.zeros((10, 4)), {"m": "high"})
    with pytest.raises(ValueError, match="telemetry 'x'.*numeric"):
        w.write_epoch(0, np.zeros((10, 4)), {}, {"x": np.array(["a"])})
    with pytest.raises(ValueError, match="side-file name"):
        w.save_json("../escape.json", {})
    with pytest.raises(ValueError, match="side-file name"):
        w.save_json("manifest.json", {})
    assert w.epochs == [] and not list((tmp_path / "a" / "epochs").iterdir())
    r = RunReader(tmp_path / "a")
    with pytest.raises(RunError, match="epoch 0 is not committed"):
        r.load_epoch(0)


# ------------------------------------------------------------------------------------------ FORMAT.md
def test_format_md_snippet_reads_a_run_with_plain_h5py(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    code = blocks[0]
    assert re.search(r"^\s*(from|import)\s+(?!json\b|os\b|h5py\b|numpy\b)", code, flags=re.M) is None
    n, d, seed = 60, 8, 11
    make_run(tmp_path, n=n, d=d, epochs=3, seed=seed)
    run = tmp_path / "run"
    code, count = re.subn(r'^run_dir = "runs/my-run".*$', f"run_dir = {str(run)!r}", code, flags=re.M)
    assert count == 1
    ns: dict = {}
    exec(compile(code, "FORMAT.md", "exec"), ns)
    r = RunReader(run)
    assert ns["classes"] == r.classes and ns["paths"] == r.samples.paths
    np.testing.assert_array_equal(ns["labels"], r.samples.labels)
    np.testing.assert_array_equal(ns["split"], r.samples.split)
    assert ns["files"][0] == os.path.join("/data/root", r.samples.paths[0])
    assert ns["epochs"] == r.epochs
    last = r.load_epoch(2)
    np.testing.assert_array_equal(ns["embeddings"], last.embeddings)
    assert ns["metrics"] == last.metrics and set(ns["telemetry"]) == set(last.telemetry)
    assert ns["history"][1] == r.load_epoch(1).metrics
    # the printed neighbour is the brute-force nearest held-out neighbour
    emb = last.embeddings
    held = [i for i in range(n) if r.samples.split[i] == SPLIT_HELDOUT]
    q = held[0]
    best = max((i for i in held if i != q), key=lambda i: float(emb[i] @ emb[q]) / float(
        np.linalg.norm(emb[i]) * np.linalg.norm(emb[q])))
    assert ns["nearest"] == best
    out = capsys.readouterr().out
    assert repr(ns["files"][best]) in out and repr(ns["files"][q]) in out


def test_reading_a_run_does_not_import_torch_or_qt(tmp_path: Path) -> None:
    make_run(tmp_path, n=10, d=3, epochs=1)
    code = ("import sys; from trainer.store import RunReader; r = RunReader(sys.argv[1]); r.load_epoch(0); "
            "bad = [m for m in ('torch', 'PySide6', 'pyqtgraph') if m in sys.modules]; assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert res.returncode == 0, res.stderr


def test_the_run_records_its_metric_and_margin_and_old_runs_derive_them_once(tmp_path):
    w = RunWriter.create(tmp_path / "rec", config={"loss": {"name": "triplet"}}, classes=CLASSES,
                         samples=synthetic_samples(10), metric="euclidean", margin=0.25)
    w.close()
    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert (m["metric"], m["margin"]) == ("euclidean", 0.25)
    r = RunReader(tmp_path / "rec")
    assert (r.metric, r.margin) == ("euclidean", 0.25)  # recorded values win over the config's loss

    # a run written before the metric was recorded: derived from its loss, the same way for every view
    for loss, want in (({"name": "triplet", "params": {"margin": 0.3}}, ("euclidean", 0.3)),
                       ({"name": "normalized_softmax"}, ("cosine", 0.1)),
                       ({"name": "margin"}, ("euclidean", 0.4)), ({"name": "nope"}, ("cosine", 0.1)), (None, ("cosine", 0.1))):
        d = tmp_path / f"old-{len(list(tmp_path.iterdir()))}"
        RunWriter.create(d, config={"loss": loss}, classes=CLASSES, samples=synthetic_samples(10)).close()
        m = json.loads((d / "manifest.json").read_text())
        del m["metric"], m["margin"]
        (d / "manifest.json").write_text(json.dumps(m))
        r = RunReader(d)
        assert (r.metric, pytest.approx(r.margin)) == want, loss

    m = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    for bad in ({"metric": "manhattan"}, {"margin": float("inf")}, {"margin": "0.1"}):
        (tmp_path / "rec" / "manifest.json").write_text(json.dumps({**m, **bad}))
        with pytest.raises(RunError, match="metric|margin"):
            RunReader(tmp_path / "rec")
    with pytest.raises(RunError, match="unknown metric"):
        RunWriter.create(tmp_path / "bad", config={}, classes=CLASSES, samples=synthetic_samples(10), metric="l1")


@pytest.mark.parametrize("inside", ["epoch", "checkpoint"])
def test_a_kill_inside_an_epoch_or_checkpoint_write_keeps_the_last_committed_epoch(tmp_path: Path, inside) -> None:
    """Killed with its temporary file written but not yet renamed: the run reopens at the last whole epoch, the
    leftover is removed, and every checksum holds."""
    run, seed, n, d = tmp_path / "run", 7, 300, 16
    env = dict(os.environ, PYTHONPATH=str(ROOT), EE_HOLD_IN=inside)
    proc = subprocess.Popen([sys.executable, str(WRITER_PROC), str(run), str(seed), str(n), str(d), "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        held = next(line for line in proc.stdout if line.startswith("holding"))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert held.split()[1] == ("epoch_0000.h5" if inside == "epoch" else "epoch_0000.pt")
    assert any(p.name.endswith(".tmp") for p in run.rglob("*"))  # it died with its temporary file written
    w = RunWriter.open(run)
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*"))
    r = RunReader(run)
    for e in r.epochs:
        assert_epoch_intact(r, e, seed, n, d)  # the checksums are verified on this first read
    # a kill in an epoch write loses that epoch; one in a checkpoint write keeps its epoch, without a checkpoint
    assert r.epochs == ([] if inside == "epoch" else [0]) and r.checkpoints == []
    w.close()


def test_an_epoch_is_mapped_once_and_shared_by_every_reader_call(tmp_path: Path) -> None:
    """One memory map per epoch for all views (issue 16 item 4): the same array, equal to the file's data, no copy;
    only the last MAPPED_EPOCHS stay mapped."""
    w = make_run(tmp_path, n=40, d=6, epochs=3, seed=5)
    w.close()
    r = RunReader(tmp_path / "run")
    a, b = r.load_epoch(1), r.load_epoch(1)
    assert a.embeddings is b.embeddings and isinstance(a.embeddings, np.memmap)
    np.testing.assert_array_equal(a.embeddings, synthetic_epoch(1, 5, 40, 6)[0])
    with h5py.File(tmp_path / "run" / "epochs" / "epoch_0001.h5") as f:
        np.testing.assert_array_equal(a.embeddings, f["embeddings"][()])
    r.load_epoch(0)
    r.load_epoch(2)
    assert len(r._mapped) == RunReader.MAPPED_EPOCHS  # epoch 1 went first
    assert r.load_epoch(1).embeddings is not a.embeddings


def test_split_rows_are_read_once_and_shared(tmp_path: Path) -> None:
    n, d = 60, 4
    make_run(tmp_path, n=n, d=d, epochs=3, seed=2)
    r = RunReader(tmp_path / "run")
    split = np.asarray(r.samples.split)
    for code in np.unique(split):
        ids, x = r.split_rows(1, int(code))
        assert np.array_equal(ids, np.flatnonzero(split == code))
        emb = synthetic_epoch(1, 2, n, d)[0]
        np.testing.assert_array_equal(x, np.array([emb[i] for i in ids], np.float32))
        again = r.split_rows(1, int(code))
        assert again[0] is ids and again[1] is x  # the same arrays for every caller
        for shared in (ids, x):  # so no caller may change them for the others
            with pytest.raises(ValueError, match="read-only"):
                shared[:1] = 0
            with pytest.raises(ValueError, match="read-only"):
                shared *= 2
    first = r.split_rows(0, int(split[0]))[1]
    for e in (1, 2):  # more (epoch, split) pairs than it keeps: the oldest is read anew
        r.split_rows(e, int(split[0]))
    assert len(r._split_rows) == RunReader.SHARED_SPLITS
    assert r.split_rows(0, int(split[0]))[1] is not first
