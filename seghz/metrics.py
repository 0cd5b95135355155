"""Confusion matrix and the study's scores: per-class IoU, Acc (recall), precision, mIoU, fwIoU, OA.

All functions ignore label 255. mIoU averages over the classes present in labels *or* predictions (``miou_present``:
over the classes present in the labels, shown alongside); fwIoU weights IoU by the ground-truth frequency (the study's definition, ``utils/metrics.py``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from seghz.classes import IGNORE


def check_class_indices(values: np.ndarray, num_classes: int, what: str) -> None:
    """Raise ValueError when ``values`` (class indices, ignore already left out) hold anything outside
    ``0..num_classes-1``, naming ``what`` ("label", "prediction") and the offending values (up to 5 of them)."""
    v = np.asarray(values)
    bad = (v < 0) | (v >= num_classes)
    if bad.any():
        odd = np.unique(v[bad])
        shown = ", ".join(str(int(x)) for x in odd[:5]) + (f", … ({odd.size} values)" if odd.size > 5 else "")
        raise ValueError(f"{what} holds class index {shown} outside 0..{num_classes - 1} ({num_classes} classes; "
                         f"{IGNORE} is ignore)")


def _labelled(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keep, prediction, label)`` over the labelled pixels (label ≠ 255) as int64, both checked by
    :func:`check_class_indices`: the one rule of :func:`confusion_matrix` and :func:`calibration_counts`."""
    keep = gt != IGNORE
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    check_class_indices(g, num_classes, "label")
    check_class_indices(p, num_classes, "prediction")
    return keep, p, g


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 matrix, rows = ground truth, columns = prediction; gt == 255 is skipped. A label or a prediction
    (on a labelled pixel) outside ``0..C-1`` is a ValueError naming the values (:func:`check_class_indices`)."""
    pred = np.asarray(pred).ravel()
    gt = np.asarray(gt).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.size} pixels, label {gt.size}")
    _, p, g = _labelled(pred, gt, num_classes)
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(cm: np.ndarray, names: list[str] | tuple[str, ...] | None = None) -> dict:
    """Scores from a confusion matrix, as a JSON-ready dict.

    Returns ``{"miou", "fwiou", "oa", "macc", "per_class": {name: {"iou", "acc", "precision", "f1",
    "support", "predicted"}}, "confusion", "classes", "present", "miou_present", "predicted_only"}``. Classes absent
    from both labels and predictions get ``None`` scores and are left out of the means.

    ``miou`` is the standard (the study's) mIoU: a class with no labelled pixel but some predicted ones has IoU 0 and
    counts, so a handful of stray pixels of a class the labels lack can move it by 1/K. ``predicted_only`` names such
    classes and ``miou_present`` is the mean IoU over the classes present in the labels only (None without any), to
    be shown alongside, never instead.
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
        "miou_present": f(np.mean(iou[gt_sum > 0])) if (gt_sum > 0).any() else None,
        "predicted_only": [n for i, n in enumerate(names) if gt_sum[i] == 0 and pr_sum[i] > 0],
    }


def iou_batch(cms: np.ndarray) -> np.ndarray:
    """Per-class IoU of a stack of confusion matrices ``(..., C, C)`` -> ``(..., C)``, NaN where a class is absent
    from both labels and predictions (as :func:`scores`)."""
    cms = np.asarray(cms, np.float64)
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    union = cms.sum(-1) + cms.sum(-2) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def miou_batch(cms: np.ndarray, labelled_only: bool = False) -> np.ndarray:
    """mIoU of a stack of confusion matrices ``(..., C, C)`` -> ``(...)``: :func:`scores`' ``miou`` for each (NaN
    where no class is present); with ``labelled_only`` its ``miou_present`` (over the classes each matrix's labels
    hold)."""
    iou = iou_batch(cms)
    if labelled_only:
        iou = np.where(np.asarray(cms).sum(-1) > 0, iou, np.nan)
    n = np.sum(~np.isnan(iou), -1)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.nansum(iou, -1) / np.maximum(n, 1), np.nan)


def scene_bootstrap(cms, rounds: int = 2000, level: float = 0.95, seed: int = 0, labelled_only: bool = False) -> dict:
    """How sure is one model's mIoU on N scenes? ``(N, C, C)`` confusion matrices, resampled by scene with
    replacement (as :func:`paired_bootstrap`, for one model): ``{"miou", "lo", "hi", "scenes", "rounds", "level",
    "seed"}``, fractions. ``lo``/``hi`` are None for fewer than two scenes. A round without a labelled pixel is left
    out. ``labelled_only``: of the mIoU over the classes present in the labels (:func:`scores`' ``miou_present``;
    stray predictions of a class no label holds widen the standard interval the way they lower the mIoU)."""
    c = np.asarray(cms, np.int64)
    if c.ndim != 3 or c.shape[1] != c.shape[2] or c.shape[0] == 0:
        raise ValueError(f"cms must be (scenes, C, C) confusion matrices, at least one scene (got shape {c.shape})")
    n = c.shape[0]
    point = miou_batch(c.sum(0), labelled_only)
    out = {"miou": None if np.isnan(point) else float(point), "lo": None, "hi": None, "scenes": n,
           "rounds": int(rounds), "level": level, "seed": seed}
    if n < 2:
        return out
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(int(rounds), n))
    pooled = np.stack([c[d].sum(0) for d in draws])
    m = miou_batch(pooled, labelled_only)
    m = m[~np.isnan(m) & (pooled.sum((1, 2)) > 0)]
    if m.size:
        q = (1 - level) / 2
        out["lo"], out["hi"] = float(np.quantile(m, q)), float(np.quantile(m, 1 - q))
    return out


def paired_bootstrap(cms_a, cms_b, rounds: int = 2000, level: float = 0.95, seed: int = 0,
                     names: list[str] | tuple[str, ...] | None = None) -> dict:
    """How sure is a difference between two models scored on the same scenes? A paired scene bootstrap.

    ``cms_a`` / ``cms_b``: ``(N, C, C)`` confusion matrices of models A and B on the same N scenes, in the same order.
    Each round draws N scenes with replacement (the same draw for both models), sums each model's matrices over the
    draw and takes B − A of the pooled mIoU and per-class IoU (as :func:`scores` defines them). Scenes, not pixels,
    are the unit: pixels of one tile are not independent draws.

    Returns ``{"delta", "lo", "hi", "p_b_better", "a", "b", "scenes", "rounds", "level", "seed", "per_class"}``:
    ``a`` / ``b`` = each model's mIoU on all scenes, ``delta`` = ``b − a``, ``lo`` / ``hi`` the percentile interval at
    ``level`` over the rounds, ``p_b_better`` the share of rounds where B's mIoU is higher. With one scene there is
    nothing to resample: ``lo``, ``hi`` and ``p_b_better`` are None. Each round's mIoU is :func:`scores`' on the
    draw (classes in its labels *or* a model's predictions, as ``seghz evaluate`` scores a split), so the interval
    is that of the point estimate's statistic; a round counts unless a model's pooled matrix is all zero (a draw
    without a labelled pixel, where mIoU is undefined). ``per_class[name]``:

    * ``{"delta", "lo", "hi"}`` for a class both models score (IoU defined: in the labels or in both predictions).
      Its interval is over the rounds whose draw holds labelled pixels of the class (support > 0: the class's row
      sum of both models' pooled matrices), so it is conditional on the class being drawn. A round whose draw
      holds no labelled pixel of it is left out, also when a model predicts the class somewhere in the draw (both
      IoUs would be 0 there, a Δ of exactly 0 that says nothing about the class). ``lo`` / ``hi`` are None when
      no round holds the class (e.g. a class absent from the labels that both models predict: ``delta`` 0);
    * ``{"delta": None, ..., "only": "a" | "b"}`` for a class absent from the labels that one model predicts: it
      counts as an IoU of 0 in that model's mIoU and is not scored at all for the other;
    * None for a class neither model scores.

    Fractions, not percent.
    """
    a = np.asarray(cms_a, np.int64)
    b = np.asarray(cms_b, np.int64)
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"cms_a must be (scenes, C, C) confusion matrices (got shape {a.shape})")
    if a.shape != b.shape:
        raise ValueError(f"the two models were scored on different scenes or classes: {a.shape} vs {b.shape}")
    if a.shape[0] == 0:
        raise ValueError("no scenes to compare")
    rounds = int(rounds)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1 (got {rounds})")
    if not 0 < float(level) < 1:
        raise ValueError(f"level must be in (0, 1) (got {level})")
    n, c = a.shape[0], a.shape[1]
    names = list(names) if names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for {c} classes")
    rng = np.random.default_rng(seed)
    # counts per scene of each draw (multinomial resampling) -> pooled matrices as one matrix product
    draws = rng.multinomial(n, np.full(n, 1.0 / n), size=rounds).astype(np.float64)  # (rounds, N)
    pa = (draws @ a.reshape(n, -1)).reshape(rounds, c, c)
    pb = (draws @ b.reshape(n, -1)).reshape(rounds, c, c)
    d = miou_batch(pb) - miou_batch(pa)
    dc = iou_batch(pb) - iou_batch(pa)
    # a class's Δ counts only in rounds whose draw holds labelled pixels of it: without them both IoUs are 0 (false
    # positives only) or undefined, and a forced Δ of 0 would pull the interval onto 0
    drawn = (pa.sum(-1) > 0) & (pb.sum(-1) > 0)  # (rounds, C): support of each class in the draw
    dc[~drawn] = np.nan
    tail = (1 - float(level)) / 2
    full_a, full_b = a.sum(0), b.sum(0)
    ia, ib = iou_batch(full_a), iou_batch(full_b)

    def interval(x: np.ndarray) -> tuple[float | None, float | None]:
        x = x[~np.isnan(x)]
        if n < 2 or not x.size:
            return None, None
        return float(np.quantile(x, tail)), float(np.quantile(x, 1 - tail))

    lo, hi = interval(d)
    per_class: dict[str, dict | None] = {}
    for i, name in enumerate(names):
        if np.isnan(ia[i]) and np.isnan(ib[i]):
            per_class[name] = None
        elif np.isnan(ia[i]) or np.isnan(ib[i]):
            per_class[name] = {"delta": None, "lo": None, "hi": None, "only": "b" if np.isnan(ia[i]) else "a"}
        else:
            clo, chi = interval(dc[:, i])
            per_class[name] = {"delta": float(ib[i] - ia[i]), "lo": clo, "hi": chi}
    ma, mb = float(miou_batch(full_a)), float(miou_batch(full_b))
    ok = d[~np.isnan(d)]
    return {"delta": mb - ma, "lo": lo, "hi": hi, "p_b_better": float(np.mean(ok > 0)) if lo is not None else None,
            "a": ma, "b": mb, "scenes": int(n), "rounds": rounds, "level": float(level), "seed": int(seed),
            "per_class": per_class}


def paired_scene_bootstrap(per_scene_a: Mapping, per_scene_b: Mapping, names: Sequence[str] | None = None, *,
                           same_scenes: bool = False, rounds: int = 2000, level: float = 0.95,
                           seed: int = 0) -> tuple[dict | None, str, int]:
    """:func:`paired_bootstrap` of two evaluations' per-scene confusion matrices (``{scene: (C, C) matrix}``,
    as :func:`seghz.evaluate.evaluate_split` stores them), paired by scene id.

    The scenes drawn are those both hold (``same_scenes=True``: both must hold exactly the same ones). Returns
    ``(result, "", scenes)``, or ``(None, why, scenes)`` when there is nothing to pair: no per-scene counts, other
    scenes, fewer than 2 common scenes, matrices of another class count (or ragged ones, from a hand-edited
    cache). ``scenes`` is the number of common scenes."""
    if not per_scene_a or not per_scene_b:
        return None, "no per-scene counts (re-evaluate)", 0
    common = sorted(set(per_scene_a) & set(per_scene_b), key=str)
    if same_scenes and set(per_scene_a) != set(per_scene_b):
        return None, "scored on other scenes", len(common)
    if len(common) < 2:
        return None, "fewer than 2 common scenes", len(common)
    try:
        a = np.asarray([per_scene_a[k] for k in common], np.int64)
        b = np.asarray([per_scene_b[k] for k in common], np.int64)
    except (TypeError, ValueError):
        return None, "unreadable per-scene counts", len(common)
    c = len(names) if names is not None else (a.shape[-1] if a.ndim == 3 else -1)
    if a.ndim != 3 or a.shape != b.shape or a.shape[1:] != (c, c):
        return None, "other class count", len(common)
    return paired_bootstrap(a, b, rounds=rounds, level=level, seed=seed, names=names), "", len(common)


CAL_BINS = 10  # equal-width confidence bins of the calibration counts


def calibration_counts(pred: np.ndarray, conf: np.ndarray, gt: np.ndarray, num_classes: int,
                       bins: int = CAL_BINS) -> dict:
    """Per predicted class and confidence bin, over the labelled pixels (gt ≠ 255): how many pixels (``count``),
    how many of them the label agrees with (``correct``) and the sum of their confidences (``conf_sum``); bins of
    equal width over [0, 1] (a confidence of exactly 1 falls in the last). JSON-ready: ``{"bins", "count",
    "correct", "conf_sum"}``, each count a ``num_classes`` × ``bins`` nested list. Add two with
    :func:`add_calibration`; read them with :func:`calibration_report`.

    The pixels are those :func:`confusion_matrix` counts: a label or a prediction (on a labelled pixel) outside
    ``0..num_classes-1`` is the same ValueError, never silently left out."""
    pred = np.asarray(pred).ravel()
    conf = np.asarray(conf, np.float64).ravel()
    gt = np.asarray(gt).ravel()
    if not (pred.shape == conf.shape == gt.shape):
        raise ValueError(f"prediction ({pred.size} px), confidence ({conf.size}) and label ({gt.size}) differ in size")
    keep, p, g = _labelled(pred, gt, num_classes)
    b = np.clip((conf[keep] * bins).astype(np.int64), 0, bins - 1)
    idx = p * bins + b
    n = num_classes * bins
    count = np.bincount(idx, minlength=n).reshape(num_classes, bins)
    correct = np.bincount(idx, weights=(p == g).astype(np.float64), minlength=n).reshape(num_classes, bins)
    csum = np.bincount(idx, weights=conf[keep], minlength=n).reshape(num_classes, bins)
    return {"bins": int(bins), "count": count.astype(np.int64).tolist(), "correct": correct.astype(np.int64).tolist(),
            "conf_sum": csum.tolist()}


def add_calibration(a: dict | None, b: dict) -> dict:
    """The calibration counts of two sets of pixels together (``a`` None: ``b``)."""
    if a is None:
        return b
    if a["bins"] != b["bins"] or np.shape(a["count"]) != np.shape(b["count"]):
        raise ValueError("calibration counts with different classes or bins cannot be added")
    return {"bins": a["bins"], **{k: (np.asarray(a[k]) + np.asarray(b[k])).tolist() for k in ("count", "correct", "conf_sum")}}


def calibration_report(cal: dict, names: list[str] | tuple[str, ...] | None = None) -> dict:
    """How far the model's confidence can be trusted, from :func:`calibration_counts`.

    Returns ``{"ece", "pixels", "confidence", "accuracy", "bins": [{"lo", "hi", "count", "accuracy", "confidence"}], "per_class": {name:
    {"ece", "pixels", "accuracy", "confidence"}}, "per_class_bins": {name: [{"count", "accuracy", "confidence"}]},
    "coverage": [{"threshold", "kept", "accuracy", "per_class": {name: {"kept", "accuracy"}}}]}``: the expected calibration error (the pixel-weighted mean |accuracy −
    confidence| over the bins; per class over the pixels predicted as that class), the reliability points, and
    what abstaining below each bin edge keeps (share of the pixels; of each predicted class's pixels) and how
    often the label agrees with what is kept. Accuracy and confidence are None where a bin holds no pixel."""
    count = np.asarray(cal["count"], np.float64)
    correct = np.asarray(cal["correct"], np.float64)
    csum = np.asarray(cal["conf_sum"], np.float64)
    nc, nb = count.shape
    names = list(names) if names is not None else [str(i) for i in range(nc)]
    if len(names) != nc:
        raise ValueError(f"calibration counts hold {nc} classes but {len(names)} names were given")

    def ratio(a, b):
        return float(a / b) if b > 0 else None

    def ece(cnt, cor, cs):
        tot = cnt.sum()
        if tot <= 0:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = np.where(cnt > 0, np.abs(cor / np.maximum(cnt, 1) - cs / np.maximum(cnt, 1)), 0.0)
        return float((gap * cnt).sum() / tot)

    c_all, k_all, s_all = count.sum(0), correct.sum(0), csum.sum(0)
    total = float(c_all.sum())
    out = {"ece": ece(c_all, k_all, s_all), "pixels": int(total), "confidence": ratio(s_all.sum(), total),
           "accuracy": ratio(k_all.sum(), total),
           "bins": [{"lo": i / nb, "hi": (i + 1) / nb, "count": int(c_all[i]), "accuracy": ratio(k_all[i], c_all[i]),
                     "confidence": ratio(s_all[i], c_all[i])} for i in range(nb)],
           "per_class": {n: {"ece": ece(count[j], correct[j], csum[j]), "pixels": int(count[j].sum()),
                             "accuracy": ratio(correct[j].sum(), count[j].sum()),
                             "confidence": ratio(csum[j].sum(), count[j].sum())} for j, n in enumerate(names)},
           "per_class_bins": {n: [{"count": int(count[j, i]), "accuracy": ratio(correct[j, i], count[j, i]),
                                   "confidence": ratio(csum[j, i], count[j, i])} for i in range(nb)]
                              for j, n in enumerate(names)},
           "coverage": []}
    for i in range(nb):
        kc, kk = count[:, i:].sum(1), correct[:, i:].sum(1)
        out["coverage"].append({
            "threshold": i / nb, "kept": ratio(kc.sum(), total), "accuracy": ratio(kk.sum(), kc.sum()),
            "per_class": {n: {"kept": ratio(kc[j], count[j].sum()), "accuracy": ratio(kk[j], kc[j])}
                          for j, n in enumerate(names)}})
    return out


def evaluation_scores(cm: np.ndarray, names: list[str] | tuple[str, ...], calibration: dict | None = None) -> dict:
    """An evaluation's result from its summed confusion matrix and calibration counts: :func:`scores` plus the
    label / prediction class frequencies (``freq_label`` / ``freq_pred``), the counts (``calibration``) and their
    pooled ``ece`` (None without counts). The workspace evaluation and ``seghz evaluate`` both finish with it."""
    cm = np.asarray(cm)
    out = scores(cm, names)
    total = max(int(cm.sum()), 1)
    out.update(freq_label=(cm.sum(1) / total).tolist(), freq_pred=(cm.sum(0) / total).tolist(), calibration=calibration,
               ece=calibration_report(calibration, names)["ece"] if calibration is not None else None)
    return out


def coverage_at(cal_report: dict, threshold: float) -> dict:
    """The coverage row of a :func:`calibration_report` for abstaining below ``threshold``, rounded down to a bin
    edge (below the first edge: the first row)."""
    rows = cal_report["coverage"]
    k = max([i for i, c in enumerate(rows) if c["threshold"] <= threshold + 1e-9], default=0)
    return rows[k]


def class_counts(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel count of each class in a class-index mask: the one class-histogram rule of SegHZ. 255 (ignore) is
    left out (and so out of any denominator); any other value outside ``0..num_classes-1`` is a ValueError naming
    it (:func:`check_class_indices`), never dropped or counted."""
    m = np.asarray(mask).ravel()
    m = m[m != IGNORE].astype(np.int64)
    check_class_indices(m, num_classes, "label")
    return np.bincount(m, minlength=num_classes).astype(np.float64)


def class_frequencies(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel share of each class in a class-index mask (:func:`class_counts` over their sum: 255 is not in the
    denominator, any other out-of-range value is a ValueError); zeros when every pixel is ignore."""
    counts = class_counts(mask, num_classes)
    total = counts.sum()
    return counts / total if total > 0 else counts


def pooled_class_frequencies(labels, num_classes: int) -> np.ndarray:
    """Pixel share of each class over several class-index masks pooled (the rule of :func:`class_counts`); zeros
    when none is labelled. The training class frequencies a checkpoint records (``train_class_freq``)."""
    counts = np.zeros(num_classes)
    for lbl in labels:
        counts += class_counts(lbl, num_classes)
    total = counts.sum()
    return counts / total if total > 0 else counts


MINUS = "\u2212"  # the typographic minus every signed difference is shown with: "−4.7"


def signed_pp(pp: float, digits: int = 1) -> str:
    """A difference already in percentage points, signed as every table and verdict shows it: ``+1.2``,
    ``−3.4`` (typographic minus), and ``0.0`` with no sign for anything that rounds to zero (never ``−0.0``)."""
    txt = f"{float(pp):+.{digits}f}"
    if float(txt) == 0:
        return txt[1:]
    return txt.replace("-", MINUS)


def fmt_pct(v, digits: int = 1) -> str:
    """A score as every tile and table shows it, rounded: ``0.6234`` -> ``"62.3 %"``; None/NaN -> ``"–"``."""
    f = as_float(v)
    return "–" if f is None else f"{100 * f:.{digits}f} %"


def as_float(v) -> float | None:
    """A float, or None for None, NaN and anything that is not a number (scores read back from JSON/metadata)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f
