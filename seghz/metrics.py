"""Confusion matrix and the study's scores: per-class IoU, Acc (recall), precision, mIoU, fwIoU, OA.

All functions ignore label 255. mIoU averages over the classes present in labels *or* predictions;
fwIoU weights IoU by the ground-truth frequency (the study's definition, ``utils/metrics.py``).
"""
from __future__ import annotations

import numpy as np

from seghz.classes import IGNORE


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 matrix, rows = ground truth, columns = prediction; gt == 255 is skipped."""
    pred = np.asarray(pred).ravel()
    gt = np.asarray(gt).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.size} pixels, label {gt.size}")
    keep = gt != IGNORE
    if np.any(gt[keep] >= num_classes) or np.any(gt[keep] < 0):
        raise ValueError(f"label holds class index {int(gt[keep].max())} >= {num_classes} classes")
    p = pred[keep].astype(np.int64)
    g = gt[keep].astype(np.int64)
    if p.size and (p.max() >= num_classes or p.min() < 0):
        raise ValueError(f"prediction holds class indices outside 0..{num_classes - 1} ({int(p.min())}..{int(p.max())})")
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(cm: np.ndarray, names: list[str] | tuple[str, ...] | None = None) -> dict:
    """Scores from a confusion matrix, as a JSON-ready dict.

    Returns ``{"miou", "fwiou", "oa", "macc", "per_class": {name: {"iou", "acc", "precision", "f1",
    "support", "predicted"}}, "confusion", "classes", "present"}``. Classes absent from both labels and
    predictions get ``None`` scores and are left out of the means.
    """
    cm = np.asarray(cm, np.float64)
    c = cm.shape[0]
    names = list(names) if names is not None else [str(i) for i in range(c)]
    tp = np.diag(cm)
    gt_sum = cm.sum(1)
    pr_sum = cm.sum(0)
    union = gt_sum + pr_sum - tp
    present = union > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, tp / np.maximum(union, 1), np.nan)
        acc = np.where(gt_sum > 0, tp / np.maximum(gt_sum, 1), np.nan)
        prec = np.where(pr_sum > 0, tp / np.maximum(pr_sum, 1), np.nan)
        f1 = np.where((acc + prec) > 0, 2 * acc * prec / (acc + prec), np.nan)
    total = cm.sum()
    freq = gt_sum / total if total > 0 else np.zeros(c)
    fw = float(np.nansum(freq[gt_sum > 0] * iou[gt_sum > 0])) if total > 0 else float("nan")

    def f(v):
        return None if np.isnan(v) else float(v)

    return {
        "miou": f(np.nanmean(iou)) if present.any() else None,
        "fwiou": fw if total > 0 else None,
        "oa": float(tp.sum() / total) if total > 0 else None,
        "macc": f(np.nanmean(acc)) if (gt_sum > 0).any() else None,
        "per_class": {
            n: {"iou": f(iou[i]), "acc": f(acc[i]), "precision": f(prec[i]), "f1": f(f1[i]),
                "support": int(gt_sum[i]), "predicted": int(pr_sum[i])}
            for i, n in enumerate(names)
        },
        "confusion": cm.astype(np.int64).tolist(),
        "classes": names,
        "present": [n for i, n in enumerate(names) if present[i]],
    }


def class_frequencies(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel share of each class in a class-index mask (ignore excluded); zeros when empty."""
    m = np.asarray(mask).ravel()
    m = m[m != IGNORE]
    if m.size == 0:
        return np.zeros(num_classes)
    return np.bincount(m, minlength=num_classes)[:num_classes] / m.size


def as_float(v) -> float | None:
    """A float, or None for None, NaN and anything that is not a number (scores read back from JSON/metadata)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f
