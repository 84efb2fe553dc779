"""`type: multi_turn`: conversations; the model answers every user turn with its own earlier answers in view.

A record holds a list of user turns (`turns: FIELD`, MT-Bench's question.jsonl shape). Turn 1 is
answered alone; turn t is rendered with the chat template over [user 1, its answer 1, ..., user t],
so a later answer rests on what this model said before, never on a reference. All records' turn t
go through the backend as one batch, then turn t+1. Every turn is one item (one line of
predictions.jsonl, id `<record id>:<turn>`), so every metric scores every turn, and results.json
gives each metric per turn (`by_turn`) beside its value over all turns.

Reference answers, one per turn (`references:`), come from a field of the record itself or from a
second file joined on a key (MT-Bench's reference_answer_gpt-4.jsonl, `key: question_id`); a
record or turn without one has none, and a reference-guided judge grades it without.
"""
from __future__ import annotations

import hashlib
from typing import Any, Optional

from tunelab.errors import TunelabError
from tunelab.evaluate.cache import cached_call
from tunelab.evaluate.prompts import Rendered, TaskTemplates
from tunelab.evaluate.task_types.base import BREAKDOWN_PREFIX, Job, Ran, TaskType, task_source
from tunelab.evaluate.task_types.generate import Generate
from tunelab.evaluate.task_types.registry import register_task_type

NOT_USED = ("choices", "answer", "text")  # keys of other task types that a conversation has no use for
_JOINED: dict[tuple, dict[str, tuple[list, str]]] = {}  # references files read once per process


def turns_of(task, row) -> list[str]:
    """The record's user turns; anything but a non-empty list of non-empty strings is refused, naming file:line."""
    value = row.data.get(task.turns)
    if isinstance(value, list) and value and all(isinstance(t, str) and t.strip() for t in value):
        return value
    got = "no such field" if task.turns not in row.data else f"{type(value).__name__} {str(value)[:60]!r}"
    raise TunelabError(f"{row.source}: field '{task.turns}' must be a non-empty list of user turns (strings), got "
                       f"{got}; fix the record, or `turns:` in {task_source(task)}")


def _dig(value: Any, path: str) -> Any:
    """value[a][b][0]... for the dotted path `a.b.0`; KeyError(part) where it leads nowhere."""
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(part)
    return value


def _answers(value: Any, where: str, field: str) -> list[Optional[str]]:
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TunelabError(f"{where}: references.field '{field}' must give the reference answers, a list of strings "
                           f"(one per turn), got {type(value).__name__} {str(value)[:60]!r}; fix references.field")
    return [v if v.strip() else None for v in value]


def joined_references(task) -> Optional[dict[str, tuple[list, str]]]:
    """{key value: (per-turn answers, file:line)} of references.path, every key checked against the data
    file's records; None when the references are the records' own field (or there are none)."""
    from tunelab.data.load import load_rows

    ref, src = task.references, task_source(task)
    if ref is None or ref.path is None:
        return None
    paths = [task.resolve(ref.path), task.resolve(task.data)]
    stamp = (*(str(p) for p in paths), *((p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else 0 for p in paths),
             ref.key, ref.field)  # a file changed since is read again
    if stamp in _JOINED:
        return _JOINED[stamp]
    out: dict[str, tuple[list, str]] = {}
    for row in load_rows(ref.path, base_dir=task.base_dir, named_in=task.source):
        if ref.key not in row.data:
            raise TunelabError(f"{row.source}: this reference record lacks '{ref.key}' (references.key in {src}); "
                               f"its fields are: {', '.join(sorted(map(str, row.data)))}")
        try:
            answers = _answers(_dig(row.data, ref.field), row.source, ref.field)
        except KeyError as e:
            raise TunelabError(f"{row.source}: references.field '{ref.field}' finds no '{e.args[0]}' in this record; "
                               f"fix references.field in {src}") from None
        k = str(row.data[ref.key])
        if k in out:
            raise TunelabError(f"{row.source}: a second reference for {ref.key} {k} (the first: {out[k][1]}); keep one")
        out[k] = (answers, row.source)
    data_keys = {str(r.data[ref.key]) for r in load_rows(task.data, base_dir=task.base_dir, named_in=task.source,
                                                         skip_bad=task.skip_bad) if ref.key in r.data}
    stray = [(k, where) for k, (_, where) in out.items() if k not in data_keys]
    if stray:
        raise TunelabError(f"{stray[0][1]}: reference {ref.key} {stray[0][0]} matches no record of {task.data} "
                           f"({len(stray)} of {len(out)} references match none); check references.key and "
                           f"references.path in {src}")
    _JOINED[stamp] = out
    return out


def references_of(task, row, turns: list[str]) -> list[Optional[str]]:
    """One reference answer (or None) per turn of the record."""
    ref = task.references
    if ref is None:
        return [None] * len(turns)
    joined = joined_references(task)
    if joined is None:  # the record's own field; a record without it has no references
        try:
            found = _answers(_dig(row.data, ref.field), row.source, ref.field)
        except KeyError:
            found = []
    else:
        if ref.key not in row.data:
            raise TunelabError(f"{row.source}: the record lacks '{ref.key}', the field its references are found by "
                               f"(references.key in {task_source(task)})")
        found = joined.get(str(row.data[ref.key]), ([], ""))[0]
    if len(found) > len(turns):
        raise TunelabError(f"{row.source}: {len(found)} reference answers for {len(turns)} turns; one per turn at most "
                           f"(references in {task_source(task)})")
    return found + [None] * (len(turns) - len(found))


def messages(task, turns: list[str], answers: list[str], t: int) -> list[dict]:
    """The conversation the model answers turn t (0-based) in: the earlier turns with its own answers."""
    out = [{"role": "system", "content": task.system}] if task.system else []
    for user, answer in zip(turns[:t], answers[:t]):
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return out + [{"role": "user", "content": turns[t]}]


def context(tokenizer, msgs: list[dict]):
    from tunelab.fewshot.context import Context, render_chat, transcript

    if tokenizer is None:  # an endpoint applies its own template to the messages
        return Context(transcript(msgs), [], msgs)
    return Context(render_chat(tokenizer, msgs), [], msgs)


def turn_seed(seed: int, line: int, turn: int) -> int:
    """The sampling seed of one turn of one record, the same on every run and every shard."""
    return int(hashlib.sha256(f"{seed}:{line}:{turn}".encode("utf-8")).hexdigest()[:8], 16)


class TurnTemplates(TaskTemplates):
    """A conversation's "prompt" is its first turn and its gold the first turn's reference (what code that
    renders any task's rows sees, e.g. a compare's checks); the type itself reads turns() and references()."""

    def turns(self, row) -> list[str]:
        return turns_of(self.task, row)

    def references(self, row) -> list[Optional[str]]:
        return references_of(self.task, row, self.turns(row))

    def prompt(self, row) -> str:
        return self.turns(row)[0]

    def render(self, row) -> Rendered:
        first = self.references(row)[0]
        return Rendered(self.prompt(row), None, [] if first is None else [first])

    def answer_text(self, row) -> str:
        return self.references(row)[0] or ""


@register_task_type("multi_turn")
class MultiTurn(TaskType):
    description = ("conversations: the model answers each user turn with its own earlier answers in context "
                   "(`turns:`; MT-Bench); every turn is scored, results per turn")
    default_batch = 8
    response_metrics = True
    conversation = True
    why_no_demonstrations = ("its items are conversations whose earlier answers are the model's own, so there is "
                             "no place for demonstrations in them")
    prediction_keys = {"turn": "which user turn of the record this line answers (1, 2, ...); its prompt holds "
                               "the earlier turns with the model's own answers",
                       **{k: v for k, v in Generate.prediction_keys.items() if k in ("output", "gold", "finish")}}

    def check(self, task, source: str) -> None:
        from tunelab.config import TaskConfig

        if not task.turns:
            raise TunelabError(f"{source}: a multi_turn task needs `turns:`, the record field that holds the list "
                               "of user turns (e.g. turns: turns for MT-Bench's question.jsonl)")
        used = [k for k in NOT_USED if getattr(task, k)]
        if task.prompt != TaskConfig.model_fields["prompt"].default:
            used.insert(0, "prompt")
        if used:
            raise TunelabError(f"{source}: a multi_turn task takes its prompts from `turns:` and its reference "
                               f"answers from `references:`; remove '{used[0]}'")
        if "chat" in task.model_fields_set and not task.chat:
            raise TunelabError(f"{source}: a multi_turn task is a conversation, always in the model's chat "
                               "template; remove chat: false")
        if task.fewshot.k > 0:
            raise TunelabError(f"{source}: fewshot.k is {task.fewshot.k}, and a multi_turn task takes none: "
                               f"{self.why_no_demonstrations}; set fewshot.k: 0")
        if task.references is not None and task.references.path and not task.references.key:
            raise TunelabError(f"{source}: references.path needs references.key, the field the data and the "
                               "references share (e.g. key: question_id)")

    def needs(self, task) -> frozenset[str]:
        return frozenset({"generation", "conversation"})

    def templates(self, task, source: str):
        return TurnTemplates(task, source)

    def units(self, task, rows: list) -> int:
        return sum(len(turns_of(task, r)) for r in rows)

    def run(self, job: Job) -> Ran:
        task, g = job.task, job.task.generation
        if job.builder.k > 0:  # --shots given on the command line, after the task file was checked
            raise TunelabError(f"{task_source(task)}: {job.builder.k}-shot asked, and a multi_turn task takes no "
                               f"demonstrations: {self.why_no_demonstrations}; leave --shots out")
        convs = [(job.templates.turns(r), job.templates.references(r)) for r in job.rows]
        answers: list[list[str]] = [[] for _ in job.rows]
        per_row: list[list[dict]] = [[] for _ in job.rows]
        settings = {"max_new_tokens": g.max_new_tokens, "stop": list(g.stop), "temperature": g.temperature,
                    "top_p": g.top_p}
        tokens = [0, 0]
        for t in range(max((len(c[0]) for c in convs), default=0)):  # turn t of every record, then t + 1
            live = [i for i, c in enumerate(convs) if len(c[0]) > t]
            contexts = [context(job.backend.tokenizer, messages(task, convs[i][0], answers[i], t)) for i in live]
            seeds = [turn_seed(g.seed, job.rows[i].line, t) if g.temperature > 0 else None for i in live]
            by_text = {c.text: c for c in contexts}  # the cache keys on the text; an endpoint wants the messages

            def compute(todo, by_text=by_text):  # called at once, inside this turn
                return job.backend.generate([by_text[x[0]] for x in todo], [x[2] for x in todo],
                                            batch_size=job.batch_size, on_batch=job.progress, **settings)

            outs = cached_call(job.cache, "generate", [[c.text, settings, s] for c, s in zip(contexts, seeds)], compute)
            for i, c, o in zip(live, contexts, outs):
                per_row[i].append(self._item(job, i, convs[i], answers[i], t, c, o))
                answers[i].append(o["text"])
                tokens[0], tokens[1] = tokens[0] + o["prompt_tokens"], tokens[1] + o["new_tokens"]
        kept = [i for i, its in enumerate(per_row) for _ in its]
        return Ran([it for its in per_row for it in its], tokens[0], tokens[1], kept=kept)

    @staticmethod
    def _item(job: Job, i: int, conv: tuple, answers: list[str], t: int, ctx, out: dict) -> dict:
        turns, refs = conv
        ref, key = refs[t], job.task.references.key if job.task.references else None
        history = [{"user": u, "assistant": a, "reference": r} for u, a, r in zip(turns[:t], answers[:t], refs[:t])]
        record = job.rows[i].data.get(key) if key else None  # e.g. MT-Bench's question_id names the item
        return {"prompt": ctx.text, "output": out["text"], "gold": [] if ref is None else [ref],
                "finish": out["finish"], "new_tokens": out["new_tokens"], "latency_s": out["latency_s"],
                "question": turns[t], "turn": t + 1, "history": history,
                "record": None if record is None else str(record)}

    def item_id(self, record_id: str, item: dict) -> str:
        return f"{item.get('record') or record_id}:{item['turn']}"

    def breakdown(self, items: list[dict]) -> Optional[tuple[str, dict[str, list[int]]]]:
        parts: dict[str, list[int]] = {}
        for j, it in enumerate(items):
            parts.setdefault(str(it["turn"]), []).append(j)
        return BREAKDOWN_PREFIX + "turn", dict(sorted(parts.items(), key=lambda kv: int(kv[0])))

    def references(self, items: list[dict]) -> list:
        return [it.get("gold", []) for it in items]

    def prediction_fields(self, item: dict) -> dict:
        return {"turn": item["turn"], "output": item["output"], "gold": item["gold"], "finish": item["finish"]}

    # ---------------------------------------------------------------- the compare
    def record_format(self, task) -> str:
        return "messages"

    def training_record(self, task, templates, row) -> dict:
        """The whole conversation with the reference answers as the assistant's turns (every turn needs one)."""
        turns = turns_of(task, row)
        refs = references_of(task, row, turns)
        if None in refs:
            raise TunelabError(f"{row.source}: turn {refs.index(None) + 1} has no reference answer, and a fine-tune "
                               f"learns every turn's answer; give every pool record its references "
                               f"(references: in {task_source(task)}), or compare without fine-tuned arms")
        msgs = [{"role": "system", "content": task.system}] if task.system else []
        for user, answer in zip(turns, refs):
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return {"id": str(row.data.get("id", row.line)), "messages": msgs}

    def test_prompt(self, tokenizer, task, templates, row) -> str:
        return context(tokenizer, messages(task, turns_of(task, row), [], 0)).text

    def estimate_tokens(self, task, count, row, templates, builder) -> tuple[int, int]:
        # each turn reads the conversation so far (earlier answers estimated as generated) and writes an answer
        # as long as its reference plus a stop token, else max_new_tokens
        turns = turns_of(task, row)
        refs = references_of(task, row, turns)
        max_new, prompt, written = task.generation.max_new_tokens, 0, []
        for t, ref in enumerate(refs):
            text = context(builder.tokenizer, messages(task, turns, [""] * t, t)).text
            prompt += count(text) + sum(written)
            written.append(min(max_new, count(ref) + 1) if ref is not None else max_new)
        return prompt, sum(written)


__all__ = ["MultiTurn", "TurnTemplates", "turns_of", "references_of", "joined_references", "messages"]
