"""A trained trial's LoRA adapter on disk: `PeftModel.from_pretrained(base, DIR)` loads it, head included.

A classifier's head is trained in full but is not one of PEFT's modules_to_save wrappers (see
sweep.engine.models.load_model), so PEFT's own save_pretrained would leave it out. The adapter written here
names the modules trained in full in its config's `modules_to_save` and stores their weights under
the keys PEFT's loader maps into those wrappers (`base_model.model.<module>.<param>`, see peft's
utils/save_and_load.py, set_peft_model_state_dict): loaded into a fresh base model, the wrappers take
the trained head, and the forward pass uses it.
"""

from __future__ import annotations

import copy
import os
import secrets
import shutil
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from peft.utils import SAFETENSORS_WEIGHTS_NAME, get_peft_model_state_dict
from safetensors.torch import save_file

from sweep.core.errors import SweepError
from sweep.core.outfiles import prepare_dir
from sweep.core.schema import short

PREFIX = "base_model.model."  # how a PeftModel's parameter names start


def check_destination(dest: Path) -> Path:
    """The directory to write the adapter to, checked before any training: a symlink resolved to
    what it points at (an empty directory, or a new one where a dangling link points), since the
    adapter is renamed into place and a rename replaces the link, never writes through it. Refuse
    one that exists and is not an empty directory (nothing is ever overwritten); create its parent."""
    given = Path(dest)
    try:
        dest = given.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        why = getattr(e, "strerror", None) or "a symlink loop"
        raise SweepError(f"--adapter {short(str(given))} cannot be resolved ({why}); name a new or empty "
                         "directory") from e
    shown = short(str(given)) + (f" (a link to {short(str(dest))})" if given.is_symlink() else "")
    if dest.exists() and not dest.is_dir():
        raise SweepError(f"--adapter {shown} is a file; name a new or empty directory")
    if dest.is_dir() and any(dest.iterdir()):
        raise SweepError(f"--adapter {shown} exists and is not empty; name a new or empty "
                         "directory (nothing is overwritten)")
    prepare_dir(dest.parent)
    return dest


def head_modules(model: PeftModel) -> list[str]:
    """The modules that hold the parameters trained in full (relative to the transformers model,
    e.g. classifier.dense and classifier.out_proj for RoBERTa), outermost only."""
    owners = sorted({name.removeprefix(PREFIX).rpartition(".")[0]
                     for name in getattr(model, "trained_in_full", ())})
    outer = [m for m in owners if not any(m.startswith(o + ".") for o in owners if o != m)]
    for name in outer:
        module = model.get_base_model().get_submodule(name)
        if any(isinstance(m, LoraLayer) for m in module.modules()):
            raise SweepError(f"{name} is trained in full and also carries LoRA; such an adapter cannot be "
                             "saved for PEFT to load (leave it out of --target-modules)")
    return outer


def adapter_weights(model: PeftModel, heads: list[str]) -> dict[str, torch.Tensor]:
    """The LoRA weights PEFT saves, and every weight of the modules trained in full."""
    weights = get_peft_model_state_dict(model)
    state = model.state_dict()
    for head in heads:
        weights.update({k: v for k, v in state.items() if k.startswith(f"{PREFIX}{head}.")})
    # Own, contiguous CPU copies: safetensors refuses tensors that share memory.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()}


def save_adapter(model: PeftModel, tokenizer, dest: Path, about: str = "") -> Path:
    """Write the adapter, its tokenizer and a README (how to load it, and `about`, a line on where
    it came from) to `dest`, which must be new or an empty directory.

    Written into a temporary directory beside `dest`, then renamed into place: a reader never sees
    half an adapter, and a `dest` that filled up meanwhile is not overwritten.
    """
    dest = Path(dest)
    heads = head_modules(model)
    config = copy.deepcopy(model.peft_config[model.active_adapter])
    config.modules_to_save = heads or None
    config.inference_mode = True
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}"
    try:
        tmp.mkdir()  # (not mkdtemp: its mode 700 would become the adapter directory's)
        config.save_pretrained(str(tmp))
        weights = adapter_weights(model, heads)
        save_file(weights, str(tmp / SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(readme(model, dest, heads, about), encoding="utf-8")
        try:
            os.rename(tmp, dest)  # replaces an empty directory, never a non-empty one
        except OSError as e:
            raise SweepError(f"cannot write the adapter to {short(str(dest))}: "
                             f"{'it is no longer empty' if dest.is_dir() else e.strerror or e}") from e
    except OSError as e:
        raise SweepError(f"cannot write the adapter to {short(str(dest))}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_code(model: PeftModel, dest: Path) -> str:
    """Python that loads the adapter in `dest` onto a fresh base model, as the trained model was."""
    base = model.get_base_model()
    path = base.name_or_path
    if type(base).__name__.endswith("ForSequenceClassification"):
        c = base.config
        auto = "AutoModelForSequenceClassification"
        args = (f"{path!r}, num_labels={c.num_labels}, id2label={dict(c.id2label)!r},\n"
                f"    label2id={dict(c.label2id)!r}, problem_type={c.problem_type!r}")
    else:
        auto, args = "AutoModelForCausalLM", repr(path)
    pad = base.config.pad_token_id
    pad_line = [] if pad is None else [f"base.config.pad_token_id = {pad}  # what the trial padded with"]
    return "\n".join([
        "from peft import PeftModel",
        f"from transformers import AutoTokenizer, {auto}",
        "",
        f"base = {auto}.from_pretrained({args})",
        *pad_line,
        f"model = PeftModel.from_pretrained(base, {str(dest)!r})",
        f"tokenizer = AutoTokenizer.from_pretrained({str(dest)!r})",
    ])


def readme(model: PeftModel, dest: Path, heads: list[str], about: str) -> str:
    head = (f"\nThe modules trained in full besides LoRA ({', '.join(heads)}) are saved here as PEFT "
            "`modules_to_save`, so `from_pretrained` restores them; their fresh copies in `base` are "
            "not used.\n" if heads else "")
    return (f"# LoRA+ adapter\n\n{about}\n\n```python\n{load_code(model, dest)}\n```\n{head}\n"
            "`model.merge_and_unload()` gives a plain transformers model with the adapter merged in.\n")
