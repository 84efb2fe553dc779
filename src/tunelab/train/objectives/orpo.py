"""ORPO (Hong et al., 2024, arXiv 2403.07691): the chosen answer's NLL plus an odds-ratio term; no
reference model.

    loss = NLL(chosen tokens) - λ log σ(log odds(c) - log odds(r)),  odds(y) = p / (1 - p),
    p = exp(mean token log-prob);  rewards: λ × mean log-prob        (TRL 1.16's ORPOTrainer)

The usual rates: 5e-5 with an adapter (an auto run is ~64 steps: the top of LoRA's 5e-6..5e-5),
8e-6 with full weights (the ORPO paper's).
"""
from __future__ import annotations

from tunelab.train.objectives import Method, register_objective
from tunelab.train.objectives._pairs import PairObjective


@register_objective
class ORPO(PairObjective):
    name = "orpo"
    methods = (Method("orpo", lr=5e-5, lr_full=8e-6),)
    adapter_meta = {"preference": "orpo"}

    @staticmethod
    def pair_loss(settings, logps, seq_tokens, norms, ref=None):
        import torch.nn.functional as F

        from tunelab.train.preference import log1mexp, reward_stats

        c, r = logps[0::2], logps[1::2]  # (n,) each
        n_c, n_r = seq_tokens[0::2].to(logps.dtype), seq_tokens[1::2].to(logps.dtype)
        lam = settings.orpo_lambda
        mean_c, mean_r = c / n_c, r / n_r  # mean token log-prob of each answer
        log_odds = (mean_c - mean_r) - (log1mexp(mean_c) - log1mexp(mean_r))
        ratio = F.logsigmoid(log_odds)
        nll_sum = -c.sum()  # chosen tokens only: the answer, as train_on: completion does for SFT
        loss = nll_sum / norms.chosen_tokens - lam * ratio.sum() / norms.pairs
        stats = reward_stats(lam * mean_c.detach(), lam * mean_r.detach(), mean_c.detach(), mean_r.detach())
        stats.update({"log_odds_ratio": ratio.detach().sum(), "log_odds_chosen": log_odds.detach().sum(),
                      "nll_loss": nll_sum.detach() * norms.pairs / norms.chosen_tokens})
        return loss, stats
