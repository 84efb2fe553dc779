"""Memory a process used: one definition shared by training and evaluation cost reports."""
from __future__ import annotations

import resource
import sys


def _is_cuda(device) -> bool:
    return getattr(device, "type", str(device)) == "cuda"


def peak_memory_mib(device) -> float:
    """CUDA: max allocated by torch on this device. CPU: the process's peak resident set size."""
    if _is_cuda(device):
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def current_memory_mib(device) -> float:
    if _is_cuda(device):
        import torch

        return torch.cuda.memory_allocated(device) / 2**20
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # psutil missing or restricted /proc: memory is a nice-to-have
        return peak_memory_mib(device)
