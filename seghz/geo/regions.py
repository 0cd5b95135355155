"""Drawn regions of the Map page: polygon masks in scene pixels, confidence classes, and small helpers.

A region drawn with Leaflet.draw comes back from streamlit-folium as a GeoJSON Feature (``[lng, lat]``
positions; for pixel-space scenes ``[col, -row]``, see :mod:`seghz.geo.tiles`). The Map page predicts the
region's bounding window (:func:`seghz.geo.tiles.geojson_to_pixel_window`); for a polygon it then hides the
prediction outside the polygon with :func:`polygon_mask` -- the pixels whose *centres* lie inside the polygon
(even-odd rule per polygon, holes honoured; the parts of a MultiPolygon are united). Rectangles drawn with the
rectangle tool (:func:`is_axis_rectangle`) keep their whole window, like ``geojson_to_pixel_window`` does.

Polygon edges are straight lines on the Leaflet map, i.e. in Web Mercator for georeferenced scenes; they are
densified in Web Mercator before being projected into scene pixels (exact for EPSG:3857 scenes, close for any
other CRS).

Uncertainty layers: :func:`confidence_classes` bins the max probability (the "low confidence" layer);
:func:`entropy_spec` and :func:`disagreement_spec` describe the continuous predictive-entropy (0..ln C nats) and
view-disagreement (fraction of TTA views) layers drawn with :func:`seghz.geo.tiles.scalar_overlay`, and
:func:`uncertainty_summary` gives the figures shown under the map.

Where a region came from: :func:`region_source` names a region as drawn, from the page's link or opened with
"Open on map", for the messages of :func:`seghz.geo.tiles.geojson_to_pixel_window` (``what``): never "the drawn
region" for one the analyst did not draw.

Links: :func:`region_to_query` packs a drawn region into a short URL-safe text (coordinates rounded to 1e-7, a
checksum, ~40 characters for a rectangle) for the Map page's ``?region=`` query parameter and
:func:`region_from_query` unpacks it, refusing truncated, edited or absurd text with a RegionError that says why.
No Streamlit here.
"""
from __future__ import annotations

import base64
import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from seghz.classes import IGNORE, Scheme
from seghz.data.io import RasterInfo
from seghz.errors import RegionError
from seghz.geo.tiles import (
    DRAWN_REGION,
    MERC_MAX_LAT,
    RampSpec,
    Window,
    geojson_polygons,
    latlng_to_pixel,
    pixel_window_to_geojson,
)

EARTH_RADIUS_MERC = 6378137.0
# Confidence (max class probability) bins of the uncertainty layer; at or above the last edge = transparent.
CONFIDENCE_EDGES = (0.5, 0.7, 0.9)
CONFIDENCE_COLORS = ((215, 48, 31), (252, 141, 89), (253, 204, 138))


# ------------------------------------------------------------------------------------------------ geometry


# Where a region on the Map page came from, as its error messages name it (``what`` of
# :func:`seghz.geo.tiles.geojson_to_pixel_window`; DRAWN_REGION, its default, comes from there).
LINK_REGION = "the region in the link"
JUMP_REGION = 'the region opened with "Open on map"'
REGION_SOURCES = {"link": LINK_REGION, "jump-to": JUMP_REGION}  # a region Feature's ``properties.source``


def region_source(region: Any) -> str:
    """How to name a region of the Map page in messages: a GeoJSON Feature whose ``properties.source`` says it came
    from a link (``"link"``) or an "Open on map" jump (``"jump-to"``, :func:`window_to_geojson`) is
    :data:`LINK_REGION` / :data:`JUMP_REGION`; anything else was drawn (:data:`DRAWN_REGION`)."""
    props = region.get("properties") if isinstance(region, dict) else None
    source = props.get("source") if isinstance(props, dict) else None
    return REGION_SOURCES.get(source, DRAWN_REGION) if isinstance(source, str) else DRAWN_REGION


def _polygons(geometry: Any) -> tuple[str, list[list[list[tuple[float, float]]]]]:
    """Polygons of a drawn region: rings need 3+ positions."""
    return geojson_polygons(geometry, min_points=3)


def is_axis_rectangle(geometry: Any, rel_tol: float = 1e-9) -> bool:
    """True for a single-ring Polygon with 4 corners and edges along meridians/parallels (lng/lat axes), as
    Leaflet.draw's rectangle tool makes it. Raises RegionError for non-polygon input."""
    gtype, polys = _polygons(geometry)
    if gtype != "Polygon" or len(polys) != 1 or len(polys[0]) != 1:
        return False
    pts = polys[0][0]
    if pts[0] == pts[-1]:
        pts = pts[:-1]
    if len(pts) != 4:
        return False
    xs = sorted({p[0] for p in pts})
    ys = sorted({p[1] for p in pts})
    span = max(abs(v) for p in pts for v in p) or 1.0
    tol = rel_tol * span

    def close_groups(vals: list[float]) -> int:
        groups = 1
        for a, b in zip(vals, vals[1:]):
            if b - a > tol:
                groups += 1
        return groups

    if close_groups(xs) != 2 or close_groups(ys) != 2:
        return False
    # each edge must change exactly one coordinate
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        if (abs(x1 - x0) > tol) == (abs(y1 - y0) > tol):
            return False
    return True


def _merc_y(lat: np.ndarray) -> np.ndarray:
    lat = np.clip(lat, -MERC_MAX_LAT, MERC_MAX_LAT)
    return EARTH_RADIUS_MERC * np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))


def _merc_lat(y: np.ndarray) -> np.ndarray:
    return np.degrees(2 * np.arctan(np.exp(y / EARTH_RADIUS_MERC)) - np.pi / 2)


def _ring_to_pixels(ring: list[tuple[float, float]], info: RasterInfo, densify: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed ring of (lng, lat) -> (rows, cols) of a closed ring in continuous scene pixel coordinates."""
    lng = np.array([p[0] for p in ring], np.float64)
    lat = np.array([p[1] for p in ring], np.float64)
    if lng[0] != lng[-1] or lat[0] != lat[-1]:
        lng, lat = np.append(lng, lng[0]), np.append(lat, lat[0])
    if info.georeferenced and densify > 1:
        # Leaflet draws edges straight in Web Mercator: x is linear in longitude, y is not in latitude.
        my = _merc_y(lat)
        t = np.linspace(0.0, 1.0, densify, endpoint=False)[None, :]
        lng = np.concatenate([(lng[:-1, None] + (lng[1:] - lng[:-1])[:, None] * t).ravel(), lng[-1:]])
        my = np.concatenate([(my[:-1, None] + (my[1:] - my[:-1])[:, None] * t).ravel(), my[-1:]])
        lat = _merc_lat(my)
    rows, cols = latlng_to_pixel(lat, lng, info)
    return rows, cols


def geometry_pixel_rings(geometry: Any, info: RasterInfo, densify: int = 8) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Polygons -> rings -> closed ``(rows, cols)`` arrays in continuous scene pixel coordinates (pixel ``(r, c)``
    covers ``[r, r+1) x [c, c+1)``). Raises RegionError for non-polygons or positions that cannot be projected."""
    _, polys = _polygons(geometry)
    out = []
    for poly in polys:
        rings = []
        for ring in poly:
            rows, cols = _ring_to_pixels(ring, info, densify)
            if not (np.all(np.isfinite(rows)) and np.all(np.isfinite(cols))):
                raise RegionError(f"the region cannot be projected into the CRS of scene {info.path} ({info.crs})")
            rings.append((rows, cols))
        out.append(rings)
    return out


def rings_mask(rings: list[tuple[np.ndarray, np.ndarray]], window: Window) -> np.ndarray:
    """Boolean (height, width) mask of the pixels of ``window`` whose centres lie inside the closed pixel-space
    rings (even-odd rule: a ring inside another is a hole). Scanline fill, O(rows x edges + pixels)."""
    r0, c0, h, w = (int(v) for v in window)
    if h <= 0 or w <= 0:
        raise ValueError(f"window must have a positive size, got {window}")
    ya, yb, xa, xb = [], [], [], []
    for rows, cols in rings:
        rows, cols = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
        ya.append(rows[:-1])
        yb.append(rows[1:])
        xa.append(cols[:-1])
        xb.append(cols[1:])
    y0, y1, x0, x1 = (np.concatenate(v) for v in (ya, yb, xa, xb))
    keep = y0 != y1  # horizontal edges never cross a scanline under the half-open rule
    y0, y1, x0, x1 = y0[keep], y1[keep], x0[keep], x1[keep]
    mask = np.zeros((h, w), bool)
    if y0.size == 0:
        return mask
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    xc = c0 + np.arange(w, dtype=np.float64) + 0.5
    for i in range(h):
        yc = r0 + i + 0.5
        hit = (lo <= yc) & (yc < hi)
        if not hit.any():
            continue
        t = (yc - y0[hit]) / (y1[hit] - y0[hit])
        xs = np.sort(x0[hit] + t * (x1[hit] - x0[hit]))
        # crossings at or left of each pixel centre; odd = inside ([x_in, x_out) intervals)
        mask[i] = (np.searchsorted(xs, xc, side="right") % 2) == 1
    return mask


def polygon_mask(geometry: Any, info: RasterInfo, window: Window, densify: int = 8) -> np.ndarray:
    """Boolean (height, width) mask of the pixels of ``window`` (row, col, height, width) whose centres lie
    inside a drawn GeoJSON Polygon/MultiPolygon (or Feature). Holes are honoured; MultiPolygon parts united."""
    r0, c0, h, w = (int(v) for v in window)
    mask = np.zeros((h, w), bool)
    for rings in geometry_pixel_rings(geometry, info, densify):
        mask |= rings_mask(rings, (r0, c0, h, w))
    return mask


def region_mask(geometry: Any, info: RasterInfo, window: Window) -> np.ndarray | None:
    """The mask to apply to a region prediction: None for axis-aligned rectangles (the whole window counts),
    else :func:`polygon_mask`."""
    if is_axis_rectangle(geometry):
        return None
    return polygon_mask(geometry, info, window)


def mask_outside(arr: np.ndarray, inside: np.ndarray | None, fill: int = IGNORE) -> np.ndarray:
    """Copy of a class-index array with ``fill`` (ignore) where ``inside`` is False; ``inside=None`` = no mask."""
    out = np.array(arr, copy=True)
    if inside is None:
        return out
    if out.shape != inside.shape:
        raise ValueError(f"array {out.shape} and mask {inside.shape} differ in shape")
    out[~inside] = fill
    return out


# ------------------------------------------------------------------------------------------------ jump-to and errors

ERROR_COLOR = (255, 0, 255)


def error_scheme() -> Scheme:
    """A one-class pseudo scheme for the error layer: prediction ≠ label, in magenta."""
    return Scheme(name="error", title="Errors (prediction ≠ label)", names=("prediction ≠ label",), ids=(0,),
                  colors=(ERROR_COLOR,))


OTHER_ERROR_COLOR = (96, 96, 96)  # the other errors, dimmed, while the drilled-into A→B cell is highlighted
OTHER_ERROR_ALPHA = 0.45


def cell_scheme(true_class: str, pred_class: str) -> Scheme:
    """A one-class pseudo scheme for the "A → B errors" layer of a drill-down cell: the pixels labelled
    ``true_class`` and predicted ``pred_class``, in magenta (as in the Evaluate drill-down's thumbnails)."""
    return Scheme(name="cell", title=f"{true_class} → {pred_class} errors",
                  names=(f"{true_class} → {pred_class} (labelled {true_class}, predicted {pred_class})",), ids=(0,),
                  colors=(ERROR_COLOR,))


def other_errors_scheme() -> Scheme:
    """The error layer while an "A → B errors" layer is on: the remaining errors in a dimmed grey."""
    return Scheme(name="other-errors", title="Other errors (dimmed)", names=("other errors (prediction ≠ label)",),
                  ids=(0,), colors=(OTHER_ERROR_COLOR,))


def mask_classes(mask: np.ndarray) -> np.ndarray:
    """uint8 mask for a one-class pseudo scheme: 0 where ``mask`` is True, IGNORE elsewhere."""
    return np.where(np.asarray(mask, bool), 0, IGNORE).astype(np.uint8)


def error_classes(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """uint8 mask for :func:`error_scheme`: 0 where both are valid and differ, IGNORE elsewhere."""
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
    wrong = (pred != label) & (pred != IGNORE) & (label != IGNORE)
    return np.where(wrong, 0, IGNORE).astype(np.uint8)


def bbox_to_window(bbox: tuple[int, int, int, int], height: int, width: int, margin: float = 0.25,
                   min_side: int = 64) -> tuple[int, int, int, int]:
    """A ``(row, col, height, width)`` window around a ``(row0, col0, row1, col1)`` pixel bbox (end exclusive) with
    ``margin`` of its size on each side, at least ``min_side`` px a side, clipped to the scene."""
    r0, c0, r1, c1 = (int(v) for v in bbox)
    if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
        raise RegionError(f"bbox {tuple(bbox)} is empty or outside the {width}×{height} px scene")
    out = []
    for lo, hi, ext in ((r0, r1, height), (c0, c1, width)):
        side = max(hi - lo, 1)
        pad = max(int(round(side * margin)), (min_side - side + 1) // 2, 0)
        a, b = max(0, lo - pad), min(ext, hi + pad)
        out.append((a, b))
    (ra, rb), (ca, cb) = out
    return ra, ca, rb - ra, cb - ca


def window_to_geojson(window: tuple[int, int, int, int], info: Any) -> dict:
    """The GeoJSON Feature of a pixel window (:func:`seghz.geo.tiles.pixel_window_to_geojson`) as streamlit-folium
    returns drawings: what "open on map" puts in as the drawn region (round trip:
    :func:`seghz.geo.tiles.geojson_to_pixel_window` gives ``window`` back)."""
    return {"type": "Feature", "properties": {"source": "jump-to"},
            "geometry": pixel_window_to_geojson(window, info, inset=0.25)}


# ------------------------------------------------------------------------------------------------ confidence


def confidence_scheme() -> Scheme:
    """A pseudo class scheme for the uncertainty layer: one class per low-confidence bin (red = least sure);
    confidence at or above the last edge (default 90 %) is not drawn."""
    edges = (0.0, *CONFIDENCE_EDGES)
    names = tuple(
        f"confidence < {edges[1] * 100:.0f} %" if i == 0 else f"confidence {edges[i] * 100:.0f}–{edges[i + 1] * 100:.0f} %"
        for i in range(len(CONFIDENCE_EDGES))
    )
    return Scheme(
        name="confidence", title="Model confidence (max class probability)", names=names,
        ids=tuple(range(len(names))), colors=CONFIDENCE_COLORS,
    )


def confidence_classes(confidence: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """uint8 bin index of each pixel's confidence (see :func:`confidence_scheme`); IGNORE at or above the last
    edge, outside ``valid`` and where the confidence is not finite."""
    conf = np.asarray(confidence)
    if not np.issubdtype(conf.dtype, np.floating):
        conf = conf.astype(np.float64)
    # edges in the data's precision, so a float32 0.9 lands in the >= 90 % bin
    out = np.digitize(conf, np.asarray(CONFIDENCE_EDGES, conf.dtype)).astype(np.uint8)  # 0..len(edges)
    out[out >= len(CONFIDENCE_EDGES)] = IGNORE
    out[~np.isfinite(conf)] = IGNORE
    if valid is not None:
        out[~np.asarray(valid, bool)] = IGNORE
    return out


# ------------------------------------------------------------------------------------------------ uncertainty

# The Map page's one uncertainty selector: layer key -> label.
UNCERTAINTY_LAYERS = {"off": "off", "confidence": "low confidence", "entropy": "entropy", "disagreement": "disagreement"}


def entropy_spec(num_classes: int) -> RampSpec:
    """Colouring of the predictive-entropy layer: 0 .. ln(C) nats (the entropy of the uniform distribution over
    the C classes, the largest possible)."""
    c = int(num_classes)
    if c < 2:
        raise ValueError(f"entropy needs at least 2 classes, got {c}")
    top = math.log(c)
    return RampSpec(
        title="Predictive entropy", vmin=0.0, vmax=top, units="nats", ramp="ylorrd",
        min_label="0 nats (certain)", max_label=f"ln {c} = {top:.2f} nats (uniform over {c} classes)",
    )


def disagreement_spec(n_views: int) -> RampSpec:
    """Colouring of the view-disagreement layer: the fraction (0..1) of the ``n_views`` TTA views whose class
    differs from the merged prediction. Zero (all views agree) is transparent."""
    n = int(n_views)
    return RampSpec(
        title="View disagreement", vmin=0.0, vmax=1.0, units="fraction of views", ramp="bupu",
        min_label="0 (all views agree)", max_label="1 (every view differs)",
        note=f"{n} TTA view{'s' if n != 1 else ''}; each step is 1/{n} of the views." if n >= 2 else None,
    )


def suspicion_spec(built_with: str | None = None) -> RampSpec:
    """Colouring of the label-suspicion layer (the noise queue's per-pixel score, 0..1; below 0.25 transparent)."""
    return RampSpec(
        title="Label suspicion (noise queue)", vmin=0.25, vmax=1.0, units="score", ramp="ylorrd",
        min_label="0.25 (slightly suspicious)", max_label="1 (the label is very probably wrong)",
        note=f"From the noise queue built with {built_with}." if built_with else None,
    )


@dataclass(frozen=True)
class UncertaintySummary:
    """Summary of a region's uncertainty over its valid pixels (inside the drawn region, not nodata)."""

    pixels: int
    mean_entropy: float | None  # nats; None when no pixel has a finite entropy
    disagreeing_fraction: float | None  # share of pixels where any view disagrees; None with < 2 views
    n_views: int


def uncertainty_summary(
    entropy: np.ndarray | None,
    disagreement: np.ndarray | None,
    inside: np.ndarray | None = None,
    n_views: int = 1,
) -> UncertaintySummary:
    """Mean entropy and the share of pixels with any view disagreement (> 0) over the pixels inside the region
    (``inside`` None = all) whose values are finite (NaN = nodata). Disagreement is None with fewer than 2
    views (it is 0 by construction then)."""
    ok = None
    for arr in (entropy, disagreement):
        if arr is not None:
            ok = np.isfinite(arr) if ok is None else ok & np.isfinite(arr)
    if ok is None:
        return UncertaintySummary(0, None, None, int(n_views))
    if inside is not None:
        ok = ok & np.asarray(inside, bool)
    n = int(ok.sum())
    mean_ent = float(np.asarray(entropy, np.float64)[ok].mean()) if entropy is not None and n else None
    frac = None
    if disagreement is not None and n and n_views >= 2:
        frac = float((np.asarray(disagreement)[ok] > 0).mean())
    return UncertaintySummary(n, mean_ent, frac, int(n_views))


# ------------------------------------------------------------------------------------------------ links

# A drawn region in a URL query parameter (the Map page's ``?region=``): ``"1."`` (the format version) + the
# unpadded base64url (RFC 4648 §5: A-Z a-z 0-9 - _) of
#   kind (0 = Polygon, 1 = MultiPolygon), [number of polygons if MultiPolygon], then per polygon the number of
#   rings and per ring the number of vertices (the closing position left out) followed by its vertices,
#   each coordinate a zigzag varint of round(value * 1e7) minus the previous vertex's (the first absolute),
#   then the CRC-32 of all that (4 bytes, little-endian): a cut or edited link is refused, never misread.
# Only unreserved URL characters, so the parameter is never percent-encoded. A Leaflet rectangle is ~40
# characters near Hangzhou and at most ~80 anywhere.
QUERY_VERSION = "1"
QUERY_SCALE = 10_000_000  # coordinates are rounded to 1e-7 (degrees: ~1 cm; pixel-space scenes: pixels)
QUERY_COORD_LIMIT = 1e7  # |coordinate| above this is absurd (lon/lat within ±180°, [col, -row] within a scene)
QUERY_MAX_VERTICES = 1000  # vertices of all rings together (closing positions not counted)
QUERY_MAX_CHARS = 24_000  # longer text is refused before decoding
QUERY_MAX_LON = 540.0  # lon/lat regions: Leaflet gives longitudes past ±180° on a panned world copy; PROJ takes ±540
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_QUERY_KINDS = ("Polygon", "MultiPolygon")


def _query_number(v: Any, where: str) -> int:
    """A coordinate of a region to encode, in 1e-7 units; RegionError for non-numbers, non-finite or absurd values."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise RegionError(f"{where} has a coordinate {v!r} that is not a number")
    f = float(v)
    if not math.isfinite(f):
        raise RegionError(f"{where} has a non-finite coordinate ({f})")
    if abs(f) > QUERY_COORD_LIMIT:
        raise RegionError(f"{where} has an absurd coordinate {f:g} (beyond ±{QUERY_COORD_LIMIT:g})")
    return round(f * QUERY_SCALE)


def _put_varint(out: bytearray, n: int) -> None:
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _zigzag(n: int) -> int:
    return 2 * n if n >= 0 else -2 * n - 1


def region_to_query(geometry: Any) -> str:
    """A drawn region (GeoJSON Polygon/MultiPolygon, or a Feature holding one, as the Map page stores it) as a
    short URL-safe text for a query parameter; :func:`region_from_query` gives it back with every coordinate
    rounded to 1e-7. Rings must be closed (first position = last, after rounding) with 3+ vertices; positions
    are ``[x, y]`` numbers. RegionError names what is wrong (not a polygon, ring not closed, non-finite or absurd
    coordinate, more than :data:`QUERY_MAX_VERTICES` vertices)."""
    if isinstance(geometry, dict) and geometry.get("type") == "Feature":
        geometry = geometry.get("geometry")
    if not isinstance(geometry, dict):
        raise RegionError(f"a region must be a GeoJSON Polygon or MultiPolygon, got {type(geometry).__name__}")
    gtype = geometry.get("type")
    if gtype not in _QUERY_KINDS:
        raise RegionError(f"a region must be a GeoJSON Polygon or MultiPolygon, got {gtype!r}")
    coords = geometry.get("coordinates")
    polys = [coords] if gtype == "Polygon" else coords
    if not isinstance(polys, (list, tuple)) or not polys:
        raise RegionError(f"the {gtype} has no polygons")
    out = bytearray()
    _put_varint(out, _QUERY_KINDS.index(gtype))
    if gtype == "MultiPolygon":
        _put_varint(out, len(polys))
    n_total, prev = 0, (0, 0)
    for i, poly in enumerate(polys):
        pname = "the polygon" if gtype == "Polygon" else f"polygon {i + 1}"
        if not isinstance(poly, (list, tuple)) or not poly:
            raise RegionError(f"{pname} has no rings")
        _put_varint(out, len(poly))
        for j, ring in enumerate(poly):
            where = f"ring {j + 1} of {pname}"
            if not isinstance(ring, (list, tuple)) or len(ring) < 4:
                raise RegionError(f"{where} needs at least 4 positions (3 vertices and the closing one)")
            pts = []
            for pos in ring:
                if not isinstance(pos, (list, tuple)) or len(pos) != 2:
                    raise RegionError(f"{where} has a position {pos!r} that is not [x, y]")
                pts.append((_query_number(pos[0], where), _query_number(pos[1], where)))
            if pts[0] != pts[-1]:
                raise RegionError(f"{where} is not closed: it starts at {list(ring[0])} and ends at {list(ring[-1])}")
            pts.pop()
            n_total += len(pts)
            if n_total > QUERY_MAX_VERTICES:
                raise RegionError(f"the region has more than {QUERY_MAX_VERTICES} vertices, too many for a link")
            _put_varint(out, len(pts))
            for x, y in pts:
                _put_varint(out, _zigzag(x - prev[0]))
                _put_varint(out, _zigzag(y - prev[1]))
                prev = (x, y)
    out += zlib.crc32(out).to_bytes(4, "little")
    return QUERY_VERSION + "." + base64.urlsafe_b64encode(bytes(out)).decode("ascii").rstrip("=")


class _Truncated(Exception):
    pass


def region_from_query(text: Any, *, lonlat: bool = False) -> dict:
    """The GeoJSON geometry (``{"type": "Polygon" | "MultiPolygon", "coordinates": ...}``, closed rings of
    ``[x, y]`` floats) encoded by :func:`region_to_query`. RegionError naming the problem for anything else:
    empty, too long, unknown format version, characters outside base64url, truncated, edited (checksum), too
    many vertices or coordinates beyond ±:data:`QUERY_COORD_LIMIT`; with ``lonlat`` (a georeferenced scene) also
    latitudes beyond ±90° and longitudes beyond ±:data:`QUERY_MAX_LON`."""
    if not isinstance(text, str):
        raise RegionError(f"a region parameter must be text, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise RegionError("the region parameter is empty")
    if len(text) > QUERY_MAX_CHARS:
        raise RegionError(f"the region parameter is {len(text):,} characters long; at most {QUERY_MAX_CHARS:,} "
                          "are accepted")
    version, dot, body = text.partition(".")
    if not dot or not version:
        raise RegionError(f"the region parameter {text[:40]!r} is not a SegHZ region (it should start with "
                          f"'{QUERY_VERSION}.', the format version)")
    if version != QUERY_VERSION:
        raise RegionError(f"the region parameter is in format {version[:10]!r}; this SegHZ reads format "
                          f"{QUERY_VERSION!r} only")
    bad = next(((i, ch) for i, ch in enumerate(body) if ch not in _B64URL), None)
    if bad is not None:
        raise RegionError(f"the region parameter has a character {bad[1]!r} (at {len(dot) + len(version) + bad[0] + 1})"
                          " that a SegHZ region never holds (only A-Z a-z 0-9 - _ after the version)")
    if len(body) % 4 == 1:
        raise RegionError("the region parameter is truncated or damaged (its length is impossible)")
    data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    pos = 0

    def varint(limit: int, what: str) -> int:
        nonlocal pos
        n, shift = 0, 0
        while True:
            if pos >= len(data):
                raise _Truncated
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 63:
                raise RegionError(f"the region parameter is damaged (an overlong number in {what})")
        if n > limit:
            raise RegionError(f"the region parameter is damaged or absurd: {what} is {n:,} (at most {limit:,})")
        return n

    zz_limit = _zigzag(int(2 * QUERY_COORD_LIMIT * QUERY_SCALE))  # the largest delta between two coordinates

    def coord(prev: int, what: str) -> int:
        d = varint(zz_limit, what)
        v = prev + (d >> 1 if not d & 1 else -((d + 1) >> 1))
        if abs(v) > QUERY_COORD_LIMIT * QUERY_SCALE:
            raise RegionError(f"the region parameter is damaged or absurd: {what} is {v / QUERY_SCALE:g} (beyond "
                              f"±{QUERY_COORD_LIMIT:g})")
        return v

    try:
        kind = varint(len(_QUERY_KINDS) - 1, "the geometry kind")
        n_polys = varint(QUERY_MAX_VERTICES // 3, "the number of polygons") if kind == 1 else 1
        if n_polys < 1:
            raise RegionError("the region parameter is damaged: a MultiPolygon without polygons")
        polys, n_total, px, py = [], 0, 0, 0
        for _ in range(n_polys):
            n_rings = varint(QUERY_MAX_VERTICES // 3, "the number of rings")
            if n_rings < 1:
                raise RegionError("the region parameter is damaged: a polygon without rings")
            rings = []
            for _ in range(n_rings):
                n = varint(QUERY_MAX_VERTICES, "the number of vertices of a ring")
                if n < 3:
                    raise RegionError(f"the region parameter is damaged: a ring of {n} vertices (3 at least)")
                n_total += n
                if n_total > QUERY_MAX_VERTICES:
                    raise RegionError(f"the region parameter is damaged or absurd: more than {QUERY_MAX_VERTICES} vertices")
                ring = []
                for _ in range(n):
                    px = coord(px, "an x coordinate")
                    py = coord(py, "a y coordinate")
                    ring.append([px / QUERY_SCALE, py / QUERY_SCALE])
                ring.append(list(ring[0]))
                rings.append(ring)
            polys.append(rings)
    except _Truncated:
        raise RegionError("the region parameter is truncated (was the link cut off?)") from None
    rest = len(data) - pos
    if rest < 4:
        raise RegionError("the region parameter is truncated (was the link cut off?)")
    if rest > 4:
        raise RegionError(f"the region parameter is damaged: {rest - 4} unexpected bytes at its end")
    if zlib.crc32(data[:pos]) != int.from_bytes(data[pos:], "little"):
        raise RegionError("the region parameter is damaged (its checksum does not match: was the link edited?)")
    if lonlat:
        for lon, lat in (p for rings in polys for ring in rings for p in ring):
            if abs(lat) > 90.0 or abs(lon) > QUERY_MAX_LON:
                raise RegionError(f"the region parameter is absurd for a georeferenced scene: position "
                                  f"[{lon:g}, {lat:g}] is not a longitude/latitude (±{QUERY_MAX_LON:g}°, ±90°)")
    if kind == 0:
        return {"type": "Polygon", "coordinates": polys[0]}
    return {"type": "MultiPolygon", "coordinates": polys}


# ------------------------------------------------------------------------------------------------ misc


def workspace_tile_key(root: str | os.PathLike) -> str:
    """A short, URL-safe key for a workspace folder (tile pyramids go to ``tile_dir(key, scene_id)``), so
    scenes of different workspaces with the same id never share tiles."""
    return "ws-" + hashlib.sha1(os.path.realpath(os.fspath(root)).encode()).hexdigest()[:12]


__all__ = [
    "CONFIDENCE_EDGES",
    "DRAWN_REGION",
    "ERROR_COLOR",
    "JUMP_REGION",
    "LINK_REGION",
    "OTHER_ERROR_ALPHA",
    "OTHER_ERROR_COLOR",
    "QUERY_COORD_LIMIT",
    "QUERY_MAX_LON",
    "QUERY_MAX_VERTICES",
    "QUERY_SCALE",
    "REGION_SOURCES",
    "UNCERTAINTY_LAYERS",
    "UncertaintySummary",
    "bbox_to_window",
    "cell_scheme",
    "confidence_classes",
    "confidence_scheme",
    "disagreement_spec",
    "entropy_spec",
    "error_classes",
    "error_scheme",
    "geometry_pixel_rings",
    "is_axis_rectangle",
    "mask_classes",
    "mask_outside",
    "other_errors_scheme",
    "polygon_mask",
    "region_from_query",
    "region_mask",
    "region_source",
    "region_to_query",
    "rings_mask",
    "suspicion_spec",
    "uncertainty_summary",
    "window_to_geojson",
    "workspace_tile_key",
]
