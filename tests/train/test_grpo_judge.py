"""method: grpo with an LLM judge's rating as the reward (grpo.rewards: [{metric: judge_score}]): one batched
judge call per generation batch, rescaled ratings, unreadable ratings neutral and counted, the judge's
cost per step and in summary.json, the cache, and the bad inputs.

The fake judge is a Backend whose rating is a rule of the answer it is shown, so every reward below is
known by hand; it is put where the judge opens its backends (evaluate/judge/run.py's _OPENED), so the
run goes through the CLI's own providers (evaluate/rewards.py) unchanged."""
from __future__ import annotations

import json

import pytest
import yaml

from tunelab.errors import TunelabError
from tunelab.train.rollouts import Prompt, Reward, score

from .conftest import metrics, write_config

JUDGE = "fake-judge"


class FakeJudge:
    """Rates an answer by its length: 1 + (length % 10); an answer whose length is a multiple of 3 gets no
    bracketed rating (unparsed). Records every batch it is sent."""

    tokenizer = None  # endpoint-like: the judge prompt travels as messages
    cache_scope = ("fake-judge", None)

    def __init__(self, fail_after: int | None = None):
        self.batches: list[list[str]] = []  # the answers of each generate call
        self.fail_after = fail_after

    def generate(self, contexts, seeds, *, batch_size, on_batch=None, max_new_tokens, stop, temperature, top_p):
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise TunelabError(f"{JUDGE}: cannot reach the endpoint (connection refused)")
        answers = [_answer(c.messages[0]["content"]) for c in contexts]
        self.batches.append(answers)
        return [{"text": _verdict(a), "prompt_tokens": 10, "new_tokens": 3, "latency_s": 0.0, "finish": "stop"}
                for a in answers]


def _answer(prompt: str) -> str:
    """The answer as the template shows it (tunelab's score.j2, or the test's own below)."""
    after = prompt.split("[The assistant's answer]\n", 1)[1]
    for end in ("\n\nExplain your judgment", "\n[End of the assistant's answer]"):
        after = after.split(end, 1)[0]
    return after


def rating(answer: str):
    return None if len(answer.strip()) % 3 == 0 else 1 + len(answer.strip()) % 10


def _verdict(answer: str) -> str:
    r = rating(answer)
    return "No rating, sorry." if r is None else f"Fine.\n[[{r}]]"


@pytest.fixture
def fake(monkeypatch):
    from tunelab.evaluate.judge import run

    judge = FakeJudge()
    monkeypatch.setitem(run._OPENED, JUDGE, judge)
    return judge


@pytest.fixture
def task_file(tmp_path):
    """Open questions with a judge: block (no answer: the judge needs none)."""
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"q": f"Tell me about the number {i}."}) + "\n" for i in range(8)))
    task = tmp_path / "open.yaml"
    task.write_text(yaml.safe_dump({"name": "open", "data": "questions.jsonl", "prompt": "{{ q }}", "chat": True,
                                    "metrics": ["judge_score"], "judge": {"model": JUDGE}}))
    return task


def judge_config(make_config, task, name="judged", steps=3, **reward):
    settings = {"num_generations": 4, "max_completion_length": 6, "task": str(task),
                "rewards": [{"metric": "judge_score", "weight": 1.0, **reward}]}
    return make_config(name, method="grpo", grpo=settings, lora={"r": 4, "alpha": 8, "dropout": 0.0},
                       data={"eval": None, "max_length": 96},
                       train={"max_steps": steps, "batch_tokens": 3 * 4 * 60, "lr": 5e-3, "warmup": 0,
                              "save_every": 1, "eval_every": 100})


def _providers(cfg, base_dir):
    from tunelab.config import load_train_config
    from tunelab.evaluate.rewards import providers

    return providers(load_train_config(cfg), base_dir)


def test_a_judged_run_batches_rescales_and_counts(make_config, task_file, tmp_path, fake):
    from tunelab.train.loop import train

    cfg = judge_config(make_config, task_file)
    res = train(cfg, providers=_providers(cfg, tmp_path))
    rows = metrics(res.run_dir)
    assert len(rows) == 3 and len(fake.batches) == 3  # the judge got ONE batch per generation batch
    for row, answers in zip(rows, fake.batches):
        missed = sum(rating(a) is None for a in answers)
        assert len(answers) % 4 == 0 and row["judge_calls"] == len(answers) and row["judge_cached"] == 0
        assert row["judge_unparsed"] == missed and row["judge_tokens"] == 13 * len(answers) and row["judge_s"] >= 0
    assert sum(r["judge_unparsed"] for r in rows) > 0  # the rule leaves some unread: the fill below is exercised
    samples = [json.loads(x) for x in (res.run_dir / "completions.jsonl").read_text().splitlines()]
    for k in range(0, len(samples), 4):  # completions.jsonl holds whole groups of G = 4
        group = samples[k:k + 4]
        ratings = [rating(s["completion"]) for s in group]
        known = [(r - 1) / 9 for r in ratings if r is not None]
        for s, r in zip(group, ratings):
            want = (r - 1) / 9 if r is not None else (sum(known) / len(known) if known else None)
            if want is not None:  # a group with nothing rated takes the batch's mean, not visible here
                assert s["rewards"]["judge_score"] == pytest.approx(want)
    total = sum(len(b) for b in fake.batches)
    judge = res.summary["judge"]
    assert judge["calls"] == total and judge["unparsed"] == sum(r["judge_unparsed"] for r in rows)
    assert judge["tokens"] == 13 * total and res.summary["completions_generated"] == total
    from tunelab.train import files

    documented = set(files.METRICS_KEYS) | {k.replace("NAME", "judge_score") for k in files.GRPO_METRICS_KEYS}
    assert set(rows[0]) - documented == set()

    # the same run again samples the same completions: every judgment comes from the cache
    again = train(judge_config(make_config, task_file, "again"), providers=_providers(cfg, tmp_path))
    assert len(fake.batches) == 3 and [r["judge_cached"] for r in metrics(again.run_dir)] == [r["judge_calls"]
                                                                                            for r in rows]
    assert [r["reward"] for r in metrics(again.run_dir)] == [r["reward"] for r in rows]


def test_an_unrated_completion_is_neutral_in_its_group():
    class Batch:
        name, weight, fn = "judge", 1.0, None

        def __init__(self, values):
            self.values, self.seen = values, []

        def batch(self, texts, items):
            self.seen.append(len(texts))
            return self.values

    prompts = [Prompt(f"p{i // 3}", {}, f"p{i // 3}") for i in range(9)]
    r = Batch([0.2, None, 0.8, None, None, None, 1.0, 1.0, 0.4])
    got = [row[0] for row in score([r], prompts, ["x"] * 9, group=3)]
    mean_all = (0.2 + 0.8 + 1.0 + 1.0 + 0.4) / 5
    assert got == pytest.approx([0.2, 0.5, 0.8, mean_all, mean_all, mean_all, 1.0, 1.0, 0.4])
    assert r.seen == [9]  # one call for the whole batch
    assert [row[0] for row in score([Batch([None] * 3)], prompts[:3], ["x"] * 3, group=3)] == [0.0] * 3
    plain = Reward("len", 0.5, lambda text, item: len(text))  # a per-completion reward beside it
    assert score([plain, Batch([None, 0.3, None])], prompts[:3], ["a", "bb", "c"], group=3) == \
        [[1.0, 0.3], [2.0, 0.3], [1.0, 0.3]]
    with pytest.raises(TunelabError, match=r"^grpo reward judge gave inf on the completion 'x'"):
        score([Batch([float("inf"), 0.1, 0.2])], prompts[:3], ["x"] * 3, group=3)
    with pytest.raises(TunelabError, match="grpo reward judge gave 2 values for 3 completions"):
        score([Batch([0.1, 0.2])], prompts[:3], ["x"] * 3, group=3)


def test_the_reward_overrides_the_tasks_judge(make_config, task_file, tmp_path, fake):
    """The reward's judge: keys win over the task's; its template is read beside the training config."""
    (tmp_path / "strict.j2").write_text("Rate strictly.\n[Question]\n{{ question }}\n\n[The assistant's answer]\n"
                                        "{{ answer }}\n[End of the assistant's answer]\n{{ rubric }}")
    cfg = judge_config(make_config, task_file, judge={"rubric": "brevity", "template": "strict.j2",
                                                      "max_new_tokens": 16})
    (reward,) = _providers(cfg, tmp_path)["rewards"]
    c = reward.metric.cfg
    assert (c.model, c.rubric, c.max_new_tokens, c.concurrency) == (JUDGE, "brevity", 16, 8)
    assert reward.batch(["abcd", "abc"], [{"question": "q", "gold": []}] * 2) == [pytest.approx(4 / 9), None]
    assert reward.stats()["judge_unparsed"] == 1 and reward.stats()["judge_calls"] == 2
    assert "Rate strictly." in reward.metric.requests(["a"], [[]], [{"question": "q"}])[0].messages[0]["content"]
    (default,) = _providers({**cfg, "grpo": {**cfg["grpo"], "rewards": []}}, tmp_path)["rewards"]
    assert default.name == "judge_score" and default.metric.cfg.rubric is None  # the task's first metric, its judge


def test_bad_judge_rewards_are_one_line(make_config, task_file, tmp_path, fake):
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"name": "bare", "data": "questions.jsonl", "prompt": "{{ q }}"}))
    (tmp_path / "bad.j2").write_text("Rate this: {{ question }} [[N]]")
    cases = [
        (judge_config(make_config, bare), r"^grpo.rewards\[0\]: metric judge_score needs a judge model; there is no "
                                          r"default judge: .*judge: \{model: \.\.\.\}\}\)$"),
        (judge_config(make_config, task_file, judge={"template": "bad.j2"}),
         r"^grpo.rewards\[0\]: judge template .*bad.j2 lacks the placeholder \{\{ answer \}\}"),
        (judge_config(make_config, task_file, judge={"reference": True}),
         r"^grpo.rewards\[0\]: judge.reference: true shows the judge the task's answer, and .*open.yaml has no answer"),
        (judge_config(make_config, task_file, pattern="x"), r"^grpo.rewards\[0\]: metric judge_score takes weight and "
                                                            r"judge: \{\.\.\.\}, not pattern"),
        (judge_config(make_config, task_file, judge={"model": "openai:http://127.0.0.1:9/v1#judge"}),
         r"^grpo.rewards\[0\]: openai:http://127.0.0.1:9/v1#judge: cannot reach the endpoint .*is the server running"),
    ]
    cases.append((judge_config(make_config, task_file, judge={"check": "builtin:llmbar-natural"}),
                  r"^config: grpo.rewards\[0\].judge.check: unknown key .*allowed: model, template, rubric"))
    cfg = judge_config(make_config, task_file)
    cfg["grpo"]["rewards"] = [{"metric": "exact_match", "judge": {"model": JUDGE}}]
    cases.append((cfg, r"^grpo.rewards\[0\]: judge: is a setting of metric: judge_score, not of exact_match"))
    for cfg, message in cases:
        with pytest.raises(TunelabError, match=message) as e:
            _providers(cfg, tmp_path)
        assert "\n" not in str(e.value)


def test_a_judge_that_dies_mid_run_stops_it_with_one_line(make_config, task_file, tmp_path, fake, capsys):
    """Exit 2, one line naming the judge and --resume; step 1's checkpoint is kept and the run resumes."""
    from tunelab.cli import main
    from tunelab.train import checkpoint as ckpt

    fake.fail_after = 1  # the judge answers step 1, then is gone
    path = write_config(judge_config(make_config, task_file, "dies"), tmp_path / "dies.yaml")
    with pytest.raises(SystemExit) as e:
        main(["train", str(path)])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    err = lines[-1]  # before it: the warning that the fake judge left some completions unrated
    assert err.startswith("error: ") and [x for x in lines if x.startswith("error")] == [err], lines
    assert f"judge {JUDGE}: {JUDGE}: cannot reach the endpoint" in err and "the 0 judgments made so far are cached" in err
    assert "the run stopped, its last checkpoint kept" in err and "--resume" in err
    assert ckpt.latest(tmp_path / "dies").name == "step-1"
    fake.fail_after = None
    with pytest.raises(SystemExit) as e:
        main(["train", str(path), "--resume"])
    assert e.value.code == 0 and len(metrics(tmp_path / "dies")) == 3


def test_a_local_judge_is_its_own_model(make_config, task_file, tmp_path, tiny_dir, caplog):
    """A local judge loads apart from the policy: full-weight training moves the policy, not the judge. Being the
    base model, it is warned about (self-preference). The tiny random judge writes no rating: all unparsed,
    all neutral."""
    import logging

    import torch

    from tunelab.evaluate.judge import run
    from tunelab.infer.load import load_local
    from tunelab.train.loop import train

    cfg = judge_config(make_config, task_file, "local", steps=2, judge={"model": str(tiny_dir), "max_new_tokens": 4})
    cfg["grpo"]["weights"], cfg["train"]["lr"] = "full", 1e-2
    cfg["grpo"]["rewards"].append({"metric": "regex", "pattern": "[aeiou]", "weight": 1.0})  # moves the policy
    with caplog.at_level(logging.WARNING, logger="tunelab.evaluate"):
        given = _providers(cfg, tmp_path)
        res = train(cfg, providers=given)
    assert any("is the base model being trained" in m and "self-preference" in m for m in caplog.messages)
    rows = metrics(res.run_dir)
    assert [r["judge_unparsed"] for r in rows] == [r["judge_calls"] for r in rows] and rows[0]["judge_calls"] > 0
    assert all(r["rewards/judge_score/mean"] == 0 and r["rewards/judge_score/std"] == 0 for r in rows)
    assert any(r["grad_norm"] > 0 for r in rows)  # the policy moved
    judge = run._OPENED[str(tiny_dir)].lm.model
    base = load_local(str(tiny_dir)).model
    assert all(torch.equal(a, b) for a, b in zip(judge.state_dict().values(), base.state_dict().values()))


@pytest.fixture(scope="module")
def judge_server(tiny_dir):
    """tunelab serve (a real HTTP server) with the tiny model: an endpoint judge."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("openai")
    from tunelab.serve.engine import load_served
    from tunelab.serve.server import BackgroundServer, create_app

    served = load_served(str(tiny_dir), {}, device="cpu")
    with BackgroundServer(create_app(served, batch_size=4, queue_size=64)) as srv:
        yield f"openai:{srv.url}#{served.name}"


def test_an_endpoint_judge_gets_each_batch_at_once(make_config, task_file, tmp_path, judge_server, monkeypatch):
    """Through a real server: one backend call per generation batch, its requests `concurrency` in flight."""
    from tunelab.infer.endpoint import EndpointBackend
    from tunelab.train.loop import train

    sent, real = [], EndpointBackend.generate

    def counting(self, contexts, seeds, *, batch_size, **k):
        sent.append((len(contexts), batch_size))
        return real(self, contexts, seeds, batch_size=batch_size, **k)

    monkeypatch.setattr(EndpointBackend, "generate", counting)
    cfg = judge_config(make_config, task_file, "served", steps=2,
                       judge={"model": judge_server, "max_new_tokens": 6, "concurrency": 4})
    res = train(cfg, providers=_providers(cfg, tmp_path))
    rows = metrics(res.run_dir)
    assert sent == [(r["judge_calls"], 4) for r in rows] and all(n > 4 for n, _ in sent)
    assert all(r["judge_tokens"] > 0 and 0 <= r["judge_unparsed"] <= r["judge_calls"] for r in rows)
    assert res.summary["judge"]["calls"] == sum(n for n, _ in sent)
