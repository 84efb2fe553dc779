"""GRPO's prompts and rewards from a task file, and its rollout function: the providers of method: grpo.

train/ imports neither the engine nor the metrics (docs/architecture.md), so the layer that starts
a run builds what GRPO needs here and passes it to `train(providers=...)`:

    prompts    the task's items, each rendered by its `prompt` template (chat template when the
               task says chat: true), with the item's references for the rewards
    rewards    grpo.rewards: registry metrics scored against the task's `answer`, a Python
               `module:function` called as f(completion, item) -> float, or judge_score: an LLM
               judge's 1-10 rating rescaled to (rating - 1) / 9 in [0, 1]; weighted and summed
    rollout    infer.rollout.sample: the engine sampling on the live model

Where the task comes from: grpo.task (a task YAML or builtin:<name>); else data.train when it is a
task YAML; else data.train is a data file (or builtin:<name>?n=...) of records with a `prompt`,
whose `completion` or `answer` field (when present) is the reference.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from tunelab.config import TaskConfig, TrainConfig
from tunelab.errors import TunelabError

JUDGE_REWARD = "judge_score"  # an LLM judge's rating: judged a generation batch at a time (JudgeReward)
# metrics that score one generated answer on its own, and the judge's
REWARD_METRICS = ("exact_match", "numeric", "numeric_strict", "numeric_flexible", "contains", "regex", "valid_json",
                  "json_schema", "f1", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", JUDGE_REWARD)
UNPARSED_WARN = 0.25  # a batch with this share of unreadable judgments or more: warn once (little signal)
AGAIN = ("the run stopped, its last checkpoint kept (train.save_every): start the judge again and resume with "
         "tunelab train CONFIG --resume (in a compare: run the compare again)")
log = logging.getLogger("tunelab.evaluate")
NO_ANSWER = ("regex", "valid_json", "json_schema")  # judge the answer's form: no reference needed


@dataclass(frozen=True)
class TaskPrompt:
    """One training prompt (train/rollouts.py's Prompt has the same attributes)."""

    text: str
    item: dict  # {"gold": [references], "fields": the record}
    name: str  # the record, for errors


@dataclass(frozen=True)
class RewardFunction:
    """A reward (train/rollouts.py's Reward has the same attributes): fn(completion, item) -> float."""

    name: str
    weight: float
    fn: Callable[[str, Any], float]


def grpo_task(cfg: TrainConfig, base_dir) -> TaskConfig:
    """The task whose prompts GRPO trains on (see the module docstring)."""
    from tunelab.config import load_task
    from tunelab.evaluate.tasks import builtin_task

    spec = cfg.grpo.task or cfg.data.train
    key = "grpo.task" if cfg.grpo.task else "data.train"
    if spec.startswith("builtin:"):
        name = spec.split("?")[0]
        task = builtin_task(name)
        if not cfg.grpo.task:  # the training records, as the task's items
            task = task.model_copy(update={"data": spec, "split": None})
        return task
    path = _beside(spec, base_dir)
    if Path(path).suffix in (".yaml", ".yml"):
        if not Path(path).is_file():
            raise TunelabError(f"{key}: task file {spec} not found (looked beside the config, in {base_dir}, and in "
                               "the current folder); check the path")
        return load_task(path)
    if cfg.grpo.task:
        raise TunelabError(f"grpo.task: {spec} is not a task YAML (.yaml) or builtin:<name>; docs/training.md, GRPO")
    from tunelab.data.load import load_rows

    first = load_rows(path, base_dir=base_dir)[:1]
    fields = first[0].data if first else {}
    answer = next((f"{{{{ {f} }}}}" for f in ("completion", "answer") if f in fields), None)
    return TaskConfig(name=Path(path).stem, data=str(Path(path).resolve()), prompt="{{ prompt }}", answer=answer,
                      chat=True, metrics=["exact_match"])


def _beside(spec: str, base_dir) -> str:
    """A relative path beside the config when it is there, else as given (train's rule, inputs.data_path)."""
    p = Path(spec)
    if base_dir is not None and not p.is_absolute() and (Path(base_dir) / p).exists():
        return str(Path(base_dir) / p)
    return spec


def check_sampled(task: TaskConfig) -> str:
    """The task's name for messages; a one-line error when GRPO cannot sample its answers (checked
    again where the prompts are rendered, and first by `providers`, before any model loads)."""
    from tunelab.evaluate.task_types import task_type

    where = task.source or f"task '{task.name}'"
    tt = task_type(task)
    if "generation" not in tt.needs(task) or tt.conversation:  # one completion sampled per rendered prompt
        raise TunelabError(f"{where}: method: grpo samples answers, and this task is type: {task.type}; "
                           "use a type: generate task")
    return where


def task_prompts(task: TaskConfig, tokenizer) -> list[TaskPrompt]:
    """Every item of the task, rendered as an evaluation renders it (zero-shot)."""
    from tunelab.evaluate.prompts import TaskTemplates
    from tunelab.evaluate.runner import load_task_rows
    from tunelab.fewshot import ContextBuilder

    where = check_sampled(task)
    templates = TaskTemplates(task, where)
    builder = ContextBuilder(task, templates, [], k=0, sampler="first_n", seed=0, pool_is_eval=True,
                             tokenizer=tokenizer)
    out = []
    for row in load_task_rows(task):
        r = templates.render(row)
        refs = r.gold if isinstance(r.gold, list) else ([] if r.gold is None else [r.gold])
        # question: the item's own prompt, which a judge reads (as in an evaluation: task_types/generate.py)
        item = {"gold": refs, "fields": row.data, "question": r.prompt, "id": str(row.source)}
        out.append(TaskPrompt(builder.build(row, r.prompt).text, item, str(row.source)))
    return out


def reward_functions(cfg: TrainConfig, task: TaskConfig, base_dir) -> list[RewardFunction]:
    """grpo.rewards as functions; none given: the task's first metric, weight 1."""
    specs = cfg.grpo.rewards or [{"metric": m if isinstance(m, str) else next(iter(m)),
                                  **({} if isinstance(m, str) else (next(iter(m.values())) or {}))}
                                 for m in task.metrics[:1]]
    out = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):  # a RewardSpec: its judge: block as written (unset keys fall back to the task's)
            judge = spec.judge.model_dump(exclude_unset=True) if spec.judge is not None else None
            spec = {k: v for k, v in spec.model_dump(exclude_none=True).items() if k != "judge"}
            spec.update({} if judge is None else {"judge": judge})
        key = f"grpo.rewards[{i}]"
        if spec.get("function"):
            fn = _function(spec["function"], key, base_dir)
            out.append(RewardFunction(spec["function"], spec.get("weight", 1.0), fn))
        elif spec.get("metric") == JUDGE_REWARD:
            out.append(judge_reward(spec, task, key, cfg, base_dir))
        elif spec.get("judge") is not None:
            raise TunelabError(f"{key}: judge: is a setting of metric: {JUDGE_REWARD}, not of {spec.get('metric')}; "
                               "remove it")
        else:
            out.append(_metric_reward(spec, task, key))
    names = [r.name for r in out]
    if len(set(names)) < len(names):
        raise TunelabError(f"grpo.rewards: {names} name a reward twice; give each once")
    return out


def _metric_reward(spec: dict, task: TaskConfig, key: str) -> RewardFunction:
    from tunelab.evaluate.metrics.registry import get_metric

    name = spec["metric"]
    options = {k: v for k, v in spec.items() if k not in ("metric", "weight", "function")}
    if name not in REWARD_METRICS:
        raise TunelabError(f"{key}: metric {name} does not score one generated answer; a reward metric is one of "
                           f"{', '.join(REWARD_METRICS)} (or function: module:function)")
    needs_answer = name not in NO_ANSWER and not (name == "contains" and options.get("needle"))
    if needs_answer and not task.answer:
        raise TunelabError(f"{key}: metric {name} compares with the task's answer, and {task.source or task.name} has "
                           "no answer template; add answer: to the task, or use regex / valid_json / json_schema")
    metric = get_metric({name: options})

    def reward(completion: str, item) -> float:
        gold = item.get("gold", []) if isinstance(item, dict) else []
        return float(metric.aggregate([metric.item_score(completion, gold, item)]))

    return RewardFunction(name, spec.get("weight", 1.0), reward)


def _function(spec: str, key: str, base_dir) -> Callable:
    module, _, attr = spec.partition(":")
    added = base_dir is not None and str(base_dir) not in sys.path
    if added:
        sys.path.insert(0, str(base_dir))  # a module beside the config (and what it imports from there)
    beside = Path(base_dir) / f"{module.replace('.', '/')}.py" if base_dir is not None else None
    try:
        if beside is not None and beside.is_file():
            # that file, even when a module of the same name was imported before (another config's
            # rewards in the same process): import_module would hand back the cached one
            found = importlib.util.spec_from_file_location(module, beside)
            loaded = importlib.util.module_from_spec(found)
            sys.modules[module] = loaded
            try:
                found.loader.exec_module(loaded)
            except BaseException:
                sys.modules.pop(module, None)  # no half-run module left for a later import to find
                raise
        else:
            loaded = importlib.import_module(module)
        fn = getattr(loaded, attr, None)
    except (ImportError, SyntaxError) as e:
        raise TunelabError(f"{key}: cannot import {module} ({e}); put {module}.py beside the config") from None
    finally:
        if added:
            sys.path.remove(str(base_dir))
    if not callable(fn):
        raise TunelabError(f"{key}: {module} has no function {attr}")
    return fn


class JudgeReward:
    """judge_score as a GRPO reward: every completion of a generation batch judged in one batched, cached
    call (a local judge through its engine's batching, an endpoint `judge.concurrency` requests at once),
    the 1-10 rating rescaled to (rating - 1) / 9. A completion whose judgment holds no readable rating
    is None: train/rollouts.py gives it its group's mean (advantage 0), and it is counted per step
    (judge_unparsed) and in summary.json."""

    def __init__(self, name: str, weight: float, metric):
        self.name, self.weight, self.metric = name, weight, metric  # metric: a JudgeScore, for_task done
        self.last: dict = {}
        self.unparsed, self.warned = 0, False

    def fn(self, completion: str, item) -> float:
        """One completion alone (GRPO calls `batch`); an unreadable rating scores 0 here."""
        v = self.batch([completion], [item])[0]
        return 0.0 if v is None else v

    def batch(self, completions: list[str], items: list) -> list[Optional[float]]:
        from tunelab.evaluate.judge.parse import parse_rating

        judge = self.metric._judge()
        before = judge.cost.to_json()
        refs = [it.get("gold", []) if isinstance(it, dict) else [] for it in items]
        its = [it if isinstance(it, dict) else {} for it in items]
        texts = judge.run(self.metric.requests(completions, refs, its), again=AGAIN)
        ratings = [parse_rating(t) for t in texts]
        now = judge.cost.to_json()
        missed = sum(r is None for r in ratings)
        self.unparsed += missed
        self.last = {"judge_unparsed": missed, "judge_calls": now["calls"] - before["calls"],
                     "judge_cached": now["cached"] - before["cached"], "judge_tokens": now["tokens"] - before["tokens"],
                     "judge_s": round(now["wall_s"] - before["wall_s"], 4)}
        if missed and missed >= UNPARSED_WARN * len(ratings) and not self.warned:
            self.warned = True
            first = next(t for t, r in zip(texts, ratings) if r is None)
            log.warning(f"grpo reward {self.name}: the judge {self.metric.cfg.model} wrote no readable [[rating]] for "
                        f"{missed} of {len(ratings)} completions; each gets its group's mean (no signal from the "
                        f"judge; counted as judge_unparsed in metrics.jsonl); the first said: {first[:120]!r}")
        return [None if r is None else (r - 1) / 9 for r in ratings]

    def stats(self) -> dict:
        return dict(self.last)

    def summary(self) -> dict:
        return {"judge": {**self.metric._judge().cost.to_json(), "unparsed": self.unparsed}}


def judge_reward(spec: dict, task: TaskConfig, key: str, cfg: TrainConfig, base_dir) -> JudgeReward:
    """grpo.rewards[i] with metric: judge_score: the task's judge: block, the reward's judge: keys over it."""
    from tunelab.config import JudgeConfig
    from tunelab.evaluate.metrics.judge import NO_JUDGE
    from tunelab.evaluate.metrics.registry import get_metric

    extra = sorted(set(spec) - {"metric", "weight", "judge"})
    if extra:
        raise TunelabError(f"{key}: metric {JUDGE_REWARD} takes weight and judge: {{...}}, not {', '.join(extra)}; "
                           "the judge's settings go in its judge: block (docs/judge.md)")
    own = spec.get("judge") or {}
    own = own if isinstance(own, dict) else own.model_dump(exclude_unset=True)
    if own.get("template"):  # the reward's own template: relative to the training config
        own["template"] = str(Path(_beside(own["template"], base_dir)).resolve())
    merged = {**(task.judge.model_dump() if task.judge else {}), **own}
    merged.pop("check", None)  # judge.check is measured by an evaluation or `tunelab judge agreement`, not here
    if not merged.get("model"):
        raise TunelabError(f"{key}: metric {JUDGE_REWARD} needs a judge model; {NO_JUDGE} (or in this reward: "
                           f"{{metric: {JUDGE_REWARD}, judge: {{model: ...}}}})")
    if merged.get("reference") and not task.answer:
        raise TunelabError(f"{key}: judge.reference: true shows the judge the task's answer, and "
                           f"{task.source or task.name} has no answer template; add answer: to the task or drop it")
    metric = get_metric(JUDGE_REWARD)
    try:
        metric.for_task(task.model_copy(update={"judge": JudgeConfig(**merged)}))  # checks template, opens an endpoint
    except TunelabError as e:
        raise TunelabError(f"{key}: {e}") from None
    if same_weights(cfg.model, merged["model"]):
        log.warning(f"{key}: the judge {merged['model']} is the base model being trained (loaded apart from the "
                    "policy, with the weights it started from): models tend to rate answers like their own higher "
                    "(self-preference), so the policy may learn the judge's taste; a different judge is safer "
                    "(docs/judge.md)")
    return JudgeReward(JUDGE_REWARD, spec.get("weight", 1.0), metric)


def same_weights(a: str, b: str) -> bool:
    """Two model strings name the same weights: a registry name or alias, its folder, or a path (the
    judge's self-preference check here and in a compare: compare/judge.py)."""
    from tunelab.infer.endpoint import is_endpoint
    from tunelab.models import registry

    def norm(x: str) -> str:
        name = None if is_endpoint(x) else registry.canonical(x)
        p = registry.cached_dir(name) if name is not None else Path(x).expanduser()
        return str(p.resolve()) if name is not None or p.exists() else x.rstrip("/")
    return norm(a) == norm(b)


def providers(cfg: TrainConfig, base_dir: Optional[str | Path]) -> dict:
    """{prompts, rollout, rewards} for train(providers=...) of a run whose objective needs them (grpo)."""
    from tunelab.infer.rollout import sample

    task = grpo_task(cfg, base_dir)
    check_sampled(task)  # before the model loads
    return {"prompts": lambda source: task_prompts(task, source.tokenizer), "rollout": sample,
            "rewards": reward_functions(cfg, task, base_dir)}
