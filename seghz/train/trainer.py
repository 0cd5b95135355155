"""Training: the study's loss recipe (see :mod:`seghz.train.losses`), random crops with D4 + colour jitter,
best-validation checkpoint, optional early stopping, resume, bf16 AMP on CUDA and DDP under ``torchrun``.

Runs in-process (the CLI, a background job process or a test calls :func:`train`); it never runs inside
a Streamlit rerun. Progress, metrics and cancellation go through callbacks.

* **Resume**: after every epoch the training state (last weights, optimizer, scheduler, RNG states, loop
  counters, history) is written atomically to ``<out>.state.safetensors`` (:mod:`seghz.train.state`);
  ``TrainConfig.resume`` continues from it, bit-for-bit like an uninterrupted run on the CPU.
* **Data order**: one global sample order per run (a seeded shuffle); the crop/D4/jitter of the sample in slot
  ``j`` of global step ``s`` comes from its own generator seeded ``"{seed}/{s}/{j}"``, so a run gives the same
  batches whatever the number of processes.
* **Arithmetic**: bf16 autocast on CUDA (``amp``, default on); the CPU always trains in fp32. Weights and batches are
  channels_last on every device (on the 2-core dev CPU, fp32 steps ran 1.3–1.75× faster than contiguous; see
  docs/benchmarks.md).
* **DDP**: with ``WORLD_SIZE > 1`` (``torchrun``) or ``ddp=True``: gloo on the CPU, nccl on CUDA; ``batch_size``
  is per process (global batch = batch_size × world size); rank r takes slots ``[r·B, (r+1)·B)`` of each global
  batch; only rank 0 validates and writes the checkpoint and the state; early stopping, NaN stops, cancels and
  save errors are agreed by all ranks. BatchNorm becomes SyncBatchNorm on CUDA (``sync_bn``); on the CPU
  (gloo; SyncBatchNorm needs a GPU) BatchNorm statistics stay per process.
* **Label refinement** (``refine="region"`` or ``"drop"``, :mod:`seghz.train.refine`): at the end of each refinement
  epoch (see :func:`~seghz.train.refine.refine_epochs`) rank 0 predicts every training image with the current model
  and, from the ORIGINAL labels, relabels the regions the model confidently disagrees with (region) or ignores the
  label components whose pooled prediction prefers another class, at most ``refine_max_drop`` of each class
  (drop); the next epochs train on
  those labels (host samples and device-preloaded labels). Rank 0 broadcasts them to the other ranks as one flat
  uint8 tensor (so the ranks always train on identical labels, whatever their per-process BatchNorm statistics), and
  writes them atomically to ``<out>.refine.safetensors`` before the training state; the state's loop info names
  their epoch and SHA-1. Resume reads that file; if it is missing or stale and the refinement was at the saved epoch,
  the labels are recomputed from the saved weights (the weights they came from), else resuming is refused.
* **Debug**: with ``SEGHZ_TRAIN_DEBUG_DIR`` set, each rank writes ``rank<r>.json`` there: per step, the sample
  indices it trained on and their positions in the run's global sample stream (step × global batch + slot).
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import errno as _errno
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from seghz.classes import IGNORE, get_scheme
from seghz.devices import check_device, default_device, rank_device
from seghz.errors import SegHZError
from seghz.infer.engine import Predictor
from seghz.metrics import class_frequencies, confusion_matrix, pooled_class_frequencies, scores
from seghz.models.checkpoint import load_checkpoint, save_checkpoint
from seghz.models.registry import LITE0_WEIGHTS, build_model
from seghz.train.augment import default_budget, make_device_batch, preload
from seghz.train.ema import WeightEMA, ema_decay
from seghz.train.losses import LossConfig, SegLoss
from seghz.train.losses import class_weights as make_class_weights
from seghz.train.refine import QUOTAS, REFINES, RefineParams, labels_digest, refine_epochs, refine_samples, refine_start
from seghz.train.sampling import CropSampler, building_classes
from seghz.train.state import TrainStateError, load_train_state, rng_state, save_train_state, set_rng_state, state_path

# (RGB uint8 H×W×3, class index uint8 H×W) or (RGB, class index, trusted bool H×W): trusted pixels were corrected
# or confirmed by an analyst and are never dropped by the noise mask.
Sample = tuple[np.ndarray, ...]

LOSS_KEYS = tuple(f for f in LossConfig.__dataclass_fields__)
MONITORS = ("miou", "fwiou")


class TrainCancelled(Exception):
    """Training stopped because cancellation was requested."""


class TrainDiverged(RuntimeError):
    """The training loss became NaN or infinite; the job stops (the last good checkpoint, if any, is kept)."""


class TrainSaveError(SegHZError, OSError):
    """Writing the checkpoint or the training state failed (a full disk: errno ENOSPC). The previous checkpoint
    and state files are untouched; ``errno`` is the underlying error's."""


# Recipe fields that may differ between a run and the run it resumes (batch_size: the global batch must match).
RESUME_FREE = frozenset({"resume", "device", "patience", "extra", "ddp", "amp", "sync_bn", "deterministic",
                         "tile_size", "parent_checkpoint", "batch_size", "encoder_weights"})
DEBUG_ENV = "SEGHZ_TRAIN_DEBUG_DIR"


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint as its recipe)."""

    scheme: str
    arch: str = "Unet"
    encoder: str = "tu-efficientnet_lite0"
    encoder_weights: str | None = LITE0_WEIGHTS
    parent_checkpoint: str | None = None
    epochs: int = 30
    batch_size: int = 16
    crop_size: int = 224
    lr: float = 2e-3
    weight_decay: float = 1e-4
    class_weights: str = "enet"  # "enet" = 1/ln(1.02+f), "inverse" = 1/(K f), or "none"
    dice: bool = True
    dice_weight: float = 1.0
    label_smoothing: float = 0.0  # ε: 1−ε on the true class, ε/(C−1) on the others
    noise_mask: str = "none"  # "none" | "cos" (−ln p_start → −ln p_end over the epochs) | "const"
    noise_p_start: float = 0.01
    noise_p_end: float = 0.1
    noise_threshold: float = 4.605170185988092  # "const": the fixed CE threshold (−ln 0.01)
    noise_denominator: str = "all"  # "all": dropped pixels stay in the mean's denominator (the study) | "kept"
    ohem: bool = False
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 20000
    consistency: bool = False  # CE on a random rot90 view + MSE between the two views' logits
    consistency_weight: float = 1.0
    bootstrap: str = "none"  # "soft" | "hard": target β·label + (1−β)·prediction (Reed et al. 2015)
    bootstrap_beta: float = 0.8  # β, the label's share
    # noise-robust loss instead of CE: "none" | "forward" (loss correction with a symmetric transition matrix,
    # Patrini et al. 2017) | "gce" (generalized cross entropy, Zhang & Sabuncu 2018); trusted pixels keep CE
    robust: str = "none"
    noise_rate: float = 0.3  # forward: η, the expected share of flipped labels, in [0, (K−1)/K) for K present classes
    # forward: explicit C×C T[i][j] = P(given j | true i) instead of the symmetric η (e.g. counted from reviewed
    # pixels by seghz.train.losses.estimate_transition; the train job's "transition_from_review")
    noise_transition: list | None = None
    gce_q: float = 0.7  # gce: q in (0, 1] (q → 0: CE, q = 1: MAE)
    gce_warmup: float = 0.0  # gce: q rises linearly from 0 (CE) to gce_q over this fraction of the epochs (0: off)
    # co-teaching (Han et al. 2018): a second network trains beside the model on the same batches; each one's CE
    # counts only the pixels its peer finds easiest. coteach = the forget rate (0: off), reached linearly over the
    # first coteach_ramp of the steps; coteach_select "class" ranks pixels within each given class, "pixel" all together
    coteach: float = 0.0
    coteach_ramp: float = 0.2
    coteach_select: str = "class"
    # exponential moving average of the weights (seghz.train.ema): its horizon as a fraction of the run's optimiser
    # steps (0: off). The averaged weights are validated, saved as the checkpoint and judge refine's labels
    ema: float = 0.0
    # early-learning regularisation (Liu et al. 2020, ELR+): λ · mean log(1 − ⟨p, t⟩) with t the averaged weights'
    # softmax on the same batch (0: off; needs ema > 0, the teacher)
    elr: float = 0.0
    elr_warmup: float = 0.3  # the teacher's weight rises from 0 to 1 over this fraction of the run's steps
    monitor: str = "miou"  # validation score that picks the best checkpoint and drives early stopping
    patience: int | None = None  # stop after this many epochs without improvement of `monitor` (None: never)
    deterministic: bool = False  # also ask torch for deterministic kernels (slower on GPU)
    seed: int = 0
    device: str | None = None
    tile_size: int = 512
    steps_per_epoch: int | None = None  # default: one pass over the training pixels
    resume: bool = False  # continue from <out>.state.safetensors when it exists (else start from scratch)
    amp: bool = True  # CUDA: bf16 autocast; the CPU always trains in fp32 (channels_last on both)
    ddp: bool | None = None  # None: DDP when torchrun sets WORLD_SIZE > 1; batch_size is per process
    sync_bn: bool = True  # DDP on CUDA: BatchNorm -> SyncBatchNorm (gloo/CPU keeps per-process statistics)
    sampler: str = "random"  # crop windows: "random", or "class_aware" (the study's building-aware sampler)
    sampler_classes: list | None = None  # class_aware: the foreground classes (default: the scheme's building classes)
    sampler_min_fraction: float = 0.1  # class_aware: windows with at least this foreground fraction are preferred
    augment: str = "auto"  # "host": per-sample pipeline; "device": batched on the GPU; "auto": device on CUDA
    scale_min: float = 1.0  # device augmentation: random scale range of the crops
    scale_max: float = 1.0
    # label refinement from the model's own early-learning predictions (seghz.train.refine): "none" | "region"
    refine: str = "none"
    refine_start: float | None = None  # fraction of the epochs before the first refinement (None: REFINE_START)
    refine_every: int = 1  # refine at the end of every this-many epochs from then on (never after the last epoch)
    refine_conf: float = 0.5  # a region's mean probability of the new class must reach this to relabel it
    refine_keep: float = 0.2  # ... and its mean probability of the given label must be below this
    refine_min_px: int = 16  # smaller regions are not relabelled
    refine_ignore_conf: float | None = 0.9  # pixel rule: p(given) < 0.05 and max p >= this -> ignore (None: off)
    refine_max_drop: float = 0.5  # refine="drop": at most this fraction of each class's labelled pixels is ignored
    refine_relabel_conf: float | None = None  # refine="drop": relabel (not ignore) a component whose top class reaches this
    # refine="drop": the per-class quota — "fixed" (refine_max_drop for every class) or "noise" (each class's label
    # noise rate estimated by confident learning over the components, capped at refine_max_drop)
    refine_quota: str = "fixed"
    refine_drop_ratio: float = 1.0  # refine="drop": drop only components with mean p(given) / p(top) below this
    # cross-fitted label cleaning before training (seghz.train.clean): "none" | "crossfit"
    clean: str = "none"
    clean_folds: int = 2  # fold models, each trained on the other folds, judge the fold they never saw
    clean_share: float = 0.5  # share of the run's optimiser steps spent on the fold models (the rest: final model)
    clean_conf: float = 0.5  # relabel a region when the held-out model's mean p(new class) reaches this ...
    clean_keep: float = 0.2  # ... and its mean p(given label) is below this
    clean_doubt: bool = True  # regions with p(given) < clean_keep but no confident class become ignore
    extra: dict = field(default_factory=dict)

    def loss_config(self) -> LossConfig:
        """The loss part of the recipe."""
        return LossConfig(**{k: getattr(self, k) for k in LOSS_KEYS})

    def validate(self) -> None:
        get_scheme(self.scheme)
        if self.sampler not in ("random", "class_aware"):
            raise ValueError(f"unknown sampler '{self.sampler}'; use 'random' or 'class_aware'")
        if not 0 <= self.sampler_min_fraction <= 1:
            raise ValueError(f"sampler_min_fraction must be in [0, 1], got {self.sampler_min_fraction}")
        if self.augment not in ("auto", "host", "device"):
            raise ValueError(f"unknown augment '{self.augment}'; use 'auto', 'host' or 'device'")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"scale range must satisfy 0 < scale_min <= scale_max, got {self.scale_min}..{self.scale_max}")
        if self.epochs < 1 or self.batch_size < 1 or self.crop_size < 32 or self.crop_size % 32:
            raise ValueError("epochs and batch size must be >= 1 and crop size a multiple of 32 (>= 32)")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError("steps_per_epoch must be >= 1 (or None for one pass over the training pixels)")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ValueError(f"learning rate must be in (0, 1) (got {self.lr})")
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {', '.join(MONITORS)} (got '{self.monitor}')")
        if self.patience is not None and (int(self.patience) != self.patience or self.patience < 1):
            raise ValueError(f"patience must be an integer >= 1 or None (got {self.patience})")
        if isinstance(self.ema, bool) or not (isinstance(self.ema, (int, float)) and 0 <= self.ema <= 1):
            raise ValueError(f"ema (the averaging horizon as a fraction of the run's steps; 0 = off) must be in [0, 1], "
                             f"got {self.ema!r}")
        self._validate_refine()
        self._validate_clean()
        self.loss_config().validate()
        if self.elr and not self.ema:
            raise ValueError(f"the early-learning regularisation (elr = {self.elr}) pulls the model towards the moving "
                             "average of its weights: set ema > 0 (e.g. 0.05, an average over the last 5 % of the steps)")
        if self.robust == "forward" and self.noise_transition is not None:
            from seghz.train.losses import check_transition

            check_transition(self.noise_transition, len(get_scheme(self.scheme).names))
        elif self.robust == "forward":
            k = len(get_scheme(self.scheme).names)  # at most K classes can be present in the training labels
            if not self.noise_rate < (k - 1) / k:
                raise ValueError(f"noise_rate η must be below (K−1)/K = {(k - 1) / k:.4f} for the {k} classes of scheme "
                                 f"{self.scheme} (got {self.noise_rate}); at (K−1)/K the labels say nothing")

    def _validate_clean(self) -> None:
        from seghz.train.clean import CLEANS

        if self.clean not in CLEANS:
            raise ValueError(f"unknown clean '{self.clean}'; use one of {', '.join(CLEANS)}")
        if isinstance(self.clean_folds, bool) or not isinstance(self.clean_folds, int) or self.clean_folds < 2:
            raise ValueError(f"clean_folds must be an integer >= 2, got {self.clean_folds!r}")
        num = (int, float)
        if not (isinstance(self.clean_share, num) and 0 < self.clean_share < 1):
            raise ValueError(f"clean_share (share of the steps for the fold models) must be in (0, 1), got {self.clean_share!r}")
        for name in ("clean_conf", "clean_keep"):
            v = getattr(self, name)
            if not (isinstance(v, num) and 0 < v <= 1):
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
        if self.clean != "none" and self.refine != "none":
            raise ValueError("choose one of clean='crossfit' and refine='region' (both rewrite the training labels)")

    def _validate_refine(self) -> None:
        if self.refine not in REFINES:
            raise ValueError(f"unknown refine '{self.refine}'; use one of {', '.join(REFINES)}")
        num = (int, float)
        if self.refine_start is not None and not (isinstance(self.refine_start, num) and 0 <= self.refine_start < 1):
            raise ValueError(f"refine_start must be a fraction of the epochs in [0, 1), got {self.refine_start!r}")
        if isinstance(self.refine_every, bool) or not isinstance(self.refine_every, int) or self.refine_every < 1:
            raise ValueError(f"refine_every must be an integer >= 1, got {self.refine_every!r}")
        if not (isinstance(self.refine_conf, num) and 0 < self.refine_conf <= 1):
            raise ValueError(f"refine_conf (min mean probability of the new class) must be in (0, 1], got {self.refine_conf!r}")
        if not (isinstance(self.refine_keep, num) and 0 < self.refine_keep <= 1):
            raise ValueError(f"refine_keep (max mean probability of the given label) must be in (0, 1], got {self.refine_keep!r}")
        if isinstance(self.refine_min_px, bool) or not isinstance(self.refine_min_px, int) or self.refine_min_px < 1:
            raise ValueError(f"refine_min_px must be an integer >= 1, got {self.refine_min_px!r}")
        if not (isinstance(self.refine_max_drop, num) and 0 < self.refine_max_drop <= 1):
            raise ValueError(f"refine_max_drop (the largest fraction of a class's labelled pixels to ignore) must be in "
                             f"(0, 1], got {self.refine_max_drop!r}")
        if self.refine_quota not in QUOTAS:
            raise ValueError(f"unknown refine_quota '{self.refine_quota}'; use one of {', '.join(QUOTAS)}")
        dr = self.refine_drop_ratio
        if isinstance(dr, bool) or not (isinstance(dr, num) and 0 < dr <= 1):
            raise ValueError(f"refine_drop_ratio (drop only components with p(given) / p(top) below it) must be in (0, 1], "
                             f"got {dr!r}")
        if self.refine_quota != "fixed" and self.refine != "drop":
            raise ValueError(f"refine_quota='{self.refine_quota}' applies to refine='drop' only (refine is '{self.refine}')")
        rc = self.refine_relabel_conf
        if rc is not None and not (isinstance(rc, num) and not isinstance(rc, bool) and 0 < rc <= 1):
            raise ValueError(f"refine_relabel_conf must be in (0, 1] or None (drop only, never relabel), got {rc!r}")
        ic = self.refine_ignore_conf
        if ic is not None and not (isinstance(ic, num) and 0 < ic <= 1):
            raise ValueError(f"refine_ignore_conf must be in (0, 1] or None (no pixel rule), got {ic!r}")


def _normalization(cfg: TrainConfig) -> dict:
    if cfg.encoder == "tu-efficientnet_lite0":
        return {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    return {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _trusted_of(sample: Sample) -> np.ndarray | None:
    return sample[2] if len(sample) > 2 else None


def _random_crop(img: np.ndarray, lbl: np.ndarray, size: int, rng: random.Random, trusted: np.ndarray | None = None):
    h, w = lbl.shape
    if trusted is None:
        trusted = np.zeros((h, w), bool)
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        lbl = np.pad(lbl, ((0, ph), (0, pw)), constant_values=IGNORE)
        trusted = np.pad(trusted, ((0, ph), (0, pw)), constant_values=False)
        h, w = lbl.shape
    r = rng.randint(0, h - size)
    c = rng.randint(0, w - size)
    win = np.s_[r : r + size, c : c + size]
    return img[win], lbl[win], trusted[win]


def _augment(sample: Sample, size: int, rng: random.Random, sampler=None):
    """One sample's crop (random, or from ``sampler``), D4 view and colour jitter: (float 3×S×S in [0, 1], long S×S,
    bool S×S)."""
    if sampler is not None:
        img, lbl, tr = sampler.crop(sample[0], sample[1], rng, _trusted_of(sample))
    else:
        img, lbl, tr = _random_crop(sample[0], sample[1], size, rng, _trusted_of(sample))
    k = rng.randint(0, 3)
    img, lbl, tr = np.rot90(img, k), np.rot90(lbl, k), np.rot90(tr, k)
    if rng.random() < 0.5:
        img, lbl, tr = img[:, ::-1], lbl[:, ::-1], tr[:, ::-1]
    # writable copies where needed: a crop of a read-only (memory-mapped, cached) sample left as is would be
    # handed to torch read-only ("The given NumPy array is not writable")
    img, lbl = np.require(img, requirements=["C", "W"]), np.require(lbl, requirements=["C", "W"])
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.8, 1.2) + mean
    return (x.clamp_(0, 1), torch.from_numpy(lbl).long(),
            torch.from_numpy(np.require(tr, dtype=bool, requirements=["C", "W"])))


def _stack(parts: list, norm: dict, return_trusted: bool):
    x = torch.stack([p[0] for p in parts])
    m = torch.tensor(norm["mean"]).view(1, 3, 1, 1)
    s = torch.tensor(norm["std"]).view(1, 3, 1, 1)
    y = torch.stack([p[1] for p in parts])
    if return_trusted:
        return (x - m) / s, y, torch.stack([p[2] for p in parts])
    return (x - m) / s, y


def make_batch(samples: list[Sample], idx: list[int], size: int, rng: random.Random, norm: dict,
               return_trusted: bool = False):
    """Random crop, random D4 view and mild colour jitter for each sample; normalised float batch.

    Returns ``(x, y)``, or ``(x, y, trusted)`` with ``return_trusted`` (a bool batch, False where a sample has no
    trusted mask). Samples are ``(img, lbl)`` or ``(img, lbl, trusted)``.
    """
    return _stack([_augment(samples[i], size, rng) for i in idx], norm, return_trusted)


def slot_batch(samples: list[Sample], idx: list[int], slots: list[int], seed: int, step: int, size: int, norm: dict,
               sampler=None):
    """Like :func:`make_batch` (with trusted masks), but sample ``idx[n]`` in global batch slot ``slots[n]`` of
    global step ``step`` is augmented by its own generator ``random.Random(f"{seed}/{step}/{slot}")``: the same
    crops whichever process (or how many) builds the batch, and independent of what was drawn before."""
    parts = [_augment(samples[i], size, random.Random(f"{seed}/{step}/{j}"), sampler) for i, j in zip(idx, slots)]
    return _stack(parts, norm, True)


def step_message(epoch: int, epochs: int, step: int, steps: int, loss: float) -> str:
    """The progress line of a training step: ``step`` (1-based) counts the steps of this epoch only, out of the
    epoch's ``steps`` ("epoch 1/2, step 2/30 of this epoch, loss 0.412"), so the two counts never disagree."""
    return f"epoch {epoch}/{epochs}, step {step}/{steps} of this epoch, loss {loss:.3f}"


def validation_message(epoch: int, scene: int, scenes: int) -> str:
    """The progress line while the end of an epoch validates: "validating epoch 1 (scene 2/3)"."""
    return f"validating epoch {epoch} (scene {scene}/{scenes})"


class _SayingPredictor:
    """A predictor that reports ``report(k, n)`` before it predicts the ``k``-th of ``n`` samples: the progress
    line while an epoch validates (it sat at the epoch's last step for the whole validation)."""

    def __init__(self, predictor: Predictor, n: int, report: Callable[[int, int], None]):
        self.predictor, self.n, self.report, self.k = predictor, n, report, 0

    def predict(self, img, tta: str = "none"):
        self.k += 1
        self.report(min(self.k, self.n), self.n)
        return self.predictor.predict(img, tta)


def evaluate_samples(predictor: Predictor, samples: list[Sample], names, tta: str = "none") -> dict:
    """Scores of a predictor over (image, label) samples."""
    cm = np.zeros((len(names), len(names)), np.int64)
    for sample in samples:
        img, lbl = sample[0], sample[1]
        pred, _ = predictor.predict(img, tta)
        cm += confusion_matrix(pred, lbl, len(names))
    return scores(cm, names)


def _seed_everything(seed: int, deterministic: bool, cuda: bool = False) -> None:
    """Seed every RNG; ``deterministic``: deterministic kernels (no cuDNN autotuning). Otherwise, on CUDA, cuDNN
    autotunes its convolutions (fixed crop shapes: the search pays off after the first steps); the CPU is untouched."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif cuda:
        torch.backends.cudnn.benchmark = True


def _check_samples(train_samples: list[Sample], val_samples: list[Sample], nc: int, scheme_name: str) -> None:
    for i, sample in enumerate(list(train_samples) + list(val_samples)):
        if len(sample) not in (2, 3):
            raise ValueError(f"sample {i} must be (image, label) or (image, label, trusted mask), got {len(sample)} items")
        lbl = sample[1]
        if lbl.size and lbl[lbl != IGNORE].max(initial=0) >= nc:
            raise ValueError(f"sample {i} holds class index >= {nc} ({scheme_name})")
        tr = _trusted_of(sample)
        if tr is not None and np.shape(tr) != lbl.shape:
            raise ValueError(f"sample {i}: trusted mask {np.shape(tr)} does not match its label {lbl.shape}")


@dataclass
class _Dist:
    """This process's place in a DDP run (world 1: not distributed)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_setup(cfg: TrainConfig) -> tuple[_Dist, str]:
    """Decide on DDP (``cfg.ddp``, else ``WORLD_SIZE > 1``), init the process group (gloo on the CPU, nccl on CUDA)
    unless one exists, and pick this rank's device (``cuda:<LOCAL_RANK>`` for a CUDA device naming no GPU,
    :func:`seghz.devices.rank_device`). A device this machine lacks is a :class:`~seghz.devices.DeviceError`."""
    device = check_device(cfg.device, "TrainConfig.device") or default_device()
    env_world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    want = cfg.ddp if cfg.ddp is not None else env_world > 1
    if not want:
        return _Dist(), device
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("DDP was asked for but this torch build has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    device = rank_device(device, "TrainConfig.device", local)  # cuda -> cuda:<LOCAL_RANK>, made the current GPU
    cuda = torch.device(device).type == "cuda"
    owns = False
    if not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE") if k not in os.environ]
        if missing:
            raise RuntimeError(f"DDP training needs the torchrun environment ({', '.join(missing)} not set); start it "
                               "with `python -m torch.distributed.run --nproc-per-node N -m seghz train ...`")
        # rank 0 alone validates and writes the checkpoints while the others wait at the next collective: an hour,
        # not the backend's default (10 min for nccl in some torch versions), before a wait counts as a hang
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=1))
        owns = True
    return _Dist(dist.get_world_size(), dist.get_rank(), local, owns), device


class _DDPView:
    """What the loss calls as "the model" under DDP: forwards through the DDP wrapper (gradient all-reduce) and reads
    every other attribute (``training``, ``aux_logits``, ``aux_weight``) from the wrapped module."""

    def __init__(self, ddp_model):
        self._ddp = ddp_model

    def __call__(self, *a, **kw):
        return self._ddp(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._ddp.module, name)


def _allreduce_mean(tensors: list[torch.Tensor], world: int) -> None:
    """Average tensors over the ranks, in one flat buffer."""
    import torch.distributed as dist

    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    o = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[o : o + n].view_as(t))
        o += n


def _allreduce_grads(model: torch.nn.Module, world: int) -> None:
    """Manual gradient averaging, used when the loss runs the model more than once per step (the consistency
    loss' second view), which DDP's reducer does not allow."""
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    for dtype in {g.dtype for g in grads}:
        _allreduce_mean([g for g in grads if g.dtype == dtype], world)


def _agree(dctx: _Dist, values: list[float], device: str, op: str = "max") -> list[float]:
    """All-reduce a few flags/numbers (``max`` or ``sum``) so that every rank takes the same decision."""
    if not dctx.on:
        return values
    import torch.distributed as dist

    dev = device if torch.device(device).type == "cuda" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu()]


def _broadcast(dctx: _Dist, values: list[float], device: str) -> list[float]:
    """Rank 0's values, on every rank."""
    if not dctx.on:
        return values
    import torch.distributed as dist

    dev = device if torch.device(device).type == "cuda" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.broadcast(t, 0)
    return [float(v) for v in t.cpu()]


def _check_resumable(info: dict, cfg: TrainConfig, global_batch: int, steps: int, spath: Path) -> None:
    new = asdict(cfg)
    # a field added after the state was written counts as its default (the behaviour the old run had)
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    old = {**{k: v for k, v in defaults.items() if k in new}, **(info.get("recipe") or {})}
    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if k not in RESUME_FREE and old.get(k) != new.get(k)]
    if info.get("global_batch") != global_batch:
        diff.append(f"global batch: {info.get('global_batch')} -> {global_batch}")
    if info.get("steps_per_epoch") != steps:
        diff.append(f"steps per epoch: {info.get('steps_per_epoch')} -> {steps}")
    if diff:
        raise TrainStateError(f"{spath}: cannot resume, the recipe differs from the saved run ({'; '.join(diff)}); "
                              "start a new run (without resume) or restore the original settings")


def _write_debug(dctx: _Dist, seen: list[dict], global_batch: int, device: str) -> None:
    folder = os.environ.get(DEBUG_ENV)
    if not folder:
        return
    from seghz.data.io import atomic_write_bytes

    dst = Path(folder) / f"rank{dctx.rank}.json"
    atomic_write_bytes(dst, json.dumps({"rank": dctx.rank, "world_size": dctx.world, "device": device,
                                        "global_batch": global_batch, "steps": seen}).encode())


def _save_error(e: OSError, what: str, path: Path, epoch: int, kept: str) -> TrainSaveError:
    reason = "no space left on device" if e.errno == _errno.ENOSPC else (e.strerror or str(e))
    return TrainSaveError(e.errno or _errno.EIO,
                          f"could not write the {what} {path} at epoch {epoch}: {reason}. {kept} "
                          "Free some space and run again with resume to continue.")


def _rates_text(rates, scheme) -> str:
    """``"; estimated label noise: Water 38 %, …"`` for the progress line (empty without rates)."""
    if rates is None:
        return ""
    names = list(scheme.names)
    parts = [f"{names[k] if k < len(names) else k} {100 * r:.0f} %" for k, r in enumerate(rates) if round(100 * r) > 0]
    return "; estimated label noise: " + (", ".join(parts) if parts else "none")


def train(
    cfg: TrainConfig,
    train_samples: list[Sample],
    val_samples: list[Sample],
    out_path: str | Path,
    progress: Callable[[float, str], None] | None = None,
    on_metrics: Callable[[int, int, dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    meta_extra: dict | None = None,
    resume: bool | None = None,
) -> dict:
    """Train a model and write the best checkpoint (by validation ``cfg.monitor``) atomically to ``out_path``.

    Samples are ``(image, label)`` or ``(image, label, trusted)``. Each epoch's metrics row (passed to
    ``on_metrics``) holds loss, lr (the mean learning rate the epoch's optimizer steps used; ``lr_start`` /
    ``lr_end``: that of its first / last step), seconds, the validation scores and, when enabled, ``noise_threshold`` /
    ``noise_dropped`` (mean dropped fraction of labelled pixels), ``ohem_kept``, ``consistency_mse``, with co-teaching
    ``coteach_rate`` (the forget rate at the epoch's last step), ``coteach_dropped`` and ``coteach_disagree`` (mean
    shares of the labelled pixels left out of the model's loss / kept for one network only) and, at a
    label-refinement epoch, ``refined_px`` / ``refine_ignored_px`` (fractions of the labelled training pixels
    relabelled / set to ignore).
    A NaN/inf loss raises :class:`TrainDiverged`; checkpoints are only written at a new best, so the last good
    one stays. After every epoch the training state goes to :func:`state_path` ``(out_path)``; ``resume`` (default
    ``cfg.resume``) continues from it. A cancel (``should_cancel`` is asked before every step) raises
    :class:`TrainCancelled` and leaves the checkpoint and the state of the last finished epoch; a failed write
    (full disk) raises :class:`TrainSaveError` and leaves the previous files.
    Under DDP (see the module doc) callbacks run on rank 0 only.
    Returns ``{"checkpoint", "state", "best_val", "history", "seconds", "stopped_early", "resumed_from",
    "refine_epoch", "refined_labels"}`` (the last two: the epoch of the latest label refinement and the labels it
    produced, one uint8 map per training sample; None without refinement) and, with cross-fitted cleaning,
    ``"clean"`` (its statistics; the cleaned labels are in :func:`clean_path`).
    """
    if resume is not None:
        cfg.resume = bool(resume)
    cfg.validate()
    if not train_samples:
        raise ValueError("no training samples")
    scheme = get_scheme(cfg.scheme)
    _check_samples(train_samples, val_samples, scheme.num_classes, cfg.scheme)
    dctx, device = _dist_setup(cfg)
    try:
        if cfg.coteach > 0 and dctx.on:
            raise ValueError("co-teaching (coteach > 0) trains two networks in one process; it does not run under "
                             "DDP yet: train on one process (or one GPU)")
        clean_stats = None
        if cfg.clean == "crossfit":  # progress: the fold models fill [0, clean_share), the final model the rest
            share = float(cfg.clean_share)
            outer = progress
            part = (lambda a, b: (lambda f, m: outer(a + (b - a) * f, m))) if outer is not None else (lambda a, b: None)
            cfg, train_samples, clean_stats = _crossfit(cfg, dctx, device, train_samples, Path(out_path),
                                                        part(0.0, share), should_cancel)
            meta_extra = {**(meta_extra or {}), "clean": {k: v for k, v in clean_stats.items() if k != "clean_folds"}}
            progress = part(share, 1.0)
        res = _train(cfg, dctx, device, train_samples, val_samples, Path(out_path), progress, on_metrics,
                     should_cancel, meta_extra)
        if clean_stats is not None:
            res["clean"] = clean_stats
        return res
    finally:
        if dctx.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def absent_classes_message(freqs: np.ndarray, val_samples, scheme, n_train: int) -> str | None:
    """The one warning about classes without a labelled pixel in the training split (``freqs``: its pooled class
    frequencies), naming the split, and which of them the validation split's labels do hold (the model cannot
    predict those: their validation IoU is 0); None when every class is in the training labels. The class weights of
    absent classes are kept finite (:func:`seghz.train.losses.class_weights`, whose own warning is not repeated)."""
    absent = [int(i) for i in np.flatnonzero(np.asarray(freqs) == 0)]
    if not absent:
        return None
    nc = scheme.num_classes
    val = pooled_class_frequencies((s[1] for s in val_samples), nc) if val_samples else np.zeros(nc)
    in_val = [scheme.names[i] for i in absent if val[i] > 0]
    msg = (f"warning: {len(absent)} of {nc} classes have no pixel in the training split's labels ({n_train} "
           f"sample(s)), so the model cannot learn them: {', '.join(scheme.names[i] for i in absent)}")
    if val_samples:
        msg += (f"; of these, the validation split's labels hold {', '.join(in_val)} (their validation IoU will be 0)"
                if in_val else "; the validation split's labels hold none of them either")
    return msg


def warmup_fraction(total_steps: int) -> float:
    """OneCycle's warm-up share: 10 % of the run. torch ends the warm-up at step ``pct · total − 1`` and divides by
    that length, so a run of exactly 10 steps (0.1 · 10 − 1 = 0) raised ZeroDivisionError before its first step;
    there the warm-up takes 2 steps (20 %) instead. Every other length keeps 10 % (and resumes as before)."""
    return 0.2 if int(total_steps) == 10 else 0.1


def _train(cfg, dctx: _Dist, device: str, train_samples, val_samples, out_path: Path, progress, on_metrics,
           should_cancel, meta_extra) -> dict:
    scheme = get_scheme(cfg.scheme)
    nc = scheme.num_classes
    main = dctx.main
    say = progress if main else None
    on_metrics = on_metrics if main else None
    spath = state_path(out_path)
    cuda = torch.device(device).type == "cuda"
    _seed_everything(cfg.seed, cfg.deterministic, cuda)
    norm = _normalization(cfg)
    amp = bool(cfg.amp) and cuda  # CUDA: bf16 autocast. CPU: fp32. channels_last on both
    sampler = None
    if cfg.sampler == "class_aware":
        classes = cfg.sampler_classes if cfg.sampler_classes is not None else building_classes(cfg.scheme)
        sampler = CropSampler(cfg.crop_size, "class_aware", classes, cfg.sampler_min_fraction)
    on_device = cfg.augment == "device" or (cfg.augment == "auto" and cuda)
    pre = preload(train_samples, device, default_budget(device)) if on_device else None
    # label refinement: `cur` are the samples trained on (the original ones until the first refinement, then the
    # original images with the refined labels of the latest refinement); `train_samples` keep the given labels
    refine_at = set(refine_epochs(cfg.epochs, refine_start(cfg), cfg.refine_every)) if cfg.refine != "none" else set()
    rparams = RefineParams.of(cfg)
    rpath = refine_path(out_path)
    cur: list[Sample] = list(train_samples)
    refined: list[np.ndarray] | None = None

    if cfg.parent_checkpoint:
        model, pmeta = load_checkpoint(cfg.parent_checkpoint, device)
        if pmeta["scheme"]["name"] != cfg.scheme:
            raise ValueError(f"parent checkpoint is for scheme {pmeta['scheme']['name']}, training uses {cfg.scheme}")
        norm = pmeta.get("normalization", norm)
        cfg.arch, cfg.encoder = pmeta["arch"], pmeta["encoder"]
    else:
        model = build_model(cfg.arch, cfg.encoder, nc, cfg.encoder_weights).to(device)
    model = model.to(memory_format=torch.channels_last)
    if dctx.on and cuda and cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.train()
    peer = None  # co-teaching's second network; `trained` holds every trained weight (the optimiser's and the state's)
    if cfg.coteach > 0:
        peer = _make_peer(cfg, model, nc, device)
        peer = peer.to(memory_format=torch.channels_last)
        peer.train()
    trained = torch.nn.ModuleDict({"model": model, "peer": peer}) if peer is not None else model

    freqs = pooled_class_frequencies((sample[1] for sample in train_samples), nc)
    if freqs.sum() <= 0:
        raise ValueError("the training labels hold no labelled pixel (all are ignore/background)")
    if say is not None:
        msg = absent_classes_message(freqs, val_samples, scheme, len(train_samples))
        if msg:
            say(0.0, msg)
    with warnings.catch_warnings():  # said once above, as a log line naming the split; not a raw UserWarning too
        warnings.filterwarnings("ignore", message=r"class\(es\) absent from the training labels", category=UserWarning)
        weights = make_class_weights(freqs, cfg.class_weights, list(scheme.names))
    lcfg = cfg.loss_config()
    crit = SegLoss(weights, config=lcfg, present=freqs > 0).to(device)  # present: forward correction's K classes

    global_batch = cfg.batch_size * dctx.world
    pixels = sum(s[1].size for s in train_samples)
    steps = cfg.steps_per_epoch or max(1, math.ceil(pixels / (cfg.crop_size**2) / global_batch))
    opt = torch.optim.AdamW(trained.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = steps * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=warmup_fraction(total))
    has_trusted = any(len(s) > 2 for s in train_samples)
    order_rng = random.Random(cfg.seed)
    order: list[int] = []
    ema = WeightEMA(model, ema_decay(cfg.ema, total)) if cfg.ema > 0 else None
    # loop state: everything the training-state file carries besides tensors and RNGs
    st = {"epoch": 0, "step": 0, "best": -1.0, "best_scores": None, "best_epoch": None, "bad_epochs": 0,
          "history": [], "stopped_early": None, "finished": False, "elapsed": 0.0, "refine_epoch": None,
          "refine_digest": None}
    resumed_from = None
    if cfg.resume:
        if dctx.on:  # every rank must see the same file (multi-node: put --out on shared storage)
            have = _agree(dctx, [float(spath.is_file())], device, "sum")[0]
            if 0 < have < dctx.world:
                raise TrainStateError(f"{spath}: the training state is visible to {int(have)} of {dctx.world} processes; "
                                      "put the output on storage that every node shares to resume a multi-node run")
        if spath.is_file():
            ts = load_train_state(spath)
            _check_resumable(ts.info, cfg, global_batch, steps, spath)
            trained.load_state_dict(ts.model)
            if ema is not None:
                if ts.ema is None:
                    raise TrainStateError(f"{spath}: the run keeps a moving average of the weights (ema={cfg.ema}) "
                                          "but the training state holds none; start a new run (without resume)")
                ema.load_state_dict(ts.ema, int(ts.info["loop"]["step"]))
            opt.load_state_dict(ts.optimizer)
            if ts.scheduler is not None:
                sched.load_state_dict(ts.scheduler)
            if ts.rng is not None:
                set_rng_state(ts.rng)
            loop = ts.info["loop"]
            v, keys, gauss = loop["order_rng"]
            order_rng.setstate((int(v), tuple(int(k) for k in keys), gauss))
            order = [int(i) for i in loop["order"]]
            st.update({k: loop.get(k, v) for k, v in st.items()})  # keys added later (refine_*) keep their defaults
            resumed_from = st["epoch"]
            if say is not None:
                say(st["step"] / total, f"resuming after epoch {st['epoch']} (step {st['step']}) from {spath}")
        elif say is not None:
            say(0.0, f"no training state at {spath}; starting from scratch")

    def result() -> dict:
        return {"checkpoint": str(out_path), "state": str(spath), "best_val": st["best_scores"],
                "history": st["history"], "seconds": st["elapsed"], "stopped_early": st["stopped_early"],
                "resumed_from": resumed_from, "refine_epoch": st["refine_epoch"], "refined_labels": refined}

    if st["finished"]:
        if say is not None:
            say(1.0, f"the saved run already finished (epoch {st['epoch']}); nothing to do")
        return result()
    if st["refine_epoch"] is not None:  # resume: train on the labels of the saved run's latest refinement
        refined = _restore_refined(cfg, dctx, ema.module if ema is not None else model, norm, device,
                                   train_samples, st, rpath, rparams, say, st["step"] / total)
        cur = _apply_refined(train_samples, refined, pre)

    manual_sync = False
    fwd = model
    if dctx.on:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model, device_ids=[torch.device(device).index] if cuda else None)  # broadcasts rank 0's weights
        if lcfg.consistency:  # two forwards per step: average gradients by hand
            manual_sync = True
        else:
            fwd = _DDPView(ddp)
        if main and not cuda and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()):
            warnings.warn("DDP on the CPU keeps per-process BatchNorm statistics (SyncBatchNorm needs a GPU); results "
                          "differ slightly from one process at the same global batch", stacklevel=2)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    mem_fmt = torch.channels_last
    debug = bool(os.environ.get(DEBUG_ENV))
    seen: list[dict] = []
    lo = dctx.rank * cfg.batch_size
    my_slots = list(range(lo, lo + cfg.batch_size))
    t0 = time.time() - float(st["elapsed"])
    step = int(st["step"])

    def kept_msg() -> str:
        if st["best_epoch"] is None:
            return "No checkpoint was written."
        return f"The checkpoint of epoch {st['best_epoch']} is kept at {out_path}; the state of epoch {st['epoch']} at {spath}."

    # Each step's loss (and loss stats) is read back to the host — a device sync — to check it is finite, log it
    # and report progress. On one CUDA device that happens SYNC_LAG steps late, after the next step is queued, so
    # the GPU never waits for Python between steps (a NaN then stops the run one update later; the files on disk
    # are the same: checkpoints are only written at the end of an epoch). CPU and DDP runs read it back at once.
    lag = _sync_lag(cuda, dctx)
    pending: list[tuple[int, int, torch.Tensor, dict]] = []  # (epoch, step, loss, stats) not read back yet
    losses: list[float] = []
    stats: dict[str, list[float]] = {}

    def drain(keep: int) -> None:
        while len(pending) > keep:
            ep, sp, lt, sts = pending.pop(0)
            lv = float(lt.float())
            if not math.isfinite(lv):
                kept = (f"the last good checkpoint (epoch {st['best_epoch']}) is kept at {out_path}"
                        if st["best_epoch"] is not None else "no checkpoint was written")
                raise TrainDiverged(f"training loss became {lv} at epoch {ep}, step {sp}; stopped. {kept}. "
                                    "Try a lower learning rate or check the labels.")
            losses.append(lv)
            for k, v in sts.items():
                stats.setdefault(k, []).append(float(v))
            if say is not None:
                say(sp / total, step_message(ep, cfg.epochs, sp - (ep - 1) * steps, steps, lv))

    for epoch in range(int(st["epoch"]) + 1, cfg.epochs + 1):
        trained.train()
        thre = crit.set_epoch(epoch, cfg.epochs)
        losses.clear()
        stats.clear()
        lrs: list[float] = []  # the learning rate each of this epoch's optimizer steps used
        for _ in range(steps):
            cancel = should_cancel is not None and bool(should_cancel())
            if dctx.on:
                cancel = _agree(dctx, [float(cancel)], device)[0] > 0
            if cancel:
                raise TrainCancelled(f"cancelled at epoch {epoch}, step {step}. {kept_msg()}")
            if len(order) < global_batch:
                extra = list(range(len(train_samples)))
                order_rng.shuffle(extra)
                order += extra
                while len(order) < global_batch:  # fewer samples than one global batch
                    order_rng.shuffle(extra)
                    order += extra
            gidx, order = order[:global_batch], order[global_batch:]
            idx = gidx[lo : lo + cfg.batch_size]
            if debug:
                seen.append({"epoch": epoch, "step": step, "indices": idx,
                             "positions": [step * global_batch + j for j in my_slots]})
            if on_device:  # one batched warp on the device; crops drawn from a per-(step, rank) generator
                x, y, tr = make_device_batch(cur, idx, sampler or CropSampler(cfg.crop_size), random.Random(
                    f"{cfg.seed}/{step}/r{lo}"), norm, device, preloaded=pre, scale=(cfg.scale_min, cfg.scale_max),
                    return_trusted=True)
            else:
                x, y, tr = slot_batch(cur, idx, my_slots, cfg.seed, step, cfg.crop_size, norm, sampler)
            x = x.to(device, non_blocking=cuda, memory_format=mem_fmt)
            y = y.to(device, non_blocking=cuda)
            tr = tr.to(device, non_blocking=cuda) if has_trusted else None
            crit.set_progress(step, total)  # co-teaching's forget rate, ELR's teacher mass
            with autocast():
                if peer is not None:
                    loss, _ = crit.pair_loss(fwd, peer, x, y, tr)
                else:
                    loss, _ = crit.model_loss(fwd, x, y, tr, **({"teacher": ema.module} if lcfg.elr > 0 else {}))
            lt = loss.detach() if not dctx.on else torch.tensor(
                _agree(dctx, [float(loss.detach().float())], device, "sum")[0] / dctx.world)
            pending.append((epoch, step + 1, lt, dict(crit.last_stats)))
            if not lag:
                drain(0)  # read back now: a NaN stops the run before the update
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if manual_sync:
                _allreduce_grads(model, dctx.world)
            lrs.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            step += 1
            if lag:
                drain(lag)  # the previous step's loss: the device is busy with this one meanwhile
        drain(0)
        if debug:
            _write_debug(dctx, seen, global_batch, device)
        # lr: what the epoch's steps used (their mean; lr_start / lr_end: its first and last step's). The scheduler's
        # get_last_lr() after the epoch is the rate of the *next* step -- after the last epoch, one past the schedule
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": float(np.mean(lrs)), "lr_start": lrs[0],
               "lr_end": lrs[-1], "seconds": time.time() - t0}
        if lcfg.noise_mask != "none":
            row["noise_threshold"] = float(thre)
        if lcfg.robust == "gce" and lcfg.gce_warmup > 0:
            row["gce_q"] = float(crit.gce_q)  # the q of this epoch's warm-up
        if peer is not None:
            row["coteach_rate"] = float(crit.coteach_rate)  # the forget rate of the epoch's last step
        row.update({k: float(np.mean(v)) for k, v in stats.items()})
        failure: BaseException | None = None
        stop = False
        do_refine = epoch in refine_at
        new_labels: list[np.ndarray] | None = None
        if main:
            try:
                if do_refine:  # rank 0 refines (from the given labels), keeps them next to the state, then shares them
                    judge = ema.module if ema is not None else model  # the averaged weights judge, when kept
                    if say is not None:
                        say(step / total, f"epoch {epoch}: refining the training labels")
                    new_labels, rst = refine_samples(judge, train_samples, norm, device, rparams, amp=amp)
                    row.update(refined_px=rst["refined_px"], refine_ignored_px=rst["refine_ignored_px"])
                    st["refine_epoch"], st["refine_digest"] = epoch, _save_refined(rpath, new_labels, epoch)
                    if say is not None:
                        what = ("regions" if rparams.rule != "drop" else "label components dropped"
                                if rparams.relabel_conf is None else "label components dropped or relabelled")
                        say(step / total, f"epoch {epoch}: refined labels: {100 * rst['refined_px']:.2f} % of the "
                                          f"labelled pixels relabelled ({rst['regions']} {what}), "
                                          f"{100 * rst['refine_ignored_px']:.2f} % ignored"
                                          + _rates_text(rst.get("noise_rates"), scheme))
                stop = _end_of_epoch(cfg, model, norm, nc, scheme, val_samples, device, epoch, step, row, st, freqs,
                                     out_path, spath, meta_extra, opt, sched, order_rng, order, on_metrics, say, total,
                                     global_batch, steps, dctx, ema, trained)
            except BaseException as e:  # noqa: BLE001 - told to the other ranks, then re-raised
                failure = e
        code = _broadcast(dctx, [2.0 if failure is not None else (1.0 if stop else 0.0)], device)[0]
        if not main:
            st["history"].append(row)  # without validation scores (rank 0 has them)
        if failure is not None:
            raise failure
        if code == 2.0:
            raise RuntimeError(f"rank 0 failed at the end of epoch {epoch} (see its log); rank {dctx.rank} stops")
        if do_refine:
            if not main:
                fr = _broadcast(dctx, [0.0, 0.0], device)
                row.update(refined_px=fr[0], refine_ignored_px=fr[1])
            elif dctx.on:
                _broadcast(dctx, [row["refined_px"], row["refine_ignored_px"]], device)
            refined = _share_labels(dctx, new_labels, train_samples, device)
            cur = _apply_refined(train_samples, refined, pre)
            if not main:
                st["refine_epoch"], st["refine_digest"] = epoch, labels_digest(refined)
        if code == 1.0:
            st["stopped_early"] = epoch
            break
    st["elapsed"] = time.time() - t0
    return result()


def _end_of_epoch(cfg, model, norm, nc, scheme, val_samples, device, epoch, step, row, st, freqs, out_path, spath,
                  meta_extra, opt, sched, order_rng, order, on_metrics, say, total, global_batch, steps, dctx,
                  ema: WeightEMA | None = None, trained: torch.nn.Module | None = None) -> bool:
    """Rank 0: validate, log, write the checkpoint at a new best and the training state. True: stop early. With a
    moving average of the weights (``ema``), the averaged weights are validated and saved as the checkpoint.
    ``trained``: every trained weight, for the training state (co-teaching: the model and its peer; default: model)."""
    net = ema.module if ema is not None else model
    if val_samples:
        pred = Predictor(net, nc, tuple(norm["mean"]), tuple(norm["std"]), tile=cfg.tile_size, device=device,
                         amp=bool(cfg.amp))  # fp32 validation of an fp32 (amp=False) run
        if say is not None:
            pred = _SayingPredictor(pred, len(val_samples), lambda k, n: say(step / total, validation_message(epoch, k, n)))
        sc = evaluate_samples(pred, val_samples, scheme.names)
        row.update(val_miou=sc["miou"], val_fwiou=sc["fwiou"], val_oa=sc["oa"])
        row.update({f"val_iou/{n}": v["iou"] for n, v in sc["per_class"].items() if v["iou"] is not None})
        score = sc[cfg.monitor] or 0.0
    else:
        sc, score = None, float(epoch)
    st["history"].append(row)
    if on_metrics is not None:
        on_metrics(step, epoch, row)
    stop = False
    if score > st["best"]:
        meta = {
            "arch": cfg.arch, "encoder": cfg.encoder, "num_classes": nc, "scheme": scheme.to_json(),
            "normalization": norm, "tile_size": cfg.tile_size, "recipe": asdict(cfg),
            "metrics": {"val": _brief(sc), "epoch": epoch, "train_class_freq": freqs.tolist()},
            "parent": cfg.parent_checkpoint,
        }
        meta.update(meta_extra or {})
        try:
            save_checkpoint(out_path, net, meta)
        except OSError as e:
            kept = (f"The previous checkpoint (epoch {st['best_epoch']}) is kept at {out_path}." if st["best_epoch"]
                    is not None else "No checkpoint had been written yet.")
            raise _save_error(e, "checkpoint", out_path, epoch, kept) from e
        st.update(best=score, best_scores=sc, best_epoch=epoch, bad_epochs=0)
    else:
        st["bad_epochs"] += 1
        if cfg.patience is not None and st["bad_epochs"] >= cfg.patience:
            stop = True
            st["stopped_early"] = epoch
            if say is not None:
                say(1.0, f"early stop at epoch {epoch}: val {cfg.monitor} did not improve for {st['bad_epochs']} epochs")
    st["epoch"], st["step"] = epoch, step
    st["finished"] = stop or epoch == cfg.epochs
    st["elapsed"] = row["seconds"]
    py = order_rng.getstate()
    info = {"recipe": asdict(cfg), "checkpoint": out_path.name, "world_size": dctx.world, "global_batch": global_batch,
            "steps_per_epoch": steps, "total_steps": total,
            "loop": {**st, "order": list(order), "order_rng": [py[0], list(py[1]), py[2]]}}
    try:
        save_train_state(spath, trained if trained is not None else model, opt, sched, info, rng_state(),
                         ema=ema.state_dict() if ema is not None else None)
    except OSError as e:
        prev = f"The training state of the last saved epoch is kept at {spath}." if spath.is_file() else "No training state had been written yet."
        ck = f" The checkpoint at {out_path} is of epoch {st['best_epoch']}." if st["best_epoch"] is not None else ""
        raise _save_error(e, "training state", spath, epoch, prev + ck) from e
    return stop


def _make_peer(cfg: TrainConfig, model: torch.nn.Module, nc: int, device: str) -> torch.nn.Module:
    """Co-teaching's second network. From scratch (no encoder weights, no parent) it is a new model with its own
    random initialisation, as in the paper. Otherwise it shares what was given (the ImageNet or the parent's
    encoder) and gets its own random decoder and head, so the two networks start apart."""
    if not cfg.parent_checkpoint and cfg.encoder_weights is None:
        return build_model(cfg.arch, cfg.encoder, nc, None).to(device)
    peer = copy.deepcopy(model)
    reset = 0
    for name, m in peer.named_modules():
        if name.split(".")[0] in ("encoder", "backbone") or not hasattr(m, "reset_parameters"):
            continue
        m.reset_parameters()
        reset += 1
    if not reset:
        raise ValueError(f"co-teaching: no decoder or head layer of {cfg.arch} could be re-initialised for the peer "
                         "network; train from scratch (encoder_weights None) instead")
    return peer


SYNC_LAG = 1  # steps between a step's launch and the read-back of its loss on one CUDA device (see _train)


def _sync_lag(cuda: bool, dctx: _Dist) -> int:
    """How many steps late the loss is read back: :data:`SYNC_LAG` on one CUDA device, else 0 (at once)."""
    return SYNC_LAG if cuda and not dctx.on else 0


def clean_path(checkpoint_path: str | os.PathLike) -> Path:
    """``run.safetensors`` -> ``run.clean.safetensors``: the training labels after cross-fitted cleaning."""
    p = Path(checkpoint_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".clean.safetensors")


def _crossfit(cfg: TrainConfig, dctx: _Dist, device: str, train_samples, out_path: Path, progress, should_cancel=None):
    """Cross-fitted cleaning (:func:`seghz.train.clean.crossfit_clean`) before the final model: returns the final
    model's config (the steps left after the fold models), the cleaned samples and the cleaning's statistics.
    The cleaned labels are kept next to the checkpoint (:func:`clean_path`) so that a resumed run reuses them."""
    from seghz.train.clean import crossfit_clean, total_steps

    steps = total_steps(cfg, train_samples, dctx.world)
    final = replace(cfg, steps_per_epoch=max(1, -(-round(steps * (1 - float(cfg.clean_share))) // cfg.epochs)))
    cpath = clean_path(out_path)
    labels = _read_clean(cpath, train_samples) if cfg.resume and state_path(out_path).is_file() else None
    stats: dict = {}
    if labels is None:
        say = progress if dctx.main else None
        work = out_path.parent / f".{out_path.name}.crossfit"  # fold checkpoints: one folder every rank sees
        try:
            cleaned, stats = crossfit_clean(cfg, train_samples, device=device, world=dctx.world, progress=say,
                                            workdir=work, should_cancel=should_cancel)
            labels = _share_labels(dctx, [c[1] for c in cleaned] if dctx.main else None, train_samples, device)
        finally:
            if dctx.main:  # after the broadcast (a collective): no rank reads the fold checkpoints any more
                shutil.rmtree(work, ignore_errors=True)
        if dctx.main:
            _save_refined(cpath, labels, 0)
        stats["labels_digest"] = labels_digest(labels)  # the same on every rank (rank 0's labels)
    else:
        stats = {"reused": str(cpath), "labels_digest": labels_digest(labels)}
    return final, [(s[0], lb, *s[2:]) for s, lb in zip(train_samples, labels)], stats


def _read_clean(path: Path, train_samples) -> list[np.ndarray] | None:
    """The cleaned labels of an earlier (interrupted) run of the same training set, when intact; else None."""
    from seghz.models.checkpoint import read_safetensors_meta

    if not path.is_file():
        return None
    try:
        meta = read_safetensors_meta(path, REFINE_KEY, TrainStateError, "cleaned-labels")
    except TrainStateError:
        return None
    return _read_refined(path, train_samples, {"refine_epoch": 0, "refine_digest": meta.get("digest")})


REFINE_KEY = "seghz_refine"
REFINE_FORMAT = "seghz-refine/1"


def refine_path(checkpoint_path: str | os.PathLike) -> Path:
    """``run.safetensors`` -> ``run.refine.safetensors``: the refined training labels of the latest refinement."""
    p = Path(checkpoint_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".refine.safetensors")


def _save_refined(path: Path, labels: list[np.ndarray], epoch: int) -> str:
    """Write the refined labels (uint8 tensors ``labels/<sample index>``) atomically; their digest."""
    from seghz.models.checkpoint import write_safetensors

    digest = labels_digest(labels)
    tensors = {f"labels/{i}": torch.from_numpy(np.ascontiguousarray(lb, dtype=np.uint8)) for i, lb in enumerate(labels)}
    meta = {"format": REFINE_FORMAT, "epoch": int(epoch), "digest": digest, "count": len(labels)}
    try:
        write_safetensors(path, tensors, {REFINE_KEY: json.dumps(meta)})
    except OSError as e:
        raise _save_error(e, "refined labels", path, epoch, "Training stops before using them.") from e
    return digest


def _read_refined(path: Path, train_samples, st: dict) -> list[np.ndarray] | None:
    """The refined labels of ``path`` when they are those the training state names (epoch and digest), else None."""
    from safetensors.torch import load_file

    from seghz.models.checkpoint import read_safetensors_meta

    if not path.is_file():
        return None
    try:
        meta = read_safetensors_meta(path, REFINE_KEY, TrainStateError, "refined-labels")
    except TrainStateError:  # damaged / foreign: treated as missing
        return None
    if (meta.get("format") != REFINE_FORMAT or meta.get("epoch") != st["refine_epoch"]
            or meta.get("digest") != st["refine_digest"] or meta.get("count") != len(train_samples)):
        return None
    t = load_file(str(path), device="cpu")
    labels = [t[f"labels/{i}"].numpy() for i in range(len(train_samples)) if f"labels/{i}" in t]
    if len(labels) != len(train_samples) or any(lb.shape != s[1].shape for lb, s in zip(labels, train_samples)):
        return None
    return labels if labels_digest(labels) == st["refine_digest"] else None


def _restore_refined(cfg, dctx: _Dist, model, norm, device, train_samples, st: dict, rpath: Path, rparams, say,
                     frac: float):
    """Resume: the labels of the saved run's latest refinement. Rank 0 reads them from :func:`refine_path` (written
    with the state); when that file is missing or belongs to another epoch and the refinement was at the saved epoch,
    they are recomputed from the saved (= that epoch's) weights; otherwise the run cannot resume. Shared with all ranks."""
    labels: list[np.ndarray] | None = None
    failure: BaseException | None = None
    if dctx.main:
        try:
            labels = _read_refined(rpath, train_samples, st)
            if labels is None:
                if int(st["refine_epoch"]) != int(st["epoch"]):
                    raise TrainStateError(
                        f"{rpath}: the refined labels of epoch {st['refine_epoch']} that the training state needs are "
                        "missing or do not match it; start a new run (without resume)")
                cuda = torch.device(device).type == "cuda"
                labels, _ = refine_samples(model, train_samples, norm, device, rparams, amp=bool(cfg.amp) and cuda)
                digest = _save_refined(rpath, labels, int(st["refine_epoch"]))
                if digest != st["refine_digest"] and say is not None:
                    say(frac, f"warning: {rpath} was missing; the refined labels of epoch "
                        f"{st['refine_epoch']} were recomputed and differ slightly from the saved run's")
                st["refine_digest"] = digest
        except BaseException as e:  # noqa: BLE001 - told to the other ranks, then re-raised
            failure = e
    code = _broadcast(dctx, [2.0 if failure is not None else 0.0], device)[0]
    if failure is not None:
        raise failure
    if code == 2.0:
        raise RuntimeError(f"rank 0 could not restore the refined labels (see its log); rank {dctx.rank} stops")
    return _share_labels(dctx, labels, train_samples, device)


def _share_labels(dctx: _Dist, labels: list[np.ndarray] | None, train_samples, device: str) -> list[np.ndarray]:
    """Rank 0's label maps on every rank (one flat uint8 broadcast; the shapes are those of the training labels)."""
    if not dctx.on:
        assert labels is not None
        return labels
    import torch.distributed as dist

    shapes = [s[1].shape for s in train_samples]
    sizes = [int(np.prod(sh)) for sh in shapes]
    dev = device if torch.device(device).type == "cuda" else "cpu"
    if dctx.main:
        assert labels is not None
        flat = torch.from_numpy(np.concatenate([np.ascontiguousarray(lb, dtype=np.uint8).ravel() for lb in labels])).to(dev)
    else:
        flat = torch.empty(sum(sizes), dtype=torch.uint8, device=dev)
    dist.broadcast(flat, 0)
    if dctx.main:
        return labels  # type: ignore[return-value]
    parts = torch.split(flat.cpu(), sizes)
    return [p.numpy().reshape(sh).copy() for p, sh in zip(parts, shapes)]


def _apply_refined(train_samples, labels: list[np.ndarray], pre) -> list:
    """The samples with the refined labels (images and trusted masks unchanged); device-preloaded labels updated too."""
    cur = [(s[0], lb, *s[2:]) for s, lb in zip(train_samples, labels)]
    if pre is not None:
        for i, lb in enumerate(labels):
            h, w = lb.shape
            pre.labels[i, :h, :w] = torch.from_numpy(np.ascontiguousarray(lb, dtype=np.uint8)).to(pre.device)
    return cur


def _brief(sc: dict | None) -> dict | None:
    if sc is None:
        return None
    return {"miou": sc["miou"], "fwiou": sc["fwiou"], "oa": sc["oa"],
            "per_class_iou": {k: v["iou"] for k, v in sc["per_class"].items()}}


__all__ = ["TrainCancelled", "TrainConfig", "TrainDiverged", "TrainSaveError", "class_frequencies", "evaluate_samples",
           "make_batch", "refine_path", "slot_batch", "state_path", "step_message", "train", "validation_message"]
