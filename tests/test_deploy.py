"""The cluster recipes in deploy/: the Slurm array script run here with a stand-in srun against a real
study on a journal, and the Kubernetes Job read as YAML."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from sweep.data.spec import load_spec
from sweep.study.stored import StoredStudy
from sweep.study.workers import prepare

ROOT = Path(__file__).resolve().parent.parent
SBATCH = ROOT / "deploy" / "slurm" / "sweep-array.sbatch"
JOB = ROOT / "deploy" / "kubernetes" / "workers-job.yaml"
# A stand-in for srun: records its arguments, then runs the command it was given, as srun does.
FAKE_SRUN = """#!/bin/bash
printf "%s\\n" "$@" > "$SRUN_ARGS"
while [[ "$1" == -* ]]; do shift; done
exec "$@"
"""


def worker_flags() -> set[str]:
    """The options `loraplus-sweep worker` takes, read from its help."""
    text = CliRunner().invoke(app, ["worker", "--help"], env={"COLUMNS": "200"}).stdout
    return set(re.findall(r"--[a-z][a-z-]+", text))


def sbatch(tmp_path: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    path = f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"  # loraplus-sweep of this venv
    return subprocess.run(["bash", str(SBATCH), *args], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PATH": path, "SRUN_ARGS": str(tmp_path / "srun-args"), **env},
                          timeout=600)


def test_the_slurm_script_says_what_it_needs_in_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLUS_")}
    done = subprocess.run(["bash", str(SBATCH), "study"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "LORAPLUS_STORAGE" in done.stderr


def test_the_slurm_script_asks_for_an_array_of_gpus_and_passes_only_worker_options():
    text = SBATCH.read_text()
    directives = dict(re.findall(r"^#SBATCH --([a-z-]+)=(\S+)", text, re.M))
    assert re.fullmatch(r"0-\d+", directives["array"]) and directives["gres"] == "gpu:1"
    line = next(ln for ln in text.splitlines() if ln.startswith("exec srun"))
    assert "loraplus-sweep worker" in line
    assert set(re.findall(r"--[a-z][a-z-]+", line.split("loraplus-sweep", 1)[1])) <= worker_flags()


@pytest.mark.processes  # the script's worker runs its trial in a process of its own
def test_an_array_task_of_the_slurm_script_runs_a_trial_of_the_study(tmp_path, tiny_model, toy_csv):
    url = f"journal://{tmp_path}/shared/study.log"
    (tmp_path / "shared").mkdir()
    prepare(load_spec(None, {
        "model": tiny_model, "task": toy_csv, "n_trials": 1, "sampler": "random", "pruner": "none",
        "eta_a": (1e-3, 1e-2), "lambda": (1.0, 64.0), "rank": (2, 4), "max_steps": 8, "batch_size": 16,
        "max_length": 32, "eval_every": 4, "device": "cpu", "storage": url, "name": "cluster",
    }))  # the study as `run` creates it; its first point is queued, nothing run yet
    done = sbatch(tmp_path, ["cluster", "--heartbeat", "5"],
                  {"LORAPLUS_STORAGE": url, "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_JOB_ID": "77"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "array task 3 of job 77 joins study cluster" in done.stdout
    assert (tmp_path / "srun-args").read_text().split("\n")[:6] == [
        "--ntasks=1", "loraplus-sweep", "worker", "cluster", "--storage", url]
    trials = StoredStudy.load(url, "cluster").trials()
    assert [t.state.name for t in trials] == ["COMPLETE"]
    assert trials[0].user_attrs["worker"]["pid"] != os.getpid()


def job() -> dict:
    docs = [d for d in yaml.safe_load_all(JOB.read_text()) if d]
    assert len(docs) == 1 and docs[0]["kind"] == "Job"
    return docs[0]


def test_the_kubernetes_job_runs_n_workers_against_postgresql_with_the_password_from_a_secret():
    spec = job()["spec"]
    assert spec["parallelism"] == spec["completions"] >= 2
    (container,) = spec["template"]["spec"]["containers"]
    assert "loraplus-sweep" in container["image"]
    command = container["command"]
    assert command[:2] == ["loraplus-sweep", "worker"]
    assert {a for a in command if a.startswith("--")} <= worker_flags()
    env = {e["name"]: e for e in container["env"]}
    for arg in command:  # every $(VAR) the command names is defined, as Kubernetes expands them
        for var in re.findall(r"\$\((\w+)\)", arg):
            assert var in env
    storage = env["LORAPLUS_STORAGE"]["value"]
    assert storage.startswith("postgresql://") and ":" not in storage.split("://")[1].split("@")[0]
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "loraplus-sweep-db", "key": "password"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    rule = spec["podFailurePolicy"]["rules"][0]  # bad input fails the Job instead of looping on it
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2]
