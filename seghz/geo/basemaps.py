"""Basemaps for the Map page: one registry of the tile sources a scene can be shown over.

Each :class:`Basemap` records its URL template (XYZ, ``y`` from the north, ``{s}`` = one of ``subdomains``), the
attribution text Leaflet must show, the deepest zoom the server has tiles for (``max_zoom``; the map over-zooms
beyond it) and its **datum**:

* ``WGS-84`` -- Esri World Imagery, OpenStreetMap and Tianditu (CGCS2000, within a metre of WGS-84): a
  georeferenced scene lands where it belongs.
* ``GCJ-02`` -- Gaode (AutoNavi) satellite. China's "Mars" datum is WGS-84 plus a non-linear offset of a few
  hundred metres (~0.5 km near Hangzhou, see :mod:`seghz.geo.datum`), so WGS-84 layers look shifted over these
  tiles. :func:`gcj_view_shift` computes the offset at the view centre and how much it varies across the view
  (the residual error left after shifting everything by the centre offset); :func:`shift_bounds` moves an
  overlay's bounds by it.

``offline`` is the default: no online basemap at all, only the workspace's own tile pyramid of the scene
(:func:`seghz.geo.tiles.build_pyramid`), so the app works with no internet.

Tianditu needs a key (free registration at tianditu.gov.cn) taken from the environment variable
``SEGHZ_TIANDITU_KEY``. Without it the option is listed as unavailable with a hint. The key is put only in the
URL handed to Leaflet; every text meant for people goes through :func:`seghz.security.redact_secrets` /
:func:`seghz.security.mask_value`.

No Streamlit here; :func:`add_basemap` needs folium.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from seghz.errors import BadInputError
from seghz.security import mask_value, redact_secrets

WGS84 = "WGS-84"
GCJ02 = "GCJ-02"
TIANDITU_ENV = "SEGHZ_TIANDITU_KEY"
OFFLINE = "offline"
EARTH_R = 6378137.0


@dataclass(frozen=True)
class Basemap:
    key: str
    label: str
    url: str | None  # None: no online tiles (the offline workspace pyramid)
    attribution: str
    max_zoom: int
    datum: str = WGS84
    subdomains: tuple[str, ...] = ()
    key_env: str | None = None  # environment variable holding the API key (URL placeholder {key})
    note: str = ""

    @property
    def online(self) -> bool:
        return self.url is not None


BASEMAPS: dict[str, Basemap] = {
    b.key: b
    for b in (
        Basemap(OFFLINE, "Offline (workspace pyramid)", None, "SegHZ scene tiles", 23,
                note="Only the scene's own tiles, built locally; works without internet."),
        Basemap("esri", "Esri World Imagery",
                "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}",
                "Tiles &copy; Esri &mdash; Source: Esri, Maxar, Earthstar Geographics, and the GIS User Community",
                19, note="Satellite imagery, WGS-84 Web Mercator; needs internet."),
        Basemap("osm", "OpenStreetMap", "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                "&copy; OpenStreetMap contributors", 19, note="Street map, WGS-84; needs internet."),
        Basemap("tianditu", "Tianditu imagery",
                "https://t{s}.tianditu.gov.cn/img_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=img"
                "&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&tk={key}",
                "&copy; Tianditu (National Platform for Common GeoSpatial Information Services)", 18,
                subdomains=tuple("01234567"), key_env=TIANDITU_ENV,
                note="Chinese national imagery, CGCS2000 (= WGS-84 within a metre); needs internet and a key."),
        Basemap("gaode", "Gaode satellite",
                "https://webst0{s}.is.autonavi.com/appmaptile?style=6&x={x}&y={y}&z={z}",
                "&copy; AutoNavi (Gaode)", 18, datum=GCJ02, subdomains=("1", "2", "3", "4"),
                note="Tiles are in GCJ-02: WGS-84 layers appear a few hundred metres off in China; needs internet."),
    )
}


@dataclass(frozen=True)
class BasemapChoice:
    """One picker entry: whether it can be used now and, if not, why."""

    basemap: Basemap
    available: bool
    hint: str = ""
    key_display: str = ""  # masked key (never the key itself)

    @property
    def label(self) -> str:
        return self.basemap.label + ("" if self.available else " (unavailable)")


def _key_for(b: Basemap, env: Mapping[str, str] | None) -> str:
    if b.key_env is None:
        return ""
    env = os.environ if env is None else env
    return (env.get(b.key_env) or "").strip()


def basemap_choices(env: Mapping[str, str] | None = None) -> list[BasemapChoice]:
    """Every basemap with its availability (a key-needing one is unavailable without its environment variable)."""
    out = []
    for b in BASEMAPS.values():
        if b.key_env is None:
            out.append(BasemapChoice(b, True))
            continue
        key = _key_for(b, env)
        if key:
            out.append(BasemapChoice(b, True, f"key from ${b.key_env}: {mask_value(key)}", mask_value(key)))
        else:
            out.append(BasemapChoice(b, False, f"set the environment variable {b.key_env} to your {b.label.split()[0]} "
                                               "key (free at tianditu.gov.cn) and restart the app"))
    return out


def get_basemap(key: str) -> Basemap:
    try:
        return BASEMAPS[key]
    except KeyError:
        raise BadInputError("basemap", f"unknown basemap {key!r}; choose one of {', '.join(BASEMAPS)}") from None


def tile_url(b: Basemap | str, env: Mapping[str, str] | None = None) -> str:
    """The Leaflet URL template of an online basemap, with its key filled in (keep it out of any displayed text:
    use :func:`display_url`). BadInputError for the offline entry or a missing key."""
    b = get_basemap(b) if isinstance(b, str) else b
    if b.url is None:
        raise BadInputError("basemap", f"{b.label} has no online tiles")
    if b.key_env is None:
        return b.url
    key = _key_for(b, env)
    if not key:
        raise BadInputError("basemap", f"{b.label} needs a key: set the environment variable {b.key_env}")
    return b.url.replace("{key}", key)


def display_url(b: Basemap | str, env: Mapping[str, str] | None = None) -> str:
    """The URL template as it may be shown or logged: the key is redacted."""
    b = get_basemap(b) if isinstance(b, str) else b
    if b.url is None:
        return "(local tiles)"
    try:
        return redact_secrets(tile_url(b, env))
    except BadInputError:
        return redact_secrets(b.url.replace("{key}", "<no key>"))


def add_basemap(m, b: Basemap | str, env: Mapping[str, str] | None = None, max_zoom: int = 23):
    """Add an online basemap to a folium map as its base TileLayer (call before the scene's layers); nothing for
    the offline entry. Returns the layer or None."""
    import folium

    b = get_basemap(b) if isinstance(b, str) else b
    if b.url is None:
        return None
    layer = folium.TileLayer(tiles=tile_url(b, env), attr=b.attribution, name=b.label, overlay=False, control=False,
                             max_native_zoom=b.max_zoom, max_zoom=max_zoom,
                             subdomains="".join(b.subdomains) if b.subdomains else "abc")
    layer.add_to(m)
    return layer


# ---------------------------------------------------------------------------------------------------- GCJ-02


@dataclass(frozen=True)
class GcjShift:
    """Offset of GCJ-02 tiles from WGS-84 over a view: add (dlat, dlon) to WGS-84 to land on the GCJ-02 tiles."""

    dlat: float
    dlon: float
    east_m: float  # ground metres of the shift at the view centre
    north_m: float
    residual_m: float  # largest difference, over the view, between the true local offset and the centre's

    @property
    def metres(self) -> float:
        return math.hypot(self.east_m, self.north_m)

    def describe(self) -> str:
        if self.metres < 0.01:
            return "outside China: GCJ-02 equals WGS-84 here, no shift"
        ew = "east" if self.east_m >= 0 else "west"
        ns = "north" if self.north_m >= 0 else "south"
        return (f"GCJ-02 tiles show the ground {self.metres:.0f} m away from where WGS-84 layers put it "
                f"({abs(self.east_m):.0f} m {ew}, {abs(self.north_m):.0f} m {ns}, at the view centre); one constant "
                f"shift by that offset would leave at most {self.residual_m:.1f} m of error across this view")


def _ground_m(lat: float, dlat, dlon) -> tuple[np.ndarray, np.ndarray]:
    east = np.radians(dlon) * EARTH_R * math.cos(math.radians(lat))
    north = np.radians(dlat) * EARTH_R
    return east, north


def gcj_view_shift(bounds, samples: int = 9) -> GcjShift:
    """GCJ-02 offset at the centre of WGS-84 ``bounds`` ``((south, west), (north, east))`` and the residual error
    across a ``samples`` x ``samples`` grid of the view when one constant shift is used."""
    from seghz.geo.datum import wgs84_to_gcj02

    (s, w), (n, e) = bounds
    if not (s <= n and w <= e):
        raise BadInputError("bounds", f"{bounds} is not ((south, west), (north, east))")
    clat, clon = (s + n) / 2.0, (w + e) / 2.0
    glon, glat = wgs84_to_gcj02(clon, clat)
    dlon, dlat = float(glon) - clon, float(glat) - clat
    lat, lon = np.meshgrid(np.linspace(s, n, samples), np.linspace(w, e, samples), indexing="ij")
    glon_g, glat_g = wgs84_to_gcj02(lon, lat)
    re_, rn = _ground_m(clat, (glat_g - lat) - dlat, (glon_g - lon) - dlon)
    east, north = _ground_m(clat, dlat, dlon)
    return GcjShift(dlat, dlon, float(east), float(north), float(np.hypot(re_, rn).max()))


def shift_bounds(bounds, shift: GcjShift):
    """``bounds`` ((south, west), (north, east)) moved by the shift (WGS-84 -> where it shows on GCJ-02 tiles)."""
    (s, w), (n, e) = bounds
    return ((s + shift.dlat, w + shift.dlon), (n + shift.dlat, e + shift.dlon))


@dataclass(frozen=True)
class FetchSource:
    """A tile source the Map page can download imagery from (a basemap, or a URL template the analyst types)."""

    key: str
    label: str
    url: str | None  # None: the analyst gives the template
    max_zoom: int = 19
    baidu: bool = False
    key_env: str | None = None
    subdomains: tuple[str, ...] = ()

    @property
    def custom(self) -> bool:
        return self.url is None


def fetch_sources(env: Mapping[str, str] | None = None) -> dict[str, FetchSource]:
    """Download sources: Esri World Imagery, Tianditu (only when its key variable is set), and custom XYZ / Baidu
    templates. OpenStreetMap is left out on purpose (its tile policy forbids bulk downloads), and so is Gaode (its
    tiles are in GCJ-02, so a mosaic georeferenced as WGS-84 would be hundreds of metres off)."""
    env = os.environ if env is None else env
    out = {}
    for b in BASEMAPS.values():
        if not b.online or b.key in ("osm", "gaode"):
            continue
        if b.key_env and not env.get(b.key_env):
            continue
        out[b.key] = FetchSource(b.key, b.label, b.url, b.max_zoom, key_env=b.key_env, subdomains=b.subdomains)
    out["custom"] = FetchSource("custom", "Custom XYZ template", None, 21)
    out["baidu"] = FetchSource("baidu", "Custom Baidu tile template (BD-09 ids, warped to WGS-84)", None, 19, baidu=True)
    return out


def fetch_bbox_default(region: dict | None, info) -> tuple[float, float, float, float] | None:
    """(W, S, E, N) to fetch by default: the drawn region's bounds (streamlit-folium GeoJSON is [lng, lat] for a
    georeferenced scene), else the scene's WGS-84 bounds; None for a pixel-space scene."""
    if info is None or not getattr(info, "georeferenced", False):
        return None
    if region:
        geom = region.get("geometry", region)
        pts = [p for ring in geom.get("coordinates", []) for p in ring] if geom.get("type") == "Polygon" else []
        if pts:
            xs, ys = [float(p[0]) for p in pts], [float(p[1]) for p in pts]
            return min(xs), min(ys), max(xs), max(ys)
    from seghz.geo.tiles import scene_bounds

    (s, w), (n, e) = scene_bounds(info)
    return w, s, e, n
