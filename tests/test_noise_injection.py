"""bench.noise_bench.inject_noise (the label noise every noise benchmark and docs/remeasure.md use) works on one
component map and box per component instead of a full-size mask each (which ran 24 GB out of memory on Dubai's
2000-px images). Its result must be what the full-mask definition gives: the same components flipped to the same
classes and the same ones dilated by the same radii, for any labels, fractions and seed."""
from __future__ import annotations

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.noise_bench import inject_noise

IGNORE = 255


def _full_mask_definition(labels, rng, classes, flip_fraction, shift_fraction, shift_px=(2, 4)):
    """The definition, one full-size mask per component (the memory-hungry way)."""
    comps = []
    for t, label in enumerate(labels):
        for c in np.unique(label[label != IGNORE]):
            n, lab = cv2.connectedComponents((label == c).astype(np.uint8), connectivity=8)
            comps += [(t, int(c), lab == j) for j in range(1, n)]
    noisy = [lb.copy() for lb in labels]
    if not comps:
        return noisy
    order = rng.permutation(len(comps))
    nflip = round(flip_fraction * len(comps))
    flips, rest = order[:nflip], order[nflip:]
    for i in flips:
        t, c, m = comps[i]
        others = [k for k in classes if k != c]
        if others:
            noisy[t][m] = rng.choice(others)
    for i in rest[: round(shift_fraction * len(rest))]:
        t, c, m = comps[i]
        r = int(rng.integers(shift_px[0], shift_px[1] + 1))
        ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        noisy[t][cv2.dilate(m.astype(np.uint8), ker).astype(bool) & ~m & (labels[t] != IGNORE)] = c
    return noisy


def _labels(seed: int, n: int, size: tuple[int, int], k: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        # blocky classes (components of many sizes, touching the borders) with some ignore
        h, w = size
        coarse = rng.integers(0, k + 1, (max(1, h // 6), max(1, w // 6)))
        lab = cv2.resize(coarse.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        lab[lab == k] = IGNORE
        lab[rng.random((h, w)) < 0.02] = rng.integers(0, k)  # speckle: one-pixel components
        out.append(lab.astype(np.uint8))
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 3), h=st.integers(5, 60), w=st.integers(5, 60),
       k=st.integers(1, 5), flip=st.sampled_from([0.0, 0.3, 1.0]), shift=st.sampled_from([0.0, 0.5, 1.0]))
def test_inject_noise_is_the_full_mask_definition(seed, n, h, w, k, flip, shift):
    labels = _labels(seed, n, (h, w), k)
    classes = list(range(k))
    got = inject_noise([lb.copy() for lb in labels], np.random.default_rng(seed), classes, flip, shift)
    want = _full_mask_definition(labels, np.random.default_rng(seed), classes, flip, shift)
    for g, wnt in zip(got, want):
        np.testing.assert_array_equal(g, wnt)
    for g, lb in zip(got, labels):
        assert ((g == IGNORE) == (lb == IGNORE)).all()  # ignore stays ignore, nothing becomes ignore
