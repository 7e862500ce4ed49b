"""Tests of the verification threshold studio (explorer/views/threshold/view.py) and trainer/analysis/thresholds.py.

A small run is written with trainer.store.RunWriter (clustered synthetic embeddings, some classes held out, tiny
PNG files so thumbnails load); the view must show numbers equal to a brute-force count over all held-out pairs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.analysis import verification
from trainer.model.losses import loss_margin, loss_metric
from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN, RunReader, RunWriter, SampleTable
from trainer.analysis.thresholds import coarsen, rates_ci_at_threshold, snap_threshold, threshold_grid
from trainer.store import write_json_atomic
from tests.support.twins import brute_distance

N_TRAIN_CLASSES = 5
N_HELDOUT_CLASSES = 6
PER_CLASS = 12


# ---------------------------------------------------------------------------------------------------------------
# brute force twins (plain loops)
# ---------------------------------------------------------------------------------------------------------------




def brute_pairs(x: np.ndarray, y: np.ndarray, metric: str) -> list[tuple[int, int, float, bool]]:
    out = []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            out.append((i, j, brute_distance(x[i], x[j], metric), bool(y[i] == y[j])))
    return out


def brute_rates(pairs, t: float) -> dict[str, int]:
    fa = fr = ng = ni = 0
    for _, _, d, same in pairs:
        if same:
            ng += 1
            fr += d > t
        else:
            ni += 1
            fa += d <= t
    return {"fa": fa, "fr": fr, "ng": ng, "ni": ni}


def gap_threshold(pairs, lo: float, hi: float, step: float = 1e-4) -> float:
    """A grid threshold in [lo, hi] with no pair distance within 2e-5 of it (float32 rounding cannot flip a pair)."""
    d = np.sort(np.array([p[2] for p in pairs]))
    for k in range(int(lo / step), int(hi / step)):
        t = round(k * step, 4)
        m = np.searchsorted(d, t)
        near = [abs(d[q] - t) for q in (m - 1, m) if 0 <= q < len(d)]
        if min(near) > 2e-5:
            return t
    raise AssertionError("no clean threshold found")


# ---------------------------------------------------------------------------------------------------------------
# a small run on disk
# ---------------------------------------------------------------------------------------------------------------


def make_run(root: Path, *, loss: str = "multi_similarity", seed: int = 0, epochs: int = 2,
             heldout_classes: int = N_HELDOUT_CLASSES) -> Path:
    """Write images + a run: classes 0..4 trained, the rest held out; epoch e has spread shrinking with e."""
    rng = np.random.default_rng(seed)
    n_classes = N_TRAIN_CLASSES + heldout_classes
    classes = [f"class_{c:02d}" for c in range(n_classes)]
    data = root / "data"
    paths, labels, split = [], [], []
    for c in range(n_classes):
        (data / classes[c]).mkdir(parents=True)
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        for k in range(PER_CLASS):
            rel = f"{classes[c]}/img_{k:02d}.png"
            Image.new("RGB", (12, 12), colour).save(data / rel)
            paths.append(rel)
            labels.append(c)
            split.append(SPLIT_TRAIN if c < N_TRAIN_CLASSES else SPLIT_HELDOUT)
    labels_a = np.array(labels, dtype=np.int64)
    # interleave train and held-out samples so that held-out positions are not a simple range
    perm = rng.permutation(len(paths))
    samples = SampleTable(paths=[paths[p] for p in perm], labels=labels_a[perm],
                          split=np.array(split, dtype=np.int8)[perm], roots=[str(data)],
                          root_index=np.zeros(len(paths), dtype=np.int16))
    run_dir = root / "run"
    w = RunWriter.create(run_dir, config={"loss": {"name": loss}}, classes=classes, samples=samples,
                         metric=loss_metric(loss), margin=loss_margin(loss))
    centres = rng.normal(size=(n_classes, 16))
    for e in range(epochs):
        emb = centres[samples.labels] + (1.1 - 0.2 * e) * rng.normal(size=(len(perm), 16))
        w.write_epoch(e, emb.astype(np.float32), {"precision_at_1": 0.5})
        w.write_checkpoint(e, {"format": "embedding-explorer-checkpoint", "epoch": e})
    return run_dir


def heldout(run_dir: Path, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = RunReader(run_dir)
    ids = np.flatnonzero(r.samples.split == SPLIT_HELDOUT)
    return ids, r.load_epoch(epoch).embeddings[ids], r.samples.labels[ids]


@pytest.fixture
def view(qtbot, tmp_path):
    from explorer.jobs import JobRunner
    from explorer.state import AppState
    from explorer.views.threshold.view import ThresholdView

    state = AppState()
    jobs = JobRunner()
    v = ThresholdView(state, jobs)
    qtbot.addWidget(v)
    v.resize(1300, 900)
    v.show()
    yield v
    jobs.shutdown()
    v.thumbs.shutdown()


def open_run(qtbot, v, run_dir: Path) -> None:
    v.state.set_run(RunReader(run_dir))
    wait_idle(qtbot, v)


def wait_idle(qtbot, v, timeout: int = 20000) -> None:
    qtbot.waitUntil(lambda: not v.is_busy(), timeout=timeout)


def shown_counts(v) -> dict[str, int]:
    """Parse 'x of N impostor pairs accepted' / 'y of M genuine pairs rejected' from the readout labels."""
    far = re.search(r"([\d,]+) of ([\d,]+) impostor pairs accepted", v.lbl["far"].text())
    frr = re.search(r"([\d,]+) of ([\d,]+) genuine pairs rejected", v.lbl["frr"].text())
    assert far and frr, (v.lbl["far"].text(), v.lbl["frr"].text())
    n = [int(s.replace(",", "")) for s in far.groups() + frr.groups()]
    return {"fa": n[0], "ni": n[1], "fr": n[2], "ng": n[3]}


# ---------------------------------------------------------------------------------------------------------------
# verification_extra against brute force
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_grid_edges_are_round_and_histograms_exact(metric):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = rng.integers(0, 6, 60)
    bins, hi, step = threshold_grid(x, metric)
    assert step == 1e-4 and abs(hi - bins * step) < 1e-12
    h = verification.pair_histograms(x, y, metric=metric, bins=bins, max_distance=hi if metric == "euclidean" else None)
    np.testing.assert_allclose(h.edges, np.arange(bins + 1) * step, atol=1e-12)
    pairs = brute_pairs(x, y, metric)
    assert max(p[2] for p in pairs) <= hi
    t = gap_threshold(pairs, 0.3 * hi / 2, hi / 2)
    assert snap_threshold(h, t) == pytest.approx(t, abs=1e-12)
    op = verification.operating_point(h, snap_threshold(h, t))
    b = brute_rates(pairs, t)
    assert (op["impostor_accepted"], op["genuine_rejected"]) == (b["fa"], b["fr"])


def test_grid_step_grows_for_a_wide_range():
    x = np.array([[0.0, 0.0], [3000.0, 0.0]], dtype=np.float32)
    bins, hi, step = threshold_grid(x, "euclidean", max_bins=1000)
    assert bins <= 1000 and hi >= 3000.0 and step == pytest.approx(10.0)
    with pytest.raises(ValueError, match="unknown metric"):
        threshold_grid(x, "manhattan")


def test_snap_threshold_picks_the_nearest_edge_by_loop():
    h = verification.PairHistograms("cosine", np.linspace(0, 2, 21), np.ones(20, np.int64), np.ones(20, np.int64))
    for t in np.linspace(-0.3, 2.4, 97):
        best = min(h.edges, key=lambda e: (abs(e - t), e))
        assert snap_threshold(h, float(t)) == pytest.approx(best)
    with pytest.raises(ValueError, match="finite"):
        snap_threshold(h, float("nan"))


def test_coarsen_matches_loop_sum():
    rng = np.random.default_rng(2)
    bins = 1000
    gen = np.zeros(bins, np.int64)
    imp = np.zeros(bins, np.int64)
    gen[300:420] = rng.integers(0, 5, 120)
    imp[350:777] = rng.integers(0, 9, 427)
    h = verification.PairHistograms("cosine", np.linspace(0, 2, bins + 1), gen, imp)
    edges, g, i = coarsen(h, 50)
    assert len(g) <= 50 and g.sum() == gen.sum() and i.sum() == imp.sum()
    for b in range(len(g)):  # loop twin: every fine bin whose centre lies in the coarse bin
        lo, hi = edges[b], edges[b + 1]
        sg = si = 0
        for k in range(bins):
            c = 0.5 * (h.edges[k] + h.edges[k + 1])
            if lo < c < hi:
                sg += gen[k]
                si += imp[k]
        assert (g[b], i[b]) == (sg, si)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_rates_ci_estimate_matches_brute_force_and_brackets_it(metric):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(8, 6))
    y = np.repeat(np.arange(8), 9)
    x = (centres[y] + 0.9 * rng.normal(size=(len(y), 6))).astype(np.float32)
    pairs = brute_pairs(x, y, metric)
    d = np.array([p[2] for p in pairs])
    t = float(np.median(d)) * 0.6
    b = brute_rates(pairs, t)
    ci = rates_ci_at_threshold(x, y, t, metric=metric, n_boot=200, max_groups=8, block_bytes=4096)
    assert ci["far"]["estimate"] == pytest.approx(b["fa"] / b["ni"], abs=1e-12)
    assert ci["frr"]["estimate"] == pytest.approx(b["fr"] / b["ng"], abs=1e-12)
    for k in ("far", "frr"):
        assert ci[k]["low"] <= ci[k]["estimate"] <= ci[k]["high"]
        assert ci[k]["high"] > ci[k]["low"]


def test_rates_ci_one_replicate_equals_loop_over_resampled_classes():
    """Bootstrap weights: a replicate drawing class c m_c times counts m_c copies of its genuine pairs and
    m_c * m_d of the impostor pairs between c and d (copies of one class are not paired) -- checked by loops."""
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(4), 5)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    t = 1.0
    n_boot = 1
    ci = rates_ci_at_threshold(x, y, t, metric="cosine", n_boot=n_boot, seed=7, max_groups=4)
    # reproduce the single replicate's draw
    rg = np.random.default_rng(7)
    perm = rg.permutation(4)
    group_of_class = np.empty(4, np.int64)
    for k, part in enumerate(np.array_split(perm, 4)):
        group_of_class[part] = k
    m = rg.multinomial(4, np.full(4, 0.25), size=1)[0]
    fa = ni = fr = ng = 0
    for i in range(20):
        for j in range(i + 1, 20):
            d = brute_distance(x[i], x[j], "cosine")
            gi, gj = group_of_class[y[i]], group_of_class[y[j]]
            if y[i] == y[j]:
                ng += m[gi]
                fr += m[gi] * (d > t)
            else:
                w = m[gi] if gi == gj else m[gi] * m[gj]
                ni += w
                fa += w * (d <= t)
    # with one replicate the percentile interval collapses onto that replicate's value
    assert ci["far"]["low"] == pytest.approx(fa / ni)
    assert ci["frr"]["low"] == pytest.approx(fr / ng)


def test_write_json_atomic(tmp_path):
    p = write_json_atomic(tmp_path / "t.json", {"a": 1.5, "b": None})
    assert json.loads(p.read_text()) == {"a": 1.5, "b": None}
    assert not (tmp_path / "t.json.tmp").exists()
    with pytest.raises(ValueError, match="t2.json"):
        write_json_atomic(tmp_path / "t2.json", {"a": float("nan")})
    with pytest.raises(FileNotFoundError, match="missing"):
        write_json_atomic(tmp_path / "missing" / "t.json", {})


# ---------------------------------------------------------------------------------------------------------------
# the view
# ---------------------------------------------------------------------------------------------------------------


def test_view_numbers_match_brute_force_on_heldout_only(qtbot, view, tmp_path):
    run_dir = make_run(tmp_path)
    open_run(qtbot, view, run_dir)
    ids, x, y = heldout(run_dir, 1)
    assert view.data is not None and view.data.epoch == 1
    np.testing.assert_array_equal(np.sort(view.data.ids), ids)
    pairs = brute_pairs(x, y, "cosine")
    nh = len(ids)
    assert view.data.hist.n_genuine + view.data.hist.n_impostor == nh * (nh - 1) // 2
    t = gap_threshold(pairs, 0.3, 0.7)
    view.spin.setValue(t)  # typed
    b = brute_rates(pairs, t)
    assert shown_counts(view) == b
    assert view.state.threshold == pytest.approx(t, abs=1e-12)
    assert f"{t:.4f}" in view.lbl["rule"].text()
    far_shown = float(re.match(r"([\d.]+) %", view.lbl["far"].text()).group(1)) / 100
    assert far_shown == pytest.approx(b["fa"] / b["ni"], rel=1e-2)


def test_moving_the_threshold_updates_labels(qtbot, view, tmp_path):
    run_dir = make_run(tmp_path)
    open_run(qtbot, view, run_dir)
    _, x, y = heldout(run_dir, 1)
    pairs = brute_pairs(x, y, "cosine")
    seen = []
    view.state.threshold_changed.connect(seen.append)
    t1 = gap_threshold(pairs, 0.2, 0.5)
    view.line.setValue(t1)  # as if dragged
    assert shown_counts(view) == brute_rates(pairs, t1)
    assert view.spin.value() == pytest.approx(t1)
    t2 = gap_threshold(pairs, 0.6, 0.9)
    view.state.set_threshold(t2)  # from another view
    assert shown_counts(view) == brute_rates(pairs, t2)
    assert view.line.value() == pytest.approx(t2)
    assert view.spin.value() == pytest.approx(t2)
    assert seen[0] == pytest.approx(t1) and seen[-1] == pytest.approx(t2)
    # the ROC marker sits on the operating point
    mx, my = view.op_marker.getData()
    b = brute_rates(pairs, t2)
    assert my[0] == pytest.approx(1 - b["fr"] / b["ng"])
    assert 10 ** mx[0] == pytest.approx(b["fa"] / b["ni"])  # the FAR axis is log-mapped


def test_pick_far_and_insufficient_pairs(qtbot, view, tmp_path):
    run_dir = make_run(tmp_path)
    open_run(qtbot, view, run_dir)
    _, x, y = heldout(run_dir, 1)
    pairs = brute_pairs(x, y, "cosine")
    idx = view.pick.findText("FAR = 1e-2")
    view.pick.setCurrentIndex(idx)
    view.pick.activated.emit(idx)
    t = view.threshold
    b = brute_rates(pairs, t)
    assert b["fa"] / b["ni"] <= 1e-2
    # the largest such edge: one step further would exceed 1e-2 (or accept no more impostors)
    b_next = brute_rates(pairs, t + view.data.step)
    assert b_next["fa"] / b_next["ni"] > 1e-2 or b_next["fa"] == b["fa"]
    assert view.rule.startswith("FAR")
    # the summary: 1e-6 needs 10 million impostor pairs; this run has a few thousand
    texts = {view.summary.item(r, 0).text(): view.summary.item(r, 1).text() for r in range(view.summary.rowCount())}
    assert texts["TAR @ FAR = 1e-6"] == "insufficient pairs"
    assert texts["TAR @ FAR = 1e-1"] != "insufficient pairs"


def test_eer_and_cv_picks(qtbot, view, tmp_path):
    run_dir = make_run(tmp_path)
    open_run(qtbot, view, run_dir)
    assert view.cv is not None and view.boot is not None
    view.pick.activated.emit(view.pick.findData("eer"))
    p = view.point
    assert abs(p["far"] - p["frr"]) < 0.1
    view.pick.activated.emit(view.pick.findData("cv"))
    assert view.threshold == pytest.approx(view.cv["threshold_mean"], abs=view.data.step / 2 + 1e-12)
    assert "CV" in view.rule


def test_pairs_tables_and_highlight_global_ids(qtbot, view, tmp_path):
    run_dir = make_run(tmp_path)
    open_run(qtbot, view, run_dir)
    ids, x, y = heldout(run_dir, 1)
    pairs = brute_pairs(x, y, "cosine")
    t = gap_threshold(pairs, 0.4, 0.8)
    view.spin.setValue(t)
    wait_idle(qtbot, view)
    assert view.errors is not None and view.errors["threshold"] == view.threshold
    fa = sorted((abs(d - t), i, j) for i, j, d, same in pairs if not same and d <= t)
    assert view.fa_table.rowCount() == min(12, len(fa)) > 0
    highlights = []
    view.state.highlight_changed.connect(lambda a: highlights.append(list(a)))
    view.fa_table.selectRow(0)
    _, i0, j0 = fa[0]
    assert highlights[-1] == [int(ids[i0]), int(ids[j0])]
    d0 = next(d for i, j, d, _ in pairs if (i, j) == (i0, j0))
    assert float(view.fa_table.item(0, 2).text()) == pytest.approx(d0, abs=1e-4)
    # thumbnails arrive from the run's image files
    qtbot.waitUntil(lambda: not view.fa_table.item(0, 0).icon().isNull(), timeout=10000)
    # class table: false rejects per held-out class, counted by loops
    classes = RunReader(run_dir).classes
    fr_by_class = {}
    for i, j, d, same in pairs:
        if same and d > t:
            fr_by_class[classes[y[i]]] = fr_by_class.get(classes[y[i]], 0) + 1
    shown = {view.class_table.item(r, 0).text(): int(view.class_table.item(r, 3).text())
             for r in range(view.class_table.rowCount())}
    for name, n in fr_by_class.items():
        assert shown[name] == n
    totals = [int(view.class_table.item(r, 1).text()) for r in range(view.class_table.rowCount())]
    assert totals == sorted(totals, reverse=True)  # most errors first
    assert all(name.startswith("class_") and int(name[-2:]) >= N_TRAIN_CLASSES for name in shown)
    # issue 17 item 7: each class's own FRR at the threshold, the spread in the readout
    gen_by_class: dict[str, int] = {}
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            if y[i] == y[j]:
                gen_by_class[classes[y[i]]] = gen_by_class.get(classes[y[i]], 0) + 1
    for r in range(view.class_table.rowCount()):
        name = view.class_table.item(r, 0).text()
        frr = float(view.class_table.item(r, 6).text()) / 100
        assert frr == pytest.approx(fr_by_class.get(name, 0) / gen_by_class[name], abs=1e-4)
    assert "FAR" in view.lbl["spread"].text() and "stricter for some classes" in view.lbl["spread"].text()
    # OPIS over a range of thresholds (per epoch, from the extras job): the number shown is the function's
    from trainer.analysis.thresholds import opis

    qtbot.waitUntil(lambda: view.opis is not None, timeout=20000)
    want = opis(x, y, metric="cosine")
    assert view.opis["opis"] == pytest.approx(want["opis"])
    rows = {view.summary.item(r, 0).text(): view.summary.item(r, 1).text() for r in range(view.summary.rowCount())}
    assert rows["OPIS (threshold consistency)"] == f"{want['opis']:.4f}"  # a whole-curve figure
    # issue 17 item 6: the error pairs leave as a pairs CSV (both images, the exact distance) and as paths
    import csv

    from PySide6.QtGui import QGuiApplication

    from trainer.export.formats import sample_files

    t_now = view.threshold
    fa_now = sorted((abs(d - t_now), i, j, d) for i, j, d, same in pairs if not same and d <= t_now)[:12]
    out = tmp_path / "fa.csv"
    assert view.fa_table.image_menu.export_csv(str(out))
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0][:4] == ["id_a", "path_a", "label_a", "id_b"] and len(rows) - 1 == len(fa_now)
    files = sample_files(RunReader(run_dir).samples)
    for row, (_, i, j, d) in zip(rows[1:], fa_now):
        assert (int(row[0]), int(row[3])) == (int(ids[i]), int(ids[j])) and row[1] == files[int(ids[i])]
        assert float(row[6]) == pytest.approx(d, abs=1e-5) and row[7] == "false accepts"
    assert view.fa_table.image_menu.copy_paths() == 2 * len(fa_now)
    assert QGuiApplication.clipboard().text().splitlines()[:2] == [files[int(ids[fa_now[0][1]])],
                                                                   files[int(ids[fa_now[0][2]])]]
    assert view.fr_table.image_menu.what == "false rejects"


def test_export_threshold_json_and_plots(qtbot, view, tmp_path):
    run_dir = make_run(tmp_path, loss="triplet")  # a Euclidean loss
    open_run(qtbot, view, run_dir)
    _, x, y = heldout(run_dir, 1)
    pairs = brute_pairs(x, y, "euclidean")
    t = gap_threshold(pairs, 3.0, 6.0)
    view.spin.setValue(t)
    wait_idle(qtbot, view)
    path = view.export_threshold()
    assert path == run_dir / "thresholds.json"
    rec = json.loads(path.read_text())
    b = brute_rates(pairs, t)
    assert rec["threshold"] == pytest.approx(t) and rec["metric"] == "euclidean"
    assert "smaller = more alike" in rec["direction"]
    assert rec["epoch"] == 1 and Path(rec["run"]) == run_dir
    assert rec["checkpoint"].endswith("epoch_0001.pt")
    assert rec["at_threshold"]["far"] == pytest.approx(b["fa"] / b["ni"])
    assert rec["at_threshold"]["frr"] == pytest.approx(b["fr"] / b["ng"])
    lo, hi = rec["at_threshold"]["far_ci95"]
    assert lo <= rec["at_threshold"]["far"] <= hi
    assert rec["curve"]["auc_ci95"][0] <= rec["curve"]["auc"] <= rec["curve"]["auc_ci95"][1]
    assert rec["curve"]["tar_at_far"]["1e-6"]["sufficient_pairs"] is False
    assert rec["curve"]["tar_at_far"]["1e-6"]["tar"] is None
    files = view.export_plots(tmp_path)
    assert len(files) == 4
    for f in files:
        assert f.stat().st_size > 1000
        if f.suffix == ".png":
            with Image.open(f) as im:
                assert im.size[0] >= 800
        else:
            assert "<svg" in f.read_text()[:2000]


def test_new_epoch_replaces_result_and_no_heldout_message(qtbot, view, tmp_path):
    run_dir = make_run(tmp_path)
    open_run(qtbot, view, run_dir)
    auc1 = view.data.roc.auc
    view.state.set_epoch(0)
    view.state.set_epoch(1)
    view.state.set_epoch(0)  # the older jobs are cancelled; only epoch 0's answer arrives
    wait_idle(qtbot, view)
    assert view.data.epoch == 0
    assert view.data.roc.auc < auc1  # epoch 0 is more spread out
    other = tmp_path / "other"
    other.mkdir()
    open_run(qtbot, view, make_run(other, heldout_classes=1))
    assert "at least two classes" in view.title.text()
    assert not view.save_btn.isEnabled()


def test_beyond_the_exact_range_pairs_are_sampled_by_class_and_said(tmp_path, monkeypatch):
    """Past EXACT_LIMIT held-out images the studio counts a class-stratified pair sample and says so."""
    from explorer.views.threshold import jobs as rv
    from trainer.store import RunReader

    run_dir = make_run(tmp_path)
    run = RunReader(run_dir)
    noop = dict(progress=lambda *a: None, partial=lambda *a: None, is_cancelled=lambda: False)
    exact = rv.compute_roc(run, 1, **noop)
    assert exact.pairs_note == "all counted exactly"
    monkeypatch.setattr(rv, "EXACT_LIMIT", 10)
    import trainer.analysis.pairs as sampling

    real = sampling.stratified_pair_sample
    monkeypatch.setattr(sampling, "stratified_pair_sample",
                        lambda labels, **kw: real(labels, max_genuine=50, max_impostor=200, seed=0))
    sampled = rv.compute_roc(run, 1, **noop)
    assert "sampled" in sampled.pairs_note and "stratified by class" in sampled.pairs_note
    assert sampled.hist.n_genuine + sampled.hist.n_impostor < exact.hist.n_genuine + exact.hist.n_impostor
    assert 0.0 <= sampled.roc.auc <= 1.0
    assert exact.analysis_rows is None and exact.analysis_note == ""
    # CV, intervals and the errors at a threshold run on a class-stratified image sample, said too
    monkeypatch.setattr(rv, "ANALYSIS_LIMIT", 12)
    small = rv.compute_roc(run, 1, **noop)
    rows = small.analysis_rows
    assert len(rows) == 12 and set(small.labels[rows]) == set(small.labels)
    assert "class-stratified sample of 12 of the" in small.analysis_note
    t = float(np.median(small.hist.edges))
    errs = rv.compute_errors(small.embeddings, small.labels, small.metric, t, rows, **noop)
    # the brute-force twin: the same function on the sampled images alone, its pair indices mapped back
    alone = rv.compute_errors(small.embeddings[rows], small.labels[rows], small.metric, t, **noop)
    for kind in ("false_accept", "false_reject"):
        i, j, d = errs[kind]
        ai, aj, ad = alone[kind]
        assert list(i) == list(rows[ai]) and list(j) == list(rows[aj])
        np.testing.assert_allclose(d, ad)
        assert set(i) | set(j) <= set(rows)
    extras = rv.compute_extras(small.embeddings, small.labels, small.metric, rows, **noop)
    twin = rv.compute_extras(small.embeddings[rows], small.labels[rows], small.metric, **noop)
    np.testing.assert_allclose(extras["cv"]["fold_thresholds"], twin["cv"]["fold_thresholds"])
    assert extras["cv"]["accuracy_mean"] == pytest.approx(twin["cv"]["accuracy_mean"])


def test_a_threshold_chosen_by_a_rule_follows_it_on_a_new_epoch_and_a_hand_set_one_stays(qtbot, view, tmp_path):
    """Issue 15 item 10: the threshold stayed at the old value, still labelled "(EER ...)", when a new epoch
    moved the EER."""
    run_dir = make_run(tmp_path)
    open_run(qtbot, view, run_dir)
    assert view.rule == "EER"
    eer_1 = view.threshold
    view.state.set_epoch(0)
    wait_idle(qtbot, view)
    assert view.data.epoch == 0 and view.rule == "EER"
    assert view.threshold == pytest.approx(snap_threshold(view.data.hist, view.data.roc.eer_threshold))
    assert view.threshold != eer_1  # epoch 0's EER is elsewhere, and the threshold went with it
    # a FAR target is kept as the rule
    view._on_pick(2)  # the second FAR target
    far_rule = view.rule
    assert far_rule.startswith("FAR")
    view.state.set_epoch(1)
    wait_idle(qtbot, view)
    assert view.rule == far_rule
    assert view.threshold == pytest.approx(snap_threshold(
        view.data.hist, verification.threshold_at_far(view.data.hist, float(view.pick.currentData()))))
    # a value set by hand stays
    view.spin.setValue(0.5)
    mine = view.threshold
    view.state.set_epoch(0)
    wait_idle(qtbot, view)
    assert view.rule == "manual" and view.threshold == pytest.approx(snap_threshold(view.data.hist, mine))


def test_the_drawn_roc_is_thinned_like_a_loop_over_its_points():
    from explorer.views.threshold.jobs import curve_points

    rng = np.random.default_rng(2)
    n = 50_000
    far = np.r_[0.0, 0.0, np.sort(10 ** rng.uniform(-6, 0, n))]
    tar = np.sort(rng.uniform(0, 1, n + 2))
    tar[10:20] = tar[9]  # repeats of one point
    far[10:20] = far[9]

    def plain(far, tar, m):
        pts = [(f, t) for k, (f, t) in enumerate(zip(far, tar))
               if f > 0 and (k == 0 or f > far[k - 1] or t > tar[k - 1])]
        if len(pts) <= m:
            return pts
        lo, hi = np.log10(pts[0][0]), np.log10(pts[-1][0])
        step = (hi - lo) / m
        out, last = [], None
        for k, (f, t) in enumerate(pts):
            key = (np.floor((np.log10(f) - lo) / step), np.floor(t * m))
            if key != last or k == len(pts) - 1:
                out.append((f, t))
            last = key
        return out

    for m in (100, 4000, 10 ** 6):
        f, t = curve_points(far, tar, m)
        twin = plain(far, tar, m)
        assert len(f) == len(twin) and np.allclose(f, [p[0] for p in twin]) and np.allclose(t, [p[1] for p in twin])
        assert f[0] == twin[0][0] and t[-1] == tar[-1]
    assert len(curve_points(far, tar, 100)[0]) < 300  # about one point per cell or TAR level


def test_beyond_the_exact_range_the_errors_wait_for_the_intervals(qtbot, view, tmp_path, monkeypatch):
    import threading
    import time

    from explorer.views.threshold import jobs as rv
    from explorer.views.threshold import view as tv

    monkeypatch.setattr(rv, "EXACT_LIMIT", 10)  # a "large" split: pairs sampled, analysis on an image sample
    monkeypatch.setattr(rv, "ANALYSIS_LIMIT", 40)
    log, lock = [], threading.Lock()

    def tracked(name, fn, delay=0.0):
        def run(*args, **kw):
            with lock:
                log.append((name, "start", time.monotonic()))
            try:
                time.sleep(delay)  # the intervals of a large split take a while: the errors' timer fires meanwhile
                return fn(*args, **kw)
            finally:
                with lock:
                    log.append((name, "end", time.monotonic()))
        return run

    monkeypatch.setattr(tv, "compute_extras", tracked("extras", rv.compute_extras, delay=1.0))
    monkeypatch.setattr(tv, "compute_errors", tracked("errors", rv.compute_errors))
    open_run(qtbot, view, make_run(tmp_path))
    assert view.data.analysis_rows is not None and view.errors is not None and view.boot is not None
    starts = [e for e in log if e[1] == "start"]
    assert [e[0] for e in starts][:2] == ["extras", "errors"]
    extras_end = next(t for name, what, t in log if name == "extras" and what == "end")
    assert all(t >= extras_end for name, what, t in starts if name == "errors")  # never both at once
    assert view.fa_table.rowCount() + view.fr_table.rowCount() > 0


def test_the_readout_and_the_errors_note_show_all_their_lines_at_1280_x_800(qtbot, view, tmp_path, monkeypatch):
    from explorer.views.threshold import jobs as rv

    monkeypatch.setattr(rv, "EXACT_LIMIT", 10)  # the long notes of a sampled split
    monkeypatch.setattr(rv, "ANALYSIS_LIMIT", 40)
    view.resize(1280, 720)  # the tab's share of a 1280 x 800 window
    open_run(qtbot, view, make_run(tmp_path))
    qtbot.waitUntil(lambda: "95" in view.lbl["far"].text() and view.errors is not None, timeout=20000)
    qtbot.wait(50)
    assert "sample of" in view.errors_note.text()
    for label in (view.lbl["far"], view.lbl["frr"], view.lbl["spread"], view.errors_note):
        # the height the wrapped text needs at the width it was given (its interval or last line was clipped)
        assert label.height() >= label.heightForWidth(label.width()), (label.text(), label.size())
    # an interval wraps as a whole, never inside its numbers
    assert "95\u00a0%\u00a0CI" in view.lbl["far"].text()
