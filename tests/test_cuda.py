"""The CUDA path: a trial trains on the GPU with fused AdamW, in fp32 (precision auto) or bf16 autocast,
lambda = 1 is plain LoRA there too, and a trial in its own process runs on the card its slot names.

Skipped where torch sees no GPU; benchmarks/cuda_check.sh runs it on a machine with one.
"""

from __future__ import annotations

import math

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

from sweep.engine.models import load_model
from sweep.engine.optim import build_optimizer
from sweep.engine.precision import autocast, cast_frozen_linears, uncast
from sweep.engine.train import run_trial
from sweep.engine.trial_process import make_slots, run_isolated

pytestmark = pytest.mark.cuda

LABELS = ("neg", "pos")
CUDA = torch.device("cuda")


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Four right-padded examples of random token ids, on the GPU."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    ids[1, 8:], mask[1, 8:] = 0, 0
    ids[2, 5:], mask[2, 5:] = 0, 0
    return {"input_ids": ids.to(CUDA), "attention_mask": mask.to(CUDA),
            "labels": torch.tensor([0, 1, 0, 1], device=CUDA)}


def _step(model, optimizer, cfg, seed: int) -> float:
    torch.manual_seed(seed)  # the same dropout masks in runs that are compared
    with autocast(cfg, CUDA):
        loss = model(**_batch()).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def test_a_training_step_runs_on_the_gpu_with_fused_adamw(tiny_cfg):
    cfg = tiny_cfg.replace(device="cuda", lam=8.0, eta_a=1e-2)
    model = load_model(cfg, len(LABELS), LABELS).to(CUDA)  # as run_trial moves it
    off = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != "cuda"]
    assert off == [], f"left on the CPU: {off[:5]}"
    optimizer = build_optimizer(model, cfg, CUDA)
    assert all(g["fused"] for g in optimizer.param_groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses = [_step(model, optimizer, cfg, seed) for seed in range(2)]
    assert all(math.isfinite(v) for v in losses), losses
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any(".lora_B." in n for n in moved) and any(".lora_A." in n for n in moved)
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    assert state and all(t.device.type == "cuda" for t in state)


@torch.no_grad()
def test_precision_auto_is_fp32_on_cuda_and_bf16_is_autocast(tiny_cfg):
    model = load_model(tiny_cfg.replace(device="cuda"), len(LABELS), LABELS).to(CUDA).eval()
    batch = _batch()
    batch.pop("labels")
    dtypes = {}
    for precision in ("auto", "bf16", "fp32"):
        cfg = tiny_cfg.replace(device="cuda", precision=precision)
        with autocast(cfg, CUDA):
            dtypes[precision] = model(**batch).logits.dtype
    assert dtypes == {"auto": torch.float32, "bf16": torch.bfloat16, "fp32": torch.float32}


def test_trials_in_bf16_and_fp32_both_train_on_the_card_and_differ(tiny_cfg):
    card = torch.cuda.get_device_name(0)
    cfg = tiny_cfg.replace(device="auto", max_steps=8, eval_every=4)
    bf16, fp32 = run_trial(cfg.replace(precision="bf16")), run_trial(cfg)
    assert (bf16.precision, fp32.precision) == ("bf16", "fp32")  # fp32: what auto picks on a GPU
    for r in (bf16, fp32):
        assert r.device == card and r.stop_reason == "completed" and r.steps == 8
        assert math.isfinite(r.metric) and r.tokens_per_s > 0
        assert 0 < r.peak_memory_mb < torch.cuda.get_device_properties(0).total_memory / 2**20
        assert all(v > 0 for v in r.update_norms.values()), r.update_norms
    # bf16 autocast changes the arithmetic: identical updates would mean it never applied.
    assert bf16.update_norms != fp32.update_norms


def test_lambda_one_in_fp32_is_a_single_group_adamw(tiny_cfg):
    cfg = tiny_cfg.replace(device="cuda", precision="fp32", lam=1.0, eta_a=1e-2, init="reversed")
    ours = load_model(cfg, len(LABELS), LABELS).to(CUDA)
    plain = load_model(cfg, len(LABELS), LABELS).to(CUDA)
    opt_ours = build_optimizer(ours, cfg, CUDA)  # fused, several groups
    opt_plain = torch.optim.AdamW([p for p in plain.parameters() if p.requires_grad], lr=cfg.eta_a,
                                  betas=cfg.betas, eps=1e-8, weight_decay=0.0)
    assert len(opt_ours.param_groups) > 1
    for seed in range(3):
        _step(ours, opt_ours, cfg, seed)
        _step(plain, opt_plain, cfg, seed)
    moved = 0
    for (name, a), b in zip(ours.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=f"{name} differs from plain LoRA")
        moved += int(a.requires_grad)
    assert moved > 0


def test_a_trial_in_its_own_process_runs_on_the_gpu_of_its_slot(tiny_cfg):
    slot = make_slots("0", 1)[0]
    assert dict(slot.env) == {"CUDA_VISIBLE_DEVICES": "0"} and slot.label == "cuda:0"
    steps = []
    r = run_isolated(tiny_cfg.replace(device="auto", max_steps=6, eval_every=3), slot=slot,
                     on_step=lambda s, total, loss: steps.append(s), timeout=300)
    assert r.device == torch.cuda.get_device_name(0)
    assert steps == [1, 2, 3, 4, 5, 6] and [p.step for p in r.history] == [3, 6]
    assert math.isfinite(r.metric) and r.peak_memory_mb > 0


def test_on_the_gpu_losses_are_read_a_step_late_yet_every_check_and_callback_still_runs(tiny_cfg):
    """Divergence still ends the trial (at most one step later than on the CPU), and every step and
    every evaluation reaches its callback, in order."""
    diverged = run_trial(tiny_cfg.replace(device="cuda", eta_a=50.0, lam=64.0, max_grad_norm=None,
                                          warmup_ratio=0.0))
    assert diverged.diverged and diverged.stop_reason.startswith("diverged: ") and diverged.metric == 0.0
    steps, evals = [], []
    r = run_trial(tiny_cfg.replace(device="cuda", max_steps=8, eval_every=4),
                  on_step=lambda s, total, loss: steps.append(s), on_eval=lambda p: evals.append(p.step))
    assert steps == list(range(1, 9)) and evals == [4, 8] and r.steps == 8
    assert math.isfinite(r.history[-1].train_loss)


def test_frozen_weights_cast_to_bf16_once_train_bit_for_bit_as_autocast_alone_on_the_gpu(tiny_cfg):
    """A bf16 trial on the card casts its frozen linear weights once (as on the CPU): the same
    losses and trained weights as autocast casting them at every step."""
    cfg = tiny_cfg.replace(device="cuda", precision="bf16", lam=8.0, eta_a=1e-2)
    runs = []
    for ahead in (False, True):
        model = load_model(cfg, len(LABELS), LABELS).to(CUDA)
        cast = cast_frozen_linears(model, torch.bfloat16) if ahead else []
        assert all(p.dtype == torch.bfloat16 and p.device.type == "cuda" for p, _ in cast)
        assert bool(cast) == ahead
        optimizer = build_optimizer(model, cfg, CUDA)
        losses = [_step(model, optimizer, cfg, seed) for seed in range(3)]
        uncast(cast)
        runs.append((losses, {n: p.detach().cpu() for n, p in model.named_parameters()}))
    (losses, weights), (losses_ahead, weights_ahead) = runs
    assert losses == losses_ahead
    for name, w in weights.items():
        gap = (w - weights_ahead[name]).abs().max()
        assert torch.equal(w, weights_ahead[name]), f"{name} differs by {gap}"
