"""Training: the study's loss recipe (see :mod:`seghz.train.losses`), random crops with D4 + colour jitter,
best-validation checkpoint, optional early stopping.

Runs in-process (the CLI, a background job process or a test calls :func:`train`); it never runs inside
a Streamlit rerun. Progress, metrics and cancellation go through callbacks.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from seghz.classes import IGNORE, get_scheme
from seghz.infer.engine import Predictor
from seghz.metrics import class_frequencies, confusion_matrix, scores
from seghz.models.checkpoint import load_checkpoint, save_checkpoint
from seghz.models.registry import LITE0_WEIGHTS, build_model
from seghz.train.losses import LossConfig, SegLoss
from seghz.train.losses import class_weights as make_class_weights

# (RGB uint8 H×W×3, class index uint8 H×W) or (RGB, class index, trusted bool H×W): trusted pixels were corrected
# or confirmed by an analyst and are never dropped by the noise mask.
Sample = tuple[np.ndarray, ...]

LOSS_KEYS = tuple(f for f in LossConfig.__dataclass_fields__)
MONITORS = ("miou", "fwiou")


class TrainCancelled(Exception):
    """Training stopped because cancellation was requested."""


class TrainDiverged(RuntimeError):
    """The training loss became NaN or infinite; the job stops (the last good checkpoint, if any, is kept)."""


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
    monitor: str = "miou"  # validation score that picks the best checkpoint and drives early stopping
    patience: int | None = None  # stop after this many epochs without improvement of `monitor` (None: never)
    deterministic: bool = False  # also ask torch for deterministic kernels (slower on GPU)
    seed: int = 0
    device: str | None = None
    tile_size: int = 512
    steps_per_epoch: int | None = None  # default: one pass over the training pixels
    extra: dict = field(default_factory=dict)

    def loss_config(self) -> LossConfig:
        """The loss part of the recipe."""
        return LossConfig(**{k: getattr(self, k) for k in LOSS_KEYS})

    def validate(self) -> None:
        get_scheme(self.scheme)
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
        self.loss_config().validate()


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


def make_batch(samples: list[Sample], idx: list[int], size: int, rng: random.Random, norm: dict,
               return_trusted: bool = False):
    """Random crop, random D4 view and mild colour jitter for each sample; normalised float batch.

    Returns ``(x, y)``, or ``(x, y, trusted)`` with ``return_trusted`` (a bool batch, False where a sample has no
    trusted mask). Samples are ``(img, lbl)`` or ``(img, lbl, trusted)``.
    """
    xs, ys, ts = [], [], []
    for i in idx:
        img, lbl, tr = _random_crop(samples[i][0], samples[i][1], size, rng, _trusted_of(samples[i]))
        k = rng.randint(0, 3)
        img, lbl, tr = np.rot90(img, k), np.rot90(lbl, k), np.rot90(tr, k)
        if rng.random() < 0.5:
            img, lbl, tr = img[:, ::-1], lbl[:, ::-1], tr[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255
        x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08)
        mean = x.mean()
        x = (x - mean) * rng.uniform(0.8, 1.2) + mean
        xs.append(x.clamp_(0, 1))
        ys.append(torch.from_numpy(np.ascontiguousarray(lbl)).long())
        ts.append(torch.from_numpy(np.ascontiguousarray(tr, dtype=bool)))
    x = torch.stack(xs)
    m = torch.tensor(norm["mean"]).view(1, 3, 1, 1)
    s = torch.tensor(norm["std"]).view(1, 3, 1, 1)
    if return_trusted:
        return (x - m) / s, torch.stack(ys), torch.stack(ts)
    return (x - m) / s, torch.stack(ys)


def evaluate_samples(predictor: Predictor, samples: list[Sample], names, tta: str = "none") -> dict:
    """Scores of a predictor over (image, label) samples."""
    cm = np.zeros((len(names), len(names)), np.int64)
    for sample in samples:
        img, lbl = sample[0], sample[1]
        pred, _ = predictor.predict(img, tta)
        cm += confusion_matrix(pred, lbl, len(names))
    return scores(cm, names)


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


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


def train(
    cfg: TrainConfig,
    train_samples: list[Sample],
    val_samples: list[Sample],
    out_path: str | Path,
    progress: Callable[[float, str], None] | None = None,
    on_metrics: Callable[[int, int, dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    meta_extra: dict | None = None,
) -> dict:
    """Train a model and write the best checkpoint (by validation ``cfg.monitor``) atomically to ``out_path``.

    Samples are ``(image, label)`` or ``(image, label, trusted)``. Each epoch's metrics row (passed to
    ``on_metrics``) holds loss, lr, seconds, the validation scores and, when enabled, ``noise_threshold`` /
    ``noise_dropped`` (mean dropped fraction of labelled pixels), ``ohem_kept`` and ``consistency_mse``.
    A NaN/inf loss raises :class:`TrainDiverged`; checkpoints are only written at a new best, so the last good
    one stays. Returns ``{"checkpoint", "best_val", "history", "seconds", "stopped_early"}``.
    """
    cfg.validate()
    if not train_samples:
        raise ValueError("no training samples")
    scheme = get_scheme(cfg.scheme)
    nc = scheme.num_classes
    _check_samples(train_samples, val_samples, nc, cfg.scheme)
    _seed_everything(cfg.seed, cfg.deterministic)
    rng = random.Random(cfg.seed)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    norm = _normalization(cfg)

    if cfg.parent_checkpoint:
        model, pmeta = load_checkpoint(cfg.parent_checkpoint, device)
        if pmeta["scheme"]["name"] != cfg.scheme:
            raise ValueError(f"parent checkpoint is for scheme {pmeta['scheme']['name']}, training uses {cfg.scheme}")
        norm = pmeta.get("normalization", norm)
        cfg.arch, cfg.encoder = pmeta["arch"], pmeta["encoder"]
    else:
        model = build_model(cfg.arch, cfg.encoder, nc, cfg.encoder_weights).to(device)
    model.train()

    freqs = np.zeros(nc)
    for sample in train_samples:
        lbl = sample[1]
        freqs += np.bincount(lbl[lbl != IGNORE].ravel(), minlength=nc)[:nc]
    if freqs.sum() <= 0:
        raise ValueError("the training labels hold no labelled pixel (all are ignore/background)")
    freqs = freqs / freqs.sum()
    absent = [scheme.names[i] for i in np.flatnonzero(freqs == 0)]
    if absent and progress is not None:
        progress(0.0, f"warning: class(es) absent from the training labels: {', '.join(absent)}")
    weights = make_class_weights(freqs, cfg.class_weights, list(scheme.names))  # warns about absent classes
    lcfg = cfg.loss_config()
    crit = SegLoss(weights, config=lcfg).to(device)

    pixels = sum(s[1].size for s in train_samples)
    steps = cfg.steps_per_epoch or max(1, math.ceil(pixels / (cfg.crop_size**2) / cfg.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = steps * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    history, best, best_scores, best_epoch = [], -1.0, None, None
    bad_epochs, stopped_early = 0, None
    has_trusted = any(len(s) > 2 for s in train_samples)
    t0 = time.time()
    step = 0
    order: list[int] = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        thre = crit.set_epoch(epoch, cfg.epochs)
        losses: list[float] = []
        stats: dict[str, list[float]] = {}
        for _ in range(steps):
            if should_cancel is not None and should_cancel():
                raise TrainCancelled(f"cancelled at epoch {epoch}, step {step}")
            if len(order) < cfg.batch_size:
                extra = list(range(len(train_samples)))
                rng.shuffle(extra)
                order += extra
            idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
            x, y, tr = make_batch(train_samples, idx, cfg.crop_size, rng, norm, return_trusted=True)
            x, y = x.to(device), y.to(device)
            tr = tr.to(device) if has_trusted else None
            loss, _ = crit.model_loss(model, x, y, tr)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                kept = (f"the last good checkpoint (epoch {best_epoch}) is kept at {out_path}" if best_epoch is not None
                        else "no checkpoint was written")
                raise TrainDiverged(f"training loss became {lv} at epoch {epoch}, step {step + 1}; stopped. {kept}. "
                                    "Try a lower learning rate or check the labels.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(lv)
            for k, v in crit.last_stats.items():
                stats.setdefault(k, []).append(float(v))
            if progress is not None:
                progress(step / total, f"epoch {epoch}/{cfg.epochs} step {step}/{total} loss {lv:.3f}")
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": float(sched.get_last_lr()[0]), "seconds": time.time() - t0}
        if lcfg.noise_mask != "none":
            row["noise_threshold"] = float(thre)
        row.update({k: float(np.mean(v)) for k, v in stats.items()})
        if val_samples:
            pred = Predictor(model, nc, tuple(norm["mean"]), tuple(norm["std"]), tile=cfg.tile_size, device=device)
            sc = evaluate_samples(pred, val_samples, scheme.names)
            row.update(val_miou=sc["miou"], val_fwiou=sc["fwiou"], val_oa=sc["oa"])
            score = sc[cfg.monitor] or 0.0
        else:
            sc, score = None, float(epoch)
        history.append(row)
        if on_metrics is not None:
            on_metrics(step, epoch, row)
        if score > best:
            best, best_scores, best_epoch, bad_epochs = score, sc, epoch, 0
            meta = {
                "arch": cfg.arch, "encoder": cfg.encoder, "num_classes": nc, "scheme": scheme.to_json(),
                "normalization": norm, "tile_size": cfg.tile_size, "recipe": asdict(cfg),
                "metrics": {"val": _brief(sc), "epoch": epoch, "train_class_freq": freqs.tolist()},
                "parent": cfg.parent_checkpoint,
            }
            meta.update(meta_extra or {})
            save_checkpoint(out_path, model, meta)
        else:
            bad_epochs += 1
            if cfg.patience is not None and bad_epochs >= cfg.patience:
                stopped_early = epoch
                if progress is not None:
                    progress(1.0, f"early stop at epoch {epoch}: val {cfg.monitor} did not improve for {bad_epochs} epochs")
                break
    return {"checkpoint": str(out_path), "best_val": best_scores, "history": history, "seconds": time.time() - t0,
            "stopped_early": stopped_early}


def _brief(sc: dict | None) -> dict | None:
    if sc is None:
        return None
    return {"miou": sc["miou"], "fwiou": sc["fwiou"], "oa": sc["oa"],
            "per_class_iou": {k: v["iou"] for k, v in sc["per_class"].items()}}


__all__ = ["TrainCancelled", "TrainConfig", "TrainDiverged", "class_frequencies", "evaluate_samples", "make_batch", "train"]
