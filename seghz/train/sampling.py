"""Crop windows for training: plain random crops and the study's building-aware sampler.

The study (SegHZ ``datasets/transforms.py:RandomBuildingFGCrop``) picks, for each training image, a crop window
whose foreground fraction for a class set (the building classes) is at least ``fg_thre`` (0.1), uniformly among
such windows on a stride grid, and otherwise the window with the highest fraction ("top[0]"). Its README (§1.2)
reports this "v1" variant as the best sampling for the few-shot building classes.

Here the fractions of all windows on the grid come from an integral image (summed-area table) of the foreground
mask, in O(H·W) per label; the per-label grid is cached (labels are assumed not to be edited in place during
training; call :meth:`CropSampler.clear_cache` otherwise).

Labels smaller than the crop are padded at the bottom/right, as :func:`seghz.train.trainer._random_crop` does:
label with ignore (255), image by reflection, trusted mask with False. Padded pixels never count as foreground.

Randomness comes from the caller's ``random.Random`` or ``numpy.random.Generator``: a given seed gives the same
windows.
"""
from __future__ import annotations

import random
import weakref
from collections.abc import Iterable, Sequence

import numpy as np

from seghz.classes import IGNORE, get_scheme

MODES = ("random", "class_aware")

# The study's foreground sets, as file ids of the scheme (RandomBuildingFGCrop): hz20 ids 9-18 (High_Buildings1-7,
# Paralle_Regular, Irregular_Large, Irregular), merged 11-class ids 7-10 (Reflection_Glass_Curtainwall and the three
# building classes).
SEED_BUILDING_IDS = {"hz20": tuple(range(9, 19)), "hz11": (7, 8, 9, 10)}
_BUILDING_WORDS = ("build", "residential")

Rng = random.Random | np.random.Generator


def building_classes(scheme_name: str) -> tuple[int, ...]:
    """Class *indices* of the building class set of a scheme.

    hz20 and hz11 use the study's sets (:data:`SEED_BUILDING_IDS`); other schemes take the classes whose name
    contains "build" or "residential" (hz14: the four building classes; hz7: Buildings; GID-15: urban and rural
    residential; LoveDA / Dubai: building).
    """
    scheme = get_scheme(scheme_name)
    if scheme.name in SEED_BUILDING_IDS:
        lut = scheme.lut
        return tuple(sorted(int(lut[i]) for i in SEED_BUILDING_IDS[scheme.name]))
    return tuple(i for i, n in enumerate(scheme.names) if any(w in n.lower() for w in _BUILDING_WORDS))


def randbelow(rng: Rng, n: int) -> int:
    """A uniform integer in [0, n) from a ``random.Random`` or a ``numpy.random.Generator``."""
    if n <= 0:
        raise ValueError("randbelow needs n >= 1")
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(n))
    return rng.randrange(n)


def uniform(rng: Rng, a: float, b: float) -> float:
    """A uniform float in [a, b] from a ``random.Random`` or a ``numpy.random.Generator``."""
    if isinstance(rng, np.random.Generator):
        return float(rng.uniform(a, b))
    return rng.uniform(a, b)


def integral_image(mask: np.ndarray) -> np.ndarray:
    """Summed-area table of a 2-D mask: ``S[i, j] = mask[:i, :j].sum()``, shape (H+1, W+1).

    int32 when the total fits, else int64.
    """
    h, w = mask.shape
    dtype = np.int32 if h * w < 2**31 else np.int64
    sat = np.zeros((h + 1, w + 1), dtype)
    np.cumsum(mask, axis=0, dtype=dtype, out=sat[1:, 1:])
    np.cumsum(sat[1:, 1:], axis=1, out=sat[1:, 1:])
    return sat


def grid_positions(extent: int, size: int, stride: int) -> np.ndarray:
    """Window starts 0, stride, 2·stride, ... plus the last start ``extent - size`` (so the grid reaches the edge)."""
    last = extent - size
    if last < 0:
        raise ValueError(f"extent {extent} < window {size}")
    pos = np.arange(0, last + 1, stride, dtype=np.int64)
    if pos[-1] != last:
        pos = np.append(pos, last)
    return pos


def window_fractions(mask: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Foreground fraction of every ``size``×``size`` window of a bool mask on a stride grid.

    Returns ``(fractions, rows, cols)`` with ``fractions[a, b]`` the fraction of the window at
    ``(rows[a], cols[b])``. The mask must be at least ``size`` on both sides (pad it first).
    """
    h, w = mask.shape
    rows, cols = grid_positions(h, size, stride), grid_positions(w, size, stride)
    sat = integral_image(mask)
    r0, c0 = rows[:, None], cols[None, :]
    sums = sat[r0 + size, c0 + size] - sat[r0, c0 + size] - sat[r0 + size, c0] + sat[r0, c0]
    return sums / float(size * size), rows, cols


def pad_to(img: np.ndarray | None, lbl: np.ndarray, size: int, trusted: np.ndarray | None = None):
    """Pad at the bottom/right up to ``size`` on each side, as the trainer does: image by reflection, label with
    ignore (255), trusted mask with False. Arrays already large enough are returned as they are."""
    h, w = lbl.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if not (ph or pw):
        return img, lbl, trusted
    if img is not None:
        img = np.pad(img, ((0, ph), (0, pw)) + ((0, 0),) * (img.ndim - 2), mode="reflect" if min(h, w) > 1 else "edge")
    lbl = np.pad(lbl, ((0, ph), (0, pw)), constant_values=IGNORE)
    if trusted is not None:
        trusted = np.pad(trusted, ((0, ph), (0, pw)), constant_values=False)
    return img, lbl, trusted


class CropSampler:
    """Chooses ``size``×``size`` crop windows in label rasters.

    - ``mode="random"``: uniform over all positions (the trainer's plain random crop).
    - ``mode="class_aware"``: the study's building-aware sampler. Candidate windows lie on a grid with step
      ``stride`` (default ``size // 4``; the study used ``size // 2``, i.e. overlap 0.5) plus the last position on
      each axis; a window's fraction is the share of its ``size²`` pixels whose class is in ``classes`` (ignore and
      padding count as background). Uniform among windows with fraction ≥ ``min_fraction``; if there are none,
      the window with the highest fraction (the first in row-major order on ties).

    :meth:`window` returns the top-left ``(row, col)`` in the label padded to at least ``size`` (see :func:`pad_to`).
    """

    def __init__(self, size: int, mode: str = "random", classes: Iterable[int] = (), min_fraction: float = 0.1,
                 stride: int | None = None, cache: bool = True):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} (got '{mode}')")
        if int(size) != size or size < 1:
            raise ValueError(f"crop size must be a positive integer (got {size})")
        self.size = int(size)
        self.mode = mode
        self.classes = tuple(sorted({int(c) for c in classes}))
        if any(not 0 <= c <= 255 for c in self.classes):
            raise ValueError(f"class indices must be in 0..255 (got {self.classes})")
        if mode == "class_aware" and not self.classes:
            raise ValueError("class_aware sampling needs a non-empty class set")
        if not 0.0 <= min_fraction <= 1.0:
            raise ValueError(f"min_fraction must be in [0, 1] (got {min_fraction})")
        self.min_fraction = float(min_fraction)
        self.stride = int(stride) if stride is not None else max(1, self.size // 4)
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1 (got {stride})")
        self.use_cache = cache
        self._cache: dict[int, tuple[weakref.ref, tuple, tuple]] = {}
        self._lut = np.zeros(256, bool)
        self._lut[list(self.classes)] = True

    def __repr__(self) -> str:
        extra = (f", classes={self.classes}, min_fraction={self.min_fraction}, stride={self.stride}"
                 if self.mode == "class_aware" else "")
        return f"CropSampler(size={self.size}, mode='{self.mode}'{extra})"

    def clear_cache(self) -> None:
        self._cache.clear()

    def padded_shape(self, shape: Sequence[int]) -> tuple[int, int]:
        return max(int(shape[0]), self.size), max(int(shape[1]), self.size)

    def foreground(self, label: np.ndarray) -> np.ndarray:
        """Bool mask of the class set, padded (False) to at least ``size`` on each side."""
        fg = self._lut[label]
        h, w = fg.shape
        ph, pw = self.padded_shape(fg.shape)
        if (ph, pw) != (h, w):
            fg = np.pad(fg, ((0, ph - h), (0, pw - w)), constant_values=False)
        return fg

    def candidates(self, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """``(rows, cols, fractions, met)`` of the class-aware choice for a label.

        ``rows``/``cols`` (equal length) are the windows to choose from uniformly: those meeting the threshold when
        ``met``, else the single top window. ``fractions`` are their foreground fractions.
        """
        if label.ndim != 2:
            raise ValueError(f"label must be H×W (got shape {label.shape})")
        key = (label.shape, label.__array_interface__["data"][0], label.strides)
        hit = self._cache.get(id(label)) if self.use_cache else None
        if hit is not None and hit[0]() is label and hit[1] == key:
            return hit[2]
        frac, rows, cols = window_fractions(self.foreground(label), self.size, self.stride)
        ok = np.nonzero(frac >= self.min_fraction)
        if ok[0].size:
            out = (rows[ok[0]], cols[ok[1]], frac[ok], True)
        else:
            a, b = np.unravel_index(int(np.argmax(frac)), frac.shape)
            out = (rows[[a]], cols[[b]], frac[[a], [b]], False)
        if self.use_cache:
            try:
                ref = weakref.ref(label)
            except TypeError:  # pragma: no cover - ndarray supports weak references
                return out
            self._cache[id(label)] = (ref, key, out)
        return out

    def window(self, label: np.ndarray, rng: Rng) -> tuple[int, int]:
        """Top-left ``(row, col)`` of a ``size``×``size`` window in the label padded to at least ``size``."""
        if self.mode == "random":
            ph, pw = self.padded_shape(label.shape)
            return randbelow(rng, ph - self.size + 1), randbelow(rng, pw - self.size + 1)
        rows, cols, _, _ = self.candidates(label)
        k = randbelow(rng, len(rows)) if len(rows) > 1 else 0
        return int(rows[k]), int(cols[k])

    def crop(self, img: np.ndarray, lbl: np.ndarray, rng: Rng, trusted: np.ndarray | None = None):
        """``(img, lbl, trusted)`` crops (views) of one sample; ``trusted`` is all False when not given."""
        if trusted is None:
            trusted = np.zeros(lbl.shape, bool)
        r, c = self.window(lbl, rng)
        img, lbl, trusted = pad_to(img, lbl, self.size, trusted)
        win = np.s_[r : r + self.size, c : c + self.size]
        return img[win], lbl[win], trusted[win]


__all__ = ["MODES", "SEED_BUILDING_IDS", "CropSampler", "building_classes", "grid_positions", "integral_image",
           "pad_to", "randbelow", "uniform", "window_fractions"]
