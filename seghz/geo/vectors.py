"""Class masks and label corrections as GeoJSON polygons, for QGIS/ArcGIS and audit trails.

Polygons follow pixel edges exactly (``rasterio.features.shapes``, 4-connected regions, holes kept): a vertex is
a pixel corner, so a polygon rasterised back at the scene's grid gives the same pixels. Positions come from
:func:`seghz.geo.tiles.pixel_to_latlng`:

* a **georeferenced** scene gives RFC 7946 GeoJSON: WGS84 ``[lng, lat]``, exterior rings counter-clockwise,
  holes clockwise; each feature's ``area_m2`` is its pixel count times the ground area of a pixel at its centre;
* a **pixel-space** scene (no CRS) cannot be placed on Earth: positions are ``[col, -row]`` (the Map page's
  convention), the collection says so in ``"coordinate_system"`` (a foreign member: RFC 7946 forbids a
  ``"coordinates"`` member outside geometries), and ``area_m2`` is null.

Two exports build on it: :func:`class_features` (one feature per connected region of each class of a mask, e.g.
a prediction or a label version) and :func:`correction_features` (every pixel an analyst relabelled, ignored or
confirmed in a label version, grouped by the history entry that last touched it, with its provenance).
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from seghz.classes import IGNORE
from seghz.geo.tiles import pixel_area_m2

PIXEL_COORDS = "pixel: [column, -row] of the scene's pixel grid (the scene has no CRS)"
WGS84_COORDS = "WGS84 [longitude, latitude] (RFC 7946)"


def _ring_area(ring: Sequence[Sequence[float]]) -> float:
    """Signed shoelace area (> 0 = counter-clockwise in x-right, y-up axes)."""
    a = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(ring):
        a += x0 * y1 - x1 * y0
    return a / 2.0


def _oriented(ring: list[list[float]], ccw: bool) -> list[list[float]]:
    return ring if (_ring_area(ring) > 0) == ccw else ring[::-1]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def group_polygons(groups: np.ndarray, valid: np.ndarray, info, offset: tuple[int, int] = (0, 0),
                   min_pixels: int = 1) -> list[tuple[int, dict, int, tuple[float, float]]]:
    """Polygons of the 4-connected regions of equal ``groups`` value inside ``valid``.

    Returns ``(group, GeoJSON Polygon, pixels, (centre row, centre col))`` per region with at least ``min_pixels``
    pixels; positions through ``info`` (a :class:`~seghz.data.io.RasterInfo`-like object with ``georeferenced``,
    ``crs``, ``transform``), pixel coordinates shifted by ``offset`` (row, col) first (a window of a scene).
    """
    from rasterio import features

    from seghz.geo.tiles import pixel_to_latlng

    if groups.shape != valid.shape:
        raise ValueError(f"groups {groups.shape} and valid {valid.shape} differ in shape")
    box = _bbox(valid)
    if box is None:
        return []
    r0, c0, r1, c1 = box
    g = np.ascontiguousarray(groups[r0:r1, c0:c1], dtype=np.int32)
    v = np.ascontiguousarray(valid[r0:r1, c0:c1], dtype=bool)
    out = []
    for geom, value in features.shapes(g, mask=v, connectivity=4):
        rings = geom["coordinates"]
        # pixel count of the region: exterior area minus holes (vertices are pixel corners: exact)
        npx = round(abs(_ring_area(rings[0])) - sum(abs(_ring_area(h)) for h in rings[1:]))
        if npx < min_pixels:
            continue
        new_rings = []
        for k, ring in enumerate(rings):
            xs = np.array([p[0] for p in ring], np.float64) + c0 + offset[1]
            ys = np.array([p[1] for p in ring], np.float64) + r0 + offset[0]
            lat, lng = pixel_to_latlng(ys, xs, info)
            pts = [[float(x) + 0.0, float(y) + 0.0] for x, y in zip(lng, lat)]  # + 0.0: no "-0.0" (row 0 → -0.0)
            new_rings.append(_oriented(pts, ccw=(k == 0)))
        ext = rings[0]
        cx = float(np.mean([p[0] for p in ext[:-1]])) + c0 + offset[1]
        cy = float(np.mean([p[1] for p in ext[:-1]])) + r0 + offset[0]
        out.append((int(value), {"type": "Polygon", "coordinates": new_rings}, npx, (cy, cx)))
    return out


RESERVED = frozenset({"type", "coordinates", "geometries", "geometry", "properties", "features", "bbox", "crs"})


def feature_collection(features: list[dict], info, **meta: Any) -> dict:
    """A GeoJSON FeatureCollection with a ``"coordinate_system"`` note (WGS84 or pixel) and ``meta`` members
    (foreign members; none may be a GeoJSON member name such as ``coordinates``, ``geometry`` or ``properties``)."""
    bad = sorted(RESERVED & set(meta))
    if bad:
        raise ValueError(f"{', '.join(bad)}: GeoJSON member name(s), not allowed as collection metadata")
    return {"type": "FeatureCollection",
            "coordinate_system": WGS84_COORDS if getattr(info, "georeferenced", False) else PIXEL_COORDS,
            **meta, "features": features}


def _features(polys, info, props: Callable[[int], dict]) -> list[dict]:
    feats = []
    for group, geom, npx, (cy, cx) in polys:
        pa = pixel_area_m2(info, cy, cx)
        feats.append({"type": "Feature", "geometry": geom,
                      "properties": {**props(group), "area_px": npx,
                                     "area_m2": None if pa is None else round(npx * pa, 2)}})
    return feats


def class_features(mask: np.ndarray, names: Sequence[str], info, offset: tuple[int, int] = (0, 0),
                   min_pixels: int = 1, valid: np.ndarray | None = None) -> list[dict]:
    """One feature per 4-connected region of each class of a class-index ``mask`` (255 = no class, skipped).

    Properties: ``class`` (name), ``class_index``, ``area_px``, ``area_m2``. ``offset`` places a window's mask
    in its scene; ``valid`` (bool) restricts the export (e.g. to a drawn polygon)."""
    ok = mask != IGNORE
    if valid is not None:
        ok &= valid
    polys = group_polygons(mask.astype(np.int32), ok, info, offset, min_pixels)
    return _features(polys, info, lambda c: {"class": names[c] if c < len(names) else f"class {c}", "class_index": c})


ACTIONS = ("relabel", "ignore", "confirm")


def correction_features(prov, names: Sequence[str], info, min_pixels: int = 1) -> list[dict]:
    """The analysts' corrections of a label version (:meth:`seghz.store.Workspace.label_provenance`) as features.

    Every pixel a layer in effect set or confirmed is exported, grouped into 4-connected regions by (version,
    action, class, original class). ``action``: ``relabel`` (its class now differs from the original label),
    ``ignore`` (set to "do not train on this"), ``confirm`` (the label was checked and kept; a pixel painted with
    its original class counts as confirmed). Properties also carry the history entry's ``version``, ``analyst``,
    ``saved_at`` (UTC), ``tool``, ``reason`` and ``checkpoint_id`` (the model the analyst looked at). As the pixel
    status does, a pixel keeps only its last edit: one relabelled in v1 and confirmed in v2 is a ``confirm`` of v2
    (its class still differs from ``original_class``); the history has v1."""
    touched, eff, orig = prov.touched, prov.effective, prov.original
    idx = np.flatnonzero(touched.ravel())  # only the touched pixels: a large scene with sparse edits stays cheap
    if idx.size == 0:
        return []
    t, e, o = touched.ravel()[idx], eff.ravel()[idx], orig.ravel()[idx]
    act = np.full(idx.size, 2, np.int64)  # confirm
    act[e == IGNORE] = 1
    act[(e != IGNORE) & (e != o) & (t > 0)] = 0
    # one group id per (version, action, class, original class)
    key = (np.abs(t).astype(np.int64) * 3 + act) * 65536 + e.astype(np.int64) * 256 + o
    uniq, inv = np.unique(key, return_inverse=True)
    if uniq.size >= 2**31:
        raise ValueError("too many correction groups to export")
    groups = np.zeros(eff.shape, np.int32)
    groups.reshape(-1)[idx] = inv.astype(np.int32)
    live = touched != 0
    polys = group_polygons(groups, live, info, (0, 0), min_pixels)

    def name(c: int) -> str | None:
        return None if c == IGNORE else (names[c] if c < len(names) else f"class {c}")

    def props(gid: int) -> dict:
        k = int(uniq[gid])
        orig_c, k = k % 256, k // 256
        cls, k = k % 256, k // 256
        act, ver = k % 3, k // 3
        entry = prov.entries.get(ver)
        return {"action": ACTIONS[act], "class": name(cls), "original_class": name(orig_c), "version": ver,
                "analyst": getattr(entry, "analyst", None), "saved_at": getattr(entry, "created_at", None),
                "tool": getattr(entry, "tool", None), "reason": getattr(entry, "reason", None),
                "checkpoint_id": getattr(entry, "checkpoint_id", None)}

    return _features(polys, info, props)


def scene_info(scene) -> Any:
    """The :class:`~seghz.data.io.RasterInfo` of a workspace scene (its geography, without opening the image)."""
    from seghz.data.io import RasterInfo

    return RasterInfo(str(scene.image_path), int(scene.width), int(scene.height), 3, "uint8",
                      scene.crs, tuple(scene.transform) if scene.transform is not None else None)


def corrections_geojson(ws, scene_id: str, version: int | None = None, min_pixels: int = 1) -> dict:
    """The FeatureCollection of a scene's corrections at ``version`` (None = latest), with the scene's name,
    scheme and label version in the collection's members."""
    from seghz.classes import get_scheme

    scene = ws.get_scene(scene_id)
    prov = ws.label_provenance(scene_id, version)
    info = scene_info(scene)
    names = list(get_scheme(scene.scheme).names)
    feats = correction_features(prov, names, info, min_pixels)
    return feature_collection(feats, info, name=f"{scene.name} corrections v{prov.version}", scene=scene.id,
                              scheme=scene.scheme, label_version=prov.version)


def label_geojson(ws, scene_id: str, version: int | None = None, min_pixels: int = 1) -> dict:
    """A scene's label version (None = latest) as class polygons (:func:`class_features`)."""
    from seghz.classes import get_scheme

    scene = ws.get_scene(scene_id)
    v = ws.latest_label_version(scene_id) if version is None else int(version)
    return class_geojson(ws.effective_label(scene_id, v), list(get_scheme(scene.scheme).names), scene_info(scene),
                         min_pixels=min_pixels, name=f"{scene.name} label v{v}", scene=scene.id,
                         scheme=scene.scheme, label_version=v)


def class_geojson(mask: np.ndarray, names: Sequence[str], info, offset: tuple[int, int] = (0, 0),
                  min_pixels: int = 1, valid: np.ndarray | None = None, **meta: Any) -> dict:
    """:func:`class_features` wrapped in a FeatureCollection (``meta`` added to its members)."""
    return feature_collection(class_features(mask, names, info, offset, min_pixels, valid), info, **meta)


def to_bytes(collection: Mapping) -> bytes:
    """Compact UTF-8 JSON of a collection (for a download or :func:`seghz.data.io.atomic_write_bytes`)."""
    return json.dumps(collection, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
