"""StudySpec: TOML + flags, validated before any training, with the file and key named."""

import pytest

from sweep.errors import SweepError
from sweep.spec import find_study_file, load_spec, parse_range, parse_ranks


def toml(tmp_path, text: str):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_file_values_and_flag_overrides(tmp_path):
    path = toml(tmp_path, """
[study]
model = "m"
task = "sst2"
n_trials = 7
[search]
eta_a = [1e-5, 1e-3]
lambda = [1, 32]
rank = [4, 8]
[trial]
epochs = 2
batch_size = 16
""")
    spec = load_spec(path, {"n_trials": 9, "rank": (16,), "epochs": None, "max_steps": 50})
    assert spec.n_trials == 9 and spec.ranks == (16,) and spec.eta_a == (1e-5, 1e-3)
    assert spec.lam == (1.0, 32.0) and spec.base.epochs == 2 and spec.base.max_steps == 50
    assert spec.base.batch_size == 16 and spec.base.model == "m"
    assert spec.study_name.startswith("m-sst2-")


def test_study_name_depends_on_the_definition_not_the_budget(tmp_path):
    a = load_spec(None, {"model": "m", "task": "t.csv", "n_trials": 3})
    b = load_spec(None, {"model": "m", "task": "t.csv", "n_trials": 30, "sampler": "random"})
    c = load_spec(None, {"model": "m", "task": "t.csv", "epochs": 2.0})
    assert a.study_name == b.study_name != c.study_name
    assert load_spec(None, {"name": "mine"}).study_name == "mine"


def test_baseline_is_plain_lora_in_the_middle_of_the_range():
    spec = load_spec(None, {"eta_a": (1e-5, 1e-3), "rank": (4, 8, 16)})
    assert spec.baseline_params() == {"eta_a": 1e-4, "lambda": 1.0, "rank": 8}


def test_paper_style_grid_is_every_eta_b_eta_a_pair(tmp_path):
    path = toml(tmp_path, """
[study]
sampler = "grid"
[grid]
eta_a = [1e-5, 1e-4]
eta_b = [1e-4, 4e-4, 1e-3]
rank = [8]
""")
    spec = load_spec(path)
    assert spec.n_trials == 6 and len(spec.grid) == 6
    points = {(e, round(lam, 9), r) for e, lam, r in spec.grid}
    assert (1e-4, 4.0, 8) in points and (1e-5, 100.0, 8) in points and (1e-4, 1.0, 8) in points
    assert spec.eta_a == (1e-5, 1e-4)
    assert spec.lam == (pytest.approx(1.0), pytest.approx(100.0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[study]\nn_trial = 3\n", r"study.toml: unknown key study.n_trial \(use name, model"),
        ("[serch]\neta_a = 1e-4\n", r"study.toml: unknown table \[serch\]"),
        ("[trial]\nlearning_rate = 3\n", "study.toml: unknown key trial.learning_rate"),
        ("[trial]\neta_a = 3e-4\n", r"unknown key trial.eta_a \(set it in \[study\] or \[search\]\)"),
        ("[search]\nlambda = [2, 64]\n", r"lambda range \[2, 64\] must include 1"),
        ("[search]\neta_a = [1e-3, 1e-5]\n", "eta_a range is empty: low 0.001 > high 1e-05"),
        ("[search]\neta_a = [0, 1e-3]\n", "eta_a range must be positive"),
        ("[search]\nrank = [0, 8]\n", "ranks must be integers >= 1"),
        ("[search]\nrank = []\n", "rank must be an integer or a list of integers"),
        ("[study]\nsampler = \"bayes\"\n", "sampler must be one of tpe, random, grid, qmc"),
        ("[study]\nname = \"../etc/x\"\n", "may hold only letters, digits"),
        ("[trial]\nbatch_size = 0\n", "study.toml: batch_size must be an integer >= 1"),
        ("[study\n", "study.toml is not valid TOML"),
    ],
)
def test_bad_definitions_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(SweepError, match=message):
        load_spec(toml(tmp_path, text))


def test_cli_forms():
    assert parse_range("1e-5:1e-3", "eta_a") == (1e-5, 1e-3)
    assert parse_range("16", "lambda") == (16.0, 16.0)
    assert parse_ranks("4,8,16") == (4, 8, 16)
    with pytest.raises(SweepError, match="--eta-a must be LOW:HIGH or a number"):
        parse_range("a:b", "eta_a")


def test_presets_are_found_by_name_and_all_of_them_load():
    path = find_study_file("default")
    assert path.name == "default.toml"
    for preset in path.parent.glob("*.toml"):
        load_spec(preset)
    with pytest.raises(SweepError, match="no study file 'nope'"):
        find_study_file("nope")


def test_several_plain_lora_baselines_spread_over_the_eta_range():
    spec = load_spec(None, {"eta_a": (1e-4, 1e-2), "rank": (4, 8, 16), "baselines": 3, "n_trials": 10})
    assert spec.baselines_params() == [
        {"eta_a": 2.15e-4, "lambda": 1.0, "rank": 8},  # 10^(-4 + 2/6), 10^-3, 10^(-2 - 2/6)
        {"eta_a": 1e-3, "lambda": 1.0, "rank": 8},
        {"eta_a": 4.64e-3, "lambda": 1.0, "rank": 8},
    ]
    with pytest.raises(SweepError, match="baselines must be an integer from 1 to n_trials"):
        load_spec(None, {"baselines": 0})


@pytest.mark.slow
def test_an_installed_copy_finds_the_presets(tmp_path):
    """`pip install .` outside the repository: the wheel holds every preset and `default` loads."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(root)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("loraplus_sweep-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        shipped = {Path(n).name for n in z.namelist() if n.startswith("sweep/studies/")}
        z.extractall(tmp_path / "site")
    assert shipped == {p.name for p in (root / "studies").glob("*.toml")} and "default.toml" in shipped
    code = ("import sweep; from sweep.spec import find_study_file, load_spec; "
            "print(sweep.__file__, load_spec(find_study_file('default')).n_trials)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    where, n_trials = out.stdout.split()
    assert Path(where).is_relative_to(tmp_path / "site") and n_trials == "6"
