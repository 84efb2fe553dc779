"""Read .jsonl, .json (array or object with one list), .csv and .parquet files into Rows.

Errors name the file and line (or row) and say what to do; with skip_bad=True an unreadable
record is skipped and counted instead.

`iter_rows` streams: JSON Lines and CSV are read line by line, Parquet a record batch at a time
and a .json array a chunk at a time (json_stream.py), so memory does not grow with the file. A
.json object holding the list of records is the exception: it is parsed whole.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import json
import logging
import warnings
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from tunelab.data.json_stream import iter_array
from tunelab.data.records import Row
from tunelab.errors import TunelabError

log = logging.getLogger("tunelab.data")
T = TypeVar("T")


def skip_hint(setting: str) -> str:
    """The advice that ends a bad-record error, naming the real switch of the caller."""
    return f"fix it, or {'pass' if setting.startswith('--') else 'set'} {setting} to skip bad records"


SKIP_HINT = skip_hint("--skip-bad")  # commands with that flag; train says data.skip_bad=true
SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
COMPRESSED = ".gz"  # any text reader takes its file gzipped (data.jsonl.gz): decompressed as it streams
PARQUET_BATCH = 4096  # rows per record batch read from a parquet file


def iter_rows(path: str | Path, *, skip_bad: bool = False, hint: str = SKIP_HINT,
              bad: list[str] | None = None) -> Iterator[Row]:
    """Records one at a time, in file order, holding only the current record (see the module doc).

    Skipped records (skip_bad) are appended to `bad`. Checks the path before the first record.
    """
    path = Path(path).expanduser()
    if not path.exists():
        if path.is_absolute():
            raise TunelabError(f"{path}: data file not found; check the path")
        raise not_found(path, [Path.cwd() / path], f"relative paths are resolved from the current folder, {Path.cwd()}")
    if path.is_dir():
        raise TunelabError(f"{path}: is a folder; give a {', '.join(SUFFIXES)} file")
    suffix = kind(path)
    readers = {".jsonl": _jsonl, ".ndjson": _jsonl, ".json": _json, ".csv": _csv, ".parquet": _parquet}
    if suffix not in readers:
        raise TunelabError(f"{path}: unknown data file type '{suffix}'; use one of {', '.join(SUFFIXES)} "
                           f"(each may be gzipped: {SUFFIXES[0]}{COMPRESSED})")
    if suffix == ".parquet" and path.suffix.lower() == COMPRESSED:
        raise TunelabError(f"{path}: a gzipped parquet file cannot be read; parquet compresses itself: gunzip it")
    return _guarded(readers[suffix](path, skip_bad, [] if bad is None else bad), path, hint)


def not_found(spec: str | Path, looked: list[Path], why: str, key: str | None = None) -> TunelabError:
    """'KEY: data file not found: looked for SPEC at PATH (WHY); check the path': where a missing
    file was looked for and why there (a relative path's base folder is not always the current one)."""
    lead = f"{key}: " if key else ""
    if Path(spec).expanduser().is_absolute():
        return TunelabError(f"{lead}{spec}: data file not found; check the path")
    places = ", then at ".join(str(p) for p in looked)
    return TunelabError(f"{lead}data file not found: looked for {spec} at {places} ({why}); check the path")


def base_why(base_dir: str | Path, named_in: str | None = None) -> str:
    """Why a relative path was looked for under base_dir: the folder of the file `named_in`."""
    if named_in:
        return f"relative paths in {named_in} are resolved from its folder, {base_dir}"
    if Path(base_dir).resolve() == Path.cwd().resolve():
        return f"relative paths are resolved from the current folder, {base_dir}"
    return f"relative paths are resolved from the folder of the file that names them, {base_dir}"


def resolve_spec(spec: str | Path, base_dir: str | Path | None = None, named_in: str | None = None) -> str | Path:
    """A builtin:<task> spec as is; a file path made absolute against base_dir when relative.

    A relative path that is not there is an error naming where it was looked for: base_dir is the
    folder of the file that names the path (`named_in`, e.g. the task file), not the current one.
    """
    spec = str(spec)
    if spec.startswith("builtin:"):
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
        if not path.exists():
            raise not_found(spec, [path], base_why(base_dir, named_in), named_in)
    return path


def iter_spec_rows(spec: str | Path, skip_bad: bool, base_dir, hint: str, report: list[str] | None = None) -> Iterator[Row]:
    where = resolve_spec(spec, base_dir)
    if isinstance(where, str):
        from tunelab.data.builtin import load_builtin_rows

        yield from load_builtin_rows(where)  # generated in memory (at most 100k rows)
        return
    bad: list[str] = []
    n = 0
    for row in iter_rows(where, skip_bad=skip_bad, hint=hint, bad=bad):
        n += 1
        yield row
    finish(where, n, bad)
    if bad and report is not None:  # also in the caller's notes (e.g. the cache entry's, shown by data prepare)
        report.append(f"{where}: skipped {len(bad)} unreadable record(s); first: {bad[0]}")


def converted(rows: Iterator[Row], convert: Callable[[Row], T], *, spec, skip_bad: bool, skip_setting: str,
              noun: str = "record", report: list[str] | None = None, warn: bool = True) -> Iterator[T]:
    """Each row through `convert`; a row it refuses (TunelabError) stops the read with the setting that
    skips it, or with skip_bad is counted, and the count is noted after the last one (logged when
    `warn`, and in `report`). A read that converts nothing is an error whatever skip_bad says."""
    skipped, n_ok = [], 0
    for row in rows:
        try:
            item = convert(row)
        except TunelabError as e:
            if not skip_bad:
                raise TunelabError(f"{e}; {skip_hint(skip_setting)}") from None
            skipped.append(str(e))
            continue
        n_ok += 1
        yield item
    if skipped:
        note = f"{spec}: skipped {len(skipped)} bad {noun}(s); first: {skipped[0]}"
        if warn:
            log.warning(note)
        if report is not None:
            report.append(note)
    if not n_ok:
        raise TunelabError(f"{spec}: every record was bad; see the first error above and fix the data")


def kind(path: Path) -> str:
    """The data suffix of a file, looking through .gz: data.jsonl.gz -> .jsonl."""
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] == COMPRESSED:
        return suffixes[-2] if len(suffixes) > 1 else COMPRESSED
    return path.suffix.lower()


def _open(path: Path):
    """The file as binary, decompressed on the fly when it is gzipped."""
    return gzip.open(path, "rb") if path.suffix.lower() == COMPRESSED else path.open("rb")


def _guarded(rows: Iterator[Row], path: Path, hint: str) -> Iterator[Row]:
    """The reader's records, with its errors reworded: the caller's hint, one line for I/O errors."""
    try:
        yield from rows
    except TunelabError as e:
        if hint is SKIP_HINT or not str(e).endswith(SKIP_HINT):
            raise
        raise TunelabError(str(e)[: -len(SKIP_HINT)] + hint) from None
    except (OSError, EOFError, UnicodeDecodeError) as e:  # gzip: BadGzipFile (an OSError) or EOFError
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise TunelabError(f"{path}: cannot read the file ({why}); check it is a readable UTF-8 text file") from None


def read_rows(path: str | Path, *, skip_bad: bool = False, hint: str = SKIP_HINT) -> list[Row]:
    """All records of a data file, in file order. An empty file is an error.

    `hint` ends the message of a bad record: callers without --skip-bad say what to do instead.
    """
    bad: list[str] = []
    rows = list(iter_rows(path, skip_bad=skip_bad, hint=hint, bad=bad))
    finish(Path(path).expanduser(), len(rows), bad)
    return rows


def finish(path: Path, n_rows: int, bad: list[str]) -> None:
    """After the last record: warn about skipped records; no record at all is an error."""
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} bad record(s) (first: {bad[0]})", stacklevel=3)
    if not n_rows:
        raise TunelabError(f"{path}: no records in the file; it is empty or every record was skipped")


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


def _jsonl(path: Path, skip_bad: bool, bad: list[str]) -> Iterator[Row]:
    with _open(path) as f:  # decoded line by line, so a bad byte costs one line, not the file
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
            yield Row(lineno, data, f"{path}:{lineno}")


def _json(path: Path, skip_bad: bool, bad: list[str]) -> Iterator[Row]:
    with _open(path) as f:
        start = f.read(4096).removeprefix(codecs.BOM_UTF8).lstrip()
        if start.startswith(b"["):  # the usual form: streamed record by record
            f.seek(0)
            for i, item in iter_array(path, f):
                if not isinstance(item, dict):
                    _bad(f"{path}: record {i}: expected a JSON object, got {type(item).__name__}", skip_bad, bad)
                    continue
                yield Row(i, item, f"{path}: record {i}")
            return
        json_lines = start.startswith(b"{") and _first_line_then_more(f)
    if json_lines:  # a .json file that is really JSON Lines
        yield from _jsonl(path, skip_bad, bad)
        return
    yield from _json_whole(path, skip_bad, bad)


def _first_line_then_more(f) -> bool:
    """Whether the file's first line is a whole JSON object and more text follows it."""
    f.seek(0)
    try:
        first = json.loads(f.readline().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(first, dict) and any(line.strip() for line in f)


def _json_whole(path: Path, skip_bad: bool, bad: list[str]) -> Iterator[Row]:
    # An object holding the list of records (or a file that is not JSON) is parsed whole: memory
    # grows with the file. Arrays of records stream (see _json).
    with _open(path) as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if raw.lstrip().startswith(b"{") and b"\n{" in raw:
            del raw
            yield from _jsonl(path, skip_bad, bad)  # JSON Lines: one bad line can be skipped
            return
        line = raw[:e.start].count(b"\n") + 1
        raise TunelabError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); "
                           "save the file as UTF-8") from None
    del raw
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("{") and "\n{" in text:
            del text
            yield from _jsonl(path, skip_bad, bad)  # a .json file that is really JSON Lines
            return
        raise TunelabError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno}); fix the file") from None
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise TunelabError(f"{path}: expected a JSON array of records (or an object holding one list); found keys {list(data)}")
        data = data[lists[0]]
    if not isinstance(data, list):
        raise TunelabError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            _bad(f"{path}: record {i}: expected a JSON object, got {type(item).__name__}", skip_bad, bad)
            continue
        yield Row(i, item, f"{path}: record {i}")


def _csv(path: Path, skip_bad: bool, bad: list[str]) -> Iterator[Row]:
    with _open(path) as raw_lines:
        def lines():
            for n, raw in enumerate(raw_lines, start=1):
                text = _decode(raw, path, n, skip_bad, bad)
                if text is None and n == 1:
                    raise TunelabError(f"{path}:1: the header line is not valid UTF-8; save the file as UTF-8")
                # a skipped line becomes an empty one, which DictReader passes over: line numbers stay true
                yield "\n" if text is None else text

        f = lines()
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return
        for item in reader:
            line = reader.line_num
            if None in item:  # more cells than header columns
                _bad(f"{path}:{line}: {len(item[None]) + len(reader.fieldnames)} cells but {len(reader.fieldnames)} header columns", skip_bad, bad)
                continue
            short = [k for k, v in item.items() if v is None]  # DictReader's filler for missing cells
            if short:  # fewer cells than header columns: not "None" values
                _bad(f"{path}:{line}: {len(reader.fieldnames) - len(short)} cells but {len(reader.fieldnames)} header "
                     f"columns (no cell for {', '.join(short)})", skip_bad, bad)
                continue
            yield Row(line, dict(item), f"{path}:{line}")


def _parquet(path: Path, skip_bad: bool, bad: list[str]) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH)
    except ImportError:
        raise TunelabError("reading .parquet needs pyarrow: pip install pyarrow") from None
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise TunelabError(f"{path}: not a readable parquet file ({e}); check the file") from None
    i = 0
    while True:
        try:
            batch = next(batches, None)
        except Exception as e:  # a damaged row group shows only when it is read
            raise TunelabError(f"{path}: not a readable parquet file after row {i} ({e}); check the file") from None
        if batch is None:
            return
        for item in batch.to_pylist():
            i += 1
            yield Row(i, item, f"{path}: row {i}")
