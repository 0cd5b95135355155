"""Drafts of the Labels page's unsaved edits on the server (``seghz.drafts``): a reload, a new tab or a restart loses
nothing.

Whenever the unsaved edit of a scene changes (strokes on the canvas included), :func:`sync_draft` also writes it to
``<workspace>/drafts/<analyst or anon>/<scene>.npz``. A scene with a draft that is not this tab's own shows a banner to
restore or discard it (:func:`show_drafts`: the analyst's own drafts and those made without a name; every draft while
no name is entered, saying whose), and the drafts of other scenes are listed with a way to open them
(:func:`show_other_drafts`). Saving or discarding the edit deletes its draft (:func:`drop_own_draft`); switching scenes
keeps it and says so (:func:`note_left_edit`, :func:`show_left_edit`). A tab never overwrites a draft it did not write
or restore itself: each draft carries a random token, and the tokens this tab wrote or restored are kept in its session
(:data:`DRAFT_TOKENS`).

An edit (``ui.labels.scene_edits()``) holds its draft's ``"draft_path"``, ``"draft_info"`` (when, pixels) and
``"draft_sig"`` (what was written last), and after a restore the ``"owner"`` of the draft (its analyst).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from seghz import drafts as dft
from seghz.labels_edit import count_painted
from seghz.store import NotFoundError
from ui import labels as lui
from ui.common import analyst_name, analyst_problem

DRAFT_TOKENS = "lbl_draft_tokens"  # draft path -> token of the draft this tab wrote or restored there
LEFT_EDIT = "lbl_left_edit"  # the scene switched away from with an unsaved edit: {"from", "to", "n", "server"}


def known_tokens() -> dict:
    """The tokens of the drafts this tab wrote or restored, by draft path."""
    return st.session_state.setdefault(DRAFT_TOKENS, {})


def session_analyst() -> str:
    """The analyst's name when it can be recorded, else "" (drafts then go to the ``anon`` folder)."""
    name = analyst_name()
    return "" if analyst_problem(name) else name


def scenes_with_drafts(ws: Any) -> set[str]:
    """The scenes holding a draft this analyst would see (theirs, or made without a name; every draft while no name is
    entered): listed under the scene picker, so a draft left on another scene is not forgotten (never in the picker's
    option texts: a text that changes under the browser resets the picker, see ``ui.labels``)."""
    name = session_analyst()
    found, _ = dft.list_drafts(ws.root, None, None if not name else [name, ""])
    return {d.scene_id for d in found}


def draft_owner(edit: dict) -> str:
    """Whose draft an edit is written as: the analyst's name; without one, the analyst of the draft it was restored
    from (a reload empties the name field: the restored draft stays in its analyst's folder); else nobody (anon)."""
    return session_analyst() or str(edit.get("owner") or "")


def owned(path: str | Path | None) -> bool:
    """Whether the draft file at ``path`` is the one this tab last wrote or restored (same token)."""
    if not path:
        return False
    tok = known_tokens().get(str(path))
    return tok is not None and dft.draft_token(path) == tok


def may_write(path: Path) -> bool:
    """A tab writes a draft where there is none, where its own is, or over a damaged file (nothing in it can be
    restored); never over a draft another tab (or an earlier session) left there."""
    try:
        d = dft.read_draft(path)
    except FileNotFoundError:
        return True
    except dft.DraftError:
        return True
    return known_tokens().get(str(path)) == d.token


def drop_own_draft(edit: dict | None) -> None:
    """Delete the draft this edit wrote (or was restored from), if it is still this tab's."""
    if not edit:
        return
    path = edit.pop("draft_path", None)
    edit.pop("draft_info", None)
    edit.pop("draft_sig", None)
    if path and owned(path):
        dft.delete_draft(path)
    if path:
        known_tokens().pop(str(path), None)


def strokes_fingerprint(scene_id: str, edit: dict) -> str | None:
    """What the strokes on the scene's current canvas are (None when there are none): a draft is rewritten when it
    changes."""
    last = st.session_state.get("lbl_strokes")
    if not last or last["scene_id"] != scene_id or last["gen"] != edit["gen"]:
        return None
    alpha = np.ascontiguousarray(np.asarray(last["rgba"])[..., 3])
    return (hashlib.blake2b(alpha.tobytes(), digest_size=16).hexdigest()
            + f"|{last['class_index']}|{last.get('tool')}|{tuple(last['window'])}")


def pending_with_strokes(ws: Any, scene_id: str, edit: dict) -> tuple[np.ndarray, np.ndarray, set]:
    """The edit's label, the pixels it sets and its tools, with the strokes still on the canvas applied: what a
    draft keeps (a reload loses the canvas too)."""
    mask, painted, tools = edit["mask"], edit["painted"], set(edit.get("tools") or ())
    last = st.session_state.get("lbl_strokes")
    if strokes_fingerprint(scene_id, edit) is not None and count_painted(last["rgba"]):
        try:
            mask, painted, _ = lui.strokes_applied(ws, edit, last)
            tools.add(last.get("tool", "brush"))
        except ValueError:  # refused by its tool (said when applied): the draft keeps the edit without them
            pass
    base = lui.version_mask(ws, scene_id, edit["base_version"])
    return mask, painted | (mask != base), tools


def sync_draft(ws: Any, scene_id: str) -> str | None:
    """Write the scene's pending edit as its draft when it changed since the last write (delete the draft when nothing
    is pending any more). Returns why it could not be kept ("blocked": another tab's draft is where it would go), or
    None."""
    edit = lui.scene_edits().get(scene_id)
    if not edit or "painted" not in edit:
        return None
    owner = draft_owner(edit)
    sig = (edit["gen"], edit["base_version"], owner, strokes_fingerprint(scene_id, edit))
    if edit.get("draft_sig") == sig:
        return None
    mask, px, tools = pending_with_strokes(ws, scene_id, edit)
    if not px.any():
        drop_own_draft(edit)
        edit["draft_sig"] = sig
        return None
    path = dft.draft_path(ws.root, owner, scene_id)
    if not may_write(path):
        return "blocked"  # retried on every run until that draft is restored or discarded
    try:
        d = dft.write_draft(ws.root, owner, scene_id, base_version=edit["base_version"], pixels=px, values=mask,
                            tool="+".join(sorted(tools)) or "brush")
    except (OSError, ValueError) as e:
        return f"Your unsaved edit could not be kept as a draft on the server ({e}): save it soon."
    old = edit.get("draft_path")
    if old and old != str(path):  # the analyst changed (a name entered): the draft moves to their folder
        drop_own_draft(edit)
    known_tokens()[str(path)] = d.token
    edit["draft_path"], edit["draft_info"], edit["draft_sig"] = str(path), (d.when(), d.pixels), sig
    return None


def on_restore_draft(ws: Any, scene_id: str, path: str) -> None:
    """Put a draft back as the scene's unsaved edit (replacing this tab's own, if any), on the version it was based
    on: the usual notice then says when the label has moved on since, and the save merges or refuses."""
    ss, edits = st.session_state, lui.scene_edits()
    try:
        d = dft.read_draft(path)
    except FileNotFoundError:
        lui.flash("warning", "That draft is gone (saved or discarded in another tab meanwhile); nothing restored.",
                  "draft")
        return
    except dft.DraftError as e:
        lui.flash("error", f"Could not restore the draft: {e}", "draft")
        return
    scene = ws.get_scene(scene_id)
    latest_now = ws.latest_label_version(scene_id)
    problem = dft.restore_problem(scene, d, latest_now)
    if problem:
        lui.flash("error", f"Could not restore the draft {path}: {problem}. Discard it.", "draft")
        return
    old = edits.get(scene_id) or {}
    replaced = int(np.count_nonzero(pending_with_strokes(ws, scene_id, old)[1])) if "painted" in old else 0
    ss.pop("lbl_strokes", None)  # the canvas starts afresh with the draft's pixels in the edit
    lui.drop_drafts(ss, scene_id)
    if "painted" in old and old.get("draft_path") != str(path):
        drop_own_draft(old)  # replaced by the restored draft (the button said so)
    edits[scene_id] = {"scene_id": scene_id, "base_version": d.base_version,
                       "mask": d.apply(lui.version_mask(ws, scene_id, d.base_version)), "painted": d.mask(),
                       "gen": int(old.get("gen", 0)) + 1, "tools": {t for t in d.tool.split("+") if t} or {"brush"},
                       "owner": d.analyst, "draft_path": str(path), "draft_info": (d.when(), d.pixels)}
    known_tokens()[str(path)] = d.token
    ss.pop("lbl_conflict", None)
    who = f" of {d.analyst}" if d.analyst and d.analyst != session_analyst() else ""
    msg = f"Restored the draft{who} from {d.when()}: {d.pixels:,} edited pixels on label version {d.base_version}."
    if latest_now != d.base_version:
        msg += (f" The label has moved on to version {latest_now} since: saving merges your pixels on top of it when "
                "none of them were changed since, and refuses otherwise — or re-apply them onto the latest version "
                "first (notice above).")
    else:
        msg += " Check it, then save it."
    if replaced:
        msg += f" It replaced this tab's unsaved edit ({replaced:,} px)."
    lui.flash("success", msg, "draft")


def on_discard_draft(scene_id: str, path: str, who: str) -> None:
    """Delete a draft file (``who``: whose it is, for the message); this tab's pending edit may then be kept there."""
    dft.delete_draft(path)
    known_tokens().pop(str(path), None)
    edit = lui.scene_edits().get(scene_id) or {}
    edit.pop("draft_sig", None)  # this tab's own pending edit (if any) may now be kept there
    if edit.get("draft_path") == str(path):
        edit.pop("draft_path", None)
        edit.pop("draft_info", None)
    lui.flash("info", f"Discarded the draft{who} (deleted {path}).", "draft")


def show_other_drafts(ws: Any, shown: str, scene_names: dict[str, str], on_open: Callable[[str], None]) -> None:
    """A line per other scene holding a draft this tab did not write (after a reload the page opens on its first
    scene: the drafts of the others would go unnoticed), with a button to open it (``on_open(scene_id)``)."""
    name = session_analyst()
    found, _ = dft.list_drafts(ws.root, None, None if not name else [name, ""])
    tokens = known_tokens()
    others = [d for d in found if d.scene_id != shown and d.scene_id in scene_names
              and tokens.get(str(d.path)) != d.token]
    if not others:
        return
    with st.container(border=True, key="lbl_other_drafts"):
        st.markdown(f"**Unsaved drafts of {len({d.scene_id for d in others})} other scene(s)** (open one to restore "
                    "or discard it):")
        for d in others:
            who = "" if d.analyst and d.analyst == name else f" by {d.analyst}" if d.analyst else " (no analyst name)"
            c1, c2 = st.columns([4, 1])
            c1.markdown(f"**{scene_names[d.scene_id]}**: {d.pixels:,} px from {d.when()}, based on version "
                        f"{d.base_version}{who}")
            c2.button(f"Open {scene_names[d.scene_id]}", key=f"lbl_other_draft_{d.scene_id}_{d.path.parent.name}",
                      on_click=on_open, args=(d.scene_id,))


def draft_banner_lines(d: dft.Draft, who: str, latest_version: int, pending_here: int, here: bool) -> list[str]:
    """The paragraphs of a draft's banner: what it is, whether the label moved on since, that restoring replaces this
    tab's unsaved edit (``pending_here`` px), and (``here``: it sits where this tab's edit would be written) that this
    tab's changes are not kept meanwhile."""
    lines = [(f"**Unsaved draft from {d.when()}** ({d.pixels:,} px, based on version {d.base_version}){who} — "
              "Restore it into the editor, or Discard it.")]
    if d.base_version != latest_version:
        lines.append(f"The label has moved on since: it is at version {latest_version} now. Restoring brings the "
                     f"pixels back on version {d.base_version}; saving then merges them on top of version "
                     f"{latest_version} when none of them were changed since, and refuses otherwise.")
    if pending_here:
        lines.append(f"Restoring replaces this tab's unsaved edit of the scene ({pending_here:,} px).")
    if here:
        lines.append("Until you restore or discard it, changes you make to this scene here are not kept as a "
                     "draft (they would replace it).")
    return lines


def show_drafts(ws: Any, scene_id: str, latest_version: int, pending_here: int) -> None:
    """Banners for the scene's drafts that are not this tab's own: the analyst's and those made without a name (every
    draft while no name is entered, saying whose), and damaged draft files (with a way to delete them)."""
    name = session_analyst()
    found, problems = dft.list_drafts(ws.root, scene_id, None if not name else [name, ""])
    here = str(dft.draft_path(ws.root, draft_owner(lui.scene_edits()[scene_id]), scene_id))
    tokens = known_tokens()
    for d in found:
        if tokens.get(str(d.path)) == d.token:
            continue  # this tab's own draft (kept up to date below the canvas)
        folder = d.path.parent.name
        who = ("" if d.analyst and d.analyst == name else f" by **{d.analyst}**" if d.analyst
               else " made without an analyst name")
        lines = draft_banner_lines(d, who, latest_version, pending_here, str(d.path) == here)
        with st.container(border=True, key=f"lbl_draft_box_{folder}"):
            st.warning("\n\n".join(lines), icon=":material/edit_note:")
            row = st.container(horizontal=True)
            row.button("Restore", key=f"lbl_draft_restore_{folder}", type="primary", on_click=on_restore_draft,
                       args=(ws, scene_id, str(d.path)),
                       help=f"Re-apply the draft's {d.pixels:,} edited pixels ({d.tool or 'brush'}).")
            with row.popover("Discard", help="Asks once more: discarding deletes the unsaved pixels for good."):
                st.markdown(f"Delete the draft's {d.pixels:,} unsaved pixels for good?")
                st.button("Delete the draft", key=f"lbl_draft_discard_{folder}", type="primary",
                          on_click=on_discard_draft, args=(scene_id, str(d.path), who.replace("**", "")),
                          help=f"Delete {d.path}.")
    for k, prob in enumerate(problems):
        with st.container(border=True, key=f"lbl_draft_bad_{k}"):
            st.error(f"A draft of this scene cannot be read: {prob.message}")
            st.button("Discard the damaged draft", key=f"lbl_draft_bad_discard_{k}", on_click=on_discard_draft,
                      args=(scene_id, str(prob.path), ""), help=f"Delete {prob.path}.")
    lui.show_flash("draft")


def show_draft_status(ws: Any, scene_id: str, edit: dict) -> None:
    """Keep the scene's pending edit (strokes on the canvas included) as its draft on the server, and say so below the
    canvas, or why it could not be kept ("blocked" is explained by the draft's banner above)."""
    draft_problem = sync_draft(ws, scene_id)
    if draft_problem and draft_problem != "blocked":
        st.warning(draft_problem)
    elif edit.get("draft_info") and not draft_problem:
        when, n_px = edit["draft_info"]
        st.caption(f"Your unsaved edit ({n_px:,} px, strokes on the canvas included) is kept as a draft on the server "
                   f"({when}): a reload or a new tab offers it back. Saving or discarding it deletes the draft.")


def note_left_edit(ws: Any, prev: str | None, new: str | None) -> None:
    """A scene switch from ``prev`` to ``new`` (the canvas strokes already applied): a pending edit of the scene left
    is kept (in this session and as a draft on the server), which :func:`show_left_edit` then says."""
    edits = lui.scene_edits()
    if not prev or not new or prev == new or "painted" not in (edits.get(prev) or {}):
        return
    n = int(np.count_nonzero(lui.pending_pixels(ws, edits[prev])))
    if not n:
        return
    problem = sync_draft(ws, prev)
    # shown while the next scene is (a flash lasting two runs vanished at once in the browser: a scene switch mounts
    # a new canvas, whose first values rerun the page)
    st.session_state[LEFT_EDIT] = {"from": prev, "to": new, "n": n, "server": problem is None}


def show_left_edit(ws: Any, shown: str, on_back: Callable[[str], None]) -> None:
    """The notice that the unsaved edit of the scene switched away from is kept, with a way back to it
    (``on_back(scene_id)``)."""
    ss = st.session_state
    left = ss.get(LEFT_EDIT)
    if not left:
        return
    prev = left["from"]
    if left["to"] != shown or "painted" not in (lui.scene_edits().get(prev) or {}):
        ss.pop(LEFT_EDIT, None)
        return
    try:
        prev_name = ws.get_scene(prev).name
    except NotFoundError:
        ss.pop(LEFT_EDIT, None)
        return
    where = ("in this browser session and as a draft on the server (a reload or a new tab offers it back)"
             if left["server"] else "in this browser session")
    with st.container(horizontal=True, key="lbl_left_edit_box"):
        st.info(f"Your unsaved edit of **{prev_name}** ({left['n']:,} px) is not lost: it is kept {where}. Switch "
                "back to that scene to continue it and save it.", icon=":material/save:")
        st.button(f"Back to {prev_name}", key="lbl_left_edit_back", on_click=on_back, args=(prev,))


__all__ = [
    "DRAFT_TOKENS",
    "LEFT_EDIT",
    "draft_banner_lines",
    "draft_owner",
    "drop_own_draft",
    "known_tokens",
    "may_write",
    "note_left_edit",
    "on_discard_draft",
    "on_restore_draft",
    "owned",
    "pending_with_strokes",
    "session_analyst",
    "show_draft_status",
    "show_drafts",
    "show_left_edit",
    "show_other_drafts",
    "strokes_fingerprint",
    "sync_draft",
]
