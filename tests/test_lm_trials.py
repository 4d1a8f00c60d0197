"""Causal-LM trials end to end: the kind found from the data, training on completions, the loss as a
minimised objective through a study, its report and its export, gradient accumulation and
checkpointing, lambda = 1 as plain LoRA, on tiny random Llama, Qwen2 and GPT-2 decoders."""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import optuna
import pytest
import torch
import transformers
from decoders import save_decoder

from sweep.analysis import report
from sweep.analysis.export import best_trial
from sweep.core.errors import SweepError
from sweep.core.hardware import native_cpu_bf16
from sweep.data.config import TrialConfig
from sweep.data.lm_batches import IGNORE, collate_lm, encode_lm, pack_lm
from sweep.data.lm_tasks import load_lm_task, task_kind
from sweep.data.spec import load_spec
from sweep.engine.checks import check_trial
from sweep.engine.kinds import prepare
from sweep.engine.optim import build_optimizer
from sweep.engine.train import run_trial
from sweep.study.stored import StoredStudy
from sweep.study.workers import run_study

CPU = torch.device("cpu")
WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "pearl", "amber", "lemon"]


def _rows(n: int) -> list[dict]:
    """A completion the prompt decides (the word's first letter, three times): learnable in a few steps."""
    return [{"prompt": f"{WORDS[i % len(WORDS)]}{i % 7}:", "completion": WORDS[i % len(WORDS)][0] * 3}
            for i in range(n)]


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("lm") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(60)))
    return str(path)


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def decoder(request, tmp_path_factory) -> str:
    return save_decoder(request.param, tmp_path_factory.mktemp(request.param))


def _cfg(model: str, task: str, **changes) -> TrialConfig:
    settings = dict(model=model, task=task, rank=4, eta_a=3e-3, lam=8.0, batch_size=8, max_steps=30,
                    eval_every=10, max_length=32, device="cpu", warmup_ratio=0.0, precision="fp32")
    return TrialConfig(**{**settings, **changes})


def test_the_kind_comes_from_the_rows(tmp_path, rows_file):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "yo"}]}) + "\n")
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"text": "plain words", "split": "train"}) + "\n")
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(json.dumps({"text": "good film", "label": 1}) + "\n")
    assert [task_kind(str(p)) for p in (chat, text, labelled)] == ["causal-lm", "causal-lm", "classification"]
    assert task_kind(rows_file) == "causal-lm" and task_kind("bbc-headlines") == "causal-lm"
    assert task_kind("rotten-tomatoes") == "classification" and task_kind("sst2") == "classification"
    assert task_kind(str(text), label_column="text") == "classification"
    assert task_kind("rotten-tomatoes", kind="causal-lm") == "causal-lm"  # stated in the config: taken


def test_a_causal_lm_trial_learns_its_completions_and_reports_the_loss(decoder, rows_file):
    cfg = _cfg(decoder, rows_file)
    untrained = prepare(cfg, CPU).evaluate(contextlib.nullcontext)
    result = run_trial(cfg)
    assert (result.kind, result.metric_name, result.precision) == ("causal-lm", "loss", "fp32")
    assert set(result.metrics) == {"loss", "perplexity"}
    assert result.metrics["perplexity"] == pytest.approx(math.exp(result.metric))
    # A random model starts near log(vocabulary) = 5.55 nats per token; LoRA alone moves it slowly.
    assert result.metric < untrained["loss"] - 0.1, (result.metric, untrained)
    assert result.best_metric == min(p.metric for p in result.history)  # lower is better
    assert result.steps == 30 and result.tokens > result.examples > 0
    # The loss per token has a standard error from its rows: small against the loss, not zero.
    assert 0 < result.metric_se < 0.5 * result.metric


def test_a_trial_with_choices_can_be_judged_by_accuracy(llama, tmp_path):
    path = tmp_path / "choices.jsonl"
    rows = [{"prompt": f"{w}{i}:", "choices": ["aaa", "ppp", "ttt"], "answer": "aaa" if w[0] in "ao" else
             "ppp" if w[0] == "p" else "ttt"} for i, w in enumerate(WORDS * 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_trial(_cfg(llama, str(path), metric="accuracy"))
    assert result.metric_name == "accuracy" and set(result.metrics) == {"loss", "perplexity", "accuracy"}
    assert 0.0 <= result.metric <= 1.0
    assert math.isfinite(result.metric_se) and 0 <= result.metric_se <= 0.5  # judged by accuracy: its SE
    with pytest.raises(SweepError, match="metric 'f1' is not one of causal-LM task choices's: "
                                         "loss, perplexity, accuracy"):
        check_trial(_cfg(llama, str(path), metric="f1"))


def test_micro_batches_add_up_to_the_same_step(llama, rows_file, tiny_cfg, tmp_path):
    whole = run_trial(_cfg(llama, rows_file, max_steps=6, eval_every=6))
    pieces = run_trial(_cfg(llama, rows_file, max_steps=6, eval_every=6, micro_batch_size=3))
    assert pieces.metric == pytest.approx(whole.metric, rel=1e-4)
    assert pieces.history[-1].train_loss == pytest.approx(whole.history[-1].train_loss, rel=1e-5)
    assert pieces.update_norms == pytest.approx(whole.update_norms, rel=1e-4)
    # A classifier too, without dropout (whose masks depend on how a batch is cut).
    config = transformers.AutoConfig.from_pretrained(tiny_cfg.model, hidden_dropout_prob=0.0,
                                                     attention_probs_dropout_prob=0.0)
    transformers.AutoModel.from_pretrained(tiny_cfg.model, config=config).save_pretrained(tmp_path)
    transformers.AutoTokenizer.from_pretrained(tiny_cfg.model).save_pretrained(tmp_path)
    steady = tiny_cfg.replace(model=str(tmp_path), max_steps=4, eval_every=4, batch_size=8)
    cls_whole = run_trial(steady)
    cls_pieces = run_trial(steady.replace(micro_batch_size=3))
    assert cls_pieces.metrics == pytest.approx(cls_whole.metrics, rel=1e-4)
    assert cls_pieces.update_norms == pytest.approx(cls_whole.update_norms, rel=1e-3)


def test_gradient_checkpointing_trains_the_same_model(llama, rows_file):
    plain = run_trial(_cfg(llama, rows_file, max_steps=6, eval_every=6))
    checkpointed = run_trial(_cfg(llama, rows_file, max_steps=6, eval_every=6, gradient_checkpointing=True))
    assert checkpointed.metric == pytest.approx(plain.metric, rel=1e-4)
    assert checkpointed.update_norms == pytest.approx(plain.update_norms, rel=1e-3)


def test_lambda_one_is_plain_lora_on_a_decoder(llama, rows_file):
    cfg = _cfg(llama, rows_file, lam=1.0)
    ours, plain = prepare(cfg, CPU), prepare(cfg, CPU)
    opt = build_optimizer(ours.model, cfg, CPU)
    params = [p for p in plain.model.parameters() if p.requires_grad]
    plain_opt = torch.optim.AdamW(params, lr=cfg.eta_a, betas=cfg.betas, weight_decay=0.0)
    for step in range(3):
        idx = torch.arange(8).numpy() + 8 * step
        for work, optimizer in ((ours, opt), (plain, plain_opt)):
            batch = work.collate(idx)
            (work.loss_sum(batch) / work.count(batch)).backward()
            optimizer.step()
            optimizer.zero_grad()
    for (name, a), b in zip(ours.model.named_parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_a_study_of_a_causal_lm_minimises_the_loss_and_reports_and_exports_the_lowest(llama, rows_file,
                                                                                      tmp_path):
    spec = load_spec(None, {
        "model": llama, "task": rows_file, "n_trials": 3, "sampler": "random", "pruner": "none",
        "eta_a": (1e-4, 1e-2), "lambda": (1.0, 32.0), "rank": (4,), "max_steps": 8, "eval_every": 4,
        "batch_size": 8, "max_length": 32, "device": "cpu", "in_process": True, "name": "lm",
        "storage": f"sqlite:///{tmp_path}/lm.db",
    })
    store = run_study(spec)
    study = optuna.load_study(study_name="lm", storage=spec.storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    frame = store.frame()
    done = frame[frame["state"] == "COMPLETE"]
    assert len(done) == 3 and set(done["metric_name"]) == {"loss"}
    lowest = done.loc[done["value"].idxmin()]
    assert study.best_trial.number == int(lowest["number"])
    best = report.best_configs(frame).iloc[0]
    assert int(best["number"]) == int(lowest["number"])
    assert best_trial(frame, "lm").trial == int(lowest["number"])
    gain = report.plain_lora_gain(frame).iloc[0]
    assert gain["gain"] == pytest.approx(gain["best_plain"] - gain["best"]) and gain["gain"] >= 0
    curve = report.lambda_curve(frame)
    assert curve["normalised"].max() == pytest.approx(1.0) and (curve["normalised"] <= 1.0 + 1e-12).all()
    # A trial states what it was.
    trial = study.trials[0]
    here = "bf16" if native_cpu_bf16() else "fp32"  # what the study's precision, auto, means on this CPU
    assert trial.user_attrs["task_kind"] == "causal-lm" and trial.user_attrs["precision"] == here
    assert StoredStudy.load(spec.storage, "lm").attrs["metric_name"] == "loss"


def test_a_users_chat_file_runs_from_the_command_line(llama, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    path = tmp_path / "my-chats.jsonl"
    path.write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": "Answer with one word."},
        {"role": "user", "content": f"Colour of the {w}?"},
        {"role": "assistant", "content": w[::-1]}]}) + "\n" for w in WORDS * 2))
    out = CliRunner().invoke(app, ["trial", "--model", llama, "--task", str(path), "--max-steps", "4",
                                   "--batch-size", "4", "--max-length", "64", "--device", "cpu", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert (result["kind"], result["metric_name"], result["steps"]) == ("causal-lm", "loss", 4)
    assert math.isfinite(result["metric"]) and result["config"]["kind"] == "auto"
    bad = CliRunner().invoke(app, ["trial", "--model", llama, "--task", str(path), "--metric", "accuracy"])
    assert bad.exit_code == 2 and "metric 'accuracy' is not one of causal-LM task my-chats's: loss, " \
                                  "perplexity" in bad.output


def test_packed_examples_attend_to_themselves_only(decoder, rows_file):
    """The same examples packed into rows and padded one per row: the same loss to float rounding
    (attention across two packed examples would change it), in fewer, fuller rows."""
    work = prepare(_cfg(decoder, rows_file, max_length=32), CPU)
    work.model.eval()
    enc = encode_lm(load_lm_task(rows_file).train[:12], work.tokenizer, 32)
    idx = np.arange(12)
    padded, packed = collate_lm(enc, idx, 0), pack_lm(enc, idx, 0, 32)
    assert len(packed["input_ids"]) < len(padded["input_ids"]) and packed["input_ids"].shape[1] <= 32
    assert int((packed["labels"] != IGNORE).sum()) == int((padded["labels"] != IGNORE).sum())
    with torch.no_grad():
        assert float(work.loss_sum(packed)) == pytest.approx(float(work.loss_sum(padded)), rel=1e-5)
    ids = packed["input_ids"]
    shifted = {**packed, "position_ids": torch.arange(ids.shape[1]).expand_as(ids)}
    with torch.no_grad():  # one sequence per row instead: examples read their neighbours, the loss moves
        assert float(work.loss_sum(shifted)) != pytest.approx(float(work.loss_sum(padded)), rel=1e-5)


def test_a_packed_trial_trains_like_a_padded_one(llama, rows_file):
    padded = run_trial(_cfg(llama, rows_file, max_steps=6, eval_every=6))
    packed = run_trial(_cfg(llama, rows_file, max_steps=6, eval_every=6, packing=True))
    assert packed.metric == pytest.approx(padded.metric, rel=1e-4) and packed.tokens == padded.tokens


def test_packing_a_classification_task_is_refused_before_any_trial(tiny_cfg):
    with pytest.raises(SweepError, match="packing is for causal-LM tasks"):
        check_trial(tiny_cfg.replace(packing=True))
