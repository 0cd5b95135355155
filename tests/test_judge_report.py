"""bench/judge_report.py: the weighted AUC and the per-class verdict report on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

from bench.judge_report import judge, weighted_auc


def test_weighted_auc_hand_cases():
    assert weighted_auc(np.array([0.1, 0.9]), np.array([1, 0]), np.array([0, 1])) == 1.0  # flip scores lower
    assert weighted_auc(np.array([0.9, 0.1]), np.array([1, 0]), np.array([0, 1])) == 0.0  # learned backwards
    assert weighted_auc(np.array([0.5, 0.5]), np.array([1, 0]), np.array([0, 1])) == 0.5  # a tie counts half
    # weights: positive 3 px at 0.2, negatives 1 px at 0.1 and 3 px at 0.4 -> 3 of 4 negative px score higher
    assert weighted_auc(np.array([0.2, 0.1, 0.4]), np.array([3, 0, 0]), np.array([0, 1, 3])) == pytest.approx(0.75)
    assert weighted_auc(np.array([0.2]), np.array([1]), np.array([0])) is None


def test_judge_counts_caught_flips_and_dropped_correct_pixels():
    # one 8×8 image, two classes: left half labelled 0 (correct), right half labelled 2 but truly 0 (a flip)
    given = np.zeros((8, 8), np.uint8)
    given[:, 4:] = 2
    truth = np.zeros((8, 8), np.uint8)
    probs = np.zeros((3, 8, 8), np.float32)
    probs[0] = 0.8
    probs[2] = 0.2  # the model calls everything class 0: the class-2 component is doubted
    rep = judge([given], [truth], [(0, probs)], nc=3, min_px=4, max_drop=1.0)
    assert rep["caught"] == 1.0 and rep["correct_dropped"] == 0.0
    c2 = rep["classes"][2]
    assert c2["wrong"] == 1.0 and c2["caught"] == 1.0 and c2["doubted"] == 1.0 and c2["auc"] is None
    c0 = rep["classes"][0]
    assert c0["wrong"] == 0.0 and c0["caught"] is None and c0["correct_dropped"] == 0.0 and c0["doubted"] == 0.0
    # a quota of 40 % of class 2's pixels cannot take its one 32-px component: nothing is dropped
    rep = judge([given], [truth], [(0, probs)], nc=3, min_px=4, max_drop=0.4)
    assert rep["caught"] == 0.0
