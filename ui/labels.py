"""Session-state helpers of the Labels page: unapplied canvas strokes kept across page switches, and the windows sent
from Evaluate for review, counted per scene.

Unapplied strokes ("drafts"). Streamlit forgets a page's widget state when another page runs: the canvas comes back
empty, and the scene, window, class and tool pickers back at their defaults. Every run in which the canvas holds
strokes keeps them in ``st.session_state`` (a plain key, which survives page switches) under their scene and window,
with the canvas drawing (Fabric JSON, for the canvas's ``initial_drawing``), the painted RGBA (what Apply uses), and
the class, tool and window they were painted with. On the first run of a later visit (the scene picker has no state
yet) :func:`restore_draft` puts the scene, window, class and tool back and marks the drawing to be loaded into the
canvas mounted for that window. A draft belongs to one edit generation: applying, saving or discarding the strokes
starts a new one and drops the draft.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, MutableMapping
from typing import Any

DRAFTS_KEY = "lbl_drafts"  # "scene|r0,c0,h,w" -> draft (see the module docstring)
RESTORE_KEY = "lbl_canvas_restore"  # the draft being shown in the canvas it was restored into
SCENE_KEY = "lbl_scene"
OPEN_SCENE_KEY = "lbl_open_scene"  # set by another page (a scene id) before st.switch_page("pages/3_Labels.py")


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


__all__ = [
    "DRAFTS_KEY",
    "OPEN_SCENE_KEY",
    "RESTORE_KEY",
    "draft_key",
    "drop_drafts",
    "keep_draft",
    "latest_draft",
    "pending_review_counts",
    "restore_draft",
    "restored_for",
    "stroke_count",
]
