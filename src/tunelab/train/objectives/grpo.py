"""GRPO (Shao et al., 2024, arXiv 2402.03300): reinforcement learning from rewards on the model's own samples.

Each optimizer step takes a batch of prompts, samples G completions of each from the model as it
is now (the rollout function, passed in by the caller: train/ never imports the engine), scores
them with the reward functions (also passed in), and normalises the rewards within each prompt's
group into advantages; the loss is the clipped policy gradient of grpo_math.py (TRL 1.16's
definitions, checked in tests/train/test_grpo_trl.py), optionally with a KL term towards the
reference: with an adapter, the same forward with the adapter switched off (no copy).

One generation batch serves `grpo.num_iterations` optimizer steps in a row (the plan repeats each
step's micro-batches: RunData.repeat); its first use is on-policy, later ones clip the ratio to the
log-probabilities kept from when it was sampled. Sampling seeds come from (train.seed, generation
batch, prompt, completion), so a resumed run samples what the uninterrupted one did, and the batch
itself is kept beside the run (rollouts.Buffer) for a resume between two uses of it.

The usual rates: 5e-5 with an adapter (short CPU runs; LoRA GRPO recipes use 1e-5..5e-5), 1e-6
with full weights (TRL's GRPOConfig default).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

from tunelab import paths
from tunelab.errors import TunelabError
from tunelab.train import inputs
from tunelab.train.objectives import Method, Objective, register_objective
from tunelab.train.rollouts import Buffer, Prompt, Rollout, Sampling, Totals, length_stats, score

BUFFER_FILE = paths.ROLLOUTS_FILE  # the current generation batch (a resume between two of its uses)
COMPLETIONS_FILE = paths.COMPLETIONS_FILE  # sample completions, every grpo.log_completions_every steps
TOTALS_FILE = paths.GRPO_TOTALS_FILE  # summary.json's whole-run counts at each checkpoint (a resume continues them)
SAMPLE_PROMPTS = 2  # prompts of a step whose completions go to completions.jsonl
# no learning signal: a group whose rewards are all equal has advantage 0 everywhere
FLAT_SHARE, FLAT_STEPS = 0.8, 8  # warn when this share of groups is flat for this many batches in a row


def group_tokens(prompt_tokens: int, num_generations: int, max_completion_length: int) -> int:
    """Tokens a prompt's group feeds in training at most: the prompt once and G completions
    (grpo_math.CompletionBatch); the batch planner's size of a prompt row."""
    return prompt_tokens + num_generations * max_completion_length


@dataclass(frozen=True)
class PromptRow:
    prompt: Prompt
    tokens: int  # prompt tokens
    length: int  # group_tokens: the batch planner's size


@dataclass
class GRPOBatch:
    """One micro-batch: the completions of some prompts, their advantages and kept log-probs."""

    rows: Any  # grpo_math.CompletionBatch: the groups packed, each prompt once
    advantages: Any  # (B,)
    old: Any = None  # (B, C) log-probs when sampled (num_iterations > 1), else None
    ref: Any = None  # (B, C) reference log-probs (beta > 0), else None

    @property
    def n_supervised(self) -> int:  # completion tokens scored and trained
        return int(self.rows.scoring.index.numel())

    @property
    def n_tokens(self) -> int:  # tokens fed (the accounting's count)
        return self.rows.n_tokens

    @property
    def attn_pairs(self) -> int:
        return self.rows.attn_pairs

    def to(self, device) -> "GRPOBatch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return GRPOBatch(self.rows.to(device), move(self.advantages), move(self.old), move(self.ref))


def seed_of(seed: int, generation: int, row: int, j: int) -> int:
    """The sampling seed of completion j of prompt `row` in a generation batch (independent streams)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, generation, row, j]).generate_state(1)[0])


@register_objective
class GRPO(Objective):
    name, family = "grpo", "rl"
    methods = (Method("grpo", lr=5e-5, lr_full=1e-6),)
    needs = ("prompts", "rollout", "rewards")
    rows_are_prompts = True  # schedule.py's GRPO rule: about 3 visits of each prompt, bounded
    weights_key = "grpo"
    adapter_meta = {"objective": "grpo"}

    @classmethod
    def check(cls, cfg) -> None:
        g = cfg.grpo
        if g.beta and g.weights == "full":
            raise TunelabError("grpo.beta > 0 with grpo.weights: full needs a second copy of the model as the "
                               "reference; use grpo.weights: lora (the reference is the adapter switched off) or "
                               "grpo.beta: 0")
        if isinstance(cfg.data.eval, str):  # a held-out fraction (the default) is simply not taken
            raise TunelabError(f"data.eval: {cfg.data.eval} is not used by method: grpo, whose progress is the reward "
                               "(metrics.jsonl); set data.eval: null and evaluate the adapter with tunelab eval")
        for key, value in (("data.max_toxicity", cfg.data.max_toxicity), ("replay", cfg.replay)):
            if value is not None:
                raise TunelabError(f"{key} is not supported with method: grpo; remove it")
        if cfg.data.max_length <= g.max_completion_length:
            raise TunelabError(f"data.max_length ({cfg.data.max_length}) leaves no room for a prompt beside "
                               f"grpo.max_completion_length ({g.max_completion_length}); raise data.max_length")

    def steps_per_batch(self) -> int:
        return self.cfg.grpo.num_iterations

    # ------------------------------------------------------------ data
    def load(self, source: inputs.DataSource):
        g, limit = self.cfg.grpo, self.cfg.data.max_length
        self.tokenizer = source.tokenizer  # the rollout function decodes with it
        room = limit - g.max_completion_length
        rows, bad = [], []
        for p in self.providers["prompts"](source):
            n = len(source.tokenizer(p.text, add_special_tokens=False)["input_ids"])
            if n > room or n == 0:
                bad.append((p, n))
                continue
            rows.append(PromptRow(p, n, group_tokens(n, g.num_generations, g.max_completion_length)))
        if bad and not self.cfg.data.skip_bad:
            p, n = bad[0]
            raise TunelabError(f"{p.name or 'a prompt'}: {n} prompt tokens, but data.max_length {limit} leaves "
                               f"{room} beside grpo.max_completion_length {g.max_completion_length}; shorten it, "
                               f"raise data.max_length, or set {inputs.SKIP_SETTING} to skip such prompts")
        if bad:
            source.note_skips([f"{bad[0][0].name or 'prompts'}: skipped {len(bad)} prompt(s) longer than "
                               f"data.max_length - grpo.max_completion_length = {room} tokens"])
        if not rows:
            raise TunelabError("no training prompt is left for method: grpo; check data.train / grpo.task")
        return rows, []

    def wrap(self, model):
        from tunelab.train.grpo_math import CompletionLM

        return CompletionLM(model, temperature=self.cfg.grpo.temperature)

    def batch(self, rows, idx, *, pad_id, width):
        import torch

        from tunelab.train.grpo_math import collate_completions

        buf, g = self.buffer, self.cfg.grpo
        outs = [Rollout(**r) for i in idx for r in buf.rollouts[i]]
        trunc = [r.truncated for r in outs] if g.mask_truncated_completions else None
        rows_ = collate_completions([r.prompt_ids for r in outs], [r.completion_ids for r in outs], truncated=trunc)
        adv = torch.tensor([a for i in idx for a in buf.advantages[i]], dtype=torch.float32)
        kept = lambda d: _padded([x for i in idx for x in d[i]], rows_.mask.shape) if d else None  # noqa: E731
        return GRPOBatch(rows_, adv, kept(buf.old_logps), kept(buf.ref_logps))

    # ------------------------------------------------------------ the step
    def start(self, live, data) -> None:
        from tunelab.train.grpo_math import GRPOLossSettings

        super().start(live, data)
        g = self.cfg.grpo
        self.rows, self.rewards = data.train_ex, list(self.providers["rewards"])
        if not self.rewards:
            raise TunelabError("method: grpo has no reward; set grpo.rewards (docs/training.md, GRPO)")
        self.settings = GRPOLossSettings(g.loss_type, g.epsilon, g.epsilon_high, beta=g.beta,
                                         max_completion_length=g.max_completion_length)
        self.sampling = Sampling(g.max_completion_length, g.temperature, g.top_p, tuple(g.stop))
        self.buffer: Optional[Buffer] = None
        self.buffer_path = live.run_dir / BUFFER_FILE
        self.flat_steps, self.totals = 0, Totals()
        self._resumed = not live.resume  # a resumed run first rewinds completions.jsonl and reads the buffer

    def before_step(self, batches) -> None:
        from tunelab.train.grpo_math import LossNorms, StepStats

        g = self.cfg.grpo
        generation = (self.step - 1) // g.num_iterations
        if not self._resumed:
            self._resumed = True
            self._rewind(generation)
        t0 = time.perf_counter()
        if self.buffer is None or self.buffer.generation != generation:
            self.buffer = self._generate([i for b in batches for i in b], batches, generation)
        self.buffer.uses += 1
        self.gen_now = time.perf_counter() - t0
        rows = [i for b in batches for i in b]
        trunc = g.mask_truncated_completions
        tokens = sum(len(r["completion_ids"]) for i in rows for r in self.buffer.rollouts[i]
                     if not (trunc and r["truncated"]))
        self.norms = LossNorms(seqs=len(rows) * g.num_generations, tokens=tokens, micro_batches=len(batches))
        self.stats, self.t_train = StepStats(), time.perf_counter()

    def step_loss(self, model, batch, idx, counts, weight):
        from tunelab.train.grpo_math import batch_forward, grpo_loss

        r = batch.rows
        logps, ents = batch_forward(model, r, self.live.attn)
        loss, stats = grpo_loss(logps, r.mask, batch.advantages, self.settings, old_logps=batch.old,
                                ref_logps=batch.ref, entropies=ents, norms=self.norms)
        if weight:
            self.stats = self.stats.merge(stats)
        return loss * max(counts.supervised, 1)  # the loop divides the step's sum by this count

    def step_stats(self, counts, reduce) -> dict:
        import torch

        from tunelab.train.grpo_math import StepStats

        st = self.stats  # token sums over every process (the per-completion min / max stay this process's)
        s = reduce(torch.tensor([st.tokens, st.kl or 0.0, st.entropy or 0.0, st.clip_low, st.clip_high],
                                dtype=torch.float64)).tolist()
        st = StepStats(s[0], None if st.kl is None else s[1], None if st.entropy is None else s[2], s[3], s[4],
                       st.clip_low_min, st.clip_high_max)
        out = {**self.buffer.stats, **st.means(), "generate_s": round(self.gen_now, 4),
               "optimize_s": round(time.perf_counter() - self.t_train, 4)}
        self.totals.generate_s += out["generate_s"]  # the logged figures, so the totals are their sums
        self.totals.optimize_s += out["optimize_s"]
        if self.cfg.grpo.num_iterations > 1:
            out["generation_use"] = self.buffer.uses
        return out

    def eval_part(self, model, batch, idx, weight):  # pragma: no cover - GRPO has no held-out rows
        raise NotImplementedError

    # ------------------------------------------------------------ generation
    def _generate(self, rows: list[int], batches, generation: int) -> Buffer:
        import torch

        from tunelab.train.grpo_math import group_advantages

        g, live = self.cfg.grpo, self.live
        G, t0 = g.num_generations, time.perf_counter()
        prompts = [self.rows[i].prompt for i in rows for _ in range(G)]
        seeds = [seed_of(self.cfg.train.seed, generation, i, j) for i in rows for j in range(G)]
        model = live.unwrapped.model
        model.eval()  # no dropout while sampling
        try:
            raw = self.providers["rollout"](model, self.tokenizer, [p.text for p in prompts], seeds,
                                           self.sampling)
        finally:
            model.train()
        # any objects with these attributes (the engine's infer.rollout.Sample): train/ imports no engine
        outs = [Rollout(list(o.prompt_ids), list(o.completion_ids), o.text, bool(o.truncated)) for o in raw]
        if len(outs) != len(prompts):
            raise TunelabError(f"the grpo rollout function returned {len(outs)} completions for {len(prompts)} prompts")
        values = score(self.rewards, prompts, [o.text for o in outs], group=G)
        adv = group_advantages(torch.tensor(values), G, scale_rewards=g.scale_rewards,
                               weights=[r.weight for r in self.rewards], names=[r.name for r in self.rewards])
        self.totals.add_batch(adv.stats, len(rows), outs)
        per = lambda xs: {i: xs[k * G:(k + 1) * G] for k, i in enumerate(rows)}  # noqa: E731 - by prompt row
        # a reward's own numbers about this batch (a judge's unparsed ratings and cost: rollouts.py)
        own = {k: v for r in self.rewards if getattr(r, "stats", None) for k, v in r.stats().items()}
        stats = {**adv.stats, **length_stats(outs), **own, "sample_s": round(time.perf_counter() - t0, 4)}
        buf = Buffer(generation, rows, per([asdict(o) for o in outs]), per(adv.values.tolist()), per(values), stats)
        self._keep_logps(buf, batches)
        self._watch_flat(adv.stats["frac_reward_zero_std"])
        if live.main and (self.step - 1) % g.log_completions_every == 0:
            self._sample(buf, prompts[::G], outs)
        return buf

    def _keep_logps(self, buf: Buffer, batches) -> None:
        """The log-probs the later uses (old, num_iterations > 1) and the KL (ref, beta > 0) need,
        computed now, before any update, micro-batch by micro-batch."""
        import torch

        from tunelab.train.grpo_math import batch_forward

        g, live = self.cfg.grpo, self.live
        if g.num_iterations == 1 and not g.beta:
            return
        self.buffer = buf  # batch() reads it
        inner = live.unwrapped.model
        with torch.no_grad():
            for b in batches:
                mb = self.batch(self.rows, b, pad_id=live.pad_id, width=None).to(live.device)
                r = mb.rows
                if g.num_iterations > 1:
                    old, _ = batch_forward(live.unwrapped, r, live.attn)
                    _store(buf.old_logps, b, g.num_generations, old)
                if g.beta:
                    with inner.disable_adapter() if live.adapter else contextlib.nullcontext():
                        ref, _ = batch_forward(live.unwrapped, r, live.attn)
                    _store(buf.ref_logps, b, g.num_generations, ref)

    def _watch_flat(self, share: float) -> None:
        self.flat_steps = self.flat_steps + 1 if share >= FLAT_SHARE else 0
        if self.flat_steps == FLAT_STEPS:
            self.live.say(f"warning: at step {self.step}, {share:.0%} of the prompt groups got equal rewards "
                          f"for {FLAT_STEPS} generation batches in a row: no learning signal; use a graded reward, "
                          "more grpo.num_generations or a higher grpo.temperature (docs/training.md, GRPO)")

    def _sample(self, buf: Buffer, prompts, outs) -> None:
        from tunelab.train.accounting import append_row

        G = self.cfg.grpo.num_generations
        for k, i in enumerate(buf.prompts[:SAMPLE_PROMPTS]):
            for j in range(G):
                o = outs[k * G + j]
                append_row(self.live.run_dir / COMPLETIONS_FILE, {
                    "step": self.step, "prompt": prompts[k].text, "completion": o.text,
                    "reward": sum(r.weight * v for r, v in zip(self.rewards, buf.rewards[i][j])),
                    "rewards": dict(zip([r.name for r in self.rewards], buf.rewards[i][j])),
                    "advantage": buf.advantages[i][j], "truncated": o.truncated})

    def _rewind(self, generation: int) -> None:
        """A resumed run: drop completions.jsonl rows past the checkpoint, and take back the
        generation batch a checkpoint between two of its uses kept."""
        from tunelab.train.accounting import rewind_rows

        if self.live.main:
            rewind_rows(self.live.run_dir / COMPLETIONS_FILE, self.step - 1)
        totals = Totals.read(self.live.run_dir / TOTALS_FILE, self.step - 1)
        if totals is None and self.step > 1:  # a checkpoint written before the file existed
            self.live.say(f"note: {TOTALS_FILE} holds no totals for step {self.step - 1}; summary.json's GRPO "
                          "totals count this launch's steps only")
        self.totals = totals or Totals()
        buf = Buffer.read(self.buffer_path)
        if buf is not None and buf.generation == generation and buf.uses < self.cfg.grpo.num_iterations:
            self.buffer = buf

    # ------------------------------------------------------------ beside the run
    def save(self) -> None:
        if self.live.main and self.buffer is not None:
            self.buffer.write(self.buffer_path)
        if self.live.main:
            Totals.write(self.live.run_dir / TOTALS_FILE, self.step, self.totals)

    def summary(self) -> dict:
        # a reward's own totals beside the run's (a judge_score reward: {"judge": its cost, unparsed})
        own = {k: v for r in self.rewards if getattr(r, "summary", None) for k, v in r.summary().items()}
        return {**self.totals.summary(), **own}


def _padded(values: list[list[float]], shape):
    """(B, C) float tensor of per-completion lists, zero-padded."""
    import torch

    out = torch.zeros(shape, dtype=torch.float32)
    for k, v in enumerate(values):
        out[k, :len(v)] = torch.tensor(v, dtype=torch.float32)
    return out


def _store(into: dict, rows: list[int], G: int, logps) -> None:
    """Each completion's log-probs (the micro-batch's width, 0 past its end) under its prompt row."""
    logps = logps.float().cpu()
    for k, i in enumerate(rows):
        into[i] = [logps[k * G + j].tolist() for j in range(G)]
