"""A QQP-sized task file (400,000 question pairs) from the embedded corpora: how long it takes to load
and tokenize, how much memory each step holds, and what the second trial pays (the token cache).

The file: pairs of sentences from the embedded Rotten Tomatoes snippets, drug reviews and BBC News
articles; label 1 when the second is the first with a few words dropped (a paraphrase of sorts),
else 0 (another random sentence). Each step runs in this one process, its peak resident memory
measured from a fresh start of the count (Linux VmHWM, reset through /proc/self/clear_refs). Two
short trials then train on a sample of it one after the other, as a slot's process would run them:
the first tokenizes all 400,000 rows (the cache is empty), the second reads the cached ids. Last, the
same trial on the embedded tasks (thousands of rows, not 400,000) in a process of its own each: what
a trial's memory is without the big file.
Usage: python benchmarks/scale.py [--rows 400000]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import functools
import multiprocessing
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import transformers

from sweep.data import embedded
from sweep.data.batches import encode_task
from sweep.data.config import TrialConfig
from sweep.data.tasks import load_task
from sweep.engine.models import load_tokenizer
from sweep.engine.train import run_trial


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def memory_mb() -> tuple[float, float]:
    """(resident now, peak since the last reset) in MiB."""
    lines = Path("/proc/self/status").read_text().splitlines()
    status = dict(line.split(":", 1) for line in lines if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def sentences() -> list[str]:
    out: list[str] = []
    for name in embedded.TASKS:
        df, _ = embedded.load(name)
        for text in df["text"]:
            parts = text.replace("!", ".").replace("?", ".").split(".")
            out.extend(s.strip() for s in parts if len(s.split()) >= 4)
    return sorted(set(out))


def write_pairs(path: Path, rows: int, seed: int = 0) -> None:
    pool = sentences()
    rng = np.random.default_rng(seed)
    first = rng.integers(len(pool), size=rows)
    other = rng.integers(len(pool), size=rows)
    same = rng.random(rows) < 0.37  # QQP's share of duplicates
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["question1", "question2", "label"])
        for i in range(rows):
            a = pool[first[i]]
            if same[i]:
                words = a.split()
                keep = rng.random(len(words)) > 0.2
                b = " ".join(w for w, k in zip(words, keep, strict=True) if k) or a
            else:
                b = pool[other[i]]
            writer.writerow([a, b, int(same[i])])


def step(name: str, fn):
    reset_peak()
    before, _ = memory_mb()
    start = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - start
    after, peak = memory_mb()
    print(f"{name:<58} {secs:>8.1f} {before:>9.0f} {peak:>9.0f} {after:>9.0f}")
    return out


def _trial_peak(cfg: TrialConfig) -> float:
    """The peak resident MiB of this process through one trial."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    transformers.logging.set_verbosity_error()  # the new head's load report, as in the main process
    warnings.filterwarnings("ignore")
    run_trial(cfg)
    return memory_mb()[1]


def fresh_process_peak(cfg: TrialConfig) -> float:
    """The peak resident memory of one trial in a new process: no big file was ever loaded there."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_trial_peak, cfg).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LORAPLUS_SWEEP_CACHE"] = str(Path(tmp) / "cache")  # an empty cache: a first run
        path = Path(tmp) / "pairs.csv"
        write_pairs(path, args.rows)
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
              f"torch {torch.__version__}")
        print(f"file: {args.rows:,} rows, {path.stat().st_size / 2**20:.1f} MiB of CSV\n")
        print(f"{'step':<58} {'seconds':>8} {'RSS MiB':>9} {'peak MiB':>9} {'after MiB':>9}")
        cfg = TrialConfig(model="minilm-l6", task=str(path), max_length=128, batch_size=32, train_limit=2048,
                          eval_limit=1000, max_steps=20, eval_every=20, eta_a=1e-3, lam=8.0, rank=8)
        task = step("load the task (read, split)", lambda: load_task(str(path)))
        tokenizer = load_tokenizer(cfg)
        encode = functools.partial(encode_task, task, tokenizer, 128)
        train, evals = step("tokenize every split (empty cache)", encode)
        n_tokens = len(train.ids) + sum(len(e.ids) for e in evals.values())
        print(f"{'':<58} token ids: {n_tokens:,} ({n_tokens * 4 / 2**20:.0f} MiB as int32), "
              f"{len(train):,} training rows")
        del train, evals
        step("tokenize again (the cache holds it)", encode)
        del encode
        del task
        shutil.rmtree(Path(tmp) / "cache")  # the trials start from an empty cache again
        first = step("trial 1 (20 steps on a 2,048-row sample, empty cache)", lambda: run_trial(cfg))
        second = step("trial 2, the next seed (task and tokens cached)",
                      lambda: run_trial(cfg.replace(seed=1)))
        for name, r in (("trial 1", first), ("trial 2", second)):
            print(f"{name}: setup {r.setup_time_s:.1f} s (task, tokens, model), "
                  f"training {r.train_time_s:.1f} s, evaluation {r.eval_time_s:.1f} s, "
                  f"peak {r.peak_memory_mb:.0f} MiB")
        print("\nthe same trial on an embedded task, each in a process of its own:")
        for name in ("rotten-tomatoes", "drug-reviews"):
            enc, _ = encode_task(load_task(name), tokenizer, 128)
            at_max = float(np.mean(enc.lengths >= 128))
            peak = fresh_process_peak(cfg.replace(task=name))
            print(f"  {name}: {len(enc):,} training rows, mean {enc.lengths.mean():.0f} tokens, "
                  f"{at_max:.0%} at max length 128: peak {peak:.0f} MiB")


if __name__ == "__main__":
    main()
