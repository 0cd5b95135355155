"""The Map page's results: the class areas of the predicted region and its exports, and the large regions predicted
in the background.

Areas read in m² below 1 km², in km² above (:func:`seghz.infer.region.area_unit`), in pixels on a pixel-space
scene; next to the region's label the table shows the label's shares, the difference and the bias flags. The export
file names and the class-area CSV name the checkpoint and TTA that made the prediction
(:func:`seghz.infer.region.export_stem`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from seghz.geo import vectors
from seghz.geo.tiles import rgba_overlay_png
from seghz.infer.region import area_unit, class_areas, export_stem, format_area, region_geotiff, tta_label
from seghz.labels_edit import agreement
from seghz.report import BIAS_THRESHOLD, style_pp
from ui.map_predict import MERGE_LABELS


def show_class_areas(scene: Any, rec: dict, pred_shown: np.ndarray, label_shown: np.ndarray | None, scheme: Any,
                     dscheme: Any, active: Any) -> None:
    """The predicted window and who predicted it, the area, confidence and agreement, the class-area table (against
    the label), its chart and the downloads (PNG, CSV, GeoTIFF, GeoJSON)."""
    sid = scene.id
    res = rec["result"]
    r, c, h, w = res.window
    georef = res.pixel_area_m2 is not None
    areas = class_areas(pred_shown, list(scheme.names), res.pixel_area_m2)
    table = pd.DataFrame(areas)
    n_valid = int(table["pixels"].sum())
    # m² below 1 km² (a 6×5 px region read "0.000 km²", its chart axis "5μ"; 15,625 m² read "0.0156 km²"), km² above
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
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 30, "b": 10}, yaxis_title=yname, showlegend=False,
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
    if georef:  # fixed decimals: a small class in km² was written "6.6e-05"
        csv[area_col] = [f"{v:.{area_decimals}f}" for v in csv[area_col]]
    csv["checkpoint"] = rec["checkpoint_id"]
    csv["TTA"] = tta_label(res.tta, run_views)
    d2.download_button("Download class areas (CSV)", csv.to_csv(index=False).encode(),
                       file_name=f"{stem}_class_areas.csv", mime="text/csv", key="map_dl_csv")
    d3.download_button("Download prediction (GeoTIFF)",
                       lambda: region_geotiff(scene, res.window, pred_shown, scheme,
                                              tags={"checkpoint": rec["checkpoint_id"],
                                                    "tta": tta_label(res.tta, run_views)}),
                       file_name=f"{stem}_prediction.tif", mime="image/tiff", key="map_dl_tif", on_click="ignore",
                       help="Class indices (255 outside the region) with the scene's CRS and the region's transform "
                            "(on a pixel-space scene: column, −row, as the GeoJSON), colour table in the scheme's "
                            "colours; opens in QGIS/rasterio.")
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


def show_big_jobs(ws: Any, scene_id: str) -> None:
    """The latest regions of the scene predicted as background jobs (past the inline cap), with their GeoTIFFs."""
    sid = scene_id
    big_jobs = [j for j in ws.list_jobs(limit=30) if j.kind == "predict-region" and (j.config or {}).get("scene_id") == sid]
    if big_jobs:
        st.subheader("Large regions predicted in the background")
        for j in big_jobs[:3]:
            res = j.result or {}
            r_, c_, h_, w_ = (j.config or {}).get("window", (0, 0, 0, 0))
            line = (f"`{j.id}` · rows {r_}–{r_ + h_ - 1}, columns {c_}–{c_ + w_ - 1} · {j.status} · "
                    f"{100 * float(j.progress or 0):.0f} %")
            if j.status == "done" and res.get("output") and (ws.root / res["output"]).is_file():
                b1, b2 = st.columns([3, 1])
                b1.caption(line)
                b2.download_button("GeoTIFF", (ws.root / res["output"]).read_bytes, file_name=Path(res["output"]).name,
                                   mime="image/tiff", key=f"map_bigjob_dl_{j.id}", on_click="ignore")
            else:
                st.caption(line + (f" · {j.message.strip().splitlines()[-1][:200]}" if j.status in ("failed", "died")
                                   and j.message else ""))


__all__ = ["show_big_jobs", "show_class_areas"]
