"""Every file and folder tunelab writes honours the umask (issue 34 item 3).

An exported GGUF came out 0600 (tempfile.mkstemp's mode), so an Ollama server running as its own
user could not read it. Under umask 022 every file an export, a train and a compare write must be
0644 and every folder 0755; the walk covers the output folders and TUNELAB_HOME (registry, caches).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from tunelab.cli import main

UMASK = 0o022


@pytest.fixture(autouse=True)
def _umask_022(monkeypatch):
    monkeypatch.setenv("TUNELAB_QUIET", "1")
    monkeypatch.setenv("TUNELAB_NO_ENERGY", "1")  # codecarbon's hardware probing costs seconds
    old = os.umask(UMASK)
    try:
        yield
    finally:
        os.umask(old)


def _cli(capsys, *args) -> str:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    return out.out


def _wrong_modes(*roots: Path) -> list[str]:
    """'path: 0600 (want 0644)' for each entry under `roots` whose permission bits ignore the umask."""
    bad = []
    for root in roots:
        assert root.exists(), root
        for dirpath, dirs, files in os.walk(root):
            for name, want in [(d, 0o777 & ~UMASK) for d in dirs] + [(f, 0o666 & ~UMASK) for f in files]:
                p = Path(dirpath) / name
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode):
                    continue  # a symlink has no mode of its own
                mode = stat.S_IMODE(st.st_mode)
                if mode != want:
                    bad.append(f"{p.relative_to(root)}: {mode:04o} (want {want:04o})")
    return bad


def _home() -> Path:
    return Path(os.environ["TUNELAB_HOME"])


def test_train_and_export_write_world_readable_files(capsys, tmp_path, tiny_dir):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} plus 1?", "completion": f"{i + 1}."}) + "\n"
                            for i in range(24)))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": str(tiny_dir), "method": "lora", "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(data), "eval": 0.2},
        "train": {"max_steps": 2, "batch_tokens": 128, "eval_every": 2, "save_every": 1},
        "out": str(tmp_path / "run")}))
    _cli(capsys, "train", cfg)
    run = tmp_path / "run"
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "checkpoints").is_dir()
    _cli(capsys, "export", tiny_dir, "--adapter", run / "adapter", "--gguf", tmp_path / "export" / "m.gguf")
    _cli(capsys, "export", tiny_dir, "--adapter", run / "adapter", "--out", tmp_path / "merged")
    assert (tmp_path / "export" / "m.gguf").is_file() and (tmp_path / "export" / "m.Modelfile").is_file()
    bad = _wrong_modes(run, tmp_path / "export", tmp_path / "merged", _home())
    assert not bad, "\n".join(bad)


def test_compare_writes_world_readable_files(capsys, tmp_path, tiny_dir):
    cfg = tmp_path / "cmp.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "modes", "model": str(tiny_dir), "task": "builtin:dates", "train_data": "builtin:dates?n=24",
        "limit": 3, "arms": ["zero_shot", {"few_shot": {"k": [1]}}, {"lora": {"n": [8]}}],
        "train": {"train": {"max_steps": 1, "batch_tokens": 256, "save_every": 1}, "data": {"max_length": 128}},
        "out": str(tmp_path / "cmp")}))
    _cli(capsys, "compare", cfg)
    _cli(capsys, "report", tmp_path / "cmp")
    assert (tmp_path / "cmp" / "compare.json").is_file()
    bad = _wrong_modes(tmp_path / "cmp", _home())
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_writes_follow_the_umask_read_when_they_run(tmp_path, mask):
    """The umask is read at write time, not at import: a caller may set it after tunelab loads."""
    from tunelab.io import atomic_dir, atomic_write_text

    os.umask(mask)
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_dir(tmp_path / "d") as tmp:
        import tempfile

        fd, _ = tempfile.mkstemp(dir=tmp)  # what safetensors' writer does: a 0600 file
        os.close(fd)
        (tmp / "sub").mkdir(mode=0o700)
    (lib_file,) = (tmp_path / "d").glob("tmp*")
    files = [tmp_path / "a.txt", lib_file]
    folders = [tmp_path / "d", tmp_path / "d" / "sub"]
    assert [stat.S_IMODE(p.stat().st_mode) for p in files] == [0o666 & ~mask] * 2
    assert [stat.S_IMODE(p.stat().st_mode) for p in folders] == [0o777 & ~mask] * 2
