"""What a candidate checkpoint made by a retrain or a head refit does, in numbers the pages show side by side.

- :func:`refit_accuracy`: a head refit's accuracy on the corrected pixels *and* on its context sample (existing,
  uncorrected labels), before and after. A refit that learns the corrections by bending the head away from
  everything else shows a gain on the first and a loss on the second; :data:`CONTEXT_DROP_WARN` is the loss the
  pages warn about.
- :func:`validation_comparison`: the parent's and the candidate's validation scores (mIoU, fwIoU, OA, IoU per
  class) on the *same* labels, from the evaluation cache (both models scored on one split at one data version,
  no TTA; the refit job and the regression gate write those rows), else as recorded with each checkpoint, else
  nothing and the reason.
- :func:`job_val_split` / :func:`gate_verdict_text`: the split a job's regression gate scored on, and the one
  wording of its verdict (the Labels and Train pages show the same banner).

No Streamlit here.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from seghz.metrics import as_float as _num
from seghz.report import checkpoint_val_metrics, compare_checkpoints

JOB_KINDS = ("train", "refit")  # the job kinds that make a candidate checkpoint (listed, gated, promoted on Train)
CONTEXT_DROP_WARN = 0.02  # accuracy on the existing labels may fall this much (absolute) before the pages warn
ACCURACY_ROWS = ("reviewed pixels (corrected or confirmed by an analyst)", "existing labels (context sample, not reviewed)")
CHANGE_COLUMN = "change (pp)"


def job_val_split(job) -> str:
    """The validation split a training or refit job's regression gate scored on: its result's ``val_split`` (both
    job kinds record it), else its config's (a job from an older version, or one not finished), else ``"val"``."""
    return (job.result or {}).get("val_split") or (job.config or {}).get("val_split") or "val"


def gate_verdict_text(verdict, active_name: str | None) -> str:
    """The regression gate's verdict as one line of Markdown, the same on every page:
    ``Gate verdict: **FLAGGED** (active model: name) — <message>`` (the message says "against the active model"
    itself, so the banner only names it; nothing without an active model: the message says there is none).
    ``verdict`` is a :class:`seghz.gate.Verdict`; its message gives IoU differences and the margin in percentage
    points (``Buildings −4.7 pp (margin 2.0 pp)``), as the pages' before/after tables do."""
    active = f" (active model: {active_name})" if active_name else ""
    return f"Gate verdict: **{verdict.status.upper()}**{active} — {verdict.message}"


def refit_accuracy(result: Mapping | None, metrics: Mapping | None = None) -> dict[str, Any]:
    """A head refit's accuracies from its job result, else from the checkpoint's metrics (``metrics["refit"]``,
    written by :func:`seghz.train.refit.refit_head`; older refit jobs stored only the corrected-pixel ones).

    Returns:
        ``{"corrected": (before, after), "context": (before, after), "context_drop": before − after or None,
        "warn": context_drop > CONTEXT_DROP_WARN, "corrected_px", "context_px"}`` (None where not recorded).
    """
    res = result or {}
    fit = (metrics or {}).get("refit") or {}
    fit = fit if isinstance(fit, Mapping) else {}

    def pair(key: str) -> tuple[float | None, float | None]:
        before = res.get(f"{key}_before", (fit.get("before") or {}).get(key))
        after = res.get(f"{key}_after", (fit.get("after") or {}).get(key))
        return _num(before), _num(after)

    counts = res.get("counts") or {}
    corrected, context = pair("corrected_acc"), pair("context_acc")
    drop = None if None in context else context[0] - context[1]
    return {"corrected": corrected, "context": context, "context_drop": drop,
            "warn": drop is not None and drop > CONTEXT_DROP_WARN + 1e-12,
            "corrected_px": counts.get("corrected_used"), "context_px": counts.get("context_used")}


def refit_accuracy_table(acc: Mapping) -> pd.DataFrame:
    """:func:`refit_accuracy` as rows (corrected pixels, existing labels): ``pixels``, ``sampled``, ``before``,
    ``after`` (fractions, NaN when not recorded) and ``change (pp)``."""
    rows = [(ACCURACY_ROWS[0], acc.get("corrected_px"), *acc["corrected"]),
            (ACCURACY_ROWS[1], acc.get("context_px"), *acc["context"])]
    df = pd.DataFrame(rows, columns=["pixels", "sampled", "before", "after"])
    for c in ("before", "after"):
        df[c] = df[c].astype("float64")
    df["sampled"] = df["sampled"].astype("Int64")
    df[CHANGE_COLUMN] = (df["after"] - df["before"]) * 100
    return df


def refit_accuracy_text(acc: Mapping) -> str:
    """One sentence: ``Accuracy on the reviewed pixels: 0.8 % → 35.0 %; on the existing labels: 98.6 % → 90.3 %.``"""

    def arrow(p: tuple) -> str:
        return "not recorded" if None in p else f"{100 * p[0]:.1f} % → {100 * p[1]:.1f} %"

    return (f"Accuracy on the reviewed pixels (corrected or confirmed): {arrow(acc['corrected'])}; on the existing "
            f"labels (a sample of unreviewed labels): {arrow(acc['context'])}.")


def refit_warning(acc: Mapping) -> str | None:
    """The warning when the refit lost more than :data:`CONTEXT_DROP_WARN` of accuracy on the existing labels."""
    if not acc.get("warn"):
        return None
    b, a = acc["context"]
    return (f"The refit lost {100 * (b - a):.1f} points of accuracy on the existing labels ({100 * b:.1f} % → "
            f"{100 * a:.1f} %) while it learnt your corrections: it may be worse than its parent outside the pixels "
            "you corrected. Check the validation scores and the regression gate before promoting it.")


# ------------------------------------------------------------------------------------------------ validation


def _has_scores(m: Mapping) -> bool:
    return m.get("miou") is not None or any(v is not None for v in (m.get("per_class_iou") or {}).values())


def evaluation_as_metrics(result: Mapping) -> dict:
    """An evaluation result (:func:`seghz.evaluate.evaluate_split`) in the shape of checkpoint metrics
    (``{"val": {"miou", "fwiou", "oa", "per_class_iou"}}``), for :func:`seghz.report.compare_checkpoints`."""
    pc = result.get("per_class") or {}
    return {"val": {"miou": result.get("miou"), "fwiou": result.get("fwiou"), "oa": result.get("oa"),
                    "per_class_iou": {str(n): (v.get("iou") if isinstance(v, Mapping) else v) for n, v in pc.items()}}}


def paired_evaluations(ws, old_id: str, new_id: str, split: str = "val") -> tuple[dict, dict, str] | None:
    """Cached no-TTA evaluations of both checkpoints on ``split`` at one data version (the current one first,
    else the newest both share): ``(old result, new result, data version)``, or None."""
    versions = [ws.data_version(split)]
    for e in ws.list_evaluations(new_id):
        if e.split == split and not e.tta and e.data_version not in versions:
            versions.append(e.data_version)
    for dv in versions:
        a = ws.find_evaluation(old_id, split, False, dv)
        b = ws.find_evaluation(new_id, split, False, dv)
        if a is not None and b is not None and a.result.get("tta", "none") == b.result.get("tta", "none") == "none":
            return a.result, b.result, dv
    return None


def validation_comparison(ws, old, new, *, split: str = "val",
                          labels: tuple[str, str] = ("before", "after")) -> tuple[pd.DataFrame | None, str]:
    """Validation scores of a parent (``old``, a registry checkpoint or None) and its candidate (``new``) side by
    side, as :func:`seghz.report.compare_checkpoints` (fractions, ``Δ (pp)``), with a note on where they come from.

    Same labels first: both models' cached evaluations of ``split`` at one data version, else both models' per-class
    scores at the split's current data version (:func:`seghz.gate.stored_metrics`, IoU per class only). Else the
    scores recorded with each checkpoint when both have them (a training run's validation). Else ``(None, why)``.
    """
    if old is not None:
        pair = paired_evaluations(ws, old.id, new.id, split)
        if pair is not None:
            a, b, dv = pair
            stale = "" if dv == ws.data_version(split) else " (the labels have changed since: scores are of an earlier version)"
            n = b.get("scenes")
            where = f"{n} scene(s) of the '{split}' split" if n else f"the '{split}' split"
            return (compare_checkpoints(evaluation_as_metrics(a), evaluation_as_metrics(b), labels),
                    f"Both models scored on the same labels: {where}, label data version {dv}, no TTA{stale}.")
        from seghz.gate import stored_metrics  # per-class scores on the same labels (the gate's), no mIoU / OA

        dv = ws.data_version(split)
        a, b = stored_metrics(ws, old.id, split, dv), stored_metrics(ws, new.id, split, dv)
        if a and b:
            note = (f"Per-class IoU of both models on the same labels ('{split}' split, label data version {dv}), as "
                    "the regression gate recorded them; no overall scores were recorded.")
            return (compare_checkpoints(evaluation_as_metrics({"per_class": a}), evaluation_as_metrics({"per_class": b}),
                                        labels), note)
    rec_old = checkpoint_val_metrics(old.metrics if old is not None else None)
    rec_new = checkpoint_val_metrics(new.metrics)
    if old is not None and _has_scores(rec_old) and _has_scores(rec_new):
        note = ("Validation scores as recorded with each checkpoint (its training run's validation; the two may "
                "have been scored on different versions of the labels).")
        return compare_checkpoints(old.metrics, new.metrics, labels), note
    if old is None:
        who = "the parent checkpoint"
    elif not _has_scores(rec_new):
        who = "the new checkpoint" if _has_scores(rec_old) else "either checkpoint"
    else:
        who = f"the parent `{old.id}`"
    return None, (f"No validation scores of {who} on the '{split}' split on the same labels yet, so no before/after "
                  "comparison: the Train page's regression gate scores both models on the validation split.")


__all__ = [
    "ACCURACY_ROWS",
    "CHANGE_COLUMN",
    "CONTEXT_DROP_WARN",
    "JOB_KINDS",
    "evaluation_as_metrics",
    "gate_verdict_text",
    "job_val_split",
    "paired_evaluations",
    "refit_accuracy",
    "refit_accuracy_table",
    "refit_accuracy_text",
    "refit_warning",
    "validation_comparison",
]
