"""Streamlit AppTest tests of the app's pages (home, Evaluate, Labels, Train) on a small prepared workspace.

The workspace (``$SEGHZ_WORKSPACE``, with ``$SEGHZ_NO_DEMO=1`` so the four 1024 px demo scenes are not
created) holds two 128 px synthetic hz7 scenes (val + train) and a tiny registered, active checkpoint.
"""
from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streamlit.testing.v1 import AppTest

import ui.common

#                   streamlit_drawable_canvas itself outside a Streamlit runtime fails: components v2
#                   resolve their asset folder only when a runtime has registered the manifests)
from seghz.classes import get_scheme
from seghz.store import Workspace

TIMEOUT = 30  # seconds per AppTest run: the CPU is shared with long training runs
TRAIN_WAIT_S = 300
HZ7 = get_scheme("hz7")


def make_tiny_checkpoint(path: Path) -> dict:
    """A small FPN/MobileNetV3 hz7 checkpoint with metadata like the trainer writes."""
    import torch

    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("FPN", "tu-mobilenetv3_small_050", HZ7.num_classes)
    meta = {
        "arch": "FPN", "encoder": "tu-mobilenetv3_small_050", "num_classes": HZ7.num_classes,
        "scheme": HZ7.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 256,
        "metrics": {"val": {"miou": 0.5, "fwiou": 0.6, "oa": 0.7,
                            "per_class_iou": {n: 0.1 * i for i, n in enumerate(HZ7.names)}}, "epoch": 1},
        "synthetic": True,
    }
    save_checkpoint(path, model, meta)
    return meta


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return path, make_tiny_checkpoint(path)


@pytest.fixture
def ws(tmp_path, monkeypatch, tiny_checkpoint) -> Workspace:
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene

    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(REPO)
    w = Workspace(tmp_path / "ws")
    src = tmp_path / "src"
    src.mkdir()
    for name, seed, split in (("val town", 0, "val"), ("train farm", 11, "train")):
        rgb, lbl = generate_scene(128, seed)
        write_rgb(src / f"{seed}.png", rgb)
        write_index_mask(src / f"{seed}_label.png", lbl, HZ7)
        import_scene(w, src / f"{seed}.png", src / f"{seed}_label.png", scheme="hz7", name=name, split=split, synthetic=True)
    path, meta = tiny_checkpoint
    dst = w.root / "checkpoints" / "tiny.safetensors"
    dst.write_bytes(path.read_bytes())
    cid = w.register_checkpoint(dst, {**meta, "scheme": "hz7"}, checkpoint_id="tiny-test", name="tiny test model")
    w.set_active_checkpoint(cid)
    monkeypatch.setenv("SEGHZ_WORKSPACE", str(w.root))
    monkeypatch.setenv("SEGHZ_NO_DEMO", "1")
    yield w
    from seghz.jobs.runner import pid_alive

    for job in w.list_jobs():  # never leave a worker behind
        if job.pid and pid_alive(job.pid, job.id):
            os.kill(job.pid, signal.SIGKILL)


def app(script: str) -> AppTest:
    return AppTest.from_file(str(REPO / script), default_timeout=TIMEOUT)


def texts(at: AppTest) -> str:
    """All markdown/caption/alert text of a run, sidebar included, joined."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


# ------------------------------------------------------------------------------------------------ all pages


@pytest.mark.parametrize("script", ["app.py", "pages/2_Evaluate.py", "pages/3_Labels.py", "pages/4_Train.py"])
def test_page_loads_without_error(ws, script):
    at = app(script).run()  # the Labels page uses the real streamlit-drawable-canvas here
    assert_ok(at)
    assert "SYNTHETIC DEMO DATA" in "\n".join(e.value for e in at.sidebar.info)  # every scene is synthetic
    assert at.sidebar.text_input(key="seghz_analyst") is not None


# ------------------------------------------------------------------------------------------------ home


def test_home_shows_summary_active_checkpoint_and_synthetic_notice(ws):
    at = app("app.py").run()
    assert_ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Scenes"] == "2" and metrics["train"] == "1" and metrics["val"] == "1"
    assert metrics["Checkpoints"] == "1"
    assert metrics["val mIoU"] == "50.0 %"
    t = texts(at)
    assert "tiny test model" in t and "tiny-test" in t
    assert "SYNTHETIC DEMO DATA" in t
    assert "python -m seghz import --images DIR --labels DIR --scheme gid15 --target-scheme hz7" in [c.value for c in at.code]
    assert str(ws.root) in [c.value for c in at.sidebar.code]
    assert len(at.dataframe) >= 1  # per-class IoU table
    # "start here": the loop's pages in order, above the workspace figures
    heads = [h.value for h in at.subheader]
    assert heads.index("Start here") < heads.index("Workspace")
    assert "The daily loop" in t


def test_home_says_which_scenes_are_synthetic_once_real_data_is_in(ws, tmp_path):
    """The review: the SYNTHETIC DEMO DATA box stayed on Home while the analyst worked on real scenes."""
    from seghz.data.io import write_rgb
    from seghz.data.scenes import import_scene

    write_rgb(tmp_path / "real.png", np.full((32, 32, 3), 80, np.uint8))
    import_scene(ws, tmp_path / "real.png", scheme="hz7", name="real tile")
    at = app("app.py").run()
    assert_ok(at)
    assert not any("SYNTHETIC DEMO DATA" in str(e.value) for e in at.main.info)
    assert any("2 of the 3 scenes are synthetic demo scenes (train farm, val town)" in str(c.value)
               for c in at.main.caption)


def test_home_names_the_scenes_holding_unsaved_drafts(ws):
    """Drafts were only found on the Labels page: painted work left on a scene went unnoticed from Home."""
    from seghz import drafts as dft

    at = app("app.py").run()
    assert "Unsaved label drafts" not in texts(at)
    sid = ws.list_scenes()[0].id
    m = ws.effective_label(sid)
    px = np.zeros(m.shape, bool)
    px[:3, :3] = True
    dft.write_draft(ws.root, "", sid, base_version=0, pixels=px, values=m)
    dft.write_draft(ws.root, "", "gone-scene", base_version=0, pixels=px, values=m)  # not a scene: not named
    at = app("app.py").run()
    assert_ok(at)
    (info,) = [e.value for e in at.info if "Unsaved label drafts" in e.value]
    assert f"**Unsaved label drafts on 1 scene(s)**: {sid}." in info and "gone-scene" not in info


# ------------------------------------------------------------------------------------------------ evaluate


def test_evaluate_runs_and_shows_metrics_and_charts(ws):
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    assert not [m for m in at.metric if m.label == "mIoU"]  # nothing cached yet
    at.button(key="eval_run").click().run()
    assert_ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["mIoU"].endswith("%") and metrics["OA"].endswith("%")
    charts = at.get("plotly_chart")
    assert len(charts) >= 5  # confusion matrix, IoU bars, reliability, abstaining, frequencies
    ev = ws.list_evaluations("tiny-test")
    assert len(ev) == 1 and ev[0].split == "val"
    # calibration: the ECE metric, and the abstain slider moves the kept share in the caption and the table
    from seghz.metrics import calibration_report

    cal = calibration_report(ev[0].result["calibration"], ev[0].result["classes"])
    assert metrics["ECE (expected calibration error)"] == f"{100 * cal['ece']:.1f} pp"
    kept = next(c for c in cal["coverage"] if abs(c["threshold"] - 0.5) < 1e-9)
    at.slider(key="eval_abstain").set_value(50).run()
    assert_ok(at)
    assert any(f"Abstaining below 50% keeps {kept['kept'] * 100:.1f} %" in c.value for c in at.caption)
    (table,) = [d.value for d in at.dataframe if "label agrees (kept)" in d.value.columns]
    for _, r in table.iterrows():
        assert r["kept"] == pytest.approx(kept["per_class"][r["class"]]["kept"])
    cls = table["class"].iloc[0]
    at.selectbox(key="eval_cal_class").set_value(cls).run()
    assert_ok(at)
    assert any(f"pixels predicted {cls}" in (ch.proto.spec if hasattr(ch, "proto") else "") for ch in at.get("plotly_chart"))

    # a fresh session shows the cached result at once, and the confusion toggle works
    at2 = app("pages/2_Evaluate.py").run()
    assert_ok(at2)
    assert {m.label for m in at2.metric} >= {"mIoU", "fwIoU", "OA"}
    at2.radio(key="eval_cm_mode").set_value("recall").run()
    assert_ok(at2)
    assert len(at2.get("plotly_chart")) >= 3
    assert len(ws.list_evaluations("tiny-test")) == 1


# ------------------------------------------------------------------------------------------------ labels


def fake_canvas_factory(calls: list):
    """A stand-in for ui.common.canvas (i.e. st_canvas) that 'paints' canvas rows 40..79 × cols 0..159 in the chosen colour."""

    def fake(**kw):
        calls.append(kw)
        rgba = np.zeros((kw["height"], kw["width"], 4), np.uint8)
        rgba[40:80, 0:160] = (255, 0, 0, 255)
        return SimpleNamespace(image_data=rgba, json_data={"objects": [{"type": "path"}]})

    return fake


def test_labels_confirm_window_saves_the_edit_and_confirms_the_rest_of_the_window(ws, monkeypatch):
    from seghz.store import PIXEL_CONFIRMED, PIXEL_CORRECTED, PIXEL_ORIGINAL

    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    assert_ok(at)
    sid = at.selectbox(key="lbl_scene").value
    original, buildings = ws.effective_label(sid, 0), HZ7.names.index("Buildings")
    at.sidebar.text_input(key="seghz_analyst").input("Ann Analyst")
    at.selectbox(key="lbl_class").set_value(buildings).run()
    at.button(key="lbl_confirm_window").click().run()
    assert_ok(at)
    assert any("Saved label version 1" in s.value and "confirmed in the 128×128 px window" in s.value for s in at.success)
    st = ws.pixel_status(sid)
    painted = np.zeros(original.shape, bool)
    painted[10:20, 0:40] = True  # the fake canvas stroke
    changed = painted & (original != buildings)
    assert (st[changed] == PIXEL_CORRECTED).all()
    rest = ~changed & (original != 255)
    assert (st[rest] == PIXEL_CONFIRMED).all() and not (st == PIXEL_ORIGINAL).any()  # the window is the whole scene
    assert ws.label_history(sid)[0].tool == "confirm-window"
    # the fake canvas keeps returning its stroke: painted again over pixels that hold the class, they are saved as
    # confirmed (version 2); with no stroke and nothing unreviewed left, there is nothing to save
    at.button(key="lbl_confirm_window").click().run()
    assert_ok(at)
    assert ws.latest_label_version(sid) == 2 and (ws.pixel_status(sid)[changed] == PIXEL_CONFIRMED).all()
    monkeypatch.setattr(ui.common, "canvas", lambda **kw: SimpleNamespace(image_data=None, json_data=None))
    at.run()
    at.button(key="lbl_confirm_window").click().run()
    assert_ok(at)
    assert any("Nothing to confirm" in w.value for w in at.warning) and ws.latest_label_version(sid) == 2


def test_labels_brush_edit_saves_a_new_version(ws, monkeypatch):
    calls: list = []
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory(calls))
    at = app("pages/3_Labels.py").run()
    assert_ok(at)
    sid = at.selectbox(key="lbl_scene").value
    assert sid in {s.id for s in ws.list_scenes()}
    orig_path = ws.scene_path(sid, "label")
    orig_hash = hashlib.sha256(orig_path.read_bytes()).hexdigest()
    original = ws.effective_label(sid, 0)
    kw = calls[-1]
    assert kw["return_image_data"] is True and kw["height"] == kw["width"] == 512  # 128 px window shown at 4×
    assert kw["background_image"] is not None and kw["drawing_mode"] == "freedraw"

    # saving without an analyst name is refused
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert any("analyst name" in e.value for e in at.error)
    assert ws.latest_label_version(sid) == 0

    buildings = HZ7.names.index("Buildings")
    at.sidebar.text_input(key="seghz_analyst").input("Ann Analyst").run()
    at.selectbox(key="lbl_class").set_value(buildings).run()
    assert_ok(at)
    assert calls[-1]["stroke_color"].startswith("rgba(%d, %d, %d" % HZ7.for_display("distinct").colors[buildings])
    # the screen palette: "distinct" by default, the study's on request (the painted class is the same either way)
    forest = HZ7.names.index("Forest")
    at.selectbox(key="lbl_class").set_value(forest).run()
    assert calls[-1]["stroke_color"].startswith("rgba(25, 105, 45")  # dark green, not the study's blue
    at.sidebar.radio(key="seghz_palette").set_value("study").run()
    assert_ok(at)
    assert calls[-1]["stroke_color"].startswith("rgba(%d, %d, %d" % HZ7.colors[forest])
    assert "#06a0cc" in "".join(m.value for m in at.markdown)  # the legend in the study's Forest blue
    at.sidebar.radio(key="seghz_palette").set_value("distinct")
    at.selectbox(key="lbl_class").set_value(buildings).run()
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert any("Saved label version 1" in s.value for s in at.success)

    assert ws.latest_label_version(sid) == 1
    new = ws.effective_label(sid)
    expected = original.copy()
    expected[10:20, 0:40] = buildings  # canvas rows 40..79, cols 0..159 at scale 4
    np.testing.assert_array_equal(new, expected)
    hist = ws.label_history(sid)
    assert hist[0].analyst == "Ann Analyst" and hist[0].tool == "brush" and hist[0].checkpoint_id == "tiny-test"
    assert hist[0].n_changed == int(np.count_nonzero(expected != original))
    assert hashlib.sha256(orig_path.read_bytes()).hexdigest() == orig_hash  # original label untouched
    np.testing.assert_array_equal(ws.effective_label(sid, 0), original)
    hist_df = history_frame(at)
    assert len(hist_df) == 2 and hist_df["tool"].tolist() == ["original", "brush"]  # history: original + v1
    assert {"kind", "analyst", "time (UTC)", "changed", "confirmed", "undone"} <= set(hist_df.columns)


def test_labels_save_message_survives_the_new_canvas_rerun(ws, monkeypatch):
    """In the browser a save gives the canvas a new key; the new canvas's first value reruns the page at once, and the
    "Saved label version" confirmation, shown for one run only, vanished within a second. It now stays while the
    scene, the edit and the analyst are unchanged, for that rerun only."""
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    at.sidebar.text_input(key="seghz_analyst").input("Ann Analyst").run()
    at.selectbox(key="lbl_class").set_value(HZ7.names.index("Buildings")).run()
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert any("Saved label version 1" in s.value for s in at.success)
    at.run()  # the rerun the new canvas triggers (no user action)
    assert_ok(at)
    assert any("Saved label version 1" in s.value for s in at.success), [s.value for s in at.success]
    at.run()  # any later run (a stroke, a pan): the message does not outlive what it was about
    assert not any("Saved label version" in s.value for s in at.success)
    at.button(key="lbl_save").click().run()  # a second save: its own message, again for two runs
    at.run()
    assert [s.value for s in at.success if "Saved label version" in s.value][0].startswith("Saved label version 2")
    other = next(s.id for s in ws.list_scenes() if s.id != at.selectbox(key="lbl_scene").value)
    at.selectbox(key="lbl_scene").set_value(other).run()  # another scene: the message is not about it
    assert not any("Saved label version" in s.value for s in at.success)


def test_labels_fill_eraser_and_accept_tools(ws, monkeypatch):
    """The fill tool fills the label region under the click; the eraser gives pixels back their saved label;
    accept-prediction copies the model's prediction inside the rectangle; the save records the tools used."""
    from seghz.labels_edit import fill_region

    calls: list = []
    painting = {"on": False}
    paint = fake_canvas_factory(calls)

    def fake(**kw):  # paints (canvas rows 40..79 × cols 0..159 = scene rows 10..19 × cols 0..39) only when asked
        out = paint(**kw)
        return out if painting["on"] else SimpleNamespace(image_data=np.zeros_like(out.image_data), json_data=None)

    def stroke_and_apply() -> None:
        painting["on"] = True
        at.run()
        at.button(key="lbl_apply").click().run()
        painting["on"] = False
        assert_ok(at)

    monkeypatch.setattr(ui.common, "canvas", fake)
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    original = ws.effective_label(sid, 0)
    at.sidebar.text_input(key="seghz_analyst").input("Fay").run()
    seed = (14, 19)  # the blob pixel nearest its centroid (14.5, 19.5)
    fill_class = next(i for i in range(HZ7.num_classes) if i != original[seed])
    at.selectbox(key="lbl_class").set_value(fill_class).run()

    # fill: one click blob → the 4-connected region of the label value under it takes the class
    at.radio(key="lbl_tool").set_value("fill").run()
    assert calls[-1]["drawing_mode"] == "point"
    stroke_and_apply()
    region = fill_region(original, seed)
    expected = original.copy()
    expected[region] = fill_class
    edit = at.session_state["lbl_edits"][sid]
    np.testing.assert_array_equal(edit["mask"], expected)
    assert region.sum() > 1 and (edit["painted"] == region).all()

    # eraser over the click area gives those pixels back their saved label
    at.radio(key="lbl_tool").set_value("eraser").run()
    stroke_and_apply()
    edit = at.session_state["lbl_edits"][sid]
    np.testing.assert_array_equal(edit["mask"][10:20, 0:40], original[10:20, 0:40])
    assert not edit["painted"][10:20, 0:40].any()
    expected[10:20, 0:40] = original[10:20, 0:40]

    # accept-prediction without a prediction: a warning; with one, the rectangle takes it
    at.radio(key="lbl_tool").set_value("accept").run()
    assert any("Accept prediction needs" in w.value for w in at.warning)
    at.button(key="lbl_predict").click().run()
    assert_ok(at)
    pred = next(iter(at.session_state["lbl_preds"].values()))
    stroke_and_apply()
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    expected[10:20, 0:40] = pred[10:20, 0:40]
    np.testing.assert_array_equal(ws.effective_label(sid), expected)
    h = ws.label_history(sid)[-1]
    assert h.analyst == "Fay" and set(h.tool.split("+")) == {"accept", "eraser", "fill"}


def test_labels_lists_windows_sent_from_evaluate_and_marks_them_reviewed(ws, monkeypatch):
    from seghz import drilldown

    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    w = drilldown.Window(sid, (8, 16, 40, 64), 123)
    assert drilldown.add_to_review_list(ws, [w], true_class="Water", pred_class="Buildings", scheme="hz7",
                                        checkpoint_id="tiny-test", analyst="Eve", tta="d4") == 1
    at.run()
    assert_ok(at)
    assert any("Water → Buildings" in m.value and "123 px" in m.value for m in at.markdown)
    at.button(key="lbl_sent_zoom_0").click().run()
    assert_ok(at)
    assert any("Opened the window sent from Evaluate at rows 8–39" in i.value for i in at.info)
    # "Open on map" carries the checkpoint whose errors were sent (the Map page predicts with it); in AppTest the
    # page switch itself fails ("page not found": the page runs as the entry file), the request is already made
    at.button(key="lbl_sent_map_0").click().run()
    jump = at.session_state["map_jump"]
    assert jump["checkpoint_id"] == "tiny-test" and jump["bbox"] == (8, 16, 40, 64) and jump["layer"] == "error"
    # … the evaluation's TTA and the A → B cell, as Evaluate's own "Open on map" does (the Map marks those pixels)
    assert jump["tta"] == "d4" and jump["cell"] == {"true": "Water", "predicted": "Buildings", "scheme": "hz7"}
    assert jump["checkpoint_name"] == ws.get_checkpoint("tiny-test").name
    assert jump["checkpoint_role"] == "the checkpoint whose errors were sent"
    del at.session_state["map_jump"]
    at.run()
    at.button(key="lbl_sent_done_0").click().run()
    assert_ok(at)
    assert drilldown.pending_reviews(ws, sid) == []
    (e,) = drilldown.load_review_list(ws)
    assert e["status"] == "reviewed" and e["reviewed_at"]
    assert not any("Water → Buildings" in m.value for m in at.markdown)


def test_labels_prediction_on_demand(ws, monkeypatch):
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    n_images = len(at.image)
    at.button(key="lbl_predict").click().run()
    assert_ok(at)
    assert len(at.image) == n_images + 1
    assert any("Agrees with the label" in c.value for c in at.caption)
    assert len(at.session_state["lbl_preds"]) == 1


def history_frame(at: AppTest):
    return next(d.value for d in at.dataframe if "undone" in d.value.columns)


def test_labels_apply_counts_label_pixels_and_history_shows_no_none(ws, monkeypatch):
    """Apply said "Applied the strokes (5267 canvas px)" next to "unsaved edited pixels: 9365" (label pixels, canvas
    scale 0.75): both are label pixels now. The history's checkpoint cell of version 0 read "None"."""
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    assert_ok(at)
    assert history_frame(at)["checkpoint"].tolist() == ["—"]
    at.button(key="lbl_apply").click().run()  # the fake stroke: 160×40 canvas px at scale 4 = 40×10 label px
    assert_ok(at)
    assert any(i.value == "Applied the strokes to your edit: 400 label pixels; unsaved edited label pixels now 400."
               for i in at.info), [i.value for i in at.info]
    assert "unsaved edited label pixels: 400" in texts(at)
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    hist = history_frame(at)
    assert hist["checkpoint"].tolist() == ["—", "tiny-test"] and "None" not in hist.astype(str).to_numpy()


def test_labels_a_refused_stroke_keeps_its_message(ws, monkeypatch):
    """A tool that refuses the strokes flashes why; Apply then replaced it with "Nothing painted on the canvas yet"."""
    import seghz.labels_edit as le

    def refuse(*a, **k):
        raise ValueError("no prediction in this window")

    monkeypatch.setattr(le, "apply_tool", refuse)
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    at.button(key="lbl_apply").click().run()
    assert_ok(at)
    assert any("strokes were not applied: no prediction in this window" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert not any("Nothing painted" in i.value for i in at.info)


def test_labels_open_in_the_canvas_sets_the_window_without_a_streamlit_warning(ws, monkeypatch):
    """"Open in the canvas" sets the window size, offsets and suspicion opacity through session state; the widgets
    also had default values, and Streamlit logged "The widget with key lbl_size_<scene> was created with a default
    value but also had its value set via the Session State API"."""
    from streamlit.elements.lib import policies

    from seghz import drilldown
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.data.scenes import import_scene
    from seghz.demo import generate_scene
    from seghz.labels_edit import zoom_window

    rgb, lbl = generate_scene(600, 5)  # larger than the smallest window: size selectbox and offset sliders in play
    write_rgb(ws.root / "big.png", rgb)
    write_index_mask(ws.root / "big_label.png", lbl, HZ7)
    big = import_scene(ws, ws.root / "big.png", ws.root / "big_label.png", scheme="hz7", name="big", split="val")
    bbox = (300, 320, 340, 380)
    drilldown.add_to_review_list(ws, [drilldown.Window(big.id, bbox, 99)], true_class="Water", pred_class="Buildings",
                                 scheme="hz7", checkpoint_id="tiny-test", analyst="Eve")
    warned: list = []
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)  # Streamlit warns once per process
    monkeypatch.setattr(policies._LOGGER, "warning", lambda msg, *a, **k: warned.append(msg % a))
    calls: list = []
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory(calls))
    at = app("pages/3_Labels.py").run()
    at.selectbox(key="lbl_scene").set_value(big.id).run()
    assert_ok(at)
    assert at.selectbox(key=f"lbl_size_{big.id}").value == 600  # the whole scene, as before
    at.button(key="lbl_sent_zoom_0").click().run()
    assert_ok(at)
    # the item is outlined in magenta on the canvas background until the analyst hides the box
    import io

    from PIL import Image

    from seghz.labels_edit import box_on_canvas, canvas_scale, clamp_window

    def magenta_at_box(kw) -> bool:
        bg = np.asarray(Image.open(io.BytesIO(kw["background_image"])).convert("RGB")).astype(int)
        sz, r, c = zoom_window(bbox, 600, 600)
        win = clamp_window(600, 600, r, c, sz)
        x0, y0, x1, y1 = box_on_canvas(bbox, win, canvas_scale(sz, sz, 768, 512)[2])  # the page's MAX/MIN_DISPLAY
        edge = bg[y0, x0 + 2: x1 - 1]  # the top edge of the outline (JPEG: near magenta)
        return bool(((edge[:, 0] > 140) & (edge[:, 1] < 90) & (edge[:, 2] > 160)).mean() > 0.8)

    assert magenta_at_box(calls[-1])
    assert any("Magenta box: the window sent from Evaluate you opened (rows 300–339" in c.value for c in at.caption)
    assert any("Opened the window sent from Evaluate at rows 300–339" in i.value for i in at.info)
    size, row, col = zoom_window(bbox, 600, 600)
    assert at.selectbox(key=f"lbl_size_{big.id}").value == size < 600
    assert (at.slider(key=f"lbl_row_{big.id}").value, at.slider(key=f"lbl_col_{big.id}").value) == (row, col)
    assert at.slider(key="lbl_sus_opacity").value == 0.5
    at.run()
    assert_ok(at)
    assert not [w for w in warned if "default value" in w], warned
    at.button(key="lbl_focus_hide").click().run()
    assert_ok(at)
    assert not magenta_at_box(calls[-1]) and not any("Magenta box" in c.value for c in at.caption)


def test_labels_conflict_keeps_the_edit(ws, monkeypatch):
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    # someone else saves first, on pixels my strokes (rows 10..19, cols 0..39) do not touch: merged
    other = ws.effective_label(sid)
    other[0, 0] = 0 if other[0, 0] != 0 else 1
    ws.save_label_edit(sid, 0, "Bob", "brush", pixels=np.flatnonzero(other.ravel() != ws.effective_label(sid, 0).ravel()),
                       values=int(other[0, 0]))
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert any("Saved label version 2" in s.value and "merged" in s.value for s in at.success)
    final = ws.effective_label(sid)
    assert final[0, 0] == other[0, 0] and (final[10:20, 0:40] == 0).all()  # Bob's pixel + my strokes (class 0)
    assert ws.label_history(sid)[-1].base_version == 0 and ws.label_history(sid)[-1].parent_version == 1

    # Bob changes a pixel inside my next strokes: my save overlaps and is refused, the edit is kept
    ws.save_label_edit(sid, 2, "Bob", "brush", pixels=np.array([15 * 128 + 5]), values=3)
    buildings = HZ7.names.index("Buildings")
    at.selectbox(key="lbl_class").set_value(buildings).run()  # the fake canvas paints the same rows in Buildings
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert any("someone saved this scene first" in e.value for e in at.error)
    assert ws.latest_label_version(sid) == 3
    assert at.button(key="lbl_rebase")  # the edit is kept and can be re-applied
    at.button(key="lbl_rebase").click().run()
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert ws.latest_label_version(sid) == 4
    final = ws.effective_label(sid)
    assert final[0, 0] == other[0, 0] and (final[10:20, 0:40] == buildings).all()


def test_labels_undo_redo_buttons(ws, monkeypatch):
    # the canvas paints only while asked (a stroke left on the canvas is what the first Undo clears)
    painting = {"on": False}
    paint = fake_canvas_factory([])

    def fake(**kw):
        out = paint(**kw)
        return out if painting["on"] else SimpleNamespace(image_data=np.zeros_like(out.image_data), json_data=None)

    monkeypatch.setattr(ui.common, "canvas", fake)
    at = app("pages/3_Labels.py").run()
    assert_ok(at)
    sid = at.selectbox(key="lbl_scene").value
    assert at.button(key="lbl_undo").disabled and at.button(key="lbl_redo").disabled  # no analyst yet
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    assert at.button(key="lbl_undo").disabled and at.button(key="lbl_redo").disabled  # nothing saved yet
    original = ws.effective_label(sid, 0)
    painting["on"] = True
    at.selectbox(key="lbl_class").set_value(HZ7.names.index("Buildings")).run()
    painting["on"] = False
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    edited = ws.effective_label(sid)
    assert not at.button(key="lbl_undo").disabled and at.button(key="lbl_redo").disabled

    at.button(key="lbl_undo").click().run()
    assert_ok(at)
    assert any("Undid your label version 1" in s.value for s in at.success)
    np.testing.assert_array_equal(ws.effective_label(sid), original)
    assert at.button(key="lbl_undo").disabled and not at.button(key="lbl_redo").disabled
    at.button(key="lbl_redo").click().run()
    assert_ok(at)
    np.testing.assert_array_equal(ws.effective_label(sid), edited)
    assert ws.latest_label_version(sid) == 3
    hist = history_frame(at)
    assert hist["kind"].tolist() == ["original", "layer", "undo v1", "redo v1"]
    assert hist["analyst"].tolist()[1:] == ["Ann"] * 3
    assert at.get("download_button")  # PNG / GeoTIFF export of the current version


def test_analyst_name_comes_back_when_its_widget_state_is_dropped(ws):
    """A switch_page from inside a fragment (Labels' "Promote on the Train page") dropped the sidebar widget's
    state: the Train page then asked for a name the analyst had entered. The name is also kept under a plain
    session key, and a run that finds the widget state gone (here: a session holding only that key) puts it back;
    a name the analyst clears stays cleared."""
    at = app("pages/4_Train.py").run()
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    assert at.session_state["seghz_analyst_kept"] == "Ann"
    fresh = app("pages/4_Train.py")
    fresh.session_state["seghz_analyst_kept"] = "Ann"  # the widget's own state is gone, the kept name is not
    fresh.run()
    assert_ok(fresh)
    assert fresh.sidebar.text_input(key="seghz_analyst").value == "Ann"
    fresh.sidebar.text_input(key="seghz_analyst").input("").run()
    assert fresh.session_state["seghz_analyst_kept"] == ""
    assert fresh.sidebar.text_input(key="seghz_analyst").value == ""


def test_the_browser_remembers_the_analyst_name_and_says_so(ws, monkeypatch):
    """A reload or a new tab is a new session: the name comes back from this browser's cookie, with a caption (so
    someone else at the same browser sees whose name their edits would carry); every run carries the script that
    keeps the cookie at the name shown (a run superseded at once may never mount its elements); an unusable cookie
    is ignored. (The real browser round trip: tests/browser/test_navigation_browser.py.)"""
    assert ui.common.remembered_analyst({"seghz_analyst": "Ann%20Li"}) == "Ann Li"
    for bad in ("a%0Ab", "A" * 80, "", "%20"):
        assert ui.common.remembered_analyst({"seghz_analyst": bad}) == ""
    assert ui.common.remembered_analyst(None) == "" and ui.common.remembered_analyst({}) == ""
    js = ui.common.analyst_cookie_script("Ann </script>")
    assert "</script>" not in js.removesuffix("</script>") and "max-age=2592000; SameSite=Strict" in js
    assert "max-age=0" in ui.common.analyst_cookie_script("")  # clearing the box forgets it

    def scripts(at):
        return [h.proto.body for h in at.get("html") if "document.cookie" in h.proto.body]

    monkeypatch.setattr(ui.common, "remembered_analyst", lambda cookies: "Ann")
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    assert at.sidebar.text_input(key="seghz_analyst").value == "Ann"
    assert any("Remembered by this browser" in c.value for c in at.sidebar.caption)
    (js,) = scripts(at)
    assert '"Ann"' in js
    at.sidebar.text_input(key="seghz_analyst").input("Bob").run()
    assert not any("Remembered by this browser" in c.value for c in at.sidebar.caption)
    (js,) = scripts(at)
    assert '"Bob"' in js and "max-age=2592000" in js
    monkeypatch.setattr(ui.common, "remembered_analyst", lambda cookies: "")
    fresh = app("pages/4_Train.py").run()
    assert fresh.sidebar.text_input(key="seghz_analyst").value == ""
    assert not any("Remembered" in c.value for c in fresh.sidebar.caption)
    (js,) = scripts(fresh)
    assert "max-age=0" in js  # no name: the browser keeps none


def test_labels_analyst_name_empty_or_too_long(ws, monkeypatch):
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    at.sidebar.text_input(key="seghz_analyst").input("   ").run()
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert any("Enter your analyst name" in e.value for e in at.error)
    at.sidebar.text_input(key="seghz_analyst").input("A" * 80).run()
    assert any("80 characters long" in e.value for e in at.sidebar.error)
    at.button(key="lbl_save").click().run()
    assert any("at most 64" in e.value for e in at.error)
    assert ws.latest_label_version(sid) == 0


def test_labels_queue_of_another_checkpoint_names_both(ws, monkeypatch, tiny_checkpoint):
    """A training job re-ranks the saved queues with its new checkpoint, promoted or not: the warning said "the
    active checkpoint changed" when it had not; it now names the queue's checkpoint and the active one."""
    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    at.checkbox(key=f"lbl_q_heldout_{sid}").uncheck().run()
    at.button(key="lbl_q_build").click().run()
    assert_ok(at)
    assert not any("not the active checkpoint" in w.value for w in at.warning)
    path, meta = tiny_checkpoint
    dst = ws.root / "checkpoints" / "tiny2.safetensors"
    dst.write_bytes(path.read_bytes())
    ws.set_active_checkpoint(ws.register_checkpoint(dst, {**meta, "scheme": "hz7"}, checkpoint_id="tiny-2", name="tiny 2"))
    at.run()
    assert_ok(at)
    assert any("built with **tiny-test**, not the active checkpoint **tiny-2**" in w.value for w in at.warning), \
        [w.value for w in at.warning]


def test_labels_queue_confirm_makes_pixels_confirmed(ws, monkeypatch):
    from seghz.review import queue as rq
    from seghz.store import PIXEL_CONFIRMED

    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    at = app("pages/3_Labels.py").run()
    sid = at.selectbox(key="lbl_scene").value
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    at.slider(key="lbl_q_threshold").set_value(0.05).run()  # the tiny untrained model: take nearly every pixel
    heldout = at.checkbox(key=f"lbl_q_heldout_{sid}")
    assert heldout.value == (ws.get_scene(sid).split == "train")  # on by default for training scenes only
    heldout.uncheck().run()
    at.button(key="lbl_q_build").click().run()
    assert_ok(at)
    q = rq.load_queue(ws, sid)
    assert q is not None and q.items and q.checkpoint_id == "tiny-test" and q.scoring == "in-sample"
    first = q.items[0]
    sfx = "_".join(str(v) for v in first.bbox)
    assert any("send to map" in c.value for c in at.caption)
    at.button(key=f"lbl_q_confirm_{sfx}").click().run()
    assert_ok(at)
    assert any("Confirmed the label" in s.value for s in at.success)
    h = ws.label_history(sid)[-1]
    assert h.tool == "queue-confirm" and h.analyst == "Ann" and h.n_confirmed == first.pixels and h.n_changed == 0
    st = ws.pixel_status(sid)
    assert (st.ravel()[first.indices] == PIXEL_CONFIRMED).all()
    assert not any(b.key == f"lbl_q_confirm_{sfx}" for b in at.button)  # judged: gone from the queue
    # zoom to the next item sets the window and shows the suspicion on the canvas
    nxt = rq.pending_items(ws, rq.load_queue(ws, sid), label=ws.effective_label(sid))[0]
    at.button(key=f"lbl_q_zoom_{'_'.join(str(v) for v in nxt.bbox)}").click().run()
    assert_ok(at)
    assert any("Zoomed to the component" in i.value for i in at.info)
    assert at.session_state["lbl_sus_opacity"] >= 0.5 and at.session_state[f"lbl_size_{sid}"] == 128
    # "Open on map" asks the Map for the queue's checkpoint and the TTA the queue was built with
    at.button(key=f"lbl_q_map_{'_'.join(str(v) for v in nxt.bbox)}").click().run()
    jump = at.session_state["map_jump"]
    assert jump["checkpoint_id"] == "tiny-test" and jump["tta"] == q.tta and jump["bbox"] == tuple(nxt.bbox)
    assert jump["checkpoint_role"] == "the checkpoint the queue was built with" and "cell" not in jump
    del at.session_state["map_jump"]
    at.run()
    # the status overlay renders
    at.toggle(key="lbl_status").set_value(True).run()
    assert_ok(at)
    # held-out scoring: the head refitted on the other scene's labels scores this one; the queue says so
    at.checkbox(key=f"lbl_q_heldout_{sid}").check().run()
    at.button(key="lbl_q_build").click().run()
    assert_ok(at)
    assert rq.load_queue(ws, sid).scoring == "held-out head (1 scene(s))"
    assert any("held-out head (1 scene(s))" in c.value for c in at.caption)


def test_labels_retrain_buttons_submit_jobs_and_show_before_after(ws, monkeypatch):
    from seghz.jobs import runner

    monkeypatch.setattr(ui.common, "canvas", fake_canvas_factory([]))
    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    at = app("pages/3_Labels.py").run()
    at.number_input(key="lbl_rt_epochs").set_value(2)
    at.button(key="lbl_rt_train").click().run()
    assert_ok(at)
    at.button(key="lbl_rt_refit").click().run()
    assert_ok(at)
    jobs = {j.kind: j for j in ws.list_jobs()}
    assert jobs["train"].config["parent_checkpoint_id"] == "tiny-test" and jobs["train"].config["epochs"] == 2
    assert jobs["refit"].config["checkpoint_id"] == "tiny-test"
    assert any("Head refit job" in s.value for s in at.success)

    # a finished refit: before/after scores of the parent and the new checkpoint
    dst = ws.root / "checkpoints" / "after.safetensors"
    dst.write_bytes((ws.root / "checkpoints" / "tiny.safetensors").read_bytes())
    ck = ws.get_checkpoint("tiny-test")
    metrics = {"val": {"miou": 0.6, "per_class_iou": {n: 0.2 for n in HZ7.names}}}
    new_id = ws.register_checkpoint(dst, {"arch": ck.arch, "encoder": ck.encoder, "scheme": "hz7", "metrics": metrics},
                                    checkpoint_id="after-test", name="after")
    jid = jobs["refit"].id
    ws.update_job(jid, status="done", progress=1.0, result={"checkpoint_id": new_id, "corrected_acc_before": 0.5,
                                                              "corrected_acc_after": 0.9})
    ws.update_job(jobs["train"].id, status="cancelled")
    at = app("pages/3_Labels.py").run()
    assert_ok(at)
    assert any("50.0 % → 90.0 %" in c.value for c in at.caption)
    table = next(d.value for d in at.dataframe if "Δ (pp)" in d.value.columns)
    row = table[table["metric"] == f"IoU {HZ7.names[1]}"].iloc[0]
    assert abs(row.iloc[1] - 0.1) < 1e-9 and abs(row.iloc[2] - 0.2) < 1e-9


# ------------------------------------------------------------------------------------------------ train


def test_train_rejects_bad_settings(ws):
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    at.number_input(key="train_crop").set_value(100)
    at.button(key="train_submit").click().run()
    assert_ok(at)
    assert any("multiple of 32" in e.value for e in at.error)
    assert ws.list_jobs() == []


def test_train_recipe_options_reach_the_job_config(ws, monkeypatch):
    from seghz.jobs import runner

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    at.number_input(key="train_crop").set_value(64)
    at.selectbox(key="train_noise").set_value("cos")
    at.selectbox(key="train_sampler").set_value("class_aware")
    at.selectbox(key="train_cw").set_value("inverse")
    at.number_input(key="train_smooth").set_value(0.1)
    at.checkbox(key="train_consistency").check()
    at.number_input(key="train_patience").set_value(3)
    at.checkbox(key="train_auto_promote").check()
    at.button(key="train_submit").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    c = job.config
    assert (c["noise_mask"], c["sampler"], c["class_weights"], c["consistency"], c["patience"], c["auto_promote"]) == \
        ("cos", "class_aware", "inverse", True, 3, True)
    assert abs(c["label_smoothing"] - 0.1) < 1e-9 and c["ohem"] is False


def test_train_enter_never_launches_and_the_same_run_is_not_queued_twice(ws, monkeypatch):
    """A review found that Enter in each number box of the form launched a job (four jobs from four boxes, each
    with the settings typed so far): the form submits on the button only; a second click with the same settings
    while the first run is queued names that job and queues nothing."""
    from seghz.jobs import runner

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    (form,) = at.get("form")
    assert form.proto.form.enter_to_submit is False
    at.number_input(key="train_crop").set_value(64)
    at.button(key="train_submit").click().run()
    (job,) = ws.list_jobs()
    at.button(key="train_submit").click().run()
    assert_ok(at)
    assert [j.id for j in ws.list_jobs()] == [job.id]
    assert any(f"already queued or running as job `{job.id}`" in i.value for i in at.info)
    at.number_input(key="train_crop").set_value(96)  # another run: queued
    at.button(key="train_submit").click().run()
    assert len(ws.list_jobs()) == 2


def test_train_noise_robust_loss_reaches_the_job_config_and_bad_combinations_are_refused(ws, monkeypatch):
    from seghz.jobs import runner

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    assert at.selectbox(key="train_robust").value == "none"
    assert at.number_input(key="train_noise_rate").disabled and at.number_input(key="train_gce_q").disabled
    at.number_input(key="train_crop").set_value(64)
    at.selectbox(key="train_robust").set_value("forward")
    at.selectbox(key="train_noise").set_value("cos")  # another rule for the same noisy pixels: refused
    at.button(key="train_submit").click().run()
    assert_ok(at)
    assert any("cannot be combined with the noise mask" in e.value for e in at.error) and ws.list_jobs() == []
    assert not at.number_input(key="train_noise_rate").disabled and at.number_input(key="train_gce_q").disabled
    at.selectbox(key="train_noise").set_value("none")
    at.number_input(key="train_noise_rate").set_value(0.2)
    assert at.number_input(key="train_ema").value == 0.0  # weight averaging is off by default
    at.number_input(key="train_ema").set_value(0.05)
    at.button(key="train_submit").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    c = job.config
    assert c["robust"] == "forward" and abs(c["noise_rate"] - 0.2) < 1e-9 and c["noise_mask"] == "none"
    assert abs(c["ema"] - 0.05) < 1e-9
    assert c["coteach"] == 0.0 and c["coteach_select"] == "class"  # co-teaching is off by default


def test_train_coteaching_reaches_the_job_config_and_conflicts_are_refused(ws, monkeypatch):
    from seghz.jobs import runner

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    assert at.number_input(key="train_coteach").value == 0.0 and at.selectbox(key="train_coteach_select").disabled
    at.number_input(key="train_crop").set_value(64)
    at.number_input(key="train_coteach").set_value(0.3)
    at.selectbox(key="train_robust").set_value("gce")  # another rule for the same pixels: refused
    at.button(key="train_submit").click().run()
    assert_ok(at)
    assert any("co-teaching" in e.value and "robust='gce'" in e.value for e in at.error) and ws.list_jobs() == []
    assert not at.selectbox(key="train_coteach_select").disabled
    at.selectbox(key="train_robust").set_value("none")
    at.selectbox(key="train_coteach_select").set_value("pixel")
    at.button(key="train_submit").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert abs(job.config["coteach"] - 0.3) < 1e-9 and job.config["coteach_select"] == "pixel"


def test_train_noise_mask_denominator_and_constant_threshold_reach_the_job_config(ws, monkeypatch):
    from seghz.jobs import runner

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    assert at.selectbox(key="train_noise_den").value == "all"  # the study's denominator by default
    assert at.selectbox(key="train_noise_den").disabled and at.number_input(key="train_noise_p").disabled
    at.number_input(key="train_crop").set_value(64)
    at.selectbox(key="train_noise").set_value("const")
    at.button(key="train_submit").click().run()  # the form's dependent inputs follow its last submitted values
    assert_ok(at)
    (first,) = ws.list_jobs()
    assert first.config["noise_mask"] == "const" and first.config["noise_denominator"] == "all"
    assert abs(first.config["noise_threshold"] + np.log(0.01)) < 1e-9  # the study's thre_0.01
    assert not at.selectbox(key="train_noise_den").disabled and not at.number_input(key="train_noise_p").disabled
    at.selectbox(key="train_noise_den").set_value("kept")
    at.number_input(key="train_noise_p").set_value(0.05)
    at.button(key="train_submit").click().run()
    assert_ok(at)
    (job,) = [j for j in ws.list_jobs() if j.id != first.id]
    c = job.config
    assert c["noise_mask"] == "const" and c["noise_denominator"] == "kept"
    assert abs(c["noise_threshold"] + np.log(0.05)) < 1e-9


def test_train_noise_matrix_from_reviews_is_shown_and_reaches_the_job_config(ws, monkeypatch):
    from seghz.jobs import runner

    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)  # no worker process
    (scene,) = ws.list_scenes("train")
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    assert "No reviewed pixels in the train split yet" in texts(at) and not at.get("plotly_chart")
    # only corrections saved: the reviews over-sample wrong labels, and the form refuses the matrix
    orig = ws.effective_label(scene.id, 0)
    fix = np.zeros(orig.shape, bool)
    fix[:8, :8] = True
    ws.save_label_edit(scene.id, 0, "ana", "brush", pixels=np.flatnonzero(fix), values=(int(orig[0, 0]) + 1) % 5)
    at.number_input(key="train_crop").set_value(64)
    at.selectbox(key="train_robust").set_value("forward")
    at.selectbox(key="train_noise").set_value("cos")  # refused combination: no job, but the form now says "forward"
    at.button(key="train_submit").click().run()
    assert at.selectbox(key="train_noise_from").value == "symmetric" and ws.list_jobs() == []
    at.selectbox(key="train_noise").set_value("none")
    at.selectbox(key="train_noise_from").set_value("reviews")
    at.button(key="train_submit").click().run()
    assert_ok(at)
    assert any("Noise matrix from your reviews: 100% of the 64 reviewed pixels were corrected" in e.value
               for e in at.error) and ws.list_jobs() == []
    assert any("Not usable for training" in w.value for w in at.warning)
    # the whole tile confirmed as well: an honest sample; the heatmap shows it and the job asks for it
    ws.save_label_edit(scene.id, 1, "ana", "confirm", confirm=~fix)
    at.button(key="train_submit").click().run()
    assert_ok(at)
    (job,) = ws.list_jobs()
    assert job.config["robust"] == "forward" and job.config["noise_from_review"] is True
    assert len(at.get("plotly_chart")) == 1 and f"{orig.size:,} reviewed pixels in 1 scene(s), 64 of them corrected" in texts(at)


def test_train_submits_job_shows_result_and_promotes(ws):
    at = app("pages/4_Train.py").run()
    assert_ok(at)
    assert at.radio(key="train_start").value == "finetune"
    at.number_input(key="train_epochs_finetune").set_value(1)
    at.number_input(key="train_batch").set_value(2)
    at.number_input(key="train_crop").set_value(64)
    at.number_input(key="train_steps").set_value(1)
    at.text_input(key="train_name").input("ui test run")
    at.button(key="train_submit").click().run()
    assert_ok(at)
    jobs = ws.list_jobs()
    assert len(jobs) == 1 and jobs[0].kind == "train"
    job = jobs[0]
    assert job.config["parent_checkpoint_id"] == "tiny-test" and job.config["crop_size"] == 64
    assert job.config["steps_per_epoch"] == 1 and job.config["name"] == "ui test run"
    assert any(job.id in s.value for s in at.success)

    deadline = time.monotonic() + TRAIN_WAIT_S
    while ws.get_job(job.id).active and time.monotonic() < deadline:
        time.sleep(1.0)
    job = ws.get_job(job.id)
    if job.active:
        from seghz.jobs.runner import cancel_job

        cancel_job(ws, job.id)
        pytest.fail(f"training job still {job.status} after {TRAIN_WAIT_S} s (CPU too busy?)")
    assert job.status == "done", job.message
    new_id = job.result["checkpoint_id"]
    (train_scene,) = ws.list_scenes("train")  # recorded, for the leakage warning of a later split move
    assert ws.get_checkpoint(new_id).train_scenes == (train_scene.id,)
    assert [c.id for c in ws.checkpoints_trained_on(train_scene.id)] == [new_id]

    at = app("pages/4_Train.py").run()  # a new session: everything comes back from the workspace
    assert_ok(at)
    assert len(at.get("plotly_chart")) >= 1  # loss / val curves
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()  # promotions are recorded with a name
    at.button(key=f"train_promote_{new_id}").click().run()
    assert_ok(at)
    assert ws.active_checkpoint().id == new_id


# ------------------------------------------------------------------------------------------------ evaluate: drill-down


def _frame_with(at: AppTest, column: str):
    """The first dataframe of a run that has ``column``."""
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    assert frames, f"no dataframe with column {column!r}"
    return frames[0]


def _off_diagonal_cells(ws, cid="tiny-test"):
    ev = ws.list_evaluations(cid)[0].result
    cm = np.asarray(ev["confusion"])
    return ev, [(int(i), int(j)) for i, j in zip(*np.nonzero(cm)) if i != j]


def test_evaluate_matrix_views_frequencies_and_drilldown_sends_to_review(ws):
    import json

    from seghz import drilldown, report

    at = app("pages/2_Evaluate.py").run()
    at.button(key="eval_run").click().run()
    assert_ok(at)
    assert at.selectbox(key="eval_view").options == ["hz7"]
    for mode in ("counts", "recall", "precision"):
        at.radio(key="eval_cm_mode").set_value(mode).run()
        assert_ok(at)
        cm_chart = [c for c in at.get("plotly_chart") if c.key == "eval_cm"]
        assert len(cm_chart) == 1
        spec = json.loads(cm_chart[0].proto.spec)
        assert spec["data"][0]["type"] == "heatmap"
        assert report.CONFUSION_MODE_LABELS[mode] in spec["layout"]["title"]["text"]
    t = texts(at)
    assert "Class frequencies" in t and "Drill-down" in t
    ev, cells = _off_diagonal_cells(ws)
    assert cells, "the tiny model should confuse something"
    names = ev["classes"]
    cm = np.asarray(ev["confusion"])
    a, b = max(cells, key=lambda c: cm[c])
    at.selectbox(key="eval_dd_true").set_value(names[a])
    at.selectbox(key="eval_dd_pred").set_value(names[b]).run()
    assert_ok(at)
    assert f"{int(cm[a, b]):,} px labelled **{names[a]}** are predicted **{names[b]}**" in texts(at)
    table = _frame_with(at, "rank")
    assert len(table) >= 1 and int(table.iloc[:, -1].sum()) == int(cm[a, b])  # 128 px scene: one 256 px window
    imgs = at.get("image")
    assert len(imgs) >= 1 and "in magenta" in imgs[0].proto.imgs[0].caption
    assert any("Open on map: scene `" in c.value for c in at.caption)
    # frequency table with a bias threshold
    freq = _frame_with(at, "bias")
    assert list(freq["class"]) == names and set(freq["bias"]) <= {"", "over", "under"}
    # send to label review: the windows are listed by scene name and place, and a sender must be named
    sel = at.multiselect(key="eval_dd_send_sel")
    assert all(o.startswith("#") and " px" in o for o in sel.options), sel.options
    assert at.button(key="eval_dd_send").disabled
    assert any("Enter your analyst name in the sidebar to send windows" in c.value for c in at.caption)
    at.sidebar.text_input(key="seghz_analyst").input("Eve").run()
    at.button(key="eval_dd_send").click().run()
    assert_ok(at)
    items = drilldown.load_review_list(ws)
    assert len(items) == len(table) and items[0]["true"] == names[a] and items[0]["predicted"] == names[b]
    assert items[0]["analyst"] == "Eve"
    assert json.loads(drilldown.review_list_path(ws).read_text()) == items
    assert any(f"{len(table)} added" in s.value and "Sent from Evaluate for review" in s.value for s in at.success)
    # one click opens the Labels page on the scene the windows were sent from
    at.button(key="eval_dd_open_labels").click().run()
    assert at.session_state["lbl_open_scene"] == items[0]["scene_id"]


def test_evaluate_cell_without_pixels_says_so(ws):
    at = app("pages/2_Evaluate.py").run()
    at.button(key="eval_run").click().run()
    assert_ok(at)
    ev = ws.list_evaluations("tiny-test")[0].result
    cm = np.asarray(ev["confusion"])
    empty = [(i, j) for i in range(len(cm)) for j in range(len(cm)) if cm[i, j] == 0]
    if not empty:
        pytest.skip("every cell has pixels")
    i, j = empty[0]
    at.selectbox(key="eval_dd_true").set_value(ev["classes"][i])
    at.selectbox(key="eval_dd_pred").set_value(ev["classes"][j]).run()
    assert_ok(at)
    assert "No pixels in this cell." in texts(at)


def test_evaluate_collapsed_scheme_view(ws, tiny_checkpoint):
    """A cached hz14 evaluation (injected) is shown in hz14, hz11 and hz7 with the matrix collapsed."""
    from seghz import drilldown
    from seghz.metrics import scores

    _path, meta = tiny_checkpoint
    cid = ws.register_checkpoint(ws.root / "checkpoints" / "tiny.safetensors", {**meta, "scheme": "hz14"},
                                 checkpoint_id="fake-hz14", name="fake hz14")
    ws.set_active_checkpoint(cid)
    hz14 = get_scheme("hz14")
    cm = np.random.default_rng(0).integers(0, 30, (hz14.num_classes, hz14.num_classes))
    res = scores(cm, hz14.names)
    dv = ws.data_version("val")
    res.update(checkpoint_id=cid, split="val", tta="none", data_version=dv, scenes=1, per_scene={})
    ws.add_evaluation(cid, "val", False, dv, res)
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    assert at.selectbox(key="eval_view").options == ["hz14", "hz11", "hz7"]
    at.selectbox(key="eval_view").set_value("hz7").run()
    assert_ok(at)
    mi = {m.label: m.value for m in at.metric}["mIoU"]
    want = scores(drilldown.collapse_confusion(cm, "hz14", "hz7"))["miou"]
    assert mi == f"{100 * want:.1f} %"
    assert "collapsed from **hz14** to **hz7**" in texts(at)
    assert list(_frame_with(at, "bias")["class"]) == list(get_scheme("hz7").names)
    # this injected result has no calibration counts (as one cached before they existed): the page says how to get them
    assert "predates the calibration counts" in texts(at)
    # counts of the native classes cannot be collapsed: the collapsed view leaves them out
    with_cal = {**res, "calibration": {"bins": 10, "count": [[0] * 10] * hz14.num_classes}, "ece": 0.1}
    collapsed = drilldown.collapse_result(with_cal, "hz14", "hz7")
    assert "calibration" not in collapsed and "ece" not in collapsed and "calibration" in with_cal


def _inject_evaluation(ws, cid: str, cm) -> dict:
    """A cached val evaluation of ``cid`` with confusion matrix ``cm`` (hz7), as the Evaluate page finds it."""
    from seghz.metrics import scores

    res = scores(np.asarray(cm), HZ7.names)
    dv = ws.data_version("val")
    (scene,) = [s for s in ws.list_scenes("val") if s.label_path]
    res.update(checkpoint_id=cid, split="val", tta="none", data_version=dv, scenes=1,
               per_scene={scene.id: np.asarray(cm).tolist()})
    ws.add_evaluation(cid, "val", False, dv, res)
    return res


def _dd_cell(at: AppTest) -> tuple[str, str]:
    return at.selectbox(key="eval_dd_true").value, at.selectbox(key="eval_dd_pred").value


def test_evaluate_drilldown_moves_to_the_new_evaluations_largest_confusion(ws, tiny_checkpoint):
    """Switching the checkpoint: the page's own pick (or a cell empty in the new evaluation) moves to the new
    largest off-diagonal cell; an analyst's pick that still has pixels stays."""
    _path, meta = tiny_checkpoint
    ws.register_checkpoint(ws.root / "checkpoints" / "tiny.safetensors", {**meta, "scheme": "hz7"},
                           checkpoint_id="other-ck", name="other model")
    n = HZ7.names
    a = np.diag([100_000] * HZ7.num_classes)
    a[1, 2], a[3, 4], a[5, 6] = 40, 10, 5  # largest: 1 -> 2
    b = np.diag([100_000] * HZ7.num_classes)
    b[4, 3], b[5, 6] = 30, 8  # largest: 4 -> 3; 1 -> 2 and 3 -> 4 have no pixels
    _inject_evaluation(ws, "tiny-test", a)
    _inject_evaluation(ws, "other-ck", b)
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    assert _dd_cell(at) == (n[1], n[2])
    at.selectbox(key="eval_checkpoint").set_value("other-ck").run()
    assert_ok(at)
    assert _dd_cell(at) == (n[4], n[3])
    assert f"30 px labelled **{n[4]}** are predicted **{n[3]}**" in texts(at)
    assert "No pixels in this cell." not in texts(at)
    # the analyst's pick, with pixels in both: kept across the switch
    at.selectbox(key="eval_dd_true").set_value(n[5])
    at.selectbox(key="eval_dd_pred").set_value(n[6]).run()
    at.selectbox(key="eval_checkpoint").set_value("tiny-test").run()
    assert_ok(at)
    assert _dd_cell(at) == (n[5], n[6])
    # the analyst's pick without pixels in the new evaluation: the new largest
    at.selectbox(key="eval_dd_true").set_value(n[3])
    at.selectbox(key="eval_dd_pred").set_value(n[4]).run()
    assert _dd_cell(at) == (n[3], n[4])
    at.selectbox(key="eval_checkpoint").set_value("other-ck").run()
    assert_ok(at)
    assert _dd_cell(at) == (n[4], n[3])



def test_evaluate_frequency_delta_and_normalised_matrix_never_show_a_false_zero(ws):
    """Class frequencies: a Δ that rounds to zero reads 0.0, not -0.0; the row-normalised matrix shows <0.1% for a
    cell with pixels and hovers its pixel count."""
    import json

    from streamlit import dataframe_util

    n = HZ7.names
    cm = np.diag([100_000] * HZ7.num_classes)
    cm[1, 2] = 12  # class 1: predicted share 0.0017 pp below its labelled share; 12 of 100,012 px of its row
    _inject_evaluation(ws, "tiny-test", cm)
    at = app("pages/2_Evaluate.py").run()
    assert_ok(at)
    (el,) = [d for d in at.dataframe if "bias" in d.value.columns]
    assert -0.05 < el.value.loc[1, "Δ (pp)"] < 0
    shown = dataframe_util.convert_arrow_bytes_to_pandas_df(el.proto.arrow_data.styler.display_values)
    deltas = shown.iloc[:, list(el.value.columns).index("Δ (pp)")].tolist()
    assert deltas[1] == "0.0" and not any(d.startswith("-0.0") for d in deltas), deltas
    at.radio(key="eval_cm_mode").set_value("recall").run()
    assert_ok(at)
    (chart,) = [c for c in at.get("plotly_chart") if c.key == "eval_cm"]
    spec = json.loads(chart.proto.spec)
    heat, points = spec["data"]
    assert heat["text"][1][2] == "<0.1%" and heat["text"][1][0] == "0.0%"
    hover = points["customdata"][1 * HZ7.num_classes + 2]
    assert hover == f"label {n[1]}<br>predicted {n[2]}<br><0.1% of the label row<br>12 of 100,012 px"


def test_evaluate_open_on_map_predicts_with_the_evaluated_checkpoint(ws, tiny_checkpoint, monkeypatch):
    """"Open on map" from the drill-down of a checkpoint that is not the active one: the jump carries it, and the Map
    page predicts the region with it (and says so), so the error layer shows that checkpoint's errors."""
    import shutil

    import streamlit_folium
    from test_page_map import FakeFolium

    from seghz.geo.regions import workspace_tile_key
    from seghz.geo.tiles import tile_dir

    _path, meta = tiny_checkpoint
    ws.register_checkpoint(ws.root / "checkpoints" / "tiny.safetensors", {**meta, "scheme": "hz7"},
                           checkpoint_id="other-ck", name="other model")
    assert ws.active_checkpoint().id == "tiny-test"
    at = app("pages/2_Evaluate.py").run()
    at.selectbox(key="eval_checkpoint").set_value("other-ck").run()
    at.button(key="eval_run").click().run()
    assert_ok(at)
    at.button(key="eval_dd_map_0").click().run()
    jump = at.session_state["map_jump"]
    assert jump["checkpoint_id"] == "other-ck" and jump["checkpoint_name"] == "other model"
    assert jump["layer"] == "error" and "by other model" in jump["why"]
    (scene,) = [s for s in ws.list_scenes("val")]
    assert jump["scene_id"] == scene.id

    monkeypatch.setattr(streamlit_folium, "st_folium", FakeFolium(None))
    try:
        mp = AppTest.from_file(str(REPO / "pages" / "1_Map.py"), default_timeout=60)
        mp.session_state["map_jump"] = jump
        mp.run()
        assert_ok(mp)
        rec = mp.session_state["map_results"][scene.id]
        assert rec["checkpoint_id"] == "other-ck" and rec["checkpoint_name"] == "other model"
        t = texts(mp)
        assert "predicted with **other model** (`other-ck`), the evaluated checkpoint" in t
        assert "with other model (other-ck)" in t and "not the active checkpoint" in t
        assert "Error layer:" in t
        # a plain jump (no checkpoint, e.g. from the noise queue) still predicts with the active model
        mp2 = AppTest.from_file(str(REPO / "pages" / "1_Map.py"), default_timeout=60)
        mp2.session_state["map_jump"] = {k: v for k, v in jump.items() if not k.startswith("checkpoint")}
        mp2.run()
        assert_ok(mp2)
        assert mp2.session_state["map_results"][scene.id]["checkpoint_id"] == "tiny-test"
        assert "predicted with the active model" in texts(mp2)
    finally:
        shutil.rmtree(tile_dir(workspace_tile_key(ws.root), scene.id).parent, ignore_errors=True)  # this ws's tiles
