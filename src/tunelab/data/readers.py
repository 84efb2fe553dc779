"""Read .jsonl, .json (array or object with one list), .csv and .parquet files into Rows.

Errors name the file and line (or row) and say what to do; with skip_bad=True an unreadable
record is skipped and counted instead.
"""
from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

from tunelab.data.records import Row
from tunelab.errors import TunelabError

def skip_hint(setting: str) -> str:
    """The advice that ends a bad-record error, naming the real switch of the caller."""
    return f"fix it, or {'pass' if setting.startswith('--') else 'set'} {setting} to skip bad records"


SKIP_HINT = skip_hint("--skip-bad")  # commands with that flag; train says data.skip_bad=true
SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")


def read_rows(path: str | Path, *, skip_bad: bool = False, hint: str = SKIP_HINT) -> list[Row]:
    """All records of a data file, in file order. An empty file is an error.

    `hint` ends the message of a bad record: callers without --skip-bad say what to do instead.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise TunelabError(f"{path}: data file not found; check the path (relative paths are from the current folder)")
    if path.is_dir():
        raise TunelabError(f"{path}: is a folder; give a {', '.join(SUFFIXES)} file")
    suffix = path.suffix.lower()
    readers = {".jsonl": _jsonl, ".ndjson": _jsonl, ".json": _json, ".csv": _csv, ".parquet": _parquet}
    if suffix not in readers:
        raise TunelabError(f"{path}: unknown data file type '{suffix}'; use one of {', '.join(SUFFIXES)}")
    bad: list[str] = []
    try:
        rows = readers[suffix](path, skip_bad, bad)
    except TunelabError as e:
        if hint is SKIP_HINT or not str(e).endswith(SKIP_HINT):
            raise
        raise TunelabError(str(e)[: -len(SKIP_HINT)] + hint) from None
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise TunelabError(f"{path}: cannot read the file ({why}); check it is a readable UTF-8 text file") from None
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} bad record(s) (first: {bad[0]})", stacklevel=2)
    if not rows:
        raise TunelabError(f"{path}: no records in the file; it is empty or every record was skipped")
    return rows


def _bad(msg: str, skip_bad: bool, bad: list[str]) -> None:
    if not skip_bad:
        raise TunelabError(f"{msg}; {SKIP_HINT}")
    bad.append(msg)


def _decode(raw: bytes, path: Path, lineno: int, skip_bad: bool, bad: list[str]) -> str | None:
    """One line as text; invalid UTF-8 is a bad record at that line (None when skipped)."""
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        _bad(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})", skip_bad, bad)
        return None


def _jsonl(path: Path, skip_bad: bool, bad: list[str]) -> list[Row]:
    rows = []
    with path.open("rb") as f:  # decoded line by line, so a bad byte costs one line, not the file
        for lineno, raw in enumerate(f, start=1):
            line = _decode(raw, path, lineno, skip_bad, bad)
            if line is None or not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                _bad(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})", skip_bad, bad)
                continue
            if not isinstance(data, dict):
                _bad(f"{path}:{lineno}: expected a JSON object, got {type(data).__name__}", skip_bad, bad)
                continue
            rows.append(Row(lineno, data, f"{path}:{lineno}"))
    return rows


def _json(path: Path, skip_bad: bool, bad: list[str]) -> list[Row]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if raw.lstrip().startswith(b"{") and b"\n{" in raw:
            return _jsonl(path, skip_bad, bad)  # JSON Lines: one bad line can be skipped
        line = raw[:e.start].count(b"\n") + 1
        raise TunelabError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); "
                           "save the file as UTF-8") from None
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("{") and "\n{" in text:
            return _jsonl(path, skip_bad, bad)  # a .json file that is really JSON Lines
        raise TunelabError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno}); fix the file") from None
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise TunelabError(f"{path}: expected a JSON array of records (or an object holding one list); found keys {list(data)}")
        data = data[lists[0]]
    if not isinstance(data, list):
        raise TunelabError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    rows = []
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            _bad(f"{path}: record {i}: expected a JSON object, got {type(item).__name__}", skip_bad, bad)
            continue
        rows.append(Row(i, item, f"{path}: record {i}"))
    return rows


def _csv(path: Path, skip_bad: bool, bad: list[str]) -> list[Row]:
    rows = []
    with path.open("rb") as f:
        lines = [_decode(raw, path, n, skip_bad, bad) for n, raw in enumerate(f, start=1)]
    if lines and lines[0] is None:
        raise TunelabError(f"{path}:1: the header line is not valid UTF-8; save the file as UTF-8")
    # a skipped line becomes an empty one, which DictReader passes over: line numbers stay true
    with io.StringIO("".join("\n" if x is None else x for x in lines), newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return []
        for item in reader:
            line = reader.line_num
            if None in item:  # more cells than header columns
                _bad(f"{path}:{line}: {len(item[None]) + len(reader.fieldnames)} cells but {len(reader.fieldnames)} header columns", skip_bad, bad)
                continue
            rows.append(Row(line, dict(item), f"{path}:{line}"))
    return rows


def _parquet(path: Path, skip_bad: bool, bad: list[str]) -> list[Row]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except ImportError:
        raise TunelabError("reading .parquet needs pyarrow: pip install pyarrow") from None
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise TunelabError(f"{path}: not a readable parquet file ({e}); check the file") from None
    return [Row(i, item, f"{path}: row {i}") for i, item in enumerate(table.to_pylist(), start=1)]
