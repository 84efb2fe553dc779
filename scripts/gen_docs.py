"""Regenerate the key tables of docs/ from the code that defines them.

    python scripts/gen_docs.py           # rewrite the generated sections of docs/*.md in place
    python scripts/gen_docs.py --check   # exit 1, naming each stale page, if any section is out of date

A page mixes prose written by hand with tables generated here. A generated table sits between
two markers and is replaced whole:

    <!-- generated: task-keys (scripts/gen_docs.py; edit the code, then rerun) -->
    ...
    <!-- end generated: task-keys -->

The sources are the pydantic models of tunelab.config (every key's `Field(description=...)`), the
metric registry, the results contract (tunelab.evaluate.results) and the run-folder tables
(tunelab.train.files). tests/test_docs.py regenerates every page and fails when the committed
text differs, so changing a key without rerunning this script fails the tests.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import typing
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

DOCS = Path(__file__).resolve().parents[1] / "docs"
MARKER = re.compile(r"(<!-- generated: (?P<name>[a-z0-9-]+) [^\n]*-->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
                    re.S)


# ---------------------------------------------------------------- pydantic models -> key tables
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _prose(text: str) -> str:
    """A table cell of running text: `<task>` would read as an HTML tag, so `<` is escaped."""
    return re.sub(r"<(?=[A-Za-z/!])", "&lt;", _cell(text))


def type_name(ann: Any) -> str:
    """A YAML reader's name for a field's type: `lora | dora`, `int or null`, `list of str`."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return " \\| ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in args)
    if origin is typing.Union:
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "section"
    return {str: "text", int: "int", float: "number", bool: "bool"}.get(ann, getattr(ann, "__name__", str(ann)))


def default_text(field) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return ""
    return "`" + _cell(json.dumps(value, ensure_ascii=False)) + "`"


def _registered(model_cls: type[BaseModel], name: str) -> str | None:
    """The values of a key checked against a registry rather than a Literal: TrainConfig.method takes the
    methods train/objectives/ declares (config.py, in the base layer, cannot import them)."""
    if model_cls.__name__ == "TrainConfig" and name == "method":
        from tunelab.train.objectives import methods

        return " \\| ".join(methods())
    return None


def model_rows(model_cls: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every user key, sub-sections flattened as `a.b`."""
    rows = []
    for name, field in model_cls.model_fields.items():
        if field.exclude:
            continue  # internal (set by the loader), not a key the user writes
        key = prefix + (field.alias or name)  # `lambda` is a Python keyword: its field is orpo_lambda
        kind = _registered(model_cls, name) or type_name(field.annotation)
        rows.append((f"`{key}`", kind, default_text(field), _prose(field.description or "")))
        # a section, also when it may be null or a plain value instead (replay: null | {data, ratio})
        for sub in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                rows += model_rows(sub, key + ".")
    return rows


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def keys_table(model_cls: type[BaseModel]) -> str:
    return table(("key", "type", "default", "meaning"), model_rows(model_cls))


def dict_table(mapping: dict[str, str], what: str = "key") -> str:
    return table((what, "meaning"), [(f"`{_cell(k)}`", _prose(v)) for k, v in mapping.items()])


# ---------------------------------------------------------------- the sections
def _metrics() -> str:
    from tunelab.evaluate.metrics import known_metrics

    rows = []
    for name, cls in known_metrics().items():
        opts = ", ".join(f"{k}: {json.dumps(v)}" for k, v in sorted(cls.options_spec.items()))
        rows.append((f"`{name}`", _prose(getattr(cls, "description", "") or ""), f"`{_cell(opts)}`" if opts else ""))
    return table(("metric", "what it measures", "options (defaults)"), rows)


def _compare_arms() -> str:
    from tunelab import config

    out = []
    for label, cls in (("zero_shot", config.PromptArmSpec), ("few_shot", config.FewShotArmSpec),
                       ("lora / dora / full / qlora / dpo / orpo / grpo", config.FineTuneArmSpec), ("endpoint", config.EndpointArmSpec)):
        out.append(f"`{label}`: {cls.__doc__.strip()}\n\n{keys_table(cls)}")
    return "\n".join(out)


def _compare_retention() -> str:
    from tunelab import config

    return "\n".join(f"{cls.__doc__.strip()}\n\n{keys_table(cls)}"
                     for cls in (config.RetentionSpec, config.RetentionPromptsSpec))


def _predictions() -> str:
    from tunelab.evaluate.task_types import prediction_keys

    return "\n".join(f"**{kind}**\n\n{dict_table(keys)}" for kind, keys in prediction_keys().items())


def _task_types() -> str:
    from tunelab.evaluate.task_types import known_task_types

    return dict_table({name: t.description for name, t in known_task_types().items()}, "type")


def sections() -> dict[str, Callable[[], str]]:
    from tunelab import config
    from tunelab.evaluate import results
    from tunelab.train import files

    return {
        "task-keys": lambda: keys_table(config.TaskConfig),
        "task-types": _task_types,
        "metrics": _metrics,
        "train-keys": lambda: keys_table(config.TrainConfig),
        "compare-keys": lambda: keys_table(config.CompareConfig),
        "compare-arms": _compare_arms,
        "compare-retention": _compare_retention,
        "results-keys": lambda: dict_table(results.RESULTS_KEYS),
        "metric-entry-keys": lambda: dict_table(results.METRIC_ENTRY_KEYS),
        "cost-keys": lambda: dict_table(results.COST_DOC),
        "prediction-keys": _predictions,
        "run-folder": lambda: dict_table(files.RUN_FOLDER, "file"),
        "checkpoint-files": lambda: dict_table(files.CHECKPOINT_FILES, "file"),
        "metrics-keys": lambda: dict_table(files.METRICS_KEYS),
        "grpo-metrics-keys": lambda: dict_table(files.GRPO_METRICS_KEYS),
        "summary-keys": lambda: dict_table(files.SUMMARY_KEYS),
        "grpo-summary-keys": lambda: dict_table(files.GRPO_SUMMARY_KEYS),
    }


# ---------------------------------------------------------------- pages
def render(text: str, source: str = "page") -> str:
    """The page with every generated section replaced by today's version."""
    gens = sections()

    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in gens:
            raise SystemExit(f"{source}: unknown generated section '{name}'; known: {', '.join(gens)}")
        return m.group(1) + gens[name]() + m.group(4)

    return MARKER.sub(fill, text)


def pages(docs: Path = DOCS) -> dict[Path, tuple[str, str]]:
    """{page: (committed text, regenerated text)} for every page with a generated section."""
    out = {}
    for path in sorted(docs.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        if MARKER.search(text):
            out[path] = (text, render(text, str(path)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report stale pages instead of rewriting them")
    args = ap.parse_args(argv)
    found = pages()
    stale = [p for p, (old, new) in found.items() if old != new]
    if args.check:
        for p in stale:
            print(f"{p}: out of date with the code; run python scripts/gen_docs.py", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(found[p][1], encoding="utf-8")
        print(f"rewrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
