"""Streamlit helpers of the Labels page: unapplied canvas strokes kept across page switches, the windows sent from
Evaluate for review counted per scene, the unsaved edit and its cached label versions, flashed messages, and the noise
queue's cards.

Unapplied strokes ("drafts"). Streamlit forgets a page's widget state when another page runs: the canvas comes back
empty, and the scene, window, class and tool pickers back at their defaults. Every run in which the canvas holds
strokes keeps them in ``st.session_state`` (a plain key, which survives page switches) under their scene and window,
with the canvas drawing (Fabric JSON, for the canvas's ``initial_drawing``), the painted RGBA (what Apply uses), and
the class, tool and window they were painted with. On the first run of a later visit (the scene picker has no state
yet) :func:`restore_draft` puts the scene, window, class and tool back and marks the drawing to be loaded into the
canvas mounted for that window. A draft belongs to one edit generation: applying, saving or discarding the strokes
starts a new one and drops the draft. (The drafts of unsaved edits kept on the server are ``ui.label_drafts``.)
Without a draft, :func:`restore_scene` puts back the scene the page showed last, and :func:`restore_window` the window
(size and offsets) it showed last for a scene (:func:`keep_window`, a plain key too).

The unsaved edit of a scene (``st.session_state["lbl_edits"][scene_id]``): ``{"scene_id", "base_version", "mask",
"painted", "gen"}`` plus, once used, ``"tools"`` and the draft fields of ``ui.label_drafts``. Label versions, their
pixel status and image windows are read through caches here (saved versions never change).

Messages: :func:`flash` keeps a message of an area of the page for :data:`FLASH_RUNS` runs, shown where the page calls
:func:`show_flash` for that area, while the scene, its edit generation and the analyst are those it was about. A
message not shown yet, or one whose edit the page itself replaced by a label version saved meanwhile
(:func:`carry_flash`), survives the edit's change: a callback's message is not lost to the version switch of its run.

Pickers whose option texts can change (:func:`remember_choice`, :func:`restore_stale_choice`). A Streamlit select
widget travels as the *text* of its option: the browser sends back the text it shows, not the option. It keeps sending
the text the option had when it was chosen (or last set by the page) until the widget's value changes, so once that
text is no longer among the options (the scene picker marked a scene " · unsaved draft" when a draft was written, a
scene's split changed, the class names differ in another scene's scheme), Streamlit 1.67 hands the widget's callback
the stale text itself and then resets the widget to its first option, silently (``resolve_value_against_options`` in
``streamlit/elements/lib/options_selector_utils.py``; the widget's id is not what changes: a keyed selectbox's id
depends on its key only). So the pickers' option texts are kept stable, and the callbacks of the pickers whose texts can
still change put back the choice shown when they receive a value that is not an option.

The Reason of a save (:func:`reason_key`) is bound to its scene and to a generation that every successful save and
every scene switch advances (:func:`clear_reason`): a new text box, so a reason is never carried over to another save,
even when the browser sends back the text it had before the save (a rerun that overtook the one that cleared it).

Windows sent from Evaluate for review (``seghz.drilldown``'s review list): each is listed with what it was sent for
(:func:`sent_item_markdown`: the checkpoint that made the A → B confusion, its pixels, the evaluation's TTA). Opened in
the canvas (or from Evaluate, :data:`OPEN_WINDOW_KEY`), the page compares the window with that checkpoint and TTA
while it is registered and not archived, and says plainly when it compares with the active model instead
(:func:`comparison_for`, :func:`comparison_notice`).

Noise queue: the card of a queue item (what each verdict writes, *Accept*'s breakdown per class) and the queue's
caption and out-of-date warnings (``seghz.review.queue`` computes them).
"""
from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from seghz import drilldown
from seghz import labels_edit as le
from seghz.data.io import read_image
from seghz.errors import SegHZError
from seghz.review import queue as rq
from seghz.store import NotFoundError
from ui.common import analyst_name

DRAFTS_KEY = "lbl_drafts"  # "scene|r0,c0,h,w" -> draft (see the module docstring)
CHOICES_KEY = "lbl_choices_shown"  # picker key -> (value shown, its options) in the last run that rendered it
REASON_GEN_KEY = "lbl_reason_gen"  # advanced by every successful save and every scene switch
RESTORE_KEY = "lbl_canvas_restore"  # the draft being shown in the canvas it was restored into
SCENE_KEY = "lbl_scene"
SHOWN_SCENE_KEY = "lbl_shown_scene"  # the scene the page showed last (set by the page right after its picker)
WINDOWS_KEY = "lbl_windows_kept"  # scene id -> {"size", "row", "col"}: the window shown last (restore_window)
OPEN_SCENE_KEY = "lbl_open_scene"  # set by another page (a scene id) before st.switch_page("pages/3_Labels.py")
OPEN_WINDOW_KEY = "lbl_open_window"  # ... and a review-list entry: open its window, compared as it was sent
FOCUS_KEY = "lbl_focus"  # {"scene_id", "bbox"[, "review": entry]}: the item opened in the canvas (magenta box)


def draft_key(scene_id: str, window: Iterable[int]) -> str:
    """``"<scene>|r0,c0,h,w"``: the scene and window a draft was painted in."""
    return f"{scene_id}|" + ",".join(str(int(v)) for v in window)


def stroke_count(drawing: Any) -> int:
    """Number of objects (strokes, shapes, points) in a canvas drawing (Fabric JSON); 0 for anything else."""
    objs = drawing.get("objects") if isinstance(drawing, dict) else None
    return len(objs) if isinstance(objs, list) else 0


def keep_draft(ss: MutableMapping, scene_id: str, window: tuple[int, int, int, int], *, gen: int, drawing: Any,
               rgba: Any, class_index: int, tool: str, size: int, row: int, col: int) -> None:
    """Remember the unapplied strokes of the canvas shown for ``scene_id`` / ``window`` (edit generation ``gen``)."""
    drafts = ss.setdefault(DRAFTS_KEY, {})
    key = draft_key(scene_id, window)
    drafts.pop(key, None)  # newest last
    drafts[key] = {"scene_id": scene_id, "window": tuple(int(v) for v in window), "gen": int(gen),
                   "drawing": drawing if isinstance(drawing, dict) else None, "rgba": rgba,
                   "class_index": int(class_index), "tool": tool, "size": int(size), "row": int(row), "col": int(col),
                   "strokes": stroke_count(drawing)}


def drop_drafts(ss: MutableMapping, scene_id: str | None = None, window: tuple[int, int, int, int] | None = None) -> None:
    """Forget the drafts of one window, of one scene, or all (and the restore that shows one of them)."""
    drafts = ss.get(DRAFTS_KEY) or {}
    for k in [k for k, d in drafts.items()
              if (scene_id is None or d["scene_id"] == scene_id) and (window is None or d["window"] == tuple(window))]:
        drafts.pop(k, None)
    shown = ss.get(RESTORE_KEY)
    if shown and (scene_id is None or shown["scene_id"] == scene_id) and (window is None or shown["window"] == tuple(window)):
        ss.pop(RESTORE_KEY, None)


def latest_draft(ss: MutableMapping, edits: dict, scene_ids: Iterable[str]) -> dict | None:
    """The newest draft still in effect: its scene is listed and its edit generation is the scene's current one."""
    ids = set(scene_ids)
    drafts = ss.get(DRAFTS_KEY) or {}
    for d in reversed(list(drafts.values())):
        if d["scene_id"] in ids and (edits.get(d["scene_id"]) or {}).get("gen") == d["gen"] and d["rgba"] is not None:
            return d
    return None


def restore_draft(ss: MutableMapping, edits: dict, scene_ids: Iterable[str]) -> dict | None:
    """On the first run of a visit to the Labels page (its scene picker has no state: the widgets start afresh), put
    back the scene, window, class and tool of the newest draft and mark its drawing for the canvas; the draft, or
    None when there is nothing to restore or the page's widgets still hold their state."""
    if SCENE_KEY in ss:
        return None
    d = latest_draft(ss, edits, scene_ids)
    if d is None:
        return None
    sid = d["scene_id"]
    ss[SCENE_KEY] = sid
    ss[f"lbl_size_{sid}"] = d["size"]
    ss[f"lbl_row_{sid}"] = d["row"]
    ss[f"lbl_col_{sid}"] = d["col"]
    ss["lbl_class"] = d["class_index"]
    ss["lbl_tool"] = d["tool"]
    ss[RESTORE_KEY] = d
    return d


def restore_scene(ss: MutableMapping, scene_ids: Iterable[str]) -> str | None:
    """On the first run of a visit to the Labels page (the scene picker has no state: Streamlit dropped it when another
    page ran), show the scene the page showed last (:data:`SHOWN_SCENE_KEY`, a plain key, kept across pages) instead
    of the picker's first option: Labels (a scene) -> Train -> Align -> Labels opened another scene. Call after
    :func:`restore_draft` (unapplied strokes bring back their own scene) and before the picker; an "open this scene"
    request of another page still wins. Returns the scene put back, or None (the picker kept its state, or the scene
    is gone)."""
    if SCENE_KEY in ss:
        return None
    sid = ss.get(SHOWN_SCENE_KEY)
    if sid is None or sid not in set(scene_ids):
        return None
    ss[SCENE_KEY] = sid
    return sid


def keep_window(ss: MutableMapping, scene_id: str, size: int, row: int, col: int) -> None:
    """Note the window the page shows for ``scene_id`` (its size and offsets, as the widgets hold them) under a plain
    key (:data:`WINDOWS_KEY`), kept across page switches, for :func:`restore_window`."""
    ss.setdefault(WINDOWS_KEY, {})[scene_id] = {"size": int(size), "row": int(row), "col": int(col)}


def restore_window(ss: MutableMapping, scene_id: str, sizes: Iterable[int], scene_height: int,
                   scene_width: int) -> bool:
    """When the window widgets of ``scene_id`` have no state (a visit to another page, or another scene shown, made
    Streamlit drop them), put back the window the page showed last for that scene (:func:`keep_window`), as the
    scene itself is (:func:`restore_scene`). Call before the widgets, after anything that sets them on purpose (a
    draft restored, "Open in the canvas"). A size no longer offered (the scene was re-imported smaller) is dropped:
    the page's defaults; offsets beyond the sliders' range are clamped. Returns whether it put a window back."""
    skey = f"lbl_size_{scene_id}"
    kept = (ss.get(WINDOWS_KEY) or {}).get(scene_id)
    if skey in ss or not isinstance(kept, Mapping):
        return False
    try:
        size, row, col = int(kept["size"]), int(kept["row"]), int(kept["col"])
    except (KeyError, TypeError, ValueError):
        return False
    if size not in list(sizes):
        (ss.get(WINDOWS_KEY) or {}).pop(scene_id, None)
        return False
    ss[skey] = size
    for key, value, extent in (("row", row, scene_height - size), ("col", col, scene_width - size)):
        if extent > 0 and f"lbl_{key}_{scene_id}" not in ss:
            ss[f"lbl_{key}_{scene_id}"] = min(max(0, value), le.offset_slider_max(extent))
    return True


def restored_for(ss: MutableMapping, scene_id: str, window: tuple[int, int, int, int], gen: int) -> dict | None:
    """The restored draft to load into the canvas of ``scene_id`` / ``window`` / edit generation ``gen``, or None
    (a restore meant for another canvas is dropped: that canvas is gone)."""
    d = ss.get(RESTORE_KEY)
    if d is None:
        return None
    if (d["scene_id"], d["window"], d["gen"]) != (scene_id, tuple(int(v) for v in window), int(gen)):
        ss.pop(RESTORE_KEY, None)
        return None
    return d


# ------------------------------------------------------------------------------------------------ sent for review


def pending_review_counts(items: Iterable[dict], scene_ids: Iterable[str] | None = None) -> dict[str, int]:
    """Windows still waiting for review (review-list entries with status "pending") per scene, largest first; only
    the scenes in ``scene_ids`` when given."""
    keep = None if scene_ids is None else set(scene_ids)
    counts = Counter(e.get("scene_id") for e in items
                     if e.get("status") == "pending" and (keep is None or e.get("scene_id") in keep))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def _registered_name(ws: Any, checkpoint_id: str | None) -> str:
    try:
        return ws.get_checkpoint(checkpoint_id).name if checkpoint_id else ""
    except NotFoundError:
        return ""


def sent_item_markdown(ws: Any, entry: dict) -> str:
    """A window sent from Evaluate, as the list under "Sent from Evaluate for review" shows it: the cell, what it was
    sent for (``seghz.drilldown.review_summary``: the checkpoint, its A → B pixels, the TTA), where, who sent it, and
    whether the page can still compare it with that checkpoint."""
    bb = tuple(int(v) for v in entry["bbox"])
    text = (f"**{entry.get('true')} → {entry.get('predicted')}** ({entry.get('scheme', '')}) · "
            f"{drilldown.review_summary(entry, _registered_name(ws, entry.get('checkpoint_id')))} · rows {bb[0]}–"
            f"{bb[2] - 1}, cols {bb[1]}–{bb[3] - 1} · sent by {entry.get('analyst') or 'someone'}")
    ck, why = drilldown.review_checkpoint(ws, entry)
    if ck is None:
        text += f" · ⚠ {why}: the canvas compares this window with the active model, not with the one that made " \
                "the confusion"
    return text


def review_in_view(focus: Any, scene_id: str, window: tuple[int, int, int, int]) -> dict | None:
    """The window sent from Evaluate that was opened in the canvas (``focus``, :data:`FOCUS_KEY`, with its
    review-list entry), while the window shown still overlaps it; None otherwise."""
    if not isinstance(focus, dict) or focus.get("scene_id") != scene_id or not isinstance(focus.get("review"), dict):
        return None
    return focus["review"] if drilldown.bbox_overlaps(focus["bbox"], window) else None


def hide_focus_box() -> None:
    """"Hide the box": the magenta outline goes; a window sent from Evaluate stays the one compared with (its
    checkpoint's prediction) while it is shown, so hiding the outline does not switch the comparison to the active
    model."""
    focus = st.session_state.get(FOCUS_KEY)
    if isinstance(focus, dict) and focus.get("review"):
        st.session_state[FOCUS_KEY] = {**focus, "hidden": True}
    else:
        st.session_state.pop(FOCUS_KEY, None)


def sent_in_window(items: Iterable[dict], scene_id: str, window: tuple[int, int, int, int]) -> list[dict]:
    """The pending review-list entries of ``scene_id`` that overlap the window shown."""
    return [e for e in items if e.get("scene_id") == scene_id and e.get("status") == "pending" and e.get("bbox")
            and drilldown.bbox_overlaps(e["bbox"], window)]


@dataclass(frozen=True)
class Comparison:
    """The model whose prediction the Labels page shows next to the label, and why that one.

    ``checkpoint``: the checkpoint predicted with (None: nothing to predict with); ``tta``: its TTA; ``entry``: the
    window sent from Evaluate this comparison is for (None: the page's own comparison with the active model);
    ``sent_model``: ``checkpoint`` is the one that made the confusion the window was sent for (its whole-scene
    prediction with the evaluation's TTA, the pixels the Evaluate drill-down showed); ``problem``: why the sent
    checkpoint cannot be used (archived, no longer registered, ...), "" otherwise."""

    checkpoint: Any | None
    tta: str | tuple[str, ...] = "none"
    entry: dict | None = None
    sent_model: bool = False
    problem: str = ""

    def cache_key(self, scene_id: str, window: tuple[int, int, int, int]) -> str:
        """The key of the page's window-prediction cache: scene, window, checkpoint, TTA and whether whole-scene."""
        tta = self.tta if isinstance(self.tta, str) else "+".join(self.tta)
        ck = self.checkpoint.id if self.checkpoint is not None else ""
        return f"{scene_id}|{tuple(int(v) for v in window)}|{ck}|{tta}|{'scene' if self.sent_model else 'window'}"


def comparison_for(ws: Any, entry: dict | None, active: Any) -> Comparison:
    """What the page compares the label with: for a window sent from Evaluate (``entry``), the checkpoint that made
    the confusion with the evaluation's TTA when it is registered, not archived and has its weights; else the active
    model (``active``, TTA none), with the reason it is not the sent one."""
    if entry is None:
        return Comparison(active)
    ck, why = drilldown.review_checkpoint(ws, entry)
    if ck is None:
        return Comparison(active, entry=entry, problem=why)
    tta = drilldown.review_tta(entry)
    return Comparison(ck, tta if isinstance(tta, str) else tuple(tta), entry, sent_model=True)


def comparison_notice(cmp: Comparison, active: Any, sent_here: list[dict] | None = None) -> tuple[str, str] | None:
    """``(kind, Markdown)`` of what the page says above its prediction: which checkpoint it compares with when that
    is the one a sent window was sent for, a warning when it is the active model instead (which is not the one that
    made the confusion), and, without an opened sent window, a note when the window shown overlaps windows sent for
    other checkpoints (``sent_here``: :func:`sent_in_window`); None when there is nothing to say."""
    if cmp.entry is not None:
        summary = drilldown.review_summary(cmp.entry, getattr(cmp.checkpoint, "name", "") if cmp.sent_model else "")
        if cmp.sent_model:
            return "caption", (f"Window {summary}. The prediction here is **{cmp.checkpoint.name}**'s (TTA "
                               f"{drilldown.tta_text(cmp.tta)}), the checkpoint it was sent for.")
        if active is None:
            return "warning", (f"This window was {summary}, but {cmp.problem}, and there is no active checkpoint to "
                               "compare with.")
        return "warning", (f"This window was {summary}, but {cmp.problem}: the prediction here is the **active model "
                           f"{active.name}**'s (TTA none), which is **not the one that made the confusion**.")
    if active is None or not sent_here:
        return None
    others = [e for e in sent_here if e.get("checkpoint_id") != active.id]
    if not others:
        return None
    names = ", ".join(dict.fromkeys(f"**{drilldown.review_checkpoint_label(e)}**" for e in others))
    return "caption", (f"This window overlaps {len(others)} window(s) sent from Evaluate for {names}: the prediction "
                       f"here is the active model **{active.name}**'s, not the one that made the confusion. “Open in "
                       "the canvas” under *Sent from Evaluate for review* compares with that checkpoint.")


# ------------------------------------------------------------------------------------------------ cached reads


@st.cache_data(max_entries=16, show_spinner=False)
def load_window(path: str, mtime: float, window: tuple[int, int, int, int]) -> np.ndarray:
    """A window ``(row, col, height, width)`` of an image file (cached per file modification time)."""
    return read_image(path, window=window)


@st.cache_data(max_entries=8, show_spinner=False)
def _version_mask(root: str, scene_id: str, version: int, _ws: Any) -> np.ndarray:
    return _ws.effective_label(scene_id, version)  # label versions never change once saved


@st.cache_data(max_entries=4, show_spinner=False)
def _version_status(root: str, scene_id: str, version: int, _ws: Any) -> np.ndarray:
    return _ws.pixel_status(scene_id, version)


def version_mask(ws: Any, scene_id: str, version: int) -> np.ndarray:
    """The scene's effective label at ``version`` (cached per workspace folder, scene and version)."""
    return _version_mask(str(ws.root), scene_id, version, ws)


def version_status(ws: Any, scene_id: str, version: int) -> np.ndarray:
    """The pixel status (original / corrected / confirmed / ignored) of the scene's label at ``version`` (cached)."""
    return _version_status(str(ws.root), scene_id, version, ws)


def checkpoint_name(ws: Any, checkpoint_id: str | None) -> str:
    """A registered checkpoint's name, else its id (the Map's "predicted with …" message names it)."""
    try:
        return ws.get_checkpoint(checkpoint_id).name if checkpoint_id else ""
    except NotFoundError:
        return checkpoint_id or ""


# ------------------------------------------------------------------------------------------------ the unsaved edit

EDITS_KEY = "lbl_edits"  # scene id -> {"scene_id", "base_version", "mask", "painted", "gen", ...}


def scene_edits() -> dict:
    """This session's unsaved edits, by scene id (see the module docstring)."""
    return st.session_state.setdefault(EDITS_KEY, {})


def new_edit(ws: Any, scene_id: str, gen: int = 0) -> dict:
    """A fresh edit of the scene on its latest label version (nothing painted), of edit generation ``gen``."""
    v = ws.latest_label_version(scene_id)
    mask = version_mask(ws, scene_id, v).copy()
    return {"scene_id": scene_id, "base_version": v, "mask": mask, "painted": np.zeros(mask.shape, bool), "gen": gen}


def pending_pixels(ws: Any, edit: dict) -> np.ndarray:
    """Pixels the unsaved edit sets: painted ones plus any whose value differs from its base version."""
    base = version_mask(ws, edit["scene_id"], edit["base_version"])
    return edit["painted"] | (edit["mask"] != base)


CANVAS_CTX_KEY = "lbl_canvas_shown"  # the canvas the last run drew: its key and what its strokes are (see below)


def canvas_value_rgba(value: Any) -> np.ndarray | None:
    """The RGBA image in a drawing canvas's widget state (``st.session_state[<canvas key>]``, which holds what the
    browser sent *before* the canvas is drawn in the run: ``{"drawing": {"raw": <fabric JSON>, "data": <PNG data
    URL>}, …}``); None when it holds no image (a canvas that has sent nothing since it was mounted)."""
    drawing = value.get("drawing") if isinstance(value, Mapping) else None
    data = drawing.get("data") if isinstance(drawing, Mapping) else None
    if not isinstance(data, str) or ";base64," not in data:
        return None
    try:
        with Image.open(io.BytesIO(base64.b64decode(data.split(";base64,", 1)[1]))) as img:
            return np.asarray(img.convert("RGBA"))
    except (OSError, ValueError):
        return None


def canvas_strokes(rgba: Any, drawing: Any, tool: str | None, window: Iterable[int],
                   canvas_hw: tuple[int, int] | None) -> Any:
    """What the canvas painted, as the page applies it: for the rectangle tools (``rect``, ``accept``) the drawn boxes
    from their geometry in window pixels (:func:`seghz.labels_edit.rect_strokes_rgba`: the canvas image also holds
    each box's 2 px outline, around it), for the polygon tool the drawn polygons from their vertices
    (:func:`seghz.labels_edit.polygon_strokes_rgba`: its outline is 2 px too), else the canvas image ``rgba`` itself
    (also for a drawing whose shapes cannot be read)."""
    if tool not in le.RECT_TOOLS + le.POLYGON_TOOLS or rgba is None:
        return rgba
    _, _, wh, ww = (int(v) for v in window)
    ch, cw = (int(v) for v in canvas_hw) if canvas_hw else np.shape(rgba)[:2]
    if tool in le.POLYGON_TOOLS:
        return le.polygon_strokes_rgba(rgba, drawing, wh, ww, ch, cw)
    return le.rect_strokes_rgba(rgba, drawing, wh, ww, ch, cw)


def current_strokes(ss: MutableMapping, edits: dict) -> dict | None:
    """The strokes on the canvas *now*, read from the canvas's widget state at the start of a run or in a callback.

    ``ss["lbl_strokes"]`` is written when the canvas is drawn, late in a run: in the run a new stroke triggers (or a
    button clicked right after a stroke), it still holds the strokes of the run before, without the new one. A page
    decision taken before the canvas is drawn (a version saved meanwhile, Apply, Save, a verdict: all give the canvas
    a new key, and what it held is gone) must use what the canvas holds now: this brings ``ss["lbl_strokes"]`` up to
    date from the canvas of the last run (``CANVAS_CTX_KEY``: its key, scene, window, edit generation, class and tool)
    when that canvas is still the edit's, and returns it."""
    ctx = ss.get(CANVAS_CTX_KEY)
    if not isinstance(ctx, dict):
        return ss.get("lbl_strokes")
    edit = edits.get(ctx.get("scene_id"))
    if edit is None or edit.get("gen") != ctx.get("gen") or ctx.get("key") not in ss:
        return ss.get("lbl_strokes")
    value = ss.get(ctx["key"])
    rgba = canvas_value_rgba(value)
    if rgba is None:  # nothing sent since it was mounted (or restored from a draft): what the last run saw stands
        return ss.get("lbl_strokes")
    sent = value.get("drawing") if isinstance(value, Mapping) else None
    rgba = canvas_strokes(rgba, sent.get("raw") if isinstance(sent, Mapping) else None, ctx.get("tool"),
                          ctx["window"], ctx.get("canvas"))
    if le.count_painted(rgba):
        ss["lbl_strokes"] = {**{k: v for k, v in ctx.items() if k not in ("key", "canvas")}, "rgba": rgba}
    else:  # cleared with the canvas's own tools
        ss.pop("lbl_strokes", None)
    return ss.get("lbl_strokes")


def strokes_applied(ws: Any, edit: dict, last: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(label, painted, touched)`` of ``edit`` with the canvas strokes ``last`` applied (the edit is not changed).

    Raises:
        ValueError: The tool refuses the strokes (e.g. accept-prediction without a prediction).
    """
    px = le.stroke_pixels(last["rgba"], last["window"], edit["mask"].shape)  # (looked up when called: tests patch them)
    tool = last.get("tool", "brush")
    base = version_mask(ws, edit["scene_id"], edit["base_version"]) if tool == "eraser" else None
    mask, touched = le.apply_tool(edit["mask"], px, tool, last["class_index"], last["window"], base=base,
                                  prediction=last.get("prediction"), num_classes=last.get("num_classes"))
    painted = (edit["painted"] & ~touched) if tool == "eraser" else (edit["painted"] | touched)
    return mask, painted, touched


# ------------------------------------------------------------------------------------------------ pickers, reason


def remember_choice(key: str, value: Any, options: Iterable[Any]) -> None:
    """Note what the picker ``key`` shows in this run and its options (see :func:`restore_stale_choice`)."""
    st.session_state.setdefault(CHOICES_KEY, {})[key] = (value, tuple(options))


def restore_stale_choice(key: str) -> bool:
    """In the picker's callback: when its value is not one of the options it was shown with, the browser sent back an
    option text that has changed since (module docstring), not a choice: put back the choice shown (Streamlit would
    reset the widget to its first option). Returns whether it did."""
    ss = st.session_state
    shown = (ss.get(CHOICES_KEY) or {}).get(key)
    if shown is None or key not in ss:
        return False
    value, options = shown
    try:
        stale = ss[key] not in options
    except TypeError:  # an unhashable stale value is not an option either
        stale = True
    if not stale or value not in options:
        return False
    ss[key] = value
    return True


def reason_key(scene_id: str) -> str:
    """The key of the Reason box of ``scene_id`` in this reason generation (module docstring)."""
    return f"lbl_reason_{scene_id}_{int(st.session_state.get(REASON_GEN_KEY, 0))}"


def take_reason(scene_id: str) -> str | None:
    """The reason typed for the save of ``scene_id`` (None when empty)."""
    return (st.session_state.get(reason_key(scene_id)) or "").strip() or None


def clear_reason() -> None:
    """A new, empty Reason box (after a save, on a scene switch): the text typed is never attached to another save."""
    ss = st.session_state
    ss[REASON_GEN_KEY] = int(ss.get(REASON_GEN_KEY, 0)) + 1


def scene_label(ws: Any, scene_id: str | None) -> str:
    """A scene's name in bold for a message (its id when it is not a scene)."""
    try:
        return f"**{ws.get_scene(scene_id).name}**" if scene_id else "no scene"
    except (NotFoundError, SegHZError, ValueError, TypeError):
        return f"**{scene_id}**"


def window_picked(ws: Any, scene_id: str) -> tuple[int, int, int, int] | None:
    """The window of ``scene_id`` that its window widgets (``lbl_size_<scene>``, ``lbl_row_<scene>``,
    ``lbl_col_<scene>``) select now, computed as the page does; None when they hold nothing."""
    ss = st.session_state
    size = ss.get(f"lbl_size_{scene_id}")
    if size is None:
        return None
    try:
        scene = ws.get_scene(scene_id)
    except (NotFoundError, SegHZError):
        return None
    row = int(ss.get(f"lbl_row_{scene_id}", 0)) if scene.height > size else 0
    col = int(ss.get(f"lbl_col_{scene_id}", 0)) if scene.width > size else 0
    return le.clamp_window(scene.height, scene.width, row, col, int(size))


def action_problem(ws: Any, scene_id: str, window: tuple[int, int, int, int] | None = None) -> str | None:
    """In a save button's callback: why the save for ``scene_id`` (``window``: the window a confirmation covers) must
    write nothing -- the button was rendered for another scene or window than the one the page picks and shows now (a
    button of an earlier run clicked while the page was rerunning, or anything else that moved the scene picker or the
    window), or the strokes on the canvas were painted on another scene. None when they all agree."""
    ss = st.session_state
    restore_stale_choice(SCENE_KEY)  # a stale option text is no scene switch (the picker's callback may come later)
    picked, shown = ss.get(SCENE_KEY), ss.get(SHOWN_SCENE_KEY)
    if picked != scene_id or shown != scene_id:
        now = picked if picked != scene_id else shown
        return (f"this button was for {scene_label(ws, scene_id)}, but the scene picker shows {scene_label(ws, now)} "
                "now. Nothing was written: check the scene shown, then press again.")
    last = ss.get("lbl_strokes")
    if last and last.get("scene_id") != scene_id:
        return (f"the strokes on the canvas were painted on {scene_label(ws, last.get('scene_id'))}, not on "
                f"{scene_label(ws, scene_id)}. Nothing was written: check the scene shown, then press again.")
    now_win = window_picked(ws, scene_id) if window is not None else None
    if now_win is not None and tuple(int(v) for v in now_win) != tuple(int(v) for v in window):
        return (f"the window shown changed (rows {now_win[0]}–{now_win[0] + now_win[2] - 1}, columns "
                f"{now_win[1]}–{now_win[1] + now_win[3] - 1} now, not rows {window[0]}–{window[0] + window[2] - 1}, "
                f"columns {window[1]}–{window[1] + window[3] - 1}). Nothing was written or confirmed: check the window "
                "shown, then press again.")
    return None


def relabel_key(scene_id: str, it: rq.ReviewItem) -> str:
    """The key of a queue card's "Relabel as" picker: per scene (the class names are the scene's scheme's; two scenes'
    items with the same box would share a widget, and its option texts would change under it)."""
    return f"lbl_q_cls_{scene_id}_{item_suffix(it)}"


# ------------------------------------------------------------------------------------------------ flashed messages

# a flashed message is shown in this many page runs: the callback's own run and the rerun that the new canvas's
# first value triggers at once (a save or a queue verdict gives the canvas a new key); shown once, it vanished
# within a second. Any later run (a stroke, a pan) drops it, so it never outlives what it was about.
FLASH_RUNS = 2


def flash_context() -> tuple:
    """What a flashed message is about: the scene shown, its edit generation (0 before it has an edit: the page starts
    it at 0) and the analyst."""
    scene_id = st.session_state.get(SCENE_KEY)
    return scene_id, (scene_edits().get(scene_id) or {}).get("gen", 0), analyst_name()


def flash(kind: str, message: str, area: str = "edit") -> None:
    """Show ``message`` with ``st.<kind>`` where the page calls :func:`show_flash` for ``area``."""
    st.session_state[f"lbl_flash_{area}"] = (kind, message, flash_context(), FLASH_RUNS)


def show_flash(area: str) -> None:
    """Show the area's last message for :data:`FLASH_RUNS` page runs, while the scene, the edit and the analyst are
    those it was about."""
    ss = st.session_state
    key = f"lbl_flash_{area}"
    msg = ss.get(key)
    if not msg:
        return
    kind, text, ctx, left = msg
    now = flash_context()
    if left == FLASH_RUNS and ctx != now and (ctx[0], ctx[2]) == (now[0], now[2]):
        # not shown yet: flashed in this run (a callback), before the page moved the scene's edit on (a label version
        # saved meanwhile shown, strokes applied); about the same scene and analyst, it is still news
        ctx = now
    if ctx != now or left <= 0:
        ss.pop(key, None)
        return
    ss[key] = (kind, text, ctx, left - 1)
    getattr(st, kind)(text)


def carry_flash(scene_id: str, old_gen: int, new_gen: int) -> None:
    """The page replaced the edit of ``scene_id`` (generation ``old_gen``) by generation ``new_gen`` on its own, not
    on the analyst's doing (a label version saved meanwhile is shown): the messages about the old edit are kept, about
    the new one (a flash is dropped when its edit changes: :func:`show_flash`)."""
    ss = st.session_state
    for key in [k for k in ss if isinstance(k, str) and k.startswith("lbl_flash_")]:
        msg = ss.get(key)
        if isinstance(msg, tuple) and len(msg) == 4 and isinstance(msg[2], tuple) and len(msg[2]) == 3 \
                and msg[2][:2] == (scene_id, old_gen):
            ss[key] = (msg[0], msg[1], (scene_id, new_gen, msg[2][2]), msg[3])


# ------------------------------------------------------------------------------------------------ noise queue

QUEUE_PAGE = 5  # queue items per page (and windows sent from Evaluate listed)


def item_suffix(it: rq.ReviewItem) -> str:
    """The part of a queue item's widget keys that names it (its bounding box)."""
    return "_".join(str(v) for v in it.bbox)


def show_queue_built(queue: rq.SceneQueue, stale: rq.Staleness, latest: int, n_pending: int) -> None:
    """The caption saying how the queue was built, on which label version (and where the scene is now, saying when
    only the queue's own verdicts changed it since), and how many items are left."""
    since = ""
    if latest != queue.label_version:
        since = f" (the scene is at version {latest} now"
        if stale.verdict_px and not stale.label_stale:
            since += f"; the {stale.verdict_px:,} label px changed since were this queue's own verdicts"
        since += ")"
    st.caption(f"Built with **{queue.checkpoint_id}** ({queue.scoring}, TTA {queue.tta}, threshold "
               f"{queue.threshold:.2f}) on label "
               f"version {queue.label_version}{since}, {queue.created_at[:19].replace('T', ' ')} UTC · "
               f"{len(queue.items)} item(s), {n_pending} still to review.")
    if queue.scoring.startswith("in-sample (held-out asked"):
        st.warning("**Scored in-sample, not held-out:** the model learned part of this scene's label noise, so it "
                   "finds less of it suspicious than a held-out head would; weigh its top items with that in mind. "
                   "Label another real scene of this scheme and rebuild for held-out scoring.")


def show_queue_staleness(queue: rq.SceneQueue, stale: rq.Staleness, latest: int, active: Any) -> None:
    """The warnings that the queue is out of date: its label changed other than by its own verdicts, or it was built
    with another checkpoint than the active one."""
    if stale.label_stale:
        why = ("that version is no longer in the label history" if queue.label_version > latest
               else "the scene's size changed" if stale.shape_changed
               else f"{stale.changed_px:,} label pixel{'s' if stale.changed_px != 1 else ''} changed since other than "
                    "by this queue's own verdicts (brush edits, an undo, another analyst's save)")
        st.warning(f"**This queue is out of date**: it was built on label version {queue.label_version}, the scene is "
                   f"at version {latest} now, and {why}. Its items, scores and predictions may no longer match the "
                   "label: rebuild it.")
    if stale.model_stale:
        # e.g. the active model changed since the queue was built (a job re-ranks the queues only when its new
        # checkpoint becomes the active one)
        st.warning(f"This queue was built with **{queue.checkpoint_id}**, not the active checkpoint **{active.id}**: "
                   "build it again to rank it with the active model (judged items stay out unless their label changed).")


def rebuild_queue_button(queue: rq.SceneQueue, latest: int, active: Any) -> bool:
    """The button that rebuilds an out-of-date queue with the active checkpoint, as it was built; whether pressed."""
    held = queue.scoring != "in-sample"
    return st.button(f"Rebuild the queue with {active.name}", key="lbl_q_rebuild", type="primary",
                     help=f"Score the current label (version {latest}) again with the active checkpoint, as this "
                          f"queue was built: TTA {queue.tta}, threshold {queue.threshold:.2f}, "
                          f"{'held-out' if held else 'in-sample'} scoring. Judged items stay out unless their label "
                          "changed.")


def queue_identity(queue: rq.SceneQueue) -> str:
    """Which build of a scene's queue this is: when it was built, with which checkpoint, TTA, threshold and scoring, on
    which label version. A card's verdict carries it (``drawn_from``), so a verdict clicked on a card of a queue that was
    rebuilt since (a retrain's re-rank, another tab's Rebuild) is refused instead of applied to the new queue's item with
    the same box, whose prediction the analyst never saw."""
    return (f"{queue.created_at}|{queue.checkpoint_id}|v{queue.label_version}|{queue.tta}|{queue.threshold:g}|"
            f"{queue.scoring}")


def accept_summary(it: rq.ReviewItem, parts: list) -> tuple[str, str]:
    """What a card says about an item and what *Accept* writes: the "label → model says" line (with the other classes
    the model predicts on the component when there are several) and the caption of Accept's per-class breakdown
    (``parts``: :func:`seghz.review.queue.accept_breakdown`)."""
    mixed = len(parts) > 1
    top = parts[0][1] if parts else it.predicted_class
    n_top = next((k for c, _, k in parts if c == it.predicted_id), 0)
    says = (f"model says **{it.predicted_class}** on {n_top:,} of {it.pixels:,} px (also "
            + ", ".join(f"{n} {k:,}" for c, n, k in parts if c != it.predicted_id) + ")") if mixed \
        else f"model says **{top}** · {it.pixels:,} px"
    accept = (f"Accept prediction writes the model's class per pixel: {rq.describe_breakdown(parts)}"
              + (f" — or “All as {it.predicted_class}” sets all {it.pixels:,} px to "
                 f"{it.predicted_class}." if mixed else "."))
    return says, accept


def queue_item_card(ws: Any, rank: int, it: rq.ReviewItem, *, queue: rq.SceneQueue, scene: Any, scheme: Any,
                    dscheme: Any, latest_mask: np.ndarray, image: tuple[str, float],
                    on_action: Callable[..., None], on_zoom: Callable[..., None]) -> None:
    """A queue item's card: its image / label / prediction / suspicion panels, what the model says and what Accept
    writes, and its verdict buttons (``on_action(scene_id, key, action[, class_index])``), "Open in the canvas"
    (``on_zoom(scene_id, bbox, height, width)``), "Open on map" and "Relabel as". ``image``: the scene image's path
    and modification time; ``dscheme``: the scheme in the session's screen colours. Every verdict is given the queue's
    :func:`queue_identity` as ``drawn_from``."""
    sid, sfx = scene.id, item_suffix(it)
    drawn = {"drawn_from": queue_identity(queue)}  # the queue this card shows (a rebuilt one refuses the verdict)
    with st.container(border=True):
        cr, cc, chh, cww = rq.crop_window(it.bbox, queue.shape)
        crop_img = load_window(image[0], image[1], (cr, cc, chh, cww))
        m = it.crop_mask((cr, cc, chh, cww), queue.shape[1])
        panels = rq.item_panels(crop_img, latest_mask[cr : cr + chh, cc : cc + cww],
                                queue.predicted[cr : cr + chh, cc : cc + cww], m, dscheme)
        left, right = st.columns([3, 2])
        left.image(rq.composite(panels, size=240, per_row=2),  # 2 × 2: large enough to judge a few px
                   caption="image · label (top) · prediction · suspect pixels (bottom)")
        b_r0, b_c0, b_r1, b_c1 = it.bbox
        parts = rq.accept_breakdown(queue, it, scheme.names)  # what "accept" writes, class by class
        mixed = len(parts) > 1
        says, accept = accept_summary(it, parts)
        right.markdown(f"**#{rank}** · label **{it.label_class}** → {says} · score {it.score:.1f} "
                       f"(mean {it.mean_score:.2f})")
        right.caption(accept)
        right.caption(f"Location: {it.location()} of {scene.width}×{scene.height} px · send to map: bbox "
                      f"(row0, col0, row1, col1) = ({b_r0}, {b_c0}, {b_r1}, {b_c1})")
        verdicts = right.container(horizontal=True)  # buttons as wide as their labels (thirds cut "Accept pre…")
        verdicts.button("Accept prediction (per pixel)" if mixed else "Accept prediction", key=f"lbl_q_accept_{sfx}",
                        on_click=on_action, args=(sid, it.key, "accept"), kwargs=drawn,
                        help="Each pixel of the component takes the model's class for that pixel: "
                             f"{rq.describe_breakdown(parts)}.")
        if mixed and it.predicted_id < scheme.num_classes:
            verdicts.button(f"All as {it.predicted_class}", key=f"lbl_q_accept_all_{sfx}",
                            on_click=on_action, args=(sid, it.key, "relabel", it.predicted_id), kwargs=drawn,
                            help=f"All {it.pixels:,} px of the component become {it.predicted_class} (the "
                                 "model's majority class here), saved as a relabel.")
        verdicts.button("Confirm label", key=f"lbl_q_confirm_{sfx}", on_click=on_action,
                        args=(sid, it.key, "confirm"), kwargs=drawn, help="The label is right: its pixels become trusted.")
        verdicts.button("Ignore (255)", key=f"lbl_q_ignore_{sfx}", on_click=on_action,
                        args=(sid, it.key, "ignore"), kwargs=drawn, help="Mark the component's pixels as ignore / unlabelled.")
        openers = right.container(horizontal=True)
        openers.button("Open in the canvas", key=f"lbl_q_zoom_{sfx}", on_click=on_zoom,
                       args=(sid, tuple(int(v) for v in it.bbox), scene.height, scene.width),
                       help="Show this component in the correction canvas above, with its suspicion overlaid.")
        if openers.button("Open on map", key=f"lbl_q_map_{sfx}",
                          help="The Map page at this component, predicted, with the error layer on."):
            st.session_state["map_jump"] = drilldown.map_jump(
                drilldown.Window(sid, tuple(int(v) for v in it.bbox), 0), checkpoint_id=queue.checkpoint_id,
                checkpoint_name=checkpoint_name(ws, queue.checkpoint_id), tta=queue.tta,  # as the queue was built
                why=f"noise-queue item: label {it.label_class}, model {it.predicted_class}",
                role="the checkpoint the queue was built with")
            st.switch_page("pages/1_Map.py")
        k4, k5 = right.columns([2, 1])
        class_opts = list(range(scheme.num_classes))
        k4.selectbox("Relabel as", class_opts, index=it.predicted_id if it.predicted_id < scheme.num_classes else 0,
                     key=relabel_key(sid, it), format_func=lambda i: f"{i}: {scheme.names[i]}",
                     label_visibility="collapsed")
        k5.button("Relabel", key=f"lbl_q_relabel_{sfx}", on_click=on_action,
                  args=(sid, it.key, "relabel"), kwargs=drawn, help="Set the component's pixels to the chosen class.")


def show_queue_items(ws: Any, pending: list, *, queue: rq.SceneQueue, scene: Any, scheme: Any, dscheme: Any,
                     latest_mask: np.ndarray, image: tuple[str, float], on_action: Callable[..., None],
                     on_zoom: Callable[..., None]) -> None:
    """The items still to review, :data:`QUEUE_PAGE` cards a page (with a page picker when there are more), or
    that nothing is left (the arguments as :func:`queue_item_card`'s)."""
    if not pending:
        st.success("Nothing left to review in this queue.")
        return
    n_pages = (len(pending) + QUEUE_PAGE - 1) // QUEUE_PAGE
    page = int(st.columns([1, 4])[0].number_input(f"Page (of {n_pages})", 1, n_pages, 1, key=f"lbl_q_page_{scene.id}")) \
        if n_pages > 1 else 1
    page = min(max(page, 1), n_pages)
    first = (page - 1) * QUEUE_PAGE
    for rank, it in enumerate(pending[first : first + QUEUE_PAGE], start=first + 1):
        queue_item_card(ws, rank, it, queue=queue, scene=scene, scheme=scheme, dscheme=dscheme,
                        latest_mask=latest_mask, image=image, on_action=on_action, on_zoom=on_zoom)


__all__ = [
    "CANVAS_CTX_KEY",
    "CHOICES_KEY",
    "DRAFTS_KEY",
    "EDITS_KEY",
    "FLASH_RUNS",
    "FOCUS_KEY",
    "OPEN_SCENE_KEY",
    "OPEN_WINDOW_KEY",
    "QUEUE_PAGE",
    "REASON_GEN_KEY",
    "RESTORE_KEY",
    "SCENE_KEY",
    "SHOWN_SCENE_KEY",
    "WINDOWS_KEY",
    "Comparison",
    "accept_summary",
    "action_problem",
    "canvas_strokes",
    "canvas_value_rgba",
    "carry_flash",
    "checkpoint_name",
    "clear_reason",
    "comparison_for",
    "comparison_notice",
    "current_strokes",
    "draft_key",
    "drop_drafts",
    "flash",
    "flash_context",
    "hide_focus_box",
    "item_suffix",
    "keep_draft",
    "keep_window",
    "latest_draft",
    "load_window",
    "new_edit",
    "pending_pixels",
    "pending_review_counts",
    "queue_identity",
    "queue_item_card",
    "reason_key",
    "rebuild_queue_button",
    "relabel_key",
    "remember_choice",
    "restore_draft",
    "restore_scene",
    "restore_stale_choice",
    "restore_window",
    "restored_for",
    "review_in_view",
    "scene_edits",
    "scene_label",
    "sent_in_window",
    "sent_item_markdown",
    "show_flash",
    "show_queue_built",
    "show_queue_items",
    "show_queue_staleness",
    "stroke_count",
    "strokes_applied",
    "take_reason",
    "version_mask",
    "version_status",
    "window_picked",
]
