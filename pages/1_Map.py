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
  :func:`seghz.drilldown.jump_to_query`); drawing, clearing or predicting otherwise drops them, and so does
  setting the TTA, merge or blending away from the jump's (setting them back restores them). A link with them
  puts the layers, checkpoint and TTA back and offers "Predict as in the link" (the prediction is not in the URL);
  an unknown checkpoint, TTA, scheme or class: a warning naming the parameter, and the plain region. See
  :mod:`ui.map_link`.
* "Open on map" from another page (``map_jump``, see :func:`seghz.drilldown.map_jump`) predicts the window with the
  checkpoint and the TTA it names (the radio is put on that TTA), and a drill-down cell (true A, predicted B, in
  the Evaluate scheme view) gets an "A → B errors" layer of exactly those pixels, on by default (other errors
  dimmed when the error layer is on too). A checkpoint it names that is no longer registered: the active one
  predicts, the "Opened at" message says so and a warning stays until the analyst draws, clears or picks another
  scene (the URL has no ``ckpt`` then); a scene that is not in the workspace: a warning naming it, the page as usual.
* An overlay made by a checkpoint that is not the active one is flagged above the map, naming its checkpoint and
  TTA, with "Predict again with the active model" (same region, TTA, merge and blending).
* Small regions read in m² (below 0.01 km²); export file names and the class-area CSV name the checkpoint and TTA.

The page lays out the sections; their code is in :mod:`ui.map_imagery` (import, fetch), :mod:`ui.map_predict` (TTA
widgets, prediction requests and runs), :mod:`ui.map_region` (the region: jump, drawing, check, clear),
:mod:`ui.map_layers` (tiles, basemap, layer toggles, overlays, legends), :mod:`ui.map_results` (class areas, exports,
background jobs) and :mod:`ui.map_link` (the URL).
"""
from __future__ import annotations

import streamlit as st

from seghz.data.io import raster_info
from seghz.errors import SegHZError
from seghz.geo.regions import workspace_tile_key
from seghz.geo.tiles import tile_dir
from ui import map_imagery, map_layers, map_link, map_predict, map_region, map_results
from ui.common import page_header, screen_scheme

ws = page_header("Map", "Browse a scene, draw a rectangle or polygon on it and predict that region with the active "
                        "model; class areas in m² or km² (georeferenced scenes) or pixels.")
ss = st.session_state
regions: dict = ss.setdefault("map_regions", {})  # scene id -> drawn GeoJSON Feature
results: dict = ss.setdefault("map_results", {})  # scene id -> last prediction record
focus: dict = ss.setdefault("map_focus", {})  # scene id -> window the map opened at ("open on map" from other pages)

# ------------------------------------------------------------------------------------------------ import
map_imagery.import_panel(ws)

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
    map_predict.apply_jump_widgets(link_jump)
link_box = st.container()  # what the link could not restore
# jump-to from another page: {"scene_id", "bbox": (row0, col0, row1, col1), "layer": "error" | None}
map_region.take_jump(by_id)
if ss.get("map_scene") not in by_id:
    ss.pop("map_scene", None)
c_scene, c_tta, c_opacity = st.columns([3, 2, 2])
sid = c_scene.selectbox(
    "Scene", list(by_id), key="map_scene",
    format_func=lambda i: f"{by_id[i].name} — {by_id[i].width}×{by_id[i].height} px"
    + (", georeferenced" if by_id[i].crs else ", pixel space") + (", synthetic" if by_id[i].synthetic else ""),
)
scene = by_id[sid]
tta_mode = map_predict.tta_radio(c_tta)
opacity = c_opacity.slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="map_opacity")
tta_choice, merge, blend = map_predict.tta_widgets(tta_mode, results.get(sid))
show = map_layers.layer_toggles(ws, scene, results.get(sid))
basemap_key, basemaps = map_layers.basemap_picker(scene)

image_path = ws.scene_path(scene, "image")
try:
    info = raster_info(image_path)
    pyramid = map_layers.scene_pyramid(image_path, tile_dir(workspace_tile_key(ws.root), scene.id))
except (SegHZError, OSError, ValueError) as e:
    st.error(f"Cannot show scene '{scene.name}': {e}")
    st.stop()
map_link.show_link_messages(link_box, sid)  # until the analyst picks another scene
active = ws.active_checkpoint()
map_region.open_pending_jump(ws, scene, info, active)
# the URL follows the scene, its region and the jump's settings while the TTA widgets still match them (a drawing, a
# clear or a prediction reruns the page, so this sees every change)
link_note = map_link.write_link(sid, regions.get(sid), (tta_choice, merge, blend))

map_predict.show_link_prompt(sid, regions.get(sid), active)  # restored from a link made after "Open on map"
rec = results.get(sid)
scheme = rec["scheme"] if rec else None
dscheme = screen_scheme(scheme) if scheme is not None else None  # the session's screen colours (files keep the study's)

# ------------------------------------------------------------------------------------------------ overlays
overlays = map_layers.build_overlays(rec, scene, info, scheme, dscheme, opacity, show)
map_layers.add_region_outline(overlays.layers, regions.get(sid), info)
map_predict.show_stale_overlay(sid, rec, active)

# ------------------------------------------------------------------------------------------------ map
out = map_layers.show_map(scene, info, pyramid, focus.get(sid), basemap_key, basemaps, overlays.layers)
map_region.take_drawing(sid, out)
geometry = regions.get(sid)
map_layers.show_legends(rec, scheme, active, show, overlays)

# ------------------------------------------------------------------------------------------------ region
window = map_region.region_panel(ws, scene, info, geometry, rec, active, tta_choice)
if link_note:
    st.caption(link_note)
if active is None:
    st.warning("No active checkpoint: train one on the Train page (or register one with the CLI) to predict regions.")

clicked = st.button("Predict region", type="primary", key="map_predict",
                    disabled=window is None or active is None or tta_choice is None)
map_predict.predict(ws, scene, info, active=active, tta_choice=tta_choice, merge=merge, blend=blend,
                    geometry=geometry, window=window, clicked=clicked)

# ------------------------------------------------------------------------------------------------ results
if rec:
    map_results.show_class_areas(scene, rec, overlays.pred_shown, overlays.label_shown, scheme, dscheme, active)
map_results.show_big_jobs(ws, sid)

# ------------------------------------------------------------------------------------------------ fetch
map_imagery.fetch_panel(ws, scene, info, regions.get(sid))
