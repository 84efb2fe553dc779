"""How many CPU threads a model runs with when nobody said (OMP_NUM_THREADS unset).

Every command that runs a model on the CPU uses this rule: training (train/loop.py, once per run)
and everything that loads a model through models.loading.load_model (eval, chat, serve, compare's
arms, safety probe and bias).

torch starts one OpenMP thread per core. On a machine where other processes keep the cores busy,
every parallel op then waits for a descheduled partner thread at its barrier; a step
made of many small ops (the per-document attention runs one small sdpa per document and layer)
spends most of its time waiting. So the count follows the cores that are actually free:

    threads = max(1, min(cores, round(cores - others)))

cores: those this process may run on (sched_getaffinity: containers and `taskset` limit it).
others: the mean number of OTHER runnable tasks, sampled from /proc/stat's procs_running ten
times over 0.2 s (minus this process, which is running while it reads). Not the load average:
it lags by a minute, so right after another job ends it still reports a busy box (measured on
this 2-core machine: load1 1.23 just after a test suite finished made the load rule pick 1
thread, and 1 thread ran 111 tok/s against 172 with 2). Where /proc/stat is missing the
1-minute load average stands in. Numbers: docs/training.md, "CPU threads".

Written by hand: neither torch nor the OS offers "free cores".
"""
from __future__ import annotations

import os
import time
from typing import Optional

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def pick_threads(cores: int, others: float) -> int:
    """The rule above: cores minus the other runnable tasks, rounded, at least one."""
    return max(1, min(cores, round(cores - max(0.0, others))))


def other_runnable(samples: int = 10, interval: float = 0.02, stat: str = "/proc/stat") -> Optional[float]:
    """Mean count of runnable tasks other than this one, or None where /proc/stat is unavailable."""
    counts = []
    try:
        for _ in range(samples):
            with open(stat, encoding="ascii") as f:
                counts += [int(line.split()[1]) for line in f if line.startswith("procs_running")]
            time.sleep(interval)
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, sum(counts) / len(counts) - 1) if counts else None


def choose_threads() -> Optional[int]:
    """Set torch's thread count from the free cores unless the user chose one; returns it (None if left alone)."""
    if any(os.environ.get(k) for k in THREAD_ENV):
        return None  # the user's choice wins
    others = other_runnable()
    if others is None:
        try:
            others = max(0.0, os.getloadavg()[0] - 1)  # this process counted as one
        except (AttributeError, OSError):
            return None  # nothing to go on: keep torch's default
    import torch

    n = pick_threads(usable_cores(), others)
    torch.set_num_threads(n)
    return n
