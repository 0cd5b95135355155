"""Align page fixes: clicked points of the real canvas (fabric.js 6 "Circle"), the scheme default that the label
reads in, choices and the automatic result kept across page switches, canvases sized to the column, uploads."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streamlit.testing.v1 import AppTest

from seghz.classes import get_scheme
from seghz.data.io import write_index_mask, write_rgb
from seghz.geo.align_scene import canvas_points, parse_points
from seghz.store import Workspace

TIMEOUT = 120


def real_point(x: float, y: float, r: float = 4, sw: float = 2) -> dict:
    """A clicked point exactly as streamlit-drawable-canvas 0.13 (fabric.js 6, Circle.toObject) sends it."""
    return {"type": "Circle", "version": "6.7.1", "originX": "left", "originY": "center",
            "left": round(x - (r + sw / 2), 2), "top": round(y, 2), "width": 2 * r, "height": 2 * r,
            "fill": "rgba(255, 0, 255, 0.6)", "stroke": "#ff00ff", "strokeWidth": sw, "strokeDashArray": None,
            "strokeLineCap": "butt", "strokeDashOffset": 0, "strokeLineJoin": "miter", "strokeUniform": False,
            "strokeMiterLimit": 4, "scaleX": 1, "scaleY": 1, "angle": 0, "flipX": False, "flipY": False,
            "opacity": 1, "shadow": None, "visible": True, "backgroundColor": "", "fillRule": "nonzero",
            "paintFirst": "fill", "globalCompositeOperation": "source-over", "skewX": 0, "skewY": 0, "radius": r,
            "startAngle": 0, "endAngle": 360, "counterClockwise": False}


def test_canvas_points_reads_the_real_components_circles_and_both_origins():
    drawing = {"version": "6.7.1", "objects": [real_point(100.5, 50.5), {"type": "Path"}, real_point(10, 20, 6, 3)]}
    # a whole-number position is what a browser reports for a click anywhere on that canvas pixel: its middle
    np.testing.assert_allclose(canvas_points(drawing, 1.0), [[100, 50], [10, 20]])
    # fabric.js 7 defaults both origins to the centre: left/top are the centre itself
    centred = {**real_point(0, 0), "originX": "center", "originY": "center", "left": 30.5, "top": 40.5}
    np.testing.assert_allclose(canvas_points({"objects": [centred]}, 1.0), [[30, 40]])
    # origin top/left on both axes, a scaled object
    tl = {**real_point(0, 0), "originY": "top", "left": 10, "top": 10, "scaleX": 2, "scaleY": 2}
    np.testing.assert_allclose(canvas_points({"objects": [tl]}, 1.0), [[10 + 5 * 2, 10 + 5 * 2]])
    tl_frac = {**tl, "left": 10.25, "top": 10.25}  # a zoomed page reports fractions: kept as they are
    np.testing.assert_allclose(canvas_points({"objects": [tl_frac]}, 1.0), [[19.75, 19.75]])


@pytest.mark.parametrize("shape,width", [((800, 1000), 456), ((1280, 1536), 456), ((160, 200), 456), ((333, 997), 301)])
def test_canvas_size_maps_clicks_on_pixel_centres_to_those_pixels(shape, width):
    from ui.align_page import canvas_size

    h, w, (sx, sy) = canvas_size(shape, width)
    assert w <= width and w <= shape[1] and h <= shape[0]
    assert abs(sx - sy) < 0.01  # the aspect ratio is kept (to a rounding)
    rng = np.random.default_rng(0)
    px = np.c_[rng.integers(0, shape[1], 50), rng.integers(0, shape[0], 50)].astype(float)  # (x, y) pixels
    canvas_xy = (px + 0.5) * [sx, sy]  # where those pixels' centres are drawn on the canvas
    assert (canvas_xy[:, 0] <= w).all() and (canvas_xy[:, 1] <= h).all()
    frac = (np.round(canvas_xy, 2) % 1 != 0).all(1)  # a fractional position (a zoomed page) is that position
    got = canvas_points({"objects": [real_point(x, y) for x, y in canvas_xy[frac]]}, (sx, sy))
    np.testing.assert_allclose(got, px[frac], atol=0.02)  # fabric keeps 2 decimals
    # a browser at 100 % reports the whole canvas pixel under the pointer (Chromium floors 40.5 and 40.9 to 40):
    # read as that canvas pixel's middle, the clicks land within half a canvas pixel and unbiased on average
    # (read as the pixel's edge they sat 0.5 / scale image px up and left of the pixel under the mouse)
    px = np.c_[rng.uniform(0, shape[1] - 1, 4000), rng.uniform(0, shape[0] - 1, 4000)]
    floored = np.floor((px + 0.5) * [sx, sy])
    got = canvas_points({"objects": [real_point(x, y) for x, y in floored]}, (sx, sy))
    err = got - px
    assert (np.abs(err) <= 0.5 / np.array([sx, sy]) + 1e-6).all()
    assert (np.abs(err.mean(0)) < 0.1 / np.array([sx, sy])).all()


def test_clamp_width():
    from ui.align_page import MAX_WIDTH, MIN_WIDTH, clamp_width

    assert clamp_width(None) is None and clamp_width("x") is None and clamp_width(0) is None
    assert clamp_width(513) == 512 and clamp_width(50) == MIN_WIDTH and clamp_width(5000) == MAX_WIDTH


@pytest.fixture
def pair(tmp_path, monkeypatch):
    """An hz20-only label (class 9 has no hz7/hz14 colour) and an image, a workspace whose active model is hz7."""
    from test_align import homography, render_image, synthetic_label

    lbl = synthetic_label(160, 200, seed=5, classes=8)
    lbl[:20, :20] = 9  # High_Buildings2: only hz20 has it
    img = render_image(lbl, homography(), (250, 300), seed=5)
    lp, ip = tmp_path / "label.png", tmp_path / "image.png"
    write_index_mask(lp, lbl, get_scheme("hz20"))
    write_rgb(ip, img)
    ws = Workspace(tmp_path / "ws")
    f = ws.root / "checkpoints" / "m.safetensors"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"x")
    ws.set_active_checkpoint(ws.register_checkpoint(f, {"scheme": "hz7"}, checkpoint_id="m", name="hz7 model"))
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SEGHZ_WORKSPACE", str(ws.root))
    monkeypatch.setenv("SEGHZ_NO_DEMO", "1")
    monkeypatch.setenv("SEGHZ_IMPORT_ROOTS", str(tmp_path))
    return lp, ip, ws


def _open(lp, ip, app: bool = False) -> AppTest:
    if app:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
        at.switch_page("pages/5_Align.py").run()
    else:
        at = AppTest.from_file(str(REPO / "pages" / "5_Align.py"), default_timeout=TIMEOUT).run()
    at.text_input(key="al_label").set_value(str(lp))
    at.text_input(key="al_image").set_value(str(ip))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_scheme_defaults_to_the_one_the_label_reads_in_without_a_red_error(pair):
    lp, ip, _ = pair
    at = _open(lp, ip)
    assert at.selectbox(key="al_scheme").value == "hz20"
    assert not at.main.error, [e.value for e in at.main.error]
    assert "does not read as hz7" in at.selectbox(key="al_scheme").help
    # chosen by hand, the choice stands (and the page says why it does not read)
    at.selectbox(key="al_scheme").set_value("hz7").run()
    assert at.selectbox(key="al_scheme").value == "hz7"
    assert any("not a hz7 label" in str(e.value) for e in at.main.error)


def test_clicked_real_canvas_points_are_counted_and_canvases_fit_the_column(pair, monkeypatch):
    import ui.align_page
    import ui.common

    lp, ip, _ = pair
    calls = []

    def fake_canvas(**kw):
        calls.append(kw)
        pts = [(10, 12), (50, 60), (90, 30), (120, 100)]
        return SimpleNamespace(json_data={"version": "6.7.1", "objects": [real_point(x, y) for x, y in pts]})

    monkeypatch.setattr(ui.common, "canvas", fake_canvas)
    monkeypatch.setattr(ui.align_page, "column_width", lambda key="al_measure": 152)
    at = _open(lp, ip)
    at.toggle(key="al_click").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    caps = [str(c.value) for c in at.caption]
    assert "label: 4 point(s) clicked" in caps and "image: 4 point(s) clicked" in caps, caps
    assert not at.button(key="al_click_add").disabled
    assert calls and all(c["width"] <= 152 for c in calls), [c["width"] for c in calls]
    at.button(key="al_click_add").click().run()
    assert len(at.session_state["al_points"]) == 4


def test_choices_and_the_automatic_result_survive_a_visit_to_another_page(pair):
    lp, ip, _ = pair
    at = _open(lp, ip, app=True)
    at.radio(key="al_kind").set_value("affine").run()
    at.checkbox(key="al_local").check().run()
    at.checkbox(key="al_local").uncheck().run()
    at.button(key="al_auto_btn").click().run()
    assert not at.exception, [e.value for e in at.exception]
    auto = at.session_state["al_auto"]
    assert any("Automatic (affine)" in str(m.value) for m in at.markdown)
    at.slider(key="al_opacity").set_value(0.7).run()
    at.selectbox(key="al_split").set_value("val").run()
    at.switch_page("app.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("pages/5_Align.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="al_label").value == str(lp) and at.text_input(key="al_image").value == str(ip)
    assert at.selectbox(key="al_scheme").value == "hz20"
    assert at.radio(key="al_kind").value == "affine"
    assert at.session_state["al_auto"] is auto  # not recomputed, not dropped
    assert any("Automatic (affine)" in str(m.value) for m in at.markdown)
    assert at.slider(key="al_opacity").value == 0.7 and at.selectbox(key="al_split").value == "val"
    # another input: the result goes
    at.radio(key="al_kind").set_value("similarity").run()
    assert "al_auto" in at.session_state  # the transform kind of the next run is not an input of this result
    write_rgb(ip, np.zeros((250, 300, 3), np.uint8))  # the image file changed
    at.run()
    assert "al_auto" not in at.session_state


def test_upload_control_points_json_csv_and_a_clear_error(pair, tmp_path):
    lp, ip, _ = pair
    at = _open(lp, ip)
    rows = [[10, 10, 20, 22], [150, 12, 240, 30], [20, 140, 40, 210], [180, 150, 270, 230]]
    at.file_uploader(key="al_points_upload").set_value(
        ("pts.csv", ("label_x,label_y,image_x,image_y\n" + "\n".join(",".join(map(str, r)) for r in rows)).encode(),
         "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    np.testing.assert_allclose(at.session_state["al_points"].to_numpy(float), rows)
    assert any("Loaded 4 control point(s) from pts.csv" in str(s.value) for s in at.success)
    doc = {"points": [{"label_xy": r[:2], "image_xy": r[2:]} for r in rows[:3]]}
    at.file_uploader(key="al_points_upload").set_value(("p.json", json.dumps(doc).encode(), "application/json")).run()
    assert len(at.session_state["al_points"]) == 3
    at.file_uploader(key="al_points_upload").set_value(("bad.csv", b"label_x,label_y,image_x\n1,2,3\n", "text/csv")).run()
    err = [str(e.value) for e in at.error]
    assert any("bad.csv" in e and "lacks the column(s) image_y" in e for e in err), err
    assert len(at.session_state["al_points"]) == 3  # the table is left as it was


def test_parse_points_errors_name_the_problem():
    with pytest.raises(ValueError, match="row 2 has 3 column"):
        parse_points(b"1,2,3,4\n1,2,3\n", "f.csv")
    with pytest.raises(ValueError, match="not a readable JSON"):
        parse_points(b"{nope", "f.json")
    with pytest.raises(ValueError, match="finite numbers"):
        parse_points(b"1,2,inf,4\n", "f.csv")
    src, dst, _ = parse_points("\ufefflabel_x,image_x,label_y,image_y,id\n1,3,2,4,a\n", "f.csv")
    np.testing.assert_allclose(np.c_[src, dst], [[1, 2, 3, 4]])
