"""Shared test setup: no test touches the user's home folder, caches or settings."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Caches (demo folder, scan cache) go to a per-session temporary folder unless CI points them elsewhere.
if "EMBEDDING_EXPLORER_CACHE" not in os.environ:
    os.environ["EMBEDDING_EXPLORER_CACHE"] = tempfile.mkdtemp(prefix="ee-test-cache-")
# Qt settings (QSettings) go to a temporary folder too.
os.environ.setdefault("XDG_CONFIG_HOME", tempfile.mkdtemp(prefix="ee-test-config-"))
