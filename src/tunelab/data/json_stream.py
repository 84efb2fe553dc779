"""The records of a JSON array file, decoded one at a time from chunks of the file.

Why by hand rather than ijson (a well-kept streaming parser, not a dependency of ours): each
record here is decoded by the standard library's own C decoder (`json.JSONDecoder.raw_decode`),
so a record comes out exactly as `json.loads` gives it (floats, not ijson's Decimals; the same
duplicate-key and NaN rules), and an error can name the file's line and column the way the
JSON Lines reader does, which ijson's byte offsets do not. What is written here is only the
array's punctuation between records and the bookkeeping of line numbers across chunks.

Memory holds one chunk (CHUNK characters) plus the record being decoded, however long the file.
"""
from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any, Iterator

from tunelab.errors import TunelabError

CHUNK = 1 << 20  # characters decoded per read: large enough that few records straddle two reads
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# how near the end of the text a decode error must be to mean "cut off, read on": a cut literal
# (`fals`), number (`1.`) or escape (`\u00`) fails a few characters before the end
_CUT_MARGIN = 8


class JsonChunks:
    """A JSON text read in chunks: skip whitespace, peek a character, decode one value."""

    def __init__(self, path: Path, f):
        self.path, self.f = path, f
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()  # a BOM is dropped, as json.loads does
        self.buf, self.pos = "", 0
        self.line, self.col = 1, 1  # of buf[0] in the file
        self.raw_lines = 0  # newlines in the bytes already decoded, for an invalid-UTF-8 error
        self.eof = False

    def _more(self, at_least: int = 0) -> bool:
        """Drop what is consumed, append the next chunk (at least `at_least` characters more
        when there are); False at the end of the file."""
        if self.eof:
            return False
        done = self.buf[: self.pos]
        nl = done.rfind("\n")
        self.line += done.count("\n")
        self.col = len(done) - nl if nl >= 0 else self.col + len(done)
        self.buf, self.pos = self.buf[self.pos :], 0
        want = max(CHUNK, at_least)
        while want > 0 and not self.eof:
            raw = self.f.read(want)
            try:
                text = self.decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                line = self.raw_lines + e.object[: e.start].count(b"\n") + 1
                raise TunelabError(f"{self.path}:{line}: not valid UTF-8 (byte 0x{e.object[e.start]:02x}); "
                                   "save the file as UTF-8") from None
            self.raw_lines += raw.count(b"\n")
            self.eof = not raw
            self.buf += text
            want -= len(text)
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the end of the file)."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos : self.pos + 1]

    def take(self, expected: str, what: str) -> None:
        found = self.peek()
        if found != expected:
            raise self.error(f"expected {what}{'' if found else ', found the end of the file'}", self.pos)
        self.pos += 1

    def value(self) -> Any:
        """Decode the next JSON value, reading more of the file while it is cut off."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                cut = e.pos >= len(self.buf) - _CUT_MARGIN or e.msg.startswith("Unterminated string")
                # (an unterminated string is a real error only at the end of the file: it reads on)
                if cut and self._more(at_least=len(self.buf)):  # doubling: a long record costs O(its size)
                    continue
                raise self.error(e.msg, e.pos) from None
            if end == len(self.buf) and self._more():  # a number may go on in the next chunk
                continue
            self.pos = end
            return value

    def error(self, msg: str, pos: int) -> TunelabError:
        before = self.buf[:pos]
        nl = before.rfind("\n")
        line = self.line + before.count("\n")
        col = pos - nl if nl >= 0 else self.col + pos
        msg = msg.removesuffix(" at")  # json says "Invalid control character at", then the place
        return TunelabError(f"{self.path}:{line}: not valid JSON ({msg} at column {col}); fix the file")


def iter_array(path: Path, f) -> Iterator[tuple[int, Any]]:
    """(record number from 1, value) of each element of the array that the file `f` holds."""
    s = JsonChunks(path, f)
    s.take("[", "'[' to open the array of records")
    i = 0
    if s.peek() == "]":
        s.pos += 1
    else:
        while True:
            i += 1
            yield i, s.value()
            if s.peek() == "]":
                s.pos += 1
                break
            s.take(",", f"',' or ']' after record {i}")
    if s.peek():
        raise s.error("extra data after the array", s.pos)
