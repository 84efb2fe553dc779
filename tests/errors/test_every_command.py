"""Every command and subcommand, every kind of bad argument: exit 2, at most two lines on stderr,
no traceback, nothing created or changed, and no model loaded.

The commands are enumerated from the Typer app itself, so a command added later is covered
without editing this file. Which bad-argument kinds apply to a command is read from its
parameters: a file kind needs a `Path` parameter, a wrong type needs an int or float one, an
unwritable output needs an output parameter (usage.OUTPUT_PARAMS), a directory-for-a-file needs a
`Path` parameter declared `dir_okay=False`.
"""
from __future__ import annotations

import json
import os
import typing
from pathlib import Path

import pytest
import typer.main

from tunelab.cli import app, main
from tunelab.cli.usage import OUTPUT_PARAMS, walk

ROOT = typer.main.get_command(app)
LEAVES = [(" ".join(path), cmd) for path, cmd in walk(ROOT) if path and not getattr(cmd, "commands", None)]
IS_ROOT = os.geteuid() == 0


def _annotation(param):
    return getattr(getattr(param, "type_descriptor", None), "annotation", None)


def _is_path(param) -> bool:
    ann = _annotation(param)
    return ann is Path or Path in typing.get_args(ann)


def _is_number(param) -> bool:
    return _annotation(param) in (int, float)


def _dir_not_ok(param) -> bool:
    info = getattr(param.type_descriptor, "parameter_info", None)
    return getattr(info, "dir_okay", True) is False


def _opt(param) -> str | None:
    """The long flag of an option; None for a positional argument."""
    return max(param.opts, key=len) if param.param_type_name == "option" else None


def _real_params(cmd):
    return [p for p in cmd.params if p.name not in ("help",) and p.expose_value]


def _base_value(param, files) -> str:
    if _is_number(param):
        return "1"
    if param.name in OUTPUT_PARAMS:
        return str(files["out"])
    return str(files["good"])


def _args(path: str, cmd, files, *, replace=None, drop=None) -> list[str]:
    """argv for `path` with every required parameter given (one changed or dropped)."""
    args = path.split()
    positional, options = [], []
    for p in _real_params(cmd):
        wanted = replace is not None and p.name == replace[0]
        if not (p.required or wanted) or p.name == drop:
            continue
        value = replace[1] if wanted else _base_value(p, files)
        flag = _opt(p)
        if flag is None:
            positional.append(value)
        elif _annotation(p) is bool:
            options.append(flag)
        else:
            options += [flag, value]
    return args + options + positional  # options first: a variadic argument would swallow them


def _cases():
    """(command, kind, target parameter or None) for every pair that applies."""
    for path, cmd in LEAVES:
        params = _real_params(cmd)
        yield pytest.param(path, "unknown_option", None, id=f"{path}-unknown_option")
        required = [p for p in params if p.required]
        if required:
            yield pytest.param(path, "missing_argument", required[0].name, id=f"{path}-missing_argument")
        for p in params:
            if _is_number(p):
                yield pytest.param(path, "wrong_type", p.name, id=f"{path}-wrong_type-{p.name}")
            if _is_path(p) and p.name not in OUTPUT_PARAMS:
                for kind in ("missing_file", "unreadable_file"):
                    yield pytest.param(path, kind, p.name, id=f"{path}-{kind}-{p.name}")
                if _dir_not_ok(p):
                    yield pytest.param(path, "directory_for_file", p.name, id=f"{path}-directory_for_file-{p.name}")
            if p.name in OUTPUT_PARAMS:
                yield pytest.param(path, "unwritable_output", p.name, id=f"{path}-unwritable_output-{p.name}")


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A work folder (also the cwd) with one good input, a blocker file, and no model loading."""
    import transformers

    import tunelab.models.encoders as encoders
    import tunelab.models.gguf as gguf
    import tunelab.models.loading as loading

    def refuse(*a, **k):
        raise AssertionError("a model was loaded for a bad argument")

    # every way weights come in: the registry pull, GGUF conversion, from_pretrained, MiniLM
    for module, name in ((loading, "pull"), (gguf, "convert_gguf"), (encoders, "load_minilm")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    good = work / "good.jsonl"
    good.write_text(json.dumps({"prompt": "a", "completion": "b", "text": "hello", "output": "hello"}) + "\n")
    blocker = work / "blocker"
    blocker.write_text("a file, not a folder")
    unreadable = work / "unreadable.jsonl"
    unreadable.write_text(good.read_text())
    unreadable.chmod(0)
    yield {"work": work, "good": good, "out": work / "out" / "result", "blocker": blocker,
           "unreadable": unreadable, "missing": work / "missing.jsonl", "dir": work / "a-folder"}
    unreadable.chmod(0o600)


def _snapshot(root: Path) -> dict:
    """Every path, with size and mtime for files (a folder's mtime moves when a probe file comes and goes)."""
    return {str(p.relative_to(root)): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


@pytest.mark.parametrize("path, kind, target", list(_cases()))
def test_bad_argument(path, kind, target, files, capsys):
    if kind == "unreadable_file" and IS_ROOT:
        pytest.skip("root reads files regardless of their permissions")
    cmd = dict(LEAVES)[path]
    files["dir"].mkdir(exist_ok=True)
    bad = {"missing_file": files["missing"], "unreadable_file": files["unreadable"], "wrong_type": "abc",
           "directory_for_file": files["dir"], "unwritable_output": files["blocker"] / "sub"}
    if kind == "unknown_option":
        args = _args(path, cmd, files) + ["--no-such-option"]
    elif kind == "missing_argument":
        args = _args(path, cmd, files, drop=target)
    else:
        args = _args(path, cmd, files, replace=(target, str(bad[kind])))
    before = _snapshot(files["work"].parent)  # the work folder and TUNELAB_HOME
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    err_lines = [line for line in out.err.splitlines() if line.strip()]
    assert e.value.code == 2, f"tunelab {' '.join(args)}\n{out.err}"
    assert "Traceback" not in out.err + out.out
    assert len(err_lines) <= 2, out.err
    assert _snapshot(files["work"].parent) == before, f"tunelab {' '.join(args)} created or changed files"


def test_debug_still_shows_the_traceback(files):
    with pytest.raises(Exception) as e:
        main(["--debug", "trian"])
    assert "trian" in str(e.value)


def test_unknown_command_suggests_the_right_one(capsys):
    with pytest.raises(SystemExit) as e:
        main(["trian"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "No such command 'trian'. Did you mean 'train'?" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_every_command_is_enumerated():
    names = {p for p, _ in LEAVES}
    assert {"train", "eval", "export", "safety scan", "data inspect", "models pull"} <= names
