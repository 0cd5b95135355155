"""Tests of seghz.metrics: confusion matrix and the study's scores."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.metrics import class_frequencies, confusion_matrix, scores


@settings(max_examples=80, deadline=None)
@given(
    c=st.integers(1, 6),
    n=st.integers(0, 60),
    seed=st.integers(0, 2**32 - 1),
    ignore_share=st.floats(0, 1),
)
def test_confusion_matrix_matches_brute_force(c, n, seed, ignore_share):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, c, n).astype(np.uint8)
    pred = rng.integers(0, c, n).astype(np.uint8)
    ign = rng.random(n) < ignore_share
    gt[ign] = 255
    # predictions under ignore pixels may be anything, even out of range: they are skipped
    pred[ign] = rng.integers(0, 256, int(ign.sum()))
    shape = (1, n) if n % 2 else (n // 2 if n else 0, 2)
    cm = confusion_matrix(pred.reshape(shape), gt.reshape(shape), c)
    expected = [[0] * c for _ in range(c)]
    for g, p in zip(gt.tolist(), pred.tolist()):
        if g == 255:
            continue
        expected[g][p] += 1
    assert cm.shape == (c, c)
    assert cm.tolist() == expected
    assert cm.sum() == int((~ign).sum())


def test_confusion_rows_are_ground_truth():
    cm = confusion_matrix(np.array([1, 1, 1]), np.array([0, 0, 2]), 3)
    assert cm.tolist() == [[0, 2, 0], [0, 0, 0], [0, 1, 0]]


def test_scores_by_hand_three_classes():
    gt = np.array([0, 0, 1, 1, 2, 255])
    pred = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(pred, gt, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    s = scores(cm, ["a", "b", "c"])
    # by hand: tp = (1, 2, 0), gt sums (2, 2, 1), pred sums (2, 3, 0), unions (3, 3, 1)
    pc = s["per_class"]
    assert pc["a"]["iou"] == pytest.approx(1 / 3)
    assert pc["b"]["iou"] == pytest.approx(2 / 3)
    assert pc["c"]["iou"] == pytest.approx(0.0)
    assert pc["a"]["acc"] == pytest.approx(0.5)
    assert pc["b"]["acc"] == pytest.approx(1.0)
    assert pc["c"]["acc"] == pytest.approx(0.0)
    assert pc["a"]["precision"] == pytest.approx(0.5)
    assert pc["b"]["precision"] == pytest.approx(2 / 3)
    assert pc["c"]["precision"] is None  # never predicted
    assert pc["a"]["f1"] == pytest.approx(0.5)
    assert pc["b"]["f1"] == pytest.approx(0.8)
    assert [pc[k]["support"] for k in "abc"] == [2, 2, 1]
    assert [pc[k]["predicted"] for k in "abc"] == [2, 3, 0]
    assert s["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert s["macc"] == pytest.approx(0.5)
    assert s["oa"] == pytest.approx(3 / 5)
    # fwIoU = sum(freq * IoU) with gt frequencies 2/5, 2/5, 1/5
    assert s["fwiou"] == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3 + 1 / 5 * 0)
    assert s["present"] == ["a", "b", "c"]
    assert s["confusion"] == cm.tolist()
    assert s["classes"] == ["a", "b", "c"]
    json.dumps(s, allow_nan=False)


def test_miou_averages_over_present_classes_only():
    # 4 classes; class 3 appears in neither labels nor predictions; class 2 only in predictions
    gt = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, 2, 1, 1, 0])
    s = scores(confusion_matrix(pred, gt, 4))
    iou0 = 2 / 4  # tp 2, gt 3, pred 3 -> union 4
    iou1 = 2 / 3  # tp 2, gt 3, pred 2 -> union 3
    iou2 = 0.0  # false positive only: present, IoU 0
    assert s["per_class"]["3"]["iou"] is None
    assert s["per_class"]["2"]["iou"] == pytest.approx(0.0)
    assert s["miou"] == pytest.approx((iou0 + iou1 + iou2) / 3)
    assert s["present"] == ["0", "1", "2"]
    # macc: over classes with ground truth only
    assert s["macc"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert s["oa"] == pytest.approx(4 / 6)
    assert s["fwiou"] == pytest.approx(0.5 * iou0 + 0.5 * iou1)


def test_perfect_prediction_scores_one():
    gt = np.random.default_rng(0).integers(0, 5, (9, 9))
    s = scores(confusion_matrix(gt, gt, 5))
    assert s["miou"] == pytest.approx(1.0) and s["fwiou"] == pytest.approx(1.0) and s["oa"] == 1.0


def test_empty_confusion_gives_none():
    s = scores(np.zeros((3, 3), np.int64))
    assert s["miou"] is None and s["oa"] is None and s["fwiou"] is None and s["macc"] is None
    assert s["present"] == []
    json.dumps(s, allow_nan=False)  # no NaN leaks into the JSON-ready dict
    assert all(v["iou"] is None for v in s["per_class"].values())


def test_prediction_out_of_range_raises():
    with pytest.raises(ValueError, match=r"prediction holds class index 3 outside 0\.\.2 \(3 classes"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_label_out_of_range_raises():
    with pytest.raises(ValueError, match="label holds class index 7 outside 0..2"):
        confusion_matrix(np.array([0, 0]), np.array([7, 1]), 3)


@pytest.mark.parametrize("gt,pred,what,shown", [
    ([-1, 1], [0, 0], "label", "-1"),  # the bad value, not the largest label (1)
    ([-2, 2, 9, 0], [0, 0, 0, 0], "label", "-2, 9"),
    ([0, 1], [0, -3], "prediction", "-3"),
    ([0, 1, 2], [5, 1, 4], "prediction", "4, 5"),
])
def test_out_of_range_values_are_named_and_refused_alike_by_confusion_and_calibration(gt, pred, what, shown):
    """A bad label or prediction on a labelled pixel is the same ValueError, naming the actual values, from the
    confusion matrix and the calibration counts: ECE never covers other pixels than the confusion matrix."""
    gt, pred = np.array(gt), np.array(pred)
    conf = np.full(gt.shape, 0.9)
    msg = rf"{what} holds class index {shown} outside 0\.\.2 "
    with pytest.raises(ValueError, match=msg):
        confusion_matrix(pred, gt, 3)
    with pytest.raises(ValueError, match=msg):
        calibration_counts(pred, conf, gt, 3)


def test_prediction_on_ignored_pixels_is_not_checked_by_either():
    gt, pred = np.array([0, 255, 1]), np.array([0, 7, 1])  # the pixel predicted 7 is not labelled
    cm = confusion_matrix(pred, gt, 3)
    cal = calibration_counts(pred, np.full(3, 0.5), gt, 3)
    assert cm.sum() == 2 == np.asarray(cal["count"]).sum()


def test_many_bad_values_are_summarised():
    with pytest.raises(ValueError, match=r"label holds class index 3, 4, 5, 6, 7, … \(8 values\)"):
        confusion_matrix(np.zeros(8, int), np.arange(3, 11), 3)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="pixels"):
        confusion_matrix(np.zeros(4), np.zeros(5), 2)


def test_class_frequencies():
    m = np.array([[0, 0, 1], [255, 2, 2], [2, 255, 255]], np.uint8)
    assert class_frequencies(m, 4).tolist() == pytest.approx([2 / 6, 1 / 6, 3 / 6, 0.0])
    assert class_frequencies(np.full((2, 2), 255, np.uint8), 3).tolist() == [0, 0, 0]


@pytest.mark.parametrize("mask,bad", [([0, 1, 9, 9], "9"), ([0, -1, 1], "-1"), ([3, 0, 254, 255], "3, 254")])
def test_class_frequencies_refuse_values_outside_the_classes_naming_them(mask, bad):
    """255 is ignore (out of the denominator); any other value outside 0..C-1 is an error, never dropped (that
    gave [.5, .5, 0] for [0, 1, 9, 9]) nor counted in the denominator (that gave [.25, .25, 0])."""
    from seghz.metrics import pooled_class_frequencies

    m = np.array(mask)
    with pytest.raises(ValueError, match=rf"label holds class index {bad} outside 0\.\.2"):
        class_frequencies(m, 3)
    with pytest.raises(ValueError, match=rf"label holds class index {bad} outside 0\.\.2"):
        pooled_class_frequencies([np.array([0, 1]), m], 3)


def test_class_frequencies_leave_ignore_out_of_the_denominator():
    m = np.array([0, 1, 255, 255], np.uint8)
    assert class_frequencies(m, 3).tolist() == [0.5, 0.5, 0.0]


def test_negative_prediction_raises():
    with pytest.raises(ValueError):
        confusion_matrix(np.array([-1, 0]), np.array([1, 0]), 3)


# ----------------------------------------------------------------------------------------------- calibration
from seghz.metrics import add_calibration, calibration_counts, calibration_report


def test_calibration_counts_and_report_by_hand():
    """Six labelled pixels and one ignored: bins of 0.1; class 0 predicted at 0.95 (right), 0.95 (wrong), 0.55
    (right); class 1 at 1.0 (right, last bin), 0.35 (wrong), 0.35 (right)."""
    pred = np.array([0, 0, 0, 1, 1, 1, 1])
    conf = np.array([0.95, 0.95, 0.55, 1.0, 0.35, 0.35, 0.99])
    gt = np.array([0, 1, 0, 1, 0, 1, 255])
    cal = calibration_counts(pred, conf, gt, 2)
    count, correct = np.array(cal["count"]), np.array(cal["correct"])
    assert count[0, 9] == 2 and correct[0, 9] == 1 and count[0, 5] == 1 and correct[0, 5] == 1
    assert count[1, 9] == 1 and correct[1, 9] == 1 and count[1, 3] == 2 and correct[1, 3] == 1
    assert count.sum() == 6  # the ignored pixel is not counted
    rep = calibration_report(cal, ["a", "b"])
    # bins: 3 -> acc .5 conf .35 (2 px); 5 -> 1 vs .55 (1 px); 9 -> 2/3 vs (0.95+0.95+1.0)/3 (3 px)
    want = (2 * 0.15 + 1 * 0.45 + 3 * abs(2 / 3 - 2.9 / 3)) / 6
    assert rep["ece"] == pytest.approx(want)
    assert rep["per_class"]["a"]["ece"] == pytest.approx((2 * 0.45 + 1 * 0.45) / 3)
    assert rep["per_class"]["b"]["accuracy"] == pytest.approx(2 / 3) and rep["pixels"] == 6
    cov = {round(c["threshold"], 1): c for c in rep["coverage"]}
    assert cov[0.0]["kept"] == 1 and cov[0.0]["accuracy"] == pytest.approx(4 / 6)
    assert cov[0.5]["kept"] == pytest.approx(4 / 6) and cov[0.5]["accuracy"] == pytest.approx(3 / 4)
    assert cov[0.9]["per_class"]["b"] == {"kept": pytest.approx(1 / 3), "accuracy": 1.0}
    assert rep["bins"][0]["accuracy"] is None and rep["per_class_bins"]["b"][3]["count"] == 2


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 5), n=st.integers(0, 80), seed=st.integers(0, 2**32 - 1), split=st.integers(0, 80))
def test_calibration_counts_add_up_and_split_anywhere(c, n, seed, split):
    """The counts cover exactly the labelled pixels, agree with the confusion matrix's diagonal, and counting two
    halves then adding them gives the counts of the whole."""
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, c, n).astype(np.uint8)
    gt[rng.random(n) < 0.2] = 255
    pred = rng.integers(0, c, n).astype(np.uint8)
    conf = rng.random(n)
    whole = calibration_counts(pred, conf, gt, c)
    k = min(split, n)
    parts = add_calibration(calibration_counts(pred[:k], conf[:k], gt[:k], c), calibration_counts(pred[k:], conf[k:], gt[k:], c))
    assert parts["count"] == whole["count"] and parts["correct"] == whole["correct"]
    np.testing.assert_allclose(parts["conf_sum"], whole["conf_sum"])
    cm = confusion_matrix(pred, gt, c)
    assert np.asarray(whole["count"]).sum() == cm.sum()
    assert np.asarray(whole["correct"]).sum(1).tolist() == np.diag(cm).tolist()
    rep = calibration_report(whole)
    assert rep["ece"] is None if cm.sum() == 0 else 0 <= rep["ece"] <= 1
    kept = [cv["kept"] for cv in rep["coverage"] if cv["kept"] is not None]
    assert kept == sorted(kept, reverse=True)  # a higher threshold never keeps more


def test_calibration_of_a_calibrated_model_is_near_zero_and_of_an_overconfident_one_is_not():
    rng = np.random.default_rng(0)
    n = 200_000
    conf = rng.uniform(0.5, 1.0, n)
    right = rng.random(n) < conf  # the label agrees exactly as often as the confidence says
    pred = np.zeros(n, np.uint8)
    gt = np.where(right, 0, 1).astype(np.uint8)
    assert calibration_report(calibration_counts(pred, conf, gt, 2))["ece"] < 0.01
    over = calibration_report(calibration_counts(pred, np.full(n, 0.99), gt, 2))["ece"]
    assert over == pytest.approx(0.99 - right.mean(), abs=1e-9)


def test_coverage_row_rounds_the_threshold_down_to_a_bin_edge():
    from seghz.metrics import coverage_at

    rep = calibration_report(calibration_counts(np.array([0, 0]), np.array([0.55, 0.95]), np.array([0, 0]), 1))
    assert coverage_at(rep, 0.59)["threshold"] == pytest.approx(0.5) and coverage_at(rep, 0.59)["kept"] == 1
    assert coverage_at(rep, 0.6)["kept"] == pytest.approx(0.5) and coverage_at(rep, -1)["threshold"] == 0
    assert coverage_at(rep, 5)["threshold"] == pytest.approx(0.9)
    assert rep["confidence"] == pytest.approx(0.75) and rep["accuracy"] == 1


def test_calibration_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="differ in size"):
        calibration_counts(np.zeros(3), np.zeros(4), np.zeros(3), 2)
    a = calibration_counts(np.zeros(3, np.uint8), np.zeros(3), np.zeros(3, np.uint8), 2)
    b = calibration_counts(np.zeros(3, np.uint8), np.zeros(3), np.zeros(3, np.uint8), 3)
    with pytest.raises(ValueError, match="cannot be added"):
        add_calibration(a, b)
    with pytest.raises(ValueError, match="hold 2 classes but 3 names"):
        calibration_report(a, ["x", "y", "z"])


# --------------------------------------------------------------------------- paired bootstrap of a model difference

def _random_cms(rng, n, c, scale=200):
    return rng.integers(0, scale, size=(n, c, c))


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 6), n=st.integers(1, 5), seed=st.integers(0, 2**32 - 1), absent=st.integers(0, 5))
def test_miou_batch_equals_scores_for_every_matrix(c, n, seed, absent):
    """The vectorised mIoU / IoU the bootstrap uses are :func:`scores`' own, also with classes absent from both labels
    and predictions (zeroed row and column) and with all-zero matrices."""
    from seghz.metrics import iou_batch, miou_batch

    rng = np.random.default_rng(seed)
    cms = _random_cms(rng, n, c)
    cms[:, absent % c, :] = 0
    cms[:, :, absent % c] = 0
    if n > 1:
        cms[-1] = 0
    for cm, m, iou in zip(cms, miou_batch(cms), iou_batch(cms)):
        s = scores(cm)
        if s["miou"] is None:
            assert np.isnan(m)
        else:
            assert m == pytest.approx(s["miou"], abs=1e-12)
        want = [np.nan if v["iou"] is None else v["iou"] for v in s["per_class"].values()]
        np.testing.assert_allclose(iou, want, atol=1e-12)


def test_paired_bootstrap_identical_models_differ_by_exactly_zero():
    from seghz.metrics import paired_bootstrap

    cms = _random_cms(np.random.default_rng(1), 9, 4)
    r = paired_bootstrap(cms, cms.copy(), rounds=300)
    assert r["delta"] == 0 and r["lo"] == 0 and r["hi"] == 0 and r["p_b_better"] == 0
    assert r["a"] == pytest.approx(scores(cms.sum(0))["miou"]) and r["scenes"] == 9 and r["rounds"] == 300
    assert all(d == {"delta": 0.0, "lo": 0.0, "hi": 0.0} for d in r["per_class"].values())


def test_paired_bootstrap_a_model_better_on_every_scene_is_sure():
    """B labels every scene perfectly, A confuses a third of it: B − A > 0 in every round, so the interval is
    above 0; swapping the models mirrors every number."""
    from seghz.metrics import paired_bootstrap

    rng = np.random.default_rng(2)
    truth = rng.integers(50, 500, size=(12, 3))
    b = np.stack([np.diag(t) for t in truth])
    a = b.copy()
    for k, t in enumerate(truth):
        a[k] = np.diag(t - t // 3)
        a[k, 0, 1] += t[0] // 3
        a[k, 1, 2] += t[1] // 3
        a[k, 2, 0] += t[2] // 3
    r = paired_bootstrap(a, b, rounds=500, seed=3, names=["x", "y", "z"])
    assert r["b"] == 1.0 and r["delta"] == pytest.approx(1.0 - scores(a.sum(0))["miou"])
    assert 0 < r["lo"] <= r["delta"] <= r["hi"] and r["p_b_better"] == 1.0
    assert all(d["lo"] > 0 for d in r["per_class"].values())
    m = paired_bootstrap(b, a, rounds=500, seed=3, names=["x", "y", "z"])
    assert m["delta"] == pytest.approx(-r["delta"]) and m["lo"] == pytest.approx(-r["hi"])
    assert m["hi"] == pytest.approx(-r["lo"]) and m["p_b_better"] == 0.0
    assert paired_bootstrap(a, b, rounds=500, seed=3, names=["x", "y", "z"]) == r  # seeded: reproducible


def test_paired_bootstrap_interval_narrows_with_more_scenes_and_covers_a_noisy_tie():
    """Two models that are equally good on average but trade wins scene by scene: the interval holds 0, and it is
    narrower when the same mix of scenes is four times as many."""
    from seghz.metrics import paired_bootstrap

    rng = np.random.default_rng(5)

    def pair(n):
        a, b = [], []
        for k in range(n):
            good = np.diag(rng.integers(300, 400, size=3))
            bad = good.copy()
            bad[0, 0] -= 100
            bad[0, 1] += 100
            a.append(good if k % 2 else bad)
            b.append(bad if k % 2 else good)
        return np.stack(a), np.stack(b)

    r10 = paired_bootstrap(*pair(10), rounds=1000)
    r40 = paired_bootstrap(*pair(40), rounds=1000)
    assert r10["lo"] < 0 < r10["hi"] and r40["lo"] < 0 < r40["hi"]
    assert (r40["hi"] - r40["lo"]) < (r10["hi"] - r10["lo"])


def test_paired_bootstrap_rejects_mismatched_input():
    from seghz.metrics import paired_bootstrap

    a = np.zeros((3, 4, 4), np.int64)
    with pytest.raises(ValueError, match="different scenes or classes"):
        paired_bootstrap(a, np.zeros((2, 4, 4), np.int64))
    with pytest.raises(ValueError, match=r"\(scenes, C, C\)"):
        paired_bootstrap(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="no scenes"):
        paired_bootstrap(a[:0], a[:0])
    with pytest.raises(ValueError, match="rounds"):
        paired_bootstrap(a, a, rounds=0)
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(a, a, level=1.0)
    with pytest.raises(ValueError, match="class names"):
        paired_bootstrap(a, a, names=["a"])


def test_paired_bootstrap_leaves_out_a_class_neither_model_scores():
    from seghz.metrics import paired_bootstrap

    cms = _random_cms(np.random.default_rng(7), 5, 3)
    cms[:, 2, :] = 0
    cms[:, :, 2] = 0
    r = paired_bootstrap(cms, cms, rounds=50, names=["a", "b", "c"])
    assert r["per_class"]["c"] is None and r["per_class"]["a"] is not None


def test_paired_bootstrap_matches_a_plain_resampling_loop():
    """The vectorised rounds are the textbook ones: draw scene indices (the same for both models), pool, score with
    :func:`scores`, subtract; the interval is the percentiles of those differences."""
    from seghz.metrics import paired_bootstrap

    rng = np.random.default_rng(11)
    a, b = _random_cms(rng, 7, 3), _random_cms(rng, 7, 3)
    r = paired_bootstrap(a, b, rounds=400, seed=4)
    draws = np.random.default_rng(4).multinomial(7, np.full(7, 1 / 7), size=400)
    diffs = []
    for counts in draws:
        idx = np.repeat(np.arange(7), counts)  # the scenes this round drew, with repeats
        diffs.append(scores(b[idx].sum(0))["miou"] - scores(a[idx].sum(0))["miou"])
    assert r["lo"] == pytest.approx(np.quantile(diffs, 0.025), abs=1e-12)
    assert r["hi"] == pytest.approx(np.quantile(diffs, 0.975), abs=1e-12)
    assert r["p_b_better"] == pytest.approx(np.mean(np.array(diffs) > 0))


def test_paired_bootstrap_one_scene_has_no_interval_and_one_sided_classes_are_named():
    """One scene: nothing to resample, so no interval (not a fake zero-width one). A class absent from the labels that
    only one model predicts gets no IoU difference but says which model predicts it (it costs that model's mIoU)."""
    from seghz.metrics import paired_bootstrap

    a = np.array([[[50, 0, 0], [0, 40, 0], [0, 0, 0]]] * 3)
    b = a.copy()
    b[:, 1, 1] -= 10
    b[:, 1, 2] += 10  # B predicts class 2, which the labels never hold
    r = paired_bootstrap(a, b, rounds=100, names=["x", "y", "z"])
    assert r["per_class"]["z"] == {"delta": None, "lo": None, "hi": None, "only": "b"}
    assert r["per_class"]["y"]["delta"] == pytest.approx(30 / 40 - 1)  # y: 30 of its 40 pixels kept
    assert r["b"] == pytest.approx((1 + 30 / 40 + 0) / 3) and r["a"] == 1.0  # z counts as 0 in B's mIoU only
    assert paired_bootstrap(b, a, rounds=100, names=["x", "y", "z"])["per_class"]["z"]["only"] == "a"
    one = paired_bootstrap(a[:1], b[:1], rounds=100, names=["x", "y", "z"])
    assert one["delta"] == pytest.approx(r["delta"]) and one["lo"] is None and one["hi"] is None
    assert one["p_b_better"] is None and one["per_class"]["y"]["lo"] is None



def _water_in_one_scene(fp: int, n: int = 10):
    """``n`` scenes of land (class 0); water (class 1) is labelled in scene 0 only (1000 px): A finds all of it, B
    half. Both models put ``fp`` false-positive water pixels into every other scene."""
    a = np.zeros((n, 2, 2), np.int64)
    a[:, 0, 0] = 1000
    a[0, 1, 1] = 1000
    b = a.copy()
    b[0, 1, 1], b[0, 1, 0] = 500, 500
    a[1:, 0, 0] -= fp
    a[1:, 0, 1] = fp
    b[1:] = a[1:]
    return a, b


def _loop_class_deltas(a, b, rounds, seed, cls):
    """Per round, by hand with :func:`scores`: the class's B − A IoU, or None when the draw holds no labelled pixel
    of it (support 0); and the mIoU difference."""
    n = len(a)
    out, miou = [], []
    for counts in np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=rounds):
        idx = np.repeat(np.arange(n), counts)
        sa, sb = scores(a[idx].sum(0)), scores(b[idx].sum(0))
        ca, cb = sa["per_class"][str(cls)], sb["per_class"][str(cls)]
        out.append(cb["iou"] - ca["iou"] if ca["support"] > 0 and cb["support"] > 0 else None)
        miou.append(sb["miou"] - sa["miou"])
    return out, miou


def _old_rule_class_interval(a, b, rounds, seed, level=0.95):
    """The interval as it was before rounds without the class's labels were left out: only rounds where a model's
    IoU is undefined (union 0) dropped, so false positives alone made a round count with a Δ of exactly 0."""
    from seghz.metrics import iou_batch

    n, c = a.shape[0], a.shape[1]
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=rounds).astype(np.float64)
    dc = iou_batch((draws @ b.reshape(n, -1)).reshape(rounds, c, c)) - iou_batch(
        (draws @ a.reshape(n, -1)).reshape(rounds, c, c))
    tail = (1 - level) / 2
    res = []
    for i in range(c):
        x = dc[:, i][~np.isnan(dc[:, i])]
        res.append((float(np.quantile(x, tail)), float(np.quantile(x, 1 - tail))))
    return res


def test_paired_bootstrap_class_interval_leaves_out_rounds_without_its_labels_despite_false_positives():
    """The reviewer's case: water labelled in one of 10 scenes, B loses half of it, both models predict 5 water px in
    every other scene. A round that draws none of the water scene has IoU 0 for both (false positives only): its Δ
    of 0 says nothing about water and must not count, or the interval ends at exactly 0 and the interval gate rule
    waves the drop through. The interval is over the rounds that hold water: about −0.5 at both ends."""
    from seghz.metrics import paired_bootstrap, paired_scene_bootstrap

    a, b = _water_in_one_scene(fp=5)
    r = paired_bootstrap(a, b, rounds=2000, seed=0, names=["0", "1"])
    w = r["per_class"]["1"]
    assert w["delta"] == pytest.approx(500 / 1045 - 1000 / 1045)  # the point estimate, as scores() on all scenes
    assert w["hi"] < 0 and w["lo"] == pytest.approx(-0.5, abs=0.03) and w["hi"] == pytest.approx(-0.5, abs=0.03)
    assert w["lo"] <= w["delta"] <= w["hi"]
    # exactly the textbook rounds: those whose draw holds water labels
    deltas, miou = _loop_class_deltas(a, b, 2000, 0, 1)
    kept = [x for x in deltas if x is not None]
    assert 0 < len(kept) < 2000  # some rounds lack the water scene (≈ 0.9 ** 10 of them)
    assert w["lo"] == pytest.approx(np.quantile(kept, 0.025), abs=1e-12)
    assert w["hi"] == pytest.approx(np.quantile(kept, 0.975), abs=1e-12)
    # mIoU keeps scores()' class set per round (labels or predictions), as the point estimate: a round without the
    # water scene is a tie there, and it counts
    assert r["lo"] == pytest.approx(np.quantile(miou, 0.025), abs=1e-12)
    assert r["hi"] == pytest.approx(np.quantile(miou, 0.975), abs=1e-12)
    assert r["delta"] == pytest.approx(scores(b.sum(0))["miou"] - scores(a.sum(0))["miou"])
    # the old rule, for the record: the same data gave an interval ending at exactly 0
    assert _old_rule_class_interval(a, b, 2000, 0)[1][1] == 0.0
    # the same through the per-scene mapping that compare / the gate use
    ps, why, k = paired_scene_bootstrap({f"s{i}": m for i, m in enumerate(a)}, {f"s{i}": m for i, m in enumerate(b)},
                                        ["land", "water"], same_scenes=True, rounds=2000, seed=0)
    assert why == "" and k == 10
    sw = ps["per_class"]["water"]
    assert sw["hi"] < 0 and sw["lo"] == pytest.approx(-0.5, abs=0.03) and sw["hi"] == pytest.approx(-0.5, abs=0.03)


def test_paired_bootstrap_class_interval_without_false_positives_is_unchanged():
    """No false positives: a round without the water scene had an undefined IoU for both models and was left out
    already; the interval is the constant −0.5 of every round that holds water, as before."""
    from seghz.metrics import paired_bootstrap

    a, b = _water_in_one_scene(fp=0)
    r = paired_bootstrap(a, b, rounds=2000, seed=0, names=["land", "water"])
    assert r["per_class"]["water"] == {"delta": -0.5, "lo": -0.5, "hi": -0.5}
    old = _old_rule_class_interval(a, b, 2000, 0)
    assert old[1] == (-0.5, -0.5)
    assert (r["per_class"]["land"]["lo"], r["per_class"]["land"]["hi"]) == old[0]  # land is in every draw


def test_paired_bootstrap_class_labelled_in_many_scenes_interval_as_before():
    """A class labelled in 12 of 20 scenes (false positives of both models in the other 8): practically every draw
    holds it, so its interval is the one the old rule gave on the same seed, and the textbook one."""
    from seghz.metrics import paired_bootstrap

    rng = np.random.default_rng(21)
    a, b = _random_cms(rng, 20, 3, scale=300), _random_cms(rng, 20, 3, scale=300)
    for m in (a, b):
        m[12:, 2, :] = 0  # class 2 unlabelled in scenes 12..19 ...
        m[12:, 0, 2] = rng.integers(1, 30, size=8)  # ... but predicted there by both models
    r = paired_bootstrap(a, b, rounds=1000, seed=9, names=["0", "1", "2"])
    old = _old_rule_class_interval(a, b, 1000, 9)
    for i in range(3):
        pc = r["per_class"][str(i)]
        assert pc["lo"] == pytest.approx(old[i][0], abs=1e-12) and pc["hi"] == pytest.approx(old[i][1], abs=1e-12)
    deltas, _ = _loop_class_deltas(a, b, 1000, 9, 2)
    assert None not in deltas
    assert r["per_class"]["2"]["lo"] == pytest.approx(np.quantile(deltas, 0.025), abs=1e-12)
    assert r["per_class"]["2"]["hi"] == pytest.approx(np.quantile(deltas, 0.975), abs=1e-12)


def test_paired_bootstrap_class_only_in_both_predictions_has_no_interval():
    """A class the labels never hold that both models predict: IoU 0 for both, Δ 0, but no round holds a labelled
    pixel of it, so there is no interval (not a zero-width one that looks sure)."""
    from seghz.metrics import paired_bootstrap

    a = np.array([[[50, 0, 3], [0, 40, 0], [0, 0, 0]]] * 4)
    b = a.copy()
    b[:, 1, 1] -= 10
    b[:, 1, 2] += 10
    r = paired_bootstrap(a, b, rounds=200, names=["x", "y", "z"])
    assert r["per_class"]["z"] == {"delta": 0.0, "lo": None, "hi": None}
    assert r["per_class"]["y"]["lo"] is not None

def test_pooled_class_frequencies_equal_those_of_the_masks_put_together():
    from seghz.metrics import class_frequencies, pooled_class_frequencies

    rng = np.random.default_rng(3)
    masks = [rng.integers(0, 4, size=(5, 7)).astype(np.uint8) for _ in range(3)]
    masks[1][:2] = 255  # ignore is left out
    want = class_frequencies(np.concatenate([m.ravel() for m in masks]), 5)
    np.testing.assert_allclose(pooled_class_frequencies(masks, 5), want, rtol=0, atol=1e-15)
    assert pooled_class_frequencies([np.full((2, 2), 255, np.uint8)], 3).tolist() == [0, 0, 0]
