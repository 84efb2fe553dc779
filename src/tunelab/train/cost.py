"""What a run cost: FLOPs, model FLOPs utilisation, peak memory, energy.

FLOPs are the usual estimates, not a profile (docs/training.md, "Accounting"):
- full fine-tuning: 6·N per token (2N forward, 4N backward: activation and weight gradients);
- adapters (LoRA/DoRA/QLoRA): the frozen base needs the forward (2N) and the activation
  gradients (2N) but no weight gradients, so 4·N + 6·N_trainable per token;
- attention (no weights, so the same for every method): per layer, QKᵀ and AV cost 2·2·d FLOPs
  per causal (query, key) pair forward and twice that backward, 12·d·pairs in all, with
  pairs = Σ Lᵢ(Lᵢ+1)/2 over the documents (packed documents never attend to each other) and
  d = heads × head_dim. Padding counts for nothing.
N excludes the input embedding (a lookup, not a matmul). MFU is only reported where the device's
dense bf16 peak is known; on CPU it is None rather than a guess.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

from tunelab import logs
from tunelab.memory import current_memory_mib, peak_memory_mib  # noqa: F401  (the loop reads them here)

log = logging.getLogger("tunelab.train")

# dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets (SXM parts;
# first match wins, so the more specific names come first)
PEAK_BF16 = {
    "B200": 2250e12,
    "GH200": 989e12,
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
}


def flops_per_token(n_params: int, n_trainable: int, n_embedding: int, *, adapter: bool) -> float:
    n = max(n_params - n_embedding, 0)
    if adapter:
        return 4.0 * n + 6.0 * n_trainable
    return 6.0 * n


def attention_dims(config) -> tuple[int, int]:
    """(layers, d = heads × head_dim) of a transformers decoder config, for the attention term."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, heads * head_dim


def attention_flops(pairs: int, layers: int, d: int) -> float:
    """Training FLOPs of causal attention over `pairs` (query, key) pairs: 12·d per pair and layer."""
    return 12.0 * d * layers * pairs


def embedding_params(model) -> int:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return emb.weight.numel() if emb is not None else 0


def device_peak_flops(device, precision: str) -> Optional[float]:
    """Peak FLOP/s of this device at this precision, or None when unknown (CPU, fp32...)."""
    if getattr(device, "type", str(device)) != "cuda" or precision not in ("bf16", "fp16"):
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():
        if key in name:
            return peak
    return None


def mfu(flops: float, seconds: float, peak: Optional[float], n_devices: int = 1) -> Optional[float]:
    if not peak or seconds <= 0:
        return None
    return flops / seconds / (peak * n_devices)


def compile_count() -> int:
    """Graphs torch.compile has built in this process so far (torch._dynamo's own counter)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # a torch without dynamo compiles nothing
        return 0
    return int(counters["stats"]["unique_graphs"])


class SteadyState:
    """Tokens, FLOPs and seconds of the run's steady state.

    Steady state: the steps after the last one that compiled anything, and never step 1 (it also
    pays for the allocator's warm-up and the first kernel launches); a later recompilation
    restarts it. Rates are None until such a step exists. (Whole-run rates are the loop's own
    totals: tokens_seen / train_s, compilation, evaluation and saving included.)
    """

    def __init__(self):
        self.tokens = self.flops = self.seconds = 0.0
        self.start: Optional[int] = None  # first step counted as steady

    def add(self, step: int, tokens: int, flops: float, seconds: float, compiled: bool) -> None:
        if compiled or step <= 1:
            self.tokens = self.flops = self.seconds = 0.0
            self.start = None
            return
        if self.start is None:
            self.start = step
        self.tokens, self.flops, self.seconds = self.tokens + tokens, self.flops + flops, self.seconds + seconds

    def rates(self, peak: Optional[float], n_devices: int = 1) -> dict:
        return {"steady_tokens_per_s": self.tokens / self.seconds if self.seconds > 0 else None,
                "steady_mfu": mfu(self.flops, self.seconds, peak, n_devices),
                "steady_from_step": self.start}


# memory model behind auto_batch_tokens (docs/training.md, "Token budget on a GPU")
ACT_VALUES_PER_TOKEN_LAYER = (8, 4)  # saved activations per token and layer ≈ 8·hidden + 4·intermediate values
HEADROOM = 0.85  # of free memory: allocator fragmentation, CUDA context, kernels' workspaces
MAX_AUTO_TOKENS = 65536


@dataclass(frozen=True)
class MemoryModel:
    """What auto_batch_tokens needs to know of a model being trained."""

    n_params: int
    n_trainable: int
    weight_bytes: int  # bytes per frozen weight: 4 fp32, 2 bf16, 1 (about) for a 4-bit base
    layers: int
    hidden: int
    intermediate: int
    vocab: int


def auto_batch_tokens(free_bytes: float, m: MemoryModel, *, grad_checkpointing: bool, longest: int = 0,
                      multiple: int = 128, chunk_tokens: int = 1024) -> int:
    """A token budget that fills `free_bytes` of GPU memory (formula, no probe).

    fixed = weights (n_params × weight_bytes) + the trainable parameters' fp32 gradient and two
    AdamW moments (12 B each) + the loss's logit chunk (chunk_tokens × vocab × 4 B, ×3 for softmax and
    its gradient); per token = layers × (8·hidden + 4·intermediate) bf16 values (2 B) of saved
    activations, or with gradient checkpointing one hidden state per layer plus one layer's full set.
    budget = (HEADROOM × free − fixed) / per_token, rounded down to `multiple`, at most
    MAX_AUTO_TOKENS and at least the longest row (rounded up).
    """
    a, b = ACT_VALUES_PER_TOKEN_LAYER
    layer_values = a * m.hidden + b * m.intermediate
    per_token = 2.0 * ((m.layers * m.hidden + layer_values) if grad_checkpointing else m.layers * layer_values)
    fixed = m.n_params * m.weight_bytes + 12.0 * m.n_trainable + 3.0 * chunk_tokens * m.vocab * 4
    budget = int((HEADROOM * free_bytes - fixed) / per_token) // multiple * multiple
    floor = -(-max(longest, 1) // multiple) * multiple
    return max(min(budget, MAX_AUTO_TOKENS), floor)





def fill_free_memory(config, device, *, n_params: int, n_trainable: int, weight_bytes: int,
                     grad_checkpointing: bool, longest: int) -> tuple[int, float]:
    """auto_batch_tokens for a transformers model config on CUDA `device`: (budget, free bytes)."""
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    m = MemoryModel(n_params, n_trainable, weight_bytes, config.num_hidden_layers, config.hidden_size,
                    getattr(config, "intermediate_size", 4 * config.hidden_size), config.vocab_size)
    budget = auto_batch_tokens(free, m, grad_checkpointing=grad_checkpointing, longest=longest)
    return budget, free


class EnergyMeter:
    """codecarbon in offline mode; any failure turns it into a no-op (energy is never worth a crash).

    Disabled with TUNELAB_NO_ENERGY=1 (tests, or machines where its probing is slow).
    """

    def __init__(self, output_dir: str):
        self.tracker = None
        if os.environ.get("TUNELAB_NO_ENERGY") == "1":
            return
        try:
            from codecarbon import OfflineEmissionsTracker

            # under the CLI its lines go to the run's log.txt (tunelab.logs); a library user
            # who set up no routing gets errors only, as before
            logs.adopt()
            level = "info" if logs.routing() else "error"
            logging.getLogger("codecarbon").setLevel(level.upper())
            self.tracker = OfflineEmissionsTracker(
                country_iso_code="USA",  # only the CO2 intensity depends on it; energy does not
                output_dir=output_dir,
                save_to_file=False,
                log_level=level,
                tracking_mode="process",
            )
            logs.adopt()  # the tracker re-installs its terminal handler while it sets up
            self.tracker.start()
        except Exception as e:  # noqa: BLE001 - codecarbon probes hardware in many ways
            log.debug("energy measurement unavailable: %s", e)
            self.tracker = None

    def so_far_wh(self) -> Optional[float]:
        """Energy since start, tracker still running (saved in checkpoints so a resume adds to it)."""
        if self.tracker is None:
            return None
        try:
            self.tracker.flush()  # measures up to now; keeps tracking
            return float(self.tracker._total_energy.kWh) * 1000.0  # codecarbon 3.3's running total
        except Exception as e:  # noqa: BLE001
            log.debug("energy measurement failed: %s", e)
            return None

    def stop_wh(self) -> Optional[float]:
        if self.tracker is None:
            return None
        try:
            self.tracker.stop()
            kwh = self.tracker.final_emissions_data.energy_consumed
            return float(kwh) * 1000.0
        except Exception as e:  # noqa: BLE001
            log.debug("energy measurement failed: %s", e)
            return None
