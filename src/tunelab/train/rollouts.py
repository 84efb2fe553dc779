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
run resumed between two uses of one batch continues on the same completions.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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
