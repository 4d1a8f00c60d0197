"""The base model's form (sweep.engine.base): frozen weights loaded in bf16 or fp16 with nothing of them kept
in fp32, or quantized by bitsandbytes to 4 or 8 bits (QLoRA), while LoRA, DoRA and the head train in
fp32; the rule `base_dtype = "auto"` follows; lambda = 1 is plain LoRA on a quantized base too."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from decoders import byte_tokenizer
from typer.testing import CliRunner

from cli import app
from sweep.core.errors import SweepError
from sweep.data.config import TrialConfig
from sweep.engine import base, models
from sweep.engine.base import BF16_FROM_PARAMS, base_dtype, check_quantization
from sweep.engine.kinds import prepare
from sweep.engine.models import load_causal_lm, parameter_count
from sweep.engine.optim import build_optimizer
from sweep.engine.precision import precision
from sweep.engine.train import run_trial

CPU = torch.device("cpu")
WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "pearl", "amber", "lemon"]
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                               reason="bitsandbytes is not installed (the quant extra)")


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> str:
    """A completion the prompt decides (the word's first letter, three times): learnable in a few steps."""
    rows = [{"prompt": f"{WORDS[i % len(WORDS)]}{i % 7}:", "completion": WORDS[i % len(WORDS)][0] * 3}
            for i in range(60)]
    path = tmp_path_factory.mktemp("lm") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _lm(model: str, task: str, **changes) -> TrialConfig:
    settings = dict(model=model, task=task, rank=4, eta_a=3e-3, lam=8.0, batch_size=8, max_steps=30,
                    eval_every=10, max_length=32, device="cpu", warmup_ratio=0.0)
    return TrialConfig(**{**settings, **changes})


def _trained(cfg: TrialConfig):
    """(the result of a trial, its model at the end)."""
    kept = {}
    result = run_trial(cfg, on_end=lambda model, tokenizer: kept.update(model=model))
    return result, kept["model"]


def _frozen_and_trained_dtypes(model) -> tuple[set[torch.dtype], set[torch.dtype]]:
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    return frozen, trained


def _cached_base_dtypes() -> set[torch.dtype]:
    """The dtypes of the floating weights of the base model the process keeps for the next trial."""
    return {p.dtype for cached, _ in models._base_cache.values() for p in cached.parameters()
            if p.is_floating_point()}


# -- bf16 and fp16 bases ----------------------------------------------------------------------------


def test_a_llama_on_a_bf16_base_trains_like_fp32_and_keeps_no_fp32_frozen_weight(llama, rows_file):
    fp32, _ = _trained(_lm(llama, rows_file, base_dtype="fp32"))
    bf16, model = _trained(_lm(llama, rows_file, base_dtype="bf16"))
    frozen, trained = _frozen_and_trained_dtypes(model)
    assert frozen == {torch.bfloat16}  # embeddings, norms, the LM head and every linear: no fp32 copy
    assert trained == {torch.float32}  # LoRA: the optimizer's master weights
    assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    assert _cached_base_dtypes() == set()  # a reduced base is not kept twice for the next trial
    assert bf16.precision == "bf16"  # computed in bf16 autocast
    assert bf16.history[-1].metric < bf16.history[0].metric  # it learns
    assert bf16.history[-1].metric == pytest.approx(fp32.history[-1].metric, abs=0.01)
    assert bf16.update_norms["lora_B"] == pytest.approx(fp32.update_norms["lora_B"], rel=0.1)
    assert bf16.update_norms != fp32.update_norms  # the base's arithmetic did change


def test_a_bert_classifier_on_a_bf16_base_keeps_its_head_in_fp32(tiny_cfg):
    cfg = tiny_cfg.replace(eta_a=1e-2, lam=8.0, max_steps=20, eval_every=20)
    fp32, _ = _trained(cfg.replace(base_dtype="fp32"))
    bf16, model = _trained(cfg.replace(base_dtype="bf16"))
    frozen, trained = _frozen_and_trained_dtypes(model)
    assert frozen == {torch.bfloat16} and trained == {torch.float32}
    head = {n for n, p in model.named_parameters() if p.requires_grad and ".lora_" not in n}
    assert head == set(model.trained_in_full) and any("classifier" in n for n in head)
    assert bf16.history[-1].train_loss == pytest.approx(fp32.history[-1].train_loss, abs=0.02)
    assert bf16.update_norms["head"] == pytest.approx(fp32.update_norms["head"], rel=0.1)


def test_dora_on_a_bf16_base_keeps_its_magnitudes_in_fp32(llama, rows_file):
    cfg = _lm(llama, rows_file, base_dtype="bf16", use_dora=True, target_modules=("q_proj", "v_proj"),
              max_steps=6, eval_every=6)
    work = prepare(cfg, CPU)
    magnitudes = [p for n, p in work.model.named_parameters() if ".lora_magnitude_vector." in n]
    assert magnitudes and {p.dtype for p in magnitudes} == {torch.float32}
    assert _frozen_and_trained_dtypes(work.model) == ({torch.bfloat16}, {torch.float32})
    result = run_trial(cfg)
    assert result.stop_reason == "completed" and math.isfinite(result.metric)


def test_an_fp16_base_computes_in_fp16_with_a_scaled_loss_and_learns(llama, rows_file):
    result, model = _trained(_lm(llama, rows_file, base_dtype="fp16"))
    assert _frozen_and_trained_dtypes(model) == ({torch.float16}, {torch.float32})
    assert result.precision == "fp16" and result.stop_reason == "completed"
    assert result.history[-1].metric < result.history[0].metric


def test_the_base_dtype_and_the_precision_must_agree():
    for ok in (dict(base_dtype="bf16"), dict(base_dtype="bf16", precision="bf16"), dict(base_dtype="fp16"),
               dict(base_dtype="fp32", precision="bf16"), dict(base_dtype="auto", precision="fp32")):
        TrialConfig(**ok)
    with pytest.raises(SweepError, match="base_dtype bf16 computes in bf16 autocast, not precision fp32: "
                                         "leave precision at auto or set it to bf16"):
        TrialConfig(base_dtype="bf16", precision="fp32")
    with pytest.raises(SweepError, match="base_dtype fp16 computes in fp16 autocast, not precision bf16"):
        TrialConfig(base_dtype="fp16", precision="bf16")
    with pytest.raises(SweepError, match="base_dtype must be one of auto, fp32, bf16, fp16; got 'int4'"):
        TrialConfig(base_dtype="int4")
    with pytest.raises(SweepError, match="quantize must be one of none, 4bit, 8bit; got '2bit'"):
        TrialConfig(quantize="2bit")


def test_auto_is_bf16_from_a_billion_parameters_where_bf16_is_native():
    cfg = TrialConfig()
    big, small = BF16_FROM_PARAMS, BF16_FROM_PARAMS - 1
    assert base_dtype(cfg, CPU, big, cpu_bf16=True) == "bf16"
    assert base_dtype(cfg, CPU, small, cpu_bf16=True) == "fp32"
    assert base_dtype(cfg, CPU, 8 * big, cpu_bf16=False) == "fp32"  # emulated bf16: slow
    assert base_dtype(cfg.replace(precision="fp32"), CPU, big, cpu_bf16=True) == "fp32"
    assert base_dtype(cfg.replace(base_dtype="fp16"), CPU, 1, cpu_bf16=False) == "fp16"
    # the compute follows a bf16 base, and stays as it was for an fp32 one
    assert precision(cfg.replace(base_dtype="bf16"), CPU, cpu_bf16=False) == "bf16"
    assert precision(cfg.replace(base_dtype="fp32"), CPU, cpu_bf16=False) == "fp32"
    assert precision(cfg.replace(base_dtype="fp32"), CPU, cpu_bf16=True) == "bf16"


def test_the_parameters_auto_counts_are_the_models_own(llama):
    from transformers import AutoModel

    assert parameter_count(llama) == sum(p.numel() for p in AutoModel.from_pretrained(llama).parameters())
    cfg = TrialConfig(model=llama)
    # a tiny model stays fp32 where bf16 is native
    assert base_dtype(cfg, CPU, lambda: parameter_count(llama), cpu_bf16=True) == "fp32"


def test_new_settings_at_their_defaults_keep_the_default_studys_name():
    """A study stored before these settings existed keeps its name: the embedded default's results in
    results/default are those of minilm-l6-rotten-tomatoes-ae0f77bf."""
    from sweep.data.spec import load_spec
    from sweep.engine.checks import preflight

    identity = TrialConfig().identity()
    assert "base_dtype" not in identity and "quantize" not in identity
    assert TrialConfig(quantize="4bit").identity()["quantize"] == "4bit"
    assert TrialConfig(base_dtype="bf16").identity()["base_dtype"] == "bf16"
    studies = Path(__file__).resolve().parent.parent / "studies"
    spec = preflight(load_spec(studies / "default.toml"))
    assert spec.study_name == "minilm-l6-rotten-tomatoes-ae0f77bf"
    other = spec.replace(base=spec.base.replace(base_dtype="bf16"))
    assert other.study_name != spec.study_name


def test_the_flags_reach_the_trial_and_a_bad_value_is_one_line(tiny_model, toy_csv):
    runner = CliRunner()
    args = ["trial", "--model", tiny_model, "--task", toy_csv, "--rank", "4", "--max-steps", "2",
            "--max-length", "32", "--device", "cpu", "--json"]
    ok = runner.invoke(app, [*args, "--base-dtype", "bf16"])
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.stdout)
    assert out["config"]["base_dtype"] == "bf16" and out["config"]["quantize"] == "none"
    assert out["precision"] == "bf16"
    bad = runner.invoke(app, [*args, "--base-dtype", "bf16", "--precision", "fp32"])
    assert bad.exit_code == 2
    assert bad.output.strip().count("\n") == 0 and "leave precision at auto" in bad.output


# -- quantized bases -----------------------------------------------------------------------------------


@needs_bnb
@pytest.mark.parametrize("quantize, layer, stored", [("4bit", "Linear4bit", torch.uint8),
                                                      ("8bit", "Linear8bitLt", torch.int8)])
def test_a_quantized_llama_trains_on_the_cpu(llama, rows_file, quantize, layer, stored):
    import bitsandbytes as bnb

    result, model = _trained(_lm(llama, rows_file, quantize=quantize))
    assert result.stop_reason == "completed"
    assert result.history[-1].metric < result.history[0].metric - 0.03  # it learns
    quantized = [m for m in model.modules() if isinstance(m, getattr(bnb.nn, layer))]
    assert len(quantized) == 2 * 7  # every linear layer of both blocks; the LM head stays as it was
    assert {m.weight.dtype for m in quantized} == {stored}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    if quantize == "4bit":  # QLoRA's recipe, in bf16 where bf16 is native
        q = quantized[0].weight.quant_state
        compute = torch.bfloat16 if base.native_bf16(CPU) else torch.float32
        assert q.quant_type == "nf4" and q.nested and quantized[0].compute_dtype == compute


@needs_bnb
def test_lambda_one_is_plain_lora_on_a_quantized_base(llama, rows_file):
    """The LoRA+ groups do not change with the base: lambda = 1 trains the LoRA factors of a 4-bit
    model exactly as one AdamW over all of them at eta_A does."""
    cfg = _lm(llama, rows_file, quantize="4bit", lam=1.0, weight_decay=0.01)
    ours, plain = load_causal_lm(cfg), load_causal_lm(cfg)
    opt = build_optimizer(ours, cfg, CPU)
    assert [g["name"] for g in opt.param_groups] == ["lora_A", "lora_B"]
    assert {g["lr"] for g in opt.param_groups} == {cfg.eta_a}
    trainable = [p for p in plain.parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trainable) > 0
    plain_opt = torch.optim.AdamW(trainable, lr=cfg.eta_a, betas=cfg.betas, weight_decay=0.01)
    torch.manual_seed(0)
    ids = torch.randint(0, 256, (4, 12))
    for model, optimizer in ((ours, opt), (plain, plain_opt)):
        model.train()
        for _ in range(3):
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    moved = 0
    for (name, a), b in zip(ours.named_parameters(), plain.parameters(), strict=True):
        if a.requires_grad:
            assert torch.equal(a, b), name
            moved += int(".lora_B." in name and bool(a.abs().sum() > 0))
    assert moved > 0


@needs_bnb
def test_a_quantized_classifier_keeps_its_head_in_floating_point(tiny_cfg):
    cfg = tiny_cfg.replace(quantize="4bit", max_steps=4, eval_every=4)
    result, model = _trained(cfg)
    head = [p for n, p in model.named_parameters() if n in model.trained_in_full]
    assert head and {p.dtype for p in head} == {torch.float32}
    assert any(not p.is_floating_point() for p in model.parameters())  # the encoder's linears are 4-bit
    assert result.stop_reason == "completed"


def test_quantizing_without_bitsandbytes_says_what_to_install(monkeypatch, tiny_cfg):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes"
                        else real(name, *a))
    with pytest.raises(SweepError, match=r"quantize 4bit needs the package bitsandbytes: pip install "
                                         r"'bitsandbytes>=0.50,<0.51'") as e:
        models.load_model(tiny_cfg.replace(quantize="4bit"), 2, ("neg", "pos"))
    assert "\n" not in str(e.value)
    from sweep.engine.checks import check_trial

    with pytest.raises(SweepError, match="quantize 8bit needs the package bitsandbytes"):
        check_trial(tiny_cfg.replace(quantize="8bit"))  # before any trial of a study runs
    check_quantization("none", CPU)  # nothing to check


@needs_bnb
def test_a_device_bitsandbytes_cannot_run_on_is_one_line(monkeypatch):
    import bitsandbytes as bnb

    def no_kernel(*args, **kwargs):
        raise RuntimeError("no kernel for this device\nmore detail")

    base._quantized_layer_problem.cache_clear()
    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", no_kernel)
    try:
        one_line = (r"^quantize 4bit cannot run on cpu here: RuntimeError: no kernel for this device; "
                    r"use --quantize none or --device cuda$")
        with pytest.raises(SweepError, match=one_line):
            check_quantization("4bit", CPU)
    finally:
        monkeypatch.undo()
        base._quantized_layer_problem.cache_clear()
    check_quantization("4bit", CPU)  # runs here


# -- export ------------------------------------------------------------------------------------------


def test_export_carries_a_quantized_base_to_each_tool(llama, rows_file):
    import yaml

    from sweep.analysis.export import BestTrial, axolotl_yaml, llama_factory_yaml, peft_snippet

    def best(**changes):
        return BestTrial("s", 0, 1.0, "loss", _lm(llama, rows_file, **changes), "fp32")

    plain = (yaml.safe_load(axolotl_yaml(best())), yaml.safe_load(llama_factory_yaml(best())))
    assert plain[0]["adapter"] == "lora" and not {"load_in_4bit", "load_in_8bit"} & set(plain[0])
    assert "quantization_bit" not in plain[1] and "BitsAndBytesConfig" not in peft_snippet(best().config)
    for quantize, bits, adapter in (("4bit", 4, "qlora"), ("8bit", 8, "lora")):
        axolotl = yaml.safe_load(axolotl_yaml(best(quantize=quantize)))
        assert axolotl["adapter"] == adapter and axolotl[f"load_in_{quantize}"] is True
        assert yaml.safe_load(llama_factory_yaml(best(quantize=quantize)))["quantization_bit"] == bits
    scope = {}
    exec(peft_snippet(best(quantize="4bit").config).split("model = get_peft_model")[0], scope)
    q = scope["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    scope = {}
    exec(peft_snippet(best(quantize="8bit").config).split("model = get_peft_model")[0], scope)
    assert scope["quantization_config"].load_in_8bit
    assert "dtype=torch.bfloat16" in peft_snippet(best(base_dtype="bf16").config)


@needs_bnb
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
def test_a_quantized_base_keeps_no_view_of_its_checkpoint_file(llama, rows_file):
    """The floating weights a quantized model leaves unconverted (embeddings, norms) are copied, so
    the checkpoint's memory map, every page of which loading read, is released."""
    import gc

    checkpoint = str(Path(llama) / "model.safetensors")
    models._base_cache.clear()  # an fp32 copy kept from another test maps the same file
    gc.collect()
    model = load_causal_lm(_lm(llama, rows_file, quantize="4bit"))
    gc.collect()
    assert checkpoint not in Path("/proc/self/maps").read_text()
    assert any(not p.is_floating_point() for p in model.parameters())


# -- loading a reduced base -------------------------------------------------------------------------

_PEAK_OF_LOADING = """
import contextlib
import sys
from pathlib import Path
import torch
from sweep.engine import models
from sweep.data.config import TrialConfig
from sweep.engine.models import load_causal_lm

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
cfg = TrialConfig(model=sys.argv[1], task="unused", base_dtype=sys.argv[2], rank=4, device="cpu")
load_causal_lm(cfg.replace(model=sys.argv[4]))  # the libraries' lazy imports, paid before measuring
if sys.argv[5] == "mapped":
    models._read_not_mapped = contextlib.nullcontext
Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS")
model = load_causal_lm(cfg)
assert {p.dtype for p in model.parameters() if not p.requires_grad} == {getattr(torch, sys.argv[3])}
print(status("VmHWM") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads Linux's peak RSS")
def test_a_bf16_base_loads_without_holding_its_fp32_checkpoint_in_memory(llama, tmp_path):
    """Loading a bf16 base from an fp32 checkpoint does not hold the checkpoint's pages in memory beside
    the model it becomes (sweep.engine.models._read_not_mapped): each way measured in a fresh process on a
    Llama of 67 MB of fp32 weights, after a first load that pays the libraries' lazy imports."""
    import subprocess
    import sys

    import transformers as tf


    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=257, hidden_size=512, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=2048, max_position_embeddings=64)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    byte_tokenizer(tmp_path).save_pretrained(tmp_path)
    checkpoint = (tmp_path / "model.safetensors").stat().st_size
    root = Path(__file__).resolve().parent.parent

    def added(how: str) -> int:
        out = subprocess.run([sys.executable, "-c", _PEAK_OF_LOADING, str(tmp_path), "bf16", "bfloat16",
                              llama, how], capture_output=True, text=True, cwd=root, check=True)
        return int(out.stdout.split()[-1])

    mapped, read = added("mapped"), added("read")
    assert read < mapped - checkpoint / 2, (read, mapped, checkpoint)
    assert read < checkpoint  # the bf16 model is half the checkpoint


def test_a_trial_records_the_form_its_base_took(llama, rows_file, monkeypatch):
    """What `auto` resolved to is part of the result (stored with the trial, read by export)."""
    short = dict(max_steps=2, eval_every=2)
    assert run_trial(_lm(llama, rows_file, **short)).base == "fp32"  # auto: a tiny model stays fp32
    assert run_trial(_lm(llama, rows_file, base_dtype="bf16", **short)).base == "bf16"
    monkeypatch.setattr(base, "BF16_FROM_PARAMS", 1)  # as if the model were large, on a native-bf16 CPU
    monkeypatch.setattr("sweep.engine.base.native_bf16", lambda device, cpu_bf16=None: True)
    assert run_trial(_lm(llama, rows_file, **short)).base == "bf16"
    if importlib.util.find_spec("bitsandbytes") is not None:
        monkeypatch.undo()
        assert run_trial(_lm(llama, rows_file, quantize="4bit", **short)).base == "4bit"
