"""`tunelab data inspect` on a preference file: the prompt once, each answer's scored tokens, what sharing saves."""
from __future__ import annotations

import json

from tunelab.cli import main
from tunelab.templates.inspect import inspect_pairs


def _pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "What is 2 plus 3?", "chosen": "The answer is 5.",
                                "rejected": "The answer is 6."}) + "\n")
    return path


def test_inspect_shows_a_pair_with_scored_answers(tmp_path, tiny_dir, capsys):
    try:
        main(["data", "inspect", str(_pairs(tmp_path)), "--model", str(tiny_dir)])
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert "[chosen]   The answer is 5.<|im_end|>" in out and "[rejected] The answer is 6.<|im_end|>" in out
    assert "What is 2 plus 3?" in out and "sharing saves" in out


def test_inspect_counts_the_tokens_the_shared_prompt_saves(tmp_path, tiny):
    _, tokenizer = tiny
    rep = inspect_pairs(str(_pairs(tmp_path)), tokenizer)
    (enc,) = rep.examples
    assert rep.pairs == 1
    assert rep.standard == 2 * len(enc.prompt) + len(enc.chosen) + len(enc.rejected)
    assert rep.packed == len(enc.prompt) + len(enc.chosen) - 1 + len(enc.rejected) - 1
