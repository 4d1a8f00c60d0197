"""An Optuna study from a StudySpec: sampler, pruner, baseline, objective, and resumable runs."""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from sweep.config import TrialConfig
from sweep.errors import SweepError
from sweep.result import EvalPoint, TrialResult
from sweep.schema import short
from sweep.signals import Stop
from sweep.spec import RUN_KEYS, StudySpec
from sweep.storage import FINISHED, mask_url, open_storage
from sweep.train import run_trial
from sweep.trial_process import Slot, TrialFailed, run_isolated

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class Hooks:
    """Progress callbacks for a UI; all optional. The engine and the study know nothing of rich."""

    trial_start: Callable[[int, TrialConfig], None] | None = None  # (trial number, config)
    step: Callable[[int, int, int, float], None] | None = None  # (number, step, total, loss)
    eval: Callable[[int, EvalPoint], None] | None = None  # (number, point)
    trial_end: Callable[[FrozenTrial], None] | None = None


def make_sampler(spec: StudySpec, draw: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler; `draw` (the study's trial count) varies the seed of TPE and random
    sampling, so that workers sharing a study, or a re-run continuing it, never repeat a draw."""
    seed = spec.base.seed
    if spec.sampler in ("tpe", "random"):
        seed = (seed * 1_000_003 + draw) % 2**32
    if spec.sampler == "tpe":
        # Multivariate TPE models eta_A and lambda jointly: their good values move together.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)
    if spec.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    # "grid" runs enqueued points; the sampler only has to accept them.
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource="auto", reduction_factor=3)
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def open_study(spec: StudySpec) -> optuna.Study:
    """Create the study, or load it when it exists (same name: same definition)."""
    storage = open_storage(spec.storage, heartbeat=spec.heartbeat)
    name = spec.study_name
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=make_sampler(spec),
        pruner=make_pruner(spec),
        load_if_exists=True,
    )
    stored = study.user_attrs.get("definition_hash")
    if stored is None:
        study.set_user_attr("definition_hash", spec.definition_hash())
        study.set_user_attr("model", spec.base.model)
        study.set_user_attr("task", spec.base.task)
    elif stored != spec.definition_hash():
        raise SweepError(
            f"study {name!r} in {mask_url(spec.storage)} was created with another definition (other "
            "settings, other task data, or an older loraplus-sweep); pick another --study-name, or leave "
            "it unset to name the study after its definition"
        )
    # The latest budget, sampler and pruner, for `worker`s that join the study. Not the storage
    # URL (it may hold a password) nor how this machine runs trials.
    shared = {k: v for k, v in spec.to_dict().items() if k not in ("storage", *RUN_KEYS)}
    if study.user_attrs.get("spec") != shared:
        study.set_user_attr("spec", shared)
    return study


def _key(params: dict) -> tuple:
    return (round(math.log(params["eta_a"]), 9), round(math.log(params["lambda"]), 9), params["rank"])


def enqueue_initial(study: optuna.Study, spec: StudySpec) -> int:
    """Queue the plain-LoRA baseline (or every grid point) not yet in the study. Returns how many."""
    points = (
        [{"eta_a": e, "lambda": lam, "rank": r} for e, lam, r in spec.grid]
        if spec.sampler == "grid"
        else spec.baselines_params()
    )
    existing = set()
    # Failed points do not count: a re-run queues them again.
    for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING, TrialState.WAITING)):
        params = t.params if "rank" in t.params else t.system_attrs.get("fixed_params", {})
        if {"eta_a", "lambda", "rank"} <= set(params):
            existing.add(_key(params))
    queued = 0
    for p in points:
        if _key(p) not in existing:
            # Not skip_if_exists: Optuna's check counts failed trials, which must run again.
            study.enqueue_trial(p)
            existing.add(_key(p))
            queued += 1
    return queued


def suggest_config(trial: Trial, spec: StudySpec) -> TrialConfig:
    eta_a = trial.suggest_float("eta_a", *spec.eta_a, log=True)
    lam = trial.suggest_float("lambda", *spec.lam, log=True)
    rank = trial.suggest_categorical("rank", list(spec.ranks))
    return spec.base.replace(eta_a=eta_a, lam=lam, rank=rank)


def record(trial: Trial, result: TrialResult) -> None:
    """Everything a report or a re-run needs, as user attributes of the trial."""
    cfg = result.config
    attrs = {
        "config": cfg.to_dict(),
        "model": cfg.model,
        "task": cfg.task,
        "metric_name": result.metric_name,
        "metric": result.metric,
        "best_metric": result.best_metric,
        "metrics": result.metrics,
        "history": [[p.step, p.metric] for p in result.history],
        "history_len": len(result.history),
        "steps": result.steps,
        "tokens": result.tokens,
        "tokens_per_s": result.tokens_per_s,
        "wall_time_s": result.wall_time_s,
        "device": result.device,
        "peak_memory_mb": result.peak_memory_mb,
        "stop_reason": result.stop_reason,
        "update_norms": result.update_norms,
        "seed": cfg.seed,
        "init": cfg.init,
        "versions": result.versions,
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def execute(trial: Trial, spec: StudySpec, hooks: Hooks, slot: Slot, cancel: Stop | None = None) -> float:
    """Run one trial on its slot and record it: the metric, or TrialPruned / TrialFailed with the
    reason stored on the trial. Setting `cancel` interrupts it (sweep.signals.Interrupted), its reason
    stored on the trial."""
    cancel = cancel or Stop()
    cfg = suggest_config(trial, spec)
    n = trial.number
    if hooks.trial_start:
        hooks.trial_start(n, cfg)

    def on_eval(point: EvalPoint) -> bool:
        if hooks.eval:
            hooks.eval(n, point)
        trial.report(point.metric, point.step)
        return trial.should_prune()

    def on_step(step: int, total: int, loss: float) -> None:
        if hooks.step:
            hooks.step(n, step, total, loss)
        cancel.check()  # a trial in this process has no other way to hear of it

    trial.set_user_attr("slot", slot.label)
    try:
        if spec.in_process:
            try:
                result = run_trial(cfg, on_eval=on_eval, on_step=on_step)
            except Exception as e:  # as a child's failure would be: the trial fails, the sweep goes on
                first = str(e).splitlines()[0] if str(e) else ""
                raise TrialFailed(f"{type(e).__name__}: {first}", traceback.format_exc()) from e
        else:
            result = run_isolated(cfg, on_eval, on_step, spec.trial_timeout, slot, cancel)
    except KeyboardInterrupt as e:
        trial.set_user_attr("stop_reason", str(e) or "interrupted by the user")
        raise
    except TrialFailed as e:
        trial.set_user_attr("stop_reason", str(e))
        if e.detail:
            trial.set_user_attr("traceback", e.detail[-4000:])
        raise
    record(trial, result)
    if result.diverged:
        # A diverged run is a result about its learning rates, not a crash: prune, keep why.
        raise optuna.TrialPruned(result.stop_reason)
    if result.stop_reason.startswith("stopped"):
        trial.set_user_attr("stop_reason", f"pruned at step {result.steps}")
        raise optuna.TrialPruned(f"pruned at step {result.steps}")
    if not math.isfinite(result.metric):
        reason = f"non-finite {result.metric_name}: {result.metric}"
        trial.set_user_attr("stop_reason", reason)
        raise TrialFailed(reason)
    return result.metric


def preflight(spec: StudySpec) -> StudySpec:
    """Fail on anything that would fail every trial (task, classes, model, positions, target modules,
    device, jobs) before the first one, not in the middle of a sweep. Returns the spec with the
    task's data fingerprint, which is part of the study's identity; a spec that already holds one (a
    study joined from its stored definition) must find the same data here."""
    from sweep.checks import check_slots, check_trial

    fingerprint = check_trial(spec.base).fingerprint()
    check_slots(spec.devices, spec.jobs)
    if spec.data_fingerprint is not None and spec.data_fingerprint != fingerprint:
        raise SweepError(
            f"task {spec.base.task!r} holds other data here than when study {spec.study_name} was created "
            f"(data fingerprint {fingerprint}, the study's {spec.data_fingerprint}); use the same data"
        )
    return spec.replace(data_fingerprint=fingerprint)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def unfinished_grid_points(study: optuna.Study, spec: StudySpec) -> list[FrozenTrial]:
    """For a grid study: the last failed attempt of every grid point that has no finished trial
    (a grid does not draw other points in their place; a re-run queues them again)."""
    if spec.sampler != "grid":
        return []
    trials = study.get_trials(deepcopy=False)
    finished = {_key(t.params) for t in trials if t.state in FINISHED}
    failed = {_key(t.params): t for t in trials if t.state == TrialState.FAIL and "rank" in t.params}
    points = dict.fromkeys(_key({"eta_a": e, "lambda": lam, "rank": r}) for e, lam, r in spec.grid)
    return [failed[k] for k in points if k not in finished and k in failed]



def joined_spec(
    study: optuna.Study, storage_url: str, run: dict[str, Any], trust_remote_code: bool = False
) -> StudySpec:
    """The spec of an existing study, as its creator stored it, run here with `run` settings.

    The database is data, not a command: whether a model's own code may run is this machine's
    `trust_remote_code` (its command line), whatever the stored definition says.
    """
    stored = study.user_attrs.get("spec")
    if not isinstance(stored, dict) or not isinstance(stored.get("base"), dict):
        raise SweepError(f"study {short(study.study_name)} was not created by loraplus-sweep run")
    base = {k: v for k, v in stored["base"].items() if k != "trust_remote_code"}
    data = {**stored, "base": base, "storage": storage_url, "name": study.study_name}
    data.update({k: v for k, v in run.items() if v is not None})
    spec = StudySpec.from_dict(data, source=f"study {short(study.study_name)}")
    return spec.replace(base=spec.base.replace(trust_remote_code=trust_remote_code))
