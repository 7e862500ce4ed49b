"""The main window hosts every view on one shared state: a selection in the map drives the neighbour panel."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from explorer.app import create_window  # noqa: E402
from trainer.model.losses import loss_metric
from trainer.store import RunWriter, SampleTable  # noqa: E402


def _write_run(tmp_path):
    rng = np.random.default_rng(0)
    n_classes, per = 6, 10
    labels = np.repeat(np.arange(n_classes), per)
    centers = rng.normal(size=(n_classes, 8)).astype(np.float32)
    split = np.where(labels >= 3, 1, 0).astype(np.int8)
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir()
    paths = []
    for i in range(len(labels)):
        name = f"{i}.png"
        Image.new("RGB", (16, 16), tuple(int(v) for v in rng.integers(0, 255, 3))).save(root / name)
        paths.append(name)
    samples = SampleTable(paths=paths, labels=labels.astype(np.int64), split=split, roots=[str(root)],
                          root_index=np.zeros(len(paths), dtype=np.int16))
    cfg = {"loss": {"name": "multi_similarity", "params": {}, "miner": "none", "miner_params": {}}}
    w = RunWriter.create(tmp_path / "run", config=cfg, classes=[f"c{i}" for i in range(n_classes)], samples=samples,
                         metric=loss_metric("multi_similarity"))
    emb = centers[labels] + 0.1 * rng.normal(size=(len(labels), 8)).astype(np.float32)
    w.write_epoch(0, emb, {"heldout/precision_at_1": 1.0})
    return tmp_path / "run", emb, labels


def test_views_share_the_state_and_follow_the_selection(qtbot, tmp_path, qapp):
    run_dir, emb, labels = _write_run(tmp_path)
    win = create_window(qapp)
    qtbot.addWidget(win)
    for title in ("Start", "Data", "Train", "Map", "Triplets", "Threshold"):
        assert win.view(title) is not None, title
    assert win.open_run(run_dir)
    assert win.state.epoch == 0
    win.state.set_selection([4])
    nv = win.neighbours_view
    qtbot.waitUntil(lambda: len(nv.shown_ids()) > 0 and not nv.is_busy(), timeout=30000)
    # the panel answers for the point selected in the map: its nearest neighbours by brute force
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    d = 1 - e @ e[4]
    d[4] = np.inf
    expected = np.argsort(d)[: len(nv.shown_ids())]
    assert set(nv.shown_ids().tolist()) == set(expected.tolist())
    assert win.triplets_view.run is win.state.run
    win.shutdown(10)


def test_hidden_analysis_views_compute_when_their_tab_is_shown(qtbot, tmp_path, qapp):
    """The triplet census and the threshold studio do not compute for an epoch while their tab is hidden (they
    would take the CPU from training and the map); showing the tab computes the epoch shown."""
    run_dir, emb, labels = _write_run(tmp_path)
    win = create_window(qapp)
    qtbot.addWidget(win)
    win.show()
    assert win.open_run(run_dir)  # opens on the Map tab
    tv, rv = win.triplets_view, win.threshold_view
    qtbot.wait(200)
    assert tv.result is None and not tv.is_busy() and tv.is_stale()
    assert rv.data is None and not rv.is_busy() and rv.is_stale()
    win.show_view("Triplets")
    qtbot.waitUntil(lambda: tv.result is not None and not tv.is_busy(), timeout=30000)
    assert not tv.is_stale() and tv.result.census.n_samples > 0
    assert rv.data is None  # still hidden
    win.show_view("Threshold")
    qtbot.waitUntil(lambda: rv.data is not None and not rv.is_busy(), timeout=30000)
    assert rv.data.epoch == 0
    win.shutdown(10)
