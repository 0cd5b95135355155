"""Map page (AppTest) fixes from the daily-loop review (docs: /work/notes/loop_review.md, items 4, 5, 6, 13, 14):

* "Open on map" from an evaluation predicts with the evaluation's TTA and shows an "A → B errors" layer of exactly
  the drilled-into cell (in the scheme view it was counted in), the other errors dimmed;
* a prediction by a checkpoint that is no longer the active one is flagged above the map, with its checkpoint and
  TTA, and "Predict again with the active model" re-predicts it;
* the Leaflet.draw rectangle / polygon has no fill (its default 20 % orange wash changed every layer's colours);
* small regions read in m², and the exports name the checkpoint and TTA.

Reuses the fixtures of tests/test_page_map.py.
"""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from tests.test_page_map import (  # noqa: F401
    HZ7,
    SCENE_ID,
    _overlay_rgba,
    app,
    assert_ok,
    capture_downloads,
    fake_map,
    feature,
    scene_info,
    texts,
    tiny_map_checkpoint,
    ws,
)


def _largest_error_cell(pred: np.ndarray, label: np.ndarray, n: int) -> tuple[int, int]:
    from seghz.drilldown import largest_confusion
    from seghz.metrics import confusion_matrix

    ok = (pred != 255) & (label != 255)
    return largest_confusion(confusion_matrix(pred[ok], label[ok], n))


def _jump(cell=None, tta="d4", bbox=(40, 50, 100, 130)) -> dict:
    from seghz import drilldown

    return drilldown.map_jump(drilldown.Window(SCENE_ID, bbox, 1), checkpoint_id="tiny-map",
                              checkpoint_name="tiny map model", why="drill-down", tta=tta, cell=cell)


# ------------------------------------------------------------------------------------------------ item 1 (review 4)


def test_open_on_map_predicts_with_the_evaluations_tta_and_highlights_the_cell(ws, fake_map):  # noqa: F811
    """Evaluate with d4, a Green_land→OpenArea-like cell, "Open on map": the Map predicted with TTA none (its radio
    resets on a page switch) and showed all errors. Now: TTA d4 (and the radio says so), and a layer of exactly the
    pixels labelled A and predicted B, selected by default, with a legend; the other errors are dimmed."""
    from folium.raster_layers import ImageOverlay

    from seghz.geo.regions import ERROR_COLOR, OTHER_ERROR_COLOR

    fake = fake_map(None)
    at = app()
    at.session_state["map_jump"] = _jump(cell=None)
    at.run()
    assert_ok(at)
    res = at.session_state["map_results"][SCENE_ID]["result"]
    assert res.tta == "d4" and len(res.views) == 8  # the evaluation's TTA, not the Map's default "none"
    assert at.radio(key="map_tta").value == "d4"
    assert "with TTA **d4** as in the evaluation" in texts(at)
    ia, ib = _largest_error_cell(res.pred, res.label, HZ7.num_classes)
    a, b = HZ7.names[ia], HZ7.names[ib]

    # the drill-down cell (a, b): its own layer, on by default
    at.session_state["map_jump"] = _jump(cell=(a, b, "hz7"))
    at.run()
    assert_ok(at)
    rec = at.session_state["map_results"][SCENE_ID]
    res = rec["result"]
    assert res.tta == "d4" and rec["cell"] == {"true": a, "predicted": b, "scheme": "hz7"}
    assert at.toggle(key="map_show_cell").value and at.toggle(key="map_show_error").value
    t = texts(at)
    assert f"the **{a} → {b} errors** layer marks exactly the pixels labelled {a} and predicted {b}" in t
    layers = fake.layers()
    assert isinstance(layers.get("A → B errors"), ImageOverlay), layers
    want = (res.label == ia) & (res.pred == ib)
    assert want.any()
    rgba = _overlay_rgba(layers["A → B errors"])
    assert rgba.shape[:2] == want.shape  # north-up Web-Mercator demo scene: the overlay is the window itself
    assert np.array_equal(rgba[..., 3] > 0, want)
    assert (rgba[want][:, :3] == ERROR_COLOR).all()
    # the other errors: dimmed (grey, lower alpha), the A → B pixels left out of that layer
    errs = (res.pred != res.label) & (res.label != 255)
    other = _overlay_rgba(layers["Errors"])
    assert np.array_equal(other[..., 3] > 0, errs & ~want)
    assert (other[errs & ~want][:, :3] == OTHER_ERROR_COLOR).all()
    assert other[..., 3].max() < rgba[..., 3].max()
    # the legend names the cell, and counts it
    assert f"{a} → {b} (labelled {a}, predicted {b})" in t and "other errors (prediction ≠ label)" in t
    assert f"{a} → {b} errors: {int(want.sum()):,} px labelled {a} and predicted {b} (hz7 classes" in t
    # the A → B layer off: the general error layer is back to all errors in magenta
    at.toggle(key="map_show_cell").set_value(False).run()
    assert_ok(at)
    assert "A → B errors" not in fake.layers()
    full = _overlay_rgba(fake.layers()["Errors"])
    assert np.array_equal(full[..., 3] > 0, errs) and (full[errs][:, :3] == ERROR_COLOR).all()
    # the region predicted again with the button (not from a drill-down) has no cell: no A → B toggle
    at.button(key="map_predict").click().run()
    assert_ok(at)
    assert at.session_state["map_results"][SCENE_ID]["cell"] is None
    assert not any(tg.key == "map_show_cell" for tg in at.toggle) and "A → B errors" not in fake.layers()


def test_open_on_map_cell_of_a_collapsed_view_is_counted_in_that_view(tmp_path, monkeypatch, fake_map):  # noqa: F811
    """Evaluate's hz14 → hz7 view: the Map's A → B layer maps the hz14 prediction and label into hz7 first,
    exactly like the drill-down counts the cell."""
    import torch

    from seghz.classes import get_scheme, index_crosswalk
    from seghz.data.io import write_index_mask
    from seghz.demo import generate_scene, write_demo_geotiff
    from seghz.models.checkpoint import save_checkpoint
    from seghz.models.registry import build_model
    from seghz.store import Workspace
    from tests.test_page_map import REPO, remove_tiles

    hz14 = get_scheme("hz14")
    lut = index_crosswalk("hz14", "hz7")
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(REPO)
    w = Workspace(tmp_path / "ws")
    rgb, lbl7 = generate_scene(128, 0)
    # an hz14 label: each hz7 class becomes one of the hz14 classes that collapse into it (picked at random)
    rng = np.random.default_rng(0)
    lbl14 = np.full(lbl7.shape, 255, np.uint8)
    for k in range(HZ7.num_classes):
        fine = np.flatnonzero(lut[: hz14.num_classes] == k)
        sel = lbl7 == k
        if fine.size and sel.any():
            lbl14[sel] = rng.choice(fine, int(sel.sum()))
    img = w.root / "scenes" / "town.tif"
    write_demo_geotiff(img, rgb)
    write_index_mask(w.root / "labels" / "town14.png", lbl14, hz14)
    w.add_scene("Town hz14", img, "hz14", label_path=w.root / "labels" / "town14.png", split="val", synthetic=True,
                scene_id=SCENE_ID)
    torch.manual_seed(1)
    model = build_model("Segformer", "tu-efficientnet_lite0", hz14.num_classes)
    meta = {"arch": "Segformer", "encoder": "tu-efficientnet_lite0", "num_classes": hz14.num_classes,
            "scheme": hz14.to_json(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "tile_size": 128,
            "recipe": {}, "metrics": {}, "parent": None, "synthetic": True}
    save_checkpoint(w.root / "checkpoints" / "t14.safetensors", model, meta)
    w.set_active_checkpoint(w.register_checkpoint(w.root / "checkpoints" / "t14.safetensors",
                                                  {**meta, "scheme": "hz14"}, checkpoint_id="tiny-map", name="t14"))
    monkeypatch.setenv("SEGHZ_WORKSPACE", str(w.root))
    monkeypatch.setenv("SEGHZ_NO_DEMO", "1")
    try:
        fake = fake_map(None)
        at = app()
        at.session_state["map_jump"] = _jump(cell=None, tta="none", bbox=(0, 0, 128, 128))
        at.run()
        assert_ok(at)
        res = at.session_state["map_results"][SCENE_ID]["result"]
        p7, l7 = lut[res.pred], lut[res.label]
        ia, ib = _largest_error_cell(p7, l7, HZ7.num_classes)
        a, b = HZ7.names[ia], HZ7.names[ib]
        at.session_state["map_jump"] = _jump(cell=(a, b, "hz7"), tta="none", bbox=(0, 0, 128, 128))
        at.run()
        assert_ok(at)
        res = at.session_state["map_results"][SCENE_ID]["result"]
        want = (lut[res.label] == ia) & (lut[res.pred] == ib) & (res.label != 255)
        assert want.any()
        rgba = _overlay_rgba(fake.layers()["A → B errors"])
        assert np.array_equal(rgba[..., 3] > 0, want)
        # not the native (hz14) cells with those indices
        native = (res.label == ia) & (res.pred == ib)
        assert not np.array_equal(native, want)
        assert "(hz7 classes, as in the Evaluate drill-down)" in texts(at)
    finally:
        remove_tiles(w.root)


# ------------------------------------------------------------------------------------------------ item 2 (review 5)


def test_a_prediction_of_an_earlier_active_model_is_flagged_and_predicted_again(ws, fake_map, tiny_map_checkpoint):  # noqa: F811
    """Predict with d4, promote another checkpoint, come back with the radio reset to none: a warning above the map
    names the overlay's checkpoint and TTA, the TTA the overlay was made with is shown, and one click predicts the
    region again with the active model and the same TTA."""
    from seghz.geo.tiles import pixel_window_to_geojson

    fake_map(feature(pixel_window_to_geojson((64, 32, 48, 64), scene_info(ws))))
    at = app().run()
    at.radio(key="map_tta").set_value("d4")
    at.button(key="map_predict").click().run()
    assert_ok(at)
    assert at.session_state["map_results"][SCENE_ID]["result"].tta == "d4"
    assert not at.warning and not any(b.key == "map_repredict" for b in at.button)
    assert "Overlay: predicted by **tiny map model** (`tiny-map`), TTA **d4 (8 views:" in texts(at)

    _path, meta = tiny_map_checkpoint
    ws.register_checkpoint(ws.root / "checkpoints" / "tiny.safetensors", {**meta, "scheme": "hz7"},
                           checkpoint_id="newer", name="newer model")
    ws.set_active_checkpoint("newer")
    at.radio(key="map_tta").set_value("none").run()  # the page's widgets reset on a page switch
    assert_ok(at)
    warn = "\n".join(str(w.value) for w in at.warning)
    assert "**tiny map model** (`tiny-map`) with TTA **d4 (8 views:" in warn, warn
    assert "active model is now **newer model** (`newer`)" in warn
    t = texts(at)
    assert "The overlay below was predicted with TTA **d4 (8 views:" in t  # next to the radio that says none
    btn = at.button(key="map_repredict")
    assert btn.label == "Predict again with the active model" and not btn.disabled

    btn.click().run()
    assert_ok(at)
    rec = at.session_state["map_results"][SCENE_ID]
    assert rec["checkpoint_id"] == "newer" and rec["result"].tta == "d4"
    assert rec["result"].window == (64, 32, 48, 64)
    assert at.radio(key="map_tta").value == "d4"  # the radio reads what the overlay was made with
    assert not at.warning and not any(b.key == "map_repredict" for b in at.button)
    assert "The overlay below was predicted with TTA" not in texts(at)


# ------------------------------------------------------------------------------------------------ item 3 (review 6)


def _draw_options(html: str) -> dict:
    m = re.search(r"draw: (\{.*?\}),\s*edit: (\{.*?\}),\s*\}", html, re.DOTALL)
    assert m, "no Leaflet.draw options in the map"
    return {"draw": json.loads(m.group(1)), "edit": json.loads(m.group(2))}


def _all_palette_colours() -> set[str]:
    from seghz.classes import get_scheme, scheme_names
    from seghz.geo.regions import CONFIDENCE_COLORS, ERROR_COLOR, OTHER_ERROR_COLOR

    out = set()
    for n in scheme_names():
        for palette in ("study", "distinct"):
            out |= {c.lower() for c in get_scheme(n).for_display(palette).hex_colors()}
    out |= {"#{:02x}{:02x}{:02x}".format(*c) for c in (*CONFIDENCE_COLORS, ERROR_COLOR, OTHER_ERROR_COLOR)}
    out |= {"#ffd400", "#ff7800"}  # the predicted window's outline, Leaflet.draw's orange
    return out


def test_drawn_shapes_have_no_fill_and_an_outline_in_no_class_palette(ws, fake_map):  # noqa: F811
    from seghz.geo import webmap

    html = webmap.make_map(scene_info(ws), draw=True).get_root().render()
    opts = _draw_options(html)
    for shape in ("rectangle", "polygon"):
        so = opts["draw"][shape]["shapeOptions"]
        assert so.get("fillOpacity") == 0, so  # Leaflet.draw's default: 20 % #ff7800 (fill kept on: clickable)
        assert so["weight"] >= 2 and so.get("opacity") == 1, so
    assert all(opts["draw"][s]["shapeOptions"]["color"] == webmap.DRAW_COLOR for s in ("rectangle", "polygon"))
    sel = opts["edit"]["edit"]["selectedPathOptions"]  # edit mode: no 10 % pink wash either
    assert sel["fillOpacity"] == 0 and sel["maintainColor"] is True
    assert webmap.DRAW_COLOR.lower() not in _all_palette_colours()

    # the Map page's map has those options, and its own outline of the kept region no fill, in the same colour
    import folium

    from seghz.geo.tiles import pixel_window_to_geojson

    fake = fake_map(feature(pixel_window_to_geojson((10, 10, 30, 40), scene_info(ws))))
    app().run()
    call = fake.calls[-1]
    assert _draw_options(call["fig"].get_root().render()) == opts
    outlines = [ch for ch in call["feature_group_to_add"]._children.values() if isinstance(ch, folium.Polygon)]
    assert outlines and all(o.options["fill"] is False and o.options["color"] == webmap.DRAW_COLOR for o in outlines)


# ------------------------------------------------------------------------------------------------ item 4 (review 13, 14)


def test_a_tiny_region_reads_in_square_metres_and_exports_name_the_model_and_tta(ws, fake_map, monkeypatch):  # noqa: F811
    import pandas as pd

    from seghz.geo.tiles import pixel_window_to_geojson

    fake_map(feature(pixel_window_to_geojson((200, 200, 5, 6), scene_info(ws))))
    downloads = capture_downloads(monkeypatch)
    at = app().run()
    at.button(key="map_predict").click().run()
    assert_ok(at)
    res = at.session_state["map_results"][SCENE_ID]["result"]
    area = 30 * res.pixel_area_m2
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Area"] == f"{area:,.1f} m²", metrics  # was "0.000 km²"
    df = at.dataframe[0].value
    assert "area (m²)" in df.columns and "area (km²)" not in df.columns
    assert float(df["area (m²)"].sum()) == pytest.approx(area)
    (chart,) = at.get("plotly_chart")
    layout = json.loads(chart.proto.spec)["layout"]
    assert layout["yaxis"]["title"]["text"] == "area (m²)" and layout["yaxis"]["exponentformat"] == "none"
    data, fname = downloads["map_dl_csv"]
    csv = pd.read_csv(io.StringIO(data.decode() if isinstance(data, bytes) else data))
    assert "area (m²)" in csv.columns and float(csv["area (m²)"].sum()) == pytest.approx(area, abs=0.05)
    assert set(csv["checkpoint"]) == {"tiny-map"} and set(csv["TTA"]) == {"none"}
    stem = f"{SCENE_ID}_r200_c200_6x5_tiny-map_tta-none"
    assert fname == f"{stem}_class_areas.csv"
    for key, ext in (("map_dl_png", "png"), ("map_dl_tif", "tif"), ("map_dl_geojson", "geojson")):
        assert downloads[key][1] == f"{stem}_prediction.{ext}", downloads[key][1]

    # d4 makes other file names (a retrained model or another TTA never overwrites an export)
    at.radio(key="map_tta").set_value("d4")
    at.button(key="map_predict").click().run()
    assert_ok(at)
    assert downloads["map_dl_csv"][1] == f"{SCENE_ID}_r200_c200_6x5_tiny-map_tta-d4_class_areas.csv"


def test_area_units_and_export_stems():
    from seghz.infer.region import area_unit, export_stem, format_area

    assert area_unit(30.0) == ("m²", 1.0, 2) and area_unit(999_999.0)[0] == "m²"
    assert area_unit(1e6) == ("km²", 1e6, 6)
    assert format_area(30.0) == "30.0 m²" and format_area(4_321.0) == "4,321 m²"
    assert format_area(15_625.0) == "15,625 m²" and format_area(4.21e6) == "4.210 km²"  # not "0.0156 km²" (review)
    assert export_stem("town", (1, 2, 3, 4), "demo_hz7-head-refit-8b7290", "custom", ("identity", "lr")) == \
        "town_r1_c2_4x3_demo_hz7-head-refit-8b7290_tta-custom-identity+lr"
    assert export_stem("town", (0, 0, 5, 6), "a b/c", "d4", ()) == "town_r0_c0_6x5_a-b-c_tta-d4"
