"""The YAML files of DESIGN §2 as pydantic models, plus `key.sub=value` overrides.

Every model forbids unknown keys (a typo is an error, not a silently ignored setting), and
validation problems are gathered into one message that names each key, what is wrong and the
allowed keys or range.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tunelab.errors import TunelabError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- training (DESIGN 2.3)
class LoraConfig(_Strict):
    r: int = Field(16, ge=1, le=1024, description="rank; 8-64 is usual")
    alpha: float = Field(32, gt=0, description="scale = alpha / r; usually 2r")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: Union[str, list[str]] = Field("all-linear", description="'all-linear' or module names")


class DataConfig(_Strict):
    train: str = Field(..., description="a file, or builtin:<task>?n=500&seed=1")
    eval: Union[float, str, None] = Field(0.1, description="a file, or a fraction held out (0..0.5)")
    format: Literal["auto", "text", "prompt_completion", "alpaca", "messages", "sharegpt"] = "auto"
    fields: dict[str, str] = Field(default_factory=dict, description="rename map, e.g. {prompt: question}")
    max_length: int = Field(1024, ge=8, le=1_048_576)
    truncate: bool = Field(True, description="false: drop rows over max_length instead of truncating")
    packing: bool = True
    train_on: Literal["completion", "all"] = "completion"
    skip_bad: bool = False
    max_toxicity: Optional[float] = Field(None, ge=0.0, le=1.0, description="drop training records above this toxicity")
    system: Optional[str] = Field(None, description="system prompt added to every conversation")

    @field_validator("eval")
    @classmethod
    def _eval_fraction(cls, v):
        if isinstance(v, float) and not 0.0 <= v <= 0.5:
            raise ValueError("a held-out fraction must be between 0 and 0.5")
        return v


class EarlyStopping(_Strict):
    metric: str = "eval_loss"
    patience: Optional[int] = Field(None, ge=1, description="evaluations without improvement before stopping")


class TrainLoopConfig(_Strict):
    epochs: float = Field(1, gt=0, le=1000)
    max_steps: Optional[int] = Field(None, ge=1)
    batch_tokens: Optional[int] = Field(
        None, ge=16, description="token budget of one micro-batch (packed); unset: sized from free memory "
        "on a GPU, 8192 on CPU (docs/training.md)")
    grad_accum: int = Field(1, ge=1, le=4096)
    lr: float = Field(2.0e-4, gt=0, lt=1.0, description="LoRA: 1e-4..5e-4; full: 1e-5..5e-5")
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    warmup: float = Field(0.03, ge=0, description="fraction of steps if < 1, else a step count")
    weight_decay: float = Field(0.0, ge=0, le=1)
    max_grad_norm: Optional[float] = Field(1.0, gt=0)
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    grad_checkpointing: bool = False
    compile: Union[bool, Literal["auto"]] = Field(
        "auto", description="torch.compile each decoder layer; auto: on CUDA, off on CPU")
    eval_every: int = Field(100, ge=1)
    save_every: int = Field(200, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    log_every: int = Field(1, ge=1)


class LogConfig(_Strict):
    tensorboard: bool = False
    mlflow: bool = False


class TrainConfig(_Strict):
    name: Optional[str] = None
    model: str = "default"
    method: Literal["full", "lora", "dora", "qlora"] = "lora"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig
    train: TrainLoopConfig = Field(default_factory=TrainLoopConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    out: str = "runs/{name}"
    trust_remote_code: bool = False


# ---------------------------------------------------------------- evaluation task (DESIGN 2.1)
class FewShotConfig(_Strict):
    k: int = Field(0, ge=0, le=128)
    sampler: Literal["random", "first_n", "stratified", "similar"] = "random"
    seed: int = 1234
    pool: Optional[str] = Field(None, description="another file; default: the same file minus the item")
    delimiter: str = Field("\n\n", description="between demonstrations (plain form)")


class GenerationConfig(_Strict):
    max_new_tokens: int = Field(64, ge=1, le=32768)
    stop: list[str] = Field(default_factory=lambda: ["\n\n"])
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 1234


class TaskConfig(_Strict):
    name: str
    data: Optional[str] = None
    split: Optional[str] = Field(None, description='a slice like "0:500"')
    type: Literal["generate", "multiple_choice", "perplexity", "retrieval"] = "generate"
    prompt: str = "{{ prompt }}"
    choices: Optional[str] = None
    answer: Optional[str] = None
    target_delimiter: str = " "
    chat: bool = False
    system: Optional[str] = None
    fewshot: FewShotConfig = Field(default_factory=FewShotConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    metrics: list[Union[str, dict[str, Any]]] = Field(default_factory=lambda: ["exact_match"])
    # retrieval
    corpus: Optional[str] = None
    queries: Optional[str] = None
    qrels: Optional[str] = None
    retriever: Literal["bm25", "embedding"] = "bm25"
    # perplexity
    text: Optional[str] = Field(None, description="perplexity: Jinja expression for the document text")
    # where the YAML lives; relative data paths resolve against it (not a user key)
    base_dir: Optional[str] = Field(None, exclude=True)
    source: Optional[str] = Field(None, exclude=True)  # the YAML file itself, named in errors

    @field_validator("split")
    @classmethod
    def _split_form(cls, v):
        if v is None:
            return v
        parts = v.split(":")
        if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() or p.strip() == "" for p in parts):
            raise ValueError('split must look like "start:end", e.g. "0:500"')
        return v

    def resolve(self, path: Optional[str]) -> Optional[Path]:
        """A data path relative to the task file's folder (builtin: specs pass through)."""
        if path is None or path.startswith("builtin:"):
            return None if path is None else Path(path)
        p = Path(path).expanduser()
        if not p.is_absolute() and self.base_dir:
            p = Path(self.base_dir) / p
        return p


# ---------------------------------------------------------------- compare (DESIGN 2.4)
class CompareConfig(_Strict):
    """A compare: many arms (zero-shot, few-shot, fine-tuned) scored on the same test items."""

    name: Optional[str] = Field(None, description="the compare's name; default: the YAML file's name without .yaml")
    model: str = Field("default", description="base model of every arm that names none: a registry name, a "
                                              "Hugging Face folder, a .gguf file or an openai:URL#NAME endpoint")
    task: str = Field(..., description="the evaluation task: a task YAML (relative to this file) or builtin:<name>")
    train_data: str = Field(..., description="the pool for demonstrations and fine-tuning: a file (relative to this "
                                             "file) or builtin:<task>?n=512&seed=1")
    arms: list[Union[str, dict[str, Any]]] = Field(
        ..., min_length=1,
        description="zero_shot | {few_shot: {k: [1, 3], sampler: [random]}} | {lora|dora|full|qlora: {n: [32, 128]}} "
                    "| {endpoint: {model: openai:URL#NAME, k: [0]}}; any arm may set model:")
    metric: Optional[str] = Field(None, description="the metric that ranks arms; default: the task's first metric")
    limit: Optional[int] = Field(None, ge=1, description="score only the first N test items (the same N for every arm)")
    seed: int = Field(1, description="seed of the one permutation of the pool that gives the nested training sets")
    train: dict[str, Any] = Field(default_factory=dict, description="training-config keys (docs/training.md) for every "
                                                                    "fine-tuned arm, e.g. {train: {epochs: 2}, lora: {r: 8}}")
    safety: bool = Field(False, description="score every arm's outputs with the packaged toxicity classifier")
    toxicity_threshold: float = Field(0.5, ge=0.0, le=1.0, description="an output scoring above this counts as toxic")
    batch_size: Union[int, Literal["auto"]] = Field("auto", description="evaluation batch size")
    out: str = Field("runs/{name}", description="the compare folder (relative to the working directory)")


class PromptArmSpec(_Strict):
    """`zero_shot: {model: M}`."""

    model: Optional[str] = Field(None, description="another base model for this arm")


class FewShotArmSpec(_Strict):
    """`few_shot: {k: [1, 3, 8], sampler: [random, similar]}`: one arm per (k, sampler)."""

    k: Union[int, list[int]] = Field(3, description="demonstrations per prompt; a list gives one arm each")
    sampler: Union[str, list[str]] = Field("random", description="random | first_n | stratified | similar; a list gives one arm each")
    model: Optional[str] = Field(None, description="another base model for this arm")


class FineTuneArmSpec(_Strict):
    """`lora: {n: [32, 128, 512]}`: one fine-tune per training-set size n (nested subsets of the pool)."""

    n: Union[int, list[int]] = Field(..., description="training examples drawn from the pool; a list gives one arm each")
    model: Optional[str] = Field(None, description="another base model for this arm")
    train: dict[str, Any] = Field(default_factory=dict, description="training-config keys for this arm only")


class EndpointArmSpec(_Strict):
    """`endpoint: {model: openai:http://127.0.0.1:8000/v1#name, k: [0, 3]}`: a served model, prompted."""

    model: str = Field(..., description="openai:URL#NAME (or any model string tunelab eval accepts)")
    k: Union[int, list[int]] = Field(0, description="demonstrations per prompt; a list gives one arm each")
    sampler: Union[str, list[str]] = Field("random", description="demonstration sampler")


# ---------------------------------------------------------------- loading and overrides
def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """['train.lr=1e-4', 'lora.r=8'] -> {'train': {'lr': 1e-4}, 'lora': {'r': 8}}; values are YAML."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise TunelabError(f"override '{item}' is not key=value; write e.g. train.lr=1e-4")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise TunelabError(f"override '{item}': '{p}' is set to a value and also used as a section")
        node[parts[-1]] = value
    return tree


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"{path}: config file not found; check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TunelabError(f"{path}{line}: not valid YAML ({problem}); fix the syntax on that line") from None
    if data is None:
        raise TunelabError(f"{path}: the file is empty; see examples/ for a config to start from")
    if not isinstance(data, dict):
        raise TunelabError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def _describe(model_cls: type[BaseModel], loc: tuple) -> str:
    """Allowed keys at the location of an 'extra_forbidden' error."""
    cls = model_cls
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        else:
            return ""
    allowed = [k for k, f in cls.model_fields.items() if not f.exclude]
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}allowed keys: {', '.join(allowed)}"


def validation_message(model_cls: type[BaseModel], err: ValidationError, source: str) -> str:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key ({_describe(model_cls, loc)})")
        elif e["type"] == "missing":
            problems.append(f"{key}: required key is missing")
        else:
            got = e.get("input")
            got_s = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
            msg = e["msg"].replace("Input should be", "must be").replace("Value error, ", "")
            problems.append(f"{key}: {msg}{got_s}")
    return f"{source}: " + "; ".join(problems)


def build(model_cls: type[BaseModel], data: dict, source: str):
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        raise TunelabError(validation_message(model_cls, e, source)) from None


def load_config(model_cls, path: str | Path | dict, overrides: list[str] | None = None):
    """Read a YAML file (or take a dict), apply `key=value` overrides, validate."""
    if isinstance(path, dict):
        data, source = dict(path), "config"
    else:
        data, source = read_yaml(path), str(path)
    if overrides:
        data = deep_merge(data, parse_overrides(overrides))
    return build(model_cls, data, source)


def load_task(path: str | Path | dict, overrides: list[str] | None = None, *,
              base_dir: str | Path | None = None) -> TaskConfig:
    """A task from a YAML file (or a dict) with `key=value` overrides; relative paths resolve
    against the file's folder, or `base_dir` for a dict."""
    task = load_config(TaskConfig, path, overrides)
    if isinstance(path, dict):
        task.base_dir = str(base_dir) if base_dir is not None else None
    else:
        task.base_dir = str(Path(path).resolve().parent)
        task.source = str(path)
    return task


def load_train_config(path: str | Path | dict, overrides: list[str] | None = None) -> TrainConfig:
    cfg = load_config(TrainConfig, path, overrides)
    if cfg.name is None:
        cfg.name = Path(path).stem if not isinstance(path, dict) else "run"
    return cfg


def to_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
