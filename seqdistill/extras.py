"""Optional extras: which `pip install 'seqdistill[...]'` brings a missing library, said in one line.

The core install (`pip install seqdistill`) runs generate over HTTP, filter, eval against a server and report;
training, the transformers backend and tokenizer-based token counts need `[train]`, the in-process vLLM backend
`[vllm]`, 4-bit students `[qlora]` (docs/install.md). Checks use `importlib.util.find_spec`, which imports
nothing, so asking costs no import time.

Limits: a library that is installed but broken (an ABI mismatch, a missing CUDA library) passes the check
and fails at import with its own error.
"""

from __future__ import annotations

import importlib.util

from seqdistill.errors import ConfigError

# The libraries each extra adds (only the ones seqdistill imports).
TRAIN = ("torch", "transformers", "trl", "accelerate", "peft")
EXTRA_OF = {
    **dict.fromkeys(TRAIN, "train"),
    "gguf": "train",  # the bundled SmolLM2 checkpoint is a GGUF file
    "vllm": "vllm",
    "bitsandbytes": "qlora",
}


class MissingExtra(ConfigError):
    """A feature needs a library from an extra that is not installed."""


def installed(module: str) -> bool:
    """Whether `module` (a top-level package name) can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None


def missing_extra(feature: str, module: str) -> MissingExtra:
    """The one-line error for `feature` needing the missing `module`.

    >>> str(missing_extra("train", "torch"))
    "train needs `pip install 'seqdistill[train]'` (torch is not installed)"
    """
    extra = EXTRA_OF.get(module.split(".")[0], "train")
    return MissingExtra(f"{feature} needs `pip install 'seqdistill[{extra}]'` ({module} is not installed)")


def require(feature: str, *modules: str) -> None:
    """Raise `MissingExtra` for the first of `modules` that is not installed (default: the `[train]` ones)."""
    for module in modules or TRAIN:
        if not installed(module):
            raise missing_extra(feature, module)
