"""The YAML files (train config, task, compare) as pydantic models, plus `key.sub=value` overrides.

Every model forbids unknown keys (a typo is an error, not a silently ignored setting), and
validation problems are gathered into one message that names each key, what is wrong and the
allowed keys or range.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from tunelab.config_errors import problems
from tunelab.errors import TunelabError


def slice_form(v: Optional[str], key: str) -> Optional[str]:
    """A "start:end" slice of a file's records (either end may be empty), or None."""
    if v is None:
        return v
    parts = v.split(":")
    if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() or p.strip() == "" for p in parts):
        raise ValueError(f'{key} must look like "start:end", e.g. "0:500"')
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- training (docs/train-config.md)
# Every key carries a description: docs/train-config.md and docs/tasks.md are generated from them
# (scripts/gen_docs.py), and tests/test_docs.py fails on a key without one.
class LoraConfig(_Strict):
    r: int = Field(16, ge=1, le=1024, description="rank of the low-rank update; 8-64 is usual")
    alpha: float = Field(32, gt=0, description="the update is scaled by alpha / r; usually 2r")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter's input; 0-0.1")
    targets: Union[str, list[str]] = Field(
        "all-linear", description="'all-linear' (every linear layer but the output head) or a list of module "
                                  "names, e.g. [q_proj, v_proj]")


class DataConfig(_Strict):
    train: str = Field(..., description="the training file (.jsonl, .json, .csv, .parquet), or "
                                        "builtin:<task>?n=500&seed=1")
    eval: Union[float, str, None] = Field(0.1, description="a file, or a fraction of `train` held out (0..0.5); "
                                                           "null: no eval loss")
    format: Literal["auto", "text", "prompt_completion", "alpaca", "messages", "sharegpt", "plain", "chosen"] = Field(
        "auto", description="record layout; auto: told from the first record's fields; plain: prompt + completion "
                            "as raw text without the chat template; chosen: a preference file's prompt and chosen "
                            "answer (SFT next to DPO); plain and chosen are never auto-detected")
    fields: dict[str, str] = Field(default_factory=dict, description="rename map from the format's field names to "
                                                                     "yours, e.g. {prompt: question}")
    max_length: int = Field(1024, ge=8, le=1_048_576, description="tokens per example after the chat template")
    truncate: bool = Field(True, description="false: drop rows over max_length instead of truncating")
    packing: bool = Field(True, description="lay examples end to end in one row (documents never attend to each "
                                            "other); false: one padded row per example")
    train_on: Literal["completion", "all"] = Field(
        "completion", description="completion: loss on the assistant's tokens only; all: on every token")
    skip_bad: bool = Field(False, description="skip unreadable or malformed records (counted and reported) "
                                              "instead of stopping at the first")
    max_toxicity: Optional[float] = Field(None, ge=0.0, le=1.0, description="drop training records whose "
                                          "toxicity score is above this (0..1); null: keep all")
    system: Optional[str] = Field(None, description="system prompt added to every conversation")

    @field_validator("eval")
    @classmethod
    def _eval_fraction(cls, v):
        if isinstance(v, float) and not 0.0 <= v <= 0.5:
            raise ValueError("a held-out fraction must be between 0 and 0.5")
        return v


class EarlyStopping(_Strict):
    metric: Literal["eval_loss"] = Field("eval_loss", description="the value watched; only eval_loss for now")
    patience: Optional[int] = Field(None, ge=1, description="evaluations without improvement before stopping; "
                                                            "null: never stop early")


class TrainLoopConfig(_Strict):
    epochs: Union[float, Literal["auto"]] = Field(
        "auto", description="passes over the training set, may be fractional; auto: from the data size, at least "
        "3 and enough for about 64 optimizer steps, capped by a token budget; grpo: 3 visits of each prompt, at most "
        "about 256 visits (docs/training.md)")
    max_steps: Optional[int] = Field(None, ge=1, description="optimizer steps; when set it wins over epochs")
    batch_tokens: Optional[int] = Field(
        None, ge=16, description="token budget of one micro-batch (packed); unset: about n/32 examples "
        "(4 to 32) per optimizer step, split into micro-batches that fit free memory on a GPU (docs/training.md)")
    grad_accum: int = Field(1, ge=1, le=4096, description="micro-batches per optimizer step (with batch_tokens "
                                                          "unset on a GPU: as many as the step needs)")
    lr: Union[float, Literal["auto"]] = Field(
        "auto", description="peak learning rate; auto: the method's usual one, 2e-4 for LoRA/DoRA/QLoRA, 2e-5 "
        "for full fine-tuning (usual ranges: LoRA 1e-4..5e-4; full 1e-5..5e-5)")
    schedule: Literal["constant", "linear", "cosine"] = Field("cosine", description="learning-rate decay after "
                                                                                    "warm-up")
    warmup: float = Field(0.03, ge=0, description="fraction of steps if < 1, else a step count")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay")
    max_grad_norm: Optional[float] = Field(1.0, gt=0, description="clip the gradient norm to this; null: no clipping")
    seed: int = Field(42, description="seeds weight init (LoRA), dropout and the data order")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on a GPU that has it, else fp32; fp16 needs CUDA")
    grad_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less "
                                                        "memory, slower steps")
    compile: Union[bool, Literal["auto"]] = Field(
        "auto", description="torch.compile each decoder layer; auto: on CUDA, off on CPU")
    eval_every: int = Field(100, ge=1, description="steps between eval-loss measurements")
    save_every: int = Field(200, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept (the best one is kept as well)")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping, description="stop when the eval loss "
                                                                                     "stops improving")
    log_every: int = Field(1, ge=1, description="steps between lines of metrics.jsonl (evaluation steps "
                                                   "and the last step are always written)")

    @field_validator("epochs")
    @classmethod
    def _epochs_range(cls, v):
        if v != "auto" and not 0 < v <= 1000:
            raise ValueError("must be auto or a number in (0, 1000]")
        return v

    @field_validator("lr")
    @classmethod
    def _lr_range(cls, v):
        if v != "auto" and not 0 < v < 1:
            raise ValueError("must be auto or a number in (0, 1), e.g. 2e-4")
        return v


class ReplayConfig(_Strict):
    data: str = Field(..., description="general instruction data mixed into the training set (any training "
                                       "format: alpaca, messages, prompt_completion, ...); relative to the config")
    ratio: float = Field(0.1, gt=0.0, lt=1.0, description="share of the mixed training set's EXAMPLES that come "
                         "from `data` (0.1: 1 replay example per 9 task examples); 0.01-0.1 is usual")
    format: Literal["auto", "text", "prompt_completion", "alpaca", "messages", "sharegpt"] = Field(
        "auto", description="record layout of `data`; auto: told from its first record")


class LogConfig(_Strict):
    tensorboard: bool = Field(False, description="also log to TensorBoard in the run folder (pip install "
                                                 "tensorboard)")
    mlflow: bool = Field(False, description="also log to MLflow (pip install mlflow)")


class PreferenceConfig(_Strict):
    """Preference tuning (method: dpo | orpo) on pairs of a chosen and a rejected response."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    weights: Literal["lora", "dora", "full"] = Field(
        "lora", description="which weights train: lora or dora (an adapter; DPO's reference model is the base with "
                            "the adapter off) or full (every weight; DPO's reference is the initial model); DPO's "
                            "reference log-probabilities are computed once before training and kept in the run folder")
    beta: float = Field(0.1, gt=0.0, le=10.0, description="DPO: strength of the pull towards the reference model "
                        "(the implicit reward is beta × log-ratio); 0.01-0.5 is usual, 0.1 the common default")
    loss: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="DPO's loss on the reward margin: sigmoid (the DPO paper), ipo (squared, on per-token "
                               "mean log-ratios; beta is IPO's tau, 0.01-1), hinge (SLiC)")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="DPO sigmoid loss only: the assumed share of "
                                   "pairs whose label is flipped (conservative DPO); 0-0.2 is usual, 0 = plain DPO")
    orpo_lambda: float = Field(0.1, gt=0.0, le=10.0, alias="lambda",
                               description="ORPO: weight of the odds-ratio term next to the NLL of the chosen "
                                           "response; 0.1-1 is usual (the ORPO paper: 0.1-0.25)")

    @model_validator(mode="after")
    def _smoothing_needs_sigmoid(self):
        if self.label_smoothing and self.loss != "sigmoid":
            raise ValueError(f"label_smoothing applies to loss: sigmoid only; set it to 0 for loss: {self.loss}")
        return self


class RewardSpec(BaseModel):
    """One reward of method: grpo: a metric of the registry scored against the task's answer, or a
    Python function; the keys besides metric / function / weight are the metric's options."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    metric: Optional[str] = Field(None, description="a registry metric scored against the task's answer: "
                                  "exact_match, numeric, contains, regex, valid_json, json_schema, f1, "
                                  "rouge1 / rouge2 / rougeL, bleu, chrf; other keys are its options, e.g. pattern: "
                                  "for regex; or judge_score, an LLM judge's 1-10 rating rescaled to 0-1 "
                                  "((rating - 1) / 9; docs/judge.md)")
    function: Optional[str] = Field(None, description="module:function called as f(completion, item) -> float, "
                                    "for any other reward (the module is looked up beside the config first)")
    weight: float = Field(1.0, description="its weight in the summed reward; 0.1-1 is usual")
    judge: Optional["RewardJudgeConfig"] = Field(None, description="judge_score only: the judge, as the task's judge: "
                                                 "block; keys set here override the task's (docs/judge.md)")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.metric is None) == (self.function is None):
            raise ValueError("a reward names either metric: NAME or function: module:function")
        if self.function is not None and ":" not in self.function:
            raise ValueError(f"function must look like module:function (got {self.function!r})")
        return self


class GRPOConfig(_Strict):
    """GRPO (method: grpo): completions sampled from the model being trained, scored by rewards."""

    weights: Literal["lora", "dora", "full"] = Field(
        "lora", description="which weights train: lora or dora (an adapter; the KL reference is the base with the "
                            "adapter off) or full (every weight; grpo.beta must then be 0)")
    task: Optional[str] = Field(None, description="a task YAML whose prompt template renders the training prompts "
                                "and whose answer the metric rewards score against; default: data.train when it is a "
                                "task YAML")
    rewards: list[RewardSpec] = Field(default_factory=list, description="the rewards, summed with their weights, e.g. "
                                      "[{metric: exact_match, weight: 1.0}, {metric: regex, pattern: '^\\d', "
                                      "weight: 0.2}]; default: the task's first metric")
    num_generations: int = Field(8, description="completions sampled per prompt (G), compared within their group; "
                                 "4-16 is usual")
    num_iterations: int = Field(1, ge=1, le=16, description="optimizer steps on one batch of completions (TRL's "
                                "num_iterations, μ); 1-4 is usual, 1 is on-policy")
    beta: float = Field(0.0, ge=0.0, le=1.0, description="KL penalty towards the reference model; 0 (TRL's default, "
                        "no reference pass) to 0.04 is usual")
    epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="lower clip of the probability ratio; 0.1-0.3 is usual")
    epsilon_high: Optional[float] = Field(None, gt=0.0, lt=1.0, description="upper clip; default epsilon; DAPO's "
                                          "clip-higher uses 0.28")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "dapo", description="how token losses are averaged (as TRL defines them): grpo per sequence, bnpo per "
                            "micro-batch token, dr_grpo over a constant length, dapo over the step's tokens (TRL's "
                            "default)")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="divide advantages by the group's reward std (group), the batch's (batch) or not at "
                             "all (none: Dr. GRPO)")
    mask_truncated_completions: bool = Field(False, description="no loss on completions cut at "
                                             "max_completion_length (their reward judges an unfinished answer)")
    temperature: float = Field(1.0, gt=0.0, le=2.0, description="sampling temperature; 0.7-1.0 is usual (0 would "
                               "give every completion of a group the same text)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling; 0.9-1.0 is usual")
    max_completion_length: int = Field(128, ge=1, le=32768, description="most tokens of a completion; 64-1024 is "
                                       "usual (a prompt must leave this much room below data.max_length)")
    stop: list[str] = Field(default_factory=list, description="strings that end a completion (kept in it)")
    log_completions_every: int = Field(10, ge=1, description="steps between samples written to completions.jsonl")

    @field_validator("num_generations")
    @classmethod
    def _at_least_two(cls, v):
        if v < 2:
            raise ValueError("must be at least 2: an advantage compares a completion with the others of its group")
        return v


class TrainConfig(_Strict):
    name: Optional[str] = Field(None, description="the run's name; default: the YAML file's name without .yaml")
    model: str = Field("default", description="base model: a registry name ('default', see `tunelab models`) or "
                                              "a Hugging Face model folder")
    # a plain string here: the methods are declared beside their objectives (train/objectives/), which
    # this base-layer module cannot import; the run refuses an unknown name before anything loads,
    # with the list of those declared (objectives.get_method)
    method: str = Field(
        "lora", description="full: every weight; lora / dora: an adapter; qlora: LoRA over a 4-bit base "
                            "(CUDA only); dpo / orpo: preference tuning on chosen/rejected pairs (settings: "
                            "preference); grpo: reinforcement learning from rewards (settings: grpo); the methods "
                            "are those train/objectives/ declares")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="adapter settings (lora, dora, qlora)")
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig,
                                         description="DPO / ORPO settings (method: dpo | orpo)")
    grpo: GRPOConfig = Field(default_factory=GRPOConfig, description="GRPO settings (method: grpo)")
    data: DataConfig = Field(..., description="what to train on")
    train: TrainLoopConfig = Field(default_factory=TrainLoopConfig, description="the optimisation loop")
    replay: Optional[ReplayConfig] = Field(None, description="mix general data into training to keep what the "
                                           "model knew, e.g. {data: general.jsonl, ratio: 0.1}; null: off")
    log: LogConfig = Field(default_factory=LogConfig, description="extra experiment trackers")
    out: str = Field("runs/{name}", description="the run folder; {name} is replaced by `name`")
    trust_remote_code: bool = Field(False, description="run Python code shipped with the model folder; only "
                                                       "for models you trust")


# ---------------------------------------------------------------- evaluation task (docs/tasks.md)
class FewShotConfig(_Strict):
    k: int = Field(0, ge=0, le=128, description="demonstrations before each item (0: zero-shot)")
    sampler: Literal["random", "first_n", "stratified", "similar"] = Field(
        "random", description="how demonstrations are picked from the pool")
    seed: int = Field(1234, description="seed of the random and stratified samplers")
    pool: Optional[str] = Field(None, description="another file; default: the same file minus the item")
    delimiter: str = Field("\n\n", description="between demonstrations (plain, non-chat prompts)")


class GenerationConfig(_Strict):
    max_new_tokens: int = Field(64, ge=1, le=32768, description="most tokens generated per item")
    stop: list[str] = Field(default_factory=lambda: ["\n\n"], description="strings that end the output "
                                                                           "(not included in it)")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0: greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling (with temperature > 0)")
    seed: int = Field(1234, description="sampling seed; each item gets its own, derived from it")


class JudgeConfig(_Strict):
    """The judge of judge_score / judge_win_rate (docs/judge.md): there is no default judge model."""

    model: Optional[str] = Field(None, description="the judge: a model name or folder, or openai:URL#NAME")
    template: Optional[str] = Field(None, description="a Jinja2 judge prompt of your own (relative to the task "
                                                      "file); default: tunelab's template for the metric")
    rubric: Optional[str] = Field(None, description="what the judge weighs, e.g. harmlessness; default: helpfulness, "
                                                    "correctness and clarity")
    reference: bool = Field(False, description="judge_score: show the judge the task's answer (reference-guided)")
    baseline: Optional[str] = Field(None, description="judge_win_rate: reference (the task's answers) or, in a "
                                                      "compare, another arm's id (default there: zero_shot)")
    concurrency: int = Field(8, ge=1, le=256, description="judge requests in flight at once (an endpoint judge) "
                                                          "or judge prompts per batch (a local one)")
    max_new_tokens: int = Field(512, ge=1, le=32768, description="most tokens of one judgment")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy judging")
    cache: bool = Field(True, description="keep judgments on disk ($TUNELAB_HOME/cache.sqlite): a re-run judges nothing twice")
    check: Optional[str] = Field(None, description="human-labelled pairs to measure the judge on first, e.g. "
                                                   "builtin:llmbar-natural")
    min_agreement: float = Field(0.7, ge=0.0, le=1.0, description="a compare's sentences say its ranking rests on "
                                                                  "a judge below this accuracy on judge.check")


# a judge_score reward's judge: block (grpo.rewards): the keys of JudgeConfig a reward uses (no baseline, no
# check: those belong to a compare and an evaluation); its template is relative to the training config
_REWARD_JUDGE = ("model", "template", "rubric", "reference", "concurrency", "max_new_tokens", "temperature", "cache")
_TEMPLATE = Field(None, description="a Jinja2 judge prompt of your own (relative to the training config); "
                                    "default: the task's judge.template, else tunelab's")
RewardJudgeConfig = create_model("RewardJudgeConfig", __base__=_Strict, **{
    k: (Optional[str], _TEMPLATE) if k == "template" else (JudgeConfig.model_fields[k].annotation,
                                                           JudgeConfig.model_fields[k]) for k in _REWARD_JUDGE})


class ReferencesConfig(_Strict):
    """multi_turn: where each turn's reference answer comes from (docs/tasks.md, "Conversations")."""

    path: Optional[str] = Field(None, description="a file of reference records (relative to the task file), joined "
                                                  "to the data by `key`; leave out to read `field` from each record itself")
    key: Optional[str] = Field(None, description="the field both files share, e.g. question_id (with path)")
    field: str = Field(..., description="dotted path to the list of per-turn answers, in a reference record (with "
                                        "path) or in the data record (without), e.g. choices.0.turns (numbers index lists)")


class TaskConfig(_Strict):
    name: str = Field(..., description="the task's name, written to results.json")
    data: Optional[str] = Field(None, description="the items: a file (relative to the task YAML) or "
                                                  "builtin:<task>?split=test&n=200")
    split: Optional[str] = Field(None, description='a slice of the items like "0:500"')
    # checked by the evaluate layer, where each task type is one registered class (docs/tasks.md lists them)
    type: str = Field("generate", description="the task type: a name from the table \"Task types\" above "
                                              "(each is one module of evaluate/task_types/)")
    prompt: str = Field("{{ prompt }}", description="Jinja2 template over the item's fields")
    choices: Optional[str] = Field(None, description="multiple_choice: a Jinja2 expression giving the list of "
                                                     "choices, e.g. \"{{ [ans0, ans1] }}\"")
    answer: Optional[str] = Field(None, description="Jinja2 expression for the gold: reference text(s) "
                                                    "(generate) or the choice's index or text (multiple_choice)")
    target_delimiter: str = Field(" ", description="between the prompt and a choice or demonstration answer "
                                                   "(plain prompts)")
    chat: bool = Field(False, description="wrap the prompt in the model's chat template")
    system: Optional[str] = Field(None, description="system prompt before the demonstrations")
    fewshot: FewShotConfig = Field(default_factory=FewShotConfig, description="demonstrations")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="decoding (generate)")
    judge: Optional[JudgeConfig] = Field(None, description="the LLM judge of judge_score / judge_win_rate (docs/judge.md)")
    metrics: list[Union[str, dict[str, Any]]] = Field(
        default_factory=lambda: ["exact_match"], description="metric names, or {name: {option: value}}; "
                                                             "the first is the headline")
    # multi_turn
    turns: Optional[str] = Field(None, description="multi_turn: the record field holding the list of user turns")
    references: Optional[ReferencesConfig] = Field(None, description="multi_turn: each turn's reference answer "
                                                                     "(judge_score with judge.reference: true)")
    # retrieval
    corpus: Optional[str] = Field(None, description="retrieval: the documents")
    queries: Optional[str] = Field(None, description="retrieval: the queries")
    qrels: Optional[str] = Field(None, description="retrieval: relevance judgements")
    retriever: Literal["bm25", "embedding"] = Field("bm25", description="retrieval: bm25, or embedding (MiniLM)")
    # perplexity
    text: Optional[str] = Field(None, description="perplexity: Jinja expression for the document text")
    # preference
    skip_bad: bool = Field(False, description="skip unreadable records of the data file and, for preference, bad "
                                              "pairs (an empty answer, sides that do not share the prompt) instead of "
                                              "stopping at the first; counted, with the first one's error, in a "
                                              "warning and in results.json's skipped")
    # where the YAML lives; relative data paths resolve against it (not a user key)
    base_dir: Optional[str] = Field(None, exclude=True)
    source: Optional[str] = Field(None, exclude=True)  # the YAML file itself, named in errors

    @field_validator("split")
    @classmethod
    def _split_form(cls, v):
        return slice_form(v, "split")

    def resolve(self, path: Optional[str]) -> Optional[Path]:
        """A data path relative to the task file's folder (builtin: specs pass through)."""
        if path is None or path.startswith("builtin:"):
            return None if path is None else Path(path)
        p = Path(path).expanduser()
        if not p.is_absolute() and self.base_dir:
            p = Path(self.base_dir) / p
        return p


# ---------------------------------------------------------------- compare (docs/compare.md)
class CompareConfig(_Strict):
    """A compare: many arms (zero-shot, few-shot, fine-tuned) scored on the same test items."""

    name: Optional[str] = Field(None, description="the compare's name; default: the YAML file's name without .yaml")
    model: str = Field("default", description="base model of every arm that names none: a registry name, a "
                                              "Hugging Face folder, a .gguf file or an openai:URL#NAME endpoint")
    task: str = Field(..., description="the evaluation task: a task YAML (relative to this file) or builtin:<name>")
    train_data: str = Field(..., description="the pool for demonstrations and fine-tuning: a file (relative to this "
                                             "file) or builtin:<task>?n=512&seed=1")
    train_split: Optional[str] = Field(None, description='only these records of train_data, like "0:1700": the pool '
                                       "when the test items are the rest of the same file (fine-tuned arms only)")

    @field_validator("train_split")
    @classmethod
    def _train_split_form(cls, v):
        return slice_form(v, "train_split")
    arms: list[Union[str, dict[str, Any]]] = Field(
        ..., min_length=1,
        description="zero_shot | {few_shot: {k: [1, 3], sampler: [random]}} | {lora|dora|full|qlora|dpo|orpo|grpo: {n: [32, 128]}} "
                    "| {endpoint: {model: openai:URL#NAME, k: [0]}}; any arm may set model:")
    metric: Optional[str] = Field(None, description="the metric that ranks arms; default: the task's first metric")
    limit: Optional[int] = Field(None, ge=1, description="score only the first N test items (the same N for every arm)")
    seed: int = Field(1, description="seed of the one permutation of the pool that gives the nested training sets")
    train: dict[str, Any] = Field(default_factory=dict, description="training-config keys (docs/train-config.md) for every "
                                                                    "fine-tuned arm, e.g. {train: {epochs: 2}, lora: {r: 8}}")
    safety: bool = Field(False, description="score every arm's outputs with the packaged toxicity classifier; on a "
                                            "preference task (no outputs) run the safety probe on every arm instead")
    probe_limit: int = Field(100, ge=1, description="preference task with safety: true: how many test pairs' first "
                                                    "user turns the probe asks (3 seeded samples each)")
    toxicity_threshold: float = Field(0.5, ge=0.0, le=1.0, description="an output scoring above this counts as toxic")
    batch_size: Union[int, Literal["auto"]] = Field("auto", description="evaluation batch size")
    retention: list[Union[str, "RetentionSpec"]] = Field(
        default_factory=list, description="general-ability task files scored for every arm, to see what fine-tuning "
        "cost in what the model knew: [tasks/piqa.yaml, {task: tasks/winogrande.yaml, limit: 200}]")
    retention_prompts: Union[str, "RetentionPromptsSpec", None] = Field(
        "default", description="general prompts for the drift measure (KL from the base model on its own answers): "
        "'default' (252 Self-Instruct instructions, packaged), a file, {data: FILE, limit: N, max_new_tokens: M}, "
        "or null: no drift")
    out: str = Field("runs/{name}", description="the compare folder (relative to the working directory)")


class RetentionSpec(_Strict):
    """`{task: tasks/piqa.yaml, limit: 200}`: one retention task."""

    task: str = Field(..., description="a task YAML (relative to the compare file) or builtin:<name>")
    limit: Optional[int] = Field(None, ge=1, description="score only its first N items")


class RetentionPromptsSpec(_Strict):
    """`{data: default, limit: 50, max_new_tokens: 64}`: the drift measure's prompts."""

    data: str = Field("default", description="'default' (the packaged Self-Instruct set) or a prompts file")
    limit: Optional[int] = Field(50, ge=1, description="the first N prompts (null: all)")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="length of the base model's greedy answers")


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
    tag: Optional[str] = Field(None, description="appended to the arm's id (lora-n256-TAG), to list one method and n "
                                                 "twice with other train: keys; an arm whose own train: sets replay "
                                                 "gets -replay by default")
    tune: Optional["TuneSpec"] = Field(None, description="a small sweep chosen on a validation split carved from "
                                                         "the pool (never the test items): {lr: [1e-4, 3e-4], epochs: "
                                                         "[3, 6], val: 50}; the table shows the choice and the sweep's cost")


class TuneSpec(_Strict):
    """`tune: {lr: [1e-4, 3e-4], epochs: [3, 6], val: 50}`: one training run per (lr, epochs), the best on validation."""

    lr: Optional[list[float]] = Field(None, min_length=1, description="learning rates to try (unset: the arm's own)")
    epochs: Optional[list[float]] = Field(None, min_length=1, description="epoch counts to try (unset: the arm's own)")
    val: int = Field(50, ge=8, le=2000, description="validation records carved from the end of the pool's "
                                                    "permutation, never in any arm's training subset")

    @field_validator("lr")
    @classmethod
    def _lrs(cls, v):
        if v is not None and not all(0 < x < 1 for x in v):
            raise ValueError("every learning rate must be in (0, 1), e.g. [1e-4, 3e-4]")
        return v

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v):
        if v is not None and not all(0 < x <= 1000 for x in v):
            raise ValueError("every epoch count must be in (0, 1000]")
        return v

    @model_validator(mode="after")
    def _grid(self):
        if self.lr is None and self.epochs is None:
            raise ValueError("give lr: [...] or epochs: [...] (or both) to sweep")
        if len(self.lr or [0]) * len(self.epochs or [0]) > 16:
            raise ValueError("at most 16 settings (lr x epochs); each is a full training run")
        return self


class EndpointArmSpec(_Strict):
    """`endpoint: {model: openai:http://127.0.0.1:8000/v1#name, k: [0, 3]}`: a served model, prompted."""

    model: str = Field(..., description="openai:URL#NAME (or any model string tunelab eval accepts)")
    k: Union[int, list[int]] = Field(0, description="demonstrations per prompt; a list gives one arm each")
    sampler: Union[str, list[str]] = Field("random", description="demonstration sampler")


# The page listing every key of each model (generated from these Field descriptions); a
# validation error ends by naming it.
CompareConfig.model_rebuild()  # the retention specs are declared after it
RewardSpec.model_rebuild()  # a judge_score reward's judge: block (RewardJudgeConfig) is declared after it
GRPOConfig.model_rebuild()
TrainConfig.model_rebuild()
FineTuneArmSpec.model_rebuild()  # and TuneSpec after the arm that uses it

KEY_DOCS = {TrainConfig: "docs/train-config.md", TaskConfig: "docs/tasks.md", CompareConfig: "docs/compare.md",
            RetentionSpec: "docs/compare.md", RetentionPromptsSpec: "docs/compare.md",
            PromptArmSpec: "docs/compare.md", FewShotArmSpec: "docs/compare.md", FineTuneArmSpec: "docs/compare.md",
            TuneSpec: "docs/compare.md",
            EndpointArmSpec: "docs/compare.md"}


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


def validation_message(model_cls: type[BaseModel], err: ValidationError, source: str) -> str:
    """Every problem of `err` in one line: 'source: key: what is wrong; key: ... (every key: docs/...)'."""
    ref = KEY_DOCS.get(model_cls)
    return f"{source}: " + "; ".join(problems(model_cls, err)) + (f" (every key: {ref})" if ref else "")


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
    return yaml.safe_dump(model.model_dump(mode="json", by_alias=True), sort_keys=False, allow_unicode=True)
