"""Evaluation throughput per task type: lm-evaluation-harness 0.4.13 (HF backend, the peer) vs tunelab.

    python benchmarks/eval_throughput.py                       # every task type, CPU fp32, batch 16
    python benchmarks/eval_throughput.py --only mc_short --scale 2
    python benchmarks/eval_throughput.py --device cuda           # a GPU: both sides on it, fp32

Both sides load the same converted HF folder of the default model (fp32) before any clock starts,
run the same items with the same prompts at the same batch size, and are timed over the whole run
of each task (no best-of, no warm steps left out; one untimed warm-up of a few items for both sides
first). lm-eval runs offline from task YAMLs with `dataset_path: json` (DESIGN §7). Task types:

- mc_long: multiple choice, long shared context (BBQ Age from ../shared/data/bbq)
- mc_short: multiple choice, short context and long endings (HellaSwag-shaped: an Alpaca instruction
  and four endings, its own output and three other items' outputs, from ../shared/data/alpaca_small)
- mc_5shot: BBQ with 5 demonstrations chosen with `first_n` from a separate pool file
- generate: greedy generation, 50 translation prompts, at most 48 new tokens, stop at a newline
- perplexity: rolling log-likelihood of Alpaca instruction + output documents

Printed per task: items/s on both sides, the ratio, the items whose decision (argmax choice) or
output text differs (should be 0), the largest log-likelihood difference (should be <= 1e-4), and
the tokens each side runs through the model per item. lm-eval is needed only here (the `bench` extra).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BBQ = DATA / "bbq" / "Age.jsonl"
ALPACA = DATA / "alpaca_small" / "alpaca_small.json"

BBQ_PROMPT = "{{context}}\nQuestion: {{question}}\nAnswer:"
TRANSLATE = "Translate the sentence into French.\nEnglish: {s}\nFrench:"


# ------------------------------------------------------------------ the items of each task type
def bbq_rows() -> list[dict]:
    keep = ("example_id", "context", "question", "ans0", "ans1", "ans2", "label")
    rows = [json.loads(x) for x in BBQ.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [{k: r[k] for k in keep} for r in rows]


def alpaca() -> list[dict]:
    return json.loads(ALPACA.read_text(encoding="utf-8"))


def _short(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


def hellaswag_rows(n: int) -> list[dict]:
    """Four endings per context: the item's own output and three other items' outputs (<= 40 words)."""
    src = [r for r in alpaca() if not r["input"] and len(r["output"].split()) >= 12]
    rng = random.Random(0)
    rows = []
    for i, r in enumerate(src[:n]):
        others = rng.sample([x for j, x in enumerate(src) if j != i], 3)
        endings = [_short(x["output"], 40) for x in others]
        label = rng.randrange(4)
        endings.insert(label, _short(r["output"], 40))
        rows.append({"ctx": r["instruction"], "endings": endings, "label": label})
    return rows


def translation_rows(n: int) -> list[dict]:
    """English sentences (the first sentence of short Alpaca outputs) to translate into French."""
    rows = []
    for r in alpaca():
        s = r["output"].split("\n")[0].split(". ")[0].strip()
        if 4 <= len(s.split()) <= 16 and s.isascii():
            rows.append({"prompt": TRANSLATE.format(s=s), "ref": s})
        if len(rows) == n:
            break
    return rows


def perplexity_rows(n: int) -> list[dict]:
    return [{"text": f"{r['instruction']}\n{r['output']}"} for r in alpaca()[:n]]


# ------------------------------------------------------------------ the two sides
def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def lm_eval_yaml(kind: str, name: str, test: Path, pool: Path | None, gen_tokens: int) -> str:
    files = f"    test: {test}\n" + (f"    train: {pool}\n" if pool else "")
    head = f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n{files}test_split: test\n"
    if pool:
        head += "fewshot_split: train\nfewshot_config:\n  sampler: first_n\n"
    if kind in ("mc_long", "mc_5shot"):
        return head + (f"output_type: multiple_choice\ndoc_to_text: {json.dumps(BBQ_PROMPT)}\n"
                       "doc_to_choice: \"{{[ans0, ans1, ans2]}}\"\ndoc_to_target: label\n"
                       'target_delimiter: " "\nmetric_list:\n  - metric: acc\n')
    if kind == "mc_short":
        return head + ("output_type: multiple_choice\ndoc_to_text: \"{{ctx}}\"\ndoc_to_choice: \"{{endings}}\"\n"
                       'doc_to_target: label\ntarget_delimiter: " "\nmetric_list:\n  - metric: acc\n')
    if kind == "generate":
        return head + ("output_type: generate_until\ndoc_to_text: \"{{prompt}}\"\ndoc_to_target: \"{{ref}}\"\n"
                       f"generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: {gen_tokens}\n  do_sample: false\n"
                       "metric_list:\n  - metric: exact_match\n")
    return head + ("output_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: \"{{text}}\"\n"
                   "metric_list:\n  - metric: word_perplexity\n")


def tunelab_task(kind: str, name: str, test: Path, pool: Path | None, gen_tokens: int):
    from tunelab.config import FewShotConfig, GenerationConfig, TaskConfig

    if kind in ("mc_long", "mc_5shot"):
        shots = FewShotConfig(k=5, sampler="first_n", pool=str(pool)) if pool else FewShotConfig()
        return TaskConfig(name=name, data=str(test), type="multiple_choice",
                          prompt="{{ context }}\nQuestion: {{ question }}\nAnswer:",
                          choices="{{ [ans0, ans1, ans2] }}", answer="{{ label }}", metrics=["acc"], fewshot=shots)
    if kind == "mc_short":
        return TaskConfig(name=name, data=str(test), type="multiple_choice", prompt="{{ ctx }}",
                          choices="{{ endings }}", answer="{{ label }}", metrics=["acc"])
    if kind == "generate":
        return TaskConfig(name=name, data=str(test), type="generate", prompt="{{ prompt }}", answer="{{ ref }}",
                          generation=GenerationConfig(max_new_tokens=gen_tokens, stop=["\n"]), metrics=["exact_match"])
    return TaskConfig(name=name, data=str(test), type="perplexity", text="{{ text }}", metrics=["word_perplexity"])


def run_lm_eval(peer, kind: str, tmp: Path, name: str, batch_size: int) -> tuple[float, list]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(tmp / "tasks"))
    t = time.perf_counter()
    out = lm_eval.simple_evaluate(model=peer, tasks=[name], task_manager=tm, log_samples=True,
                                  batch_size=batch_size, num_fewshot=5 if kind == "mc_5shot" else 0)
    wall = time.perf_counter() - t
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    if kind == "generate":
        return wall, [s["filtered_resps"][0] for s in samples]
    if kind == "perplexity":
        return wall, [[float(_first(s["filtered_resps"]))] for s in samples]
    return wall, [[float(r[0]) for r in s["filtered_resps"]] for s in samples]


def _first(x):
    while isinstance(x, (list, tuple)):
        x = x[0]
    return x


def run_tunelab(lm, kind: str, task, batch_size: int) -> tuple[float, list]:
    from tunelab.evaluate.runner import evaluate

    t = time.perf_counter()
    res = evaluate(lm, task, batch_size=batch_size, response_metrics=False)
    wall = time.perf_counter() - t
    if kind == "generate":
        return wall, [p["output"] for p in res.predictions]
    if kind == "perplexity":
        return wall, [[p["loglik"]] for p in res.predictions]
    return wall, [p["choice_logliks"] for p in res.predictions]


def tokens_per_item(tok, kind: str, rows: list[dict], demos: str, batch_size: int = 16) -> tuple[float, float]:
    """Tokens each side runs through the model per item, counted from the prompts (not measured in
    the run): lm-eval runs every (context, choice) request as its own sequence; tunelab runs what
    loglik.packed_token_count lays out: each context once with every choice after it, context
    tokens several items share once (token trees), and a prefix all share once per run."""
    from tunelab.infer import loglik

    theirs = 0
    items = []
    for r in rows:
        if kind == "mc_short":
            ctx, choices = r["ctx"], r["endings"]
        else:
            ctx = demos + BBQ_PROMPT.replace("{{context}}", r["context"]).replace("{{question}}", r["question"])
            choices = [r["ans0"], r["ans1"], r["ans2"]]
        pairs = [loglik.encode_pair(tok, ctx, " " + x) for x in choices]  # target_delimiter " "
        theirs += sum(len(c) + len(k) - 1 for c, k in pairs)  # the last token is predicted, not fed
        items.append((pairs[0][0], [k for _, k in pairs]))
    ours = loglik.packed_token_count(items, batch_size=batch_size)
    return theirs / len(rows), ours / len(rows)


def compare(kind: str, ours: list, theirs: list) -> tuple[int, float]:
    """(items whose decision or output differs, largest |log-likelihood difference|)."""
    if kind == "generate":
        return sum(a != b for a, b in zip(ours, theirs)), 0.0
    argmax = lambda xs: max(range(len(xs)), key=xs.__getitem__)  # noqa: E731
    differ = sum(argmax(a) != argmax(b) for a, b in zip(ours, theirs))
    diff = max(abs(x - y) for a, b in zip(ours, theirs) for x, y in zip(a, b))
    return differ, diff


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every task's item count")
    ap.add_argument("--gen-tokens", type=int, default=48)
    ap.add_argument("--only", nargs="*", choices=["mc_long", "mc_short", "mc_5shot", "generate", "perplexity"])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both sides)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="both sides; float32 keeps log-likelihoods comparable to 1e-4")
    args = ap.parse_args(argv)
    for f in (BBQ, ALPACA):
        if not f.is_file():
            sys.exit(f"{f}: shared data not found (expected ../shared/data next to the repo)")
    import torch
    from lm_eval.models.huggingface import HFLM

    from tunelab.models.loading import load_model

    lm = load_model(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    peer = HFLM(pretrained=str(lm.path), batch_size=args.batch_size, device=args.device, dtype=args.dtype)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, torch threads {torch.get_num_threads()}"
    print(f"model {lm.name} ({lm.path}), {args.dtype}, {where}, batch {args.batch_size}")
    n = lambda k: max(2, round(k * args.scale))  # noqa: E731
    bbq = bbq_rows()
    pool = bbq[-5:]  # the 5-shot demonstrations: first_n of a pool file that holds no test item
    tasks = {
        "mc_long": (bbq[: n(48)], None),
        "mc_short": (hellaswag_rows(n(64)), None),
        "mc_5shot": (bbq[1000 : 1000 + n(24)], pool),
        "generate": (translation_rows(n(50)), None),
        "perplexity": (perplexity_rows(n(48)), None),
    }
    table = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "tasks").mkdir()
        pool_file = _jsonl(tmp / "pool.jsonl", pool)

        def prepare(kind, name, rows, with_pool):
            test = _jsonl(tmp / f"{name}.jsonl", rows)
            p = pool_file if with_pool else None
            (tmp / "tasks" / f"{name}.yaml").write_text(lm_eval_yaml(kind, name, test, p, args.gen_tokens), encoding="utf-8")
            return tunelab_task(kind, name, test, p, args.gen_tokens)

        # Untimed warm-up of both sides (imports, first-call overheads) on a few items.
        warm = prepare("mc_long", "warm", bbq[:4], False)
        run_tunelab(lm, "mc_long", warm, args.batch_size)
        run_lm_eval(peer, "mc_long", tmp, "warm", args.batch_size)
        for kind, (rows, demo_pool) in tasks.items():
            if args.only and kind not in args.only:
                continue
            task = prepare(kind, f"bench_{kind}", rows, demo_pool is not None)
            try:
                t_ours, ours = run_tunelab(lm, kind, task, args.batch_size)
                t_theirs, theirs = run_lm_eval(peer, kind, tmp, f"bench_{kind}", args.batch_size)
            except Exception as e:  # one task type failing still leaves the others' numbers
                print(f"{kind}: failed: {type(e).__name__}: {e}", flush=True)
                continue
            differ, diff = compare(kind, ours, theirs)
            k = len(rows)
            line = (f"{kind:10s} {k:4d} items | lm-eval {k / t_theirs:6.2f} items/s ({t_theirs:5.1f} s) | "
                    f"tunelab {k / t_ours:6.2f} items/s ({t_ours:5.1f} s) | ratio {t_theirs / t_ours:4.2f}x | "
                    f"differ {differ} | max |dll| {diff:.1e}")
            if kind.startswith("mc"):
                demos = "".join(BBQ_PROMPT.replace("{{context}}", p["context"]).replace("{{question}}", p["question"])
                                + " " + p[f"ans{p['label']}"] + "\n\n" for p in pool) if demo_pool else ""
                a, b = tokens_per_item(lm.tokenizer, kind, rows, demos, args.batch_size)
                line += f" | tokens/item lm-eval {a:.0f}, tunelab {b:.0f}"
            print(line, flush=True)
            table.append(line)
    print("\n".join(["", "summary:", *table]))


if __name__ == "__main__":
    main()
