"""judge_score and judge_win_rate with a fake judge Backend: parsing, the flip rule, aggregation, the cache.

The fake judge reads the prompt it is given and answers by a rule the test knows, so every
number below is computed by hand: it never sees which order is "right".
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from tunelab.config import TaskConfig
from tunelab.errors import TunelabError
from tunelab.evaluate.judge.pairwise import combine, lc_win_rate
from tunelab.evaluate.judge.parse import parse_rating, parse_verdict
from tunelab.evaluate.judge.prompts import JudgeTemplate
from tunelab.evaluate.judge.run import Judge, JudgeSettings
from tunelab.evaluate.metrics import get_metric


class FakeJudge:
    """A Backend whose `generate` answers by `rule(prompt_text) -> text`; counts the prompts it is sent."""

    tokenizer = None  # endpoint-like: the judge prompt travels as messages
    cache_scope = ("fake-judge", None)

    def __init__(self, rule):
        self.rule, self.calls, self.batches = rule, 0, []

    def generate(self, contexts, seeds, *, batch_size, on_batch=None, max_new_tokens, stop, temperature, top_p):
        self.calls += len(contexts)
        self.batches.append((len(contexts), batch_size, temperature))
        return [{"text": self.rule(c.messages[0]["content"]), "prompt_tokens": 10, "new_tokens": 3, "latency_s": 0.0,
                 "finish": "stop"} for c in contexts]


def _section(prompt: str, title: str) -> str:
    return prompt.split(f"[{title}]\n", 1)[1].split("\n\n", 1)[0]


def score_rule(prompt: str) -> str:  # the rating is the number after "score=" in the answer; none: unreadable
    m = re.search(r"score=(\d+)", _section(prompt, "The assistant's answer"))
    return f"Reasoning here.\n[[{m.group(1)}]]" if m else "I cannot decide."


def good_rule(prompt: str) -> str:  # prefers the answer holding "good"; neither: a tie
    a, b = _section(prompt, "Answer A"), _section(prompt, "Answer B")
    if ("good" in a) == ("good" in b):
        return "Equal. [[C]]"
    return "[[A]]" if "good" in a else "[[B]]"


def _task(tmp_path, **judge) -> TaskConfig:
    return TaskConfig(name="t", data="x.jsonl", answer="{{ a }}", base_dir=str(tmp_path),
                      judge={"model": "fake", **judge})


def _metric(name, task, backend, cache_path):
    m = get_metric(name)
    m.for_task(task)
    c = task.judge
    m.judge = Judge(JudgeSettings(c.model, c.concurrency, c.max_new_tokens, c.temperature, c.cache, str(cache_path)),
                    backend=backend)
    return m


def test_parsing_is_strict():
    assert parse_rating("good answer.\n[[7]]") == 7 and parse_rating("[[ 10 ]]") == 10
    for text in ("7/10", "[[0]]", "[[11]]", "[[7.5]]", "[[3]] then [[8]]", "[7]", "", None):
        assert parse_rating(text) is None, text
    assert parse_rating("[[8]] ... final: [[8]]") == 8  # the same rating twice is not ambiguous
    assert parse_verdict("so [[B]]") == "B" and parse_verdict("[[C]]") == "C"
    for text in ("A is better", "[[A]] or [[B]]", "[[D]]", "[[a]]"):
        assert parse_verdict(text) is None, text


def test_judge_score_values_unparsed_and_details(tmp_path):
    fake = FakeJudge(score_rule)
    m = _metric("judge_score", _task(tmp_path), fake, tmp_path / "c.sqlite")
    preds = ["score=8 fine", "score=4 meh", "no rating here", "score=6"]
    items = [{"question": f"q{i}", "id": str(i)} for i in range(4)]
    r = m.compute(preds, [["ref"]] * 4, items, n_resamples=200)
    assert r.value == pytest.approx(6.0) and r.n == 3  # the unparsed item is left out, not scored 0
    assert r.extra["unparsed"] == 1 and r.item_values == [8.0, 4.0, None, 6.0]
    assert r.item_details[2] == {"judge_text": "I cannot decide.", "rating": None}
    assert r.cost["judge"]["calls"] == 4 and r.cost["judge"]["generated_tokens"] == 12
    assert r.signature.startswith("judge_score|judge:fake|template:")
    assert fake.batches == [(4, 8, 0.0)]  # one batch, concurrency 8, greedy
    assert json.loads(json.dumps(r.to_json()))["unparsed"] == 1


def test_reference_guided_shows_the_answer(tmp_path):
    seen = []
    fake = FakeJudge(lambda p: seen.append(p) or "[[5]]")
    m = _metric("judge_score", _task(tmp_path, reference=True), fake, tmp_path / "c.sqlite")
    m.compute(["x"], [["the right answer 42"]], [{"question": "q"}])
    assert "[A correct answer]\nthe right answer 42" in seen[0]
    with pytest.raises(TunelabError, match="item 7 of .* has no answer, which judge.reference: true needs"):
        m.compute(["x"], [[]], [{"question": "q", "id": "7"}])


def test_win_rate_both_orders_and_flip_is_tie(tmp_path):
    fake = FakeJudge(good_rule)
    m = _metric("judge_win_rate", _task(tmp_path, baseline="reference"), fake, tmp_path / "c.sqlite")
    preds = ["good one", "bad", "good too", "meh"]
    refs = [["plain"], ["good ref"], ["good ref"], ["plain"]]
    r = m.compute(preds, refs, [{"question": f"q{i}"} for i in range(4)], n_resamples=100)
    assert (r.extra["wins"], r.extra["losses"], r.extra["ties"]) == (1, 1, 2)
    assert r.value == pytest.approx((1 + 0 + 0.5 + 0.5) / 4) and r.extra["order_consistency"] == 1.0
    assert fake.calls == 8  # every pair in both orders
    d = r.item_details[0]
    assert d["verdict"] == "win" and [o["parsed"] for o in d["orders"]] == ["A", "B"]

    biased = FakeJudge(lambda p: "[[A]]")  # always the answer shown first: every verdict flips
    m2 = _metric("judge_win_rate", _task(tmp_path, baseline="reference"), biased, tmp_path / "c2.sqlite")
    r2 = m2.compute(preds, refs, [{"question": f"q{i}"} for i in range(4)], n_resamples=100)
    assert r2.value == 0.5 and r2.extra["ties"] == 4 and r2.extra["order_consistency"] == 0.0


def test_combine_rule():
    assert combine(1, 1) == 1 and combine(1, 2) == 0 and combine(0, 0) == 0 and combine(1, None) is None


def test_a_rerun_makes_zero_judge_calls(tmp_path):
    cache = tmp_path / "judge.sqlite"
    preds, refs, items = ["good a", "b"], [["r"], ["good r"]], [{"question": "q1"}, {"question": "q2"}]
    first = FakeJudge(good_rule)
    r1 = _metric("judge_win_rate", _task(tmp_path, baseline="reference"), first, cache).compute(preds, refs, items)
    again = FakeJudge(good_rule)
    r2 = _metric("judge_win_rate", _task(tmp_path, baseline="reference"), again, cache).compute(preds, refs, items)
    assert first.calls == 4 and again.calls == 0
    assert r2.value == r1.value and r2.cost["judge"]["cached"] == 4 and r2.cost["judge"]["calls"] == 0
    other = FakeJudge(good_rule)  # another rubric is another judgment
    _metric("judge_win_rate", _task(tmp_path, baseline="reference", rubric="harmlessness"), other, cache).compute(
        preds, refs, items)
    assert other.calls == 4


def test_a_failing_judge_keeps_what_it_judged(tmp_path):
    class Dies(FakeJudge):
        def generate(self, contexts, *a, **k):
            if self.calls >= 32:
                raise TunelabError("cannot reach the endpoint")
            return super().generate(contexts, *a, **k)

    cache = tmp_path / "c.sqlite"
    preds = [f"score={1 + i % 9}" for i in range(40)]
    items = [{"question": f"q{i}"} for i in range(40)]
    with pytest.raises(TunelabError, match="the 32 judgments made so far are cached: run the same command again"):
        _metric("judge_score", _task(tmp_path), Dies(score_rule), cache).compute(preds, [["r"]] * 40, items)
    rest = FakeJudge(score_rule)
    _metric("judge_score", _task(tmp_path), rest, cache).compute(preds, [["r"]] * 40, items)
    assert rest.calls == 8


def test_length_controlled_win_rate_removes_a_length_preference():
    rng = np.random.default_rng(0)
    d = rng.normal(300, 400, size=3000)        # the model's answers are mostly longer
    x = np.tanh(d / d.std())
    y = (rng.random(3000) < 1 / (1 + np.exp(-2.5 * x))).astype(float)  # wins come from length alone
    base = np.full(3000, 500.0)
    assert y.mean() > 0.65
    assert lc_win_rate(y, base + d, base) == pytest.approx(0.5, abs=0.05)
    ties = np.full(50, 0.5)  # all ties: 0.5 whatever the lengths
    assert lc_win_rate(ties, np.arange(50.0), np.zeros(50)) == pytest.approx(0.5, abs=1e-6)


def test_settings_are_checked_before_any_model_loads(tmp_path):
    bare = TaskConfig(name="t", data="x.jsonl")
    with pytest.raises(TunelabError, match="there is no default judge.*judge: \\{model:"):
        get_metric("judge_score").for_task(bare)
    with pytest.raises(TunelabError, match="judge.baseline is none; .*baseline: reference"):
        get_metric("judge_win_rate").for_task(_task(tmp_path))
    with pytest.raises(TunelabError, match="type: multiple_choice"):
        get_metric("judge_score").for_task(TaskConfig(name="t", data="x", type="multiple_choice", judge={"model": "m"}))
    (tmp_path / "mine.j2").write_text("Rate this: {{ answer }} [[N]]")
    with pytest.raises(TunelabError, match=r"mine.j2 lacks the placeholder \{\{ question \}\}"):
        get_metric("judge_score").for_task(_task(tmp_path, template="mine.j2"))
    (tmp_path / "ok.j2").write_text("Q: {{ question }} A: {{ answer }}")
    with pytest.raises(TunelabError, match=r"lacks the placeholder \{\{ reference \}\}"):
        get_metric("judge_score").for_task(_task(tmp_path, template="ok.j2", reference=True))
    get_metric("judge_score").for_task(_task(tmp_path, template="ok.j2"))  # fine without reference
    with pytest.raises(TunelabError, match="judge.template: no file"):
        get_metric("judge_score").for_task(_task(tmp_path, template="missing.j2"))


def test_shipped_templates_have_their_placeholders():
    for kind in ("score", "pairwise"):
        JudgeTemplate.load(kind, None).check(needs_reference=False)
    JudgeTemplate.load("score", None).check(needs_reference=True)


def test_task_file_judge_block_is_typed(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump({"name": "t", "data": "x.jsonl", "judge": {"model": "m", "concurency": 3}}))
    from tunelab.evaluate.tasks import resolve_task

    with pytest.raises(TunelabError, match="concurency"):
        resolve_task(str(f))


def test_length_control_fit_matches_a_general_optimiser():
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(1)
    d = rng.normal(100, 300, size=200)
    y = rng.choice([0.0, 0.5, 1.0], size=200, p=[0.3, 0.2, 0.5])
    x = np.tanh(d / d.std())

    def loss(b):  # the same penalised log-likelihood, minimised by a general-purpose method
        z = b[0] + b[1] * x
        return -(y * z - np.logaddexp(0, z)).sum() + 0.5 * 1e-2 * b[1] ** 2

    b = optimize.minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    assert lc_win_rate(y, 500 + d, np.full(200, 500.0)) == pytest.approx(1 / (1 + np.exp(-b[0])), abs=1e-6)
    idx = rng.integers(0, 200, size=(5, 200))
    per_row = lc_win_rate(y, 500 + d, np.full(200, 500.0), idx)
    assert per_row.shape == (5,) and np.all((per_row > 0) & (per_row < 1))


def test_judge_check_measures_the_judge_first(tmp_path):
    fake = FakeJudge(lambda p: "[[A]]")  # always the answer shown first
    m = _metric("judge_win_rate", _task(tmp_path, baseline="reference", check="builtin:llmbar-natural"), fake,
                tmp_path / "c.sqlite")
    r = m.compute(["good"], [["plain"]], [{"question": "q"}], n_resamples=100)
    check = r.extra["judge_check"]
    assert check["data"] == "builtin:llmbar-natural"
    # a judge that always names the first answer is right exactly when the label is the one shown first
    assert check["accuracy"]["value"] == 0.5 and check["order consistency"]["value"] == 0.0
    assert check["right in both orders"]["value"] == 0.0 and check["accuracy"]["n"] == 100
    assert fake.calls == 2 + 200 and r.cost["judge"]["calls"] == 202
    with pytest.raises(TunelabError, match="no such file"):
        get_metric("judge_score").for_task(_task(tmp_path, check="labels.json"))


def test_cache_false_judges_again(tmp_path):
    calls = []
    for _ in range(2):
        fake = FakeJudge(score_rule)
        _metric("judge_score", _task(tmp_path, cache=False), fake, tmp_path / "c.sqlite").compute(["score=3"], [["r"]], [{}])
        calls.append(fake.calls)
    assert calls == [1, 1] and not (tmp_path / "c.sqlite").exists()
