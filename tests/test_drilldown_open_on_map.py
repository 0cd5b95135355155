"""Evaluate drill-down → Map (AppTest, both pages): "Open on map" after a d4 evaluation shows what was drilled into.

The review (/work/notes/loop_review.md, item 4): after evaluating with d4 and clicking a confusion cell, the Map
predicted the window with TTA none while saying it used "the evaluated checkpoint", and showed every error. The jump
now carries the evaluation's TTA and the (A, B) cell; the Map predicts with that TTA and draws exactly the A → B
pixels, the same pixels the drill-down counted. Reuses the fixtures of tests/test_pages.py.
"""
from __future__ import annotations

import shutil

import numpy as np
import streamlit_folium
from streamlit.testing.v1 import AppTest

from tests.test_page_map import FakeFolium, _overlay_rgba
from tests.test_pages import REPO, app, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401


def test_open_on_map_after_a_d4_evaluation_carries_its_tta_and_cell(ws, monkeypatch):  # noqa: F811
    from seghz.geo.regions import workspace_tile_key
    from seghz.geo.tiles import tile_dir

    at = app("pages/2_Evaluate.py").run()
    at.radio(key="eval_tta").set_value("d4").run()
    at.button(key="eval_run").click().run()
    assert_ok(at)
    a, b = at.selectbox(key="eval_dd_true").value, at.selectbox(key="eval_dd_pred").value
    assert a != b
    (table,) = [d.value for d in at.dataframe if f"{a}→{b} (px)" in d.value.columns]
    count = int(table.iloc[0][f"{a}→{b} (px)"])  # the drill-down's count of window #1
    at.button(key="eval_dd_map_0").click().run()
    jump = at.session_state["map_jump"]
    assert jump["tta"] == "d4"
    assert jump["cell"] == {"true": a, "predicted": b, "scheme": "hz7"}
    assert jump["checkpoint_id"] == "tiny-test"

    fake = FakeFolium(None)
    monkeypatch.setattr(streamlit_folium, "st_folium", fake)
    scene_id = jump["scene_id"]
    try:
        mp = AppTest.from_file(str(REPO / "pages" / "1_Map.py"), default_timeout=60)
        mp.session_state["map_tta"] = "none"  # what the Map's radio reads after a page switch
        mp.session_state["map_jump"] = jump
        mp.run()
        assert_ok(mp)
        rec = mp.session_state["map_results"][scene_id]
        assert rec["result"].tta == "d4" and len(rec["result"].views) == 8  # not "none"
        assert mp.radio(key="map_tta").value == "d4"
        t = texts(mp)
        assert "the evaluated checkpoint, with TTA **d4** as in the evaluation" in t
        assert f"**{a} → {b} errors** layer" in t
        assert mp.toggle(key="map_show_cell").value
        layers = {getattr(ch, "layer_name", ""): ch for ch in fake.calls[-1]["feature_group_to_add"]._children.values()}
        shown = _overlay_rgba(layers["A → B errors"])[..., 3] > 0
        # the 128 px scene is the whole window: the Map's A → B pixels are the drill-down's
        r0, c0, r1, c1 = jump["bbox"]
        assert rec["result"].window == (0, 0, 128, 128) and (r0, c0, r1, c1) == (0, 0, 128, 128)
        assert int(shown.sum()) == count > 0
        assert f"{a} → {b} errors: {count:,} px labelled {a} and predicted {b}" in t
        assert np.array_equal(shown, (rec["result"].label == get_index(a)) & (rec["result"].pred == get_index(b)))
    finally:
        shutil.rmtree(tile_dir(workspace_tile_key(ws.root), scene_id).parent, ignore_errors=True)


def get_index(name: str) -> int:
    from seghz.classes import get_scheme

    return list(get_scheme("hz7").names).index(name)
