"""The trial engine: one LoRA+ fine-tune from a TrialConfig to a TrialResult.

Knows nothing of Optuna: a caller may pass `on_eval`, called after every evaluation, and stop the
run by returning True (a pruner does this), and `on_step` for progress.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sweep.core.errors import SweepError
from sweep.core.heap import map_large_buffers
from sweep.core.metrics import sign
from sweep.data.batches import train_batches
from sweep.data.config import TrialConfig
from sweep.data.lm_tasks import LMTask
from sweep.data.result import EvalPoint, StopReason, TrialResult, library_versions
from sweep.data.tasks import TaskData
from sweep.engine.base import base_dtype, gpu_group
from sweep.engine.kinds import prepare
from sweep.engine.memory import maps_its_heap
from sweep.engine.models import parameter_count
from sweep.engine.optim import build_optimizer
from sweep.engine.precision import autocast, cast_frozen_linears, precision, uncast

OnEval = Callable[[EvalPoint], bool]
OnStep = Callable[[int, int, float], None]
OnEnd = Callable[[torch.nn.Module, object], None]

# A loss this many times its starting value, or above a hard ceiling, means the run has blown up.
EXPLODE_FACTOR = 10.0
EXPLODE_CEILING = 1e4
LOSS_EMA = 0.9


def resolve_device(name: str) -> torch.device:
    """The device a trial's inputs go to: for a group of GPUs (cuda:0+1), the first."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SweepError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
    return torch.device(name.split("+")[0])


def lr_factor(cfg: TrialConfig, total_steps: int) -> Callable[[int], float]:
    """Linear warmup, then linear or cosine decay to zero (or constant)."""
    warmup = math.ceil(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return factor


def _gpus(device: torch.device, setting: str) -> list[torch.device]:
    """The GPUs a trial uses: every one of a group (cuda:0+1), else its device."""
    return [torch.device(f"cuda:{i}") for i in gpu_group(setting)] or [device]


def _reset_peak_memory(device: torch.device, setting: str = "") -> None:
    """Start the peak-memory count anew: a slot's process runs many trials, each reports its own."""
    if device.type == "cuda":
        for gpu in _gpus(device, setting):
            torch.cuda.reset_peak_memory_stats(gpu)
        return
    try:  # Linux: "5" resets the process's peak resident set size (VmHWM) to its current size
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory_mb(device: torch.device, setting: str = "") -> float:
    """The trial's peak: on GPUs, the sum of each one's peak (a spread trial's blocks each hold theirs)."""
    if device.type == "cuda":
        return sum(torch.cuda.max_memory_allocated(gpu) for gpu in _gpus(device, setting)) / 2**20
    try:  # Linux: the peak since _reset_peak_memory, in kB
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except (OSError, ValueError, IndexError):
        pass
    # The process's whole life (KiB on Linux, bytes on macOS): an upper bound for the trial.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def run_trial(
    cfg: TrialConfig,
    on_eval: OnEval | None = None,
    on_step: OnStep | None = None,
    task: TaskData | LMTask | None = None,
    on_end: OnEnd | None = None,
) -> TrialResult:
    """Fine-tune `cfg.model` on `cfg.task` with LoRA+ and return the validation result.

    A diverging run (non-finite or exploding loss) stops early with StopReason.DIVERGED;
    it is a result, not an error. `on_end(model, tokenizer)` gets the trained PEFT model of a run
    that did not diverge (e.g. to save its adapter).
    """
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    form = cfg.quantize if cfg.quantize != "none" else base_dtype(cfg, device, lambda: parameter_count(
        cfg.model, cfg.trust_remote_code))
    if device.type == "cpu" and maps_its_heap(cfg, form):
        map_large_buffers()
    _reset_peak_memory(device, cfg.device)
    work = prepare(cfg, device, task)
    model = work.model
    # autocast's casts of the frozen weights made once, not at every step; the fp32 weights are kept
    # only for on_end, which gets the model as it was loaded
    cast = cast_frozen_linears(model, torch.bfloat16) if precision(cfg, device) == "bf16" else []
    if on_end is None:
        cast.clear()
    if cfg.checkpointing:
        # Not the reentrant kind: it needs inputs that require grads, which frozen embeddings never give.
        base = model.get_base_model()
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = build_optimizer(model, cfg, device)
    # fp16's narrow range flushes small gradients to zero: an fp16 trial scales its loss (bf16 has
    # fp32's range and needs none); disabled, the scaler passes everything through unchanged
    scaler = torch.amp.GradScaler(device.type, enabled=precision(cfg, device) == "fp16")
    setup_time = time.perf_counter() - started
    start = {g["name"]: [p.detach().clone() for p in g["params"]] for g in optimizer.param_groups}
    batches_per_epoch = math.ceil(len(work.lengths) / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * batches_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total))
    eval_every = cfg.eval_every or batches_per_epoch
    rng = np.random.default_rng(cfg.seed)
    history: list[EvalPoint] = []
    step = examples = tokens = 0
    train_time = eval_time = 0.0
    first_loss = ema = None
    stop, stop_reason = StopReason.COMPLETED, "completed"
    # On a GPU a step's loss is read one step late: reading it at once would make the host wait for
    # the device every step, instead of queueing the next step while the device runs this one. The
    # batches are pinned for the same reason (a copy from pageable memory waits too). On the CPU
    # every step is read at once, and every evaluation step on either.
    on_gpu = device.type == "cuda"
    unread: tuple[int, int, torch.Tensor] | None = None  # (step, examples, loss)

    def read(at: int, seen: int, loss: torch.Tensor) -> bool:
        """The checks and callbacks after step `at`; True to stop training. The time of callbacks and
        evaluations goes to `outside`: it is not training time."""
        nonlocal first_loss, ema, stop, stop_reason, outside, eval_time
        value = loss.item()
        if not math.isfinite(value):
            stop, stop_reason = StopReason.DIVERGED, f"diverged: non-finite loss at step {at}"
            return True
        first_loss = value if first_loss is None else first_loss
        ema = value if ema is None else LOSS_EMA * ema + (1 - LOSS_EMA) * value
        if ema > EXPLODE_CEILING or ema > EXPLODE_FACTOR * max(first_loss, 1e-3):
            stop, stop_reason = StopReason.DIVERGED, f"diverged: loss exploded to {ema:.3g} at step {at}"
            return True
        t = time.perf_counter()
        try:
            if on_step is not None:
                on_step(at, total, ema)
            if at % eval_every == 0 or at == total:
                t_eval = time.perf_counter()
                metrics = work.evaluate(lambda: autocast(cfg, device))
                eval_time += time.perf_counter() - t_eval
                point = EvalPoint(at, seen, metrics[work.metric], metrics, ema)
                history.append(point)
                if on_eval is not None and on_eval(point) and at < total:
                    stop, stop_reason = StopReason.STOPPED, f"stopped: by callback at step {at}"
                    return True
            return False
        finally:
            outside += time.perf_counter() - t

    epoch: list[np.ndarray] = []
    model.train()
    while step < total:
        if not epoch:
            epoch = train_batches(work.lengths, cfg.batch_size, rng)
        t0 = time.perf_counter()  # the batch's assembly counts as training time too
        outside = 0.0
        idx = epoch.pop()
        # The step's loss is the mean over its examples (a causal LM: its trained tokens), whatever
        # micro-batches it is computed in.
        pieces = [work.collate(part) for part in np.array_split(idx, cfg.micro_batches)]
        count = sum(work.count(piece) for piece in pieces)
        loss = torch.zeros((), device=device)
        for piece in pieces:
            piece = {k: (v.pin_memory() if on_gpu else v).to(device, non_blocking=True)
                     for k, v in piece.items()}
            with autocast(cfg, device):
                part = work.loss_sum(piece) / max(count, 1)
            scaler.scale(part).backward()
            loss += part.detach()
        if cfg.max_grad_norm is not None:
            scaler.unscale_(optimizer)  # clip the true gradients
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        examples += len(idx)
        tokens += int(work.lengths[idx].sum())
        done = unread is not None and read(*unread)
        unread = (step, examples, loss.detach())
        if not done and (not on_gpu or step % eval_every == 0 or step == total):
            done, unread = read(*unread), None
        train_time += time.perf_counter() - t0 - outside
        if done:
            break
    if unread is not None and stop is StopReason.COMPLETED:
        read(*unread)  # (a loop that ends with an evaluation step has read it already)

    metric_se, per_example = math.nan, None
    if stop is StopReason.DIVERGED:
        final = work.worst  # the weights are no longer meaningful: score the run at its worst, not at random
    else:
        final = history[-1].metrics
        metric_se = work.standard_error()
        per_example = work.outcomes()
        if on_end is not None:
            uncast(cast)
            on_end(model, work.tokenizer)
    main = final[work.metric]
    best = max(history, key=lambda p: sign(work.metric) * p.metric, default=None)
    return TrialResult(
        config=cfg,
        kind=work.kind,
        metric_name=work.metric,
        metric=main,
        metric_se=metric_se,
        outcomes=per_example,
        best_metric=best.metric if best else main,
        best_step=best.step if best else step,
        metrics=final,
        history=tuple(history),
        steps=step,
        examples=examples,
        tokens=tokens,
        wall_time_s=time.perf_counter() - started,
        train_time_s=train_time,
        tokens_per_s=tokens / train_time if train_time > 0 else 0.0,
        peak_memory_mb=_peak_memory_mb(device, cfg.device),
        stop=stop,
        stop_reason=stop_reason,
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        versions=library_versions(),
        update_norms=_update_norms(optimizer, start),
        precision=precision(cfg, device),
        base=form,
        setup_time_s=setup_time,
        eval_time_s=eval_time,
    )


@torch.no_grad()
def _update_norms(optimizer: torch.optim.Optimizer, start: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    return {
        g["name"]: math.sqrt(sum(float((p.float() - p0.float()).square().sum())
                                 for p, p0 in zip(g["params"], start[g["name"]], strict=True)))
        for g in optimizer.param_groups
    }

