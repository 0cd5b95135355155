"""A self-contained HTML evaluation report (``python -m seghz report``): no Streamlit, no internet needed to view it.

Contents: headline scores (mIoU, fwIoU, OA, with the seed's metric names), the confusion matrix in counts and
row-normalised (recall) as interactive plotly heatmaps, the per-class table (IoU, Acc, precision, F1, support), the
class frequencies of labels vs predictions with bias flags, and the top confusion examples as thumbnails (image |
label | prediction | A→B pixels in magenta). plotly.js is inlined once and the thumbnails are base64 PNGs, so the
file opens offline and can be mailed around.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seghz import report
from seghz.metrics import calibration_report


@dataclass
class Example:
    """One confusion example: ``true`` labelled pixels predicted as ``predicted`` in a window of ``image_name``."""

    image_name: str
    true: str
    predicted: str
    count: int
    bbox: tuple[int, int, int, int]
    thumbnail: np.ndarray  # RGB uint8


def top_cells(cm: np.ndarray, k: int = 3) -> list[tuple[int, int, int]]:
    """``(true, predicted, pixels)`` of the ``k`` largest off-diagonal cells with any pixels, largest first."""
    off = np.array(cm, dtype=np.int64, copy=True)
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1]
    out = []
    for flat in order[: max(0, k)]:
        a, b = np.unravel_index(int(flat), off.shape)
        if off[a, b] <= 0:
            break
        out.append((int(a), int(b), int(off[a, b])))
    return out


def png_data_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1200px;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0} table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right} th{background:#f5f5f5} td:first-child,th:first-child{text-align:left}
.kpi{display:inline-block;margin:0 2rem 1rem 0} .kpi b{font-size:1.6rem;display:block}
.ex{margin:0 0 1.2rem} .ex img{max-width:100%;image-rendering:pixelated;border:1px solid #ccc}
.bias{color:#b00020;font-weight:600}
"""


def _pct(v) -> str:
    return "–" if v is None else f"{100 * float(v):.2f}"


def render(result: dict, examples: Sequence[Example], *, title: str, subtitle: str = "",
           colors: Sequence[str] | None = None) -> str:
    """The report as one HTML document.

    Args:
        result: :func:`seghz.metrics.scores` output (``classes``, ``confusion``, ``per_class``, ``miou`` ...),
            optionally with ``freq_label`` / ``freq_pred`` and ``calibration`` (counts of
            :func:`seghz.metrics.calibration_counts`: adds a calibration section).
        examples: Confusion examples to show as thumbnails.
        title, subtitle: Heading and a line under it (checkpoint, data, TTA, date).
        colors: Class colours (hex) in scheme order for the axes and bars.
    """
    figs = [report.confusion_figure(result, "counts", colors), report.confusion_figure(result, "recall", colors),
            report.frequency_figure(result, colors)]
    parts = [f.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False, config={"displaylogo": False})
             for i, f in enumerate(figs)]
    head = report.headline(result)
    kpis = "".join(f"<div class='kpi'>{html.escape(k)}<b>{_pct(v)}</b></div>" for k, v in
                   (("mIoU %", head.get("mIoU")), ("fwIoU %", head.get("fwIoU")), ("OA %", head.get("OA"))))
    table = report.per_class_table(result).to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="–",
                                                   border=0)
    freq = report.frequency_table(result)
    freq_html = freq.to_html(index=False, float_format=lambda v: f"{v:.2f}", na_rep="–", border=0)
    biased = report.biased_classes(result)
    bias_line = (f"<p class='bias'>Predicted share differs from the labelled share by more than "
                 f"{100 * report.BIAS_THRESHOLD:.0f} pp for: {html.escape(', '.join(biased))}</p>" if biased else
                 "<p>No class is over- or under-predicted by more than "
                 f"{100 * report.BIAS_THRESHOLD:.0f} pp.</p>")
    from seghz.evaluate import caveat_lines

    notes = "".join(f"<p class='bias'>{html.escape(line)}</p>" for line in caveat_lines(result)) \
        if "per_class" in result else ""
    cal_html = ""
    if result.get("calibration"):
        cal = calibration_report(result["calibration"], list(result["classes"]))
        cal_fig = report.reliability_figure(cal).to_html(full_html=False, include_plotlyjs=False,
                                                         config={"displaylogo": False})
        cal_tab = report.calibration_table(cal, 0.9).to_html(index=False, float_format=lambda v: f"{v:.4f}",
                                                            na_rep="–", border=0)
        ece = "–" if cal["ece"] is None else f"{100 * cal['ece']:.2f}"
        cal_html = (f"<h2>Calibration</h2><p>Expected calibration error <b>{ece} pp</b> (pixel-weighted gap between "
                    f"the model's confidence and how often the label agrees, over 10 bins). The table's last two "
                    f"columns: what abstaining below 90 % confidence keeps of each predicted class.</p>"
                    f"{cal_fig}{cal_tab}")
    ex_html = "".join(
        f"<div class='ex'><div><b>{html.escape(e.true)} → {html.escape(e.predicted)}</b>: {e.count:,} px in "
        f"<code>{html.escape(e.image_name)}</code> rows {e.bbox[0]}–{e.bbox[2] - 1}, cols {e.bbox[1]}–{e.bbox[3] - 1}</div>"
        f"<img alt='example' src='{png_data_uri(e.thumbnail)}'></div>"
        for e in examples) or "<p>No confusion (every labelled pixel predicted right).</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body><h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>
{kpis}
{notes}
<h2>Confusion matrix</h2><p>Rows: label; columns: prediction. Counts, then row-normalised (recall).</p>
{parts[0]}{parts[1]}
<h2>Per class</h2>{table}
<h2>Class frequencies</h2>{parts[2]}{freq_html}{bias_line}
{cal_html}
<h2>Top confusions</h2><p>image | label | prediction | the confused pixels in magenta, ringed in dim magenta so thin edges show</p>{ex_html}
</body></html>
"""


__all__ = ["Example", "png_data_uri", "render", "top_cells"]
