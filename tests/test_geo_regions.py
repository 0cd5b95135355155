"""Unit tests of seghz.geo.regions (polygon masks in scene pixels, rectangle detection, confidence classes,
uncertainty layers) and of the continuous-overlay helpers of seghz.geo.tiles (colour ramps, legends)."""
from __future__ import annotations

import numpy as np
import pytest

from seghz.classes import IGNORE, get_scheme
from seghz.data.io import RasterInfo
from seghz.errors import RegionError
from seghz.geo.regions import (
    UNCERTAINTY_LAYERS,
    confidence_classes,
    confidence_scheme,
    disagreement_spec,
    entropy_spec,
    is_axis_rectangle,
    mask_outside,
    polygon_mask,
    region_mask,
    rings_mask,
    uncertainty_summary,
    workspace_tile_key,
)
from seghz.geo.tiles import (
    RAMPS,
    RampSpec,
    geojson_to_pixel_window,
    pixel_to_latlng,
    pixel_window_to_geojson,
    ramp_colors,
    rgba_png,
    scalar_overlay,
    scalar_rgba,
    window_bounds,
)
from seghz.models.checkpoint import checkpoint_scheme

PIX = RasterInfo("p.png", 100, 80, 3, "uint8")
# 1 m/px EPSG:3857 near Hangzhou (north-up), and a UTM 51N scene (not Web-Mercator aligned).
MERC = RasterInfo("m.tif", 300, 200, 3, "uint8", "EPSG:3857", (1.0, 0.0, 13375037.0, 0.0, -1.0, 3535726.0))
UTM = RasterInfo("u.tif", 300, 200, 3, "uint8", "EPSG:32651", (2.0, 0.0, 210000.0, 0.0, -2.0, 3350000.0))


def feature(rows, cols, info) -> dict:
    """GeoJSON Feature of a polygon given by pixel-space vertices (closed automatically)."""
    lat, lng = pixel_to_latlng(np.array(rows, float), np.array(cols, float), info)
    ring = [[float(x), float(y)] for x, y in zip(lng, lat)]
    ring.append(ring[0])
    return {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def centres_in_triangle(window, tri):
    """Brute-force reference: pixel centres inside a triangle (rows, cols) by barycentric signs."""
    r0, c0, h, w = window
    (ya, xa), (yb, xb), (yc, xc) = tri
    yy, xx = np.mgrid[0:h, 0:w]
    py, px = r0 + yy + 0.5, c0 + xx + 0.5

    def side(x1, y1, x2, y2):
        return (px - x2) * (y1 - y2) - (x1 - x2) * (py - y2)

    d1, d2, d3 = side(xa, ya, xb, yb), side(xb, yb, xc, yc), side(xc, yc, xa, ya)
    neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    return ~(neg & pos)


@pytest.mark.parametrize("info", [PIX, MERC], ids=["pixel", "merc"])
def test_rectangle_on_pixel_edges_masks_exactly_the_window(info):
    win = (10, 20, 30, 40)
    geom = pixel_window_to_geojson(win, info)
    assert geojson_to_pixel_window(geom, info) == win
    m = polygon_mask(geom, info, win)
    assert m.shape == (30, 40) and m.all()
    big = polygon_mask(geom, info, (0, 0, 60, 80))
    assert big.sum() == 30 * 40 and big[10:40, 20:60].all()


@pytest.mark.parametrize("info", [PIX, MERC], ids=["pixel", "merc"])
def test_triangle_mask_matches_brute_force(info):
    tri = [(5.3, 7.1), (60.2, 12.7), (30.4, 70.9)]
    geom = feature([p[0] for p in tri], [p[1] for p in tri], info)
    win = geojson_to_pixel_window(geom, info)
    assert win == (5, 7, 56, 64)
    m = polygon_mask(geom, info, win)
    ref = centres_in_triangle(win, tri)
    # exact in pixel space; in Mercator up to rounding at centres that lie on an edge
    assert np.count_nonzero(m != ref) <= (0 if info is PIX else 2)
    assert 0.3 < m.mean() < 0.7


def test_hole_and_multipolygon():
    outer = [[0, 0], [40, 0], [40, -40], [0, -40], [0, 0]]  # CRS.Simple: [col, -row]
    hole = [[10, -10], [30, -10], [30, -30], [10, -30], [10, -10]]
    m = polygon_mask({"type": "Polygon", "coordinates": [outer, hole]}, PIX, (0, 0, 40, 40))
    assert m.sum() == 40 * 40 - 20 * 20 and not m[10:30, 10:30].any() and m[:10].all()
    far = [[50, -50], [60, -50], [60, -60], [50, -60], [50, -50]]
    mm = polygon_mask({"type": "MultiPolygon", "coordinates": [[outer, hole], [far]]}, PIX, (0, 0, 80, 80))
    assert mm.sum() == 40 * 40 - 20 * 20 + 10 * 10 and mm[50:60, 50:60].all()


def test_polygon_mask_in_utm_scene_is_close_to_brute_force():
    tri = [(20.0, 30.0), (150.0, 60.0), (80.0, 250.0)]
    geom = feature([p[0] for p in tri], [p[1] for p in tri], UTM)
    win = geojson_to_pixel_window(geom, UTM)
    m = polygon_mask(geom, UTM, win)
    ref = centres_in_triangle(win, tri)
    # edges are straight in Mercator, slightly curved in UTM: only a thin band along them may differ
    assert np.count_nonzero(m != ref) < 0.01 * ref.sum()


def test_rings_mask_half_open_rule_and_empty():
    ring = (np.array([0.0, 0.0, 2.0, 2.0, 0.0]), np.array([0.0, 2.0, 2.0, 0.0, 0.0]))
    m = rings_mask([ring], (0, 0, 3, 3))
    assert m.tolist() == [[True, True, False], [True, True, False], [False, False, False]]
    flat = (np.array([1.0, 1.0, 1.0]), np.array([0.0, 2.0, 0.0]))
    assert not rings_mask([flat], (0, 0, 3, 3)).any()
    with pytest.raises(ValueError):
        rings_mask([ring], (0, 0, 0, 3))


def test_is_axis_rectangle_and_region_mask():
    rect = pixel_window_to_geojson((10, 20, 30, 40), MERC)
    assert is_axis_rectangle(rect) and is_axis_rectangle({"type": "Feature", "geometry": rect})
    assert region_mask(rect, MERC, (10, 20, 30, 40)) is None
    tri = feature([5, 60, 30], [7, 12, 70], PIX)
    assert not is_axis_rectangle(tri)
    assert region_mask(tri, PIX, geojson_to_pixel_window(tri, PIX)) is not None
    # 4 corners but not axis-aligned (a diamond)
    diamond = {"type": "Polygon", "coordinates": [[[10, 0], [20, -10], [10, -20], [0, -10], [10, 0]]]}
    assert not is_axis_rectangle(diamond)
    multi = {"type": "MultiPolygon", "coordinates": [rect["coordinates"]]}
    assert not is_axis_rectangle(multi)


@pytest.mark.parametrize("bad", [
    None, "x", {"type": "Point", "coordinates": [1, 2]}, {"type": "Feature", "geometry": None},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, {"type": "Polygon", "coordinates": [[[0, "a"], [1, 1], [2, 2]]]},
    {"type": "Polygon", "coordinates": [[[0, float("nan")], [1, 1], [2, 2]]]},
])
def test_bad_geometries_raise_region_error(bad):
    with pytest.raises(RegionError):
        polygon_mask(bad, PIX, (0, 0, 10, 10))


def test_mask_outside():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    inside = np.array([[True, False, True], [False, True, True]])
    out = mask_outside(a, inside)
    assert out.tolist() == [[0, IGNORE, 2], [IGNORE, 4, 5]] and a[0, 1] == 1  # input untouched
    assert mask_outside(a, None).tolist() == a.tolist()
    with pytest.raises(ValueError):
        mask_outside(a, inside[:1])


def test_confidence_classes_and_scheme():
    sch = confidence_scheme()
    assert sch.num_classes == 3 and len(sch.hex_colors()) == 3 and "< 50" in sch.names[0]
    conf = np.array([[0.2, 0.5, 0.69], [0.75, 0.9, np.nan]], np.float32)
    out = confidence_classes(conf)
    assert out.tolist() == [[0, 1, 1], [2, IGNORE, IGNORE]]
    valid = np.array([[False, True, True], [True, True, True]])
    assert confidence_classes(conf, valid)[0, 0] == IGNORE


def test_checkpoint_scheme_and_tile_key(tmp_path):
    hz7 = get_scheme("hz7")
    assert checkpoint_scheme({"scheme": hz7.to_json()}) is hz7 or checkpoint_scheme({"scheme": hz7.to_json()}) == hz7
    assert checkpoint_scheme({"scheme": "hz7"}) == hz7
    custom = checkpoint_scheme({"scheme": {"name": "mine", "names": ["a", "b"], "ids": [1, 2], "colors": [[1, 2, 3], [4, 5, 6]]}})
    assert custom.names == ("a", "b") and custom.colors == ((1, 2, 3), (4, 5, 6))
    renamed = checkpoint_scheme({"scheme": {"name": "hz7", "names": ["x"] * 7}})
    assert renamed.names == ("x",) * 7 and len(renamed.colors) == 7
    with pytest.raises(ValueError):
        checkpoint_scheme({})
    k1, k2 = workspace_tile_key(tmp_path / "a"), workspace_tile_key(tmp_path / "b")
    assert k1 != k2 and k1 == workspace_tile_key(str(tmp_path / "a")) and k1.replace("-", "").isalnum()


# ------------------------------------------------------------------------------------------------ continuous layers


def _png_rgba(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def test_ramp_colors_ends_and_clipping():
    for name, stops in RAMPS.items():
        c = ramp_colors(np.array([-5.0, 0.0, 1.0, 7.0, np.nan]), name)
        assert c.shape == (5, 3) and c.dtype == np.uint8
        assert tuple(c[1]) == stops[0][1] and tuple(c[2]) == stops[-1][1]
        assert (c[0] == c[1]).all() and (c[3] == c[2]).all()  # clipped to the ends
    mid = ramp_colors(np.array([0.125]), "ylorrd")[0]  # halfway between the first two stops
    (_, a), (_, b) = RAMPS["ylorrd"][:2]
    assert np.abs(mid.astype(int) - (np.array(a) + np.array(b)) / 2).max() <= 1
    with pytest.raises(ValueError, match="unknown colour ramp"):
        ramp_colors(np.zeros(2), "rainbow")


def test_scalar_rgba_transparency_clipping_and_opacity():
    v = np.array([[np.nan, 0.0, 0.5, 1.0], [2.0, -1.0, np.inf, 0.25]], np.float32)
    rgba = scalar_rgba(v, 0.0, 1.0, "ylorrd", opacity=0.5)
    assert rgba.shape == (2, 4, 4) and rgba.dtype == np.uint8
    alpha = rgba[..., 3]
    # NaN, inf, zero (= vmin) and below are transparent; the rest get the opacity
    assert alpha.tolist() == [[0, 0, 128, 128], [128, 0, 0, 128]]
    assert (rgba[alpha == 0, :3] == 0).all()
    top = tuple(RAMPS["ylorrd"][-1][1])
    assert tuple(rgba[0, 3, :3]) == top and tuple(rgba[1, 0, :3]) == top  # 2.0 clipped to vmax
    # a valid mask hides pixels (outside a drawn polygon) whatever their value
    valid = np.ones_like(v, bool)
    valid[0, 2] = False
    assert scalar_rgba(v, 0.0, 1.0, valid=valid)[0, 2, 3] == 0
    # hide_min=False keeps the bottom of the range visible (not NaN, though)
    shown = scalar_rgba(v, 0.0, 1.0, hide_min=False)[..., 3] > 0
    assert shown.tolist() == [[False, True, True, True], [True, True, False, True]]
    with pytest.raises(ValueError, match="vmax > vmin"):
        scalar_rgba(v, 1.0, 1.0)
    with pytest.raises(ValueError, match="opacity"):
        scalar_rgba(v, 0.0, 1.0, opacity=2.0)
    with pytest.raises(ValueError, match="differ in shape"):
        scalar_rgba(v, 0.0, 1.0, valid=np.ones((3, 3), bool))
    # PNG round trip keeps the RGBA
    assert (_png_rgba(rgba_png(rgba)) == rgba).all()


def test_entropy_and_disagreement_specs_and_legends():
    e = entropy_spec(7)
    assert e.vmin == 0.0 and e.vmax == pytest.approx(np.log(7)) and e.units == "nats"
    html = e.legend_html()
    assert "Predictive entropy" in html and "(nats)" in html and "ln 7 = 1.95 nats" in html and "0 nats" in html
    assert "linear-gradient" in html
    d = disagreement_spec(8)
    assert (d.vmin, d.vmax) == (0.0, 1.0) and d.units == "fraction of views"
    html = d.legend_html()
    assert "View disagreement" in html and "fraction of views" in html and "8 TTA views" in html and "1/8" in html
    plain = RampSpec("Thing", 0.5, 2.0, units="m").legend_html()
    assert "0.5 m" in plain and "2 m" in plain
    with pytest.raises(ValueError):
        entropy_spec(1)
    assert list(UNCERTAINTY_LAYERS) == ["off", "confidence", "entropy", "disagreement"]


@pytest.mark.parametrize("info", [PIX, MERC, UTM], ids=["pixel", "merc", "utm"])
def test_scalar_overlay_masks_nan_and_outside(info):
    win = (10, 20, 40, 60)
    v = np.full((40, 60), 0.8, np.float32)
    v[:, :10] = np.nan  # nodata
    inside = np.ones((40, 60), bool)
    inside[30:] = False  # outside the drawn polygon
    spec = entropy_spec(2)
    ov = scalar_overlay(v, win, info, spec, opacity=1.0, valid=inside)
    rgba = _png_rgba(ov.png)
    if info is UTM:  # resampled onto a Web-Mercator grid: only proportions can be compared
        frac = (rgba[..., 3] > 0).sum() / rgba[..., 3].size
        assert 0.4 < frac < 0.75  # ~ 50/60 x 30/40 = 62 % of the window, less the grid's margins
        assert set(np.unique(rgba[..., 3])) <= {0, 255}
    else:
        assert rgba.shape == (40, 60, 4)
        assert ov.bounds == window_bounds(win, info)
        assert (rgba[:, :10, 3] == 0).all() and (rgba[30:, :, 3] == 0).all()
        assert (rgba[:30, 10:, 3] == 255).all()
        expect = ramp_colors(np.array([0.8 / np.log(2)]), spec.ramp)[0]
        assert (rgba[:30, 10:, :3] == expect).all()
    with pytest.raises(ValueError, match="does not match window"):
        scalar_overlay(v[:10], win, info, spec)


def test_uncertainty_summary():
    ent = np.array([[0.0, 1.0], [2.0, np.nan]], np.float32)
    dis = np.array([[0.0, 0.5], [0.0, np.nan]], np.float32)
    s = uncertainty_summary(ent, dis, None, n_views=2)
    assert s.pixels == 3 and s.mean_entropy == pytest.approx(1.0) and s.disagreeing_fraction == pytest.approx(1 / 3)
    inside = np.array([[True, True], [False, True]])
    s = uncertainty_summary(ent, dis, inside, n_views=2)
    assert s.pixels == 2 and s.mean_entropy == pytest.approx(0.5) and s.disagreeing_fraction == pytest.approx(0.5)
    one = uncertainty_summary(ent, np.zeros_like(dis), None, n_views=1)
    assert one.disagreeing_fraction is None and one.mean_entropy is not None  # meaningless with one view
    none = uncertainty_summary(None, None)
    assert none.pixels == 0 and none.mean_entropy is None
