"""The fine-tuning recipe, read top to bottom (torchtune's shape).

    Recipe(cfg)     fail fast: everything checkable before loading a model
    .setup()        accelerator → model (+ method) → data → optimizer and schedule → resume
    .train()        epoch → optimizer step (step.py) → log / eval / save
    .cleanup()      final weights, summary.json (the CLI then builds report.html: tunelab.report)

The recipe holds one objective (objectives/: sft, dpo, orpo, ...), which owns the data, the
batches, the loss, the evaluation and the statistics; nothing here asks which method runs. The
run's state is a few typed parts (state.py). `train(config)` is the public verb (`tunelab.train`).
Multi-process runs (DDP, FSDP2) come from `accelerate launch` (shard.py, docs/scale.md); the
TUNELAB_FAULT test hook (kill, sigint, sigterm, nan at a step) is step.py's.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch

from tunelab import logs, paths, runs
from tunelab.config import TrainConfig, load_train_config, to_yaml
from tunelab.io import atomic_write_json, atomic_write_text
from tunelab.progress import Progress
from tunelab.progress import quiet as progress_quiet
from tunelab.models.threads import choose_threads
from tunelab.train import checkpoint as ckpt
from tunelab.train import cost, inputs, objectives, schedule, shard
from tunelab.train.accounting import Accounting, RunEnd, RunParts, add_energy, append_row, rewind_rows, run_summary
from tunelab.train.checks import check_run_folder, check_settings, oom_message
from tunelab.train.inputs import Scorer
from tunelab.train.interrupt import StopRequest, TrainingInterrupted
from tunelab.train.methods import apply_method
from tunelab.train.model import choose_kernels, compile_layers, load_base, measure, memory_budget
from tunelab.train.packing import check_budget, plan_batches, row_width
from tunelab.train.state import ModelFacts, Procs, RunClock, RunData, RunSetup, Trainables
from tunelab.train.step import evaluate, fault, optimizer_step

log = logging.getLogger("tunelab.train")

@dataclass
class RunResult:
    run_dir: Path
    weights_dir: Path  # adapter/ (adapter methods) or model/ (full)
    summary: dict = field(default_factory=dict)
    stopped: str = "completed"  # completed | early_stopping


class Recipe:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
                 base_dir: str | Path | None = None, resume_command: str | None = None,
                 toxicity: Optional[Scorer] = None, providers: Mapping[str, Callable] | None = None):
        # ---- fail fast: nothing below loads a model or data
        self.clock = RunClock()
        self.cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")
        how = objectives.resolve(cfg)  # the method on both axes (a one-line error for an unknown one)
        self.objective = objectives.build(cfg, providers)  # checks the objective's own settings too
        run_dir = Path(cfg.out.format(name=cfg.name))
        self.run = RunSetup(
            cfg, run_dir, how, check_settings(cfg, how, cuda=self.cuda, base_dir=base_dir, toxicity=toxicity),
            resume, resume_command or shlex.join(["tunelab", "train", "CONFIG", "--resume"]),
            Path(base_dir) if base_dir is not None else None, fault())
        self.toxicity = toxicity
        self.resume_changes, self.finished = check_run_folder(cfg, run_dir, resume=resume, overwrite=overwrite)
        self.stop = StopRequest(self._say, self.run.resume_command)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        from accelerate.utils import set_seed

        cfg, run = self.run.cfg, self.run
        trackers = [t for t in ("tensorboard", "mlflow") if getattr(cfg.log, t)]
        acc = shard.accelerator(
            # cpu=True on a machine without CUDA makes a torchrun-style launch (`accelerate launch
            # --multi_gpu`, `torchrun`) run DDP over gloo instead of silently running alone
            cpu=not self.cuda, mixed_precision={"fp32": "no"}.get(run.precision, run.precision),
            log_with=trackers or None, project_dir=str(run.run_dir))
        self.procs = Procs(acc, acc.num_processes, acc.process_index, acc.is_main_process, shard.is_sharded(acc))
        if acc.device.type == "cpu" and self.procs.world == 1:
            # one thread per FREE core (models/threads.py); several processes share the cores already
            self.threads = choose_threads()
        # one seed for weight init (LoRA), dropout and everything else; data order has its own
        set_seed(cfg.train.seed)
        if trackers:
            acc.init_trackers(cfg.name or "run")

        # ---- model: load, pick attention, apply the method (before the optimizer sees params)
        lm = self._setup_model()
        # ---- data: the objective's rows → seeded per-epoch batch plans
        self._setup_data(lm)
        # ---- optimizer and schedule (the schedule needs the step count from the data)
        optimizer, scheduler = schedule.optimizer(lm, cfg.train, self.data.schedule.lr, self.data.total_steps,
                                                  fused=self.procs.device.type == "cuda")
        folder = ckpt.latest(run.run_dir) if run.resume else None
        if folder is not None:
            # a checkpoint of N processes continues with M when the global batch stays the same
            ckpt.check_layout(folder, processes=self.procs.world, micro_batches=self.data.per_step)
            if self.procs.sharded:  # whole weights go in before sharding: fully_shard splits what it finds
                ckpt.load_weights(lm.model, folder, adapter=run.adapter)
        model, optimizer = acc.prepare(lm, optimizer)
        self.parts = Trainables(model, optimizer, scheduler, self.objective)
        # the objective starts before a resume loads trained weights (DPO's reference is the initial model)
        self.objective.start(objectives.Live(
            model, acc.unwrap_model(model), self.facts.attn, acc.device, self.facts.pad_id, self.data.row_width,
            run.run_dir, self.procs.main, run.resume, self._say, run.adapter), self.data)
        self.state = ckpt.ResumeState()
        self.config_yaml = to_yaml(cfg)
        if folder is not None:
            self._resume_from(folder)
        # totals of earlier launches of a resumed run; summary.json covers the whole run
        self.clock.wall_before, self.clock.energy_before, self.clock.peak_before = \
            self.state.wall_s, self.state.energy_wh, self.state.peak_mem_mib
        if self.procs.main:
            ckpt.remove_partial(run.run_dir)
            if run.resume:
                ckpt.record_resume(run.run_dir, self.state.step, self.resume_changes)
            atomic_write_text(run.run_dir / paths.CONFIG_FILE, self.config_yaml)
            rewind_rows(run.run_dir / paths.METRICS_FILE, self.state.step)
        acc.wait_for_everyone()
        self.clock.meter = cost.EnergyMeter(str(run.run_dir)) if self.procs.main else None

    def _resume_from(self, folder: Path) -> None:
        """Weights, optimizer, schedule, counters and RNG of a checkpoint, into the prepared objects
        (RNG last, so nothing above consumes the restored random streams)."""
        p, tr = self.procs, self.parts
        load_optimizer = (lambda osd: shard.load_optimizer(tr.model, tr.optimizer, osd)) if p.sharded else None
        self.state = ckpt.load_checkpoint(folder, model=self._inner(), optimizer=tr.optimizer,
                                          scheduler=tr.scheduler, rank=p.rank, adapter=self.run.adapter,
                                          weights=not p.sharded, load_optimizer=load_optimizer)
        self._say(f"resuming from {folder} (step {self.state.step} of {self.data.total_steps})")

    def _setup_model(self):
        """The base with the method applied, wrapped in the objective's module; sets self.facts."""
        cfg, device, run = self.run.cfg, self.procs.device, self.run
        k = choose_kernels(cfg.train.compile, device)
        self.load_attn = k.load_attn
        model, self.facts = self._load_base(device)
        self.facts.attn, self.facts.compile = k.attn, k.compiled
        # whatever _load_base did (a benchmark's override builds its own model), the kernel must be
        # the one the batches build masks for: a BlockMask reaching sdpa is a crash
        if model.config._attn_implementation != k.attn:
            model.set_attn_implementation(k.attn)
        model.config.use_cache = False  # no KV cache while training
        if cfg.train.grad_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = apply_method(model, cfg, run.how.weights)
        model.train()  # from_pretrained returns eval mode: dropout would be off
        measure(self.facts, model, device, adapter=run.adapter, precision=run.precision)
        lm = self.objective.wrap(model)
        if k.compiled:
            compile_layers(model)
        return lm

    def _load_base(self, device):
        """(base model, ModelFacts with its tokenizer and names); a hook for benchmarks."""
        run = self.run
        base = load_base(run.cfg, device, weights=run.how.weights, precision=run.precision, attn=self.load_attn)
        return base.model, ModelFacts(base.tokenizer, base.name, base.path, base.sha256, self.load_attn, False)

    def _load_data(self, source: inputs.DataSource):
        """(train, eval) rows, as the objective loads them (inputs.py); a hook for benchmarks."""
        return self.objective.load(source)

    def _setup_data(self, lm) -> None:
        cfg, procs = self.run.cfg, self.procs
        source = inputs.DataSource(cfg, self.facts.tokenizer, self.run.base_dir, self._say, self.toxicity)
        train_ex, eval_ex = self._load_data(source)
        lengths = inputs.lengths(train_ex)
        # epochs, lr and the batch left at auto follow from the data (schedule.py states the rule)
        sched = schedule.resolve(cfg.train, self.run.how.usual_lr, lengths, world=procs.world,
                                 memory_budget=self._memory_budget(lm, lengths),
                                 prompts=self.objective.rows_are_prompts)
        check_budget(lengths, sched.batch_tokens)
        check_budget(inputs.lengths(eval_ex), sched.batch_tokens)
        # fixed shapes (packing.py) where shapes cost: compiled layers and flex_attention's BlockMask
        # build once per shape, so every packed row is padded to one width (a data set smaller than
        # the budget not past its own size). Eager CPU kernels do not care about shapes: there the
        # rows keep their length and no pad token costs MLP work (3-5% of a row on alpaca data).
        packing = cfg.data.packing or self.objective.packed
        fixed = packing and (self.facts.compile or self.facts.attn == "flex_attention")
        d = self.data = RunData(train_ex, eval_ex, lengths, sched, cfg.train.seed, packing,
                                per_step=procs.world * sched.grad_accum,
                                skipped=source.skipped, repeat=self.objective.steps_per_batch())
        d.row_width = row_width(min(d.batch_tokens, sum(lengths) or 1)) if fixed else None
        d.eval_plan = plan_batches(inputs.lengths(eval_ex), d.batch_tokens, seed=cfg.train.seed,
                                   packing=packing) if eval_ex else []
        # steps: every epoch's plan is deterministic, so the total is known before training
        d.total_steps = schedule.total_steps(sched.epochs, d.steps_in_epoch, cfg.train.max_steps)
        self._say(f"{len(train_ex)} training rows ({sum(lengths)} tokens), {len(eval_ex)} eval rows; "
                  f"{d.total_steps} optimizer steps of {d.per_step} micro-batch(es) ≤ {d.batch_tokens} tokens; "
                  f"{sched.describe()}")

    def _memory_budget(self, lm, lengths) -> Optional[int]:
        """With train.batch_tokens unset on CUDA: the micro-batch that fills free GPU memory; else None."""
        run = self.run
        if run.cfg.train.batch_tokens is not None or self.procs.device.type != "cuda":
            return None
        weight_bytes = 1 if run.how.weights.quantized else (2 if (run.adapter and run.precision == "bf16") else 4)
        budget, free = memory_budget(lm.model, self.procs.device, self.facts, weight_bytes=weight_bytes,
                                     grad_checkpointing=run.cfg.train.grad_checkpointing, longest=max(lengths, default=1))
        self._say(f"train.batch_tokens unset: micro-batches of up to {budget} tokens fit {free / 2**30:.1f} GiB of "
                  "free GPU memory")
        return budget

    # ------------------------------------------------------------------ train
    def train(self) -> RunResult:
        cfg, state, data, run = self.run.cfg, self.state, self.data, self.run
        stopped = "completed"
        # a bar on a terminal, a line per ~10% or 30 s in a log; silent when quiet or not rank 0
        progress = Progress("train", data.total_steps, unit="steps", done=state.step,
                            enabled=self.procs.main and not progress_quiet())
        self.stop.install()
        loop_start = time.perf_counter() - state.train_s
        self.acct = Accounting(self.facts.flops_per_token, self.facts.attn_dims, self.facts.peak_flops, self.procs.world)
        try:
            while state.step < data.total_steps:
                step_batches = data.step_batches(state.epoch, state.step_in_epoch)
                if not step_batches:  # epoch exhausted (max_steps beyond the epochs)
                    state.epoch, state.step_in_epoch = state.epoch + 1, 0
                    continue
                t_step, compiled_before = time.perf_counter(), cost.compile_count()
                lr = self.parts.scheduler.get_last_lr()[0]  # the rate this step uses (step() moves to the next)
                prep = self.objective.prep_s
                res = optimizer_step(run, self.procs, self.facts, data, self.parts, step_batches, state.step + 1)
                # the objective's preparation (DPO's reference forwards) is neither step nor training
                # time: summary.json keeps it apart (reference_s), as when it all came before step 1
                prep = self.objective.prep_s - prep
                t_step, loop_start = t_step + prep, loop_start + prep
                state.step += 1
                state.step_in_epoch += 1
                if state.step_in_epoch >= data.steps_in_epoch(state.epoch):
                    state.epoch, state.step_in_epoch = state.epoch + 1, 0
                prep = self.objective.prep_s
                row, best_now, stop = self._record(res, t_step, compiled_before, loop_start, lr)
                loop_start += self.objective.prep_s - prep  # the held-out pairs' reference, at the first evaluation
                stopped = "early_stopping" if stop else stopped
                progress.update(state.step, loss=f"{res.loss:.4f}",
                                **{"tok/s": f"{row['tokens_per_s']:,.0f}" if row["tokens_per_s"] else "-"})

                interrupted = self.procs.agree(self.stop.requested)
                if state.step % cfg.train.save_every == 0 or best_now or interrupted:
                    self._save()
                if run.fault == ("kill", state.step):
                    os.kill(os.getpid(), signal.SIGKILL)
                if interrupted:
                    folder = run.run_dir / paths.CHECKPOINTS_DIR / f"step-{state.step}"
                    raise TrainingInterrupted(
                        f"at step {state.step}; checkpoint saved to {folder}; resume with: " + run.resume_command)
                if stopped == "early_stopping":
                    self._say(f"early stopping at step {state.step}: eval loss did not improve for "
                              f"{cfg.train.early_stopping.patience} evaluations; best step {state.best_step}")
                    break
        finally:
            progress.close()
            self.stop.restore()
        state.train_s = time.perf_counter() - loop_start
        return self.cleanup(stopped)

    def _record(self, res, t_step: float, compiled_before: int, loop_start: float, lr: float):
        """Count the step, evaluate when due, log its row: (row, is this the best eval, stop early)."""
        state, data, c = self.state, self.data, res.counts
        dt = time.perf_counter() - t_step
        step_flops = self.acct.step(state, n_tok=c.tokens, n_sup=c.supervised, attn_pairs=c.attn_pairs, dt=dt,
                                    compiled=cost.compile_count() > compiled_before)
        state.train_s = time.perf_counter() - loop_start
        epoch = round(state.epoch + state.step_in_epoch / max(data.steps_in_epoch(state.epoch), 1), 4)
        row = {**self.acct.row(state, res, epoch=epoch, lr=lr, dt=dt, step_flops=step_flops, device=self.procs.device),
               **res.stats, **self.acct.rates(state)}
        if self.procs.world > 1:  # how evenly the step's supervised tokens fell on the processes
            row["supervised_per_process"] = c.per_process
        best_now = stop = False
        train = self.run.cfg.train
        if data.eval_ex and (state.step % train.eval_every == 0 or state.step == data.total_steps):
            row["eval_loss"], eval_stats = evaluate(self.procs, self.facts, data, self.parts)
            row.update(eval_stats)
            best_now, stop = state.record_eval(row["eval_loss"], train.early_stopping.patience)
        # every log_every-th step, plus every eval and the last step (the summary and the
        # report read the eval loss from these lines)
        if state.step % train.log_every == 0 or "eval_loss" in row or state.step == data.total_steps:
            self._log(row)
        return row, best_now, stop

    # ------------------------------------------------------------------ saving and logging
    def _inner(self):
        """The PEFT or plain model without DDP / compile wrappers."""
        return self.procs.acc.unwrap_model(self.parts.model).model

    def _save(self) -> None:
        from accelerate.utils import gather_object

        st, p, tr, run = self.state, self.procs, self.parts, self.run
        st.wall_s = self.clock.wall_s()
        st.peak_mem_mib = self._peak_mib()
        st.energy_wh = add_energy(self.clock.energy_before, self.clock.meter.so_far_wh() if self.clock.meter else None)
        rngs = gather_object([ckpt.rng_state()])  # every process's streams, in rank order
        st.processes, st.micro_batches = p.world, self.data.per_step
        # sharded: every process sends its shards; the main process writes them whole
        weights, optim = shard.full_states(tr.model, tr.optimizer) if p.sharded else (None, None)
        if p.main:
            self.objective.save()  # what the objective keeps beside the run (DPO's reference), before the step folder
            ckpt.save_checkpoint(run.run_dir, ckpt.Snapshot(
                self._inner(), tr.optimizer, tr.scheduler, st, rngs, self.config_yaml,
                self.facts.tokenizer.chat_template or "", run.adapter, model_state=weights, optimizer_state=optim))
            ckpt.prune(run.run_dir, keep=run.cfg.train.keep_checkpoints, best_step=st.best_step)
        p.acc.wait_for_everyone()

    def _log(self, row: dict) -> None:
        if not self.procs.main:
            return
        append_row(self.run.run_dir / paths.METRICS_FILE, row)
        if self.procs.acc.trackers:
            self.procs.acc.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row["step"])

    def _peak_mib(self) -> float:
        """Peak memory of the whole run: per process (mean over processes), max over launches."""
        now = self.procs.sum(torch.tensor([cost.peak_memory_mib(self.procs.device)])).tolist()[0] / self.procs.world
        return max(now, self.clock.peak_before or 0.0)

    def _say(self, msg: str) -> None:
        if getattr(getattr(self, "procs", None), "main", True):
            log.info(msg)
            if os.environ.get("TUNELAB_QUIET") != "1":
                print(msg, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ cleanup
    def cleanup(self, stopped: str) -> RunResult:
        p, run, f = self.procs, self.run, self.facts
        weights_dir = run.run_dir / (paths.ADAPTER_DIR if run.adapter else paths.MODEL_DIR)
        energy = add_energy(self.clock.energy_before, self.clock.meter.stop_wh() if self.clock.meter else None)
        peak = self._peak_mib()
        whole = shard.full_model_state(self.parts.model) if p.sharded else None
        summary = {}
        if p.main:
            self.objective.save()
            meta = {"base_model": f.base_name, "base_path": str(f.base_path), "base_sha256": f.base_sha,
                    "method": run.how.weights_method.name, "quantized_base": run.how.weights_method.quantized,
                    **self.objective.adapter_meta}
            ckpt.save_final(self._inner(), f.tokenizer, weights_dir, state_dict=whole,
                            adapter_meta=meta if run.adapter else None)
            end = RunEnd(stopped, peak, energy, self.acct.rates(self.state), self.objective.summary())
            summary = run_summary(RunParts(run, p, f, self.data, self.clock, self.state), end)
            atomic_write_json(run.run_dir / paths.SUMMARY_FILE, summary)
        p.acc.wait_for_everyone()
        p.acc.end_training()
        return RunResult(run.run_dir, weights_dir, summary, stopped)


def train(config, overrides: list[str] | None = None, *, resume: bool = False, overwrite: bool = False,
          base_dir: str | Path | None = None, toxicity: Optional[Scorer] = None,
          providers: Mapping[str, Callable] | None = None) -> RunResult:
    """Fine-tune per a TrainConfig, a config dict or a YAML path (keys: docs/train-config.md).

    `toxicity(texts) -> scores` screens the training records when data.max_toxicity is set (e.g.
    tunelab.safety.toxicity.toxicity_scores). `providers` hands an objective what it names in its
    `needs` from the layers above (objectives/__init__.py). Returns the RunResult (the run folder:
    docs/run-folder.md).
    """
    path = None
    if not isinstance(config, TrainConfig):
        path = None if isinstance(config, dict) else str(config)
        if base_dir is None and path is not None:
            base_dir = Path(path).resolve().parent
        config = load_train_config(config, overrides)
    command = shlex.join(["tunelab", "train", path or "CONFIG", *(overrides or []), "--resume"])
    recipe = Recipe(config, resume=resume, overwrite=overwrite, base_dir=base_dir, resume_command=command,
                    toxicity=toxicity, providers=providers)
    if recipe.finished is not None:  # --resume of a finished run: nothing to do, nothing rewritten
        weights = recipe.run.run_dir / (paths.ADAPTER_DIR if recipe.run.adapter else paths.MODEL_DIR)
        return RunResult(recipe.run.run_dir, weights, recipe.finished, stopped="already_finished")
    recipe.setup()  # lines logged while the model loads are held and written when the log opens
    run_dir = recipe.run.run_dir
    with logs.run_log(run_dir if recipe.procs.main else None):  # other libraries' log lines: run_dir/log.txt
        rid = None
        if recipe.procs.main:  # one registry row per run, written by the main process
            rid = runs.start("train", name=config.name, path=run_dir, task=config.data.train, model=config.model)
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
