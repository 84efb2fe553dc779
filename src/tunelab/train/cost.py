"""What a run cost: FLOPs, model FLOPs utilisation, peak memory, energy.

FLOPs are the usual estimates, not a profile:
- full fine-tuning: 6·N per token (2N forward, 4N backward: activation and weight gradients);
- adapters (LoRA/DoRA/QLoRA): the frozen base needs the forward (2N) and the activation
  gradients (2N) but no weight gradients, so 4·N + 6·N_trainable per token.
N excludes the input embedding (a lookup, not a matmul). MFU is only reported where the device's
dense bf16 peak is known; on CPU it is None rather than a guess.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from tunelab.memory import current_memory_mib, peak_memory_mib  # noqa: F401  (the loop reads them here)

log = logging.getLogger("tunelab.train")

# dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets
PEAK_BF16 = {
    "H200": 989e12,
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




class EnergyMeter:
    """codecarbon in offline mode; any failure turns it into a no-op (energy is never worth a crash).

    Disabled with TUNELAB_NO_ENERGY=1 (tests, or machines where its probing is slow).
    """

    def __init__(self, output_dir: str):
        self.tracker = None
        if os.environ.get("TUNELAB_NO_ENERGY") == "1":
            return
        try:
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            from codecarbon import OfflineEmissionsTracker

            self.tracker = OfflineEmissionsTracker(
                country_iso_code="USA",  # only the CO2 intensity depends on it; energy does not
                output_dir=output_dir,
                save_to_file=False,
                log_level="error",
                tracking_mode="process",
            )
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
