"""Comparing checkpoints and TTA views (no Streamlit here): tables in the shape of the study's experiment tables.

* :func:`recipe_diff`: the recipe keys that differ between two checkpoints (``"noise_mask=cos; epochs 5→20"``),
  the "note" column of :func:`comparison_table` (one row per checkpoint: val/test mIoU, fwIoU, Acc measured on this
  workspace, and apart from them those the checkpoint recorded at training on its own data).
* :func:`class_iou_deltas` / :func:`style_deltas`: per-class IoU of each checkpoint minus the first, coloured.
* :func:`miou_difference_table`: each checkpoint's mIoU minus the first's with a paired scene-bootstrap interval, and
  whether the split can tell them apart.
* :func:`changed_pixels` / :func:`changed_pairs_table` / :func:`changed_panels`: where two checkpoints'
  predictions of one scene differ, and which class pairs A→B change most.
* :func:`cumulative_tta_specs` / :func:`tta_report`: the NAIC-style table of mIoU as TTA views are added one by
  one (baseline = identity, +lr, +tb, ... up to the full D4), computed through :func:`seghz.evaluate.evaluate_split`
  so every row is cached in the workspace's evaluations like any other evaluation.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from seghz.infer.engine import TTA_MODES
from seghz.metrics import as_float as _num
from seghz.metrics import fmt_pct, signed_pp

# Recipe keys that do not change what a run learns (where it ran, whether it resumed, its parent's file path).
RECIPE_IGNORED = frozenset({"device", "resume", "parent_checkpoint", "ddp", "deterministic"})
SPLITS = ("val", "test")  # the splits of the comparison table, in column order
HIGHLIGHT = (255, 0, 255)


# ---------------------------------------------------------------------------------------------- recipes


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    if isinstance(v, Mapping) and not v:
        return "{}"
    return str(v)


def recipe_diff(base: Mapping | None, other: Mapping | None, ignore: Iterable[str] = RECIPE_IGNORED) -> str:
    """The recipe keys of ``other`` that differ from ``base``, ``"; "``-joined in ``other``'s key order.

    Nested dicts are compared key by key with dotted names. A key in both: ``"epochs 5→20"``; only in
    ``other``: ``"loss.noise_mask=cos"``; only in ``base``: ``"lr 0.002→(unset)"``. Empty string when equal.
    """
    a, b = _flatten(base or {}), _flatten(other or {})
    skip = set(ignore)
    parts = []
    for k in [*b, *(k for k in a if k not in b)]:
        if k.split(".")[-1] in skip or k in skip:
            continue
        if k not in a:
            parts.append(f"{k}={_fmt(b[k])}")
        elif k not in b:
            parts.append(f"{k} {_fmt(a[k])}→(unset)")
        elif a[k] != b[k] and _fmt(a[k]) != _fmt(b[k]):
            parts.append(f"{k} {_fmt(a[k])}→{_fmt(b[k])}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------- comparison table


MEASURED = "this workspace"
RECORDED = "recorded at training, its own data"
METRIC_KEYS = {"mIoU": "miou", "fwIoU": "fwiou", "Acc": "oa"}


def score_column(split: str, metric: str, recorded: bool = False) -> str:
    """The comparison table's column of a split's metric, named by where the score comes from:
    ``"val mIoU (this workspace)"`` (a cached evaluation on this workspace's split) or
    ``"val mIoU (recorded at training, its own data)"`` (the checkpoint's metadata: its training run's own data)."""
    return f"{split} {metric} ({RECORDED if recorded else MEASURED})"


def comparison_table(entries: Sequence[Mapping]) -> pd.DataFrame:
    """One row per checkpoint, in the shape of the study's experiment tables.

    Each entry: ``{"checkpoint": label, "recipe": dict, "val": scores|None, "test": scores|None,
    "val_recorded": scores|None, "test_recorded": scores|None}`` where scores hold ``miou``/``fwiou``/``oa``;
    ``val``/``test`` are evaluations on this workspace's splits, ``*_recorded`` the scores the checkpoint recorded at
    training time (on whatever data it was trained with). The two kinds never share a column: ``checkpoint``, then
    ``val|test mIoU|fwIoU|Acc (this workspace)`` (always), then ``val|test mIoU|fwIoU|Acc (recorded at training, its
    own data)`` (a split's three only when some checkpoint recorded scores for it), then ``note``: ``baseline`` for the
    first row, else the :func:`recipe_diff` against the first (``same recipe`` when equal, ``recipe unknown`` when
    either recipe is missing). Missing scores are NaN.
    """
    rows = []
    base = entries[0].get("recipe") if entries else None
    for i, e in enumerate(entries):
        row: dict[str, Any] = {"checkpoint": e["checkpoint"]}
        for recorded in (False, True):
            for split in SPLITS:
                sc = e.get(f"{split}_recorded" if recorded else split) or {}
                for metric, key in METRIC_KEYS.items():
                    row[score_column(split, metric, recorded)] = _num(sc.get(key))
        if i == 0:
            note = "baseline"
        elif not base or not e.get("recipe"):
            note = "recipe unknown"
        else:
            note = recipe_diff(base, e["recipe"]) or "same recipe"
        row["note"] = note
        rows.append(row)
    scores_cols = [score_column(s, m, rec) for rec in (False, True) for s in SPLITS for m in METRIC_KEYS]
    df = pd.DataFrame(rows, columns=["checkpoint", *scores_cols, "note"])
    for c in scores_cols:
        df[c] = df[c].astype("float64")
    empty = [score_column(s, m, True) for s in SPLITS for m in METRIC_KEYS
             if df[[score_column(s, k, True) for k in METRIC_KEYS]].isna().all().all()]
    return df.drop(columns=empty)


def recorded_scores(metrics: Mapping | None, split: str) -> dict | None:
    """Scores a checkpoint recorded for a split at training time (``metrics["val"]``/``metrics["test"]``), or None."""
    m = (metrics or {}).get(split)
    if not isinstance(m, Mapping) or all(_num(m.get(k)) is None for k in ("miou", "fwiou", "oa")):
        return None
    return {k: _num(m.get(k)) for k in ("miou", "fwiou", "oa")}


def checkpoint_label(ck: Any) -> str:
    """How a checkpoint is named in the comparison tables: ``name (id)``, or the id alone when the name is it."""
    name, cid = str(getattr(ck, "name", "") or ""), str(ck.id)
    return cid if not name.strip() or name == cid else f"{name} ({cid})"


def split_scores(ws: Any, checkpoint_id: str, split: str) -> tuple[dict | None, str]:
    """A checkpoint's scores on a split: the cached evaluation (no TTA, current labels) when there is one, else
    the scores recorded at training time; ``(result or None, "evaluated" | "recorded" | "missing")``."""
    from seghz.evaluate import cached_evaluation

    hit = cached_evaluation(ws, checkpoint_id, split, "none")
    if hit is not None:
        return hit.result, "evaluated"
    rec = recorded_scores(ws.get_checkpoint(checkpoint_id).metrics, split)
    return (rec, "recorded") if rec is not None else (None, "missing")


def comparison_entries(ws: Any, checkpoint_ids: Sequence[str]) -> list[dict]:
    """The entries of :func:`comparison_table` for registered checkpoints (first = baseline): ``val``/``test`` from
    the workspace's evaluation cache (no TTA, current labels; None when not evaluated), ``val_recorded`` /
    ``test_recorded`` from the checkpoints' recorded scores (None when they recorded none)."""
    from seghz.evaluate import cached_evaluation

    out = []
    for cid in checkpoint_ids:
        ck = ws.get_checkpoint(cid)
        e: dict[str, Any] = {"checkpoint": checkpoint_label(ck), "id": cid, "recipe": ck.recipe}
        for split in SPLITS:
            hit = cached_evaluation(ws, cid, split, "none")
            e[split] = None if hit is None else hit.result
            e[f"{split}_recorded"] = recorded_scores(ck.metrics, split)
        out.append(e)
    return out


def missing_evaluations(ws: Any, checkpoint_ids: Sequence[str], split: str) -> list[str]:
    """The checkpoints without a cached (no TTA) evaluation of ``split`` at its current data version."""
    from seghz.evaluate import cached_evaluation

    dv = ws.data_version(split)
    return [c for c in checkpoint_ids if cached_evaluation(ws, c, split, "none", dv) is None]


def paired_intervals(results: Mapping[str, Mapping], rounds: int = 2000, level: float = 0.95,
                     seed: int = 0) -> dict[str, tuple[dict | None, str, int]]:
    """The paired scene bootstrap of each result after the first against the first, ``{label: (result, why, scenes)}``
    (:func:`seghz.metrics.paired_scene_bootstrap`; per class too when both have the same class list): computed once
    for both :func:`class_iou_deltas` and :func:`miou_difference_table`, which would otherwise each draw the same
    rounds."""
    from seghz.metrics import paired_scene_bootstrap

    labels = list(results)
    out = {}
    if not labels:
        return out
    base = results[labels[0]]
    names = list(base.get("classes") or [])
    for lab in labels[1:]:
        other = results[lab]
        same = bool(names) and list(other.get("classes") or []) == names
        out[lab] = paired_scene_bootstrap(base.get("per_scene") or {}, other.get("per_scene") or {},
                                          names if same else None, rounds=rounds, level=level, seed=seed)
    return out


def class_iou_deltas(results: Mapping[str, Mapping], intervals: bool = False, rounds: int = 2000,
                     level: float = 0.95, seed: int = 0,
                     pairs: Mapping[str, tuple[dict | None, str, int]] | None = None) -> pd.DataFrame:
    """Per-class IoU: the first result's IoU, then each other result's IoU minus it, in percentage points.

    ``results`` maps a checkpoint label to an evaluation result (``classes`` and ``per_class``). Columns:
    ``class``, ``<first> IoU``, ``Δ <label> (pp)`` for the others. Classes are the union, in first-seen order.
    With ``intervals``, each ``Δ`` column is followed by ``<label>: 95 % (pp)``, the paired scene-bootstrap
    interval of the class's change (:func:`seghz.metrics.paired_scene_bootstrap` of the results' ``per_scene``;
    text such as ``[−3.1, +0.4]``, with `` *`` when it excludes 0; ``–`` without one). ``pairs``: the bootstraps
    already drawn (:func:`paired_intervals` of the same ``results``).
    """
    labels = list(results)
    if not labels:
        return pd.DataFrame(columns=["class"])
    classes = list(dict.fromkeys(c for r in results.values() for c in r.get("classes", [])))

    def iou(r: Mapping, c: str) -> float:
        v = _num(((r.get("per_class") or {}).get(c) or {}).get("iou"))
        return np.nan if v is None else v

    base = results[labels[0]]
    df = pd.DataFrame({"class": classes, f"{labels[0]} IoU": [iou(base, c) for c in classes]})
    if intervals and pairs is None:
        pairs = paired_intervals(results, rounds, level, seed)
    for lab in labels[1:]:
        df[f"Δ {lab} (pp)"] = [100 * (iou(results[lab], c) - iou(base, c)) for c in classes]
        if intervals:
            df[f"{lab}: {100 * level:.0f} % (pp)"] = _class_spans((pairs or {}).get(lab, (None, "", 0))[0], classes)
    return df


def _class_spans(r: Mapping | None, classes: list[str]) -> list[str]:
    """The per-class interval texts of one paired bootstrap result (``–`` where it has none)."""
    out = []
    for c in classes:
        d = ((r or {}).get("per_class") or {}).get(c) or {}
        lo, hi = d.get("lo"), d.get("hi")
        if lo is None or hi is None:
            out.append("–")
        else:
            out.append(f"[{signed_pp(100 * lo)}, {signed_pp(100 * hi)}]" + (" *" if lo > 0 or hi < 0 else ""))
    return out


MIOU_DIFF_COLUMNS = ["checkpoint", "Δ mIoU (pp)", "low (pp)", "high (pp)", "higher in", "scenes", "verdict"]


def miou_difference_table(results: Mapping[str, Mapping], rounds: int = 2000, level: float = 0.95,
                          seed: int = 0, pairs: Mapping[str, tuple[dict | None, str, int]] | None = None) -> pd.DataFrame:
    """Is each checkpoint's mIoU really different from the first's on this split? One row per other checkpoint.

    ``results`` maps a checkpoint label to an evaluation result with per-scene confusion matrices (``per_scene``,
    as :func:`seghz.evaluate.evaluate_split` stores them). The difference and its interval come from
    :func:`seghz.metrics.paired_bootstrap` over the scenes both were scored on. Columns :data:`MIOU_DIFF_COLUMNS`;
    ``verdict`` is ``higher`` / ``lower`` when the interval excludes 0, ``cannot tell`` when it holds it, or why
    there is no interval (fewer than 2 common scenes, no per-scene counts, another class count). Without an
    interval, ``Δ mIoU (pp)`` is still the difference of the results' ``miou`` when both have one (NaN otherwise);
    ``low``, ``high`` and ``higher in`` are NaN. ``pairs``: the bootstraps already drawn (:func:`paired_intervals`).
    """
    labels = list(results)
    rows = []
    if len(labels) < 2:
        return pd.DataFrame(columns=MIOU_DIFF_COLUMNS)
    first = results[labels[0]]
    if pairs is None:
        pairs = paired_intervals(results, rounds, level, seed)
    for lab in labels[1:]:
        r, why, n = pairs[lab]
        a, b = _num(first.get("miou")), _num(results[lab].get("miou"))
        point = np.nan if a is None or b is None else 100 * (b - a)  # known without an interval
        row = {"checkpoint": lab, "Δ mIoU (pp)": point, "low (pp)": np.nan, "high (pp)": np.nan,
               "higher in": np.nan, "scenes": n}
        if r is None:
            row["verdict"] = why
        elif r["lo"] is None:
            row["verdict"] = "no class present"
        else:
            row.update({"Δ mIoU (pp)": 100 * r["delta"], "low (pp)": 100 * r["lo"], "high (pp)": 100 * r["hi"],
                        "higher in": r["p_b_better"]})
            row["verdict"] = "higher" if r["lo"] > 0 else "lower" if r["hi"] < 0 else "cannot tell"
        rows.append(row)
    df = pd.DataFrame(rows, columns=MIOU_DIFF_COLUMNS)
    for c in ("Δ mIoU (pp)", "low (pp)", "high (pp)", "higher in"):
        df[c] = df[c].astype("float64")  # NaN, never None, where there is no value
    return df


def delta_color(v: Any, scale: float = 10.0) -> str:
    """CSS background for a Δ in pp: green above 0, red below, white at 0, saturated at ±``scale``."""
    f = _num(v)
    if f is None:
        return ""
    t = max(-1.0, min(1.0, f / scale))
    if t >= 0:
        r, g, b = (255 - round(155 * t), 255 - round(55 * t), 255 - round(155 * t))
    else:
        r, g, b = (255 + round(35 * t), 255 + round(155 * t), 255 + round(155 * t))
    return f"background-color: #{r:02x}{g:02x}{b:02x}"


def style_deltas(df: pd.DataFrame, scale: float | None = None):
    """A pandas Styler colouring the ``Δ … (pp)`` columns on a diverging red–white–green scale."""
    cols = [c for c in df.columns if str(c).startswith("Δ")]
    if scale is None:
        vals = np.abs(df[cols].to_numpy(dtype=float)) if cols else np.zeros(0)
        vals = vals[np.isfinite(vals)]
        scale = float(max(vals.max(), 1.0)) if vals.size else 1.0
    fmt: dict[str, Any] = {c: signed_pp for c in cols}
    fmt.update({c: fmt_pct for c in df.columns if str(c).endswith(" IoU")})  # percent, as the tiles show it
    return df.style.map(lambda v: delta_color(v, scale), subset=cols).format(fmt, na_rep="–")


def style_miou_difference(df: pd.DataFrame):
    """A pandas Styler of :func:`miou_difference_table`: points with a sign, the share of rounds in percent, and
    "–" where there is no interval (not "None")."""
    fmt: dict[str, Any] = {c: (lambda v: signed_pp(v, 2)) for c in ("Δ mIoU (pp)", "low (pp)", "high (pp)")
                           if c in df.columns}
    if "higher in" in df.columns:
        fmt["higher in"] = "{:.0%}"
    return df.style.format(fmt, na_rep="–")


# ---------------------------------------------------------------------------------------------- changed pixels


def changed_pixels(pred_a: np.ndarray, pred_b: np.ndarray, names: Sequence[str],
                   valid: np.ndarray | None = None) -> dict:
    """Where two class-index predictions of the same pixels differ.

    Returns ``{"mask", "changed", "total", "fraction", "pairs"}``: the boolean changed mask (False outside
    ``valid``), the changed and compared pixel counts, their ratio (0 when nothing is compared) and
    ``pairs``, a list of ``(class in A, class in B, pixels)`` for every changed pair, most pixels first.
    """
    a, b = np.asarray(pred_a), np.asarray(pred_b)
    if a.shape != b.shape:
        raise ValueError(f"predictions differ in shape: {a.shape} vs {b.shape}")
    keep = np.ones(a.shape, bool) if valid is None else np.asarray(valid, bool)
    mask = (a != b) & keep
    nc = len(names)
    pa, pb = a[mask].astype(np.int64), b[mask].astype(np.int64)
    if pa.size and (max(pa.max(), pb.max()) >= nc or min(pa.min(), pb.min()) < 0):
        raise ValueError(f"predictions hold class indices outside 0..{nc - 1}")
    counts = np.bincount(pa * nc + pb, minlength=nc * nc).reshape(nc, nc)
    idx = np.argwhere(counts > 0)
    pairs = sorted(((names[i], names[j], int(counts[i, j])) for i, j in idx), key=lambda p: (-p[2], p[0], p[1]))
    total = int(keep.sum())
    changed = int(mask.sum())
    return {"mask": mask, "changed": changed, "total": total, "fraction": changed / total if total else 0.0,
            "pairs": pairs}


def changed_pairs_table(stats: Mapping, top: int | None = 10) -> pd.DataFrame:
    """The top changed class pairs of :func:`changed_pixels`: ``A, B, pixels, share of changed``."""
    pairs = list(stats["pairs"])[: top if top is not None else None]
    df = pd.DataFrame(pairs, columns=["A", "B", "pixels"])
    df["share of changed"] = (df["pixels"] / stats["changed"]).astype("float64") if stats["changed"] else 0.0
    return df


def region_bbox(height: int, width: int, cap: int, center: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """A window of at most ``cap``×``cap`` px inside the scene, centred on ``center`` (row, col; default the
    scene's centre) and shifted to stay inside: ``(row0, col0, row1, col1)``."""
    cy, cx = center if center is not None else (height // 2, width // 2)
    h, w = min(cap, height), min(cap, width)
    r0 = int(min(max(cy - h // 2, 0), height - h))
    c0 = int(min(max(cx - w // 2, 0), width - w))
    return r0, c0, r0 + h, c0 + w


def common_scheme(pred_a: np.ndarray, scheme_a: str, pred_b: np.ndarray, scheme_b: str
                  ) -> tuple[np.ndarray, np.ndarray, str]:
    """Two predictions in one class scheme: B's when A's crosswalks into it, else A's when B's does.

    Raises:
        seghz.classes.SchemeMismatchError (a ValueError): When neither scheme crosswalks into the other.
    """
    from seghz.classes import index_crosswalk

    if scheme_a == scheme_b:
        return pred_a, pred_b, scheme_a
    try:
        return index_crosswalk(scheme_a, scheme_b)[pred_a], pred_b, scheme_b
    except (KeyError, ValueError):
        return pred_a, index_crosswalk(scheme_b, scheme_a)[pred_b], scheme_a


def changed_panels(image: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, mask: np.ndarray,
                   scheme: Any) -> list[np.ndarray]:
    """``image | prediction A | prediction B | changed pixels`` (magenta on the dimmed image), same size."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3].astype(np.uint8)
    hl = (img.astype(np.float32) * 0.4 + 255 * 0.6 * 0.5).astype(np.uint8)
    hl[np.asarray(mask, bool)] = HIGHLIGHT
    return [img, scheme.colorize(pred_a), scheme.colorize(pred_b), hl]


# ---------------------------------------------------------------------------------------------- TTA report


def cumulative_tta_specs(views: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """``[(row label, tta spec)]`` adding one view at a time: ``baseline (identity)``, ``+lr``, ``+tb``, ...

    ``views`` defaults to the engine's D4 views (``TTA_MODES["d4"]``), so the first spec is ``"none"`` and the
    last ``"d4"`` (canonical keys of :func:`seghz.evaluate.tta_key`, shared with the Evaluate page's cache).
    """
    from seghz.evaluate import tta_key

    views = list(views or TTA_MODES["d4"])
    if views[0] != "identity":
        views = ["identity", *[v for v in views if v != "identity"]]
    out = []
    for i in range(len(views)):
        label = "baseline (identity)" if i == 0 else f"+{views[i]}"
        out.append((label, tta_key(views[: i + 1])))
    return out


def tta_table(rows: Sequence[tuple[str, str, Mapping | None]]) -> pd.DataFrame:
    """``[(label, spec, result or None)]`` -> ``TTA, views, mIoU, fwIoU, OA, Δ mIoU (pp)`` (Δ vs the first row)."""
    out = []
    base = _num((rows[0][2] or {}).get("miou")) if rows else None
    for label, spec, res in rows:
        res = res or {}
        n = len(TTA_MODES[spec]) if spec in TTA_MODES else len(spec.split(","))
        miou = _num(res.get("miou"))
        out.append({"TTA": label, "views": n, "spec": spec, "mIoU": miou, "fwIoU": _num(res.get("fwiou")),
                    "OA": _num(res.get("oa")),
                    "Δ mIoU (pp)": None if miou is None or base is None else 100 * (miou - base)})
    df = pd.DataFrame(out, columns=["TTA", "views", "spec", "mIoU", "fwIoU", "OA", "Δ mIoU (pp)"])
    for c in ("mIoU", "fwIoU", "OA", "Δ mIoU (pp)"):
        df[c] = df[c].astype("float64")
    return df


def tta_spec_views(spec: str) -> str:
    """The views a TTA spec averages, comma-joined: ``"flip"`` -> ``"identity,lr"``, ``"none"`` -> ``"identity"``,
    a view list as it is (what the TTA report shows in place of the cache key of :func:`tta_table`'s ``spec``)."""
    return ",".join(TTA_MODES[spec]) if spec in TTA_MODES else str(spec)


def tta_report(ws: Any, checkpoint_id: str, split: str, views: Sequence[str] | None = None, *, compute: bool = True,
               predictor: Any = None, progress: Callable[[float, str], None] | None = None) -> pd.DataFrame:
    """The NAIC-style TTA table of a checkpoint on a split: one row per cumulative view set (see
    :func:`cumulative_tta_specs`), each scored by :func:`seghz.evaluate.evaluate_split` (cached in the
    workspace per checkpoint, split, data version and view list). With ``compute=False`` only cached rows are
    filled (the others are NaN)."""
    from seghz.evaluate import cached_evaluation, evaluate_split

    specs = cumulative_tta_specs(views)
    rows = []
    for i, (label, spec) in enumerate(specs):
        if compute:
            sub = None
            if progress is not None:
                sub = lambda f, m, i=i, label=label: progress((i + f) / len(specs), f"{label}: {m}")
            res = evaluate_split(ws, checkpoint_id, split, spec, predictor=predictor, progress=sub)
        else:
            hit = cached_evaluation(ws, checkpoint_id, split, spec)
            res = None if hit is None else hit.result
        rows.append((label, spec, res))
    return tta_table(rows)


__all__ = [
    "changed_pairs_table",
    "changed_panels",
    "changed_pixels",
    "checkpoint_label",
    "class_iou_deltas",
    "common_scheme",
    "comparison_entries",
    "comparison_table",
    "cumulative_tta_specs",
    "delta_color",
    "missing_evaluations",
    "paired_intervals",
    "recipe_diff",
    "recorded_scores",
    "region_bbox",
    "score_column",
    "split_scores",
    "style_deltas",
    "tta_report",
    "tta_spec_views",
    "tta_table",
]
