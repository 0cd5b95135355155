"""A rectangle painted on the Labels canvas covers exactly the drawn box, not its outline.

The rect tool draws a Fabric ``Rect`` with a 2 px stroke; the page applied the canvas *image*, outline included: a
55×35 px box saved 59×39 = 2,301 px, and "accept prediction (rectangle)" spilled the same way. The box is now taken
from the rectangle's geometry in the canvas drawing (Fabric JSON), as streamlit-drawable-canvas's rect tool makes it
(``left``/``top`` at the press, ``originX="left"``, ``originY="top"``, ``strokeUniform``, ``width``/``height`` the
drag; Fabric places the stroked box's corner at ``left``/``top``, the geometry ``strokeWidth / 2`` inside it).
"""
from __future__ import annotations

import base64
import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from test_pages import HZ7, app, assert_ok, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common
from seghz.labels_edit import boxes_mask, canvas_scale, drawn_boxes, rect_strokes_rgba, stroke_pixels
from ui import labels as lui


def fabric_rect(left: float, top: float, width: float, height: float, stroke_width: float = 2, **kw) -> dict:
    """A rectangle as streamlit-drawable-canvas 0.12 (Fabric 7.4) sends it in ``json_data`` (``canvas.toJSON()``)."""
    return {"type": "Rect", "version": "7.4.0", "originX": "left", "originY": "top", "left": left, "top": top,
            "width": width, "height": height, "fill": "rgba(34, 139, 34, 0.8)", "stroke": "rgba(34, 139, 34, 0.8)",
            "strokeWidth": stroke_width, "strokeDashArray": None, "strokeLineCap": "butt", "strokeDashOffset": 0,
            "strokeLineJoin": "miter", "strokeUniform": True, "strokeMiterLimit": 4, "scaleX": 1, "scaleY": 1,
            "angle": 0, "flipX": False, "flipY": False, "opacity": 1, "shadow": None, "visible": True,
            "backgroundColor": "", "fillRule": "nonzero", "paintFirst": "fill", "globalCompositeOperation":
            "source-over", "skewX": 0, "skewY": 0, "rx": 0, "ry": 0, **kw}


def drawing(*objs: dict) -> dict:
    return {"version": "7.4.0", "objects": list(objs)}


def rendered(canvas_hw: tuple[int, int], *boxes: tuple[float, float, float, float], spill: int = 2) -> np.ndarray:
    """The canvas image the browser sends: each box's fill plus its outline, anti-aliased, ``spill`` px beyond the
    geometry on every side (what the analyst measured: 59×39 for a 55×35 box)."""
    rgba = np.zeros((*canvas_hw, 4), np.uint8)
    for box in boxes:
        r, c = np.nonzero(boxes_mask([box], *canvas_hw, *canvas_hw))
        rgba[r.min() - spill : r.max() + 1 + spill, c.min() - spill : c.max() + 1 + spill] = (34, 139, 34, 204)
    return rgba


def extent(mask: np.ndarray) -> tuple[int, int, int, int, int]:
    r, c = np.nonzero(mask)
    return int(mask.sum()), int(r.min()), int(r.max()), int(c.min()), int(c.max())


# ------------------------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("left,top", [(100, 50), (100.5, 50.5), (99.7, 49.2)])
def test_a_55_by_35_box_at_scale_1_is_exactly_55_by_35_pixels(left, top):
    win = (300, 400, 512, 512)  # the airport scene at scale 1 (a 512 px window on a 512 px canvas)
    ch, cw, scale = canvas_scale(512, 512, 768, 512)
    assert (ch, cw, scale) == (512, 512, 1.0)
    d = drawing(fabric_rect(left, top, 55, 35))
    (x0, y0, x1, y1), = drawn_boxes(d)
    assert (x0, y0, x1 - x0, y1 - y0) == pytest.approx((left + 1, top + 1, 55, 35))  # the stroke's half is outside
    canvas_img = rendered((ch, cw), (x0, y0, x1, y1))
    assert extent(canvas_img[..., 3] > 0)[0] == 59 * 39  # what the page applied before: the outline too
    rgba = lui.canvas_strokes(canvas_img, d, "rect", win, (ch, cw))
    px = stroke_pixels(rgba, win, (2000, 2000))
    n, r0, r1, c0, c1 = extent(px)
    assert n == 55 * 35 and (r1 - r0 + 1, c1 - c0 + 1) == (35, 55)
    assert (r0, c0) == (300 + math.ceil(y0 - 0.5), 400 + math.ceil(x0 - 0.5))  # where the box is on the canvas


def test_box_on_a_scaled_canvas_maps_to_window_pixels_by_pixel_centres():
    # a 128 px window shown at 4x: a box of 220x140 canvas px is 55x35 window pixels
    m = boxes_mask(drawn_boxes(drawing(fabric_rect(39, 79, 220, 140))), 128, 128, 512, 512)
    assert extent(m) == (55 * 35, 20, 54, 10, 64)
    # a 1024 px window shown at 0.75: 0.75 canvas px per pixel
    m = boxes_mask([(30.0, 15.0, 30.0 + 0.75 * 40, 15.0 + 0.75 * 20)], 1024, 1024, 768, 768)
    assert extent(m) == (40 * 20, 20, 39, 40, 79)


def test_rects_moved_or_resized_in_edit_mode_and_other_origins():
    # resized in edit mode: scaleX/Y grow the box, the uniform stroke stays 2 px
    (b,) = drawn_boxes(drawing(fabric_rect(10, 20, 50, 40, scaleX=2, scaleY=0.5)))
    assert b == pytest.approx((11, 21, 111, 41))
    # a centre origin: left/top is the box's centre
    (b,) = drawn_boxes(drawing(fabric_rect(100, 100, 20, 10, originX="center", originY="center")))
    assert b == pytest.approx((90, 95, 110, 105))
    # without strokeUniform the stroke is scaled with the box
    (b,) = drawn_boxes(drawing(fabric_rect(0, 0, 10, 10, strokeUniform=False, scaleX=3, scaleY=3)))
    assert b == pytest.approx((3, 3, 33, 33))
    # several rectangles: their union; one partly off the window is clipped
    m = boxes_mask(drawn_boxes(drawing(fabric_rect(-11, -11, 20, 20), fabric_rect(49, 49, 10, 10))), 64, 64, 64, 64)
    assert m.sum() == 10 * 10 + 10 * 10 and m[0, 0] and m[9, 9] and not m[10, 10] and m[50:60, 50:60].all()


def test_anything_but_axis_aligned_rects_keeps_the_canvas_image():
    img = rendered((64, 64), (10, 10, 20, 20))
    for d in (drawing(fabric_rect(10, 10, 10, 10, angle=30)), drawing(fabric_rect(10, 10, 10, 10, skewX=5)),
              drawing(fabric_rect(10, 10, 10, 10), {"type": "Path", "path": []}), None, {"objects": "x"}):
        assert rect_strokes_rgba(img, d, 64, 64, 64, 64) is img
    assert rect_strokes_rgba(None, drawing(fabric_rect(1, 1, 5, 5)), 64, 64, 64, 64) is None  # nothing sent
    assert lui.canvas_strokes(img, drawing(fabric_rect(1, 1, 5, 5)), "brush", (0, 0, 64, 64), (64, 64)) is img
    assert lui.canvas_strokes(img, drawing(), "rect", (0, 0, 64, 64), (64, 64))[..., 3].sum() == 0  # cleared


def test_accept_prediction_rectangle_takes_exactly_the_box(ws):  # noqa: F811
    """The "accept prediction (rectangle)" tool: only the drawn box takes the prediction."""
    from seghz.labels_edit import apply_tool

    win = (0, 0, 128, 128)
    d = drawing(fabric_rect(39, 79, 220, 140))
    rgba = lui.canvas_strokes(rendered((512, 512), *drawn_boxes(d)), d, "accept", win, (512, 512))
    label = np.zeros((128, 128), np.uint8)
    pred = np.full((128, 128), 3, np.uint8)
    out, touched = apply_tool(label, stroke_pixels(rgba, win, label.shape), "accept", 0, win, prediction=pred,
                              num_classes=HZ7.num_classes)
    assert extent(touched) == (55 * 35, 20, 54, 10, 64) and (out == 3).sum() == 55 * 35


def test_strokes_read_back_from_the_canvas_state_use_the_box(ws):  # noqa: F811
    """``current_strokes``: what a callback (Apply, Save) reads from the canvas's widget state, before the page draws
    the canvas, is the box too."""
    win = (0, 0, 128, 128)
    d = drawing(fabric_rect(39, 79, 220, 140))
    buf = io.BytesIO()
    Image.fromarray(rendered((512, 512), *drawn_boxes(d)), "RGBA").save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    ss = {lui.CANVAS_CTX_KEY: {"scene_id": "s", "window": win, "class_index": 2, "gen": 0, "num_classes": 7,
                               "tool": "rect", "prediction": None, "prediction_checkpoint": None, "key": "cv",
                               "canvas": (512, 512)},
          "cv": {"drawing": {"raw": d, "data": url}, "backgroundFit": None}}
    last = lui.current_strokes(ss, {"s": {"gen": 0}})
    assert "canvas" not in last and last["tool"] == "rect"
    assert extent(stroke_pixels(last["rgba"], win, (128, 128))) == (55 * 35, 20, 54, 10, 64)


# ------------------------------------------------------------------------------------------------ the page


class RectCanvas:
    """streamlit-drawable-canvas after the analyst dragged one rectangle: its drawing (Fabric JSON) and its image,
    the outline painted around the box."""

    def __init__(self, rect: dict | None = None):
        self.rect, self.calls = rect, []

    def __call__(self, **kw):
        self.calls.append(kw)
        if self.rect is None or kw["drawing_mode"] != "rect":
            return SimpleNamespace(image_data=None, json_data=kw.get("initial_drawing") or {"objects": []})
        d = drawing(self.rect)
        return SimpleNamespace(image_data=rendered((kw["height"], kw["width"]), *drawn_boxes(d)), json_data=d)


def test_labels_page_applies_and_saves_exactly_the_drawn_rectangle(ws, monkeypatch):  # noqa: F811
    cv = RectCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    original = ws.effective_label(sid, 0)
    cls = next(c for c in range(HZ7.num_classes) if c not in np.unique(original[20:55, 10:65]))
    at.selectbox(key="lbl_class").set_value(cls).run()
    at.radio(key="lbl_tool").set_value("rect").run()
    assert_ok(at)
    kw = cv.calls[-1]
    assert (kw["height"], kw["width"]) == (512, 512) and kw["drawing_mode"] == "rect"  # the 128 px scene at 4x
    cv.rect = fabric_rect(39, 79, 220, 140, stroke_width=kw["stroke_width"])  # 55x35 scene pixels
    at.run()
    at.button(key="lbl_apply").click().run()
    assert_ok(at)
    assert any("Applied the strokes to your edit: 1,925 label pixels" in i.value for i in at.info), \
        [i.value for i in at.info]
    cv.rect = None
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    changed = ws.effective_label(sid) != original
    assert extent(changed) == (55 * 35, 20, 54, 10, 64)
