"""The embedded instruction-tuned decoder: SmolLM2-135M-Instruct, shipped as a GGUF file by a package,
converted once into the cache, then trained with LoRA like any causal LM."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

from sweep.data.config import TrialConfig
from sweep.data.lm_batches import collate_lm, encode_lm
from sweep.data.lm_tasks import parse_row
from sweep.engine.models import load_causal_lm, load_tokenizer, pad_token_id, resolve_model_path

pytestmark = pytest.mark.slow
CFG = TrialConfig(model="smollm2-135m", task="rows.jsonl", rank=4, eta_a=1e-3, lam=8.0, device="cpu")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Iterator[tuple[Path, float]]:
    """The conversion in this module's own cache (another test of the session may have converted the model
    into the session's cache already), and how long it took."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAPLUS_SWEEP_CACHE", str(tmp_path_factory.mktemp("smollm2-cache")))
        started = time.perf_counter()
        path = Path(resolve_model_path("smollm2-135m"))
        yield path, time.perf_counter() - started


def test_the_gguf_converts_once_and_later_loads_read_the_cache(converted):
    path, seconds = converted
    assert seconds > 2  # it did convert: de-quantizing takes about 20 s
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in path.iterdir()}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary directory left
    started = time.perf_counter()
    assert resolve_model_path("smollm2-135m") == str(path)
    assert time.perf_counter() - started < 1
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama" and model.num_parameters() == 134_515_008
    assert getattr(model.config, "quantization_config", None) is None


@torch.no_grad()
def test_the_converted_model_answers_a_chat_question(converted):
    tokenizer = load_tokenizer(CFG)
    assert "<|im_start|>assistant" in tokenizer.chat_template
    assert pad_token_id(tokenizer) == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = AutoModelForCausalLM.from_pretrained(converted[0]).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_one_lora_step_on_smollm2(converted):
    tokenizer = load_tokenizer(CFG)
    pad = pad_token_id(tokenizer)
    model = load_causal_lm(CFG, pad)
    lora = [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    assert len(lora) == 30 * 7 and not any("lm_head" in n for n in lora)  # q k v o gate up down per block
    rows = [parse_row(r, i, "rows.jsonl")[0] for i, r in enumerate([
        {"messages": [{"role": "user", "content": "What is the capital of France?"},
                      {"role": "assistant", "content": "Paris."}]},
        {"messages": [{"role": "user", "content": "Is this review positive or negative?\n\nA delight."}],
         "choices": ["negative", "positive"], "answer": "positive"},
    ], start=1)]
    batch = collate_lm(encode_lm(rows, tokenizer, 128), np.arange(2), pad)
    loss = model(**batch).loss
    loss.backward()
    assert 0 < loss.item() < 10
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_" in n for n in grads)
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if ".lora_B." in n)  # B gets the first gradient


def test_a_real_smollm2_trial_of_a_few_steps_lowers_the_headline_loss(converted):
    """The whole trial path on the embedded LLM and an embedded instruction task: the kind found from
    the task, the loss per headline token reported and lowered by four LoRA+ steps."""
    from sweep.engine.train import run_trial

    cfg = TrialConfig(model="smollm2-135m", task="bbc-headlines", rank=4, eta_a=5e-4, lam=16.0,
                      batch_size=4, max_steps=4, eval_every=4, max_length=96, train_limit=16,
                      eval_limit=8, warmup_ratio=0.0, device="cpu")
    untrained = run_trial(cfg.replace(eta_a=1e-12, lam=1.0))  # the same path, moving nothing measurable
    result = run_trial(cfg)
    assert (result.kind, result.metric_name, result.steps) == ("causal-lm", "loss", 4)
    assert 1.0 < result.metric < untrained.metric < 8.0, (result.metric, untrained.metric)
