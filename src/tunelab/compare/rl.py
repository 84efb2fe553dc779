"""GRPO arms of a compare: `grpo: {n: [64]}` trains on n prompts of the pool, rewarded on the compare's own task.

    rl.is_rl(arm)                        # the arm's method needs a rollout and rewards (method: grpo)
    rl.complete(plan, arm, cfg)          # the arm's training config, with what it takes from the task
    rl.providers(plan, arm)              # {prompts, rollout, rewards} for train(providers=...)

An SFT arm learns the pool's answers; a GRPO arm sees only the pool's prompts, rendered exactly as
the test prompts are (the task's `prompt` template, its chat template and system prompt, zero-shot:
evaluate/rewards.py task_prompts), samples G answers of each on the live weights and is rewarded by
the task's metrics against each record's `answer`. So both arms of one n draw on the same n records
(the nested subsets of plan.subset), and the rewards measure what the table measures.

What the arm takes from the compare unless its `train:` (or the compare's) sets it:
  grpo.rewards                   the compare's metric (with the task's options for it) when that
                                 metric can score one answer (evaluate/rewards.py REWARD_METRICS);
                                 else the plan refuses in one line, asking for grpo.rewards
  grpo.max_completion_length     the task's generation.max_new_tokens: the length the test answers
  grpo.stop                      get, and where they stop (generation.stop)
  data.train                     data/pool-nN.jsonl: the n pool records as they are (the prompts'
                                 source, so config.yaml names what the arm trained on)

The providers are built here, in the layer that starts the run (train/ imports neither the engine
nor the metrics), every time the arm's training starts or resumes, in-process as every arm of a
compare runs (also one `tunelab compare --arm ID` worker): no task file is written for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

DATA_DIR = "data"  # plan.DATA_DIR (plan.py imports this module, so the name is repeated, not imported)


def is_rl(arm) -> bool:
    """The arm trains from rewards on its own samples: its objective needs providers from the compare."""
    from tunelab.train.objectives import methods

    m = methods().get(arm.method)
    return m is not None and bool(m.objective.needs)


def pool_path(plan, n: int) -> Path:
    """data/pool-nN.jsonl: the GRPO arm's n pool records, unrendered (its prompts are rendered from them)."""
    return plan.out / DATA_DIR / f"pool-n{n}.jsonl"


def write_pools(plan) -> None:
    from tunelab.io import atomic_write_jsonl

    for n in sorted({a.n for a in plan.arms if is_rl(a)}):
        path = pool_path(plan, n)
        if not path.is_file():
            atomic_write_jsonl(path, [row.data for row in plan.subset(n)])


def task_of(plan, n: int):
    """The compare's task with the arm's pool records as its items: its templates render the prompts
    and its answer is what the rewards score against."""
    return plan.task.model_copy(update={"data": str(pool_path(plan, n).resolve()), "split": None})


def metric_reward(plan) -> dict | None:
    """The compare's metric as a grpo reward spec ({metric, weight, options}), or None when it cannot be one."""
    from tunelab.evaluate.rewards import REWARD_METRICS

    if plan.metric not in REWARD_METRICS:
        return None
    for m in plan.task.metrics:
        name = m if isinstance(m, str) else next(iter(m))
        if name == plan.metric:
            options = {} if isinstance(m, str) else dict(next(iter(m.values())) or {})
            return {"metric": name, "weight": 1.0, **options}
    return {"metric": plan.metric, "weight": 1.0}


def complete(plan, arm, cfg: dict) -> dict:
    """The GRPO arm's training config: what it takes from the compare's task (module docstring) filled in
    where the compare's and the arm's train: keys left it unset."""
    gen = plan.task.generation
    grpo = dict(cfg.get("grpo") or {})
    grpo.setdefault("max_completion_length", gen.max_new_tokens)
    grpo.setdefault("stop", list(gen.stop))
    if not grpo.get("rewards"):
        reward = metric_reward(plan)
        if reward is not None:
            grpo["rewards"] = [reward]
    data = {k: v for k, v in cfg["data"].items() if k != "format"}  # the pool file is read by the task, not as training data
    data["train"] = str(pool_path(plan, arm.n).resolve())
    return {**cfg, "grpo": grpo, "data": data}


def check(plan) -> None:
    """Every GRPO arm can run (one line naming the arm and what to change): the task generates answers,
    the pool renders through its prompt template, there is a reward, the rewards and the objective's
    own settings are valid. make_plan calls it, so --dry-run and the first arm never meet these."""
    from tunelab.compare.render import TASK
    from tunelab.config import TrainConfig, build
    from tunelab.evaluate.rewards import REWARD_METRICS, reward_functions
    from tunelab.evaluate.task_types import task_type
    from tunelab.train.objectives import get_method

    for arm in (a for a in plan.arms if is_rl(a)):
        where = f"{plan.source}: {arm.where}"
        if "generation" not in task_type(plan.task).needs(plan.task):
            raise TunelabError(f"{where}: a {arm.method} arm samples answers and rewards them, and task "
                               f"'{plan.task.name}' is a {plan.task.type} task, which generates none; use a "
                               "type: generate task or drop the arm")
        if plan.rendering is None or plan.rendering.mode != TASK:
            raise TunelabError(f"{where}: a {arm.method} arm's prompts are the task's prompt template over pool "
                               f"records, and the pool {plan.config.train_data} does not render through it "
                               f"({plan.rendering.note if plan.rendering else 'no rendering'}); give a pool with the "
                               "task's fields")
        cfg = build(TrainConfig, plan.train_config(arm), f"{where} (training config)")
        if cfg.grpo.task:  # the prompts are the compare's task's, over the arm's pool records
            raise TunelabError(f"{where}: grpo.task: {cfg.grpo.task} is not used in a compare, whose arms train on "
                               "its own task's prompts over the pool (task: and train_data:); remove grpo.task")
        if not cfg.grpo.rewards:
            raise TunelabError(f"{where}: the compare's metric {plan.metric} cannot be a reward (one of "
                               f"{', '.join(REWARD_METRICS)} can); set the reward in the arm's train:, e.g. "
                               "train: {grpo: {rewards: [{metric: exact_match}]}}")
        try:
            reward_functions(cfg, task_of(plan, arm.n), plan.base_dir)
            get_method(cfg.method).objective.check(cfg)
        except TunelabError as e:
            raise TunelabError(f"{where}: {e}") from None


def providers(plan, arm) -> dict[str, Any]:
    """What the arm's objective needs from the compare ({} for an arm that needs nothing):
    evaluate/rewards.py's prompts and rewards over the arm's pool records, and the engine's rollout."""
    if not is_rl(arm):
        return {}
    from tunelab.config import TrainConfig
    from tunelab.evaluate.rewards import reward_functions, task_prompts
    from tunelab.infer.rollout import sample

    cfg = TrainConfig.model_validate(plan.train_config(arm))
    task = task_of(plan, arm.n)
    return {"prompts": lambda source: task_prompts(task, source.tokenizer), "rollout": sample,
            "rewards": reward_functions(cfg, task, plan.base_dir)}


def first_example(plan, arm, tokenizer, test_row) -> str:
    """first_example.txt of a GRPO arm: its first training prompt (what the rollouts continue) above the
    first test prompt, each as the model sees it."""
    from tunelab.evaluate.rewards import task_prompts
    from tunelab.evaluate.task_types import task_type

    first = task_prompts(task_of(plan, arm.n), tokenizer)[0]
    tt = task_type(plan.task)
    prompt = tt.test_prompt(tokenizer, plan.task, tt.templates(plan.task, plan.source), test_row)
    return (f"# first training prompt ({first.name}), as the {arm.method} arm samples its answers to it; rewarded "
            f"against its answer {first.item['gold'][:1]}\n{first.text}\n\n"
            f"# first test prompt ({test_row.source}), as the evaluation feeds it\n{prompt}\n")


__all__ = ["is_rl", "complete", "check", "providers", "write_pools", "pool_path", "task_of", "first_example"]
