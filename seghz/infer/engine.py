"""Sliding-window inference with D4 test-time augmentation (v1).

Windows overlap by a fraction and the last window in each direction is shifted back to sit flush
with the border (the study's ``predict_sliding``); images smaller than a window are padded by
reflection. Class probabilities (softmax) are averaged over TTA views and over overlapping windows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from seghz.errors import SegHZError

# Each D4 view: (name, forward, inverse) acting on N×C×H×W tensors.
D4_VIEWS: list[tuple[str, Callable, Callable]] = [
    ("identity", lambda x: x, lambda y: y),
    ("rot90", lambda x: torch.rot90(x, 1, (2, 3)), lambda y: torch.rot90(y, -1, (2, 3))),
    ("rot180", lambda x: torch.rot90(x, 2, (2, 3)), lambda y: torch.rot90(y, -2, (2, 3))),
    ("rot270", lambda x: torch.rot90(x, 3, (2, 3)), lambda y: torch.rot90(y, -3, (2, 3))),
    ("lr", lambda x: x.flip(3), lambda y: y.flip(3)),
    ("tb", lambda x: x.flip(2), lambda y: y.flip(2)),
    ("transpose", lambda x: x.transpose(2, 3), lambda y: y.transpose(2, 3)),
    ("antitranspose", lambda x: x.transpose(2, 3).flip((2, 3)), lambda y: y.flip((2, 3)).transpose(2, 3)),
]
TTA_MODES = {"none": ["identity"], "flip": ["identity", "lr"], "d4": [v[0] for v in D4_VIEWS]}


class Cancelled(SegHZError):
    """Inference was cancelled through the ``should_cancel`` callback."""


def tta_views(tta: str | Iterable[str]) -> list[tuple[str, Callable, Callable]]:
    if isinstance(tta, str) and tta not in TTA_MODES:
        raise ValueError(f"unknown TTA mode '{tta}'; use one of {list(TTA_MODES)}")
    names = TTA_MODES[tta] if isinstance(tta, str) else list(tta)
    table = {v[0]: v for v in D4_VIEWS}
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown TTA view(s) {unknown}; known: {list(table)}")
    return [table[n] for n in names]


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    n = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(n)})


def sliding_windows(height: int, width: int, tile: int, overlap: float = 0.25) -> list[tuple[int, int, int, int]]:
    """Windows (row, col, h, w) covering an image; the last window in each axis is flush with the border."""
    if not 0 <= overlap < 1:
        raise ValueError("overlap must be in [0, 1)")
    if height <= 0 or width <= 0:
        raise ValueError(f"image has zero pixels ({height}x{width})")
    stride = max(1, math.ceil(tile * (1 - overlap)))
    th, tw = min(tile, height), min(tile, width)
    return [(r, c, th, tw) for r in _starts(height, tile, stride) for c in _starts(width, tile, stride)]


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

    @classmethod
    def from_checkpoint(cls, path, device: str | None = None, **kw) -> tuple["Predictor", dict]:
        from seghz.models.checkpoint import load_checkpoint

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, meta = load_checkpoint(path, dev)
        norm = meta.get("normalization", {})
        kw.setdefault("tile", int(meta.get("tile_size", 512)))
        return cls(model, int(meta["num_classes"]), tuple(norm.get("mean", (0.5,) * 3)), tuple(norm.get("std", (0.5,) * 3)), device=dev, **kw), meta

    def __post_init__(self):
        if self.device is None:
            self.device = next(self.model.parameters()).device.type
        self.model.eval()

    def _to_tensor(self, img: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        m = torch.tensor(self.mean).view(3, 1, 1)
        s = torch.tensor(self.std).view(3, 1, 1)
        return (x - m) / s

    @torch.no_grad()
    def _forward(self, x: torch.Tensor, views) -> torch.Tensor:
        """Mean softmax over views for a batch N×3×h×w (padded to a multiple of 32 inside)."""
        n, _, h, w = x.shape
        ph, pw = (-h) % 32, (-w) % 32
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        acc = None
        for _, fwd, inv in views:
            y = inv(self.model(fwd(x)).float().softmax(1))
            acc = y if acc is None else acc + y
        return (acc / len(views))[:, :, :h, :w]

    def predict_proba(
        self,
        image: np.ndarray,
        tta: str | Iterable[str] = "none",
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Class probabilities C×H×W (float32) for an RGB uint8 image H×W×3."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be H×W×3, got {image.shape}")
        h, w = image.shape[:2]
        views = tta_views(tta)
        wins = sliding_windows(h, w, self.tile, self.overlap)
        out = np.zeros((self.num_classes, h, w), np.float32)
        cnt = np.zeros((h, w), np.float32)
        xt = self._to_tensor(image)
        for b0 in range(0, len(wins), self.batch_size):
            if should_cancel is not None and should_cancel():
                raise Cancelled("inference cancelled")
            batch = wins[b0 : b0 + self.batch_size]
            x = torch.stack([xt[:, r : r + th, c : c + tw] for r, c, th, tw in batch]).to(self.device)
            p = self._forward(x, views).cpu().numpy()
            for (r, c, th, tw), pi in zip(batch, p):
                out[:, r : r + th, c : c + tw] += pi
                cnt[r : r + th, c : c + tw] += 1
            if progress is not None:
                progress(min(1.0, (b0 + len(batch)) / len(wins)), f"window {b0 + len(batch)}/{len(wins)}")
        return out / cnt[None]

    def predict(self, image: np.ndarray, tta="none", progress=None, should_cancel=None) -> tuple[np.ndarray, np.ndarray]:
        """(class-index mask uint8, confidence float32 = max probability)."""
        p = self.predict_proba(image, tta, progress, should_cancel)
        return p.argmax(0).astype(np.uint8), p.max(0)
