"""DPO (Rafailov et al., 2023, arXiv 2305.18290): the policy's log-ratio to a frozen reference model,
chosen against rejected.

    Δ = (log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))
    sigmoid: -(1-ε) log σ(βΔ) - ε log σ(-βΔ)   hinge: max(0, 1 - βΔ)
    ipo: (Δ' - 1/(2β))² on per-token mean log-ratios;  rewards: β (log π - log π_ref) per side

The reference is the model before any step: with an adapter, the same forward with the adapter
switched off (no second copy of the weights), so a batch's reference is computed when the batch is
first used and a 4-step run on a big file starts at once; with full weights, the initial weights,
which exist only before the first step: then every pair's reference comes first. Either way each
pair's reference is computed once and kept in the run folder (paths.REFERENCE_FILE) for later
epochs and for a resumed run.

The usual rates: 5e-5 with an adapter (an auto run is ~64 steps: the top of LoRA-DPO's 5e-6..5e-5),
5e-7 with full weights (TRL 1.16's trl/scripts/dpo.py).
"""
from __future__ import annotations

import time

from tunelab import paths
from tunelab.errors import TunelabError
from tunelab.train.objectives import Method, register_objective
from tunelab.train.objectives._pairs import PairObjective


@register_objective
class DPO(PairObjective):
    name = "dpo"
    methods = (Method("dpo", lr=5e-5, lr_full=5e-7),)
    adapter_meta = {"preference": "dpo"}

    @staticmethod
    def pair_loss(settings, logps, seq_tokens, norms, ref=None):
        import torch
        import torch.nn.functional as F

        from tunelab.train.preference import reward_stats

        c, r = logps[0::2], logps[1::2]  # (n,) each
        n_c, n_r = seq_tokens[0::2].to(logps.dtype), seq_tokens[1::2].to(logps.dtype)
        ref_c, ref_r = ref[0::2].to(logps.dtype), ref[1::2].to(logps.dtype)
        beta, kind = settings.beta, settings.loss
        chosen_ratio, rejected_ratio = c - ref_c, r - ref_r
        if kind == "sigmoid":
            delta = chosen_ratio - rejected_ratio
            eps = settings.label_smoothing
            losses = -(1 - eps) * F.logsigmoid(beta * delta) - eps * F.logsigmoid(-beta * delta)
        elif kind == "hinge":
            losses = torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
        else:  # ipo: per-token mean log-ratios (as TRL and the IPO authors)
            losses = (chosen_ratio / n_c - rejected_ratio / n_r - 1 / (2 * beta)) ** 2
        chosen_rewards, rejected_rewards = beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
        stats = reward_stats(chosen_rewards, rejected_rewards, c.detach(), r.detach())
        return losses.sum() / norms.pairs, stats

    def start(self, live, data) -> None:
        from tunelab.train.preference import ReferenceStore

        super().start(live, data)
        self.examples = {"train": data.train_ex, "eval": data.eval_ex}
        self.store = ReferenceStore(len(data.train_ex), len(data.eval_ex))
        self.path = live.run_dir / paths.REFERENCE_FILE
        self.batch_tokens, self.grad_accum = data.batch_tokens, data.schedule.grad_accum  # for the OOM advice
        if live.resume and self.path.is_file():  # what an earlier launch computed is never computed again
            self.store.read(self.path)
        if not live.adapter:  # full weights: the initial weights are gone after the first step
            self._ensure("train", data.plan(0))
            self._ensure("eval", data.eval_plan)
            if self.store.changed:
                self.save()
                live.say(f"reference log-probabilities of {len(data.train_ex) + len(data.eval_ex)} pairs in "
                         f"{self.prep_s:.1f} s -> {self.path}")

    def before_step(self, batches) -> None:
        self._ensure("train", batches)

    def before_eval(self, examples, plan) -> None:
        self._ensure("eval", plan)

    def reference(self, split, idx):
        return self.store.get(split, idx)

    def _ensure(self, split: str, batches: list[list[int]]) -> None:
        """The reference of every row of `batches` not known yet, batch by batch (every process runs
        the same forwards: a sharded model all-gathers its layers in each)."""
        todo = [b for b in batches if self.store.missing(split, b)]
        if not todo:
            return
        import torch

        from tunelab.train.preference import reference_logps

        t0, live = time.perf_counter(), self.live
        try:
            values = reference_logps(live.unwrapped, self.examples[split], todo, impl=live.attn, device=live.device,
                                     pad_id=live.pad_id, adapter=live.adapter, width=live.row_width)
        except torch.OutOfMemoryError:
            half = max(self.batch_tokens // 2, 16)
            raise TunelabError(f"the reference pass of method: dpo ran out of memory with train.batch_tokens="
                               f"{self.batch_tokens}; set train.batch_tokens={half} (and train.grad_accum="
                               f"{self.grad_accum * 2}), or preference.weights=lora") from None
        rows = sorted({i for b in todo for i in b})
        self.store.fill(split, rows, values[rows])
        self.prep_s += time.perf_counter() - t0

    def save(self) -> None:
        if self.live.main and self.store.changed:
            self.store.write(self.path)

    def summary(self) -> dict:
        return {"reference_s": round(self.prep_s, 3), "reference_pairs": self.store.computed("train")}
