"""The Map page's region: the one drawn, opened by "Open on map", or restored from a link; checked, and cleared.

The region of each scene is kept in ``map_regions`` (scene id -> GeoJSON Feature) and the window the map opened at
in ``map_focus``. An "Open on map" jump from another page (``map_jump``, see :func:`seghz.drilldown.map_jump`) selects
its scene (:func:`take_jump`; a scene that is not in the workspace: a warning naming it, and the page as usual), then
(``map_pending_jump``) puts its window in as the region, zooms the map to it, asks for its prediction
(``map_autopredict``) and says what it opened (``map_jump_msg``; ``map_region_from_jump`` marks a region a jump put
there, so a later jump says when it replaced the analyst's own drawing): :func:`open_pending_jump`. A checkpoint it
names that is no longer registered: the active one predicts, and the message and a kept warning say so. A drawing on the
map, or the shape deleted with the map's trash tool, replaces the region (:func:`take_drawing`); "Clear region"
forgets it wherever it came from (:func:`clear_region`). :func:`region_panel` checks the region against the scene and
the inline cap (past the cap it offers a background job) and says which window will be predicted.

The window is checked through :mod:`seghz.infer.region` at call time (as the page did by importing it on every run),
so a lowered cap there applies.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from seghz.errors import RegionError, SegHZError
from seghz.geo.regions import bbox_to_window, region_source, window_to_geojson
from seghz.geo.tiles import geojson_to_pixel_window
from seghz.infer import region as region_infer
from seghz.infer.region import resolve_tta, tta_label
from ui import map_link
from ui.map_predict import apply_jump_widgets, jump_autopredict


def clear_region(scene_id: str) -> None:
    """"Clear region": forget the scene's region, wherever it came from (drawn, a link, "Open on map"). A region
    from a link or a jump is only an outline, not a Leaflet.draw shape, so the map's trash tool cannot remove it;
    the map is re-created (a new key), so a drawn shape does not come back as the component's last drawing."""
    ss = st.session_state
    ss.setdefault("map_regions", {}).pop(scene_id, None)
    ss.get("map_jump_msg", {}).pop(scene_id, None)
    ss.get("map_region_from_jump", {}).pop(scene_id, None)
    map_link.forget_jump(scene_id)
    map_link.drop_jump_warnings(scene_id)
    gens = ss.setdefault("map_clear_gen", {})
    gens[scene_id] = gens.get(scene_id, 0) + 1


def take_jump(by_id: dict[str, Any]) -> None:
    """Take the "Open on map" request of another page (``map_jump``): its scene is selected and its widgets put on
    what it shows (before they are drawn), for :func:`open_pending_jump`. A scene that is not in the workspace (deleted
    since): nothing is opened, and a warning naming its id stays on the scene the page shows as usual."""
    ss = st.session_state
    jump = ss.pop("map_jump", None)
    if not jump:
        return
    if jump.get("scene_id") in by_id:
        ss["map_scene"] = jump["scene_id"]
        ss["map_pending_jump"] = apply_jump_widgets(jump)
        return
    shown_sid = ss["map_scene"] if ss.get("map_scene") in by_id else next(iter(by_id))  # what the selectbox shows
    map_link.keep_jump_warning(
        shown_sid, f"“Open on map” asked for scene `{map_link.shown(str(jump.get('scene_id')))}`, which is not in this "
                   "workspace (it was deleted, or the workspace changed, since): nothing was opened; showing "
                   f"'{by_id[shown_sid].name}' instead.")


def _checkpoint_gone(ws: Any, checkpoint_id: str | None) -> bool:
    """True when ``checkpoint_id`` is given but not registered (any more) in ``ws``."""
    if not checkpoint_id:
        return False
    try:
        ws.usable_checkpoint(checkpoint_id)  # archived: its weights are gone, as good as unregistered
        return False
    except SegHZError:
        return True


def open_pending_jump(ws: Any, scene: Any, info: Any, active: Any) -> None:
    """Open the pending "Open on map" jump of this scene: its window as the region, the map zoomed to it, its
    prediction requested (checkpoint, TTA and A → B cell) and the URL carrying its settings; then show what it
    opened while the map is at that window, under the jump's kept warnings. A checkpoint the jump names that is no
    longer registered is predicted with the ``active`` one instead (no ``ckpt`` in the URL); the message says so and
    a warning stays until the analyst moves on."""
    ss = st.session_state
    sid = scene.id
    regions, focus = ss.setdefault("map_regions", {}), ss.setdefault("map_focus", {})
    pending = ss.pop("map_pending_jump", None)
    if pending and pending.get("scene_id") == sid:
        map_link.drop_jump_warnings(sid)  # those of an earlier jump on this scene
        try:
            jw = bbox_to_window(tuple(pending["bbox"]), scene.height, scene.width)
            from_jump = ss.setdefault("map_region_from_jump", {})
            replaced = regions.get(sid) is not None and not from_jump.get(sid)  # the analyst's own drawn region
            regions[sid] = window_to_geojson(jw, info)
            from_jump[sid] = True
            focus[sid] = jw
            jck = pending.get("checkpoint_id")  # from an evaluation: predict with the checkpoint evaluated there
            jtta = pending.get("tta")  # … and with its TTA
            jcell = pending.get("cell")  # … and show the drilled-into (A, B) cell
            named = f"**{pending.get('checkpoint_name') or jck}** (`{map_link.shown(str(jck))}`)"
            role = pending.get("checkpoint_role") or "the evaluated checkpoint"
            gone = _checkpoint_gone(ws, jck)
            if gone:  # deleted since: the active checkpoint predicts, and the URL does not name the missing one
                pending = {**pending, "checkpoint_id": None}
                map_link.keep_jump_warning(sid, (
                    f"Checkpoint {named} ({role}) is no longer registered: the region opened by “Open on map” is "
                    f"predicted with the active model **{active.name}** (`{active.id}`) instead." if active is not None
                    else f"Checkpoint {named} ({role}) is no longer registered and no checkpoint is active: the region "
                         "opened by “Open on map” is not predicted."))
            ss["map_autopredict"] = jump_autopredict(sid, pending.get("checkpoint_id"), jtta, jcell)
            map_link.remember_jump(sid, pending)  # the URL carries its checkpoint, TTA and layers too
            ss.setdefault("map_jump_msg", {})[sid] = (
                f"Opened at rows {jw[0]}–{jw[0] + jw[2] - 1}, columns {jw[1]}–{jw[1] + jw[3] - 1}"
                + (f" ({pending['why']})" if pending.get("why") else "")
                + (f"; the region is predicted with the active model **{active.name}** (`{active.id}`), not with "
                   f"{named} ({role}), which is no longer registered" if gone and active is not None
                   else f"; the region is not predicted: {named} ({role}) is no longer registered and no checkpoint "
                        "is active" if gone
                   else f"; the region is predicted with {named}, {role}" if jck
                   else "; the region is predicted with the active model")
                + (f", with TTA **{tta_label(*resolve_tta(jtta))}** as in the evaluation"
                   if jtta is not None and not (gone and active is None) else "")
                + (f"; the **{jcell['true']} → {jcell['predicted']} errors** layer marks exactly the pixels labelled "
                   f"{jcell['true']} and predicted {jcell['predicted']} ({jcell.get('scheme')} classes)" if jcell else "")
                + ((", and the error layer is on (the other errors dimmed)." if jcell else " and the error layer is on.")
                   if pending.get("layer") == "error" else ".")
                + (" It replaced the region you had drawn on this scene (and its prediction); draw again to go back."
                   if replaced else ""))
        except RegionError as e:
            st.error(f"Cannot open that place on the map: {e}")
    map_link.show_jump_warnings(sid)
    if ss.get("map_jump_msg", {}).get(sid) and focus.get(sid):
        st.info(ss["map_jump_msg"][sid])


def take_drawing(scene_id: str, out: dict) -> None:
    """What the map returned (``st_folium``'s ``last_active_drawing`` and ``all_drawings``): the analyst's new shape
    replaces the region, a deleted shape removes it; either reruns the page (the outline and window follow)."""
    ss = st.session_state
    regions = ss.setdefault("map_regions", {})
    drawing, drawn = out.get("last_active_drawing"), out.get("all_drawings")
    if isinstance(drawn, list) and not drawn:
        if regions.pop(scene_id, None) is not None:
            ss.get("map_jump_msg", {}).pop(scene_id, None)  # "Opened at …" described the region just removed
            ss.get("map_region_from_jump", {}).pop(scene_id, None)
            map_link.forget_jump(scene_id)
            map_link.drop_jump_warnings(scene_id)
            st.rerun()  # the analyst deleted the shape: drop its outline from the map
    elif drawing and drawing != regions.get(scene_id):
        regions[scene_id] = drawing
        ss.get("map_jump_msg", {}).pop(scene_id, None)  # the analyst's own region replaces the one a jump opened
        ss.get("map_region_from_jump", {}).pop(scene_id, None)
        map_link.forget_jump(scene_id)
        map_link.drop_jump_warnings(scene_id)
        st.rerun()  # show the region's outline (kept when the map is re-created) and its window


def region_panel(ws: Any, scene: Any, info: Any, geometry: dict | None, rec: dict | None, active: Any,
                 tta_choice) -> tuple[int, int, int, int] | None:
    """Under the map: the region's window (with "Clear region"), why it cannot be predicted (past the inline cap:
    "Predict it as a background job"), or how to draw one. Returns the window to predict, or None."""
    sid = scene.id
    window = None
    if geometry is None:
        st.info("Draw a rectangle or polygon on the scene with the tools at the top left of the map, then predict it. "
                f"Regions are capped at {region_infer.MAX_REGION_PIXELS / 1e6:.1f} Mpx (e.g. 2048×2048 px).")
    else:
        try:
            window = region_infer.check_window(scene, geojson_to_pixel_window(geometry, info, name=scene.name,
                                                                              what=region_source(geometry)))
        except RegionError as e:
            st.error(f"Cannot predict this region: {e}")
            big = region_infer.too_big_window(scene, geometry, info)
            if big is not None and active is not None and tta_choice is not None:
                st.caption(f"It can run as a background job instead ({big[3]}×{big[2]} px, streamed window row by "
                           "window row into a GeoTIFF in the workspace; the app stays usable).")
                if st.button("Predict it as a background job", key="map_bigjob"):
                    from seghz.jobs.runner import submit_job

                    jid = submit_job(ws, "predict-region", {"scene_id": sid, "window": list(big),
                                                            "checkpoint_id": active.id, "tta": tta_choice})
                    st.success(f"Job {jid} started: its GeoTIFF will be listed below when it is done.")
    if window is not None:
        r, c, h, w = window
        rc1, rc2 = st.columns([5, 1])
        rc1.caption(f"Drawn region: rows {r}–{r + h - 1}, columns {c}–{c + w - 1} ({w}×{h} px = {w * h / 1e6:.2f} Mpx) "
                    f"of {scene.width}×{scene.height} px.")
        rc2.button("Clear region", key="map_clear_region", on_click=clear_region, args=(sid,),
                   help="Forget this region (also one opened from a link or another page, which the map's trash tool "
                        "cannot remove); the link loses it too.")
        if rec and tuple(rec["result"].window) != tuple(window):
            st.caption("The overlay shows an earlier region; press **Predict region** to predict this one.")
    return window


__all__ = ["clear_region", "open_pending_jump", "region_panel", "take_drawing", "take_jump"]
