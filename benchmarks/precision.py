"""The engine's throughput in fp32 against bf16 autocast on one model and task: what precision "auto"
should pick on a machine.

Each precision first runs one untimed whole trial: on a GPU, CUDA loads each kernel on its first use,
and a trial over batches of many widths uses many (its figure is printed: what the first trial of a
trial process pays). Then ROUNDS timed trials per precision, the precisions alternating; it prints
each precision's median tokens/s (real training tokens over training time), its metric with the
metric's bootstrap standard error, and the peak memory of the device. Same seed, data and
hyperparameters on each side.
With --flops it also prints the useful matmul FLOP rate of each precision against that precision's
matmul peak on the device: a training token's matmul FLOPs, counted by the profiler over the steps
of two short fp32 trials that differ only in their number of steps (so that their evaluations,
the same, cancel), times the median tokens/s. The bf16 peak is measured only where bf16 is native
(a GPU, or a CPU with AVX512-BF16 or AMX-BF16). With --profile (a CPU) it prints where each
precision's training steps spend their CPU time, the same difference of two profiled trials: the
matmuls' share and their GFLOP/s against the peak, then the other ops that take most.
Usage: python benchmarks/precision.py [--model M] [--task T] [--train N] [--eval N] [--epochs E]
                                      [--batch B] [--max-length L] [--eta-a X] [--rounds R] [--flops]
                                      [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from engine_vs_trainer import machine, quiet, rounds
from torch.profiler import ProfilerActivity, profile

from sweep.core.hardware import native_cpu_bf16
from sweep.data.config import DEFAULT_MODEL, DEFAULT_TASK, TrialConfig
from sweep.data.lm_tasks import task_kind
from sweep.data.result import TrialResult
from sweep.engine.train import resolve_device, run_trial

PRECISIONS = ("fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")  # the products the profiler counts FLOPs of


def compare(cfg: TrialConfig, rounds: int) -> tuple[dict[str, TrialResult], dict[str, list[TrialResult]]]:
    """(each precision's first trial, its `rounds` timed trials): the same trial, precision aside."""
    def trial(precision: str, which: str) -> TrialResult:
        r = run_trial(cfg.replace(precision=precision))
        # As it goes, so that a run stopped early (a time limit) still says what it measured.
        print(f"  {precision}, {which}: {r.tokens_per_s:,.0f} tokens/s, training {r.train_time_s:.1f} s",
              flush=True)
        return r

    first = {p: trial(p, "first trial") for p in PRECISIONS}
    runs: dict[str, list[TrialResult]] = {p: [] for p in PRECISIONS}
    for i in range(rounds):
        for p in PRECISIONS:
            runs[p].append(trial(p, f"round {i + 1}"))
    return first, runs


def profiled_steps(cfg: TrialConfig, precision: str, steps: tuple[int, int]) -> tuple[dict, int]:
    """({op: (self CPU seconds, FLOPs)}, real tokens) of the training steps that a trial of steps[1]
    steps runs beyond one of steps[0], in `precision`: the difference of the two profiled trials, each
    evaluated once at its end on the same examples (so that the evaluations cancel)."""
    counted = []
    for n in steps:
        short = cfg.replace(precision=precision, max_steps=n, eval_every=n)
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            result = run_trial(short)
        ops = {e.key: (e.self_cpu_time_total / 1e6, e.flops) for e in prof.key_averages()}
        counted.append((ops, result.tokens))
    (few, few_tokens), (many, many_tokens) = counted
    diff = {key: (secs - few.get(key, (0.0, 0))[0], flops - few.get(key, (0.0, 0))[1])
            for key, (secs, flops) in many.items()}
    return diff, many_tokens - few_tokens


def train_flops_per_token(cfg: TrialConfig) -> float:
    """Matmul FLOPs per real training token of `cfg`'s trial (forward and backward): the difference
    between fp32 trials of 2 and 6 steps."""
    ops, tokens = profiled_steps(cfg, "fp32", (2, 6))
    return sum(ops[k][1] for k in MATMULS if k in ops) / tokens


def matmul_peak(device: torch.device, precision: str) -> float | None:
    """GFLOP/s of a square matmul in `precision` on `device` (2048 on a CPU, 8192 on a GPU), the best
    of ten timings of five (a shared machine's neighbours can slow a few); None for bf16 where it is
    not native (emulated: no peak to speak of)."""
    if precision == "bf16" and device.type == "cpu" and not native_cpu_bf16():
        return None
    n = 2048 if device.type == "cpu" else 8192
    a, b = (torch.randn(n, n, device=device, dtype=DTYPES[precision]) for _ in range(2))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def seconds() -> float:
        sync()
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        sync()
        return (time.perf_counter() - start) / 5

    seconds()  # warm-up
    return max(2 * n**3 / seconds() / 1e9 for _ in range(10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--train", type=int, default=2048, help="training examples (rows)")
    parser.add_argument("--eval", type=int, default=500, help="validation examples (rows)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=None, help="default: 32 (classification), 8 (causal LM)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--eta-a", type=float, default=None, help="default: 2e-3 (classification), 2e-4 (LM)")
    parser.add_argument("--rounds", type=rounds, default=2)
    parser.add_argument("--profile", action="store_true",
                        help="CPU: each precision's training time by op, and the matmuls' share and rate")
    parser.add_argument("--flops", action="store_true",
                        help="useful matmul GFLOP/s against each precision's peak")
    args = parser.parse_args()
    quiet()

    lm = task_kind(args.task, "auto", None) == "causal-lm"
    cfg = TrialConfig(model=args.model, task=args.task, eta_a=args.eta_a or (2e-4 if lm else 2e-3),
                      lam=16.0 if lm else 8.0, rank=8, batch_size=args.batch or (8 if lm else 32),
                      max_length=args.max_length, epochs=args.epochs, warmup_ratio=0.06,
                      train_limit=args.train, eval_limit=args.eval, device="auto")
    device = resolve_device(cfg.device)
    print(machine())
    print(f"{cfg.model} on {cfg.task} ({'causal LM' if lm else 'classification'}): {args.train} training "
          f"examples x {cfg.epochs:g} epochs, batch {cfg.batch_size}, max_length {cfg.max_length}, "
          f"eta_A {cfg.eta_a:g}, rank {cfg.rank}, on {device}", flush=True)
    first, runs = compare(cfg, args.rounds)
    median = {p: statistics.median(r.tokens_per_s for r in runs[p]) for p in PRECISIONS}
    metric = first["fp32"].metric_name
    print(f"\n{'precision':<10} {'first trial tok/s':>18} {'tokens/s (median)':>18} {'vs fp32':>8} "
          f"{metric + ' +- se':>18} {'peak MB':>9}")
    for p in PRECISIONS:
        last = runs[p][-1]
        print(f"{p:<10} {first[p].tokens_per_s:>18,.0f} {median[p]:>18,.0f} "
              f"{median[p] / median['fp32']:>7.2f}x {last.metric:>9.4f} +- {last.metric_se:.4f} "
              f"{last.peak_memory_mb:>9,.0f}")
    # The two precisions score the same examples: their difference against each one's bootstrap error.
    print(f"{metric} bf16 - fp32: {runs['bf16'][-1].metric - runs['fp32'][-1].metric:+.4f}")
    print("(tokens/s of each round: " + "; ".join(
        f"{p} " + ", ".join(f"{r.tokens_per_s:,.0f}" for r in runs[p]) for p in PRECISIONS) + ")")
    if not (args.profile or args.flops):
        return
    peaks = {p: matmul_peak(device, p) for p in PRECISIONS}
    if args.profile:
        print_profile(cfg, device, peaks)
    if not args.flops:
        return
    per_token = train_flops_per_token(cfg)
    print(f"\nmatmul FLOPs per training token: {per_token / 1e6:,.1f} M")
    for p in PRECISIONS:
        useful = per_token * median[p] / 1e9
        peak = peaks[p]
        of_peak = (f"{useful / peak:.0%} of its matmul peak, {peak:,.0f} GFLOP/s" if peak
                   else "no native bf16 here: no peak measured")
        print(f"{p}: {useful:,.1f} GFLOP/s useful, {of_peak}")


def print_profile(cfg: TrialConfig, device: torch.device, peaks: dict[str, float | None]) -> None:
    """Where each precision's training steps spend their CPU time (steps 3-32, evaluated on 64
    examples): the matmuls' share and rate against `peaks`, then the other ops that take most."""
    if device.type != "cpu":
        print("\n--profile: CPU only (on a GPU the CPU's op times are launch times)")
        return
    for p in PRECISIONS:
        ops, _ = profiled_steps(cfg.replace(eval_limit=64), p, (2, 32))
        total = sum(max(secs, 0.0) for secs, _ in ops.values())
        mm_secs = sum(ops[k][0] for k in MATMULS if k in ops)
        mm_flops = sum(ops[k][1] for k in MATMULS if k in ops)
        peak = peaks[p]
        rate = mm_flops / mm_secs / 1e9
        of_peak = f", {rate / peak:.0%} of the peak, {peak:,.0f}" if peak else ""
        print(f"\n{p}: training steps 3-32, {total:.2f} s of CPU op time: matmuls "
              f"{mm_secs / total:.0%} of it, at {rate:,.0f} GFLOP/s{of_peak}")
        others = sorted(((secs, k) for k, (secs, _) in ops.items() if k not in MATMULS), reverse=True)
        print("  then " + ", ".join(f"{k.removeprefix('aten::')} {secs / total:.0%}"
                                    for secs, k in others[:8]))


if __name__ == "__main__":
    main()
