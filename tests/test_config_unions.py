"""A key that accepts several shapes reports the shape the user meant only (issue 34 item 4).

`retention: [{task: x, bogus: 1}]` read `retention.0.str: must be a valid string;
retention.0.RetentionSpec.bogus: unknown key ()`: one problem per Union member, the members'
type names in the key, and no allowed keys. The walk below finds every Union-typed key of every
config model (a list of a Union too) and feeds it a mapping with a bogus key and a wrong scalar.
"""
from __future__ import annotations

import inspect
import types
from typing import Union, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from tunelab import config as C

# the smallest valid body of each config model; a model added to config.py must be added here
MINIMAL = {
    C.LoraConfig: {}, C.DataConfig: {"train": "x.jsonl"}, C.EarlyStopping: {}, C.TrainLoopConfig: {},
    C.ReplayConfig: {"data": "g.jsonl"}, C.LogConfig: {}, C.PreferenceConfig: {},
    C.TrainConfig: {"data": {"train": "x.jsonl"}}, C.FewShotConfig: {}, C.GenerationConfig: {},
    C.TaskConfig: {"name": "t"}, C.CompareConfig: {"task": "t.yaml", "train_data": "p.jsonl", "arms": ["zero_shot"]},
    C.RetentionSpec: {"task": "t.yaml"}, C.RetentionPromptsSpec: {}, C.PromptArmSpec: {}, C.FewShotArmSpec: {},
    C.FineTuneArmSpec: {"n": 8}, C.TuneSpec: {"lr": [1e-4]}, C.EndpointArmSpec: {"model": "openai:http://x#m"},
    C.JudgeConfig: {"model": "default"}, C.GRPOConfig: {}, C.RewardSpec: {"metric": "exact_match"},
    C.RewardJudgeConfig: {}, C.ReferencesConfig: {"field": "reference"},
}
BOGUS = "bogus_key"
# words of a shape the user did not mean: pydantic's per-type messages and its member names
NOT_A_MAPPING = ("valid string", "valid number", "valid integer", "valid boolean", "valid list", "must be 'auto'")


def _models() -> list[type[BaseModel]]:
    return [c for _, c in inspect.getmembers(C, inspect.isclass)
            if issubclass(c, BaseModel) and c.__module__ == C.__name__ and not c.__name__.startswith("_")]


def _union_keys() -> list[tuple[type[BaseModel], str, bool, tuple]]:
    """(model, key, is a list of the Union, the Union's members other than None) for every Union-typed key."""
    out = []
    for model in _models():
        for key, field in model.model_fields.items():
            ann, in_list = field.annotation, False
            if get_origin(ann) is list:
                ann, in_list = get_args(ann)[0], True
            if field.exclude or get_origin(ann) not in (Union, types.UnionType):
                continue
            members = tuple(a for a in get_args(ann) if a is not type(None))
            if len(members) > 1 or in_list or isinstance(members[0], type) and issubclass(members[0], BaseModel):
                out.append((model, key, in_list, members))
    return out


def _message(model, key, value, in_list) -> str | None:
    data = dict(MINIMAL[model], **{key: [value] if in_list else value})
    try:
        model.model_validate(data)
    except ValidationError as e:
        return C.validation_message(model, e, "f.yaml")
    return None


def _problems(msg: str) -> list[str]:
    body = msg.removeprefix("f.yaml: ")
    body = body[:body.rindex(" (every key:")] if "(every key:" in body else body
    return body.split("; ")


def test_every_config_model_has_a_minimal_body():
    assert set(_models()) == set(MINIMAL), "add the new config model to MINIMAL"
    for model, body in MINIMAL.items():
        model.model_validate(body)
    # the walk finds the keys the issue names, and the others of their kind
    keys = {(m.__name__, k) for m, k, _, _ in _union_keys()}
    assert {("CompareConfig", "retention"), ("CompareConfig", "retention_prompts"), ("TrainLoopConfig", "lr"),
            ("FewShotArmSpec", "k"), ("FineTuneArmSpec", "tune"), ("TrainConfig", "replay")} <= keys


@pytest.mark.parametrize("model,key,in_list,members", _union_keys(),
                         ids=[f"{m.__name__}.{k}" for m, k, _, _ in _union_keys()])
def test_a_mapping_with_a_bogus_key_names_the_mapping_shape_only(model, key, in_list, members):
    where = f"{key}[0]" if in_list else key
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    # the mapping is otherwise valid (its required keys set), so the bogus key is its one problem
    msg = _message(model, key, dict(MINIMAL[models[0]] if models else {}, **{BOGUS: 1}), in_list)
    if any(get_origin(m) is dict for m in members):
        assert msg is None  # a free mapping (an arm, a metric's options): its keys are checked where it is read
        return
    assert msg is not None
    (problem,) = _problems(msg)
    if models:  # the user wrote the mapping shape: its unknown key, and the keys it allows
        allowed = [k for k, f in models[0].model_fields.items() if not f.exclude]
        assert problem.startswith(f"{where}.{BOGUS}: unknown key (")
        assert f"allowed: {', '.join(allowed)})" in problem and allowed
        assert not any(w in problem for w in NOT_A_MAPPING)
    else:  # no shape takes a mapping: one problem naming the shapes that are allowed
        assert problem.startswith(f"{where}: must be ") and problem.endswith("(got a mapping)")
    for m in members:  # pydantic's member names never show as keys
        assert f".{getattr(m, '__name__', '?')}" not in problem and "literal[" not in problem


@pytest.mark.parametrize("model,key,in_list,members", _union_keys(),
                         ids=[f"{m.__name__}.{k}" for m, k, _, _ in _union_keys()])
def test_a_wrong_scalar_names_the_scalar_shapes_only(model, key, in_list, members):
    where = f"{key}[0]" if in_list else key
    msgs = [m for m in (_message(model, key, v, in_list) for v in ("not-a-value", 12345, 0.5, True)) if m is not None]
    assert msgs, "no wrong scalar found for this key: add one above"
    takes_scalar = any(get_origin(m) not in (list, dict) and not (isinstance(m, type) and issubclass(m, BaseModel))
                       for m in members)
    for msg in msgs:
        (problem,) = _problems(msg)
        assert problem.startswith(f"{where}: "), problem
        if takes_scalar:  # the mapping shape was not meant: no word of it
            assert not any(w in problem for w in ("unknown key", "dictionary", "mapping", "allowed:")), problem
        else:  # only a mapping will do: say which keys it has
            assert "must be a mapping of " in problem, problem
        for m in members:
            assert f".{getattr(m, '__name__', '?')}" not in problem and "literal[" not in problem


def test_the_issue_case():
    msg = _message(C.CompareConfig, "retention", {"task": "x", BOGUS: 1}, True)
    assert msg == f"f.yaml: retention[0].{BOGUS}: unknown key (allowed: task, limit) (every key: docs/compare.md)"
    msg = _message(C.TrainLoopConfig, "epochs", "fast", False)
    assert msg == "f.yaml: epochs: must be a number or auto (got 'fast')"
