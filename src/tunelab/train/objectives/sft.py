"""Supervised fine-tuning: the summed token cross-entropy of the supervised positions (loss.py).

Its methods are the weights axis: which parameters train (train/methods.py applies them).
The usual rates: LoRA's 1e-4..3e-4 (2e-4, the QLoRA paper's and PEFT's examples' default) and
full fine-tuning's 1e-5..5e-5 (2e-5).
"""
from __future__ import annotations

from typing import Optional

from tunelab.train import inputs
from tunelab.train.objectives import Method, Objective, Weights, register_objective


@register_objective
class SFT(Objective):
    name, family = "sft", "sft"
    methods = (
        Method("full", lr=2e-5, weights=Weights(adapter=False)),  # every weight (fp32 master weights)
        Method("lora", lr=2e-4, weights=Weights(adapter=True)),  # low-rank adapters on every linear layer
        Method("dora", lr=2e-4, weights=Weights(adapter=True, dora=True)),  # LoRA + a magnitude per output
        Method("qlora", lr=2e-4, weights=Weights(adapter=True, quantized=True)),  # LoRA over a 4-bit base (CUDA)
    )

    def load(self, source: inputs.DataSource):
        return inputs.load_examples(source)

    def wrap(self, model):
        from tunelab.train.loss import PackedCausalLM

        return PackedCausalLM(model)

    def collate(self, examples, *, pad_id: int, width: Optional[int]):
        from tunelab.train.packing import collate

        return collate(examples, packing=self.cfg.data.packing, pad_id=pad_id, width=width)

    def step_loss(self, model, batch, idx, counts, weight):
        from tunelab.train.packing import model_inputs

        ce_sum, _ = model(**model_inputs(batch, self.live.attn), targets=batch.targets)
        return ce_sum

    def eval_part(self, model, batch, idx, weight):
        from tunelab.train.packing import model_inputs

        ce_sum, n = model(**model_inputs(batch, self.live.attn), targets=batch.targets)
        return float(ce_sum) * weight, n * weight
