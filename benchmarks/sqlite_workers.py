"""N `loraplus-sweep run` processes on one SQLite file for a few minutes: do lock errors reach users?

Each worker runs short trials of a tiny randomly initialised BERT (20 steps, an evaluation every 2
steps, a heartbeat every second), so the database sees far more writes per second than a real
sweep. Prints, per worker, its exit code, trials and any "database is locked" or traceback lines in
its output, then the study's trial counts and the machine.
Usage: python benchmarks/sqlite_workers.py [--workers 4] [--seconds 180]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from sweep.engine.models import resolve_model_path


def tiny_model(path: Path) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=180)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="sqlite-workers-"))
    model = tiny_model(root / "tiny-bert")
    db = f"sqlite:///{root}/sweep.db"
    cmd = [sys.executable, "-c", "import cli; cli.main()", "run", "--model", str(model),
           "--task", "rotten-tomatoes", "--train-limit", "256", "--eval-limit", "64", "--max-steps", "20",
           "--eval-every", "2", "--batch-size", "16", "--max-length", "32", "--device", "cpu",
           "--sampler", "random", "--pruner", "none", "--n-trials", "100000", "--heartbeat", "1",
           "--timeout", str(args.seconds), "--storage", db, "--study-name", "stress"]
    env = {**os.environ, "LORAPLUS_SWEEP_CACHE": str(root / "cache")}
    logs = [root / f"worker{i}.log" for i in range(args.workers)]
    start = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env) for log in logs]
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - start

    trials = optuna.load_study(study_name="stress", storage=db).get_trials(deepcopy=False)
    print(f"{args.workers} workers on one SQLite file for {wall:.0f} s "
          f"(each stops starting trials after {args.seconds:g} s)")
    print(f"{'worker':>6} {'exit':>4} {'trials':>6} {'lock errors':>11} {'tracebacks':>10}")
    for i, (proc, code, log) in enumerate(zip(procs, codes, logs, strict=True)):
        text = log.read_text(errors="replace")
        mine = sum(t.user_attrs.get("worker", {}).get("pid") == proc.pid for t in trials)
        locked, tracebacks = text.count("database is locked"), text.count("Traceback")
        print(f"{i:>6} {code:>4} {mine:>6} {locked:>11} {tracebacks:>10}")
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    print("study:", ", ".join(f"{k} {v}" for k, v in states.items()), f"(all {len(trials)})")
    evals = sum(len(t.intermediate_values) for t in trials)
    print(f"writes: {evals} intermediate values, {len(trials)} trials with ~20 attributes each, "
          f"heartbeats every 1 s per running trial")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}, "
          f"Python {platform.python_version()}, torch {torch.__version__}, optuna {optuna.__version__}")


if __name__ == "__main__":
    main()
