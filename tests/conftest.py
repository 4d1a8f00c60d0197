"""Shared fixtures: a tiny randomly initialised BERT saved like a checkpoint, and toy tasks."""

from __future__ import annotations

import csv
import random

import pytest
import torch
from decoders import save_decoder
from transformers import AutoTokenizer, BertConfig, BertModel

from sweep.data.config import TrialConfig
from sweep.engine.models import resolve_model_path

POSITIVE = ["good", "great", "excellent", "happy", "love", "wonderful", "best", "fine"]
NEGATIVE = ["bad", "awful", "terrible", "sad", "hate", "horrible", "worst", "poor"]
FILLER = ["the", "movie", "was", "really", "a", "plot", "actor", "story", "and", "it", "very", "film"]


@pytest.fixture(scope="session")
def llama(tmp_path_factory) -> str:
    """A tiny random Llama causal LM with its byte tokenizer, saved like a checkpoint (tests/decoders.py)."""
    return save_decoder("llama", tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Session-wide, so that module-scoped fixtures that train cache their batches here too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAPLUS_SWEEP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer BERT with hidden size 32, random weights, saved without a head (as a real checkpoint)."""
    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def toy_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Short texts whose label is given by a sentiment word among filler words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(FILLER, rng.randint(2, 8))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("toy") / "toy.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(toy_rows(320))
    return str(path)


@pytest.fixture
def tiny_cfg(tiny_model, toy_csv) -> TrialConfig:
    return TrialConfig(
        model=tiny_model,
        task=toy_csv,
        eta_a=1e-3,
        lam=4.0,
        rank=4,
        batch_size=16,
        max_length=32,
        epochs=1,
        device="cpu",
    )

