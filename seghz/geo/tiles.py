"""Tile pyramids, region overlays and pixel <-> map coordinates for the Map page.

Two kinds of scenes
-------------------
``GEOREF`` -- a raster with a CRS and an affine transform. Map coordinates are WGS84 latitude/longitude and the
map is Leaflet's default Web-Mercator (EPSG:3857) map. A pixel position ``(row, col)`` is a *continuous* pixel
coordinate in rasterio's convention: pixel ``(r, c)`` covers ``[r, r+1) x [c, c+1)``, the scene's top-left
corner is ``(0, 0)`` and ``(x, y) = transform * (col, row)`` in the scene CRS.

``PIXEL`` -- a raster without CRS (PNG/JPEG, plain TIFF). It is shown with Leaflet ``CRS.Simple`` and is never
placed on Earth. **Convention: one map unit = one image pixel, ``lat = -row``, ``lng = col``.** The image's
top-left corner is ``latlng (0, 0)``, its bottom-right corner is ``latlng (-height, width)``; GeoJSON positions
(``[lng, lat]``) are therefore ``[col, -row]``. ``CRS.Simple`` projects ``latlng`` to screen pixels as
``x = lng * 2**zoom``, ``y = -lat * 2**zoom``, so with this convention map zoom 0 shows the image at native
resolution, rows grow downwards on screen and nothing is mirrored. :func:`pixel_to_latlng` and
:func:`latlng_to_pixel` are exact inverses of each other for both kinds.

Tile schemes (256 px PNG tiles, files ``<out_dir>/{z}/{x}/{y}.png``)
------------------------------------------------------------------
``GEOREF``: the standard XYZ ("Google"/OSM) Web-Mercator scheme, ``y`` counted from the north. ``max_zoom`` is
the first zoom whose tile pixel is at least as fine as the scene's pixel (so the native detail is kept);
``min_zoom`` is the largest zoom at which the whole scene fits in one tile's extent. Max-zoom tiles are
reprojected with ``rasterio.warp.reproject`` from just the source window under each tile (the scene is never
read whole); lower zooms are 2x2 averages of their four children over the covered ones only (see
:func:`_downsample`: no part-transparent rim where the scene edge falls inside a pixel). Outside the scene (and
where the source is nodata/alpha 0) tiles are transparent; tiles with no scene pixel are not written.

``PIXEL``: ``N = max_zoom = ceil(log2(max(width, height) / 256))``. File zoom ``z`` (0..N) shows the image at
scale ``2**(z - N)``; tile ``(x, y)`` at zoom ``z`` covers image pixels
``rows [y * 256 * 2**(N-z), (y+1) * 256 * 2**(N-z))`` and ``cols [x * 256 * 2**(N-z), (x+1) * 256 * 2**(N-z))``
(clipped to the image; the rest of an edge tile is transparent). Zoom N is the image itself cut into 256 px
tiles, zoom 0 is the whole image in tile (0, 0). At zoom ``z`` the image is drawn on the zoom pixels
``rows [0, ceil(height / 2**(N-z)))``, ``cols [0, ceil(width / 2**(N-z)))``, all of them as opaque as the
image (a pixel the image edge cuts is not part-transparent). In Leaflet the *map* zoom is ``z - N`` (map zoom
0 = native), so the TileLayer uses ``zoomOffset = N`` (see :meth:`PyramidInfo.leaflet_options`).

Pyramids are idempotent: ``<out_dir>/pyramid.json`` records the source's path, size and mtime and the
parameters; a second call with the same source and parameters returns at once. The URL template carries a
``?v=`` version so browsers never show stale cached tiles after a rebuild.

Region predictions
------------------
Region predictions are small (at most ~2048x2048), so they are not tiled: :func:`region_overlay` turns a
class-index mask into one palette PNG (ignore = transparent) plus its bounds, for a Leaflet ``ImageOverlay``
(embedded as a data URL, see :func:`seghz.geo.webmap.add_region_overlay`). Leaflet stretches an image overlay
linearly in projected (Web-Mercator) space, so a georeferenced mask whose CRS is not a north-up EPSG:3857 grid
is first resampled (nearest) onto a Web-Mercator-aligned grid; otherwise a UTM or rotated scene would be
drawn visibly shifted/rotated.

Continuous region layers (predictive entropy, view disagreement) go the same way through :func:`scalar_overlay`:
values are clipped to a :class:`RampSpec`'s range and coloured along a sequential ramp into an RGBA PNG (NaN,
pixels outside the drawn polygon and values at the bottom of the range are transparent);
:meth:`RampSpec.legend_html` draws the matching colour bar.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from seghz.classes import IGNORE, Scheme
from seghz.data.io import (
    TIFF_EXT,
    RasterInfo,
    TiffReader,
    atomic_write_bytes,
    raster_info,
    read_image,
    tiff_stretch,
    to_rgb8,
)
from seghz.errors import BadInputError, RegionError

TILE_SIZE = 256
GEOREF = "georef"
PIXEL = "pixel"
WGS84 = "EPSG:4326"
WEB_MERCATOR = "EPSG:3857"
MERC_HALF = 20037508.342789244  # half the Web-Mercator world width (metres)
MERC_MAX_LAT = 85.0511287798066  # Web-Mercator latitude limit
MAX_AUTO_ZOOM = 24
MANIFEST = "pyramid.json"
PYRAMID_FORMAT = 2  # 2: lower zooms average the covered children only (older pyramids are rebuilt)
OVERLAY_MAX_SIDE = 4096  # largest reprojected region overlay (pixels per side)
# The deepest *map* zoom of the Map page's Leaflet map, by kind (PIXEL: 2**5 = 32 screen px per image pixel; GEOREF:
# Web-Mercator zoom). Every tile layer's ``max_zoom`` reaches it (Leaflet upsamples beyond ``max_native_zoom``),
# else the imagery vanished past native + 3 while the map still zoomed in (:func:`seghz.geo.webmap.make_map`).
MAP_MAX_ZOOM = {PIXEL: 5, GEOREF: 23}

Window = tuple[int, int, int, int]  # row, col, height, width
LatLng = tuple[float, float]
LatLngBounds = tuple[LatLng, LatLng]  # ((south, west), (north, east))
Progress = Callable[[float], Any]


# --------------------------------------------------------------------------------------------------------------
# Coordinates
# --------------------------------------------------------------------------------------------------------------


def crs_kind(info: RasterInfo) -> str:
    """``GEOREF`` for rasters with CRS + transform, ``PIXEL`` otherwise."""
    return GEOREF if info.georeferenced else PIXEL


def _affine(info: RasterInfo):
    from affine import Affine

    return Affine(*info.transform[:6])


def _as_arrays(*vals) -> list[np.ndarray]:
    return [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in vals]


def _transform(src_crs: str, dst_crs: str, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if src_crs == dst_crs:
        return xs.copy(), ys.copy()
    from rasterio.warp import transform

    ox, oy = transform(src_crs, dst_crs, xs.ravel().tolist(), ys.ravel().tolist())
    return np.asarray(ox, np.float64).reshape(xs.shape), np.asarray(oy, np.float64).reshape(ys.shape)


def pixel_to_latlng(rows, cols, info: RasterInfo) -> tuple[np.ndarray, np.ndarray]:
    """Continuous pixel coordinates -> map ``(lat, lng)`` arrays (WGS84 for GEOREF, ``(-row, col)`` for PIXEL)."""
    rows, cols = _as_arrays(rows, cols)
    if not info.georeferenced:
        return -rows, cols.copy()
    a, b, c, d, e, f = info.transform[:6]
    xs = a * cols + b * rows + c
    ys = d * cols + e * rows + f
    lng, lat = _transform(info.crs, WGS84, xs, ys)
    return lat, lng


def pixel_area_m2(geo, row: float, col: float) -> float | None:
    """Ground area in m² of one pixel near continuous pixel (row, col) on a spherical Earth, or None without a
    CRS. ``geo``: anything with ``crs`` and ``transform`` (a :class:`RasterInfo`, a workspace scene)."""
    if getattr(geo, "crs", None) is None or getattr(geo, "transform", None) is None:
        return None
    from rasterio.warp import transform as warp

    a, b, c, d, e, f = geo.transform[:6]
    pts = [(col, row), (col + 1, row), (col, row + 1)]
    xs = [a * x + b * y + c for x, y in pts]
    ys = [d * x + e * y + f for x, y in pts]
    lon, lat = warp(geo.crs, "EPSG:4326", xs, ys)
    r = 6371008.8
    k = math.cos(math.radians(lat[0]))
    vx = (math.radians(lon[1] - lon[0]) * r * k, math.radians(lat[1] - lat[0]) * r)
    vy = (math.radians(lon[2] - lon[0]) * r * k, math.radians(lat[2] - lat[0]) * r)
    return abs(vx[0] * vy[1] - vx[1] * vy[0])


def latlng_to_pixel(lat, lng, info: RasterInfo) -> tuple[np.ndarray, np.ndarray]:
    """Map ``(lat, lng)`` -> continuous pixel ``(row, col)`` arrays; exact inverse of :func:`pixel_to_latlng`."""
    lat, lng = _as_arrays(lat, lng)
    if not info.georeferenced:
        return -lat, lng.copy()
    xs, ys = _transform(WGS84, info.crs, lng, lat)
    inv = ~_affine(info)
    cols = inv.a * xs + inv.b * ys + inv.c
    rows = inv.d * xs + inv.e * ys + inv.f
    return rows, cols


def _window_boundary(window: Window, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Rows/cols of points along the edges of a pixel window (n points per edge, corners included)."""
    r, c, h, w = window
    t = np.linspace(0.0, 1.0, n)
    rows = np.concatenate([np.full(n, r), r + h * t, np.full(n, r + h), r + h * t])
    cols = np.concatenate([c + w * t, np.full(n, c + w), c + w * t, np.full(n, c)])
    return rows.astype(np.float64), cols.astype(np.float64)


def window_bounds(window: Window, info: RasterInfo) -> LatLngBounds:
    """Map bounds ``((south, west), (north, east))`` of a pixel window: WGS84 for GEOREF (bounding box of the
    densified outline), ``((-(row+height), col), (-row, col+width))`` for PIXEL."""
    r, c, h, w = (int(v) for v in window)
    if not info.georeferenced:
        return ((float(-(r + h)), float(c)), (float(-r), float(c + w)))
    rows, cols = _window_boundary((r, c, h, w))
    lat, lng = pixel_to_latlng(rows, cols, info)
    return ((float(lat.min()), float(lng.min())), (float(lat.max()), float(lng.max())))


def scene_bounds(info: RasterInfo) -> LatLngBounds:
    """Map bounds of the whole scene for either kind (what the Map page should ``fit_bounds`` to)."""
    return window_bounds((0, 0, info.height, info.width), info)


def scene_bounds_latlon(info: RasterInfo) -> LatLngBounds:
    """WGS84 ``((south, west), (north, east))`` of a georeferenced scene. Raises BadInputError without CRS."""
    if not info.georeferenced:
        raise BadInputError(info.path, "has no CRS/transform, so it has no latitude/longitude; use pixel_bounds()")
    return scene_bounds(info)


def pixel_bounds(info: RasterInfo) -> LatLngBounds:
    """``CRS.Simple`` bounds of a pixel-space image: ``((-height, 0), (0, width))`` (lat = -row, lng = col)."""
    return ((float(-info.height), 0.0), (0.0, float(info.width)))


def pixel_window_to_geojson(window: Window, info: RasterInfo, inset: float = 0.0) -> dict:
    """GeoJSON Polygon geometry (``[lng, lat]`` positions, counter-clockwise) of a pixel window's corners.

    For GEOREF the positions are WGS84; for PIXEL they are ``[col, -row]`` (see the module docstring). ``inset``
    (pixels, < 0.5) moves the corners inside the window: with 0.49 the polygon maps back to exactly ``window``
    through :func:`geojson_to_pixel_window` even after the float error of a projected CRS round trip."""
    r, c, h, w = (int(v) for v in window)
    if not 0 <= inset < 0.5:
        raise ValueError(f"inset must be in [0, 0.5), got {inset}")
    rows = np.array([r + inset, r + h - inset, r + h - inset, r + inset, r + inset], np.float64)
    cols = np.array([c + inset, c + inset, c + w - inset, c + w - inset, c + inset], np.float64)
    lat, lng = pixel_to_latlng(rows, cols, info)
    return {"type": "Polygon", "coordinates": [[[float(x), float(y)] for x, y in zip(lng, lat)]]}


def geojson_polygons(geometry: Any, min_points: int = 1) -> tuple[str, list[list[list[tuple[float, float]]]]]:
    """(geometry type, polygons -> rings -> (lng, lat) positions) of a GeoJSON Polygon/MultiPolygon or a Feature
    holding one. Rings with fewer than ``min_points`` positions are dropped; RegionError when nothing usable is left."""
    if not isinstance(geometry, dict):
        raise RegionError(f"expected a GeoJSON geometry or Feature (dict), got {type(geometry).__name__}")
    if geometry.get("type") == "Feature":
        geometry = geometry.get("geometry")
        if not isinstance(geometry, dict):
            raise RegionError("the GeoJSON Feature has no geometry")
    gtype = geometry.get("type")
    coords = geometry.get("coordinates")
    if gtype == "Polygon":
        raw = [coords]
    elif gtype == "MultiPolygon":
        raw = coords
    else:
        raise RegionError(f"a region must be a drawn rectangle or polygon, got a GeoJSON {gtype!r}")
    polys = []
    try:
        for poly in raw:
            rings = [r for r in ([(float(p[0]), float(p[1])) for p in ring] for ring in poly) if len(r) >= max(1, min_points)]
            if rings:
                polys.append(rings)
    except (TypeError, ValueError, IndexError):
        raise RegionError(f"malformed GeoJSON {gtype} coordinates") from None
    if not polys or not all(math.isfinite(v) for poly in polys for ring in poly for p in ring for v in p):
        raise RegionError(f"the GeoJSON {gtype} has no usable polygon ({min_points}+ finite positions)")
    return gtype, polys


def _geometry_positions(geometry: Any) -> list[list[tuple[float, float]]]:
    """All rings of (lng, lat) pairs of a GeoJSON Polygon/MultiPolygon (or a Feature holding one)."""
    return [ring for poly in geojson_polygons(geometry)[1] for ring in poly]


def _densify_ring_merc(ring: list[tuple[float, float]], n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat ring -> Web-Mercator points with ``n`` points per edge (Leaflet draws edges straight in Mercator)."""
    lng = np.array([p[0] for p in ring], np.float64)
    lat = np.clip(np.array([p[1] for p in ring], np.float64), -MERC_MAX_LAT, MERC_MAX_LAT)
    mx, my = _transform(WGS84, WEB_MERCATOR, lng, lat)
    if len(mx) < 2:
        return mx, my
    t = np.linspace(0.0, 1.0, n, endpoint=False)[None, :]
    x0, y0 = mx[:-1, None], my[:-1, None]
    dx, dy = (mx[1:] - mx[:-1])[:, None], (my[1:] - my[:-1])[:, None]
    xs = np.concatenate([(x0 + dx * t).ravel(), mx[-1:]])
    ys = np.concatenate([(y0 + dy * t).ravel(), my[-1:]])
    return xs, ys


DRAWN_REGION = "the drawn region"  # how messages name a region the analyst drew (the default ``what``)


def geojson_to_pixel_window(geometry: Any, info: RasterInfo, *, max_side: int | None = None, snap: float = 1e-3,
                            name: str | None = None, what: str = DRAWN_REGION) -> Window:
    """Pixel window ``(row, col, height, width)`` of the scene pixels touched by a drawn region, clipped to the scene.

    ``geometry`` is a GeoJSON Polygon/MultiPolygon or a Feature holding one, exactly as streamlit-folium returns
    it in ``last_active_drawing`` / ``all_drawings`` (``[lng, lat]`` positions; for PIXEL scenes ``[col, -row]``).
    The window is the bounding box of the region in pixel space (polygon edges are densified in Web Mercator, so
    curved edges in the scene CRS are covered). Fractional pixel coordinates within ``snap`` pixels of a pixel
    edge are snapped to it (so :func:`pixel_window_to_geojson` round-trips exactly; note that Leaflet's
    ``toGeoJSON`` rounds to 6 decimals, about 0.1 m). Raises RegionError when the region misses the scene, is
    empty, is not a polygon, or when a side exceeds ``max_side``; its messages call the scene ``name`` (its display
    name) when given, else by its image file, and the region ``what`` ("the region in the link" for one the
    analyst did not draw: then they do not advise drawing it again).
    """
    drawn = what == DRAWN_REGION
    label = f"'{name}'" if name else Path(info.path).name
    rings = _geometry_positions(geometry)
    all_rows, all_cols = [], []
    for ring in rings:
        if info.georeferenced:
            mx, my = _densify_ring_merc(ring)
            xs, ys = _transform(WEB_MERCATOR, info.crs, mx, my)
            inv = ~_affine(info)
            cols = inv.a * xs + inv.b * ys + inv.c
            rows = inv.d * xs + inv.e * ys + inv.f
        else:
            lng = np.array([p[0] for p in ring], np.float64)
            lat = np.array([p[1] for p in ring], np.float64)
            rows, cols = latlng_to_pixel(lat, lng, info)
        all_rows.append(rows)
        all_cols.append(cols)
    rows, cols = np.concatenate(all_rows), np.concatenate(all_cols)
    if not (np.all(np.isfinite(rows)) and np.all(np.isfinite(cols))):
        raise RegionError(f"the region cannot be projected into the CRS of scene {label} ({info.crs})")
    r0 = math.floor(float(rows.min()) + snap)
    r1 = math.ceil(float(rows.max()) - snap)
    c0 = math.floor(float(cols.min()) + snap)
    c1 = math.ceil(float(cols.max()) - snap)
    scene = f"scene {label} ({info.width}x{info.height} px)"
    if r1 <= 0 or c1 <= 0 or r0 >= info.height or c0 >= info.width:
        raise RegionError(
            f"{what} (rows {r0}..{r1}, cols {c0}..{c1}) lies outside {scene}" + ("; draw it on the image" if drawn else "")
        )
    r0, r1 = max(r0, 0), min(r1, info.height)
    c0, c1 = max(c0, 0), min(c1, info.width)
    if r1 <= r0 or c1 <= c0:
        raise RegionError(f"{what} covers no whole pixel of {scene}")
    h, w = r1 - r0, c1 - c0
    if max_side is not None and (h > max_side or w > max_side):
        raise RegionError(
            f"{what} is {w}x{h} px; regions are capped at {max_side}x{max_side} px"
            + (" -- draw a smaller one" if drawn else "")
        )
    return (r0, c0, h, w)


# --------------------------------------------------------------------------------------------------------------
# Pyramids
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PyramidInfo:
    """A built tile pyramid. ``min_zoom``/``max_zoom`` are *file* zooms (the ``{z}`` in the URL).

    ``bounds`` are map bounds ``((south, west), (north, east))``: WGS84 for ``crs_kind == GEOREF``,
    ``CRS.Simple`` pixel units (``lat = -row``, ``lng = col``) for ``PIXEL``. ``url_template`` is None when the
    pyramid was written outside the Streamlit static folder and no template was given."""

    min_zoom: int
    max_zoom: int
    url_template: str | None
    bounds: LatLngBounds
    crs_kind: str
    tile_size: int = TILE_SIZE
    width: int = 0
    height: int = 0
    tile_count: int = 0
    out_dir: str = ""
    version: str = ""

    @property
    def zoom_offset(self) -> int:
        """File zoom minus Leaflet map zoom: ``max_zoom`` for PIXEL pyramids (map zoom 0 = native), else 0."""
        return self.max_zoom if self.crs_kind == PIXEL else 0

    def leaflet_options(self, underzoom: int = 3) -> dict:
        """Leaflet TileLayer options (snake_case, as folium takes them) in *map* zoom units.

        Tiles are fetched only inside ``bounds``; beyond the native zoom Leaflet scales the finest tiles up, as far
        as the map zooms (:data:`MAP_MAX_ZOOM`), below ``min_zoom`` it scales the coarsest down (``underzoom``
        levels, then hides)."""
        off = self.zoom_offset
        lo, hi = self.min_zoom - off, self.max_zoom - off
        return {
            "min_zoom": lo - underzoom if self.crs_kind == PIXEL else max(0, lo - underzoom),
            "max_zoom": max(hi, MAP_MAX_ZOOM[self.crs_kind]),
            "min_native_zoom": lo,
            "max_native_zoom": hi,
            "zoom_offset": off,
            "tile_size": self.tile_size,
            "bounds": [list(self.bounds[0]), list(self.bounds[1])],
            "no_wrap": True,
        }

    def to_json(self) -> dict:
        d = asdict(self)
        d["bounds"] = [list(self.bounds[0]), list(self.bounds[1])]
        return d

    @classmethod
    def from_json(cls, d: dict) -> PyramidInfo:
        d = dict(d)
        b = d.pop("bounds")
        return cls(bounds=((float(b[0][0]), float(b[0][1])), (float(b[1][0]), float(b[1][1]))), **d)


def default_static_root() -> Path:
    """The project's ``static/`` folder (next to the ``seghz`` package). Streamlit serves the ``static/`` folder
    that sits next to the *main script* given to ``streamlit run`` -- keep the app's entry script at the repo root."""
    return Path(__file__).resolve().parents[2] / "static"


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_part(s: str, what: str) -> str:
    out = _SAFE.sub("_", str(s)).strip("._")
    if not out:
        raise ValueError(f"{what} {s!r} has no usable characters for a folder name")
    return out[:120]


def tile_dir(key: str, scene_id: str, static_root: str | os.PathLike | None = None) -> Path:
    """``<static_root>/tiles/<key>/<scene_id>`` with both parts made safe for paths and URLs."""
    root = Path(static_root) if static_root is not None else default_static_root()
    return root / "tiles" / _safe_part(key, "key") / _safe_part(scene_id, "scene id")


def _url_for(out_dir: Path, static_root: Path, url_prefix: str, version: str) -> str | None:
    try:
        rel = out_dir.resolve().relative_to(static_root.resolve())
    except ValueError:
        return None
    return f"{url_prefix.rstrip('/')}/{rel.as_posix()}/{{z}}/{{x}}/{{y}}.png?v={version}"


def _to_rgb8(data: np.ndarray, stretch: tuple[float, float] | None) -> np.ndarray:
    """B x H x W (B = 1 or 3) -> H x W x 3 uint8 through :func:`seghz.data.io.to_rgb8` (the conversion
    :func:`seghz.data.io.read_image` uses), with the scene-wide stretch for non-uint8 data."""
    return to_rgb8(np.moveaxis(data, 0, -1), stretch)


class _TiffSource:
    """Windowed reads from a (Geo)TIFF through :class:`seghz.data.io.TiffReader`: RGB (or grey) bands + dataset
    mask, scene-wide stretch for non-uint8. Damaged files raise BadInputError naming the file."""

    def __init__(self, path: Path):
        self.reader = TiffReader(path)
        self.path = Path(path)
        self.crs = self.reader.crs
        self.nodata = self.reader.nodata
        self.bands = [1, 2, 3] if self.reader.count >= 3 else [1]
        self.stretch = tiff_stretch(path)  # the one scene-wide stretch, shared with seghz.data.io.read_image

    def read(self, r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """(B x h x w raw data, h x w uint8 mask 0/255) of a window inside the raster."""
        win = (r0, c0, h, w)
        return self.reader.read(win, self.bands), self.reader.dataset_mask(win)

    def close(self) -> None:
        self.reader.close()


class _ArraySource:
    """A PNG/JPEG/BMP image read whole through :func:`seghz.data.io.read_image` (these are bounded in size)."""

    def __init__(self, path: Path):
        self.arr = read_image(path)  # H x W x 3 uint8
        self.stretch = None

    def read(self, r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        sub = self.arr[r0 : r0 + h, c0 : c0 + w]
        return np.transpose(sub, (2, 0, 1)), np.full(sub.shape[:2], 255, np.uint8)

    def close(self) -> None:
        self.arr = None


def _write_tile(path: Path, rgba: np.ndarray) -> None:
    """Write a tile PNG (RGB when fully opaque) via a temp file + rename, so a half-written tile is never served."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(rgba[..., :3], "RGB") if rgba[..., 3].min() == 255 else Image.fromarray(rgba, "RGBA")
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=3)
    atomic_write_bytes(path, buf.getvalue(), fsync=False)


def _read_tile(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def _downsample(mosaic: np.ndarray) -> np.ndarray:
    """2x2 box filter of a (2T, 2T, 4) uint8 mosaic -> (T, T, 4) that averages only the *covered* children.

    A child pixel with alpha 0 is "no scene here" (the padding of an edge tile, a missing child tile, nodata),
    not transparent content, so it takes no part in the average: colour is the alpha-weighted mean of the
    covered children and alpha the mean alpha of the covered children (0 where none is covered). Where the scene
    edge falls inside a parent pixel (an image side that is not a multiple of ``2**(N - z)``, a scene outline
    in Mercator) that pixel is therefore as opaque as the scene under it. Averaging with the padding instead
    made it part-transparent (a 1300 px high image ends at row 162.5 of zoom 0: alpha 128), and that row/column
    showed as a faint line along the bottom/right edge of the edge tiles -- or between two tile rows when the
    edge fell just past a tile boundary. The scene's drawn extent at a lower zoom is its exact extent rounded
    outwards to whole pixels of that zoom; interior pixels are plain 2x2 means as before."""
    def quad_sum(v: np.ndarray) -> np.ndarray:
        return v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2]

    if mosaic[..., 3].min() == 255:  # fully opaque: a plain box filter
        out = quad_sum(mosaic.astype(np.float32)) * 0.25
        return (out + 0.5).astype(np.uint8)
    m = mosaic.astype(np.float32)
    a = m[..., 3:4]
    asum = quad_sum(a)
    n = quad_sum((a > 0).astype(np.float32))  # covered children (0..4)
    rgb = quad_sum(m[..., :3] * a) / np.maximum(asum, 1e-6)
    alpha = asum / np.maximum(n, 1.0)
    rgb[asum[..., 0] == 0] = 0.0
    out = np.concatenate([rgb, alpha], axis=2)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class _Tiler:
    """Common pyramid walk: render max-zoom tiles from the source, build lower zooms from children."""

    kind = ""
    min_zoom = 0
    max_zoom = 0

    def tiles_at(self, z: int) -> Iterator[tuple[int, int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def count_at(self, z: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self, x: int, y: int) -> np.ndarray | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def build(self, out: Path, progress: Progress | None) -> int:
        total = sum(self.count_at(z) for z in range(self.min_zoom, self.max_zoom + 1)) or 1
        done = written = 0
        last = -1.0

        def tick():
            nonlocal last
            frac = done / total
            if progress is not None and (frac - last >= 0.01 or done == total):
                last = frac
                progress(min(frac, 1.0))

        z = self.max_zoom
        for x, y in self.tiles_at(z):
            rgba = self.render(x, y)
            if rgba is not None and rgba[..., 3].any():
                _write_tile(out / str(z) / str(x) / f"{y}.png", rgba)
                written += 1
            done += 1
            tick()
        ts = TILE_SIZE
        for z in range(self.max_zoom - 1, self.min_zoom - 1, -1):
            for x, y in self.tiles_at(z):
                mosaic = np.zeros((2 * ts, 2 * ts, 4), np.uint8)
                found = False
                for dx in (0, 1):
                    for dy in (0, 1):
                        child = _read_tile(out / str(z + 1) / str(2 * x + dx) / f"{2 * y + dy}.png")
                        if child is not None:
                            mosaic[dy * ts : (dy + 1) * ts, dx * ts : (dx + 1) * ts] = child
                            found = True
                if found:
                    rgba = _downsample(mosaic)
                    if rgba[..., 3].any():
                        _write_tile(out / str(z) / str(x) / f"{y}.png", rgba)
                        written += 1
                done += 1
                tick()
        if progress is not None and last < 1.0:
            progress(1.0)
        return written


class _PixelTiler(_Tiler):
    kind = PIXEL

    def __init__(self, src, width: int, height: int):
        self.src, self.w, self.h = src, width, height
        self.max_zoom = max(0, math.ceil(math.log2(max(width, height) / TILE_SIZE))) if max(width, height) > TILE_SIZE else 0
        self.min_zoom = 0

    def _span(self, z: int) -> int:
        return TILE_SIZE * 2 ** (self.max_zoom - z)

    def count_at(self, z: int) -> int:
        s = self._span(z)
        return math.ceil(self.w / s) * math.ceil(self.h / s)

    def tiles_at(self, z: int):
        s = self._span(z)
        for x in range(math.ceil(self.w / s)):
            for y in range(math.ceil(self.h / s)):
                yield x, y

    def render(self, x: int, y: int) -> np.ndarray | None:
        ts = TILE_SIZE
        r0, c0 = y * ts, x * ts
        h, w = min(ts, self.h - r0), min(ts, self.w - c0)
        if h <= 0 or w <= 0:
            return None
        data, mask = self.src.read(r0, c0, h, w)
        out = np.zeros((ts, ts, 4), np.uint8)
        out[:h, :w, :3] = _to_rgb8(data, self.src.stretch)
        out[:h, :w, 3] = mask
        return out


class _GeoTiler(_Tiler):
    kind = GEOREF

    def __init__(self, src: _TiffSource, info: RasterInfo, min_zoom: int | None, max_zoom: int | None):
        self.src, self.info = src, info
        self.crs = src.crs
        # Scene extent in Web Mercator from its densified outline (latitudes clipped to the Mercator limit).
        rows, cols = _window_boundary((0, 0, info.height, info.width), 32)
        lat, lng = pixel_to_latlng(rows, cols, info)
        mx, my = _transform(WGS84, WEB_MERCATOR, lng, np.clip(lat, -MERC_MAX_LAT, MERC_MAX_LAT))
        self.mbox = (float(mx.min()), float(my.min()), float(mx.max()), float(my.max()))
        res = _merc_resolution(info)
        auto_max = int(np.clip(math.ceil(math.log2(2 * MERC_HALF / (TILE_SIZE * res)) - 0.05), 0, MAX_AUTO_ZOOM))
        extent = max(self.mbox[2] - self.mbox[0], self.mbox[3] - self.mbox[1], 1e-9)
        auto_min = int(np.clip(math.floor(math.log2(2 * MERC_HALF / extent)), 0, auto_max))
        self.max_zoom = auto_max if max_zoom is None else int(max_zoom)
        self.min_zoom = min(auto_min, self.max_zoom) if min_zoom is None else int(min_zoom)
        if not 0 <= self.min_zoom <= self.max_zoom <= 30:
            raise ValueError(f"need 0 <= min_zoom <= max_zoom <= 30, got {self.min_zoom}..{self.max_zoom}")

    def _range(self, z: int) -> tuple[int, int, int, int]:
        size = 2 * MERC_HALF / 2**z
        n = 2**z - 1
        x0, y0, x1, y1 = self.mbox
        tx0 = int(np.clip(math.floor((x0 + MERC_HALF) / size + 1e-9), 0, n))
        tx1 = int(np.clip(math.ceil((x1 + MERC_HALF) / size - 1e-9) - 1, 0, n))
        ty0 = int(np.clip(math.floor((MERC_HALF - y1) / size + 1e-9), 0, n))
        ty1 = int(np.clip(math.ceil((MERC_HALF - y0) / size - 1e-9) - 1, 0, n))
        return tx0, max(tx0, tx1), ty0, max(ty0, ty1)

    def count_at(self, z: int) -> int:
        tx0, tx1, ty0, ty1 = self._range(z)
        return (tx1 - tx0 + 1) * (ty1 - ty0 + 1)

    def tiles_at(self, z: int):
        tx0, tx1, ty0, ty1 = self._range(z)
        for x in range(tx0, tx1 + 1):
            for y in range(ty0, ty1 + 1):
                yield x, y

    def render(self, x: int, y: int) -> np.ndarray | None:
        from affine import Affine
        from rasterio.warp import Resampling, reproject

        ts, z = TILE_SIZE, self.max_zoom
        size = 2 * MERC_HALF / 2**z
        left, top = -MERC_HALF + x * size, MERC_HALF - y * size
        right, bottom = left + size, top - size
        # Source window under the tile: the tile outline, densified, in scene pixel coordinates (+2 px margin).
        t = np.linspace(0.0, 1.0, 9)
        bx = np.concatenate([left + size * t, np.full(9, right), left + size * t, np.full(9, left)])
        by = np.concatenate([np.full(9, top), top - size * t, np.full(9, bottom), top - size * t])
        xs, ys = _transform(WEB_MERCATOR, self.info.crs, bx, by)
        if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
            return None
        inv = ~_affine(self.info)
        cols = inv.a * xs + inv.b * ys + inv.c
        rows = inv.d * xs + inv.e * ys + inv.f
        r0 = max(0, math.floor(rows.min()) - 2)
        r1 = min(self.info.height, math.ceil(rows.max()) + 2)
        c0 = max(0, math.floor(cols.min()) - 2)
        c1 = min(self.info.width, math.ceil(cols.max()) + 2)
        if r1 <= r0 or c1 <= c0:
            return None
        data, mask = self.src.read(r0, c0, r1 - r0, c1 - c0)
        src_tr = _affine(self.info) @ Affine.translation(c0, r0)
        dst_tr = Affine(size / ts, 0.0, left, 0.0, -size / ts, top)
        nodata = self.src.nodata
        dst = np.zeros((data.shape[0], ts, ts), data.dtype)
        reproject(
            data, dst, src_transform=src_tr, src_crs=self.crs, dst_transform=dst_tr, dst_crs=WEB_MERCATOR,
            resampling=Resampling.bilinear, src_nodata=nodata, dst_nodata=nodata, num_threads=1,
        )
        alpha = np.zeros((ts, ts), np.uint8)
        reproject(
            mask, alpha, src_transform=src_tr, src_crs=self.crs, dst_transform=dst_tr, dst_crs=WEB_MERCATOR,
            resampling=Resampling.nearest, src_nodata=None, dst_nodata=None, num_threads=1,
        )
        out = np.zeros((ts, ts, 4), np.uint8)
        out[..., :3] = _to_rgb8(dst, self.src.stretch)
        out[..., 3] = alpha
        out[alpha == 0, :3] = 0
        return out


def _merc_resolution(info: RasterInfo) -> float:
    """Side of one scene pixel in Web-Mercator metres at the scene centre."""
    rc, cc = info.height / 2.0, info.width / 2.0
    s = max(1.0, min(info.width, info.height) / 8.0)
    lat, lng = pixel_to_latlng([rc, rc, rc + s], [cc, cc + s, cc], info)
    mx, my = _transform(WGS84, WEB_MERCATOR, lng, np.clip(lat, -MERC_MAX_LAT, MERC_MAX_LAT))
    v1 = (mx[1] - mx[0], my[1] - my[0])
    v2 = (mx[2] - mx[0], my[2] - my[0])
    area = abs(v1[0] * v2[1] - v1[1] * v2[0])
    res = math.sqrt(area) / s
    if not math.isfinite(res) or res <= 0:
        raise BadInputError(info.path, "cannot determine the pixel size in Web Mercator (bad transform/CRS?)")
    return res


def _clear_pyramid(out: Path) -> None:
    (out / MANIFEST).unlink(missing_ok=True)
    if out.is_dir():
        for child in out.iterdir():
            if child.is_dir() and re.fullmatch(r"-?\d+", child.name):
                shutil.rmtree(child)


def build_pyramid(
    image_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    url_template: str | None = None,
    static_root: str | os.PathLike | None = None,
    url_prefix: str = "/app/static",
    min_zoom: int | None = None,
    max_zoom: int | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> PyramidInfo:
    """Build (or reuse) the 256 px PNG tile pyramid of a scene in ``out_dir/{z}/{x}/{y}.png``.

    GeoTIFFs with a CRS get Web-Mercator XYZ tiles, anything else a ``CRS.Simple`` pyramid (module docstring).
    ``min_zoom``/``max_zoom`` override the automatic zoom range (GEOREF only). ``url_template`` defaults to
    ``<url_prefix>/<out_dir relative to static_root>/{z}/{x}/{y}.png?v=<version>`` when ``out_dir`` lies inside
    ``static_root`` (default: the project's ``static/``), else None. ``progress(fraction)`` is called with
    0..1 as tiles are written. Idempotent: returns the recorded pyramid when ``out_dir/pyramid.json`` matches the
    source's path, size and mtime and the parameters (``force=True`` rebuilds). Raises BadInputError for
    unreadable sources.
    """
    src_path = Path(image_path)
    info = raster_info(src_path)  # BadInputError for missing/unreadable files
    st = src_path.stat()
    if st.st_size == 0:
        raise BadInputError(src_path, "file is empty (0 bytes)")
    kind = crs_kind(info)
    params = {"format": PYRAMID_FORMAT, "tile_size": TILE_SIZE, "kind": kind,
              "min_zoom": min_zoom if kind == GEOREF else None, "max_zoom": max_zoom if kind == GEOREF else None}
    source = {"path": str(src_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    version = hashlib.sha1(json.dumps([source, params], sort_keys=True).encode()).hexdigest()[:12]
    out = Path(out_dir)
    root = Path(static_root) if static_root is not None else default_static_root()
    url = url_template if url_template is not None else _url_for(out, root, url_prefix, version)

    man = out / MANIFEST
    if not force and man.exists():
        try:
            rec = json.loads(man.read_text())
        except (OSError, ValueError):
            rec = None
        if isinstance(rec, dict) and rec.get("source") == source and rec.get("params") == params:
            try:
                pyr = PyramidInfo.from_json(rec["pyramid"])
            except (KeyError, TypeError, ValueError):
                pyr = None
            if pyr is not None:
                if progress is not None:
                    progress(1.0)
                return PyramidInfo(**{**pyr.__dict__, "url_template": url, "out_dir": str(out)})

    _clear_pyramid(out)
    out.mkdir(parents=True, exist_ok=True)
    src = _TiffSource(src_path) if src_path.suffix.lower() in TIFF_EXT else _ArraySource(src_path)
    try:
        if kind == GEOREF:
            tiler: _Tiler = _GeoTiler(src, info, min_zoom, max_zoom)
            bounds = scene_bounds_latlon(info)
        else:
            tiler = _PixelTiler(src, info.width, info.height)
            bounds = pixel_bounds(info)
        written = tiler.build(out, progress)
    finally:
        src.close()
    pyr = PyramidInfo(
        min_zoom=tiler.min_zoom, max_zoom=tiler.max_zoom, url_template=url, bounds=bounds, crs_kind=kind,
        tile_size=TILE_SIZE, width=info.width, height=info.height, tile_count=written, out_dir=str(out),
        version=version,
    )
    atomic_write_bytes(man, json.dumps({"source": source, "params": params, "pyramid": pyr.to_json()}, indent=1).encode())
    return pyr


# --------------------------------------------------------------------------------------------------------------
# Region overlays
# --------------------------------------------------------------------------------------------------------------


def rgba_overlay_png(class_index_mask: np.ndarray, scheme: Scheme, opacity: float = 0.6) -> bytes:
    """Class-index mask (uint8, 255 = ignore) -> palette PNG in the scheme's colours with alpha ``opacity``;
    ignore and indices outside the scheme are fully transparent."""
    mask = np.asarray(class_index_mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"class-index mask must be a non-empty 2-D array, got shape {mask.shape}")
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"opacity must be within 0..1, got {opacity}")
    mask = mask.astype(np.uint8)
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    im.putpalette(scheme.palette().ravel().tolist())
    alpha = np.zeros(256, np.uint8)
    alpha[: scheme.num_classes] = round(255 * float(opacity))
    alpha[IGNORE] = 0
    buf = io.BytesIO()
    im.save(buf, format="PNG", transparency=alpha.tobytes(), optimize=False)
    return buf.getvalue()


@dataclass(frozen=True)
class RegionOverlay:
    """A PNG to lay over the map between ``bounds`` (map coordinates of the map kind ``crs_kind``)."""

    png: bytes
    bounds: LatLngBounds
    crs_kind: str

    @property
    def data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _is_north_up_mercator(info: RasterInfo) -> bool:
    from rasterio.crs import CRS

    a, b, _c, d, e, _f = info.transform[:6]
    try:
        same = CRS.from_user_input(info.crs) == CRS.from_epsg(3857)
    except Exception:  # noqa: BLE001 - unparsable CRS strings simply take the reprojection path
        same = False
    return same and b == 0 and d == 0 and a > 0 and e < 0


def _to_merc_grid(arr: np.ndarray, window: Window, info: RasterInfo, nodata) -> tuple[np.ndarray, LatLngBounds]:
    """Resample (nearest) a window-shaped array of a georeferenced scene onto a Web-Mercator-aligned grid at about
    the scene's resolution; cells not covered get ``nodata``. Returns (array, lat/lng bounds of the grid)."""
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    r, c, _, _ = (int(v) for v in window)
    rows, cols = _window_boundary(window, 32)
    lat, lng = pixel_to_latlng(rows, cols, info)
    mx, my = _transform(WGS84, WEB_MERCATOR, lng, np.clip(lat, -MERC_MAX_LAT, MERC_MAX_LAT))
    x0, y0, x1, y1 = float(mx.min()), float(my.min()), float(mx.max()), float(my.max())
    res = _merc_resolution(info)
    res = max(res, (x1 - x0) / OVERLAY_MAX_SIDE, (y1 - y0) / OVERLAY_MAX_SIDE)
    dw, dh = max(1, math.ceil((x1 - x0) / res)), max(1, math.ceil((y1 - y0) / res))
    x1, y0 = x0 + dw * res, y1 - dh * res
    dst = np.full((dh, dw), nodata, arr.dtype)
    src_tr = _affine(info) @ Affine.translation(c, r)
    reproject(
        arr, dst, src_transform=src_tr, src_crs=info.crs, dst_transform=Affine(res, 0, x0, 0, -res, y1),
        dst_crs=WEB_MERCATOR, resampling=Resampling.nearest, src_nodata=nodata, dst_nodata=nodata, num_threads=1,
    )
    lng2, lat2 = _transform(WEB_MERCATOR, WGS84, np.array([x0, x1]), np.array([y0, y1]))
    return dst, ((float(lat2[0]), float(lng2[0])), (float(lat2[1]), float(lng2[1])))


def _check_window_shape(arr: np.ndarray, window: Window, what: str) -> None:
    _, _, h, w = (int(v) for v in window)
    if arr.shape != (h, w):
        raise ValueError(f"{what} shape {arr.shape} does not match window {w}x{h} (width x height)")


def region_overlay(
    class_index_mask: np.ndarray, window: Window, info: RasterInfo, scheme: Scheme, opacity: float = 0.6
) -> RegionOverlay:
    """Overlay of a region prediction (``class_index_mask`` of shape (height, width) of ``window``).

    PIXEL scenes and north-up EPSG:3857 scenes use the mask as is; other georeferenced scenes are resampled
    (nearest, ignore = transparent) onto a Web-Mercator-aligned grid at about the scene's resolution so that
    Leaflet's linear stretch of the image overlay is exact."""
    mask = np.asarray(class_index_mask, np.uint8)
    _check_window_shape(mask, window, "mask")
    kind = crs_kind(info)
    if kind == PIXEL or _is_north_up_mercator(info):
        return RegionOverlay(rgba_overlay_png(mask, scheme, opacity), window_bounds(window, info), kind)
    dst, bounds = _to_merc_grid(mask, window, info, IGNORE)
    return RegionOverlay(rgba_overlay_png(dst, scheme, opacity), bounds, kind)


# --------------------------------------------------------------------------------------------------------------
# Continuous overlays (entropy, view disagreement): colour ramps and their legends
# --------------------------------------------------------------------------------------------------------------

# Sequential ramps as (position in 0..1, (r, g, b)) stops, linearly interpolated (ColorBrewer YlOrRd and BuPu).
RAMPS: dict[str, tuple[tuple[float, tuple[int, int, int]], ...]] = {
    "ylorrd": ((0.0, (255, 237, 160)), (0.25, (254, 178, 76)), (0.5, (253, 141, 60)), (0.75, (227, 26, 28)),
               (1.0, (128, 0, 38))),
    "bupu": ((0.0, (191, 211, 230)), (0.25, (158, 188, 218)), (0.5, (140, 107, 177)), (0.75, (136, 65, 157)),
             (1.0, (77, 0, 75))),
}


def _ramp_stops(ramp: str) -> tuple[np.ndarray, np.ndarray]:
    if ramp not in RAMPS:
        raise ValueError(f"unknown colour ramp {ramp!r}; use one of {sorted(RAMPS)}")
    stops = RAMPS[ramp]
    return np.array([p for p, _ in stops], np.float64), np.array([c for _, c in stops], np.float64)


def ramp_colors(t: np.ndarray, ramp: str = "ylorrd") -> np.ndarray:
    """Colours (uint8, shape ``t.shape + (3,)``) of positions ``t`` along a ramp; ``t`` is clipped to 0..1
    (NaN -> 0, callers make those pixels transparent)."""
    pos, rgb = _ramp_stops(ramp)
    t = np.nan_to_num(np.clip(np.asarray(t, np.float64), 0.0, 1.0), nan=0.0)
    out = np.empty(t.shape + (3,), np.uint8)
    for k in range(3):
        out[..., k] = np.round(np.interp(t, pos, rgb[:, k])).astype(np.uint8)
    return out


def scalar_rgba(
    values: np.ndarray,
    vmin: float,
    vmax: float,
    ramp: str = "ylorrd",
    opacity: float = 0.6,
    valid: np.ndarray | None = None,
    hide_min: bool = True,
) -> np.ndarray:
    """A continuous H×W array -> H×W×4 uint8 RGBA along a colour ramp: values are clipped to ``[vmin, vmax]``
    and mapped linearly onto the ramp; alpha is ``opacity``. Fully transparent: NaN/inf, pixels where ``valid``
    is False, and (``hide_min``) values at or below ``vmin`` (e.g. zero entropy / no disagreement)."""
    v = np.asarray(values, np.float64)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"values must be a non-empty 2-D array, got shape {v.shape}")
    vmin, vmax = float(vmin), float(vmax)
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmax > vmin):
        raise ValueError(f"the ramp range must be finite with vmax > vmin, got {vmin}..{vmax}")
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"opacity must be within 0..1, got {opacity}")
    shown = np.isfinite(v)
    if valid is not None:
        valid = np.asarray(valid, bool)
        if valid.shape != v.shape:
            raise ValueError(f"valid mask {valid.shape} and values {v.shape} differ in shape")
        shown &= valid
    if hide_min:
        shown &= v > vmin
    rgba = np.zeros(v.shape + (4,), np.uint8)
    rgba[..., :3] = ramp_colors((v - vmin) / (vmax - vmin), ramp)
    rgba[..., 3] = np.where(shown, round(255 * float(opacity)), 0).astype(np.uint8)
    rgba[~shown, :3] = 0
    return rgba


def rgba_png(rgba: np.ndarray) -> bytes:
    """H×W×4 uint8 RGBA -> PNG bytes."""
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.size == 0:
        raise ValueError(f"expected an H×W×4 RGBA array, got shape {rgba.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba.astype(np.uint8)), "RGBA").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


@dataclass(frozen=True)
class RampSpec:
    """How a continuous layer is coloured and explained: ``[vmin, vmax]`` in ``units`` along ``ramp``; the legend
    labels its ends with ``min_label``/``max_label`` (default: the numbers with the units)."""

    title: str
    vmin: float
    vmax: float
    units: str = ""
    ramp: str = "ylorrd"
    min_label: str | None = None
    max_label: str | None = None
    note: str | None = None

    def label(self, which: str) -> str:
        custom = self.min_label if which == "min" else self.max_label
        if custom is not None:
            return custom
        v = self.vmin if which == "min" else self.vmax
        return f"{v:.3g}{(' ' + self.units) if self.units else ''}"

    def css_gradient(self) -> str:
        pos, rgb = _ramp_stops(self.ramp)
        parts = [f"rgb({int(r)},{int(g)},{int(b)}) {p * 100:.0f}%" for p, (r, g, b) in zip(pos, rgb)]
        return f"linear-gradient(to right, {', '.join(parts)})"

    def legend_html(self) -> str:
        """A colour bar with the min/max labels and the units, for ``st.markdown(..., unsafe_allow_html=True)``."""
        import html

        units = f" ({html.escape(self.units)})" if self.units else ""
        note = (f"<div style='font-size:0.8em;opacity:.75'>{html.escape(self.note)}</div>" if self.note else "")
        return (
            "<div style='margin:2px 0 6px 0;max-width:420px'>"
            f"<div style='font-size:0.88em'>{html.escape(self.title)}{units}</div>"
            f"<div style='height:12px;border-radius:3px;border:1px solid rgba(0,0,0,.35);background:{self.css_gradient()}'></div>"
            "<div style='display:flex;justify-content:space-between;font-size:0.8em'>"
            f"<span>{html.escape(self.label('min'))}</span><span>{html.escape(self.label('max'))}</span></div>"
            f"{note}</div>"
        )


def scalar_overlay(
    values: np.ndarray,
    window: Window,
    info: RasterInfo,
    spec: RampSpec,
    opacity: float = 0.6,
    valid: np.ndarray | None = None,
) -> RegionOverlay:
    """Overlay of a continuous region layer (shape (height, width) of ``window``) coloured by ``spec`` (see
    :func:`scalar_rgba`: NaN, ``valid`` False and values ≤ ``spec.vmin`` are transparent). Non-Web-Mercator
    georeferenced scenes are resampled (nearest) like :func:`region_overlay`."""
    v = np.array(values, np.float32, copy=True)
    _check_window_shape(v, window, "values")
    if valid is not None:
        valid = np.asarray(valid, bool)
        _check_window_shape(valid, window, "valid mask")
        v[~valid] = np.nan
    kind = crs_kind(info)
    if kind == PIXEL or _is_north_up_mercator(info):
        bounds = window_bounds(window, info)
    else:
        v, bounds = _to_merc_grid(v, window, info, np.float32(np.nan))
    return RegionOverlay(rgba_png(scalar_rgba(v, spec.vmin, spec.vmax, spec.ramp, opacity)), bounds, kind)
