"""A LoRA+ training step at the scale users run: per base form (fp32, fp32 with TF32 matmuls, a bf16 base,
a 4-bit NF4 base), tokens/s, model FLOPs utilisation and peak memory.

GPU (the default where CUDA answers): random-weight models of Llama-3.2-1B and Llama-3.1-8B shapes, built
from a config on the GPU (no download, no checkpoint written), LoRA rank 16 on every linear layer of
the blocks, the trial's LoRA+ AdamW groups (sweep.engine.optim) and its loss (sweep.engine.lm_eval:
every position trained), 1,024 random tokens a row, batch 8 in micro-batches (--micro; halved after an
out-of-memory error until one row), bf16 autocast for the bf16 and 4-bit bases as a trial runs them.
Timed steps follow untimed warm-up steps; the peak is torch's allocated peak over the timed steps plus
the weights.
MFU: the step's model FLOPs (4 x the base's parameters a token: forward and the inputs' gradients,
frozen weights having none; plus 12 x layers x hidden x sequence for attention) per second, against
the card's dense bf16 peak (a table of cards, or --peak-tflops).
CPU (--cpu): SmolLM2-135M on its embedded task at max length 512, one fresh process per form
(benchmarks/base_dtype_memory.py), the peak resident set of each and its final loss.
Usage: python benchmarks/llm_scale.py [--shapes 1b,8b] [--forms fp32,tf32,bf16,4bit] [--micro 8]
                                      [--steps 5] [--checkpointing] [--peak-tflops T] [--cpu]
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {  # Llama-3.2-1B and Llama-3.1-8B, and a tiny one that checks the script on a CPU
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True),
    "8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
}
# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity), by a part of the device's name.
PEAKS = {"H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H200": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0,
         "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10G": 70.0, "RTX 4090": 165.2}


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAKS.items() if k in name), None)


def build(shape: str, form: str, device, rank: int, checkpointing: bool):
    """(the PEFT model, the base's parameter count) for a random model of `shape` with its base in `form`."""
    import torch
    import transformers as tf

    from sweep.data.config import TrialConfig
    from sweep.engine.models import CAUSAL_LM_TARGETS, _with_lora

    config = tf.LlamaConfig(**SHAPES[shape], max_position_embeddings=4096)
    dtype = torch.float32 if form in ("fp32", "tf32") else torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        model = tf.AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    n_params = sum(p.numel() for p in model.parameters())
    if form == "4bit":
        _quantize_blocks(model, device)
    model.config.use_cache = False
    cfg = TrialConfig(model="random", task="random", rank=rank, eta_a=1e-4, lam=16.0,
                      device=str(device))
    peft_model = _with_lora(model, cfg, CAUSAL_LM_TARGETS)
    peft_model.trained_in_full = frozenset()
    for p in peft_model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # LoRA in fp32: the optimizer's master weights, as in a trial
    if checkpointing:
        peft_model.get_base_model().gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    return peft_model, cfg, n_params


def _quantize_blocks(model, device) -> None:
    """Each linear layer of the blocks as bitsandbytes NF4 with double quantization and bf16 compute
    (QLoRA's recipe, sweep.engine.base), quantized one at a time onto `device`."""
    import bitsandbytes as bnb
    import torch

    for block in model.model.layers:
        for name, module in list(block.named_modules()):
            if not isinstance(module, torch.nn.Linear):
                continue
            parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
            layer = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                      compute_dtype=torch.bfloat16, compress_statistics=True,
                                      quant_type="nf4", device="meta")
            layer.weight = bnb.nn.Params4bit(module.weight.data.to("cpu"), requires_grad=False,
                                             compress_statistics=True, quant_type="nf4").to(device)
            setattr(parent, name.rsplit(".", 1)[-1], layer)
            del module
        torch.cuda.empty_cache() if torch.cuda.is_available() else None


def measure(shape: str, form: str, args) -> dict:
    import torch

    from sweep.engine.lm_eval import nll_per_example
    from sweep.engine.optim import build_optimizer

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = form == "tf32"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model, cfg, n_params = build(shape, form, device, args.rank, args.checkpointing)
    optimizer = build_optimizer(model, cfg, device)
    length, batch = args.length, args.batch
    micro = min(args.micro, batch)
    config = model.get_base_model().config
    flops_per_token = 4 * n_params + 12 * config.num_hidden_layers * config.hidden_size * length
    gen = torch.Generator(device="cpu").manual_seed(0)
    rows = torch.randint(0, config.vocab_size, (batch, length), generator=gen)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if form in ("bf16", "4bit")
                else torch.autocast(device.type, enabled=False))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for start in range(0, batch, micro):
            ids = rows[start:start + micro].to(device)
            with autocast:
                batch_ = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
                nll, _ = nll_per_example(model, batch_)
                loss = nll.sum() / (batch * (length - 1))
            loss.backward()
            total += float(loss.detach())
        optimizer.step()
        return total

    while True:
        try:
            for _ in range(args.warmup):
                first = step()
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            for _ in range(args.steps):
                last = step()
            if cuda:
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
            break
        except torch.cuda.OutOfMemoryError:
            if micro == 1:
                return {"shape": shape, "form": form, "error": "out of memory at micro-batch 1"}
            micro //= 2
            optimizer.zero_grad(set_to_none=True)
            gc.collect()
            torch.cuda.empty_cache()
    tokens_per_s = args.steps * batch * length / seconds
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    top = peak_tflops(name, args.peak_tflops)
    mfu = tokens_per_s * flops_per_token / (top * 1e12) if top else float("nan")
    return {"shape": shape, "form": form, "micro": micro, "tokens_per_s": tokens_per_s, "mfu": mfu,
            "peak_gb": peak, "loss_first": first, "loss_last": last, "device": name, "params": n_params}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="1b,8b")
    p.add_argument("--forms", default="fp32,tf32,bf16,4bit")
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--micro", type=int, default=8, help="rows a forward pass (halved on out-of-memory)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, where the table lacks it")
    p.add_argument("--device", default=None)
    p.add_argument("--cpu", action="store_true", help="SmolLM2-135M at max length 512 on this CPU")
    args = p.parse_args()
    if args.cpu:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "base_dtype_memory.py"),
               "--forms", "fp32,bf16,4bit,4bit-no-ckpt", "--max-length", "512", "--train", "24",
               "--eval", "16", "--steps", "24", "--batch", "1"]
        raise SystemExit(subprocess.call(cmd))
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    print(f"torch {torch.__version__}, commit {git.stdout.strip()}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    print(f"{args.batch} rows x {args.length} tokens a step, rank {args.rank}, {args.steps} timed steps "
          f"after {args.warmup}{', gradient checkpointing' if args.checkpointing else ''}")
    print(f"{'shape':5} {'form':5} {'micro':>5} {'tokens/s':>9} {'MFU':>6} {'peak GB':>8} {'loss':>13}")
    base = {}
    for shape in args.shapes.split(","):
        for form in args.forms.split(","):
            r = measure(shape, form, args)
            gc.collect()  # the last form's model, before the next is built
            if "error" in r:
                print(f"{shape:5} {form:5} {r['error']}")
                continue
            base.setdefault(shape, r["tokens_per_s"])
            print(f"{shape:5} {form:5} {r['micro']:5d} {r['tokens_per_s']:9.0f} {r['mfu']:6.1%} "
                  f"{r['peak_gb']:8.1f} {r['loss_first']:6.3f}>{r['loss_last']:6.3f}"
                  f"   {r['tokens_per_s'] / base[shape]:.2f}x the first form's tokens/s")
    print(f"(python benchmarks/llm_scale.py {' '.join(sys.argv[1:])})")


if __name__ == "__main__":
    main()
