"""The Train page's launch form <-> a training job's config (no Streamlit here).

:func:`form_state_from_config` turns a job's config back into the form's widget values (keyed by the widget
keys of ``pages/4_Train.py``), so "Clone into the form" can prefill the form for editing and relaunching.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

CLASS_WEIGHTS = ("enet", "none", "inverse")
SAMPLERS = ("random", "class_aware")
NOISE_MASKS = ("none", "cos", "const")
NOISE_DENOMINATORS = ("all", "kept")  # noise mask: dropped pixels stay in the mean's denominator (the study) or leave it
BOOTSTRAPS = ("none", "soft", "hard")
ROBUSTS = ("none", "forward", "gce")  # noise-robust loss (seghz.train.losses.ROBUST_MODES)
# forward correction's noise matrix: symmetric from η, or counted on the reviewed pixels (job key noise_from_review)
NOISE_MATRICES = ("symmetric", "reviews")
REFINES = ("none", "region", "drop")  # label refinement (seghz.train.refine.REFINES)
CLEANS = ("none", "crossfit")  # label cleaning (seghz.train.clean.CLEANS)
COTEACH_SELECT = ("class", "pixel")  # co-teaching ranks pixels per given class or over the batch (losses.COTEACH_SELECT)


def noise_p_from_threshold(threshold: float) -> float:
    """The form's "p(label) below" for a constant noise-mask CE threshold (−ln p), rounded for display."""
    return round(math.exp(-threshold), 6)


def noise_threshold_from_p(p: float) -> float:
    """The constant noise-mask CE threshold −ln p for the form's "p(label) below" value ``p`` in (0, 1)."""
    if not 0 < p < 1:
        raise ValueError(f"the noise mask's constant threshold needs 0 < p < 1, got {p!r}")
    return -math.log(p)


def form_state_from_config(config: Mapping[str, Any], *, active_id: str | None,
                           options: Mapping[str, Sequence[Any]] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Widget values for the launch form from a training job's ``config``, and notes on what could not be kept.

    ``options`` lists the choices of the form's select boxes (``train_arch``, ``train_encoder``,
    ``train_weights``, ``train_scheme``); a value outside them is left out (with a note). A config that
    fine-tuned a checkpoint fills the fine-tune form when there is an active checkpoint (it starts from the *active*
    checkpoint, ``active_id``, None when there is none), else the from-scratch form.
    """
    options = dict(options or {})
    options.setdefault("train_cw", CLASS_WEIGHTS)
    options.setdefault("train_sampler", SAMPLERS)
    options.setdefault("train_noise", NOISE_MASKS)
    options.setdefault("train_noise_den", NOISE_DENOMINATORS)
    options.setdefault("train_boot", BOOTSTRAPS)
    options.setdefault("train_robust", ROBUSTS)
    options.setdefault("train_noise_from", NOISE_MATRICES)
    options.setdefault("train_refine", REFINES)
    options.setdefault("train_clean", CLEANS)
    options.setdefault("train_coteach_select", COTEACH_SELECT)
    notes: list[str] = []
    parent = config.get("parent_checkpoint_id")
    start = "finetune" if parent and active_id else "scratch"
    if parent and not active_id:
        notes.append(f"The job fine-tuned `{parent}`, but there is no active checkpoint now: the form trains from scratch.")
    state: dict[str, Any] = {"train_start": start}

    def put(key: str, value: Any) -> None:
        if value is None:
            return
        allowed = options.get(key)
        if allowed is not None and value not in allowed:
            notes.append(f"{key.removeprefix('train_')} `{value}` is not offered by the form; left at its default.")
            return
        state[key] = value

    put(f"train_epochs_{start}", int(config["epochs"]) if "epochs" in config else None)
    put(f"train_lr_{start}", float(config["lr"]) if "lr" in config else None)
    put("train_batch", int(config["batch_size"]) if "batch_size" in config else None)
    put("train_crop", int(config["crop_size"]) if "crop_size" in config else None)
    if "steps_per_epoch" in config:
        put("train_steps", int(config["steps_per_epoch"] or 0))
    put("train_cw", config.get("class_weights"))
    put("train_dice", None if "dice" not in config else bool(config["dice"]))
    put("train_smooth", None if "label_smoothing" not in config else float(config["label_smoothing"]))
    put("train_sampler", config.get("sampler"))
    put("train_noise", config.get("noise_mask"))
    put("train_noise_den", config.get("noise_denominator"))
    if config.get("noise_threshold") is not None:  # the form shows the constant threshold as p(label) = exp(−CE)
        put("train_noise_p", noise_p_from_threshold(float(config["noise_threshold"])))
    put("train_ohem", None if "ohem" not in config else bool(config["ohem"]))
    put("train_boot", config.get("bootstrap"))
    put("train_boot_beta", None if "bootstrap_beta" not in config else float(config["bootstrap_beta"]))
    put("train_robust", config.get("robust"))
    put("train_noise_rate", None if "noise_rate" not in config else float(config["noise_rate"]))
    if "noise_from_review" in config:
        put("train_noise_from", "reviews" if config["noise_from_review"] else "symmetric")
    put("train_gce_q", None if "gce_q" not in config else float(config["gce_q"]))
    put("train_gce_warmup", None if "gce_warmup" not in config else float(config["gce_warmup"]))
    put("train_ema", None if "ema" not in config else float(config["ema"]))
    put("train_coteach", None if "coteach" not in config else float(config["coteach"]))
    put("train_coteach_select", config.get("coteach_select"))
    put("train_consistency", None if "consistency" not in config else bool(config["consistency"]))
    put("train_refine", config.get("refine"))
    put("train_clean", config.get("clean"))
    if "patience" in config:
        put("train_patience", int(config["patience"] or 0))
    put("train_auto_promote", None if "auto_promote" not in config else bool(config["auto_promote"]))
    if start == "scratch":
        put("train_arch", config.get("arch"))
        put("train_encoder", config.get("encoder"))
        if "encoder_weights" in config:
            put("train_weights", config["encoder_weights"] or "none")
        put("train_scheme", config.get("scheme"))
    elif parent != active_id:
        notes.append(f"The job fine-tuned `{parent}`; the form fine-tunes the active checkpoint `{active_id}`.")
    state["train_name"] = str(config.get("name") or "")
    return state, notes


# Every recipe option of the form (not the budget, the model, the start or the name), at the form's defaults: the
# study's recipe (CE with 1/ln(1.02+f) class weights + Dice). A preset is these with a few changed, so applying one
# resets whatever another preset or a clone had set.
RECIPE_DEFAULTS: dict[str, Any] = {
    "class_weights": "enet", "dice": True, "label_smoothing": 0.0, "noise_mask": "none", "noise_denominator": "all",
    "noise_threshold": noise_threshold_from_p(0.01), "ohem": False,
    "consistency": False, "sampler": "random", "bootstrap": "none", "bootstrap_beta": 0.8, "clean": "none",
    "refine": "none", "robust": "none", "noise_rate": 0.3, "noise_from_review": False, "gce_q": 0.7, "gce_warmup": 0.0,
    "ema": 0.0, "coteach": 0.0, "coteach_select": "class",
}
# key -> (button label, what it is and what it measured, the options it changes). The noisy-label presets are the
# rows of bench/experiments.py they were measured as (plain CE base: no class weights, no Dice).
PRESETS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "study": ("Study recipe", "CE with 1/ln(1.02+f) class weights + Dice, nothing for noisy labels (the form's defaults).",
              {}),
    "noisy": ("Noisy labels: component drop",
              "For the ImageNet encoder weights (the default), and only for labels known to be noisy. Every epoch "
              "from 10 % of the run on, label components the model doubts are ignored (≤ half of a class); the rest "
              "train with plain CE. On 30 % flipped GID labels at the study's budget (4000 steps × 16 × 224² on an "
              "H200, 3 seeds) it recovered 0.60 ± 0.05 of what the noise costs plain CE (per seed 0.63 / 0.65 / 0.53; "
              "77.5 mIoU against 55.0, 92.2 on clean labels). Road_land, two thirds of whose labels were flips, came "
              "back least: review its tiles. On clean labels it still ignores what the model doubts: on a small CPU "
              "protocol (800 steps, 128 tiles, 3 seeds) that cost 5–7 points (half of Road_land's pixels ignored). "
              "With generalized CE added it recovered 0.65 ± 0.07 on the GPU, but on clean labels of that CPU "
              "protocol it cost 8–22 points, more than the drop alone on every seed, so the preset leaves GCE out. Not for encoders trained from scratch: there nothing measured "
              "helps reliably (resnet34 from scratch at the study's budget: component drop +0.00 ± 0.22, the study's "
              "noise mask +0.08 ± 0.05). See docs/experiments.md.",
              {"class_weights": "none", "dice": False, "refine": "drop"}),
}


def preset_state(key: str) -> dict[str, Any]:
    """Widget values of the launch form's recipe options for the preset ``key`` of :data:`PRESETS`."""
    if key not in PRESETS:
        raise KeyError(f"unknown recipe preset '{key}'; use one of {', '.join(PRESETS)}")
    state, notes = form_state_from_config({**RECIPE_DEFAULTS, **PRESETS[key][2]}, active_id=None)
    if notes:  # a preset only uses values the form offers
        raise ValueError(f"recipe preset '{key}': " + "; ".join(notes))
    return {k: v for k, v in state.items() if k not in ("train_start", "train_name")}


__all__ = ["NOISE_DENOMINATORS", "PRESETS", "RECIPE_DEFAULTS", "form_state_from_config", "noise_p_from_threshold",
           "noise_threshold_from_p", "preset_state"]
