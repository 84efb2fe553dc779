"""Training objectives as registered objects (train/objectives/): the method list declared once,
found by scanning the package, read without torch; DPO's reference computed for the pairs a run uses."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from tunelab.errors import TunelabError
from tunelab.train import objectives
from tunelab.train.objectives import Objective, get_method, method_names, methods, resolve


def _cfg(method: str, weights: str = "lora"):
    return SimpleNamespace(method=method, preference=SimpleNamespace(weights=weights))


def test_every_method_is_declared_once_beside_its_objective():
    found = methods()
    assert list(found) == ["full", "lora", "dora", "qlora", "dpo", "orpo", "grpo"]  # SFT, preference, RL
    assert {n: m.objective.name for n, m in found.items()} == {
        "full": "sft", "lora": "sft", "dora": "sft", "qlora": "sft", "dpo": "dpo", "orpo": "orpo", "grpo": "grpo"}
    assert method_names("preference") == ("dpo", "orpo") and method_names("rl") == ("grpo",)
    assert all(issubclass(m.objective, Objective) for m in found.values())
    assert [n for n, m in found.items() if m.quantized] == ["qlora"]
    assert [n for n, m in found.items() if m.pairs] == ["dpo", "orpo"]


def test_both_axes_resolve_from_the_config():
    assert resolve(_cfg("lora")).adapter and not resolve(_cfg("full")).adapter
    dpo_full = resolve(_cfg("dpo", "full"))
    assert dpo_full.method.name == "dpo" and dpo_full.weights_method.name == "full" and not dpo_full.adapter
    assert resolve(_cfg("orpo", "dora")).weights.dora
    with pytest.raises(TunelabError, match=r"^method: must be 'full', 'lora', 'dora', 'qlora', 'dpo', 'orpo' or 'grpo' "
                                           r"\(got 'ppo'\); the methods: docs/train-config.md$"):
        get_method("ppo")


def test_the_compare_takes_its_arm_kinds_from_the_registry():
    from tunelab.compare.plan import arm_kinds, fine_tune_methods

    assert set(fine_tune_methods()) == set(methods())
    assert arm_kinds() == ("zero_shot", "few_shot", *methods(), "endpoint")


def test_the_method_list_reads_without_torch():
    """The config check, the compare's planner and the report read the list: no model runs there."""
    code = "import sys; from tunelab.train.objectives import methods; methods(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_an_objective_needing_a_provider_says_so(monkeypatch):
    """GRPO's shape: what an objective needs from the layers above arrives in train(providers=...)."""
    sft = get_method("lora").objective
    monkeypatch.setattr(sft, "needs", ("rollout",))
    with pytest.raises(TunelabError, match=r"method: lora needs rollout passed to train\(providers=\.\.\.\)"):
        objectives.build(SimpleNamespace(method="lora", preference=None))
    built = objectives.build(SimpleNamespace(method="lora", preference=None), {"rollout": print})
    assert built.providers == {"rollout": print}


def test_register_refuses_a_second_method_of_the_same_name():
    class Again(Objective):
        name, family = "again", "sft"
        methods = (objectives.Method("lora", lr=1e-4, weights=objectives.Weights(adapter=True)),)

    with pytest.raises(ValueError, match="method 'lora' is declared twice"):
        objectives.register_objective(Again)
