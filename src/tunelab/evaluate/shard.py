"""Shard evaluation items over processes started by `accelerate launch` and gather them back.

    accelerate launch --num_processes 2 -m tunelab eval MODEL --task t.yaml --out runs/e

Each process takes items rank, rank + N, rank + 2N, ... of the same item list; every per-item
computation depends only on the item (demonstrations and sampling seeds are seeded per item,
greedy decoding and log-likelihoods are batch invariant), so after rank 0 gathers the items and
puts them back in order, results.json is the one a single process writes (apart from `cost`,
which measures this run). Only rank 0 writes files. Without a launcher this is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence


def _env_int(*names: str, default: int) -> int:
    for n in names:
        v = os.environ.get(n)
        if v is not None and v.strip().isdigit():
            return int(v)
    return default


@dataclass
class Shard:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence[Any]) -> list[int]:
        """Indices of the items this process evaluates."""
        return list(range(self.rank, len(items), self.world))

    def device(self) -> Optional[str]:
        """This process's accelerator (cuda:LOCAL_RANK), or None to let the loader choose."""
        try:
            import torch
        except ImportError:
            return None
        if self.world > 1 and torch.cuda.is_available():
            return f"cuda:{_env_int('LOCAL_RANK', default=0)}"
        return None

    def gather(self, local: list[Any]) -> Optional[list[Any]]:
        """Every process's list, concatenated in rank order, on rank 0 (None elsewhere)."""
        if self.world == 1:
            return local
        import torch.distributed as dist

        _ensure_group()
        parts: list[Any] = [None] * self.world if self.is_main else None  # type: ignore[assignment]
        dist.gather_object(local, parts, dst=0)
        if not self.is_main:
            return None
        return [x for part in parts for x in part]

    def sum(self, value: float) -> float:
        """A number summed over processes (token counts for the cost block)."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        _ensure_group()
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            _ensure_group()
            dist.barrier()


def _ensure_group() -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        # Accelerate reads the launcher's env (MASTER_ADDR, RANK, ...) and picks gloo on CPU, nccl on GPU.
        from accelerate import PartialState

        PartialState()


def current() -> Shard:
    """The shard of this process: RANK / WORLD_SIZE from the launcher, else (0, 1)."""
    world = _env_int("WORLD_SIZE", default=1)
    rank = _env_int("RANK", default=0)
    if world <= 1:
        return Shard(0, 1)
    return Shard(rank, world)
