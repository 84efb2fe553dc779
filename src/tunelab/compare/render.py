"""One task file renders every arm: the fine-tuned arms' training records come from the task's templates.

Few-shot demonstrations are `prompt` + `answer` of pool records, rendered by the task's templates;
test prompts are the same `prompt` template. A fine-tuned arm trains on the same rendering, so it
learns from exactly the text it is tested on. The task's type decides how (its `record_format`,
`training_record` and `test_prompt`, evaluate/task_types/); the built-in types:

| task                          | a pool record becomes (data format)                                  |
|-------------------------------|----------------------------------------------------------------------|
| chat: true                    | messages: [system?, user: prompt, assistant: answer]  (`messages`)   |
| chat: false (generate, MC)    | prompt, completion = target_delimiter + answer         (`plain`)     |
| perplexity                    | the document's text                                    (`text`)      |
| preference                    | the pair as it is (its `pool_format`)                  (`chosen`)    |

`answer` is the gold choice's text (multiple choice) or the first reference (generate), as a
demonstration shows it. A pool the task's templates cannot render (it lacks a field they use) is
still used when it is in a training format of its own (prompt/completion, messages, ...): the arms
then train on it through format detection, and the plan says so, because the training prompt may
differ from the test prompt. Few-shot arms cannot do without the task's rendering: for them such a
pool is an error, before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tunelab.errors import TunelabError
from tunelab.evaluate.task_types import task_type

TASK = "task"  # rendered through the task's templates
OWN = "own"  # the pool's own training format (format detection)


@dataclass
class Rendering:
    mode: str  # TASK | OWN
    format: str  # the data format of the subset files: messages | plain | text, or the detected one
    note: str  # one line for the plan and compare.json


def _templates(task, source: str):
    return task_type(task).templates(task, source)


def task_format(task) -> str:
    return task_type(task).record_format(task)


def training_record(task, templates, row) -> dict:
    """One pool row as the fine-tune's training record (in task_format(task)), keeping its id."""
    return task_type(task).training_record(task, templates, row)


def choose(task, pool: list, source: str, pool_name: str, *, few_shot: bool, fine_tune: bool,
           forced_format: Optional[str] = None) -> Rendering:
    """How the pool is rendered for this compare; errors here are the ones the real run would meet.

    Every pool record is rendered through the task's templates (Jinja only, no model): a record
    they cannot render fails few-shot arms with its file and line, and sends fine-tuned arms to
    the pool's own training format when it has one. `forced_format` is a data.format the user
    set in the compare's train: keys (the pool as is, in that format).
    """
    own = task_type(task).pool_format
    if own:  # the pool is pairs: the arms read them as they are
        return Rendering(OWN, own, f"dpo / orpo arms train on {pool_name}'s pairs; other fine-tuned arms on "
                                   f"their prompts and chosen answers (data.format: {own})")
    if forced_format and forced_format != "auto":
        if few_shot:
            _render_all(task, pool, source)
        return Rendering(OWN, forced_format, f"fine-tuned arms train on {pool_name} as {forced_format} records "
                                             "(train.data.format is set), not through the task's templates")
    if not few_shot and not fine_tune:  # zero-shot and endpoint arms only: nothing renders the pool
        return Rendering(TASK, task_format(task), f"no arm draws on {pool_name}")
    try:
        _render_all(task, pool, source)
        return Rendering(TASK, task_format(task), f"fine-tuned arms train on the pool rendered by the task's "
                                                  f"templates ({task_format(task)} records), as the test prompts are")
    except TunelabError as e:
        if few_shot or not fine_tune:
            raise TunelabError(f"{source}: train_data: {e} (demonstrations are rendered by the task's templates)") from None
        from tunelab.data.formats import detect_format

        try:
            fmt, _ = detect_format(pool[0])
        except TunelabError:
            raise TunelabError(f"{source}: train_data: {e}; the pool is in no training format either, so the "
                               "fine-tuned arms cannot read it: give the pool the task's fields") from None
        return Rendering(OWN, fmt, f"fine-tuned arms train on {pool_name} as {fmt} records (the task's templates "
                                   f"cannot render it: {e}); their training prompt may differ from the test prompt")


def _render_all(task, pool: list, source: str) -> None:
    templates = _templates(task, source)
    for row in pool:
        training_record(task, templates, row)


def subset_records(task, source: str, rows: list, rendering: Rendering) -> list[dict]:
    """The subset file's records: rendered by the task, or the pool's rows as they are."""
    if rendering.mode == OWN:
        return [r.data for r in rows]
    templates = _templates(task, source)
    return [training_record(task, templates, r) for r in rows]


def first_example(tokenizer, task, source: str, subset_file, record_format: str, test_row) -> str:
    """The fine-tune's first training example (trained text between ⟦ and ⟧) above the first test prompt.

    Both exactly as the model sees them: the training record through the data stage's encoding,
    the test prompt through the evaluation's own context builder (no demonstrations: k = 0).
    """
    from tunelab.data.load import load_conversations
    from tunelab.templates.inspect import segments
    from tunelab.templates.render import encode

    conv = load_conversations(str(subset_file), format=record_format)[0]
    enc = encode(tokenizer, conv)
    trained = "".join(f"⟦{text}⟧" if on else text for text, on in segments(tokenizer, enc))
    tt = task_type(task)
    prompt = tt.test_prompt(tokenizer, task, _templates(task, source), test_row)
    if tt.pairs:
        return (f"# first training example ({subset_file.name}, {conv.source}): its prompt and chosen answer as "
                f"SFT reads it (dpo / orpo also score the rejected one); scored text between ⟦ and ⟧\n{trained}\n\n"
                f"# first test pair's prompt ({test_row.source}), after which both answers are scored\n{prompt}\n")
    return (f"# first training example ({subset_file.name}, {conv.source}), as the fine-tune reads it; "
            f"trained text between ⟦ and ⟧\n{trained}\n\n"
            f"# first test prompt ({test_row.source}), as the evaluation feeds it\n{prompt}\n")


__all__ = ["Rendering", "choose", "subset_records", "training_record", "task_format", "first_example", "TASK", "OWN"]
