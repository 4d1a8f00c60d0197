"""The package's layers, read from its folders: sweep/ holds one subpackage per layer, listed here from the
bottom up, each with a docstring saying what it owns. Each module imports only from its own layer or below
(imports inside functions included), no two modules import each other (directly or around a circle), and
only the command line imports from the top. Optuna is called from the study wing alone (the dashboard
hands a storage to optuna-dashboard), and from importance on a study it builds in memory from a frame."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sweep"
# bottom to top: foundation, what a trial and a study are, one trial, reading results, the study wing,
# what the user sees
ORDER = ["core", "data", "engine", "analysis", "study", "console"]
FOLDERS = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
PATHS = {p.stem: p for p in PACKAGE.glob("*/*.py") if p.stem != "__init__"}
MODULES = sorted(PATHS)
LEVEL = {m: ORDER.index(p.parent.name) for m, p in PATHS.items() if p.parent.name in ORDER}


def imports(path: Path) -> set[str]:
    """The sweep modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sweep"):
            parts = node.module.split(".")
            if len(parts) == 2:  # from sweep.core import errors
                found |= {a.name for a in node.names}
            elif len(parts) > 2:  # from sweep.core.errors import SweepError
                found.add(parts[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("sweep.")
                      and a.name.count(".") >= 2}
    return found - {path.stem}


GRAPH = {m: imports(PATHS[m]) for m in MODULES}


def test_the_package_is_its_layers():
    assert sorted(ORDER) == FOLDERS
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]  # nothing outside a layer
    assert len(MODULES) == len(list(PACKAGE.glob("*/*.py"))) - len(FOLDERS)  # no name in two layers


@pytest.mark.parametrize("layer", ORDER)
def test_each_layer_says_what_it_owns(layer):
    doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
    assert doc and len(doc.splitlines()) == 1


def test_every_module_has_a_layer():
    assert sorted(set(MODULES) - set(LEVEL)) == [] and MODULES


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
    return PATHS[module].read_text()


def test_only_the_command_line_is_on_top():
    assert [m for m in MODULES if re.search(r"^\s*(from|import) cli\b", source(m), re.M)] == []


def test_optuna_is_called_from_the_study_wing_only():
    callers = {m for m in MODULES if re.search(r"^\s*(import optuna|from optuna)", source(m), re.M)}
    assert callers <= {"stored", "search", "storage", "importance", "dashboard"}
    text = "\n".join(p.read_text() for p in [ROOT / "cli.py", *sorted(PACKAGE.rglob("*.py"))])
    assert re.findall(r"\._storage\b|_trial_id|_get_stale", text) == []  # Optuna's private API
