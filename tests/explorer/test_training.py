"""Point-and-click training: the controller's thread and signals, pause/resume/stop, close while training, errors."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication, QMessageBox

from tests.support.images import make_class_folder  # noqa: E402
from tests.support.processes import kill_under_request  # noqa: E402

from explorer.app import create_window, protect_none_refcount  # noqa: E402
from explorer.settings import Settings  # noqa: E402
from explorer.state import AppState  # noqa: E402
from explorer.training import TrainingController  # noqa: E402
from explorer.views.training.view import TrainingView, format_seconds
from trainer import events as ev  # noqa: E402
from trainer.config import TrainConfig
from trainer.store import RunReader  # noqa: E402

protect_none_refcount()  # shiboken6 6.12 on Python 3.11 drops a reference to None per void Qt call


@pytest.fixture(autouse=True)
def plain_map(request, monkeypatch):
    """The map view (tested on its own) warms up UMAP in the background; most tests here do not need it."""
    if "real_map" in request.fixturenames:
        return
    from PySide6.QtWidgets import QLabel

    from explorer.main_window import MainWindow

    monkeypatch.setattr(MainWindow, "_make_map_view", lambda self: QLabel("map"))


@pytest.fixture
def real_map() -> None:
    """Requested by a test that wants the real map view in the window (an integration check)."""


class _RecordingBox:
    """Stands in for QMessageBox in the training view: records instead of showing."""

    shown: list[tuple[str, str]] = []

    Icon = QMessageBox.Icon
    StandardButton = QMessageBox.StandardButton

    def __init__(self, icon, title, text, buttons=None, parent=None) -> None:
        self.title, self.text = title, text

    def setDetailedText(self, text: str) -> None:  # noqa: N802 - Qt name
        self.detail = text

    def open(self) -> None:
        _RecordingBox.shown.append((self.title, self.text))


@pytest.fixture
def boxes(monkeypatch) -> list[tuple[str, str]]:
    _RecordingBox.shown = []
    monkeypatch.setattr("explorer.views.training.view.QMessageBox", _RecordingBox)
    return _RecordingBox.shown


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_class_folder(tmp_path_factory.mktemp("data") / "colours", n_classes=4, per_class=8, size=32)


def _cfg(folder: Path, **changes) -> TrainConfig:
    cfg = TrainConfig().replace(**{
        "data.data_dir": str(folder), "data.image_size": 32, "data.augment": False, "data.batch_classes": 2,
        "data.batch_per_class": 4, "data.num_workers": 0, "data.holdout_fraction": 0.5,
        "model.backbone": "small_cnn", "model.pretrained": False, "model.embedding_dim": 8,
        "optim.epochs": 1, "optim.batches_per_epoch": 2, "optim.lr": 1e-3,
        "loss.name": "triplet", "loss.miner": "none", "device": "cpu", "amp": "off"})
    return cfg.replace(**changes) if changes else cfg


@pytest.fixture
def window(qtbot, tmp_path, folder):
    settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    win = create_window(QApplication.instance(), settings=settings)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.dataset_view.scan_finished, timeout=30000):
        win.open_folder(folder)
    win.config_panel.set_runs_root(tmp_path / "runs")
    yield win
    win.shutdown(20)


# ---- the controller on its own, with a stand-in trainer ------------------------------------------------------------
class _FakeTrainer:
    """Emits the event sequence of a one-epoch run, honouring pause and stop like the real loop."""

    def __init__(self, cfg, run_dir, *, emit, stop, pause, resume, batches=3):
        self.emit, self.stop, self.pause, self.run_dir, self.batches = emit, stop, pause, Path(run_dir), batches
        self.thread_name = ""

    def run(self) -> None:
        self.thread_name = threading.current_thread().name
        self.emit(ev.Started(self.run_dir, epochs=1, batches_per_epoch=self.batches, device="cpu"))
        self.emit(ev.EpochDone(0, {"heldout/precision_at_1": 0.5}, seconds=0.1))  # epoch 0: the untrained net
        self.emit(ev.SnapshotReady(self.run_dir, 0, self.run_dir / "epochs" / "epoch_0000.h5"))
        for b in range(self.batches):
            self.emit(ev.BatchDone(1, b, self.batches, loss=1.0 / (b + 1), lr=1e-3, images_per_second=10.0,
                                   n_tuples=5, n_easy=1, n_semihard=2, n_hard=3, mean_d_ap=0.1, mean_d_an=0.2))
        self.emit(ev.EpochDone(1, {"heldout/precision_at_1": 0.75}, seconds=0.1))
        self.emit(ev.SnapshotReady(self.run_dir, 1, self.run_dir / "epochs" / "epoch_0001.h5"))
        self.emit(ev.Stopped(1, "finished", self.run_dir))


class _FakeReader:
    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.epochs = [0]
        self.refreshed = 0

    def refresh(self):
        self.refreshed += 1
        return []


def test_controller_reemits_events_in_order_on_the_gui_thread(qtbot, tmp_path):
    state = AppState()
    made: list[_FakeTrainer] = []

    def factory(cfg, run_dir, **kw):
        made.append(_FakeTrainer(cfg, run_dir, **kw))
        return made[-1]

    ctl = TrainingController(state, trainer_factory=factory, reader_factory=_FakeReader)
    received: list[type] = []
    ctl.event.connect(lambda e: received.append(type(e)))
    gui_thread = threading.current_thread().name
    threads: list[str] = []
    ctl.batch_done.connect(lambda e: threads.append(threading.current_thread().name))
    with qtbot.waitSignal(ctl.stopped, timeout=5000):
        ctl.start(TrainConfig(), tmp_path / "run")
    qtbot.waitUntil(lambda: not ctl.is_running(), timeout=5000)
    assert received == [ev.Started, ev.EpochDone, ev.SnapshotReady, *[ev.BatchDone] * 3, ev.EpochDone,
                        ev.SnapshotReady, ev.Stopped]
    assert made[0].thread_name != gui_thread and set(threads) == {gui_thread}
    assert isinstance(state.run, _FakeReader) and state.run.run_dir == tmp_path / "run"
    assert state.epochs == [0, 1] and state.epoch == 1
    assert state.run.refreshed == 1  # the first snapshot opened the reader, the second refreshed it


def test_a_trainer_that_raises_becomes_failed_and_the_thread_ends(qtbot, tmp_path):
    def broken(cfg, run_dir, **kw):
        raise RuntimeError("boom in construction")

    ctl = TrainingController(AppState(), trainer_factory=broken)
    running: list[bool] = []
    ctl.running_changed.connect(running.append)
    with qtbot.waitSignal(ctl.failed, timeout=5000) as blocker:
        ctl.start(TrainConfig(), tmp_path / "run")
    assert "boom in construction" in blocker.args[0].message and "RuntimeError" in blocker.args[0].detail
    qtbot.waitUntil(lambda: running == [True, False], timeout=5000)
    assert not ctl.is_running()


def test_a_silent_end_is_reported_as_stopped(qtbot, tmp_path):
    class Quiet:
        def run(self):
            return None

    ctl = TrainingController(AppState(), trainer_factory=lambda *a, **k: Quiet())
    with qtbot.waitSignal(ctl.stopped, timeout=5000) as blocker:
        ctl.start(TrainConfig(), tmp_path / "run")
    assert blocker.args[0].reason == "ended"


def view_idle(win) -> bool:
    return win.training_view.start_button.isEnabled()


# ---- the real trainer through the window ---------------------------------------------------------------------------
def test_one_epoch_from_the_window(qtbot, real_map, window, folder, boxes):
    window.config_panel.set_config(_cfg(folder))
    assert window.config_panel.problems() == []
    ctl = window.controller
    with qtbot.waitSignal(ctl.snapshot_ready, timeout=60000) as snap:
        run_dir = window.start_training()
        assert run_dir is not None and run_dir.parent == window.config_panel.runs_root_path()
        assert not window.config_panel.isEnabled()  # the form is locked while training, and says so
        assert window.config_panel.problems_label.text().startswith("Training:")
        assert window.run_label.text().startswith(f"Run: {run_dir.name}")  # not "No run open"
    assert snap.args[0].epoch == 0  # epoch 0 is the untrained network
    assert window.state.run is not None and window.state.epochs == [0] and window.state.epoch == 0
    qtbot.waitUntil(lambda: not ctl.is_running() and view_idle(window), timeout=30000)
    assert window.state.epochs == [0, 1] and window.state.epoch == 1
    view = window.training_view
    assert view.loss_series.n == 2 and np.isfinite(view.loss_series.y[:2]).all()
    assert view.miner_series["hard"].n == 2
    assert view.run_progress.value() == view.run_progress.maximum()
    assert list(view._metric_series["heldout/precision_at_1"].x[:2]) == [0, 1]
    assert "Finished" in view.status_label.text()
    assert window.config_panel.isEnabled() and view.start_button.isEnabled()
    assert window.config_panel.problems_label.text() == "Ready to start."
    assert RunReader(run_dir).epochs == [0, 1]
    assert window.settings.last_config() == _cfg(folder)
    assert boxes == []
    window.show_view("Train")
    window.grab().save(str(run_dir.parent / "train_view.png"))


def test_pause_resume_and_stop(qtbot, window, folder):
    window.config_panel.set_config(_cfg(folder, **{"optim.epochs": 50, "optim.batches_per_epoch": 400}))
    ctl, view = window.controller, window.training_view
    batches: list = []
    ctl.batch_done.connect(batches.append)
    with qtbot.waitSignal(ctl.batch_done, timeout=60000):
        run_dir = window.start_training()
    assert view.pause_button.isEnabled() and view.stop_button.isEnabled() and not view.start_button.isEnabled()
    with qtbot.waitSignal(ctl.paused, timeout=10000, check_params_cb=lambda p: p is True):
        view.pause_button.click()
    assert view.pause_button.text() == "Resume" and view.status_label.text() == "Paused"
    n = view.loss_series.n
    seen: list = []
    ctl.batch_done.connect(seen.append)
    qtbot.wait(1500)
    assert view.loss_series.n == n and not seen  # no batch while paused
    with qtbot.waitSignal(ctl.paused, timeout=10000, check_params_cb=lambda p: p is False):
        view.pause_button.click()
    with qtbot.waitSignal(ctl.batch_done, timeout=10000):
        pass
    # issue 15 item 12: the pause is not training time, neither in the speed nor in the ETA
    assert view._paused_seconds >= 1.4
    before = np.median([e.images_per_second for e in batches[-5:]])
    assert seen[0].images_per_second > 0.1 * before, (seen[0].images_per_second, before)
    with qtbot.waitSignal(ctl.stopped, timeout=20000) as blocker:
        view.stop_button.click()
        # said at once, before the trainer ends its batch (it read "Training on cpu" for ~10 s)
        assert view.status_label.text().startswith("Stopping") and not view.stop_button.isEnabled()
    assert blocker.args[0].reason == "user"
    qtbot.waitUntil(lambda: not ctl.is_running() and view.start_button.isEnabled(), timeout=30000)
    assert not ctl.is_running() and view.start_button.isEnabled() and not view.pause_button.isChecked()
    assert RunReader(run_dir).config["data"]["data_dir"] == str(folder)  # what is on disk is a valid run


def test_closing_the_window_while_training_asks_first_then_stops_cleanly(qtbot, tmp_path, folder, monkeypatch):
    settings = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    win = create_window(QApplication.instance(), settings=settings)
    win.config_panel.set_runs_root(tmp_path / "runs")
    win.config_panel.set_config(_cfg(folder, **{"optim.epochs": 50, "optim.batches_per_epoch": 400}))
    with qtbot.waitSignal(win.controller.batch_done, timeout=60000):
        run_dir = win.start_training()
    thread = win.controller._thread
    assert thread.is_alive()
    asked: list[str] = []

    def answer(reply):
        def question(parent, title, text, *args):
            asked.append(text)
            return reply
        return question

    win.show()
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Cancel))
    win.quit_action.trigger()  # Ctrl+Q: the user changes their mind
    assert asked and "The epoch in progress is lost" in asked[0]
    assert win.isVisible() and thread.is_alive() and win.controller.is_running()
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    win.close()  # confirmed: joins the trainer (with a timeout) before the window goes
    assert len(asked) == 2 and not thread.is_alive()
    reader = RunReader(run_dir)
    assert reader.classes == [f"class_{c}" for c in range(4)]
    win.deleteLater()


def test_a_trainer_error_reaches_the_user(qtbot, window, folder, boxes, monkeypatch):
    import trainer.train.engine

    def failing_run(self):
        self.emit(ev.Log("about to fail", "info"))
        self.emit(ev.Failed("CUDA out of memory (pretend)", detail="Traceback: pretend"))

    monkeypatch.setattr(trainer.train.engine.Trainer, "run", failing_run)
    window.config_panel.set_config(_cfg(folder))
    with qtbot.waitSignal(window.controller.failed, timeout=20000):
        window.start_training()
    qtbot.waitUntil(lambda: window.training_view.start_button.isEnabled(), timeout=5000)
    assert boxes == [("Training failed", "CUDA out of memory (pretend)")]
    log = window.training_view.log_view.toPlainText()
    assert "ERROR Training failed: CUDA out of memory (pretend)" in log and "Traceback: pretend" in log
    assert window.training_view.status_label.text() == "Failed"
    assert window.training_view.start_button.isEnabled()


def test_following_a_run_written_elsewhere(qtbot, tmp_path):
    from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN, RunWriter, SampleTable

    n = 9
    samples = SampleTable(paths=[f"c{i % 3}/{i}.png" for i in range(n)], labels=np.arange(n) % 3,
                          split=np.where(np.arange(n) < 6, SPLIT_TRAIN, SPLIT_HELDOUT).astype(np.int8),
                          roots=[str(tmp_path)], root_index=np.zeros(n, dtype=np.int16))
    run_dir = tmp_path / "cli-run"
    writer = RunWriter.create(run_dir, config=TrainConfig().to_dict(), classes=["c0", "c1", "c2"], samples=samples)
    state = AppState()
    ctl = TrainingController(state, poll_interval_ms=50)
    view = TrainingView(state, ctl)
    qtbot.addWidget(view)
    from trainer.store import RunLock

    lock = RunLock(run_dir).acquire()  # as the command line holds it while it trains
    ctl.follow(run_dir)
    qtbot.waitUntil(lambda: state.run is not None, timeout=5000)
    assert state.epochs == []
    # issue 15 item 8: it read "Idle" until the first epoch; now it says whose run it follows
    assert "Following cli-run: trained by process" in view.status_label.text()
    assert "waiting for its first epoch" in view.status_label.text()
    emb = np.zeros((n, 4), dtype=np.float32)
    with qtbot.waitSignal(state.epochs_available, timeout=5000, check_params_cb=lambda e: e == [0]):
        writer.write_epoch(0, emb, {"heldout/precision_at_1": 0.5})
    assert "epochs 0-0 committed so far" in view.status_label.text() and not view.continue_button.isEnabled()
    tel = {"loss": np.array([0.9, 0.7, 0.5], np.float32), "n_easy": np.array([1, 2, 3]),
           "n_semihard": np.array([4, 5, 6]), "n_hard": np.array([7, 8, 9])}
    with qtbot.waitSignal(state.epoch_changed, timeout=5000, check_params_cb=lambda e: e == 1):
        writer.write_epoch(1, emb + 1, {"heldout/precision_at_1": 0.6}, tel)
    writer.close()
    assert state.epochs == [0, 1]
    series = view._metric_series["heldout/precision_at_1"]  # the followed run's curve grows with it
    assert list(series.y[:series.n]) == pytest.approx([0.5, 0.6])
    # and so do its per-batch loss and miner curves, from the stored telemetry, read by a background job
    qtbot.waitUntil(lambda: not view.telemetry_pending(), timeout=5000)
    assert list(view.loss_series.y[:view.loss_series.n]) == pytest.approx([0.9, 0.7, 0.5])
    assert list(view.loss_series.x[:view.loss_series.n]) == [0, 1, 2]
    assert list(view.miner_series["hard"].y[:3]) == [7, 8, 9]
    lock.release()
    ctl.shutdown()
    assert ctl._timer.isActive() is False


def test_format_seconds_reads_at_a_glance():
    assert [format_seconds(s) for s in (0, 12.4, 65, 3600 + 125)] == ["0 s", "12 s", "1 min 05 s", "1 h 02 min"]
    assert format_seconds(float("nan")) == "?" and format_seconds(-1) == "?"


def test_an_opened_run_shows_its_config_and_curves_and_continues(qtbot, tmp_path, window, folder, boxes, monkeypatch):
    """Open a run trained earlier: its config fills the form, its batch curves are drawn, and "Continue this run"
    trains it further from its checkpoint (refused, with the reason, while another process trains it)."""
    from trainer.store import RunLock

    window.config_panel.set_config(_cfg(folder, **{"optim.batches_per_epoch": 3, "model.embedding_dim": 12}))
    with qtbot.waitSignal(window.controller.stopped, timeout=60000):
        run_dir = window.start_training()
    qtbot.waitUntil(lambda: not window.controller.is_running(), timeout=30000)
    window.shutdown(20)

    settings = Settings(QSettings(str(tmp_path / "other.ini"), QSettings.Format.IniFormat))
    win = create_window(QApplication.instance(), settings=settings)
    qtbot.addWidget(win)
    shown: list[str] = []
    monkeypatch.setattr("explorer.main_window.QMessageBox.information", lambda *a: shown.append(a[2]))
    assert win.open_run(run_dir)
    view = win.training_view
    assert win.config_panel.config().model.embedding_dim == 12  # the run's configuration, not the last one
    qtbot.waitUntil(lambda: not view.telemetry_pending(), timeout=5000)
    assert view.loss_series.n == 3 and list(view.loss_series.x[:3]) == [0, 1, 2]
    np.testing.assert_allclose(view.loss_series.y[:3], RunReader(run_dir).telemetry(1)["loss"])
    assert view.continue_button.isEnabled() and view.start_button.isEnabled()
    assert view.run_progress.value() == view.run_progress.maximum() == 1  # 1 of its 1 planned epochs

    assert win.continue_run() is None  # Epochs is still 1: nothing to continue to, and the user is told why
    assert "Raise Epochs above 1" in shown[-1]
    win.config_panel.epochs.setValue(2)
    lock = RunLock(run_dir).acquire()  # the command line is training it
    try:
        assert win.continue_run() is None and "is being trained by process" in shown[-1]
    finally:
        lock.release()
    with qtbot.waitSignal(win.controller.stopped, timeout=60000) as stopped:
        assert win.continue_run() == run_dir
    assert stopped.args[0].reason == "finished"
    qtbot.waitUntil(lambda: not win.controller.is_running(), timeout=30000)
    assert RunReader(run_dir).epochs == [0, 1, 2]
    assert view.loss_series.n == 6 and list(view.loss_series.x[3:6]) == [3, 4, 5]  # the curve goes on
    assert win.state.epochs == [0, 1, 2]
    win.shutdown(20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is a Linux feature")
def test_the_trainer_thread_yields_the_cpu_to_the_window():
    import os

    from explorer.training import TRAINER_NICE, lower_thread_priority

    got: list[int] = []

    def body() -> None:
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert lower_thread_priority(TRAINER_NICE)
        got.extend([before, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())])

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert got[1] == min(19, got[0] + TRAINER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == got[0]  # this thread is untouched


def test_series_extend_equals_appending_point_by_point(qtbot):
    import pyqtgraph as pg

    from explorer.views.training.view import _Series

    rng = np.random.default_rng(0)
    a, b = _Series(pg.PlotDataItem(), capacity=4), _Series(pg.PlotDataItem(), capacity=4)
    for chunk in (3, 0, 1, 17, 40):  # across several growths of the buffer
        xs, ys = rng.normal(size=chunk), rng.normal(size=chunk)
        a.extend(xs, ys)
        for x, y in zip(xs, ys):
            b.append(x, y)
        assert a.n == b.n
        np.testing.assert_array_equal(a.x[: a.n], b.x[: b.n])
        np.testing.assert_array_equal(a.y[: a.n], b.y[: b.n])


def test_stored_batches_are_read_off_the_gui_thread_in_order(qtbot, tmp_path):
    """An opened run's per-batch curves come from a background job (one HDF5 read per epoch), appended in epoch
    order; the result equals reading every epoch directly, and continuing the run finishes the reading first."""
    import threading

    from explorer.views.training.jobs import read_batch_telemetry
    from trainer.store import SPLIT_TRAIN, RunReader, RunWriter, SampleTable

    n = 6
    samples = SampleTable(paths=[f"c{i % 2}/{i}.png" for i in range(n)], labels=np.arange(n) % 2,
                          split=np.full(n, SPLIT_TRAIN, np.int8), roots=[str(tmp_path)],
                          root_index=np.zeros(n, dtype=np.int16))
    run_dir = tmp_path / "run"
    writer = RunWriter.create(run_dir, config=TrainConfig().to_dict(), classes=["c0", "c1"], samples=samples)
    rng = np.random.default_rng(0)
    for epoch in range(6):
        tel = {} if epoch == 0 else {"loss": rng.random(4).astype(np.float32), "n_easy": rng.integers(0, 9, 4),
                                     "n_semihard": rng.integers(0, 9, 4), "n_hard": rng.integers(0, 9, 4)}
        writer.write_epoch(epoch, np.zeros((n, 3), np.float32), {}, tel)
    writer.close()
    reader = RunReader(run_dir)

    threads: list[str] = []
    real = RunReader.telemetry

    def spy(self, epoch):
        threads.append(threading.current_thread().name)
        return real(self, epoch)

    state = AppState()
    ctl = TrainingController(state)
    view = TrainingView(state, ctl)
    qtbot.addWidget(view)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunReader, "telemetry", spy)
        state.set_run(reader)
        qtbot.waitUntil(lambda: not view.telemetry_pending(), timeout=5000)
    assert threads and threading.main_thread().name not in threads
    # the brute-force twin: every epoch read directly, concatenated in order
    want_x, want_y, want_hard = [], [], []
    for epoch in range(1, 6):
        tel = reader.telemetry(epoch)
        want_x += [(epoch - 1) * 4 + i for i in range(4)]
        want_y += list(tel["loss"])
        want_hard += list(tel["n_hard"])
    assert list(view.loss_series.x[:view.loss_series.n]) == want_x
    np.testing.assert_allclose(view.loss_series.y[:view.loss_series.n], want_y)
    assert list(view.miner_series["hard"].y[:view.miner_series["hard"].n]) == want_hard
    assert [e for e, _ in read_batch_telemetry(reader, [0, 3, 1])] == [0, 3, 1]

    # a continued run starts before the job delivered: what is pending is read at once, before the live batches
    view.reset()
    view._draw_batches(reader, [0, 1, 2, 3, 4, 5])
    assert view.telemetry_pending()
    view._on_started(ev.Started(run_dir=str(run_dir), start_epoch=6, epochs=7, batches_per_epoch=4, device="cpu"))
    assert not view.telemetry_pending() and list(view.loss_series.x[:view.loss_series.n]) == want_x


def _wait_map(qtbot, map_view, epoch: int) -> None:
    """Wait for the UMAP map of ``epoch``; a timeout says what the map shows instead."""
    def done() -> bool:
        return (map_view.shown_epoch == epoch and map_view.layout is not None and map_view.layout.method == "umap"
                and not map_view.jobs.is_running(map_view._job_key))
    try:
        qtbot.waitUntil(done, timeout=180000)
    except Exception:
        raise AssertionError(f"no UMAP map of epoch {epoch}: shown {map_view.shown_epoch}, "
                             f"status {map_view.status.text()!r}") from None


def test_the_map_survives_continue_and_a_query_by_image_with_the_real_projection_process(qtbot, real_map, tmp_path,
                                                                                        run, trained):
    """Issue 15 item 1: after "Continue this run" (and a query by image while it trained) the map reported "the
    projection process ended unexpectedly" and never drew the last epoch. Here with the real child process."""
    from explorer.views.map.view import MapView
    from explorer.views.neighbours.view import NeighboursView

    settings = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    win = create_window(QApplication.instance(), settings=settings)
    qtbot.addWidget(win)
    win.show()
    try:
        map_view, neighbours = win.findChild(MapView), win.findChild(NeighboursView)
        assert map_view.projection_worker is not None  # the real child process, not a thread
        assert win.open_run(run)
        _wait_map(qtbot, map_view, 2)
        win.config_panel.epochs.setValue(4)
        queried = []

        def query_once(e) -> None:
            if not queried:
                queried.append(e.epoch)
                neighbours.query_file(next(Path(trained[1]).rglob("*.png")))

        win.controller.snapshot_ready.connect(query_once)
        # and the projection process dies under one of the maps of the continued epochs (the report's symptom,
        # whatever killed it there): that map is computed again in a fresh process, not lost
        killed = kill_under_request(map_view.projection_worker, 1)
        with qtbot.waitSignal(win.controller.stopped, timeout=120000) as stopped:
            assert win.continue_run() == run
        assert stopped.args[0].reason == "finished" and queried == [3]
        _wait_map(qtbot, map_view, 4)
        assert "Could not" not in map_view.status.text(), map_view.status.text()
        assert len(killed) == 1 and map_view.projection_worker.restarts == 1
        assert map_view.projection_worker.is_alive() and map_view.projection_worker.pid != killed[0]
        qtbot.waitUntil(lambda: neighbours.query is not None and neighbours.query.kind == "file", timeout=60000)
    finally:
        win.shutdown(20)


def test_the_log_follows_new_lines_unless_the_user_scrolled_up(qtbot, tmp_path):
    """Issue 15 item 15: from epoch 7 on, "Finished" had to be scrolled to."""
    state = AppState()
    view = TrainingView(state, TrainingController(state))
    qtbot.addWidget(view)
    view.resize(900, 600)
    bar = view.log_view.verticalScrollBar()
    view.hide()  # lines that arrive while the tab is hidden
    for i in range(400):
        view.append_log(f"line {i}")
    view.show()
    qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() == bar.maximum(), timeout=3000)
    for i in range(50):
        view.append_log(f"more {i}")
    assert bar.value() == bar.maximum()
    # the user scrolls up to read: new lines do not pull them away ...
    bar.setValue(0)
    view.append_log("while reading")
    assert bar.value() == 0
    # ... until they are back at the end
    bar.setValue(bar.maximum())
    view.append_log("Finished")
    assert bar.value() == bar.maximum() and view.log_view.toPlainText().endswith("Finished")


def test_the_map_follows_a_run_the_command_line_writes_with_the_real_projection_process(qtbot, real_map, tmp_path,
                                                                                       run, trained):
    """Issue 15 item 1, following: the command line continues the run while the window follows it."""
    import subprocess

    from explorer.views.map.view import MapView
    from tests.support import ROOT

    settings = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    win = create_window(QApplication.instance(), settings=settings)
    qtbot.addWidget(win)
    win.show()
    proc = None
    try:
        map_view = win.findChild(MapView)
        assert win.open_run(run)
        _wait_map(qtbot, map_view, 2)
        proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "train", str(trained[1]), "--out", str(run),
                                 "--resume", "--epochs", "4", "--quiet", "--device", "cpu"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        qtbot.waitUntil(lambda: proc.poll() is not None, timeout=180000)
        assert proc.returncode == 0, proc.stderr.read()
        qtbot.waitUntil(lambda: 4 in win.state.epochs, timeout=30000)
        if win.state.epoch != 4:
            win.state.set_epoch(4)
        _wait_map(qtbot, map_view, 4)
        assert "Could not" not in map_view.status.text() and map_view.projection_worker.is_alive()
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stderr.close()
        win.shutdown(20)
