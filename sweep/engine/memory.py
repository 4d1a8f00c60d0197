"""Will a trial fit: its peak memory estimated from the model's shapes before any weight is read, and
checked against what the device has free, with what would make it fit.

The estimate adds up what a training step holds at once:
- the frozen base at its form (sweep.engine.base): 4 or 2 bytes a weight, NF4's half byte and its block
  scales, LLM.int8's byte and row scales; on the CPU an fp32 base is kept once more for the slot's
  next trial (sweep.engine.models._base_model), and bf16 autocast over an fp32 base casts its linears once;
- what trains (LoRA, DoRA magnitudes, a classifier's head) in fp32, with its gradient and AdamW's two
  moments: 16 bytes a parameter;
- the activations a micro-batch keeps for the backward pass, counted per block from the tensors the
  layers save (sweep.engine.memory._block_elements), or one block's input per block with gradient
  checkpointing; and a causal LM's vocabulary-wide logits with the loss's fp32 copies of them.
Checked against the measured peaks of CPU trials (tests/test_memory.py); the constants are what a
CPU trial's process holds besides the trial (its libraries) and the margin a GPU needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import torch

from sweep.core.errors import SweepError
from sweep.data.config import TrialConfig
from sweep.engine.lm_eval import LOSS_CHUNK

GB = 2**30
# A trial's process on the CPU holds its libraries (torch, transformers, PEFT) besides the trial:
# 0.49 GB measured before a trial (benchmarks/base_dtype_memory.py, "RSS before").
CPU_PROCESS_BYTES = int(0.5 * GB)
# A CUDA context and the allocator's rounding; the caching allocator's fragmentation besides.
CUDA_PROCESS_BYTES = int(0.75 * GB)
# The share of free memory a trial may plan to use: the estimate is not exact (within 25 % of the
# measured peaks it was checked against), and a trial that runs out of memory fails late.
USABLE_SHARE = 0.9
# Config fields of models that change their logits after the output layer (Gemma 2's soft-cap,
# Cohere's and Granite's scales): their loss takes the model's own logits, every position at once.
AFTER_HEAD = ("final_logit_softcapping", "logit_scale", "logits_scaling")


@dataclass(frozen=True)
class Estimate:
    """A trial's peak memory in bytes, by part."""

    weights: int  # the frozen base at its form, with any copy the trial keeps of it
    trained: int  # trained parameters, their gradients and AdamW's moments
    activations: int  # what the backward pass keeps, and the logits

    @property
    def total(self) -> int:
        return self.weights + self.trained + self.activations

    def describe(self) -> str:
        return (f"{gb(self.total)} (weights {gb(self.weights)}, training state {gb(self.trained)}, "
                f"activations {gb(self.activations)})")


def gb(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= 0.1 * GB else f"{n / 2**20:.0f} MB"


def estimate(cfg: TrialConfig, model: torch.nn.Module, kind: str, device: torch.device,
             rank: int | None = None) -> Estimate:
    """The peak of a trial of `cfg` on `device`; `model` is the task's model class built on the meta
    device (no weights), `rank` the largest rank the study's trials take (cfg.rank unless given)."""
    from sweep.engine.base import DTYPES, base_dtype
    from sweep.engine.models import CAUSAL_LM_TARGETS, adapted_layers, default_target_modules
    from sweep.engine.precision import precision

    count = sum(p.numel() for p in model.parameters())
    base = base_dtype(cfg, device, count)
    arithmetic = precision(cfg, device)
    act = 4 if arithmetic == "fp32" else 2
    config = model.config
    targets = cfg.target_modules or (CAUSAL_LM_TARGETS if kind == "causal-lm"
                                     else default_target_modules(config.model_type))
    adapted = {name for name, _ in adapted_layers(model, targets)}
    output = model.get_output_embeddings() if kind == "causal-lm" else None
    head = _head_parameters(model) if kind != "causal-lm" else set()
    rank = rank or cfg.rank

    weights = linears = trained = 0
    base_bytes = DTYPES[base].itemsize
    seen: set[int] = set()  # a tied output layer is the input embedding: its weight counts once
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        if not own:
            continue
        if any(id(p) in head for p in own):
            trained += sum(p.numel() for p in own)
            continue
        linear = isinstance(module, torch.nn.Linear) and module is not output
        for p in own:
            if linear and p.dim() == 2:
                linears += p.numel()
                weights += _quantized_bytes(p, cfg.quantize, base_bytes)
            else:
                weights += p.numel() * base_bytes
        if name in adapted:
            out_features, in_features = module.weight.shape
            trained += rank * (in_features + out_features) + (out_features if cfg.use_dora else 0)
    if device.type == "cpu" and cfg.quantize == "none" and base == "fp32":
        from sweep.engine.models import BASE_CACHE_SHARE, _memory_bytes

        if weights <= BASE_CACHE_SHARE * _memory_bytes():
            weights *= 2  # the copy a slot keeps for its next trial
        if arithmetic != "fp32":
            weights += linears * 2  # bf16 autocast casts the frozen linears once (sweep.engine.precision)

    tokens = min(cfg.micro_batch_size or cfg.batch_size, cfg.batch_size) * cfg.max_length
    hidden = _get(config, "hidden_size", "n_embd", "d_model", "dim")
    inner = _get(config, "intermediate_size", "n_inner", "ffn_dim", "hidden_dim") or 4 * hidden
    layers = _get(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    heads = _get(config, "num_attention_heads", "n_head", "num_heads")
    decoder = kind == "causal-lm" or bool(getattr(config, "is_decoder", False)) or output is not None
    per_block = _block_elements(tokens, hidden, inner, heads, cfg.max_length, decoder, cfg.dropout > 0)
    if cfg.checkpointing:
        kept = layers * tokens * hidden + per_block  # each block's input, one block recomputed
    else:
        kept = layers * per_block
    activations = kept * act + 3 * tokens * hidden * 4  # and the embeddings' and last norm's
    if kind == "causal-lm":
        logits = tokens * _get(config, "vocab_size")
        if not any(getattr(config, name, None) for name in AFTER_HEAD):
            logits = min(logits, LOSS_CHUNK)  # made a chunk at a time (sweep.engine.lm_eval.chunked_nll)
        # the logits in the compute dtype, their fp32 copy, the log-softmax the loss keeps and its
        # gradient: every position of a micro-batch at most (the trained ones are computed)
        activations += logits * (act + 12)
    if cfg.quantize != "none" and device.type == "cpu":
        # each quantized layer dequantizes its weight in every pass; glibc keeps the pages those
        # freed copies took among the activations: about half the dequantized linears (SmolLM2-135M)
        activations += linears * act // 2
    return Estimate(weights=weights, trained=trained * 16, activations=activations)


def _block_elements(tokens: int, hidden: int, inner: int, heads: int, length: int, decoder: bool,
                    dropout: bool) -> int:
    """The elements one block keeps for the backward pass of a micro-batch of `tokens` tokens.

    A decoder block (pre-norm, gated MLP, SDPA without the attention matrix): the two norms' inputs
    and outputs, the rotated queries and keys, the values, the attention output (6 x hidden), and the
    MLP's gate, activation, up projection and their product (4 x inner). An encoder block (post-norm,
    GELU MLP, dropout in training, attention through its probabilities): the attention's input, its
    queries, keys, values and context, the output projections' inputs and outputs, the norms' inputs
    and the dropout masks (10 x hidden), the GELU's input and output (2 x inner), and the attention
    probabilities, their dropout mask and the dropped ones (3 x heads x length^2 a row). (MiniLM-L6 at
    32 x 128 tokens measured 15 % below this, with large buffers mapped: sweep.core.heap.)
    LoRA dropout keeps each adapted layer's own dropped input and mask besides.
    """
    if decoder:
        n = tokens * (8 * hidden + 4 * inner)
    else:
        n = tokens * (10 * hidden + 2 * inner) + 3 * heads * length * tokens
    if dropout:
        n += tokens * (6 * hidden + inner) * 5 // 4  # the dropped inputs (and their byte masks)
    return n


def _quantized_bytes(p: torch.nn.Parameter, quantize: str, base_bytes: int) -> int:
    if quantize == "4bit":  # NF4: half a byte, a byte of scale per 64 (double quantization)
        return p.numel() // 2 + p.numel() // 64
    if quantize == "8bit":  # LLM.int8: a byte, and an fp32 scale per row
        return p.numel() + 4 * p.shape[0]
    return p.numel() * base_bytes


def _head_parameters(model: torch.nn.Module) -> set[int]:
    from sweep.engine.models import HEAD_MODULES

    return {id(p) for name, p in model.named_parameters() if name.split(".", 1)[0] in HEAD_MODULES}


def _get(config, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    sub = getattr(config, "text_config", None)  # a multimodal model's language part
    return _get(sub, *names) if sub is not None and sub is not config else 0


def free_bytes(device: torch.device) -> int | None:
    """Memory free for a trial on `device` (None where unknown): the CPU's available memory less what
    a trial's process holds besides, or a GPU's free memory (nvidia-smi: CUDA stays uninitialised in
    this process) less a CUDA context."""
    if device.type == "cpu":
        try:
            for line in open("/proc/meminfo"):
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 - CPU_PROCESS_BYTES
        except OSError:
            return None
        return None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    index = device.index or 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if index < len(ids):
            index = ids[index]
    try:
        out = subprocess.run([smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i",
                              str(index)], capture_output=True, text=True, timeout=10, check=True)
        return int(out.stdout.split()[0]) * 2**20 - CUDA_PROCESS_BYTES
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def maps_its_heap(cfg: TrialConfig, base: str) -> bool:
    """Whether a CPU trial of `cfg`, its base loaded as `base`, has its large buffers mapped on their
    own (sweep.core.heap.map_large_buffers): where its base is loaded to save memory (4-bit, 8-bit,
    bf16, fp16), or where memory is short: its estimate with the activations counted twice (glibc's
    heap kept freed activations resident: a random 4-block Llama trial peaked at 1,081-1,170 MB against
    564 MB mapped) above half the free memory. Elsewhere speed wins: a mapped buffer costs its page
    faults each time it is made, and mapped, that Llama trained at 0.80 of glibc's speed and MiniLM-L6
    at 32 x 128 tokens at 0.79 (medians of three paired rounds: benchmarks/heap_speed.py,
    benchmarks/results/heap-speed-epyc.txt). Where no estimate can be made, they are mapped."""
    from sweep.data.lm_tasks import task_kind
    from sweep.engine.models import load_config, meta_model

    if base != "fp32":
        return True
    device = torch.device("cpu")
    free = free_bytes(device)
    try:
        kind = task_kind(cfg.task, cfg.kind, cfg.label_column)
        need = estimate(cfg, meta_model(cfg, load_config(cfg), kind), kind, device)
    except (SweepError, OSError, ValueError, TypeError):  # the trial itself says why, if it must
        return True
    return free is None or need.total + need.activations > free / 2


def check_fits(cfg: TrialConfig, model: torch.nn.Module, kind: str, device: torch.device,
               rank: int | None = None, trials_at_once: int = 1, free: int | None = None) -> Estimate:
    """Refuse, in one line naming what would make it fit, a trial whose estimated peak is more than
    the device's free memory (`free`, or read from the device) shares among `trials_at_once` trials."""
    need = estimate(cfg, model, kind, device, rank)
    free = free_bytes(device) if free is None else free
    if free is None:
        return need
    budget = int(free * USABLE_SHARE) // max(1, trials_at_once)
    if need.total <= budget:
        return need
    where = "the CPU" if device.type == "cpu" else str(device)
    share = f" shared by {trials_at_once} trials at once" if trials_at_once > 1 else ""
    ways = []
    for flag, change in _remedies(cfg, kind):
        after = estimate(cfg.replace(**change), model, kind, device, rank).total
        ways.append((after, f"{flag} (about {gb(after)})"))
    fitting = [w for after, w in sorted(ways) if after <= budget]
    advice = ("; it would fit with " + " or ".join(fitting[:3])) if fitting else (
        "; even " + ", ".join(w for _, w in sorted(ways)[:3]) + " would not fit it"
        if ways else "")
    raise SweepError(f"a trial of {cfg.model} needs about {need.describe()} at its peak, more than the "
                     f"{gb(max(free, 0))} free on {where}{share}{advice}")


def _remedies(cfg: TrialConfig, kind: str):
    """(flag, the settings it changes) that lower a trial's peak, each alone."""
    if cfg.quantize == "none":
        yield "--quantize 4bit", {"quantize": "4bit"}
    elif cfg.quantize == "8bit":
        yield "--quantize 4bit", {"quantize": "4bit"}
    micro = min(cfg.micro_batch_size or cfg.batch_size, cfg.batch_size)
    if micro > 1:
        yield "--micro-batch-size 1", {"micro_batch_size": 1}
    if not cfg.checkpointing:
        yield "--gradient-checkpointing", {"gradient_checkpointing": True}
    if cfg.base_dtype in ("auto", "fp32") and cfg.quantize == "none" and cfg.precision != "fp32":
        yield "--base-dtype bf16", {"base_dtype": "bf16"}
