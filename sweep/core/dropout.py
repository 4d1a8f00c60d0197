"""Dropout masks from numpy on the CPU.

torch draws a CPU dropout mask element by element from one Mersenne Twister (`bernoulli_`): 3.3 ms for
the 330,000 activations of one MiniLM-L6 layer at batch 32 (dropout whole), 12 % of a trial on two
cores, and more where texts are long, since an attention's masks grow with the square of the length.
numpy's PCG64 does the same in 1.2 ms (benchmarks/dropout_masks.py). The masks are as random (keep
probability 1 - p, exact to float32's 2^-24) but not torch's: a trial's result depends on its seed as
before, with other draws.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

# The attention of models that take theirs from transformers' AttentionInterface: SDPA, but in training
# on the CPU the attention probabilities' dropout draws its mask from numpy.
ATTENTION = "sdpa_numpy_dropout"


def _drop(x: torch.Tensor, p: float, rng: np.random.Generator) -> torch.Tensor:
    u = torch.from_numpy(rng.random(x.numel(), dtype=np.float32)).view(x.shape)
    return x * u.ge_(p).mul_(1 / (1 - p)).to(x.dtype)  # in place: 0 where dropped, 1 / (1 - p) where kept


class NumpyDropout(nn.Dropout):
    """nn.Dropout (same `p`, so code that reads `module.p` sees no change) whose training masks on the
    CPU come from `numpy_rng`; on other devices it is nn.Dropout."""

    numpy_rng: np.random.Generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        return x * 0 if self.p == 1 else _drop(x, self.p, self.numpy_rng)


def math_attention(query, key, value, attention_mask, scaling, is_causal, drop) -> torch.Tensor:
    """softmax(q k^T * scaling + mask) v in (batch, heads, length, dim), with `drop` applied to the
    probabilities: what SDPA computes, as its reference implementation writes it. A boolean mask keeps
    what is True; masked scores take the dtype's lowest value, as transformers' eager attention does."""
    # Scaled before the product, as SDPA does: length x dim numbers to scale rather than length^2. The
    # scores are this function's own, so masks go in in place.
    scores = torch.matmul(query * scaling, key.transpose(-1, -2))
    if is_causal:
        attention_mask = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool,
                                    device=query.device).tril()
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores.add_(attention_mask)
    # The softmax in fp32 whatever the scores' dtype, as SDPA's kernels compute it; on a CPU a bf16
    # softmax is also slower than an fp32 one.
    probs = drop(torch.softmax(scores, dim=-1, dtype=torch.float32))
    return torch.matmul(probs.to(value.dtype), value)


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
               **kwargs):
    rng = getattr(module, "numpy_rng", None)
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = q_len > 1 and attention_mask is None and (
        is_causal if is_causal is not None else getattr(module, "is_causal", True))
    if (not module.training or not 0 < dropout < 1 or rng is None or query.device.type != "cpu"
            or kwargs.get("position_bias") is not None or (causal and kv_len != q_len)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = math_attention(query, key, value, attention_mask, scale, causal, lambda p: _drop(p, dropout, rng))
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, _attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def numpy_dropout(model: nn.Module, seed: int) -> int:
    """Give every nn.Dropout of `model`, and its attention where it is SDPA from transformers'
    AttentionInterface, masks from one generator seeded by `seed` (a stream of its own, apart from any
    other use of the seed); the number of dropout modules changed.

    Not with activation checkpointing: its recomputation restores torch's random state to redraw the
    same masks, and would draw new ones from numpy."""
    rng = np.random.default_rng([seed, 0xD80])
    changed = 0
    for module in model.modules():
        # every module: NumpyDropout reads it, and so does _attention, from the attention module it gets
        module.numpy_rng = rng
        if type(module) is nn.Dropout:
            module.__class__ = NumpyDropout
            changed += 1
        config = getattr(module, "config", None)
        if (getattr(type(module), "_supports_attention_backend", False)
                and getattr(config, "_attn_implementation", None) == "sdpa"):
            config._attn_implementation = ATTENTION
    return changed
