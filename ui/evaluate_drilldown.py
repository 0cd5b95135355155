"""The Evaluate page's confusion browser: where label A becomes prediction B.

The cell comes from a click in the confusion matrix or from the two class pickers. Another evaluation (checkpoint,
split, TTA, view, labels) moves the page's own pick, or a cell without pixels there, to the new largest confusion; an
analyst's pick that still has pixels stays (``seghz.drilldown.pick_cell``). The scenes with the most A→B pixels are
predicted (cached in memory), their windows ranked by A→B pixels, the top ones shown as thumbnails with a button that
opens the window on the Map page, and the windows picked can be sent to label review (listed on the Labels page).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from seghz import drilldown
from seghz.data.io import read_image
from seghz.errors import SegHZError
from seghz.evaluate import label_for_checkpoint
from ui.common import analyst_name, predictor_for, screen_scheme
from ui.evaluate_jobs import Selection
from ui.evaluate_scores import View


def drilldown_section(sel: Selection, v: View, event: Any, result: dict, data_version: str, labelled: list) -> bool:
    """The drill-down of the cell clicked in the confusion matrix (``event``) or picked; False when it stopped early
    (a cell without pixels, or the prediction failed: the page then stops after its other sections)."""
    ws, cid, split, tta, ck = sel.ws, sel.cid, sel.split, sel.tta, sel.ck
    view, vres, vscheme, names = v.view, v.vres, v.vscheme, v.names
    ss = st.session_state
    st.subheader("Drill-down: where does label A become prediction B?")
    clicked = drilldown.cell_from_selection(event, len(names))
    if clicked is not None and (*clicked, view) != st.session_state.get("eval_dd_click"):
        st.session_state["eval_dd_click"] = (*clicked, view)
        st.session_state["eval_dd_true"], st.session_state["eval_dd_pred"] = names[clicked[0]], names[clicked[1]]
    cmv = np.asarray(vres["confusion"])
    # another evaluation (checkpoint, split, TTA, view, labels): the page's own pick, or a cell without pixels there,
    # moves to the new largest confusion; an analyst's pick that still has pixels stays
    dd_sig = (cid, split, tta, view, result.get("data_version", data_version))
    dd_cur = (st.session_state.get("eval_dd_true"), st.session_state.get("eval_dd_pred"))
    a_name, b_name, dd_auto = drilldown.pick_cell(cmv, names, dd_cur, auto=st.session_state.get("eval_dd_auto"),
                                                  changed=dd_sig != st.session_state.get("eval_dd_sig"))
    if (a_name, b_name) != dd_cur:
        st.session_state["eval_dd_true"], st.session_state["eval_dd_pred"] = a_name, b_name
    st.session_state["eval_dd_auto"] = (a_name, b_name) if dd_auto else None
    st.session_state["eval_dd_sig"] = dd_sig
    d1, d2, d3, d4 = st.columns([2, 2, 1, 1])
    a_name = d1.selectbox("True class (A)", names, key="eval_dd_true")
    b_name = d2.selectbox("Predicted class (B)", names, key="eval_dd_pred")
    win = d3.selectbox("Window (px)", [128, 256, 512], index=1, key="eval_dd_window")
    max_scenes = d4.number_input("Scenes", 1, 50, 5, key="eval_dd_scenes",
                                 help="Scenes to search, most A→B pixels first.")
    a, b = names.index(a_name), names.index(b_name)
    hits = drilldown.scenes_with_cell(vres, a, b)
    st.caption(f"{int(cmv[a, b]):,} px labelled **{a_name}** are predicted **{b_name}**, in {len(hits)} scene(s).")
    if not hits:
        st.info("No pixels in this cell.")
        return False

    lut = drilldown.view_lut(ck.scheme, view) if v.native_ok and view != ck.scheme else None
    by_scene = {s.id: s for s in labelled}
    data = {}
    try:
        predictor, _ = predictor_for(ws, cid)
        with st.spinner("predicting the scenes with this confusion (cached in memory)…"):
            for sid, _n in hits[: int(max_scenes)]:
                if sid not in by_scene:
                    continue
                pred = drilldown.scene_prediction(ws, cid, sid, tta, predictor)
                lbl = label_for_checkpoint(ws.effective_label(sid), by_scene[sid].scheme, ck.scheme)
                data[sid] = (pred, lbl)
    except (SegHZError, ValueError, KeyError, OSError, RuntimeError) as e:
        st.error(f"Drill-down failed: {e}")
        return False
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

    keys = [w.key() for w in windows]
    send_label = {w.key(): f"#{i + 1} · {by_scene[w.scene_id].name} · rows {w.bbox[0]}–{w.bbox[2] - 1}, cols "
                           f"{w.bbox[1]}–{w.bbox[3] - 1} · {w.count:,} px" for i, w in enumerate(windows)}
    # The selection starts at this cell's top windows (those with thumbnails) and starts there again whenever the cell
    # or its windows change (another cell, split, checkpoint, TTA, view, window size, labels): the widget's key alone
    # would keep the previous cell's picks, or none when they are not windows of this cell.
    send_sig = (cid, split, tta, view, a_name, b_name, tuple((w.key(), w.count) for w in windows))
    if ss.get("eval_dd_send_sig") != send_sig or "eval_dd_send_sel" not in ss:
        ss["eval_dd_send_sel"], ss["eval_dd_send_sig"] = keys[:n_thumbs], send_sig
    chosen = st.multiselect("Windows to send to label review", keys, key="eval_dd_send_sel",
                            format_func=lambda k: send_label.get(k, k))
    sender = analyst_name()
    if st.button("Send to label review", key="eval_dd_send", disabled=not chosen or not sender):
        picked = [w for w in windows if w.key() in chosen]
        n = drilldown.add_to_review_list(ws, picked, true_class=a_name, pred_class=b_name, scheme=view,
                                         checkpoint_id=cid, analyst=sender, tta=tta)
        sent_names = ", ".join(dict.fromkeys(by_scene[w.scene_id].name for w in picked))
        st.session_state["eval_dd_sent_scene"] = picked[0].scene_id
        st.success(f"Added {n} window(s) to the label review ({len(picked) - n} already there). On the Labels page they "
                   f"are listed under “Sent from Evaluate for review” for {sent_names}.")
    if st.session_state.get("eval_dd_sent_scene") in by_scene and st.button("Open the Labels page on the sent windows",
                                                                             key="eval_dd_open_labels"):
        st.session_state["lbl_open_scene"] = st.session_state.pop("eval_dd_sent_scene")
        st.switch_page("pages/3_Labels.py")
    if not sender:
        st.caption("Enter your analyst name in the sidebar to send windows: the Labels page shows who sent them.")
    return True
