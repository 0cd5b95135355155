"""Streamlit glue for a candidate checkpoint made by a retrain or a head refit, shared by the Labels and Train pages:
the refit's accuracies (corrected pixels and existing labels, before/after, with the warning) and the parent's and
candidate's validation scores on the same labels, and the regression gate's verdict on the candidate (one banner,
one wording, on both pages). Numbers come from :mod:`seghz.candidate`.

Tables show fractions as percentages and differences in percentage points, and so does the gate's text (its verdict,
its offending classes and margin: ``Buildings (−4.7 pp) — margin 2.0 pp``); a value that was not recorded reads "—".
"""
from __future__ import annotations

import streamlit as st

from seghz import candidate, gate, report
from seghz.metrics import fmt_pct, signed_pp


def styled(df, pct_cols, pp_cols):
    """A table with ``pct_cols`` as percentages, ``pp_cols`` as signed points, and "—" for missing values."""
    fmt: dict = {c: fmt_pct for c in pct_cols}
    fmt.update({c: signed_pp for c in pp_cols})
    return df.style.format(fmt, na_rep="—")


def show_refit_accuracy(result: dict | None, new_metrics: dict | None, *, key: str) -> dict:
    """The refit's accuracy on the corrected pixels and on the existing labels, before and after, side by side, and a
    warning when the existing labels lost more than :data:`seghz.candidate.CONTEXT_DROP_WARN`; returns the numbers."""
    acc = candidate.refit_accuracy(result, new_metrics)
    st.caption(candidate.refit_accuracy_text(acc))
    st.dataframe(styled(candidate.refit_accuracy_table(acc), ["before", "after"], [candidate.CHANGE_COLUMN]),
                 hide_index=True, key=f"{key}_acc")
    warning = candidate.refit_warning(acc)
    if warning:
        st.warning(warning)
    elif None in acc["context"]:
        st.caption("The accuracy on the existing labels was not recorded for this refit (no context sample, or a job "
                   "from an older version): judge it by the validation scores and the regression gate.")
    return acc


def show_validation_comparison(ws, old, new, *, split: str = "val", labels: tuple[str, str], key: str) -> bool:
    """The parent's and the candidate's validation scores on the same labels (or why there are none); True when a
    table was shown."""
    table, note = candidate.validation_comparison(ws, old, new, split=split, labels=labels)
    if table is None:
        st.caption(note)
        return False
    st.caption(f"Validation scores before / after. {note}")
    st.dataframe(styled(table, list(labels), ["Δ (pp)"]), hide_index=True, key=key,
                 column_config={"Δ (pp)": st.column_config.Column(help=DELTA_HELP)})
    return True


DELTA_HELP = ("After − before in percentage points, from the unrounded IoUs (the gate decides on those): it can "
              "differ by 0.1 pp from the difference of the two rounded percentages beside it.")
GATE_ALERTS = {"pass": "success", "flagged": "error", "unknown": "warning"}  # verdict status -> st.<alert>


def show_gate_verdict(verdict, cur, *, compact: bool = False, key: str | None = None) -> None:
    """The regression gate's verdict (a :class:`seghz.gate.Verdict`) on a candidate against the active model ``cur``
    (a registry checkpoint or None): the banner (:func:`seghz.candidate.gate_verdict_text`; pass: success, flagged:
    error, unknown: warning), then, unless ``compact``, the per-class table (``key``), the intervals and the
    offending classes."""
    getattr(st, GATE_ALERTS[verdict.status])(candidate.gate_verdict_text(verdict, cur.name if cur else None))
    if compact or not verdict.rows:
        return
    st.dataframe(gate.styled_verdict_table(verdict), hide_index=True, key=key,
                 column_config={"Δ IoU": st.column_config.Column(help=DELTA_HELP)})
    if verdict.scenes:
        st.caption(f"Intervals: {100 * (verdict.level or 0.95):.0f} % paired bootstrap over {verdict.scenes} "
                   f"validation scenes (both models on the same draws); rule '{verdict.rule}'.")
    if verdict.offending:
        drops = ", ".join(f"**{o['class']}** ({gate.fmt_delta_pp(o['delta'], margin=verdict.margin)})"
                          for o in verdict.offending)
        st.caption(f"Offending classes: {drops} — margin {gate.fmt_margin_pp(verdict.margin)} of IoU.")


def training_scores_caveat(cur, new, role: str = "active") -> str | None:
    """Why the validation scores ``cur`` (the active model, or the ``role`` it plays: "parent") and ``new`` recorded
    when each was trained cannot be
    ranked against each other (None when they can: both measured on the same version of this workspace's
    validation split, with the same class scheme). Each checkpoint records its scores on the validation data of its
    own training run; a checkpoint registered from a file (the shipped synthetic demo model, a model trained
    elsewhere) records no workspace data version, so nothing says its scores and another's share any data."""
    if cur is None or new is None:
        return None
    if cur.scheme != new.scheme:
        return f"they use different class schemes ({role}: {cur.scheme}, new: {new.scheme})"
    a, b = cur.val_data_version, new.val_data_version
    if a and b:
        return None if a == b else (f"they were measured on different versions of the validation split (active: "
                                    f"({role}: `{a}`, new: `{b}`): its scenes or labels changed in between")
    unknown = [f"the {who} model ({ck.name})" for who, ck in ((role, cur), ("new", new)) if not ck.val_data_version]
    return (f"the scores of {' and '.join(unknown)} were measured on validation data this workspace does not know (a "
            "checkpoint registered from a file, such as the synthetic demo model, brings scores on its own "
            "validation data)")


def show_training_scores(cur, new, role: str = "active") -> None:
    """The validation scores the active model ``cur`` and a new checkpoint recorded when each was trained, in an
    expander. With the difference (Δ) only when both were measured on the same validation data; otherwise a plain
    caveat above the table, no Δ, and a pointer to the regression gate, which scores both on the same data.
    ``role``: what ``cur`` is to ``new`` when it is not the active model ("parent": ``new`` is already active)."""
    caveat = training_scores_caveat(cur, new, role)
    title = "Scores recorded during training" + (" — on different validation data, not comparable" if caveat else "")
    with st.expander(title):
        labels = (f"{role} ({cur.name})" if cur else f"{role} (none)", f"new ({new.name})")
        table = report.compare_checkpoints(cur.metrics if cur else None, new.metrics, labels=labels)
        pct = st.column_config.NumberColumn(format="percent")
        config = {labels[0]: pct, labels[1]: pct}
        if caveat or cur is None:
            table = table.drop(columns=["Δ (pp)"])
        if caveat:
            st.warning(f"**These two columns are not comparable:** {caveat}. A difference between them says nothing "
                       "about which model is better, so none is shown."
                       + (" Compare the two models with the regression gate below: it scores both on this workspace's "
                          "validation split, the same data for both." if role == "active" else ""))
        elif cur is not None:
            st.caption(f"Both measured on the same validation data (version `{new.val_data_version}`)."
                       + (" The regression gate below decides on per-class IoU with its margin." if role == "active"
                          else ""))
            config["Δ (pp)"] = st.column_config.NumberColumn(format="%+.1f",
                                                             help=f"New − {role}, in percentage points.")
        st.dataframe(table, hide_index=True, column_config=config, key=f"train_scores_{new.id}")


__all__ = ["GATE_ALERTS", "show_gate_verdict", "show_refit_accuracy", "show_training_scores", "show_validation_comparison",
           "styled", "training_scores_caveat"]
