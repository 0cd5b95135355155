"""The basemap registry (seghz.geo.basemaps): entries, key handling (never shown), folium layers, GCJ-02 shift."""
from __future__ import annotations

import math

import folium
import pytest

from seghz.errors import BadInputError
from seghz.geo import basemaps as B
from seghz.geo import datum as D
from seghz.geo.webmap import make_map

KEY = "abcdef0123456789secretKEY9876"
HZ_VIEW = ((30.2, 120.1), (30.3, 120.2))  # ~10 km around West Lake, Hangzhou


def test_registry_entries():
    assert next(iter(B.BASEMAPS)) == B.OFFLINE  # the default: works without internet
    off = B.BASEMAPS[B.OFFLINE]
    assert not off.online and "Offline" in off.label
    for key in ("esri", "osm", "tianditu", "gaode"):
        b = B.get_basemap(key)
        assert b.online and b.attribution and 15 <= b.max_zoom <= 21
        assert all(t in b.url for t in ("{z}", "{x}", "{y}")) and b.url.startswith("https://")
        assert b.datum == (B.GCJ02 if key == "gaode" else B.WGS84)
    assert "{s}" not in B.BASEMAPS["esri"].url and B.BASEMAPS["tianditu"].subdomains
    with pytest.raises(BadInputError, match="unknown basemap"):
        B.get_basemap("bing")


def test_tianditu_needs_key_and_never_shows_it():
    choices = {c.basemap.key: c for c in B.basemap_choices(env={})}
    assert all(choices[k].available for k in ("offline", "esri", "osm", "gaode"))
    td = choices["tianditu"]
    assert not td.available and B.TIANDITU_ENV in td.hint and "(unavailable)" in td.label
    with pytest.raises(BadInputError, match=B.TIANDITU_ENV):
        B.tile_url("tianditu", env={})

    env = {B.TIANDITU_ENV: KEY}
    td = {c.basemap.key: c for c in B.basemap_choices(env=env)}["tianditu"]
    assert td.available and KEY not in td.hint and KEY not in td.label and td.key_display == "****9876"
    url = B.tile_url("tianditu", env=env)
    assert f"tk={KEY}" in url  # Leaflet needs it...
    shown = B.display_url("tianditu", env=env)
    assert KEY not in shown and "tk=***" in shown  # ...people never see it
    assert KEY not in B.display_url("tianditu", env={})


def test_add_basemap_to_folium_map():
    m = folium.Map(tiles=None)
    assert B.add_basemap(m, "offline") is None
    layer = B.add_basemap(m, "gaode")
    assert layer.options["max_native_zoom"] == 18 and layer.options["subdomains"] == "1234"
    html = m.get_root().render()
    assert "autonavi.com" in html and "AutoNavi" in html
    # an online basemap adds tiles, not scripts: the offline Leaflet assets of make_map are untouched
    m2 = make_map(kind="georef", bounds=HZ_VIEW)
    before = (list(m2.default_js), list(m2.default_css))
    B.add_basemap(m2, "esri")
    assert (list(m2.default_js), list(m2.default_css)) == before


def _ground(lat, dlat, dlon):
    return math.hypot(math.radians(dlon) * 6378137.0 * math.cos(math.radians(lat)), math.radians(dlat) * 6378137.0)


def test_gcj_shift_near_hangzhou_matches_datum():
    s = B.gcj_view_shift(HZ_VIEW)
    glon, glat = D.wgs84_to_gcj02(120.15, 30.25)
    assert s.dlon == pytest.approx(float(glon) - 120.15, abs=1e-12)
    assert s.dlat == pytest.approx(float(glat) - 30.25, abs=1e-12)
    # ~0.5 km (east and south) near Hangzhou: WGS-84 layers would be that far off over Gaode tiles
    assert 400 < s.metres < 650 and s.east_m > 0 and s.north_m < 0
    assert s.metres == pytest.approx(_ground(30.25, s.dlat, s.dlon), rel=1e-6)
    # one constant shift is good to tens of metres over a city view, sub-metre over a street view
    assert 1.0 < s.residual_m < 40.0
    small = B.gcj_view_shift(((30.249, 120.149), (30.251, 120.151)))
    assert small.residual_m < 1.0
    assert "521 m" in s.describe() or f"{s.metres:.0f} m" in s.describe()
    # shifted bounds move by the centre offset
    (s0, w0), (n0, e0) = B.shift_bounds(HZ_VIEW, s)
    assert (s0 - 30.2, w0 - 120.1, n0 - 30.3, e0 - 120.2) == pytest.approx((s.dlat, s.dlon) * 2)
    # outside China GCJ-02 = WGS-84
    paris = B.gcj_view_shift(((48.8, 2.3), (48.9, 2.4)))
    assert paris.metres == 0.0 and "no shift" in paris.describe()
    with pytest.raises(BadInputError):
        B.gcj_view_shift(((31.0, 120.0), (30.0, 121.0)))


def test_fetch_sources_leave_out_osm_and_gaode_and_need_the_tianditu_key():
    from seghz.geo.basemaps import fetch_sources

    without = fetch_sources({})
    assert "osm" not in without and "gaode" not in without and "tianditu" not in without
    assert {"esri", "custom", "baidu"} <= set(without) and without["baidu"].baidu and without["custom"].custom
    with_key = fetch_sources({"SEGHZ_TIANDITU_KEY": "abc"})
    assert with_key["tianditu"].key_env == "SEGHZ_TIANDITU_KEY" and "{key}" in with_key["tianditu"].url


def test_fetch_bbox_default_is_the_drawn_region_or_the_scene():
    from seghz.data.io import RasterInfo
    from seghz.geo.basemaps import fetch_bbox_default
    from seghz.geo.fetch import parse_bbox

    info = RasterInfo(path="x.tif", width=100, height=100, count=3, dtype="uint8", crs="EPSG:4326",
                      transform=(0.001, 0.0, 120.1, 0.0, -0.001, 30.3))
    region = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[120.12, 30.25], [120.15, 30.25], [120.15, 30.28], [120.12, 30.28], [120.12, 30.25]]]}}
    assert fetch_bbox_default(region, info) == pytest.approx((120.12, 30.25, 120.15, 30.28))
    assert fetch_bbox_default(None, info) == pytest.approx((120.1, 30.2, 120.2, 30.3), abs=1e-6)
    assert fetch_bbox_default(region, RasterInfo(path="x.png", width=5, height=5, count=3, dtype="uint8")) is None
    assert parse_bbox(" 120.1, 30.2,120.2 ,30.3") == (120.1, 30.2, 120.2, 30.3)
    with pytest.raises(ValueError, match="four numbers"):
        parse_bbox("120.1, 30.2, east")
