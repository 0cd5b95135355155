"""Evaluate: score a checkpoint on a split of the workspace (effective, i.e. corrected, labels).

Results are cached in the workspace per (checkpoint, split, TTA, data version) and show at once when present.
"""
from __future__ import annotations

import streamlit as st

from seghz import report
from seghz.classes import get_scheme
from seghz.errors import SegHZError
from seghz.evaluate import evaluate_split
from ui.common import page_header, predictor_for, progress_callback, scheme_legend_html

ws = page_header("Evaluate", "Scores of a checkpoint on the labelled scenes of a split, using the latest label versions.")

checkpoints = ws.list_checkpoints()
if not checkpoints:
    st.warning("No checkpoints are registered in this workspace. Train one on the Train page first.")
    st.stop()
by_id = {c.id: c for c in checkpoints}
active = ws.active_checkpoint()
ids = list(by_id)

c1, c2, c3 = st.columns([3, 2, 2])
cid = c1.selectbox(
    "Checkpoint", ids, index=ids.index(active.id) if active and active.id in by_id else 0, key="eval_checkpoint",
    format_func=lambda i: f"{by_id[i].name} ({i})" + ("  — active" if active and i == active.id else ""),
)
split = c2.radio("Split", ["val", "test", "train"], horizontal=True, key="eval_split")
tta = c3.radio("Test-time augmentation", ["none", "d4"], horizontal=True, key="eval_tta",
               help="d4 averages the 8 flips/rotations of every window: usually a little better, 8× slower.")
ck = by_id[cid]

labelled = [s for s in ws.list_scenes(split) if s.label_path]
data_version = ws.data_version(split)
cached = ws.find_evaluation(cid, split, tta != "none", data_version)
result = cached.result if cached is not None and cached.result.get("tta") == tta else None

b1, b2 = st.columns([1, 3])
force = b2.checkbox("Recompute even if a cached result exists", key="eval_force", disabled=result is None)
run = b1.button("Run evaluation", type="primary", key="eval_run", disabled=not labelled)
if not labelled:
    st.info(f"The **{split}** split has no labelled scenes; move scenes into it (CLI) or pick another split.")

if run:
    bar = st.progress(0.0, text=f"evaluating {ck.name} on {len(labelled)} {split} scene(s)…")
    try:
        predictor, _ = predictor_for(ws, cid)
        result = evaluate_split(ws, cid, split, tta, predictor=predictor, progress=progress_callback(bar),
                                use_cache=not force)
        cached = ws.find_evaluation(cid, split, tta != "none", data_version)
    except (SegHZError, ValueError, KeyError, OSError, RuntimeError) as e:
        result = None
        st.error(f"Evaluation failed: {e}")
    finally:
        bar.empty()

if result is None:
    if labelled and not run:
        st.caption("No cached result for this checkpoint, split, TTA and the current labels. Press **Run evaluation**.")
    st.stop()

when = f" · computed {cached.created_at[:19].replace('T', ' ')} UTC" if cached is not None else ""
st.caption(f"{result.get('scenes', '?')} labelled scene(s) of the **{split}** split · TTA {tta} · "
           f"data version `{result.get('data_version', data_version)}`{when}")

h = report.headline(result)
m1, m2, m3, m4 = st.columns(4)
m1.metric("mIoU", report.fmt_pct(h["mIoU"]))
m2.metric("fwIoU", report.fmt_pct(h["fwIoU"]))
m3.metric("OA", report.fmt_pct(h["OA"]))
m4.metric("mean class accuracy", report.fmt_pct(result.get("macc")))

try:
    scheme = get_scheme(ck.scheme)
    colors = scheme.hex_colors() if list(scheme.names) == list(result["classes"]) else None
except KeyError:
    scheme, colors = None, None
if scheme is not None and colors is not None:
    st.markdown(scheme_legend_html(scheme), unsafe_allow_html=True)

mode = st.radio("Confusion matrix", list(report.CONFUSION_MODES), horizontal=True, key="eval_cm_mode",
                format_func=report.CONFUSION_MODE_LABELS.get)
st.plotly_chart(report.confusion_figure(result, mode, colors), key="eval_cm")

st.subheader("Per class")
pct = st.column_config.NumberColumn(format="percent")
st.dataframe(
    report.per_class_table(result), hide_index=True,
    column_config={"IoU": pct, "Acc (recall)": pct, "Precision": pct, "F1": pct,
                   "Support (px)": st.column_config.NumberColumn(format="localized"),
                   "Predicted (px)": st.column_config.NumberColumn(format="localized")},
)
g1, g2 = st.columns(2)
g1.plotly_chart(report.iou_bar_figure(result, colors), key="eval_iou")
g2.plotly_chart(report.frequency_figure(result, colors), key="eval_freq")

per_scene = report.per_scene_table(result, {s.id: s.name for s in labelled})
if len(per_scene) > 1:
    with st.expander(f"Per scene ({len(per_scene)})"):
        st.dataframe(per_scene, hide_index=True, column_config={"mIoU": pct, "fwIoU": pct, "OA": pct})
