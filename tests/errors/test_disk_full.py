"""A write that fails (a full disk) in every artifact writer: one line naming the path and the
space it needs, exit 2, and the earlier artifact intact (issue 26 case 1 and its class).

Most tests inject the failure where the writer meets it: torch.save's RuntimeError from its zip
writer (what torch really raises mid-file, not an OSError), OSError(ENOSPC) from fsync or a
file write, SQLite's own "database or disk is full" (a page limit makes SQLite really run out).
The last test fills a real small tmpfs, which needs root to mount.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
import yaml

from tunelab.errors import TunelabError
from tunelab.io import WriteFailed, atomic_dir, atomic_write_json

from .conftest import one_line

TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 1234 vs 1170"


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def _enospc_under(folder):
    """An fsync that fails for files under `folder` only (the disk that holds it is full)."""
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            _enospc()
        real(fd)

    return fsync


def _train_cfg(tmp_path, tiny_dir, **train) -> "os.PathLike":
    rows = [{"prompt": f"What is {i} plus 1?", "completion": f"{i + 1}"} for i in range(32)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"name": "r", "model": str(tiny_dir), "method": "lora", "lora": {"r": 4, "alpha": 8},
           "data": {"train": str(tmp_path / "d.jsonl"), "eval": 0.0},
           "train": {"max_steps": 3, "batch_tokens": 128, "save_every": 1, "eval_every": 100, "keep_checkpoints": 5,
                     **train},
           "out": str(tmp_path / "run")}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setenv("TUNELAB_QUIET", "1")
    monkeypatch.setenv("TUNELAB_NO_ENERGY", "1")


def test_atomic_file_keeps_the_old_version_and_names_the_space(tmp_path, monkeypatch):
    target = atomic_write_json(tmp_path / "results.json", {"v": 1})
    monkeypatch.setattr("tunelab.io.os.fsync", _enospc)
    with pytest.raises(WriteFailed) as e:
        atomic_write_json(target, {"v": 2, "pad": "x" * 5000})
    msg = str(e.value)
    assert msg.startswith(f"{target}: could not be written: the disk is full (it needs at least 4.9 kB; ")
    assert "free there)" in msg and "\n" not in msg and e.value.exit_code == 2
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_atomic_folder_names_the_final_folder_not_its_temporary_name(tmp_path):
    final = tmp_path / "adapter"
    with atomic_dir(final) as tmp:
        (tmp / "w.bin").write_bytes(b"1" * 3000)
    with pytest.raises(WriteFailed) as e, atomic_dir(final) as tmp:
        (tmp / "w.bin").write_bytes(b"2" * 100)
        raise RuntimeError(TORCH_FULL)
    assert str(e.value).startswith(f"{final}: could not be written: ")
    assert "at least 2.9 kB" in str(e.value)  # the size of the version it replaces
    assert (final / "w.bin").read_bytes() == b"1" * 3000
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_other_errors_are_not_called_a_full_disk(tmp_path):
    with pytest.raises(ValueError), atomic_dir(tmp_path / "x"):
        raise ValueError("a bug")


def test_checkpoint_torch_runtime_error_is_one_line_and_the_last_checkpoint_resumes(cli, tmp_path, tiny_dir,
                                                                                    monkeypatch):
    import torch

    cfg = _train_cfg(tmp_path, tiny_dir)
    real_save, calls = torch.save, []

    def save(obj, f, *a, **k):  # the checkpoint of step 2 fails half-way, as in issue 26
        calls.append(f)
        if "step-2" in str(f):
            with open(f, "wb") as out:
                out.write(b"PK" * 100)
            raise RuntimeError(TORCH_FULL)
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    code, _, err = cli("train", cfg)
    line = one_line(err)
    assert code == 2
    assert line.startswith(f"error: {tmp_path / 'run' / 'checkpoints' / 'step-2'}: could not be written: ")
    assert "it needs at least" in line and "intact" in line
    monkeypatch.setattr(torch, "save", real_save)
    steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert steps == ["step-1"]  # the failed one left nothing behind
    code, _, err = cli("train", cfg, "--resume")
    assert code == 0, err


def test_final_adapter(cli, tmp_path, tiny_dir, monkeypatch):
    from peft import PeftModel

    cfg = _train_cfg(tmp_path, tiny_dir, max_steps=1, save_every=100)

    def save_pretrained(self, folder, *a, **k):
        (folder / "adapter_model.safetensors").write_bytes(b"\0" * 2048)
        _enospc()

    monkeypatch.setattr(PeftModel, "save_pretrained", save_pretrained)
    code, _, err = cli("train", cfg)
    assert code == 2 and one_line(err).startswith(f"error: {tmp_path / 'run' / 'adapter'}: could not be written: "
                                                  "the disk is full (it needs at least 2.0 kB")
    assert not (tmp_path / "run" / "adapter").exists()


def test_eval_results(cli, tmp_path, tiny_dir, monkeypatch):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"q": f"{i} plus one is", "a": str(i + 1)}) + "\n"
                                              for i in range(3)))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"name": "plus", "data": "d.jsonl", "prompt": "{{ q }}",
                                                     "answer": "{{ a }}", "metrics": ["exact_match"],
                                                     "generation": {"max_new_tokens": 2}}))
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": true}')
    monkeypatch.setattr("tunelab.io.os.fsync", _enospc_under(out))
    code, _, err = cli("eval", tiny_dir, "--task", tmp_path / "t.yaml", "--out", out)
    assert code == 2 and one_line(err).startswith(f"error: {out / 'predictions.jsonl'}: could not be written: "
                                                  "the disk is full (it needs at least ")
    assert (out / "results.json").read_text() == '{"earlier": true}'


def test_compare_folder(cli, tmp_path, tiny_dir, monkeypatch):
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "model": str(tiny_dir), "task": "builtin:dates", "train_data": "builtin:dates?n=20",
        "limit": 2, "arms": ["zero_shot"], "out": str(tmp_path / "c")}))
    monkeypatch.setattr("tunelab.io.os.fsync", _enospc_under(tmp_path / "c"))
    code, _, err = cli("compare", tmp_path / "cmp.yaml")
    assert code == 2 and one_line(err).startswith(f"error: {tmp_path / 'c' / 'compare.yaml'}: could not be written: ")


def test_encoded_data_cache(cli, tmp_path, tiny_dir, monkeypatch):
    from tunelab.templates import cache

    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n"
                                              for i in range(20)))
    real = cache._write

    def write(folder, *a, **k):
        real(folder, *a, **k)  # the arrays are written, then the disk is full
        _enospc()

    monkeypatch.setattr(cache, "_write", write)
    code, _, err = cli("data", "prepare", tmp_path / "d.jsonl", "--model", tiny_dir)
    line = one_line(err)
    assert code == 2 and f"{cache.cache_dir()}/" in line and ": could not be written: the disk is full (it needs at least" in line
    assert not any(cache.cache_dir().iterdir())  # no entry, no temporary folder


def test_request_cache_sqlite_full(tmp_path):
    from tunelab.evaluate.cache import RequestCache

    c = RequestCache("m" * 64, path=tmp_path / "cache.sqlite")
    c.put_many([("k0", "kept")])
    pages = c._db.execute("PRAGMA page_count").fetchone()[0]
    c._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite itself now finds the database full
    with pytest.raises(WriteFailed) as e:
        c.put_many([(f"k{i}", "x" * 1000) for i in range(1, 50)])
    assert str(e.value).startswith(f"{tmp_path / 'cache.sqlite'}: could not be written: the disk is full (it needs at least 48.")
    assert c.get_many(["k0", "k1"]) == {"k0": "kept"}  # the failed batch was rolled back


def test_run_registry_full_is_a_warning_and_the_command_goes_on(tmp_path, monkeypatch):
    """The registry is a side record: a full disk there costs a warning line, not the run."""
    from tunelab import runs

    real = sqlite3.connect

    def connect(*a, **k):
        con = real(*a, **k)
        con.execute("PRAGMA max_page_count=1")
        return con

    monkeypatch.setattr(runs.sqlite3, "connect", connect)
    with pytest.warns(RuntimeWarning, match=r"run registry .*runs.sqlite: could not record .*disk is full"):
        assert runs.start("eval", name="x") is None


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
def test_real_full_tmpfs_during_training(tmp_path, tiny_dir):
    """A real 1.5 MB disk: the first checkpoints fit, a later one does not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        cfg = _train_cfg(tmp_path, tiny_dir, max_steps=40, keep_checkpoints=40)
        env = {**os.environ, "TUNELAB_QUIET": "1", "TUNELAB_NO_ENERGY": "1"}
        proc = subprocess.run([sys.executable, "-m", "tunelab", "train", str(cfg), f"out={disk / 'run'}"],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = one_line(proc.stderr)
        assert line.startswith(f"error: {disk / 'run'}") and "could not be written: the disk is full" in line
        from tunelab.train import checkpoint as ckpt

        last = ckpt.latest(disk / "run")
        assert last is not None and (last / ckpt.STATE_FILE).is_file()  # the earlier checkpoint is whole
    finally:
        subprocess.run(["umount", str(disk)])


def test_write_failed_is_a_tunelab_error():
    assert issubclass(WriteFailed, TunelabError)
