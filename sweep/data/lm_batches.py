"""Causal-LM rows as token ids with labels (IGNORE on every token not trained on), and batches of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from sweep.core.errors import SweepError
from sweep.data.lm_tasks import Row

IGNORE = -100  # the label of a token the loss skips (PyTorch's and transformers' ignore_index)


@dataclass(frozen=True)
class LMEncoded:
    """Token ids and labels (IGNORE on every token not trained on) of each example."""

    input_ids: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def take(self, idx: np.ndarray) -> LMEncoded:
        return LMEncoded(tuple(self.input_ids[i] for i in idx), tuple(self.labels[i] for i in idx),
                         self.lengths[idx])

    @property
    def trained_tokens(self) -> int:
        return int(sum((lab != IGNORE).sum() for lab in self.labels))


@dataclass(frozen=True)
class ChoiceEncoded:
    """Every candidate of every row, each as a whole example completed by it."""

    candidates: LMEncoded
    row: np.ndarray  # the row of each candidate
    answer: np.ndarray  # per row: the index of its answer among its candidates

    def __len__(self) -> int:
        return len(self.answer)


def encode_lm(rows: Sequence[Row], tokenizer: PreTrainedTokenizerBase, max_length: int) -> LMEncoded:
    """Each row's target (a row with choices: completed by its answer) as ids and labels.

    Too long a sequence loses its first tokens, never those of the last trained span (the completion,
    the last assistant turn): the prompt loses its start, which keeps the completion and what comes
    right before it. A trained span longer than max_length itself (plain text included) keeps its
    first max_length tokens. The first token's label is always IGNORE: nothing predicts it.
    """
    return _encode([row.target() for row in rows], tokenizer, max_length)


def encode_choices(rows: Sequence[Row], tokenizer: PreTrainedTokenizerBase, max_length: int) -> ChoiceEncoded:
    """Each row completed by each of its choices, for scoring (sweep.engine.lm_eval.score_choices)."""
    if not all(row.choices for row in rows):
        raise SweepError("scoring candidate answers needs rows with choices")
    completed = [row.completed(c) for row in rows for c in row.choices]
    owner = np.repeat(np.arange(len(rows)), [len(row.choices) for row in rows])
    answer = np.array([row.answer for row in rows], dtype=np.int64)
    return ChoiceEncoded(_encode(completed, tokenizer, max_length), owner, answer)


def _encode(rows: Sequence[Row], tokenizer: PreTrainedTokenizerBase, max_length: int) -> LMEncoded:
    ids, labels = [], []
    prefix = _special_prefix(tokenizer)
    for row in rows:
        chat = row.shape == "chat"
        pieces = _chat_pieces(row, tokenizer) if chat else _plain_pieces(row, tokenizer, prefix)
        tokens, trained = [], []
        for piece, train in pieces:
            found = piece if isinstance(piece, list) else _ids(tokenizer, piece)
            tokens += found
            trained += [train] * len(found)
        i, t = _truncate(np.asarray(tokens, dtype=np.int64), np.asarray(trained, dtype=bool), max_length)
        label = np.where(t, i, IGNORE)
        label[:1] = IGNORE
        ids.append(i)
        labels.append(label)
    return LMEncoded(tuple(ids), tuple(labels), np.array([len(i) for i in ids], dtype=np.int64))


def _truncate(ids: np.ndarray, trained: np.ndarray, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """encode_lm's rule: drop from the left up to the last trained span's start, then cut the right."""
    if len(ids) <= max_length:
        return ids, trained
    starts = np.flatnonzero(trained & ~np.concatenate(([False], trained[:-1])))
    last_start = int(starts[-1]) if len(starts) else len(ids)
    start = min(len(ids) - max_length, last_start)
    return ids[start : start + max_length], trained[start : start + max_length]


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer puts before a text (Llama's BOS; none for GPT-2)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i]
    return []


def _eos(tokenizer: PreTrainedTokenizerBase) -> int:
    if not isinstance(tokenizer.eos_token_id, int):
        raise SweepError(f"the tokenizer of {tokenizer.name_or_path!r} has no EOS token: a completion's end "
                         "cannot be learnt")
    return tokenizer.eos_token_id


def _plain_pieces(row: Row, tokenizer: PreTrainedTokenizerBase, prefix: list[int]) -> list:
    """(text or token ids, trained) pieces of a prompt or text row, in order."""
    body = [(row.text, True)] if row.shape == "text" else [(row.prompt, False), (row.completion, True)]
    return [(prefix, False), *body, ([_eos(tokenizer)], True)]


def _chat_pieces(row: Row, tokenizer: PreTrainedTokenizerBase) -> list[tuple[str, bool]]:
    """The rendered conversation cut into (text, trained) pieces: each assistant turn is what its
    rendering adds to the conversation before it (with the generation prompt, so the assistant's
    header is not trained)."""
    if not getattr(tokenizer, "chat_template", None):
        raise SweepError(f"the tokenizer of {tokenizer.name_or_path!r} has no chat template, which chat rows "
                         "need; write the rows as prompt/completion instead")
    messages = [{"role": r, "content": c} for r, c in row.messages]

    def render(n: int, generation_prompt: bool) -> str:
        from jinja2 import TemplateError

        try:
            return tokenizer.apply_chat_template(messages[:n], tokenize=False,
                                                 add_generation_prompt=generation_prompt)
        except (TemplateError, ValueError, IndexError, KeyError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SweepError(f"line {row.line}: the chat template of {tokenizer.name_or_path!r} cannot "
                             f"render this conversation: {reason}") from e

    full = render(len(messages), False)
    pieces, done = [], 0
    for i, (role, _) in enumerate(row.messages):
        if role != "assistant":
            continue
        before, after = render(i, True), render(i + 1, False)
        if not (len(before) >= done and full.startswith(before) and full.startswith(after)
                and len(after) > len(before)):
            raise SweepError(f"line {row.line}: the chat template of {tokenizer.name_or_path!r} does not "
                             "render this conversation turn by turn, so its assistant turns cannot be told "
                             "apart; write the rows as prompt/completion instead")
        pieces += [(full[done : len(before)], False), (full[len(before) : len(after)], True)]
        done = len(after)
    pieces.append((full[done:], False))
    return [(text, train) for text, train in pieces if text]


# Batches: the index batches of sweep.data.batches (train_batches, eval_batches) take `LMEncoded.lengths`.


def collate_lm(enc: LMEncoded, idx: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded: ids with `pad_id`, labels with IGNORE, attention mask 0 on the padding."""
    width = int(enc.lengths[idx].max())
    ids = np.full((len(idx), width), pad_id, dtype=np.int64)
    labels = np.full((len(idx), width), IGNORE, dtype=np.int64)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    for row, i in enumerate(idx):
        n = enc.lengths[i]
        ids[row, :n] = enc.input_ids[i]
        labels[row, :n] = enc.labels[i]
        mask[row, :n] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels)}


def pack_lm(enc: LMEncoded, idx: np.ndarray, pad_id: int, width: int) -> dict[str, torch.Tensor]:
    """The examples of `idx` packed into as few rows of `width` tokens as first-fit-decreasing finds,
    each keeping its own positions (0, 1, ...). No attention mask: transformers then reads the packing
    from the positions and lets each example attend to itself only (a causal mask per example). The
    padding at a row's end is one more such example, with IGNORE labels: nothing attends to it."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(idx.tolist(), key=lambda i: -int(enc.lengths[i])):
        n = int(enc.lengths[i])
        fit = next((r for r, free in enumerate(room) if free >= n), None)
        if fit is None:
            rows.append([])
            room.append(width)
            fit = len(rows) - 1
        rows[fit].append(i)
        room[fit] -= n
    span = width - min(room)
    ids = np.full((len(rows), span), pad_id, dtype=np.int64)
    labels = np.full((len(rows), span), IGNORE, dtype=np.int64)
    positions = np.zeros((len(rows), span), dtype=np.int64)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            n = int(enc.lengths[i])
            ids[r, at:at + n], labels[r, at:at + n] = enc.input_ids[i], enc.labels[i]
            positions[r, at:at + n] = np.arange(n)
            at += n
        positions[r, at:] = np.arange(span - at)
    return {"input_ids": torch.from_numpy(ids), "position_ids": torch.from_numpy(positions),
            "labels": torch.from_numpy(labels)}
