"""What goes on the page: read a train, eval or compare folder into the template's context.

Every reader here is forgiving on purpose: a report is most useful exactly when a run broke
half-way, so a missing or damaged file becomes a line in the page's "missing" list and the rest
of the page is still drawn. Results are read only through tunelab.evaluate.results.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tunelab import paths
from tunelab.compare.plan import ARMS_DIR, COMPARE_JSON, COMPARE_YAML  # the compare folder's layout (docs/compare.md)
from tunelab.errors import TunelabError
from tunelab.evaluate.task_types.base import BREAKDOWN_PREFIX  # how a metric's parts are keyed in results.json
from tunelab.report import plots
from tunelab.train.files import read_metrics_rows

TOP_DISAGREEMENTS = 10
PROMPT_CHARS = 600  # the end of a long (few-shot) prompt: the item's own question is last
SAMPLE_PROMPTS, SAMPLE_EACH = 2, 4  # GRPO samples shown: prompts of the latest step, completions of each


# ---------------------------------------------------------------- small readers
def kind_of(folder: Path) -> str:
    """compare | eval | train, from the files present; a TunelabError if it is none of them."""
    if (folder / COMPARE_JSON).exists() or (folder / ARMS_DIR).is_dir() or (folder / COMPARE_YAML).exists():
        return "compare"
    if (folder / paths.RESULTS_FILE).exists() or (folder / paths.PREDICTIONS_FILE).exists():
        return "eval"
    if any((folder / f).exists() for f in (paths.SUMMARY_FILE, paths.METRICS_FILE, paths.CONFIG_FILE)):
        return "train"
    raise TunelabError(f"{folder}: not a train run folder (summary.json, metrics.jsonl), an evaluation folder "
                       f"(results.json) or a compare folder (compare.json); give one of those to `tunelab report`")


def _json(path: Path, missing: list[str], why: str) -> Optional[Any]:
    if not path.is_file():
        missing.append(f"{path.name}: not found ({why})")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        missing.append(f"{path.name}: damaged, not readable JSON ({e}); {why}")
        return None


def _text(path: Path, missing: Optional[list[str]] = None, why: str = "") -> Optional[str]:
    if path.is_file():
        return path.read_text(encoding="utf-8", errors="replace")
    if missing is not None:
        missing.append(f"{path.name}: not found ({why})")
    return None


def _eval(folder: Path, missing: list[str], label: str):
    """(Results without predictions or None, prediction lines or None), noting what is missing."""
    from tunelab.evaluate.results import read_predictions, read_results

    res = lines = None
    try:
        res = read_results(folder, predictions=False)
    except TunelabError as e:
        missing.append(f"{label}: {e}")
    if (folder / paths.PREDICTIONS_FILE).exists():
        try:
            lines = read_predictions(folder)
        except TunelabError as e:
            missing.append(f"{label}: {e}")
    elif folder.is_dir():
        missing.append(f"{label}: {paths.PREDICTIONS_FILE} not found (per-item outputs)")
    return res, lines


# ---------------------------------------------------------------- formatting
def num(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or abs(v) >= 1000:
        return f"{v:,.0f}"  # counts, tokens, seconds: digits after the point add nothing here
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.2e}"
    return f"{v:.{digits}f}".rstrip("0").rstrip(".")


def num_column(values: list, digits: int = 4) -> list[str]:
    """One format for a whole column of fractions (toxicity: 0.0028 beside 0.0007, not beside 7.00e-04):
    fixed decimals, as many as the smallest non-zero value needs for two significant digits
    (at least `digits`); scientific for every cell when that would pass 6 decimals."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    nums = [abs(v) for v in values if number(v)]
    small = min((v for v in nums if v != 0), default=None)
    if small is None or max(nums) >= 1000:
        return [num(v, digits) for v in values]
    decimals = max(digits, 1 - math.floor(math.log10(small)))
    fmt = ".2e" if decimals > 6 else f".{decimals}f"
    return [format(v, fmt) if number(v) else num(v) for v in values]


def ci(pair) -> str:
    return "–" if not pair or pair[0] is None else f"[{num(pair[0])}, {num(pair[1])}]"


def pval(p) -> str:
    return "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def metric_parts(entry) -> list[tuple[str, dict]]:
    """A results.json metric entry's parts (TaskType.breakdown, e.g. `by_turn: {"1": {value, ci95, ...}}`)
    as [("turn 1", part entry)] in the file's order; [] for a metric given only over all items."""
    if not isinstance(entry, dict):
        return []
    return [(f"{key[len(BREAKDOWN_PREFIX):].replace('_', ' ')} {part}", e) for key, parts in entry.items()
            if key.startswith(BREAKDOWN_PREFIX) and isinstance(parts, dict)
            for part, e in parts.items() if isinstance(e, dict)]


# ---------------------------------------------------------------- train folder
def train_context(folder: Path) -> dict:
    missing: list[str] = []
    summary = _json(folder / paths.SUMMARY_FILE, missing, "the run did not finish; the summary table needs it")
    rows = read_metrics_rows(folder / paths.METRICS_FILE)
    if not rows:
        missing.append(f"{paths.METRICS_FILE}: not found or empty (the loss curve needs it)")
    config = _text(folder / paths.CONFIG_FILE, missing, "the resolved training config")
    figs, samples = {}, []
    if rows:
        figs["loss"] = plots.loss_curves({folder.name: rows})
        if any("rewards/margins" in r for r in rows):
            figs["rewards"] = plots.reward_curves(rows)
    if plots.has_grpo_stats(rows):
        figs["grpo"] = plots.grpo_curves({folder.name: rows})
        samples = [grpo_samples(folder, "", missing)]
    return {"kind": "train", "title": f"Training run: {folder.name}",
            "summary_rows": [(k, num(v) if isinstance(v, (int, float)) else str(v)) for k, v in (summary or {}).items()],
            "plots": figs, "grpo_samples": [x for x in samples if x],
            "configs": [(paths.CONFIG_FILE, config)] if config else [], "missing": missing}


def grpo_samples(run_dir: Path, label: str, missing: list[str]) -> Optional[dict]:
    """The latest step's sample completions of a GRPO run (completions.jsonl): for each of its first
    prompts, the best and worst completions by reward (all of them when few), with their rewards."""
    lines = [x for x in read_metrics_rows(run_dir / paths.COMPLETIONS_FILE) if isinstance(x.get("step"), int)]
    if not lines:
        missing.append(f"{label}{': ' if label else ''}{paths.COMPLETIONS_FILE}: not found or empty (sample completions)")
        return None
    step = max(x["step"] for x in lines)
    groups: dict[str, list[dict]] = {}
    for x in lines:
        if x["step"] == step:
            groups.setdefault(str(x.get("prompt", "")), []).append(x)
    rows = []
    for prompt, group in list(groups.items())[:SAMPLE_PROMPTS]:
        ranked = sorted(group, key=lambda x: -x["reward"] if _finite(x.get("reward")) else math.inf)
        shown = ranked if len(ranked) <= SAMPLE_EACH else ranked[:SAMPLE_EACH // 2] + ranked[-(SAMPLE_EACH // 2):]
        for j, x in enumerate(shown):
            rows.append({"first": j == 0, "span": len(shown), "prompt": _tail(prompt), "of": len(group),
                         "completion": str(x.get("completion", "")), "reward": num(x.get("reward")),
                         "rewards": ", ".join(f"{k} {num(v)}" for k, v in (x.get("rewards") or {}).items()),
                         "advantage": num(x.get("advantage")), "truncated": "yes" if x.get("truncated") else ""})
    return {"label": label, "step": step, "rows": rows}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------- eval folder
def eval_context(folder: Path) -> dict:
    missing: list[str] = []
    res, lines = _eval(folder, missing, folder.name)
    ctx: dict = {"kind": "eval", "title": f"Evaluation: {res.task if res else folder.name}", "missing": missing,
                 "plots": {}, "metric_rows": [], "cost_rows": [], "signatures": [], "predictions": []}
    if res is not None:
        m = res.model
        ctx["subtitle"] = (f"{m.get('name')}{' + ' + str(m['adapter']) if m.get('adapter') else ''} · n = {res.n} · "
                           f"{res.shots}-shot")
        names, values, cis = [], [], []
        for name, r in res.metrics.items():
            r = r if isinstance(r, dict) else {"value": r}
            ctx["metric_rows"].append(_metric_row(name, r, False))
            # a metric given per part too (multi_turn: per turn): a row per part below its row over all items
            ctx["metric_rows"] += [_metric_row(f"{name} {label}", e, True) for label, e in metric_parts(r)]
            if isinstance(r.get("value"), (int, float)):
                names.append(name)
                values.append(float(r["value"]))
                cis.append(r.get("ci95"))
        if names:
            ctx["plots"]["metrics"] = plots.metric_bars(names, values, cis, "metrics with 95% CI", "value")
        ctx["cost_rows"] = cost_rows(res.cost)
        ctx["signatures"] = [(res.task, res.signature)]
    for line in (lines or [])[:20]:
        ctx["predictions"].append({"id": line.get("id"), "prompt": _tail(str(line.get("prompt", ""))),
                                   "output": output_of(line), "gold": _gold(line.get("gold"), line),
                                   "metrics": ", ".join(f"{k} {num(v)}" for k, v in (line.get("metrics") or {}).items())})
    ctx["metric_n"] = any(r["part"] for r in ctx["metric_rows"])  # items per part: turn 2 may have fewer
    return ctx


def _metric_row(name: str, r: dict, part: bool) -> dict:
    return {"name": name, "value": num(r.get("value")), "stderr": num(r.get("stderr")), "ci": ci(r.get("ci95")),
            "n": num(r.get("n")), "part": part}


def cost_rows(cost: dict) -> list[tuple[str, str]]:
    """results.json's cost as labelled rows; a judge's own cost (cost.judge, a judged task) as rows of
    its own after the model's, so the judging is never read as the model's inference cost."""
    rows = [(k, num(v)) for k, v in cost.items() if not isinstance(v, dict)]
    judge = cost.get("judge")
    if isinstance(judge, dict):
        rows += [(f"judge {k}", num(v)) for k, v in judge.items()]
    return rows


def output_of(line: dict) -> str:
    """What the model answered on one prediction line, whatever the task type."""
    if "output" in line:
        out = line["output"]
        return ", ".join(map(str, out)) if isinstance(out, list) else str(out)
    if "outputs" in line:  # probe: several samples
        return " | ".join(map(str, line["outputs"]))
    choices, pred = line.get("choices"), line.get("pred")
    if isinstance(choices, list) and isinstance(pred, int) and 0 <= pred < len(choices):
        return str(choices[pred])
    return "–"


def _gold(g, line: Optional[dict] = None) -> str:
    choices = (line or {}).get("choices")
    if isinstance(g, int) and not isinstance(g, bool) and isinstance(choices, list) and 0 <= g < len(choices):
        return str(choices[g])  # a multiple-choice gold index, shown as its text
    if isinstance(g, list):
        return " | ".join(map(str, g))
    return "–" if g is None else str(g)


def _tail(text: str) -> str:
    return text if len(text) <= PROMPT_CHARS else "…" + text[-PROMPT_CHARS:]


# ---------------------------------------------------------------- compare folder
def _arm_dir(folder: Path, arm: dict, key: str, default: str) -> Path:
    given = arm.get(key)
    if given:
        p = Path(given)
        return p if p.is_absolute() else folder / p
    return folder / ARMS_DIR / str(arm.get("id")) / default


@dataclass
class ArmFiles:
    """What a compare's arm folders hold, read for the page."""

    evals: dict = field(default_factory=dict)  # arm id -> (Results or None, prediction lines or None)
    loss_runs: dict = field(default_factory=dict)  # arm id -> its training metrics rows
    grpo_samples: list = field(default_factory=list)  # grpo_samples() of each GRPO arm
    configs: list = field(default_factory=list)  # (title, text) of each config file shown
    signatures: list = field(default_factory=list)  # (label, signature)


def compare_context(folder: Path) -> dict:
    missing: list[str] = []
    data = _json(folder / COMPARE_JSON, missing, "the table, sentences and plots need it; re-run tunelab compare "
                 "(it resumes and keeps finished arms)")
    data = data if isinstance(data, dict) else {}
    arms = _compare_arms(folder, data, missing)
    files = _read_arms(folder, arms, missing)
    main = data.get("main_metric") or _first_metric(files.evals)
    missing += stale_differences(arms, main)
    compare_yaml = _text(folder / COMPARE_YAML, missing, "the resolved compare config")
    if compare_yaml:
        files.configs.insert(0, (COMPARE_YAML, compare_yaml))
    if data.get("signature"):
        files.signatures.insert(0, ("compare", data["signature"]))
    figs = _compare_plots(arms, data, main, files.loss_runs, missing)
    retention = _retention(data)
    tox = _with_toxicity(arms)
    table = _one_format([_table_row(a, data.get("best")) for a in arms], "toxicity")
    return {
        "kind": "compare", "title": f"Compare: {data.get('name') or folder.name}",
        "subtitle": f"task {data.get('task') or '?'} · main metric {main or '?'}"
                    + ("" if data.get("higher_is_better", True) else " (lower is better)"),
        "main_metric": main or "metric", "best": data.get("best"), "sentences": [str(s) for s in data.get("sentences") or []],
        "break_even": break_even_rows(data.get("break_even")),
        "table": table, "part_labels": part_columns(table, files.evals, main),
        "many_models": len({str(a.get("model")) for a in arms}) > 1,  # one model: named once, not per row
        "judged": any(a.get("judge_cost_per_1k") for a in arms),  # judge columns only in a judged compare
        "plots": figs, "toxicity": list(zip([str(a["id"]) for a in tox], *(
            num_column([a["toxicity"].get(k) for a in tox]) for k in ("mean", "max", "share_over_threshold")))),
        "retention": retention_rows(arms) if retention else None, "probe": probe_rows(arms),
        "retention_wall_s": num((retention or {}).get("wall_s", {}).get("total")),
        "disagreements": disagreements(arms, files.evals, main), "arm_ids": [str(a["id"]) for a in arms],
        "signatures": files.signatures, "configs": files.configs, "missing": missing,
        "grpo_samples": [x for x in files.grpo_samples if x],
    }


def _compare_arms(folder: Path, data: dict, missing: list[str]) -> list[dict]:
    """compare.json's arms, then arms on disk it does not list (an unfinished compare) as `derived`."""
    arms = [a for a in data.get("arms") or [] if isinstance(a, dict) and a.get("id") is not None]
    known = {str(a["id"]) for a in arms}
    if (folder / ARMS_DIR).is_dir():
        for d in sorted(p for p in (folder / ARMS_DIR).iterdir() if p.is_dir() and p.name not in known):
            arms.append({"id": d.name, "derived": True})
    if not arms:
        missing.append(f"{ARMS_DIR}/: no arms found")
    return arms


def _read_arms(folder: Path, arms: list[dict], missing: list[str]) -> ArmFiles:
    """Each arm's evaluation and, for a fine-tuned arm, its loss rows and training config; a derived
    arm gets its row's values from its results (_derive)."""
    files = ArmFiles()
    for arm in arms:
        aid = str(arm["id"])
        res, lines = _eval(_arm_dir(folder, arm, "eval_dir", "eval"), missing, f"arm {aid}")
        files.evals[aid] = (res, lines)
        if res is not None:
            files.signatures.append((f"arm {aid}", res.signature))
            if arm.get("derived"):
                _derive(arm, res)
        if not (arm.get("method") in plots.fine_tune_methods() or (folder / ARMS_DIR / aid / "train").is_dir()):
            continue
        run_dir = _arm_dir(folder, arm, "run_dir", "train")
        rows = read_metrics_rows(run_dir / paths.METRICS_FILE)
        if rows:
            files.loss_runs[aid] = rows
            if plots.has_grpo_stats(rows):
                files.grpo_samples.append(grpo_samples(run_dir, f"arm {aid}", missing))
        else:
            missing.append(f"arm {aid}: {run_dir / paths.METRICS_FILE} not found or empty (its loss curve)")
        cfg = _text(run_dir / paths.CONFIG_FILE)
        if cfg:
            files.configs.append((f"arm {aid}: training config", cfg))
    return files


def _retention(data: dict) -> Optional[dict]:
    return data.get("retention") if isinstance(data.get("retention"), dict) else None


def _with_toxicity(arms: list[dict]) -> list[dict]:
    """The arms whose outputs were scored for toxicity."""
    return [a for a in arms if isinstance(a.get("toxicity"), dict) and a["toxicity"].get("mean") is not None]


def _compare_plots(arms: list[dict], data: dict, main: Optional[str], loss_runs: dict, missing: list[str]) -> dict:
    """The page's figures by name; a figure whose data is absent becomes a line in `missing`."""
    figs = {}
    scored = [a for a in arms if isinstance(a.get("metric"), dict) and a["metric"].get("value") is not None]
    if scored and any(a.get("method") for a in scored):
        figs["learning-curve"] = plots.learning_curve(scored, main or "metric",
                                                      models=len({a.get("model") for a in scored}))
    else:
        missing.append("learning curve: needs compare.json's arms (method, n_train, k and the metric)")
    if any((a.get("infer_cost_per_1k") or {}).get("wall_s") for a in scored):
        figs["quality-cost"] = plots.quality_vs_cost(scored, main or "metric")
    else:
        missing.append("quality-vs-cost plot: no arm has both a metric and an inference cost")
    if loss_runs:
        figs["loss"] = plots.loss_curves(loss_runs)
    grpo = {aid: rows for aid, rows in loss_runs.items() if plots.has_grpo_stats(rows)}
    if grpo:
        figs["grpo"] = plots.grpo_curves(grpo, named=True)  # the arm's id on every line
    retention = _retention(data)
    if retention:
        tasks = [t["name"] for t in retention.get("tasks") or [] if isinstance(t, dict) and t.get("name")]
        figs["gain-retention"] = plots.gain_vs_retention(scored, main or "metric", tasks,
                                                         drift=bool(retention.get("drift_prompts")))
    tox = _with_toxicity(arms)
    if tox:
        figs["toxicity"] = plots.metric_bars([str(a["id"]) for a in tox], [float(a["toxicity"]["mean"]) for a in tox],
                                             [None] * len(tox), "mean toxicity of outputs per arm", "mean P(toxic)")
    return figs


def stale_differences(arms: list[dict], metric: Optional[str]) -> list[str]:
    """compare.json written before the differences of corpus metrics were corpus differences (issue 34):
    its Δ, sentences and gain plot are of the mean per-item score, not of the values in the table."""
    from tunelab.evaluate.metrics.registry import known_metrics

    cls = known_metrics().get(metric or "")
    if cls is None or not cls.corpus:
        return []
    diffs = [a.get(k) for a in arms for k in ("diff_vs_best", "diff_vs_zero_shot") if isinstance(a.get(k), dict)]
    if not any("basis" not in d for d in diffs):
        return []
    return [f"{COMPARE_JSON} was written by an earlier tunelab: its differences in {metric} (Δ, the sentences, the "
            f"gain plot) are of the mean per-item {metric}, not of the corpus values in the table; run the same "
            "tunelab compare again (finished arms are kept) to rewrite it"]


def retention_rows(arms: list[dict]) -> list[dict]:
    """One row per arm and retention task: value, CI, change against the base model, drift."""
    rows = []
    for a in arms:
        d = a.get("drift") or {}
        drift = ("0 (no weights changed)" if d.get("shared_base") else num(d.get("kl_per_token"))
                 + (f" {ci(d.get('ci95'))}" if d.get("ci95") else "")) if d else "–"
        for i, e in enumerate(a.get("retention") or []):
            diff = e.get("diff_vs_base") or {}
            rows.append({"id": str(a["id"]) if i == 0 else "", "task": f"{e.get('task')} ({e.get('metric')})",
                         "value": num(e.get("value")), "ci": ci(e.get("ci95")),
                         "delta": "base" if e.get("shared_base") else num(diff.get("delta")),
                         "delta_ci": "" if e.get("shared_base") else ci(diff.get("ci95")),
                         "p": "" if e.get("shared_base") else pval(diff.get("p")),
                         "drift": drift if i == 0 else ""})
        if not a.get("retention") and a.get("drift"):
            rows.append({"id": str(a["id"]), "task": "–", "value": "", "ci": "", "delta": "", "delta_ci": "", "p": "",
                         "drift": drift})
    return rows


def probe_rows(arms: list[dict]) -> list[dict]:
    """One row per arm the compare probed (a preference task with safety: true): toxicity and
    refusals, and the paired changes against its base model ("base" on the base's own row)."""
    rows = []
    for a in arms:
        p = a.get("probe")
        if not isinstance(p, dict):
            continue
        diff = p.get("diff") or {}
        dr, dt = diff.get("refusal_rate") or {}, diff.get("toxic_fraction") or {}
        base = p.get("vs") is None

        def value(m):
            return num((p.get(m) or {}).get("value"))

        rows.append({"id": str(a["id"]), "n": num(p.get("n_prompts")),
                     "tox_value": (p.get("mean_toxicity") or {}).get("value"),
                     "toxic": value("toxic_fraction"), "refusal": value("refusal_rate"),
                     "refusal_ci": ci((p.get("refusal_rate") or {}).get("ci95")),
                     "d_refusal": "base" if base else num(dr.get("delta")), "d_refusal_ci": "" if base else ci(dr.get("ci95")),
                     "p_refusal": "" if base else pval(dr.get("p")),
                     "d_toxic": "base" if base else num(dt.get("delta")), "p_toxic": "" if base else pval(dt.get("p"))})
    return _one_format(rows, "tox")


def break_even_rows(be) -> list[tuple[str, str]]:
    """compare.json's break_even as labelled rows with units (its keys are for programs, not readers)."""
    if not isinstance(be, dict):
        return []

    def pair(tokens, seconds, unit_t="tokens", unit_s="s") -> str:
        return f"{num(tokens, 1)} {unit_t}, {num(seconds, 3)} {unit_s}"

    def after(q) -> str:
        return "never" if q is None else f"{num(q)} queries"

    # the keys compare/sentences.py's break_even writes; a missing one shows as "–"
    return [("fine-tuned arm", str(be.get("fine_tuned", "–"))),
            ("against few-shot arm", str(be.get("few_shot", "–"))),
            ("one-off training", pair(be.get("train_tokens"), be.get("train_s"))),
            ("saved per query", pair(be.get("saved_tokens_per_query"), be.get("saved_seconds_per_query"))),
            ("repaid after, in tokens", after(be.get("queries_tokens"))),
            ("repaid after, in seconds on this machine", after(be.get("queries_seconds")))]


def _first_metric(evals: dict) -> Optional[str]:
    for res, _ in evals.values():
        if res is not None and res.metrics:
            return next(iter(res.metrics))
    return None


def _derive(arm: dict, res) -> None:
    """An arm compare.json does not list yet: its metric and inference cost from its own results."""
    main = next(iter(res.metrics), None)
    entry = res.metrics.get(main) if main else None
    if isinstance(entry, dict):
        arm["metric"] = {"value": entry.get("value"), "ci95": entry.get("ci95")}
    n, c = max(res.n, 1), res.cost
    arm["model"] = res.model.get("name")
    arm["infer_cost_per_1k"] = {k: (c.get(k) * 1000 / n if isinstance(c.get(k), (int, float)) else None)
                                for k in ("wall_s", "prompt_tokens", "generated_tokens")}
    judge = c.get("judge")
    if isinstance(judge, dict):  # as compare.json's judge_cost_per_1k (compare/judge.py)
        arm["judge_cost_per_1k"] = {k: (judge.get(k) * 1000 / n if isinstance(judge.get(k), (int, float)) else None)
                                    for k in ("calls", "tokens", "wall_s")}


def _table_row(arm: dict, best) -> dict:
    m, d = arm.get("metric") or {}, arm.get("diff_vs_best") or {}
    tc, ic = arm.get("train_cost") or {}, arm.get("infer_cost_per_1k") or {}
    size = (f"n={arm['n_train']}" if arm.get("n_train") is not None else
            f"k={arm['k']}" + (f" ({arm['sampler']})" if arm.get("sampler") else "") if arm.get("k") is not None else "–")
    tox = arm.get("toxicity") or {}
    return {"id": str(arm.get("id")), "best": arm.get("id") == best, "method": arm.get("method") or "–",
            "model": arm.get("model") or "–", "size": size, "value": num(m.get("value")), "ci": ci(m.get("ci95")),
            "delta": "–" if arm.get("id") == best else num(d.get("delta")),
            "delta_ci": "–" if arm.get("id") == best else ci(d.get("ci95")),
            "p": "–" if arm.get("id") == best else pval(d.get("p")),
            "train_s": num(tc.get("wall_s"), 3), "train_tokens": num(tc.get("tokens")), "flops": _sci(tc.get("flops")),
            "train_mem": num(tc.get("peak_mem_mib"), 3), "energy": num(tc.get("energy_wh"), 3),
            "infer_s": num(ic.get("wall_s"), 3), "prompt_tokens": num(ic.get("prompt_tokens")),
            "generated_tokens": num(ic.get("generated_tokens")), "toxicity_value": tox.get("mean"),
            **_judge_cells(arm)}


def part_columns(table: list[dict], evals: dict, metric: Optional[str]) -> list[str]:
    """The main metric per part (each arm's results.json, e.g. multi_turn's by_turn: "turn 1", "turn 2"),
    a column per part in the arms' table; each row gets its cells as `parts`, [(value, ci)]; [] when no
    arm's results give the metric per part (compare.json keeps only the value over all items)."""
    cells = {}
    for r in table:
        res = evals.get(r["id"], (None, None))[0]
        cells[r["id"]] = dict(metric_parts(res.metrics.get(metric) if res is not None and metric else None))
    labels = list(dict.fromkeys(label for got in cells.values() for label in got))
    for r in table:
        got = cells[r["id"]]
        r["parts"] = [(num(got[x].get("value")), ci(got[x].get("ci95"))) if x in got else ("–", "–") for x in labels]
    return labels


def _judge_cells(arm: dict) -> dict:
    """The judge's cost per 1,000 items, apart from the arm's own (a judged task; "–" for an arm not judged)."""
    j = arm.get("judge_cost_per_1k") or {}
    return {"judge_calls": num(j.get("calls")), "judge_s": num(j.get("wall_s"), 3), "judge_tokens": num(j.get("tokens"))}


def _one_format(rows: list[dict], key: str) -> list[dict]:
    """Column `key` of a table in one number format: each row holds its raw value as KEY_value."""
    for r, text in zip(rows, num_column([r.pop(f"{key}_value") for r in rows])):
        r[key] = text
    return rows


def _sci(v) -> str:
    return "–" if not isinstance(v, (int, float)) else f"{v:.2e}"


def disagreements(arms: list[dict], evals: dict, metric: Optional[str]) -> list[dict]:
    """The items whose per-item main metric differs most across arms, with each arm's output."""
    lines = {str(a["id"]): {str(x["id"]): x for x in (evals.get(str(a["id"]), (None, None))[1] or [])} for a in arms}
    lines = {aid: v for aid, v in lines.items() if v}
    if len(lines) < 2 or metric is None:
        return []
    shared = set.intersection(*(set(v) for v in lines.values()))
    scored = []
    for item in shared:
        vals = [lines[aid][item].get("metrics", {}).get(metric) for aid in lines]
        nums = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(nums) >= 2 and max(nums) > min(nums):
            scored.append((-(max(nums) - min(nums)), item))
    out = []
    for _, item in sorted(scored)[:TOP_DISAGREEMENTS]:
        first = next(iter(lines.values()))[item]
        prompt = min((str(lines[aid][item].get("prompt", "")) for aid in lines), key=len)
        out.append({"id": item, "prompt": _tail(prompt), "gold": _gold(first.get("gold"), first),
                    "arms": [(aid, output_of(lines[aid][item]), num(lines[aid][item].get("metrics", {}).get(metric)))
                             for aid in lines]})
    return out
