"""The teacher's side of on-policy distillation: its log-probability of every token the student wrote.

One small interface, `TeacherScorer.score(prompts, completions, top_k)`: token ids in (the teacher's
chat-rendered prompt, the student's completion: same vocabulary, checked beforehand), per-token
`TokenScores` out — the teacher's raw (temperature 1) log-probability of each completion token, and its
top-k when asked. `TransformersScorer` is the in-process implementation; `BackendScorer` reaches a teacher
behind an OpenAI-compatible server with prompt logprobs (vLLM) or in-process vLLM through `seqdistill score`'s
backends. `make_scorer` chooses by `onpolicy.teacher_backend`.

Limits: the teacher must share the student's tokenizer (the token ids are the student's).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from seqdistill.errors import BackendError


@dataclass
class TokenScores:
    """The teacher's view of one completion: `logprobs[t]` for token t; top-k ids/logprobs per t when asked."""

    logprobs: list[float]
    top_ids: list[list[int]] | None = None
    top_logprobs: list[list[float]] | None = None


class TeacherScorer(ABC):
    """Scores completions: the teacher's log-probability of each token given its own prompt."""

    name: str = "base"

    @abstractmethod
    def score(
        self, prompts: Sequence[list[int]], completions: Sequence[list[int]], top_k: int = 0
    ) -> list[TokenScores]:
        """One `TokenScores` per (prompt, completion) pair, in order; top-k only when `top_k` > 0."""

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release the teacher (weights, sessions)."""


class TransformersScorer(TeacherScorer):
    """The teacher loaded in this process; rollouts scored in length-sorted batches of `batch_size`.

    The forward pass is `seqdistill score`'s (`backends.score_transformers.score_ids`): one pass per batch,
    the LM head only on completion columns.
    """

    name = "transformers"

    def __init__(self, model_name: str, dtype: str = "float32", batch_size: int = 16, device: str | None = None):
        import torch

        from seqdistill.models import load_model

        self.model, self.tokenizer = load_model(model_name, dtype, for_generation=True)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.batch_size = batch_size
        pad = self.tokenizer.pad_token_id
        self.pad = pad if pad is not None else 0

    def score(self, prompts, completions, top_k=0):
        from seqdistill.backends.score_transformers import score_ids

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(completions[i]))
        out: list[TokenScores | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            rows = score_ids(self.model, [prompts[i] for i in batch], [completions[i] for i in batch], top_k, self.pad)
            for i, row in zip(batch, rows, strict=True):
                out[i] = TokenScores(
                    row.logprobs.tolist(),
                    row.top_ids.tolist() if row.top_ids is not None else None,
                    row.top_logprobs.tolist() if row.top_logprobs is not None else None,
                )
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None


class BackendScorer(TeacherScorer):
    """A teacher behind `seqdistill score`'s backends: an OpenAI-compatible server with prompt logprobs (vLLM)
    or in-process vLLM. Token ids go out as they are (the vocabulary is shared); the teacher's top-k comes
    back as token text and is mapped to ids (`kd.TokenTable`); an entry no id renders to is dropped."""

    def __init__(self, cfg, tokenizer):
        from seqdistill.backends.score_base import create_score_backend
        from seqdistill.kd import TokenTable

        self.cfg, self.name = cfg, cfg.backend
        self.backend = create_score_backend(cfg, tokenizer)
        self.table = TokenTable(tokenizer)

    def score(self, prompts, completions, top_k=0):
        import threading

        from seqdistill.backends.score_base import Failure, ScoreRequest

        pairs = enumerate(zip(prompts, completions, strict=True))
        requests = [ScoreRequest(str(i), list(p), list(c)) for i, (p, c) in pairs]
        out: list[TokenScores | None] = [None] * len(requests)
        for item in self.backend.score(requests, threading.Event()):
            if isinstance(item, Failure):
                raise BackendError(
                    f"the teacher ({self.cfg.model} via {self.name}) could not score a rollout after its retries "
                    f"({item.kind}: {item.detail}); run the same command again to resume from the last round"
                )
            lp = item.logprobs
            tops = [[(self.table.to_id(t), v) for t, v in row] for row in (lp.top or [])] if top_k else []
            tops = [[(i, v) for i, v in row if i is not None][:top_k] for row in tops]
            out[int(item.request.key)] = TokenScores(
                list(lp.logprobs),
                [[i for i, _ in row] for row in tops] if top_k else None,
                [[v for _, v in row] for row in tops] if top_k else None,
            )
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.backend.close()


def make_scorer(onpolicy, teacher: str, tokenizer) -> TeacherScorer:
    """The teacher scorer named by `onpolicy.teacher_backend` (transformers, openai or vllm)."""
    o = onpolicy
    if o.teacher_backend == "transformers":
        return TransformersScorer(teacher, o.teacher_dtype, o.teacher_batch_size)
    from seqdistill.config import ScoreConfig

    cfg = ScoreConfig(
        backend=o.teacher_backend, model=teacher, logprobs=o.top_k if o.loss == "jsd" else 0,
        batch_size=o.teacher_batch_size, dtype=o.teacher_dtype,
        **({"base_url": o.teacher_base_url} if o.teacher_base_url else {}),
        **({"api_key_env": o.teacher_api_key_env} if o.teacher_api_key_env else {}),
    )  # fmt: skip
    return BackendScorer(cfg, tokenizer)
