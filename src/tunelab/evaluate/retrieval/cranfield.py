"""Reader for the classic Cranfield collection in SMART format (../shared/data/cranfield).

- cran.all.1400: records start with `.I n`; fields `.T` title, `.A` authors, `.B` source,
  `.W` abstract. A document's text is its title and abstract joined by a newline (the .W field
  repeats the title in most records; that is the collection as published).
- cran.qry: 225 queries with `.I` ids 001, 002, 004, ... that are NOT the ids used in cranqrel:
  the qrels number the queries 1..225 in file order, so query ids here are positions ("1".."225").
- cranqrel: `qid docid code` (some lines carry a trailing space or CR). Cleverdon's codes run
  1 (complete answer) .. 4 (minimum interest), and -1 marks "of no interest". LOWER IS MORE
  RELEVANT, so with grades="cleverdon" (default) tunelab maps code c in 1..4 to gain 5 - c
  (1 -> 4 ... 4 -> 1) and -1 to 0 (judged, not relevant). Every code 1..4 is thus relevant for
  binary measures (MAP, P@k, recall, MRR, bpref), which is the usual practice. grades="raw"
  keeps the codes as written (ir_datasets does this; it reads 4 as the most relevant), which
  changes only graded measures (ndcg*); -1 then means "unjudged" to trec_eval.
"""
from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError, where

DOCS_FILE, QUERIES_FILE, QRELS_FILE = "cran.all.1400", "cran.qry", "cranqrel"


def _records(path: Path) -> list[tuple[int, str, dict[str, str]]]:
    """SMART records as (line of .I, id, {field letter: text})."""
    if not path.is_file():
        raise TunelabError(f"{path}: file not found (the Cranfield folder needs {DOCS_FILE}, {QUERIES_FILE}, {QRELS_FILE})")
    records: list[tuple[int, str, dict[str, str]]] = []
    current: str | None = None
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if line.startswith(".I"):
            parts = line.split()
            if len(parts) != 2:
                raise TunelabError(f"{where(path, lineno)}: expected '.I <id>', got {line!r}")
            records.append((lineno, parts[1], {}))
            current = None
        elif len(line) >= 2 and line[0] == "." and line[1] in "TABW" and line[2:].strip() == "":
            if not records:
                raise TunelabError(f"{where(path, lineno)}: field {line.strip()} before the first .I")
            current = line[1]
            records[-1][2].setdefault(current, "")
        elif current is not None:
            fields = records[-1][2]
            fields[current] = (fields[current] + "\n" + line) if fields[current] else line
    return records


def read_docs(path: str | Path) -> dict[str, str]:
    """{docid: title + "\\n" + abstract} for cran.all.1400."""
    docs = {}
    for _, docid, f in _records(Path(path)):
        docs[docid] = "\n".join(t.strip() for t in (f.get("T", ""), f.get("W", "")) if t.strip())
    return docs


def read_queries(path: str | Path) -> dict[str, str]:
    """{"1".."225": query text}, numbered by position (the qrels' numbering)."""
    return {str(i): " ".join(f.get("W", "").split()) for i, (_, _, f) in enumerate(_records(Path(path)), start=1)}


def read_qrels(path: str | Path, grades: str = "cleverdon") -> dict[str, dict[str, int]]:
    """{qid: {docid: gain}}; see the module docstring for the grade mapping."""
    if grades not in ("cleverdon", "raw"):
        raise TunelabError(f"cranfield grades must be 'cleverdon' or 'raw', got {grades!r}")
    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"{path}: file not found")
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise TunelabError(f"{where(path, lineno)}: expected 'qid docid code', got {line.strip()!r}")
        try:
            code = int(parts[2])
        except ValueError:
            raise TunelabError(f"{where(path, lineno, 'code')}: expected an integer, got {parts[2]!r}") from None
        if code not in (-1, 1, 2, 3, 4):
            raise TunelabError(f"{where(path, lineno, 'code')}: Cranfield codes are 1..4 or -1, got {code}")
        gain = code if grades == "raw" else (0 if code == -1 else 5 - code)
        qrels.setdefault(parts[0], {})[parts[1]] = gain
    return qrels


def load_cranfield(folder: str | Path, grades: str = "cleverdon"):
    """(docs, queries, qrels) from a folder holding the three SMART files."""
    folder = Path(folder)
    return (read_docs(folder / DOCS_FILE), read_queries(folder / QUERIES_FILE),
            read_qrels(folder / QRELS_FILE, grades))
