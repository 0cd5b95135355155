"""Tests of seghz.train.losses: class weights, CE with ignore, Dice, label smoothing, noise mask, OHEM, consistency,
bootstrapping and the noise-robust losses (forward correction, generalized CE)."""
from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_core import torch_one_thread  # noqa: F401 (fixture)
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.train.losses import (
    LossConfig,
    SegLoss,
    check_transition,
    class_weights,
    consistency_loss,
    dice_loss,
    enet_class_weights,
    estimate_transition,
    forward_ce,
    forward_transition,
    generalized_ce,
    noise_mask_ce,
    noise_threshold,
    ohem_ce,
    pixel_ce,
)

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


def test_dice_absent_class_with_zero_probability_cannot_leak_nan():
    """eps = 0 and a class that is absent from the target and has probability 0 everywhere (softmax underflow):
    its dice is 0/0 = NaN, which must not reach the mean over the present classes (1 − 1 for class 0: perfect)."""
    logits = torch.tensor([[[[30.0, 30.0]], [[-30.0, -30.0]], [[-1e4, -1e4]]]], requires_grad=True)
    target = torch.tensor([[[0, 0]]])
    d = dice_loss(logits, target, eps=0.0)
    assert torch.isfinite(d) and d.item() == pytest.approx(0.0, abs=1e-6)
    d.backward()
    assert torch.isfinite(logits.grad).all()


# ------------------------------------------------------------------------------------------------ recipe (issue 4)

LN2 = math.log(2.0)


def _binary_logits(ps, targets=None):
    """1 x 2 x 1 x K logits [ln p, ln(1-p)] per pixel: softmax gives exactly (p, 1-p), so class-0 CE = -ln p."""
    p = torch.tensor(ps, dtype=torch.float64)
    lg = torch.stack([p.log(), (1 - p).log()]).float().reshape(1, 2, 1, -1)
    tgt = torch.zeros(1, 1, len(ps), dtype=torch.long) if targets is None else torch.tensor([[targets]])
    return lg, tgt


def test_class_weights_modes_by_hand():
    f = np.array([0.5, 0.25, 0.25])
    assert class_weights(f, "none") is None
    assert class_weights(f, "enet").tolist() == pytest.approx([1 / math.log(1.52), 1 / math.log(1.27), 1 / math.log(1.27)], rel=1e-6)
    # inverse: 1/(K f), K = 3 present classes -> Σ f w = 1
    assert class_weights(f, "inverse").tolist() == pytest.approx([2 / 3, 4 / 3, 4 / 3], rel=1e-6)
    # counts are normalised first
    assert class_weights(np.array([2.0, 1.0, 1.0]), "inverse").tolist() == pytest.approx([2 / 3, 4 / 3, 4 / 3], rel=1e-6)
    with pytest.raises(ValueError, match="unknown class weighting"):
        class_weights(f, "median")


@pytest.mark.parametrize("mode", ["none", "enet", "inverse"])
def test_absent_class_warns_and_weight_stays_finite(mode):
    f = np.array([0.6, 0.0, 0.4])
    with pytest.warns(UserWarning, match="absent.*Sea"):
        w = class_weights(f, mode, names=["Water", "Sea", "Forest"])
    if mode == "none":
        assert w is None
        return
    assert np.all(np.isfinite(w))
    if mode == "enet":
        assert w[1] == pytest.approx(1 / math.log(1.02), rel=1e-6)
    else:  # 1/(2·0.6), 1/(2·0.4); the absent class gets the largest present weight
        assert w.tolist() == pytest.approx([1 / 1.2, 1 / 0.8, 1 / 0.8], rel=1e-6)
    # usable in the loss
    lg, t = _binary_logits([0.5, 0.5])
    assert math.isfinite(SegLoss(weights=w[:2])(lg, t).item())


def test_label_smoothing_by_hand_with_ignore():
    # logits [ln2, 0, 0] -> p = (1/2, 1/4, 1/4); eps = 0.2, C = 3 -> q = 1-eps on gt, eps/2 elsewhere
    lg = torch.zeros(1, 3, 1, 3)
    lg[0, 0, 0, :2] = LN2
    lg[0, :, 0, 2] = torch.tensor([7.0, -3.0, 1.0])  # ignored pixel: anything
    target = torch.tensor([[[0, 1, 255]]])
    # target 0: -(0.8 ln .5 + 0.1 ln .25 + 0.1 ln .25) = 0.8 ln2 + 0.4 ln2 = 1.2 ln2
    # target 1: -(0.1 ln .5 + 0.8 ln .25 + 0.1 ln .25) = 0.1 ln2 + 1.8 ln2 = 1.9 ln2
    expected = (1.2 * LN2 + 1.9 * LN2) / 2
    loss = SegLoss(config=LossConfig(label_smoothing=0.2))
    assert loss(lg, target).item() == pytest.approx(expected, rel=1e-6)
    nll, per, valid = pixel_ce(lg, target, 0.2)
    assert per[0, 0].tolist() == pytest.approx([1.2 * LN2, 1.9 * LN2, 0.0], rel=1e-6)
    assert nll[0, 0].tolist() == pytest.approx([LN2, 2 * LN2, 0.0], rel=1e-6)
    assert valid.tolist() == [[[True, True, False]]]
    # eps = 0 is plain CE
    assert SegLoss(config=LossConfig(label_smoothing=0.0))(lg, target).item() == pytest.approx((LN2 + 2 * LN2) / 2, rel=1e-6)
    # weighted: weight[label] per pixel, weighted mean
    w = np.array([1.0, 3.0, 1.0], np.float32)
    got = SegLoss(w, config=LossConfig(label_smoothing=0.2))(lg, target).item()
    assert got == pytest.approx((1.2 * LN2 + 3 * 1.9 * LN2) / 4, rel=1e-6)


def test_dice_added_to_ce_by_hand():
    # the hand case of test_dice_by_hand_single_class_mismatch: Dice 0.375; CE: pixel 0 ~0, pixel 1 = 100
    logits = torch.tensor([[[[50.0, 50.0]], [[-50.0, -50.0]]]])
    target = torch.tensor([[[0, 1]]])
    ce = (math.log1p(math.exp(-100)) + 100 + math.log1p(math.exp(-100))) / 2
    assert SegLoss(dice=True)(logits, target).item() == pytest.approx(ce + 0.375, rel=1e-6)
    got = SegLoss(config=LossConfig(dice=True, dice_weight=2.0))(logits, target).item()
    assert got == pytest.approx(ce + 0.75, rel=1e-6)


def test_noise_threshold_schedule_endpoints():
    assert noise_threshold(0, 50) == pytest.approx(math.log(100), abs=1e-12)
    assert noise_threshold(50, 50) == pytest.approx(math.log(10), abs=1e-12)
    assert noise_threshold(25, 50) == pytest.approx(1.5 * math.log(10), abs=1e-12)  # midpoint: (ln10 + ln100) / 2
    # the study's numbers for E = 50 (epochs counted from 1)
    assert noise_threshold(1, 50) == pytest.approx(4.6029, abs=1e-4)
    assert noise_threshold(25, 50) == pytest.approx(3.4539, abs=1e-4)
    # monotone decreasing, and other probabilities
    vals = [noise_threshold(e, 10) for e in range(11)]
    assert all(a > b for a, b in itertools.pairwise(vals))
    assert noise_threshold(0, 4, 0.05, 0.5) == pytest.approx(-math.log(0.05))
    assert noise_threshold(4, 4, 0.05, 0.5) == pytest.approx(-math.log(0.5))


def test_noise_mask_by_hand_denominators_and_fraction():
    # class-0 pixels with p = .5, .2, .05, .005 -> CE ln2, ln5, ln20, ln200; plus one ignored pixel
    lg, _ = _binary_logits([0.5, 0.2, 0.05, 0.005, 0.3])
    t = torch.tensor([[[0, 0, 0, 0, 255]]])
    ln = math.log
    # threshold ln100 drops ln200 only
    loss, frac = noise_mask_ce(lg, t, math.log(100), denominator="all")
    assert loss.item() == pytest.approx((ln(2) + ln(5) + ln(20)) / 4, rel=1e-5)
    assert frac.item() == pytest.approx(0.25)
    loss, _ = noise_mask_ce(lg, t, math.log(100), denominator="kept")
    assert loss.item() == pytest.approx((ln(2) + ln(5) + ln(20)) / 3, rel=1e-5)
    # threshold ln10 also drops ln20
    loss, frac = noise_mask_ce(lg, t, math.log(10), denominator="all")
    assert loss.item() == pytest.approx((ln(2) + ln(5)) / 4, rel=1e-5)
    assert frac.item() == pytest.approx(0.5)
    loss, _ = noise_mask_ce(lg, t, math.log(10), denominator="kept")
    assert loss.item() == pytest.approx((ln(2) + ln(5)) / 2, rel=1e-5)
    # trusted: the p=.005 pixel stays
    trusted = torch.tensor([[[False, False, False, True, False]]])
    loss, frac = noise_mask_ce(lg, t, math.log(10), trusted=trusted, denominator="kept")
    assert loss.item() == pytest.approx((ln(2) + ln(5) + ln(200)) / 3, rel=1e-5)
    assert frac.item() == pytest.approx(0.25)
    # a huge threshold is plain CE
    assert noise_mask_ce(lg, t, 1e9)[0].item() == pytest.approx(SegLoss()(lg, t).item(), rel=1e-6)


def test_noise_mask_class_weighted_by_hand():
    # pixels: class 0 with p(0)=.5 (CE ln2), class 1 with p(1)=.8 (CE ln1.25), class 1 with p(1)=.001 (CE ln1000)
    lg, _ = _binary_logits([0.5, 0.2, 0.999])
    t = torch.tensor([[[0, 1, 1]]])
    w = torch.tensor([2.0, 1.0])
    ln = math.log
    loss, frac = noise_mask_ce(lg, t, math.log(100), weight=w, denominator="all")
    assert loss.item() == pytest.approx((2 * ln(2) + ln(1.25)) / 4, rel=1e-4)
    loss, _ = noise_mask_ce(lg, t, math.log(100), weight=w, denominator="kept")
    assert loss.item() == pytest.approx((2 * ln(2) + ln(1.25)) / 3, rel=1e-4)
    assert frac.item() == pytest.approx(1 / 3)


def test_noise_mask_trusted_pixels_never_dropped():
    g = torch.Generator().manual_seed(3)
    lg = torch.randn(2, 4, 8, 8, generator=g) * 5
    t = torch.randint(0, 4, (2, 8, 8), generator=g)
    t[:, 0] = 255
    trusted = torch.rand(2, 8, 8, generator=g) < 0.5
    nll, _, valid = pixel_ce(lg, t)
    thr = 0.01  # would drop nearly everything
    _, frac = noise_mask_ce(lg, t, thr, trusted=trusted, denominator="kept")
    droppable = valid & ~trusted & (nll > thr)
    assert frac.item() == pytest.approx(droppable.sum().item() / valid.sum().item())
    # the kept-denominator loss is exactly the mean over trusted-or-low-loss pixels
    keep = valid & ~droppable
    got = noise_mask_ce(lg, t, thr, trusted=trusted, denominator="kept")[0].item()
    assert got == pytest.approx(nll[keep].mean().item(), rel=1e-5)
    # all trusted -> nothing dropped -> plain CE
    loss, frac = noise_mask_ce(lg, t, thr, trusted=torch.ones_like(trusted))
    assert frac.item() == 0.0 and loss.item() == pytest.approx(SegLoss()(lg, t).item(), rel=1e-5)


def test_segloss_noise_mask_schedule_and_stats():
    lg, _ = _binary_logits([0.5, 0.2, 0.05, 0.005])
    t = torch.zeros(1, 1, 4, dtype=torch.long)
    crit = SegLoss(config=LossConfig(noise_mask="cos", noise_denominator="kept"))
    assert crit.set_epoch(0, 10) == pytest.approx(math.log(100))
    crit(lg, t)
    assert crit.last_stats["noise_dropped"].item() == pytest.approx(0.25)
    assert crit.set_epoch(10, 10) == pytest.approx(math.log(10))
    assert crit(lg, t).item() == pytest.approx((math.log(2) + math.log(5)) / 2, rel=1e-5)
    assert crit.last_stats["noise_dropped"].item() == pytest.approx(0.5)
    const = SegLoss(config=LossConfig(noise_mask="const", noise_threshold=math.log(10)))
    assert const.set_epoch(1, 10) == pytest.approx(math.log(10))
    assert const(lg, t).item() == pytest.approx((math.log(2) + math.log(5)) / 4, rel=1e-5)


def test_ohem_by_hand_and_min_kept():
    ps = [0.9, 0.8, 0.6, 0.3, 0.1]
    lg, t = _binary_logits(ps)
    nll = [-math.log(p) for p in ps]
    # p < 0.7: .6, .3, .1
    loss, frac = ohem_ce(lg, t, thresh=0.7, min_kept=1)
    assert loss.item() == pytest.approx(sum(nll[2:]) / 3, rel=1e-5) and frac.item() == pytest.approx(0.6)
    # min_kept 4: the 4 hardest (threshold = the 5th smallest p = .9 > .7)
    loss, frac = ohem_ce(lg, t, thresh=0.7, min_kept=4)
    assert loss.item() == pytest.approx(sum(nll[1:]) / 4, rel=1e-5) and frac.item() == pytest.approx(0.8)
    # min_kept above the pixel count: all
    assert ohem_ce(lg, t, 0.7, 100)[0].item() == pytest.approx(sum(nll) / 5, rel=1e-5)
    # nothing below thresh and all tied: exactly min_kept kept, never an empty mean
    lg2, t2 = _binary_logits([0.9] * 6)
    loss, frac = ohem_ce(lg2, t2, 0.7, 2)
    assert loss.item() == pytest.approx(-math.log(0.9), rel=1e-5) and frac.item() == pytest.approx(2 / 6)
    # ignored pixels never kept; all ignored -> 0, not NaN
    t3 = t.clone()
    t3[0, 0, 2:] = 255
    loss, frac = ohem_ce(lg, t3, 0.7, 1)
    assert loss.item() == pytest.approx(nll[1], rel=1e-5)  # .9 and .8 labelled; none < .7; min_kept 1 -> .8
    loss, _ = ohem_ce(lg, torch.full_like(t, 255), 0.7, 3)
    assert loss.item() == 0.0
    # via SegLoss
    crit = SegLoss(config=LossConfig(ohem=True, ohem_min_kept=1))
    assert crit(lg, t).item() == pytest.approx(sum(nll[2:]) / 3, rel=1e-5)
    assert crit.last_stats["ohem_kept"].item() == pytest.approx(0.6)


def test_consistency_loss_zero_mse_for_rotation_equivariant_model():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1)
    x = torch.randn(2, 3, 6, 6)
    y = torch.randint(0, 4, (2, 6, 6))
    y[0, 0] = 255
    logits = model(x)
    for k in (1, 2, 3):
        total, ce, mse = consistency_loss(model, x, y, logits, k=k, return_parts=True)
        assert mse.item() == pytest.approx(0.0, abs=1e-10)
        assert ce.item() == pytest.approx(SegLoss()(logits, y).item(), rel=1e-5)
        assert total.item() == pytest.approx(ce.item(), rel=1e-6)
    # random k works too (and is drawn in 1..3)
    assert consistency_loss(model, x, y, logits).item() == pytest.approx(SegLoss()(logits, y).item(), rel=1e-5)


class _ColumnRamp(torch.nn.Module):
    """Logits = column index in every channel (not rotation-equivariant)."""

    def forward(self, x):
        n, _, h, w = x.shape
        return torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(n, 3, h, w) + 0 * x[:, :1]


def test_consistency_loss_by_hand_for_a_non_equivariant_model():
    model = _ColumnRamp()
    x = torch.randn(1, 3, 2, 2)
    y = torch.tensor([[[0, 1], [2, 255]]])
    logits = model(x)  # L[h, w] = w
    # k = 2: the rotated view's output O[h, w] = w rotated back by 180° is 1 - w; diff ±1 everywhere -> MSE 1
    # all channels equal -> uniform softmax -> CE ln 3 on each labelled pixel
    total, ce, mse = consistency_loss(model, x, y, logits, k=2, weight=0.5, return_parts=True)
    assert mse.item() == pytest.approx(1.0)
    assert ce.item() == pytest.approx(math.log(3), rel=1e-6)
    assert total.item() == pytest.approx(math.log(3) + 0.5, rel=1e-6)
    # SegLoss.model_loss adds it to the main loss (ln 3) when enabled
    crit = SegLoss(config=LossConfig(consistency=True, consistency_weight=0.5))
    loss, _ = crit.model_loss(model, x, y, k=2)
    assert loss.item() == pytest.approx(2 * math.log(3) + 0.5, rel=1e-6)
    assert crit.last_stats["consistency_mse"].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rotation"):
        consistency_loss(model, x, y, logits, k=4)


def test_consistency_gradients_flow_through_both_views():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(3, 3, 1))
    x = torch.randn(2, 3, 8, 8)
    y = torch.randint(0, 3, (2, 8, 8))
    crit = SegLoss(config=LossConfig(consistency=True))
    loss, _ = crit.model_loss(model, x, y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_loss_config_validation_messages():
    LossConfig().validate()
    with pytest.raises(ValueError, match=r"label_smoothing.*\[0, 1\)"):
        LossConfig(label_smoothing=1.0).validate()
    with pytest.raises(ValueError, match=r"label_smoothing"):
        LossConfig(label_smoothing=-0.1).validate()
    with pytest.raises(ValueError, match="noise_mask must be one of"):
        LossConfig(noise_mask="cosine").validate()
    with pytest.raises(ValueError, match="noise_denominator"):
        LossConfig(noise_denominator="valid").validate()
    with pytest.raises(ValueError, match="class_weights"):
        LossConfig(class_weights="median").validate()
    with pytest.raises(ValueError, match="only one"):
        LossConfig(ohem=True, noise_mask="cos").validate()
    with pytest.raises(ValueError, match="ohem_min_kept"):
        LossConfig(ohem_min_kept=-1).validate()
    with pytest.raises(ValueError, match="unknown loss option"):
        LossConfig.from_dict({"focal": True})
    with pytest.raises(ValueError, match="noise_p_start"):
        LossConfig(noise_p_start=0.0).validate()
    assert LossConfig.from_dict({"dice": True, "label_smoothing": 0.1}).dice
    with pytest.raises(ValueError, match="finite"):
        SegLoss(weights=np.array([1.0, np.inf]))


def test_all_ignored_losses_are_zero_not_nan():
    lg = torch.randn(1, 3, 2, 2, requires_grad=True)
    t = torch.full((1, 2, 2), 255)
    for cfg in (LossConfig(), LossConfig(label_smoothing=0.1, dice=True), LossConfig(noise_mask="cos"),
                LossConfig(ohem=True)):
        loss = SegLoss(config=cfg)(lg, t)
        assert loss.item() == 0.0
        loss.backward()


def test_out_of_range_target_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        SegLoss()(torch.zeros(1, 3, 1, 2), torch.tensor([[[0, 5]]]))


def test_logits_smaller_than_target_are_upsampled():
    lg = torch.zeros(1, 2, 2, 2)
    lg[:, 0] = 1.0
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    assert SegLoss()(lg, t).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_no_warnings_for_present_classes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        class_weights(np.array([0.5, 0.5]), "enet")


# ----------------------------------------------------------------------------- bootstrapping (Reed et al. 2015)

def test_bootstrap_soft_and_hard_by_hand():
    logits, px = _logits_2x2()
    target = torch.tensor([[[0, 2], [255, 1]]])
    beta = 0.8
    for mode in ("soft", "hard"):
        nll, loss, valid = pixel_ce(logits, target, bootstrap=mode, beta=beta)
        for (r, c), v in px.items():
            y = int(target[0, r, c])
            if y == 255:
                assert float(loss[0, r, c]) == 0.0 and not bool(valid[0, r, c])
                continue
            lse = math.log(sum(math.exp(a) for a in v))
            logp = [a - lse for a in v]
            if mode == "soft":
                self_term = -sum(math.exp(lp) * lp for lp in logp)  # entropy of the prediction
            else:
                self_term = -max(logp)  # CE against the predicted class
            expect = beta * _nll(v, y) + (1 - beta) * self_term
            assert float(loss[0, r, c]) == pytest.approx(expect, rel=1e-5), (mode, r, c)
            assert float(nll[0, r, c]) == pytest.approx(_nll(v, y), rel=1e-5)  # selection still uses the label's CE


def test_bootstrap_beta_one_or_none_is_plain_ce_and_trusted_keeps_label():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5)
    target = torch.randint(0, 4, (2, 5, 5))
    _, plain, _ = pixel_ce(logits, target, smoothing=0.1)
    for mode in ("none", "soft", "hard"):
        _, same, _ = pixel_ce(logits, target, smoothing=0.1, bootstrap=mode, beta=1.0)
        assert torch.allclose(same, plain)
    trusted = torch.zeros(2, 5, 5, dtype=torch.bool)
    trusted[0] = True
    _, boot, _ = pixel_ce(logits, target, smoothing=0.1, bootstrap="hard", beta=0.5, trusted=trusted)
    assert torch.allclose(boot[0], plain[0])  # trusted pixels: the label alone
    assert not torch.allclose(boot[1], plain[1])


def test_bootstrap_hard_pulls_toward_prediction_on_a_flipped_pixel():
    # a confident prediction of class 0 against a (noisy) label 1: bootstrapping shrinks the push toward the label
    logits = torch.tensor([4.0, 0.0, 0.0]).view(1, 3, 1, 1).requires_grad_(True)
    target = torch.tensor([[[1]]])
    grads = {}
    for mode, beta in (("none", 1.0), ("hard", 0.8)):
        logits.grad = None
        _, loss, _ = pixel_ce(logits, target, bootstrap=mode, beta=beta)
        loss.sum().backward()
        grads[mode] = logits.grad.clone().view(3)
    # d loss / d logit_label = p_label - q_label: less negative with bootstrapping (q_label = β instead of 1)
    assert grads["hard"][1] > grads["none"][1]
    assert grads["hard"][0] < grads["none"][0]  # and the predicted class is pushed down less


def test_bootstrap_through_segloss_config_noise_mask_and_ohem():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 6, 6)
    target = torch.randint(0, 3, (1, 6, 6))
    target[0, 0, :3] = 255
    for extra in ({}, {"noise_mask": "const", "noise_threshold": 1.0}, {"ohem": True, "ohem_min_kept": 5}):
        base = SegLoss(None, config=LossConfig(**extra))(logits, target)
        boot = SegLoss(None, config=LossConfig(bootstrap="soft", bootstrap_beta=0.95, **extra))(logits, target)
        off = SegLoss(None, config=LossConfig(bootstrap="soft", bootstrap_beta=1.0, **extra))(logits, target)
        assert torch.isfinite(boot) and float(boot) != pytest.approx(float(base))
        assert float(off) == pytest.approx(float(base), rel=1e-6)
    # the plain path equals the by-hand mean of the per-pixel bootstrapped losses
    _, per, valid = pixel_ce(logits, target, bootstrap="hard", beta=0.8)
    got = SegLoss(None, config=LossConfig(bootstrap="hard", bootstrap_beta=0.8))(logits, target)
    assert float(got) == pytest.approx(float(per[valid].mean()), rel=1e-6)


def test_bootstrap_config_validation():
    assert LossConfig.from_dict({"bootstrap": "hard", "bootstrap_beta": 0.8}).bootstrap == "hard"
    with pytest.raises(ValueError, match="bootstrap"):
        LossConfig.from_dict({"bootstrap": "medium"})
    with pytest.raises(ValueError, match="bootstrap_beta"):
        LossConfig.from_dict({"bootstrap": "soft", "bootstrap_beta": 1.5})
    with pytest.raises(ValueError, match="bootstrap"):
        pixel_ce(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long), bootstrap="x")
    with pytest.raises(ValueError, match="beta"):
        pixel_ce(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long), bootstrap="soft", beta=-0.1)


def test_bootstrap_is_a_train_recipe_field():
    from seghz.train.trainer import TrainConfig

    cfg = TrainConfig(scheme="hz7", bootstrap="soft", bootstrap_beta=0.95)
    lc = cfg.loss_config()
    assert (lc.bootstrap, lc.bootstrap_beta) == ("soft", 0.95)
    assert TrainConfig(scheme="hz7").loss_config().bootstrap == "none"  # off by default: old recipes unchanged
    with pytest.raises(ValueError, match="bootstrap"):
        TrainConfig(scheme="hz7", bootstrap="sometimes").validate()


def test_training_states_written_before_bootstrap_still_resume(tmp_path):
    from dataclasses import asdict

    from seghz.train.state import TrainStateError
    from seghz.train.trainer import TrainConfig, _check_resumable

    old = asdict(TrainConfig(scheme="hz7"))
    del old["bootstrap"], old["bootstrap_beta"]  # a state file from before the field existed
    info = {"recipe": old, "global_batch": 16, "steps_per_epoch": 5}
    _check_resumable(info, TrainConfig(scheme="hz7"), 16, 5, tmp_path / "s")  # missing = default: resumable
    with pytest.raises(TrainStateError, match="bootstrap: 'none' -> 'hard'"):
        _check_resumable(info, TrainConfig(scheme="hz7", bootstrap="hard"), 16, 5, tmp_path / "s")


# ------------------------------------------------------------------------ noise-robust losses: forward / GCE
# The hand example: 1×3×1×2 logits, pixel 0 = (2, 0.5, −1), pixel 1 = (0, 1, 3); labels (1, 0).
# Reference numbers from a float64 numpy computation that does not use seghz:
#   p0 = (0.785597034589, 0.175290392140, 0.039112573271), p1 = (0.042010066134, 0.114195199385, 0.843794734481)
#   T (η = 0.3, K = 3): 0.7 on the diagonal, 0.15 elsewhere; p̃ = p·T
#   p̃0 = (0.582078369024, 0.246409715677, 0.171511915299), p̃1 = (0.173105536374, 0.212807359662, 0.614087103965)
#   forward: −ln p̃0[1] = 1.400759617593, −ln p̃1[0] = 1.753853833639
#   CE:      −ln p0[1] = 1.741311296657, −ln p1[0] = 3.169846019556
#   GCE q=0.7: (1 − p0[1]^0.7)/0.7 = 1.006357419808, (1 − p1[0]^0.7)/0.7 = 1.273243584035
HAND_LOGITS = [[[[2.0, 0.0]], [[0.5, 1.0]], [[-1.0, 3.0]]]]  # N=1, C=3, H=1, W=2
FWD = [1.400759617593, 1.753853833639]
CE = [1.741311296657, 3.169846019556]
GCE = [1.006357419808, 1.273243584035]


def _hand():
    return torch.tensor(HAND_LOGITS), torch.tensor([[[1, 0]]])


def test_forward_transition_by_hand_with_an_absent_class():
    t = forward_transition(3, 0.3)
    assert np.allclose(t.numpy(), [[0.7, 0.15, 0.15], [0.15, 0.7, 0.15], [0.15, 0.15, 0.7]])
    t = forward_transition(4, 0.3, np.array([True, True, False, True]))
    assert np.allclose(t.numpy(), [[0.7, 0.15, 0, 0.15], [0.15, 0.7, 0, 0.15], [0, 0, 1, 0], [0.15, 0.15, 0, 0.7]])
    assert t.sum(1).tolist() == pytest.approx([1.0] * 4)
    assert torch.equal(forward_transition(3, 0.0), torch.eye(3, dtype=torch.float64))


def test_forward_and_gce_by_hand_with_ignore_trusted_and_class_weights():
    logits, y = _hand()
    fwd, valid = forward_ce(logits, y, forward_transition(3, 0.3))
    assert valid.tolist() == [[[True, True]]] and fwd[0, 0].tolist() == pytest.approx(FWD, rel=1e-6)
    gce, _ = generalized_ce(logits, y, q=0.7)
    assert gce[0, 0].tolist() == pytest.approx(GCE, rel=1e-6)
    # through SegLoss: class weights w = (0.5, 2, 1) weigh each pixel by its label: (2·l0 + 0.5·l1) / 2.5
    w = np.array([0.5, 2.0, 1.0], np.float32)
    got = SegLoss(w, config=LossConfig(robust="forward", noise_rate=0.3))(logits, y)
    assert float(got) == pytest.approx((2 * FWD[0] + 0.5 * FWD[1]) / 2.5, rel=1e-6)  # 1.471378460802
    got = SegLoss(w, config=LossConfig(robust="gce", gce_q=0.7))(logits, y)
    assert float(got) == pytest.approx((2 * GCE[0] + 0.5 * GCE[1]) / 2.5, rel=1e-6)  # 1.059734652653
    # an ignored pixel: 0 and not counted
    yi = torch.tensor([[[1, 255]]])
    for mode, ref in (("forward", FWD), ("gce", GCE)):
        per = forward_ce(logits, yi, forward_transition(3, 0.3))[0] if mode == "forward" else generalized_ce(logits, yi)[0]
        assert per[0, 0].tolist() == pytest.approx([ref[0], 0.0], rel=1e-6)
        assert float(SegLoss(w, config=LossConfig(robust=mode))(logits, yi)) == pytest.approx(ref[0], rel=1e-6)
    # a trusted pixel (pixel 1) trains on plain CE
    trusted = torch.tensor([[[False, True]]])
    for mode, ref in (("forward", FWD), ("gce", GCE)):
        got = SegLoss(None, config=LossConfig(robust=mode))(logits, y, trusted)
        assert float(got) == pytest.approx((ref[0] + CE[1]) / 2, rel=1e-6)  # 2.285302818575 / 2.088101719682


def test_forward_by_hand_with_an_absent_class_and_label_smoothing():
    logits, y = _hand()
    # class 2 absent from the training labels: K = 2, T = [[.7, .3, 0], [.3, .7, 0], [0, 0, 1]]
    # p̃0[1] = .3·p0[0] + .7·p0[1], p̃1[0] = .7·p1[0] + .3·p1[1]  ->  1.026154748434, 2.754110797713
    crit = SegLoss(None, config=LossConfig(robust="forward", noise_rate=0.3), present=np.array([True, True, False]))
    assert float(crit(logits, y)) == pytest.approx((1.026154748434 + 2.754110797713) / 2, rel=1e-6)
    # label smoothing ε = 0.1: −Σ_j s_j ln p̃_j with s = 0.9 on the label, 0.05 elsewhere (K = 3, η = 0.3)
    per, _ = forward_ce(logits, y, forward_transition(3, 0.3), smoothing=0.1)
    assert per[0, 0].tolist() == pytest.approx([1.375896292007, 1.680217772025], rel=1e-6)
    per, _ = generalized_ce(logits, y, q=0.7, smoothing=0.1)  # Σ_j s_j (1 − p_j^q)/q
    assert per[0, 0].tolist() == pytest.approx([0.980864372980, 1.209715096583], rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_forward_with_eta_zero_is_plain_ce_exactly(smoothing):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 3, generator=g) * 4
    y = torch.randint(0, 5, (2, 4, 3), generator=g)
    y[0, 0] = 255
    fwd, valid = forward_ce(logits, y, forward_transition(5, 0.0), smoothing)
    _, ce, valid_ce = pixel_ce(logits, y, smoothing)
    assert torch.equal(valid, valid_ce) and torch.equal(fwd, ce)
    w = np.linspace(0.5, 2, 5).astype(np.float32)
    a = SegLoss(w, config=LossConfig(robust="forward", noise_rate=0.0, label_smoothing=smoothing, dice=True))(logits, y)
    b = SegLoss(w, config=LossConfig(label_smoothing=smoothing, dice=True))(logits, y)
    assert float(a) == float(b)


def test_gce_small_q_approaches_ce_and_q_one_is_mae():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, 5, generator=g) * 3
    y = torch.randint(0, 4, (2, 5, 5), generator=g)
    y[1, :2] = 255
    _, ce, valid = pixel_ce(logits, y)
    gce, _ = generalized_ce(logits, y, q=1e-4)
    assert torch.allclose(gce[valid], ce[valid], rtol=2e-3, atol=1e-5)
    mae, _ = generalized_ce(logits, y, q=1.0)
    p = torch.exp(-ce)
    assert torch.allclose(mae[valid], (1 - p)[valid], atol=1e-6)
    assert bool((mae[valid] <= 1).all())  # MAE is bounded by 1


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 8), absent=st.integers(0, 2),
       eta=st.floats(0.01, 0.8), scale=st.sampled_from([1.0, 10.0, 1e3]))
def test_forward_loss_is_bounded_by_minus_ln_eta_over_k_minus_1(seed, k, absent, eta, scale):
    eta = min(eta, 0.99 * (k - 1) / k)
    g = torch.Generator().manual_seed(seed)
    c = k + absent
    present = np.array([True] * k + [False] * absent)
    logits = torch.randn(2, c, 3, 3, generator=g) * scale
    if absent:  # the bound is on the present classes' mass: keep the model's mass there
        logits[:, k:] = -1e4
    y = torch.randint(0, k, (2, 3, 3), generator=g)
    per, _ = forward_ce(logits, y, forward_transition(c, eta, present))
    bound = -math.log(eta / (k - 1))
    assert bool((per <= bound + 1e-4).all()) and bool((per >= -1e-6).all())
    crit = SegLoss(None, config=LossConfig(robust="forward", noise_rate=eta), present=present)
    assert float(crit(logits, y)) <= bound + 1e-4


@pytest.mark.parametrize("cfg", [
    {"robust": "forward", "noise_rate": 0.3}, {"robust": "forward", "noise_rate": 0.0},
    {"robust": "forward", "noise_rate": 0.3, "label_smoothing": 0.1, "dice": True},
    {"robust": "gce", "gce_q": 0.7}, {"robust": "gce", "gce_q": 1e-3, "label_smoothing": 0.1},
])
@pytest.mark.parametrize("present", [None, [True, True, False, True]])
def test_robust_gradients_are_finite_for_extreme_logits(cfg, present):
    logits = torch.tensor([1e4, -1e4, -1e4, 1e4, -1e4, 1e4, 0.0, -1e4]).view(1, 4, 1, 2).repeat(2, 1, 3, 1)
    logits = logits.clone().requires_grad_()
    y = torch.tensor([1, 0, 3, 2, 255, 1]).view(2, 3, 1).repeat(1, 1, 2)
    trusted = torch.zeros_like(y, dtype=torch.bool)
    trusted[0, 0] = True
    crit = SegLoss(np.ones(4, np.float32), config=LossConfig(**cfg),
                   present=None if present is None else np.array(present))
    loss = crit(logits, y, trusted)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and bool(torch.isfinite(logits.grad).all())


@pytest.mark.parametrize("d, msg", [
    ({"robust": "forwards"}, "robust .*must be one of none, forward, gce"),
    ({"robust": "forward", "noise_rate": -0.1}, r"noise_rate η must be in \[0"),
    ({"robust": "forward", "noise_rate": 1.0}, r"noise_rate η must be in \[0"),
    ({"robust": "forward", "noise_rate": float("nan")}, "noise_rate"),
    ({"robust": "gce", "gce_q": 0.0}, r"gce_q must be in \(0, 1\]"),
    ({"robust": "gce", "gce_q": 1.5}, r"gce_q must be in \(0, 1\]"),
    ({"robust": "forward", "noise_mask": "cos"}, "cannot be combined with the noise mask"),
    ({"robust": "gce", "ohem": True}, "cannot be combined with OHEM"),
    ({"robust": "gce", "bootstrap": "soft"}, "cannot be combined with bootstrapping"),
])
def test_robust_config_validation_messages(d, msg):
    with pytest.raises(ValueError, match=msg):
        LossConfig.from_dict(d)


def test_forward_noise_rate_is_checked_against_the_present_classes():
    # K = 2 present: η must be below 1/2
    with pytest.raises(ValueError, match=r"\(K−1\)/K\) = \[0, 0.5000\) for K = 2 present"):
        SegLoss(None, config=LossConfig(robust="forward", noise_rate=0.6), present=np.array([True, False, True]))
    with pytest.raises(ValueError, match="at least 2 classes present"):
        SegLoss(None, config=LossConfig(robust="forward"), present=np.array([False, True, False]))
    with pytest.raises(ValueError, match="3 entries for 4 classes"):
        forward_transition(4, 0.3, np.array([True, True, True]))
    # without `present`, K = C of the logits, checked on the first call
    crit = SegLoss(None, config=LossConfig(robust="forward", noise_rate=0.6))
    with pytest.raises(ValueError, match="K = 2"):
        crit(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"GCE q must be in \(0, 1\]"):
        generalized_ce(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long), q=0)
    # a loss built for 3 classes refuses logits with 4
    crit = SegLoss(None, config=LossConfig(robust="forward"), present=np.ones(3, bool))
    with pytest.raises(ValueError, match="built for 3 classes"):
        crit(torch.zeros(1, 4, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long))


@pytest.mark.parametrize("mode", ["forward", "gce"])
def test_robust_loss_decreases_under_sgd_on_a_toy_problem(mode):
    # a 1×1 conv on 3 colour-coded classes with 20 % of the labels flipped: the configured loss must go down
    g = torch.Generator().manual_seed(0)
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    truth = torch.randint(0, 3, (4, 8, 8), generator=g)
    x = colours[truth].permute(0, 3, 1, 2) + 0.1 * torch.randn(4, 3, 8, 8, generator=g)
    flip = torch.rand(4, 8, 8, generator=g) < 0.2
    y = torch.where(flip, (truth + 1) % 3, truth)
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 1)
    crit = SegLoss(None, config=LossConfig(robust=mode, noise_rate=0.2), present=np.ones(3, bool))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = crit(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0] and all(b <= a + 1e-6 for a, b in itertools.pairwise(losses[5:]))
    acc = float((net(x).argmax(1) == truth).float().mean())
    assert acc > 0.95  # the noise-robust model recovers the clean classes


def test_robust_loss_is_a_train_recipe_field():
    from dataclasses import asdict

    from seghz.train.state import TrainStateError
    from seghz.train.trainer import TrainConfig, _check_resumable

    lc = TrainConfig(scheme="hz7", robust="forward", noise_rate=0.25).loss_config()
    assert (lc.robust, lc.noise_rate, lc.gce_q) == ("forward", 0.25, 0.7)
    assert TrainConfig(scheme="hz7").loss_config().robust == "none"  # off by default: old recipes unchanged
    with pytest.raises(ValueError, match="robust"):
        TrainConfig(scheme="hz7", robust="mae").validate()
    # hz7 has 7 classes: η must be below 6/7 whatever the data
    with pytest.raises(ValueError, match=r"below \(K−1\)/K = 0.8571 for the 7 classes of scheme hz7"):
        TrainConfig(scheme="hz7", robust="forward", noise_rate=0.9).validate()
    TrainConfig(scheme="hz7", robust="gce", noise_rate=0.9).validate()  # η only matters for forward
    old = asdict(TrainConfig(scheme="hz7"))
    for k in ("robust", "noise_rate", "gce_q"):
        del old[k]  # a state file from before the fields existed
    info = {"recipe": old, "global_batch": 16, "steps_per_epoch": 5}
    _check_resumable(info, TrainConfig(scheme="hz7"), 16, 5, Path("s"))
    with pytest.raises(TrainStateError, match="robust: 'none' -> 'gce'"):
        _check_resumable(info, TrainConfig(scheme="hz7", robust="gce"), 16, 5, Path("s"))


def test_gce_warmup_moves_q_from_ce_to_gce_by_hand():
    from seghz.train.losses import gce_warmup_q

    # q = 0.7 · min(1, (epoch − 1) / (0.5 · 10)): 0 in epoch 1, full from epoch 6; no warm-up: q throughout
    assert [gce_warmup_q(e, 10, 0.7, 0.5) for e in range(1, 11)] == pytest.approx(
        [0.0, 0.14, 0.28, 0.42, 0.56, 0.7, 0.7, 0.7, 0.7, 0.7])
    assert [gce_warmup_q(e, 4, 0.7, 0.0) for e in (1, 4)] == [0.7, 0.7]
    assert gce_warmup_q(2, 3, 0.5, 1.0) == pytest.approx(0.5 / 3)
    logits, y = _hand()
    crit = SegLoss(None, config=LossConfig(robust="gce", gce_q=0.7, gce_warmup=0.5))
    assert crit.gce_q == 0.0  # before set_epoch: the first epoch's q
    crit.set_epoch(1, 10)
    assert float(crit(logits, y)) == pytest.approx(sum(CE) / 2, rel=1e-6)  # plain CE
    crit.set_epoch(3, 10)  # q = 0.28: (1 − p^q) / q with p = exp(−CE) of each pixel
    by_hand = [(1 - math.exp(-0.28 * ce)) / 0.28 for ce in CE]
    assert float(crit(logits, y)) == pytest.approx(sum(by_hand) / 2, rel=1e-6)
    crit.set_epoch(6, 10)
    assert float(crit(logits, y)) == pytest.approx(sum(GCE) / 2, rel=1e-6)  # the full GCE (q 0.7)
    # trusted pixels stay on CE throughout; bad values are refused
    crit.set_epoch(3, 10)
    assert float(crit(logits, y, torch.tensor([[[False, True]]]))) == pytest.approx((by_hand[0] + CE[1]) / 2, rel=1e-6)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="gce_warmup"):
            LossConfig(robust="gce", gce_warmup=bad).validate()


def test_estimate_transition_by_hand_with_and_without_shrinkage():
    reviewed = [np.array([[0, 0, 1, 1]], np.uint8)]
    given = [np.array([[0, 1, 1, 1]], np.uint8)]
    # counts: reviewed 0 -> given 0, 1 (one each); reviewed 1 -> given 1 (two); class 2 never reviewed
    t, counts = estimate_transition(given, reviewed, 3, prior_regions=0)
    assert counts.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert np.allclose(t, [[0.5 / 1.001, 0.5 / 1.001, 0.001 / 1.001], [0.001 / 1.002, 1 / 1.002, 0.001 / 1.002], [0, 0, 1]])
    # one region per class, prior 1 region: half the counted row, half the pooled symmetric row (η̂ = 1/4 over {0, 1})
    t, _ = estimate_transition(given, reviewed, 3, prior_regions=1)
    assert np.allclose(t, [[0.625 / 1.001, 0.375 / 1.001, 0.001 / 1.001], [0.125 / 1.001, 0.875 / 1.001, 0.001 / 1.001],
                           [0, 0, 1]])
    assert np.allclose(t.sum(1), 1)
    # a mask keeps only the reviewed pixels; ignore (255) in either map does not count
    t, counts = estimate_transition(given, reviewed, 3, masks=[np.array([[True, False, True, True]])], prior_regions=0)
    assert counts.tolist() == [[1, 0, 0], [0, 2, 0], [0, 0, 0]]
    _, counts = estimate_transition([np.array([[0, 255, 1, 1]], np.uint8)], [np.array([[255, 0, 1, 1]], np.uint8)], 3)
    assert counts.tolist() == [[0, 0, 0], [0, 2, 0], [0, 0, 0]]
    # nothing reviewed at all: identity
    t, counts = estimate_transition([np.full((2, 2), 255, np.uint8)], [np.zeros((2, 2), np.uint8)], 3)
    assert np.array_equal(t, np.eye(3)) and counts.sum() == 0


def test_estimate_transition_counts_regions_not_pixels_for_its_shrinkage():
    # class 0: one big wrong region (given 1) in one map; class 1 right everywhere in many small regions
    rev = np.zeros((20, 20), np.uint8)
    giv = np.ones((20, 20), np.uint8)
    rev2 = np.ones((20, 20), np.uint8)
    rev2[::2, ::2] = 0  # 100 single-pixel regions of class 0 (8-connectivity: diagonal neighbours are 2 apart)
    giv2 = rev2.copy()
    t, counts = estimate_transition([giv, giv2], [rev, rev2], 2, prior_regions=20)
    # class 0 seen in 101 regions: 400 px given 1, 100 px given 0; its own row dominates (λ = 101/121)
    lam = 101 / 121
    eta = 400 / 800
    sym0 = [1 - min(eta, 0.5 - 1e-6), min(eta, 0.5 - 1e-6)]
    row0 = lam * np.array([100 / 500, 400 / 500]) + (1 - lam) * np.array(sym0)
    assert counts.tolist() == [[100, 400], [0, 300]]
    assert np.allclose(t[0], row0 / row0.sum(), atol=1e-6)


def test_estimate_transition_recovers_a_known_noise_matrix_from_many_regions():
    rng = np.random.default_rng(0)
    true_t = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.05, 0.05, 0.9]])
    reviewed, given = [], []
    for _ in range(60):  # 60 maps of 8×8 blocks of 4×4 px: 3840 regions (not all separate), flipped per block
        blocks = rng.integers(0, 3, (8, 8))
        noisy = np.array([[rng.choice(3, p=true_t[b]) for b in row] for row in blocks])
        reviewed.append(np.kron(blocks, np.ones((4, 4), int)).astype(np.uint8))
        given.append(np.kron(noisy, np.ones((4, 4), int)).astype(np.uint8))
    t, _ = estimate_transition(given, reviewed, 3)
    assert np.abs(t - true_t).max() < 0.05


@pytest.mark.parametrize("t, msg", [
    ([[1.0, 0.0]], "square"),
    ([[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]][:2], "square"),
    ([[1.2, -0.2], [0, 1]], ">= 0"),
    ([[0.7, 0.2], [0.3, 0.7]], "row 0 sums to 0.9000"),
    ([[0.0, 1.0], [0.3, 0.7]], "positive diagonal"),
    ([["a", 1], [0, 1]], "matrix of numbers"),
])
def test_check_transition_names_the_problem(t, msg):
    with pytest.raises(ValueError, match=msg):
        check_transition(t)
    with pytest.raises(ValueError, match=msg):
        LossConfig(robust="forward", noise_transition=t).validate()


def test_explicit_transition_matches_the_symmetric_one_and_an_asymmetric_one_by_hand():
    logits, y = _hand()
    sym = forward_transition(3, 0.3).tolist()
    a = SegLoss(None, config=LossConfig(robust="forward", noise_rate=0.3))(logits, y)
    b = SegLoss(None, config=LossConfig(robust="forward", noise_rate=0.0, noise_transition=sym))(logits, y)
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    # asymmetric T: per pixel −ln Σ_i p_i T[i, y]
    t = [[0.6, 0.3, 0.1], [0.2, 0.8, 0.0], [0.1, 0.1, 0.8]]
    p = torch.tensor(HAND_LOGITS).softmax(1)[0, :, 0]  # C×2 pixels
    want = [-math.log(sum(float(p[i, px]) * t[i][int(y[0, 0, px])] for i in range(3))) for px in range(2)]
    got = SegLoss(None, config=LossConfig(robust="forward", noise_transition=t))(logits, y)
    assert float(got) == pytest.approx(sum(want) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="built for 3 classes"):
        SegLoss(None, config=LossConfig(robust="forward", noise_transition=t))(torch.zeros(1, 4, 1, 2), y)
