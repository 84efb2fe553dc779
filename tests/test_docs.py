"""The reference pages in docs/ stay complete, up to date with the code, and reachable.

- every key of every config model (train config, task, compare) has a `Field(description=...)`;
- the generated tables in docs/*.md equal what scripts/gen_docs.py makes from today's code;
- every `docs/NAME.md` that src/ names (help texts, errors, docstrings) and every relative link
  between the pages points at a file that exists.
"""
from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from tunelab import config
from tunelab.errors import TunelabError

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config_models() -> list[type[BaseModel]]:
    return [cls for _, cls in inspect.getmembers(config, inspect.isclass)
            if issubclass(cls, BaseModel) and cls.__module__ == config.__name__ and cls.model_fields]


def test_every_config_key_has_a_description():
    models = _config_models()
    assert {"TrainConfig", "TaskConfig", "CompareConfig", "LoraConfig", "GenerationConfig"} <= {m.__name__ for m in models}
    missing = [f"{m.__name__}.{name}" for m in models for name, f in m.model_fields.items()
               if not f.exclude and not (f.description or "").strip()]
    assert not missing, f"keys without Field(description=...): {missing}; add one and run python scripts/gen_docs.py"


def test_every_metric_has_a_description():
    from tunelab.evaluate.metrics import known_metrics

    missing = [name for name, cls in known_metrics().items() if not (getattr(cls, "description", "") or "").strip()]
    assert not missing


def test_committed_docs_match_the_code():
    gen = _gen_docs()
    pages = gen.pages(DOCS)
    stale = [p.name for p, (old, new) in pages.items() if old != new]
    assert not stale, f"out of date with the code: {stale}; run python scripts/gen_docs.py and commit the result"
    used = {m.group("name") for old, _ in pages.values() for m in gen.MARKER.finditer(old)}
    assert used == set(gen.sections()), "every generated section appears on a page, and only known ones"


def test_generator_replaces_a_stale_table():
    gen = _gen_docs()
    page = ("intro\n<!-- generated: train-keys (scripts/gen_docs.py; edit the code, then rerun) -->\n"
            "| old | table |\n<!-- end generated: train-keys -->\nafter\n")
    new = gen.render(page)
    assert "| old | table |" not in new and new.startswith("intro\n") and new.endswith("after\n")
    assert "| `train.lr` | number or auto | `\"auto\"` |" in new and "| `data.train` | text | required |" in new
    assert gen.render(new) == new  # regenerating is a fixed point


def test_type_names_read_like_yaml():
    gen = _gen_docs()
    f = config.TrainLoopConfig.model_fields
    assert gen.type_name(f["compile"].annotation) == "bool or auto"
    assert gen.type_name(f["max_steps"].annotation) == "int or null"
    # the methods are declared beside their objectives (train/objectives/): the page lists those
    from tunelab.train.objectives import method_names

    listed = " \\| ".join(method_names())  # the table escapes the | between alternatives
    assert f"| `method` | {listed} |" in gen.keys_table(config.TrainConfig)


def _doc_names_in_src() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "src" / "tunelab").rglob("*.py")):
        for m in re.finditer(r"docs/([A-Za-z0-9_.-]+\.md)", path.read_text(encoding="utf-8")):
            found.setdefault(m.group(1), []).append(str(path.relative_to(ROOT)))
    return found


def test_every_docs_page_named_in_src_exists():
    found = _doc_names_in_src()
    assert {"tasks.md", "train-config.md", "run-folder.md"} <= set(found)  # the scan finds what it should
    missing = {name: where for name, where in found.items() if not (DOCS / name).is_file()}
    assert not missing, f"src/ names docs pages that do not exist: {missing}"


def test_links_between_pages_resolve():
    broken = []
    for page in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not (page.parent / target).is_file():
                broken.append(f"{page.name} -> {target}")
    assert not broken


def test_results_tables_name_exactly_the_written_keys():
    from tunelab.evaluate import results
    from tunelab.evaluate.metrics import get_metric

    res = results.build_results(task="t", model={"name": "m"}, n=1, shots=0, metrics={},
                                cost=results.make_cost(1.0), signature="s")
    assert list(results.RESULTS_KEYS) == list(res.to_json())
    assert list(results.COST_DOC) == list(results.COST_KEYS)
    entry = get_metric("exact_match").compute(["a"], [["a"]]).to_json()
    assert list(results.METRIC_ENTRY_KEYS) == list(entry)


@pytest.mark.parametrize("loader, data, page", [
    (config.load_task, {"name": "t", "promt": "x"}, "docs/tasks.md"),
    (config.load_train_config, {"data": {"train": "a.jsonl"}, "trian": {}}, "docs/train-config.md"),
    (lambda d: config.load_config(config.CompareConfig, d), {"task": "t", "train_data": "d", "arms": ["zero_shot"],
                                                             "limt": 3}, "docs/compare.md"),
])
def test_a_bad_key_names_the_page_that_lists_every_key(loader, data, page):
    with pytest.raises(TunelabError, match=rf"unknown key .*\(every key: {re.escape(page)}\)$"):
        loader(data)
