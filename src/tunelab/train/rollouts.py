"""What GRPO's objective (objectives/grpo.py) exchanges with the layers above it, and the step's buffer.

train/ imports neither infer/ nor evaluate/ (docs/architecture.md), so the caller that starts a
GRPO run (cli/train.py, the compare) passes three providers to `train(providers=...)`:

    prompts(source) -> list[Prompt]                        the training prompts, rendered (a task file)
    rollout(model, tokenizer, texts, seeds, Sampling)      completions of the live model, one per text,
                                                           as objects with Rollout's attributes
    rewards: list[Reward]                                  each Reward(name, weight, fn(completion, item))

A reward may also score a whole generation batch at once (an LLM judge: one batched call, not one
per completion) with `batch(completions, items) -> list[float | None]`, where None means "not
scored" (the judge wrote no readable rating); `stats() -> dict` then gives numbers about its last
batch for the step's metrics line and `summary() -> dict` its totals for summary.json (both optional).

The buffer holds one generation batch: every completion of a step's prompts, their rewards and
advantages, and the log-probabilities the loss needs when the batch is used more than once
(num_iterations > 1) or a KL term is on. It is written beside the run with every checkpoint, so a
run resumed between two uses of one batch continues on the same completions. Totals counts the
whole run for summary.json (completions, tokens and seconds of generation, rewards at the start and
the end), kept beside the run at each checkpoint's step so a resumed run continues them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tunelab.errors import TunelabError
from tunelab.io import atomic_write_text


@dataclass(frozen=True)
class Prompt:
    """One training prompt: the text the model continues, and what the rewards score against."""

    text: str  # the prompt as the model sees it (chat template applied when the task asks for it)
    item: Any = None  # the task item (its fields and answer), handed to every reward
    name: str = ""  # where it came from, for errors (e.g. "task.yaml item 12")


@dataclass(frozen=True)
class Sampling:
    """How completions are sampled (grpo.temperature / top_p / max_completion_length / stop)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass
class Rollout:
    """One completion as the rollout function returns it."""

    prompt_ids: list[int]
    completion_ids: list[int]  # generated tokens, an end-of-sequence token included
    text: str  # the decoded completion (what the rewards read)
    truncated: bool  # stopped at max_tokens, not at an end token or a stop string


@dataclass(frozen=True)
class Reward:
    """One reward function with its weight; `fn(completion, item) -> float`."""

    name: str
    weight: float
    fn: Callable[[str, Any], float]


RolloutFn = Callable[[Any, Any, Sequence[str], Sequence[int], Sampling], list]


def score(rewards: Sequence[Reward], prompts: Sequence[Prompt], texts: Sequence[str],
          group: int = 1) -> list[list[float]]:
    """(N, K) rewards of completions `texts` (texts[i] answers prompts[i], in groups of `group` completions
    of one prompt); a reward that raises or returns no number is one line naming it and the completion."""
    columns = []
    for r in rewards:
        if getattr(r, "batch", None) is not None:
            columns.append(_batch_column(r, prompts, texts, group))
            continue
        column = []
        for p, text in zip(prompts, texts):
            try:
                v = float(r.fn(text, p.item))
            except Exception as e:  # noqa: BLE001 - any failure of user code becomes one line
                raise TunelabError(f"grpo reward {r.name} raised {type(e).__name__}: {e} on the completion "
                                   f"{text[:80]!r} of {p.name or 'a prompt'}; fix the reward or the task") from None
            _finite(r, v, text, p)
            column.append(v)
        columns.append(column)
    return [list(row) for row in zip(*columns)] if columns else [[] for _ in texts]


def _finite(r: Reward, v: float, text: str, p: Prompt) -> None:
    if v != v or v in (float("inf"), float("-inf")):
        raise TunelabError(f"grpo reward {r.name} gave {v} on the completion {text[:80]!r} of "
                           f"{p.name or 'a prompt'}; a reward must be a finite number")


def _batch_column(r: Reward, prompts: Sequence[Prompt], texts: Sequence[str], group: int) -> list[float]:
    """A batch reward's values; a completion it did not score gets the mean of its group's scored ones.

    That mean leaves the completion's advantage from this reward at 0: no push either way from a
    score that does not exist (0 would punish the policy for the judge's failure to answer; its
    group's scores are what it is compared with). A group with nothing scored takes the batch's mean
    (any constant gives it advantage 0; the mean keeps the logged reward a mean of real scores), and
    a batch with nothing scored 0.
    """
    try:
        got = list(r.batch(list(texts), [p.item for p in prompts]))
    except TunelabError:
        raise  # already one line (a judge that is down says so, and how to carry on)
    except Exception as e:  # noqa: BLE001 - any failure of user code becomes one line
        raise TunelabError(f"grpo reward {r.name} raised {type(e).__name__}: {e} on a batch of {len(texts)} "
                           "completions; fix the reward or the task") from None
    if len(got) != len(texts):
        raise TunelabError(f"grpo reward {r.name} gave {len(got)} values for {len(texts)} completions")
    for v, text, p in zip(got, texts, prompts):
        if v is not None:
            _finite(r, float(v), text, p)
    scored = [float(v) for v in got if v is not None]
    overall = sum(scored) / len(scored) if scored else 0.0
    out = []
    for start in range(0, len(got), group):
        part = got[start:start + group]
        known = [float(v) for v in part if v is not None]
        fill = sum(known) / len(known) if known else overall
        out += [fill if v is None else float(v) for v in part]
    return out


@dataclass
class Buffer:
    """One generation batch: G completions of each prompt of a step, grouped prompt by prompt."""

    generation: int  # which generation batch of the run (step - 1) // num_iterations
    prompts: list[int]  # prompt rows, in the step's order
    rollouts: dict[int, list[dict]]  # prompt row -> its G rollouts (asdict(Rollout))
    advantages: dict[int, list[float]]  # prompt row -> G advantages
    rewards: dict[int, list[list[float]]]  # prompt row -> (G, K) rewards
    stats: dict  # reward and completion statistics of the batch (logged with each use)
    old_logps: dict[int, list[list[float]]] = field(default_factory=dict)  # num_iterations > 1
    ref_logps: dict[int, list[list[float]]] = field(default_factory=dict)  # beta > 0
    uses: int = 0

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> Optional["Buffer"]:
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        ints = lambda d: {int(k): v for k, v in d.items()}  # noqa: E731 - JSON keys are strings
        for key in ("rollouts", "advantages", "rewards", "old_logps", "ref_logps"):
            data[key] = ints(data[key])
        return cls(**data)


def length_stats(rollouts: Sequence[Rollout]) -> dict:
    """Completion length mean / min / max and the share stopped at the length limit (TRL's names)."""
    n = [len(r.completion_ids) for r in rollouts]
    if not n:
        return {}
    return {"completions/mean_length": sum(n) / len(n), "completions/min_length": min(n),
            "completions/max_length": max(n),
            "completions/clipped_ratio": sum(r.truncated for r in rollouts) / len(rollouts)}


REWARD_WINDOW = 5  # generation batches averaged for summary.json's reward_start / reward_end


@dataclass
class Totals:
    """Whole-run counts of a GRPO run for summary.json (files.GRPO_SUMMARY_KEYS). Kept beside the run
    under the step of each checkpoint (TOTALS_FILE), so a resumed run counts from its checkpoint on
    and summary.json covers every launch, however metrics.jsonl is thinned (train.log_every)."""

    generations: int = 0  # generation batches sampled
    groups: int = 0  # prompt groups sampled (prompts × generation batches)
    flat_groups: int = 0  # groups whose rewards were all equal (no learning signal)
    completions: int = 0
    truncated: int = 0  # completions cut at max_completion_length
    generated_tokens: int = 0
    generate_s: float = 0.0  # the steps' generate_s, summed
    optimize_s: float = 0.0  # the steps' optimize_s, summed
    first_rewards: list[float] = field(default_factory=list)  # mean reward of the first generation batches
    last_rewards: list[float] = field(default_factory=list)  # ... and of the latest ones

    def add_batch(self, stats: dict, groups: int, rollouts: Sequence[Rollout]) -> None:
        """One generation batch: `stats` are its reward statistics (grpo_math.group_advantages)."""
        self.generations += 1
        self.groups += groups
        self.flat_groups += round(stats["frac_reward_zero_std"] * groups)  # a share of `groups`: exact
        self.completions += len(rollouts)
        self.truncated += sum(r.truncated for r in rollouts)
        self.generated_tokens += sum(len(r.completion_ids) for r in rollouts)
        if len(self.first_rewards) < REWARD_WINDOW:
            self.first_rewards.append(stats["reward"])
        self.last_rewards = (self.last_rewards + [stats["reward"]])[-REWARD_WINDOW:]

    def summary(self) -> dict:
        # the windows shrink on a short run so that start and end do not share a batch
        w = max(1, min(REWARD_WINDOW, self.generations // 2))
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        share = lambda a, b: a / b if b else None  # noqa: E731
        return {"generations": self.generations, "completions_generated": self.completions,
                "generated_tokens": self.generated_tokens,
                "generated_tokens_per_s": share(self.generated_tokens, self.generate_s),
                "generate_s": round(self.generate_s, 3), "optimize_s": round(self.optimize_s, 3),
                "reward_start": mean(self.first_rewards[:w]), "reward_end": mean(self.last_rewards[-w:]),
                "reward_window": w if self.generations else None,
                "frac_reward_zero_std": share(self.flat_groups, self.groups),
                "completions_clipped_ratio": share(self.truncated, self.completions)}

    @staticmethod
    def write(path: Path, step: int, totals: "Totals") -> None:
        """Add the totals at `step` to the file, dropping entries past it (a resumed run rewrote them)."""
        kept = {k: v for k, v in _read_json(path).items() if k.isdigit() and int(k) < step}
        atomic_write_text(path, json.dumps({**kept, str(step): asdict(totals)}))

    @classmethod
    def read(cls, path: Path, step: int) -> Optional["Totals"]:
        """The totals at checkpoint `step`, or None when the file does not hold them."""
        entry = _read_json(path).get(str(step))
        if not isinstance(entry, dict):
            return None
        known = {f.name for f in fields(cls)}  # a key another version wrote is left out
        return cls(**{k: v for k, v in entry.items() if k in known})


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, or torn by a kill mid-write (atomic writes make that rare)
        return {}
    return data if isinstance(data, dict) else {}
