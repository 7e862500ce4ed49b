"""Shared test setup: no test touches the user's home folder, caches or settings."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# pytest-qt's binding, set here rather than in pyproject: where Qt is not installed (the trainer-only CI run)
# pytest refuses an ini option that no plugin knows
os.environ.setdefault("PYTEST_QT_API", "pyside6")
# Caches (demo folder, scan cache) go to a per-session temporary folder unless CI points them elsewhere.
# Both are removed again when the test process ends.
def _temporary_folder(prefix: str) -> str:
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


if "EMBEDDING_EXPLORER_CACHE" not in os.environ:
    os.environ["EMBEDDING_EXPLORER_CACHE"] = _temporary_folder("ee-test-cache-")
# Qt settings (QSettings) go to a temporary folder too.
if "XDG_CONFIG_HOME" not in os.environ:
    os.environ["XDG_CONFIG_HOME"] = _temporary_folder("ee-test-config-")


def pytest_collection_modifyitems(config, items):
    """Everything under tests/explorer/ needs Qt: marked ``gui`` here, so no module can forget it."""
    gui = pytest.mark.gui
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(TESTS).parts
        if parts[0] == "explorer":
            item.add_marker(gui)


# ---- the hostile-run suites (tests/trainer/ and tests/explorer/): one real run, trained once, copied per test

@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(run folder, image folder) of a real run of the tiny config, epochs 0-2 with checkpoints."""
    from tests.support.runs import trained_run

    return trained_run(tmp_path_factory.mktemp("trained"))


@pytest.fixture()
def run(trained, tmp_path):
    """A fresh copy of the trained run, to damage."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)
    return copy
