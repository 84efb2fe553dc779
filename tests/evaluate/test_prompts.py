"""Task templates over one record: types kept, and every bad input named precisely."""
from __future__ import annotations

import pytest

from tunelab.config import TaskConfig
from tunelab.data.records import Row
from tunelab.errors import TunelabError
from tunelab.evaluate.prompts import TaskTemplates
from tunelab.evaluate.task_types import get_task_type


def _mc(**kw) -> TaskTemplates:
    """A multiple_choice task's templates, as its task type builds them (choices rendered)."""
    spec = dict(name="t", type="multiple_choice", prompt="{{ question }}", choices="{{ options }}", answer="{{ label }}")
    spec.update(kw)
    return get_task_type("multiple_choice").templates(TaskConfig(**spec), "t.yaml")


def _row(**data) -> Row:
    return Row(7, data, "data.jsonl:7")


def test_renders_prompt_choices_and_int_gold():
    r = _mc().render(_row(question="2+2?", options=["3", "4"], label=1))
    assert (r.prompt, r.choices, r.gold) == ("2+2?", ["3", "4"], 1)


def test_list_expression_and_gold_given_as_text():
    t = _mc(choices="{{ [ans0, ans1, ans2] }}", answer="{{ gold }}")
    r = t.render(_row(question="q", ans0="a", ans1="b", ans2="c", gold="c"))
    assert r.choices == ["a", "b", "c"] and r.gold == 2


def test_digit_string_gold_is_an_index_unless_it_is_a_choice():
    t = _mc()
    assert t.render(_row(question="q", options=["x", "y"], label="1")).gold == 1
    assert t.render(_row(question="q", options=["1", "7"], label="1")).gold == 0  # the text "1"


def test_missing_field_names_field_record_and_fields_present():
    with pytest.raises(TunelabError) as e:
        _mc(prompt="{{ context }} {{ question }}").render(_row(question="q", options=["a"], label=0))
    msg = str(e.value)
    assert "'context'" in msg and "data.jsonl:7" in msg and "label, options, question" in msg and "t.yaml" in msg


def test_missing_attribute_inside_an_expression():
    with pytest.raises(TunelabError, match="'answers'"):
        _mc(choices="{{ meta.answers }}").render(_row(question="q", meta={"x": 1}, label=0))


def test_choices_not_a_list():
    with pytest.raises(TunelabError, match=r"data.jsonl:7: 'choices' must give a list, got str"):
        _mc().render(_row(question="q", options="a b c", label=0))


@pytest.mark.parametrize("label", [3, -1])
def test_gold_index_out_of_range(label):
    with pytest.raises(TunelabError, match=rf"gold index {label} is out of range for 3 choices"):
        _mc().render(_row(question="q", options=["a", "b", "c"], label=label))


def test_gold_text_that_is_no_choice():
    with pytest.raises(TunelabError, match="neither a choice index nor one of the choices"):
        _mc(answer="{{ gold }}").render(_row(question="q", options=["a", "b"], gold="z"))


def test_generate_references_stay_strings_or_lists():
    t = TaskTemplates(TaskConfig(name="g", prompt="{{ q }}", answer="{{ a }}"), "g.yaml")
    assert t.render(_row(q="x", a=42)).gold == "42"
    t2 = TaskTemplates(TaskConfig(name="g", prompt="{{ q }}", answer="{{ [s1, s2] }}"), "g.yaml")
    assert t2.render(_row(q="x", s1="one", s2="two")).gold == ["one", "two"]


def test_multiple_choice_without_choices_template_is_an_error():
    with pytest.raises(TunelabError, match="t.yaml: a multiple_choice task needs both 'choices' and 'answer'"):
        _mc(choices=None)


def test_a_generate_task_ignores_a_choices_key():
    """Only the multiple_choice type renders choices: a generate task's gold stays its reference text."""
    task = TaskConfig(name="g", prompt="{{ q }}", choices="{{ opts }}", answer="{{ a }}")
    r = get_task_type("generate").templates(task, "g.yaml").render(_row(q="x", opts=["y", "z"], a="z"))
    assert (r.choices, r.gold) == (None, "z")


def test_syntax_error_names_the_key():
    with pytest.raises(TunelabError, match="'prompt' template is not valid Jinja2"):
        TaskTemplates(TaskConfig(name="t", prompt="{{ q "), "t.yaml")
