"""Training objectives: what an optimizer step optimises, one registered class per module.

    sft.py    supervised fine-tuning: token cross-entropy     methods full, lora, dora, qlora
    dpo.py    Direct Preference Optimization (a reference)   method dpo
    orpo.py   Odds Ratio Preference Optimization             method orpo

An objective owns everything that differs between methods: how its data is loaded (examples or
preference pairs), how a micro-batch is collated, the loss, the evaluation, the statistics each
step logs, and what it keeps beside the run (DPO's reference log-probabilities). The recipe
(loop.py) holds ONE objective and never asks which.

A method is what `method:` in a training config names. It is declared once, beside its objective,
with its family and its usual learning rate; the config's allowed values, the schedule's
automatic rate and the compare's arm kinds all come from `methods()`:

    @register_objective
    class SFT(Objective):
        name, family = "sft", "sft"
        methods = (Method("lora", lr=2e-4, weights=Weights(adapter=True)), ...)

Weights and objective are two axes: full / lora / dora / qlora say which weights train (SFT);
dpo / orpo name a preference objective whose weights `preference.weights` names.

The method list is read where no model runs (the config check, the compare's planner, the report),
so an objective module imports torch and the tensor code (preference.py, loss.py) inside its methods.

Adding an objective is one module in this package: `tunelab.discover` imports every module here,
and `@register_objective` enters it. An objective that needs something from the layers above
(GRPO: a rollout function generating on the live weights, reward functions) names it in `needs`;
the caller passes it to `train(..., providers={...})` (cli, compare), as the toxicity scorer is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

from tunelab.errors import TunelabError

FAMILIES = ("sft", "preference", "rl")  # what a method learns from: examples, pairs, rewards
PACKAGE = __name__


@dataclass(frozen=True)
class Weights:
    """Which weights a method trains (train/methods.py applies it)."""

    adapter: bool  # an adapter trains and is saved alone; False: every weight
    dora: bool = False  # LoRA with a learned magnitude per output
    quantized: bool = False  # a 4-bit NF4 base (bitsandbytes; CUDA only)


@dataclass(frozen=True)
class Method:
    """One value of `method:`: its weights, its usual learning rate, and (set on registration) its objective."""

    name: str
    lr: float  # the usual learning rate (train.lr: auto), with an adapter or the method's own weights
    weights: Optional[Weights] = None  # None: the weights method `preference.weights` names
    lr_full: Optional[float] = None  # the usual rate when `preference.weights: full`
    objective: Any = None  # the Objective class (filled by register_objective)

    @property
    def family(self) -> str:
        return self.objective.family

    @property
    def pairs(self) -> bool:
        """It trains on preference pairs (chosen / rejected), not on examples."""
        return self.objective.pairs

    @property
    def quantized(self) -> bool:
        """Its own weights sit on a 4-bit base (CUDA only): the planner checks before any arm runs."""
        return self.weights is not None and self.weights.quantized


@dataclass
class Live:
    """What an objective may use once the model is prepared (setup's end): the run as it trains."""

    model: Any  # the prepared module (DDP / FSDP wrapped): its forward is the objective's wrap()
    unwrapped: Any  # the same without the process wrappers (the objective's wrap())
    attn: str  # attention implementation the batches are built for
    device: Any
    pad_id: int
    row_width: Optional[int]
    run_dir: Any
    main: bool  # the process that writes files
    resume: bool
    say: Callable[[str], None]
    adapter: bool  # an adapter trains (DPO's reference: the same forward with it switched off)


class Objective:
    """The base: hooks the recipe calls, with SFT-like defaults where one makes sense.

    Losses follow loop.py's rule: `step_loss` returns the micro-batch's loss as a SUM that the loop
    divides by the step's supervised-token count over all micro-batches and processes.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    methods: ClassVar[tuple[Method, ...]]
    packed: ClassVar[bool] = False  # True: rows are always packed, whatever data.packing says
    pairs: ClassVar[bool] = False  # trains on preference pairs (a compare arm needs a pool of pairs)
    needs: ClassVar[tuple[str, ...]] = ()  # providers the caller must pass (a rollout function, rewards)
    # a row is a prompt whose every visit samples completions (GRPO): the automatic schedule's prompt rule
    rows_are_prompts: ClassVar[bool] = False
    weights_key: ClassVar[str] = "preference"  # the config section whose `weights` a method without its own names
    step: int = 0  # the optimizer step being taken (1-based), set by step.optimizer_step before before_step
    adapter_meta: ClassVar[dict] = {}  # extra keys of the saved adapter's tunelab_adapter.json
    prep_s: float = 0.0  # seconds spent preparing batches in this launch (kept out of the training time)

    def __init__(self, cfg, providers: Mapping[str, Callable] | None = None):
        self.cfg, self.providers = cfg, dict(providers or {})
        self.live: Optional[Live] = None

    @classmethod
    def check(cls, cfg) -> None:
        """Settings this objective refuses (fail fast, before a model loads)."""

    def load(self, source) -> tuple[Sequence, Sequence]:  # pragma: no cover - every objective has one
        """(train, eval) rows from inputs.DataSource."""
        raise NotImplementedError

    def wrap(self, model):
        """The module handed to Accelerator.prepare: its forward is what DDP synchronises."""
        raise NotImplementedError

    def collate(self, examples, *, pad_id: int, width: Optional[int]):
        raise NotImplementedError

    def batch(self, rows: Sequence, idx: list[int], *, pad_id: int, width: Optional[int]):
        """The micro-batch of rows `idx` (of the train or held-out rows). An objective whose batches
        are made during the step (GRPO: completions generated in before_step) builds them here."""
        return self.collate([rows[i] for i in idx], pad_id=pad_id, width=width)

    def start(self, live: Live, data) -> None:
        """Called once the model is prepared and the data planned (data: state.RunData)."""
        self.live = live

    def steps_per_batch(self) -> int:
        """Optimizer steps each planned step's micro-batches are used for in a row (GRPO's num_iterations)."""
        return 1

    def before_step(self, batches: list[list[int]]) -> None:
        """Before the step's forward passes, with ALL its micro-batches (every process's): a place
        to prepare what its batches need (DPO: reference log-probabilities; GRPO: rollouts)."""

    def step_loss(self, model, batch, idx: list[int], counts, weight: float):
        """This micro-batch's loss as a sum (see the class docstring); `counts`: accounting.StepCounts."""
        raise NotImplementedError

    def step_stats(self, counts, reduce) -> dict:
        """Extra statistics of the step for its metrics.jsonl row (means over processes)."""
        return {}

    def eval_part(self, model, batch, idx: list[int], weight: float) -> tuple[float, int]:
        """(loss sum, count) of one held-out micro-batch."""
        raise NotImplementedError

    def eval_result(self, total: float, count: int, reduce) -> tuple[float, dict]:
        """(eval loss, eval_* statistics) from the sums over every held-out batch and process."""
        return total / max(count, 1), {}

    def before_eval(self, examples, plan: list[list[int]]) -> None:
        """Before an evaluation over `plan` (every batch of the held-out rows)."""

    def save(self) -> None:
        """Write what the objective keeps beside the run (called with every checkpoint and at the end)."""

    def summary(self) -> dict:
        """Keys the objective adds to summary.json."""
        return {}


# ---------------------------------------------------------------- the registry
_OBJECTIVES: dict[str, type] = {}
_METHODS: dict[str, Method] = {}
_loaded = False


def register_objective(cls: type) -> type:
    """Class decorator: enter an Objective and its methods (names must be unique)."""
    if cls.family not in FAMILIES:
        raise ValueError(f"objective {cls.name}: family {cls.family!r} is not one of {FAMILIES}")
    if cls.name in _OBJECTIVES and _OBJECTIVES[cls.name] is not cls:
        raise ValueError(f"two objectives are named {cls.name!r}")
    for m in cls.methods:  # all checked before anything is entered
        if m.name in _METHODS and _METHODS[m.name].objective is not cls:
            raise ValueError(f"method {m.name!r} is declared twice")
    _OBJECTIVES[cls.name] = cls
    bound = [Method(m.name, m.lr, m.weights, m.lr_full, cls) for m in cls.methods]
    _METHODS.update({m.name: m for m in bound})
    cls.methods = tuple(bound)
    return cls


def _load() -> None:
    global _loaded
    if not _loaded:
        from tunelab.discover import import_package_modules

        import_package_modules(PACKAGE)
        _loaded = True


def methods() -> dict[str, Method]:
    """Every method, by name: SFT's first, then preference, then RL (FAMILIES' order)."""
    _load()
    return dict(sorted(_METHODS.items(), key=lambda kv: FAMILIES.index(kv[1].family)))


def method_names(family: Optional[str] = None) -> tuple[str, ...]:
    return tuple(n for n, m in methods().items() if family is None or m.family == family)


def get_method(name: str, key: str = "method") -> Method:
    """The Method `name`; a one-line error listing the allowed values when there is none."""
    found = methods().get(name)
    if found is None:
        names = [repr(n) for n in methods()]
        raise TunelabError(f"{key}: must be {', '.join(names[:-1])} or {names[-1]} (got {name!r}); "
                           "the methods: docs/train-config.md")
    return found


@dataclass(frozen=True)
class RunMethod:
    """A config's method resolved on both axes: the objective and the weights that train."""

    method: Method  # what `method:` says
    weights_method: Method  # the method whose weights train (itself, or what preference.weights names)

    @property
    def weights(self) -> Weights:
        return self.weights_method.weights

    @property
    def adapter(self) -> bool:
        return self.weights.adapter

    @property
    def usual_lr(self) -> float:
        """The rate train.lr: auto takes: the method's own, or its full-weights rate with full weights."""
        if self.method.weights is None and not self.adapter and self.method.lr_full is not None:
            return self.method.lr_full
        return self.method.lr


def resolve(cfg) -> RunMethod:
    """The RunMethod of a TrainConfig (or anything with .method and the objective's section's .weights)."""
    m = get_method(cfg.method)
    if m.weights is not None:
        return RunMethod(m, m)
    key = m.objective.weights_key  # preference.weights (dpo, orpo) or grpo.weights
    named = getattr(cfg, key).weights
    w = get_method(named, f"{key}.weights")
    if w.weights is None:
        raise TunelabError(f"{key}.weights: {named!r} names no weights; use lora, dora or full")
    return RunMethod(m, w)


def build(cfg, providers: Mapping[str, Callable] | None = None) -> Objective:
    """The objective of a config, given the providers it needs (a one-line error names a missing one)."""
    cls = resolve(cfg).method.objective
    missing = [n for n in cls.needs if n not in (providers or {})]
    if missing:
        raise TunelabError(f"method: {cfg.method} needs {', '.join(missing)} passed to train(providers=...); "
                           "the tunelab CLI and compare pass them")
    cls.check(cfg)
    return cls(cfg, providers)


__all__ = ["Objective", "Method", "Weights", "Live", "RunMethod", "register_objective", "methods",
           "method_names", "get_method", "resolve", "build", "FAMILIES"]
