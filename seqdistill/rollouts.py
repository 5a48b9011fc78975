"""The student's side of on-policy distillation: sampling rollouts with the current weights, and scoring tokens.

`StudentSampler.sample` turns prompt token ids into `n` completions each (token ids, the end-of-turn
token included when the sample stopped). Two engines:

- `TransformersSampler` (CPU, or one GPU): `model.generate` on the training model itself, so every
  round samples with the current weights and nothing is reloaded. Rollouts are sorted by prompt length
  and generated in batches (left padding); a batch stops once every row has ended.
- `VLLMSampler` (a GPU): an in-process `vllm.LLM`; `load_weights` pushes the student's current weights
  into it before each round. Imported lazily; NOT TESTED here (vLLM's wheels need CUDA).

`completion_logits` is the one forward pass every on-policy computation shares (the teacher's scores,
the student's old and current log-probabilities): prompt + completion left-padded so completions end at
the same column, logits kept only for the completion positions.
"""

from __future__ import annotations

import inspect
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from seqdistill.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Completion:
    """One sampled answer: its token ids (with the end-of-turn token when it stopped) and why it ended."""

    ids: list[int]
    finish_reason: str  # "stop" (ended with an end-of-turn token) or "length" (cut at max_tokens)


class StudentSampler(ABC):
    """Samples the student's answers with its current weights."""

    @abstractmethod
    def sample(
        self, prompts: Sequence[list[int]], n: int, temperature: float, top_p: float, max_tokens: int
    ) -> list[list[Completion]]:
        """`n` completions for each prompt (token ids of the chat-rendered prompt), in prompt order."""

    def load_weights(self, model) -> None:  # noqa: B027  (in-process transformers samples the live model)
        """Make the next `sample` use `model`'s current weights."""


def eos_ids(model, tokenizer) -> set[int]:
    """The tokens that end a turn: the generation config's EOS ids and the tokenizer's."""
    found: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if value is not None:
            found |= set(value) if isinstance(value, list | tuple) else {value}
    return found


def _cut(ids: list[int], ends: set[int]) -> Completion:
    """Generated ids up to and including the first end-of-turn token (the rest is padding)."""
    end = next((i for i, t in enumerate(ids) if t in ends), None)
    return Completion(ids, "length") if end is None else Completion(ids[: end + 1], "stop")


class TransformersSampler(StudentSampler):
    """`generate` on the live training model, in length-sorted batches of `batch_size` rollouts."""

    def __init__(self, model, tokenizer, batch_size: int, autocast_dtype=None) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.autocast_dtype = autocast_dtype
        self.ends = eos_ids(model, tokenizer)
        if not self.ends:
            raise ConfigError("the student has no EOS token (generation_config.eos_token_id): it would never stop")

    def sample(self, prompts, n, temperature, top_p, max_tokens):
        import torch

        rows = sorted(((i, j) for i in range(len(prompts)) for j in range(n)), key=lambda r: len(prompts[r[0]]))
        out: list[list[Completion | None]] = [[None] * n for _ in prompts]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.ends)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start : start + self.batch_size]
                input_ids, attention = left_pad([prompts[i] for i, _ in batch], pad, device)
                with torch.autocast(device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                    generated = self.model.generate(
                        input_ids=input_ids, attention_mask=attention, max_new_tokens=max_tokens, pad_token_id=pad,
                        eos_token_id=sorted(self.ends), **self.neutral(temperature, top_p),
                    )  # fmt: skip
                for (i, j), ids in zip(batch, generated[:, input_ids.shape[1] :].tolist(), strict=True):
                    out[i][j] = _cut(ids, self.ends)
        finally:
            self.model.train(was_training)
        return out  # type: ignore[return-value]

    @staticmethod
    def neutral(temperature: float, top_p: float) -> dict:
        """Sampling from the model's distribution (temperature, top_p only): a checkpoint's generation_config
        (e.g. a repetition penalty, a top-k) would otherwise fill the unset fields and bend the samples."""
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0, "min_p": 0.0,
                "typical_p": 1.0, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}  # fmt: skip


class VLLMSampler(StudentSampler):
    """An in-process vLLM engine on a GPU, refreshed with the student's weights before each round (untested here).

    The engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) so `apply_model` can write the
    training weights into it directly, as TRL's colocated vLLM generation does. `gpu_memory_utilization`
    leaves the rest of the GPU to training.
    """

    def __init__(self, model_path: str, dtype: str, seed: int, gpu_memory_utilization: float = 0.3) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError:
            raise ConfigError("onpolicy.sampler vllm needs vLLM on a GPU: pip install 'seqdistill[vllm]'") from None
        self.llm = LLM(model=model_path, dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization)

    def load_weights(self, model) -> None:
        weights = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
        self.llm.apply_model(lambda engine_model: engine_model.load_weights(weights))
        self.llm.reset_prefix_cache()

    def sample(self, prompts, n, temperature, top_p, max_tokens):
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        return [
            [Completion(list(c.token_ids), "length" if c.finish_reason == "length" else "stop") for c in o.outputs]
            for o in outputs
        ]


def left_pad(rows: Sequence[Sequence[int]], pad: int, device):
    """Token rows → (input_ids, attention_mask) [B, T], right-aligned (padding on the left)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
            attention[i, width - len(r) :] = 1
    return ids.to(device), attention.to(device)


def completion_logits(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad: int):
    """One forward over prompt + completion rows → (logits [B, C, V], targets [B, C], mask [B, C]).

    C is the longest completion; row i's completion sits right-aligned in the last `len(completions[i])`
    columns (mask True there), and `logits[i, c]` is the model's distribution for `targets[i, c]`.
    Position ids count real tokens only, so left padding does not shift positions. Only the last C + 1
    columns go through the LM head (`logits_to_keep`), so prompt positions cost no vocabulary projection.
    """
    import torch

    if any(not c for c in completions):
        raise ValueError("every completion needs at least one token")
    device = next(model.parameters()).device
    ids, attention = left_pad([list(p) + list(c) for p, c in zip(prompts, completions, strict=True)], pad, device)
    width, c_max = ids.shape[1], max(len(c) for c in completions)
    if c_max >= width:
        raise ValueError("every prompt needs at least one token")
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    if _accepts_logits_to_keep(model):
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=False,
                       logits_to_keep=c_max + 1).logits[:, :-1]  # fmt: skip
    else:
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=False).logits
        logits = logits[:, width - c_max - 1 : -1]
    lengths = torch.tensor([len(c) for c in completions], device=device)
    mask = torch.arange(c_max, device=device).unsqueeze(0) >= (c_max - lengths).unsqueeze(1)
    return logits, ids[:, width - c_max :], mask


def _accepts_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def right_aligned(rows: Sequence[Sequence], width: int, fill, dtype):
    """Per-token rows (lists, or lists of k-lists) → a [B, width(, k)] tensor, each row right-aligned."""
    import torch

    first = next((r[0] for r in rows if len(r)), None)
    inner = (len(first),) if isinstance(first, list | tuple) else ()
    out = torch.full((len(rows), width, *inner), fill, dtype=dtype)
    for i, r in enumerate(rows):
        if len(r):
            out[i, width - len(r) :] = torch.tensor(list(r), dtype=dtype)
    return out
