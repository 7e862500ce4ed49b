"""Plain geometry of the map (no Qt): point splats for the raster, lasso hit tests, draw order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
import numpy as np

# Disk of radius ~1.5 px used by the raster splat.
_SPLAT_OFFSETS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)]


def splat_points(xy: np.ndarray, rgba: np.ndarray, x_range: tuple[float, float], y_range: tuple[float, float],
                 width: int, height: int, offsets=_SPLAT_OFFSETS) -> np.ndarray:
    """Draw points as small dots into a (height, width, 4) uint8 image; row 0 is ``y_range[0]``; later points win.

    ``rgba`` is (N, 4) uint8 per point. Vectorised: each pixel is one uint32, and the canvas has a border as wide
    as the dot, so every dot offset is one flat scatter with no bounds test (the border is cropped at the end):
    ~0.1 s for 1e6 points, where a masked RGBA assignment per offset took ~0.9 s on the GUI thread.
    """
    if len(xy) == 0 or width <= 0 or height <= 0:
        return np.zeros((max(height, 0), max(width, 0), 4), np.uint8)
    pad = 1 + max(max(abs(dx), abs(dy)) for dx, dy in offsets)
    wp = width + 2 * pad
    canvas = np.zeros((height + 2 * pad) * wp, np.uint32)
    x0, x1 = x_range
    y0, y1 = y_range
    sx = width / max(x1 - x0, 1e-30)
    sy = height / max(y1 - y0, 1e-30)
    px = np.floor((xy[:, 0] - x0) * sx)
    py = np.floor((xy[:, 1] - y0) * sy)
    near = (px >= -1) & (px <= width) & (py >= -1) & (py <= height)
    base = (py[near].astype(np.int64) + pad) * wp + (px[near].astype(np.int64) + pad)
    col = np.ascontiguousarray(rgba[near], dtype=np.uint8).view(np.uint32).reshape(-1)
    for dx, dy in offsets:
        canvas[base + (dy * wp + dx)] = col
    img = canvas.view(np.uint8).reshape(height + 2 * pad, wp, 4)
    return np.ascontiguousarray(img[pad:pad + height, pad:pad + width])


def points_in_polygon(xy: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Boolean mask of the points inside the closed polygon ``poly`` (M, 2) by the even-odd rule (lasso select).

    Vectorised over points: one pass per polygon edge, counting crossings of a ray going right from each point.
    """
    xy = np.asarray(xy, dtype=np.float64)
    poly = np.asarray(poly, dtype=np.float64)
    inside = np.zeros(len(xy), bool)
    if len(poly) < 3 or len(xy) == 0:
        return inside
    lo, hi = poly.min(0), poly.max(0)
    cand = np.flatnonzero((xy[:, 0] >= lo[0]) & (xy[:, 0] <= hi[0]) & (xy[:, 1] >= lo[1]) & (xy[:, 1] <= hi[1]))
    px, py = xy[cand, 0], xy[cand, 1]
    odd = np.zeros(len(cand), bool)
    xj, yj = poly[-1]
    for xi, yi in poly:
        straddles = (yi > py) != (yj > py)
        if straddles.any():
            x_cross = xi + (py - yi) * (xj - xi) / ((yj - yi) if yj != yi else 1e-300)
            odd ^= straddles & (px < x_cross)
        xj, yj = xi, yi
    inside[cand] = odd
    return inside


@functools.lru_cache(maxsize=4)
def draw_order(n: int) -> np.ndarray:
    """The order points are drawn in (a fixed shuffle, so no class always lies on top); read-only, shared."""
    order = np.random.default_rng(0).permutation(n)
    order.flags.writeable = False
    return order


def view_needs_fit(xy: np.ndarray, view: tuple[tuple[float, float], tuple[float, float]], *, min_share: float = 0.4,
                   outside: float = 0.05) -> bool:
    """True when the view shows a layout badly: more than ``outside`` of the view's span of the layout's extent
    (1st-99th percentile) lies outside the view, or the layout fills less than ``min_share`` of the view on both
    axes (the view keeps its aspect ratio, so one axis may stay narrow). After an aligned new epoch the UMAP was
    a thin strip until Fit."""
    if len(xy) == 0:
        return False
    lo = np.percentile(xy, 1, axis=0)
    hi = np.percentile(xy, 99, axis=0)
    shares = []
    for axis in (0, 1):
        v0, v1 = view[axis]
        span = max(v1 - v0, 1e-12)
        d0, d1 = float(lo[axis]), float(hi[axis])
        if d0 < v0 - outside * span or d1 > v1 + outside * span:
            return True
        shares.append((d1 - d0) / span)
    return max(shares) < min_share


@dataclass
class Frame:
    """What one drawing of a large map shows: the visible rows in drawing order with their colours and positions
    (kept for the next drawing), and either the rows in view (few: drawn as symbols) or a raster image."""

    rows: np.ndarray
    colours: np.ndarray
    p: np.ndarray
    in_rows: np.ndarray | None = None  # symbols: the rows inside the view
    image: np.ndarray | None = None  # raster: (h, w, 4) uint8, row 0 at rect's y0
    rect: tuple[float, float, float, float] | None = None  # raster: x0, y0, width, height in data coordinates


def draw_frame(xy: np.ndarray, order: np.ndarray, visible: np.ndarray, labels: np.ndarray, rgba: np.ndarray,
               view: tuple[tuple[float, float], tuple[float, float]], pixels: tuple[int, int], *, margin: float,
               symbol_max: int, source: tuple[np.ndarray, np.ndarray] | None = None,
               p: np.ndarray | None = None) -> Frame:
    """One drawing of a large map (no Qt; the view runs it in a worker thread above ~2e5 points).

    ``source`` (rows, colours) and ``p`` (``xy[rows]``) are the gathers of an earlier frame of the same visibility
    and layout, when there is one: at 1e6 points gathering them costs more than the splat."""
    if source is None:
        rows = order if visible.all() else order[visible[order]]
        source = (rows, rgba[labels[rows]])
    rows, colours = source
    if p is None:
        p = xy[rows]
    (x0, x1), (y0, y1) = view
    inview = (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
    if int(np.count_nonzero(inview)) <= symbol_max:
        return Frame(rows, colours, p, in_rows=rows[inview])
    w, h = pixels
    # a margin of ``margin`` view sizes on each side: panning shows drawn points before the re-render
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    x0, x1, y0, y1 = x0 - mx, x1 + mx, y0 - my, y1 + my
    w, h = int(round(w * (1 + 2 * margin))), int(round(h * (1 + 2 * margin)))
    near = (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
    img = splat_points(p[near], colours[near], (x0, x1), (y0, y1), w, h)
    return Frame(rows, colours, p, image=img, rect=(x0, y0, x1 - x0, y1 - y0))


def frame_job(*args, progress, partial, is_cancelled, **kwargs) -> Frame:
    """:func:`draw_frame` as a background job of the map's drawing runner."""
    return draw_frame(*args, **kwargs)
