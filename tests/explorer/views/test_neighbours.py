"""Tests of the neighbour query panel (explorer/views/neighbours/view.py).

A small run is written with trainer.store.RunWriter (clustered synthetic embeddings, some classes held out, tiny
PNG files so thumbnails load); the neighbours shown must equal a brute-force loop over every gallery sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.runs import PER_CLASS, clustered_run
from tests.support.twins import brute_neighbours
from trainer.store import SPLIT_HELDOUT, RunReader





# ---------------------------------------------------------------------------------------------------------------
# brute force twins (plain loops)
# ---------------------------------------------------------------------------------------------------------------






# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return clustered_run(tmp_path_factory.mktemp("nbrun"))


@pytest.fixture
def view(qtbot):
    from explorer.jobs import JobRunner
    from explorer.state import AppState
    from explorer.views.neighbours.view import NeighboursView

    state = AppState()
    jobs = JobRunner()
    v = NeighboursView(state, jobs)
    qtbot.addWidget(v)
    v.resize(1200, 800)
    v.show()
    yield v
    jobs.shutdown()
    v.thumbs.shutdown()


def wait_idle(qtbot, v, timeout: int = 30000) -> None:
    qtbot.waitUntil(lambda: not v.is_busy(), timeout=timeout)


def open_run(qtbot, v, run_dir: Path) -> RunReader:
    r = RunReader(run_dir)
    v.state.set_run(r)
    wait_idle(qtbot, v)
    return r


def select(qtbot, v, sid: int) -> None:
    v.state.set_selection([sid])
    wait_idle(qtbot, v)


# ---------------------------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------------------------


def test_selected_point_neighbours_equal_brute_force(qtbot, view, run_dir):
    r = open_run(qtbot, view, run_dir)
    assert view.distance_metric == "euclidean"  # the triplet loss works with plain L2 distances
    x = r.load_epoch(r.epochs[-1]).embeddings
    for q in (0, 7, 20):
        select(qtbot, view, q)
        want = brute_neighbours(x, q, list(range(len(x))), 12, "euclidean")
        assert view.shown_ids().tolist() == [j for _, j in want]
        np.testing.assert_allclose(view.result.distances, [d for d, _ in want], rtol=1e-4, atol=1e-4)
        same = sum(int(r.samples.labels[j] == r.samples.labels[q]) for _, j in want)
        assert view.result.precision_at_k == pytest.approx(same / 12)
        assert f"P@12 = <b>{same / 12:.3f}</b>" in view.query_label.text()


def test_k_and_gallery_change_the_answer(qtbot, view, run_dir):
    r = open_run(qtbot, view, run_dir)
    x = r.load_epoch(r.epochs[-1]).embeddings
    select(qtbot, view, 3)
    view.k_spin.setValue(5)
    wait_idle(qtbot, view)
    assert view.shown_ids().tolist() == [j for _, j in brute_neighbours(x, 3, list(range(len(x))), 5, "euclidean")]
    view.gallery_combo.setCurrentIndex(view.gallery_combo.findData("heldout"))
    wait_idle(qtbot, view)
    held = np.flatnonzero(r.samples.split == SPLIT_HELDOUT).tolist()
    assert view.shown_ids().tolist() == [j for _, j in brute_neighbours(x, 3, held, 5, "euclidean")]
    assert view.result.n_gallery == len(held)
    assert "held-out only (18 samples)" in view.info.text() and "exact search" in view.info.text()


def test_show_in_map_highlights_query_and_neighbours(qtbot, view, run_dir):
    open_run(qtbot, view, run_dir)
    got = []
    view.state.highlight_changed.connect(lambda ids: got.append(np.asarray(ids).tolist()))
    select(qtbot, view, 5)
    view.map_button.click()
    assert got[-1] == [5] + view.shown_ids().tolist()
    view._on_grid_click(view.grid.item(2))
    assert got[-1] == [5, int(view.shown_ids()[2])]


def test_epoch_switch_marks_new_neighbours(qtbot, view, run_dir):
    r = open_run(qtbot, view, run_dir)
    select(qtbot, view, 9)
    view.state.set_epoch(1)
    wait_idle(qtbot, view)
    all_ids = list(range(len(r.samples.paths)))
    now = [j for _, j in brute_neighbours(r.load_epoch(1).embeddings, 9, all_ids, 12, "euclidean")]
    before = [j for _, j in brute_neighbours(r.load_epoch(0).embeddings, 9, all_ids, 12, "euclidean")]
    assert view.shown_ids().tolist() == now
    assert view.result.prev_epoch == 0
    new = [j for j in now if j not in before]
    assert view.shown_ids()[view.result.new_mask].tolist() == new
    assert f"Since epoch 0: {12 - len(new)} of 12 neighbours kept, {len(new)} new." in view.info.text()


def test_sample_list_search_and_row_query(qtbot, view, run_dir):
    r = open_run(qtbot, view, run_dir)
    view.search.setText("class_4 held-out")
    qtbot.waitUntil(lambda: view.model.rowCount() == PER_CLASS, timeout=5000)
    wait_idle(qtbot, view)
    rows = [view.model.sample_id(i) for i in range(view.model.rowCount())]
    assert sorted(rows) == np.flatnonzero(r.samples.labels == 4).tolist()
    view.table.selectRow(2)
    wait_idle(qtbot, view)
    assert view.result.query.sample_id == rows[2]
    view.search.setText("no such thing")
    qtbot.waitUntil(lambda: view.model.rowCount() == 0, timeout=5000)


def test_cosine_loss_uses_cosine_distance(qtbot, view, tmp_path):
    run_dir = clustered_run(tmp_path, loss="multi_similarity", epochs=1, seed=2)
    r = open_run(qtbot, view, run_dir)
    assert view.distance_metric == "cosine"
    select(qtbot, view, 4)
    x = r.load_epoch(0).embeddings
    want = brute_neighbours(x, 4, list(range(len(x))), 12, "cosine")
    assert view.shown_ids().tolist() == [j for _, j in want]
    np.testing.assert_allclose(view.result.distances, [d for d, _ in want], atol=1e-5)
    assert "cosine distance" in view.info.text()


def test_missing_file_names_it(qtbot, view, run_dir, tmp_path):
    open_run(qtbot, view, run_dir)
    missing = tmp_path / "nope.png"
    view.query_file(missing)
    assert str(missing) in view.info.text()


def test_grab_png(qtbot, view, run_dir, tmp_path):
    open_run(qtbot, view, run_dir)
    select(qtbot, view, 11)
    qtbot.waitUntil(lambda: all(view.thumbs.get(int(s)) is not None for s in view.shown_ids()), timeout=10000)
    view.state.set_epoch(1)
    wait_idle(qtbot, view)
    qtbot.waitUntil(lambda: all(view.thumbs.get(int(s)) is not None for s in view.shown_ids()), timeout=10000)
    out = tmp_path / "neighbours.png"
    assert view.grab().save(str(out))
    assert out.stat().st_size > 1000


def test_external_image_query_finds_itself(qtbot, view, tmp_path):
    from tests.support.runs import make_folder, tiny_config

    from trainer.train.engine import Trainer

    folder = make_folder(tmp_path / "data", n_classes=4, per_class=6)
    run_dir = tmp_path / "run"
    Trainer(tiny_config(folder, **{"optim.epochs": 1, "optim.batches_per_epoch": 2}), run_dir,
            emit=lambda e: None).run()
    r = open_run(qtbot, view, run_dir)
    assert r.epochs[-1] == 1
    sid = 5
    path = Path(r.samples.roots[int(r.samples.root_index[sid])]) / r.samples.paths[sid]
    view.query_file(path)
    qtbot.waitUntil(lambda: view.result is not None and view.result.query.kind == "file", timeout=60000)
    wait_idle(qtbot, view)
    res = view.result
    assert res.query.sample_id == sid and res.query.label == int(r.samples.labels[sid])
    assert int(res.ids[0]) == sid
    assert res.distances[0] == pytest.approx(0.0, abs=1e-3)
    assert "image file" in view.query_label.text()


def test_a_multi_selection_is_a_gallery_and_a_list_and_the_query_stays(qtbot, view, run_dir):
    """Issue 15 item 17: a lasso or search replaced the neighbour query with an unrelated first sample, and the
    sample list ignored the selection."""
    r = open_run(qtbot, view, run_dir)
    select(qtbot, view, 7)
    query_before, shown_before = view.query, view.shown_ids().tolist()
    chosen = np.flatnonzero(r.samples.labels == r.samples.labels[20])
    view.state.set_selection(chosen)
    wait_idle(qtbot, view)
    assert view.query is query_before  # the query is not replaced
    assert view.shown_ids().tolist() == chosen[:200].tolist() != shown_before  # the gallery of the selection
    assert view.model.rows.tolist() == chosen.tolist()  # the list shows the selection
    assert f"Selection: {len(chosen):,} images" in view.query_label.text()
    # a new epoch (training goes on) re-runs the query but leaves the selection's gallery on screen
    view.state.set_epoch(r.epochs[0])
    wait_idle(qtbot, view)
    assert view.shown_ids().tolist() == chosen[:200].tolist()
    assert f"Selection: {len(chosen):,} images" in view.query_label.text()
    # a double-click in the gallery queries that sample
    view._on_grid_double_click(view.grid.item(2))
    wait_idle(qtbot, view)
    assert view.query.sample_id == int(chosen[2])
    # clearing the selection gives the list back
    view.state.set_selection([])
    wait_idle(qtbot, view)
    qtbot.waitUntil(lambda: len(view.model.rows) == len(r.samples.paths), timeout=5000)
    # and the gallery gives way to the query's neighbours again
    qtbot.waitUntil(lambda: view.query_label.text().startswith("Query:"), timeout=5000)
    assert view.result is not None and view.result.query.sample_id == int(chosen[2])


def test_the_neighbour_grid_copies_and_exports_its_images(qtbot, view, run_dir, tmp_path):
    """Issue 17 item 6: the neighbours of a query leave as CSV and as paths, in the grid's order."""
    import csv

    from PySide6.QtGui import QGuiApplication

    from trainer.export.formats import sample_files

    r = open_run(qtbot, view, run_dir)
    select(qtbot, view, 7)
    shown = view.shown_ids().tolist()
    files = sample_files(r.samples)
    assert view.grid_menu.copy_paths() == len(shown) == 12
    assert QGuiApplication.clipboard().text().splitlines() == [files[i] for i in shown]
    out = tmp_path / "nb.csv"
    assert view.grid_menu.export_csv(str(out))
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0] == ["id", "path", "label", "split"]
    assert [int(row[0]) for row in rows[1:]] == shown
    assert [row[2] for row in rows[1:]] == [r.classes[int(r.samples.labels[i])] for i in shown]
    assert view.grid.contextMenuPolicy().name == "CustomContextMenu"


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_streamed_neighbours_of_the_previous_epoch_equal_brute_force(run_dir, metric):
    """A 1e6 gallery's previous epoch is scanned in blocks instead of indexed a second time: same neighbours."""
    from explorer.views.neighbours import jobs

    r = RunReader(run_dir)
    x = r.load_epoch(0).embeddings
    old = jobs.STREAM_BLOCK
    jobs.STREAM_BLOCK = 7  # several blocks
    try:
        for ids in (np.arange(len(x))[::2], np.arange(len(x))):  # every other sample; all of them (slices)
            d, got = jobs.streamed_neighbours(r, 0, ids, x[4], 6, metric, exclude=4)
            want = brute_neighbours(x, 4, [int(i) for i in ids if i != 4], 6, metric)
            assert got.tolist() == [j for _, j in want]
            np.testing.assert_allclose(d, [v for v, _ in want], rtol=1e-4, atol=1e-5)
    finally:
        jobs.STREAM_BLOCK = old


def test_the_index_cache_keeps_within_its_row_budget(qtbot, view, run_dir, monkeypatch):
    import explorer.views.neighbours.view as nv

    r = open_run(qtbot, view, run_dir)
    n = len(r.samples.paths)
    monkeypatch.setattr(nv, "INDEX_ROWS_BUDGET", int(1.5 * n))  # room for one whole-gallery index, not two
    select(qtbot, view, 3)  # the last epoch and, for "new since", the one before it
    assert len(view._cache) == 1 and sum(len(c.ids) for c in view._cache.values()) <= 1.5 * n
    assert view.shown_ids().size > 0


def test_a_large_gallery_shows_its_neighbours_before_the_comparison_with_the_previous_epoch(qtbot, view, run_dir,
                                                                                          monkeypatch):
    from explorer.views.neighbours import jobs

    monkeypatch.setattr(jobs, "STREAM_FROM", 10)  # as a 1e6 gallery: the previous epoch is scanned, not indexed
    r = RunReader(run_dir)
    prev, last = r.epochs[-2], r.epochs[-1]
    sent = []
    q = jobs.NeighbourQuery(kind="sample", sample_id=5, label=int(r.samples.labels[5]))
    out = jobs.neighbour_job(r, last, prev, "all", r.metric, q, 6, {}, progress=lambda *a: None,
                             partial=sent.append, is_cancelled=lambda: False)
    assert len(sent) == 1 and sent[0].comparing and sent[0].prev_ids is None
    assert np.array_equal(sent[0].ids, out.ids) and not out.comparing and out.prev_ids is not None
    x = r.load_epoch(prev).embeddings
    want = [j for _, j in brute_neighbours(x, 5, [i for i in range(len(x)) if i != 5], 6, r.metric)]
    assert out.prev_ids.tolist() == want
    # the view shows the first answer at once and says the comparison follows
    open_run(qtbot, view, run_dir)
    view._on_partly_searched(sent[0])
    assert view.result is sent[0] and f"Comparing with epoch {prev}" in view.info.text()
    view._on_searched(out)
    assert "Comparing" not in view.info.text() and f"Since epoch {prev}" in view.info.text()
