"""export: the best trial of a study's trials frame, the JSON that `trial --config` reads back, PEFT
code that builds the same LoRA+ optimizer, axolotl and LLaMA-Factory configs, and the trained adapter."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf
import yaml
from commands import invoke
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from sweep.analysis import report
from sweep.analysis.export import (
    BestTrial,
    axolotl_yaml,
    best_trial,
    llama_factory_yaml,
    peft_snippet,
    render,
)
from sweep.core.errors import SweepError
from sweep.core.metrics import compute
from sweep.data.batches import collate, encode_task
from sweep.data.config import TrialConfig
from sweep.data.lm_batches import encode_lm
from sweep.data.lm_tasks import load_lm_task
from sweep.data.tasks import load_task
from sweep.engine.adapters import save_adapter
from sweep.engine.lm_eval import token_loss
from sweep.engine.models import pad_token_id, resolve_model_path
from sweep.engine.precision import autocast
from sweep.engine.train import run_trial


def trials(*rows: tuple) -> pd.DataFrame:
    """A trials frame (the columns sweep.analysis.report and export read) from (number, state, value,
    config)."""
    return pd.DataFrame([
        {"study": "s", "model": "m", "task": "t", "metric_name": "accuracy", "number": n, "state": state,
         "value": value, "eta_a": 1e-3, "lambda": 4.0, "rank": 8, "init": "standard",
         "config": TrialConfig(eta_a=1e-3 * (n + 1)).to_dict() if config is True else config}
        for n, state, value, config in rows
    ])


def test_the_best_is_the_highest_finite_complete_value_and_ties_go_to_the_earlier_trial():
    frame = trials((0, "COMPLETE", 0.7, True), (1, "PRUNED", 0.95, True), (2, "COMPLETE", math.inf, True),
                   (3, "COMPLETE", 0.8, True), (4, "COMPLETE", 0.8, True), (5, "FAIL", math.nan, None))
    best = best_trial(frame, "s")
    assert (best.trial, best.value, best.metric_name) == (3, 0.8, "accuracy")
    assert best.config == TrialConfig(eta_a=4e-3)


def test_a_study_without_a_complete_trial_has_nothing_to_export():
    with pytest.raises(SweepError, match="study 's' has no complete trial yet"):
        best_trial(trials((0, "PRUNED", 0.9, True), (1, "FAIL", math.nan, None)), "s")


def test_a_best_trial_without_a_config_is_another_tools_study():
    with pytest.raises(SweepError, match=r"was not written by loraplus-sweep: its best trial \(#1\)"):
        best_trial(trials((0, "COMPLETE", 0.5, True), (1, "COMPLETE", 0.9, None)), "s")


def test_a_damaged_stored_config_is_named_with_its_trial():
    with pytest.raises(SweepError, match=r"stored config of trial #0 of 's': rank must be an integer >= 1"):
        best_trial(trials((0, "COMPLETE", 0.5, {"rank": 0})), "s")


def test_the_exported_json_is_a_config_that_trial_reads_back(tmp_path):
    best = best_trial(trials((0, "COMPLETE", 0.5, True), (1, "COMPLETE", 0.6, True)), "s")
    path = tmp_path / "best.json"
    path.write_text(best.to_json())
    assert TrialConfig.from_file(path) == best.config == TrialConfig(eta_a=2e-3)
    assert '"trial": 1' in best.to_json() and '"metric_name": "accuracy"' in best.to_json()


def test_peft_snippet_builds_the_lora_plus_optimizer_of_the_config(tiny_model):
    cfg = TrialConfig(eta_a=2e-4, lam=8.0, rank=4, alpha=8.0, target_modules="query,value", weight_decay=0.01)
    scope = {"model": AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)}
    exec(peft_snippet(cfg), scope)
    names = {id(p): n for n, p in scope["model"].named_parameters()}
    lrs = {names[id(p)]: g["lr"] for g in scope["optimizer"].param_groups for p in g["params"]}
    assert isinstance(scope["optimizer"], torch.optim.AdamW)
    a = [lr for n, lr in lrs.items() if "lora_A" in n]
    b = [lr for n, lr in lrs.items() if "lora_B" in n]
    assert a and a == pytest.approx([2e-4] * len(a)) and b and b == pytest.approx([1.6e-3] * len(b))
    module = scope["model"].base_model.model.bert.encoder.layer[0].attention.self.query
    assert module.r["default"] == 4 and module.scaling["default"] == 2.0


def test_peft_snippet_names_the_modules_a_trial_without_target_modules_trained(tiny_model):
    """The architecture's default (query, value for BERT) as a list PEFT takes, never a placeholder."""
    cfg = TrialConfig(model=tiny_model, rank=4)
    scope = {"model": AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)}
    exec(peft_snippet(cfg), scope)
    lora = {n.split(".")[-4] for n, _ in scope["model"].named_parameters() if "lora_A" in n}
    assert lora == {"query", "value"}
    assert "target_modules=['query', 'value']" in peft_snippet(cfg)
    assert "target_modules=None" in peft_snippet(cfg.replace(model="/nonexistent/model"))


# --- the YAML configs of axolotl and LLaMA-Factory ------------------------------------------------

def _best(cfg: TrialConfig) -> BestTrial:
    return BestTrial("s", 3, 0.8125, "accuracy", cfg)


@pytest.fixture
def tuned(tiny_model, toy_csv) -> TrialConfig:
    """A classification trial with every mapped setting away from its default."""
    return TrialConfig(model=tiny_model, task=toy_csv, eta_a=2e-4, lam=8.0, rank=4, alpha=8.0, dropout=0.05,
                       embedding_lr=1e-5, batch_size=32, micro_batch_size=8, epochs=2.0, warmup_ratio=0.1,
                       schedule="cosine", weight_decay=0.01, seed=7, max_length=64, precision="bf16",
                       betas=(0.9, 0.98), max_grad_norm=0.5)


def test_axolotl_yaml_holds_the_trial_in_axolotl_keys(tuned):
    doc = yaml.safe_load(axolotl_yaml(_best(tuned)))
    assert doc == {
        "base_model": tuned.model, "adapter": "lora", "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.05,
        "lora_target_modules": ["query", "value"], "peft_use_dora": False, "peft_use_rslora": False,
        "learning_rate": 2e-4, "loraplus_lr_ratio": 8.0, "loraplus_lr_embedding": 1e-5,
        "optimizer": "adamw_torch", "adam_beta1": 0.9, "adam_beta2": 0.98, "weight_decay": 0.01,
        "max_grad_norm": 0.5, "lr_scheduler": "cosine", "warmup_ratio": 0.1,
        "micro_batch_size": 8, "gradient_accumulation_steps": 4, "num_epochs": 2.0,
        "sequence_len": 64, "seed": 7, "bf16": True, "output_dir": "saves/s-trial-3",
    }
    assert doc["learning_rate"] * doc["loraplus_lr_ratio"] == pytest.approx(tuned.eta_b)


def test_llama_factory_yaml_holds_the_trial_in_llama_factory_keys(tuned):
    doc = yaml.safe_load(llama_factory_yaml(_best(tuned)))
    assert doc == {
        "model_name_or_path": tuned.model, "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.05, "lora_target": "query,value",
        "use_dora": False, "use_rslora": False, "loraplus_lr_ratio": 8.0, "loraplus_lr_embedding": 1e-5,
        "cutoff_len": 64, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 4,
        "learning_rate": 2e-4, "num_train_epochs": 2.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
        "weight_decay": 0.01, "adam_beta1": 0.9, "adam_beta2": 0.98, "max_grad_norm": 0.5, "seed": 7,
        "bf16": True, "output_dir": "saves/s-trial-3",
    }


@pytest.mark.parametrize("fmt", ["axolotl", "llama-factory"])
def test_the_yaml_names_no_data_set_and_says_where_the_users_goes(tuned, fmt):
    text = render(_best(tuned), fmt)
    doc = yaml.safe_load(text)
    assert not {"datasets", "dataset", "template"} & set(doc)
    key = "datasets" if fmt == "axolotl" else "dataset"
    assert f"\n# {key}:" in text and f"the trial trained on {tuned.task}" in text.replace("\n#   ", " ")
    assert "does not\n# fine-tune" in text  # a classification trial says the tool trains no classifier


@pytest.mark.parametrize("fmt", ["axolotl", "llama-factory"])
def test_settings_a_tool_cannot_express_are_comments_not_dropped(tuned, fmt):
    cfg = tuned.replace(init="reversed", head_lr=3e-3, alpha=6.5, max_grad_norm=None, precision="fp32",
                        schedule="constant", max_steps=50, batch_size=30, micro_batch_size=8)
    text = render(_best(cfg), fmt)
    doc = yaml.safe_load(text)
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "reversed" in comments and "B random and A zero" in comments
    assert "head_lr: the trial trained the classifier head at 0.003" in comments
    assert "lora_alpha: 6.5" in comments and "lora_alpha" not in doc  # the tools take integers only
    assert "30 examples in 4 forward passes" in comments
    scheduler = "lr_scheduler" if fmt == "axolotl" else "lr_scheduler_type"
    epochs = "num_epochs" if fmt == "axolotl" else "num_train_epochs"
    assert doc[scheduler] == "constant_with_warmup" and doc["max_steps"] == 50 and epochs not in doc
    assert doc["max_grad_norm"] == 0.0 and doc["bf16"] is False


@pytest.mark.parametrize("fmt", ["axolotl", "llama-factory"])
def test_precision_auto_is_written_as_fp32_as_a_trial_on_a_gpu_runs(tuned, fmt):
    text = render(_best(tuned.replace(precision="auto")), fmt)
    assert yaml.safe_load(text)["bf16"] is False
    assert "precision auto: fp32, as a trial runs on a GPU" in text.replace("\n#   ", " ")


@pytest.mark.parametrize("fmt", ["axolotl", "llama-factory"])
def test_an_embedded_model_is_written_as_its_local_path_with_a_comment(fmt):
    text = render(_best(TrialConfig(model="minilm-l6", rank=4)), fmt)
    key = "base_model" if fmt == "axolotl" else "model_name_or_path"
    assert yaml.safe_load(text)[key] == resolve_model_path("minilm-l6")
    assert "# the model 'minilm-l6' embedded in loraplus-sweep" in text


def test_names_in_comments_cannot_add_keys_or_break_the_yaml(tiny_model, tmp_path):
    """A study or task name is data: YAML line breaks (\\u2028, \\x85) and control characters in it
    would end a comment early, or make the file unreadable."""
    task = tmp_path / "a\u2028lora_r: 99\x85b\x1b.csv"
    cfg = TrialConfig(model=tiny_model, task=str(task), rank=4)
    best = BestTrial("s\u2028seed: 5", 0, 0.5, "accuracy", cfg)
    for fmt in ("axolotl", "llama-factory"):
        doc = yaml.safe_load(render(best, fmt))
        assert doc.get("lora_r", 4) == 4 and doc.get("lora_rank", 4) == 4 and doc["seed"] == 0


def test_export_format_prints_the_config_and_still_writes_the_json(bert_study, tmp_path):
    _, db = bert_study
    for fmt, key in (("axolotl", "loraplus_lr_ratio"), ("llama-factory", "loraplus_lr_ratio")):
        r = invoke("export", "toy", "--storage", f"sqlite:///{db}", "--out", tmp_path / f"{fmt}.json",
                   "--format", fmt)
        assert r.exit_code == 0, r.output
        stored = json.loads((tmp_path / f"{fmt}.json").read_text())
        assert yaml.safe_load(r.stdout)[key] == stored["config"]["lambda"]
    bad = invoke("export", "toy", "--storage", f"sqlite:///{db}", "--format", "toml")
    assert bad.exit_code == 2 and bad.stderr.strip().count("\n") == 0
    assert "--format must be one of peft, axolotl, llama-factory" in bad.stderr


# --- causal-LM trials ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny-llama")
    config = tf.LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    tf.LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


def test_peft_snippet_of_a_causal_lm_trial_puts_lora_on_every_linear_layer(tiny_llama):
    cfg = TrialConfig(model=tiny_llama, kind="causal-lm", task="rows.jsonl", rank=4, lam=8.0, eta_a=1e-4)
    snippet = peft_snippet(cfg)
    assert 'task_type="CAUSAL_LM"' in snippet and "target_modules='all-linear'" in snippet
    scope = {"model": tf.AutoModelForCausalLM.from_pretrained(tiny_llama)}
    exec(snippet, scope)
    lora = {n.split(".")[-4] for n, _ in scope["model"].named_parameters() if "lora_A" in n}
    assert lora == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.mark.parametrize("fmt, key, value", [("axolotl", "lora_target_linear", True),
                                             ("llama-factory", "lora_target", "all")])
def test_a_causal_lm_trial_targets_all_linear_layers_in_the_yaml(tiny_llama, fmt, key, value):
    text = render(_best(TrialConfig(model=tiny_llama, kind="causal-lm", task="rows.jsonl", rank=4)), fmt)
    doc = yaml.safe_load(text)
    assert doc[key] == value and "lora_target_modules" not in doc
    assert "sequence classifier" not in text


# --- export --adapter: the best trial trained again, saved for PeftModel.from_pretrained -----------

def _headless(kind: str, path, tokenizer) -> str:
    """A tiny random encoder saved without a head, with the embedded model's WordPiece tokenizer."""
    common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=128)
    config = (tf.BertConfig(**common) if kind == "bert"
              else tf.RobertaConfig(**common, pad_token_id=tokenizer.pad_token_id))
    torch.manual_seed(0)
    tf.AutoModel.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _study(model: str, task: str, db) -> None:
    r = invoke("run", "--model", model, "--task", task, "--eta-a", "3e-3", "--lambda", "1:16", "--rank", "4",
               "--epochs", 1, "--max-length", 32, "--batch-size", 16, "--device", "cpu",
               "--sampler", "random", "--storage", f"sqlite:///{db}", "--study-name", "toy", "--in-process",
               "--n-trials", 2)
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def bert_study(tiny_model, toy_csv, tmp_path_factory):
    db = tmp_path_factory.mktemp("bert-study") / "loraplus.db"
    _study(tiny_model, toy_csv, db)
    return tiny_model, db


@pytest.fixture(scope="module")
def roberta_study(toy_csv, tmp_path_factory):
    tokenizer = tf.AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"))
    model = _headless("roberta", tmp_path_factory.mktemp("tiny-roberta"), tokenizer)
    db = tmp_path_factory.mktemp("roberta-study") / "loraplus.db"
    _study(model, toy_csv, db)
    return model, db


def _validation(cfg: TrialConfig) -> tuple[list[dict], np.ndarray]:
    """The trial's validation split as model inputs (a few batches) and its labels."""
    tokenizer = tf.AutoTokenizer.from_pretrained(cfg.model)
    _, splits = encode_task(load_task(cfg.task), tokenizer, cfg.max_length)
    enc = splits["validation"]
    parts = np.array_split(np.arange(len(enc)), 4)
    batches = [collate(enc, idx, tokenizer.pad_token_id, False) for idx in parts]
    for b in batches:
        b.pop("labels")
    return batches, np.asarray(enc.labels)


@torch.inference_mode()
def _logits(model, batches: list[dict]) -> torch.Tensor:
    model.eval()
    return torch.cat([model(**b).logits for b in batches])


def _load_as_readme_says(folder) -> torch.nn.Module:
    """Run the loading code of the adapter's README, as a user would."""
    code = (folder / "README.md").read_text().split("```python\n")[1].split("```")[0]
    scope: dict = {}
    exec(code, scope)
    return scope["model"]


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_export_adapter_loads_with_peft_and_gives_the_trained_models_logits(arch, request, tmp_path):
    """BERT's head is one Linear, RoBERTa's two nested ones: neither is a PEFT modules_to_save wrapper
    while training, and both come back from the adapter."""
    _, db = request.getfixturevalue(f"{arch}_study")
    dest = tmp_path / "adapter"
    r = invoke("export", "toy", "--storage", f"sqlite:///{db}", "--out", tmp_path / "best.json",
               "--adapter", dest)
    assert r.exit_code == 0, r.output
    stored = json.loads((tmp_path / "best.json").read_text())
    assert {p.name for p in dest.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                 "tokenizer_config.json", "README.md"}
    heads = json.loads((dest / "adapter_config.json").read_text())["modules_to_save"]
    assert heads == (["classifier"] if arch == "bert" else ["classifier.dense", "classifier.out_proj"])

    # The trial once more, in this process: its trained model is what the adapter must reproduce.
    cfg = TrialConfig.from_file(tmp_path / "best.json")
    batches, labels = _validation(cfg)
    trained = {}

    def keep(model, tokenizer):
        trained["logits"] = _logits(model, batches)
        model.save_pretrained(tmp_path / "plain")  # PEFT's own save: LoRA alone

    run_trial(cfg, on_end=keep)
    loaded = _load_as_readme_says(dest)
    logits = _logits(loaded, batches)
    torch.testing.assert_close(logits, trained["logits"], atol=1e-5, rtol=1e-4)
    accuracy = compute(("accuracy",), logits.argmax(-1).numpy(), labels)["accuracy"]
    assert stored["metric_name"] == "accuracy" and accuracy == pytest.approx(stored["value"])
    # Without the head in the adapter, the fresh head of the base model would answer instead.
    base = tf.AutoModelForSequenceClassification.from_pretrained(cfg.model, num_labels=2)
    plain = _logits(PeftModel.from_pretrained(base, tmp_path / "plain"), batches)
    assert not torch.allclose(plain, trained["logits"], atol=1e-3)


def test_export_adapter_refuses_a_directory_that_is_not_empty(bert_study, tmp_path):
    _, db = bert_study
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    r = invoke("export", "toy", "--storage", f"sqlite:///{db}", "--out", tmp_path / "b.json",
               "--adapter", full)
    assert r.exit_code == 2 and r.stderr.strip().count("\n") == 0, r.output
    assert "exists and is not empty" in r.stderr and "Traceback" not in r.output
    assert [p.name for p in full.iterdir()] == ["keep.txt"] and (full / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "b.json").exists()  # refused before any work
    afile = tmp_path / "a-file"
    afile.write_text("x")
    r = invoke("export", "toy", "--storage", f"sqlite:///{db}", "--adapter", afile)
    assert r.exit_code == 2 and "is a file" in r.stderr and afile.read_text() == "x"


def test_save_adapter_never_replaces_a_directory_filled_meanwhile(tiny_model, toy_csv, tmp_path):
    """The check before training can be overtaken: the final rename refuses a non-empty directory."""
    dest = tmp_path / "adapter"

    def fill_then_save(model, tokenizer):
        dest.mkdir()
        (dest / "other.bin").write_text("someone else's")
        with pytest.raises(SweepError, match="is no longer empty"):
            save_adapter(model, tokenizer, dest)

    run_trial(TrialConfig(model=tiny_model, task=toy_csv, rank=4, max_steps=1, batch_size=4, max_length=16,
                          train_limit=8, eval_limit=8, device="cpu"), on_end=fill_then_save)
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temporary directory left behind
    assert [p.name for p in dest.iterdir()] == ["other.bin"]


def _byte_tokenizer(folder) -> tf.PreTrainedTokenizerBase:
    """One token per byte and an EOS (256): a tokenizer a tiny decoder can be built for."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = 256
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return tf.GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


@pytest.fixture(scope="module")
def lm_study(tmp_path_factory):
    """A study of one causal-LM trial: a tiny random Llama on prompt/completion rows."""
    root = tmp_path_factory.mktemp("lm-study")
    model = root / "llama"
    config = tf.LlamaConfig(vocab_size=257, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64,
                            bos_token_id=256, eos_token_id=256)
    torch.manual_seed(0)
    tf.LlamaForCausalLM(config).save_pretrained(model)
    _byte_tokenizer(model).save_pretrained(model)
    rows = root / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"Q{i % 7}: ", "completion": f"A{i * 3 % 7}"}) + "\n"
                            for i in range(60)))
    r = invoke("run", "--model", model, "--task", rows, "--eta-a", "3e-3", "--lambda", "1:16", "--rank", "4",
               "--epochs", 2, "--max-length", 32, "--batch-size", 8, "--device", "cpu",
               "--storage", f"sqlite:///{root / 'loraplus.db'}", "--study-name", "lm", "--in-process",
               "--n-trials", 1)
    assert r.exit_code == 0, r.output
    return root / "loraplus.db"


def test_export_adapter_of_a_causal_lm_gives_the_same_validation_loss(lm_study, tmp_path):
    dest = tmp_path / "adapter"
    r = invoke("export", "lm", "--storage", f"sqlite:///{lm_study}", "--out", tmp_path / "best.json",
               "--adapter", dest)
    assert r.exit_code == 0, r.output
    stored = json.loads((tmp_path / "best.json").read_text())
    cfg = TrialConfig.from_file(tmp_path / "best.json")
    assert json.loads((dest / "adapter_config.json").read_text())["modules_to_save"] is None  # LoRA alone

    loaded = _load_as_readme_says(dest)
    tokenizer = tf.AutoTokenizer.from_pretrained(dest)
    validation = encode_lm(load_lm_task(cfg.task).validation, tokenizer, cfg.max_length)

    def loss(model) -> float:  # in the trial's precision (auto: bf16 on a CPU with native bf16)
        with autocast(cfg, torch.device("cpu")):
            return token_loss(model, validation, pad_token_id(tokenizer), 8, torch.device("cpu")).loss

    assert stored["metric_name"] == "loss" and loss(loaded) == pytest.approx(stored["value"], rel=1e-5)
    untrained = tf.AutoModelForCausalLM.from_pretrained(cfg.model)
    assert abs(loss(untrained) - stored["value"]) > 1e-3  # the adapter is what gives that loss


def test_export_takes_the_trial_the_report_recommends_unless_asked_for_the_best():
    """Three trials of equal value at eta_B 1e-4, 1e-3 and 1e-2: the best is the earliest (an edge of the
    plateau), the recommended one its centre, as the report's summary names it."""
    frame = trials(*[(n, "COMPLETE", 0.8, True) for n in range(3)])
    frame["eta_a"], frame["lambda"] = [1e-4, 1e-4, 1e-3], [1.0, 10.0, 10.0]
    assert report.recommendations(frame)["recommended_trial"].tolist() == [1]
    recommended = best_trial(frame, "s")
    assert (recommended.trial, recommended.picked) == (1, "recommended")
    assert json.loads(recommended.to_json())["picked"] == "recommended"
    assert "the recommended trial (#1)" in recommended.describe()
    best = best_trial(frame, "s", pick="best")
    assert (best.trial, best.picked) == (0, "best")


def test_an_unknown_pick_is_one_usage_line(tmp_path):
    r = invoke("export", "s", "--pick", "worst", "--storage", f"sqlite:///{tmp_path}/none.db")
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: --pick must be one of recommended, best; got 'worst'"
    assert not (tmp_path / "none.db").exists()
