"""What a study searches and how it draws: sampler, pruner, the queued points, a trial's config."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import optuna

from sweep.data.config import TrialConfig
from sweep.data.spec import StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sampler(spec: StudySpec, draw: int = 0) -> optuna.samplers.BaseSampler:
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
    # "grid" runs queued points; the sampler only has to accept them.
    return optuna.samplers.RandomSampler(seed=seed)


def pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource="auto", reduction_factor=3)
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def trial_config(trial: optuna.Trial, spec: StudySpec) -> TrialConfig:
    """Draw (or read back, for a queued point) the trial's (eta_A, lambda, rank): the one place
    parameters are suggested. In space eta_b the parameters drawn are eta_B and lambda, and eta_A is
    eta_B / lambda. A queued trial may carry its own seed and evaluation split (a confirm run); every
    other trial is evaluated on the validation split, so the test split never reaches the sampler."""
    if spec.space == "eta_b":
        eta_b = trial.suggest_float("eta_b", *spec.eta_b_range, log=True)
        lam = trial.suggest_float("lambda", *spec.lam, log=True)
        eta_a = eta_b / lam
    else:
        eta_a = trial.suggest_float("eta_a", *spec.eta_a, log=True)
        lam = trial.suggest_float("lambda", *spec.lam, log=True)
    rank = trial.suggest_categorical("rank", list(spec.ranks))
    seed = trial.user_attrs.get("seed", spec.base.seed)
    split = trial.user_attrs.get("eval_split", "validation")
    return spec.base.replace(eta_a=eta_a, lam=lam, rank=rank, seed=seed, eval_split=split)


def point(params: dict[str, Any]) -> dict[str, Any] | None:
    """A trial's parameters with eta_a among them, whichever space drew them (eta_a = eta_b /
    lambda); None for a trial that stored no whole point (it failed before drawing one)."""
    if "lambda" not in params or "rank" not in params:
        return None
    if "eta_a" in params:
        return dict(params)
    if "eta_b" in params:
        return {**params, "eta_a": params["eta_b"] / params["lambda"]}
    return None


def params_of(spec: StudySpec, p: dict[str, Any]) -> dict[str, Any]:
    """A point (eta_a, lambda, rank) as the parameters of the spec's space, to queue it."""
    if spec.space == "eta_b":
        return {"eta_b": p["eta_a"] * p["lambda"], "lambda": p["lambda"], "rank": p["rank"]}
    return dict(p)


def key(params: dict[str, Any]) -> tuple:
    """A point's identity, robust to float noise in the database, whichever space drew it."""
    p = point(params) or params
    return (round(math.log(p["eta_a"]), 9), round(math.log(p["lambda"]), 9), p["rank"])


def initial_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Queued before anything is drawn, as the parameters of the spec's space: every grid point, or
    the plain-LoRA baselines (lambda = 1, so eta_B = eta_A)."""
    if spec.sampler == "grid":
        return [{"eta_a": e, "lambda": lam, "rank": r} for e, lam, r in spec.grid]
    return [params_of(spec, p) for p in spec.baselines_params()]


def missing_grid_points(
    spec: StudySpec, finished: Iterable[dict], failed: Iterable[tuple[dict, str]]
) -> list[str]:
    """For a grid study: the last failure reason of every grid point that has no finished trial (a
    grid draws no other point in its place; a re-run queues them again)."""
    if spec.sampler != "grid":
        return []
    done = {key(p) for p in finished}
    reasons = {key(p): reason for p, reason in failed}
    points = dict.fromkeys(key({"eta_a": e, "lambda": lam, "rank": r}) for e, lam, r in spec.grid)
    return [reasons[k] for k in points if k not in done and k in reasons]
