"""Registries find their members by scanning their package: a new module file is enough.

Each test drops a throwaway module into the real package (its folder is added to the package's
`__path__` for the test), lets the registry load again, and finds the new member registered and
working, with no list of modules edited anywhere.
"""
from __future__ import annotations

import json
import sys
import textwrap

import pytest
import yaml

from tunelab.errors import TunelabError

METRIC_MODULE = '''
from tunelab.evaluate.metrics.base import Metric
from tunelab.evaluate.metrics.registry import register


@register("throwaway_length")
class ThrowawayLength(Metric):
    """Characters of the output: a metric that lives only in this test."""

    description = "characters of the output (a test's throwaway metric)"

    def item_score(self, prediction, references, item):
        return float(len(prediction))
'''

TASK_TYPE_MODULE = '''
from tunelab.evaluate.task_types.base import Job, Ran, TaskType
from tunelab.evaluate.task_types.registry import register_task_type


@register_task_type("throwaway_echo")
class Echo(TaskType):
    """The 'output' is the prompt itself; only the tokenizer is used: a type that lives only in this test."""

    description = "echoes the prompt (a test's throwaway task type)"
    default_batch = 2
    prediction_keys = {"output": "the prompt, echoed", "gold": "the references"}

    def run(self, job: Job) -> Ran:
        rendered = [job.templates.render(r) for r in job.rows]
        items = [{"prompt": x.prompt, "output": x.prompt, "gold": [x.gold]} for x in rendered]
        return Ran(items, sum(job.backend.count_tokens(x.prompt) for x in rendered), 0)

    def references(self, items):
        return [it["gold"] for it in items]
'''


def _drop(package, monkeypatch, tmp_path, name: str, text: str):
    """Put module `name` into `package`'s folder list for this test; the registry scans again."""
    folder = tmp_path / package.__name__.replace(".", "_")
    folder.mkdir()
    (folder / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    monkeypatch.delitem(sys.modules, f"{package.__name__}.{name}", raising=False)


@pytest.fixture
def metric_registry(monkeypatch):
    from tunelab.evaluate.metrics import registry

    registry.known_metrics()  # the real ones, loaded before the test copies the table
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_loaded", set())
    return registry


@pytest.fixture
def task_type_registry(monkeypatch):
    from tunelab.evaluate.task_types import registry

    registry.known_task_types()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_loaded", set())
    return registry


def test_a_new_metric_module_is_registered(metric_registry, monkeypatch, tmp_path):
    import tunelab.evaluate.metrics as package

    assert "throwaway_length" not in metric_registry.known_metrics()
    monkeypatch.setattr(metric_registry, "_loaded", set())
    _drop(package, monkeypatch, tmp_path, "throwaway", METRIC_MODULE)
    assert "throwaway_length" in metric_registry.known_metrics()
    result = metric_registry.get_metric("throwaway_length").compute(["abc", "hello"], [[], []], [{}, {}],
                                                                    n_resamples=10, seed=1)
    assert result.item_values == [3.0, 5.0] and result.value == 4.0


def test_the_metric_modules_are_found_not_listed():
    from tunelab.evaluate.metrics import registry

    assert not hasattr(registry, "_MODULES")
    assert {"exact_match", "bleu", "rouge1", "acc", "token_perplexity", "refusal", "pref_acc"} <= set(
        registry.known_metrics())


def test_a_new_task_type_module_is_registered_and_runs(task_type_registry, monkeypatch, tmp_path, tiny_dir):
    import tunelab.evaluate.task_types as package
    from tunelab.evaluate.runner import evaluate

    monkeypatch.setattr(task_type_registry, "_loaded", set())
    _drop(package, monkeypatch, tmp_path, "throwaway", TASK_TYPE_MODULE)
    assert "throwaway_echo" in task_type_registry.known_task_types()
    rows = [{"q": "one", "a": "one"}, {"q": "two", "a": "three"}]
    (tmp_path / "echo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "echo.yaml").write_text(yaml.safe_dump({"name": "echo", "data": "echo.jsonl", "type": "throwaway_echo",
                                                        "prompt": "{{ q }}", "answer": "{{ a }}",
                                                        "metrics": ["exact_match"]}))
    res = evaluate(str(tiny_dir), tmp_path / "echo.yaml", out=tmp_path / "out")
    assert res.metrics["exact_match"]["value"] == 0.5
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [(x["output"], x["gold"]) for x in lines] == [("one", ["one"]), ("two", ["three"])]
    assert set(lines[0]) == {"id", "prompt", "output", "gold", "metrics"}


def test_an_unknown_task_type_is_one_line_naming_the_file_and_the_types(tmp_path):
    from tunelab.evaluate.tasks import resolve_task

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "data": "x.jsonl", "type": "multiple_choise"}))
    with pytest.raises(TunelabError) as e:
        resolve_task(str(path))
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "'multiple_choise' is not a task type" in msg
    assert "generate, multi_turn, multiple_choice, perplexity, preference, retrieval" in msg


def test_every_task_type_declares_what_the_runner_and_compare_ask():
    from tunelab.evaluate.task_types import TaskType, known_task_types

    types = known_task_types()
    assert sorted(types) == ["generate", "multi_turn", "multiple_choice", "perplexity", "preference", "retrieval"]
    for name, tt in types.items():
        assert isinstance(tt, TaskType) and tt.name == name and tt.description and tt.prediction_keys
        if tt.runs_model:  # a model-side type runs items and has a batch size; the other evaluates by itself
            assert type(tt).run is not TaskType.run and tt.default_batch
        else:
            assert type(tt).evaluate is not TaskType.evaluate


def test_text_only_metrics_are_the_ones_that_read_only_predictions_and_references():
    """`text_only` (what score_files accepts) is declared by each metric: the text, sacrebleu and rouge ones."""
    from tunelab.evaluate.metrics import known_metrics

    declared = {name for name, cls in known_metrics().items() if cls.text_only}
    by_module = {name for name, cls in known_metrics().items()
                 if cls.__module__.rsplit(".", 1)[-1] in ("text", "sacre", "rouge")}
    assert declared == by_module and {"exact_match", "bleu", "chrf", "ter", "rougeL", "json_schema"} <= declared


def _doc_example(path_comment: str) -> str:
    """The code block of docs/architecture.md that starts with `# src/tunelab/...<path_comment>`."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = next(b for b in page.split("```python\n")[1:] if b.startswith(f"# {path_comment}"))
    return block.split("```", 1)[0]


def test_the_docs_worked_metric_example_registers_and_scores(metric_registry, monkeypatch, tmp_path):
    """docs/architecture.md's metric example, dropped in as its one module, is found and scores."""
    import tunelab.evaluate.metrics as package

    _drop(package, monkeypatch, tmp_path, "brevity", _doc_example("src/tunelab/evaluate/metrics/brevity.py"))
    m = metric_registry.get_metric({"brevity": {"slack": 1}})
    assert m.text_only and m.compute(["abc", "abcdef"], [["ab"], ["abc", "abcd"]], n_resamples=10).item_values == [1.0, 0.0]


def test_the_docs_worked_task_type_example_runs(task_type_registry, monkeypatch, tmp_path, tiny_dir):
    """docs/architecture.md's task-type example, dropped in as its one module, runs end to end."""
    import tunelab.evaluate.task_types as package
    from tunelab.evaluate.runner import evaluate

    _drop(package, monkeypatch, tmp_path, "continuation", _doc_example("src/tunelab/evaluate/task_types/continuation.py"))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"q": f"{i} plus one is", "a": str(i + 1)}) + "\n"
                                              for i in range(3)))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"name": "c", "data": "c.jsonl", "type": "continuation",
                                                     "prompt": "{{ q }}", "answer": "{{ a }}", "metrics": []}))
    res = evaluate(str(tiny_dir), tmp_path / "c.yaml", out=tmp_path / "out", shots=1)
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert res.n == 3 and all(x["loglik"] < 0 and len(x["demos"]) == 1 for x in lines)
    assert set(lines[0]) == {"id", "prompt", "loglik", "demos", "metrics"}
