"""Training state for resuming: model, optimizer and scheduler state, RNG states and loop counters.

One file next to the output checkpoint, ``<out stem>.state.safetensors`` (see :func:`state_path`), written
atomically (temporary file in the same folder, fsync, ``os.replace``) at the end of every epoch. Nothing is
pickled:

* tensors (safetensors): ``model/<state-dict key>`` for the model's parameters and buffers (the weights of
  the *last* epoch, not the best one, which is the checkpoint), ``ema/<state-dict key>`` for the averaged weights
  when the run keeps an exponential moving average (:mod:`seghz.train.ema`), and ``optim/<param index>/<name>`` for each
  tensor in the optimizer's per-parameter state (AdamW: ``step``, ``exp_avg``, ``exp_avg_sq``);
* JSON in the safetensors header under ``"seghz_state"`` (format ``seghz-train-state/1``): the caller's loop
  info (epoch, step, best score, history, ...), ``optimizer`` = ``{"param_groups": [...], "state": {index:
  {name: "<tensor>" | JSON value}}}`` (the index of the tensors above), ``scheduler`` = the scheduler's
  ``state_dict()`` (must be JSON-able; OneCycleLR's is), and ``rng`` = :func:`rng_state` (Python and NumPy
  generator states as lists, torch / CUDA generator states as base64 bytes).
"""
from __future__ import annotations

import base64
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seghz.errors import SegHZError

FORMAT = "seghz-train-state/1"
META_KEY = "seghz_state"
_TENSOR = "<tensor>"


class TrainStateError(SegHZError, ValueError):
    """A training-state file is missing pieces, foreign or does not fit the run being resumed."""


@dataclass
class TrainState:
    """A loaded training state: ``info`` (the caller's JSON), ``model`` (state dict), ``optimizer`` (a state
    dict for ``Optimizer.load_state_dict``), ``scheduler`` (a state dict for ``LRScheduler.load_state_dict``)
    ``rng`` (for :func:`set_rng_state`) and ``ema`` (the averaged weights' state dict, or None)."""

    info: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: dict[str, Any] | None
    ema: dict[str, torch.Tensor] | None = None


def state_path(checkpoint_path: str | os.PathLike) -> Path:
    """``run.safetensors`` -> ``run.state.safetensors`` (same folder); other names get ``.state.safetensors`` appended."""
    p = Path(checkpoint_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".state.safetensors")


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.detach().cpu().contiguous().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def rng_state() -> dict[str, Any]:
    """The global Python, NumPy, torch (and CUDA, when initialised) generator states, JSON-able."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only when CUDA is there with as many devices)."""
    v, keys, gauss = state["python"]
    random.setstate((int(v), tuple(int(k) for k in keys), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(_unb64(state["torch"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([_unb64(s) for s in cuda])


def _jsonable(obj: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(obj, allow_nan=True))
    except TypeError as e:
        raise TrainStateError(f"{what} is not JSON-able ({e}); cannot store it without pickle") from None


def _cpu(t: torch.Tensor, seen: set[int]) -> torch.Tensor:
    t = t.detach().to("cpu").contiguous()
    ptr = t.untyped_storage().data_ptr() if t.numel() else None
    if ptr is not None and ptr in seen:  # tied / shared storage: safetensors refuses shared tensors
        t = t.clone()
    elif ptr is not None:
        seen.add(ptr)
    return t


def save_train_state(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any | None, info: dict[str, Any], rng: dict[str, Any] | None = None,
                     ema: dict[str, torch.Tensor] | None = None) -> Path:
    """Atomically write a training state to ``path`` (``ema``: the averaged weights' state dict, if any). On any
    error (a full disk: ``OSError`` ENOSPC) the temporary file is removed, the error propagates and the previous
    state file, if any, is untouched."""
    p = Path(path)
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {f"model/{k}": _cpu(v, seen) for k, v in model.state_dict().items()}
    tensors.update({f"ema/{k}": _cpu(v, seen) for k, v in (ema or {}).items()})
    osd = optimizer.state_dict()
    index: dict[str, dict[str, Any]] = {}
    for pid, pstate in osd["state"].items():
        entry: dict[str, Any] = {}
        for name, val in pstate.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim/{pid}/{name}"] = _cpu(val, seen)
                entry[name] = _TENSOR
            else:
                entry[name] = _jsonable(val, f"optimizer state {pid}/{name}")
        index[str(pid)] = entry
    meta = {
        "format": FORMAT,
        "info": _jsonable(info, "training-state info"),
        "optimizer": {"param_groups": _jsonable(osd["param_groups"], "optimizer param_groups"), "state": index},
        "scheduler": None if scheduler is None else _jsonable(scheduler.state_dict(), "scheduler state"),
        "rng": None if rng is None else _jsonable(rng, "RNG state"),
    }
    from seghz.models.checkpoint import write_safetensors

    return write_safetensors(p, tensors, {META_KEY: json.dumps(meta)})


def read_state_info(path: str | os.PathLike) -> dict[str, Any]:
    """Only the ``info`` block of a training-state file (no tensors are read)."""
    return _read_meta(Path(path))["info"]


def _read_meta(p: Path) -> dict[str, Any]:
    from seghz.models.checkpoint import read_safetensors_meta

    meta = read_safetensors_meta(p, META_KEY, TrainStateError, "training state")
    if meta.get("format") != FORMAT:
        raise TrainStateError(f"{p}: unsupported training-state format {meta.get('format')!r}")
    return meta


def load_train_state(path: str | os.PathLike) -> TrainState:
    """Read a file written by :func:`save_train_state` (tensors on the CPU)."""
    from safetensors.torch import load_file

    p = Path(path)
    meta = _read_meta(p)
    tensors = load_file(str(p), device="cpu")
    model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    ema = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")} or None
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in meta["optimizer"]["state"].items():
        st: dict[str, Any] = {}
        for name, val in entry.items():
            if val == _TENSOR:
                key = f"optim/{pid}/{name}"
                if key not in tensors:
                    raise TrainStateError(f"{p}: optimizer tensor {key} is missing")
                st[name] = tensors[key]
            else:
                st[name] = val
        state[int(pid)] = st
    groups = []
    for g in meta["optimizer"]["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return TrainState(info=meta["info"], model=model, optimizer={"state": state, "param_groups": groups},
                      scheduler=meta.get("scheduler"), rng=meta.get("rng"), ema=ema)


__all__ = ["FORMAT", "TrainState", "TrainStateError", "load_train_state", "read_state_info", "rng_state",
           "save_train_state", "set_rng_state", "state_path"]
