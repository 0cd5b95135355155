"""Tests of seghz.infer.engine: D4 views, sliding windows, and the Predictor's stitching and TTA."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_core import torch_one_thread  # noqa: F401 (fixture)
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.infer.engine import D4_VIEWS, Cancelled, Predictor, sliding_windows, tta_views

C = 4
MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ---------------------------------------------------------------- D4 views


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), n=st.integers(1, 2), c=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_every_d4_inverse_undoes_its_view(h, w, n, c, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    for name, fwd, inv in D4_VIEWS:
        y = fwd(x)
        assert tuple(y.shape[:2]) == (n, c)
        assert sorted(y.shape[2:]) == sorted((h, w)), name
        assert torch.equal(inv(y), x), name


@settings(max_examples=20, deadline=None)
@given(h=st.integers(2, 7), w=st.integers(2, 7))
def test_d4_views_are_the_eight_distinct_symmetries(h, w):
    # a tensor of distinct values tells all 8 symmetries of a rectangle / square apart
    x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    outs = [fwd(x) for _, fwd, _ in D4_VIEWS]
    keys = {(tuple(o.shape), tuple(o.flatten().tolist())) for o in outs}
    assert len(keys) == 8
    # each view maps pixel positions by a symmetry: the four corners go to corners
    corners = {x[0, 0, 0, 0].item(), x[0, 0, 0, -1].item(), x[0, 0, -1, 0].item(), x[0, 0, -1, -1].item()}
    for o in outs:
        assert {o[0, 0, 0, 0].item(), o[0, 0, 0, -1].item(), o[0, 0, -1, 0].item(), o[0, 0, -1, -1].item()} == corners


def test_tta_modes():
    assert [v[0] for v in tta_views("none")] == ["identity"]
    assert len(tta_views("d4")) == 8
    assert [v[0] for v in tta_views(["lr", "tb"])] == ["lr", "tb"]
    with pytest.raises(ValueError, match="unknown TTA view"):
        tta_views(["identity", "spin"])


def test_unknown_tta_mode_raises_value_error():
    with pytest.raises(ValueError, match="unknown TTA mode"):
        tta_views("d8")


# ---------------------------------------------------------------- sliding windows


@st.composite
def _window_case(draw):
    tile = draw(st.integers(1, 96))
    # up to ~10 tiles per axis keeps the window count (and the test time) small
    h = draw(st.integers(1, tile * 10 + 5))
    w = draw(st.integers(1, tile * 10 + 5))
    overlap = draw(st.one_of(st.sampled_from([0.0, 0.25, 0.5]), st.floats(0, 0.8, allow_nan=False)))
    return h, w, tile, overlap


@settings(max_examples=150, deadline=None)
@given(_window_case())
def test_sliding_windows_cover_and_fit(case):
    h, w, tile, overlap = case
    wins = sliding_windows(h, w, tile, overlap)
    assert wins
    cover = np.zeros((h, w), bool)
    for r, c, th, tw in wins:
        assert 0 <= r and 0 <= c and th > 0 and tw > 0
        assert r + th <= h and c + tw <= w, (r, c, th, tw)
        # tile-sized in every axis where the image is at least a tile long
        assert th == min(tile, h) and tw == min(tile, w)
        cover[r : r + th, c : c + tw] = True
    assert cover.all()
    # the last window of each axis sits flush with the border
    assert max(r + th for r, _, th, _ in wins) == h
    assert max(c + tw for _, c, _, tw in wins) == w
    rows = sorted({r for r, *_ in wins})
    cols = sorted({c for _, c, *_ in wins})
    assert rows[0] == 0 and cols[0] == 0
    assert rows[-1] == max(0, h - tile) and cols[-1] == max(0, w - tile)
    assert len(wins) == len(rows) * len(cols) == len(set(wins))


def test_sliding_windows_by_hand():
    # 100 px, tile 40, overlap 0.25 -> stride 30: starts 0, 30, 60 (60 + 40 = 100 is flush)
    assert sorted({r for r, *_ in sliding_windows(100, 10, 40, 0.25)}) == [0, 30, 60]
    # 101 px: 0, 30, 60 and a flush 61
    assert sorted({r for r, *_ in sliding_windows(101, 10, 40, 0.25)}) == [0, 30, 60, 61]
    assert sliding_windows(10, 20, 64) == [(0, 0, 10, 20)]


def test_sliding_windows_rejects_bad_args():
    with pytest.raises(ValueError):
        sliding_windows(10, 10, 4, overlap=1.0)
    with pytest.raises(ValueError):
        sliding_windows(10, 10, 4, overlap=-0.1)
    with pytest.raises(ValueError):
        sliding_windows(0, 10, 4)


# ---------------------------------------------------------------- Predictor with a pointwise model


def _pointwise_model(seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Conv2d(3, C, kernel_size=1)
    with torch.no_grad():
        m.weight.mul_(4.0)  # sharper, non-trivial probabilities
    return m


def _reference_proba(model, img):
    """Independent reference: normalise the whole image and apply the 1x1 conv directly, no tiling."""
    x = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    with torch.no_grad():
        return model(x[None]).softmax(1)[0].numpy()


def _image(h, w, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model():
    return _pointwise_model()


def test_predictor_matches_direct_model_output(model):
    img = _image(70, 90)
    pr = Predictor(model, C, MEAN, STD, tile=32, overlap=0.25, batch_size=3)
    p = pr.predict_proba(img)
    assert p.shape == (C, 70, 90) and p.dtype == np.float32
    ref = _reference_proba(model, img)
    np.testing.assert_allclose(p, ref, atol=1e-5)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
    mask, conf = pr.predict(img)
    assert mask.dtype == np.uint8 and np.array_equal(mask, ref.argmax(0))
    np.testing.assert_allclose(conf, ref.max(0), atol=1e-5)


@pytest.mark.parametrize("h,w", [(50, 66), (45, 33)])
def test_tta_and_tiling_do_not_change_a_pointwise_model(model, h, w):
    img = _image(h, w, seed=h)
    base = Predictor(model, C, MEAN, STD, tile=64, overlap=0.0).predict_proba(img, tta="none")
    np.testing.assert_allclose(base, _reference_proba(model, img), atol=1e-5)
    configs = [(64, 0.0, "d4"), (32, 0.5, "none"), (32, 0.5, "d4"), (40, 0.3, "flip"), (96, 0.25, "d4"), (17, 0.6, "none")]
    for tile, overlap, tta in configs:
        p = Predictor(model, C, MEAN, STD, tile=tile, overlap=overlap, batch_size=2).predict_proba(img, tta=tta)
        np.testing.assert_allclose(p, base, atol=1e-5, err_msg=f"tile={tile} overlap={overlap} tta={tta}")


@pytest.mark.parametrize("h,w", [(10, 13), (1, 5), (5, 1), (31, 64)])
def test_input_smaller_than_tile(model, h, w):
    img = _image(h, w, seed=3)
    pr = Predictor(model, C, MEAN, STD, tile=64)
    p = pr.predict_proba(img, tta="d4")
    assert p.shape == (C, h, w)
    np.testing.assert_allclose(p, _reference_proba(model, img), atol=1e-5)


def test_rejects_non_rgb(model):
    pr = Predictor(model, C, MEAN, STD, tile=16)
    with pytest.raises(ValueError):
        pr.predict_proba(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        pr.predict_proba(np.zeros((8, 8, 4), np.uint8))


def test_progress_reaches_one(model):
    seen = []
    pr = Predictor(model, C, MEAN, STD, tile=16, overlap=0.25, batch_size=2)
    n_windows = len(sliding_windows(40, 50, 16, 0.25))
    pr.predict_proba(_image(40, 50), progress=lambda f, msg: seen.append((f, msg)))
    fracs = [f for f, _ in seen]
    assert len(fracs) == -(-n_windows // 2)  # one report per batch
    assert fracs == sorted(fracs) and 0 < fracs[0] and fracs[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in seen)


class _CountingModel(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_should_cancel_stops_inference(model):
    counting = _CountingModel(model)
    pr = Predictor(counting, C, MEAN, STD, tile=16, overlap=0.0, batch_size=1)
    n_windows = len(sliding_windows(48, 48, 16, 0.0))
    assert n_windows == 9
    asked = []

    def cancel():
        asked.append(1)
        return len(asked) >= 3  # let two batches run, cancel before the third

    seen = []
    with pytest.raises(Cancelled):
        pr.predict_proba(_image(48, 48), progress=lambda f, m: seen.append(f), should_cancel=cancel)
    assert counting.calls == 2
    assert seen and seen[-1] < 1.0
    # cancelled from the start: the model is never run
    counting.calls = 0
    with pytest.raises(Cancelled):
        pr.predict_proba(_image(48, 48), should_cancel=lambda: True)
    assert counting.calls == 0
