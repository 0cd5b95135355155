"""The regression gate: may a candidate checkpoint replace the active model?

The candidate's per-class IoU is compared with the active model's on the *same* validation data (the same
split at the same :meth:`~seghz.store.Workspace.data_version`). A class whose IoU drops by more than the
margin (default 0.02 absolute IoU, i.e. 2 percentage points; workspace setting ``gate_margin``) flags the
candidate; otherwise it passes. Classes absent from the validation labels (support 0, or no score at all) are
left out of the comparison, and the verdict says which.

Verdicts:

- ``pass``: no compared class dropped by more than the margin (also: no active model to compare with).
- ``flagged``: at least one class dropped by more than the margin (``offending`` lists them with deltas).
- ``unknown``: no like-for-like comparison is possible (different class schemes, no per-class scores of
  one model on the validation data the other was scored on, or nothing comparable).

:func:`promote` activates a ``pass`` candidate; anything else needs ``override=True`` with the analyst's
name and a reason, and the override (analyst, time, reason, offending classes, whole verdict) is recorded
in the workspace's promotion history. Auto-promotion after training (:func:`after_training`) happens only
on ``pass``.

**How sure is a drop?** A validation split of a few dozen tiles moves a class's IoU by several points between
two equally good models. When both models have a cached evaluation of the split with per-scene confusion
matrices (``evaluations`` rows without TTA, which :func:`seghz.evaluate.evaluate_split` writes), the verdict
also carries, per class, a paired scene-bootstrap interval of the difference
(:func:`seghz.metrics.paired_bootstrap`, 95 %, 2000 rounds, scenes as the draws), and the deltas come from
those evaluations. The workspace setting ``gate_rule`` says what flags a class:

- ``margin`` (the default, the study's rule): the drop exceeds the margin.
- ``interval``: the drop exceeds the margin *and* its interval lies below 0, i.e. the drop is beyond the tile
  noise (a one-sided 97.5 % test). A class without an interval (fewer than two scenes, no per-scene
  matrices) falls back to the margin rule. With this rule :func:`check` ``compute=True`` scores missing
  evaluations so the intervals exist.

Under either rule the message names the offending drops that are within the tile noise, so an analyst
weighing an override sees it.

Per-class scores come from the checkpoint registry (``Workspace.class_metrics``: the training job's
validation scores, or earlier gate evaluations), else from the evaluation cache (``evaluations`` rows
without TTA); with ``compute=True`` a missing one is computed by :func:`seghz.evaluate.evaluate_split`.

**Units.** The numbers (``margin``, ``delta``, ``lo`` / ``hi``, IoU) are fractions of 1, as stored and as the API
takes them; every text an analyst reads (the verdict's ``message``, the interval column, :func:`styled_verdict_table`)
shows differences in percentage points (:func:`fmt_delta_pp`, :func:`fmt_margin_pp`: ``Buildings −4.7 pp (margin
2.0 pp)``) and IoU in percent, like the before/after tables of the Labels and Evaluate pages.

No Streamlit here; the table helpers return pandas objects for the Train page.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from seghz.errors import ConflictError, SegHZError
from seghz.metrics import as_float as _num
from seghz.metrics import fmt_pct, signed_pp
from seghz.store import Promotion, Workspace

DEFAULT_MARGIN = 0.02
MARGIN_SETTING = "gate_margin"
RULE_SETTING = "gate_rule"
RULES = ("margin", "interval")
DEFAULT_RULE = "margin"
STATUSES = ("pass", "flagged", "unknown")
INTERVAL_ROUNDS = 2000
INTERVAL_LEVEL = 0.95
_EPS = 1e-9  # a drop of exactly the margin passes, whatever the float rounding

ABSENT = "absent from the validation labels"


class GateRefused(SegHZError):
    """A promotion was refused by the regression gate (flagged or unknown verdict, no override)."""

    def __init__(self, verdict: Verdict):
        self.verdict = verdict
        super().__init__(
            f"checkpoint '{verdict.candidate_id}' was not promoted: regression gate verdict '{verdict.status}' — "
            f"{verdict.message} Promote with an override (analyst name and reason) to activate it anyway."
        )


@dataclass
class Verdict:
    """The regression gate's answer for one candidate.

    Attributes:
        status: ``pass``, ``flagged`` or ``unknown``.
        margin: Largest allowed IoU drop per class (absolute IoU).
        rows: One dict per class in class order: ``class``, ``active_iou``, ``candidate_iou``, ``delta``
            (candidate − active, None when not compared), ``lo`` / ``hi`` (the delta's interval, None without
            one), ``offending`` (bool), ``within_noise`` (the drop exceeds the margin but its interval holds 0),
            ``excluded`` (why the class was left out, or None).
        offending: ``{"class", "active_iou", "candidate_iou", "delta", "lo", "hi"}`` of each class that dropped
            too much.
        excluded: ``{"class", "why"}`` of each class left out of the comparison.
        message: One plain-language sentence (or two).
        candidate_id / active_id: The checkpoints compared (active None when there is no active model).
        split / data_version: The validation data both were scored on.
        rule: ``margin`` or ``interval`` (see the module docstring).
        level / scenes: The intervals' coverage and the number of scenes drawn (None without intervals).
    """

    status: str
    margin: float = DEFAULT_MARGIN
    rows: list[dict] = field(default_factory=list)
    offending: list[dict] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)
    message: str = ""
    candidate_id: str | None = None
    active_id: str | None = None
    split: str | None = None
    data_version: str | None = None
    rule: str = DEFAULT_RULE
    level: float | None = None
    scenes: int | None = None

    @property
    def passed(self) -> bool:
        """True for a ``pass`` verdict."""
        return self.status == "pass"

    @property
    def offending_classes(self) -> list[str]:
        """Names of the offending classes."""
        return [o["class"] for o in self.offending]

    def to_dict(self) -> dict:
        """JSON-ready dict (stored with a promotion)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> Verdict:
        """Inverse of :meth:`to_dict` (unknown keys ignored)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# ------------------------------------------------------------------------------------------------ pure comparison


def per_class_iou(metrics: Mapping | None) -> dict[str, tuple[float | None, int | None]]:
    """``{class: (iou, support)}`` from any of the shapes per-class scores come in.

    Accepted: ``{class: iou}``; ``{class: {"iou", "support", ...}}`` (registry rows, ``scores()["per_class"]``);
    a whole :func:`seghz.metrics.scores` result (its ``per_class``); checkpoint metadata metrics
    (``{"val": {"per_class_iou": ...}}``) or their ``val`` part. Support is None when not known.
    """
    if not metrics:
        return {}
    if "per_class" in metrics and isinstance(metrics["per_class"], Mapping):
        metrics = metrics["per_class"]
    elif isinstance(metrics.get("val"), Mapping):
        metrics = metrics["val"].get("per_class_iou") or {}
    elif isinstance(metrics.get("per_class_iou"), Mapping):
        metrics = metrics["per_class_iou"]
    out = {}
    for name, v in metrics.items():
        if isinstance(v, Mapping):
            sup = v.get("support")
            out[str(name)] = (_num(v.get("iou")), None if sup is None else int(sup))
        else:
            out[str(name)] = (_num(v), None)
    return out




def _pp_number(x: float, digits: int) -> str:
    """A fraction as signed percentage points without the unit: ``-0.047`` -> ``"−4.7"``, ``0.01`` -> ``"+1.0"``,
    anything that rounds to 0 -> ``"0.0"`` (never ``−0.0``)."""
    return signed_pp(100 * x, digits)


def fmt_delta_pp(delta: float | None, digits: int = 1, unit: bool = True, *, margin: float | None = None) -> str:
    """An IoU difference (a fraction, candidate − active) in signed percentage points: ``-0.047`` -> ``"−4.7 pp"``,
    ``0.012`` -> ``"+1.2 pp"``, ``0`` -> ``"0.0 pp"``; None/NaN -> ``"—"``. ``unit=False`` leaves off ``" pp"``.
    With the gate's ``margin``, a drop beyond it that ``digits`` would round to the margin or less gets one more
    decimal (``−2.04 pp``, not ``−2.0 pp`` against a 2.0 pp margin)."""
    x = _num(delta)
    if x is None:
        return "—"
    if margin is not None and -round(100 * x, digits) <= round(100 * float(margin), digits + 1) + 1e-9 < -100 * x:
        digits += 1
    return _pp_number(x, digits) + (" pp" if unit else "")


def fmt_margin_pp(margin: float) -> str:
    """The gate margin (a fraction) in percentage points, one decimal unless it needs two: ``0.02`` -> ``"2.0 pp"``,
    ``0.005`` -> ``"0.5 pp"``, ``0.0025`` -> ``"0.25 pp"``."""
    txt = f"{100 * float(margin):.2f}"
    return txt.removesuffix("0") + " pp"


def _span(lo: float | None, hi: float | None) -> str:
    """The interval of a difference in percentage points, unit left to the caller: ``" [−9.0, −1.0]"``."""
    return "" if lo is None or hi is None else f" [{_pp_number(lo, 1)}, {_pp_number(hi, 1)}]"


def _delta_text(d: float, lo: float | None, hi: float | None, margin: float) -> str:
    """``"−5.0 pp"``, or with its interval ``"−5.0 [−9.0, −1.0] pp"``."""
    return f"{fmt_delta_pp(d, unit=False, margin=margin)}{_span(lo, hi)} pp"


def compare(
    active: Mapping | None,
    candidate: Mapping | None,
    margin: float = DEFAULT_MARGIN,
    *,
    intervals: Mapping | None = None,
    rule: str = DEFAULT_RULE,
    against: str = "the active model",
    scenes_noun: str = "validation scenes",
    absent: str = ABSENT,
    **ids: Any,
) -> Verdict:
    """Compare per-class IoU of a candidate against the active model (both on the same validation data).

    Args:
        active: The active model's per-class scores (any shape :func:`per_class_iou` accepts).
        candidate: The candidate's per-class scores.
        margin: Largest allowed drop of a class's IoU (absolute, e.g. 0.02); a drop of exactly the margin passes.
        intervals: A :func:`seghz.metrics.paired_bootstrap` result with the active model as ``a`` and the
            candidate as ``b`` (its ``per_class`` ``lo`` / ``hi``, ``level`` and ``scenes`` are used), or None.
        rule: ``margin``: a drop beyond the margin flags the class. ``interval``: it flags only when the drop's
            interval also lies below 0 (a class without an interval falls back to the margin rule, and the
            message says so).
        against / scenes_noun / absent: How the message names the baseline, the scenes and a class missing from
            the labels (``seghz compare`` compares a reference checkpoint on the images given).
        **ids: ``candidate_id``, ``active_id``, ``split``, ``data_version`` to put into the verdict.

    Returns:
        ``flagged`` when any compared class is offending; ``pass`` otherwise; ``unknown`` when no class could
        be compared. A class with support 0 (or no IoU) on either side is excluded as absent from the
        validation labels; a class scored for only one model is excluded too.
    """
    margin = float(margin)
    if not (margin >= 0 and math.isfinite(margin)):
        raise ValueError(f"the gate margin must be a finite number >= 0 (got {margin})")
    if rule not in RULES:
        raise ValueError(f"unknown gate rule '{rule}' (expected one of {', '.join(RULES)})")
    a, c = per_class_iou(active), per_class_iou(candidate)
    spans = (intervals or {}).get("per_class") or {}
    names = list(c) + [n for n in a if n not in c]
    rows, offending, excluded, noisy = [], [], [], []
    for n in names:
        (ai, asup), (ci, csup) = a.get(n, (None, None)), c.get(n, (None, None))
        why = None
        if n not in a:
            why = "not scored for the active model"
        elif n not in c:
            why = "not scored for the candidate"
        elif asup == 0 or csup == 0:
            why = absent
        elif ai is None or ci is None:
            why = f"{absent} (no score)"
        delta = None if why else ci - ai
        sp = spans.get(n) if not why else None
        lo = _num(sp.get("lo")) if isinstance(sp, Mapping) else None
        hi = _num(sp.get("hi")) if isinstance(sp, Mapping) else None
        if lo is None or hi is None:
            lo = hi = None
        beyond_margin = delta is not None and delta < -(margin + _EPS)
        within_noise = beyond_margin and hi is not None and hi >= 0
        bad = beyond_margin and not (rule == "interval" and within_noise)
        rows.append({"class": n, "active_iou": ai, "candidate_iou": ci, "delta": delta, "lo": lo, "hi": hi,
                     "offending": bad, "within_noise": within_noise, "excluded": why})
        if why:
            excluded.append({"class": n, "why": why})
        if bad:
            offending.append({"class": n, "active_iou": ai, "candidate_iou": ci, "delta": delta, "lo": lo, "hi": hi})
        if within_noise:
            noisy.append(rows[-1])
    compared = len(rows) - len(excluded)
    has_spans = any(r["lo"] is not None for r in rows)
    level = _num((intervals or {}).get("level")) if has_spans else None
    scenes = (intervals or {}).get("scenes") if has_spans else None
    pct = f"{100 * level:.0f} %" if level is not None else "95 %"
    ex_txt = ""
    if excluded:
        ex_txt = " Excluded: " + "; ".join(f"{e['class']} ({e['why']})" for e in excluded) + "."
    noise_txt = ""
    if noisy:
        which = ", ".join(f"{r['class']} {_delta_text(r['delta'], r['lo'], r['hi'], margin)}" for r in noisy)
        over = f" over {scenes} {scenes_noun}" if scenes else ""
        if rule == "interval":
            noise_txt = f" Not flagged, within the tile noise (their {pct} interval{over} holds 0): {which}."
        else:
            noise_txt = (f" Within the tile noise (their {pct} interval{over} holds 0): {which}; the 'interval' "
                         "gate rule would not flag them.")

    def item(o: Mapping) -> str:
        txt = f"{o['class']} {_delta_text(o['delta'], o['lo'], o['hi'], margin)}"
        return txt + (" (no interval: margin rule)" if rule == "interval" and o["lo"] is None else "")

    m_txt = fmt_margin_pp(margin)
    if offending:
        status = "flagged"
        worst = ", ".join(item(o) for o in sorted(offending, key=lambda o: o["delta"]))
        beyond = ", beyond the tile noise" if rule == "interval" and has_spans else ""
        msg = (f"{len(offending)} of {compared} compared class(es) lost more IoU against {against} than the margin "
               f"allows{beyond}: {worst} (margin {m_txt}).")
    elif compared == 0:
        status = "unknown"
        msg = "no class could be compared (no class has scores for both models on the validation labels)."
    else:
        status = "pass"
        msg = f"no class lost more than {m_txt} of IoU against {against} ({compared} class(es) compared)."
        if rule == "interval" and noisy:
            msg = (f"no class lost more than {m_txt} of IoU against {against} beyond the tile noise "
                   f"({compared} class(es) compared).")
    return Verdict(status=status, margin=margin, rows=rows, offending=offending, excluded=excluded,
                   message=msg + noise_txt + ex_txt, rule=rule, level=level, scenes=scenes, **ids)


# ------------------------------------------------------------------------------------------------ workspace


def get_margin(ws: Workspace, margin: float | None = None) -> float:
    """``margin`` when given, else the workspace setting ``gate_margin``, else :data:`DEFAULT_MARGIN`."""
    if margin is not None:
        return float(margin)
    v = ws.get_setting(MARGIN_SETTING)
    return DEFAULT_MARGIN if v is None else float(v)


def set_margin(ws: Workspace, margin: float | None) -> None:
    """Store the workspace's gate margin (None restores the default 0.02)."""
    if margin is not None and not (float(margin) >= 0 and math.isfinite(float(margin))):
        raise ValueError(f"the gate margin must be a finite number >= 0 (got {margin})")
    ws.set_setting(MARGIN_SETTING, None if margin is None else float(margin))


def get_rule(ws: Workspace, rule: str | None = None) -> str:
    """``rule`` when given, else the workspace setting ``gate_rule``, else :data:`DEFAULT_RULE` (``margin``).

    Raises ValueError for an unknown ``rule`` argument; an unknown stored setting (written by hand) reads as the
    default, the stricter rule."""
    if rule is not None:
        if rule not in RULES:
            raise ValueError(f"unknown gate rule '{rule}' (expected one of {', '.join(RULES)})")
        return rule
    r = ws.get_setting(RULE_SETTING)
    return r if r in RULES else DEFAULT_RULE


def set_rule(ws: Workspace, rule: str | None) -> None:
    """Store the workspace's gate rule (``margin`` or ``interval``; None restores ``margin``)."""
    if rule is not None and rule not in RULES:
        raise ValueError(f"unknown gate rule '{rule}' (expected one of {', '.join(RULES)})")
    ws.set_setting(RULE_SETTING, rule)


def scene_evaluation(ws: Workspace, checkpoint_id: str, split: str, data_version: str) -> dict | None:
    """The cached evaluation (no TTA) of a checkpoint on ``split`` at ``data_version`` when it holds per-scene
    confusion matrices and per-class scores, else None."""
    ev = ws.find_evaluation(checkpoint_id, split, False, data_version)
    if ev is None:
        return None
    r = ev.result
    if r.get("tta", "none") != "none" or not isinstance(r.get("per_scene"), Mapping) or not r["per_scene"]:
        return None
    if not isinstance(r.get("per_class"), Mapping):
        return None
    return r


def scene_evaluations_cached(ws: Workspace, candidate_id: str, split: str = "val") -> bool:
    """True when the candidate and the active model both have a per-scene evaluation of ``split`` at its current
    data version (so asking for intervals again would score nothing new)."""
    active = ws.active_checkpoint()
    if active is None:
        return False
    dv = ws.data_version(split)
    return all(scene_evaluation(ws, cid, split, dv) is not None for cid in (active.id, candidate_id))


def scene_intervals(active_eval: Mapping, candidate_eval: Mapping, rounds: int = INTERVAL_ROUNDS,
                    level: float = INTERVAL_LEVEL) -> dict | None:
    """Paired scene-bootstrap of candidate − active from two evaluations' per-scene matrices
    (:func:`scene_evaluation`), or None unless they were scored on the same (two or more) scenes and classes."""
    from seghz.metrics import paired_scene_bootstrap

    names = list(candidate_eval["per_class"])
    if list(active_eval["per_class"]) != names:
        return None
    bs, _, _ = paired_scene_bootstrap(active_eval["per_scene"], candidate_eval["per_scene"], names, same_scenes=True,
                                      rounds=rounds, level=level)
    return bs


def stored_metrics(ws: Workspace, checkpoint_id: str, split: str, data_version: str) -> dict:
    """Per-class scores of a checkpoint on ``split`` at ``data_version``: the registry, else the evaluation
    cache (no TTA); empty when neither has them."""
    m = ws.class_metrics(checkpoint_id, split, data_version)
    if m:
        return m
    ev = ws.find_evaluation(checkpoint_id, split, False, data_version)
    if ev is not None and ev.result.get("tta", "none") == "none" and isinstance(ev.result.get("per_class"), Mapping):
        return dict(ev.result["per_class"])
    return {}


def _versions(ws: Workspace, checkpoint_id: str, split: str) -> list[str]:
    out = ws.class_metrics_versions(checkpoint_id, split)
    for e in ws.list_evaluations(checkpoint_id):
        if e.split == split and not e.tta and e.data_version not in out:
            out.append(e.data_version)
    return out


def evaluate_metrics(ws: Workspace, checkpoint_id: str, split: str, progress: Callable | None = None) -> tuple[str, dict]:
    """Evaluate a checkpoint on ``split`` now (no TTA, cached) and record its per-class scores in the registry.

    Returns:
        ``(data_version, per_class)``.
    """
    from seghz.evaluate import evaluate_split

    res = evaluate_split(ws, checkpoint_id, split, "none", progress=progress)
    ws.record_class_metrics(checkpoint_id, split, res["data_version"], res["per_class"], source="eval")
    return res["data_version"], res["per_class"]


def check(
    ws: Workspace,
    candidate_id: str,
    *,
    split: str = "val",
    margin: float | None = None,
    compute: bool = False,
    progress: Callable | None = None,
    rule: str | None = None,
    intervals: bool | None = None,
) -> Verdict:
    """The gate verdict for promoting ``candidate_id`` over the workspace's active model.

    Both models must have per-class scores on ``split`` at one data version. The current data version is
    preferred; without ``compute`` an older one both were scored on is used (the message says so); with
    ``compute`` the missing scores at the current version are computed (model inference on the split).

    When both models have a cached per-scene evaluation at that version, the verdict carries per-class
    intervals (:func:`scene_intervals`) and its deltas come from those evaluations. ``intervals`` says whether
    ``compute`` should also score the evaluations the intervals need; None means: only under the ``interval``
    rule. ``rule`` / ``margin`` None read the workspace settings.

    Raises:
        NotFoundError: When the candidate is not registered.
    """
    margin = get_margin(ws, margin)
    rule = get_rule(ws, rule)
    want_intervals = (rule == "interval") if intervals is None else bool(intervals)
    cand = ws.get_checkpoint(candidate_id)
    active = ws.active_checkpoint()
    ids = {"candidate_id": cand.id, "active_id": active.id if active else None, "split": split}
    if active is None:
        return Verdict("pass", margin, message="there is no active model: nothing to compare against.", rule=rule,
                       **ids)
    if active.id == cand.id:
        return Verdict("pass", margin, message="this checkpoint is already the active model.", rule=rule, **ids)
    if active.scheme and cand.scheme and active.scheme != cand.scheme:
        return Verdict("unknown", margin, rule=rule, message=(
            f"the candidate predicts scheme {cand.scheme} and the active model {active.scheme}: their per-class "
            "IoU cannot be compared."), **ids)
    current = ws.data_version(split)
    note = ""
    cm, am = stored_metrics(ws, cand.id, split, current), stored_metrics(ws, active.id, split, current)
    dv = current
    if not (cm and am) and compute:
        try:
            if not cm:
                dv, cm = evaluate_metrics(ws, cand.id, split, progress)
            if not am:
                dv, am = evaluate_metrics(ws, active.id, split, progress)
        except Exception as e:  # noqa: BLE001 - no model, no labels, bad file: the verdict says why
            return Verdict("unknown", margin, message=f"could not score both models on the '{split}' split: {e}",
                           data_version=current, rule=rule, **ids)
    if not (cm and am):
        for v in _versions(ws, cand.id, split):
            cm2, am2 = stored_metrics(ws, cand.id, split, v), stored_metrics(ws, active.id, split, v)
            if cm2 and am2:
                cm, am, dv = cm2, am2, v
                note = (f" Compared on an earlier version of the '{split}' labels ({v}); they have changed since "
                        f"(now {current}).")
                break
    if not (cm and am):
        who = "the candidate" if not cm else "the active model"
        return Verdict("unknown", margin, data_version=current, rule=rule, message=(
            f"{who} has no per-class scores on the '{split}' split at a data version the other was scored on; "
            "evaluate both on it to get a verdict."), **ids)
    ae, ce = scene_evaluation(ws, active.id, split, dv), scene_evaluation(ws, cand.id, split, dv)
    if (ae is None or ce is None) and compute and want_intervals and dv == current:
        try:
            if ce is None:
                evaluate_metrics(ws, cand.id, split, progress)
            if ae is None:
                evaluate_metrics(ws, active.id, split, progress)
        except Exception as e:  # noqa: BLE001 - the point verdict still stands; say why there is no interval
            note += f" No intervals: could not score both models on the '{split}' split ({e})."
        ae, ce = scene_evaluation(ws, active.id, split, dv), scene_evaluation(ws, cand.id, split, dv)
    bs = scene_intervals(ae, ce) if ae is not None and ce is not None else None
    if bs is not None:
        am, cm = ae["per_class"], ce["per_class"]
        note += f" Scores from both models' scene-by-scene evaluations of the '{split}' split."
    elif rule == "interval" or (compute and want_intervals):
        why = ("both models need a scene-by-scene evaluation of the split" if ae is None or ce is None
               else "their evaluations cover different scenes or classes, or a single scene")
        note += f" No per-class intervals ({why}): the margin rule decided."
    v = compare(am, cm, margin, intervals=bs, rule=rule, data_version=dv, **ids)
    v.message += note
    return v


def promote(
    ws: Workspace,
    candidate_id: str,
    override: bool = False,
    analyst: str = "",
    reason: str = "",
    *,
    split: str = "val",
    margin: float | None = None,
    compute: bool = True,
    progress: Callable | None = None,
    rule: str | None = None,
) -> Verdict:
    """Make ``candidate_id`` the active model if the regression gate lets it (``rule``: as :func:`check`; None =
    the workspace's setting).

    A ``pass`` verdict promotes. A ``flagged`` (or ``unknown``) verdict is refused unless ``override=True``,
    which needs the analyst's name and a reason; the override is recorded in the promotion history with the
    offending classes and the whole verdict. The promotion is refused with ConflictError when the active
    model changed while the verdict was computed.

    Returns:
        The verdict the decision was made on.

    Raises:
        GateRefused: Flagged/unknown candidate without ``override``.
        ValueError: Override without analyst name or reason.
        NotFoundError: Candidate not registered.
        ConflictError: The active model changed meanwhile.
    """
    v = check(ws, candidate_id, split=split, margin=margin, compute=compute, progress=progress, rule=rule)
    if v.active_id == candidate_id:
        return v
    if not v.passed:
        if not override:
            raise GateRefused(v)
        if not (analyst or "").strip() or not (reason or "").strip():
            raise ValueError("overriding the regression gate needs the analyst's name and a reason")
    ws.record_activation(candidate_id, action="promote", analyst=(analyst or "").strip(), reason=(reason or "").strip(),
                         verdict=v.to_dict(), override=not v.passed, expected_active=v.active_id)
    return v


def after_training(
    ws: Workspace,
    candidate_id: str,
    *,
    split: str = "val",
    auto_promote: bool = False,
    job_id: str | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Verdict, bool]:
    """Run the gate for a freshly trained checkpoint (scoring the active model on the same data if needed) and,
    when asked, auto-promote it — only on a ``pass`` verdict with no drop beyond the margin (a drop the
    ``interval`` rule let through as tile noise leaves the decision to an analyst).

    Returns:
        ``(verdict, promoted)``.
    """
    try:
        v = check(ws, candidate_id, split=split, compute=True)
    except Exception as e:  # noqa: BLE001 - the trained checkpoint is registered; never fail the job here
        v = Verdict("unknown", message=f"the regression gate could not run: {e}", candidate_id=candidate_id, split=split)
    if log:
        log(f"regression gate: {v.status} — {v.message}")
    promoted = False
    waved = [r["class"] for r in v.rows if r.get("within_noise")]
    if auto_promote and v.passed and waved and v.active_id != candidate_id:
        if log:
            log("not auto-promoted: the interval rule let through drops beyond the margin within the tile noise ("
                + ", ".join(waved) + "); an analyst decides")
    elif auto_promote and v.passed and v.active_id != candidate_id:
        try:
            ws.record_activation(candidate_id, action="promote", analyst=f"auto ({job_id})" if job_id else "auto",
                                 reason="auto-promoted after training: regression gate passed", verdict=v.to_dict(),
                                 expected_active=v.active_id)
            promoted = True
        except ConflictError as e:
            if log:
                log(f"not auto-promoted: {e}")
        if promoted and log:
            log(f"auto-promoted {candidate_id} to the active model")
    elif auto_promote and log and not v.passed:
        log(f"not auto-promoted: verdict '{v.status}' (an analyst may promote it with an override)")
    return v, promoted


# ------------------------------------------------------------------------------------------------ tables


def _gate_label(r: Mapping) -> str:
    if r["excluded"]:
        return f"excluded: {r['excluded']}"
    if r["offending"]:
        return "OFFENDING (within tile noise)" if r.get("within_noise") else "OFFENDING"
    return "ok (drop within tile noise)" if r.get("within_noise") else "ok"


def _interval_text(lo: float | None, hi: float | None) -> str:
    span = _span(lo, hi).strip()
    return f"{span} pp" if span else "—"


def verdict_table(v: Verdict):
    """Per-class IoU of active vs candidate: ``class, active IoU, candidate IoU, Δ IoU, interval, gate`` (pandas).

    The IoU columns and ``Δ IoU`` are fractions (format them with :func:`fmt_delta_pp`, as
    :func:`styled_verdict_table` does); ``interval`` is the Δ's paired scene-bootstrap interval as text in percentage
    points (``[−9.0, −1.0] pp``; ``—`` without one); ``gate`` is ``OFFENDING``, ``ok``, ``excluded: …``, or notes a
    drop beyond the margin whose interval holds 0.
    """
    import pandas as pd

    rows = [{
        "class": r["class"], "active IoU": r["active_iou"], "candidate IoU": r["candidate_iou"], "Δ IoU": r["delta"],
        "interval": _interval_text(r.get("lo"), r.get("hi")), "gate": _gate_label(r),
    } for r in v.rows]
    return pd.DataFrame(rows, columns=["class", "active IoU", "candidate IoU", "Δ IoU", "interval", "gate"])


def styled_verdict_table(v: Verdict):
    """:func:`verdict_table` as a pandas Styler: IoU in percent, Δ in signed percentage points (``−4.7 pp``), green
    when up, orange for a drop that does not offend (within the margin, or within the tile noise under the interval
    rule), red for an offending one; offending rows highlighted, excluded rows greyed."""
    df = verdict_table(v)
    offending = {r["class"] for r in v.rows if r["offending"]}
    margin = v.margin
    di = list(df.columns).index("Δ IoU")

    def delta_color(row) -> str:
        x = row["Δ IoU"]
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return ""
        if row["class"] in offending:
            return "color: #b00020; font-weight: bold"
        if fmt_delta_pp(x, margin=margin).startswith("0.0"):  # shown as "0.0 pp": no colour that hints at a sign
            return ""
        if x < 0:
            return "color: #c77700"
        return "color: #1b7a1b"

    def row_style(row) -> list[str]:
        if row["class"] in offending:
            out = ["background-color: #fbd5d5"] * len(row)
        elif str(row["gate"]).startswith("excluded"):
            out = ["color: #888888"] * len(row)
        else:
            out = [""] * len(row)
        out[di] = "; ".join(x for x in (out[di], delta_color(row)) if x)
        return out

    return (df.style.apply(row_style, axis=1)
            .format({"active IoU": fmt_pct, "candidate IoU": fmt_pct,
                     "Δ IoU": lambda x: fmt_delta_pp(x, margin=margin)}, na_rep="—"))


def history_table(promotions: Iterable[Promotion]):
    """The promotion history as a pandas DataFrame, newest first."""
    import pandas as pd

    rows = [{
        "when": p.created_at.replace("T", " ")[:19], "action": p.action, "from": p.from_id or "—", "to": p.to_id or "—",
        "analyst": p.analyst or "—", "gate": p.verdict or "—", "override": "yes" if p.override else "",
        "offending": ", ".join(p.offending), "reason": p.reason,
        "rolled back": f"by #{p.undone_by}" if p.undone_by else "", "#": p.id,
    } for p in promotions]
    cols = ["#", "when", "action", "from", "to", "analyst", "gate", "override", "offending", "reason", "rolled back"]
    return pd.DataFrame(rows, columns=cols)


__all__ = [
    "ABSENT",
    "DEFAULT_MARGIN",
    "DEFAULT_RULE",
    "MARGIN_SETTING",
    "RULES",
    "RULE_SETTING",
    "STATUSES",
    "GateRefused",
    "Verdict",
    "after_training",
    "check",
    "compare",
    "evaluate_metrics",
    "fmt_delta_pp",
    "fmt_margin_pp",
    "get_margin",
    "get_rule",
    "history_table",
    "per_class_iou",
    "promote",
    "scene_evaluation",
    "scene_evaluations_cached",
    "scene_intervals",
    "set_margin",
    "set_rule",
    "stored_metrics",
    "styled_verdict_table",
    "verdict_table",
]
