"""GGUF export on a real model: file size and export time per --quant, then llama.cpp's greedy
continuations against tunelab's.

    python benchmarks/gguf_export.py --adapter runs/dates-lora/adapter            # default model
    python benchmarks/gguf_export.py --adapter A --quants f16,q8_0 --compare f16 --max-new-tokens 48

For every quant type: `export_gguf(MODEL, ADAPTER, OUT/model-QUANT.gguf)` is timed end to end
(load the base, merge the adapter in fp32, write the file: what `tunelab export --gguf` costs) and
the file's size is read from disk.

Then, when llama_cpp (llama-cpp-python) is importable, for every quant in --compare: each prompt
is rendered with the model's chat template; llama.cpp tokenizes that text itself (special tokens
parsed) and must produce the same ids as tunelab's tokenizer; then both decode greedily
(tunelab: infer.generate at batch size 1 on the merged fp32 model; llama.cpp: temperature 0,
top_k 1, no repeat penalty) up to --max-new-tokens or an end-of-turn token, and the two texts
are compared. A quantised file can flip a near-tie, after which the texts part: the report gives
how many continuations are identical and, for the others, the character where they part.
Prints one table and writes OUT/gguf_export.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PROMPTS = [
    "Convert the date March 5, 2021 to ISO format.",
    "Write the date 7 November 1999 as YYYY-MM-DD.",
    "What is the capital of France?",
    "Give me three tips for staying focused while studying.",
    "Write a short poem about the sea.",
    "Explain what a GGUF file is in one sentence.",
]


def export_all(model: str, adapter: str | None, out: Path, quants: list[str]) -> list[dict]:
    import peft  # noqa: F401  imported before the clock starts: a CLI run pays this once, not per quant
    import transformers  # noqa: F401

    from tunelab.models.export import export_gguf

    rows = []
    for q in quants:
        t0, c0 = time.perf_counter(), time.process_time()
        done = export_gguf(model, adapter, out / f"model-{q}.gguf", quant=q, force=True)
        # CPU seconds (all threads) beside wall seconds: on a shared machine the wall time also
        # counts other processes' turns, the CPU time does not
        rows.append({"quant": q, "path": str(done.path), "bytes": done.bytes, "mib": round(done.bytes / 2**20, 1),
                     "export_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2)})
        print(f"{q:>5}: {rows[-1]['mib']:8.1f} MiB  {rows[-1]['export_s']:6.1f} s wall  {rows[-1]['cpu_s']:6.1f} s CPU  "
              f"{done.path}", flush=True)
    return rows


def tunelab_continuations(model: str, adapter: str | None, max_new_tokens: int):
    from tunelab.infer.decode import eos_ids
    from tunelab.infer.generate import generate
    from tunelab.models.loading import load_model

    lm = load_model(model, adapter=adapter, device="cpu", dtype="fp32")
    merged = lm.model.merge_and_unload() if adapter else lm.model
    texts = [lm.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in PROMPTS]
    gens = generate(merged, lm.tokenizer, texts, max_new_tokens=max_new_tokens, batch_size=1, share_prefix=False)
    ids = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return lm.tokenizer, texts, ids, [g.text for g in gens], eos_ids(merged, lm.tokenizer)


def llama_cpp_continuations(path: str, texts: list[str], max_new_tokens: int, eos: set[int], tokenizer):
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=2048, n_threads=os.cpu_count() or 2, verbose=False, seed=0)
    out = []
    for text in texts:
        toks = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        new = []
        for t in llm.generate(toks, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if t in eos:  # the same end-of-turn ids tunelab's decoder stops at
                break
            new.append(t)
            if len(new) >= max_new_tokens:
                break
        # decode with tunelab's tokenizer so both texts come from the same detokeniser
        out.append((toks, tokenizer.decode(new, skip_special_tokens=True)))
    return out


def main(argv: list[str] | None = None) -> int:
    from tunelab.models.gguf_write import writable_quants

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--out", default="runs/gguf-export")
    ap.add_argument("--quants", default=",".join(writable_quants()))
    ap.add_argument("--compare", default="f32,f16,q8_0", help="quant types to run through llama.cpp")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quants = [q for q in args.quants.split(",") if q]
    report = {"model": args.model, "adapter": args.adapter, "exports": export_all(args.model, args.adapter, out, quants)}

    if importlib.util.find_spec("llama_cpp") is None:
        print("llama_cpp is not installed (pip install llama-cpp-python): no llama.cpp comparison")
    else:
        import llama_cpp

        tok, texts, ids, ours, eos = tunelab_continuations(args.model, args.adapter, args.max_new_tokens)
        report["llama_cpp_version"] = llama_cpp.__version__
        report["compare"] = []
        for q in [q for q in args.compare.split(",") if q]:
            path = out / f"model-{q}.gguf"
            if not path.is_file():
                continue
            theirs = llama_cpp_continuations(str(path), texts, args.max_new_tokens, eos, tok)
            rows = []
            for p, i, mine, (their_ids, their_text) in zip(PROMPTS, ids, ours, theirs):
                part = next((k for k, (a, b) in enumerate(zip(mine, their_text)) if a != b), min(len(mine), len(their_text)))
                rows.append({"prompt": p, "same_prompt_ids": list(their_ids) == i, "same": mine == their_text,
                             "parts_at_char": None if mine == their_text else part, "tunelab": mine, "llama_cpp": their_text})
            same = sum(r["same"] for r in rows)
            ids_ok = sum(r["same_prompt_ids"] for r in rows)
            report["compare"].append({"quant": q, "identical": same, "prompts": len(rows), "same_prompt_ids": ids_ok, "rows": rows})
            print(f"llama.cpp {llama_cpp.__version__} {q:>5}: {same}/{len(rows)} greedy continuations identical to tunelab's; "
                  f"prompt token ids identical {ids_ok}/{len(rows)}", flush=True)
            for r in rows:
                if not r["same"]:
                    print(f"   parts at char {r['parts_at_char']}: {r['prompt']!r}\n     tunelab:   {r['tunelab']!r}\n"
                          f"     llama.cpp: {r['llama_cpp']!r}")
    (out / "gguf_export.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'gguf_export.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
