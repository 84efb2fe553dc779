"""The judge through a real HTTP server (tunelab's own, serving a tiny random model) and the runner.

A tiny random judge rarely writes `[[7]]` or `[[A]]`: the test checks that its judgments are all
kept, counted as `unparsed` when unreadable, written per item, costed apart from the model's own
work, and that a second run asks the judge nothing (everything comes from the cache).
"""
from __future__ import annotations

import json

import pytest
import yaml

from tunelab.evaluate.runner import evaluate

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

ROWS = [{"q": f"Name a colour that rhymes with {w}.", "a": f"{w} rhymes with red"} for w in ("bed", "fed", "led", "wed")]


@pytest.fixture(scope="module")
def judge_server(tiny_dir):
    from tunelab.serve.engine import load_served
    from tunelab.serve.server import BackgroundServer, create_app

    served = load_served(str(tiny_dir), {}, device="cpu")
    with BackgroundServer(create_app(served, batch_size=4, queue_size=64)) as srv:
        yield f"openai:{srv.url}#{served.name}"


def _task(tmp_path, judge_spec):
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump({
        "name": "rhymes", "data": "items.jsonl", "prompt": "{{ q }}", "answer": "{{ a }}",
        "generation": {"max_new_tokens": 6, "stop": ["\n"]},
        "metrics": ["judge_score", "judge_win_rate", "exact_match"],
        "judge": {"model": judge_spec, "baseline": "reference", "max_new_tokens": 12, "concurrency": 4}}))
    return path


def _count_requests(monkeypatch):
    """How many generation requests the judge's endpoint backend sends (wraps the real method)."""
    from tunelab.infer.endpoint import EndpointBackend

    sent = []
    real = EndpointBackend.generate

    def counting(self, contexts, *a, **k):
        sent.append(len(contexts))
        return real(self, contexts, *a, **k)

    monkeypatch.setattr(EndpointBackend, "generate", counting)
    return sent


def test_judged_eval_through_tunelab_serve_and_a_rerun_judges_nothing(judge_server, tiny_dir, tmp_path, monkeypatch):
    sent = _count_requests(monkeypatch)
    task = _task(tmp_path, judge_server)
    res = evaluate(str(tiny_dir), task, out=tmp_path / "run1")
    assert sum(sent) == 4 + 8  # 4 ratings, 4 pairs in both orders
    score, win = res.metrics["judge_score"], res.metrics["judge_win_rate"]
    assert score["unparsed"] + score["n"] == 4 and win["unparsed"] + win["n"] == 4
    assert win["wins"] + win["ties"] + win["losses"] == win["n"]
    assert res.cost["judge"]["calls"] == 12 and res.cost["judge"]["generated_tokens"] > 0
    line = json.loads((tmp_path / "run1" / "predictions.jsonl").read_text().splitlines()[0])
    assert isinstance(line["judge_score"]["judge_text"], str) and "rating" in line["judge_score"]
    assert [o["shown"] for o in line["judge_win_rate"]["orders"]] == ["answer first (A)", "answer second (B)"]
    assert line["metrics"]["judge_score"] == line["judge_score"]["rating"]  # null when unparsed, never 0

    sent.clear()
    again = evaluate(str(tiny_dir), task, out=tmp_path / "run2")
    assert sent == [] and again.cost["judge"]["calls"] == 0 and again.cost["judge"]["cached"] == 12
    assert again.metrics["judge_score"] == score


def test_agreement_with_a_served_judge(judge_server, tmp_path, capsys):
    from tunelab.cli import main

    pairs = [{"input": f"Say {w}.", "output_1": w, "output_2": f"not {w}", "label": 1} for w in ("yes", "no", "maybe")]
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(pairs))
    with pytest.raises(SystemExit) as e:
        main(["judge", "agreement", "--data", str(data), "--judge", judge_server, "--max-new-tokens", "8",
              "--out", str(tmp_path / "v.jsonl"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert e.value.code == 0
    assert out["judge_cost"]["calls"] == 6 and out["unparsed"]["n"] == 6
    rows = [json.loads(x) for x in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and len(rows[0]["texts"]) == 2
    with pytest.raises(SystemExit):  # the file it wrote reads back as recorded verdicts
        main(["judge", "agreement", "--data", str(data), "--verdicts", str(tmp_path / "v.jsonl"), "--json"])
    assert json.loads(capsys.readouterr().out)["unparsed"] == out["unparsed"]


def test_no_judge_model_is_refused_in_one_line(tmp_path, tiny_dir, capsys):
    from tunelab.cli import main

    task = _task(tmp_path, None)
    spec = yaml.safe_load(task.read_text())
    del spec["judge"]["model"]
    task.write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tiny_dir), "--task", str(task)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "there is no default judge" in err and len(err.strip().splitlines()) == 1


def test_a_local_judge_goes_through_the_engine_in_batches(tiny_dir, tmp_path, monkeypatch):
    from tunelab.infer.backend import LocalBackend

    batches = []
    real = LocalBackend.generate

    def spy(self, contexts, seeds, *, batch_size, **k):
        batches.append((len(contexts), batch_size, k["temperature"]))
        return real(self, contexts, seeds, batch_size=batch_size, **k)

    monkeypatch.setattr(LocalBackend, "generate", spy)
    task = _task(tmp_path, str(tiny_dir))
    res = evaluate(str(tiny_dir), task)
    # the model's own answers (one call), then the judge: 4 ratings in one call, 8 pairwise prompts in one call
    assert batches[1:] == [(4, 4, 0.0), (8, 4, 0.0)]
    assert res.cost["judge"]["calls"] == 12 and res.cost["judge"]["prompt_tokens"] > 0
    assert res.metrics["judge_win_rate"]["unparsed"] + res.metrics["judge_win_rate"]["n"] == 4


def test_a_prompt_too_long_for_a_local_judge_is_not_judged_but_counted(tiny_dir, tmp_path):
    from tunelab.config import TaskConfig
    from tunelab.evaluate.metrics import get_metric

    m = get_metric("judge_score")
    # the tiny judge reads 1024 tokens; keeping 1000 for its answer leaves 24 for a prompt of ~200
    m.for_task(TaskConfig(name="t", data="x.jsonl", judge={"model": str(tiny_dir), "max_new_tokens": 1000}))
    r = m.compute(["an answer"], [["ref"]], [{"question": "q"}])
    assert r.value is None and r.extra["unparsed"] == 1 and r.cost["judge"]["calls"] == 0
    assert r.item_details[0]["judge_text"].startswith("(not judged: the judge prompt has ")


def test_two_judge_metrics_share_one_loaded_judge(tiny_dir, tmp_path, monkeypatch):
    import tunelab.infer.load as load

    opened = []
    real = load.open_backend
    monkeypatch.setattr(load, "open_backend", lambda model, *a, **k: opened.append(model) or real(model, *a, **k))
    from tunelab.evaluate.judge import run

    monkeypatch.setattr(run, "_OPENED", {})
    evaluate(str(tiny_dir), _task(tmp_path, str(tiny_dir) + "/"))  # the judge named apart from the model under test
    assert opened.count(str(tiny_dir) + "/") == 1
