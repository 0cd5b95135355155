"""Tests of seghz.geo: pixel <-> map coordinates, tile pyramids, region overlays and offline folium maps."""
from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from seghz.classes import get_scheme, scheme_names
from seghz.data.io import RasterInfo, raster_info, write_rgb
from seghz.errors import BadInputError, RegionError
from seghz.geo.tiles import (
    GEOREF,
    MERC_HALF,
    PIXEL,
    build_pyramid,
    geojson_to_pixel_window,
    latlng_to_pixel,
    pixel_bounds,
    pixel_to_latlng,
    pixel_window_to_geojson,
    region_overlay,
    rgba_overlay_png,
    scene_bounds_latlon,
    tile_dir,
    window_bounds,
)
from seghz.geo.webmap import add_region_overlay, add_tile_layer, asset_urls, external_asset_urls, local_leaflet_assets, make_map

ROOT = Path(__file__).resolve().parents[1]
SHANGHAI = ROOT.parent / "shared" / "data" / "shanghai"
# Hangzhou, 120.15 E 30.25 N, in EPSG:3857 metres.
HZ_X, HZ_Y = 13375037.0, 3535726.0
CDN_HOSTS = ("cdn.jsdelivr.net", "cdnjs.cloudflare.com", "code.jquery.com", "netdna.bootstrapcdn.com")

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _merc_info(w: int, h: int, res: float = 1.0, x0: float = HZ_X, y0: float = HZ_Y) -> RasterInfo:
    return RasterInfo("mem.tif", w, h, 3, "uint8", "EPSG:3857", (res, 0.0, x0, 0.0, -res, y0))


def _geo_info(w: int, h: int, res_deg: float, lon0: float = 120.15, lat0: float = 30.25) -> RasterInfo:
    return RasterInfo("mem.tif", w, h, 3, "uint8", "EPSG:4326", (res_deg, 0.0, lon0, 0.0, -res_deg, lat0))


def _pix_info(w: int, h: int) -> RasterInfo:
    return RasterInfo("mem.png", w, h, 3, "uint8")


@st.composite
def scene_and_window(draw, kind: str):
    w = draw(st.integers(1, 30000))
    h = draw(st.integers(1, 30000))
    if kind == "merc":
        info = _merc_info(w, h, draw(st.sampled_from([0.3, 0.5, 1.0, 2.0, 10.0])))
    elif kind == "wgs84":
        info = _geo_info(w, h, draw(st.sampled_from([1e-6, 5e-6, 1e-5, 1e-4])))
    else:
        info = _pix_info(w, h)
    r = draw(st.integers(0, h - 1))
    c = draw(st.integers(0, w - 1))
    wh = draw(st.integers(1, h - r))
    ww = draw(st.integers(1, w - c))
    return info, (r, c, wh, ww)


# ---------------------------------------------------------------------------------------------------- coordinates


@pytest.mark.parametrize("kind", ["merc", "wgs84", "pixel"])
@FAST
@given(data=st.data())
def test_window_geojson_round_trip(kind, data):
    info, window = data.draw(scene_and_window(kind))
    geom = pixel_window_to_geojson(window, info)
    assert geom["type"] == "Polygon" and len(geom["coordinates"][0]) == 5
    assert geojson_to_pixel_window(geom, info) == window
    # As streamlit-folium returns it: a Feature.
    assert geojson_to_pixel_window({"type": "Feature", "properties": {}, "geometry": geom}, info) == window


@pytest.mark.parametrize("kind", ["merc", "wgs84", "pixel"])
@FAST
@given(data=st.data())
def test_latlng_pixel_are_inverse(kind, data):
    info, (r, c, h, w) = data.draw(scene_and_window(kind))
    rows = np.array([r, r + h, r + 0.5 * h], float)
    cols = np.array([c, c + w, c + 0.25 * w], float)
    lat, lng = pixel_to_latlng(rows, cols, info)
    r2, c2 = latlng_to_pixel(lat, lng, info)
    np.testing.assert_allclose(r2, rows, atol=1e-5)
    np.testing.assert_allclose(c2, cols, atol=1e-5)


@FAST
@given(data=st.data())
def test_utm_window_round_trip_is_within_one_pixel(data):
    """Non-Mercator CRS: a window's outline is not a lat/lon rectangle; the round trip may only grow by <= 1 px."""
    w, h = data.draw(st.integers(10, 5000)), data.draw(st.integers(10, 5000))
    info = RasterInfo("mem.tif", w, h, 3, "uint8", "EPSG:32651", (1.0, 0.0, 200000.0, 0.0, -1.0, 3350000.0))
    r, c = data.draw(st.integers(0, h - 2)), data.draw(st.integers(0, w - 2))
    win = (r, c, data.draw(st.integers(1, h - r)), data.draw(st.integers(1, w - c)))
    r2, c2, h2, w2 = geojson_to_pixel_window(pixel_window_to_geojson(win, info), info)
    assert r2 <= win[0] and c2 <= win[1] and r2 + h2 >= win[0] + win[2] and c2 + w2 >= win[1] + win[3]
    assert win[0] - r2 <= 1 and win[1] - c2 <= 1 and (r2 + h2) - (win[0] + win[2]) <= 1 and (c2 + w2) - (win[1] + win[3]) <= 1


def test_pixel_convention_is_lat_minus_row_lng_col():
    info = _pix_info(600, 400)
    assert pixel_bounds(info) == ((-400.0, 0.0), (0.0, 600.0))
    lat, lng = pixel_to_latlng([10], [20], info)
    assert (lat[0], lng[0]) == (-10.0, 20.0)
    assert window_bounds((10, 20, 30, 40), info) == ((-40.0, 20.0), (-10.0, 60.0))
    # A rectangle drawn by Leaflet on CRS.Simple, as st_folium returns it ([lng, lat] = [col, -row]).
    drawn = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
        [[180, -290], [180, -110], [380, -110], [380, -290], [180, -290]]]}}
    assert geojson_to_pixel_window(drawn, info) == (110, 180, 180, 200)
    # Fractional corners: every touched pixel is included.
    drawn["geometry"]["coordinates"] = [[[0.5, -0.5], [0.5, -2.2], [3.1, -2.2], [3.1, -0.5], [0.5, -0.5]]]
    assert geojson_to_pixel_window(drawn, info) == (0, 0, 3, 4)


def test_regions_are_clipped_or_rejected():
    info = _merc_info(500, 300)
    lat, lng = pixel_to_latlng([-50, 100], [-80, 200], info)  # rows -50..100, cols -80..200
    part = {"type": "Polygon", "coordinates": [[[lng[0], lat[0]], [lng[0], lat[1]], [lng[1], lat[1]], [lng[1], lat[0]], [lng[0], lat[0]]]]}
    assert geojson_to_pixel_window(part, info) == (0, 0, 100, 200)
    outside = pixel_window_to_geojson((400, 10, 50, 50), _merc_info(500, 1000))
    with pytest.raises(RegionError, match="outside"):
        geojson_to_pixel_window(outside, info)
    with pytest.raises(RegionError, match="capped"):
        geojson_to_pixel_window(pixel_window_to_geojson((0, 0, 300, 500), info), info, max_side=256)
    with pytest.raises(RegionError, match="rectangle or polygon"):
        geojson_to_pixel_window({"type": "Point", "coordinates": [120.15, 30.25]}, info)
    with pytest.raises(RegionError):
        geojson_to_pixel_window({"type": "Feature", "geometry": None}, info)
    with pytest.raises(RegionError, match="outside"):
        geojson_to_pixel_window(pixel_window_to_geojson((0, 700, 10, 10), _pix_info(800, 800)), _pix_info(600, 400))


def test_scene_bounds_latlon_needs_crs():
    with pytest.raises(BadInputError, match="no CRS"):
        scene_bounds_latlon(_pix_info(10, 10))


# ---------------------------------------------------------------------------------------------------- pyramids


def _write_merc_tif(path: Path, img: np.ndarray, res: float = 1.0) -> None:
    _write_tif(path, img, "EPSG:3857", (res, 0.0, HZ_X, 0.0, -res, HZ_Y))


def _write_tif(path: Path, img: np.ndarray, crs: str, transform: tuple) -> None:
    import rasterio
    from affine import Affine

    h, w = img.shape[:2]
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype=str(img.dtype), crs=crs,
                       transform=Affine(*transform)) as ds:
        ds.write(np.transpose(img, (2, 0, 1)))


def _tiles(out: Path, z: int) -> dict[tuple[int, int], np.ndarray]:
    res = {}
    for f in (out / str(z)).glob("*/*.png"):
        with Image.open(f) as im:
            res[(int(f.parent.name), int(f.stem))] = np.asarray(im.convert("RGBA"))
    return res


def test_georef_pyramid_matches_scene_bounds(tmp_path):
    w, h = 300, 200
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 30, 30)
    img[:, w // 2 :] = (30, 30, 200)
    src = tmp_path / "hz.tif"
    _write_merc_tif(src, img)
    info = raster_info(src)
    (s, west), (n, east) = scene_bounds_latlon(info)
    assert 120.149 < west < 120.151 and 30.249 < n < 30.251 and s < n and west < east

    fractions: list[float] = []
    out = tmp_path / "static" / "tiles" / "k" / "hz"
    pyr = build_pyramid(src, out, static_root=tmp_path / "static", progress=fractions.append)
    assert pyr.crs_kind == GEOREF and pyr.max_zoom == 18  # 1 m/px -> first zoom finer than 1 m: z18 (0.6 m)
    assert pyr.min_zoom <= 17 and pyr.tile_count > 0
    assert pyr.url_template.startswith("/app/static/tiles/k/hz/{z}/{x}/{y}.png?v=")
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)

    # Union of non-transparent pixels of the max-zoom tiles == the scene rectangle (within one tile pixel).
    z = pyr.max_zoom
    size = 2 * MERC_HALF / 2**z
    px = size / 256
    xs_min, xs_max, ys_min, ys_max, opaque = [], [], [], [], 0
    for (x, y), t in _tiles(out, z).items():
        a = t[..., 3]
        if not a.any():
            continue
        rr, cc = np.nonzero(a)
        xs_min.append(-MERC_HALF + x * size + cc.min() * px)
        xs_max.append(-MERC_HALF + x * size + (cc.max() + 1) * px)
        ys_max.append(MERC_HALF - y * size - rr.min() * px)
        ys_min.append(MERC_HALF - y * size - (rr.max() + 1) * px)
        opaque += int((a == 255).sum())
    assert abs(min(xs_min) - HZ_X) <= px and abs(max(xs_max) - (HZ_X + w)) <= px
    assert abs(max(ys_max) - HZ_Y) <= px and abs(min(ys_min) - (HZ_Y - h)) <= px
    assert abs(opaque * px * px - w * h) / (w * h) < 0.02
    # Colours survive: the tile pixel over scene pixel (row 100, col 50) is red, over col 250 blue.
    for col, colour in ((50, (200, 30, 30)), (250, (30, 30, 200))):
        mx, my = HZ_X + col + 0.5, HZ_Y - 100.5
        x, y = int((mx + MERC_HALF) // size), int((MERC_HALF - my) // size)
        t = _tiles(out, z)[(x, y)]
        i, j = int((MERC_HALF - my - y * size) / px), int((mx + MERC_HALF - x * size) / px)
        assert tuple(t[i, j]) == (*colour, 255)
    # Every zoom in the range has tiles; the min zoom holds the whole scene in at most 2x2 tiles.
    for zz in range(pyr.min_zoom, pyr.max_zoom + 1):
        assert _tiles(out, zz), zz
    assert len(_tiles(out, pyr.min_zoom)) <= 4

    # Idempotent: no tile is rewritten, same info; a changed source rebuilds.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    fractions.clear()
    again = build_pyramid(src, out, static_root=tmp_path / "static", progress=fractions.append)
    assert again == pyr and fractions == [1.0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes
    _write_merc_tif(src, img[:100, :100])
    rebuilt = build_pyramid(src, out, static_root=tmp_path / "static")
    assert rebuilt.version != pyr.version and rebuilt.width == 100


def test_utm_uint16_pyramid_covers_the_scene(tmp_path):
    """A UTM (EPSG:32651) 16-bit scene is reprojected per tile; its opaque area equals its Mercator footprint."""
    w = h = 200
    img = (np.arange(w * h * 3, dtype=np.uint16).reshape(h, w, 3) * 7 % 4000).astype(np.uint16)
    info_t = (1.0, 0.0, 355000.0, 0.0, -1.0, 3445000.0)  # near Shanghai, 1 m/px
    src = tmp_path / "utm.tif"
    _write_tif(src, img, "EPSG:32651", info_t)
    info = raster_info(src)
    pyr = build_pyramid(src, tmp_path / "static" / "tiles" / "u" / "s", static_root=tmp_path / "static")
    (s, west), (n, e) = pyr.bounds
    assert 121.4 < west < e < 121.6 and 31.0 < s < n < 31.2
    z = pyr.max_zoom
    px = 2 * MERC_HALF / 2**z / 256
    opaque = sum(int((t[..., 3] == 255).sum()) for t in _tiles(Path(pyr.out_dir), z).values())
    # Footprint of the scene in Mercator: the quadrilateral of its corners.
    from rasterio.warp import transform

    lat, lng = pixel_to_latlng([0, 0, h, h], [0, w, w, 0], info)
    mx, my = transform("EPSG:4326", "EPSG:3857", list(lng), list(lat))
    area = 0.5 * abs(sum(mx[i] * my[(i + 1) % 4] - mx[(i + 1) % 4] * my[i] for i in range(4)))
    assert abs(opaque * px * px - area) / area < 0.03
    # 16-bit data is stretched scene-wide to 8 bits (not all one colour).
    t = next(iter(_tiles(Path(pyr.out_dir), z).values()))
    assert len(np.unique(t[t[..., 3] == 255][:, 0])) > 10


def _trend_u16(h: int, w: int, seed: int = 0) -> np.ndarray:
    """H x W x 3 uint16 with a strong left-to-right / top-to-bottom trend plus noise: every 256 px tile has its own
    2-98 % range, far from the scene's, and values above 255 (a plain cast to uint8 would wrap around)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 500 + 40 * xx + 15 * yy
    return (base[..., None] + rng.integers(0, 400, (h, w, 3)) + np.array([0, 700, 1400])).astype(np.uint16)


def _assert_tiles_equal_read_image(src: Path, pyr, origin_tile: tuple[int, int] = (0, 0)) -> int:
    """Every max-zoom tile holds exactly read_image's pixels of the same scene area (opaque there, clear past the
    scene edge). Returns the number of tiles checked."""
    from seghz.data.io import read_image

    z = pyr.max_zoom
    tiles = _tiles(Path(pyr.out_dir), z)
    assert tiles
    for (x, y), t in tiles.items():
        r0, c0 = (y - origin_tile[1]) * 256, (x - origin_tile[0]) * 256
        h, w = min(256, pyr.height - r0), min(256, pyr.width - c0)
        want = read_image(src, window=(r0, c0, h, w))
        np.testing.assert_array_equal(t[:h, :w, :3], want, err_msg=f"tile {z}/{x}/{y}")
        assert (t[:h, :w, 3] == 255).all() and not t[h:, :, 3].any() and not t[:, w:, 3].any()
    return len(tiles)


def test_pixel_tiles_of_16bit_tiff_equal_read_image(tmp_path):
    """Map tiles and read_image share one 16 -> 8 bit conversion (seghz.data.io.to_rgb8) and one scene-wide
    stretch: a tile shows exactly the pixels the model reads for the same area (no wrap-around, no per-tile
    stretch)."""
    import rasterio

    h, w = 520, 600
    img = _trend_u16(h, w)
    src = tmp_path / "u16.tif"  # no CRS: a CRS.Simple pyramid, tile (x, y) at max zoom = pixels [256 y, 256 x]
    with rasterio.open(src, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint16") as ds:
        ds.write(np.transpose(img, (2, 0, 1)))
    pyr = build_pyramid(src, tmp_path / "static" / "tiles" / "u" / "p", static_root=tmp_path / "static")
    assert pyr.crs_kind == PIXEL and pyr.max_zoom == 2
    assert _assert_tiles_equal_read_image(src, pyr) == 3 * 3


def test_georef_tiles_of_16bit_tiff_equal_read_image(tmp_path):
    """The same on a Web-Mercator scene laid exactly on the z17 tile grid (its pixel = a z17 tile pixel, its
    corner = a tile corner), where reprojecting a tile is the identity."""
    z, tx, ty = 17, 109300, 53500  # near Hangzhou
    size = 2 * MERC_HALF / 2**z
    h, w = 300, 520
    img = _trend_u16(h, w, seed=1)
    src = tmp_path / "m16.tif"
    _write_tif(src, img, "EPSG:3857", (size / 256, 0.0, -MERC_HALF + tx * size, 0.0, -size / 256, MERC_HALF - ty * size))
    pyr = build_pyramid(src, tmp_path / "static" / "tiles" / "u" / "g", static_root=tmp_path / "static")
    assert pyr.crs_kind == GEOREF and pyr.max_zoom == z
    assert _assert_tiles_equal_read_image(src, pyr, origin_tile=(tx, ty)) == 3 * 2


@pytest.mark.skipif(not SHANGHAI.is_dir(), reason=f"real sample data folder {SHANGHAI} is absent (not in a fresh clone)")
@pytest.mark.parametrize("name", ["google_5_5", "height_5_5"])
def test_real_shanghai_tiles_equal_read_image(tmp_path, name):
    """Real Shanghai pixels copied into a plain (pixel-space) TIFF: its tiles equal read_image of the same area.
    ``google_*`` is 8-bit RGBA; ``height_*`` is a 16-bit band (nodata 65535), repeated into 3 bands."""
    import rasterio

    with rasterio.open(SHANGHAI / f"{name}.tif") as ds:
        data, nodata = ds.read(), ds.nodata
    if data.shape[0] == 1:
        data = np.repeat(data, 3, axis=0)
    assert name.startswith("google") == (data.dtype == np.uint8)
    src = tmp_path / f"{name}.tif"
    with rasterio.open(src, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=str(data.dtype), nodata=nodata) as ds:
        ds.write(data)
    pyr = build_pyramid(src, tmp_path / "static" / "tiles" / "sh" / name, static_root=tmp_path / "static")
    z = pyr.max_zoom
    from seghz.data.io import read_image

    for (x, y), t in _tiles(Path(pyr.out_dir), z).items():
        want = read_image(src, window=(y * 256, x * 256, 256, 256))
        np.testing.assert_array_equal(t[..., :3], want, err_msg=f"tile {z}/{x}/{y}")
    if name.startswith("google"):  # 8-bit: the tiles are the real file's own pixels
        np.testing.assert_array_equal(read_image(src), read_image(SHANGHAI / f"{name}.tif"))


def test_pyramid_outside_static_root_has_no_url(tmp_path):
    src = tmp_path / "a.png"
    write_rgb(src, np.zeros((10, 10, 3), np.uint8))
    pyr = build_pyramid(src, tmp_path / "out", static_root=tmp_path / "static")
    assert pyr.url_template is None
    with pytest.raises(ValueError, match="no URL"):
        add_tile_layer(make_map(raster_info(src)), pyr)


@pytest.mark.parametrize(
    "w,h,counts",
    [
        (256, 256, {0: 1}),
        (100, 50, {0: 1}),
        (1000, 600, {2: 12, 1: 4, 0: 1}),
        (257, 10, {1: 2, 0: 1}),
        (1500, 3000, {4: 6 * 12, 3: 3 * 6, 2: 2 * 3, 1: 1 * 2, 0: 1}),
    ],
)
def test_pixel_pyramid_tile_counts(tmp_path, w, h, counts):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    src = tmp_path / "img.png"
    write_rgb(src, img)
    pyr = build_pyramid(src, tmp_path / "static" / "tiles" / "k" / "s", static_root=tmp_path / "static")
    assert pyr.crs_kind == PIXEL and pyr.min_zoom == 0 and pyr.max_zoom == max(counts)
    assert pyr.bounds == ((-float(h), 0.0), (0.0, float(w)))
    out = Path(pyr.out_dir)
    assert {z: len(_tiles(out, z)) for z in counts} == counts
    assert pyr.tile_count == sum(counts.values())
    N = pyr.max_zoom
    # Native zoom: tile (x, y) holds pixels rows y*256.., cols x*256..; the last tile is partly transparent.
    tiles = _tiles(out, N)
    x, y = (w - 1) // 256, (h - 1) // 256
    t = tiles[(x, y)]
    vh, vw = h - y * 256, w - x * 256
    assert (t[:vh, :vw, 3] == 255).all() and not t[vh:, :, 3].any() and not t[:, vw:, 3].any()
    np.testing.assert_array_equal(t[:vh, :vw, :3], img[y * 256 :, x * 256 :])
    # Zoom 0: the whole image at scale 2**-N.
    t0 = _tiles(out, 0)[(0, 0)]
    s = 2**N
    assert abs(int((t0[..., 3] > 0).sum()) - math.ceil(w / s) * math.ceil(h / s)) <= 0
    opts = pyr.leaflet_options()
    assert opts["zoom_offset"] == N and opts["max_native_zoom"] == 0 and opts["min_native_zoom"] == -N


def test_bad_sources_raise_bad_input(tmp_path):
    p = tmp_path / "broken.tif"
    p.write_bytes(b"not a tiff")
    with pytest.raises(BadInputError):
        build_pyramid(p, tmp_path / "out")
    with pytest.raises(BadInputError):
        build_pyramid(tmp_path / "missing.png", tmp_path / "out")


def test_tile_dir_is_safe(tmp_path):
    d = tile_dir("my key/..", "scene 1.tif", tmp_path)
    assert d.parent.parent == tmp_path / "tiles" and ".." not in d.parts and " " not in str(d.relative_to(tmp_path))


# ---------------------------------------------------------------------------------------------------- overlays


def test_rgba_overlay_png_colours_and_transparency():
    scheme = get_scheme(scheme_names()[0])
    mask = np.array([[0, 1], [255, scheme.num_classes - 1]], np.uint8)
    png = rgba_overlay_png(mask, scheme, opacity=0.5)
    with Image.open(io.BytesIO(png)) as im:
        rgba = np.asarray(im.convert("RGBA"))
    assert tuple(rgba[0, 0]) == (*scheme.colors[0], 128)
    assert tuple(rgba[0, 1]) == (*scheme.colors[1], 128)
    assert rgba[1, 0, 3] == 0
    with pytest.raises(ValueError):
        rgba_overlay_png(mask, scheme, opacity=1.5)


def test_region_overlay_bounds():
    scheme = get_scheme(scheme_names()[0])
    mask = np.zeros((64, 32), np.uint8)
    pix = region_overlay(mask, (10, 20, 64, 32), _pix_info(200, 200), scheme)
    assert pix.bounds == ((-74.0, 20.0), (-10.0, 52.0)) and pix.data_url.startswith("data:image/png;base64,")
    merc = region_overlay(mask, (10, 20, 64, 32), _merc_info(200, 200), scheme)
    assert merc.bounds == window_bounds((10, 20, 64, 32), _merc_info(200, 200))
    # UTM scene: resampled onto a Web-Mercator grid whose bounds contain the window's outline.
    utm = RasterInfo("u.tif", 500, 500, 3, "uint8", "EPSG:32651", (1.0, 0.0, 200000.0, 0.0, -1.0, 3350000.0))
    ov = region_overlay(mask, (10, 20, 64, 32), utm, scheme)
    (s, w), (n, e) = ov.bounds
    (s0, w0), (n0, e0) = window_bounds((10, 20, 64, 32), utm)
    assert s <= s0 + 1e-9 and w <= w0 + 1e-9 and n >= n0 - 1e-9 and e >= e0 - 1e-9
    assert (n - s) < 2 * (n0 - s0)
    with Image.open(io.BytesIO(ov.png)) as im:
        a = np.asarray(im.convert("RGBA"))[..., 3]
    assert a.any() and not a.all()  # the rotated window does not fill the Mercator-aligned box
    with pytest.raises(ValueError, match="does not match"):
        region_overlay(mask, (0, 0, 10, 10), _pix_info(100, 100), scheme)


# ---------------------------------------------------------------------------------------------------- maps


def _asset_html(m) -> str:
    return m.get_root().render()


def test_make_map_uses_vendored_leaflet():
    assert local_leaflet_assets() is not None, "static/vendor is committed with the repository"
    for info in (_pix_info(600, 400), _merc_info(600, 400)):
        m = make_map(info, draw=True)
        js, css = asset_urls(m)
        assert js == ["/app/static/vendor/leaflet/leaflet.js", "/app/static/vendor/leaflet-draw/leaflet.draw.js"]
        assert css == ["/app/static/vendor/leaflet/leaflet.css", "/app/static/vendor/leaflet-draw/leaflet.draw.css"]
        assert external_asset_urls(m) == []
        html = _asset_html(m)
        assert '<script src="/app/static/vendor/leaflet/leaflet.js">' in html
        assert not any(h in html for h in CDN_HOSTS), [h for h in CDN_HOSTS if h in html]
        assert "L.Control.Draw" in html
        assert ('L.CRS.Simple' in html) == (info.crs is None)


def test_make_map_falls_back_to_cdn_without_vendored_files(tmp_path):
    import folium

    m = make_map(_pix_info(100, 100), draw=True, static_root=tmp_path)
    html = _asset_html(m)
    assert "/app/static/vendor" not in html
    assert "cdn.jsdelivr.net/npm/leaflet@" in html and "leaflet.draw" in html
    assert set(external_asset_urls(m)) >= {u for _, u in folium.Map.default_js}
    with pytest.raises(FileNotFoundError):
        make_map(_pix_info(100, 100), assets="local", static_root=tmp_path)
    # The class-level folium defaults are untouched by local maps.
    make_map(_pix_info(100, 100), draw=True)
    assert all(u.startswith("https://") for _, u in folium.Map.default_js)


def test_url_prefix_and_layers(tmp_path):
    src = tmp_path / "img.png"
    write_rgb(src, np.zeros((300, 700, 3), np.uint8))
    info = raster_info(src)
    pyr = build_pyramid(src, tile_dir("k", "s", tmp_path / "static"), static_root=tmp_path / "static", url_prefix="/base/app/static")
    m = make_map(info, draw=True, url_prefix="/base/app/static")
    add_tile_layer(m, pyr)
    add_region_overlay(m, region_overlay(np.zeros((5, 5), np.uint8), (0, 0, 5, 5), info, get_scheme(scheme_names()[0])))
    html = _asset_html(m)
    assert "/base/app/static/vendor/leaflet/leaflet.js" in html
    assert '"/base/app/static/tiles/k/s/{z}/{x}/{y}.png?v=' in html
    assert '"zoomOffset": 2' in html and '"maxNativeZoom": 0' in html and '"minNativeZoom": -2' in html
    assert "data:image/png;base64," in html


def test_geo_package_does_not_import_streamlit():
    code = "import sys, seghz.geo, seghz.geo.webmap, seghz.geo.tiles; assert 'streamlit' not in sys.modules, 'streamlit imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ---------------------------------------------------------------------------------------------------- real data


@pytest.mark.skipif(not SHANGHAI.is_dir(), reason=f"real sample data folder {SHANGHAI} is absent (not in a fresh clone)")
def test_shanghai_scene_bounds_and_pyramid(tmp_path):
    info = raster_info(SHANGHAI / "google_5_5.tif")
    assert info.georeferenced and info.crs == "EPSG:3857"
    (s, w), (n, e) = scene_bounds_latlon(info)
    assert 121.48 <= w < e <= 121.52 and 31.10 <= s < n <= 31.14
    pyr = build_pyramid(info.path, tmp_path / "static" / "tiles" / "sh" / "5_5", static_root=tmp_path / "static")
    assert pyr.max_zoom == 18 and pyr.tile_count > 0
    assert json.loads((Path(pyr.out_dir) / "pyramid.json").read_text())["pyramid"]["max_zoom"] == 18
    # A region drawn in the middle of the scene maps back to the same pixels.
    win = (100, 150, 200, 250)
    assert geojson_to_pixel_window(pixel_window_to_geojson(win, info), info) == win
