"""Map: browse a scene on an offline map, draw a region, predict it with the active model, read the class areas.

* The scene is shown from a local tile pyramid (built on first view into ``static/tiles/<workspace key>/<scene>``,
  served by Streamlit at ``/app/static``); Leaflet and Leaflet.draw come from ``static/vendor`` (no internet).
* ``st_folium`` returns only the drawings, so panning/zooming never reruns the app. The prediction, label and
  uncertainty overlays travel as a ``feature_group_to_add``, which streamlit-folium swaps in place: the map is not
  re-created (view and drawn shapes stay) when a prediction arrives or the opacity changes.
* A drawn polygon is predicted over its bounding window; pixels whose centres fall outside it are left out
  (transparent, not counted). Rectangles count whole.
* Test-time augmentation: none, the 8 D4 views, or a custom subset of the views (at least one); the merge (mean
  of softmax / of logits) and the window blending are in an expander. The result records the views it ran.
* One uncertainty layer at a time: low confidence (binned max probability), predictive entropy (0..ln C nats) or
  view disagreement (fraction of TTA views differing from the merged class; needs >= 2 views), each with a legend.
* The region and the last prediction are kept per scene in ``st.session_state`` (``map_regions``,
  ``map_results``), so they survive reruns and switching scenes.
* The URL holds the view: ``?scene=<scene id>&region=<packed region>`` (:func:`seghz.geo.regions.region_to_query`,
  ~40 characters for a rectangle) is written whenever the scene changes or a region is drawn, opened by a jump or
  cleared (``region`` is removed then). A reload (F5), a new tab or a link pasted to a colleague starts a fresh
  session, which is seeded from it: that scene (an unknown id: a warning naming it, and the first scene) and its
  region, the map zoomed to it (a damaged region or one off the scene: a warning, and it is dropped). Only a fresh
  session reads the URL; afterwards ``st.session_state`` wins (and a pending "Open on map" jump wins over the URL).
  The analyst's name is never put in the URL, so a shared link cannot record edits under the wrong person.
  While the page shows what "Open on map" opened, the URL also holds its settings: ``&ckpt=<checkpoint id>&tta=d4
  &err=3-5.hz7`` (the A → B cell as class indices of its scheme view; ``err=all``: the error layer alone;
  :func:`seghz.drilldown.jump_to_query`); drawing, clearing or predicting otherwise drops them. A link with them
  puts the layers, checkpoint and TTA back and offers "Predict as in the link" (the prediction is not in the URL);
  an unknown checkpoint, TTA, scheme or class: a warning naming the parameter, and the plain region. See
  :mod:`ui.map_link`.
* "Open on map" from another page (``map_jump``, see :func:`seghz.drilldown.map_jump`) predicts the window with the
  checkpoint and the TTA it names (the radio is put on that TTA), and a drill-down cell (true A, predicted B, in
  the Evaluate scheme view) gets an "A → B errors" layer of exactly those pixels, on by default (other errors
  dimmed when the error layer is on too).
* An overlay made by a checkpoint that is not the active one is flagged above the map, naming its checkpoint and
  TTA, with "Predict again with the active model" (same region, TTA, merge and blending).
* Small regions read in m² (below 0.01 km²); export file names and the class-area CSV name the checkpoint and TTA.
"""
from __future__ import annotations

import threading
from pathlib import Path

import folium
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import streamlit_folium

from seghz import drilldown
from seghz.classes import IGNORE
from seghz.data.io import raster_info
from seghz.data.scenes import import_imagery
from seghz.errors import RegionError, SchemeMismatchError, SegHZError
from seghz.evaluate import label_for_checkpoint
from seghz.geo import vectors
from seghz.geo.basemaps import (
    GCJ02,
    OFFLINE,
    add_basemap,
    basemap_choices,
    fetch_bbox_default,
    fetch_sources,
    gcj_view_shift,
)
from seghz.geo.fetch import parse_bbox, plan_baidu, plan_xyz
from seghz.geo.regions import (
    OTHER_ERROR_ALPHA,
    UNCERTAINTY_LAYERS,
    bbox_to_window,
    cell_scheme,
    confidence_classes,
    confidence_scheme,
    disagreement_spec,
    entropy_spec,
    error_classes,
    error_scheme,
    geometry_pixel_rings,
    mask_classes,
    mask_outside,
    other_errors_scheme,
    region_mask,
    region_source,
    suspicion_spec,
    uncertainty_summary,
    window_to_geojson,
    workspace_tile_key,
)
from seghz.geo.tiles import (
    build_pyramid,
    geojson_to_pixel_window,
    pixel_to_latlng,
    region_overlay,
    rgba_overlay_png,
    scalar_overlay,
    tile_dir,
    window_bounds,
)
from seghz.geo.tiles import (
    scene_bounds as scene_bounds_of,
)
from seghz.geo.webmap import DRAW_COLOR, add_outline, add_region_overlay, add_tile_layer, make_map
from seghz.infer.engine import BLENDS, MERGES, VIEW_NAMES
from seghz.infer.region import (
    MAX_REGION_PIXELS,
    area_unit,
    check_window,
    class_areas,
    export_stem,
    format_area,
    predict_region,
    region_geotiff,
    resolve_tta,
    too_big_window,
    tta_label,
)
from seghz.labels_edit import agreement
from seghz.models.checkpoint import checkpoint_scheme
from seghz.report import BIAS_THRESHOLD, style_pp
from seghz.review import queue as rq
from seghz.security import redact_secrets
from ui import map_link
from ui.common import page_header, predictor_for, progress_callback, scheme_legend_html, screen_scheme

MAP_HEIGHT = 560
TTA_CHOICES = {"none": "none", "d4": "d4 (8 views)", "custom": "custom"}
MERGE_LABELS = {"softmax": "mean of softmax", "logits": "mean of logits"}
BLEND_LABELS = {"uniform": "uniform", "gaussian": "gaussian (centre-weighted)", "cosine": "cosine (centre-weighted)"}
REGION_STYLE = {"color": DRAW_COLOR, "weight": 2, "dash_array": "6 4", "fill": False, "interactive": False}

ws = page_header("Map", "Browse a scene, draw a rectangle or polygon on it and predict that region with the active "
                        "model; class areas in m² or km² (georeferenced scenes) or pixels.")
ss = st.session_state
regions: dict = ss.setdefault("map_regions", {})  # scene id -> drawn GeoJSON Feature
results: dict = ss.setdefault("map_results", {})  # scene id -> last prediction record
focus: dict = ss.setdefault("map_focus", {})  # scene id -> window the map opened at ("open on map" from other pages)


@st.cache_resource(show_spinner=False)
def _pyramids() -> tuple[dict, threading.Lock]:
    """Pyramids built by this server process, keyed by source file state and tile folder."""
    return {}, threading.Lock()


def scene_pyramid(image: Path, out_dir: Path):
    built, lock = _pyramids()
    stat = image.stat()
    key = (str(image), stat.st_mtime_ns, stat.st_size, str(out_dir))
    manifest = out_dir / "pyramid.json"
    if key in built and manifest.is_file():
        return built[key]
    with lock:
        if key not in built or not manifest.is_file():
            bar = st.progress(0.0, text="Preparing the map tiles of this scene (first view only)…")
            try:
                built[key] = build_pyramid(
                    image, out_dir,
                    progress=lambda f: bar.progress(min(1.0, max(0.0, float(f))), text=f"Building map tiles… {f:.0%}"),
                )
            finally:
                bar.empty()
    return built[key]


def set_tta_widgets(tta: str | list[str]) -> None:
    """Put the TTA radio (and the custom views) on ``tta``: a mode of the radio, or a list of view names. Only before
    the widgets are drawn in a run (or from a callback)."""
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
        ss["map_autopredict"] = jump_autopredict(scene_id, lj.get("checkpoint_id"), lj.get("tta"), lj.get("cell"))


def clear_region(scene_id: str) -> None:
    """"Clear region": forget the scene's region, wherever it came from (drawn, a link, "Open on map"). A region
    from a link or a jump is only an outline, not a Leaflet.draw shape, so the map's trash tool cannot remove it;
    the map is re-created (a new key), so a drawn shape does not come back as the component's last drawing."""
    regions.pop(scene_id, None)
    ss.get("map_jump_msg", {}).pop(scene_id, None)
    ss.get("map_region_from_jump", {}).pop(scene_id, None)
    map_link.forget_jump(scene_id)
    gens = ss.setdefault("map_clear_gen", {})
    gens[scene_id] = gens.get(scene_id, 0) + 1


def request_repredict(scene_id: str) -> None:
    """"Predict again with the active model": the overlay's region, TTA, merge and blend (and its A → B cell), with
    the active checkpoint; the TTA widgets are put on the overlay's TTA so that they read what is predicted."""
    old = results.get(scene_id)
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


# ------------------------------------------------------------------------------------------------ import
with st.expander("Import imagery"):
    st.caption("A GeoTIFF in any CRS (reprojected for display; no CRS = pixel space, never placed at a made-up "
               "location), a PNG/JPEG (pixel space) or a folder of Baidu `{x}-{y}.jpeg` tiles (mosaicked and "
               "shifted from BD-09 to WGS-84). Same as `python -m seghz import PATH`.")
    i1, i2, i3 = st.columns([4, 2, 1])
    imp_path = i1.text_input("Local path (file or tile folder)", key="map_import_path")
    imp_name = i2.text_input("Scene name (optional)", key="map_import_name")
    imp_zoom = i3.number_input("Baidu level", 3, 19, 16, key="map_import_zoom",
                               help="Level of the tiles in a tile folder (the seed's folders hold level 16).")
    imp_file = st.file_uploader("…or upload an image", type=["tif", "tiff", "png", "jpg", "jpeg"],
                                key="map_import_upload")
    imp_clicked = st.button("Import", key="map_import_go")
    if imp_clicked and not (imp_path.strip() or imp_file):
        st.error("Give a local path (a file or a tile folder) or upload an image first.")
    elif imp_clicked:
        import tempfile

        try:
            with st.spinner("Importing…"), tempfile.TemporaryDirectory() as tmp:
                src = Path(imp_path.strip()).expanduser() if imp_path.strip() else Path(tmp) / Path(imp_file.name).name
                if not imp_path.strip():
                    src.write_bytes(imp_file.getvalue())
                new_scene, imp_msg = import_imagery(ws, src, name=imp_name.strip() or None, zoom=int(imp_zoom))
            ss["map_import_msg"] = imp_msg
            ss["map_scene"] = new_scene.id
            st.rerun()
        except (SegHZError, OSError, ValueError) as e:
            st.error(f"Import failed: {redact_secrets(str(e))}")
    if ss.get("map_import_msg"):
        st.success(ss["map_import_msg"])

# ------------------------------------------------------------------------------------------------ scene
scenes = sorted(ws.list_scenes(), key=lambda s: (s.created_at, s.id))  # in import order: the demo town first
if not scenes:
    st.warning("The workspace has no scenes. Import imagery with `python -m seghz import`.")
    st.stop()
by_id = {s.id: s for s in scenes}
# a fresh session (reload, new tab, shared link) starts from the URL (?scene=…&region=…, and the settings of an
# "Open on map" it was made after); later runs keep to the session state, and a jump from another page wins
link_jump = map_link.read_link(ws, scenes)
if link_jump:
    apply_jump_widgets(link_jump)
link_box = st.container()  # what the link could not restore
# jump-to from another page: {"scene_id", "bbox": (row0, col0, row1, col1), "layer": "error" | None}
jump = ss.pop("map_jump", None)
if jump and jump.get("scene_id") in by_id:
    ss["map_scene"] = jump["scene_id"]
    ss["map_pending_jump"] = apply_jump_widgets(jump)
if ss.get("map_scene") not in by_id:
    ss.pop("map_scene", None)
c_scene, c_tta, c_opacity = st.columns([3, 2, 2])
sid = c_scene.selectbox(
    "Scene", list(by_id), key="map_scene",
    format_func=lambda i: f"{by_id[i].name} — {by_id[i].width}×{by_id[i].height} px"
    + (", georeferenced" if by_id[i].crs else ", pixel space") + (", synthetic" if by_id[i].synthetic else ""),
)
scene = by_id[sid]
tta_mode = c_tta.radio(
    "Test-time augmentation", list(TTA_CHOICES), format_func=TTA_CHOICES.get, horizontal=True, key="map_tta",
    help="d4 averages the 8 flips/rotations (usually a little better, 8× slower); custom runs the views you pick.",
)
opacity = c_opacity.slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="map_opacity")
tta_choice: str | list[str] | None = tta_mode
if tta_mode == "custom":
    ss.setdefault("map_tta_views", ["identity"])  # (not default=: a jump or "predict again" may set the views)
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
_shown_rec = results.get(sid)
if _shown_rec:
    _res0 = _shown_rec["result"]
    try:
        _same = tta_choice is not None and resolve_tta(tta_choice)[1] == tuple(getattr(_res0, "views", ()) or ("identity",))
    except ValueError:
        _same = False
    if not _same:
        st.caption(f"The overlay below was predicted with TTA **{_res0.tta_description}**; the choice above applies "
                   "to the next prediction.")
st.caption("Layers (each with its legend under the map):")
t1, t2, t4, t5, t3 = st.columns([1, 1, 1, 1, 3])
show_pred = t1.toggle("Prediction", value=True, key="map_show_pred")
show_label = t2.toggle("Label", value=False, key="map_show_label", disabled=not scene.label_path,
                       help=None if scene.label_path else "This scene has no label.")
show_error = t4.toggle("Errors", key="map_show_error", disabled=not scene.label_path,
                       help="Magenta where the prediction differs from the (latest) label." if scene.label_path
                       else "This scene has no label.")
queue = rq.load_queue(ws, scene.id)
if queue is not None and queue.shape != (scene.height, scene.width):
    queue = None
show_sus = t5.toggle("Suspicion", key="map_show_sus", disabled=queue is None,
                     help="The noise queue's per-pixel label suspicion (yellow → red) over the predicted region."
                     if queue is not None else "No noise queue for this scene yet: build one on the Labels page.")
unc_layer = t3.radio(
    "Uncertainty layer", list(UNCERTAINTY_LAYERS), format_func=UNCERTAINTY_LAYERS.get, horizontal=True,
    key="map_uncertainty",
    help="low confidence: top class probability below 90 % (red = least sure); entropy: of the merged class "
         "probabilities, 0..ln C nats; disagreement: fraction of the TTA views whose class differs from the merged "
         "one (needs at least 2 views).",
)
_cell0 = (results.get(sid) or {}).get("cell")
show_cell = False
if _cell0 and scene.label_path:
    show_cell = st.toggle(
        f"{_cell0['true']} → {_cell0['predicted']} errors", key="map_show_cell",
        help=f"Magenta: exactly the pixels labelled {_cell0['true']} and predicted {_cell0['predicted']} (classes of "
             f"the {_cell0.get('scheme')} view), the Evaluate drill-down cell this region was opened from; with "
             "Errors on, the other errors are dimmed.")

_bm_choices = basemap_choices()
_bm_ok = {c.basemap.key: c for c in _bm_choices if c.available}
basemap_key = st.selectbox(
    "Basemap", list(_bm_ok), format_func=lambda k: _bm_ok[k].basemap.label, key="map_basemap",
    disabled=not scene.crs,
    help="Offline shows only the scene's own tiles (no internet needed). Online basemaps need internet."
    if scene.crs else "This scene is in pixel space (no CRS): it has no place on Earth, so no basemap.",
)
if not scene.crs:
    basemap_key = OFFLINE
for _c in _bm_choices:
    if not _c.available:
        st.caption(f"{_c.basemap.label} is unavailable: {_c.hint}.")
if basemap_key in _bm_ok and _bm_ok[basemap_key].key_display:
    st.caption(f"{_bm_ok[basemap_key].basemap.label}: {_bm_ok[basemap_key].hint}.")

image_path = ws.scene_path(scene, "image")
try:
    info = raster_info(image_path)
    pyramid = scene_pyramid(image_path, tile_dir(workspace_tile_key(ws.root), scene.id))
except (SegHZError, OSError, ValueError) as e:
    st.error(f"Cannot show scene '{scene.name}': {e}")
    st.stop()
map_link.show_link_messages(link_box, sid)  # until the analyst picks another scene
pending = ss.pop("map_pending_jump", None)
if pending and pending.get("scene_id") == sid:
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
        ss["map_autopredict"] = jump_autopredict(sid, jck, jtta, jcell)
        map_link.remember_jump(sid, pending)  # the URL carries its checkpoint, TTA and layers too
        ss.setdefault("map_jump_msg", {})[sid] = (
            f"Opened at rows {jw[0]}–{jw[0] + jw[2] - 1}, columns {jw[1]}–{jw[1] + jw[3] - 1}"
            + (f" ({pending['why']})" if pending.get("why") else "")
            + (f"; the region is predicted with **{pending.get('checkpoint_name') or jck}** (`{jck}`), "
               f"{pending.get('checkpoint_role') or 'the evaluated checkpoint'}" if jck
               else "; the region is predicted with the active model")
            + (f", with TTA **{tta_label(*resolve_tta(jtta))}** as in the evaluation" if jtta is not None else "")
            + (f"; the **{jcell['true']} → {jcell['predicted']} errors** layer marks exactly the pixels labelled "
               f"{jcell['true']} and predicted {jcell['predicted']} ({jcell.get('scheme')} classes)" if jcell else "")
            + ((", and the error layer is on (the other errors dimmed)." if jcell else " and the error layer is on.")
               if pending.get("layer") == "error" else ".")
            + (" It replaced the region you had drawn on this scene (and its prediction); draw again to go back."
               if replaced else ""))
    except RegionError as e:
        st.error(f"Cannot open that place on the map: {e}")
if ss.get("map_jump_msg", {}).get(sid) and focus.get(sid):
    st.info(ss["map_jump_msg"][sid])
# the URL follows the scene, its region and the jump's settings (a drawing, a clear or a prediction reruns the
# page, so this sees every change)
link_note = map_link.write_link(sid, regions.get(sid))

active = ws.active_checkpoint()
_link_jump = map_link.pending_link_jump(sid) if regions.get(sid) is not None else None
if _link_jump:  # restored from a link made after "Open on map": its settings are back, its prediction is not
    st.info(map_link.restored_message(_link_jump))
    lp1, lp2 = st.columns([1, 3], vertical_alignment="center")
    lp1.button("Predict as in the link", key="map_link_predict", on_click=request_link_predict, args=(sid,),
               disabled=active is None and not _link_jump.get("checkpoint_id"))
    lp2.caption(map_link.PREDICT_CAPTION)
rec = results.get(sid)
scheme = rec["scheme"] if rec else None
dscheme = screen_scheme(scheme) if scheme is not None else None  # the session's screen colours (files keep the study's)

# ------------------------------------------------------------------------------------------------ overlays
layers = folium.FeatureGroup(name="SegHZ layers", control=False)
label_error = None
pred_shown = label_shown = None
unc_legend = unc_note = None  # the uncertainty layer's legend (HTML) / why it is not drawn
cell = cell_shown = cell_note = None  # the drill-down cell of the prediction, its A → B pixels / why not drawn
draw_cell = False
if rec:
    res = rec["result"]
    pred_shown = mask_outside(res.pred, rec["inside"])
    if res.label is not None:  # the label in the checkpoint's classes (crosswalked when the schemes differ)
        try:
            label_shown = mask_outside(label_for_checkpoint(res.label, scene.scheme, scheme.name), rec["inside"])
        except SchemeMismatchError as e:
            label_error = (f"The scene's label (scheme {scene.scheme}) cannot be compared with the prediction "
                           f"(checkpoint scheme {scheme.name}): {e}")
    if show_label and label_shown is not None:
        add_region_overlay(layers, region_overlay(label_shown, res.window, info, dscheme, opacity), name="Label")
    if show_pred:
        add_region_overlay(layers, region_overlay(pred_shown, res.window, info, dscheme, opacity), name="Prediction")
    run_views = tuple(getattr(res, "views", ()) or ("identity",))  # results from before views were recorded: 1
    n_views = len(run_views)
    if unc_layer == "confidence":
        inside = rec["inside"] if rec["inside"] is not None else np.ones(res.pred.shape, bool)
        add_region_overlay(layers, region_overlay(confidence_classes(res.confidence, inside), res.window, info,
                                                  confidence_scheme(), opacity), name="Low confidence")
        unc_legend = scheme_legend_html(confidence_scheme(), screen=False)  # drawn in its own ramp
    elif unc_layer in ("entropy", "disagreement"):
        values = getattr(res, unc_layer, None)
        if values is None:
            unc_note = f"This prediction has no {unc_layer} layer: press **Predict region** again."
        elif unc_layer == "disagreement" and n_views < 2:
            unc_note = ("View disagreement needs at least 2 TTA views; this prediction ran 1 view "
                        f"({', '.join(run_views)}), so there is nothing to disagree. Choose d4 or a custom set of "
                        "2+ views and predict again.")
        else:
            spec = entropy_spec(scheme.num_classes) if unc_layer == "entropy" else disagreement_spec(n_views)
            add_region_overlay(layers, scalar_overlay(values, res.window, info, spec, opacity, valid=rec["inside"]),
                               name=unc_layer.capitalize())
            unc_legend = spec.legend_html()
    cell = rec.get("cell")
    if cell and label_shown is not None:  # the drilled-into confusion cell, in the view it was counted in
        try:
            cell_shown = drilldown.jump_cell_mask(pred_shown, label_shown, scheme.name, cell)
        except (KeyError, ValueError, SchemeMismatchError) as e:
            cell_note = (f"The {cell.get('true')} → {cell.get('predicted')} layer cannot be drawn for this "
                         f"prediction ({scheme.name} classes): {e}")
    draw_cell = show_cell and cell_shown is not None
    if show_error and label_shown is not None:
        errs = error_classes(pred_shown, label_shown)
        n_err = int((errs == 0).sum())  # before the A → B pixels are taken out of the layer
        if draw_cell:  # A → B in magenta on top, every other error dimmed
            errs[cell_shown] = IGNORE
            add_region_overlay(layers, region_overlay(errs, res.window, info, other_errors_scheme(),
                                                      min(opacity, OTHER_ERROR_ALPHA)), name="Errors")
        else:
            add_region_overlay(layers, region_overlay(errs, res.window, info, error_scheme(), max(opacity, 0.8)),
                               name="Errors")
    if draw_cell:
        add_region_overlay(layers, region_overlay(mask_classes(cell_shown), res.window, info,
                                                  cell_scheme(cell["true"], cell["predicted"]), max(opacity, 0.9)),
                           name="A → B errors")
    if show_sus and queue is not None:
        qr, qc, qh, qw = res.window
        add_region_overlay(layers, scalar_overlay(queue.score[qr:qr + qh, qc:qc + qw], res.window, info,
                                                  suspicion_spec(queue.checkpoint_id), opacity, valid=rec["inside"]),
                           name="Suspicion")
    add_outline(layers, window_bounds(res.window, info), tooltip="predicted window")
geometry = regions.get(sid)
if geometry:  # the drawn region's outline, so it stays visible when the map is re-created (e.g. scene switch)
    try:
        for poly in geometry_pixel_rings(geometry, info, densify=1):
            rows, cols = poly[0]
            lat, lng = pixel_to_latlng(rows, cols, info)
            folium.Polygon([[float(a), float(b)] for a, b in zip(lat, lng)], **REGION_STYLE).add_to(layers)
    except RegionError:
        pass

# ------------------------------------------------------------------------------------------------ stale overlay
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
              on_click=request_repredict, args=(sid,),
              help="The same region, TTA, merge and blending, predicted with the active checkpoint.")

# ------------------------------------------------------------------------------------------------ map
fw = focus.get(sid)
m = make_map(info, draw=True, bounds=window_bounds(fw, info) if fw else None)
if basemap_key != OFFLINE and info.georeferenced:
    _bm = _bm_ok[basemap_key].basemap
    add_basemap(m, _bm)
    if _bm.datum == GCJ02:
        st.warning(f"{_bm.label} tiles are in GCJ-02, the scene and its overlays in WGS-84: they appear shifted by "
                   f"the GCJ-02 offset. {gcj_view_shift(scene_bounds_of(info)).describe()}.")
add_tile_layer(m, pyramid, name="Scene")
out = streamlit_folium.st_folium(
    m, key=f"map_folium__{sid}" + ("__at_{}_{}_{}_{}".format(*fw) if fw else "")
    + (f"__c{ss['map_clear_gen'][sid]}" if ss.get("map_clear_gen", {}).get(sid) else ""), feature_group_to_add=layers, returned_objects=["last_active_drawing", "all_drawings"],
    height=MAP_HEIGHT, use_container_width=True,
) or {}
drawing, drawn = out.get("last_active_drawing"), out.get("all_drawings")
if isinstance(drawn, list) and not drawn:
    if regions.pop(sid, None) is not None:
        ss.get("map_jump_msg", {}).pop(sid, None)  # "Opened at …" described the region just removed
        ss.get("map_region_from_jump", {}).pop(sid, None)
        map_link.forget_jump(sid)
        st.rerun()  # the analyst deleted the shape: drop its outline from the map
elif drawing and drawing != regions.get(sid):
    regions[sid] = drawing
    ss.get("map_jump_msg", {}).pop(sid, None)  # the analyst's own region replaces the one a jump opened
    ss.get("map_region_from_jump", {}).pop(sid, None)
    map_link.forget_jump(sid)
    st.rerun()  # show the region's outline (kept when the map is re-created) and its window
geometry = regions.get(sid)

if rec:
    st.markdown(scheme_legend_html(scheme), unsafe_allow_html=True)
    st.caption(f"Overlay: predicted by **{rec['checkpoint_name']}** (`{rec['checkpoint_id']}`), TTA "
               f"**{rec['result'].tta_description}**"
               + ("" if active is not None and active.id == rec["checkpoint_id"] else " — not the active checkpoint")
               + ".")
    if draw_cell:
        st.markdown(scheme_legend_html(cell_scheme(cell["true"], cell["predicted"]), screen=False),
                    unsafe_allow_html=True)
        st.caption(f"{cell['true']} → {cell['predicted']} errors: {int(cell_shown.sum()):,} px labelled "
                   f"{cell['true']} and predicted {cell['predicted']} ({cell.get('scheme')} classes, as in the "
                   "Evaluate drill-down).")
    if cell_note and show_cell:
        st.warning(cell_note)
    if show_error and label_shown is not None:
        st.markdown(scheme_legend_html(other_errors_scheme() if draw_cell else error_scheme(), screen=False),
                    unsafe_allow_html=True)
        st.caption(f"Error layer: {n_err:,} px where the prediction differs from the label "
                   f"({100 * n_err / max(int(((pred_shown != 255) & (label_shown != 255)).sum()), 1):.1f} % of the "
                   "labelled region).")
    elif show_error and rec:
        st.caption("Error layer: this scene's label cannot be compared with the prediction here.")
    if unc_legend:
        st.markdown(unc_legend, unsafe_allow_html=True)
    if show_sus and queue is not None:
        st.markdown(suspicion_spec(queue.checkpoint_id).legend_html(), unsafe_allow_html=True)
    if unc_note:
        st.info(unc_note)
    res = rec["result"]
    summ = uncertainty_summary(getattr(res, "entropy", None), getattr(res, "disagreement", None), rec["inside"],
                               len(getattr(res, "views", ()) or ("identity",)))
    if summ.pixels:
        ent_txt = (f"mean entropy {summ.mean_entropy:.3f} nats (max ln {scheme.num_classes} = "
                   f"{np.log(scheme.num_classes):.2f})" if summ.mean_entropy is not None else "entropy –")
        dis_txt = (f"views disagree on {summ.disagreeing_fraction * 100:.1f} % of pixels ({summ.n_views} views)"
                   if summ.disagreeing_fraction is not None else
                   "view disagreement: n/a, TTA off (1 view); choose d4 or 2+ custom views")
        st.caption(f"Region uncertainty: {ent_txt} · {dis_txt}.")
if label_error:
    st.error(label_error)

# ------------------------------------------------------------------------------------------------ region
window = None
if geometry is None:
    st.info("Draw a rectangle or polygon on the scene with the tools at the top left of the map, then predict it. "
            f"Regions are capped at {MAX_REGION_PIXELS / 1e6:.1f} Mpx (e.g. 2048×2048 px).")
else:
    try:
        window = check_window(scene, geojson_to_pixel_window(geometry, info, name=scene.name,
                                                          what=region_source(geometry)))
    except RegionError as e:
        st.error(f"Cannot predict this region: {e}")
        big = too_big_window(scene, geometry, info)
        if big is not None and active is not None and tta_choice is not None:
            st.caption(f"It can run as a background job instead ({big[3]}×{big[2]} px, streamed window row by window "
                       "row into a GeoTIFF in the workspace; the app stays usable).")
            if st.button("Predict it as a background job", key="map_bigjob"):
                from seghz.jobs.runner import submit_job

                jid = submit_job(ws, "predict-region", {"scene_id": sid, "window": list(big), "checkpoint_id": active.id,
                                                        "tta": tta_choice})
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
if link_note:
    st.caption(link_note)
if active is None:
    st.warning("No active checkpoint: train one on the Train page (or register one with the CLI) to predict regions.")

clicked = st.button("Predict region", type="primary", key="map_predict",
                    disabled=window is None or active is None or tta_choice is None)
# a request from a jump ("open on map": its checkpoint, TTA and cell) or from "Predict again with the active model"
# (the overlay's region, TTA, merge and blend); the button predicts the drawn region with the active model and the
# choices above
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
            use_ck, chosen = ws.get_checkpoint(auto["checkpoint_id"]), bool(auto.get("chosen", True))
        except SegHZError:
            st.warning(f"Checkpoint `{auto['checkpoint_id']}` is no longer registered: the region is predicted "
                       "with the active one.")
    if auto.get("tta") is not None:
        use_tta = auto["tta"]
    use_merge, use_blend = auto.get("merge", merge), auto.get("blend", blend)
    if auto.get("geometry") is not None:
        use_geometry = auto["geometry"]
        try:
            use_window = check_window(scene, geojson_to_pixel_window(use_geometry, info, name=scene.name,
                                                           what=region_source(use_geometry)))
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

# ------------------------------------------------------------------------------------------------ results
if rec:
    res = rec["result"]
    r, c, h, w = res.window
    georef = res.pixel_area_m2 is not None
    areas = class_areas(pred_shown, list(scheme.names), res.pixel_area_m2)
    table = pd.DataFrame(areas)
    n_valid = int(table["pixels"].sum())
    # m² below 0.01 km² (a 6×5 px region read "0.000 km²", its chart axis "5μ"), km² above
    area_name, per_unit, area_decimals = area_unit(n_valid * res.pixel_area_m2) if georef else ("", 1.0, 0)
    area_col = f"area ({area_name})"
    st.subheader("Class areas")
    where = "the drawn polygon" if rec["inside"] is not None else "the drawn rectangle"
    st.caption(f"Predicted window rows {r}–{r + h - 1}, columns {c}–{c + w - 1} ({w}×{h} px) of {where}, "
               f"with {rec['checkpoint_name']} ({rec['checkpoint_id']}), TTA "
               + (res.tta_description if hasattr(res, "tta_description") else str(res.tta))
               + (f", merge: {MERGE_LABELS.get(res.merge, res.merge)}" if getattr(res, "merge", None) else "")
               + (f", blending: {res.blend}" if getattr(res, "blend", None) else "")
               + ("" if active is not None and active.id == rec["checkpoint_id"] else " — not the active checkpoint")
               + ".")
    k1, k2, k3, k4 = st.columns(4)
    k1.metric("Area", format_area(n_valid * res.pixel_area_m2) if georef else f"{n_valid:,} px")
    k2.metric("Pixels", f"{n_valid:,}")
    valid = pred_shown != 255
    dis = getattr(res, "disagreement", None)
    k3.metric("Mean confidence", f"{float(res.confidence[valid].mean()) * 100:.1f} %" if valid.any() else "–",
              help=None if dis is None or not valid.any() else
              f"TTA views disagree with the consensus on {float(np.nanmean(dis[valid])) * 100:.2f} % of view-pixels.")
    agree = agreement(pred_shown, label_shown) if label_shown is not None else None
    k4.metric("Agreement with label", f"{agree * 100:.1f} %" if agree is not None else "–",
              help="Share of labelled pixels of the region where prediction and (latest) label agree.")

    shown = pd.DataFrame({"class": table["class"]})
    if georef:
        shown[area_col] = table["pixels"] * res.pixel_area_m2 / per_unit
    shown["pixels"] = table["pixels"]
    shown["predicted share (%)"] = table["percent"]
    if label_shown is not None and (label_shown != 255).any():  # the region's class frequencies against its label
        lab = pd.DataFrame(class_areas(label_shown, list(scheme.names), res.pixel_area_m2))
        shown["label share (%)"] = lab["percent"]
        shown["Δ (pp)"] = shown["predicted share (%)"] - shown["label share (%)"]
        shown["bias"] = ["over" if d > 100 * BIAS_THRESHOLD else "under" if d < -100 * BIAS_THRESHOLD else ""
                         for d in shown["Δ (pp)"]]
    # the table over the page's full width (in the left 2/5 next to the chart, "label share", "Δ" and "bias" were
    # off its right edge at 1400 px and long class names were cut), the chart below it
    st.dataframe(
        style_pp(shown), hide_index=True, width="stretch", key="map_area_table",  # Δ: 0.0, never -0.0
        column_config={"class": st.column_config.TextColumn(width="medium"),
                       **({area_col: st.column_config.NumberColumn(format="%.4f" if area_name == "km²" else "%.1f")}
                          if georef else {}),
                       "predicted share (%)": st.column_config.NumberColumn(format="%.1f"),
                       "label share (%)": st.column_config.NumberColumn(format="%.1f"),
                       "Δ (pp)": st.column_config.Column(help="predicted share − label share, percentage points"),
                       "bias": st.column_config.TextColumn(
                           help=f"over / under: the prediction's share is more than {100 * BIAS_THRESHOLD:.0f} pp "
                                "above / below the label's")},
    )
    yname = area_col if georef else "pixels"
    fig = go.Figure(go.Bar(
        x=shown["class"], y=shown[yname], marker_color=dscheme.hex_colors(),
        text=[f"{p:.1f} %" for p in shown["predicted share (%)"]], textposition="outside",
    ))
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), yaxis_title=yname, showlegend=False,
                      title=f"Predicted class {'areas' if georef else 'pixels'}",
                      yaxis_exponentformat="none")  # plain numbers on the axis, never "5μ"
    st.plotly_chart(fig, key="map_area_chart")

    run_views = tuple(getattr(res, "views", ()) or ("identity",))
    stem = export_stem(sid, res.window, rec["checkpoint_id"], res.tta, run_views)  # which model and TTA made it
    d1, d2, d3, d4 = st.columns([1, 1, 1, 1])
    d1.download_button("Download prediction (PNG)", rgba_overlay_png(pred_shown, scheme, 1.0),
                       file_name=f"{stem}_prediction.png", mime="image/png", key="map_dl_png",
                       help="Class colours of the checkpoint's scheme; outside the region is transparent.")
    # the CSV has the table's headers, areas to the m² (6 decimals in km², 2 in m²) and shares to 2 decimals (pp),
    # then the checkpoint and TTA that made the prediction
    csv = shown.round({area_col: area_decimals, "predicted share (%)": 2, "label share (%)": 2, "Δ (pp)": 2})
    csv["checkpoint"] = rec["checkpoint_id"]
    csv["TTA"] = tta_label(res.tta, run_views)
    d2.download_button("Download class areas (CSV)", csv.to_csv(index=False).encode(),
                       file_name=f"{stem}_class_areas.csv", mime="text/csv", key="map_dl_csv")
    d3.download_button("Download prediction (GeoTIFF)",
                       lambda: region_geotiff(scene, res.window, pred_shown, scheme,
                                              tags={"checkpoint": rec["checkpoint_id"],
                                                    "tta": tta_label(res.tta, run_views)}),
                       file_name=f"{stem}_prediction.tif", mime="image/tiff", key="map_dl_tif", on_click="ignore",
                       help="Class indices (255 outside the region) with the scene's CRS and the region's transform, "
                            "colour table in the scheme's colours; opens in QGIS/rasterio.")
    d4.download_button("Download polygons (GeoJSON)",
                       lambda: vectors.to_bytes(vectors.class_geojson(
                           pred_shown, list(scheme.names), vectors.scene_info(scene), offset=res.window[:2],
                           name=f"{scene.name} prediction by {rec['checkpoint_name']} ({rec['checkpoint_id']}), "
                                f"TTA {tta_label(res.tta, run_views)}", scene=scene.id, scheme=scheme.name)),
                       file_name=f"{stem}_prediction.geojson", mime="application/geo+json", key="map_dl_geojson",
                       on_click="ignore",
                       help="One polygon per connected patch of each predicted class, following pixel edges, with "
                            "its class and area: WGS84 on a georeferenced scene (opens in QGIS), pixel coordinates "
                            "on a pixel-space one.")

# ------------------------------------------------------------------------------------------------ big regions
big_jobs = [j for j in ws.list_jobs(limit=30) if j.kind == "predict-region" and (j.config or {}).get("scene_id") == sid]
if big_jobs:
    st.subheader("Large regions predicted in the background")
    for j in big_jobs[:3]:
        res = j.result or {}
        r_, c_, h_, w_ = (j.config or {}).get("window", (0, 0, 0, 0))
        line = f"`{j.id}` · rows {r_}–{r_ + h_ - 1}, columns {c_}–{c_ + w_ - 1} · {j.status} · {100 * float(j.progress or 0):.0f} %"
        if j.status == "done" and res.get("output") and (ws.root / res["output"]).is_file():
            b1, b2 = st.columns([3, 1])
            b1.caption(line)
            b2.download_button("GeoTIFF", (ws.root / res["output"]).read_bytes, file_name=Path(res["output"]).name,
                               mime="image/tiff", key=f"map_bigjob_dl_{j.id}", on_click="ignore")
        else:
            st.caption(line + (f" · {j.message.strip().splitlines()[-1][:200]}" if j.status in ("failed", "died")
                               and j.message else ""))

# ------------------------------------------------------------------------------------------------ fetch
located = bool(getattr(info, "georeferenced", False))  # a pixel-space scene (e.g. an aligned one) has no place
with st.expander("Fetch imagery for this area (online, as a background job)" if located
                 else "Fetch imagery of a new area (online, as a background job)"):
    st.caption("Downloads map tiles over a WGS-84 box into a GeoTIFF in the workspace and imports it as a new scene "
               "(tile cache, retries, polite rate limit; missing tiles are skipped and reported). Needs internet.")
    if not located:
        st.info(f"Scene '{scene.name}' is in pixel space: it has no location on the Earth, so there is no area of "
                   "it to fetch. A WGS-84 box typed here fetches a separate, georeferenced scene that has nothing "
                   "to do with this one (it is not aligned to it).")
    sources = fetch_sources()
    f1, f2 = st.columns([2, 1])
    src_key = f1.selectbox("Source", list(sources), format_func=lambda k: sources[k].label, key="map_fetch_src")
    src = sources[src_key]
    url = src.url
    if src.custom:
        url = f1.text_input("Tile URL template", key="map_fetch_url", placeholder="https://…/{z}/{x}/{y}.png",
                            help="{z} {x} {y} and optionally {s} (subdomain); for Baidu: its tile ids (BD-09).")
    zoom = int(f2.number_input("Zoom level", 1, 21, min(17, src.max_zoom), key="map_fetch_zoom"))
    default_box = fetch_bbox_default(regions.get(sid), info) if located else None  # never from pixel coordinates
    box_txt = st.text_input("Box W,S,E,N (WGS-84 degrees)", value=", ".join(f"{v:.6f}" for v in default_box)
                            if default_box else "", key=f"map_fetch_bbox_{sid}",
                            placeholder="west, south, east, north in degrees, e.g. 120.150, 30.250, 120.160, 30.260",
                            help="Defaults to the drawn region (or the scene) when the scene is georeferenced; "
                                 "empty for a pixel-space scene, which has no location.")
    plan_txt, config = None, None
    try:
        if not url:
            raise ValueError("give a tile URL template")
        if not box_txt.strip():  # nothing typed yet: a hint, not an error
            st.caption("Type the box to fetch as W, S, E, N in WGS-84 degrees to see the tile estimate.")
        else:
            box = parse_bbox(box_txt)
            plan_txt = (plan_baidu if src.baidu else plan_xyz)(box, zoom).describe()
            config = {"url": url, "bbox": list(box), "zoom": zoom, "baidu": src.baidu, "key_env": src.key_env,
                      "subdomains": list(src.subdomains) or None, "name": f"{src.label} z{zoom}"}
    except (SegHZError, ValueError) as e:
        st.caption(f"Not ready: {redact_secrets(str(e))}")
    if plan_txt:
        st.caption(f"Estimate: {plan_txt}")
    if st.button("Fetch as a background job", key="map_fetch_go", disabled=config is None):
        from seghz.jobs.runner import submit_job

        try:
            jid = submit_job(ws, "fetch", config)
            st.success(f"Fetch job {jid} started; the new scene appears in the scene list when it is done.")
        except (SegHZError, ValueError, OSError) as e:
            st.error(f"Could not start the fetch: {redact_secrets(str(e))}")
    for j in [j for j in ws.list_jobs(limit=20) if j.kind == "fetch"][:3]:
        res = j.result or {}
        st.caption(f"`{j.id}` · {j.status} · {100 * float(j.progress or 0):.0f} %"
                   + (f" · scene `{res['scene_id']}`: {res.get('where', '')}" if res.get("scene_id") else "")
                   + (f" · {redact_secrets(j.message.strip().splitlines()[-1][:200])}"
                      if j.status in ("failed", "died") and j.message else ""))
