"""Tests of the v2 inference engine: named views, batched views × windows, merge, blending, uncertainty,
valid masks, OOM back-off, cancellation and input checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_core import torch_one_thread  # noqa: F401 (fixture)
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.errors import SegHZError
from seghz.infer.engine import (
    D4_VIEWS,
    TTA_MODES,
    VIEWS,
    Cancelled,
    PredictionResult,
    Predictor,
    sliding_windows,
    tta_views,
    window_weights,
)

C = 4
MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)
ALL_NAMES = ["identity", "lr", "tb", "lrtb", "diag", "diag2", "rot90", "rot180", "rot270"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _image(h, w, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _normalise(img):
    x = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def _pointwise(seed=0, classes=C):
    torch.manual_seed(seed)
    m = torch.nn.Conv2d(3, classes, kernel_size=1)
    with torch.no_grad():
        m.weight.mul_(4.0)
    return m.eval()


def _conv_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, C, 3, padding=1)
    ).eval()


class _Counting(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.sizes = []

    def forward(self, x):
        self.calls += 1
        self.sizes.append(x.shape[0])
        return self.inner(x)


# ---------------------------------------------------------------- views


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 10_000))
def test_every_named_view_is_undone_by_its_inverse(h, w, seed):
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
    assert sorted(VIEWS) == sorted(ALL_NAMES)
    for name in ALL_NAMES:
        fwd, inv = VIEWS[name]
        y = fwd(x)
        assert sorted(y.shape[2:]) == sorted((h, w)), name
        assert torch.equal(inv(y), x), name


def test_view_semantics_and_modes():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    assert torch.equal(VIEWS["lr"][0](x), x.flip(3))
    assert torch.equal(VIEWS["tb"][0](x), x.flip(2))
    assert torch.equal(VIEWS["lrtb"][0](x), VIEWS["rot180"][0](x))
    assert torch.equal(VIEWS["diag"][0](x), x.transpose(2, 3))
    d2 = VIEWS["diag2"][0](x)
    assert d2.shape == (1, 1, 4, 3) and d2[0, 0, 0, 0] == x[0, 0, -1, -1]
    assert TTA_MODES["none"] == ["identity"] and TTA_MODES["flip"] == ["identity", "lr"]
    assert TTA_MODES["d4"] == ["identity", "lr", "tb", "diag", "diag2", "rot90", "rot180", "rot270"]
    outs = {tuple(f(x).flatten().tolist()) + tuple(f(x).shape) for _, f, _ in tta_views("d4")}
    assert len(outs) == 8  # 8 distinct elements
    assert [v[0] for v in D4_VIEWS] == TTA_MODES["d4"]
    assert [v[0] for v in tta_views(["lrtb", "diag2"])] == ["lrtb", "diag2"]


def test_unknown_view_names_are_listed():
    with pytest.raises(ValueError) as e:
        tta_views(["identity", "spin", "flop"])
    assert "spin" in str(e.value) and "flop" in str(e.value) and "diag2" in str(e.value)
    with pytest.raises(ValueError, match="unknown TTA mode"):
        tta_views("d8")


# ---------------------------------------------------------------- batched == naive loop


def _naive(model, img, tile, overlap, views, blend="uniform", merge="softmax"):
    """Views one after another, windows one at a time."""
    x = _normalise(img)
    h, w = img.shape[:2]
    acc = np.zeros((C, h, w), np.float64)
    ws = np.zeros((h, w), np.float64)
    for r, c, th, tw in sliding_windows(h, w, tile, overlap):
        xi = x[None, :, r : r + th, c : c + tw]
        ph, pw = (-th) % 32, (-tw) % 32
        if ph or pw:
            xi = F.pad(xi, (0, pw, 0, ph), mode="reflect" if (ph < th and pw < tw) else "replicate")
        outs = []
        for name in views:
            fwd, inv = VIEWS[name]
            with torch.no_grad():
                outs.append(inv(model(fwd(xi)))[0, :, :th, :tw])
        o = torch.stack(outs)
        p = o.mean(0).softmax(0) if merge == "logits" else o.softmax(1).mean(0)
        wt = window_weights(th, tw, blend)
        acc[:, r : r + th, c : c + tw] += p.numpy() * wt
        ws[r : r + th, c : c + tw] += wt
    return (acc / ws).astype(np.float32)


@pytest.mark.parametrize(
    "h,w,tile,overlap,bs,blend,merge",
    [
        (50, 70, 32, 0.25, 5, "uniform", "softmax"),
        (40, 45, 32, 0.5, 16, "gaussian", "logits"),
        (10, 40, 64, 0.25, 8, "cosine", "softmax"),  # smaller than a tile, non-square: transposing views
    ],
)
def test_batched_d4_equals_naive_loop(h, w, tile, overlap, bs, blend, merge):
    model = _conv_model()
    img = _image(h, w, seed=h + w)
    pr = Predictor(model, C, MEAN, STD, tile=tile, overlap=overlap, batch_size=bs, device="cpu", blend=blend, merge=merge)
    got = pr.predict_proba(img, tta="d4")
    ref = _naive(model, img, tile, overlap, TTA_MODES["d4"], blend, merge)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_views_and_windows_share_one_batch():
    counting = _Counting(_conv_model())
    pr = Predictor(counting, C, MEAN, STD, tile=32, overlap=0.0, batch_size=16, device="cpu")
    assert len(sliding_windows(64, 64, 32, 0.0)) == 4
    pr.predict_proba(_image(64, 64), tta="d4")  # 4 windows × 8 views = 32 inputs
    assert counting.calls == 2 and counting.sizes == [16, 16]


# ---------------------------------------------------------------- pointwise: tiling is invisible


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 70), w=st.integers(1, 70), tile=st.integers(8, 48), overlap=st.floats(0, 0.7),
    blend=st.sampled_from(["uniform", "gaussian", "cosine"]), tta=st.sampled_from(["none", "flip", "d4"]),
)
def test_pointwise_tiled_equals_whole_image(h, w, tile, overlap, blend, tta):
    model = _pointwise()
    img = _image(h, w, seed=h * 100 + w)
    with torch.no_grad():
        ref = model(_normalise(img)[None]).softmax(1)[0].numpy()
    pr = Predictor(model, C, MEAN, STD, tile=tile, overlap=overlap, batch_size=7, device="cpu", blend=blend)
    np.testing.assert_allclose(pr.predict_proba(img, tta=tta), ref, atol=1e-5)


# ---------------------------------------------------------------- blending weights


@pytest.mark.parametrize("blend", ["gaussian", "cosine", "uniform"])
@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (2, 3), (5, 9), (32, 32), (17, 64)])
def test_window_weights_positive_and_centre_weighted(blend, h, w):
    wt = window_weights(h, w, blend)
    assert wt.shape == (h, w) and wt.dtype == np.float32
    assert (wt > 0).all() and np.isfinite(wt).all()
    np.testing.assert_allclose(wt, wt[::-1, ::-1], rtol=1e-6)  # symmetric
    assert wt.max() == wt[(h - 1) // 2, (w - 1) // 2]
    if blend != "uniform" and min(h, w) >= 5:
        assert wt[0, 0] < wt[h // 2, w // 2]


@pytest.mark.parametrize("blend", ["gaussian", "cosine"])
@pytest.mark.parametrize("h,w,tile,overlap", [(10, 13, 32, 0.25), (40, 50, 16, 0.25), (33, 33, 32, 0.5), (64, 20, 16, 0.0)])
def test_coverage_sums_positive_everywhere(blend, h, w, tile, overlap):
    cover = np.zeros((h, w), np.float64)
    for r, c, th, tw in sliding_windows(h, w, tile, overlap):
        cover[r : r + th, c : c + tw] += window_weights(th, tw, blend)
    assert (cover > 0).all()
    # a constant model blends to exactly its constant distribution, borders included
    const = torch.nn.Conv2d(3, C, 1)
    with torch.no_grad():
        const.weight.zero_()
        const.bias.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    p = Predictor(const, C, MEAN, STD, tile=tile, overlap=overlap, device="cpu", blend=blend).predict_proba(_image(h, w))
    ref = torch.tensor([0.0, 1.0, 2.0, 3.0]).softmax(0).numpy()
    np.testing.assert_allclose(p, np.broadcast_to(ref[:, None, None], p.shape), atol=1e-6)


def test_gaussian_blend_profile_is_the_documented_one():
    """engine._profile: sigma = 0.25 of the window length, so the window's border gets exp(-2) ~ 0.135 of the
    centre; pixel i of n sits at t = (i + 0.5) / n and weighs exp(-0.5 ((t - 0.5) / 0.25)^2) = exp(-8 (t - 0.5)^2)."""
    n = 65  # odd: one pixel exactly at the centre
    wt = window_weights(n, n, "gaussian").astype(np.float64)
    t = (np.arange(n) + 0.5) / n
    prof = np.exp(-8.0 * (t - 0.5) ** 2)
    np.testing.assert_allclose(wt, np.outer(prof, prof), rtol=1e-6)
    c = n // 2
    assert wt[c, c] == pytest.approx(1.0, abs=1e-7)  # centre weight 1
    # the pixel at the middle of an edge: exp(-8 (0.5 - 0.5/n)^2), exp(-2) in the limit of a wide window
    assert wt[0, c] == pytest.approx(math.exp(-2.0 * (1 - 1 / n) ** 2), rel=1e-6)
    big = window_weights(1001, 1001, "gaussian")
    assert big[500, 0] == pytest.approx(math.exp(-2.0), rel=0.01)
    assert big[0, 0] == pytest.approx(math.exp(-4.0), rel=0.01)  # a corner: border x border
    # quarter of the way in (t = 0.25): exp(-0.5)
    q = window_weights(1, 1000, "gaussian")[0]
    assert q[249] == pytest.approx(math.exp(-0.5), rel=0.01)
    # the cosine profile is the Hann window at pixel centres, floored at 1e-3 (never 0)
    cw = window_weights(1, n, "cosine")[0].astype(np.float64)
    np.testing.assert_allclose(cw, np.maximum(np.sin(np.pi * t) ** 2, 1e-3), rtol=1e-6)
    np.testing.assert_array_equal(window_weights(7, 9, "uniform"), np.ones((7, 9), np.float32))


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 70), w=st.integers(1, 70), tile=st.integers(4, 40), overlap=st.floats(0.0, 0.9),
    blend=st.sampled_from(["uniform", "gaussian", "cosine"]),
    logits=st.lists(st.floats(-6.0, 6.0, allow_nan=False), min_size=C, max_size=C),
)
def test_blending_a_constant_prediction_returns_the_constant(h, w, tile, overlap, blend, logits):
    """Whatever the window layout and profile, overlapping windows that all predict the same distribution blend
    to exactly that distribution at every pixel (weights are normalised by their per-pixel sum)."""
    const = torch.nn.Conv2d(3, C, 1)
    with torch.no_grad():
        const.weight.zero_()
        const.bias.copy_(torch.tensor(logits))
    pr = Predictor(const, C, MEAN, STD, tile=tile, overlap=overlap, batch_size=5, device="cpu", blend=blend)
    p = pr.predict_proba(_image(h, w))
    want = torch.tensor(logits).softmax(0).numpy()
    np.testing.assert_allclose(p, np.broadcast_to(want[:, None, None], (C, h, w)), atol=2e-6)
    # and the weights alone: every pixel is covered with a positive total weight
    cover = np.zeros((h, w), np.float64)
    for r, c, th, tw in sliding_windows(h, w, tile, overlap):
        cover[r : r + th, c : c + tw] += window_weights(th, tw, blend)
    assert (cover > 0).all()


# ---------------------------------------------------------------- merge


def test_logit_merge_differs_but_both_are_distributions():
    model = _conv_model(seed=3)
    img = _image(40, 40, seed=5)
    soft = Predictor(model, C, MEAN, STD, tile=32, device="cpu").predict_proba(img, tta="d4")
    logit = Predictor(model, C, MEAN, STD, tile=32, device="cpu", merge="logits").predict_proba(img, tta="d4")
    for p in (soft, logit):
        assert (p >= 0).all()
        np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
    assert np.abs(soft - logit).max() > 1e-4
    # per-call override gives the same as the constructor setting
    np.testing.assert_allclose(
        Predictor(model, C, MEAN, STD, tile=32, device="cpu").predict_proba(img, tta="d4", merge="logits"), logit, atol=1e-6
    )


# ---------------------------------------------------------------- uncertainty


def _gradient_model():
    """Class 0 logit = 10 × horizontal gradient of channel 0; class 1 logit = 0: not flip/rotation invariant."""
    m = torch.nn.Conv2d(3, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        m.weight.zero_()
        m.weight[0, 0, 1, 2] = 10.0
        m.weight[0, 0, 1, 0] = -10.0
    return m.eval()


def test_pointwise_model_has_no_view_disagreement():
    img = _image(45, 60, seed=2)
    pr = Predictor(_pointwise(), C, MEAN, STD, tile=32, overlap=0.25, batch_size=8, device="cpu", blend="gaussian")
    res = pr.predict_full(img, tta="d4", seams=True, return_proba=True)
    assert isinstance(res, PredictionResult)
    assert res.mask.dtype == np.uint8 and res.confidence.dtype == np.float32
    assert res.entropy.dtype == np.float32 and res.disagreement.dtype == np.float32
    assert np.all(res.disagreement == 0)
    assert np.all(res.seam == 0)
    np.testing.assert_array_equal(res.mask, res.proba.argmax(0))
    np.testing.assert_allclose(res.confidence, res.proba.max(0))
    np.testing.assert_allclose(res.proba, pr.predict_proba(img, tta="d4"), atol=1e-6)
    assert res.entropy.min() >= 0 and res.entropy.max() <= math.log(C) + 1e-5


def test_non_invariant_model_disagrees_and_entropy_is_bounded():
    img = _image(40, 40, seed=7)
    pr = Predictor(_gradient_model(), 2, MEAN, STD, tile=32, overlap=0.25, device="cpu")
    res = pr.predict_full(img, tta="d4")
    assert res.disagreement.max() > 0
    assert res.disagreement.min() >= 0 and res.disagreement.max() <= 1
    assert res.entropy.min() >= 0 and res.entropy.max() <= math.log(2) + 1e-5
    assert res.seam is None and res.proba is None
    one = pr.predict_full(img, tta="none")
    assert np.all(one.disagreement == 0)  # a single view never disagrees


class _PositionModel(torch.nn.Module):
    """Class 0 logit ramps across the window: overlapping windows disagree on the same pixel."""

    def forward(self, x):
        n, _, h, w = x.shape
        ramp = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(n, 1, h, w)
        return torch.cat([ramp, torch.zeros_like(ramp)], 1)


def test_seams_show_where_windows_disagree():
    pr = Predictor(_PositionModel(), 2, MEAN, STD, tile=32, overlap=0.5, device="cpu")
    res = pr.predict_full(_image(32, 64), seams=True)
    assert res.seam.shape == (32, 64)
    assert res.seam.min() >= 0 and res.seam.max() <= 1 and res.seam.max() > 0


# ---------------------------------------------------------------- valid mask


def test_valid_mask_masks_pixels_and_skips_windows():
    counting = _Counting(_pointwise())
    pr = Predictor(counting, C, MEAN, STD, tile=16, overlap=0.0, batch_size=1, device="cpu")
    img = _image(48, 48)
    valid = np.zeros((48, 48), bool)
    valid[:20, :20] = True  # touches windows (0,0), (0,16), (16,0), (16,16) only
    res = pr.predict_full(img, valid_mask=valid, seams=True)
    assert counting.calls == 4
    assert np.all(res.mask[~valid] == 255) and np.all(res.mask[valid] < C)
    assert np.all(res.confidence[~valid] == 0) and np.all(res.confidence[valid] > 0)
    assert np.isnan(res.entropy[~valid]).all() and np.isfinite(res.entropy[valid]).all()
    assert np.isnan(res.disagreement[~valid]).all() and np.isnan(res.seam[~valid]).all()
    full = pr.predict_full(img)
    np.testing.assert_array_equal(res.mask[valid], full.mask[valid])


def test_valid_mask_errors():
    pr = Predictor(_pointwise(), C, MEAN, STD, tile=16, device="cpu")
    with pytest.raises(ValueError, match="valid_mask"):
        pr.predict_full(_image(20, 20), valid_mask=np.ones((20, 21), bool))
    with pytest.raises(ValueError, match="no valid pixels"):
        pr.predict_full(_image(20, 20), valid_mask=np.zeros((20, 20), bool))


# ---------------------------------------------------------------- progress, cancel, OOM, bad input


def test_progress_and_cancel_with_batched_views():
    counting = _Counting(_pointwise())
    pr = Predictor(counting, C, MEAN, STD, tile=16, overlap=0.0, batch_size=8, device="cpu")
    seen = []
    pr.predict_proba(_image(48, 48), tta="d4", progress=lambda f, m: seen.append(f))
    assert len(seen) == 9 and seen[-1] == 1.0 and seen == sorted(seen)  # 9 windows × 8 views / 8
    counting.calls = 0
    asked = []

    def cancel():
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(Cancelled):
        pr.predict_full(_image(48, 48), tta="d4", should_cancel=cancel)
    assert counting.calls == 2


class _OOMAbove(torch.nn.Module):
    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return self.inner(x)


def test_oom_halves_the_batch_then_raises():
    inner = _pointwise()
    img = _image(32, 32)
    ref = Predictor(inner, C, MEAN, STD, tile=16, device="cpu").predict_proba(img, tta="d4")
    m = _OOMAbove(inner, 3)
    p = Predictor(m, C, MEAN, STD, tile=16, overlap=0.0, batch_size=16, device="cpu").predict_proba(img, tta="d4")
    np.testing.assert_allclose(p, ref, atol=1e-6)
    assert m.sizes[:3] == [16, 8, 4] and set(m.sizes[3:]) == {2}
    with pytest.raises(SegHZError, match="out of GPU memory"):
        Predictor(_OOMAbove(inner, 0), C, MEAN, STD, tile=16, batch_size=4, device="cpu").predict_proba(img)


def test_bad_inputs_raise_value_error():
    m = _pointwise()
    for kw in ({"overlap": 1.0}, {"overlap": -0.1}, {"tile": 0}, {"tile": -4}, {"batch_size": 0},
               {"merge": "median"}, {"blend": "box"}):
        with pytest.raises(ValueError):
            Predictor(m, C, MEAN, STD, device="cpu", **kw)
    pr = Predictor(m, C, MEAN, STD, tile=16, device="cpu")
    for bad in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((0, 8, 3), np.uint8)):
        with pytest.raises(ValueError):
            pr.predict_proba(bad)
        with pytest.raises(ValueError):
            pr.predict_full(bad)
    pr.overlap = 1.5  # changed after construction: still checked per call
    with pytest.raises(ValueError, match="overlap"):
        pr.predict_proba(_image(8, 8))
    with pytest.raises(ValueError, match="unknown TTA"):
        Predictor(m, C, MEAN, STD, device="cpu").predict_full(_image(8, 8), tta=["lr", "nope"])


def test_default_device_is_cpu_without_cuda():
    pr = Predictor(_pointwise(), C, MEAN, STD, tile=16)
    assert pr.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cpu_runs_channels_last_with_the_contiguous_model_s_probabilities():
    """The engine puts the model in channels_last on the CPU too (1.2–1.5× faster CPU inference, docs/benchmarks.md);
    the layout must not change the answer: probabilities equal a contiguous copy's forward pass to fp32 rounding."""
    from seghz.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("Unet", "tu-mobilenetv3_small_050", C).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics so every layer matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    ref = build_model("Unet", "tu-mobilenetv3_small_050", C).eval()
    ref.load_state_dict(model.state_dict())
    pred = Predictor(model, C, MEAN, STD, tile=64, overlap=0, device="cpu")
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    img = _image(64, 64, seed=3)
    got = pred.predict_proba(img)
    with torch.no_grad():
        x = _normalise(img)[None]
        want = torch.softmax(ref(x), 1)[0].numpy()
    assert next(ref.parameters()).is_contiguous()
    np.testing.assert_allclose(got, want, atol=1e-5)
