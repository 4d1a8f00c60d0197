"""confirm --matched: plain LoRA also trained at the best LoRA+ arm's eta_B on the same seeds, a second
contrast that differs in lambda alone; confirm --arm: a LoRA+ point of the user's own as an arm; and
confirm runs score the whole split unless --eval-limit."""

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli import app
from sweep.console import ui
from sweep.data.spec import load_spec
from sweep.study import confirm
from sweep.study.workers import run_study

GRID = '[study]\nsampler = "grid"\n[grid]\neta_a = [2e-3]\nlambda = [1, 8]\nrank = [2]\n'


@pytest.fixture
def searched(tiny_model, toy_csv, tmp_path):
    """Two grid trials (plain LoRA and lambda 8) sampling 16 validation examples, as a cheap search may."""
    (tmp_path / "grid.toml").write_text(GRID)
    spec = load_spec(tmp_path / "grid.toml", {
        "model": tiny_model, "task": toy_csv, "pruner": "none", "epochs": 1.0, "batch_size": 32,
        "max_length": 32, "train_limit": 64, "eval_limit": 16, "eval_every": 2, "device": "cpu",
        "storage": f"sqlite:///{tmp_path}/sweep.db", "in_process": True, "name": "toy",
    })
    return spec, run_study(spec)


def test_matched_trains_plain_lora_at_the_lora_plus_arms_eta_b_on_the_same_seeds(searched, monkeypatch):
    spec, study = searched
    plan = confirm.plan(study.frame(), spec, seeds=2, split="validation", matched=True)
    plus = plan.challengers[0]
    assert plan.matched is not None and plan.matched.name == confirm.MATCHED
    result = confirm.run_confirm(study, spec, plan)
    runs = {(t.user_attrs["arm"], t.user_attrs["seed"]): t for t in result.trials()}
    assert sorted(runs) == sorted((a, s) for a in ("lora", plus.name, confirm.MATCHED) for s in plan.seeds)
    for seed in plan.seeds:
        matched = runs[confirm.MATCHED, seed].user_attrs["config"]
        lora_plus = runs[plus.name, seed].user_attrs["config"]
        # plain LoRA, both matrices at LoRA+'s eta_B; the same rank, head lr and seed
        assert matched["lambda"] == 1.0
        assert matched["eta_a"] == pytest.approx(lora_plus["eta_a"] * lora_plus["lambda"])
        assert lora_plus["lambda"] == 8.0 and matched["eta_a"] == pytest.approx(8 * 2e-3)
        for key in ("rank", "head_lr", "seed", "eval_split"):
            assert matched[key] == lora_plus[key]
        # confirm scores the whole split, not the search's sample of it
        assert matched["eval_limit"] is None and lora_plus["eval_limit"] is None
    assert {t.user_attrs["config"]["eval_limit"] for t in study.trials()} == {16}

    rows = confirm.table(confirm.summaries(result))
    assert rows["contrast"].tolist() == [confirm.TUNED_CONTRAST, confirm.MATCHED_CONTRAST]
    assert (rows["arm"] == plus.name).all() and (rows["seeds"] == 2).all()
    tuned, at_b = rows.iloc[0], rows.iloc[1]
    assert tuned["lora eta_a"] == plan.plain.eta_a and at_b["lora eta_a"] == pytest.approx(plus.eta_a * 8)
    assert tuned["lora+ mean"] == at_b["lora+ mean"]  # one LoRA+ arm, two plain sides
    # each contrast with its own paired interval over the seeds
    assert all(r["ci95 low"] <= r["gain"] <= r["ci95 high"] for r in rows.to_dict("records"))
    assert confirm.summarise(result).contrast == confirm.TUNED_CONTRAST
    assert len({c.label for c in confirm.summaries(result)}) == 2  # the plots' files apart
    # the terminal's table says which plain side each row pairs with
    console = Console(width=400, record=True)
    monkeypatch.setattr(ui, "_stdout", lambda: console)
    ui.print_confirm(rows)
    shown = console.export_text()
    assert f"vs {confirm.TUNED_CONTRAST}" in shown and f"vs {confirm.MATCHED_CONTRAST}" in shown

    # a confirm without --matched continues the same study and still shows the stored contrast
    again = confirm.run_confirm(study, spec, confirm.plan(study.frame(), spec, seeds=2, split="validation"))
    assert len(again.trials()) == 6 and len(confirm.summaries(again)) == 2


def test_a_sample_is_asked_for_and_kept(searched):
    spec, study = searched
    plan = confirm.plan(study.frame(), spec, seeds=2, split="validation", eval_limit=24)
    assert confirm.runs_spec(spec, plan.arms, 4, plan.eval_limit).base.eval_limit == 24
    confirm.open_confirm_study(study, spec, plan)
    whole = confirm.plan(study.frame(), spec, seeds=2, split="validation")
    with pytest.raises(confirm.SweepError, match="a sample of 24 examples .* studies delete"):
        confirm.open_confirm_study(study, spec, whole)
    with pytest.raises(confirm.SweepError, match="--eval-limit must be an integer >= 1"):
        confirm.plan(study.frame(), spec, seeds=2, eval_limit=0)


def test_arm_confirms_a_point_of_the_users_own_at_the_plain_arms_rank_and_is_kept(searched, monkeypatch):
    spec, study = searched
    plan = confirm.plan(study.frame(), spec, seeds=2, split="validation", named=("5e-4:16",))
    named = plan.challengers[-1]
    assert (named.name, named.eta_a, named.lam) == ("lora+ 0.0005:16", 5e-4, 16.0)
    assert named.rank == plan.plain.rank
    assert named.source == confirm.NAMED and plan.best != named.name
    result = confirm.run_confirm(study, spec, plan)
    configs = [t.user_attrs["config"] for t in result.trials() if t.user_attrs["arm"] == named.name]
    assert sorted(c["seed"] for c in configs) == list(plan.seeds)
    assert {(c["eta_a"], c["lambda"], c["rank"]) for c in configs} == {(5e-4, 16.0, plan.plain.rank)}

    rows = confirm.table(confirm.summaries(result))
    assert rows["arm"].tolist() == [plan.best, named.name]  # in lambda order, each against plain LoRA
    assert rows["lora+ source"].tolist() == [plan.challengers[0].source, confirm.NAMED]
    assert rows["best"].tolist() == [True, False] and (rows["seeds"] == 2).all()
    assert len({c.label for c in confirm.summaries(result)}) == 2  # the plots' files apart
    console = Console(width=400, record=True)
    monkeypatch.setattr(ui, "_stdout", lambda: console)
    ui.print_confirm(rows)
    assert "your point (--arm)" in console.export_text()

    # a confirm without --arm continues the same study: the stored point is kept, not refused
    again = confirm.run_confirm(study, spec, confirm.plan(study.frame(), spec, seeds=2, split="validation"))
    assert len(again.trials()) == 6 and [c.arm for c in confirm.summaries(again)] == rows["arm"].tolist()


@pytest.mark.parametrize("text", ["5e-4", "5e-4:1", "5e-4:1.2", "0:16", "2:16", "nan:16", "5e-4:inf",
                                  "5e-4:16:4", "x:y", ""])
def test_arm_refuses_what_is_not_a_lora_plus_point(searched, text):
    spec, study = searched
    with pytest.raises(confirm.SweepError, match="--arm must be ETA_A:LAMBDA"):
        confirm.plan(study.frame(), spec, seeds=2, named=(text,))
    with pytest.raises(confirm.SweepError, match="two points read '0.0005:16'"):
        confirm.plan(study.frame(), spec, seeds=2, named=("5e-4:16", "5.0001e-4:16"))
    # the same point twice is one arm
    assert len(confirm.plan(study.frame(), spec, seeds=2, named=("5e-4:16", "5e-4:16")).challengers) == 2


def test_arm_is_a_usage_error_of_one_line_before_any_training(searched):
    spec, study = searched
    res = CliRunner().invoke(app, ["confirm", "toy", "--split", "validation", "--arm", "5e-4:1",
                                   "--storage", spec.storage])
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0
    assert "--arm must be ETA_A:LAMBDA" in res.stderr
    assert len(study.trials()) == 2
    assert confirm.StoredStudy.find(spec.storage, "toy.confirm-validation") is None
