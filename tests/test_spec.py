"""StudySpec: TOML + flags, validated before any training, with the file and key named."""

import pytest

from sweep.core.errors import SweepError
from sweep.data.spec import find_study_file, load_spec, parse_range, parse_ranks


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


def test_a_bad_value_is_blamed_on_where_it_came_from(tmp_path):
    good = toml(tmp_path, '[study]\nmodel = "m"\ntask = "sst2"\n')
    with pytest.raises(SweepError, match=r"^the command line: eval_every must be an integer >= 0, got -5$"):
        load_spec(good, {"eval_every": -5})
    with pytest.raises(SweepError, match=r"^the command line: n_trials must be an integer >= 1, got 0$"):
        load_spec(good, {"n_trials": 0})
    # a flag that fixes the file's value: valid
    bad = tmp_path / "bad.toml"
    bad.write_text('[trial]\nbatch_size = 0\n')
    assert load_spec(bad, {"batch_size": 8}).base.batch_size == 8
    # the file is invalid whatever the flags: the file's own problem is the one named
    with pytest.raises(SweepError, match=rf"^{bad}: batch_size must be an integer >= 1, got 0$"):
        load_spec(bad, {"eval_every": -5})


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
    with pytest.raises(SweepError, match="baselines must be an integer from 1 to n_trials"):
        load_spec(None, {"baselines": 4, "n_trials": 3})
    with pytest.raises(SweepError) as bad_budget:  # the default baselines (1) is not to blame
        load_spec(None, {"n_trials": -3})
    assert str(bad_budget.value).endswith("n_trials must be an integer >= 1, got -3")


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
    code = ("import sweep; from sweep.data.spec import find_study_file, load_spec; "
            "print(sweep.__file__, load_spec(find_study_file('default')).n_trials)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    where, n_trials = out.stdout.split()
    assert Path(where).is_relative_to(tmp_path / "site") and n_trials == "6"


def _hash_as_first_stored(spec) -> str:
    """The definition hash as studies were named before head_lr, eval_split and the eta_B space."""
    import hashlib
    import json

    definition = {"base": spec.base.identity(), "eta_a": spec.eta_a, "lambda": spec.lam, "ranks": spec.ranks,
                  "grid": spec.grid, "data": spec.data_fingerprint}
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:8]


def test_a_new_study_fixes_its_head_lr_and_a_stored_one_keeps_its_name(tmp_path):
    from sweep.data.spec import StudySpec

    assert load_spec(None, {"model": "m", "task": "sst2"}).base.head_lr == 1e-3  # middle of 1e-4..1e-2
    assert load_spec(None, {"model": "m", "task": "sst2", "eta_a": (1e-5, 1e-3)}).base.head_lr == 1e-4
    assert load_spec(toml(tmp_path, "[trial]\nhead_lr = 5e-4\n")).base.head_lr == 5e-4  # explicit wins
    # A causal LM trains no head: its study is left as it was.
    assert load_spec(None, {"model": "m", "task": "bbc-headlines"}).base.head_lr is None
    # A study stored before (head_lr unset) loads as it was, its name unchanged: its trials go on
    # training the head at their eta_A, as its first ones did.
    older = load_spec(None, {"model": "m", "task": "sst2"})
    older = older.replace(base=older.base.replace(head_lr=None), data_fingerprint="abc")
    joined = StudySpec.from_dict(older.to_dict(), source="study x")
    assert joined.base.head_lr is None and "eval_split" not in joined.base.identity()
    assert joined.definition_hash() == older.definition_hash() == _hash_as_first_stored(older)
    fixed = joined.fixed_head()
    assert fixed.base.head_lr == 1e-3 and fixed.definition_hash() != joined.definition_hash()


def test_a_study_selects_on_validation_and_never_sets_the_test_split(tmp_path):
    with pytest.raises(SweepError, match="trial.eval_split cannot be set: a study selects on the validation"):
        load_spec(toml(tmp_path, '[trial]\neval_split = "test"\n'))
    spec = load_spec(None, {"model": "m", "task": "sst2"})
    with pytest.raises(SweepError, match="a study evaluates its trials on the validation split"):
        spec.replace(base=spec.base.replace(eval_split="test"))


def test_the_eta_b_space_is_part_of_the_definition(tmp_path):
    flat = load_spec(None, {"model": "m", "task": "sst2"})
    assert flat.space == "eta_a" and flat.definition_hash() == _hash_as_first_stored(flat)
    spec = load_spec(toml(tmp_path, '[search]\nspace = "eta_b"\neta_a = [1e-4, 1e-2]\nlambda = [1, 16]\n'))
    assert spec.eta_b_range == (1e-4, 0.16)  # the eta_A range times the lambda range
    assert spec.definition_hash() != spec.replace(space="eta_a").definition_hash()
    wider = load_spec(None, {"model": "m", "task": "sst2", "space": "eta_b", "eta_b": (1e-5, 1.0)})
    assert wider.eta_b_range == (1e-5, 1.0)
    assert wider.definition_hash() != flat.replace(space="eta_b").definition_hash()
    with pytest.raises(SweepError, match='search.eta_b is the range of space "eta_b"'):
        load_spec(None, {"model": "m", "task": "sst2", "eta_b": (1e-5, 1.0)})
    with pytest.raises(SweepError, match=r"eta_b range \[0.001, 1\] must hold the eta_a range \[0.0001, "):
        load_spec(None, {"model": "m", "task": "sst2", "space": "eta_b", "eta_b": (1e-3, 1.0)})
    with pytest.raises(SweepError, match="space must be one of eta_a, eta_b; got 'eta_c'"):
        load_spec(None, {"model": "m", "task": "sst2", "space": "eta_c"})
    with pytest.raises(SweepError, match='space "eta_b" draws eta_B; a grid lists its points'):
        load_spec(toml(tmp_path, '[search]\nspace = "eta_b"\n[grid]\neta_a = [1e-3]\nlambda = [1, 2]\n'))
