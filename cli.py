"""loraplus-sweep command line: parse, call the `sweep` package, render."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sweep.config import DEFAULT_MODEL, DEFAULT_TASK, TrialConfig
from sweep.errors import SweepError

app = typer.Typer(
    help="Find the learning rates and the ratio lambda = eta_B / eta_A for LoRA+ on your model and task.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)


def fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _quiet_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@app.callback()
def _root() -> None:
    """LoRA+ sweeps: trials, studies and reports."""


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
    train_limit: Annotated[int | None, typer.Option(help="Use only the first N training examples.")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Use only the first N validation examples.")] = None,
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
    try:
        if config is not None:
            # By name: typer may vendor its own click, whose enum is not click's.
            explicit = {k: v for k, v in given.items()
                        if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
            cfg = _read_config(config).replace(**explicit)
        else:
            cfg = TrialConfig(**given)
        result = _run_with_progress(cfg)
    except SweepError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        _print_result(result)


def _read_config(path: Path) -> TrialConfig:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SweepError(f"cannot read trial config {str(path)!r}: {e}") from e
    return TrialConfig.from_dict(data.get("config", data))


def _run_with_progress(cfg: TrialConfig):
    from sweep.train import run_trial

    _quiet_libraries()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("step {task.fields[step]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[metric]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,  # gone when done: the result (or the error) is what stays
    ) as progress:
        bar = progress.add_task(f"{cfg.model} / {cfg.task}", total=None, step="-", loss="-", metric="")

        def on_step(step: int, total: int, loss: float) -> None:
            progress.update(bar, completed=step, total=total, step=f"{step}/{total}", loss=f"{loss:.4f}")

        def on_eval(point) -> bool:
            progress.update(bar, metric=f"eval {point.metric:.4f}")
            return False

        return run_trial(cfg, on_eval=on_eval, on_step=on_step)


def _print_result(r) -> None:
    out = Console()
    table = Table(title=f"LoRA+ trial: {r.config.model} on {r.config.task}", show_header=False)
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
    ]
    for k, v in rows:
        table.add_row(k, v)
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
