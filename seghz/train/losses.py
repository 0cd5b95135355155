"""Losses of the study's recipe (v1: weighted CE, optional Dice). ignore = 255 throughout."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from seghz.classes import IGNORE


def enet_class_weights(freqs: np.ndarray, c: float = 1.02) -> np.ndarray:
    """The study's class weights ``w = 1 / ln(c + f)`` for class pixel frequencies ``f``."""
    f = np.asarray(freqs, np.float64)
    return (1.0 / np.log(c + f)).astype(np.float32)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Multi-class soft Dice on softmax probabilities, ignore pixels excluded, averaged over classes present."""
    c = logits.shape[1]
    valid = (target != IGNORE).unsqueeze(1).float()
    prob = logits.float().softmax(1) * valid
    onehot = F.one_hot(target.clamp(max=c - 1).long(), c).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    dice = (2 * inter + eps) / (denom + eps)
    return (1 - dice[present]).mean() if present.any() else logits.sum() * 0


class SegLoss(torch.nn.Module):
    """CE (optionally class-weighted) + optional Dice."""

    def __init__(self, weights: np.ndarray | None = None, dice: bool = False):
        super().__init__()
        self.register_buffer("weight", None if weights is None else torch.as_tensor(weights, dtype=torch.float32))
        self.dice = dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits.float(), target.long(), weight=self.weight, ignore_index=IGNORE)
        if self.dice:
            loss = loss + dice_loss(logits, target)
        return loss
