"""confirm --matched: plain LoRA also trained at the best LoRA+ arm's eta_B on the same seeds, a second
contrast that differs in lambda alone; and confirm runs score the whole split unless --eval-limit."""

import pytest
from rich.console import Console

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
