"""Side-by-side throughput and validation loss on a causal LM: this engine vs HF Trainer + PEFT's LoRA+.

The embedded SmolLM2-135M-Instruct learns bbc-headlines (an article's opening -> its headline). Both
sides train on the same rows, encoded once by sweep.data.lm_batches.encode_lm, so the loss masks are the
same (the headline and its EOS are trained, the prompt is not), with the same LoRA (every linear layer
of the blocks, rank, alpha), init seed, eta_A, lambda, batch, steps, learning-rate schedule, gradient
clipping and precision, one after the other in one process, on the GPU when there is one:
  (a) loraplus-sweep's engine: run_trial with kind causal-lm (length-grouped batches, dynamic
      padding, logits only at the positions that predict a trained token),
  (b) HF Trainer + peft.optimizers.create_loraplus_optimizer with dynamic padding (ids padded with
      the pad id, labels with -100, as sweep.data.lm_batches.collate_lm pads) and length-grouped
      sampling: its best documented settings. It is handed the engine's schedule
      (sweep.engine.train.lr_factor), so both sides step through the same learning rates (the Trainer's
      own warmup would take its first step at learning rate 0).
Tokens/s counts real (non-padding) training tokens, as each side makes its batches, over the
training time alone (the engine's TrialResult.train_time_s; the Trainer's loop from its
on_train_begin to its on_train_end). The validation loss per completion token of each trained model
is sweep.engine.lm_eval.token_loss on the same held-out rows, in the run's precision. Prints the machine,
the settings and a table. The default sizes are those of the study smollm2-bbc-headlines (320 rows,
one pass at batch 8: 40 steps; 100 validation rows). `--precision bf16` needs a CPU with bf16
instructions (AVX-512 BF16, AMX) or a GPU: without them (the machine line says) autocast emulates
bf16, and a SmolLM2 step took 35 times as long as in fp32 on a 2-core AMD EPYC.
Usage: python benchmarks/lm_engine_vs_trainer.py [--train N] [--eval N] [--epochs E] [--max-length L]
                                                 [--batch B] [--rank R] [--eta-a X] [--lambda L]
                                                 [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from engine_vs_trainer import loraplus_optimizer, machine, quiet, train, training_arguments

from sweep.core.errors import SweepError
from sweep.data.config import TrialConfig
from sweep.data.lm_batches import LMEncoded, collate_lm, encode_lm
from sweep.data.lm_tasks import load_lm_task
from sweep.data.result import TrialResult
from sweep.engine.kinds import sample_rows  # the fixed sample of train_limit / eval_limit rows
from sweep.engine.lm_eval import TokenLoss, token_loss
from sweep.engine.models import load_causal_lm, load_tokenizer, pad_token_id
from sweep.engine.precision import autocast
from sweep.engine.train import lr_factor, resolve_device, run_trial


@dataclass(frozen=True)
class LMData:
    """The training and validation rows of a run, as both sides read them."""

    pad_id: int
    train: LMEncoded
    val: LMEncoded


@dataclass(frozen=True)
class Side:
    name: str
    tokens: int  # real (non-padding) training tokens
    seconds: float  # training time
    loss: TokenLoss  # on the validation rows, per completion token

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def lm_data(cfg: TrialConfig) -> LMData:
    """The rows a causal-LM trial of `cfg` trains and evaluates on, encoded as it encodes them."""
    task = load_lm_task(cfg.task)
    tokenizer = load_tokenizer(cfg)

    def encode(rows: tuple, n: int | None) -> LMEncoded:
        return encode_lm(sample_rows(rows, n), tokenizer, cfg.max_length)

    return LMData(pad_token_id(tokenizer), encode(task.train, cfg.train_limit),
                  encode(task.validation, cfg.eval_limit))


def validation_loss(model, cfg: TrialConfig, data: LMData) -> TokenLoss:
    """What a trial evaluates: token_loss on the validation rows, in the run's precision."""
    device = next(model.parameters()).device
    with autocast(cfg, device):
        return token_loss(model, data.val, data.pad_id, cfg.batch_size * 2, device)


def run_engine(cfg: TrialConfig, data: LMData) -> tuple[Side, TrialResult]:
    losses = []
    result = run_trial(cfg, on_end=lambda model, _: losses.append(validation_loss(model, cfg, data)))
    if not losses:
        raise SweepError(f"the engine's run did not complete: {result.stop_reason}")
    return Side("(a) loraplus-sweep engine", result.tokens, result.train_time_s, losses[0]), result


class PadAndCount:
    """The Trainer's collator: dynamic padding by sweep.data.lm_batches.collate_lm, counting real tokens."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id
        self.tokens = 0

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        enc = LMEncoded(tuple(r["input_ids"] for r in rows), tuple(r["labels"] for r in rows),
                        np.array([len(r["input_ids"]) for r in rows], dtype=np.int64))
        self.tokens += int(enc.lengths.sum())
        return collate_lm(enc, np.arange(len(enc)), self.pad_id)


def run_lm_trainer(cfg: TrialConfig, data: LMData) -> tuple[Side, TokenLoss]:
    """(b), and the validation loss of its model before training (LoRA's B = 0: the base model)."""
    model = load_causal_lm(cfg, data.pad_id)
    optimizer = loraplus_optimizer(model, cfg)
    before = validation_loss(model, cfg, data)
    steps = max(1, math.ceil(cfg.epochs * math.ceil(len(data.train) / cfg.batch_size)))  # as run_trial
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps))
    rows = [{"input_ids": i, "labels": lab} for i, lab in zip(data.train.input_ids, data.train.labels,
                                                              strict=True)]
    collator = PadAndCount(data.pad_id)
    with tempfile.TemporaryDirectory() as out:
        args = training_arguments(cfg, out, len(rows), group=True)
        trainer, seconds = train(model, args, rows, collator, (optimizer, scheduler))
    if trainer.state.global_step != steps:
        raise SweepError(f"the Trainer took {trainer.state.global_step} steps, the engine {steps}")
    name = "(b) Trainer + create_loraplus_optimizer, dynamic padding, length-grouped"
    return Side(name, collator.tokens, seconds, validation_loss(trainer.model, cfg, data)), before


def compare(cfg: TrialConfig, data: LMData,
            show: Callable[[Side], None] = lambda side: None) -> tuple[list[Side], TrialResult, TokenLoss]:
    """Both sides on `data` (lm_data(cfg)), each shown as it ends: ([engine, Trainer], the engine's
    result, the validation loss before training)."""
    if resolve_device(cfg.device).type == "cuda":  # CUDA's start-up in untimed steps, not in row (a)
        run_trial(cfg.replace(max_steps=3, eval_limit=8))
    engine, result = run_engine(cfg, data)
    show(engine)
    trainer, before = run_lm_trainer(cfg, data)
    show(trainer)
    return [engine, trainer], result, before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="bbc-headlines")
    parser.add_argument("--train", type=int, default=320, help="training rows")
    parser.add_argument("--eval", type=int, default=100, help="validation rows")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--eta-a", type=float, default=2e-4)
    parser.add_argument("--lambda", dest="lam", type=float, default=16.0)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: autocast on both sides")
    args = parser.parse_args()
    quiet()

    cfg = TrialConfig(model=args.model, task=args.task, kind="causal-lm", eta_a=args.eta_a, lam=args.lam,
                      rank=args.rank, batch_size=args.batch, max_length=args.max_length, epochs=args.epochs,
                      warmup_ratio=0.06, train_limit=args.train, eval_limit=args.eval, device="auto",
                      precision=args.precision)
    data = lm_data(cfg)
    steps = max(1, math.ceil(cfg.epochs * math.ceil(len(data.train) / cfg.batch_size)))
    print(machine())
    print(f"{cfg.model} on {cfg.task}: {len(data.train)} training rows x {cfg.epochs:g} epochs = {steps} "
          f"steps of {cfg.batch_size}, {len(data.val)} validation rows; tokens/row mean "
          f"{data.train.lengths.mean():.1f}, max {data.train.lengths.max()} (max_length {cfg.max_length}); "
          f"trained (completion) tokens {data.train.trained_tokens} of {int(data.train.lengths.sum())}")
    print(f"LoRA rank {cfg.rank}, alpha {cfg.lora_alpha:g}, every linear layer of the blocks; eta_A "
          f"{cfg.eta_a:g}, lambda {cfg.lam:g}, warmup {cfg.warmup_ratio:g}, {cfg.schedule} schedule, "
          f"max_grad_norm {cfg.max_grad_norm:g}, seed {cfg.seed}, {cfg.precision}, "
          f"on {resolve_device(cfg.device)}\n", flush=True)
    print(f"{'side':<72} {'tokens':>7} {'tokens/s':>9} {'(a)/x':>6} {'val loss':>9} {'train s':>8}")
    rates: list[float] = []

    def show(side: Side) -> None:
        rates.append(side.tokens_per_s)
        print(f"{side.name:<72} {side.tokens:>7} {side.tokens_per_s:>9,.1f} {rates[0] / rates[-1]:>6.2f} "
              f"{side.loss.loss:>9.4f} {side.seconds:>8.1f}", flush=True)

    _, result, before = compare(cfg, data, show)
    print(f"\nvalidation loss per completion token ({before.tokens} tokens) before training: "
          f"{before.loss:.4f}; the engine's own evaluation after it: {result.metric:.4f}")


if __name__ == "__main__":
    try:
        main()
    except SweepError as e:  # input to fix (a task file, a model directory): one line, exit code 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
