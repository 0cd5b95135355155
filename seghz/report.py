"""Numbers -> tables and figures for the app: evaluations, checkpoints, training jobs (no Streamlit here).

Everything takes plain data (an evaluation result dict from :func:`seghz.evaluate.evaluate_split`, a
checkpoint's ``metrics`` dict, rows of :meth:`seghz.store.Workspace.job_metrics`, jobs) and returns a
pandas DataFrame or a plotly Figure, so the pages stay thin and these are unit-testable.
"""
from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from seghz.metrics import as_float as _num
from seghz.metrics import coverage_at, fmt_pct, signed_pp

CONFUSION_MODES = ("counts", "recall", "precision")
CONFUSION_MODE_LABELS = {
    "counts": "Pixel counts",
    "recall": "Row-normalised (recall)",
    "precision": "Column-normalised (precision)",
}
FALLBACK_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


def _colors(n: int, colors: Sequence[str] | None) -> list[str]:
    if colors is not None and len(colors) >= n:
        return list(colors)[:n]
    return [FALLBACK_COLORS[i % len(FALLBACK_COLORS)] for i in range(n)]


# ---------------------------------------------------------------------------------------------- evaluations


def normalize_confusion(cm: Sequence[Sequence[float]] | np.ndarray, mode: str = "counts") -> np.ndarray:
    """The confusion matrix (rows = label, columns = prediction) as shown.

    ``"counts"``: as is (float); ``"recall"``: each row divided by its sum (the row's diagonal cell is
    the class's recall); ``"precision"``: each column divided by its sum. Empty rows/columns give 0.

    Raises:
        ValueError: For an unknown mode or a matrix that is not square.
    """
    m = np.asarray(cm, np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
    if mode == "counts":
        return m
    if mode == "recall":
        s = m.sum(1, keepdims=True)
    elif mode == "precision":
        s = m.sum(0, keepdims=True)
    else:
        raise ValueError(f"unknown confusion mode {mode!r}; use one of {CONFUSION_MODES}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, m / np.where(s > 0, s, 1), 0.0)


def color_chip_label(name: str, color: str | None) -> str:
    """Plotly tick text: a small square in the class colour, then the class name."""
    n = html.escape(str(name))
    return n if not color else f"<span style='color:{color}'>■</span> {n}"


def share_text(share: float, count: float, total: float) -> str:
    """A share of a confusion row/column as the matrix shows it (``"12.3%"``), never ``"0.0%"`` for a cell that
    has pixels (``"<0.1%"``) nor ``"100.0%"`` for one that is not the whole row/column (``">99.9%"``)."""
    txt = f"{100 * share:.1f}%"
    if count > 0 and txt == "0.0%":
        return "<0.1%"
    if count < total and txt == "100.0%":
        return ">99.9%"
    return txt


def confusion_figure(result: dict, mode: str = "counts", colors: Sequence[str] | None = None,
                     clickable: bool = False) -> go.Figure:
    """Heatmap of an evaluation's confusion matrix; classes in scheme order on both axes, each tick
    label led by a square in the class colour. Rows (y) = label, columns (x) = prediction.

    Cells show pixel counts or the share of the row/column (:func:`share_text`); the hover names both classes and
    gives the pixel count and the share. ``clickable`` adds a layer of invisible markers on the cell centres
    carrying the hover (the heatmap's own is then off): Streamlit reports clicks only on selectable traces, and a
    heatmap is not one, so without it clicking a cell in the browser did nothing."""
    names = list(result["classes"])
    cm = np.asarray(result["confusion"], np.float64)
    z = normalize_confusion(cm, mode)
    cols = _colors(len(names), colors)
    ticks = [color_chip_label(n, c) for n, c in zip(names, cols)]
    rows, columns = cm.sum(1), cm.sum(0)
    esc = [html.escape(str(n)) for n in names]
    n = len(names)
    if mode == "counts":
        text = [[f"{int(v):,}" for v in row] for row in cm]
        hover = [[f"label {esc[i]}<br>predicted {esc[j]}<br>{int(cm[i, j]):,} px"
                  + (f" ({share_text(cm[i, j] / rows[i], cm[i, j], rows[i])} of the label row)" if rows[i] > 0 else "")
                  for j in range(n)] for i in range(n)]
        cbar = "pixels"
    else:
        total = rows[:, None] if mode == "recall" else columns[None, :]
        total = np.broadcast_to(total, cm.shape)
        what = "of the label row" if mode == "recall" else "of the prediction column"
        text = [[share_text(z[i, j], cm[i, j], total[i, j]) for j in range(n)] for i in range(n)]
        hover = [[f"label {esc[i]}<br>predicted {esc[j]}<br>{text[i][j]} {what}<br>"
                  f"{int(cm[i, j]):,} of {int(total[i, j]):,} px" for j in range(n)] for i in range(n)]
        cbar = "share"
    fig = go.Figure(
        go.Heatmap(
            z=z, x=list(range(n)), y=list(range(n)), text=text, texttemplate="%{text}", customdata=hover,
            hovertemplate="%{customdata}<extra></extra>", colorscale="Blues", colorbar={"title": {"text": cbar}},
            zmin=0, zmax=(None if mode == "counts" else 1.0),
        )
    )
    if clickable:
        fig.add_trace(go.Scatter(
            x=[j for i in range(n) for j in range(n)], y=[i for i in range(n) for j in range(n)],
            customdata=[hover[i][j] for i in range(n) for j in range(n)], hovertemplate="%{customdata}<extra></extra>",
            mode="markers", marker={"size": 28, "opacity": 0, "symbol": "square"}, showlegend=False,
        ))
        fig.data[0].update(hoverinfo="skip", hovertemplate=None)
    axis = {"tickmode": "array", "tickvals": list(range(n)), "ticktext": ticks}
    fig.update_xaxes(title_text="predicted class", side="bottom", **axis)
    fig.update_yaxes(title_text="label (ground truth)", autorange="reversed", **axis)
    fig.update_layout(
        title=f"Confusion matrix — {CONFUSION_MODE_LABELS.get(mode, mode)}",
        height=max(380, 60 + 42 * n), margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def noise_matrix_figure(names: Sequence[str], transition, counts, colors: Sequence[str] | None = None) -> go.Figure:
    """Heatmap of a label-noise matrix counted on reviewed pixels (:class:`seghz.review.noise_matrix.ReviewNoise`):
    rows = the class an analyst vouched for, columns = the label it had been given; each cell shows
    ``T[i, j]`` (the share forward correction uses) and the reviewed pixels behind it. Only classes that occur in
    the reviews are shown."""
    t, n = np.asarray(transition, np.float64), np.asarray(counts, np.int64)
    keep = np.flatnonzero((n.sum(0) + n.sum(1)) > 0)
    if keep.size == 0:
        keep = np.arange(len(names))
    cols = _colors(len(names), colors)
    ticks = [color_chip_label(names[i], cols[i]) for i in keep]
    z = t[np.ix_(keep, keep)]
    text = [[f"{100 * z[a, b]:.0f}%<br>{int(n[i, j]):,} px" for b, j in enumerate(keep)] for a, i in enumerate(keep)]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(keep.size)), y=list(range(keep.size)), text=text, texttemplate="%{text}",
        hovertemplate="reviewed as %{y}<br>given as %{x}<br>%{text}<extra></extra>", colorscale="Blues",
        zmin=0, zmax=1, colorbar={"title": {"text": "P(given | reviewed)"}}))
    axis = {"tickmode": "array", "tickvals": list(range(keep.size)), "ticktext": ticks}
    fig.update_xaxes(title_text="label as given", side="bottom", **axis)
    fig.update_yaxes(title_text="label as reviewed (true class)", autorange="reversed", **axis)
    fig.update_layout(title="Label noise measured on your reviewed pixels", height=max(340, 60 + 48 * keep.size),
                      margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


def per_class_table(result: dict) -> pd.DataFrame:
    """One row per class (scheme order): IoU, Acc (recall), precision, F1, support and predicted pixels,
    and whether the class occurs in labels or predictions at all."""
    rows = []
    pc = result.get("per_class", {})
    for name in result["classes"]:
        d = pc.get(name, {})
        rows.append({
            "class": name,
            "IoU": _num(d.get("iou")),
            "Acc (recall)": _num(d.get("acc")),
            "Precision": _num(d.get("precision")),
            "F1": _num(d.get("f1")),
            "Support (px)": int(d.get("support", 0) or 0),
            "Predicted (px)": int(d.get("predicted", 0) or 0),
        })
    df = pd.DataFrame(rows)
    for c in ("IoU", "Acc (recall)", "Precision", "F1"):
        df[c] = df[c].astype("float64")
    return df


def iou_bar_figure(result: dict, colors: Sequence[str] | None = None) -> go.Figure:
    """Per-class IoU bars in the class colours (absent classes shown as empty bars)."""
    names = list(result["classes"])
    cols = _colors(len(names), colors)
    iou = [_num(result.get("per_class", {}).get(n, {}).get("iou")) for n in names]
    fig = go.Figure(
        go.Bar(
            x=names, y=[0 if v is None else v for v in iou], marker_color=cols,
            text=["absent" if v is None else f"{100 * v:.1f}%" for v in iou], textposition="outside",
            hovertemplate="%{x}: %{text}<extra></extra>",
        )
    )
    miou = _num(result.get("miou"))
    title = "IoU per class"
    if miou is not None:  # the value goes in the title: a label on the line sat on the last bar's text
        fig.add_hline(y=miou, line_dash="dash", line_color="#444")
        title += f" · mIoU {100 * miou:.1f}% (dashed line)"
    fig.update_layout(title=title, yaxis={"range": [0, 1.08], "tickformat": ".0%", "title": "IoU"},
                      height=380, margin={"l": 10, "r": 10, "t": 50, "b": 10}, showlegend=False)
    return fig


def frequency_figure(result: dict, colors: Sequence[str] | None = None) -> go.Figure:
    """Grouped bars: share of pixels of each class in the labels vs in the predictions."""
    names = list(result["classes"])
    cm = np.asarray(result["confusion"], np.float64)
    total = max(cm.sum(), 1.0)
    freq_label = result.get("freq_label") or (cm.sum(1) / total).tolist()
    freq_pred = result.get("freq_pred") or (cm.sum(0) / total).tolist()
    cols = _colors(len(names), colors)
    fig = go.Figure([
        go.Bar(name="label", x=names, y=freq_label, marker={"color": cols, "line": {"color": "#333", "width": 1}},
               hovertemplate="%{x}: %{y:.1%} of labelled pixels<extra>label</extra>"),
        go.Bar(name="prediction", x=names, y=freq_pred,
               marker={"color": cols, "pattern": {"shape": "/"}, "opacity": 0.6, "line": {"color": "#333", "width": 1}},
               hovertemplate="%{x}: %{y:.1%} of predicted pixels<extra>prediction</extra>"),
    ])
    fig.update_layout(barmode="group", title="Class frequencies: label vs prediction",
                      yaxis={"tickformat": ".0%", "title": "share of pixels"}, height=380,
                      margin={"l": 10, "r": 10, "t": 50, "b": 10}, legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"})
    return fig


def reliability_figure(cal: dict, cls: str | None = None, color: str | None = None) -> go.Figure:
    """Reliability diagram of a :func:`seghz.metrics.calibration_report`: the share of pixels the label agrees with
    against the model's mean confidence, per confidence bin (marker area = pixels), with the diagonal of perfect
    calibration. ``cls``: only the pixels predicted as that class."""
    bins = cal["bins"]
    if cls is None:
        pts = [(b["confidence"], b["accuracy"], b["count"], b["lo"], b["hi"]) for b in bins]
        ece = cal.get("ece")
    else:
        rows = cal["per_class_bins"][cls]
        pts = [(r["confidence"], r["accuracy"], r["count"], b["lo"], b["hi"]) for r, b in zip(rows, bins)]
        ece = cal["per_class"][cls]["ece"]
    pts = [q for q in pts if q[2] > 0 and q[0] is not None and q[1] is not None]
    big = max((q[2] for q in pts), default=1)
    fig = go.Figure([
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "#888"}, name="perfectly calibrated",
                   hoverinfo="skip"),
        go.Scatter(x=[q[0] for q in pts], y=[q[1] for q in pts], mode="lines+markers", name="model",
                   line={"color": color or "#1f4e79"},
                   marker={"size": [8 + 22 * (q[2] / big) ** 0.5 for q in pts], "color": color or "#1f4e79"},
                   customdata=[[q[2], q[3], q[4]] for q in pts],
                   hovertemplate="confidence %{customdata[1]:.0%}–%{customdata[2]:.0%}: mean %{x:.1%}, label agrees "
                                 "%{y:.1%} (%{customdata[0]:,} px)<extra></extra>"),
    ])
    what = "all pixels" if cls is None else f"pixels predicted {cls}"
    title = f"Reliability ({what})" + (f" · ECE {100 * ece:.1f} pp" if ece is not None else "")
    fig.update_layout(title=title, xaxis={"range": [0, 1.02], "tickformat": ".0%", "title": "model confidence"},
                      yaxis={"range": [0, 1.02], "tickformat": ".0%", "title": "label agrees"}, height=380,
                      margin={"l": 10, "r": 10, "t": 50, "b": 10}, showlegend=False)
    return fig


def coverage_figure(cal: dict, threshold: float | None = None) -> go.Figure:
    """Abstaining below a confidence threshold: the share of pixels kept and how often the label agrees with the
    kept ones, per threshold (a :func:`seghz.metrics.calibration_report`); ``threshold`` is marked."""
    cov = [c for c in cal["coverage"] if c["kept"] is not None]
    x = [c["threshold"] for c in cov]
    fig = go.Figure([
        go.Scatter(x=x, y=[c["kept"] for c in cov], mode="lines+markers", name="pixels kept", line={"color": "#2a7ab9"},
                   hovertemplate="abstain below %{x:.0%}: %{y:.1%} of the pixels kept<extra></extra>"),
        go.Scatter(x=x, y=[c["accuracy"] for c in cov], mode="lines+markers", name="label agrees (kept pixels)",
                   line={"color": "#2a9d3a"},
                   hovertemplate="abstain below %{x:.0%}: label agrees with %{y:.1%} of the kept pixels<extra></extra>"),
    ])
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dot", line_color="#444")
    fig.update_layout(title="Abstaining on low confidence", height=380,
                      xaxis={"tickformat": ".0%", "title": "abstain below confidence", "range": [-0.02, 1.0]},
                      yaxis={"tickformat": ".0%", "range": [0, 1.02]}, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                      legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"})
    return fig


def calibration_table(cal: dict, threshold: float = 0.0) -> pd.DataFrame:
    """Per predicted class: pixels, mean confidence, how often the label agrees, ECE, and what abstaining below
    ``threshold`` (rounded down to a bin edge) keeps of that class and how often the label agrees there."""
    row = coverage_at(cal, threshold)["per_class"]
    out = [{"class": n, "predicted (px)": v["pixels"], "mean confidence": v["confidence"], "label agrees": v["accuracy"],
            "ECE (pp)": None if v["ece"] is None else 100 * v["ece"], "kept": row[n]["kept"],
            "label agrees (kept)": row[n]["accuracy"]}
           for n, v in cal["per_class"].items() if v["pixels"] > 0]
    return pd.DataFrame(out, columns=["class", "predicted (px)", "mean confidence", "label agrees", "ECE (pp)", "kept",
                                      "label agrees (kept)"])


BIAS_THRESHOLD = 0.05  # |predicted share − labelled share| above this flags a class as biased


def frequency_table(result: dict, threshold: float = BIAS_THRESHOLD, scene: str | None = None) -> pd.DataFrame:
    """Label vs prediction share of each class (scheme order) of the whole evaluation, or of one scene
    (``scene``: its per-scene matrix), with ``Δ (pp)`` = predicted − labelled share in percentage points
    and ``bias`` = ``"over"`` / ``"under"`` where |Δ| > ``threshold`` (a share, 0.05 = 5 pp), else ``""``."""
    names = list(result["classes"])
    if scene is not None:
        cm = np.asarray((result.get("per_scene") or {})[scene], np.float64)
        fl = fp = None
    else:
        cm = np.asarray(result["confusion"], np.float64)
        fl, fp = result.get("freq_label"), result.get("freq_pred")
    total = max(cm.sum(), 1.0)
    fl = np.asarray(fl if fl is not None else cm.sum(1) / total, np.float64)
    fp = np.asarray(fp if fp is not None else cm.sum(0) / total, np.float64)
    delta = fp - fl
    flag = np.where(np.abs(delta) > threshold + 1e-12, np.where(delta > 0, "over", "under"), "")
    return pd.DataFrame({
        "class": names, "labelled share": fl, "predicted share": fp, "Δ (pp)": delta * 100,
        "labelled (px)": cm.sum(1).astype(np.int64), "predicted (px)": cm.sum(0).astype(np.int64), "bias": flag,
    })


def fmt_pp(v: Any, digits: int = 1) -> str:
    """A signed difference in percentage points as shown (:func:`seghz.metrics.signed_pp`): ``+1.2``, ``−3.4``,
    and ``0.0`` (no sign) for anything that rounds to zero; None/NaN -> ``"–"``."""
    f = _num(v)
    return "–" if f is None else signed_pp(f, digits)


def style_pp(df: pd.DataFrame, columns: Sequence[str] = ("Δ (pp)",)):
    """A pandas Styler showing the ``columns`` (signed percentage points) through :func:`fmt_pp`. Give these
    columns no number format in Streamlit's column_config: a column format there overrides the Styler's text."""
    return df.style.format({c: fmt_pp for c in columns if c in df.columns})


def biased_classes(result: dict, threshold: float = BIAS_THRESHOLD) -> list[str]:
    """Classes whose predicted share differs from the labelled share by more than ``threshold``."""
    df = frequency_table(result, threshold)
    return df.loc[df["bias"] != "", "class"].tolist()


MIOU_LABELLED = "mIoU (labelled classes)"


def summary_table(result: dict) -> pd.DataFrame:
    """The study's headline metrics as one row: ``mIoU``, ``fwIoU``, ``OA``, ``mAcc``; and :data:`MIOU_LABELLED`
    (the mean over the classes the labels hold) after ``mIoU`` when the model predicts a class no label holds (its
    IoU 0 counts in the standard mIoU)."""
    row = {"mIoU": _num(result.get("miou"))}
    if result.get("predicted_only"):
        row[MIOU_LABELLED] = _num(result.get("miou_present"))
    row.update({"fwIoU": _num(result.get("fwiou")), "OA": _num(result.get("oa")), "mAcc": _num(result.get("macc"))})
    return pd.DataFrame([row], dtype="float64")


def class_metric_bars(result: dict, colors: Sequence[str] | None = None) -> go.Figure:
    """Grouped bars per class of IoU, Acc (recall), precision and F1."""
    df = per_class_table(result)
    fig = go.Figure()
    for col, color in (("IoU", "#1b7f5f"), ("Acc (recall)", "#1f77b4"), ("Precision", "#ff7f0e"), ("F1", "#9467bd")):
        fig.add_trace(go.Bar(name=col, x=df["class"], y=df[col].fillna(0), marker_color=color,
                             hovertemplate="%{x}: %{y:.1%}<extra>" + col + "</extra>"))
    fig.update_layout(barmode="group", title="Per-class scores", yaxis={"range": [0, 1.05], "tickformat": ".0%"},
                      height=380, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                      legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"})
    return fig


def per_scene_table(result: dict, scene_names: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per evaluated scene (from ``result["per_scene"]`` confusion matrices): mIoU, :data:`MIOU_LABELLED`
    (a small scene lacks most classes, so a few stray predicted pixels of one of them weigh 1/K in its mIoU), fwIoU,
    OA, pixels."""
    from seghz.metrics import scores

    rows = []
    for sid, cm in (result.get("per_scene") or {}).items():
        sc = scores(np.asarray(cm), result["classes"])
        rows.append({"scene": sid, "name": (scene_names or {}).get(sid, sid), "mIoU": _num(sc["miou"]),
                     MIOU_LABELLED: _num(sc["miou_present"]), "fwIoU": _num(sc["fwiou"]), "OA": _num(sc["oa"]),
                     "labelled px": int(np.asarray(cm).sum())})
    df = pd.DataFrame(rows, columns=["scene", "name", "mIoU", MIOU_LABELLED, "fwIoU", "OA", "labelled px"])
    for c in ("mIoU", MIOU_LABELLED, "fwIoU", "OA"):
        df[c] = df[c].astype("float64")
    return df


def headline(result: dict) -> dict[str, float | None]:
    """``{"mIoU", "fwIoU", "OA"}`` of an evaluation result (None where undefined)."""
    return {"mIoU": _num(result.get("miou")), "fwIoU": _num(result.get("fwiou")), "OA": _num(result.get("oa"))}


# ---------------------------------------------------------------------------------------------- checkpoints


def checkpoint_val_metrics(metrics: dict | None) -> dict:
    """The validation scores stored with a checkpoint (``metrics["val"]`` as written by the trainer):
    ``{"miou", "fwiou", "oa", "per_class_iou": {name: iou}, "epoch"}``; missing values are None / {}."""
    metrics = metrics or {}
    val = metrics.get("val") or {}
    if not isinstance(val, dict):
        val = {}
    pci = val.get("per_class_iou") or {}
    return {
        "miou": _num(val.get("miou")),
        "fwiou": _num(val.get("fwiou")),
        "oa": _num(val.get("oa")),
        "per_class_iou": {str(k): _num(v) for k, v in pci.items()} if isinstance(pci, dict) else {},
        "epoch": metrics.get("epoch"),
    }


def per_class_iou_table(metrics: dict | None) -> pd.DataFrame:
    """Per-class validation IoU of a checkpoint as a small table (``class``, ``IoU``)."""
    pci = checkpoint_val_metrics(metrics)["per_class_iou"]
    df = pd.DataFrame({"class": list(pci), "IoU": [v for v in pci.values()]})
    df["IoU"] = df["IoU"].astype("float64")
    return df


def compare_checkpoints(
    current: dict | None, candidate: dict | None, labels: tuple[str, str] = ("active", "new")
) -> pd.DataFrame:
    """Validation scores of two checkpoints side by side (mIoU, fwIoU, OA, then IoU per class) with
    the difference ``new − active`` in percentage points."""
    a, b = checkpoint_val_metrics(current), checkpoint_val_metrics(candidate)
    rows = [("mIoU", a["miou"], b["miou"]), ("fwIoU", a["fwiou"], b["fwiou"]), ("OA", a["oa"], b["oa"])]
    names = list(dict.fromkeys([*a["per_class_iou"], *b["per_class_iou"]]))
    rows += [(f"IoU {n}", a["per_class_iou"].get(n), b["per_class_iou"].get(n)) for n in names]
    df = pd.DataFrame(rows, columns=["metric", labels[0], labels[1]])
    for c in labels:
        df[c] = df[c].astype("float64")
    df["Δ (pp)"] = (df[labels[1]] - df[labels[0]]) * 100
    return df


# ---------------------------------------------------------------------------------------------- jobs


def _parse_time(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def job_duration_s(job: Any, now: datetime | None = None) -> float | None:
    """Seconds a job ran: ``finished_at − started_at``, or until ``now`` while it runs; None before it started."""
    start = _parse_time(getattr(job, "started_at", None))
    if start is None:
        return None
    end = _parse_time(getattr(job, "finished_at", None)) or (now or datetime.now(UTC))
    return max(0.0, (end - start).total_seconds())


def job_time_left_s(job: Any, now: datetime | None = None) -> float | None:
    """Seconds a running job still needs at the pace it has kept since it started: ``elapsed · (1 − p) / p`` for
    progress ``p``. None unless it is running with 1 % < p < 99 % and has run for at least 5 s (before that the
    start-up, e.g. reading the data, dominates and the estimate would mislead; from 99 % jobs run closing steps, like
    re-ranking the noise queues, whose length the pace does not tell), or when a cancel was requested."""
    if getattr(job, "status", None) != "running" or getattr(job, "cancel_requested", False):
        return None
    p = float(getattr(job, "progress", None) or 0.0)
    elapsed = job_duration_s(job, now)
    if elapsed is None or elapsed < 5.0 or not 0.01 < p < 0.99:
        return None
    return elapsed * (1.0 - p) / p


def fmt_duration(seconds: float | None) -> str:
    """``75`` -> ``"1 min 15 s"``; None -> ``"–"``."""
    if seconds is None:
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _local_time(stamp: str | None, seconds: bool = True) -> str:
    """A stored UTC time stamp in local time, ``YYYY-MM-DD HH:MM[:SS]``; "" when there is none or it does not parse."""
    t = _parse_time(stamp)
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") if t else ""


def job_table(jobs: Iterable[Any], now: datetime | None = None) -> pd.DataFrame:
    """Jobs as rows: id, kind, status, progress (0..1), created (local time), duration, time left (running jobs, at
    their pace so far: :func:`job_time_left_s`), message (first line)."""
    rows = []
    for j in jobs:
        msg = (j.message or "").strip().splitlines()
        rows.append({
            "job": j.id,
            "kind": j.kind,
            "status": j.status + (" (cancel requested)" if getattr(j, "cancel_requested", False) and j.status == "running" else ""),
            "progress": float(j.progress or 0.0),
            "created": _local_time(j.created_at),
            "duration": fmt_duration(job_duration_s(j, now)),
            "time left": _fmt_left(job_time_left_s(j, now)),
            "message": msg[0][:160] if msg else "",
        })
    return pd.DataFrame(rows, columns=["job", "kind", "status", "progress", "created", "duration", "time left", "message"])


def _fmt_left(seconds: float | None) -> str:
    return "" if seconds is None else "≈ " + fmt_duration(seconds)


def registry_table(checkpoints: Sequence[Any], *, active_id: str | None = None, rollback_id: str | None = None,
                   learned: Mapping[str, Iterable[str]] | None = None, unknown: Iterable[str] = ()) -> pd.DataFrame:
    """The checkpoint registry as rows, newest first as given: ``status`` (active / rollback target / archived),
    name, id, created (local time), parent, model, scheme, val mIoU (0..1, the checkpoint's own validation data),
    trained on (scenes it learned from, lineage included; "not recorded" for ``unknown``), job and note."""
    learned = learned or {}
    unknown = set(unknown)
    rows = []
    for c in checkpoints:
        status = ("archived" if getattr(c, "archived_at", None) else "★ active" if c.id == active_id
                  else "↩ rollback target" if c.id == rollback_id else "")
        n = len(learned.get(c.id, ()))
        rows.append({
            "status": status, "name": c.name, "id": c.id, "created": _local_time(c.created_at, seconds=False),
            "parent": c.parent_id or "", "model": f"{c.arch}/{c.encoder}".strip("/"), "scheme": c.scheme,
            "val mIoU": checkpoint_val_metrics(c.metrics)["miou"],
            "trained on": ("not recorded" if c.id in unknown else f"{n} scene(s)" if n else "no workspace scene"),
            "job": c.job_id or "", "note": (c.note or "").strip().splitlines()[0] if (c.note or "").strip() else "",
        })
    return pd.DataFrame(rows, columns=["status", "name", "id", "created", "parent", "model", "scheme", "val mIoU",
                                       "trained on", "job", "note"])


def job_option(job: Any) -> str:
    """A job as a picker's option: id, kind and when it was created (local time, as :func:`job_table`). No status: a
    keyed Streamlit selectbox keeps the option text of the run it was drawn in, so a status went stale there."""
    return f"{job.id} · {job.kind}, created {_local_time(job.created_at, seconds=False) or '?'}"


def metrics_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows of :meth:`Workspace.job_metrics` pivoted to one row per (step, epoch), one column per key."""
    rows = list(rows)
    if not rows:
        return pd.DataFrame(columns=["step", "epoch"])
    df = pd.DataFrame(rows)
    wide = df.pivot_table(index=["step", "epoch"], columns="key", values="value", aggfunc="last").reset_index()
    wide.columns.name = None
    return wide.sort_values("step").reset_index(drop=True)


def training_curves_figure(rows: Iterable[dict], colors: dict[str, str] | None = None) -> go.Figure | None:
    """Live training curves per epoch (or step): training loss, learning rate, the noise-mask threshold (when the
    recipe has one), and validation mIoU / fwIoU with each class's IoU (``val_iou/<class>``, thin lines in the class
    colours given by ``colors``); None without metrics."""
    wide = metrics_frame(rows)
    if wide.empty:
        return None
    xname = "epoch" if wide["epoch"].nunique() == len(wide) else "step"
    x = wide[xname]
    has_tau = "noise_threshold" in wide and wide["noise_threshold"].notna().any()
    titles = ["training loss", "learning rate"] + (["noise-mask threshold (nats)"] if has_tau else []) + ["validation"]
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=tuple(titles))
    col = 1
    if "loss" in wide:
        fig.add_trace(go.Scatter(x=x, y=wide["loss"], mode="lines+markers", name="loss", line={"color": "#d62728"}), 1, col)
    col += 1
    if "lr" in wide:
        fig.add_trace(go.Scatter(x=x, y=wide["lr"], mode="lines+markers", name="learning rate",
                                 line={"color": "#9467bd"}), 1, col)
    if has_tau:
        col += 1
        fig.add_trace(go.Scatter(x=x, y=wide["noise_threshold"], mode="lines+markers", name="noise threshold",
                                 line={"color": "#8c564b"}), 1, col)
    col += 1
    for key in sorted(k for k in wide.columns if isinstance(k, str) and k.startswith("val_iou/")):
        name = key.split("/", 1)[1]
        fig.add_trace(go.Scatter(x=x, y=wide[key], mode="lines+markers", marker={"size": 5}, name=f"IoU {name}", opacity=0.6,
                                 line={"width": 1, "color": (colors or {}).get(name)}, legendgroup="classes"), 1, col)
    for key, name, color in (("val_miou", "val mIoU", "#1b7f5f"), ("val_fwiou", "val fwIoU", "#1f77b4")):
        if key in wide and wide[key].notna().any():
            fig.add_trace(go.Scatter(x=x, y=wide[key], mode="lines+markers", name=name, line={"color": color,
                                                                                            "width": 3}), 1, col)
    fig.update_xaxes(title_text=xname)
    if xname == "epoch":  # whole epochs only (no "0.5 epoch" ticks), at most ~10 of them
        fig.update_xaxes(dtick=max(1, round(wide["epoch"].max() / 10)))
    fig.update_yaxes(title_text="score", tickformat=".0%", row=1, col=col)
    # loss (and the noise threshold) from 0: one epoch's single point was drawn on a -0.5..1 axis, as if the loss
    # could be negative ("tozero" still shows a negative value should a loss term ever give one)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    if has_tau:
        fig.update_yaxes(rangemode="tozero", row=1, col=3)
    # the learning rate from 0 in engineering notation
    fig.update_yaxes(rangemode="tozero", tickformat=".1e", exponentformat="e", row=1, col=2)
    if len(wide) == 1:  # a single epoch: no line to see, so larger markers (the per-class ones stay small)
        for tr in fig.data:
            if tr.legendgroup != "classes":
                tr.marker.size = 10
    # the legend below the axis titles, not over them
    fig.update_layout(height=430, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.28, "x": 0, "xanchor": "left",
                              "traceorder": "normal"})
    return fig


__all__ = [
    "BIAS_THRESHOLD",
    "CONFUSION_MODES",
    "CONFUSION_MODE_LABELS",
    "MIOU_LABELLED",
    "biased_classes",
    "checkpoint_val_metrics",
    "class_metric_bars",
    "color_chip_label",
    "compare_checkpoints",
    "confusion_figure",
    "fmt_duration",
    "fmt_pct",
    "fmt_pp",
    "frequency_figure",
    "frequency_table",
    "headline",
    "iou_bar_figure",
    "job_duration_s",
    "job_table",
    "metrics_frame",
    "normalize_confusion",
    "per_class_iou_table",
    "per_class_table",
    "per_scene_table",
    "share_text",
    "style_pp",
    "summary_table",
    "training_curves_figure",
]
