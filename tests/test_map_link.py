"""The Map page's link after "Open on map" and the naming of regions in errors.

* :func:`seghz.drilldown.jump_to_query` / :func:`~seghz.drilldown.jump_from_query` (hypothesis: round trip of the
  checkpoint, TTA and A → B cell, URL-safe values, any damaged value refused with a JumpQueryError naming its
  parameter and nothing else);
* :func:`seghz.geo.tiles.geojson_to_pixel_window`: a region from a link is "the region in the link", never "the drawn
  region";
* the page (AppTest, fixtures of tests/test_page_map.py): a jump writes ``ckpt``/``tta``/``err`` into the URL, a
  fresh session with them puts the layers, TTA and checkpoint back and "Predict as in the link" predicts as the jump
  did; bad values give a warning naming the parameter and the plain region; drawing, clearing or predicting with
  the active model drops them from the URL.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz import drilldown as dd
from seghz.classes import get_scheme, scheme_names
from seghz.errors import RegionError
from seghz.infer.engine import TTA_MODES, VIEW_NAMES
from seghz.infer.region import resolve_tta
from tests import test_page_map
from tests.test_page_map import SCENE_ID, app, assert_ok, feature, scene_info, texts

ws, fake_map, tiny_map_checkpoint = test_page_map.ws, test_page_map.fake_map, test_page_map.tiny_map_checkpoint

URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")  # unreserved URL characters: never percent-encoded
CKPT_SCHEMES = {"tiny-map": "hz7", "gid15_hz20_unet": "hz20", "ck.1": "hz14"}

# ------------------------------------------------------------------------------------------------ strategies

TTAS = st.one_of(st.sampled_from(list(TTA_MODES)), st.sampled_from(VIEW_NAMES),
                 st.lists(st.sampled_from(VIEW_NAMES), min_size=1, max_size=8))


@st.composite
def jumps(draw):
    """Jump settings as :func:`seghz.drilldown.map_jump` makes them (checkpoint, TTA, cell of a scheme view the
    checkpoint's scheme collapses into, error layer)."""
    ck = draw(st.sampled_from([None, *CKPT_SCHEMES]))
    jump = {"checkpoint_id": ck, "tta": draw(st.one_of(st.none(), TTAS)), "layer": draw(st.sampled_from([None, "error"]))}
    if draw(st.booleans()):
        view = draw(st.sampled_from(dd.scheme_views(CKPT_SCHEMES[ck]) if ck else scheme_names()))
        names = get_scheme(view).names
        jump["cell"] = {"true": draw(st.sampled_from(names)), "predicted": draw(st.sampled_from(names)), "scheme": view}
        jump["layer"] = "error"
    return jump


def decode(params):
    return dd.jump_from_query(params, CKPT_SCHEMES.get)


# ------------------------------------------------------------------------------------------------ encode / decode


@settings(max_examples=300, deadline=None)
@given(jump=jumps())
def test_jump_settings_round_trip_through_short_url_safe_params(jump):
    params = dd.jump_to_query(jump)
    assert set(params) <= set(dd.JUMP_QUERY_KEYS)
    assert all(URL_SAFE.fullmatch(v) and len(v) < 80 for v in params.values()), params
    back = decode(params)
    if not params:
        assert back is None
        return
    assert back["checkpoint_id"] == jump["checkpoint_id"]
    assert back.get("cell") == jump.get("cell")
    assert back["layer"] == jump["layer"]
    if jump["tta"] is None:
        assert back["tta"] is None
    else:
        assert resolve_tta(back["tta"]) == resolve_tta(jump["tta"])  # the same views, the same mode name
    assert dd.jump_to_query(back) == params  # and it writes back the same link


def test_jump_params_are_short_and_readable():
    jump = dd.map_jump(dd.Window("town", (0, 0, 64, 64), 3), checkpoint_id="tiny-map", tta="d4",
                       cell=(get_scheme("hz7").names[3], get_scheme("hz7").names[5], "hz7"))
    assert dd.jump_to_query(jump) == {"ckpt": "tiny-map", "tta": "d4", "err": "3-5.hz7"}
    noise = dd.map_jump(dd.Window("town", (0, 0, 64, 64), 3), checkpoint_id="tiny-map")  # no cell: errors only
    assert dd.jump_to_query(noise) == {"ckpt": "tiny-map", "tta": "none", "err": "all"}
    assert dd.jump_to_query({"tta": ["identity", "flip_lr"]}) == {"tta": "identity.lr"}  # canonical view names
    assert decode({"tta": "identity.lr"}) == {"checkpoint_id": None, "tta": ["identity", "lr"], "cell": None,
                                              "layer": None}
    assert decode({}) is None and decode({"scene": "town", "region": "1.x"}) is None
    with pytest.raises(ValueError, match="not a class of scheme hz7"):
        dd.jump_to_query({"cell": {"true": "Nope", "predicted": "Water", "scheme": "hz7"}})
    with pytest.raises(ValueError, match="unknown TTA"):
        dd.jump_to_query({"tta": "d8"})


@pytest.mark.parametrize("params, param, words", [
    ({"ckpt": "gone"}, "ckpt", "names checkpoint `gone`, which is not registered"),
    ({"ckpt": "a`b" * 20}, "ckpt", "names checkpoint `a'ba'b"),
    ({"ckpt": ""}, "ckpt", "is empty"),
    ({"tta": "d8"}, "tta", "`tta=` is `d8`: not a TTA mode"),
    ({"tta": "d4.lr"}, "tta", "not a TTA mode"),
    ({"tta": "identity..lr"}, "tta", "not a TTA mode"),
    ({"err": "3-5"}, "err", "written `<A>-<B>.<scheme>`"),
    ({"err": "3-5.hz99"}, "err", "names class scheme `hz99`"),
    ({"err": "3-7.hz7"}, "err", "class 7 of scheme hz7, which has 7 classes"),
    ({"err": "-1-2.hz7"}, "err", "not `all` or an A → B cell"),
    ({"err": "1-2.hz20", "ckpt": "tiny-map"}, "err", "scheme hz20, which checkpoint `tiny-map` (scheme hz7) cannot"),
    ({"err": "x" * 500}, "err", "500 characters long"),
])
def test_damaged_jump_params_are_refused_naming_the_param(params, param, words):
    with pytest.raises(dd.JumpQueryError) as e:
        decode(params)
    assert e.value.param == param and words in str(e.value), str(e.value)
    assert "``" not in str(e.value) and str(e.value).count("`") % 2 == 0  # code spans stay closed


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(dd.JUMP_QUERY_KEYS), text=st.text(max_size=60), good=jumps())
def test_any_text_in_a_jump_param_is_used_or_refused_naming_it(key, text, good):
    params = {**dd.jump_to_query(good), key: text}
    try:
        back = decode(params)
    except dd.JumpQueryError as e:
        assert e.param in dd.JUMP_QUERY_KEYS and str(e).startswith(f"the link's `{e.param}=`"), str(e)
    else:
        assert back is not None and dd.jump_to_query(back)  # usable: it writes a link again


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_an_edited_err_param_is_a_valid_cell_or_refused(data):
    """One character of ``err`` changed, cut or added: a cell of a known scheme and classes, or a JumpQueryError."""
    err = dd.jump_to_query({"cell": {"true": "Water", "predicted": "Road_land", "scheme": "hz7"}})["err"]
    i = data.draw(st.integers(0, len(err)))
    ch = data.draw(st.sampled_from("0123456789-.hzx "))
    edited = data.draw(st.sampled_from([err[:i] + ch + err[i + 1:], err[:i], err[:i] + ch + err[i:]]))
    try:
        back = decode({"err": edited})
    except dd.JumpQueryError as e:
        assert e.param == "err"
    else:
        cell = back["cell"]
        assert cell is None and edited.strip() == "all" or cell["scheme"] in scheme_names()


# ------------------------------------------------------------------------------------------------ region names


def test_a_region_from_a_link_is_not_called_drawn():
    from seghz.data.io import RasterInfo
    from seghz.geo.regions import (
        DRAWN_REGION,
        JUMP_REGION,
        LINK_REGION,
        region_source,
        window_to_geojson,
    )
    from seghz.geo.tiles import geojson_to_pixel_window as region_window
    from seghz.geo.tiles import pixel_window_to_geojson
    from tests.test_region_query import rectangle

    info = RasterInfo(path="x.tif", width=256, height=256, count=3, dtype="uint8", crs="EPSG:3857",
                      transform=(0.6, 0.0, 13370000.0, 0.0, -0.6, 3530000.0))
    off = rectangle(10.0, 50.0, 0.01, 0.01)  # far from the scene
    with pytest.raises(RegionError) as e:
        region_window(off, info, name="Town")
    assert str(e.value).startswith("the drawn region (rows") and "draw it on the image" in str(e.value)
    with pytest.raises(RegionError) as e:
        region_window(off, info, name="Town", what=LINK_REGION)
    msg = str(e.value)
    assert msg.startswith("the region in the link (rows") and "lies outside scene 'Town'" in msg, msg
    assert "drawn" not in msg and "draw it" not in msg
    with pytest.raises(RegionError, match="^the region opened with \"Open on map\" is 30x30 px; regions are capped "
                                          "at 20x20 px$"):
        region_window(pixel_window_to_geojson((0, 0, 30, 30), info), info, what=JUMP_REGION, max_side=20)
    assert region_window(pixel_window_to_geojson((5, 6, 30, 40), info), info, what=LINK_REGION) == (5, 6, 30, 40)
    assert region_source({"type": "Feature", "properties": {"source": "link"}, "geometry": off}) == LINK_REGION
    assert region_source(window_to_geojson((0, 0, 8, 8), info)) == JUMP_REGION
    assert region_source(feature(off)) == region_source(off) == region_source(None) == DRAWN_REGION


# ------------------------------------------------------------------------------------------------ the Map page


def _cell():
    names = get_scheme("hz7").names
    return names[1], names[3]


def _link(ws, **extra) -> dict:
    from seghz.geo.regions import region_to_query
    from seghz.geo.tiles import pixel_window_to_geojson

    region = region_to_query(pixel_window_to_geojson((40, 50, 60, 80), scene_info(ws), inset=0.25))
    return {"scene": SCENE_ID, "region": region, **extra}


def test_a_jump_link_reopens_its_layers_tta_and_checkpoint(ws, fake_map):
    """"Open on map" (checkpoint, d4, cell 1 → 3 of hz7): the URL gets ``ckpt``, ``tta`` and ``err``; a fresh
    session with that URL (F5, a shared link) puts the error and A → B layers, the TTA and the checkpoint back,
    says the prediction is not in the link, and "Predict as in the link" predicts as the jump did."""
    a, b = _cell()
    fake_map(None)
    at = app()
    at.session_state["map_jump"] = dd.map_jump(dd.Window(SCENE_ID, (40, 50, 100, 130), 1), checkpoint_id="tiny-map",
                                               checkpoint_name="tiny map model", tta="d4", cell=(a, b, "hz7"))
    at.run()
    assert_ok(at)
    link = dict(at.query_params)
    assert {k: link.get(k) for k in dd.JUMP_QUERY_KEYS} == {"ckpt": "tiny-map", "tta": "d4", "err": "1-3.hz7"}
    assert link["scene"] == SCENE_ID and link["region"]

    again = app()
    again.query_params.update(link)
    again.run()
    assert_ok(again)
    assert not again.warning, [w.value for w in again.warning]
    assert again.radio(key="map_tta").value == "d4"
    assert again.toggle(key="map_show_error").value
    assert SCENE_ID not in again.session_state["map_results"]  # not predicted on opening
    t = texts(again)
    assert (f"This link was made after “Open on map”; its settings are back: checkpoint **tiny map model** "
            f"(`tiny-map`), TTA **d4**, the **{a} → {b} errors** layer (the pixels labelled {a} and predicted {b}, "
            "hz7 classes) and the error layer (the other errors dimmed).") in t
    assert "The link does not hold the prediction itself: press **Predict as in the link**" in t
    assert dict(again.query_params) == link  # the URL keeps the jump's settings until the prediction is made
    again.button(key="map_link_predict").click().run()
    assert_ok(again)
    rec = again.session_state["map_results"][SCENE_ID]
    assert rec["checkpoint_id"] == "tiny-map" and rec["chosen"]
    assert rec["result"].tta == "d4" and len(rec["result"].views) == 8
    assert rec["cell"] == {"true": a, "predicted": b, "scheme": "hz7"}
    assert again.toggle(key="map_show_cell").value and again.toggle(key="map_show_error").value
    assert not any(bt.key == "map_link_predict" for bt in again.button)  # done: the prompt is gone
    assert dict(again.query_params) == link  # the link still reopens what is shown

    # predicted with the active model (the button): no longer the jump's prediction, the link is the plain region
    again.button(key="map_predict").click().run()
    assert_ok(again)
    assert dict(again.query_params) == {"scene": SCENE_ID, "region": link["region"]}


def test_a_noise_queue_jump_link_turns_the_error_layer_on(ws, fake_map):
    fake_map(None)
    at = app()
    at.query_params.update(_link(ws, err="all", tta="identity.lr"))
    at.run()
    assert_ok(at)
    assert not at.warning, [w.value for w in at.warning]
    assert at.toggle(key="map_show_error").value
    assert at.radio(key="map_tta").value == "custom" and at.multiselect(key="map_tta_views").value == ["identity", "lr"]
    assert ("its settings are back: the active model (the link names no checkpoint), TTA **custom-identity+lr** and "
            "the error layer." in texts(at))
    at.button(key="map_link_predict").click().run()
    assert_ok(at)
    rec = at.session_state["map_results"][SCENE_ID]
    assert rec["result"].views == ("identity", "lr") and rec["cell"] is None and not rec["chosen"]
    assert at.query_params["err"] == "all" and at.query_params["tta"] == "identity.lr"
    # "Clear region": the link loses the region and the jump's settings
    at.button(key="map_clear_region").click().run()
    assert_ok(at)
    assert dict(at.query_params) == {"scene": SCENE_ID}


@pytest.mark.parametrize("extra, words", [
    ({"ckpt": "no-such-model", "err": "1-3.hz7"},
     "The link's `ckpt=` names checkpoint `no-such-model`, which is not registered in this workspace"),
    ({"ckpt": "tiny-map", "err": "1-99.hz7"}, "The link's `err=` names class 99 of scheme hz7"),
    ({"tta": "d5", "err": "all"}, "The link's `tta=` is `d5`: not a TTA mode"),
    ({"err": "1-3.hz20", "ckpt": "tiny-map"}, "The link's `err=` is a cell of scheme hz20"),
])
def test_bad_jump_params_warn_and_open_the_plain_region(ws, fake_map, extra, words):
    fake_map(None)
    at = app()
    link = _link(ws, **extra)
    at.query_params.update(link)
    at.run()
    assert_ok(at)
    warnings = "\n".join(w.value for w in at.warning)
    assert words in warnings and "the region is opened as a plain region" in warnings, warnings
    assert "Drawn region: rows 40–99, columns 50–129" in texts(at)  # the region itself is restored
    assert at.radio(key="map_tta").value == "none" and not at.toggle(key="map_show_error").value
    assert not any(bt.key == "map_link_predict" for bt in at.button)
    assert dict(at.query_params) == {"scene": SCENE_ID, "region": link["region"]}  # the URL: the plain region


def test_jump_params_without_a_usable_region_are_dropped_with_it(ws, fake_map):
    fake_map(None)
    at = app()
    at.query_params.update({"scene": SCENE_ID, "region": "1.AAAA", "ckpt": "tiny-map", "err": "all"})
    at.run()
    assert_ok(at)
    warnings = "\n".join(w.value for w in at.warning)
    assert "The region in the link was dropped" in warnings, warnings
    assert "The link's prediction settings (`ckpt=`, `err=`) were dropped: they go with the link's region" in warnings
    assert not at.toggle(key="map_show_error").value and dict(at.query_params) == {"scene": SCENE_ID}


def test_a_link_region_off_the_scene_is_not_called_drawn(ws, fake_map):
    from seghz.geo.regions import region_to_query
    from tests.test_region_query import rectangle

    fake_map(None)
    at = app()
    at.query_params.update({"scene": SCENE_ID, "region": region_to_query(rectangle(10.0, 50.0, 0.01, 0.01))})
    at.run()
    assert_ok(at)
    warnings = "\n".join(w.value for w in at.warning)
    assert "The region in the link was dropped: the region in the link (rows" in warnings, warnings
    assert "drawn region" not in warnings and "draw it on the image" not in warnings


def test_drawing_over_a_jump_drops_its_settings_from_the_url(ws, fake_map):
    from seghz.geo.tiles import pixel_window_to_geojson

    fake = fake_map(None)
    at = app()
    at.session_state["map_jump"] = dd.map_jump(dd.Window(SCENE_ID, (40, 50, 100, 130), 1), checkpoint_id="tiny-map")
    at.run()
    assert_ok(at)
    assert at.query_params["err"] == "all" and at.query_params["ckpt"] == "tiny-map"
    fake.drawing = feature(pixel_window_to_geojson((10, 10, 30, 30), scene_info(ws)))
    at.run()
    assert_ok(at)
    assert set(at.query_params) == {"scene", "region"}
