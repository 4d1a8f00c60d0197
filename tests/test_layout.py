"""The package's layers, read from its imports (those inside functions included): each module imports
only from its own layer or below, no two modules import each other (directly or around a circle), and
only the command line imports from the top. Optuna is called from the study wing alone (the dashboard
hands a storage to optuna-dashboard), and from importance on a study it builds in memory from a frame."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [
    # foundation: no knowledge of trials
    {"errors", "schema", "quiet", "hub", "signals", "stats", "liveness", "metrics", "outfiles", "hardware",
     "texts", "dropout", "streams", "outcomes"},
    # what a trial and a study are
    {"config", "spec", "embedded", "tasks", "batches", "lm_tasks", "lm_batches", "result", "hooks"},
    # the engine: one trial, from config to result
    {"base", "models", "kinds", "optim", "precision", "train", "checks", "trial_process", "lm_eval",
     "adapters", "memory"},
    # reading results: frames to tables, plots, exported configs
    {"report", "plots", "outputs", "export", "importance", "gridcheck"},
    # the study wing: stored studies, search, the workers' trial loop, confirm
    {"storage", "search", "stored", "workers", "confirm", "reporting", "dashboard"},
    # presentation
    {"ui", "commandline", "options", "tracking"},
]
LEVEL = {m: i for i, layer in enumerate(LAYERS) for m in layer}
MODULES = sorted(p.stem for p in (ROOT / "sweep").glob("*.py") if p.stem != "__init__")


def imports(path: Path) -> set[str]:
    """The sweep modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "sweep":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sweep."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("sweep.")}
    return found - {path.stem}


GRAPH = {m: imports(ROOT / "sweep" / f"{m}.py") for m in MODULES}


def test_every_module_has_a_layer():
    assert sorted(set(MODULES) - set(LEVEL)) == []


@pytest.mark.parametrize("module", MODULES)
def test_a_module_imports_only_its_layer_and_below(module):
    above = {m for m in GRAPH[module] if LEVEL.get(m, 99) > LEVEL[module]}
    assert above == set(), f"{module} (layer {LEVEL[module]}) imports {above}"


def test_no_circle_of_imports():
    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for m in GRAPH.get(todo.pop(), ()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    circles = sorted({tuple(sorted((a, b))) for a in GRAPH for b in GRAPH[a] if a in reaches(b)})
    assert circles == []


def source(module: str) -> str:
    return (ROOT / "sweep" / f"{module}.py").read_text()


def test_only_the_command_line_is_on_top():
    assert [m for m in MODULES if re.search(r"^\s*(from|import) cli\b", source(m), re.M)] == []


def test_optuna_is_called_from_the_study_wing_only():
    callers = {m for m in MODULES if re.search(r"^\s*(import optuna|from optuna)", source(m), re.M)}
    assert callers <= {"stored", "search", "storage", "importance", "dashboard"}
    text = "\n".join(p.read_text() for p in [ROOT / "cli.py", *sorted((ROOT / "sweep").glob("*.py"))])
    assert re.findall(r"\._storage\b|_trial_id|_get_stale", text) == []  # Optuna's private API
