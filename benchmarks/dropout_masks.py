"""What dropout masks cost a CPU trial, and what drawing them from numpy (sweep.core.dropout) saves.

Prints, on this machine:
  1. the time to draw one mask the size of a MiniLM-L6 layer's activations at batch 32 (32 x 27 x
     384), torch's way (F.dropout, bernoulli_) and the engine's (sweep.core.dropout: PCG64 floats);
  2. a profile of one trial with torch's masks: the share of bernoulli_ and of the matmuls, and the
     matmuls' rate against this CPU's measured fp32 matmul peak;
  3. the same trial alternating three ways, ROUNDS times each, in one process: torch's masks, numpy's
     for the dropout modules only (the attention's own dropout left to torch), numpy's for both (what
     a CPU trial does); the median training tokens/s of each and their ratios to torch's.
Usage: python benchmarks/dropout_masks.py [--task T] [--max-length L] [--train N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from precision import MATMULS, matmul_peak
from torch.profiler import ProfilerActivity, profile
from transformers import logging as hf_logging

import sweep.core.dropout
import sweep.engine.kinds
from sweep.data.config import DEFAULT_MODEL, DEFAULT_TASK, TrialConfig
from sweep.data.tasks import load_task
from sweep.engine.train import run_trial


def per_call_ms(f, k: int = 50) -> float:
    f()
    t = time.perf_counter()
    for _ in range(k):
        f()
    return (time.perf_counter() - t) / k * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--train", type=int, default=1024, help="training examples")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}")

    x = torch.randn(32, 27, 384)
    rng = np.random.default_rng(0)
    torch_ms = per_call_ms(lambda: torch.nn.functional.dropout(x, 0.1, True))
    numpy_ms = per_call_ms(lambda: sweep.core.dropout._drop(x, 0.1, rng))  # what a CPU trial runs
    print(f"\n1. one mask of {x.numel():,} activations: torch {torch_ms:.2f} ms, numpy {numpy_ms:.2f} ms "
          f"({torch_ms / numpy_ms:.1f}x)")

    cfg = TrialConfig(model=DEFAULT_MODEL, task=args.task, eta_a=2e-3, lam=8, rank=8, batch_size=32,
                      max_length=args.max_length, epochs=1, warmup_ratio=0.06, train_limit=args.train,
                      eval_limit=64, device="cpu", precision="fp32")
    task = load_task(cfg.task)
    real = sweep.engine.kinds.numpy_dropout
    torch_masks = lambda model, seed: 0  # noqa: E731  (leaves the model's nn.Dropout as it is)

    def modules_only(model, seed: int) -> int:
        changed = real(model, seed)
        for module in model.modules():
            config = getattr(module, "config", None)
            if getattr(config, "_attn_implementation", None) == sweep.core.dropout.ATTENTION:
                config._attn_implementation = "sdpa"
        return changed

    sweep.engine.kinds.numpy_dropout = torch_masks
    run_trial(cfg, task=task)  # warm: caches, allocator
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        r = run_trial(cfg, task=task)
    ops = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    total = sum(ops.values())
    matmul_s = sum(ops.get(k, 0.0) for k in MATMULS)
    flops = sum(e.flops for e in prof.key_averages() if e.key in MATMULS)
    peak = matmul_peak(torch.device("cpu"), "fp32")
    masks_s = ops.get("aten::bernoulli_", 0.0)
    print(f"\n2. one trial with torch's masks ({task.name}, {args.train} examples, batch 32), profiled: "
          f"{total:.1f} s of ops")
    print(f"   bernoulli_ {masks_s:.2f} s ({masks_s / total:.0%}), "
          f"matmuls {matmul_s:.2f} s ({matmul_s / total:.0%})")
    if flops:
        rate = flops / matmul_s / 1e9
        print(f"   matmuls at {rate:.0f} GFLOP/s, {rate / peak:.0%} of this CPU's fp32 matmul peak "
              f"({peak:.0f} GFLOP/s, 2048 x 2048)")
    else:
        print(f"   (the profiler counted no FLOPs; fp32 matmul peak {peak:.0f} GFLOP/s)")

    print(f"\n3. the trial, {args.rounds} times each way, alternating (training tokens/s):")
    ways = {"torch": torch_masks, "numpy modules": modules_only, "numpy all": real}
    runs: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, way in ways.items():
            sweep.engine.kinds.numpy_dropout = way
            r = run_trial(cfg, task=task)
            runs[name].append(r.tokens_per_s)
            print(f"   {name:<14} {r.tokens_per_s:8,.0f}   {r.metric_name} {r.metric:.4f}", flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print("   median: " + ", ".join(f"{k} {v:,.0f} ({v / med['torch']:.2f}x)" for k, v in med.items()))

if __name__ == "__main__":
    main()
