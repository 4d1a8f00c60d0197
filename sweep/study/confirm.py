"""`confirm`: re-train a study's best plain-LoRA configuration and its best LoRA+ one (or the best of
each lambda bin) over fresh seeds, paired by seed, and say whether the gain holds.

Choosing the best trials of a search and re-scoring those same runs would carry their luck into the
comparison, so the confirm runs use seeds no search trial used (the search's seed + 1, + 2, ...), and a
run that diverged stays in its arm's result (scored at the worst value its trial recorded). Both arms
share a rank and the head's learning rate (the study's head_lr: see sweep.data.spec.StudySpec.head_lr): they
differ only in eta_A and lambda. The search selected them on the validation split, so the confirm runs
are scored on the test split, which no search trial saw (`--split validation` scores validation).

With `--matched`, plain LoRA also runs at the best LoRA+ arm's eta_B (its eta_A = that arm's eta_B):
against the tuned plain arm, LoRA+ differs in eta_A and lambda; against this one, in lambda alone (the
same eta_B, with A's rate lambda times smaller). `--arm ETA_A:LAMBDA` adds a LoRA+ point of the user's own
(the paper's ratio at a given rate, the configuration already in use) as an arm at the plain arm's rank,
compared with plain LoRA like the search's best. Every run scores the whole split unless `--eval-limit`
asks for a sample (the search's eval_limit, which made its trials cheaper, is not carried over: a
sample of the test split adds noise to the one comparison that decides).

The runs are stored as their own study, NAME.confirm (NAME.confirm-validation for the validation split,
then -rR for `--rank R`; user attribute kind = "confirm"), one trial per (arm, seed), so a re-run
continues where it stopped and `report` finds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from sweep.analysis import report
from sweep.core import stats
from sweep.core.errors import SweepError
from sweep.core.metrics import sign
from sweep.core.schema import short
from sweep.core.signals import was_interrupted
from sweep.data.config import EVAL_SPLITS
from sweep.data.hooks import Hooks
from sweep.data.spec import StudySpec
from sweep.study.stored import StoredStudy
from sweep.study.workers import Workers, slots_starting

PLAIN = "lora"  # the plain-LoRA arm (lambda = 1); each LoRA+ arm is named after its lambda bin
MATCHED = "lora at eta_B"  # plain LoRA at the best LoRA+ arm's eta_B (--matched)
# What a comparison's plain side is: the plain arm at its own tuned eta_A, or at LoRA+'s eta_B.
TUNED_CONTRAST, MATCHED_CONTRAST = "plain at its tuned eta_A", "plain at LoRA+'s eta_B"
ARMS = ("lora+", "lora")  # a comparison's two sides, as Confirmation.curves and .arms name them
SUFFIX = ".confirm"
# The confirm seeds start this far past the search's seed: every search trial ran at that seed, so no
# confirm run repeats one.
SEED_OFFSET = 1
MIN_BIN = 1  # LoRA+ is lambda >= sqrt(2): report.lambda_bin 0 is plain LoRA's bin
NAMED = "named with --arm"  # the source of an arm whose point the user gave, not the search


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

    def described(self) -> dict:
        return {"eta_a": self.eta_a, "lambda": self.lam, "rank": self.rank, "source": self.source}


def bin_arm_name(lambda_bin: int) -> str:
    return f"lora+ bin {lambda_bin}"


def named_arm(text: str, rank: int) -> Arm:
    """The arm of `--arm ETA_A:LAMBDA` at `rank`, named after its point ("lora+ 0.0005:16")."""
    try:
        eta_a, lam = (float(v) for v in str(text).split(":"))
    except ValueError:
        eta_a = lam = math.nan
    if not (0 < eta_a <= 1 and math.isfinite(lam) and report.lambda_bin(lam) >= MIN_BIN):
        raise SweepError(f"--arm must be ETA_A:LAMBDA, a LoRA+ point with 0 < ETA_A <= 1 and LAMBDA >= 1.41 "
                         f"(e.g. 5e-4:16); got {short(text)}")
    return Arm(f"lora+ {eta_a:.3g}:{lam:.3g}", eta_a, lam, rank, NAMED)


@dataclass(frozen=True)
class Plan:
    """What one `confirm` runs: its confirm study, plain LoRA and the LoRA+ arms to pair with it, and
    the seeds. `candidates` holds every arm the search now offers at this rank, to tell whether the
    arms a confirm study stored earlier are still the study's best."""

    name: str
    plain: Arm
    challengers: tuple[Arm, ...]
    best: str  # the challenger that is the best LoRA+ trial at this rank
    seeds: tuple[int, ...]
    rank: int | None  # as asked with --rank; None: the plain arm's
    candidates: dict[str, Arm]
    split: str = "test"  # the split every run is scored on
    eval_limit: int | None = None  # a sample of that many examples; None: the whole split
    matched: Arm | None = None  # plain LoRA at the best LoRA+ arm's eta_B (--matched)

    @property
    def arms(self) -> tuple[Arm, ...]:
        return (self.plain, *self.challengers, *((self.matched,) if self.matched else ()))

    @property
    def runs(self) -> int:
        return len(self.arms) * len(self.seeds)


def confirm_name(study: str, rank: int | None = None, split: str = "test") -> str:
    return study + SUFFIX + ("" if split == "test" else f"-{split}") + ("" if rank is None else f"-r{rank}")


def seeds_of(spec: StudySpec, seeds: int) -> tuple[int, ...]:
    """The confirm seeds: past the one every search trial used, the same on every re-run."""
    return tuple(spec.base.seed + SEED_OFFSET + i for i in range(seeds))


def _best(trials: pd.DataFrame) -> dict:
    """The trial the report recommends of `trials`: the centre of the plateau within noise of their
    best (report.plateau), not the first trial that reached the top, which may sit at its edge."""
    return report.plateau(trials).recommended


def candidates(trials: pd.DataFrame, spec: StudySpec, rank: int | None = None) -> tuple[dict[str, Arm], str]:
    """From a study's trials frame: the plain arm (its best completed lambda = 1 trial, at `rank` if
    given; without one, plain LoRA at the study's baseline eta_A) and, at the plain arm's rank, the
    best completed trial of each lambda bin >= MIN_BIN; by name, and the name of the best of them.
    Each "best" is the recommended trial of those (_best): the centre of their plateau within noise."""
    study = trials["study"].iloc[0] if len(trials) else spec.study_name
    done = report.completed(trials)
    plain = done[report.is_plain(done["lambda"])]
    if rank is not None:
        plain = plain[plain["rank"] == rank]
    if plain.empty:
        p = spec.baseline_params()
        at = p["rank"] if rank is None else rank
        plain_arm = Arm(PLAIN, p["eta_a"], 1.0, at, "baseline point (no completed lambda = 1 trial"
                        + ("" if rank is None else f" at rank {rank}") + ")")
    else:
        b = _best(plain)
        plain_arm = Arm(PLAIN, float(b["eta_a"]), 1.0, int(b["rank"]), f"trial {b['number']}")
    at = plain_arm.rank
    plus = done[(done["rank"] == at) & (report.lambda_bin(done["lambda"].astype(float)) >= MIN_BIN)]
    if plus.empty:
        why = ("" if rank is not None else
               ", the rank of its best plain-LoRA trial (name another with --rank)")
        raise SweepError(f"study {study!r} has no completed LoRA+ trial (lambda >= 1.41) at rank {at}"
                         f"{why} to confirm")
    arms = {PLAIN: plain_arm}
    bins = report.lambda_bin(plus["lambda"].astype(float))
    for k, rows in plus.groupby(bins, sort=True):
        b = _best(rows)
        name = bin_arm_name(int(k))
        arms[name] = Arm(name, float(b["eta_a"]), float(b["lambda"]), int(b["rank"]), f"trial {b['number']}")
    best = bin_arm_name(int(report.lambda_bin(float(_best(plus)["lambda"]))))
    return arms, best


def choose_arms(trials: pd.DataFrame, spec: StudySpec, rank: int | None = None) -> tuple[Arm, Arm]:
    """The best completed LoRA+ trial (lambda >= sqrt(2)) at the plain arm's rank (or at `rank`), and
    the plain arm (see `candidates`)."""
    arms, best = candidates(trials, spec, rank)
    return arms[best], arms[PLAIN]


def matched_arm(plus: Arm) -> Arm:
    """Plain LoRA (lambda = 1) at the LoRA+ arm's eta_B: both of its matrices at the rate LoRA+ gives
    B, so that the two differ in lambda alone (A's rate)."""
    return Arm(MATCHED, plus.eta_a * plus.lam, 1.0, plus.rank, f"eta_B of {plus.name}, {plus.source}")


def plan(trials: pd.DataFrame, spec: StudySpec, seeds: int, rank: int | None = None,
         per_bin: bool = False, split: str = "test", matched: bool = False,
         eval_limit: int | None = None, named: tuple[str, ...] = ()) -> Plan:
    """The arms of one confirm: plain LoRA against its best LoRA+ trial, or (per_bin) against the best
    trial of each lambda bin, and against each `named` point (--arm ETA_A:LAMBDA), with (matched)
    plain LoRA at the best LoRA+ arm's eta_B, scored on `split`, whole or (eval_limit) a sample."""
    if split not in EVAL_SPLITS:
        raise SweepError(f"--split must be one of {', '.join(EVAL_SPLITS)}; got {short(split)}")
    if eval_limit is not None and (isinstance(eval_limit, bool) or not isinstance(eval_limit, int)
                                   or eval_limit < 1):
        raise SweepError(f"--eval-limit must be an integer >= 1; got {short(eval_limit)}")
    arms, best = candidates(trials, spec, rank)
    # Always a candidate, so that a confirm run without --matched still accepts one stored with it.
    arms[MATCHED] = matched_arm(arms[best])
    study = trials["study"].iloc[0] if len(trials) else spec.study_name
    challengers = tuple(a for n, a in arms.items() if n not in (PLAIN, MATCHED) and (per_bin or n == best))
    for a in dict.fromkeys(named_arm(t, arms[PLAIN].rank) for t in named):
        if a.name in arms:
            raise SweepError(f"--arm: two points read {short(a.name.split()[-1])} to 3 significant digits; "
                             f"name points further apart")
        arms[a.name] = a
        challengers += (a,)
    return Plan(confirm_name(str(study), rank, split), arms[PLAIN], challengers, best, seeds_of(spec, seeds),
                rank, arms, split, eval_limit, arms[MATCHED] if matched else None)


def runs_spec(spec: StudySpec, arms: tuple[Arm, ...], budget: int,
              eval_limit: int | None = None) -> StudySpec:
    """The study's spec narrowed to the arms' points, run as queued trials (a grid, never pruned)
    until the confirm study holds `budget` finished trials. The parameter ranges take the search's
    in: a confirm study's trials keep one rank distribution (Optuna refuses to change its choices).
    The arms' points are queued as (eta_A, lambda, rank) whatever space the search drew in, and every
    arm trains its head at the study's one head_lr (fixed here for a study stored before it had one,
    whose search trials trained the head at their eta_A). Runs score the whole split, or `eval_limit`
    examples of it, whatever the search's eval_limit."""
    etas, lams = [a.eta_a for a in arms], [a.lam for a in arms]
    spec = spec.fixed_head()  # from the search's own eta_A range, before it is widened below
    return spec.replace(
        base=spec.base.replace(eval_limit=eval_limit), space="eta_a", eta_b=None,
        name=None, sampler="grid", pruner="none", grid=tuple((a.eta_a, a.lam, a.rank) for a in arms),
        eta_a=(min(*etas, spec.eta_a[0]), max(*etas, spec.eta_a[1])),
        lam=(min(*lams, spec.lam[0]), max(*lams, spec.lam[1])),
        ranks=tuple(sorted({*spec.ranks, *(a.rank for a in arms)})), n_trials=max(budget, 1), baselines=1,
    )


def open_confirm_study(study: StoredStudy, spec: StudySpec, plan: Plan) -> StoredStudy:
    """The plan's confirm study, created or continued; refused when an arm it stored earlier is no
    longer what the search offers (the study has improved since) or its runs shared the search's seed."""
    confirm = StoredStudy.create_or_load_named(spec.storage, plan.name,
                                               runs_spec(spec, plan.arms, 0, plan.eval_limit))
    stored = confirm.attrs.get("arms")
    delete = f"loraplus-sweep studies delete {confirm.name}"
    if stored is not None and confirm.attrs.get("search_seed") is None:
        raise SweepError(f"{confirm.name} ran its first seed at the search's own seed (an older "
                         f"loraplus-sweep), which favours the arms the search picked; delete it: {delete}")
    if stored is not None and confirm.attrs.get("eval_split") is None:
        raise SweepError(f"{confirm.name} scored its runs on the validation split the search selected on, "
                         f"with the head at each arm's eta_A (an older loraplus-sweep); delete it: {delete}")
    # A confirm stored before it scored the whole split ran at the search's eval_limit.
    limit = confirm.attrs.get("eval_limit", spec.base.eval_limit) if stored is not None else plan.eval_limit
    if limit != plan.eval_limit:
        runs = "the whole split" if limit is None else f"a sample of {limit} examples"
        raise SweepError(f"{confirm.name} scored its runs on {runs} (--eval-limit); pass the same, or delete "
                         f"it: {delete}")
    stored = stored or {}
    for name, described in stored.items():
        now = plan.candidates.get(name)
        if now is None and described.get("source") == NAMED:
            continue  # a point the user gave holds whatever the search found since
        if now is None or now.described() != described:
            raise SweepError(f"{confirm.name} confirmed other configurations (the study has improved since); "
                             f"delete it to confirm the new best: {delete}")
    head_lr = runs_spec(spec, plan.arms, 0).base.head_lr
    confirm.set_attrs(kind="confirm", confirm_of=study.name, model=spec.base.model, task=spec.base.task,
                      search_seed=spec.base.seed, rank=plan.rank, best_arm=plan.best,
                      eval_split=plan.split, head_lr=head_lr, eval_limit=plan.eval_limit,
                      arms={**stored, **{a.name: a.described() for a in plan.arms}})
    return confirm


def prepare(study: StoredStudy, run: dict, trust_remote_code: bool, seeds: int, rank: int | None = None,
            per_bin: bool = False, split: str = "test", matched: bool = False,
            eval_limit: int | None = None, named: tuple[str, ...] = ()) -> tuple[StudySpec, Plan]:
    """The study's spec, checked (its task has a `split` split), run here with `run` settings, and the
    plan of the confirm."""
    from sweep.core.quiet import quiet_libraries
    from sweep.engine.checks import preflight

    if study.attrs.get("kind") == "confirm":
        raise SweepError(f"{short(study.name)} is itself a confirm study; name the study it confirms")
    if split not in EVAL_SPLITS:
        raise SweepError(f"--split must be one of {', '.join(EVAL_SPLITS)}; got {short(split)}")
    spec = study.joined_spec(run, trust_remote_code)
    with slots_starting(spec):
        quiet_libraries()
        spec = preflight(spec, split)
        return spec, plan(study.frame(), spec, seeds, rank, per_bin, split, matched, eval_limit, named)


def run_confirm(study: StoredStudy, spec: StudySpec, plan: Plan, hooks: Hooks | None = None) -> StoredStudy:
    """Train each arm once per seed unless that run is stored already, through the workers' trial
    loop: each (arm, seed) is a queued trial of the confirm study. A failed run is queued again by
    the next confirm."""
    confirm = open_confirm_study(study, spec, plan)
    with confirm.lock():
        held = {(a["arm"], a["seed"]) for a in confirm.queued_attrs()}
        for seed in plan.seeds:
            for arm in plan.arms:
                if (arm.name, seed) not in held:
                    confirm.enqueue(arm.params, {"arm": arm.name, "seed": seed, "eval_split": plan.split})
        counts = confirm.counts()
        # Everything stored or queued: the workers stop once the queue is empty (a grid draws nothing).
        budget = sum(counts[s] for s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING"))
    Workers(confirm, runs_spec(spec, plan.arms, budget, plan.eval_limit), hooks or Hooks(),
            queue_grid=False).run()
    return confirm


def runs_stored(storage: str, plan: Plan) -> int:
    """How many of the plan's runs a continued confirm will skip (0 before the first run)."""
    confirm = StoredStudy.find(storage, plan.name)
    if confirm is None:
        return 0
    runs = confirm.frame()
    done = runs[runs["state"].isin(["COMPLETE", "PRUNED"])]
    wanted = {(a.name, s) for a in plan.arms for s in plan.seeds}
    return len({(r["arm"], int(r["seed"])) for r in done.to_dict("records")} & wanted)


@dataclass(frozen=True)
class ArmRuns:
    """One arm's stored runs: a result per seed (a diverged run at its recorded metric), and the seeds
    whose runs all failed, which have no result."""

    values: dict[int, float]
    histories: dict[int, list]
    diverged: frozenset[int]
    failed: frozenset[int]
    trials: int  # every run of the arm, failed ones included: what it cost
    tokens: int
    wall_time_s: float


def arm_runs(trials: pd.DataFrame, name: str) -> ArmRuns:
    rows = trials[trials["arm"] == name]
    finished = rows[rows["state"].isin(["COMPLETE", "PRUNED"])].drop_duplicates("seed")
    # A confirm study is never pruned: a PRUNED run is one that diverged, scored at the worst value.
    values = {int(r["seed"]): float(r["value"]) for r in finished.to_dict("records")}
    histories = {int(r["seed"]): r["history"] or [] for r in finished.to_dict("records")}
    diverged = frozenset(int(s) for s in finished.loc[finished["state"] == "PRUNED", "seed"])
    # A run stopped by Ctrl-C or SIGTERM is no result about its arm: the next confirm runs it again.
    # astype: mapped over no rows, the column keeps its string dtype, which pandas will not negate
    gave_up = (rows["state"] == "FAIL") & ~rows["stop_reason"].map(was_interrupted).astype(bool)
    failed = frozenset(int(s) for s in rows.loc[gave_up, "seed"]) - set(values)
    return ArmRuns(values, histories, diverged, failed, len(rows), int(rows["tokens"].sum()),
                   float(rows["wall_time_s"].sum()))


def _curve(run: ArmRuns, seed: int, steps: list[int]) -> list[tuple[int, float]]:
    """A run's evaluations; a diverged run's go on at its recorded (worst) value to the last step any
    run reached, so that its divergence weighs on the mean curve instead of cutting it short."""
    points = [(int(s), float(m)) for s, m in run.histories[seed]]
    if seed in run.diverged:
        last = points[-1][0] if points else 0
        points += [(s, run.values[seed]) for s in steps if s > last]
    return points


@dataclass(frozen=True)
class Confirmation:
    """What a confirm study shows for one LoRA+ arm: the comparison with plain LoRA paired by seed,
    the convergence of both arms, and how many runs of each diverged or failed."""

    study: str
    model: str
    task: str
    metric_name: str
    arms: dict  # "lora+" and "lora": each arm's eta_a, lambda, rank and source
    comparison: stats.Paired | None  # None with fewer than 2 seed pairs
    curves: dict[str, list[tuple[int, float]]]  # mean metric over the paired seeds per evaluation step
    steps_plain: int | None  # steps plain LoRA's mean curve needs to reach its own final value
    steps_plus: int | None  # steps LoRA+'s mean curve needs to reach plain LoRA's final value
    seeds: int  # seed pairs: seeds where both arms have a result
    trials: int = 0  # the two arms' runs, failed ones included: what the comparison cost
    tokens: int = 0
    wall_time_s: float = 0.0
    arm: str = "lora+"  # the LoRA+ arm's name in the confirm study
    lambda_bin: int | None = None
    best: bool = True  # the LoRA+ arm is the best LoRA+ trial of the search (at this rank)
    rank: int | None = None  # the rank confirm was asked for (--rank); None: the plain arm's
    diverged: dict[str, int] | None = None  # per side ("lora+", "lora"): runs scored after diverging
    failed: dict[str, int] | None = None  # per side: seeds whose runs failed, so without a result
    split: str | None = None  # the split the runs were scored on
    head_lr: float | None = None  # the head's learning rate, the same in both arms
    contrast: str = TUNED_CONTRAST  # the plain side: at its own tuned eta_A, or at LoRA+'s eta_B

    @property
    def label(self) -> str:
        """The study, with a split other than test, the rank asked for, the lambda bin of a LoRA+
        arm other than the best (a named arm's point), and "-matched" against plain LoRA at LoRA+'s
        eta_B."""
        named = self.arms.get("lora+", {}).get("source") == NAMED
        return (self.study + ("" if self.split in ("test", None) else f"-{self.split}")
                + ("" if self.rank is None else f"-r{self.rank}")
                + ("" if self.best else f"-{self.arm.split()[-1]}" if named else f"-bin{self.lambda_bin}")
                + ("-matched" if self.contrast == MATCHED_CONTRAST else ""))


def _compare(confirm: StoredStudy, trials: pd.DataFrame, metric_name: str, name: str, plain: ArmRuns,
             plus: ArmRuns, plain_name: str = PLAIN) -> Confirmation:
    attrs = confirm.attrs
    arms = attrs.get("arms", {})
    described = arms.get(name, {})
    seeds = sorted(set(plus.values) & set(plain.values))
    better = sign(metric_name)
    values = {"lora+": [plus.values[s] for s in seeds], "lora": [plain.values[s] for s in seeds]}
    comparison = stats.paired(values["lora+"], values["lora"], sign=better) if len(seeds) >= 2 else None
    steps = sorted({int(s) for run in (plus, plain) for h in run.histories.values() for s, _ in h})
    curves = {side: stats.mean_curve([_curve(run, s, steps) for s in seeds])
              for side, run in (("lora+", plus), ("lora", plain))}
    steps_plain = steps_plus = None
    if curves["lora"]:
        final = curves["lora"][-1][1]
        steps_plain = stats.steps_to_reach(curves["lora"], final, better)
        steps_plus = stats.steps_to_reach(curves["lora+"], final, better)
    lam = described.get("lambda")
    return Confirmation(
        study=attrs.get("confirm_of", confirm.name),
        model=attrs.get("model", ""),
        task=attrs.get("task", ""),
        metric_name=metric_name,
        arms={"lora+": described, "lora": arms.get(plain_name, {})},
        comparison=comparison,
        curves=curves,
        steps_plain=steps_plain,
        steps_plus=steps_plus,
        seeds=len(seeds),
        trials=plus.trials + plain.trials,
        tokens=plus.tokens + plain.tokens,
        wall_time_s=plus.wall_time_s + plain.wall_time_s,
        arm=name,
        lambda_bin=int(report.lambda_bin(float(lam))) if lam is not None else None,
        best=name == attrs.get("best_arm", "lora+"),
        rank=attrs.get("rank"),
        diverged={"lora+": len(plus.diverged), "lora": len(plain.diverged)},
        failed={"lora+": len(plus.failed), "lora": len(plain.failed)},
        split=attrs.get("eval_split"),
        head_lr=attrs.get("head_lr"),
        contrast=TUNED_CONTRAST if plain_name == PLAIN else MATCHED_CONTRAST,
    )


def summaries(confirm: StoredStudy, names: tuple[str, ...] | None = None) -> list[Confirmation]:
    """One Confirmation per LoRA+ arm of the confirm study (or of `names`), in lambda order: the
    paired statistics over the seeds where both arms have a result, and the mean curves; after the
    best arm's, where plain LoRA also ran at its eta_B (--matched), the best arm against that."""
    trials = confirm.frame()
    metric = trials["metric_name"].dropna()
    metric_name = str(metric.iloc[0]) if len(metric) else "metric"
    arms = confirm.attrs.get("arms", {})
    # A LoRA+ arm has lambda >= sqrt(2); another plain arm stored beside them (a named point) is no row.
    plus = [n for n in arms if n not in (PLAIN, MATCHED) and (names is None or n in names)
            and report.lambda_bin(float(arms[n].get("lambda", 1))) >= MIN_BIN]
    plus.sort(key=lambda n: float(arms[n].get("lambda", 0)))
    plain = arm_runs(trials, PLAIN)
    out = []
    for n in plus:
        runs = arm_runs(trials, n)
        out.append(_compare(confirm, trials, metric_name, n, plain, runs))
        if MATCHED in arms and n == confirm.attrs.get("best_arm"):
            out.append(_compare(confirm, trials, metric_name, n, arm_runs(trials, MATCHED), runs, MATCHED))
    return out


def summarise(confirm: StoredStudy) -> Confirmation:
    """The comparison of the best LoRA+ arm with plain LoRA at its tuned eta_A."""
    found = summaries(confirm)
    if not found:
        raise SweepError(f"{confirm.name} holds no LoRA+ arm")
    return next((c for c in found if c.best and c.contrast == TUNED_CONTRAST), found[0])


def verdict(c: Confirmation) -> str:
    """What the comparison says, in words."""
    p = c.comparison
    if p is None or not p.enough:
        return f"too few pairs (< {stats.MIN_PAIRS})"
    if math.isnan(p.ci_low):  # an infinite value (a diverged run's loss) in a pair
        return "no test: a run scored infinite"
    if p.significant:
        return "LoRA+ better" if p.diff_mean > 0 else "plain LoRA better"
    return "no significant difference"


def table(confirmations: list[Confirmation]) -> pd.DataFrame:
    """One row per comparison (a confirmed LoRA+ arm against plain LoRA at its tuned eta_A, and the
    best one against plain LoRA at its eta_B where that ran: `contrast`), for `report` and `confirm`."""
    nan = float("nan")
    rows = []
    for c in confirmations:
        p = c.comparison
        plus, plain = c.arms.get("lora+", {}), c.arms.get("lora", {})
        diverged, failed = c.diverged or {}, c.failed or {}
        rows.append({
            "model": c.model, "task": c.task, "study": c.study, "metric_name": c.metric_name,
            "arm": c.arm, "contrast": c.contrast, "lambda bin": c.lambda_bin, "best": c.best,
            "lora+ source": plus.get("source"),
            "split": c.split, "head_lr": c.head_lr,
            "seeds": c.seeds, "lora+ eta_a": plus.get("eta_a"), "lora+ lambda": plus.get("lambda"),
            "lora+ rank": plus.get("rank"),
            "lora eta_a": plain.get("eta_a"), "lora rank": plain.get("rank"),
            "lora+ mean": p.mean_plus if p else nan,
            "lora+ std": p.std_plus if p else nan,
            "lora mean": p.mean_plain if p else nan,
            "lora std": p.std_plain if p else nan,
            "gain": p.diff_mean if p else nan,
            "ci95 low": p.ci_low if p else nan,
            "ci95 high": p.ci_high if p else nan,
            "p": p.p_value if p else nan,
            "significant": bool(p.significant) if p else False,
            # The smallest true gain these pairs would find 4 times in 5 (two-sided paired t, 95 %).
            "mde80": p.mde if p else nan,
            "verdict": verdict(c),
            "lora+ diverged": diverged.get("lora+", 0), "lora diverged": diverged.get("lora", 0),
            "lora+ failed": failed.get("lora+", 0), "lora failed": failed.get("lora", 0),
            # Steps each needed to reach plain LoRA's final (mean) value: the convergence claim.
            "steps lora": c.steps_plain,
            "steps lora+": c.steps_plus,
            "trials": c.trials, "tokens": c.tokens, "wall_time_s": c.wall_time_s,
        })
    return pd.DataFrame(rows)
