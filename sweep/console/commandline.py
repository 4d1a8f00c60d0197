"""What the commands of the command line share: the one error edge (every error one line on stderr,
secrets masked), the help of its commands, the end of an interrupted run, the sweep of run and worker
and the adapter of export (the options are sweep.console.options')."""

from __future__ import annotations

import gc
import inspect
import itertools
import os
import sys
from pathlib import Path
from typing import Any

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from sweep.core import streams
from sweep.core.errors import SweepError
from sweep.core.schema import short
from sweep.study.storage import database_failure, mask_secrets, mask_url

DEBUG_ENV = "LORAPLUS_SWEEP_DEBUG"
err = Console(stderr=True)


def _no_type_on_flags(command: Any, ctx: Any) -> Any:
    """A flag takes no value: its help shows no <bool> type beside it (--help, --yes, --json, ...), in
    a command and, for a group, in each of its commands."""
    if command is not None:
        for param in [command.get_help_option(ctx), *command.params]:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        for sub in getattr(command, "commands", {}).values():
            _no_type_on_flags(sub, ctx)
    return command


class Edge(typer.core.TyperGroup):
    """The one place where errors become output, for every command: one line on stderr, secrets
    masked. SweepError: its message and exit code (2, or 1 when a sweep had to stop); a usage error:
    click's message, exit 2; anything else is a bug or a damaged file, named in one line with exit
    code 1, or raised with its traceback under --debug (or LORAPLUS_SWEEP_DEBUG=1)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        urls = [a for a in argv if "://" in a]
        closed = streams.prepare()
        try:
            if closed is not None:
                raise closed
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
            sys.stdout.flush()  # here, where a full disk is one line, not at the interpreter's exit
        except streams.OutputFailed as e:
            streams.discard()
            code = error(str(e), e.exit_code, urls)
        except SweepError as e:
            code = error(str(e), e.exit_code, urls)
        except typer.TyperException as e:  # click's usage errors
            if type(e).__name__ == "NoArgsIsHelpError":  # the help of a bare group, as click shows it
                typer.echo(e.format_message())
                code = 2
            else:
                where = getattr(getattr(e, "ctx", None), "command_path", None)
                hint = f" (see {where} --help)" if where else ""
                code = error(e.format_message() + hint, getattr(e, "exit_code", 2), urls)
        except typer.Abort:
            code = error("aborted", 1, urls)
        except Exception as e:
            if _debug(argv):
                raise
            failure = database_failure(e)  # a damaged or read-only database: not a bug
            if failure is not None:
                code = error(str(failure), failure.exit_code, urls)
            else:
                first = str(e).splitlines()[0] if str(e) else ""
                code = error(f"unexpected {type(e).__name__}: {first} (a bug, or a damaged file; run with "
                              f"--debug or {DEBUG_ENV}=1 for the traceback)", 1, urls)
        if not standalone_mode:
            return code
        # The cycle collector's last pass at exit walks every object of the libraries loaded (over a
        # second with torch and transformers) to free memory the process is about to give back.
        gc.freeze()
        sys.exit(code)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return _no_type_on_flags(super().get_command(ctx, cmd_name), ctx)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _no_type_on_flags(self, ctx)
        super().format_help(ctx, formatter)


def plain_help(app: typer.Typer) -> None:
    """Each command's docstring as its help, as plain text (rich would read "[dashboard]" in an
    install hint as markup and drop it), and its first paragraph as one line in the list of
    commands (typer keeps the docstring's line breaks there), for `app` and its command groups."""
    for info in app.registered_commands:
        doc = inspect.cleandoc(info.help or (info.callback.__doc__ if info.callback else None) or "")
        info.help = escape(doc)
        info.short_help = info.short_help or escape(" ".join(doc.split("\n\n")[0].split()))
    for group in app.registered_groups:
        if group.typer_instance is not None:
            plain_help(group.typer_instance)


def _debug(argv: list[str]) -> bool:
    root_options = itertools.takewhile(lambda a: a.startswith("-"), argv)
    return "--debug" in root_options or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def error(message: str, code: int, urls: list[str] | tuple[str, ...] = ()) -> int:
    """Print one error line (user text as plain text, never markup) and return the exit code."""
    line = " ".join(mask_secrets(message, urls).split())
    err.print(Text.assemble(("error:", "bold red"), " ", line), highlight=False, soft_wrap=True)
    return code


def interrupted(e: KeyboardInterrupt, stored: str) -> typer.Exit:
    """The line a sweep or confirm stopped by a signal ends with, and its exit code (130 for Ctrl-C,
    143 for SIGTERM, 129 for SIGHUP). Later signals are ignored: this process is exiting, they would only
    make a traceback of it."""
    import signal

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    err.print(f"{str(e) or 'interrupted'}: the running trials are stored as failed, {stored}; "
              "run the same command again to continue", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(getattr(e, "exit_code", 130))


def sweep(spec: Any, store: Any) -> None:
    """Run a study's trials (run, worker); a signal ends it with one line."""
    from sweep.console.ui import sweep_live

    try:
        sweep_live(spec, store)
    except KeyboardInterrupt as e:
        raise interrupted(e, f"finished trials are stored in {mask_url(spec.storage)}") from None


def export_adapter(best: Any, dest: Path, trust_remote_code: bool) -> None:
    """Train a study's best trial again (its config and seed) and save its adapter to `dest`."""
    from sweep.console.ui import trial_live
    from sweep.data.result import StopReason
    from sweep.engine.adapters import save_adapter

    cfg = best.config.replace(trust_remote_code=trust_remote_code)
    err.print(f"training trial #{best.trial} of study {short(best.study)} again (seed {cfg.seed})",
              highlight=False, markup=False, soft_wrap=True)
    about = (f"Trained by `loraplus-sweep export --adapter`: {best.describe()}; {cfg.model} on {cfg.task}, "
             f"eta_A {cfg.eta_a:.4g}, lambda {cfg.lam:.4g}, rank {cfg.rank}, seed {cfg.seed}.")
    try:
        result = trial_live(cfg, on_end=lambda model, tokenizer: save_adapter(model, tokenizer, dest, about))
    except KeyboardInterrupt:
        error("interrupted: no adapter was written", 130)
        raise typer.Exit(130) from None
    if result.stop is StopReason.DIVERGED:
        raise SweepError(f"trial #{best.trial} diverged when trained again ({result.stop_reason}); no "
                         "adapter was written")
    err.print(f"wrote the adapter to {dest}: validation {result.metric_name} {result.metric:.4g} "
              f"(stored: {best.value:.4g})", highlight=False, markup=False, soft_wrap=True)


def confirm_table(summaries: list, name: str, split: str, rank: int | None, out: Path | None) -> Any:
    """confirm's table of `summaries`, also written with its convergence plots to `out` where given."""
    from sweep.analysis import outputs
    from sweep.core.outfiles import safe_name
    from sweep.study.confirm import table

    frame = table(summaries)
    if out is not None:
        table_name = (f"confirm-{safe_name(name)}" + ("" if split == "test" else f"-{split}")
                      + ("" if rank is None else f"-r{rank}"))
        written = outputs.write(None, {table_name: frame}, out, summaries)
        err.print(f"wrote {len(written)} files to {out}", highlight=False, markup=False)
    return frame
