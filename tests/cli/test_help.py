"""`tunelab --help` names every training method (issue 34 item 8: it still said full | lora | dora | qlora)."""
from __future__ import annotations

import pytest

from tunelab.train.objectives import methods as declared_methods


def _help(capsys, *args) -> str:
    from tunelab.cli import main

    with pytest.raises(SystemExit):
        main([*args, "--help"])
    text = capsys.readouterr().out
    return " ".join(text.replace("│", " ").split())  # Rich's panel borders and folds out of the way


@pytest.mark.parametrize("args", [(), ("train",)])
def test_help_lists_the_methods_a_config_accepts(capsys, args):
    methods = declared_methods()
    assert {"dpo", "orpo"} <= set(methods)  # the list the help must follow
    assert f"Fine-tune a model ({' | '.join(methods)}) and write a run folder" in _help(capsys, *args)
