"""seghz.geo.vectors: class masks and label corrections as GeoJSON polygons.

The central property: the polygons, rasterised back on the scene's grid, give exactly the pixels they came
from (vertices are pixel corners). Georeferenced output is RFC 7946 (WGS84, exterior rings counter-clockwise,
holes clockwise) with ground areas; corrections carry the provenance of the layer that last touched each pixel.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from seghz.data.io import RasterInfo, write_index_mask, write_rgb
from seghz.geo.tiles import latlng_to_pixel
from seghz.geo.vectors import (
    PIXEL_COORDS,
    WGS84_COORDS,
    _ring_area,
    class_features,
    class_geojson,
    corrections_geojson,
    to_bytes,
)
from seghz.store import Workspace

NAMES = ["Water", "OpenArea", "Green_land", "Forest", "Glass", "Buildings", "Road_land"]


def _pixel_info(h, w):
    return RasterInfo("x.png", w, h, 3, "uint8")


def _merc_info(h, w, lat0=30.25, lng0=120.15, px=1.0):
    x0 = lng0 * math.pi / 180 * 6378137.0
    y0 = math.log(math.tan(math.pi / 4 + math.radians(lat0) / 2)) * 6378137.0
    return RasterInfo("x.tif", w, h, 3, "uint8", "EPSG:3857", (px, 0.0, x0, 0.0, -px, y0))


def _rasterise(features, info, shape) -> np.ndarray:
    """Burn each feature's class index back on the pixel grid (positions -> continuous pixel coordinates)."""
    from rasterio import features as rf
    from rasterio.transform import Affine

    shapes = []
    for f in features:
        rings = []
        for ring in f["geometry"]["coordinates"]:
            lng, lat = np.array(ring).T
            rows, cols = latlng_to_pixel(lat, lng, info)
            rings.append([(float(c), float(r)) for r, c in zip(rows, cols)])
        shapes.append(({"type": "Polygon", "coordinates": rings}, f["properties"]["class_index"]))
    if not shapes:
        return np.full(shape, 255, np.uint8)
    return rf.rasterize(shapes, out_shape=shape, fill=255, transform=Affine.identity(), dtype=np.uint8)


def _utm_info(h, w):
    """A GID-like 4 m grid in UTM zone 51N (Hangzhou), slightly rotated: positions go through a real projection."""
    return RasterInfo("x.tif", w, h, 3, "uint8", "EPSG:32651", (4.0, 0.3, 210000.0, 0.3, -4.0, 3350000.0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.sampled_from([0, 2, 5, 255])),
       st.sampled_from(["pixel", "utm"]))
def test_polygons_rasterise_back_to_the_same_pixels(mask, grid):
    info = _pixel_info(*mask.shape) if grid == "pixel" else _utm_info(*mask.shape)
    feats = class_features(mask, NAMES, info)
    assert np.array_equal(_rasterise(feats, info, mask.shape), mask)
    # one feature per 4-connected region, areas exact
    assert sum(f["properties"]["area_px"] for f in feats) == int((mask != 255).sum())
    for f in feats:
        p = f["properties"]
        assert p["class"] == NAMES[p["class_index"]]
        # a 4 m pixel covers ~16 m² (UTM's scale factor near the zone's edge is within 0.1 %; the skew adds 0.6 %)
        assert p["area_m2"] is None if grid == "pixel" else p["area_m2"] == pytest.approx(p["area_px"] * 16, rel=0.01)


def test_holes_are_kept_and_rings_are_rfc7946_oriented_on_a_georeferenced_scene():
    mask = np.full((20, 20), 255, np.uint8)
    mask[2:18, 2:18] = 3  # a forest square with a pond in it
    mask[8:12, 8:12] = 0
    info = _merc_info(20, 20)
    feats = class_features(mask, NAMES, info)
    by = {f["properties"]["class"]: f for f in feats}
    assert set(by) == {"Forest", "Water"}
    forest = by["Forest"]["geometry"]["coordinates"]
    assert len(forest) == 2  # exterior + the pond's hole
    assert _ring_area(forest[0]) > 0 and _ring_area(forest[1]) < 0  # ccw exterior, cw hole (lng right, lat up)
    assert by["Forest"]["properties"]["area_px"] == 16 * 16 - 16
    # 1 m Mercator pixels at 30.25 N cover cos²(lat) m² of ground
    k2 = math.cos(math.radians(30.25)) ** 2
    assert by["Water"]["properties"]["area_m2"] == pytest.approx(16 * k2, rel=0.01)
    assert np.array_equal(_rasterise(feats, info, mask.shape), mask)
    lng, lat = np.array(forest[0]).T
    assert 120.1 < lng.min() < lng.max() < 120.2 and 30.2 < lat.min() < lat.max() < 30.3


def test_offset_and_valid_place_a_window_in_its_scene():
    info = _pixel_info(100, 100)
    win = np.zeros((4, 5), np.uint8)
    valid = np.ones((4, 5), bool)
    valid[:, 3:] = False
    fc = class_geojson(win, NAMES, info, offset=(10, 20), valid=valid, scene="s")
    assert fc["coordinate_system"] == PIXEL_COORDS and fc["scene"] == "s"
    (f,) = fc["features"]
    xs, ys = np.array(f["geometry"]["coordinates"][0]).T
    assert (xs.min(), xs.max(), -ys.max(), -ys.min()) == (20, 23, 10, 14)  # cols 20..23, rows 10..14
    assert f["properties"]["area_px"] == 12
    assert json.loads(to_bytes(fc)) == fc


@pytest.fixture
def ws(tmp_path) -> Workspace:
    w = Workspace(tmp_path / "ws")
    img = w.root / "scenes" / "s" / "image.png"
    write_rgb(img, np.zeros((16, 16, 3), np.uint8))
    lbl = w.root / "scenes" / "s" / "label.png"
    write_index_mask(lbl, np.full((16, 16), 2, np.uint8))  # all Green_land
    w.add_scene("S", img, "hz7", label_path=lbl, split="train", scene_id="s")
    return w


def _box(r0, r1, c0, c1, shape=(16, 16)):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def test_corrections_carry_action_classes_and_provenance_of_the_last_layer(ws):
    v1 = ws.save_label_edit("s", 0, "ana", "brush", pixels=_box(0, 4, 0, 4), values=5, reason="roofs")  # relabel
    v2 = ws.save_label_edit("s", v1, "bo", "ignore", pixels=_box(10, 12, 10, 16), values=255)  # ignore
    v3 = ws.save_label_edit("s", v2, "bo", "confirm", confirm=_box(6, 8, 0, 16))  # confirm a strip
    v4 = ws.save_label_edit("s", v3, "ana", "brush", pixels=_box(0, 2, 0, 2), values=0)  # over part of v1
    fc = corrections_geojson(ws, "s")
    assert fc["label_version"] == v4 and fc["scheme"] == "hz7" and fc["coordinate_system"] == PIXEL_COORDS
    rows = sorted((f["properties"]["version"], f["properties"]["action"], f["properties"]["class"],
                   f["properties"]["original_class"], f["properties"]["analyst"], f["properties"]["area_px"])
                  for f in fc["features"])
    assert rows == [(v1, "relabel", "Buildings", "Green_land", "ana", 16 - 4),  # v4 took 4 of its pixels
                    (v2, "ignore", None, "Green_land", "bo", 12),
                    (v3, "confirm", "Green_land", "Green_land", "bo", 32),
                    (v4, "relabel", "Water", "Green_land", "ana", 4)]
    f1 = next(f for f in fc["features"] if f["properties"]["version"] == v1)["properties"]
    assert f1["reason"] == "roofs" and f1["tool"] == "brush" and f1["saved_at"]

    # an undone layer is not in effect, so it is not exported
    ws.undo_label_edit("s", "ana")  # takes back v4
    after = corrections_geojson(ws, "s")
    assert {f["properties"]["version"] for f in after["features"]} == {v1, v2, v3}
    assert sum(f["properties"]["area_px"] for f in after["features"] if f["properties"]["version"] == v1) == 16
    # an older version can be exported too, and a scene without corrections gives an empty collection
    assert {f["properties"]["version"] for f in corrections_geojson(ws, "s", v1)["features"]} == {v1}
    assert corrections_geojson(ws, "s", 0)["features"] == []


def test_painting_the_original_class_counts_as_confirmed(ws):
    ws.save_label_edit("s", 0, "ana", "brush", pixels=_box(0, 2, 0, 2), values=2)  # Green_land on Green_land
    (f,) = corrections_geojson(ws, "s")["features"]
    assert f["properties"]["action"] == "confirm" and f["properties"]["area_px"] == 4


def test_georeferenced_scene_corrections_are_wgs84(tmp_path):
    w = Workspace(tmp_path / "ws")
    info = _merc_info(16, 16)
    img = w.root / "scenes" / "g" / "image.png"
    write_rgb(img, np.zeros((16, 16, 3), np.uint8))
    lbl = w.root / "scenes" / "g" / "label.png"
    write_index_mask(lbl, np.full((16, 16), 2, np.uint8))
    w.add_scene("G", img, "hz7", label_path=lbl, split="train", scene_id="g", crs=info.crs, transform=info.transform)
    w.save_label_edit("g", 0, "ana", "brush", pixels=_box(0, 4, 0, 4), values=5)
    fc = corrections_geojson(w, "g")
    assert fc["coordinate_system"] == WGS84_COORDS
    (f,) = fc["features"]
    assert f["properties"]["area_m2"] == pytest.approx(16 * math.cos(math.radians(30.25)) ** 2, rel=0.01)


def test_cli_writes_corrections_and_label_polygons(ws, tmp_path, capsys):
    from seghz.cli import main

    v1 = ws.save_label_edit("s", 0, "ana", "brush", pixels=_box(0, 4, 0, 4), values=5)
    out = tmp_path / "c.geojson"
    assert main(["--workspace", str(ws.root), "vectors", "--scene", "s", "--out", str(out)]) == 0
    fc = json.loads(out.read_text())
    assert [(f["properties"]["version"], f["properties"]["action"]) for f in fc["features"]] == [(v1, "relabel")]
    assert "wrote 1 polygon(s) covering 16 px (corrections, label version 1" in capsys.readouterr().out

    out2 = tmp_path / "l.geojson"
    assert main(["--workspace", str(ws.root), "vectors", "--scene", "s", "--what", "label", "--version", "0",
                 "--out", str(out2)]) == 0
    (f,) = json.loads(out2.read_text())["features"]  # version 0: the original, all Green_land
    assert f["properties"]["class"] == "Green_land" and f["properties"]["area_px"] == 256

    assert main(["--workspace", str(ws.root), "vectors", "--scene", "nope", "--out", str(tmp_path / "x.geojson")]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "x.geojson").exists()


def test_collections_follow_rfc7946_member_rules():
    """RFC 7946 section 7.1: a FeatureCollection carries no "coordinates", "geometry" or "properties" member."""
    info = _pixel_info(4, 4)
    fc = class_geojson(np.zeros((4, 4), np.uint8), NAMES, info, name="x")
    assert not {"coordinates", "geometries", "geometry", "properties"} & set(fc)
    for f in fc["features"]:
        assert set(f) == {"type", "geometry", "properties"} and f["geometry"]["type"] == "Polygon"
    with pytest.raises(ValueError, match="coordinates: GeoJSON member name"):
        class_geojson(np.zeros((4, 4), np.uint8), NAMES, info, coordinates="pixels")
