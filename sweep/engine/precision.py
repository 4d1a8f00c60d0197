"""A trial's arithmetic: which precision `auto` means on a device, and its autocast."""

from __future__ import annotations

import contextlib
import functools

import torch
from peft.tuners.lora import LoraLayer
from transformers.pytorch_utils import Conv1D

from sweep.core.hardware import native_cpu_bf16
from sweep.data.config import TrialConfig
from sweep.engine.base import DTYPES, base_dtype
from sweep.engine.models import parameter_count


def precision(cfg: TrialConfig, device: torch.device, cpu_bf16: bool | None = None) -> str:
    """What `auto` means here: bf16 autocast on a CPU with native bf16 (`cpu_bf16`, detected unless
    given), fp32 on any other CPU, where bf16 is emulated and slower than fp32, and fp32 on CUDA:
    at a trial's batch sizes arithmetic is not what a GPU waits for, and autocast adds a cast
    before every matmul (benchmarks/precision.py: fp32 was faster on an H100 for every shape from
    MiniLM-L6 to Llama-1B's blocks, and autocast's first trial in a process loads its kernels).
    A bf16 or fp16 base (sweep.engine.base) computes in its own dtype's autocast."""
    count = functools.partial(parameter_count, cfg.model, cfg.trust_remote_code)
    base = base_dtype(cfg, device, count, cpu_bf16)
    if base != "fp32":
        return base
    if cfg.precision != "auto":
        return cfg.precision
    if device.type != "cpu":
        return "fp32"
    native = native_cpu_bf16() if cpu_bf16 is None else cpu_bf16
    return "bf16" if native else "fp32"


def autocast(cfg: TrialConfig, device: torch.device) -> contextlib.AbstractContextManager:
    arithmetic = precision(cfg, device)
    if arithmetic != "fp32":
        return torch.autocast(device.type, dtype=DTYPES[arithmetic])
    return contextlib.nullcontext()


Cast = list[tuple[torch.nn.Parameter, torch.Tensor]]


@torch.no_grad()
def cast_frozen_linears(model: torch.nn.Module, dtype: torch.dtype) -> Cast:
    """Cast the frozen floating weights and biases of `model`'s linear layers (nn.Linear, GPT-2's
    Conv1D) to `dtype` in place; each parameter cast with its former tensor, for uncast(). In a bf16
    trial autocast would otherwise cast each of them again at every forward pass (it keeps the casts
    of trained leaves only): cast once ahead, they give the same bf16 products, bit for bit, without
    the copies. Left as they are: a parameter that another kind of module shares (an LM head tied to
    the input embeddings; the embedding does not autocast), and the base layers of DoRA, which
    takes its weight's norm outside autocast."""
    linear = (torch.nn.Linear, Conv1D)
    others = (m for m in model.modules() if not isinstance(m, linear))
    shared = {id(p) for m in others for p in m.parameters(recurse=False)}
    dora = {id(m.get_base_layer()) for m in model.modules()
            if isinstance(m, LoraLayer) and any(m.use_dora.values())}
    cast: Cast = []
    for module in model.modules():
        # a quantized layer (bitsandbytes' subclasses of nn.Linear) keeps its own arithmetic
        quantized = not getattr(module, "weight", torch.empty(0)).is_floating_point()
        if not isinstance(module, linear) or id(module) in dora or quantized:
            continue
        for p in module.parameters(recurse=False):
            if not p.requires_grad and p.is_floating_point() and p.dtype != dtype and id(p) not in shared:
                cast.append((p, p.data))
                p.data = p.data.to(dtype)
    return cast


def uncast(cast: Cast) -> None:
    """Give the parameters that cast_frozen_linears cast their former tensors back."""
    for p, data in cast:
        p.data = data
