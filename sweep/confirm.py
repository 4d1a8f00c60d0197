"""`confirm`: re-train a study's best LoRA+ configuration and its best plain-LoRA one over several
seeds, paired by seed, and say whether the gain holds.

The runs are stored as their own study, NAME.confirm (user attribute kind = "confirm"), one trial per
(arm, seed), so a re-run continues where it stopped and `report` finds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import pandas as pd
from optuna.trial import TrialState

from sweep import report, stats
from sweep.errors import SweepError
from sweep.signals import Interrupted, Stop, stop_on_signals
from sweep.spec import StudySpec
from sweep.storage import open_storage, storage_lock, trials_frame
from sweep.study import Hooks
from sweep.trial_process import make_slots
from sweep.workers import ask, reclaim, run_to_end, worker_identity

ARMS = ("lora+", "lora")  # the study's best LoRA+ configuration, its best plain LoRA (lambda = 1)
SUFFIX = ".confirm"


@dataclass(frozen=True)
class Arm:
    name: str
    eta_a: float
    lam: float
    rank: int
    source: str  # where the configuration came from, for the report

    @property
    def params(self) -> dict:
        return {"eta_a": self.eta_a, "lambda": self.lam, "rank": self.rank}

    def spec(self, spec: StudySpec, seed: int, ranks: tuple[int, ...]) -> StudySpec:
        """The study's spec narrowed to this one point and seed (a one-point grid, never pruned).
        `ranks` are both arms' ranks: Optuna needs one set of choices per parameter in a study."""
        point = ((self.eta_a, self.lam, self.rank),)
        return spec.replace(grid=point, sampler="grid", pruner="none", eta_a=(self.eta_a, self.eta_a),
                            lam=(self.lam, self.lam), ranks=ranks, base=spec.base.replace(seed=seed))


def choose_arms(study: optuna.Study, spec: StudySpec) -> tuple[Arm, Arm]:
    """The best completed LoRA+ trial (lambda > 1), and the best completed plain-LoRA trial; without
    one, plain LoRA at the study's baseline point."""
    df = report.completed(trials_frame(study._storage, [study.study_name]))
    plus = df[~report.is_plain(df["lambda"]) & (df["lambda"] > 1)]
    if plus.empty:
        raise SweepError(f"study {study.study_name!r} has no completed trial with lambda > 1 to confirm")
    best = report.best_configs(plus).iloc[0]
    lora_plus = Arm("lora+", float(best["eta_a"]), float(best["lambda"]), int(best["rank"]),
                    f"trial {best['number']}")
    plain = df[report.is_plain(df["lambda"])]
    if plain.empty:
        p = spec.baseline_params()
        source = "baseline point (no completed lambda = 1 trial)"
        return lora_plus, Arm("lora", p["eta_a"], 1.0, p["rank"], source)
    b = report.best_configs(plain).iloc[0]
    return lora_plus, Arm("lora", float(b["eta_a"]), 1.0, int(b["rank"]), f"trial {b['number']}")


def open_confirm_study(study: optuna.Study, spec: StudySpec, arms: tuple[Arm, Arm]) -> optuna.Study:
    storage = open_storage(spec.storage, heartbeat=spec.heartbeat)
    confirm = optuna.create_study(study_name=study.study_name + SUFFIX, storage=storage,
                                  direction="maximize", pruner=optuna.pruners.NopPruner(),
                                  load_if_exists=True)
    stored = confirm.user_attrs.get("arms")
    described = {a.name: {"eta_a": a.eta_a, "lambda": a.lam, "rank": a.rank, "source": a.source}
                 for a in arms}
    if stored is None:
        for key, value in (("kind", "confirm"), ("confirm_of", study.study_name), ("arms", described),
                           ("model", spec.base.model), ("task", spec.base.task)):
            confirm.set_user_attr(key, value)
    elif stored != described:
        raise SweepError(
            f"{confirm.study_name} confirmed other configurations (the study has improved since); "
            f"delete it to confirm the new best: loraplus-sweep studies delete {confirm.study_name}"
        )
    return confirm


def run_confirm(study: optuna.Study, spec: StudySpec, seeds: int, hooks: Hooks | None = None) -> optuna.Study:
    """Train each arm once per seed (spec.base.seed, +1, ...) unless that run is stored already."""
    hooks = hooks or Hooks()
    arms = choose_arms(study, spec)
    confirm = open_confirm_study(study, spec, arms)
    with storage_lock(spec.storage, confirm.study_name):
        # A run killed mid-trial left it RUNNING: fail it. Not re-queued: the loop below re-runs
        # every (arm, seed) without a result, and a queued point would be taken for the wrong arm.
        reclaim(confirm, confirm._storage, requeue=False)
    slot = make_slots(spec.devices, 1)[0]
    ranks = tuple(sorted({a.rank for a in arms}))
    done = _done_runs(confirm)
    runs = [(arm, spec.base.seed + i) for i in range(seeds) for arm in arms
            if (arm.name, spec.base.seed + i) not in done]
    stop = Stop()
    with stop_on_signals(stop):  # Ctrl-C or SIGTERM: the running trial ends FAIL, interrupted
        for arm, seed in runs:
            if stop.is_set():
                break
            confirm.enqueue_trial(arm.params)  # the point itself, whatever the sampler would draw
            trial = ask(confirm)
            trial.set_user_attr("arm", arm.name)
            trial.set_user_attr("worker", worker_identity())
            run_to_end(confirm, trial, arm.spec(spec, seed, ranks), hooks, slot, stop)
    if stop.signum is not None:
        raise Interrupted(stop.reason, stop.signum)
    return confirm


def _done_runs(confirm: optuna.Study) -> set[tuple[str, int]]:
    """(arm, seed) of every run with a result (a diverged run is one)."""
    return {(t.user_attrs.get("arm"), t.user_attrs.get("seed"))
            for t in confirm.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))}


def runs_stored(study: optuna.Study, spec: StudySpec, seeds: int) -> int:
    """How many of the 2 * seeds runs a continued confirm will skip (0 before the first run)."""
    try:
        confirm = optuna.load_study(study_name=study.study_name + SUFFIX, storage=study._storage)
    except KeyError:
        return 0
    wanted = {spec.base.seed + i for i in range(seeds)}
    return sum(1 for arm, seed in _done_runs(confirm) if arm in ("lora+", "lora") and seed in wanted)


@dataclass(frozen=True)
class Confirmation:
    """What a confirm study shows: the paired comparison and the convergence of both arms."""

    study: str
    model: str
    task: str
    metric_name: str
    arms: dict
    comparison: stats.Paired | None  # None with fewer than 2 complete seed pairs
    curves: dict[str, list[tuple[int, float]]]  # mean metric over seeds per evaluation step
    steps_plain: int | None  # steps plain LoRA's mean curve needs to reach its own final value
    steps_plus: int | None  # steps LoRA+'s mean curve needs to reach plain LoRA's final value
    seeds: int
    trials: int = 0  # every trial of the confirm study, failed ones included: what it cost
    tokens: int = 0
    wall_time_s: float = 0.0


def summarise(confirm: optuna.Study) -> Confirmation:
    """The paired statistics over the seeds where both arms completed, and the mean curves."""
    per_arm: dict[str, dict[int, optuna.trial.FrozenTrial]] = {a: {} for a in ARMS}
    for t in confirm.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        per_arm.setdefault(t.user_attrs.get("arm"), {})[t.user_attrs.get("seed")] = t
    seeds = sorted(set(per_arm["lora+"]) & set(per_arm["lora"]))
    values = {a: [per_arm[a][s].value for s in seeds] for a in ARMS}
    comparison = stats.paired(values["lora+"], values["lora"]) if len(seeds) >= 2 else None
    curves = {a: stats.mean_curve([per_arm[a][s].user_attrs.get("history", []) for s in seeds]) for a in ARMS}
    steps_plain = steps_plus = None
    if curves["lora"]:
        final = curves["lora"][-1][1]
        steps_plain = stats.steps_to_reach(curves["lora"], final)
        steps_plus = stats.steps_to_reach(curves["lora+"], final)
    any_trial = next(iter(per_arm["lora+"].values()), None) or next(iter(per_arm["lora"].values()), None)
    every = confirm.get_trials(deepcopy=False)
    return Confirmation(
        study=confirm.user_attrs.get("confirm_of", confirm.study_name),
        model=confirm.user_attrs.get("model", ""),
        task=confirm.user_attrs.get("task", ""),
        metric_name=any_trial.user_attrs.get("metric_name", "metric") if any_trial else "metric",
        arms=confirm.user_attrs.get("arms", {}),
        comparison=comparison,
        curves=curves,
        steps_plain=steps_plain,
        steps_plus=steps_plus,
        seeds=len(seeds),
        trials=len(every),
        tokens=int(sum(t.user_attrs.get("tokens") or 0 for t in every)),
        wall_time_s=float(sum(t.user_attrs.get("wall_time_s") or 0.0 for t in every)),
    )


def table(confirmations: list[Confirmation]) -> pd.DataFrame:
    """One row per confirmed study, for `report` and `confirm`."""
    rows = []
    for c in confirmations:
        p = c.comparison
        plus, plain = c.arms.get("lora+", {}), c.arms.get("lora", {})
        rows.append({
            "model": c.model, "task": c.task, "study": c.study, "metric_name": c.metric_name,
            "seeds": c.seeds, "lora+ eta_a": plus.get("eta_a"), "lora+ lambda": plus.get("lambda"),
            "lora+ rank": plus.get("rank"),
            "lora eta_a": plain.get("eta_a"), "lora rank": plain.get("rank"),
            "lora+ mean": p.mean_plus if p else float("nan"),
            "lora+ std": p.std_plus if p else float("nan"),
            "lora mean": p.mean_plain if p else float("nan"),
            "lora std": p.std_plain if p else float("nan"),
            "gain": p.diff_mean if p else float("nan"),
            "ci95 low": p.ci_low if p else float("nan"),
            "ci95 high": p.ci_high if p else float("nan"),
            "p": p.p_value if p else float("nan"),
            "significant": bool(p.significant) if p else False,
            # Steps each needed to reach plain LoRA's final (mean) value: the convergence claim.
            "steps lora": c.steps_plain,
            "steps lora+": c.steps_plus,
            "trials": c.trials, "tokens": c.tokens, "wall_time_s": c.wall_time_s,
        })
    return pd.DataFrame(rows)
