"""Fast head-only refit from a handful of corrections (in the spirit of Microsoft's Land Cover Mapping Tool).

The network is frozen; only its final classifier conv (weights + bias) is refitted:

1. :func:`find_head` locates the classifier: smp models' ``segmentation_head[0]``; otherwise the last
   ``Conv2d`` with ``out_channels == num_classes`` and a 1×1 kernel (HRNetOCR's ``head.cls``, HRNetPSP's
   ``cls``). smp's Unet and PSPNet end in a 3×3 conv; that works too: a k×k conv is a linear map of the k×k
   patch of its input, so the patch (C·k² values) is the feature vector.
2. The image is cut into windows (``tile``, padded to a multiple of 32 like the inference engine); a forward
   hook on the head records the features *entering* the head, at the head's own resolution (stride 4 for
   FPN/DeepLabV3+/UPerNet/Segformer/HRNet, 8 for PSPNet, 1 for Unet). A labelled pixel (r, c) of a window of
   size H×W with head input h×w takes the feature at (⌊r·h/H⌋, ⌊c·w/W⌋) (nearest subsampling of the labels).
   Windows without any sampled pixel are never run.
3. Fit data: (a) the corrected pixels (sparse labels, 255 = not corrected; at most ``max_corrected``,
   class-balanced subsample) and (b) a class-balanced sample of the existing labels (up to
   ``context_per_class`` pixels per class, corrected pixels excluded), so that classes the analyst did not touch
   keep their say. Within each group every class has the same total weight; the corrections group is weighted
   ``correction_weight`` against the context group.
4. Objective: weighted CE + ``weight_decay`` · ‖θ − θ_old‖² (decay toward the old head, not toward 0), minimised
   by full-batch L-BFGS (strong-Wolfe line search, ``steps`` iterations) or Adam. Rows of classes that appear
   in neither group are frozen (``freeze_absent``), so a class without any evidence cannot be pushed out.
5. The refitted model is saved in the usual checkpoint format with the parent's metadata, ``parent`` /
   ``parent_id`` and ``recipe = {"kind": "head_refit", ...counts, config}``.

Everything except the head is bit-identical to the parent (eval mode: BatchNorm statistics are not touched).
A few 512² images with an efficientnet-lite0 Unet take a few seconds on one CPU thread.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seghz.classes import IGNORE
from seghz.infer.engine import pad32
from seghz.models.checkpoint import load_checkpoint, save_checkpoint

RECIPE_KIND = "head_refit"
OPTIMIZERS = ("lbfgs", "adam")


class HeadNotFound(ValueError):
    """The model has no recognisable final classifier conv."""


@dataclass
class RefitConfig:
    """Options of :func:`refit_head` (stored in the new checkpoint's recipe)."""

    optimizer: str = "lbfgs"  # "lbfgs" (full batch, strong Wolfe) | "adam"
    steps: int = 200  # L-BFGS iterations or Adam steps
    lr: float = 1.0  # L-BFGS step size (1.0) / Adam learning rate (suggest 1e-2)
    weight_decay: float = 1e-3  # λ of λ‖θ − θ_old‖² (sum over weights and bias)
    correction_weight: float = 2.0  # weight of the corrections group against the context group
    max_corrected: int = 50_000  # at most this many corrected pixels (class-balanced subsample)
    context_per_class: int = 2_000  # existing-label pixels sampled per class (0: corrections only)
    max_windows: int = 64  # at most this many windows run through the network (windows with corrections first)
    freeze_absent: bool = True  # classes in neither group keep their head rows
    tile: int = 512  # window side for feature extraction
    seed: int = 0
    device: str | None = None

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS} (got {self.optimizer!r})")
        if self.steps < 1 or self.max_windows < 1 or self.tile < 32:
            raise ValueError("steps and max_windows must be >= 1 and tile >= 32")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.correction_weight > 0):
            raise ValueError("lr and correction_weight must be > 0 and weight_decay >= 0")
        if self.max_corrected < 1 or self.context_per_class < 0:
            raise ValueError("max_corrected must be >= 1 and context_per_class >= 0")


@dataclass
class RefitItem:
    """One image with its corrections (sparse, 255 = not corrected) and/or its existing full label (255 = ignore)."""

    image: np.ndarray
    corrected: np.ndarray | None = None
    labels: np.ndarray | None = None


@dataclass
class RefitResult:
    checkpoint: str
    counts: dict[str, Any]
    seconds: dict[str, float]
    fit: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- the head


def find_head(model: nn.Module, num_classes: int) -> nn.Conv2d:
    """The final classifier conv of a segmentation model (see the module docstring). Raises :class:`HeadNotFound`."""
    seg = getattr(model, "segmentation_head", None)
    if isinstance(seg, nn.Sequential) and len(seg) and isinstance(seg[0], nn.Conv2d) and seg[0].out_channels == num_classes:
        head = seg[0]
    else:
        cands = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == num_classes
                 and tuple(m.kernel_size) == (1, 1)]
        if not cands:
            raise HeadNotFound(f"{type(model).__name__}: no 1×1 Conv2d with {num_classes} output channels to refit")
        head = cands[-1]
    if head.groups != 1 or tuple(head.stride) != (1, 1) or tuple(head.dilation) != (1, 1):
        raise HeadNotFound(f"{type(model).__name__}: classifier conv has groups/stride/dilation "
                           f"{head.groups}/{head.stride}/{head.dilation}; only plain convs can be refitted")
    if head.padding_mode != "zeros" or isinstance(head.padding, str):
        raise HeadNotFound(f"{type(model).__name__}: classifier conv padding {head.padding!r}/{head.padding_mode} is not supported")
    if head.bias is None:
        raise HeadNotFound(f"{type(model).__name__}: classifier conv has no bias")
    return head


def _patches(feat: torch.Tensor, head: nn.Conv2d, n: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """The head's input patch (C·kh·kw, ordered like ``weight.reshape(K, -1)``) at feature positions (n, i, j)."""
    kh, kw = head.kernel_size
    if (kh, kw) == (1, 1):
        return feat[n, :, i, j]
    ph, pw = head.padding
    fp = F.pad(feat, (pw, pw, ph, ph))
    cols = [fp[n, :, i + dy, j + dx] for dy in range(kh) for dx in range(kw)]  # each S×C
    return torch.stack(cols, dim=2).reshape(len(n), -1)  # S×C×(kh·kw) → index c·kh·kw + dy·kw + dx


# ----------------------------------------------------------------------------------------------- sampling


def _starts(n: int, tile: int) -> list[int]:
    """Window starts along one axis: every ``tile`` px, the last one flush with the edge (so it may overlap)."""
    if n <= tile:
        return [0]
    return [*range(0, n - tile, tile), n - tile]


def _windows(h: int, w: int, tile: int) -> list[tuple[int, int, int, int]]:
    """``(row, col, height, width)`` of the windows the features are computed on; they cover the image and the
    last row/column of windows overlaps its neighbour when the size is not a multiple of ``tile``."""
    return [(r, c, min(tile, h - r), min(tile, w - c)) for r in _starts(h, tile) for c in _starts(w, tile)]


def _owned(h: int, w: int, tile: int) -> list[tuple[int, int, int, int]]:
    """For each window of :func:`_windows` (same order), the part of it whose pixels it samples, window-relative
    ``(row0, row1, col0, col1)`` (end-exclusive): from its start to the next window's start, the last one to the
    edge. The parts tile the image exactly once, so a pixel in the overlap of two windows is sampled (and counted)
    once, not twice (1280 rows at tile 512 gave windows at 0, 512 and 768: rows 768–1023 counted twice)."""
    def own(n: int) -> list[tuple[int, int]]:
        st = _starts(n, tile)
        return [(0, (st[i + 1] if i + 1 < len(st) else n) - s0) for i, s0 in enumerate(st)]

    return [(r0, r1, c0, c1) for r0, r1 in own(h) for c0, c1 in own(w)]


def _balanced_pick(labels: np.ndarray, cap_per_class: int | None, total_cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices into ``labels`` (1-D class array): up to ``cap_per_class`` per class, or a class-balanced
    subsample of at most ``total_cap`` overall (small classes kept whole, the rest share what is left)."""
    classes, counts = np.unique(labels, return_counts=True)
    if total_cap is not None:
        quota = dict(zip(classes.tolist(), [0] * len(classes)))
        left, todo = total_cap, sorted(zip(counts.tolist(), classes.tolist()))
        for k, (cnt, cls) in enumerate(todo):
            share = left // (len(todo) - k)
            quota[cls] = min(cnt, share)
            left -= quota[cls]
    else:
        quota = {int(c): min(int(n), int(cap_per_class)) for c, n in zip(classes, counts)}
    out = []
    for cls in classes.tolist():
        idx = np.flatnonzero(labels == cls)
        q = quota[cls]
        out.append(idx if q >= len(idx) else rng.choice(idx, q, replace=False))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


@dataclass
class _Pick:
    item: int
    win: tuple[int, int, int, int]
    rows: np.ndarray  # window-relative pixel rows
    cols: np.ndarray
    cls: np.ndarray
    group: np.ndarray  # 0 = corrected, 1 = context


def _plan(items: list[RefitItem], nc: int, cfg: RefitConfig, rng: np.random.Generator) -> tuple[list[_Pick], dict]:
    """Choose the windows to run and the pixels to sample in each."""
    # every labelled pixel, per window: (item, window, flat index in window, class, group)
    wins = []
    for k, it in enumerate(items):
        h, w = it.image.shape[:2]
        corr = it.corrected
        lab = it.labels
        for win, (or0, or1, oc0, oc1) in zip(_windows(h, w, cfg.tile), _owned(h, w, cfg.tile), strict=True):
            r0, c0, th, tw = win
            sl = np.s_[r0 : r0 + th, c0 : c0 + tw]
            mine = np.zeros((th, tw), bool)  # the pixels this window samples (none of another window's)
            mine[or0:or1, oc0:oc1] = True
            mine = mine.ravel()
            cm = corr[sl] if corr is not None else None
            cpos = np.flatnonzero((cm.ravel() != IGNORE) & mine) if cm is not None else np.zeros(0, np.int64)
            ccls = cm.ravel()[cpos] if cm is not None else np.zeros(0, np.uint8)
            xpos = np.zeros(0, np.int64)
            xcls = np.zeros(0, np.uint8)
            if lab is not None and cfg.context_per_class > 0:
                lm = lab[sl].ravel()
                ok = (lm != IGNORE) & mine
                if cm is not None:
                    ok &= cm.ravel() == IGNORE
                xpos = np.flatnonzero(ok)
                xcls = lm[xpos]
            if len(cpos) or len(xpos):
                wins.append({"item": k, "win": win, "cpos": cpos, "ccls": ccls, "xpos": xpos, "xcls": xcls,
                             "hist": np.bincount(xcls, minlength=nc)[:nc]})
    for wd in wins:
        for key in ("ccls", "xcls"):
            if len(wd[key]) and int(wd[key].max()) >= nc:
                raise ValueError(f"labels hold class index {int(wd[key].max())} >= num_classes {nc}")
    # window budget: windows with corrections first, then greedily the windows that add the least-covered class
    chosen = [wd for wd in wins if len(wd["cpos"])]
    if len(chosen) > cfg.max_windows:
        order = np.argsort([-len(wd["cpos"]) for wd in chosen], kind="stable")
        chosen = [chosen[i] for i in order[: cfg.max_windows]]
    rest = [wd for wd in wins if not len(wd["cpos"])]
    rng.shuffle(rest)
    cover = np.sum([wd["hist"] for wd in chosen], axis=0) if chosen else np.zeros(nc)
    while rest and len(chosen) < cfg.max_windows:
        need = np.maximum(cfg.context_per_class - cover, 0)
        gains = [float(np.minimum(wd["hist"], need).sum()) for wd in rest]
        best = int(np.argmax(gains))
        if gains[best] <= 0 and len(chosen) > 0:
            break
        wd = rest.pop(best)
        chosen.append(wd)
        cover = cover + wd["hist"]
    # pixel samples over the chosen windows: corrections capped at max_corrected, context per class
    wid = np.concatenate([np.full(len(wd["cpos"]), i) for i, wd in enumerate(chosen)] or [np.zeros(0, np.int64)]).astype(np.int64)
    ccls = np.concatenate([wd["ccls"] for wd in chosen] or [np.zeros(0, np.uint8)])
    csel = _balanced_pick(ccls, None, cfg.max_corrected, rng) if len(ccls) else np.zeros(0, np.int64)
    xwid = np.concatenate([np.full(len(wd["xpos"]), i) for i, wd in enumerate(chosen)] or [np.zeros(0, np.int64)]).astype(np.int64)
    xcls = np.concatenate([wd["xcls"] for wd in chosen] or [np.zeros(0, np.uint8)])
    xsel = _balanced_pick(xcls, cfg.context_per_class, None, rng) if len(xcls) and cfg.context_per_class else np.zeros(0, np.int64)
    cpos_all = np.concatenate([wd["cpos"] for wd in chosen] or [np.zeros(0, np.int64)])
    xpos_all = np.concatenate([wd["xpos"] for wd in chosen] or [np.zeros(0, np.int64)])
    picks = []
    for i, wd in enumerate(chosen):
        cs = csel[wid[csel] == i]
        xs = xsel[xwid[xsel] == i]
        pos = np.concatenate([cpos_all[cs], xpos_all[xs]])
        if not len(pos):
            continue
        tw = wd["win"][3]
        picks.append(_Pick(wd["item"], wd["win"], pos // tw, pos % tw, np.concatenate([ccls[cs], xcls[xs]]).astype(np.int64),
                           np.concatenate([np.zeros(len(cs), np.int8), np.ones(len(xs), np.int8)])))
    counts = {
        "corrected_available": len(ccls), "corrected_used": len(csel),
        "context_available": len(xcls), "context_used": len(xsel),
        "windows": len(picks), "windows_available": len(wins),
        "corrected_per_class": np.bincount(ccls[csel], minlength=nc)[:nc].tolist(),
        "context_per_class": np.bincount(xcls[xsel], minlength=nc)[:nc].tolist(),
    }
    return picks, counts


@torch.no_grad()
def extract_features(model: nn.Module, head: nn.Conv2d, items: list[RefitItem], picks: list[_Pick], norm: dict,
                     device: str, should_cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """Run the chosen windows; return the head-input patches (S×D, float32, CPU) of the picked pixels in order."""
    grabbed: dict[str, torch.Tensor] = {}

    def hook(mod, inp):
        grabbed["x"] = inp[0]

    mean = torch.tensor(norm.get("mean", (0.5,) * 3), dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(norm.get("std", (0.5,) * 3), dtype=torch.float32, device=device).view(1, 3, 1, 1)
    h_ = head.register_forward_pre_hook(hook)
    out = []
    try:
        for p in picks:
            if should_cancel is not None and should_cancel():
                raise InterruptedError("refit cancelled")
            r0, c0, th, tw = p.win
            img = items[p.item].image[r0 : r0 + th, c0 : c0 + tw]
            x = torch.from_numpy(np.ascontiguousarray(img[..., :3])).to(device).permute(2, 0, 1)[None].float().div_(255)
            x = pad32((x - mean) / std).contiguous(memory_format=torch.channels_last)
            grabbed.clear()
            model(x)
            if "x" not in grabbed:
                raise HeadNotFound(f"{type(model).__name__}: the classifier conv was not called in the forward pass")
            feat = grabbed.pop("x").float()
            H, W = x.shape[-2:]
            fh, fw = feat.shape[-2:]
            i = torch.from_numpy(p.rows * fh // H).to(feat.device)
            j = torch.from_numpy(p.cols * fw // W).to(feat.device)
            n = torch.zeros_like(i)
            out.append(_patches(feat, head, n, i, j).cpu())
    finally:
        h_.remove()
    return torch.cat(out) if out else torch.zeros(0, head.in_channels * head.kernel_size[0] * head.kernel_size[1])


# ----------------------------------------------------------------------------------------------- the fit


def fit_linear_head(X: torch.Tensor, y: torch.Tensor, sw: torch.Tensor, W0: torch.Tensor, b0: torch.Tensor, cfg: RefitConfig,
                    trainable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Minimise Σ sw·CE(XWᵀ + b, y) + λ(‖W − W0‖² + ‖b − b0‖²) (sw sums to 1). ``trainable``: bool per class
    (rows of the others stay at W0/b0). Returns (W, b, info)."""
    K = W0.shape[0]
    mask = torch.ones(K, dtype=torch.bool) if trainable is None else trainable.bool()
    dW = torch.zeros_like(W0, requires_grad=True)
    db = torch.zeros_like(b0, requires_grad=True)
    m = mask.to(W0.dtype)

    def objective() -> torch.Tensor:
        W = W0 + dW * m[:, None]
        b = b0 + db * m
        ce = F.cross_entropy(X @ W.T + b, y, reduction="none")
        return (ce * sw).sum() + cfg.weight_decay * ((dW * m[:, None]).pow(2).sum() + (db * m).pow(2).sum())

    with torch.no_grad():
        start = float(objective())
    if cfg.optimizer == "lbfgs":
        opt = torch.optim.LBFGS([dW, db], lr=cfg.lr, max_iter=cfg.steps, history_size=20, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure():
            opt.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
        iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    else:
        opt = torch.optim.Adam([dW, db], lr=cfg.lr)
        for _ in range(cfg.steps):
            opt.zero_grad()
            loss = objective()
            loss.backward()
            opt.step()
        iters = cfg.steps
    with torch.no_grad():
        end = float(objective())
        W = W0 + dW * m[:, None]
        b = b0 + db * m
    if not (math.isfinite(end) and torch.isfinite(W).all() and torch.isfinite(b).all()):
        raise RuntimeError(f"head refit diverged (objective {start:.4g} → {end:.4g}); the parent checkpoint is unchanged")
    return W.detach(), b.detach(), {"objective_start": start, "objective_end": end, "iterations": iters}


def _sample_weights(y: torch.Tensor, group: torch.Tensor, nc: int, correction_weight: float) -> torch.Tensor:
    """Class-balanced within each group; group totals correction_weight : 1 (renormalised to sum to 1)."""
    sw = torch.zeros(len(y), dtype=torch.float32)
    for g, gw in ((0, correction_weight), (1, 1.0)):
        sel = group == g
        if not sel.any():
            continue
        cnt = torch.bincount(y[sel], minlength=nc).float()
        present = int((cnt > 0).sum())
        sw[sel] = gw / present / cnt[y[sel]]
    return sw / sw.sum()


def _accuracy(X, y, W, b, sel) -> float | None:
    if not bool(sel.any()):
        return None
    return float(((X[sel] @ W.T + b).argmax(1) == y[sel]).float().mean())


# ----------------------------------------------------------------------------------------------- entry point


def _as_item(x) -> RefitItem:
    if isinstance(x, RefitItem):
        return x
    x = tuple(x)
    if len(x) == 2:
        return RefitItem(x[0], x[1], None)
    if len(x) == 3:
        return RefitItem(*x)
    raise ValueError("refit items are RefitItem or (image, corrected[, labels]) tuples")


def refit_head(
    checkpoint: str | Path,
    items: Sequence[RefitItem | tuple],
    out_path: str | Path,
    config: RefitConfig | None = None,
    *,
    parent_id: str | None = None,
    progress: Callable[[float, str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    meta_extra: dict | None = None,
) -> RefitResult:
    """Refit the final classifier of ``checkpoint`` on ``items`` and save the result to ``out_path``.

    ``items``: :class:`RefitItem` or ``(image, corrected)`` / ``(image, corrected, labels)`` tuples: uint8 RGB
    H×W×3, sparse corrections H×W (255 = not corrected; may be None) and the existing label H×W (255 = ignore;
    may be None), class indices of the checkpoint's scheme. Raises ValueError when there is nothing to fit on,
    :class:`HeadNotFound` when the model has no usable classifier conv.
    """
    cfg = config or RefitConfig()
    cfg.validate()
    t0 = time.perf_counter()
    items = [_as_item(x) for x in items]
    for k, it in enumerate(items):
        if it.image.ndim != 3 or it.image.shape[2] < 3:
            raise ValueError(f"item {k}: image must be H×W×3, got {it.image.shape}")
        for name in ("corrected", "labels"):
            a = getattr(it, name)
            if a is not None and a.shape != it.image.shape[:2]:
                raise ValueError(f"item {k}: {name} shape {a.shape} differs from the image's {it.image.shape[:2]}")
    from seghz.devices import check_device

    device = check_device(cfg.device, "RefitConfig.device") or "cpu"
    model, meta = load_checkpoint(checkpoint, device)
    model = model.to(memory_format=torch.channels_last)  # as the engine and trainer run it (faster on the CPU too)
    nc = int(meta["num_classes"])
    head = find_head(model, nc)
    for p in model.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(cfg.seed)
    picks, counts = _plan(items, nc, cfg, rng)
    if counts["corrected_used"] == 0:
        raise ValueError("no corrected pixel to refit on (every correction mask is empty / 255)")
    t_plan = time.perf_counter()
    if progress:
        progress(0.05, f"extracting features in {len(picks)} window(s)")
    norm = meta.get("normalization", {})
    X = extract_features(model, head, items, picks, norm, device, should_cancel)
    y = torch.from_numpy(np.concatenate([p.cls for p in picks]))
    group = torch.from_numpy(np.concatenate([p.group for p in picks]).astype(np.int64))
    t_feat = time.perf_counter()
    if progress:
        progress(0.6, f"fitting the {nc}-class head on {len(y)} pixels ({X.shape[1]} features)")

    K = head.out_channels
    W0 = head.weight.detach().reshape(K, -1).float().cpu().clone()
    b0 = head.bias.detach().float().cpu().clone()
    present = torch.bincount(y, minlength=nc)[:nc] > 0
    trainable = present if cfg.freeze_absent else None
    sw = _sample_weights(y, group, nc, cfg.correction_weight)
    before = {"corrected_acc": _accuracy(X, y, W0, b0, group == 0), "context_acc": _accuracy(X, y, W0, b0, group == 1)}
    W, b, info = fit_linear_head(X, y, sw, W0, b0, cfg, trainable)
    after = {"corrected_acc": _accuracy(X, y, W, b, group == 0), "context_acc": _accuracy(X, y, W, b, group == 1)}
    t_fit = time.perf_counter()
    with torch.no_grad():
        head.weight.copy_(W.reshape(head.weight.shape).to(head.weight))
        head.bias.copy_(b.to(head.bias))

    counts.update(features=int(X.shape[1]), classes_fitted=[int(c) for c in torch.nonzero(present).flatten().tolist()])
    fit = {**info, "before": before, "after": after}
    new_meta = {k: v for k, v in meta.items() if k not in ("created_at", "format", "job_id", "name")}
    new_meta.update(
        parent=str(checkpoint), parent_id=parent_id,
        recipe={"kind": RECIPE_KIND, **{k: v for k, v in counts.items()}, "config": asdict(cfg),
                "parent_recipe": meta.get("recipe")},
        metrics={"val": None, "refit": fit, "parent_metrics": meta.get("metrics")},
    )
    new_meta.update(meta_extra or {})
    save_checkpoint(out_path, model, new_meta)
    t_save = time.perf_counter()
    seconds = {"plan": t_plan - t0, "features": t_feat - t_plan, "fit": t_fit - t_feat, "save": t_save - t_fit, "total": t_save - t0}
    if progress:
        progress(1.0, f"head refitted in {seconds['total']:.1f} s: corrected-pixel accuracy "
                      f"{before['corrected_acc']:.3f} → {after['corrected_acc']:.3f}")
    return RefitResult(str(out_path), counts, seconds, fit)


__all__ = [
    "RECIPE_KIND",
    "HeadNotFound",
    "RefitConfig",
    "RefitItem",
    "RefitResult",
    "extract_features",
    "find_head",
    "fit_linear_head",
    "refit_head",
]
