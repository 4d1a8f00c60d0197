"""loraplus-sweep command line: parse, call the `sweep` package, render."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
import typer.core
from rich.console import Console
from rich.text import Text

from sweep.config import GROUPS, REMOTE_CODE_HELP, TrialConfig, flag
from sweep.errors import SweepError
from sweep.quiet import quiet_libraries
from sweep.schema import short
from sweep.storage import database_failure, mask_secrets, mask_url
from sweep.ui import (
    TrialProgress,
    print_confirm,
    print_report,
    print_result,
    print_studies,
    print_study,
    print_study_summary,
)

DEBUG_ENV = "LORAPLUS_SWEEP_DEBUG"
err = Console(stderr=True)


class _Edge(typer.core.TyperGroup):
    """The one place where errors become output, for every command: one line on stderr, secrets
    masked. SweepError: its message and exit code (2, or 1 when a sweep had to stop); a usage error:
    click's message, exit 2; anything else is a bug or a damaged file, named in one line with exit
    code 1, or raised with its traceback under --debug (or LORAPLUS_SWEEP_DEBUG=1)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        urls = [a for a in argv if "://" in a]
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except SweepError as e:
            code = _error(str(e), e.exit_code, urls)
        except typer.TyperException as e:  # click's usage errors
            if type(e).__name__ == "NoArgsIsHelpError":  # the help of a bare group, as click shows it
                typer.echo(e.format_message())
                code = 2
            else:
                where = getattr(getattr(e, "ctx", None), "command_path", None)
                hint = f" (see {where} --help)" if where else ""
                code = _error(e.format_message() + hint, getattr(e, "exit_code", 2), urls)
        except typer.Abort:
            code = _error("aborted", 1, urls)
        except Exception as e:
            if _debug(argv):
                raise
            failure = database_failure(e)  # a damaged or read-only database: not a bug
            if failure is not None:
                code = _error(str(failure), failure.exit_code, urls)
            else:
                first = str(e).splitlines()[0] if str(e) else ""
                code = _error(f"unexpected {type(e).__name__}: {first} (a bug, or a damaged file; run with "
                              f"--debug or {DEBUG_ENV}=1 for the traceback)", 1, urls)
        if not standalone_mode:
            return code
        sys.exit(code)


def _debug(argv: list[str]) -> bool:
    root_options = itertools.takewhile(lambda a: a.startswith("-"), argv)
    return "--debug" in root_options or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def _error(message: str, code: int, urls: list[str] | tuple[str, ...] = ()) -> int:
    """Print one error line (user text as plain text, never markup) and return the exit code."""
    line = " ".join(mask_secrets(message, urls).split())
    err.print(Text.assemble(("error:", "bold red"), " ", line), highlight=False, soft_wrap=True)
    return code


app = typer.Typer(
    cls=_Edge,
    help="Find the learning rates and the ratio lambda = eta_B / eta_A for LoRA+ on your model and task.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option(
        "--debug", help=f"Show the traceback of an unexpected error (also {DEBUG_ENV}=1); without it, "
                        "every error is one line on stderr.")] = False,
) -> None:
    """LoRA+ sweeps: trials, studies and reports.

    Errors are one line on stderr: exit code 2 for input to fix, 1 for a sweep whose trials keep
    failing or an unexpected error (--debug shows its traceback), 130 for Ctrl-C. Only the command
    line is trusted: study files, databases, caches and model directories are data, and a model's
    own code runs only with --trust-remote-code.
    """


SETTINGS = {f.name: f for f in dataclasses.fields(TrialConfig)}


def _setting(name: str, help: str | None = None, extra: str = "", decls: str | None = None) -> Any:
    """The option of a TrialConfig field: its flag, its help (unless a command means something else by
    it) and its group as the help panel, all from the field."""
    meta = SETTINGS[name].metadata
    return typer.Option(decls or flag(name), help=(help or meta["help"]) + extra, rich_help_panel=meta["group"])


def _with_trial_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give `command` (which takes **settings) one option per TrialConfig field, typed, documented and
    defaulted by the field, so that the dataclass is the one source of the trial's flags."""
    hints = typing.get_type_hints(TrialConfig)
    settings = []
    for f in sorted(SETTINGS.values(), key=lambda f: GROUPS.index(f.metadata["group"])):
        kind = str | None if f.name == "target_modules" else hints[f.name]  # comma-separated on the line
        decls = f"{flag(f.name)}/--no-{flag(f.name)[2:]}" if kind is bool else None
        settings.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                          annotation=Annotated[kind, _setting(f.name, decls=decls)]))
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = inspect.Signature([*own, *settings])
    return command


@app.command()
@_with_trial_settings
def trial(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="A trial config JSON (as --json prints); flags given override it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    **settings: Any,
) -> None:
    """Run one LoRA+ fine-tune and print its validation result."""
    if config is not None:
        # By name: typer may vendor its own click, whose enum is not click's.
        explicit = {k: v for k, v in settings.items()
                    if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
        cfg = TrialConfig.from_file(config).replace(**explicit)
    else:
        cfg = TrialConfig(**settings)
    try:
        result = _run_with_progress(cfg)
    except KeyboardInterrupt:
        _error("interrupted: the trial stopped before its end; nothing was stored", 130)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        print_result(result)


def _run_with_progress(cfg: TrialConfig):
    from sweep.checks import check_trial
    from sweep.train import run_trial

    quiet_libraries()
    task = check_trial(cfg)  # a one-class task, a missing device, too long inputs: one line, no training
    with TrialProgress(f"{cfg.model} / {cfg.task}") as bar:
        return run_trial(cfg, on_eval=bar.eval, on_step=bar.step, task=task)


@app.command()
def run(
    study_file: Annotated[str | None, typer.Argument(help="A study TOML file, or a preset name from studies/ (e.g. default).")] = None,
    n_trials: Annotated[int | None, typer.Option(help="Finished trials the study should hold (re-runs continue to it).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds.")] = None,
    sampler: Annotated[str | None, typer.Option(help="tpe, random, grid or qmc.")] = None,
    pruner: Annotated[str | None, typer.Option(help="asha, median or none.")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (default sqlite:///results/loraplus.db).")] = None,
    study_name: Annotated[str | None, typer.Option(help="Name of the study (default: model, task and a hash of the definition).")] = None,
    trial_timeout: Annotated[float | None, typer.Option(help="Fail a trial that runs longer than this many seconds.")] = None,
    jobs: Annotated[int | None, typer.Option(help="Concurrent trials on the CPU (the cores are split between them).")] = None,
    devices: Annotated[str | None, typer.Option(help="GPUs to use, one trial each: auto (all visible), cpu, or ids like 0,1.")] = None,
    in_process: Annotated[bool | None, typer.Option("--in-process", help="Run trials in this process (debugging): no isolation, no timeout.")] = None,
    heartbeat: Annotated[int | None, typer.Option(help="Seconds between a running trial's heartbeats; 3 missed: the trial runs again elsewhere.")] = None,
    rank: Annotated[str | None, _setting("rank", help="Ranks to try, comma-separated, e.g. 4,8,16.")] = None,
    init: Annotated[str | None, _setting("init")] = None,
    use_dora: Annotated[bool | None, _setting("use_dora")] = None,
    use_rslora: Annotated[bool | None, _setting("use_rslora")] = None,
    eta_a: Annotated[str | None, _setting("eta_a", help="eta_A range LOW:HIGH (log-uniform) or a value.")] = None,
    lam: Annotated[str | None, _setting("lam", help="lambda range LOW:HIGH (log-uniform, must include 1) or a value.")] = None,
    batch_size: Annotated[int | None, _setting("batch_size")] = None,
    task: Annotated[str | None, _setting("task")] = None,
    max_length: Annotated[int | None, _setting("max_length")] = None,
    train_limit: Annotated[int | None, _setting("train_limit")] = None,
    eval_limit: Annotated[int | None, _setting("eval_limit")] = None,
    model: Annotated[str | None, _setting("model")] = None,
    seed: Annotated[int | None, _setting("seed", extra=" Also the seed of the sampler.")] = None,
    epochs: Annotated[float | None, _setting("epochs")] = None,
    max_steps: Annotated[int | None, _setting("max_steps")] = None,
    eval_every: Annotated[int | None, _setting("eval_every", extra=" A pruner decides at each evaluation.")] = None,
    device: Annotated[str | None, _setting("device")] = None,
    trust_remote_code: Annotated[bool, _setting("trust_remote_code")] = False,
) -> None:
    """Create or continue a study: sample (eta_A, lambda, rank), fine-tune, store every trial."""
    from sweep import spec as specs
    from sweep.checks import preflight
    from sweep.workers import open_study

    path = specs.find_study_file(study_file) if study_file is not None else None
    overrides = {
        "model": model, "task": task, "n_trials": n_trials, "timeout": timeout,
        # `is not None`: an empty --rank "" is an error, not the default
        "eta_a": specs.parse_range(eta_a, "eta_a") if eta_a is not None else None,
        "lambda": specs.parse_range(lam, "lambda") if lam is not None else None,
        "rank": specs.parse_ranks(rank) if rank is not None else None,
        "init": init, "use_dora": use_dora, "use_rslora": use_rslora, "seed": seed, "epochs": epochs, "max_steps": max_steps,
        "eval_every": eval_every, "train_limit": train_limit, "eval_limit": eval_limit,
        "batch_size": batch_size, "max_length": max_length, "device": device,
        "sampler": sampler, "pruner": pruner, "storage": storage, "name": study_name,
        "trial_timeout": trial_timeout, "jobs": jobs, "devices": devices, "in_process": in_process,
        "heartbeat": heartbeat,
        # Only from this flag: a study file or a stored study can never turn it on.
        "trust_remote_code": trust_remote_code or None,
    }
    spec = specs.load_spec(path, overrides)
    quiet_libraries()
    spec = preflight(spec)  # a bad task or model fails here, before a study is created
    _sweep(spec, open_study(spec))


@app.command()
def worker(
    name: Annotated[str, typer.Argument(help="The study to join (see loraplus-sweep studies list).")],
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL of the study (default sqlite:///results/loraplus.db).")] = None,
    trial_timeout: Annotated[float | None, typer.Option(help="Fail a trial that runs longer than this many seconds.")] = None,
    jobs: Annotated[int | None, typer.Option(help="Concurrent trials on the CPU (the cores are split between them).")] = None,
    devices: Annotated[str | None, typer.Option(help="GPUs to use, one trial each: auto (all visible), cpu, or ids like 0,1.")] = None,
    heartbeat: Annotated[int | None, typer.Option(help="Seconds between a running trial's heartbeats; 3 missed: the trial runs again elsewhere.")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=REMOTE_CODE_HELP)] = False,
) -> None:
    """Join a stored study from this machine: take its trials until it holds its budget."""
    from sweep.checks import preflight
    from sweep.workers import open_study

    run = {"trial_timeout": trial_timeout, "jobs": jobs, "devices": devices, "heartbeat": heartbeat}
    spec = _load_study(name, storage).joined_spec(run, trust_remote_code)
    quiet_libraries()
    spec = preflight(spec)
    _sweep(spec, open_study(spec))


@app.command()
def confirm(
    name: Annotated[str, typer.Argument(help="The study whose best configurations to confirm.")],
    seeds: Annotated[int, typer.Option(min=2, help="Seeds per configuration (the study's seed, +1, ...).")] = 5,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL of the study (default sqlite:///results/loraplus.db).")] = None,
    trial_timeout: Annotated[float | None, typer.Option(help="Fail a run that takes longer than this many seconds.")] = None,
    devices: Annotated[str | None, typer.Option(help="auto, cpu, or a GPU id.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the table (csv, markdown, json) and the convergence plot here.")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=REMOTE_CODE_HELP)] = False,
) -> None:
    """Re-train the study's best LoRA+ and best plain-LoRA configurations over several seeds, paired
    by seed: means, the gain with its 95% interval, and the steps each needs to converge."""
    from sweep import confirm as confirm_mod
    from sweep import outputs
    from sweep.checks import preflight
    from sweep.outfiles import prepare_dir, safe_name
    from sweep.ui import SweepProgress

    if out is not None:
        prepare_dir(out)  # before minutes of training, not after
    study = _load_study(name, storage)
    if study.attrs.get("kind") == "confirm":
        raise SweepError(f"{short(name)} is itself a confirm study; name the study it confirms")
    spec = study.joined_spec({"trial_timeout": trial_timeout, "devices": devices}, trust_remote_code)
    quiet_libraries()
    spec = preflight(spec)
    arms = confirm_mod.choose_arms(study.frame(), spec)
    for arm in arms:
        err.print(f"{arm.name}: eta_A {arm.eta_a:.3g}, lambda {arm.lam:.3g}, rank {arm.rank} ({arm.source})",
                  highlight=False)
    try:
        done = confirm_mod.runs_stored(study, spec, seeds)
        with SweepProgress(name + confirm_mod.SUFFIX, done, 2 * seeds) as ui:
            result = confirm_mod.run_confirm(study, spec, seeds, ui.hooks())
    except KeyboardInterrupt as e:
        raise _interrupted(e, "finished runs are stored") from None
    summary = confirm_mod.summarise(result)
    frame = confirm_mod.table([summary])
    if out is not None:
        written = outputs.write(None, {f"confirm-{safe_name(name)}": frame}, out, [summary])
        err.print(f"wrote {len(written)} files to {out}", highlight=False, markup=False)
    print_confirm(frame)
    if summary.comparison is None:
        raise SweepError("fewer than 2 seeds completed on both sides; nothing to compare")


def _interrupted(e: KeyboardInterrupt, stored: str) -> typer.Exit:
    """The line a sweep or confirm stopped by a signal ends with, and its exit code (130 for Ctrl-C,
    143 for SIGTERM). Later signals are ignored: this process is exiting, they would only make a
    traceback of it."""
    import signal

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    err.print(f"{str(e) or 'interrupted'}: the running trials are stored as failed, {stored}; "
              "run the same command again to continue", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(getattr(e, "exit_code", 130))


def _sweep(spec, study) -> None:
    """Run the study with live progress; Ctrl-C (exit 130) or SIGTERM (143) ends the running trials
    as failed, with the reason."""
    from sweep.ui import SweepProgress
    from sweep.workers import run_study

    done = study.finished_count()
    err.print(Text.assemble("study ", (spec.study_name, "bold"), f" in {mask_url(spec.storage)}: {done} of "
                            f"{spec.n_trials} trials finished"), highlight=False, soft_wrap=True)
    try:
        with SweepProgress(spec.study_name, done, spec.n_trials) as ui:
            study = run_study(spec, ui.hooks(), study)
    except KeyboardInterrupt as e:
        raise _interrupted(e, f"finished trials are stored in {mask_url(spec.storage)}") from None
    _print_study_summary(study)
    missing = study.missing_grid_points(spec)
    if missing:
        reason = missing[-1] or "no reason recorded"
        err.print(f"{len(missing)} of {len(spec.grid)} grid points have no result (last failure: {reason}); "
                  "run the same command again to retry them", highlight=False, soft_wrap=True, markup=False)


def _print_study_summary(study) -> None:
    from sweep import report as rep

    print_study_summary(study.name, rep.summary(study.frame()))


@app.command()
def report(
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (default sqlite:///results/loraplus.db).")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="rich, csv, json or markdown.")] = "rich",
    out: Annotated[Path | None, typer.Option(help="Also write every table (csv, markdown, json) and the PNG plots here.")] = None,
) -> None:
    """Best (eta_A, lambda, rank) per model and task, the gain over plain LoRA, the lambda curve,
    the recommended default lambda per model, the compute each answer cost, and `confirm` results."""
    from sweep import confirm as confirm_mod
    from sweep import outputs
    from sweep import report as rep
    from sweep.outfiles import prepare_dir
    from sweep.spec import DEFAULT_STORAGE
    from sweep.stored import trials_frame

    if fmt not in ("rich", *rep.FORMATS):
        raise SweepError(f"--format must be one of rich, {', '.join(rep.FORMATS)}; got {short(fmt)}")
    if out is not None:
        prepare_dir(out)
    df = trials_frame(storage or DEFAULT_STORAGE)
    if model is not None:
        df = df[df["model"] == model]
    if task is not None:
        df = df[df["task"] == task]
    if df.empty:
        raise SweepError("no trials to report" + (" for that model/task" if model or task else "")
                         + "; run a sweep first (loraplus-sweep run)")
    confirmed = _confirmations(storage, df)
    df = df[df["kind"] != "confirm"]
    if df.empty:
        raise SweepError("no search trials to report; run a sweep first (loraplus-sweep run)")
    tables = rep.tables(df)
    if confirmed:
        tables["confirm"] = confirm_mod.table(confirmed)
    if out is not None:
        written = outputs.write(df, tables, out, confirmed)
        err.print(f"wrote {len(written)} files to {out}", highlight=False, markup=False)
    if fmt == "rich":
        print_report(tables)
        if "confirm" in tables:
            print_confirm(tables["confirm"])
    elif fmt == "json":
        typer.echo(json.dumps({name: json.loads(rep.to_format(t, "json")) for name, t in tables.items()}))
    elif fmt == "csv":
        typer.echo(rep.to_format(tables["summary"], "csv"), nl=False)
    else:
        for name, t in tables.items():
            typer.echo(f"## {name}\n\n{rep.to_format(t, 'markdown')}")


def _confirmations(url: str | None, df: pd.DataFrame) -> list:
    """The summaries of the confirm studies among the reported trials."""
    from sweep import confirm as confirm_mod

    names = sorted(df.loc[df["kind"] == "confirm", "study"].unique())
    return [confirm_mod.summarise(_load_study(n, url)) for n in names]


studies_app = typer.Typer(help="List, show and delete stored studies.", no_args_is_help=True)
app.add_typer(studies_app, name="studies")
StorageOpt = Annotated[str | None, typer.Option(help="Optuna storage URL (default sqlite:///results/loraplus.db).")]


def _load_study(name: str, url: str | None):
    from sweep.spec import DEFAULT_STORAGE
    from sweep.stored import StoredStudy

    return StoredStudy.load(url or DEFAULT_STORAGE, name)


@studies_app.command("list")
def studies_list(
    storage: StorageOpt = None,
    names: Annotated[bool, typer.Option("--names", help="Only the names, one per line (for scripts).")] = False,
) -> None:
    """One line per study: model, task, trials by state, best value."""
    from sweep.spec import DEFAULT_STORAGE
    from sweep.stored import list_studies

    rows = list_studies(storage or DEFAULT_STORAGE)
    if names:
        for r in rows:
            typer.echo(r["study"])
        return
    print_studies(rows)


@studies_app.command("show")
def studies_show(name: str, storage: StorageOpt = None) -> None:
    """The study's definition and its trials, best first."""
    study = _load_study(name, storage)
    print_study(name, study.attrs.get("spec", {}), study.trials(), study.stop_reason)


@studies_app.command("delete")
def studies_delete(
    name: str,
    storage: StorageOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a study and all its trials."""
    from sweep.spec import DEFAULT_STORAGE
    from sweep.storage import require_writable

    study = _load_study(name, storage)
    require_writable(storage or DEFAULT_STORAGE)
    n = len(study.trials())
    if not yes and not typer.confirm(f"delete study {short(name)} and its {n} trials?"):
        err.print("nothing deleted")
        raise typer.Exit(1)
    study.delete()
    err.print(f"deleted study {short(name)} ({n} trials)", highlight=False, markup=False)


@app.command()
def export(
    name: str,
    storage: StorageOpt = None,
    out: Annotated[Path | None, typer.Option(help="Where to write the best config JSON (default results/NAME-best.json).")] = None,
) -> None:
    """Write the study's best trial config as JSON and print the PEFT code that uses it."""
    from sweep import export as exp
    from sweep.outfiles import prepare_file, safe_name, write_text

    study = _load_study(name, storage)
    # The default file is named after the stored name made safe: it stays inside results/.
    path = prepare_file(out if out is not None else Path("results") / f"{safe_name(name)}-best.json")
    best = exp.best_trial(study.frame(), name)
    write_text(path, best.to_json())
    err.print(f"wrote {path}", highlight=False, markup=False)
    typer.echo(exp.peft_snippet(best.config))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
