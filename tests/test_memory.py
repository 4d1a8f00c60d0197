"""Will a trial fit (sweep.engine.memory): the estimate follows a trial's settings, holds within 25 % of the
peak a CPU trial measures, and a trial that cannot fit is refused in one line, before any training,
naming what would make it fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers as tf
from typer.testing import CliRunner

from cli import app
from sweep.core.errors import SweepError
from sweep.data.config import TrialConfig
from sweep.engine import memory
from sweep.engine.lm_eval import LOSS_CHUNK
from sweep.engine.memory import GB, check_fits, estimate
from sweep.engine.models import meta_model

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent
# Llama-3.1-8B's shapes, built on the meta device: no weights, no memory
LLAMA_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192)


def _llama_8b(**settings):
    with torch.device("meta"):
        model = tf.AutoModelForCausalLM.from_config(tf.LlamaConfig(**LLAMA_8B))
    cfg = TrialConfig(**{"model": "llama-8b-shape", "task": "rows.jsonl", "batch_size": 8, "max_length": 1024,
                         "rank": 16, "device": "cuda", **settings})
    return cfg, model


def _gpu(cfg: TrialConfig, model) -> memory.Estimate:
    return estimate(cfg, model, "causal-lm", torch.device("cuda:0"))


def test_an_8b_base_takes_its_dtypes_bytes_and_a_quarter_of_them_in_4bit(monkeypatch):
    monkeypatch.setattr("sweep.engine.base.native_bf16", lambda device, cpu_bf16=None: True)
    cfg, model = _llama_8b()
    params = sum(p.numel() for p in model.parameters())
    bf16 = _gpu(cfg.replace(base_dtype="bf16"), model)
    assert bf16.weights == pytest.approx(2 * params, rel=0.01)  # 16 GB: no fp32 copy anywhere
    fp32 = _gpu(cfg.replace(base_dtype="fp32", precision="fp32"), model)
    assert fp32.weights == pytest.approx(4 * params, rel=0.01)
    nf4 = _gpu(cfg.replace(quantize="4bit", base_dtype="bf16"), model)
    # the linears in half a byte and their scales, the embeddings and output layer in bf16
    assert 4.5 * GB < nf4.weights < 6 * GB
    assert nf4.trained == bf16.trained  # and it checkpoints: QLoRA's recipe
    checkpointed = _gpu(cfg.replace(base_dtype="bf16", gradient_checkpointing=True), model)
    assert nf4.activations == checkpointed.activations


def test_activations_follow_the_micro_batch_checkpointing_and_the_vocabulary(monkeypatch):
    monkeypatch.setattr("sweep.engine.base.native_bf16", lambda device, cpu_bf16=None: True)
    cfg, model = _llama_8b(base_dtype="bf16")
    whole = _gpu(cfg, model).activations
    # the loss makes its logits a chunk at a time: 4M of them, in bf16 and the loss's fp32 copies
    chunk = LOSS_CHUNK * (2 + 12)
    assert _gpu(cfg.replace(micro_batch_size=1), model).activations - chunk == pytest.approx(
        (whole - chunk) / 8, rel=0.01)
    assert whole > chunk + 20 * GB  # the blocks' saved tensors more than 20 GB
    blocks_checkpointed = _gpu(cfg.replace(gradient_checkpointing=True), model).activations - chunk
    assert blocks_checkpointed < (whole - chunk) / 4  # a block's input each, and one block whole
    # a model that soft-caps its logits after the output layer keeps every position's: 8 x 1024 x 128k
    model.config.final_logit_softcapping = 30.0
    capped = _gpu(cfg, model).activations
    assert capped - whole == 8 * 1024 * 128256 * (2 + 12) - chunk


def test_a_quantized_base_checkpoints_unless_told_not_to(monkeypatch):
    monkeypatch.setattr("sweep.engine.base.native_bf16", lambda device, cpu_bf16=None: True)
    cfg, model = _llama_8b(base_dtype="bf16")
    assert cfg.gradient_checkpointing is None and not cfg.checkpointing
    nf4 = cfg.replace(quantize="4bit")
    assert nf4.checkpointing and not nf4.replace(gradient_checkpointing=False).checkpointing
    assert _gpu(nf4, model).activations == _gpu(cfg.replace(gradient_checkpointing=True), model).activations
    assert _gpu(nf4.replace(gradient_checkpointing=False), model).activations == _gpu(cfg, model).activations
    # what a study is: the checkpointing a trial does, however it was asked
    assert nf4.identity() == nf4.replace(gradient_checkpointing=True).identity()
    assert cfg.identity() == cfg.replace(gradient_checkpointing=False).identity()
    assert "gradient_checkpointing" not in cfg.identity()


def test_a_trial_that_cannot_fit_is_one_line_naming_what_would_make_it_fit(monkeypatch):
    monkeypatch.setattr("sweep.engine.base.native_bf16", lambda device, cpu_bf16=None: True)
    cfg, model = _llama_8b(base_dtype="bf16")
    with pytest.raises(SweepError) as e:
        check_fits(cfg, model, "causal-lm", torch.device("cuda:0"), free=24 * GB)
    message = str(e.value)
    assert "\n" not in message
    assert "more than the 24.0 GB free on cuda:0" in message
    assert "--quantize 4bit" in message and "--micro-batch-size 1" in message
    # and what it names does fit: 4-bit with micro-batches of one row and checkpointing
    small = cfg.replace(quantize="4bit", micro_batch_size=1, gradient_checkpointing=True)
    assert check_fits(small, model, "causal-lm", torch.device("cuda:0"), free=24 * GB).total < 24 * GB
    # trials at once on one device share its memory
    free = int(_gpu(small, model).total * 1.5)
    check_fits(small, model, "causal-lm", torch.device("cuda:0"), free=free)
    with pytest.raises(SweepError, match="shared by 2 trials at once"):
        check_fits(small, model, "causal-lm", torch.device("cuda:0"), free=free, trials_at_once=2)


def test_the_command_line_refuses_before_training_and_writes_no_study(monkeypatch, tiny_cfg, tmp_path):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 2**20)  # a machine with 1 MB free
    db = tmp_path / "r.db"
    args = ["run", "--model", tiny_cfg.model, "--task", tiny_cfg.task, "--n-trials", "1", "--device", "cpu",
            "--storage", f"sqlite:///{db}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "needs about" in line and "free on the CPU" in line and "\n" not in line
    assert not db.exists()  # refused before the study was created
    trial = CliRunner().invoke(app, ["trial", "--model", tiny_cfg.model, "--task", tiny_cfg.task,
                                     "--device", "cpu", "--max-steps", "1"])
    assert trial.exit_code == 2 and "needs about" in trial.output


def test_a_classifier_counts_its_head_as_trained(tiny_cfg):
    config = tf.AutoConfig.from_pretrained(tiny_cfg.model, num_labels=2)
    model = meta_model(tiny_cfg, config, "classification")
    e = estimate(tiny_cfg, model, "classification", CPU)
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("classifier"))
    lora = sum(4 * sum(m.weight.shape) for n, m in model.named_modules() if n.endswith(("query", "value")))
    assert e.trained == 16 * (head + lora)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["llama-fp32", "minilm-long-fp32"])
def test_the_estimate_is_within_a_quarter_of_a_cpu_trials_measured_peak(case, tmp_path_factory):
    """Measured in a fresh process per case (benchmarks/memory_estimate.py): the trial's peak resident
    set less the process's before it, on inputs at max_length, where the estimate is meant to hold."""
    scratch = tmp_path_factory.getbasetemp() / "memory-estimate"
    scratch.mkdir(exist_ok=True)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import memory_estimate as bench
    finally:
        sys.path.pop(0)
    bench.random_llama(scratch / "llama")
    settings = bench.cases(scratch)[case]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_estimate.py"), "--one",
                          json.dumps(settings)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    measured = r["peak"] - r["before"]
    assert measured > 300 * 2**20  # large enough that the libraries' lazy imports do not decide it
    assert r["estimate"] == pytest.approx(measured, rel=0.25), (r, measured)


def test_a_cpu_trial_maps_its_large_buffers_where_the_c_library_is_glibc():
    import platform

    from sweep.core import heap

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert heap.map_large_buffers()  # mallopt took the threshold


def test_a_cpu_trial_maps_its_buffers_for_a_base_that_saves_memory_or_where_memory_is_short(tiny_cfg,
                                                                                            monkeypatch):
    cfg = tiny_cfg.replace(max_length=32, batch_size=4)
    plenty = 64 * GB
    monkeypatch.setattr(memory, "free_bytes", lambda device: plenty)
    assert not memory.maps_its_heap(cfg, "fp32")  # speed first where memory is plenty
    for form in ("bf16", "fp16", "4bit", "8bit"):
        assert memory.maps_its_heap(cfg, form)  # asked for to save memory
    from sweep.engine.models import load_config

    need = estimate(cfg, meta_model(cfg, load_config(cfg), "classification"), "classification", CPU)
    # the estimate with its activations twice, as glibc's heap may hold them, against half the free memory
    twice = need.total + need.activations
    monkeypatch.setattr(memory, "free_bytes", lambda device: 2 * twice + 2**20)
    assert not memory.maps_its_heap(cfg, "fp32")
    monkeypatch.setattr(memory, "free_bytes", lambda device: 2 * twice - 2**20)
    assert memory.maps_its_heap(cfg, "fp32")
    monkeypatch.setattr(memory, "free_bytes", lambda device: None)
    assert memory.maps_its_heap(cfg, "fp32")  # unknown: the memory-safe choice
    monkeypatch.setattr(memory, "free_bytes", lambda device: plenty)
    assert memory.maps_its_heap(cfg.replace(model="/no/such/model"), "fp32")  # no estimate either
