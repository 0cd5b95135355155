"""Confusion drill-down: from a cell (true A, predicted B) of an evaluation down to the pixels behind it.

Pure numpy (no Streamlit); the Evaluate page lays out what these functions return.

* Scheme views: an evaluation in the checkpoint's scheme (e.g. hz20) can be shown in every coarser scheme
  reachable through the crosswalks (hz14, hz11, hz7): :func:`scheme_views`, :func:`collapse_confusion`,
  :func:`collapse_result` (the scores recomputed on the collapsed matrix, per-scene matrices collapsed too).
* Places: :func:`window_counts` counts the A→B pixels of one scene in a grid of windows (256 px by
  default); :func:`rank_windows` ranks the windows of several scenes by that count. ``evaluate_split`` keeps
  only confusion matrices, so predictions are recomputed on demand (:func:`scene_prediction`, cached in
  memory per checkpoint file, scene, TTA and label version) and only for the scenes whose per-scene
  matrix has A→B pixels (:func:`scenes_with_cell`).
* Thumbnails: :func:`cell_panels` / :func:`thumbnail` give image, label, prediction and the A→B pixels
  highlighted in :data:`HIGHLIGHT` (exactly those pixels; everything else is the image darkened).
* Review list: :func:`add_to_review_list` appends windows to ``review/drilldown.json`` in the workspace
  (written atomically, deduplicated; a diagonal cell, i.e. correct pixels, is refused); :func:`load_review_list` reads
  it back. Each entry records what the window was sent for: the A→B cell and its scheme view, and the checkpoint that
  made the confusion (id, name, class scheme) with the evaluation's TTA (older entries lack the name and scheme, the
  oldest the TTA). The Labels page says so (:func:`review_summary`) and compares the window with that checkpoint
  while it is registered and not archived (:func:`review_checkpoint`). :func:`preselect_windows` picks the windows offered by default (those holding a meaningful share of the
  cell's pixels), :func:`windows_to_send` keeps a selection to the windows shown.
* Links: "Open on map" (:func:`map_jump`) keeps its checkpoint, TTA and A→B cell in the Map page's URL next to the
  region (``&ckpt=<checkpoint id>&tta=d4&err=3-5.hz7``): :func:`jump_to_query` / :func:`jump_from_query`, the
  latter refusing anything it cannot use with a :class:`JumpQueryError` naming the parameter.
"""
from __future__ import annotations

import contextlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seghz.classes import IGNORE, crosswalk_path, get_scheme, index_crosswalk, scheme_names
from seghz.data.io import atomic_write_bytes
from seghz.errors import BadInputError
from seghz.locks import file_lock
from seghz.metrics import scores

HIGHLIGHT = (255, 0, 255)  # magenta: the A→B pixels in the highlight panel
WINDOW = 256
REVIEW_FILE = "review/drilldown.json"


# ------------------------------------------------------------------------------------------------ scheme views


def scheme_views(scheme: str) -> list[str]:
    """``scheme`` itself, then every scheme it collapses into through the crosswalks, finest first
    (hz20 -> ``["hz20", "hz14", "hz11", "hz7"]``; hz7 -> ``["hz7"]``)."""
    out = []
    for name in scheme_names():
        if name != scheme and crosswalk_path(scheme, name) is not None:
            out.append(name)
    out.sort(key=lambda n: -get_scheme(n).num_classes)
    return [scheme, *out]


def view_lut(src: str, dst: str) -> np.ndarray:
    """uint8 LUT class index of ``src`` -> index of ``dst`` (identity when equal; 255 = dropped)."""
    if src == dst:
        lut = np.full(256, IGNORE, np.uint8)
        lut[:255] = np.arange(255, dtype=np.uint8)
        return lut
    return index_crosswalk(src, dst)


def collapse_confusion(cm: Sequence[Sequence[float]] | np.ndarray, src: str, dst: str) -> np.ndarray:
    """Sum the rows and columns of a ``src`` confusion matrix into ``dst`` classes through the crosswalk.

    Classes the crosswalk maps to nothing (255) are dropped. Raises SchemeMismatchError without a crosswalk.
    """
    m = np.asarray(cm, np.int64)
    lut = view_lut(src, dst)
    n = get_scheme(dst).num_classes
    idx = lut[: m.shape[0]].astype(np.int64)
    keep = idx != IGNORE
    out = np.zeros((n, n), np.int64)
    rows, cols = np.nonzero(keep[:, None] & keep[None, :])
    np.add.at(out, (idx[rows], idx[cols]), m[rows, cols])
    return out


def collapse_result(result: dict, src: str, dst: str) -> dict:
    """An evaluation result seen in scheme ``dst``: scores of the collapsed matrix, per-scene matrices
    collapsed, label/prediction frequencies recomputed; the calibration counts (and their ECE) are left out: whether
    a pixel's label agrees depends on the scheme, so they cannot be collapsed. ``src == dst`` returns ``result``
    unchanged."""
    if src == dst:
        return result
    cm = collapse_confusion(result["confusion"], src, dst)
    out = {k: v for k, v in result.items()
           if k not in ("per_class", "confusion", "classes", "present", "calibration", "ece")}
    out.update(scores(cm, get_scheme(dst).names))
    out["per_scene"] = {sid: collapse_confusion(c, src, dst).tolist() for sid, c in (result.get("per_scene") or {}).items()}
    total = max(int(cm.sum()), 1)
    out["freq_label"] = (cm.sum(1) / total).tolist()
    out["freq_pred"] = (cm.sum(0) / total).tolist()
    out["scheme_view"] = dst
    return out


def cell_from_selection(event: Any, num_classes: int) -> tuple[int, int] | None:
    """``(true, predicted)`` indices of the first clicked point of a confusion heatmap selection event
    (``st.plotly_chart(..., on_select="rerun")``: ``{"selection": {"points": [{"x": col, "y": row}, ...]}}``),
    or None when nothing valid is selected."""
    try:
        points = (event or {}).get("selection", {}).get("points", []) or []
        p = points[0]
        a, b = int(p.get("y")), int(p.get("x"))
    except (AttributeError, TypeError, ValueError, IndexError, KeyError):
        return None
    return (a, b) if 0 <= a < num_classes and 0 <= b < num_classes else None


# ------------------------------------------------------------------------------------------------ places


def cell_mask(pred: np.ndarray, label: np.ndarray, a: int, b: int, lut: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the pixels labelled ``a`` and predicted ``b`` (after mapping both through ``lut``)."""
    p, g = np.asarray(pred), np.asarray(label)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} != label shape {g.shape}")
    if lut is not None:
        p, g = lut[p], lut[g]
    return (g == a) & (p == b) & (g != IGNORE)


@dataclass(frozen=True)
class Window:
    """A window of a scene with its A→B pixel count; bbox is ``(row0, col0, row1, col1)``, end exclusive."""

    scene_id: str
    bbox: tuple[int, int, int, int]
    count: int

    def key(self) -> str:
        return f"{self.scene_id}:{self.bbox[0]},{self.bbox[1]},{self.bbox[2]},{self.bbox[3]}"

    def to_json(self) -> dict:
        return {**asdict(self), "bbox": list(self.bbox)}


def window_counts(mask: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Counts of True pixels in each ``window``×``window`` cell of a grid over ``mask`` (edge cells smaller)."""
    m = np.asarray(mask, bool)
    h, w = m.shape
    gh, gw = -(-h // window), -(-w // window)
    pad = np.zeros((gh * window, gw * window), np.int64)
    pad[:h, :w] = m
    return pad.reshape(gh, window, gw, window).sum(axis=(1, 3))


def scene_windows(scene_id: str, mask: np.ndarray, window: int = WINDOW) -> list[Window]:
    """The windows of one scene holding at least one True pixel of ``mask``, most pixels first."""
    counts = window_counts(mask, window)
    h, w = np.asarray(mask).shape
    out = []
    for gy, gx in zip(*np.nonzero(counts)):
        r0, c0 = int(gy) * window, int(gx) * window
        out.append(Window(scene_id, (r0, c0, min(r0 + window, h), min(c0 + window, w)), int(counts[gy, gx])))
    out.sort(key=lambda x: (-x.count, x.bbox))
    return out


def rank_windows(masks: dict[str, np.ndarray], window: int = WINDOW, limit: int | None = None) -> list[Window]:
    """Windows of all scenes (``{scene_id: A→B mask}``) ranked by A→B pixel count (ties: scene, position)."""
    out = [w for sid, m in masks.items() for w in scene_windows(sid, m, window)]
    out.sort(key=lambda x: (-x.count, x.scene_id, x.bbox))
    return out if limit is None else out[:limit]


PRESELECT_MAX = 6  # windows pre-selected for label review at most (the ones with thumbnails)
PRESELECT_SHARE = 0.05  # ... each holding at least this share of the cell's A→B pixels in the scenes searched


def preselect_windows(windows: Sequence[Window], total: int, max_n: int = PRESELECT_MAX,
                      min_share: float = PRESELECT_SHARE) -> list[str]:
    """Keys of the windows to pre-select for label review: of ``windows`` (ranked, most A→B pixels first), the top
    ones, at most ``max_n``, that each hold at least ``min_share`` of ``total`` (the cell's A→B pixels in the scenes
    searched); the top window alone when none does (the cell's pixels spread thin), none when there are no windows.
    A window with a few dozen of a cell's thousands of pixels is not worth an analyst's review by default."""
    ranked = sorted(windows, key=lambda x: (-x.count, x.scene_id, x.bbox))
    floor = min_share * max(int(total), 0)
    keep = [w.key() for w in ranked[: max(0, int(max_n))] if w.count > 0 and w.count >= floor]
    return keep or [w.key() for w in ranked[:1] if w.count > 0 and max_n > 0]


def windows_to_send(shown: Sequence[Window], chosen: Sequence[str] | None) -> list[Window]:
    """The windows of ``shown`` (the drill-down's windows of the cell on screen) whose keys are in ``chosen``, in
    rank order; a key that is not a window shown (of another cell or window size) is left out."""
    want = set(chosen or ())
    return [w for w in shown if w.key() in want]


def scenes_with_cell(result: dict, a: int, b: int) -> list[tuple[str, int]]:
    """``(scene_id, A→B pixels)`` of the scenes whose per-scene matrix has the cell, most first."""
    out = []
    for sid, cm in (result.get("per_scene") or {}).items():
        m = np.asarray(cm)
        if a < m.shape[0] and b < m.shape[1] and m[a, b] > 0:
            out.append((sid, int(m[a, b])))
    out.sort(key=lambda t: (-t[1], t[0]))
    return out


_PRED_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
PRED_CACHE_SIZE = 16


def _prediction_key(ws: Any, checkpoint_id: str, scene_id: str, tta: str | Sequence[str]) -> tuple:
    path = ws.checkpoint_path(ws.get_checkpoint(checkpoint_id))
    return (str(ws.root), str(path), path.stat().st_mtime_ns if path.exists() else 0, scene_id,
            tta if isinstance(tta, str) else tuple(tta))


PRED_DIR = "cache/predictions"  # predictions kept on disk (the evaluate job's, the drill-down's), one .npz each
PRED_DISK_MAX = 64  # files kept there; the oldest go first


def _prediction_file(ws: Any, key: tuple) -> Path:
    import hashlib

    # the checkpoint file's name, not its path: the worker process may spell the workspace's root otherwise
    ident = (Path(key[1]).name, *key[2:])
    return Path(ws.root) / PRED_DIR / f"{hashlib.sha256(repr(ident).encode()).hexdigest()[:24]}.npz"


def _remember(key: tuple, pred: np.ndarray) -> np.ndarray:
    _PRED_CACHE[key] = pred
    _PRED_CACHE.move_to_end(key)
    while len(_PRED_CACHE) > PRED_CACHE_SIZE:
        _PRED_CACHE.popitem(last=False)
    return pred


def _load_saved(ws: Any, key: tuple) -> np.ndarray | None:
    path = _prediction_file(ws, key)
    try:
        with np.load(path) as z:
            return _remember(key, np.asarray(z["pred"], np.uint8))
    except (OSError, KeyError, ValueError):
        return None


def save_scene_prediction(ws: Any, checkpoint_id: str, scene_id: str, tta: str | Sequence[str],
                          pred: np.ndarray) -> None:
    """Keep a scene's prediction (e.g. made by the background evaluation) in memory and on disk under the key
    :func:`scene_prediction` looks it up by, so the drill-down reuses it instead of predicting the scene again. The
    disk copy is a compressed class-index map (a few hundred kB for a 1024 px scene); at most :data:`PRED_DISK_MAX`
    are kept. Best effort: a failed write is ignored."""
    import io

    from seghz.data.io import atomic_write_bytes

    key = _prediction_key(ws, checkpoint_id, scene_id, tta)
    pred = _remember(key, np.asarray(pred, np.uint8))
    path = _prediction_file(ws, key)
    try:
        buf = io.BytesIO()
        np.savez_compressed(buf, pred=pred)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue(), fsync=False)
        files = sorted(path.parent.glob("*.npz"), key=lambda f: f.stat().st_mtime_ns)
        for old in files[:-PRED_DISK_MAX]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def scene_prediction(ws: Any, checkpoint_id: str, scene_id: str, tta: str | Sequence[str], predictor: Any,
                     progress: Callable[[float, str], None] | None = None) -> np.ndarray:
    """The checkpoint's class-index prediction of a scene, cached in memory and on disk per (checkpoint file and its
    mtime, scene, TTA) — the label version does not change a prediction. A prediction the background evaluation
    saved (:func:`save_scene_prediction`) is reused. ``progress(fraction, message)`` follows the windows when the
    scene is predicted now."""
    from seghz.data.io import read_image

    key = _prediction_key(ws, checkpoint_id, scene_id, tta)
    if key in _PRED_CACHE:
        _PRED_CACHE.move_to_end(key)
        return _PRED_CACHE[key]
    saved = _load_saved(ws, key)
    if saved is not None:
        return saved
    img = read_image(ws.scene_path(scene_id, "image"))
    pred, _ = predictor.predict(img, tta, progress=progress) if progress is not None else predictor.predict(img, tta)
    save_scene_prediction(ws, checkpoint_id, scene_id, tta, pred)
    return _PRED_CACHE[key]


def cached_scene_prediction(ws: Any, checkpoint_id: str, scene_id: str, tta: str | Sequence[str]) -> np.ndarray | None:
    """The prediction :func:`scene_prediction` holds in memory for these arguments (e.g. computed by the Evaluate
    drill-down a moment ago), or None: nothing is computed."""
    try:
        key = _prediction_key(ws, checkpoint_id, scene_id, tta)
    except (LookupError, OSError, ValueError):  # e.g. the checkpoint is no longer registered (NotFoundError)
        return None
    return _PRED_CACHE.get(key) if key in _PRED_CACHE else _load_saved(ws, key)


def has_scene_prediction(ws: Any, checkpoint_id: str, scene_id: str, tta: str | Sequence[str]) -> bool:
    """Whether :func:`scene_prediction` would return at once (in memory or saved on disk): nothing is loaded."""
    try:
        key = _prediction_key(ws, checkpoint_id, scene_id, tta)
    except (LookupError, OSError, ValueError):
        return False
    return key in _PRED_CACHE or _prediction_file(ws, key).is_file()


def clear_prediction_cache() -> None:
    _PRED_CACHE.clear()


# ------------------------------------------------------------------------------------------------ thumbnails


HALO = (150, 0, 150)  # dim magenta: a ring around the A→B pixels, so 1-px error edges show in a shrunk thumbnail


def highlight_panel(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = HIGHLIGHT) -> np.ndarray:
    """The image darkened to half (so no other pixel can equal a 255 channel) with ``mask`` pixels in ``color``, and
    a ring of :data:`HALO` up to ``max(1, side / 128)`` px around them (never on a mask pixel): boundary errors are
    often one pixel wide and vanished when the panel was shown at thumbnail size."""
    import cv2

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    out = (img[..., :3].astype(np.uint16) // 2).astype(np.uint8)
    m = np.asarray(mask, bool)
    r = max(1, round(max(m.shape) / 128))
    ring = cv2.dilate(m.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool) & ~m
    out[ring] = HALO
    out[m] = color
    return out


def cell_panels(image: np.ndarray, label: np.ndarray, pred: np.ndarray, a: int, b: int, scheme: Any,
                lut: np.ndarray | None = None) -> list[np.ndarray]:
    """Image, label, prediction (colours of ``scheme``, i.e. the view scheme) and the A→B highlight, same size."""
    lab, prd = (label, pred) if lut is None else (lut[label], lut[pred])
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return [img[..., :3].astype(np.uint8), scheme.colorize(lab), scheme.colorize(prd),
            highlight_panel(img, cell_mask(pred, label, a, b, lut))]


def thumbnail(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels side by side at native resolution on white (``gap`` px apart): one RGB image."""
    h, w = panels[0].shape[:2]
    out = np.full((h, len(panels) * w + (len(panels) - 1) * gap, 3), 255, np.uint8)
    for i, p in enumerate(panels):
        out[:, i * (w + gap): i * (w + gap) + w] = p
    return out


def crop(arr: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
    r0, c0, r1, c1 = bbox
    return np.asarray(arr)[r0:r1, c0:c1]


def _coord_decimals(pixel_size: float) -> int:
    """Decimals that resolve a tenth of a pixel of this size (map units per pixel): 1 for 1 m pixels, 6 for 1e-5°."""
    if not np.isfinite(pixel_size) or pixel_size <= 0:
        return 6
    return int(min(12, max(0, np.ceil(-np.log10(pixel_size / 10)))))


def _fmt_coord(v: float, decimals: int) -> str:
    """A map coordinate in fixed notation, trailing zeros dropped (never 1.33678e+07: six significant digits of a
    Web-Mercator easting are ±50 m)."""
    s = f"{v:.{decimals}f}"
    s = (s.rstrip("0").rstrip(".") if "." in s else s) or "0"
    return "0" if s == "-0" else s


def map_location(scene: Any, bbox: tuple[int, int, int, int]) -> str:
    """Where a window is, for "open on map": scene id and pixel rows/columns (first–last, as every page shows them),
    plus the map bbox of the window's outer edges when georeferenced."""
    r0, c0, r1, c1 = bbox
    txt = f"scene `{scene.id}` rows {r0}–{r1 - 1}, cols {c0}–{c1 - 1}"
    tr = getattr(scene, "transform", None)
    if tr and len(tr) >= 6:
        a, b_, c, d, e, f = tr[:6]
        xs = [a * x + b_ * y + c for x, y in ((c0, r0), (c1, r1))]
        ys = [d * x + e * y + f for x, y in ((c0, r0), (c1, r1))]
        digits = _coord_decimals(max(abs(a), abs(b_), abs(d), abs(e)))
        txt += " · bbox (" + ", ".join(_fmt_coord(v, digits) for v in (min(xs), min(ys), max(xs), max(ys))) + ")"
        if getattr(scene, "crs", None):
            txt += f" {scene.crs}"
    return txt


# ------------------------------------------------------------------------------------------------ review list


def review_list_path(ws: Any) -> Path:
    return Path(ws.root) / REVIEW_FILE


def _locked(path: Path) -> contextlib.AbstractContextManager[None]:
    """The review list's lock (:func:`seghz.locks.file_lock` on ``.<name>.lock`` next to it)."""
    return file_lock(path.with_name("." + path.name + ".lock"))


def load_review_list(ws: Any) -> list[dict]:
    """Entries of the drill-down review list (empty when none).

    Raises:
        BadInputError: Naming the file, when it is not a JSON list (damaged, e.g. edited by hand); nothing is
            overwritten then, so the analysts' entries can still be recovered from it.
    """
    p = review_list_path(ws)
    try:
        text = p.read_text("utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(p, f"the drill-down review list cannot be read ({e}); fix or move the file away") from e
    try:
        data = json.loads(text or "[]")
    except ValueError as e:
        raise BadInputError(p, f"the drill-down review list is damaged (not valid JSON: {e}); fix or move the file "
                               "away (sending windows to review would otherwise replace it)") from e
    if not isinstance(data, list):
        raise BadInputError(p, f"the drill-down review list is damaged (a JSON {type(data).__name__}, not a list of "
                               "entries); fix or move the file away")
    return data


def review_key(entry: Mapping[str, Any]) -> tuple:
    """What identifies a review-list entry: ``(scene, bbox, true class, predicted class, scheme view)``."""
    return (entry.get("scene_id"), tuple(int(v) for v in entry.get("bbox", ())), entry.get("true"),
            entry.get("predicted"), entry.get("scheme"))


def find_review_entry(items: Sequence[Mapping[str, Any]], entry: Mapping[str, Any]) -> dict | None:
    """The entry of ``items`` (the review list) with the same :func:`review_key` as ``entry``, or None."""
    key = review_key(entry)
    return next((dict(e) for e in items if review_key(e) == key), None)


def review_entry(window: Window, *, true_class: str, pred_class: str, scheme: str, checkpoint_id: str,
                 checkpoint_name: str = "", checkpoint_scheme: str = "", tta: str | Sequence[str] = "none",
                 analyst: str = "") -> dict:
    """The review-list entry of a window sent for the A→B cell ``true_class`` → ``pred_class`` of scheme view
    ``scheme``, made by checkpoint ``checkpoint_id`` (its name and class scheme recorded too, so the Labels page can
    say which model made the confusion even once it is archived) with ``tta`` (status "pending", no time yet)."""
    return {"scene_id": window.scene_id, "bbox": [int(v) for v in window.bbox], "count": int(window.count),
            "true": true_class, "predicted": pred_class, "scheme": scheme, "checkpoint_id": checkpoint_id,
            "checkpoint_name": checkpoint_name or checkpoint_id, "checkpoint_scheme": checkpoint_scheme,
            "tta": tta if isinstance(tta, str) else list(tta), "analyst": analyst, "status": "pending"}


@dataclass(frozen=True)
class ReviewSend:
    """What :func:`send_to_review` did with the windows it was given."""

    added: int = 0  # windows new to the review list
    refreshed: int = 0  # still-pending windows now recorded for the newer checkpoint that sent them again
    reopened: int = 0  # windows reviewed for another checkpoint, pending again for this one
    unchanged: int = 0  # windows already listed for this checkpoint (pending or reviewed): left as they were

    def text(self) -> str:
        """``"2 added, 1 re-opened for this model, 3 already listed"`` (parts that are 0 left out)."""
        parts = [f"{self.added} added"]
        if self.refreshed:
            parts.append(f"{self.refreshed} still pending, now recorded for this model")
        if self.reopened:
            parts.append(f"{self.reopened} reviewed for another model, re-opened for this one")
        if self.unchanged:
            parts.append(f"{self.unchanged} already listed for this model")
        return ", ".join(parts)


def add_to_review_list(ws: Any, windows: Sequence[Window], *, true_class: str, pred_class: str, scheme: str,
                       checkpoint_id: str, analyst: str = "", tta: str | Sequence[str] = "none",
                       checkpoint_name: str = "", checkpoint_scheme: str = "") -> int:
    """:func:`send_to_review`, returning only how many windows were new to the list."""
    return send_to_review(ws, windows, true_class=true_class, pred_class=pred_class, scheme=scheme,
                          checkpoint_id=checkpoint_id, analyst=analyst, tta=tta, checkpoint_name=checkpoint_name,
                          checkpoint_scheme=checkpoint_scheme).added


def send_to_review(ws: Any, windows: Sequence[Window], *, true_class: str, pred_class: str, scheme: str,
                   checkpoint_id: str, analyst: str = "", tta: str | Sequence[str] = "none",
                   checkpoint_name: str = "", checkpoint_scheme: str = "") -> ReviewSend:
    """Put windows (with the confusion they show) on the review list; says what it did (:class:`ReviewSend`).

    An entry (:func:`review_entry`) is the window's scene, bbox, A→B count, the classes and scheme view, the
    checkpoint that made the confusion (id, name, class scheme), the evaluation's TTA, analyst and time. Entries
    written before the name, scheme or TTA were recorded lack those fields: readers fall back (:func:`review_tta`,
    :func:`review_checkpoint_label`).
    A (scene, bbox, true, predicted, scheme) is listed once. Sent again by the checkpoint already recorded, it is left
    as it is (reviewed stays reviewed: an analyst already looked at that model's confusion there). Sent again by
    another checkpoint, it becomes that checkpoint's confusion (name, scheme, TTA, count, sender; the Labels page
    compares with the model that sent it last) and is pending again even if reviewed for the earlier model, whose
    send is kept under ``earlier``. Written atomically under a lock.
    Raises ValueError for a diagonal cell (``true_class == pred_class``): correctly predicted pixels are no error to
    review.
    """
    from seghz.store import now_iso

    if true_class == pred_class:
        raise ValueError(f"{true_class} predicted as {pred_class} is a correct prediction, not an error to review")

    p = review_list_path(ws)
    added = refreshed = reopened = unchanged = 0
    with _locked(p):
        items = load_review_list(ws)
        where = {review_key(e): i for i, e in enumerate(items)}
        for w in windows:
            e = review_entry(w, true_class=true_class, pred_class=pred_class, scheme=scheme,
                             checkpoint_id=checkpoint_id, checkpoint_name=checkpoint_name,
                             checkpoint_scheme=checkpoint_scheme, tta=tta, analyst=analyst)
            k = review_key(e)
            if k not in where:
                where[k] = len(items)
                items.append({**e, "added_at": now_iso()})
                added += 1
                continue
            old = items[where[k]]
            if str(old.get("checkpoint_id") or "") == str(checkpoint_id):
                unchanged += 1
                continue
            earlier = {f: old.get(f) for f in ("checkpoint_id", "checkpoint_name", "tta", "count", "analyst",
                                               "added_at", "status", "reviewed_by", "reviewed_at") if f in old}
            if old.get("status") == "reviewed":
                reopened += 1
            else:
                refreshed += 1
            fresh = {f: v for f, v in old.items() if f not in ("reviewed_by", "reviewed_at")}
            fresh.update(e, added_at=now_iso(), earlier=[*old.get("earlier", []), earlier])
            items[where[k]] = fresh
        if added or refreshed or reopened:
            atomic_write_bytes(p, json.dumps(items, indent=1).encode(), fsync=True)
    return ReviewSend(added, refreshed, reopened, unchanged)


def pending_reviews(ws: Any, scene_id: str, items: list[dict] | None = None) -> list[dict]:
    """The review-list entries of one scene still waiting for an analyst (status "pending"), largest count first.
    ``items``: the list already read by :func:`load_review_list` (read here when None)."""
    items = load_review_list(ws) if items is None else items
    items = [e for e in items if e.get("scene_id") == scene_id and e.get("status") == "pending"]
    return sorted(items, key=lambda e: (-int(e.get("count", 0)), tuple(e.get("bbox", ()))))


def set_review_status(ws: Any, entry: dict, status: str, analyst: str = "") -> bool:
    """Mark one review-list entry (matched by scene, bbox, classes and scheme) ``status`` ("reviewed" / "pending"),
    with who and when; returns False when the entry is no longer listed. Written atomically under the list's lock."""
    from seghz.store import now_iso

    if status not in ("pending", "reviewed"):
        raise ValueError(f"review status must be 'pending' or 'reviewed', got {status!r}")
    key = review_key(entry)
    p = review_list_path(ws)
    with _locked(p):
        items = load_review_list(ws)
        for e in items:
            if review_key(e) == key:
                e.update(status=status, reviewed_by=analyst, reviewed_at=now_iso())
                atomic_write_bytes(p, json.dumps(items, indent=1).encode(), fsync=True)
                return True
    return False


# ---- what a window was sent for (the Labels page)


def review_tta(entry: Mapping[str, Any]) -> str | list[str]:
    """The TTA of the evaluation a window was sent from; "none" for entries older than that field (the Evaluate
    page's default, as :func:`review_jump` does)."""
    tta = entry.get("tta")
    if isinstance(tta, str) and tta:
        return tta
    if isinstance(tta, (list, tuple)) and tta:
        return [str(v) for v in tta]
    return "none"


def tta_text(tta: Any) -> str:
    """A TTA as the pages say it: ``none`` / ``flip`` / ``d4``, view names joined by "+" for a custom set, "not
    recorded" for None."""
    if tta is None or tta == "" or tta == []:
        return "not recorded"
    return tta if isinstance(tta, str) else "custom " + "+".join(str(v) for v in tta)


def review_checkpoint_label(entry: Mapping[str, Any], registered_name: str = "") -> str:
    """The name of the checkpoint a window was sent for: its registered name (``registered_name``, looked up by the
    caller), else the name recorded with the entry, else its id; "an unrecorded checkpoint" for an entry without one."""
    return (registered_name or str(entry.get("checkpoint_name") or "") or str(entry.get("checkpoint_id") or "")
            or "an unrecorded checkpoint")


def review_summary(entry: Mapping[str, Any], checkpoint_name: str = "") -> str:
    """What a window was sent for, in Markdown: ``sent from Evaluate: **<checkpoint>** predicts **B** where the label
    says **A** on N px (TTA d4)``; ``checkpoint_name``: the checkpoint's registered name when the caller knows it."""
    name = review_checkpoint_label(entry, checkpoint_name)
    tta = entry.get("tta")
    return (f"sent from Evaluate: **{name}** predicts **{entry.get('predicted')}** where the label says "
            f"**{entry.get('true')}** on {int(entry.get('count', 0)):,} px (TTA {tta_text(tta if tta else None)})")


def review_checkpoint(ws: Any, entry: Mapping[str, Any]) -> tuple[Any | None, str]:
    """``(checkpoint, "")``: the registered checkpoint that made the confusion a window was sent for, usable to
    predict with (not archived, its weights file present); or ``(None, why not)``, e.g. "checkpoint **x** is archived
    2026-11-29 10:00 UTC by Ann" (the caller then compares with another model and says so)."""
    from seghz.store import NotFoundError

    cid = entry.get("checkpoint_id")
    if not cid:
        return None, "the review list does not record which checkpoint sent this window"
    try:
        ck = ws.get_checkpoint(str(cid))
    except NotFoundError:
        return None, f"checkpoint **{review_checkpoint_label(entry)}** (`{cid}`) is no longer registered"
    if ck.archived:
        return None, f"checkpoint **{ck.name}** is {ck.archived_text()}"
    try:
        present = ws.checkpoint_path(ck).exists()
    except (OSError, ValueError):
        present = False
    if not present:
        return None, f"the weights file of checkpoint **{ck.name}** is missing"
    return ck, ""


def review_cell_pixels(pred: np.ndarray, label: np.ndarray, checkpoint_scheme: str, entry: Mapping[str, Any]) -> int:
    """Pixels of a window labelled the entry's class A and predicted its class B in the entry's scheme view, for a
    prediction and a label in ``checkpoint_scheme`` (:func:`jump_cell_mask`; its errors propagate)."""
    cell = {"true": entry.get("true"), "predicted": entry.get("predicted"), "scheme": entry.get("scheme")}
    return int(jump_cell_mask(pred, label, checkpoint_scheme, cell).sum())


def bbox_overlaps(bbox: Sequence[int], window: Sequence[int]) -> bool:
    """Whether ``bbox`` ``(row0, col0, row1, col1)`` (end exclusive) shares a pixel with ``window``
    ``(row, col, height, width)`` (the Labels page's window)."""
    r0, c0, r1, c1 = (int(v) for v in bbox)
    wr, wc, wh, ww = (int(v) for v in window)
    return r0 < wr + wh and wr < r1 and c0 < wc + ww and wc < c1


__all__ = [
    "HIGHLIGHT",
    "JUMP_QUERY_KEYS",
    "PRESELECT_MAX",
    "PRESELECT_SHARE",
    "WINDOW",
    "JumpQueryError",
    "ReviewSend",
    "Window",
    "add_to_review_list",
    "bbox_overlaps",
    "cached_scene_prediction",
    "cell_from_selection",
    "cell_mask",
    "cell_panels",
    "clear_prediction_cache",
    "collapse_confusion",
    "collapse_result",
    "crop",
    "find_review_entry",
    "has_scene_prediction",
    "highlight_panel",
    "jump_cell_mask",
    "jump_from_query",
    "jump_to_query",
    "largest_confusion",
    "load_review_list",
    "map_jump",
    "map_location",
    "pending_reviews",
    "pick_cell",
    "preselect_windows",
    "rank_windows",
    "review_cell_pixels",
    "review_checkpoint",
    "review_checkpoint_label",
    "review_entry",
    "review_jump",
    "review_key",
    "review_list_path",
    "review_summary",
    "review_tta",
    "save_scene_prediction",
    "scene_prediction",
    "scene_windows",
    "scenes_with_cell",
    "scheme_views",
    "send_to_review",
    "set_review_status",
    "thumbnail",
    "tta_text",
    "view_lut",
    "window_counts",
    "windows_to_send",
]


def largest_confusion(cm: np.ndarray) -> tuple[int, int]:
    """(true, predicted) of the largest off-diagonal cell of a confusion matrix (the default drill-down cell)."""
    off = np.array(cm, dtype=np.float64, copy=True)
    np.fill_diagonal(off, -1)
    ia, ib = np.unravel_index(int(np.argmax(off)), off.shape)
    return int(ia), int(ib)


def pick_cell(cm: np.ndarray, names: Sequence[str], current: tuple[Any, Any], auto: tuple[Any, Any] | None = None,
              changed: bool = False) -> tuple[str, str, bool]:
    """The drill-down cell ``(true class, predicted class, picked automatically)`` to show for a confusion matrix.

    ``current`` is the cell shown so far (class names, or None), ``auto`` the cell the page last picked itself and
    ``changed`` whether the evaluation (checkpoint, split, TTA, scheme view, labels) changed since. The largest
    off-diagonal cell (:func:`largest_confusion`) is picked when there is no valid current cell, and, after a change,
    in place of an automatic pick or of a cell without pixels in the new matrix; an analyst's own pick that still has
    pixels is kept.
    """
    names = list(names)
    a, b = current
    if a in names and b in names:
        mine = auto is None or (a, b) != tuple(auto)
        if not changed or (mine and np.asarray(cm)[names.index(a), names.index(b)] > 0):
            return a, b, not mine
    ia, ib = largest_confusion(cm)
    return names[ia], names[ib], True


def map_jump(window: Window, *, checkpoint_id: str, checkpoint_name: str = "", why: str = "", tta: str = "none",
             cell: tuple[str, str, str] | None = None, role: str = "") -> dict:
    """The Map page's "open on map" request for a drill-down window: the scene, the window's bbox, the error layer
    on, the checkpoint whose errors these are and the evaluation's TTA (the Map page predicts the region with both,
    not with the active model and its own TTA choice), and the drilled-into cell ``(true class A, predicted class B,
    scheme view)`` (class names of that view), for the Map's layer of exactly the A→B pixels (:func:`jump_cell_mask`).
    ``role`` says which checkpoint that is, in the Map's message ("the evaluated checkpoint" when empty)."""
    out = {"scene_id": window.scene_id, "bbox": tuple(int(v) for v in window.bbox), "layer": "error", "why": why,
           "checkpoint_id": checkpoint_id, "checkpoint_name": checkpoint_name or checkpoint_id, "tta": tta}
    if role:
        out["checkpoint_role"] = role
    if cell is not None:
        a, b, view = cell
        out["cell"] = {"true": str(a), "predicted": str(b), "scheme": str(view)}
    return out


def review_jump(entry: dict, checkpoint_name: str = "") -> dict:
    """:func:`map_jump` for a window of the review list (:func:`add_to_review_list`): the checkpoint whose errors
    were sent, the TTA of the evaluation they were sent from ("none" for entries older than that field) and the
    A→B cell, so the Map shows the same pixels the Evaluate drill-down showed."""
    w = Window(str(entry["scene_id"]), tuple(int(v) for v in entry["bbox"]), int(entry.get("count", 0)))
    a, b = str(entry.get("true")), str(entry.get("predicted"))
    cell = (a, b, str(entry["scheme"])) if entry.get("scheme") else None
    return map_jump(w, checkpoint_id=entry.get("checkpoint_id"), checkpoint_name=checkpoint_name,
                    why=f"{a} predicted as {b}", tta=review_tta(entry), cell=cell,
                    role="the checkpoint whose errors were sent")


def jump_cell_mask(pred: np.ndarray, label: np.ndarray, scheme: str, cell: dict) -> np.ndarray:
    """The pixels labelled ``cell["true"]`` and predicted ``cell["predicted"]`` in the scheme view
    ``cell["scheme"]`` (as :func:`map_jump` carries them), for a prediction and a label in the checkpoint's
    ``scheme``: both are collapsed into the view first (:func:`view_lut`), exactly as the Evaluate drill-down counts
    them. Raises KeyError for an unknown class or scheme, SchemeMismatchError when ``scheme`` does not collapse into
    the view."""
    view = str(cell.get("scheme") or scheme)
    names = list(get_scheme(view).names)
    a_name, b_name = cell.get("true"), cell.get("predicted")
    if a_name not in names or b_name not in names:
        raise KeyError(f"{a_name!r} or {b_name!r} is not a class of scheme {view}")
    lut = None if view == scheme else view_lut(scheme, view)
    return cell_mask(pred, label, names.index(a_name), names.index(b_name), lut)


# ------------------------------------------------------------------------------------------------ links

# "Open on map" in the Map page's URL, next to ``scene`` and ``region`` (which hold the jump's window):
#   ckpt=<checkpoint id>       the checkpoint that predicts the region (absent: the active one)
#   tta=<mode or views>        ``none`` / ``flip`` / ``d4``, one view name, or view names joined by "." (custom)
#   err=all | err=<A>-<B>.<scheme view>
#                              the error layer on; with a cell, the layer of the pixels labelled class index A and
#                              predicted class index B of that scheme view (e.g. ``err=3-5.hz7``)
# Only unreserved URL characters, so nothing is percent-encoded.
JUMP_QUERY_KEYS = ("ckpt", "tta", "err")
JUMP_QUERY_MAX_CHARS = 200  # longer values are refused before anything else is looked at
_CELL_QUERY = re.compile(r"([0-9]{1,3})-([0-9]{1,3})\.(.+)", re.ASCII)


class JumpQueryError(ValueError):
    """A jump parameter of a link that cannot be used; ``param`` names it (``"ckpt"``, ``"tta"``, ``"err"``)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def _shown(text: str) -> str:
    """A value from a URL inside a Markdown code span: kept short, no backquotes."""
    return text[:80].replace("`", "'")


def jump_to_query(jump: Mapping[str, Any]) -> dict[str, str]:
    """The URL query parameters (``ckpt``, ``tta``, ``err``; see :data:`JUMP_QUERY_KEYS`) of a jump's settings
    (:func:`map_jump`'s ``checkpoint_id``, ``tta``, ``cell`` and ``layer``); only those the jump has.
    :func:`jump_from_query` gives them back. Raises ValueError for a TTA or a cell that cannot be written (unknown
    views, classes or scheme)."""
    from seghz.infer.engine import TTA_MODES, tta_views

    out: dict[str, str] = {}
    if jump.get("checkpoint_id"):
        out["ckpt"] = str(jump["checkpoint_id"])
    tta = jump.get("tta")
    if tta is not None:
        views = [name for name, *_ in tta_views(tta)]  # ValueError for unknown views
        out["tta"] = tta if isinstance(tta, str) and tta in TTA_MODES else ".".join(views)
    cell = jump.get("cell")
    if cell:
        view = str(cell.get("scheme") or "")
        if view not in scheme_names():
            raise ValueError(f"the A → B cell is in an unknown class scheme {view!r}")
        names = list(get_scheme(view).names)
        a, b = cell.get("true"), cell.get("predicted")
        if a not in names or b not in names:
            raise ValueError(f"{a!r} or {b!r} is not a class of scheme {view}")
        out["err"] = f"{names.index(a)}-{names.index(b)}.{view}"
    elif jump.get("layer") == "error":
        out["err"] = "all"
    return out


def jump_from_query(params: Mapping[str, Any], checkpoint_scheme: Callable[[str], str | None]) -> dict | None:
    """The jump settings of a link's query parameters (:func:`jump_to_query`): ``{"checkpoint_id", "tta", "cell",
    "layer"}`` (each None when the link has no such parameter), or None when it has none of them.

    ``checkpoint_scheme(id)`` gives the class scheme of a registered checkpoint, None for an unknown id. Raises
    :class:`JumpQueryError` naming the first parameter that cannot be used: a checkpoint that is not registered,
    unknown TTA views, a malformed ``err``, an unknown scheme or class index, or a cell in a scheme view the
    checkpoint's scheme does not collapse into."""
    from seghz.infer.engine import tta_views

    got = {k: params.get(k) for k in JUMP_QUERY_KEYS}
    if all(v is None for v in got.values()):
        return None
    for k, v in got.items():
        if v is None:
            continue
        if not isinstance(v, str) or not v.strip():
            raise JumpQueryError(k, f"the link's `{k}=` is empty")
        if len(v) > JUMP_QUERY_MAX_CHARS:
            raise JumpQueryError(k, f"the link's `{k}=` is {len(v):,} characters long (at most "
                                    f"{JUMP_QUERY_MAX_CHARS})")
    out: dict[str, Any] = {"checkpoint_id": None, "tta": None, "cell": None, "layer": None}
    ck_scheme = None
    if got["ckpt"] is not None:
        ck = got["ckpt"].strip()
        ck_scheme = checkpoint_scheme(ck)
        if ck_scheme is None:
            raise JumpQueryError("ckpt", f"the link's `ckpt=` names checkpoint `{_shown(ck)}`, which is not "
                                         "registered in this workspace")
        out["checkpoint_id"] = ck
    if got["tta"] is not None:
        text = got["tta"].strip()
        parts = text.split(".")
        tta: str | list[str] = parts[0] if len(parts) == 1 else parts
        try:
            tta_views(tta)
        except ValueError:
            raise JumpQueryError("tta", f"the link's `tta=` is `{_shown(text)}`: not a TTA mode (none, flip, d4) or "
                                        "view names joined by '.'") from None
        out["tta"] = tta
    if got["err"] is not None:
        text = got["err"].strip()
        out["layer"] = "error"
        if text != "all":
            m = _CELL_QUERY.fullmatch(text)
            if m is None:
                raise JumpQueryError("err", f"the link's `err=` is `{_shown(text)}`: not `all` or an A → B cell "
                                            "written `<A>-<B>.<scheme>` (class indices, e.g. `3-5.hz7`)")
            a, b, view = int(m[1]), int(m[2]), m[3]
            if view not in scheme_names():
                raise JumpQueryError("err", f"the link's `err=` names class scheme `{_shown(view)}`, which this "
                                            f"SegHZ does not know ({', '.join(scheme_names())})")
            names = list(get_scheme(view).names)
            if a >= len(names) or b >= len(names):
                raise JumpQueryError("err", f"the link's `err=` names class {max(a, b)} of scheme {view}, which has "
                                            f"{len(names)} classes (0–{len(names) - 1})")
            if ck_scheme is not None and view not in scheme_views(ck_scheme):
                raise JumpQueryError("err", f"the link's `err=` is a cell of scheme {view}, which checkpoint "
                                            f"`{_shown(out['checkpoint_id'])}` (scheme {ck_scheme}) cannot be shown in")
            out["cell"] = {"true": names[a], "predicted": names[b], "scheme": view}
    return out
