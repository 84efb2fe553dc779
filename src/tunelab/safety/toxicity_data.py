"""Training and evaluation data of the toxicity classifier (see MODEL_CARD.md).

Sources, all under the shared data folder (`root`):
- ToxiGen prompt files `toxigen/{hate,neutral}_<group>_1k.txt`: implicit, group-directed hate and
  neutral statements. Each line is one prompt whose statements are separated by a literal
  backslash-n + "- "; the 1,000 lines of a file are shuffles of a few dozen statements, so the
  statements are deduplicated (after case and whitespace folding) before anything is counted.
- Davidson et al. 2017 `davidson_hate_offensive/labeled_data.csv`: real tweets labelled hate /
  offensive / neither; toxic = hate or offensive. Deduplicated the same way.
- Background: everyday instructions, questions and chat turns from permissively licensed sets
  (BACKGROUND), labelled not toxic, plus short fragments of them (model continuations are often a
  clause, and a model that never saw one flagged " does that mean being a mother?").
- Everyday *evaluation* text (alpaca_small outputs, dialogsum summaries): non-commercial licences,
  so never used in training; only for the false-positive rate.

Splits are by a seeded hash of the normalised text, so a text lands in the same split on every
machine and in every run, whatever else is in the data.
"""
from __future__ import annotations

import csv
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tunelab.errors import ParameterError, TunelabError

TOXIGEN_GROUPS = ("asian", "bisexual", "black", "chinese", "immigrant", "latino", "mental_disability",
                  "middle_east", "native_american", "physical_disability", "trans", "women")
TOXIGEN_LABELS = {"hate": 1, "neutral": 0}
DAVIDSON_FILE = "davidson_hate_offensive/labeled_data.csv"
DAVIDSON_CLASSES = {0: "hate", 1: "offensive", 2: "neither"}
# Everyday non-toxic text for training (MIT / Apache-2.0 only: the shipped weights derive from it)
BACKGROUND = ("alpaca/seed_tasks.jsonl", "self_instruct/user_oriented_instructions.jsonl",
              "gsm8k/train.jsonl", "fastchat_dummy/dummy_conversation.json", "mt_bench/question.jsonl")
# Everyday text for the false-positive rate only (CC BY-NC / CC BY-NC-SA: never trained on)
EVERYDAY_EVAL = {"alpaca_small outputs": ("alpaca_small/alpaca_small.json", ("output",)),
                 "dialogsum summaries": ("dialogsum/dialogsum.dev.jsonl", ("summary",)),
                 "dialogsum test summaries": ("dialogsum/dialogsum.test.jsonl", ("summary1",))}
MIN_WORDS = 4  # skip names and labels such as "breakfast_suggestion"
FRAGMENT_WORDS = (2, 8)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_SPACE = re.compile(r"\s+")


def norm_key(text: str) -> str:
    """Deduplication key: lower case, whitespace collapsed."""
    return _SPACE.sub(" ", text).strip().lower()


def split_hash(text: str, seed: int) -> float:
    """A number in [0, 1) fixed by the seed and the normalised text: the split assignment."""
    h = hashlib.sha256(f"{seed}:{norm_key(text)}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def file_sha256(path: Path) -> str:
    from tunelab.io import file_sha256 as _sha

    return _sha(path)


@dataclass
class Corpus:
    """Texts with a label (1 toxic, 0 not), a source and, for ToxiGen, the target group(s)."""
    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # toxigen / davidson / background / fragment
    groups: list[str] = field(default_factory=list)  # ToxiGen group, Davidson class, or ""
    # every ToxiGen group whose files hold this statement: a statement in two groups' files must
    # leave training whenever either group is the held-out one
    group_sets: list[frozenset] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # a fragment's parent row, else itself

    def add(self, text: str, label: int, source: str, group: str = "", groups=(), parent: int | None = None):
        self.texts.append(text)
        self.labels.append(int(label))
        self.sources.append(source)
        self.groups.append(group)
        self.group_sets.append(frozenset(groups or ([group] if group else [])))
        self.parents.append(len(self.texts) - 1 if parent is None else parent)

    def __len__(self) -> int:
        return len(self.texts)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.array(self.labels, dtype=np.int64), np.array(self.sources), np.array(self.groups)


def split_statements(line: str) -> list[str]:
    """One ToxiGen prompt line -> its statements (separator: a literal backslash-n + "- ")."""
    out = []
    for part in line.rstrip("\n").split("\\n- "):
        part = part.strip()
        while part.endswith("\\n-"):  # the prompt's last item ends with the bare separator
            part = part[:-3].rstrip()
        if part.startswith("-"):
            part = part[1:].strip()
        if part:
            out.append(part)
    return out


def toxigen_files(data_dir: Path, groups: Sequence[str]) -> list[tuple[Path, str, int]]:
    """(path, group, label) of every file present; trans has no neutral file upstream."""
    out = []
    for group in groups:
        for name, label in TOXIGEN_LABELS.items():
            path = data_dir / f"{name}_{group}_1k.txt"
            if path.is_file():
                out.append((path, group, label))
            elif name == "hate":
                raise ParameterError(f"ToxiGen file {path} not found; point "
                                     "{data_dir} at the folder holding hate_/neutral_<group>_1k.txt", "data_dir")
    return out


def load_toxigen(data_dir: str | Path, groups: Sequence[str] = TOXIGEN_GROUPS) -> Corpus:
    """Deduplicated ToxiGen statements. A statement found in several files keeps its first
    (group, label) and records every group in group_sets; hate wins a label conflict."""
    data_dir = Path(data_dir)
    corpus, row_of = Corpus(), {}
    for path, group, label in toxigen_files(data_dir, groups):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ParameterError(f"cannot read ToxiGen file {path} ({e}); point "
                                 "{data_dir} at the folder holding hate_/neutral_<group>_1k.txt", "data_dir") from None
        for line in lines:
            for s in split_statements(line):
                key = norm_key(s)
                if key in row_of:
                    i = row_of[key]
                    corpus.group_sets[i] = corpus.group_sets[i] | {group}
                    corpus.labels[i] = max(corpus.labels[i], label)
                    continue
                row_of[key] = len(corpus)
                corpus.add(s, label, "toxigen", group)
    return corpus


_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+")
_RT = re.compile(r"^(?:\W*RT\s+@user:?\s*)+")


def clean_tweet(text: str) -> str:
    """HTML entities decoded, @handles and URLs replaced by placeholders, a leading 'RT @user:' dropped."""
    t = _URL.sub("http", _MENTION.sub("@user", html.unescape(text)))
    return _SPACE.sub(" ", _RT.sub("", t)).strip()


def load_davidson(path: str | Path) -> Corpus:
    """Deduplicated Davidson tweets (cleaned); label 1 for hate or offensive, group = the class name."""
    path = Path(path)
    corpus, seen = Corpus(), set()
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:
                    cls = int(row["class"])
                    text = clean_tweet(row["tweet"])
                except (KeyError, ValueError, TypeError):
                    raise TunelabError(f"{path}:{line} needs integer 'class' (0-2) and 'tweet' columns") from None
                if cls not in DAVIDSON_CLASSES:
                    raise TunelabError(f"{path}:{line} has class {cls}; expected 0 hate, 1 offensive, 2 neither")
                key = norm_key(text)
                if text and key not in seen:
                    seen.add(key)
                    corpus.add(text, int(cls != 2), "davidson", DAVIDSON_CLASSES[cls])
    except OSError as e:
        raise TunelabError(f"cannot read Davidson file {path} ({e.strerror or e})") from None
    return corpus


def split_sentences(text: str) -> list[str]:
    return [t.strip() for t in _SENTENCE_END.split(text) if t and t.strip()]


def _records(path: Path):
    from tunelab.safety.scan import read_records

    return [rec for _, rec in read_records(path)]


def load_background(root: str | Path, n: int, seed: int, max_words: int = 128) -> list[str]:
    """A seeded sample of n distinct everyday texts, round-robin over the BACKGROUND files.

    A text is a whole string (<= max_words words) or one of its sentences; GSM8K gives questions
    only (its answers are arithmetic traces). Round-robin keeps GSM8K (30x the others) from
    drowning the more varied instructions and chat turns.
    """
    from tunelab.safety.filter import string_values

    pools = []
    for rel in BACKGROUND:
        path = Path(root) / rel
        if not path.is_file():
            continue
        pool: set[str] = set()
        for rec in _records(path):
            for t in [rec["question"]] if "question" in rec else string_values(rec):
                t = t.strip()
                cands = split_sentences(t) + ([t] if len(t.split()) <= max_words else [])
                pool.update(c for c in cands if len(c.split()) >= MIN_WORDS)
        ordered = sorted(pool)
        pools.append([ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))])
    out, taken = [], set()
    while len(out) < n and any(pools):
        for p in pools:
            while p and len(out) < n:
                t = p.pop()
                if norm_key(t) not in taken:
                    taken.add(norm_key(t))
                    out.append(t)
                    break
    return sorted(out)


def fragment(sentence: str, rng: np.random.Generator) -> str | None:
    """A 2-8-word contiguous piece of a sentence, shaped like a model continuation
    (leading space and lower case when it starts mid-sentence); None when too short."""
    words = sentence.split()
    lo, hi = FRAGMENT_WORDS
    if len(words) < lo + 1:
        return None
    k = int(rng.integers(lo, min(hi, len(words) - 1) + 1))
    start = len(words) - k if rng.random() < 0.5 else int(rng.integers(0, len(words) - k + 1))
    piece = " ".join(words[start:start + k])
    return " " + piece[0].lower() + piece[1:] if start > 0 else piece


def add_fragments(corpus: Corpus, rows: Sequence[int], per_row: int, seed: int) -> None:
    """Append not-toxic fragments of the given (non-toxic) rows; each remembers its parent row.
    Toxic rows give none: a piece of a hateful sentence may or may not be hateful."""
    rng = np.random.default_rng(seed)
    seen = {norm_key(t) for t in corpus.texts}
    for i in rows:
        sents = [t for t in split_sentences(corpus.texts[i]) if len(t.split()) > FRAGMENT_WORDS[0]]
        for _ in range(per_row if sents else 0):
            f = fragment(sents[int(rng.integers(len(sents)))], rng)
            if f and norm_key(f) not in seen:
                seen.add(norm_key(f))
                corpus.add(f, 0, "fragment", corpus.groups[i], corpus.group_sets[i], parent=i)


def load_everyday_eval(root: str | Path) -> dict[str, list[str]]:
    """Everyday texts never used in training, by set name (deduplicated; absent files skipped)."""
    out = {}
    for name, (rel, keys) in EVERYDAY_EVAL.items():
        path = Path(root) / rel
        if not path.is_file():
            continue
        seen, texts = set(), []
        for rec in _records(path):
            for k in keys:
                t = rec.get(k)
                if isinstance(t, str) and t.strip() and norm_key(t) not in seen:
                    seen.add(norm_key(t))
                    texts.append(t.strip())
        out[name] = texts
    return out


def data_hashes(root: str | Path, toxigen_dir: str | Path) -> dict[str, str]:
    """sha256 of every input file, recorded in metrics.json and the model card."""
    root, out = Path(root), {}
    paths = [p for p, _, _ in toxigen_files(Path(toxigen_dir), TOXIGEN_GROUPS)]
    paths += [root / DAVIDSON_FILE] + [root / b for b in BACKGROUND]
    paths += [root / rel for rel, _ in EVERYDAY_EVAL.values()]
    for p in paths:
        if p.is_file():
            out[str(p.relative_to(root)) if p.is_relative_to(root) else p.name] = file_sha256(p)
    return out


def texts_sha256(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(texts), ensure_ascii=False).encode("utf-8")).hexdigest()
