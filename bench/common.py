"""What the benchmarks share: timing, peak memory, clustered synthetic embeddings, the GUI timer probe.

Every benchmark runs from the repository root as ``python -m bench.NAME``."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import numpy as np


def timed(fn: Callable[[], object], repeats: int = 1, *, best: bool = False) -> tuple[float, object]:
    """Wall time of ``fn`` over ``repeats`` calls (the median, or the best with ``best=True``) and its last result."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return (min(times) if best else statistics.median(times)), out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def clustered(n: int, dim: int, n_classes: int, seed: int = 0, spread: float = 1.6) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors scattered around random unit class centres: (n, dim) float32 and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, n_classes, size=n)
    x = centres[labels] + spread * rng.normal(size=(n, dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def latency_probe():
    """A 10 ms QTimer (not started) and the list it fills with how late each tick fired, in ms. The clock starts
    when the timer does, so every sample counts, the first included."""
    from PySide6.QtCore import QTimer

    lat: list[float] = []
    last = [0.0]

    class _Probe(QTimer):
        def start(self, *args) -> None:  # noqa: D102 - QTimer.start, with the clock reset
            last[0] = time.perf_counter()
            super().start(*args)

    def tick() -> None:
        now = time.perf_counter()
        lat.append((now - last[0]) * 1000 - 10.0)
        last[0] = now

    timer = _Probe()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    return timer, lat


def summary(lat: list[float]) -> str:
    """p50 / p99 / max lateness of every tick."""
    x = np.array(lat)
    return (f"timer lateness over {len(x)} ticks: p50 {np.percentile(x, 50):.1f} ms, p99 {np.percentile(x, 99):.1f} ms, "
            f"max {x.max():.1f} ms (target p99 <= 50, max <= 200)")
