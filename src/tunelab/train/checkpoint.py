"""Checkpoints that a resumed run continues from bit for bit.

`checkpoints/step-N/` holds everything the next optimizer step depends on, and explains itself:

    adapter/ or model/      trainable weights (PEFT / transformers format, loadable on their own)
    optimizer.pt            AdamW state            (torch.save; loaded with weights_only=True)
    scheduler.pt            LR scheduler state
    rng.pt                  python / numpy / torch / cuda RNG state of every process
    trainer_state.json      ResumeState: step, epoch and position in it, counters, best eval
    config.yaml             the resolved run config
    chat_template.jinja     the template the data was rendered with

The folder is written under a temporary name and renamed when complete (tunelab.io.atomic_dir),
so a kill or a full disk in the middle of a save leaves the previous checkpoint as it was and
no half-written `step-N` ever exists. Resume takes the newest `step-N`.
"""
from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from tunelab import paths
from tunelab.errors import TunelabError
from tunelab.io import atomic_dir, atomic_write_json, atomic_write_text, tree_bytes

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"
TEMPLATE_FILE = "chat_template.jinja"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class ResumeState:
    """What the loop needs besides weights and optimizer to continue exactly where it stopped."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch of the next step
    step_in_epoch: int = 0  # optimizer steps done inside that epoch: the data position
    tokens_seen: int = 0  # real (non-pad) tokens through the model, all processes
    tokens_trained: int = 0  # supervised tokens
    flops: float = 0.0
    train_s: float = 0.0  # seconds inside the loop so far
    wall_s: float = 0.0  # seconds of the whole run so far (setup and saves included)
    best_eval_loss: Optional[float] = None
    best_step: Optional[int] = None
    evals_without_improvement: int = 0
    energy_wh: Optional[float] = 0.0  # energy of the run so far (None: not measurable here)
    peak_mem_mib: float = 0.0  # peak memory of the run so far (the max over launches)
    processes: int = 0  # processes that saved it (0: a checkpoint older than this field)
    micro_batches: int = 0  # micro-batches per optimizer step: processes × grad_accum

    def record_eval(self, eval_loss: float, patience: Optional[int]) -> tuple[bool, bool]:
        """Count an evaluation (early stopping's state): (is it the best so far, should training stop)."""
        if self.best_eval_loss is None or eval_loss < self.best_eval_loss:
            self.best_eval_loss, self.best_step, self.evals_without_improvement = eval_loss, self.step, 0
            return True, False
        self.evals_without_improvement += 1
        return False, patience is not None and self.evals_without_improvement >= patience

    @classmethod
    def from_json(cls, data: dict) -> "ResumeState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ---------------------------------------------------------------- changed config on resume
# Settings that may differ from the checkpoint's config on --resume: they change how long the
# run goes on or what it logs and keeps, not what the saved weights, optimizer and data position
# mean. A new length re-plans the LR schedule from the current step (docs/training.md).
# train.grad_accum may change only so that processes × grad_accum stays the same (check_layout).
SAFE_TO_CHANGE = ("train.max_steps", "train.epochs", "train.eval_every", "train.save_every",
                  "train.keep_checkpoints", "train.early_stopping.patience", "log.", "train.grad_accum")
LENGTH_KEYS = ("train.max_steps", "train.epochs")
# where the run lives, not what it trains: a run folder moved to a bigger disk resumes from there
PLACE_KEYS = ("out",)


def _flat(data, prefix: str = "") -> dict:
    if not isinstance(data, dict):
        return {prefix[:-1]: data}
    out = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def config_changes(folder: Path, config_yaml: str) -> dict[str, tuple]:
    """{key: (checkpoint's value, requested value)} for the settings a resume would change.

    Raises TunelabError naming the keys when any of them is not in SAFE_TO_CHANGE.
    """
    import yaml

    saved = _flat(yaml.safe_load((Path(folder) / paths.CONFIG_FILE).read_text(encoding="utf-8")) or {})
    now = _flat(yaml.safe_load(config_yaml) or {})
    changes = {k: (saved.get(k), now.get(k)) for k in sorted(saved.keys() | now.keys()) if saved.get(k) != now.get(k)}
    unsafe = [k for k in changes if not k.startswith(SAFE_TO_CHANGE) and k not in PLACE_KEYS]
    if unsafe:
        shown = ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r})" for k in unsafe)
        raise TunelabError(f"{folder}: --resume with a changed config: {shown}; resume with the settings the run "
                           "was started with (only length, eval/save cadence, logging and out may change), "
                           "or start a new run with out=<another folder>")
    return changes


def record_resume(run_dir: Path, step: int, changes: dict[str, tuple]) -> None:
    """Append one line to the run's resume log: config.yaml then shows the new values, this the old."""
    import datetime

    log_file = Path(run_dir) / paths.RESUME_LOG_FILE
    old = log_file.read_text(encoding="utf-8") if log_file.is_file() else ""
    entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "from_step": step, "changed": {k: {"from": a, "to": b} for k, (a, b) in changes.items()}}
    atomic_write_text(log_file, old + json.dumps(entry) + "\n")


def finished_summary(run_dir: Path, folder: Path, changes: dict[str, tuple]) -> Optional[dict]:
    """The summary of a run that already finished and is not being made longer, else None."""
    summary_file = Path(run_dir) / paths.SUMMARY_FILE
    if any(k in changes for k in LENGTH_KEYS) or not summary_file.is_file():
        return None
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
        last = json.loads((Path(folder) / STATE_FILE).read_text())["step"]
    except (OSError, ValueError, KeyError):
        return None
    # a newer checkpoint than the summary: a longer run was started after it finished
    return summary if isinstance(summary.get("steps"), int) and last <= summary["steps"] else None


def check_layout(folder: Path, *, processes: int, micro_batches: int) -> None:
    """Refuse a resume whose optimizer step would hold a different number of micro-batches.

    The data position is counted in optimizer steps, and a step is `processes × grad_accum`
    micro-batches: another process count resumes exactly when grad_accum keeps that product.
    """
    try:
        saved = ResumeState.from_json(json.loads((Path(folder) / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return  # load_checkpoint names the broken file
    if saved.micro_batches and saved.micro_batches != micro_batches:
        n, p = saved.processes, saved.micro_batches
        fix = (f"with {processes} process(es) set train.grad_accum={p // processes}" if p % processes == 0
               else f"resume with a process count that divides {p} (e.g. {n}) and train.grad_accum={p}/processes")
        raise TunelabError(f"{folder}: saved by {n} process(es) with {p} micro-batches per optimizer step; this launch "
                           f"takes {micro_batches}; {fix} (same global batch, same data position)")


# ---------------------------------------------------------------- RNG
def rng_state() -> dict:
    """This process's RNG states as plain lists and tensors (loadable with weights_only=True)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- find
def step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first. Temporary folders (.step-N.*.tmp) are not listed."""
    root = Path(run_dir) / paths.CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and d.is_dir() and (d / STATE_FILE).is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def latest(run_dir: Path) -> Optional[Path]:
    dirs = step_dirs(run_dir)
    return dirs[-1][1] if dirs else None


def remove_partial(run_dir: Path) -> None:
    """Delete leftovers of saves that were killed half-way (temporary folders)."""
    root = Path(run_dir) / paths.CHECKPOINTS_DIR
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(".") and d.name.endswith(".tmp"):
                shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- save / load
def save_pretrained(model, target: Path, state_dict: Optional[dict] = None) -> None:
    """`model.save_pretrained`, from `state_dict` when given (a sharded run's gathered weights)."""
    if state_dict is None:
        model.save_pretrained(target)
    else:  # PEFT picks the adapter's keys out of the whole state dict; transformers saves it as is
        model.save_pretrained(target, state_dict=state_dict)



def save_final(model, tokenizer, folder: Path, *, state_dict: Optional[dict] = None,
               adapter_meta: Optional[dict] = None) -> None:
    """The run's final weights, whole or not at all: model (or adapter), tokenizer and, for an
    adapter, the base it belongs to (models/export.py's ADAPTER_META_FILE)."""
    from tunelab.models.export import ADAPTER_META_FILE

    with atomic_dir(folder) as tmp:
        save_pretrained(model, tmp, state_dict)
        tokenizer.save_pretrained(tmp)
        if adapter_meta is not None:
            atomic_write_json(tmp / ADAPTER_META_FILE, adapter_meta)


def save_weights(model, folder: Path, *, adapter: bool, state_dict: Optional[dict] = None) -> None:
    """The trainable weights in their library's own format (loadable without tunelab)."""
    save_pretrained(model, folder / (paths.ADAPTER_DIR if adapter else paths.MODEL_DIR), state_dict)


def load_weights(model, folder: Path, *, adapter: bool) -> None:
    from safetensors.torch import load_file

    if adapter:
        from peft import set_peft_model_state_dict

        sd = {}
        for f in sorted((folder / paths.ADAPTER_DIR).glob("*.safetensors")):
            sd.update(load_file(f))
        result = set_peft_model_state_dict(model, sd)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise TunelabError(f"{folder}: adapter does not match this run's model ({unexpected[0]}); "
                               "resume with the config the run was started with")
        return
    sd = {}
    for f in sorted((folder / paths.MODEL_DIR).glob("*.safetensors")):
        sd.update(load_file(f))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {k for k in missing if "lm_head" in k or "embed" in k}  # tied weights are saved once
    if unexpected or set(missing) - tied:
        raise TunelabError(f"{folder}: weights do not match this run's model "
                           f"({(unexpected or sorted(set(missing) - tied))[0]}); resume with the original config")


@dataclass
class Snapshot:
    """What one checkpoint holds (save_checkpoint writes it).

    `rng` holds one rng_state() per process, in rank order. A sharded run passes its gathered
    `model_state` and `optimizer_state` (shard.full_states): the files are the same either way.
    """

    model: Any
    optimizer: Any
    scheduler: Any
    state: ResumeState
    rng: list
    config_yaml: str
    template: str
    adapter: bool
    model_state: Optional[dict] = None
    optimizer_state: Optional[dict] = None


def save_checkpoint(run_dir: Path, snap: Snapshot) -> Path:
    """Write checkpoints/step-N atomically and return its path. Call on the main process only."""
    state, optimizer, optimizer_state = snap.state, snap.optimizer, snap.optimizer_state
    final = Path(run_dir) / paths.CHECKPOINTS_DIR / f"step-{state.step}"
    before = latest(Path(run_dir))  # its size is what a full disk message says this one needs
    try:
        with atomic_dir(final, expect=tree_bytes(before) if before is not None else None) as tmp:
            save_weights(snap.model, tmp, adapter=snap.adapter, state_dict=snap.model_state)
            torch.save(optimizer.state_dict() if optimizer_state is None else optimizer_state, tmp / OPTIMIZER_FILE)
            torch.save(snap.scheduler.state_dict(), tmp / SCHEDULER_FILE)
            torch.save(snap.rng, tmp / RNG_FILE)
            atomic_write_text(tmp / paths.CONFIG_FILE, snap.config_yaml)
            atomic_write_text(tmp / TEMPLATE_FILE, snap.template)
            # written last: a step-N folder with this file is complete by construction
            atomic_write_json(tmp / STATE_FILE, asdict(state))
    except OSError as e:
        raise TunelabError(
            f"could not save checkpoint step-{state.step} ({e.strerror or e}); "
            f"the previous checkpoint {before or '(none)'} is intact; free disk space and resume with --resume"
        ) from None
    return final


def load_checkpoint(folder: Path, *, model, optimizer, scheduler, rank: int, adapter: bool,
                    weights: bool = True, load_optimizer=None) -> ResumeState:
    """Restore weights, optimizer, scheduler and this process's RNG; return the ResumeState.

    A sharded run loads the weights itself before sharding (`weights=False`) and the optimizer
    through `load_optimizer(state_dict)` (shard.load_optimizer).
    """
    try:
        state = ResumeState.from_json(json.loads((folder / STATE_FILE).read_text()))
        if weights:
            load_weights(model, folder, adapter=adapter)
        osd = torch.load(folder / OPTIMIZER_FILE, weights_only=True, map_location="cpu")
        (load_optimizer or optimizer.load_state_dict)(osd)
        scheduler.load_state_dict(torch.load(folder / SCHEDULER_FILE, weights_only=True))
        rng = torch.load(folder / RNG_FILE, weights_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise TunelabError(f"{folder}: checkpoint cannot be loaded ({str(e).splitlines()[0][:160]}); "
                           "delete this step folder to resume from the one before") from None
    if rank >= len(rng) and not state.micro_batches:
        raise TunelabError(f"{folder}: saved by {len(rng)} process(es), resumed with more; "
                           f"resume with --num_processes {len(rng)}")
    # more processes than saved streams (another process count, check_layout passed): the extra
    # ones reuse a saved stream; only dropout draws from it, so with dropout 0 nothing changes
    set_rng_state(rng[rank % len(rng)])
    return state


def prune(run_dir: Path, *, keep: int, best_step: Optional[int]) -> None:
    """Keep the newest `keep` checkpoints and the best one; delete the rest."""
    dirs = step_dirs(run_dir)
    for step, d in dirs[:-keep] if keep > 0 else dirs:
        if step != best_step:
            shutil.rmtree(d, ignore_errors=True)
