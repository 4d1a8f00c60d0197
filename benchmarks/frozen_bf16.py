"""What casting the frozen weights to bf16 once saves a bf16 training step, against autocast casting
them at every forward pass; measured step by step, not trial by trial.

One model and optimizer, one stream of training batches; each round runs every side in turn (the
order rotating), each side one untimed step (so that it starts from its own allocations) and three
timed ones on the round's batches. A shared machine's slow spells then land on every side alike,
and differences of a few percent, which whole trials on such a machine cannot resolve, show. The
third side is the engine's own step again: its ratio to the second is what the method resolves.
The products are the same on every side (tests/test_model_matrix.py checks it bit for bit).
With --fp32 a fourth side runs the step in fp32 (no autocast, the frozen weights fp32): what
precision "auto" picks on a GPU, against the bf16 step as the engine now runs it. On CUDA each timed
step ends with a synchronize, so its time is the device's.
Usage: python benchmarks/frozen_bf16.py [--model M] [--task T] [--batch B] [--rounds R]
                                        [--device cpu|cuda] [--fp32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from engine_vs_trainer import machine, quiet, rounds

from sweep.data.batches import train_batches
from sweep.data.config import DEFAULT_MODEL, DEFAULT_TASK, TrialConfig
from sweep.engine.kinds import prepare
from sweep.engine.optim import build_optimizer
from sweep.engine.precision import autocast, cast_frozen_linears

SIDES = ("autocast casts the frozen weights every step", "cast to bf16 once (the engine)",
         "cast once, again (the control)")
FP32 = "fp32, no autocast"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=rounds, default=60)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--fp32", action="store_true", help=f"a fourth side: {FP32}")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    quiet()
    sides = SIDES + ((FP32,) if args.fp32 else ())

    cfg = TrialConfig(model=args.model, task=args.task, rank=8, eta_a=2e-3, lam=8.0, batch_size=args.batch,
                      max_length=args.max_length, train_limit=2048, eval_limit=64, precision="bf16",
                      device=args.device)
    device = torch.device(args.device)
    work = prepare(cfg, device, None)
    model = work.model.train()
    optimizer = build_optimizer(model, cfg, device)
    cast = cast_frozen_linears(model, torch.bfloat16)
    fp32 = [data for _, data in cast]
    bf16 = [p.data for p, _ in cast]
    batches = train_batches(work.lengths, cfg.batch_size, np.random.default_rng(0))

    def arm(side: str) -> str:
        """Give the frozen weights `side`'s tensors (fp32 where autocast casts them, or fp32 alone);
        its step's precision."""
        tensors = fp32 if side in (SIDES[0], FP32) else bf16
        for (p, _), data in zip(cast, tensors, strict=True):
            p.data = data
        return "fp32" if side == FP32 else "bf16"

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step(idx: np.ndarray, precision: str = "bf16") -> None:
        b = {k: v.to(device, non_blocking=True) for k, v in work.collate(idx).items()}
        with autocast(cfg.replace(precision=precision), device):
            loss = work.loss_sum(b) / work.count(b)
        loss.backward()
        if cfg.max_grad_norm is not None:  # as the engine's step (sweep.engine.train.run_trial)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # Warm: the first steps allocate, and kernels are made (CUDA: loaded) for their shapes.
    for side in sides:
        precision = arm(side)
        for idx in batches[:4]:
            step(idx, precision)
    seconds = {s: [] for s in sides}
    tokens = dict.fromkeys(sides, 0)
    for r in range(args.rounds):
        order = sides[r % len(sides):] + sides[:r % len(sides)]
        for side in order:
            precision = arm(side)
            step(batches[(r * 3 + 7) % len(batches)], precision)
            spent = 0.0
            for j in range(3):
                idx = batches[(r * 3 + j) % len(batches)]
                sync()
                start = time.perf_counter()
                step(idx, precision)
                sync()
                spent += time.perf_counter() - start
                tokens[side] += int(work.lengths[idx].sum())
            seconds[side].append(spent)

    print(machine())
    print(f"{cfg.model} on {cfg.task}, bf16 autocast, batch {cfg.batch_size}, LoRA rank {cfg.rank}, on "
          f"{device.type}: {len(cast)} frozen weights and biases; {args.rounds} rounds of 3 timed steps per "
          "side\n")
    print(f"{'side':<48} {'tokens/s':>9} {'vs first (median of rounds)':>28}")
    for side in sides:
        ratio = statistics.median(a / b for a, b in zip(seconds[SIDES[0]], seconds[side], strict=True))
        print(f"{side:<48} {tokens[side] / sum(seconds[side]):>9,.0f} {ratio:>27.3f}x")


if __name__ == "__main__":
    main()
