"""Streamlit helpers of the Evaluate page: what the page evaluates (:class:`Selection`), its background evaluations and
the controls that start them.

An inline run lives in the page's script run: leaving the page mid-run discards it (a d4 run scores every window
8 times). The "evaluate" job (seghz.jobs.kinds) runs in a worker process instead and stores its result in the same
evaluation cache, where the page finds it. The comparison's "Evaluate missing" (one "evaluate" job per checkpoint,
``ui.evaluate_compare``) and the TTA report (a "tta_report" job, ``ui.evaluate_tta``) run the same way.

Each queued or running job is shown with its progress and Cancel in one place (:func:`job_panel`): the comparison shows
the no-TTA evaluations of the checkpoints it compares on its split, the TTA report its own job, and the panel under the
buttons (:func:`background_panel`) the rest (this checkpoint/split/TTA's job, and one line with a Show button for each
other one). :func:`job_progress` and :func:`job_outcome` draw a job in any of them; :func:`show_flash` shows the message
a submit callback left.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from seghz import report
from seghz.errors import SegHZError
from seghz.evaluate import scene_scope, tta_key, tta_views_of
from seghz.infer.engine import tta_views
from seghz.jobs import runner
from seghz.jobs.kinds import evaluation_jobs, evaluation_key, submit_evaluation_job

BACKGROUND_PX_VIEWS = 1_000_000  # labelled pixels × TTA views above which the background run is the suggested one
# (1.15 Mpx without TTA blocked the page for 32 s on a 2-core CPU, the review)
JOB_ENDED = ("failed", "died", "cancelled")
PANEL_NAMES = {"compare": "Compare checkpoints", "drilldown": "Drill-down", "tta": "TTA report"}


@dataclass(frozen=True)
class Selection:
    """What the page evaluates: checkpoint ``cid`` on ``split`` with TTA ``tta``, with the workspace, its registered
    checkpoints (``by_id``, in registry order) and the active one; ``scenes``: the chosen scenes of the split (sorted
    ids, a strict subset of its labelled scenes), empty for the whole split (:func:`scene_filter`)."""

    ws: Any
    by_id: dict
    active: Any
    cid: str
    split: str
    tta: str
    scenes: tuple[str, ...] = ()

    @property
    def ids(self) -> list[str]:
        return list(self.by_id)

    @property
    def scope(self) -> str:
        """The split key of the evaluation cache and of its jobs (:func:`seghz.evaluate.scene_scope`)."""
        return scene_scope(self.split, self.scenes)

    @property
    def ck(self) -> Any:
        return self.by_id[self.cid]


def eval_jobs(ws, c: str | None, sp: str | None, t: str | None, active_only: bool = False) -> list:
    """Background evaluate jobs of (checkpoint, split, TTA), newest first (all evaluate jobs when ``c`` is None)."""
    return evaluation_jobs(ws, "evaluate", c, sp if c is not None else None, t if c is not None else None,
                           active_only=active_only)


def compare_default(sel: Selection) -> list[str]:
    """The comparison's checkpoints before its multiselect is changed: the active one and the next registered."""
    active = sel.active
    return list(dict.fromkeys(([active.id] if active and active.id in sel.by_id else []) + sel.ids))[:2]


def compare_scope(sel: Selection) -> tuple[tuple[str, ...], str]:
    """The checkpoints (none when fewer than 2) and the split the comparison shows: its widgets' values, or their
    defaults before they are drawn (the page draws them after the panel under the buttons; leaving the page resets
    them)."""
    ss = st.session_state
    chosen = [c for c in ss.get("eval_cmp_sel", compare_default(sel)) if c in sel.by_id]
    return (tuple(chosen) if len(chosen) >= 2 else ()), ss.get("eval_cmp_split", "val")


def job_panel(sel: Selection, j, scope: tuple[tuple[str, ...], str]) -> str:
    """Where a job is shown with its progress and Cancel: ``"compare"`` (a no-TTA evaluation of a compared checkpoint
    on the comparison's split, ``scope`` = :func:`compare_scope`), ``"tta"`` (the TTA report of this checkpoint and
    split), ``"drilldown"`` (the drill-down's prediction of its scenes for this checkpoint, split and TTA), else
    ``"top"`` (the panel under the evaluation buttons)."""
    key = evaluation_key(j.kind, j.config)
    if key is None:
        return "top"
    kind, c, sp, t = key
    cfg = j.config or {}
    if kind == "evaluate" and cfg.get("purpose") == "drilldown" and (c, cfg.get("split"), t) == (sel.cid, sel.split,
                                                                                                  sel.tta):
        return "drilldown"
    if kind == "evaluate" and t == "none" and c in scope[0] and sp == scope[1]:
        return "compare"
    if kind == "tta_report" and (c, sp, t) == (sel.cid, sel.split, "d4"):
        return "tta"
    return "top"


def running_at(sel: Selection, running: list) -> str:
    """Where the progress and Cancel of ``running`` (this checkpoint/split/TTA's queued or running jobs) are: "" for
    the panel under the buttons (or none running), else e.g. " under **Compare checkpoints**"."""
    running_panels = {job_panel(sel, j, compare_scope(sel)) for j in running}
    return "" if not running or "top" in running_panels else f" under **{PANEL_NAMES[min(running_panels)]}**"


def on_background(ws, c: str, sp: str, t: str, scenes: tuple[str, ...] = ()) -> None:
    """Submit the evaluate job (of the chosen ``scenes`` when given), unless an identical one is queued or running
    (then that one is shown)."""
    ss = st.session_state
    config = {"checkpoint_id": c, "split": sp, "tta": t, "force": bool(ss.get("eval_force"))}
    if scenes:
        config["scene_ids"] = list(scenes)
    try:
        jid, new = submit_evaluation_job(ws, "evaluate", config)
    except (SegHZError, ValueError, ImportError, OSError) as e:
        ss["eval_bg_flash"] = ("error", f"Could not start the background evaluation: {e}")
        return
    if not new:
        ss["eval_bg_flash"] = ("info", (f"This evaluation is already running in the background (job `{jid}`): "
                                        "its progress is shown below."))
        return
    ss["eval_bg_flash"] = ("success", (f"Background evaluation job `{jid}` submitted: it goes on if you leave this "
                                       "page, and its result shows here when it is done."))


def show_flash(key: str) -> None:
    """The message a submit callback left under ``key`` (shown once), in a slot that is on the page in every run (empty
    without a message): the panel drawn after it keeps its place, so a rerun never draws the panel one element higher
    while its previous elements linger, greyed, where they were (a second progress bar until the run ends)."""
    slot = st.empty()
    flash = st.session_state.pop(key, None)
    if flash:
        getattr(slot, flash[0])(flash[1])


def job_progress(ws, j, what: str, cancel_key: str, running_now: list) -> None:
    """A queued or running job: its progress bar (status, message, time left), the job it waits behind (among
    ``running_now``, the workspace's running jobs), Cancel."""
    msg = (j.message or "").strip().splitlines()
    left = report.job_time_left_s(j)
    st.progress(min(1.0, max(0.0, float(j.progress or 0))),
                text=(f"{what} `{j.id}` {j.status}" + (f": {msg[0]}" if msg else "")
                      + (f" — about {report.fmt_duration(left)} left" if left is not None else ""))[:200])
    if j.status == "queued":  # one job runs at a time in a workspace: say which one it waits for
        ahead = [r for r in running_now if r.id != j.id]
        if ahead:
            a = ahead[0]
            st.caption(f"Queued behind the {a.kind} job `{a.id}`"
                       + (", which is being cancelled (it stops at its next check)" if a.cancel_requested else "")
                       + " (one job runs at a time in a workspace; the Train page shows it).")
    label = "Cancel requested…" if j.cancel_requested else "Cancel"
    if st.button(label, key=cancel_key, disabled=j.cancel_requested):
        runner.cancel_job(ws, j.id)
        st.rerun()  # the whole page: a queued job is cancelled at once, and its submit button comes back


def job_outcome(j, what: str) -> None:
    """How the last job of something ended when it did not succeed: an error with its message, or the cancel."""
    text = (j.message or j.status).strip()
    if j.status == "cancelled":
        last = text.splitlines()[-1].strip().rstrip(".") if text else ""
        # the worker's message says "cancelled by request after 17.8 s": it is not repeated after "was cancelled"
        how = last if last.lower().startswith("cancelled") else f"cancelled ({last})" if last else "cancelled"
        st.caption(f"The last {what} (job `{j.id}`) was {how}.")
    else:
        st.error(f"The last {what} (job `{j.id}`) {j.status}:\n\n```\n{text}\n```")


def on_show(c: str, sp: str, t: str, scenes=()) -> None:
    ss = st.session_state
    ss["eval_checkpoint"], ss["eval_split"], ss["eval_tta"] = c, sp, t
    ss[scene_filter_key(sp)] = list(scenes or ())


def labelled_px(ws, sp: str, scene_ids=None) -> int:
    """Labelled pixels of a split, or of its scenes ``scene_ids`` (what an evaluation scores once per TTA view)."""
    return sum(s.height * s.width for s in ws.list_scenes(sp) if s.label_path and (not scene_ids or s.id in scene_ids))


def scene_filter_key(split: str) -> str:
    return f"eval_scenes_{split}"


def scene_option(s) -> str:
    """A scene's option text in the scene filter: stable run to run (the browser sends the text back)."""
    return f"{s.name} · {s.height}×{s.width} px · {s.id}"


def scene_filter(split: str, labelled: list) -> tuple[str, ...]:
    """The scene filter (one multiselect per split, none chosen = the whole split): the chosen scenes' sorted ids
    when they are a strict subset of the split's ``labelled`` scenes, else ``()``."""
    by_id = {s.id: s for s in labelled}
    key = scene_filter_key(split)
    ss = st.session_state
    if key in ss:  # scenes that left the split (or lost their label) since they were chosen
        ss[key] = [i for i in ss[key] if i in by_id]
    chosen = st.multiselect(
        f"Scenes of the {split} split", list(by_id), key=key, format_func=lambda i: scene_option(by_id[i]),
        placeholder=f"all {len(labelled)} labelled scenes of the split", disabled=len(labelled) < 2,
        help="Score only the chosen scenes (the headline, confusion matrix, per-class tables, calibration and "
             "drill-down then cover exactly them; cached apart from the whole split's evaluation). None chosen: "
             "the whole split.")
    ids = sorted(i for i in chosen if i in by_id)
    return tuple(ids) if ids and len(ids) < len(by_id) else ()


def per_scene_scores(v, labelled: list) -> None:
    """The evaluated scenes' own scores next to the headline, when there are several (a large synthetic scene can
    carry the split's mIoU while a real one scores far lower)."""
    from ui.evaluate_scores import NA, pct

    table = report.per_scene_table(v.vres, {s.id: s.name for s in labelled})
    if len(table) < 2:
        return
    table = table.sort_values("mIoU", na_position="last").reset_index(drop=True)
    st.caption(f"Per scene ({len(table)}), lowest mIoU first: the headline pools their pixels, so large scenes weigh "
               "most. Choose scenes above to score only them.")
    st.dataframe(pct(table, "mIoU", report.MIOU_LABELLED, "fwIoU", "OA"), hide_index=True, placeholder=NA,
                 key="eval_per_scene",
                 column_config={"labelled px": st.column_config.NumberColumn(format="localized")})


def eval_pace(ws) -> float | None:
    """Pixels × TTA views per second that the newest background evaluation of this workspace which scored something
    kept (its whole run, model loading included), for time estimates; None when none has run here yet."""
    for j in evaluation_jobs(ws, "evaluate"):
        res = j.result or {}
        if j.status != "done" or res.get("cached") or not res.get("split") or not res.get("tta"):
            continue
        secs = report.job_duration_s(j)
        try:
            work = labelled_px(ws, res["split"], res.get("scene_ids")) * len(tta_views(tta_views_of(str(res["tta"]))))
        except (ValueError, KeyError):
            continue
        if secs and secs > 0 and work > 0:
            return work / secs
    return None


def time_estimate(ws, work: float) -> str:
    """The text "; about 41 s at the pace of the last background evaluation here" for ``work`` pixels × views, or
    "" while no evaluation has run here (no duration is claimed without one: the pace depends on the machine)."""
    pace = eval_pace(ws)
    return "" if not pace else f"; about {report.fmt_duration(work / pace)} at the pace of the last background " \
                                "evaluation here"


def job_controls(sel: Selection, labelled: list, result: dict | None, running: list, where: str) -> tuple[bool, bool]:
    """The evaluation buttons (inline run, background run, recompute), the line on what there is to score (which run
    is suggested) and the background run's submit message; returns (recompute ticked, inline run pressed).
    ``running``: this checkpoint/split/TTA's queued or running evaluate jobs, shown ``where`` (:func:`running_at`)."""
    cid, split, tta = sel.cid, sel.split, sel.tta
    px_views = sum(s.height * s.width for s in labelled) * len(tta_views(tta))
    heavy = tta != "none" or px_views > BACKGROUND_PX_VIEWS
    busy_help = (f" A background evaluation of this checkpoint, split and TTA is queued or running (job "
                 f"`{running[0].id}`, shown{where} below): wait for its result or cancel it.") if running else ""

    b1, b2, b3 = st.columns([1, 1, 2])
    force = b3.checkbox("Recompute even if a cached result exists", key="eval_force", disabled=result is None)
    run = b1.button("Run evaluation", type="secondary" if heavy else "primary", key="eval_run",
                    disabled=not labelled or bool(running),  # it would compute what the background job computes
                    help="Runs in this page, which waits until it ends; leaving the page before then discards the run."
                    + busy_help)
    b2.button("Run in the background", type="primary" if heavy else "secondary", key="eval_bg", on_click=on_background,
              args=(sel.ws, cid, split, tta, sel.scenes), disabled=not labelled or bool(running) or (result is not None and not force),
              help="Runs as a job in a worker process: it goes on when you leave the page (progress and Cancel below), "
                   "and the result lands in the evaluation cache, shown here." + busy_help)
    if labelled:
        mpx = sum(s.height * s.width for s in labelled) / 1e6
        if heavy:
            n_views = len(tta_views(tta))
            why = f"TTA {tta} runs every window {n_views}×" if tta != "none" else f"{mpx:.1f} Mpx to score"
            st.caption(f"**Run in the background** is suggested: {why} ({mpx:.2f} Mpx of labelled scenes × {n_views} "
                       f"view{'s' if n_views > 1 else ''}{time_estimate(sel.ws, px_views)}), and an inline run is lost "
                       "if you leave the page before it ends.")
        else:
            st.caption(f"{mpx:.2f} Mpx to score without TTA{time_estimate(sel.ws, px_views)}: **Run evaluation** runs "
                       "in this page (it waits until the run ends); **Run in the background** keeps going if you leave "
                       "the page.")
    if not labelled:
        st.info(f"The **{split}** split has no labelled scenes; move scenes into it (CLI) or pick another split.")
    show_flash("eval_bg_flash")
    return force, run


def background_panel(sel: Selection, watching: bool) -> None:
    """The background evaluations of this checkpoint/split/TTA that no other panel shows: progress and Cancel while
    they run; a failure or cancel of the last one; one line for each other job no other panel shows. When the last
    one of this checkpoint/split/TTA ends the whole page reruns and shows the cached result. The page runs it as a
    fragment that polls while any evaluation job is queued or running.

    Every poll (and every page run) reads the jobs first, then redraws the panel in one ``st.empty`` slot: left
    empty when there is nothing to show, so what the panel showed goes at once (a container there would inherit the
    previous run's elements, and the browser kept them, greyed, until the page's run ended: e.g. the line pointing
    at a job under Compare checkpoints stayed while the drill-down below was computed after that job had ended);
    else one container, where elements of the previous poll that the new one does not draw again (a "Queued behind"
    line once the job starts) go when the poll ends."""
    ws, by_id = sel.ws, sel.by_id
    runner.refresh_job_states(ws)
    scope = compare_scope(sel)
    jobs = eval_jobs(ws, sel.cid, sel.scope, sel.tta)
    active_now = [j for j in jobs if j.active]
    if watching and not active_now:
        st.rerun()  # it ended: the page's cached-result path shows the result
    mine = [j for j in active_now if job_panel(sel, j, scope) == "top"]
    elsewhere = [j for j in active_now if job_panel(sel, j, scope) != "top"]
    ended = jobs[0] if not active_now and jobs and jobs[0].status in JOB_ENDED \
        and job_panel(sel, jobs[0], scope) == "top" else None  # the comparison reports its own ended jobs
    shown_ids = {j.id for j in active_now}
    others = [j for j in evaluation_jobs(ws, active_only=True)
              if j.id not in shown_ids and job_panel(sel, j, scope) == "top"]
    running_now = ws.list_jobs(status="running") if any(j.status == "queued" for j in mine) else []
    slot = st.empty()
    if not (mine or elsewhere or ended is not None or others):
        return
    with slot.container():
        for j in mine:
            job_progress(ws, j, "background evaluation", f"eval_bg_cancel_{j.id}", running_now)
        for j in elsewhere:
            st.caption(f"The background evaluation of this checkpoint, split and TTA (job `{j.id}`, {j.status}) is "
                       f"shown with its progress and Cancel under **{PANEL_NAMES[job_panel(sel, j, scope)]}** below.")
        if ended is not None:
            job_outcome(ended, "background evaluation")
        for j in others:  # e.g. a d4 run started before the analyst left the page: the widgets came back at defaults
            cfg = j.config or {}
            c, sp = cfg.get("checkpoint_id"), cfg.get("split") or "val"
            name = by_id[c].name if c in by_id else c
            if j.kind == "tta_report":  # of another checkpoint or split: Show opens it in the TTA report below
                t, what = st.session_state.get("eval_tta", "none"), f"TTA report of {name} on {sp}"
            else:  # e.g. one of the comparison's "Evaluate missing" jobs, of checkpoints it no longer compares
                t = tta_key(cfg.get("tta") or "none")
                n_sc = len(cfg.get("scene_ids") or ())
                what = f"{name} on {sp}" + (f" ({n_sc} chosen scene(s))" if n_sc else "") + f", TTA {t}"
            o1, o2 = st.columns([4, 1])
            o1.caption(f"Also running in the background: job `{j.id}` · {what} · {100 * float(j.progress or 0):.0f} %")
            o2.button("Show", key=f"eval_bg_show_{j.id}", on_click=on_show,
                      args=(c, sp, t, sorted(cfg.get("scene_ids") or ()) if j.kind == "evaluate" else ()),
                      disabled=c not in by_id or sp not in ("val", "test", "train") or t not in ("none", "d4"))
