"""type: multi_turn: every user turn answered with the model's own earlier answers in context, every
turn scored and judged (reference-guided only where a turn has a reference), results per turn, the
bad inputs, and examples/tasks/mt_bench.yaml on the MT-Bench files."""
from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tunelab.errors import TunelabError
from tunelab.evaluate.judge.run import Judge
from tunelab.evaluate.runner import evaluate, load_task_rows
from tunelab.evaluate.task_types import Job, task_type
from tunelab.evaluate.tasks import resolve_task
from tunelab.fewshot import ContextBuilder

ROOT = Path(__file__).resolve().parents[2]
RECORDS = [{"question_id": 7, "category": "math", "turns": ["What is 2 + 3?", "Now double it."]},
           {"question_id": 8, "category": "writing", "turns": ["Write a haiku.", "Make it sadder."]},
           {"question_id": 9, "category": "writing", "turns": ["Say hi."]}]  # one turn only
REFERENCES = [{"question_id": 7, "choices": [{"index": 0, "turns": ["5", "10"]}]}]


def _files(tmp_path, records=RECORDS, ref_records=REFERENCES, **spec) -> Path:
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "ref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ref_records))
    task = {"name": "mt", "type": "multi_turn", "data": "q.jsonl", "turns": "turns",
            "references": {"path": "ref.jsonl", "key": "question_id", "field": "choices.0.turns"},
            "generation": {"max_new_tokens": 6, "stop": [], "temperature": 0.0}, "metrics": ["refusal"], **spec}
    path = tmp_path / "mt.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def _dry_run(path: Path, spec: dict, capsys):
    """`tunelab compare PATH --dry-run` on SPEC written there: its exit code and captured output."""
    from tunelab.cli import main

    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as e:
        main(["compare", str(path), "--dry-run"])
    return e.value.code, capsys.readouterr()


class Spy:
    """An endpoint-like Backend (messages, no tokenizer) whose answer names the turn it was asked; it keeps
    every conversation it was sent."""

    tokenizer = None
    cache_scope = ("spy", None)

    def __init__(self):
        self.sent = []

    def generate(self, contexts, seeds, *, batch_size, on_batch=None, **settings):
        self.sent.append([c.messages for c in contexts])
        if on_batch:
            on_batch(len(contexts))
        return [{"text": f"answer to <{c.messages[-1]['content']}>", "prompt_tokens": 3, "new_tokens": 2,
                 "latency_s": 0.0, "finish": "stop"} for c in contexts]


def test_each_turn_is_answered_in_the_conversation_of_its_own_answers(tmp_path):
    task = resolve_task(_files(tmp_path))
    tt = task_type(task)
    rows = load_task_rows(task)
    spy, done = Spy(), []
    templates = tt.templates(task, "mt.yaml")
    builder = ContextBuilder(task, templates, [], k=0, sampler="random", seed=0, pool_is_eval=False)
    ran = tt.run(Job(spy, task, rows, templates, builder, 8, progress=done.append))
    assert len(spy.sent) == 2 and [len(b) for b in spy.sent] == [3, 2]  # turn 1 of all three, then turn 2 of two
    assert spy.sent[1][0] == [{"role": "user", "content": "What is 2 + 3?"},
                              {"role": "assistant", "content": "answer to <What is 2 + 3?>"},  # its own answer
                              {"role": "user", "content": "Now double it."}]
    assert [(it["turn"], it["gold"]) for it in ran.items] == [(1, ["5"]), (2, ["10"]), (1, []), (2, []), (1, [])]
    assert ran.kept == [0, 0, 1, 1, 2] and sum(done) == tt.units(task, rows) == 5
    assert ran.items[1]["history"] == [{"user": "What is 2 + 3?", "assistant": "answer to <What is 2 + 3?>",
                                        "reference": "5"}]


def test_tiny_chat_model_writes_a_line_per_turn_and_results_per_turn(tiny_dir, tmp_path, capsys):
    from tunelab.templates import render_prompt
    from transformers import AutoTokenizer

    res = evaluate(str(tiny_dir), _files(tmp_path), out=tmp_path / "out")
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [(x["id"], x["turn"]) for x in lines] == [("7:1", 1), ("7:2", 2), ("8:1", 1), ("8:2", 2), ("9:1", 1)]
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    first, second = lines[0], lines[1]
    # the second turn's prompt is the chat template over [user 1, the model's own answer 1, user 2]
    assert second["prompt"] == render_prompt(tok, [{"role": "user", "content": "What is 2 + 3?"},
                                                   {"role": "assistant", "content": first["output"]},
                                                   {"role": "user", "content": "Now double it."}])
    assert first["output"] and first["output"] in second["prompt"] and first["prompt"] in second["prompt"]
    m = res.metrics["refusal"]
    assert set(m["by_turn"]) == {"1", "2"} and m["by_turn"]["1"]["n"] == 3 and m["by_turn"]["2"]["n"] == 2
    per_turn = {t: [x["metrics"]["refusal"] for x in lines if x["turn"] == int(t)] for t in ("1", "2")}
    assert m["by_turn"]["2"]["value"] == pytest.approx(sum(per_turn["2"]) / 2)
    assert m["value"] == pytest.approx(sum(per_turn["1"] + per_turn["2"]) / 5)
    assert res.n == 5 and "length_chars" in lines[0]  # the per-response metrics score every turn too
    from tunelab.cli.tables import print_results

    capsys.readouterr()
    print_results(res)  # what `tunelab eval` prints: a row per turn under the metric
    out = capsys.readouterr().out
    assert "refusal turn 1" in out and "refusal turn 2" in out


def _rating(prompt: str) -> str:  # the judge gives 8 to a first turn, 4 to a later one (it sees the history)
    return "Fine. [[4]]" if "[The user, turn 1]" in prompt else "Fine. [[8]]"


def test_judge_score_per_turn_reference_guided_only_where_a_reference_exists(tiny_dir, tmp_path, monkeypatch):
    from tests.evaluate.test_judge_metrics import FakeJudge

    seen = []
    fake = FakeJudge(lambda p: seen.append(p) or _rating(p))
    monkeypatch.setattr("tunelab.evaluate.metrics.judge.Judge", lambda s: Judge(s, backend=fake))
    path = _files(tmp_path, metrics=["judge_score"], judge={"model": "some-judge", "reference": True})
    res = evaluate(str(tiny_dir), path, out=tmp_path / "out")
    js = res.metrics["judge_score"]
    assert js["value"] == pytest.approx((8 * 3 + 4 * 2) / 5) and fake.calls == 5
    assert js["by_turn"]["1"]["value"] == 8 and js["by_turn"]["2"]["value"] == 4 and js["by_turn"]["2"]["n"] == 2
    assert js["reference_guided"] == 2  # both turns of the one record with references
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    by_q = {re.search(r"\[The user's (?:request|latest message)\]\n(.*)\n", p).group(1): p for p in seen}
    assert "[A correct answer]\n5" in by_q["What is 2 + 3?"] and "[A correct answer]\n10" in by_q["Now double it."]
    assert "[A correct answer to turn 1]\n5" in by_q["Now double it."]  # the earlier turn's reference too
    assert f"[The assistant, turn 1]\n{lines[0]['output']}" in by_q["Now double it."]  # its own first answer
    for q in ("Write a haiku.", "Make it sadder.", "Say hi."):  # no reference: graded without one
        assert "correct answer" not in by_q[q]
    assert [x["judge_score"]["rating"] for x in lines] == [8, 4, 8, 4, 8]


def test_judge_win_rate_and_a_reference_guided_judge_without_references_are_refused(tmp_path):
    from tunelab.evaluate.metrics import get_metric

    task = resolve_task(_files(tmp_path, judge={"model": "j", "baseline": "reference"}))
    with pytest.raises(TunelabError, match="answer different conversations; rate them one at a time with judge_score"):
        get_metric("judge_win_rate").for_task(task)
    task = resolve_task(_files(tmp_path, references=None, judge={"model": "j", "reference": True}))
    with pytest.raises(TunelabError, match="judge.reference: true shows the judge each turn's reference answer, and "
                                           "this task names none; add references:"):
        get_metric("judge_score").for_task(task)


@pytest.mark.parametrize("turns, got", [(None, "no such field"), ("just one string", "str 'just one string'"),
                                        ([1, 2], r"list '\[1, 2\]'"), ([], r"list '\[\]'"),
                                        (["ok", ""], r"list \"\['ok', ''\]\"")])
def test_bad_turns_name_the_record(tiny_dir, tmp_path, turns, got):
    bad = {"question_id": 8} if turns is None else {"question_id": 8, "turns": turns}
    path = _files(tmp_path, records=[RECORDS[0], bad])
    with pytest.raises(TunelabError, match=rf"q.jsonl:2: field 'turns' must be a non-empty list of user turns "
                                           rf"\(strings\), got {got}; fix the record") as e:
        evaluate(str(tiny_dir), path)
    assert e.value.exit_code == 2 and "\n" not in str(e.value)


def test_a_model_without_a_chat_template_is_refused(tiny_dir, tmp_path):
    plain = shutil.copytree(tiny_dir, tmp_path / "plain")
    (plain / "chat_template.jinja").unlink()
    with pytest.raises(TunelabError, match=r"holds conversations, rendered with the model's chat template, "
                                           r"and this model has none"):
        evaluate(str(plain), _files(tmp_path))


def test_references_that_match_no_record_are_refused(tiny_dir, tmp_path):
    path = _files(tmp_path, ref_records=REFERENCES + [{"question_id": 999, "choices": [{"turns": ["x"]}]}])
    with pytest.raises(TunelabError, match=r"ref.jsonl:2: reference question_id 999 matches no record of q.jsonl "
                                           r"\(1 of 2 references match none\); check references.key"):
        evaluate(str(tiny_dir), path)
    path = _files(tmp_path, ref_records=[{"id": 7, "choices": [{"turns": ["5"]}]}])
    with pytest.raises(TunelabError, match=r"ref.jsonl:1: this reference record lacks 'question_id'"):
        evaluate(str(tiny_dir), path)
    path = _files(tmp_path, ref_records=[{"question_id": 7, "choices": [{"turns": ["5", "10", "20"]}]}])
    with pytest.raises(TunelabError, match=r"q.jsonl:1: 3 reference answers for 2 turns"):
        evaluate(str(tiny_dir), path)


def test_shots_on_the_command_line_are_refused(tiny_dir, tmp_path):
    with pytest.raises(TunelabError, match=r"2-shot asked, and a multi_turn task takes no demonstrations"):
        evaluate(str(tiny_dir), _files(tmp_path), shots=2)


@pytest.mark.parametrize("extra, message", [
    ({"turns": None}, "a multi_turn task needs `turns:`"),
    ({"prompt": "{{ q }}"}, "takes its prompts from `turns:` .*; remove 'prompt'"),
    ({"answer": "{{ a }}"}, "remove 'answer'"),
    ({"chat": False}, "remove chat: false"),
    ({"fewshot": {"k": 2}}, "fewshot.k is 2, and a multi_turn task takes none"),
    ({"references": {"path": "ref.jsonl", "field": "choices.0.turns"}}, "references.path needs references.key"),
])
def test_task_file_mistakes_are_one_line(tmp_path, extra, message):
    with pytest.raises(TunelabError, match=message):
        resolve_task(_files(tmp_path, **extra))


def test_references_from_the_record_itself_and_the_compare_hooks(tmp_path):
    records = [{"id": "a", "turns": ["u1", "u2"], "reference": ["r1", "r2"]}, {"id": "b", "turns": ["v1"]}]
    task = resolve_task(_files(tmp_path, records=records, references={"field": "reference"}))
    tt, rows = task_type(task), load_task_rows(task)
    assert tt.training_record(task, None, rows[0])["messages"] == [
        {"role": "user", "content": "u1"}, {"role": "assistant", "content": "r1"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "r2"}]
    with pytest.raises(TunelabError, match="q.jsonl:2: turn 1 has no reference answer, and a fine-tune learns"):
        tt.training_record(task, None, rows[1])
    builder = ContextBuilder(task, tt.templates(task, "x"), [], k=0, sampler="random", seed=0, pool_is_eval=False)
    count = lambda text: len(text.split())  # noqa: E731  (words stand in for tokens)
    prompt, generated = tt.estimate_tokens(task, count, rows[0], None, builder)
    assert generated == 2 + 2  # each reference (one word) and a stop token
    # turn 1 reads its message; turn 2 the whole conversation with turn 1's estimated answer
    assert prompt == count("<user>\nu1\n<assistant>\n") + count("<user>\nu1\n<assistant>\n\n<user>\nu2\n<assistant>\n") + 2
    assert tt.estimate_tokens(task, count, rows[1], None, builder)[1] == task.generation.max_new_tokens


def test_mt_bench_example_on_the_shared_files(shared_data):
    task = resolve_task(ROOT / "examples" / "tasks" / "mt_bench.yaml")
    tt, rows = task_type(task), load_task_rows(task)
    templates = tt.templates(task, task.source)
    assert len(rows) == 80 and tt.units(task, rows) == 160 and {len(templates.turns(r)) for r in rows} == {2}
    referenced = [r for r in rows if all(x is not None for x in templates.references(r))]
    assert len(referenced) == 30
    assert Counter(r.data["category"] for r in referenced) == {"math": 10, "reasoning": 10, "coding": 10}
    assert not any(any(templates.references(r)) for r in rows if r not in referenced)
    assert task.judge.reference and "judge_score" in task.metrics and task.judge.model


def test_compare_dry_run_counts_every_turn_and_refuses_demonstrations(capsys, tiny_dir, tmp_path):
    pool = [{"id": f"p{i}", "turns": [f"ask {i}", f"and then {i}"], "reference": [f"r{i}", f"s{i}"]} for i in range(12)]
    task = _files(tmp_path, records=pool, references={"field": "reference"}, metrics=["rougeL"])
    spec = {"name": "mt", "model": str(tiny_dir), "task": task.name, "train_data": "q.jsonl", "limit": 4,
            "arms": ["zero_shot", {"lora": {"n": [8]}}], "train": {"train": {"max_steps": 2}}}
    path = tmp_path / "cmp.yaml"
    code, out = _dry_run(path, spec, capsys)
    assert code == 0, out.err
    assert "lora-n8" in out.out and "estimated total" in out.out
    from tunelab.compare.plan import make_plan
    from tunelab.compare.run import check_items

    check_items(make_plan(str(path)))  # what a real run reads before its first arm: every turn renders
    code, out = _dry_run(path, {**spec, "arms": ["zero_shot", {"few_shot": {"k": [2]}}]}, capsys)
    err = " ".join(out.err.split())
    assert code == 2 and "is a multi_turn task: its items are conversations" in err


def test_an_endpoint_gets_each_conversation_as_messages(tiny_dir, tmp_path):
    """Through a real server (tunelab serve): its chat template renders the conversation; the second turn's
    messages hold the first answer the server gave."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("openai")
    from tunelab.serve.engine import load_served
    from tunelab.serve.server import BackgroundServer, create_app

    served = load_served(str(tiny_dir), {}, device="cpu")
    with BackgroundServer(create_app(served, batch_size=4, queue_size=64)) as srv:
        evaluate(f"openai:{srv.url}#{served.name}", _files(tmp_path), out=tmp_path / "out")
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["7:1", "7:2", "8:1", "8:2", "9:1"]
    # the prompt written for an endpoint is the messages as a transcript: the first answer is in the second's
    assert lines[1]["prompt"] == (f"<user>\nWhat is 2 + 3?\n<assistant>\n{lines[0]['output']}\n"
                                  "<user>\nNow double it.\n<assistant>\n")


def test_grpo_on_conversations_is_refused_in_one_line(tmp_path):
    from tunelab.evaluate.rewards import task_prompts

    with pytest.raises(TunelabError, match="method: grpo samples answers, and this task is type: multi_turn"):
        task_prompts(resolve_task(_files(tmp_path)), None)


def test_a_cached_rerun_generates_nothing_and_gives_the_same_turns(tiny_dir, tmp_path, monkeypatch):
    from tunelab.infer.backend import LocalBackend

    sent, real = [], LocalBackend.generate
    monkeypatch.setattr(LocalBackend, "generate", lambda self, contexts, *a, **k: sent.append(len(contexts))
                        or real(self, contexts, *a, **k))
    path, cache = _files(tmp_path), tmp_path / "cache.sqlite"
    first = evaluate(str(tiny_dir), path, cache=cache)
    assert sent == [3, 2]  # turn 1 of three records, then turn 2 of two
    again = evaluate(str(tiny_dir), path, cache=cache)
    assert sent == [3, 2] and [x["output"] for x in again.predictions] == [x["output"] for x in first.predictions]


def test_a_judged_zero_shot_compare_counts_a_judgment_per_turn_and_needs_no_pool_references(capsys, tiny_dir,
                                                                                          tmp_path):
    """Only zero-shot: the pool's records lack references and nothing trains on them, so the plan takes
    them; the dry run's judge column counts one judge_score call per turn (5 turns in 3 records)."""
    task = _files(tmp_path, metrics=["judge_score"], judge={"model": str(tiny_dir), "reference": True})
    spec = {"name": "mt", "model": str(tiny_dir), "task": task.name, "train_data": "q.jsonl",
            "arms": ["zero_shot"]}
    code, out = _dry_run(tmp_path / "cmp.yaml", spec, capsys)
    assert code == 0, out.err
    row = next(line for line in out.out.splitlines() if "zero_shot" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[-3] == "5"  # judge calls: 2 + 2 + 1 turns
