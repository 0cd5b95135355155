"""Per-pixel suspicion that a label is wrong, and its grouping into a ranked review queue.

Score
=====
For a pixel with (effective) label ``y``, merged class probabilities ``p`` (C values, from
:meth:`seghz.infer.engine.Predictor.predict_full`) and TTA disagreement ``d`` (fraction of views whose argmax
differs from the consensus ``m = argmax p``), three signals, each in [0, 1]:

* **loss vs the noise-mask threshold** ``s_loss = ℓ / (ℓ + τ)`` with ``ℓ = −ln p_y`` (``p_y`` floored at 1e-7)
  and ``τ`` the noise-mask threshold in nats (default ``noise_threshold(E, E) = ln 10``, the threshold the
  trainer uses at its last epoch). ``s_loss`` grows with the loss, is 0.5 exactly where the training noise
  mask starts dropping the pixel (``ℓ = τ``) and tends to 1 for ``p_y → 0``.
* **confident-learning self-confidence** (in the spirit of cleanlab's segmentation filter, written here, not
  copied): per-class thresholds ``t_c`` = mean predicted probability of class ``c`` over the pixels labelled
  ``c`` (over every image of a run, see :class:`ClassThresholds`; a class with no labelled pixel gets
  ``t_c = 0.5``). A pixel is a candidate when some other class ``k ≠ y`` has ``p_k ≥ t_k`` and ``p_k > p_y``;
  its score is the margin ``s_cl = max_k p_k − p_y`` over those ``k`` (0 for non-candidates).
* **TTA vote against the label** ``s_tta = d`` where the consensus equals the label, ``1 − d`` where it does
  not (exact where ``m = y``; a lower bound on the fraction of views voting against ``y`` otherwise). With
  one view (``--tta none``) it is the indicator ``argmax p ≠ y``.

The mix is the convex combination ``S = w_loss·s_loss + w_cl·s_cl + w_tta·s_tta`` (weights normalised to
sum 1, see :data:`DEFAULT_WEIGHTS`), so ``S ∈ [0, 1]``, higher = more likely wrong. Optionally
(``smooth_radius > 0``) it is blended with its mean over the same-label pixels of a ``(2r+1)²`` window:
``S ← (1 − a)·S + a·mean_{same label, window}(S)`` (label errors come as segments, not single pixels).
Ignored pixels (label 255) get ``−inf``; every other pixel is finite. Output is float32 H×W.

Queue
=====
:func:`group_components` thresholds the score (``S ≥ threshold``, or the top ``top_fraction`` of the valid
pixels), splits the suspicious pixels by label class and takes 8-connected components of each
(``cv2.connectedComponentsWithStats``), so every item has exactly one label class. An item's rank value is
``score = mean(S over the component) × pixels × boost``; ``boost`` is 1 unless ``rarity > 0``, then it is
``(f_max / f)^rarity`` with ``f`` the label pixel frequency of the rarer of the item's label and predicted
class (``f_max`` the most frequent class, which gets 1). ``bbox`` is ``(row0, col0, row1, col1)`` in pixels,
rows/columns ``row0 ≤ r < row1``, ``col0 ≤ c < col1`` (end-exclusive, numpy slice order).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from seghz.classes import IGNORE

LN10 = math.log(10.0)
P_FLOOR = 1e-7
ABSENT_CLASS_THRESHOLD = 0.5


@dataclass(frozen=True)
class SuspicionWeights:
    """Weights of the three signals (normalised to sum 1 when used) and the same-label smoothing (radius 0 = off).

    The defaults are :data:`DEFAULT_WEIGHTS`."""

    loss: float = 1.0
    cl: float = 0.0
    tta: float = 0.1
    smooth_radius: int = 10
    smooth_mix: float = 0.9

    def normalised(self) -> tuple[float, float, float]:
        w = np.array([self.loss, self.cl, self.tta], np.float64)
        if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
            raise ValueError(f"suspicion weights must be finite, >= 0 and not all 0, got {tuple(w)}")
        w = w / w.sum()
        return float(w[0]), float(w[1]), float(w[2])


# Tuned with ``bench/noise_bench.py --mode tune`` on 40 held-out GID-15 tiles distinct from the reported ones
# (docs/benchmarks.md): the confident-learning term never helped there (weight 0 kept it off); the TTA vote at
# 0.1 cost 0.0004 precision@k against the loss alone (below tile-sampling noise) and is kept as the one signal
# not derived from p(label); same-label smoothing (radius 10, mix 0.9) gave +0.006 precision@k.
DEFAULT_WEIGHTS = SuspicionWeights()


class ClassThresholds:
    """Running per-class confident-learning thresholds ``t_c`` = mean ``p_c`` over pixels labelled ``c``."""

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)
        self.sums = np.zeros(self.num_classes, np.float64)
        self.counts = np.zeros(self.num_classes, np.int64)

    def update(self, proba: np.ndarray, label: np.ndarray) -> ClassThresholds:
        _check(proba, label)
        for c in range(self.num_classes):
            sel = label == c
            n = int(sel.sum())
            if n:
                self.counts[c] += n
                self.sums[c] += float(proba[c][sel].sum(dtype=np.float64))
        return self

    def thresholds(self, absent: float = ABSENT_CLASS_THRESHOLD) -> np.ndarray:
        t = np.full(self.num_classes, absent, np.float64)
        ok = self.counts > 0
        t[ok] = self.sums[ok] / self.counts[ok]
        return t.astype(np.float32)

    def frequencies(self) -> np.ndarray:
        """Label pixel frequency of every class over the images seen (sums to 1; zeros before any update)."""
        tot = self.counts.sum()
        return (self.counts / tot) if tot else np.zeros(self.num_classes)


def _check(proba: np.ndarray, label: np.ndarray) -> None:
    if proba.ndim != 3:
        raise ValueError(f"proba must be C×H×W, got shape {proba.shape}")
    if label.shape != proba.shape[1:]:
        raise ValueError(f"label shape {label.shape} differs from proba spatial shape {proba.shape[1:]}")
    bad = (label != IGNORE) & (label >= proba.shape[0])
    if bad.any():
        raise ValueError(f"label holds class index {int(label[bad][0])} outside the {proba.shape[0]} model classes")


def signals(
    proba: np.ndarray,
    label: np.ndarray,
    disagreement: np.ndarray | None = None,
    *,
    thresholds: np.ndarray | None = None,
    tau: float = LN10,
) -> dict[str, np.ndarray]:
    """The three raw signals (float32 H×W, each in [0, 1]; 0 at ignored pixels) and ``valid``/``argmax``."""
    _check(proba, label)
    c = proba.shape[0]
    if tau <= 0:
        raise ValueError(f"noise threshold tau must be > 0 nats, got {tau}")
    valid = label != IGNORE
    y = np.where(valid, label, 0).astype(np.intp)
    p = proba.astype(np.float32, copy=False)
    py = np.take_along_axis(p, y[None], 0)[0]
    loss = -np.log(np.maximum(py, P_FLOOR))
    s_loss = loss / (loss + np.float32(tau))
    t = ClassThresholds(c).update(p, label).thresholds() if thresholds is None else np.asarray(thresholds, np.float32)
    if t.shape != (c,):
        raise ValueError(f"need {c} class thresholds, got shape {t.shape}")
    cand = (p >= t[:, None, None]) & (p > py[None])
    np.put_along_axis(cand, y[None], False, 0)
    best = np.where(cand, p, -np.inf).max(0)
    s_cl = np.where(np.isfinite(best), best - py, 0.0).astype(np.float32)
    m = p.argmax(0)
    if disagreement is None:
        d = np.zeros(label.shape, np.float32)
    else:
        d = np.nan_to_num(np.asarray(disagreement, np.float32), nan=0.0)
        if d.shape != label.shape:
            raise ValueError(f"disagreement shape {d.shape} differs from label shape {label.shape}")
    s_tta = np.where(m == y, d, 1.0 - d).astype(np.float32)
    z = np.float32(0)
    return {
        "loss": np.where(valid, s_loss, z).astype(np.float32),
        "cl": np.where(valid, s_cl, z),
        "tta": np.where(valid, s_tta, z),
        "nll": np.where(valid, loss, z).astype(np.float32),
        "valid": valid,
        "argmax": m.astype(np.uint8),
    }


def same_label_mean(score: np.ndarray, label: np.ndarray, radius: int) -> np.ndarray:
    """Mean of ``score`` over the pixels with the same label in the ``(2r+1)²`` window around each pixel."""
    k = 2 * int(radius) + 1
    out = np.zeros(score.shape, np.float32)
    for c in np.unique(label):
        if c == IGNORE:
            continue
        m = (label == c).astype(np.float32)
        num = cv2.boxFilter(score * m, cv2.CV_32F, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
        den = cv2.boxFilter(m, cv2.CV_32F, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
        sel = m > 0
        out[sel] = num[sel] / np.maximum(den[sel], 1.0)
    return out


def combine(sig: dict[str, np.ndarray], label: np.ndarray, weights: SuspicionWeights = DEFAULT_WEIGHTS) -> np.ndarray:
    """Mix signals from :func:`signals` into the suspicion score (float32, −inf at ignored pixels)."""
    wl, wc, wt = weights.normalised()
    s = (wl * sig["loss"] + wc * sig["cl"] + wt * sig["tta"]).astype(np.float32)
    if weights.smooth_radius > 0 and weights.smooth_mix > 0:
        a = float(weights.smooth_mix)
        if not 0 <= a <= 1:
            raise ValueError(f"smooth_mix must be in [0, 1], got {a}")
        s = ((1 - a) * s + a * same_label_mean(s, label, weights.smooth_radius)).astype(np.float32)
    return np.where(sig["valid"], s, np.float32(-np.inf)).astype(np.float32)


def suspicion_score(
    proba: np.ndarray,
    label: np.ndarray,
    disagreement: np.ndarray | None = None,
    *,
    thresholds: np.ndarray | None = None,
    tau: float = LN10,
    weights: SuspicionWeights = DEFAULT_WEIGHTS,
) -> np.ndarray:
    """Per-pixel suspicion (float32 H×W, in [0, 1], −inf exactly at label 255); see the module docstring.

    ``proba``: C×H×W class probabilities; ``label``: H×W class indices of the same scheme (255 = ignore);
    ``disagreement``: H×W TTA disagreement (None = one view); ``thresholds``: per-class ``t_c`` from
    :class:`ClassThresholds` over the whole run (None = from this image alone); ``tau``: noise-mask threshold.
    """
    label = np.asarray(label)
    return combine(signals(proba, label, disagreement, thresholds=thresholds, tau=tau), label, weights)


def rarity_boost(freq: Sequence[float] | np.ndarray, rarity: float) -> np.ndarray:
    """Per-class boost ``(f_max / f)^rarity`` (1 for the most frequent class; 1 everywhere when ``rarity == 0``).

    A class of frequency 0 is treated as having the smallest non-zero frequency."""
    f = np.asarray(freq, np.float64)
    if rarity < 0:
        raise ValueError(f"rarity must be >= 0, got {rarity}")
    if rarity == 0 or f.size == 0 or f.max() <= 0:
        return np.ones(f.size)
    pos = f[f > 0]
    f = np.where(f > 0, f, pos.min())
    return (f.max() / f) ** rarity


@dataclass
class QueueItem:
    """One connected suspicious region. ``bbox = (row0, col0, row1, col1)``, end-exclusive."""

    stem: str
    bbox: tuple[int, int, int, int]
    pixels: int
    score: float  # rank value: mean_score × pixels × boost
    mean_score: float
    label_id: int
    predicted_id: int
    label_class: str
    predicted_class: str
    boost: float = 1.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["bbox"] = list(self.bbox)
        return d


def group_components(
    score: np.ndarray,
    label: np.ndarray,
    predicted: np.ndarray,
    *,
    stem: str = "",
    names: Sequence[str] | None = None,
    threshold: float = 0.5,
    top_fraction: float | None = None,
    min_pixels: int = 4,
    rarity: float = 0.0,
    class_freq: Sequence[float] | np.ndarray | None = None,
) -> list[QueueItem]:
    """Connected components of suspicious pixels, one label class each, ranked by ``mean × pixels × boost``.

    ``predicted``: H×W model argmax (``predicted_id`` is its majority in the component, ties → smaller id).
    ``top_fraction`` (0–1], when given, replaces ``threshold`` by the score quantile that keeps that fraction of
    the valid pixels. ``class_freq`` feeds the rarity boost (default: this label's class frequencies).
    """
    score = np.asarray(score, np.float32)
    label = np.asarray(label)
    predicted = np.asarray(predicted)
    if score.shape != label.shape or predicted.shape != label.shape:
        raise ValueError(f"score {score.shape}, label {label.shape} and predicted {predicted.shape} must have one shape")
    valid = np.isfinite(score) & (label != IGNORE)
    if not valid.any():
        return []
    cut = float(threshold)
    if top_fraction is not None:
        if not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        cut = float(np.quantile(score[valid], 1 - top_fraction))
    sus = valid & (score >= cut)
    nc = int(max(label[valid].max(), predicted.max() if predicted.size else 0)) + 1
    if names is not None:
        nc = max(nc, len(names))
    if class_freq is None:
        class_freq = np.bincount(label[valid].ravel(), minlength=nc)
    freq = np.zeros(nc)
    cf = np.asarray(class_freq, np.float64)
    freq[: min(nc, cf.size)] = cf[:nc]
    boost = rarity_boost(freq, rarity)
    name = (lambda i: str(names[i]) if i < len(names) else str(i)) if names is not None else str
    items: list[QueueItem] = []
    for c in np.unique(label[sus]):
        m = (sus & (label == c)).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8, ltype=cv2.CV_32S)
        if n <= 1:
            continue
        flat = lab.ravel()
        sel = flat > 0
        ids = flat[sel]
        sums = np.bincount(ids, weights=score.ravel()[sel], minlength=n)
        pc = np.zeros((n, nc), np.int64)
        np.add.at(pc, (ids, predicted.ravel()[sel].astype(np.intp)), 1)
        for j in range(1, n):
            x, yy, w, h, area = (int(v) for v in stats[j])
            if area < min_pixels:
                continue
            pid = int(pc[j].argmax())
            mean = float(sums[j] / area)
            b = float(max(boost[int(c)], boost[pid])) if rarity > 0 else 1.0
            items.append(QueueItem(stem=stem, bbox=(yy, x, yy + h, x + w), pixels=area, score=mean * area * b,
                                   mean_score=mean, label_id=int(c), predicted_id=pid, label_class=name(int(c)),
                                   predicted_class=name(pid), boost=b))
    items.sort(key=lambda it: (-it.score, it.stem, it.bbox))
    return items


__all__ = [
    "ABSENT_CLASS_THRESHOLD",
    "DEFAULT_WEIGHTS",
    "LN10",
    "ClassThresholds",
    "QueueItem",
    "SuspicionWeights",
    "combine",
    "group_components",
    "rarity_boost",
    "same_label_mean",
    "signals",
    "suspicion_score",
]
