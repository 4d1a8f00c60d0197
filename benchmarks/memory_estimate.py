"""The will-it-fit estimate (sweep.engine.memory) against the measured peak of CPU trials.

Each case runs one short trial in a fresh Python process, which imports what a trial imports, records
its resident set size (VmRSS) and then the trial's peak (VmHWM, reset at the trial's start:
sweep.engine.train); the trial's own memory is the peak less the RSS before it. Printed per case: the
estimate by part, the measured memory, and the estimate's error as a share of the measured.
Cases: SmolLM2-135M (embedded) with an fp32, bf16 and 4-bit base, a random Llama of SmolLM2's vocabulary
at 4 x 256 tokens with and without gradient checkpointing, and MiniLM-L6 classifying Rotten Tomatoes
at batch 32, and on texts longer than max_length (the estimate's worst case).
--shape 8b prints, without measuring, the estimate for a Llama-3.1-8B-shaped model on a GPU at
8 x 1,024 tokens per step, rank 16, in each base form, whole batches, micro-batches of one row, and
micro-batches with gradient checkpointing.
The estimate is of a trial whose buffers of 1 MB or more are mapped on their own (sweep.core.heap), as a
CPU trial has them where memory is short (sweep.engine.memory.maps_its_heap), and so is every measured
case by default; --heap glibc leaves glibc's default, which raises that threshold as buffers are freed,
--heap auto decides as trials do, and --heap both measures mapped and glibc side by side.
Usage: python benchmarks/memory_estimate.py [--cases a,b,...] [--shape 8b] [--heap mapped|glibc|auto|both]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = "apple river stone cloud tiger maple ocean pearl amber lemon".split()


def cases(scratch: Path) -> dict[str, dict]:
    rows = scratch / "long.jsonl"  # completions longer than max_length: every position is trained
    if not rows.exists():
        rows.write_text("".join(json.dumps({"prompt": "say:", "completion": " ".join(
            WORDS[(i + j) % len(WORDS)] for j in range(300))}) + "\n" for i in range(64)))
    texts = scratch / "long.csv"  # texts longer than max_length: every batch is max_length wide
    if not texts.exists():
        texts.write_text("text,label\n" + "".join(
            " ".join(WORDS[(i * j) % len(WORDS)] for j in range(200)) + f",{'ab'[i % 2]}\n"
            for i in range(400)))
    llama = str(scratch / "llama")
    lm = dict(model="smollm2-135m", task="bbc-headlines", train_limit=24, eval_limit=16, max_steps=6,
              eval_every=6, batch_size=1, max_length=128, eta_a=5e-4, lam=16.0, rank=8, device="cpu")
    rnd = dict(model=llama, task=str(rows), train_limit=48, eval_limit=8, max_steps=4, eval_every=4,
               batch_size=4, max_length=256, eta_a=5e-4, lam=16.0, rank=8, device="cpu")
    enc = dict(model="minilm-l6", task="rotten-tomatoes", train_limit=256, eval_limit=64, max_steps=4,
               eval_every=4, batch_size=32, max_length=128, eta_a=5e-4, lam=16.0, rank=8, device="cpu")
    return {
        "smollm2-fp32": {**lm, "base_dtype": "fp32"},
        "smollm2-bf16": {**lm, "base_dtype": "bf16"},
        "smollm2-4bit": {**lm, "quantize": "4bit"},
        "llama-fp32": rnd,
        "llama-checkpointing": {**rnd, "gradient_checkpointing": True},
        "llama-4bit": {**rnd, "quantize": "4bit"},
        "minilm-fp32": enc,
        "minilm-long-fp32": {**enc, "task": str(texts)},
    }


def random_llama(path: Path) -> None:
    """A random Llama with SmolLM2-135M's tokenizer and vocabulary, 4 blocks of width 512."""
    import torch
    import transformers as tf

    from sweep.data.config import TrialConfig
    from sweep.engine.models import load_tokenizer

    if path.exists():
        return
    tokenizer = load_tokenizer(TrialConfig(model="smollm2-135m"))
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1536,
                            num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                            max_position_embeddings=512, tie_word_embeddings=True,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def measure(settings: dict, heap: str = "mapped") -> dict:
    """One trial in this process: its estimate and measured memory, as a dict. heap "mapped" maps its
    large buffers, "glibc" leaves glibc's allocation thresholds at their defaults, "auto" decides as
    trials do (sweep.engine.memory.maps_its_heap); `auto_maps` says what that decision is."""
    import torch

    import sweep.engine.train as train
    from sweep.engine.memory import maps_its_heap

    if heap != "auto":
        train.maps_its_heap = lambda cfg, base: heap == "mapped"

    from sweep.core.quiet import quiet_libraries
    from sweep.data.config import TrialConfig
    from sweep.data.lm_tasks import task_kind
    from sweep.engine.memory import estimate
    from sweep.engine.models import load_config, meta_model
    from sweep.engine.train import run_trial

    quiet_libraries()
    import bitsandbytes  # noqa: F401  (every process holds the same libraries)

    cfg = TrialConfig(**settings)
    kind = task_kind(cfg.task, cfg.kind, cfg.label_column)
    e = estimate(cfg, meta_model(cfg, load_config(cfg), kind), kind, torch.device("cpu"))
    before = _rss()
    r = run_trial(cfg)
    return {"before": before, "peak": r.peak_memory_mb * 2**20, "weights": e.weights, "trained": e.trained,
            "activations": e.activations, "estimate": e.total, "tokens_per_s": r.tokens_per_s,
            "auto_maps": maps_its_heap(cfg, r.base)}


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


LLAMA_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192)


def estimate_8b() -> None:
    import torch
    import transformers as tf

    from sweep.data.config import TrialConfig
    from sweep.engine.memory import estimate

    with torch.device("meta"):
        model = tf.AutoModelForCausalLM.from_config(tf.LlamaConfig(**LLAMA_8B))
    base = TrialConfig(model="llama-3.1-8b-shape", task="rows.jsonl", batch_size=8, max_length=1024, rank=16,
                       device="cuda")
    forms = {"fp32": dict(base_dtype="fp32", precision="fp32"), "bf16": dict(base_dtype="bf16"),
             "4-bit NF4": dict(base_dtype="bf16", quantize="4bit")}
    ways = {"batch 8": dict(gradient_checkpointing=False),
            "micro-batch 1": dict(micro_batch_size=1, gradient_checkpointing=False),
            "batch 8, checkpointing": dict(gradient_checkpointing=True),
            "micro-batch 1, checkpointing": dict(micro_batch_size=1, gradient_checkpointing=True)}
    print("Llama-3.1-8B shape on a GPU, 8 x 1,024 tokens a step, rank 16: estimated peak, GB "
          "(weights + training state + activations)")
    for form, f in forms.items():
        for way, w in ways.items():
            e = estimate(base.replace(**f, **w), model, "causal-lm", torch.device("cuda:0"))
            print(f"  {form:10} {way:30} {e.total / 2**30:6.1f}  = {e.weights / 2**30:.1f} + "
                  f"{e.trained / 2**30:.1f} + {e.activations / 2**30:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="")
    p.add_argument("--shape", choices=["8b"], help="print the estimate for this shape only")
    p.add_argument("--scratch", default=str(Path(tempfile.gettempdir()) / "loraplus-memory-estimate"))
    p.add_argument("--heap", choices=["mapped", "glibc", "auto", "both"], default="mapped")
    p.add_argument("--one", help=argparse.SUPPRESS)  # a case's settings as JSON: measured in this process
    args = p.parse_args()
    if args.shape:
        estimate_8b()
        return
    if args.one:
        print(json.dumps(measure(json.loads(args.one), args.heap)))
        return
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    random_llama(scratch / "llama")
    chosen = cases(scratch)
    names = args.cases.split(",") if args.cases else list(chosen)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, python {platform.python_version()}")
    print(f"{'case':22} {'heap':6} {'weights':>8} {'training':>8} {'activ.':>8} {'estimate':>9} "
          f"{'measured':>9} {'error':>6} {'tokens/s':>9}   (MB; measured: peak less the RSS before it)")
    mb = 2**20
    heaps = ["mapped", "glibc"] if args.heap == "both" else [args.heap]
    for name in names:
        for heap in heaps:
            argv = [sys.executable, __file__, "--one", json.dumps(chosen[name]), "--heap", heap]
            out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                print(f"{name:22} {heap:6} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            measured = r["peak"] - r["before"]
            print(f"{name:22} {heap:6} {r['weights'] / mb:8.0f} {r['trained'] / mb:8.0f} "
                  f"{r['activations'] / mb:8.0f} {r['estimate'] / mb:9.0f} {measured / mb:9.0f} "
                  f"{r['estimate'] / measured - 1:+6.0%} {r['tokens_per_s']:9,.0f}", flush=True)


if __name__ == "__main__":
    main()
