"""How many CPU threads training uses when nobody said (OMP_NUM_THREADS unset).

torch starts one OpenMP thread per core. On a machine where other processes keep the cores busy,
every parallel op then waits for a descheduled partner thread at its barrier; a training step
made of many small ops (the per-document attention runs one small sdpa per document and layer)
spends most of its time waiting. Measured on a 2-core box with one other busy process (load ≈ 2):
tunelab at 2 threads ran 0.84x TRL, at 1 thread 2.6x (issue 11). So the count follows the cores
that are actually free: those this process may run on (sched_getaffinity: containers and
`taskset` limit it) minus the 1-minute load average of everyone else.

    threads = max(1, min(cores, round(cores - others)))
    others  = max(0, load1 - own)        own: this process's share of load1 (< 1, it just started)

Written by hand: neither torch nor the OS offers "free cores"; os.getloadavg is the portable signal.
"""
from __future__ import annotations

import os
from typing import Optional

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def pick_threads(cores: int, load1: float, own: float = 0.0) -> int:
    """The rule above: cores minus the load of other processes, rounded, at least one."""
    others = max(0.0, load1 - own)
    return max(1, min(cores, round(cores - others)))


def choose_threads(*, own: float = 0.5) -> Optional[int]:
    """Set torch's thread count from the free cores unless the user chose one; returns it (None if left alone).

    own=0.5: this process has usually been running a few seconds (imports, model load) when this is
    called, which the 1-minute load average counts as well under one.
    """
    if any(os.environ.get(k) for k in THREAD_ENV):
        return None  # the user's choice wins
    try:
        load1 = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None  # no load average on this OS: keep torch's default
    import torch

    n = pick_threads(usable_cores(), load1, own)
    torch.set_num_threads(n)
    return n
