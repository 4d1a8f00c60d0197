"""Side-by-side throughput and metric: this engine vs HF Trainer + PEFT's LoRA+ optimizer.

Same model, data, init, hyperparameters and precision on each side, run one after the other in one
process, on the GPU when there is one (else the CPU):
  (a) loraplus-sweep's own loop (length-grouped batches, dynamic padding),
  (b) HF Trainer with peft.optimizers.create_loraplus_optimizer and dynamic padding,
  (b') the same with length-grouped sampling too: the Trainer's best documented settings,
  (c) the same Trainer padding every example to max length, as the LoRA+ authors' GLUE script does.
Both sides use fused AdamW on CUDA; bf16 is autocast on both (the Trainer's `bf16=True`).
Tokens/s counts real (non-padding) training tokens over the training time: the engine's optimizer
steps with their batches, the Trainer's loop from its on_train_begin to its on_train_end (setup
excluded on both). On CUDA each precision starts with a whole engine pass, reported as row (a0) and
compared with no side: CUDA loads each kernel on its first use, so a first pass over batches of many
widths pays for loading (and CUDA's start) on top of training. Prints the machine and a table.
With --compile, two more rows: the engine with its model under torch.compile (dynamic shapes), the
compilation counted in its training time, as a trial would pay it; (a') with the engine's numpy-drawn
dropout masks (a graph break at each), (a'') with torch's dropout instead, which inductor draws
inside its fused kernels (one graph). A process keeps its compiled code, so rounds after the first
show a warm cache.
Precision auto (the default) runs every side in fp32, and again in bf16 autocast where the CPU has
native bf16 (or on a GPU); a CPU without it emulates bf16, many times slower, and gets fp32 alone.
With --rounds R every side runs R times, the sides in turn each round (a slow spell of a shared
machine then lands on every side alike), and the table gives each side's median tokens/s; --no-pad
leaves out (c), the slowest side, and --no-trainer every Trainer side.
Usage: python benchmarks/engine_vs_trainer.py [--train N] [--eval N] [--epochs E] [--task T] [--eta-a X]
                                              [--max-length L] [--precision auto|fp32|bf16] [--compile]
                                              [--rounds R] [--no-pad] [--no-trainer]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import peft
import torch
import transformers
from peft.optimizers import create_loraplus_optimizer
from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers import logging as hf_logging

import sweep.engine.kinds
import sweep.engine.train
from sweep.core.hardware import native_cpu_bf16
from sweep.core.metrics import compute
from sweep.data.batches import encode_task
from sweep.data.config import DEFAULT_MODEL, DEFAULT_TASK, TrialConfig
from sweep.data.tasks import load_task
from sweep.engine.models import load_model, load_tokenizer
from sweep.engine.train import run_trial

# transformers 5 replaced `group_by_length=True` with `train_sampling_strategy="group_by_length"`.
_ARG_NAMES = {f.name for f in dataclasses.fields(TrainingArguments)}
GROUP_BY_LENGTH = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in _ARG_NAMES
                   else {"group_by_length": True})


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _rows(enc, n: int, pad_to: int | None, pad_id: int):
    rows = []
    for i in range(min(n, len(enc))):
        at = slice(int(enc.starts[i]), int(enc.starts[i] + enc.lengths[i]))
        ids = enc.ids[at].tolist()
        row = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": int(enc.labels[i])}
        if enc.types is not None:
            row["token_type_ids"] = enc.types[at].tolist()
        if pad_to is not None:  # what tokenizer(padding="max_length") produces
            extra = pad_to - len(ids)
            row["input_ids"] = ids + [pad_id] * extra
            row["attention_mask"] = row["attention_mask"] + [0] * extra
            if "token_type_ids" in row:
                row["token_type_ids"] = row["token_type_ids"] + [0] * extra
        rows.append(row)
    return rows


class TrainClock(TrainerCallback):
    """The Trainer's own loop time: from on_train_begin (dataloader and optimizer ready) to the end."""

    def __init__(self) -> None:
        self.start = self.seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        sync()
        self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        sync()
        self.seconds = time.perf_counter() - self.start


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def quiet() -> None:
    """No warnings, log lines or progress bars from the libraries: the output is the table."""
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def cpu_name() -> str:
    """The CPU's model name (platform.processor() is empty on Linux) and its bf16 instructions."""
    name, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in (platform.processor(), platform.machine()):
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    bf16 = sorted(f for f in flags if "bf16" in f)
    return f"{name} ({platform.machine()}; bf16 instructions: {', '.join(bf16) or 'none'})"


def rounds(text: str) -> int:
    """argparse type of --rounds: a whole number of at least 1 (a median needs a round)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return n


def machine() -> str:
    cuda = torch.cuda.is_available()
    gpu = f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}" if cuda else "no GPU"
    return (f"machine: {cpu_name()}, {os.cpu_count()} CPUs, {gpu}; python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"transformers {transformers.__version__}, peft {peft.__version__}")


def loraplus_optimizer(model, cfg: TrialConfig) -> torch.optim.Optimizer:
    """PEFT's LoRA+ AdamW over `model`, which it moves to the GPU when there is one."""
    cuda = torch.cuda.is_available()
    return create_loraplus_optimizer(
        model.to("cuda" if cuda else "cpu"), torch.optim.AdamW, lr=cfg.eta_a, loraplus_lr_ratio=cfg.lam,
        loraplus_weight_decay=cfg.weight_decay, betas=cfg.betas, eps=1e-8,
        fused=True if cuda else None,  # as the engine (sweep.engine.optim.build_optimizer)
    )


def training_arguments(cfg: TrialConfig, out: str, n_train: int, group: bool) -> TrainingArguments:
    """The Trainer's settings for `cfg` on `n_train` examples: no evaluation, saving or logging."""
    return TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size * 2,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.eta_a,
        lr_scheduler_type=cfg.schedule,
        # Integer steps, computed as the engine does (transformers 4 and 5 read ratios differently).
        warmup_steps=math.ceil(cfg.warmup_ratio * math.ceil(n_train / cfg.batch_size) * cfg.epochs),
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        bf16=cfg.precision == "bf16",
        **(GROUP_BY_LENGTH if group else {}),
    )


def train(model, args: TrainingArguments, rows: list, collator, optimizers) -> tuple[Trainer, float]:
    """The trained Trainer and the seconds of its training loop."""
    clock = TrainClock()
    trainer = Trainer(model=model, args=args, train_dataset=Rows(rows), data_collator=collator,
                      optimizers=optimizers, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # its end-of-training log line; the table says it all
    trainer.train()
    return trainer, clock.seconds


def run_trainer(cfg: TrialConfig, task, train_enc, val_enc, tokenizer, pad_to_max: bool, group: bool = False):
    model = load_model(cfg, task.num_labels, task.label_names)
    optimizer = loraplus_optimizer(model, cfg)
    pad_to = cfg.max_length if pad_to_max else None
    pad_id = tokenizer.pad_token_id
    train_rows = _rows(train_enc, cfg.train_limit or len(train_enc), pad_to, pad_id)
    val_rows = _rows(val_enc, len(val_enc), pad_to, pad_id)
    with tempfile.TemporaryDirectory() as out:
        args = training_arguments(cfg, out, len(train_rows), group)
        collator = None if pad_to_max else DataCollatorWithPadding(tokenizer)
        trainer, train_s = train(model, args, train_rows, collator, (optimizer, None))
        pred = trainer.predict(Rows(val_rows))
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    # The labels as predict returns them: with length grouping it orders the evaluation set too.
    metric = compute(task.metrics, np.argmax(logits, -1), pred.label_ids)[task.main_metric]
    tokens = int(sum(sum(r["attention_mask"]) for r in train_rows) * cfg.epochs)
    return tokens / train_s, metric, train_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--train", type=int, default=1024, help="training examples")
    parser.add_argument("--eval", type=int, default=None, help="validation examples (default: all)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--eta-a", type=float, default=2e-3, help="high enough to learn in one short epoch")
    parser.add_argument("--lambda", dest="lam", type=float, default=8.0)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="bf16: autocast on both sides; auto: fp32, then bf16 where it is native")
    parser.add_argument("--compile", action="store_true", help="add the engine under torch.compile")
    parser.add_argument("--rounds", type=rounds, default=1, help="each side this many times, medians")
    parser.add_argument("--no-pad", action="store_true", help="leave out (c), the slowest side")
    parser.add_argument("--no-trainer", action="store_true",
                        help="the engine's rows alone (with --compile: what compiling does to it)")
    args = parser.parse_args()
    quiet()

    cfg = TrialConfig(model=args.model, task=args.task, eta_a=args.eta_a, lam=args.lam, rank=8, batch_size=32,
                      max_length=args.max_length, epochs=args.epochs, warmup_ratio=0.06,
                      train_limit=args.train, eval_limit=args.eval, device="auto", precision="fp32")
    task = load_task(cfg.task)
    tokenizer = load_tokenizer(cfg)
    train_enc, evals = encode_task(task, tokenizer, cfg.max_length)
    # The examples run_trial trains and evaluates on: its fixed samples of train_limit and eval_limit.
    strat = not task.is_regression
    train_enc = train_enc.sample(cfg.train_limit, strat)
    val_enc = evals["validation"].sample(cfg.eval_limit, strat)
    n = len(train_enc)
    lengths = train_enc.lengths[:n]
    cuda = torch.cuda.is_available()
    print(machine())
    print(f"task {task.name}: {n} training examples x {cfg.epochs:g} epochs, {len(val_enc)} validation; "
          f"tokens/example mean {lengths.mean():.1f}, std {lengths.std():.1f}, max {lengths.max()} "
          f"(max_length {cfg.max_length})")
    print(f"eta_A {cfg.eta_a:g}, lambda {cfg.lam:g}, rank {cfg.rank}, batch {cfg.batch_size}, "
          f"on {'the GPU' if cuda else 'the CPU'}")
    precisions = ["fp32", "bf16"] if args.precision == "auto" and (cuda or native_cpu_bf16()) else (
        ["fp32"] if args.precision == "auto" else [args.precision])
    if args.precision == "auto" and precisions == ["fp32"]:
        print("bf16: not run, this CPU has no native bf16 (AVX512-BF16 or AMX-BF16): it would be emulated")

    for precision in precisions:
        cfg_p = cfg.replace(precision=precision)
        first = []
        if cuda:
            # CUDA loads a kernel on its first use, and batches of many widths use many kernels: a first
            # pass in this precision loads them, so no timed side pays for it. Its row is what the
            # first trial of a trial process pays.
            r = run_trial(cfg_p, task=task)
            first.append(("(a0) the engine's first pass in this process and precision", r.tokens_per_s,
                          r.metric, r.train_time_s))
            print(f"  {precision}, (a0): {r.tokens_per_s:,.0f} tokens/s, training {r.train_time_s:.1f} s",
                  flush=True)

        trainer = functools.partial(run_trainer, cfg_p, task, train_enc, val_enc, tokenizer)
        sides = [("(a) loraplus-sweep engine", functools.partial(run_engine, cfg_p, task))]
        if args.compile:
            sides.append(("(a') the engine, model under torch.compile(dynamic=True)",
                          functools.partial(run_engine, cfg_p, task, compiled=True)))
            sides.append(("(a'') the same, torch's dropout (fused by inductor)",
                          functools.partial(run_engine, cfg_p, task, compiled=True, torch_dropout=True)))
        sides += [] if args.no_trainer else [
            ("(b) Trainer + create_loraplus_optimizer, dynamic padding",
             functools.partial(trainer, pad_to_max=False)),
            ("(b') the same + length-grouped sampling",
             functools.partial(trainer, pad_to_max=False, group=True)),
        ]
        if not args.no_pad and not args.no_trainer:
            sides.append(("(c) Trainer + create_loraplus_optimizer, pad to max_length",
                          functools.partial(trainer, pad_to_max=True)))
        # Rounds of every side in turn: a slow spell of a shared machine lands on all sides alike.
        runs: dict[str, list] = {name: [] for name, _ in sides}
        for r in range(args.rounds):
            for name, side in sides:
                start = time.perf_counter()
                runs[name].append(side())
                # As it goes, so that a run stopped early (a time limit) still says what it measured.
                tps, _, secs = runs[name][-1]
                print(f"  {precision}, round {r + 1}, {name.split()[0]}: {tps:,.0f} tokens/s, training "
                      f"{secs:.1f} s, the whole side {time.perf_counter() - start:.1f} s", flush=True)
        rows = first + [(name, statistics.median(tps for tps, _, _ in results), *results[-1][1:])
                        for name, results in runs.items()]

        base = rows[1 if cuda else 0][1]
        median = " (median of each side's rounds)" if args.rounds > 1 else ""
        print(f"\n{precision}{median}:")
        print(f"{'side':<62} {'tokens/s':>9} {'(a)/x':>6} {task.main_metric:>9} {'train s':>8}")
        for name, tps, metric, secs in rows:
            print(f"{name:<62} {tps:>9,.0f} {base / tps:>6.2f} {metric:>9.4f} {secs:>8.1f}")
        if args.rounds > 1:
            print("(tokens/s of each round: " + "; ".join(
                f"{name.split()[0]} " + ", ".join(f"{tps:,.0f}" for tps, _, _ in results)
                for name, results in runs.items()) + ")")


def run_engine(cfg: TrialConfig, task, compiled: bool = False, torch_dropout: bool = False
               ) -> tuple[float, float, float]:
    """(tokens/s, metric, training seconds) of one engine trial, its model compiled or not."""
    r = run_compiled(cfg, task, torch_dropout) if compiled else run_trial(cfg, task=task)
    return r.tokens_per_s, r.metric, r.train_time_s


def run_compiled(cfg: TrialConfig, task, torch_dropout: bool):
    """run_trial with the prepared model compiled in place before its first step; with
    `torch_dropout`, its dropout left as torch's (no numpy-drawn masks)."""
    prepare, masks = sweep.engine.train.prepare, sweep.engine.kinds.numpy_dropout

    def compiled(*args, **kwargs):
        work = prepare(*args, **kwargs)
        work.model.compile(dynamic=True)
        return work

    sweep.engine.train.prepare = compiled
    if torch_dropout:
        sweep.engine.kinds.numpy_dropout = lambda model, seed: 0
    try:
        return run_trial(cfg, task=task)
    finally:
        sweep.engine.train.prepare, sweep.engine.kinds.numpy_dropout = prepare, masks


if __name__ == "__main__":
    main()
