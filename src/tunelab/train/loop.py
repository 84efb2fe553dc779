"""The fine-tuning recipe, read top to bottom (torchtune's shape).

    Recipe(cfg)     fail fast: everything checkable before loading a model
    .setup()        accelerator → model (+ method) → data → optimizer and schedule → resume
    .train()        epoch → optimizer step → micro-batches (accumulation) → log / eval / save
    .cleanup()      final weights, summary.json (the CLI then builds report.html: tunelab.report)

`train(config)` is the public verb (`tunelab.train`). Multi-process runs come from Accelerate:
`accelerate launch --multi_gpu --num_processes 2 -m tunelab train cfg.yaml` gives DDP (gloo on a CPU-only box;
accelerate 1.15's `--cpu` launcher starts a single process unless MPI is installed);
`accelerate launch --config_file fsdp.yaml ...` gives FSDP2, on GPUs or on CPU (shard.py, docs/scale.md).

How one optimizer step is counted: the epoch's micro-batches (token-budget packs, see packing.py)
are taken `processes × grad_accum` at a time; process r takes every processes-th one of them.
The loss of each micro-batch is its token-loss SUM divided by the supervised-token count of the
whole step, summed over all processes, so any split into micro-batches and processes gives the
same loss and gradients (tests/train/test_loss.py, test_ddp.py).

Test hook: TUNELAB_FAULT=kind@step injects a fault at an optimizer step, so the reliability
paths are tested through the real code: `kill@N` SIGKILLs the process after step N,
`sigint@N` sends it SIGINT during step N, `nan@N` makes the loss of step N NaN.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from tunelab import logs, paths, runs
from tunelab.config import TrainConfig, load_train_config, to_yaml
from tunelab.errors import Interrupted, ParameterError, TunelabError
from tunelab.io import atomic_dir, atomic_write_json, atomic_write_text, check_writable
from tunelab.progress import Progress
from tunelab.progress import quiet as progress_quiet
from tunelab.models.export import ADAPTER_META_FILE  # base model name, path, weights hash, method
from tunelab.train import checkpoint as ckpt
from tunelab.train.accounting import Accounting, append_row, rewind_rows, run_summary
from tunelab.train import cost, schedule, shard
from tunelab.train.attention import DOC_ATTN
from tunelab.train.attention import register as register_doc_attention
from tunelab.train.loss import PackedCausalLM, base_causal_lm
from tunelab.train.methods import (PREFERENCE_METHODS, apply_method, check_method_available, count_parameters,
                                   is_adapter, lr_method, weights_method)
from tunelab.train.packing import check_budget, collate, model_inputs, plan_batches, row_width
from tunelab.train.preference import (Norms, PreferenceLM, PreferenceObjective, batch_forward, collate_pairs,
                                      interleave, reference_logps)
from tunelab.models.threads import choose_threads

log = logging.getLogger("tunelab.train")

FAULT_ENV = "TUNELAB_FAULT"
SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


@dataclass
class RunResult:
    run_dir: Path
    weights_dir: Path  # adapter/ (adapter methods) or model/ (full)
    summary: dict = field(default_factory=dict)
    stopped: str = "completed"  # completed | early_stopping


def _add(before: Optional[float], now: Optional[float]) -> Optional[float]:
    """Earlier launches' energy plus this launch's; None when this machine cannot measure it."""
    return None if now is None else (before or 0.0) + now


class TrainingInterrupted(Interrupted):
    """Ctrl-C during training: a checkpoint was saved; the message says how to resume."""


def oom_message(step: int, batch_tokens: int, grad_accum: int, grad_checkpointing: bool) -> str:
    """The one-line fix for CUDA out-of-memory: halve the budget, keep the batch, or recompute."""
    half = max(batch_tokens // 2, 16)
    fixes = [f"set train.batch_tokens={half} with train.grad_accum={grad_accum * 2} (same effective batch)"]
    if not grad_checkpointing:
        fixes.append("set train.grad_checkpointing=true")
    return (f"CUDA ran out of memory at step {step} with train.batch_tokens={batch_tokens}; "
            + " or ".join(fixes))


def _fault() -> tuple[str, int]:
    raw = os.environ.get(FAULT_ENV, "")
    kind, _, step = raw.partition("@")
    return (kind, int(step)) if kind and step.isdigit() else ("", -1)


def compile_layers(model: torch.nn.Module) -> int:
    """torch.compile each decoder layer in place (as torchtune does); returns how many.

    Per layer rather than the whole model: every layer has the same code, so dynamo traces one
    graph and reuses it for all of them (short compile), while the loss (chunked, data-dependent
    sizes), PEFT's wrappers and the optimizer stay eager. TUNELAB_COMPILE_BACKEND picks the
    backend (default inductor; tests use aot_eager, which needs no C++ compiler).
    """
    backend = os.environ.get("TUNELAB_COMPILE_BACKEND", "inductor")
    layers = base_causal_lm(model).get_decoder().layers
    for layer in layers:
        layer.compile(backend=backend)
    return len(layers)


class Recipe:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
                 base_dir: str | Path | None = None, config_path: str | None = None,
                 overrides: list[str] | None = None,
                 toxicity: Optional[Callable[[list[str]], Sequence[float]]] = None):
        # ---- fail fast: nothing below loads a model or data
        self.t0 = time.perf_counter()
        self.cfg, self.resume, self.base_dir, self.toxicity = cfg, resume, base_dir, toxicity
        # dpo / orpo: pairs packed with one copy of their prompt, a preference loss (preference.py)
        self.objective = PreferenceObjective(cfg.method, cfg.preference) if cfg.method in PREFERENCE_METHODS else None
        if self.objective is not None:
            for key, value in (("data.max_toxicity", cfg.data.max_toxicity), ("replay", cfg.replay)):
                if value is not None:
                    raise TunelabError(f"{key} is not supported with method: {cfg.method}; remove it (screen or "
                                       "mix the preference file itself)")
        if cfg.data.max_toxicity is not None and toxicity is None:
            raise TunelabError("data.max_toxicity needs a toxicity scorer: pass toxicity="
                               "tunelab.safety.toxicity.toxicity_scores to train() (the tunelab CLI does)")
        self.config_path = config_path or "CONFIG"
        self.overrides = list(overrides or [])  # repeated in the printed resume command
        self.run_dir = Path(cfg.out.format(name=cfg.name))
        self.adapter = is_adapter(cfg)
        cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")
        self.cuda = cuda
        check_method_available(cfg.method, "cuda" if cuda else "cpu")
        precision = cfg.train.precision
        if precision == "auto":
            precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
        if precision == "fp16" and not cuda:
            raise TunelabError("train.precision=fp16 needs a CUDA GPU; use train.precision=fp32 (or auto) on CPU")
        self.precision = precision
        check_writable(self.run_dir, setting="out")  # before any model or data loads
        if cfg.replay is not None:
            where = self._data_path(cfg.replay.data)
            if not where.startswith("builtin:") and not Path(where).is_file():
                raise TunelabError(f"replay.data: {cfg.replay.data} not found (looked at {where}); give a file of "
                                   "general instruction data, or drop replay:")
        if resume and ckpt.latest(self.run_dir) is None:
            raise ParameterError(f"{self.run_dir}: no complete checkpoint to resume from; start without {{resume}}", "resume")
        # resume: refuse settings that would make config.yaml lie about the checkpoints
        self.resume_changes = ckpt.config_changes(ckpt.latest(self.run_dir), to_yaml(cfg)) if resume else {}
        self.finished = ckpt.finished_summary(self.run_dir, ckpt.latest(self.run_dir), self.resume_changes) \
            if resume else None
        started = (self.run_dir / paths.CONFIG_FILE).exists() or (self.run_dir / paths.CHECKPOINTS_DIR).exists()
        if started and not resume and not overwrite:
            raise ParameterError(f"{self.run_dir}: run folder already exists; pass {{resume}} to continue it, "
                                 "{overwrite} to start over, or set out=<another folder>", "resume", "overwrite")
        for flag, package in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
            if getattr(cfg.log, flag):
                try:
                    __import__(package)
                except ImportError:
                    raise TunelabError(f"log.{flag}: true needs {package}; run: pip install {package}") from None
        self.fault = _fault()
        self.stop_requested = False

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        from accelerate.utils import set_seed

        cfg = self.cfg
        trackers = [t for t in ("tensorboard", "mlflow") if getattr(cfg.log, t)]
        self.accelerator = shard.accelerator(
            # cpu=True on a machine without CUDA makes a torchrun-style launch (`accelerate launch
            # --multi_gpu`, `torchrun`) run DDP over gloo instead of silently running alone
            cpu=not self.cuda,
            mixed_precision={"fp32": "no"}.get(self.precision, self.precision),
            log_with=trackers or None,
            project_dir=str(self.run_dir),
        )
        acc = self.accelerator
        self.world, self.rank, self.main = acc.num_processes, acc.process_index, acc.is_main_process
        self.sharded = shard.is_sharded(acc)  # FSDP: parameters, gradients and AdamW state split over processes
        if acc.device.type == "cpu" and self.world == 1:
            # one thread per FREE core (models/threads.py); several processes share the cores already
            self.threads = choose_threads()
        # one seed for weight init (LoRA), dropout and everything else; data order has its own
        set_seed(cfg.train.seed)
        if trackers:
            acc.init_trackers(cfg.name or "run")

        # ---- model: load, pick attention, apply the method (before the optimizer sees params)
        self._setup_model()
        # ---- data: conversations → token ids + labels → seeded per-epoch batch plans
        self._setup_data()
        # ---- optimizer and schedule (the schedule needs the step count from the data)
        self._setup_optimizer()
        folder = ckpt.latest(self.run_dir) if self.resume else None
        if folder is not None:
            # a checkpoint of N processes continues with M when the global batch stays the same
            ckpt.check_layout(folder, processes=self.world, micro_batches=self.per_step)
            if self.sharded:  # whole weights go in before sharding: fully_shard splits what it finds
                ckpt.load_weights(self.lm.model, folder, adapter=self.adapter)
        self.model, self.optimizer = acc.prepare(self.lm, self.optimizer)
        if self.objective is not None and self.objective.needs_reference:
            self._reference()  # before any step (and before a resume loads trained weights)

        self.state = ckpt.ResumeState()
        self.config_yaml = to_yaml(cfg)
        self.metrics_path = self.run_dir / paths.METRICS_FILE
        if folder is not None:
            # after prepare: weights and optimizer state load into the device-placed objects;
            # RNG last, so nothing above consumes the restored random streams
            load_optimizer = (lambda osd: shard.load_optimizer(self.model, self.optimizer, osd)) if self.sharded else None
            self.state = ckpt.load_checkpoint(folder, model=self._inner(), optimizer=self.optimizer,
                                              scheduler=self.scheduler, rank=self.rank, adapter=self.adapter,
                                              weights=not self.sharded, load_optimizer=load_optimizer)
            self._say(f"resuming from {folder} (step {self.state.step} of {self.total_steps})")
        # totals of earlier launches of a resumed run; summary.json covers the whole run
        self.wall_before, self.energy_before, self.peak_before = \
            self.state.wall_s, self.state.energy_wh, self.state.peak_mem_mib
        if self.main:
            ckpt.remove_partial(self.run_dir)
            if self.resume:
                ckpt.record_resume(self.run_dir, self.state.step, self.resume_changes)
            atomic_write_text(self.run_dir / paths.CONFIG_FILE, self.config_yaml)
            rewind_rows(self.metrics_path, self.state.step)
        acc.wait_for_everyone()
        self.energy = cost.EnergyMeter(str(self.run_dir)) if self.main else None

    def _setup_model(self) -> None:
        cfg, device = self.cfg, self.accelerator.device
        # compile: auto = on CUDA only (on CPU the compile time rarely pays back in a short run)
        self.compile = device.type == "cuda" if cfg.train.compile == "auto" else bool(cfg.train.compile)
        # flex_attention computes only the diagonal blocks of packed documents on CUDA; it has
        # no CPU backward (DESIGN §7). On CPU each packed document gets its own causal sdpa call
        # (attention.py), which skips the O(T²) block-diagonal mask; under torch.compile the
        # per-row document lengths would force a recompile every step, so compile keeps the mask.
        default_attn = "flex_attention" if device.type == "cuda" else ("sdpa" if self.compile else DOC_ATTN)
        self.attn = os.environ.get("TUNELAB_ATTN", default_attn)
        load_attn = self.attn
        if self.attn == DOC_ATTN:
            # the model loads with plain sdpa (what its saved config will say) and switches to the
            # registered per-document function for training only
            load_attn = "sdpa"
            register_doc_attention()
        self.load_attn = load_attn
        model = self._load_base(device)
        # whatever _load_base did (a benchmark's override builds its own model), the kernel must be
        # the one model_inputs() builds masks for: a BlockMask reaching sdpa is a crash
        if model.config._attn_implementation != self.attn:
            model.set_attn_implementation(self.attn)
        model.config.use_cache = False  # no KV cache while training
        if cfg.train.grad_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = apply_method(model, cfg)
        model.train()  # from_pretrained returns eval mode: dropout would be off
        self.n_params, self.n_trainable = count_parameters(model)
        emb = cost.embedding_params(base_causal_lm(model))
        self.flops_per_token = cost.flops_per_token(self.n_params, self.n_trainable, emb, adapter=self.adapter)
        self.attn_dims = cost.attention_dims(base_causal_lm(model).config)  # (layers, heads × head_dim)
        self.peak_flops = cost.device_peak_flops(device, self.precision)
        self.lm = PreferenceLM(model) if self.objective is not None else PackedCausalLM(model)
        if self.compile:
            compile_layers(model)

    def _load_base(self, device):
        """The base model and tokenizer (sets tokenizer and base_* attributes); a hook for benchmarks."""
        from tunelab.models.loading import load_model, load_tokenizer, resolve

        cfg = self.cfg
        if cfg.method == "qlora":
            from transformers import AutoModelForCausalLM

            from tunelab.train.methods import quantization_config

            name, folder = resolve(cfg.model)
            model = AutoModelForCausalLM.from_pretrained(
                folder, quantization_config=quantization_config(), dtype=torch.bfloat16,
                device_map={"": device}, attn_implementation=self.load_attn)
            self.tokenizer, self.base_name, self.base_path, self.base_sha = load_tokenizer(folder), name, folder, None
        else:
            # adapters on CUDA: the frozen base can sit in bf16 (half the memory, nothing to
            # update); full fine-tuning keeps fp32 master weights and trains under autocast
            dtype = torch.bfloat16 if (self.adapter and self.precision == "bf16") else torch.float32
            loaded = load_model(cfg.model, device=str(device), dtype=dtype, attn_implementation=self.load_attn,
                                trust_remote_code=cfg.trust_remote_code, threads=False)  # chosen in setup
            model, self.tokenizer = loaded.model, loaded.tokenizer
            self.base_name, self.base_path, self.base_sha = loaded.name, loaded.path, loaded.sha256
        return model

    def _setup_data(self) -> None:
        cfg = self.cfg
        self.train_ex, self.eval_ex = self._load_pairs() if self.objective is not None else self._load_examples()
        self.lengths = _lengths(self.train_ex)
        # epochs, lr and the batch left at auto follow from the data (schedule.py states the rule)
        self.schedule = schedule.resolve(cfg.train, lr_method(cfg), self.lengths, world=self.world,
                                         memory_budget=self._memory_budget())
        self.batch_tokens = self.schedule.batch_tokens
        check_budget(self.lengths, self.batch_tokens)
        check_budget(_lengths(self.eval_ex), self.batch_tokens)
        # fixed shapes (packing.py) where shapes cost: compiled layers and flex_attention's BlockMask
        # build once per shape, so every packed row is padded to one width (a data set smaller than
        # the budget not past its own size). Eager CPU kernels do not care about shapes: there the
        # rows keep their length and no pad token costs MLP work (3-5% of a row on alpaca data).
        self.packing = cfg.data.packing or self.objective is not None  # pairs are always packed
        fixed = self.packing and (self.compile or self.attn == "flex_attention")
        self.row_width = row_width(min(self.batch_tokens, sum(self.lengths) or 1)) if fixed else None
        self.eval_plan = plan_batches(_lengths(self.eval_ex), self.batch_tokens,
                                      seed=cfg.train.seed, packing=self.packing) if self.eval_ex else []

        # steps: every epoch's plan is deterministic, so the total is known before training
        self.per_step = self.world * self.schedule.grad_accum  # micro-batches per optimizer step
        self._plans: dict[int, list[list[int]]] = {}
        if cfg.train.max_steps:
            self.total_steps = cfg.train.max_steps
        else:
            epochs = self.schedule.epochs
            whole, frac = int(epochs), epochs - int(epochs)
            self.total_steps = sum(self.steps_in_epoch(e) for e in range(whole))
            self.total_steps += math.ceil(frac * self.steps_in_epoch(whole)) if frac else 0
        self._say(f"{len(self.train_ex)} training rows ({sum(self.lengths)} tokens), {len(self.eval_ex)} eval rows; "
                  f"{self.total_steps} optimizer steps of {self.per_step} micro-batch(es) ≤ {self.batch_tokens} tokens; "
                  f"{self.schedule.describe()}")

    def _memory_budget(self) -> Optional[int]:
        """With train.batch_tokens unset on CUDA: the micro-batch that fills free GPU memory; else None."""
        device = self.accelerator.device
        if self.cfg.train.batch_tokens is not None or device.type != "cuda":
            return None
        lm_config = base_causal_lm(self.lm.model).config
        free, _ = torch.cuda.mem_get_info(device)
        weight_bytes = 2 if (self.adapter and self.precision == "bf16") else (1 if self.cfg.method == "qlora" else 4)
        budget = cost.auto_batch_tokens(
            free, n_params=self.n_params, n_trainable=self.n_trainable, weight_bytes=weight_bytes,
            layers=lm_config.num_hidden_layers, hidden=lm_config.hidden_size,
            intermediate=getattr(lm_config, "intermediate_size", 4 * lm_config.hidden_size),
            vocab=lm_config.vocab_size, grad_checkpointing=self.cfg.train.grad_checkpointing,
            longest=max(self.lengths, default=1))
        self._say(f"train.batch_tokens unset: micro-batches of up to {budget} tokens fit {free / 2**30:.1f} GiB of "
                  "free GPU memory")
        return budget

    def _load_examples(self):
        """(train, eval) encoded examples, memory-mapped from the encoded-data cache (templates/cache.py:
        tokenised once per data file, tokenizer, template and data settings); a hook for benchmarks."""
        import logging

        from tunelab.templates.cache import prepare

        cfg, d = self.cfg, self.cfg.data
        kw = dict(format=d.format, fields=d.fields or None, skip_bad=d.skip_bad, system=d.system,
                  skip_setting="data.skip_bad=true", train_on=d.train_on, max_length=d.max_length, truncate=d.truncate)
        log = logging.getLogger("tunelab.templates")
        full = prepare(self._data_path(d.train), self.tokenizer, **kw)
        self._say(f"encoded data {'from the cache' if full.hit else 'cached'}: {full.folder}")
        candidates = list(range(len(full)))
        if d.max_toxicity is not None:  # screened in the data stage, on the records' text
            from tunelab.data.load import load_conversations
            from tunelab.data.screen import drop_above

            convs = load_conversations(self._data_path(d.train), format=d.format, fields=d.fields or None,
                                       skip_bad=d.skip_bad, system=d.system, skip_setting="data.skip_bad=true")
            kept, note = drop_above(convs, self.toxicity, d.max_toxicity)
            if note:
                self._say(note)
            keep = {id(c) for c in kept}
            candidates = [i for i, c in enumerate(convs) if id(c) in keep]
        train_idx, eval_idx, eval_ex = candidates, [], []
        if isinstance(d.eval, str):
            eval_ex = prepare(self._data_path(d.eval), self.tokenizer, **kw).trainable(log=log)
        else:
            train_idx, eval_idx = self._hold_out(candidates)
        train_ex = full.select(train_idx).trainable(log=log)
        if eval_idx:
            eval_ex = full.select(eval_idx).trainable(log=log)
        if cfg.replay is not None:  # after the hold-out: the eval loss stays the task's own
            train_ex = self._mix_replay(train_ex, kw, log)
        return train_ex, eval_ex

    def _hold_out(self, candidates: list[int]) -> tuple[list[int], list[int]]:
        """(train, eval) indices: a seeded hold-out of data.eval's fraction, the same on every process and resume."""
        d = self.cfg.data
        if not (isinstance(d.eval, float) and d.eval and len(candidates) > 1):
            return candidates, []
        order = list(range(len(candidates)))
        random.Random(self.cfg.train.seed).shuffle(order)
        held = set(order[:max(1, round(d.eval * len(candidates)))])
        return ([c for i, c in enumerate(candidates) if i not in held],
                [c for i, c in enumerate(candidates) if i in held])

    def _load_pairs(self):
        """(train, eval) preference pairs, encoded (templates/preference.py); a hook for benchmarks."""
        from tunelab.data.preference import iter_pairs
        from tunelab.templates.preference import encode_pairs

        d = self.cfg.data

        def encoded(spec: str):
            pairs = iter_pairs(self._data_path(spec), fields=d.fields or None, skip_bad=d.skip_bad, system=d.system,
                               what=f"method: {self.cfg.method}", skip_setting="data.skip_bad=true")
            return encode_pairs(self.tokenizer, pairs, max_length=d.max_length)

        pairs = encoded(d.train)
        if isinstance(d.eval, str):
            return pairs, encoded(d.eval)
        train_idx, eval_idx = self._hold_out(list(range(len(pairs))))
        return [pairs[i] for i in train_idx], [pairs[i] for i in eval_idx]

    def _reference(self) -> None:
        """DPO's reference log-probabilities of every train and eval pair: computed once, kept with the run.

        A resumed run reads them back, so they never change across launches (and never see trained weights).
        """
        path = self.run_dir / paths.REFERENCE_FILE
        self.reference_s = 0.0
        if self.resume and path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            self.ref_train = torch.tensor(data["train"], dtype=torch.float32).reshape(-1, 2)
            self.ref_eval = torch.tensor(data["eval"], dtype=torch.float32).reshape(-1, 2)
            if len(self.ref_train) != len(self.train_ex) or len(self.ref_eval) != len(self.eval_ex):
                raise TunelabError(f"{path} holds {len(self.ref_train)} + {len(self.ref_eval)} pairs but the data "
                                   f"has {len(self.train_ex)} + {len(self.eval_ex)}; the data changed since the run "
                                   "began: start over with --overwrite")
            return
        t0 = time.perf_counter()
        kw = dict(impl=self.attn, device=self.accelerator.device, pad_id=self.tokenizer.pad_token_id or 0,
                  adapter=self.adapter, width=self.row_width)
        try:
            self.ref_train = reference_logps(self.accelerator.unwrap_model(self.model), self.train_ex, self.plan(0), **kw)
            self.ref_eval = reference_logps(self.accelerator.unwrap_model(self.model), self.eval_ex, self.eval_plan, **kw)
        except torch.OutOfMemoryError:
            half = max(self.batch_tokens // 2, 16)
            raise TunelabError(f"the reference pass of method: dpo ran out of memory with train.batch_tokens="
                               f"{self.batch_tokens}; set train.batch_tokens={half} (and train.grad_accum="
                               f"{self.schedule.grad_accum * 2}), or preference.weights=lora") from None
        if self.main:
            atomic_write_json(path, {"train": self.ref_train.tolist(), "eval": self.ref_eval.tolist()})
        self.reference_s = time.perf_counter() - t0
        self._say(f"reference log-probabilities of {len(self.train_ex) + len(self.eval_ex)} pairs in "
                  f"{self.reference_s:.1f} s -> {path}")

    def _mix_replay(self, train_ex, kw: dict, log):
        """The task rows followed by replay records (replay.py: the ratio counts examples)."""
        from tunelab.templates.cache import prepare
        from tunelab.train.replay import Mixed, draw, replay_count

        r = self.cfg.replay
        pool = prepare(self._data_path(r.data), self.tokenizer, **{**kw, "format": r.format, "fields": None})
        pool = pool.trainable(log=log)
        k = replay_count(len(train_ex), r.ratio)
        mixed = Mixed(train_ex, pool.select(draw(len(pool), k, self.cfg.train.seed)))
        token_share = float(mixed.replay.lengths.sum()) / max(float(mixed.lengths.sum()), 1.0)
        self._say(f"replay: {k} of {len(pool)} records of {r.data} mixed into {len(train_ex)} task rows "
                  f"({k / len(mixed):.0%} of the examples, {token_share:.0%} of the tokens)")
        return mixed

    def _data_path(self, spec: str) -> str:
        """A relative data path is looked up next to the config file first, then in the cwd."""
        p = Path(spec)
        if spec.startswith("builtin:") or p.is_absolute() or self.base_dir is None:
            return spec
        beside = Path(self.base_dir) / p
        return str(beside) if beside.exists() or not p.exists() else spec

    def plan(self, epoch: int) -> list[list[int]]:
        if epoch not in self._plans:
            self._plans[epoch] = plan_batches(self.lengths, self.batch_tokens, seed=self.cfg.train.seed,
                                              epoch=epoch, packing=self.packing)
        return self._plans[epoch]

    def steps_in_epoch(self, epoch: int) -> int:
        return math.ceil(len(self.plan(epoch)) / self.per_step)

    def _setup_optimizer(self) -> None:
        from transformers import get_scheduler

        t = self.cfg.train
        params = [p for p in self.lm.parameters() if p.requires_grad]
        # no weight decay on vectors (norms, biases, DoRA magnitudes): the usual AdamW practice
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": t.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        fused = self.accelerator.device.type == "cuda"  # one kernel for all params; CUDA only
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.schedule.lr, fused=fused or None)
        warmup = int(round(t.warmup * self.total_steps)) if t.warmup < 1 else int(t.warmup)
        self.scheduler = get_scheduler(SCHEDULES[t.schedule], self.optimizer, num_warmup_steps=warmup,
                                       num_training_steps=self.total_steps)

    # ------------------------------------------------------------------ train
    def train(self) -> RunResult:
        cfg, acc, state = self.cfg, self.accelerator, self.state
        stopped = "completed"
        progress = self._progress()
        old_handler = self._install_sigint()
        loop_start = time.perf_counter() - state.train_s
        self.acct = Accounting(self.flops_per_token, self.attn_dims, self.peak_flops, self.world)
        try:
            while state.step < self.total_steps:
                plan = self.plan(state.epoch)
                first = state.step_in_epoch * self.per_step
                step_batches = plan[first:first + self.per_step]
                if not step_batches:  # epoch exhausted (max_steps beyond the epochs)
                    state.epoch, state.step_in_epoch = state.epoch + 1, 0
                    continue
                t_step, compiled_before = time.perf_counter(), cost.compile_count()
                lr = self.scheduler.get_last_lr()[0]  # the rate this step uses (step() moves to the next)
                loss, n_sup, n_tok, grad_norm = self._optimizer_step(step_batches, state.step + 1)
                state.step += 1
                state.step_in_epoch += 1
                if state.step_in_epoch >= self.steps_in_epoch(state.epoch):
                    state.epoch, state.step_in_epoch = state.epoch + 1, 0
                dt = time.perf_counter() - t_step
                step_flops = self.acct.step(state, n_tok=n_tok, n_sup=n_sup, attn_pairs=self.step_pairs, dt=dt,
                                            compiled=cost.compile_count() > compiled_before)
                state.train_s = time.perf_counter() - loop_start
                epoch = round(state.epoch + state.step_in_epoch / max(self.steps_in_epoch(state.epoch), 1), 4)
                row = {**self.acct.row(state, epoch=epoch, loss=loss, lr=lr, grad_norm=grad_norm, n_tok=n_tok, dt=dt,
                                       step_flops=step_flops, device=acc.device),
                       **self.step_stats, **self.acct.rates(state)}
                if self.world > 1:  # how evenly the step's supervised tokens fell on the processes
                    row["supervised_per_process"] = self.sup_per_process
                best_now = False
                if self.eval_ex and (state.step % cfg.train.eval_every == 0 or state.step == self.total_steps):
                    row["eval_loss"] = self._evaluate()
                    row.update(getattr(self, "eval_stats", {}))
                    best_now, stop = self._early_stopping(row["eval_loss"])
                    if stop:
                        stopped = "early_stopping"
                # every log_every-th step, plus every eval and the last step (the summary and the
                # report read the eval loss from these lines)
                if state.step % cfg.train.log_every == 0 or "eval_loss" in row or state.step == self.total_steps:
                    self._log(row)
                tps = row["tokens_per_s"]
                progress.update(state.step, loss=f"{loss:.4f}", **{"tok/s": f"{tps:,.0f}" if tps else "-"})

                interrupted = self._agree(self.stop_requested)
                if state.step % cfg.train.save_every == 0 or best_now or interrupted:
                    self._save()
                if self.fault == ("kill", state.step):
                    os.kill(os.getpid(), signal.SIGKILL)
                if interrupted:
                    folder = self.run_dir / paths.CHECKPOINTS_DIR / f"step-{state.step}"
                    raise TrainingInterrupted(
                        f"at step {state.step}; checkpoint saved to {folder}; resume with: "
                        + shlex.join(["tunelab", "train", self.config_path, *self.overrides, "--resume"]))
                if stopped == "early_stopping":
                    self._say(f"early stopping at step {state.step}: eval loss did not improve for "
                              f"{cfg.train.early_stopping.patience} evaluations; best step {state.best_step}")
                    break
        finally:
            progress.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        state.train_s = time.perf_counter() - loop_start
        return self.cleanup(stopped)

    def _optimizer_step(self, step_batches: list[list[int]], step: int):
        """One optimizer step over this process's share of the step's micro-batches."""
        acc, cfg = self.accelerator, self.cfg
        mine = step_batches[self.rank::self.world]
        weights = [1.0] * len(mine)
        # a short last step leaves some processes one micro-batch short (or without any): they run
        # a copy with weight 0, so every process makes the same collective calls (DDP's gradient
        # all-reduce, FSDP's per-layer all-gathers in every forward and backward)
        pad = math.ceil(len(step_batches) / self.world) - len(mine)
        mine, weights = mine + step_batches[:1] * pad, weights + [0.0] * pad
        batches = [self._collate([self.train_ex[i] for i in b]) for b in mine]
        mine_sup = sum(b.n_supervised * w for b, w in zip(batches, weights))
        counts = torch.zeros(5 + self.world, dtype=torch.float64)
        counts[:5] = torch.tensor([mine_sup,
                                   sum(b.n_tokens * w for b, w in zip(batches, weights)),
                                   sum(b.attn_pairs * w for b, w in zip(batches, weights)),
                                   sum(getattr(b, "n_pairs", 0) * w for b, w in zip(batches, weights)),
                                   sum(getattr(b, "n_chosen", 0) * w for b, w in zip(batches, weights))])
        counts[5 + self.rank] = mine_sup  # summed over processes: each one's count in its own slot
        counts = [int(x) for x in self._sum(counts)]
        n_sup, n_tok, self.step_pairs, n_pairs, n_chosen = counts[:5]  # all processes
        self.sup_per_process = counts[5:]
        norms = Norms(max(n_pairs, 1), max(n_chosen, 1))  # preference: the step's global denominators
        loss_sum = torch.zeros((), dtype=torch.float32, device=acc.device)
        self.step_stats = {}
        try:
            for i, (batch, w) in enumerate(zip(batches, weights)):
                batch = batch.to(acc.device)
                last = i == len(batches) - 1
                # gradients are all-reduced once per step, on the last micro-batch only
                with contextlib.nullcontext() if last else acc.no_sync(self.model):
                    if self.objective is None:
                        ce_sum, _ = self.model(**model_inputs(batch, self.attn), targets=batch.targets)
                    else:  # the share of the step's mean pair loss, × n_sup so the lines below divide it back
                        part, stats = self._pair_loss(batch, mine[i], norms, self.ref_train_of)
                        ce_sum = part * max(n_sup, 1)
                        self._add_stats(stats, w)
                    if self.fault == ("nan", step):
                        ce_sum = ce_sum * float("nan")
                    if self.fault == ("sigint", step) and i == 0:
                        os.kill(os.getpid(), signal.SIGINT)
                    # × world: DDP averages gradients over processes; the global count already did
                    acc.backward(ce_sum * (w * self.world / max(n_sup, 1)))
                loss_sum += ce_sum.detach() * w
        except torch.OutOfMemoryError:
            raise TunelabError(oom_message(step, self.batch_tokens, self.schedule.grad_accum,
                                           cfg.train.grad_checkpointing)) from None
        loss = float(self._sum(loss_sum.reshape(1).double())[0]) / max(n_sup, 1)
        self.step_stats = self._mean_stats(self.step_stats, n_pairs)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.train.max_grad_norm:
            grad_norm = float(acc.clip_grad_norm_(params, cfg.train.max_grad_norm))
        elif self.sharded:
            grad_norm = shard.grad_norm(params)
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            last = ckpt.latest(self.run_dir)
            what = "loss" if not math.isfinite(loss) else "gradient norm"
            raise TunelabError(
                f"{what} became {loss if what == 'loss' else grad_norm} at step {step}; stopped without applying it; "
                f"last good checkpoint: {last if last else 'none yet (lower train.save_every)'}; "
                "lower train.lr or check the data, then continue with --resume")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, n_sup, n_tok, grad_norm

    def _collate(self, examples):
        """One micro-batch of SFT rows (packing.py) or of preference pairs (preference.py)."""
        pad_id = self.tokenizer.pad_token_id or 0
        if self.objective is not None:
            return collate_pairs(examples, pad_id=pad_id, width=self.row_width)
        return collate(examples, packing=self.cfg.data.packing, pad_id=pad_id, width=self.row_width)

    def ref_train_of(self, idx: list[int]) -> Optional[torch.Tensor]:
        return interleave(self.ref_train[idx]) if self.objective.needs_reference else None

    def ref_eval_of(self, idx: list[int]) -> Optional[torch.Tensor]:
        return interleave(self.ref_eval[idx]) if self.objective.needs_reference else None

    def _pair_loss(self, batch, idx: list[int], norms: Norms, ref_of) -> tuple[torch.Tensor, dict]:
        """A micro-batch of pairs: its share of the step's loss, and its statistics (sums over its pairs)."""
        logps = batch_forward(self.model, batch, self.attn)  # (2n,) summed answer log-probs
        ref = ref_of(idx)
        return self.objective(logps, batch.seq_tokens, norms, None if ref is None else ref.to(logps.device))

    def _add_stats(self, stats: dict, w: float) -> None:
        for k, v in stats.items():
            self.step_stats[k] = self.step_stats.get(k, 0.0) + float(v) * w

    def _mean_stats(self, sums: dict, n_pairs: int) -> dict:
        """Per-pair means over all processes of the statistics' sums (TRL's rewards/*, logps/*)."""
        if not sums:
            return {}
        keys = sorted(sums)
        total = self._sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
        return {k: float(v) / max(n_pairs, 1) for k, v in zip(keys, total.tolist())}

    @torch.no_grad()
    def _evaluate_pairs(self) -> float:
        """Mean preference loss on the held-out pairs (eval_rewards/* and eval_logps/* go to the row)."""
        self.model.eval()
        mine = self.eval_plan[self.rank::self.world]
        n_pairs = len(self.eval_ex)
        n_chosen = sum(len(e.chosen) for e in self.eval_ex)
        norms = Norms(max(n_pairs, 1), max(n_chosen, 1))
        loss = torch.zeros(1, dtype=torch.float64)
        self.step_stats_eval, saved = {}, self.step_stats
        self.step_stats = {}
        mine = [(b, 1.0) for b in mine]
        if self.sharded:  # same number of forwards everywhere: each one all-gathers the layers
            mine += [(self.eval_plan[0], 0.0)] * (math.ceil(len(self.eval_plan) / self.world) - len(mine))
        for b, w in mine:
            batch = self._collate([self.eval_ex[i] for i in b]).to(self.accelerator.device)
            part, stats = self._pair_loss(batch, b, norms, self.ref_eval_of)
            loss += float(part) * w
            self._add_stats(stats, w)
        self.eval_stats = {"eval_" + k: v for k, v in self._mean_stats(self.step_stats, n_pairs).items()}
        self.step_stats = saved
        self.model.train()
        return float(self._sum(loss)[0])

    @torch.no_grad()
    def _evaluate(self) -> float:
        """Mean token loss on the held-out rows; each process takes every world-th batch."""
        if self.objective is not None:
            return self._evaluate_pairs()
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.accelerator.device)
        mine = [(b, 1.0) for b in self.eval_plan[self.rank::self.world]]
        if self.sharded:  # same number of forwards everywhere: each one all-gathers the layers
            mine += [(self.eval_plan[0], 0.0)] * (math.ceil(len(self.eval_plan) / self.world) - len(mine))
        for b, w in mine:
            batch = self._collate([self.eval_ex[i] for i in b]).to(self.accelerator.device)
            ce_sum, n = self.model(**model_inputs(batch, self.attn), targets=batch.targets)
            total += torch.tensor([float(ce_sum) * w, n * w], dtype=torch.float64, device=total.device)
        self.model.train()
        s, n = self._sum(total).tolist()
        return s / max(n, 1)

    def _early_stopping(self, eval_loss: float) -> tuple[bool, bool]:
        """(is this the best eval so far, should training stop)."""
        st, patience = self.state, self.cfg.train.early_stopping.patience
        if st.best_eval_loss is None or eval_loss < st.best_eval_loss:
            st.best_eval_loss, st.best_step, st.evals_without_improvement = eval_loss, st.step, 0
            return True, False
        st.evals_without_improvement += 1
        return False, patience is not None and st.evals_without_improvement >= patience

    # ------------------------------------------------------------------ saving and logging
    def _inner(self):
        """The PEFT or plain model without DDP / compile wrappers."""
        return self.accelerator.unwrap_model(self.model).model

    def _save(self) -> None:
        from accelerate.utils import gather_object

        self.state.wall_s = time.perf_counter() - self.t0 + self.wall_before
        self.state.peak_mem_mib = self._peak_mib()
        self.state.energy_wh = _add(self.energy_before, self.energy.so_far_wh() if self.energy else None)
        rngs = gather_object([ckpt.rng_state()])  # every process's streams, in rank order
        self.state.processes, self.state.micro_batches = self.world, self.per_step
        # sharded: every process sends its shards; the main process writes them whole
        weights, optim = shard.full_states(self.model, self.optimizer) if self.sharded else (None, None)
        if self.main:
            try:
                ckpt.save_checkpoint(self.run_dir, model=self._inner(), optimizer=self.optimizer,
                                     model_state=weights, optimizer_state=optim,
                                     scheduler=self.scheduler, state=self.state, rng=rngs,
                                     config_yaml=self.config_yaml, template=self.tokenizer.chat_template or "",
                                     adapter=self.adapter)
            except OSError as e:
                prev = ckpt.latest(self.run_dir)
                raise TunelabError(
                    f"could not save checkpoint step-{self.state.step} ({e.strerror or e}); "
                    f"the previous checkpoint {prev or '(none)'} is intact; free disk space and resume with --resume"
                ) from None
            ckpt.prune(self.run_dir, keep=self.cfg.train.keep_checkpoints, best_step=self.state.best_step)
        self.accelerator.wait_for_everyone()

    def _log(self, row: dict) -> None:
        if not self.main:
            return
        append_row(self.metrics_path, row)
        if self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row["step"])

    def _peak_mib(self) -> float:
        """Peak memory of the whole run: per process (mean over processes), max over launches."""
        now = self._sum(torch.tensor([cost.peak_memory_mib(self.accelerator.device)])).tolist()[0] / self.world
        return max(now, self.peak_before or 0.0)

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a small tensor over processes (identity with one process)."""
        if self.world == 1:
            return t
        return self.accelerator.reduce(t.to(self.accelerator.device), reduction="sum").cpu()

    def _agree(self, flag: bool) -> bool:
        """True on every process if it is True on any (so all save and stop together)."""
        return bool(self._sum(torch.tensor([float(flag)]))[0] > 0)

    def _install_sigint(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self.stop_requested:  # a second Ctrl-C: stop now, without a checkpoint
                raise TrainingInterrupted(
                    "stopped at once, without saving this step; the last saved checkpoint (if any) resumes with: "
                    + shlex.join(["tunelab", "train", self.config_path, *self.overrides, "--resume"]))
            self.stop_requested = True
            self._say("Ctrl-C: finishing this step and saving a checkpoint (press again to abort)")

        return signal.signal(signal.SIGINT, handler)

    def _say(self, msg: str) -> None:
        if getattr(self, "main", True):
            log.info(msg)
            if os.environ.get("TUNELAB_QUIET") != "1":
                print(msg, file=sys.stderr, flush=True)

    def _progress(self) -> Progress:
        """A bar on a terminal, a line per ~10% or 30 s in a log; silent when quiet or not rank 0."""
        return Progress("train", self.total_steps, unit="steps", done=self.state.step,
                        enabled=self.main and not progress_quiet())

    # ------------------------------------------------------------------ cleanup
    def cleanup(self, stopped: str) -> RunResult:
        acc = self.accelerator
        weights_dir = self.run_dir / (paths.ADAPTER_DIR if self.adapter else paths.MODEL_DIR)
        energy = _add(self.energy_before, self.energy.stop_wh() if self.energy else None)
        peak = self._peak_mib()
        whole = shard.full_model_state(self.model) if self.sharded else None
        if self.main:
            with atomic_dir(weights_dir) as tmp:
                ckpt.save_pretrained(self._inner(), tmp, whole)
                self.tokenizer.save_pretrained(tmp)
                if self.adapter:
                    atomic_write_json(tmp / ADAPTER_META_FILE, {
                        "base_model": self.base_name, "base_path": str(self.base_path),
                        "base_sha256": self.base_sha, "method": weights_method(self.cfg),
                        **({"preference": self.cfg.method} if self.objective is not None else {})})
            summary = run_summary(self, stopped, peak, energy)
            atomic_write_json(self.run_dir / paths.SUMMARY_FILE, summary)
        else:
            summary = {}
        acc.wait_for_everyone()
        acc.end_training()
        return RunResult(self.run_dir, weights_dir, summary, stopped)


def _lengths(examples) -> list[int]:
    """Token count per example: read from the cache's offsets, or from a plain list of Encoded."""
    lengths = getattr(examples, "lengths", None)
    if lengths is not None:
        return lengths.tolist()
    return [e.length if hasattr(e, "length") else len(e.input_ids) for e in examples]  # pairs: preference.py


def train(config, overrides: list[str] | None = None, *, resume: bool = False, overwrite: bool = False,
          base_dir: str | Path | None = None,
          toxicity: Optional[Callable[[list[str]], Sequence[float]]] = None) -> RunResult:
    """Fine-tune per a TrainConfig, a config dict or a YAML path (keys: docs/train-config.md).

    `toxicity(texts) -> scores` screens the training records when data.max_toxicity is set (e.g.
    tunelab.safety.toxicity.toxicity_scores). Returns the RunResult (the run folder: docs/run-folder.md).
    """
    path = None
    if not isinstance(config, TrainConfig):
        path = None if isinstance(config, dict) else str(config)
        if base_dir is None and path is not None:
            base_dir = Path(path).resolve().parent
        config = load_train_config(config, overrides)
    recipe = Recipe(config, resume=resume, overwrite=overwrite, base_dir=base_dir, config_path=path,
                    overrides=overrides, toxicity=toxicity)
    if recipe.finished is not None:  # --resume of a finished run: nothing to do, nothing rewritten
        weights = recipe.run_dir / (paths.ADAPTER_DIR if recipe.adapter else paths.MODEL_DIR)
        return RunResult(recipe.run_dir, weights, recipe.finished, stopped="already_finished")
    recipe.setup()  # lines logged while the model loads are held and written when the log opens
    with logs.run_log(recipe.run_dir if recipe.main else None):  # other libraries' log lines: run_dir/log.txt
        rid = None
        if recipe.main:  # one registry row per run, written by the main process
            rid = runs.start("train", name=config.name, path=recipe.run_dir, task=config.data.train, model=config.model)
        try:
            result = recipe.train()
        except BaseException as e:
            runs.finish(rid, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
            raise
    s = result.summary
    loss_key = "best_eval_loss" if s.get("best_eval_loss") is not None else "final_loss"
    runs.finish(rid, "completed" if result.stopped == "completed" else "stopped", metric=loss_key, value=s.get(loss_key))
    return result


__all__ = ["train", "RunResult", "TrainingInterrupted", "Recipe", "oom_message"]
