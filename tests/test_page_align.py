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
    # the score is explained: what it measures, its range, and the plain resize's score to compare with
    assert "share of the image's grey-level variance" in t and "0 to 1, higher is better" in t, t
    assert "the plain resize scores" in t
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

    # what the canvas (streamlit-drawable-canvas 0.13, fabric.js 6: type "Circle") stores for clicks at (100, 50)
    # and (20.5, 7) with radius 4 and stroke 2, shown at scale 0.5; image pixel centres are at integers
    objs = {"objects": [
        {"type": "Circle", "left": 100 - 5, "top": 50, "radius": 4, "strokeWidth": 2, "originX": "left", "originY": "center"},
        {"type": "Path"},
        {"type": "Circle", "left": 20.5 - 5, "top": 7, "radius": 4, "strokeWidth": 2, "originX": "left", "originY": "center"},
    ]}
    # a whole number is the canvas pixel a browser reports for a click anywhere on it: read as its middle
    # (100.5 / 0.5 - 0.5 = 200.5); a fraction (20.5, from a zoomed page) is kept
    np.testing.assert_allclose(canvas_points(objs, 0.5), [[200.5, 100.5], [40.5, 14.5]])
    assert canvas_points(None, 1.0).shape == (0, 2)
    with pytest.raises(ValueError, match="scale"):
        canvas_points(objs, 0)


def test_align_page_clicked_pairs_go_into_the_table(files, monkeypatch):
    from types import SimpleNamespace

    import ui.common

    lp, ip, pts, ws, M = files
    clicks = {"label": [(20.25, 30.25), (150.25, 40.25), (40.25, 120.25), (170.25, 130.25)], "image": []}  # fractions: exact
    calls = []

    def fake_canvas(**kw):
        calls.append(kw)
        which = "label" if "_label_" in kw["key"] else "image"
        r, sw = kw["point_display_radius"], kw["stroke_width"]
        objs = [{"type": "Circle", "left": x - r - sw / 2, "top": y, "radius": r, "strokeWidth": sw, "originX": "left",
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
    ic = next(c for c in reversed(calls) if "_image_" in c["key"])
    lc = next(c for c in reversed(calls) if "_label_" in c["key"])
    img_scale = np.array([ic["width"] / 300, ic["height"] / 250])  # canvas px per image px, each axis
    lbl_scale = np.array([lc["width"] / 200, lc["height"] / 160])
    truth = A.apply_transform(M, np.array(clicks["label"], float) / lbl_scale - 0.5)  # pixel centres at integers
    clicks["image"] = [tuple((p + 0.5) * img_scale) for p in truth]
    at.run()
    at.button(key="al_click_add").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.session_state["al_points"]
    assert len(table) == 4
    np.testing.assert_allclose(table[["label_x", "label_y"]].to_numpy(), np.array(clicks["label"]) / lbl_scale - 0.5,
                               atol=1e-6)
    np.testing.assert_allclose(table[["image_x", "image_y"]].to_numpy(), truth, atol=1e-6)
    assert "RMSE" in _texts(at)  # the manual fit on the clicked pairs is shown live


def _load_points(at, pts):
    at.text_input(key="al_points_path").set_value(str(pts))
    at.button(key="al_points_load").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def _open(lp, ip):
    at = AppTest.from_file(str(REPO / "pages" / "5_Align.py"), default_timeout=TIMEOUT)
    at.run()
    at.text_input(key="al_label").set_value(str(lp))
    at.text_input(key="al_image").set_value(str(ip))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_align_page_saving_the_same_alignment_twice_makes_no_silent_duplicate(files):
    """Saving twice made scenes b_sat-aligned and b_sat-aligned-2, both named "B_sat aligned", which the scene
    pickers could not tell apart. Now the second save says the alignment is saved already and offers to open it;
    a copy made anyway, or another alignment saved under the same name, gets a distinct name."""
    lp, ip, pts, ws, _M = files
    at = _open(lp, ip)
    _load_points(at, pts)
    at.text_input(key="al_name").set_value("twice")
    at.button(key="al_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [s.name for s in ws.list_scenes()] == ["twice"]
    first = ws.list_scenes()[0]
    # the same alignment again: said so, nothing created, the scene can be opened
    at.button(key="al_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [s.name for s in ws.list_scenes()] == ["twice"]
    warn = "\n".join(w.value for w in at.warning)
    assert f"already saved as scene 'twice' ({first.id}" in warn and "Nothing new was saved" in warn, warn
    assert not at.success
    assert at.button(key="al_dup_labels") and at.button(key="al_dup_map")
    at.run()  # the notice stays while the alignment shown is that scene's
    assert any("already saved as scene 'twice'" in w.value for w in at.warning)
    # a copy on purpose: a distinct name
    at.button(key="al_dup_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert sorted(s.name for s in ws.list_scenes()) == ["twice", "twice (2)"]
    assert any("Saved scene 'twice (2)'" in s.value for s in at.success), _texts(at)
    assert not any("already saved" in w.value for w in at.warning)
    # another alignment (affine instead of homography) under the same name: saved, with the next free name
    at.radio(key="al_kind").set_value("affine").run()
    assert not any("already saved" in w.value for w in at.warning)
    at.button(key="al_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert sorted(s.name for s in ws.list_scenes()) == ["twice", "twice (2)", "twice (3)"]
    assert len({s.id for s in ws.list_scenes()}) == 3


def test_align_page_too_few_points_for_the_transform_is_one_message(files, tmp_path):
    """3 points with the homography showed "needs at least 4 point pairs, got 3" and "Add control points…": one
    message now, saying what is wrong and what to do."""
    lp, ip, pts, _ws, _M = files
    rows = json.loads(pts.read_text())["points"][:3]
    three = tmp_path / "three.json"
    three.write_text(json.dumps({"points": rows}))
    at = _open(lp, ip)
    _load_points(at, three)
    msgs = [w.value for w in at.main.warning] + [i.value for i in at.main.info]
    assert len(msgs) == 1, msgs
    assert "a homography needs at least 4 point pairs, got 3" in msgs[0] and "automatic matching" in msgs[0]
    at.radio(key="al_kind").set_value("affine").run()  # 3 points fit an affine
    assert not at.exception, [e.value for e in at.exception]
    assert not at.main.warning and "Manual affine: RMSE" in _texts(at)


def test_distinct_scene_name_and_same_alignment(files, tmp_path):
    from seghz.geo.align_scene import distinct_scene_name, find_aligned_scene, import_aligned_scene, same_alignment

    lp, ip, _pts, ws, M = files
    assert distinct_scene_name(ws, "x") == "x"
    sc = import_aligned_scene(ws, lp, ip, M, scheme="hz20", name="x", label=None)
    assert sc.name == "x" and distinct_scene_name(ws, "x") == "x (2)"
    sc2 = import_aligned_scene(ws, lp, ip, M @ A.scale_matrix(1.01), scheme="hz20", name="x")
    assert sc2.name == "x (2)" and distinct_scene_name(ws, "x") == "x (3)"
    shape = (160, 200)
    rec = json.loads((ws.scene_path(sc, "image").parent / "alignment.json").read_text())
    assert same_alignment(rec, lp, ip, M, scheme="hz20", label_shape=shape)
    assert same_alignment(rec, str(lp.parent / "." / lp.name), ip, M + 1e-9, scheme="hz20", label_shape=shape)
    shifted = M.copy()
    shifted[0, 2] += 0.5
    assert not same_alignment(rec, lp, ip, shifted, scheme="hz20", label_shape=shape)
    assert not same_alignment(rec, lp, ip, M, scheme="hz7", label_shape=shape)
    assert not same_alignment(rec, tmp_path / "other.png", ip, M, scheme="hz20", label_shape=shape)
    assert find_aligned_scene(ws, lp, ip, M, scheme="hz20", label_shape=shape).id == sc.id
    assert find_aligned_scene(ws, lp, ip, M, scheme="hz20", label_shape=shape, scene_ids={sc2.id}) is None
    assert find_aligned_scene(ws, lp, ip, shifted, scheme="hz20", label_shape=shape) is None
    # a local field is saved rounded to 0.001 px: read back, it is still the same alignment; another field is not
    rng = np.random.default_rng(0)
    warp = A.LocalWarp(M=M, dx=rng.normal(0, 2, (5, 6)), dy=rng.normal(0, 2, (5, 6)), spacing=40.0)
    sc3 = import_aligned_scene(ws, lp, ip, warp, scheme="hz20", name="local")
    assert find_aligned_scene(ws, lp, ip, warp, scheme="hz20", label_shape=shape).id == sc3.id
    assert find_aligned_scene(ws, lp, ip, M, scheme="hz20", label_shape=shape).id == sc.id  # global only: not sc3
    other = A.LocalWarp(M=M, dx=warp.dx + 0.5, dy=warp.dy, spacing=40.0)
    assert find_aligned_scene(ws, lp, ip, other, scheme="hz20", label_shape=shape) is None


def test_align_page_draws_labels_in_the_screen_palette(files, monkeypatch):
    """The label, its before/after overlays and the legend are drawn in the sidebar's screen palette like the other
    pages (they were in the study palette); the saved scene's label file keeps the study's colours."""
    from PIL import Image

    import seghz.geo.align_scene as AS
    from ui.common import PALETTE_KEY

    lp, ip, pts, ws, _M = files
    drawn = []
    real = AS.before_after

    def spy(label, image, M, scheme, opacity=0.45):
        drawn.append(scheme if isinstance(scheme, str) else tuple(scheme.colors))
        return real(label, image, M, scheme, opacity)

    monkeypatch.setattr(AS, "before_after", spy)
    study = get_scheme("hz20")
    distinct = study.for_display("distinct")
    present = range(8)  # the synthetic label holds hz20 indices 0..7
    assert any(study.colors[i] != distinct.colors[i] for i in present)

    def legend_colours(at) -> str:
        return "\n".join(str(m.value) for m in at.markdown if "border-radius:3px" in str(m.value))

    at = _open(lp, ip)  # no palette chosen yet: "distinct", the sidebar's default
    _load_points(at, pts)
    assert drawn and drawn[-1] == tuple(distinct.colors), drawn[-1]
    leg = legend_colours(at)
    for i in present:
        assert distinct.hex_colors()[i] in leg and study.names[i] in leg
        if study.colors[i] != distinct.colors[i]:
            assert study.hex_colors()[i] not in leg
    assert study.names[8] not in leg  # only the classes in the label
    # the study palette chosen in the sidebar: drawn in the study's colours
    at.session_state[PALETTE_KEY] = "study"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert drawn[-1] == tuple(study.colors)
    leg = legend_colours(at)
    assert all(study.hex_colors()[i] in leg for i in present)
    # saved with the distinct palette on screen: the label file on disk is in the study's colours
    at.session_state[PALETTE_KEY] = "distinct"
    at.text_input(key="al_name").set_value("palette check")
    at.button(key="al_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert drawn[-1] == tuple(distinct.colors)
    sc = next(s for s in ws.list_scenes() if s.name == "palette check")
    with Image.open(ws.scene_path(sc, "label")) as im:
        cols = {tuple(c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3).tolist()}
    assert cols <= set(map(tuple, study.colors)) | {(0, 0, 0)}, cols - set(map(tuple, study.colors))
    assert len(cols & {tuple(study.colors[i]) for i in present}) >= 6


def test_align_page_saves_in_the_active_models_scheme_and_the_chosen_split(files):
    """The review: an aligned hz20 label was saved as an hz20 scene in split none, and Labels then said "The model
    predicts hz7 classes; the label is hz20". The label can be saved crosswalked to the model's scheme (the default
    when one is active), into a chosen split."""
    from seghz.classes import index_crosswalk
    from seghz.data.io import read_label

    lp, ip, pts, ws, M = files
    f = ws.root / "checkpoints" / "m.safetensors"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"x")
    ws.set_active_checkpoint(ws.register_checkpoint(f, {"scheme": "hz7"}, checkpoint_id="m", name="hz7 model"))
    at = AppTest.from_file(str(REPO / "pages" / "5_Align.py"), default_timeout=TIMEOUT).run()
    at.selectbox(key="al_scheme").set_value("hz20")  # drawn in hz20 (the label reads in hz20, not in the model's hz7)
    at.text_input(key="al_label").set_value(str(lp))
    at.text_input(key="al_image").set_value(str(ip))
    at.run()
    at.text_input(key="al_points_path").set_value(str(pts))
    at.button(key="al_points_load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    box = at.selectbox(key="al_target_scheme")
    assert box.options[0] == "hz20 (as drawn)" and "hz7 (crosswalked from hz20)" in box.options
    assert box.value == "hz7"  # the active model's scheme
    at.selectbox(key="al_split").set_value("train")
    at.text_input(key="al_name").set_value("for the model")
    at.button(key="al_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    sc = next(s for s in ws.list_scenes() if s.name == "for the model")
    assert sc.scheme == "hz7" and sc.split == "train"
    saved = read_label(ws.scene_path(sc, "label"), get_scheme("hz7"))
    drawn = read_label(lp, get_scheme("hz20"))
    cw = index_crosswalk("hz20", "hz7")
    assert set(np.unique(saved)) - {255} <= set(np.unique(cw[drawn]))  # hz7 classes of the drawn hz20 ones
    rec = json.loads((ws.scene_path(sc, "image").parent / "alignment.json").read_text())
    assert rec["scheme"] == "hz20"  # the record keeps the scheme it was drawn in
