"""LoRA+ parameter groups and the AdamW optimizer built from them."""

from __future__ import annotations

import torch
from torch import nn

from sweep.core.errors import SweepError
from sweep.data.config import TrialConfig

GROUPS = ("lora_A", "lora_B", "magnitude", "embedding", "head", "head_no_decay")


def group_of(name: str, param: nn.Parameter, trained_in_full: frozenset[str] = frozenset()) -> str:
    """Which LoRA+ group a trainable parameter belongs to, from its name and shape.

    `trained_in_full` names the head's parameters (sweep.engine.models.load_model sets them on the model);
    inside PEFT's modules_to_save wrappers they are recognised by name. A trainable parameter that
    is none of these (a tuner this function does not know) is an error, never a silent member of
    some group with some learning rate.
    """
    if ".lora_embedding_A." in name or ".lora_embedding_B." in name:
        return "embedding"
    if ".lora_A." in name:
        return "lora_A"
    if ".lora_B." in name:
        return "lora_B"
    if ".lora_magnitude_vector." in name:
        return "magnitude"
    if name in trained_in_full or ".modules_to_save." in name:
        return "head" if param.ndim >= 2 else "head_no_decay"
    raise SweepError(f"trainable parameter {name!r} is neither a LoRA factor, a DoRA magnitude nor part of "
                     "the head; the LoRA+ groups do not know what learning rate it should have")


def loraplus_param_groups(model: nn.Module, cfg: TrialConfig) -> list[dict]:
    """AdamW parameter groups for LoRA+ (Hayou, Ghosh, Yu 2024, arXiv 2402.12354).

    - lora_A: the A matrices of LoRA linear layers, lr eta_a, weight decay.
    - lora_B: the B matrices, lr lam * eta_a, weight decay.
    - magnitude: DoRA's magnitude vectors, lr eta_a, no decay.
    - embedding: both LoRA factors of embedding layers, lr embedding_lr, weight decay.
    - head: every trainable matrix of the head (classifier, modules trained in full), lr head_lr
      (eta_a when unset; a study sets it, one value for all its trials: sweep.data.spec.StudySpec.head_lr),
      weight decay. A causal LM has no such group: its LM head stays frozen.
    - head_no_decay: the head's trainable 1-D parameters (biases, LayerNorm), lr head_lr, no decay.

    Unlike PEFT's create_loraplus_optimizer, 1-D non-LoRA parameters do not get lam * eta_a: there
    the head's bias moves with lam while its weight does not, so a sweep over lam would also
    sweep half of the head. Here lam touches the B matrices only, and lam = 1 is plain LoRA (every
    group at eta_a, unless LoRA is put on embeddings, whose lr is set apart in both LoRA+ and here).
    DoRA's magnitude rescales the whole adapted weight, column by column; it is not part of the
    B factor whose step the LoRA+ argument is about, so it stays at eta_a (PEFT's 1-D rule would
    give it lam * eta_a) and lam = 1 is plain DoRA.
    Each group carries its `name` so callers and tests can find it.
    """
    head_lr = cfg.eta_a if cfg.head_lr is None else cfg.head_lr
    settings = {
        "lora_A": (cfg.eta_a, cfg.weight_decay),
        "lora_B": (cfg.eta_b, cfg.weight_decay),
        "magnitude": (cfg.eta_a, 0.0),
        "embedding": (cfg.embedding_lr, cfg.weight_decay),
        "head": (head_lr, cfg.weight_decay),
        "head_no_decay": (head_lr, 0.0),
    }
    full = getattr(model, "trained_in_full", frozenset())
    members: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
    for name, param in model.named_parameters():
        if param.requires_grad:
            members[group_of(name, param, full)].append(param)
    return [
        {"name": g, "params": members[g], "lr": settings[g][0], "weight_decay": settings[g][1]}
        for g in GROUPS
        if members[g]
    ]


def build_optimizer(model: nn.Module, cfg: TrialConfig, device: torch.device) -> torch.optim.AdamW:
    # The fused kernel is the fastest AdamW on CUDA; on the CPU the default (foreach) is.
    fused = True if device.type == "cuda" else None
    return torch.optim.AdamW(
        loraplus_param_groups(model, cfg), lr=cfg.eta_a, betas=cfg.betas, eps=1e-8, fused=fused
    )
