"""Model loading and LoRA init schemes."""

import pytest
import torch
from peft.tuners.lora import LoraLayer

from sweep.core.errors import SweepError
from sweep.engine import models
from sweep.engine.models import load_model

LABELS = ("neg", "pos")


def _lora_layers(model):
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def _logits(model):
    torch.manual_seed(0)
    ids = torch.randint(1000, 2000, (2, 7))
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_default_targets_are_query_and_value_and_the_head_trains(tiny_cfg):
    model = load_model(tiny_cfg, 2, LABELS)
    layers = _lora_layers(model)
    assert len(layers) == 4  # 2 layers x (query, value)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("classifier" in n for n in names)
    assert all(("lora_" in n) or ("classifier" in n) for n in names)
    assert layers[0].r["default"] == 4 and layers[0].scaling["default"] == 1.0  # alpha = rank


def test_standard_init_is_a_random_b_zero(tiny_cfg):
    for layer in _lora_layers(load_model(tiny_cfg, 2, LABELS)):
        assert layer.lora_A["default"].weight.abs().sum() > 0
        assert layer.lora_B["default"].weight.abs().sum() == 0


def test_reversed_init_is_b_random_a_zero_and_keeps_the_output(tiny_cfg):
    standard = load_model(tiny_cfg, 2, LABELS)
    reversed_ = load_model(tiny_cfg.replace(init="reversed"), 2, LABELS)
    for layer in _lora_layers(reversed_):
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        assert a.abs().sum() == 0 and b.abs().sum() > 0
        bound = 1 / b.shape[1] ** 0.5  # Kaiming-uniform(a=sqrt 5) on B's own fan-in, the rank
        assert b.abs().max() <= bound
    # BA = 0 either way, and the seeded head is the same, so the outputs are identical at step 0.
    torch.testing.assert_close(_logits(standard), _logits(reversed_))


def test_same_seed_same_model_other_seed_other_head(tiny_cfg):
    a, b = load_model(tiny_cfg, 2, LABELS), load_model(tiny_cfg, 2, LABELS)
    c = load_model(tiny_cfg.replace(seed=1), 2, LABELS)
    torch.testing.assert_close(_logits(a), _logits(b))
    assert not torch.allclose(_logits(a), _logits(c))


def test_weights_missing_from_the_checkpoint_are_trained(tiny_model, tiny_cfg, tmp_path):
    # A checkpoint without its pooler: the fresh pooler must not stay frozen at random values.
    import shutil

    from safetensors.torch import load_file, save_file
    shutil.copytree(tiny_model, tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "pooler" not in k}, tmp_path / "m" / "model.safetensors",
              metadata={"format": "pt"})
    model = load_model(tiny_cfg.replace(model=str(tmp_path / "m")), 2, LABELS)
    pooler = [n for n, p in model.named_parameters() if "pooler" in n and p.requires_grad]
    assert pooler


def test_missing_local_model_is_a_clear_error(tiny_cfg, tmp_path):
    with pytest.raises(SweepError, match="model directory '.*nowhere' does not exist"):
        load_model(tiny_cfg.replace(model=str(tmp_path / "nowhere")), 2, LABELS)


def test_hub_model_offline_and_uncached_fails_in_one_line(tiny_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    with pytest.raises(SweepError, match="could not load model 'roberta-base': the Hugging Face Hub is "
                                         "unreachable") as e:
        models.load_tokenizer(tiny_cfg.replace(model="roberta-base"))
    assert "\n" not in str(e.value)


def test_unknown_target_module_is_a_clear_error(tiny_cfg):
    with pytest.raises(SweepError, match=r"cannot put LoRA on \['qkv'\]"):
        load_model(tiny_cfg.replace(target_modules=("qkv",)), 2, LABELS)
