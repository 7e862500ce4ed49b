"""The main window shell: start-up checks, settings, folder scan report, config checks, menus, drag and drop."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QLabel, QMessageBox

from explorer.app import (  # noqa: E402
    XCB_LIBRARIES,
    create_window,
    display_problem,
    missing_xcb_libraries,
    protect_none_refcount,
)
from tests.support import ROOT
from tests.support.images import make_class_folder  # noqa: E402

protect_none_refcount()  # shiboken6 6.12 on Python 3.11 drops a reference to None per void Qt call
from explorer.panels.config_panel import ConfigPanel
from explorer.settings import MAX_RECENT, SETTINGS_VERSION, Settings  # noqa: E402
from trainer.config import PRESETS, TrainConfig  # noqa: E402
from trainer.train.checks import config_problems


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


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def messages(monkeypatch) -> list[tuple[str, str, str]]:
    """Record QMessageBox calls instead of blocking on them."""
    got: list[tuple[str, str, str]] = []
    for kind in ("warning", "critical", "information", "about"):
        monkeypatch.setattr(QMessageBox, kind,
                            staticmethod(lambda parent, title, text, *a, _k=kind, **kw: got.append((_k, title, text))))
    return got


@pytest.fixture
def window(qtbot, settings, tmp_path):
    from PySide6.QtWidgets import QApplication

    win = create_window(QApplication.instance(), settings=settings)
    qtbot.addWidget(win)
    win.config_panel.set_runs_root(tmp_path / "runs")
    yield win
    win.shutdown(10)


@pytest.fixture
def folder(tmp_path) -> Path:
    root = make_class_folder(tmp_path / "data", n_classes=4, per_class=8, size=32)
    (root / "class_1" / "broken.png").write_bytes(b"this is not a png")
    return root


# ---- start-up ---------------------------------------------------------------------------------------------------
def test_missing_xcb_libraries_names_the_apt_packages():
    absent = {"libxcb-cursor.so.0", "libEGL.so.1"}

    def load(name):
        if name in absent:
            raise OSError(f"{name}: cannot open shared object file")
        return object()

    assert missing_xcb_libraries(load) == [("libxcb-cursor.so.0", "libxcb-cursor0"), ("libEGL.so.1", "libegl1")]
    msg = display_problem({"DISPLAY": ":0"}, platform="linux", load=load)
    assert "sudo apt-get install libegl1 libxcb-cursor0" in msg
    assert "libxcb-cursor.so.0" in msg
    assert display_problem({"DISPLAY": ":0"}, platform="linux", load=lambda n: object()) is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, platform="linux", load=load) is None
    assert display_problem({"DISPLAY": ":0"}, platform="win32", load=load) is None
    assert "DISPLAY" in display_problem({}, platform="linux", load=load)
    assert set(XCB_LIBRARIES.values()) >= {"libxcb-cursor0", "libxkbcommon-x11-0", "libegl1", "libgl1"}


def test_cycles_made_in_a_worker_thread_are_collected_on_the_gui_thread(qtbot, garbage_collected_in_the_gui_thread):
    """A worker thread that allocates past the collector's threshold must not collect there (a cycle holding a
    widget would be destroyed off the GUI thread, and Qt aborts): the GUI thread's timer collects it."""
    import gc
    import threading

    assert not gc.isenabled()
    seen: list[str] = []

    class Cycle:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            seen.append(threading.current_thread().name)

    def work() -> None:
        for _ in range(3 * gc.get_threshold()[0]):
            Cycle()

    worker = threading.Thread(target=work, name="worker")
    worker.start()
    worker.join()
    assert seen == []  # nothing was collected in the worker
    qtbot.waitUntil(lambda: len(seen) == 3 * gc.get_threshold()[0], timeout=10_000)
    assert set(seen) == {threading.main_thread().name}
    gc.enable()  # as the projection does after numba's compilation: the next tick turns it off again
    qtbot.waitUntil(lambda: not gc.isenabled(), timeout=10_000)


# ---- settings -----------------------------------------------------------------------------------------------------
def test_settings_recent_lists_are_deduplicated_capped_and_persist(tmp_path, settings):
    for i in range(MAX_RECENT + 3):
        settings.add_recent_folder(tmp_path / f"f{i}")
    settings.add_recent_folder(tmp_path / "f5")  # reopened: moves to the front, not duplicated
    folders = settings.recent_folders()
    assert folders[0] == str(tmp_path / "f5")
    assert len(folders) == MAX_RECENT and len(set(folders)) == MAX_RECENT
    settings.add_recent_run(tmp_path / "only-run")
    cfg = TrainConfig().replace(**{"optim.lr": 3e-4, "data.holdout_classes": ("a", "b")})
    settings.set_last_config(cfg)
    settings.sync()
    again = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    assert again.recent_folders() == folders
    assert again.recent_runs() == [str(tmp_path / "only-run")]  # a one-item list survives the INI round trip
    assert again.last_config() == cfg


def test_recent_runs_show_when_how_far_and_how_good_and_a_run_without_epochs_is_greyed(qtbot, tmp_path):
    """Issue 15 item 19: Recent runs listed a stopped run with no epochs, with no date, epoch count or metric."""
    from PySide6.QtCore import Qt

    from explorer.panels.start_page import StartPage

    good, empty = tmp_path / "good", tmp_path / "empty"
    _write_run(good, 3)
    _write_run(empty, 0)
    page = StartPage()
    qtbot.addWidget(page)
    page.set_recent([], [str(good), str(empty), str(tmp_path / "gone")])
    texts = [page.recent_runs.item(i).text() for i in range(3)]
    assert "epochs 0-2" in texts[0] and "20" in texts[0]  # the date it was last written
    assert "no epoch committed" in texts[1] and page.recent_runs.item(2).toolTip().endswith("(not found)")
    greys = [page.recent_runs.item(i).foreground().color() == Qt.GlobalColor.gray for i in range(3)]
    assert greys == [False, True, True]


def test_settings_of_another_version_are_dropped(tmp_path):
    q = QSettings(str(tmp_path / "old.ini"), QSettings.Format.IniFormat)
    q.setValue("version", SETTINGS_VERSION + 1)
    q.setValue("recent/folders", ["/somewhere"])
    q.setValue("train/last_config", "{not json")
    s = Settings(q)
    assert s.recent_folders() == [] and s.last_config() is None
    q.setValue("train/last_config", "{not json")
    assert s.last_config() is None  # unreadable config: defaults, no crash


# ---- data view ----------------------------------------------------------------------------------------------------
def test_open_folder_shows_counts_thumbnails_and_skipped_file(qtbot, window, folder):
    with qtbot.waitSignal(window.dataset_view.scan_finished, timeout=30000):
        window.open_folder(folder)
    view = window.dataset_view
    assert window.tabs.currentWidget() is view
    assert view.class_counts() == {f"class_{c}": 8 for c in range(4)}
    rows = view.skipped_rows()
    assert len(rows) == 1 and rows[0][0] == "class_1/broken.png" and rows[0][1]  # a reason is given
    assert view.issues.tabText(0) == "Skipped (1)"
    strip = view.classes_table.cellWidget(0, 2)
    pixmaps = [lab.pixmap() for lab in strip.findChildren(QLabel)]
    assert len(pixmaps) == 8 and not pixmaps[0].isNull()  # the folder has 8 per class
    assert window.settings.recent_folders()[0] == str(folder)
    # the scan reached the config panel: its class list feeds the held-out picker and the checks
    assert window.config_panel.holdout_list.count() == 4
    # issue 15 item 19: the Data tab marks the classes the next run holds out, the split the trainer makes
    from trainer.data.split import class_disjoint_split
    from trainer.store import SPLIT_HELDOUT

    cfg = window.config_panel.config()
    labels = np.arange(4)
    split = class_disjoint_split(labels, view.scan.classes, holdout_fraction=cfg.data.holdout_fraction, seed=cfg.seed)
    want = {view.scan.classes[i] for i in labels if split[i] == SPLIT_HELDOUT}
    shown = {view.classes_table.item(r, 0).text() for r in range(4) if view.classes_table.item(r, 3).text() == "held out"}
    assert shown == want and len(want) == 2
    window.grab().save(str(folder.parent / "data_view.png"))


def test_scan_error_names_the_folder_and_reason(qtbot, window, tmp_path):
    lonely = tmp_path / "one_class"
    make_class_folder(lonely, n_classes=1, per_class=3)
    with qtbot.waitSignal(window.dataset_view.scan_failed, timeout=30000) as blocker:
        window.open_folder(lonely)
    message = blocker.args[0]
    assert str(lonely) in message and "class" in message.lower()
    assert window.dataset_view.classes_table.rowCount() == 0


def test_a_folder_without_class_folders_lists_what_it_skipped_and_stays_out_of_recent(qtbot, window, tmp_path):
    """Issue 15 item 13: "12 skipped" came with an empty Skipped list, and the failed folder joined Recent."""
    flat = tmp_path / "flat"
    make_class_folder(tmp_path / "src", n_classes=2, per_class=3)
    flat.mkdir()
    for i, png in enumerate(sorted((tmp_path / "src").rglob("*.png"))):
        png.rename(flat / f"img_{i}.png")
    with qtbot.waitSignal(window.dataset_view.scan_failed, timeout=30000):
        window.open_folder(flat)
    rows = window.dataset_view.skipped_rows()
    assert sorted(r[0] for r in rows) == sorted(f"img_{i}.png" for i in range(6)), rows
    assert window.dataset_view.issues.tabText(0) == "Skipped (6)"
    assert str(flat) not in window.settings.recent_folders()


# ---- config panel -------------------------------------------------------------------------------------------------
def _valid_cfg(folder: Path) -> TrainConfig:
    return TrainConfig().replace(**{
        "data.data_dir": str(folder), "data.image_size": 32, "data.batch_classes": 2, "data.batch_per_class": 4,
        "data.holdout_fraction": 0.5, "model.backbone": "small_cnn", "model.pretrained": False,
        "loss.name": "triplet", "loss.miner": "none"})


def test_config_problems_explain_each_invalid_combination(folder):
    counts = {f"class_{c}": 8 for c in range(4)}  # 2 classes train, 2 held out
    ok = _valid_cfg(folder)
    assert config_problems(ok, counts) == []
    big = config_problems(ok.replace(**{"data.batch_classes": 2, "data.batch_per_class": 9}), counts)
    assert any("C x K = 2 x 9 = 18" in p and "16 training images" in p for p in big)
    assert any("K = 9" in p and "median 8" in p for p in big)
    too_many_c = config_problems(ok.replace(**{"data.batch_classes": 3}), counts)
    assert any("only 2 training classes" in p for p in too_many_c)
    miner = config_problems(ok.replace(**{"loss.name": "proxy_anchor", "loss.miner": "batch_hard"}), counts)
    assert any("miner" in p.lower() or "proxies" in p.lower() for p in miner), miner
    small = config_problems(ok.replace(**{"model.backbone": "resnet18", "data.image_size": 16}), counts)
    assert any("at least 32 px" in p for p in small)
    held = config_problems(ok.replace(**{"data.holdout_classes": ("class_0", "class_1", "class_2")}), counts)
    assert any("Only 1 training class" in p for p in held)
    assert config_problems(ok.replace(**{"data.data_dir": ""}), counts)[0].startswith("Open an image folder")


def test_config_panel_round_trips_a_config_and_applies_presets(qtbot, folder, tmp_path):
    panel = ConfigPanel()
    qtbot.addWidget(panel)
    cfg = _valid_cfg(folder).replace(**{"loss.params": {"margin": 0.2}, "data.num_workers": 0, "optim.lr": 3e-4,
                                        "data.holdout_classes": ("class_0", "class_3")})
    panel.set_config(cfg)
    assert panel.config() == cfg
    # issue 15 item 11: a run without mirroring shows its own unticked box ("Augment (flip, ...)" was ticked)
    for augment, flip in ((True, False), (True, True), (False, False)):
        other = cfg.replace(**{"data.augment": augment, "data.flip": flip})
        panel.set_config(other)
        assert panel.flip.isChecked() == flip and panel.flip.isEnabled() == augment
        assert panel.config() == other
    panel.set_config(cfg)
    # the loss parameters are widgets with their defaults shown; only changed values go into the config
    assert "margin" in panel._param_widgets
    name = "Quick look (CPU)"
    panel.apply_preset(name)
    got = panel.config()
    for key, value in PRESETS[name].items():
        part, field = key.split(".")
        assert getattr(getattr(got, part), field) == value, key
    assert got.data.data_dir == str(folder) and got.data.num_workers == 0  # data and hidden fields kept
    panel.embedding_dim.setValue(33)
    assert panel.preset_combo.currentText() == "Custom"


def test_a_preset_fits_its_classes_per_batch_to_the_folder(qtbot, tmp_path):
    """The digits demo keeps 5 training classes; "Quick look (CPU)" asks for C = 8 and must still start."""
    from trainer.data.scan import scan_folder

    data = make_class_folder(tmp_path / "six", n_classes=6, per_class=12, size=16)
    panel = ConfigPanel()
    qtbot.addWidget(panel)
    panel.set_config(_valid_cfg(data).replace(**{"data.holdout_fraction": 0.5, "data.batch_classes": 8}))
    panel.set_scan(scan_folder(data))
    assert panel.config().data.batch_classes == 3  # the scan fits the form's C to the folder too (the demo's case)
    panel.batch_classes.setValue(2)
    panel.set_runs_root(tmp_path / "runs")
    panel.apply_preset("Quick look (CPU)")
    assert PRESETS["Quick look (CPU)"]["data.batch_classes"] > 3
    assert panel.config().data.batch_classes == 3  # the 3 training classes left by holding half out
    assert panel.problems() == []


def test_start_with_problems_explains_before_starting(qtbot, window, messages):
    window.config_panel.set_config(TrainConfig())  # no folder opened
    assert window.start_training() is None
    assert not window.controller.is_running()
    kind, title, text = messages[-1]
    assert kind == "warning" and "Open an image folder" in text
    assert "Cannot start" in window.config_panel.problems_label.text()


# ---- menus, views, drag and drop, runs -----------------------------------------------------------------------------
def test_menus_shortcuts_and_add_view(qtbot, window, messages):
    assert window.open_folder_action.shortcut().toString() == "Ctrl+O"
    assert window.open_run_action.shortcut().toString() == "Ctrl+Shift+O"
    assert window.quit_action.shortcut().toString() == "Ctrl+Q"
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert titles[:4] == ["Start", "Data", "Train", "Map"]
    extra = QLabel("neighbours")
    index = window.add_view("Neighbours", extra)
    assert window.tabs.widget(index) is extra and window.view("Neighbours") is extra
    action = next(a for a in window.view_menu.actions() if a.text() == "Neighbours")
    action.trigger()
    assert window.tabs.currentWidget() is extra
    window.show_triplet_rules()
    assert "semi-hard" in messages[-1][2] and "d(a,p) + m" in messages[-1][2]


def test_dropping_a_folder_opens_it(qtbot, window, folder):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.dataset_view.scan_finished, timeout=30000):
        window.dropEvent(event)
    assert window.config_panel.config().data.data_dir == str(folder)


def _write_run(run_dir: Path, epochs: int) -> None:
    from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN, RunWriter, SampleTable

    n = 12
    samples = SampleTable(paths=[f"c{i % 3}/{i}.png" for i in range(n)], labels=np.arange(n) % 3,
                          split=np.where(np.arange(n) < 8, SPLIT_TRAIN, SPLIT_HELDOUT).astype(np.int8),
                          roots=[str(run_dir.parent)], root_index=np.zeros(n, dtype=np.int16))
    writer = RunWriter.create(run_dir, config=TrainConfig().to_dict(), classes=["c0", "c1", "c2"], samples=samples)
    rng = np.random.default_rng(0)
    for e in range(epochs):
        writer.write_epoch(e, rng.normal(size=(n, 4)).astype(np.float32), {"precision_at_1": 0.5 + e / 10})
    writer.close()


def test_open_run_sets_the_state_and_bad_runs_are_explained(qtbot, window, tmp_path, messages):
    run_dir = tmp_path / "runs" / "r1"
    _write_run(run_dir, 2)
    with qtbot.waitSignal(window.state.run_changed, timeout=5000):
        assert window.open_run(run_dir)
    assert window.state.epochs == [0, 1] and window.state.epoch == 1
    assert window.settings.recent_runs()[0] == str(run_dir)
    assert window.controller.following == run_dir
    # the stored metric history is drawn
    assert window.training_view._metric_series["precision_at_1"].n == 2
    bogus = tmp_path / "not_a_run"
    bogus.mkdir()
    assert not window.open_run(bogus)
    assert messages[-1][0] == "critical" and str(bogus) in messages[-1][2]


def test_a_large_run_is_read_off_the_gui_thread(qtbot, window, tmp_path, messages, monkeypatch):
    """Issue 16 item 4: a sample table of a million paths took 1.3 s of the GUI thread to read; from
    OPEN_IN_BACKGROUND_BYTES on, the run is read in a job and shown when it is read (a damaged one is explained)."""
    import threading

    import explorer.main_window as mw
    from trainer import store

    run_dir = tmp_path / "runs" / "big"
    _write_run(run_dir, 2)
    monkeypatch.setattr(mw, "OPEN_IN_BACKGROUND_BYTES", 1)  # every run counts as large here
    threads = []
    real_init = store.RunReader.__init__

    def spy(self, *a, **k):
        threads.append(threading.current_thread() is threading.main_thread())
        real_init(self, *a, **k)

    monkeypatch.setattr(store.RunReader, "__init__", spy)
    with qtbot.waitSignal(window.state.run_changed, timeout=10000):
        assert window.open_run(run_dir)
        assert window.state.run is None and "Opening the run" in window.status_label.text()
    assert threads == [False]  # read in the job's thread
    assert window.state.epochs == [0, 1] and window.controller.following == run_dir
    assert window.settings.recent_runs()[0] == str(run_dir)
    broken = tmp_path / "runs" / "broken"
    _write_run(broken, 1)
    (broken / "manifest.json").write_text("{not json")
    assert window.open_run(broken)  # started; the failure arrives from the job
    qtbot.waitUntil(lambda: bool(messages) and messages[-1][0] == "critical", timeout=10000)
    assert str(broken) in messages[-1][2] and window.state.run.run_dir == run_dir  # the open run stays


def test_the_status_bar_names_the_run_that_is_open_and_a_damaged_manifest_is_named(qtbot, window, tmp_path,
                                                                                 messages):
    """Issue 15 items 3 and 4: run B opened after run A is called B (A's name stayed before); a run opened
    straight away is called by its folder ("Run: run" before); a manifest that cannot be read is named as such,
    not scanned as an image folder; an earlier message leaves the status line."""
    a, b = tmp_path / "runs" / "alpha", tmp_path / "runs" / "beta"
    _write_run(a, 1)
    _write_run(b, 1)
    window.show_status("Could not scan /somewhere: need at least two class sub-folders")
    assert window.open_run(a)
    assert window.run_label.text().startswith("Run: alpha") and "alpha" in window.windowTitle()
    assert "Could not scan" not in window.status_label.text()
    assert window.open_run(b)
    assert window.run_label.text().startswith("Run: beta") and "beta" in window.windowTitle()
    (b / "manifest.json").write_text("{ not json")
    messages.clear()
    window.open_path(b)
    assert messages and messages[-1][0] == "critical" and "manifest" in messages[-1][2]
    assert "need at least two class" not in window.status_label.text()


def test_run_app_explains_a_missing_display_instead_of_crashing(monkeypatch, capsys):
    from explorer.app import run_app

    for var in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert run_app(["embedding-explorer"]) == 1
    err = capsys.readouterr().err
    assert "DISPLAY is not set" in err and "python main.py train" in err


def test_main_py_compare_opens_the_runs_side_by_side(qtbot, monkeypatch, tmp_path):
    """``python main.py --compare RUN_A RUN_B``: the window comes up with Compare runs holding those runs."""
    import main as cli
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    import explorer.app as app_module

    real_create = app_module.create_window
    made = []

    def create(app, **kw):
        kw["settings"] = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
        made.append(real_create(app, **kw))
        return made[-1]

    def event_loop(_app) -> int:  # until the dialog is up
        qtbot.waitUntil(lambda: bool(made) and getattr(made[-1], "_compare_dialog", None) is not None, timeout=10000)
        return 0

    monkeypatch.setattr(app_module, "create_window", create)
    monkeypatch.setattr(QApplication, "exec", event_loop)
    assert cli.main(["--compare", str(tmp_path / "run-a"), str(tmp_path / "run-b")]) == 0
    dialog = made[-1]._compare_dialog
    assert dialog.paths() == [str(tmp_path / "run-a"), str(tmp_path / "run-b")]
    dialog.done(0)
    made[-1].shutdown(10)


def test_many_void_qt_calls_do_not_exhaust_none(tmp_path):
    """shiboken6 6.12 + Python 3.11: each void Qt call drops a reference to None; the guard must outlast that."""
    import subprocess

    code = ("import sys\nfrom PySide6.QtCore import QObject\n"
            "n = max(sys.getrefcount(None), sys.getrefcount(True)) + 10_000  # enough to crash without the guard\n"
            "from explorer.app import protect_none_refcount; protect_none_refcount()\n"
            "o = QObject()\n"
            "for _ in range(n): o.setObjectName('x'); o.signalsBlocked()\n"
            "print('ok', n)\n")
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")


def test_preloading_loads_the_census_kernels_before_the_window_shows():
    """numba loads the census kernels under the GIL (~0.4 s): the window does it at start, not in its first census."""
    import subprocess

    code = ("from explorer.app import preload_modules; from trainer.analysis import census as t; "
            "before = len(t._count_chunk.signatures); failed = preload_modules(('trainer.analysis.census',)); "
            "print(before, len(t._count_chunk.signatures), failed)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(ROOT))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:2] == ["0", "1"] and out.stdout.strip().endswith("[]")


def test_a_long_file_path_never_widens_the_window_and_a_saved_size_fits_the_screen(qtbot, real_map, tmp_path, run,
                                                                                 trained):
    """Issue 15 item 7: a query with a long file path widened the window (1280 -> 1343 px, measured here 1780),
    and the wider size was saved and restored at the next launch."""
    import shutil

    from PySide6.QtWidgets import QApplication

    from explorer.views.neighbours.view import NeighboursView

    settings = Settings(QSettings(str(tmp_path / "w.ini"), QSettings.Format.IniFormat))
    win = create_window(QApplication.instance(), settings=settings)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    try:
        assert win.open_run(run)
        long = tmp_path / ("a_very_long_folder_name_" * 6) / ("an_image_with_a_long_name_" * 4 + ".png")
        long.parent.mkdir(parents=True)
        shutil.copy(next(Path(trained[1]).rglob("*.png")), long)
        neighbours = win.findChild(NeighboursView)
        widths = []
        win.show_view("Map")
        neighbours.query_file(long)
        qtbot.waitUntil(lambda: (widths.append(win.width()) or True)
                        and neighbours.query_label.text().startswith("Query:"), timeout=60000)
        assert max(widths) == 1280 and win.width() == 1280
        assert win.minimumSizeHint().width() <= 1280
        assert str(long) in neighbours.query_label.text()
        win.show_status(f"Opened the run {long}")  # a long status line is clipped, not a wider window
        qtbot.wait(50)
        assert win.width() == 1280
    finally:
        win.shutdown(10)
    # a saved geometry wider than the screen is brought back inside it
    big = create_window(QApplication.instance(), settings=settings)
    qtbot.addWidget(big)
    big.resize(5000, 3000)
    settings.set_window_geometry(big.saveGeometry())
    big.shutdown(5)
    again = create_window(QApplication.instance(), settings=settings)
    qtbot.addWidget(again)
    area = again.screen().availableGeometry()
    assert again.width() <= area.width() and again.height() <= area.height()
    again.shutdown(5)


def test_long_paths_get_break_opportunities_and_nothing_else_changes():
    from explorer.widgets.texts import ZERO_WIDTH_SPACE, breakable

    path = "/home/someone/" + "a_very_long_folder_name_" * 4 + "/image.png"
    out = breakable(f"Query: image file {path}<br>class <b>x</b>")
    assert out.replace(ZERO_WIDTH_SPACE, "") == f"Query: image file {path}<br>class <b>x</b>"
    assert out.count(ZERO_WIDTH_SPACE) >= 8
    assert "<br>" in out and "<b>" in out and "</b>" in out  # tags stay whole
    assert breakable("a short_word here") == "a short_word here"


def test_the_app_shows_its_window_before_the_heavy_libraries_finish_loading(tmp_path):
    """Issue 15 item 20: the first launch was a black screen while PyTorch, faiss and numba loaded. The window
    now shows first and they load in the background (bench/startup.py measures how long each takes)."""
    import json
    import os
    import subprocess
    import time

    probe = tmp_path / "probe.json"
    env = dict(os.environ, EMBEDDING_EXPLORER_STARTUP_PROBE=str(probe), EMBEDDING_EXPLORER_T0=repr(time.time()),
               XDG_CONFIG_HOME=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    res = subprocess.run([sys.executable, str(ROOT / "main.py")], env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    times = json.loads(probe.read_text())
    assert 0 < times["shown_s"] <= times["ready_s"]
