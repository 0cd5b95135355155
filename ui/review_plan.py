"""The Labels page's *Review plan — all scenes* panel: which scene to open next, and the noise-queue items of every
scene ranked together with the time they take (``seghz.review.plan`` computes it; this module lays it out).

The panel sits at the top of the Labels page, collapsed. It shows:

* the time budget (minutes) and the review pace it is spent at (measured from the verdict log, or the default, with
  where the number comes from);
* the scenes with a saved queue, best first (fresh queues before out-of-date ones), each with an **Open** button that
  opens the scene on this page (``ui.labels.OPEN_SCENE_KEY``, the page's own "open this scene" request: the page
  applies strokes left on the canvas to their own scene first, as any scene switch) with its noise queue from the top;
* the items that fit in the budget, ranked across scenes, with the cumulative minutes;
* the labelled scenes without a (fresh) queue, and a button that builds them in a background ``queues`` job
  (``seghz.jobs.kinds.queues_job``; progress and Cancel in a fragment polling every 2 s while it runs, as the
  Evaluate page's background evaluations; a second click while the same build runs submits nothing).

Streamlit quirks kept in mind: the browser sends a radio's value back as its option *text*, so the split radio's
texts never change; the plan is recomputed only for scenes whose label, queue, verdicts or active model changed
(a per-session cache of :func:`seghz.review.plan.review_plan`), so the page does not read 600 queues on every rerun.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from seghz.errors import SegHZError
from seghz.review import plan as rp
from ui.labels import OPEN_SCENE_KEY

CACHE_KEY = "lbl_plan_cache"  # scene id -> (signature, SceneState): see seghz.review.plan.review_plan
FLASH_KEY = "lbl_plan_flash"
SPLIT_KEY = "lbl_plan_split"
BUDGET_KEY = "lbl_plan_budget"
SPLITS = {"train": "training scenes", "all": "all scenes"}  # option -> its (never changing) text
SCENES_SHOWN = 8  # scenes listed with an Open button; the table below holds all of them
JOBS_SHOWN = 2
POLL_S = 2


def on_open(scene_id: str) -> None:
    """Open a scene on the Labels page with its noise queue from the top (the page reads the request first thing)."""
    ss = st.session_state
    ss[OPEN_SCENE_KEY] = scene_id
    ss.pop(f"lbl_q_page_{scene_id}", None)  # the queue's page picker back at page 1: the best items first


def on_build(ws: Any, checkpoint_id: str, scene_ids: list[str]) -> None:
    """Submit the "queues" job for ``scene_ids`` with the Noise queue section's TTA and threshold (unless the same
    build is queued or running)."""
    from seghz.jobs.kinds import submit_queues_job

    ss = st.session_state
    config = {"checkpoint_id": checkpoint_id, "scenes": list(scene_ids), "tta": ss.get("lbl_q_tta", "none"),
              "threshold": float(ss.get("lbl_q_threshold", 0.5)), "held_out": None, "origin": "labels-plan"}
    try:
        jid, created = submit_queues_job(ws, config)
    except (SegHZError, ValueError, ImportError, OSError) as e:
        ss[FLASH_KEY] = ("error", f"Could not start the queue build: {e}")
        return
    if not created:
        ss[FLASH_KEY] = ("info", (f"The same queue build is already running (job `{jid}`): not submitted again; its "
                                 "progress is below."))
        return
    ss[FLASH_KEY] = ("success", (f"Queue build job `{jid}` submitted for {len(scene_ids)} scene(s): it runs in the "
                                "background (progress below) and goes on if you leave the page."))


def _stale_note(s: rp.SceneSummary) -> str:
    return f" · ⚠ out of date ({s.stale_reason}): ranked after the fresh queues" if s.stale else ""


def scene_line(s: rp.SceneSummary, spi: float) -> str:
    """``**farm 3** (train) · 12 items, 3,400 px · top score 88.1 · ~4.0 min``."""
    top = "—" if s.top_score is None else f"{s.top_score:.1f}"
    return (f"**{s.scene_name}** ({s.split}) · {s.pending} item(s), {s.pending_px:,} px · top score {top} · "
            f"~{rp.fmt_minutes(s.pending * spi)}{_stale_note(s)}")


def scenes_frame(plan: rp.ReviewPlan) -> pd.DataFrame:
    """The per-scene summary as a table (the order of :attr:`ReviewPlan.scenes`)."""
    return pd.DataFrame([{"scene": s.scene_name, "split": s.split, "items to review": s.pending,
                          "pixels": s.pending_px, "top score": s.top_score, "est. min": round(s.est_minutes, 1),
                          "queue": "out of date: " + s.stale_reason if s.stale else "fresh",
                          "built with": s.checkpoint_id} for s in plan.scenes])


def items_frame(plan: rp.ReviewPlan) -> pd.DataFrame:
    """The ranked items within the budget as a table, with the cumulative minutes."""
    return pd.DataFrame([{"rank": r.rank, "cum. min": round(r.cumulative_s / 60.0, 1), "scene": r.scene_name,
                          "split": r.split, "label → model": f"{r.label_class} → {r.predicted_class}",
                          "pixels": r.pixels, "score": round(r.score, 2),
                          "rows": f"{r.bbox[0]}–{r.bbox[2] - 1}", "columns": f"{r.bbox[1]}–{r.bbox[3] - 1}",
                          "queue": "out of date" if r.stale else "fresh"} for r in plan.items])


def to_build(ws: Any, plan: rp.ReviewPlan, active: Any) -> tuple[list[str], int, int]:
    """The scenes a build would score with ``active``: ``(ids, without a queue, out of date)``, of its scheme only."""
    if active is None:
        return [], 0, 0
    scheme = {s.id: s.scheme for s in ws.list_scenes(plan.split)}
    missing = [sid for sid in plan.no_queue if scheme.get(sid) == active.scheme]
    stale = [s.scene_id for s in plan.scenes if s.stale and scheme.get(s.scene_id) == active.scheme]
    return missing + stale, len(missing), len(stale)


def show_jobs(ws: Any, watching: bool) -> None:
    """The "queues" jobs of the workspace: progress and Cancel while one runs, how the last one ended. When the job
    being watched ends, the whole page reruns so the plan shows the new queues."""
    from seghz.jobs import runner
    from ui.evaluate_jobs import job_outcome, job_progress

    runner.refresh_job_states(ws)
    jobs = [j for j in ws.list_jobs(limit=50) if j.kind == "queues"][:JOBS_SHOWN]
    live = [j for j in jobs if j.active]
    if watching and not live:
        st.rerun()  # it ended: rerun the page, the plan reads the new queues
    slot = st.empty()
    if not jobs:
        return
    with slot.container():
        running_now = ws.list_jobs(status="running") if any(j.status == "queued" for j in live) else []
        for j in live:
            job_progress(ws, j, "queue build", f"lbl_plan_cancel_{j.id}", running_now)
        if not live:
            last = jobs[0]
            if last.status == "done":
                res = last.result or {}
                failed = res.get("failed") or []
                st.caption(f"The last queue build (job `{last.id}`) built {len(res.get('built') or [])} queue(s)"
                           + (f", skipped {len(res['skipped'])} scene(s)" if res.get("skipped") else "")
                           + (f"; {len(failed)} failed: " + ", ".join(
                               f"{sid} ({(res.get('scenes') or {}).get(sid, {}).get('message', '')[:120]})"
                               for sid in failed) if failed else "") + ".")
            else:
                job_outcome(last, "queue build")


def review_plan_panel(ws: Any, active: Any, analyst: str | None) -> None:
    """The *Review plan — all scenes* expander (module docstring). ``active``: the active checkpoint (None: the plan
    is shown, nothing can be built); ``analyst``: whose own review pace is used when the log gives one."""
    from seghz.jobs import runner
    from ui.evaluate_jobs import show_flash

    ss = st.session_state
    runner.refresh_job_states(ws)  # a build whose worker died must not keep the Build button disabled
    live = any(j.active for j in ws.list_jobs(limit=50) if j.kind == "queues")
    # collapsed by default, and never expanded by code: a changing ``expanded`` would fold it under the analyst
    with st.expander("Review plan — all scenes", expanded=False):
        st.caption("The noise-queue items of every scene, ranked together by score: the worst labels of the whole "
                   "workspace first, with the time it takes to get to each. Out-of-date queues are ranked after the "
                   "fresh ones. Open a scene to judge its items below.")
        c1, c2 = st.columns([2, 1])
        split = c1.radio("Scenes", list(SPLITS), key=SPLIT_KEY, format_func=SPLITS.get, horizontal=True,
                         help="Training scenes: the ones the retrain learns from. All scenes: every split.")
        budget_min = c2.number_input("Time budget (minutes)", min_value=1, max_value=24 * 60, value=30, step=5,
                                     key=BUDGET_KEY, help="Items whose cumulative review time fits in it are listed.")
        try:
            plan = rp.review_plan(ws, split=None if split == "all" else split,
                                  active_id=active.id if active is not None else None,
                                  budget_s=float(budget_min) * 60.0, analyst=(analyst or "").strip() or None,
                                  cache=ss.setdefault(CACHE_KEY, {}))
        except (SegHZError, OSError, ValueError) as e:
            st.error(f"Could not make the review plan: {e}")
            return
        st.caption(f"Review pace: **{plan.seconds_per_item:.0f} s an item** ({plan.pace_source}). "
                   f"{plan.total_items} item(s) to review in all, about {rp.fmt_minutes(plan.total_s)}"
                   + (f"; {plan.stale_items} of them from out-of-date queues" if plan.stale_items else "") + ".")
        for line in plan.unreadable:
            st.warning(f"A queue could not be read: {line}")

        st.markdown("**Which scene next**")
        if not plan.scenes:
            st.caption("No scene of this choice has a noise queue yet.")
        for s in plan.scenes[:SCENES_SHOWN]:
            o1, o2 = st.columns([5, 1])
            o1.markdown(scene_line(s, plan.seconds_per_item))
            o2.button("Open", key=f"lbl_plan_open_{s.scene_id}", on_click=on_open, args=(s.scene_id,),
                      help=f"Show {s.scene_name} on this page, with its noise queue below.")
        if len(plan.scenes) > SCENES_SHOWN:
            st.caption(f"… and {len(plan.scenes) - SCENES_SHOWN} more scene(s) in the table:")
            st.dataframe(scenes_frame(plan), hide_index=True, key="lbl_plan_scenes")

        st.markdown(f"**Items within {rp.fmt_minutes(float(budget_min) * 60.0)}**")
        if plan.items:
            st.dataframe(items_frame(plan), hide_index=True, key="lbl_plan_items")
            st.caption(f"{len(plan.items)} item(s) fit in the budget" + (f"; {plan.cut} more for later." if plan.cut
                                                                         else ": every pending item."))
        elif plan.total_items:
            st.caption(f"Not even one item fits in {budget_min} min at {plan.seconds_per_item:.0f} s an item.")
        else:
            st.caption("Nothing pending in the saved queues.")

        ids, n_missing, n_stale = to_build(ws, plan, active)
        if plan.no_queue:
            shown = ", ".join(plan.no_queue[:10]) + (" …" if len(plan.no_queue) > 10 else "")
            st.caption(f"{len(plan.no_queue)} labelled scene(s) without a queue: {shown}.")
        if active is None:
            st.caption("No active checkpoint: queues cannot be built.")
        elif ids:
            what = "without one" if not n_stale else "without a fresh one"
            st.button(f"Build queues for {len(ids)} scene(s) {what}", key="lbl_plan_build", on_click=on_build,
                      args=(ws, active.id, ids), disabled=live,
                      help=f"Scores {n_missing} scene(s) without a queue and {n_stale} out-of-date one(s) with "
                           f"{active.name} in a background job (it goes on if you leave the page), with the TTA and "
                           "threshold of the Noise queue section below; held-out scoring for training scenes. Scenes "
                           f"of another scheme than {active.scheme} are left out.")
        show_flash(FLASH_KEY)

        @st.fragment(run_every=POLL_S if live else None)
        def jobs_fragment() -> None:
            show_jobs(ws, live)

        jobs_fragment()


__all__ = [
    "CACHE_KEY",
    "items_frame",
    "on_build",
    "on_open",
    "review_plan_panel",
    "scene_line",
    "scenes_frame",
    "show_jobs",
    "to_build",
]
