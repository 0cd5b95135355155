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

One head per fold, not per scene
================================
A build of many queues (``python -m seghz review build``, the Labels page's "queues" job) used to refit one head per
scene, each on 8 other scenes drawn with the same seed: 477 near-identical refits of ~16 s each for the GID training
split. :func:`fold_fit_sets` splits the candidate scenes into :data:`DEFAULT_FOLDS` folds and gives each fold ONE fit
set, a capped sample of the scenes OUTSIDE it; a scene is scored by its own fold's head, so it never judges labels it
was fitted on. :data:`HEAD_CACHE` keeps each fitted head (only the tensors the refit changed, :func:`head_delta`) for
the process's later scenes and builds, keyed by what the head depends on (see ``seghz.review.queue``). A build
keeps ONE model of the checkpoint and swaps each fold's delta into it (:class:`HeadSwap`) rather than loading the
checkpoint again for every scene it scores.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

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


DEFAULT_FOLDS = 5  # folds of a held-out build: at most this many head refits, however many scenes are scored


def fold_fit_sets(ids: Sequence[str], k: int = DEFAULT_FOLDS, max_fit: int = 8,
                  seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """``[(members, fit), ...]``, one per fold: the candidate scene ``ids`` split into ``min(k, len(ids))`` folds
    (:func:`fold_assignment` over the ids sorted, so the order they are given in does not matter) and, for each fold,
    the ids its head is fitted on: all the ids OUTSIDE the fold, or a seeded sample of ``max_fit`` of them, sorted.
    A fold's fit set never holds one of its members. With ``len(ids) <= k`` every fold is one scene: leave-one-out.

    Raises:
        ValueError: With fewer than 2 distinct ids (nothing to fit on outside a fold) or ``k`` < 2.
    """
    order = sorted(set(ids))
    if len(order) < 2:
        raise ValueError(f"fold cross-fitting needs at least 2 scenes, got {len(order)}")
    if k < 2:
        raise ValueError(f"held-out scoring needs at least 2 folds, got {k}")
    out = []
    for f, members in enumerate(fold_assignment(len(order), min(k, len(order)), seed)):
        inside = set(members)
        outside = [i for i in range(len(order)) if i not in inside]
        if len(outside) > max_fit:
            outside = sorted(int(i) for i in np.random.default_rng([seed, f]).choice(outside, max_fit, replace=False))
        out.append(([order[i] for i in members], [order[i] for i in outside]))
    return out


def head_delta(base: str | Path, refitted: str | Path) -> dict[str, Any]:
    """The tensors of checkpoint ``refitted`` that differ from ``base`` (for a head refit: the classifier's weight and
    bias, a few KB), to keep in memory instead of a whole model.

    Raises:
        ValueError: When the two checkpoints do not hold the same tensor names and shapes (not a refit of ``base``).
    """
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(base), device="cpu"), load_file(str(refitted), device="cpu")
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError(f"{refitted}: not a head refit of {base} (its tensors differ in names or shapes)")
    return {k: b[k].clone() for k in sorted(b) if not torch.equal(a[k], b[k])}


def apply_delta(model: Any, delta: dict[str, Any]) -> None:
    """Copy the tensors of :func:`head_delta` into ``model`` (a model of the base checkpoint), in place."""
    import torch

    state = model.state_dict()
    unknown = sorted(set(delta) - set(state))
    if unknown:
        raise ValueError(f"the held-out head names tensors the model lacks: {unknown[:5]}")
    with torch.no_grad():
        for k, v in delta.items():
            state[k].copy_(v.to(state[k].device, state[k].dtype))


class HeadSwap:
    """Swaps fitted heads (:func:`head_delta`) in and out of ONE model of the base checkpoint, in place: a build of many
    queues keeps one model instead of loading the checkpoint again for every scene. :meth:`use` puts the base tensors
    a previous delta replaced back before it applies the next one, so the model holds exactly base + that delta (two
    folds' deltas may change different tensors); :meth:`restore` leaves the base model bit for bit."""

    def __init__(self, model: Any):
        self.model = model
        self._base: dict[str, Any] = {}  # name -> the base tensor a delta in use replaced (a copy)

    def restore(self) -> None:
        """Put the base tensors back (nothing to do when no delta is in use)."""
        import torch

        if not self._base:
            return
        state = self.model.state_dict()
        with torch.no_grad():
            for k, v in self._base.items():
                state[k].copy_(v)
        self._base.clear()

    def use(self, delta: dict[str, Any]) -> Any:
        """Make the model base + ``delta``; returns the model.

        Raises:
            ValueError: When ``delta`` names tensors the model lacks (nothing is changed then)."""
        self.restore()
        state = self.model.state_dict()
        unknown = sorted(set(delta) - set(state))
        if unknown:
            raise ValueError(f"the held-out head names tensors the model lacks: {unknown[:5]}")
        self._base = {k: state[k].detach().clone() for k in delta}
        apply_delta(self.model, delta)
        return self.model


class HeadCache:
    """A small thread-safe LRU of fitted held-out heads (or of the reason none could be fitted), in memory."""

    def __init__(self, maxsize: int = 32):
        self.maxsize = int(maxsize)
        self._d: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key not in self._d:
                return None
            self._d.move_to_end(key)
            return self._d[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._d)


HEAD_CACHE = HeadCache()  # the process's fitted fold heads (seghz.review.queue keys them)


__all__ = ["DEFAULT_FOLDS", "HEAD_CACHE", "HeadCache", "HeadSwap", "apply_delta", "fold_assignment", "fold_fit_sets",
           "head_delta", "held_out_head"]
