"""Task type `preference`: each pair's answers scored after one copy of the prompt; accuracy with CIs."""
from __future__ import annotations

import gzip
import json

import pytest
import torch
import yaml

from tunelab.errors import TunelabError
from tunelab.evaluate.metrics import get_metric
from tunelab.evaluate.runner import evaluate

HH = "\n\nHuman: what is 2 plus 3?\n\nAssistant:"
PAIRS = [{"prompt": f"What is {i} plus {i}?", "chosen": f"The answer is {2 * i}.", "rejected": f"No idea {i}, sorry."}
         for i in range(10)]


def _task(tmp_path, records, name="pref", gz=False, **spec):
    data = tmp_path / (f"{name}.jsonl.gz" if gz else f"{name}.jsonl")
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(data, "wt") as f:
            f.write(text)
    else:
        data.write_text(text)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "type": "preference", "data": data.name, **spec}))
    return path


def test_a_task_of_type_and_data_only_scores_pairs(tiny_dir, tmp_path):
    res = evaluate(str(tiny_dir), _task(tmp_path, PAIRS), out=tmp_path / "out")
    assert set(res.metrics) == {"pref_acc", "pref_acc_norm"}
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and lines[0]["chosen"].startswith("The answer is 0.")
    for line in lines:  # the item value is the comparison of the two scored log-probabilities
        c, r = line["pair_logliks"]
        assert line["metrics"]["pref_acc"] == float(c > r)
    acc = res.metrics["pref_acc"]
    assert acc["value"] == pytest.approx(sum(x["metrics"]["pref_acc"] for x in lines) / 10)
    assert acc["ci95"][0] <= acc["value"] <= acc["ci95"][1]


def test_pair_logliks_equal_the_training_sides(tiny_dir, tmp_path):
    """Evaluation scores a pair's answers exactly as DPO training does (templates/preference.py)."""
    from tunelab.data.preference import Pair
    from tunelab.templates.preference import encode_pair
    from tunelab.train.attention import DOC_ATTN, register
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.train.preference import PreferenceLM, batch_forward, collate_pairs

    res = evaluate(str(tiny_dir), _task(tmp_path, PAIRS[:3]))
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    register()
    model.set_attn_implementation(DOC_ATTN)
    enc = [encode_pair(tokenizer, Pair(str(i), [{"role": "user", "content": r["prompt"]}], r["chosen"], r["rejected"]))
           for i, r in enumerate(PAIRS[:3])]
    with torch.no_grad():
        logps = batch_forward(PreferenceLM(model).eval(), collate_pairs(enc), DOC_ATTN)
    # evaluation's scoring also scores the newline after the assistant header (lm-eval moves a prompt's
    # trailing whitespace into the continuation): the same term on both sides, so the margins are equal
    margins = [line["pair_logliks"][0] - line["pair_logliks"][1] for line in res.predictions]
    torch.testing.assert_close(torch.tensor(margins), logps[0::2] - logps[1::2], atol=1e-4, rtol=0)
    assert [line["pair_tokens"] for line in res.predictions] == [[len(e.chosen) + 1, len(e.rejected) + 1] for e in enc]


def test_hh_dialogues_from_a_gz_file(tiny_dir, tmp_path):
    rows = [{"chosen": HH + " It is 5.", "rejected": HH + " I will not say."}] * 3
    res = evaluate(str(tiny_dir), _task(tmp_path, rows, gz=True, metrics=["pref_acc"]))
    assert set(res.metrics) == {"pref_acc"} and res.n == 3


def test_a_file_without_pairs_says_what_it_found(tiny_dir, tmp_path):
    with pytest.raises(TunelabError, match=r"pref.jsonl:1: task 'pref' \(type: preference\) needs preference pairs"):
        evaluate(str(tiny_dir), _task(tmp_path, [{"prompt": "q", "completion": "a"}]))


def test_a_bad_pair_names_its_line_or_is_skipped(tiny_dir, tmp_path):
    rows = PAIRS[:2] + [{"prompt": "q", "chosen": "same", "rejected": "same"}] + PAIRS[2:4]
    with pytest.raises(TunelabError, match=r"pref.jsonl:3: chosen and rejected answers are identical.*skip_bad: true"):
        evaluate(str(tiny_dir), _task(tmp_path, rows))
    res = evaluate(str(tiny_dir), _task(tmp_path, rows, name="skip", skip_bad=True))
    assert res.n == 4 and [line["id"] for line in res.predictions] == ["1", "2", "4", "5"]


@pytest.mark.parametrize("name, logliks, tokens, expected", [
    ("pref_acc", [-10.0, -12.0], [10, 2], 1.0),  # summed: -10 beats -12
    ("pref_acc", [-12.0, -10.0], [24, 2], 0.0),
    ("pref_acc_norm", [-12.0, -10.0], [24, 2], 1.0),  # per token: -0.5 beats -5
    ("pref_acc", [-5.0, -5.0], [3, 3], 0.0),  # a tie is not a preference
])
def test_metric_by_hand(name, logliks, tokens, expected):
    item = {"pair_logliks": logliks, "pair_tokens": tokens}
    assert get_metric(name).item_score("", [], item) == expected
