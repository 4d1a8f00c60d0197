"""StudySpec: what a sweep searches and how, from a TOML file and CLI overrides, validated once.

A study file has up to four tables (every key optional; unknown keys are errors):

    [study]   name, model, task, n_trials, timeout, sampler, pruner, seed, storage,
              trial_timeout, jobs, devices, in_process, track, track_dir, replicate
    [search]  eta_a = [low, high] (log-uniform) or a number; lambda = [low, high] or a number
              (log-uniform; the range must include 1, so plain LoRA is always a candidate);
              rank = [4, 8, 16] (categorical) or a number; space = "eta_a" (draw eta_A and lambda)
              or "eta_b" (draw eta_B = lambda * eta_A and lambda, eta_A = eta_B / lambda), with
              eta_b = [low, high] (log-uniform; default: the eta_A range times the lambda range)
    [grid]    for sampler = "grid": eta_a = [...], and lambda = [...] or eta_b = [...], rank = [...];
              every combination is run exactly once
    [trial]   any other TrialConfig field (epochs, batch_size, train_limit, init, ...); head_lr unset
              is fixed, for every trial of the study, at the geometric middle of the eta_A range
              (see StudySpec.head_lr), so that trials differ only in (eta_A, lambda, rank)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.core.errors import SweepError
from sweep.core.schema import conform, not_one_of, short
from sweep.data.config import REMOTE_CODE_ONLY_FROM_FLAG, TrialConfig

SAMPLERS = ("tpe", "random", "grid", "qmc")
PRUNERS = ("asha", "median", "none")
# A study that names no pruner uses successive halving from this many trials on, and none below. With
# reduction factor 3 a rung keeps a trial going only as the best so far until six trials have reached
# it, so in a smaller study most trials would be judged against one; and a study of a few trials
# needs them completed (LoRA's first evaluations rank trials poorly; the report's curves use finished
# trials only).
ASHA_MIN_TRIALS = 12
DEFAULT_STORAGE = "sqlite:///results/loraplus.db"
STUDY_KEYS = ("name", "model", "task", "n_trials", "timeout", "sampler", "pruner", "seed", "storage",
              "baselines", "trial_timeout", "jobs", "devices", "in_process", "heartbeat", "track",
              "track_dir", "replicate")
# How trials run, not what they measure: left out of the definition hash like the budget (and out
# of the definition stored for workers: each machine tracks its own trials as its command line says).
RUN_KEYS = ("trial_timeout", "jobs", "devices", "in_process", "heartbeat", "track", "track_dir")
# Experiment trackers a sweep can send its trials to (sweep.console.tracking).
TRACKERS = ("mlflow", "wandb", "tensorboard")
SEARCH_KEYS = ("eta_a", "lambda", "rank", "space", "eta_b")
# What a study samples: eta_A and lambda, or eta_B and lambda (eta_A = eta_B / lambda).
SPACES = ("eta_a", "eta_b")
GRID_KEYS = ("eta_a", "lambda", "eta_b", "rank")
# Searched (or study-level) fields cannot also be set in [trial].
NOT_IN_TRIAL = {"model", "task", "eta_a", "lam", "lambda", "rank", "seed"}
TRIAL_KEYS = frozenset(f.name for f in dataclasses.fields(TrialConfig)) - NOT_IN_TRIAL  # [trial]'s keys
MAX_GRID_POINTS = 100_000
# What a message names as the source of settings given as flags (or in code) rather than in a file.
FLAGS = "the command line"
MAX_HEARTBEAT = 86_400  # a day; longer would outrun the timers that wait for it
# Presets ship inside the package (package data), so an installed copy finds them too; the
# repository's top-level studies/ links here.
STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"


@dataclass(frozen=True)
class StudySpec:
    base: TrialConfig  # every trial setting but the searched ones
    eta_a: tuple[float, float] = (1e-4, 1e-2)
    lam: tuple[float, float] = (1.0, 64.0)
    ranks: tuple[int, ...] = (8,)
    space: str = "eta_a"  # one of SPACES
    eta_b: tuple[float, float] | None = None  # space eta_b's range; None: eta_a range times lambda range
    grid: tuple[tuple[float, float, int], ...] = ()  # (eta_a, lambda, rank) points for sampler "grid"
    n_trials: int = 20
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str | None = None  # one of PRUNERS; None: default_pruner(n_trials)
    storage: str = DEFAULT_STORAGE
    name: str | None = None
    trial_timeout: float | None = None  # seconds per trial (needs a child process per trial)
    jobs: int = 1  # concurrent trials on the CPU
    devices: str = "auto"  # "auto" (every visible GPU, else the CPU), "cpu", or GPU ids "0,1"
    in_process: bool = False  # run trials in this process (debugging): no timeout, no isolation
    heartbeat: int = 30  # seconds; a trial silent for 3 beats lost its worker and runs again
    track: tuple[str, ...] = ()  # experiment trackers (TRACKERS) that get a run per trial
    track_dir: str | None = None  # where local trackers write; None: results/
    baselines: int = 1  # plain-LoRA trials queued first, spread over the eta_A range
    # Rounds of racing after the search: the best of each lambda bin and of plain LoRA re-trained on
    # a fresh seed per round until one is left (sweep.study.workers.race_study); 0: none.
    replicate: int = 0
    # Hash of the task's content (sweep.data.tasks.TaskData.fingerprint), set by
    # sweep.engine.checks.preflight: a task file changed between two runs makes another study instead of
    # mixing two data sets.
    data_fingerprint: str | None = None
    # The metric trials are judged by (the task's, or base.metric), set by sweep.engine.checks.preflight: the
    # study's direction follows it (sweep.core.metrics.direction).
    objective: str | None = None
    source: str = field(default=FLAGS, compare=False)  # where it came from, for messages

    def __post_init__(self) -> None:
        problems = conform(self)
        if problems:
            raise SweepError(f"{self.source}: " + "; ".join(problems))
        if self.pruner is None:
            object.__setattr__(self, "pruner", default_pruner(self.n_trials))
        _validate(self)

    @property
    def study_name(self) -> str:
        return self.name or f"{_slug(self.base.model)}-{_slug(self.base.task)}-{self.definition_hash()}"

    @property
    def eta_b_range(self) -> tuple[float, float]:
        """The eta_B range a study in space eta_b draws from: its own, or every eta_B the eta_A and
        lambda ranges reach (their lows' product to their highs')."""
        if self.eta_b is not None:
            return self.eta_b
        return self.eta_a[0] * self.lam[0], self.eta_a[1] * self.lam[1]

    @property
    def head_lr(self) -> float:
        """The classifier head's learning rate when base.head_lr is unset: the geometric middle of the
        eta_A range (3 significant digits), one value for every trial of the study, so that two trials
        differ only in (eta_A, lambda, rank), never in how fast their head learns."""
        return float(f"{math.sqrt(self.eta_a[0] * self.eta_a[1]):.3g}")

    def fixed_head(self) -> StudySpec:
        """This spec with its head learning rate fixed (base.head_lr, or `head_lr` where unset). A
        causal LM trains no head (it keeps its own LM head frozen): its spec is left as it is."""
        from sweep.data.lm_tasks import task_kind

        if self.base.head_lr is not None or task_kind(self.base.task, self.base.kind,
                                                      self.base.label_column) == "causal-lm":
            return self
        return self.replace(base=self.base.replace(head_lr=self.head_lr))

    def definition_hash(self) -> str:
        """What the trials measure: the search space and every fixed trial setting.

        Not the budget, sampler, pruner or storage, so that re-running with more trials or another
        sampler continues the same study.
        """
        definition = {
            "base": self.base.identity(),
            "eta_a": self.eta_a,
            "lambda": self.lam,
            "ranks": self.ranks,
            "grid": self.grid,
            "data": self.data_fingerprint,
        }
        if self.space != "eta_a":  # added later: a study of the first space keeps its name
            definition.update(space=self.space, eta_b=self.eta_b_range)
        return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:8]

    def baseline_params(self) -> dict[str, Any]:
        """Plain LoRA (lambda = 1) at the geometric middle of the eta_A range and the middle rank."""
        return self.baselines_params()[len(self.baselines_params()) // 2]

    def baselines_params(self) -> list[dict[str, Any]]:
        """`baselines` plain-LoRA points (lambda = 1, middle rank), evenly spaced in log eta_A inside
        the range (the middle of each of as many equal slices): with several, plain LoRA gets its
        own learning rate tuned too, and LoRA+ is compared against its best, not one guess."""
        low, high = (math.log(v) for v in self.eta_a)
        n = self.baselines
        etas = [math.exp(low + (high - low) * (i + 0.5) / n) for i in range(n)]
        rank = self.ranks[len(self.ranks) // 2]
        return [{"eta_a": float(f"{e:.3g}"), "lambda": 1.0, "rank": rank} for e in etas]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["base"] = self.base.to_dict()
        out["lambda"] = out.pop("lam")
        out.pop("source")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> StudySpec:
        """The inverse of to_dict (a study's stored definition, for workers that join it). The
        database is not trusted: every value goes through the same checks as a study file.

        The head's learning rate is left as stored: a study created before load_spec fixed it holds
        none, and its trials go on training the head at their eta_A, as its first ones did (its
        definition hash, and so its name, stay the same); `confirm` still fixes it for both arms."""
        if not isinstance(data, dict) or not isinstance(data.get("base"), dict):
            raise SweepError(f"{source}: the stored definition is not a loraplus-sweep study definition")
        known = {f.name for f in dataclasses.fields(cls)} | {"lambda"}
        d = {k: v for k, v in data.items() if k in known and k not in ("base", "source", "lam")}
        if "lambda" in d:
            d["lam"] = d.pop("lambda")
        try:
            base = TrialConfig.from_dict(data["base"])
        except SweepError as e:
            raise SweepError(f"{source}: {e}") from e
        return cls(base=base, source=source, **d)

    def replace(self, **changes: Any) -> StudySpec:
        return dataclasses.replace(self, **changes)


def default_pruner(n_trials: int) -> str:
    """The pruner of a study that names none: asha from ASHA_MIN_TRIALS trials, none below."""
    return "asha" if n_trials >= ASHA_MIN_TRIALS else "none"


def _slug(text: str) -> str:
    """A safe name fragment: the last path part, lower case, only [a-z0-9.-]."""
    stem = Path(text).stem if text.endswith((".csv", ".tsv", ".jsonl", ".json")) else text
    stem = stem.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^a-z0-9.-]+", "-", stem.lower()).strip("-.")[:40] or "x"


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _range(value: Any, key: str, where: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return float(value[0]), float(value[1])
    raise SweepError(f"{where}: {key} must be a number or [low, high], got {short(value)}")


def _ints(value: Any, key: str, where: str) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise SweepError(f"{where}: {key} must be an integer or a list of integers, got {short(value)}")
    return tuple(values)


def _floats(value: Any, key: str, where: str) -> list[float]:
    if not isinstance(value, list) or not value or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise SweepError(f"{where}: grid.{key} must be a non-empty list of numbers, got {short(value)}")
    return [float(v) for v in value]


def parse_range(text: str, key: str) -> tuple[float, float]:
    """CLI form of a range: "1e-5:1e-3", or one number for a fixed value."""
    message = f"--{key.replace('_', '-')} must be LOW:HIGH or a number, got {short(text)}"
    try:
        values = [float(p) for p in text.split(":")]
    except ValueError:
        raise SweepError(message) from None
    if len(values) not in (1, 2):
        raise SweepError(message)
    return values[0], values[-1]


def parse_ranks(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise SweepError(f"--rank must be a comma-separated list of integers, got {short(text)}") from None


def find_study_file(ref: str) -> Path:
    """A TOML path, or the name of a preset in studies/ (with or without .toml)."""
    path = Path(ref)
    preset = STUDIES_DIR / (ref if ref.endswith(".toml") else f"{ref}.toml")
    try:
        if path.suffix == ".toml" and path.is_file():
            return path
        if preset.is_file():
            return preset
    except OSError:  # e.g. a name too long for the file system: no such file either
        pass
    names = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.toml")))
    raise SweepError(f"no study file {short(ref)} (a .toml path, or a preset: {names})")


def _started(text: str, error: str) -> str:
    """Where the statement that tomllib failed in starts, where that is an earlier line than the
    error's: an unclosed array or string is found lines later, at the next table or at the end."""
    at = re.search(r"\(at line (\d+), column \d+\)$", error)
    lines = text.split("\n")
    failed = int(at.group(1)) if at else len(lines) if error.endswith("(at end of document)") else None
    if failed is None:
        return ""
    for n in range(failed - 1, max(failed - 500, 0) - 1, -1):  # the longest prefix that parses
        try:
            tomllib.loads("".join(line + "\n" for line in lines[:n]))  # (a CRLF line keeps its \r)
        except tomllib.TOMLDecodeError:
            continue
        return f"; the value that fails starts at line {n + 1}" if n + 1 < failed else ""
    return ""


def load_spec(path: Path | None, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Read a study file (or none: all defaults), apply CLI overrides, validate.

    Overrides use the file's key names: study keys, `eta_a`/`lambda` as (low, high), `rank` as a
    tuple, and any TrialConfig field; None values are ignored.
    """
    where = str(path) if path is not None else FLAGS
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except OSError as e:
            raise SweepError(f"cannot read study file {where}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise SweepError(f"{where} is not UTF-8 text (byte {e.start}); save it as UTF-8") from e
        except tomllib.TOMLDecodeError as e:
            raise SweepError(f"{where} is not valid TOML: {e}{_started(text, str(e))}") from e
    tables = {"study": STUDY_KEYS, "search": SEARCH_KEYS, "grid": GRID_KEYS, "trial": None}
    for table in data:
        if table not in tables:
            raise SweepError(f"{where}: unknown table [{_clip(table)}] (use {', '.join(tables)})")
        if not isinstance(data[table], dict):
            raise SweepError(f"{where}: {table} must be a table")
        allowed = tables[table]
        for key in data[table]:
            if key == "trust_remote_code":
                raise SweepError(f"{where}: {REMOTE_CODE_ONLY_FROM_FLAG}")
            if allowed is not None and key not in allowed:
                raise SweepError(f"{where}: unknown key {table}.{_clip(key)} (use {', '.join(allowed)})")
    for key in data.get("trial", {}):
        if key == "eval_split":
            raise SweepError(f"{where}: trial.eval_split cannot be set: a study selects on the validation "
                             "split, and confirm scores the test split (confirm --split)")
        if key not in TRIAL_KEYS:
            hint = " (set it in [study] or [search])" if key in NOT_IN_TRIAL else ""
            raise SweepError(f"{where}: unknown key trial.{_clip(key)}{hint}")
    flags = {key: value for key, value in (overrides or {}).items() if value is not None}
    try:
        return _build(data, flags, where)
    except SweepError:
        if not flags or where == FLAGS:
            raise
        _build(data, {}, where)  # the file alone: where it is invalid, its own problem is the one named
        return _build(data, flags, FLAGS)  # the file alone is valid: the flags made it invalid; raises


def _build(data: dict[str, Any], flags: dict[str, Any], where: str) -> StudySpec:
    """The spec of a read study file's tables with `flags` over them; errors name `where`."""
    study = dict(data.get("study", {}))
    search = dict(data.get("search", {}))
    grid = dict(data.get("grid", {}))
    trial = dict(data.get("trial", {}))
    for key, value in flags.items():
        if key in STUDY_KEYS:
            study[key] = value
        elif key in SEARCH_KEYS:
            search[key] = value
        elif key in TRIAL_KEYS:
            trial[key] = value
        else:
            raise SweepError(f"unknown study setting {key!r}")

    try:
        base = TrialConfig(
            model=study.get("model", TrialConfig.model),
            task=study.get("task", TrialConfig.task),
            seed=study.get("seed", TrialConfig.seed),
            **trial,
        )
    except TypeError as e:
        raise SweepError(f"{where}: {e}") from e
    except SweepError as e:
        raise SweepError(f"{where}: {e}") from e

    spec_kwargs: dict[str, Any] = {"base": base, "source": where}
    if "eta_a" in search:
        spec_kwargs["eta_a"] = _range(search["eta_a"], "search.eta_a", where)
    if "lambda" in search:
        spec_kwargs["lam"] = _range(search["lambda"], "search.lambda", where)
    if "rank" in search:
        spec_kwargs["ranks"] = _ints(search["rank"], "search.rank", where)
    if "space" in search:
        spec_kwargs["space"] = search["space"]
    if "eta_b" in search:
        if search.get("space") != "eta_b":
            raise SweepError(f'{where}: search.eta_b is the range of space "eta_b"; set space = "eta_b" '
                             "(--space eta_b) to draw eta_B")
        spec_kwargs["eta_b"] = _range(search["eta_b"], "search.eta_b", where)
    for key in ("name", "n_trials", "timeout", "sampler", "pruner", "storage", "baselines", "replicate",
                *RUN_KEYS):
        if key in study:
            spec_kwargs[key] = study[key]
    if grid or study.get("sampler") == "grid":
        spec_kwargs["grid"] = _grid_points(grid, where)
        spec_kwargs["sampler"] = "grid"
        lams = [p[1] for p in spec_kwargs["grid"]]
        etas = [p[0] for p in spec_kwargs["grid"]]
        # The search space is the grid's own span, so every point lies inside it.
        spec_kwargs["eta_a"] = (min(etas), max(etas))
        spec_kwargs["lam"] = (min(lams), max(lams))
        spec_kwargs["ranks"] = tuple(sorted({p[2] for p in spec_kwargs["grid"]}))
        spec_kwargs.setdefault("n_trials", len(spec_kwargs["grid"]))
    # A new study fixes its head's learning rate; a stored one keeps what it was created with (see
    # StudySpec.from_dict): one made before head_lr was fixed trains the head at each trial's eta_A.
    return StudySpec(**spec_kwargs).fixed_head()


def _grid_points(grid: dict[str, Any], where: str) -> tuple[tuple[float, float, int], ...]:
    if "eta_a" not in grid or ("lambda" in grid) == ("eta_b" in grid):
        raise SweepError(f"{where}: a grid needs grid.eta_a and one of grid.lambda or grid.eta_b")
    etas = _floats(grid["eta_a"], "eta_a", where)
    ranks = _ints(grid.get("rank", [TrialConfig.rank]), "grid.rank", where)
    key = "lambda" if "lambda" in grid else "eta_b"
    second = _floats(grid[key], key, where)
    if len(etas) * len(second) * len(ranks) > MAX_GRID_POINTS:
        raise SweepError(f"{where}: the grid has {len(etas) * len(second) * len(ranks):,} points; "
                         f"at most {MAX_GRID_POINTS:,}")
    if "lambda" in grid:
        pairs = list(itertools.product(etas, second))
    else:  # a paper-style eta_B x eta_A grid: lambda = eta_B / eta_A per point
        # (an eta_a of 0 gives an infinite lambda, which the checks of the spec then name)
        pairs = [(e, b / e if e else math.inf) for e, b in itertools.product(etas, second)]
    return tuple((e, lam, r) for (e, lam), r in itertools.product(pairs, ranks))


def _validate(s: StudySpec) -> None:
    """Every value problem at once, in one line (types are checked before, by the schema)."""
    problems: list[str] = []
    for key, (low, high) in (("eta_a", s.eta_a), ("lambda", s.lam)):
        if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 or high <= 0:
            problems.append(f"{key} range must be positive, got [{low:g}, {high:g}]")
        elif low > high:
            problems.append(f"{key} range is empty: low {low:g} > high {high:g}")
        elif key == "lambda" and s.sampler != "grid" and not low <= 1.0 <= high:
            problems.append(f"lambda range [{low:g}, {high:g}] must include 1 (plain LoRA, the baseline)")
    if s.space not in SPACES:
        problems.append(not_one_of("space", s.space, SPACES))
    elif s.space == "eta_a" and s.eta_b is not None:
        problems.append('an eta_b range is for space "eta_b"')
    elif s.space == "eta_b":
        low, high = s.eta_b_range
        if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 or high <= 0:
            problems.append(f"eta_b range must be positive, got [{low:g}, {high:g}]")
        elif low > high:
            problems.append(f"eta_b range is empty: low {low:g} > high {high:g}")
        elif not low <= s.eta_a[0] <= s.eta_a[1] <= high:
            problems.append(f"eta_b range [{low:g}, {high:g}] must hold the eta_a range [{s.eta_a[0]:g}, "
                            f"{s.eta_a[1]:g}]: the plain-LoRA baselines run there at eta_B = eta_A")
        if s.sampler == "grid":
            problems.append('space "eta_b" draws eta_B; a grid lists its points (grid.eta_b for eta_B)')
    if s.base.eval_split != "validation":
        problems.append("a study evaluates its trials on the validation split (eval_split validation); "
                        "confirm scores the test split")
    if not s.ranks or any(r < 1 for r in s.ranks):
        problems.append(f"ranks must be integers >= 1, got {short(list(s.ranks))}")
    if s.n_trials < 1:
        problems.append(f"n_trials must be an integer >= 1, got {s.n_trials!r}")
    if s.replicate < 0:
        problems.append(f"replicate must be an integer >= 0 (rounds of racing), got {s.replicate!r}")
    for key in ("timeout", "trial_timeout"):
        value = getattr(s, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            problems.append(f"{key} must be a finite number of seconds > 0, got {value!r}")
    if s.sampler not in SAMPLERS:
        problems.append(f"sampler must be one of {', '.join(SAMPLERS)}; got {short(s.sampler)}")
    if s.pruner not in PRUNERS:
        problems.append(f"pruner must be one of {', '.join(PRUNERS)}; got {short(s.pruner)}")
    if s.sampler == "grid" and not s.grid:
        problems.append("sampler grid needs a [grid] table")
    for eta, lam, rank in s.grid:
        if not (math.isfinite(eta) and math.isfinite(lam)) or eta <= 0 or lam <= 0 or rank < 1:
            problems.append(f"grid point (eta_a {eta:g}, lambda {lam:g}, rank {rank}) must be positive")
            break
    if s.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", s.name):
        problems.append(f"study name {short(s.name)} may hold only letters, digits, '.', '_' and '-' "
                        "(at most 100, the first a letter or digit)")
    if s.jobs < 1:
        problems.append(f"jobs must be an integer >= 1, got {s.jobs!r}")
    if s.devices not in ("auto", "cpu") and not re.fullmatch(r"\d+(\+\d+)*(,\d+(\+\d+)*)*", s.devices):
        problems.append(f"devices must be auto, cpu, GPU ids like 0,1, or groups like 0+1,2+3 (a trial "
                        f"over each group); got {short(s.devices)}")
    if s.baselines < 1 or 1 <= s.n_trials < s.baselines:  # against a bad n_trials, its own error alone
        problems.append(f"baselines must be an integer from 1 to n_trials, got {s.baselines!r}")
    if not 1 <= s.heartbeat <= MAX_HEARTBEAT:
        problems.append(f"heartbeat must be a whole number of seconds from 1 to {MAX_HEARTBEAT}, "
                        f"got {short(s.heartbeat)}")
    unknown = [t for t in s.track if t not in TRACKERS]
    if unknown:
        problems.append(f"track must name {', '.join(TRACKERS)}; got {short(unknown[0])}")
    if s.track_dir is not None and not s.track_dir.strip():
        problems.append("track_dir must be a directory")
    if s.in_process and (s.trial_timeout is not None or s.jobs > 1):
        problems.append("in_process runs one trial at a time without a timeout")
    if not s.storage:
        problems.append("storage must be a database URL")
    if problems:
        raise SweepError(f"{s.source}: " + "; ".join(problems))


def joined(
    stored: Any, url: str, name: str, run: dict[str, Any], trust_remote_code: bool = False
) -> StudySpec:
    """The spec of an existing study from its stored definition, run here with `run` settings.

    The database is data, not a command: whether a model's own code may run is this machine's
    `trust_remote_code` (its command line), whatever the stored definition says.
    """
    if not isinstance(stored, dict) or not isinstance(stored.get("base"), dict):
        raise SweepError(f"study {short(name)} was not created by loraplus-sweep run")
    base = {k: v for k, v in stored["base"].items() if k != "trust_remote_code"}
    data = {**stored, "base": base, "storage": url, "name": name}
    data.update({k: v for k, v in run.items() if v is not None})
    spec = StudySpec.from_dict(data, source=f"study {short(name)}")
    return spec.replace(base=spec.base.replace(trust_remote_code=trust_remote_code))
