"""A GRPO run's report: the GRPO figure and the latest step's sample completions (escaped) on the train
page and on a compare's page for its GRPO arm; nothing of them on an SFT run's page."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tunelab.report import build
from tunelab.report.pages import num
from .html_parts import section as _section

PROMPT = "Question {i}: say <b>something</b> & stop"  # markup in a prompt must reach the page as text


def vowels(completion: str, item) -> float:
    letters = [c for c in completion if c.isalpha()]
    return sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0


def length(completion: str, item) -> float:
    return min(len(completion), 20) / 20


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, tiny_dir) -> Path:
    """Six steps of LoRA GRPO with two rewards, a KL term and two uses per generation batch."""
    from tunelab.infer.rollout import sample
    from tunelab.train.loop import train
    from tunelab.train.rollouts import Prompt, Reward

    root = tmp_path_factory.mktemp("grpo-report")
    saved = {k: os.environ.get(k) for k in ("TUNELAB_HOME", "TUNELAB_QUIET", "TUNELAB_NO_ENERGY")}
    os.environ.update({"TUNELAB_HOME": str(root / "home"), "TUNELAB_QUIET": "1", "TUNELAB_NO_ENERGY": "1"})
    try:
        items = [Prompt(PROMPT.format(i=i), None, f"prompt {i}") for i in range(8)]
        data = root / "prompts.jsonl"  # the config names a file; the prompts provider hands the prompts over
        data.write_text("".join(json.dumps({"prompt": p.text}) + "\n" for p in items))
        res = train({"name": "grpo", "model": str(tiny_dir), "method": "grpo", "out": str(root / "grpo"),
                     "grpo": {"num_generations": 8, "max_completion_length": 8, "beta": 0.04, "num_iterations": 2,
                              "log_completions_every": 2},
                     "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "data": {"train": str(data), "eval": None, "max_length": 64},
                     "train": {"max_steps": 6, "batch_tokens": 4 * 8 * 40, "lr": 5e-3, "warmup": 0, "save_every": 4,
                               "eval_every": 100, "schedule": "constant", "seed": 3}},
                    providers={"prompts": lambda source: items, "rollout": sample,
                               "rewards": [Reward("vowels", 1.0, vowels), Reward("length", 0.5, length)]})
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return res.run_dir


def test_train_page_shows_the_grpo_figure_and_samples(grpo_run, tmp_path):
    d = Path(shutil.copytree(grpo_run, tmp_path / "run"))
    page = build(d).read_text()
    fig = _section(page, "plot-grpo")
    assert "<svg" in fig
    for title in ("reward (mean, band: ±1 std)", "completion length (band: min to max)", "groups with equal rewards",
                  "KL to the reference", "clipped ratios", "truncated completions", "entropy", "seconds per step"):
        assert title in fig, title
    for label in ("total", "vowels", "length", "generation", "training"):  # legends: each reward, both timings
        assert f">{label}<" in fig, label
    samples = _section(page, "grpo-samples")
    lines = [json.loads(x) for x in (d / "completions.jsonl").read_text().splitlines()]
    last = max(x["step"] for x in lines)
    assert f"<caption>step {last}</caption>" in samples and last == 5  # steps 1, 3, 5 were sampled
    assert "&lt;b&gt;something&lt;/b&gt; &amp; stop" in samples and "<b>something" not in page
    shown = re.findall(r'<td class="out">(.*?)</td><td>([^<]*)</td>', samples, flags=re.S)
    assert len(shown) == 8  # the best 2 and worst 2 of each of the step's 2 prompts
    best = max((x for x in lines if x["step"] == last and x["prompt"] == lines[-1]["prompt"]), key=lambda x: x["reward"])
    assert f"vowels {num(best['rewards']['vowels'])}, length {num(best['rewards']['length'])}" in samples
    assert "4 of its 8 completions" in samples
    summary = _section(page, "table")  # summary.json's GRPO totals are rows of the summary table
    assert "completions_generated" in summary and "reward_end" in summary
    # the run without its samples: the figure stays, the page says what is missing
    (d / "completions.jsonl").unlink()
    page = build(d).read_text()
    assert "completions.jsonl: not found or empty (sample completions)" in _section(page, "missing")
    assert "<svg" in _section(page, "plot-grpo") and 'id="grpo-samples"' not in page


def test_an_sft_page_has_no_grpo_parts(compare_dir, tmp_path):
    d = shutil.copytree(compare_dir / "arms" / "lora-n32" / "train", tmp_path / "t")
    page = build(d).read_text()
    assert "<svg" in _section(page, "plot-loss")
    assert 'id="plot-grpo"' not in page and 'id="grpo-samples"' not in page and "completions.jsonl" not in page


def test_compare_page_shows_its_grpo_arm(compare_copy, grpo_run):
    arm = compare_copy / "arms" / "grpo-n8"
    shutil.copytree(grpo_run, arm / "train")
    shutil.copytree(compare_copy / "arms" / "zero_shot" / "eval", arm / "eval")  # stands in for its evaluation
    data = json.loads((compare_copy / "compare.json").read_text())
    zero = next(a for a in data["arms"] if a["id"] == "zero_shot")
    data["arms"].append({**zero, "id": "grpo-n8", "method": "grpo", "n_train": 8, "k": None,
                         "eval_dir": "arms/grpo-n8/eval", "run_dir": "arms/grpo-n8/train"})
    (compare_copy / "compare.json").write_text(json.dumps(data))
    page = build(compare_copy).read_text()
    fig = _section(page, "plot-grpo")
    assert "grpo-n8 total" in fig and "lora-n16" not in fig  # only the GRPO arm's statistics
    assert "grpo-n8 train" in _section(page, "plot-loss") and "lora-n16 train" in _section(page, "plot-loss")
    samples = _section(page, "grpo-samples")
    assert "<caption>arm grpo-n8: step 5</caption>" in samples and "&lt;b&gt;something" in samples
    assert "None: every part of this report was found." in _section(page, "missing")
