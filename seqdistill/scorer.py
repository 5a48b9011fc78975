"""The teacher's side of on-policy distillation: its log-probability of every token the student wrote.

One small interface, `TeacherScorer.score(prompts, completions, top_k)`: token ids in (the teacher's
chat-rendered prompt, the student's completion: same vocabulary, checked beforehand), per-token
`TokenScores` out — the teacher's raw (temperature 1) log-probability of each completion token, and its
top-k when asked. `TransformersScorer` is the in-process implementation: one forward pass over
prompt + completion per batch. A teacher behind an OpenAI-compatible server or in-process vLLM plugs in
behind the same method (`seqdistill score`'s backends); `make_scorer` is where it is chosen.

Limits: the teacher must share the student's tokenizer (the token ids are the student's).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from seqdistill.errors import ConfigError
from seqdistill.rollouts import completion_logits


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
    """The teacher loaded in this process; rollouts scored in length-sorted batches of `batch_size`."""

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
        import torch

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(completions[i]))
        out: list[TokenScores | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            with torch.inference_mode():
                logits, targets, mask = completion_logits(
                    self.model, [prompts[i] for i in batch], [completions[i] for i in batch], self.pad
                )
                logp = torch.log_softmax(logits.float(), dim=-1)
                chosen = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                top = logp.topk(top_k, dim=-1) if top_k else None
            width = mask.shape[1]
            for row, i in enumerate(batch):
                c = len(completions[i])
                cols = slice(width - c, width)
                out[i] = TokenScores(
                    chosen[row, cols].tolist(),
                    top.indices[row, cols].tolist() if top is not None else None,
                    top.values[row, cols].tolist() if top is not None else None,
                )
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None


def make_scorer(backend: str, model: str, dtype: str, batch_size: int) -> TeacherScorer:
    """The teacher scorer named by `onpolicy.teacher_backend`."""
    if backend == "transformers":
        return TransformersScorer(model, dtype, batch_size)
    raise ConfigError(
        f"onpolicy.teacher_backend {backend!r} is not available: use transformers (in-process); "
        "server and vLLM teachers come with `seqdistill score`'s backends"
    )
