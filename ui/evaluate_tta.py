"""The Evaluate page's TTA report: mIoU as test-time augmentation views are added one at a time (the study's NAIC
table), for the page's checkpoint and split.

It is computed on demand by a background "tta_report" job whose rows land in the evaluation cache (one per view
list), where ``compare.tta_report(..., compute=False)`` reads them: while the job runs its progress and Cancel are in
the report, with the rows scored so far (:func:`tta_panel`, a fragment that polls while the job runs), and the page
reruns when it ends. Like the comparison it does not depend on the evaluation shown above it: the page draws it at its
end (also where it stops early).
"""
from __future__ import annotations

import streamlit as st

from seghz import compare, report
from seghz.errors import SegHZError
from seghz.jobs import runner
from seghz.jobs.kinds import evaluation_jobs, submit_evaluation_job
from ui.evaluate_jobs import JOB_ENDED, Selection, job_outcome, job_progress, labelled_px, show_flash, time_estimate
from ui.evaluate_scores import NA, pct

TTA_OPEN = "eval_tta_open"  # the TTA report expander's state (open or closed)


def on_tta_report(ws, c: str, sp: str) -> None:
    """Submit the TTA report job of (checkpoint, split), unless one is queued or running (then that one is shown)."""
    ss = st.session_state
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


def tta_panel(ws, c: str, sp: str, watching: tuple[str, ...]) -> None:
    """The TTA report's job (progress and Cancel while it runs, how the last one ended when it did not succeed) and
    the rows cached so far: while a job runs, rows show as they are scored. The page reruns when it ends. Redrawn as
    one new container per poll (see ``ui.evaluate_jobs.background_panel``; never empty: the table or a line saying it
    is not computed)."""
    runner.refresh_job_states(ws)
    jobs = evaluation_jobs(ws, "tta_report", c, sp, "d4")
    active_now = [j for j in jobs if j.active]
    if set(watching) - {j.id for j in active_now}:
        st.rerun()  # it ended: the button comes back (or stays off when every row is cached)
    table = compare.tta_report(ws, c, sp, compute=False)
    running_now = ws.list_jobs(status="running") if any(j.status == "queued" for j in active_now) else []
    with st.empty().container():
        for j in active_now:
            job_progress(ws, j, "background TTA report", f"eval_tta_cancel_{j.id}", running_now)
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


def on_tta_toggle(ws, cid: str, split: str) -> None:
    """The analyst opened or closed the TTA report: a close while its job runs is kept (the report is not opened again
    for that job)."""
    ss = st.session_state
    if ss.get(TTA_OPEN):
        ss["eval_tta_closed_on"] = None
    else:
        now = evaluation_jobs(ws, "tta_report", cid, split, "d4", active_only=True)
        ss["eval_tta_closed_on"] = now[0].id if now else None


def tta_section(sel: Selection, labelled: list) -> None:
    """mIoU as TTA views are added one at a time (the study's NAIC table), on demand as a background job, cached per
    view list. ``labelled``: the labelled scenes of the page's split (none: nothing to compute).

    The expander keeps its state (``TTA_OPEN``) across reruns: it is opened when its job is submitted and while one
    runs (its progress and Cancel are in it) unless the analyst closed it during that job; otherwise it stays as the
    analyst left it. Its place on the page does not depend on whether a job runs (the line above it is always there,
    empty without a job)."""
    ws, cid, split, ck = sel.ws, sel.cid, sel.split, sel.ck
    ss = st.session_state
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
                     on_change=on_tta_toggle, args=(ws, cid, split)):
        st.caption(f"Checkpoint **{ck.name}** on the **{split}** split; each row adds one view to the row above "
                   "(mean of softmax). Rows are cached like evaluations (checkpoint, labels, view list).")
        todo = int(report_now.loc[report_now["mIoU"].isna(), "views"].sum())  # model passes per window still to run
        st.button("Compute the TTA report", key="eval_tta_run", on_click=on_tta_report, args=(ws, cid, split),
                  disabled=not labelled or bool(tta_running) or complete,
                  help="Runs as a background job: it goes on if you leave the page (progress and Cancel below). Up "
                       "to 36 model passes per window in all (1 + 2 + … + 8 views); cached rows are reused"
                       + (f" ({todo} passes per window to run{time_estimate(ws, labelled_px(ws, split) * todo)})."
                          if todo and labelled else ".")
                       + (" Already running." if tta_running else " Every row is cached." if complete else ""))
        show_flash("eval_tta_flash")
        watching = tuple(j.id for j in tta_running)
        st.fragment(tta_panel, run_every=2 if watching else None)(ws, cid, split, watching)
