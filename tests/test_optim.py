"""LoRA+ parameter groups: their rules, PEFT's reference, plain LoRA at lambda = 1, weight decay."""

from __future__ import annotations

import pytest
import torch
from peft.optimizers import create_loraplus_optimizer
from peft.tuners.lora import LoraLayer

from sweep.core.errors import SweepError
from sweep.engine.models import load_model
from sweep.engine.optim import build_optimizer, loraplus_param_groups

LABELS = ("neg", "pos")


def _lrs(groups) -> dict[int, tuple[str, float, float]]:
    return {id(p): (g.get("name"), g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_each_parameter_lands_in_the_group_its_name_says(tiny_cfg):
    cfg = tiny_cfg.replace(eta_a=1e-3, lam=8.0, weight_decay=0.1)
    model = load_model(cfg, 2, LABELS)
    by_id = _lrs(loraplus_param_groups(model, cfg))
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert id(p) not in by_id
            continue
        group, lr, wd = by_id[id(p)]
        seen.add(group)
        if ".lora_A." in name:
            assert (group, lr, wd) == ("lora_A", 1e-3, 0.1)
        elif ".lora_B." in name:
            assert (group, lr, wd) == ("lora_B", 8e-3, 0.1)
        elif p.ndim == 1:
            assert (group, lr, wd) == ("head_no_decay", 1e-3, 0.0), name
        else:
            assert (group, lr, wd) == ("head", 1e-3, 0.1), name
    assert seen == {"lora_A", "lora_B", "head", "head_no_decay"}


def test_groups_match_peft_except_for_head_biases(tiny_cfg):
    cfg = tiny_cfg.replace(eta_a=2e-4, lam=16.0, weight_decay=0.05)
    model = load_model(cfg, 2, LABELS)
    ours = _lrs(loraplus_param_groups(model, cfg))
    peft_opt = create_loraplus_optimizer(
        model, torch.optim.AdamW, lr=cfg.eta_a, loraplus_lr_ratio=cfg.lam,
        loraplus_weight_decay=cfg.weight_decay,
    )
    theirs = {id(p): (g["lr"], g["weight_decay"]) for g in peft_opt.param_groups for p in g["params"]}
    assert set(ours) == set(theirs)
    differ = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group, lr, wd = ours[id(p)]
        if group == "head_no_decay":
            # By design: PEFT gives every 1-D parameter lam * eta_A; we keep the head at one lr.
            assert theirs[id(p)] == (cfg.lam * cfg.eta_a, 0.0) and (lr, wd) == (cfg.eta_a, 0.0)
            differ.append(name)
        else:
            assert theirs[id(p)] == (lr, wd), name
    assert differ and all(n.endswith("bias") for n in differ)


def test_embedding_lora_gets_its_own_lr_like_peft(tiny_cfg):
    cfg = tiny_cfg.replace(target_modules=("query", "value", "word_embeddings"), embedding_lr=3e-6)
    model = load_model(cfg, 2, LABELS)
    ours = _lrs(loraplus_param_groups(model, cfg))
    peft_opt = create_loraplus_optimizer(
        model, torch.optim.AdamW, lr=cfg.eta_a, loraplus_lr_ratio=cfg.lam, loraplus_lr_embedding=3e-6
    )
    theirs = {id(p): g["lr"] for g in peft_opt.param_groups for p in g["params"]}
    emb = [(n, p) for n, p in model.named_parameters() if "lora_embedding" in n]
    assert len(emb) == 2
    for _, p in emb:
        assert ours[id(p)][:2] == ("embedding", 3e-6) and theirs[id(p)] == 3e-6


def _train_steps(model, optimizer, steps: int = 4) -> None:
    torch.manual_seed(123)
    ids = torch.randint(1000, 2000, (8, 12))
    labels = torch.tensor([0, 1] * 4)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_lambda_one_is_plain_lora(tiny_cfg):
    cfg = tiny_cfg.replace(lam=1.0, weight_decay=0.01, init="reversed")
    ours = load_model(cfg, 2, LABELS)
    plain = load_model(cfg, 2, LABELS)
    opt = build_optimizer(ours, cfg, torch.device("cpu"))
    assert {g["lr"] for g in opt.param_groups} == {cfg.eta_a}
    trainable = [(n, p) for n, p in plain.named_parameters() if p.requires_grad]
    plain_opt = torch.optim.AdamW(
        [
            {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": 0.01},
            {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=cfg.eta_a,
        betas=cfg.betas,
    )
    _train_steps(ours, opt)
    _train_steps(plain, plain_opt)
    moved = 0
    for (name, a), b in zip(ours.named_parameters(), plain.parameters(), strict=False):
        assert torch.equal(a, b), name
        moved += int(a.requires_grad)
    assert moved > 0
    b_weights = [p for n, p in ours.named_parameters() if ".lora_B." in n]
    assert all(p.abs().sum() > 0 for p in b_weights)


def test_lambda_scales_only_the_b_matrices_trajectory(tiny_cfg):
    """With lam = 16 the B matrices' first step is 16 times that at lam = 1 (standard init: B = 0)."""
    plain = load_model(tiny_cfg.replace(lam=1.0), 2, LABELS)
    plus_cfg = tiny_cfg.replace(lam=16.0)
    plus = load_model(plus_cfg, 2, LABELS)
    start = {n: p.detach().clone() for n, p in plus.named_parameters() if ".lora_B." in n}
    _train_steps(plain, build_optimizer(plain, tiny_cfg.replace(lam=1.0), torch.device("cpu")), 1)
    _train_steps(plus, build_optimizer(plus, plus_cfg, torch.device("cpu")), 1)
    plain_b = dict(plain.named_parameters())
    for n, p in plus.named_parameters():
        if n in start:
            step_plus = (p - start[n]).abs().max()
            step_plain = (plain_b[n] - start[n]).abs().max()
            # Adam's first step moves each weight by about lr, so 16x the lr is ~16x the step.
            assert 12 * step_plain < step_plus < 20 * step_plain


def test_weight_decay_is_really_applied(tiny_cfg):
    cfg = tiny_cfg.replace(eta_a=0.1, lam=2.0, weight_decay=0.5, init="reversed")
    model = load_model(cfg, 2, LABELS)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    before = {id(p): p.detach().clone() for g in opt.param_groups for p in g["params"]}
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = torch.zeros_like(p)  # a zero gradient isolates the decoupled decay term
    opt.step()
    checked = set()
    for g in opt.param_groups:
        for p in g["params"]:
            expected = before[id(p)] * (1 - g["lr"] * g["weight_decay"])
            torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=0)
            checked.add((g["name"], g["weight_decay"]))
    assert ("lora_A", 0.5) in checked and ("lora_B", 0.5) in checked and ("head", 0.5) in checked
    assert ("head_no_decay", 0.0) in checked


def test_dora_magnitude_trains_at_eta_a_without_decay(tiny_cfg):
    cfg = tiny_cfg.replace(use_dora=True, eta_a=2e-3, lam=8.0, weight_decay=0.1)
    model = load_model(cfg, 2, LABELS)
    by_id = _lrs(loraplus_param_groups(model, cfg))
    magnitudes = [(n, p) for n, p in model.named_parameters() if "lora_magnitude_vector" in n]
    assert len(magnitudes) == 4  # 2 layers x (query, value)
    for _, p in magnitudes:
        assert p.requires_grad and by_id[id(p)] == ("magnitude", 2e-3, 0.0)


def test_lambda_one_with_dora_is_plain_dora(tiny_cfg):
    cfg = tiny_cfg.replace(use_dora=True, lam=1.0)
    ours, plain = load_model(cfg, 2, LABELS), load_model(cfg, 2, LABELS)
    params = [p for p in plain.parameters() if p.requires_grad]
    _train_steps(ours, build_optimizer(ours, cfg, torch.device("cpu")), 2)
    _train_steps(plain, torch.optim.AdamW(params, lr=cfg.eta_a, betas=cfg.betas, weight_decay=0.0), 2)
    for (name, a), b in zip(ours.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_rslora_scales_by_alpha_over_sqrt_rank(tiny_cfg):
    for use_rslora, scaling in ((False, 16 / 4), (True, 16 / 2)):
        model = load_model(tiny_cfg.replace(rank=4, alpha=16.0, use_rslora=use_rslora), 2, LABELS)
        layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
        assert layer.scaling["default"] == scaling


def test_a_trainable_parameter_of_unknown_kind_is_an_error_naming_it(tiny_cfg):
    model = load_model(tiny_cfg, 2, LABELS)
    layer = dict(model.named_modules())["base_model.model.bert.encoder.layer.0.attention.self.query"]
    layer.register_parameter("vera_lambda_b", torch.nn.Parameter(torch.ones(4)))
    with pytest.raises(SweepError, match=r"vera_lambda_b.*neither a LoRA factor"):
        loraplus_param_groups(model, tiny_cfg)


def test_peft_modules_to_save_heads_are_the_head_group(tiny_cfg):
    """A model wrapped by PEFT itself (task_type SEQ_CLS) still groups: its head copy is the head."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(tiny_cfg.model, num_labels=2)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    groups = {g["name"]: g for g in loraplus_param_groups(model, tiny_cfg)}
    assert len(groups["head"]["params"]) == 1 and len(groups["head_no_decay"]["params"]) == 1
