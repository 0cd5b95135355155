"""Tests of seghz.report: evaluation / checkpoint / job numbers -> DataFrames and plotly figures."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import plotly.graph_objects as go
import pytest

from seghz import report
from seghz.metrics import scores

NAMES = ["Water", "Road", "Forest"]
COLORS = ["#0000ff", "#808080", "#00ff00"]
CM = np.array([[50, 0, 10], [5, 20, 0], [0, 0, 0]])  # Forest never labelled, predicted 10 times


def result() -> dict:
    r = scores(CM, NAMES)
    r.update(split="val", tta="none", scenes=2, per_scene={"a": (CM // 2).tolist(), "b": (CM - CM // 2).tolist()},
             freq_label=(CM.sum(1) / CM.sum()).tolist(), freq_pred=(CM.sum(0) / CM.sum()).tolist())
    return r


def test_normalize_confusion_modes():
    counts = report.normalize_confusion(CM, "counts")
    np.testing.assert_array_equal(counts, CM)
    rec = report.normalize_confusion(CM, "recall")
    np.testing.assert_allclose(rec[0], [50 / 60, 0, 10 / 60])
    np.testing.assert_allclose(rec[2], [0, 0, 0])  # empty row -> zeros, no NaN
    prec = report.normalize_confusion(CM, "precision")
    np.testing.assert_allclose(prec[:, 0], [50 / 55, 5 / 55, 0])
    np.testing.assert_allclose(prec[:, 2], [1, 0, 0])
    with pytest.raises(ValueError):
        report.normalize_confusion(CM, "bogus")
    with pytest.raises(ValueError):
        report.normalize_confusion(np.zeros((2, 3)), "counts")


@pytest.mark.parametrize("mode", report.CONFUSION_MODES)
def test_confusion_figure_axes_in_scheme_order_with_colour_chips(mode):
    fig = report.confusion_figure(result(), mode, COLORS)
    assert isinstance(fig, go.Figure)
    hm = fig.data[0]
    assert hm.type == "heatmap"
    np.testing.assert_allclose(np.asarray(hm.z, float), report.normalize_confusion(CM, mode))
    ticks = list(fig.layout.xaxis.ticktext)
    assert [t.split("</span> ")[-1] for t in ticks] == NAMES
    assert all(c in t for c, t in zip(COLORS, ticks))
    assert list(fig.layout.yaxis.ticktext) == ticks
    assert fig.layout.yaxis.autorange == "reversed"  # first class on top


def test_per_class_table():
    df = report.per_class_table(result())
    assert list(df["class"]) == NAMES
    assert list(df.columns) == ["class", "IoU", "Acc (recall)", "Precision", "F1", "Support (px)", "Predicted (px)"]
    assert df.loc[0, "IoU"] == pytest.approx(50 / 65)
    assert df.loc[2, "Support (px)"] == 0 and df.loc[2, "Predicted (px)"] == 10
    assert np.isnan(df.loc[2, "Acc (recall)"])  # undefined without support


def test_iou_and_frequency_figures_use_class_colours():
    r = result()
    bar = report.iou_bar_figure(r, COLORS)
    assert list(bar.data[0].x) == NAMES and list(bar.data[0].marker.color) == COLORS
    assert bar.data[0].y[0] == pytest.approx(50 / 65)
    # the mIoU: a dashed line without a label of its own (it overlapped the bars' texts), its value in the title
    assert [sh.y0 for sh in bar.layout.shapes] == [pytest.approx(r["miou"])] and not bar.layout.annotations
    assert bar.layout.title.text == f"IoU per class · mIoU {100 * r['miou']:.1f}% (dashed line)"
    freq = report.frequency_figure(r, COLORS)
    assert [t.name for t in freq.data] == ["label", "prediction"]
    assert freq.layout.barmode == "group"
    np.testing.assert_allclose(freq.data[0].y, CM.sum(1) / CM.sum())
    np.testing.assert_allclose(freq.data[1].y, CM.sum(0) / CM.sum())
    # without colours a fallback palette is used
    assert len(report.iou_bar_figure(r).data[0].marker.color) == 3


def test_headline_per_scene_and_formatting():
    r = result()
    h = report.headline(r)
    assert h["mIoU"] == pytest.approx(r["miou"]) and h["OA"] == pytest.approx(70 / 85)
    ps = report.per_scene_table(r, {"a": "Scene A"})
    assert list(ps["scene"]) == ["a", "b"] and ps.loc[0, "name"] == "Scene A"
    assert ps["labelled px"].sum() == CM.sum()
    assert report.fmt_pct(0.6234) == "62.3 %" and report.fmt_pct(None) == "–" and report.fmt_pct(float("nan")) == "–"


def test_checkpoint_metrics_and_comparison():
    a = {"val": {"miou": 0.5, "fwiou": 0.6, "oa": 0.7, "per_class_iou": {"Water": 0.8, "Road": 0.2}}, "epoch": 3}
    b = {"val": {"miou": 0.55, "fwiou": 0.6, "oa": 0.72, "per_class_iou": {"Water": 0.9, "Road": None}}}
    m = report.checkpoint_val_metrics(a)
    assert m["miou"] == 0.5 and m["per_class_iou"] == {"Water": 0.8, "Road": 0.2} and m["epoch"] == 3
    assert report.checkpoint_val_metrics({})["miou"] is None
    assert report.checkpoint_val_metrics({"val": None})["per_class_iou"] == {}
    t = report.per_class_iou_table(a)
    assert list(t["class"]) == ["Water", "Road"]
    cmp = report.compare_checkpoints(a, b)
    assert list(cmp["metric"]) == ["mIoU", "fwIoU", "OA", "IoU Water", "IoU Road"]
    assert cmp.loc[0, "Δ (pp)"] == pytest.approx(5.0)
    assert np.isnan(cmp.loc[4, "new"])
    assert report.compare_checkpoints(None, b)["active"].isna().all()


@dataclass
class FakeJob:
    id: str
    kind: str = "train"
    status: str = "running"
    progress: float = 0.5
    created_at: str = "2024-01-01T00:00:00.000+00:00"
    started_at: str | None = "2024-01-01T00:00:10.000+00:00"
    finished_at: str | None = None
    message: str = "epoch 1/2\nmore"
    cancel_requested: bool = False


def test_job_table_and_durations():
    now = datetime(2024, 1, 1, 0, 1, 25, tzinfo=UTC)
    jobs = [FakeJob("a"), FakeJob("b", status="done", progress=1.0, finished_at="2024-01-01T02:00:10.000+00:00"),
            FakeJob("c", status="queued", started_at=None)]
    assert report.job_duration_s(jobs[0], now) == pytest.approx(75)
    assert report.job_duration_s(jobs[2], now) is None
    df = report.job_table(jobs, now)
    assert list(df["job"]) == ["a", "b", "c"]
    assert list(df["duration"]) == ["1 min 15 s", "2 h 00 min", "–"]
    # half done after 75 s: as long again to go; only a running job gets an estimate
    assert report.job_time_left_s(jobs[0], now) == pytest.approx(75)
    assert list(df["time left"]) == ["≈ 1 min 15 s", "", ""]
    assert df.loc[0, "message"] == "epoch 1/2"
    assert report.job_table([]).empty
    assert report.fmt_duration(timedelta(seconds=5).total_seconds()) == "5 s"
    # the picker's option: the table's local creation time, and no status (a keyed selectbox kept a stale one)
    assert report.job_option(jobs[1]) == f"b · {jobs[1].kind}, created {df.loc[1, 'created'][:16]}"  # minutes
    assert "done" not in report.job_option(jobs[1]) and "running" not in report.job_option(jobs[0])


def test_training_curves():
    rows = []
    for step, epoch in ((4, 1), (8, 2)):
        for k, v in (("loss", 1.0 / epoch), ("lr", 0.001 / epoch), ("val_miou", 0.3 * epoch), ("val_fwiou", 0.4 * epoch),
                     ("val_iou/Water", 0.5 * epoch)):
            rows.append({"step": step, "epoch": epoch, "key": k, "value": v, "ts": 0.0})
    wide = report.metrics_frame(rows)
    assert list(wide["epoch"]) == [1, 2] and list(wide["loss"]) == [1.0, 0.5]
    fig = report.training_curves_figure(rows, {"Water": "#123456"})
    names = [t.name for t in fig.data]
    assert names == ["loss", "learning rate", "IoU Water", "val mIoU", "val fwIoU"]
    assert list(fig.data[1].y) == pytest.approx([0.001, 0.0005]) and list(fig.data[3].y) == pytest.approx([0.3, 0.6])
    assert fig.data[2].line.color == "#123456"
    assert len(fig.layout.annotations) == 3  # loss | learning rate | validation (no noise mask in this recipe)
    # with the noise mask: its threshold gets a panel of its own
    rows += [{"step": s, "epoch": e, "key": "noise_threshold", "value": t, "ts": 0.0} for s, e, t in ((4, 1, 4.6), (8, 2, 2.3))]
    fig = report.training_curves_figure(rows)
    assert [a.text for a in fig.layout.annotations][2] == "noise-mask threshold (nats)"
    assert list(next(t for t in fig.data if t.name == "noise threshold").y) == pytest.approx([4.6, 2.3])
    assert report.training_curves_figure([]) is None


def test_training_curves_layout_keeps_the_legend_off_the_axes_and_the_lr_from_zero():
    rows = [{"step": 5, "epoch": 1, "key": k, "value": v} for k, v in (("loss", 1.2), ("lr", 2e-3), ("val_miou", 0.4))]
    fig = report.training_curves_figure(rows)
    lg = fig.layout.legend
    assert lg.orientation == "h" and lg.yanchor == "top" and lg.y < -0.2 and lg.traceorder == "normal"
    assert fig.layout.yaxis2.rangemode == "tozero" and fig.layout.yaxis2.tickformat == ".1e"
    assert fig.layout.xaxis.dtick == 1  # whole epochs


def test_frequency_table_and_bias_flag():
    # labelled shares: Water 60/85, Road 25/85, Forest 0; predicted: Water 55/85, Road 20/85, Forest 10/85
    df = report.frequency_table(result(), threshold=0.05)
    assert list(df["class"]) == NAMES
    assert list(df.columns) == ["class", "labelled share", "predicted share", "Δ (pp)", "labelled (px)",
                                "predicted (px)", "bias"]
    np.testing.assert_allclose(df["labelled share"], [60 / 85, 25 / 85, 0])
    np.testing.assert_allclose(df["predicted share"], [55 / 85, 20 / 85, 10 / 85])
    np.testing.assert_allclose(df["Δ (pp)"], [-500 / 85, -500 / 85, 1000 / 85])
    assert list(df["bias"]) == ["under", "under", "over"]  # 5.9 pp, 5.9 pp, 11.8 pp
    assert report.biased_classes(result(), threshold=0.06) == ["Forest"]
    assert report.biased_classes(result(), threshold=0.2) == []


def test_frequency_table_per_scene():
    df = report.frequency_table(result(), threshold=0.05, scene="b")
    b = CM - CM // 2  # [[25, 0, 5], [3, 10, 0], [0, 0, 0]]
    np.testing.assert_array_equal(df["labelled (px)"], b.sum(1))
    np.testing.assert_allclose(df["predicted share"], b.sum(0) / b.sum())


def test_summary_table_and_class_metric_bars():
    s = report.summary_table(scores(np.array([[50, 0, 0], [5, 20, 0], [0, 0, 9]]), NAMES))
    assert list(s.columns) == ["mIoU", "fwIoU", "OA", "mAcc"]  # every predicted class is labelled somewhere
    s = report.summary_table(result())
    # a class the labels lack but the model predicts (Forest): its IoU 0 counts in mIoU; the labelled-class mean
    # sits beside it
    stray = scores(np.array([[50, 0, 5], [0, 40, 5], [0, 0, 0]]), ["A", "B", "C"])
    t = report.summary_table(stray)
    assert list(t.columns) == ["mIoU", report.MIOU_LABELLED, "fwIoU", "OA", "mAcc"]
    assert t.loc[0, "mIoU"] == pytest.approx((50 / 55 + 40 / 45 + 0) / 3)
    assert t.loc[0, report.MIOU_LABELLED] == pytest.approx((50 / 55 + 40 / 45) / 2)
    ps = report.per_scene_table({"classes": ["A", "B", "C"], "per_scene": {"s": stray["confusion"]}})
    assert ps.loc[0, report.MIOU_LABELLED] == pytest.approx((50 / 55 + 40 / 45) / 2)
    assert s.loc[0, "OA"] == pytest.approx(70 / 85)
    fig = report.class_metric_bars(result(), COLORS)
    assert [t.name for t in fig.data] == ["IoU", "Acc (recall)", "Precision", "F1"]
    assert list(fig.data[0].x) == NAMES


def _calibration():
    from seghz.metrics import calibration_counts, calibration_report

    pred = np.array([0, 0, 0, 1, 1, 1])
    conf = np.array([0.95, 0.95, 0.55, 1.0, 0.35, 0.35])
    gt = np.array([0, 1, 0, 1, 0, 1])
    return calibration_report(calibration_counts(pred, conf, gt, 3), ["a", "b", "c"])


def test_reliability_figure_plots_the_occupied_bins_of_all_pixels_or_one_class():
    cal = _calibration()
    fig = report.reliability_figure(cal)
    pts = fig.data[1]
    assert list(pts.x) == pytest.approx([0.35, 0.55, 2.9 / 3]) and list(pts.y) == pytest.approx([0.5, 1.0, 2 / 3])
    assert f"ECE {100 * cal['ece']:.1f} pp" in fig.layout.title.text
    one = report.reliability_figure(cal, "a", "#ff0000")
    assert list(one.data[1].x) == pytest.approx([0.55, 0.95]) and "pixels predicted a" in one.layout.title.text
    assert one.data[1].line.color == "#ff0000"


def test_coverage_figure_and_table_follow_the_threshold():
    cal = _calibration()
    fig = report.coverage_figure(cal, 0.5)
    kept = list(fig.data[0].y)
    assert kept[0] == 1 and kept[5] == pytest.approx(4 / 6) and list(fig.data[1].y)[5] == pytest.approx(3 / 4)
    assert fig.layout.shapes[0].x0 == 0.5
    t = report.calibration_table(cal, 0.57)  # rounded down to the 0.5 edge
    assert t["class"].tolist() == ["a", "b"]  # c is never predicted
    a = t.set_index("class").loc["a"]
    assert a["kept"] == pytest.approx(1.0) and a["label agrees (kept)"] == pytest.approx(2 / 3)
    b = t.set_index("class").loc["b"]
    assert b["kept"] == pytest.approx(1 / 3) and b["ECE (pp)"] == pytest.approx(100 * cal["per_class"]["b"]["ece"])


def test_job_time_left_follows_the_pace_so_far_and_stays_quiet_when_it_cannot_know():
    now = datetime(2024, 1, 1, 0, 10, 10, tzinfo=UTC)  # 600 s after the fake jobs start
    assert report.job_time_left_s(FakeJob("q", progress=0.25), now) == pytest.approx(1800)  # 600 s per quarter
    assert report.job_time_left_s(FakeJob("q", progress=0.9), now) == pytest.approx(600 / 9)
    assert report.job_time_left_s(FakeJob("q", progress=0.005), now) is None  # too early to tell
    assert report.job_time_left_s(FakeJob("q", progress=1.0), now) is None
    assert report.job_time_left_s(FakeJob("q", progress=0.99), now) is None  # closing steps (the queues' re-rank)
    assert report.job_time_left_s(FakeJob("q", progress=0.5, cancel_requested=True), now) is None
    assert report.job_time_left_s(FakeJob("q", progress=0.5, status="queued", started_at=None), now) is None
    assert report.job_time_left_s(FakeJob("q", progress=0.5, status="cancelled"), now) is None
    just = datetime(2024, 1, 1, 0, 0, 12, tzinfo=UTC)  # 2 s in: start-up dominates
    assert report.job_time_left_s(FakeJob("q", progress=0.5), just) is None
    assert report.job_time_left_s(FakeJob("q", progress=None), now) is None


def test_normalised_confusion_never_shows_zero_for_a_cell_with_pixels_and_hovers_the_count():
    names = ["Water", "Road", "Forest"]
    cm = np.array([[99_988, 12, 0], [0, 500, 500], [0, 0, 0]])
    r = scores(cm, names)
    assert report.share_text(12 / 100_000, 12, 100_000) == "<0.1%"
    assert report.share_text(99_988 / 100_000, 99_988, 100_000) == ">99.9%"
    assert report.share_text(0.0, 0, 100_000) == "0.0%" and report.share_text(1.0, 5, 5) == "100.0%"
    assert report.share_text(0.5, 500, 1000) == "50.0%"
    fig = report.confusion_figure(r, "recall")
    hm = fig.data[0]
    assert [list(row) for row in hm.text] == [[">99.9%", "<0.1%", "0.0%"], ["0.0%", "50.0%", "50.0%"],
                                              ["0.0%", "0.0%", "0.0%"]]
    hover = hm.customdata[0][1]  # the hover names both classes and gives the share and the pixels
    assert hover == "label Water<br>predicted Road<br><0.1% of the label row<br>12 of 100,000 px"
    assert hm.hovertemplate == "%{customdata}<extra></extra>"
    prec = report.confusion_figure(r, "precision").data[0]
    assert prec.text[0][1] == "2.3%" and "of the prediction column<br>12 of 512 px" in prec.customdata[0][1]
    counts = report.confusion_figure(r, "counts").data[0]
    assert counts.text[0][1] == "12" and counts.customdata[0][1] == \
        "label Water<br>predicted Road<br>12 px (<0.1% of the label row)"
    assert counts.customdata[2][2] == "label Forest<br>predicted Forest<br>0 px"  # an empty row: no share
    # clickable: invisible markers on the cell centres carry the same hover, the heatmap's own is off
    fig = report.confusion_figure(r, "recall", clickable=True)
    hm, pts = fig.data
    assert pts.type == "scatter" and list(pts.x) == [0, 1, 2] * 3 and list(pts.y) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert pts.customdata[1] == hover and pts.hovertemplate == "%{customdata}<extra></extra>"
    assert hm.hoverinfo == "skip" and hm.hovertemplate is None


def test_frequency_delta_rounding_to_zero_shows_no_minus_sign():
    assert [report.fmt_pp(v) for v in (-0.04, -0.0, 0.0, 0.04, 0.05, -0.06, 12.345, -3.0, None, float("nan"))] == \
        ["0.0", "0.0", "0.0", "0.0", "+0.1", "−0.1", "+12.3", "−3.0", "–", "–"]
    cm = np.array([[100_000, 3], [0, 50_000]])  # Water labelled 100,003, predicted 100,000: Δ -0.002 pp
    df = report.frequency_table(scores(cm, ["Water", "Road"]))
    assert -0.05 < df.loc[0, "Δ (pp)"] < 0
    shown = report.style_pp(df).to_html()
    assert "-0.0" not in shown and "−0.0" not in shown and ">0.0<" in shown
    assert report.style_pp(df).data is df  # the numbers stay numbers


def test_training_curves_loss_axis_from_zero_and_single_epoch_points_visible():
    """A 1-epoch run: the loss axis went negative (-0.5..1 around its single point); loss, learning rate and the
    noise threshold start at 0 and the single points are drawn large enough to see."""
    rows = [{"step": 4, "epoch": 1, "key": k, "value": v}
            for k, v in (("loss", 0.15), ("lr", 1.8e-4), ("noise_threshold", 2.0), ("val_miou", 0.96),
                         ("val_iou/Water", 0.9))]
    fig = report.training_curves_figure(rows)
    lay = fig.layout
    assert lay.yaxis.rangemode == "tozero"  # training loss
    assert lay.yaxis2.rangemode == "tozero"  # learning rate
    assert lay.yaxis3.rangemode == "tozero"  # noise-mask threshold
    assert lay.yaxis4.rangemode != "tozero"  # validation scores: autoscaled around the values
    loss = next(t for t in fig.data if t.name == "loss")
    assert "markers" in loss.mode and loss.marker.size >= 8
    assert next(t for t in fig.data if t.name == "IoU Water").marker.size == 5
    # with several epochs the markers keep their default size
    rows2 = rows + [{"step": 8, "epoch": 2, "key": "loss", "value": 0.1}]
    assert report.training_curves_figure(rows2).data[0].marker.size is None
