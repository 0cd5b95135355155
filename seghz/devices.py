"""What a torch device is, in words (for benchmark reports and logs)."""
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
