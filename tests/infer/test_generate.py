"""Batched generation: batch invariance, agreement with HF generate, stop strings, EOS, sampling."""
from __future__ import annotations

import pytest
import torch

from tunelab.infer.generate import generate

PROMPTS = ["Question: what is the answer?", "Hello", "The quick brown fox jumps over the lazy dog. 0 1 2 3",
           "abc", "Reverse the words. Hello, world!", "Convert the date March 5, 2021 to ISO format.",
           "Summarize: Alice met Bob in Paris.", "1 2", "You are a helpful assistant."]


@pytest.fixture(scope="module")
def lively():
    """A tiny model with larger weights, so greedy outputs vary instead of repeating one token."""
    from tunelab.models.tiny import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer(seed=3)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model, tok


def test_greedy_identical_at_batch_1_and_8(lively):
    model, tok = lively
    a = generate(model, tok, PROMPTS, max_new_tokens=20, batch_size=1)
    b = generate(model, tok, PROMPTS, max_new_tokens=20, batch_size=8)
    assert [x.text for x in a] == [x.text for x in b]
    assert len({x.text for x in a}) > 3  # the outputs differ: the test can tell rows apart
    assert all(x.new_tokens == 20 and x.finish == "length" for x in a)


def test_greedy_matches_hf_generate_one_at_a_time(lively):
    model, tok = lively
    ours = generate(model, tok, PROMPTS[:4], max_new_tokens=12, batch_size=4)
    for prompt, g in zip(PROMPTS[:4], ours):
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")
        ref = model.generate(**ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert g.text == tok.decode(ref[0, ids.input_ids.shape[1]:], skip_special_tokens=True)


def test_stop_string_truncates_and_ends_the_row(lively):
    model, tok = lively
    free = generate(model, tok, PROMPTS, max_new_tokens=20, batch_size=8)
    # a stop string taken from the middle of one row's free-running output
    row = next(i for i, g in enumerate(free) if len(g.text.strip()) > 8)
    text = free[row].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = generate(model, tok, PROMPTS, max_new_tokens=20, stop=[stop], batch_size=8)
    assert cut[row].text == text[: text.find(stop)]
    assert cut[row].finish == "stop" and cut[row].new_tokens < 20
    for f, c in zip(free, cut):  # every row is its free output cut at its first stop string, if any
        assert c.text == (f.text[: f.text.find(stop)] if stop in f.text else f.text)


def test_eos_stops_each_row_and_is_not_in_the_text(lively):
    model, tok = lively
    first = generate(model, tok, PROMPTS[:1], max_new_tokens=1)[0]
    eos = tok(first.text, add_special_tokens=False)["input_ids"][0]
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos
    try:
        g = generate(model, tok, PROMPTS[:1], max_new_tokens=10)[0]
    finally:
        model.generation_config.eos_token_id = old
    assert (g.text, g.finish, g.new_tokens) == ("", "eos", 1)


def test_seeded_sampling_reproducible_and_batch_invariant(lively):
    model, tok = lively
    seeds = list(range(len(PROMPTS)))
    a = generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, seeds=seeds, batch_size=1)
    b = generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, seeds=seeds, batch_size=8)
    c = generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, seeds=[s + 100 for s in seeds], batch_size=8)
    greedy = generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=8)
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]
    assert [x.text for x in a] != [x.text for x in greedy]


def test_long_prompt_keeps_its_last_tokens(lively):
    model, tok = lively
    g = generate(model, tok, ["word " * 50], max_new_tokens=2, max_prompt_tokens=10)[0]
    assert g.prompt_tokens == 10


def _spy_joins(monkeypatch) -> list:
    """The number of rows of every group that joins a running batch."""
    from tunelab.infer import decode

    joins = []
    real_join = decode.DecodeBatch.join
    monkeypatch.setattr(decode.DecodeBatch, "join", lambda self, other: (joins.append(other.mask.shape[0]), real_join(self, other)))
    return joins


def test_continuous_batching_joins_rows_and_matches_one_at_a_time(lively, monkeypatch):
    """Rows that finish early (stop strings) leave and waiting prompts join the running batch; the
    greedy text of every row is still what it is when generated alone."""
    model, tok = lively
    free = generate(model, tok, PROMPTS, max_new_tokens=16, batch_size=1)
    # stop strings from the middle of two outputs: those rows (and any that contain them) end early
    stops = [g.text[len(g.text) // 2 : len(g.text) // 2 + 2] for g in free if len(g.text.strip()) > 8][:2]
    alone = generate(model, tok, PROMPTS, max_new_tokens=16, stop=stops, batch_size=1)
    joins = _spy_joins(monkeypatch)
    done = []
    together = generate(model, tok, PROMPTS, max_new_tokens=16, stop=stops, batch_size=3, on_batch=done.append)
    assert joins  # prompts joined a batch that was still decoding
    assert sum(done) == len(PROMPTS)
    assert [g.text for g in together] == [g.text for g in alone]
    assert [g.finish for g in together] == [g.finish for g in alone]
    assert len({g.new_tokens for g in alone}) > 1  # rows really finished at different steps


# ------------------------------------------------------------ the shared prefix
SENTENCES = ["Hello, world!", "Alice met Bob in Paris.", "The quick brown fox.", "what is the answer?", "0 1 2 3",
             "Reverse the words.", "the lazy dog", "March 5, 2021", "yes, no, maybe."]
SHARED = [f"Translate the sentence into French.\nEnglish: {s}\nFrench:" for s in SENTENCES]


def _prefix_len(tok) -> int:
    from tunelab.infer.decode import common_prefix

    p = common_prefix([tok(x, add_special_tokens=False)["input_ids"] for x in SHARED])
    assert p * (len(SHARED) - 1) >= 32  # long enough that generate() shares it
    return p


def test_prefill_on_a_shared_prefix_gives_the_logits_of_the_whole_prompts(lively):
    from tunelab.infer.decode import DecodeBatch, SharedPrefix

    model, tok = lively
    seqs = [tok(x, add_special_tokens=False)["input_ids"] for x in SHARED[:4]]
    p = _prefix_len(tok)
    whole = DecodeBatch.prefill(model, seqs, 0)
    shared = DecodeBatch.prefill(model, seqs, 0, prefix=SharedPrefix.run(model, seqs[0][:p]))
    torch.testing.assert_close(shared.logits, whole.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(shared.next_pos, whole.next_pos)  # positions continue after the prefix
    assert shared.mask.shape[1] == max(len(s) for s in seqs)  # [prefix | padding | remainder]: as wide as the longest


def _spy_prefix(monkeypatch) -> list:
    from tunelab.infer import decode

    used = []
    real = decode.DecodeBatch.prefill.__func__

    def prefill(cls, model, seqs, pad, cache_kw=None, prefix=None):
        used.append(0 if prefix is None else len(prefix))
        return real(cls, model, seqs, pad, cache_kw, prefix)

    monkeypatch.setattr(decode.DecodeBatch, "prefill", classmethod(prefill))
    return used


def test_shared_prefix_gives_the_tokens_of_each_prompt_alone(lively, monkeypatch):
    model, tok = lively
    alone = generate(model, tok, SHARED, max_new_tokens=12, batch_size=1, share_prefix=False)
    used = _spy_prefix(monkeypatch)
    shared = generate(model, tok, SHARED, max_new_tokens=12, batch_size=4)
    assert used and all(p == _prefix_len(tok) for p in used)  # every prefill ran on the shared prefix
    assert [g.text for g in shared] == [g.text for g in alone]
    assert len({g.text for g in alone}) > 3
    for prompt, g in zip(SHARED[:2], shared):  # and both are what HF generate gives for the whole prompt
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")
        ref = model.generate(**ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert g.text == tok.decode(ref[0, ids.input_ids.shape[1]:], skip_special_tokens=True)


def test_rows_join_a_running_batch_on_the_shared_prefix(lively, monkeypatch):
    model, tok = lively
    free = generate(model, tok, SHARED, max_new_tokens=16, batch_size=1, share_prefix=False)
    stops = [g.text[len(g.text) // 2 : len(g.text) // 2 + 2] for g in free if len(g.text.strip()) > 8][:2]
    alone = generate(model, tok, SHARED, max_new_tokens=16, stop=stops, batch_size=1, share_prefix=False)
    used = _spy_prefix(monkeypatch)
    joins = _spy_joins(monkeypatch)
    together = generate(model, tok, SHARED, max_new_tokens=16, stop=stops, batch_size=3)
    assert joins and len(used) > 1 and all(used)  # rows joined mid-run, prefilled on the prefix
    assert [g.text for g in together] == [g.text for g in alone]
    assert [g.new_tokens for g in together] == [g.new_tokens for g in alone]
    assert len({g.new_tokens for g in alone}) > 1


def test_a_prefix_with_wrong_positions_is_caught(lively, monkeypatch):
    """The check above can fail: remainders whose positions restart at 0 (instead of continuing
    after the prefix) give other tokens."""
    from tunelab.infer import decode

    model, tok = lively
    alone = generate(model, tok, SHARED, max_new_tokens=12, batch_size=1, share_prefix=False)
    p, real = _prefix_len(tok), decode.positions
    monkeypatch.setattr(decode, "positions", lambda m: torch.cat([real(m[:, :p]), real(m[:, p:])], dim=1))
    broken = generate(model, tok, SHARED, max_new_tokens=12, batch_size=4)
    assert [g.text for g in broken] != [g.text for g in alone]


def test_no_shared_prefix_when_prompts_share_too_little(lively, monkeypatch):
    model, tok = lively
    used = _spy_prefix(monkeypatch)
    generate(model, tok, PROMPTS, max_new_tokens=2, batch_size=4)
    generate(model, tok, SHARED[:1], max_new_tokens=2)  # one prompt: nothing to share
    assert used and not any(used)


def test_waiting_prompts_join_in_groups_and_keep_their_tokens(lively, monkeypatch):
    """A running batch of 8 admits waiting prompts once 2 rows are free (one join call for both);
    every row still gets the tokens it gets alone."""
    from tunelab.infer.generate import join_group

    model, tok = lively
    prompts = PROMPTS + SHARED
    free = generate(model, tok, prompts, max_new_tokens=12, batch_size=1)
    # one character from a third of the way into each of ten outputs: most rows end early, at different steps
    stops = [g.text[len(g.text) // 3] for g in free if len(g.text.strip()) > 8][:10]
    alone = generate(model, tok, prompts, max_new_tokens=12, stop=stops, batch_size=1)
    joins = _spy_joins(monkeypatch)
    together = generate(model, tok, prompts, max_new_tokens=12, stop=stops, batch_size=8)
    assert join_group(8) == 2 and join_group(3) == 1
    assert len(joins) > 1 and all(n >= 2 for n in joins[:-1])  # only the last group may be smaller (what was left)
    assert [g.text for g in together] == [g.text for g in alone]


def test_identical_prompts_are_prefilled_once_and_sample_as_if_alone(lively, monkeypatch):
    """GRPO's G samples of one prompt: each distinct prompt runs once in the prefill, its keys/values are
    copied under its rows, and every row samples with its own seed what it samples alone."""
    model, tok = lively
    prompts = [PROMPTS[0]] * 4 + [PROMPTS[5]] * 3 + [PROMPTS[0]]
    seeds = [11, 12, 13, 14, 15, 16, 17, 18]
    alone = [generate(model, tok, [p], max_new_tokens=10, temperature=1.0, seeds=[s], batch_size=1)[0]
             for p, s in zip(prompts, seeds)]
    fed = []
    real = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: (fed.append(tuple(k["input_ids"].shape)), real(*a, **k))[1])
    together = generate(model, tok, prompts, max_new_tokens=10, temperature=1.0, seeds=seeds, batch_size=8)
    assert fed[0][0] == 2  # the prefill: two distinct prompts, not eight rows
    assert fed[1] == (8, 1)  # then every row decodes
    assert [g.text for g in together] == [g.text for g in alone]
    assert len({g.text for g in together[:4]}) > 1  # the copies sampled different completions
