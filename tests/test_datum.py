"""WGS-84 <-> GCJ-02 <-> BD-09, Baidu Mercator and Baidu tile numbering (seghz.geo.datum)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.errors import BadInputError
from seghz.geo import datum as D

HZ_LON = st.floats(119.5, 120.8, allow_nan=False)
HZ_LAT = st.floats(29.8, 30.7, allow_nan=False)


def ground_m(lon0, lat0, lon1, lat1) -> float:
    """Small-distance ground length in metres (equirectangular, fine below a few km)."""
    r = 6371008.8
    dx = math.radians(float(lon1) - float(lon0)) * math.cos(math.radians(float(lat0))) * r
    dy = math.radians(float(lat1) - float(lat0)) * r
    return math.hypot(dx, dy)


@settings(max_examples=200, deadline=None)
@given(HZ_LON, HZ_LAT)
def test_wgs_bd09_round_trip_hangzhou(lon, lat):
    blon, blat = D.wgs84_to_bd09(lon, lat)
    wlon, wlat = D.bd09_to_wgs84(blon, blat)
    assert ground_m(lon, lat, wlon, wlat) < 0.1
    assert abs(float(wlon) - lon) < 1e-9 and abs(float(wlat) - lat) < 1e-9


@settings(max_examples=200, deadline=None)
@given(HZ_LON, HZ_LAT)
def test_wgs_gcj_round_trip_hangzhou(lon, lat):
    glon, glat = D.wgs84_to_gcj02(lon, lat)
    wlon, wlat = D.gcj02_to_wgs84(glon, glat)
    assert ground_m(lon, lat, wlon, wlat) < 0.1
    assert abs(float(wlon) - lon) < 1e-9 and abs(float(wlat) - lat) < 1e-9


@settings(max_examples=200, deadline=None)
@given(HZ_LON, HZ_LAT)
def test_wgs_bd09mc_round_trip_hangzhou(lon, lat):
    mx, my = D.wgs84_to_bd09mc(lon, lat)
    wlon, wlat = D.bd09mc_to_wgs84(mx, my)
    assert ground_m(lon, lat, wlon, wlat) < 0.1


@settings(max_examples=100, deadline=None)
@given(st.floats(73.5, 135.0), st.floats(3.0, 53.5))
def test_round_trip_all_china(lon, lat):
    wlon, wlat = D.bd09_to_wgs84(*D.wgs84_to_bd09(lon, lat))
    assert abs(float(wlon) - lon) < 1e-9 and abs(float(wlat) - lat) < 1e-9


def test_vectorised_and_shapes():
    lon = np.linspace(119.5, 120.8, 12).reshape(3, 4)
    lat = np.linspace(29.8, 30.7, 12).reshape(3, 4)
    blon, blat = D.wgs84_to_bd09(lon, lat)
    assert blon.shape == (3, 4) and blat.shape == (3, 4)
    wlon, wlat = D.bd09_to_wgs84(blon, blat)
    assert np.abs(wlon - lon).max() < 1e-9 and np.abs(wlat - lat).max() < 1e-9
    # element-wise equals scalar calls
    b0 = D.wgs84_to_bd09(lon[1, 2], lat[1, 2])
    assert float(b0[0]) == pytest.approx(blon[1, 2], abs=1e-12)


def test_offsets_in_hangzhou_have_the_known_magnitude():
    # West Lake area. GCJ-02 is shifted a few hundred metres from WGS-84 in Hangzhou (the well-known offset of
    # Chinese web maps, 100..700 m across eastern China); BD-09 adds roughly another 0.6..0.8 km to the north-east.
    lon, lat = 120.15, 30.25
    glon, glat = D.wgs84_to_gcj02(lon, lat)
    blon, blat = D.wgs84_to_bd09(lon, lat)
    d_gcj = ground_m(lon, lat, glon, glat)
    d_bd = ground_m(lon, lat, blon, blat)
    assert 200.0 < d_gcj < 800.0
    assert 700.0 < d_bd < 1600.0
    # GCJ-02 shifts Hangzhou east and south; BD-09 lies north-east of GCJ-02.
    assert glon > lon and glat < lat
    assert blon > glon and blat > glat


def test_outside_china_gcj_is_wgs():
    for lon, lat in [(2.35, 48.85), (-74.0, 40.7), (139.7, 35.7), (151.2, -33.9)]:
        glon, glat = D.wgs84_to_gcj02(lon, lat)
        assert float(glon) == lon and float(glat) == lat
        wlon, wlat = D.gcj02_to_wgs84(lon, lat)
        assert float(wlon) == lon and float(wlat) == lat
    assert not D.in_china(139.7, 35.7) and D.in_china(120.2, 30.3)


def test_bd09mc_inverse_exact_and_band_edges():
    lat = np.concatenate([np.linspace(29.99, 30.01, 101), np.linspace(14.9, 15.1, 11), np.linspace(-40, 55, 50)])
    lon = np.full_like(lat, 120.0)
    mx, my = D.bd09_to_bd09mc(lon, lat)
    rlon, rlat = D.bd09mc_to_bd09(mx, my)
    assert np.abs(rlat - lat).max() < 1e-9 and np.abs(rlon - lon).max() < 1e-9
    # a target inside the few-centimetre gap between Baidu's 15..30 and 30..45 bands still resolves (to the edge)
    _, glat = D.bd09mc_to_bd09(13e6, 3481989.84)
    assert abs(float(glat) - 30.0) < 1e-6


def test_bd09mc_known_scale():
    # the x polynomial is linear: ~111320.70 BD09MC units per degree of longitude
    x1, _ = D.bd09_to_bd09mc(121.0, 30.0)
    x0, _ = D.bd09_to_bd09mc(120.0, 30.0)
    assert float(x1 - x0) == pytest.approx(111320.702, abs=0.01)
    mx, my = D.bd09_to_bd09mc(0.0, 0.0)
    assert abs(float(mx)) < 1 and abs(float(my)) < 1


def test_seed_tile_ids_hangzhou():
    # The seed's Baidu z16 tile ids around Hangzhou are 13039..13094 x 3431..3446 (see SEED_NOTES §5).
    tx, ty = D.wgs84_to_baidu_tile(120.2, 30.25, 16)
    assert 13030 <= int(tx) <= 13094
    assert 3420 <= int(ty) <= 3450


@settings(max_examples=150, deadline=None)
@given(HZ_LON, HZ_LAT, st.integers(3, 19))
def test_tile_index_bounds_consistency(lon, lat, z):
    mx, my = D.wgs84_to_bd09mc(lon, lat)
    tx, ty = D.bd09mc_to_baidu_tile(mx, my, z)
    w, s, e, n = D.baidu_tile_bounds_mc(int(tx), int(ty), z)
    assert w <= float(mx) < e and s <= float(my) < n
    assert e - w == pytest.approx(256 * 2 ** (18 - z)) and n - s == pytest.approx(256 * 2 ** (18 - z))
    # corners map back to the same tile (south-west) and to the neighbours (north-east)
    assert tuple(int(v) for v in D.bd09mc_to_baidu_tile(w, s, z)) == (int(tx), int(ty))
    assert tuple(int(v) for v in D.bd09mc_to_baidu_tile(e, n, z)) == (int(tx) + 1, int(ty) + 1)
    # y points north: a point further north never has a smaller tile y
    _, ty2 = D.wgs84_to_baidu_tile(lon, lat + 0.01, z)
    assert int(ty2) >= int(ty)


def test_tiles_for_bbox_and_bad_input():
    xs, ys = D.baidu_tiles_for_bbox(120.1, 30.2, 120.2, 30.3, 16)
    assert len(xs) >= 1 and len(ys) >= 1
    tx, ty = D.wgs84_to_baidu_tile(120.15, 30.25, 16)
    assert int(tx) in xs and int(ty) in ys
    with pytest.raises(BadInputError, match="China"):
        D.baidu_tiles_for_bbox(2.0, 48.0, 2.5, 48.5, 16)
    with pytest.raises(BadInputError, match="antimeridian"):
        D.baidu_tiles_for_bbox(179.0, 10.0, -179.0, 11.0, 16)
    with pytest.raises(BadInputError, match="out of range"):
        D.baidu_tiles_for_bbox(120.1, 30.2, 120.2, 30.3, 25)
    with pytest.raises(BadInputError, match="empty"):
        D.check_bbox(120.1, 30.3, 120.2, 30.2)
