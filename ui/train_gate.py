"""The regression gate on the Train page: its settings (margin and rule, stored in the workspace) and a candidate's
verdict against the active model with Promote (or a recorded override).

Shown for a finished job's checkpoint (keys ``train_…``) and for the checkpoint picked in the registry (keys
``train_reg_…``); the settings expander is drawn once, with the job's verdict (the registry's shows the settings as
a caption, so no widget key is drawn twice).
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from seghz import gate
from seghz.errors import ConflictError
from seghz.store import NotFoundError
from ui.candidates import show_gate_verdict
from ui.common import analyst_name

PROMOTED_KEY = "train_promoted_msg"  # what the last Promote did, shown once by the run after it
GATE_RULE_TEXT = {
    "margin": "its IoU drops by more than the margin (the study's rule)",
    "interval": "its IoU drops by more than the margin and the drop is beyond the tile noise "
                "(95 % paired bootstrap over the validation scenes)",
}


def gate_settings(ws: Any, editable: bool = True) -> None:
    """The workspace's regression-gate margin and rule, editable; saved when the analyst changes them (callbacks,
    so a setting changed elsewhere is shown, never written back). ``editable=False``: the caption only."""
    margin, rule = gate.get_margin(ws), gate.get_rule(ws)
    if editable:
        ss = st.session_state
        # show the stored values: a change made in another session must not be undone by this one's stale widgets
        # the margin in percentage points, as the verdict and the tables show IoU differences (stored as a fraction)
        ss["train_gate_margin"] = min(max(100 * float(margin), 0.0), 100.0)
        ss["train_gate_rule"] = rule
        with st.expander("Gate settings"):
            st.number_input("Margin: the largest allowed drop of a class's IoU (percentage points)", min_value=0.0,
                            max_value=100.0, step=0.5, format="%.1f", key="train_gate_margin",
                            on_change=lambda: gate.set_margin(ws, float(ss["train_gate_margin"]) / 100))
            st.radio("Flag a class when", gate.RULES, format_func=GATE_RULE_TEXT.get, key="train_gate_rule",
                     on_change=lambda: gate.set_rule(ws, ss["train_gate_rule"]),
                     help="Under the interval rule a large drop of a class seen in few scenes can pass (its interval "
                          "is wide); such a candidate is never auto-promoted, an analyst decides.")
    st.caption(f"Gate: margin {gate.fmt_margin_pp(margin)} of IoU, rule '{rule}'."
               + ("" if editable else " (Change them under Gate settings with a job's result above.)"))


def synthetic_yardstick(ws: Any, split: str) -> str | None:
    """Why the gate's verdict says little about the analyst's imagery: every labelled scene of ``split`` is a
    synthetic demo scene (None otherwise, or when the split is empty: the gate says so itself)."""
    scenes = ws.list_scenes(split)
    if not scenes or not all(s.synthetic for s in scenes):
        return None
    return (f"The **{split}** split holds only synthetic demo scenes ({len(scenes)}): this gate compares the two models "
            "on generated data, not on your imagery. A model trained on real scenes can be flagged here and still be "
            f"the better one for your work. Move a labelled real scene into **{split}** on the Home page to gate on it.")


def show_gate(ws: Any, ck: Any, cur: Any, split: str = "val", *, prefix: str = "train_", settings: bool = True) -> None:
    """The regression-gate verdict of a candidate against the active model on ``split`` (the one its job gated on),
    then Promote (or override). Widget keys start with ``prefix``.

    ``cur`` is the active model the caller drew the page with; the verdict is always against the active model now
    (a promote made meanwhile -- this page's other panel, another tab, a job's auto-promote -- changes it): when they
    differ the panel says so, and the banner names the model the verdict was computed against."""
    now = ws.active_checkpoint()
    if (now.id if now else None) != (cur.id if cur else None):
        st.info(f"The active model changed to **{now.name if now else 'none'}** since this panel was drawn: the "
                "verdict below is recomputed against it.")
        cur = now
    if cur is not None and cur.id == ck.id:
        st.success("This checkpoint is the active one.")
        return
    st.markdown("**Regression gate** (per-class IoU on the validation split, candidate vs active model)")
    yardstick = synthetic_yardstick(ws, split)
    if yardstick:
        st.warning(yardstick)
    gate_settings(ws, editable=settings)
    verdict = gate.check(ws, ck.id, split=split)
    same_scheme = cur is not None and cur.scheme == ck.scheme
    if verdict.status == "unknown" and same_scheme:
        label, key = "Score both models on the validation split", f"{prefix}gate_eval_{ck.id}"
    elif verdict.rows and verdict.scenes is None and same_scheme and not gate.scene_evaluations_cached(ws, ck.id):
        label, key = ("Add intervals (scores both models on the validation split, scene by scene)",
                      f"{prefix}gate_intervals_{ck.id}")
    else:
        label = key = None
    if key and st.button(label, key=key, help="Scene-by-scene scores give each class's drop a paired bootstrap "
                                              "interval: is it beyond the tile noise?"):
        with st.spinner("Evaluating both models on the validation split…"):
            verdict = gate.check(ws, ck.id, split=split, compute=True, intervals=True)
    if verdict.active_id != (cur.id if cur else None):  # promoted elsewhere while it was computed: name that one
        try:
            cur = ws.get_checkpoint(verdict.active_id) if verdict.active_id else None
        except NotFoundError:
            cur = None
    show_gate_verdict(verdict, cur, key=f"{prefix}gate_table_{ck.id}")
    override, reason = False, ""
    if not verdict.passed:
        override = st.checkbox("Override the regression gate and promote anyway", key=f"{prefix}override_{ck.id}")
        reason = st.text_input("Reason for the override (recorded)", key=f"{prefix}override_reason_{ck.id}",
                               disabled=not override)
        if override and not analyst_name():
            st.warning("Enter your analyst name in the sidebar: overrides are recorded with it.")
    if not analyst_name() and not override:  # a promotion is an audit event: it is recorded with who made it
        st.caption("Enter your analyst name in the sidebar to promote: every promotion is recorded with it.")
    ready = bool(analyst_name()) and (verdict.passed or (override and reason.strip()))
    if st.button("Promote to active", key=f"{prefix}promote_{ck.id}", type="primary", disabled=not ready):
        try:
            gate.promote(ws, ck.id, override=override, analyst=analyst_name(), reason=reason, compute=False)
        except (gate.GateRefused, ValueError, ConflictError, NotFoundError) as e:
            st.error(str(e))
        else:  # the whole page again: every verdict, the sidebar and the registry are drawn against the new model
            st.session_state[PROMOTED_KEY] = (
                f"Promoted **{ck.name}** (`{ck.id}`): it is the active model now"
                + (f" in place of {cur.name} (`{cur.id}`)" if cur is not None else "")
                + ". Every gate verdict on this page is against it.")
            st.rerun()


def show_promoted() -> None:
    """The last Promote's message, once (the run after the promote: :func:`show_gate` reruns the page)."""
    done = st.session_state.pop(PROMOTED_KEY, None)
    if done:
        st.success(done)


__all__ = ["GATE_RULE_TEXT", "PROMOTED_KEY", "gate_settings", "show_gate", "show_promoted"]
