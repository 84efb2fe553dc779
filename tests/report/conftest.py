"""A compare folder made of tiny real runs, in the layout `tunelab compare` writes (docs/compare.md).

Zero-shot, 1-shot and 2-shot evaluations of the tiny model and two short LoRA runs (n = 16, 32)
evaluated with their adapters, all on the same 8 test items; compare.json is assembled from those
runs' own files with the paired bootstrap, so the report reads real artifacts.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

N_TEST = 16


def _rows(n: int, seed: int) -> list[dict]:
    r = random.Random(seed)
    out = []
    for i in range(n):
        a, b = r.randint(0, 20), r.randint(0, 20)
        options = [str(a + b), str(a + b + 1), str(a + b + 3)]
        r.shuffle(options)
        out.append({"id": f"s{seed}-{i}", "prompt": f"What is {a} plus {b}?", "completion": f"{a + b}",
                    "options": options, "label": options.index(str(a + b))})
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _arm(aid, method, res, *, n_train=None, k=None, sampler=None, train_summary=None, toxicity=None, run_dir=None):
    c = res.cost
    m = res.metrics["acc"]
    return {"id": aid, "method": method, "model": res.model["name"], "n_train": n_train, "k": k, "sampler": sampler,
            "metric": {"value": m["value"], "ci95": m["ci95"]}, "diff_vs_best": None,
            "train_cost": None if train_summary is None else {
                "wall_s": train_summary["wall_s"], "tokens": train_summary["tokens_seen"], "flops": train_summary["flops"],
                "peak_mem_mib": train_summary["peak_mem_mib"], "energy_wh": train_summary["energy_wh"]},
            "infer_cost_per_1k": {"wall_s": c["wall_s"] * 1000 / res.n, "prompt_tokens": c["prompt_tokens"] * 1000 / res.n,
                                  "generated_tokens": c["generated_tokens"] * 1000 / res.n},
            "toxicity": toxicity, "eval_dir": f"arms/{aid}/eval", "run_dir": run_dir}


@pytest.fixture(scope="session")
def compare_dir(tmp_path_factory, tiny_dir) -> Path:
    import os

    from tunelab.evaluate.results import read_items
    from tunelab.evaluate.runner import evaluate
    from tunelab.evaluate.stats import paired_bootstrap
    from tunelab.train.loop import train

    os.environ.setdefault("TUNELAB_NO_ENERGY", "1")
    root = tmp_path_factory.mktemp("cmp")
    home = root / "home"  # the session fixture runs outside the per-test TUNELAB_HOME
    old_home, os.environ["TUNELAB_HOME"] = os.environ.get("TUNELAB_HOME"), str(home)
    old_quiet, os.environ["TUNELAB_QUIET"] = os.environ.get("TUNELAB_QUIET"), "1"
    try:
        folder = root / "compare"
        data = root / "data"
        data.mkdir()
        test = _write_jsonl(data / "test.jsonl", _rows(N_TEST, 1))
        pool = _write_jsonl(data / "pool.jsonl", _rows(32, 2))
        # multiple choice: the tiny random model's picks differ between arms, so the per-item scores do too
        task = {"name": "sums", "data": str(test), "type": "multiple_choice", "prompt": "{{ prompt }}",
                "choices": "{{ options }}", "answer": "{{ label }}", "metrics": ["acc", "acc_norm"],
                "fewshot": {"k": 0, "pool": str(pool)}}
        (data / "task.yaml").write_text(yaml.safe_dump(task))
        arms, results = [], {}
        for aid, k in (("zero_shot", 0), ("few_shot-k1", 1), ("few_shot-k2", 2)):
            res = evaluate(str(tiny_dir), data / "task.yaml", shots=k, out=folder / "arms" / aid / "eval")
            results[aid] = res
            arms.append(_arm(aid, "zero_shot" if k == 0 else "few_shot", res, k=k or None,
                             sampler="random" if k else None, toxicity={"mean": 0.02 * (k + 1), "max": 0.1 * (k + 1),
                                                                      "share_over_threshold": 0.0}))
        for n in (16, 32):
            aid = f"lora-n{n}"
            run = folder / "arms" / aid / "train"
            _write_jsonl(data / f"train{n}.jsonl", [{"prompt": r["prompt"], "completion": r["completion"]}
                                                     for r in _rows(32, 2)[:n]])
            out = train({"name": aid, "model": str(tiny_dir), "method": "lora", "lora": {"r": 4, "alpha": 8},
                         "data": {"train": str(data / f"train{n}.jsonl"), "eval": 0.25},
                         "train": {"max_steps": 4, "batch_tokens": 160, "lr": 1e-3, "eval_every": 2, "save_every": 100,
                                   "seed": 3, "warmup": 1}, "out": str(run)})
            res = evaluate(str(tiny_dir), data / "task.yaml", adapter=str(run / "adapter"),
                           out=folder / "arms" / aid / "eval")
            results[aid] = res
            arms.append(_arm(aid, "lora", res, n_train=n, train_summary=out.summary, run_dir=f"arms/{aid}/train",
                             toxicity={"mean": 0.01, "max": 0.05, "share_over_threshold": 0.0}))
        best = max(arms, key=lambda a: a["metric"]["value"])["id"]
        items = {aid: read_items(folder / "arms" / aid / "eval") for aid in results}
        for arm in arms:
            if arm["id"] != best:
                ids = sorted(items[best])
                r = paired_bootstrap([items[best][i]["acc"] for i in ids], [items[arm["id"]][i]["acc"] for i in ids])
                arm["diff_vs_best"] = {"delta": r.delta, "ci95": list(r.ci95), "p": r.p_value}
        (folder / "compare.yaml").write_text(yaml.safe_dump({
            "model": str(tiny_dir), "task": str(data / "task.yaml"), "train_data": str(pool),
            "arms": ["zero_shot", {"few_shot": {"k": [1, 2]}}, {"lora": {"n": [16, 32]}}]}))
        (folder / "compare.json").write_text(json.dumps({
            "name": "sums", "task": "sums", "main_metric": "acc", "higher_is_better": True, "best": best,
            "arms": arms, "sentences": [f"{best} scores highest on acc (fixture sentence)."],
            "break_even": {"fine_tuned": "lora-n32", "few_shot": "few_shot-k2", "train_tokens": 4096, "train_s": 12.5,
                           "saved_tokens_per_query": 3.32, "queries_tokens": 1234,
                           "saved_seconds_per_query": 0.022, "queries_seconds": 567},
            "signature": "tunelab 0.1.0|compare fixture"}, indent=2))
        yield folder
    finally:
        for key, old in (("TUNELAB_HOME", old_home), ("TUNELAB_QUIET", old_quiet)):
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@pytest.fixture
def compare_copy(compare_dir, tmp_path) -> Path:
    """A private copy a test may break."""
    return Path(shutil.copytree(compare_dir, tmp_path / "compare"))
