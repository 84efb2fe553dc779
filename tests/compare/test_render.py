"""One task file renders every arm: fine-tuned arms train on the text their test prompts use."""
from __future__ import annotations

import json

import pytest
import yaml

from tunelab.compare.plan import make_plan
from tunelab.compare.render import OWN, TASK, first_example, subset_records
from tunelab.data.formats import to_conversation
from tunelab.data.records import Row
from tunelab.errors import TunelabError
from tunelab.evaluate.prompts import TaskTemplates
from tunelab.fewshot import ContextBuilder
from tunelab.templates.render import IGNORE, encode

PAIRS = [("A man is walking.", "Ein Mann geht."), ("Two dogs play.", "Zwei Hunde spielen."),
         ("A girl reads a book.", "Ein Mädchen liest ein Buch."), ("The sun is hot.", "Die Sonne ist heiß."),
         ("A cat sleeps.", "Eine Katze schläft."), ("Children are running.", "Kinder rennen.")]


def translation(tmp_path, *, chat: bool, arms=None, pool_rows=None):
    """A Multi30K-shaped compare: pool and test file share the fields en / de (the issue's case)."""
    rows = [{"id": f"p{i}", "en": en, "de": de} for i, (en, de) in enumerate(PAIRS)]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (pool_rows or rows)))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    task = {"name": "en-de", "data": "test.jsonl", "type": "generate", "chat": chat,
            "prompt": "Translate to German: {{ en }}" + ("" if chat else "\nGerman:"), "answer": "{{ de }}",
            "metrics": ["chrf"]}
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    cfg = {"name": "t", "task": "task.yaml", "train_data": "pool.jsonl", "retention_prompts": None,
           "arms": arms or ["zero_shot", {"few_shot": {"k": [1]}}, {"lora": {"n": [4]}}]}
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_chat_task_trains_on_messages_built_from_its_templates(tmp_path):
    plan = make_plan(translation(tmp_path, chat=True), out=tmp_path / "out")
    assert plan.rendering.mode == TASK and plan.rendering.format == "messages"
    rec = subset_records(plan.task, plan.source, plan.subset(4), plan.rendering)[0]
    src = next(r for r in plan.pool if r.data["id"] == rec["id"]).data
    assert rec["messages"] == [{"role": "user", "content": f"Translate to German: {src['en']}"},
                               {"role": "assistant", "content": src["de"]}]
    assert plan.train_config(plan.arms[-1])["data"]["format"] == "messages"


def test_plain_task_trains_on_prompt_delimiter_answer_without_a_chat_template(tmp_path):
    plan = make_plan(translation(tmp_path, chat=False), out=tmp_path / "out")
    assert plan.rendering.format == "plain"
    rec = subset_records(plan.task, plan.source, plan.subset(4), plan.rendering)[0]
    src = next(r for r in plan.pool if r.data["id"] == rec["id"]).data
    assert rec == {"id": rec["id"], "prompt": f"Translate to German: {src['en']}\nGerman:", "completion": " " + src["de"]}


@pytest.mark.parametrize("chat", [True, False])
def test_training_prompt_tokens_are_the_test_prompt_tokens(tmp_path, tiny, chat):
    """The untrained part of a training example is token for token what evaluation feeds for that record."""
    _, tok = tiny
    plan = make_plan(translation(tmp_path, chat=chat), out=tmp_path / "out")
    templates = TaskTemplates(plan.task, plan.source)
    builder = ContextBuilder(plan.task, templates, [], k=0, sampler="random", seed=0, pool_is_eval=False, tokenizer=tok)
    for row, rec in zip(plan.subset(4), subset_records(plan.task, plan.source, plan.subset(4), plan.rendering)):
        enc = encode(tok, to_conversation(Row(1, rec, "x:1"), plan.rendering.format))
        first_trained = next(i for i, lab in enumerate(enc.labels) if lab != IGNORE)
        test_prompt = builder.build(row, templates.prompt(row)).text
        assert enc.input_ids[:first_trained] == tok(test_prompt, add_special_tokens=False)["input_ids"]
        trained = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])
        assert row.data["de"] in trained


def test_plain_records_train_the_completion_and_eos_only(tiny):
    _, tok = tiny
    conv = to_conversation(Row(1, {"prompt": "Q: 2+2?\nA:", "completion": " 4"}, "f:1"), "plain")
    assert conv.messages == [] and conv.prefix == "Q: 2+2?\nA:" and conv.text == " 4"
    enc = encode(tok, conv)
    n_prompt = len(tok("Q: 2+2?\nA:", add_special_tokens=False)["input_ids"])
    assert enc.labels[:n_prompt] == [IGNORE] * n_prompt
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:] and enc.input_ids[-1] == tok.eos_token_id
    assert "<|im_start|>" not in tok.decode(enc.input_ids)  # no chat template
    with pytest.raises(TunelabError, match="field 'completion' is empty"):
        to_conversation(Row(2, {"prompt": "Q", "completion": " "}, "f:2"), "plain")


def test_pool_in_a_training_format_of_its_own_still_trains_and_says_so(tmp_path):
    own = [{"prompt": f"English: {en}", "completion": de} for en, de in PAIRS]
    path = translation(tmp_path, chat=True, pool_rows=own, arms=["zero_shot", {"lora": {"n": [4]}}])
    plan = make_plan(path, out=tmp_path / "out")
    assert plan.rendering.mode == OWN and plan.rendering.format == "prompt_completion"
    assert "cannot render it" in plan.rendering.note and "may differ from the test prompt" in plan.rendering.note
    assert subset_records(plan.task, plan.source, plan.subset(2), plan.rendering)[0] in own


def test_few_shot_arms_need_the_task_s_fields_and_fail_before_anything_runs(tmp_path):
    own = [{"prompt": f"English: {en}", "completion": de} for en, de in PAIRS]
    path = translation(tmp_path, chat=True, pool_rows=own)
    with pytest.raises(TunelabError) as e:
        make_plan(path, out=tmp_path / "out")
    msg = str(e.value)
    assert "train_data" in msg and "pool.jsonl:1" in msg and "uses field 'en'" in msg and "\n" not in msg


def test_a_pool_no_one_can_read_is_refused_with_its_line(tmp_path):
    bad = [{"english": en, "german": de} for en, de in PAIRS]
    path = translation(tmp_path, chat=True, pool_rows=bad, arms=["zero_shot", {"lora": {"n": [4]}}])
    with pytest.raises(TunelabError, match=r"pool.jsonl:1.*no training format either"):
        make_plan(path, out=tmp_path / "out")


def test_first_example_shows_the_trained_answer_and_the_test_prompt(tmp_path, tiny):
    from tunelab.compare.run import _write_subsets
    from tunelab.evaluate.runner import load_task_rows

    _, tok = tiny
    plan = make_plan(translation(tmp_path, chat=True), out=tmp_path / "out")
    _write_subsets(plan)
    first = subset_records(plan.task, plan.source, plan.subset(4), plan.rendering)[0]
    text = first_example(tok, plan.task, plan.source, plan.subset_path(4), "messages", load_task_rows(plan.task)[0])
    assert f"⟦{first['messages'][1]['content']}" in text
    assert "# first test prompt" in text and "Translate to German: A man is walking." in text
