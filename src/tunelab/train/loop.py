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
import logging
import math
import os
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
from tunelab.errors import Interrupted, TunelabError
from tunelab.io import atomic_write_json, atomic_write_text
from tunelab.progress import Progress
from tunelab.progress import quiet as progress_quiet
from tunelab.models.threads import choose_threads
from tunelab.train import checkpoint as ckpt
from tunelab.train import cost, inputs, schedule, shard
from tunelab.train.accounting import Accounting, add_energy, append_row, rewind_rows, run_summary, step_counts
from tunelab.train.attention import DOC_ATTN
from tunelab.train.attention import register as register_doc_attention
from tunelab.train.checks import check_run_folder, check_settings, oom_message
from tunelab.train.loss import PackedCausalLM, base_causal_lm
from tunelab.train.methods import PREFERENCE_METHODS, apply_method, count_parameters, is_adapter, lr_method, weights_method
from tunelab.train.model import compile_layers, load_base
from tunelab.train.packing import check_budget, collate, model_inputs, plan_batches, row_width
from tunelab.train.preference import Norms, PairRun, PreferenceLM, PreferenceObjective, collate_pairs, reference_logps

log = logging.getLogger("tunelab.train")

FAULT_ENV = "TUNELAB_FAULT"
SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


@dataclass
class RunResult:
    run_dir: Path
    weights_dir: Path  # adapter/ (adapter methods) or model/ (full)
    summary: dict = field(default_factory=dict)
    stopped: str = "completed"  # completed | early_stopping


class TrainingInterrupted(Interrupted):
    """Ctrl-C during training: a checkpoint was saved; the message says how to resume."""


def _fault() -> tuple[str, int]:
    raw = os.environ.get(FAULT_ENV, "")
    kind, _, step = raw.partition("@")
    return (kind, int(step)) if kind and step.isdigit() else ("", -1)


class Recipe:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
                 base_dir: str | Path | None = None, config_path: str | None = None,
                 overrides: list[str] | None = None,
                 toxicity: Optional[Callable[[list[str]], Sequence[float]]] = None):
        # ---- fail fast: nothing below loads a model or data
        self.t0 = time.perf_counter()
        self.cfg, self.resume, self.base_dir, self.toxicity = cfg, resume, base_dir, toxicity
        self.resume_command = shlex.join(["tunelab", "train", config_path or "CONFIG", *(overrides or []), "--resume"])
        self.run_dir = Path(cfg.out.format(name=cfg.name))
        self.adapter = is_adapter(cfg)
        self.cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")
        self.precision = check_settings(cfg, cuda=self.cuda, base_dir=base_dir, toxicity=toxicity)
        self.resume_changes, self.finished = check_run_folder(cfg, self.run_dir, resume=resume, overwrite=overwrite)
        # dpo / orpo: pairs packed with one copy of their prompt, a preference loss (preference.py)
        self.pairs = PairRun(PreferenceObjective(cfg.method, cfg.preference)) if cfg.method in PREFERENCE_METHODS \
            else None
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
        if self.pairs is not None and self.pairs.objective.needs_reference:
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
        self.lm = PreferenceLM(model) if self.pairs is not None else PackedCausalLM(model)
        if self.compile:
            compile_layers(model)

    def _load_base(self, device):
        """The base model and tokenizer (sets tokenizer and base_* attributes); a hook for benchmarks."""
        base = load_base(self.cfg, device, adapter=self.adapter, precision=self.precision, attn=self.load_attn)
        self.tokenizer, self.base_name, self.base_path, self.base_sha = base.tokenizer, base.name, base.path, base.sha256
        return base.model

    def _setup_data(self) -> None:
        cfg = self.cfg
        self.train_ex, self.eval_ex = self._load_pairs() if self.pairs is not None else self._load_examples()
        self.lengths = inputs.lengths(self.train_ex)
        # epochs, lr and the batch left at auto follow from the data (schedule.py states the rule)
        self.schedule = schedule.resolve(cfg.train, lr_method(cfg), self.lengths, world=self.world,
                                         memory_budget=self._memory_budget())
        self.batch_tokens = self.schedule.batch_tokens
        check_budget(self.lengths, self.batch_tokens)
        check_budget(inputs.lengths(self.eval_ex), self.batch_tokens)
        # fixed shapes (packing.py) where shapes cost: compiled layers and flex_attention's BlockMask
        # build once per shape, so every packed row is padded to one width (a data set smaller than
        # the budget not past its own size). Eager CPU kernels do not care about shapes: there the
        # rows keep their length and no pad token costs MLP work (3-5% of a row on alpaca data).
        self.packing = cfg.data.packing or self.pairs is not None  # pairs are always packed
        fixed = self.packing and (self.compile or self.attn == "flex_attention")
        self.row_width = row_width(min(self.batch_tokens, sum(self.lengths) or 1)) if fixed else None
        self.eval_plan = plan_batches(inputs.lengths(self.eval_ex), self.batch_tokens,
                                      seed=cfg.train.seed, packing=self.packing) if self.eval_ex else []

        # steps: every epoch's plan is deterministic, so the total is known before training
        self.per_step = self.world * self.schedule.grad_accum  # micro-batches per optimizer step
        self._plans: dict[int, list[list[int]]] = {}
        self.total_steps = schedule.total_steps(self.schedule.epochs, self.steps_in_epoch, cfg.train.max_steps)
        self._say(f"{len(self.train_ex)} training rows ({sum(self.lengths)} tokens), {len(self.eval_ex)} eval rows; "
                  f"{self.total_steps} optimizer steps of {self.per_step} micro-batch(es) ≤ {self.batch_tokens} tokens; "
                  f"{self.schedule.describe()}")

    def _memory_budget(self) -> Optional[int]:
        """With train.batch_tokens unset on CUDA: the micro-batch that fills free GPU memory; else None."""
        if self.cfg.train.batch_tokens is not None or self.accelerator.device.type != "cuda":
            return None
        weight_bytes = 2 if (self.adapter and self.precision == "bf16") else (1 if self.cfg.method == "qlora" else 4)
        budget, free = cost.fill_free_memory(
            base_causal_lm(self.lm.model).config, self.accelerator.device, n_params=self.n_params,
            n_trainable=self.n_trainable, weight_bytes=weight_bytes, grad_checkpointing=self.cfg.train.grad_checkpointing,
            longest=max(self.lengths, default=1))
        self._say(f"train.batch_tokens unset: micro-batches of up to {budget} tokens fit {free / 2**30:.1f} GiB of "
                  "free GPU memory")
        return budget

    def _load_examples(self):
        """(train, eval) encoded examples (inputs.py); a hook for benchmarks."""
        return inputs.load_examples(self.cfg, self.tokenizer, base_dir=self.base_dir, say=self._say,
                                    toxicity=self.toxicity)

    def _load_pairs(self):
        """(train, eval) preference pairs (inputs.py); a hook for benchmarks."""
        return inputs.load_pairs(self.cfg, self.tokenizer, base_dir=self.base_dir)

    def _reference(self) -> None:
        """DPO's reference log-probabilities of every train and eval pair: computed once, before any
        step, kept with the run; a resumed run reads them back (so they never see trained weights)."""
        path, t0 = self.run_dir / paths.REFERENCE_FILE, time.perf_counter()
        model = self.accelerator.unwrap_model(self.model)
        kw = dict(impl=self.attn, device=self.accelerator.device, pad_id=self.tokenizer.pad_token_id or 0,
                  adapter=self.adapter, width=self.row_width)

        def compute():
            try:
                return (reference_logps(model, self.train_ex, self.plan(0), **kw),
                        reference_logps(model, self.eval_ex, self.eval_plan, **kw))
            except torch.OutOfMemoryError:
                half = max(self.batch_tokens // 2, 16)
                raise TunelabError(f"the reference pass of method: dpo ran out of memory with train.batch_tokens="
                                   f"{self.batch_tokens}; set train.batch_tokens={half} (and train.grad_accum="
                                   f"{self.schedule.grad_accum * 2}), or preference.weights=lora") from None

        computed = self.pairs.reference(path, n_train=len(self.train_ex), n_eval=len(self.eval_ex),
                                        resume=self.resume, write=self.main, compute=compute)
        self.reference_s = time.perf_counter() - t0 if computed else 0.0
        if computed:
            self._say(f"reference log-probabilities of {len(self.train_ex) + len(self.eval_ex)} pairs in "
                      f"{self.reference_s:.1f} s -> {path}")


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
        # a bar on a terminal, a line per ~10% or 30 s in a log; silent when quiet or not rank 0
        progress = Progress("train", self.total_steps, unit="steps", done=state.step,
                            enabled=self.main and not progress_quiet())
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
                        f"at step {state.step}; checkpoint saved to {folder}; resume with: " + self.resume_command)
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
        # the step's counts over all processes: supervised and fed tokens, attention pairs, preference pairs
        c = step_counts(batches, weights, rank=self.rank, world=self.world, reduce=self._sum)
        n_sup, n_tok, self.step_pairs, n_pairs, n_chosen, self.sup_per_process = c
        norms = Norms(max(n_pairs, 1), max(n_chosen, 1))  # preference: the step's global denominators
        loss_sum = torch.zeros((), dtype=torch.float32, device=acc.device)
        try:
            for i, (batch, w) in enumerate(zip(batches, weights)):
                batch = batch.to(acc.device)
                last = i == len(batches) - 1
                # gradients are all-reduced once per step, on the last micro-batch only
                with contextlib.nullcontext() if last else acc.no_sync(self.model):
                    if self.pairs is None:
                        ce_sum, _ = self.model(**model_inputs(batch, self.attn), targets=batch.targets)
                    else:  # the share of the step's mean pair loss, × n_sup so the lines below divide it back
                        ce_sum = self.pairs.loss(self.model, batch, mine[i], norms, self.attn, "train", w) * max(n_sup, 1)
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
        self.step_stats = self.pairs.means(n_pairs, self._sum) if self.pairs is not None else {}
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
        if self.pairs is not None:
            return collate_pairs(examples, pad_id=pad_id, width=self.row_width)
        return collate(examples, packing=self.cfg.data.packing, pad_id=pad_id, width=self.row_width)


    @torch.no_grad()
    def _evaluate(self) -> float:
        """Mean loss on the held-out rows (token loss) or pairs (preference loss; eval_rewards/* and
        eval_logps/* go to the row); each process takes every world-th batch."""
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64)
        norms = Norms(max(len(self.eval_ex), 1), max(sum(len(getattr(e, "chosen", ())) for e in self.eval_ex), 1)) \
            if self.pairs is not None else None
        mine = [(b, 1.0) for b in self.eval_plan[self.rank::self.world]]
        if self.sharded:  # same number of forwards everywhere: each one all-gathers the layers
            mine += [(self.eval_plan[0], 0.0)] * (math.ceil(len(self.eval_plan) / self.world) - len(mine))
        for b, w in mine:
            batch = self._collate([self.eval_ex[i] for i in b]).to(self.accelerator.device)
            if self.pairs is None:
                ce_sum, n = self.model(**model_inputs(batch, self.attn), targets=batch.targets)
            else:  # already the mean over the held-out pairs: the share of this batch
                ce_sum, n = self.pairs.loss(self.model, batch, b, norms, self.attn, "eval", w), 0
            total += torch.tensor([float(ce_sum) * w, n * w], dtype=torch.float64)
        self.model.train()
        if self.pairs is not None:
            self.eval_stats = {"eval_" + k: v for k, v in self.pairs.means(len(self.eval_ex), self._sum).items()}
        s, n = self._sum(total).tolist()
        return s / max(n, 1) if self.pairs is None else s

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
        self.state.energy_wh = add_energy(self.energy_before, self.energy.so_far_wh() if self.energy else None)
        rngs = gather_object([ckpt.rng_state()])  # every process's streams, in rank order
        self.state.processes, self.state.micro_batches = self.world, self.per_step
        # sharded: every process sends its shards; the main process writes them whole
        weights, optim = shard.full_states(self.model, self.optimizer) if self.sharded else (None, None)
        if self.main:
            ckpt.save_checkpoint(self.run_dir, model=self._inner(), optimizer=self.optimizer,
                                 model_state=weights, optimizer_state=optim, scheduler=self.scheduler,
                                 state=self.state, rng=rngs, config_yaml=self.config_yaml,
                                 template=self.tokenizer.chat_template or "", adapter=self.adapter)
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
                    + self.resume_command)
            self.stop_requested = True
            self._say("Ctrl-C: finishing this step and saving a checkpoint (press again to abort)")

        return signal.signal(signal.SIGINT, handler)

    def _say(self, msg: str) -> None:
        if getattr(self, "main", True):
            log.info(msg)
            if os.environ.get("TUNELAB_QUIET") != "1":
                print(msg, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ cleanup
    def cleanup(self, stopped: str) -> RunResult:
        acc = self.accelerator
        weights_dir = self.run_dir / (paths.ADAPTER_DIR if self.adapter else paths.MODEL_DIR)
        energy = add_energy(self.energy_before, self.energy.stop_wh() if self.energy else None)
        peak = self._peak_mib()
        whole = shard.full_model_state(self.model) if self.sharded else None
        if self.main:
            meta = {"base_model": self.base_name, "base_path": str(self.base_path), "base_sha256": self.base_sha,
                    "method": weights_method(self.cfg), **({"preference": self.cfg.method} if self.pairs else {})}
            ckpt.save_final(self._inner(), self.tokenizer, weights_dir, state_dict=whole,
                            adapter_meta=meta if self.adapter else None)
            summary = run_summary(self, stopped, peak, energy)
            atomic_write_json(self.run_dir / paths.SUMMARY_FILE, summary)
        else:
            summary = {}
        acc.wait_for_everyone()
        acc.end_training()
        return RunResult(self.run_dir, weights_dir, summary, stopped)


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
