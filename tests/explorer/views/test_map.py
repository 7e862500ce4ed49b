"""MapView on a real run written with RunWriter: map appears, click/box/search select, hover card, class filter,
history slider, export, and the raster splat against a plain-loop twin."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, Qt

from explorer.state import AppState
from explorer.views.map import geometry
from explorer.views.map import jobs
from explorer.views.map.geometry import _SPLAT_OFFSETS, splat_points
from explorer.views.map import view as mv_mod
from explorer.views.map.view import MapView
from trainer.analysis import projection
from trainer.store import RunReader, RunWriter, SampleTable



@pytest.fixture
def run_dir(tmp_path):
    rng = np.random.default_rng(0)
    classes = ["cat", "dog", "owl", "yak"]
    data = tmp_path / "data"
    paths, labels = [], []
    for c, name in enumerate(classes):
        (data / name).mkdir(parents=True)
        for i in range(30):
            p = f"{name}/{name}_{i:02d}.png"
            Image.fromarray(np.full((20, 24, 3), 60 * c, np.uint8)).save(data / p)
            paths.append(p)
            labels.append(c)
    labels = np.array(labels, np.int64)
    samples = SampleTable(paths=paths, labels=labels, split=(labels >= 3).astype(np.int8), roots=[str(data)],
                          root_index=np.zeros(len(paths), np.int16))
    rd = tmp_path / "run"
    w = RunWriter.create(rd, config={}, classes=classes, samples=samples)
    centres = rng.normal(size=(4, 8)) * 5
    for e in range(3):
        w.write_epoch(e, (centres[labels] + rng.normal(size=(len(labels), 8))).astype(np.float32), {"m": 0.0})
    w.close()
    return rd


def _open(qtbot, run_dir, method="pca"):
    state = AppState()
    view = MapView(state, method=method, warm_up=False)
    qtbot.addWidget(view)
    view.resize(800, 560)
    view.show()
    with qtbot.waitSignal(view.map_ready, timeout=60_000):
        state.set_run(RunReader(run_dir))
    return state, view


def test_map_click_hover_and_search(qtbot, run_dir, tmp_path):
    state, view = _open(qtbot, run_dir)
    assert view.shown_epoch == 2 and view.xy.shape == (120, 2) and view.render_mode == "symbols"
    p = view.point_view_pos(37)
    assert view.select_at(p.x(), p.y()) == 37
    assert state.selection.tolist() == [37]
    assert view.selection_item.data["x"][0] == pytest.approx(p.x())  # ring drawn at the point
    # a real mouse click on the viewport at the point's screen position selects it too
    from PySide6.QtCore import Qt

    q = view.point_view_pos(5)
    widget_pos = view.plot.mapFromScene(view.viewbox.mapViewToScene(q))
    qtbot.mouseClick(view.plot.viewport(), Qt.MouseButton.LeftButton, pos=widget_pos)
    qtbot.waitUntil(lambda: state.selection.tolist() == [5], timeout=3000)
    # hover: the card shows file, class and (once loaded) the thumbnail
    assert view.hover_at(p.x(), p.y()) == 37
    qtbot.waitUntil(lambda: view.hover_label.pixmap() is not None and not view.hover_label.pixmap().isNull(),
                    timeout=5000)
    assert "dog/dog_07.png" in view.hover_text and "class: dog" in view.hover_text
    assert view.hover_label.pixmap().width() == 24  # the real image's thumbnail
    # empty space clears; box select; search by class and by file name
    (x0, x1), (y0, y1) = view.viewbox.viewRange()
    assert view.select_at(x1 + 1e6, y1 + 1e6) == -1 and len(state.selection) == 0
    box = view.select_in_rect(x0, x1, y0, y1)
    assert len(box) == 120
    view.search.setText("owl")
    assert view.apply_search().tolist() == list(range(60, 90))
    view.search.setText("cat_1")
    assert view.apply_search().tolist() == list(range(10, 20))
    # issue 15 item 17: a class name wins over file names that contain the text ("7" selected 626 digit files)
    view.search.setText("o")  # in "dog" and "owl": those two classes, not every file name with an "o"
    assert view.apply_search().tolist() == list(range(30, 90)) and "2 classes" in view.status.text()
    view.search.setText("file:owl_0")
    assert view.apply_search().tolist() == list(range(60, 70))
    # Esc typed in the search box clears, also when the window is not the active one (a shortcut would need that)
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    assert len(state.selection) == 10
    QTest.keyClick(view.search, Qt.Key.Key_Escape)
    assert len(state.selection) == 0 and view.search.text() == ""
    # highlight draws a star from the first id
    state.set_highlight([0, 40, 80])
    assert len(view.highlight_item.data) == 3 and len(view.highlight_lines.xData) == 4


def test_the_hover_card_goes_when_the_pointer_leaves_the_window_loses_focus_or_the_map_changes(qtbot, run_dir):
    """Issue 15 item 6: a thumbnail card stayed on screen for minutes, across tab switches and new layouts."""
    from PySide6.QtCore import QEvent
    from PySide6.QtWidgets import QApplication

    state, view = _open(qtbot, run_dir)
    p = view.point_view_pos(37)

    def shown() -> bool:
        return view.hover_label.isVisible() and view.hover_id == 37

    for event in (QEvent.Type.Leave, QEvent.Type.WindowDeactivate):
        assert view.hover_at(p.x(), p.y()) == 37 and shown()
        QApplication.sendEvent(view.plot.viewport(), QEvent(event))
        assert not view.hover_label.isVisible() and view.hover_id == -1, event
    assert view.hover_at(p.x(), p.y()) == 37 and shown()
    with qtbot.waitSignal(view.map_ready, timeout=60_000):  # another epoch's layout: the points move
        state.set_epoch(1)
    assert not view.hover_label.isVisible()
    assert view.hover_at(*(lambda q: (q.x(), q.y()))(view.point_view_pos(37))) == 37 and shown()
    view.hide()  # a tab switch
    assert not view.hover_label.isVisible()


def test_class_hide_history_and_export(qtbot, run_dir, tmp_path):
    state, view = _open(qtbot, run_dir)
    view.set_class_visible(1, False)
    model = view.legend_model
    assert not model.is_checked(1) and model.data(model.index(1), Qt.ItemDataRole.CheckStateRole).name == "Unchecked"
    assert 35 not in view.scatter.data["data"].tolist() and len(view.scatter.data) == 90
    p = view.point_view_pos(35)
    assert view.nearest_point(p.x(), p.y()) != 35  # hidden points cannot be picked
    assert model.setData(model.index(1), model.data(model.index(0), Qt.ItemDataRole.CheckStateRole),
                         Qt.ItemDataRole.CheckStateRole)  # ticked again, as a click on its box does
    assert len(view.scatter.data) == 120
    # history: step back an epoch; the map of epoch 1 is computed, aligned with the one on screen
    before = view.xy.copy()
    with qtbot.waitSignal(view.map_ready, timeout=30_000) as blocker:
        assert view.step_epoch(-1)
    assert blocker.args == [1] and view.slider.value() == 1
    qtbot.waitUntil(lambda: not view._anim_timer.isActive(), timeout=3000)
    span = np.ptp(before, axis=0).max()
    assert np.median(np.linalg.norm(view.xy - before, axis=1)) < 0.3 * span
    png, svg = view.export_png(tmp_path / "m.png"), view.export_svg(tmp_path / "m.svg")
    assert png.stat().st_size > 1000 and svg.stat().st_size > 1000
    # issue 15 item 16: the exported picture carries its title (run, epoch, layout) and the class legend
    from explorer.widgets.palette import class_colour

    plot_w = view.plot.plotItem.sceneBoundingRect().width()
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[1] > plot_w + 40 and rgb.shape[0] > view.plot.plotItem.sceneBoundingRect().height() + 20
    legend = rgb[30:, int(plot_w):]
    for i in range(3):  # each class's colour square is in the legend column
        assert (np.abs(legend.astype(int) - np.array(class_colour(i))).sum(axis=2) < 10).sum() >= 80, i
    assert (rgb[:30] < 100).all(axis=2).sum() > 50  # the title's dark text
    assert view.export_title().startswith(f"{run_dir.name} · epoch 1 · PCA of 120 images")
    head = svg.read_bytes()[:600]
    assert b"<svg" in head and b"epoch 1" in svg.read_bytes()


def test_many_points_switch_to_raster(qtbot, run_dir, monkeypatch):
    monkeypatch.setattr(mv_mod, "SYMBOL_MAX", 50)
    state, view = _open(qtbot, run_dir)
    assert view.render_mode == "raster" and view.image.image is not None
    assert len(view.scatter.data) == 0
    # zoom onto one class: few points in view -> symbols again
    pts = view.xy[view.labels == 0]
    lo, hi = pts.min(0), pts.max(0)
    view.viewbox.setRange(xRange=(float(lo[0]), float(hi[0])), yRange=(float(lo[1]), float(hi[1])), padding=0)
    view._render()
    assert view.render_mode == "symbols" and 0 < len(view.scatter.data) <= 50


def test_raster_follows_hidden_classes(qtbot, run_dir, monkeypatch):
    # the raster draws from rows gathered once per layout and visibility: hiding a class must still remove it
    monkeypatch.setattr(mv_mod, "SYMBOL_MAX", 50)
    monkeypatch.setattr(mv_mod, "ANIMATE_MAX", 0)  # layouts replace each other at once, as at 1e6 points
    state, view = _open(qtbot, run_dir)
    assert view.render_mode == "raster"

    def pixels_of(c: int) -> int:
        img = np.asarray(view.image.image)
        return int(np.all(img[..., :3] == view._rgba[c, :3], axis=-1).sum())

    assert pixels_of(0) > 0 and pixels_of(1) > 0
    view.set_class_visible(0, False)
    assert view.render_mode == "raster" and pixels_of(0) == 0 and pixels_of(1) > 0
    view.set_class_visible(0, True)
    assert pixels_of(0) > 0
    # another epoch's layout: the raster draws the new positions, not the cached ones of the last layout
    shown = view.shown_epoch
    with qtbot.waitSignal(view.map_ready, timeout=30000):
        assert view.step_epoch(-1)
    qtbot.waitUntil(lambda: not view._anim_timer.isActive(), timeout=3000)
    assert view.shown_epoch != shown
    assert view._xy_cache is not None and view._xy_cache[0] is view.xy  # the job's pre-ordered positions
    (_, rows, colours), (_, rows_p, p) = view._rows_cache, view._xy_cache
    assert rows_p is rows and np.array_equal(p, view.xy[rows])
    assert np.array_equal(colours, view._rgba[view.labels[rows]])


def test_a_large_map_is_drawn_in_its_drawing_thread_as_it_would_be_on_the_gui_thread(qtbot, run_dir, monkeypatch):
    monkeypatch.setattr(mv_mod, "SYMBOL_MAX", 50)
    monkeypatch.setattr(mv_mod, "RASTER_ASYNC_MIN", 100)  # 120 points: drawn in the thread
    calls = []
    monkeypatch.setattr(mv_mod, "frame_job", lambda *a, **k: calls.append(1) or geometry.frame_job(*a, **k))
    state, view = _open(qtbot, run_dir)
    qtbot.waitUntil(lambda: view.render_mode == "raster" and view.image.image is not None, timeout=10_000)
    assert calls
    qtbot.waitUntil(lambda: not view._render_timer.isActive(), timeout=3000)  # the window has its size
    view._render()
    assert view._draw_jobs.is_running("frame")
    qtbot.waitUntil(lambda: not view._draw_jobs.is_running("frame"), timeout=10_000)
    shown = np.asarray(view.image.image).copy()
    same = geometry.draw_frame(view.xy, view._draw_order, view._visible, view.labels, view._rgba,
                               view.viewbox.viewRange(), view._view_pixels(), margin=mv_mod.RASTER_MARGIN,
                               symbol_max=50)
    assert np.array_equal(shown, same.image)
    rect = view.image.mapRectToParent(view.image.boundingRect())
    assert np.allclose((rect.left(), rect.top(), rect.width(), rect.height()), same.rect, rtol=1e-5)
    # its gathers are kept for the next drawing
    assert view._rows_cache[1] is not None and np.array_equal(view._xy_cache[2], view.xy[view._rows_cache[1]])
    # zoomed onto one class: the thread's answer is the rows in view, drawn as symbols on the GUI thread
    pts = view.xy[view.labels == 0]
    lo, hi = pts.min(0), pts.max(0)
    view.viewbox.setRange(xRange=(float(lo[0]), float(hi[0])), yRange=(float(lo[1]), float(hi[1])), padding=0)
    n_calls = len(calls)
    view._render()
    qtbot.waitUntil(lambda: view.render_mode == "symbols", timeout=10_000)
    assert len(calls) > n_calls and 0 < len(view.scatter.data) <= 50
    # a drawing made for positions since replaced is dropped
    old = view.xy
    view.xy = view.xy + 1.0
    view._apply_frame((view._visible, view._draw_order, view._rgba, view.labels), old, same)
    assert view.render_mode == "symbols"


def test_draw_frame_matches_a_plain_loop():
    rng = np.random.default_rng(5)
    n = 400
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    labels = rng.integers(0, 3, n)
    rgba = np.array([[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]], np.uint8)
    order = geometry.draw_order(n)
    visible = labels != 1
    view = ((-1.0, 1.0), (-0.5, 1.5))
    frame = geometry.draw_frame(xy, order, visible, labels, rgba, view, (40, 30), margin=0.25, symbol_max=10)
    rows = [int(r) for r in order if visible[r]]
    assert frame.rows.tolist() == rows and np.array_equal(frame.colours, rgba[labels[rows]])
    x0, x1, y0, y1 = -1.5, 1.5, -1.0, 2.0  # the view with a quarter of its size on each side
    assert np.allclose(frame.rect, (x0, y0, x1 - x0, y1 - y0))
    near = [r for r in rows if x0 <= xy[r, 0] <= x1 and y0 <= xy[r, 1] <= y1]
    twin = splat_points(xy[near], rgba[labels[near]], (x0, x1), (y0, y1), 60, 45)
    assert frame.image.shape == (45, 60, 4) and np.array_equal(frame.image, twin)
    few = geometry.draw_frame(xy, order, visible, labels, rgba, ((0.0, 0.1), (0.0, 0.1)), (40, 30), margin=0.25,
                              symbol_max=10)
    inside = [r for r in rows if 0 <= xy[r, 0] <= 0.1 and 0 <= xy[r, 1] <= 0.1]
    assert few.image is None and few.in_rows.tolist() == inside


def test_draw_order_is_a_fixed_shuffle_and_jobs_hand_over_positions_in_it():
    order = geometry.draw_order(1000)
    assert order is geometry.draw_order(1000) and not order.flags.writeable
    assert np.array_equal(np.sort(order), np.arange(1000)) and not np.array_equal(order, np.arange(1000))
    layout = projection.Layout(xy=np.random.default_rng(1).normal(size=(1000, 2)), ids=np.arange(1000),
                                      method="pca")
    epoch, got, ordered = jobs._drawable(3, layout)
    assert epoch == 3 and got is layout and ordered.dtype == np.float32
    assert np.array_equal(ordered, layout.xy.astype(np.float32)[order])


@pytest.mark.parametrize("offs", [[(0, 0), (1, 0), (0, -1)], None, [(0, 0), (2, -2), (-2, 1)]])
def test_splat_matches_plain_loops(offs):
    rng = np.random.default_rng(3)
    xy = rng.uniform(-1, 11, size=(400, 2)).astype(np.float32)
    xy[:5] = xy[5:10]  # points on the same pixel: the later one wins
    rgba = rng.integers(0, 255, size=(400, 4)).astype(np.uint8)
    img = splat_points(xy, rgba, (0.0, 10.0), (0.0, 5.0), 37, 23, **({} if offs is None else {"offsets": offs}))
    ref = np.zeros((23, 37, 4), np.uint8)
    for dx, dy in offs or _SPLAT_OFFSETS:  # same draw order: all points for one offset, then the next offset
        for i in range(len(xy)):
            px = int(np.floor((xy[i, 0] - 0.0) * (37 / 10.0)))
            py = int(np.floor((xy[i, 1] - 0.0) * (23 / 5.0)))
            if not (-1 <= px <= 37 and -1 <= py <= 23):  # farther than a dot from the image: not drawn
                continue
            px, py = px + dx, py + dy
            if 0 <= px < 37 and 0 <= py < 23:
                ref[py, px] = rgba[i]
    assert np.array_equal(img, ref)
    assert splat_points(xy[:0], rgba[:0], (0.0, 1.0), (0.0, 1.0), 5, 4).shape == (4, 5, 4)


@pytest.mark.filterwarnings("ignore:Graph is not fully connected:UserWarning")
def test_umap_map_with_pca_preview(qtbot, run_dir):
    state = AppState()
    view = MapView(state, method="umap", warm_up=False)
    qtbot.addWidget(view)
    methods = []
    preview = view._on_layout_preview  # the job's partial result (the PCA map) goes only to this view's callback
    view._on_layout_preview = lambda r: (methods.append(r[1].method), preview(r))
    with qtbot.waitSignal(view.map_ready, timeout=120_000):
        state.set_run(RunReader(run_dir))
    assert methods == ["pca"] and view.layout.method == "umap"
    assert np.isfinite(view.xy).all()


def _brute_inside(x, y, poly):
    """Winding number, point by point (a different rule from the even-odd crossing count; same for simple polygons)."""
    wn = 0
    n = len(poly)
    for i in range(n):
        x0, y0 = poly[i]
        x1, y1 = poly[(i + 1) % n]
        cross = (x1 - x0) * (y - y0) - (x - x0) * (y1 - y0)
        if y0 <= y < y1 and cross > 0:
            wn += 1
        elif y1 <= y < y0 and cross < 0:
            wn -= 1
    return wn != 0


def test_points_in_polygon_matches_plain_loops():
    rng = np.random.default_rng(7)
    ang = np.sort(rng.uniform(0, 2 * np.pi, 40))
    rad = rng.uniform(1.0, 3.0, 40)  # a star-shaped, non-convex, simple lasso
    poly = np.c_[rad * np.cos(ang), rad * np.sin(ang)]
    xy = rng.uniform(-3.5, 3.5, size=(3000, 2))
    got = geometry.points_in_polygon(xy, poly)
    ref = np.array([_brute_inside(x, y, poly) for x, y in xy])
    assert 300 < ref.sum() < 2700 and np.array_equal(got, ref)
    assert not geometry.points_in_polygon(xy, poly[:2]).any()  # a degenerate lasso selects nothing


def test_lasso_selects_one_class_and_respects_hidden_and_add(qtbot, run_dir):
    state, view = _open(qtbot, run_dir)
    view.lasso_button.click()
    assert view.viewbox.lasso_mode
    pts = view.xy[view.labels == 2]
    c, r = pts.mean(0), np.linalg.norm(pts - pts.mean(0), axis=1).max() * 1.01
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    circle = np.c_[c[0] + r * np.cos(t), c[1] + r * np.sin(t)]
    ids = view.select_in_polygon(circle)
    inside = [i for i in range(len(view.xy)) if _brute_inside(*view.xy[i], circle)]
    assert ids.tolist() == inside and set(range(60, 90)) <= set(ids.tolist())
    view.set_class_visible(2, False)
    assert len(view.select_in_polygon(circle)) == len(set(inside) - set(range(60, 90)))
    state.set_selection([0])
    view.set_class_visible(2, True)
    assert set(view.select_in_polygon(circle, add=True).tolist()) == set(inside) | {0}


def test_raster_follows_the_view_and_rerenders_at_rest(qtbot, run_dir, monkeypatch):
    monkeypatch.setattr(mv_mod, "SYMBOL_MAX", 50)
    state, view = _open(qtbot, run_dir)
    assert view.render_mode == "raster"
    rect = view.image.mapRectToParent(view.image.boundingRect())
    (x0, x1), (y0, y1) = view.viewbox.viewRange()
    assert rect.left() < x0 and rect.right() > x1 and rect.top() < y0 and rect.bottom() > y1  # drawn with a margin
    last = view._last_render
    for _ in range(5):  # moving: the raster is transformed, not re-splatted
        view.viewbox.translateBy(x=0.01 * (x1 - x0))
        qtbot.wait(10)
    assert view._last_render == last
    qtbot.waitUntil(lambda: view._last_render > last, timeout=3000)  # at rest: re-rendered


def test_the_map_owns_its_projection_process_and_stops_it(qtbot):
    """The projection worker belongs to the map (not to a shared runner): started with it, stopped by its shutdown."""
    view = MapView(AppState(), method="pca", warm_up=False, process=True)
    qtbot.addWidget(view)
    worker = view.projection_worker
    assert worker is not None and view.projector.worker is worker and worker.is_alive()
    assert view.shutdown(5.0)
    assert not worker.is_alive()
    assert view.jobs.submit("late", lambda **k: None) == -1  # its runner is shut down too


def test_a_view_needs_a_fit_when_the_layout_leaves_it_or_shrinks_in_it_like_a_brute_force_check():
    from explorer.views.map.geometry import view_needs_fit

    rng = np.random.default_rng(5)
    for _ in range(300):
        xy = rng.normal(size=(200, 2)) * rng.uniform(0.1, 3, size=2) + rng.normal(size=2)
        view = tuple(tuple(sorted(rng.normal(size=2) * 3)) for _ in range(2))
        lo, hi = np.percentile(xy, 1, axis=0), np.percentile(xy, 99, axis=0)
        spans = [view[a][1] - view[a][0] for a in (0, 1)]
        out = any(lo[a] < view[a][0] - 0.05 * spans[a] or hi[a] > view[a][1] + 0.05 * spans[a] for a in (0, 1))
        small = all((hi[a] - lo[a]) < 0.4 * spans[a] for a in (0, 1))
        assert view_needs_fit(xy, view) == (out or small)


def test_a_new_epoch_that_shrinks_in_the_view_is_fitted_unless_the_user_zoomed(qtbot, run_dir):
    state, view = _open(qtbot, run_dir)
    view.fit_view()
    fitted = view.viewbox.viewRange()
    small = view.xy * 0.1  # the next layout is a tenth of the size: a dot in the middle of the view
    from trainer.analysis.projection import Layout

    layout = Layout(xy=small, method=view.layout.method, seconds=0.0)
    view._show_layout(1, layout, final=True)
    qtbot.waitUntil(lambda: not view._anim_timer.isActive(), timeout=3000)
    now = view.viewbox.viewRange()
    assert (now[0][1] - now[0][0]) < 0.5 * (fitted[0][1] - fitted[0][0])  # fitted to the new extent
    # a user's zoom (the mouse wheel) stays
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    vp = view.plot.viewport()
    pos = QPointF(vp.width() / 2, vp.height() / 2)
    QApplication.sendEvent(vp, QWheelEvent(pos, QPointF(vp.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, 240),
                                           Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                                           Qt.ScrollPhase.NoScrollPhase, False))
    qtbot.wait(50)
    zoomed = view.viewbox.viewRange()
    assert not np.allclose(zoomed, now)
    view._show_layout(2, Layout(xy=small * 20, method=view.layout.method, seconds=0.0), final=True)
    qtbot.waitUntil(lambda: not view._anim_timer.isActive(), timeout=3000)
    assert np.allclose(view.viewbox.viewRange(), zoomed)


def test_edits_are_drawn_on_the_map_and_follow_its_layout(qtbot, run_dir):
    """Issue 18 item 2: excluded images crossed out, relabelled ones ringed in their new class's colour."""
    from explorer.widgets.palette import class_colour

    state, view = _open(qtbot, run_dir)
    view.set_marks([3, 40], [70], [0])
    spots = view.edit_item.points()
    assert len(spots) == 3
    xs = sorted((round(s.pos().x(), 5), round(s.pos().y(), 5)) for s in spots)
    assert xs == sorted((round(float(view.xy[i, 0]), 5), round(float(view.xy[i, 1]), 5)) for i in (3, 40, 70))
    symbols = sorted(s.symbol() for s in spots)
    assert symbols == ["o", "x", "x"]
    ring = next(s for s in spots if s.symbol() == "o")
    assert ring.pen().color().getRgb()[:3] == class_colour(0)
    with qtbot.waitSignal(view.map_ready, timeout=60_000):  # another epoch: the marks move with the points
        state.set_epoch(1)
    qtbot.waitUntil(lambda: not view._anim_timer.isActive(), timeout=3000)
    p = next(s for s in view.edit_item.points() if s.symbol() == "o").pos()
    assert (round(p.x(), 4), round(p.y(), 4)) == (round(float(view.xy[70, 0]), 4), round(float(view.xy[70, 1]), 4))
    view.set_marks([], [], [])
    assert len(view.edit_item.points()) == 0


def test_the_legend_model_ticks_hides_and_shows_only_one_class(qtbot, run_dir):
    from PySide6.QtTest import QTest

    state, view = _open(qtbot, run_dir)
    model = view.legend_model
    assert model.rowCount() == 4 and model.data(model.index(2)) == "owl  (30)"
    assert model.data(model.index(2), Qt.ItemDataRole.ToolTipRole) == "owl: 30 images"
    assert model.flags(model.index(0)) & Qt.ItemFlag.ItemIsUserCheckable
    # a click on a class's tick box hides it (the mouse, on the list as a user clicks it)
    rect = view.legend.visualRect(model.index(1))
    QTest.mouseClick(view.legend.viewport(), Qt.MouseButton.LeftButton, pos=rect.center() - QPoint(
        rect.width() // 2 - 10, 0))
    qtbot.waitUntil(lambda: not model.is_checked(1), timeout=2000)
    assert 1 in view._hidden and not view._visible[view.labels == 1].any()
    # double-click: only that class
    view._on_legend_double_clicked(model.index(3))
    assert [model.is_checked(i) for i in range(4)] == [False, False, False, True]
    assert set(view.labels[view._visible].tolist()) == {3}
    view.set_class_visible(0, True)  # from code: the legend follows
    assert model.is_checked(0) and view._visible[view.labels == 0].all()


def test_a_map_that_fails_before_any_is_drawn_says_so_in_the_plot(qtbot, run_dir, monkeypatch):
    def broken(*args, progress, partial, is_cancelled):
        raise RuntimeError("the projection process ended unexpectedly")

    monkeypatch.setattr(mv_mod, "map_job", broken)
    state = AppState()
    view = MapView(state, method="pca", warm_up=False)
    qtbot.addWidget(view)
    view.show()
    state.set_run(RunReader(run_dir))
    qtbot.waitUntil(lambda: "Could not compute the map" in view.status.text(), timeout=10_000)
    assert view.layout is None and view.placeholder.isVisible()
    text = view.placeholder.textItem.toPlainText()
    assert "could not be computed" in text and "epoch 2" in text and "first epoch is committed" not in text
    # another run: the plot waits for its first epoch again
    state.set_run(None)
    assert view.placeholder.textItem.toPlainText() == mv_mod.PLACEHOLDER_WAITING
