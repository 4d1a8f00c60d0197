"""export --format peft prints a script that runs as pasted: it loads the trial's model, puts its LoRA on
it and builds the trial's LoRA+ parameter groups and learning-rate schedule, and one step of its training
step runs."""

import json

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from sweep.analysis.export import BestTrial, render
from sweep.data.config import TrialConfig
from sweep.engine.models import load_causal_lm, load_model
from sweep.engine.optim import loraplus_param_groups
from sweep.engine.train import lr_factor

runner = CliRunner()


def _groups(optimizer_or_groups) -> dict[str, tuple]:
    """{group name: (lr, weight decay, the shapes of its parameters)}: what a LoRA+ optimizer sets."""
    groups = getattr(optimizer_or_groups, "param_groups", optimizer_or_groups)
    return {g["name"]: (pytest.approx(g.get("initial_lr", g["lr"])), g["weight_decay"],
                        sorted(tuple(p.shape) for p in g["params"])) for g in groups}


def _run(code: str) -> dict:
    scope: dict = {"__name__": "exported"}
    exec(compile(code, "exported.py", "exec"), scope)
    return scope


def _one_step(scope: dict, batch: dict, cfg: TrialConfig, total: int) -> None:
    """The code's train_step takes a step: the trained weights move and every group's learning rate
    follows the trial's schedule."""
    before = [p.detach().clone() for g in scope["optimizer"].param_groups for p in g["params"]]
    loss = scope["train_step"](batch)
    assert loss > 0
    after = [p for g in scope["optimizer"].param_groups for p in g["params"]]
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    factor = lr_factor(cfg, total)(1)
    assert [g["lr"] for g in scope["optimizer"].param_groups] == pytest.approx(
        [g["initial_lr"] * factor for g in scope["optimizer"].param_groups])


@pytest.fixture(scope="module")
def stored(tiny_model, toy_csv, tmp_path_factory):
    """A study of one trial with every optimizer setting away from its default, and its export."""
    folder = tmp_path_factory.mktemp("runnable")
    db = folder / "loraplus.db"
    r = runner.invoke(app, [str(a) for a in (
        "run", "--model", tiny_model, "--task", toy_csv, "--eta-a", "3e-3", "--lambda", "1:16", "--rank", "4",
        "--epochs", 2, "--max-length", 32, "--batch-size", 16, "--micro-batch-size", 8, "--device", "cpu",
        "--head-lr", "2e-3", "--weight-decay", "0.01", "--schedule", "cosine", "--warmup-ratio", "0.1",
        "--sampler", "random", "--storage", f"sqlite:///{db}", "--study-name", "toy", "--in-process",
        "--n-trials", 2)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", "toy", "--storage", f"sqlite:///{db}",
                            "--out", str(folder / "best.json"), "--format", "peft"])
    assert r.exit_code == 0, r.output
    stored = json.loads((folder / "best.json").read_text())
    return TrialConfig.from_dict(stored["config"]), r.stdout


def test_the_exported_peft_code_builds_the_trials_optimizer_and_schedule(stored):
    cfg, code = stored
    scope = _run(code)

    trial = load_model(cfg, 2, ("neg", "pos"))
    assert _groups(scope["optimizer"]) == _groups(loraplus_param_groups(trial, cfg))
    assert set(_groups(scope["optimizer"])) == {"lora_A", "lora_B", "head", "head_no_decay"}
    assert [g["betas"] for g in scope["optimizer"].param_groups] == [cfg.betas] * 4
    # the trial's 320 toy rows, 80 % of them training: 2 epochs of 16 batches of 16
    total = scope["total_steps"]
    assert total == 32 and scope["warmup_steps"] == 4
    assert [scope["lr_factor"](s) for s in range(total)] == pytest.approx(
        [lr_factor(cfg, total)(s) for s in range(total)])
    batch = scope["tokenizer"](["good film", "bad plot and actor", "the movie was great"], padding=True,
                               return_tensors="pt")
    batch["labels"] = torch.tensor([1, 0, 1])
    _one_step(scope, batch, cfg, total)

    # the study's best is its plain LoRA baseline (lambda 1): B's rate apart from A's, another head's
    other = cfg.replace(lam=8.0, head_lr=None)
    scope = _run(render(BestTrial("toy", 0, 0.5, "accuracy", other, "fp32", 32), "peft"))
    trial = load_model(other, 2, ("neg", "pos"))
    assert _groups(scope["optimizer"]) == _groups(loraplus_param_groups(trial, other))
    assert _groups(scope["optimizer"])["lora_B"][0] == pytest.approx(8 * 3e-3)


def test_the_exported_peft_code_of_a_causal_lm_trial_runs(llama, tmp_path):
    """A causal LM: LoRA on every linear layer, no head, the trial's step budget; a quantized trial's
    BitsAndBytesConfig is defined where the code loads its model."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "abc"}) + "\n" for i in range(20)))
    cfg = TrialConfig(model=llama, task=str(rows), rank=4, eta_a=1e-3, lam=4.0, max_steps=10, batch_size=4,
                      warmup_ratio=0.0, schedule="linear", device="cpu", max_grad_norm=None)
    scope = _run(render(BestTrial("s", 0, 1.0, "loss", cfg, "fp32", 10), "peft"))
    assert _groups(scope["optimizer"]) == _groups(loraplus_param_groups(load_causal_lm(cfg), cfg))
    assert scope["total_steps"] == 10
    ids = scope["tokenizer"](["q1 abc", "q2 abc"], padding=True, return_tensors="pt")
    ids["labels"] = ids["input_ids"].clone()
    _one_step(scope, dict(ids), cfg, 10)
    quantized = render(BestTrial("s", 0, 1.0, "loss", cfg.replace(quantize="4bit"), "fp32", 10), "peft")
    assert "quantization_config = BitsAndBytesConfig(" in quantized
    assert "quantization_config=quantization_config" in quantized.split("model = get_peft_model")[0]
