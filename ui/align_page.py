"""Helpers of the Align page (pages/5_Align.py): its choices kept across page switches, the label-scheme default,
and the click canvases sized to their column.

Keeping choices: Streamlit forgets a widget's state once a run (another page's) does not draw it, so the page's
choices went back to their defaults after a visit to another page. Each kept widget's value is copied after it is
drawn into one plain session key (:data:`KEPT`, never cleaned up) and put back into the widget's key before it is
drawn when the widget state is gone. A value is kept with its *context* (e.g. the scheme a "Save as" choice was made
under): in another context the default applies, as before (the widget's identity then changed with its options).
Widgets kept this way get no ``value=``/``index=`` argument: their default is given through the session state
(Streamlit warns when both are given).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import streamlit as st

KEPT = "al_kept"  # {widget key: (value, context)}
SCHEME_CHOSEN = "al_scheme_chosen_for"  # the label path the analyst chose the scheme for (by hand)
WIDTH_KEY = "al_column_width"
FALLBACK_WIDTH = 400  # canvas px before the column has been measured (fits a column of a 1024 px wide window)
MIN_WIDTH, MAX_WIDTH, WIDTH_STEP = 200, 1200, 8


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


__all__ = ["FALLBACK_WIDTH", "KEPT", "SCHEME_CHOSEN", "WIDTH_KEY", "canvas_size", "clamp_width", "column_width",
           "default_scheme", "keep", "remember", "scheme_picked"]
