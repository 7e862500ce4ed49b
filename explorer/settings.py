"""Typed, versioned settings of the desktop app (recent folders and runs, last config, window geometry).

A thin layer over ``QSettings("EmbeddingExplorer", "EmbeddingExplorer")`` so the rest of the GUI never deals with
QVariant quirks (a one-item list read back as a string, bools as "true"). Tests pass their own ``QSettings``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from trainer.config import TrainConfig

SETTINGS_VERSION = 1
ORGANIZATION = "EmbeddingExplorer"
APPLICATION = "EmbeddingExplorer"
MAX_RECENT = 10


def default_runs_root() -> Path:
    """Where new runs go unless the user picked another folder: the per-user data folder's ``runs``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("embedding-explorer")) / "runs"


class Settings:
    """Typed accessors around one QSettings store; values of an older or unknown version are dropped, not guessed."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings if qsettings is not None else QSettings(ORGANIZATION, APPLICATION)
        stored = self.q.value("version")
        try:
            stored_version = int(stored) if stored is not None else None
        except (TypeError, ValueError):
            stored_version = None
        if stored_version != SETTINGS_VERSION:
            # First start or a layout we do not understand: start clean rather than misread old keys.
            self.q.clear()
            self.q.setValue("version", SETTINGS_VERSION)

    # ---- helpers ----------------------------------------------------------------------------------------------
    def _list(self, key: str) -> list[str]:
        value = self.q.value(key)
        if value is None or value == "":
            return []
        if isinstance(value, str):  # QSettings returns a one-element list as a plain string (INI backend)
            return [value]
        return [str(v) for v in value]

    def _push_recent(self, key: str, path: str | Path) -> list[str]:
        text = str(Path(path))
        items = [p for p in self._list(key) if p != text]
        items.insert(0, text)
        items = items[:MAX_RECENT]
        self.q.setValue(key, items)
        return items

    # ---- recent folders / runs --------------------------------------------------------------------------------
    def recent_folders(self) -> list[str]:
        """Image folders opened lately, newest first."""
        return self._list("recent/folders")

    def add_recent_folder(self, path: str | Path) -> list[str]:
        """Put ``path`` first in the recent-folder list (deduplicated, at most MAX_RECENT)."""
        return self._push_recent("recent/folders", path)

    def recent_runs(self) -> list[str]:
        """Run folders opened or trained lately, newest first."""
        return self._list("recent/runs")

    def add_recent_run(self, path: str | Path) -> list[str]:
        """Put ``path`` first in the recent-run list (deduplicated, at most MAX_RECENT)."""
        return self._push_recent("recent/runs", path)

    def clear_recent(self) -> None:
        """Forget both recent lists."""
        self.q.remove("recent")

    # ---- training configuration -------------------------------------------------------------------------------
    def last_config(self) -> TrainConfig | None:
        """The configuration the user last started (or edited); None if none or unreadable."""
        text = self.q.value("train/last_config")
        if not text:
            return None
        try:
            return TrainConfig.from_json(str(text))
        except (ValueError, TypeError):
            return None  # written by another version: fall back to defaults rather than fail at start-up

    def set_last_config(self, cfg: TrainConfig) -> None:
        """Remember ``cfg`` for the next session."""
        self.q.setValue("train/last_config", cfg.to_json())

    def last_preset(self) -> str:
        """Name of the preset last applied ("" if none)."""
        return str(self.q.value("train/last_preset") or "")

    def set_last_preset(self, name: str) -> None:
        self.q.setValue("train/last_preset", name)

    def runs_root(self) -> Path:
        """Folder where new runs are created."""
        value = self.q.value("train/runs_root")
        return Path(str(value)) if value else default_runs_root()

    def set_runs_root(self, path: str | Path) -> None:
        self.q.setValue("train/runs_root", str(path))

    # ---- window -----------------------------------------------------------------------------------------------
    def window_geometry(self) -> QByteArray | None:
        """Saved main-window geometry (``QWidget.saveGeometry``), or None."""
        value = self.q.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_window_geometry(self, geometry: QByteArray) -> None:
        self.q.setValue("window/geometry", geometry)

    def sync(self) -> None:
        """Write to disk now (QSettings otherwise writes lazily)."""
        self.q.sync()
