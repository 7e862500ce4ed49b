"""Brute-force twins: plain loops over rows and pairs, the reference our vectorised routines are tested against."""

from __future__ import annotations

import math

import numpy as np


def brute_distance(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    if metric == "cosine":
        dot = sum(u * v for u, v in zip(a, b))
        return 1.0 - dot / (math.sqrt(sum(u * u for u in a)) * math.sqrt(sum(v * v for v in b)))
    return math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))


def brute_neighbours(x: np.ndarray, query: int, gallery: list[int], k: int, metric: str) -> list[tuple[float, int]]:
    out = []
    for j in gallery:
        if j != query:
            out.append((brute_distance(x[query], x[j], metric), j))
    out.sort()
    return out[:k]


def brute_distances(x: np.ndarray, metric: str) -> np.ndarray:
    """Every pair's distance, one pair at a time."""
    n = len(x)
    return np.array([[brute_distance(x[i], x[j], metric) for j in range(n)] for i in range(n)])
