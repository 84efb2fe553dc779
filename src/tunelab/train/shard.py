"""Sharded training (FSDP2 through Accelerate): building the Accelerator, whole-model state in and out.

What the launcher asks for arrives as Accelerate's environment variables (`accelerate launch
--config_file fsdp.yaml` sets ACCELERATE_USE_FSDP and FSDP_*). On a CUDA machine Accelerate builds
the FSDP plugin itself. On a CPU-only machine Accelerate 1.16 turns every multi-process launch into
MULTI_CPU (DDP over gloo) and ignores FSDP, although torch's `fully_shard` runs on CPU over gloo;
`accelerator()` then hands Accelerate the plugin it reads from the same variables and marks the
state FSDP, so the same config file and the same code path (Accelerate's fsdp2_prepare_model,
clip_grad_norm_, no_sync) run in CI on CPU as on GPUs. Only FSDP2 (`fsdp_version: 2`) is
supported on CPU; DeepSpeed is refused (docs/scale.md says why).

Checkpoints of a sharded run are written whole (`full_states`): the same files as a one-process
run (adapter/ or model/, optimizer.pt keyed by parameter index), gathered to the main process's
CPU memory. That is what lets a run saved by N processes resume with M, sharded or not; the
price is that the main process must hold the trainable weights and their AdamW state in CPU
memory while saving (fine for adapters at any size and for full fine-tuning up to ~7B on a large
host; docs/scale.md).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from tunelab.errors import TunelabError


def _env_true(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def accelerator(*, cpu: bool, **kwargs):
    """An Accelerator for this launch; FSDP on CPU when the launcher asked for it (see module doc)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if _env_true("ACCELERATE_USE_DEEPSPEED"):
        # DeepSpeed's engine steps and partitions on its own; tunelab's accumulation and whole-model
        # checkpoints have not been fitted to it (docs/scale.md), and a wrong checkpoint is worse than none
        raise TunelabError("distributed_type: DEEPSPEED in the accelerate config is not supported by tunelab train; "
                           "use FSDP (examples/accelerate/fsdp_gpu.yaml shards like ZeRO-3; docs/scale.md)")
    if not (cpu and world > 1 and _env_true("ACCELERATE_USE_FSDP")):
        return Accelerator(cpu=cpu, **kwargs)
    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables the launcher set
    if plugin.fsdp_version != 2:
        raise TunelabError(f"fsdp_version: {plugin.fsdp_version} in the accelerate config: tunelab runs FSDP on CPU "
                           "with fsdp_version: 2 only; set fsdp_version: 2")
    acc = Accelerator(cpu=True, fsdp_plugin=plugin, **kwargs)
    # Accelerate made this MULTI_CPU (its FSDP switch only looks at GPU-like types); FSDP2 itself
    # shards over gloo on CPU, so the state is set to what the launcher asked for
    acc.state.distributed_type = DistributedType.FSDP
    acc.state.fsdp_plugin = plugin
    return acc


def is_sharded(acc) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.FSDP


def _strip(model, sd: dict, prefix: str = "model.") -> dict:
    """Keys of the prepared PackedCausalLM → keys of the PEFT / transformers model inside it.

    A tied parameter (lm_head = embeddings) comes back under both names; the second name is
    dropped, as an unsharded save_pretrained does.
    """
    tied = ({n for n, _ in model.named_parameters(remove_duplicate=False)}
            - {n for n, _ in model.named_parameters()})
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and k not in tied}


def full_states(model, optimizer) -> tuple[Optional[dict], Optional[dict]]:
    """(model state dict, optimizer state dict) whole, on the main process's CPU; (None, None) elsewhere.

    Every process must call this (the shards are gathered collectively). The optimizer state comes
    back keyed by parameter index in param-group order, as `optimizer.state_dict()` of an unsharded
    run writes it, so either kind of run can load the other's checkpoint.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(model, options=opts)
    osd = get_optimizer_state_dict(model, getattr(optimizer, "optimizer", optimizer), options=opts)
    if dist.get_rank() != 0:
        return None, None
    names = [n for g in osd["param_groups"] for n in g["params"]]
    index = {n: i for i, n in enumerate(names)}
    osd = {"state": {index[n]: s for n, s in osd["state"].items()},
           "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in osd["param_groups"]]}
    return _strip(model, msd), osd


def full_model_state(model) -> Optional[dict]:
    """The whole model state dict on the main process's CPU (None elsewhere); every process calls it."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    msd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return _strip(model, msd) if dist.get_rank() == 0 else None


def load_optimizer(model, optimizer, osd: dict) -> None:
    """Load an index-keyed, whole optimizer state (any run's optimizer.pt) into a sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    optimizer = getattr(optimizer, "optimizer", optimizer)  # inside Accelerate's wrapper
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    if len(order) != sum(len(g["params"]) for g in osd["param_groups"]):
        raise TunelabError("optimizer.pt holds a different number of parameters than this run trains; "
                           "resume with the config the run was started with")
    fqn = {"state": {order[i]: s for i, s in osd["state"].items()},
           "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in osd["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, fqn, options=StateDictOptions(full_state_dict=True))


def grad_norm(params: list[torch.Tensor]) -> float:
    """L2 norm of all gradients, sharded (DTensor) or not."""
    total = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    full = getattr(total, "full_tensor", None)  # a DTensor norm: reduce it over the shards
    return float(full() if callable(full) else total)


__all__ = ["accelerator", "is_sharded", "full_states", "full_model_state", "load_optimizer", "grad_norm"]
