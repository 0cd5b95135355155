"""The Train page's checkpoint registry: every registered model at a glance, and what to do with one.

The table lists the checkpoints newest first: which one is active, which one a rollback returns to, their lineage
(parent), model, scheme, the validation mIoU recorded when each was trained (on its own validation data: compare two
on the same data through the gate), the workspace scenes each learned from, the job that made it. Picking a row
shows its lineage chain with what each step changed in the recipe (:func:`seghz.compare.recipe_diff`), the gate
against the active model with Promote (:func:`ui.train_gate.show_gate`: a checkpoint registered from a file could
not be promoted in the app before, only through the CLI), and Archive: the checkpoint leaves every picker and its
weights file is deleted, while its row stays for lineage and history
(:meth:`seghz.store.Workspace.archive_checkpoint`, which refuses the active model, the rollback target and a model
a queued or running job uses).
"""
from __future__ import annotations

import hashlib
from typing import Any

import streamlit as st

from seghz import gate, report
from seghz.compare import recipe_diff
from seghz.errors import ConflictError
from seghz.store import NotFoundError
from ui import train_gate
from ui.common import analyst_name

TABLE_KEY = "train_registry"  # + a hash of the ids shown
SHOW_ARCHIVED_KEY = "train_registry_archived"


def _lineage_lines(ws: Any, ck: Any) -> list[str]:
    """``name (id)`` of the checkpoint and each ancestor, with what its recipe changed against its parent."""
    lines = []
    chain = ws.lineage(ck.id)
    for i, c in enumerate(chain):
        parent = chain[i + 1] if i + 1 < len(chain) else None
        diff = recipe_diff(parent.recipe, c.recipe) if parent is not None and parent.recipe and c.recipe else ""
        lines.append(f"{'↳ ' if i else ''}**{c.name}** (`{c.id}`)"
                     + (f" — {c.archived_text()}" if c.archived else "")
                     + (f": {diff}" if diff else ": fine-tuned from the next, same recipe" if parent is not None and
                        parent.recipe and c.recipe else ""))
    if chain and chain[-1].parent_id:
        lines.append(f"↳ `{chain[-1].parent_id}` (no longer registered)")
    return lines


def registry_panel(ws: Any) -> None:
    """The registry (see the module docstring)."""
    st.subheader("Checkpoint registry")
    done = st.session_state.pop("train_reg_done", None)
    if done:
        st.success(done)
    show_archived = st.toggle("Show archived checkpoints", key=SHOW_ARCHIVED_KEY)
    cks = ws.list_checkpoints(include_archived=show_archived)
    if not cks:
        st.caption("No checkpoints registered: train one above, or `python -m seghz checkpoints add FILE`.")
        return
    active = ws.active_checkpoint()
    back = ws.rollback_target()
    _, learned, unknown = ws.lineage_learning(include_archived=True)  # archived rows show what they learned too
    table = report.registry_table(cks, active_id=active.id if active else None, rollback_id=back,
                                  learned=learned, unknown=unknown)
    st.caption("Newest first. val mIoU is each checkpoint's own validation score when it was trained; pick a row to "
               "compare it with the active model on this workspace's validation split (the gate), promote or "
               "archive it.")
    # the selection is a row number: a checkpoint added or archived meanwhile (a job finishing) would shift the rows
    # under it, and the details, Promote and Archive would be for another model. The key names the rows shown, so
    # a changed list starts with no selection.
    key = f"{TABLE_KEY}_{hashlib.sha1(' '.join(c.id for c in cks).encode()).hexdigest()[:10]}"
    event = st.dataframe(
        table.assign(**{"val mIoU": 100 * table["val mIoU"].astype(float)}), hide_index=True, key=key, on_select="rerun", selection_mode="single-row",
        column_config={"val mIoU": st.column_config.ProgressColumn("val mIoU", format="%.1f %%", min_value=0.0,
                                                                   max_value=100.0),
                       "trained on": st.column_config.TextColumn(
                           help="Workspace scenes it learned from, its parents' included (moving one of them to "
                                "val/test makes its scores there optimistic)")})
    rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    if not rows or rows[0] >= len(cks):
        st.caption("Pick a checkpoint in the table to see its lineage, gate it against the active model, promote "
                   "or archive it.")
        return
    ck = cks[rows[0]]
    with st.container(border=True):
        st.markdown(f"**{ck.name}** (`{ck.id}`) · {ck.arch}/{ck.encoder} · scheme **{ck.scheme}**")
        st.markdown("  \n".join(_lineage_lines(ws, ck)))
        if ck.train_scenes is not None:
            st.caption(f"Trained on: {', '.join(ck.train_scenes) or 'no workspace scene (trained elsewhere)'}.")
        if ck.archived:
            st.info(f"This checkpoint is {ck.archived_text()}: its weights are gone; it stays here for lineage and "
                    "history.")
            return
        if active is not None and ck.id == active.id:
            st.success("This checkpoint is the active one.")
        else:
            train_gate.show_gate(ws, ck, active, prefix="train_reg_", settings=False)
        _archive_controls(ws, ck, active, back)


def _archive_controls(ws: Any, ck: Any, active: Any, back: str | None) -> None:
    why_not = ("it is the active model" if active is not None and ck.id == active.id
               else "a rollback would return to it" if ck.id == back
               else "enter your analyst name in the sidebar first (archiving is recorded with it)" if not analyst_name()
               else None)
    with st.popover("Archive…", disabled=why_not is not None,
                    help=f"Not now: {why_not}." if why_not else "Retire this checkpoint: it leaves every picker and "
                         "its weights file is deleted; its lineage, scores and history stay."):
        st.markdown(f"Archive **{ck.name}** (`{ck.id}`)? Its weights file is **deleted**; it cannot be promoted or "
                    "used again. Its row stays, so lineage and history still name it.")
        reason = st.text_input("Why (recorded)", key=f"train_reg_archive_reason_{ck.id}")
        if st.button("Archive and delete its weights", key=f"train_reg_archive_{ck.id}", type="primary"):
            try:
                ws.archive_checkpoint(ck.id, analyst=analyst_name(), reason=reason)
            except (ConflictError, NotFoundError, ValueError) as e:
                st.error(str(e))
            else:
                kept = ws.checkpoint_path(ck).exists()  # outside the workspace, shared, or not deletable: kept
                st.session_state["train_reg_done"] = (
                    f"Archived {ck.name} (`{ck.id}`); " + (f"its weights file stays at {ws.checkpoint_path(ck)} (outside "
                                                           "the workspace's checkpoints, or used by another checkpoint)."
                                                           if kept else "its weights file was deleted."))
                st.rerun()


def active_model_panel(ws: Any) -> None:
    """The active model's section: "Roll back to …" (asks first, like Archive) and the promotion history."""
    st.subheader("Active model: promotions and rollback")
    done = st.session_state.pop("train_rollback_done", None)
    if done:
        st.success(done)
    target = ws.rollback_target()
    if target is not None:
        _rollback_controls(ws, target)
    else:
        st.caption("Nothing to roll back: no earlier active checkpoint is recorded.")
    history = ws.promotion_history(limit=50)
    if history:
        st.dataframe(gate.history_table(history), hide_index=True, key="train_history")
    else:
        st.caption("No promotions recorded yet.")


def _rollback_controls(ws: Any, target_id: str) -> None:
    """"Roll back to X…": a popover that says which model becomes active in place of which, that the rollback is
    recorded with the analyst's name, and a button that does it (:meth:`seghz.store.Workspace.rollback`)."""
    try:
        target = ws.get_checkpoint(target_id)
    except NotFoundError:
        st.caption(f"The checkpoint active before this one (`{target_id}`) is no longer registered: nothing to roll "
                   "back to.")
        return
    active = ws.active_checkpoint()
    name = analyst_name()
    why_not = (f"it is {target.archived_text()}; promote another checkpoint instead" if target.archived
               else "enter your analyst name in the sidebar first (a rollback is recorded with it)" if not name
               else None)
    with st.popover(f"Roll back to {target.name}…", disabled=why_not is not None,
                    help=f"Not now: {why_not}." if why_not else "Return to the checkpoint that was active before the "
                         "current one (asks first)."):
        st.markdown(f"Roll back to **{target.name}** (`{target.id}`)? It becomes the **active model**"
                    + (f" in place of **{active.name}** (`{active.id}`)" if active is not None else "")
                    + ": the Map, Evaluate and Labels pages predict with it from now on, and new fine-tunes start "
                      "from it. The rollback is recorded in the promotion history with your name "
                      f"(**{name}**); the current model stays registered and can be promoted again.")
        reason = st.text_input("Why (recorded, optional)", key="train_rollback_reason")
        if st.button(f"Roll back to {target.name}", key="train_rollback", type="primary"):
            try:
                now = ws.rollback(analyst=name, reason=reason)
            except (NotFoundError, ConflictError) as e:
                st.error(str(e))
            else:
                st.session_state["train_rollback_done"] = f"Rolled back: {now.name} (`{now.id}`) is the active model."
                st.rerun()


__all__ = ["active_model_panel", "registry_panel"]
