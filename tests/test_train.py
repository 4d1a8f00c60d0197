"""The trial engine end to end on a tiny model: learning, determinism, stopping, divergence."""

import math

import numpy as np
import pytest
import torch

from sweep.data.batches import collate, encode_task, eval_batches, train_batches
from sweep.data.tasks import load_task
from sweep.engine.models import load_tokenizer
from sweep.engine.train import lr_factor, run_trial


def test_a_trial_learns_the_toy_task(tiny_cfg):
    r = run_trial(tiny_cfg.replace(epochs=10, eta_a=1e-2, lam=8.0, eval_every=40))
    assert r.stop_reason == "completed" and r.metric_name == "accuracy"
    assert r.steps == math.ceil(256 / 16) * 10
    assert r.history[0].metric < r.metric  # it got better with training
    assert r.metric > 0.65 and r.best_metric >= r.metric
    assert [p.step for p in r.history] == [40, 80, 120, 160]
    assert set(r.metrics) == {"accuracy", "f1"}
    # Its standard error, bootstrapped over the examples scored: about the binomial one for accuracy.
    n = len(load_task(tiny_cfg.task).validation)
    assert r.metric_se == pytest.approx(math.sqrt(r.metric * (1 - r.metric) / n), rel=0.15)
    assert r.tokens_per_s > 0 and r.peak_memory_mb > 0 and r.device == "cpu"
    assert {"torch", "transformers", "peft"} <= set(r.versions)


def test_same_seed_same_run_on_cpu(tiny_cfg):
    cfg = tiny_cfg.replace(max_steps=12, eval_every=4, dropout=0.1)
    a, b = run_trial(cfg), run_trial(cfg)
    assert [(p.metric, p.train_loss) for p in a.history] == [(p.metric, p.train_loss) for p in b.history]
    c = run_trial(cfg.replace(seed=1))
    assert [p.train_loss for p in a.history] != [p.train_loss for p in c.history]


def test_tokens_count_real_tokens_not_padding(tiny_cfg):
    cfg = tiny_cfg.replace(max_steps=1000, epochs=1)
    task = load_task(cfg.task)
    train, _ = encode_task(task, load_tokenizer(cfg), cfg.max_length)
    r = run_trial(cfg.replace(max_steps=None, epochs=1))
    assert r.examples == len(train) and r.tokens == int(train.lengths.sum())


def test_callback_can_stop_the_run(tiny_cfg):
    seen = []

    def on_eval(point):
        seen.append(point.step)
        return point.step >= 8

    r = run_trial(tiny_cfg.replace(eval_every=4), on_eval=on_eval)
    assert seen == [4, 8] and r.steps == 8 and r.stop_reason == "stopped: by callback at step 8"
    assert r.metric == r.history[-1].metric


def test_divergence_stops_cleanly_with_a_reason(tiny_cfg):
    r = run_trial(tiny_cfg.replace(eta_a=50.0, lam=64.0, max_grad_norm=None, warmup_ratio=0.0))
    assert r.diverged and r.stop_reason.startswith("diverged: ")
    assert r.steps < 16  # well before the end of the epoch
    assert r.metric == 0.0  # scored at its worst, not at a random-weights value
    assert math.isnan(r.metric_se)  # and that is no measurement with a spread
    assert math.isfinite(r.tokens_per_s)


def test_length_grouped_batches_cover_each_example_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000)
    batches = train_batches(lengths, 16, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_padded = sum(len(b) * lengths[b].max() for b in np.array_split(rng.permutation(1000), 63))
    assert padded < 0.7 * random_padded
    assert batches[0].tolist() != train_batches(lengths, 16, np.random.default_rng(2))[0].tolist()
    flat = np.concatenate(eval_batches(lengths, 64))
    assert sorted(flat.tolist()) == list(range(1000)) and lengths[flat[0]] == lengths.max()


def test_collate_pads_to_the_longest_in_the_batch(tiny_cfg):
    task = load_task(tiny_cfg.task)
    train, _ = encode_task(task, load_tokenizer(tiny_cfg), 32)
    idx = np.array([0, 1, 2])
    batch = collate(train, idx, pad_id=0, regression=False)
    assert batch["input_ids"].shape == (3, int(train.lengths[idx].max()))
    assert batch["attention_mask"].sum().item() == int(train.lengths[idx].sum())


def test_tokenization_is_cached_on_disk(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("LORAPLUS_SWEEP_CACHE", str(tmp_path))
    task, tok = load_task(tiny_cfg.task), load_tokenizer(tiny_cfg)
    first = encode_task(task, tok, 32)
    files = list((tmp_path / "tokens").iterdir())
    assert len(files) == 1
    again = encode_task(task, tok, 32)
    assert np.array_equal(first[0].lengths, again[0].lengths)
    encode_task(task, tok, 16)
    assert len(list((tmp_path / "tokens").iterdir())) == 2


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_schedule_warms_up_then_decays(tiny_cfg, schedule):
    f = lr_factor(tiny_cfg.replace(warmup_ratio=0.1, schedule=schedule), 100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(99) == pytest.approx(1.0 if schedule == "constant" else 0.0, abs=0.02)


def test_precision_auto_is_bf16_only_where_the_cpu_has_native_bf16_and_fp32_on_a_gpu(tiny_cfg):
    from sweep.core.hardware import cpu_flags
    from sweep.engine.precision import precision

    cpu = torch.device("cpu")
    assert precision(tiny_cfg.replace(precision="auto"), cpu, cpu_bf16=True) == "bf16"
    assert precision(tiny_cfg.replace(precision="auto"), cpu, cpu_bf16=False) == "fp32"
    assert precision(tiny_cfg.replace(precision="fp32"), cpu, cpu_bf16=True) == "fp32"
    assert precision(tiny_cfg.replace(precision="bf16"), cpu, cpu_bf16=False) == "bf16"
    cuda = torch.device("cuda")  # only its type is read: no GPU needed
    assert precision(tiny_cfg.replace(precision="auto"), cuda, cpu_bf16=True) == "fp32"
    assert precision(tiny_cfg.replace(precision="bf16"), cuda) == "bf16"
    # The flags line of /proc/cpuinfo decides: AVX512-BF16 or AMX-BF16, not AVX-512 alone.
    amd = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
    older = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni\n"
    assert "avx512_bf16" in cpu_flags(amd) and not cpu_flags(older) & {"avx512_bf16", "amx_bf16"}


def test_evaluation_batches_hold_every_example_once_within_their_token_budget():
    lengths = np.array([5, 120, 7, 64, 3, 128, 9, 30] * 25)
    batches = eval_batches(lengths, 64, max_tokens=1024)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 64 and (len(b) == 1 or len(b) * lengths[b].max() <= 1024)
    assert len(batches[0]) == 1024 // 128 and len(batches[-1]) > len(batches[0])  # long ones in small batches


def test_a_trial_says_where_its_time_went(tiny_cfg):
    r = run_trial(tiny_cfg.replace(max_steps=6, eval_every=3))
    assert r.setup_time_s > 0 and r.train_time_s > 0 and r.eval_time_s > 0
    assert r.setup_time_s + r.train_time_s + r.eval_time_s <= r.wall_time_s


def test_bf16_casts_frozen_linears_but_not_a_head_tied_to_the_embeddings():
    import transformers as tf
    from transformers.pytorch_utils import Conv1D

    from sweep.engine.precision import cast_frozen_linears

    for config in (tf.LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, tie_word_embeddings=True),
                   tf.GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2)):
        model = tf.AutoModelForCausalLM.from_config(config).requires_grad_(False)
        assert model.lm_head.weight is model.get_input_embeddings().weight
        assert cast_frozen_linears(model, torch.bfloat16)
        assert model.lm_head.weight.dtype == torch.float32  # an embedding in bf16 would change the sums
        linears = [m for m in model.modules()
                   if isinstance(m, torch.nn.Linear | Conv1D) and m is not model.lm_head]
        assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)


def test_a_bf16_trial_hands_on_end_its_frozen_weights_as_loaded(tiny_cfg):
    from sweep.data.tasks import load_task
    from sweep.engine.models import load_model

    task = load_task(tiny_cfg.task)
    loaded = load_model(tiny_cfg, task.num_labels, task.label_names).state_dict()
    seen = {}
    run_trial(tiny_cfg.replace(precision="bf16", max_steps=2),
              on_end=lambda model, tokenizer: seen.update(model.state_dict()))
    frozen = [n for n in loaded if ".lora_" not in n and "classifier" not in n]
    assert len(frozen) > 10 and all(torch.equal(seen[n], loaded[n]) for n in frozen)  # fp32, unrounded
