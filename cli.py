"""loraplus-sweep command line: parse, call the `sweep` package, render."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
import typer.core
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sweep.config import DEFAULT_MODEL, DEFAULT_TASK, TrialConfig
from sweep.errors import SweepError
from sweep.quiet import quiet_libraries
from sweep.schema import short
from sweep.storage import database_failure, mask_secrets, mask_url

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


def _row(table: Table, *values: Any) -> None:
    """Table cells as plain text: stored names and paths are data, never rich markup."""
    table.add_row(*(Text(str(v)) for v in values))


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


@app.command()
def trial(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Hub id, local model directory, or 'minilm-l6' (embedded).")] = DEFAULT_MODEL,
    task: Annotated[str, typer.Option(help="GLUE task, embedded task, or a .csv/.tsv/.jsonl file.")] = DEFAULT_TASK,
    eta_a: Annotated[float, typer.Option("--eta-a", help="Learning rate of the A matrices.")] = TrialConfig.eta_a,
    lam: Annotated[float, typer.Option("--lambda", help="eta_B / eta_A; 1 is plain LoRA.")] = TrialConfig.lam,
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = TrialConfig.rank,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha (default: the rank).")] = None,
    dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = TrialConfig.dropout,
    target_modules: Annotated[str | None, typer.Option(help="Comma-separated module names (default: per architecture).")] = None,
    init: Annotated[str, typer.Option(help="standard (A random, B zero) or reversed (B random, A zero).")] = TrialConfig.init,
    use_dora: Annotated[bool, typer.Option("--use-dora", help="DoRA: a trained magnitude per output column (at eta_A).")] = False,
    use_rslora: Annotated[bool, typer.Option("--use-rslora", help="rsLoRA scaling alpha / sqrt(rank) instead of alpha / rank.")] = False,
    embedding_lr: Annotated[float, typer.Option(help="Learning rate of LoRA on embeddings.")] = TrialConfig.embedding_lr,
    head_lr: Annotated[float | None, typer.Option(help="Learning rate of the classifier head (default: eta_A).")] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay of matrices.")] = TrialConfig.weight_decay,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = TrialConfig.batch_size,
    max_length: Annotated[int, typer.Option(help="Tokens per example, truncated beyond.")] = TrialConfig.max_length,
    epochs: Annotated[float, typer.Option(help="Passes over the training set.")] = TrialConfig.epochs,
    max_steps: Annotated[int | None, typer.Option(help="Step budget; overrides --epochs.")] = None,
    warmup_ratio: Annotated[float, typer.Option(help="Fraction of steps with linear warmup.")] = TrialConfig.warmup_ratio,
    schedule: Annotated[str, typer.Option(help="linear, cosine or constant.")] = TrialConfig.schedule,
    seed: Annotated[int, typer.Option(help="Seed of init, order and dropout.")] = TrialConfig.seed,
    eval_every: Annotated[int, typer.Option(help="Evaluate every N steps (0: each epoch).")] = TrialConfig.eval_every,
    precision: Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16.")] = TrialConfig.precision,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = TrialConfig.device,
    train_limit: Annotated[int | None, typer.Option(help="Train on a fixed, stratified sample of N examples.")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Evaluate on a fixed, stratified sample of N examples.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column of a local task file.")] = None,
    text_pair_column: Annotated[str | None, typer.Option(help="Second text column of a local task file.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column of a local task file.")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the Hub.")] = False,
    config: Annotated[Path | None, typer.Option(help="A trial config JSON (as --json prints); flags given override it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Run one LoRA+ fine-tune and print its validation result."""
    names = {f.name for f in dataclasses.fields(TrialConfig)}
    given = {k: v for k, v in ctx.params.items() if k in names}
    if config is not None:
        # By name: typer may vendor its own click, whose enum is not click's.
        explicit = {k: v for k, v in given.items()
                    if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
        cfg = _read_config(config).replace(**explicit)
    else:
        cfg = TrialConfig(**given)
    try:
        result = _run_with_progress(cfg)
    except KeyboardInterrupt:
        _error("interrupted: the trial stopped before its end; nothing was stored", 130)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        _print_result(result)


def _read_config(path: Path) -> TrialConfig:
    """A config JSON, or a result JSON (`trial --json`, `export`) that holds one under "config"."""
    where = f"trial config {short(str(path))}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SweepError(f"cannot read {where}: {e.strerror or e}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SweepError(f"{where} is not JSON: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    try:
        return TrialConfig.from_dict(data)
    except SweepError as e:
        raise SweepError(f"{where}: {e}") from e


def _run_with_progress(cfg: TrialConfig):
    from sweep.checks import check_trial
    from sweep.train import run_trial
    from sweep.ui import TrialProgress

    quiet_libraries()
    task = check_trial(cfg)  # a one-class task, a missing device, too long inputs: one line, no training
    with TrialProgress(f"{cfg.model} / {cfg.task}") as bar:
        return run_trial(cfg, on_eval=bar.eval, on_step=bar.step, task=task)


def _print_result(r) -> None:
    out = Console()
    table = Table(title=Text(f"LoRA+ trial: {r.config.model} on {r.config.task}"), show_header=False)
    c = r.config
    rows = [
        ("eta_A / lambda / eta_B", f"{c.eta_a:.3g} / {c.lam:g} / {c.eta_b:.3g}"),
        ("rank / alpha / init", f"{c.rank} / {c.lora_alpha:g} / {c.init}"),
        (f"{r.metric_name} (final)", f"{r.metric:.4f}"),
        (f"{r.metric_name} (best)", f"{r.best_metric:.4f} at step {r.best_step}"),
        *((name, f"{v:.4f}") for name, v in r.metrics.items() if name != r.metric_name),
        ("stop reason", r.stop_reason),
        ("steps / examples / tokens", f"{r.steps} / {r.examples} / {r.tokens}"),
        ("tokens/s (training)", f"{r.tokens_per_s:,.0f}"),
        ("wall time", f"{r.wall_time_s:.1f} s (training {r.train_time_s:.1f} s)"),
        ("peak memory", f"{r.peak_memory_mb:,.0f} MiB on {r.device}"),
        ("update norm per group", ", ".join(f"{g} {v:.3g}" for g, v in r.update_norms.items())),
    ]
    for k, v in rows:
        _row(table, k, v)
    out.print(table)



REMOTE_CODE_HELP = ("Let the model's own Python code run (a config's auto_map). Off unless given here: "
                    "never taken from a study file, a config file or the database.")


@app.command()
def run(
    study_file: Annotated[str | None, typer.Argument(help="A study TOML file, or a preset name from studies/ (e.g. default).")] = None,
    model: Annotated[str | None, typer.Option(help="Hub id, local model directory, or 'minilm-l6'.")] = None,
    task: Annotated[str | None, typer.Option(help="GLUE task, embedded task, or a .csv/.tsv/.jsonl file.")] = None,
    n_trials: Annotated[int | None, typer.Option(help="Finished trials the study should hold (re-runs continue to it).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds.")] = None,
    eta_a: Annotated[str | None, typer.Option("--eta-a", help="eta_A range LOW:HIGH (log-uniform) or a value.")] = None,
    lam: Annotated[str | None, typer.Option("--lambda", help="lambda range LOW:HIGH (log-uniform, must include 1) or a value.")] = None,
    rank: Annotated[str | None, typer.Option(help="Ranks to try, comma-separated, e.g. 4,8,16.")] = None,
    init: Annotated[str | None, typer.Option(help="LoRA init: standard or reversed.")] = None,
    use_dora: Annotated[bool | None, typer.Option("--use-dora", help="DoRA on every trial (its magnitude at eta_A).")] = None,
    use_rslora: Annotated[bool | None, typer.Option("--use-rslora", help="rsLoRA scaling alpha / sqrt(rank) on every trial.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the sampler and of every trial.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs per trial.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Steps per trial; overrides epochs.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Evaluate (and maybe prune) every N steps.")] = None,
    train_limit: Annotated[int | None, typer.Option(help="Train on a fixed, stratified sample of N examples.")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Evaluate on a fixed, stratified sample of N examples.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per step.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per example.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    sampler: Annotated[str | None, typer.Option(help="tpe, random, grid or qmc.")] = None,
    pruner: Annotated[str | None, typer.Option(help="asha, median or none.")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (default sqlite:///results/loraplus.db).")] = None,
    study_name: Annotated[str | None, typer.Option(help="Name of the study (default: model, task and a hash of the definition).")] = None,
    trial_timeout: Annotated[float | None, typer.Option(help="Fail a trial that runs longer than this many seconds.")] = None,
    jobs: Annotated[int | None, typer.Option(help="Concurrent trials on the CPU (the cores are split between them).")] = None,
    devices: Annotated[str | None, typer.Option(help="GPUs to use, one trial each: auto (all visible), cpu, or ids like 0,1.")] = None,
    in_process: Annotated[bool | None, typer.Option("--in-process", help="Run trials in this process (debugging): no isolation, no timeout.")] = None,
    heartbeat: Annotated[int | None, typer.Option(help="Seconds between a running trial's heartbeats; 3 missed: the trial runs again elsewhere.")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=REMOTE_CODE_HELP)] = False,
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
    _print_confirm(frame)
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
    from sweep.report import is_plain_value
    from sweep.stored import FINISHED

    trials = study.trials()
    done = [t for t in trials if t.state.name in FINISHED]
    out = Console()
    out.print(Text.assemble((study.name, "bold"), f": {len(done)} finished trials "
                            f"({sum(t.state.name == 'PRUNED' for t in trials)} pruned, "
                            f"{sum(t.state.name == 'FAIL' for t in trials)} failed)"), highlight=False)
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if not complete:
        return
    best = max(complete, key=lambda t: t.value)
    plain = [t for t in complete if is_plain_value(t.params["lambda"])]
    metric = best.user_attrs.get("metric_name", "metric")
    p = best.params
    out.print(f"best {metric} {best.value:.4f}: eta_A {p['eta_a']:.3g}, lambda {p['lambda']:.3g}, "
              f"rank {p['rank']} (trial {best.number})", highlight=False, markup=False)
    if plain:
        b = max(plain, key=lambda t: t.value)
        out.print(f"best plain LoRA (lambda = 1): {b.value:.4f} at eta_A {b.params['eta_a']:.3g}; "
                  f"LoRA+ gain {best.value - b.value:+.4f}", highlight=False)


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
        _print_report(tables)
        if "confirm" in tables:
            _print_confirm(tables["confirm"])
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


def _print_confirm(frame: pd.DataFrame) -> None:
    t = Table("model", "task", "seeds", "LoRA+ (eta_A, lambda, r)", "LoRA+ mean ± std", "plain (eta_A, r)",
              "plain mean ± std", "gain [95% CI]", "p", "steps to plain's final", "cost",
              title="confirm: LoRA+ vs plain LoRA, paired by seed")
    for r in frame.to_dict("records"):
        _row(
            t, str(r["model"]), str(r["task"]), str(r["seeds"]),
            f"{r['lora+ eta_a']:.2g}, {r['lora+ lambda']:.3g}, {r['lora+ rank']}",
            f"{_num(r['lora+ mean'])} ± {_num(r['lora+ std'])}",
            f"{r['lora eta_a']:.2g}, {r['lora rank']}",
            f"{_num(r['lora mean'])} ± {_num(r['lora std'])}",
            f"{_num(r['gain'], '+.4f')} [{_num(r['ci95 low'], '+.4f')}, {_num(r['ci95 high'], '+.4f')}]"
            + (" *" if r["significant"] else ""),
            _num(r["p"], ".3g"),
            f"LoRA+ {_num(r['steps lora+'], 'g')} / plain {_num(r['steps lora'], 'g')}",
            f"{r['trials']} trials, {r['tokens']:,} tokens, {r['wall_time_s'] / 60:.1f} min",
        )
    _stdout().print(t)
    significant = frame["significant"].fillna(False).astype(bool).any()
    _stdout().print("* the 95% interval of the paired gain excludes 0" if significant
                    else "no gain is significant: every 95% interval contains 0", style="dim")
    _stdout().print("steps: the first evaluation at which the mean curve reaches plain LoRA's final mean; "
                    "-: never", style="dim")


def _num(v, spec: str = ".4f") -> str:
    return "-" if v is None or pd.isna(v) else format(v, spec)


def _stdout() -> Console:
    """A terminal's own width; 160 columns when piped, so that tables stay whole in files and logs."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _print_report(tables) -> None:
    out = _stdout()
    s = tables["summary"].to_dict("records")
    t = Table("model", "task", "metric", "best", "eta_A", "lambda", "rank", "λ=1 best", "at eta_A", "gain",
              title="best configuration vs plain LoRA (λ = 1)")
    for r in s:
        _row(t, str(r["model"]), str(r["task"]), str(r["metric_name"]), _num(r["best"]),
                  _num(r["eta_a"], ".2g"), _num(r["lambda"], ".3g"), _num(r["rank"], ".0f"),
                  _num(r["best_plain"]), _num(r["plain_eta_a"], ".2g"), _num(r["gain"], "+.4f"))
    out.print(t)
    t = Table("model", "task", "trials", "complete", "pruned", "failed", "tokens", "wall time",
              title="compute spent")
    for r in s:
        _row(t, str(r["model"]), str(r["task"]), str(r["trials"]), str(r["complete"]), str(r["pruned"]),
                  str(r["failed"]), f"{r['tokens']:,}", f"{r['wall_time_s'] / 60:.1f} min")
    out.print(t)
    t = Table("model", "task", "sweep trials", "sweep wall time", "grid points", "grid wall time (est.)",
              "grid / sweep", title="the same region as a full grid (eta_A every half decade, lambda every "
              "power of 2, every rank; each point at the median complete trial's cost)")
    for r in tables["budget"].to_dict("records"):
        _row(t, str(r["model"]), str(r["task"]), str(r["trials"]), f"{r['wall_time_s'] / 60:.1f} min",
                  str(r["grid_points"]), f"{_num(r['grid_wall_time_s'] / 60, '.1f')} min",
                  f"{_num(r['grid_over_sweep'], '.1f')}x")
    out.print(t)
    curve = tables["lambda_curve"]
    if not curve.empty:
        pivot = curve.pivot_table(index=["model", "task"], columns="lambda", values="value", aggfunc="max")
        t = Table("model", "task", *(f"{c:g}" for c in pivot.columns),
                  title="lambda curve: best metric over eta_A and rank, per lambda bin "
                        "(bin 2^k holds lambda 2^(k-1/2) to 2^(k+1/2), so bin 1 holds 1 to 1.41)")
        for (m, k), row in pivot.iterrows():
            _row(t, str(m), str(k), *(_num(v) for v in row))
        out.print(t)
    d = tables["default_lambda"]
    t = Table("model", "default lambda", "mean normalised metric", "spread (std)", "worst task", "tasks",
              title="recommended default lambda (metric normalised per task by its best)")
    for r in d.to_dict("records"):
        _row(t, str(r["model"]), f"{r['lambda']:g}", _num(r["mean_normalised"]), _num(r["spread"]),
                  _num(r["worst"]), str(r["n_tasks"]))
    out.print(t)


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
    table = Table("study", "model", "task", "trials", "best", title="studies")
    for r in rows:
        _row(table, r["study"], r["model"], r["task"], r["trials"], _num(r["best"]))
    Console().print(table)


@studies_app.command("show")
def studies_show(name: str, storage: StorageOpt = None) -> None:
    """The study's definition and its trials, best first."""
    study = _load_study(name, storage)
    out = Console()
    out.print_json(json.dumps(study.attrs.get("spec", {})))
    table = Table("#", "state", "value", "eta_A", "lambda", "rank", "stop reason", title=Text(name))
    trials = sorted(study.trials(), key=lambda t: -(t.value if t.value is not None else -1e9))
    for t in trials:
        p = t.params
        _row(table, t.number, t.state.name, f"{t.value:.4f}" if t.value is not None else "-",
             f"{p['eta_a']:.3g}" if "eta_a" in p else "-", f"{p['lambda']:.3g}" if "lambda" in p else "-",
             p.get("rank", "-"), study.stop_reason(t))
    out.print(table)


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
    from sweep.outfiles import prepare_file, safe_name, write_text

    study = _load_study(name, storage)
    # The default file is named after the stored name made safe: it stays inside results/.
    path = prepare_file(out if out is not None else Path("results") / f"{safe_name(name)}-best.json")
    complete = [t for t in study.trials(("COMPLETE",)) if t.value is not None]
    if not complete:
        raise SweepError(f"study {short(name)} has no complete trial yet")
    best = max(complete, key=lambda t: t.value)
    stored = best.user_attrs.get("config")
    if not isinstance(stored, dict):
        raise SweepError(f"study {short(name)} was not written by loraplus-sweep: its best trial "
                         f"(#{best.number}) holds no trial config")
    try:
        cfg = TrialConfig.from_dict(stored)
    except SweepError as e:
        raise SweepError(f"the stored config of trial #{best.number} of {short(name)}: {e}") from e
    write_text(path, json.dumps({"study": name, "trial": best.number, "value": best.value,
                                 "metric_name": best.user_attrs.get("metric_name"),
                                 "config": cfg.to_dict()}, indent=2) + "\n")
    err.print(f"wrote {path}", highlight=False, markup=False)
    typer.echo(peft_snippet(cfg))


def peft_snippet(cfg: TrialConfig) -> str:
    targets = list(cfg.target_modules) if cfg.target_modules else "<the architecture's default, e.g. ['query', 'value']>"
    return f"""from peft import LoraConfig, get_peft_model
from peft.optimizers import create_loraplus_optimizer
import torch

model = get_peft_model(model, LoraConfig(r={cfg.rank}, lora_alpha={cfg.lora_alpha:g}, lora_dropout={cfg.dropout:g},
                                         target_modules={targets!r}, use_dora={cfg.use_dora},
                                         use_rslora={cfg.use_rslora}, task_type="SEQ_CLS"))
optimizer = create_loraplus_optimizer(
    model, torch.optim.AdamW, lr={cfg.eta_a:.4g}, loraplus_lr_ratio={cfg.lam:.4g},
    loraplus_weight_decay={cfg.weight_decay:g}, betas={tuple(cfg.betas)!r},
)
# Note: PEFT also gives 1-D trainable parameters (the classifier bias, DoRA's magnitude) lr * loraplus_lr_ratio."""


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
