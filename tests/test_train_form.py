"""seghz.train.form (a job's config -> the Train page's form widgets) and seghz.jobs.runner.retry_job."""
from __future__ import annotations

import pytest

from seghz.jobs import runner
from seghz.store import Workspace
from seghz.train.form import form_state_from_config

OPTIONS = {"train_arch": ["Unet"], "train_encoder": ["tu-efficientnet_lite0"], "train_weights": ["lite0-imagenet", "none"],
           "train_scheme": ["hz7", "hz14"]}


def test_finetune_config_fills_the_finetune_form():
    cfg = {"epochs": 7, "lr": 5e-4, "batch_size": 4, "crop_size": 96, "steps_per_epoch": None, "patience": None,
           "noise_mask": "cos", "dice": False, "parent_checkpoint_id": "old", "name": "x", "bootstrap": "hard",
           "bootstrap_beta": 0.7}
    state, notes = form_state_from_config(cfg, active_id="new", options=OPTIONS)
    assert state == {"train_start": "finetune", "train_epochs_finetune": 7, "train_lr_finetune": 5e-4, "train_batch": 4,
                     "train_crop": 96, "train_steps": 0, "train_patience": 0, "train_noise": "cos", "train_dice": False,
                     "train_boot": "hard", "train_boot_beta": 0.7, "train_name": "x"}
    assert notes == ["The job fine-tuned `old`; the form fine-tunes the active checkpoint `new`."]
    assert form_state_from_config(cfg, active_id="old", options=OPTIONS)[1] == []


def test_noise_robust_loss_fills_the_form_and_unknown_modes_are_noted():
    cfg = {"robust": "forward", "noise_rate": 0.25, "gce_q": 0.7}
    state, notes = form_state_from_config(cfg, active_id=None, options=OPTIONS)
    assert (state["train_robust"], state["train_noise_rate"], state["train_gce_q"]) == ("forward", 0.25, 0.7)
    assert notes == []
    state, notes = form_state_from_config({"robust": "gce", "gce_q": 0.5}, active_id=None, options=OPTIONS)
    assert state["train_robust"] == "gce" and state["train_gce_q"] == 0.5 and "train_noise_rate" not in state
    state, notes = form_state_from_config({"robust": "symmetric"}, active_id=None, options=OPTIONS)
    assert "train_robust" not in state and notes == ["robust `symmetric` is not offered by the form; left at its default."]
    # a job from before the option: nothing set, the form keeps its defaults
    assert not {"train_robust", "train_noise_rate", "train_gce_q", "train_ema"} & set(form_state_from_config({}, active_id=None)[0])
    assert form_state_from_config({"ema": 0.05}, active_id=None)[0]["train_ema"] == 0.05


def test_the_forms_choices_are_the_library_modes():
    """The form keeps its own (torch-free) choice lists; they must offer exactly what the training code accepts."""
    from seghz.train import clean, form, losses, refine

    assert set(form.CLASS_WEIGHTS) == set(losses.CLASS_WEIGHT_MODES)
    assert form.NOISE_MASKS == losses.NOISE_MODES and form.NOISE_DENOMINATORS == losses.NOISE_DENOMINATORS
    assert form.ROBUSTS == losses.ROBUST_MODES and form.REFINES == refine.REFINES and form.CLEANS == clean.CLEANS
    assert form.COTEACH_SELECT == losses.COTEACH_SELECT


def test_coteaching_fills_the_form():
    state, notes = form_state_from_config({"coteach": 0.3, "coteach_select": "pixel"}, active_id=None)
    assert (state["train_coteach"], state["train_coteach_select"], notes) == (0.3, "pixel", [])
    state, notes = form_state_from_config({"coteach_select": "region"}, active_id=None)
    assert "train_coteach_select" not in state and notes == [
        "coteach_select `region` is not offered by the form; left at its default."]


def test_noise_mask_denominator_and_constant_threshold_round_trip():
    from seghz.train.form import noise_p_from_threshold, noise_threshold_from_p
    from seghz.train.trainer import TrainConfig

    # the form shows p(label); the config stores the CE threshold −ln p (the study's thre_0.01 = TrainConfig's default)
    assert noise_threshold_from_p(0.01) == pytest.approx(TrainConfig(scheme="hz7").noise_threshold)
    assert noise_p_from_threshold(noise_threshold_from_p(0.05)) == 0.05
    with pytest.raises(ValueError, match="0 < p < 1"):
        noise_threshold_from_p(0.0)
    cfg = {"noise_mask": "const", "noise_denominator": "kept", "noise_threshold": noise_threshold_from_p(0.05)}
    state, notes = form_state_from_config(cfg, active_id=None, options=OPTIONS)
    assert (state["train_noise"], state["train_noise_den"], state["train_noise_p"]) == ("const", "kept", 0.05)
    assert notes == []
    state, notes = form_state_from_config({"noise_denominator": "median"}, active_id=None, options=OPTIONS)
    assert "train_noise_den" not in state and notes == ["noise_den `median` is not offered by the form; left at its default."]
    # a job from before the options: the form keeps its defaults
    assert not {"train_noise_den", "train_noise_p"} & set(form_state_from_config({}, active_id=None)[0])
    # forward correction's matrix: counted on the reviews, or symmetric; a job from before the option keeps the default
    for flag, shown in ((True, "reviews"), (False, "symmetric")):
        state, _ = form_state_from_config({"robust": "forward", "noise_from_review": flag}, active_id=None)
        assert (state["train_robust"], state["train_noise_from"]) == ("forward", shown)
    assert "train_noise_from" not in form_state_from_config({"robust": "forward"}, active_id=None)[0]


def test_scratch_config_and_values_the_form_does_not_offer():
    cfg = {"epochs": 3, "arch": "Unet", "encoder": "resnet50", "encoder_weights": None, "scheme": "hz14",
           "sampler": "weird"}
    state, notes = form_state_from_config(cfg, active_id=None, options=OPTIONS)
    assert state["train_start"] == "scratch" and state["train_epochs_scratch"] == 3
    assert state["train_weights"] == "none" and state["train_scheme"] == "hz14" and state["train_arch"] == "Unet"
    assert "train_encoder" not in state and "train_sampler" not in state and len(notes) == 2
    # a fine-tune job without an active checkpoint now: the scratch form, said so
    state, notes = form_state_from_config({"parent_checkpoint_id": "p", "epochs": 2}, active_id=None, options=OPTIONS)
    assert state["train_start"] == "scratch" and state["train_epochs_scratch"] == 2 and "from scratch" in notes[0]


def test_retry_job_resubmits_same_kind_and_config(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "ws")
    monkeypatch.setattr(runner, "start_worker", lambda w, job_id: None)
    jid = ws.create_job("train", {"epochs": 2, "extra": {"a": [1, 2]}})
    with pytest.raises(ValueError, match="queued"):
        runner.retry_job(ws, jid)
    ws.update_job(jid, status="died")
    new = runner.retry_job(ws, jid)
    assert new != jid and ws.get_job(new).kind == "train" and ws.get_job(new).config == ws.get_job(jid).config
    assert ws.get_job(new).status == "queued"


def test_presets_set_every_recipe_option_and_nothing_else():
    from seghz.train.form import PRESETS, RECIPE_DEFAULTS, preset_state

    study, noisy = preset_state("study"), preset_state("noisy")
    # every recipe option is set (so a preset resets what an earlier preset or a clone changed) ...
    assert set(study) == set(noisy) == set(form_state_from_config(RECIPE_DEFAULTS, active_id=None)[0]) - {"train_start", "train_name"}
    # ... and nothing about the budget, the model, the start or the name
    assert not {k for k in noisy if k.startswith(("train_epochs", "train_lr", "train_arch", "train_encoder", "train_weights",
                                                  "train_scheme", "train_batch", "train_crop", "train_steps"))}
    assert (study["train_cw"], study["train_dice"], study["train_refine"], study["train_robust"]) == ("enet", True, "none", "none")
    assert (noisy["train_cw"], noisy["train_dice"], noisy["train_refine"], noisy["train_robust"]) == \
        ("none", False, "drop", "none")
    assert {k: v for k, v in noisy.items() if study[k] != v} == {"train_cw": "none", "train_dice": False,
                                                                  "train_refine": "drop"}
    # the measured rows: the noisy preset is bench/experiments.py's drop row on its plain-CE base (GCE left out since
    # session 18: +0.05 of the noise cost on the GPU, but twice the drop's cost on clean labels on the CPU proxy)
    from bench.experiments import BASE, ROWS

    assert {**RECIPE_DEFAULTS, **PRESETS["noisy"][2]} == {**RECIPE_DEFAULTS, **BASE, **ROWS["drop"][1]}
    # no preset for training from scratch: on the GPU protocol no recipe recovered a reliable share (session 12)
    assert set(PRESETS) == {"study", "noisy"}
    with pytest.raises(KeyError, match="unknown recipe preset"):
        preset_state("magic")
