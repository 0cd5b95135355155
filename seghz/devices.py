"""What a torch device is, in words (for benchmark reports and logs), whether this machine has the device a setting
asks for (:func:`check_device`), a torchrun worker's device (:func:`rank_device`), free CUDA memory, and host → device
copies that do not stall it."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from seghz.errors import SegHZError


class DeviceError(SegHZError, ValueError):
    """A device this machine lacks or that SegHZ does not run on. ``where`` names what asked for it (a config field,
    a job's setting, a command-line flag); ``problem`` says what is wrong."""

    def __init__(self, where: str, device: str, problem: str):
        self.where, self.device, self.problem = where, device, problem
        super().__init__(f"{where} {device}: {problem}")


def default_device() -> str:
    """``cuda`` (the current GPU) when torch sees one, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device, where: str) -> str | None:
    """``device`` as a string when this machine has it (None or "" stay None: nothing asked for, the caller's default
    applies); else a :class:`DeviceError` that names ``where`` (what asked for it: ``"--device"``,
    ``"TrainConfig.device"``, ...) and the problem: a string that is no device SegHZ runs on (``cpu``, ``cuda``,
    ``cuda:N``), no CUDA GPU visible to torch, or a GPU index beyond ``torch.cuda.device_count()``. (Unchecked, each
    surfaces later as one of torch's raw errors: "Found no NVIDIA driver", a list of device types, "invalid device
    ordinal".)"""
    if device is None or (isinstance(device, str) and not device.strip()):
        return None
    import torch

    name = str(device).strip()
    try:
        d = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        d = None
    if d is None or d.type not in ("cpu", "cuda"):
        raise DeviceError(where, name, "unknown device; use cpu, cuda (the first visible GPU) or cuda:N (GPU N)")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(where, name, "torch sees no CUDA GPU here (python -m seghz info says what it sees); "
                                           "use cpu")
        n = torch.cuda.device_count()
        if d.index is not None and d.index >= n:
            raise DeviceError(where, name, f"there is no GPU {d.index}: torch sees {n} GPU(s) here "
                                           f"({', '.join(f'cuda:{i}' for i in range(n))}; CUDA_VISIBLE_DEVICES limits "
                                           "them)")
    return name


def rank_device(device, where: str, local_rank: int | None = None) -> str:
    """A torchrun worker's device, made torch's current CUDA device: ``device`` (None: cuda when there is a GPU, else
    cpu) checked by :func:`check_device`; a CUDA device that names no GPU (``cuda``) becomes ``cuda:<LOCAL_RANK>``
    (one GPU per worker on the node; otherwise every worker would run on GPU 0). An explicit ``cuda:N`` is kept."""
    import torch

    local = int(os.environ.get("LOCAL_RANK", "0") or 0) if local_rank is None else int(local_rank)
    name = check_device(device, where) or default_device()
    dev, d = name, torch.device(name)
    if d.type == "cuda":
        if d.index is None:
            dev = check_device(f"cuda:{local}", f"{where} {name} (torchrun worker LOCAL_RANK={local}) ->")
        torch.cuda.set_device(torch.device(dev))
    return dev


def cuda_free_bytes(device) -> int:
    """Bytes a CUDA device can still give this process: the driver's free memory plus what torch's caching allocator
    holds reserved but unallocated (``mem_get_info`` counts those cached blocks as used, though torch reuses them)."""
    import torch

    dev = torch.device(device)
    free, _ = torch.cuda.mem_get_info(dev)
    cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    return int(free) + max(0, int(cached))


def device_description(device: str) -> str:
    """The GPU's name for a CUDA device; the CPU model from /proc/cpuinfo (or platform) otherwise."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def readonly_tensor(a, dtype=None):
    """``torch.as_tensor(a, dtype)`` for an input that is only read: a read-only numpy array (a memory map, an
    image from a cache) is wrapped without torch's "not writable" warning."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(a, dtype=dtype)


def to_device(a, device, dtype=None):
    """A host array (numpy, list or CPU tensor) on ``device`` without stalling it: on CUDA through page-locked
    memory and a non-blocking copy. (``torch.as_tensor(a, device="cuda")`` copies from pageable memory and then
    waits for the device to finish all the work queued so far; once per training step or inference window, that
    keeps the host from ever running ahead of the device.)"""
    import numpy as np
    import torch

    if isinstance(a, np.ndarray) and any(s < 0 for s in a.strides):
        a = a.copy(order="C")  # torch has no negative strides (ascontiguousarray keeps a size-1 axis's one)
    t = readonly_tensor(a, dtype)
    if torch.device(device).type != "cuda":
        return t.to(device)
    staged = torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t)  # one host copy, whatever t's strides
    return staged.to(device, non_blocking=True)  # the caching host allocator keeps ``staged`` until the copy ran
