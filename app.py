"""SegHZ home page: what is in the workspace, the active model, and where to go next.

Run from the repository root: ``streamlit run app.py`` (the workspace is ``$SEGHZ_WORKSPACE`` or ./workspace;
a fresh one is filled with the synthetic demo scenes on first start).
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import streamlit as st

st.set_page_config(page_title="SegHZ", layout="wide")

from seghz.report import checkpoint_val_metrics, fmt_pct, per_class_iou_table  # noqa: E402
from ui.common import has_synthetic_scenes, metric_row, page_header, scheme_legend_html  # noqa: E402

HERE = Path(__file__).resolve().parent
PAGES = (  # the analyst's daily loop, in order
    ("pages/1_Map.py", "1. Map — draw a region and predict it with test-time augmentation", ":material/map:"),
    ("pages/2_Evaluate.py", "2. Evaluate — where the model and the labels disagree, class by class",
     ":material/bar_chart:"),
    ("pages/3_Labels.py", "3. Labels — work through the noise queue and paint corrections", ":material/brush:"),
    ("pages/4_Train.py", "4. Train — retrain (or refit the head) on the corrected labels, pass the gate, promote",
     ":material/model_training:"),
    ("pages/5_Align.py", "Align — bring in a label map that does not line up with its imagery yet",
     ":material/straighten:"),
)
# icons: Material Symbols, whose font Streamlit serves itself (emoji need a system emoji font, which a bare Linux
# or an offline machine may lack: they showed as empty boxes in headless Chromium)
IMPORT_CMD = "python -m seghz import --images DIR --labels DIR --scheme gid15 --target-scheme hz7"

ws = page_header("SegHZ", "Land-cover segmentation workbench: evaluate, correct labels, retrain.", set_config=False)
summary = ws.summary()
scenes = ws.list_scenes()

if has_synthetic_scenes(ws):
    st.info(
        "**This workspace holds SYNTHETIC DEMO DATA.** The demo scenes are procedurally generated hz7 "
        "town and farmland scenes (water, open area, green land, forest, glass roofs, buildings, roads) "
        "with exact labels by construction — they are not real imagery. They are placed at a nominal spot "
        "west of Hangzhou only so the map has somewhere to show them. Scores on them say nothing about "
        "real-world accuracy; import real data (below) for that."
    )

st.subheader("Start here")
st.caption("The daily loop: each page hands over to the next (Open on map, Send to label review, Retrain from the "
           "corrections). Enter your analyst name in the sidebar first: every label edit records it.")
for path, label, icon in PAGES:
    if (HERE / path).is_file():
        st.page_link(path, label=label, icon=icon)
    else:
        st.markdown(f"{icon} {label} — _not installed in this copy (`{path}` is missing)_")

st.subheader("Workspace")
sc, jobs = summary["scenes"], summary["jobs"]
metric_row([("Scenes", sc["total"]), ("train", sc["train"]), ("val", sc["val"]), ("test", sc["test"]),
            ("unassigned", sc["none"]), ("Label versions saved", summary["label_versions"])])
metric_row([("Checkpoints", summary["checkpoints"]), ("Jobs running", jobs["running"]), ("Jobs queued", jobs["queued"]),
            ("Jobs done", jobs["done"]), ("Jobs failed / died", jobs["failed"] + jobs["died"]),
            ("Jobs cancelled", jobs["cancelled"])])

if scenes:
    with st.expander(f"Scenes ({len(scenes)})"):
        st.dataframe(
            pd.DataFrame([
                {"scene": s.id, "name": s.name, "split": s.split, "size": f"{s.width}×{s.height}", "scheme": s.scheme,
                 "labelled": bool(s.label_path), "label version": ws.latest_label_version(s.id),
                 "georeferenced": s.crs is not None, "synthetic": s.synthetic}
                for s in scenes
            ]),
            hide_index=True,
        )
else:
    st.warning("The workspace has no scenes yet. Import imagery with the command below.")

st.subheader("Active checkpoint")
active = ws.active_checkpoint()
if active is None:
    st.warning("No checkpoint is active. Train one on the Train page, or register one with the CLI.")
else:
    m = checkpoint_val_metrics(active.metrics)
    left, right = st.columns([3, 2])
    with left:
        st.markdown(
            f"**{html.escape(active.name)}** (`{active.id}`)  \n"
            f"{html.escape(active.arch)} / {html.escape(active.encoder)} · scheme **{html.escape(active.scheme)}** · "
            f"created {html.escape(active.created_at[:19].replace('T', ' '))} UTC"
            + (f" · fine-tuned from `{active.parent_id}`" if active.parent_id else "")
            + (f"  \n_{html.escape(active.note)}_" if active.note else "")
        )
        mc = st.columns(3)
        mc[0].metric("val mIoU", fmt_pct(m["miou"]))
        mc[1].metric("val fwIoU", fmt_pct(m["fwiou"]))
        mc[2].metric("val OA", fmt_pct(m["oa"]))
        st.caption("Validation scores recorded when the checkpoint was trained (on its own validation data). "
                   "Re-score it on this workspace on the Evaluate page.")
        try:
            st.markdown(scheme_legend_html(active.scheme), unsafe_allow_html=True)
        except KeyError:
            pass
    with right:
        table = per_class_iou_table(active.metrics)
        if table.empty:
            st.caption("No per-class validation IoU stored with this checkpoint.")
        else:
            st.dataframe(
                table, hide_index=True,
                column_config={"IoU": st.column_config.ProgressColumn("val IoU", format="percent", min_value=0.0, max_value=1.0)},
            )

st.subheader("Import real data")
st.markdown(
    "Bring in image/label folders (paired by file name; labels as id masks or RGB palette masks). "
    "Scenes are copied into the workspace and split into train/val/test; original labels are never modified:"
)
st.code(IMPORT_CMD, language="bash")
st.caption("Single GeoTIFFs: `python -m seghz import --image FILE.tif [--label LABEL.png] --scheme hz7 --split val`. "
           "To import into another workspace, set SEGHZ_WORKSPACE or put `--workspace DIR` before `import`; "
           "see `python -m seghz import --help`.")
