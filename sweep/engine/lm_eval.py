"""Causal-LM evaluation: the loss per trained token over a data set, and the likelihood of candidate
answers (classification as instruction)."""

from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from sweep.core.errors import SweepError
from sweep.core.metrics import bootstrap
from sweep.data.batches import eval_batches
from sweep.data.lm_batches import IGNORE, ChoiceEncoded, LMEncoded, collate_lm


@dataclass(frozen=True)
class TokenLoss:
    """Negative log-likelihood summed over every trained token of a data set, and their number (and
    each example's, for the loss's standard error)."""

    nll: float
    tokens: int
    example_nll: np.ndarray | None = field(default=None, compare=False, repr=False)
    example_tokens: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def loss(self) -> float:
        """Per token over the whole set: not a mean of per-batch means, which would weigh a token of
        a short batch more than one of a long batch."""
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else math.inf

    def standard_error(self, perplexity: bool = False) -> float:
        """Of the loss (or the perplexity) per token: a bootstrap over the examples, each resample's
        summed NLL over its summed tokens. NaN without the examples' figures."""
        nll, tokens = self.example_nll, self.example_tokens
        if nll is None or tokens is None:
            return math.nan

        def loss(i: np.ndarray) -> float:
            value = float(nll[i].sum()) / max(int(tokens[i].sum()), 1)
            return (math.exp(value) if value < 700 else math.inf) if perplexity else value

        return bootstrap(loss, len(nll))


@dataclass(frozen=True)
class ChoiceScores:
    loglik: tuple[np.ndarray, ...]  # per row: the log-likelihood of each candidate
    answer: np.ndarray  # per row: the index of the right candidate

    @property
    def predicted(self) -> np.ndarray:
        return np.array([int(np.argmax(s)) for s in self.loglik], dtype=np.int64)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predicted == self.answer))

    def standard_error(self) -> float:
        right = self.predicted == self.answer
        return bootstrap(lambda i: float(right[i].mean()), len(right))


def token_loss(model, enc: LMEncoded, pad_id: int, batch_size: int, device: torch.device) -> TokenLoss:
    """The loss per trained token over `enc` (validation loss; perplexity is its exp)."""
    nll, tokens = example_nll(model, enc, pad_id, batch_size, device)
    if tokens.sum() == 0:
        raise SweepError("no token to evaluate: every label is masked (is max_length too small?)")
    return TokenLoss(float(nll.sum()), int(tokens.sum()), nll, tokens)


def score_choices(model, choices: ChoiceEncoded, pad_id: int, batch_size: int,
                  device: torch.device) -> ChoiceScores:
    """Each candidate's log-likelihood given its prompt: the sum over the tokens a row completed by
    it trains on (its own tokens and the end of turn or EOS after them, so a candidate that is the
    start of a longer answer is not the whole answer), and the accuracy of the argmax."""
    nll, _ = example_nll(model, choices.candidates, pad_id, batch_size, device)
    bounds = np.cumsum(np.bincount(choices.row, minlength=len(choices)))[:-1]
    return ChoiceScores(tuple(np.split(-nll, bounds)), choices.answer)


def example_nll(model, enc: LMEncoded, pad_id: int, batch_size: int,
                device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Per example: the negative log-likelihood summed over its trained tokens, and their number."""
    nll = np.zeros(len(enc), dtype=np.float64)
    tokens = np.zeros(len(enc), dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        for idx in eval_batches(enc.lengths, batch_size):
            batch = {k: v.to(device) for k, v in collate_lm(enc, idx, pad_id).items()}
            batch_nll, batch_tokens = batch_nll_per_example(model, batch)
            nll[idx], tokens[idx] = batch_nll.cpu().numpy(), batch_tokens.cpu().numpy()
    finally:
        model.train(was_training)
    return nll, tokens


@torch.inference_mode()
def batch_nll_per_example(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL, trained tokens) of each example of a collated batch, without gradients."""
    return nll_per_example(model, batch)


# The loss meets the vocabulary-wide output layer this many logits at a time (16 MB in fp32): a whole
# micro-batch's logits, their log-softmax and gradients would otherwise be the largest activations of a
# causal LM (Llama-3's 128k vocabulary over 8 rows of 1,024 tokens: 4 GB per copy in fp32).
LOSS_CHUNK = 1 << 22


def nll_per_example(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL, trained tokens) of each example of a collated batch; training backpropagates
    through the NLL.

    Logits are computed only at the positions that predict a trained token in some example
    (`logits_to_keep`): a prompt's positions never meet the vocabulary-wide output layer. Where the
    model's logits are its output layer applied to its body's last hidden states (checked once per
    model: split_head), they are made LOSS_CHUNK at a time and, in training, made again in the
    backward pass instead of kept.
    """
    target = batch["labels"][:, 1:]  # position p predicts token p + 1
    trained = target != IGNORE
    keep = trained.any(0).nonzero().squeeze(1)
    if len(keep) == 0:
        zeros = torch.zeros(len(target), device=target.device)
        return zeros, zeros.long()
    inputs = {k: v for k, v in batch.items() if k != "labels"}  # a packed batch: positions, no mask
    target = target[:, keep]
    split = split_head(model, inputs)
    if split is None:
        logits = model(**inputs, logits_to_keep=keep).logits.float()
        nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")
    else:
        body, head = split
        nll = chunked_nll(head, body(**inputs)[0][:, keep], target)
    return nll.sum(1), (target != IGNORE).sum(1)


def _nll(head: torch.nn.Module, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), target, ignore_index=IGNORE, reduction="none")


def chunked_nll(head: torch.nn.Module, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The NLL of each target token (batch x positions) from the hidden states before the output
    layer `head`, at most LOSS_CHUNK logits at a time; with gradients, each chunk's logits are
    recomputed in the backward pass, so no chunk's outlive its loss."""
    rows, width = target.shape
    flat, goal = hidden.reshape(rows * width, -1), target.reshape(-1)
    vocab = getattr(head, "out_features", None) or head.weight.shape[0]
    step = max(1, LOSS_CHUNK // vocab)
    if len(goal) <= step:
        return _nll(head, flat, goal).view(rows, width)
    through = functools.partial(_nll, head)
    grad = torch.is_grad_enabled()
    parts = [checkpoint(through, flat[i:i + step], goal[i:i + step], use_reentrant=False) if grad
             else through(flat[i:i + step], goal[i:i + step]) for i in range(0, len(goal), step)]
    return torch.cat(parts).view(rows, width)


_splits: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def split_head(model, inputs: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(body, output layer) of a causal LM whose logits are exactly the output layer applied to the
    body's last hidden states, or None for one that does more in between (a logit soft-cap or scale,
    hidden states scaled before the head): tried once per model on a few tokens of `inputs`, in eval
    mode and without gradients, against the model's own logits."""
    if model in _splits:
        return _splits[model]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = getattr(base, "base_model", None), base.get_output_embeddings()
    found = None
    if body is not None and body is not base and head is not None:
        probe = {k: v[:1, :8] if v.dim() == 2 else v for k, v in inputs.items()}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                whole = model(**probe).logits.float()
                parts = head(body(**probe)[0]).float()
            if whole.shape == parts.shape and torch.allclose(
                    whole, parts, rtol=1e-3, atol=1e-3 * float(whole.abs().max().clamp(min=1))):
                found = (body, head)
        finally:
            model.train(was_training)
    _splits[model] = found
    return found
