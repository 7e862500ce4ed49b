"""The main window: tabs for Start, Data, Train, Map and the analysis views, menus, drag and drop, status bar.

It wires the pieces (AppState, TrainingController, JobRunner, Settings) and acts on requests; the views only
talk to the shared state.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (QApplication, QFileDialog, QLabel, QMainWindow, QMenu, QMessageBox, QSplitter,
                               QTabWidget, QWidget)

from explorer.panels.config_panel import ConfigPanel
from explorer.views.dataset.view import DatasetView
from explorer.jobs import JobRunner
from explorer.settings import Settings
from explorer.panels.start_page import StartPage
from explorer.state import AppState
from explorer.training import TrainingController
from explorer.views.training.view import TrainingView
from explorer.widgets.labels import shrinkable

APP_TITLE = "Embedding Explorer"
DEMO_JOB = "demo-folder"
OPEN_RUN_JOB = "open-run"
OPEN_IN_BACKGROUND_BYTES = 8 * 2**20  # a sample table this large (~250k images) is read off the GUI thread
RECIPE_FACTS_JOB = "recipe-facts"
WEIGHTS_JOB = "weights-probe"
ESTIMATE_JOB = "epoch-estimate"

TRIPLET_RULES = (
    "<p>For an anchor <i>a</i>, a positive <i>p</i> (same class) and a negative <i>n</i> (another class), with "
    "<i>d</i> the distance and <i>m</i> the margin (pytorch-metric-learning's rules):</p>"
    "<ul>"
    "<li><b>easy</b>: d(a,n) &gt; d(a,p) + m — already well separated; contributes no loss.</li>"
    "<li><b>semi-hard</b>: d(a,p) &lt; d(a,n) ≤ d(a,p) + m — right order, inside the margin.</li>"
    "<li><b>hard</b>: d(a,n) ≤ d(a,p) — the negative is nearer than the positive.</li>"
    "</ul>"
    "<p>With cosine similarity the comparison is made on the distance 1 − cos.</p>"
)


def new_run_dir(runs_root: Path, data_dir: str | Path) -> Path:
    """``<runs_root>/<folder-name>-<YYYYmmdd-HHMMSS>``, made unique if that name is taken."""
    stem = f"{Path(data_dir).name or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(runs_root) / stem
    n = 2
    while path.exists():
        path = Path(runs_root) / f"{stem}-{n}"
        n += 1
    return path


def _looks_like_run(path: Path) -> bool:
    from trainer.store import looks_like_run

    return looks_like_run(path)


def _recipe_facts_job(paths: list[str], progress=None, partial=None, is_cancelled=None):
    """(device type, median short side, grayscale share) of a scanned folder, for the form's recipe."""
    from trainer.model.device import pick_device
    from trainer.train.recipe import image_facts

    side, gray = image_facts(paths)
    return pick_device("auto").type, side, gray


def _weights_job(model_cfg, progress=None, partial=None, is_cancelled=None):
    from trainer.model.backbones import probe_weights

    ok, why = probe_weights(model_cfg)
    if not ok and "(" in why:  # the short reason: "URLError: ..." is enough under the form
        why = "ImageNet weights unavailable: " + why.split("(", 1)[1].rstrip(")").split(":")[0]
    return model_cfg.backbone, ok, why


def _estimate_job(cfg, n_train: int, n_all: int, device: str, n_classes: int, progress=None, partial=None,
                  is_cancelled=None) -> str:
    from trainer.train.recipe import describe_estimate, estimate_epoch_seconds

    return describe_estimate(*estimate_epoch_seconds(cfg, n_train, n_all, device, n_classes), device,
                             cfg.optim.epochs)


def _open_run_job(path: str, *, progress, partial, is_cancelled):
    from trainer.store import RunReader

    progress(0.2, f"reading the sample table of {Path(path).name}")
    return RunReader(path)


def _demo_job(*, progress, partial, is_cancelled) -> Path:
    from trainer.data.demo import ensure_demo_folder

    progress(0.0, "preparing the demo images")
    return ensure_demo_folder()


class MainWindow(QMainWindow):
    """Embedding Explorer's window; ``add_view(title, widget)`` lets later analysis views slot in as tabs."""

    def __init__(self, state: AppState | None = None, settings: Settings | None = None, *,
                 controller: TrainingController | None = None, jobs: JobRunner | None = None) -> None:
        super().__init__()
        self.setWindowTitle(APP_TITLE)
        self.setAcceptDrops(True)
        self.state = state or AppState(self)
        self.settings = settings or Settings()
        self.jobs = jobs or JobRunner(self, max_threads=2)  # the window's own: demo folder, recipe facts, weights
        self.controller = controller or TrainingController(self.state, self)
        self._views: dict[str, QWidget] = {}
        self._closing = False

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.setCentralWidget(self.tabs)
        self.start_page = StartPage()
        self.dataset_view = DatasetView()
        self.config_panel = ConfigPanel()
        self.training_view = TrainingView(self.state, self.controller)
        train = QSplitter(Qt.Orientation.Horizontal)
        train.addWidget(self.config_panel)
        train.addWidget(self.training_view)
        train.setStretchFactor(1, 1)
        train.setSizes([480, 800])
        self.train_page = train
        self._build_menus()
        self.add_view("Start", self.start_page)
        self.add_view("Data", self.dataset_view)
        self.add_view("Train", train)
        from explorer.widgets.thumbnails import ThumbnailCache
        from explorer.views.neighbours.view import NeighboursView
        from explorer.views.threshold.view import ThresholdView
        from explorer.views.triplets.view import TripletsView

        self.thumbnails = ThumbnailCache(self)
        self.map_view = self._make_map_view()
        self.neighbours_view = NeighboursView(self.state, thumbnails=self.thumbnails)
        explore = QSplitter(Qt.Orientation.Horizontal)  # the map and the neighbours of what is clicked in it
        explore.addWidget(self.map_view)
        explore.addWidget(self.neighbours_view)
        explore.setStretchFactor(0, 3)
        explore.setStretchFactor(1, 2)
        explore.setSizes([900, 480])
        self.explore_page = explore
        self.add_view("Map", explore)
        self.triplets_view = TripletsView(self.state, thumbnails=self.thumbnails)
        self.triplets_view.defer_while_hidden = True  # computed when its tab is shown, not for every epoch
        self.add_view("Triplets", self.triplets_view)
        self.threshold_view = ThresholdView(self.state, thumbnails=self.thumbnails)
        self.threshold_view.defer_while_hidden = True
        self.add_view("Threshold", self.threshold_view)
        from explorer.panels.edits_panel import EditsPanel

        self.edits_panel = EditsPanel(self.state, self.curate, self.thumbnails)
        self.add_view("Edits", self.edits_panel)

        self.status_label = shrinkable(QLabel(""), wrap=False)  # a long path is clipped, not a wider window
        self.statusBar().addWidget(self.status_label, 1)
        self.run_label = QLabel("No run open")
        self.statusBar().addPermanentWidget(self.run_label)

        # wiring
        self.start_page.open_folder_requested.connect(self.ask_open_folder)
        self.start_page.open_run_requested.connect(self.ask_open_run)
        self.start_page.open_demo_requested.connect(self.open_demo)
        self.start_page.open_path_requested.connect(self.open_path)
        self.dataset_view.scan_finished.connect(self._on_scan_finished)
        self.dataset_view.scan_failed.connect(self._on_scan_failed)
        self.training_view.start_requested.connect(self.start_training)
        self.training_view.continue_requested.connect(self.continue_run)
        self.controller.running_changed.connect(self._on_running_changed)
        self.controller.failed.connect(lambda e: self.show_status(f"Training failed: {e.message}"))
        self.controller.stopped.connect(lambda e: self.show_status("Training ended"))
        self.controller.epoch_done.connect(lambda e: self.show_status(f"Epoch {e.epoch} done"))
        self.state.run_changed.connect(self._on_run_changed)
        self.state.epoch_changed.connect(self._on_epoch_changed)

        cfg = self.settings.last_config()
        if cfg is not None:
            # the last form comes back (folder, split, epochs, runs folder); what the recipe chooses is chosen
            # again for the folder that is opened next
            from trainer.config import PRESETS
            from trainer.train.recipe import RECIPE_KEYS

            preset = PRESETS.get(self.settings.last_preset() or "", {})
            self.config_panel.set_config(cfg.replace(auto=tuple(k for k in RECIPE_KEYS if k not in preset)))
            if self.settings.last_preset():
                self.config_panel.preset_combo.blockSignals(True)
                self.config_panel.preset_combo.setCurrentText(self.settings.last_preset())
                self.config_panel.preset_combo.blockSignals(False)
        self.config_panel.set_runs_root(self.settings.runs_root())
        self.config_panel.preset_applied.connect(self.settings.set_last_preset)
        self.config_panel.lr_find_requested.connect(self.find_learning_rate)
        self.config_panel.open_folder_requested.connect(self.ask_open_folder)
        self.config_panel.backbone.currentIndexChanged.connect(self._probe_weights)
        self.config_panel.pretrained.toggled.connect(self._probe_weights)
        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(1200)
        self._estimate_timer.timeout.connect(self._estimate_epoch)
        self.config_panel.changed.connect(self._on_config_changed)
        self._refresh_recent()
        geometry = self.settings.window_geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
            self._fit_to_screen()  # a size saved on a larger screen (or grown by a bug) is not restored as is
        else:
            self.resize(1280, 820)
            self._fit_to_screen()

    def _fit_to_screen(self) -> None:
        """Keep the window inside the available area of its screen."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is None:
            return
        area = screen.availableGeometry()
        frame = self.frameGeometry().size() - self.geometry().size()  # the window manager's decorations
        w = min(self.width(), max(640, area.width() - frame.width()))
        h = min(self.height(), max(480, area.height() - frame.height()))
        if (w, h) != (self.width(), self.height()):
            self.resize(w, h)

    # ---- views ------------------------------------------------------------------------------------------------
    def _make_map_view(self) -> QWidget:
        from explorer.views.map.view import MapView

        # the map owns its job runner and its projection process; the window shuts them down when it closes
        return MapView(self.state, thumbnails=self.thumbnails)

    def add_view(self, title: str, widget: QWidget) -> int:
        """Add ``widget`` as a tab called ``title`` (with a View-menu entry and Ctrl+<n> for the first nine)."""
        index = self.tabs.addTab(widget, title)
        self._views[title] = widget
        action = QAction(title, self)
        if index < 9:
            action.setShortcut(QKeySequence(f"Ctrl+{index + 1}"))
        action.triggered.connect(lambda _=False, w=widget: self.tabs.setCurrentWidget(w))
        self.view_menu.insertAction(self._view_separator, action)
        return index

    def view(self, title: str) -> QWidget | None:
        """The tab widget called ``title`` (None if absent)."""
        return self._views.get(title)

    def show_view(self, title: str) -> None:
        widget = self._views.get(title)
        if widget is not None:
            self.tabs.setCurrentWidget(widget)

    # ---- menus ------------------------------------------------------------------------------------------------
    def _action(self, menu: QMenu, text: str, slot, shortcut: str | QKeySequence.StandardKey | None = None,
                tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(lambda _=False: slot())
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self.open_folder_action = self._action(file, "Open &folder…", self.ask_open_folder, "Ctrl+O",
                                               "Open an image folder with one sub-folder per class")
        self.open_run_action = self._action(file, "Open &run…", self.ask_open_run, "Ctrl+Shift+O",
                                            "Open a training run folder (also one the command line is writing)")
        self.open_demo_action = self._action(file, "Open &demo", self.open_demo, None,
                                             "The built-in digits demo folder")
        self.recent_menu = file.addMenu("Recent")
        file.addSeparator()
        self.sweep_action = self._action(file, "Compare &losses (sweep)…", self.open_sweep_dialog, "Ctrl+L",
                                         "Train several losses with their recipes on the same split and budget, "
                                         "several seeds each, and compare their held-out MAP@R")
        self.lr_find_action = self._action(file, "Find a learning &rate…", self.find_learning_rate, None,
                                           "Learning-rate range test on the form's folder and model")
        self.compare_action = self._action(file, "Compare r&uns…", self.open_compare_dialog, "Ctrl+Shift+K",
                                           "Several runs or a sweep side by side, with intervals over the held-out "
                                           "classes (main.py compare)")
        file.addSeparator()
        from explorer.panels.exports import ExportActions

        self.exports = ExportActions(self)
        self.exports.add_to(file)
        file.addSeparator()
        self.quit_action = self._action(file, "&Quit", self.close, "Ctrl+Q")
        from explorer.panels.curate import CurateActions

        self.curate = CurateActions(self)
        self.curate.add_to(bar.addMenu("&Edit"))
        self.view_menu = bar.addMenu("&View")
        self._view_separator = self.view_menu.addSeparator()
        self._action(self.view_menu, "Full screen", self._toggle_full_screen, "F11")
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "Triplet rules (easy / semi-hard / hard)", self.show_triplet_rules, None,
                     "How triplets are classified (pytorch-metric-learning's rules)")
        self._action(help_menu, "&About", self.show_about)

    def _toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    def _refresh_recent(self) -> None:
        folders, runs = self.settings.recent_folders(), self.settings.recent_runs()
        self.start_page.set_recent(folders, runs)
        self.recent_menu.clear()
        for label, paths in (("Folders", folders), ("Runs", runs)):
            if not paths:
                continue
            self.recent_menu.addSection(label)
            for p in paths:
                a = self.recent_menu.addAction(p)
                a.triggered.connect(lambda _=False, p=p: self.open_path(p))
        if not folders and not runs:
            self.recent_menu.addAction("(none yet)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            clear = self.recent_menu.addAction("Clear recent")
            clear.triggered.connect(lambda _=False: (self.settings.clear_recent(), self._refresh_recent()))

    def show_about(self) -> None:
        from trainer import __version__

        QMessageBox.about(self, f"About {APP_TITLE}",
                          f"<h3>{APP_TITLE} {__version__}</h3><p>Deep metric learning on your own image folders: "
                          "train, watch the embedding space form, inspect mining and pick a verification "
                          "threshold.</p><p>Built on PyTorch, pytorch-metric-learning, faiss, UMAP, PySide6 and "
                          "pyqtgraph.</p>")

    def show_triplet_rules(self) -> None:
        QMessageBox.information(self, "Triplet rules", TRIPLET_RULES)

    def show_status(self, text: str) -> None:
        self.status_label.setText(text)
        self.status_label.setToolTip("")  # a tooltip of what was said before does not stay

    # ---- opening things ---------------------------------------------------------------------------------------
    def ask_open_folder(self) -> None:
        recent = self.settings.recent_folders()
        path = QFileDialog.getExistingDirectory(self, "Open an image folder (one sub-folder per class)",
                                                recent[0] if recent else "")
        if path:
            self.open_folder(path)

    def ask_open_run(self) -> None:
        recent = self.settings.recent_runs()
        path = QFileDialog.getExistingDirectory(self, "Open a run folder",
                                                recent[0] if recent else str(self.config_panel.runs_root_path()))
        if path:
            self.open_run(path)

    def open_path(self, path: str | Path) -> None:
        """Open ``path`` as a run if it is one, otherwise as an image folder."""
        path = Path(path)
        if not path.is_dir():
            QMessageBox.warning(self, APP_TITLE, f"{path} is not a folder (or no longer exists).")
            return
        self.open_run(path) if _looks_like_run(path) else self.open_folder(path)

    def open_folder(self, path: str | Path) -> None:
        """Scan an image folder in the background and make it the training data."""
        path = Path(path).expanduser()
        self.config_panel.set_data_dir(path)
        self.dataset_view.open_folder(path)
        self.show_view("Data")
        self.show_status(f"Scanning {path} …")

    def open_run(self, path: str | Path) -> bool:
        """Open a run folder read-only (and follow it, in case the command line is still writing it)."""
        path = Path(path).expanduser()
        if self.controller.is_running():
            QMessageBox.warning(self, APP_TITLE, "Stop the training run before opening another run.")
            return False
        try:
            size = (path / "samples.h5").stat().st_size
        except OSError:
            size = 0
        if size >= OPEN_IN_BACKGROUND_BYTES:  # a million paths take ~1.3 s to read: not on the GUI thread
            self.show_status(f"Opening the run {path} (a sample table of {size / 2**20:.0f} MB) …")
            self.jobs.submit(OPEN_RUN_JOB, _open_run_job, str(path),
                             on_result=lambda reader, path=path: self._adopt_run(reader, path),
                             on_failed=lambda message, path=path: self._open_failed(path, message.splitlines()[0]))
            return True
        try:
            from trainer.store import RunReader

            reader = RunReader(path)
        except Exception as exc:
            self._open_failed(path, str(exc))
            return False
        self._adopt_run(reader, path)
        return True

    def _open_failed(self, path: Path, message: str) -> None:
        QMessageBox.critical(self, APP_TITLE, f"Could not open the run {path}:\n{message}")
        self.show_status(f"Could not open the run {path.name}")

    def _adopt_run(self, reader, path: Path) -> None:
        """Show a run that was read (on the GUI thread or in a job)."""
        if self.controller.is_running():  # training started while a large run was being read
            self.show_status(f"Did not open {path.name}: a training run started meanwhile")
            return
        self.show_status(f"Opened the run {path}")  # replaces a message about what was open before
        self.controller.note_run_opened(path)
        try:  # show the run's configuration on the left, so "Continue this run" and a rerun start from it
            from trainer.config import TrainConfig

            self.config_panel.set_config(TrainConfig.from_dict(reader.config))
        except Exception as exc:  # an older or hand-edited config: the run still opens
            self.training_view.append_log(f"The run's configuration could not be shown: {exc}", "warning")
        self.state.set_run(reader)
        self.controller.follow(path)
        self.settings.add_recent_run(path)
        self._refresh_recent()
        self.show_view("Map")
        messages = list(getattr(reader, "messages", []) or [])
        for message in messages:
            self.training_view.append_log(message, "warning")
        if messages:  # the log is on the Train tab: the status line says that something was left out, and what
            more = f" (and {len(messages) - 1} more; the Train tab's log lists them)" if len(messages) > 1 else ""
            self.show_status(f"Opened the run {path} · {messages[0]}{more}")
            self.status_label.setToolTip("\n".join(messages))

    def open_demo(self) -> None:
        """Build (once) and open the digits demo folder; the building runs in the background."""
        self.show_status("Preparing the demo folder …")
        self.jobs.submit(DEMO_JOB, _demo_job, on_result=self.open_folder, on_failed=self._on_demo_failed)

    def _on_image_facts(self, result) -> None:
        device, side, gray = result
        self.config_panel._device = device
        self.config_panel.set_image_facts(side, gray)

    def _on_demo_failed(self, message: str) -> None:
        QMessageBox.critical(self, APP_TITLE, f"Could not prepare the demo folder:\n{message.splitlines()[0]}")

    @Slot(object)
    def _on_scan_finished(self, scan) -> None:
        self.settings.add_recent_folder(self.dataset_view.root or scan.root)  # only a folder that can be trained on joins Recent
        self._refresh_recent()
        self.config_panel.set_scan(scan)
        self._show_split()
        self.jobs.submit(RECIPE_FACTS_JOB, _recipe_facts_job, [str(scan.abspath(i)) for i in range(len(scan.paths))],
                         on_result=self._on_image_facts)
        self._probe_weights()
        self._estimate_timer.start()
        self.show_status(f"{len(scan.paths)} images in {len(scan.classes)} classes, {len(scan.skipped)} skipped")

    @Slot()
    def _probe_weights(self, *_) -> None:
        """Find out (downloading them if need be) whether the form's backbone weights can be loaded."""
        from trainer.config import TrainConfig

        cfg = self.config_panel.config()
        model = cfg.model
        if "model.backbone" in cfg.auto:  # the recipe picks the backbone from whether the default's weights load
            model = model.__class__(**{**model.__dict__, "backbone": TrainConfig().model.backbone})
        if model.pretrained and model.weights_file is None and model.backbone not in \
                self.config_panel._weights_status:
            self.jobs.submit(WEIGHTS_JOB, _weights_job, model,
                             on_result=lambda result: self.config_panel.set_weights_status(*result))

    @Slot(str)
    def _on_scan_failed(self, message: str) -> None:
        self.show_status(message)

    @Slot()
    def _on_config_changed(self) -> None:
        self._show_split()
        if self.config_panel.facts() is not None and not self.controller.is_running():
            self.config_panel.set_estimate("Estimating the time per epoch …")
            self._estimate_timer.start()

    def _show_split(self) -> None:
        """Mark in the Data tab the classes the form's settings hold out (the split the trainer will make)."""
        scan = self.dataset_view.scan
        if scan is None:
            return
        from trainer.data.split import held_out_classes

        cfg = self.config_panel.config()
        d = cfg.data
        if d.test_dir:
            self.dataset_view.set_held_out(set(), f"the held-out classes come from the test folder {d.test_dir}")
            return
        self.dataset_view.set_held_out(held_out_classes(
            list(scan.classes), holdout_fraction=d.holdout_fraction, holdout_classes=d.holdout_classes,
            seed=cfg.seed))

    @Slot()
    def _estimate_epoch(self) -> None:
        facts = self.config_panel.facts()
        counts = self.config_panel._class_counts
        if facts is None or not counts or self.controller.is_running():
            return
        cfg = self.config_panel.config()
        if self.config_panel.problems():
            self.config_panel.set_estimate("")
            return
        n_train = facts.images_per_class * facts.n_train_classes
        self.jobs.submit(ESTIMATE_JOB, _estimate_job, cfg, n_train, int(sum(counts.values())), facts.device,
                         max(2, facts.n_train_classes), on_result=self.config_panel.set_estimate)

    @Slot()
    def open_sweep_dialog(self) -> None:
        """Compare losses on the form's folder: one run per loss and seed under the runs folder."""
        from explorer.dialogs.sweep import SweepDialog

        problems = self.config_panel.problems()
        if problems or self.controller.is_running():
            QMessageBox.warning(self, APP_TITLE, "Stop the training run first." if self.controller.is_running() else
                                "Fix the configuration first:\n\n" + "\n".join(f"• {p}" for p in problems))
            return
        cfg = self.config_panel.config()
        out = new_run_dir(self.config_panel.runs_root_path(), "sweep-" + Path(cfg.data.data_dir).name)
        dialog = SweepDialog(cfg, out, self)
        dialog.run_finished.connect(lambda path: (self.settings.add_recent_run(path), self._refresh_recent()))
        dialog.open()
        self._sweep_dialog = dialog

    @Slot()
    def open_compare_dialog(self, paths=None):
        """File > Compare runs: starts with the open run (and the given paths)."""
        from explorer.dialogs.compare import CompareDialog

        first = [str(self.state.run.run_dir)] if self.state.run is not None else []
        dialog = CompareDialog(self.jobs, self, paths=first + [str(p) for p in (paths or [])])
        dialog.show()  # not exec(): the window keeps working
        self._compare_dialog = dialog
        return dialog

    def find_learning_rate(self) -> None:
        """Open the learning-rate range test for the form's configuration."""
        from explorer.dialogs.lr_find import LRFindDialog

        if self.config_panel.problems():
            QMessageBox.warning(self, APP_TITLE, "Fix the configuration first:\n\n" + "\n".join(
                f"• {p}" for p in self.config_panel.problems()))
            return
        dialog = LRFindDialog(self.config_panel.config(), self)
        dialog.applied.connect(self.config_panel.apply_learning_rate)
        dialog.open()
        self._lr_dialog = dialog

    # ---- training ---------------------------------------------------------------------------------------------
    @Slot()
    def start_training(self) -> Path | None:
        """Check the configuration, explain what is wrong, or start a new run; returns its folder."""
        if self.controller.is_running():
            return None
        if self.dataset_view.is_scanning():
            QMessageBox.information(self, APP_TITLE, "The folder is still being scanned; start when it is done.")
            return None
        problems = self.config_panel.refresh_problems()
        if problems:
            QMessageBox.warning(self, "Cannot start training",
                                "Please fix these first:\n\n" + "\n".join(f"• {p}" for p in problems))
            return None
        cfg = self.config_panel.config()
        runs_root = self.config_panel.runs_root_path()
        run_dir = new_run_dir(runs_root, cfg.data.data_dir)
        self.settings.set_last_config(cfg)
        self.settings.set_runs_root(runs_root)
        self.settings.add_recent_run(run_dir)
        self._refresh_recent()
        self.training_view.reset()
        self.training_view.append_log(f"New run: {run_dir}")
        self.controller.start(cfg, run_dir)
        self.show_view("Train")
        return run_dir

    @Slot()
    def continue_run(self) -> Path | None:
        """Train the opened run further from its last checkpoint (its own configuration; Epochs from the left)."""
        from trainer.config import TrainConfig
        from trainer.store import run_in_training

        run = self.state.run
        if run is None or self.controller.is_running():
            return None
        run_dir = Path(run.run_dir)
        holder = run_in_training(run_dir)
        if holder:
            QMessageBox.information(self, APP_TITLE, f"This run is being trained by {holder}.\n\nThe window follows "
                                    f"it live; continue it here once that training has ended.")
            return None
        if not run.checkpoints:
            QMessageBox.warning(self, APP_TITLE, f"{run_dir} has no checkpoint to continue from.")
            return None
        last = run.checkpoints[-1]
        wanted = self.config_panel.config()
        if wanted.optim.epochs <= last:
            QMessageBox.information(self, APP_TITLE, f"The run has trained {last} epochs and Epochs on the left "
                                    f"is {wanted.optim.epochs}.\n\nRaise Epochs above {last} to train it further.")
            self.show_view("Train")
            return None
        try:
            saved = TrainConfig.from_dict(run.config)
        except Exception as exc:
            QMessageBox.critical(self, APP_TITLE, f"Cannot continue {run_dir}: its configuration is unreadable:\n{exc}")
            return None
        # the trainer keeps the saved configuration and takes only these from the caller
        cfg = saved.replace(device=wanted.device, amp=wanted.amp, **{
            "optim.epochs": wanted.optim.epochs, "data.num_workers": wanted.data.num_workers})
        self.training_view.append_log(f"Continuing {run_dir} from epoch {last} to epoch {cfg.optim.epochs}")
        self.controller.start(cfg, run_dir, resume=True)
        self.show_view("Train")
        return run_dir

    @Slot(bool)
    def _on_running_changed(self, running: bool) -> None:
        self.config_panel.set_training(running)
        for a in (self.open_folder_action, self.open_run_action, self.open_demo_action, self.sweep_action,
                  self.lr_find_action):
            a.setEnabled(not running)
        self.start_page.setEnabled(not running)
        if running:
            self.show_status("Training …")
            if self.state.run is None and self.controller.run_dir is not None:  # no epoch committed yet
                name = Path(self.controller.run_dir).name
                self.run_label.setText(f"Run: {name}  ·  training, no epoch yet")
                self.setWindowTitle(f"{name} — {APP_TITLE}")

    @Slot(object)
    def _on_run_changed(self, run) -> None:
        if run is None:
            self.run_label.setText("No run open")
            self.setWindowTitle(APP_TITLE)
            return
        # the run's own folder: the controller may still point at the run opened before (or at none yet)
        name = Path(str(getattr(run, "run_dir", "") or "")).resolve().name or "run"
        self.run_label.setText(f"Run: {name}")
        self.setWindowTitle(f"{name} — {APP_TITLE}")

    @Slot(int)
    def _on_epoch_changed(self, epoch: int) -> None:
        text = self.run_label.text().split("  ·  ")[0]
        self.run_label.setText(f"{text}  ·  epoch {epoch}")

    # ---- drag and drop ----------------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if urls and urls[0].isLocalFile() and Path(urls[0].toLocalFile()).is_dir():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile():
            event.acceptProposedAction()
            self.open_path(urls[0].toLocalFile())

    # ---- shutting down ----------------------------------------------------------------------------------------
    def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop the trainer (leaving a valid run) and the background jobs; True if everything ended in time."""
        if self.controller.is_running():
            self.training_view.append_log("Stopping the trainer before closing …")
        ok = self.controller.shutdown(timeout)
        ok = self.jobs.shutdown(min(timeout, 5.0)) and ok
        for view in (self.map_view, self.neighbours_view, self.triplets_view, self.threshold_view,
                     self.training_view, self.dataset_view):  # each view owns its jobs
            stop = getattr(view, "shutdown", None) or getattr(getattr(view, "jobs", None), "shutdown", None)
            if stop is not None:
                ok = stop(min(timeout, 5.0)) and ok
        self.thumbnails.shutdown(wait=False)
        return ok

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not getattr(self, "_split_sized", False):  # first show: the map gets most of the width
            self._split_sized = True
            width = max(self.explore_page.width(), 900)
            self.explore_page.setSizes([int(width * 0.6), int(width * 0.4)])

    def confirm_close_while_training(self) -> bool:
        """Closing while the trainer runs loses the epoch in progress: ask first (window close and Ctrl+Q)."""
        if not self.controller.is_running() or not self.isVisible():  # only a window on screen asks its user
            return True
        run = self.state.run
        kept = f"epoch {run.last_epoch}" if run is not None and run.last_epoch >= 0 else "no epoch yet"
        answer = QMessageBox.question(
            self, APP_TITLE,
            f"Training is running. Quit now?\n\nThe epoch in progress is lost; the run keeps {kept} and can be "
            f"continued later (Continue this run, or train --resume).",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if not self._closing and not self.confirm_close_while_training():
            event.ignore()
            return
        self.settings.set_window_geometry(self.saveGeometry())
        if not self.controller.is_running():
            self.settings.set_last_config(self.config_panel.config())
        self.settings.sync()
        self._closing = True
        self.shutdown()
        super().closeEvent(event)

