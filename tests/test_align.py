"""Label-to-imagery alignment (seghz.geo.align): fits, errors, warping, automatic matching; real airport data
when the local sample folder exists (../shared/data/hangzhou_airport, never committed)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seghz.geo import align as A

REPO = Path(__file__).resolve().parents[1]
AIRPORT = REPO.parent / "shared" / "data" / "hangzhou_airport"
POINTS = REPO / "tests" / "fixtures" / "airport_control_points.json"


def similarity(s=1.3, deg=2.0, tx=40.0, ty=-12.0) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[s * math.cos(a), -s * math.sin(a), tx], [s * math.sin(a), s * math.cos(a), ty], [0, 0, 1.0]])


def affine() -> np.ndarray:
    return np.array([[1.35, 0.08, 25.0], [-0.05, 1.28, 14.0], [0, 0, 1.0]])


def homography() -> np.ndarray:
    return np.array([[1.4, -0.04, 30.0], [0.03, 1.43, 10.0], [2e-5, -1.5e-5, 1.0]])


KNOWN = {"similarity": similarity(), "affine": affine(), "homography": homography()}


def grid(w=200, h=160, n=6) -> np.ndarray:
    xs, ys = np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, n))
    return np.c_[xs.ravel(), ys.ravel()]


def synthetic_label(h=240, w=300, seed=0, classes=8) -> np.ndarray:
    """Voronoi patches of ``classes`` classes crossed by a few 'roads' and 'canals' (class 0 and 1)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform([0, 0], [w, h], size=(40, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    d = (xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2
    lbl = (np.argmin(d, axis=2) % (classes - 2) + 2).astype(np.uint8)
    for k in range(5):
        p0 = rng.uniform([0, 0], [w, h]).astype(int)
        p1 = rng.uniform([0, 0], [w, h]).astype(int)
        cv2.line(lbl, tuple(int(v) for v in p0), tuple(int(v) for v in p1), int(k % 2), 3)
    return lbl


def render_image(label: np.ndarray, M, shape, seed=0) -> np.ndarray:
    """A fake 'satellite image' of ``label`` warped by ``M``: a colour per class, texture noise and blur."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(30, 226, size=(256, 3)).astype(np.float32)
    w = cv2.warpPerspective(label, M, (shape[1], shape[0]), flags=cv2.INTER_NEAREST, borderValue=int(label[0, 0]))
    img = colors[w] + rng.normal(0, 12, size=(*shape, 3))
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.0)
    return np.clip(img, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------ fitting
@pytest.mark.parametrize("kind", A.KINDS)
def test_fit_recovers_known_transform(kind):
    M = KNOWN[kind]
    src = grid()
    got = A.fit_transform(src, A.apply_transform(M, src), kind)
    np.testing.assert_allclose(A.apply_transform(got, src), A.apply_transform(M, src), atol=1e-6)
    assert A.rmse(got, src, A.apply_transform(M, src)) < 1e-6


def test_fit_with_noise_and_holdout():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 300, size=(20, 2))
    dst = A.apply_transform(homography(), src) + rng.normal(0, 0.5, size=(20, 2))
    M = A.fit_transform(src, dst, "homography")
    assert A.rmse(M, src, dst) < 1.0
    loo, errs = A.holdout_rmse(src, dst, "homography")
    assert len(errs) == 20 and 0.3 < loo < 2.0
    r, e = A.holdout_rmse(src, dst, "affine", holdout=[0, 5, 9])
    assert len(e) == 3 and np.isfinite(r)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(A.KINDS), s=st.floats(0.5, 2.5), deg=st.floats(-20, 20), tx=st.floats(-300, 300),
       ty=st.floats(-300, 300), shear=st.floats(-0.2, 0.2), px=st.floats(-1e-4, 1e-4), py=st.floats(-1e-4, 1e-4),
       seed=st.integers(0, 10_000))
def test_property_exact_correspondences_reproduce_transform(kind, s, deg, tx, ty, shear, px, py, seed):
    M = similarity(s, deg, tx, ty)
    if kind != "similarity":
        M = M @ np.array([[1, shear, 0], [0, 1, 0], [0, 0, 1.0]])
    if kind == "homography":
        M = M.copy()
        M[2, :2] = [px, py]
    rng = np.random.default_rng(seed)
    corners = np.array([[0, 0], [500, 0], [0, 500], [500, 500]], float)  # spread: no accidental collinearity
    src = np.r_[corners[: A.MIN_POINTS[kind]], rng.uniform(0, 500, size=(int(rng.integers(0, 10)), 2))]
    got = A.fit_transform(src, A.apply_transform(M, src), kind)
    np.testing.assert_allclose(A.apply_transform(got, grid(500, 500)), A.apply_transform(M, grid(500, 500)), atol=1e-5)


@pytest.mark.parametrize("kind,n", [("similarity", 1), ("affine", 2), ("homography", 3)])
def test_too_few_points(kind, n):
    src = np.array([[0, 0], [10, 3], [4, 9]], float)[:n]
    with pytest.raises(ValueError, match=f"a {kind} needs at least {A.MIN_POINTS[kind]} point pairs, got {n}"):
        A.fit_transform(src, src, kind)


@pytest.mark.parametrize("kind", ["affine", "homography"])
def test_collinear_points_named(kind):
    src = np.array([[0, 0], [10, 10], [20, 20], [30, 30], [40, 40]], float)
    with pytest.raises(ValueError, match="collinear"):
        A.fit_transform(src, src * 2, kind)


def test_coincident_points_and_bad_input():
    with pytest.raises(ValueError, match="coincide"):
        A.fit_transform([[5, 5], [5, 5]], [[1, 1], [2, 2]], "similarity")
    with pytest.raises(ValueError, match="unknown transform kind"):
        A.fit_transform(grid(), grid(), "projective")
    with pytest.raises(ValueError, match="6 source points but 5"):
        A.fit_transform(grid()[:6], grid()[:5], "affine")
    with pytest.raises(ValueError, match="N×2"):
        A.fit_transform(np.zeros((4, 3)), np.zeros((4, 3)), "affine")


def test_degenerate_results_named():
    src = grid()
    mirror = np.diag([-1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="flips orientation"):
        A.fit_transform(src, A.apply_transform(mirror, src), "affine")
    with pytest.raises(ValueError, match="extreme scale"):
        A.fit_transform(src, src * 200, "similarity")
    with pytest.raises(ValueError, match="shear/stretch"):
        A.fit_transform(src, src * [10, 1], "affine")
    persp = np.array([[1, 0, 0], [0, 1, 0], [0.01, 0, 1.0]])
    with pytest.raises(ValueError, match="perspective"):
        A.fit_transform(src, A.apply_transform(persp, src), "homography")
    with pytest.raises(ValueError, match="near-singular"):
        A.check_transform(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1e-14]]), "homography")


# ------------------------------------------------------------------------------------------------------ warping
def test_warp_label_nearest_and_ignore_outside():
    lbl = synthetic_label(80, 100, seed=3, classes=6)
    out = A.warp_label(lbl, homography(), (200, 220))
    vals = set(np.unique(out).tolist())
    assert vals <= set(np.unique(lbl).tolist()) | {255}
    assert 255 in vals and out[0, 0] == 255 and out[-1, -1] == 255  # outside the label -> ignore
    ident = A.warp_label(lbl, np.eye(3), lbl.shape)
    np.testing.assert_array_equal(ident, lbl)
    # the label pixel (x, y) lands at M(x, y)
    x, y = 50, 40
    u, v = np.round(A.apply_transform(similarity(1.0, 0, 7, 5), [[x, y]])[0]).astype(int)
    assert A.warp_label(lbl, similarity(1.0, 0, 7, 5), (100, 120))[v, u] == lbl[y, x]


def test_resize_transform_maps_extent():
    M = A.resize_transform((800, 1000), (1280, 1536))
    np.testing.assert_allclose(A.apply_transform(M, [[-0.5, -0.5], [999.5, 799.5]]), [[-0.5, -0.5], [1535.5, 1279.5]])


# --------------------------------------------------------------------------------------------------- automatic
@pytest.mark.parametrize("kind", ["similarity", "homography"])
def test_auto_align_synthetic_recovers_transform(kind):
    lbl = synthetic_label(240, 300, seed=7)
    M = similarity(1.45, 1.5, 25, -10) if kind == "similarity" else homography()
    img = render_image(lbl, M, (380, 460), seed=7)
    res = A.auto_align(lbl, img, kind=kind)
    # accuracy over the part of the label that lies on the image
    g = grid(300, 240, 9)
    on = A.apply_transform(M, g)
    inside = (on[:, 0] > 5) & (on[:, 0] < 455) & (on[:, 1] > 5) & (on[:, 1] < 375)
    err = A.rmse(res.M, g[inside], on[inside])
    assert err < 1.5, (err, res.method, res.candidates)
    assert res.to_json()["method"] == res.method and res.score > 0.5


def test_auto_align_rejects_bad_input():
    with pytest.raises(ValueError, match="no labelled pixels"):
        A.auto_align(np.full((50, 60), 255, np.uint8), np.zeros((80, 90, 3), np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        A.auto_align(np.zeros((50, 60), np.uint8), np.zeros((80, 90), np.uint8))


def test_feature_match_on_identical_renderings():
    lbl = synthetic_label(240, 300, seed=2)
    src = A.render_luminance(lbl)
    M = similarity(1.2, 3, 15, 8)
    dst = cv2.warpPerspective(src, M, (400, 330))
    got, n = A.feature_match(src, dst, "sift", "similarity")
    assert got is not None and n >= 10
    assert A.rmse(got, grid(300, 240), A.apply_transform(M, grid(300, 240))) < 1.5


# ------------------------------------------------------------------------------------------- non-rigid (local) refinement
def sine_warp(M, shape, amp=(3.0, 2.5), wavelength=(400.0, 460.0), phase=(0.0, 0.0), spacing=4.0) -> A.LocalWarp:
    """A homography plus a smooth sinusoidal displacement (image px) as a LocalWarp: dx varies along y, dy along x."""
    h, w = shape
    gw, gh = math.ceil((w - 1) / spacing) + 1, math.ceil((h - 1) / spacing) + 1
    gx, gy = np.meshgrid(np.arange(gw) * spacing, np.arange(gh) * spacing)
    return A.LocalWarp(M=np.asarray(M, float), dx=amp[0] * np.sin(2 * np.pi * gy / wavelength[0] + phase[0]),
                       dy=amp[1] * np.cos(2 * np.pi * gx / wavelength[1] + phase[1]), spacing=spacing)


def render_warped(label, T, shape, seed=0) -> np.ndarray:
    """Like :func:`render_image`, through a LocalWarp (the label's first pixel's class fills the outside)."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(30, 226, size=(256, 3)).astype(np.float32)
    mx, my = T.inverse_maps(shape)
    w = cv2.remap(label, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=int(label[0, 0]))
    img = cv2.GaussianBlur((colors[w] + rng.normal(0, 12, size=(*shape, 3))).astype(np.float32), (0, 0), 1.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def _inside(T, g, shape, margin=5):
    on = A.map_points(T, g)
    return (on[:, 0] > margin) & (on[:, 0] < shape[1] - margin) & (on[:, 1] > margin) & (on[:, 1] < shape[0] - margin)


@pytest.mark.parametrize("seed", [3, 5, 11])
def test_local_refinement_recovers_smooth_warp(seed):
    lbl = synthetic_label(300, 360, seed=seed)
    T = sine_warp(homography(), lbl.shape, phase=(seed * 0.7, seed * 1.3))
    shape = (470, 560)
    img = render_warped(lbl, T, shape, seed=seed)
    res = A.auto_align(lbl, img, kind="homography", local="local")
    assert res.warp is not None and res.method.endswith("+local") and res.transform is res.warp, res.local_note
    g = grid(360, 300, 15)
    ins = _inside(T, g, shape)
    glob, loc = A.rmse(res.M, g[ins], T.apply(g[ins])), A.rmse(res.transform, g[ins], T.apply(g[ins]))
    # the global homography leaves 1.8-4.6 px here; the field brings it under a pixel (measured 0.49-0.91 px over
    # seeds 1, 2, 3, 5, 11 with the default coarse-to-fine second round; 0.61-1.21 px with one round)
    assert loc < 1.5 and loc < 0.6 * glob, (glob, loc, res.warp.info["cv"]["choice"])
    assert res.warp.info["rounds"] == 2 and res.warp.info["searches"][1] < res.warp.info["searches"][0]
    assert res.to_json()["local"]["model"] == "homography+local"


def test_local_refinement_coarse_to_fine_beats_single_pass():
    # against the known warp (not against any hand points): the second round, matched under the first field with
    # the narrower search, gets closer than the single pass (measured on seeds 1, 2, 3, 5, 11: 1.07 -> 0.89,
    # 1.21 -> 0.91, 0.87 -> 0.77, 0.61 -> 0.49, 1.00 -> 0.72 px)
    lbl = synthetic_label(300, 360, seed=11)
    T = sine_warp(homography(), lbl.shape, phase=(11 * 0.7, 11 * 1.3))
    shape = (470, 560)
    img = render_warped(lbl, T, shape, seed=11)
    M = A.auto_align(lbl, img, kind="homography").M
    g = grid(360, 300, 15)
    ins = _inside(T, g, shape)
    one = A.local_refine(lbl, img, M, rounds=1)
    two = A.local_refine(lbl, img, M)
    assert one.info["rounds"] == 1 and one.info["searches"] == [14]
    assert two.info["rounds"] == 2 and 3 <= two.info["searches"][1] < 14
    e1, e2 = A.rmse(one, g[ins], T.apply(g[ins])), A.rmse(two, g[ins], T.apply(g[ins]))
    assert e2 < e1 and e2 < 1.0, (e1, e2)
    assert two.info["cv"]["cv_rmse_px"] < one.info["cv"]["cv_rmse_px"]
    # the fine search covers the Tukey cut-off (4.685 x robust scale) + 1 px for the peak fit, within [3, search]
    assert A.fine_search_radius(0.6, 14) == 4 and A.fine_search_radius(0.69, 14) == 5
    assert A.fine_search_radius(0.01, 14) == 3 and A.fine_search_radius(10.0, 14) == 14
    # an explicit fine search is honoured
    assert A.local_refine(lbl, img, M, fine_search=6).info["searches"] == [14, 6]


def test_local_refinement_pure_homography_no_worse():
    lbl = synthetic_label(300, 360, seed=5)
    H = homography()
    shape = (470, 560)
    img = render_image(lbl, H, shape, seed=5)
    res = A.auto_align(lbl, img, kind="homography", local="local")
    g = grid(360, 300, 15)
    ins = _inside(H, g, shape)
    glob, loc = A.rmse(res.M, g[ins], A.apply_transform(H, g[ins])), A.rmse(res.warp, g[ins], A.apply_transform(H, g[ins]))
    assert loc < max(glob + 0.1, 0.3), (glob, loc)
    assert res.warp.max_displacement() < 0.5


@settings(max_examples=12, deadline=None)
@given(ax=st.floats(0, 6), ay=st.floats(0, 6), lx=st.floats(150, 600), ly=st.floats(150, 600),
       px=st.floats(0, 6.3), py=st.floats(0, 6.3), s=st.floats(1.1, 1.8), deg=st.floats(-5, 5))
def test_property_point_mapping_and_label_warp_agree(ax, ay, lx, ly, px, py, s, deg):
    lh, lw = 120, 160
    T = sine_warp(similarity(s, deg, 30, 20), (lh, lw), amp=(ax, ay), wavelength=(lx, ly), phase=(px, py), spacing=8)
    shape = (int(lh * s) + 80, int(lw * s) + 80)
    yy, xx = np.mgrid[0:lh, 0:lw]
    # stripes 5 px wide: a stripe's centre pixel must land (nearest neighbour) on that stripe's value
    for code, coord in (((xx // 5) % 250).astype(np.uint8), 0), (((yy // 5) % 250).astype(np.uint8), 1):
        warped = A.warp_label(code, T, shape)
        assert set(np.unique(warped).tolist()) <= set(np.unique(code).tolist()) | {255}
        p = np.c_[xx[2:-2:5, 2:-2:5].ravel(), yy[2:-2:5, 2:-2:5].ravel()].astype(float)
        p = p[(p[:, coord] % 5) == 2]
        u = np.rint(T.apply(p)).astype(int)
        ok = (u[:, 0] >= 0) & (u[:, 0] < shape[1]) & (u[:, 1] >= 0) & (u[:, 1] < shape[0])
        got = warped[u[ok, 1], u[ok, 0]]
        want = code[p[ok, 1].astype(int), p[ok, 0].astype(int)]
        np.testing.assert_array_equal(got, want)
    # inverse and forward mapping agree
    u = np.c_[np.linspace(40, shape[1] - 40, 20), np.linspace(30, shape[0] - 30, 20)]
    np.testing.assert_allclose(T.apply(T.inverse(u)), u, atol=1e-3)


def test_local_warp_json_roundtrip_and_zero_field():
    T = sine_warp(homography(), (100, 120), spacing=8)
    back = A.LocalWarp.from_json(json.loads(json.dumps(T.to_json())))
    g = grid(120, 100, 7)
    np.testing.assert_allclose(back.apply(g), T.apply(g), atol=2e-3)
    zero = A.LocalWarp(M=homography(), dx=np.zeros((3, 4)), dy=np.zeros((3, 4)), spacing=40)
    np.testing.assert_allclose(zero.apply(g), A.apply_transform(homography(), g), atol=1e-9)
    lbl = synthetic_label(100, 120, seed=1)
    np.testing.assert_array_equal(A.warp_label(lbl, zero, (180, 200)), A.warp_label(lbl, homography(), (180, 200)))


def test_local_refinement_bad_input(monkeypatch):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    with pytest.raises(ValueError, match="at least 20 window correspondences, got 5"):
        A.fit_local_field(src, src + 1, np.eye(3), (100, 100))
    lbl = synthetic_label(60, 70, seed=2)
    img = render_image(lbl, similarity(1.4, 0, 5, 5), (100, 110), seed=2)
    with pytest.raises(ValueError, match="window correspondences"):
        A.local_refine(lbl, img, similarity(1.4, 0, 5, 5))
    # auto_align falls back to the global transform and says why
    lbl = synthetic_label(240, 300, seed=7)
    img = render_image(lbl, homography(), (380, 460), seed=7)

    def boom(*a, **k):
        raise ValueError("a local refinement needs at least 20 window correspondences, got 3")

    monkeypatch.setattr(A, "local_refine", boom)
    res = A.auto_align(lbl, img, kind="homography", local="local")
    assert res.warp is None and res.transform is res.M and "global transform kept" in res.local_note
    assert "+local" not in res.method and "local_note" in res.to_json()
    res = A.auto_align(lbl, img, kind="homography", local="local", refine=False)
    assert res.warp is None and "needs the refined global transform" in res.local_note
    with pytest.raises(ValueError, match="unknown local refinement"):
        A.auto_align(lbl, img, local="tps")


def test_cv_prefers_global_on_pure_noise():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 400, (300, 2))
    dst = A.apply_transform(homography(), src) + rng.normal(0, 0.5, (300, 2))
    W = A.fit_local_field(src, dst, homography(), (400, 400))
    assert W.max_displacement() < 0.5, W.info["cv"]["choice"]  # measured: "global only", a zero field


# ---------------------------------------------------------------------------------------------------- real data
def _airport():
    if not (AIRPORT / "A_label.png").is_file() or not (AIRPORT / "B_sat.jpeg").is_file():
        pytest.skip(f"real sample data absent: {AIRPORT} (local-only airport label/imagery, never committed)")
    from seghz.classes import get_scheme
    from seghz.data.io import read_image, read_label

    pts = json.loads(POINTS.read_text())["points"]
    src = np.array([p["label_xy"] for p in pts])
    dst = np.array([p["image_xy"] for p in pts])
    return read_label(AIRPORT / "A_label.png", get_scheme("hz20")), read_image(AIRPORT / "B_sat.jpeg"), src, dst


def _split_rounds(pts):
    """(round-1 points, round-2 points). Round 2 (``"round": 2``, B01-B18) never looked at the automatic prediction;
    B13-B18 were marked after the residuals of B01-B12 had been seen (see the fixture's ``method_round2``)."""
    return [p for p in pts if p.get("round", 1) == 1], [p for p in pts if p.get("round", 1) == 2]


def _xy(pts):
    return np.array([p["label_xy"] for p in pts]), np.array([p["image_xy"] for p in pts])


def test_hand_control_points_consistent():
    pts = json.loads(POINTS.read_text())["points"]
    assert len(pts) >= 30 and len({p["id"] for p in pts}) == len(pts)
    old, new = _split_rounds(pts)
    assert len(old) == 12 and len(new) >= 18  # 12 from round 1 + 18 added in round 2 (B01-B18)
    for sub in (old, new, pts):
        src, dst = _xy(sub)
        assert np.ptp(src[:, 0]) > 700 and np.ptp(src[:, 1]) > 500  # each set spread over the 1000×800 label
    src, dst = _xy(pts)
    M = A.fit_transform(src, dst, "homography")
    # a single homography does not fit the label exactly (it is not a projective image of the mosaic):
    assert A.rmse(M, src, dst) < 4.0  # measured 3.35 px on all 30 (round 1: 2.53, round 2: 2.76 px)
    loo, _ = A.holdout_rmse(src, dst, "homography")
    assert loo < 5.5  # measured 4.17 px on all 30 (round 1: 4.80, round 2: 3.57 px; edge points extrapolate)


@pytest.fixture(scope="module")
def airport_auto():
    label, image, src, dst = _airport()
    res = A.auto_align(label, image, kind="homography")
    return res, src, dst, label, image


def test_airport_plain_resize_is_far_off():
    label, image, src, dst = _airport()
    assert A.rmse(A.resize_transform(label.shape, image.shape), src, dst) > 50  # measured 78.0 px (round 1: 71.0)


def test_airport_auto_alignment_regression(airport_auto):
    res, src, dst, *_ = airport_auto
    err = A.rmse(res.M, src, dst)
    assert err < 5.0, (err, res.method)  # measured 3.72 px RMSE (median 2.73) on the 30 hand points (round 1: 4.06)
    assert 1.35 < A.describe(res.M)["scale"] < 1.55


@pytest.fixture(scope="module")
def airport_local(airport_auto):
    res, src, dst, label, image = airport_auto
    return A.local_refine(label, image, res.M), src, dst


def test_airport_local_refinement_improves(airport_auto, airport_local):
    res, *_ = airport_auto
    W, src, dst = airport_local
    g, loc = A.rmse(res.M, src, dst), A.rmse(W, src, dst)
    assert loc < g and loc < 3.2, (g, loc, W.info["cv"]["choice"])  # measured 3.72 -> 2.80 px on all 30 points
    assert W.info["cv"]["cv_rmse_px"] < W.info["cv"]["cv_rmse_global_px"]
    assert float(np.max(A.residuals(W, src, dst))) < 7.0  # measured max 8.82 -> 5.82 px (SWC)
    assert W.info["searches"] == [14, 5]  # coarse-to-fine: the second round searches ±5 px (robust scale 0.69 px)


def test_airport_local_refinement_per_round(airport_auto, airport_local):
    """The field is fitted without any hand point; measured on each marking round separately. Round 2 was marked
    without looking at the automatic (local) prediction, so it is the fairer check of the refinement."""
    res, *_ = airport_auto
    W, *_ = airport_local
    old, new = _split_rounds(json.loads(POINTS.read_text())["points"])
    so, do = _xy(old)
    sn, dn = _xy(new)
    assert A.rmse(W, so, do) < 3.6  # measured 4.06 -> 3.23 px (median 2.56, max 5.82) on the 12 round-1 points
    assert A.rmse(W, sn, dn) < 2.9  # measured 3.47 -> 2.48 px (median 1.82, max 4.72) on the 18 round-2 points
    assert A.rmse(W, sn, dn) < A.rmse(res.M, sn, dn)


def test_airport_auto_alignment_within_3px(airport_local):
    """Issue target: automatic alignment within 3 px RMSE on the hand-marked points (all rounds, 30 points).

    Measured 2026-11-26 (2-core CPU): 2.80 px (median 2.17, max 5.82 at SWC) with the two-round local refinement,
    3.72 px with the global homography alone. Round 1 alone still measures 3.23 px, round 2 alone 2.48 px. The margin
    is small against the uncertainty of the reference: a bootstrap over the 30 points gives a 90 % interval of
    2.34-3.24 px, and on the first 24 points (before the B13-B18 batch) it was 2.99 px (docs/alignment.md)."""
    W, src, dst = airport_local
    assert A.rmse(W, src, dst) < 3.0


# ---------------------------------------------------------------------------------------------------------- CLI
def test_cli_align_points_out_overlay_import(tmp_path, capsys):
    from seghz.classes import get_scheme
    from seghz.cli import main
    from seghz.data.io import read_index_mask, write_index_mask, write_rgb
    from seghz.store import Workspace

    lbl = synthetic_label(160, 200, seed=4)
    M = similarity(1.4, 1.0, 12, 6)
    lp, ip, pp = tmp_path / "l.png", tmp_path / "i.png", tmp_path / "p.json"
    write_index_mask(lp, lbl, get_scheme("hz20"))
    write_rgb(ip, render_image(lbl, M, (240, 300), seed=4))
    src = grid(200, 160, 3)
    pp.write_text(json.dumps([[*s, *d] for s, d in zip(src.tolist(), A.apply_transform(M, src).tolist())]))
    ws = tmp_path / "ws"
    rc = main(["--workspace", str(ws), "align", "--label", str(lp), "--image", str(ip), "--scheme", "hz20", "--points",
               str(pp), "--kind", "similarity", "--out", str(tmp_path / "a.png"), "--overlay", str(tmp_path / "o.png"),
               "--import-scene", "cli aligned"])
    out = capsys.readouterr().out
    assert rc == 0 and "RMSE on 9 control points: 0.00 px" in out and "leave-one-out RMSE: 0.00 px" in out
    assert read_index_mask(tmp_path / "a.png").shape == (240, 300)
    assert (tmp_path / "o.png").stat().st_size > 0
    sc = next(s for s in Workspace(ws).list_scenes() if s.name == "cli aligned")
    assert "similarity" in sc.source and sc.scheme == "hz20" and sc.split == "none"
    rc = main(["--workspace", str(ws), "align", "--label", str(lp), "--image", str(ip), "--scheme", "hz20", "--points",
               str(pp), "--kind", "similarity", "--import-scene", "cli hz7", "--target-scheme", "hz7", "--split", "val"])
    assert rc == 0 and "(cli-hz7, hz7, split val)" in capsys.readouterr().out
    sc = next(s for s in Workspace(ws).list_scenes() if s.name == "cli hz7")
    assert sc.scheme == "hz7" and sc.split == "val"
    # too few points: a clear error, exit code 2
    pp.write_text(json.dumps([[0, 0, 1, 1]]))
    rc = main(["align", "--label", str(lp), "--image", str(ip), "--scheme", "hz20", "--points", str(pp)])
    assert rc == 2 and "needs at least 4 point pairs, got 1" in capsys.readouterr().err


def test_cli_align_refine_local_saves_field(tmp_path, capsys):
    from seghz.classes import get_scheme
    from seghz.cli import main
    from seghz.data.io import read_index_mask, write_index_mask, write_rgb
    from seghz.geo.align_scene import load_transform
    from seghz.store import Workspace

    lbl = synthetic_label(300, 360, seed=5)
    T = sine_warp(homography(), lbl.shape, phase=(3.5, 6.5))
    lp, ip, pp = tmp_path / "l.png", tmp_path / "i.png", tmp_path / "p.json"
    write_index_mask(lp, lbl, get_scheme("hz20"))
    write_rgb(ip, render_warped(lbl, T, (470, 560), seed=5))
    src = grid(360, 300, 5)[1:-1]
    pp.write_text(json.dumps([[*s, *d] for s, d in zip(src.tolist(), T.apply(src).tolist())]))
    ws = tmp_path / "ws"
    rc = main(["--workspace", str(ws), "align", "--label", str(lp), "--image", str(ip), "--scheme", "hz20", "--points",
               str(pp), "--auto", "--refine", "local", "--out", str(tmp_path / "a.png"), "--import-scene", "local"])
    out = capsys.readouterr().out
    assert rc == 0 and "local refinement:" in out and "with the local field" in out, out
    sc = next(s for s in Workspace(ws).list_scenes() if s.name == "local")
    assert "+local field" in sc.source
    rec = json.loads((Workspace(ws).scene_path(sc, "image").parent / "alignment.json").read_text())
    assert rec["refinement"] == "local" and rec["local"]["info"]["cv"]["choice"]
    back = load_transform(rec)
    assert isinstance(back, A.LocalWarp) and A.rmse(back, src, T.apply(src)) < 1.5
    assert rec["rmse_px"] == pytest.approx(A.rmse(back, src, T.apply(src)), abs=0.01)
    saved = read_index_mask(tmp_path / "a.png")
    assert (saved == A.warp_label(lbl, back, saved.shape)).mean() > 0.999  # field stored to 1e-3 px
    assert isinstance(load_transform({"matrix": np.eye(3).tolist()}), np.ndarray)
