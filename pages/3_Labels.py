"""Labels: compare a scene's label with the active model's prediction (or, for a window sent from Evaluate, with the
checkpoint it was sent for), review the model-ranked noise queue, and paint corrections with a class brush.

Every save is a sparse correction layer (``ws.save_label_edit``: the painted pixels and their class, with the
analyst, tool, checkpoint and reason: the active one, or the one whose prediction Accept took); original labels are
never modified. An edit keeps the version it started from; when someone saved in between, the save is merged if none
of its pixels were touched since, and refused otherwise (ConflictError) with the edit kept in this session so it can be re-applied onto the latest
version. Re-applying never takes over what was saved since: the edit's pixels that a version saved since its base changed
or confirmed keep that version's value (counted and named — version, analyst — and shown in cyan on the canvas), and
only an explicit "Overwrite these N pixel(s) with my edit" gives them the edit's class (its save's tool then says
``rebase-overwrite``). Pixels painted with the class they already hold are recorded as confirmed; such a confirmation
never reverts a change saved since. The page decides on a version saved meanwhile with the strokes the canvas holds
*now* (``ui.labels.current_strokes``), so a stroke painted just after someone saved joins the edit instead of
vanishing with the old canvas. A noise-queue verdict carries the identity of the queue its card was drawn from and is
refused when the queue was rebuilt since; Undo / Redo carry the version their button names and undo nothing when the
analyst's newest version is another one by then.

Noise queue (``seghz.review.queue``): the active checkpoint scores the scene's label, suspicious pixels are
grouped into ranked components, and each item can be accepted (model's prediction), relabelled, ignored or
confirmed with one click (tools ``queue-accept`` / ``queue-relabel`` / ``queue-ignore`` / ``queue-confirm``).
Judged items leave the queue and only come back when their label pixels change.

Unapplied strokes survive a visit to another page (``ui.labels``: kept in the session under their scene and window
and loaded back into the canvas, with their class and tool); Undo clears them first, then takes back saved edits.
Windows sent from Evaluate for review are counted per scene at the top, whichever scene is shown, and listed with
what they were sent for (the checkpoint that made the A → B confusion, its pixels, the evaluation's TTA). A sent
window opened in the canvas (or from Evaluate's "Open the Labels page on the first sent window", which lands on that
window) is compared with that checkpoint and TTA while it is registered and not archived; otherwise the page says that
its prediction is the active model's, which is not the one that made the confusion (``ui.labels.comparison_for``).
An edit that accepted a model's prediction records that model with the save. A retrain or head
refit started here shows its validation scores before/after on the same labels (a refit also its accuracy on the
existing labels) and the regression gate's verdict; it is promoted on the Train page.

Scene picker: it shows the scene the analyst picked (or opened) and nothing else. Its option texts never change
within a session (a draft is listed under it, not marked in it): Streamlit sends a select widget's value as the text of
its option, and a text that changed under the browser reset the picker to the first scene the run after (edits then
landed on a scene nobody looked at); a text that still changes (a scene's split) is caught by the picker's callback
(``ui.labels.restore_stale_choice``), as is the class picker's (another scene's scheme). "Save as new label version"
and "Save and confirm the rest of this window" write nothing when the picker, the scene shown, the strokes on the canvas
or the window shown are not those the button was for (a stale button clicked during a rerun). The Reason box belongs to
one scene and one save: a new, empty box after every save and every scene switch (``ui.labels.reason_key``).

Drafts (``ui.label_drafts`` on ``seghz.drafts``): whenever the unsaved edit of a scene changes (strokes on the canvas
included), it is also written to ``<workspace>/drafts/<analyst or anon>/<scene>.npz``, so a reload (F5), a new tab or a
server restart loses nothing: a scene with a draft that is not this tab's own shows a banner to restore or discard it.
Saving or discarding the edit deletes its draft; switching scenes keeps it and says so. A tab never overwrites a draft
it did not write or restore itself.

Noise queue freshness (the queue's cards and warnings are in ``ui.labels``): the queue is flagged out of date, with a
rebuild button, when label pixels changed since the version it was built on other than by its own verdicts, or when it
was built with another checkpoint than the active one. A card says what *Accept* writes: the model's class pixel by
pixel (with the breakdown when the component's pixels are predicted as several classes), next to "All as <majority
class>".

Canvas: streamlit-drawable-canvas 0.13.0 (a components-v2 rewrite that works with Streamlit 1.67). The
background is passed as encoded image bytes (a data: URL built by the package), not through Streamlit's
media file manager, so the ``image_to_url`` breakage of the old 0.9.x releases does not apply. The canvas
returns only what was painted (the background lives on a separate layer), so alpha > 0 = painted.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from seghz import candidate, drilldown, gate
from seghz.classes import IGNORE, get_scheme
from seghz.errors import ConflictError, SegHZError
from seghz.evaluate import label_for_checkpoint
from seghz.geo import vectors
from seghz.labels_edit import (
    CANVAS_MODE,
    agreement,
    blend_overlay,
    box_on_canvas,
    canvas_scale,
    clamp_window,
    colorize_status,
    count_painted,
    kept_by_version,
    offset_slider_max,
    offset_step,
    rebase_keeping_theirs,
    touched_mask,
    touched_since,
    unreviewed_in_window,
    window_options,
    zoom_window,
)
from seghz.review import queue as rq
from seghz.store import NotFoundError
from ui import label_drafts as dui
from ui import labels as lui
from ui import review_plan as rpui
from ui.candidates import show_gate_verdict, show_refit_accuracy, show_validation_comparison
from ui.common import (
    analyst_name,
    analyst_problem,
    canvas,
    page_header,
    predictor_for,
    progress_callback,
    scheme_legend_html,
    screen_scheme,
)
from ui.labels import QUEUE_PAGE, flash, show_flash

MAX_DISPLAY = 768  # canvas pixels on the longer side, at most
MIN_DISPLAY = 512  # small windows are enlarged to this on the canvas
PRED_CACHE = 4
TTA_CHOICES = ["none", "flip", "d4"]
TOOL_NAMES = {"brush": "brush", "eraser": "eraser (back to the saved label)", "rect": "rectangle", "polygon": "polygon fill",
              "fill": "fill region (click)", "accept": "accept prediction (rectangle)"}
TOOL_HELP = ("Brush / rectangle / polygon fill: paint the class (polygon: click the corners, close it on the first "
             "point or double-click). Eraser: give the pixels back their saved label. Fill region: click inside a region "
             "of one label value to fill all of it (4-connected, inside this window) with the class. Accept prediction: "
             "drag a rectangle; inside it the label takes the model's prediction (predict the window first).")
JOBS_SHOWN = 3

ws = page_header("Labels", "Review the model's prediction and its noise queue against the label, and paint corrections; "
                           "each save is a new label version (originals are never modified).")
ss = st.session_state
edits: dict = lui.scene_edits()  # scene id -> {"base_version", "mask", "painted", "gen"}
queues: dict = ss.setdefault("lbl_queues", {})  # scene id -> (file mtime, SceneQueue)


def reset_edit(scene_id: str) -> None:
    dui.drop_own_draft(edits.get(scene_id))  # saved or discarded: its draft goes with it
    edits[scene_id] = lui.new_edit(ws, scene_id, edits.get(scene_id, {}).get("gen", 0) + 1)
    lui.drop_drafts(ss, scene_id)  # a new canvas: the strokes kept for a return to the page are gone with the old one


def current_analyst(area: str) -> str | None:
    """The analyst's name, or None after flashing why it cannot be used."""
    name = analyst_name()
    problem = analyst_problem(name)
    if problem:
        flash("error", problem, area)
        return None
    return name


def commit_pending() -> int:
    """Apply the strokes left on the canvas in the last run (with the class they were painted with) to
    their scene's edit, and start a fresh canvas. Returns the number of label pixels the strokes touched (the
    unit of "unsaved edited pixels"; canvas pixels differ by the canvas scale), or -1 when the tool refused them
    (its message is already flashed). The strokes are those the canvas holds now (``ui.labels.current_strokes``: in a
    callback, or a run a new stroke triggered, ``lbl_strokes`` of the last run lacks the newest stroke)."""
    lui.current_strokes(ss, edits)
    last = ss.pop("lbl_strokes", None)
    if not last:
        return 0
    lui.drop_drafts(ss, last["scene_id"])  # applied (or stale): nothing left to restore
    edit = edits.get(last["scene_id"])
    n = count_painted(last["rgba"])
    if edit is None or edit["gen"] != last["gen"] or n == 0:
        return 0
    tool = last.get("tool", "brush")
    try:
        mask, painted, touched = lui.strokes_applied(ws, edit, last)
    except ValueError as e:
        flash("error", f"The {TOOL_NAMES.get(tool, tool)} strokes were not applied: {e}")
        return -1
    edit["mask"] = mask
    edit["painted"] = painted
    edit.setdefault("tools", set()).add(tool)
    if tool == "accept" and last.get("prediction_checkpoint"):  # the save records whose prediction was accepted
        edit["prediction_checkpoint"] = last["prediction_checkpoint"]
    edit["gen"] += 1
    return int(np.count_nonzero(touched))


def on_apply() -> None:
    n = commit_pending()
    if n < 0:  # refused: keep the tool's own message
        return
    scene_id = ss.get("lbl_scene")
    total = int(np.count_nonzero(lui.pending_pixels(ws, edits[scene_id]))) if n and scene_id in edits else 0
    flash("info", f"Applied the strokes to your edit: {n:,} label pixels; unsaved edited label pixels now {total:,}."
          if n else "Nothing painted on the canvas yet.")


def on_discard(scene_id: str) -> None:
    ss.pop("lbl_strokes", None)
    reset_edit(scene_id)
    ss.pop("lbl_conflict", None)
    flash("info", "Discarded your unsaved changes; showing the latest label version.")


def kept_text(kept: dict) -> str:
    """Who saved the pixels a re-apply kept: "v2 by 'Ann' (380 px), v3 by 'Bob' (undo of v1, 20 px)"."""
    return ", ".join(f"v{v} by '{who}' ({'' if what == 'saved' else what + ', '}{n:,} px)"
                     for v, who, what, n in kept["by"])


def on_rebase(scene_id: str) -> None:
    """Re-apply the edit onto the latest version, keeping what was saved since its base: the edit's pixels that a
    version saved since changed or confirmed keep that version's value (its own pixels there are dropped, counted,
    named and shown in cyan on the canvas; an explicit "Overwrite" is offered for those it gave another class)."""
    commit_pending()  # strokes on the canvas are part of the edit being re-applied (the canvas gets a new key)
    edit = edits[scene_id]
    latest = ws.latest_label_version(scene_id)
    base_v = edit["base_version"]
    if latest == base_v:
        flash("info", f"Your edit is already on the latest label version ({latest}); nothing to re-apply.")
        return
    touches = touched_since(ws, scene_id, base_v, latest)
    rb = rebase_keeping_theirs(lui.version_mask(ws, scene_id, base_v), edit["mask"], edit["painted"],
                               lui.version_mask(ws, scene_id, latest), touched_mask(touches, edit["mask"].shape))
    new = {**edit, "base_version": latest, "mask": rb.mask, "painted": rb.painted, "gen": edit["gen"] + 1}
    new.pop("rebase_kept", None)
    n_kept, n_carried = int(rb.kept.sum()), int(rb.carried.sum())
    n_agreed, n_over = int(rb.agreed.sum()), int(rb.overwritable.sum())
    if n_kept:
        new["rebase_kept"] = {"from": base_v, "onto": latest, "kept": rb.kept, "overwritable": rb.overwritable,
                              "values": rb.values, "n": n_kept, "n_over": n_over,
                              "by": [(t.version, t.analyst, t.what, n) for t, n in kept_by_version(touches, rb.kept)]}
    edits[scene_id] = new
    ss.pop("lbl_conflict", None)
    msg = f"Re-applied {n_carried:,} of your edited pixel(s) onto label version {latest}."
    if n_kept:
        msg += (f" **Kept {n_kept:,} pixel(s) as saved since version {base_v}** — {kept_text(new['rebase_kept'])} — "
                "instead of your edit there (shown in cyan on the canvas; see the notice above it)"
                + (f"; {n_kept - n_over:,} of them you had only confirmed (painted with the class they held)"
                   if n_kept > n_over else "") + ".")
    if n_agreed:
        msg += f" {n_agreed:,} pixel(s) of your edit already held your class in version {latest}."
    flash("warning" if n_kept else "info", msg + (" Check your edit, then save again." if n_carried else
                                                  " Nothing of your edit is left to save."))


def on_rebase_overwrite(scene_id: str, onto: int, n: int) -> None:
    """The explicit choice after a re-apply: give the ``n`` pixels it kept as saved since (and that the edit had given
    another class) the edit's class after all. Recorded with the save's tool as ``rebase-overwrite``."""
    commit_pending()  # strokes painted since the re-apply are applied first (and win over the old edit's pixels)
    edit = edits.get(scene_id) or {}
    kept = edit.get("rebase_kept")
    latest = ws.latest_label_version(scene_id)
    if not kept or kept["onto"] != onto or edit.get("base_version") != onto or kept["n_over"] != n:
        flash("warning", "Nothing overwritten: your edit changed since this button was drawn. Check the notice again.")
        return
    if latest != onto:
        flash("warning", f"Nothing overwritten: label version {latest} was saved since your re-apply onto version "
                         f"{onto}. Re-apply your edit on the latest version again first.")
        return
    px = kept["overwritable"] & ~edit["painted"]  # pixels painted since the re-apply keep their newer class
    edit["mask"][px] = kept["values"][px]
    edit["painted"] = edit["painted"] | px
    edit.setdefault("tools", set()).add("rebase-overwrite")
    edit.pop("rebase_kept", None)
    edit["gen"] += 1
    flash("warning", f"Your edit now overwrites {int(px.sum()):,} pixel(s) saved since version {kept['from']} "
                     f"({kept_text(kept)}). Nothing is written until you save; the save records them as your "
                     "corrections, with “rebase-overwrite” in its tool.")


def on_rebase_dismiss(scene_id: str) -> None:
    (edits.get(scene_id) or {}).pop("rebase_kept", None)


def start_save(scene_id: str, window: tuple[int, int, int, int] | None = None) -> tuple[str, dict, np.ndarray] | None:
    """The analyst, the scene's edit (canvas strokes applied) and the pixels it sets; None without an analyst name, or
    when the button was for another scene or window than the one shown (``ui.labels.action_problem``; the message is
    shown)."""
    problem = lui.action_problem(ws, scene_id, window)
    if problem:
        flash("error", f"Not saved: {problem}")
        return None
    name = current_analyst("edit")
    if name is None:
        return None
    commit_pending()
    edit = edits[scene_id]
    return name, edit, lui.pending_pixels(ws, edit)


def on_save(scene_id: str, checkpoint_id: str | None) -> None:
    started = start_save(scene_id)
    if started is None:
        return
    name, edit, px = started
    if not px.any():
        flash("warning", "Nothing to save: your edit does not paint any pixel.")
        return
    latest_before = ws.latest_label_version(scene_id)
    try:
        v = ws.save_label_edit(scene_id, edit["base_version"], name, "+".join(sorted(edit.get("tools") or {"brush"})),
                               pixels=px, values=edit["mask"],
                               checkpoint_id=edit.get("prediction_checkpoint") or checkpoint_id,
                               reason=lui.take_reason(scene_id), merge=True)
    except ConflictError as e:
        ss["lbl_conflict"] = {"scene_id": scene_id, "message": str(e)}
        flash("error", f"Not saved — someone saved this scene first and changed some of the same pixels. {e}. Your edit "
                       "is kept in this session: press “Re-apply my edit on the latest version”, check it, and save again.")
        return
    except (SegHZError, ValueError) as e:
        flash("error", f"Not saved: {e}")
        return
    merged = latest_before != edit["base_version"]
    reset_edit(scene_id)
    ss.pop("lbl_conflict", None)
    lui.clear_reason()  # used: the next save starts with an empty Reason
    flash("success", f"Saved label version {v} of '{scene_id}' as {name}"
          + (f" (merged on top of version {latest_before}, saved meanwhile; your pixels did not overlap)." if merged else "."))


def on_confirm_window(scene_id: str, window: tuple[int, int, int, int], checkpoint_id: str | None) -> None:
    """Save the edit in progress together with a confirmation of every other labelled pixel of the window shown that
    no one has corrected or confirmed yet: "I reviewed this window". Whole reviewed windows are what makes the
    label-noise matrix of the Train page honest (reviewing only the wrong labels over-states the noise)."""
    started = start_save(scene_id, window)
    if started is None:
        return
    name, edit, px = started
    conf = unreviewed_in_window(lui.version_status(ws, scene_id, edit["base_version"]), edit["mask"], window, px)
    if not (px.any() or conf.any()):
        flash("warning", "Nothing to confirm: every labelled pixel of this window is already corrected or confirmed.")
        return
    try:
        v = ws.save_label_edit(scene_id, edit["base_version"], name, "confirm-window",
                               pixels=px if px.any() else None, values=edit["mask"] if px.any() else None,
                               confirm=conf, checkpoint_id=edit.get("prediction_checkpoint") or checkpoint_id,
                               reason=lui.take_reason(scene_id), merge=True)
    except ConflictError as e:
        flash("error", f"Not saved — someone saved this scene first and changed some of the same pixels. {e}.")
        return
    except (SegHZError, ValueError) as e:
        flash("error", f"Not saved: {e}")
        return
    reset_edit(scene_id)
    lui.clear_reason()
    flash("success", f"Saved label version {v} of '{scene_id}' as {name}: {int(px.sum()):,} pixels corrected, "
                     f"{int(conf.sum()):,} confirmed in the {window[3]}×{window[2]} px window.")


def unapplied_strokes(scene_id: str) -> int:
    """Canvas pixels painted on the scene's current canvas and not applied to its edit yet (0 when none), as the canvas
    holds them now (``ui.labels.current_strokes``)."""
    last = lui.current_strokes(ss, edits)
    edit = edits.get(scene_id)
    if not last or edit is None or last["scene_id"] != scene_id or last["gen"] != edit["gen"]:
        return 0
    return count_painted(last["rgba"])


def clear_unapplied(scene_id: str) -> None:
    """Throw away the strokes on the canvas (a fresh canvas; the edit's applied pixels stay)."""
    ss.pop("lbl_strokes", None)
    lui.drop_drafts(ss, scene_id)
    edits[scene_id]["gen"] += 1


def on_undo_redo(scene_id: str, kind: str, expected: int | None = None, strokes_only: bool = False) -> None:
    """Undo / redo of the button drawn for version ``expected`` (``strokes_only``: the button that clears the unapplied
    strokes): the store refuses when the analyst's newest edit is another one by the time of the click."""
    n = unapplied_strokes(scene_id)
    if strokes_only and not n:
        flash("warning", "Nothing undone: the strokes this Undo was for are no longer on the canvas (applied or "
                         "cleared meanwhile); no saved label version was undone. Press Undo again to take back your "
                         "last saved edit.", "history")
        return
    if n and kind == "undo":  # the newest thing to undo is the work in progress, not a saved version
        clear_unapplied(scene_id)
        flash("info", f"Undo: cleared your unapplied strokes on the canvas ({n:,} canvas px); no saved label version "
                      "was undone. Press Undo again to take back your last saved edit.", "history")
        return
    if n:
        flash("warning", f"Not re-applied: you have unapplied strokes on the canvas ({n:,} canvas px). Apply them "
                         "(Shift+A) or clear them with Undo (Shift+Z) first.", "history")
        return
    name = current_analyst("history")
    if name is None:
        return
    try:
        v = (ws.undo_label_edit if kind == "undo" else ws.redo_label_edit)(scene_id, name, expected_version=expected)
    except ConflictError as e:  # the analyst's history changed since the button was drawn (another tab saved)
        now = getattr(e, "target_version", None)
        if not lui.pending_pixels(ws, edits[scene_id]).any():
            reset_edit(scene_id)  # show the version saved meanwhile now (a later switch to it would drop this message)
        flash("error", f"Nothing {'undone' if kind == 'undo' else 're-applied'}: the button was for your label version "
                       f"{expected}, but {kind} would now act on "
                       + (f"version {now}" if now is not None else "none of your versions")
                       + " (your label history changed since the button was drawn, e.g. a save from another tab). "
                       "Check the history below, then press again.", "history")
        return
    except (NotFoundError, SegHZError, ValueError) as e:
        flash("error", f"Could not {kind}: {e}", "history")
        return
    target = next((h.target_version for h in ws.label_history(scene_id) if h.version == v), None)
    if not lui.pending_pixels(ws, edits[scene_id]).any():
        reset_edit(scene_id)
    flash("success", f"{'Undid' if kind == 'undo' else 'Re-applied'} your label version {target} (recorded as version {v}).",
          "history")


def leave_scene(prev: str | None, new: str | None) -> None:
    """A scene switch: the strokes on the canvas are applied to their own scene's edit, and a pending edit of the scene
    left is kept (in this session and as a draft on the server) — which the page says, instead of nothing."""
    commit_pending()
    dui.note_left_edit(ws, prev, new)
    if prev != new:
        lui.clear_reason()  # a reason typed for the scene left is not carried over to the next one


def on_scene_change() -> None:
    if lui.restore_stale_choice(lui.SCENE_KEY):
        return  # the browser sent back the text an option had before: not a scene switch, the picker stays
    leave_scene(ss.get(lui.SHOWN_SCENE_KEY), ss.get("lbl_scene"))


def on_class_change() -> None:
    lui.restore_stale_choice("lbl_class")  # another scene's scheme names the classes otherwise: not a class change
    commit_pending()


def on_goto_scene(scene_id: str) -> None:
    """Show another scene (strokes on the canvas are applied to their own scene's edit first, as a scene switch does)."""
    prev = ss.get(lui.SHOWN_SCENE_KEY) or ss.get("lbl_scene")
    ss["lbl_scene"] = scene_id
    leave_scene(prev, scene_id)


def on_zoom(scene_id: str, bbox: tuple[int, int, int, int], height: int, width: int, review: dict | None = None) -> None:
    """Show a queue item's component, or a window sent from Evaluate (``review``: its review-list entry, kept with the
    focus so the page compares the window with the checkpoint it was sent for): set the window selectbox and offset
    sliders to frame its bbox."""
    commit_pending()
    size, row, col = zoom_window(bbox, height, width)
    ss[f"lbl_size_{scene_id}"] = size
    ss[f"lbl_row_{scene_id}"] = row
    ss[f"lbl_col_{scene_id}"] = col
    ss["lbl_sus_opacity"] = max(float(ss.get("lbl_sus_opacity", 0.0)), 0.5)
    ss[lui.FOCUS_KEY] = {"scene_id": scene_id, "bbox": tuple(int(v) for v in bbox),
                         **({"review": dict(review)} if review else {})}
    where = f"rows {bbox[0]}–{bbox[2] - 1}, columns {bbox[1]}–{bbox[3] - 1} ({size}×{size} px window)"
    if review:
        flash("info", f"Opened the window sent from Evaluate at {where}, outlined in magenta on the canvas: "
                      f"{drilldown.review_summary(review, lui.checkpoint_name(ws, review.get('checkpoint_id')))}.")
        return
    flash("info", f"Zoomed to the component at {where}: it is outlined in magenta on the canvas, with its suspicion "
                  "shown.")


def export_data(scene_id: str, version: int, suffix: str):
    def make() -> bytes:
        with tempfile.TemporaryDirectory(prefix="seghz-export-") as d:
            return ws.export_label(scene_id, Path(d) / f"label{suffix}", version).read_bytes()

    return make


# ---- noise queue


def scene_queue(scene_id: str) -> rq.SceneQueue | None:
    """The scene's cached queue (re-read when its file changed, e.g. rebuilt in another session)."""
    path = rq.review_dir(ws, scene_id) / "queue.npz"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        queues.pop(scene_id, None)
        return None
    cached = queues.get(scene_id)
    if cached is None or cached[0] != mtime:
        q = rq.load_queue(ws, scene_id)
        if q is None:
            return None
        queues[scene_id] = cached = (mtime, q)
    return cached[1]


def on_queue_action(scene_id: str, key: str, action: str, class_index: int | None = None, *,
                    drawn_from: str | None = None) -> None:
    """A verdict on a queue item; ``class_index`` for "relabel" (default: the card's "Relabel as" choice).
    ``drawn_from``: the identity of the queue the card was drawn from (``ui.labels.queue_identity``); a queue rebuilt
    since (a retrain's re-rank, another tab's Rebuild) refuses the verdict: its item with the same box may hold other
    pixels and another prediction than the card showed."""
    name = current_analyst("queue")
    if name is None:
        return
    commit_pending()  # strokes still on the canvas join the unsaved edit (a verdict gives the canvas a new key)
    q = scene_queue(scene_id)
    if q is not None and drawn_from is not None and lui.queue_identity(q) != drawn_from:
        built = q.created_at[:19].replace("T", " ")
        flash("warning", f"Nothing saved: the noise queue was rebuilt since this card was drawn (now built at {built} "
                         f"UTC with {lui.checkpoint_name(ws, q.checkpoint_id)} on label version {q.label_version}); "
                         "its items and the model's predictions may differ from what the card showed. Look at the "
                         "item again below, then give your verdict.", "queue")
        return
    it = q.item(key) if q is not None else None
    if it is None:
        flash("warning", "That queue item is gone (the queue was rebuilt); nothing saved.", "queue")
        return
    if action == "relabel" and class_index is None:
        class_index = ss.get(lui.relabel_key(scene_id, it))
    parts = rq.accept_breakdown(q, it, get_scheme(ws.get_scene(scene_id).scheme).names) if action == "accept" else []
    try:
        v = rq.apply_action(ws, q, it, action, name, class_index=class_index)
    except ConflictError as e:
        flash("error", f"Not saved: the label of this component changed since the queue was built ({e}). "
                       "Rebuild the queue.", "queue")
        return
    except (SegHZError, ValueError) as e:
        flash("error", f"Not saved: {e}", "queue")
        return
    if not lui.pending_pixels(ws, edits[scene_id]).any():
        reset_edit(scene_id)
    verb = {"accept": "Accepted the model's per-pixel prediction for", "relabel": "Relabelled",
            "ignore": "Marked as ignored", "confirm": "Confirmed the label of"}[action]
    what = (f": {rq.describe_breakdown(parts)}" if action == "accept" and parts else
            f" as {ws_class_name(scene_id, class_index)}" if action == "relabel" else "")
    flash("success", f"{verb} the {it.label_class} component at {it.location()} ({it.pixels} px{what}): label "
                     f"version {v}.", "queue")


def ws_class_name(scene_id: str, class_index: int | None) -> str:
    if class_index is None:
        return "?"
    if int(class_index) == IGNORE:
        return "ignore (255)"
    names = get_scheme(ws.get_scene(scene_id).scheme).names
    return names[int(class_index)] if 0 <= int(class_index) < len(names) else str(class_index)


def run_build(scene_id: str, checkpoint_id: str, tta: str, threshold: float, held_out: bool) -> bool:
    """Build (or rebuild) the scene's noise queue with a progress bar; False after showing why it failed."""
    bar = st.progress(0.0, text="scoring the scene…")
    try:
        predictor, _ = predictor_for(ws, checkpoint_id)
        rq.build_queue(ws, scene_id, predictor, checkpoint_id, tta=tta, threshold=float(threshold),
                       progress=progress_callback(bar), held_out=held_out)
    except (SegHZError, ValueError, OSError, RuntimeError) as e:
        st.error(f"Could not build the queue: {e}")
        return False
    finally:
        bar.empty()
    return True


def on_retrain(kind: str, checkpoint_id: str, name: str) -> None:
    from seghz.jobs.kinds import submit_retrain_job

    if kind == "train":
        config = {"parent_checkpoint_id": checkpoint_id, "epochs": int(ss.get("lbl_rt_epochs", 5)),
                  "name": f"{name} + corrections", "origin": "labels"}
    else:
        config = {"checkpoint_id": checkpoint_id, "name": f"{name} head refit", "origin": "labels"}
    what = "Full retrain" if kind == "train" else "Head refit"
    try:  # the same job queued or running already (a second click) is not submitted again
        jid, created = submit_retrain_job(ws, kind, config)
    except (ValueError, ImportError, OSError) as e:
        flash("error", f"Could not start the job: {e}", "retrain")
        return
    if not created:
        flash("info", f"The same {what.lower()} is already running (job `{jid}`): not submitted again; its "
                      "progress is below and on the Train page.", "retrain")
        return
    flash("success", f"{what} job `{jid}` submitted; it runs in the background (progress below and on the Train "
                     "page).", "retrain")


# ------------------------------------------------------------------------------------------------ scene
scenes = [s for s in ws.list_scenes() if s.label_path]
if not scenes:
    st.info("No labelled scenes in this workspace. Import image/label pairs with `python -m seghz import`.")
    st.stop()
name_problem = analyst_problem(analyst_name())
if name_problem and analyst_name():  # empty is explained where it matters; a bad name is flagged at once
    st.sidebar.error(name_problem)
rpui.review_plan_panel(ws, ws.active_checkpoint(), analyst_name())  # which scene next; its Open sets OPEN_SCENE_KEY
by_id = {s.id: s for s in scenes}
lui.restore_draft(ss, edits, by_id)  # back on the page with unapplied strokes: their scene, window, class, tool
lui.restore_scene(ss, by_id)  # back on the page: the scene it showed last (the picker's state was dropped)
try:
    review_list = drilldown.load_review_list(ws)  # read once per run (nothing writes it before the list below)
except SegHZError as e:  # a damaged file is shown, never overwritten (sending from Evaluate refuses too)
    st.warning(f"The windows sent from Evaluate for review cannot be listed: {e}. Repair or remove that file; "
               "nothing else on this page depends on it.")
    review_list = []
open_request = ss.pop(lui.OPEN_SCENE_KEY, None)  # another page's "open this scene on the Labels page"
open_window = ss.pop(lui.OPEN_WINDOW_KEY, None)  # ... on this window sent for review (Evaluate's drill-down)
if isinstance(open_window, dict) and open_window.get("scene_id") in by_id:
    open_request = open_window["scene_id"]
else:
    open_window = None
if open_request in by_id and open_request != ss.get("lbl_scene"):
    on_goto_scene(open_request)  # strokes left on the canvas are applied to their own scene's edit, not lost
if open_window is not None:  # the window itself, compared with the checkpoint it was sent for
    sent_scene = by_id[open_window["scene_id"]]
    try:
        on_zoom(sent_scene.id, tuple(int(v) for v in open_window["bbox"]), sent_scene.height, sent_scene.width,
                review=drilldown.find_review_entry(review_list, open_window) or open_window)
    except (KeyError, TypeError, ValueError) as e:  # a window outside the scene (re-imported since): the scene only
        flash("warning", f"Could not open the window sent from Evaluate ({e}); showing the whole scene.")
# option texts that never change with what happens on the page (no draft marker: module docstring)
sid = st.selectbox(
    "Scene", list(by_id), key=lui.SCENE_KEY, on_change=on_scene_change,
    format_func=lambda i: f"{by_id[i].name} — {by_id[i].split}, {by_id[i].width}×{by_id[i].height} px"
    + (", synthetic" if by_id[i].synthetic else ""),
)
lui.remember_choice(lui.SCENE_KEY, sid, by_id)
ss[lui.SHOWN_SCENE_KEY] = sid
drafted = dui.scenes_with_drafts(ws)
if drafted & set(by_id):
    st.caption("Unsaved drafts on the server: " + ", ".join(
        f"{by_id[i].name}" + (" (shown)" if i == sid else "") for i in by_id if i in drafted) + ".")
dui.show_left_edit(ws, sid, on_goto_scene)
scene = by_id[sid]
scheme = get_scheme(scene.scheme)
sent_counts = lui.pending_review_counts(review_list, by_id)
if sent_counts:  # windows sent from Evaluate wait in these scenes, whichever scene is shown
    with st.container(border=True, key="lbl_sent_summary"):
        total = sum(sent_counts.values())
        st.markdown(f"**{total} window(s) sent from Evaluate wait for review** in {len(sent_counts)} scene(s):")
        for other, n in sent_counts.items():
            c1, c2 = st.columns([4, 1])
            if other == sid:
                c1.markdown(f"**{by_id[other].name}** (shown): {n} window(s), listed under *Sent from Evaluate for "
                            "review* below the canvas.")
            else:
                c1.markdown(f"**{by_id[other].name}** ({by_id[other].split}): {n} window(s)")
                c2.button(f"Open {by_id[other].name}", key=f"lbl_sent_goto_{other}", on_click=on_goto_scene, args=(other,),
                          help="Show this scene; its windows are listed under “Sent from Evaluate for review”.")
dui.show_other_drafts(ws, sid, {i: s.name for i, s in by_id.items()}, on_goto_scene)
if sid not in edits or "painted" not in edits[sid]:
    edits[sid] = lui.new_edit(ws, sid)
edit = edits[sid]
latest = ws.latest_label_version(sid)
if latest != edit["base_version"] and unapplied_strokes(sid):  # what the canvas holds now, the newest stroke included
    gen_before = edit["gen"]
    commit_pending()  # strokes on the canvas join the edit: a version saved meanwhile must not make them vanish
    lui.carry_flash(sid, gen_before, edit["gen"])  # a message of this run's callback is still about this edit
n_changed = int(np.count_nonzero(lui.pending_pixels(ws, edit)))
if latest != edit["base_version"]:
    if n_changed == 0:
        dui.drop_own_draft(edit)
        lui.carry_flash(sid, edit["gen"], edit["gen"] + 1)  # a message flashed meanwhile survives the switch
        edits[sid] = edit = lui.new_edit(ws, sid, edit["gen"] + 1)
        st.info(f"Showing label version {latest} (saved since this page last showed the scene).")
    else:
        st.warning(
            f"Your unsaved edit ({n_changed} px) started from label version {edit['base_version']}, but version "
            f"{latest} has been saved since. Saving merges your edit on top of it when none of your pixels were changed "
            "since; otherwise the save is refused. You can also re-apply your pixels onto the latest version first "
            "(pixels someone changed or confirmed since keep what they saved; you are told how many), or discard them."
        )
        r1, r2, _ = st.columns([2, 2, 3])
        r1.button("Re-apply my edit on the latest version", key="lbl_rebase", on_click=on_rebase, args=(sid,))
        r2.button("Discard my edit", key="lbl_discard_conflict", on_click=on_discard, args=(sid,))
kept = edit.get("rebase_kept")
if kept is not None and kept["onto"] == edit["base_version"] == latest:  # the last re-apply kept pixels saved since
    with st.container(border=True, key="lbl_rebase_kept"):
        st.warning(f"Your re-applied edit leaves **{kept['n']:,} pixel(s) as saved since version {kept['from']}** "
                   f"({kept_text(kept)}), shown in cyan on the canvas: your edit there was dropped. Saving writes "
                   "the rest of your edit only.")
        k1, k2, _ = st.columns([3, 2, 2])
        if kept["n_over"]:
            k1.button(f"Overwrite these {kept['n_over']:,} pixel(s) with my edit", key="lbl_rebase_overwrite",
                      on_click=on_rebase_overwrite, args=(sid, kept["onto"], kept["n_over"]),
                      help="Give them the class your edit gave them after all (the pixels you had only confirmed stay "
                           "as saved). Nothing is written until you save; the save's tool then says "
                           "“rebase-overwrite”.")
        k2.button("Hide this notice", key="lbl_rebase_kept_hide", on_click=on_rebase_dismiss, args=(sid,))
base_version = edit["base_version"]
dui.show_drafts(ws, sid, latest, n_changed)
edit = edits[sid]  # a restore (callback) may have replaced it before this run

# ------------------------------------------------------------------------------------------------ window
sizes = window_options(scene.height, scene.width)
w1, w2, w3 = st.columns([1, 2, 2])
# "Open in the canvas" (on_zoom) sets these widgets through session state: they take their value from there only
# (a default argument as well made Streamlit log "created with a default value but also had its value set via
# the Session State API"), the defaults being put into session state first. Back on the page (or the scene): the
# window it showed last for the scene (Streamlit dropped the widgets' state meanwhile)
lui.restore_window(ss, sid, sizes, scene.height, scene.width)
ss.setdefault(f"lbl_size_{sid}", sizes[-1])
size = w1.selectbox("Window (px)", sizes, key=f"lbl_size_{sid}", on_change=commit_pending,
                    help="Part of the scene shown and painted at once (at most 1024×1024).")
row = col = 0
if scene.height > size:
    ext = scene.height - size
    ss.setdefault(f"lbl_row_{sid}", 0)
    row = w2.slider("Row offset", 0, offset_slider_max(ext), step=offset_step(ext), key=f"lbl_row_{sid}",
                    on_change=commit_pending)
if scene.width > size:
    ext = scene.width - size
    ss.setdefault(f"lbl_col_{sid}", 0)
    col = w3.slider("Column offset", 0, offset_slider_max(ext), step=offset_step(ext), key=f"lbl_col_{sid}",
                    on_change=commit_pending)
win = clamp_window(scene.height, scene.width, row, col, size)
lui.keep_window(ss, sid, size, row, col)  # for a return to the page (a plain key: kept when another page runs)
r0, c0, wh, ww = win
img_path = ws.scene_path(scene, "image")
img_mtime = img_path.stat().st_mtime
img = lui.load_window(str(img_path), img_mtime, win)
lbl_win = edit["mask"][r0 : r0 + wh, c0 : c0 + ww]
st.caption(f"Window rows {r0}–{r0 + wh - 1}, columns {c0}–{c0 + ww - 1} of {scene.width}×{scene.height} px · "
           f"editing from label version {base_version} · unsaved edited label pixels: {n_changed:,}")

# ------------------------------------------------------------------------------------------------ views
active = ws.active_checkpoint()
queue = scene_queue(sid)
preds: dict = ss.setdefault("lbl_preds", {})
try:
    ck_scheme = get_scheme(active.scheme) if active else scheme
except KeyError:
    ck_scheme = scheme
# the model compared with the label: the active one, or, for a window sent from Evaluate opened in the canvas, the
# checkpoint that made the confusion (with the evaluation's TTA) while it is registered and not archived
cmp = lui.comparison_for(ws, lui.review_in_view(ss.get(lui.FOCUS_KEY), sid, win), active)
model = cmp.checkpoint
try:
    model_scheme = get_scheme(model.scheme) if model else scheme
except KeyError:
    model_scheme = scheme
pred_key = cmp.cache_key(sid, win)
dscheme, dck = screen_scheme(scheme), screen_scheme(model_scheme)  # the session's screen colours (files keep the study's)
v1, v2, v3 = st.columns(3)
v1.image(img, caption="image", width="stretch")
v2.image(dscheme.colorize(lbl_win), caption=f"label (version {base_version}" + (" + your edit)" if n_changed else ")"),
         width="stretch")
pred = None
with v3:
    notice = lui.comparison_notice(cmp, active, lui.sent_in_window(review_list, sid, win))
    if notice is not None:
        getattr(st, notice[0])(notice[1])
    who = (f"{model.name} (TTA {drilldown.tta_text(cmp.tta)}, the checkpoint this window was sent for)"
           if cmp.sent_model else f"the active model {model.name}" if model is not None else "")
    if model is None:
        st.info("No active checkpoint: nothing to predict with.")
    else:
        if st.button("Predict this window", key="lbl_predict",
                     help=f"Run {who} on the window shown" + (" (its whole-scene prediction, as the Evaluate "
                                                              "drill-down made it)." if cmp.sent_model else ".")):
            bar = st.progress(0.0, text="predicting…")
            try:
                predictor, meta = predictor_for(ws, model.id)
                if cmp.sent_model:  # the pixels the drill-down counted: the scene predicted whole, with its TTA
                    p = drilldown.scene_prediction(ws, model.id, sid, cmp.tta, predictor)[r0 : r0 + wh, c0 : c0 + ww]
                else:
                    p, _ = predictor.predict(img, "none", progress=progress_callback(bar))
                preds[pred_key] = p
                while len(preds) > PRED_CACHE:
                    preds.pop(next(iter(preds)))
            except (SegHZError, ValueError, OSError, RuntimeError) as e:
                st.error(f"Prediction failed: {e}")
            finally:
                bar.empty()
        pred = preds.get(pred_key)
        if pred is None and cmp.sent_model:  # predicted by the Evaluate drill-down a moment ago (kept in memory)
            whole = drilldown.cached_scene_prediction(ws, model.id, sid, cmp.tta)
            if whole is not None and whole.shape == edit["mask"].shape:
                pred = whole[r0 : r0 + wh, c0 : c0 + ww]
        if (pred is None and not cmp.sent_model and queue is not None and queue.checkpoint_id == model.id
                and queue.shape == edit["mask"].shape):  # (a sent window: the drill-down's prediction, not the queue's)
            pred = queue.predicted[r0 : r0 + wh, c0 : c0 + ww]
        if pred is None:
            st.caption(f"Prediction of {'' if cmp.sent_model else 'the active model '}**{model.name}**: press the "
                       "button (computed on demand)" + ("." if cmp.sent_model else ", or build the noise queue below."))
        else:
            st.image(dck.colorize(pred), caption=f"prediction ({who})", width="stretch")
            if model_scheme.name == scheme.name:
                agree = agreement(pred, lbl_win)
                if agree is not None:
                    st.caption(("The active model, not the one that made the confusion, agrees" if cmp.problem else
                                "Agrees") + f" with the label on {100 * agree:.1f} % of labelled pixels.")
            else:
                st.caption(f"The model predicts {model_scheme.name} classes; the label is {scheme.name}.")
                st.markdown(scheme_legend_html(model_scheme), unsafe_allow_html=True)
            if cmp.entry is not None:
                try:
                    n_cell = drilldown.review_cell_pixels(
                        pred, label_for_checkpoint(lbl_win, scene.scheme, model.scheme), model.scheme, cmp.entry)
                except (SegHZError, KeyError, ValueError) as e:
                    st.caption(f"Cannot count the sent cell's pixels with {model.name}: {e}")
                else:
                    st.caption(f"{model.name if cmp.sent_model else 'The active model'} predicts "
                               f"**{cmp.entry.get('predicted')}** where the label shown says **{cmp.entry.get('true')}**"
                               f" on {n_cell:,} px of this window (sent for {int(cmp.entry.get('count', 0)):,} px).")
st.markdown(scheme_legend_html(scheme), unsafe_allow_html=True)

# ------------------------------------------------------------------------------------------------ overlays
st.markdown("**Canvas overlays**")
o1, o2, o3, o4 = st.columns(4)
opacity = o1.slider("Label", 0.0, 1.0, 0.35, 0.05, key="lbl_opacity", help="Opacity of the label on the canvas.")
pred_opacity = o2.slider("Prediction", 0.0, 1.0, 0.0, 0.05, key="lbl_pred_opacity", disabled=pred is None,
                         help="Opacity of the model's prediction (predict the window or build the queue first).")
have_score = queue is not None and queue.shape == edit["mask"].shape
ss.setdefault("lbl_sus_opacity", 0.0)  # set by "Open in the canvas" too: no default argument (see the window above)
sus_opacity = o3.slider("Suspicion", 0.0, 1.0, step=0.05, key="lbl_sus_opacity", disabled=not have_score,
                        help="Opacity of the noise-queue suspicion score (yellow → red; build the queue first).")
show_status = o4.toggle("Pixel status", key="lbl_status", help="Colour the saved label's pixels by status: corrected "
                        "(orange), confirmed (green), ignored (grey); original pixels are left as they are.")
bg = blend_overlay(img, dscheme.colorize(lbl_win), opacity, mask=lbl_win != IGNORE)
if pred is not None and pred_opacity > 0:
    bg = blend_overlay(bg, dck.colorize(pred), pred_opacity)
if have_score and sus_opacity > 0:
    rgb, m = rq.score_rgb(queue.score[r0 : r0 + wh, c0 : c0 + ww])
    bg = blend_overlay(bg, rgb, sus_opacity, mask=m)
kept = edit.get("rebase_kept")
if kept is not None and kept["onto"] == base_version and kept["kept"].shape == edit["mask"].shape:
    m = kept["kept"][r0 : r0 + wh, c0 : c0 + ww]  # pixels a re-apply kept as saved by someone else: in cyan
    if m.any():
        bg = blend_overlay(bg, np.broadcast_to(np.array([0, 255, 255], np.uint8), (*m.shape, 3)), 0.7, mask=m)
if show_status:
    rgb, m = colorize_status(lui.version_status(ws, sid, base_version)[r0 : r0 + wh, c0 : c0 + ww])
    bg = blend_overlay(bg, rgb, 0.65, mask=m)
    st.caption(f"Status of label version {base_version}: orange = corrected, green = confirmed, grey = ignored.")

# ------------------------------------------------------------------------------------------------ brush
st.subheader("Paint a correction")
options = list(range(scheme.num_classes)) + [IGNORE]
b1, b2, b3 = st.columns([2, 1, 1])
class_index = b1.selectbox(
    "Class to paint", options, key="lbl_class", on_change=on_class_change,
    format_func=lambda i: "ignore / unlabelled (255)" if i == IGNORE else f"{i}: {scheme.names[i]}",
    help="Strokes already on the canvas keep the class they were painted with when you switch.",
)
lui.remember_choice("lbl_class", class_index, options)
tool = b2.radio("Tool", list(TOOL_NAMES), key="lbl_tool", format_func=TOOL_NAMES.get, on_change=commit_pending,
                help=TOOL_HELP)
stroke = b3.slider("Brush width (canvas px)", 1, 80, 16, key="lbl_width",
                   disabled=tool not in ("brush", "eraser"), help="Width of the brush and eraser strokes.")
sw = dscheme.colors[class_index] if class_index != IGNORE else (0, 0, 0)
b1.markdown(f"<span style='display:inline-block;width:1.6em;height:1em;vertical-align:middle;border:1px solid #555;"
            f"background:rgb{tuple(sw)}'></span> painting "
            f"**{'ignore (255)' if class_index == IGNORE else scheme.names[class_index]}**", unsafe_allow_html=True)
pred_for_tool = pred if (pred is not None and model_scheme.name == scheme.name) else None
if tool == "accept" and pred_for_tool is None:
    st.warning("Accept prediction needs the model's prediction of this window in the label's scheme: press "
               "“Predict this window” above (or build the noise queue) first.")
mode = CANVAS_MODE[tool]

ch, cw, scale = canvas_scale(wh, ww, MAX_DISPLAY, MIN_DISPLAY)
rgb = (0, 0, 0) if class_index == IGNORE else dscheme.colors[class_index]
paint = f"rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, 0.8)"
if tool in ("eraser", "accept"):
    paint = "rgba(255, 255, 255, 0.55)"  # these tools do not write the picked class: neutral colour
bg_img = Image.fromarray(bg).resize((cw, ch), Image.NEAREST if scale >= 1 else Image.BILINEAR)
focus = ss.get(lui.FOCUS_KEY)
box = (box_on_canvas(focus["bbox"], win, scale) if focus and focus.get("scene_id") == sid and not focus.get("hidden")
       else None)
if box is not None:  # the item opened with "Open in the canvas" (a few pixels can be hard to find)
    from PIL import ImageDraw

    ImageDraw.Draw(bg_img).rectangle(box, outline=(255, 0, 255), width=2)
    fb = focus["bbox"]
    f1, f2 = st.columns([5, 1])
    what = "the window sent from Evaluate you opened" if focus.get("review") else "the queue item you opened"
    f1.caption(f"Magenta box: {what} (rows {fb[0]}–{fb[2] - 1}, columns {fb[1]}–{fb[3] - 1}).")
    f2.button("Hide the box", key="lbl_focus_hide", on_click=lui.hide_focus_box)
buf = io.BytesIO()
bg_img.save(buf, format="JPEG", quality=90)
canvas_key = f"lbl_canvas_{sid}_{r0}_{c0}_{wh}_{ww}_{edit['gen']}"
# unapplied strokes of an earlier visit to the page, loaded into the canvas of their window (the same drawing for as
# long as this canvas lives: a changed initial_drawing would make the canvas reload it)
draft = lui.restored_for(ss, sid, win, edit["gen"])
result = canvas(
    fill_color=paint, stroke_width=stroke if mode == "freedraw" else 2, stroke_color=paint,
    background_image=buf.getvalue(), point_display_radius=4,
    update_streamlit=True, height=ch, width=cw, drawing_mode=mode, return_image_data=True, key=canvas_key,
    **({"initial_drawing": draft["drawing"]} if draft is not None and draft["drawing"] else {}),
)
rgba = getattr(result, "image_data", None) if result is not None else None
drawing = getattr(result, "json_data", None) if result is not None else None
rgba = lui.canvas_strokes(rgba, drawing, tool, win, (ch, cw))  # rectangles, polygons: the shapes, not their outline
if rgba is None and draft is not None:  # the restored canvas shows the strokes but sends nothing until drawn on
    rgba, drawing = draft["rgba"], draft["drawing"]
n_painted = count_painted(rgba)
stroke_ctx = {"scene_id": sid, "window": win, "class_index": int(class_index), "gen": edit["gen"],
              "num_classes": scheme.num_classes, "tool": tool, "prediction": pred_for_tool,
              "prediction_checkpoint": model.id if pred_for_tool is not None and model is not None else None}
ss[lui.CANVAS_CTX_KEY] = {**stroke_ctx, "key": canvas_key, "canvas": (ch, cw)}  # read back before the next run decides (current_strokes)
if n_painted:
    ss["lbl_strokes"] = {**stroke_ctx, "rgba": np.asarray(rgba)}
    lui.keep_draft(ss, sid, win, gen=edit["gen"], drawing=drawing, rgba=np.asarray(rgba), class_index=int(class_index),
                   tool=tool, size=size, row=row, col=col)  # for a return to the page
else:
    ss.pop("lbl_strokes", None)
    if rgba is not None:  # the canvas says it is empty (cleared with its own tools)
        lui.drop_drafts(ss, sid, win)
if draft is not None and n_painted:
    n_strokes = draft["strokes"]
    what = f"{n_strokes} unapplied stroke{'s' if n_strokes != 1 else ''}" if n_strokes else "Your unapplied strokes"
    st.info(f"{what} restored from your last visit to this page ({TOOL_NAMES.get(draft['tool'], draft['tool'])}, class "
            f"{'ignore (255)' if draft['class_index'] == IGNORE else scheme.names[draft['class_index']]}, this "
            "window): apply or save them, or press Undo to clear them.")
dui.show_draft_status(ws, sid, edit)  # the pending edit, strokes on the canvas included, kept on the server
st.caption(f"Canvas {cw}×{ch} px for a {ww}×{wh} px window (scale {scale:.2f}). Painted on the canvas, not yet "
           f"applied: {n_painted} canvas px. Strokes are applied with their class when you switch class or window, "
           "press Apply, or save; unapplied strokes are kept when you leave the page and restored when you come back "
           "(in this browser session). Undo clears unapplied strokes first, then takes back your saved edits. Pixels "
           "painted with the class they already have are saved as confirmed. "
           "Keys: Shift+A apply · Shift+S save · Shift+Z undo · Shift+Y redo.")

st.text_input("Reason (optional)", key=lui.reason_key(sid), placeholder="e.g. roof mislabelled as road",
              help="Recorded with your next save of this scene only: the box is emptied after each save and when you "
                   "switch scenes.")
# a row that wraps, each button as wide as its label (five equal columns cut "Save as new l…" at 1400 px)
actions = st.container(horizontal=True, key="lbl_edit_actions")
actions.button("Apply strokes", key="lbl_apply", on_click=on_apply, shortcut="Shift+A")
actions.button("Save as new label version", key="lbl_save", type="primary", on_click=on_save,
               args=(sid, active.id if active else None), shortcut="Shift+S")
actions.button("Discard unsaved changes", key="lbl_discard", on_click=on_discard, args=(sid,))
actions.button("Save and confirm the rest of this window", key="lbl_confirm_window", on_click=on_confirm_window,
               args=(sid, win, active.id if active else None),
               help="You reviewed this window: your edit is saved, and every other labelled pixel of the window that "
                    "no one has corrected or confirmed becomes confirmed (trusted). Whole reviewed windows give the "
                    "Train page an honest label-noise matrix.")
if not analyst_name():
    st.caption("Enter your analyst name in the sidebar to save.")
show_flash("edit")

# ------------------------------------------------------------------------------------------------ undo / export
st.subheader("Undo, redo and export")
undo_v = redo_v = None
if name_problem is None:
    try:
        undo_v, redo_v = ws.undo_redo_state(sid, analyst_name())
    except (SegHZError, ValueError):
        pass
u1, u2, u3, u4 = st.columns(4)
if n_painted:  # the first undo clears the strokes not applied yet; the next one takes back a saved version
    u1.button("Undo: clear the unapplied strokes", key="lbl_undo", on_click=on_undo_redo, args=(sid, "undo", None, True),
              shortcut="Shift+Z", help=f"Throw away the {n_painted:,} canvas px painted and not applied yet (nothing "
                                       "saved is undone). Press again to take back your last saved edit.")
else:
    u1.button("Undo my last edit" + (f" (v{undo_v})" if undo_v is not None else ""), key="lbl_undo",
              disabled=undo_v is None, on_click=on_undo_redo, args=(sid, "undo", undo_v), shortcut="Shift+Z",
              help="Take back your newest label version still in effect on this scene (recorded as a new version).")
u2.button("Redo" + (f" (v{redo_v})" if redo_v is not None else ""), key="lbl_redo", disabled=redo_v is None,
          on_click=on_undo_redo, args=(sid, "redo", redo_v), shortcut="Shift+Y", help="Re-apply the version you undid last.")
u3.download_button("Export label (PNG)", data=export_data(sid, latest, ".png"), file_name=f"{sid}_v{latest}.png",
                   mime="image/png", key="lbl_export_png", on_click="ignore",
                   help=f"Label version {latest} as a class-index PNG in scheme colours.")
u4.download_button("Export label (GeoTIFF)", data=export_data(sid, latest, ".tif"), file_name=f"{sid}_v{latest}.tif",
                   mime="image/tiff", key="lbl_export_tif", on_click="ignore",
                   help=f"Label version {latest} as a GeoTIFF with the scene's CRS and transform (nodata 255).")
v1, v2, _, _ = st.columns(4)
v1.download_button("Export corrections (GeoJSON)", data=lambda: vectors.to_bytes(vectors.corrections_geojson(ws, sid, latest)),
                   file_name=f"{sid}_v{latest}_corrections.geojson", mime="application/geo+json",
                   key="lbl_export_corrections", on_click="ignore",
                   help="Every pixel relabelled, ignored or confirmed in the layers in effect at version "
                        f"{latest}, as polygons with the action, the class and the original class, and the version, "
                        "analyst, time, tool and reason of the edit that last touched it (WGS84 on a "
                        "georeferenced scene, for QGIS; pixel coordinates otherwise).")
v2.download_button("Export label polygons (GeoJSON)", data=lambda: vectors.to_bytes(vectors.label_geojson(ws, sid, latest)),
                   file_name=f"{sid}_v{latest}_label.geojson", mime="application/geo+json",
                   key="lbl_export_label_geojson", on_click="ignore",
                   help=f"Label version {latest} as one polygon per connected patch of each class, following pixel "
                        "edges, with its class and area.")
if name_problem and not analyst_name():
    st.caption("Undo and redo act on your own edits: enter your analyst name in the sidebar.")
show_flash("history")

# ------------------------------------------------------------------------------------------------ from Evaluate
sent = drilldown.pending_reviews(ws, sid, review_list)
if sent:
    with st.expander(f"Sent from Evaluate for review ({len(sent)})", expanded=True):
        st.caption("Windows where a checkpoint confuses one class with another, sent from the Evaluate page's "
                   "drill-down with the checkpoint and TTA that made the confusion. Open one, fix or confirm the "
                   "label, then mark it reviewed.")
        for k, e in enumerate(sent[:QUEUE_PAGE]):
            bb = tuple(int(v) for v in e["bbox"])
            c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
            c1.markdown(lui.sent_item_markdown(ws, e))
            c2.button("Open in the canvas", key=f"lbl_sent_zoom_{k}", on_click=on_zoom,
                      args=(sid, bb, scene.height, scene.width, e),
                      help="Show this window on the canvas, compared with the checkpoint it was sent for.")
            if c3.button("Open on map", key=f"lbl_sent_map_{k}",
                         help="The Map page at this window, predicted by the checkpoint whose errors were sent (with "
                              "the evaluation's TTA), with exactly these A → B pixels marked."):
                ss["map_jump"] = drilldown.review_jump(e, checkpoint_name=lui.checkpoint_name(ws, e.get("checkpoint_id")))
                st.switch_page("pages/1_Map.py")
            if c4.button("Mark reviewed", key=f"lbl_sent_done_{k}"):
                drilldown.set_review_status(ws, e, "reviewed", analyst_name() or "")
                st.rerun()
        if len(sent) > QUEUE_PAGE:
            st.caption(f"… and {len(sent) - QUEUE_PAGE} more (largest first).")

# ------------------------------------------------------------------------------------------------ noise queue
st.subheader("Noise queue")
st.caption("The active model scores every labelled pixel of the scene (loss against the label, confident-learning "
           "margin, TTA vote); suspicious pixels are grouped into components ranked by score × area.")
q1, q2, q3 = st.columns([1, 1, 2])
tta = q1.selectbox("TTA", TTA_CHOICES, key="lbl_q_tta", help="Test-time augmentation views (more views: slower, "
                   "adds the disagreement signal).")
threshold = q2.slider("Suspicion threshold", 0.05, 0.95, 0.5, 0.05, key="lbl_q_threshold",
                      help="Pixels scoring at or above this join a queue item.")
held_out = q3.checkbox("Held-out scoring", value=scene.split == "train", key=f"lbl_q_heldout_{sid}",
                       help="Score this scene with the model's head refitted on the labels of the OTHER scenes only "
                            "(seconds to a minute). On by default for training scenes: a model trained on this scene's "
                            "labels learned part of their noise and no longer finds it suspicious; a held-out head "
                            "does (loop check: 86 % of the noise in the top 25 items instead of 13 %).")
if active is None:
    st.info("No active checkpoint: the queue needs a model.")
elif ck_scheme.name != scheme.name:
    st.info(f"The active model predicts {ck_scheme.name} classes but this scene is labelled in {scheme.name}; "
            "the queue needs a model of the scene's scheme.")
elif q3.button("Build queue", key="lbl_q_build", type="primary", help=f"Score the whole scene with {active.name}."):
    run_build(sid, active.id, tta, float(threshold), held_out)
    queue = scene_queue(sid)
if queue is not None:
    latest_mask = lui.version_mask(ws, sid, latest)
    pending = rq.pending_items(ws, queue, label=latest_mask) if queue.shape == latest_mask.shape else []
    stale = rq.queue_staleness(
        ws, queue, active_id=active.id if active else None, label=latest_mask, latest_version=latest,
        built_label=lui.version_mask(ws, sid, queue.label_version) if queue.label_version < latest else None)
    lui.show_queue_built(queue, stale, latest, len(pending))
    lui.show_queue_staleness(queue, stale, latest, active)
    if stale.stale and active is not None and ck_scheme.name == scheme.name:
        held = queue.scoring != "in-sample"
        if lui.rebuild_queue_button(queue, latest, active) and run_build(sid, active.id, queue.tta, queue.threshold, held):
            flash("success", f"Rebuilt the noise queue on label version {latest} with {active.name}.", "queue")
            st.rerun()
    show_flash("queue")
    lui.show_queue_items(ws, pending, queue=queue, scene=scene, scheme=scheme, dscheme=dscheme, latest_mask=latest_mask,
                         image=(str(img_path), img_mtime), on_action=on_queue_action, on_zoom=on_zoom)
else:
    show_flash("queue")
    if active is not None:
        st.caption("No queue built for this scene yet.")

# ------------------------------------------------------------------------------------------------ retrain
st.subheader("Retrain with corrections")


def show_labels_jobs(parent_ok: bool) -> None:
    from seghz.jobs.runner import refresh_job_states

    refresh_job_states(ws)
    jobs = [j for j in ws.list_jobs(limit=50) if (j.config or {}).get("origin") == "labels"][:JOBS_SHOWN]
    if not jobs:
        st.caption("No retraining jobs started from this page yet.")
        return
    for j in jobs:
        what = "full retrain" if j.kind == "train" else "head refit"
        st.markdown(f"`{j.id}` · {what} · **{j.status}** · {100 * (j.progress or 0):.0f} %")
        if j.active:
            st.progress(min(1.0, max(0.0, float(j.progress or 0))))
            continue
        res = j.result or {}
        if j.status != "done" or not res.get("checkpoint_id"):
            if j.message:
                st.caption(j.message.strip().splitlines()[-1][:300])
            continue
        parent_id = j.config.get("parent_checkpoint_id") or j.config.get("checkpoint_id") or res.get("parent_id")
        try:
            new = ws.get_checkpoint(res["checkpoint_id"])
            old = ws.get_checkpoint(parent_id) if parent_id else None
        except NotFoundError:
            st.caption("Its checkpoints are no longer registered.")
            continue
        if j.kind == "refit":
            show_refit_accuracy(res, new.metrics, key=f"lbl_rt_{j.id}")
        show_validation_comparison(ws, old, new, split=candidate.job_val_split(j), key=f"lbl_rt_table_{j.id}",
                                   labels=(f"before ({old.name})" if old else "before", f"after ({new.name})"))
        show_job_gate(j, new)


def show_job_gate(job, new) -> None:
    """The regression gate's verdict on a finished job's checkpoint (as the Train page computes it), and the way to
    its Promote / override on the Train page."""
    cur = ws.active_checkpoint()
    if cur is not None and cur.id == new.id:
        st.success(f"New checkpoint `{new.id}` is the active model.")
        return
    try:
        verdict = gate.check(ws, new.id, split=candidate.job_val_split(job))
    except (SegHZError, ValueError) as e:
        st.caption(f"Regression gate: could not check ({e}).")
    else:
        show_gate_verdict(verdict, cur, compact=True)  # the Train page's banner; its table and Promote are there
    c1, c2 = st.columns([3, 1])
    c1.caption(f"New checkpoint `{new.id}`: promote it on the Train page, where it is listed with the training jobs "
               "(regression gate; a flagged checkpoint needs an override with a reason).")
    if c2.button("Promote on the Train page", key=f"lbl_rt_promote_{job.id}",
                 help="Open the Train page on this job: the gate verdict, Promote and the override."):
        ss["train_show_job"] = job.id  # the Train page's job list opens on it
        st.switch_page("pages/4_Train.py")


if active is None:
    st.info("No active checkpoint to start from.")
else:
    t1, t2, t3 = st.columns([1, 2, 2])
    t1.number_input("Epochs", 1, 200, 5, key="lbl_rt_epochs", help="Epochs of the full retrain.")
    t2.button("Full retrain from the active checkpoint", key="lbl_rt_train", on_click=on_retrain,
              args=("train", active.id, active.name), help="Fine-tunes the active checkpoint on the effective labels "
              "of the train split (trusted pixels are never dropped by the noise mask).")
    t3.button("Fast head refit on the corrections", key="lbl_rt_refit", on_click=on_retrain,
              args=("refit", active.id, active.name), help="Refits only the classifier head on the reviewed "
              "(corrected or confirmed) pixels of the train split's scenes (seconds to minutes).")
    if scene.split != "train":  # the refit and the retrain train on the train split only (seghz.jobs.kinds.refit_job)
        st.caption(f"This scene is in the **{scene.split}** split: its corrections are not used by the refit or the "
                   "retrain — they are the yardstick the new model is scored on." if scene.split in ("val", "test")
                   else "This scene is in no split: its corrections are not used by the refit or the retrain, "
                   "which train on the train split only.")
    show_flash("retrain")
    watching = any(j.active and (j.config or {}).get("origin") == "labels" for j in ws.list_jobs(limit=50))

    @st.fragment(run_every=3 if watching else None)
    def jobs_fragment() -> None:
        show_labels_jobs(True)

    jobs_fragment()

# ------------------------------------------------------------------------------------------------ history
st.subheader("Label history")
hist = [{"version": 0, "kind": "original", "analyst": "", "time (UTC)": scene.created_at[:19].replace("T", " "),
         "tool": "original", "changed": 0, "confirmed": 0, "undone": False, "checkpoint": "—",
         "reason": "original label (never modified)"}]
hist += [{"version": h.version, "kind": h.kind if h.kind not in ("undo", "redo") else f"{h.kind} v{h.target_version}",
          "analyst": h.analyst, "time (UTC)": h.created_at[:19].replace("T", " "), "tool": h.tool,
          "changed": h.n_changed, "confirmed": h.n_confirmed, "undone": h.undone, "checkpoint": h.checkpoint_id or "—",
          "reason": h.reason or ""} for h in ws.label_history(sid)]
st.dataframe(pd.DataFrame(hist), hide_index=True, key="lbl_history")
