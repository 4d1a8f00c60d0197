"""A trial's arithmetic: which precision `auto` means on a device, and its autocast."""

from __future__ import annotations

import contextlib

import torch

from sweep.config import TrialConfig
from sweep.hardware import native_cpu_bf16


def precision(cfg: TrialConfig, device: torch.device, cpu_bf16: bool | None = None) -> str:
    """What `auto` means here: bf16 autocast on a CPU with native bf16 (`cpu_bf16`, detected unless
    given), fp32 on any other CPU, where bf16 is emulated and slower than fp32, and fp32 on CUDA:
    at a trial's batch sizes arithmetic is not what a GPU waits for, and autocast adds a cast
    before every matmul (benchmarks/precision.py: fp32 was faster on an H100 for every shape from
    MiniLM-L6 to Llama-1B's blocks, and autocast's first trial in a process loads its kernels)."""
    if cfg.precision != "auto":
        return cfg.precision
    if device.type != "cpu":
        return "fp32"
    native = native_cpu_bf16() if cpu_bf16 is None else cpu_bf16
    return "bf16" if native else "fp32"


def autocast(cfg: TrialConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if precision(cfg, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
