"""Evaluate: score a checkpoint on a split of the workspace (effective, i.e. corrected, labels).

Results are cached in the workspace per (checkpoint, split, TTA, data version) and show at once when present.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

from seghz import compare, drilldown, report
from seghz.classes import get_scheme
from seghz.data.io import read_image
from seghz.errors import SegHZError
from seghz.evaluate import evaluate_split, label_for_checkpoint, tta_key, tta_views_of
from seghz.infer.engine import tta_views
from seghz.jobs import runner
from seghz.jobs.kinds import evaluation_jobs, evaluation_key, submit_evaluation_job, submit_missing_evaluations
from seghz.metrics import calibration_report, coverage_at
from ui.common import analyst_name, page_header, predictor_for, progress_callback, scheme_legend_html, screen_scheme

ws = page_header("Evaluate", "Scores of a checkpoint on the labelled scenes of a split, using the latest label versions.")

checkpoints = ws.list_checkpoints()
if not checkpoints:
    st.warning("No checkpoints are registered in this workspace. Train one on the Train page first.")
    st.stop()
by_id = {c.id: c for c in checkpoints}
active = ws.active_checkpoint()
ids = list(by_id)

c1, c2, c3 = st.columns([3, 2, 2])
cid = c1.selectbox(
    "Checkpoint", ids, index=ids.index(active.id) if active and active.id in by_id else 0, key="eval_checkpoint",
    format_func=lambda i: compare.checkpoint_label(by_id[i]) + ("  — active" if active and i == active.id else ""),
)
split = c2.radio("Split", ["val", "test", "train"], horizontal=True, key="eval_split")
tta = c3.radio("Test-time augmentation", ["none", "d4"], horizontal=True, key="eval_tta",
               help="d4 averages the 8 flips/rotations of every window: usually a little better, 8× slower.")
ck = by_id[cid]

labelled = [s for s in ws.list_scenes(split) if s.label_path]
data_version = ws.data_version(split)
cached = ws.find_evaluation(cid, split, tta != "none", data_version, tta_spec=tta)
result = cached.result if cached is not None and cached.result.get("tta") == tta else None

# ---------------------------------------------------------------------------------------------- background runs
# An inline run lives in this page's script run: leaving the page mid-run discards it (a d4 run scores every window
# 8 times). The "evaluate" job (seghz.jobs.kinds) runs in a worker process instead
# and stores its result in the same evaluation cache, where this page finds it. The comparison's "Evaluate missing"
# (one "evaluate" job per checkpoint) and the TTA report (a "tta_report" job) run the same way.
#
# Each queued or running job is shown with its progress and Cancel in one place (job_panel): the comparison shows
# the no-TTA evaluations of the checkpoints it compares on its split, the TTA report its own job, and the panel under
# the buttons here the rest (this checkpoint/split/TTA's job, and one line with a Show button for each other one).
BACKGROUND_PX_VIEWS = 4_000_000  # labelled pixels × TTA views above which the background run is the suggested one
JOB_ENDED = ("failed", "died", "cancelled")
PANEL_NAMES = {"compare": "Compare checkpoints", "tta": "TTA report"}
NA = "–"  # what a table shows for a value that is not available (Streamlit shows "None" unless told)
ss = st.session_state
TTA_OPEN = "eval_tta_open"  # the TTA report expander's state (open or closed)


def pct(table: pd.DataFrame | Styler, *columns: str) -> Styler:
    """``table`` (a frame, or a Styler of one) with its score ``columns`` shown as the metric tiles show them:
    :func:`seghz.report.fmt_pct`, rounded to one decimal ("96.2 %" for 0.96186; "–" when missing). Streamlit's own
    "percent" column format with a step of 0.001 truncates instead ("96.1%"), and any column format set in
    ``column_config`` overrides this Styler's text: give these columns none there. A frame's other missing values
    show as "–" (a Styler shows "nan" unless told)."""
    sty = table if isinstance(table, Styler) else table.style.format(na_rep=NA)
    cols = [c for c in columns if c in sty.data.columns]
    return sty.format(report.fmt_pct, subset=cols) if cols else sty


def eval_jobs(c: str | None, sp: str | None, t: str | None, active_only: bool = False) -> list:
    """Background evaluate jobs of (checkpoint, split, TTA), newest first (all evaluate jobs when ``c`` is None)."""
    return evaluation_jobs(ws, "evaluate", c, sp if c is not None else None, t if c is not None else None,
                           active_only=active_only)


def compare_default() -> list[str]:
    """The comparison's checkpoints before its multiselect is changed: the active one and the next registered."""
    return list(dict.fromkeys(([active.id] if active and active.id in by_id else []) + ids))[:2]


def compare_scope() -> tuple[tuple[str, ...], str]:
    """The checkpoints (none when fewer than 2) and the split the comparison shows: its widgets' values, or their
    defaults before they are drawn (this page draws them after the panel here; leaving the page resets them)."""
    sel = [c for c in ss.get("eval_cmp_sel", compare_default()) if c in by_id]
    return (tuple(sel) if len(sel) >= 2 else ()), ss.get("eval_cmp_split", "val")


def job_panel(j, scope: tuple[tuple[str, ...], str]) -> str:
    """Where a job is shown with its progress and Cancel: ``"compare"`` (a no-TTA evaluation of a compared checkpoint
    on the comparison's split, ``scope`` = :func:`compare_scope`), ``"tta"`` (the TTA report of this checkpoint and
    split), else ``"top"`` (the panel under the evaluation buttons)."""
    key = evaluation_key(j.kind, j.config)
    if key is None:
        return "top"
    kind, c, sp, t = key
    if kind == "evaluate" and t == "none" and c in scope[0] and sp == scope[1]:
        return "compare"
    if kind == "tta_report" and (c, sp, t) == (cid, split, "d4"):
        return "tta"
    return "top"


def on_background(c: str, sp: str, t: str) -> None:
    """Submit the evaluate job, unless an identical one is queued or running (then that one is shown)."""
    config = {"checkpoint_id": c, "split": sp, "tta": t, "force": bool(ss.get("eval_force"))}
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
    flash = ss.pop(key, None)
    if flash:
        getattr(slot, flash[0])(flash[1])


def job_progress(j, what: str, cancel_key: str, running_now: list) -> None:
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


def on_show(c: str, sp: str, t: str) -> None:
    ss["eval_checkpoint"], ss["eval_split"], ss["eval_tta"] = c, sp, t


def labelled_px(sp: str) -> int:
    """Labelled pixels of a split (what an evaluation scores once per TTA view)."""
    return sum(s.height * s.width for s in ws.list_scenes(sp) if s.label_path)


def eval_pace() -> float | None:
    """Pixels × TTA views per second that the newest background evaluation of this workspace which scored something
    kept (its whole run, model loading included), for time estimates; None when none has run here yet."""
    for j in evaluation_jobs(ws, "evaluate"):
        res = j.result or {}
        if j.status != "done" or res.get("cached") or not res.get("split") or not res.get("tta"):
            continue
        secs = report.job_duration_s(j)
        try:
            work = labelled_px(res["split"]) * len(tta_views(tta_views_of(str(res["tta"]))))
        except (ValueError, KeyError):
            continue
        if secs and secs > 0 and work > 0:
            return work / secs
    return None


def time_estimate(work: float) -> str:
    """The text "; about 41 s at the pace of the last background evaluation here" for ``work`` pixels × views, or
    "" while no evaluation has run here (no duration is claimed without one: the pace depends on the machine)."""
    pace = eval_pace()
    return "" if not pace else f"; about {report.fmt_duration(work / pace)} at the pace of the last background " \
                                "evaluation here"


runner.refresh_job_states(ws)
all_active = evaluation_jobs(ws, active_only=True)
# The panel under the buttons and the comparison's redraw themselves every 2 s while any evaluation job is queued or
# running, not only while one of their own is: each redraw shows the jobs as they are now, and what a panel showed
# before goes with its next redraw even where the browser kept it (greyed) after a whole-page run. (The TTA report's
# panel, which redraws its table, polls for its own job only.)
POLL_S = 2 if all_active else None
running = eval_jobs(cid, split, tta, active_only=True)  # this checkpoint/split/TTA: whichever panel shows them
running_panels = {job_panel(j, compare_scope()) for j in running}
# where its progress and Cancel are: the panel under the buttons, or (a comparison's job) under Compare checkpoints
running_at = "" if not running or "top" in running_panels else f" under **{PANEL_NAMES[min(running_panels)]}**"
top_others = [j for j in all_active if j.id not in {r.id for r in running} and job_panel(j, compare_scope()) == "top"]
px_views = sum(s.height * s.width for s in labelled) * len(tta_views(tta))
heavy = tta != "none" or px_views > BACKGROUND_PX_VIEWS
busy_help = (f" A background evaluation of this checkpoint, split and TTA is queued or running (job `{running[0].id}`, "
             f"shown{running_at} below): wait for its result or cancel it.") if running else ""

b1, b2, b3 = st.columns([1, 1, 2])
force = b3.checkbox("Recompute even if a cached result exists", key="eval_force", disabled=result is None)
run = b1.button("Run evaluation", type="secondary" if heavy else "primary", key="eval_run",
                disabled=not labelled or bool(running),  # it would compute what the background job computes
                help="Runs in this page: quick, but leaving the page before it ends discards the run." + busy_help)
b2.button("Run in the background", type="primary" if heavy else "secondary", key="eval_bg", on_click=on_background,
          args=(cid, split, tta), disabled=not labelled or bool(running) or (result is not None and not force),
          help="Runs as a job in a worker process: it goes on when you leave the page (progress and Cancel below), "
               "and the result lands in the evaluation cache, shown here." + busy_help)
if labelled:
    mpx = sum(s.height * s.width for s in labelled) / 1e6
    if heavy:
        n_views = len(tta_views(tta))
        why = f"TTA {tta} runs every window {n_views}×" if tta != "none" else f"{mpx:.1f} Mpx to score"
        st.caption(f"**Run in the background** is suggested: {why} ({mpx:.2f} Mpx of labelled scenes × {n_views} "
                   f"view{'s' if n_views > 1 else ''}{time_estimate(px_views)}), and an inline run is lost if you "
                   "leave the page before it ends.")
    else:
        st.caption(f"{mpx:.2f} Mpx to score without TTA: **Run evaluation** is quick here; **Run in the background** "
                   "keeps going if you leave the page.")
if not labelled:
    st.info(f"The **{split}** split has no labelled scenes; move scenes into it (CLI) or pick another split.")
show_flash("eval_bg_flash")


@st.fragment(run_every=POLL_S)
def background_panel(watching: bool) -> None:
    """The background evaluations of this checkpoint/split/TTA that no other panel shows: progress and Cancel while
    they run; a failure or cancel of the last one; one line for each other job no other panel shows. When the last
    one of this checkpoint/split/TTA ends the whole page reruns and shows the cached result.

    Every poll (and every page run) reads the jobs first, then redraws the panel in one ``st.empty`` slot: left
    empty when there is nothing to show, so what the panel showed goes at once (a container there would inherit the
    previous run's elements, and the browser kept them, greyed, until the page's run ended: e.g. the line pointing
    at a job under Compare checkpoints stayed while the drill-down below was computed after that job had ended);
    else one container, where elements of the previous poll that the new one does not draw again (a "Queued behind"
    line once the job starts) go when the poll ends."""
    runner.refresh_job_states(ws)
    scope = compare_scope()
    jobs = eval_jobs(cid, split, tta)
    active_now = [j for j in jobs if j.active]
    if watching and not active_now:
        st.rerun()  # it ended: the page's cached-result path shows the result
    mine = [j for j in active_now if job_panel(j, scope) == "top"]
    elsewhere = [j for j in active_now if job_panel(j, scope) != "top"]
    ended = jobs[0] if not active_now and jobs and jobs[0].status in JOB_ENDED \
        and job_panel(jobs[0], scope) == "top" else None  # the comparison reports its own ended jobs
    shown_ids = {j.id for j in active_now}
    others = [j for j in evaluation_jobs(ws, active_only=True) if j.id not in shown_ids and job_panel(j, scope) == "top"]
    running_now = ws.list_jobs(status="running") if any(j.status == "queued" for j in mine) else []
    slot = st.empty()
    if not (mine or elsewhere or ended is not None or others):
        return
    with slot.container():
        for j in mine:
            job_progress(j, "background evaluation", f"eval_bg_cancel_{j.id}", running_now)
        for j in elsewhere:
            st.caption(f"The background evaluation of this checkpoint, split and TTA (job `{j.id}`, {j.status}) is "
                       f"shown with its progress and Cancel under **{PANEL_NAMES[job_panel(j, scope)]}** below.")
        if ended is not None:
            job_outcome(ended, "background evaluation")
        for j in others:  # e.g. a d4 run started before the analyst left the page: the widgets came back at defaults
            cfg = j.config or {}
            c, sp = cfg.get("checkpoint_id"), cfg.get("split") or "val"
            name = by_id[c].name if c in by_id else c
            if j.kind == "tta_report":  # of another checkpoint or split: Show opens it in the TTA report below
                t, what = ss.get("eval_tta", "none"), f"TTA report of {name} on {sp}"
            else:  # e.g. one of the comparison's "Evaluate missing" jobs, of checkpoints it no longer compares
                t = tta_key(cfg.get("tta") or "none")
                what = f"{name} on {sp}, TTA {t}"
            o1, o2 = st.columns([4, 1])
            o1.caption(f"Also running in the background: job `{j.id}` · {what} · {100 * float(j.progress or 0):.0f} %")
            o2.button("Show", key=f"eval_bg_show_{j.id}", on_click=on_show, args=(c, sp, t),
                      disabled=c not in by_id or sp not in ("val", "test", "train") or t not in ("none", "d4"))


background_panel(bool(running))

if run:
    bar = st.progress(0.0, text=f"evaluating {ck.name} on {len(labelled)} {split} scene(s)…")
    try:
        predictor, _ = predictor_for(ws, cid)
        result = evaluate_split(ws, cid, split, tta, predictor=predictor, progress=progress_callback(bar),
                                use_cache=not force)
        cached = ws.find_evaluation(cid, split, tta != "none", data_version, tta_spec=tta)
    except (SegHZError, ValueError, KeyError, OSError, RuntimeError) as e:
        result = None
        st.error(f"Evaluation failed: {e}")
    finally:
        bar.empty()


# ---------------------------------------------------------------------------------------------- comparisons
# Checkpoint comparison and the TTA report do not depend on the result above; they render at the page's end
# (also where the page stops early) through extra_sections(). Their long computations run as background jobs
# ("evaluate" per missing checkpoint, "tta_report"): panels poll them, and the page reruns when one ends.
def on_compare_missing(sel: tuple[str, ...], csplit: str) -> None:
    """Submit one background "evaluate" job per selected checkpoint still missing on ``csplit`` (not a second one
    where such a job is queued or running)."""
    try:
        got = submit_missing_evaluations(ws, list(sel), csplit)
    except (SegHZError, ValueError, ImportError, OSError) as e:
        ss["eval_cmp_flash"] = ("error", f"Could not start the background evaluations: {e}")
        return
    new = [c for c, (_j, fresh) in got.items() if fresh]
    old = [f"`{by_id[c].name}` (job `{j}`)" for c, (j, fresh) in got.items() if not fresh]
    if not new and not got:
        ss["eval_cmp_flash"] = ("info", f"Nothing to evaluate: every selected checkpoint is evaluated on {csplit}.")
    elif not new:
        ss["eval_cmp_flash"] = ("info", "Already running in the background: " + ", ".join(old) + ".")
    else:
        ss["eval_cmp_flash"] = ("success", (
            f"{len(new)} background evaluation job(s) submitted on {csplit} (" + ", ".join(f"`{by_id[c].name}`" for c in new)
            + "): they go on if you leave this page, and the table fills in as each ends."
            + (" Already running: " + ", ".join(old) + "." if old else "")))


def compare_jobs_panel(sel: tuple[str, ...], csplit: str, missing: tuple[str, ...], watching: tuple[str, ...]) -> None:
    """The comparison's background evaluations on ``csplit`` (every queued or running no-TTA evaluation of the
    compared checkpoints: the panel at the top leaves them to this one): progress and Cancel while they run, how the
    last one of a checkpoint still missing ended when it did not succeed. The page reruns as each watched one ends.
    Redrawn in one slot per poll (see background_panel)."""
    runner.refresh_job_states(ws)
    active_now = [j for c in sel for j in eval_jobs(c, csplit, "none", active_only=True)]
    if set(watching) - {j.id for j in active_now}:
        st.rerun()  # one ended: the table and the per-class deltas show its result
    ended = []
    for c in missing:
        jobs = eval_jobs(c, csplit, "none")
        if jobs and not jobs[0].active and jobs[0].status in JOB_ENDED:
            ended.append((c, jobs[0]))
    running_now = ws.list_jobs(status="running") if any(j.status == "queued" for j in active_now) else []
    slot = st.empty()
    if not (active_now or ended):
        return
    with slot.container():
        for j in active_now:
            c = (j.config or {}).get("checkpoint_id")
            job_progress(j, f"background evaluation of {by_id[c].name if c in by_id else c} on {csplit}",
                         f"eval_cmp_cancel_{j.id}", running_now)
        for c, j in ended:
            job_outcome(j, f"background evaluation of `{by_id[c].name}` on {csplit}")


def compare_section() -> None:
    """Two or more checkpoints side by side, per-class IoU deltas, and the pixels two of them predict differently."""
    st.divider()
    st.subheader("Compare checkpoints")
    sel = st.multiselect("Checkpoints (the first is the baseline)", ids, default=compare_default(), key="eval_cmp_sel",
                         format_func=lambda i: compare.checkpoint_label(by_id[i]))
    if len(sel) < 2:
        st.caption("Pick two or more registered checkpoints to compare.")
        return
    csplit = st.radio("Split for per-class IoU", ["val", "test", "train"], horizontal=True, key="eval_cmp_split")
    has_labels = any(s.label_path for s in ws.list_scenes(csplit))
    missing = compare.missing_evaluations(ws, sel, csplit) if has_labels else []
    cmp_active = [j for c in sel for j in eval_jobs(c, csplit, "none", active_only=True)]
    busy = {(j.config or {}).get("checkpoint_id") for j in cmp_active}
    to_run = [c for c in missing if c not in busy]
    if missing:
        st.caption(f"{len(missing)} of them {'has' if len(missing) == 1 else 'have'} no cached evaluation on the **{csplit}** split for the current labels: "
                   + ", ".join(f"`{by_id[c].name}`" for c in missing)
                   + (f" ({len(missing) - len(to_run)} being evaluated in the background)" if len(to_run) < len(missing) else ""))
        st.button(f"Evaluate {len(to_run) or len(missing)} missing on {csplit}", key="eval_cmp_run", type="primary",
                  on_click=on_compare_missing, args=(tuple(sel), csplit), disabled=not to_run,
                  help="One background evaluation job per checkpoint (no TTA): they go on if you leave the page "
                       "(progress and Cancel below), and the table fills in as each ends."
                       + (" Already running for all of them." if not to_run else ""))
    elif not has_labels:
        st.caption(f"The **{csplit}** split has no labelled scenes: per-class deltas need an evaluation.")
    show_flash("eval_cmp_flash")
    watching = tuple(j.id for j in cmp_active)
    st.fragment(compare_jobs_panel, run_every=POLL_S or (2 if watching else None))(tuple(sel), csplit, tuple(missing),
                                                                                   watching)
    entries = compare.comparison_entries(ws, sel)
    table = compare.comparison_table(entries)
    st.dataframe(pct(table, *(c for c in table.columns if c not in ("checkpoint", "note"))), hide_index=True,
                 key="eval_cmp_table", placeholder=NA)
    st.caption(f"**({compare.MEASURED})**: scored on this workspace's split with its current labels (cached "
               f"evaluations without TTA; – = not evaluated yet). **({compare.RECORDED})**: the score the checkpoint "
               "recorded when it was trained, on that run's own validation/test data, which may not be this "
               "workspace's: do not rank checkpoints across the two kinds. Note = recipe keys that differ from the "
               "first.")
    results = {}
    for c in sel:
        hit = compare.split_scores(ws, c, csplit)
        if hit[1] == "evaluated":
            results[compare.checkpoint_label(by_id[c])] = hit[0]
    if sel[0] not in missing and len(results) >= 2:
        pairs = compare.paired_intervals(results)  # one bootstrap per pair, for both tables
        deltas = compare.class_iou_deltas(results, intervals=True, pairs=pairs)
        st.markdown(f"**Per-class IoU on {csplit}: the baseline's IoU, then each checkpoint's change (pp) with its "
                    "95 % interval**")
        st.dataframe(compare.style_deltas(deltas), hide_index=True, key="eval_cmp_deltas", placeholder=NA)
        st.caption("Intervals: paired bootstrap over the scenes both were scored on; * = the interval excludes 0 "
                   "(the change is beyond the scene-to-scene noise). – = no interval (fewer than 2 common scenes).")
        sure = compare.miou_difference_table(results, pairs=pairs)
        st.dataframe(compare.style_miou_difference(sure), hide_index=True, key="eval_cmp_sure", placeholder=NA)
        st.caption("mIoU minus the baseline's with a 95 % interval from 2000 paired bootstrap rounds over the scenes "
                   "(scenes, not pixels, are the draws). *cannot tell*: the interval holds 0, so this split cannot "
                   "tell the two apart; a few hard scenes can reverse a ranking (docs/checkpoints.md). – = no "
                   "interval (the verdict says why): Δ mIoU is then the plain difference of the two mIoUs.")
    else:
        st.caption("Per-class deltas appear once the baseline and at least one other checkpoint are evaluated on "
                   f"the {csplit} split.")

    st.markdown("**Changed pixels: where two checkpoints predict differently**")
    scenes_all = ws.list_scenes()
    if not scenes_all:
        st.caption("No scenes in the workspace.")
        return
    scene_by = {s.id: s for s in scenes_all}
    p1, p2, p3, p4 = st.columns([2, 2, 2, 1])
    ca = p1.selectbox("Checkpoint A", sel, key="eval_cmp_a", format_func=lambda i: by_id[i].name)
    cb_ = p2.selectbox("Checkpoint B", sel, index=1, key="eval_cmp_b", format_func=lambda i: by_id[i].name)
    sid = p3.selectbox("Scene", list(scene_by), key="eval_cmp_scene",
                       format_func=lambda i: f"{scene_by[i].name} ({scene_by[i].split})")
    cap = p4.selectbox("Region (px)", [256, 512, 1024, 2048], index=1, key="eval_cmp_cap",
                       help="The centre of the scene, at most this size, is predicted by both checkpoints.")
    req = (ca, cb_, sid, int(cap))
    if st.button("Predict and compare", key="eval_cmp_predict", disabled=ca == cb_):
        try:
            sc = scene_by[sid]
            bbox = compare.region_bbox(sc.height, sc.width, int(cap))
            img = drilldown.crop(read_image(ws.scene_path(sc, "image")), bbox)
            with st.spinner("predicting the region with both checkpoints…"):
                pa, _ = predictor_for(ws, ca)[0].predict(img, "none")
                pb, _ = predictor_for(ws, cb_)[0].predict(img, "none")
            pa, pb, sch = compare.common_scheme(pa, by_id[ca].scheme, pb, by_id[cb_].scheme)
            scheme_ab = get_scheme(sch)
            stats = compare.changed_pixels(pa, pb, scheme_ab.names)
            st.session_state["eval_cmp_changed"] = {
                "req": req, "bbox": bbox, "scheme": sch, "changed": stats["changed"], "total": stats["total"],
                "fraction": stats["fraction"], "pairs": stats["pairs"],
                "image": drilldown.thumbnail(compare.changed_panels(img, pa, pb, stats["mask"], screen_scheme(scheme_ab))),
            }
        except (SegHZError, ValueError, KeyError, OSError, RuntimeError) as e:
            st.error(f"Comparison failed: {e}")
    got = st.session_state.get("eval_cmp_changed")
    if ca == cb_:
        st.caption("Choose two different checkpoints.")
    elif got is None or got["req"] != req:
        st.caption("Press **Predict and compare** to predict the region with both checkpoints.")
    else:
        r0, c0, r1, c1 = got["bbox"]
        st.metric("Changed pixels", f"{100 * got['fraction']:.1f} %",
                  help=f"{got['changed']:,} of {got['total']:,} px (rows {r0}–{r1 - 1}, cols {c0}–{c1 - 1}, scheme {got['scheme']})")
        st.image(got["image"], caption=f"image | {by_id[ca].name} (A) | {by_id[cb_].name} (B) | "
                                       "changed pixels in magenta")
        pairs = compare.changed_pairs_table(got, top=10)
        st.dataframe(pct(pairs, "share of changed"), hide_index=True, key="eval_cmp_pairs",
                     column_config={"pixels": st.column_config.NumberColumn(format="localized")})


def on_tta_report(c: str, sp: str) -> None:
    """Submit the TTA report job of (checkpoint, split), unless one is queued or running (then that one is shown)."""
    try:
        jid, new = submit_evaluation_job(ws, "tta_report", {"checkpoint_id": c, "split": sp})
    except (SegHZError, ValueError, ImportError, OSError) as e:
        ss["eval_tta_flash"] = ("error", f"Could not start the TTA report: {e}")
        return
    ss[TTA_OPEN], ss["eval_tta_closed_on"] = True, None  # its progress and Cancel are in the report: keep it open
    if new:
        ss["eval_tta_flash"] = ("success", (f"TTA report job `{jid}` submitted: it goes on if you leave this page, and "
                                            "its rows show here as they are scored."))
    else:
        ss["eval_tta_flash"] = ("info", (f"This TTA report is already running in the background (job `{jid}`): its "
                                         "progress is shown below."))


def tta_panel(c: str, sp: str, watching: tuple[str, ...]) -> None:
    """The TTA report's job (progress and Cancel while it runs, how the last one ended when it did not succeed) and
    the rows cached so far: while a job runs, rows show as they are scored. The page reruns when it ends. Redrawn as
    one new container per poll (see background_panel; never empty: the table or a line saying it is not computed)."""
    runner.refresh_job_states(ws)
    jobs = evaluation_jobs(ws, "tta_report", c, sp, "d4")
    active_now = [j for j in jobs if j.active]
    if set(watching) - {j.id for j in active_now}:
        st.rerun()  # it ended: the button comes back (or stays off when every row is cached)
    table = compare.tta_report(ws, c, sp, compute=False)
    running_now = ws.list_jobs(status="running") if any(j.status == "queued" for j in active_now) else []
    with st.empty().container():
        for j in active_now:
            job_progress(j, "background TTA report", f"eval_tta_cancel_{j.id}", running_now)
        if not active_now and jobs and jobs[0].status in JOB_ENDED and not table["mIoU"].notna().all():
            job_outcome(jobs[0], "background TTA report")
        if table["mIoU"].notna().any():
            # the views each row averages ("identity,lr"), not the cache key ("flip"); rows not scored yet: "–"
            shown = table.assign(spec=table["spec"].map(compare.tta_spec_views))
            shown = pct(shown, "mIoU", "fwIoU", "OA").format(lambda v: report.fmt_pp(v, 2), subset=["Δ mIoU (pp)"])
            st.dataframe(shown, hide_index=True, key="eval_tta_table", placeholder=NA,
                         column_config={"spec": "view list"})
        else:
            st.caption("Not computed yet for this checkpoint, split and the current labels.")


def on_tta_toggle() -> None:
    """The analyst opened or closed the TTA report: a close while its job runs is kept (the report is not opened again
    for that job)."""
    if ss.get(TTA_OPEN):
        ss["eval_tta_closed_on"] = None
    else:
        now = evaluation_jobs(ws, "tta_report", cid, split, "d4", active_only=True)
        ss["eval_tta_closed_on"] = now[0].id if now else None


def tta_section() -> None:
    """mIoU as TTA views are added one at a time (the study's NAIC table), on demand as a background job, cached per
    view list.

    The expander keeps its state (``TTA_OPEN``) across reruns: it is opened when its job is submitted and while one
    runs (its progress and Cancel are in it) unless the analyst closed it during that job; otherwise it stays as the
    analyst left it. Its place on the page does not depend on whether a job runs (the line above it is always there,
    empty without a job)."""
    report_now = compare.tta_report(ws, cid, split, compute=False)
    complete = bool(report_now["mIoU"].notna().all())
    tta_running = evaluation_jobs(ws, "tta_report", cid, split, "d4", active_only=True)
    if tta_running and ss.get("eval_tta_closed_on") != tta_running[0].id:
        ss[TTA_OPEN] = True
    note = st.empty()
    if tta_running and not ss.get(TTA_OPEN):  # closed by the analyst: say where the progress and Cancel are
        note.caption(f"The TTA report of **{ck.name}** on **{split}** is running in the background (job "
                     f"`{tta_running[0].id}`): open **TTA report** below for its progress and Cancel.")
    with st.expander("TTA report: scores as views are added (baseline, +lr, +tb, … full D4)", key=TTA_OPEN,
                     on_change=on_tta_toggle):
        st.caption(f"Checkpoint **{ck.name}** on the **{split}** split; each row adds one view to the row above "
                   "(mean of softmax). Rows are cached like evaluations (checkpoint, labels, view list).")
        todo = int(report_now.loc[report_now["mIoU"].isna(), "views"].sum())  # model passes per window still to run
        st.button("Compute the TTA report", key="eval_tta_run", on_click=on_tta_report, args=(cid, split),
                  disabled=not labelled or bool(tta_running) or complete,
                  help="Runs as a background job: it goes on if you leave the page (progress and Cancel below). Up "
                       "to 36 model passes per window in all (1 + 2 + … + 8 views); cached rows are reused"
                       + (f" ({todo} passes per window to run{time_estimate(labelled_px(split) * todo)})."
                          if todo and labelled else ".")
                       + (" Already running." if tta_running else " Every row is cached." if complete else ""))
        show_flash("eval_tta_flash")
        watching = tuple(j.id for j in tta_running)
        st.fragment(tta_panel, run_every=2 if watching else None)(cid, split, watching)


def extra_sections() -> None:
    tta_section()
    compare_section()


def stop() -> None:
    extra_sections()
    st.stop()


if result is None:
    if labelled and not run:
        where = f"{running_at.strip()} below" if running_at else "above"
        st.caption(f"A background evaluation of this checkpoint, split and TTA is running ({where}): its result "
                   "shows here when it is done." if running else
                   "No cached result for this checkpoint, split, TTA and the current labels. Press **Run evaluation** "
                   "(or **Run in the background**).")
    stop()

when = f" · computed {cached.created_at[:19].replace('T', ' ')} UTC" if cached is not None else ""
st.caption(f"{result.get('scenes', '?')} labelled scene(s) of the **{split}** split · TTA {tta} · "
           f"data version `{result.get('data_version', data_version)}`{when}")

# ---------------------------------------------------------------------------------------------- scheme view
try:
    scheme = get_scheme(ck.scheme)
    native_ok = list(scheme.names) == list(result["classes"])
except KeyError:
    scheme, native_ok = None, False
views = drilldown.scheme_views(ck.scheme) if native_ok else [ck.scheme]
view = st.selectbox("Class scheme view", views, key="eval_view", disabled=len(views) < 2,
                    help="Coarser schemes collapse the confusion matrix through the crosswalk (e.g. hz20 → hz14 → hz11 → hz7).")
if view not in views:
    view = views[0]
vres = drilldown.collapse_result(result, ck.scheme, view) if native_ok else result
vscheme = get_scheme(view) if native_ok else scheme
colors = screen_scheme(vscheme).hex_colors() if vscheme is not None and list(vscheme.names) == list(vres["classes"]) \
    else None
names = list(vres["classes"])

h = report.headline(vres)
m1, m2, m3, m4 = st.columns(4)
m1.metric("mIoU", report.fmt_pct(h["mIoU"]))
m2.metric("fwIoU", report.fmt_pct(h["fwIoU"]))
m3.metric("OA", report.fmt_pct(h["OA"]))
m4.metric("mean class accuracy", report.fmt_pct(vres.get("macc")))
if view != ck.scheme:
    st.caption(f"Scores recomputed on the confusion matrix collapsed from **{ck.scheme}** to **{view}**.")
if colors is not None:
    st.markdown(scheme_legend_html(vscheme), unsafe_allow_html=True)

# ---------------------------------------------------------------------------------------------- confusion matrix
mode = st.radio("Confusion matrix", list(report.CONFUSION_MODES), horizontal=True, key="eval_cm_mode",
                format_func=report.CONFUSION_MODE_LABELS.get)
cm_fig = report.confusion_figure(vres, mode, colors, clickable=True)  # clickable: cells are selectable points
event = st.plotly_chart(cm_fig, key="eval_cm", on_select="rerun", selection_mode="points")
st.caption("Click a cell to drill down into it (or choose the cell below).")

# ---------------------------------------------------------------------------------------------- per class
st.subheader("Per class")
st.dataframe(pct(report.summary_table(vres), "mIoU", "fwIoU", "OA", "mAcc"), hide_index=True, placeholder=NA)
st.dataframe(
    pct(report.per_class_table(vres), "IoU", "Acc (recall)", "Precision", "F1"), hide_index=True, placeholder=NA,
    column_config={"Support (px)": st.column_config.NumberColumn(format="localized"),
                   "Predicted (px)": st.column_config.NumberColumn(format="localized")},
)
g1, g2 = st.columns(2)
g1.plotly_chart(report.iou_bar_figure(vres, colors), key="eval_iou")
g2.plotly_chart(report.class_metric_bars(vres, colors), key="eval_class_bars")

# ---------------------------------------------------------------------------------------------- calibration
st.subheader("Calibration: how far to trust the confidence")
if not result.get("calibration"):
    st.caption("This cached result predates the calibration counts: tick **Recompute even if a cached result "
               "exists**, then press **Run evaluation**.")
else:
    cal = calibration_report(result["calibration"], list(result["classes"]))
    native = list(result["classes"])
    k1, k2, k3 = st.columns(3)
    k1.metric("ECE (expected calibration error)", "–" if cal["ece"] is None else f"{100 * cal['ece']:.1f} pp",
              help="Pixel-weighted mean gap between the model's confidence and how often the label agrees, over "
                   "10 confidence bins. 0 = the confidence means what it says.")
    k2.metric("mean confidence", report.fmt_pct(cal["confidence"]))
    k3.metric("label agrees (OA)", report.fmt_pct(cal["accuracy"]))
    if view != ck.scheme:
        st.caption(f"Calibration is over the checkpoint's own classes (**{ck.scheme}**), not the collapsed view.")
    r1, r2 = st.columns(2)
    cal_cls = r1.selectbox("Reliability of", ["__all__", *[n for n in native if cal["per_class"][n]["pixels"] > 0]],
                           key="eval_cal_class", format_func=lambda v: "all pixels" if v == "__all__" else f"pixels predicted {v}")
    abstain_pct = r2.slider("Abstain below confidence", 0, 90, 0, 10, key="eval_abstain", format="%d%%",
                            help="What you keep if you leave the pixels below this confidence for review (on the "
                                 "Map page, the low-confidence layer marks those below 90 %).")
    abstain = abstain_pct / 100
    native_colors = screen_scheme(scheme).hex_colors() if scheme is not None and native_ok else None
    col = None if cal_cls == "__all__" or native_colors is None else native_colors[native.index(cal_cls)]
    f1c, f2c = st.columns(2)
    f1c.plotly_chart(report.reliability_figure(cal, None if cal_cls == "__all__" else cal_cls, col), key="eval_reliability")
    f2c.plotly_chart(report.coverage_figure(cal, abstain), key="eval_coverage")
    row = coverage_at(cal, abstain)
    st.caption(f"Abstaining below {abstain:.0%} keeps {report.fmt_pct(row['kept'])} of the labelled pixels; the label "
               f"agrees with {report.fmt_pct(row['accuracy'])} of them (all pixels: {report.fmt_pct(cal['accuracy'])}).")
    st.dataframe(pct(report.calibration_table(cal, abstain), "mean confidence", "label agrees", "kept",
                     "label agrees (kept)").format("{:.1f}", subset=["ECE (pp)"], na_rep=NA),
                 hide_index=True, key="eval_cal_table", placeholder=NA,
                 column_config={"predicted (px)": st.column_config.NumberColumn(format="localized")})

# ---------------------------------------------------------------------------------------------- class frequencies
st.subheader("Class frequencies")
per_scene = report.per_scene_table(vres, {s.id: s.name for s in labelled})
scene_names = dict(zip(per_scene["scene"], per_scene["name"]))
f1, f2 = st.columns([3, 2])
scope = f1.selectbox("Scope", ["__split__", *scene_names], key="eval_freq_scope",
                     format_func=lambda v: f"whole {split} split" if v == "__split__" else f"scene {scene_names.get(v, v)}")
thr = f2.slider("Bias threshold (percentage points)", 0.5, 20.0, 100 * report.BIAS_THRESHOLD, 0.5, key="eval_bias_thr")
freq = report.frequency_table(vres, thr / 100, scene=None if scope == "__split__" else scope)
if scope == "__split__":
    st.plotly_chart(report.frequency_figure(vres, colors), key="eval_freq")
else:
    st.plotly_chart(report.frequency_figure({"classes": names, "confusion": vres["per_scene"][scope]}, colors),
                    key="eval_freq")
biased = freq.loc[freq["bias"] != "", "class"].tolist()
if biased:
    st.warning("Bias: predicted share differs from labelled share by more than "
               f"{thr:g} pp for " + ", ".join(f"**{c}** ({b})" for c, b in freq.loc[freq["bias"] != "", ["class", "bias"]].values))
st.dataframe(pct(report.style_pp(freq), "labelled share", "predicted share"),  # Δ: 0.0, never -0.0
             hide_index=True, key="eval_freq_table", placeholder=NA,
             column_config={"labelled (px)": st.column_config.NumberColumn(format="localized"),
                            "predicted (px)": st.column_config.NumberColumn(format="localized")})

if len(per_scene) > 1:
    with st.expander(f"Per scene ({len(per_scene)})"):
        st.dataframe(pct(per_scene, "mIoU", "fwIoU", "OA"), hide_index=True, placeholder=NA)

# ---------------------------------------------------------------------------------------------- drill-down
st.subheader("Drill-down: where does label A become prediction B?")
clicked = drilldown.cell_from_selection(event, len(names))
if clicked is not None and (*clicked, view) != st.session_state.get("eval_dd_click"):
    st.session_state["eval_dd_click"] = (*clicked, view)
    st.session_state["eval_dd_true"], st.session_state["eval_dd_pred"] = names[clicked[0]], names[clicked[1]]
cmv = np.asarray(vres["confusion"])
# another evaluation (checkpoint, split, TTA, view, labels): the page's own pick, or a cell without pixels there,
# moves to the new largest confusion; an analyst's pick that still has pixels stays
dd_sig = (cid, split, tta, view, result.get("data_version", data_version))
dd_cur = (st.session_state.get("eval_dd_true"), st.session_state.get("eval_dd_pred"))
a_name, b_name, dd_auto = drilldown.pick_cell(cmv, names, dd_cur, auto=st.session_state.get("eval_dd_auto"),
                                              changed=dd_sig != st.session_state.get("eval_dd_sig"))
if (a_name, b_name) != dd_cur:
    st.session_state["eval_dd_true"], st.session_state["eval_dd_pred"] = a_name, b_name
st.session_state["eval_dd_auto"] = (a_name, b_name) if dd_auto else None
st.session_state["eval_dd_sig"] = dd_sig
d1, d2, d3, d4 = st.columns([2, 2, 1, 1])
a_name = d1.selectbox("True class (A)", names, key="eval_dd_true")
b_name = d2.selectbox("Predicted class (B)", names, key="eval_dd_pred")
win = d3.selectbox("Window (px)", [128, 256, 512], index=1, key="eval_dd_window")
max_scenes = d4.number_input("Scenes", 1, 50, 5, key="eval_dd_scenes", help="Scenes to search, most A→B pixels first.")
a, b = names.index(a_name), names.index(b_name)
hits = drilldown.scenes_with_cell(vres, a, b)
st.caption(f"{int(cmv[a, b]):,} px labelled **{a_name}** are predicted **{b_name}**, in {len(hits)} scene(s).")
if not hits:
    st.info("No pixels in this cell.")
    stop()

lut = drilldown.view_lut(ck.scheme, view) if native_ok and view != ck.scheme else None
by_scene = {s.id: s for s in labelled}
data = {}
try:
    predictor, _ = predictor_for(ws, cid)
    with st.spinner("predicting the scenes with this confusion (cached in memory)…"):
        for sid, _n in hits[: int(max_scenes)]:
            if sid not in by_scene:
                continue
            pred = drilldown.scene_prediction(ws, cid, sid, tta, predictor)
            lbl = label_for_checkpoint(ws.effective_label(sid), by_scene[sid].scheme, ck.scheme)
            data[sid] = (pred, lbl)
except (SegHZError, ValueError, KeyError, OSError, RuntimeError) as e:
    st.error(f"Drill-down failed: {e}")
    stop()
masks = {sid: drilldown.cell_mask(p_, l_, a, b, lut) for sid, (p_, l_) in data.items()}
windows = drilldown.rank_windows(masks, int(win), limit=50)
st.dataframe(
    [{"rank": i + 1, "scene": w.scene_id, "name": by_scene[w.scene_id].name, "rows": f"{w.bbox[0]}–{w.bbox[2] - 1}",
      "cols": f"{w.bbox[1]}–{w.bbox[3] - 1}", f"{a_name}→{b_name} (px)": w.count} for i, w in enumerate(windows)],
    hide_index=True, key="eval_dd_table",
)
n_thumbs = min(len(windows), 6) if vscheme is not None else 0
images = {}
for i, w in enumerate(windows[:n_thumbs]):
    if w.scene_id not in images:
        images[w.scene_id] = read_image(ws.scene_path(w.scene_id, "image"))
    pred, lbl = data[w.scene_id]
    panels = drilldown.cell_panels(*(drilldown.crop(x, w.bbox) for x in (images[w.scene_id], lbl, pred)), a, b,
                                   screen_scheme(vscheme), lut)
    st.image(drilldown.thumbnail(panels),
             caption=f"#{i + 1} · {w.count:,} px · image | label | prediction | {a_name}→{b_name} in magenta (ringed in dim"
                     " magenta so thin edges show)")
    c_loc, c_btn = st.columns([4, 1])
    c_loc.caption("Open on map: " + drilldown.map_location(by_scene[w.scene_id], w.bbox))
    if c_btn.button("Open on map", key=f"eval_dd_map_{i}"):
        st.session_state["map_jump"] = drilldown.map_jump(w, checkpoint_id=cid, checkpoint_name=ck.name,
                                                          why=f"{a_name} predicted as {b_name} by {ck.name}",
                                                          tta=tta, cell=(a_name, b_name, view))
        st.switch_page("pages/1_Map.py")

keys = [w.key() for w in windows]
send_label = {w.key(): f"#{i + 1} · {by_scene[w.scene_id].name} · rows {w.bbox[0]}–{w.bbox[2] - 1}, cols {w.bbox[1]}–"
                       f"{w.bbox[3] - 1} · {w.count:,} px" for i, w in enumerate(windows)}
# The selection starts at this cell's top windows (those with thumbnails) and starts there again whenever the cell
# or its windows change (another cell, split, checkpoint, TTA, view, window size, labels): the widget's key alone
# would keep the previous cell's picks, or none when they are not windows of this cell.
send_sig = (cid, split, tta, view, a_name, b_name, tuple((w.key(), w.count) for w in windows))
if ss.get("eval_dd_send_sig") != send_sig or "eval_dd_send_sel" not in ss:
    ss["eval_dd_send_sel"], ss["eval_dd_send_sig"] = keys[:n_thumbs], send_sig
chosen = st.multiselect("Windows to send to label review", keys, key="eval_dd_send_sel",
                        format_func=lambda k: send_label.get(k, k))
sender = analyst_name()
if st.button("Send to label review", key="eval_dd_send", disabled=not chosen or not sender):
    picked = [w for w in windows if w.key() in chosen]
    n = drilldown.add_to_review_list(ws, picked, true_class=a_name, pred_class=b_name, scheme=view,
                                     checkpoint_id=cid, analyst=sender, tta=tta)
    names = ", ".join(dict.fromkeys(by_scene[w.scene_id].name for w in picked))
    st.session_state["eval_dd_sent_scene"] = picked[0].scene_id
    st.success(f"Added {n} window(s) to the label review ({len(picked) - n} already there). On the Labels page they "
               f"are listed under “Sent from Evaluate for review” for {names}.")
if st.session_state.get("eval_dd_sent_scene") in by_scene and st.button("Open the Labels page on the sent windows",
                                                                         key="eval_dd_open_labels"):
    st.session_state["lbl_open_scene"] = st.session_state.pop("eval_dd_sent_scene")
    st.switch_page("pages/3_Labels.py")
if not sender:
    st.caption("Enter your analyst name in the sidebar to send windows: the Labels page shows who sent them.")

extra_sections()
