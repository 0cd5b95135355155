"""Evaluate: score a checkpoint on a split of the workspace (effective, i.e. corrected, labels).

Results are cached in the workspace per (checkpoint, split, TTA, data version) and show at once when present. The scene
filter scores chosen scenes of the split only: such an evaluation is cached apart from the whole split's
(``seghz.evaluate.scene_scope``), and the headline, confusion matrix, tables, calibration and drill-down cover exactly
those scenes; the TTA report and the checkpoint comparison stay on the whole split.

An evaluation runs inline in this page's script run (lost if the analyst leaves the page before it ends) or as a
background "evaluate" job in a worker process (``ui.evaluate_jobs``: the buttons, the panel of its progress and Cancel
under them, and one line with a Show button for each other evaluation job). The result is drawn by
``ui.evaluate_scores`` (scheme view, headline tiles, confusion matrix, per-class tables, calibration, class
frequencies) and ``ui.evaluate_drilldown`` (the confusion browser: where label A becomes prediction B, with windows to
open on the Map page or send to label review). The TTA report (``ui.evaluate_tta``) and the checkpoint comparison
(``ui.evaluate_compare``) do not depend on the result: they are drawn at the page's end, also where it stops early.
"""
from __future__ import annotations

import streamlit as st

from seghz import compare, drilldown
from seghz.errors import SegHZError
from seghz.evaluate import evaluate_split
from seghz.jobs import runner
from seghz.jobs.kinds import evaluation_jobs
from ui import evaluate_jobs as evj
from ui import evaluate_scores as evs
from ui.common import page_header, predictor_for, progress_callback
from ui.evaluate_compare import compare_section
from ui.evaluate_drilldown import drilldown_section
from ui.evaluate_tta import tta_section

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
    format_func=lambda i: compare.checkpoint_label(by_id[i]),  # stable text: the browser sends it back (no "active")
    help="The active model is preselected." + (f" Active now: {compare.checkpoint_label(active)}." if active else ""),
)
split = c2.radio("Split", ["val", "test", "train"], horizontal=True, key="eval_split")
tta = c3.radio("Test-time augmentation", ["none", "d4"], horizontal=True, key="eval_tta",
               help="d4 averages the 8 flips/rotations of every window: usually a little better, 8× slower.")
ck = by_id[cid]
split_labelled = [s for s in ws.list_scenes(split) if s.label_path]
scenes = evj.scene_filter(split, split_labelled)  # () = the whole split
labelled = [s for s in split_labelled if not scenes or s.id in scenes]  # what the evaluation scores
sel = evj.Selection(ws, by_id, active, cid, split, tta, scenes)

data_version = ws.data_version(split, scenes or None)  # chosen scenes: their own data version
cached = ws.find_evaluation(cid, sel.scope, tta != "none", data_version, tta_spec=tta)
result = cached.result if cached is not None and cached.result.get("tta") == tta else None

# ---------------------------------------------------------------------------------------------- background runs
runner.refresh_job_states(ws)
all_active = evaluation_jobs(ws, active_only=True)
# The panel under the buttons and the comparison's redraw themselves every 2 s while any evaluation job is queued or
# running, not only while one of their own is: each redraw shows the jobs as they are now, and what a panel showed
# before goes with its next redraw even where the browser kept it (greyed) after a whole-page run. (The TTA report's
# panel, which redraws its table, polls for its own job only.)
POLL_S = 2 if all_active else None
running = evj.eval_jobs(ws, cid, sel.scope, tta, active_only=True)  # this checkpoint/split/TTA: whichever panel shows them
# where its progress and Cancel are: the panel under the buttons, or (a comparison's job) under Compare checkpoints
running_at = evj.running_at(sel, running)

force, run = evj.job_controls(sel, labelled, result, running, running_at)
st.fragment(evj.background_panel, run_every=POLL_S)(sel, bool(running))

if run:
    bar = st.progress(0.0, text=f"evaluating {ck.name} on {len(labelled)} {split} scene(s)…")
    try:
        predictor, _ = predictor_for(ws, cid)
        result = evaluate_split(ws, cid, split, tta, predictor=predictor, progress=progress_callback(bar),
                                use_cache=not force, scene_ids=scenes,  # predictions kept for the drill-down
                                on_prediction=lambda sid, p: drilldown.save_scene_prediction(ws, cid, sid, tta, p))
        cached = ws.find_evaluation(cid, sel.scope, tta != "none", data_version, tta_spec=tta)
    except (SegHZError, ValueError, KeyError, OSError, RuntimeError) as e:
        result = None
        st.error(f"Evaluation failed: {e}")
    finally:
        bar.empty()


# ---------------------------------------------------------------------------------------------- comparisons
# Checkpoint comparison and the TTA report do not depend on the result above; they render at the page's end
# (also where the page stops early) through extra_sections(). Their long computations run as background jobs
# ("evaluate" per missing checkpoint, "tta_report"): panels poll them, and the page reruns when one ends.
def extra_sections() -> None:
    tta_section(sel, split_labelled)  # of the whole split
    compare_section(sel, POLL_S)


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
which = (f"{result.get('scenes', '?')} chosen labelled scene(s) of the **{split}** split ("
         + ", ".join(s.name for s in labelled) + ")") if scenes else \
    f"{result.get('scenes', '?')} labelled scene(s) of the **{split}** split"
st.caption(f"{which} · TTA {tta} · data version `{result.get('data_version', data_version)}`{when}")

view = evs.scheme_view(ck, result)  # the scheme picker and the headline tiles
evj.per_scene_scores(view, labelled)  # next to the headline, when there are several scenes
event = evs.confusion_matrix(view)
evs.per_class(view)
evs.calibration(ck, result, view)
evs.class_frequencies(view, labelled, split)
if not drilldown_section(sel, view, event, result, data_version, labelled):
    stop()

extra_sections()
