"""The Map page's map: the scene's tiles, the basemap, the layer toggles, the overlays and their legends.

* The scene is shown from a local tile pyramid (:func:`scene_pyramid`: built on first view into
  ``static/tiles/<workspace key>/<scene>``, served by Streamlit at ``/app/static``); Leaflet and Leaflet.draw come
  from ``static/vendor`` (no internet). An online basemap (:func:`basemap_picker`) only for a georeferenced scene.
* ``st_folium`` returns only the drawings, so panning/zooming never reruns the app (:func:`show_map`). The
  prediction, label, error, A → B, suspicion and uncertainty overlays (:func:`build_overlays`) travel as a
  ``feature_group_to_add``, which streamlit-folium swaps in place: the map is not re-created (view and drawn shapes
  stay) when a prediction arrives or the opacity changes. The kept region's outline goes with them
  (:func:`add_region_outline`), so it stays visible when the map is re-created (e.g. a scene switch).
* One uncertainty layer at a time: low confidence (binned max probability), predictive entropy (0..ln C nats) or
  view disagreement (fraction of TTA views differing from the merged class; needs >= 2 views); each layer's legend
  and the region's uncertainty summary are under the map (:func:`show_legends`).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import folium
import numpy as np
import streamlit as st
import streamlit_folium

from seghz import drilldown
from seghz.classes import IGNORE
from seghz.errors import RegionError, SchemeMismatchError
from seghz.evaluate import label_for_checkpoint
from seghz.geo.basemaps import GCJ02, OFFLINE, add_basemap, basemap_choices, gcj_view_shift
from seghz.geo.regions import (
    OTHER_ERROR_ALPHA,
    UNCERTAINTY_LAYERS,
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
    suspicion_spec,
    uncertainty_summary,
)
from seghz.geo.tiles import (
    GEOREF,
    MAP_MAX_ZOOM,
    build_pyramid,
    pixel_to_latlng,
    region_overlay,
    scalar_overlay,
    window_bounds,
)
from seghz.geo.tiles import scene_bounds as scene_bounds_of
from seghz.geo.webmap import DRAW_COLOR, add_outline, add_region_overlay, add_tile_layer, make_map
from seghz.review import queue as rq
from ui.common import scheme_legend_html

MAP_HEIGHT = 560
REGION_STYLE = {"color": DRAW_COLOR, "weight": 2, "dash_array": "6 4", "fill": False, "interactive": False}


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


@dataclass
class LayerChoice:
    """The layer toggles: prediction, label, errors, suspicion (with the scene's noise queue, None when it has none
    of the scene's size), the uncertainty layer and the A → B errors of a drill-down cell."""

    pred: bool
    label: bool
    error: bool
    sus: bool
    queue: rq.SceneQueue | None
    unc: str
    cell: bool


def layer_toggles(ws: Any, scene: Any, shown_rec: dict | None) -> LayerChoice:
    """The toggles of the layers over the map (the A → B one only for an overlay opened from a drill-down cell)."""
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
    _cell0 = (shown_rec or {}).get("cell")
    show_cell = False
    if _cell0 and scene.label_path:
        show_cell = st.toggle(
            f"{_cell0['true']} → {_cell0['predicted']} errors", key="map_show_cell",
            help=f"Magenta: exactly the pixels labelled {_cell0['true']} and predicted {_cell0['predicted']} (classes "
                 f"of the {_cell0.get('scheme')} view), the Evaluate drill-down cell this region was opened from; with "
                 "Errors on, the other errors are dimmed.")
    return LayerChoice(show_pred, show_label, show_error, show_sus, queue, unc_layer, show_cell)


def basemap_picker(scene: Any) -> tuple[str, dict]:
    """The basemap picker (offline only for a pixel-space scene) and why the unavailable ones are: ``(the chosen
    key, key -> available choice)``."""
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
    return basemap_key, _bm_ok


@dataclass
class Overlays:
    """The overlays of a prediction record: the feature group for the map, the prediction and label shown (outside
    a polygon masked), and what the legends under the map say."""

    layers: folium.FeatureGroup
    pred_shown: np.ndarray | None = None
    label_shown: np.ndarray | None = None
    label_error: str | None = None  # the label cannot be compared with the prediction
    unc_legend: str | None = None  # the uncertainty layer's legend (HTML)
    unc_note: str | None = None  # why the uncertainty layer is not drawn
    cell: dict | None = None  # the drill-down cell of the prediction
    cell_shown: np.ndarray | None = None  # its A → B pixels
    cell_note: str | None = None  # why they are not drawn
    draw_cell: bool = False
    n_err: int = 0  # pixels of the error layer


def build_overlays(rec: dict | None, scene: Any, info: Any, scheme: Any, dscheme: Any, opacity: float,
                   show: LayerChoice) -> Overlays:
    """The layers of the prediction ``rec`` chosen by ``show``, in the screen scheme ``dscheme``."""
    ov = Overlays(folium.FeatureGroup(name="SegHZ layers", control=False))
    layers = ov.layers
    if rec:
        res = rec["result"]
        ov.pred_shown = pred_shown = mask_outside(res.pred, rec["inside"])
        if res.label is not None:  # the label in the checkpoint's classes (crosswalked when the schemes differ)
            try:
                ov.label_shown = mask_outside(label_for_checkpoint(res.label, scene.scheme, scheme.name), rec["inside"])
            except SchemeMismatchError as e:
                ov.label_error = (f"The scene's label (scheme {scene.scheme}) cannot be compared with the prediction "
                                  f"(checkpoint scheme {scheme.name}): {e}")
        label_shown = ov.label_shown
        if show.label and label_shown is not None:
            add_region_overlay(layers, region_overlay(label_shown, res.window, info, dscheme, opacity), name="Label")
        if show.pred:
            add_region_overlay(layers, region_overlay(pred_shown, res.window, info, dscheme, opacity), name="Prediction")
        run_views = tuple(getattr(res, "views", ()) or ("identity",))  # results from before views were recorded: 1
        n_views = len(run_views)
        unc_layer = show.unc
        if unc_layer == "confidence":
            inside = rec["inside"] if rec["inside"] is not None else np.ones(res.pred.shape, bool)
            add_region_overlay(layers, region_overlay(confidence_classes(res.confidence, inside), res.window, info,
                                                      confidence_scheme(), opacity), name="Low confidence")
            ov.unc_legend = scheme_legend_html(confidence_scheme(), screen=False)  # drawn in its own ramp
        elif unc_layer in ("entropy", "disagreement"):
            values = getattr(res, unc_layer, None)
            if values is None:
                ov.unc_note = f"This prediction has no {unc_layer} layer: press **Predict region** again."
            elif unc_layer == "disagreement" and n_views < 2:
                ov.unc_note = ("View disagreement needs at least 2 TTA views; this prediction ran 1 view "
                               f"({', '.join(run_views)}), so there is nothing to disagree. Choose d4 or a custom set "
                               "of 2+ views and predict again.")
            else:
                spec = entropy_spec(scheme.num_classes) if unc_layer == "entropy" else disagreement_spec(n_views)
                add_region_overlay(layers, scalar_overlay(values, res.window, info, spec, opacity, valid=rec["inside"]),
                                   name=unc_layer.capitalize())
                ov.unc_legend = spec.legend_html()
        ov.cell = cell = rec.get("cell")
        if cell and label_shown is not None:  # the drilled-into confusion cell, in the view it was counted in
            try:
                ov.cell_shown = drilldown.jump_cell_mask(pred_shown, label_shown, scheme.name, cell)
            except (KeyError, ValueError, SchemeMismatchError) as e:
                ov.cell_note = (f"The {cell.get('true')} → {cell.get('predicted')} layer cannot be drawn for this "
                                f"prediction ({scheme.name} classes): {e}")
        ov.draw_cell = draw_cell = show.cell and ov.cell_shown is not None
        if show.error and label_shown is not None:
            errs = error_classes(pred_shown, label_shown)
            ov.n_err = int((errs == 0).sum())  # before the A → B pixels are taken out of the layer
            if draw_cell:  # A → B in magenta on top, every other error dimmed
                errs[ov.cell_shown] = IGNORE
                add_region_overlay(layers, region_overlay(errs, res.window, info, other_errors_scheme(),
                                                          min(opacity, OTHER_ERROR_ALPHA)), name="Errors")
            else:
                add_region_overlay(layers, region_overlay(errs, res.window, info, error_scheme(), max(opacity, 0.8)),
                                   name="Errors")
        if draw_cell:
            add_region_overlay(layers, region_overlay(mask_classes(ov.cell_shown), res.window, info,
                                                      cell_scheme(cell["true"], cell["predicted"]), max(opacity, 0.9)),
                               name="A → B errors")
        if show.sus and show.queue is not None:
            qr, qc, qh, qw = res.window
            add_region_overlay(layers, scalar_overlay(show.queue.score[qr:qr + qh, qc:qc + qw], res.window, info,
                                                      suspicion_spec(show.queue.checkpoint_id), opacity,
                                                      valid=rec["inside"]),
                               name="Suspicion")
        add_outline(layers, window_bounds(res.window, info), tooltip="predicted window")
    return ov


def add_region_outline(layers: folium.FeatureGroup, geometry: dict | None, info: Any) -> None:
    """The kept region's outline, so it stays visible when the map is re-created (e.g. scene switch)."""
    if geometry:
        try:
            for poly in geometry_pixel_rings(geometry, info, densify=1):
                rows, cols = poly[0]
                lat, lng = pixel_to_latlng(rows, cols, info)
                folium.Polygon([[float(a), float(b)] for a, b in zip(lat, lng)], **REGION_STYLE).add_to(layers)
        except RegionError:
            pass


def show_map(scene: Any, info: Any, pyramid: Any, focus_window: tuple | None, basemap_key: str, basemaps: dict,
             layers: folium.FeatureGroup) -> dict:
    """The map (opened at ``focus_window`` when an "Open on map" or a link set one), with the draw tools, the basemap
    (``basemap_key`` of the available ``basemaps``; offline: none), the scene's tiles and ``layers``; returns what
    ``st_folium`` returned (the drawings)."""
    ss = st.session_state
    sid, fw = scene.id, focus_window
    m = make_map(info, draw=True, bounds=window_bounds(fw, info) if fw else None)
    if basemap_key != OFFLINE and info.georeferenced:
        _bm = basemaps[basemap_key].basemap
        add_basemap(m, _bm, max_zoom=MAP_MAX_ZOOM[GEOREF])  # shown as deep as the map zooms
        if _bm.datum == GCJ02:
            st.warning(f"{_bm.label} tiles are in GCJ-02, the scene and its overlays in WGS-84: they appear shifted by "
                       f"the GCJ-02 offset. {gcj_view_shift(scene_bounds_of(info)).describe()}.")
    add_tile_layer(m, pyramid, name="Scene")
    return streamlit_folium.st_folium(
        m, key=f"map_folium__{sid}" + ("__at_{}_{}_{}_{}".format(*fw) if fw else "")
        + (f"__c{ss['map_clear_gen'][sid]}" if ss.get("map_clear_gen", {}).get(sid) else ""),
        feature_group_to_add=layers, returned_objects=["last_active_drawing", "all_drawings"],
        height=MAP_HEIGHT, use_container_width=True,
    ) or {}


def show_legends(rec: dict | None, scheme: Any, active: Any, show: LayerChoice, ov: Overlays) -> None:
    """Under the map: the legends of the layers shown, who predicted the overlay, the error and A → B counts, why a
    layer is not drawn, the region's uncertainty summary, and why the label cannot be compared."""
    if rec:
        st.markdown(scheme_legend_html(scheme), unsafe_allow_html=True)
        st.caption(f"Overlay: predicted by **{rec['checkpoint_name']}** (`{rec['checkpoint_id']}`), TTA "
                   f"**{rec['result'].tta_description}**"
                   + ("" if active is not None and active.id == rec["checkpoint_id"] else " — not the active checkpoint")
                   + ".")
        cell, label_shown, pred_shown, n_err = ov.cell, ov.label_shown, ov.pred_shown, ov.n_err
        if ov.draw_cell:
            st.markdown(scheme_legend_html(cell_scheme(cell["true"], cell["predicted"]), screen=False),
                        unsafe_allow_html=True)
            st.caption(f"{cell['true']} → {cell['predicted']} errors: {int(ov.cell_shown.sum()):,} px labelled "
                       f"{cell['true']} and predicted {cell['predicted']} ({cell.get('scheme')} classes, as in the "
                       "Evaluate drill-down).")
        if ov.cell_note and show.cell:
            st.warning(ov.cell_note)
        if show.error and label_shown is not None:
            st.markdown(scheme_legend_html(other_errors_scheme() if ov.draw_cell else error_scheme(), screen=False),
                        unsafe_allow_html=True)
            st.caption(f"Error layer: {n_err:,} px where the prediction differs from the label "
                       f"({100 * n_err / max(int(((pred_shown != 255) & (label_shown != 255)).sum()), 1):.1f} % of the "
                       "labelled region).")
        elif show.error and rec:
            st.caption("Error layer: this scene's label cannot be compared with the prediction here.")
        if ov.unc_legend:
            st.markdown(ov.unc_legend, unsafe_allow_html=True)
        if show.sus and show.queue is not None:
            st.markdown(suspicion_spec(show.queue.checkpoint_id).legend_html(), unsafe_allow_html=True)
        if ov.unc_note:
            st.info(ov.unc_note)
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
    if ov.label_error:
        st.error(ov.label_error)


__all__ = [
    "MAP_HEIGHT",
    "REGION_STYLE",
    "LayerChoice",
    "Overlays",
    "add_region_outline",
    "basemap_picker",
    "build_overlays",
    "layer_toggles",
    "scene_pyramid",
    "show_legends",
    "show_map",
]
