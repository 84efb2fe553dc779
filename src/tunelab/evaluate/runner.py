"""`evaluate(model, task, ...)`: run one task on one model and write results.json + predictions.jsonl.

    res = evaluate("default", "examples/tasks/bbq.yaml", limit=200, out="runs/bbq")
    res.metrics["acc"]["value"], res.signature

The flow, top to bottom: resolve the task -> load rows (split, limit, this process's shard) ->
build the demonstrations -> the task's type (evaluate/task_types/, one module each) renders and runs
its items through the Backend and the optional request cache -> gather shards -> score every metric
with stderr and a bootstrap CI -> write the two artifacts atomically (docs/results.md). A type that
runs no model (retrieval) does its whole evaluation itself.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from tunelab import logs
from tunelab.errors import ParameterError, TunelabError, on_interrupt
from tunelab.evaluate import results as results_mod
from tunelab.evaluate import shard as shard_mod
from tunelab.evaluate.cache import STORE_EVERY, RequestCache
from tunelab.evaluate.results import Results, write_results  # noqa: F401  (re-exported: older imports)
from tunelab.evaluate.task_types import Job, task_source, task_type
from tunelab.evaluate.tasks import resolve_task
from tunelab.io import check_writable
from tunelab.progress import counter

log = logging.getLogger("tunelab.evaluate")
_task_source = task_source  # the name older callers (and tests) import from here


# ---------------------------------------------------------------- inputs

def load_task_rows(task, spec: Optional[str] = None, skipped=None) -> list:
    """The task's records (or another file's, e.g. the demo pool), after `split`; with the task's
    skip_bad, unreadable records are left out and counted in `skipped` (data.readers.Skipped)."""
    from tunelab.data.load import load_rows

    spec = spec if spec is not None else task.data
    if not spec:
        raise TunelabError(f"task '{task.name}': no 'data' file given; add data: path/to/file.jsonl (docs/tasks.md)")
    rows = load_rows(spec, base_dir=task.base_dir, hint=_bad_record_hint(task), skip_bad=task.skip_bad,
                     named_in=task.source, skipped=skipped)
    if spec == task.data and task.split:
        a, b = (int(x) if x.strip() else None for x in task.split.split(":"))
        rows = rows[a:b]
        if not rows:
            raise TunelabError(f"task '{task.name}': split '{task.split}' selects no records of {spec}")
    return rows


def _bad_record_hint(task) -> str:
    return f"fix that record of the data of {task_source(task)}, or set skip_bad: true there to skip bad records"


def check_batch_size(batch_size) -> Union[int, str]:
    """'auto', or a whole number >= 1 (an int or its digits as a string, as the CLI passes it)."""
    if batch_size in (None, "auto"):
        return "auto"
    if isinstance(batch_size, str) and batch_size.strip().isdigit():
        batch_size = int(batch_size)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ParameterError(f"{{batch_size}} must be a whole number >= 1 or 'auto', got {batch_size!r}", "batch_size")
    return batch_size


def _batch(batch_size, default: Optional[int], device) -> int:
    """The batch size: the given one, or the task type's default on CPU (x4 on a GPU)."""
    if batch_size in (None, "auto"):
        on_gpu = device is not None and getattr(device, "type", str(device)) != "cpu"
        return (default or 8) * (4 if on_gpu else 1)
    return check_batch_size(batch_size)


# ---------------------------------------------------------------- the verb
@dataclass
class EvalOptions:
    """How to evaluate: every keyword of `evaluate()` (see its docstring), as one typed object."""

    adapter: Optional[str] = None
    reference: Any = None  # a name, folder or LoadedModel: the model reward_acc measures against
    shots: Optional[int] = None
    sampler: Optional[str] = None
    limit: Optional[int] = None
    batch_size: Union[int, str] = "auto"
    out: Optional[Union[str, Path]] = None
    cache: Union[bool, str, Path] = False
    device: Optional[str] = None
    response_metrics: bool = True
    toxicity: Optional[Callable[[list[str]], Sequence[float]]] = None
    progress: Optional[Callable[[int, int], None]] = None


@dataclass
class _Run:
    """One evaluation under way: what the last steps (score, write) need to know."""

    task: Any
    task_type: Any
    metrics: list
    opts: EvalOptions
    t0: float
    backend: Any = None
    no_reference: Optional[str] = None  # why reference metrics are not computed (None: they are, or none asked)
    skipped: Any = None  # data.readers.Skipped: what the task's skip_bad left out (warned; results.json)


def evaluate(model, task, options: Optional[EvalOptions] = None, **keywords) -> Optional[Results]:
    """Evaluate `model` (name, folder, LoadedModel or `openai:URL#NAME`) on `task` (TaskConfig, YAML path, builtin:<name>).

    Options come as keywords (`evaluate(m, t, limit=200, out="runs/x")`) or as an EvalOptions (keywords
    given too override its fields): adapter, reference, shots, sampler, limit, batch_size ("auto" or
    a whole number), out, cache, device, response_metrics, toxicity, progress.

    `cache=True` uses $TUNELAB_HOME/cache.sqlite (a path picks another file). `progress(done, total)`
    is called as items finish. `reference` (a name, folder or LoadedModel) is the model that
    implicit-reward metrics (reward_acc) measure against: the model a full-weights DPO fine-tune
    started from; base + adapter needs none (its reference is the base). `toxicity(texts) -> scores`
    fills each generated output's toxicity (e.g. tunelab.safety.toxicity.toxicity_scores; None
    leaves it empty). Under `accelerate launch` items are sharded; rank 0 returns the Results and
    writes the files, other ranks return None.
    """
    opts = replace(options or EvalOptions(), **keywords)  # an unknown keyword is a TypeError, as before
    t0 = time.perf_counter()
    task = resolve_task(task)
    tt = task_type(task)
    if opts.out is not None:
        check_writable(opts.out, setting="out")  # before the model loads, not after the work
    _check_options(task, opts)
    if not tt.runs_model:  # e.g. retrieval: a retriever and trec_eval measures
        with logs.run_log(opts.out):
            return tt.evaluate(task, limit=opts.limit, out=opts.out, t0=t0)
    run = _Run(task, tt, _check_metrics(task, tt, opts), opts, t0)
    sh = shard_mod.current()
    # other libraries' log lines (and lines held from before): <out>/log.txt, written by rank 0 only
    out = opts.out
    with logs.run_log(out if sh.is_main else None) as log_file, \
            on_interrupt(lambda: interrupted_note(out, opts.cache, log_file)):
        return _evaluate(model, run, sh)


def interrupted_note(out, cache, log_file: Optional[Path]) -> str:
    """What an interrupted evaluation kept, for its one line: no results; the log, if one was
    written (issue 34: the line said "nothing written" beside a log.txt); the request cache."""
    if out is None:
        kept = "no results (they are shown once every item is scored)"
    elif log_file is not None and log_file.is_file():
        kept = f"no results written to {out} (they are written once every item is scored), only its log {log_file}"
    else:
        kept = f"nothing written to {out} (results are written once every item is scored)"
    if cache:
        kept += f"; the request cache keeps the model outputs finished so far (stored {STORE_EVERY} at a time) for the rerun"
    return kept + "; run the same command again"


def _check_options(task, opts: EvalOptions) -> None:
    """Every argument is checked here, before any data or model loads; shots and sampler set the task's."""
    opts.batch_size = check_batch_size(opts.batch_size)
    if opts.limit is not None and opts.limit < 1:
        raise ParameterError(f"{{limit}} must be at least 1 (got {opts.limit}); leave it out to evaluate every item", "limit")
    if opts.shots is not None:
        if opts.shots < 0:
            raise ParameterError(f"{{shots}} must be >= 0, got {opts.shots}", "shots")
        task.fewshot.k = opts.shots
    sampler = opts.sampler
    if sampler is not None:
        from tunelab.fewshot.samplers import SAMPLERS

        if sampler.partition(":")[0] not in SAMPLERS or sampler.count(":") > 1:
            raise ParameterError(f"{{sampler}}: unknown sampler '{sampler}'; use one of {', '.join(SAMPLERS)} (or similar:embedding)", "sampler")
        task.fewshot.sampler = sampler.partition(":")[0]


def _check_metrics(task, tt, opts: EvalOptions) -> list:
    """The task's metric objects; an unknown metric, or one this task cannot feed, fails before any model loads."""
    from tunelab.evaluate.metrics import get_metrics

    metrics = get_metrics(task.metrics)
    for m in metrics:
        m.for_task(task)  # task-level settings (a judge metric's `judge:` block), checked before any model loads
    if not tt.pairs:
        for m in metrics:
            if m.needs_reference:
                raise TunelabError(f"metric '{m.name}' in {task_source(task)} needs preference pairs scored against a "
                                   f"reference model, and this task is type: {task.type}; use it in a type: preference task")
    if opts.reference is not None and not any(m.needs_reference for m in metrics):
        raise ParameterError(f"{{reference}} is the model implicit-reward metrics measure against, and "
                             f"{task_source(task)} asks for none; add reward_acc to its metrics (a type: preference "
                             "task) or leave the reference out", "reference")
    return metrics


def _builder(task, templates, backend, sampler: Optional[str]):
    """The demonstrations: from fewshot.pool, or the whole data file (the item itself excluded per item)."""
    from tunelab.fewshot import ContextBuilder

    k = task.fewshot.k
    pool_rows, pool_is_eval = [], True
    if k > 0:
        if task.fewshot.pool:
            pool_rows, pool_is_eval = load_task_rows(task, task.fewshot.pool), False
        else:  # the whole file, not just the split; the item itself is excluded per item
            pool_rows = load_rows_full(task)
    return ContextBuilder(task, templates, pool_rows, k=k, sampler=sampler or task.fewshot.sampler,
                          seed=task.fewshot.seed, pool_is_eval=pool_is_eval, tokenizer=backend.tokenizer)


def _open(model, run: _Run, sh):
    """The backend, checked against what the task type needs; reference metrics' fate logged."""
    from tunelab.infer.load import open_backend

    o, task = run.opts, run.task
    backend = open_backend(model, o.adapter, o.device or sh.device(), o.reference)  # local, or an endpoint (infer/load.py)
    backend.check_task(task, run.task_type.needs(task))
    # metrics against a reference model (reward_acc): computed when the backend has one, else a note
    ref_names = [m.name for m in run.metrics if m.needs_reference]
    run.no_reference = backend.no_reference() if ref_names else None
    if run.no_reference is not None:
        log.warning(f"task '{task.name}': {', '.join(ref_names)} not computed: {run.no_reference}")
    run.backend = backend
    return bool(ref_names) and run.no_reference is None


def _evaluate(model, run: _Run, sh) -> Optional[Results]:
    """`evaluate()` once its arguments are checked: load, build contexts, run, gather, score, write."""
    from tunelab.data.readers import Skipped

    task, tt, o = run.task, run.task_type, run.opts
    run.skipped = Skipped()  # unreadable records here, bad pairs in the task type (Job.skipped)
    rows = load_task_rows(task, skipped=run.skipped)
    if o.limit is not None:
        rows = rows[:o.limit]
    templates = tt.templates(task, task_source(task))
    with_ref = _open(model, run, sh)
    mine = sh.take(rows)
    my_rows = [rows[i] for i in mine]
    builder = _builder(task, templates, run.backend, o.sampler)
    rcache = RequestCache(*run.backend.cache_scope, None if o.cache is True else o.cache) if o.cache else None
    tick = counter(o.progress, tt.units(task, my_rows) * (2 if with_ref else 1))  # the reference pass scores every pair again
    bs = _batch(o.batch_size, tt.default_batch, run.backend.device)
    ran = tt.run(Job(run.backend, task, my_rows, templates, builder, bs, rcache, tick, reference=with_ref,
                     skipped=run.skipped))
    if rcache is not None:  # the count says what a rerun after an interrupt did not redo
        log.info(f"request cache {rcache.path}: {rcache.hits} of {rcache.hits + rcache.misses} requests reused")
        rcache.close()
    kept = ran.kept if ran.kept is not None else range(len(my_rows))  # a type may leave rows out (skip_bad)
    demos = ran.demos or [[] for _ in ran.items]
    for i, j, it, d in zip([mine[j] for j in kept], kept, ran.items, demos):
        it["index"], it["id"] = i, tt.item_id(str(my_rows[j].data.get("id", my_rows[j].line)), it)
        if task.fewshot.k > 0:
            it["demos"] = d

    # ---- gather the shards; rank 0 scores and writes
    items = sh.gather(ran.items)
    tokens = (sh.sum(ran.prompt_tokens), sh.sum(ran.generated_tokens))  # (prompt, generated)
    if not sh.is_main:
        return None
    items.sort(key=lambda it: it["index"])
    return _finish(run, items, tokens)


def load_rows_full(task) -> list:
    """The whole data file (the demo pool when `split` selects only part of it for evaluation)."""
    from tunelab.data.load import load_rows

    return load_rows(task.data, base_dir=task.base_dir, hint=_bad_record_hint(task), skip_bad=task.skip_bad,
                     named_in=task.source)


def _finish(run: _Run, items: list[dict], tokens: tuple[int, int]) -> Results:
    from tunelab.evaluate.metrics import assistant

    task, tt, o, backend = run.task, run.task_type, run.opts, run.backend
    preds = [it.get("output", "") for it in items]
    refs = tt.references(items)
    scored = {}
    for m in run.metrics:
        if m.needs_reference and run.no_reference is not None:
            scored[m.name] = m.not_computed(len(items), f"not computed: {run.no_reference}")
            continue
        scored[m.name] = m.compute(preds, refs, items, n_resamples=1000, seed=task.fewshot.seed)
    parts = tt.breakdown(items)
    if parts is not None:  # e.g. each metric per turn of a conversation, beside its value over every turn
        for m in run.metrics:
            if scored[m.name].value is not None:
                scored[m.name].extra[parts[0]] = by_part(m, scored[m.name], parts[1], preds, refs, items, task.fewshot.seed)
    resp = None
    if tt.response_metrics and o.response_metrics:
        resp = assistant.response_metrics(preds, [it["question"] for it in items],
                                          n_tokens=[it["new_tokens"] for it in items],
                                          latencies_s=[it["latency_s"] for it in items], toxicity=o.toxicity)
    lines = []
    for j, it in enumerate(items):
        line = {"id": it["id"], "prompt": it["prompt"], **tt.prediction_fields(it)}
        if "demos" in it:
            line["demos"] = it["demos"]
        line["metrics"] = {name: r.item_values[j] for name, r in scored.items()}
        line.update({name: r.item_details[j] for name, r in scored.items() if r.item_details is not None})
        if resp is not None:
            line.update(resp[j])
        lines.append(line)

    dev = backend.device
    extra_cost = results_mod.merge_costs([r.cost for r in scored.values() if r.cost])  # a judge's, kept apart
    own_s = time.perf_counter() - run.t0 - sum(c.get("wall_s", 0.0) for c in extra_cost.values())
    cost = results_mod.make_cost(own_s, prompt_tokens=tokens[0], generated_tokens=tokens[1],
                                 peak_mem_mib=peak_mem_mib(dev))
    cost.update(extra_cost)
    results = results_mod.build_results(
        task=task.name, model=backend.identity, n=len(items), shots=task.fewshot.k,
        metrics={name: r.to_json() for name, r in scored.items()},
        cost=cost, signature=signature(task, backend, run.metrics, o.sampler), predictions=lines,
    )
    results.skipped = run.skipped.to_json() if run.skipped is not None else None
    return results_mod.finish_run(results, o.out, "eval")


def by_part(metric, result, parts: dict[str, list[int]], preds, refs, items, seed: int) -> dict:
    """{part: {value, stderr, ci95, n}} of one metric over each part of the items: a mean metric from its
    item values (the judge is not asked twice), a corpus metric (BLEU) from the part's own statistics."""
    import numpy as np

    from tunelab.evaluate import stats

    out = {}
    for name, idx in parts.items():
        if metric.corpus:
            r = metric.compute([preds[i] for i in idx], [refs[i] for i in idx], [items[i] for i in idx],
                               n_resamples=1000, seed=seed)
            out[name] = {"value": r.value, "stderr": r.stderr, "ci95": list(r.ci95) if r.ci95 else None, "n": r.n}
            continue
        values = [result.item_values[i] for i in idx if result.item_values[i] is not None]
        ci = list(stats.bootstrap_ci(values, n_resamples=1000, seed=seed)) if values else None
        out[name] = {"value": float(np.mean(values)) if values else None,
                     "stderr": stats.stderr(values) if values else None, "ci95": ci, "n": len(values)}
    return out


def peak_mem_mib(dev) -> Optional[float]:
    """Peak memory for the results' cost block, rounded (see tunelab.memory); None for an endpoint
    (a backend without a device), whose memory is not ours to measure."""
    if dev is None:
        return None
    from tunelab.memory import peak_memory_mib

    return round(peak_memory_mib(dev), 1)


def signature(task, backend, metrics, sampler=None) -> str:
    """tunelab VERSION|model NAME sha256:..|task sha256:..|template ..|shots K|sampler S|seed N|metric ...

    The task hash is results.task_sha256 (settings + the bytes of every file the task names); the
    template is the hash of the model's chat template (or the plain format when it has none), or
    `endpoint` when a server applies its own; an endpoint's NAME is `openai:URL#NAME`.
    """
    ref = backend.reference_identity()  # a --reference model: part of what reward_acc measured
    given = {} if ref is None else {"reference": f"{ref.name} sha256:{(ref.sha256 or 'none')[:16]}"}
    return results_mod.signature(
        backend.identity, results_mod.task_sha256(task), template=backend.template_id(),
        shots=task.fewshot.k, sampler=sampler or task.fewshot.sampler, seed=task.fewshot.seed,
        metric=";".join(m.signature() for m in metrics), **given)
