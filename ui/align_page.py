"""Helpers of the Align page (pages/5_Align.py): its choices kept across page switches, the label-scheme default,
and the click canvases sized to their column.

Keeping choices: Streamlit forgets a widget's state once a run (another page's) does not draw it, so the page's
choices went back to their defaults after a visit to another page. Each kept widget's value is copied after it is
drawn into one plain session key (:data:`KEPT`, never cleaned up) and put back into the widget's key before it is
drawn when the widget state is gone. A value is kept with its *context* (e.g. the scheme a "Save as" choice was made
under): in another context the default applies, as before (the widget's identity then changed with its options).
Widgets kept this way get no ``value=``/``index=`` argument: their default is given through the session state
(Streamlit warns when both are given).

Clicked points not yet added to the table are kept the same way, in plain session keys: :data:`PENDING` holds them
per label/image pair (:func:`pair_key`) in image pixels, so a resized canvas shows them at the right place, and
:func:`initial_drawing` gives a canvas that comes back (another page visited, the click toggle turned off and on, a
new size) those points as its ``initial_drawing``: the same drawing for as long as that canvas lives (the canvas
reloads a changed ``initial_drawing``, dropping clicks under way and its undo history). "Add" and "Clear" drop a
pair's pending points (:func:`drop_pending`) and start new canvases, so points are never added twice.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, MutableMapping
from typing import Any

import numpy as np
import streamlit as st

KEPT = "al_kept"  # {widget key: (value, context)}
SCHEME_CHOSEN = "al_scheme_chosen_for"  # the label path the analyst chose the scheme for (by hand)
WIDTH_KEY = "al_column_width"
FALLBACK_WIDTH = 400  # canvas px before the column has been measured (fits a column of a 1024 px wide window)
MIN_WIDTH, MAX_WIDTH, WIDTH_STEP = 200, 1200, 8
PENDING = "al_pending"  # {pair_key: {"label": [[x, y], ...], "image": [...]}}: clicked, not yet in the table (image px)
CANVAS_SEED = "al_canvas_seed"  # {side: (canvas key, the initial_drawing it was created with)}
RESTORED = "al_restored"  # {side: (canvas key, how many kept points it was created with)}
MAX_PENDING_PAIRS = 8  # the pairs whose pending points are kept (the least recently clicked go first)
SIDES = ("label", "image")
# how the canvas' point tool draws a click (the page's st_canvas arguments): a restored point looks the same
POINT_STYLE = {"radius": 4, "strokeWidth": 2, "stroke": "#ff00ff", "fill": "rgba(255, 0, 255, 0.6)"}


def keep(key: str, default: Any, *, options: Iterable[Any] | None = None, context: Any = None) -> None:
    """Before drawing the widget ``key``: give it its kept value when its state is gone (back from another page),
    ``default`` when nothing is kept or the kept value was chosen in another ``context`` or is not one of
    ``options`` (then also when the widget state is still there)."""
    ss = st.session_state
    opts = None if options is None else list(options)
    kept = ss.get(KEPT, {}).get(key)
    valid = (lambda v: opts is None or v in opts)
    if kept is not None and kept[1] != context:  # chosen for something else: the default for this one
        ss.setdefault(KEPT, {}).pop(key, None)
        ss[key] = default
    elif key not in ss or not valid(ss[key]):
        ss[key] = kept[0] if kept is not None and valid(kept[0]) else default


def remember(key: str, context: Any = None) -> None:
    """After drawing the widget ``key``: keep its value (with ``context``) for the next visit of the page."""
    ss = st.session_state
    if key in ss:
        ss.setdefault(KEPT, {})[key] = (ss[key], context)


def scheme_picked() -> None:
    """on_change of "Label scheme": the analyst chose it for the label now given; the page's default (the scheme the
    label reads in) no longer overrides it while that label stays."""
    ss = st.session_state
    ss[SCHEME_CHOSEN] = str(ss.get("al_label", "")).strip()


def default_scheme(expected: str, fits: Iterable[str], num_classes) -> str:
    """The scheme "Label scheme" starts on: ``expected`` (the active model's, or the workspace's) when the label
    reads in it or reads in none, else the scheme the label reads in (of several, the one with the most classes, the
    finest reading: the page notes below when a coarser scheme reads it too)."""
    fits = list(fits)
    if not fits or expected in fits:
        return expected
    return max(fits, key=num_classes)


def clamp_width(width: Any) -> int | None:
    """A measured column width as a canvas width: whole multiples of :data:`WIDTH_STEP` (a pixel or two of jitter
    must not rebuild the canvas), within ``[MIN_WIDTH, MAX_WIDTH]``; ``None`` for no measurement."""
    try:
        w = float(width)
    except (TypeError, ValueError):
        return None
    if not w > 0:
        return None
    return int(min(MAX_WIDTH, max(MIN_WIDTH, (w // WIDTH_STEP) * WIDTH_STEP)))


def canvas_size(shape: tuple[int, ...], width: int) -> tuple[int, int, tuple[float, float]]:
    """(canvas height, canvas width, (scale x, scale y)) for an image of ``shape`` shown at most ``width`` canvas px
    wide and never enlarged. The canvas stretches the image over exactly ``w × h`` px, so the scale of each axis is
    canvas size / image size (rounding makes them differ slightly); :func:`seghz.geo.align_scene.canvas_points`
    takes that pair."""
    H, W = int(shape[0]), int(shape[1])
    sc = min(1.0, width / W)
    h, w = max(1, round(H * sc)), max(1, round(W * sc))
    return h, w, (w / W, h / H)


def pair_key(label_path: str, image_path: str, label_stamp: Any = None, image_stamp: Any = None) -> str:
    """The key pending points are kept under: the two files (paths as given, stripped) and their (modification
    time, size) stamps, so points clicked on one pair (or on a file since changed) never show on another. The label
    scheme is not part of it: it changes the label's colours, not where its features are."""
    def stamp(v: Any) -> list | None:
        return None if v is None else [int(x) for x in v]

    return repr((str(label_path).strip(), str(image_path).strip(), stamp(label_stamp), stamp(image_stamp)))


def _as_points(points: Any) -> np.ndarray:
    a = np.asarray([] if points is None else points, float)
    return a.reshape(-1, 2) if a.size else np.zeros((0, 2))


def points_drawing(points: Any, scale: Any, style: dict | None = None) -> dict:
    """The canvas drawing (Fabric.js JSON, for ``initial_drawing``) of image pixel ``points`` ``(n, 2)`` shown at
    ``scale`` (one number or (scale x, scale y), canvas px per image px): each a "Circle" placed as the point tool
    places a click (origin left/centre, ``left`` = x - (radius + strokeWidth / 2)). The inverse of
    :func:`seghz.geo.align_scene.canvas_points` (to fabric's 2 decimals; a point whose centre falls on a whole canvas
    coordinate moves by 0.01 canvas px, else it would read back as a browser click on that canvas pixel)."""
    sx, sy = (float(scale), float(scale)) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
    if not (sx > 0 and sy > 0):
        raise ValueError(f"scale must be positive, got {scale}")
    st_ = {**POINT_STYLE, **(style or {})}
    r, sw = float(st_["radius"]), float(st_["strokeWidth"])
    objs = []
    for x, y in _as_points(points):
        cx, cy = (x + 0.5) * sx, (y + 0.5) * sy  # the image pixel's centre on the canvas
        # a whole canvas coordinate reads back as a browser click on that canvas pixel (its middle, canvas_points):
        # nudged by fabric's last decimal, it reads back as itself
        cx, cy = (c + 0.01 if round(float(c), 2).is_integer() else c for c in (cx, cy))
        objs.append({"type": "Circle", "originX": "left", "originY": "center",
                     "left": round(float(cx - (r + sw / 2)), 2), "top": round(float(cy), 2), "radius": r, "strokeWidth": sw, "stroke": st_["stroke"],
                     "fill": st_["fill"], "scaleX": 1, "scaleY": 1, "selectable": False, "evented": False})
    return {"objects": objs}


def pending_points(ss: MutableMapping, key: str) -> dict[str, np.ndarray]:
    """The clicked points of pair ``key`` not yet added to the table: ``{"label": (n, 2), "image": (m, 2)}``."""
    entry = ss.get(PENDING, {}).get(key) or {}
    return {side: _as_points(entry.get(side)) for side in SIDES}


def keep_pending(ss: MutableMapping, key: str, side: str, points: Any) -> None:
    """Keep the points now clicked on the ``side`` ("label" / "image") canvas of pair ``key`` for a return to the
    page; a pair with no points on either side is forgotten. At most :data:`MAX_PENDING_PAIRS` pairs are kept."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    pts = [[float(x), float(y)] for x, y in _as_points(points)]
    store = ss.setdefault(PENDING, {})
    entry = store.get(key) or {s: [] for s in SIDES}
    if entry.get(side, []) == pts and key in store:
        return
    entry = {**entry, side: pts}
    store.pop(key, None)  # (re)inserted last: the most recently clicked pair
    if any(entry.get(s) for s in SIDES):
        store[key] = entry
        while len(store) > MAX_PENDING_PAIRS:
            store.pop(next(iter(store)))


def drop_pending(ss: MutableMapping, key: str) -> None:
    """"Add" or "Clear": the pair's clicked points are consumed (in the table, or discarded), never restored."""
    ss.get(PENDING, {}).pop(key, None)


def canvas_key(side: str, key: str, gen: int, size: tuple[int, int]) -> str:
    """The widget key of the ``side`` click canvas of pair ``key``: another pair, click generation (after "Add" or
    "Clear") or size (h, w) is another canvas, so a canvas never carries one pair's clicks over to another."""
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return f"al_canvas_{side}_{int(gen)}_{int(size[1])}x{int(size[0])}_{digest}"


def restored_count(ss: MutableMapping, side: str, canvas_key: str, created_with: dict | None) -> int:
    """How many kept points the ``side`` canvas ``canvas_key`` came back with (0: none, or another canvas).
    ``created_with``: the initial drawing when the canvas is being created this run, else None. Counted when it is
    created and said for as long as that canvas lives: a canvas reports its size at once, and in the rerun that
    follows it is no longer being created (a caption shown only then lasted 0.2 s in a browser)."""
    kept = ss.setdefault(RESTORED, {})
    if created_with is not None:
        kept[side] = (canvas_key, len(created_with["objects"]))
    ck, n = kept.get(side, (None, 0))
    return n if ck == canvas_key else 0


def initial_drawing(ss: MutableMapping, canvas_key: str, key: str, side: str, scale: Any) -> dict:
    """The ``initial_drawing`` of the ``side`` canvas ``canvas_key`` of pair ``key``: for a canvas being created
    (its state not in the session: new, or back after another page) the pair's pending points at ``scale``; for the
    canvas alive since an earlier run the drawing it was created with (unchanged: the canvas reloads a changed one)."""
    seeds = ss.setdefault(CANVAS_SEED, {})  # {side: (canvas key, drawing)}: the canvas shown last on each side
    seed = seeds.get(side)
    if seed is not None and seed[0] == canvas_key and canvas_key in ss:
        return seed[1]
    drawing = points_drawing(pending_points(ss, key)[side], scale)
    seeds[side] = (canvas_key, drawing)
    return drawing


_JS = """
export default function(component) {
    const { parentElement, setStateValue } = component;
    const host = parentElement.host || parentElement;
    let last = null;
    const report = () => {
        const w = Math.floor(host.getBoundingClientRect().width);
        if (w > 0 && w !== last) { last = w; setStateValue("width", w); }
    };
    report();
    const ro = new ResizeObserver(() => report());
    ro.observe(host);
    return () => ro.disconnect();
}
"""
_measure = None


def column_width(key: str = "al_measure") -> int | None:
    """The width (CSS px) of the column this is called in, measured in the browser by a zero-height component
    (``None`` until the browser has reported it: a run later). Kept in the session under :data:`WIDTH_KEY`, so
    the next visit of the page starts with the right size."""
    global _measure
    if _measure is None:
        _measure = st.components.v2.component("seghz_align_column_width", html="<div></div>", js=_JS,
                                              isolate_styles=False)
    try:
        res = _measure(key=key, default={"width": None}, on_width_change=lambda: None, width="stretch", height=0)
        w = clamp_width(res.get("width") if hasattr(res, "get") else getattr(res, "width", None))
    except Exception:  # noqa: BLE001 - a measurement that fails leaves the last (or the fallback) width
        w = None
    ss = st.session_state
    if w is not None:
        ss[WIDTH_KEY] = w
    return ss.get(WIDTH_KEY)


__all__ = ["CANVAS_SEED", "FALLBACK_WIDTH", "KEPT", "PENDING", "POINT_STYLE", "SCHEME_CHOSEN", "WIDTH_KEY",
           "canvas_key", "canvas_size", "clamp_width", "column_width", "default_scheme", "drop_pending",
           "initial_drawing", "keep", "keep_pending", "pair_key", "pending_points", "points_drawing", "remember",
           "scheme_picked"]
