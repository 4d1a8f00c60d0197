"""Peak memory of one trial with its base model in each form (sweep.engine.base): fp32, bf16, 4-bit NF4 (with
gradient checkpointing, as a quantized base trains unless told not to, and without) and 8-bit LLM.int8,
with the final loss of each beside fp32's.

Each form runs the same short trial (same seed, data and hyperparameters) in a fresh Python process,
one after the other (--jobs N: N at a time, the slowest first; a process's peak memory is its own,
its speed is not), after an untimed warm-up trial in a process of its own (it converts the embedded
GGUF model and tokenizes the task into the cache, which no measured process then pays). A process
imports everything a trial imports (bitsandbytes too, in every process alike), then records its
resident set size (VmRSS) before the trial; the trial reports its peak resident set size (VmHWM,
reset at its start: sweep.engine.train). Printed per form: the RSS before the trial, the trial's peak, the
peak above the RSS before it (what the trial itself added), each as a share of fp32's, the frozen and
trained parameters' MB by dtype at the end, the final validation loss with its bootstrap standard
error, and the training tokens/s. A form passes where its peak is at most its target share of fp32's
and its loss within two of fp32's standard errors of fp32's.
Usage: python benchmarks/base_dtype_memory.py [--model M] [--task T] [--train N] [--eval N]
                                              [--steps S] [--batch B] [--max-length L] [--eta-a X]
                                              [--jobs N] [--forms fp32,4bit,...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# "4bit" is `--quantize 4bit` as a user runs it: checkpointed, as a quantized base is unless told not to;
# "4bit-no-ckpt" adds --no-gradient-checkpointing.
FORMS = {"fp32": {"base_dtype": "fp32"}, "bf16": {"base_dtype": "bf16"}, "4bit": {"quantize": "4bit"},
         "4bit-no-ckpt": {"quantize": "4bit", "gradient_checkpointing": False}, "8bit": {"quantize": "8bit"}}
# The most of fp32's peak each form may take (none for 8-bit: measured, not targeted).
TARGETS = {"bf16": 0.65, "4bit": 0.50}


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="bbc-headlines")
    p.add_argument("--train", type=int, default=320, help="training examples (a fixed sample)")
    p.add_argument("--eval", type=int, default=200, help="validation examples (a fixed sample)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--eta-a", type=float, default=5e-4)
    p.add_argument("--jobs", type=int, default=1, help="forms measured at a time")
    p.add_argument("--forms", default=",".join(FORMS), help="the forms measured, fp32 always among them")
    p.add_argument("--form", choices=[*FORMS, "warm-up"], help=argparse.SUPPRESS)  # one measured process
    return p.parse_args(argv)


def config(args: argparse.Namespace, form: str):
    from sweep.data.config import TrialConfig

    cfg = TrialConfig(model=args.model, task=args.task, train_limit=args.train, eval_limit=args.eval,
                      max_steps=args.steps, eval_every=args.steps, batch_size=args.batch,
                      max_length=args.max_length, eta_a=args.eta_a, lam=16.0, rank=8, device="cpu")
    if form == "warm-up":
        return cfg.replace(max_steps=1, eval_every=1, eval_limit=8)
    return cfg.replace(**FORMS[form])


def measure(args: argparse.Namespace) -> None:
    """One trial in this process; prints its figures as one JSON line."""
    import torch

    from sweep.core.quiet import quiet_libraries
    from sweep.engine.train import run_trial

    quiet_libraries()
    if importlib.util.find_spec("bitsandbytes") is not None:
        import bitsandbytes  # noqa: F401  (every process holds the same libraries)
    census: dict[str, dict[str, float]] = {"frozen": {}, "trained": {}}

    def count(model, tokenizer) -> None:
        for p in model.parameters():
            side = census["trained" if p.requires_grad else "frozen"]
            key = str(p.dtype).removeprefix("torch.")
            side[key] = side.get(key, 0.0) + p.numel() * p.element_size() / 2**20

    before = rss_mb()
    started = time.perf_counter()
    r = run_trial(config(args, args.form), on_end=count)
    print(json.dumps({"form": args.form, "before_mb": before, "peak_mb": r.peak_memory_mb,
                      "loss": r.metric, "se": r.metric_se, "tokens_per_s": r.tokens_per_s,
                      "steps": r.steps, "precision": r.precision, "census": census,
                      "seconds": time.perf_counter() - started, "threads": torch.get_num_threads()}))


def run_form(form: str, argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv, "--form", form], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{form}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse()
    if args.form:
        measure(args)
        return
    from engine_vs_trainer import machine

    print(machine())
    print(f"{args.model} on {args.task}: {args.train} training examples, {args.steps} steps of {args.batch}, "
          f"max_length {args.max_length}, eta_A {args.eta_a:g}, lambda 16, rank 8, validation loss on "
          f"{args.eval} examples; each form in a fresh process, {args.jobs} at a time", flush=True)
    argv = sys.argv[1:]
    run_form("warm-up", argv)

    def one(form: str) -> dict:
        row = run_form(form, argv)
        print(f"  {form}: peak {row['peak_mb']:,.0f} MB, {row['seconds']:.0f} s", flush=True)
        return row

    # bf16 first: where the CPU has no bf16 instructions its products are emulated, the slowest form
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        wanted = {"fp32", *args.forms.split(",")}
        order = [f for f in ("bf16", "fp32", "4bit", "4bit-no-ckpt", "8bit") if f in wanted]
        done = dict(zip(order, pool.map(one, order), strict=True))
    rows = {form: done[form] for form in FORMS if form in done}
    fp32 = rows["fp32"]
    added32 = fp32["peak_mb"] - fp32["before_mb"]
    print()
    print(f"{'form':12} {'RSS before MB':>13} {'peak MB':>8} {'vs fp32':>8} {'added MB':>9} {'vs fp32':>8} "
          f"{'loss +- se':>17} {'tokens/s':>9}  frozen MB by dtype / trained MB")
    for form, row in rows.items():
        added = row["peak_mb"] - row["before_mb"]
        frozen = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(row["census"]["frozen"].items()))
        trained = ", ".join(f"{k} {v:,.1f}" for k, v in sorted(row["census"]["trained"].items()))
        share = row["peak_mb"] / fp32["peak_mb"]
        print(f"{form:12} {row['before_mb']:>13,.0f} {row['peak_mb']:>8,.0f} {share:>7.0%} "
              f"{added:>9,.0f} {added / added32:>7.0%} {row['loss']:>8.4f} +- {row['se']:.4f} "
              f"{row['tokens_per_s']:>9,.0f}  {frozen} / {trained}")
    print()
    for form, target in TARGETS.items():
        if form not in rows:
            continue
        row = rows[form]
        share = row["peak_mb"] / fp32["peak_mb"]
        added = (row["peak_mb"] - row["before_mb"]) / added32
        gap = row["loss"] - fp32["loss"]
        verdict = "met" if share <= target else "NOT met"
        print(f"{form}: peak {share:.0%} of fp32's (target <= {target:.0%}: {verdict}; "
              f"above the RSS before the trial {added:.0%}), loss {gap:+.4f} from fp32's = "
              f"{abs(gap) / fp32['se']:.2f} standard errors (target <= 2: "
              f"{'met' if abs(gap) <= 2 * fp32['se'] else 'NOT met'})")
    computed = ", ".join(f"{form} {row['precision']}" for form, row in rows.items())
    print(f"compute: {computed} "
          "(the layers of 4bit multiply in bf16 where bf16 is native, else in fp32; 8bit: int8 products)")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    commit = head.stdout.strip()
    print(f"(python benchmarks/base_dtype_memory.py {' '.join(argv)}, at commit {commit or 'unknown'})")


if __name__ == "__main__":
    main()
