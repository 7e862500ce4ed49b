"""The edits file (issue 18 item 2): exclusions and relabellings that a new run applies, never the folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.data.edits import Edits, EditsError, apply_edits, edits_path_for


def test_marks_round_trip_undo_and_export(tmp_path):
    e = Edits("/data")
    assert e.exclude(["a/1.png", "a/2.png"], note="duplicate") == 2
    assert e.relabel(["b/3.png"], "a") == 1
    e.relabel(["a/2.png"], "b")  # a later mark replaces the earlier one
    assert e.get("a/2.png").action == "relabel"
    assert e.undo() and e.get("a/2.png").action == "exclude"  # undo gives the earlier mark back
    assert e.clear(["a/1.png"]) == 1 and e.get("a/1.png") is None
    assert e.undo() and e.get("a/1.png").note == "duplicate"
    path = e.save(tmp_path / "run.edits.json")
    back = Edits.load(path)
    assert [x.__dict__ for x in back.edits] == [x.__dict__ for x in e.edits] and back.data_dir == "/data"
    e.write_csv(tmp_path / "e.csv", {"a/1.png": "a", "a/2.png": "a", "b/3.png": "b"})
    lines = (tmp_path / "e.csv").read_text().splitlines()
    assert lines[0] == "path,old_label,new_label,note" and "b/3.png,b,a," in lines
    assert edits_path_for(tmp_path / "runs" / "r1") == tmp_path / "runs" / "r1.edits.json"


@pytest.mark.parametrize("bad, why", [
    ({"format": "x"}, "not an Embedding Explorer edits file"),
    ({"format": "embedding-explorer-edits", "version": 1, "edits": [{"path": "/etc/passwd", "action": "exclude"}]},
     "relative to the image folder"),
    ({"format": "embedding-explorer-edits", "version": 1, "edits": [{"path": "../x.png", "action": "exclude"}]},
     "relative to the image folder"),
    ({"format": "embedding-explorer-edits", "version": 1, "edits": [{"path": "a.png", "action": "delete"}]},
     "needs a 'path' and an 'action'"),
    ({"format": "embedding-explorer-edits", "version": 1, "edits": [{"path": "a.png", "action": "relabel"}]},
     "gives no 'label'"),
    ({"format": "embedding-explorer-edits", "version": 9, "edits": []}, "version 9"),
    ({"format": "embedding-explorer-edits", "version": 1, "edits": [{"path": "a.png", "action": "duplicate"}]},
     "'of' does not name another image"),
    ({"format": "embedding-explorer-edits", "version": 1,
      "edits": [{"path": "a.png", "action": "duplicate", "of": "../b.png"}]}, "'of' does not name another image"),
])
def test_a_bad_edits_file_is_named_with_the_reason(tmp_path, bad, why):
    p = tmp_path / "e.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(EditsError, match=why):
        Edits.load(p)


def test_applying_edits_equals_a_loop():
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    paths = [f"{classes[i % 3]}/{i}.png" for i in range(30)]
    labels = np.arange(30) % 3
    e = Edits()
    e.exclude([paths[i] for i in rng.choice(30, 6, replace=False)])
    for i in rng.choice(30, 6, replace=False):
        e.relabel([paths[i]], classes[int(rng.integers(0, 3))])
    e.exclude(["not/in/the/folder.png"])
    keep, new, report = apply_edits(paths, labels, classes, e)
    want_keep, want_new = [], []
    for i, p in enumerate(paths):
        mark = e.get(p)
        if mark is not None and mark.action == "exclude":
            continue
        want_keep.append(i)
        want_new.append(classes.index(mark.label) if mark is not None else labels[i])
    assert keep.tolist() == want_keep and new.tolist() == want_new
    assert report["missing"] == ["not/in/the/folder.png"] and report["excluded"] == 30 - len(want_keep)
    e.relabel([paths[0]], "zebra")
    with pytest.raises(EditsError, match="zebra"):
        apply_edits(paths, labels, classes, e)


def test_a_run_trained_with_edits_reflects_and_records_them(tmp_path):
    from tests.support.runs import make_folder, run_collect, tiny_config
    from trainer import events as ev
    from trainer.store import RunReader

    data = make_folder(tmp_path / "data")
    e = Edits(str(data))
    e.exclude(["class_0/0.png", "class_0/1.png"])
    e.relabel(["class_1/0.png"], "class_2")
    edits = e.save(tmp_path / "run.edits.json")
    run = tmp_path / "run"
    events = run_collect(tiny_config(data, **{"data.edits": str(edits), "optim.epochs": 1}), run)
    assert not [x for x in events if isinstance(x, ev.Failed)]
    r = RunReader(run)
    paths = list(r.samples.paths)
    assert "class_0/0.png" not in paths and "class_0/1.png" not in paths and len(paths) == 48 - 2
    assert r.classes[int(r.samples.labels[paths.index("class_1/0.png")])] == "class_2"
    assert json.loads((run / "edits.json").read_text())["edits"] == e.to_dict()["edits"]
    assert r.config["data"]["edits"] == str(edits)
    (tmp_path / "gone.json").unlink(missing_ok=True)
    events = run_collect(tiny_config(data, **{"data.edits": str(tmp_path / "gone.json")}), tmp_path / "run2")
    failed = [x for x in events if isinstance(x, ev.Failed)]
    assert failed and "gone.json" in failed[0].message


def test_a_duplicate_goes_and_the_image_it_duplicates_stays(tmp_path):
    classes = ["a", "b"]
    paths = ["a/0.png", "a/1.png", "a/2.png", "b/3.png", "b/4.png"]
    labels = np.array([0, 0, 0, 1, 1])
    e = Edits()
    assert e.duplicate(["a/1.png", "a/2.png", "a/0.png"], of="a/0.png") == 2  # not of itself
    e.duplicate(["b/4.png"], of="b/3.png")
    e.exclude(["b/3.png"])  # the kept image is excluded: its duplicate stays, so one copy remains
    keep, new, report = apply_edits(paths, labels, classes, e)
    assert keep.tolist() == [0, 4] and new.tolist() == [0, 1]
    assert report["duplicates"] == 2 and report["excluded"] == 1
    e.write_csv(tmp_path / "e.csv", {"a/1.png": "a"})
    assert "a/1.png,a,duplicate of a/0.png," in (tmp_path / "e.csv").read_text().splitlines()
    back = Edits.load(e.save(tmp_path / "e.json"))
    assert back.get("a/2.png").of == "a/0.png" and back.get("a/2.png").action == "duplicate"
    assert e.undo() and e.get("b/3.png") is None  # the exclusion undone
