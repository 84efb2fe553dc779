"""The TaskType base class: everything that differs between task types, in one object per type.

A task type (`type:` in a task file) is one module in this package with one class on this base,
registered by name with `@register_task_type("name")` (registry.py). Nothing outside this package
compares a task type by name: code that needs to know something about a type asks its object
(`task_type(task).pairs`, `.needs(task)`, `.run(job)`, ...). Subclasses override what they do
differently; the defaults below are those of a task whose items are rendered prompts the model
answers (generate, multiple_choice).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

# How every breakdown key begins (TaskType.breakdown): readers of results.json (the eval table, the
# report) find a metric's parts by it, never by the task type's name.
BREAKDOWN_PREFIX = "by_"


def task_source(task) -> str:
    """The task file the user edits (or `task 'name'` for one built in code), named in errors."""
    return task.source or f"task '{task.name}'"


@dataclass
class Job:
    """What a task type runs on: this process's rows of one task, through one backend."""

    backend: Any  # an infer Backend (local or endpoint)
    task: Any  # the TaskConfig
    rows: list  # this process's rows (data Rows)
    templates: Any  # the task type's TaskTemplates
    builder: Any  # the fewshot ContextBuilder (demonstrations)
    batch_size: int
    cache: Any = None  # a RequestCache, or None
    progress: Optional[Callable[[int], None]] = None
    reference: bool = False  # also score against the backend's reference model (reward_acc)
    skipped: Any = None  # a data.readers.Skipped: rows the type leaves out under skip_bad are counted in it


@dataclass
class Ran:
    """What a run gives back: one item per kept row, and the tokens read and generated."""

    items: list[dict]
    prompt_tokens: int
    generated_tokens: int
    kept: Optional[list[int]] = None  # positions in job.rows of the items; None: every row, in order
    demos: Optional[list[list[int]]] = None  # demonstrations of each item; None: none


class TaskType:
    """One task type. Class attributes describe it; methods do its work."""

    name: ClassVar[str] = ""  # set by @register_task_type
    description: ClassVar[str] = ""
    default_batch: ClassVar[Optional[int]] = None  # items per batch on CPU (x4 on a GPU); None: no model batches
    runs_model: ClassVar[bool] = True  # False: it scores something else (a retriever), never a language model
    pairs: ClassVar[bool] = False  # items and the compare's pool are preference pairs
    default_metrics: ClassVar[Optional[tuple[str, ...]]] = None  # when the task file names none
    response_metrics: ClassVar[bool] = False  # per-response metrics (length, refusal, ...) of generated outputs
    why_no_demonstrations: ClassVar[Optional[str]] = None  # why demonstrations do not apply (compare refuses few_shot arms)
    dry_run_counts: ClassVar[bool] = True  # False: `compare --dry-run` counts no evaluation tokens for it
    pool_format: ClassVar[Optional[str]] = None  # the compare's pool is read in this data format, not rendered
    prediction_keys: ClassVar[dict[str, str]] = {}  # key -> meaning, of what its prediction lines add
    # its items are turns of conversations: each carries `history`, the earlier turns, which a judge sees,
    # and a turn may have no reference where others do (a reference-guided judge grades it without)
    conversation: ClassVar[bool] = False

    # ---------------------------------------------------------------- the task file
    def check(self, task, source: str) -> None:
        """Refuse, in one line naming `source`, a task file this type cannot run (its own keys)."""

    def needs(self, task) -> frozenset[str]:
        """What the backend must offer to run this task: generation, loglik, rolling_loglik, chat_template
        (the model's own template, which an endpoint does not expose), conversation (a chat template or a
        chat endpoint: several turns are rendered as a conversation)."""
        return frozenset()

    def templates(self, task, source: str):
        """The task's templates as this type renders them (prompts.TaskTemplates)."""
        from tunelab.evaluate.prompts import TaskTemplates

        return TaskTemplates(task, source)

    # ---------------------------------------------------------------- running and writing
    def run(self, job: Job) -> Ran:
        raise NotImplementedError(f"task type {self.name} runs no model")

    def evaluate(self, task, *, limit: Optional[int] = None, out=None, t0: Optional[float] = None):
        """The whole evaluation of a type that runs no model (runs_model False): results, written to `out`."""
        raise NotImplementedError(f"task type {self.name} runs a model: the runner calls run()")

    def units(self, task, rows: list) -> int:
        """Items of progress `run` reports for these rows (one per row; a conversation: one per turn)."""
        return len(rows)

    def item_id(self, record_id: str, item: dict) -> str:
        """An item's id in predictions.jsonl, from its record's (the `id` field, else its line); unique."""
        return record_id

    def breakdown(self, items: list[dict]) -> Optional[tuple[str, dict[str, list[int]]]]:
        """(key, {part: item positions}): every metric is also given per part under `key` in results.json
        (multi_turn: by_turn), {part: {value, stderr, ci95, n}}; the key begins with BREAKDOWN_PREFIX and
        the part (turn "1") names the part in tables; None: no parts."""
        return None

    def references(self, items: list[dict]) -> list:
        """The references each metric's compute() receives, one per item ([] where there are none)."""
        return [[] for _ in items]

    def prediction_fields(self, item: dict) -> dict:
        """The keys this type adds to an item's line of predictions.jsonl (see `prediction_keys`)."""
        return {key: item[key] for key in self.prediction_keys if key in item}

    # ---------------------------------------------------------------- the compare
    def record_format(self, task) -> str:
        """The data format of the fine-tuned arms' training records rendered from the pool."""
        return "messages" if task.chat else "plain"

    def training_record(self, task, templates, row) -> dict:
        """One pool row as a training record, in record_format(task), keeping its id."""
        from tunelab.errors import TunelabError

        rid = str(row.data.get("id", row.line))
        prompt, answer = templates.prompt(row), templates.answer_text(row)
        if not str(answer).strip():
            raise TunelabError(f"{row.source}: the task's 'answer' template gives an empty answer, so a fine-tune "
                               f"has nothing to learn from this record; fix the record or the template")
        if task.chat:
            messages = [{"role": "system", "content": task.system}] if task.system else []
            return {"id": rid, "messages": messages + [{"role": "user", "content": prompt},
                                                       {"role": "assistant", "content": answer}]}
        return {"id": rid, "prompt": prompt, "completion": task.target_delimiter + answer}

    def test_prompt(self, tokenizer, task, templates, row) -> str:
        """The first test prompt as the evaluation feeds it (no demonstrations), for the compare's first example."""
        from tunelab.fewshot import ContextBuilder

        builder = ContextBuilder(task, templates, [], k=0, sampler="random", seed=0, pool_is_eval=False,
                                 tokenizer=tokenizer)
        return builder.build(row, templates.prompt(row)).text

    def estimate_tokens(self, task, count: Callable[[str], int], row, templates, builder) -> tuple[int, int]:
        """(prompt, generated) tokens of evaluating one row, its prompt rendered as the evaluation renders it."""
        r = templates.render(row)
        return count(builder.build(row, r.prompt).text), 0
