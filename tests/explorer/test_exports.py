"""File > Export (issue 17 items 1, 5, 6): the model bundle, the epoch's embeddings, the selection as CSV and on
the clipboard, from the window, doing what the commands do."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox

from explorer.app import create_window
from explorer.settings import Settings


@pytest.fixture()
def window(qtbot, tmp_path, monkeypatch, run):
    from explorer.main_window import MainWindow

    monkeypatch.setattr(MainWindow, "_make_map_view", lambda self: QLabel("map"))
    shown: list[str] = []
    for kind in ("critical", "warning", "information"):
        monkeypatch.setattr(QMessageBox, kind, lambda *a, **k: shown.append(a[2]))
    win = create_window(QApplication.instance(), settings=Settings(QSettings(str(tmp_path / "s.ini"),
                                                                              QSettings.Format.IniFormat)))
    qtbot.addWidget(win)
    win.shown = shown
    assert win.open_run(run)
    yield win
    win.shutdown(10)


def test_export_model_writes_the_bundle_the_command_writes(qtbot, window, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bundle"
    assert window.exports.export_model(str(out))
    qtbot.waitUntil(lambda: bool(window.shown), timeout=120000)
    assert "Wrote the bundle" in window.shown[-1] and "impostor pairs" in window.shown[-1]
    info = json.loads((out / "bundle.json").read_text())
    assert info["format"] == "embedding-explorer-bundle" and (out / "model.onnx").is_file()


def test_export_embeddings_writes_a_projector_folder_and_a_parquet_table(qtbot, window, tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    assert window.exports.export_embeddings(str(tmp_path))
    epoch = window.state.epoch
    name = f"{window.state.run.run_dir.name}-epoch{epoch:04d}"
    qtbot.waitUntil(lambda: (tmp_path / f"{name}.parquet").exists(), timeout=60000)
    t = pq.read_table(tmp_path / f"{name}.parquet")
    want = window.state.run.load_epoch(epoch).embeddings
    np.testing.assert_array_equal(np.array(t.column("vector").to_pylist(), np.float32), want)
    assert (tmp_path / f"{name}-projector" / "projector_config.pbtxt").is_file()


def test_the_selection_goes_out_as_csv_and_as_paths_on_the_clipboard(qtbot, window, tmp_path):
    from trainer.export.formats import sample_files

    assert window.exports.copy_selection() == 0 and "Nothing is selected" in window.status_label.text()
    run = window.state.run
    ids = [3, 0, 7]
    window.state.set_selection(ids)
    assert window.exports.copy_selection() == 3
    files = sample_files(run.samples)
    ids = sorted(ids)  # the selection is kept in sample order
    assert QApplication.clipboard().text().splitlines() == [files[i] for i in ids]
    assert window.exports.export_selection(str(tmp_path / "sel.csv"))
    with open(tmp_path / "sel.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "path", "label", "split"]
    assert [int(r[0]) for r in rows[1:]] == ids and rows[1][1] == files[0]
    assert rows[1][2] == run.classes[int(run.samples.labels[0])]


def test_compare_runs_shows_the_table_the_command_prints(qtbot, window, trained, tmp_path):
    """Issue 18 item 1: File > Compare runs, from the open run and a second one on the same samples."""
    from tests.support.runs import run_collect, tiny_config

    other = tmp_path / "contrastive"
    run_collect(tiny_config(trained[1], **{"loss.name": "contrastive", "loss.miner": "none"}), other)
    dialog = window.open_compare_dialog([other])
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.result is not None, timeout=60000)
    assert dialog.table.rowCount() == 2
    assert dialog.table.item(0, 3).text() == "(the reference)"
    assert "real difference" in dialog.table.item(1, 3).text() or "within noise" in dialog.table.item(1, 3).text()
    assert "loss.name = triplet / contrastive" in dialog.diff.text()
    assert len(dialog.chart.getPlotItem().listDataItems()) == 2
    best = dialog.result["runs"][0]["best"]
    assert f"{best['map_at_r']:.3f}" in dialog.table.item(0, 1).text()
    # the ROC of each run overlaid
    assert len(dialog.roc_chart.getPlotItem().listDataItems()) == 2
    # image by image: two maps of the held-out images, one selection in both, the neighbours that changed
    from trainer.comparison import image_changes, load_entries

    ib = dialog.images
    ib.method = "pca"  # the maps' method does not matter here (UMAP is tested with the map view); speed does
    ib.compute()
    qtbot.waitUntil(lambda: ib.result is not None and "xy_b" in ib.result, timeout=60000)
    want = image_changes(*load_entries([window.state.run.run_dir, other]), k=10)
    n = len(want["ids"])
    assert ib.table.rowCount() == n and all(len(s.data) == n for s in ib.scatters)
    worst = int(ib.table.item(0, 0).text())  # worst first: its first correct neighbour moved back the most
    i = int(np.flatnonzero(want["ids"] == worst)[0])
    k1 = want["k"] + 1
    moved = np.where(want["rank_b"] > 0, want["rank_b"], k1) - np.where(want["rank_a"] > 0, want["rank_a"], k1)
    assert moved[i] == moved.max()
    pts = ib.scatters[1].points()  # a click on a point of the second map selects it in both
    ib._clicked([pts[3]])
    assert ib.selected == 3
    for side, xy in enumerate((ib.result["xy_a"], ib.result["xy_b"])):
        rx, ry = ib.rings[side][0].getData()
        assert (rx[0], ry[0]) == pytest.approx((xy[3, 0], xy[3, 1]))
    assert int(ib.table.item(ib.table.currentRow(), 0).text()) == int(want["ids"][3])
    assert ib.new_ids() == [int(s) for s in want["nbr_b"][3] if int(s) not in set(want["nbr_a"][3].tolist())]
    dialog.done(0)


def test_mark_undo_find_suspects_and_train_again_with_the_edits(qtbot, window, tmp_path):
    """Issue 18 item 2: exclude / relabel the selection, undo, select suspected mislabels, export the edits and
    train again: the new run leaves the excluded images out and records the edits."""
    from trainer.data.edits import Edits, edits_path_for
    from trainer.store import RunReader

    run = window.state.run
    paths = list(run.samples.paths)
    assert window.curate._index is None  # a run without edits opens without a path index (0.9 s at 1e6)
    window.state.set_selection([0, 1])
    assert window.curate.exclude_selected() == 2
    window.state.set_selection([2])
    assert window.curate.relabel_selected(run.classes[-1]) == 1
    assert window.curate.undo() and len(window.curate.edits) == 2  # the relabel is undone
    saved = Edits.load(edits_path_for(run.run_dir))  # beside the run, never in the image folder
    assert {e.path for e in saved.edits} == {paths[0], paths[1]}
    assert edits_path_for(run.run_dir).parent == run.run_dir.parent  # beside the run, not inside it
    assert not list(Path(run.samples.roots[0]).rglob("*.edits.json"))  # nor in the image folder
    assert window.curate.export_csv(str(tmp_path / "edits.csv"))
    assert (tmp_path / "edits.csv").read_text().splitlines()[0] == "path,old_label,new_label,note"
    # suspected mislabels: a ranking of the training images, selected in the map
    assert window.curate.select_suspects()
    qtbot.waitUntil(lambda: "mislabels" in window.status_label.text(), timeout=30000)
    window.state.set_selection([0, 1])  # back to the two excluded ones for the retrain
    with qtbot.waitSignal(window.controller.stopped, timeout=120000):
        out = window.curate.train_again()
    assert out is not None
    qtbot.waitUntil(lambda: not window.controller.is_running(), timeout=30000)
    new = RunReader(out)
    assert paths[0] not in list(new.samples.paths) and paths[1] not in list(new.samples.paths)
    assert (out / "edits.json").is_file() and new.config["data"]["edits"] == str(edits_path_for(run.run_dir))


def test_views_mark_their_images_with_badges_and_the_edits_tab_lists_them(qtbot, window, tmp_path):
    """Issue 18 item 2: marks made from the neighbour grid (a duplicate of the query), the threshold's error pairs
    and the map's selection appear as badges in every view and as rows of the Edits tab, which clears them."""
    from trainer.data.edits import Edits, edits_path_for

    run = window.state.run
    paths = list(run.samples.paths)
    nb = window.neighbours_view
    window.state.set_selection([0])
    qtbot.waitUntil(lambda: not nb.is_busy() and len(nb.shown_ids()) > 0, timeout=30000)
    sid = int(nb.shown_ids()[0])
    qtbot.waitUntil(lambda: nb.thumbs.get(sid) is not None, timeout=10000)
    before = nb.grid.item(0).icon().pixmap(104).toImage()
    menu = nb.grid_menu.build_menu(nb.grid.visualItemRect(nb.grid.item(0)).center())
    texts = [a.text() for a in menu.actions()]
    assert "Exclude this image from training" in texts and "Relabel this image…" in texts
    next(a for a in menu.actions() if a.text() == "Mark this image as a duplicate of #0").trigger()
    assert window.state.marks[sid] == ("duplicate", "#0")
    saved = Edits.load(edits_path_for(run.run_dir))
    assert saved.get(paths[sid]).action == "duplicate" and saved.get(paths[sid]).of == paths[0]
    assert nb.grid.item(0).icon().pixmap(104).toImage() != before  # the badge is painted on the thumbnail
    assert "duplicate of #0" in nb.grid.item(0).toolTip()
    panel = window.edits_panel
    assert panel.ids == [sid] and panel.table.item(0, 2).text() == "duplicate of #0"
    assert panel.table.item(0, 1).text() == paths[sid]
    a, b = [i for i in range(1, 10) if i != sid][:2]
    window.state.set_selection([a, b])
    assert window.curate.exclude_selected() == 2
    assert panel.ids == sorted([sid, a, b]) and "2 excluded" in panel.summary.text()
    panel.table.clearSelection()
    panel.table.selectRow(panel.ids.index(a))
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    QTest.keyClick(panel.table, Qt.Key.Key_Delete)  # Delete in the list clears the selected marks
    assert a not in window.state.marks and b in window.state.marks and panel.ids == sorted([sid, b])
    assert Edits.load(edits_path_for(run.run_dir)).get(paths[a]) is None
    panel.table.clearSelection()
    panel.table.selectRow(panel.ids.index(b))
    panel.select_in_map()
    assert window.state.selection.tolist() == [b]
    # a duplicate goes and the image it duplicates stays when training again (the edits file says how)
    from trainer.data.edits import apply_edits

    keep, _, report = apply_edits(paths, run.samples.labels, list(run.classes), Edits.load(edits_path_for(run.run_dir)))
    assert report["duplicates"] == 1 and sid not in keep.tolist() and 0 in keep.tolist() and b not in keep.tolist()


def test_review_suspects_shows_the_evidence_and_acts_on_it(qtbot, window, tmp_path):
    """Issue 18 item 3: suspected mislabels as a ranked gallery with the neighbours that disagree, near-duplicates
    as the closest pairs; the buttons relabel, exclude and mark duplicates through the edits file."""
    from trainer.analysis.label_issues import closest_pairs, rank_label_issues
    from trainer.data.edits import Edits, edits_path_for
    from tests.support.runs import MISLABELLED, clustered_run
    from trainer.store import SPLIT_TRAIN

    assert window.open_run(clustered_run(tmp_path / "c"))  # one training image sits in another class's cluster
    run = window.state.run
    dialog = window.curate.review()
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.result is not None, timeout=60000)
    r = dialog.result
    ids = np.flatnonzero(np.asarray(run.samples.split) == SPLIT_TRAIN)
    x = run.rows(window.state.epoch, ids)
    y = np.asarray(run.samples.labels)[ids]
    want = rank_label_issues(x, y, run.metric)
    order = [int(i) for i in want["order"] if want["suggested"][int(i)] != y[int(i)]][:200]
    assert r["ids"].tolist() == ids[order].tolist()  # the ranking, likeliest first
    assert dialog.table.rowCount() == len(order)
    pi, pj, _ = closest_pairs(x, run.metric, n=100)
    assert r["pair_a"].tolist() == ids[pi].tolist() and r["pair_b"].tolist() == ids[pj].tolist()
    paths = list(run.samples.paths)
    assert len(order) > 0 and int(r["ids"][0]) == MISLABELLED  # the planted mislabel comes first
    dialog.table.selectRow(0)
    first = int(r["ids"][0])
    assert dialog.evidence.count() == 10  # its neighbours, the evidence
    evidence = [int(dialog.evidence.item(i).data(256)) for i in range(10)]
    assert first not in evidence
    assert dialog.relabel_current() == 1
    e = Edits.load(edits_path_for(run.run_dir)).get(paths[first])
    assert e.action == "relabel" and e.label == run.classes[int(r["suggested"][0])]
    assert dialog.table.item(0, 4).text().startswith("relabelled as")
    dialog.pairs.selectRow(0)
    a, b = int(r["pair_a"][0]), int(r["pair_b"][0])
    assert dialog.duplicate_current() == 1
    e = Edits.load(edits_path_for(run.run_dir)).get(paths[b])
    assert e.action == "duplicate" and e.of == paths[a] and window.state.marks[b][0] == "duplicate"
    assert "duplicate of" in dialog.pairs.item(0, 4).text()
    dialog.done(0)
