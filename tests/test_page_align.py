"""AppTest of pages/5_Align.py on synthetic files: control points -> RMSE, automatic matching, save as a scene."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streamlit.testing.v1 import AppTest

from seghz.classes import get_scheme
from seghz.data.io import write_index_mask, write_rgb
from seghz.geo import align as A
from seghz.store import Workspace

TIMEOUT = 120


def _texts(at) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


@pytest.fixture
def files(tmp_path, monkeypatch):
    from test_align import homography, render_image, synthetic_label

    lbl = synthetic_label(160, 200, seed=5, classes=8)  # hz20 indices 0..7
    M = homography()
    img = render_image(lbl, M, (250, 300), seed=5)
    lp, ip = tmp_path / "label.png", tmp_path / "image.png"
    write_index_mask(lp, lbl, get_scheme("hz20"))  # palette PNG in hz20 colours
    write_rgb(ip, img)
    src = np.array([[10, 10], [190, 12], [15, 150], [185, 145], [100, 80], [60, 120]], float)
    pts = tmp_path / "points.json"
    pts.write_text(json.dumps({"points": [{"id": str(i), "label_xy": s.tolist(), "image_xy": d.tolist()}
                                          for i, (s, d) in enumerate(zip(src, A.apply_transform(M, src)))]}))
    ws = Workspace(tmp_path / "ws")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SEGHZ_WORKSPACE", str(ws.root))
    monkeypatch.setenv("SEGHZ_NO_DEMO", "1")
    return lp, ip, pts, ws, M


def test_align_page_points_auto_and_save(files):
    lp, ip, pts, ws, M = files
    at = AppTest.from_file(str(REPO / "pages" / "5_Align.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.text_input(key="al_label").set_value(str(lp))
    at.text_input(key="al_image").set_value(str(ip))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Add control points" in _texts(at)
    at.text_input(key="al_points_path").set_value(str(pts))
    at.button(key="al_points_load").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    t = _texts(at)
    assert "Manual homography: RMSE 0.00 px" in t, t
    assert "plain resize" in t
    # automatic matching on the same pair
    at.button(key="al_auto_btn").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    t = _texts(at)
    assert "Automatic (homography)" in t, t
    auto_rmse = float(t.split("RMSE on the 6 control points ")[1].split(" px")[0])
    assert auto_rmse < 2.0
    # the same with the local (non-rigid) refinement: used and reported, or refused with the reason
    at.checkbox(key="al_local").check()
    at.button(key="al_auto_btn").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    t = _texts(at)
    assert "ecc+windows+local" in t and "global homography alone" in t and "Local field:" in t, t
    assert float(t.split("RMSE on the 6 control points ")[1].split(" px")[0]) < 2.0
    # save with the manual fit
    at.radio(key="al_use").set_value("manual fit")
    at.text_input(key="al_name").set_value("synthetic aligned")
    at.button(key="al_save").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Saved scene 'synthetic aligned'" in str(s.value) for s in at.success), _texts(at)
    sc = next(s for s in ws.list_scenes() if s.name == "synthetic aligned")
    assert (sc.width, sc.height) == (300, 250) and sc.scheme == "hz20"
    assert "manual (6 control points)" in sc.source and "RMSE 0.00 px" in sc.source
    rec = json.loads((ws.scene_path(sc, "image").parent / "alignment.json").read_text())
    np.testing.assert_allclose(np.array(rec["matrix"]), M, atol=1e-6)
    assert rec["method"].startswith("manual") and rec["rmse_px"] == 0.0 and rec["label_file"] == str(lp)
    # and with the automatic + local result: the field is saved with the scene
    at.radio(key="al_use").set_value("automatic")
    at.text_input(key="al_name").set_value("synthetic local")
    at.button(key="al_save").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    sc = next(s for s in ws.list_scenes() if s.name == "synthetic local")
    assert "homography+local field" in sc.source
    rec = json.loads((ws.scene_path(sc, "image").parent / "alignment.json").read_text())
    assert rec["refinement"] == "local" and rec["local"]["field"]["dx"]
    from seghz.geo.align import LocalWarp
    from seghz.geo.align_scene import load_transform

    assert isinstance(load_transform(rec), LocalWarp)


def test_align_page_bad_file(files, tmp_path):
    _lp, ip, *_ = files
    at = AppTest.from_file(str(REPO / "pages" / "5_Align.py"), default_timeout=TIMEOUT)
    at.run()
    at.text_input(key="al_label").set_value(str(tmp_path / "missing.png"))
    at.text_input(key="al_image").set_value(str(ip))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("does not exist" in str(e.value) for e in at.error)


def test_align_page_blank_path_or_folder(files, tmp_path):
    """A path of only spaces is no path (it was stripped to "" and read as the folder "."), and a folder is named
    as one (it read "corrupt or truncated label image ([Errno 21] Is a directory)")."""
    _lp, ip, *_ = files
    at = AppTest.from_file(str(REPO / "pages" / "5_Align.py"), default_timeout=TIMEOUT)
    at.run()
    at.text_input(key="al_label").set_value("   ")
    at.text_input(key="al_image").set_value(str(ip))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("Give a label file and an image" in str(e.value) for e in at.info)
    at.text_input(key="al_label").set_value(str(tmp_path))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [str(e.value) for e in at.error] == [f"{tmp_path}: is a folder, not a file (give the label image file itself)"]


def test_canvas_points_are_the_click_positions_in_image_pixels():
    from seghz.geo.align_scene import canvas_points

    # what the canvas stores for clicks at (100, 50) and (20.5, 7) with radius 4 and stroke 2, shown at scale 0.5
    objs = {"objects": [
        {"type": "circle", "left": 100 - 5, "top": 50, "radius": 4, "strokeWidth": 2, "originX": "left", "originY": "center"},
        {"type": "path"},
        {"type": "circle", "left": 20.5 - 5, "top": 7, "radius": 4, "strokeWidth": 2, "originX": "left", "originY": "center"},
    ]}
    np.testing.assert_allclose(canvas_points(objs, 0.5), [[200, 100], [41, 14]])
    assert canvas_points(None, 1.0).shape == (0, 2)
    with pytest.raises(ValueError, match="scale"):
        canvas_points(objs, 0)


def test_align_page_clicked_pairs_go_into_the_table(files, monkeypatch):
    from types import SimpleNamespace

    import ui.common

    lp, ip, pts, ws, M = files
    clicks = {"label": [(20, 30), (150, 40), (40, 120), (170, 130)], "image": []}
    calls = []

    def fake_canvas(**kw):
        calls.append(kw)
        which = "label" if "_label_" in kw["key"] else "image"
        r, sw = kw["point_display_radius"], kw["stroke_width"]
        objs = [{"type": "circle", "left": x - r - sw / 2, "top": y, "radius": r, "strokeWidth": sw, "originX": "left",
                 "originY": "center"} for x, y in clicks[which]]
        return SimpleNamespace(json_data={"objects": objs}, image_data=None)

    monkeypatch.setattr(ui.common, "canvas", fake_canvas)
    at = AppTest.from_file(str(REPO / "pages" / "5_Align.py"), default_timeout=TIMEOUT)
    at.run()
    at.text_input(key="al_label").set_value(str(lp))
    at.text_input(key="al_image").set_value(str(ip))
    at.toggle(key="al_click").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert {c["drawing_mode"] for c in calls} == {"point"}
    assert at.button(key="al_click_add").disabled  # no image points yet: no pairs
    # the same features clicked on the image (the true transform, at the image canvas' scale)
    img_scale = next(c for c in reversed(calls) if "_image_" in c["key"])["width"] / 300
    lbl_scale = next(c for c in reversed(calls) if "_label_" in c["key"])["width"] / 200
    truth = A.apply_transform(M, np.array(clicks["label"], float) / lbl_scale)
    clicks["image"] = [tuple(p * img_scale) for p in truth]
    at.run()
    at.button(key="al_click_add").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.session_state["al_points"]
    assert len(table) == 4
    np.testing.assert_allclose(table[["label_x", "label_y"]].to_numpy(), np.array(clicks["label"]) / lbl_scale, atol=1e-6)
    np.testing.assert_allclose(table[["image_x", "image_y"]].to_numpy(), truth, atol=1e-6)
    assert "RMSE" in _texts(at)  # the manual fit on the clicked pairs is shown live
