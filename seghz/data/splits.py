"""Splits: the study's greedy max class-entropy validation set, and stable hash splits."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from seghz.metrics import class_frequencies


def class_distribution(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Normalised class histogram of one mask: :func:`seghz.metrics.class_frequencies` (255 is ignore and out of
    the denominator; any other value outside ``0..num_classes-1`` is a ValueError naming it); zeros when fully
    ignored."""
    return class_frequencies(mask, num_classes)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def greedy_max_entropy(dists: np.ndarray, k: int, *, given: Sequence[int] = (),
                       allowed: Sequence[int] | None = None) -> list[int]:
    """Pick ``k`` items greedily so the *mean* of their class distributions has maximal entropy.

    Each image weighs the same (the study's ``greedy_entropy``); ties go to the later index. ``given``: items
    already in the set (they count in the mean and are not picked again; the result holds only the new picks).
    ``allowed``: the items that may be picked (default all).
    """
    dists = np.asarray(dists, np.float64)
    n = len(dists)
    used = np.zeros(n, bool)
    if allowed is not None:
        used[:] = True
        used[list(allowed)] = False
    total = np.zeros(dists.shape[1])
    for j in given:
        used[j] = True
        total += dists[j]
    k = min(k, int((~used).sum()))
    chosen: list[int] = []
    for _ in range(k):
        cand = total[None] + dists
        s = cand.sum(1, keepdims=True)
        p = np.divide(cand, s, out=np.zeros_like(cand), where=s > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
        h[used] = -np.inf
        j = int(n - 1 - np.argmax(h[::-1]))  # ties -> later index
        chosen.append(j)
        used[j] = True
        total += dists[j]
    return chosen


def hash_fraction(key: str, salt: str = "seghz") -> float:
    """Stable pseudo-random number in [0, 1) from a string (for reproducible hold-out splits)."""
    return int(hashlib.sha1(f"{salt}:{key}".encode()).hexdigest()[:8], 16) / 2**32


def content_key(image) -> str:
    """SHA-1 of an image's content: the bytes of a file (a path), or an array's shape, dtype and bytes. Two tiles with
    the same key are the same picture under two names (GID-15 has four such pairs)."""
    h = hashlib.sha1()
    if isinstance(image, np.ndarray):
        h.update(f"{image.shape}{image.dtype}".encode())
        h.update(np.ascontiguousarray(image).tobytes())
    else:
        with open(os.fspath(image), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def copies_across(keys: Mapping[str, str], held: Iterable[str]) -> dict[str, str]:
    """``{stem in held: a stem outside held with the same content key}``: held-out images that are copies of images
    outside the hold-out (a model trained there has seen them). ``keys`` maps every stem to its :func:`content_key`."""
    held = set(held)
    outside: dict[str, str] = {}
    for stem in sorted(keys):
        if stem not in held:
            outside.setdefault(keys[stem], stem)
    return {s: outside[keys[s]] for s in sorted(held) if s in keys and keys[s] in outside}
