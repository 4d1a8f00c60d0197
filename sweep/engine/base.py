"""The form a trial's frozen base weights take, decided once before they are loaded: a dtype (fp32,
bf16, fp16), or a bitsandbytes quantization of the linear layers (4-bit NF4, 8-bit LLM.int8).

LoRA, DoRA and head parameters stay fp32 whatever the base: they are what the optimizer updates, and
AdamW's small steps are lost in bf16's 8-bit mantissa.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable

import torch

from sweep.core.errors import SweepError
from sweep.core.hardware import native_cpu_bf16
from sweep.data.config import TrialConfig

# From this many parameters `base_dtype = "auto"` loads the base in bf16 where the device computes bf16
# natively: an fp32 1B model takes 4 GB before its first step, an 8B one 32 GB, more than a 24 GB card.
# Below it the base stays fp32, as every measured trial size ran (docs/speed.md: fp32 was the faster on
# an H100 up to Llama-1B's blocks, and bf16 autocast already casts the frozen linears once).
BF16_FROM_PARAMS = 1_000_000_000

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
QUANT_INSTALL = "pip install 'bitsandbytes>=0.50,<0.51' (or the quant extra: pip install -e '.[quant]')"


def gpu_group(device: str) -> tuple[int, ...]:
    """The GPUs a device setting spreads one trial over (cuda:0+1: 0 and 1), or () for one device."""
    kind, _, ids = device.partition(":")
    if kind != "cuda" or "+" not in ids:
        return ()
    return tuple(int(i) for i in ids.split("+"))


def native_bf16(device: torch.device, cpu_bf16: bool | None = None) -> bool:
    """Whether `device` computes in bf16 natively (`cpu_bf16` stands for the CPU's flags when given)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return native_cpu_bf16() if cpu_bf16 is None else cpu_bf16


def base_dtype(cfg: TrialConfig, device: torch.device, n_params: int | Callable[[], int],
               cpu_bf16: bool | None = None) -> str:
    """What `cfg.base_dtype` means on `device`: as given, or for `auto` bf16 where the model has
    BF16_FROM_PARAMS parameters or more (`n_params`, or a function that counts them, called only
    where the count decides: sweep.engine.models.parameter_count) and the device has native bf16, fp32
    otherwise and wherever `cfg.precision` asks for fp32."""
    if cfg.base_dtype != "auto":
        return cfg.base_dtype
    if cfg.precision == "fp32" or not native_bf16(device, cpu_bf16):
        return "fp32"  # emulated bf16 runs many times slower than fp32 (docs/speed.md)
    count = n_params() if callable(n_params) else n_params
    return "bf16" if count >= BF16_FROM_PARAMS else "fp32"


def quantization_config(cfg: TrialConfig, device: torch.device, keep: tuple[str, ...] = ()):
    """transformers' BitsAndBytesConfig for `cfg.quantize` (None for none): NF4 with double
    quantization and bf16 compute for 4bit (QLoRA's recipe; fp32 compute on a CPU without native bf16,
    where a bf16 product is emulated: a 4-bit SmolLM2-135M trained at a fifth of the speed in bf16,
    README), LLM.int8 for 8bit. `keep`: modules left
    unquantized (a classifier's head, which trains; unset, transformers keeps a causal LM's output
    layer). A one-line error where bitsandbytes is missing or cannot run on `device`."""
    if cfg.quantize == "none":
        return None
    check_quantization(cfg.quantize, device)
    from transformers import BitsAndBytesConfig

    skip = {"llm_int8_skip_modules": list(keep)} if keep else {}
    if cfg.quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=DTYPES[quantized_compute(device)], **skip)
    return BitsAndBytesConfig(load_in_8bit=True, **skip)


def quantized_compute(device: torch.device) -> str:
    """The dtype a 4-bit layer dequantizes to and multiplies in on `device`."""
    return "bf16" if native_bf16(device) else "fp32"


def check_quantization(quantize: str, device: torch.device | str) -> None:
    """Refuse in one line a quantization this machine cannot run: bitsandbytes missing, or unable to
    run the layer on `device` (a device, or a setting: auto, cpu, cuda:N). Tried once per process on a
    small layer, forward and backward, as a trial would use it."""
    if quantize == "none":
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise SweepError(f"quantize {quantize} needs the package bitsandbytes: {QUANT_INSTALL}")
    kind = str(device).split(":")[0]
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    problem = _quantized_layer_problem(quantize, kind)
    if problem:
        raise SweepError(f"quantize {quantize} cannot run on {kind} here: {problem}; use --quantize none"
                         + (" or --device cuda" if kind == "cpu" else ""))
    # LLM.int8 logs at every forward pass that it casts fp32 inputs to fp16, as it is meant to
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


@functools.cache
def _quantized_layer_problem(quantize: str, kind: str) -> str:
    """Why a small bitsandbytes layer of this quantization fails forward and backward on a device of
    this kind (one line), or "" where it runs."""
    try:
        import bitsandbytes as bnb

        if quantize == "4bit":
            layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.bfloat16,
                                      compress_statistics=True, quant_type="nf4")
        else:
            layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
        layer = layer.to(kind)
        if layer.weight.is_floating_point():
            return f"bitsandbytes {bnb.__version__} left the weights unquantized"
        x = torch.randn(2, 64, device=kind, requires_grad=True)
        layer(x).float().sum().backward()
    except Exception as e:  # a build without this device's kernels raises anything from native code
        text = str(e).strip().splitlines()
        return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
    return ""
