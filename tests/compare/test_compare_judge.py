"""The LLM judge in a compare (compare/judge.py): judge_win_rate against another arm ranks the arms.

The arms are two tiny random models (seeds 0 and 1), sampled, so that their answers differ; the judge
is a fake Backend that decides by a rule the test knows, so every win rate is computed by hand from the arms' answers:
it prefers the answer whose sha256 is smaller (the same in both orders), and on the human-labelled
check pairs the answer holding "GOOD".
"""
from __future__ import annotations

import hashlib
import json
import logging

import pytest
import yaml

from tunelab.compare import judge as compare_judge
from tunelab.compare.run import compare
from tunelab.errors import TunelabError

N_ITEMS = 5
WORDS = ["red", "blue", "green", "gold", "pink", "gray", "teal", "plum", "rose", "jade"]


class FakeJudge:
    """A judge Backend (endpoint-like: it reads the messages) that counts the judgments it is asked for."""

    tokenizer = None
    cache_scope = ("fake-judge", None)

    def __init__(self):
        self.calls, self.pairs = 0, []

    def generate(self, contexts, seeds, *, batch_size, on_batch=None, max_new_tokens, stop, temperature, top_p):
        self.calls += len(contexts)
        return [{"text": self.rule(c.messages[0]["content"]), "prompt_tokens": 20, "new_tokens": 4, "latency_s": 0.0,
                 "finish": "stop"} for c in contexts]

    def rule(self, prompt: str) -> str:
        if "[Answer A]" not in prompt:  # judge_score: a rating read from the answer's hash
            answer = prompt.split("[The assistant's answer]\n", 1)[1].rsplit("\n\nExplain your judgment", 1)[0]
            return f"[[{rating(answer)}]]"
        a = prompt.split("[Answer A]\n", 1)[1].split("\n\n[Answer B]\n", 1)[0]
        b = prompt.split("\n\n[Answer B]\n", 1)[1].rsplit("\n\nCompare the two answers", 1)[0]
        self.pairs.append((a, b))
        if ("GOOD" in a) != ("GOOD" in b):
            return "[[A]]" if "GOOD" in a else "[[B]]"
        return "Equal. [[C]]" if a == b else ("[[A]]" if _h(a) < _h(b) else "[[B]]")


def _h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rating(answer: str) -> int:
    return 1 + int(_h(answer)[:4], 16) % 10


def expected_win_rate(outputs: list[str], baseline: list[str]) -> float:
    return sum(0.5 if a == b else float(_h(a) < _h(b)) for a, b in zip(outputs, baseline)) / len(outputs)


@pytest.fixture(scope="module")
def tiny2(tmp_path_factory):
    """Another tiny model (other random weights): the second arm's, so that the arms' answers differ."""
    from tunelab.models.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny2") / "tiny-2", seed=1)


@pytest.fixture
def fake(monkeypatch):
    """The fake judge, found by its model name where the judge keeps its opened backend."""
    from tunelab.evaluate.judge import run

    judge = FakeJudge()
    opened = {}
    monkeypatch.setattr(run, "_OPENED", opened)
    judge.name = lambda model: opened.__setitem__(model, judge)
    return judge


def _files(tmp_path, judge_model: str, check_labels: str = "good", **judge) -> str:
    """A generate task with a judge: block, its items and a pool of demonstrations; the task's path."""
    rows = [{"id": f"i{i}", "q": f"Name a colour like {w}.", "a": w} for i, w in enumerate(WORDS)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:N_ITEMS]))
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[N_ITEMS:]))
    pairs = [{"input": f"Say {w}.", "output_1": f"GOOD {w}", "output_2": w, "label": 1 if check_labels == "good" else 2}
             for w in WORDS[:4]]
    (tmp_path / "check.json").write_text(json.dumps(pairs))
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump({
        "name": "colours", "data": "items.jsonl", "prompt": "{{ q }}", "answer": "{{ a }}",
        "generation": {"max_new_tokens": 4, "stop": [], "temperature": 1.0},
        "metrics": ["judge_win_rate", "exact_match"],
        "judge": {"model": judge_model, "max_new_tokens": 8, "check": "check.json", **judge}}))
    return str(task)


def _config(tiny_dir, task: str, tmp_path, arms) -> dict:
    return {"name": "judged", "model": str(tiny_dir), "task": task, "train_data": str(tmp_path / "pool.jsonl"),
            "metric": "judge_win_rate", "arms": arms}


def _arms(tiny2, *more) -> list:
    return ["zero_shot", {"zero_shot": {"model": str(tiny2)}}, *more]


OTHER = "zero_shot@tiny-2"


def _outputs(out, arm: str) -> list[str]:
    lines = (out / "arms" / arm / "eval" / "predictions.jsonl").read_text().splitlines()
    return [json.loads(x)["output"] for x in lines]


def _entry(out, arm: str) -> dict:
    return json.loads((out / "arms" / arm / "eval" / "results.json").read_text())["metrics"]["judge_win_rate"]


def test_win_rate_ranks_the_arms_a_rerun_judges_nothing_and_an_added_arm_only_its_pairs(
        fake, tiny_dir, tiny2, tmp_path, capsys):
    fake.name("fake-judge")
    cfg = _config(tiny_dir, _files(tmp_path, "fake-judge"), tmp_path, _arms(tiny2))
    res = compare(cfg, out=tmp_path / "c", say=lambda m: None)
    out, s = res.out, res.summary
    base, other = _outputs(out, "zero_shot"), _outputs(out, OTHER)
    assert base != other  # else every pair would be a tie and nothing ranked
    # the check pairs first (4 in both orders), then the other arm's 5 pairs in both orders; the baseline is not judged
    assert fake.calls == 2 * 4 + 2 * N_ITEMS
    rows = {a["id"]: a for a in s["arms"]}
    want = expected_win_rate(other, base)
    assert want != 0.5 and rows[OTHER]["metric"]["value"] == pytest.approx(want)
    assert rows["zero_shot"]["metric"] == {"value": 0.5, "ci95": [0.5, 0.5]}
    assert s["best"] == (OTHER if want > 0.5 else "zero_shot")
    second = "zero_shot" if s["best"] == OTHER else OTHER
    assert rows[second]["diff_vs_best"]["delta"] == pytest.approx(-abs(want - 0.5))  # paired on the same 5 items
    assert rows[second]["diff_vs_best"]["n"] == N_ITEMS
    entry = _entry(out, OTHER)
    assert entry["wins"] + entry["ties"] + entry["losses"] == N_ITEMS and entry["baseline"]["arm"] == "zero_shot"
    assert entry["wins"] == sum(_h(a) < _h(b) for a, b in zip(other, base) if a != b)
    line = json.loads((out / "arms" / OTHER / "eval" / "predictions.jsonl").read_text().splitlines()[0])
    assert line["judge_win_rate"]["verdict"] in ("win", "tie", "loss") and len(line["judge_win_rate"]["orders"]) == 2
    assert line["metrics"]["judge_win_rate"] == {"win": 1.0, "tie": 0.5, "loss": 0.0}[line["judge_win_rate"]["verdict"]]
    assert "0.5 by definition" in _entry(out, "zero_shot")["note"]
    # the judge's cost apart from the arm's own, per 1,000 items
    assert rows[OTHER]["judge_cost_per_1k"]["calls"] == 2 * N_ITEMS * 1000 / N_ITEMS
    assert rows["zero_shot"]["judge_cost_per_1k"]["calls"] == 0
    assert s["judge"]["check"]["accuracy"]["value"] == 1.0 and s["judge"]["baseline"] == "zero_shot"
    said = " ".join(s["sentences"])
    assert "judge_win_rate is each arm's win rate against zero_shot's answers" in said
    assert "agreed with the human labels of check.json on 100%" in said and "below the agreement threshold" not in said
    from tunelab.cli.compare import print_compare

    print_compare(s)
    assert "judge s" in capsys.readouterr().out

    fake.calls = 0
    again = compare(cfg, out=out, say=lambda m: None)
    assert fake.calls == 0 and again.summary["arms"] == s["arms"]  # a finished judged compare: zero judge calls

    before = {a: _entry(out, a) for a in ("zero_shot", OTHER)}
    fake.pairs.clear()
    more = compare(_config(tiny_dir, cfg["task"], tmp_path, _arms(tiny2, {"few_shot": {"k": [1]}})), out=out,
                   say=lambda m: None)
    assert more.ran == ["few_shot-k1-random"]
    new = _outputs(out, "few_shot-k1-random")
    cost = _entry(out, "few_shot-k1-random")["judge_cost"]
    assert fake.calls == cost["calls"] > 0 and cost["calls"] + cost["cached"] == 2 * N_ITEMS  # only the new arm's pairs
    assert all({a, b} <= set(new) | set(base) for a, b in fake.pairs)
    assert {a: _entry(out, a) for a in before} == before
    assert _entry(out, "few_shot-k1-random")["value"] == pytest.approx(expected_win_rate(new, base))


def test_no_baseline_arm_is_one_line_before_any_arm_runs(fake, tiny_dir, tmp_path, capsys):
    from tunelab.cli import main

    task = _files(tmp_path, "fake-judge")
    cfg = _config(tiny_dir, task, tmp_path, [{"few_shot": {"k": [1]}}])
    with pytest.raises(TunelabError) as e:
        compare(cfg, out=tmp_path / "c", say=lambda m: None)
    msg = str(e.value)
    assert "judges each arm against the answers of arm 'zero_shot', and this compare has no such arm" in msg
    assert "(its arms: few_shot-k1-random)" in msg and "judge: {baseline: <one of those arm ids>}" in msg
    assert not (tmp_path / "c").exists() and fake.calls == 0
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump({**cfg, "out": str(tmp_path / "d")}))
    with pytest.raises(SystemExit) as e:
        main(["compare", str(tmp_path / "cmp.yaml"), "--dry-run"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "no such arm" in err

    named = _files(tmp_path, "fake-judge", baseline="lora-n8")  # a baseline named by the user, also absent
    with pytest.raises(TunelabError, match="answers of arm 'lora-n8'"):
        compare(_config(tiny_dir, named, tmp_path, ["zero_shot"]), out=tmp_path / "c", say=lambda m: None)


def test_a_judge_below_the_threshold_and_a_self_judging_base_model_are_said(fake, tiny_dir, tiny2, tmp_path, caplog):
    fake.name(str(tiny_dir))  # the judge is the base model of the zero_shot arm
    cfg = _config(tiny_dir, _files(tmp_path, str(tiny_dir), check_labels="wrong"), tmp_path, _arms(tiny2))
    with caplog.at_level(logging.WARNING, logger="tunelab.compare"):
        s = compare(cfg, out=tmp_path / "c", say=lambda m: None).summary
    assert any("Self-preference: the judge" in r.getMessage() for r in caplog.records)
    assert s["judge"]["self_preference"] == ["zero_shot"]
    assert s["judge"]["check"]["accuracy"]["value"] == 0.0
    said = " ".join(s["sentences"])
    assert "The ranking rests on a judge below the agreement threshold" in said
    assert "under judge.min_agreement 70%" in said
    assert f"Self-preference: the judge {tiny_dir} is the base model of zero_shot;" in said
    assert (tmp_path / "c" / "judge_check.json").is_file()


def test_judge_sentences_follow_the_block_only():
    block = {"model": "m", "metrics": ["judge_score"], "min_agreement": 0.8, "baseline": None,
             "check": {"data": "builtin:llmbar-natural", "accuracy": {"value": 0.75, "ci95": [0.66, 0.84], "n": 100}},
             "self_preference": []}
    said = compare_judge.sentences(block, "judge_score")
    assert said == ["The ranking rests on a judge below the agreement threshold: m agreed with the human labels of "
                    "builtin:llmbar-natural on 75% (95% CI 66% to 84%) of their pairs, under judge.min_agreement 80%; "
                    "treat its verdicts as unconfirmed (docs/judge.md)."]
    assert "judged metrics rest on" in compare_judge.sentences(block, "exact_match")[0]
    unmeasured = compare_judge.sentences({**block, "check": None}, "judge_score")
    assert unmeasured[0].startswith("The judge m was not measured against human labels")


def test_a_sweep_ranked_by_the_win_rate_is_refused_at_plan_time(tiny_dir, tmp_path):
    from tunelab.compare.plan import make_plan

    task = _files(tmp_path, "fake-judge")
    rows = [{"id": f"p{i}", "q": f"Name colour {i}.", "a": WORDS[i % len(WORDS)]} for i in range(20)]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tuned = {"lora": {"n": [4], "tune": {"lr": [1e-4, 3e-4], "val": 8}}}
    with pytest.raises(TunelabError, match=r"arms\[1\]\.lora\.tune picks its run by the compare's metric on its "
                                           r"validation items, and judge_win_rate there would need arm zero_shot's"):
        make_plan(_config(tiny_dir, task, tmp_path, ["zero_shot", tuned]), out=tmp_path / "c")
    plan = make_plan({**_config(tiny_dir, task, tmp_path, ["zero_shot", tuned]), "metric": "exact_match"},
                     out=tmp_path / "c")
    assert plan.task.judge.baseline == "arm:zero_shot"  # ranked by another metric: the sweep is fine


def test_judge_score_ranks_the_arms_with_the_check_its_evaluations_measured(fake, tiny_dir, tiny2, tmp_path):
    fake.name("fake-judge")
    task = _files(tmp_path, "fake-judge", check_labels="wrong")
    spec = yaml.safe_load(open(task))
    spec["metrics"] = ["judge_score"]
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(spec))
    cfg = {**_config(tiny_dir, task, tmp_path, _arms(tiny2)), "metric": "judge_score"}
    s = compare(cfg, out=tmp_path / "c", say=lambda m: None).summary
    rows = {a["id"]: a for a in s["arms"]}
    want = {arm: sum(map(rating, _outputs(tmp_path / "c", arm))) / N_ITEMS for arm in ("zero_shot", OTHER)}
    assert {arm: rows[arm]["metric"]["value"] for arm in want} == pytest.approx(want)
    assert s["best"] == max(want, key=lambda arm: (want[arm], arm == "zero_shot"))
    # the check each arm's evaluation measured (the second from the cache), read back into the judge block
    assert s["judge"]["baseline"] is None and s["judge"]["check"]["accuracy"]["value"] == 0.0
    distinct = {(i, o) for arm in want for i, o in enumerate(_outputs(tmp_path / "c", arm))}  # the same answer: cached
    assert fake.calls == 2 * 4 + len(distinct) and rows[OTHER]["judge_cost_per_1k"]["calls"] > 0
    said = " ".join(s["sentences"])
    assert "The ranking rests on a judge below the agreement threshold" in said and "win rate against" not in said


def test_the_same_model_is_recognised_by_alias_folder_or_path(tiny_dir):
    from tunelab.evaluate.rewards import same_weights as same
    from tunelab.models import registry

    assert same("default", registry.DEFAULT) and same("default", str(registry.cached_dir(registry.DEFAULT)))
    assert same(str(tiny_dir), str(tiny_dir) + "/") and same(str(tiny_dir), str(tiny_dir / ".." / tiny_dir.name))
    assert not same("default", str(tiny_dir)) and not same("openai:http://h/v1#a", "openai:http://h/v1#b")


# ---------------------------------------------------------------- --dry-run: the judge's share (issue 35 item 2)
class RecordingJudge(FakeJudge):
    """The fake judge, keeping every prompt it is shown."""

    def __init__(self):
        super().__init__()
        self.prompts = []

    def rule(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return super().rule(prompt)


def _tokens(tiny_dir, texts) -> int:
    from tunelab.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_dir)
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def test_dry_run_counts_the_judge_apart_from_the_arms_and_a_finished_compare_as_done(
        monkeypatch, tiny_dir, tiny2, tmp_path):
    """A local judge (the tiny model's tokenizer counts exactly): the estimate's calls are the calls the compare
    makes, and its prompt tokens those of the prompts the judge is shown, but for the answers' lengths."""
    from tunelab.compare.estimate import estimate
    from tunelab.compare.judge_estimate import add_judge, overall
    from tunelab.compare.plan import make_plan
    from tunelab.evaluate.judge import run

    judge_model = str(tiny2)  # a local judge; not the base model of the first arm
    cfg = _config(tiny_dir, _files(tmp_path, judge_model), tmp_path, _arms(tiny2))
    plan = make_plan(cfg, out=tmp_path / "c")
    est = estimate(plan)
    add_judge(plan, est)
    est = {e.arm: e for e in est}
    check = overall(plan).check
    assert est["zero_shot"].judge.calls == 0  # the baseline arm is not judged
    other = est[OTHER].judge
    assert other.calls == 2 * N_ITEMS and other.generated_tokens == 2 * N_ITEMS * 8  # judge.max_new_tokens each
    assert check.calls == 2 * 4 and not check.done and not other.done
    assert est[OTHER].prompt_tokens < other.prompt_tokens  # the arm's own tokens stay its own (short prompts)
    assert overall(plan).exact_tokens and not overall(plan).endpoint

    fake = RecordingJudge()
    monkeypatch.setattr(run, "_OPENED", {judge_model: fake})
    compare(cfg, out=tmp_path / "c", say=lambda m: None)
    assert fake.calls == check.calls + other.calls
    shown_check = [p for p in fake.prompts if "GOOD" in p]
    assert _tokens(tiny2, shown_check) == check.prompt_tokens  # the check's pairs are known: exact
    shown_arm = [p for p in fake.prompts if "GOOD" not in p]
    # the answers' real lengths differ from the estimate's (gold + 1, at most 4 tokens): a few tokens each
    assert abs(_tokens(tiny2, shown_arm) - other.prompt_tokens) <= 2 * N_ITEMS * 2 * 4

    plan = make_plan(cfg, out=tmp_path / "c")  # the compare ran: nothing left to judge
    est = estimate(plan)
    add_judge(plan, est)
    est = {e.arm: e for e in est}
    assert est[OTHER].judge.done and overall(plan).check.done


def test_dry_run_judge_score_every_arm_once_per_item_and_the_cli_shows_it_apart(
        capsys, monkeypatch, tiny_dir, tiny2, tmp_path):
    from tunelab.cli import main

    monkeypatch.delenv("COLUMNS", raising=False)  # no terminal: the table keeps its natural width (cli/__init__.py)

    task = _files(tmp_path, "openai:http://127.0.0.1:9/v1#judge", reference=True, check="builtin:llmbar-natural")
    spec = yaml.safe_load(open(task))
    spec["metrics"] = ["judge_score"]
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(spec))
    cfg = {**_config(tiny_dir, task, tmp_path, _arms(tiny2)), "metric": "judge_score", "out": str(tmp_path / "c")}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as e:
        main(["compare", str(tmp_path / "cmp.yaml"), "--dry-run"])
    got = capsys.readouterr()
    out = got.out
    assert e.value.code == 0, got.err
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.splitlines() if line.startswith("│ ")}
    assert rows["zero_shot"][-3] == rows[OTHER][-3] == str(N_ITEMS)  # judge calls: one per item, every arm
    assert rows["zero_shot"][-1].startswith("≤") and "judge calls" in out
    assert "judge check builtin:llmbar-natural: 200 calls (each pair in both orders)" in out  # 100 pairs
    flat = " ".join(out.split())
    assert "an endpoint: its speed is unknown" in flat and "(~4 chars a token)" in flat
    assert "8 generated tokens a call (judge.max_new_tokens)" in flat
    assert not (tmp_path / "c" / "arms").exists()  # nothing ran, no judge was called


def test_dry_run_against_the_reference_judges_every_arm_and_an_arms_own_check_counts_as_done(
        monkeypatch, tiny_dir, tiny2, tmp_path):
    """judge_score and judge_win_rate against the task's answers: every arm is judged in its own evaluation (no
    baseline arm), each item once for the score and twice for the pair; the check is measured there too."""
    from tunelab.compare.estimate import estimate
    from tunelab.compare.judge_estimate import add_judge, overall
    from tunelab.compare.plan import make_plan
    from tunelab.evaluate.judge import run

    task = _files(tmp_path, "fake-judge", baseline="reference")
    spec = yaml.safe_load(open(task))
    spec["metrics"] = ["judge_score", "judge_win_rate"]
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(spec))
    cfg = {**_config(tiny_dir, task, tmp_path, _arms(tiny2)), "metric": "judge_score"}

    def judged():
        plan = make_plan(cfg, out=tmp_path / "c")
        est = estimate(plan)
        add_judge(plan, est)
        return {e.arm: e.judge for e in est}, overall(plan).check

    arms, check = judged()
    assert {a: (j.calls, j.done) for a, j in arms.items()} == {"zero_shot": (3 * N_ITEMS, False),
                                                               OTHER: (3 * N_ITEMS, False)}
    assert check.calls == 2 * 4 and not check.done and arms["zero_shot"].prompt_tokens == arms[OTHER].prompt_tokens
    fake = FakeJudge()
    monkeypatch.setattr(run, "_OPENED", {"fake-judge": fake})
    compare(cfg, out=tmp_path / "c", say=lambda m: None)
    costs = [json.loads((tmp_path / "c" / "arms" / a / "eval" / "results.json").read_text())["cost"]["judge"]
             for a in arms]
    for c in costs:  # each judgment the estimate counts, and the check once a judge metric (all but once from the cache)
        assert c["calls"] + c["cached"] == 3 * N_ITEMS + 2 * check.calls
    # the check is judged once; answers two arms share are judged once too (the estimate does not read the cache)
    assert check.calls + 3 * N_ITEMS <= fake.calls <= check.calls + 2 * 3 * N_ITEMS
    arms, check = judged()
    assert all(j.done for j in arms.values()) and check.done
