"""The command line as the tests call it: in-process through Typer's runner, with its error edge."""

from __future__ import annotations

from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def invoke(*args, input: str | None = None, env: dict[str, str] | None = None):
    """`loraplus-sweep ARGS...` in this process; each argument as its string."""
    return runner.invoke(app, [str(a) for a in args], input=input, env=env)


def one_line(r) -> str:
    """A failed command's message: one line on stderr, no traceback anywhere."""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output
    return lines[0]
