"""Where the app keeps its caches (demo folder, scan cache, compiled kernels).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EMBEDDING_EXPLORER_CACHE"


def cache_root() -> Path:
    """The app's cache folder: $EMBEDDING_EXPLORER_CACHE if set, else the platform's user cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("embedding-explorer"))
