"""One trial spread over several GPUs (--devices 0+1, --device cuda:0+1): what can be checked without
GPUs. The slot sees its group alone and its trials run on it; the base is placed by transformers'
device_map, balanced over the group; the model is not moved onto one device after loading; a
trial's peak is the sum of its GPUs' peaks."""

from __future__ import annotations

import pytest
import torch

from sweep.core.errors import SweepError
from sweep.data.config import TrialConfig
from sweep.data.spec import StudySpec
from sweep.engine import models, train
from sweep.engine.base import gpu_group
from sweep.engine.trial_process import Slot, make_slots, spread_device


def test_a_group_of_gpus_is_one_slot_that_sees_the_group_alone():
    one, two = make_slots("0+1,2+3", jobs=1)
    assert dict(one.env) == {"CUDA_VISIBLE_DEVICES": "0,1"} and one.label == "cuda:0+1"
    assert dict(two.env) == {"CUDA_VISIBLE_DEVICES": "2,3"} and two.label == "cuda:2+3"
    assert one.device == two.device == "cuda:0+1"  # numbered as the slot's process sees them
    single = make_slots("0,1", jobs=1)
    assert [s.device for s in single] == [None, None]  # one GPU a slot, as before
    assert dict(single[1].env) == {"CUDA_VISIBLE_DEVICES": "1"}


def test_a_trial_in_a_group_slot_spreads_unless_it_names_its_device():
    slot = Slot((("CUDA_VISIBLE_DEVICES", "2,3"),), None, "cuda:2+3", "cuda:0+1")
    cfg = TrialConfig(model="m", task="t")
    assert spread_device(cfg, slot).device == "cuda:0+1"
    assert spread_device(cfg.replace(device="cuda"), slot).device == "cuda:0+1"
    assert spread_device(cfg.replace(device="cpu"), slot).device == "cpu"
    assert spread_device(cfg, Slot()).device == "auto"


@pytest.mark.parametrize("devices, ok", [("0+1", True), ("0+1,2+3", True), ("0,1+2", True), ("0++1", False),
                                         ("0+", False), ("+1", False)])
def test_devices_take_groups(devices, ok):
    if ok:
        assert StudySpec(base=TrialConfig(model="m", task="t"), devices=devices).devices == devices
    else:
        with pytest.raises(SweepError, match="groups like 0\\+1,2\\+3"):
            StudySpec(base=TrialConfig(model="m", task="t"), devices=devices)


def test_a_trials_device_may_be_a_group():
    assert gpu_group("cuda:0+1") == (0, 1) and gpu_group("cuda:1") == () and gpu_group("cpu") == ()
    assert TrialConfig(model="m", task="t", device="cuda:0+1+2").device == "cuda:0+1+2"
    with pytest.raises(SweepError, match="cuda:N\\+M: a trial spread"):
        TrialConfig(model="m", task="t", device="cuda:0+")
    assert train.resolve_device.__doc__ and "first" in train.resolve_device.__doc__


def test_a_spread_base_is_placed_by_device_map_over_the_group(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: ((10 + i) * 2**30, 80 * 2**30))
    monkeypatch.setattr("sweep.engine.base.native_bf16", lambda device, cpu_bf16=None: True)
    cfg = TrialConfig(model="m", task="t", device="cuda:0+1", base_dtype="bf16")
    form = models._base_form(cfg, torch.device("cuda:0"))
    assert form["device_map"] == "balanced"
    assert form["max_memory"] == {0: int(10 * 2**30 * 0.75), 1: int(11 * 2**30 * 0.75)}
    assert "device_map" not in models._base_form(cfg.replace(device="cuda:0"), torch.device("cuda:0"))


def test_a_spread_model_stays_where_transformers_put_it():
    spread = torch.nn.Linear(2, 2)
    spread.hf_device_map = {"model.layers.0": 0, "model.layers.1": 1}
    moved = []
    spread.to = lambda *a, **k: moved.append(a) or spread
    assert models.place(spread, torch.device("cuda:0")) is spread and not moved
    whole = torch.nn.Linear(2, 2)
    assert models.place(whole, torch.device("cpu")) is whole


def test_a_spread_trials_peak_is_the_sum_of_its_gpus(monkeypatch):
    peaks = {0: 3 * 2**30, 1: 5 * 2**30}
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: peaks[torch.device(d).index])
    assert train._peak_memory_mb(torch.device("cuda:0"), "cuda:0+1") == 8 * 1024
    assert train._peak_memory_mb(torch.device("cuda:1"), "cuda:1") == 5 * 1024
