"""The results contract (docs/results.md) in one place: `Results`, its builder, writer, reader, signature.

    res = build_results(task="dates", model=lm, n=len(lines), shots=3, metrics=scored,
                        cost=make_cost(wall_s, prompt_tokens=p, generated_tokens=g, peak_mem_mib=m),
                        signature=signature(lm, task_hash, shots="3", sampler="random"),
                        predictions=lines)
    write_results(res, "runs/e")           # predictions.jsonl, then results.json, both atomic
    finish_run(res, "runs/e", "eval")      # what a run does at its end: write (when out), record, return
    res = read_results("runs/e")           # a one-line TunelabError for a missing or damaged file
    res.items                              # {item id: {metric: float | None}} for paired tests

Everything that writes an evaluation folder (the runner, retrieval tasks, the bias and probe
benchmarks) builds its Results here, and everything that reads one (diff, compare, report) reads
it here, so the JSON shape and the signature cannot drift apart between them. Files written by
earlier versions (no `prompt_tokens` in `cost`, no `model` in the signature) still read: missing
cost keys come back as None.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from tunelab import __version__, paths
from tunelab.errors import TunelabError, where

# results.json's cost block: every key is always written (None where not measured).
COST_KEYS = ("wall_s", "tokens", "prompt_tokens", "generated_tokens", "tokens_per_s", "peak_mem_mib")

# What results.json and predictions.jsonl hold, key by key: docs/results.md is generated from these
# tables (scripts/gen_docs.py) and the golden tests check today's files carry exactly these keys.
RESULTS_KEYS = {
    "task": "the task's name",
    "model": "{name, sha256, adapter}: the model's name, the hash of its weights, the adapter folder (or null)",
    "n": "items scored",
    "shots": "demonstrations per prompt",
    "metrics": "{metric name: {value, stderr, ci95, signature, n}}, the task's metrics in its order",
    "cost": "what the evaluation cost (keys below)",
    "signature": "what produced the numbers: version, model, task hash, template, shots, sampler, seed, metrics",
    "skipped": "records of the data file the task's skip_bad left out: {count, first} (first: the first one's error, "
               "naming its file and line), or null",
}
METRIC_ENTRY_KEYS = {
    "value": "the score over all items",
    "stderr": "standard error: std / sqrt(n) for means; the bootstrap std for corpus metrics (BLEU, perplexity); "
              "null for one item or a count",
    "ci95": "[low, high]: 95% bootstrap confidence interval (1000 resamples, seeded)",
    "signature": "the metric and its settings, e.g. bleu|nrefs:1|case:mixed|tok:13a|...",
    "n": "items it was computed over",
}
COST_DOC = {
    "wall_s": "seconds, from start to the files written (model loading included)",
    "tokens": "prompt_tokens + generated_tokens",
    "prompt_tokens": "tokens the model read, demonstrations included",
    "generated_tokens": "tokens the model wrote",
    "tokens_per_s": "tokens / wall_s",
    "peak_mem_mib": "peak memory, MiB (null for an endpoint)",
}
# predictions.jsonl: one object per item. "every line" keys are on each line; each task type declares
# its own (its `prediction_keys`, in evaluate/task_types/); the safety benchmarks, which write the
# same two files, theirs here. task_types.prediction_keys() gives them all, in that order.
PREDICTION_KEYS = {
    "every line": {
        "id": "the item's `id` field, or its line number in the data file; unique",
        "prompt": "the full prompt the model saw (for perplexity the first 200 characters of the text)",
        "metrics": "{metric name: this item's value}; null where an item has none",
        "demos": "positions of the demonstrations in the pool, in prompt order (only when fewshot.k > 0)",
    },
    "safety bias crows_pairs": {
        "sent_more": "the more stereotyping sentence of the pair",
        "sent_less": "the less stereotyping one",
        "direction": "the data's stereo_antistereo label, kept as it is",
        "bias_type": "e.g. race-color, gender, age",
        "loglik_more": "summed log-likelihood of sent_more",
        "loglik_less": "summed log-likelihood of sent_less",
    },
    "safety bias bbq": {
        "choices": "the three answers",
        "choice_logliks": "summed log-likelihood of each answer after the prompt",
        "pred": "index of the likeliest answer",
        "gold": "index of the right answer",
        "category": "BBQ category, e.g. Age",
        "context_condition": "ambig or disambig",
        "question_polarity": "neg or nonneg",
        "unknown": "index of the 'cannot be determined' answer",
        "biased": "indices of the answers that follow the stereotype",
    },
    "safety probe": {
        "outputs": "the sampled continuations of the prompt",
        "toxicity": "toxicity score of each (0..1)",
        "refusal": "1.0 per output that reads as a refusal, else 0.0",
        "seeds": "the sampling seed of each",
        "finish": "why each ended: stop, eos or length",
        "new_tokens": "tokens generated for each",
    },
}

__all__ = ["Results", "build_results", "make_cost", "model_info", "task_sha256", "signature",
           "write_results", "read_results", "read_items", "record_run", "COST_KEYS", "RESULTS_KEYS",
           "PREDICTION_KEYS"]


@dataclass
class Results:
    """What results.json holds, plus the prediction lines and the folder they were read from or written to."""

    task: str
    model: dict  # {"name", "sha256", "adapter"}
    n: int
    shots: int
    metrics: dict  # {name: {"value", "stderr", "ci95", ...}}
    cost: dict  # COST_KEYS
    signature: str
    predictions: list[dict] = field(default_factory=list, repr=False)
    out: Optional[Path] = None
    skipped: Optional[dict] = None  # {"count", "first"}: records the task's skip_bad left out (data.readers.Skipped)

    def to_json(self) -> dict:
        return {"task": self.task, "model": self.model, "n": self.n, "shots": self.shots,
                "metrics": self.metrics, "cost": self.cost, "signature": self.signature, "skipped": self.skipped}

    def value(self, metric: str) -> Optional[float]:
        """The headline value of one metric (None if absent or not a number)."""
        entry = self.metrics.get(metric)
        v = entry.get("value") if isinstance(entry, dict) else entry
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    @property
    def items(self) -> dict[str, dict[str, Optional[float]]]:
        """Item id -> {metric: per-item value}, the input of a paired bootstrap (None: not a number)."""
        out: dict[str, dict[str, Optional[float]]] = {}
        for line in self.predictions:
            out[str(line.get("id"))] = _numbers(line.get("metrics") or {})
        return out


# ---------------------------------------------------------------- builder
def model_info(lm) -> dict:
    """The results.json `model` block of a LoadedModel (or anything with name / sha256 / adapter)."""
    adapter = getattr(lm, "adapter", None)
    return {"name": getattr(lm, "name", "model"), "sha256": getattr(lm, "sha256", None),
            "adapter": None if adapter is None else str(adapter)}


def make_cost(wall_s: float, *, prompt_tokens: int = 0, generated_tokens: int = 0,
              peak_mem_mib: Optional[float] = None) -> dict:
    """The cost block: prompt and generated tokens kept apart (a few-shot prompt's length is its cost)."""
    tokens = int(prompt_tokens) + int(generated_tokens)
    return {"wall_s": round(float(wall_s), 3), "tokens": tokens, "prompt_tokens": int(prompt_tokens),
            "generated_tokens": int(generated_tokens),
            "tokens_per_s": round(tokens / wall_s, 1) if wall_s > 0 and tokens else None,
            "peak_mem_mib": None if peak_mem_mib is None else round(float(peak_mem_mib), 1)}


def merge_costs(costs: list[dict[str, dict]]) -> dict[str, dict]:
    """Metrics' own costs ({"judge": {calls, tokens, wall_s, ...}}) summed by kind, for the cost block."""
    out: dict[str, dict] = {}
    for cost in costs:
        for kind, block in cost.items():
            into = out.setdefault(kind, {})
            for key, value in block.items():
                into[key] = round(into.get(key, 0) + value, 3) if isinstance(value, float) else into.get(key, 0) + value
    return out


def build_results(*, task: str, model: Any, n: int, shots: int, metrics: dict, cost: dict, signature: str,
                  predictions: Optional[list[dict]] = None) -> Results:
    """A checked Results; `model` is a LoadedModel or an already-made model block. The records the
    data's skip_bad left out are the reader's to tell: the caller sets `skipped` on the Results."""
    block = dict(model) if isinstance(model, dict) else model_info(model)
    for key in ("name", "sha256", "adapter"):
        block.setdefault(key, None)
    missing = [k for k in COST_KEYS if k not in cost]
    if missing:
        raise ValueError(f"cost block lacks {missing}; build it with make_cost()")  # a bug, not user input
    return Results(task=str(task), model=block, n=int(n), shots=int(shots), metrics=metrics, cost=dict(cost),
                   signature=signature, predictions=list(predictions or []))


# ---------------------------------------------------------------- signature
def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


LATER_KEYS = ("turns", "references")  # task keys newer than the hash (multi_turn's)


def task_sha256(task) -> str:
    """THE task hash: the task's settings plus the bytes of every file it names.

    `fewshot.k` and `fewshot.sampler` are left out because the signature carries them as their
    own fields; so a zero-shot and a 3-shot run of one task file share the task hash.
    """
    cfg = task.model_dump(mode="json", exclude={"base_dir"})
    fewshot = dict(cfg.get("fewshot") or {})
    fewshot.pop("k", None)
    fewshot.pop("sampler", None)
    cfg["fewshot"] = fewshot
    for key in LATER_KEYS:  # unset, a key added since leaves the hash as it was: older compare folders resume
        if cfg.get(key) is None:
            cfg.pop(key, None)
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode("utf-8"))
    for key in ("data", "corpus", "queries", "qrels"):
        spec = getattr(task, key, None)
        if spec:
            h.update(_file_hash(task, spec).encode())
    pool = getattr(getattr(task, "fewshot", None), "pool", None)
    if pool:
        h.update(_file_hash(task, pool).encode())
    refs = getattr(getattr(task, "references", None), "path", None)  # multi_turn's reference answers
    if refs:
        h.update(_file_hash(task, refs).encode())
    return h.hexdigest()


def _file_hash(task, spec: str) -> str:
    from tunelab.io import file_sha256

    try:
        path = task.resolve(spec)
    except Exception:  # builtin:<name> and other non-file specs: their text is the identity
        return _sha(str(spec))
    return file_sha256(path) if path is not None and Path(path).is_file() else _sha(str(spec))


def signature(model: Any, task_hash: str, **settings: Any) -> str:
    """tunelab VERSION|model NAME sha256:..[|adapter sha256:..]|task sha256:..|KEY VALUE|...

    `model` is a LoadedModel or a model block; `settings` keep their order (shots, sampler, seed,
    metric, ...). A value of None is written as `none`.
    """
    block = model if isinstance(model, dict) else model_info(model)
    parts = [f"tunelab {__version__}",
             f"model {block.get('name')} sha256:{(block.get('sha256') or 'none')[:16]}"]
    adapter_sha = None if isinstance(model, dict) else getattr(model, "adapter_sha256", None)
    if block.get("adapter") or adapter_sha:
        parts.append(f"adapter sha256:{(adapter_sha or _sha(str(block.get('adapter'))))[:16]}")
    parts.append(f"task sha256:{task_hash[:16]}")
    for key, value in settings.items():
        parts.append(f"{key.replace('_', ' ')} {'none' if value is None else value}")
    return "|".join(parts)


# ---------------------------------------------------------------- writer
def write_results(results: Results, out: Union[str, Path]) -> Path:
    """Write predictions.jsonl then results.json (both atomic) into `out`; returns `out`."""
    from tunelab.io import atomic_write_json, atomic_write_jsonl

    out = Path(out)
    # predictions first: a reader that finds results.json can trust the predictions beside it
    atomic_write_jsonl(out / paths.PREDICTIONS_FILE, results.predictions)
    atomic_write_json(out / paths.RESULTS_FILE, results.to_json())
    results.out = out
    return out


# ---------------------------------------------------------------- run registry
def record_run(results: Results, kind: str = "eval", *, name: Optional[str] = None) -> Optional[int]:
    """One row in the run registry (tunelab.runs) for a finished evaluation; never raises for the registry."""
    import time

    from tunelab import runs

    main = next(iter(results.metrics), None)
    model = results.model.get("name")
    if results.model.get("adapter"):
        model = f"{model} + {results.model['adapter']}"
    wall = results.cost.get("wall_s") or 0.0
    return runs.record(kind, name=name or (results.out.name if results.out else results.task), path=results.out,
                       task=results.task, model=model, metric=main, value=results.value(main) if main else None,
                       signature=results.signature, started=time.time() - wall)


def finish_run(results: Results, out: Optional[Union[str, Path]], kind: str) -> Results:
    """How every evaluation-shaped run ends (eval, retrieval, probe, bias): write results.json and
    predictions.jsonl when `out` is given, record the run in the registry, return the results."""
    if out is not None:
        write_results(results, out)
    record_run(results, kind)
    return results


# ---------------------------------------------------------------- reader
def _numbers(metrics: dict) -> dict[str, Optional[float]]:
    return {name: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None)
            for name, v in metrics.items()}


def _load_json(path: Path, folder: Path) -> Any:
    if not path.is_file():
        raise TunelabError(f"{path}: not found; is {folder} an evaluation output (tunelab eval --out DIR)?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise TunelabError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); re-run the evaluation") from None
    except ValueError as e:
        raise TunelabError(f"{path}: not valid JSON ({e}); the file is damaged, re-run the evaluation") from None


def read_predictions(folder: Union[str, Path]) -> list[dict]:
    """The lines of predictions.jsonl; each must be a JSON object with a unique `id` and a `metrics` mapping."""
    folder = Path(folder)
    path = folder / paths.PREDICTIONS_FILE
    if not path.is_file():
        raise TunelabError(f"{path}: not found; is {folder} an evaluation output (tunelab eval --out DIR)?")
    from tunelab.data.readers import read_rows

    lines, seen = [], set()
    for r in read_rows(path, hint="each line must be one JSON object"):
        row = r.data
        if not isinstance(row, dict) or "id" not in row:
            raise TunelabError(f"{where(path, r.line, 'id')}: each line needs an 'id'")
        if not isinstance(row.get("metrics"), dict):
            raise TunelabError(f"{where(path, r.line, 'metrics')}: each line needs a 'metrics' mapping {{name: value}}")
        key = str(row["id"])
        if key in seen:
            raise TunelabError(f"{where(path, r.line, 'id')}: id {key!r} appears twice")
        seen.add(key)
        lines.append(row)
    return lines


def read_items(folder: Union[str, Path]) -> dict[str, dict[str, Optional[float]]]:
    """Item id -> {metric: per-item value} from predictions.jsonl (paired bootstrap input)."""
    items = {str(row["id"]): _numbers(row["metrics"]) for row in read_predictions(folder)}
    if not items:
        raise TunelabError(f"{Path(folder) / paths.PREDICTIONS_FILE}: no items")
    return items


def read_results(folder: Union[str, Path], *, predictions: bool = True) -> Results:
    """Results from `folder`/results.json (+ predictions.jsonl unless predictions=False).

    Old files read too: a missing cost key is None, a missing model block is all None.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TunelabError(f"{folder}: no such folder; give an evaluation output folder (tunelab eval --out DIR)")
    path = folder / paths.RESULTS_FILE
    data = _load_json(path, folder)
    if not isinstance(data, dict):
        raise TunelabError(f"{path}: expected a JSON object (docs/results.md), got {type(data).__name__}")
    if not isinstance(data.get("metrics"), dict):
        raise TunelabError(f"{where(path, field='metrics')}: missing or not a mapping of metric -> result; re-run the evaluation")
    model = data.get("model")
    if isinstance(model, str):  # a bare name
        model = {"name": model}
    model = dict(model or {})
    for key in ("name", "sha256", "adapter"):
        model.setdefault(key, None)
    cost = dict(data.get("cost") or {})
    for key in COST_KEYS:
        cost.setdefault(key, None)
    lines = read_predictions(folder) if predictions else []
    n = data.get("n")
    return Results(task=str(data.get("task", folder.name)), model=model,
                   n=int(n) if isinstance(n, (int, float)) else len(lines), shots=int(data.get("shots") or 0),
                   metrics=data["metrics"], cost=cost, signature=str(data.get("signature") or ""),
                   predictions=lines, out=folder, skipped=data.get("skipped") or None)
