"""The training configuration form: backbone, loss and its parameters, miner, C x K batch, schedule, held-out split.

It produces a :class:`~trainer.config.TrainConfig` and explains invalid combinations *before* Start
(:meth:`ConfigPanel.problems`), using the loss/miner/backbone registries of the trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from explorer.widgets.wheel_guard import WheelGuard
from trainer.config import (
    PRESETS,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from trainer.train.checks import config_problems, fit_to_folder, split_counts
from trainer.train.recipe import RECIPE_KEYS, Facts, derive

CUSTOM = "Custom"


# ---- registries (imported late: they pull in torch) -----------------------------------------------------------
def loss_specs() -> dict[str, Any]:
    """name -> LossSpec, the loss registry of trainer.model.losses."""
    from trainer.model.losses import LOSSES

    return dict(LOSSES)


def miner_specs() -> dict[str, Any]:
    """name -> MinerSpec from trainer.model.losses; "none" is always offered."""
    from trainer.model.losses import MINERS

    miners = dict(MINERS)
    miners.setdefault("none", None)
    return miners


def backbone_specs() -> dict[str, Any]:
    from trainer.model.backbone_specs import BACKBONES

    return dict(BACKBONES)


_KEY_TITLES = {
    "model.backbone": "Backbone", "data.image_size": "size", "optim.lr": "lr", "optim.head_lr_mult": "Head rate",
    "loss.name": "Loss", "model.embedding_dim": "dim", "data.batch_classes": "C",
    "data.batch_per_class": "K", "data.flip": "mirroring", "data.crop_scale": "Crops",
    "optim.warmup_epochs": "Warm-up", "optim.loss_lr": "Loss rate", "data.augment": "Augment",
    "loss.miner": "Miner", "loss.params": "Loss parameters", "model.head_bn": "BatchNorm head",
    "optim.scheduler": "Schedule", "optim.weight_decay": "Weight decay",
}


_SUMMARY = ("model.backbone", "data.image_size", "optim.lr", "loss.name", "data.batch_classes", "data.batch_per_class",
            "model.embedding_dim", "data.flip")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ConfigPanel(QWidget):
    """Form that edits a TrainConfig; :attr:`changed` fires on every edit, :meth:`problems` says what is wrong."""

    changed = Signal()
    preset_applied = Signal(str)
    lr_find_requested = Signal()
    open_folder_requested = Signal()  # the "…" next to Images: the window asks for a folder and scans it

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._class_counts: dict[str, int] | None = None
        self._loading = False
        self._param_widgets: dict[str, QWidget] = {}
        self._base = TrainConfig()  # fields the form does not show are carried through from here
        # recipe keys the user set (by a widget or a preset); the others are the recipe's, re-derived as the
        # folder, the backbone and the weights change, and resolved again by the trainer when the run starts
        self._user_keys: set[str] = set()
        self._image_facts: tuple[int | None, float | None] = (None, None)
        self._device = "cpu"
        self.recipe_choices: list = []
        self._weights_status: dict[str, tuple[bool, str]] = {}  # backbone -> (trained weights load, why)
        self._weights_note = ""
        self._build()
        self.set_config(TrainConfig().replace(auto=RECIPE_KEYS))
        self._check_timer = QTimer(self)
        self._check_timer.setSingleShot(True)
        self._check_timer.setInterval(150)
        self._check_timer.timeout.connect(self.refresh_problems)
        self.changed.connect(self._check_timer.start)

    # ---- layout -----------------------------------------------------------------------------------------------
    def _build(self) -> None:
        def notify(*_: Any) -> None:
            if not self._loading:
                self.preset_combo.blockSignals(True)
                self.preset_combo.setCurrentText(CUSTOM)
                self.preset_combo.blockSignals(False)
                self.changed.emit()

        self._notify = notify
        self.preset_combo = QComboBox()
        self.preset_combo.addItems([CUSTOM, *PRESETS])
        self.preset_combo.setToolTip("Named starting points; editing any field turns this back to Custom")
        self.preset_combo.currentTextChanged.connect(self._on_preset)
        self.recipe_label = QLabel()
        self.recipe_label.setObjectName("help")
        self.recipe_label.setWordWrap(True)
        self.recipe_label.setTextFormat(Qt.TextFormat.RichText)
        self.recipe_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.MinimumExpanding)
        self.estimate_label = QLabel("")
        self.estimate_label.setObjectName("estimate")
        self.estimate_label.setWordWrap(True)
        self.recipe_reset = QPushButton("Use the recipe")
        self.recipe_reset.setToolTip("Set every recipe setting back to what the recipe chooses for this folder, "
                                     "backbone and machine")
        self.recipe_reset.clicked.connect(self.reset_to_recipe)

        # model
        self.backbone = QComboBox()
        for name, spec in (backbone_specs() or {"small_cnn": None, "resnet18": None, "resnet50": None}).items():
            self.backbone.addItem(getattr(spec, "title", name), name)
        self.backbone.setToolTip("The network that turns an image into features; the head maps them to the "
                                 "embedding")
        self.pretrained = QCheckBox("ImageNet-pretrained weights")
        self.pretrained.setToolTip("Start from torchvision's ImageNet weights (downloaded once); off: random start")
        # said next to the box when the weights cannot be loaded: the tick stays the user's wish, the note says
        # what will happen (it was only in the log, twice)
        self.weights_warning = QLabel("")
        self.weights_warning.setWordWrap(True)
        self.weights_warning.setStyleSheet("color: #a05a00;")
        self.weights_warning.hide()
        self.head_only = QCheckBox("Train the head only")
        self.head_only.setToolTip("The backbone stays frozen and its features are cached: much faster on a CPU, "
                                  "the backbone runs once per image and only the head learns")
        self.embedding_dim = QSpinBox()
        self.embedding_dim.setRange(2, 4096)
        self.embedding_dim.setToolTip("Length of the embedding vector")
        self.image_size = QSpinBox()
        self.image_size.setRange(8, 1024)
        self.image_size.setSingleStep(16)
        self.image_size.setSuffix(" px")
        self.image_size.setToolTip("Images are resized to this square size before the backbone")
        model_box = QGroupBox("Model")
        f = QFormLayout(model_box)
        f.addRow("Backbone", self.backbone)
        f.addRow("", self.pretrained)
        f.addRow("", self.weights_warning)
        f.addRow("", self.head_only)
        f.addRow("Embedding dimension", self.embedding_dim)
        f.addRow("Image size", self.image_size)

        # loss
        self.loss = QComboBox()
        specs = loss_specs()
        for name, spec in (specs or {"multi_similarity": None, "triplet_margin": None}).items():
            self.loss.addItem(getattr(spec, "title", name), name)
        self.loss_help = QLabel()
        self.loss_help.setWordWrap(True)
        self.loss_help.setObjectName("help")
        self.params_form = QFormLayout()
        self.miner = QComboBox()
        for name, spec in miner_specs().items():
            self.miner.addItem(getattr(spec, "title", name) if spec is not None else "none (use every pair)", name)
        self.miner.setToolTip("Which pairs or triplets of a batch the loss sees")
        loss_box = QGroupBox("Loss")
        lv = QVBoxLayout(loss_box)
        lf = QFormLayout()
        lf.addRow("Loss", self.loss)
        lv.addLayout(lf)
        lv.addWidget(self.loss_help)
        lv.addLayout(self.params_form)
        mf = QFormLayout()
        mf.addRow("Miner", self.miner)
        lv.addLayout(mf)

        # batches and schedule
        self.batch_classes = QSpinBox()
        self.batch_classes.setRange(1, 1024)
        self.batch_classes.setToolTip("C: classes in each batch")
        self.batch_per_class = QSpinBox()
        self.batch_per_class.setRange(1, 256)
        self.batch_per_class.setToolTip("K: images of each class in each batch")
        ck = QHBoxLayout()
        ck.addWidget(QLabel("C"))
        ck.addWidget(self.batch_classes)
        ck.addWidget(QLabel("× K"))
        ck.addWidget(self.batch_per_class)
        self.batch_total = QLabel()
        ck.addWidget(self.batch_total, 1)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 10000)
        self.batches_per_epoch = QSpinBox()
        self.batches_per_epoch.setRange(0, 1_000_000)
        self.batches_per_epoch.setSpecialValueText("auto (one pass)")
        self.batches_per_epoch.setToolTip("0 = about one pass over the training images")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(7)
        self.lr.setRange(1e-7, 1.0)
        self.lr.setSingleStep(1e-5)
        self.lr.setToolTip("Learning rate of the network (Adam)")
        self.lr_find_button = QPushButton("Find…")
        self.lr_find_button.setToolTip("Learning-rate range test: a short run with a rising learning rate on this "
                                       "folder's batches; its suggestion can be applied here")
        self.lr_find_button.clicked.connect(self.lr_find_requested)
        lr_row = QHBoxLayout()
        lr_row.addWidget(self.lr, 1)
        lr_row.addWidget(self.lr_find_button)
        self.augment = QCheckBox("Augment training images (crops, colour)")
        # its own box: a run with "flip": false showed "Augment (flip, crop, colour)" ticked
        self.flip = QCheckBox("Mirror left-right")
        self.flip.setToolTip("Random horizontal flips (off for text, digits and other things that a mirror "
                             "turns into something else)")
        self.augment.toggled.connect(self.flip.setEnabled)
        sched_box = QGroupBox("Batches and schedule")
        sf = QFormLayout(sched_box)
        sf.addRow("Batch", ck)
        sf.addRow("Epochs", self.epochs)
        sf.addRow("Batches per epoch", self.batches_per_epoch)
        sf.addRow("Learning rate", lr_row)
        aug_row = QHBoxLayout()
        aug_row.addWidget(self.augment)
        aug_row.addWidget(self.flip)
        aug_row.addStretch(1)
        sf.addRow("", aug_row)

        # held-out split
        self.split_fraction = QRadioButton("Hold out a share of the classes")
        self.split_pick = QRadioButton("Hold out these classes")
        self.split_test = QRadioButton("Use a separate test folder")
        self.split_group = QButtonGroup(self)
        for i, b in enumerate((self.split_fraction, self.split_pick, self.split_test)):
            self.split_group.addButton(b, i)
        self.holdout_fraction = QDoubleSpinBox()
        self.holdout_fraction.setRange(0.0, 1.0)
        self.holdout_fraction.setSingleStep(0.05)
        self.holdout_fraction.setDecimals(2)
        self.holdout_fraction.setToolTip("Share of classes never trained on, used for the held-out metrics")
        self.holdout_list = QListWidget()
        self.holdout_list.setMaximumHeight(120)
        self.holdout_list.setToolTip("Tick the classes to hold out (available after the folder scan)")
        self.test_dir = QLineEdit()
        self.test_dir.setPlaceholderText("folder with one sub-folder per class")
        test_browse = QPushButton("…")
        test_browse.setToolTip("Choose the test folder")
        test_browse.clicked.connect(self._browse_test_dir)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_dir, 1)
        test_row.addWidget(test_browse)
        split_box = QGroupBox("Held-out evaluation")
        hv = QVBoxLayout(split_box)
        row = QHBoxLayout()
        row.addWidget(self.split_fraction)
        row.addWidget(self.holdout_fraction)
        hv.addLayout(row)
        hv.addWidget(self.split_pick)
        hv.addWidget(self.holdout_list)
        hv.addWidget(self.split_test)
        hv.addLayout(test_row)

        # where
        self.data_dir = QLineEdit()
        self.data_dir.setReadOnly(True)
        self.data_dir.setPlaceholderText("open a folder with File ▸ Open folder…")
        self.runs_root = QLineEdit()
        runs_browse = QPushButton("…")
        runs_browse.setToolTip("Choose where new runs are saved")
        runs_browse.clicked.connect(self._browse_runs_root)
        runs_row = QHBoxLayout()
        runs_row.addWidget(self.runs_root, 1)
        runs_row.addWidget(runs_browse)
        where_box = QGroupBox("Data and output")
        wf = QFormLayout(where_box)
        images_browse = QPushButton("…")
        images_browse.setToolTip("Open an image folder (one sub-folder per class); Ctrl+O")
        images_browse.clicked.connect(self.open_folder_requested)
        self.images_browse = images_browse
        images_row = QHBoxLayout()
        images_row.addWidget(self.data_dir, 1)
        images_row.addWidget(images_browse)
        wf.addRow("Images", images_row)
        wf.addRow("Runs folder", runs_row)

        self.problems_label = QLabel()
        self.problems_label.setObjectName("problems")
        self.problems_label.setWordWrap(True)
        self.problems_label.setTextFormat(Qt.TextFormat.RichText)

        inner = QWidget()
        v = QVBoxLayout(inner)
        # the form scrolls rather than squeezing its rows when it is taller than the window (the loss
        # parameters' spin boxes were drawn 4 px high)
        v.setSizeConstraint(QLayout.SizeConstraint.SetMinAndMaxSize)
        pf = QFormLayout()
        pf.addRow("Preset", self.preset_combo)
        v.addLayout(pf)
        recipe_box = QGroupBox("Recipe")
        rv = QVBoxLayout(recipe_box)
        rv.addWidget(self.recipe_label)
        rv.addWidget(self.estimate_label)
        rrow = QHBoxLayout()
        rrow.addStretch(1)
        rrow.addWidget(self.recipe_reset)
        rv.addLayout(rrow)
        v.addWidget(recipe_box)
        for box in (where_box, model_box, loss_box, sched_box, split_box):
            v.addWidget(box)
        v.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(inner.sizeHint().width() + 24)
        scroll.setWidget(inner)
        self.wheel_guard = WheelGuard(self, scroll)  # the wheel scrolls the form; it edits a field only once focused
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll, 1)
        outer.addWidget(self.problems_label)

        keyed = ((self.loss, ("loss.name", "loss.params")), (self.miner, ("loss.miner",)),
                 (self.embedding_dim, ("model.embedding_dim",)), (self.image_size, ("data.image_size",)),
                 (self.batch_classes, ("data.batch_classes",)), (self.batch_per_class, ("data.batch_per_class",)),
                 (self.lr, ("optim.lr",)), (self.augment, ("data.augment",)), (self.flip, ("data.flip",)), (self.backbone, ("model.backbone",)))
        for w, keys in keyed:
            signal = w.toggled if isinstance(w, QCheckBox) else (
                w.currentIndexChanged if isinstance(w, QComboBox) else w.valueChanged)
            signal.connect(lambda *_, keys=keys: self._edited(keys))
        self.backbone.currentIndexChanged.connect(lambda _i: self._show_weights_warning())
        self.pretrained.toggled.connect(lambda _on: self._show_weights_warning())
        for w in (self.backbone, self.pretrained):  # what the recipe is derived from
            (w.toggled if isinstance(w, QCheckBox) else w.currentIndexChanged).connect(self._rederive)
        for w in (self.backbone, self.loss, self.miner):
            w.currentIndexChanged.connect(notify)
        self.loss.currentIndexChanged.connect(self._rebuild_params)
        # after the parameters are rebuilt: a miner left to the recipe follows the loss (triplet's own, or every
        # triplet from random weights; it stayed the previous loss's, e.g. multi-similarity's pair miner)
        self.loss.currentIndexChanged.connect(self._rederive)
        for w in (self.pretrained, self.head_only, self.augment, self.flip):
            w.toggled.connect(notify)
        for w in (self.embedding_dim, self.image_size, self.batch_classes, self.batch_per_class, self.epochs,
                  self.batches_per_epoch, self.lr, self.holdout_fraction):
            w.valueChanged.connect(notify)
        for w in (self.test_dir, self.runs_root):
            w.textChanged.connect(notify)
        self.split_group.idToggled.connect(notify)
        self.split_group.idToggled.connect(self._update_enabled)
        self.holdout_list.itemChanged.connect(notify)
        self.batch_classes.valueChanged.connect(self._update_total)
        self.batch_per_class.valueChanged.connect(self._update_total)

    def _update_total(self, *_: Any) -> None:
        self.batch_total.setText(f"= {self.batch_classes.value() * self.batch_per_class.value()} images")

    def _update_enabled(self, *_: Any) -> None:
        self.holdout_fraction.setEnabled(self.split_fraction.isChecked())
        self.holdout_list.setEnabled(self.split_pick.isChecked())
        self.test_dir.setEnabled(self.split_test.isChecked())

    # ---- loss parameters --------------------------------------------------------------------------------------
    def _rebuild_params(self, *_: Any, values: dict[str, Any] | None = None) -> None:
        while self.params_form.rowCount():
            self.params_form.removeRow(0)
        self._param_widgets.clear()
        spec = loss_specs().get(self.loss.currentData())
        self.loss_help.setText(getattr(spec, "description", "") if spec else "")
        if spec is None:
            return
        values = values or {}
        for p in spec.params:
            value = values.get(p.name, p.default)
            lo = getattr(p, "minimum", None)
            hi = getattr(p, "maximum", None)
            choices = tuple(getattr(p, "choices", ()) or ())
            if choices:
                w: QWidget = QComboBox()
                for c in choices:
                    w.addItem(str(c), c)
                w.setCurrentIndex(max(0, w.findData(value)))
                w.currentIndexChanged.connect(self._notify)
            elif isinstance(p.default, bool):
                w = QCheckBox()
                w.setChecked(bool(value))
                w.toggled.connect(self._notify)
            elif isinstance(p.default, int):
                w = QSpinBox()
                w.setRange(int(lo) if lo is not None else -1_000_000, int(hi) if hi is not None else 1_000_000)
                w.setValue(int(value))
                w.valueChanged.connect(self._notify)
            elif isinstance(p.default, float):
                w = QDoubleSpinBox()
                w.setDecimals(4)
                w.setRange(float(lo) if lo is not None else -1e6, float(hi) if hi is not None else 1e6)
                w.setSingleStep(0.01 if abs(p.default) < 1 else 1.0)
                w.setValue(float(value))
                w.valueChanged.connect(self._notify)
            else:
                w = QLineEdit(str(value))
                w.textChanged.connect(self._notify)
            for sig in ("currentIndexChanged", "toggled", "valueChanged", "textChanged"):
                if hasattr(w, sig):
                    getattr(w, sig).connect(lambda *_: self._edited(("loss.params",)))
                    break
            tip = f"{p.help} (default {p.default})"
            w.setToolTip(tip)
            label = QLabel(f"{p.name} <span style='color:#888'>({p.default})</span>")
            label.setToolTip(tip)
            self._param_widgets[p.name] = w
            self.params_form.addRow(label, w)
            helper = QLabel(p.help)
            helper.setObjectName("help")
            helper.setWordWrap(True)
            self.params_form.addRow("", helper)
        self.params_form.invalidate()  # rows added to a form inside a scroll area: lay it out again now

    def _param_values(self) -> dict[str, Any]:
        spec = loss_specs().get(self.loss.currentData())
        out: dict[str, Any] = {}
        for name, w in self._param_widgets.items():
            if isinstance(w, QComboBox):
                value: Any = w.currentData()
            elif isinstance(w, QCheckBox):
                value = w.isChecked()
            elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
                value = w.value()
            else:
                value = w.text()
            default = next((p.default for p in spec.params if p.name == name), None) if spec else None
            if value != default:  # only what the user changed: defaults stay the library's
                out[name] = value
        return out

    # ---- config in and out ------------------------------------------------------------------------------------
    def config(self) -> TrainConfig:
        """The TrainConfig the form shows (fields it does not show are kept from the last set_config)."""
        b = self._base
        split = self.split_group.checkedId()
        held = tuple(self.holdout_list.item(i).text() for i in range(self.holdout_list.count())
                     if self.holdout_list.item(i).checkState() == Qt.CheckState.Checked)
        data = DataConfig(**{**b.data.__dict__,
                             "data_dir": self.data_dir.text(),
                             "test_dir": (self.test_dir.text().strip() or None) if split == 2 else None,
                             "holdout_fraction": float(self.holdout_fraction.value()),
                             "holdout_classes": held if split == 1 else None,
                             "image_size": self.image_size.value(),
                             "augment": self.augment.isChecked(),
                             "flip": self.flip.isChecked(),
                             "batch_classes": self.batch_classes.value(),
                             "batch_per_class": self.batch_per_class.value()})
        model = ModelConfig(**{**b.model.__dict__,
                               "backbone": self.backbone.currentData(),
                               "pretrained": self.pretrained.isChecked(),
                               "head_only": self.head_only.isChecked(),
                               "embedding_dim": self.embedding_dim.value()})
        loss = LossConfig(**{**b.loss.__dict__,
                             "name": self.loss.currentData(),
                             "params": self._param_values(),
                             "miner": self.miner.currentData()})
        bpe = self.batches_per_epoch.value()
        optim = OptimConfig(**{**b.optim.__dict__,
                               "epochs": self.epochs.value(),
                               "lr": float(self.lr.value()),
                               "batches_per_epoch": bpe or None})
        auto = tuple(k for k in RECIPE_KEYS if k not in self._user_keys)
        return b.replace(data=data, model=model, loss=loss, optim=optim, auto=auto)

    def set_config(self, cfg: TrainConfig) -> None:
        """Show ``cfg`` in the form (values not offered by a combo box are added to it, not lost)."""
        self._loading = True
        try:
            self._base = cfg
            self._user_keys = set(RECIPE_KEYS) - set(cfg.auto)
            self.data_dir.setText(cfg.data.data_dir)
            self._select(self.backbone, cfg.model.backbone)
            self.pretrained.setChecked(cfg.model.pretrained)
            self.head_only.setChecked(cfg.model.head_only)
            self.embedding_dim.setValue(cfg.model.embedding_dim)
            self.image_size.setValue(cfg.data.image_size)
            self._select(self.loss, cfg.loss.name)
            self._rebuild_params(values=cfg.loss.params)
            self._select(self.miner, cfg.loss.miner)
            self.batch_classes.setValue(cfg.data.batch_classes)
            self.batch_per_class.setValue(cfg.data.batch_per_class)
            self.epochs.setValue(cfg.optim.epochs)
            self.batches_per_epoch.setValue(cfg.optim.batches_per_epoch or 0)
            self.lr.setValue(cfg.optim.lr)
            self.augment.setChecked(cfg.data.augment)
            self.flip.setChecked(cfg.data.flip)
            self.flip.setEnabled(cfg.data.augment)
            self.holdout_fraction.setValue(cfg.data.holdout_fraction)
            self.test_dir.setText(cfg.data.test_dir or "")
            if cfg.data.test_dir:
                self.split_test.setChecked(True)
            elif cfg.data.holdout_classes:
                self.split_pick.setChecked(True)
            else:
                self.split_fraction.setChecked(True)
            self._set_holdout_items(self._class_counts, cfg.data.holdout_classes or ())
            self._update_total()
            self._update_enabled()
        finally:
            self._loading = False
        self._show_recipe()
        self.changed.emit()

    @staticmethod
    def _select(combo: QComboBox, name: str) -> None:
        i = combo.findData(name)
        if i < 0:
            combo.addItem(name, name)
            i = combo.count() - 1
        combo.setCurrentIndex(i)

    def apply_preset(self, name: str) -> None:
        """Apply the overrides of ``PRESETS[name]`` on top of the current form (data folder and split kept)."""
        cfg = self.config()
        auto = tuple(k for k in cfg.auto if k not in PRESETS[name])  # a preset's settings are choices too
        self.set_config(self._rederived(self._fit_to_folder(cfg.replace(**PRESETS[name]).replace(auto=auto))))
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentText(name)
        self.preset_combo.blockSignals(False)
        self.preset_applied.emit(name)

    @Slot(str)
    def _on_preset(self, name: str) -> None:
        if name in PRESETS:
            self.apply_preset(name)

    # ---- data -------------------------------------------------------------------------------------------------
    def set_data_dir(self, path: str | Path) -> None:
        """A folder was opened: train on it (its classes arrive later with :meth:`set_scan`)."""
        if self.data_dir.text() != str(path):
            self._class_counts = None
            self.holdout_list.clear()
        self.data_dir.setText(str(path))
        self.changed.emit()

    def set_scan(self, scan) -> None:
        """The folder scan finished: class counts feed the checks, class names the held-out picker."""
        counts = np.bincount(np.asarray(scan.labels, dtype=np.int64), minlength=len(scan.classes))
        self._class_counts = {c: int(n) for c, n in zip(scan.classes, counts)}
        self.data_dir.setText(str(scan.root))
        self._set_holdout_items(self._class_counts, self.config().data.holdout_classes or ())
        cfg = self.config()
        fitted = self._fit_to_folder(cfg)
        if fitted != cfg:  # e.g. the demo digits keep 5 training classes and the default C is 8
            self._loading = True
            try:
                self.batch_classes.setValue(fitted.data.batch_classes)
            finally:
                self._loading = False
        self._image_facts = (None, None)
        self._rederive()

    def _fit_to_folder(self, cfg: TrainConfig) -> TrainConfig:
        """``cfg`` with C lowered to the folder's number of training classes where it asks for more."""
        return fit_to_folder(cfg, self._class_counts)

    def _set_holdout_items(self, counts: dict[str, int] | None, held: tuple[str, ...]) -> None:
        self.holdout_list.blockSignals(True)
        self.holdout_list.clear()
        for name in (sorted(counts) if counts else list(held)):
            item = QListWidgetItem(f"{name}" if counts is None else name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if name in held else Qt.CheckState.Unchecked)
            if counts:
                item.setToolTip(f"{counts[name]} images")
            self.holdout_list.addItem(item)
        self.holdout_list.blockSignals(False)

    def set_runs_root(self, path: str | Path) -> None:
        self.runs_root.setText(str(path))

    def runs_root_path(self) -> Path:
        return Path(self.runs_root.text().strip()).expanduser()

    def _browse_test_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose the test folder", self.test_dir.text())
        if path:
            self.test_dir.setText(path)
            self.split_test.setChecked(True)

    def _browse_runs_root(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose where runs are saved", self.runs_root.text())
        if path:
            self.runs_root.setText(path)

    # ---- recipe -----------------------------------------------------------------------------------------------
    def _edited(self, keys: tuple[str, ...]) -> None:
        if not self._loading:
            self._user_keys.update(keys)
            self._show_recipe()

    def set_device(self, device: str) -> None:
        """The device the recipe is for ("cpu", "cuda", "mps")."""
        self._device = device
        self._rederive()

    def set_image_facts(self, median_side: int | None, grayscale_share: float | None) -> None:
        """Sizes and colours of the folder's images (measured off the GUI thread); the recipe is derived again."""
        self._image_facts = (median_side, grayscale_share)
        self._rederive()

    def facts(self) -> Facts | None:
        """What the recipe is derived from, as far as the form knows it (None before a folder is scanned).

        The form assumes that ticked ImageNet weights will load; the trainer checks when the run starts, and
        derives the recipe for random weights if they do not."""
        if not self._class_counts:
            return None
        cfg = self.config()
        train, _ = split_counts(self._class_counts, cfg.data)
        # the backbone the weights are asked for: the default one while the recipe picks the backbone (it
        # picks from whether those weights load)
        asked = TrainConfig().model.backbone if "model.backbone" in cfg.auto else cfg.model.backbone
        spec = backbone_specs().get(asked)
        trained = cfg.model.weights_file is not None or (
            cfg.model.pretrained and getattr(spec, "weights_enum", None) is not None)
        self._weights_note = ""
        if trained and cfg.model.weights_file is None and asked in self._weights_status:
            ok, why = self._weights_status[asked]
            if not ok:
                trained = False
                self._weights_note = f"random weights ({why})"
        counts = list(train.values()) or [0]
        side, gray = self._image_facts
        return Facts(trained_weights=trained, n_train_classes=len(train),
                     images_per_class=int(np.median(counts)), median_side=side, grayscale_share=gray,
                     device=self._device)

    def _rederived(self, cfg: TrainConfig) -> TrainConfig:
        facts = self.facts()
        if facts is None or not cfg.auto:
            self.recipe_choices = []
            return cfg
        try:
            out, self.recipe_choices = derive(cfg, facts)
        except ValueError:  # an unknown backbone typed into a run's config: leave the form as it is
            self.recipe_choices = []
            return cfg
        return out

    @Slot()
    def _rederive(self, *_: Any) -> None:
        if self._loading:
            return
        cfg = self.config()
        new = self._rederived(cfg)
        if new != cfg:
            self.set_config(new)
        else:
            self._show_recipe()

    @Slot()
    def reset_to_recipe(self) -> None:
        """Hand every recipe setting back to the recipe."""
        self.set_config(self._rederived(self.config().replace(auto=RECIPE_KEYS)))

    def _show_recipe(self) -> None:
        auto = set(RECIPE_KEYS) - self._user_keys
        facts = self.facts()
        tip = ""
        if not auto:
            text = "Every setting is yours; <i>Use the recipe</i> hands them back to it."
        elif facts is None:
            text = ("Open a folder: the settings you leave alone are chosen from its images, its classes and this "
                    "machine.")
        else:
            shown = [c for c in self.recipe_choices if c.key in auto]
            def show(c) -> str:
                if c.key == "loss.name":
                    return getattr(loss_specs().get(c.value), "title", c.value)
                if c.key == "model.backbone":
                    return getattr(backbone_specs().get(c.value), "title", c.value).split(" (")[0]
                if c.key == "data.flip":
                    return "mirrored" if c.value else "not mirrored"
                return f"{_KEY_TITLES[c.key]} {_fmt(c.value)}"

            summary = " · ".join(show(c) for c in shown if c.key in _SUMMARY)
            weights = self._weights_note or ("trained weights" if facts.trained_weights else "random weights")
            text = (f"<b>{summary}</b><br><span style='color:#666'>for {weights}, {facts.n_train_classes} training "
                    f"classes of ~{facts.images_per_class} images"
                    + (f", ~{facts.median_side} px" if facts.median_side else "")
                    + (", grayscale" if (facts.grayscale_share or 0) >= 0.9 else "")
                    + f", on {facts.device}. Hover for the reasons.</span>")
            tip = "<br>".join(f"<b>{_KEY_TITLES.get(c.key, c.key)}</b> {_fmt(c.value)}: {c.reason}" for c in shown)
            if self._user_keys:
                yours = sorted(_KEY_TITLES.get(k, k) for k in self._user_keys)
                text += f"<br><span style='color:#666'>Set by you: {', '.join(yours)}.</span>"
        self.recipe_label.setText(text)
        self.recipe_label.setToolTip(tip)
        # a rich-text label that wraps inside a scroll area does not ask for its height by itself
        width = max(self.recipe_label.width(), 360)
        self.recipe_label.setMinimumHeight(self.recipe_label.heightForWidth(width))
        self.recipe_reset.setEnabled(bool(self._user_keys))

    def set_weights_status(self, backbone: str, trained: bool, why: str) -> None:
        """Whether `backbone`'s trained weights can be loaded (probed off the GUI thread)."""
        self._weights_status[backbone] = (trained, why)
        self._rederive()
        self._show_weights_warning()

    def _show_weights_warning(self) -> None:
        cfg = self.config()
        asked = TrainConfig().model.backbone if "model.backbone" in cfg.auto else cfg.model.backbone
        status = self._weights_status.get(asked)
        if cfg.model.pretrained and cfg.model.weights_file is None and status is not None and not status[0]:
            switched = f"; the recipe picked {cfg.model.backbone} for that" if cfg.model.backbone != asked else ""
            self.weights_warning.setText(f"⚠ {status[1]}: the network starts from random weights{switched}.")
            self.weights_warning.setToolTip(status[1])
            self.weights_warning.show()
        else:
            self.weights_warning.hide()

    @Slot(float)
    def apply_learning_rate(self, lr: float) -> None:
        """A rate from the range test: it becomes the user's choice."""
        self.lr.setValue(float(lr))
        self._edited(("optim.lr",))

    def set_estimate(self, text: str) -> None:
        """The estimated time per epoch of the form's configuration (computed off the GUI thread)."""
        self.estimate_label.setText(text)

    # ---- checks -----------------------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What stops this configuration from starting, in plain words (empty when it can start)."""
        out = config_problems(self.config(), self._class_counts)
        if not self.runs_root.text().strip():
            out.append("Choose a runs folder where the run will be saved.")
        if self.split_pick.isChecked() and not self.config().data.holdout_classes:
            out.append("Tick at least two classes to hold out.")
        return out

    def set_training(self, training: bool) -> None:
        """Lock the form while a run trains, and say so under it ("Ready to start." stayed there before)."""
        self._training = training
        self.setEnabled(not training)
        self.refresh_problems()

    @Slot()
    def refresh_problems(self) -> list[str]:
        """Show the current problems under the form."""
        if getattr(self, "_training", False):
            self.problems_label.setText("Training: the settings are locked until the run ends (Stop: Ctrl+.).")
            self.problems_label.setProperty("ok", True)
            self.problems_label.style().unpolish(self.problems_label)
            self.problems_label.style().polish(self.problems_label)
            return []
        problems = self.problems()
        if problems:
            items = "".join(f"<li>{p}</li>" for p in problems)
            self.problems_label.setText(f"<b>Cannot start yet:</b><ul style='margin:0'>{items}</ul>")
            self.problems_label.setProperty("ok", False)
        else:
            self.problems_label.setText("Ready to start.")
            self.problems_label.setProperty("ok", True)
        self.problems_label.style().unpolish(self.problems_label)
        self.problems_label.style().polish(self.problems_label)
        return problems
