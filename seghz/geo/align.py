"""Co-registering a label map with imagery (the seed's NBBs step, done with classical tools).

Pure numpy/OpenCV; no Streamlit. All transforms are 3×3 matrices ``M`` that map **label pixel** coordinates
``(x=col, y=row)`` to **image pixel** coordinates (pixel centres at integer positions, OpenCV convention).

* :func:`fit_transform` fits a similarity / affine / homography to control points (least squares) and refuses
  too few points or degenerate results with a ValueError naming the problem.
* :func:`residuals`, :func:`rmse`, :func:`holdout_rmse` (leave-one-out) measure a fit.
* :func:`auto_align` matches a class-index label map to an RGB image without control points: a coarse
  scale/rotation/translation search on edge renderings, local feature matching (SIFT/AKAZE/ORB, ratio test,
  RANSAC) on several renderings, then ECC refinement of a "class-mean" rendering of the label (each class
  painted with its mean image grey level) against the image. Candidates are compared by one score: the
  correlation between the class-mean rendering and the image.
* :func:`warp_label` resamples a label into the image grid (nearest neighbour, outside = 255).
* :func:`local_refine` (or ``auto_align(..., local="local")``) adds an optional non-rigid refinement on top of the
  global matrix, fitted on automatic window matches only: a :class:`LocalWarp` (3×3 + a smooth displacement field on
  a control grid, plain JSON) that :func:`map_points`, :func:`residuals` / :func:`rmse` and :func:`warp_label`
  accept wherever they accept a 3×3 matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

IGNORE = 255
KINDS = ("similarity", "affine", "homography")
MIN_POINTS = {"similarity": 2, "affine": 3, "homography": 4}
MAX_SCALE_RATIO = 50.0  # |scale| outside [1/50, 50] is called extreme
MAX_ANISOTROPY = 6.0  # ratio of the linear part's singular values (shear / squash)


# ----------------------------------------------------------------------------------------------------- fitting
def _pts(a, what: str) -> np.ndarray:
    arr = np.asarray(a, np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{what} must be an N×2 array of (x, y) points, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} holds non-finite coordinates")
    return arr


def apply_transform(M, pts) -> np.ndarray:
    """Map N×2 points with the 3×3 matrix ``M``."""
    p = _pts(pts, "points")
    M = np.asarray(M, np.float64)
    h = np.c_[p, np.ones(len(p))] @ M.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return h[:, :2] / h[:, 2:3]


def _check_spread(src: np.ndarray, kind: str) -> None:
    c = src - src.mean(0)
    sv = np.linalg.svd(c, compute_uv=False) if len(src) > 1 else np.zeros(2)
    extent = float(sv[0]) if len(sv) else 0.0
    if extent < 1e-9:
        raise ValueError(f"{kind} fit: all {len(src)} source points coincide; the points must be spread out")
    if kind != "similarity" and sv[1] / sv[0] < 1e-3:
        raise ValueError(f"{kind} fit: the {len(src)} source points are (nearly) collinear, which leaves the "
                         "transform undetermined across the line; add points off that line")
    if kind == "homography" and len(src) >= 4:
        # four points with three on a line also leave a homography undetermined
        n = len(src)
        ok = 0
        for i in range(n):
            for j in range(i + 1, n):
                for k in range(j + 1, n):
                    a, b, d = src[i], src[j], src[k]
                    area = abs((b[0] - a[0]) * (d[1] - a[1]) - (b[1] - a[1]) * (d[0] - a[0]))
                    if area > 1e-3 * extent * extent:
                        ok += 1
                if ok >= 4:
                    return
        if ok < 4:
            raise ValueError(f"homography fit: the {n} source points are too close to collinear (need at least 4 "
                             "points with no three on one line)")


def check_transform(M, kind: str = "homography", src=None) -> None:
    """Raise ValueError naming the problem when ``M`` is near-singular, mirrors, or has an extreme scale, shear
    or perspective (over the bounding box of ``src`` when given)."""
    M = np.asarray(M, np.float64)
    if M.shape != (3, 3) or not np.isfinite(M).all():
        raise ValueError(f"{kind} fit: the result is not a finite 3×3 matrix")
    if abs(M[2, 2]) < 1e-12:
        raise ValueError(f"{kind} fit: degenerate result (near-singular homography, h33 ≈ 0)")
    M = M / M[2, 2]
    A = M[:2, :2]
    if np.linalg.cond(M) > 1e12:
        raise ValueError(f"{kind} fit: degenerate result (near-singular matrix, condition {np.linalg.cond(M):.2g})")
    det = float(np.linalg.det(A))
    if det <= 0:
        raise ValueError(f"{kind} fit: the result flips orientation (mirror image, det {det:.3g}); the point pairs "
                         "are probably mismatched")
    s = math.sqrt(det)
    if not (1 / MAX_SCALE_RATIO <= s <= MAX_SCALE_RATIO):
        raise ValueError(f"{kind} fit: extreme scale {s:.3g} (allowed 1/{MAX_SCALE_RATIO:g}..{MAX_SCALE_RATIO:g})")
    sv = np.linalg.svd(A, compute_uv=False)
    if sv[0] / sv[1] > MAX_ANISOTROPY:
        raise ValueError(f"{kind} fit: extreme shear/stretch (axis ratio {sv[0] / sv[1]:.3g} > {MAX_ANISOTROPY:g})")
    if src is not None and kind == "homography":
        p = _pts(src, "source points")
        lo, hi = p.min(0), p.max(0)
        corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]])
        w = np.c_[corners, np.ones(4)] @ M[2]
        if (w <= 0).any() or w.max() / w.min() > 2.0:
            raise ValueError(f"homography fit: extreme perspective (the horizon crosses or nears the points' area; "
                             f"w ranges {w.min():.3g}..{w.max():.3g})")


def fit_transform(src_pts, dst_pts, kind: str = "homography", *, check: bool = True) -> np.ndarray:
    """Least-squares ``kind`` transform (similarity, affine or homography) mapping ``src_pts`` onto ``dst_pts``.

    Returns a 3×3 float64 matrix. Raises ValueError for an unknown kind, mismatched arrays, fewer points than the
    model needs (2 / 3 / 4), collinear or coincident points, and (``check``) degenerate results.
    """
    if kind not in MIN_POINTS:
        raise ValueError(f"unknown transform kind {kind!r}; choose one of {', '.join(KINDS)}")
    src, dst = _pts(src_pts, "source points"), _pts(dst_pts, "destination points")
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} source points but {len(dst)} destination points")
    need = MIN_POINTS[kind]
    if len(src) < need:
        raise ValueError(f"a {kind} needs at least {need} point pairs, got {len(src)}")
    _check_spread(src, kind)
    _check_spread(dst, kind)
    # normalise (Hartley) for conditioning
    def norm(p):
        c = p.mean(0)
        d = np.sqrt(((p - c) ** 2).sum(1)).mean() or 1.0
        k = math.sqrt(2) / d
        return np.array([[k, 0, -k * c[0]], [0, k, -k * c[1]], [0, 0, 1.0]])

    Ts, Td = norm(src), norm(dst)
    s = apply_transform(Ts, src)
    d = apply_transform(Td, dst)
    n = len(s)
    if kind == "similarity":  # x' = a x - b y + tx ; y' = b x + a y + ty
        A = np.zeros((2 * n, 4))
        A[0::2] = np.c_[s[:, 0], -s[:, 1], np.ones(n), np.zeros(n)]
        A[1::2] = np.c_[s[:, 1], s[:, 0], np.zeros(n), np.ones(n)]
        a, b, tx, ty = np.linalg.lstsq(A, d.ravel(), rcond=None)[0]
        Mn = np.array([[a, -b, tx], [b, a, ty], [0, 0, 1.0]])
    elif kind == "affine":
        A = np.c_[s, np.ones(n)]
        sol = np.linalg.lstsq(A, d, rcond=None)[0]  # 3×2
        Mn = np.r_[sol.T, [[0, 0, 1.0]]]
    else:  # DLT
        rows = []
        for (x, y), (u, v) in zip(s, d):
            rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
            rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
        _, _, vt = np.linalg.svd(np.asarray(rows))
        Mn = vt[-1].reshape(3, 3)
    M = np.linalg.inv(Td) @ Mn @ Ts
    if abs(M[2, 2]) > 1e-15:
        M = M / M[2, 2]
    if check:
        check_transform(M, kind, src)
    return M


def residuals(M, src_pts, dst_pts) -> np.ndarray:
    """Per-point distance (px, in the destination image) between ``M(src)`` and ``dst`` (``M``: a 3×3 matrix or a
    :class:`LocalWarp`)."""
    return np.sqrt(((map_points(M, src_pts) - _pts(dst_pts, "destination points")) ** 2).sum(1))


def rmse(M, src_pts, dst_pts) -> float:
    """Root-mean-square of :func:`residuals`."""
    r = residuals(M, src_pts, dst_pts)
    return float(np.sqrt((r ** 2).mean())) if len(r) else float("nan")


def holdout_rmse(src_pts, dst_pts, kind: str = "homography", holdout=None) -> tuple[float, np.ndarray]:
    """Error on points the fit did not see.

    ``holdout`` = indices to hold out (fit on the rest, error on these), or None for leave-one-out (each point
    predicted by the fit on all others). Returns (rmse, per-held-out-point errors); a fold whose fit fails gives
    NaN for its point and is left out of the RMSE.
    """
    src, dst = _pts(src_pts, "source points"), _pts(dst_pts, "destination points")
    n = len(src)
    folds = [[i] for i in range(n)] if holdout is None else [sorted(int(i) for i in holdout)]
    errs = []
    for f in folds:
        keep = np.setdiff1d(np.arange(n), f)
        try:
            M = fit_transform(src[keep], dst[keep], kind)
            errs.extend(residuals(M, src[f], dst[f]).tolist())
        except ValueError:
            errs.extend([float("nan")] * len(f))
    e = np.asarray(errs, np.float64)
    ok = e[np.isfinite(e)]
    return (float(np.sqrt((ok ** 2).mean())) if len(ok) else float("nan")), e


def scale_matrix(f: float) -> np.ndarray:
    return np.diag([f, f, 1.0])


def rescale_transform(M, f_src: float, f_dst: float) -> np.ndarray:
    """``M`` for images resized by ``f_src`` (label) and ``f_dst`` (image): S_dst · M · S_src⁻¹."""
    return scale_matrix(f_dst) @ np.asarray(M, np.float64) @ np.linalg.inv(scale_matrix(f_src))


def describe(M) -> dict:
    """Scale, rotation (degrees, counter-clockwise in the image) and translation of a transform's linear part."""
    M = np.asarray(M, np.float64) / M[2, 2]
    A = M[:2, :2]
    return {"scale": float(math.sqrt(abs(np.linalg.det(A)))), "rotation_deg": float(math.degrees(math.atan2(A[1, 0] - A[0, 1], A[0, 0] + A[1, 1]))),
            "tx": float(M[0, 2]), "ty": float(M[1, 2])}


# ----------------------------------------------------------------------------------------------------- warping
def warp_label(label: np.ndarray, M, out_shape: tuple[int, int]) -> np.ndarray:
    """Resample a class-index ``label`` into an image of ``out_shape`` (H, W) with ``M`` (label → image px):
    nearest neighbour, pixels that fall outside the label become 255 (ignore). ``M`` may also be a
    :class:`LocalWarp` (global matrix + displacement field; resampled with :func:`cv2.remap`)."""
    if isinstance(M, LocalWarp):
        return M.warp_label(label, out_shape)
    lbl = np.asarray(label, np.uint8)
    h, w = int(out_shape[0]), int(out_shape[1])
    return cv2.warpPerspective(lbl, np.asarray(M, np.float64), (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE)


def resize_transform(label_shape: tuple[int, int], image_shape: tuple[int, int]) -> np.ndarray:
    """The 'plain resize' transform: stretch the label's extent onto the image's (pixel-centre convention)."""
    lh, lw = label_shape[:2]
    ih, iw = image_shape[:2]
    sx, sy = iw / lw, ih / lh
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def overlay(image: np.ndarray, label_rgb: np.ndarray, valid: np.ndarray | None = None, opacity: float = 0.45) -> np.ndarray:
    """Label colours blended on an RGB image (only where ``valid``), plus the label's class boundaries drawn opaque."""
    img = np.asarray(image, np.float32)
    col = np.asarray(label_rgb, np.float32)
    out = img * (1 - opacity) + col * opacity
    if valid is not None:
        out = np.where(np.asarray(valid, bool)[..., None], out, img)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def label_overlay(image: np.ndarray, label_index: np.ndarray, M, palette: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Warp ``label_index`` into the image with ``M`` and blend its colours (``palette`` (256, 3)) on the image;
    class boundaries are drawn at full colour so misalignment is easy to see."""
    w = warp_label(label_index, M, image.shape[:2])
    col = np.asarray(palette, np.uint8)[w]
    out = overlay(image, col, w != IGNORE, opacity)
    edges = _boundaries(w) & (w != IGNORE)
    out[edges] = col[edges]
    return out


# ----------------------------------------------------------------------------------------------------- renderings
def _boundaries(lbl: np.ndarray) -> np.ndarray:
    l = np.asarray(lbl)
    e = np.zeros(l.shape, bool)
    e[:, 1:] |= l[:, 1:] != l[:, :-1]
    e[1:, :] |= l[1:, :] != l[:-1, :]
    return e


def render_edges(label: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Class-boundary map of a label (float32 0..1, Gaussian-softened)."""
    e = _boundaries(label).astype(np.float32)
    return cv2.GaussianBlur(e, (0, 0), sigma) if sigma > 0 else e


def image_gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def image_edges(image: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Gradient magnitude of the (smoothed) image grey level, scaled to 0..1 by its 99th percentile."""
    g = cv2.GaussianBlur(image_gray(image), (0, 0), 1.0)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    m = np.sqrt(gx * gx + gy * gy)
    m = np.clip(m / (np.percentile(m, 99) + 1e-6), 0, 1)
    return cv2.GaussianBlur(m, (0, 0), sigma) if sigma > 0 else m


def class_means(label: np.ndarray, image: np.ndarray, M, channels: str = "gray") -> np.ndarray:
    """Mean image value (grey, 0..1) of each class under the transform ``M``: a (256,) table, NaN for classes that
    fall nowhere on the image."""
    w = warp_label(label, M, image.shape[:2])
    g = image_gray(image)
    ok = w != IGNORE
    cnt = np.bincount(w[ok].ravel(), minlength=256).astype(np.float64)
    s = np.bincount(w[ok].ravel(), weights=g[ok].ravel(), minlength=256)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, s / cnt, np.nan)


def render_means(label: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The label painted with per-class grey levels (classes without a value get the overall mean)."""
    m = np.asarray(means, np.float64).copy()
    fill = np.nanmean(m) if np.isfinite(m).any() else 0.5
    m[~np.isfinite(m)] = fill
    return m.astype(np.float32)[np.asarray(label, np.uint8)]


def render_luminance(label: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """The label painted with the luminance of its palette colours (or a fixed spread of grey levels)."""
    if palette is None:
        lut = ((np.arange(256) * 97) % 256).astype(np.float32) / 255.0
    else:
        p = np.asarray(palette, np.float32)
        lut = (0.299 * p[:, 0] + 0.587 * p[:, 1] + 0.114 * p[:, 2]) / 255.0
    return lut[np.asarray(label, np.uint8)]


def match_score(label: np.ndarray, image: np.ndarray, M, max_side: int = 512) -> float:
    """How well ``M`` aligns: the correlation between the class-mean rendering of the label (warped into the
    image) and the image grey level, over the overlap, at most ``max_side`` px on the image's long side."""
    f = min(1.0, max_side / max(image.shape[:2]))
    img = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else image
    Mf = scale_matrix(f) @ np.asarray(M, np.float64)
    try:
        w = warp_label(label, Mf, img.shape[:2])
    except cv2.error:
        return -1.0
    ok = w != IGNORE
    if ok.sum() < 0.05 * ok.size:
        return -1.0
    g = image_gray(img)
    cnt = np.bincount(w[ok], minlength=256).astype(np.float64)
    s = np.bincount(w[ok], weights=g[ok], minlength=256)
    mean = np.divide(s, cnt, out=np.zeros(256), where=cnt > 0)
    r = mean[w[ok]]
    gv = g[ok].astype(np.float64)
    # correlation² of a per-class constant predictor = share of grey variance explained by the classes
    vt = gv.var()
    return float(((r - gv.mean()) ** 2).mean() / vt) if vt > 0 else -1.0


# ----------------------------------------------------------------------------------------------------- matching
@dataclass
class AlignResult:
    """Outcome of :func:`auto_align`. ``M`` maps label px → image px."""

    M: np.ndarray
    kind: str
    method: str
    score: float
    inliers: int = 0
    candidates: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    warp: LocalWarp | None = None  # the non-rigid refinement (``refine="local"``), on top of ``M``
    local_note: str | None = None  # why the local refinement was not used, when it was asked for

    @property
    def transform(self):
        """The final label → image mapping: the :class:`LocalWarp` when there is one, else the 3×3 ``M``."""
        return self.warp if self.warp is not None else self.M

    def to_json(self) -> dict:
        d = {"matrix": np.asarray(self.M).tolist(), "kind": self.kind, "method": self.method,
             "score": round(float(self.score), 5), "inliers": int(self.inliers), "candidates": self.candidates,
             "seconds": round(self.seconds, 2)}
        if self.warp is not None:
            d["local"] = self.warp.to_json()
        if self.local_note:
            d["local_note"] = self.local_note
        return d


def _rot_scale(s: float, deg: float, cx: float, cy: float) -> np.ndarray:
    """Similarity about the label centre (cx, cy): rotate by ``deg`` and scale by ``s`` (no translation yet)."""
    a = math.radians(deg)
    c, si = s * math.cos(a), s * math.sin(a)
    return np.array([[c, -si, 0], [si, c, 0], [0, 0, 1.0]]) @ np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])


def coarse_search(label: np.ndarray, image: np.ndarray, *, scales=None, rotations=(-4, -2, 0, 2, 4), work: int = 320,
                  crop: float = 0.6) -> tuple[np.ndarray, float]:
    """Exhaustive similarity search: the central ``crop`` of the label's edge rendering, scaled and rotated, is
    slid over the image's edge map by normalised cross-correlation at ``work`` px (image long side).
    ``scales`` are label→image scale factors (default: ±35 % around the ratio of the image and label sizes).
    Returns (M, best correlation)."""
    lh, lw = label.shape[:2]
    ih, iw = image.shape[:2]
    f = work / max(ih, iw)
    ie = cv2.resize(image_edges(image, 0), None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    ie = cv2.GaussianBlur(ie, (0, 0), 1.0)
    if scales is None:
        nominal = math.sqrt((iw / lw) * (ih / lh))
        scales = nominal * np.exp(np.linspace(math.log(0.65), math.log(1.35), 25))
    le_full = render_edges(label, 0)
    best = (-2.0, None)
    cx, cy = (lw - 1) / 2, (lh - 1) / 2
    for s in scales:
        for deg in rotations:
            # label → work image frame: f·s·R about the centre, placed at the template centre
            R = _rot_scale(f * s, deg, cx, cy)
            tw, th = int(lw * f * s * crop), int(lh * f * s * crop)
            if tw < 16 or th < 16 or tw >= ie.shape[1] or th >= ie.shape[0]:
                continue
            T = np.array([[1, 0, (tw - 1) / 2], [0, 1, (th - 1) / 2], [0, 0, 1.0]]) @ R
            tpl = cv2.warpPerspective(le_full, T, (tw, th), flags=cv2.INTER_AREA if f * s < 1 else cv2.INTER_LINEAR)
            tpl = cv2.GaussianBlur(tpl, (0, 0), 1.0)
            if tpl.std() < 1e-6:
                continue
            res = cv2.matchTemplate(ie, tpl, cv2.TM_CCOEFF_NORMED)
            _, mx, _, loc = cv2.minMaxLoc(res)
            if mx > best[0]:
                M = np.array([[1, 0, loc[0]], [0, 1, loc[1]], [0, 0, 1.0]]) @ T
                best = (mx, np.linalg.inv(scale_matrix(f)) @ M)
    if best[1] is None:
        raise ValueError("coarse search found no placement: the label is too small or too large for the image")
    return best[1], float(best[0])


def _detector(name: str):
    if name == "sift":
        return cv2.SIFT_create(nfeatures=3000), cv2.NORM_L2
    if name == "akaze":  # not in every OpenCV build (OpenCV 5 moved it out of the main module)
        if not hasattr(cv2, "AKAZE_create"):
            return None, None
        return cv2.AKAZE_create(), cv2.NORM_HAMMING
    if name == "orb":
        return cv2.ORB_create(nfeatures=3000), cv2.NORM_HAMMING
    raise ValueError(f"unknown detector {name!r}")


def _u8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32)
    lo, hi = np.percentile(a, 1), np.percentile(a, 99)
    return np.clip((a - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)


def feature_match(src_img: np.ndarray, dst_img: np.ndarray, detector: str = "sift", kind: str = "homography",
                  ratio: float = 0.8, ransac_px: float = 4.0, M0=None, radius: float | None = None):
    """Detect and match features between two single-channel renderings; Lowe ratio test, optional gating by a
    prior ``M0`` (a match must land within ``radius`` px of where ``M0`` puts it), RANSAC fit of ``kind``.
    Returns (M, inlier count) or (None, 0)."""
    det, norm = _detector(detector)
    if det is None:
        return None, 0
    a, b = _u8(src_img), _u8(dst_img)
    ka, da = det.detectAndCompute(a, None)
    kb, db = det.detectAndCompute(b, None)
    if da is None or db is None or len(ka) < 4 or len(kb) < 4:
        return None, 0
    pa = np.float64([k.pt for k in ka])
    pb = np.float64([k.pt for k in kb])
    if M0 is not None and radius:
        # spatially gated ratio test: only image features near where the prior puts a label feature compete
        pred = apply_transform(M0, pa)
        dd = cv2.batchDistance(da, db, cv2.CV_32F, normType=norm)[0].astype(np.float64)
        far = ((pred[:, None, :] - pb[None, :, :]) ** 2).sum(2) > radius * radius
        dd[far] = np.inf
        order = np.argsort(dd, axis=1)[:, :2]
        d1 = dd[np.arange(len(pa)), order[:, 0]]
        d2 = dd[np.arange(len(pa)), order[:, 1]]
        keep = np.isfinite(d1) & (d1 < ratio * d2)
        ps, pd = pa[keep], pb[order[keep, 0]]
    else:
        knn = cv2.BFMatcher(norm).knnMatch(da, db, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance]
        ps = np.float64([ka[m.queryIdx].pt for m in good]).reshape(-1, 2)
        pd = np.float64([kb[m.trainIdx].pt for m in good]).reshape(-1, 2)
    if len(ps) < MIN_POINTS[kind] + 2:
        return None, 0
    if kind == "homography":
        M, mask = cv2.findHomography(ps, pd, cv2.RANSAC, ransac_px, maxIters=5000, confidence=0.999)
    elif kind == "affine":
        A, mask = cv2.estimateAffine2D(ps, pd, method=cv2.RANSAC, ransacReprojThreshold=ransac_px, maxIters=5000)
        M = None if A is None else np.r_[A, [[0, 0, 1.0]]]
    else:
        A, mask = cv2.estimateAffinePartial2D(ps, pd, method=cv2.RANSAC, ransacReprojThreshold=ransac_px, maxIters=5000)
        M = None if A is None else np.r_[A, [[0, 0, 1.0]]]
    if M is None or mask is None:
        return None, 0
    inl = mask.ravel().astype(bool)
    try:
        M = fit_transform(ps[inl], pd[inl], kind)  # least-squares polish on the inliers, with the sanity checks
    except ValueError:
        return None, 0
    return M, int(inl.sum())


_ECC_MOTION = {"similarity": cv2.MOTION_EUCLIDEAN, "affine": cv2.MOTION_AFFINE, "homography": cv2.MOTION_HOMOGRAPHY}


def project_kind(M, kind: str, shape: tuple[int, int]) -> np.ndarray:
    """The ``kind`` transform closest to ``M`` over a label of ``shape`` (least squares on a 7×7 grid)."""
    h, w = shape[:2]
    gx, gy = np.meshgrid(np.linspace(0, w - 1, 7), np.linspace(0, h - 1, 7))
    g = np.c_[gx.ravel(), gy.ravel()]
    return fit_transform(g, apply_transform(M, g), kind)


def ecc_refine(label: np.ndarray, image: np.ndarray, M, kind: str = "homography", levels=(0.25, 0.5, 1.0),
               iterations: int = 60, eps: float = 1e-5, sigma: float = 1.0, rendering: str = "means") -> np.ndarray:
    """Refine ``M`` by ECC (:func:`cv2.findTransformECC`) between the label's class-mean rendering (the template,
    in label coordinates) and the image grey level, coarse to fine over ``levels`` (scale factors applied to both
    images); ``rendering="edges"`` compares class boundaries with the image's gradient magnitude instead. ECC runs an affine motion for ``similarity``/``affine`` and a homography for ``homography``; the
    result is projected back onto ``kind``. A level that does not converge keeps the previous estimate."""
    M = np.asarray(M, np.float64) / M[2, 2]
    g_full = image_gray(image) if rendering == "means" else image_edges(image, 0)
    valid = (np.asarray(label) != IGNORE).astype(np.uint8)
    homog = kind == "homography"
    motion = cv2.MOTION_HOMOGRAPHY if homog else cv2.MOTION_AFFINE
    for lv in levels:
        rend = render_means(label, class_means(label, image, M)) if rendering == "means" else render_edges(label, 0)
        tpl = cv2.resize(rend, None, fx=lv, fy=lv, interpolation=cv2.INTER_AREA) if lv != 1 else rend
        msk = cv2.resize(valid, (tpl.shape[1], tpl.shape[0]), interpolation=cv2.INTER_NEAREST)
        img = cv2.resize(g_full, None, fx=lv, fy=lv, interpolation=cv2.INTER_AREA) if lv != 1 else g_full
        tpl = cv2.GaussianBlur(tpl, (0, 0), sigma)
        img = cv2.GaussianBlur(img, (0, 0), sigma)
        # ECC warps its *input* (here the label rendering, whose mask marks the labelled pixels) onto the
        # *template* (the image): its warp maps image px → label px, i.e. M⁻¹
        W = np.linalg.inv(rescale_transform(M, lv, lv))
        W = W / W[2, 2]
        warp = (W if homog else W[:2]).astype(np.float32)
        try:
            _, warp = cv2.findTransformECC(img, tpl, warp, motion,
                                           (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps), msk, 5)
        except cv2.error:
            continue
        W = warp.astype(np.float64) if homog else np.r_[warp.astype(np.float64), [[0, 0, 1.0]]]
        W = np.linalg.inv(W)
        try:
            Mn = rescale_transform(W, 1 / lv, 1 / lv)
            Mn = Mn / Mn[2, 2]
            check_transform(Mn, "affine" if kind == "similarity" else kind)
        except ValueError:
            continue
        M = Mn
    return project_kind(M, kind, label.shape) if kind == "similarity" else M


def _subpixel(res: np.ndarray, loc: tuple[int, int]) -> tuple[float, float]:
    """Parabolic sub-pixel refinement of a correlation peak at ``loc`` (x, y)."""
    x, y = loc
    dx = dy = 0.0
    if 0 < x < res.shape[1] - 1:
        a, b, c = res[y, x - 1], res[y, x], res[y, x + 1]
        den = a - 2 * b + c
        dx = 0.5 * (a - c) / den if den < 0 else 0.0
    if 0 < y < res.shape[0] - 1:
        a, b, c = res[y - 1, x], res[y, x], res[y + 1, x]
        den = a - 2 * b + c
        dy = 0.5 * (a - c) / den if den < 0 else 0.0
    return x + float(np.clip(dx, -1, 1)), y + float(np.clip(dy, -1, 1))


def patch_correspondences(label: np.ndarray, image: np.ndarray, M, *, patch: int = 96, step: int = 64,
                          search: int = 14, min_peak: float = 0.5, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local shifts of the label against the image under ``M``: the class-mean rendering of the warped label is cut
    into ``patch``-px windows every ``step`` px, and each window is matched (normalised cross-correlation,
    sub-pixel peak) within ±``search`` px of its place in the image grey level. Windows fully inside the label,
    with texture, and a peak ≥ ``min_peak`` give one correspondence each. Returns (label points, image points,
    peak values). :func:`window_correspondences` with ``min_inside=1``."""
    return window_correspondences(label, image, M, patch=patch, step=step, search=search, min_peak=min_peak,
                                  min_inside=1.0, sigma=sigma)


def patch_refine(label: np.ndarray, image: np.ndarray, M, kind: str = "homography", rounds: int = 2,
                 ransac_px: float = 2.5, **kw) -> tuple[np.ndarray, int]:
    """Refine ``M`` from :func:`patch_correspondences`: a RANSAC fit of ``kind`` rejects windows where the label
    disagrees with the image (outdated or mislabelled areas), then least squares on the inliers. Returns
    (M, inlier count)."""
    M = np.asarray(M, np.float64)
    n_in = 0
    for _ in range(rounds):
        src, dst, _ = patch_correspondences(label, image, M, **kw)
        if len(src) < max(8, 2 * MIN_POINTS[kind]):
            break
        if kind == "homography":
            _, mask = cv2.findHomography(src, dst, cv2.RANSAC, ransac_px, maxIters=5000, confidence=0.999)
        elif kind == "affine":
            _, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=ransac_px)
        else:
            _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=ransac_px)
        if mask is None:
            break
        inl = mask.ravel().astype(bool)
        try:
            M = fit_transform(src[inl], dst[inl], kind)
        except ValueError:
            break
        n_in = int(inl.sum())
    return M, n_in


def auto_align(label: np.ndarray, image: np.ndarray, *, kind: str = "homography", palette: np.ndarray | None = None,
               detectors=("sift",), refine: bool = True, scales=None, rotations=(-4, -2, 0, 2, 4),
               gate_px: float = 30.0, progress=None, local: str | None = None) -> AlignResult:
    """Align a class-index ``label`` (H×W uint8, 255 = ignore) to an RGB ``image`` without control points.

    1. coarse similarity search on edge renderings (:func:`coarse_search`), over scales around the size ratio
       and ``rotations`` (degrees);
    2. local features (each of ``detectors``: ``sift``, ``orb``, ``akaze`` where the OpenCV build has it) on
       label renderings (class-mean grey levels under the coarse transform, class boundaries, palette
       luminance when ``palette`` is given) against image grey/edges, the label first resized to the image's
       scale; a ratio test among image features within ``gate_px`` of the coarse prediction, RANSAC; per
       rendering the detector with most inliers is kept;
    3. the candidates are compared by :func:`match_score` and the best is refined (``refine``): ECC on the
       class-mean rendering (:func:`ecc_refine`), then local window matching with RANSAC
       (:func:`patch_refine`), kept when at least 20 windows agree;
    4. ``local="local"`` (needs ``refine``) adds a non-rigid refinement on top of the global
       matrix (:func:`local_refine`): the result's ``warp`` (a :class:`LocalWarp`) and ``transform``; ``M`` stays
       the global 3×3. When the refinement cannot be fitted (too few windows) ``warp`` is None and ``local_note``
       says why (the global transform is the fallback).
    """
    import time

    if kind not in MIN_POINTS:
        raise ValueError(f"unknown transform kind {kind!r}; choose one of {', '.join(KINDS)}")
    t0 = time.perf_counter()
    label = np.asarray(label, np.uint8)
    image = np.asarray(image, np.uint8)
    if label.ndim != 2:
        raise ValueError(f"label must be a 2-D class-index map, got shape {label.shape}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H×W×3 RGB, got shape {image.shape}")
    if (label != IGNORE).sum() == 0:
        raise ValueError("the label holds no labelled pixels (all 255)")
    say = progress or (lambda f, m: None)
    cands: list[dict] = []

    say(0.05, "coarse scale/rotation search")
    M0, ncc = coarse_search(label, image, scales=scales, rotations=rotations)
    if kind != "homography":
        M0 = project_kind(M0, kind, label.shape) if kind == "similarity" else M0
    cands.append({"method": "coarse-search", "M": M0, "inliers": 0, "ncc": round(ncc, 4)})

    if detectors:
        s0 = describe(M0)["scale"]
        S = scale_matrix(s0)
        lab_s = cv2.resize(label, None, fx=s0, fy=s0, interpolation=cv2.INTER_NEAREST)
        M0s = M0 @ np.linalg.inv(S)  # resized label px -> image px
        renders = {"class-means": render_means(lab_s, class_means(label, image, M0)), "boundaries": render_edges(lab_s, 1.0)}
        if palette is not None:
            renders["palette-luminance"] = render_luminance(lab_s, palette)
        gray, edges = image_gray(image), image_edges(image, 1.0)
        say(0.25, "feature matching")
        for rname, rimg in renders.items():
            best = None
            for det in detectors:
                try:
                    Mf, n = feature_match(rimg, edges if rname == "boundaries" else gray, det, kind, M0=M0s, radius=gate_px)
                except (cv2.error, ValueError):
                    continue
                if Mf is not None and (best is None or n > best[1]):
                    best = (Mf @ S, n, det)
            if best is not None:
                cands.append({"method": f"features:{best[2]}/{rname}", "M": best[0], "inliers": best[1]})
    say(0.5, "scoring candidates")
    for c in cands:
        c["score"] = match_score(label, image, c["M"])
    best = max(cands, key=lambda c: c["score"])
    M, method, score, inl = best["M"], best["method"], best["score"], best["inliers"]
    if refine:
        say(0.6, "ECC refinement")
        Me = ecc_refine(label, image, M, kind)
        se = match_score(label, image, Me)
        cands.append({"method": method + "+ecc", "M": Me, "inliers": inl, "score": se})
        if se >= score:
            M, method, score = Me, method + "+ecc", se
        say(0.8, "local window refinement")
        patch = int(min(160, max(48, min(image.shape[:2]) // 5)))
        Mp, n_in = patch_refine(label, image, M, kind, patch=patch, step=max(16, int(patch * 0.4)))
        sp = match_score(label, image, Mp)
        cands.append({"method": method + "+windows", "M": Mp, "inliers": n_in, "score": sp})
        if n_in >= 20:
            M, method, score, inl = Mp, method + "+windows", sp, n_in
    if kind != "homography":
        M = M.copy()
        M[2] = [0, 0, 1]
    warp, note = None, None
    if local not in (None, "none", "local"):
        raise ValueError(f"unknown local refinement {local!r}; choose None or 'local'")
    if local == "local":
        if not refine:
            note = "the local refinement needs the refined global transform (refine=True); global transform kept"
        else:
            say(0.9, "local (non-rigid) refinement")
            try:
                warp = local_refine(label, image, M)
                method += "+local"
            except ValueError as e:
                note = f"local refinement not used ({e}); global transform kept"
    say(1.0, "done")
    diag = [{k: (np.asarray(v).tolist() if k == "M" else (round(v, 5) if isinstance(v, float) else v))
             for k, v in c.items()} for c in cands]
    return AlignResult(M=np.asarray(M, np.float64), kind=kind, method=method, score=float(score), inliers=int(inl),
                       candidates=diag, seconds=time.perf_counter() - t0, warp=warp, local_note=note)


# ----------------------------------------------------------------------------------------------- non-rigid refinement
LOCAL_SIGMAS = (12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0, 192.0, 256.0)  # candidate kernel widths, label px (CV picks)
LOCAL_PRIORS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # shrinkage toward the global transform, window-equivalents (CV picks)
TUKEY_C = 4.685  # Tukey biweight constant (95 % efficiency under Gaussian noise); residuals beyond c·scale get weight 0


def _bilinear(grid: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``grid`` (H×W) at fractional grid coordinates, clamped at the border."""
    gh, gw = grid.shape
    gx = np.clip(gx, 0, gw - 1)
    gy = np.clip(gy, 0, gh - 1)
    x0 = np.minimum(np.floor(gx).astype(np.int64), gw - 2) if gw > 1 else np.zeros(gx.shape, np.int64)
    y0 = np.minimum(np.floor(gy).astype(np.int64), gh - 2) if gh > 1 else np.zeros(gy.shape, np.int64)
    fx, fy = gx - x0, gy - y0
    x1, y1 = np.minimum(x0 + 1, gw - 1), np.minimum(y0 + 1, gh - 1)
    return ((grid[y0, x0] * (1 - fx) + grid[y0, x1] * fx) * (1 - fy) + (grid[y1, x0] * (1 - fx) + grid[y1, x1] * fx) * fy)


@dataclass
class LocalWarp:
    """A global 3×3 transform ``M`` plus a smooth residual displacement field: a label point ``p`` (x, y) maps to
    ``M(p) + d(p)`` in the image, where ``d`` (image px) is bilinearly interpolated on a control grid defined in
    label px (node ``(i, j)`` at ``origin + (j, i) · spacing``; constant beyond the grid). Pure data (lists /
    floats in :meth:`to_json`), so it can be saved without pickle and read back with :meth:`from_json`."""

    M: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    spacing: float
    origin: tuple[float, float] = (0.0, 0.0)
    info: dict = field(default_factory=dict)

    def displacement(self, pts) -> np.ndarray:
        p = _pts(pts, "points")
        gx = (p[:, 0] - self.origin[0]) / self.spacing
        gy = (p[:, 1] - self.origin[1]) / self.spacing
        return np.c_[_bilinear(np.asarray(self.dx, np.float64), gx, gy), _bilinear(np.asarray(self.dy, np.float64), gx, gy)]

    def apply(self, pts) -> np.ndarray:
        """Map N×2 label points to image points."""
        return apply_transform(self.M, pts) + self.displacement(pts)

    def inverse(self, pts, iterations: int = 8) -> np.ndarray:
        """Map N×2 image points back to label points (fixed-point iteration ``p ← M⁻¹(u − d(p))``; converges
        because the field is small and smooth next to the global scale)."""
        u = _pts(pts, "points")
        Minv = np.linalg.inv(np.asarray(self.M, np.float64))
        p = apply_transform(Minv, u)
        for _ in range(iterations):
            p = apply_transform(Minv, u - self.displacement(p))
        return p

    def inverse_maps(self, out_shape: tuple[int, int], step: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """(map_x, map_y) float32 for :func:`cv2.remap`: the label position of every image pixel. The exact inverse
        (:meth:`inverse`) is computed every ``step`` image px and interpolated bilinearly in between: the mapping is
        smooth, so this stays within a few hundredths of a label px of the exact inverse (0.014 px at most on the
        airport field) and takes ~0.3 s instead of ~5 s for a 1536×1280 image."""
        h, w = int(out_shape[0]), int(out_shape[1])
        xs = np.arange(0, w - 1 + step, step, dtype=np.float64) if w > 1 else np.zeros(1)
        ys = np.arange(0, h - 1 + step, step, dtype=np.float64) if h > 1 else np.zeros(1)
        gx, gy = np.meshgrid(xs, ys)
        p = self.inverse(np.c_[gx.ravel(), gy.ravel()]).reshape(len(ys), len(xs), 2)

        def lerp_axis(n, m):
            t = np.arange(n, dtype=np.float64) / step
            i0 = np.minimum(np.floor(t).astype(np.int64), max(m - 2, 0))
            return i0, np.minimum(i0 + 1, m - 1), t - i0

        iy0, iy1, fy = lerp_axis(h, len(ys))
        ix0, ix1, fx = lerp_axis(w, len(xs))
        out = []
        for c in range(2):
            g = p[..., c]
            rows = g[iy0] * (1 - fy)[:, None] + g[iy1] * fy[:, None]
            out.append((rows[:, ix0] * (1 - fx) + rows[:, ix1] * fx).astype(np.float32))
        return out[0], out[1]

    def warp_label(self, label: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
        """Nearest-neighbour resampling of ``label`` into the image grid (:func:`cv2.remap`, outside = 255)."""
        mx, my = self.inverse_maps(out_shape)
        return cv2.remap(np.asarray(label, np.uint8), mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=IGNORE)

    def max_displacement(self) -> float:
        return float(np.sqrt(np.asarray(self.dx) ** 2 + np.asarray(self.dy) ** 2).max()) if np.size(self.dx) else 0.0

    def to_json(self) -> dict:
        return {"model": "homography+local", "matrix": np.asarray(self.M, np.float64).tolist(),
                "field": {"description": "image-px displacement added to matrix(label px), bilinear on a control grid "
                                         "in label px: node (row i, col j) at origin + (j, i) * spacing",
                          "spacing": float(self.spacing), "origin": [float(v) for v in self.origin],
                          "dx": np.round(np.asarray(self.dx, np.float64), 3).tolist(),
                          "dy": np.round(np.asarray(self.dy, np.float64), 3).tolist()},
                "info": self.info}

    @classmethod
    def from_json(cls, d: dict) -> LocalWarp:
        f = d["field"]
        return cls(M=np.asarray(d["matrix"], np.float64), dx=np.asarray(f["dx"], np.float64),
                   dy=np.asarray(f["dy"], np.float64), spacing=float(f["spacing"]),
                   origin=tuple(float(v) for v in f["origin"]), info=dict(d.get("info") or {}))


def map_points(T, pts) -> np.ndarray:
    """Map label points to image points with a 3×3 matrix or a :class:`LocalWarp`."""
    return T.apply(pts) if isinstance(T, LocalWarp) else apply_transform(T, pts)


def window_correspondences(label: np.ndarray, image: np.ndarray, T, *, patch: int = 96, step: int = 32,
                           search: int = 14, min_peak: float = 0.5, min_inside: float = 0.6, sigma: float = 1.0
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local shifts of the label against the image under a 3×3 ``T`` or a :class:`LocalWarp`: windows of the warped
    class-mean rendering with at least ``min_inside`` of their pixels labelled (masked normalised
    cross-correlation, so label edges are measured too; ``min_inside=1``: only windows wholly inside the label,
    unmasked), matched within ±``search`` px. Returns (label points, image points, peaks); the label point is the
    centre of the window's labelled part mapped back with ``T``."""
    h, w = image.shape[:2]
    M = T.M if isinstance(T, LocalWarp) else np.asarray(T, np.float64)
    wl = T.warp_label(label, (h, w)) if isinstance(T, LocalWarp) else warp_label(label, M, (h, w))
    lut = render_means(np.arange(256, dtype=np.uint8)[None], class_means(label, image, M))[0]
    rend = cv2.GaussianBlur(lut[wl], (0, 0), sigma)
    gray = cv2.GaussianBlur(image_gray(image), (0, 0), sigma)
    inside = (wl != IGNORE).astype(np.float32)
    if min_inside < 1.0:  # erode the mask a little: the blur mixes the outside fill into the rendering near the edge
        inside = cv2.erode(inside, np.ones((3, 3), np.uint8), iterations=max(1, round(2 * sigma)))
    cs = [], [], []
    ramp = np.arange(patch, dtype=np.float64)
    for y0 in range(search, h - patch - search + 1, step):
        for x0 in range(search, w - patch - search + 1, step):
            msk = inside[y0:y0 + patch, x0:x0 + patch]
            frac = float(msk.mean())
            if frac < min_inside:
                continue
            tpl = rend[y0:y0 + patch, x0:x0 + patch]
            if tpl[msk > 0].std() < 0.02:
                continue
            reg = gray[y0 - search:y0 + patch + search, x0 - search:x0 + patch + search]
            if frac > 0.999:
                res = cv2.matchTemplate(reg, tpl, cv2.TM_CCOEFF_NORMED)
            else:
                res = cv2.matchTemplate(reg, tpl, cv2.TM_CCOEFF_NORMED, mask=msk)
                res = np.nan_to_num(res, nan=-1.0, posinf=-1.0, neginf=-1.0)
            _, mx, _, loc = cv2.minMaxLoc(res)
            if mx < min_peak or loc[0] in (0, res.shape[1] - 1) or loc[1] in (0, res.shape[0] - 1):
                continue
            px, py = _subpixel(res, loc)
            # the centre of the labelled part of the window (what was actually matched); msk is 0/1
            n_in = float(msk.sum())
            c = np.array([x0 + float(msk.sum(0) @ ramp) / n_in, y0 + float(msk.sum(1) @ ramp) / n_in])
            cs[0].append(c)
            cs[1].append(c + [px - search, py - search])
            cs[2].append(mx)
    if not cs[0]:
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)
    c, d, pk = np.asarray(cs[0]), np.asarray(cs[1]), np.asarray(cs[2])
    src = T.inverse(c) if isinstance(T, LocalWarp) else apply_transform(np.linalg.inv(M), c)
    return src, d, pk


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0)


def _kernel(a: np.ndarray, b: np.ndarray, sigma: float, d2: np.ndarray | None = None) -> np.ndarray:
    return np.exp(-(_sqdist(a, b) if d2 is None else d2) / (2 * sigma * sigma))


def _smooth(Q: np.ndarray, P: np.ndarray, wts: np.ndarray, r: np.ndarray, sigma: float, prior: float,
            linear: bool = False, K: np.ndarray | None = None) -> np.ndarray:
    """Gaussian-kernel regression of residuals ``r`` (at ``P``, weights ``wts``) evaluated at ``Q``.

    ``linear=False``: weighted mean, shrunk toward 0 (the global transform) by ``prior`` pseudo-points.
    ``linear=True``: local affine fit (value + gradient, coordinates in units of ``sigma``) with the same ``prior``
    as a ridge on both, which removes the weighted mean's bias at the edges of the data."""
    Kw = (_kernel(Q, P, sigma) if K is None else K) * wts[None, :]
    if not linear:
        return (Kw @ r) / (Kw.sum(1) + prior + 1e-12)[:, None]
    Ps, Qs = P / sigma, Q / sigma
    X = np.c_[np.ones(len(P)), Ps[:, 0], Ps[:, 1], Ps[:, 0] ** 2, Ps[:, 0] * Ps[:, 1], Ps[:, 1] ** 2,
              r, Ps[:, :1] * r, Ps[:, 1:2] * r]
    S = Kw @ X  # (nq, 11) weighted moments
    s0, s1 = S[:, 0], S[:, 1:3]
    s2 = np.stack([np.stack([S[:, 3], S[:, 4]], 1), np.stack([S[:, 4], S[:, 5]], 1)], 1)
    t0, t1 = S[:, 6:8], np.stack([S[:, 8:10], S[:, 10:12]], 1)
    q = Qs
    s1c = s1 - q * s0[:, None]
    s2c = s2 - q[:, :, None] * s1[:, None, :] - s1[:, :, None] * q[:, None, :] + s0[:, None, None] * q[:, :, None] * q[:, None, :]
    t1c = t1 - q[:, :, None] * t0[:, None, :]
    G = np.zeros((len(Q), 3, 3))
    G[:, 0, 0] = s0 + prior + 1e-12
    G[:, 0, 1:] = G[:, 1:, 0] = s1c
    G[:, 1:, 1:] = s2c + (prior + 1e-9) * np.eye(2)
    H = np.concatenate([t0[:, None, :], t1c], 1)
    return np.linalg.solve(G, H)[:, 0, :]


def _robust_fit(src: np.ndarray, r: np.ndarray, sigma: float, prior: float, linear: bool = False,
                iterations: int = 4, c: float = TUKEY_C) -> tuple[np.ndarray, float]:
    """Tukey-biweight weights (IRLS) of correspondences against the leave-one-out kernel smooth. Returns (weights,
    robust scale of the leave-one-out residuals, px)."""
    K = _kernel(src, src, sigma)
    np.fill_diagonal(K, 0.0)
    wts = np.ones(len(src))
    scale = 1.0
    for _ in range(iterations):
        e = np.sqrt(((r - _smooth(src, src, wts, r, sigma, prior, linear, K=K)) ** 2).sum(1))
        scale = max(1.4826 * float(np.median(e)), 0.1)
        u = e / (c * scale)
        wts = np.where(u < 1, (1 - u * u) ** 2, 0.0)
    return wts, scale


def block_folds(src: np.ndarray, k: int = 5, block: float | None = None, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) of each point by spatial blocks: the points' extent is cut into square blocks of side
    ``block`` (default: a fifth of the extent's long side) and whole blocks are dealt to folds at random, so held-out
    points are not next to training points of the same block."""
    lo = src.min(0)
    ext = float(np.ptp(src, 0).max()) or 1.0
    b = block or ext / 5
    bid = np.floor((src - lo) / b).astype(np.int64)
    keys = bid[:, 0] * 100_003 + bid[:, 1]
    uniq = np.unique(keys)
    perm = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {int(u): int(perm[i] % k) for i, u in enumerate(uniq)}
    return np.array([fold_of[int(v)] for v in keys])


def cv_smoothing(src: np.ndarray, r: np.ndarray, wts: np.ndarray, sigmas=LOCAL_SIGMAS, priors=LOCAL_PRIORS,
                 estimators=("mean", "linear"), k: int = 5, seed: int = 0) -> dict:
    """Choose the estimator (kernel-weighted ``mean`` or local ``linear`` fit), kernel width and shrinkage by
    spatial-block ``k``-fold cross-validation on the correspondences themselves: the error is the weighted RMS of
    held-out residuals (Tukey weights from the robust pass, so outliers do not vote). The zero field (global
    transform only) is scored too and wins ties. Returns the table and the choice."""
    folds = block_folds(src, k, seed=seed)
    W = wts / max(wts.sum(), 1e-9)

    def score(pred):
        return float(np.sqrt((W * ((r - pred) ** 2).sum(1)).sum()))

    table = {"global only": score(np.zeros_like(r))}
    best = ("global only", None, None, None)
    split = [(folds == f, folds != f) for f in range(k)]
    split = [(te, tr) for te, tr in split if te.any() and tr.any()]
    d2 = [_sqdist(src[te], src[tr]) for te, tr in split]
    for s in sigmas:
        Ks = [_kernel(None, None, s, d) for d in d2]
        for est in estimators:
            for pr in priors:
                pred = np.zeros_like(r)
                for (te, tr), K in zip(split, Ks):
                    pred[te] = _smooth(src[te], src[tr], wts[tr], r[tr], s, pr, est == "linear", K=K)
                name = f"{est},sigma={s:g},prior={pr:g}"
                table[name] = sc = score(pred)
                if sc < table[best[0]]:
                    best = (name, est, s, pr)
    return {"table": {kk: round(v, 4) for kk, v in table.items()}, "choice": best[0], "estimator": best[1],
            "sigma": best[2], "prior": best[3], "cv_rmse_px": round(table[best[0]], 4),
            "cv_rmse_global_px": round(table["global only"], 4), "folds": k}


def fit_local_field(src, dst, M, shape: tuple[int, int], *, spacing: float | None = None, sigma: float | None = None,
                    prior: float | None = None, estimator: str | None = None, min_matches: int = 20,
                    seed: int = 0) -> LocalWarp:
    """Fit a smooth residual displacement field on top of the global ``M`` from correspondences (label px ``src`` →
    image px ``dst``).

    Residuals ``dst − M(src)`` are smoothed by Gaussian-kernel regression (``estimator`` ``"mean"``: weighted mean;
    ``"linear"``: local affine fit; both shrunk toward zero by ``prior``, so the field fades to the global
    transform away from data); outliers are down-weighted by a Tukey biweight on leave-one-out residuals (IRLS).
    Any of ``sigma`` / ``prior`` / ``estimator`` left None is chosen by spatial-block 5-fold cross-validation on
    the correspondences (:func:`cv_smoothing`); when nothing beats the global transform in cross-validation the
    field is zero. The field is sampled every ``spacing`` label px over the label of ``shape`` (H, W); by default
    a quarter of the kernel width, at most 16 px (bilinear interpolation then stays within ~0.1 px of the smooth).
    Raises ValueError with fewer than ``min_matches`` correspondences."""
    src, dst = _pts(src, "source points"), _pts(dst, "destination points")
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} source points but {len(dst)} destination points")
    if len(src) < min_matches:
        raise ValueError(f"a local refinement needs at least {min_matches} window correspondences, got {len(src)}")
    M = np.asarray(M, np.float64)
    r = dst - apply_transform(M, src)
    s0 = sigma or float(np.median(LOCAL_SIGMAS))
    p0 = 1.0 if prior is None else prior
    wts, scale = _robust_fit(src, r, s0, p0)  # first outlier weights: weighted mean at a middle width
    cv = None
    if sigma is None or prior is None or estimator is None:
        cv = cv_smoothing(src, r, wts, sigmas=LOCAL_SIGMAS if sigma is None else (sigma,),
                          priors=LOCAL_PRIORS if prior is None else (prior,),
                          estimators=("mean", "linear") if estimator is None else (estimator,), seed=seed)
        estimator, sigma, prior = cv["estimator"], cv["sigma"], cv["prior"]
    if estimator not in (None, "mean", "linear"):
        raise ValueError(f"unknown estimator {estimator!r}; choose 'mean' or 'linear'")
    if sigma is not None:
        wts, scale = _robust_fit(src, r, sigma, prior, estimator == "linear")
    h, w = shape[:2]
    if spacing is None:
        spacing = 16.0 if sigma is None else float(np.clip(sigma / 4, 2.0, 16.0))
    gw, gh = math.ceil((w - 1) / spacing) + 1, math.ceil((h - 1) / spacing) + 1
    if sigma is None:
        dxg = dyg = np.zeros((gh, gw))
    else:
        gx, gy = np.meshgrid(np.arange(gw) * spacing, np.arange(gh) * spacing)
        nodes = np.c_[gx.ravel(), gy.ravel()]
        d = np.zeros((len(nodes), 2))
        for i in range(0, len(nodes), 4096):
            d[i:i + 4096] = _smooth(nodes[i:i + 4096], src, wts, r, sigma, prior, estimator == "linear")
        dxg, dyg = d[:, 0].reshape(gh, gw), d[:, 1].reshape(gh, gw)
    info = {"correspondences": len(src), "inliers": int((wts > 0).sum()), "estimator": estimator,
            "sigma_px": sigma, "prior": prior, "robust_scale_px": round(scale, 3), "cv": cv}
    return LocalWarp(M=M, dx=dxg, dy=dyg, spacing=float(spacing), info=info)


def fine_search_radius(robust_scale: float, search: int, c: float = TUKEY_C) -> int:
    """Search radius (px) for a coarse-to-fine matching round under a fitted field: just wide enough that every
    shift the Tukey weights would still keep (up to ``c`` × the field's robust residual scale) lands inside the
    correlation map, where its peak can be refined (a peak on the map's border is rejected); at least 3 px and at
    most the first round's ``search``."""
    return int(min(search, max(3, math.ceil(c * robust_scale) + 1)))


def local_refine(label: np.ndarray, image: np.ndarray, M, *, patches=None, step: int = 32, search: int = 14,
                 rounds: int = 2, spacing: float | None = None, sigma: float | None = None, prior: float | None = None,
                 min_matches: int = 20, fine_search: int | None = None, progress=None) -> LocalWarp:
    """Non-rigid refinement of a global transform ``M`` from the automatic window correspondences only.

    Each round matches windows of every size in ``patches`` (every ``step`` px, masked so windows that straddle the
    label's edge count) under the current warp, and refits the residual field (:func:`fit_local_field`:
    Gaussian-kernel smoothing with Tukey outlier weights, width and shrinkage by spatial-block cross-validation)
    on top of ``M`` from that round's matches alone. The first round searches ±``search`` px around ``M``; later
    rounds are coarse-to-fine: the windows are cut from the label warped by the previous round's field and searched
    only ±``fine_search`` px (default :func:`fine_search_radius` of the previous field's robust residual scale), so
    fewer false peaks compete. ``rounds=1`` is the single-pass refinement. ``patches`` defaults to the window of
    :func:`auto_align`'s window step (``min(160, max(48, short image side / 5))`` px) and 0.6 of it. Raises
    ValueError when there are fewer than ``min_matches`` windows (in the first round; a later round with too few
    keeps the previous field)."""
    import time

    if patches is None:
        p = int(min(160, max(48, min(image.shape[:2]) // 5)))
        patches = (p, round(0.6 * p))
    t0 = time.perf_counter()
    label = np.asarray(label, np.uint8)
    T = np.asarray(M, np.float64)
    say = progress or (lambda f, m: None)
    searches, done, n_rounds = [], 0, max(1, int(rounds))
    for k in range(n_rounds):
        if k == 0:
            rad = int(search)
        elif fine_search is not None:
            rad = int(fine_search)
        else:
            rad = fine_search_radius(float(T.info.get("robust_scale_px", search)), int(search))
        S, D = [], []
        for p in patches:
            say((k + 0.5) / n_rounds, f"local windows {p} px, ±{rad} px (round {k + 1})")
            s, d, _ = window_correspondences(label, image, T, patch=p, step=step, search=rad)
            S.append(s)
            D.append(d)
        src, dst = np.concatenate(S), np.concatenate(D)
        try:
            T = fit_local_field(src, dst, M, label.shape, spacing=spacing, sigma=sigma, prior=prior,
                                min_matches=min_matches)
        except ValueError:
            if k == 0:
                raise
            break
        searches.append(rad)
        done = k + 1
    T.info.update({"rounds": done, "patches": list(patches), "step": step, "search": search, "searches": searches,
                   "max_displacement_px": round(T.max_displacement(), 3), "seconds": round(time.perf_counter() - t0, 2)})
    return T


__all__ = [
    "IGNORE",
    "KINDS",
    "MIN_POINTS",
    "AlignResult",
    "LocalWarp",
    "apply_transform",
    "auto_align",
    "block_folds",
    "check_transform",
    "class_means",
    "coarse_search",
    "cv_smoothing",
    "describe",
    "ecc_refine",
    "feature_match",
    "fine_search_radius",
    "fit_local_field",
    "fit_transform",
    "holdout_rmse",
    "image_edges",
    "image_gray",
    "label_overlay",
    "local_refine",
    "map_points",
    "match_score",
    "overlay",
    "patch_correspondences",
    "patch_refine",
    "project_kind",
    "render_edges",
    "render_luminance",
    "render_means",
    "rescale_transform",
    "residuals",
    "resize_transform",
    "rmse",
    "warp_label",
    "window_correspondences",
]
