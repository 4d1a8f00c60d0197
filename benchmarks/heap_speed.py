"""Training speed of CPU trials with large buffers mapped on their own (sweep.core.heap) and with glibc's
default heap, measured side by side.

A CPU trial asks glibc to serve every allocation of 1 MB or more from a mapping of its own, which keeps
freed activations from staying resident (benchmarks/memory_estimate.py --heap both) but costs a fresh
mapping, and its page faults, per such buffer. This measures what that costs in training speed: each
case runs as a trial in a fresh process, mapped and glibc alternating (the order flips every round, so a
machine that slows down over the run weighs on both), and prints each run's training tokens/s and peak,
then per case the median over rounds of the ratio mapped / glibc, each ratio from one round's two runs,
and whether a trial of the case maps its buffers as trials decide (sweep.engine.memory.maps_its_heap).
Cases are benchmarks/memory_estimate.py's, with more steps (--steps).
Usage: python benchmarks/heap_speed.py [--cases minilm-fp32,smollm2-fp32,llama-fp32] [--rounds 3]
       [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import memory_estimate  # noqa: E402  (its cases and its one-trial measurement)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="minilm-fp32,smollm2-fp32,llama-fp32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=12, help="training steps per run, one evaluation")
    p.add_argument("--scratch", default=str(Path(tempfile.gettempdir()) / "loraplus-memory-estimate"))
    args = p.parse_args()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    memory_estimate.random_llama(scratch / "llama")
    chosen = memory_estimate.cases(scratch)
    names = args.cases.split(",")
    unknown = [n for n in names if n not in chosen]
    if unknown:
        sys.exit(f"unknown case(s) {', '.join(unknown)}; cases: {', '.join(chosen)}")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, python {platform.python_version()}; {args.steps} steps per run, "
          f"{args.rounds} rounds")
    print(f"{'case':14} {'round':>5} {'heap':6} {'tokens/s':>9} {'peak MB':>8}  "
          "a trial maps (as trials decide)", flush=True)
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for name in names:
        settings = {**chosen[name], "max_steps": args.steps, "eval_every": args.steps}
        for r in range(args.rounds):
            speed = {}
            for heap in (("mapped", "glibc") if r % 2 == 0 else ("glibc", "mapped")):
                argv = [sys.executable, str(ROOT / "benchmarks/memory_estimate.py"), "--one",
                        json.dumps(settings), "--heap", heap]
                out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
                if out.returncode != 0:
                    print(f"{name:14} {r:5} {heap:6} failed: {out.stderr.strip().splitlines()[-1:]}")
                    continue
                m = json.loads(out.stdout.strip().splitlines()[-1])
                speed[heap] = m["tokens_per_s"]
                maps = "yes" if m["auto_maps"] else "no"
                print(f"{name:14} {r:5} {heap:6} {m['tokens_per_s']:9,.1f} "
                      f"{(m['peak'] - m['before']) / 2**20:8.0f}  {maps}", flush=True)
            if len(speed) == 2:
                ratios[name].append(speed["mapped"] / speed["glibc"])
    print("\nmapped / glibc tokens/s, per round and the median:")
    for name, rs in ratios.items():
        if rs:
            print(f"{name:14} {' '.join(f'{x:.2f}' for x in rs)}   median {statistics.median(rs):.2f}")


if __name__ == "__main__":
    main()
