"""Turning brush strokes painted on a canvas into label edits (pure numpy; no Streamlit).

The Labels page shows a *window* of a scene (``(row, col, height, width)`` in scene pixels, at most
1024×1024) on a drawing canvas that may be displayed smaller than the window (``canvas_scale``). The
canvas returns what was painted as an RGBA image of the *canvas* size; every pixel with alpha at or
above ``alpha_threshold`` (default 1, i.e. alpha > 0) counts as painted. :func:`apply_strokes` scales
that mask back to the window (nearest neighbour) and writes the chosen class index there, on a copy
of the full scene label.

An edit made on label version N can be carried onto a newer version M (when someone saved first):
:func:`rebase_keeping_theirs` re-applies the pixels the analyst changed that nobody touched since (those
:func:`touched_since` lists keep the value saved since, and are counted, never overwritten silently).

The label store keeps corrections as sparse layers (changed flat pixel indices + new values, plus confirmed
pixels): :func:`diff_layer` turns an edited mask into such a layer, :func:`stroke_pixels` turns canvas
strokes into a scene-sized pixel mask (for ``Workspace.save_label_edit(pixels=..., values=...)`` or
``confirm=...``), and :func:`colorize_status` shows ``Workspace.pixel_status`` codes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seghz.classes import IGNORE
from seghz.store import PIXEL_ORIGINAL

MAX_WINDOW = 1024
Window = tuple[int, int, int, int]  # (row, col, height, width) in scene pixels


def canvas_scale(
    window_height: int, window_width: int, max_display: int = 768, min_display: int = 0
) -> tuple[int, int, float]:
    """Display size of a window on the canvas: ``(canvas_height, canvas_width, scale)``.

    The longer side is shrunk to at most ``max_display`` canvas pixels; a window whose longer side is
    below ``min_display`` is enlarged to it (so tiny scenes stay paintable). ``scale`` is canvas pixels
    per scene pixel.

    Raises:
        ValueError: For an empty window or a non-positive ``max_display``.
    """
    if window_height <= 0 or window_width <= 0:
        raise ValueError(f"window must have pixels, got {window_height}x{window_width}")
    if max_display <= 0:
        raise ValueError(f"max_display must be positive, got {max_display}")
    longest = max(window_height, window_width)
    scale = min(1.0, max_display / longest)
    if min_display and longest < min_display:
        scale = min(min_display, max_display) / longest
    return max(1, round(window_height * scale)), max(1, round(window_width * scale)), scale


def clamp_window(scene_height: int, scene_width: int, row: int, col: int, size: int = MAX_WINDOW) -> Window:
    """A window of at most ``size``×``size`` (and at most ``MAX_WINDOW``) starting near ``(row, col)``,
    shifted back so that it lies inside the scene."""
    if scene_height <= 0 or scene_width <= 0:
        raise ValueError(f"scene must have pixels, got {scene_height}x{scene_width}")
    size = max(1, min(int(size), MAX_WINDOW))
    h, w = min(size, scene_height), min(size, scene_width)
    r = min(max(0, int(row)), scene_height - h)
    c = min(max(0, int(col)), scene_width - w)
    return r, c, h, w


def _check_window(shape: tuple[int, int], window: Window) -> Window:
    r, c, h, w = (int(v) for v in window)
    if h <= 0 or w <= 0 or r < 0 or c < 0 or r + h > shape[0] or c + w > shape[1]:
        raise ValueError(f"window (row={r}, col={c}, h={h}, w={w}) does not lie inside the {shape[1]}x{shape[0]} label")
    return r, c, h, w


def unreviewed_in_window(status: np.ndarray, label: np.ndarray, window: Window,
                         exclude: np.ndarray | None = None) -> np.ndarray:
    """Pixels of ``window`` that nobody has reviewed yet: status ``PIXEL_ORIGINAL`` (neither corrected nor confirmed;
    :meth:`seghz.store.Workspace.pixel_status`), labelled (``label`` != 255), and not in ``exclude`` (e.g. the pixels
    an unsaved edit sets). The Labels page confirms them with *Save and confirm the rest of this window*."""
    r0, c0, wh, ww = _check_window(status.shape, window)
    inside = np.zeros(status.shape, bool)
    inside[r0 : r0 + wh, c0 : c0 + ww] = True
    out = inside & (status == PIXEL_ORIGINAL) & (label != IGNORE)
    return out if exclude is None else out & ~np.asarray(exclude, bool)


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array to ``height``×``width`` (pixel centres are matched)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"resize_nearest needs a 2-D array, got shape {mask.shape}")
    sh, sw = mask.shape
    if (sh, sw) == (height, width):
        return mask.copy()
    rows = np.minimum(((np.arange(height) + 0.5) * sh / height).astype(np.int64), sh - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * sw / width).astype(np.int64), sw - 1)
    return mask[rows[:, None], cols[None, :]]


def stroke_mask(rgba: np.ndarray | None, height: int, width: int, alpha_threshold: int = 1) -> np.ndarray:
    """Boolean ``height``×``width`` mask of painted pixels of a canvas RGBA image (scaled to the window).

    Args:
        rgba: Canvas image H'×W'×4 (uint8, alpha last) of any size, or None (nothing painted).
        height, width: Window size in scene pixels.
        alpha_threshold: Minimum alpha counted as painted (1 = any alpha > 0).
    """
    if rgba is None:
        return np.zeros((height, width), bool)
    a = np.asarray(rgba)
    if a.ndim != 3 or a.shape[2] != 4:
        raise ValueError(f"canvas image must be H×W×4 (RGBA), got shape {a.shape}")
    painted = a[..., 3] >= alpha_threshold
    return resize_nearest(painted, height, width)


def apply_strokes(
    label: np.ndarray,
    rgba: np.ndarray | None,
    class_index: int,
    window: Window,
    *,
    num_classes: int | None = None,
    alpha_threshold: int = 1,
) -> np.ndarray:
    """A copy of the full scene ``label`` with the painted pixels of ``rgba`` set to ``class_index``.

    Args:
        label: uint8 H×W class-index mask of the whole scene (255 = ignore); not modified.
        rgba: Canvas image (RGBA, alpha > 0 = painted) covering ``window``; it may be smaller or larger
            than the window (e.g. a canvas shown at ``canvas_scale``) and is scaled to it.
        class_index: Class index to paint, or 255 to mark pixels as ignore / unlabelled.
        window: ``(row, col, height, width)`` of the canvas in scene pixels.
        num_classes: When given, ``class_index`` must be below it (or 255).
        alpha_threshold: Minimum alpha counted as painted.

    Returns:
        The new uint8 label (a copy, even when nothing was painted).

    Raises:
        ValueError: For a bad class index, a window outside the label or a canvas that is not RGBA.
    """
    lbl = np.asarray(label)
    if lbl.ndim != 2:
        raise ValueError(f"label must be a 2-D class-index mask, got shape {lbl.shape}")
    ci = int(class_index)
    if not (0 <= ci < (num_classes if num_classes is not None else IGNORE) or ci == IGNORE):
        raise ValueError(f"class index {ci} is not a class of the scheme (0..{(num_classes or IGNORE) - 1}) or 255 (ignore)")
    r, c, h, w = _check_window(lbl.shape, window)
    out = lbl.astype(np.uint8, copy=True)
    painted = stroke_mask(rgba, h, w, alpha_threshold)
    out[r : r + h, c : c + w][painted] = ci
    return out


def count_painted(rgba: np.ndarray | None, alpha_threshold: int = 1) -> int:
    """Number of painted canvas pixels (0 for None)."""
    if rgba is None:
        return 0
    a = np.asarray(rgba)
    if a.ndim != 3 or a.shape[2] != 4:
        return 0
    return int(np.count_nonzero(a[..., 3] >= alpha_threshold))


def rebase_edit(base: np.ndarray, edited: np.ndarray, latest: np.ndarray) -> tuple[np.ndarray, int]:
    """Carry an edit made on ``base`` onto ``latest``: the pixels where ``edited`` differs from ``base``
    take ``edited``'s value, all others keep ``latest``'s. Blind to what was saved since: on a pixel both changed,
    the edit wins -- the Labels page uses :func:`rebase_keeping_theirs`, which keeps those as saved.

    Returns:
        ``(new mask, number of pixels carried over)``.
    """
    base, edited, latest = (np.asarray(a) for a in (base, edited, latest))
    if not (base.shape == edited.shape == latest.shape):
        raise ValueError(f"masks differ in shape: base {base.shape}, edited {edited.shape}, latest {latest.shape}")
    changed = edited != base
    out = latest.astype(np.uint8, copy=True)
    out[changed] = edited[changed]
    return out, int(np.count_nonzero(changed))


@dataclass
class Rebased:
    """An unsaved edit carried onto a newer label version by :func:`rebase_keeping_theirs`.

    ``mask`` / ``painted``: the edit on the newer version (its pixels that nobody touched since its base);
    ``kept``: pixels of the edit that were touched since its base and now hold another value than the edit gave them
    (kept as saved since: the edit's pixel is dropped); ``agreed``: pixels of the edit touched since that already hold
    the edit's value; ``overwritable``: the kept pixels whose class the edit *changed* (not those it only confirmed by
    painting the class they held), with ``values`` the edit's class there, for an explicit overwrite."""

    mask: np.ndarray
    painted: np.ndarray
    carried: np.ndarray
    kept: np.ndarray
    agreed: np.ndarray
    overwritable: np.ndarray
    values: np.ndarray


def rebase_keeping_theirs(base: np.ndarray, edited: np.ndarray, painted: np.ndarray, latest: np.ndarray,
                          theirs: np.ndarray) -> Rebased:
    """Carry an edit made on ``base`` (``edited`` with ``painted`` pixels) onto ``latest`` without taking over what
    was saved since: the edit's pixels (painted, or whose value differs from ``base``) that ``theirs`` (touched by a
    version saved since ``base``: changed or confirmed) does not cover take the edit's value; those it covers keep
    ``latest``'s value and leave the edit (:class:`Rebased` counts them). A pixel the edit only confirmed (painted
    with the class it held in ``base``) therefore never reverts a change saved since.

    Raises:
        ValueError: When the masks differ in shape.
    """
    base, edited, painted, latest, theirs = (np.asarray(a) for a in (base, edited, painted, latest, theirs))
    if not (base.shape == edited.shape == painted.shape == latest.shape == theirs.shape):
        raise ValueError(f"masks differ in shape: base {base.shape}, edited {edited.shape}, painted {painted.shape}, "
                         f"latest {latest.shape}, touched since {theirs.shape}")
    sel = painted.astype(bool) | (edited != base)
    theirs = theirs.astype(bool)
    mine = sel & ~theirs
    clash = sel & theirs
    out = latest.astype(np.uint8, copy=True)
    out[mine] = edited[mine]
    kept = clash & (edited != latest)
    return Rebased(mask=out, painted=mine, carried=mine, kept=kept, agreed=clash & (edited == latest),
                   overwritable=kept & (edited != base), values=edited.astype(np.uint8, copy=True))


@dataclass
class VersionTouch:
    """A label version saved since an edit's base: who saved it, what it was (``layer``, ``undo vN`` …), and the
    flat pixels it changed or confirmed."""

    version: int
    analyst: str
    what: str
    pixels: np.ndarray


def touched_since(ws, scene_id: str, base_version: int, latest_version: int) -> list[VersionTouch]:
    """The versions ``base_version`` + 1 .. ``latest_version`` of a scene with the pixels each touched (an undo or a
    redo: those of the layer it took back or re-applied), oldest first -- what a stale save is checked against
    (``Workspace.save_label_edit``)."""
    out = []
    for h in ws.label_history(scene_id):
        if not base_version < h.version <= latest_version:
            continue
        target = h.target_version if h.kind in ("undo", "redo") else h.version
        layer = ws.label_layer(scene_id, target)
        px = np.union1d(np.asarray(layer.indices, np.int64), np.asarray(layer.confirm, np.int64))
        what = f"{h.kind} of v{h.target_version}" if h.kind in ("undo", "redo") else "saved"
        out.append(VersionTouch(int(h.version), h.analyst, what, px))
    return out


def touched_mask(touches: list[VersionTouch], shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``shape`` mask of every pixel the ``touches`` (:func:`touched_since`) changed or confirmed."""
    out = np.zeros(int(shape[0]) * int(shape[1]), bool)
    for t in touches:
        out[t.pixels] = True
    return out.reshape(shape)


def kept_by_version(touches: list[VersionTouch], kept: np.ndarray) -> list[tuple[VersionTouch, int]]:
    """``(version, pixels of kept)`` for the versions that last touched the ``kept`` pixels (each pixel counted once,
    for the newest version that touched it; versions holding none are left out)."""
    last = np.full(kept.size, -1, np.int64)
    for i, t in enumerate(touches):
        last[t.pixels] = i
    counts = np.bincount(last[kept.ravel() & (last >= 0)], minlength=len(touches))
    return [(t, int(counts[i])) for i, t in enumerate(touches) if counts[i]]


def stroke_pixels(
    rgba: np.ndarray | None, window: Window, shape: tuple[int, int], alpha_threshold: int = 1
) -> np.ndarray:
    """Boolean scene-sized (``shape`` = (H, W)) mask of the pixels painted on a canvas showing ``window``."""
    r, c, h, w = _check_window(tuple(shape), window)
    out = np.zeros(tuple(shape), bool)
    out[r : r + h, c : c + w] = stroke_mask(rgba, h, w, alpha_threshold)
    return out


def diff_layer(base: np.ndarray, edited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sparse layer turning ``base`` into ``edited``: ``(flat int32 indices, uint8 new values)``."""
    base, edited = np.asarray(base), np.asarray(edited)
    if base.shape != edited.shape:
        raise ValueError(f"masks differ in shape: base {base.shape}, edited {edited.shape}")
    idx = np.flatnonzero(base.ravel() != edited.ravel()).astype(np.int32)
    return idx, edited.ravel()[idx].astype(np.uint8)


def apply_layer(label: np.ndarray, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A copy of ``label`` with the flat ``indices`` set to ``values`` (the inverse of :func:`diff_layer`)."""
    out = np.asarray(label).astype(np.uint8, copy=True)
    out.ravel()[np.asarray(indices, np.int64)] = np.asarray(values, np.uint8)
    return out


TOOLS = ("brush", "eraser", "rect", "polygon", "fill", "accept")
"""Correction tools of the Labels page: what the painted pixels of one canvas do to the edit.

* ``brush`` / ``rect`` / ``polygon``: the painted (or enclosed, for a closed polygon) pixels take the class.
* ``eraser``: the painted pixels go back to the saved label they were edited from (wipes out strokes).
* ``fill``: each click (a painted blob) fills the 4-connected region of equal label value under its centre, inside
  the window, with the class (bucket fill).
* ``accept``: inside the painted shape (a rectangle on the page), the label takes the model's prediction.
"""

CANVAS_MODE = {"brush": "freedraw", "eraser": "freedraw", "rect": "rect", "polygon": "polygon", "fill": "point",
               "accept": "rect"}
RECT_TOOLS = ("rect", "accept")  # the tools drawn as rectangles: applied from the boxes' geometry (rect_strokes_rgba)
_ORIGIN = {"left": -0.5, "top": -0.5, "center": 0.0, "right": 0.5, "bottom": 0.5}  # Fabric's resolveOrigin


def drawn_boxes(drawing) -> list[tuple[float, float, float, float]] | None:
    """``(x0, y0, x1, y1)`` in canvas pixels of every rectangle of a canvas drawing (Fabric JSON): the rectangle's
    geometry, the filled box the outline is centred on, not the outline (``strokeWidth``) around it.

    As Fabric places it (``getRelativeCenterPoint``): ``left``/``top`` is the ``originX``/``originY`` point of the box
    *with* its stroke (streamlit-drawable-canvas's rect tool: the press, ``originX="left"``, ``originY="top"``,
    ``strokeUniform``), so the centre is ``left + (0.5, 0 or -0.5 for a left, centre or right origin) * (width *
    scaleX + strokeWidth)`` (``(width + strokeWidth) * scaleX`` without ``strokeUniform``), the box ``width * scaleX``
    wide around it. None when the
    drawing is not a Fabric JSON or holds anything but axis-aligned rectangles (a rotated or skewed one, a path)."""
    objs = drawing.get("objects") if isinstance(drawing, dict) else None
    if not isinstance(objs, list):
        return None
    out = []
    for o in objs:
        if not isinstance(o, dict) or str(o.get("type", "")).lower() != "rect":
            return None
        try:
            if float(o.get("angle") or 0) % 360 or float(o.get("skewX") or 0) or float(o.get("skewY") or 0):
                return None
            sx, sy = abs(float(o.get("scaleX", 1))), abs(float(o.get("scaleY", 1)))
            w, h = float(o.get("width", 0)), float(o.get("height", 0))
            sw = float(o.get("strokeWidth") or 0)  # counted by Fabric whether or not a stroke colour is set
            dx, dy = (w * sx + sw, h * sy + sw) if o.get("strokeUniform") else ((w + sw) * sx, (h + sw) * sy)
            cx = float(o.get("left", 0)) - _ORIGIN.get(str(o.get("originX", "left")), -0.5) * dx
            cy = float(o.get("top", 0)) - _ORIGIN.get(str(o.get("originY", "top")), -0.5) * dy
        except (TypeError, ValueError):
            return None
        x0, y0, x1, y1 = cx - w * sx / 2, cy - h * sy / 2, cx + w * sx / 2, cy + h * sy / 2
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            return None
        out.append((x0, y0, x1, y1))
    return out


def boxes_mask(boxes, height: int, width: int, canvas_height: int, canvas_width: int) -> np.ndarray:
    """Boolean ``height``×``width`` mask (window pixels) of the pixels whose centre lies inside one of ``boxes``
    (``(x0, y0, x1, y1)`` canvas pixels on a ``canvas_height``×``canvas_width`` canvas showing the window): a
    55×35 px box at scale 1 is exactly 55×35 pixels, wherever it starts."""
    sy, sx = canvas_height / height, canvas_width / width
    out = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        # pixel j covers canvas [j*sx, (j+1)*sx): inside when x0 <= (j + 0.5)*sx < x1
        c0, c1 = max(0, math.ceil(x0 / sx - 0.5)), min(width, math.ceil(x1 / sx - 0.5))
        r0, r1 = max(0, math.ceil(y0 / sy - 0.5)), min(height, math.ceil(y1 / sy - 0.5))
        if c1 > c0 and r1 > r0:
            out[r0:r1, c0:c1] = True
    return out


def rect_strokes_rgba(rgba: np.ndarray | None, drawing, height: int, width: int, canvas_height: int,
                      canvas_width: int) -> np.ndarray | None:
    """What a rectangle tool painted, from the rectangles' geometry: a ``height``×``width`` (window) RGBA image, alpha
    255 inside the drawn boxes (:func:`drawn_boxes`, :func:`boxes_mask`), for :func:`stroke_pixels` and
    :func:`count_painted`. The canvas's own image (``rgba``) also holds each box's outline, painted around it (a
    55×35 px box came out 59×39). ``rgba`` unchanged when nothing was sent (None) or the drawing is not only
    axis-aligned rectangles."""
    return _geometry_rgba(rgba, drawn_boxes(drawing) if rgba is not None else None, boxes_mask, height, width,
                          canvas_height, canvas_width)


def _geometry_rgba(rgba: np.ndarray | None, shapes, mask_fn, height: int, width: int, canvas_height: int,
                   canvas_width: int) -> np.ndarray | None:
    """The RGBA stroke image of shapes read from a drawing's geometry (alpha 255 where ``mask_fn(shapes, …)`` says
    inside); ``rgba`` itself when nothing was sent (None) or the shapes could not be read (``shapes`` None)."""
    if rgba is None or shapes is None:
        return rgba
    out = np.zeros((height, width, 4), np.uint8)
    out[mask_fn(shapes, height, width, canvas_height, canvas_width), 3] = 255
    return out


POLYGON_TOOLS = ("polygon",)  # the tools drawn as polygons: applied from the polygons' geometry (polygon_strokes_rgba)


def _path_points(path) -> list[tuple[float, float]] | None:
    """The vertices of a Fabric path made of one ``M`` and straight ``L`` segments (an optional closing ``Z``): what
    the polygon tool shows while its corners are being clicked. None for anything else (curves, several subpaths)."""
    if not isinstance(path, list) or not path:
        return None
    pts = []
    for i, cmd in enumerate(path):
        if not isinstance(cmd, (list, tuple)) or not cmd:
            return None
        op = str(cmd[0]).upper()
        if op == "Z" and len(cmd) == 1 and i == len(path) - 1:
            continue
        if op not in ("M", "L") or len(cmd) != 3 or (op == "M") != (i == 0):
            return None
        pts.append((float(cmd[1]), float(cmd[2])))
    return pts


def drawn_polygons(drawing) -> list[tuple[np.ndarray, str]] | None:
    """``(vertices, fill rule)`` of every polygon of a canvas drawing (Fabric JSON): an N×2 float array of the
    vertices in canvas pixels, the polygon the fill covers, not the outline (``strokeWidth``) around it.

    streamlit-drawable-canvas's polygon tool (Fabric 7) sends a closed polygon as a ``Polygon`` whose ``points``
    are the clicked scene points, and the polygon being clicked as a ``Path`` of ``M``/``L`` commands (its fill
    closes it). Fabric places either (``calcOwnMatrix``) by mapping a point ``p`` to ``centre + R(angle) ·
    S(scaleX, scaleY, flips) · (p - pathOffset)``, ``pathOffset`` being the centre of the points' bounding box (not
    sent: recomputed here) and the centre found from ``left``/``top`` and ``originX``/``originY`` as for a
    rectangle (:func:`drawn_boxes`; default origin ``center``). None when the drawing is not a Fabric JSON or holds
    anything else (a skewed shape, a curve, a rectangle, a brush stroke)."""
    objs = drawing.get("objects") if isinstance(drawing, dict) else None
    if not isinstance(objs, list):
        return None
    out = []
    for o in objs:
        if not isinstance(o, dict):
            return None
        kind = str(o.get("type", "")).lower()
        try:
            if kind == "polygon":
                raw = o.get("points")
                if not isinstance(raw, list):
                    return None
                pts = [(float(q["x"]), float(q["y"])) for q in raw]
            elif kind == "path":
                pts = _path_points(o.get("path"))
                if pts is None:
                    return None
            else:
                return None
            if float(o.get("skewX") or 0) or float(o.get("skewY") or 0):
                return None
            p = np.asarray(pts, float).reshape(-1, 2)
            if len(p) < 3:  # a point or a line: it encloses nothing
                if not np.isfinite(p).all():
                    return None
                continue
            sx, sy = float(o.get("scaleX", 1)), float(o.get("scaleY", 1))
            w, h = float(o.get("width", 0)), float(o.get("height", 0))
            sw = float(o.get("strokeWidth") or 0)
            ax, ay = abs(sx), abs(sy)
            dx, dy = (w * ax + sw, h * ay + sw) if o.get("strokeUniform") else ((w + sw) * ax, (h + sw) * ay)
            ox, oy = (_origin(o.get("originX", "center")), _origin(o.get("originY", "center")))
            theta = math.radians(float(o.get("angle") or 0))
            cos, sin = math.cos(theta), math.sin(theta)
            left, top = float(o.get("left", 0)), float(o.get("top", 0))
            # the centre: the origin point moved by the offset to the centre, rotated about the origin point
            ux, uy = -ox * dx, -oy * dy
            cx, cy = left + ux * cos - uy * sin, top + ux * sin + uy * cos
            po = (p.min(axis=0) + p.max(axis=0)) / 2
            q = (p - po) * [sx * (-1 if o.get("flipX") else 1), sy * (-1 if o.get("flipY") else 1)]
            q = np.stack([q[:, 0] * cos - q[:, 1] * sin, q[:, 0] * sin + q[:, 1] * cos], axis=1)
            shift = np.array([cx, cy]) - po
            if theta == 0 and sx == sy == 1 and not o.get("flipX") and not o.get("flipY"):
                # not moved, scaled or turned since it was drawn: its points are where it is (``left``/``top`` are
                # rounded to 4 decimals when sent; a shift of 1e-4 px could move a pixel centre on an edge)
                shift[np.abs(shift) < 1e-3] = 0
            q = q + po + shift
        except (TypeError, ValueError, KeyError):
            return None
        if not np.isfinite(q).all():
            return None
        out.append((q, "evenodd" if str(o.get("fillRule", "nonzero")).lower() == "evenodd" else "nonzero"))
    return out


def _origin(v) -> float:
    """Fabric's ``resolveOrigin``: ``left``/``top`` -0.5, ``center`` 0, ``right``/``bottom`` 0.5, a number minus 0.5."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v) - 0.5
    if str(v) not in _ORIGIN:
        raise ValueError(f"unknown origin {v!r}")
    return _ORIGIN[str(v)]


def polygons_mask(polygons, height: int, width: int, canvas_height: int, canvas_width: int) -> np.ndarray:
    """Boolean ``height``×``width`` mask (window pixels) of the pixels whose centre lies inside one of ``polygons``
    (:func:`drawn_polygons`: vertices in canvas pixels on a ``canvas_height``×``canvas_width`` canvas showing the
    window; ``"nonzero"`` or ``"evenodd"`` fill rule, as the canvas fills them). A centre on an edge counts as a
    rectangle's does (:func:`boxes_mask`): inside on the left and top edges, outside on the right and bottom ones,
    so a square drawn as a polygon covers exactly the pixels of the same box."""
    sy, sx = canvas_height / height, canvas_width / width
    out = np.zeros((height, width), bool)
    for poly, rule in polygons:
        # window-pixel coordinates in which pixel (i, j)'s centre is the point (j, i)
        v = np.asarray(poly, float) / [sx, sy] - 0.5
        j0, j1 = max(0, math.ceil(v[:, 0].min())), min(width - 1, math.floor(v[:, 0].max()))
        i0, i1 = max(0, math.ceil(v[:, 1].min())), min(height - 1, math.floor(v[:, 1].max()))
        if j1 < j0 or i1 < i0:
            continue
        cols = np.arange(j0, j1 + 1, dtype=float)
        wind = np.zeros((i1 - i0 + 1, j1 - j0 + 1), np.int32)
        for (xa, ya), (xb, yb) in zip(v, np.roll(v, -1, axis=0)):
            if ya == yb:
                continue  # a horizontal edge crosses no row of centres' rays
            lo, hi = (ya, yb) if ya < yb else (yb, ya)
            # rows whose centre's y is in [lo, hi): the ray from the centre to the right crosses the edge when the
            # edge's x at that y is beyond the centre (a centre on the edge is not crossed: left edge in, right out)
            r0, r1 = max(i0, math.ceil(lo)), min(i1, math.ceil(hi) - 1)
            if r1 < r0:
                continue
            rows = np.arange(r0, r1 + 1, dtype=float)
            xs = xa + (rows - ya) * (xb - xa) / (yb - ya)
            wind[r0 - i0 : r1 - i0 + 1] += np.where(cols[None, :] < xs[:, None], 1 if yb > ya else -1, 0).astype(np.int32)
        inside = (wind % 2 == 1) if rule == "evenodd" else (wind != 0)
        out[i0 : i1 + 1, j0 : j1 + 1] |= inside
    return out


def polygon_strokes_rgba(rgba: np.ndarray | None, drawing, height: int, width: int, canvas_height: int,
                         canvas_width: int) -> np.ndarray | None:
    """What the polygon tool painted, from the polygons' geometry: a ``height``×``width`` (window) RGBA image, alpha
    255 inside the drawn polygons (:func:`drawn_polygons`, :func:`polygons_mask`). The canvas's own image (``rgba``)
    also holds each polygon's 2 px outline, half of it beyond the vertices (and, while a polygon is being clicked,
    its corner handles). ``rgba`` unchanged when nothing was sent (None) or the drawing holds anything but straight-
    edged polygons."""
    return _geometry_rgba(rgba, drawn_polygons(drawing) if rgba is not None else None, polygons_mask, height, width,
                          canvas_height, canvas_width)


def blob_seeds(painted: np.ndarray) -> list[tuple[int, int]]:
    """One ``(row, col)`` seed per 4-connected blob of ``painted``: the blob's pixel nearest its centroid."""
    import cv2

    m = np.asarray(painted, bool)
    if not m.any():
        return []
    n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=4)
    seeds = []
    for k in range(1, n):
        rr, cc = np.nonzero(lab == k)
        i = int(np.argmin((rr - rr.mean()) ** 2 + (cc - cc.mean()) ** 2))
        seeds.append((int(rr[i]), int(cc[i])))
    return seeds


def fill_region(mask: np.ndarray, seed: tuple[int, int], window: Window | None = None) -> np.ndarray:
    """Boolean mask (shape of ``mask``) of the 4-connected pixels with ``mask[seed]``'s value, reachable from
    ``seed`` without leaving ``window`` (the whole mask when None)."""
    import cv2

    m = np.asarray(mask)
    r, c, h, w = _check_window(m.shape, window if window is not None else (0, 0, m.shape[0], m.shape[1]))
    sr, sc = int(seed[0]), int(seed[1])
    if not (r <= sr < r + h and c <= sc < c + w):
        raise ValueError(f"seed {seed} lies outside the window {(r, c, h, w)}")
    sub = m[r : r + h, c : c + w]
    same = (sub == sub[sr - r, sc - c]).astype(np.uint8)
    _, lab = cv2.connectedComponents(same, connectivity=4)
    out = np.zeros(m.shape, bool)
    out[r : r + h, c : c + w] = lab == lab[sr - r, sc - c]
    return out


def apply_tool(
    mask: np.ndarray,
    painted: np.ndarray,
    tool: str,
    class_index: int,
    window: Window,
    *,
    base: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one canvas of one correction tool to an edit.

    Args:
        mask: uint8 H×W edited label of the whole scene (not modified).
        painted: Boolean H×W mask of the pixels painted on the canvas (:func:`stroke_pixels`).
        tool: One of :data:`TOOLS`.
        class_index: Class written by brush/rect/polygon/fill (255 = ignore).
        window: ``(row, col, height, width)`` of the canvas; painting outside it is refused.
        base: H×W saved label the edit started from (needed by ``eraser``).
        prediction: ``height``×``width`` class-index prediction of the window, in the label's scheme (``accept``).
        num_classes: When given, ``class_index`` and prediction values must be below it (or 255).

    Returns:
        ``(new mask, touched)``: a copy of ``mask`` with the tool applied, and the boolean H×W mask of the pixels
        the tool wrote (for ``eraser``: the pixels it restored).

    Raises:
        ValueError: Unknown tool, bad class index, shapes that do not match, a missing ``base``/``prediction``.
    """
    if tool not in TOOLS:
        raise ValueError(f"unknown correction tool {tool!r}; choose one of {', '.join(TOOLS)}")
    m = np.asarray(mask)
    px = np.asarray(painted, bool)
    if m.ndim != 2 or px.shape != m.shape:
        raise ValueError(f"painted pixels {px.shape} and label {m.shape} must be the same 2-D shape")
    r, c, h, w = _check_window(m.shape, window)
    inside = np.zeros_like(px)
    inside[r : r + h, c : c + w] = True
    px = px & inside
    ci = int(class_index)
    limit = num_classes if num_classes is not None else IGNORE
    if tool in ("brush", "rect", "polygon", "fill") and not (0 <= ci < limit or ci == IGNORE):
        raise ValueError(f"class index {ci} is not a class of the scheme (0..{limit - 1}) or 255 (ignore)")
    out = m.astype(np.uint8, copy=True)
    if tool == "eraser":
        if base is None or np.shape(base) != m.shape:
            raise ValueError(f"the eraser needs the saved label of shape {m.shape}")
        out[px] = np.asarray(base, np.uint8)[px]
        return out, px
    if tool == "accept":
        if prediction is None:
            raise ValueError("accept-prediction needs a prediction of the window: predict it first")
        pred = np.asarray(prediction)
        if pred.shape != (h, w):
            raise ValueError(f"prediction {pred.shape} does not match the window {(h, w)}")
        bad = (pred >= limit) & (pred != IGNORE)
        if bad.any():
            raise ValueError(f"prediction holds class {int(pred[bad].max())}, outside the label's scheme (0..{limit - 1})")
        full = np.zeros(m.shape, np.uint8)
        full[r : r + h, c : c + w] = pred
        out[px] = full[px]
        return out, px
    if tool == "fill":
        touched = np.zeros_like(px)
        for seed in blob_seeds(px):
            region = fill_region(out, seed, (r, c, h, w))
            out[region] = ci
            touched |= region
        return out, touched
    out[px] = ci
    return out, px


STATUS_COLORS = {  # pixel status code (seghz.store.PIXEL_*) -> RGB
    0: (0, 0, 0),  # original: not drawn (see colorize_status)
    1: (255, 140, 0),  # corrected: orange
    2: (30, 200, 90),  # confirmed: green
    255: (128, 128, 128),  # ignored: grey
}


def colorize_status(status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB image (uint8 H×W×3) of pixel status codes and the mask of pixels worth drawing (not original)."""
    st = np.asarray(status)
    rgb = np.zeros((*st.shape, 3), np.uint8)
    for code, color in STATUS_COLORS.items():
        rgb[st == code] = color
    return rgb, st != 0


def blend_overlay(image: np.ndarray, colored: np.ndarray, opacity: float, mask: np.ndarray | None = None) -> np.ndarray:
    """RGB ``image`` with ``colored`` (RGB, same size) blended on top at ``opacity`` (where ``mask`` is True)."""
    img = np.asarray(image, np.float32)
    col = np.asarray(colored, np.float32)
    if img.shape != col.shape:
        raise ValueError(f"image {img.shape} and overlay {col.shape} differ in shape")
    a = float(min(1.0, max(0.0, opacity)))
    out = img * (1 - a) + col * a
    if mask is not None:
        out = np.where(np.asarray(mask, bool)[..., None], out, img)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def agreement(pred: np.ndarray, label: np.ndarray) -> float | None:
    """Share of labelled pixels (label != 255) where ``pred`` equals ``label``; None when none are labelled."""
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
    keep = label != IGNORE
    n = int(np.count_nonzero(keep))
    return None if n == 0 else float(np.count_nonzero(pred[keep] == label[keep]) / n)


def window_options(scene_height: int, scene_width: int, sizes=(256, 512, 768, 1024)) -> list[int]:
    """Window sizes worth offering for a scene: those below its longer side, plus that side capped at 1024."""
    longest = min(max(scene_height, scene_width), MAX_WINDOW)
    out = sorted({s for s in sizes if s < longest} | {longest})
    return out


def offset_step(extent: int) -> int:
    """A slider step for window offsets over ``0..extent``: 1 below 64 px, 16 below 1024 px, else 64."""
    return 1 if extent < 64 else 16 if extent < 1024 else 64


def offset_slider_max(extent: int) -> int:
    """Slider maximum for offsets over ``0..extent``: ``extent`` rounded up to a multiple of the step, so the
    last window (flush with the border, after :func:`clamp_window`) is always reachable."""
    step = offset_step(extent)
    return int(math.ceil(max(0, extent) / step) * step)



def box_on_canvas(bbox: tuple[int, int, int, int], window: tuple[int, int, int, int], scale: float,
                  pad: int = 3) -> tuple[int, int, int, int] | None:
    """Where a scene box ``(row0, col0, row1, col1)`` (end exclusive) lies on the canvas of ``window``
    ``(row, col, height, width)`` shown at ``scale`` canvas px per scene px: ``(x0, y0, x1, y1)`` of its outline,
    ``pad`` canvas px outside the box, clipped to the canvas; None when the box is not in the window."""
    r0, c0, r1, c1 = (int(v) for v in bbox)
    wr, wc, wh, ww = (int(v) for v in window)
    if r1 <= wr or r0 >= wr + wh or c1 <= wc or c0 >= wc + ww:
        return None
    h, w = round(wh * scale), round(ww * scale)
    x0 = max(0, math.floor((c0 - wc) * scale) - pad)
    y0 = max(0, math.floor((r0 - wr) * scale) - pad)
    x1 = min(w - 1, math.ceil((c1 - wc) * scale) - 1 + pad)
    y1 = min(h - 1, math.ceil((r1 - wr) * scale) - 1 + pad)
    return x0, y0, x1, y1


def zoom_window(bbox: tuple[int, int, int, int], scene_height: int, scene_width: int, margin: float = 0.5,
                sizes=(256, 512, 768, 1024)) -> tuple[int, int, int]:
    """Window settings ``(size, row offset, column offset)`` of the Labels page that show ``bbox`` zoomed in.

    The size is the smallest of :func:`window_options` holding the box plus ``margin`` of its size on each side
    (or the largest when none does); the offsets centre the box, rounded to the sliders' steps
    (:func:`offset_step`) so the sliders can show them, and :func:`clamp_window` keeps the window in the scene.

    Args:
        bbox: ``(row0, col0, row1, col1)`` in scene pixels (end exclusive), e.g. a noise-queue item.
    """
    r0, c0, r1, c1 = (int(v) for v in bbox)
    if not (0 <= r0 < r1 <= scene_height and 0 <= c0 < c1 <= scene_width):
        raise ValueError(f"bbox {bbox} is empty or outside the {scene_height}x{scene_width} scene")
    opts = window_options(scene_height, scene_width, sizes)
    need = max(r1 - r0, c1 - c0) * (1 + 2 * margin)
    size = next((s for s in opts if s >= need), opts[-1])

    def offset(lo: int, hi: int, extent: int) -> int:
        room = extent - min(size, extent)
        if room <= 0:
            return 0
        step = offset_step(room)
        centre = (lo + hi) / 2 - size / 2
        want = min(max(0.0, centre), room)
        # round down to the slider step, but never so far that the box's far edge leaves the window
        off = int(want // step) * step
        if off + size < hi:
            off = min(off + step, offset_slider_max(room))
        return off

    return size, offset(r0, r1, scene_height), offset(c0, c1, scene_width)

__all__ = [
    "CANVAS_MODE", "MAX_WINDOW", "POLYGON_TOOLS", "RECT_TOOLS", "STATUS_COLORS", "TOOLS", "Rebased", "VersionTouch", "agreement",
    "apply_layer", "apply_strokes", "apply_tool", "blend_overlay", "blob_seeds", "box_on_canvas", "boxes_mask",
    "canvas_scale", "clamp_window", "colorize_status", "count_painted", "diff_layer", "drawn_boxes", "drawn_polygons", "fill_region", "kept_by_version", "offset_slider_max", "offset_step",
    "polygon_strokes_rgba", "polygons_mask", "rebase_edit", "rebase_keeping_theirs", "rect_strokes_rgba", "resize_nearest", "stroke_mask", "stroke_pixels", "touched_mask",
    "touched_since", "window_options", "zoom_window",
]
