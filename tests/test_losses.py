"""Tests of seghz.train.losses: ENet class weights, weighted CE with ignore, soft Dice."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers_core import torch_one_thread  # noqa: F401 (fixture)
from seghz.train.losses import SegLoss, dice_loss, enet_class_weights

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_enet_class_weights_by_hand():
    f = [0.5, 0.1, 0.0, 0.4]
    w = enet_class_weights(np.array(f))
    assert w.dtype == np.float32
    expected = [1 / math.log(1.02 + 0.5), 1 / math.log(1.02 + 0.1), 1 / math.log(1.02), 1 / math.log(1.42)]
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    # rare classes weigh more; an absent class gets the cap 1/ln(1.02) ~ 50.5
    assert w[2] == pytest.approx(50.497, abs=1e-2)
    assert w[2] > w[1] > w[3] > w[0]
    assert enet_class_weights(np.array([0.0]), c=1.5).tolist() == pytest.approx([1 / math.log(1.5)])


def _logits_2x2():
    # N=1, C=3, 2x2; pixel (r, c) -> logits
    px = {
        (0, 0): [2.0, 0.0, -1.0],
        (0, 1): [0.5, 1.5, 0.0],
        (1, 0): [0.0, 0.0, 3.0],
        (1, 1): [1.0, -2.0, 0.5],
    }
    t = torch.zeros(1, 3, 2, 2)
    for (r, c), v in px.items():
        t[0, :, r, c] = torch.tensor(v)
    return t, px


def _nll(v, y):
    return -(v[y] - math.log(sum(math.exp(a) for a in v)))


def test_ce_with_ignore_by_hand():
    logits, px = _logits_2x2()
    target = torch.tensor([[[0, 1], [255, 2]]])
    got = SegLoss()(logits, target).item()
    expected = (_nll(px[(0, 0)], 0) + _nll(px[(0, 1)], 1) + _nll(px[(1, 1)], 2)) / 3
    assert got == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_with_ignore_by_hand():
    logits, px = _logits_2x2()
    target = torch.tensor([[[0, 1], [255, 1]]])
    w = np.array([0.5, 2.0, 3.0], np.float32)
    got = SegLoss(weights=w)(logits, target).item()
    # weighted mean: sum_i w[y_i] * nll_i / sum_i w[y_i] over non-ignored pixels
    num = 0.5 * _nll(px[(0, 0)], 0) + 2.0 * _nll(px[(0, 1)], 1) + 2.0 * _nll(px[(1, 1)], 1)
    assert got == pytest.approx(num / (0.5 + 2.0 + 2.0), rel=1e-6)


def _confident(target, c, scale=60.0):
    t = target.clone()
    t[t == 255] = 0
    return torch.nn.functional.one_hot(t.long(), c).permute(0, 3, 1, 2).float() * scale


def test_dice_zero_for_perfect_prediction_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    target[0, :2, :2] = 255
    perfect = _confident(target, 4)
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert SegLoss(dice=True)(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    wrong = _confident((target + 1) % 4, 4)
    assert dice_loss(wrong, target).item() > 0.9
    rand = torch.randn(2, 4, 8, 8, generator=g)
    d = dice_loss(rand, target).item()
    assert 0.0 < d < 1.0


def test_dice_by_hand_single_class_mismatch():
    # 1x2 image, 2 classes, target (0, 1); the prediction says class 0 everywhere with certainty
    logits = torch.tensor([[[[50.0, 50.0]], [[-50.0, -50.0]]]])
    target = torch.tensor([[[0, 1]]])
    # class 0: inter 1, |p| 2, |g| 1 -> dice (2+1)/(3+1) = 0.75; class 1: inter 0, |p| 0, |g| 1 -> 1/2
    expected = ((1 - 0.75) + (1 - 0.5)) / 2
    assert dice_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("dice", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_ignore_pixels_do_not_change_the_loss(dice, weighted):
    g = torch.Generator().manual_seed(1)
    c = 5
    logits = torch.randn(2, c, 6, 7, generator=g)
    target = torch.randint(0, c, (2, 6, 7), generator=g)
    ign = torch.rand(2, 6, 7, generator=g) < 0.3
    target[ign] = 255
    loss = SegLoss(weights=np.linspace(0.5, 2, c) if weighted else None, dice=dice)
    base = loss(logits, target)
    # anything at ignored pixels is irrelevant
    noisy = logits.clone()
    noisy.permute(0, 2, 3, 1)[ign] = torch.randn(int(ign.sum()), c, generator=g) * 10
    assert loss(noisy, target).item() == pytest.approx(base.item(), rel=1e-6)
    # and equals the loss of the valid pixels alone, laid out as a 1 x K strip
    keep = ~ign
    strip_logits = logits.permute(0, 2, 3, 1)[keep].T.reshape(1, c, 1, -1)
    strip_target = target[keep].reshape(1, 1, -1)
    assert loss(strip_logits, strip_target).item() == pytest.approx(base.item(), rel=1e-5)


def test_all_ignored_dice_is_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), 255)
    d = dice_loss(logits, target)
    assert d.item() == 0.0
    d.backward()  # still part of the graph
    assert logits.grad is not None
