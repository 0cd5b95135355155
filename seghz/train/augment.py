"""Batched training augmentation on the device (GPU when there is one, else CPU), as torch ops.

One call of :func:`make_device_batch` builds a training batch:

1. a crop window per sample from a :class:`~seghz.train.sampling.CropSampler` (random or building-aware), on the
   host labels;
2. a source patch around it per sample, gathered in one batched index from device-preloaded uint8 tensors
   (:func:`preload`), or from the numpy samples when the data set does not fit (streaming);
3. one ``grid_sample`` for the whole batch that applies, per sample, a random scale (the source extent is
   ``size / s`` around the window's centre, kept inside the image when it fits) and a random D4 element (flips,
   rot90, transpose), identical for image (bilinear), label and trusted mask (nearest). Pixels outside the image
   become ignore (255) in the label, False in the trusted mask; the image repeats its edge there;
4. colour jitter per sample (brightness, contrast, saturation factors in ``[1 − j, 1 + j]``, each followed by a
   clamp to [0, 1], as torchvision does), then ``(x − mean) / std``.

All random draws (window, scale, D4 element, jitter factors) come from the caller's ``random.Random`` or
``numpy.random.Generator`` on the host, so a seed gives the same parameters on any device.

Geometry: pixel ``k`` covers ``[k, k + 1)``. Output pixel ``j`` sits at offset ``p = j + ½ − size/2`` from the
output centre; the D4 matrix ``M`` maps it to ``M·p`` and the source point is ``centre + M·p / s``. With ``s = 1``
every output pixel lands on a source pixel centre, so a scale range of ``(1, 1)`` gives exact D4 views of the
sampler's crop.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from seghz.classes import IGNORE
from seghz.devices import to_device
from seghz.train.sampling import CropSampler, Rng, randbelow, uniform

# The 8 elements of D4 as 2×2 integer matrices acting on (x, y) = (col, row) offsets: rot90^k, then optionally
# a horizontal flip. Element 0 is the identity.
_ROT = np.array([[0, -1], [1, 0]])
_FLIP = np.array([[-1, 0], [0, 1]])
D4 = tuple(np.linalg.matrix_power(_ROT, k) @ (_FLIP if f else np.eye(2, dtype=int)) for f in (0, 1) for k in range(4))

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_GRAY = (0.299, 0.587, 0.114)


@dataclass
class Preloaded:
    """Training samples stacked into uint8 tensors on a device, padded to a common size.

    ``images`` N×H×W×3 uint8, ``labels`` N×H×W uint8 (padding = 255), ``trusted`` N×H×W bool or None (no sample
    has a trusted mask), ``shapes`` N×2 long (each sample's own height and width) on the same device.
    """

    images: torch.Tensor
    labels: torch.Tensor
    trusted: torch.Tensor | None
    shapes: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def nbytes(self) -> int:
        t = 0 if self.trusted is None else self.trusted.numel()
        return self.images.numel() + self.labels.numel() + t


def preload_bytes(samples: Sequence[tuple]) -> int:
    """Bytes :func:`preload` would take for these samples (after padding to a common size)."""
    if not samples:
        return 0
    h = max(s[1].shape[0] for s in samples)
    w = max(s[1].shape[1] for s in samples)
    per = 3 + 1 + (1 if any(len(s) > 2 and s[2] is not None for s in samples) else 0)
    return len(samples) * h * w * per


def default_budget(device: str | torch.device) -> int:
    """Preload budget: 40 % of the free GPU memory on CUDA (torch's cached-but-unused blocks count as free,
    :func:`seghz.devices.cuda_free_bytes`); 0 elsewhere (on CPU, preloading only copies the data and the batched
    gather is no faster than slicing the numpy samples, so the default is to stream)."""
    device = torch.device(device)
    if device.type == "cuda":
        from seghz.devices import cuda_free_bytes

        return int(0.4 * cuda_free_bytes(device))
    return 0


def _host_tensor(a: np.ndarray, dtype) -> torch.Tensor:
    """A CPU tensor over ``a`` as C-contiguous ``dtype``; read-only arrays (cached, memory-mapped) are copied first,
    since torch cannot wrap them safely (it warns and would allow writes into them)."""
    return torch.from_numpy(np.require(a, dtype=dtype, requirements=["C_CONTIGUOUS", "WRITEABLE"]))


def preload(samples: Sequence[tuple], device: str | torch.device, max_bytes: int | None = None) -> Preloaded | None:
    """Stack ``(img, lbl)`` / ``(img, lbl, trusted)`` numpy samples into uint8 tensors on ``device``.

    Samples are padded at the bottom/right to the largest height and width (label 255, image 0, trusted False).
    Returns None (the caller streams from numpy) when the stack would exceed ``max_bytes`` (default
    :func:`default_budget`) or there are no samples.
    """
    if not samples:
        return None
    device = torch.device(device)
    need = preload_bytes(samples)
    budget = default_budget(device) if max_bytes is None else int(max_bytes)
    if need > budget:
        return None
    n = len(samples)
    h = max(s[1].shape[0] for s in samples)
    w = max(s[1].shape[1] for s in samples)
    has_tr = any(len(s) > 2 and s[2] is not None for s in samples)
    images = torch.zeros((n, h, w, 3), dtype=torch.uint8, device=device)
    labels = torch.full((n, h, w), IGNORE, dtype=torch.uint8, device=device)
    trusted = torch.zeros((n, h, w), dtype=torch.bool, device=device) if has_tr else None
    shapes = torch.zeros((n, 2), dtype=torch.long)
    for i, s in enumerate(samples):
        img, lbl = s[0], s[1]
        if img.shape[:2] != lbl.shape or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"sample {i}: image {img.shape} must be H×W×3 matching its label {lbl.shape}")
        hh, ww = lbl.shape
        images[i, :hh, :ww] = _host_tensor(img, np.uint8).to(device)
        labels[i, :hh, :ww] = _host_tensor(lbl, np.uint8).to(device)
        if has_tr and len(s) > 2 and s[2] is not None:
            trusted[i, :hh, :ww] = _host_tensor(s[2], bool).to(device)
        shapes[i, 0], shapes[i, 1] = hh, ww
    return Preloaded(images, labels, trusted, shapes.to(device))


@dataclass(frozen=True)
class AugParams:
    """Per-sample augmentation parameters of one batch (host values)."""

    centres: np.ndarray  # B×2 float (row, col) centre of the source window, continuous pixel coordinates
    scales: np.ndarray  # B float
    d4: np.ndarray  # B int in 0..7 (index into D4)
    jitter: np.ndarray  # B×3 float: brightness, contrast, saturation factors


def _centre(start: int, extent: int, size: int, scale: float) -> float:
    """Centre of the source window on one axis: the sampler's window centre, moved so that the scaled window
    (``size / scale`` long) stays inside ``[0, extent)`` when it fits; else it starts at 0 (padding at the end,
    as the trainer pads)."""
    half = size / scale / 2
    c = start + size / 2
    return float(min(max(c, half), max(half, extent - half)))


def draw_params(labels: Sequence[np.ndarray], sampler: CropSampler, rng: Rng, scale=(0.75, 1.25), d4: bool = True,
                jitter: float = 0.2) -> AugParams:
    """Draw the window, scale and D4 element of every sample (in that order per sample), then the jitter factors."""
    size = sampler.size
    b = len(labels)
    centres = np.zeros((b, 2))
    scales = np.ones(b)
    els = np.zeros(b, np.int64)
    jit = np.ones((b, 3))
    lo, hi = float(scale[0]), float(scale[1])
    for i, lbl in enumerate(labels):
        r, c = sampler.window(lbl, rng)
        s = uniform(rng, lo, hi) if hi > lo else lo
        h, w = lbl.shape
        centres[i] = _centre(r, h, size, s), _centre(c, w, size, s)
        scales[i] = s
        els[i] = randbelow(rng, 8) if d4 else 0
    if jitter > 0:  # drawn after the geometry, so the jitter setting does not change the crops of a seed
        for i in range(b):
            jit[i] = [uniform(rng, 1 - jitter, 1 + jitter) for _ in range(3)]
    return AugParams(centres, scales, els, jit)


def _patch_extent(size: int, min_scale: float) -> int:
    """Side of the source patch that holds every sampling point (and its bilinear neighbours) of a window."""
    return math.ceil(size / min_scale) + 4


def _gather_preloaded(data: Preloaded, idx: Sequence[int], starts: torch.Tensor, p: int):
    """B×P×P×3 image, B×P×P label (255 outside each sample's extent) and B×P×P trusted patches, one batched index.

    The image repeats its edge outside the sample's extent (clamped indices)."""
    dev = data.device
    ar = torch.arange(p, device=dev)
    it = to_device(list(idx), dev, torch.long)
    shp = data.shapes[it]  # B×2
    rows = starts[:, 0:1] + ar  # B×P
    cols = starts[:, 1:2] + ar
    rin = (rows >= 0) & (rows < shp[:, 0:1])
    cin = (cols >= 0) & (cols < shp[:, 1:2])
    rows = torch.minimum(rows.clamp(min=0), shp[:, 0:1] - 1)
    cols = torch.minimum(cols.clamp(min=0), shp[:, 1:2] - 1)
    ii, rr, cc = it[:, None, None], rows[:, :, None], cols[:, None, :]
    inside = rin[:, :, None] & cin[:, None, :]
    img = data.images[ii, rr, cc]
    lbl = torch.where(inside, data.labels[ii, rr, cc], torch.full_like(inside, IGNORE, dtype=torch.uint8))
    tr = (data.trusted[ii, rr, cc] & inside) if data.trusted is not None else None
    return img, lbl, tr


def _gather_numpy(samples: Sequence[tuple], idx: Sequence[int], starts: np.ndarray, p: int, device):
    """Same as :func:`_gather_preloaded`, from numpy samples (streaming); the patches then go to the device."""
    b = len(idx)
    img = np.empty((b, p, p, 3), np.uint8)
    lbl = np.empty((b, p, p), np.uint8)
    has_tr = any(len(samples[i]) > 2 and samples[i][2] is not None for i in idx)
    tr = np.zeros((b, p, p), bool) if has_tr else None
    ar = np.arange(p)
    for k, i in enumerate(idx):
        s = samples[i]
        h, w = s[1].shape
        r0, c0 = int(starts[k, 0]), int(starts[k, 1])
        st = s[2] if has_tr and len(s) > 2 and s[2] is not None else None
        if r0 >= 0 and c0 >= 0 and r0 + p <= h and c0 + p <= w:  # inside: plain slices
            win = np.s_[r0 : r0 + p, c0 : c0 + p]
            img[k], lbl[k] = s[0][win], s[1][win]
            if st is not None:
                tr[k] = st[win]
            continue
        rows, cols = r0 + ar, c0 + ar
        rin, cin = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
        rc, cc = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
        img[k] = s[0][np.ix_(rc, cc)]
        inside = rin[:, None] & cin[None, :]
        lbl[k] = np.where(inside, s[1][np.ix_(rc, cc)], IGNORE)
        if st is not None:
            tr[k] = st[np.ix_(rc, cc)] & inside
    return to_device(img, device), to_device(lbl, device), (to_device(tr, device) if tr is not None else None)


def _sampling_grid(params: AugParams, starts: np.ndarray, size: int, p: int, device) -> torch.Tensor:
    """B×size×size×2 grid (x, y) in the patches' normalised coordinates (``align_corners=False``)."""
    mats = np.stack([D4[k] for k in params.d4]).astype(np.float64) / params.scales[:, None, None]  # B×2×2: M / s
    # Normalised patch coordinate = (centre − start + M·p / s) · 2/P − 1, as one affine map of the offsets p.
    coef = to_device(mats * (2.0 / p), device, torch.float32)
    shift = to_device((params.centres - starts)[:, ::-1] * (2.0 / p) - 1.0, device, torch.float32)
    off = torch.arange(size, dtype=torch.float32, device=device) + (0.5 - size / 2)
    ox, oy = off.view(1, 1, size), off.view(1, size, 1)
    gx = coef[:, 0, 0, None, None] * ox + coef[:, 0, 1, None, None] * oy + shift[:, 0, None, None]
    gy = coef[:, 1, 0, None, None] * ox + coef[:, 1, 1, None, None] * oy + shift[:, 1, None, None]
    return torch.stack([gx, gy], -1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """B×1×H×W luma of a B×3×H×W batch."""
    return (x[:, 0:1] * _GRAY[0]).add_(x[:, 1:2], alpha=_GRAY[1]).add_(x[:, 2:3], alpha=_GRAY[2])


def color_jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation factors (B×3) on a B×3×H×W batch in [0, 1], clamping after each
    (torchvision's order and formulas; contrast blends with the per-image mean luma). Works in place on ``x``."""
    bright, contrast, sat = (factors[:, k].view(-1, 1, 1, 1).to(x) for k in range(3))
    x.mul_(bright).clamp_(0, 1)
    mean = _gray(x).mean((2, 3), keepdim=True)
    x.sub_(mean).mul_(contrast).add_(mean).clamp_(0, 1)
    gray = _gray(x)
    return x.sub_(gray).mul_(sat).add_(gray).clamp_(0, 1)


def normalize(x: torch.Tensor, norm: dict) -> torch.Tensor:
    """``(x − mean) / std`` per channel of a B×3×H×W batch in [0, 1]."""
    m = to_device(norm["mean"], x.device, x.dtype).view(1, -1, 1, 1)
    s = to_device(norm["std"], x.device, x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def warp_batch(img: torch.Tensor, lbl: torch.Tensor, trusted: torch.Tensor | None, grid: torch.Tensor):
    """Sample B×P×P×3 uint8 image / B×P×P uint8 label / bool trusted patches at a B×S×S×2 grid.

    Returns a float B×3×S×S image in [0, 1] (bilinear), long B×S×S labels and bool trusted (nearest)."""
    x = img.permute(0, 3, 1, 2).float().div_(255)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp_(0, 1)
    # Nearest for label (+1 so that the zero padding of grid_sample reads as 0 -> ignore) and trusted together.
    chans = [lbl.float() + 1]
    if trusted is not None:
        chans.append(trusted.float())
    lt = F.grid_sample(torch.stack(chans, 1), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    y = lt[:, 0].round_().long() - 1
    y.masked_fill_(y < 0, IGNORE)  # not y[y < 0] = …: a boolean-index write waits for the device (once per step)
    tr = lt[:, 1] > 0.5 if trusted is not None else None
    return x, y, tr


def make_device_batch(samples: Sequence[tuple], idx: Sequence[int], sampler: CropSampler, rng: Rng, norm: dict,
                      device: str | torch.device, preloaded: Preloaded | None = None, scale=(0.75, 1.25),
                      d4: bool = True, jitter: float = 0.2, return_trusted: bool = False):
    """A normalised training batch of ``sampler.size`` crops, built on ``device``.

    ``samples`` are the host ``(img, lbl)`` / ``(img, lbl, trusted)`` numpy samples (the sampler reads their
    labels); pixels come from ``preloaded`` when given (see :func:`preload`), else from ``samples``.
    Returns ``(x, y)``: float B×3×S×S and long B×S×S on ``device``, or ``(x, y, trusted)`` (bool B×S×S, all False
    where a sample has no trusted mask) with ``return_trusted``.
    """
    if not len(idx):
        raise ValueError("make_device_batch needs at least one sample index")
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi:
        raise ValueError(f"scale range must satisfy 0 < low <= high (got {scale})")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1) (got {jitter})")
    device = torch.device(device)
    size = sampler.size
    params = draw_params([samples[i][1] for i in idx], sampler, rng, (lo, hi), d4, jitter)
    p = _patch_extent(size, lo)
    starts = np.floor(params.centres - p / 2).astype(np.int64)  # B×2 top-left of each source patch
    if preloaded is not None:
        img, lbl, tr = _gather_preloaded(preloaded, idx, to_device(starts, preloaded.device), p)
        img, lbl = img.to(device), lbl.to(device)
        tr = tr.to(device) if tr is not None else None
    else:
        img, lbl, tr = _gather_numpy(samples, idx, starts, p, device)
    grid = _sampling_grid(params, starts, size, p, device)
    x, y, t = warp_batch(img, lbl, tr if return_trusted else None, grid)
    if jitter > 0:
        x = color_jitter(x, to_device(params.jitter, device, torch.float32))
    x = normalize(x, norm)
    if return_trusted:
        if t is None:
            t = torch.zeros(y.shape, dtype=torch.bool, device=device)
        return x, y, t
    return x, y


__all__ = ["D4", "AugParams", "Preloaded", "color_jitter", "default_budget", "draw_params", "make_device_batch",
           "normalize", "preload", "preload_bytes", "warp_batch"]
