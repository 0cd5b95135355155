"""Cross-fitted label cleaning before training (issue 4's noise-robust recipe, ``TrainConfig.clean = "crossfit"``).

A model trained on noisy labels memorises them: asked about its own training images it agrees with the noise (the
label review found the same: in-sample scores caught 12 % of the injected noise, held-out scores 86 %). So the
training set is split into ``folds`` folds (a seeded shuffle of the images); for each fold a model is trained on the
*other* folds with the run's own recipe, and it judges the fold it never saw. Its flip-averaged probabilities go
through the same region rule as the in-training refinement (:func:`seghz.train.refine.refine_labels`): a connected
piece of a given label component that the held-out model calls another class with mean probability ≥ ``conf`` while
the given class has < ``keep`` is relabelled; a piece whose given class is that unlikely (< ``keep``) but with no
confident alternative becomes ignore (255) when ``doubt`` is on; then the pixel rule. Trusted pixels (analyst
corrections) and 255 never change. The final model trains on the cleaned labels.

Budget: the fold models share ``share`` of the run's optimiser steps (each ``share / folds`` of them), the final model
gets the rest, so a cleaned run costs the same number of steps as a plain one (plus one prediction pass over the
training images).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from seghz.classes import IGNORE
from seghz.train.refine import RefineParams, iter_probs, refine_labels, region_pieces

CLEANS = ("none", "crossfit")


def fold_of(n: int, folds: int, seed: int) -> list[int]:
    """Fold index of each of ``n`` images: a seeded shuffle dealt round-robin (fold sizes differ by at most one)."""
    if folds < 2:
        raise ValueError(f"cross-fitted cleaning needs at least 2 folds, got {folds}")
    if n < folds:
        raise ValueError(f"cross-fitted cleaning with {folds} folds needs at least {folds} training images, got {n}")
    order = list(range(n))
    random.Random(f"crossfit/{seed}").shuffle(order)
    out = [0] * n
    for k, i in enumerate(order):
        out[i] = k % folds
    return out


def doubt_ignore(given: np.ndarray, cleaned: np.ndarray, probs: np.ndarray, trusted: np.ndarray | None,
                 params: RefineParams) -> np.ndarray:
    """``cleaned`` with the doubtful regions set to ignore: connected pieces (≥ ``min_px``) of ``{given == g} ∩
    {argmax == c}`` (c ≠ g), left unchanged by the relabel rule, whose mean probability of g is < ``keep``."""
    nc = probs.shape[0]
    free = (given != IGNORE) & (cleaned == given)
    if trusted is not None:
        free &= ~np.asarray(trusted, bool)
    pred = probs.argmax(0).astype(np.uint8)
    cand = free & (pred != given)
    out = cleaned.copy()
    for g, _c, mask, ids, size in region_pieces(given, pred, cand, nc):
        pg = np.bincount(ids, weights=probs[g][mask], minlength=len(size)) / size
        bad = (size >= params.min_px) & (pg < params.keep)
        bad[0] = False
        if bad.any():
            sel = np.zeros(given.shape, bool)
            sel[mask] = bad[ids]
            out[sel] = IGNORE
    return out


def total_steps(cfg, samples: Sequence[tuple], world: int = 1) -> int:
    """The run's optimiser steps, as the trainer counts them (``steps_per_epoch`` or one pass over the pixels)."""
    pixels = sum(s[1].size for s in samples)
    spe = cfg.steps_per_epoch or max(1, math.ceil(pixels / (cfg.crop_size ** 2) / (cfg.batch_size * world)))
    return int(spe) * int(cfg.epochs)


def crossfit_clean(cfg, samples: Sequence[tuple], *, device: str, world: int = 1,
                   progress: Callable[[float, str], None] | None = None, workdir: str | Path | None = None,
                   should_cancel: Callable[[], bool] | None = None) -> tuple[list[tuple], dict]:
    """Cleaned copies of ``samples`` (``(image, label[, trusted])``, same order) and the cleaning's statistics.

    ``cfg`` is the run's :class:`~seghz.train.trainer.TrainConfig` (``clean_folds``, ``clean_share``, ``clean_conf``,
    ``clean_keep``, ``clean_doubt``; the fold models use its recipe with cleaning and refinement off). The fold
    checkpoints go to ``workdir`` (left there for the caller to remove; under torchrun it must be a folder every rank
    sees) or, without one, to a temporary folder. Runs under
    torchrun too: every rank trains the fold models together (the trainer shards their batches) and scores the
    folds; the trainer then hands rank 0's cleaned labels to every rank."""
    from seghz.models.checkpoint import load_checkpoint
    from seghz.train.trainer import train

    say = progress or (lambda f, m: None)
    folds = int(cfg.clean_folds)
    fold = fold_of(len(samples), folds, int(cfg.seed))
    steps = total_steps(cfg, samples, world)
    fold_steps = max(cfg.epochs, round(steps * float(cfg.clean_share) / folds))
    params = RefineParams(min_px=int(cfg.refine_min_px), conf=float(cfg.clean_conf), keep=float(cfg.clean_keep),
                          ignore_conf=cfg.refine_ignore_conf)
    fold_cfg = dataclasses.replace(cfg, clean="none", refine="none", resume=False, patience=None,
                                   steps_per_epoch=max(1, -(-fold_steps // cfg.epochs)), extra=dict(cfg.extra))
    cleaned: list[tuple | None] = [None] * len(samples)
    tot = {"labelled": 0, "relabelled": 0, "ignored": 0, "doubtful": 0, "regions": 0}
    per_fold = []
    with (tempfile.TemporaryDirectory() if workdir is None else contextlib.nullcontext(str(workdir))) as d:
        Path(d).mkdir(parents=True, exist_ok=True)
        for k in range(folds):
            train_idx = [i for i in range(len(samples)) if fold[i] != k]
            held = [i for i in range(len(samples)) if fold[i] == k]
            base = k / folds

            def sub(f, m, base=base, k=k):
                say(base + f / folds * 0.9, f"cleaning: fold model {k + 1}/{folds}: {m}")

            out = Path(d) / f"fold{k}.safetensors"
            train(dataclasses.replace(fold_cfg, seed=int(cfg.seed) * 100 + k), [samples[i] for i in train_idx], [], out,
                  progress=sub, should_cancel=should_cancel)  # a cancel stops a fold model too (TrainCancelled)
            model, meta = load_checkpoint(out, device)
            norm = meta.get("normalization") or {"mean": (0.5,) * 3, "std": (0.5,) * 3}
            say(base + 0.9 / folds, f"cleaning: fold {k + 1}/{folds}: judging {len(held)} held-out images")
            fk = {"relabelled": 0, "ignored": 0, "doubtful": 0, "labelled": 0}
            for j, probs in iter_probs(model, [samples[i][0] for i in held], norm, device, flip=True,
                                       amp=bool(cfg.amp)):  # fp32 under an fp32 (amp=False) recipe
                s = samples[held[j]]
                tr = s[2] if len(s) > 2 else None
                lab, st = refine_labels(s[1], probs, tr, params)
                if cfg.clean_doubt:
                    before = lab
                    lab = doubt_ignore(np.asarray(s[1]), lab, probs, tr, params)
                    st["doubtful"] = int(((lab == IGNORE) & (before != IGNORE)).sum())
                else:
                    st["doubtful"] = 0
                cleaned[held[j]] = (s[0], lab, *s[2:])
                for key in fk:
                    fk[key] += st[key]
                for key in tot:
                    tot[key] += st[key]
            per_fold.append({"fold": k, "images": len(held), "train_images": len(train_idx), **fk})
            del model
    den = max(1, tot["labelled"])
    stats = {"clean_relabelled_px": tot["relabelled"] / den, "clean_ignored_px": (tot["ignored"] + tot["doubtful"]) / den,
             "clean_fold_steps": fold_steps * folds, "clean_folds": per_fold, **{f"clean_{k}": v for k, v in tot.items()}}
    say(1.0, f"cleaning: {stats['clean_relabelled_px'] * 100:.1f} % of the labelled pixels relabelled, "
             f"{stats['clean_ignored_px'] * 100:.1f} % ignored")
    return cleaned, stats  # type: ignore[return-value]


__all__ = ["CLEANS", "crossfit_clean", "doubt_ignore", "fold_of", "total_steps"]
