"""The backend interface: generation requests in, results out (possibly out of order)."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from seqdistill.config import GenerateConfig


@dataclass
class Request:
    """Samples still missing for one prompt: `sample_indices[i]` is the i-th sample the backend returns."""

    prompt_id: str
    messages: list[dict[str, str]]
    sample_indices: list[int]

    @property
    def n(self) -> int:
        return len(self.sample_indices)


@dataclass
class Result:
    request: Request
    sample_index: int
    text: str
    finish_reason: str | None
    reasoning: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """One method to implement: `generate`. Backends only generate; the stage keys, writes and resumes."""

    name: str = "base"

    def __init__(self, cfg: GenerateConfig):
        self.cfg = cfg

    @property
    def model_name(self) -> str:
        return self.cfg.model or ""

    @abstractmethod
    def generate(self, requests: list[Request], stop: threading.Event) -> Iterator[Result]:
        """Yield one Result per requested sample as each is ready.

        Once `stop` is set, start no new work and finish (yielding) what is already in flight.
        Raise `BackendError` for failures the user must fix (auth, unreachable server, unknown model).
        """

    def failures(self) -> dict[str, int]:
        """Requests that failed and were skipped (retried on the next run), by error class."""
        return {}

    def close(self) -> None:  # noqa: B027  (optional hook: most backends hold nothing to release)
        """Release resources (threads, sessions, GPU memory)."""
