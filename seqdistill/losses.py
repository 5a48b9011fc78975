"""On-policy distillation losses: the sampled-token reverse-KL estimator and a top-k generalized JSD.

Both take the student's tokens along its *own* samples (the caller shifts logits so position i predicts
`target_ids[:, i]`) and a mask of the completion tokens (the end-of-turn token included, padding and
prompt excluded). Soft targets on the teacher's samples are `kd.kd_loss`, a different objective.

- `reverse_kl_pg_loss` needs only the teacher's log-probability of each sampled token. Per token
  t, with θold the weights that sampled the round:

      A_t = −(log p_θold(x_t) − log p_teacher(x_t))          (detached; no discount, no sum over t)
      ratio_t = exp(log p_θ(x_t) − log p_θold(x_t))
      loss = −Σ_t ratio_t · A_t / N                           (N: masked tokens of the optimizer batch)

  At θ = θold its gradient is Σ_t (log p_θ(x_t) − log p_teacher(x_t)) ∇log p_θ(x_t) / N, the policy
  gradient of the per-token reverse KL(student ‖ teacher) along the sampled states (Thinking Machines'
  "On-Policy Distillation", the Tinker cookbook recipe); the ratio corrects for the weights moving
  between the round's optimizer steps. The value of the loss at θ = θold is the sampled-token estimate
  of the reverse KL. Not covered: ratio clipping (PPO's), which a few steps per round do not need.
- `topk_jsd_loss` is GKD's generalized JSD (Agarwal et al. 2024) computed exactly, with TRL's `beta`
  convention (`GKDTrainer.generalized_jsd_loss`): beta = 0 is the forward KL(teacher ‖ student),
  beta = 1 the reverse KL(student ‖ teacher), in between beta·KL(T ‖ M) + (1 − beta)·KL(S ‖ M) with
  M = beta·T + (1 − beta)·S. A teacher behind an API only gives its top-k, so both distributions are
  coarsened to k + 1 outcomes: the teacher's top-k tokens and "every other token" (the tail, 1 − the
  top-k mass; the student's tail is exact, it knows its whole vocabulary). By the data-processing
  inequality this is a lower bound of the full-vocabulary divergence, equal to it when k covers the
  vocabulary (a test checks it against TRL's). Unlike renormalising on the top-k (what `kd_loss`
  does for forward KL), the tail keeps the student's mass off the teacher's support visible to the
  reverse KL.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cross_entropy_loss", "reverse_kl_pg_loss", "token_logprobs", "topk_jsd_loss"]

_FLOOR = -1e4  # a log-probability standing for 0 (exp underflows to exactly 0.0)


def token_logprobs(logits: Tensor, target_ids: Tensor) -> Tensor:
    """log softmax(logits)[target] at temperature 1: [B, L, V] logits, [B, L] ids → [B, L] float32."""
    logits = logits.float()
    safe = target_ids.clamp(min=0).long()
    return logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _denominator(mask: Tensor, num_tokens: int | None) -> Tensor:
    n = mask.sum() if num_tokens is None else torch.tensor(num_tokens, device=mask.device)
    return n.clamp(min=1).float()


def reverse_kl_pg_loss(
    logprobs: Tensor, old_logprobs: Tensor, teacher_logprobs: Tensor, mask: Tensor, num_tokens: int | None = None
) -> tuple[Tensor, dict[str, float]]:
    """The importance-sampled policy-gradient loss on the per-token reverse KL (see the module doc).

    Shapes [B, L]: `logprobs` (the student's current log p_θ of the sampled tokens, with gradient),
    `old_logprobs` (log p_θold, from the weights that sampled), `teacher_logprobs`, `mask` (bool).
    `num_tokens` is the denominator N (default: the tokens in `mask`; pass the optimizer batch's count
    when it is split into micro-batches). Returns the loss and, as floats over the masked tokens,
    `reverse_kl` (mean of log p_θold − log p_teacher) and `ratio` (mean importance ratio).
    """
    if not logprobs.shape == old_logprobs.shape == teacher_logprobs.shape == mask.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)}, teacher_logprobs "
            f"{tuple(teacher_logprobs.shape)} and mask {tuple(mask.shape)} must have the same [B, L] shape"
        )
    mask = mask.bool()
    zero = torch.zeros((), dtype=torch.float32, device=logprobs.device)
    old = torch.where(mask, old_logprobs.float(), zero).detach()
    advantage = -(old - torch.where(mask, teacher_logprobs.float(), zero)).detach()
    ratio = torch.exp(torch.where(mask, logprobs.float(), zero) - old)
    n = _denominator(mask, num_tokens)
    loss = -(ratio * advantage * mask).sum() / n
    count = mask.sum().clamp(min=1)
    stats = {
        "reverse_kl": float((-advantage * mask).sum() / count),
        "ratio": float((ratio.detach() * mask).sum() / count),
    }
    return loss, stats


def cross_entropy_loss(logprobs: Tensor, mask: Tensor, num_tokens: int | None = None) -> Tensor:
    """−Σ log p(target) / N over masked tokens: SFT on teacher samples (the `sft_share` steps)."""
    zero = torch.zeros((), dtype=torch.float32, device=logprobs.device)
    return -torch.where(mask.bool(), logprobs.float(), zero).sum() / _denominator(mask, num_tokens)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 − exp(x)) for x ≤ 0, clamped so a tail of (numerically) zero mass stays finite."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _kl_terms(log_p: Tensor, log_q: Tensor, valid: Tensor) -> Tensor:
    """Σ p (log p − log q) over valid entries of the last axis; zero-probability entries contribute 0."""
    log_p = torch.where(valid, log_p, torch.zeros_like(log_p))  # sanitised: no inf reaches the backward pass
    log_q = torch.where(valid, log_q, torch.zeros_like(log_q))
    p = torch.where(valid, log_p.exp(), torch.zeros_like(log_p))
    return (p * (log_p - log_q)).sum(-1)


def topk_jsd_loss(
    student_logits: Tensor,
    teacher_top_ids: Tensor,
    teacher_top_logprobs: Tensor,
    mask: Tensor,
    beta: float = 1.0,
    num_tokens: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """GKD's generalized JSD on the teacher's top-k plus a tail bucket, summed over masked positions / N.

    Shapes: `student_logits` [B, L, V] (position i is the distribution of the token at i); `teacher_top_ids`
    [B, L, K] (-1 for missing entries), `teacher_top_logprobs` [B, L, K] (the teacher's log-probabilities
    at temperature 1); `mask` [B, L] bool. `beta` follows TRL (0 forward KL, 1 reverse KL; see the module
    doc). A position whose teacher entries are all missing has divergence 0. Returns the loss and
    `{"divergence": mean per masked position}`.
    """
    if student_logits.dim() != 3:
        raise ValueError(f"student_logits must be [B, L, V], got {tuple(student_logits.shape)}")
    if teacher_top_ids.shape != teacher_top_logprobs.shape or teacher_top_ids.shape[:2] != mask.shape:
        raise ValueError(
            f"teacher_top_ids {tuple(teacher_top_ids.shape)}, teacher_top_logprobs {tuple(teacher_top_logprobs.shape)}"
            f" must be [B, L, K] with [B, L] = mask {tuple(mask.shape)}"
        )
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    mask = mask.bool()
    ids = teacher_top_ids.long()
    valid = (ids >= 0) & mask.unsqueeze(-1)
    # missing entries get a finite floor (probability exactly 0 in float32): a -inf would turn gradients into NaN
    floor = torch.tensor(_FLOOR, device=student_logits.device)
    s_logp = torch.log_softmax(student_logits.float(), dim=-1)
    s_top = torch.where(valid, s_logp.gather(-1, ids.clamp(min=0)).clamp(min=_FLOOR), floor)
    t_top = torch.where(valid, teacher_top_logprobs.float().detach().clamp(min=_FLOOR), floor)
    # k + 1 outcomes: the top-k, then the tail (everything else); an all-missing row is all tail on both sides
    log_q = torch.cat([s_top, _log1mexp(torch.logsumexp(s_top, dim=-1, keepdim=True))], dim=-1)
    log_p = torch.cat([t_top, _log1mexp(torch.logsumexp(t_top, dim=-1, keepdim=True))], dim=-1)
    ok = torch.cat([valid, mask.unsqueeze(-1)], dim=-1)
    if beta == 0.0:
        per_position = _kl_terms(log_p, log_q, ok)
    elif beta == 1.0:
        per_position = _kl_terms(log_q, log_p, ok)
    else:
        b = torch.tensor(beta, dtype=log_p.dtype, device=log_p.device)
        log_m = torch.logsumexp(torch.stack([log_p + torch.log(b), log_q + torch.log1p(-b)]), dim=0)
        per_position = b * _kl_terms(log_p, log_m, ok) + (1 - b) * _kl_terms(log_q, log_m, ok)
    per_position = torch.where(mask, per_position, torch.zeros_like(per_position))
    loss = per_position.sum() / _denominator(mask, num_tokens)
    return loss, {"divergence": float(per_position.detach().sum() / mask.sum().clamp(min=1))}
