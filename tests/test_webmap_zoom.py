"""Every tile layer of the Map page's map is shown as deep as the map zooms.

The scene's tile layer stopped at its native zoom + 3 (``overzoom=3``) while a pixel-space map zoomed to 5:
past map zoom 3 the imagery vanished and only the overlay stayed on a blank background, exactly where an
analyst checks alignment. Leaflet upsamples a layer's finest tiles beyond ``maxNativeZoom`` up to ``maxZoom``.
"""
from __future__ import annotations

import re

import pytest

from seghz.data.io import RasterInfo
from seghz.geo.basemaps import BASEMAPS, GCJ02, add_basemap
from seghz.geo.tiles import GEOREF, MAP_MAX_ZOOM, PIXEL, PyramidInfo
from seghz.geo.webmap import add_tile_layer, make_map


def _pyramid(kind: str, lo: int, hi: int, bounds) -> PyramidInfo:
    return PyramidInfo(min_zoom=lo, max_zoom=hi, url_template="/app/static/tiles/x/{z}/{x}/{y}.png", bounds=bounds,
                       crs_kind=kind, width=1600, height=1200)


PIX_BOUNDS = ((-1200.0, 0.0), (0.0, 1600.0))
GEO_BOUNDS = ((30.2, 120.1), (30.3, 120.2))


@pytest.mark.parametrize("kind,lo,hi,bounds", [
    (PIXEL, 0, 3, PIX_BOUNDS),   # the airport scene: 1600 px wide, native = file zoom 3 = map zoom 0
    (PIXEL, 0, 0, ((-200.0, 0.0), (0.0, 200.0))),
    (GEOREF, 10, 18, GEO_BOUNDS),  # an XYZ (Web-Mercator) scene
    (GEOREF, 3, 21, GEO_BOUNDS),
])
def test_scene_tile_layer_reaches_the_maps_max_zoom(kind, lo, hi, bounds):
    pyr = _pyramid(kind, lo, hi, bounds)
    m = make_map(kind=kind, bounds=bounds, assets="cdn")
    layer = add_tile_layer(m, pyr)
    assert m.options["max_zoom"] == MAP_MAX_ZOOM[kind]
    assert layer.options["max_zoom"] == m.options["max_zoom"]
    assert pyr.leaflet_options()["max_zoom"] == m.options["max_zoom"]
    # native tiles stay the finest level; Leaflet scales them up from there
    assert layer.options["max_native_zoom"] == hi - (hi if kind == PIXEL else 0) < layer.options["max_zoom"]
    # ... and that is what the browser gets
    html = m.get_root().render()
    z = MAP_MAX_ZOOM[kind]
    assert re.search(rf'"maxZoom": {z}\b', html)
    assert f'"maxNativeZoom": {layer.options["max_native_zoom"]}' in html
    assert not re.search(rf'"maxZoom": (?!{z}\b)-?\d+', html), "a layer stops short of the map"


def test_map_of_a_raster_info_uses_the_shared_max_zoom():
    pix = RasterInfo("x", 1600, 1200, 3, "uint8", None, None)
    geo = RasterInfo("x", 100, 100, 3, "uint8", "EPSG:4326", (0.001, 0.0, 120.1, 0.0, -0.001, 30.3))
    assert make_map(pix, assets="cdn").options["max_zoom"] == MAP_MAX_ZOOM[PIXEL]
    assert make_map(geo, assets="cdn").options["max_zoom"] == MAP_MAX_ZOOM[GEOREF]


def test_basemap_reaches_the_maps_max_zoom():
    online = next(b for b in BASEMAPS.values() if b.url is not None and not b.key_env)
    m = make_map(kind=GEOREF, bounds=GEO_BOUNDS, assets="cdn")
    layer = add_basemap(m, online, max_zoom=MAP_MAX_ZOOM[GEOREF])
    assert layer.options["max_zoom"] == m.options["max_zoom"] and layer.options["max_native_zoom"] == online.max_zoom


def test_map_page_map_has_no_layer_stopping_short(monkeypatch):
    """The Map page's own map (ui.map_layers.show_map): basemap and scene tiles reach the map's max zoom."""
    import types

    import folium

    import ui.map_layers as ml

    got = {}

    def st_folium(m, **kw):
        got["m"] = m
        return {}

    monkeypatch.setattr(ml.streamlit_folium, "st_folium", st_folium)
    geo = RasterInfo("x", 100, 100, 3, "uint8", "EPSG:4326", (0.001, 0.0, 120.1, 0.0, -0.001, 30.3))
    online = next(k for k, b in BASEMAPS.items() if b.url is not None and not b.key_env and b.datum != GCJ02)
    ml.show_map(types.SimpleNamespace(id="s"), geo, _pyramid(GEOREF, 10, 18, GEO_BOUNDS), None, online,
                {online: types.SimpleNamespace(basemap=BASEMAPS[online])}, folium.FeatureGroup())
    m = got["m"]
    tiles = [c for c in m._children.values() if isinstance(c, folium.TileLayer)]
    assert len(tiles) == 2 and all(t.options["max_zoom"] == m.options["max_zoom"] == 23 for t in tiles)


@pytest.mark.parametrize("kind,bounds", [(PIXEL, PIX_BOUNDS), (GEOREF, GEO_BOUNDS)])
def test_maps_snap_to_whole_zooms(kind, bounds):
    """At a fractional zoom Leaflet scales each 256 px tile by a fraction and GPU rendering leaves hairline gaps
    where tiles meet (seen as faint seams; Leaflet#3575). The pixel-space map snapped to quarter zooms."""
    html = make_map(kind=kind, bounds=bounds, assets="cdn").get_root().render()
    snaps = re.findall(r'"zoomSnap": ([0-9.]+)', html)
    deltas = re.findall(r'"zoomDelta": ([0-9.]+)', html)
    assert all(float(v) == 1.0 for v in snaps + deltas), (snaps, deltas)
