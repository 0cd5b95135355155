"""Held-out ("cross-fitted") scoring for the noise queue.

A model trained on noisy labels learns part of the noise: a flipped region is then *predicted* as its wrong class,
its loss is low, and the queue misses it. Confident learning avoids this with out-of-sample probabilities
(cleanlab computes them by cross-validation). A full retrain per fold is too slow for an analyst, but the classifier
head can be refitted in seconds (:func:`seghz.train.refit.refit_head`, backbone frozen): for each fold of images, the
head is refitted on the labels of the *other* folds only, and that head scores the fold. The labels being judged
then never shaped the classifier that judges them.

Measured (``bench/noise_loop_bench.py``, docs/benchmarks.md "Loop check"): with a head that absorbed 30 % label
noise, in-sample scoring put 15 % of the injected noise in the top 25 queue items; 2-fold held-out heads put 93 %
there. With a model trained on clean labels (``bench/noise_bench.py``) the plain model is better: a head refitted on
noisy labels is itself noisier. Held-out scoring is for a model trained on the labels it judges.

Limits: only the head is held out; a backbone trained on the same noisy labels keeps what it memorised.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from seghz.classes import IGNORE


def fold_assignment(n: int, k: int, seed: int = 0) -> list[list[int]]:
    """Split ``range(n)`` into ``k`` folds of near-equal size (shuffled with ``seed``; each index in exactly one).

    Raises:
        ValueError: When ``k`` < 2 or ``n`` < ``k`` (every fold needs at least one image and something to fit on).
    """
    if k < 2:
        raise ValueError(f"held-out scoring needs at least 2 folds, got {k}")
    if n < k:
        raise ValueError(f"{n} image(s) cannot be split into {k} folds: give more labelled images or fewer folds")
    order = np.random.default_rng(seed).permutation(n)
    return [sorted(int(i) for i in order[f::k]) for f in range(k)]


def held_out_head(
    checkpoint: str | Path,
    items: Sequence[tuple[np.ndarray, np.ndarray]],
    out_path: str | Path,
    *,
    max_images: int = 16,
    max_pixels: int = 40_000,
    steps: int = 50,
    tile: int = 512,
    seed: int = 0,
    device: str | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> Path:
    """Refit ``checkpoint``'s head on the labels of ``items`` (``(image, label)`` pairs NOT being scored).

    Every labelled pixel is a fit target (class-balanced subsample of ``max_pixels``); at most ``max_images`` of the
    items are used (a seeded random subset), so the cost stays at seconds to a minute on a CPU.

    Returns:
        ``out_path``, a checkpoint in the project's format (lineage: parent = ``checkpoint``).

    Raises:
        ValueError: When the items hold no labelled pixel.
    """
    from seghz.train.refit import RefitConfig, RefitItem, refit_head

    pairs = [(img, lbl) for img, lbl in items if lbl is not None and (np.asarray(lbl) != IGNORE).any()]
    if not pairs:
        raise ValueError("no labelled pixels outside the images being scored: held-out scoring needs other labelled "
                         "images")
    if len(pairs) > max_images:
        pick = np.random.default_rng(seed).choice(len(pairs), max_images, replace=False)
        pairs = [pairs[int(i)] for i in sorted(pick)]
    cfg = RefitConfig(steps=steps, max_corrected=max_pixels, context_per_class=0, max_windows=4 * len(pairs),
                      tile=tile, seed=seed, device=device)
    refit_head(checkpoint, [RefitItem(img, corrected=np.asarray(lbl, np.uint8)) for img, lbl in pairs], out_path, cfg,
               progress=progress, meta_extra={"held_out_head": True, "fit_images": len(pairs)})
    return Path(out_path)


__all__ = ["fold_assignment", "held_out_head"]
