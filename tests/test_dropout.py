"""Dropout masks drawn by numpy on the CPU (sweep.core.dropout): the same dropout, other draws."""

import numpy as np
import pytest
import torch
from torch import nn

import sweep.core.dropout
from sweep.core.dropout import NumpyDropout, math_attention, numpy_dropout
from sweep.engine.kinds import prepare


def _dropout(p: float, seed: int) -> nn.Module:
    model = nn.Sequential(nn.Dropout(p))
    assert numpy_dropout(model, seed) == 1
    return model.train()


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_masks_keep_one_minus_p_and_rescale_the_kept(p):
    x = torch.ones(200_000)
    y = _dropout(p, 0)(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    # 5 standard deviations of a binomial fraction at n = 200,000
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / x.numel())
    assert abs(y.mean().item() - 1) < 0.01  # the expectation is unchanged


def test_the_gradient_is_the_mask():
    x = torch.randn(4, 8, requires_grad=True)
    y = _dropout(0.3, 1)(x)
    y.sum().backward()
    kept = y.detach() != 0
    assert torch.equal(x.grad, kept.float() * (1 / 0.7))  # 1 / (1 - p) where kept, 0 where dropped
    assert 0 < kept.sum() < x.numel()


def test_a_seed_fixes_the_masks_and_another_seed_changes_them():
    x = torch.ones(1000)
    assert torch.equal(_dropout(0.1, 3)(x), _dropout(0.1, 3)(x))
    assert not torch.equal(_dropout(0.1, 3)(x), _dropout(0.1, 4)(x))
    module = _dropout(0.1, 3)
    assert not torch.equal(module(x), module(x))  # each call draws a new mask


def test_evaluation_and_p_zero_pass_the_input_through():
    x = torch.randn(50)
    assert torch.equal(_dropout(0.5, 0).eval()(x), x)
    assert torch.equal(_dropout(0.0, 0)(x), x)
    assert torch.equal(_dropout(1.0, 0)(x), torch.zeros_like(x))


def test_a_bf16_input_stays_bf16():
    assert _dropout(0.1, 0)(torch.ones(64, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_a_cpu_trial_draws_its_masks_from_numpy_but_not_under_activation_checkpointing(tiny_cfg):
    work = prepare(tiny_cfg, torch.device("cpu"))
    drops = [m for m in work.model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(type(m) is NumpyDropout for m in drops)
    assert len({id(m.numpy_rng) for m in drops}) == 1  # one stream per trial, in the order of the forward
    checkpointed = prepare(tiny_cfg.replace(gradient_checkpointing=True), torch.device("cpu"))
    # Its recomputation replays torch's random state to redraw the same masks; numpy's would differ.
    assert not any(type(m) is NumpyDropout for m in checkpointed.model.modules())


def _qkv(heads=2, kv_heads=2, length=5, dim=4):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(3, h, length, dim, generator=g) for h in (heads, kv_heads, kv_heads))


@pytest.mark.parametrize("case", ["padding", "causal", "float mask", "none"])
def test_math_attention_without_dropout_is_sdpa(case):
    q, k, v = _qkv()
    mask = None
    if case == "padding":  # keys beyond each example's length are masked, as sdpa_mask gives them
        mask = (torch.arange(5) < torch.tensor([5, 3, 1])[:, None])[:, None, None, :]
    elif case == "float mask":
        mask = torch.randn(3, 1, 5, 5)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    want = sdpa(q, k, v, attn_mask=mask, is_causal=case == "causal")
    got = math_attention(q, k, v, mask, 4 ** -0.5, case == "causal", lambda p: p)
    assert torch.allclose(got, want, atol=1e-6)


def test_bf16_attention_takes_its_softmax_and_drops_its_probabilities_in_fp32():
    """As SDPA's kernels do: in bf16, the probabilities it drops are fp32, and the output is within
    bf16's rounding of fp32 attention's."""
    q, k, v = _qkv(length=9)
    seen = []
    got = math_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), None, 0.5, False,
                         lambda p: seen.append(p.dtype) or p)
    assert seen == [torch.float32] and got.dtype == torch.bfloat16
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)


def test_attention_in_training_draws_its_mask_from_the_modules_generator_and_repeats_kv_heads():
    q, k, v = _qkv(heads=4, kv_heads=2)
    module = nn.Module().train()
    module.num_key_value_groups, module.is_causal = 2, False
    module.numpy_rng = np.random.default_rng(5)
    out, _ = sweep.core.dropout._attention(module, q, k, v, None, dropout=0.2, scaling=0.5)
    rng = np.random.default_rng(5)
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    want = math_attention(q, kk, vv, None, 0.5, False, lambda p: sweep.core.dropout._drop(p, 0.2, rng))
    assert torch.equal(out, want.transpose(1, 2))
    module.eval()  # evaluation: SDPA itself, no dropout
    out, _ = sweep.core.dropout._attention(module, q, k, v, None, dropout=0.0, scaling=0.5)
    want = torch.nn.functional.scaled_dot_product_attention(q, kk, vv, scale=0.5)
    assert torch.allclose(out, want.transpose(1, 2), atol=1e-6)
