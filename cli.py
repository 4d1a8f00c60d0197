"""loraplus-sweep command line: parse, call the `sweep` package, render."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sweep.console import commandline as cl
from sweep.console import options as opt
from sweep.console import ui
from sweep.console.commandline import err, sweep
from sweep.console.options import RemoteCodeOpt, StorageOpt
from sweep.core.errors import SweepError
from sweep.core.schema import not_one_of, short
from sweep.data.config import TrialConfig
from sweep.data.spec import DEFAULT_STORAGE
from sweep.study.storage import mask_url
from sweep.study.stored import StoredStudy

app = typer.Typer(
    cls=cl.Edge,
    help="Find the learning rates and the ratio lambda = eta_B / eta_A for LoRA+ on your model and task.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help=f"Show the traceback of an unexpected error (also {cl.DEBUG_ENV}=1); without it, every error is one line on stderr.")] = False,
) -> None:
    """LoRA+ sweeps: trials, studies and reports.

    Errors are one line on stderr: exit code 2 for input to fix, 1 for a sweep whose trials keep
    failing or an unexpected error (--debug shows its traceback), 130 for Ctrl-C. Only the command
    line is trusted: study files, databases, caches and model directories are data, and a model's
    own code runs only with --trust-remote-code.
    """


@app.command()
@opt.with_trial_settings
def trial(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="A trial config JSON (as --json prints); flags given override it.", show_default="none")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    **settings: Any,
) -> None:
    """Run one LoRA+ fine-tune and print its validation result."""
    cfg = TrialConfig.from_file(config).replace(**opt.given(ctx, settings)) if config else TrialConfig(**settings)
    try:
        result = ui.trial_live(cfg)
    except KeyboardInterrupt:
        cl.error("interrupted: the trial stopped before its end; nothing was stored", 130)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        ui.print_result(result)


@app.command()
@opt.with_study_settings
def run(
    ctx: typer.Context,
    study_file: Annotated[str | None, typer.Argument(help="A study TOML file, or a preset name from studies/ (e.g. default); options given override its settings.")] = None,
    **settings: Any,
) -> None:
    """Create or continue a study: sample (eta_A, lambda, rank), fine-tune, store every trial.

    Options given override the study file's settings; the defaults shown are a study's without one."""
    from sweep.study.workers import prepare

    sweep(*prepare(opt.study_spec(ctx, study_file, settings)))


@app.command()
@opt.with_machine_options()
def worker(
    name: Annotated[str, typer.Argument(help="The study to join (see loraplus-sweep studies list).")],
    storage: StorageOpt = DEFAULT_STORAGE,
    **machine: Any,
) -> None:
    """Join a stored study from this machine: take its trials until it holds its budget."""
    from sweep.study.workers import prepare

    run, trust_remote_code = opt.machine_run(machine)
    sweep(*prepare(StoredStudy.load(storage, name).joined_spec(run, trust_remote_code)))


@app.command()
@opt.with_machine_options("heartbeat")
def confirm(
    name: Annotated[str, typer.Argument(help="The study whose best configurations to confirm.")],
    seeds: Annotated[int, typer.Option(min=2, help="Seeds per configuration: the study's seed + 1, + 2, ... (no search trial used them); a significance claim needs 3 pairs.")] = 5,
    rank: Annotated[int | None, typer.Option(min=1, help="Compare at this rank: its best plain-LoRA trial and its best LoRA+ trial (default: the best plain trial's rank).")] = None,
    split: Annotated[str, typer.Option(help="The split the runs are scored on: test (held out from the search) or validation (what the search selected on).")] = "test",
    per_bin: Annotated[bool, typer.Option("--per-bin", help="Confirm the best trial of every lambda bin (lambda >= 1.41) against plain LoRA, one row per bin.")] = False,
    matched: Annotated[bool, typer.Option("--matched", help="Also train plain LoRA at the best LoRA+ arm's eta_B (its eta_A = that eta_B), on the same seeds: a second row whose arms differ in lambda alone.")] = False,
    arm: Annotated[list[str] | None, typer.Option(metavar="ETA_A:LAMBDA", help="Also confirm this LoRA+ point of your own (e.g. 5e-4:16) against plain LoRA, at its rank; repeatable.")] = None,
    eval_limit: Annotated[int | None, typer.Option(min=1, help="Score each run on a fixed sample of N examples of the split.", show_default="the whole split")] = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    out: Annotated[Path | None, typer.Option(help="Also write the table (csv, markdown, json) and the convergence plot here.")] = None,
    **machine: Any,
) -> None:
    """Re-train the study's best LoRA+ and best plain-LoRA configurations, at one rank, over fresh seeds
    paired by seed: means, the gain with its 95% interval and the smallest gain the pairs could detect,
    diverged and failed runs, and the steps each needs to converge."""
    from sweep.console.commandline import confirm_table
    from sweep.core.outfiles import prepare_dir
    from sweep.study import confirm as confirm_mod

    if out is not None:
        prepare_dir(out)  # before minutes of training, not after
    study = StoredStudy.load(storage, name)
    run, trust_remote_code = opt.machine_run(machine)
    try:
        planned = confirm_mod.prepare(study, run, trust_remote_code, seeds, rank, per_bin, split, matched,
                                      eval_limit, tuple(arm or ()))
        summaries = ui.confirm_live(study, *planned)
    except KeyboardInterrupt as e:
        raise cl.interrupted(e, "finished runs are stored") from None
    frame = confirm_table(summaries, name, split, rank, out)
    ui.print_confirm(frame)
    if all(s.comparison is None for s in summaries):
        raise SweepError("fewer than 2 seeds have a result on both sides; nothing to compare")


@app.command()
def report(
    names: Annotated[list[str] | None, typer.Argument(
        metavar="NAME", show_default=False,
        help="Report these studies only, with their confirm studies (default: every study; see "
             "loraplus-sweep studies list).")] = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="rich, csv, json or markdown.")] = "rich",
    out: Annotated[Path | None, typer.Option(help="Also write every table (csv, markdown, json) and the PNG plots here.")] = None,
) -> None:
    """Best (eta_A, lambda, rank) per model and task, the gain over plain LoRA, the lambda curve,
    the recommended default lambda per model, the compute each answer cost, and `confirm` results:
    of every study stored, or of the NAMEd ones."""
    from sweep.core.outfiles import FORMATS, prepare_dir

    if fmt not in ("rich", *FORMATS):
        raise SweepError(not_one_of("--format", fmt, ("rich", *FORMATS)))
    from sweep.analysis import outputs
    from sweep.study.reporting import gather, selected

    if names:
        selected(storage, names)  # an unknown name is refused before --out is created
    if out is not None:
        prepare_dir(out)

    shown = gather(storage, model, task, names)
    if out is not None:
        written = outputs.write(shown.trials, shown.tables, out, shown.confirmations)
        err.print(f"wrote {len(written)} files to {out}", highlight=False, markup=False)
    ui.print_report(shown.tables, fmt)


studies_app = typer.Typer(help="List, show, copy and delete stored studies.", no_args_is_help=True)
app.add_typer(studies_app, name="studies")


@studies_app.command("list")
def studies_list(
    storage: StorageOpt = DEFAULT_STORAGE,
    names: Annotated[bool, typer.Option("--names", help="Only the names, one per line (for scripts).")] = False,
) -> None:
    """One line per study: model, task, trials by state, best value."""
    from sweep.study.stored import list_studies

    rows = list_studies(storage)
    if names:
        for r in rows:
            typer.echo(r["study"])
        return
    ui.print_studies(rows)


@studies_app.command("show")
def studies_show(name: str, storage: StorageOpt = DEFAULT_STORAGE) -> None:
    """The study's definition and its trials, best first."""
    from sweep.study.stored import foreign_kind

    study = StoredStudy.load(storage, name)
    if not study.is_ours:
        err.print(f"study {short(name)} is foreign ({foreign_kind(study)}): its trials as Optuna stored them",
                  highlight=False, markup=False, soft_wrap=True)
    ui.print_study(name, study.attrs.get("spec", {}), study.ranked_trials(), study.stop_reason)


@studies_app.command("delete")
def studies_delete(
    name: str,
    storage: StorageOpt = DEFAULT_STORAGE,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a study and all its trials."""
    from sweep.study.storage import require_writable

    study = StoredStudy.load(storage, name)
    require_writable(storage)
    n = len(study.trials())
    if not yes and not typer.confirm(f"delete study {short(name)} and its {n} trials?"):
        err.print("nothing deleted")
        raise typer.Exit(1)
    study.delete()
    err.print(f"deleted study {short(name)} ({n} trials)", highlight=False, markup=False)


@studies_app.command("copy")
def studies_copy(
    source: Annotated[str, typer.Argument(help="Database URL or journal file to copy from.")],
    names: Annotated[list[str] | None, typer.Argument(help="Studies to copy (default: all).",
                                                      show_default=False)] = None,
    storage: StorageOpt = DEFAULT_STORAGE,
) -> None:
    """Copy studies with all their trials from SOURCE into --storage (e.g. a sweep run elsewhere);
    names already stored there are refused, never merged."""
    from sweep.study.storage import require_writable
    from sweep.study.stored import copy_studies

    require_writable(storage)
    for name, n, running in copy_studies(source, storage, names or None):
        failed = f"; {running} running there copied as failed" if running else ""
        err.print(f"copied {short(name)} ({n} trials{failed})", highlight=False, markup=False)


@app.command()
def export(
    name: str,
    storage: StorageOpt = DEFAULT_STORAGE,
    out: Annotated[Path | None, typer.Option(help="Where to write the best config JSON (default results/NAME-best.json).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="What to print: peft (Python code), axolotl or llama-factory (a YAML config).")] = "peft",
    adapter: Annotated[Path | None, typer.Option(help="Train the exported trial again (its config and seed) and save its adapter to this new or empty directory, for PeftModel.from_pretrained.")] = None,
    trust_remote_code: RemoteCodeOpt = False,
    pick: Annotated[str, typer.Option(help="Which trial: recommended (the report's: the centre of the trials within noise of the best) or best (the highest value).")] = "recommended",
) -> None:
    """Write the study's recommended (or best) trial config as JSON and print it for PEFT, axolotl or
    LLaMA-Factory; with --adapter, train it again and save the adapter."""
    from sweep.analysis import export as exp
    from sweep.core.outfiles import prepare_file, safe_name, write_text

    for flag, value, allowed in (("--format", fmt, exp.FORMATS), ("--pick", pick, exp.PICKS)):
        if value not in allowed:
            raise SweepError(not_one_of(flag, value, allowed))
    study = StoredStudy.load(storage, name)
    study.require_ours("export")
    exp.require_search(study.name, study.attrs)
    # The default file is named after the stored name made safe: it stays inside results/.
    path = prepare_file(out if out is not None else Path("results") / f"{safe_name(name)}-best.json")
    if adapter is not None:
        from sweep.engine.adapters import check_destination

        adapter = check_destination(adapter)  # before any work: nothing is overwritten; links resolved
    best = exp.best_trial(study.frame(), name, pick)
    write_text(path, best.to_json())
    err.print(f"wrote {path}", highlight=False, markup=False)
    typer.echo(exp.render(best, fmt), nl=False)
    if adapter is not None:
        cl.export_adapter(best, adapter, trust_remote_code)


@app.command()
def dashboard(
    storage: StorageOpt = DEFAULT_STORAGE,
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 serves this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Browse the stored studies in optuna-dashboard until Ctrl-C: every trial, Optuna's plots, live
    while a sweep runs (pip install 'loraplus-sweep[dashboard]')."""
    from sweep.study.dashboard import serve

    def listening(address: str) -> None:
        err.print(f"optuna-dashboard on {mask_url(storage)} (Ctrl-C stops it):", highlight=False, markup=False,
                  soft_wrap=True)
        typer.echo(address)

    try:
        serve(storage, host, port, listening)
    except KeyboardInterrupt:
        err.print("dashboard stopped", highlight=False, markup=False)


cl.plain_help(app)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
