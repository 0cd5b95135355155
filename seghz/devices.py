"""What a torch device is, in words (for benchmark reports and logs), and host → device copies that do not stall it."""
from __future__ import annotations

import platform
from pathlib import Path


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
