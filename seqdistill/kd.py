"""Soft-target (logit) distillation: Hinton's loss on the teacher's top-k logprobs, and its guards.

`generate --set logprobs=K` captures the teacher's top-k token logprobs of its own samples, and
`seqdistill score` those of any completion, into `meta.logprobs` (`records.Logprobs`: tokens, their
logprobs, the top-k per position, and the token ids when known). When teacher and student share a
tokenizer, `kd_loss` trains on them:

    loss = alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · CE(student, sampled tokens)

Only the teacher's top-k support is known, so both distributions are renormalised on it (see `kd_loss`).
Different vocabularies make the token ids meaningless to the student: `require_same_vocabulary` refuses.

The teacher's top-k tokens arrive as text (what OpenAI-compatible servers and vLLM return), so `TokenTable`
maps them back to the student's ids, and `teacher_targets` lines the teacher's steps up with the student's
tokenization of the same completion: position j gets the teacher's top-k at step j for as long as the two
token sequences agree (the common prefix: by id when the record has ids, else by token text); past the
first disagreement there are no soft targets and the student learns from cross-entropy alone. Not
covered: re-aligning after a disagreement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from seqdistill.backends.score_base import vocab_texts
from seqdistill.errors import SeqdistillError
from seqdistill.records import Logprobs

__all__ = [
    "VocabularyMismatch",
    "TokenTable",
    "as_logprobs",
    "kd_loss",
    "logprobs_to_tensors",
    "require_same_vocabulary",
    "same_vocabulary",
    "teacher_targets",
]


class VocabularyMismatch(SeqdistillError):
    """Teacher and student tokenizers differ, so soft targets (token ids) cannot be transferred."""


def kd_loss(
    student_logits: Tensor,
    target_ids: Tensor,
    teacher_top_ids: Tensor,
    teacher_top_logprobs: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    alpha: float = 0.5,
) -> tuple[Tensor, dict[str, float]]:
    """Hinton's distillation loss restricted to the teacher's top-k support, averaged over masked positions.

    Shapes: `student_logits` [B, L, V] (position i predicts `target_ids[:, i]`; the caller does the
    causal shift); `target_ids` [B, L] (the sampled tokens); `teacher_top_ids` [B, L, K] (the teacher's
    top-k token ids, -1 for missing entries); `teacher_top_logprobs` [B, L, K] (the teacher's
    log-probabilities of those ids at temperature 1); `mask` [B, L] bool (completion tokens only).

    With T = `temperature`, at each position:

    - teacher_T = softmax(teacher_top_logprobs / T) over the top-k entries present (-1 entries ignored);
    - student_T = the student's log-softmax at temperature T over the full vocabulary, gathered at the
      teacher's top-k ids and renormalised over those ids, i.e. log_softmax(gathered logits / T) over k
      (the full-vocabulary normaliser cancels). Both distributions are renormalised on the teacher's
      top-k support: the teacher's mass outside it is unknown, so the KL is taken on that support only;
    - kd = T² · Σ_k teacher_T (log teacher_T − log student_T);
    - ce = −log softmax(student_logits)[target] (T = 1, full vocabulary).

    loss = alpha · mean(kd) + (1 − alpha) · mean(ce), both means over the masked positions. A masked
    position without any teacher entry (all -1) contributes 0 to the KD part. Returns the loss and
    `{"kd": mean(kd), "ce": mean(ce)}` as detached floats (unweighted by alpha).
    """
    if student_logits.dim() != 3:
        raise ValueError(f"student_logits must be [B, L, V], got {tuple(student_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    b, seq_len, vocab = student_logits.shape
    if target_ids.shape != (b, seq_len) or mask.shape != (b, seq_len):
        raise ValueError(
            f"target_ids {tuple(target_ids.shape)} and mask {tuple(mask.shape)} must be [B, L] = {(b, seq_len)}"
        )
    if teacher_top_ids.shape != teacher_top_logprobs.shape or teacher_top_ids.shape[:2] != (b, seq_len):
        raise ValueError(
            f"teacher_top_ids {tuple(teacher_top_ids.shape)} and teacher_top_logprobs "
            f"{tuple(teacher_top_logprobs.shape)} must both be [B, L, K] with [B, L] = {(b, seq_len)}"
        )

    logits = student_logits.float()
    mask = mask.bool()
    teacher_top_ids = teacher_top_ids.long()
    if teacher_top_ids.numel() and int(teacher_top_ids.max()) >= vocab:
        top = int(teacher_top_ids.max())
        raise ValueError(f"teacher token id {top} is outside the student's vocabulary ({vocab} tokens)")
    n = mask.sum().clamp(min=1).float()

    # Cross-entropy on the sampled tokens at T = 1 (targets at masked-out positions may be anything).
    safe_targets = torch.where(mask, target_ids.long(), torch.zeros_like(target_ids, dtype=torch.long))
    ce_tok = F.cross_entropy(logits.reshape(-1, vocab), safe_targets.reshape(-1), reduction="none").view(b, seq_len)
    ce = (ce_tok * mask).sum() / n

    # KD on the teacher's top-k support, both sides renormalised on it.
    valid = (teacher_top_ids >= 0) & mask.unsqueeze(-1)  # [B, L, K]
    has_support = valid.any(dim=-1, keepdim=True)
    # A row with no valid entry is computed on all its (dummy) entries to stay finite, then dropped.
    use = valid | ~has_support
    neg_inf = torch.tensor(float("-inf"), device=logits.device)
    gathered = logits.gather(-1, teacher_top_ids.clamp(min=0)) / temperature
    log_q = torch.log_softmax(torch.where(use, gathered, neg_inf), dim=-1)
    t_scaled = teacher_top_logprobs.to(logits.dtype).detach() / temperature
    log_p = torch.log_softmax(torch.where(use, t_scaled, neg_inf), dim=-1)
    p = log_p.exp()
    zero = torch.zeros((), device=logits.device)
    diff = log_p.masked_fill(~valid, 0.0) - log_q.masked_fill(~valid, 0.0)
    kl_terms = torch.where(valid & (p > 0), p * diff, zero)
    kd = temperature**2 * kl_terms.sum() / n

    loss = alpha * kd + (1.0 - alpha) * ce
    return loss, {"kd": float(kd.detach()), "ce": float(ce.detach())}


def same_vocabulary(vocab_a: Mapping[str, int], vocab_b: Mapping[str, int]) -> bool:
    """Whether two token → id vocabularies are identical (same tokens with the same ids)."""
    return dict(vocab_a) == dict(vocab_b)


def _first_difference(vocab_a: Mapping[str, int], vocab_b: Mapping[str, int]) -> tuple[int, str | None, str | None]:
    """The lowest id whose token differs between the two vocabularies, with both tokens (None: absent)."""
    by_id_a = {i: t for t, i in vocab_a.items()}
    by_id_b = {i: t for t, i in vocab_b.items()}
    for i in sorted(set(by_id_a) | set(by_id_b)):
        if by_id_a.get(i) != by_id_b.get(i):
            return i, by_id_a.get(i), by_id_b.get(i)
    return -1, None, None  # same id → token maps but different dicts (duplicate ids): reported generically


def require_same_vocabulary(
    teacher_vocab: Mapping[str, int],
    student_vocab: Mapping[str, int],
    teacher_name: str,
    student_name: str,
    needs: str = "soft-target distillation",
) -> None:
    """Raise `VocabularyMismatch` (one clear line) unless teacher and student share their vocabulary.

    `needs` names what requires the shared tokenizer (soft targets, on-policy distillation) in the message.
    """
    if same_vocabulary(teacher_vocab, student_vocab):
        return
    idx, tok_t, tok_s = _first_difference(teacher_vocab, student_vocab)
    where = (
        f"first differing token: id {idx} is {tok_t!r} in the teacher, {tok_s!r} in the student"
        if idx >= 0
        else "same tokens, different id assignment"
    )
    raise VocabularyMismatch(
        f"teacher {teacher_name} and student {student_name} have different vocabularies "
        f"({len(teacher_vocab)} vs {len(student_vocab)} tokens, {where}): {needs} needs a "
        "shared tokenizer; use sequence distillation (the default) instead"
    )


def as_logprobs(value: Logprobs | Mapping[str, Any]) -> Logprobs:
    """A `Logprobs`, from itself or its JSON form (as in `meta.logprobs`); a malformed one raises ValueError."""
    return value if isinstance(value, Logprobs) else Logprobs.model_validate(value)


def logprobs_to_tensors(
    records_logprobs: Logprobs | Mapping[str, Any] | Sequence[Logprobs | Mapping[str, Any]],
    token_to_id: Callable[[str], int | None],
    k: int,
) -> tuple[Tensor, Tensor]:
    """A sample's teacher logprobs → (ids [L, K] long, logprobs [L, K] float32).

    `records_logprobs` is one sample's `Logprobs` (or its JSON form) or a list of them (consecutive
    segments of one completion, concatenated in order). Row i holds the first k entries of `top[i]`; a
    token that `token_to_id` does not know (None or negative), a repeat of an id already in the row, and
    missing entries are -1 (logprob 0.0), which `kd_loss` ignores. Without `top` (captured with k = 0)
    every row is -1.
    """
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    one = isinstance(records_logprobs, Logprobs | Mapping)
    segments = [as_logprobs(seg) for seg in ([records_logprobs] if one else records_logprobs)]
    id_rows: list[list[int]] = []
    lp_rows: list[list[float]] = []
    for seg in segments:
        for step in seg.top or [[] for _ in seg.tokens]:
            ids = [-1] * k
            lps = [0.0] * k
            seen: set[int] = set()
            for j, (tok, lp) in enumerate(list(step)[:k]):
                tid = token_to_id(tok)
                if tid is None or tid < 0 or tid in seen:
                    continue
                seen.add(tid)
                ids[j] = int(tid)
                lps[j] = float(lp)
            id_rows.append(ids)
            lp_rows.append(lps)
    if not id_rows:
        return torch.full((0, k), -1, dtype=torch.long), torch.zeros((0, k), dtype=torch.float32)
    return torch.tensor(id_rows, dtype=torch.long), torch.tensor(lp_rows, dtype=torch.float32)


class TokenTable:
    """Student token id ↔ token text, for mapping the teacher's top-k token strings to student ids.

    A string that several ids render to (e.g. partial UTF-8 bytes, all shown as '\ufffd') maps to no id.
    vLLM's `return_tokens_as_token_ids` form `token_id:123` maps to 123.
    """

    def __init__(self, tokenizer) -> None:
        self.text = vocab_texts(tokenizer)
        ids: dict[str, int] = {}
        ambiguous: set[str] = set()
        for i, t in enumerate(self.text):
            if t in ids:
                ambiguous.add(t)
            ids.setdefault(t, i)
        self.ids = {t: i for t, i in ids.items() if t not in ambiguous}

    def to_id(self, token: str) -> int | None:
        if token.startswith("token_id:") and token[9:].isdigit():
            tid = int(token[9:])
            return tid if tid < len(self.text) else None
        return self.ids.get(token)


def teacher_targets(
    logprobs: Logprobs | Mapping[str, Any] | None, completion_ids: Sequence[int], table: TokenTable, k: int
) -> tuple[list[list[int]], list[list[float]]]:
    """The teacher's top-k (ids, logprobs) for the leading completion tokens the teacher's tokens agree on.

    `completion_ids` are the student's tokens of the supervised completion (as TRL renders it);
    `logprobs` is a sample's `meta.logprobs`. Row j is for completion token j; there are as many rows as
    leading tokens where the teacher's token equals the student's: the same id when the record carries
    ids (teacher and student share a vocabulary, checked before), else the same text. None without `top`.

    >>> class Tok:  # a 4-token vocabulary
    ...     def __len__(self): return 4
    ...     def convert_ids_to_tokens(self, ids): return ["a", "b", "c", "<e>"]
    ...     def convert_tokens_to_string(self, toks): return "".join(toks)
    >>> lp = {"tokens": ["a", "b", "x"], "logprobs": [-0.25, -0.5, -0.75],
    ...       "top": [[["a", -0.25], ["b", -2.5]], [["b", -0.5]], [["x", -0.75]]]}
    >>> teacher_targets(lp, [0, 1, 2, 3], TokenTable(Tok()), 2)
    ([[0, 1], [1, -1]], [[-0.25, -2.5], [-0.5, 0.0]])
    """
    if logprobs is None:
        return [], []
    lp = as_logprobs(logprobs)
    if not lp.top:
        return [], []
    agree = 0
    if lp.ids is not None:
        for student, teacher in zip(completion_ids, lp.ids, strict=False):
            if student != teacher:
                break
            agree += 1
    else:
        for tid, tok in zip(completion_ids, lp.tokens, strict=False):
            if tid >= len(table.text) or table.text[tid] != tok:
                break
            agree += 1
    head = Logprobs(tokens=lp.tokens[:agree], logprobs=lp.logprobs[:agree], top=lp.top[:agree])
    ids, lps = logprobs_to_tensors(head, table.to_id, k)
    return ids.tolist(), lps.tolist()
