"""Writes a randomly initialised model of a known shape, with the embedded MiniLM-L6's tokenizer, to a
folder: for throughput and memory measurements of shapes that no embedded model has. Its weights are
random, so the metrics of a run on it say nothing; its tokens/s and memory are those of the shape.

Shapes:
  bert-base     encoder, 12 layers, hidden 768, 12 heads, FFN 3072 (roberta-base's shape, 109M)
  smollm2-135m  Llama decoder, 30 layers, hidden 576, 9 heads (3 KV), FFN 1536 (SmolLM2-135M's blocks)
  llama-1b      Llama decoder, 16 layers, hidden 2048, 32 heads (8 KV), FFN 8192 (Llama-3.2-1B's blocks)
The decoders' vocabulary is the tokenizer's (30,522 tokens), smaller than their models' own.

Usage: python benchmarks/random_model.py SHAPE OUTDIR   (then --model OUTDIR in a benchmark)
"""

from __future__ import annotations

import sys

import torch
from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from sweep.engine.models import resolve_model_path

SHAPES = {
    "bert-base": (BertModel, BertConfig, dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                             intermediate_size=3072, max_position_embeddings=512)),
    "smollm2-135m": (LlamaForCausalLM, LlamaConfig, dict(hidden_size=576, num_hidden_layers=30,
                                                          num_attention_heads=9, num_key_value_heads=3,
                                                          intermediate_size=1536, tie_word_embeddings=True)),
    "llama-1b": (LlamaForCausalLM, LlamaConfig, dict(hidden_size=2048, num_hidden_layers=16,
                                                      num_attention_heads=32, num_key_value_heads=8,
                                                      intermediate_size=8192, tie_word_embeddings=True)),
}


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in SHAPES:
        print(f"usage: python benchmarks/random_model.py {{{','.join(SHAPES)}}} OUTDIR", file=sys.stderr)
        sys.exit(2)
    shape, out = sys.argv[1:]
    model_class, config_class, dims = SHAPES[shape]
    # A decoder's rows end with an EOS: the tokenizer's [SEP] plays it.
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"), eos_token="[SEP]")
    config = config_class(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, **dims)
    torch.manual_seed(0)
    model = model_class(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    size = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{out}: {shape}, {size:.0f}M parameters, random weights")


if __name__ == "__main__":
    main()
