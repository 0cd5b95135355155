"""The Home page's Scenes panel: every scene with its split, editable; what a move does before it is made.

Moving scenes between splits is done here (or with ``python -m seghz scenes move``): the analyst edits the split
column (or asks for the study's greedy max-entropy validation split), reads the consequences
(:func:`seghz.scene_splits.move_effects`: leakage of scenes a model learned from into val/test, the val split's
scores going stale, an empty split, running jobs), and applies the moves under their name
(:meth:`seghz.store.Workspace.move_scenes`), which records who moved what and why.
"""
from __future__ import annotations

from urllib.parse import quote

import pandas as pd
import streamlit as st

from seghz import scene_splits
from seghz.store import SPLITS, Workspace
from ui.common import analyst_name, analyst_problem

PLAN_KEY = "seghz_split_plan"  # {scene id: split}: a proposal not yet applied (it pre-fills the editor)
GEN_KEY = "seghz_split_editor_gen"  # bumped to give the editor fresh rows (after a proposal, apply or discard)
DONE_KEY = "seghz_split_done"  # the message of the last applied moves, shown once
NOTE_KEY = "seghz_split_proposal_note"  # (editor generation, text): what the last proposal chose, while it stands


def _editor_key() -> str:
    return f"seghz_scene_splits_{st.session_state.get(GEN_KEY, 0)}"


def _reset_editor(plan: dict[str, str] | None = None) -> None:
    st.session_state[PLAN_KEY] = dict(plan or {})
    st.session_state[GEN_KEY] = st.session_state.get(GEN_KEY, 0) + 1


def scene_table(ws: Workspace, scenes, plan: dict[str, str]) -> pd.DataFrame:
    """One row per scene, its split as planned (``plan`` over the current split)."""
    rows = []
    _, learned, unknown = ws.lineage_learning()  # one walk of the registry, one query for the label versions
    unsure = len(unknown)
    versions = ws.latest_label_versions()
    for s in scenes:
        known = sum(s.id in sc for sc in learned.values())
        rows.append({
            "scene": s.id, "split": plan.get(s.id, s.split), "map": f"Map?scene={quote(s.id)}", "name": s.name, "size": f"{s.width}×{s.height}",
            "scheme": s.scheme, "labelled": bool(s.label_path), "label version": versions.get(s.id, 0),
            "models trained on it": f"{known}" + (f" (+{unsure} unknown)" if unsure else ""),
            "georeferenced": s.crs is not None, "synthetic": s.synthetic,
        })
    return pd.DataFrame(rows)


def wanted_moves(scenes, edited: pd.DataFrame) -> dict[str, str]:
    """``{scene id: split}`` where the edited table differs from the scenes' current splits."""
    current = {s.id: s.split for s in scenes}
    return {str(r["scene"]): str(r["split"]) for _, r in edited.iterrows()
            if str(r["scene"]) in current and str(r["split"]) != current[str(r["scene"])]}


def scenes_panel(ws: Workspace) -> None:
    """The Scenes expander of the Home page (see the module docstring)."""
    scenes = ws.list_scenes()
    ss = st.session_state
    plan = {k: v for k, v in (ss.get(PLAN_KEY) or {}).items() if any(s.id == k for s in scenes)}
    done = ss.pop(DONE_KEY, None)
    note = ss.get(NOTE_KEY)
    note = note[1] if note and note[0] == ss.get(GEN_KEY, 0) else None  # a proposal stands until the table resets
    with st.expander(f"Scenes ({len(scenes)}) — splits", expanded=bool(plan) or bool(done) or bool(note)):
        if done:
            st.success(done)
        st.caption(" · ".join(f"**{k}**: {v}" for k, v in scene_splits.PURPOSE.items())
                   + ". Change a scene's split in the table; what the move does is shown before you apply it.")
        edited = st.data_editor(
            scene_table(ws, scenes, plan), key=_editor_key(), hide_index=True, width="stretch",
            disabled=[c for c in ("scene", "map", "name", "size", "scheme", "labelled", "label version",
                                  "models trained on it", "georeferenced", "synthetic")],
            column_config={
                "split": st.column_config.SelectboxColumn("split", options=list(SPLITS), required=True,
                                                          help="train / val / test / none: click to change"),
                "map": st.column_config.LinkColumn("map", display_text="open", width="small",
                                                   help="Open the scene on the Map page (a new tab)"),
                "models trained on it": st.column_config.TextColumn(
                    help="Registered models that learned from this scene (themselves or through the model they were "
                         "fine-tuned from). '+N unknown': models that do not record their training scenes (registered "
                         "from a file, or fine-tuned from one) may have learned from it too"),
            },
        )
        wanted = wanted_moves(scenes, edited)
        _proposal_controls(ws, scenes)
        if note:
            st.caption(note)
        if not wanted:
            if note and not plan:
                st.info("The proposal matches the current splits: nothing to move.")
            elif plan:
                st.info("No planned moves: the table matches the current splits.")
            _history(ws)
            return
        st.markdown(f"**{len(wanted)} planned move(s)**")
        st.dataframe(pd.DataFrame([{"scene": sid, "from": frm, "to": to}
                                   for sid, (frm, to) in scene_splits.planned_moves(ws, wanted).items()]),
                     hide_index=True)
        effects = scene_splits.move_effects(ws, wanted)
        for e in effects:
            (st.warning if e.level == "warning" else st.info)(e.text)
        warned = any(e.level == "warning" for e in effects)
        name = analyst_name()
        problem = analyst_problem(name)
        reason = st.text_input("Why (recorded with the move)" + (" — required: see the warnings above" if warned else ""),
                               key="seghz_split_reason",
                               placeholder="e.g. the study's validation split; scene re-labelled")
        if problem:
            st.caption(problem.replace("every label edit records who made it", "every split move records who made it"))
        elif warned and not reason.strip():
            st.caption("These moves have warnings above (leakage, an emptied split, running jobs): say why you make "
                       "them anyway; the reason is recorded with the move.")
        c1, c2 = st.columns(2)
        if c1.button(f"Apply {len(wanted)} move(s)", type="primary",
                     disabled=problem is not None or (warned and not reason.strip()), key="seghz_split_apply"):
            moved = ws.move_scenes(wanted, analyst=name, reason=reason)
            ss[DONE_KEY] = (f"Moved {len(moved)} scene(s): "
                            + ", ".join(f"{m.scene_id} {m.from_split} → {m.to_split}" for m in moved)
                            + f" (recorded under {name}).")
            _reset_editor()
            st.rerun()
        if c2.button("Discard", key="seghz_split_discard"):
            _reset_editor()
            st.rerun()
        _history(ws)


def _proposal_controls(ws: Workspace, scenes) -> None:
    """The study's validation split (greedy max class entropy) as a proposal that pre-fills the table."""
    pool = [s for s in scenes if s.split in ("train", "val")]
    if len(pool) < 2:
        return
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    default = max(1, sum(s.split == "val" for s in pool) or round(0.2 * len(pool)))
    k = c1.number_input("Scenes in val", min_value=1, max_value=len(pool) - 1, value=min(default, len(pool) - 1),
                        key="seghz_split_k",
                        help="Chosen among the labelled train and val scenes so the pooled class distribution of val "
                             "has the most entropy (every class represented as evenly as possible); the rest go to "
                             "train. Test scenes stay where they are.")
    prefer = c2.checkbox("Prefer scenes no model learned from", value=True, key="seghz_split_prefer_unlearned",
                         help="A model scored on a scene it was trained on looks better than it is, and the "
                              "regression gate would judge the active model on its own training data. Off: the "
                              "plain greedy choice, as in the study.")
    if c2.button("Propose a validation split (study: greedy max class entropy)", key="seghz_split_propose"):
        try:
            prop = scene_splits.propose_val(ws, int(k), prefer_unlearned=prefer)
        except ValueError as e:
            st.error(str(e))
            return
        st.session_state[DONE_KEY] = None
        _reset_editor(prop.moves)
        st.session_state[NOTE_KEY] = (st.session_state[GEN_KEY], scene_splits.proposal_note(prop))
        st.rerun()


def _history(ws: Workspace) -> None:
    hist = ws.split_history(limit=10)
    if hist:
        st.caption("Recent moves")
        st.dataframe(pd.DataFrame([{"when (UTC)": h.created_at[:19].replace("T", " "), "scene": h.scene_id,
                                    "from": h.from_split, "to": h.to_split, "by": h.analyst or "—",
                                    "why": h.reason} for h in hist]), hide_index=True)
