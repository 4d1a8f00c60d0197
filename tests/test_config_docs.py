"""TrialConfig documents itself: each field's help and group are the text of --help and of the table of
trial settings in docs/commands.md; and it reports every problem of a config in one error."""

import dataclasses
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from sweep.core.errors import SweepError
from sweep.data.config import GROUPS, TrialConfig, flag, settings_markdown

COMMANDS_DOC = Path(__file__).resolve().parent.parent / "docs" / "commands.md"
FIELDS = dataclasses.fields(TrialConfig)
# What run means by these differs from one trial's value: ranges and a list of ranks.
RUN_OWN_HELP = {"eta_a", "lam", "rank"}


def help_text(*command: str) -> str:
    """--help as one string without whitespace or box borders, so that rich's wrapping is no matter."""
    r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    return re.sub(r"[\s│]", "", r.stdout)


def squeezed(text: str) -> str:
    return re.sub(r"\s", "", text)


def test_every_field_has_help_and_a_group():
    for f in FIELDS:
        assert f.metadata.get("help", "").strip(), f.name
        assert f.metadata.get("group") in GROUPS, f.name
        assert "[" not in f.metadata["help"], f"{f.name}: rich would read [...] in --help as markup"


def test_trial_help_shows_every_field_with_its_flag_help_and_group():
    shown = help_text("trial")
    for f in FIELDS:
        assert squeezed(flag(f.name)) in shown and squeezed(f.metadata["help"]) in shown, f.name
    for group in GROUPS:
        assert f"╭─{group}─" in shown


def test_run_options_that_set_a_field_show_its_help():
    shown = help_text("run")
    for name in ("model", "task", "init", "use_dora", "use_rslora", "seed", "epochs", "max_steps",
                 "eval_every", "train_limit", "eval_limit", "batch_size", "max_length", "device",
                 "trust_remote_code"):
        assert squeezed(TrialConfig.__dataclass_fields__[name].metadata["help"]) in shown, name
    for name in RUN_OWN_HELP:
        assert flag(name) in shown
        assert squeezed(TrialConfig.__dataclass_fields__[name].metadata["help"]) not in shown, name
    assert "LOW:HIGH" in shown


def test_docs_table_is_the_generated_one():
    text = COMMANDS_DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- trial settings:[^\n]*-->\n(.*?)<!-- end of trial settings -->", text, re.S)
    assert found, "docs/commands.md lost the markers around its table of trial settings"
    assert found.group(1).strip() == settings_markdown().strip(), (
        "docs/commands.md's trial settings differ from the fields' help: "
        "paste sweep.data.config.settings_markdown()")


def test_generated_table_has_a_row_per_field_in_its_group():
    md = settings_markdown()
    sections = dict(re.findall(r"\*\*(\w+)\*\*\n\n(.*?)(?=\n\n\*\*|\Z)", md, re.S))
    assert list(sections) == list(GROUPS)
    for f in FIELDS:
        rows = [line for line in md.splitlines() if f"| `{flag(f.name)}` |" in line]
        assert len(rows) == 1, f.name
        assert rows[0] in sections[f.metadata["group"]], f.name


def test_one_error_names_a_bad_type_and_a_bad_value_together():
    with pytest.raises(SweepError) as e:
        TrialConfig(rank="8", eta_a=-1e-3, dropout=2.0)
    message = str(e.value)
    assert "rank must be an integer, got '8'" in message
    assert "eta_a must be a finite number > 0, got -0.001" in message
    assert "dropout must be in [0, 1), got 2.0" in message
    assert "\n" not in message and "rank must be an integer >= 1" not in message


def test_a_field_of_the_wrong_type_gets_no_value_check():
    # a string seed would break `0 <= seed`; it is named once, as a type problem
    with pytest.raises(SweepError, match=r"^seed must be an integer, got 'x'$"):
        TrialConfig(seed="x")
    with pytest.raises(SweepError, match=r"^model must be a string, got 3; lambda must be a finite number"):
        TrialConfig(model=3, lam=0.0)
