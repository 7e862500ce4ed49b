"""The recipe in the window: the form follows the scanned folder and the weights as probed, edits leave the
recipe, the learning-rate finder applies its suggestion, and a loss sweep runs from its dialog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.images import make_class_folder  # noqa: E402

from explorer.app import protect_none_refcount  # noqa: E402

protect_none_refcount()
from explorer.panels.config_panel import ConfigPanel
from trainer.config import TrainConfig  # noqa: E402
from trainer.data.scan import scan_folder  # noqa: E402
from trainer.train.recipe import RECIPE_KEYS, image_facts  # noqa: E402



@pytest.fixture
def folder(tmp_path) -> Path:
    return make_class_folder(tmp_path / "data", n_classes=6, per_class=10, size=40)


def _panel(qtbot, folder) -> ConfigPanel:
    panel = ConfigPanel()
    qtbot.addWidget(panel)
    panel.set_data_dir(folder)
    scan = scan_folder(folder)
    panel.set_scan(scan)
    # what the window's background job measures and hands to the form
    panel.set_image_facts(*image_facts([scan.abspath(i) for i in range(len(scan.paths))]))
    return panel


def test_a_new_folder_starts_from_the_recipe_and_the_weights_as_probed(qtbot, folder):
    panel = _panel(qtbot, folder)
    cfg = panel.config()
    assert set(cfg.auto) == set(RECIPE_KEYS)
    # ImageNet weights ticked and not yet known to fail: the trained-weights recipe
    assert cfg.model.pretrained and cfg.data.image_size == 224 and cfg.optim.lr == 1e-4
    assert cfg.model.backbone == "resnet18"
    assert panel.weights_warning.isHidden()
    panel.set_weights_status("resnet18", False, "ImageNet weights unavailable: URLError")
    # issue 15 item 9: the box stays the user's wish, and the fallback is said next to it (not only in the log)
    assert not panel.weights_warning.isHidden() and panel.pretrained.isChecked()
    assert "starts from random weights" in panel.weights_warning.text()
    assert "picked small_cnn" in panel.weights_warning.text()
    cfg = panel.config()
    assert cfg.data.image_size == 48 and cfg.optim.lr == 1e-3  # random weights: the images' size, Adam's rate
    assert cfg.model.backbone == "small_cnn"  # ... and on a CPU, the small network
    assert "random weights (ImageNet weights unavailable" in panel.recipe_label.text()
    assert "cpu" in panel.recipe_label.text()
    panel.pretrained.setChecked(False)
    assert panel.config().optim.lr == 1e-3
    assert panel.weights_warning.isHidden()  # nothing is asked for, so nothing falls back
    # a backbone chosen by the user stays, and its weights are what counts
    panel._select(panel.backbone, "resnet18")
    panel.pretrained.setChecked(True)
    cfg = panel.config()
    assert "model.backbone" not in cfg.auto and cfg.model.backbone == "resnet18" and cfg.optim.lr == 1e-3


def test_a_loss_picked_in_the_form_gets_the_recipe_miner_for_the_weights(qtbot, folder):
    # the same rule as the command line's --loss without --miner: triplet's usual semi-hard on trained weights,
    # every triplet of the batch from random ones (semi-hard kept it inside its margin)
    panel = _panel(qtbot, folder)
    panel._select(panel.loss, "triplet")
    cfg = panel.config()
    assert "loss.name" not in cfg.auto and "loss.miner" in cfg.auto
    assert cfg.model.pretrained and cfg.loss.miner == "semihard_triplets"  # ImageNet weights, not yet known to fail
    panel.set_weights_status("resnet18", False, "ImageNet weights unavailable: URLError")
    assert panel.config().loss.miner == "none"
    assert panel.miner.currentData() == "none"
    panel._select(panel.miner, "batch_hard")  # the user's miner is theirs
    panel.set_weights_status("resnet18", True, "")
    assert panel.config().loss.miner == "batch_hard" and "loss.miner" not in panel.config().auto


def test_a_loss_picked_in_the_form_gets_the_recipe_head_for_the_weights(qtbot, folder):
    # the command line's rule: threshold-consistent from random weights gets a BatchNorm head, said with its reason
    panel = _panel(qtbot, folder)
    panel._select(panel.loss, "threshold_consistent")
    cfg = panel.config()
    assert "model.head_bn" in cfg.auto and cfg.model.head_bn is False  # ImageNet weights, not yet known to fail
    panel.set_weights_status("resnet18", False, "ImageNet weights unavailable: URLError")
    assert panel.config().model.head_bn is True
    assert "<b>BatchNorm head</b> on: BatchNorm in the head" in panel.recipe_label.toolTip()
    # every choice in the tip is named in words, none by its config key
    assert not any(f"<b>{k}</b>" in panel.recipe_label.toolTip() for k in RECIPE_KEYS)
    panel._select(panel.loss, "triplet")
    assert panel.config().model.head_bn is False
    assert "BatchNorm head</b> off: a plain linear head" in panel.recipe_label.toolTip()


def test_edits_leave_the_recipe_and_use_the_recipe_hands_them_back(qtbot, folder):
    panel = _panel(qtbot, folder)
    panel.pretrained.setChecked(False)
    panel.lr.setValue(2.5e-4)
    panel.image_size.setValue(96)
    cfg = panel.config()
    assert "optim.lr" not in cfg.auto and "data.image_size" not in cfg.auto
    assert "Set by you" in panel.recipe_label.text()
    # the recipe is derived again (backbone change), but the user's values stay
    panel._select(panel.backbone, "small_cnn")
    cfg = panel.config()
    assert cfg.optim.lr == 2.5e-4 and cfg.data.image_size == 96
    assert panel.recipe_reset.isEnabled()
    panel.reset_to_recipe()
    cfg = panel.config()
    assert set(cfg.auto) == set(RECIPE_KEYS) and cfg.optim.lr == 1e-3 and cfg.data.image_size == 48
    # a run's own configuration round-trips with its record of what was automatic
    stored = cfg.replace(auto=("optim.lr",))
    panel.set_config(stored)
    assert panel.config() == stored


def test_the_learning_rate_finder_applies_its_rate_to_the_form(qtbot, folder):
    from explorer.dialogs.lr_find import LRFindDialog

    panel = _panel(qtbot, folder)
    panel.set_config(TrainConfig().replace(**{
        "data.data_dir": str(folder), "model.backbone": "small_cnn", "model.pretrained": False,
        "data.image_size": 24, "data.num_workers": 0, "data.batch_classes": 3, "data.batch_per_class": 4,
        "data.holdout_fraction": 0.34, "loss.name": "normalized_softmax", "loss.miner": "none", "device": "cpu",
        "amp": "off"}))
    dialog = LRFindDialog(panel.config())
    qtbot.addWidget(dialog)
    dialog.applied.connect(panel.apply_learning_rate)
    dialog.steps.setValue(20)
    dialog.start_lr.setValue(1e-5)
    dialog.start()
    qtbot.waitUntil(lambda: dialog.result is not None or "failed" in dialog.status.text(), timeout=120_000)
    assert dialog.result is not None, dialog.status.text()
    assert len(dialog.result.lrs) >= 5
    # a click on the curve would pick a rate; here the dialog picks one directly, as its click handler does
    dialog._choose(3e-3, "picked")
    assert dialog.apply_button.isEnabled()
    dialog.apply_button.click()
    assert panel.config().optim.lr == pytest.approx(3e-3)
    assert "optim.lr" not in panel.config().auto


def test_a_loss_sweep_runs_from_its_dialog(qtbot, tmp_path):
    from explorer.dialogs.sweep import SweepDialog
    from trainer.train.sweep import SWEEP_FILE

    data = make_class_folder(tmp_path / "d", n_classes=6, per_class=8, size=24)
    cfg = TrainConfig().replace(**{
        "data.data_dir": str(data), "model.backbone": "small_cnn", "model.pretrained": False, "data.image_size": 24,
        "data.num_workers": 0, "data.batch_classes": 3, "data.batch_per_class": 4, "data.holdout_fraction": 0.34,
        "model.embedding_dim": 16, "optim.batches_per_epoch": 2, "device": "cpu", "amp": "off",
        "auto": ("loss.miner", "loss.params")})
    dialog = SweepDialog(cfg, tmp_path / "sweep")
    qtbot.addWidget(dialog)
    for i in range(dialog.losses.count()):
        item = dialog.losses.item(i)
        from PySide6.QtCore import Qt

        name = item.data(Qt.ItemDataRole.UserRole)
        item.setCheckState(Qt.CheckState.Checked if name in ("triplet", "arcface") else Qt.CheckState.Unchecked)
    dialog.seeds.setValue(1)
    dialog.epochs.setValue(1)
    finished = []
    dialog.run_finished.connect(finished.append)
    dialog.start()
    qtbot.waitUntil(lambda: not dialog.is_running() and dialog.start_button.isEnabled(), timeout=240_000)
    assert "Done" in dialog.status.text(), dialog.status.text()
    assert dialog.table.rowCount() == 2
    assert {dialog.table.item(r, 0).text() for r in range(2)} == {"triplet", "arcface"}
    doc = json.loads((tmp_path / "sweep" / SWEEP_FILE).read_text())
    assert doc["losses"] == ["triplet", "arcface"]
    assert sorted(Path(p).name for p in finished) == ["arcface-s0", "triplet-s0"]


def test_the_window_measures_the_folder_and_probes_the_weights_for_the_form(qtbot, folder, tmp_path, monkeypatch):
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication, QLabel

    import trainer.model.backbones as models
    from explorer.app import create_window
    from explorer.main_window import MainWindow
    from explorer.settings import Settings

    def offline(weights, *a, **k):
        raise OSError("no network")

    monkeypatch.setattr(models, "_download_state_dict", offline)
    monkeypatch.setattr(MainWindow, "_make_map_view", lambda self: QLabel("map"))
    win = create_window(QApplication.instance(), settings=Settings(QSettings(str(tmp_path / "s.ini"),
                                                                             QSettings.Format.IniFormat)))
    qtbot.addWidget(win)
    try:
        win.config_panel.set_runs_root(tmp_path / "runs")
        win.open_folder(folder)
        qtbot.waitUntil(lambda: win.config_panel._image_facts != (None, None)
                        and bool(win.config_panel._weights_status), timeout=60_000)
        cfg = win.config_panel.config()
        assert cfg.data.image_size == 48 and cfg.optim.lr == 1e-3  # offline: the random-weights recipe
        qtbot.waitUntil(lambda: "per epoch on cpu" in win.config_panel.estimate_label.text(), timeout=120_000)
    finally:
        win.shutdown(10)


def _wheel(widget, steps: int = -3) -> None:
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    pos = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(pos, QPointF(widget.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, 120 * steps),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_the_wheel_scrolls_the_form_instead_of_editing_the_field_under_the_pointer(qtbot):
    panel = ConfigPanel()
    qtbot.addWidget(panel)
    panel.resize(420, 300)  # short enough to scroll
    panel.show()
    qtbot.waitExposed(panel)
    panel.apply_preset("Quick look (CPU)")
    scroll = panel.findChild(type(panel.wheel_guard.scroll))
    bar = scroll.verticalScrollBar()
    assert bar.maximum() > 0
    lr, preset = panel.lr.value(), panel.preset_combo.currentText()
    before = bar.value()
    for w in (panel.lr, panel.preset_combo, panel.batch_classes):
        _wheel(w)
    assert panel.lr.value() == lr and panel.preset_combo.currentText() == preset  # nothing edited, nothing Custom
    assert bar.value() > before  # the form scrolled
    panel.lr.setFocus()
    qtbot.waitUntil(panel.lr.hasFocus, timeout=2000)
    _wheel(panel.lr, steps=1)  # once focused, the wheel does step the field
    assert panel.lr.value() != lr
