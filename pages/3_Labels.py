"""Labels: compare a scene's label with the active model's prediction and paint corrections with a class brush.

Every save is a new label version (``ws.save_label_version``); original labels are never modified. An edit
keeps the version it started from; if someone else saved in between, the save is refused (ConflictError)
and the edit stays in this session so it can be re-applied onto the latest version.

Canvas: streamlit-drawable-canvas 0.13.0 (a components-v2 rewrite that works with Streamlit 1.67). The
background is passed as encoded image bytes (a data: URL built by the package), not through Streamlit's
media file manager, so the ``image_to_url`` breakage of the old 0.9.x releases does not apply. The canvas
returns only what was painted (the background lives on a separate layer), so alpha > 0 = painted.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from seghz.classes import IGNORE, get_scheme
from seghz.data.io import read_image
from seghz.errors import ConflictError, SegHZError
from seghz.labels_edit import (
    agreement,
    apply_strokes,
    blend_overlay,
    canvas_scale,
    clamp_window,
    count_painted,
    offset_slider_max,
    offset_step,
    rebase_edit,
    window_options,
)
from ui.common import analyst_name, canvas, page_header, predictor_for, progress_callback, scheme_legend_html

MAX_DISPLAY = 768  # canvas pixels on the longer side, at most
MIN_DISPLAY = 512  # small windows are enlarged to this on the canvas
PRED_CACHE = 4

ws = page_header("Labels", "Review the model's prediction against the label and paint corrections; "
                           "each save is a new label version (originals are never modified).")
ss = st.session_state
edits: dict = ss.setdefault("lbl_edits", {})  # scene id -> {"base_version", "mask", "gen"}


@st.cache_data(max_entries=16, show_spinner=False)
def load_window(path: str, mtime: float, window: tuple[int, int, int, int]) -> np.ndarray:
    return read_image(path, window=window)


@st.cache_data(max_entries=8, show_spinner=False)
def version_mask(root: str, scene_id: str, version: int) -> np.ndarray:
    return ws.effective_label(scene_id, version)  # label versions never change once saved


def new_edit(scene_id: str) -> dict:
    v = ws.latest_label_version(scene_id)
    return {"base_version": v, "mask": version_mask(str(ws.root), scene_id, v).copy(), "gen": 0}


def flash(kind: str, message: str) -> None:
    ss["lbl_flash"] = (kind, message)


def commit_pending() -> int:
    """Apply the strokes left on the canvas in the last run (with the class they were painted with) to
    their scene's edit, and start a fresh canvas. Returns the number of painted canvas pixels applied."""
    last = ss.pop("lbl_strokes", None)
    if not last:
        return 0
    edit = edits.get(last["scene_id"])
    n = count_painted(last["rgba"])
    if edit is None or edit["gen"] != last["gen"] or n == 0:
        return 0
    edit["mask"] = apply_strokes(edit["mask"], last["rgba"], last["class_index"], last["window"],
                                 num_classes=last["num_classes"])
    edit["gen"] += 1
    return n


def on_apply() -> None:
    n = commit_pending()
    flash("info", f"Applied the strokes ({n} canvas px) to your edit." if n else "Nothing painted on the canvas yet.")


def on_discard(scene_id: str) -> None:
    ss.pop("lbl_strokes", None)
    gen = edits.get(scene_id, {}).get("gen", 0)
    edits[scene_id] = new_edit(scene_id)
    edits[scene_id]["gen"] = gen + 1
    ss.pop("lbl_conflict", None)
    flash("info", "Discarded your unsaved changes; showing the latest label version.")


def on_rebase(scene_id: str) -> None:
    edit = edits[scene_id]
    latest = ws.latest_label_version(scene_id)
    base = version_mask(str(ws.root), scene_id, edit["base_version"])
    new, n = rebase_edit(base, edit["mask"], version_mask(str(ws.root), scene_id, latest))
    edits[scene_id] = {"base_version": latest, "mask": new, "gen": edit["gen"] + 1}
    ss.pop("lbl_conflict", None)
    flash("info", f"Re-applied your {n} changed pixel(s) onto label version {latest}. Check them, then save again.")


def on_save(scene_id: str, checkpoint_id: str | None) -> None:
    name = analyst_name()
    if not name:
        flash("error", "Enter your analyst name in the sidebar before saving; every label version records who made it.")
        return
    commit_pending()
    edit = edits[scene_id]
    base = version_mask(str(ws.root), scene_id, edit["base_version"])
    if np.array_equal(base, edit["mask"]):
        flash("warning", "Nothing to save: your edit does not change any pixel.")
        return
    try:
        v = ws.save_label_version(scene_id, edit["mask"], base_version=edit["base_version"], analyst=name, tool="brush",
                                  checkpoint_id=checkpoint_id, reason=(ss.get("lbl_reason") or "").strip() or None)
    except ConflictError as e:
        ss["lbl_conflict"] = {"scene_id": scene_id, "message": str(e)}
        flash("error", f"Not saved — someone saved this scene first. {e}. Your edit is kept in this session: "
                       "press “Re-apply my edit on the latest version”, check it, and save again.")
        return
    except (SegHZError, ValueError) as e:
        flash("error", f"Not saved: {e}")
        return
    edit["base_version"] = v
    edit["gen"] += 1
    ss.pop("lbl_conflict", None)
    ss["lbl_reason"] = ""
    flash("success", f"Saved label version {v} of '{scene_id}' as {name}.")


# ------------------------------------------------------------------------------------------------ scene
scenes = [s for s in ws.list_scenes() if s.label_path]
if not scenes:
    st.info("No labelled scenes in this workspace. Import image/label pairs with `python -m seghz import`.")
    st.stop()
by_id = {s.id: s for s in scenes}
sid = st.selectbox(
    "Scene", list(by_id), key="lbl_scene", on_change=commit_pending,
    format_func=lambda i: f"{by_id[i].name} — {by_id[i].split}, {by_id[i].width}×{by_id[i].height} px"
    + (", synthetic" if by_id[i].synthetic else ""),
)
scene = by_id[sid]
scheme = get_scheme(scene.scheme)
if sid not in edits:
    edits[sid] = new_edit(sid)
edit = edits[sid]
base_mask = version_mask(str(ws.root), sid, edit["base_version"])
n_changed = int(np.count_nonzero(base_mask != edit["mask"]))
latest = ws.latest_label_version(sid)
if latest != edit["base_version"]:
    if n_changed == 0:
        edits[sid] = edit = {**new_edit(sid), "gen": edit["gen"] + 1}
        base_mask = version_mask(str(ws.root), sid, edit["base_version"])
        st.info(f"Label version {latest} was saved meanwhile; showing it.")
    else:
        st.warning(
            f"Your unsaved edit ({n_changed} px) started from label version {edit['base_version']}, but version "
            f"{latest} has been saved since. Saving now would be refused. Re-apply your changed pixels onto the "
            "latest version, or discard them."
        )
        r1, r2, _ = st.columns([2, 2, 3])
        r1.button("Re-apply my edit on the latest version", key="lbl_rebase", on_click=on_rebase, args=(sid,))
        r2.button("Discard my edit", key="lbl_discard_conflict", on_click=on_discard, args=(sid,))

# ------------------------------------------------------------------------------------------------ window
sizes = window_options(scene.height, scene.width)
w1, w2, w3 = st.columns([1, 2, 2])
size = w1.selectbox("Window (px)", sizes, index=len(sizes) - 1, key=f"lbl_size_{sid}", on_change=commit_pending,
                    help="Part of the scene shown and painted at once (at most 1024×1024).")
row = col = 0
if scene.height > size:
    ext = scene.height - size
    row = w2.slider("Row offset", 0, offset_slider_max(ext), 0, step=offset_step(ext), key=f"lbl_row_{sid}",
                    on_change=commit_pending)
if scene.width > size:
    ext = scene.width - size
    col = w3.slider("Column offset", 0, offset_slider_max(ext), 0, step=offset_step(ext), key=f"lbl_col_{sid}",
                    on_change=commit_pending)
win = clamp_window(scene.height, scene.width, row, col, size)
r0, c0, wh, ww = win
img_path = ws.scene_path(scene, "image")
img = load_window(str(img_path), img_path.stat().st_mtime, win)
lbl_win = edit["mask"][r0 : r0 + wh, c0 : c0 + ww]
st.caption(f"Window rows {r0}–{r0 + wh - 1}, columns {c0}–{c0 + ww - 1} of {scene.width}×{scene.height} px · "
           f"editing from label version {edit['base_version']} · unsaved changed pixels: {n_changed}")

# ------------------------------------------------------------------------------------------------ views
active = ws.active_checkpoint()
preds: dict = ss.setdefault("lbl_preds", {})
pred_key = f"{sid}|{win}|{active.id if active else ''}"
v1, v2, v3 = st.columns(3)
v1.image(img, caption="image", width="stretch")
v2.image(scheme.colorize(lbl_win), caption=f"label (version {edit['base_version']}" + (" + your edit)" if n_changed else ")"),
         width="stretch")
with v3:
    if active is None:
        st.info("No active checkpoint: nothing to predict with.")
    else:
        if st.button("Predict this window", key="lbl_predict", help=f"Run {active.name} on the window shown."):
            bar = st.progress(0.0, text="predicting…")
            try:
                predictor, meta = predictor_for(ws, active.id)
                pred, _ = predictor.predict(img, "none", progress=progress_callback(bar))
                preds[pred_key] = pred
                while len(preds) > PRED_CACHE:
                    preds.pop(next(iter(preds)))
            except (SegHZError, ValueError, OSError, RuntimeError) as e:
                st.error(f"Prediction failed: {e}")
            finally:
                bar.empty()
        pred = preds.get(pred_key)
        if pred is None:
            st.caption(f"Prediction of the active model **{active.name}**: press the button (computed on demand).")
        else:
            try:
                ck_scheme = get_scheme(active.scheme)
            except KeyError:
                ck_scheme = scheme
            st.image(ck_scheme.colorize(pred), caption=f"prediction ({active.name})", width="stretch")
            if ck_scheme.name == scheme.name:
                agree = agreement(pred, lbl_win)
                if agree is not None:
                    st.caption(f"Agrees with the label on {100 * agree:.1f} % of labelled pixels.")
            else:
                st.caption(f"The model predicts {ck_scheme.name} classes; the label is {scheme.name}.")
                st.markdown(scheme_legend_html(ck_scheme), unsafe_allow_html=True)
st.markdown(scheme_legend_html(scheme), unsafe_allow_html=True)

# ------------------------------------------------------------------------------------------------ brush
st.subheader("Paint a correction")
options = list(range(scheme.num_classes)) + [IGNORE]
b1, b2, b3, b4 = st.columns([2, 1, 1, 1])
class_index = b1.selectbox(
    "Class to paint", options, key="lbl_class", on_change=commit_pending,
    format_func=lambda i: "ignore / unlabelled (255)" if i == IGNORE else f"{i}: {scheme.names[i]}",
    help="Strokes already on the canvas keep the class they were painted with when you switch.",
)
mode = b2.radio("Tool", ["freedraw", "rect"], key="lbl_mode", format_func={"freedraw": "brush", "rect": "rectangle"}.get)
stroke = b3.slider("Brush width (canvas px)", 1, 80, 16, key="lbl_width")
opacity = b4.slider("Label overlay", 0.0, 1.0, 0.35, 0.05, key="lbl_opacity", help="Opacity of the label on the canvas.")

ch, cw, scale = canvas_scale(wh, ww, MAX_DISPLAY, MIN_DISPLAY)
rgb = (0, 0, 0) if class_index == IGNORE else scheme.colors[class_index]
paint = f"rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, 0.8)"
bg = blend_overlay(img, scheme.colorize(lbl_win), opacity, mask=lbl_win != IGNORE)
bg_img = Image.fromarray(bg).resize((cw, ch), Image.NEAREST if scale >= 1 else Image.BILINEAR)
buf = io.BytesIO()
bg_img.save(buf, format="JPEG", quality=90)
canvas_key = f"lbl_canvas_{sid}_{r0}_{c0}_{wh}_{ww}_{edit['gen']}"
result = canvas(
    fill_color=paint, stroke_width=stroke, stroke_color=paint, background_image=buf.getvalue(),
    update_streamlit=True, height=ch, width=cw, drawing_mode=mode, return_image_data=True, key=canvas_key,
)
rgba = getattr(result, "image_data", None) if result is not None else None
n_painted = count_painted(rgba)
if n_painted:
    ss["lbl_strokes"] = {"scene_id": sid, "window": win, "class_index": int(class_index), "gen": edit["gen"],
                         "num_classes": scheme.num_classes, "rgba": np.asarray(rgba)}
else:
    ss.pop("lbl_strokes", None)
st.caption(f"Canvas {cw}×{ch} px for a {ww}×{wh} px window (scale {scale:.2f}). Painted on the canvas, not yet "
           f"applied: {n_painted} canvas px. Strokes are applied with their class when you switch class or window, "
           "press Apply, or save.")

st.text_input("Reason (optional)", key="lbl_reason", placeholder="e.g. roof mislabelled as road")
a1, a2, a3, _ = st.columns([1, 1, 1, 2])
a1.button("Apply strokes", key="lbl_apply", on_click=on_apply)
a2.button("Save as new label version", key="lbl_save", type="primary", on_click=on_save,
          args=(sid, active.id if active else None))
a3.button("Discard unsaved changes", key="lbl_discard", on_click=on_discard, args=(sid,))
if not analyst_name():
    st.caption("Enter your analyst name in the sidebar to save.")
msg = ss.pop("lbl_flash", None)
if msg:
    getattr(st, msg[0])(msg[1])

# ------------------------------------------------------------------------------------------------ history
st.subheader("Label history")
hist = [{"version": 0, "parent": None, "analyst": "", "time (UTC)": scene.created_at[:19].replace("T", " "),
         "tool": "original", "checkpoint": None, "n_changed": 0, "reason": "original label (never modified)"}]
hist += [{"version": h.version, "parent": h.parent_version, "analyst": h.analyst,
          "time (UTC)": h.created_at[:19].replace("T", " "), "tool": h.tool, "checkpoint": h.checkpoint_id,
          "n_changed": h.n_changed, "reason": h.reason or ""} for h in ws.label_history(sid)]
st.dataframe(pd.DataFrame(hist), hide_index=True)
