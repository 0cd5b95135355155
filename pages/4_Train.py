"""Train: launch a training job in the background, watch it, then promote its checkpoint through the
regression gate (seghz.gate: per-class IoU against the active model on the same validation data; a flagged
candidate needs a recorded override), roll back, and see the promotion history. Head refits started from the
Labels page are listed with the training jobs and go through the same gate and Promote / override flow.

Jobs run in their own processes (seghz.jobs); all state is in the workspace index, so closing the tab or
rerunning the page loses nothing. The job list refreshes itself every 2 s only while a job is active.
"""
from __future__ import annotations

import json
from collections import Counter

import streamlit as st

from seghz import candidate, report
from seghz.classes import get_scheme, scheme_names
from seghz.jobs.kinds import submit_retrain_job
from seghz.jobs.runner import RETRYABLE_STATUSES, cancel_job, refresh_job_states, retry_job, tail_log
from seghz.store import NotFoundError
from seghz.train.form import (
    BOOTSTRAPS,
    CLASS_WEIGHTS,
    CLEANS,
    COTEACH_SELECT,
    NOISE_DENOMINATORS,
    NOISE_MASKS,
    NOISE_MATRICES,
    PRESETS,
    REFINES,
    ROBUSTS,
    SAMPLERS,
    form_state_from_config,
    noise_threshold_from_p,
    preset_state,
)
from ui import train_gate
from ui.candidates import show_refit_accuracy, show_training_scores, show_validation_comparison
from ui.common import page_header, review_noise_for, screen_scheme
from ui.registry import active_model_panel, registry_panel

ARCHS = ["Unet"]
ENCODERS = ["tu-efficientnet_lite0"]
WEIGHTS = ["lite0-imagenet", "none"]
JOB_LIST_LIMIT = 50
START_OPTIONS = {"finetune": "the active checkpoint (fine-tune)", "scratch": "scratch (new model)"}

ws = page_header("Train", "Fine-tune the active model on the corrected labels of the train split, or train a new one.")
ss = st.session_state
refresh_job_states(ws)
active = ws.active_checkpoint()
train_gate.show_promoted()
train_scenes = [s for s in ws.list_scenes("train") if s.label_path]
val_scenes = [s for s in ws.list_scenes("val") if s.label_path]


def validate(cfg: dict, fine_tune: bool) -> list[str]:
    """Plain-language problems with a training request (empty when it can be launched)."""
    errors = []
    if fine_tune and active is None:
        errors.append("There is no active checkpoint to fine-tune; choose “from scratch”.")
    if not train_scenes:
        errors.append("The train split has no labelled scenes: there is nothing to train on.")
    if cfg["crop_size"] < 32 or cfg["crop_size"] % 32:
        errors.append(f"Crop size must be a multiple of 32 and at least 32 (got {cfg['crop_size']}); "
                      f"e.g. {max(32, round(cfg['crop_size'] / 32) * 32)}.")
    elif train_scenes and cfg["crop_size"] > min(min(s.width, s.height) for s in train_scenes):
        small = min(train_scenes, key=lambda s: min(s.width, s.height))
        errors.append(f"Crop size {cfg['crop_size']} is larger than the smallest training scene "
                      f"('{small.name}', {small.width}×{small.height} px).")
    if cfg["epochs"] < 1:
        errors.append("Epochs must be at least 1.")
    if cfg["batch_size"] < 1:
        errors.append("Batch size must be at least 1.")
    if cfg["batch_size"] == 1 and cfg["crop_size"] <= 32:
        errors.append("Batch size 1 with a 32 px crop cannot train (batch normalisation needs more than one value).")
    if not (0 < cfg["lr"] < 1):
        errors.append(f"Learning rate must be between 0 and 1 (got {cfg['lr']}).")
    if cfg.get("steps_per_epoch") is not None and cfg["steps_per_epoch"] < 1:
        errors.append("Steps per epoch must be at least 1 (or 0 for automatic).")
    if not errors and cfg.get("noise_from_review"):
        scheme_used = active.scheme if fine_tune and active is not None else cfg["scheme"]
        errors.extend(f"Noise matrix from your reviews: {p}." for p in review_noise_for(ws, "train", scheme_used).problems())
    if not errors:
        from seghz.train.trainer import TrainConfig

        try:
            TrainConfig(**{k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__}).validate()
        except (ValueError, KeyError, TypeError) as e:
            errors.append(str(e))
    return errors


# ------------------------------------------------------------------------------------------------ launch form
st.subheader("Launch a training run")
st.caption(f"Training data: {len(train_scenes)} labelled train scene(s); validation: {len(val_scenes)} val scene(s) "
           "(latest label versions).")
clone = ss.pop("train_clone_request", None)  # "Clone into the form" of a job below: prefill the widgets
if clone is not None:
    state, notes = form_state_from_config(
        clone["config"], active_id=active.id if active else None,
        options={"train_arch": ARCHS, "train_encoder": ENCODERS, "train_weights": WEIGHTS, "train_scheme": scheme_names()})
    ss.update(state)
    st.info(f"The form is filled from job `{clone['job_id']}`: edit it and launch." + "".join(f"\n\n- {n}" for n in notes))
preset_cols = st.columns([1] + [2] * len(PRESETS))
preset_cols[0].markdown("**Recipe presets**", help="\n\n".join(f"**{label}**: {what}" for label, what, _ in PRESETS.values()))
for col, (pkey, (label, what, _)) in zip(preset_cols[1:], PRESETS.items()):
    if col.button(label, key=f"train_preset_{pkey}", help=what, width="stretch"):
        ss.update(preset_state(pkey))  # before the form's widgets exist in this run: they take these values
        ss["train_preset_applied"] = pkey
if ss.get("train_preset_applied") in PRESETS:
    label, what, _ = PRESETS[ss["train_preset_applied"]]
    st.info(f"Recipe preset **{label}** is in the form (open *Recipe* to see or change it): {what}")
modes = ["finetune", "scratch"] if active is not None else ["scratch"]
# option texts that never change: the browser keeps the selection as its text, and a text naming the active model
# matched no option once Promote changed it (neither option showed selected); the model's name is in the captions
start = st.radio(
    "Start from", modes, horizontal=True, key="train_start", format_func=START_OPTIONS.get,
    captions=[f"fine-tunes {active.name}" if m == "finetune" and active else "architecture and classes below"
              for m in modes],
)
fine_tune = start == "finetune"
# Enter in a number box must not launch a training run (it queued one job per Enter, each with the settings typed
# so far): only the button submits
with st.form("train_form", enter_to_submit=False):
    if fine_tune:
        st.markdown(f"Fine-tunes **{active.name}** (`{active.id}`, {active.arch}/{active.encoder}, scheme "
                    f"**{active.scheme}**); architecture and classes come from it.")
        scheme = active.scheme
    else:
        f1, f2, f3, f4 = st.columns(4)
        arch = f1.selectbox("Architecture", ARCHS, key="train_arch")
        encoder = f2.selectbox("Encoder", ENCODERS, key="train_encoder")
        weights = f3.selectbox("Encoder weights", WEIGHTS, key="train_weights",
                               help="lite0-imagenet: ImageNet-pretrained EfficientNet-Lite0 (shipped, offline); none: random.")
        common = Counter(s.scheme for s in train_scenes).most_common(1)
        names = scheme_names()
        default_scheme = common[0][0] if common and common[0][0] in names else ("hz7" if "hz7" in names else names[0])
        scheme = f4.selectbox("Class scheme", names, index=names.index(default_scheme), key="train_scheme")
    g1, g2, g3, g4, g5 = st.columns(5)
    epochs = g1.number_input("Epochs", min_value=0, max_value=1000, value=10 if fine_tune else 30, step=1,
                             key=f"train_epochs_{start}")
    batch = g2.number_input("Batch size", min_value=0, max_value=512, value=8, step=1, key="train_batch")
    crop = g3.number_input("Crop size (px)", min_value=0, max_value=2048, value=224, step=32, key="train_crop",
                           help="Random training crops; a multiple of 32.")
    steps = g4.number_input("Steps per epoch", min_value=0, max_value=100000, value=0, step=10, key="train_steps",
                            help="0 = automatic (about one pass over the training pixels per epoch).")
    lr = g5.number_input("Learning rate", min_value=0.0, max_value=1.0, value=1e-3 if fine_tune else 2e-3,
                         step=1e-4, format="%.5f", key=f"train_lr_{start}")
    with st.expander("Recipe: losses, noise mask, sampler, early stopping"):
        r1, r2, r3, r4 = st.columns(4)
        class_weights = r1.selectbox("Class weights", list(CLASS_WEIGHTS), key="train_cw",
                                     help="enet: the study's 1/ln(1.02+f); inverse: 1/f normalised; none: plain CE.")
        dice = r2.checkbox("+ Dice loss", value=True, key="train_dice")
        smoothing = r3.number_input("Label smoothing ε", min_value=0.0, max_value=0.5, value=0.0, step=0.05,
                                    key="train_smooth")
        sampler = r4.selectbox("Crop sampler", list(SAMPLERS), key="train_sampler",
                               help="class_aware: the study's building-aware sampler (crops rich in building classes).")
        n1, n2, n3, n4 = st.columns(4)
        noise = n1.selectbox("Noise mask", list(NOISE_MASKS), key="train_noise",
                             help="Drop pixels whose loss exceeds a threshold: cos = the study's schedule from "
                                  "−ln 0.01 to −ln 0.1; const = a fixed threshold. Analyst-trusted pixels are never dropped.")
        ohem = n2.checkbox("OHEM", key="train_ohem", help="Keep only hard pixels (true-class p < 0.7, with a minimum).")
        consistency = n3.checkbox("Multi-view consistency", key="train_consistency",
                                  help="CE on a random rot90 view + MSE between the two views' logits.")
        patience = n4.number_input("Early stop after N epochs without gain (0 = off)", min_value=0, max_value=1000,
                                   value=0, step=1, key="train_patience")
        d1, d2, d3, d4 = st.columns(4)
        noise_den = d1.selectbox("Noise-mask denominator", list(NOISE_DENOMINATORS), key="train_noise_den",
                                 disabled=noise == "none",
                                 help="all: dropped pixels stay in the mean's denominator as zeros (the study), so "
                                      "the kept pixels' gradient shrinks as more are dropped; kept: the mean is over "
                                      "the kept pixels only. On 30 % flipped GID labels (CPU scale, 4 seeds) kept "
                                      "recovered +0.13 ± 0.05 of the noise cost, all −0.05 ± 0.17: see "
                                      "docs/experiments.md.")
        noise_p = d2.number_input("Constant threshold: drop where p(label) <", min_value=0.0001, max_value=0.5,
                                  value=0.01, step=0.005, format="%.4f", key="train_noise_p", disabled=noise != "const",
                                  help="const: pixels whose predicted probability of their label is below this are "
                                       "dropped (CE threshold −ln p; the study's thre_0.01 is 0.01).")
        coteach = d3.number_input("Co-teaching forget rate (0 = off)", min_value=0.0, max_value=0.9, value=0.0,
                                  step=0.05, key="train_coteach",
                                  help="Co-teaching (Han et al. 2018): a second network trains beside the model on "
                                       "the same batches, and each one's loss counts only the pixels its peer finds "
                                       "easiest; this share of them (e.g. the expected label noise, 0.3) is left "
                                       "out, rising from 0 over the first 20 % of the steps. Twice the training "
                                       "time and memory; one process only (no multi-GPU). Not with the noise mask, "
                                       "OHEM, bootstrapping, consistency or a robust loss. Trusted pixels always "
                                       "count. Measured on 30 % flipped GID labels (CPU proxy, ImageNet Lite0, 800 "
                                       "steps, 3 seeds): −0.32 ± 0.27 of the noise cost, worse than plain CE; not "
                                       "measured on a GPU. See docs/experiments.md.")
        coteach_select = d4.selectbox("Co-teaching ranks pixels", list(COTEACH_SELECT), key="train_coteach_select",
                                      disabled=coteach == 0,
                                      help="class: within each given class of the batch, so a rare or still unlearnt "
                                           "class keeps its share of pixels; pixel: all the batch's pixels together "
                                           "(the paper's rule; the hardest class can be left out whole).")
        b1, b2, b3, b4 = st.columns(4)
        bootstrap = b1.selectbox("Bootstrapping", list(BOOTSTRAPS), key="train_boot",
                                 help="Reed et al. 2015: train on β·label + (1−β)·prediction (soft: probabilities, "
                                      "hard: predicted class), so confidently contradicted labels weigh less. "
                                      "Trusted pixels always train on their label.")
        boot_beta = b2.number_input("Bootstrapping β", min_value=0.0, max_value=1.0, value=0.8, step=0.05,
                                    key="train_boot_beta", disabled=bootstrap == "none")
        clean = b3.selectbox("Label cleaning", list(CLEANS), key="train_clean",
                             help="crossfit: two fold models, each trained on the other half of the images (half of "
                                  "the steps), judge the half they never saw; label regions they confidently call "
                                  "another class are relabelled, doubtful ones ignored; the final model trains on "
                                  "the cleaned labels (the other half of the steps). Trusted pixels never change. "
                                  "Measured on 30 % flipped GID labels (CPU proxy, 3 seeds): it caught 82–84 % of the "
                                  "flips but also dropped most true Road_land, and recovered −0.05 ± 0.22 of the "
                                  "noise cost, i.e. nothing; review the labels instead where you can.")
        refine = b4.selectbox("Label refinement", list(REFINES), key="train_refine",
                              help="The training model re-judges the labels at the end of every epoch (always from "
                                   "the given ones), from 10 % of the epochs on (drop) or 40 % (region). drop: a whole "
                                   "label component whose mean "
                                   "prediction prefers another class is ignored, at most half of any class's pixels, "
                                   "the most doubted first (on 30 % flipped GID labels, fine-tuning from ImageNet at the study's "
                                   "4000-step GPU budget, it recovered 0.60 ± 0.05 of the noise cost over 3 seeds — "
                                   "the *Noisy labels* preset —, 0.65 ± 0.07 with GCE; 0.36 ± 0.25 on the 800-step "
                                   "CPU proxy; from scratch at the GPU budget +0.00 ± 0.22: see docs/experiments.md). It drops doubted "
                                   "components even where nothing is wrong, so use it only on labels known to be "
                                   "noisy (on clean labels it cost 5–7 points on the CPU proxy, 8–22 with GCE). region: pieces it confidently calls another class are "
                                   "relabelled (it can learn its own mistakes). Trusted pixels never change.")
        m1, m2, m6, m3, m5, m4 = st.columns(6)
        robust = m1.selectbox("Noise-robust loss", list(ROBUSTS), key="train_robust",
                              help="Replaces CE for noisy labels (not with the noise mask, OHEM or bootstrapping). "
                                   "forward: loss correction (Patrini et al. 2017) — the model's probabilities are "
                                   "passed through a symmetric noise matrix (1−η kept, η spread over the other classes "
                                   "present) before the loss; gce: generalized cross entropy (Zhang & Sabuncu 2018), "
                                   "(1 − p^q)/q, between CE (q → 0) and MAE (q = 1). Trusted pixels always train on "
                                   "plain CE; prediction is unchanged.")
        noise_rate = m2.number_input("Expected label noise η", min_value=0.0, max_value=0.8, value=0.3, step=0.05,
                                     key="train_noise_rate", disabled=robust != "forward",
                                     help="forward, symmetric matrix: the expected share of wrong labels (below (K−1)/K).")
        noise_from = m6.selectbox("Noise matrix", list(NOISE_MATRICES), key="train_noise_from",
                                  disabled=robust != "forward",
                                  help="forward: symmetric = 1−η kept, η spread evenly; reviews = counted on the pixels "
                                       "analysts corrected or confirmed in the train split (label as given vs as "
                                       "reviewed; see *Label noise measured from your reviews* below the form). Review "
                                       "whole tiles: reviewing only the wrong labels over-states the noise, and the "
                                       "job refuses a matrix that calls a class mostly mislabelled.")
        gce_q = m3.number_input("GCE q", min_value=0.05, max_value=1.0, value=0.7, step=0.05, key="train_gce_q",
                                disabled=robust != "gce", help="gce: 0.7 in the paper; smaller is closer to CE.")
        gce_warmup = m5.number_input("GCE warm-up (share of the epochs)", min_value=0.0, max_value=1.0, value=0.0,
                                     step=0.1, key="train_gce_warmup", disabled=robust != "gce",
                                     help="gce: q rises from 0 (plain CE) to q over this share of the epochs; 0 = GCE "
                                          "from the first step. Measured with component drop (warm-up 0.5, CPU "
                                          "proxy, one seed): no gain, from scratch or from ImageNet weights.")
        ema = m4.number_input("Weight averaging (share of the steps)", min_value=0.0, max_value=1.0, value=0.0,
                              step=0.01, key="train_ema",
                              help="0 = off. Keep a moving average of the weights over this share of the run's steps "
                                   "(0.05 = the last ≈ 5 %); the average is validated, saved as the checkpoint and, "
                                   "with label refinement, judges the labels. Smooths the last batches' noise.")
        auto_promote = st.checkbox("Promote automatically when the regression gate passes", key="train_auto_promote",
                                   help="Only on a PASS with no class dropping beyond the margin: under the interval "
                                        "rule, a drop let through as tile noise waits for an analyst.")
    run_name = st.text_input("Name of the new checkpoint (optional)", key="train_name")
    submitted = st.form_submit_button("Launch training", type="primary", key="train_submit")

if submitted:
    config: dict = {"epochs": int(epochs), "batch_size": int(batch), "crop_size": int(crop), "lr": float(lr),
                    "steps_per_epoch": int(steps) or None, "scheme": scheme, "class_weights": class_weights,
                    "dice": bool(dice), "label_smoothing": float(smoothing), "noise_mask": noise,
                    "noise_denominator": noise_den, "noise_threshold": noise_threshold_from_p(float(noise_p)),
                    "ohem": bool(ohem),
                    "consistency": bool(consistency), "sampler": sampler, "patience": int(patience) or None,
                    "bootstrap": bootstrap, "bootstrap_beta": float(boot_beta), "clean": clean, "refine": refine,
                    "robust": robust, "noise_rate": float(noise_rate), "gce_q": float(gce_q),
                    "noise_from_review": robust == "forward" and noise_from == "reviews",
                    "gce_warmup": float(gce_warmup), "ema": float(ema), "coteach": float(coteach),
                    "coteach_select": coteach_select,
                    "auto_promote": bool(auto_promote)}
    if fine_tune and active is not None:
        config["parent_checkpoint_id"] = active.id
    else:
        config.update(arch=arch, encoder=encoder, encoder_weights=None if weights == "none" else weights)
    if run_name.strip():
        config["name"] = run_name.strip()
    errors = validate(config, fine_tune)
    if errors:
        st.error("Cannot launch this training run:\n\n" + "\n".join(f"- {e}" for e in errors))
    else:
        try:
            jid, created = submit_retrain_job(ws, "train", config)  # an identical queued/running run is not doubled
        except (ValueError, ImportError, OSError) as e:
            st.error(f"Could not start the training job: {e}")
        else:
            ss["train_job_sel"] = jid
            if created:
                st.success(f"Training job `{jid}` submitted. It runs in the background; you may close this tab.")
            else:
                st.info(f"The same training run is already queued or running as job `{jid}`: nothing new was "
                        "submitted. Change a setting to launch another.")

with st.expander("Label noise measured from your reviews"):
    noise_scheme = active.scheme if active is not None else (train_scenes[0].scheme if train_scenes else None)
    if noise_scheme is None:
        st.info("No labelled training scene yet.")
    else:
        rn = review_noise_for(ws, "train", noise_scheme)
        if rn.reviewed_px == 0:
            st.info("No reviewed pixels in the train split yet. Correct or confirm labels on the Labels page; the "
                    "pairs (label as given, label as reviewed) count how noisy each class is, and forward correction "
                    "can train with that matrix (*Noise-robust loss* forward, *Noise matrix* reviews).")
        else:
            st.caption(f"{rn.reviewed_px:,} reviewed pixels in {rn.scenes} scene(s), {rn.corrected_px:,} of them "
                       f"corrected ({rn.corrected_px / rn.reviewed_px:.1%}); scheme {noise_scheme}. Each class's row is "
                       "shrunk towards the pooled error rate in proportion to how few regions of it were reviewed.")
            st.plotly_chart(report.noise_matrix_figure(rn.names, rn.transition, rn.counts,
                                                       screen_scheme(noise_scheme).hex_colors()),
                            key="train_noise_matrix")
            for p in rn.problems():
                st.warning(f"Not usable for training: {p}.")

# ------------------------------------------------------------------------------------------------ jobs
st.subheader("Training jobs")
st.caption("Training runs launched here or from the Labels page, and the head refits of the Labels page: each new "
           "checkpoint goes through the regression gate below before it can be promoted.")
watching = any(j.active for j in ws.list_jobs(limit=JOB_LIST_LIMIT))


def show_result(job) -> None:
    """The finished job's checkpoint: lineage, the regression-gate verdict against the active model, then Promote."""
    cid = (job.result or {}).get("checkpoint_id")
    if not cid:
        st.info("This job did not produce a checkpoint.")
        return
    try:
        ck = ws.get_checkpoint(cid)
    except NotFoundError:
        st.warning(f"Its checkpoint `{cid}` is no longer registered.")
        return
    if ck.archived:  # no gate, no scoring, no Promote: its weights are gone
        st.info(f"Its checkpoint **{ck.name}** (`{ck.id}`) is {ck.archived_text()}: its weights are gone.")
        return
    cur = ws.active_checkpoint()
    st.markdown(f"**Result:** checkpoint **{ck.name}** (`{ck.id}`)")
    st.caption(f"Lineage: parent `{ck.parent_id or '—'}` · training data version `{ck.data_version or '—'}` · "
               f"validation data version `{ck.val_data_version or '—'}`")
    if job.kind == "refit":
        show_refit_result(job, ck)
    elif cur is not None and cur.id == ck.id:  # already active: against the model it was trained from, not itself
        show_training_scores(parent_of(ck), ck, role="parent")
    else:
        show_training_scores(cur, ck)
    if cur is not None and cur.id == ck.id:
        st.success("This checkpoint is the active one.")
        return
    train_gate.show_gate(ws, ck, cur, split=candidate.job_val_split(job))


def parent_of(ck):
    """The registered checkpoint ``ck`` was trained or refitted from (archived ones too: their scores stay), or
    None."""
    try:
        return ws.get_checkpoint(ck.parent_id) if ck.parent_id else None
    except NotFoundError:
        return None


def show_refit_result(job, ck) -> None:
    """A head refit: its accuracy on the corrected pixels and on the existing labels, and its parent's and its own
    validation scores on the same labels (the refit records no validation scores of its own)."""
    st.markdown("**Head refit** (only the classifier head was refitted, on the analysts' corrections)")
    show_refit_accuracy(job.result, ck.metrics, key=f"train_refit_{job.id}")
    parent = parent_of(ck)
    show_validation_comparison(ws, parent, ck, split=candidate.job_val_split(job), key=f"train_refit_val_{job.id}",
                               labels=(f"parent ({parent.name})" if parent else "parent", f"refit ({ck.name})"))


@st.fragment(run_every=2 if watching else None)
def jobs_panel(watching: bool, active_id: str | None) -> None:
    refresh_job_states(ws)
    now = ws.active_checkpoint()
    if (now.id if now else None) != active_id:
        # promoted since the page was drawn (a job's auto-promote, another tab, the CLI) while this fragment polls
        # alone: the registry's verdicts and the sidebar outside it are against the old model, so redraw them all
        st.rerun()
    jobs = [j for j in ws.list_jobs(limit=JOB_LIST_LIMIT) if j.kind in candidate.JOB_KINDS]
    if watching and not any(j.active for j in jobs) and not any(j.active for j in ws.list_jobs(limit=JOB_LIST_LIMIT)):
        st.rerun()  # the last active job ended: stop polling and refresh the whole page (sidebar, summary)
    if not jobs:
        st.caption("No training or head-refit jobs yet.")
        return
    st.dataframe(report.job_table(jobs), hide_index=True,
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)})
    ids = [j.id for j in jobs]
    if ss.get("train_retried") in ids:  # a retry below submitted a job: show it
        ss["train_job_sel"] = ss.pop("train_retried")
    if ss.get("train_show_job") in ids:  # "Promote on the Train page" of a Labels page job: show that one
        ss["train_job_sel"] = ss.pop("train_show_job")
    if ss.get("train_job_sel") not in ids:
        ss["train_job_sel"] = ids[0]
    by_id = {j.id: j for j in jobs}
    # no status in the option text ("— running" stayed after the job finished); the table and the bar carry it
    jid = st.selectbox("Job", ids, key="train_job_sel", format_func=lambda i: report.job_option(by_id[i]))
    job = by_id[jid]
    left = report.job_time_left_s(job)
    st.progress(min(1.0, max(0.0, job.progress)),
                text=(f"{job.status}: {(job.message or '').splitlines()[0] if job.message else ''}"[:200]
                      + (f" — about {report.fmt_duration(left)} left" if left is not None else "")))
    if job.active:
        label = "Cancel requested…" if job.cancel_requested else "Cancel job"
        if st.button(label, key=f"train_cancel_{jid}", disabled=job.cancel_requested):
            cancel_job(ws, jid)
            st.rerun(scope="fragment")
    elif job.status in ("failed", "died"):
        st.error(f"The job {job.status}:\n\n```\n{job.message}\n```")
    elif job.status == "cancelled":
        st.info(job.message or "Cancelled.")
    if job.status in RETRYABLE_STATUSES:
        a1, a2, _ = st.columns([1, 1, 3])
        if a1.button("Retry", key=f"train_retry_{jid}", help="Submit a new job with the same configuration."):
            try:
                ss["train_retried"] = retry_job(ws, jid)
            except (ValueError, ImportError, OSError) as e:
                st.error(f"Could not start the training job: {e}")
            else:
                st.rerun()
        if job.kind == "train" and a2.button(
                "Clone into the form", key=f"train_clone_{jid}",
                help="Fill the launch form above with this job's configuration, to edit and launch."):
            ss["train_clone_request"] = {"job_id": jid, "config": job.config}
            st.rerun()
    try:
        _sch = get_scheme(str((job.config or {}).get("scheme") or "hz7"))
        class_colors = dict(zip(_sch.names, screen_scheme(_sch).hex_colors()))
    except KeyError:
        class_colors = None
    fig = report.training_curves_figure(ws.job_metrics(jid), class_colors)
    if fig is not None:
        st.plotly_chart(fig, key=f"train_curves_{jid}")
    elif job.active and job.kind == "train":
        st.caption("Curves appear after the first epoch.")
    if job.status == "done":
        show_result(job)
    with st.expander("Log (last lines)", expanded=job.active):
        st.code("\n".join(tail_log(ws, jid, 40)) or "(empty)", language=None)
    with st.expander("Configuration"):
        st.code(json.dumps(job.config, indent=1), language="json")


jobs_panel(watching, active.id if active else None)


# ------------------------------------------------------------------------------------------------ registry
registry_panel(ws)

# ------------------------------------------------------------------------------------------------ active model
active_model_panel(ws)
