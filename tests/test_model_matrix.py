"""Every architecture users bring trains what it should, through the same load_model path as a trial.

Each family is a tiny random model built from its transformers config (2 layers, width 32), saved
without a head like a pretrained checkpoint, then loaded as a sequence classifier. A fixture of one
architecture proves one architecture: RoBERTa's head is two nested Linears, DistilBERT's has a
pre-classifier, DeBERTa-v2 adds a pooler, decoders classify from their last real token.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from peft.tuners.lora import LoraLayer

from sweep.data.config import TrialConfig
from sweep.engine.models import default_target_modules, load_model, load_tokenizer, pad_token_id
from sweep.engine.optim import build_optimizer
from sweep.engine.train import run_trial

VOCAB = 100
EOS = 99  # decoders have no pad token: they pad with EOS (sweep.engine.models.pad_token_id)
LABELS = ("a", "b", "c")
_ENC = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64)
_DEC = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64,
            bos_token_id=98, eos_token_id=EOS)

CONFIGS = {
    "bert": lambda: tf.BertConfig(**_ENC),
    "roberta": lambda: tf.RobertaConfig(**_ENC, pad_token_id=1),
    "xlm-roberta": lambda: tf.XLMRobertaConfig(**_ENC, pad_token_id=1),
    "deberta-v2": lambda: tf.DebertaV2Config(**_ENC),
    "distilbert": lambda: tf.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                              max_position_embeddings=64),
    "electra": lambda: tf.ElectraConfig(**_ENC, embedding_size=16),
    "albert": lambda: tf.AlbertConfig(**_ENC, embedding_size=16),
    "gpt2": lambda: tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                  bos_token_id=98, eos_token_id=EOS),
    "llama": lambda: tf.LlamaConfig(**_DEC),
    "qwen2": lambda: tf.Qwen2Config(**_DEC),
    "mistral": lambda: tf.MistralConfig(**_DEC),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, tmp_path_factory) -> tuple[str, str, int]:
    """(architecture, directory of a headless checkpoint, the pad id a trial would use)."""
    config = CONFIGS[request.param]()
    path = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    tf.AutoModel.from_config(config).save_pretrained(path)
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    return request.param, str(path), pad


def _cfg(path: str, **changes) -> TrialConfig:
    settings = {"task": "unused.csv", "rank": 4, "eta_a": 1e-2, "lam": 4.0, "device": "cpu", **changes}
    return TrialConfig(model=path, **settings)


def _batch(pad: int) -> dict[str, torch.Tensor]:
    """Three right-padded examples of lengths 9, 6 and 4, no token equal to the pad id."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 90, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    for row, n in ((1, 6), (2, 4)):
        ids[row, n:], mask[row, n:] = pad, 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2])}


def _step(model, opt, batch, seed: int) -> None:
    torch.manual_seed(seed)  # the same dropout masks in runs that are compared
    model(**batch).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_one_step_trains_lora_and_the_whole_head_and_nothing_else(checkpoint):
    arch, path, pad = checkpoint
    model = load_model(_cfg(path), len(LABELS), LABELS, pad)
    opt = build_optimizer(model, _cfg(path), torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = _batch(pad)
    # With the standard init B starts at zero, so A has no gradient until B has moved once.
    _step(model, opt, batch, seed=0)
    torch.manual_seed(1)
    model(**batch).loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name, p in trainable.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{arch}: {name} has no gradient"
        assert p.grad.abs().sum() > 0, f"{arch}: {name} has a zero gradient (outside the forward path?)"
    opt.step()
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == p.requires_grad, f"{arch}: {name} requires_grad={p.requires_grad} but moved={moved}"

    head = model.trained_in_full
    assert head and all(n in trainable for n in head)
    assert any(n.split(".")[2] in ("classifier", "score") for n in head), head
    assert set(trainable) == head | {n for n in trainable if ".lora_" in n}
    lora_modules = [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    for target in default_target_modules(model.config.model_type):
        assert any(n.endswith(target) for n in lora_modules), f"{arch}: no LoRA on {target}"


def test_lambda_one_is_plain_lora_bit_for_bit(checkpoint):
    arch, path, pad = checkpoint
    cfg = _cfg(path, lam=1.0)
    ours = load_model(cfg, len(LABELS), LABELS, pad)
    plain = load_model(cfg, len(LABELS), LABELS, pad)
    opt_ours = build_optimizer(ours, cfg, torch.device("cpu"))
    params = [p for p in plain.parameters() if p.requires_grad]
    opt_plain = torch.optim.AdamW(params, lr=cfg.eta_a, betas=cfg.betas, eps=1e-8, weight_decay=0.0)
    batch = _batch(pad)
    for seed in range(3):
        _step(ours, opt_ours, batch, seed)
        _step(plain, opt_plain, batch, seed)
    for (name, a), (_, b) in zip(ours.named_parameters(), plain.named_parameters(), strict=True):
        assert torch.equal(a, b), f"{arch}: {name} differs from plain LoRA"


@torch.no_grad()
def test_padding_does_not_change_an_examples_logits(checkpoint):
    arch, path, pad = checkpoint
    model = load_model(_cfg(path), len(LABELS), LABELS, pad).eval()
    # Token 0 ends the short example: GPT-2's "!", which padding with id 0 would hide.
    short = torch.tensor([[5, 6, 7, 8, 0]])
    long = torch.tensor([[11, 12, 13, 14, 15, 16, 17, 18, 19]])
    alone = model(input_ids=short, attention_mask=torch.ones_like(short)).logits[0]
    ids = torch.full((2, 9), pad)
    ids[0, :5], ids[1] = short[0], long[0]
    mask = (torch.arange(9) < torch.tensor([[5], [9]])).long()
    padded = model(input_ids=ids, attention_mask=mask).logits[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-4, msg=f"{arch}: padding changed the logits")
    cut = model(input_ids=short[:, :4], attention_mask=torch.ones(1, 4, dtype=torch.long)).logits[0]
    assert not torch.allclose(cut, alone), f"{arch}: the trailing token 0 was read as padding"


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> str:
    """A tiny GPT-2 with a byte-level tokenizer whose ids follow GPT-2's: "!" is 0, no pad token."""
    path = tmp_path_factory.mktemp("gpt2-tok")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = tf.GPT2Tokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    tokenizer.save_pretrained(path)
    config = tf.GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                           bos_token_id=len(vocab) - 1, eos_token_id=len(vocab) - 1)
    torch.manual_seed(0)
    tf.GPT2Model(config).save_pretrained(path)
    return str(path)


@torch.no_grad()
def test_gpt2_pads_with_eos_and_reads_a_trailing_exclamation_mark(tiny_gpt2):
    tokenizer = load_tokenizer(_cfg(tiny_gpt2))
    pad = pad_token_id(tokenizer)
    assert tokenizer.pad_token_id is None and pad == tokenizer.eos_token_id
    assert tokenizer("!")["input_ids"] == [0] and pad != 0
    model = load_model(_cfg(tiny_gpt2), 2, ("neg", "pos"), pad).eval()
    texts = ["fine!", "fine", "a longer review that pads the others"]
    enc = tokenizer(texts)["input_ids"]
    width = max(len(x) for x in enc)
    ids = torch.tensor([x + [pad] * (width - len(x)) for x in enc])  # right-padded, as trials batch
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in enc])
    together = model(input_ids=ids, attention_mask=mask).logits
    for i, ids in enumerate(enc):
        alone = model(input_ids=torch.tensor([ids])).logits[0]
        torch.testing.assert_close(together[i], alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together[0], together[1]), "the trailing '!' was read as padding"


def test_a_trial_on_a_decoder_runs_batches_of_several_examples(tiny_gpt2, toy_csv):
    result = run_trial(_cfg(tiny_gpt2, task=toy_csv, batch_size=8, max_steps=3, max_length=32))
    assert result.steps == 3 and result.stop_reason == "completed"


@pytest.mark.slow
def test_trial_command_on_a_roberta_directory_moves_the_head(tmp_path):
    """`loraplus-sweep trial --model <roberta dir> --task rotten-tomatoes`: the nested head trains."""
    from typer.testing import CliRunner

    from cli import app
    from sweep.engine.models import resolve_model_path

    tokenizer = tf.AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"))
    config = tf.RobertaConfig(**{**_ENC, "vocab_size": len(tokenizer), "max_position_embeddings": 160},
                              pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    tf.RobertaModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    r = CliRunner().invoke(app, ["trial", "--model", str(tmp_path), "--task", "rotten-tomatoes",
                                 "--max-steps", "8", "--batch-size", "8", "--eval-limit", "64", "--json"])
    assert r.exit_code == 0, r.output
    norms = json.loads(r.stdout)["update_norms"]
    assert norms["head"] > 0 and norms["head_no_decay"] > 0 and norms["lora_B"] > 0, norms


def test_a_model_copied_from_the_cache_equals_one_read_from_its_checkpoint(checkpoint):
    """A slot's process keeps the base model it loaded and copies it for its next trials: the fresh
    weights (head, pooler) come from the trial's seed either way, the loaded ones from the checkpoint."""
    from sweep.engine import models

    arch, path, pad = checkpoint
    models._base_cache.clear()
    read = load_model(_cfg(path, seed=3), len(LABELS), LABELS, pad).state_dict()
    copied = load_model(_cfg(path, seed=3), len(LABELS), LABELS, pad).state_dict()
    other_seed = load_model(_cfg(path, seed=4), len(LABELS), LABELS, pad)
    assert models._base_cache, "the base model was not kept"
    assert read.keys() == copied.keys()
    for name in read:
        assert torch.equal(read[name], copied[name]), f"{arch}: {name} differs between read and copied"
    fresh = other_seed.trained_in_full
    for name, value in other_seed.state_dict().items():
        same = torch.equal(value, read[name])
        if name in fresh and name.endswith("weight"):
            assert not same, f"{arch}: {name} did not follow the seed"
        elif ".lora_" not in name and name not in fresh:
            assert same, f"{arch}: loaded weight {name} changed with the seed"


def test_numpy_dropout_replaces_every_dropout_and_a_seed_fixes_the_step(checkpoint):
    """The CPU's numpy-drawn masks (sweep.core.dropout) reach every family's dropouts, and a trial's seed
    still fixes its training step."""
    from sweep.core.dropout import NumpyDropout, numpy_dropout

    _, path, pad = checkpoint
    cfg = _cfg(path)

    def loss(seed: int) -> torch.Tensor:
        model = load_model(cfg, len(LABELS), LABELS, pad)
        numpy_dropout(model, seed)
        assert not any(type(m) is torch.nn.Dropout for m in model.modules())
        torch.manual_seed(0)  # whatever torch still draws (attention dropout) is the same in every run
        return model.train()(**_batch(pad)).loss.detach()

    assert torch.equal(loss(1), loss(1))
    model = load_model(cfg, len(LABELS), LABELS, pad)
    numpy_dropout(model, 1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model.train()(**_batch(pad)).loss.backward()
    assert "aten::bernoulli_" not in {e.key for e in prof.key_averages()}  # no mask left to torch
    model = load_model(cfg, len(LABELS), LABELS, pad)
    if numpy_dropout(model, 1) and any(m.p > 0 for m in model.modules() if type(m) is NumpyDropout):
        assert not torch.equal(loss(1), loss(2))


@pytest.mark.parametrize("dora", [False, True])
def test_frozen_linears_cast_to_bf16_ahead_train_bit_for_bit_as_autocast_alone(checkpoint, dora):
    """A bf16 trial casts its frozen linear weights once (sweep.engine.precision.cast_frozen_linears) instead
    of letting autocast cast them at every step: the losses and the trained weights stay the same,
    with DoRA too (it norms its base weights outside autocast: those are not cast)."""
    from sweep.engine.precision import cast_frozen_linears, uncast

    arch, path, pad = checkpoint
    cfg = _cfg(path, use_dora=dora)
    runs = []
    for ahead in (False, True):
        model = load_model(cfg, len(LABELS), LABELS, pad)
        cast = cast_frozen_linears(model, torch.bfloat16) if ahead else []
        if ahead:
            assert cast and all(p.dtype == torch.bfloat16 for p, _ in cast), arch
            assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
        opt = build_optimizer(model, cfg, torch.device("cpu"))
        losses = []
        for seed in range(3):
            torch.manual_seed(seed)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(**_batch(pad)).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        uncast(cast)
        runs.append((losses, {n: p.detach() for n, p in model.named_parameters()}))
    (losses, weights), (losses_ahead, weights_ahead) = runs
    assert all(torch.equal(a, b) for a, b in zip(losses, losses_ahead, strict=True)), arch
    for name, w in weights.items():  # the frozen ones uncast: the checkpoint's
        assert torch.equal(w, weights_ahead[name]), f"{arch}: {name} differs"
