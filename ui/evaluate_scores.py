"""Streamlit sections of the Evaluate page that show one evaluation result: the class scheme view and its headline
tiles, the confusion matrix, the per-class tables and charts, the calibration (how far to trust the confidence) and
the class frequencies with their bias warning.

A result is shown in the checkpoint's own scheme or in a coarser one (:class:`View`: the confusion matrix collapsed
through the crosswalk, ``seghz.drilldown``); the calibration stays on the checkpoint's own classes. Score columns of
every table of the page are shown as the metric tiles show them (:func:`pct`).

The widgets keep their values in the browser across runs that do not draw them (``persist_state``, :data:`KEEP`): the
page stops before them while a TTA, split or checkpoint has no cached result, and the browser drops their state; drawn
again, they showed their defaults while the page drew the values it kept (e.g. the scheme view), and the next click
sent the defaults back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

from seghz import drilldown, report
from seghz.classes import get_scheme
from seghz.evaluate import predicted_only_lines
from seghz.metrics import calibration_report, coverage_at
from ui.common import scheme_legend_html, screen_scheme

NA = "–"  # what a table shows for a value that is not available (Streamlit shows "None" unless told)
KEEP = "page"  # persist_state of the section's widgets: kept while the analyst stays on the page


def pct(table: pd.DataFrame | Styler, *columns: str) -> Styler:
    """``table`` (a frame, or a Styler of one) with its score ``columns`` shown as the metric tiles show them:
    :func:`seghz.report.fmt_pct`, rounded to one decimal ("96.2 %" for 0.96186; "–" when missing). Streamlit's own
    "percent" column format with a step of 0.001 truncates instead ("96.1%"), and any column format set in
    ``column_config`` overrides this Styler's text: give these columns none there. A frame's other missing values
    show as "–" (a Styler shows "nan" unless told)."""
    sty = table if isinstance(table, Styler) else table.style.format(na_rep=NA)
    cols = [c for c in columns if c in sty.data.columns]
    return sty.format(report.fmt_pct, subset=cols) if cols else sty


@dataclass(frozen=True)
class View:
    """The scheme a result is shown in: ``view`` (the checkpoint's own scheme or a coarser one), the result collapsed
    to it (``vres``) with its scheme (``vscheme``), class ``names`` and screen ``colors`` (None when they cannot be
    matched), and the checkpoint's own ``scheme`` (``native_ok``: the result's classes are that scheme's)."""

    view: str
    vres: dict
    vscheme: Any
    colors: list | None
    names: list[str]
    scheme: Any
    native_ok: bool


def scheme_view(ck, result: dict) -> View:
    """The class scheme view picker, the headline tiles of the result in that view and the scheme's legend."""
    try:
        scheme = get_scheme(ck.scheme)
        native_ok = list(scheme.names) == list(result["classes"])
    except KeyError:
        scheme, native_ok = None, False
    views = drilldown.scheme_views(ck.scheme) if native_ok else [ck.scheme]
    view = st.selectbox("Class scheme view", views, key="eval_view", disabled=len(views) < 2, persist_state=KEEP,
                        help="Coarser schemes collapse the confusion matrix through the crosswalk (e.g. hz20 → hz14 → "
                             "hz11 → hz7).")
    if view not in views:
        view = views[0]
    vres = drilldown.collapse_result(result, ck.scheme, view) if native_ok else result
    vscheme = get_scheme(view) if native_ok else scheme
    colors = screen_scheme(vscheme).hex_colors() if vscheme is not None and list(vscheme.names) == list(vres["classes"]) \
        else None
    names = list(vres["classes"])

    h = report.headline(vres)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("mIoU", report.fmt_pct(h["mIoU"]))
    m2.metric("fwIoU", report.fmt_pct(h["fwIoU"]))
    m3.metric("OA", report.fmt_pct(h["OA"]))
    m4.metric("mean class accuracy", report.fmt_pct(vres.get("macc")))
    if view != ck.scheme:
        st.caption(f"Scores recomputed on the confusion matrix collapsed from **{ck.scheme}** to **{view}**.")
    stray = predicted_only_lines(vres)  # classes no label holds but the model predicts: IoU 0 in mIoU, and beside it
    if stray:
        st.caption("\n\n".join(stray))
    if colors is not None:
        st.markdown(scheme_legend_html(vscheme), unsafe_allow_html=True)
    return View(view, vres, vscheme, colors, names, scheme, native_ok)


def confusion_matrix(v: View) -> Any:
    """The confusion matrix (counts, recall or precision), its cells selectable; returns the chart's selection event."""
    mode = st.radio("Confusion matrix", list(report.CONFUSION_MODES), horizontal=True, key="eval_cm_mode",
                    persist_state=KEEP, format_func=report.CONFUSION_MODE_LABELS.get)
    cm_fig = report.confusion_figure(v.vres, mode, v.colors, clickable=True)  # clickable: cells are selectable points
    event = st.plotly_chart(cm_fig, key="eval_cm", on_select="rerun", selection_mode="points")
    st.caption("Click a cell to drill down into it (or choose the cell below).")
    return event


def per_class(v: View) -> None:
    """The summary and per-class tables, the IoU bars and the per-class metric bars."""
    vres, colors = v.vres, v.colors
    st.subheader("Per class")
    summary = report.summary_table(vres)
    st.dataframe(pct(summary, *summary.columns), hide_index=True, placeholder=NA)
    st.dataframe(
        pct(report.per_class_table(vres), "IoU", "Acc (recall)", "Precision", "F1"), hide_index=True, placeholder=NA,
        column_config={"Support (px)": st.column_config.NumberColumn(format="localized"),
                       "Predicted (px)": st.column_config.NumberColumn(format="localized")},
    )
    g1, g2 = st.columns(2)
    g1.plotly_chart(report.iou_bar_figure(vres, colors), key="eval_iou")
    g2.plotly_chart(report.class_metric_bars(vres, colors), key="eval_class_bars")


def calibration(ck, result: dict, v: View) -> None:
    """ECE, mean confidence and accuracy; the reliability diagram of all pixels or of one predicted class; what an
    abstain threshold keeps (chart, caption, per-class table). Over the checkpoint's own classes."""
    st.subheader("Calibration: how far to trust the confidence")
    if not result.get("calibration"):
        st.caption("This cached result predates the calibration counts: tick **Recompute even if a cached result "
                   "exists**, then press **Run evaluation**.")
        return
    cal = calibration_report(result["calibration"], list(result["classes"]))
    native = list(result["classes"])
    k1, k2, k3 = st.columns(3)
    k1.metric("ECE (expected calibration error)", "–" if cal["ece"] is None else f"{100 * cal['ece']:.1f} pp",
              help="Pixel-weighted mean gap between the model's confidence and how often the label agrees, over "
                   "10 confidence bins. 0 = the confidence means what it says.")
    k2.metric("mean confidence", report.fmt_pct(cal["confidence"]))
    k3.metric("label agrees (OA)", report.fmt_pct(cal["accuracy"]))
    if v.view != ck.scheme:
        st.caption(f"Calibration is over the checkpoint's own classes (**{ck.scheme}**), not the collapsed view.")
    r1, r2 = st.columns(2)
    cal_cls = r1.selectbox("Reliability of", ["__all__", *[n for n in native if cal["per_class"][n]["pixels"] > 0]],
                           key="eval_cal_class", persist_state=KEEP,
                           format_func=lambda c: "all pixels" if c == "__all__" else f"pixels predicted {c}")
    abstain_pct = r2.slider("Abstain below confidence", 0, 90, 0, 10, key="eval_abstain", format="%d%%",
                            persist_state=KEEP,
                            help="What you keep if you leave the pixels below this confidence for review (on the "
                                 "Map page, the low-confidence layer marks those below 90 %).")
    abstain = abstain_pct / 100
    native_colors = screen_scheme(v.scheme).hex_colors() if v.scheme is not None and v.native_ok else None
    col = None if cal_cls == "__all__" or native_colors is None else native_colors[native.index(cal_cls)]
    f1c, f2c = st.columns(2)
    f1c.plotly_chart(report.reliability_figure(cal, None if cal_cls == "__all__" else cal_cls, col),
                     key="eval_reliability")
    f2c.plotly_chart(report.coverage_figure(cal, abstain), key="eval_coverage")
    row = coverage_at(cal, abstain)
    st.caption(f"Abstaining below {abstain:.0%} keeps {report.fmt_pct(row['kept'])} of the labelled pixels; the label "
               f"agrees with {report.fmt_pct(row['accuracy'])} of them (all pixels: {report.fmt_pct(cal['accuracy'])}).")
    st.dataframe(pct(report.calibration_table(cal, abstain), "mean confidence", "label agrees", "kept",
                     "label agrees (kept)").format("{:.1f}", subset=["ECE (pp)"], na_rep=NA),
                 hide_index=True, key="eval_cal_table", placeholder=NA,
                 column_config={"predicted (px)": st.column_config.NumberColumn(format="localized")})


def class_frequencies(v: View, labelled: list, split: str) -> None:
    """Labelled and predicted class shares of the split or of one of its ``labelled`` scenes, with the classes whose
    shares differ by more than the bias threshold, and the per-scene scores when there are several scenes."""
    vres, colors = v.vres, v.colors
    st.subheader("Class frequencies")
    per_scene = report.per_scene_table(vres, {s.id: s.name for s in labelled})
    scene_names = dict(zip(per_scene["scene"], per_scene["name"]))
    f1, f2 = st.columns([3, 2])
    scope = f1.selectbox("Scope", ["__split__", *scene_names], key="eval_freq_scope", persist_state=KEEP,
                         format_func=lambda s: f"whole {split} split" if s == "__split__"
                         else f"scene {scene_names.get(s, s)}")
    thr = f2.slider("Bias threshold (percentage points)", 0.5, 20.0, 100 * report.BIAS_THRESHOLD, 0.5,
                    key="eval_bias_thr", persist_state=KEEP)
    freq = report.frequency_table(vres, thr / 100, scene=None if scope == "__split__" else scope)
    if scope == "__split__":
        st.plotly_chart(report.frequency_figure(vres, colors), key="eval_freq")
    else:
        st.plotly_chart(report.frequency_figure({"classes": v.names, "confusion": vres["per_scene"][scope]}, colors),
                        key="eval_freq")
    biased = freq.loc[freq["bias"] != "", "class"].tolist()
    if biased:
        st.warning("Bias: predicted share differs from labelled share by more than "
                   f"{thr:g} pp for " + ", ".join(f"**{c}** ({b})"
                                                 for c, b in freq.loc[freq["bias"] != "", ["class", "bias"]].values))
    st.dataframe(pct(report.style_pp(freq), "labelled share", "predicted share"),  # Δ: 0.0, never -0.0
                 hide_index=True, key="eval_freq_table", placeholder=NA,
                 column_config={"labelled (px)": st.column_config.NumberColumn(format="localized"),
                                "predicted (px)": st.column_config.NumberColumn(format="localized")})

    # the per-scene scores are under the headline (ui.evaluate_jobs.per_scene_scores), not repeated here
