"""Test-only Streamlit app for tests/browser/test_offline_map_smoke.py -- not part of SegHZ.

The test fixture copies this file into a temporary folder next to a copy of ``static/vendor`` (Streamlit
serves the ``static/`` folder beside the *main script* at ``/app/static``) and runs it with the repository
root as working directory (so ``.streamlit/config.toml`` applies and ``seghz`` imports).

Query parameter ``kind``: ``pixel`` (default; a synthetic PNG on a CRS.Simple map) or ``georef`` (a synthetic
EPSG:3857 GeoTIFF near Hangzhou on the Web-Mercator map). Both get a local tile pyramid and the Draw toolbar;
the last drawn region is echoed as ``DRAWN=<geometry json>`` and ``WINDOW=(row, col, height, width)``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import streamlit as st
from streamlit_folium import st_folium

from seghz.data.io import raster_info, write_rgb
from seghz.errors import RegionError
from seghz.geo.tiles import build_pyramid, geojson_to_pixel_window, tile_dir
from seghz.geo.webmap import add_tile_layer, external_asset_urls, make_map

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"


def _pattern(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (xx * 255 // max(w - 1, 1)).astype(np.uint8)
    img[..., 1] = (yy * 255 // max(h - 1, 1)).astype(np.uint8)
    img[..., 2] = np.where(((yy // 50) + (xx // 50)) % 2 == 0, 200, 60).astype(np.uint8)
    return img


def _scene(kind: str) -> Path:
    if kind == "georef":
        p = HERE / "smoke_georef.tif"
        if not p.exists():
            import rasterio
            from rasterio.transform import from_origin

            img = _pattern(400, 600)
            # 1 m/px in EPSG:3857 with its top-left corner at 120.15 E, 30.25 N (Hangzhou).
            with rasterio.open(
                p, "w", driver="GTiff", width=600, height=400, count=3, dtype="uint8", crs="EPSG:3857",
                transform=from_origin(13375037.0, 3535726.0, 1.0, 1.0),
            ) as ds:
                ds.write(np.transpose(img, (2, 0, 1)))
        return p
    p = HERE / "smoke_pixel.png"
    if not p.exists():
        write_rgb(p, _pattern(400, 600))
    return p


st.set_page_config(page_title="SegHZ map smoke test", layout="wide")
kind = st.query_params.get("kind", "pixel")
scene = _scene(kind)
info = raster_info(scene)
pyr = build_pyramid(scene, tile_dir("smoke", kind, STATIC), static_root=STATIC)
m = make_map(info, draw=True, static_root=STATIC)
add_tile_layer(m, pyr, name="scene")
st.write(f"KIND={kind} TILES={pyr.tile_count} ZOOMS={pyr.min_zoom}..{pyr.max_zoom}")
st.write("EXTERNAL=" + json.dumps(external_asset_urls(m)))
out = st_folium(m, key=f"smoke_{kind}", height=420, width=640, returned_objects=["last_active_drawing", "all_drawings"])
drawing = (out or {}).get("last_active_drawing")
if drawing:
    st.code("DRAWN=" + json.dumps(drawing.get("geometry")), language=None)
    try:
        st.write("WINDOW=%s" % (geojson_to_pixel_window(drawing, info),))
    except RegionError as e:
        st.write(f"REGION_ERROR={e}")
else:
    st.write("NO_DRAWING_YET")
