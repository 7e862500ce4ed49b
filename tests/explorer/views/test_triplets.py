"""Tests of the triplet inspection view (explorer/views/triplets_view.py).

The run comes from tests.support.runs.clustered_run (clustered embeddings, held-out classes, telemetry with mined
tuples, one sample placed in another class's cluster). Counts shown must equal trainer.analysis.census.epoch_census and a
plain triple loop over every (anchor, positive, negative).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tests.support.runs import MISLABELLED, clustered_run
from tests.support.twins import brute_distance

from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN, RunReader
from trainer.analysis.census import epoch_census

SAVE_PNG = False  # True: write the grabs to /tmp to look at them


def brute_census(x: np.ndarray, y: np.ndarray, margin: float, metric: str) -> dict[str, int]:
    """PML's rules over every (a, p, n) of the split, with plain loops."""
    out = {"easy": 0, "semihard": 0, "hard": 0}
    n = len(x)
    d = [[brute_distance(x[i], x[j], metric) for j in range(n)] for i in range(n)]
    for a in range(n):
        for p in range(n):
            if p == a or y[p] != y[a]:
                continue
            for q in range(n):
                if y[q] == y[a]:
                    continue
                diff = d[a][q] - d[a][p]
                if diff > margin:
                    out["easy"] += 1
                elif diff > 0:
                    out["semihard"] += 1
                else:
                    out["hard"] += 1
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return clustered_run(tmp_path_factory.mktemp("tprun"), params={"margin": 0.5})


@pytest.fixture
def view(qtbot):
    from explorer.jobs import JobRunner
    from explorer.state import AppState
    from explorer.views.triplets.view import TripletsView

    state = AppState()
    jobs = JobRunner()
    v = TripletsView(state, jobs)
    qtbot.addWidget(v)
    v.resize(1300, 900)
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


def shown_counts(v) -> dict[str, int]:
    return {cat: int(v.census_table.item(row, 1).text().replace(",", ""))
            for row, cat in enumerate(("easy", "semihard", "hard"))}


def test_census_equals_epoch_census_and_brute_force(qtbot, view, run_dir):
    r = open_run(qtbot, view, run_dir)
    assert view.margin == pytest.approx(0.5)  # the loss's margin
    assert view.split == "heldout"
    e = r.epochs[-1]
    ids = np.flatnonzero(r.samples.split == SPLIT_HELDOUT)
    x, y = r.load_epoch(e).embeddings[ids], r.samples.labels[ids]
    c = epoch_census(x, y, margin=0.5, metric="euclidean")
    brute = brute_census(x, y, 0.5, "euclidean")
    assert shown_counts(view) == brute == {"easy": c.total_easy, "semihard": c.total_semihard, "hard": c.total_hard}
    assert view.census_table.item(2, 2).text() == f"{brute['hard'] / sum(brute.values()):.2%}"
    # another split and margin
    view.split_combo.setCurrentIndex(view.split_combo.findData("train"))
    view.margin_spin.setValue(2.0)
    wait_idle(qtbot, view)
    ids = np.flatnonzero(r.samples.split == SPLIT_TRAIN)
    assert shown_counts(view) == brute_census(r.load_epoch(e).embeddings[ids], r.samples.labels[ids], 2.0, "euclidean")


def test_a_split_beyond_the_exact_range_is_censused_on_stated_anchors(qtbot, view, run_dir, monkeypatch):
    from explorer.views.triplets import jobs as tv

    r = RunReader(run_dir)
    n_held = int((r.samples.split == SPLIT_HELDOUT).sum())
    monkeypatch.setattr(tv, "CENSUS_EXACT_ANCHORS", n_held - 1)
    monkeypatch.setattr(tv, "HISTORY_MAX_ANCHORS", 5)
    monkeypatch.setattr(tv, "CENSUS_ROW_BUDGET", 5 * n_held)
    open_run(qtbot, view, run_dir)
    c = view.result.census
    assert c.sampled and c.n_anchors == 5
    assert f"a random sample of 5 of the {n_held} anchors" in view.census_label.text()
    # the counts are those of the sampled anchors, each against every sample of the split
    ids = np.flatnonzero(r.samples.split == SPLIT_HELDOUT)
    x, y = r.load_epoch(r.epochs[-1]).embeddings[ids], r.samples.labels[ids]
    again = epoch_census(x, y, margin=0.5, metric="euclidean", anchors=c.anchors)
    assert (c.total_easy, c.total_semihard, c.total_hard) == (again.total_easy, again.total_semihard, again.total_hard)


def test_rules_label_and_shares_chart_one_point_per_epoch(qtbot, view, run_dir):
    r = open_run(qtbot, view, run_dir)
    assert view.rules_label.text() == ("PML rules, d = distance: easy d(a,n) > d(a,p)+m; semi-hard d(a,p) < d(a,n) "
                                       "<= d(a,p)+m; hard d(a,n) <= d(a,p)")
    assert view.rules_label.isVisible()
    pts = view.history_points()
    assert sorted(pts) == r.epochs
    ids = np.flatnonzero(r.samples.split == SPLIT_HELDOUT)
    for e in r.epochs:
        c = epoch_census(r.load_epoch(e).embeddings[ids], r.samples.labels[ids], margin=0.5, metric="euclidean")
        assert pts[e][:3] == pytest.approx((c.share_easy, c.share_semihard, c.share_hard))
    xs, ys = view.share_curves["hard"].getData()
    assert list(xs) == r.epochs and len(ys) == len(r.epochs)
    # issue 15 item 18: all three census rows are shown, no scroll bar ("Hard" was cut off)
    t = view.census_table
    assert t.verticalScrollBar().maximum() == 0
    assert t.viewport().height() >= sum(t.rowHeight(i) for i in range(3))


def test_on_a_large_run_the_past_epochs_wait_for_this_epochs_census(qtbot, view, run_dir, monkeypatch):
    """At 1e6 the two censuses at once held two copies of the split (issue 16 item 4): from
    HISTORY_AFTER_CENSUS_FROM samples on, the shares chart's job starts when the census has delivered."""
    import explorer.views.triplets.view as tv

    monkeypatch.setattr(tv, "HISTORY_AFTER_CENSUS_FROM", 0)  # this small run counts as large
    started = []
    real = view.jobs.submit

    def submit(key, *a, **k):
        started.append((key[1], view.jobs.is_running((view._key, "census")),
                        view.jobs.is_running((view._key, "examples"))))
        return real(key, *a, **k)

    monkeypatch.setattr(view.jobs, "submit", submit)
    r = open_run(qtbot, view, run_dir)
    jobs = [name for name, *_ in started]
    assert "history" in jobs and "examples" in jobs
    # one at a time: the examples after the census and its diagnostics, the past epochs after the examples
    assert all(not census for name, census, _ in started if name in ("history", "examples"))
    assert all(not examples for name, _, examples in started if name == "history")
    assert jobs.index("census") < jobs.index("examples") < jobs.index("history")
    assert sorted(view.history_points()) == r.epochs  # the chart is still complete
    assert view.examples is not None  # delivered (this epoch may have none of the category shown)


def test_examples_are_of_their_category_and_click_highlights(qtbot, view, run_dir):
    r = open_run(qtbot, view, run_dir)
    view.state.set_epoch(0)  # the widest spread: every category has triplets
    wait_idle(qtbot, view)
    x = r.load_epoch(0).embeddings
    y = r.samples.labels
    held = set(np.flatnonzero(r.samples.split == SPLIT_HELDOUT).tolist())
    for cat in ("hard", "semihard", "easy"):
        view.category_combo.setCurrentIndex(view.category_combo.findData(cat))
        wait_idle(qtbot, view)
        ex = view.examples
        assert len(ex) > 0 and view.examples_table.rowCount() == len(ex)
        for a, p, n, dap, dan in zip(*ex):
            assert {int(a), int(p), int(n)} <= held and y[a] == y[p] != y[n] and a != p
            bap, ban = brute_distance(x[a], x[p], "euclidean"), brute_distance(x[a], x[n], "euclidean")
            assert dap == pytest.approx(bap, abs=1e-4) and dan == pytest.approx(ban, abs=1e-4)
            diff = ban - bap
            assert {"easy": diff > 0.5, "semihard": 0 < diff <= 0.5, "hard": diff <= 0}[cat]
    got = []
    view.state.highlight_changed.connect(lambda ids: got.append(np.asarray(ids).tolist()))
    view.examples_table.setCurrentCell(1, 4)
    row = [int(view.examples_table.item(1, c).data(256)[0]) for c in range(3)]
    assert got[-1] == row
    # a class filter keeps only that class's anchors
    view.class_combo.setCurrentIndex(2)
    wait_idle(qtbot, view)
    cl = view.class_combo.currentData()
    assert len(view.examples) and all(y[a] == cl for a in view.examples.anchor)


def test_miner_tab_lists_the_mined_tuples(qtbot, view, run_dir):
    from explorer.views.triplets.jobs import mined_distances

    r = open_run(qtbot, view, run_dir)
    ed = r.load_epoch(r.epochs[-1])
    tel = ed.telemetry
    assert view.batch_combo.count() == len(np.unique(tel["mined_batch"]))
    for i in range(view.batch_combo.count()):
        view.batch_combo.setCurrentIndex(i)
        b = view.batch_combo.currentData()
        rows = np.flatnonzero(tel["mined_batch"] == b)
        t = view.mined_table
        assert t.rowCount() == len(rows)
        for k, j in enumerate(rows):
            for c, key in enumerate(("mined_anchor", "mined_positive", "mined_negative")):
                item = t.item(k, c)
                want = int(tel[key][j])
                assert (item.data(256)[0] if want >= 0 else -1) == want
    xs, ys = view.miner_curves["easy"].getData()
    assert list(ys) == list(tel["n_easy"])
    # vectorised distances vs brute force
    m = mined_distances(ed.embeddings, tel, "euclidean")
    for a, p, n, dap, dan in zip(m["anchor"], m["positive"], m["negative"], m["d_ap"], m["d_an"]):
        assert math.isnan(dap) if p < 0 else dap == pytest.approx(brute_distance(ed.embeddings[a],
                                                                                 ed.embeddings[p], "euclidean"))
        assert math.isnan(dan) if n < 0 else dan == pytest.approx(brute_distance(ed.embeddings[a],
                                                                                 ed.embeddings[n], "euclidean"))


def test_tuple_distances_cosine_vs_brute_force():
    from explorer.views.triplets.jobs import tuple_distances

    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 5)).astype(np.float32)
    a, b = rng.integers(-1, 9, 30), rng.integers(-1, 9, 30)
    got = tuple_distances(x, a, b, "cosine")
    for i, j, d in zip(a, b, got):
        if i < 0 or j < 0:
            assert math.isnan(d)
        else:
            assert d == pytest.approx(brute_distance(x[i], x[j], "cosine"), abs=1e-6)


def test_diagnostics_flag_the_misplaced_sample_and_highlight_it(qtbot, view, run_dir):
    r = open_run(qtbot, view, run_dir)
    view.split_combo.setCurrentIndex(view.split_combo.findData(
        "train" if r.samples.split[MISLABELLED] == SPLIT_TRAIN else "heldout"))
    wait_idle(qtbot, view)
    texts = [view.diag_list.item(i).text() for i in range(view.diag_list.count())]
    row = next(i for i, t in enumerate(texts) if "suspected label problem" in t)
    got = []
    view.state.highlight_changed.connect(lambda ids: got.append(np.asarray(ids).tolist()))
    view.diag_list.setCurrentRow(row)
    assert MISLABELLED in got[-1]
    assert view.diag_images.count() == len(got[-1])


def test_grab_png(qtbot, view, run_dir, tmp_path):
    open_run(qtbot, view, run_dir)
    view.state.set_epoch(0)
    wait_idle(qtbot, view)
    view.diag_list.setCurrentRow(0)
    qtbot.waitUntil(lambda: view.thumbs.get(int(view.examples.anchor[0])) is not None, timeout=10000)
    for i, name in enumerate(("examples", "miner", "diagnostics")):
        view.tabs.setCurrentIndex(i)
        out = Path("/tmp") / f"triplets_{name}.png" if SAVE_PNG else tmp_path / f"triplets_{name}.png"
        assert view.grab().save(str(out))
        assert out.stat().st_size > 1000
