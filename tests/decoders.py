"""Tiny random decoders and a byte-level tokenizer for causal-LM tests.

The tokenizer is byte-level (one token per byte, GPT-2's byte order: "a" is 64) with one special
token, EOS, and a plain chat template, so every expected id can be read off the text.
"""

from __future__ import annotations

import json

import torch
import transformers as tf

EOS = 256
TEMPLATE = ("{% for m in messages %}{{ '<' + m['role'] + '>' + m['content'] + eos_token }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}")
_DEC = dict(vocab_size=EOS + 1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, intermediate_size=64, max_position_embeddings=128,
            bos_token_id=EOS, eos_token_id=EOS)
CONFIGS = {
    "llama": lambda: tf.LlamaConfig(**_DEC),
    "qwen2": lambda: tf.Qwen2Config(**_DEC),
    "gpt2": lambda: tf.GPT2Config(vocab_size=EOS + 1, n_embd=32, n_layer=2, n_head=2, n_positions=128,
                                  bos_token_id=EOS, eos_token_id=EOS),
}


def byte_tokenizer(folder) -> tf.PreTrainedTokenizerBase:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = EOS
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = tf.GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def save_decoder(arch: str, path) -> str:
    """A whole tiny causal LM checkpoint of `arch` (llama, qwen2, gpt2) and the byte tokenizer in `path`."""
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(CONFIGS[arch]()).save_pretrained(path)
    byte_tokenizer(path).save_pretrained(path)
    return str(path)
