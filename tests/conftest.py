"""Shared test setup: no test touches the user's home folder, caches or settings."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# pytest-qt's binding, set here rather than in pyproject: where Qt is not installed (the trainer-only CI run)
# pytest refuses an ini option that no plugin knows
os.environ.setdefault("PYTEST_QT_API", "pyside6")
# Caches (demo folder, scan cache) go to a per-session temporary folder unless CI points them elsewhere.
if "EMBEDDING_EXPLORER_CACHE" not in os.environ:
    os.environ["EMBEDDING_EXPLORER_CACHE"] = tempfile.mkdtemp(prefix="ee-test-cache-")
# Qt settings (QSettings) go to a temporary folder too.
os.environ.setdefault("XDG_CONFIG_HOME", tempfile.mkdtemp(prefix="ee-test-config-"))


def pytest_collection_modifyitems(config, items):
    """Everything under tests/explorer/ needs Qt: marked ``gui`` here, so no module can forget it."""
    import pytest

    gui = pytest.mark.gui
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(TESTS).parts
        if parts[0] == "explorer":
            item.add_marker(gui)
