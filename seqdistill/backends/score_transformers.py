"""In-process teacher scoring with transformers: one forward pass per batch over prompt + completion.

`score_ids` is the function itself, callable on token ids (on-policy training uses it for the teacher's
side); `TransformersScoreBackend` wraps it for `seqdistill score`. Logprobs are the raw (temperature 1)
log-softmax of the model's logits, like vLLM's prompt logprobs.

Batches are sorted by length and right-padded, so every real token keeps its position and sees only
real tokens before it. The LM head runs only over the columns that predict completion tokens
(`logits_to_keep`); still, a batch holds batch × (completion columns) × vocabulary float32 logits
(8 × 512 × 49k ≈ 0.8 GB): lower `batch_size` for long completions. Not covered: multi-GPU, KV reuse
across completions of one prompt (each sequence is run whole).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from seqdistill.backends.score_base import ScoreBackend, ScoreRequest, ScoreResult, vocab_texts
from seqdistill.records import Logprobs


@dataclass
class TokenScores:
    """One sequence's completion tokens under the teacher: [C] logprobs; [C, k] top ids and logprobs (k > 0)."""

    logprobs: object  # torch.Tensor [C], float32, on the CPU
    top_ids: object | None  # torch.Tensor [C, k] long
    top_logprobs: object | None  # torch.Tensor [C, k] float32


def score_ids(
    model,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    k: int = 0,
    pad_id: int = 0,
) -> list[TokenScores]:
    """The model's log-probability of each completion token given everything before it, for a batch.

    Row i is `prompt_ids[i] + completion_ids[i]`; the result for row i covers `completion_ids[i]`
    (and its top-k per position when k > 0). One forward pass for the whole batch, no gradients.
    Every prompt needs at least one token (the first token of a sequence has no logprob).
    """
    import torch

    if any(not p for p in prompt_ids):
        raise ValueError("score_ids: every prompt needs at least one token")
    rows = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    # column j predicts token j + 1: the completion of row i is predicted by columns [len(p) - 1, len(row) - 1)
    lo = min(len(p) - 1 for p in prompt_ids)
    hi = max(len(r) - 1 for r in rows)
    cols = torch.arange(lo, max(hi, lo + 1), device=device)
    with torch.inference_mode():
        kwargs = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "use_cache": False}
        if _takes_logits_to_keep(model):
            logits = model(**kwargs, logits_to_keep=cols).logits
        else:
            logits = model(**kwargs).logits[:, cols]
        out = []
        for i, (p, c) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
            start = len(p) - 1 - lo
            steps = torch.log_softmax(logits[i, start : start + len(c)].float(), dim=-1)
            target = torch.tensor(list(c), dtype=torch.long, device=steps.device).unsqueeze(1)
            chosen = steps.gather(1, target).squeeze(1).cpu()
            top_ids = top_lps = None
            if k:
                top_lps, top_ids = (t.cpu() for t in steps.topk(min(k, steps.shape[-1]), dim=-1))
            out.append(TokenScores(chosen, top_ids, top_lps))
    return out


def _takes_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def to_logprobs(scores: TokenScores, completion_ids: Sequence[int], text: Sequence[str]) -> Logprobs:
    """`TokenScores` as the one logprobs type (token texts from `text`, the vocabulary's texts by id)."""
    top = None
    if scores.top_ids is not None:
        top = [
            [(text[t], v) for t, v in zip(ids, values, strict=True)]
            for ids, values in zip(scores.top_ids.tolist(), scores.top_logprobs.tolist(), strict=True)
        ]
    return Logprobs.build([text[t] for t in completion_ids], scores.logprobs.tolist(), top, completion_ids)


class TransformersScoreBackend(ScoreBackend):
    name = "transformers"

    def __init__(self, cfg, tokenizer):
        import torch

        from seqdistill.models import load_model

        self.cfg = cfg
        self.model, _ = load_model(cfg.model, cfg.dtype)
        self.model.to("cuda" if torch.cuda.is_available() else "cpu")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.text = vocab_texts(tokenizer)

    def score(self, requests: list[ScoreRequest], stop: threading.Event) -> Iterator[ScoreResult]:
        """Batches of `batch_size` requests of similar length (sorted), each yielded as it is done."""
        ordered = sorted(requests, key=lambda r: (len(r.prompt_ids), len(r.completion_ids)))
        bs = self.cfg.batch_size
        for start in range(0, len(ordered), bs):
            if stop.is_set():
                return
            batch = ordered[start : start + bs]
            scores = score_ids(
                self.model,
                [r.prompt_ids for r in batch],
                [r.completion_ids for r in batch],
                self.cfg.logprobs,
                self.pad_id,
            )
            for req, s in zip(batch, scores, strict=True):
                usage = {"prompt_tokens": len(req.prompt_ids), "completion_tokens": len(req.completion_ids)}
                yield ScoreResult(req, to_logprobs(s, req.completion_ids, self.text), usage)

    def close(self) -> None:
        self.model = None
