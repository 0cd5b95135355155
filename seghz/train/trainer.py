"""Training v1: weighted CE (+ optional Dice), random crops with D4 + colour jitter, best-mIoU checkpoint.

Runs in-process (the CLI, a background job process or a test calls :func:`train`); it never runs inside
a Streamlit rerun. Progress, metrics and cancellation go through callbacks.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from seghz.classes import IGNORE, get_scheme
from seghz.infer.engine import Predictor
from seghz.metrics import class_frequencies, confusion_matrix, scores
from seghz.models.checkpoint import load_checkpoint, save_checkpoint
from seghz.models.registry import LITE0_WEIGHTS, build_model
from seghz.train.losses import SegLoss, enet_class_weights

Sample = tuple[np.ndarray, np.ndarray]  # (RGB uint8 H×W×3, class index uint8 H×W)


class TrainCancelled(Exception):
    """Training stopped because cancellation was requested."""


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
    class_weights: str = "enet"  # "enet" = 1/ln(1.02+f), or "none"
    dice: bool = True
    seed: int = 0
    device: str | None = None
    tile_size: int = 512
    steps_per_epoch: int | None = None  # default: one pass over the training pixels
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        get_scheme(self.scheme)
        if self.epochs < 1 or self.batch_size < 1 or self.crop_size < 32 or self.crop_size % 32:
            raise ValueError("epochs and batch size must be >= 1 and crop size a multiple of 32 (>= 32)")
        if self.class_weights not in ("enet", "none"):
            raise ValueError("class_weights must be 'enet' or 'none'")


def _normalization(cfg: TrainConfig) -> dict:
    if cfg.encoder == "tu-efficientnet_lite0":
        return {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    return {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _random_crop(img: np.ndarray, lbl: np.ndarray, size: int, rng: random.Random) -> Sample:
    h, w = lbl.shape
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        lbl = np.pad(lbl, ((0, ph), (0, pw)), constant_values=IGNORE)
        h, w = lbl.shape
    r = rng.randint(0, h - size)
    c = rng.randint(0, w - size)
    return img[r : r + size, c : c + size], lbl[r : r + size, c : c + size]


def make_batch(samples: list[Sample], idx: list[int], size: int, rng: random.Random, norm: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop, random D4 view and mild colour jitter for each sample; normalised float batch."""
    xs, ys = [], []
    for i in idx:
        img, lbl = _random_crop(*samples[i], size, rng)
        k = rng.randint(0, 3)
        img, lbl = np.rot90(img, k), np.rot90(lbl, k)
        if rng.random() < 0.5:
            img, lbl = img[:, ::-1], lbl[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255
        x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08)
        mean = x.mean()
        x = (x - mean) * rng.uniform(0.8, 1.2) + mean
        xs.append(x.clamp_(0, 1))
        ys.append(torch.from_numpy(np.ascontiguousarray(lbl)).long())
    x = torch.stack(xs)
    m = torch.tensor(norm["mean"]).view(1, 3, 1, 1)
    s = torch.tensor(norm["std"]).view(1, 3, 1, 1)
    return (x - m) / s, torch.stack(ys)


def evaluate_samples(predictor: Predictor, samples: list[Sample], names, tta: str = "none") -> dict:
    """Scores of a predictor over (image, label) samples."""
    cm = np.zeros((len(names), len(names)), np.int64)
    for img, lbl in samples:
        pred, _ = predictor.predict(img, tta)
        cm += confusion_matrix(pred, lbl, len(names))
    return scores(cm, names)


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
    """Train a model and write the best checkpoint (by validation mIoU) atomically to ``out_path``.

    Returns ``{"checkpoint": path, "best_val": scores, "history": [...], "seconds": s}``.
    """
    cfg.validate()
    if not train_samples:
        raise ValueError("no training samples")
    scheme = get_scheme(cfg.scheme)
    nc = scheme.num_classes
    for i, (img, lbl) in enumerate(train_samples + val_samples):
        if lbl.size and lbl[lbl != IGNORE].max(initial=0) >= nc:
            raise ValueError(f"sample {i} holds class index >= {nc} ({cfg.scheme})")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    np.random.seed(cfg.seed)
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
    for _, lbl in train_samples:
        freqs += np.bincount(lbl[lbl != IGNORE].ravel(), minlength=nc)[:nc]
    freqs = freqs / max(freqs.sum(), 1)
    weights = enet_class_weights(freqs) if cfg.class_weights == "enet" else None
    if weights is not None:
        weights = np.where(freqs > 0, weights, 0).astype(np.float32)
    crit = SegLoss(weights, cfg.dice).to(device)

    pixels = sum(l.size for _, l in train_samples)
    steps = cfg.steps_per_epoch or max(1, math.ceil(pixels / (cfg.crop_size**2) / cfg.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = steps * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    history, best, best_scores = [], -1.0, None
    t0 = time.time()
    step = 0
    order: list[int] = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        losses = []
        for _ in range(steps):
            if should_cancel is not None and should_cancel():
                raise TrainCancelled(f"cancelled at epoch {epoch}, step {step}")
            if len(order) < cfg.batch_size:
                extra = list(range(len(train_samples)))
                rng.shuffle(extra)
                order += extra
            idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
            x, y = make_batch(train_samples, idx, cfg.crop_size, rng, norm)
            x, y = x.to(device), y.to(device)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss))
            if progress is not None:
                progress(step / total, f"epoch {epoch}/{cfg.epochs} step {step}/{total} loss {losses[-1]:.3f}")
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": float(sched.get_last_lr()[0]), "seconds": time.time() - t0}
        if val_samples:
            pred = Predictor(model, nc, tuple(norm["mean"]), tuple(norm["std"]), tile=cfg.tile_size, device=device)
            sc = evaluate_samples(pred, val_samples, scheme.names)
            row.update(val_miou=sc["miou"], val_fwiou=sc["fwiou"], val_oa=sc["oa"])
            score = sc["miou"] or 0.0
        else:
            sc, score = None, float(epoch)
        history.append(row)
        if on_metrics is not None:
            on_metrics(step, epoch, row)
        if score > best:
            best, best_scores = score, sc
            meta = {
                "arch": cfg.arch, "encoder": cfg.encoder, "num_classes": nc, "scheme": scheme.to_json(),
                "normalization": norm, "tile_size": cfg.tile_size, "recipe": asdict(cfg),
                "metrics": {"val": _brief(sc), "epoch": epoch, "train_class_freq": freqs.tolist()},
                "parent": cfg.parent_checkpoint,
            }
            meta.update(meta_extra or {})
            save_checkpoint(out_path, model, meta)
    return {"checkpoint": str(out_path), "best_val": best_scores, "history": history, "seconds": time.time() - t0}


def _brief(sc: dict | None) -> dict | None:
    if sc is None:
        return None
    return {"miou": sc["miou"], "fwiou": sc["fwiou"], "oa": sc["oa"],
            "per_class_iou": {k: v["iou"] for k, v in sc["per_class"].items()}}


__all__ = ["TrainConfig", "TrainCancelled", "train", "evaluate_samples", "make_batch", "class_frequencies"]
