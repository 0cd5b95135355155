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


# ---------------------------------------------------------------------------------------------------------------
# Independently published WGS-84 / GCJ-02 / BD-09 coordinate pairs.
#
# Three unrelated open-source projects (different authors and languages) publish test vectors of the same
# transform; each pair below is quoted from the named file, as (lon, lat) -> (lon, lat):
#   [evil]  googollee/eviltransform, go/transform_test.go and python/test.py (`tests`, given there as lat, lng):
#           Shanghai, Shenzhen and Beijing, WGS-84 -> GCJ-02, to ~15 significant digits.
#   [coord] wandergis/coordtransform, test/app.js ("//result" block) for the input (116.404, 39.915), full digits.
#   [gcoord] hujiulong/gcoord, test/unit/crs/WGS84.spec.ts, GCJ02.spec.ts and BD09.spec.ts for (123, 45), given
#           to 7-8 decimals.
# Cross-check: the three sources agree with one another through this module: every forward pair of every source is
# reproduced to <= 1e-7 degrees (the [evil] and [coord] ones to the last digit), so the sources agree on the
# transform to that precision (one wrong constant, e.g. 300 -> 250 in the longitude series, moves a point by
# ~5e-4 degrees and breaks all of them).
# ---------------------------------------------------------------------------------------------------------------

WGS_TO_GCJ = [
    # (source, wgs lon, wgs lat, gcj lon, gcj lat, tolerance in degrees)
    ("evil: shanghai", 121.5272106, 31.1774276, 121.531541859215, 31.17530398364597, 1e-9),
    ("evil: shenzhen", 113.912316, 22.543847, 113.9171764808363, 22.540796131694766, 1e-9),
    ("evil: beijing", 116.377817, 39.911954, 116.38404722455657, 39.91334545536069, 1e-9),
    ("coord: wgs84togcj02", 116.404, 39.915, 116.41024449916938, 39.91640428150164, 1e-9),
    ("gcoord: WGS84.to.GCJ02", 123.0, 45.0, 123.00607541, 45.00197815, 5e-8),
]

GCJ_TO_BD = [
    ("coord: gcj02tobd09", 116.404, 39.915, 116.41036949371029, 39.92133699351021, 1e-9),
    ("gcoord: GCJ02.to.BD09", 123.0, 45.0, 123.00636499, 45.00636899, 5e-8),
]


@pytest.mark.parametrize("src,lon,lat,glon,glat,tol", WGS_TO_GCJ, ids=[r[0] for r in WGS_TO_GCJ])
def test_wgs84_to_gcj02_matches_published_pairs(src, lon, lat, glon, glat, tol):
    got = D.wgs84_to_gcj02(lon, lat)
    assert abs(float(got[0]) - glon) <= tol and abs(float(got[1]) - glat) <= tol, (src, got)
    # the exact inverse takes the published GCJ-02 point back to the published WGS-84 one
    back = D.gcj02_to_wgs84(glon, glat)
    assert abs(float(back[0]) - lon) <= max(tol, 1e-9) and abs(float(back[1]) - lat) <= max(tol, 1e-9), (src, back)


@pytest.mark.parametrize("src,lon,lat,blon,blat,tol", GCJ_TO_BD, ids=[r[0] for r in GCJ_TO_BD])
def test_gcj02_to_bd09_matches_published_pairs(src, lon, lat, blon, blat, tol):
    got = D.gcj02_to_bd09(lon, lat)
    assert abs(float(got[0]) - blon) <= tol and abs(float(got[1]) - blat) <= tol, (src, got)
    back = D.bd09_to_gcj02(blon, blat)
    assert abs(float(back[0]) - lon) <= max(tol, 1e-9) and abs(float(back[1]) - lat) <= max(tol, 1e-9), (src, back)


def test_wgs84_to_bd09_matches_published_pair():
    # [gcoord] WGS84.spec.ts: WGS84 -> BD09 of (123, 45), given to 7 decimals
    got = D.wgs84_to_bd09(123.0, 45.0)
    assert abs(float(got[0]) - 123.0124491) <= 2e-7 and abs(float(got[1]) - 45.0083293) <= 2e-7


@pytest.mark.parametrize("src,fn,lon,lat,want_lon,want_lat", [
    # The sources' inverses are closed-form / few-step approximations (ours is solved to 1e-12 degrees), so they
    # are only expected to agree to ~1e-6 degrees (10 cm): still 500x tighter than a wrong constant.
    ("coord: bd09togcj02", D.bd09_to_gcj02, 116.404, 39.915, 116.39762729119315, 39.90865673957631),
    ("gcoord: GCJ02.to.WGS84", D.gcj02_to_wgs84, 123.0, 45.0, 122.99395597, 44.99804071),
    ("gcoord: BD09.to.GCJ02", D.bd09_to_gcj02, 123.0, 45.0, 122.99363304, 44.99365430),
    ("gcoord: BD09.to.WGS84", D.bd09_to_wgs84, 123.0, 45.0, 122.98762210, 44.99171540),
])
def test_inverses_match_published_approximate_pairs(src, fn, lon, lat, want_lon, want_lat):
    got = fn(lon, lat)
    assert abs(float(got[0]) - want_lon) <= 1e-6 and abs(float(got[1]) - want_lat) <= 1e-6, (src, got)


def test_published_outside_china_points_are_unchanged():
    # [gcoord] WGS84.spec.ts / GCJ02.spec.ts: (183, 45) is "not in China" and passes through unchanged
    assert tuple(float(v) for v in D.wgs84_to_gcj02(183.0, 45.0)) == (183.0, 45.0)
    assert tuple(float(v) for v in D.gcj02_to_wgs84(183.0, 45.0)) == (183.0, 45.0)


# ---------------------------------------------------------------------------------------------------------------
# Properties of the GCJ-02 offset
# ---------------------------------------------------------------------------------------------------------------

# The China rectangle less a 0.1 degree margin (the offset is at most 0.011 degrees, so a point and its image are
# on the same side of the rectangle's edge).
IN_LON = st.floats(D.CHINA_LON[0] + 0.1, D.CHINA_LON[1] - 0.1, allow_nan=False)
IN_LAT = st.floats(D.CHINA_LAT[0] + 0.1, D.CHINA_LAT[1] - 0.1, allow_nan=False)


def _offset_m(lon, lat) -> tuple[float, float]:
    """GCJ-02 minus WGS-84 at a WGS-84 point, in local east/north metres."""
    glon, glat = D.wgs84_to_gcj02(lon, lat)
    r = 6371008.8
    return (math.radians(float(glon) - lon) * math.cos(math.radians(lat)) * r, math.radians(float(glat) - lat) * r)


@settings(max_examples=300, deadline=None)
@given(IN_LON, IN_LAT)
def test_offset_is_bounded_inside_china(lon, lat):
    # the shift is a few metres to ~730 m everywhere in the rectangle (never zero, never kilometres)
    d = math.hypot(*_offset_m(lon, lat))
    assert 1.0 < d < 800.0


@settings(max_examples=300, deadline=None)
@given(IN_LON, IN_LAT, st.floats(-0.02, 0.02), st.floats(-0.02, 0.02))
def test_offset_is_smooth_inside_china(lon, lat, dlon, dlat):
    # moving a point by s metres changes its offset by well under 1 % of s (the series' largest slope is 0.5 %),
    # plus a few centimetres for the sqrt(|lon - 105|) cusp at 105 E: no jumps, no steps
    lon2 = min(max(lon + dlon, D.CHINA_LON[0] + 0.1), D.CHINA_LON[1] - 0.1)
    lat2 = min(max(lat + dlat, D.CHINA_LAT[0] + 0.1), D.CHINA_LAT[1] - 0.1)
    e1, n1 = _offset_m(lon, lat)
    e2, n2 = _offset_m(lon2, lat2)
    s = ground_m(lon, lat, lon2, lat2)
    assert math.hypot(e2 - e1, n2 - n1) <= 0.01 * s + 0.05


OUTSIDE = st.one_of(
    st.tuples(st.floats(-180.0, D.CHINA_LON[0] - 1e-6), st.floats(-90.0, 90.0)),
    st.tuples(st.floats(D.CHINA_LON[1] + 1e-6, 180.0), st.floats(-90.0, 90.0)),
    st.tuples(st.floats(-180.0, 180.0), st.floats(-90.0, D.CHINA_LAT[0] - 1e-6)),
    st.tuples(st.floats(-180.0, 180.0), st.floats(D.CHINA_LAT[1] + 1e-6, 90.0)),
)


@settings(max_examples=300, deadline=None)
@given(OUTSIDE)
def test_gcj02_is_wgs84_outside_china(p):
    lon, lat = p
    assert not D.in_china(lon, lat)
    assert tuple(float(v) for v in D.wgs84_to_gcj02(lon, lat)) == (lon, lat)
    assert tuple(float(v) for v in D.gcj02_to_wgs84(lon, lat)) == (lon, lat)


def test_inverse_near_the_poles_is_identity_even_mixed_with_china_points():
    # The offset series divides by cos(lat): iterating it at a polar point did not converge and raised
    # ArithmeticError for a point that is simply outside China (found by the property test above).
    lon = np.array([0.0, 120.15, -45.0, 10.0])
    lat = np.array([89.875, 30.25, -90.0, 90.0])
    with np.errstate(all="raise"):
        wlon, wlat = D.gcj02_to_wgs84(lon, lat)
        glon, glat = D.wgs84_to_gcj02(lon, lat)
    keep = np.array([True, False, True, True])
    assert np.array_equal(wlon[keep], lon[keep]) and np.array_equal(wlat[keep], lat[keep])
    assert np.array_equal(glon[keep], lon[keep]) and np.array_equal(glat[keep], lat[keep])
    back = D.wgs84_to_gcj02(wlon[1], wlat[1])
    assert abs(float(back[0]) - 120.15) < 1e-9 and abs(float(back[1]) - 30.25) < 1e-9


@settings(max_examples=300, deadline=None)
@given(IN_LON, IN_LAT)
def test_gcj02_to_wgs84_inverts_forward_over_all_china(lon, lat):
    # both directions: WGS -> GCJ -> WGS and GCJ -> WGS -> GCJ, to 1e-9 degrees (0.1 mm)
    w = D.gcj02_to_wgs84(*D.wgs84_to_gcj02(lon, lat))
    assert abs(float(w[0]) - lon) < 1e-9 and abs(float(w[1]) - lat) < 1e-9
    g = D.wgs84_to_gcj02(*D.gcj02_to_wgs84(lon, lat))
    assert abs(float(g[0]) - lon) < 1e-9 and abs(float(g[1]) - lat) < 1e-9


@settings(max_examples=200, deadline=None)
@given(IN_LON, IN_LAT)
def test_bd09_inverts_over_all_china(lon, lat):
    b = D.gcj02_to_bd09(*D.bd09_to_gcj02(lon, lat))
    assert abs(float(b[0]) - lon) < 1e-9 and abs(float(b[1]) - lat) < 1e-9
