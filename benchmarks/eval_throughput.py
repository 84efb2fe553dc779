"""Multiple-choice throughput: lm-evaluation-harness (HF backend, the peer) vs tunelab, same model, same data.

    python benchmarks/eval_throughput.py --limit 1000            # BBQ Age, SmolLM2-135M-Instruct, CPU
    python benchmarks/eval_throughput.py --limit 200 --gen-items 16

Both sides load the same converted HF folder of the default model (fp32) before the clock starts,
score the same local BBQ rows with the same prompt, and run at the same batch size. lm-eval 0.4.13
runs offline from a task YAML with `dataset_path: json` (DESIGN §7). Printed: both accuracies,
per-item agreement of the chosen answer, the largest log-likelihood difference, items/s and the
ratio. Then batched generation (tunelab.evaluate.generate) vs a plain `model.generate` loop, one
prompt at a time, greedy: outputs compared and items/s. lm-eval is needed only here:
pip install lm-eval==0.4.13
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bbq" / "Age.jsonl"

PROMPT = "{{context}}\nQuestion: {{question}}\nAnswer:"
CHOICES = "{{[ans0, ans1, ans2]}}"


def write_inputs(rows: list, tmp: Path, name: str) -> Path:
    # lm-eval's json loader wants uniform columns; keep the fields the prompt uses
    keep = ("example_id", "context", "question", "ans0", "ans1", "ans2", "label")
    subset = tmp / f"{name}.jsonl"
    subset.write_text("".join(json.dumps({k: r[k] for k in keep}) + "\n" for r in rows), encoding="utf-8")
    (tmp / "tasks").mkdir(exist_ok=True)
    (tmp / "tasks" / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {subset}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        f"doc_to_text: {json.dumps(PROMPT)}\n"
        f"doc_to_choice: {json.dumps(CHOICES)}\n"
        "doc_to_target: label\n"
        'target_delimiter: " "\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n", encoding="utf-8")
    return subset


def run_lm_eval(peer, tmp: Path, name: str, batch_size: int):
    import lm_eval
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(tmp / "tasks"))
    t, c = time.perf_counter(), time.process_time()
    out = lm_eval.simple_evaluate(model=peer, tasks=[name], task_manager=tm, log_samples=True,
                                  batch_size=batch_size, num_fewshot=0)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    return {"wall": wall, "cpu": cpu, "lls": [[float(r[0]) for r in s["filtered_resps"]] for s in samples]}


def run_tunelab(lm, subset: Path, batch_size: int):
    from tunelab.config import TaskConfig
    from tunelab.evaluate.runner import evaluate

    task = TaskConfig(name="bbq_local", data=str(subset), type="multiple_choice", prompt=PROMPT.replace("{{", "{{ ").replace("}}", " }}"),
                      choices="{{ [ans0, ans1, ans2] }}", answer="{{ label }}", metrics=["acc", "acc_norm"])
    t, c = time.perf_counter(), time.process_time()
    res = evaluate(lm, task, batch_size=batch_size, response_metrics=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"wall": wall, "cpu": cpu, "lls": [p["choice_logliks"] for p in res.predictions]}


def accuracy(lls: list, rows: list, norm: bool) -> float:
    hits = 0
    for ll, r in zip(lls, rows):
        scores = [x / len(r[f"ans{i}"]) for i, x in enumerate(ll)] if norm else ll
        hits += argmax(scores) == r["label"]
    return hits / len(rows)


def argmax(xs):
    return max(range(len(xs)), key=xs.__getitem__)


def bench_generation(lm, rows: list, max_new_tokens: int, batch_size: int):
    import torch

    from tunelab.evaluate.generate import generate

    tok, model = lm.tokenizer, lm.model
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"{r['context']}\n{r['question']}"}],
                                       tokenize=False, add_generation_prompt=True) for r in rows]
    t = time.perf_counter()
    ours = generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    plain = []
    with torch.inference_mode():
        for p in prompts:  # the usual loop: one prompt, one model.generate call
            ids = tok(p, add_special_tokens=False, return_tensors="pt")
            g = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            plain.append(tok.decode(g[0, ids.input_ids.shape[1]:], skip_special_tokens=True))
    t_plain = time.perf_counter() - t
    same = sum(a.text == b for a, b in zip(ours, plain))
    return t_ours, t_plain, same


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--gen-items", type=int, default=16)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="alternate the two sides over this many chunks")
    ap.add_argument("--skip-lm-eval", action="store_true")
    args = ap.parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"{args.data}: BBQ data not found (expected ../shared/data/bbq/Age.jsonl)")
    import torch

    from tunelab.models.loading import load_model

    lm = load_model(args.model, device="cpu", dtype=torch.float32)
    print(f"model {lm.name} ({lm.path}), torch threads {torch.get_num_threads()}, batch {args.batch_size}")
    rows = [json.loads(x) for x in args.data.read_text(encoding="utf-8").splitlines() if x.strip()][:args.limit]
    n = len(rows)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # Warm-up (imports, first-call overheads) on 4 items, untimed, for both sides.
        warm = write_inputs(rows[:4], tmp, "bbq_warm")
        run_tunelab(lm, warm, args.batch_size)
        peer = None
        if not args.skip_lm_eval:
            from lm_eval.models.huggingface import HFLM

            peer = HFLM(pretrained=str(lm.path), batch_size=args.batch_size, device="cpu", dtype="float32")
            run_lm_eval(peer, tmp, "bbq_warm", args.batch_size)
        # Alternate the two in rounds so load from other processes falls on both alike.
        ours = {"wall": 0.0, "cpu": 0.0, "lls": []}
        theirs = {"wall": 0.0, "cpu": 0.0, "lls": []}
        size = -(-n // args.rounds)
        for r in range(args.rounds):
            chunk = rows[r * size : (r + 1) * size]
            if not chunk:
                break
            subset = write_inputs(chunk, tmp, f"bbq_local_{r}")
            o = run_tunelab(lm, subset, args.batch_size)
            ours["wall"] += o["wall"]
            ours["cpu"] += o["cpu"]
            ours["lls"] += o["lls"]
            if peer is not None:
                p = run_lm_eval(peer, tmp, f"bbq_local_{r}", args.batch_size)
                theirs["wall"] += p["wall"]
                theirs["cpu"] += p["cpu"]
                theirs["lls"] += p["lls"]
            print(f"  round {r + 1}/{args.rounds}: {len(chunk)} items, tunelab {o['wall']:.1f} s ({o['cpu']:.1f} s CPU)"
                  + (f", lm-eval {p['wall']:.1f} s ({p['cpu']:.1f} s CPU)" if peer is not None else ""), flush=True)
        print(f"tunelab : acc {accuracy(ours['lls'], rows, False):.4f}  acc_norm {accuracy(ours['lls'], rows, True):.4f}  "
              f"{n / ours['wall']:.2f} items/s  ({3 * n / ours['wall']:.1f} choices/s, {ours['wall']:.1f} s wall, {ours['cpu']:.1f} s CPU)")
        if peer is not None:
            print(f"lm-eval : acc {accuracy(theirs['lls'], rows, False):.4f}  acc_norm {accuracy(theirs['lls'], rows, True):.4f}  "
                  f"{n / theirs['wall']:.2f} items/s  ({3 * n / theirs['wall']:.1f} loglikelihood requests/s, {theirs['wall']:.1f} s wall, {theirs['cpu']:.1f} s CPU)")
            agree = sum(argmax(a) == argmax(b) for a, b in zip(ours["lls"], theirs["lls"]))
            diff = max(abs(x - y) for a, b in zip(ours["lls"], theirs["lls"]) for x, y in zip(a, b))
            print(f"per-item agreement (acc choice): {agree}/{n}; max |loglik difference| {diff:.2e}")
            # CPU seconds are the steadier measure when other jobs share the cores
            print(f"speed ratio tunelab / lm-eval: {theirs['wall'] / ours['wall']:.2f}x by wall time, "
                  f"{theirs['cpu'] / ours['cpu']:.2f}x by CPU time")
        if args.gen_items > 0:
            t_ours, t_plain, same = bench_generation(lm, rows[: args.gen_items], args.gen_tokens, 8)
            k = min(args.gen_items, n)
            print(f"generation ({k} prompts, {args.gen_tokens} new tokens max, greedy): batched {k / t_ours:.2f} items/s, "
                  f"model.generate loop {k / t_plain:.2f} items/s, ratio {t_plain / t_ours:.2f}x; identical outputs {same}/{k}")


if __name__ == "__main__":
    main()
