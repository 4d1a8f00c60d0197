"""The trial command through Typer's CliRunner: JSON output, and one-line errors with exit code 2."""

import json

import pytest
from commands import invoke, runner

from cli import app


def test_trial_json_prints_one_object_with_metric_and_throughput(tiny_model, toy_csv):
    r = invoke("trial", "--model", tiny_model, "--task", toy_csv, "--eta-a", 1e-3, "--lambda", 4,
               "--rank", 4, "--max-steps", 6, "--eval-every", 3, "--max-length", 32, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert 0 <= out["metric"] <= 1 and out["metric_name"] == "accuracy"
    assert out["tokens_per_s"] > 0 and out["steps"] == 6 and len(out["history"]) == 2
    assert out["config"]["lambda"] == 4 and out["config"]["rank"] == 4
    assert out["stop_reason"] == "completed"


def test_trial_config_file_with_flag_override(tiny_model, toy_csv, tmp_path):
    first = invoke("trial", "--model", tiny_model, "--task", toy_csv, "--max-steps", 2, "--json")
    path = tmp_path / "result.json"
    path.write_text(first.stdout)
    again = invoke("trial", "--config", path, "--lambda", 2, "--json")
    assert again.exit_code == 0, again.output
    cfg = json.loads(again.stdout)["config"]
    assert cfg["lambda"] == 2 and cfg["max_steps"] == 2 and cfg["model"] == tiny_model


def test_trial_prints_a_table_by_default(tiny_model, toy_csv):
    r = invoke("trial", "--model", tiny_model, "--task", toy_csv, "--max-steps", 2)
    assert r.exit_code == 0 and "accuracy (final)" in r.stdout and "tokens/s" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eta-a", "0"], "eta_a must be a finite number > 0, got 0.0"),
        (["--eta-a", "-1e-4"], "eta_a must be a finite number > 0"),
        (["--lambda", "0"], "lambda must be a finite number > 0, got 0.0"),
        (["--lambda", "-4"], "lambda must be a finite number > 0"),
        (["--rank", "0"], "rank must be an integer >= 1, got 0"),
        (["--task", "nosuchtask"], "unknown task 'nosuchtask'"),
        (["--model", "./no/such/model"], "model directory './no/such/model' does not exist"),
        (["--label-column", "stars"], "label column 'stars' not in toy.csv"),
        (["--text-column", "body"], "text column 'body' not in toy.csv"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tiny_model, toy_csv, args, message):
    base = {"--model": tiny_model, "--task": toy_csv}
    for flag, value in zip(args[::2], args[1::2], strict=False):
        base[flag] = value
    r = invoke("trial", *[x for kv in base.items() for x in kv], "--max-steps", 1)
    assert r.exit_code == 2
    assert message in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.output


def test_help_keeps_bracketed_install_hints_and_lists_each_command_in_flowing_lines():
    """Rich reads help text as markup: an install hint's "[dashboard]" would vanish, and typer's list of
    commands kept the docstrings' line breaks (a summary broken mid-sentence)."""
    wide = runner.invoke(app, ["--help"], env={"COLUMNS": "250"}, terminal_width=250)
    assert wide.exit_code == 0
    assert "pip install 'loraplus-sweep[dashboard]'" in wide.stdout
    # Wide enough for every summary: each on one line of the commands panel.
    assert "over fresh seeds paired by seed: means, the gain with its 95% interval" in wide.stdout
    assert "the lambda curve, the recommended default lambda per model" in wide.stdout
    page = runner.invoke(app, ["dashboard", "--help"], env={"COLUMNS": "250"}, terminal_width=250)
    assert "pip install 'loraplus-sweep[dashboard]'" in page.stdout
    group = runner.invoke(app, ["studies", "--help"], env={"COLUMNS": "250"}, terminal_width=250)
    assert "Copy studies with all their trials from SOURCE into --storage (e.g. a sweep run elsewhere);" \
        " names already stored there are refused" in group.stdout


def _command_paths(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _command_paths(command, (*prefix, name))


def test_no_help_shows_a_type_beside_a_flag():
    """A flag takes no value: --help, --yes, --json, --per-bin show no <bool> in any command's help."""
    import typer

    paths = [(), *_command_paths(typer.main.get_command(app))]
    assert len(paths) > 10
    for path in paths:
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and "--help" in r.output, path
        assert "<bool>" not in r.output, path
