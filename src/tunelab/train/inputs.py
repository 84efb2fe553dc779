"""What a run trains on: the encoded examples (or preference pairs), split, screened and mixed.

The run's objective (objectives/) calls `load_examples` or `load_pairs` once, in setup, and from
then on the recipe sees two sequences of encoded rows, train and eval. Everything about where they come from lives here:
the encoded-data cache (templates/cache.py), the seeded hold-out of data.eval's fraction, the
toxicity screen (data/screen.py) and replay records (replay.py).
"""
from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from tunelab.config import TrainConfig

Say = Callable[[str], None]
Scorer = Callable[[list[str]], Sequence[float]]
SKIP_SETTING = "data.skip_bad=true"
_SKIPPED = re.compile(r": skipped (\d+) ")  # the count in data/readers.py's note


@dataclass
class DataSource:
    """Where a run's rows come from, and what it has to say about them."""

    cfg: TrainConfig
    tokenizer: object
    base_dir: str | Path | None
    say: Say
    toxicity: Optional[Scorer] = None
    skipped: list[str] = field(default_factory=list)  # one note per file: its count and first bad line

    def note_skips(self, notes: list[str], *, said: bool = False) -> None:
        """Keep each note on skipped records (count and first line) for summary.json, and say it
        unless the data layer `said` it already (a cache entry written just now)."""
        for note in notes:
            if _SKIPPED.search(note) and note not in self.skipped:
                self.skipped.append(note)
                if not said:
                    self.say(note)


def skipped_summary(notes: list[str]) -> Optional[dict]:
    """summary.json's `skipped`: the total count of skipped records and the notes naming the first of each file."""
    if not notes:
        return None
    return {"count": sum(int(m.group(1)) for n in notes if (m := _SKIPPED.search(n))), "notes": list(notes)}


def data_path(spec: str, base_dir: str | Path | None, key: str | None = None) -> str:
    """A relative data path is looked up next to the config file first, then in the cwd; in
    neither, the error names both places (and the config `key` when given)."""
    from tunelab.data.readers import not_found

    p = Path(spec)
    if spec.startswith("builtin:") or p.is_absolute() or base_dir is None:
        return spec
    beside = Path(base_dir) / p
    if beside.exists() or p.exists():
        return str(beside) if beside.exists() else spec
    raise not_found(spec, [beside, Path.cwd() / p], f"relative paths in a train config are looked up in its "
                    f"folder, {base_dir}, then in the current folder", key)


def hold_out(candidates: list[int], fraction, seed: int) -> tuple[list[int], list[int]]:
    """(train, eval) indices: a seeded hold-out of data.eval's fraction, the same on every process and resume."""
    if not (isinstance(fraction, float) and fraction and len(candidates) > 1):
        return candidates, []
    order = list(range(len(candidates)))
    random.Random(seed).shuffle(order)
    held = set(order[:max(1, round(fraction * len(candidates)))])
    return ([c for i, c in enumerate(candidates) if i not in held],
            [c for i, c in enumerate(candidates) if i in held])


def load_examples(src: DataSource):
    """(train, eval) encoded examples, memory-mapped from the encoded-data cache (tokenised once per
    data file, tokenizer, template and data settings). Skipped records are noted whether the entry
    was just written or found in the cache (its meta.json keeps the notes)."""
    from tunelab.templates.cache import prepare

    cfg, tokenizer, base_dir, say, toxicity = src.cfg, src.tokenizer, src.base_dir, src.say, src.toxicity
    d = cfg.data
    kw = dict(format=d.format, fields=d.fields or None, skip_bad=d.skip_bad, system=d.system,
              skip_setting=SKIP_SETTING, train_on=d.train_on, max_length=d.max_length, truncate=d.truncate)
    log = logging.getLogger("tunelab.templates")
    full = prepare(data_path(d.train, base_dir, "data.train"), tokenizer, **kw)
    say(f"encoded data {'from the cache' if full.hit else 'cached'}: {full.folder}")
    src.note_skips(full.meta.get("notes", []), said=not full.hit)
    candidates = list(range(len(full)))
    if d.max_toxicity is not None:  # screened in the data stage, on the records' text
        from tunelab.data.load import load_conversations
        from tunelab.data.screen import drop_above

        convs = load_conversations(data_path(d.train, base_dir), format=d.format, fields=d.fields or None,
                                   skip_bad=d.skip_bad, system=d.system, skip_setting=SKIP_SETTING)
        kept, note = drop_above(convs, toxicity, d.max_toxicity)
        if note:
            say(note)
        keep = {id(c) for c in kept}
        candidates = [i for i, c in enumerate(convs) if id(c) in keep]
    train_idx, eval_idx, eval_ex = candidates, [], []
    if isinstance(d.eval, str):
        held = prepare(data_path(d.eval, base_dir), tokenizer, **kw)
        src.note_skips(held.meta.get("notes", []), said=not held.hit)
        eval_ex = held.trainable(log=log)
    else:
        train_idx, eval_idx = hold_out(candidates, d.eval, cfg.train.seed)
    train_ex = full.select(train_idx).trainable(log=log)
    if eval_idx:
        eval_ex = full.select(eval_idx).trainable(log=log)
    if cfg.replay is not None:  # after the hold-out: the eval loss stays the task's own
        train_ex = mix_replay(src, train_ex, kw)
    return train_ex, eval_ex


def mix_replay(src: DataSource, train_ex, kw: dict):
    """The task rows followed by replay records (replay.py: the ratio counts examples)."""
    from tunelab.templates.cache import prepare
    from tunelab.train.replay import Mixed, draw, replay_count

    cfg, say, r = src.cfg, src.say, src.cfg.replay
    pool = prepare(data_path(r.data, src.base_dir), src.tokenizer, **{**kw, "format": r.format, "fields": None})
    src.note_skips(pool.meta.get("notes", []), said=not pool.hit)
    pool = pool.trainable(log=logging.getLogger("tunelab.templates"))
    k = replay_count(len(train_ex), r.ratio)
    mixed = Mixed(train_ex, pool.select(draw(len(pool), k, cfg.train.seed)))
    token_share = float(mixed.replay.lengths.sum()) / max(float(mixed.lengths.sum()), 1.0)
    say(f"replay: {k} of {len(pool)} records of {r.data} mixed into {len(train_ex)} task rows "
        f"({k / len(mixed):.0%} of the examples, {token_share:.0%} of the tokens)")
    return mixed


def load_pairs(src: DataSource):
    """(train, eval) preference pairs, encoded (templates/preference.py); skipped pairs are noted."""
    from tunelab.data.preference import iter_pairs
    from tunelab.templates.preference import encode_pairs

    cfg, d = src.cfg, src.cfg.data

    def encoded(spec: str):
        notes: list[str] = []
        pairs = iter_pairs(data_path(spec, src.base_dir), fields=d.fields or None, skip_bad=d.skip_bad,
                           system=d.system, what=f"method: {cfg.method}", skip_setting=SKIP_SETTING, report=notes)
        out = encode_pairs(src.tokenizer, pairs, max_length=d.max_length)
        src.note_skips(notes)  # after the encoding: the read has reached the file's end
        return out

    pairs = encoded(d.train)
    if isinstance(d.eval, str):
        return pairs, encoded(d.eval)
    train_idx, eval_idx = hold_out(list(range(len(pairs))), d.eval, cfg.train.seed)
    return [pairs[i] for i in train_idx], [pairs[i] for i in eval_idx]


def lengths(examples) -> list[int]:
    """Token count per example: read from the cache's offsets, or from a plain list of Encoded."""
    found = getattr(examples, "lengths", None)
    if found is not None:
        return found.tolist()
    return [e.length if hasattr(e, "length") else len(e.input_ids) for e in examples]  # pairs: preference.py
