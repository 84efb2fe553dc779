"""The arithmetic of GRPO: completion log-probabilities, group advantages, the clipped loss, its statistics.

Pure torch, no model loading, no generation: the GRPO objective feeds it rollouts (prompt and
completion token ids, rewards) and the policy, and gets back a loss and what TRL logs for a step.
Every definition follows TRL 1.16.0's `GRPOTrainer` (trl/trainer/grpo_trainer.py) and is checked
against it in tests/train/test_grpo_trl.py:

    log-probs   log π(y_t | x, y_<t) of the logits divided by the sampling temperature (after the
                model's soft-capping), as `add_fused_lm_head` scores them (`_get_per_token_logps_and_entropies`)
    advantage   A_i = r_i - mean(group of r_i), divided by (std + 1e-4) unless scale_rewards is "none";
                std is the group's ("group") or the whole batch's ("batch"), with Bessel's correction
                (`_generate_and_score_completions`, multi_objective_aggregation="sum_then_normalize")
    ratio       ρ_t = exp(log π - log π_old); π_old is π itself, detached, when the rollout is used once
                (num_iterations == 1): ρ = 1 but its gradient is ∇ log π
    token loss  -min(min(ρ, δ) A, clip(ρ, 1 - ε, 1 + ε_high) A) + β KL_t,
                KL_t = exp(d) - d - 1 with d = log π_ref - log π (the k3 estimator), times ρ when
                kl_ratio_correction (TRL's use_bias_correction_kl, on by default)  (`_compute_loss`)
    loss_type   grpo     mean over sequences of each sequence's token mean
                bnpo     token mean over the micro-batch (TRL: "local batch"), averaged over micro-batches
                dr_grpo  token sum / (sequences × max_completion_length)
                dapo     token sum / tokens of the whole optimizer step (TRL's default)

A micro-batch's loss uses the step's GLOBAL counts (LossNorms) as denominators, so gradient
accumulation and processes sum to the loss of the whole step, as the SFT loss does (loss.py); TRL
divides grpo, bnpo and dr_grpo by the number of accumulation steps instead, which is the same when
micro-batches hold equally many sequences (TRL's are always equal).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tunelab.train.loss import CHUNK_TOKENS, KEEP_LOGITS_BYTES, base_causal_lm
from tunelab.train.packing import branch_inputs, branch_mask

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")  # the keys of _REDUCE, in the order the docs give them
SCALE_REWARDS = ("group", "batch", "none")
STD_EPS = 1e-4  # added to the reward std before dividing, as TRL does: a group of equal rewards gets A = 0


# ---------------------------------------------------------------- log-probabilities


def _chunk_logps(hidden, targets, weight, bias, softcap, temperature: float, with_entropy: bool):
    logits = F.linear(hidden, weight, bias).float()  # (c, V): fp32 for a stable log-softmax
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    if temperature != 1.0:
        logits = logits / temperature  # the sampling distribution: TRL scores with the same temperature
    logp = logits.log_softmax(-1)  # (c, V)
    token = logp.gather(1, targets.unsqueeze(1)).squeeze(1)  # (c,)
    if not with_entropy:
        return token, None
    with torch.no_grad():  # entropy is logged, never trained
        entropy = -(logp.exp() * logp).sum(-1)  # (c,)
    return token, entropy


def token_logps(hidden: torch.Tensor, targets: torch.Tensor, head: nn.Module, *, temperature: float = 1.0,
                softcap: Optional[float] = None, chunk: int = CHUNK_TOKENS, entropy: bool = False):
    """Log-probabilities (S,) of `targets` given the final hidden states (S, H) that predict them.

    The LM head runs over chunks of `chunk` positions, and only at the S scored positions, so the
    [tokens × vocab] logits of the whole rows never exist. When the S × V logits together exceed
    KEEP_LOGITS_BYTES each chunk is recomputed in the backward instead of kept, so peak logit memory
    is one chunk (loss.py's reasoning). Returns (logps, entropies (S,) or None); entropies carry no
    gradient.
    """
    recompute = (torch.is_grad_enabled() and hidden.requires_grad
                 and hidden.shape[0] * head.weight.shape[0] * 4 > KEEP_LOGITS_BYTES)
    logps, entropies = [], []
    for s in range(0, hidden.shape[0], chunk):
        args = (hidden[s:s + chunk], targets[s:s + chunk], head.weight, head.bias, softcap, temperature, entropy)
        lp, ent = checkpoint(_chunk_logps, *args, use_reentrant=False) if recompute else _chunk_logps(*args)
        logps.append(lp)
        entropies.append(ent)
    if not logps:  # no scored position: an empty, still differentiable result
        empty = hidden.new_zeros(0, dtype=torch.float32) + hidden.sum() * 0
        return empty, (empty.detach() if entropy else None)
    return torch.cat(logps), (torch.cat(entropies) if entropy else None)


class Scoring(NamedTuple):
    """Where a packed row's scored completion tokens are, and the (B, C) grid they go back to."""

    index: torch.Tensor  # (S,) row position whose hidden state predicts each scored token
    target: torch.Tensor  # (S,) the scored token
    row: torch.Tensor  # (S,) its completion (the batch row)
    col: torch.Tensor  # (S,) its index inside the completion
    mask: torch.Tensor  # (B, C) bool: the tokens that are scored and trained

    def to(self, device) -> "Scoring":
        return Scoring(*(t.to(device, non_blocking=True) for t in self))


@dataclass
class CompletionBatch:
    """Rollouts packed in one row, one document per prompt group, its prompt once:

        [prompt | completion 0 without its last token | completion 1 without its last token | ...]

    A completion attends to its prompt and to itself, never to a sibling, and its positions continue
    from the prompt's end, so its log-probabilities are those of [prompt | completion] run alone; the prompt
    runs once per group instead of G times (the shared-prefix forward of Prefix Grouper, Liu et al.
    2025, arXiv 2506.05433). On builtin:dates a prompt is ~4x a completion, so a group of 8 feeds
    ~3x fewer tokens and keeps ~3x fewer activations than G padded rows. Completion token j is
    predicted at the prompt's last position (j = 0) or at its own fed token j - 1; its last token
    is predicted, never fed.
    """

    input_ids: torch.Tensor  # (1, T)
    position_ids: torch.Tensor  # (1, T)
    doc_ids: torch.Tensor  # (1, T) group index per token
    branch: torch.Tensor  # (1, T) -1 on a group's prompt, k on completion k of its group
    scoring: Scoring
    spans: list = field(default_factory=list)  # the per-span kernel's, each group's (group_spans)
    n_tokens: int = 0  # tokens fed to the model
    attn_pairs: int = 0  # (query, key) pairs attention computes: the cost model's count

    def to(self, device) -> "CompletionBatch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        spans = [(s[0], s[1], None if s[2] is None else move(s[2]), *s[3:]) for s in self.spans]
        return CompletionBatch(move(self.input_ids), move(self.position_ids), move(self.doc_ids), move(self.branch),
                               self.scoring.to(device), spans, self.n_tokens, self.attn_pairs)

    @property
    def mask(self) -> torch.Tensor:  # (B, C) bool: the tokens that are scored and trained
        return self.scoring.mask


def collate_completions(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
                        truncated: Optional[Sequence[bool]] = None) -> CompletionBatch:
    """Rollouts -> one packed CompletionBatch; consecutive rollouts with the same prompt ids form a group.

    `truncated` rows (mask_truncated_completions) are not scored: generation stopped at
    max_completion_length rather than at an end-of-sequence token or a stop string, so the reward
    judged an unfinished answer (DAPO, TRL's mask_truncated_completions). They get no loss and no
    statistics, and are not fed at all (nothing reads their hidden states).
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    B, C = len(prompts), max((len(c) for c in completions), default=0)
    mask = torch.zeros((B, C), dtype=torch.bool)
    ids, pos, doc, branch, spans = [], [], [], [], []
    s_index, s_target, s_row, s_col = [], [], [], []
    attn = groups = i = 0
    while i < B:
        prompt = list(prompts[i])
        if not prompt:
            raise ValueError(f"rollout {i} has an empty prompt: its first completion token has nothing to follow")
        j = i
        while j < B and list(prompts[j]) == prompt:
            j += 1
        start, P = len(ids), len(prompt)
        ids += prompt
        pos += range(P)
        mine = [-1] * P
        attn += P * (P + 1) // 2
        fed_lengths = []
        for k in range(i, j):
            c = list(completions[k])
            if not c or (truncated is not None and truncated[k]):
                continue
            fed = c[:-1]
            s_index += [start + P - 1] + list(range(len(ids), len(ids) + len(fed)))
            s_target += c
            s_row += [k] * len(c)
            s_col += range(len(c))
            mask[k, :len(c)] = True
            fed_lengths.append(len(fed))
            ids += fed
            pos += range(P, P + len(fed))
            mine += [k - i] * len(fed)
            attn += len(fed) * P + len(fed) * (len(fed) + 1) // 2
        spans += group_spans(start, P, fed_lengths, mine)
        doc += [groups] * len(mine)
        branch += mine
        groups += 1
        i = j
    t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return CompletionBatch(t([ids]), t([pos]), t([doc]), t([branch]),
                           Scoring(t(s_index), t(s_target), t(s_row), t(s_col), mask), spans, len(ids), attn)


# On the CPU one attention call costs about as much as this many (query, key) pairs: fitted to
# benchmarks/grpo_attention.py on the default model, 2 cores, LoRA forward + backward (~190 µs a
# call, ~26 ns a pair; docs/training.md, "How a step is sampled and trained")
CALL_PAIRS = 7_000


def group_spans(start: int, P: int, fed: Sequence[int], branch: Sequence[int]) -> list:
    """The per-span kernel's spans (models/attention.py) of one group at `start`: its prompt (P tokens)
    then completions feeding `fed` tokens each; `branch` is the group's -1 / k per token.

    Two layouts give the same attention. The whole group under one (n, n) mask is one call that
    computes n² pairs; the prompt causal, then each completion over [the prompt's keys | its own]
    with an (f, P + f) mask, is one call more per completion but only Σ f (P + f) pairs. Short
    answers after a longer prompt (builtin:dates: 54 + 8 × 15 tokens) run faster as one call, long
    ones apart (8 × 512 after 100: ~2x faster); the pairs saved against CALL_PAIRS per call decide.
    """
    n = P + sum(fed)
    calls = sum(1 for f in fed if f)
    apart = P * P + sum(f * (P + f) for f in fed)
    if n * n - apart <= CALL_PAIRS * calls:  # (no completion feeds a token: the prompt alone, causal)
        return [(start, n, branch_mask(branch) if calls else None)]
    spans, at = [(start, P, None)], start + P
    for f in fed:
        if f:  # its queries see all of the prompt, then itself causally
            spans.append((at, f, torch.ones(f, P + f, dtype=torch.bool).tril(P), ((start, P),)))
        at += f
    return spans


def scored_logps(model: nn.Module, inputs: dict, scoring: Scoring, *, temperature: float = 1.0,
                 entropy: bool = False, chunk: int = CHUNK_TOKENS):
    """Per-token log-probabilities (B, C) of the scored completion tokens (0 elsewhere), and their
    entropies (B, C) or None: the decoder once over the packed row, the LM head only at the scored
    positions, chunk by chunk."""
    lm = base_causal_lm(model)
    hidden = lm.get_decoder()(**inputs, use_cache=False).last_hidden_state[0]  # (T, H)
    h = hidden.index_select(0, scoring.index)  # (S, H)
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    lp, ent = token_logps(h, scoring.target, lm.get_output_embeddings(), temperature=temperature, softcap=softcap,
                          chunk=chunk, entropy=entropy)
    at = (scoring.row, scoring.col)
    logps = lp.new_zeros(scoring.mask.shape).index_put(at, lp)  # (B, C)
    ents = None if ent is None else ent.new_zeros(scoring.mask.shape).index_put(at, ent)
    return logps, ents


def completion_logps(model: nn.Module, batch: CompletionBatch, *, temperature: float = 1.0,
                     entropy: bool = False, chunk: int = CHUNK_TOKENS):
    """Per-token log-probabilities (B, C) of the scored completion tokens under `model` (0 elsewhere),
    and entropies (B, C) or None. TRL 1.16.0: GRPOTrainer._get_per_token_logps_and_entropies with
    the fused head of trl.trainer.utils.add_fused_lm_head (which TRL runs on G padded rows per
    prompt; the values are the same)."""
    inputs = branch_inputs(batch, base_causal_lm(model).config._attn_implementation)
    return scored_logps(model, inputs, batch.scoring, temperature=temperature, entropy=entropy, chunk=chunk)


class CompletionLM(nn.Module):
    """The module GRPO hands to `Accelerator.prepare`: its forward returns the per-token log-probs
    and entropies (B, C) of a packed CompletionBatch, so DDP synchronises the gradients of this forward."""

    def __init__(self, model: nn.Module, *, temperature: float = 1.0):
        super().__init__()
        self.model = model  # the PEFT or plain model: its parameters are the ones trained
        self.temperature = temperature
        self._no_split_modules = list(getattr(base_causal_lm(model), "_no_split_modules", None) or [])

    def forward(self, input_ids, position_ids, attention_mask, scoring: Scoring, doc_spans=None):
        inputs = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": attention_mask}
        if doc_spans is not None:
            inputs["doc_spans"] = doc_spans
        return scored_logps(self.model, inputs, scoring, temperature=self.temperature, entropy=torch.is_grad_enabled())


def batch_forward(module, batch: CompletionBatch, impl: str):
    """(log-probs, entropies or None), each (B, C), of a CompletionBatch through a CompletionLM (or its
    DDP wrapper); `impl` is the attention implementation the model runs under."""
    return module(**branch_inputs(batch, impl), scoring=batch.scoring)


# ---------------------------------------------------------------- advantages


@dataclass
class Advantages:
    """Group-normalised advantages and the reward statistics TRL logs with them."""

    values: torch.Tensor  # (N,) one per completion
    stats: dict  # reward, reward_std, frac_reward_zero_std, rewards/<name>/mean and /std


def group_advantages(rewards: torch.Tensor, num_generations: int, *, scale_rewards: str | bool = "group",
                     weights: Optional[Sequence[float]] = None, names: Optional[Sequence[str]] = None) -> Advantages:
    """Advantages of N = prompts × G completions, laid out group by group (G consecutive rows per prompt).

    rewards: (N,) or (N, K) for K reward functions, combined as Σ_k w_k r_k (weights default to 1)
    before normalising (TRL's "sum_then_normalize"). scale_rewards: "group" (True), "batch" or
    "none" (False), as GRPOConfig takes it. frac_reward_zero_std is the share of GROUPS whose
    rewards are all equal (no learning signal); TRL 1.16 logs the same under "group" and "none",
    and under "batch" whether the whole batch's rewards are equal. TRL 1.16.0:
    GRPOTrainer._generate_and_score_completions (the advantages and the reward/* logs).
    """
    scale = {True: "group", False: "none"}.get(scale_rewards, scale_rewards)
    if scale not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)} (got {scale_rewards!r})")
    if num_generations < 2:
        raise ValueError(f"num_generations must be at least 2 to compare completions (got {num_generations})")
    per_func = rewards.float().reshape(rewards.shape[0], -1)  # (N, K)
    N, K = per_func.shape
    if N == 0 or N % num_generations:
        raise ValueError(f"{N} rewards do not split into groups of {num_generations}")
    if not torch.isfinite(per_func).all():
        raise ValueError("a reward is NaN or infinite")
    w = torch.ones(K) if weights is None else torch.tensor(list(weights), dtype=torch.float32)
    if w.numel() != K:
        raise ValueError(f"{w.numel()} reward weights for {K} reward functions")
    total = (per_func * w.to(per_func.device)).sum(1)  # (N,)
    groups = total.view(-1, num_generations)  # (prompts, G)
    group_std = groups.std(1)  # (prompts,) unbiased, as TRL's nanstd
    centred = (groups - groups.mean(1, keepdim=True)).reshape(-1)  # (N,)
    if scale == "group":
        centred = centred / (group_std.repeat_interleave(num_generations) + STD_EPS)
    elif scale == "batch":
        centred = centred / (total.std() + STD_EPS)
    zero_std = torch.isclose(group_std, torch.zeros_like(group_std))  # TRL's test for "all equal"
    stats = {"reward": float(total.mean()), "reward_std": float(total.std()),
             "frac_reward_zero_std": float(zero_std.float().mean())}
    for k, name in enumerate(names or [f"reward_{k}" for k in range(K)]):
        stats[f"rewards/{name}/mean"] = float(per_func[:, k].mean())
        stats[f"rewards/{name}/std"] = float(per_func[:, k].std())
    return Advantages(centred, stats)


# ---------------------------------------------------------------- loss


@dataclass(frozen=True)
class GRPOLossSettings:
    """The loss's knobs, named and defaulted as GRPOConfig (TRL 1.16) names them."""

    loss_type: str = "dapo"
    epsilon: float = 0.2  # lower clip: ρ below 1 - ε stops pushing a negative advantage down
    epsilon_high: Optional[float] = None  # upper clip, default ε; DAPO's clip-higher uses 0.28
    delta: Optional[float] = None  # two-sided clipping (INTELLECT-2): ρ capped at δ > 1 + ε_high
    beta: float = 0.0  # KL coefficient; 0 needs no reference pass
    kl_ratio_correction: bool = True  # KL_t × ρ_t (TRL's use_bias_correction_kl)
    max_completion_length: int = 256  # dr_grpo's constant denominator

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)} (got {self.loss_type!r})")
        if self.delta is not None and self.delta <= 1 + self.eps_high:
            raise ValueError(f"delta must exceed 1 + epsilon_high = {1 + self.eps_high} (got {self.delta})")

    @property
    def eps_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


@dataclass(frozen=True)
class LossNorms:
    """Denominators over the whole optimizer step (all micro-batches, all processes)."""

    seqs: int  # completions in the step (grpo, dr_grpo)
    tokens: int  # scored completion tokens in the step (dapo)
    micro_batches: int = 1  # micro-batches the step averages (bnpo's local token means)

    @staticmethod
    def of(mask: torch.Tensor) -> "LossNorms":
        """The norms of a step that is this one micro-batch."""
        return LossNorms(seqs=mask.shape[0], tokens=int(mask.sum()))


@dataclass
class StepStats:
    """Sums and extremes over scored tokens, mergeable across micro-batches; `means()` gives TRL's names.

    TRL 1.16.0 logs these in GRPOTrainer._compute_loss: kl, entropy and clip_ratio/*_mean as means over
    every scored token of the step, clip_ratio/low_min and high_max over per-completion shares.
    """

    tokens: float = 0.0
    kl: Optional[float] = None  # Σ KL_t (None when beta == 0: TRL logs no kl then)
    entropy: Optional[float] = None  # Σ entropy_t
    clip_low: float = 0.0  # Σ [ρ < 1 - ε and A < 0]
    clip_high: float = 0.0  # Σ [ρ > 1 + ε_high and A > 0]
    clip_low_min: float = float("inf")  # the lowest per-completion share of low-clipped tokens
    clip_high_max: float = float("-inf")  # the highest per-completion share of high-clipped tokens

    def merge(self, other: "StepStats") -> "StepStats":
        add = lambda a, b: None if a is None and b is None else (a or 0.0) + (b or 0.0)  # noqa: E731
        return StepStats(self.tokens + other.tokens, add(self.kl, other.kl), add(self.entropy, other.entropy),
                         self.clip_low + other.clip_low, self.clip_high + other.clip_high,
                         min(self.clip_low_min, other.clip_low_min), max(self.clip_high_max, other.clip_high_max))

    def means(self) -> dict[str, float]:
        n = max(self.tokens, 1.0)  # TRL clamps the count at 1: no token logs 0
        out = {"clip_ratio/low_mean": self.clip_low / n, "clip_ratio/high_mean": self.clip_high / n,
               # a token is low- or high-clipped, never both, so the region share is their sum
               "clip_ratio/region_mean": (self.clip_low + self.clip_high) / n}
        if self.clip_low_min != float("inf"):
            out["clip_ratio/low_min"] = self.clip_low_min
            out["clip_ratio/high_max"] = self.clip_high_max
        if self.kl is not None:
            out["kl"] = self.kl / n
        if self.entropy is not None:
            out["entropy"] = self.entropy / n
        return out


def _per_sequence_mean(masked, mask, settings, norms):  # grpo: each completion's token mean, averaged
    per_seq = masked.sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B,)
    return per_seq.sum() / max(norms.seqs, 1)


def _micro_batch_token_mean(masked, mask, settings, norms):  # bnpo: token mean of each micro-batch
    return masked.sum() / mask.sum().clamp(min=1.0) / norms.micro_batches


def _fixed_length_sum(masked, mask, settings, norms):  # dr_grpo: token sum / (completions x max length)
    return masked.sum() / (max(norms.seqs, 1) * settings.max_completion_length)


def _step_token_mean(masked, mask, settings, norms):  # dapo: token mean over the whole step
    return masked.sum() / max(norms.tokens, 1)


# loss_type -> how the (B, C) token losses of a micro-batch become its share of the step's loss
_REDUCE = {"grpo": _per_sequence_mean, "bnpo": _micro_batch_token_mean, "dr_grpo": _fixed_length_sum,
           "dapo": _step_token_mean}


def _reduce(token_loss: torch.Tensor, mask: torch.Tensor, settings: GRPOLossSettings, norms: LossNorms):
    masked = token_loss * mask  # (B, C)
    return _REDUCE[settings.loss_type](masked, mask, settings, norms)


def grpo_loss(logps: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, settings: GRPOLossSettings, *,
              old_logps: Optional[torch.Tensor] = None, ref_logps: Optional[torch.Tensor] = None,
              entropies: Optional[torch.Tensor] = None, norms: Optional[LossNorms] = None):
    """The clipped policy-gradient loss of one micro-batch (its share of the step) and its statistics.

    logps, old_logps, ref_logps, entropies: (B, C) per completion token; mask: (B, C), the scored
    tokens; advantages: (B,). old_logps None means the rollout is on-policy (num_iterations == 1).
    ref_logps is needed when beta != 0. Returns (loss, StepStats). TRL 1.16.0: GRPOTrainer._compute_loss
    (token-level importance sampling, no entropy bonus, no off-policy mask).
    """
    if settings.beta != 0.0 and ref_logps is None:
        raise ValueError("beta != 0 needs the reference log-probabilities (ref_logps)")
    m = mask.to(logps.dtype)
    norms = norms or LossNorms.of(mask)
    old = logps.detach() if old_logps is None else old_logps
    adv = advantages.to(logps.dtype).unsqueeze(1)  # (B, 1)
    ratio = torch.exp(logps - old)  # (B, C)
    clipped = ratio.clamp(1 - settings.epsilon, 1 + settings.eps_high)
    kl = None
    if settings.beta != 0.0:
        d = ref_logps - logps
        kl = torch.exp(d) - d - 1  # k3: unbiased, non-negative estimate of KL(π ‖ π_ref)
        if settings.kl_ratio_correction:
            kl = kl * ratio  # the unclipped ratio, so the KL gradient is the reverse-KL one off-policy too
    if settings.delta is not None:
        ratio = ratio.clamp(max=settings.delta)
    token_loss = -torch.min(ratio * adv, clipped * adv)  # (B, C)
    if kl is not None:
        token_loss = token_loss + settings.beta * kl
    loss = _reduce(token_loss, m, settings, norms)
    return loss, _stats(ratio.detach(), adv, m, settings, kl, entropies)


def _stats(ratio, adv, m, settings: GRPOLossSettings, kl, entropies) -> StepStats:
    low = ((ratio < 1 - settings.epsilon) & (adv < 0)).to(m.dtype) * m  # (B, C)
    high = ((ratio > 1 + settings.eps_high) & (adv > 0)).to(m.dtype) * m
    per_seq = m.sum(-1)  # (B,)
    has = per_seq > 0  # completions without scored tokens have no share (TRL: NaN, skipped)
    stats = StepStats(tokens=float(m.sum()), clip_low=float(low.sum()), clip_high=float(high.sum()))
    if has.any():
        stats.clip_low_min = float((low.sum(-1)[has] / per_seq[has]).min())
        stats.clip_high_max = float((high.sum(-1)[has] / per_seq[has]).max())
    if kl is not None:
        stats.kl = float((kl.detach() * m).sum())
    if entropies is not None:
        stats.entropy = float((entropies.detach() * m).sum())
    return stats
