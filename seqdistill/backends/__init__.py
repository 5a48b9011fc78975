"""Generation backends behind one small interface; heavy imports happen only when one is selected."""

from __future__ import annotations

import importlib

from seqdistill.backends.base import Backend, Failure, Request, Result
from seqdistill.config import GenerateConfig
from seqdistill.errors import ConfigError
from seqdistill.extras import require

__all__ = ["Backend", "Failure", "Request", "Result", "BACKENDS", "create_backend", "resolve_backend"]

BACKENDS = {
    "openai": "seqdistill.backends.openai_compat:OpenAIBackend",
    "transformers": "seqdistill.backends.transformers_local:TransformersBackend",
    "vllm": "seqdistill.backends.vllm_offline:VLLMBackend",
}
EXTRAS = {"vllm": "vllm", "transformers": "train"}
REQUIRES = {"transformers": ("torch", "transformers"), "vllm": ("vllm",)}  # checked before the backend is built


def resolve_backend(name: str) -> str:
    """`auto` is vLLM in-process when vllm is installed and a GPU is visible, else transformers."""
    if name != "auto":
        return name
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "transformers"
    import torch

    return "vllm" if torch.cuda.is_available() else "transformers"


def create_backend(cfg: GenerateConfig) -> Backend:
    """Instantiate the backend named by `cfg.backend`; unknown names and missing extras are one-line errors."""
    target = BACKENDS.get(cfg.backend)
    if target is None:
        raise ConfigError(f"unknown backend {cfg.backend!r}; choose one of: {', '.join(BACKENDS)}")
    if cfg.backend in REQUIRES:
        require(f"backend {cfg.backend}", *REQUIRES[cfg.backend])
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        extra = EXTRAS.get(cfg.backend, cfg.backend)
        raise ConfigError(
            f"backend {cfg.backend} needs `pip install 'seqdistill[{extra}]'` ({e.name or e} is not installed)"
        ) from None
    return getattr(module, cls_name)(cfg)
