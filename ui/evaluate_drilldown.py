"""The Evaluate page's confusion browser: where label A becomes prediction B.

The cell comes from a click in the confusion matrix or from the two class pickers. Another evaluation (checkpoint,
split, TTA, view, labels) moves the page's own pick, or a cell without pixels there, to the new largest confusion; an
analyst's pick that still has pixels stays (``seghz.drilldown.pick_cell``). The scenes with the most A→B pixels are
predicted (cached in memory), their windows ranked by A→B pixels, the top ones shown as thumbnails with a button that
opens the window on the Map page, and the windows picked can be sent to label review (listed on the Labels page).

The widgets keep their values in the browser across runs that do not draw them (``persist_state``): the page stops
before the drill-down while a TTA, split or checkpoint has no cached result, and the browser then drops their state;
drawn again without it, they showed their defaults (both pickers at the first class, e.g. Water → Water, no window
chosen) while the page showed the cell and windows it kept, and the next click sent the defaults back. Send acts on
the cell and windows drawn with the button (its callback's arguments), and refuses, saying why, when the click came
with other picker values or no window of that cell chosen. A diagonal cell (A → A: correct pixels) offers no send.

Each window sent records the checkpoint that made the confusion (id, name, class scheme), the evaluation's TTA and the
A → B cell with its scheme view (``seghz.drilldown.review_entry``). "Open the Labels page on the first sent window"
opens the Labels page on that window (scene, position and size: ``ui.labels.OPEN_WINDOW_KEY``), compared there with
the same checkpoint and TTA.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from seghz import drilldown
from seghz.data.io import read_image
from seghz.errors import SegHZError
from seghz.evaluate import label_for_checkpoint
from seghz.infer.engine import tta_views
from seghz.jobs import runner
from seghz.jobs.kinds import evaluation_jobs, submit_evaluation_job
from ui.common import analyst_name, predictor_for, screen_scheme
from ui.evaluate_jobs import BACKGROUND_PX_VIEWS, Selection, job_outcome, job_progress, time_estimate
from ui.evaluate_scores import View
from ui.labels import OPEN_SCENE_KEY, OPEN_WINDOW_KEY

SEND_FLASH = "eval_dd_send_flash"  # what the last click on Send did, shown once by the next run
KEEP = "page"  # persist_state of the drill-down's widgets: kept while the analyst stays on the page
SENT_KEY = "eval_dd_sent"  # the review-list entry of the first window the last Send sent (opened on the Labels page)


def _on_send(ws, shown: tuple, a_name: str, b_name: str, view: str, cid: str, tta: str, scene_names: dict,
             ck_name: str = "", ck_scheme: str = "") -> None:
    """Send's callback: add the chosen windows of the cell drawn with the button (``shown``, ``a_name`` → ``b_name``
    in scheme ``view``), with the checkpoint that made the confusion (``cid``, its name and class scheme) and the
    evaluation's TTA, to the review list. Runs before the page's next run, with the values the browser sent with
    the click: a cell in the pickers other than the one drawn, no chosen window of that cell, no analyst name or a
    diagonal cell send nothing, and the message says why. The first window sent (the top one chosen) is kept for
    "Open the Labels page on the first sent window" (:data:`SENT_KEY`)."""
    ss = st.session_state
    cell = f"{a_name} → {b_name}"
    picked_now = (ss.get("eval_dd_true"), ss.get("eval_dd_pred"))
    picked = drilldown.windows_to_send(shown, ss.get("eval_dd_send_sel"))
    sender = analyst_name()
    why = None
    if a_name == b_name:
        why = f"{cell} pixels are correct predictions, not errors to review"
    elif picked_now != (a_name, b_name):
        why = (f"the drill-down showed the windows of {cell}, but the class pickers said {picked_now[0]} → "
               f"{picked_now[1]} when Send was clicked; check the windows shown and send again")
    elif not picked:
        why = f"no window is chosen under “Windows to send to label review” ({cell})"
    elif not sender:
        why = "enter your analyst name in the sidebar: the Labels page shows who sent the windows"
    if why is not None:
        ss[SEND_FLASH] = ("warning", f"Nothing was sent: {why}.")
        return
    try:
        sent = drilldown.send_to_review(ws, picked, true_class=a_name, pred_class=b_name, scheme=view,
                                       checkpoint_id=cid, analyst=sender, tta=tta, checkpoint_name=ck_name,
                                       checkpoint_scheme=ck_scheme)
    except (ValueError, OSError) as e:
        ss[SEND_FLASH] = ("error", f"Could not add the windows to the label review: {e}")
        return
    sent_names = ", ".join(dict.fromkeys(scene_names.get(w.scene_id, w.scene_id) for w in picked))
    ss[SENT_KEY] = drilldown.review_entry(picked[0], true_class=a_name, pred_class=b_name, scheme=view,
                                          checkpoint_id=cid, checkpoint_name=ck_name, checkpoint_scheme=ck_scheme,
                                          tta=tta, analyst=sender)
    ss[SEND_FLASH] = ("success", (f"Sent {len(picked)} window(s) of {cell} to the label review: {sent.text()}. "
                                  f"On the Labels page they are listed under “Sent from Evaluate for review” "
                                  f"for {sent_names}."))


def _show(flash) -> None:
    if flash:
        getattr(st, flash[0])(flash[1])


CONFIRM_KEY = "eval_dd_confirmed"  # the (checkpoint, TTA, scenes) whose long prediction the analyst accepted here
DD_FLASH = "eval_dd_job_flash"


def _drilldown_jobs(sel: Selection, active_only: bool = False) -> list:
    """The drill-down's background predictions ("evaluate" jobs with ``purpose: drilldown``) of this checkpoint,
    split and TTA, newest first."""
    return [j for j in evaluation_jobs(sel.ws, "evaluate", active_only=active_only)
            if (j.config or {}).get("purpose") == "drilldown"
            and ((j.config or {}).get("checkpoint_id"), (j.config or {}).get("split"),
                 str((j.config or {}).get("tta") or "none")) == (sel.cid, sel.split, sel.tta)]


def _on_predict_background(sel: Selection, scene_ids: list[str]) -> None:
    """Submit the drill-down's prediction of ``scene_ids`` as a background "evaluate" job of those scenes (forced, so
    it predicts them even where their scores are cached): it keeps each prediction for the drill-down."""
    ss = st.session_state
    config = {"checkpoint_id": sel.cid, "split": sel.split, "tta": sel.tta, "force": True,
              "scene_ids": sorted(scene_ids), "purpose": "drilldown"}
    try:
        jid, new = submit_evaluation_job(sel.ws, "evaluate", config)
    except (SegHZError, ValueError, ImportError, OSError) as e:
        ss[DD_FLASH] = ("error", f"Could not start the background prediction: {e}")
        return
    ss[DD_FLASH] = ("success" if new else "info",
                    f"Background prediction job `{jid}` " + ("submitted" if new else "is already running")
                    + ": the drill-down shows its windows when it is done, and you can leave the page meanwhile.")


def _prediction_job_panel(sel: Selection, watching: bool) -> None:
    """Progress and Cancel of the drill-down's background prediction (run as a polling fragment); the whole page
    reruns when it ends, and the drill-down then finds the saved predictions."""
    runner.refresh_job_states(sel.ws)
    active_now = _drilldown_jobs(sel, active_only=True)
    if watching and not active_now:
        st.rerun()
    running_now = sel.ws.list_jobs(status="running") if any(j.status == "queued" for j in active_now) else []
    slot = st.empty()
    if not active_now:
        return
    with slot.container():
        for j in active_now:
            job_progress(sel.ws, j, "background prediction for the drill-down", f"eval_dd_cancel_{j.id}", running_now)


def _predict_scenes(sel: Selection, todo: list[str], by_scene: dict) -> bool:
    """Whether the drill-down may predict the scenes of ``todo`` now. Those with a prediction in memory or saved
    (e.g. by the background evaluation) cost nothing; when the others hold more than
    :data:`ui.evaluate_jobs.BACKGROUND_PX_VIEWS` pixels × TTA views, the analyst is asked first: predict now (the
    page waits, with a progress bar) or as a background job (the page stays usable)."""
    ss = st.session_state
    ws, cid, tta = sel.ws, sel.cid, sel.tta
    _show(ss.pop(DD_FLASH, None))
    active = _drilldown_jobs(sel, active_only=True)
    if active:
        st.fragment(_prediction_job_panel, run_every=2)(sel, True)
        return False
    missing = [sid for sid in todo if not drilldown.has_scene_prediction(ws, cid, sid, tta)]
    n_views = len(tta_views(tta))
    work = sum(by_scene[sid].height * by_scene[sid].width for sid in missing) * n_views
    sig = (cid, sel.split, tta, tuple(missing))
    if not missing or work <= BACKGROUND_PX_VIEWS or ss.get(CONFIRM_KEY) == sig:
        return True
    last = _drilldown_jobs(sel)
    if last and last[0].status in ("failed", "died", "cancelled"):
        job_outcome(last[0], "background prediction for the drill-down")
    st.warning(f"The drill-down needs {len(missing)} scene(s) predicted ({work / 1e6:.1f} Mpx × views: "
               f"{sum(by_scene[s].height * by_scene[s].width for s in missing) / 1e6:.2f} Mpx × {n_views} TTA "
               f"view{'s' if n_views > 1 else ''}{time_estimate(ws, work)}). Predicting here blocks the page until it "
               "ends; in the background it goes on if you leave the page.")
    b1, b2 = st.columns(2)
    b1.button("Predict in the background", type="primary", key="eval_dd_bg", on_click=_on_predict_background,
              args=(sel, missing))
    if b2.button("Predict now (the page waits)", key="eval_dd_now"):
        ss[CONFIRM_KEY] = sig
        return True
    return False


def drilldown_section(sel: Selection, v: View, event: Any, result: dict, data_version: str, labelled: list) -> bool:
    """The drill-down of the cell clicked in the confusion matrix (``event``) or picked; False when it stopped early
    (a cell without pixels, or the prediction failed: the page then stops after its other sections)."""
    ws, cid, split, tta, ck = sel.ws, sel.cid, sel.split, sel.tta, sel.ck
    view, vres, vscheme, names = v.view, v.vres, v.vscheme, v.names
    ss = st.session_state
    st.subheader("Drill-down: where does label A become prediction B?")
    flash = ss.pop(SEND_FLASH, None)  # shown by the send button, or where the section stops before it
    clicked = drilldown.cell_from_selection(event, len(names))
    if clicked is not None and (*clicked, view) != st.session_state.get("eval_dd_click"):
        st.session_state["eval_dd_click"] = (*clicked, view)
        st.session_state["eval_dd_true"], st.session_state["eval_dd_pred"] = names[clicked[0]], names[clicked[1]]
    cmv = np.asarray(vres["confusion"])
    # another evaluation (checkpoint, split, TTA, view, labels): the page's own pick, or a cell without pixels there,
    # moves to the new largest confusion; an analyst's pick that still has pixels stays
    dd_sig = (cid, split, tta, sel.scenes, view, result.get("data_version", data_version))
    dd_cur = (st.session_state.get("eval_dd_true"), st.session_state.get("eval_dd_pred"))
    a_name, b_name, dd_auto = drilldown.pick_cell(cmv, names, dd_cur, auto=st.session_state.get("eval_dd_auto"),
                                                  changed=dd_sig != st.session_state.get("eval_dd_sig"))
    if (a_name, b_name) != dd_cur:
        st.session_state["eval_dd_true"], st.session_state["eval_dd_pred"] = a_name, b_name
    st.session_state["eval_dd_auto"] = (a_name, b_name) if dd_auto else None
    st.session_state["eval_dd_sig"] = dd_sig
    d1, d2, d3, d4 = st.columns([2, 2, 1, 1])
    a_name = d1.selectbox("True class (A)", names, key="eval_dd_true", persist_state=KEEP)
    b_name = d2.selectbox("Predicted class (B)", names, key="eval_dd_pred", persist_state=KEEP)
    win = d3.selectbox("Window (px)", [128, 256, 512], index=1, key="eval_dd_window", persist_state=KEEP)
    max_scenes = d4.number_input("Scenes", 1, 50, 5, key="eval_dd_scenes", persist_state=KEEP,
                                 help="Scenes to search, most A→B pixels first.")
    a, b = names.index(a_name), names.index(b_name)
    hits = drilldown.scenes_with_cell(vres, a, b)
    st.caption(f"{int(cmv[a, b]):,} px labelled **{a_name}** are predicted **{b_name}**, in {len(hits)} scene(s).")
    if not hits:
        st.info("No pixels in this cell.")
        _show(flash)
        return False

    lut = drilldown.view_lut(ck.scheme, view) if v.native_ok and view != ck.scheme else None
    by_scene = {s.id: s for s in labelled}
    data = {}
    todo = [sid for sid, _n in hits[: int(max_scenes)] if sid in by_scene]
    if not _predict_scenes(sel, todo, by_scene):
        _show(flash)
        return False
    bar = None
    try:
        # scenes predicted already (in memory, or saved by the evaluation) first: they cost nothing
        missing = [sid for sid in todo if not drilldown.has_scene_prediction(ws, cid, sid, tta)]
        px = {sid: by_scene[sid].height * by_scene[sid].width for sid in missing}
        total, done, n_views = max(1, sum(px.values())), 0, len(tta_views(tta))
        predictor = predictor_for(ws, cid)[0]  # loaded once per checkpoint (ui.common), not per run
        if missing:
            bar = st.progress(0.0, text=f"predicting {len(missing)} scene(s) with this confusion…")
        for sid in todo:
            prog = None
            if sid in px:
                k = missing.index(sid) + 1
                s_ = by_scene[sid]
                head = (f"predicting scene {k} of {len(missing)}: {s_.name} ({s_.height}×{s_.width} px × {n_views} "
                        f"view{'s' if n_views > 1 else ''})")

                def prog(f, m="", d=done, n=px[sid], head=head):
                    bar.progress(min(1.0, (d + float(f) * n) / total), text=f"{head} · {100 * float(f):.0f} %")

                prog(0.0)
            pred = drilldown.scene_prediction(ws, cid, sid, tta, predictor, progress=prog)
            done += px.get(sid, 0)
            lbl = label_for_checkpoint(ws.effective_label(sid), by_scene[sid].scheme, ck.scheme)
            data[sid] = (pred, lbl)
    except (SegHZError, ValueError, KeyError, OSError, RuntimeError) as e:
        st.error(f"Drill-down failed: {e}")
        _show(flash)
        return False
    finally:
        if bar is not None:
            bar.empty()
    masks = {sid: drilldown.cell_mask(p_, l_, a, b, lut) for sid, (p_, l_) in data.items()}
    windows = drilldown.rank_windows(masks, int(win), limit=50)
    st.dataframe(
        [{"rank": i + 1, "scene": w.scene_id, "name": by_scene[w.scene_id].name, "rows": f"{w.bbox[0]}–{w.bbox[2] - 1}",
          "cols": f"{w.bbox[1]}–{w.bbox[3] - 1}", f"{a_name}→{b_name} (px)": w.count} for i, w in enumerate(windows)],
        hide_index=True, key="eval_dd_table",
    )
    n_thumbs = min(len(windows), 6) if vscheme is not None else 0
    images = {}
    for i, w in enumerate(windows[:n_thumbs]):
        if w.scene_id not in images:
            images[w.scene_id] = read_image(ws.scene_path(w.scene_id, "image"))
        pred, lbl = data[w.scene_id]
        panels = drilldown.cell_panels(*(drilldown.crop(x, w.bbox) for x in (images[w.scene_id], lbl, pred)), a, b,
                                       screen_scheme(vscheme), lut)
        st.image(drilldown.thumbnail(panels),
                 caption=f"#{i + 1} · {w.count:,} px · image | label | prediction | {a_name}→{b_name} in magenta (ringed "
                         "in dim magenta so thin edges show)")
        c_loc, c_btn = st.columns([4, 1])
        c_loc.caption("Open on map: " + drilldown.map_location(by_scene[w.scene_id], w.bbox))
        if c_btn.button("Open on map", key=f"eval_dd_map_{i}"):
            st.session_state["map_jump"] = drilldown.map_jump(w, checkpoint_id=cid, checkpoint_name=ck.name,
                                                              why=f"{a_name} predicted as {b_name} by {ck.name}",
                                                              tta=tta, cell=(a_name, b_name, view))
            st.switch_page("pages/1_Map.py")

    if a == b:  # correct pixels: nothing to review
        st.caption(f"Pixels labelled **{a_name}** and predicted **{b_name}** are correct, so there is nothing to send "
                   "for label review: pick a predicted class other than the true class to see an error.")
        _show(flash)
        return True
    keys = [w.key() for w in windows]
    send_label = {w.key(): f"#{i + 1} · {by_scene[w.scene_id].name} · rows {w.bbox[0]}–{w.bbox[2] - 1}, cols "
                           f"{w.bbox[1]}–{w.bbox[3] - 1} · {w.count:,} px" for i, w in enumerate(windows)}
    # The selection starts at this cell's windows that matter (seghz.drilldown.preselect_windows) and starts there
    # again whenever the cell or its windows change (another cell, split, checkpoint, TTA, view, window size, labels):
    # the widget's key alone would keep the previous cell's picks, or none when they are not windows of this cell.
    send_sig = (cid, split, tta, view, a_name, b_name, tuple((w.key(), w.count) for w in windows))
    if ss.get("eval_dd_send_sig") != send_sig or "eval_dd_send_sel" not in ss:
        cell_px = int(sum(int(m.sum()) for m in masks.values()))  # the cell's pixels in the scenes searched
        ss["eval_dd_send_sel"], ss["eval_dd_send_sig"] = drilldown.preselect_windows(windows, cell_px), send_sig
    chosen = st.multiselect(
        "Windows to send to label review", keys, key="eval_dd_send_sel", persist_state=KEEP,
        format_func=lambda k: send_label.get(k, k),
        help=f"Pre-selected: the top windows (at most {drilldown.PRESELECT_MAX}) that each hold at least "
             f"{100 * drilldown.PRESELECT_SHARE:.0f} % of this cell's {a_name}→{b_name} pixels in the scenes searched "
             "(the top window alone when none does); add any other window of the list.")
    sender = analyst_name()
    st.button("Send to label review", key="eval_dd_send", disabled=not chosen or not sender, on_click=_on_send,
              args=(ws, tuple(windows), a_name, b_name, view, cid, tta,
                    {sid: s.name for sid, s in by_scene.items() if sid in data}, ck.name, ck.scheme),
              help=f"Adds the windows chosen above, of {a_name} → {b_name}, to the review list of the Labels page.")
    _show(flash)
    sent = ss.get(SENT_KEY)
    if isinstance(sent, dict) and sent.get("scene_id") in by_scene:
        bb = sent["bbox"]
        if st.button("Open the Labels page on the first sent window", key="eval_dd_open_labels",
                     help=f"The Labels page on {by_scene[sent['scene_id']].name}, rows {bb[0]}–{bb[2] - 1}, cols "
                          f"{bb[1]}–{bb[3] - 1} ({sent['true']} → {sent['predicted']}), compared with "
                          f"{sent.get('checkpoint_name') or sent.get('checkpoint_id')}, the checkpoint that sent it."):
            ss.pop(SENT_KEY, None)
            ss[OPEN_SCENE_KEY] = sent["scene_id"]
            ss[OPEN_WINDOW_KEY] = sent  # the window itself, and what it was sent for
            st.switch_page("pages/3_Labels.py")
    if not sender:
        st.caption("Enter your analyst name in the sidebar to send windows: the Labels page shows who sent them.")
    return True
