"""GRPO's packed groups under the CPU's per-span attention: one (n, n) mask per group against each
completion apart over [its prompt's keys | its own] (train/grpo_math.py, group_spans), and what
group_spans chooses. The default model (fp32) with a LoRA on all linear layers, forward + backward of
completion_logps on random token ids, per layout the faster of two timed passes after a warm-up.

    flock /tmp/heavy.lock python benchmarks/grpo_attention.py            # ~3 min on the 2-core CPU
    python benchmarks/grpo_attention.py --tiny                           # plumbing: a tiny model
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# (prompt tokens, G, completion tokens, groups): builtin:dates' shape, then long answers
CASES = [(54, 8, 16, 4), (100, 8, 256, 1), (100, 8, 512, 1)]
TINY_CASES = [(12, 4, 4, 2), (8, 4, 24, 1)]


def timed(model, batch, spans) -> tuple[float, object]:
    from tunelab.train.grpo_math import completion_logps

    batch.spans, times = spans, []
    for _ in range(3):  # a warm-up, then two timed passes
        t0 = time.perf_counter()
        logps, _ = completion_logps(model, batch)
        logps.sum().backward()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return min(times[1:]), logps.detach()


def main(argv=None) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from tunelab.infer.load import open_backend
    from tunelab.train import grpo_math
    from tunelab.train.attention import register

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a tiny random model and small cases (plumbing)")
    args = p.parse_args(argv)
    if args.tiny:
        from tunelab.models.tiny import tiny_model_and_tokenizer

        base, _ = tiny_model_and_tokenizer(seed=0)
    else:
        base = open_backend("default", device="cpu").lm.model
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    base.set_attn_implementation(register())
    model.train()
    vocab, g = base.config.vocab_size, torch.Generator().manual_seed(0)
    for P, G, C, groups in TINY_CASES if args.tiny else CASES:
        prompts, completions = [], []
        for _ in range(groups):
            prompt = torch.randint(4, vocab, (P,), generator=g).tolist()
            prompts += [prompt] * G
            completions += [torch.randint(4, vocab, (C,), generator=g).tolist() for _ in range(G)]
        batch = grpo_math.collate_completions(prompts, completions)
        chosen = len(batch.spans)
        layouts = {}
        for name, call_pairs in (("one mask per group", 10**12), ("apart", 0)):
            grpo_math.CALL_PAIRS, saved = call_pairs, grpo_math.CALL_PAIRS
            try:
                spans = grpo_math.collate_completions(prompts, completions).spans
            finally:
                grpo_math.CALL_PAIRS = saved
            layouts[name] = (len(spans), *timed(model, batch, spans))
        (n_mask, t_mask, a), (n_apart, t_apart, b) = layouts["one mask per group"], layouts["apart"]
        pick = "apart" if chosen == n_apart != n_mask else "one mask per group"
        print(f"prompt {P}, G {G}, completions {C}, {groups} group(s), {batch.n_tokens} tokens: one mask per "
              f"group {t_mask:.2f} s, apart {t_apart:.2f} s (x{t_mask / t_apart:.2f}); group_spans picks {pick}; "
              f"max |logp difference| {float((a - b).abs().max()):.1e}", flush=True)


if __name__ == "__main__":
    main()
