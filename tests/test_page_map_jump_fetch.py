"""Map page (AppTest): "Open on map" jumps that cannot be done as asked, the URL after the analyst changes the TTA,
and very large fetches.

* a jump (session ``map_jump``, or a link with ``&ckpt=``) naming a checkpoint that is no longer registered: the
  "Opened at …" message names the checkpoint actually used and says the named one is gone, the warning stays over
  the rerun after the prediction (until the analyst draws, clears or picks another scene) and the URL has no
  ``ckpt=`` of the missing one;
* a jump to a scene that is not in the workspace: a warning naming the scene id, the page as usual;
* after "Open on map", setting the TTA (or merge / blending) away from the jump's drops its parameters from the URL;
  setting it back brings them back;
* "Fetch imagery": above ``LARGE_FETCH_TILES`` tiles a warning with the tiles, MB and Mpx and a confirmation
  checkbox before the job can be queued; above the job's cap ``FETCH_JOB_MAX_TILES`` a refusal naming the cap.

Reuses the fixtures of tests/test_page_map.py.
"""
from __future__ import annotations

import shutil

import pytest

from seghz import drilldown as dd
from seghz.classes import get_scheme
from tests import test_page_map
from tests.test_page_map import SCENE_ID, app, assert_ok, feature, scene_info, texts

ws, fake_map, tiny_map_checkpoint = test_page_map.ws, test_page_map.fake_map, test_page_map.tiny_map_checkpoint


def _warnings(at) -> str:
    return "\n".join(str(w.value) for w in at.warning)


def _infos(at) -> str:
    return "\n".join(str(i.value) for i in at.info)


def _jump(checkpoint_id: str, name: str, tta: str = "d4", cell: bool = True) -> dict:
    names = get_scheme("hz7").names
    return dd.map_jump(dd.Window(SCENE_ID, (40, 50, 100, 130), 1), checkpoint_id=checkpoint_id, checkpoint_name=name,
                       why="drill-down", tta=tta, cell=(names[1], names[3], "hz7") if cell else None)


def _unregister(workspace, checkpoint_id: str) -> None:
    """The checkpoint deleted from the registry (the workspace has no call for it)."""
    from seghz.errors import SegHZError

    with workspace.connect() as conn:
        conn.execute("DELETE FROM checkpoints WHERE id = ?", (checkpoint_id,))
    with pytest.raises(SegHZError, match="not registered"):
        workspace.get_checkpoint(checkpoint_id)


# ------------------------------------------------------------------------------------------------ item 1


def test_a_jump_naming_a_gone_checkpoint_says_the_active_one_predicts_and_keeps_the_warning(ws, fake_map):
    from seghz.geo.tiles import pixel_window_to_geojson

    fake = fake_map(None)
    at = app()
    at.session_state["map_jump"] = _jump("gone-model", "old model")
    at.run()
    assert_ok(at)
    rec = at.session_state["map_results"][SCENE_ID]
    assert rec["checkpoint_id"] == "tiny-map" and not rec["chosen"]  # the active checkpoint predicted it
    assert rec["result"].tta == "d4"
    info = _infos(at)
    assert ("the region is predicted with the active model **tiny map model** (`tiny-map`), not with **old model** "
            "(`gone-model`) (the evaluated checkpoint), which is no longer registered") in info, info
    assert "predicted with **old model**" not in info
    # the warning survived the rerun after the prediction
    warn = _warnings(at)
    assert ("Checkpoint **old model** (`gone-model`) (the evaluated checkpoint) is no longer registered: the region "
            "opened by “Open on map” is predicted with the active model **tiny map model** (`tiny-map`) instead."
            in warn), warn
    # the URL: the jump's TTA and layer, no checkpoint (without ckpt=: the active model, which is what was used)
    assert "ckpt" not in at.query_params and at.query_params["tta"] == "d4" and at.query_params["err"] == "1-3.hz7"
    at.run()  # any rerun: still there
    assert_ok(at)
    assert "gone-model" in _warnings(at)
    # the analyst moves on (draws): gone
    fake.drawing = feature(pixel_window_to_geojson((10, 10, 30, 30), scene_info(ws)))
    at.run()
    assert_ok(at)
    assert "gone-model" not in texts(at)


def test_a_jump_naming_a_gone_checkpoint_without_an_active_one_says_nothing_is_predicted(ws, fake_map):
    ws.set_active_checkpoint(None)
    fake_map(None)
    at = app()
    at.session_state["map_jump"] = _jump("gone-model", "old model")
    at.run()
    assert_ok(at)
    assert SCENE_ID not in at.session_state["map_results"]
    assert ("the region is not predicted: **old model** (`gone-model`) (the evaluated checkpoint) is no longer "
            "registered and no checkpoint is active") in _infos(at)
    assert "is no longer registered and no checkpoint is active: the region opened by “Open on map” is not " \
           "predicted." in _warnings(at)
    assert "ckpt" not in at.query_params
    at.run()
    assert "gone-model" in _warnings(at)


def test_a_link_whose_checkpoint_is_deleted_before_predict_as_in_the_link_keeps_the_warning(ws, fake_map,
                                                                                               tiny_map_checkpoint):
    """A link made after "Open on map" with ``ckpt=older``; the checkpoint is deleted before "Predict as in the
    link": the active one predicts, the warning stays after the rerun, and the URL loses ``ckpt``."""
    dst = ws.root / "checkpoints" / "older.safetensors"
    shutil.copy2(tiny_map_checkpoint[0], dst)
    ws.register_checkpoint(dst, {**tiny_map_checkpoint[1], "scheme": "hz7"}, checkpoint_id="older", name="older model")
    fake_map(None)
    at = app()
    at.session_state["map_jump"] = _jump("older", "older model", tta="none", cell=False)
    at.run()
    assert_ok(at)
    link = dict(at.query_params)
    assert link["ckpt"] == "older"

    again = app()
    again.query_params.update(link)
    again.run()
    assert_ok(again)
    assert "checkpoint **older model** (`older`)" in _infos(again)
    _unregister(ws, "older")
    again.button(key="map_link_predict").click().run()
    assert_ok(again)
    rec = again.session_state["map_results"][SCENE_ID]
    assert rec["checkpoint_id"] == "tiny-map"
    warn = _warnings(again)
    assert ("Checkpoint `older` is no longer registered: the region is predicted with the active model **tiny map "
            "model** (`tiny-map`) instead.") in warn, warn
    assert "ckpt" not in again.query_params and again.query_params["err"] == "all"
    # "Clear region": moved on, the warning goes
    again.button(key="map_clear_region").click().run()
    assert_ok(again)
    assert "older" not in _warnings(again)


# ------------------------------------------------------------------------------------------------ item 2


def test_a_jump_to_a_scene_not_in_the_workspace_warns_naming_it(ws, fake_map):
    from tests.test_region_query import add_plain_scene

    add_plain_scene(ws)
    fake_map(None)
    at = app()
    at.session_state["map_jump"] = {"scene_id": "deleted-scene", "bbox": (40, 50, 70, 90), "layer": "error",
                                    "checkpoint_id": "tiny-map", "tta": "d4"}
    at.run()
    assert_ok(at)
    warn = _warnings(at)
    assert "“Open on map” asked for scene `deleted-scene`, which is not in this workspace" in warn, warn
    assert "showing 'Test town (synthetic)' instead" in warn
    # the page as usual: the first scene, nothing opened, predicted or switched on
    assert at.selectbox(key="map_scene").value == SCENE_ID
    assert not at.session_state["map_results"] and not at.session_state["map_regions"]
    assert at.radio(key="map_tta").value == "none" and not at.toggle(key="map_show_error").value
    at.run()
    assert "deleted-scene" in _warnings(at)  # kept over reruns …
    at.selectbox(key="map_scene").set_value("plain").run()
    assert_ok(at)
    assert "deleted-scene" not in _warnings(at)  # … until the analyst picks another scene
    at.selectbox(key="map_scene").set_value(SCENE_ID).run()
    assert "deleted-scene" not in _warnings(at)


# ------------------------------------------------------------------------------------------------ item 3


def test_changing_the_tta_after_a_jump_drops_its_settings_from_the_url(ws, fake_map):
    fake_map(None)
    at = app()
    at.session_state["map_jump"] = _jump("tiny-map", "tiny map model")
    at.run()
    assert_ok(at)
    jump_link = dict(at.query_params)
    assert {k: jump_link.get(k) for k in dd.JUMP_QUERY_KEYS} == {"ckpt": "tiny-map", "tta": "d4", "err": "1-3.hz7"}
    plain = {"scene": SCENE_ID, "region": jump_link["region"]}

    at.radio(key="map_tta").set_value("none").run()
    assert_ok(at)
    assert dict(at.query_params) == plain  # the page no longer shows the jump's settings
    at.radio(key="map_tta").set_value("d4").run()
    assert dict(at.query_params) == jump_link  # back on them: the link says so again
    at.selectbox(key="map_merge").set_value("logits").run()
    assert dict(at.query_params) == plain
    at.selectbox(key="map_merge").set_value("softmax").run()
    at.selectbox(key="map_blend").set_value("gaussian").run()
    assert dict(at.query_params) == plain
    at.selectbox(key="map_blend").set_value("uniform").run()
    assert dict(at.query_params) == jump_link
    # custom with exactly the 8 d4 views is the same TTA
    from seghz.infer.region import resolve_tta

    at.radio(key="map_tta").set_value("custom").run()
    at.multiselect(key="map_tta_views").set_value(list(resolve_tta("d4")[1])).run()
    assert dict(at.query_params) == jump_link
    at.multiselect(key="map_tta_views").set_value(["identity"]).run()
    assert dict(at.query_params) == plain
    # predicting with the page's choices still drops them for good
    at.button(key="map_predict").click().run()
    assert_ok(at)
    at.radio(key="map_tta").set_value("d4").run()
    assert dict(at.query_params) == plain


def test_jump_matches_compares_views_merge_and_blend():
    from ui.map_link import jump_matches

    assert jump_matches({"tta": None}, "none", "logits", "cosine")  # a jump without a TTA: the page's choices
    assert jump_matches({"tta": "d4"}, "d4", "softmax", "uniform")
    assert jump_matches({"tta": ["identity", "lr"]}, ["identity", "flip_lr"], "softmax", "uniform")  # same views
    assert jump_matches({"tta": "lr"}, ["lr"], "softmax", "uniform")
    assert not jump_matches({"tta": "d4"}, "none", "softmax", "uniform")
    assert not jump_matches({"tta": "d4"}, None, "softmax", "uniform")  # custom without views
    assert not jump_matches({"tta": "d4"}, "d4", "logits", "uniform")
    assert not jump_matches({"tta": "d4"}, "d4", "softmax", "cosine")


# ------------------------------------------------------------------------------------------------ item 4

BOX = "120.0, 30.0, 120.3, 30.3"


def test_a_large_fetch_needs_a_confirmation_and_one_over_the_cap_is_refused(ws, fake_map, monkeypatch):
    from seghz.geo.fetch import FETCH_JOB_MAX_TILES, LARGE_FETCH_TILES, parse_bbox, plan_xyz
    from seghz.jobs import runner

    box = parse_bbox(BOX)
    small, large, huge = (plan_xyz(box, z) for z in (15, 16, 17))
    assert small.tiles <= LARGE_FETCH_TILES < large.tiles <= FETCH_JOB_MAX_TILES < huge.tiles  # 924, 3520, 14080
    submitted = []
    monkeypatch.setattr(runner, "submit_job", lambda w, kind, config: submitted.append((kind, config)) or "fetch-1")
    fake_map(None)
    at = app().run()
    at.text_input(key=f"map_fetch_bbox_{SCENE_ID}").input(BOX).run()
    at.number_input(key="map_fetch_zoom").set_value(15).run()
    assert_ok(at)
    assert not any(c.key == "map_fetch_confirm" for c in at.checkbox) and not at.button(key="map_fetch_go").disabled
    assert "large fetch" not in _warnings(at)

    at.number_input(key="map_fetch_zoom").set_value(16).run()
    assert_ok(at)
    warn = _warnings(at)
    assert (f"A large fetch: {large.tiles:,} tiles at zoom 16, about {large.bytes_estimate / 1e6:,.0f} MB to download "
            f"and a mosaic of about {large.pixels / 1e6:,.0f} Mpx") in warn, warn
    assert at.button(key="map_fetch_go").disabled  # not without the confirmation
    at.checkbox(key="map_fetch_confirm").check().run()
    assert not at.button(key="map_fetch_go").disabled
    at.button(key="map_fetch_go").click().run()
    assert_ok(at)
    (kind, cfg), = submitted
    assert kind == "fetch" and cfg["zoom"] == 16 and cfg["bbox"] == pytest.approx(list(box))
    # another box: confirm that one again
    at.text_input(key=f"map_fetch_bbox_{SCENE_ID}").input("120.0, 30.0, 120.3, 30.29").run()
    assert not at.checkbox(key="map_fetch_confirm").value and at.button(key="map_fetch_go").disabled

    at.text_input(key=f"map_fetch_bbox_{SCENE_ID}").input(BOX).run()
    at.number_input(key="map_fetch_zoom").set_value(17).run()
    assert_ok(at)
    err = "\n".join(str(e.value) for e in at.error)
    assert (f"This box is too large to fetch: {huge.tiles:,} tiles at zoom 17" in err
            and f"over the cap of {FETCH_JOB_MAX_TILES:,} tiles per fetch" in err
            and "lower zoom level" in err and "smaller box" in err), err
    assert not any(c.key == "map_fetch_confirm" for c in at.checkbox) and at.button(key="map_fetch_go").disabled
    assert len(submitted) == 1


def test_plans_count_pixels_from_their_own_tile_math():
    from seghz.geo.fetch import TILE_SIZE, parse_bbox, plan_baidu, plan_xyz

    box = parse_bbox(BOX)
    p = plan_xyz(box, 16)
    assert p.pixels == p.width * p.height and 0 < p.pixels <= p.tiles * TILE_SIZE ** 2
    b = plan_baidu(box, 16)
    assert b.pixels == len(b.x_range) * len(b.y_range) * TILE_SIZE ** 2
