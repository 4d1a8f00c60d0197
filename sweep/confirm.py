"""`confirm`: re-train a study's best LoRA+ configuration and its best plain-LoRA one over several
seeds, paired by seed, and say whether the gain holds.

The runs are stored as their own study, NAME.confirm (user attribute kind = "confirm"), one trial per
(arm, seed), so a re-run continues where it stopped and `report` finds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sweep import report, stats
from sweep.errors import SweepError
from sweep.hooks import Hooks
from sweep.metrics import sign
from sweep.schema import short
from sweep.spec import StudySpec
from sweep.stored import StoredStudy
from sweep.workers import Workers

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


def choose_arms(trials: pd.DataFrame, spec: StudySpec) -> tuple[Arm, Arm]:
    """From a study's trials frame: the best completed LoRA+ trial (lambda > 1), and the best
    completed plain-LoRA trial; without one, plain LoRA at the study's baseline point."""
    df = report.completed(trials)
    plus = df[~report.is_plain(df["lambda"]) & (df["lambda"] > 1)]
    if plus.empty:
        study = trials["study"].iloc[0] if len(trials) else spec.study_name
        raise SweepError(f"study {study!r} has no completed trial with lambda > 1 to confirm")
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


def runs_spec(spec: StudySpec, arms: tuple[Arm, Arm], seeds: int) -> StudySpec:
    """The study's spec narrowed to the arms' points, run as queued trials (a grid, never pruned)
    until each arm has a result per seed. One set of choices per parameter covers both arms."""
    etas, lams = [a.eta_a for a in arms], [a.lam for a in arms]
    return spec.replace(name=spec.study_name + SUFFIX, sampler="grid", pruner="none",
                        grid=tuple((a.eta_a, a.lam, a.rank) for a in arms), eta_a=(min(etas), max(etas)),
                        lam=(min(lams), max(lams)), ranks=tuple(sorted({a.rank for a in arms})),
                        n_trials=2 * seeds, baselines=1)


def seeds_of(spec: StudySpec, seeds: int) -> list[int]:
    return [spec.base.seed + i for i in range(seeds)]


def open_confirm_study(study: StoredStudy, spec: StudySpec, arms: tuple[Arm, Arm], seeds: int) -> StoredStudy:
    runs = runs_spec(spec, arms, seeds)
    confirm = StoredStudy.create_or_load_named(spec.storage, runs.study_name, runs)
    stored = confirm.attrs.get("arms")
    described = {a.name: {"eta_a": a.eta_a, "lambda": a.lam, "rank": a.rank, "source": a.source}
                 for a in arms}
    if stored is None:
        confirm.set_attrs(kind="confirm", confirm_of=study.name, arms=described, model=spec.base.model,
                          task=spec.base.task)
    elif stored != described:
        raise SweepError(
            f"{confirm.name} confirmed other configurations (the study has improved since); "
            f"delete it to confirm the new best: loraplus-sweep studies delete {confirm.name}"
        )
    return confirm


def prepare(study: StoredStudy, run: dict, trust_remote_code: bool) -> tuple[StudySpec, tuple[Arm, Arm]]:
    """The study's spec, checked, run here with `run` settings, and the two arms to confirm."""
    from sweep.checks import preflight
    from sweep.quiet import quiet_libraries

    if study.attrs.get("kind") == "confirm":
        raise SweepError(f"{short(study.name)} is itself a confirm study; name the study it confirms")
    quiet_libraries()
    spec = preflight(study.joined_spec(run, trust_remote_code))
    return spec, choose_arms(study.frame(), spec)


def run_confirm(study: StoredStudy, spec: StudySpec, seeds: int, hooks: Hooks | None = None,
                arms: tuple[Arm, Arm] | None = None) -> StoredStudy:
    """Train each arm once per seed (spec.base.seed, +1, ...) unless that run is stored already, through
    the workers' trial loop: each (arm, seed) is a queued trial of the confirm study."""
    arms = arms or choose_arms(study.frame(), spec)
    confirm = open_confirm_study(study, spec, arms, seeds)
    with confirm.lock():
        held = {(a["arm"], a["seed"]) for a in confirm.queued_attrs()}
        for seed in seeds_of(spec, seeds):
            for arm in arms:
                if (arm.name, seed) not in held:
                    confirm.enqueue(arm.params, {"arm": arm.name, "seed": seed})
    Workers(confirm, runs_spec(spec, arms, seeds), hooks or Hooks()).run()
    return confirm


def runs_stored(study: StoredStudy, spec: StudySpec, seeds: int) -> int:
    """How many of the 2 * seeds runs a continued confirm will skip (0 before the first run)."""
    confirm = StoredStudy.find(spec.storage, study.name + SUFFIX)
    if confirm is None:
        return 0
    wanted = set(seeds_of(spec, seeds))
    runs = confirm.frame()
    done = runs[runs["state"].isin(["COMPLETE", "PRUNED"]) & runs["arm"].isin(ARMS)]
    return int(done["seed"].isin(wanted).sum())


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


def summarise(confirm: StoredStudy) -> Confirmation:
    """The paired statistics over the seeds where both arms completed, and the mean curves."""
    trials = confirm.frame()
    done = trials[trials["state"] == "COMPLETE"]
    per_arm = {a: {int(r["seed"]): r for r in done[done["arm"] == a].to_dict("records")} for a in ARMS}
    seeds = sorted(set(per_arm["lora+"]) & set(per_arm["lora"]))
    values = {a: [per_arm[a][s]["value"] for s in seeds] for a in ARMS}
    metric_name = str(done["metric_name"].iloc[0]) if len(done) else "metric"
    better = sign(metric_name)
    comparison = stats.paired(values["lora+"], values["lora"], sign=better) if len(seeds) >= 2 else None
    curves = {a: stats.mean_curve([per_arm[a][s]["history"] or [] for s in seeds]) for a in ARMS}
    steps_plain = steps_plus = None
    if curves["lora"]:
        final = curves["lora"][-1][1]
        steps_plain = stats.steps_to_reach(curves["lora"], final, better)
        steps_plus = stats.steps_to_reach(curves["lora+"], final, better)
    return Confirmation(
        study=confirm.attrs.get("confirm_of", confirm.name),
        model=confirm.attrs.get("model", ""),
        task=confirm.attrs.get("task", ""),
        metric_name=metric_name,
        arms=confirm.attrs.get("arms", {}),
        comparison=comparison,
        curves=curves,
        steps_plain=steps_plain,
        steps_plus=steps_plus,
        seeds=len(seeds),
        trials=len(trials),
        tokens=int(trials["tokens"].sum()),
        wall_time_s=float(trials["wall_time_s"].sum()),
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
