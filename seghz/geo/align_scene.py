"""File-level alignment workflow shared by the Align page and ``python -m seghz align``.

Reads a label file (palette or id mask, via :func:`seghz.data.io.read_label`) and an image, loads control
points, renders before/after overlays, and saves an aligned label as a workspace scene whose provenance
(matrix, method, RMSE, source files) is kept in the scene's source line and in ``alignment.json`` next to it.
No Streamlit here.
"""
from __future__ import annotations

import io
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from seghz.classes import Scheme, get_scheme
from seghz.data.io import read_image, read_label, write_index_mask, write_rgb
from seghz.errors import BadInputError
from seghz.geo import align as A

AIRPORT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hangzhou_airport"


def default_airport_files() -> tuple[Path, Path] | None:
    """(A_label.png, B_sat.jpeg) of the local sample data when present (never shipped with SegHZ)."""
    lab, img = AIRPORT_DIR / "A_label.png", AIRPORT_DIR / "B_sat.jpeg"
    return (lab, img) if lab.is_file() and img.is_file() else None


def load_pair(label_path, image_path, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """The label as class indices of ``scheme`` (255 = ignore) and the image as RGB uint8. Sizes may differ."""
    return read_label(label_path, get_scheme(scheme)), read_image(image_path)


def load_points(path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Control points from JSON: ``{"points": [{"label_xy": [x, y], "image_xy": [x, y], "id": ...}, ...]}`` or a
    list of such objects or of ``[label_x, label_y, image_x, image_y]`` rows. Returns (src, dst, ids)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise BadInputError(p, f"not a readable file of control points ({e})") from None
    return parse_points(text, p)


POINT_COLUMNS = ("label_x", "label_y", "image_x", "image_y")


def _csv_rows(text: str, p) -> list:
    """The rows of a CSV of control points: a header with ``label_x, label_y, image_x, image_y`` (any order, other
    columns such as ``id`` or ``residual_px`` ignored; the Align table's columns), or no header and four numbers a
    row."""
    import csv

    lines = [ln for ln in csv.reader(io.StringIO(text)) if any(c.strip() for c in ln)]
    if not lines:
        raise BadInputError(p, "holds no control points (an empty file)")
    head = [c.strip().lower() for c in lines[0]]
    if any(h in POINT_COLUMNS for h in head):
        missing = [c for c in POINT_COLUMNS if c not in head]
        if missing:
            raise BadInputError(p, f"the CSV header lacks the column(s) {', '.join(missing)} (it needs "
                                   f"{', '.join(POINT_COLUMNS)}; it has {', '.join(head)})")
        idx, id_col = [head.index(c) for c in POINT_COLUMNS], head.index("id") if "id" in head else None
        rows = []
        for i, ln in enumerate(lines[1:]):
            try:
                vals = [ln[j] for j in idx]
            except IndexError:
                raise BadInputError(p, f"CSV row {i + 2} has {len(ln)} column(s), fewer than the header's "
                                       f"{len(head)}") from None
            rows.append({"label_xy": vals[:2], "image_xy": vals[2:],
                         **({"id": ln[id_col]} if id_col is not None and id_col < len(ln) else {})})
        return rows
    for i, ln in enumerate(lines):
        if len(ln) != 4:
            raise BadInputError(p, f"CSV row {i + 1} has {len(ln)} column(s): expected a header with "
                                   f"{', '.join(POINT_COLUMNS)}, or four numbers a row (label x, label y, image x, "
                                   "image y)")
    return lines


def parse_points(data: bytes | str, source="control points") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Control points from the text of a file (an uploaded one, or :func:`load_points`'s): JSON as
    :func:`load_points` describes, or CSV (a header with ``label_x, label_y, image_x, image_y``, or four numbers a
    row). ``source`` names the file in errors. Raises :class:`BadInputError` naming the problem."""
    p = source
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadInputError(p, "is not a text file (expected JSON or CSV control points)") from None
    text = data.lstrip("\ufeff").strip()
    if not text:
        raise BadInputError(p, "holds no control points (an empty file)")
    if text[0] in "[{":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadInputError(p, f"not a readable JSON file of control points ({e})") from None
        rows = parsed.get("points") if isinstance(parsed, dict) else parsed
    else:
        rows = _csv_rows(text, p)
    if not isinstance(rows, list) or not rows:
        raise BadInputError(p, "holds no control points (expected a 'points' list, or CSV rows "
                               f"{', '.join(POINT_COLUMNS)})")
    src, dst, ids = [], [], []
    for i, r in enumerate(rows):
        try:
            if isinstance(r, dict):
                s_, d_ = [float(v) for v in r["label_xy"]][:2], [float(v) for v in r["image_xy"]][:2]
                ids.append(str(r.get("id", i + 1)))
            else:
                lx, ly, ix, iy = (float(v) for v in r)
                s_, d_ = [lx, ly], [ix, iy]
                ids.append(str(i + 1))
            if len(s_) != 2 or len(d_) != 2 or not np.isfinite(s_ + d_).all():
                raise ValueError
            src.append(s_)
            dst.append(d_)
        except (KeyError, TypeError, ValueError):
            raise BadInputError(p, f"point {i + 1} is not label_xy/image_xy pairs of finite numbers: {r!r}") from None
    return np.asarray(src, np.float64), np.asarray(dst, np.float64), ids


def points_table(src, dst, M=None, ids=None) -> list[dict]:
    """Rows for display: label x/y, image x/y and (given ``M``) the residual of each pair in image px."""
    src, dst = np.asarray(src, np.float64).reshape(-1, 2), np.asarray(dst, np.float64).reshape(-1, 2)
    res = A.residuals(M, src, dst) if M is not None and len(src) else [None] * len(src)
    return [{"id": (ids[i] if ids else str(i + 1)), "label_x": float(s[0]), "label_y": float(s[1]),
             "image_x": float(d[0]), "image_y": float(d[1]),
             "residual_px": None if r is None else round(float(r), 2)} for i, (s, d, r) in enumerate(zip(src, dst, res))]


def before_after(label: np.ndarray, image: np.ndarray, M, scheme: Scheme | str, opacity: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """(before, after) overlays: the label stretched onto the image (plain resize) and warped with ``M``, in the
    colours of ``scheme``: a scheme name draws the study's colours (as :func:`write_overlay` writes them to
    disk); the Align page passes the session's screen scheme (``ui.common.screen_scheme``)."""
    pal = (get_scheme(scheme) if isinstance(scheme, str) else scheme).palette()
    before = A.label_overlay(image, label, A.resize_transform(label.shape, image.shape), pal, opacity)
    after = A.label_overlay(image, label, M, pal, opacity)
    return before, after


def write_overlay(path, label: np.ndarray, image: np.ndarray, M, scheme: str, opacity: float = 0.45) -> Path:
    """Write the before (left) / after (right) overlay side by side as one PNG at ``path`` (study colours)."""
    b, a = before_after(label, image, M, scheme, opacity)
    gap = np.full((b.shape[0], 8, 3), 255, np.uint8)
    p = Path(path)
    write_rgb(p, np.concatenate([b, gap, a], axis=1))
    return p


def provenance(M, *, kind: str, method: str, label_path, image_path, scheme: str, rmse: float | None = None,
               n_points: int = 0, holdout_rmse: float | None = None, extra: dict | None = None) -> dict:
    """The record saved with an aligned scene. ``M`` is a 3×3 matrix or a :class:`seghz.geo.align.LocalWarp`; for
    the latter ``matrix`` is its global 3×3 and ``local`` holds the displacement field (control grid, plain JSON) and
    how it was fitted; :func:`load_transform` reads either back."""
    local = None
    if isinstance(M, A.LocalWarp):
        local = M.to_json()
        local.pop("matrix", None)
        M = M.M
    rec = {"transform": "label px -> image px (3x3, pixel centres at integers)" if local is None else
           "label px -> image px: matrix (3x3, pixel centres at integers) + local displacement field (see 'local')",
            "matrix": np.asarray(M, np.float64).tolist(), "kind": kind, "method": method,
            "rmse_px": None if rmse is None else round(float(rmse), 3), "control_points": int(n_points),
            "leave_one_out_rmse_px": None if holdout_rmse is None else round(float(holdout_rmse), 3),
            "label_file": str(label_path), "image_file": str(image_path), "scheme": scheme,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"), **(extra or {})}
    if local is not None:
        rec["refinement"] = "local"
        rec["local"] = local
    return rec


def load_transform(record):
    """The label → image mapping of an ``alignment.json`` record (a dict, or the path of the file): the 3×3 matrix
    as an array, or a :class:`seghz.geo.align.LocalWarp` when the record holds a local refinement."""
    if not isinstance(record, dict):
        p = Path(record)
        try:
            record = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise BadInputError(p, f"not a readable alignment record ({e})") from None
    M = np.asarray(record["matrix"], np.float64)
    if record.get("local"):
        return A.LocalWarp.from_json({**record["local"], "matrix": record["matrix"]})
    return M


SAME_ALIGNMENT_PX = 0.01  # two transforms that map every sampled label point within this (image px) are the same


def _same_file(a, b) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError, TypeError, ValueError):
        return str(a) == str(b)


def same_alignment(record: dict, label_path, image_path, M, *, scheme: str, label_shape: tuple[int, int],
                   tol_px: float = SAME_ALIGNMENT_PX) -> bool:
    """True when an ``alignment.json`` record describes the alignment ``M`` (3×3 or
    :class:`seghz.geo.align.LocalWarp`) of the same label file onto the same image in the same scheme: the two
    mappings agree within ``tol_px`` image px on a 17×17 grid of points over the label (``label_shape`` = (H, W)).
    The saved local field is rounded to 0.001 px, so a saved field read back still counts as the same."""
    try:
        if record.get("scheme") != scheme or not _same_file(record.get("label_file", ""), label_path) \
                or not _same_file(record.get("image_file", ""), image_path):
            return False
        old = load_transform(record)
    except (KeyError, TypeError, ValueError):
        return False
    if isinstance(old, A.LocalWarp) != isinstance(M, A.LocalWarp):
        return False
    h, w = int(label_shape[0]), int(label_shape[1])
    gx, gy = np.meshgrid(np.linspace(0, max(w - 1, 0), 17), np.linspace(0, max(h - 1, 0), 17))
    pts = np.c_[gx.ravel(), gy.ravel()]
    with np.errstate(all="ignore"):
        a, b = A.map_points(old, pts), A.map_points(M, pts)
    d = np.abs(a - b)
    return bool(np.isfinite(d).all() and d.max() <= tol_px)


def find_aligned_scene(ws, label_path, image_path, M, *, scheme: str, label_shape: tuple[int, int],
                       scene_ids=None, tol_px: float = SAME_ALIGNMENT_PX):
    """The first scene of the workspace (or of ``scene_ids``) saved from this same alignment (see
    :func:`same_alignment`; its ``alignment.json`` is read), or None. Saving it again would only make an
    indistinguishable copy."""
    for sc in ws.list_scenes():
        if scene_ids is not None and sc.id not in scene_ids:
            continue
        f = ws.scene_path(sc, "image").parent / "alignment.json"
        try:
            rec = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict) and same_alignment(rec, label_path, image_path, M, scheme=scheme,
                                                    label_shape=label_shape, tol_px=tol_px):
            return sc
    return None


def distinct_scene_name(ws, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``, … when scenes of the workspace already carry it, so that scenes can
    be told apart in the scene pickers (ids are made unique on their own; names were not)."""
    from seghz.store import first_free

    return first_free(name, {s.name for s in ws.list_scenes()}, " ({n})")


def import_aligned_scene(ws, label_path, image_path, M, *, scheme: str, name: str | None = None, kind: str = "homography",
                         method: str = "manual", rmse: float | None = None, n_points: int = 0,
                         holdout_rmse: float | None = None, label: np.ndarray | None = None, extra: dict | None = None,
                         target_scheme: str | None = None, split: str = "none"):
    """Warp the label into the image grid with ``M`` (3×3 or :class:`seghz.geo.align.LocalWarp`) and import image +
    warped label as a new scene (through :func:`seghz.data.scenes.import_scene`). Pixels outside the label become unlabelled. The scene's source
    line names the files, method and RMSE; ``alignment.json`` in the scene folder holds the full record. A name
    another scene already has gets a number (:func:`distinct_scene_name`); :func:`find_aligned_scene` tells whether
    this alignment was saved before. ``target_scheme``: the scene's labels crosswalked to it (e.g. hz20 -> hz7, the
    model's scheme; the alignment record keeps the label's own ``scheme``); ``split``: where the scene goes."""
    from seghz.data.io import raster_info
    from seghz.data.scenes import import_scene

    A.check_transform(M.M if isinstance(M, A.LocalWarp) else M, kind)
    info = raster_info(image_path)
    lbl = label if label is not None else read_label(label_path, get_scheme(scheme))
    warped = A.warp_label(lbl, M, (info.height, info.width))
    if not (warped != A.IGNORE).any():
        raise BadInputError(image_path, "the transform puts the label entirely outside the image")
    rec = provenance(M, kind=kind, method=method, label_path=label_path, image_path=image_path, scheme=scheme,
                     rmse=rmse, n_points=n_points, holdout_rmse=holdout_rmse, extra=extra)
    rm = "n/a" if rmse is None else f"{rmse:.2f} px on {n_points} control points"
    how = f"{kind}+local field" if isinstance(M, A.LocalWarp) else kind
    source = f"{image_path} + label {label_path} aligned ({method}, {how}, RMSE {rm}); see alignment.json"
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "aligned_label.png"
        write_index_mask(tmp, warped, get_scheme(scheme))  # palette PNG: 255 -> black -> unlabelled on read
        return import_scene(ws, image_path, tmp, scheme=scheme, target_scheme=target_scheme, split=split,
                            name=distinct_scene_name(ws, (name or "").strip() or f"{Path(image_path).stem} aligned"),
                            source=source, extra_files={"alignment.json": json.dumps(rec, indent=1).encode()})




CANVAS_POINT_TYPES = frozenset({"circle"})  # compared case-insensitively: fabric.js 6 writes "Circle", 5 "circle"
_ORIGIN = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}


def canvas_points(json_data: dict | None, scale) -> np.ndarray:
    """Click positions of the "point" objects of a streamlit-drawable-canvas (``json_data``), in click order, as
    ``(n, 2)`` ``(x, y)`` pixel coordinates (pixel centres at integers, like every transform here) of the image
    shown at ``scale``: one number, or ``(scale_x, scale_y)`` = canvas size / image size per axis (the canvas
    stretches its background image over the whole canvas, so a rounded canvas size scales the axes slightly
    differently).

    streamlit-drawable-canvas 0.13 (fabric.js 6) stores a clicked point as ``{"type": "Circle", "left": x - (radius +
    strokeWidth / 2), "top": y, "originX": "left", "originY": "center", "radius": ..., "strokeWidth": ...,
    "scaleX": 1, ...}``: ``left``/``top`` are the point of the object's box (circle plus stroke, ``2 radius +
    strokeWidth`` wide) that the origins name. Older builds wrote ``"circle"``; fabric.js 7 defaults both origins to
    ``"center"``. Each origin convention is undone here, so the centre comes out right for any of them. A canvas
    coordinate ``c`` (0 at the canvas' left edge) is image pixel ``c / scale - 0.5``: the click at the middle of the
    image's first pixel is pixel 0.

    A browser reports a click as the whole canvas pixel under the pointer (Chromium: clicks at 40.5 and 40.9 both
    arrive as 40, the pixel's left/top edge), so a whole-number centre is taken as that canvas pixel's middle
    (``c + 0.5``); a fractional one (a zoomed page, :func:`ui.align_page.points_drawing`'s restored points) is kept.
    Unshifted, every click sat half a canvas pixel up and left of the pixel under the mouse: 0.5 / scale image
    pixels, a different amount on the label and on the image canvas, so a systematic shift of the fitted alignment.
    """
    sx, sy = (float(scale), float(scale)) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
    if not (sx > 0 and sy > 0):
        raise ValueError(f"scale must be positive, got {scale}")
    out = []
    for o in (json_data or {}).get("objects") or []:
        if not isinstance(o, dict) or str(o.get("type", "")).lower() not in CANVAS_POINT_TYPES:
            continue
        r, sw = float(o.get("radius", 0) or 0), float(o.get("strokeWidth", 0) or 0)
        kx, ky = float(o.get("scaleX", 1) or 1), float(o.get("scaleY", 1) or 1)
        # fabric: the box is (2r + stroke) x scale, or 2r x scale + stroke with strokeUniform
        wx = (2 * r * kx + sw) if o.get("strokeUniform") else (2 * r + sw) * kx
        wy = (2 * r * ky + sw) if o.get("strokeUniform") else (2 * r + sw) * ky
        x = float(o.get("left", 0)) + (0.5 - _ORIGIN.get(str(o.get("originX", "left")), 0.0)) * wx
        y = float(o.get("top", 0)) + (0.5 - _ORIGIN.get(str(o.get("originY", "top")), 0.0)) * wy
        x, y = (x + 0.5 if float(x).is_integer() else x), (y + 0.5 if float(y).is_integer() else y)
        out.append((x / sx - 0.5, y / sy - 0.5))
    return np.asarray(out, float).reshape(-1, 2)


__all__ = ["CANVAS_POINT_TYPES", "SAME_ALIGNMENT_PX", "before_after", "canvas_points", "default_airport_files", "distinct_scene_name",
           "find_aligned_scene", "import_aligned_scene", "load_pair", "load_points", "load_transform", "parse_points", "points_table",
           "provenance", "same_alignment", "write_overlay"]
