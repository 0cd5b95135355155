"""folium maps for the Map page that work with no internet.

How the page gets Leaflet
-------------------------
folium's ``Map`` asks for Leaflet 1.9.3, jQuery, Bootstrap 5 (JS + CSS), Bootstrap-3 glyphicons, Font Awesome,
Leaflet.awesome-markers and ``leaflet.awesome.rotate.css`` from five CDNs, and ``folium.plugins.Draw`` asks for
Leaflet.draw 1.0.2 from cdnjs. streamlit-folium 0.27.4 (``st_folium``) does **not** bundle Leaflet: its frontend
bundle (``streamlit_folium/frontend/build/static/js/main.*.js``) holds only React, the Streamlit component lib
and its own glue. It walks the map's elements, collects every ``default_js``/``default_css`` URL and, inside its
component iframe, appends one ``<script>`` per JS URL *sequentially* (each must load before the next; one
failing script rejects the chain and the map is never created -- offline, a single CDN URL blanks the map) and
one ``<link>`` per CSS URL. The folium header's own ``<script src>``/``<link>`` tags are stripped and the rest of
the header is added with ``innerHTML`` (inline ``<style>`` works, inline ``<script>`` does not run).

:func:`make_map` therefore sets, on the map instance, ``default_js``/``default_css`` to the vendored files:

* ``/app/static/vendor/leaflet/leaflet.js`` and ``/app/static/vendor/leaflet/leaflet.css`` (Leaflet 1.9.4), and
* with ``draw=True``, ``/app/static/vendor/leaflet-draw/leaflet.draw.js`` and ``.../leaflet.draw.css``
  (Leaflet.draw 1.0.4),

and drops jQuery, Bootstrap, glyphicons, Font Awesome and awesome-markers: the map, tile/image layers, vector
shapes, default markers, layer control and the Draw plugin do not use them. (Not available without them:
``folium.Icon``/awesome markers, Bootstrap-styled popups, ``Map.keep_in_front`` which calls jQuery.)
Streamlit serves ``<dir of the main script>/static`` at ``/app/static/`` when ``server.enableStaticServing``
is on (``.streamlit/config.toml``), and the component iframe (``/component/streamlit_folium.st_folium/...``)
has the app's origin, so the absolute paths load from the Streamlit server itself. With a
``server.baseUrlPath`` pass ``url_prefix="/<base>/app/static"``. When the vendored files are absent, the
folium/CDN defaults are left untouched (works online only). :func:`external_asset_urls` lists what a map would
still fetch from outside.

Map kinds: ``GEOREF`` scenes use the default Web-Mercator map (lat/lon); ``PIXEL`` scenes use
``CRS.Simple`` with ``lat = -row``, ``lng = col`` (see :mod:`seghz.geo.tiles`). No basemap by default (offline).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import branca
import folium
import folium.plugins

from seghz.data.io import RasterInfo
from seghz.geo.tiles import (
    GEOREF,
    MAP_MAX_ZOOM,
    PIXEL,
    LatLngBounds,
    PyramidInfo,
    RegionOverlay,
    crs_kind,
    default_static_root,
    scene_bounds,
)

# The drawn region's outline (Leaflet.draw's rectangle and polygon, and the page's own outline of a kept region):
# a fully transparent fill, so the overlays underneath keep their legend colours (Leaflet.draw's default is a 20 %
# #ff7800 wash that turned Water purple and Buildings/OpenArea the same orange), and a 2 px outline in a mint that is
# in no class palette, nor the error magenta or the predicted window's yellow (tests/test_page_map_loop.py holds it
# there). The fill stays on at opacity 0 so that a click inside the shape still selects it (delete and edit modes),
# as with Leaflet.draw's default.
DRAW_COLOR = "#00ffd0"
DRAW_SHAPE_OPTIONS = {"color": DRAW_COLOR, "weight": 2, "opacity": 1.0, "fill": True, "fillOpacity": 0.0}

VENDOR_FILES = {
    "leaflet_js": "vendor/leaflet/leaflet.js",
    "leaflet_css": "vendor/leaflet/leaflet.css",
    "draw_js": "vendor/leaflet-draw/leaflet.draw.js",
    "draw_css": "vendor/leaflet-draw/leaflet.draw.css",
}
# Files the vendored CSS refers to (checked too, so a half-copied vendor folder counts as absent).
VENDOR_EXTRA = (
    "vendor/leaflet/images/layers.png",
    "vendor/leaflet/images/marker-icon.png",
    "vendor/leaflet-draw/images/spritesheet.svg",
)
DEFAULT_URL_PREFIX = "/app/static"


@dataclass(frozen=True)
class LeafletAssets:
    """URLs of Leaflet and Leaflet.draw as the browser should load them."""

    leaflet_js: str
    leaflet_css: str
    draw_js: str
    draw_css: str
    local: bool = True


def local_leaflet_assets(
    static_root: str | os.PathLike | None = None, url_prefix: str = DEFAULT_URL_PREFIX
) -> LeafletAssets | None:
    """URLs of the vendored Leaflet files under ``static_root`` (default: the project's ``static/``), served at
    ``url_prefix`` (default ``/app/static``), or None when any vendored file is missing."""
    root = Path(static_root) if static_root is not None else default_static_root()
    for rel in (*VENDOR_FILES.values(), *VENDOR_EXTRA):
        if not (root / rel).is_file():
            return None
    pre = url_prefix.rstrip("/")
    return LeafletAssets(**{k: f"{pre}/{v}" for k, v in VENDOR_FILES.items()}, local=True)


def _walk(el):
    yield el
    for child in getattr(el, "_children", {}).values():
        yield from _walk(child)


def asset_urls(m: folium.Map) -> tuple[list[str], list[str]]:
    """(JS URLs, CSS URLs) that streamlit-folium will load for this map, in its order (deduplicated)."""
    js: list[str] = []
    css: list[str] = []
    for el in _walk(m):
        if isinstance(el, branca.colormap.ColorMap):
            js[:0] = ["https://d3js.org/d3.v4.min.js", "https://cdnjs.cloudflare.com/ajax/libs/d3/3.5.5/d3.min.js"]
        js.extend(u for _, u in getattr(el, "default_js", []))
        css.extend(u for _, u in getattr(el, "default_css", []))
    return list(dict.fromkeys(js)), list(dict.fromkeys(css))


def external_asset_urls(m: folium.Map) -> list[str]:
    """JS/CSS URLs of the map that are not served by the app itself (need internet). Empty = works offline."""
    js, css = asset_urls(m)
    return [u for u in js + css if u.startswith(("http://", "https://", "//"))]


def _center(bounds: LatLngBounds) -> list[float]:
    (s, w), (n, e) = bounds
    return [(s + n) / 2.0, (w + e) / 2.0]


def _fit_zoom(bounds: LatLngBounds, viewport_px: int = 600) -> int:
    """Web-Mercator zoom at which ``bounds`` span about ``viewport_px`` screen pixels (the initial view; the
    map then fits the bounds exactly -- a close start avoids fetching tiles of a zoom about to be left)."""
    (s, w), (n, e) = bounds
    half = 20037508.342789244

    def merc_y(lat: float) -> float:
        lat = max(-85.0511287798066, min(85.0511287798066, lat))
        return 6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))

    span = max(abs(e - w) / 360.0 * 2 * half, abs(merc_y(n) - merc_y(s)), 1e-6)
    return int(max(0, min(22, math.floor(math.log2(2 * half * viewport_px / (256 * span))))))


def make_map(
    info: RasterInfo | None = None,
    *,
    kind: Literal["georef", "pixel"] | None = None,
    bounds: LatLngBounds | None = None,
    draw: bool = False,
    basemap: str | None = None,
    assets: Literal["auto", "local", "cdn"] = "auto",
    static_root: str | os.PathLike | None = None,
    url_prefix: str = DEFAULT_URL_PREFIX,
    height: int | str = "100%",
    zoom_start: int | None = None,
) -> folium.Map:
    """A folium Map for a scene, loading Leaflet (and Leaflet.draw) from ``static/vendor`` when present.

    ``info`` (a :class:`RasterInfo`) sets the kind (GEOREF -> Web Mercator, PIXEL -> ``CRS.Simple``, 1 unit =
    1 pixel, ``lat = -row``, ``lng = col``) and the bounds the map fits; without it pass ``kind``/``bounds``.
    ``draw=True`` adds the Leaflet.draw toolbar with rectangle and polygon only (plus edit/delete).
    ``basemap`` (GEOREF only) is a folium tiles name such as ``"OpenStreetMap"``; it needs internet, so the default
    is none. ``assets``: ``"auto"`` uses the vendored files when all exist, else folium's CDN defaults;
    ``"local"`` raises FileNotFoundError when they are missing; ``"cdn"`` always uses folium's defaults.
    """
    if kind is None:
        kind = crs_kind(info) if info is not None else GEOREF
    if kind not in (GEOREF, PIXEL):
        raise ValueError(f"kind must be {GEOREF!r} or {PIXEL!r}, got {kind!r}")
    if bounds is None and info is not None:
        bounds = scene_bounds(info)

    if kind == PIXEL:
        if bounds is None:
            bounds = ((-256.0, 0.0), (0.0, 256.0))
        (s, w), (n, e) = bounds
        side = max(abs(n - s), abs(e - w), 1.0)
        native = max(0, math.ceil(math.log2(side / 256.0)))  # the image fits one 256 px tile at map zoom -native
        m = folium.Map(
            location=_center(bounds), tiles=None, crs="Simple", zoom_start=zoom_start if zoom_start is not None else -native,
            height=height, control_scale=False, zoom_snap=1, zoom_delta=1,
        )  # whole zooms only: at a fractional zoom Leaflet scales each tile and leaves hairline gaps (Leaflet#3575)
        m.options["min_zoom"] = -native - 3
        m.options["max_zoom"] = MAP_MAX_ZOOM[PIXEL]  # tile layers reach it too (PyramidInfo.leaflet_options)
    else:
        m = folium.Map(
            location=_center(bounds) if bounds is not None else None,
            tiles=basemap if basemap else None,
            zoom_start=zoom_start if zoom_start is not None else (_fit_zoom(bounds) if bounds is not None else 2),
            height=height, control_scale=True,
        )
        m.options["max_zoom"] = MAP_MAX_ZOOM[GEOREF]
    if bounds is not None:
        m.fit_bounds([list(bounds[0]), list(bounds[1])])

    if assets not in ("auto", "local", "cdn"):
        raise ValueError(f"assets must be 'auto', 'local' or 'cdn', got {assets!r}")
    local = None if assets == "cdn" else local_leaflet_assets(static_root, url_prefix)
    if assets == "local" and local is None:
        root = Path(static_root) if static_root is not None else default_static_root()
        raise FileNotFoundError(f"vendored Leaflet files missing under {root / 'vendor'}; run scripts/vendor_leaflet.sh")
    if local is not None:
        # Instance attributes: never mutate folium's class-level lists (JSCSSMixin.add_js_link would).
        m.default_js = [("leaflet", local.leaflet_js)]
        m.default_css = [("leaflet_css", local.leaflet_css)]

    if draw:
        d = folium.plugins.Draw(
            export=False,
            position="topleft",
            show_geometry_on_click=False,
            draw_options={
                "polyline": False,
                "circle": False,
                "marker": False,
                "circlemarker": False,
                # showArea off: areas are meaningless in CRS.Simple, and Leaflet.draw 1.0.4's readableArea
                # assigns an undeclared variable.
                "rectangle": {"showArea": False, "shapeOptions": dict(DRAW_SHAPE_OPTIONS)},
                "polygon": {"allowIntersection": False, "showArea": False, "shapeOptions": dict(DRAW_SHAPE_OPTIONS)},
            },
            # edit mode's selected shapes: no fill either (Leaflet.draw's default washes them in 10 % pink)
            edit_options={"poly": {"allowIntersection": False},
                          "edit": {"selectedPathOptions": {**DRAW_SHAPE_OPTIONS, "dashArray": "6, 4",
                                                           "maintainColor": True}}},
        )
        if local is not None:
            d.default_js = [("leaflet_draw_js", local.draw_js)]
            d.default_css = [("leaflet_draw_css", local.draw_css)]
        d.add_to(m)
    return m


def add_tile_layer(
    m: folium.Map, pyramid: PyramidInfo, name: str = "Scene", opacity: float = 1.0
) -> folium.TileLayer:
    """Add a pyramid built by :func:`seghz.geo.tiles.build_pyramid` as a TileLayer (local URLs, fetched only
    inside the scene bounds; PIXEL pyramids are shifted by ``zoomOffset`` so map zoom 0 = native pixels), shown
    (upsampled past its native zoom) as deep as the map zooms."""
    if not pyramid.url_template:
        raise ValueError(
            f"pyramid in {pyramid.out_dir} has no URL: build it under the Streamlit static folder or pass url_template"
        )
    opts = pyramid.leaflet_options()
    layer = folium.TileLayer(
        tiles=pyramid.url_template, attr="SegHZ scene tiles", name=name, overlay=True, control=True, opacity=opacity,
    )
    # Set after construction: folium's TileLayer turns zoom 0 / negative zooms into its defaults ("x or 18").
    layer.options.update(opts)
    layer.add_to(m)
    return layer


def add_region_overlay(m: folium.Map, overlay: RegionOverlay, name: str = "Prediction") -> folium.raster_layers.ImageOverlay:
    """Add a region prediction (from :func:`seghz.geo.tiles.region_overlay`) as an ImageOverlay (PNG data URL,
    opacity already in the PNG's alpha, crisp pixels)."""
    (s, w), (n, e) = overlay.bounds
    layer = folium.raster_layers.ImageOverlay(
        image=overlay.data_url, bounds=[[s, w], [n, e]], name=name, pixelated=True, interactive=False, opacity=1.0,
    )
    layer.add_to(m)
    return layer


def add_outline(m: folium.Map, bounds: LatLngBounds, color: str = "#ffd400", tooltip: str | None = None) -> folium.Rectangle:
    """Draw a rectangle outline (e.g. an existing region's :func:`seghz.geo.tiles.window_bounds`)."""
    (s, w), (n, e) = bounds
    r = folium.Rectangle(bounds=[[s, w], [n, e]], color=color, weight=2, fill=False, tooltip=tooltip)
    r.add_to(m)
    return r
