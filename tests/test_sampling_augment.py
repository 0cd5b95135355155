"""Tests of seghz.train.sampling (random / building-aware crop windows) and seghz.train.augment (batched device
augmentation: D4, scale-crop, colour jitter, normalisation, preload)."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
from helpers_core import torch_one_thread  # noqa: F401 (fixture)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seghz.train.augment import (
    D4,
    color_jitter,
    draw_params,
    make_device_batch,
    normalize,
    preload,
    preload_bytes,
)
from seghz.train.sampling import (
    CropSampler,
    building_classes,
    grid_positions,
    integral_image,
    pad_to,
    window_fractions,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
HSET = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- helpers

def blob_label(h=60, w=70, seed=0):
    """Random background classes 0..2, a building blob (class 3) of 14×12 at (30, 40), an ignore strip."""
    rng = np.random.default_rng(seed)
    lbl = rng.integers(0, 3, (h, w)).astype(np.uint8)
    lbl[30:44, 40:52] = 3
    lbl[:, :3] = 255
    return lbl


def brute_fractions(label, classes, size, stride):
    h, w = max(label.shape[0], size), max(label.shape[1], size)
    fg = np.zeros((h, w), bool)
    fg[: label.shape[0], : label.shape[1]] = np.isin(label, classes)
    rows = sorted(set(range(0, h - size + 1, stride)) | {h - size})
    cols = sorted(set(range(0, w - size + 1, stride)) | {w - size})
    return {(r, c): fg[r : r + size, c : c + size].mean() for r in rows for c in cols}


def f_label(img):
    """Label as a pixelwise function of the image (ignore where the blue channel is high)."""
    lbl = ((img[..., 0].astype(np.int64) * 7 + img[..., 1]) % 5).astype(np.uint8)
    lbl[img[..., 2] > 220] = 255
    return lbl


def g_trusted(img):
    return (img[..., 1] % 3) == 0


def to_u8(x, norm=NORM):
    """Undo the normalisation of a B×3×H×W batch: B×H×W×3 float in 0..255."""
    m = torch.tensor(norm["mean"]).view(1, 3, 1, 1)
    s = torch.tensor(norm["std"]).view(1, 3, 1, 1)
    return ((x * s + m) * 255).permute(0, 2, 3, 1).numpy()


def d4_views(a):
    """The 8 D4 views of an H×W(×C) array."""
    out = []
    for t in (a, np.swapaxes(a, 0, 1)):
        for k in range(4):
            out.append(np.rot90(t, k))
    return out


def sample_set(shapes, seed=0, trusted=True, no_ignore=False):
    rng = np.random.default_rng(seed)
    out = []
    for k, (h, w) in enumerate(shapes):
        img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        if no_ignore:
            img[..., 2] %= 200
        lbl = f_label(img)
        if trusted and k % 2 == 0:
            out.append((img, lbl, g_trusted(img)))
        else:
            out.append((img, lbl))
    return out


# ---------------------------------------------------------------- sampling

def test_integral_image_by_hand():
    m = np.array([[1, 0, 1], [0, 1, 1]], bool)
    sat = integral_image(m)
    assert sat.shape == (3, 4)
    assert sat[2, 3] == 4 and sat[1, 3] == 2 and sat[2, 1] == 1 and sat[2, 2] == 2
    assert (sat[0] == 0).all() and (sat[:, 0] == 0).all()


def test_grid_positions_reach_the_edge():
    assert grid_positions(10, 4, 3).tolist() == [0, 3, 6]
    assert grid_positions(11, 4, 3).tolist() == [0, 3, 6, 7]
    assert grid_positions(4, 4, 3).tolist() == [0]


@HSET
@given(h=st.integers(1, 40), w=st.integers(1, 40), size=st.integers(1, 24), stride=st.integers(1, 9),
       seed=st.integers(0, 2**16))
def test_window_fractions_match_brute_force(h, w, size, stride, seed):
    lbl = np.random.default_rng(seed).integers(0, 4, (h, w)).astype(np.uint8)
    sampler = CropSampler(size, "class_aware", classes=(1, 3), stride=stride)
    frac, rows, cols = window_fractions(sampler.foreground(lbl), size, stride)
    brute = brute_fractions(lbl, (1, 3), size, stride)
    got = {(int(r), int(c)): frac[a, b] for a, r in enumerate(rows) for b, c in enumerate(cols)}
    assert got.keys() == brute.keys()
    for k, v in brute.items():
        assert got[k] == pytest.approx(v, abs=1e-12)


def test_class_aware_picks_only_windows_meeting_the_threshold_and_all_of_them():
    lbl = blob_label()
    size, stride, thr = 16, 5, 0.3
    brute = brute_fractions(lbl, (3,), size, stride)
    ok = {k for k, v in brute.items() if v >= thr}
    assert 1 < len(ok) < len(brute)
    sampler = CropSampler(size, "class_aware", classes=(3,), min_fraction=thr, stride=stride)
    rng = random.Random(1)
    seen = Counter(sampler.window(lbl, rng) for _ in range(3000))
    assert set(seen) == ok  # only qualifying windows, and each of them is reachable
    expect = 3000 / len(ok)
    assert all(0.5 * expect < n < 1.5 * expect for n in seen.values())  # uniform among candidates


def test_class_aware_falls_back_to_the_top_window():
    lbl = blob_label()
    size, stride = 24, 4
    brute = brute_fractions(lbl, (3,), size, stride)
    best = max(brute.values())
    assert best < 0.5
    top = min(k for k, v in brute.items() if v == best)  # row-major first on ties
    sampler = CropSampler(size, "class_aware", classes=(3,), min_fraction=0.5, stride=stride)
    rows, _cols, frac, met = sampler.candidates(lbl)
    assert not met and len(rows) == 1 and frac[0] == pytest.approx(best)
    rng = np.random.default_rng(0)
    assert {sampler.window(lbl, rng) for _ in range(20)} == {top}


def test_class_aware_without_foreground_still_returns_a_window():
    lbl = np.zeros((40, 40), np.uint8)
    s = CropSampler(16, "class_aware", classes=(5,), min_fraction=0.1, stride=8)
    assert s.window(lbl, random.Random(0)) == (0, 0)  # all fractions 0: the first window


def test_ignore_and_other_classes_are_not_foreground():
    lbl = np.full((20, 20), 255, np.uint8)
    lbl[:10, :10] = 2
    s = CropSampler(10, "class_aware", classes=(2,), min_fraction=1.0, stride=10)
    rows, cols, frac, met = s.candidates(lbl)
    assert met and list(zip(rows.tolist(), cols.tolist())) == [(0, 0)] and frac.tolist() == [1.0]


def test_sampler_is_deterministic_for_a_seed_with_both_rng_kinds():
    lbl = blob_label()
    for mode in ("random", "class_aware"):
        s = CropSampler(16, mode, classes=(3,), min_fraction=0.2, stride=3)
        for make in (random.Random, np.random.default_rng):
            a = [s.window(lbl, r) for r in [make(7)] for _ in range(50)]
            b = [s.window(lbl, r) for r in [make(7)] for _ in range(50)]
            assert a == b
            assert len(set(a)) > 1


def test_cached_candidates_equal_uncached():
    lbl = blob_label(seed=3)
    a = CropSampler(16, "class_aware", classes=(3,), min_fraction=0.2, stride=3)
    b = CropSampler(16, "class_aware", classes=(3,), min_fraction=0.2, stride=3, cache=False)
    first = a.candidates(lbl)
    assert a.candidates(lbl) is first  # served from the cache
    for x, y in zip(first, b.candidates(lbl)):
        np.testing.assert_array_equal(x, y)
    other = lbl.copy()  # another array: not confused with the cached one
    assert a.candidates(other) is not first


def test_random_mode_covers_positions_uniformly():
    lbl = np.zeros((20, 21), np.uint8)
    s = CropSampler(16)
    n = 6000
    rng = random.Random(5)
    seen = Counter(s.window(lbl, rng) for _ in range(n))
    assert set(seen) == {(r, c) for r in range(5) for c in range(6)}
    expect = n / 30
    chi2 = sum((v - expect) ** 2 / expect for v in seen.values())
    assert chi2 < 70  # 29 dof: p(chi2 > 70) < 1e-4


def test_small_labels_are_padded_like_the_trainer():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)
    lbl = np.full((10, 12), 3, np.uint8)
    for mode in ("random", "class_aware"):
        s = CropSampler(16, mode, classes=(3,), min_fraction=0.1)
        assert s.window(lbl, random.Random(0)) == (0, 0)
        ci, cl, ct = s.crop(img, lbl, random.Random(0))
        assert ci.shape == (16, 16, 3) and cl.shape == (16, 16) and ct.shape == (16, 16) and not ct.any()
        np.testing.assert_array_equal(ci[:10, :12], img)
        np.testing.assert_array_equal(ci, np.pad(img, ((0, 6), (0, 4), (0, 0)), mode="reflect"))
        assert (cl[:10, :12] == 3).all() and (cl[10:] == 255).all() and (cl[:, 12:] == 255).all()
    pi, pl, pt = pad_to(img, lbl, 8, None)
    assert pi is img and pl is lbl and pt is None


def test_building_classes_follow_the_study():
    assert building_classes("hz20") == tuple(range(8, 18))  # ids 9..18
    assert building_classes("hz11") == (6, 7, 8, 9)  # ids 7..10
    assert building_classes("hz7") == (5,)
    assert building_classes("hz14") == (8, 9, 10, 11)


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError):
        CropSampler(16, "bogus")
    with pytest.raises(ValueError):
        CropSampler(16, "class_aware")  # no classes
    with pytest.raises(ValueError):
        CropSampler(16, "class_aware", classes=(1,), min_fraction=1.5)
    with pytest.raises(ValueError):
        CropSampler(0)


# ---------------------------------------------------------------- augmentation

def _expected_window_crops(samples, idx, sampler, seed):
    """Crops at the windows the batch will use (the sampler draws first; scale (1,1) and no D4 draw nothing)."""
    rng = random.Random(seed)
    out = []
    for i in idx:
        img, lbl, *rest = samples[i]
        out.append(sampler.crop(img, lbl, rng, rest[0] if rest else None))
    return out


def test_normalisation_matches_plain_crop():
    samples = sample_set([(40, 50), (36, 36), (64, 40)])
    sampler = CropSampler(32)
    idx = [0, 1, 2, 1]
    x, y = make_device_batch(samples, idx, sampler, random.Random(3), NORM, "cpu", scale=(1, 1), d4=False,
                             jitter=0)
    assert x.dtype == torch.float32 and x.shape == (4, 3, 32, 32) and y.dtype == torch.long and y.shape == (4, 32, 32)
    for k, (ci, cl, _) in enumerate(_expected_window_crops(samples, idx, sampler, 3)):
        ref = (torch.from_numpy(ci.astype(np.float32)).permute(2, 0, 1) / 255 - torch.tensor(NORM["mean"]).view(3, 1, 1)
               ) / torch.tensor(NORM["std"]).view(3, 1, 1)
        torch.testing.assert_close(x[k], ref, atol=5e-5, rtol=0)
        np.testing.assert_array_equal(y[k].numpy(), cl)


def test_normalize_formula():
    x = torch.rand(2, 3, 4, 5)
    n = {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 2.0]}
    out = normalize(x, n)
    for c in range(3):
        torch.testing.assert_close(out[:, c], (x[:, c] - n["mean"][c]) / n["std"][c])


def test_d4_gives_exact_views_and_keeps_image_label_trusted_aligned():
    samples = sample_set([(48, 48), (40, 56)])
    sampler = CropSampler(24)
    idx = [0, 1] * 24
    seed = 11
    x, y, t = make_device_batch(samples, idx, sampler, random.Random(seed), NORM, "cpu", scale=(1, 1), d4=True,
                                jitter=0, return_trusted=True)
    imgs = np.rint(to_u8(x)).astype(np.uint8)
    rng = random.Random(seed)
    params = draw_params([samples[i][1] for i in idx], sampler, rng, (1, 1), True, 0)
    used = set()
    for k in range(len(idx)):
        img_o, y_o, t_o = imgs[k], y[k].numpy(), t[k].numpy()
        # alignment: label and trusted are the same functions of the augmented image
        np.testing.assert_array_equal(y_o, f_label(img_o))
        if len(samples[idx[k]]) > 2:
            np.testing.assert_array_equal(t_o, g_trusted(img_o))
        else:
            assert not t_o.any()
        # and the view is one of the 8 D4 views of the sampler's crop
        r, c = (params.centres[k] - 12).astype(int)
        ci = samples[idx[k]][0][r : r + 24, c : c + 24]
        matches = [j for j, v in enumerate(d4_views(ci)) if np.array_equal(v, img_o)]
        assert matches, f"sample {k} is not a D4 view of its crop"
        used.add(matches[0])
    assert len(used) == 8  # all group elements occur
    # D4 matrices form the group: 8 distinct, closed under product
    mats = {tuple(m.ravel()) for m in D4}
    assert len(mats) == 8
    assert all(tuple((a @ b).ravel()) in mats for a in D4 for b in D4)


@HSET
@given(h=st.integers(6, 40), w=st.integers(6, 40), size=st.sampled_from([8, 12, 16, 24]), seed=st.integers(0, 999),
       d4=st.booleans())
def test_property_alignment_at_unit_scale_any_shape(h, w, size, seed, d4):
    """Any shape (also smaller than the crop): label/trusted follow the image; outside the image label is 255 and
    trusted False, and the valid part is a D4 view of the crop's top-left block."""
    samples = sample_set([(h, w), (w, h)], seed=seed, no_ignore=True)
    x, y, t = make_device_batch(samples, [0, 1], CropSampler(size), random.Random(seed), NORM, "cpu", scale=(1, 1),
                                d4=d4, jitter=0, return_trusted=True)
    imgs = np.rint(to_u8(x)).astype(np.uint8)
    for k in range(2):
        yk, tk = y[k].numpy(), t[k].numpy()
        sh = samples[k][1].shape
        base = np.zeros((size, size), bool)
        base[: min(sh[0], size), : min(sh[1], size)] = True
        valid = yk != 255
        assert any(np.array_equal(valid, v) for v in (d4_views(base) if d4 else [base]))
        np.testing.assert_array_equal(yk[valid], f_label(imgs[k])[valid])
        if len(samples[k]) > 2:
            np.testing.assert_array_equal(tk[valid], g_trusted(imgs[k])[valid])
        assert not tk[~valid].any()


def blocky_sample(h=64, w=64, block=8, seed=0):
    """Image of constant 8×8 blocks with distinct colours; the label is the block id, the trusted mask a function
    of it. Returns ``(img, lbl, trusted, colours, trusted_of_block)``."""
    rng = np.random.default_rng(seed)
    nb = (h // block + 1) * (w // block + 1)
    colours = rng.integers(0, 256, (nb, 3)).astype(np.uint8)
    tr_of = rng.random(nb) < 0.5
    ids = (np.arange(h)[:, None] // block) * (w // block + 1) + np.arange(w)[None, :] // block
    return colours[ids], ids.astype(np.uint8), tr_of[ids], colours, tr_of


@HSET
@given(seed=st.integers(0, 999), lo=st.floats(0.5, 1.0), span=st.floats(0.0, 0.8), size=st.sampled_from([16, 32]))
def test_property_scale_crop_keeps_alignment(seed, lo, span, size):
    img, lbl, tr, colours, tr_of = blocky_sample(seed=seed)
    samples = [(img, lbl, tr), (img[:30, :40], lbl[:30, :40], tr[:30, :40])]
    x, y, t = make_device_batch(samples, [0, 1, 0, 1], CropSampler(size), random.Random(seed), NORM, "cpu",
                                scale=(lo, lo + span), d4=True, jitter=0, return_trusted=True)
    imgs = to_u8(x)
    assert set(np.unique(y.numpy()).tolist()) <= set(np.unique(lbl).tolist()) | {255}
    checked = 0
    for k in range(4):
        yk, tk = y[k].numpy(), t[k].numpy()
        valid = yk != 255
        # nearest: label and trusted move together
        np.testing.assert_array_equal(tk[valid], tr_of[yk[valid]])
        assert not tk[~valid].any()
        # where the 3×3 neighbourhood is one block, the bilinear image is exactly that block's colour (neighbours
        # are 1/s >= 0.55 source px apart, and bilinear only mixes in another block within 0.5 px of its edge)
        pad = np.pad(yk.astype(np.int64), 1, constant_values=-1)
        same = np.ones_like(yk, bool)
        for dr in range(3):
            for dc in range(3):
                same &= pad[dr : dr + size, dc : dc + size] == yk
        interior = same & valid
        np.testing.assert_allclose(imgs[k][interior], colours[yk[interior]].astype(np.float32), atol=0.02)
        checked += int(interior.sum())
    assert checked > 0


def test_scale_is_honoured():
    """Position-encoded image, fixed scale 2, no D4: the source row/column advance by 1/2 per output pixel."""
    h = w = 120
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.stack([rr, cc, np.zeros_like(rr)], -1).astype(np.uint8)
    samples = [(img, np.zeros((h, w), np.uint8))]
    for s in (2.0, 0.8):
        x, y = make_device_batch(samples, [0], CropSampler(32), random.Random(0), NORM, "cpu", scale=(s, s), d4=False,
                                 jitter=0)
        im = to_u8(x)[0]
        np.testing.assert_allclose(np.diff(im[..., 0], axis=0)[2:-2, 2:-2], 1 / s, atol=2e-3)
        np.testing.assert_allclose(np.diff(im[..., 1], axis=1)[2:-2, 2:-2], 1 / s, atol=2e-3)
        assert (y == 0).all()


def test_zoom_out_past_the_image_fills_ignore():
    img = blocky_sample(h=32, w=32)[0]
    lbl = np.zeros((32, 32), np.uint8)
    x, y, t = make_device_batch([(img, lbl, np.ones_like(lbl, bool))], [0], CropSampler(32), random.Random(0), NORM,
                                "cpu", scale=(0.5, 0.5), d4=False, jitter=0, return_trusted=True)
    yk = y[0].numpy()
    np.testing.assert_array_equal(t[0].numpy(), yk != 255)
    # the 32-px image becomes 16 px, placed at the top-left (padding at the end, like the trainer)
    assert (yk[:16, :16] == 0).all() and (yk[16:] == 255).all() and (yk[:, 16:] == 255).all()
    assert torch.isfinite(x).all()


def test_jitter_leaves_labels_unchanged_and_stays_in_range():
    samples = sample_set([(48, 48), (40, 56), (20, 20)])
    idx = [0, 1, 2, 0]
    kw = {"scale": (0.8, 1.2), "d4": True, "return_trusted": True}
    x0, y0, t0 = make_device_batch(samples, idx, CropSampler(24), random.Random(4), NORM, "cpu", jitter=0, **kw)
    x1, y1, t1 = make_device_batch(samples, idx, CropSampler(24), random.Random(4), NORM, "cpu", jitter=0.4, **kw)
    assert torch.equal(y0, y1) and torch.equal(t0, t1)
    assert not torch.allclose(x0, x1)
    u = to_u8(x1) / 255
    assert u.min() >= -1e-5 and u.max() <= 1 + 1e-5


def test_color_jitter_formulas():
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(color_jitter(x.clone(), torch.ones(3, 3)), x)
    c = torch.full((1, 3, 4, 4), 0.6)
    out = color_jitter(c.clone(), torch.tensor([[0.5, 1.0, 1.0]]))
    torch.testing.assert_close(out, torch.full_like(c, 0.3))
    out = color_jitter(torch.rand(2, 3, 5, 5), torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    torch.testing.assert_close(out[0, 0], out[0, 1])  # saturation 0: gray
    torch.testing.assert_close(out[0, 1], out[0, 2])
    torch.testing.assert_close(out[1], out[1].flatten()[0].expand_as(out[1]))  # contrast 0: flat


def test_same_seed_same_batch_and_numpy_generator():
    samples = sample_set([(48, 48), (40, 56)])
    s = CropSampler(16, "class_aware", classes=(1, 2), min_fraction=0.3)
    a = make_device_batch(samples, [0, 1, 1], s, np.random.default_rng(9), NORM, "cpu", return_trusted=True)
    b = make_device_batch(samples, [0, 1, 1], s, np.random.default_rng(9), NORM, "cpu", return_trusted=True)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_preloaded_equals_streaming():
    samples = sample_set([(48, 48), (40, 56), (20, 26), (60, 30)])
    samples[1] = samples[1][:2]
    pre = preload(samples, "cpu", max_bytes=10**8)
    assert pre is not None and pre.images.shape == (4, 60, 56, 3) and pre.trusted is not None
    assert pre.nbytes == preload_bytes(samples) == 4 * 60 * 56 * 5
    assert (pre.labels[2, 20:] == 255).all() and (pre.labels[2, :, 26:] == 255).all()
    s = CropSampler(24, "class_aware", classes=(0, 1), min_fraction=0.2)
    idx = [0, 1, 2, 3, 2, 0]
    for seed in range(3):
        a = make_device_batch(samples, idx, s, random.Random(seed), NORM, "cpu", return_trusted=True)
        b = make_device_batch(samples, idx, s, random.Random(seed), NORM, "cpu", preloaded=pre, return_trusted=True)
        torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)
        assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_preload_copies_read_only_arrays_without_a_warning_and_leaves_them_untouched():
    import warnings

    samples = sample_set([(32, 32), (24, 40)])
    frozen = []
    for smp in samples:
        arrs = [np.array(a) for a in smp]
        for a in arrs:
            a.setflags(write=False)  # as a cache hands them out
        frozen.append(tuple(arrs))
    before = [[a.copy() for a in smp] for smp in frozen]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "non-writable NumPy array" UserWarning would fail here
        pre = preload(frozen, "cpu", max_bytes=10**8)
    ref = preload(samples, "cpu", max_bytes=10**8)
    assert torch.equal(pre.images, ref.images) and torch.equal(pre.labels, ref.labels)
    assert torch.equal(pre.trusted, ref.trusted)
    pre.images.fill_(7)  # the preloaded tensors are copies: the cached arrays cannot change through them
    for smp, old in zip(frozen, before):
        assert all(np.array_equal(a, b) for a, b in zip(smp, old)) and not smp[0].flags.writeable


def test_preload_respects_the_budget():
    samples = sample_set([(40, 40), (30, 50)], trusted=False)
    need = preload_bytes(samples)
    assert need == 2 * 40 * 50 * 4
    assert preload(samples, "cpu", max_bytes=need - 1) is None
    assert preload(samples, "cpu", max_bytes=need).trusted is None
    assert preload([], "cpu", max_bytes=10**9) is None
    assert preload(samples, "cpu") is None  # CPU default: stream from numpy


def test_class_aware_batch_favours_buildings():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (128, 128, 3)).astype(np.uint8)
    lbl = np.zeros((128, 128), np.uint8)
    lbl[90:120, 10:40] = 5
    samples = [(img, lbl)]
    idx = [0] * 16
    fr = {}
    for mode in ("random", "class_aware"):
        s = CropSampler(32, mode, classes=(5,), min_fraction=0.3)
        _, y = make_device_batch(samples, idx, s, random.Random(0), NORM, "cpu", scale=(0.9, 1.1))
        fr[mode] = float((y == 5).float().mean())
    assert fr["class_aware"] > 0.25 > fr["random"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    samples = sample_set([(300, 280), (256, 256), (200, 330)])
    s = CropSampler(128, "class_aware", classes=(1,), min_fraction=0.1)
    idx = [0, 1, 2, 1]
    a = make_device_batch(samples, idx, s, random.Random(2), NORM, "cpu", return_trusted=True)
    pre = preload(samples, "cuda")
    assert pre is not None
    b = make_device_batch(samples, idx, s, random.Random(2), NORM, "cuda", preloaded=pre, return_trusted=True)
    assert b[0].is_cuda and b[1].is_cuda
    torch.testing.assert_close(a[0], b[0].cpu(), atol=1e-4, rtol=0)
    agree = (a[1] == b[1].cpu()).float().mean()
    assert agree > 0.999  # nearest ties may round differently on the GPU


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), flip=st.booleans(), dtype=st.sampled_from([None, torch.float32, torch.long]))
def test_to_device_copies_values_whatever_the_strides(h, w, flip, dtype):
    """The stall-free host → device copy: same values (and the asked dtype) for reversed / transposed arrays."""
    from seghz.devices import to_device

    a = np.arange(h * w * 2, dtype=np.int64).reshape(h, w, 2)
    a = a[:, ::-1] if flip else a.transpose(1, 0, 2)
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        t = to_device(a, dev, dtype)
        assert t.device.type == dev and t.dtype == (dtype or torch.int64)
        np.testing.assert_array_equal(t.cpu().numpy(), a.astype(t.cpu().numpy().dtype))
    assert to_device([3, 1, 2], "cpu", torch.long).tolist() == [3, 1, 2]
