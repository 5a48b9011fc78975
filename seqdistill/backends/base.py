"""The backend interface: generation requests in, results out (possibly out of order)."""

from __future__ import annotations

import json
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from seqdistill.config import GenerateConfig
from seqdistill.records import Logprobs

_THINK = re.compile(r"^\s*<think>(.*?)(?:</think>|$)(.*)$", re.DOTALL)


@dataclass
class Request:
    """Samples still missing for one prompt: `sample_indices[i]` is the i-th sample the backend returns."""

    prompt_id: str
    messages: list[dict[str, Any]]
    sample_indices: list[int]
    tools: list[dict[str, Any]] | None = None  # OpenAI-style function definitions the teacher may call

    @property
    def n(self) -> int:
        return len(self.sample_indices)

    def only(self, sample_indices: list[int]) -> Request:
        """The same request for some of its samples (a retry, a failure's record)."""
        return replace(self, sample_indices=list(sample_indices))


@dataclass
class Result:
    request: Request
    sample_index: int
    text: str
    finish_reason: str | None
    reasoning: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    logprobs: Logprobs | None = None  # the teacher's token logprobs (and top-k), when asked for
    tool_calls: list[dict[str, Any]] | None = None  # the tools the teacher calls (OpenAI's shape), unchecked


@dataclass
class Failure:
    """A request that failed after its retries: counted by class, left missing, retried on the next run."""

    request: Request
    kind: str  # error class: http_500, http_429, timeout, connection, bad_response, short_response
    detail: str


class Backend(ABC):
    """One method to implement: `generate`. Backends only generate; the stage keys, writes and resumes."""

    name: str = "base"

    def __init__(self, cfg: GenerateConfig):
        self.cfg = cfg

    @property
    def model_name(self) -> str:
        return self.cfg.model or ""

    @abstractmethod
    def generate(self, requests: list[Request], stop: threading.Event) -> Iterator[Result | Failure]:
        """Yield one Result per requested sample as each is ready, or a Failure for a request given up on.

        Once `stop` is set, start no new work and finish (yielding) what is already in flight.
        Raise `BackendError` for failures the user must fix (auth, unreachable server, unknown model).
        """

    def stats(self) -> dict[str, Any]:
        """Backend counters for progress and the manifest (retries by class, current concurrency, ...)."""
        return {}

    def close(self) -> None:  # noqa: B027  (optional hook: most backends hold nothing to release)
        """Release resources (threads, sessions, GPU memory)."""


def split_think(text: str) -> tuple[str | None, str]:
    """Inline `<think>…</think>answer` -> (reasoning, answer); an unclosed think block is all reasoning.

    >>> split_think("<think>6*7</think>\\n42")
    ('6*7', '42')
    >>> split_think("42")
    (None, '42')
    """
    m = _THINK.match(text)
    if not m:
        return None, text
    return m.group(1).strip(), m.group(2).strip()


def wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as OpenAI's API (and vLLM's `LLM.chat`) take them: tool-call arguments as JSON strings.

    The record holds arguments as objects (what chat templates render); the API's messages carry strings.
    """
    if not any(m.get("tool_calls") for m in messages):
        return messages
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [
                {**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
                if not isinstance(c["function"].get("arguments"), str)
                else c
                for c in m["tool_calls"]
            ]
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out
