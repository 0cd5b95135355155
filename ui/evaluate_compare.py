"""The Evaluate page's "Compare checkpoints" section: two or more checkpoints side by side, per-class IoU deltas with
paired-bootstrap intervals, the mIoU differences the split can tell apart, and the pixels two of them predict
differently in a region of a scene.

It does not depend on the evaluation shown above it: the page draws it at its end (also where it stops early).
Checkpoints without a cached evaluation on the comparison's split are evaluated by background "evaluate" jobs (no TTA,
one per checkpoint); their progress and Cancel are in this section's panel (:func:`compare_jobs_panel`, a fragment that
polls while they run), and the page reruns as each ends.
"""
from __future__ import annotations

import streamlit as st

from seghz import compare, drilldown
from seghz.classes import get_scheme
from seghz.data.io import read_image
from seghz.errors import SegHZError
from seghz.jobs import runner
from seghz.jobs.kinds import submit_missing_evaluations
from ui.common import predictor_for, screen_scheme
from ui.evaluate_jobs import JOB_ENDED, Selection, compare_default, eval_jobs, job_outcome, job_progress, show_flash
from ui.evaluate_scores import NA, pct


def on_compare_missing(sel: Selection, chosen: tuple[str, ...], csplit: str) -> None:
    """Submit one background "evaluate" job per selected checkpoint still missing on ``csplit`` (not a second one
    where such a job is queued or running)."""
    ss, by_id = st.session_state, sel.by_id
    try:
        got = submit_missing_evaluations(sel.ws, list(chosen), csplit)
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


def compare_jobs_panel(sel: Selection, chosen: tuple[str, ...], csplit: str, missing: tuple[str, ...],
                       watching: tuple[str, ...]) -> None:
    """The comparison's background evaluations on ``csplit`` (every queued or running no-TTA evaluation of the
    compared checkpoints: the panel at the top leaves them to this one): progress and Cancel while they run, how the
    last one of a checkpoint still missing ended when it did not succeed. The page reruns as each watched one ends.
    Redrawn in one slot per poll (see ``ui.evaluate_jobs.background_panel``)."""
    ws, by_id = sel.ws, sel.by_id
    runner.refresh_job_states(ws)
    active_now = [j for c in chosen for j in eval_jobs(ws, c, csplit, "none", active_only=True)]
    if set(watching) - {j.id for j in active_now}:
        st.rerun()  # one ended: the table and the per-class deltas show its result
    ended = []
    for c in missing:
        jobs = eval_jobs(ws, c, csplit, "none")
        if jobs and not jobs[0].active and jobs[0].status in JOB_ENDED:
            ended.append((c, jobs[0]))
    running_now = ws.list_jobs(status="running") if any(j.status == "queued" for j in active_now) else []
    slot = st.empty()
    if not (active_now or ended):
        return
    with slot.container():
        for j in active_now:
            c = (j.config or {}).get("checkpoint_id")
            job_progress(ws, j, f"background evaluation of {by_id[c].name if c in by_id else c} on {csplit}",
                         f"eval_cmp_cancel_{j.id}", running_now)
        for c, j in ended:
            job_outcome(j, f"background evaluation of `{by_id[c].name}` on {csplit}")


def compare_section(sel: Selection, poll_s: float | None) -> None:
    """Two or more checkpoints side by side, per-class IoU deltas, and the pixels two of them predict differently.
    ``poll_s``: how often the jobs panel redraws itself while any evaluation job runs (None when none does)."""
    ws, by_id = sel.ws, sel.by_id
    st.divider()
    st.subheader("Compare checkpoints")
    chosen = st.multiselect("Checkpoints (the first is the baseline)", sel.ids, default=compare_default(sel),
                            key="eval_cmp_sel", format_func=lambda i: compare.checkpoint_label(by_id[i]))
    if len(chosen) < 2:
        st.caption("Pick two or more registered checkpoints to compare.")
        return
    csplit = st.radio("Split for per-class IoU", ["val", "test", "train"], horizontal=True, key="eval_cmp_split")
    has_labels = any(s.label_path for s in ws.list_scenes(csplit))
    missing = compare.missing_evaluations(ws, chosen, csplit) if has_labels else []
    cmp_active = [j for c in chosen for j in eval_jobs(ws, c, csplit, "none", active_only=True)]
    busy = {(j.config or {}).get("checkpoint_id") for j in cmp_active}
    to_run = [c for c in missing if c not in busy]
    if missing:
        st.caption(f"{len(missing)} of them {'has' if len(missing) == 1 else 'have'} no cached evaluation on the "
                   f"**{csplit}** split for the current labels: "
                   + ", ".join(f"`{by_id[c].name}`" for c in missing)
                   + (f" ({len(missing) - len(to_run)} being evaluated in the background)"
                      if len(to_run) < len(missing) else ""))
        st.button(f"Evaluate {len(to_run) or len(missing)} missing on {csplit}", key="eval_cmp_run", type="primary",
                  on_click=on_compare_missing, args=(sel, tuple(chosen), csplit), disabled=not to_run,
                  help="One background evaluation job per checkpoint (no TTA): they go on if you leave the page "
                       "(progress and Cancel below), and the table fills in as each ends."
                       + (" Already running for all of them." if not to_run else ""))
    elif not has_labels:
        st.caption(f"The **{csplit}** split has no labelled scenes: per-class deltas need an evaluation.")
    show_flash("eval_cmp_flash")
    watching = tuple(j.id for j in cmp_active)
    st.fragment(compare_jobs_panel, run_every=poll_s or (2 if watching else None))(sel, tuple(chosen), csplit,
                                                                                   tuple(missing), watching)
    entries = compare.comparison_entries(ws, chosen)
    table = compare.comparison_table(entries)
    st.dataframe(pct(table, *(c for c in table.columns if c not in ("checkpoint", "note"))), hide_index=True,
                 key="eval_cmp_table", placeholder=NA)
    st.caption(f"**({compare.MEASURED})**: scored on this workspace's split with its current labels (cached "
               f"evaluations without TTA; – = not evaluated yet). **({compare.RECORDED})**: the score the checkpoint "
               "recorded when it was trained, on that run's own validation/test data, which may not be this "
               "workspace's: do not rank checkpoints across the two kinds. Note = recipe keys that differ from the "
               "first.")
    results = {}
    for c in chosen:
        hit = compare.split_scores(ws, c, csplit)
        if hit[1] == "evaluated":
            results[compare.checkpoint_label(by_id[c])] = hit[0]
    if chosen[0] not in missing and len(results) >= 2:
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
    changed_pixels(sel, chosen)


def changed_pixels(sel: Selection, chosen: list[str]) -> None:
    """Checkpoints A and B (among the ``chosen`` ones) predict the centre of a scene; the pixels they predict
    differently, their share and the most frequent class pairs among them."""
    ws, by_id = sel.ws, sel.by_id
    st.markdown("**Changed pixels: where two checkpoints predict differently**")
    scenes_all = ws.list_scenes()
    if not scenes_all:
        st.caption("No scenes in the workspace.")
        return
    scene_by = {s.id: s for s in scenes_all}
    p1, p2, p3, p4 = st.columns([2, 2, 2, 1])
    ca = p1.selectbox("Checkpoint A", chosen, key="eval_cmp_a", format_func=lambda i: by_id[i].name)
    cb_ = p2.selectbox("Checkpoint B", chosen, index=1, key="eval_cmp_b", format_func=lambda i: by_id[i].name)
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
                  help=f"{got['changed']:,} of {got['total']:,} px (rows {r0}–{r1 - 1}, cols {c0}–{c1 - 1}, scheme "
                       f"{got['scheme']})")
        st.image(got["image"], caption=f"image | {by_id[ca].name} (A) | {by_id[cb_].name} (B) | "
                                       "changed pixels in magenta")
        pairs = compare.changed_pairs_table(got, top=10)
        st.dataframe(pct(pairs, "share of changed"), hide_index=True, key="eval_cmp_pairs",
                     column_config={"pixels": st.column_config.NumberColumn(format="localized")})
