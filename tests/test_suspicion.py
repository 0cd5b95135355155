"""Suspicion score and queue grouping (seghz.review.suspicion) on hand-built arrays."""
from __future__ import annotations

import math

import numpy as np
import pytest

from seghz.review.suspicion import (
    DEFAULT_WEIGHTS,
    ClassThresholds,
    SuspicionWeights,
    group_components,
    rarity_boost,
    signals,
    suspicion_score,
)


def _proba(h: int, w: int, c: int, cls: np.ndarray, conf: float = 0.9) -> np.ndarray:
    """C×H×W probabilities: ``conf`` on class ``cls[r, c]``, the rest spread evenly."""
    p = np.full((c, h, w), (1 - conf) / (c - 1), np.float32)
    for k in range(c):
        p[k][cls == k] = conf
    return p


def test_minus_inf_exactly_on_ignored_pixels():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 16, 20)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    label = rng.integers(0, 4, size=(16, 20)).astype(np.uint8)
    label[3:7, 5:9] = 255
    label[0, 0] = 255
    dis = rng.random((16, 20)).astype(np.float32)
    for w in (DEFAULT_WEIGHTS, SuspicionWeights(1, 0, 0, 0), SuspicionWeights(0, 1, 1, 2, 1.0)):
        s = suspicion_score(p, label, dis, weights=w)
        assert s.dtype == np.float32 and s.shape == label.shape
        assert np.array_equal(np.isneginf(s), label == 255)
        assert np.all(np.isfinite(s[label != 255]))
        assert s[label != 255].min() >= 0 and s[label != 255].max() <= 1


def test_all_ignored_and_nan_disagreement():
    p = np.full((3, 4, 4), 1 / 3, np.float32)
    lab = np.full((4, 4), 255, np.uint8)
    assert np.all(np.isneginf(suspicion_score(p, lab)))
    lab[:2] = 1
    dis = np.full((4, 4), np.nan, np.float32)  # the engine's NaN where not valid
    s = suspicion_score(p, lab, dis)
    assert np.all(np.isfinite(s[:2])) and np.all(np.isneginf(s[2:]))


def test_disagreeing_label_outranks_agreeing_one():
    # model is confident: class 1 everywhere
    p = _proba(2, 2, 3, np.ones((2, 2), int), conf=0.95)
    label = np.array([[1, 0], [1, 2]], np.uint8)  # (0,0) agrees; (0,1) and (1,1) disagree
    for w in (DEFAULT_WEIGHTS, SuspicionWeights(1, 0, 0), SuspicionWeights(0, 1, 0), SuspicionWeights(0, 0, 1)):
        s = suspicion_score(p, label, weights=w)
        assert s[0, 1] > s[0, 0] and s[1, 1] > s[0, 0] and s[1, 1] > s[1, 0]


def test_signal_definitions():
    p = np.zeros((3, 1, 3), np.float32)
    p[:, 0, 0] = [0.7, 0.2, 0.1]
    p[:, 0, 1] = [0.1, 0.1, 0.8]
    p[:, 0, 2] = [0.6, 0.3, 0.1]
    label = np.array([[0, 0, 1]], np.uint8)
    tau = math.log(10)
    thr = np.array([0.5, 0.25, 0.7], np.float32)
    sig = signals(p, label, np.array([[0.25, 0.5, 0.0]], np.float32), thresholds=thr, tau=tau)
    loss = -np.log(np.array([0.7, 0.1, 0.3]))
    np.testing.assert_allclose(sig["loss"][0], loss / (loss + tau), rtol=1e-6)
    assert abs(sig["loss"][0, 1] - 0.5) < 1e-6  # exactly at the noise-mask threshold
    # (0,0): label 0 is the max -> not a candidate; (0,1): class 2 (0.8 >= 0.7, > 0.1) -> margin 0.7;
    # (0,2): class 0 (0.6 >= 0.5, > 0.3) -> margin 0.3
    np.testing.assert_allclose(sig["cl"][0], [0.0, 0.7, 0.3], atol=1e-6)
    # TTA vote against the label: d where argmax == label, 1 - d elsewhere
    np.testing.assert_allclose(sig["tta"][0], [0.25, 0.5, 1.0], atol=1e-6)
    # a class below its threshold is no candidate
    sig2 = signals(p, label, thresholds=np.array([0.5, 0.25, 0.9], np.float32), tau=tau)
    assert sig2["cl"][0, 1] == 0.0


def test_class_thresholds_running_mean():
    acc = ClassThresholds(3)
    p = np.zeros((3, 1, 2), np.float32)
    p[:, 0, 0] = [0.8, 0.1, 0.1]
    p[:, 0, 1] = [0.4, 0.5, 0.1]
    acc.update(p, np.array([[0, 0]], np.uint8))
    acc.update(p, np.array([[255, 1]], np.uint8))
    t = acc.thresholds()
    np.testing.assert_allclose(t, [0.6, 0.5, 0.5], atol=1e-6)  # class 2 never labelled -> 0.5
    np.testing.assert_allclose(acc.frequencies(), [2 / 3, 1 / 3, 0])


def test_bad_shapes_raise():
    p = np.full((3, 4, 4), 1 / 3, np.float32)
    with pytest.raises(ValueError, match="shape"):
        suspicion_score(p, np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        suspicion_score(p, np.full((4, 4), 3, np.uint8))
    with pytest.raises(ValueError, match="weights"):
        suspicion_score(p, np.zeros((4, 4), np.uint8), weights=SuspicionWeights(0, 0, 0))


def test_components_bbox_pixels_on_hand_made_mask():
    h, w = 12, 15
    score = np.zeros((h, w), np.float32)
    label = np.zeros((h, w), np.uint8)
    pred = np.zeros((h, w), np.uint8)
    score[1:4, 2:6] = 0.8  # A: 3x4 = 12 px, label 0, predicted 2 (majority)
    pred[1:4, 2:6] = 2
    pred[1, 2] = 1
    score[6:11, 9:11] = 0.6  # B: 5x2 = 10 px, but two label classes -> split into 2 items
    label[6:8, 9:11] = 1  # 4 px of class 1
    pred[6:11, 9:11] = 3
    score[0, 14] = 0.9  # C: single pixel -> below min_pixels 4
    score[10, 0] = 0.3  # below threshold
    label[11, :] = 255
    score[11, :] = -np.inf
    items = group_components(score, label, pred, stem="t", names=["a", "b", "c", "d"], threshold=0.5, min_pixels=4)
    assert [(it.bbox, it.pixels, it.label_id, it.predicted_id) for it in items] == [
        ((1, 2, 4, 6), 12, 0, 2),
        ((8, 9, 11, 11), 6, 0, 3),
        ((6, 9, 8, 11), 4, 1, 3),
    ]
    a = items[0]
    assert a.label_class == "a" and a.predicted_class == "c" and a.stem == "t"
    assert a.mean_score == pytest.approx(0.8) and a.score == pytest.approx(0.8 * 12)
    js = a.to_json()
    assert js["bbox"] == [1, 2, 4, 6] and {"stem", "bbox", "pixels", "score", "label_class", "predicted_class",
                                           "label_id", "predicted_id"} <= set(js)
    # the bbox slices exactly the component
    r0, c0, r1, c1 = a.bbox
    assert (score[r0:r1, c0:c1] >= 0.5).sum() == a.pixels
    # diagonal neighbours join (8-connectivity); top_fraction picks by quantile
    s2 = np.zeros((5, 5), np.float32)
    s2[[0, 1, 2, 3], [0, 1, 2, 3]] = 1.0
    it2 = group_components(s2, np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.uint8), min_pixels=1)
    assert len(it2) == 1 and it2[0].pixels == 4 and it2[0].bbox == (0, 0, 4, 4)
    top = group_components(score, label, pred, top_fraction=12 / (11 * 15), min_pixels=1)
    assert sum(i.pixels for i in top) <= 13 and top[0].pixels <= 12


def test_rarity_boost_reorders_queue():
    np.testing.assert_allclose(rarity_boost([0.9, 0.1, 0.0], 0), [1, 1, 1])
    b = rarity_boost([0.8, 0.2, 0.0], 1.0)
    np.testing.assert_allclose(b, [1.0, 4.0, 4.0])  # absent class treated as the rarest present one
    score = np.zeros((10, 10), np.float32)
    label = np.zeros((10, 10), np.uint8)
    pred = np.zeros((10, 10), np.uint8)
    score[0:3, 0:4] = 0.7  # 12 px, common class 0 -> predicted 0
    score[6:9, 6:8] = 0.7  # 6 px, label class 1 (rare)
    label[6:9, 6:8] = 1
    freq = [0.95, 0.05]
    plain = group_components(score, label, pred, class_freq=freq, rarity=0.0)
    assert [i.label_id for i in plain] == [0, 1]
    boosted = group_components(score, label, pred, class_freq=freq, rarity=0.5)
    assert [i.label_id for i in boosted] == [1, 0]
    assert boosted[0].boost == pytest.approx((0.95 / 0.05) ** 0.5) and boosted[1].boost == 1.0
    assert boosted[0].score == pytest.approx(0.7 * 6 * boosted[0].boost)
    # the rarer of label and predicted class counts
    pred2 = pred.copy()
    pred2[0:3, 0:4] = 1
    b2 = group_components(score, label, pred2, class_freq=freq, rarity=0.5)
    assert all(i.boost == pytest.approx((0.95 / 0.05) ** 0.5) for i in b2)


def test_smoothing_stays_within_label():
    p = _proba(6, 6, 2, np.zeros((6, 6), int), conf=0.9)
    label = np.zeros((6, 6), np.uint8)
    label[:, 3:] = 1  # right half disagrees with the prediction
    s0 = suspicion_score(p, label, weights=SuspicionWeights(1, 0, 0, 0))
    s1 = suspicion_score(p, label, weights=SuspicionWeights(1, 0, 0, 2, 1.0))
    # every label region is uniform here, so the same-label mean changes nothing
    np.testing.assert_allclose(s0, s1, atol=1e-6)


def test_bench_metrics_and_noise_injection():
    """bench/noise_bench.py's AUROC / precision@k and its noise injection on hand-made arrays."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.noise_bench import at_k, auroc, inject_noise

    truth = np.array([1, 0, 1, 0, 0], bool)
    assert auroc(np.array([5, 1, 4, 2, 3.0]), truth) == 1.0
    assert auroc(np.array([1, 5, 2, 4, 3.0]), truth) == 0.0
    assert auroc(np.ones(5), truth) == 0.5  # ties share ranks
    assert auroc(np.array([3, 1, 2, 2, 0.0]), truth) == pytest.approx((3 + 2.5) / 6)  # pairs won, a tie counts 0.5
    assert at_k(np.array([5, 1, 4, 2, 3.0]), truth, 2) == {"precision_at_k": 1.0, "recall_at_k": 1.0}
    assert at_k(np.array([5, 4, 1, 2, 3.0]), truth, 2)["precision_at_k"] == 0.5
    lab = np.zeros((20, 20), np.uint8)
    lab[5:15, 5:15] = 1
    lab[0, :] = 255
    labels = [lab.copy() for _ in range(10)]
    noisy = inject_noise(labels, np.random.default_rng(0), [0, 1, 2], flip_fraction=0.3, shift_fraction=0.5)
    flipped = sum(int(((n != t) & (t != 255)).any()) for n, t in zip(noisy, labels))
    assert 0 < flipped <= 10
    assert all(np.array_equal(n == 255, t == 255) for n, t in zip(noisy, labels))  # ignored pixels stay ignored
    assert all(labels[i][5, 5] == 1 for i in range(10))  # the inputs are not modified
