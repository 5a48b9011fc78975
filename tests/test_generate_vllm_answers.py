"""The in-process vllm backend routes its answers through the same validation step as the others.

vLLM needs a GPU (or its own CPU build), so `vllm` is a stand-in module here: `LLM.chat` returns the
objects vLLM returns (outputs with `text`, `token_ids`, `finish_reason`), with chosen answers malformed.
The real engine is covered by the opt-in tests/integration/test_vllm_offline.py.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from types import SimpleNamespace

import pytest

from seqdistill.backends.base import Failure, Request, Result
from seqdistill.config import GenerateConfig

ANSWERS = {"good": "The answer is 4.", "empty": "", "blank": "  \n", "surrogate": "bad \ud800 text"}


class _LLM:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def chat(self, conversations, params, use_tqdm=False):
        outs = []
        for messages, p in zip(conversations, params, strict=True):
            text = ANSWERS[messages[-1]["content"]]
            completions = [
                SimpleNamespace(text=text, token_ids=[1] * len(text.split()), finish_reason="stop", logprobs=None)
                for _ in range(p.n)
            ]
            outs.append(SimpleNamespace(outputs=completions, prompt_token_ids=[1, 2, 3]))
        return outs


@pytest.fixture
def backend(monkeypatch):
    fake = types.ModuleType("vllm")
    fake.LLM = _LLM
    fake.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.delitem(sys.modules, "seqdistill.backends.vllm_offline", raising=False)
    module = importlib.import_module("seqdistill.backends.vllm_offline")
    yield module.VLLMBackend(GenerateConfig(backend="vllm", model="some/model"))
    sys.modules.pop("seqdistill.backends.vllm_offline", None)


def test_vllm_answers_are_validated(backend):
    requests = [Request(name, [{"role": "user", "content": name}], [0, 1]) for name in ANSWERS]
    items = list(backend.generate(requests, threading.Event()))
    outcome = {(i.request.prompt_id, i.sample_index if isinstance(i, Result) else tuple(i.request.sample_indices)):
               (i.text if isinstance(i, Result) else i.kind) for i in items}  # fmt: skip
    assert outcome == {
        ("good", 0): "The answer is 4.",
        ("good", 1): "The answer is 4.",
        **{(name, (j,)): "empty_answer" for name in ("empty", "blank") for j in range(2)},
        **{("surrogate", (j,)): "bad_encoding" for j in range(2)},
    }
    assert all(isinstance(i, Result | Failure) for i in items)
