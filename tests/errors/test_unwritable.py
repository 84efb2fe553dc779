"""An output that cannot be written is one line naming it, found before any model loads."""
from __future__ import annotations

import json
import os
import stat

import pytest

from .conftest import one_line


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model in these tests is a failure: the output check must come first."""
    import tunelab.models.loading as loading

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(loading, "load_model", refuse)
    monkeypatch.setattr(loading, "resolve", refuse)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write in; root ignores permission bits, so it gets a read-only mount."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(stat.S_IRUSR | stat.S_IXUSR)
        yield d
        d.chmod(stat.S_IRWXU)
        return
    for candidate in ("/sys", "/proc/sys"):
        try:
            os.mkdir(os.path.join(candidate, "tunelab-write-test"))
        except OSError:
            yield __import__("pathlib").Path(candidate)
            return
        os.rmdir(os.path.join(candidate, "tunelab-write-test"))
    pytest.skip("running as root with no read-only folder to test against")


@pytest.fixture
def inputs(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "a", "completion": "b", "output": "hello"}) + "\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return {"data": data, "blocker": blocker, "adapter": adapter}


def _commands(inputs, tmp_path, out):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"model: default\ndata: {{train: {inputs['data']}, eval: 0}}\n")
    return {
        "train": ("train", cfg, f"out={out}"),
        "export": ("export", "default", "--adapter", inputs["adapter"], "--out", out),
        "eval": ("eval", "default", "--task", "builtin:dates", "--limit", "1", "--out", out),
        "safety scan": ("safety", "scan", inputs["data"], "--out", f"{out}/scored.jsonl"),
    }


def _snapshot(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("command", ["train", "export", "eval", "safety scan"])
def test_file_where_the_folder_should_be(cli, no_model, inputs, tmp_path, command):
    out = inputs["blocker"] / "sub"
    args = _commands(inputs, tmp_path, out)[command]
    before = _snapshot(tmp_path)
    code, _, err = cli(*args)
    line = one_line(err)
    assert code == 2
    assert f"{inputs['blocker']} is a file, not a folder; choose another" in line
    assert _snapshot(tmp_path) == before  # nothing created, nothing touched


@pytest.mark.parametrize("command", ["train", "export", "eval", "safety scan"])
def test_read_only_folder(cli, no_model, inputs, tmp_path, read_only_dir, command):
    out = read_only_dir / "run"
    code, _, err = cli(*_commands(inputs, tmp_path, out)[command])
    line = one_line(err)
    assert code == 2 and f"cannot write in {read_only_dir}" in line and "choose another" in line
    assert not out.exists()


def test_existing_file_as_output_folder(cli, no_model, inputs, tmp_path):
    code, _, err = cli("export", "default", "--adapter", inputs["adapter"], "--out", inputs["blocker"])
    assert code == 2 and "is a file, but --out needs a folder" in one_line(err)
    assert inputs["blocker"].read_text() == "I am a file"
