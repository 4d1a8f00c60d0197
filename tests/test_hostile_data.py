"""Careless task files and limits, through the command line and the checks: a file whose labels,
splits or texts would be reshaped in silence, and a max length or rank the tokenizer or the model
would ignore, is one line on stderr with exit code 2 before any trial, and a refused run creates no
study; where the data is usable, a one-line warning says what a trial will miss."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from cli import app
from sweep.core.errors import SweepError
from sweep.data.config import TrialConfig
from sweep.data.lm_tasks import task_kind
from sweep.data.tasks import load_task
from sweep.engine.checks import check_classes, check_trial

runner = CliRunner()
DB = Path("results/loraplus.db")


def rows(pairs: list[tuple[str, str]], split: list[str] | None = None) -> str:
    """A CSV of (text, label) rows, with a split column where `split` is given."""
    head = "text,label" + (",split" if split else "")
    lines = [f"{t},{lab}" + (f",{split[i]}" if split else "") for i, (t, lab) in enumerate(pairs)]
    return "\n".join([head, *lines]) + "\n"


def films(n: int, label: str, word: str) -> list[tuple[str, str]]:
    return [(f"a {word} film number {i}", label) for i in range(n)]


BALANCED = films(20, "pos", "good") + films(20, "neg", "bad")
FILES = {
    "case.csv": rows(films(20, "pos", "good") + films(3, "Pos", "fine") + films(20, "neg", "bad")),
    "space.csv": rows(films(20, "pos", "good") + films(3, " pos", "fine") + films(20, "neg", "bad")),
    "misspelt.csv": rows(BALANCED, ["train", "trian"] * 15 + ["validation"] * 10),
    "blank-split.csv": rows(BALANCED, ["train"] * 29 + [""] + ["validation"] * 10),
    "empty.csv": rows([("", "pos" if i % 2 else "neg") for i in range(40)]),
    "validation-only.csv": rows(BALANCED + films(2, "meh", "odd"), ["train"] * 30 + ["validation"] * 12),
    # 72 pos and 5 neg to train on: a sample of 5 keeps pos alone
    "rare.csv": rows(films(90, "pos", "good") + films(6, "neg", "bad")),
    "pair.csv": "sentence1,sentence2,label\n" + "".join(f"a{i},b{i},{i % 2}\n" for i in range(40)),
}


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """A working directory holding the task files, where results/loraplus.db is the default storage."""
    for name, content in FILES.items():
        (tmp_path / name).write_text(content)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORAPLUS_SWEEP_DEBUG", raising=False)
    return tmp_path


def studies() -> list[str]:
    if not DB.exists():
        return []
    return [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{DB}")]


def refused(args: list[str], message: str) -> None:
    """The command exits 2 with `message` in one stderr line, no traceback, and no study."""
    r = runner.invoke(app, args)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in r.output
    assert studies() == []


CASES = [
    ("case.csv", [], "labels 'Pos', 'pos' of case.csv differ only in case or surrounding space"),
    ("space.csv", [], "labels ' pos', 'pos' of space.csv differ only in case or surrounding space"),
    ("misspelt.csv", [], "`split` column of misspelt.csv holds 'trian' (15 rows), which name no split; "
                         "use train, validation (or dev, val) or test"),
    ("blank-split.csv", [], "holds no value (1 row), which name no split"),
    ("empty.csv", [], "every training text of empty.csv is empty (column 'text')"),
    ("validation-only.csv", [], "class 'meh' of 'validation-only.csv' has 2 validation or test example(s) "
                                "but none in the training set"),
    ("rare.csv", ["--train-limit", "5"], "the train_limit sample (5 of 77 training rows) of 'rare.csv' "
                                         "holds one class (pos); a classifier needs at least two; raise "
                                         "train_limit"),
    ("case.csv", ["--max-length", "2"], "labels 'Pos', 'pos'"),  # the data is checked first
    ("rare.csv", ["--max-length", "2"], "max_length 2 leaves no room for text: the tokenizer of"),
    ("pair.csv", ["--max-length", "3"], "adds 3 special tokens to each example (a text pair); "
                                        "use --max-length 4"),
    ("rare.csv", ["--rank", "33"], "rank 33 is more than 32, the narrower side of the adapted layer "
                                   "'bert.encoder.layer.0.attention.self.query'"),
]


@pytest.mark.parametrize("command", ["trial", "run"])
@pytest.mark.parametrize(("task", "extra", "message"), CASES, ids=[f"{c[0]}{''.join(c[1])}" for c in CASES])
def test_a_careless_task_or_limit_is_refused_before_any_trial(here, tiny_model, command, task, extra,
                                                              message):
    run = ["--in-process", "--n-trials", "1"] if command == "run" else []
    refused([command, "--model", tiny_model, "--task", task, "--max-length", "32", *run, *extra], message)


def test_a_rank_beyond_a_layer_is_refused_when_the_search_space_holds_it(here, tiny_model):
    refused(["run", "--model", tiny_model, "--task", "rare.csv", "--in-process", "--rank", "4,64"],
            "rank 64 is more than 32")


def test_the_widest_rank_and_the_shortest_length_a_model_allows_pass_the_checks(here, tiny_model):
    cfg = TrialConfig(model=tiny_model, task="pair.csv", rank=32, max_length=4, device="cpu")
    assert check_trial(cfg).kind == "classification"
    with pytest.raises(SweepError, match="rank 33 is more than 32"):
        check_trial(cfg, ranks=(4, 33))


def test_at_the_shortest_length_allowed_a_long_row_is_cut_to_it(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    long = "word " * 20_000  # a row far beyond any model's positions
    assert len(tokenizer(long, truncation=True, max_length=3)["input_ids"]) == 3
    assert len(tokenizer(long, "and a pair", truncation=True, max_length=4)["input_ids"]) == 4


def test_a_causal_lm_rank_is_checked_against_its_narrowest_linear_layer(tmp_path, llama):
    # The tiny Llama's key and value projections are 32 -> 16 (one key-value head of 16): "all-linear"
    # adapts them too.
    task = tmp_path / "lm.jsonl"
    task.write_text("".join(json.dumps({"text": f"some words {i}"}) + "\n" for i in range(20)))
    cfg = TrialConfig(model=llama, task=str(task), rank=16, max_length=32, device="cpu")
    assert check_trial(cfg).kind == "causal-lm"
    with pytest.raises(SweepError, match=r"rank 17 is more than 16, .*'model.layers.0.self_attn.k_proj'"):
        check_trial(cfg.replace(rank=17))
    with pytest.raises(SweepError, match="max_length 1 leaves a causal LM nothing to predict"):
        check_trial(cfg.replace(max_length=1))


def test_a_labelled_jsonl_whose_first_rows_lack_the_label_is_a_classification_task(tmp_path):
    path = tmp_path / "labelled.jsonl"
    lines = [{"text": "no label yet"}, {"text": "still none"}]
    lines += [{"text": f"film {i}", "label": ["neg", "pos"][i % 2]} for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert task_kind(str(path)) == "classification"
    task = load_task(str(path))
    assert task.label_names == ("neg", "pos") and len(task.train) + len(task.validation) == 20
    # A text file that merely mentions a label in its text is causal-LM text all the same.
    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"text": f'a "label" in words {i}'}) + "\n" for i in range(5)))
    assert task_kind(str(text)) == "causal-lm"


def test_a_class_with_one_example_is_trained_on_not_validated(tmp_path):
    path = tmp_path / "single.csv"
    path.write_text(rows(BALANCED + [("a middling film", "meh")]))
    task = load_task(str(path))
    meh = task.label_names.index("meh")
    assert meh in task.train.label and meh not in task.validation.label
    assert len(task.validation) == 8  # the other classes' 20 % as before
    (tmp_path / "singles.csv").write_text(rows([("a", "x"), ("b", "y"), ("c", "z")]))
    with pytest.raises(SweepError, match="too few examples to make a validation split"):
        load_task(str(tmp_path / "singles.csv"))


def test_a_class_the_validation_split_lacks_is_a_warning_and_the_trial_runs(here, tiny_model):
    (here / "single.csv").write_text(rows(BALANCED + [("a middling film", "meh")]))
    r = runner.invoke(app, ["trial", "--model", tiny_model, "--task", "single.csv", "--max-length", "32",
                            "--max-steps", "1"])
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: the validation split of 'single.csv' holds no example of class 'meh' "
                        "(1 in the training set): no metric sees how it is predicted"], r.stderr
    assert "Traceback" not in r.output


def test_a_train_limit_sample_that_loses_a_class_is_a_warning(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(rows(films(90, "pos", "good") + films(10, "neg", "bad") + films(10, "meh", "odd")))
    task = load_task(str(path))  # 72 pos, 8 neg and 8 meh to train on
    assert check_classes(task, "t.csv") == []
    # A stratified sample of 5: 4 pos and one of the others.
    warnings = check_classes(task, "t.csv", train_limit=5)
    assert len(warnings) == 1
    assert warnings[0].startswith("the train_limit sample (5 of 88 training rows) of 't.csv' holds no "
                                  "example of ")
    assert warnings[0].endswith("(8 in the training set): trials never learn it; raise train_limit")


def test_a_split_column_ignores_case_and_surrounding_space(tmp_path):
    path = tmp_path / "splits.csv"
    path.write_text(rows(BALANCED, ["Train", " train "] * 15 + ["DEV", "val"] * 3 + ["test"] * 4))
    task = load_task(str(path))
    assert (len(task.train), len(task.validation), len(task.test)) == (30, 6, 4)

