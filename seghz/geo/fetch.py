"""Fetch XYZ map tiles over a WGS-84 bbox into a georeferenced EPSG:3857 GeoTIFF mosaic.

Tile scheme: the standard XYZ ("Google"/OSM) Web-Mercator pyramid, 256 px tiles, ``y`` counted from the north,
zoom 0..22. ``url`` is any template with ``{z}``, ``{x}`` and ``{y}`` and optionally ``{s}`` (a subdomain, chosen
round-robin from ``subdomains`` by ``(x + y) % len(subdomains)``), e.g.
``https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}``.

How a fetch runs (:func:`fetch_xyz`):

1. :func:`plan_xyz` computes the tiles covering the bbox and a size estimate (tile count, download bytes at
   ``BYTES_PER_TILE`` each, mosaic pixels) *before* anything is requested; more than ``max_tiles`` tiles is a
   BadInputError.
2. Tiles are read from the on-disk cache (``<cache>/<hash of the template>/{z}/{x}/{y}.tile``) when present;
   otherwise requested with ``urllib`` at most ``rate`` requests per second, retried on timeouts, connection
   errors, HTTP 429 and 5xx with exponential backoff (``backoff * 2**attempt`` seconds). Each good tile is
   written to the cache atomically as soon as it arrives, so an interrupted fetch resumes where it stopped.
3. A tile that answers 404/410/other 4xx, or keeps failing with 5xx, or whose bytes are not a decodable image of
   the tile size, is **skipped and reported** (``FetchResult.missing``); it is never cached and its area is
   transparent (alpha 0) in the mosaic. When a tile server cannot be reached at all (DNS failure, connection
   refused, timeouts after every retry) :class:`FetchError` names the URL: the machine is probably offline.
4. The mosaic (RGBA uint8, alpha = 255 where a tile was received) is cropped to the bbox (snapped outwards to
   whole pixels) and written as a deflate GeoTIFF in EPSG:3857 via a temp file in the output folder + rename,
   so a crash never leaves a half-written output.

``progress(fraction, message)`` is called after every tile.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from seghz.data.io import atomic_target, atomic_write_bytes
from seghz.errors import BadInputError, SegHZError
from seghz.geo.datum import check_bbox
from seghz.security import redact_secrets

TILE_SIZE = 256
MERC_HALF = 20037508.342789244
MERC_MAX_LAT = 85.0511287798066
ZOOM_RANGE = (0, 22)
BYTES_PER_TILE = 25_000  # typical satellite JPEG/PNG tile; only for the size estimate
DEFAULT_MAX_TILES = 10_000
FETCH_JOB_MAX_TILES = 4096  # the "fetch" background job's cap (its ``max_tiles`` default): the Map page refuses above
LARGE_FETCH_TILES = 2000  # the Map page asks the analyst to confirm a fetch of more tiles than this
USER_AGENT = "SegHZ-fetch/1 (+land-cover workbench; polite, cached)"
RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}

Progress = Callable[[float, str], Any]


class FetchError(SegHZError):
    """The tile server cannot be reached (offline, DNS failure, refused connection)."""


@dataclass(frozen=True)
class FetchPlan:
    """Tiles covering a bbox at one zoom, and what fetching them will cost."""

    zoom: int
    bbox: tuple[float, float, float, float]  # W, S, E, N (WGS-84)
    x_range: range
    y_range: range
    window: tuple[int, int, int, int]  # crop inside the full-tile mosaic: row, col, height, width (pixels)

    @property
    def tiles(self) -> int:
        return len(self.x_range) * len(self.y_range)

    @property
    def bytes_estimate(self) -> int:
        return self.tiles * BYTES_PER_TILE

    @property
    def pixels(self) -> int:
        """Pixels of the cropped mosaic (the GeoTIFF written)."""
        return self.width * self.height

    @property
    def width(self) -> int:
        return self.window[3]

    @property
    def height(self) -> int:
        return self.window[2]

    @property
    def resolution(self) -> float:
        """Web-Mercator metres per pixel (at the equator; ground size shrinks with cos(lat))."""
        return 2 * MERC_HALF / (TILE_SIZE * 2 ** self.zoom)

    def transform(self) -> tuple[float, float, float, float, float, float]:
        """Affine (a, b, c, d, e, f) of the cropped mosaic in EPSG:3857."""
        r, c, _, _ = self.window
        res = self.resolution
        x0 = -MERC_HALF + (self.x_range.start * TILE_SIZE + c) * res
        y0 = MERC_HALF - (self.y_range.start * TILE_SIZE + r) * res
        return (res, 0.0, x0, 0.0, -res, y0)

    def bounds_3857(self) -> tuple[float, float, float, float]:
        a, _, c, _, e, f = self.transform()
        return (c, f + e * self.height, c + a * self.width, f)

    def describe(self) -> str:
        mb = self.bytes_estimate / 1e6
        return (f"zoom {self.zoom}: {self.tiles} tiles ({len(self.x_range)} x {len(self.y_range)}), about {mb:.1f} MB "
                f"to download, mosaic {self.width} x {self.height} px at {self.resolution:.3f} m/px (EPSG:3857)")


@dataclass
class FetchResult:
    plan: FetchPlan
    output: Path
    fetched: int = 0  # downloaded now
    cached: int = 0  # read from the cache
    missing: list[tuple[int, int, str]] = field(default_factory=list)  # (x, y, why) of skipped tiles
    requests: int = 0  # HTTP requests made (retries included)

    def summary(self) -> str:
        s = f"{self.output}: {self.fetched} tiles downloaded, {self.cached} from cache, {len(self.missing)} missing"
        if self.missing:
            x, y, why = self.missing[0]
            s += f" (e.g. tile {self.plan.zoom}/{x}/{y}: {why})"
        return s


# --------------------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------------------


def lonlat_to_global_pixel(lon: float, lat: float, zoom: int) -> tuple[float, float]:
    """Continuous global XYZ pixel (px, py) of a WGS-84 point at ``zoom`` (py counted from the north)."""
    lat = max(-MERC_MAX_LAT, min(MERC_MAX_LAT, float(lat)))
    n = TILE_SIZE * 2 ** zoom
    px = (float(lon) + 180.0) / 360.0 * n
    py = (1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n
    return px, py


def check_zoom(zoom: Any) -> int:
    try:
        z = int(zoom)
    except (TypeError, ValueError):
        raise BadInputError("zoom", f"{zoom!r} is not an integer") from None
    if z != zoom or not ZOOM_RANGE[0] <= z <= ZOOM_RANGE[1]:
        raise BadInputError("zoom", f"{zoom} is out of range {ZOOM_RANGE[0]}..{ZOOM_RANGE[1]}")
    return z


def check_template(url: str) -> None:
    if not isinstance(url, str) or not all(k in url for k in ("{z}", "{x}", "{y}")):
        raise BadInputError("url", f"{redact_secrets(repr(url))} must be a tile URL template containing {{z}}, {{x}} and {{y}}")
    if not url.lower().startswith(("http://", "https://", "file://")):
        raise BadInputError("url", f"{redact_secrets(repr(url))} must start with http:// or https://")


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"W, S, E, N"`` (WGS-84 degrees) → four floats; ValueError naming the text otherwise (the planners check
    the ranges)."""
    parts = [t for t in str(text).replace(" ", "").split(",") if t]
    try:
        vals = tuple(float(t) for t in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise ValueError(f"bbox {text!r} must be four numbers W,S,E,N (WGS-84 degrees)")
    return vals  # type: ignore[return-value]


def plan_xyz(bbox: Sequence[float], zoom: int) -> FetchPlan:
    """Tiles and crop window covering a WGS-84 ``bbox`` (W, S, E, N) at ``zoom``; BadInputError on bad input."""
    if len(bbox) != 4:
        raise BadInputError("bbox", f"{bbox!r} must be four numbers W,S,E,N")
    w, s, e, n = (float(v) for v in bbox)
    check_bbox(w, s, e, n)
    if s < -MERC_MAX_LAT or n > MERC_MAX_LAT:
        raise BadInputError("bbox", f"latitudes {s}..{n} exceed Web-Mercator's +-{MERC_MAX_LAT:.4f}")
    z = check_zoom(zoom)
    px0, py0 = lonlat_to_global_pixel(w, n, z)  # north-west corner
    px1, py1 = lonlat_to_global_pixel(e, s, z)
    eps = 1e-6
    c0, r0 = math.floor(px0 + eps), math.floor(py0 + eps)
    c1, r1 = max(math.ceil(px1 - eps), c0 + 1), max(math.ceil(py1 - eps), r0 + 1)
    limit = TILE_SIZE * 2 ** z
    c1, r1 = min(c1, limit), min(r1, limit)
    tx0, ty0 = c0 // TILE_SIZE, r0 // TILE_SIZE
    tx1, ty1 = (c1 - 1) // TILE_SIZE, (r1 - 1) // TILE_SIZE
    window = (r0 - ty0 * TILE_SIZE, c0 - tx0 * TILE_SIZE, r1 - r0, c1 - c0)
    return FetchPlan(z, (w, s, e, n), range(tx0, tx1 + 1), range(ty0, ty1 + 1), window)


# --------------------------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------------------------


def tile_url(url: str, z: int, x: int, y: int, subdomains: Sequence[str] = ("a", "b", "c")) -> str:
    out = url.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))
    if "{s}" in out:
        if not subdomains:
            raise BadInputError("url", f"{redact_secrets(repr(url))} uses {{s}} but no subdomains were given")
        out = out.replace("{s}", subdomains[(x + y) % len(subdomains)])
    return out


def cache_folder(cache_dir: str | os.PathLike, url: str) -> Path:
    """Cache folder of one URL template (tiles of different sources never mix)."""
    return Path(cache_dir) / hashlib.sha1(url.encode("utf-8")).hexdigest()[:16]


def _decode(data: bytes) -> np.ndarray:
    """Tile bytes -> RGBA uint8 (TILE_SIZE x TILE_SIZE x 4); ValueError when not a decodable tile image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgba = np.asarray(im.convert("RGBA"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"not an image ({e.__class__.__name__})") from None
    if rgba.shape[:2] != (TILE_SIZE, TILE_SIZE):
        raise ValueError(f"image is {rgba.shape[1]}x{rgba.shape[0]}, not {TILE_SIZE}x{TILE_SIZE}")
    return rgba


class _Limiter:
    def __init__(self, rate: float, clock: Callable[[], float], sleep: Callable[[float], Any]):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self.next_at = -math.inf

    def wait(self) -> None:
        now = self.clock()
        if now < self.next_at:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = now + self.interval


def _download(
    url: str, limiter: _Limiter, retries: int, backoff: float, timeout: float, sleep, result: FetchResult
) -> tuple[bytes | None, str]:
    """(bytes, "") on success, (None, why) for a tile to skip; FetchError when the server cannot be reached."""
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        limiter.wait()
        result.requests += 1
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                data = resp.read()
                if resp.status == 204 or not data:
                    return None, "empty response"
                return data, ""
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            if e.code not in RETRY_HTTP:
                return None, last
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            last = f"unreachable ({reason})"
        # retry
    if last.startswith("unreachable"):
        raise FetchError(f"cannot reach the tile server at {redact_secrets(url)}: {last[len('unreachable ('):-1]} "
                         f"after {retries + 1} tries -- are you offline?")
    return None, f"{last} after {retries + 1} tries"


def _fetch_grid(
    url: str, zoom: int, xs: list[int], ys: list[int], cache: Path, result: FetchResult, limiter: _Limiter,
    retries: int, backoff: float, timeout: float, subdomains: Sequence[str], progress: Progress | None, sleep,
) -> np.ndarray:
    """Fetch (or read from ``cache``) the tiles ``xs`` x ``ys`` into one RGBA mosaic; ``ys`` is in row order (top
    row first). Missing tiles stay transparent and are recorded in ``result.missing``."""
    mosaic = np.zeros((len(ys) * TILE_SIZE, len(xs) * TILE_SIZE, 4), np.uint8)
    total, done = len(xs) * len(ys), 0
    for j, ty in enumerate(ys):
        for i, tx in enumerate(xs):
            cpath = cache / str(zoom) / str(tx) / f"{ty}.tile"
            rgba = None
            if cpath.is_file():
                try:
                    rgba = _decode(cpath.read_bytes())
                    result.cached += 1
                except (ValueError, OSError):
                    cpath.unlink(missing_ok=True)  # a damaged cache entry is fetched again
            if rgba is None:
                turl = tile_url(url, zoom, tx, ty, subdomains)
                data, why = _download(turl, limiter, retries, backoff, timeout, sleep, result)
                if data is not None:
                    try:
                        rgba = _decode(data)
                    except ValueError as e:
                        why = f"garbage bytes: {e}"
                if rgba is None:
                    result.missing.append((tx, ty, why))
                else:
                    atomic_write_bytes(cpath, data, fsync=False)
                    result.fetched += 1
            if rgba is not None:
                mosaic[j * TILE_SIZE:(j + 1) * TILE_SIZE, i * TILE_SIZE:(i + 1) * TILE_SIZE] = rgba
            done += 1
            if progress is not None:
                progress(done / total, f"tile {done}/{total} ({zoom}/{tx}/{ty})")
    return mosaic


def _prepare(url: str, plan, output, cache_dir, max_tiles, rate) -> tuple[Path, Path, FetchResult]:
    """Checks shared by the fetchers (tile budget, rate) → (output path, tile cache folder, empty result)."""
    if max_tiles is not None and plan.tiles > int(max_tiles):
        raise BadInputError("bbox", f"{plan.describe()} -- more than --max-tiles {max_tiles}; use a smaller bbox or zoom")
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise BadInputError("rate", f"{rate} must be a positive number of requests per second")
    out = Path(output)
    cache = cache_folder(cache_dir if cache_dir is not None else out.parent / ".tilecache", url)
    return out, cache, FetchResult(plan, out)  # type: ignore[arg-type]


def fetch_xyz(
    url: str,
    bbox: Sequence[float],
    zoom: int,
    output: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    rate: float = 4.0,
    max_tiles: int | None = DEFAULT_MAX_TILES,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 20.0,
    subdomains: Sequence[str] = ("a", "b", "c"),
    progress: Progress | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FetchResult:
    """Fetch the XYZ tiles of ``url`` covering WGS-84 ``bbox`` at ``zoom`` into an EPSG:3857 RGBA GeoTIFF at
    ``output`` (see the module docstring). Without ``cache_dir`` the cache is ``<output folder>/.tilecache``."""
    check_template(url)
    plan = plan_xyz(bbox, zoom)
    out, cache, result = _prepare(url, plan, output, cache_dir, max_tiles, rate)
    mosaic = _fetch_grid(url, plan.zoom, list(plan.x_range), list(plan.y_range), cache, result,
                         _Limiter(rate, clock, sleep), retries, backoff, timeout, subdomains, progress, sleep)
    r, c, h, w = plan.window
    write_rgba_geotiff(out, mosaic[r:r + h, c:c + w], "EPSG:3857", plan.transform())
    return result


def write_rgba_geotiff(path: str | os.PathLike, rgba: np.ndarray, crs: str, transform: Sequence[float]) -> None:
    """Atomically write an H x W x 4 uint8 RGBA array as a 4-band deflate GeoTIFF (band 4 = alpha)."""
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import Affine

    rgba = np.asarray(rgba, np.uint8)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected an H x W x 4 RGBA array, got {rgba.shape}")
    profile = {"driver": "GTiff", "width": rgba.shape[1], "height": rgba.shape[0], "count": 4, "dtype": "uint8",
               "crs": crs, "transform": Affine(*[float(v) for v in transform][:6]), "compress": "deflate",
               "photometric": "RGB", "tiled": rgba.shape[0] >= 256 and rgba.shape[1] >= 256}
    with atomic_target(path, suffix=".tmp.tif") as tmp, rasterio.open(tmp, "w", **profile) as ds:
        ds.write(np.moveaxis(rgba, 2, 0))
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]


# --------------------------------------------------------------------------------------------------------------
# Baidu tiles -> Web-Mercator GeoTIFF
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaiduPlan:
    """Baidu tiles (BD09MC numbering, y northward; see :mod:`seghz.geo.datum`) covering a WGS-84 bbox."""

    zoom: int
    bbox: tuple[float, float, float, float]
    x_range: range
    y_range: range

    @property
    def tiles(self) -> int:
        return len(self.x_range) * len(self.y_range)

    @property
    def bytes_estimate(self) -> int:
        return self.tiles * BYTES_PER_TILE

    @property
    def pixels(self) -> int:
        """Pixels of the tile mosaic (about those of the warped GeoTIFF)."""
        return self.tiles * TILE_SIZE * TILE_SIZE

    @property
    def resolution(self) -> float:
        """Output pixel size in EPSG:3857 metres: one Baidu pixel (2**(18-z) BD09MC units ~ Mercator metres)."""
        return 2.0 ** (18 - self.zoom)

    def describe(self) -> str:
        return (f"Baidu level {self.zoom}: {self.tiles} tiles ({len(self.x_range)} x {len(self.y_range)}), about "
                f"{self.bytes_estimate / 1e6:.1f} MB to download, warped to EPSG:3857 at {self.resolution:g} m/px")


def plan_baidu(bbox: Sequence[float], zoom: int) -> BaiduPlan:
    from seghz.geo.datum import baidu_tiles_for_bbox

    if len(bbox) != 4:
        raise BadInputError("bbox", f"{bbox!r} must be four numbers W,S,E,N")
    w, s, e, n = (float(v) for v in bbox)
    xs, ys = baidu_tiles_for_bbox(w, s, e, n, int(zoom))
    return BaiduPlan(int(zoom), (w, s, e, n), xs, ys)


def warp_baidu_mosaic(mosaic: np.ndarray, plan: BaiduPlan) -> tuple[np.ndarray, tuple[float, ...]]:
    """Resample (nearest) a Baidu mosaic (top row = northernmost tile row ``plan.y_range[-1]``) onto a north-up
    EPSG:3857 grid covering ``plan.bbox``. Each output pixel centre goes EPSG:3857 -> WGS-84 -> GCJ-02 -> BD-09
    -> BD09MC -> mosaic pixel (all forward conversions, vectorised). Returns (RGBA, affine transform)."""
    from seghz.geo.datum import wgs84_to_bd09mc

    w, s, e, n = plan.bbox
    r = 6378137.0
    x0, x1 = math.radians(w) * r, math.radians(e) * r
    y0 = r * math.asinh(math.tan(math.radians(s)))
    y1 = r * math.asinh(math.tan(math.radians(n)))
    res = plan.resolution
    width, height = max(1, math.ceil((x1 - x0) / res)), max(1, math.ceil((y1 - y0) / res))
    transform = (res, 0.0, x0, 0.0, -res, y1)
    cols = x0 + (np.arange(width) + 0.5) * res
    rows = y1 - (np.arange(height) + 0.5) * res
    lon = np.degrees(cols / r)[None, :].repeat(height, 0)
    lat = np.degrees(np.arctan(np.sinh(rows / r)))[:, None].repeat(width, 1)
    mx, my = wgs84_to_bd09mc(lon, lat)
    span = TILE_SIZE * res  # BD09MC units per tile
    left = plan.x_range.start * span
    top = (plan.y_range[-1] + 1) * span
    pc = np.floor((mx - left) / res).astype(np.int64)
    pr = np.floor((top - my) / res).astype(np.int64)
    ok = (pc >= 0) & (pc < mosaic.shape[1]) & (pr >= 0) & (pr < mosaic.shape[0])
    out = np.zeros((height, width, 4), np.uint8)
    out[ok] = mosaic[pr[ok], pc[ok]]
    return out, transform


def fetch_baidu(
    url: str,
    bbox: Sequence[float],
    zoom: int,
    output: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    rate: float = 4.0,
    max_tiles: int | None = DEFAULT_MAX_TILES,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 20.0,
    subdomains: Sequence[str] = ("0", "1", "2", "3"),
    progress: Progress | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FetchResult:
    """Fetch Baidu tiles (``{x}``/``{y}`` are Baidu tile ids, y northward) covering a WGS-84 bbox in China and warp
    the mosaic to a north-up EPSG:3857 RGBA GeoTIFF over the bbox (datum shift WGS-84 -> BD-09 applied). Same
    cache/retry/rate/missing-tile behaviour as :func:`fetch_xyz`."""
    check_template(url)
    plan = plan_baidu(bbox, zoom)
    out, cache, result = _prepare(url, plan, output, cache_dir, max_tiles, rate)
    ys = list(reversed(plan.y_range))  # Baidu y grows northward: top row is the largest y
    mosaic = _fetch_grid(url, plan.zoom, list(plan.x_range), ys, cache, result, _Limiter(rate, clock, sleep),
                         retries, backoff, timeout, subdomains, progress, sleep)
    rgba, transform = warp_baidu_mosaic(mosaic, plan)
    write_rgba_geotiff(out, rgba, "EPSG:3857", transform)
    return result


# --------------------------------------------------------------------------------------------------------------
# A folder of Baidu tiles (the seed's layout) -> Web-Mercator GeoTIFF
# --------------------------------------------------------------------------------------------------------------

BAIDU_FOLDER_EXT = (".jpeg", ".jpg", ".png")


def baidu_folder_tiles(folder: str | os.PathLike) -> dict[tuple[int, int], Path]:
    """``{(x, y): file}`` of the ``{x}-{y}.jpeg`` (or ``.jpg``/``.png``) Baidu tiles in ``folder``; other files are
    ignored. BadInputError when there are none."""
    import re

    pat = re.compile(r"^(\d+)-(\d+)$")
    d = Path(folder)
    if not d.is_dir():
        raise BadInputError(d, "is not a folder")
    tiles = {}
    for p in sorted(d.iterdir()):
        m = pat.match(p.stem)
        if m and p.suffix.lower() in BAIDU_FOLDER_EXT and p.is_file():
            tiles[(int(m.group(1)), int(m.group(2)))] = p
    if not tiles:
        raise BadInputError(d, "holds no Baidu tiles named {x}-{y}.jpeg (e.g. 13039-3433.jpeg)")
    return tiles


def guess_baidu_level(folder: str | os.PathLike, default: int = 16) -> int:
    """The Baidu level of a tile folder: its name when that is a level number (the seed keeps z16 tiles in
    ``.../16``), else ``default``."""
    from seghz.geo.datum import BAIDU_ZOOM_RANGE

    name = Path(folder).name
    if name.isdigit() and BAIDU_ZOOM_RANGE[0] <= int(name) <= BAIDU_ZOOM_RANGE[1]:
        return int(name)
    return default


def baidu_folder_plan(tiles: dict[tuple[int, int], Path] | Sequence[tuple[int, int]], zoom: int) -> BaiduPlan:
    """The :class:`BaiduPlan` of a set of Baidu tile ids: the tile ranges and the WGS-84 bbox of their outline
    (BD09MC -> WGS-84, the outline densified since the datum shift is non-linear). BadInputError for a level out
    of range or tiles outside China."""
    from seghz.geo.datum import baidu_tile_span, bd09mc_to_wgs84, in_china

    span = baidu_tile_span(zoom)  # checks the level
    xs = sorted({x for x, _ in tiles})
    ys = sorted({y for _, y in tiles})
    xr, yr = range(xs[0], xs[-1] + 1), range(ys[0], ys[-1] + 1)
    t = np.linspace(0.0, 1.0, 17)
    x0, x1, y0, y1 = xr.start * span, xr.stop * span, yr.start * span, yr.stop * span
    mx = np.concatenate([x0 + (x1 - x0) * t, np.full(17, x1), x0 + (x1 - x0) * t, np.full(17, x0)])
    my = np.concatenate([np.full(17, y0), y0 + (y1 - y0) * t, np.full(17, y1), y0 + (y1 - y0) * t])
    lon, lat = bd09mc_to_wgs84(mx, my)
    if not np.all(in_china(lon, lat)):
        raise BadInputError("tiles", f"Baidu level-{zoom} tiles x {xr.start}..{xr.stop - 1}, y {yr.start}..{yr.stop - 1} "
                                     "are not inside China; is the level right?")
    bbox = (float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))
    return BaiduPlan(int(zoom), bbox, xr, yr)


def baidu_folder_to_geotiff(
    folder: str | os.PathLike, output: str | os.PathLike, *, zoom: int | None = None, max_tiles: int = DEFAULT_MAX_TILES,
    progress: Progress | None = None,
) -> BaiduPlan:
    """Mosaic a folder of 256-px Baidu tiles ``{x}-{y}.jpeg`` (Baidu ids at level ``zoom``, default: the folder
    name when it is a level number, else 16) and warp it with :func:`warp_baidu_mosaic` into a north-up EPSG:3857
    RGBA GeoTIFF. Tiles missing inside the rectangle of ids stay transparent. Returns the plan (bbox in WGS-84)."""
    from seghz.data.io import read_image

    tiles = baidu_folder_tiles(folder)
    z = guess_baidu_level(folder) if zoom is None else int(zoom)
    plan = baidu_folder_plan(tiles, z)
    if plan.tiles > max_tiles:
        raise BadInputError(folder, f"{plan.describe()} -- more than {max_tiles} tiles")
    mosaic = np.zeros((len(plan.y_range) * TILE_SIZE, len(plan.x_range) * TILE_SIZE, 4), np.uint8)
    top = plan.y_range[-1]  # Baidu y grows northward: the top mosaic row is the largest y
    for k, ((x, y), p) in enumerate(sorted(tiles.items())):
        rgb = read_image(p)
        if rgb.shape[:2] != (TILE_SIZE, TILE_SIZE):
            raise BadInputError(p, f"tile is {rgb.shape[1]}x{rgb.shape[0]} px, Baidu tiles are {TILE_SIZE}x{TILE_SIZE}")
        i, j = x - plan.x_range.start, top - y
        mosaic[j * TILE_SIZE:(j + 1) * TILE_SIZE, i * TILE_SIZE:(i + 1) * TILE_SIZE, :3] = rgb
        mosaic[j * TILE_SIZE:(j + 1) * TILE_SIZE, i * TILE_SIZE:(i + 1) * TILE_SIZE, 3] = 255
        if progress is not None:
            progress(0.8 * (k + 1) / len(tiles), f"read {p.name}")
    rgba, transform = warp_baidu_mosaic(mosaic, plan)
    write_rgba_geotiff(output, rgba, "EPSG:3857", transform)
    if progress is not None:
        progress(1.0, f"warped {len(tiles)} tiles")
    return plan
