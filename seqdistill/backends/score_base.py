"""The scoring interface: token ids in, the teacher's per-token logprobs out (possibly out of order).

A scoring backend is given `ScoreRequest`s (the teacher's prompt and the completion, as token ids of the
teacher's tokenizer) and yields, for each, a `ScoreResult` carrying a `records.Logprobs` of the completion
tokens, or a `Failure` (a request given up on after its retries; the next run retries it). It mirrors the
generation interface (backends/base.py): `score` is the one method to implement; the stage keys, writes
and resumes. Three backends: `openai` (a server that returns prompt logprobs: vLLM), `transformers` and
`vllm` (in-process). `seqdistill score` uses them, and so can on-policy training (the teacher's side).

Heavy imports (torch, transformers, vllm) happen only inside the backend that needs them.
"""

from __future__ import annotations

import importlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seqdistill.backends.base import Failure
from seqdistill.errors import BackendError, ConfigError
from seqdistill.records import Logprobs

__all__ = [
    "SCORE_BACKENDS",
    "Failure",
    "ScoreBackend",
    "ScoreRequest",
    "ScoreResult",
    "create_score_backend",
    "logprobs_from_steps",
    "vocab_texts",
]

SCORE_BACKENDS = {
    "openai": "seqdistill.backends.score_openai:OpenAIScoreBackend",
    "transformers": "seqdistill.backends.score_transformers:TransformersScoreBackend",
    "vllm": "seqdistill.backends.score_vllm:VLLMScoreBackend",
}


@dataclass
class ScoreRequest:
    """One sequence to score: the teacher's logprob of each `completion_ids` token given all before it.

    `key` identifies the request (the stage's ledger key); `prompt_id` only names it in log lines.
    """

    key: str
    prompt_ids: list[int]
    completion_ids: list[int]
    prompt_id: str = ""

    @property
    def n(self) -> int:  # one result per request (the generation machinery reads it)
        return 1

    @property
    def tokens(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


@dataclass
class ScoreResult:
    request: ScoreRequest
    logprobs: Logprobs  # one entry per completion token, with `ids` = the request's completion ids
    usage: dict[str, Any] = field(default_factory=dict)


class ScoreBackend(ABC):
    """One method to implement: `score`. Backends only score; the stage keys, writes and resumes."""

    name: str = "base"

    @abstractmethod
    def score(self, requests: list[ScoreRequest], stop: threading.Event) -> Iterator[ScoreResult | Failure]:
        """Yield one ScoreResult per request as each is ready, or a Failure for a request given up on.

        Once `stop` is set, start no new work and finish (yielding) what is already in flight.
        Raise `BackendError` for failures the user must fix (unreachable server, a server that cannot score).
        """

    def stats(self) -> dict[str, Any]:
        """Counters for progress and the manifest (retries by class, current concurrency, ...)."""
        return {}

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release resources (threads, sessions, GPU memory)."""


def create_score_backend(cfg, tokenizer) -> ScoreBackend:
    """The scoring backend named by `cfg.backend`, given the teacher's tokenizer (it names the tokens)."""
    target = SCORE_BACKENDS.get(cfg.backend)
    if target is None:
        raise ConfigError(f"score: unknown backend {cfg.backend!r}; choose one of: {', '.join(SCORE_BACKENDS)}")
    if cfg.backend != "openai":  # in-process: before transformers or vLLM ask the hub
        from seqdistill.models import require_local_model

        require_local_model(cfg.model, cfg.backend)
    module_name, cls_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)(cfg, tokenizer)


def vocab_texts(tokenizer) -> list[str]:
    """Every token id's text as servers report it (' the', not 'Ġthe'), indexed by id.

    One pass over the vocabulary (~0.3 s for 49k tokens) instead of a tokenizer call per scored token.
    """
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [tokenizer.convert_tokens_to_string([t]) if t is not None else "" for t in vocab]


def logprobs_from_steps(
    steps: Sequence[Mapping[int, tuple[float, int | None]] | None],
    ids: Sequence[int],
    start: int,
    k: int,
    text: Sequence[str],
) -> Logprobs:
    """Prompt logprobs of a whole sequence (vLLM's shape) -> the one type, for the tokens from `start` on.

    `steps[i]` maps token id -> (logprob, rank) at position i: the actual token `ids[i]` and the top-k
    (rank 1 is the most likely); `steps[0]` is None (the first token has no context). Raises ValueError
    when a step lacks its own token or the lengths do not match (a malformed answer).
    """
    if len(steps) != len(ids):
        raise ValueError(f"{len(steps)} prompt logprob entries for {len(ids)} tokens")
    tokens, values, top = [], [], []
    for i in range(start, len(ids)):
        step = steps[i]
        if step is None or ids[i] not in step:
            raise ValueError(f"no logprob for token {i} (id {ids[i]})")
        tokens.append(_text(text, ids[i]))
        values.append(step[ids[i]][0])
        ranked = sorted((rank, tid) for tid, (_, rank) in step.items() if rank is not None and 1 <= rank <= k)
        top.append([(_text(text, tid), step[tid][0]) for _, tid in ranked])
    return Logprobs.build(tokens, values, top if k else None, ids[start:])


def _text(text: Sequence[str], token_id: int) -> str:
    if not 0 <= token_id < len(text):
        raise BackendError(
            f"the teacher returned token id {token_id}, outside the tokenizer's {len(text)} tokens: "
            "teacher_tokenizer must be the served model's tokenizer"
        )
    return text[token_id]
