"""Dropout masks from numpy on the CPU.

torch draws a CPU dropout mask element by element from one Mersenne Twister (`bernoulli_`): 3.3 ms for
the 330,000 activations of one MiniLM-L6 layer at batch 32 (dropout whole), 12 % of a trial on two
cores. numpy's PCG64 does the same in 1.4 ms (benchmarks/dropout_masks.py). The masks are as random
(keep probability 1 - p, exact to float32's 2^-24) but not torch's: a trial's result depends on its seed
as before, with other draws.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class NumpyDropout(nn.Dropout):
    """nn.Dropout (same `p`, so code that reads `module.p` sees no change) whose training masks on the
    CPU come from `rng`; on other devices it is nn.Dropout."""

    rng: np.random.Generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p == 1:
            return x * 0
        u = torch.from_numpy(self.rng.random(x.numel(), dtype=np.float32)).view(x.shape)
        mask = u.ge_(self.p).mul_(1 / (1 - self.p))  # in place: 0 where dropped, 1 / (1 - p) where kept
        return x * mask.to(x.dtype)


def numpy_dropout(model: nn.Module, seed: int) -> int:
    """Give every nn.Dropout of `model` its masks from one generator seeded by `seed` (a stream of its
    own, apart from any other use of the seed); the number of modules changed.

    Not with activation checkpointing: its recomputation restores torch's random state to redraw the
    same masks, and would draw new ones from numpy."""
    rng = np.random.default_rng([seed, 0xD80])
    changed = 0
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = NumpyDropout
            module.rng = rng
            changed += 1
    return changed
