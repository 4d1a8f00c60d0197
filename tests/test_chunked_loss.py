"""A causal LM's loss made a chunk of logits at a time (sweep.engine.lm_eval.chunked_nll) equals the
loss from the model's own logits, gradients included, for every decoder family, keeps no logits of a
whole batch for the backward pass, and is not used for a model that changes its logits after the
output layer (a soft-cap)."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from decoders import CONFIGS, EOS
from peft import LoraConfig, get_peft_model

from sweep.data.lm_batches import IGNORE
from sweep.engine import lm_eval

TARGETS = {"llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"], "gpt2": ["c_attn"],
           "gemma2": ["q_proj", "v_proj"]}


def _model(arch: str):
    torch.manual_seed(0)
    if arch == "gemma2":  # its logits are soft-capped after the output layer
        config = tf.Gemma2Config(vocab_size=EOS + 1, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                 head_dim=16, max_position_embeddings=128, final_logit_softcapping=3.0)
    else:
        config = CONFIGS[arch]()
    base = tf.AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[arch], init_lora_weights=False)
    return get_peft_model(base, lora).eval()  # no dropout: the two losses see the same network


def _batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, EOS, (3, 24), generator=gen)
    labels = ids.clone()
    labels[:, :5] = IGNORE  # a prompt: no loss there
    labels[2, 18:] = IGNORE  # a shorter example
    mask = torch.ones_like(ids)
    mask[2, 18:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _plain_nll(model, batch) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    target = batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=IGNORE,
                                            reduction="none")
    return nll.sum(1)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_the_chunked_loss_equals_the_models_own_with_its_gradients(arch, monkeypatch):
    monkeypatch.setattr(lm_eval, "LOSS_CHUNK", (EOS + 1) * 5)  # 5 tokens a chunk: several chunks
    model, batch = _model(arch), _batch()
    assert lm_eval.split_head(model, batch) is not None
    expected = _plain_nll(model, batch)
    expected.sum().backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    nll, tokens = lm_eval.nll_per_example(model, batch)
    nll.sum().backward()
    got = _grads(model)
    assert torch.allclose(nll, expected, rtol=1e-5, atol=1e-5)
    assert tokens.tolist() == [19, 19, 13]
    assert want.keys() == got.keys() and len(got) > 0
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-6), name


def test_no_whole_batch_of_logits_is_kept_for_the_backward_pass(monkeypatch):
    monkeypatch.setattr(lm_eval, "LOSS_CHUNK", (EOS + 1) * 5)
    model, batch = _model("llama"), _batch()
    lm_eval.split_head(model, batch)
    largest = 0

    def keep(t: torch.Tensor) -> torch.Tensor:
        nonlocal largest
        if EOS + 1 in t.shape and t.is_floating_point():
            largest = max(largest, t.numel() // (EOS + 1))  # positions of logits kept
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        nll, _ = lm_eval.nll_per_example(model, batch)
    assert nll.requires_grad and largest == 0  # each chunk's logits are made again in the backward pass
    monkeypatch.setattr(lm_eval, "_splits", type(lm_eval._splits)())
    monkeypatch.setattr(lm_eval, "split_head", lambda model, inputs: None)
    largest = 0
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        lm_eval.nll_per_example(model, batch)
    assert largest >= 3 * 19  # the model's own logits: the whole batch kept (the check can fail)


def test_a_soft_capped_model_keeps_its_own_logits():
    model, batch = _model("gemma2"), _batch()
    assert lm_eval.split_head(model, batch) is None
    nll, _ = lm_eval.nll_per_example(model, batch)
    assert torch.allclose(nll, _plain_nll(model, batch), rtol=1e-5, atol=1e-5)
