"""The Evaluate → Labels review hand-off (an analyst's review): a window sent to label review from Evaluate's confusion
drill-down lost which checkpoint made the confusion, so the Labels page compared it with the ACTIVE model ("Agrees
with the label on 99.1 %" on a window sent for another checkpoint's Forest → Green_land); and "Open the Labels page on
the sent windows" opened the whole scene, not a sent window.

Now each sent window records the checkpoint (id, name, class scheme), the evaluation's TTA and the A → B cell; the
Labels page lists it with what it was sent for, compares it with that checkpoint while it is registered and not
archived (and says plainly when it compares with the active model instead), and Evaluate's button lands on the first
sent window (scene, position and size). Entries written before those fields keep working.

Same prepared workspace as tests/test_pages.py (two 128 px hz7 scenes, the active tiny checkpoint ``tiny-test``); a
second checkpoint, ``other-ck``, predicts one class everywhere, so whose prediction the page shows is unmistakable.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_evaluate_review_fixes import _add_val_scene, _window_keys
from test_page_labels_loop import STROKE, FakeCanvas
from test_pages import HZ7, REPO, TIMEOUT, app, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)

import ui.common
from seghz import drilldown
from seghz.drilldown import Window
from seghz.labels_edit import zoom_window

LABELS = "pages/3_Labels.py"
CONSTANT = "Buildings"  # what other-ck predicts on every pixel


def _register_constant(ws, cid: str = "other-ck", name: str = "other model", cls: str = CONSTANT) -> str:  # noqa: F811
    """A registered, not active hz7 checkpoint that predicts ``cls`` on every pixel (its head: zero weights, one
    large bias)."""
    import torch

    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model

    torch.manual_seed(1)
    model = build_model("FPN", "tu-mobilenetv3_small_050", HZ7.num_classes)
    with torch.no_grad():
        head = model.segmentation_head[0]
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[HZ7.names.index(cls)] = 10.0
    meta = {"arch": "FPN", "encoder": "tu-mobilenetv3_small_050", "num_classes": HZ7.num_classes,
            "scheme": "hz7", "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 256,
            "synthetic": True}
    path = ws.root / "checkpoints" / f"{cid}.safetensors"
    save_checkpoint(path, model, meta)
    return ws.register_checkpoint(path, meta, checkpoint_id=cid, name=name)


def _val_scene(ws):  # noqa: F811
    return next(s for s in ws.list_scenes() if s.split == "val")


def _a_class(ws, scene) -> str:  # noqa: F811
    """A class the scene's label holds that is not :data:`CONSTANT` (the A of a sent A → CONSTANT cell)."""
    lbl = ws.effective_label(scene.id)
    counts = np.bincount(lbl[lbl != 255].ravel(), minlength=HZ7.num_classes)
    counts[HZ7.names.index(CONSTANT)] = 0
    return HZ7.names[int(np.argmax(counts))]


def _labels_page(ws, monkeypatch, scene_id: str | None = None) -> tuple[AppTest, FakeCanvas]:  # noqa: F811
    cv = FakeCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = app(LABELS).run()
    if scene_id is not None and at.selectbox(key="lbl_scene").value != scene_id:
        at.selectbox(key="lbl_scene").set_value(scene_id).run()
    at.sidebar.text_input(key="seghz_analyst").input("Ann").run()
    assert_ok(at)
    return at, cv


def _markdowns(at) -> list[str]:
    return [m.value for m in at.markdown]


# ------------------------------------------------------------------------------------------------ the review list


def test_a_sent_window_records_the_checkpoint_tta_and_cell_and_old_entries_still_read(ws):  # noqa: F811
    w = Window("s", (0, 256, 256, 512), 40)
    assert drilldown.add_to_review_list(ws, [w], true_class="Forest", pred_class="Water", scheme="hz7",
                                        checkpoint_id="tiny-test", checkpoint_name="tiny test model",
                                        checkpoint_scheme="hz7", tta="d4", analyst="Eve") == 1
    (e,) = drilldown.load_review_list(ws)
    assert (e["checkpoint_id"], e["checkpoint_name"], e["checkpoint_scheme"], e["tta"]) == \
           ("tiny-test", "tiny test model", "hz7", "d4")
    assert (e["true"], e["predicted"], e["scheme"], e["count"], e["bbox"]) == ("Forest", "Water", "hz7", 40, [0, 256, 256, 512])
    assert drilldown.review_summary(e) == ("sent from Evaluate: **tiny test model** predicts **Water** where the label "
                                           "says **Forest** on 40 px (TTA d4)")
    ck, why = drilldown.review_checkpoint(ws, e)
    assert ck is not None and ck.id == "tiny-test" and why == ""
    # the same window and cell sent again is listed once; the entry found by its key is the recorded one
    assert drilldown.add_to_review_list(ws, [w], true_class="Forest", pred_class="Water", scheme="hz7",
                                        checkpoint_id="tiny-test") == 0
    assert drilldown.find_review_entry(drilldown.load_review_list(ws), {**e, "tta": "none"})["tta"] == "d4"
    # an entry written before the name, scheme and TTA were recorded
    old = {k: v for k, v in e.items() if k not in ("checkpoint_name", "checkpoint_scheme", "tta")}
    assert drilldown.review_tta(old) == "none"
    assert drilldown.review_summary(old).startswith("sent from Evaluate: **tiny-test** predicts **Water**")
    assert drilldown.review_summary(old).endswith("on 40 px (TTA not recorded)")
    assert drilldown.review_summary(old, "tiny test model").startswith("sent from Evaluate: **tiny test model**")
    assert drilldown.review_checkpoint(ws, old)[0].id == "tiny-test"
    none = {k: v for k, v in old.items() if k != "checkpoint_id"}
    assert drilldown.review_checkpoint(ws, none) == (
        None, "the review list does not record which checkpoint sent this window")
    assert "an unrecorded checkpoint" in drilldown.review_summary(none)


def test_the_sent_checkpoint_is_used_only_while_registered_and_not_archived(ws):  # noqa: F811
    _register_constant(ws)
    e = {"scene_id": "s", "bbox": [0, 0, 8, 8], "true": "Forest", "predicted": CONSTANT, "scheme": "hz7",
         "checkpoint_id": "other-ck", "checkpoint_name": "other model", "count": 9}
    assert drilldown.review_checkpoint(ws, e)[0].id == "other-ck"
    ws.archive_checkpoint("other-ck", analyst="Ann", reason="superseded")
    ck, why = drilldown.review_checkpoint(ws, e)
    assert ck is None and why.startswith("checkpoint **other model** is archived") and "by Ann" in why
    gone = {**e, "checkpoint_id": "deleted-ck", "checkpoint_name": "old model"}
    assert drilldown.review_checkpoint(ws, gone) == (
        None, "checkpoint **old model** (`deleted-ck`) is no longer registered")


def test_bbox_overlaps_the_window_shown():
    assert drilldown.bbox_overlaps((8, 16, 40, 64), (0, 0, 128, 128))
    assert drilldown.bbox_overlaps((8, 16, 40, 64), (39, 63, 10, 10))
    assert not drilldown.bbox_overlaps((8, 16, 40, 64), (40, 0, 10, 128))  # end exclusive
    assert not drilldown.bbox_overlaps((8, 16, 40, 64), (0, 64, 128, 10))


# ------------------------------------------------------------------------------------------------ the Labels page


def test_labels_compares_a_sent_window_with_the_checkpoint_it_was_sent_for(ws, monkeypatch):  # noqa: F811
    """The window was sent for other-ck's A → Buildings (TTA flip): the list says so, and opened in the canvas the
    page predicts it with other-ck and that TTA (every pixel Buildings), not with the active tiny-test; Accept then
    writes other-ck's classes and the save records other-ck."""
    _register_constant(ws)
    scene = _val_scene(ws)
    a = _a_class(ws, scene)
    assert drilldown.add_to_review_list(ws, [Window(scene.id, (8, 16, 40, 64), 77)], true_class=a,
                                        pred_class=CONSTANT, scheme="hz7", checkpoint_id="other-ck",
                                        checkpoint_name="other model", checkpoint_scheme="hz7", tta="flip",
                                        analyst="Eve") == 1
    at, cv = _labels_page(ws, monkeypatch, scene.id)
    item = f"sent from Evaluate: **other model** predicts **{CONSTANT}** where the label says **{a}** on 77 px (TTA flip)"
    assert any(item in m and f"**{a} → {CONSTANT}**" in m and "sent by Eve" in m for m in _markdowns(at)), _markdowns(at)
    at.button(key="lbl_sent_zoom_0").click().run()
    assert_ok(at)
    assert any("Opened the window sent from Evaluate at rows 8–39" in i.value and item in i.value for i in at.info)
    assert any("The prediction here is **other model**'s (TTA flip), the checkpoint it was sent for" in c.value
               for c in at.caption)
    at.button(key="lbl_predict").click().run()
    assert_ok(at)
    (key, pred), = at.session_state["lbl_preds"].items()
    assert "other-ck" in key and "flip" in key
    assert (np.asarray(pred) == HZ7.names.index(CONSTANT)).all()  # other-ck's prediction, not the active model's
    assert drilldown.cached_scene_prediction(ws, "other-ck", scene.id, "flip") is not None  # with the sent TTA
    lbl = ws.effective_label(scene.id)
    n_a = int((lbl == HZ7.names.index(a)).sum())  # the 128 px scene is the window: every A pixel is A → Buildings
    assert any(f"other model predicts **{CONSTANT}** where the label shown says **{a}** on {n_a:,} px of this "
               "window (sent for 77 px)" in c.value for c in at.caption), [c.value for c in at.caption]
    agree = float((lbl[lbl != 255] == HZ7.names.index(CONSTANT)).mean())
    assert any(c.value == f"Agrees with the label on {100 * agree:.1f} % of labelled pixels." for c in at.caption)
    # hiding the magenta box keeps the comparison with other-ck
    at.button(key="lbl_focus_hide").click().run()
    assert_ok(at)
    assert not any("Magenta box" in c.value for c in at.caption)
    assert any("the checkpoint it was sent for" in c.value for c in at.caption)
    # Accept writes other-ck's classes, and the save records whose prediction it accepted
    at.radio(key="lbl_tool").set_value("accept").run()
    cv.paint(at)
    at.button(key="lbl_save").click().run()
    assert_ok(at)
    assert (ws.effective_label(scene.id)[STROKE] == HZ7.names.index(CONSTANT)).all()
    assert ws.label_history(scene.id)[-1].checkpoint_id == "other-ck"


def test_labels_says_when_it_compares_with_the_active_model_instead(ws, monkeypatch):  # noqa: F811
    """The checkpoint a window was sent for is archived: the list and the prediction say the comparison is with the
    active model, which is not the one that made the confusion."""
    _register_constant(ws)
    scene = _val_scene(ws)
    a = _a_class(ws, scene)
    drilldown.add_to_review_list(ws, [Window(scene.id, (8, 16, 40, 64), 77)], true_class=a, pred_class=CONSTANT,
                                 scheme="hz7", checkpoint_id="other-ck", checkpoint_name="other model",
                                 checkpoint_scheme="hz7", tta="d4", analyst="Eve")
    ws.archive_checkpoint("other-ck", analyst="Ann")
    at, _ = _labels_page(ws, monkeypatch, scene.id)
    assert any("⚠ checkpoint **other model** is archived" in m and "compares this window with the active model" in m
               for m in _markdowns(at)), _markdowns(at)
    at.button(key="lbl_sent_zoom_0").click().run()
    at.button(key="lbl_predict").click().run()
    assert_ok(at)
    assert any("the prediction here is the **active model tiny test model**'s (TTA none), which is **not the one that "
               "made the confusion**" in w.value and "other model" in w.value for w in at.warning), \
        [w.value for w in at.warning]
    (key,) = at.session_state["lbl_preds"]
    assert "tiny-test" in key and "other-ck" not in key
    assert any(c.value.startswith("The active model, not the one that made the confusion, agrees with the label on")
               for c in at.caption)
    assert any(c.value.startswith(f"The active model predicts **{CONSTANT}** where the label shown says **{a}**")
               for c in at.caption)


def test_labels_notes_sent_windows_of_other_checkpoints_in_the_window_shown(ws, monkeypatch):  # noqa: F811
    """Not opened from the list: the window shown holds a window sent for other-ck, and the page says its own
    prediction is the active model's."""
    _register_constant(ws)
    scene = _val_scene(ws)
    drilldown.add_to_review_list(ws, [Window(scene.id, (8, 16, 40, 64), 77)], true_class=_a_class(ws, scene),
                                 pred_class=CONSTANT, scheme="hz7", checkpoint_id="other-ck",
                                 checkpoint_name="other model", tta="none", analyst="Eve")
    at, _ = _labels_page(ws, monkeypatch, scene.id)
    assert any("overlaps 1 window(s) sent from Evaluate for **other model**: the prediction here is the active model "
               "**tiny test model**'s, not the one that made the confusion" in c.value for c in at.caption)


def test_labels_reads_an_entry_written_before_the_checkpoint_fields(ws, monkeypatch):  # noqa: F811
    """A review list written by an older SegHZ (no checkpoint name or scheme, no TTA): listed, opened and compared
    with its checkpoint, the TTA said to be not recorded."""
    scene = _val_scene(ws)
    a = _a_class(ws, scene)
    path = drilldown.review_list_path(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"scene_id": scene.id, "bbox": [8, 16, 40, 64], "count": 12, "true": a,
                                 "predicted": CONSTANT, "scheme": "hz7", "checkpoint_id": "tiny-test",
                                 "analyst": "Eve", "added_at": "2026-01-01T00:00:00+00:00", "status": "pending"}]))
    at, _ = _labels_page(ws, monkeypatch, scene.id)
    assert any(f"sent from Evaluate: **tiny test model** predicts **{CONSTANT}** where the label says **{a}** on 12 px "
               "(TTA not recorded)" in m for m in _markdowns(at)), _markdowns(at)
    at.button(key="lbl_sent_zoom_0").click().run()
    at.button(key="lbl_predict").click().run()
    assert_ok(at)
    (key,) = at.session_state["lbl_preds"]
    assert "tiny-test" in key and "none" in key
    assert any("The prediction here is **tiny test model**'s (TTA none), the checkpoint it was sent for" in c.value
               for c in at.caption)


# ------------------------------------------------------------------------------------------------ Evaluate → Labels


def test_evaluate_opens_the_labels_page_on_the_first_sent_window(ws, tmp_path, monkeypatch):  # noqa: F811
    """Send a window of the 512 px scene from the drill-down, then "Open the Labels page on the first sent window":
    the Labels page shows that scene at that window (not the whole scene), compared with the checkpoint and TTA it
    was sent for (the drill-down's prediction, kept in memory, shown at once)."""
    _add_val_scene(ws, tmp_path)
    big = next(s for s in ws.list_scenes() if s.name == "big town")
    cv = FakeCanvas()
    monkeypatch.setattr(ui.common, "canvas", cv)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()  # a multipage app: switches work
    at.sidebar.text_input(key="seghz_analyst").input("Eve").run()
    at.switch_page("pages/2_Evaluate.py").run()
    at.button(key="eval_run").click().run()
    assert_ok(at)
    at.selectbox(key="eval_dd_window").set_value(128).run()
    assert_ok(at)
    keys = [k for k in _window_keys(at) if k.startswith(f"{big.id}:")]
    if not keys:
        pytest.skip("the largest confusion has no window in the 512 px scene")
    at.multiselect(key="eval_dd_send_sel").set_value(keys[:2]).run()
    at.button(key="eval_dd_send").click().run()
    assert_ok(at)
    items = drilldown.load_review_list(ws)
    first = items[0]
    assert f"{first['scene_id']}:{','.join(str(v) for v in first['bbox'])}" == keys[0]
    assert (first["checkpoint_id"], first["checkpoint_name"], first["checkpoint_scheme"], first["tta"]) == \
           ("tiny-test", "tiny test model", "hz7", "none")
    at.button(key="eval_dd_open_labels").click().run()
    assert_ok(at)
    bbox = tuple(first["bbox"])
    size, row, col = zoom_window(bbox, big.height, big.width)
    assert size < big.width  # a window, not the whole scene
    assert at.selectbox(key="lbl_scene").value == big.id
    assert at.selectbox(key=f"lbl_size_{big.id}").value == size
    assert (at.slider(key=f"lbl_row_{big.id}").value, at.slider(key=f"lbl_col_{big.id}").value) == (row, col)
    assert f"Window rows {row}–{row + size - 1}, columns {col}–{col + size - 1} of 512×512 px" in texts(at)
    assert any(f"Magenta box: the window sent from Evaluate you opened (rows {bbox[0]}–{bbox[2] - 1}" in c.value
               for c in at.caption)
    assert any("The prediction here is **tiny test model**'s (TTA none), the checkpoint it was sent for" in c.value
               for c in at.caption)
    # the drill-down's prediction of the scene, kept in memory: shown without pressing Predict
    assert any(c.value.startswith("Agrees with the label on") for c in at.caption)
    # the cell's pixels in the window shown (it holds the sent window, maybe more): at least those sent
    (n_shown,) = [int(c.value.split(" px of this window")[0].rsplit(" on ", 1)[1].replace(",", "")) for c in at.caption
                  if f"px of this window (sent for {first['count']:,} px)" in c.value]
    assert n_shown >= first["count"]
    assert "lbl_open_window" not in at.session_state and "lbl_open_scene" not in at.session_state
