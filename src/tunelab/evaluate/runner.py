"""`evaluate(model, task, ...)`: run one task on one model and write results.json + predictions.jsonl.

    res = evaluate("default", "examples/tasks/bbq.yaml", limit=200, out="runs/bbq")
    res.metrics["acc"]["value"], res.signature

The flow, top to bottom: resolve the task -> load rows (split, limit, this process's shard) ->
render prompts and demonstrations -> run the task type (generate | multiple_choice | perplexity;
retrieval has its own module) through the optional request cache -> gather shards -> score every
metric with stderr and a bootstrap CI -> write the two artifacts atomically (docs/results.md).
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from tunelab import logs
from tunelab.errors import ParameterError, TunelabError, on_interrupt
from tunelab.evaluate import results as results_mod
from tunelab.evaluate import shard as shard_mod
from tunelab.evaluate.cache import RequestCache, cached_call
from tunelab.evaluate.prompts import TaskTemplates
from tunelab.evaluate.results import Results, write_results  # noqa: F401  (re-exported: older imports)
from tunelab.evaluate.tasks import resolve_task
from tunelab.io import check_writable
from tunelab.progress import counter

log = logging.getLogger("tunelab.evaluate")
DEFAULT_BATCH = {"multiple_choice": 16, "generate": 8, "perplexity": 4, "preference": 16}  # CPU; x4 on CUDA


# ---------------------------------------------------------------- inputs
def _task_source(task) -> str:
    """The task file the user edits (or `task 'name'` for one built in code)."""
    return task.source or f"task '{task.name}'"


def load_task_rows(task, spec: Optional[str] = None) -> list:
    """The task's records (or another file's, e.g. the demo pool), after `split`."""
    from tunelab.data.load import load_rows

    spec = spec if spec is not None else task.data
    if not spec:
        raise TunelabError(f"task '{task.name}': no 'data' file given; add data: path/to/file.jsonl (docs/tasks.md)")
    rows = load_rows(spec, base_dir=task.base_dir, hint=f"fix that record of the data of {_task_source(task)}",
                     named_in=task.source)
    if spec == task.data and task.split:
        a, b = (int(x) if x.strip() else None for x in task.split.split(":"))
        rows = rows[a:b]
        if not rows:
            raise TunelabError(f"task '{task.name}': split '{task.split}' selects no records of {spec}")
    return rows


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _item_seed(seed: int, line: int) -> int:
    return int(_sha(f"{seed}:{line}")[:8], 16)


def check_batch_size(batch_size) -> Union[int, str]:
    """'auto', or a whole number >= 1 (an int or its digits as a string, as the CLI passes it)."""
    if batch_size in (None, "auto"):
        return "auto"
    if isinstance(batch_size, str) and batch_size.strip().isdigit():
        batch_size = int(batch_size)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ParameterError(f"{{batch_size}} must be a whole number >= 1 or 'auto', got {batch_size!r}", "batch_size")
    return batch_size


def _batch(batch_size, kind: str, device) -> int:
    if batch_size in (None, "auto"):
        on_gpu = device is not None and getattr(device, "type", str(device)) != "cpu"
        return DEFAULT_BATCH[kind] * (4 if on_gpu else 1)
    return check_batch_size(batch_size)


# ---------------------------------------------------------------- the three model-side task types
def _run_multiple_choice(backend, task, rows, contexts, rendered, bs, cache, progress):
    td = "" if task.chat else task.target_delimiter  # a chat prompt already ends its turn header
    reqs = [[ctx.text, [td + c for c in r.choices]] for ctx, r in zip(contexts, rendered)]

    def compute(todo):
        scored = backend.score_choices([(c, k) for c, k in todo], batch_size=bs, on_batch=progress)
        return [[[ll, g] for ll, g in s] for s in scored]

    scores = cached_call(cache, "loglik", reqs, compute)
    items, tokens = [], 0
    for row, ctx, r, s in zip(rows, contexts, rendered, scores):
        lls = [x[0] for x in s]
        items.append({"prompt": ctx.text, "choices": r.choices, "choice_logliks": lls,
                      "is_greedy": [bool(x[1]) for x in s], "gold": r.gold})
        tokens += backend.count_tokens(ctx.text + td + max(r.choices, key=len))
    return items, (tokens, 0)  # every scored token is read, none generated


def _run_generate(backend, task, rows, contexts, rendered, bs, cache, progress):
    g = task.generation
    settings = {"max_new_tokens": g.max_new_tokens, "stop": list(g.stop), "temperature": g.temperature, "top_p": g.top_p}
    seeds = [_item_seed(g.seed, row.line) if g.temperature > 0 else None for row in rows]
    reqs = [[ctx.text, settings, s] for ctx, s in zip(contexts, seeds)]
    by_text = {ctx.text: ctx for ctx in contexts}  # the cache keys on the text; an endpoint wants the messages

    def compute(todo):
        return backend.generate([by_text[t[0]] for t in todo], [t[2] for t in todo], batch_size=bs, on_batch=progress, **settings)

    outs = cached_call(cache, "generate", reqs, compute)
    items = []
    for ctx, r, o in zip(contexts, rendered, outs):
        refs = r.gold if isinstance(r.gold, list) else ([] if r.gold is None else [r.gold])
        items.append({"prompt": ctx.text, "output": o["text"], "gold": refs, "finish": o["finish"],
                      "new_tokens": o["new_tokens"], "latency_s": o["latency_s"]})
    return items, (sum(o["prompt_tokens"] for o in outs), sum(o["new_tokens"] for o in outs))


def _run_perplexity(backend, task, rows, texts, bs, cache, progress):
    from tunelab.evaluate.metrics.perplexity import count_units

    max_len = backend.max_length()

    def compute(todo):
        return [list(x) for x in backend.rolling_loglik([t[0] for t in todo], batch_size=bs, on_batch=progress)]

    scored = cached_call(cache, "rolling", [[t, max_len] for t in texts], compute)
    items = []
    for text, (ll, n_tok) in zip(texts, scored):
        if n_tok == 0:
            raise TunelabError(f"task '{task.name}': a document renders to empty text; perplexity needs text")
        items.append({"prompt": text[:200], "loglik": ll, "n_tokens": n_tok, **count_units(text)})
    return items, (sum(i["n_tokens"] for i in items), 0)


def _run_preference(backend, task, rows, bs, cache, progress, reference=False):
    """Each pair's two answers scored after one copy of its prompt (the multiple-choice token tree);
    with `reference`, scored again by the backend's reference model (the adapter switched off, or
    the --reference model)."""
    from tunelab.data.preference import is_pair_row, not_pairs_error, to_pair
    from tunelab.templates.preference import answer_text
    from tunelab.templates.render import render_prompt

    if rows and not is_pair_row(rows[0]):
        raise not_pairs_error(rows[0], None, f"task '{task.name}' (type: preference)")
    tok = backend.tokenizer
    reqs, kept, bad = [], [], []
    for row in rows:
        try:
            pair = to_pair(row, None, task.system)  # a bad pair names its file and line
        except TunelabError as e:
            if not task.skip_bad:
                raise TunelabError(f"{e}; fix it, or set skip_bad: true in {_task_source(task)}") from None
            bad.append(str(e))
            continue
        prompt = render_prompt(tok, pair.prompt)
        reqs.append([prompt, [answer_text(tok, pair, a, prompt) for a in (pair.chosen, pair.rejected)]])
        kept.append(row)
    if bad:
        log.warning(f"task '{task.name}': skipped {len(bad)} bad pair(s) (skip_bad: true); first: {bad[0]}")
    if not reqs:
        raise TunelabError(f"task '{task.name}': no pair left to score; see the first bad pair: {bad[0]}")

    def scorer(b):
        def compute(todo):
            scored = b.score_choices([(c, k) for c, k in todo], batch_size=bs, on_batch=progress)
            return [[[ll, g] for ll, g in s] for s in scored]
        return compute

    scores = cached_call(cache, "loglik", reqs, scorer(backend))
    ref_scores = None
    if reference:
        with backend.reference() as ref:  # the reference's scores are cached under the base model's scope
            ref_cache = RequestCache(*ref.cache_scope, cache.path) if cache is not None else None
            try:
                ref_scores = cached_call(ref_cache, "loglik", reqs, scorer(ref))
            finally:
                if ref_cache is not None:
                    ref_cache.close()
    items, tokens = [], 0
    for j, (row, (prompt, answers), s) in enumerate(zip(kept, reqs, scores)):
        # scoring moves the prompt's trailing whitespace (the newline after the assistant header) into
        # each continuation (lm-eval's convention): one more token, the same term for both answers, so
        # chosen - rejected is the training's difference exactly; the counts include that token
        ws = prompt[len(prompt.rstrip()):]
        n = [backend.count_tokens(ws + a) for a in answers]
        items.append({"prompt": prompt, "chosen": answers[0], "rejected": answers[1],
                      "pair_logliks": [s[0][0], s[1][0]], "pair_tokens": n, "row": row})
        tokens += backend.count_tokens(prompt) + sum(n)
        if ref_scores is not None:
            items[-1]["ref_pair_logliks"] = [ref_scores[j][0][0], ref_scores[j][1][0]]
    return items, (tokens * (2 if ref_scores is not None else 1), 0)  # the reference reads every token again


# ---------------------------------------------------------------- the verb
def evaluate(
    model,
    task,
    *,
    adapter: Optional[str] = None,
    reference=None,
    shots: Optional[int] = None,
    sampler: Optional[str] = None,
    limit: Optional[int] = None,
    batch_size: Union[int, str] = "auto",
    out: Optional[Union[str, Path]] = None,
    cache: Union[bool, str, Path] = False,
    device: Optional[str] = None,
    response_metrics: bool = True,
    toxicity: Optional[Callable[[list[str]], Sequence[float]]] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Optional[Results]:
    """Evaluate `model` (name, folder, LoadedModel or `openai:URL#NAME`) on `task` (TaskConfig, YAML path, builtin:<name>).

    `cache=True` uses $TUNELAB_HOME/cache.sqlite (a path picks another file). `progress(done, total)`
    is called as items finish. `reference` (a name, folder or LoadedModel) is the model that
    implicit-reward metrics (reward_acc) measure against: the model a full-weights DPO fine-tune
    started from; base + adapter needs none (its reference is the base). `toxicity(texts) -> scores`
    fills each generated output's toxicity (e.g. tunelab.safety.toxicity.toxicity_scores; None
    leaves it empty). Under `accelerate launch` items are sharded; rank 0 returns the Results and
    writes the files, other ranks return None.
    """
    from tunelab.evaluate.metrics import get_metrics

    t0 = time.perf_counter()
    task = resolve_task(task)
    if out is not None:
        check_writable(out, setting="out")  # before the model loads, not after the work
    # every argument is checked here, before any data or model loads
    batch_size = check_batch_size(batch_size)
    if limit is not None and limit < 1:
        raise ParameterError(f"{{limit}} must be at least 1 (got {limit}); leave it out to evaluate every item", "limit")
    if shots is not None:
        if shots < 0:
            raise ParameterError(f"{{shots}} must be >= 0, got {shots}", "shots")
        task.fewshot.k = shots
    if sampler is not None:
        from tunelab.fewshot.samplers import SAMPLERS

        if sampler.partition(":")[0] not in SAMPLERS or sampler.count(":") > 1:
            raise ParameterError(f"{{sampler}}: unknown sampler '{sampler}'; use one of {', '.join(SAMPLERS)} (or similar:embedding)", "sampler")
        task.fewshot.sampler = sampler.partition(":")[0]
    if task.type == "retrieval":  # no language model: a retriever and trec_eval measures
        from tunelab.evaluate.retrieval_task import run_retrieval

        with logs.run_log(out):
            return run_retrieval(task, metrics_spec=task.metrics, limit=limit, out=out, t0=t0)
    metrics = get_metrics(task.metrics)  # an unknown metric fails before any model is loaded
    for m in metrics:
        m.for_task(task)  # task-level settings (a judge metric's `judge:` block), checked before any model loads
    if task.type != "preference":
        for m in metrics:
            if m.needs_reference:
                raise TunelabError(f"metric '{m.name}' in {_task_source(task)} needs preference pairs scored against a "
                                   f"reference model, and this task is type: {task.type}; use it in a type: preference task")
    if reference is not None and not any(m.needs_reference for m in metrics):
        raise ParameterError(f"{{reference}} is the model implicit-reward metrics measure against, and "
                             f"{_task_source(task)} asks for none; add reward_acc to its metrics (a type: preference "
                             "task) or leave the reference out", "reference")
    sh = shard_mod.current()
    # other libraries' log lines (and lines held from before): <out>/log.txt, written by rank 0 only
    kept = (f"nothing written to {out} (results are written once every item is scored)" if out is not None
            else "no results (they are shown once every item is scored)")
    if cache:
        kept += "; model outputs already in the cache are reused"
    with logs.run_log(out if sh.is_main else None), on_interrupt(kept + "; run the same command again"):
        return _evaluate(model, task, metrics, sh, adapter=adapter, reference=reference, sampler=sampler, limit=limit,
                         batch_size=batch_size, out=out, cache=cache, device=device,
                         response_metrics=response_metrics, toxicity=toxicity, progress=progress, t0=t0)


def _evaluate(model, task, metrics, sh, *, adapter, reference, sampler, limit, batch_size, out, cache, device,
              response_metrics, toxicity, progress, t0) -> Optional[Results]:
    """`evaluate()` once its arguments are checked: load, build contexts, run, gather, score, write."""
    rows = load_task_rows(task)
    if limit is not None:
        rows = rows[:limit]
    templates = TaskTemplates(task, _task_source(task))
    from tunelab.infer.load import open_backend

    backend = open_backend(model, adapter, device or sh.device(), reference)  # local, or an endpoint (infer/load.py)
    backend.check_task(task)
    dev = backend.device
    # metrics against a reference model (reward_acc): computed when the backend has one, else a note
    ref_names = [m.name for m in metrics if m.needs_reference]
    no_ref = backend.no_reference() if ref_names else None
    if no_ref is not None:
        log.warning(f"task '{task.name}': {', '.join(ref_names)} not computed: {no_ref}")
    with_ref = bool(ref_names) and no_ref is None
    mine = sh.take(rows)
    my_rows = [rows[i] for i in mine]

    from tunelab.fewshot import ContextBuilder

    k = task.fewshot.k
    pool_rows, pool_is_eval = [], True
    if k > 0:
        if task.fewshot.pool:
            pool_rows, pool_is_eval = load_task_rows(task, task.fewshot.pool), False
        else:  # the whole file, not just the split; the item itself is excluded per item
            pool_rows = load_rows_full(task)
    builder = ContextBuilder(task, templates, pool_rows, k=k, sampler=sampler or task.fewshot.sampler,
                             seed=task.fewshot.seed, pool_is_eval=pool_is_eval, tokenizer=backend.tokenizer)

    rcache = None
    if cache:
        rcache = RequestCache(*backend.cache_scope, None if cache is True else cache)
    tick = counter(progress, len(my_rows) * (2 if with_ref else 1))  # the reference pass scores every pair again
    bs = _batch(batch_size, task.type if task.type in DEFAULT_BATCH else "generate", dev)
    if task.type == "perplexity":
        text_t = TaskTemplates(task.model_copy(update={"prompt": task.text or task.prompt, "answer": None}), _task_source(task))
        items, tokens = _run_perplexity(backend, task, my_rows, [text_t.prompt(r) for r in my_rows], bs, rcache, tick)
        demos = [[] for _ in my_rows]
    elif task.type == "preference":
        items, tokens = _run_preference(backend, task, my_rows, bs, rcache, tick, reference=with_ref)
        kept = {id(it.pop("row")) for it in items}  # skip_bad may have left some rows out
        at = [j for j, r in enumerate(my_rows) if id(r) in kept]
        mine, my_rows = [mine[j] for j in at], [my_rows[j] for j in at]
        demos = [[] for _ in my_rows]
    else:
        rendered = [templates.render(r) for r in my_rows]
        contexts = [builder.build(r, x.prompt) for r, x in zip(my_rows, rendered)]
        demos = [c.demos for c in contexts]
        run = _run_multiple_choice if task.type == "multiple_choice" else _run_generate
        items, tokens = run(backend, task, my_rows, contexts, rendered, bs, rcache, tick)
        if task.type == "generate":
            for it, x in zip(items, rendered):
                it["question"] = x.prompt  # the item's own prompt, for answer relevance
    if rcache is not None:
        rcache.close()
    for i, row, it, d in zip(mine, my_rows, items, demos):
        it["index"], it["id"] = i, str(row.data.get("id", row.line))
        if k > 0:
            it["demos"] = d

    # ---- gather the shards; rank 0 scores and writes
    items = sh.gather(items)
    tokens = (sh.sum(tokens[0]), sh.sum(tokens[1]))  # (prompt, generated)
    if not sh.is_main:
        return None
    items.sort(key=lambda it: it["index"])
    return _finish(task, backend, metrics, items, tokens, t0, out, response_metrics, sampler, dev, toxicity,
                   no_reference=no_ref)


def load_rows_full(task) -> list:
    """The whole data file (the demo pool when `split` selects only part of it for evaluation)."""
    from tunelab.data.load import load_rows

    return load_rows(task.data, base_dir=task.base_dir, hint=f"fix that record of the data of {_task_source(task)}",
                     named_in=task.source)


def _finish(task, backend, metrics, items, tokens, t0, out, with_response, sampler, dev, toxicity=None,
            no_reference: Optional[str] = None) -> Results:
    from tunelab.evaluate.metrics import assistant

    preds = [it.get("output", "") for it in items]
    refs = [it.get("gold", []) if task.type == "generate" else [] for it in items]
    scored = {}
    for m in metrics:
        if m.needs_reference and no_reference is not None:
            scored[m.name] = m.not_computed(len(items), f"not computed: {no_reference}")
            continue
        scored[m.name] = m.compute(preds, refs, items, n_resamples=1000, seed=task.fewshot.seed)
    resp = None
    if task.type == "generate" and with_response:
        resp = assistant.response_metrics(preds, [it["question"] for it in items],
                                          n_tokens=[it["new_tokens"] for it in items],
                                          latencies_s=[it["latency_s"] for it in items], toxicity=toxicity)
    lines = []
    for j, it in enumerate(items):
        line = {"id": it["id"], "prompt": it["prompt"]}
        if task.type == "multiple_choice":
            from tunelab.evaluate.metrics.choice import choice_prediction

            line.update(choices=it["choices"], choice_logliks=it["choice_logliks"], is_greedy=it["is_greedy"],
                        pred=choice_prediction(it, "none"), pred_norm=choice_prediction(it, "chars"), gold=it["gold"])
        elif task.type == "generate":
            line.update(output=it["output"], gold=it["gold"], finish=it["finish"])
        elif task.type == "preference":
            line.update({key: it[key] for key in ("chosen", "rejected", "pair_logliks", "pair_tokens", "ref_pair_logliks")
                         if key in it})
        else:
            line.update({key: it[key] for key in ("loglik", "n_tokens", "n_words", "n_bytes")})
        if "demos" in it:
            line["demos"] = it["demos"]
        line["metrics"] = {name: r.item_values[j] for name, r in scored.items()}
        line.update({name: r.item_details[j] for name, r in scored.items() if r.item_details is not None})
        if resp is not None:
            line.update(resp[j])
        lines.append(line)

    extra_cost = results_mod.merge_costs([r.cost for r in scored.values() if r.cost])  # a judge's, kept apart
    own_s = time.perf_counter() - t0 - sum(c.get("wall_s", 0.0) for c in extra_cost.values())
    cost = results_mod.make_cost(own_s, prompt_tokens=tokens[0], generated_tokens=tokens[1],
                                 peak_mem_mib=peak_mem_mib(dev))
    cost.update(extra_cost)
    results = results_mod.build_results(
        task=task.name, model=backend.identity, n=len(items), shots=task.fewshot.k,
        metrics={name: r.to_json() for name, r in scored.items()},
        cost=cost, signature=signature(task, backend, metrics, sampler), predictions=lines,
    )
    return results_mod.finish_run(results, out, "eval")


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
