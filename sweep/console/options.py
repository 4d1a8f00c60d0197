"""The command line's options, each declared once: one per TrialConfig field (for trial, and for run
over a study's base settings), run's study options with StudySpec's defaults, and the options
several commands share. Every option of trial and run shows its default in --help."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from sweep.console.tracking import check as check_trackers
from sweep.data.config import GROUPS, REMOTE_CODE_HELP, TrialConfig, flag
from sweep.data.spec import (
    ASHA_MIN_TRIALS,
    DEFAULT_STORAGE,
    StudySpec,
    find_study_file,
    load_spec,
    parse_range,
    parse_ranks,
)

StorageOpt = Annotated[str, typer.Option(help="The results database: a database URL (sqlite:///..., "
                                          "postgresql://...) or a journal file (journal:///path.log).")]
TrialTimeoutOpt = Annotated[float | None, typer.Option(help="Fail a trial that runs longer than this many seconds.")]
JobsOpt = Annotated[int | None, typer.Option(help="Concurrent trials on the CPU (the cores are split between them).")]
DevicesOpt = Annotated[str | None, typer.Option(help="GPUs to use, one trial each: auto (all visible), cpu, or ids like 0,1; 0+1 spreads each trial over GPUs 0 and 1.")]
HeartbeatOpt = Annotated[int | None, typer.Option(help="Seconds between a running trial's heartbeats; 3 missed: the trial runs again elsewhere.")]
RemoteCodeOpt = Annotated[bool, typer.Option("--trust-remote-code", help=REMOTE_CODE_HELP)]
TrackOpt = Annotated[list[str] | None, typer.Option(metavar="TRACKER", help="Also log every trial to mlflow, wandb or tensorboard (repeatable): one run per trial, grouped by study.")]
TrackDirOpt = Annotated[str | None, typer.Option(metavar="DIR", help="Where trackers write locally (default results): tensorboard/, mlflow.db unless MLFLOW_TRACKING_URI is set, wandb/ unless WANDB_DIR is.")]

SETTINGS = {f.name: f for f in dataclasses.fields(TrialConfig)}
HINTS = typing.get_type_hints(TrialConfig)
# What run means by these differs from one trial's value: ranges and a list of ranks, with
# StudySpec's defaults.
_SPEC = StudySpec.__dataclass_fields__
RUN_OWN = {
    "eta_a": ("eta_A range LOW:HIGH (log-uniform) or a value.", "{:g}:{:g}".format(*_SPEC["eta_a"].default)),
    "lam": ("lambda range LOW:HIGH (log-uniform, must include 1) or a value.",
            "{:g}:{:g}".format(*_SPEC["lam"].default)),
    "rank": ("Ranks to try, comma-separated, e.g. 4,8,16.", ",".join(map(str, _SPEC["ranks"].default))),
}
RUN_EXTRA = {"seed": " Also the seed of the sampler.", "eval_every": " A pruner decides at each evaluation."}
# A study selects on the validation split (confirm scores the test split): not a flag of run.
NOT_RUN = {"eval_split"}
STUDY_KEY = {"lam": "lambda", "study_name": "name"}  # run's parameter -> the study file's key, where they differ


def _study_options(
    n_trials: Annotated[int, typer.Option(help="Finished trials the study should hold (re-runs continue to it; "
                                               "a grid's default: its points).")] = _SPEC["n_trials"].default,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds.",
                                                  show_default="none")] = None,
    sampler: Annotated[str, typer.Option(help="tpe, random, grid or qmc.")] = _SPEC["sampler"].default,
    pruner: Annotated[str | None, typer.Option(help="asha (successive halving), median or none.",
                                               show_default=f"asha for {ASHA_MIN_TRIALS} trials or more, else none")] = None,
    storage: Annotated[str, typer.Option(help="Database URL or journal file (journal:///path.log).")] = DEFAULT_STORAGE,
    study_name: Annotated[str | None, typer.Option(help="Name of the study.",
                                                   show_default="model, task and a hash of the definition")] = None,
    trial_timeout: Annotated[float | None, typer.Option(help="Fail a trial that runs longer than this many seconds.",
                                                        show_default="none")] = None,
    jobs: Annotated[int, typer.Option(help="Concurrent trials on the CPU (the cores are split between them).")] = _SPEC["jobs"].default,
    devices: Annotated[str, typer.Option(help="GPUs to use, one trial each: auto (all visible), cpu, or ids like 0,1; 0+1 spreads each trial over GPUs 0 and 1.")] = _SPEC["devices"].default,
    in_process: Annotated[bool, typer.Option("--in-process/--no-in-process",
                                             help="Run trials in this process (debugging): no isolation, no timeout.")] = False,
    heartbeat: Annotated[int, typer.Option(help="Seconds between a running trial's heartbeats; 3 missed: the trial runs again elsewhere.")] = _SPEC["heartbeat"].default,
    replicate: Annotated[int, typer.Option(metavar="K", help="After the search, race the best of each lambda bin and of plain LoRA on fresh seeds, one per round, dropping the bins a Holm-corrected test puts below the best, for at most K rounds (0: off).")] = _SPEC["replicate"].default,
    track: Annotated[list[str] | None, typer.Option(metavar="TRACKER", show_default="none", help="Also log every trial to mlflow, wandb or tensorboard (repeatable): one run per trial, grouped by study.")] = None,
    track_dir: Annotated[str | None, typer.Option(metavar="DIR", show_default="results", help="Where trackers write locally: tensorboard/, mlflow.db unless MLFLOW_TRACKING_URI is set, wandb/ unless WANDB_DIR is.")] = None,
    space: Annotated[str, typer.Option(help="What is drawn: eta_a (eta_A and lambda) or eta_b (eta_B and lambda; eta_A = eta_B / lambda).", rich_help_panel="optimizer")] = _SPEC["space"].default,
    eta_b: Annotated[str | None, typer.Option(help="With --space eta_b: eta_B range LOW:HIGH (log-uniform).", rich_help_panel="optimizer",
                                              show_default="the eta_A range times the lambda range")] = None,
) -> None:
    """Never called: its parameters are run's options of the study itself (not of its trials)."""


def _machine_options(
    trial_timeout: TrialTimeoutOpt = None,
    jobs: JobsOpt = None,
    devices: DevicesOpt = None,
    heartbeat: HeartbeatOpt = None,
    track: TrackOpt = None,
    track_dir: TrackDirOpt = None,
    trust_remote_code: RemoteCodeOpt = False,
) -> None:
    """Never called: its parameters are how this machine runs a stored study's trials (worker,
    confirm); each left unset is as the study says."""


def setting(name: str, run: bool = False) -> Any:
    """The option of a TrialConfig field: its flag (a boolean's with its --no- form), its help (or what
    run means by it), its default shown (unset where it has none) and its group as the help panel."""
    f = SETTINGS[name]
    help = f.metadata["help"] + (RUN_EXTRA.get(name, "") if run else "")
    shown: str | bool = "unset" if f.default is None else True
    if run and name in RUN_OWN:
        help, shown = RUN_OWN[name][0], True
    boolean = HINTS[name] in (bool, bool | None)
    decls = f"{flag(name)}/--no-{flag(name)[2:]}" if boolean else flag(name)
    return typer.Option(decls, help=help, show_default=shown, rich_help_panel=f.metadata["group"])


def _settings(run: bool) -> list[inspect.Parameter]:
    """One keyword parameter per TrialConfig field, typed and defaulted by the field (run's own
    fields as the text of a range or a list of ranks), grouped in GROUPS' order."""
    params = []
    for f in sorted(SETTINGS.values(), key=lambda f: GROUPS.index(f.metadata["group"])):
        if run and f.name in NOT_RUN:
            continue
        kind = str | None if f.name == "target_modules" else HINTS[f.name]  # comma-separated on the line
        default = f.default
        if run and f.name in RUN_OWN:
            kind, default = str, RUN_OWN[f.name][1]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[kind, setting(f.name, run)]))
    return params


def _with(command: Callable[..., Any], extra: list[inspect.Parameter]) -> Callable[..., Any]:
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = inspect.Signature([*own, *extra])  # type: ignore[attr-defined]
    return command


def with_trial_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give `command` (which takes **settings) one option per TrialConfig field, typed, documented and
    defaulted by the field, so that the dataclass is the one source of the trial's flags."""
    return _with(command, _settings(run=False))


def with_study_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give `command` (which takes **settings) run's study options and one option per TrialConfig
    field a study can set; `study_spec` reads them back."""
    study = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
             for p in inspect.signature(_study_options, eval_str=True).parameters.values()]
    settings = _settings(run=True)
    at = next(i for i, p in enumerate(settings) if p.name == "eta_a")  # the search space's options together
    drawn = [p for p in study if p.name in ("space", "eta_b")]
    return _with(command, [*(p for p in study if p not in drawn), *settings[:at], *drawn, *settings[at:]])


def with_machine_options(*leave_out: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command (which takes **machine) the options of how this machine runs trials, but
    `leave_out`; `machine_run` reads them back."""
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
              for p in inspect.signature(_machine_options, eval_str=True).parameters.values()
              if p.name not in leave_out]
    return lambda command: _with(command, params)


def machine_run(machine: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The run settings of `with_machine_options` (None: the study's) and whether a model's own code
    may run, once the trackers they name are found ready: before anything is created."""
    run = {k: v for k, v in machine.items() if k != "trust_remote_code"}
    run["track"] = tuple(machine["track"]) if machine["track"] else None
    check_trackers(run["track"] or (), run["track_dir"])
    return run, machine["trust_remote_code"]


def given(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The values of the options given on the command line, not left at their defaults."""
    # By name: typer may vendor its own click, whose enum is not click's.
    return {k: v for k, v in values.items()
            if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}


def study_spec(ctx: typer.Context, study_file: str | None, settings: dict[str, Any]) -> StudySpec:
    """run's study: the study file (or none: StudySpec's defaults), with the options given on the
    command line over it (an option left out leaves the file's value), once the trackers it names are
    found ready."""
    flags = {STUDY_KEY.get(k, k): v for k, v in given(ctx, settings).items()}
    for key in ("eta_a", "lambda", "eta_b"):
        if key in flags:
            flags[key] = parse_range(flags[key], key)
    if "rank" in flags:
        flags["rank"] = parse_ranks(flags["rank"])
    if "track" in flags:
        flags["track"] = tuple(flags["track"])
    # Only from this flag: a study file or a stored study can never turn it on.
    flags["trust_remote_code"] = flags.get("trust_remote_code") or None
    path = find_study_file(study_file) if study_file is not None else None
    spec = load_spec(path, flags)
    check_trackers(spec.track, spec.track_dir)  # before the study is created
    return spec

