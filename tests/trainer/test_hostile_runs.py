"""Hostile and damaged runs, driven through every command-line entry point (train --resume, evaluate, embed): each
case gives one clear line and rc 1, never a traceback; nothing outside the run is read into a result, written or
deleted; plus property-based fuzzing of the manifest and config readers."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import main as cli
from tests.support.runs import make_folder, run_collect, tiny_config
from trainer.config import TrainConfig
from trainer.errors import ExplorerError
from trainer.store import RunError, RunReader, RunWriter


@pytest.fixture()
def victim(tmp_path) -> Path:
    """A file outside the run that a hostile manifest points at: it must survive untouched."""
    d = tmp_path / "victims"
    d.mkdir()
    p = d / "important.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("embeddings", data=np.ones((48, 16), np.float32))
    return p


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _write_manifest(run: Path, m: dict) -> None:
    (run / "manifest.json").write_text(json.dumps(m))


def _cli(capsys, *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    err = capsys.readouterr().err
    return rc, err


def _assert_refused(rc: int, err: str, *words: str) -> None:
    assert rc == 1, err
    assert "Traceback" not in err and err.startswith("error: "), err
    for w in words:
        assert w in err, (w, err)


def _snapshot(p: Path) -> tuple[bytes, int]:
    return p.read_bytes(), p.stat().st_mtime_ns


# ---------------------------------------------------------------------------------------------- the path rule
def test_a_manifest_entry_outside_the_run_is_refused_and_nothing_outside_is_deleted(capsys, run, victim, trained):
    before = _snapshot(victim)
    m = _manifest(run)
    m["epochs"][2]["file"] = os.path.relpath(victim, run)  # "../victims/important.h5"
    m["epochs"][2]["size"] = victim.stat().st_size
    m["checkpoints"] = [c for c in m["checkpoints"] if c["epoch"] != 2]
    _write_manifest(run, m)
    rc, err = _cli(capsys, "train", str(trained[1]), "--out", str(run), "--resume", "--epochs", "3")
    _assert_refused(rc, err, "manifest.json is damaged", "../victims/important.h5", "epochs/epoch_0002.h5")
    assert victim.exists() and _snapshot(victim) == before
    for argv in (("evaluate", str(run)), ("embed", str(run), str(trained[1]), "--out", str(run.parent / "e.h5"))):
        rc, err = _cli(capsys, *argv)
        _assert_refused(rc, err, "is damaged")
    with pytest.raises(RunError, match="fixed names"):
        RunReader(run)


@pytest.mark.parametrize("name", ["/etc/passwd", "../../../../etc/passwd", "epochs/../../x.h5", "epochs/epoch_0001.h5"])
def test_absolute_parent_and_misnamed_entries_are_refused(capsys, run, name):
    m = _manifest(run)
    m["epochs"][2]["file"] = name  # the last one names another epoch's file: also not its own
    _write_manifest(run, m)
    rc, err = _cli(capsys, "evaluate", str(run))
    _assert_refused(rc, err, "damaged", repr(name))
    m["epochs"][2]["file"] = "epochs/epoch_0002.h5"
    m["checkpoints"][0]["file"] = name
    _write_manifest(run, m)
    with pytest.raises(RunError, match="checkpoints entry 0"):
        RunReader(run)


def test_a_linked_epochs_folder_or_file_is_refused_and_its_target_survives(capsys, run, tmp_path, trained):
    outside = tmp_path / "elsewhere"
    shutil.move(str(run / "epochs"), outside)
    (run / "epochs").symlink_to(outside, target_is_directory=True)
    (outside / "epoch_0007.h5").write_bytes(b"someone else's file")  # a "leftover" the writer would delete
    rc, err = _cli(capsys, "train", str(trained[1]), "--out", str(run), "--resume", "--epochs", "3")
    _assert_refused(rc, err, "epochs/ is a link")
    assert (outside / "epoch_0007.h5").read_bytes() == b"someone else's file"
    (run / "epochs").unlink()
    shutil.move(str(outside), run / "epochs")
    (run / "epochs" / "epoch_0007.h5").unlink()
    target = tmp_path / "real.h5"
    shutil.move(str(run / "epochs" / "epoch_0002.h5"), target)
    (run / "epochs" / "epoch_0002.h5").symlink_to(target)
    rc, err = _cli(capsys, "evaluate", str(run))
    _assert_refused(rc, err, "epochs/epoch_0002.h5 is a link")


@pytest.mark.parametrize("kind", ["external", "virtual", "external-link"])
def test_hdf5_that_reads_outside_the_run_is_refused(capsys, run, victim, kind):
    path = run / "epochs" / "epoch_0002.h5"
    with h5py.File(path, "r") as f:
        keep = {k: f[k][()] for k in ("labels", "sample_ids", "split")}
    path.unlink()
    with h5py.File(path, "w") as f:
        for k, v in keep.items():
            f.create_dataset(k, data=v)
        f.create_group("metrics")
        f.create_group("telemetry")
        if kind == "external":
            raw = victim.parent / "raw.bin"
            np.full((48, 16), 7.0, np.float32).tofile(raw)
            f.create_dataset("embeddings", shape=(48, 16), dtype=np.float32, external=[(str(raw), 0, 48 * 16 * 4)])
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape=(48, 16), dtype=np.float32)
            layout[:] = h5py.VirtualSource(str(victim), "embeddings", shape=(48, 16))
            f.create_virtual_dataset("embeddings", layout)
        else:
            f["embeddings"] = h5py.ExternalLink(str(victim), "embeddings")
    m = _manifest(run)
    m["epochs"][2]["size"] = path.stat().st_size
    del m["epochs"][2]["crc32"]  # as an old run without checksums: the HDF5 check alone must catch it
    _write_manifest(run, m)
    rc, err = _cli(capsys, "evaluate", str(run), "--epoch", "2")
    _assert_refused(rc, err, str(path))


def test_outputs_never_land_on_a_run(capsys, run, trained):
    before = (run / "manifest.json").read_bytes()
    for out in (run / "manifest.json", run / "epochs" / "x.h5", run / "extra.h5"):
        rc, err = _cli(capsys, "embed", str(run), str(trained[1]), "--out", str(out))
        _assert_refused(rc, err, "inside the run")
    assert (run / "manifest.json").read_bytes() == before
    assert not (run / "extra.h5").exists() and not (run / "epochs" / "x.h5").exists()


# ---------------------------------------------------------------------------------------------- integrity
def test_same_size_corruption_is_caught_by_the_checksum_and_said(capsys, run):
    path = run / "epochs" / "epoch_0002.h5"
    with h5py.File(path, "r+") as f:  # finite garbage in 36 rows: the file keeps its size
        f["embeddings"][:36] = np.random.default_rng(0).normal(size=(36, 16)).astype(np.float32)
    rc, err = _cli(capsys, "evaluate", str(run), "--epoch", "2")
    _assert_refused(rc, err, "checksum", "epoch_0002.h5")
    capsys.readouterr()
    rc = cli.main(["evaluate", str(run), "--json"])  # the default epoch falls back, and says so
    out = capsys.readouterr()
    assert rc == 0 and "checksum" in out.err and "evaluated epoch 1 instead" in out.err
    assert json.loads(out.out)["source"].startswith("epoch 1")
    w = RunWriter.open(run)  # the writer rolls back to the last intact epoch
    assert w.epochs == [0, 1] and any("checksum" in m for m in w.messages)


def test_compare_says_which_epoch_of_a_run_it_left_out(capsys, run, trained):
    path = run / "epochs" / "epoch_0002.h5"
    with open(path, "r+b") as f:  # cut short: the reader leaves the epoch out
        f.truncate(path.stat().st_size * 2 // 3)
    rc = cli.main(["compare", str(run), str(trained[0]), "--resamples", "50"])
    out = capsys.readouterr()
    assert rc == 0 and "@1" in out.out  # the damaged run is compared at the epochs it has
    # both runs are called "run": told apart by their parent folder, as in the table
    assert f"warning: {run.parent.name}/{run.name}: ignored epoch 2" in out.err and "epoch_0002.h5" in out.err


def test_a_damaged_checkpoint_is_dropped_on_resume_and_refused_by_embed(capsys, run, trained):
    ck = run / "checkpoints" / "epoch_0002.pt"
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ck.write_bytes(bytes(data))
    rc, err = _cli(capsys, "embed", str(run), str(trained[1]), "--out", str(run.parent / "e.h5"))
    _assert_refused(rc, err, "checksum", "epoch 2")
    w = RunWriter.open(run)  # resuming drops it (and the file, the run's own), so epoch 2 is trained again
    assert w.messages[0] == f"dropped checkpoint {ck}: its checksum does not match the manifest"
    assert 2 not in RunReader(run).checkpoints and not ck.exists()


# ---------------------------------------------------------------------------------------------- no tracebacks
def _truncate_manifest(run: Path) -> None:
    text = (run / "manifest.json").read_text()
    (run / "manifest.json").write_text(text[: len(text) // 2])


def _zero_header(run: Path) -> None:
    p = run / "epochs" / "epoch_0002.h5"
    data = bytearray(p.read_bytes())
    data[:512] = bytes(512)
    p.write_bytes(bytes(data))


def _version_2(run: Path) -> None:
    m = _manifest(run)
    m["version"] = 2
    _write_manifest(run, m)


def _unknown_loss(run: Path) -> None:
    m = _manifest(run)
    m["config"]["loss"]["name"] = "nope"
    del m["metric"], m["margin"]
    _write_manifest(run, m)


def _marker_only_checkpoint(run: Path) -> None:
    torch.save({"format": "embedding-explorer-checkpoint"}, run / "checkpoints" / "epoch_0002.pt")
    _refresh_checkpoint_record(run)


def _checkpoint_without_a_model_key(run: Path) -> None:
    path = run / "checkpoints" / "epoch_0002.pt"
    state = torch.load(path, weights_only=True)
    state["model"].pop(next(iter(state["model"])))
    torch.save(state, path)
    _refresh_checkpoint_record(run)


def _checkpoint_of_another_dimension(run: Path) -> None:
    path = run / "checkpoints" / "epoch_0002.pt"
    state = torch.load(path, weights_only=True)
    state["embedding_dim"] = 8
    torch.save(state, path)
    _refresh_checkpoint_record(run)


def _refresh_checkpoint_record(run: Path) -> None:
    from trainer.store import file_crc32

    m = _manifest(run)
    for c in m["checkpoints"]:
        p = run / c["file"]
        c["size"], c["crc32"] = p.stat().st_size, file_crc32(p)
    _write_manifest(run, m)


DAMAGE = {
    "truncated manifest": (_truncate_manifest, "cannot be read as JSON"),
    "no samples.h5": (lambda r: (r / "samples.h5").unlink(), "samples.h5 is missing"),
    "zeroed epoch header": (_zero_header, "epoch_0002.h5"),
    "format version 2": (_version_2, "newer Embedding Explorer"),
    "unknown loss": (_unknown_loss, "'nope'"),
    "checkpoint with only the marker": (_marker_only_checkpoint, "not a usable checkpoint"),
    "checkpoint missing a model key": (_checkpoint_without_a_model_key, "does not fit the run's network"),
    "checkpoint of another dimension": (_checkpoint_of_another_dimension, "embedding dimension 8"),
    "not a run": (lambda r: (r / "manifest.json").unlink(), "is not a run"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_every_damaged_run_gives_one_line_at_every_entry_point(capsys, run, trained, case):
    damage, words = DAMAGE[case]
    damage(run)
    checkpoint_case = case.startswith("checkpoint")
    calls = [("embed", str(run), str(trained[1]), "--out", str(run.parent / "e.h5"))]
    if not checkpoint_case or case == "checkpoint with only the marker":
        calls.append(("evaluate", str(run)))
    for argv in calls:
        rc, err = _cli(capsys, *argv)
        assert "Traceback" not in err
        if argv[0] == "evaluate" and checkpoint_case:
            assert rc == 0  # evaluating stored embeddings needs no checkpoint
        elif argv[0] == "evaluate" and case == "zeroed epoch header":
            assert rc == 0 and "evaluated epoch 1 instead" in err  # falls back to epoch 1 and says so
        elif case in ("unknown loss", "zeroed epoch header"):
            # embed uses the checkpoint and the config saved in it; evaluate the stored embeddings with the
            # run's fallback metric: both work, and neither raises the KeyError they used to
            assert rc == 0, err
        else:
            _assert_refused(rc, err, words)
    assert not (run.parent / "e.h5.tmp").exists()


def test_evaluate_json_is_strict_even_with_undefined_metrics(capsys, run):
    assert cli.main(["evaluate", str(run), "--json"]) == 0
    text = capsys.readouterr().out
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))


def test_embed_keeps_class_names_that_are_not_utf8(capsys, run, tmp_path):
    folder = tmp_path / "odd"
    make_folder(folder, n_classes=2, per_class=3)
    bad = os.fsencode(folder) + b"/caf\xe9"
    os.rename(folder / "class_0", bad)
    out = tmp_path / "e.h5"
    assert cli.main(["embed", str(run), str(folder), "--out", str(out)]) == 0, capsys.readouterr().err
    with h5py.File(out) as f:
        assert b"caf\xe9" in list(f["classes"][()])
    assert not (tmp_path / "e.h5.tmp").exists()


# ---------------------------------------------------------------------------------------------- creation
def test_two_trainers_starting_one_new_run_at_once_one_wins_the_other_is_told(trained, tmp_path):
    cfg = tiny_config(trained[1]).replace(**{"optim.epochs": 1})
    out = tmp_path / "race"
    results: dict[int, list] = {}
    barrier = threading.Barrier(2)

    def start(i: int) -> None:
        barrier.wait()
        results[i] = run_collect(cfg, out)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    ended = [type(r[-1]).__name__ for r in results.values()]
    failed = [r[-1] for r in results.values() if type(r[-1]).__name__ == "Failed"]
    assert sorted(ended) in (["Failed", "Stopped"], ["Stopped", "Stopped"]), ended
    for f in failed:  # the loser is told who trains the folder, or that it already holds a run
        assert "being trained by" in f.message or "already holds a run" in f.message, f.message
    assert RunReader(out).epochs == [0, 1]


def test_a_failed_start_leaves_nothing_behind(trained, tmp_path):
    out = tmp_path / "never"
    events = run_collect(tiny_config(trained[1]).replace(**{"data.batch_classes": 100}), out)
    assert type(events[-1]).__name__ == "Failed" and "lower C" in events[-1].message
    assert not out.exists()
    events = run_collect(tiny_config(trained[1]).replace(**{"optim.epochs": 1}), out)  # the next try just works
    assert type(events[-1]).__name__ == "Stopped"


# ---------------------------------------------------------------------------------------------- fuzzing
JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                  max_size=3), max_leaves=8)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_manifests_raise_only_our_error(trained, tmp_path_factory, data):
    run = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(trained[0], run)
    m = _manifest(run)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(m))
        path = data.draw(st.sampled_from(paths[1:]))
        parent = m
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            parent[path[-1]] = data.draw(JSON)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    (run / "manifest.json").write_text(json.dumps(m))
    try:
        reader = RunReader(run)
        for e in reader.epochs:
            reader.load_epoch(e)
        reader.metrics_history()
        reader.verified_checkpoint()
        TrainConfig.from_dict(reader.config)
    except (ExplorerError, ValueError):
        pass  # our error (or a config ValueError naming the key), never a KeyError / TypeError traceback
    try:
        RunWriter.open(run)
    except (ExplorerError, ValueError):
        pass


@settings(max_examples=200, deadline=None)
@given(cfg=st.dictionaries(st.sampled_from(["data", "model", "optim", "loss", "seed", "device", "amp", "x"]), JSON,
                           max_size=5))
def test_fuzzed_configs_raise_only_value_errors(cfg):
    try:
        TrainConfig.from_dict(cfg)
    except ValueError:
        pass


@pytest.mark.parametrize("option, words", [
    (("--epochs", "-1"), "at least one epoch (epochs = -1)"),
    (("--epochs", "0"), "at least one epoch (epochs = 0)"),
    (("--lr", "-1"), "learning rate (lr) must be a positive number"),
    (("--lr", "nan"), "learning rate (lr) must be a positive number, not nan"),
    (("--batches-per-epoch", "0"), "Batches per epoch must be at least 1"),
    (("--batches-per-epoch", "-5"), "Batches per epoch must be at least 1"),
    (("--seed", "-1"), "seed must be between 0 and 2^32 - 1"),
    (("--freeze-backbone-epochs", "-2"), "frozen backbone must be 0 or more"),
    (("--workers", "-1"), "Loader workers must be 0 or more"),
    (("--batch-classes", "100"), "C = 100 classes per batch, but only 3 training classes; lower C"),
])
def test_bad_options_are_refused_with_their_name_and_leave_nothing(capsys, trained, tmp_path, option, words):
    out = tmp_path / "runs" / "r"
    rc, err = _cli(capsys, "train", str(trained[1]), "--out", str(out), "--backbone", "small_cnn", "--image-size", "24",
                   "--epochs", "1", *option)
    _assert_refused(rc, err, words)
    assert not out.exists()


def test_folders_the_run_must_not_use_are_refused(capsys, trained, tmp_path):
    data = trained[1]
    rc, err = _cli(capsys, "train", str(data), "--out", str(tmp_path / "r"), "--test-dir", str(data))
    _assert_refused(rc, err, "is the training folder or inside it")
    rc, err = _cli(capsys, "train", str(data), "--out", str(data / "run"))
    _assert_refused(rc, err, "inside the image folder")
    assert not (data / "run").exists()
    rc, err = _cli(capsys, "train", str(data), "--out", str(tmp_path / "missing"), "--resume")
    _assert_refused(rc, err, "cannot resume", "does not exist")
    assert "trainer.lock" not in err


def test_exports_may_sit_beside_a_run_but_never_replace_its_files(run, tmp_path):
    from trainer.store import refuse_run_file

    for own in ("manifest.json", "samples.h5", "trainer.lock", "epochs/epoch_0001.h5", "epochs/map.png",
                "checkpoints/plot.png", "manifest.json.tmp"):
        with pytest.raises(RunError, match="one of the files of the run"):
            refuse_run_file(run / own)
    refuse_run_file(run / "map_epoch0002.png")  # a picture beside the run's files is the user's choice
    refuse_run_file(tmp_path / "elsewhere.png")
