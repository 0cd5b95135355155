"""The Map page's link: the URL that reopens what the page shows, read into a fresh session and written back.

``?scene=<scene id>&region=<packed region>`` (:func:`seghz.geo.regions.region_to_query`), and after "Open on map"
also the jump's settings ``&ckpt=<checkpoint id>&tta=<TTA>&err=<all | A-B.scheme>``
(:func:`seghz.drilldown.jump_to_query`). A reload (F5), a new tab or a link pasted to a colleague starts a fresh
session: :func:`read_link` seeds it once from the URL (the scene, its region with the map zoomed to it, the jump's
settings), keeping a warning for whatever the link could not restore (:func:`show_link_messages`); later runs keep
to ``st.session_state`` and a pending "Open on map" jump wins over the URL. :func:`write_link` keeps the URL on the
page's scene, region and jump settings; the jump's settings only while the TTA, merge and blending widgets still
read what the jump predicts with (:func:`jump_matches`). The prediction itself is never in the link: a link made
after "Open on map" puts the checkpoint, TTA and layers back, and the analyst presses "Predict as in the link"
(:func:`restored_message`).

What a jump could not do as asked (its scene or checkpoint is gone) is kept as a warning in ``map_jump_warn``
(:func:`keep_jump_warning`), shown on its scene until the analyst draws, clears or picks another scene
(:func:`show_jump_warnings`, :func:`drop_jump_warnings`), so the rerun after the jump's prediction does not lose it.

Session state: ``map_link_read`` (the URL was read), ``map_link_msgs`` (``{"scene", "msgs"}``: the warnings, shown
on that scene), ``map_jump_link`` (scene id -> the jump settings that go into the URL while the page shows them) and
``map_link_pending`` (scene id -> settings restored from a link, not predicted yet), ``map_jump_warn`` (``{"scene",
"msgs"}``: what a jump could not do, shown on that scene); the region and the map's focus go into ``map_regions`` /
``map_focus`` like any region.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from seghz.data.io import raster_info
from seghz.drilldown import JUMP_QUERY_KEYS, JumpQueryError, jump_from_query, jump_to_query
from seghz.errors import RegionError, SegHZError
from seghz.geo.regions import LINK_REGION, bbox_to_window, region_from_query, region_to_query
from seghz.geo.tiles import geojson_to_pixel_window

SCENE, REGION = "scene", "region"
LINK_SOURCE = "link"  # ``properties.source`` of a region restored from the link (see seghz.geo.regions.region_source)


def shown(text: str) -> str:
    """A value from the URL inside a Markdown code span: kept short, no backquotes."""
    return text[:80].replace("`", "'")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _jump_params() -> dict[str, str]:
    """The jump's parameters of the URL (``ckpt``, ``tta``, ``err``) that are there."""
    return {k: st.query_params.get(k) for k in JUMP_QUERY_KEYS if k in st.query_params}


def _checkpoint_scheme(ws: Any, checkpoint_id: str) -> str | None:
    """The class scheme of a registered checkpoint, None when ``checkpoint_id`` is not registered."""
    try:
        return ws.usable_checkpoint(checkpoint_id).scheme
    except SegHZError:
        return None


def link_region(geometry: dict) -> dict:
    """The region Feature of a region restored from the link (its source named, for messages)."""
    return {"type": "Feature", "properties": {"source": LINK_SOURCE}, "geometry": geometry}


def restore_region(ws: Any, scene: Any, text: str, msgs: list[str]) -> bool:
    """Put the link's region on ``scene`` (``map_regions``) with the map zoomed to it (``map_focus``); a damaged
    region or one off the scene is dropped with a warning in ``msgs``. True when restored. A scene whose image
    cannot be read is left to the page (it says so and stops)."""
    ss = st.session_state
    try:
        info = raster_info(ws.scene_path(scene, "image"))
    except (SegHZError, OSError, ValueError):
        return False
    try:
        geom = region_from_query(text, lonlat=bool(info.georeferenced))
        r, c, h, w = geojson_to_pixel_window(geom, info, name=scene.name, what=LINK_REGION)  # RegionError when it misses
        ss.setdefault("map_regions", {})[scene.id] = link_region(geom)
        ss.setdefault("map_focus", {})[scene.id] = bbox_to_window((r, c, r + h, c + w), scene.height, scene.width)
        return True
    except Exception as e:  # noqa: BLE001 - a damaged or crafted link never breaks the page (PROJ errors too)
        why = str(e) if isinstance(e, RegionError) else f"it cannot be placed on this scene ({type(e).__name__}: {e})"
        msgs.append(f"The region in the link was dropped: {why}.")
        return False


def restore_jump(ws: Any, params: dict[str, str], msgs: list[str]) -> dict | None:
    """The jump settings of the link (:func:`seghz.drilldown.jump_from_query`, with ``checkpoint_name``), or None
    with a warning in ``msgs`` naming the parameter that cannot be used (the region stays, as a plain region)."""
    try:
        settings = jump_from_query(params, lambda cid: _checkpoint_scheme(ws, cid))
    except JumpQueryError as e:
        msgs.append(f"{_cap(str(e))}: the region is opened as a plain region, without the link's checkpoint, TTA "
                    "and error layer.")
        return None
    if settings and settings.get("checkpoint_id"):
        settings["checkpoint_name"] = ws.usable_checkpoint(settings["checkpoint_id"]).name
    return settings


def _dropped_jump(params: dict[str, str], why: str) -> str:
    names = ", ".join(f"`{k}=`" for k in params)
    return f"The link's prediction settings ({names}) were dropped: {why}."


def read_link(ws: Any, scenes: Sequence[Any]) -> dict | None:
    """Seed a fresh session from the URL, once: its scene (an unknown id: a warning naming it, and the first
    scene), its region (:func:`restore_region`) and, with the region, the jump's settings (:func:`restore_jump`;
    kept in ``map_jump_link`` for the URL and ``map_link_pending`` for :func:`restored_message`). Returns those
    settings, for the page to put its widgets on them (only before they are drawn), or None. Nothing is read when
    the session already shows a scene or a jump from another page is pending."""
    ss = st.session_state
    if "map_link_read" in ss:
        return None
    ss["map_link_read"] = True
    q_scene, q_region, q_jump = st.query_params.get(SCENE), st.query_params.get(REGION), _jump_params()
    if "map_jump" in ss or "map_scene" in ss or not (q_scene or q_region or q_jump):
        return None
    by_id = {s.id: s for s in scenes}
    msgs: list[str] = []
    settings = None
    if q_scene in by_id:
        ss["map_scene"] = q_scene
        restored = bool(q_region) and restore_region(ws, by_id[q_scene], q_region, msgs)
        if q_jump and restored:
            settings = restore_jump(ws, q_jump, msgs)
        elif q_jump:
            msgs.append(_dropped_jump(q_jump, "they go with the link's region"))
    elif q_scene:
        msgs.append(f"The link names scene `{shown(q_scene)}`, which is not in this workspace: showing "
                    f"'{scenes[0].name}' (`{scenes[0].id}`) instead"
                    + (", without the link's region." if q_region else "."))
        if q_jump:
            msgs.append(_dropped_jump(q_jump, "they go with the link's scene and region"))
    elif q_region:
        msgs.append("The link has a region but no scene (`scene=`): the region was dropped.")
        if q_jump:
            msgs.append(_dropped_jump(q_jump, "they go with the link's scene and region"))
    else:
        msgs.append(_dropped_jump(q_jump, "the link has no scene (`scene=`) and no region (`region=`)"))
    ss["map_link_msgs"] = {"scene": ss.get("map_scene", scenes[0].id), "msgs": msgs}
    if settings:
        ss.setdefault("map_jump_link", {})[q_scene] = settings
        ss.setdefault("map_link_pending", {})[q_scene] = settings
    return settings


def _show_kept(key: str, scene_id: str, box: Any) -> None:
    """The warnings kept under ``key`` (``{"scene", "msgs"}``) in ``box`` while their scene is shown; forgotten once
    the analyst picks another scene."""
    ss = st.session_state
    kept = ss.get(key)
    if kept and kept.get("scene") == scene_id:
        for m in kept["msgs"]:
            box.warning(m)
    elif kept:
        ss.pop(key, None)


def show_link_messages(box: Any, scene_id: str) -> None:
    """The warnings of what the link could not restore, in ``box``, while the link's scene is shown (forgotten once
    the analyst picks another scene)."""
    _show_kept("map_link_msgs", scene_id, box)


def remember_jump(scene_id: str, jump: dict) -> None:
    """The settings of an "Open on map" jump just opened on ``scene_id`` (its checkpoint, TTA, A → B cell and error
    layer): the URL carries them from now on (:func:`write_link`)."""
    ss = st.session_state
    ss.setdefault("map_jump_link", {})[scene_id] = {k: jump.get(k) for k in ("checkpoint_id", "tta", "cell", "layer")}
    ss.get("map_link_pending", {}).pop(scene_id, None)


def forget_jump(scene_id: str) -> None:
    """The scene's region or prediction is no longer the jump's (cleared, drawn over, predicted otherwise): the URL
    loses the jump's settings and a link's "Predict as in the link" goes away."""
    ss = st.session_state
    ss.get("map_jump_link", {}).pop(scene_id, None)
    ss.get("map_link_pending", {}).pop(scene_id, None)


def drop_jump_checkpoint(scene_id: str) -> None:
    """The jump's checkpoint is no longer registered and the active one predicted instead: the URL loses ``ckpt``
    (without it the link means the active model, which is what was used)."""
    jump = st.session_state.get("map_jump_link", {}).get(scene_id)
    if jump:
        jump["checkpoint_id"] = None


def keep_jump_warning(scene_id: str, msg: str) -> None:
    """Keep a warning about what a jump could not do (its scene or checkpoint is gone), shown on ``scene_id`` by
    :func:`show_jump_warnings` until the analyst moves on (draws, clears, picks another scene)."""
    ss = st.session_state
    kept = ss.get("map_jump_warn")
    if not kept or kept.get("scene") != scene_id:
        kept = {"scene": scene_id, "msgs": []}
    if msg not in kept["msgs"]:
        kept["msgs"].append(msg)
    ss["map_jump_warn"] = kept


def show_jump_warnings(scene_id: str) -> None:
    """The warnings kept by :func:`keep_jump_warning` while their scene is shown (forgotten once the analyst picks
    another scene)."""
    _show_kept("map_jump_warn", scene_id, st)


def drop_jump_warnings(scene_id: str) -> None:
    """The analyst moved on from what the jump opened on ``scene_id`` (drew, cleared, another jump): its warnings go."""
    ss = st.session_state
    if (ss.get("map_jump_warn") or {}).get("scene") == scene_id:
        ss.pop("map_jump_warn", None)


def jump_matches(jump: dict, tta_choice: Any, merge: str | None, blend: str | None) -> bool:
    """Whether the page's TTA choice, merge and blending still are what ``jump`` predicts with: its TTA (the same
    views) with the predictor's default merge and blending, as :func:`ui.map_predict.apply_jump_widgets` puts them.
    A jump without a TTA predicts with the page's choices, so any match."""
    from seghz.infer.engine import BLENDS, MERGES
    from seghz.infer.region import resolve_tta

    if jump.get("tta") is None:
        return True
    try:
        same = tta_choice is not None and resolve_tta(tta_choice)[1] == resolve_tta(jump["tta"])[1]
    except ValueError:
        return False
    return same and merge == MERGES[0] and blend == BLENDS[0]


def pending_link_jump(scene_id: str) -> dict | None:
    """The jump settings restored from the link on ``scene_id`` and not predicted yet."""
    return st.session_state.get("map_link_pending", {}).get(scene_id)


def take_link_jump(scene_id: str) -> dict | None:
    """:func:`pending_link_jump`, no longer pending (it is being predicted)."""
    return st.session_state.get("map_link_pending", {}).pop(scene_id, None)


def restored_message(settings: dict) -> str:
    """What a link made after "Open on map" put back (checkpoint, TTA, layers), for the page's info box."""
    from seghz.infer.region import resolve_tta, tta_label

    ck, tta, cell = settings.get("checkpoint_id"), settings.get("tta"), settings.get("cell")
    parts = [f"checkpoint **{settings.get('checkpoint_name') or ck}** (`{ck}`)" if ck
             else "the active model (the link names no checkpoint)"]
    if tta is not None:
        parts.append(f"TTA **{tta_label(*resolve_tta(tta))}**")
    if cell:
        parts.append(f"the **{cell['true']} → {cell['predicted']} errors** layer (the pixels labelled {cell['true']} "
                     f"and predicted {cell['predicted']}, {cell['scheme']} classes)")
    if settings.get("layer") == "error":
        parts.append("the error layer" + (" (the other errors dimmed)" if cell else ""))
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"This link was made after “Open on map”; its settings are back: {listed}."


PREDICT_CAPTION = ("The link does not hold the prediction itself: press **Predict as in the link** to predict the "
                   "region again with the link's checkpoint, TTA and layers (**Predict region** predicts it with the "
                   "active model and the choices above).")


def write_link(scene_id: str, region: dict | None, choice: tuple[Any, str, str] | None = None) -> str | None:
    """Keep the URL on the page: ``scene``, ``region`` (removed when there is none) and the jump's settings while
    the scene shows them (``map_jump_link``) and, given the page's ``choice`` ``(TTA choice, merge, blend)``, while
    those still match the jump (:func:`jump_matches`; the analyst changed them: the URL is the plain region, and
    changing them back brings the settings back). Returns a note when the region or the jump's layer cannot go into
    the link (a reload or a shared link will not bring it back), else None."""
    qp = st.query_params
    if qp.get(SCENE) != scene_id:
        qp[SCENE] = scene_id
    note = None
    try:
        packed = region_to_query(region) if region is not None else None
    except RegionError as e:
        packed, note = None, (f"This region cannot go into the page's link ({e}): a reload or a shared link will not "
                              "bring it back.")
    jump = st.session_state.get("map_jump_link", {}).get(scene_id) if packed is not None else None
    if jump and choice is not None and not jump_matches(jump, *choice):
        jump = None
    try:
        extra = jump_to_query(jump) if jump else {}
    except ValueError as e:
        extra, note = {}, (f"The layer opened with “Open on map” cannot go into the page's link ({e}): a reload or a "
                           "shared link will bring back the region only.")
    want = {REGION: packed, **{k: extra.get(k) for k in JUMP_QUERY_KEYS}}
    for k, v in want.items():
        if v is None:
            if k in qp:
                del qp[k]
        elif qp.get(k) != v:
            qp[k] = v
    return note


__all__ = [
    "LINK_SOURCE",
    "PREDICT_CAPTION",
    "drop_jump_checkpoint",
    "drop_jump_warnings",
    "forget_jump",
    "jump_matches",
    "keep_jump_warning",
    "link_region",
    "pending_link_jump",
    "read_link",
    "remember_jump",
    "restore_jump",
    "restore_region",
    "restored_message",
    "show_jump_warnings",
    "show_link_messages",
    "take_link_jump",
    "write_link",
]
