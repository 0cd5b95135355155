"""Labels page follow-ups: the polygon tool paints exactly the drawn polygon, the window and its offsets are kept
across page switches, and a message flashed while the page switches to a newer label version is shown.

1. The polygon tool (streamlit-drawable-canvas 0.12, Fabric 7.4) closes a polygon as a Fabric ``Polygon`` with a
   2 px outline: the page applied the canvas *image*, and a polygon covered 1-2 px beyond its vertices. While its
   corners are being clicked it is a ``Path`` of ``M``/``L`` commands (its fill closes it), with corner handles
   drawn on the image. Both are now taken from their geometry (a pixel counts when its centre is inside).
2. Labels -> Train -> Labels kept the scene but reset the window size and offsets to their defaults.
3. A flash is about the scene's edit generation: a message flashed in the run in which the page switched to a
   label version another analyst saved meanwhile (a new edit, the next generation) was dropped unseen.
"""
from __future__ import annotations

import base64
import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_pages import HZ7, REPO, TIMEOUT, app, assert_ok, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common
from seghz.labels_edit import (
    boxes_mask,
    canvas_scale,
    drawn_polygons,
    offset_slider_max,
    polygon_strokes_rgba,
    polygons_mask,
    stroke_pixels,
)
from ui import labels as lui

# ------------------------------------------------------------------------------------------------ Fabric objects


def _common(**kw) -> dict:
    return {"version": "7.4.0", "fill": "rgba(34, 139, 34, 0.8)", "stroke": "rgba(34, 139, 34, 0.8)",
            "strokeWidth": 2, "strokeDashArray": None, "strokeLineCap": "butt", "strokeDashOffset": 0,
            "strokeLineJoin": "miter", "strokeUniform": False, "strokeMiterLimit": 4, "scaleX": 1, "scaleY": 1,
            "angle": 0, "flipX": False, "flipY": False, "opacity": 1, "shadow": None, "visible": True,
            "backgroundColor": "", "fillRule": "nonzero", "paintFirst": "fill",
            "globalCompositeOperation": "source-over", "skewX": 0, "skewY": 0, **kw}


def fabric_polygon(points, **kw) -> dict:
    """A closed polygon as the canvas's polygon tool sends it in ``json_data``: ``new Polygon(points, {strokeWidth,
    fill, stroke})`` with the clicked scene points, placed by Fabric at its bounding box's centre (default origin
    ``center`` in Fabric 7; ``left``/``top`` rounded to 4 decimals by ``toObject``), ``width``/``height`` the
    points' bounding box."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return _common(type="Polygon", originX="center", originY="center",
                   left=round((min(xs) + max(xs)) / 2, 4), top=round((min(ys) + max(ys)) / 2, 4),
                   width=max(xs) - min(xs), height=max(ys) - min(ys),
                   points=[{"x": x, "y": y} for x, y in points], **kw)


def fabric_open_path(points) -> dict:
    """The polygon being clicked (not closed yet): ``new Path("M x y L x y ...", {originX: "center", ...})``."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return _common(type="Path", originX="center", originY="center", left=(min(xs) + max(xs)) / 2,
                   top=(min(ys) + max(ys)) / 2, width=max(xs) - min(xs), height=max(ys) - min(ys),
                   path=[["M", *points[0]]] + [["L", x, y] for x, y in points[1:]])


def drawing(*objs: dict) -> dict:
    return {"version": "7.4.0", "objects": list(objs)}


def rendered(canvas_hw, mask_canvas: np.ndarray, spill: int = 2) -> np.ndarray:
    """The canvas image: the shape's fill plus its outline, ``spill`` px beyond it (dilated)."""
    import cv2

    grown = cv2.dilate(mask_canvas.astype(np.uint8), np.ones((2 * spill + 1, 2 * spill + 1), np.uint8)) > 0
    rgba = np.zeros((*canvas_hw, 4), np.uint8)
    rgba[grown] = (34, 139, 34, 204)
    return rgba


def brute_force_inside(tri, height, width, canvas_height, canvas_width) -> np.ndarray:
    """Independent count: the pixels whose centre (in canvas px) is strictly inside the triangle ``tri`` (sign of the
    three edge cross products), asserting that no centre lies on (or within 1e-6 px of) an edge."""
    sy, sx = canvas_height / height, canvas_width / width
    ii, jj = np.mgrid[0:height, 0:width]
    px, py = (jj + 0.5) * sx, (ii + 0.5) * sy
    signs = []
    for (xa, ya), (xb, yb) in zip(tri, tri[1:] + tri[:1]):
        cross = (xb - xa) * (py - ya) - (yb - ya) * (px - xa)
        dist = np.abs(cross) / math.hypot(xb - xa, yb - ya)
        assert dist.min() > 1e-6  # generic position: the count does not depend on how edges are counted
        signs.append(cross > 0)
    return (signs[0] & signs[1] & signs[2]) | (~signs[0] & ~signs[1] & ~signs[2])


TRIANGLE = [(37.3, 21.7), (301.9, 88.2), (120.6, 247.1)]  # canvas px, generic position


# ------------------------------------------------------------------------------------------------ 1. polygon geometry


def test_a_square_drawn_as_a_polygon_is_exactly_the_square():
    win = (100, 200, 512, 512)
    ch, cw, scale = canvas_scale(512, 512, 768, 512)
    assert scale == 1.0
    d = drawing(fabric_polygon([(100, 50), (155, 50), (155, 85), (100, 85)]))
    truth = boxes_mask([(100, 50, 155, 85)], 512, 512, 512, 512)
    assert truth.sum() == 55 * 35
    img = rendered((ch, cw), truth)
    assert (img[..., 3] > 0).sum() == 59 * 39  # what the page applied before: the outline too
    rgba = lui.canvas_strokes(img, d, "polygon", win, (ch, cw))
    px = stroke_pixels(rgba, win, (2000, 2000))
    assert px.sum() == 55 * 35
    r, c = np.nonzero(px)
    assert (r.min(), r.max(), c.min(), c.max()) == (100 + 50, 100 + 84, 200 + 100, 200 + 154)


@pytest.mark.parametrize("window_hw,canvas_hw", [((512, 512), (512, 512)), ((128, 128), (512, 512)),
                                                 ((1024, 1024), (768, 768)), ((100, 160), (300, 480))])
def test_a_triangle_covers_the_pixels_whose_centre_is_inside_at_any_scale(window_hw, canvas_hw):
    polys = drawn_polygons(drawing(fabric_polygon(TRIANGLE)))
    m = polygons_mask(polys, *window_hw, *canvas_hw)
    truth = brute_force_inside(TRIANGLE, *window_hw, *canvas_hw)
    assert truth.sum() > 100 and m.sum() == truth.sum() and (m == truth).all()
    # the same triangle while its corners are being clicked (an open Path, its fill closes it)
    m2 = polygons_mask(drawn_polygons(drawing(fabric_open_path(TRIANGLE))), *window_hw, *canvas_hw)
    assert (m2 == truth).all()


def test_squares_at_other_scales_and_the_edge_convention_of_rectangles():
    sq = [(40, 80), (260, 80), (260, 220), (40, 220)]  # 55x35 window pixels of a 128 px window shown at 4x
    m = polygons_mask(drawn_polygons(drawing(fabric_polygon(sq))), 128, 128, 512, 512)
    assert m.sum() == 55 * 35 and (m == boxes_mask([(40, 80, 260, 220)], 128, 128, 512, 512)).all()
    # pixel centres on the edges (a 0.75 scale): counted as a rectangle counts them (left/top in, right/bottom out)
    box = (30.0, 15.0, 60.0, 30.0)
    sq = [(box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])]
    m = polygons_mask(drawn_polygons(drawing(fabric_polygon(sq))), 1024, 1024, 768, 768)
    assert m.sum() == 40 * 20 and (m == boxes_mask([box], 1024, 1024, 768, 768)).all()
    # a right triangle: the hypotenuse passes through centres, which are out (as a rectangle's right edge)
    m = polygons_mask(drawn_polygons(drawing(fabric_polygon([(0, 0), (40, 0), (0, 40)]))), 64, 64, 64, 64)
    assert m.sum() == 39 * 40 // 2  # centres (j+.5, i+.5) with i + j < 39


def test_polygons_moved_scaled_rotated_flipped_in_edit_mode():
    base = fabric_polygon(TRIANGLE)
    cx, cy = base["left"], base["top"]  # the bounding box's centre: pathOffset

    def placed(f):  # the triangle mapped point by point
        return [f(x - cx, y - cy) for x, y in TRIANGLE]

    cases = [
        ({"left": cx + 17.5, "top": cy - 9.25}, placed(lambda u, v: (u + cx + 17.5, v + cy - 9.25))),
        ({"scaleX": 1.5, "scaleY": 0.5}, placed(lambda u, v: (1.5 * u + cx, 0.5 * v + cy))),
        ({"flipX": True}, placed(lambda u, v: (-u + cx, v + cy))),
        ({"angle": 90}, placed(lambda u, v: (-v + cx, u + cy))),
        # a top-left origin: left/top is the corner of the box with its stroke ((width + strokeWidth) * scale)
        ({"originX": "left", "originY": "top", "left": cx - (base["width"] + 2) / 2 + 3,
          "top": cy - (base["height"] + 2) / 2}, placed(lambda u, v: (u + cx + 3, v + cy))),
    ]
    for kw, tri in cases:
        (poly, rule), = drawn_polygons(drawing({**base, **kw}))
        m = polygons_mask([(poly, rule)], 400, 400, 400, 400)
        assert rule == "nonzero" and (m == brute_force_inside(tri, 400, 400, 400, 400)).all(), kw


def test_shapes_that_cannot_be_read_keep_the_canvas_image():
    img = rendered((64, 64), boxes_mask([(10, 10, 20, 20)], 64, 64, 64, 64))
    curve = _common(type="Path", originX="left", originY="top", left=0, top=0, width=10, height=10,
                    path=[["M", 0, 0], ["Q", 5, 5, 10, 0]])
    two_subpaths = fabric_open_path([(0, 0), (10, 0), (10, 10)])
    two_subpaths["path"] = two_subpaths["path"] + [["M", 20, 20], ["L", 30, 20]]
    rect = {"type": "Rect", "left": 1, "top": 1, "width": 5, "height": 5}
    for d in (drawing(fabric_polygon(TRIANGLE, skewX=10)), drawing(curve), drawing(two_subpaths),
              drawing(fabric_polygon(TRIANGLE), rect), drawing({**fabric_polygon(TRIANGLE), "points": "x"}),
              drawing({**fabric_polygon(TRIANGLE), "originX": "middle"}), None, {"objects": "x"}):
        assert polygon_strokes_rgba(img, d, 64, 64, 64, 64) is img
    assert polygon_strokes_rgba(None, drawing(fabric_polygon(TRIANGLE)), 64, 64, 64, 64) is None  # nothing sent
    # cleared on the canvas, or only one or two corners clicked so far: nothing enclosed
    for d in (drawing(), drawing(fabric_open_path([(5, 5)])), drawing(fabric_open_path([(5, 5), (30, 30)]))):
        assert lui.canvas_strokes(img, d, "polygon", (0, 0, 64, 64), (64, 64))[..., 3].sum() == 0
    # other tools keep the image
    assert lui.canvas_strokes(img, drawing(fabric_polygon(TRIANGLE)), "brush", (0, 0, 64, 64), (64, 64)) is img


def test_polygon_strokes_read_back_from_the_canvas_state():
    """``current_strokes`` (what Apply / Save read in their callback) uses the polygon too."""
    win = (0, 0, 128, 128)
    sq = [(40, 80), (260, 80), (260, 220), (40, 220)]
    d = drawing(fabric_polygon(sq))
    buf = io.BytesIO()
    Image.fromarray(rendered((512, 512), boxes_mask([(40, 80, 260, 220)], 512, 512, 512, 512)), "RGBA").save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    ss = {lui.CANVAS_CTX_KEY: {"scene_id": "s", "window": win, "class_index": 2, "gen": 0, "num_classes": 7,
                               "tool": "polygon", "prediction": None, "prediction_checkpoint": None, "key": "cv",
                               "canvas": (512, 512)},
          "cv": {"drawing": {"raw": d, "data": url}, "backgroundFit": None}}
    last = lui.current_strokes(ss, {"s": {"gen": 0}})
    assert stroke_pixels(last["rgba"], win, (128, 128)).sum() == 55 * 35


class PolygonCanvas:
    """streamlit-drawable-canvas after the analyst closed one polygon: its drawing and its image (outline around)."""

    def __init__(self):
        self.points, self.calls = None, []

    def __call__(self, **kw):
        self.calls.append(kw)
        if self.points is None or kw["drawing_mode"] != "polygon":
            return SimpleNamespace(image_data=None, json_data=kw.get("initial_drawing") or {"objects": []})
        d = drawing(fabric_polygon(self.points, strokeWidth=kw["stroke_width"]))
        hw = (kw["height"], kw["width"])
        inside = polygons_mask(drawn_polygons(d), *hw, *hw)
        return SimpleNamespace(image_data=rendered(hw, inside), json_data=d)


def test_labels_page_saves_exactly_the_drawn_polygon(ws, monkeypatch):  # noqa: F811
    cv = PolygonCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    original = ws.effective_label(sid, 0)
    cls = HZ7.names.index("Water") if "Water" in HZ7.names else 0
    at.selectbox(key="lbl_class").set_value(cls).run()
    at.radio(key="lbl_tool").set_value("polygon").run()
    assert_ok(at)
    kw = cv.calls[-1]
    assert (kw["height"], kw["width"]) == (512, 512) and kw["drawing_mode"] == "polygon"  # the 128 px scene at 4x
    tri = [(4 * x / 1.3, 4 * y / 1.3) for x, y in TRIANGLE]  # inside the 512 px canvas
    cv.points = tri
    at.run()
    truth = brute_force_inside(tri, 128, 128, 512, 512)
    assert truth.sum() > 50
    at.button(key="lbl_apply").click().run()
    assert_ok(at)
    assert any(f"Applied the strokes to your edit: {int(truth.sum()):,} label pixels" in i.value for i in at.info), \
        [i.value for i in at.info]
    cv.points = None
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert any("Saved label version 1" in s.value for s in at.success), [s.value for s in at.success]
    changed = ws.effective_label(sid) != original
    assert (changed == (truth & (original != cls))).all()  # nothing beyond the polygon (the outline spilled 1-2 px)


# ------------------------------------------------------------------------------------------------ 2. the window kept


def blank_canvas(**kw):
    return SimpleNamespace(image_data=None, json_data=kw.get("initial_drawing") or {"objects": []})


@pytest.fixture
def big(ws):  # noqa: F811
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene

    rgb, lbl = generate_scene(600, 5)  # larger than the smallest window: size selectbox and offset sliders in play
    write_rgb(ws.root / "big.png", rgb)
    write_index_mask(ws.root / "big_label.png", lbl, HZ7)
    return import_scene(ws, ws.root / "big.png", ws.root / "big_label.png", scheme="hz7", name="big", split="val")


def labels_via_the_app(monkeypatch) -> AppTest:
    monkeypatch.setattr(ui.common, "canvas", blank_canvas)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    return at


def window_shown(at: AppTest, sid: str) -> tuple:
    size = at.selectbox(key=f"lbl_size_{sid}").value
    row = at.slider(key=f"lbl_row_{sid}").value if 600 > size else None
    col = at.slider(key=f"lbl_col_{sid}").value if 600 > size else None
    return size, row, col


def test_the_window_and_its_offsets_are_kept_across_page_switches(ws, big, monkeypatch):  # noqa: F811
    at = labels_via_the_app(monkeypatch)
    at.selectbox(key="lbl_scene").set_value(big.id).run()
    at.selectbox(key=f"lbl_size_{big.id}").set_value(256).run()
    at.slider(key=f"lbl_row_{big.id}").set_value(160).run()
    at.slider(key=f"lbl_col_{big.id}").set_value(208).run()
    assert_ok(at)
    assert window_shown(at, big.id) == (256, 160, 208)
    for page in ("pages/4_Train.py", "pages/5_Align.py"):
        at.switch_page(page).run()
        assert_ok(at)
    assert f"lbl_size_{big.id}" not in at.session_state  # Streamlit dropped the widgets' state
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert at.selectbox(key="lbl_scene").value == big.id
    assert window_shown(at, big.id) == (256, 160, 208)
    assert any("Window rows 160–415, columns 208–463" in c.value for c in at.caption)
    # ... and the widgets stay normal widgets: a change is kept in turn
    at.slider(key=f"lbl_row_{big.id}").set_value(32).run()
    at.switch_page("app.py").run()
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert window_shown(at, big.id) == (256, 32, 208)


def test_a_kept_window_that_no_longer_fits_falls_back(ws, big, monkeypatch):  # noqa: F811
    at = labels_via_the_app(monkeypatch)
    at.selectbox(key="lbl_scene").set_value(big.id).run()
    assert_ok(at)
    at.switch_page("pages/4_Train.py").run()
    # the scene re-imported smaller meanwhile, say: a size no longer offered -> the page's defaults
    at.session_state[lui.WINDOWS_KEY] = {big.id: {"size": 2048, "row": 900, "col": 900}}
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert window_shown(at, big.id) == (600, None, None)
    # offsets beyond the sliders' range are clamped to it (the window itself is clamped into the scene)
    at.switch_page("pages/4_Train.py").run()
    at.session_state[lui.WINDOWS_KEY] = {big.id: {"size": 512, "row": 900, "col": -5}}
    at.switch_page("pages/3_Labels.py").run()
    assert_ok(at)
    assert window_shown(at, big.id) == (512, offset_slider_max(600 - 512), 0)
    assert any("Window rows 88–599, columns 0–511" in c.value for c in at.caption)


def test_restore_window_unit():
    ss = {lui.WINDOWS_KEY: {"s": {"size": 256, "row": 999, "col": 16}}}
    assert lui.restore_window(ss, "s", [256, 512, 600], 600, 300)
    assert ss["lbl_size_s"] == 256 and ss["lbl_row_s"] == offset_slider_max(344) and ss["lbl_col_s"] == 16
    ss = {lui.WINDOWS_KEY: {"s": {"size": 256, "row": 5, "col": 5}}, "lbl_size_s": 512}  # the widget has its state
    assert not lui.restore_window(ss, "s", [256, 512, 600], 600, 600) and ss["lbl_size_s"] == 512
    ss = {lui.WINDOWS_KEY: {"s": {"size": 256, "row": 5, "col": 5}}}  # no offsets where the window spans the scene
    assert lui.restore_window(ss, "s", [256], 256, 256) and "lbl_row_s" not in ss and "lbl_col_s" not in ss
    ss = {lui.WINDOWS_KEY: {"s": {"size": "x"}}}
    assert not lui.restore_window(ss, "s", [256], 600, 600) and "lbl_size_s" not in ss


# ------------------------------------------------------------------------------------------------ 3. flash kept


def test_a_message_flashed_while_the_page_switches_to_a_newer_version_is_shown(ws, monkeypatch):  # noqa: F811
    monkeypatch.setattr(ui.common, "canvas", blank_canvas)
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    assert_ok(at)
    original = ws.effective_label(sid, 0)
    px = np.zeros(original.shape, bool)
    px[0:4, 0:4] = True
    cls = next(c for c in range(HZ7.num_classes) if c not in np.unique(original[px]))
    v = ws.save_label_edit(sid, 0, "Bob", "brush", pixels=np.flatnonzero(px), values=cls)  # another analyst's save
    at.button(key="lbl_apply").click().run()  # its callback flashes; the run then shows Bob's version
    assert_ok(at)
    infos = [i.value for i in at.info]
    assert any(f"Showing label version {v}" in i for i in infos), infos
    assert "Nothing painted on the canvas yet." in infos
    # shown in the next run too (FLASH_RUNS), also when that run switches to a newer version again
    v2 = ws.save_label_edit(sid, v, "Bob", "brush", pixels=np.flatnonzero(px), values=next(
        c for c in range(HZ7.num_classes) if c != cls and c not in np.unique(original[px])))
    at.run()
    infos = [i.value for i in at.info]
    assert any(f"Showing label version {v2}" in i for i in infos) and "Nothing painted on the canvas yet." in infos
    at.run()  # then it is gone, as any flash after FLASH_RUNS runs
    assert "Nothing painted on the canvas yet." not in [i.value for i in at.info]


def test_show_flash_keeps_an_unshown_message_over_an_edit_change_only(monkeypatch):
    import streamlit as st

    ss: dict = {}
    shown: list = []
    monkeypatch.setattr(st, "session_state", ss)
    monkeypatch.setattr(st, "info", shown.append)
    monkeypatch.setattr(lui, "analyst_name", lambda: "Ann")
    ss[lui.SCENE_KEY] = "s"
    ss[lui.EDITS_KEY] = {"s": {"gen": 3}}
    lui.flash("info", "hello")
    ss[lui.EDITS_KEY]["s"]["gen"] = 4  # the page moved the edit on in the same run (before show_flash)
    lui.show_flash("edit")
    assert shown == ["hello"]
    ss[lui.EDITS_KEY]["s"]["gen"] = 5  # the analyst's own change after it was shown: dropped as before
    lui.show_flash("edit")
    assert shown == ["hello"] and "lbl_flash_edit" not in ss
    lui.flash("info", "other scene")
    ss[lui.SCENE_KEY] = "t"  # another scene: dropped even unshown
    lui.show_flash("edit")
    assert shown == ["hello"]
