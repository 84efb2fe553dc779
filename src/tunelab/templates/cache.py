"""The encoded-data cache: a data set tokenised once, then memory-mapped by every later run.

An entry lives in `$TUNELAB_HOME/cache/encoded/<key>/` and holds flat arrays (numpy raw files,
read back with np.memmap, so opening one costs no tokenising and almost no memory):

    ids.bin        int32  (T,)    the kept records' tokens end to end
    trained.bin    uint8  (T,)    1 where the token is trained (label = id)
    offsets.bin    int64  (N+1,)  record k is ids[offsets[k]:offsets[k+1]] (empty unless kept)
    status.bin     uint8  (N,)    batch.KEPT | TOO_LONG | NOTHING_TRAINED
    truncated.bin  uint8  (N,)
    rid.bin        uint8  (B,)    the records' ids, UTF-8 end to end
    rid_offsets.bin int64 (N+1,)  record k's id is rid[rid_offsets[k]:rid_offsets[k+1]]
    meta.json      counts, notes (detected format, skipped records), the key's inputs; its size
                   does not grow with the number of records

The key is the sha256 of everything that changes the encoding: the data file's content (or the
builtin spec), format, field map, system text, skip_bad, the tokenizer (its full JSON and special
tokens), the chat template, train_on, max_length, truncate and ENCODING_VERSION. An entry is
written into a temporary folder and renamed when complete, so a reader never sees half an entry
and two writers of the same key both end with a valid one.

Reading, converting and encoding stream in chunks of CHUNK records (data.load.iter_conversations
+ batch.render_chunk / tokenize_chunk, the two overlapped on two threads): memory stays flat
however long the file is.

Evaluation's texts (a perplexity task's documents) are cached the same way by `token_lists`: an
entry with only ids.bin and offsets.bin, keyed by the texts themselves and the tokenizer.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from tunelab.data.load import iter_conversations, resolve_spec
from tunelab.io import (WriteFailed, atomic_write_text, file_sha256, is_write_failure, set_usual_mode, tree_bytes,
                        write_errors)
from tunelab.paths import home
from tunelab.templates.batch import (ID_DTYPE, KEPT, NOTHING_TRAINED, TOO_LONG, Chunk, render_chunk, tokenize_chunk,
                                     tokenize_many)
from tunelab.templates.render import IGNORE, Encoded, length_notes, no_rows_error, template_of

ENCODING_VERSION = 2  # bump when the encoding of a record changes: every old entry becomes a miss
CHUNK = 4096  # records per batch call: big enough for the Rust threads, small enough to stay flat
ARRAYS = {"ids": ID_DTYPE, "trained": np.uint8, "offsets": np.int64, "status": np.uint8, "truncated": np.uint8,
          "rid": np.uint8, "rid_offsets": np.int64}
TEXT_ARRAYS = {"ids": ID_DTYPE, "offsets": np.int64}  # a token_lists entry


def cache_dir() -> Path:
    return home() / "cache" / "encoded"


def tokenizer_sha256(tokenizer) -> str:
    """Content hash of a tokenizer: the fast tokenizer's full JSON (or the vocabulary) and its specials."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    h.update(body.encode("utf-8"))
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return h.hexdigest()


def data_sha256(where: str | Path) -> str:
    if isinstance(where, str):  # builtin:<task>?... is generated, deterministic for its spec
        return hashlib.sha256(where.encode()).hexdigest()
    from tunelab.data.readers import iter_rows
    from tunelab.io import file_sha256

    iter_rows(where)  # checks the path first: a missing file or folder gets the readers' one-line error
    return file_sha256(where)


def cache_key(where, tokenizer, *, format: str, fields: dict | None, system: str | None, skip_bad: bool,
              train_on: str, max_length: int | None, truncate: bool) -> tuple[str, dict]:
    inputs = {"data": data_sha256(where), "format": format, "fields": dict(sorted((fields or {}).items())),
              "system": system, "skip_bad": bool(skip_bad), "tokenizer": tokenizer_sha256(tokenizer),
              "template": hashlib.sha256(template_of(tokenizer).encode()).hexdigest(),
              "train_on": train_on, "max_length": max_length, "truncate": bool(truncate),
              "version": ENCODING_VERSION}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32], inputs


def _map(folder: Path, arrays: dict) -> dict[str, np.ndarray]:
    out = {}
    for name, dtype in arrays.items():
        path = folder / f"{name}.bin"
        # np.memmap cannot map an empty file; an empty array gets a plain empty array
        out[name] = np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)
    return out


@dataclass
class EncodedSet:
    """A memory-mapped cache entry (or a selection of its records), indexable like list[Encoded]."""

    folder: Path
    arrays: dict[str, np.ndarray]
    meta: dict
    index: np.ndarray  # (n,) the records of this view, into the entry's record arrays
    hit: bool = False

    @classmethod
    def open(cls, folder: Path, *, hit: bool = True) -> "EncodedSet":
        meta = json.loads((folder / "meta.json").read_text())
        return cls(folder, _map(folder, ARRAYS), meta, np.arange(meta["records"]), hit)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def lengths(self) -> np.ndarray:
        off = self.arrays["offsets"]
        return (off[self.index + 1] - off[self.index]).astype(np.int64)

    @property
    def status(self) -> np.ndarray:
        return np.asarray(self.arrays["status"][self.index])

    def record_id(self, i: int) -> str:
        k = int(self.index[i])
        a, b = int(self.arrays["rid_offsets"][k]), int(self.arrays["rid_offsets"][k + 1])
        return self.arrays["rid"][a:b].tobytes().decode("utf-8")

    def __getitem__(self, i: int) -> Encoded:
        k = int(self.index[i])
        a, b = int(self.arrays["offsets"][k]), int(self.arrays["offsets"][k + 1])
        ids = self.arrays["ids"][a:b]
        labels = np.where(self.arrays["trained"][a:b] == 1, ids, IGNORE)
        return Encoded(ids.tolist(), labels.tolist(), bool(self.arrays["truncated"][k]), self.record_id(i))

    def select(self, index) -> "EncodedSet":
        return EncodedSet(self.folder, self.arrays, self.meta, self.index[np.asarray(index, dtype=np.int64)], self.hit)

    def trainable(self, notes: list[str] | None = None, log=None) -> "EncodedSet":
        """The kept records of this view, with encode_all's warnings counted over the view."""
        st = self.status
        trunc = np.asarray(self.arrays["truncated"][self.index])
        msgs = length_notes(len(st), int(((st == KEPT) & (trunc == 1)).sum()), int((st == TOO_LONG).sum()),
                            int((st == NOTHING_TRAINED).sum()), self.meta["inputs"]["max_length"])
        for m in msgs:
            if log is not None:
                log.warning(m)
            if notes is not None:
                notes.append(m)
        kept = self.select(np.flatnonzero(st == KEPT))
        if not len(kept):
            raise no_rows_error(msgs)
        return kept


def _entry(key: str, fill: Callable[[Path], dict]) -> tuple[Path, bool]:
    """(folder of entry `key`, hit). On a miss `fill(tmp)` writes the arrays into a temporary
    folder and returns meta.json's content; the folder is renamed into place when complete."""
    final = cache_dir() / key
    if (final / "meta.json").exists():
        return final, True
    with write_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=final.parent))
        set_usual_mode(tmp)  # mkdtemp made it 0700; the cache is shared like any other artifact
    try:
        (tmp / "meta.json").write_text(json.dumps(fill(tmp), ensure_ascii=False))
        try:
            os.replace(tmp, final)  # atomic; fails if another writer finished first
        except OSError:
            if not (final / "meta.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # the other writer's entry is the same data
    except Exception as e:
        written = tree_bytes(tmp)  # a lower bound of the space the entry needs
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_failure(e):
            raise WriteFailed(final, written, e) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, False


# ---------------------------------------------------------------- lookup by the tokenizer's files
# An entry's key hashes the loaded tokenizer (its content), which needs transformers: ~8 s of
# imports on a CPU box just to find that the entry exists. A second, cheaper key hashes the files
# a tokenizer is loaded from (plus the library versions that read them) and points at the entry,
# so `tunelab data prepare` finds a cached entry without loading anything (issue 26 case 11).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
                   "config.json")  # config.json: load_tokenizer reads the context length from it
BY_FILES = ".by-files"  # a dot folder: `cache list` skips it and `cache clear` removes it


def tokenizer_files_sha256(folder: Path) -> str | None:
    """Hash of the files a tokenizer is loaded from, with the versions of the libraries that read
    them; None when the folder has no tokenizer.json (a .gguf: its tokenizer is built in memory)."""
    from importlib.metadata import PackageNotFoundError, version

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        return None
    h = hashlib.sha256()
    for lib in ("transformers", "tokenizers"):
        try:
            h.update(f"{lib}={version(lib)};".encode())
        except PackageNotFoundError:
            h.update(f"{lib}=none;".encode())
    for name in TOKENIZER_FILES:
        f = folder / name
        if f.is_file():
            h.update(f"{name}:{file_sha256(f)};".encode())
    return h.hexdigest()


def _lookup_key(where, folder: Path, settings: dict) -> str | None:
    files = tokenizer_files_sha256(folder)
    if files is None:
        return None
    inputs = {"data": data_sha256(where), "tokenizer_files": files, "version": ENCODING_VERSION,
              **{k: v for k, v in settings.items()}}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:32]


def find(spec, tokenizer_folder: Path, *, base_dir=None, **settings) -> EncodedSet | None:
    """The entry `prepare(spec, <the tokenizer of tokenizer_folder>, **settings)` made earlier,
    found without loading the tokenizer; None when there is none (or the folder has no files)."""
    where = resolve_spec(spec, base_dir)
    lookup = _lookup_key(where, tokenizer_folder, settings)
    if lookup is None:
        return None
    try:
        key = (cache_dir() / BY_FILES / lookup).read_text().strip()
    except OSError:
        return None
    if not key or not (cache_dir() / key / "meta.json").is_file():
        return None
    return EncodedSet.open(cache_dir() / key, hit=True)


def _remember(where, tokenizer_folder: Path, settings: dict, key: str) -> None:
    """Point the files key at entry `key`; a failure only costs the next lookup a tokenizer load."""
    lookup = _lookup_key(where, tokenizer_folder, settings)
    if lookup is not None:
        with contextlib.suppress(OSError, WriteFailed):
            atomic_write_text(cache_dir() / BY_FILES / lookup, key)


def prepare(spec, tokenizer, *, format: str = "auto", fields: dict | None = None, system: str | None = None,
            skip_bad: bool = False, train_on: str = "completion", max_length: int | None = None,
            truncate: bool = True, base_dir=None, skip_setting: str = "--skip-bad",
            progress: Callable[[int], None] | None = None, tokenizer_folder: Path | None = None) -> EncodedSet:
    """The encoded data set of `spec`: from the cache when an entry with the same key exists,
    else read, converted and encoded in chunks and written to the cache first.

    `progress(n)` is called with the number of records done after each chunk. `tokenizer_folder`
    (where `tokenizer` was loaded from) lets `find` return this entry later without loading it.
    """
    where = resolve_spec(spec, base_dir)
    key, inputs = cache_key(where, tokenizer, format=format, fields=fields, system=system, skip_bad=skip_bad,
                            train_on=train_on, max_length=max_length, truncate=truncate)

    def fill(tmp: Path) -> dict:
        notes: list[str] = []
        convs = iter_conversations(where, format=format, fields=fields, skip_bad=skip_bad, system=system,
                                   report=notes, skip_setting=skip_setting)
        meta = _write(tmp, _chunks(convs, CHUNK), tokenizer, train_on, max_length, truncate, progress)
        return {**meta, "notes": notes, "inputs": inputs, "spec": str(spec)}

    folder, hit = _entry(key, fill)
    if tokenizer_folder is not None:
        _remember(where, tokenizer_folder, dict(format=format, fields=fields, system=system, skip_bad=skip_bad,
                                                train_on=train_on, max_length=max_length, truncate=truncate), key)
    return EncodedSet.open(folder, hit=hit)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write(folder: Path, chunks, tokenizer, train_on, max_length, truncate, progress) -> dict:
    """Append every chunk's arrays to the entry's files; returns the counts for meta.json."""
    files = {name: open(folder / f"{name}.bin", "wb") for name in ARRAYS}
    n_records = n_tokens = n_trained = n_rid = 0
    counts = {"kept": 0, "truncated": 0, "too_long": 0, "nothing_trained": 0}

    def tokenized() -> Iterator[Chunk]:
        # two stages on the two cores: while the Rust tokenizer (which releases the GIL) encodes
        # chunk k in the worker, this thread reads, converts and renders chunk k+1 (pure Python)
        with ThreadPoolExecutor(max_workers=1) as worker:
            pending = None
            for convs in chunks:
                plan = render_chunk(tokenizer, convs, train_on=train_on)
                if pending is not None:
                    yield pending.result()
                pending = worker.submit(tokenize_chunk, tokenizer, plan, max_length=max_length, truncate=truncate)
            if pending is not None:
                yield pending.result()

    try:
        files["offsets"].write(np.zeros(1, np.int64).tobytes())
        files["rid_offsets"].write(np.zeros(1, np.int64).tobytes())
        for c in tokenized():
            files["ids"].write(c.ids.astype(ID_DTYPE, copy=False).tobytes())
            files["trained"].write(c.trained.tobytes())
            files["offsets"].write((n_tokens + np.cumsum(c.lengths)).astype(np.int64).tobytes())
            files["status"].write(c.status.tobytes())
            files["truncated"].write(c.truncated.tobytes())
            rids = [r.encode("utf-8") for r in c.record_ids]
            files["rid"].write(b"".join(rids))
            files["rid_offsets"].write((n_rid + np.cumsum([len(r) for r in rids], dtype=np.int64)).tobytes())
            n_rid += sum(map(len, rids))
            n_records += len(rids)
            n_tokens += len(c.ids)
            n_trained += int(c.trained.sum())
            counts["kept"] += int((c.status == KEPT).sum())
            counts["truncated"] += int(c.truncated.sum())
            counts["too_long"] += int((c.status == TOO_LONG).sum())
            counts["nothing_trained"] += int((c.status == NOTHING_TRAINED).sum())
            if progress is not None:
                progress(n_records)
    finally:
        for f in files.values():
            f.close()
    return {"records": n_records, "tokens": n_tokens, "trained_tokens": n_trained, **counts}


class TokenLists:
    """Token ids of many texts, memory-mapped from a `token_lists` entry: `lists[i]` is a list[int]."""

    def __init__(self, folder: Path, hit: bool):
        self.folder, self.hit = folder, hit
        self.arrays = _map(folder, TEXT_ARRAYS)

    def __len__(self) -> int:
        return len(self.arrays["offsets"]) - 1

    def __getitem__(self, i: int) -> list[int]:
        off = self.arrays["offsets"]
        return self.arrays["ids"][int(off[i]):int(off[i + 1])].tolist()


def token_lists(tokenizer, texts: Sequence[str], *, label: str = "texts") -> TokenLists:
    """Each text's token ids (no special tokens, as `tokenizer(text, add_special_tokens=False)`),
    from the cache when the same texts were tokenised by the same tokenizer before.

    The key is the texts themselves, so whatever produced them (the data file, the template that
    rendered its records, a split or a limit) is part of it without being named. `label` is what
    `tunelab cache list` shows for the entry.
    """
    h = hashlib.sha256()
    for t in texts:  # length-prefixed: ["ab", "c"] and ["a", "bc"] differ
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    inputs = {"texts": h.hexdigest(), "n": len(texts), "tokenizer": tokenizer_sha256(tokenizer),
              "version": ENCODING_VERSION}
    key = "t" + hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:31]

    def fill(tmp: Path) -> dict:
        n_tokens = 0
        with open(tmp / "ids.bin", "wb") as ids, open(tmp / "offsets.bin", "wb") as offsets:
            offsets.write(np.zeros(1, np.int64).tobytes())
            for s in range(0, len(texts), CHUNK):
                encoded = tokenize_many(tokenizer, list(texts[s:s + CHUNK]))
                lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
                ids.write(np.fromiter((t for e in encoded for t in e), dtype=ID_DTYPE, count=int(lengths.sum())).tobytes())
                offsets.write((n_tokens + np.cumsum(lengths)).tobytes())
                n_tokens += int(lengths.sum())
        return {"records": len(texts), "tokens": n_tokens, "inputs": inputs, "spec": label}

    return TokenLists(*_entry(key, fill))


def entries() -> list[tuple[Path, int, dict]]:
    """(folder, size in bytes, meta) of every complete cache entry."""
    out = []
    root = cache_dir()
    for folder in sorted(root.iterdir()) if root.exists() else []:
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads((folder / "meta.json").read_text())
            out.append((folder, sum(f.stat().st_size for f in folder.iterdir()), meta))
    return out


def clear() -> tuple[int, int]:
    """Remove every entry (and leftovers of interrupted writes); returns (entries, bytes) freed."""
    root = cache_dir()
    n = size = 0
    for folder in list(root.iterdir()) if root.exists() else []:
        size += sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if folder.is_dir() else 0
        n += not folder.name.startswith(".")
        shutil.rmtree(folder, ignore_errors=True)
    return n, size
