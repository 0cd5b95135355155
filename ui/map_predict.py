"""The Map page's predictions: the test-time-augmentation widgets, the requests to predict a region and the run.

* TTA: none, the 8 D4 views, or a custom subset of the views (at least one); the merge (mean of softmax / of logits)
  and the window blending are in an expander (:func:`tta_widgets`). :func:`set_tta_widgets` puts them on a TTA
  (only before they are drawn in a run, or from a callback), e.g. the one an overlay was made with
  (:func:`overlay_tta`).
* Requests (``map_autopredict``): an "Open on map" jump or a link made after one (:func:`apply_jump_widgets`,
  :func:`jump_autopredict`, "Predict as in the link": :func:`request_link_predict`) predicts with its checkpoint,
  TTA and A → B cell; "Predict again with the active model" (:func:`request_repredict`, offered by
  :func:`show_stale_overlay` above the map) predicts the overlay's region, TTA, merge and blend with the active
  checkpoint. :func:`predict` runs a request, or the "Predict region" button with the drawn region and the choices
  above, and keeps the result in ``map_results`` (scene id -> prediction record).

The region's window is checked through :mod:`seghz.infer.region` at call time (as the page did by importing it on
every run), so a lowered cap there applies.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from seghz.errors import RegionError, SegHZError
from seghz.geo.regions import region_mask, region_source
from seghz.geo.tiles import geojson_to_pixel_window
from seghz.infer import region as region_infer
from seghz.infer.engine import BLENDS, MERGES, VIEW_NAMES
from seghz.infer.region import predict_region, resolve_tta, tta_label
from seghz.models.checkpoint import checkpoint_scheme
from ui import map_link
from ui.common import predictor_for, progress_callback

TTA_CHOICES = {"none": "none", "d4": "d4 (8 views)", "custom": "custom"}
MERGE_LABELS = {"softmax": "mean of softmax", "logits": "mean of logits"}
BLEND_LABELS = {"uniform": "uniform", "gaussian": "gaussian (centre-weighted)", "cosine": "cosine (centre-weighted)"}


def set_tta_widgets(tta: str | list[str]) -> None:
    """Put the TTA radio (and the custom views) on ``tta``: a mode of the radio, or a list of view names. Only before
    the widgets are drawn in a run (or from a callback)."""
    ss = st.session_state
    if isinstance(tta, str) and tta in TTA_CHOICES and tta != "custom":
        ss["map_tta"] = tta
    else:
        ss["map_tta"] = "custom"
        ss["map_tta_views"] = list(resolve_tta(tta)[1])


def overlay_tta(res) -> str | list[str]:
    """The TTA choice that reproduces a prediction: its mode, or its list of views (custom, flip)."""
    return res.tta if res.tta in TTA_CHOICES and res.tta != "custom" else list(getattr(res, "views", ()) or ("identity",))


def apply_jump_widgets(jump: dict) -> dict:
    """Put the widgets on what an "Open on map" jump (or a link made after one) shows: the error layer, the A → B
    cell's layer and the TTA radio (with the predictor's default merge and blend, as Evaluate used). Only before the
    widgets are drawn in a run (or from a callback). Returns ``jump``, without its TTA when that is unknown."""
    ss = st.session_state
    if jump.get("layer") == "error":
        ss["map_show_error"] = True
    if jump.get("cell"):  # the drilled-into confusion cell: its "A → B errors" layer on
        ss["map_show_cell"] = True
    if jump.get("tta") is not None:  # the evaluation's TTA: the radio shows what the region is predicted with
        try:
            set_tta_widgets(jump["tta"])
            ss["map_merge"], ss["map_blend"] = MERGES[0], BLENDS[0]  # the predictor's defaults, as Evaluate used
        except ValueError:
            jump = {k: v for k, v in jump.items() if k != "tta"}
    return jump


def jump_autopredict(scene_id: str, checkpoint_id: str | None, tta, cell: dict | None) -> dict:
    """The ``map_autopredict`` request of a jump (or of a link made after one): its checkpoint (None: the active
    one), TTA (None: the radio's) and A → B cell; the URL keeps the jump's settings while its prediction is shown."""
    return {"checkpoint_id": checkpoint_id, "tta": tta, "cell": cell, "chosen": bool(checkpoint_id),
            "scene_id": scene_id, "jump": True, **({"merge": None, "blend": None} if tta is not None else {})}


def request_link_predict(scene_id: str) -> None:
    """"Predict as in the link": the region restored from a link made after "Open on map", predicted with the link's
    checkpoint, TTA and A → B cell, the widgets put back on the link's choices."""
    lj = map_link.take_link_jump(scene_id)
    if lj:
        lj = apply_jump_widgets(lj)
        st.session_state["map_autopredict"] = jump_autopredict(scene_id, lj.get("checkpoint_id"), lj.get("tta"),
                                                               lj.get("cell"))


def request_repredict(scene_id: str) -> None:
    """"Predict again with the active model": the overlay's region, TTA, merge and blend (and its A → B cell), with
    the active checkpoint; the TTA widgets are put on the overlay's TTA so that they read what is predicted."""
    ss = st.session_state
    old = ss.setdefault("map_results", {}).get(scene_id)
    if not old:
        return
    res = old["result"]
    set_tta_widgets(overlay_tta(res))
    if getattr(res, "merge", None) in MERGES:
        ss["map_merge"] = res.merge
    if getattr(res, "blend", None) in BLENDS:
        ss["map_blend"] = res.blend
    ss["map_autopredict"] = {"checkpoint_id": None, "tta": overlay_tta(res), "merge": getattr(res, "merge", None),
                             "blend": getattr(res, "blend", None), "geometry": old.get("geometry"),
                             "cell": old.get("cell"), "scene_id": scene_id}


def tta_radio(col: Any) -> str:
    """The TTA radio, in ``col``."""
    return col.radio(
        "Test-time augmentation", list(TTA_CHOICES), format_func=TTA_CHOICES.get, horizontal=True, key="map_tta",
        help="d4 averages the 8 flips/rotations (usually a little better, 8× slower); custom runs the views you pick.",
    )


def tta_widgets(tta_mode: str, shown_rec: dict | None) -> tuple[str | list[str] | None, str, str]:
    """Under the radio: the custom views (custom TTA), the merge and blending in their expander, and a note when the
    overlay shown (``shown_rec``) was predicted with another TTA. Returns ``(TTA choice, merge, blend)``; the choice
    is None when custom has no view."""
    tta_choice: str | list[str] | None = tta_mode
    if tta_mode == "custom":
        st.session_state.setdefault("map_tta_views", ["identity"])  # (not default=: a jump or "predict again" may set the views)
        views = st.multiselect(
            "TTA views", VIEW_NAMES, key="map_tta_views",
            help="identity = the image as is; lr/tb = left-right/top-bottom flips; lrtb = both; diag/diag2 = transpose/"
                 "anti-transpose; rot90/180/270 = rotations. Each view is undone exactly before the views are merged.",
        )
        tta_choice = list(views) or None
        if not views:
            st.error("Choose at least one TTA view (e.g. identity) to predict with custom test-time augmentation.")
    with st.expander("Inference settings (merge, window blending)"):
        e1, e2 = st.columns(2)
        merge = e1.selectbox("Merge the views by", list(MERGES), format_func=MERGE_LABELS.get, key="map_merge",
                             help="Average the views' class probabilities (softmax) or their logits before the softmax.")
        blend = e2.selectbox("Blend overlapping windows", list(BLENDS), format_func=BLEND_LABELS.get, key="map_blend",
                             help="Centre-weighted blending down-weights window borders and removes seams.")
    if shown_rec:
        _res0 = shown_rec["result"]
        try:
            _same = tta_choice is not None and resolve_tta(tta_choice)[1] == tuple(getattr(_res0, "views", ()) or ("identity",))
        except ValueError:
            _same = False
        if not _same:
            st.caption(f"The overlay below was predicted with TTA **{_res0.tta_description}**; the choice above applies "
                       "to the next prediction.")
    return tta_choice, merge, blend


def show_link_prompt(scene_id: str, region: dict | None, active: Any) -> None:
    """"Predict as in the link", while the region restored from a link made after "Open on map" is not predicted:
    its settings are back, its prediction is not."""
    _link_jump = map_link.pending_link_jump(scene_id) if region is not None else None
    if _link_jump:
        st.info(map_link.restored_message(_link_jump))
        lp1, lp2 = st.columns([1, 3], vertical_alignment="center")
        lp1.button("Predict as in the link", key="map_link_predict", on_click=request_link_predict, args=(scene_id,),
                   disabled=active is None and not _link_jump.get("checkpoint_id"))
        lp2.caption(map_link.PREDICT_CAPTION)


def show_stale_overlay(scene_id: str, rec: dict | None, active: Any) -> None:
    """Above the map: the overlay is a prediction by a checkpoint that is not the active one (naming its checkpoint
    and TTA), with "Predict again with the active model"."""
    if rec and (active is None or active.id != rec["checkpoint_id"]):
        _used = (f"**{rec['checkpoint_name']}** (`{rec['checkpoint_id']}`) with TTA "
                 f"**{rec['result'].tta_description}**")
        if active is None:
            st.warning(f"The overlay is a prediction by {_used}; no checkpoint is active now.")
        elif rec.get("chosen"):  # opened from another page to show that checkpoint's errors
            st.info(f"The overlay is a prediction by {_used}, opened from another page; it is not the active model "
                    f"**{active.name}** (`{active.id}`).")
        else:
            st.warning(f"Prediction of an earlier model: the overlay was made by {_used}, but the active model is now "
                       f"**{active.name}** (`{active.id}`) (promoted or rolled back since). Its areas and layers are "
                       "not the active model's.")
        st.button("Predict again with the active model", key="map_repredict", disabled=active is None,
                  on_click=request_repredict, args=(scene_id,),
                  help="The same region, TTA, merge and blending, predicted with the active checkpoint.")


def predict(ws: Any, scene: Any, info: Any, *, active: Any, tta_choice, merge: str, blend: str, geometry: dict | None,
            window: tuple[int, int, int, int] | None, clicked: bool) -> None:
    """Predict a request from a jump ("open on map": its checkpoint, TTA and cell) or from "Predict again with the
    active model" (the overlay's region, TTA, merge and blend), else, when ``clicked``, the drawn region with the
    active model and the choices above; the result goes into ``map_results`` and the page reruns."""
    ss = st.session_state
    sid = scene.id
    results = ss.setdefault("map_results", {})
    auto = ss.pop("map_autopredict", None)
    if auto is not None and not isinstance(auto, dict):  # older form: True, or a checkpoint id
        auto = {"checkpoint_id": auto if isinstance(auto, str) else None}
    if auto and auto.get("scene_id", sid) != sid:
        auto = None
    use_ck, use_tta, use_merge, use_blend = active, tta_choice, merge, blend
    use_geometry, use_window, use_cell, chosen = geometry, window, None, False
    if auto:
        if auto.get("checkpoint_id"):
            try:
                use_ck, chosen = ws.usable_checkpoint(auto["checkpoint_id"]), bool(auto.get("chosen", True))
            except SegHZError:  # deleted since it was named: kept above the map until the analyst moves on
                gone = (f"Checkpoint `{map_link.shown(str(auto['checkpoint_id']))}` is no longer registered: the region "
                        + (f"is predicted with the active model **{active.name}** (`{active.id}`) instead."
                           if active is not None else "is not predicted, as no checkpoint is active."))
                st.warning(gone)
                map_link.keep_jump_warning(sid, gone)
                map_link.drop_jump_checkpoint(sid)  # the URL does not name it (without ``ckpt``: the active model)
        if auto.get("tta") is not None:
            use_tta = auto["tta"]
        use_merge, use_blend = auto.get("merge", merge), auto.get("blend", blend)
        if auto.get("geometry") is not None:
            use_geometry = auto["geometry"]
            try:
                use_window = region_infer.check_window(scene, geojson_to_pixel_window(
                    use_geometry, info, name=scene.name, what=region_source(use_geometry)))
            except RegionError as e:
                st.error(f"Cannot predict the overlay's region again: {e}")
                use_window = None
        use_cell = auto.get("cell")
    clicked = bool(auto) or clicked
    if clicked and use_window is not None and use_ck is not None and use_tta is not None:
        tta_txt = tta_label(*resolve_tta(use_tta))
        bar = st.progress(0.0, text=f"Predicting {use_window[3]}×{use_window[2]} px with {use_ck.name} (TTA {tta_txt})…")
        ok = False
        try:
            predictor, meta = predictor_for(ws, use_ck.id)
            pred_scheme = checkpoint_scheme(meta)
            res = predict_region(ws, scene, use_window, predictor, use_tta, progress=progress_callback(bar),
                                 merge=use_merge, blend=use_blend)
            results[sid] = {
                "result": res, "inside": region_mask(use_geometry, info, res.window), "geometry": use_geometry,
                "scheme": pred_scheme, "checkpoint_id": use_ck.id, "checkpoint_name": use_ck.name,
                "cell": use_cell, "chosen": chosen,
            }
            if not (auto and auto.get("jump")):  # not the jump's prediction any more: the link loses its settings
                map_link.forget_jump(sid)
            ok = True
        except (SegHZError, ValueError, KeyError, OSError, RuntimeError) as e:
            st.error(f"Prediction failed: {e}")
        finally:
            bar.empty()
        if ok:
            st.rerun()


__all__ = [
    "BLEND_LABELS",
    "MERGE_LABELS",
    "TTA_CHOICES",
    "apply_jump_widgets",
    "jump_autopredict",
    "overlay_tta",
    "predict",
    "request_link_predict",
    "request_repredict",
    "set_tta_widgets",
    "show_link_prompt",
    "show_stale_overlay",
    "tta_radio",
    "tta_widgets",
]
