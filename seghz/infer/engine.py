"""Sliding-window inference with D4 test-time augmentation, blending and uncertainty (v2).

Windows overlap by a fraction and the last window in each direction is shifted back to sit flush
with the border (the study's ``predict_sliding``); windows smaller than a tile (images smaller than a
tile) are padded by reflection (replication when too small to reflect) to a multiple of 32.

Every step sends views × windows through the model as one batch (``batch_size`` counts model inputs).
Each view's output is mapped back by its exact inverse; views are merged by the mean of softmax
(``merge="softmax"``) or the mean of logits followed by a softmax (``merge="logits"``); overlapping
windows are blended with per-pixel weights (``blend="uniform" | "gaussian" | "cosine"``).
:meth:`Predictor.predict_full` also returns the predictive entropy, the disagreement between views
and, on request, where overlapping windows disagree (seams).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from seghz.errors import SegHZError


def _rot(k: int) -> Callable:
    return lambda x: torch.rot90(x, k, (2, 3))


def _antitranspose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(2, 3).flip((2, 3))


# Every view by the study's name: name -> (forward, inverse), acting on N×C×H×W tensors.
VIEWS: dict[str, tuple[Callable, Callable]] = {
    "identity": (lambda x: x, lambda y: y),
    "lr": (lambda x: x.flip(3), lambda y: y.flip(3)),  # flip W
    "tb": (lambda x: x.flip(2), lambda y: y.flip(2)),  # flip H
    "lrtb": (lambda x: x.flip((2, 3)), lambda y: y.flip((2, 3))),  # flip both (== rot180)
    "diag": (lambda x: x.transpose(2, 3), lambda y: y.transpose(2, 3)),  # transpose
    "diag2": (_antitranspose, _antitranspose),  # anti-transpose (an involution)
    "rot90": (_rot(1), _rot(-1)),
    "rot180": (_rot(2), _rot(-2)),
    "rot270": (_rot(3), _rot(-3)),
}
VIEW_NAMES: list[str] = list(VIEWS)
# Older names still accepted.
_ALIASES = {"transpose": "diag", "antitranspose": "diag2", "flip_lr": "lr", "flip_tb": "tb"}
_D4 = ["identity", "lr", "tb", "diag", "diag2", "rot90", "rot180", "rot270"]
TTA_MODES: dict[str, list[str]] = {"none": ["identity"], "flip": ["identity", "lr"], "d4": list(_D4)}
# Backward compatible: the 8 distinct D4 views as (name, forward, inverse).
D4_VIEWS: list[tuple[str, Callable, Callable]] = [(n, *VIEWS[n]) for n in _D4]
MERGES = ("softmax", "logits")
BLENDS = ("uniform", "gaussian", "cosine")


class Cancelled(SegHZError):
    """Inference was cancelled through the ``should_cancel`` callback."""


def tta_views(tta: str | Iterable[str]) -> list[tuple[str, Callable, Callable]]:
    """Views ``(name, forward, inverse)`` for a TTA mode (``none``/``flip``/``d4``) or a list of view names."""
    if isinstance(tta, str):
        if tta in TTA_MODES:
            names = TTA_MODES[tta]
        elif tta in VIEWS or tta in _ALIASES:
            names = [tta]
        else:
            raise ValueError(f"unknown TTA mode '{tta}'; use one of {list(TTA_MODES)} or a list of view names {VIEW_NAMES}")
    else:
        names = list(tta)
    unknown = [n for n in names if n not in VIEWS and n not in _ALIASES]
    if unknown:
        raise ValueError(f"unknown TTA view(s) {unknown}; valid views: {VIEW_NAMES}")
    if not names:
        raise ValueError(f"no TTA views selected; valid views: {VIEW_NAMES}")
    out = []
    for n in names:
        name = _ALIASES.get(n, n)
        out.append((name, *VIEWS[name]))
    return out


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    n = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(n)})


def _check_tiling(tile, overlap) -> None:
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile <= 0:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    if not isinstance(overlap, (int, float, np.floating)) or not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")


def sliding_windows(height: int, width: int, tile: int, overlap: float = 0.25) -> list[tuple[int, int, int, int]]:
    """Windows (row, col, h, w) covering an image; the last window in each axis is flush with the border."""
    _check_tiling(tile, overlap)
    if height <= 0 or width <= 0:
        raise ValueError(f"image has zero pixels ({height}x{width})")
    stride = max(1, math.ceil(tile * (1 - overlap)))
    th, tw = min(tile, height), min(tile, width)
    return [(r, c, th, tw) for r in _starts(height, tile, stride) for c in _starts(width, tile, stride)]


def _profile(n: int, blend: str) -> np.ndarray:
    """1-D window weights of length ``n``: centre-weighted, strictly positive (borders included)."""
    if blend == "uniform" or n <= 2:
        return np.ones(n, np.float64)
    t = (np.arange(n) + 0.5) / n  # pixel centres in (0, 1)
    if blend == "gaussian":
        sigma = 0.25  # of the window length: borders get exp(-2) ≈ 0.135 of the centre
        w = np.exp(-0.5 * ((t - 0.5) / sigma) ** 2)
    elif blend == "cosine":
        w = np.sin(np.pi * t) ** 2  # Hann window evaluated at pixel centres
    else:
        raise ValueError(f"unknown blend '{blend}'; use one of {list(BLENDS)}")
    return np.maximum(w, 1e-3)


def window_weights(h: int, w: int, blend: str = "uniform") -> np.ndarray:
    """Per-pixel weights (h×w float32, > 0 everywhere) of one window for blending overlapping windows."""
    if blend not in BLENDS:
        raise ValueError(f"unknown blend '{blend}'; use one of {list(BLENDS)}")
    return np.outer(_profile(h, blend), _profile(w, blend)).astype(np.float32)


@dataclass
class PredictionResult:
    """Output of :meth:`Predictor.predict_full` (all arrays H×W unless noted)."""

    mask: np.ndarray  # uint8 class index; 255 where not valid
    confidence: np.ndarray  # float32 max probability; 0 where not valid
    entropy: np.ndarray  # float32 predictive entropy (nats) of the merged distribution; NaN where not valid
    disagreement: np.ndarray  # float32 fraction of views whose argmax differs from the consensus; NaN where not valid
    seam: np.ndarray | None = None  # float32 fraction of covering windows disagreeing with the blended argmax
    proba: np.ndarray | None = None  # float32 C×H×W, only when asked (return_proba=True)


@dataclass
class Predictor:
    """Runs a model over images of any size. ``mean``/``std`` are the normalisation in [0, 1] units."""

    model: torch.nn.Module
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tile: int = 512
    overlap: float = 0.25
    batch_size: int = 4
    device: str | None = None
    merge: str = "softmax"
    blend: str = "uniform"

    @classmethod
    def from_checkpoint(cls, path, device: str | None = None, **kw) -> tuple[Predictor, dict]:
        from seghz.models.checkpoint import load_checkpoint

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, meta = load_checkpoint(path, dev)
        norm = meta.get("normalization", {})
        kw.setdefault("tile", int(meta.get("tile_size", 512)))
        return cls(model, int(meta["num_classes"]), tuple(norm.get("mean", (0.5,) * 3)), tuple(norm.get("std", (0.5,) * 3)), device=dev, **kw), meta

    def __post_init__(self):
        self._check_settings(self.merge, self.blend)
        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = str(self.device)
        self.model.to(self.device)
        if self._cuda:
            self.model.to(memory_format=torch.channels_last)
        self.model.eval()

    @property
    def _cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"

    def _check_settings(self, merge: str, blend: str) -> None:
        _check_tiling(self.tile, self.overlap)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if merge not in MERGES:
            raise ValueError(f"unknown merge '{merge}'; use one of {list(MERGES)}")
        if blend not in BLENDS:
            raise ValueError(f"unknown blend '{blend}'; use one of {list(BLENDS)}")

    def _to_tensor(self, img: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        m = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        s = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (x - m) / s

    # ------------------------------------------------------------------ model calls

    @staticmethod
    def _pad32(x: torch.Tensor) -> torch.Tensor:
        """Pad a 1×3×h×w window at the bottom/right to a multiple of 32 (reflect, else replicate)."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return x

    def _run_model(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self._cuda:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = self.model(x)
        else:
            y = self.model(x)
        return y.float()

    def _run_items(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Logits for a list of 1×3×h×w inputs, stacked into one batch per input shape."""
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(inputs):
            groups.setdefault(tuple(t.shape), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(inputs)
        for idx in groups.values():
            y = self._run_model(torch.cat([inputs[i] for i in idx]))
            for j, i in enumerate(idx):
                out[i] = y[j : j + 1]
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ core

    @torch.no_grad()
    def _infer(self, image, tta, progress, should_cancel, valid_mask, *, merge, blend, uncertainty, seams):
        self._check_settings(merge, blend)
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be an H×W×3 array, got shape {getattr(image, 'shape', type(image).__name__)}")
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            raise ValueError(f"image has zero pixels ({h}x{w})")
        views = tta_views(tta)
        nv = len(views)
        valid = None
        if valid_mask is not None:
            valid = np.asarray(valid_mask)
            if valid.shape != (h, w):
                raise ValueError(f"valid_mask must have the image's shape {(h, w)}, got {valid.shape}")
            valid = valid.astype(bool)
            if not valid.any():
                raise ValueError("the region has no valid pixels (valid_mask is all False)")
        wins = sliding_windows(h, w, self.tile, self.overlap)
        if valid is not None:
            wins = [(r, c, th, tw) for r, c, th, tw in wins if valid[r : r + th, c : c + tw].any()]

        C = self.num_classes
        acc = np.zeros((C, h, w), np.float32)
        wsum = np.zeros((h, w), np.float32)
        dis = np.zeros((h, w), np.float32) if uncertainty else None
        votes = np.zeros((C, h, w), np.float32) if seams else None
        ncov = np.zeros((h, w), np.float32) if seams else None
        weight_cache: dict[tuple[int, int], np.ndarray] = {}
        xt = self._to_tensor(image)

        items = [(wi, vi) for wi in range(len(wins)) for vi in range(nv)]
        total = len(items)
        pending: dict[int, list] = {}

        def finish(wi: int) -> None:
            r, c, th, tw = wins[wi]
            outs = torch.cat(pending.pop(wi))  # nv×C×th×tw logits, original orientation
            if merge == "logits":
                p = outs.mean(0).softmax(0)
            else:
                p = outs.softmax(1).mean(0)
            if (th, tw) not in weight_cache:
                weight_cache[(th, tw)] = window_weights(th, tw, blend)
            wt = weight_cache[(th, tw)]
            pn = p.cpu().numpy()
            acc[:, r : r + th, c : c + tw] += pn * wt
            wsum[r : r + th, c : c + tw] += wt
            if dis is not None and nv > 1:
                cons = p.argmax(0)
                d = (outs.argmax(1) != cons).float().mean(0).cpu().numpy()
                dis[r : r + th, c : c + tw] += d * wt
            if votes is not None:
                a = pn.argmax(0)
                votes[:, r : r + th, c : c + tw] += a[None] == np.arange(C)[:, None, None]
                ncov[r : r + th, c : c + tw] += 1

        bs = int(self.batch_size)
        i = 0
        while i < total:
            if should_cancel is not None and should_cancel():
                raise Cancelled("inference cancelled")
            batch = items[i : i + bs]
            crops: dict[int, torch.Tensor] = {}
            inputs = []
            for wi, vi in batch:
                if wi not in crops:
                    r, c, th, tw = wins[wi]
                    crops[wi] = self._pad32(xt[None, :, r : r + th, c : c + tw])
                inputs.append(views[vi][1](crops[wi]))
            try:
                logits = self._run_items(inputs)
            except torch.cuda.OutOfMemoryError as e:
                if self._cuda:
                    torch.cuda.empty_cache()
                if bs == 1:
                    raise SegHZError(
                        "out of GPU memory even with a batch of 1; use a smaller tile or run on the CPU (--device cpu)"
                    ) from e
                bs = max(1, bs // 2)
                continue
            for (wi, vi), y in zip(batch, logits):
                r, c, th, tw = wins[wi]
                if y.shape[1] != C:
                    raise SegHZError(f"model returned {y.shape[1]} classes, expected {C}")
                y = views[vi][2](y)[:, :, :th, :tw]
                pending.setdefault(wi, []).append(y)
                if len(pending[wi]) == nv:
                    finish(wi)
            i += len(batch)
            if progress is not None:
                progress(1.0 if i >= total else i / total, f"window {min(len(wins), -(-i // nv))}/{len(wins)}")

        covered = wsum > 0
        safe = np.where(covered, wsum, 1.0)
        proba = acc / safe[None]
        if dis is not None:
            dis /= safe
        if seams:
            top = proba.argmax(0)
            agree = np.take_along_axis(votes, top[None], 0)[0]
            seam = 1.0 - agree / np.where(ncov > 0, ncov, 1.0)
        else:
            seam = None
        return proba, covered, dis, seam, valid

    # ------------------------------------------------------------------ public API

    def predict_proba(
        self,
        image: np.ndarray,
        tta: str | Iterable[str] = "none",
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        *,
        merge: str | None = None,
        blend: str | None = None,
    ) -> np.ndarray:
        """Class probabilities C×H×W (float32) for an RGB uint8 image H×W×3."""
        proba, *_ = self._infer(image, tta, progress, should_cancel, None, merge=merge or self.merge,
                                blend=blend or self.blend, uncertainty=False, seams=False)
        return proba

    def predict(self, image: np.ndarray, tta="none", progress=None, should_cancel=None, **kw) -> tuple[np.ndarray, np.ndarray]:
        """(class-index mask uint8, confidence float32 = max probability)."""
        p = self.predict_proba(image, tta, progress, should_cancel, **kw)
        return p.argmax(0).astype(np.uint8), p.max(0)

    def predict_full(
        self,
        image: np.ndarray,
        tta: str | Iterable[str] = "none",
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        valid_mask: np.ndarray | None = None,
        seams: bool = False,
        *,
        return_proba: bool = False,
        merge: str | None = None,
        blend: str | None = None,
    ) -> PredictionResult:
        """Mask, confidence, entropy, view disagreement and (``seams=True``) window disagreement.

        ``valid_mask`` (H×W bool, False = nodata): those pixels get mask 255, confidence 0 and NaN
        uncertainty; windows with no valid pixel are not run through the model.
        """
        proba, covered, dis, seam, valid = self._infer(
            image, tta, progress, should_cancel, valid_mask, merge=merge or self.merge, blend=blend or self.blend,
            uncertainty=True, seams=seams,
        )
        ok = covered if valid is None else (covered & valid)
        mask = proba.argmax(0).astype(np.uint8)
        conf = proba.max(0).astype(np.float32)
        ent = -(proba * np.log(np.clip(proba, 1e-12, None))).sum(0).astype(np.float32)
        ent = np.maximum(ent, 0.0)
        dis = dis.astype(np.float32)
        mask[~ok] = 255
        conf[~ok] = 0.0
        ent[~ok] = np.nan
        dis[~ok] = np.nan
        if seam is not None:
            seam = seam.astype(np.float32)
            seam[~ok] = np.nan
        if return_proba:
            proba[:, ~ok] = 0.0
        return PredictionResult(mask, conf, ent, dis, seam, proba if return_proba else None)


__all__ = [
    "BLENDS",
    "D4_VIEWS",
    "MERGES",
    "TTA_MODES",
    "VIEWS",
    "VIEW_NAMES",
    "Cancelled",
    "PredictionResult",
    "Predictor",
    "sliding_windows",
    "tta_views",
    "window_weights",
]
