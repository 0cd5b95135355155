"""Exponential moving average of the model's weights (a "mean teacher"), for evaluation and label refinement.

The trainer's optimiser updates the live model; :class:`WeightEMA` keeps a second copy whose floating-point
parameters and buffers follow it as ``ema ← d·ema + (1 − d)·live`` after every optimiser step (integer buffers,
such as BatchNorm's ``num_batches_tracked``, are copied). The averaged weights change slowly, so they do not carry the
last few batches' noise: they are validated, written to the checkpoint, and judge the labels when
``TrainConfig.refine`` is on (a steadier judge than the live model; SELF, Nguyen et al., ICLR 2020, filters noisy
labels with a mean teacher for that reason).

The decay comes from a horizon given as a fraction of the run's optimiser steps (``TrainConfig.ema``), so one
setting means the same at any budget: ``d = 1 − 1 / max(1, ema · total_steps)`` (``ema = 0.05`` over 4000 steps:
an average over the last ≈ 200 steps). Early in the run the decay is warmed up, ``d_t = min(d, (1 + t) / (10 + t))``
at update ``t`` (0-based), so the average is not dominated by the random initial weights.
"""
from __future__ import annotations

import copy

import torch


def ema_decay(horizon: float, total_steps: int) -> float:
    """The decay for an averaging horizon of ``horizon`` × ``total_steps`` steps (0 for a horizon under one step)."""
    if not horizon > 0:
        raise ValueError(f"the EMA horizon must be > 0 (a fraction of the run's steps), got {horizon!r}")
    return 1.0 - 1.0 / max(1.0, float(horizon) * int(total_steps))


def warm_decay(decay: float, updates: int) -> float:
    """``min(decay, (1 + t) / (10 + t))`` for update number ``t`` = ``updates`` (0-based)."""
    return min(float(decay), (1.0 + updates) / (10.0 + updates))


class WeightEMA:
    """An averaged copy of ``model`` (:attr:`module`, always in eval mode, no gradients).

    ``update(model)`` after each optimiser step; :meth:`state_dict` / :meth:`load_state_dict` carry the averaged
    tensors (the model's state-dict keys) and ``updates`` (the number of updates so far, for the warm-up)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._live: torch.nn.Module | None = None  # the model the cached tensor pairs below belong to
        self._float: tuple[list, list] = ([], [])
        self._other: list = []

    def _pairs(self, model: torch.nn.Module | None = None):
        mine = self.module.state_dict(keep_vars=True)
        if model is None:
            return mine
        theirs = model.state_dict(keep_vars=True)
        if mine.keys() != theirs.keys():
            raise ValueError("the model's state-dict keys differ from the averaged copy's")
        return mine, theirs

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> float:
        """Move the average towards ``model``'s current weights; returns the decay used. The pairing of the two
        models' tensors is built once per live model (the optimiser updates its tensors in place)."""
        d = warm_decay(self.decay, self.updates)
        if self._live is not model:
            mine, theirs = self._pairs(model)
            self._float = ([a.data for k, a in mine.items() if a.is_floating_point()],
                           [theirs[k].data for k, a in mine.items() if a.is_floating_point()])
            self._other = [(a, theirs[k]) for k, a in mine.items() if not a.is_floating_point()]
            self._live = model
        if self._float[0]:
            torch._foreach_lerp_(self._float[0], self._float[1], 1.0 - d)
        for a, b in self._other:
            a.copy_(b)
        self.updates += 1
        return d

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.module.load_state_dict(state)  # copies into the existing tensors: the cached pairs stay valid
        self.updates = int(updates)


__all__ = ["WeightEMA", "ema_decay", "warm_decay"]
