"""Where a sweep's wall time goes: training, evaluation, each trial's setup, and everything outside trials.

Runs a study exactly as a user would (`loraplus-sweep run STUDY` in a new process, into a temporary
database), times the whole command, then reads each stored trial's own clock: optimizer steps
(train_time_s), evaluations (eval_time_s), loading the task and model (setup_time_s). What is left of
the command's time was spent outside trials: starting Python and the libraries, the checks before
the first trial, starting the slots' processes, and the database. With `--cold` (the default) the
command starts from an empty cache, as a first run does: it tokenizes the task (and converts an
embedded GGUF model) once.
Usage: python benchmarks/sweep_breakdown.py [--study default] [--warm] [-- extra run flags]
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

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="default", help="a preset or study file, as `run` takes it")
    parser.add_argument("--warm", action="store_true", help="keep the user's cache (tokenized tasks)")
    parser.add_argument("extra", nargs="*", help="more `run` flags, after --")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if not args.warm:
            env["LORAPLUS_SWEEP_CACHE"] = str(Path(tmp) / "cache")
        url = f"sqlite:///{tmp}/breakdown.db"
        command = [sys.executable, "-c", "import cli; cli.main()", "run", args.study, "--storage", url,
                   *args.extra]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"run failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        (summary,) = optuna.get_all_study_summaries(url)
        trials = optuna.load_study(study_name=summary.study_name, storage=url).trials

    def total(key: str) -> float:
        return sum(_seconds(t.user_attrs, key) for t in trials)

    train, evaluate, setup, in_trials = (total(k) for k in ("train_time_s", "eval_time_s", "setup_time_s",
                                                             "wall_time_s"))
    rest = in_trials - train - evaluate - setup
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"torch {torch.__version__}; cache {'warm' if args.warm else 'cold (first run)'}")
    print(f"study {summary.study_name}: {len(trials)} trials "
          f"({', '.join(f'{s} {n}' for s, n in _states(trials).items())}), `run` took {wall:.1f} s\n")
    print(f"{'trial':>5} {'state':<9} {'slot':<7} {'setup s':>8} {'train s':>8} {'eval s':>7} {'trial s':>8}")
    for t in trials:
        a = t.user_attrs
        print(f"{t.number:>5} {t.state.name:<9} {a.get('slot', ''):<7} {_seconds(a, 'setup_time_s'):>8.1f} "
              f"{_seconds(a, 'train_time_s'):>8.1f} {_seconds(a, 'eval_time_s'):>7.1f} "
              f"{_seconds(a, 'wall_time_s'):>8.1f}")
    print(f"\n{'where the time went':<68} {'seconds':>8} {'share':>6}")
    for name, secs in (
        ("training (optimizer steps, their batches)", train),
        ("evaluation", evaluate),
        ("trial setup (task, tokenizer, model, LoRA, optimizer)", setup),
        ("rest of the trials (final scoring, update norms)", rest),
        ("outside trials (start, imports, checks, slot processes, database)", wall - in_trials),
    ):
        print(f"{name:<68} {secs:>8.1f} {secs / wall:>6.1%}")
    print(f"{'the whole `run` command':<68} {wall:>8.1f} {1:>6.1%}")


def _seconds(attrs: dict, key: str) -> float:
    """A stored time; training time from tokens and tokens/s for trials stored before it was kept."""
    if key == "train_time_s" and key not in attrs and attrs.get("tokens_per_s"):
        return attrs.get("tokens", 0) / attrs["tokens_per_s"]
    return float(attrs.get(key, 0.0))


def _states(trials: list) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


if __name__ == "__main__":
    main()
