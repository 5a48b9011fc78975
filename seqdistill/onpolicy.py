"""On-policy distillation (`train --set objective=onpolicy`): the student samples, the teacher scores, repeat.

Each round:
1. the student samples `n` answers to each of `prompts_per_round` prompts with its current weights
   (`rollouts.StudentSampler`: in-process transformers, or in-process vLLM on a GPU);
2. the teacher scores every student token given the *teacher's* prompt (`scorer.TeacherScorer`), which
   may differ from the student's: worked examples or a system prompt the student will not see (context
   distillation). The student's own log-probabilities (θold) are computed once, before any step;
3. the student takes optimizer steps on the per-token reverse KL (`losses.reverse_kl_pg_loss`, the
   sampled-token estimator; or `losses.topk_jsd_loss` with `loss: jsd`), optionally mixed with
   cross-entropy steps on the input's teacher samples (`sft_share`).
The round's rollouts are written as records (`<output>/onpolicy/rollouts-round-NNNN.jsonl`: the
teacher's scores in `meta.logprobs`, the student's in `meta.student_logprobs`), then a checkpoint
(`checkpoint-NNNN/`: weights, optimizer and scheduler state, metrics). A rerun continues after the
last finished round; a round's randomness (its prompts, its samples) is drawn from (seed, round), so a
resumed run samples what an uninterrupted one would.

Why a loop of our own rather than TRL's (checked in TRL 1.16): `trl.experimental.gkd.GKDTrainer` and
`trl.DistillationTrainer` take the teacher as a model in the same process and run it on the student's
own input ids, so the teacher cannot see a different prompt (the demo's context distillation) nor sit
behind a server we reach through a scorer; `trl.experimental.server_distillation` needs TRL's own vLLM
server. None of them has the sampled-token reverse-KL estimator, per-round rollout files or round
checkpoints. What we take from TRL is its `beta` convention for the JSD, checked against its
`generalized_jsd_loss` in the tests.

Limits: one process (no DDP); full fine-tuning only (no LoRA yet); dropout is switched off (so the
importance ratio is exactly 1 at a round's first step); the vLLM sampler is untested without a GPU.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seqdistill.config import TrainConfig
from seqdistill.errors import ConfigError, DataError
from seqdistill.io import read_samples, write_atomic, write_json
from seqdistill.records import Message, Sample, sample_id
from seqdistill.rollouts import Completion, StudentSampler, completion_logits, right_aligned
from seqdistill.scorer import TeacherScorer, TokenScores, make_scorer

log = logging.getLogger(__name__)

ROLLOUTS = "rollouts-round-{:04d}.jsonl"
CHECKPOINT = "checkpoint-{:04d}"


@dataclass
class PromptPair:
    """One prompt as the student sees it and as the teacher sees it."""

    id: str
    messages: list[dict[str, str]]
    teacher_messages: list[dict[str, str]]
    reference: str | None = None


@dataclass
class Rollout:
    """One student sample with everything the loss needs (token ids are the student's vocabulary)."""

    prompt: PromptPair
    index: int
    prompt_ids: list[int]
    teacher_prompt_ids: list[int]
    completion: Completion
    teacher: TokenScores | None = None
    old_logprobs: list[float] | None = None


@dataclass
class RoundMetrics:
    """What one round did: the per-round lines of the training report."""

    round: int
    prompts: int
    rollouts: int
    student_tokens: int  # sampled, end-of-turn tokens included: all are trained on
    teacher_tokens_scored: int
    truncated: int  # rollouts cut at max_tokens
    reverse_kl: float  # mean over tokens of log p_student − log p_teacher (the sampled-token estimate)
    reverse_kl_per_sample: float  # mean over rollouts of the per-token sum
    steps: int
    sft_steps: int
    loss: float  # mean of the round's step losses
    learning_rate: float
    seconds: dict[str, float] = field(default_factory=dict)  # sample, teacher, student_logprobs, train, total
    student_tokens_per_s: float = 0.0  # sampling throughput


@dataclass
class Context:
    """What the rounds share: config, models, engines, prompts, optimizer."""

    cfg: TrainConfig
    model: Any
    tokenizer: Any
    teacher_tokenizer: Any
    teacher_name: str
    pool: list[PromptPair]
    sft_pool: list[tuple[list[int], list[int]]]
    optimizer: Any = None
    scheduler: Any = None
    sampler: StudentSampler | None = None
    scorer: TeacherScorer | None = None
    pad: int = 0
    steps_per_round: int = 1
    sft_steps_per_round: int = 0
    step: int = 0
    loss_history: list[dict[str, Any]] = field(default_factory=list)
    _ids: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return Path(self.cfg.output) / "onpolicy"

    def prompt_ids(self, pair: PromptPair, teacher: bool) -> list[int]:
        """The chat-rendered prompt (generation prompt appended) in the student's or the teacher's template."""
        key = (pair.id, "teacher" if teacher else "student")
        if key not in self._ids:
            tok = self.teacher_tokenizer if teacher else self.tokenizer
            rendered = tok.apply_chat_template(
                pair.teacher_messages if teacher else pair.messages, add_generation_prompt=True, tokenize=True
            )
            self._ids[key] = list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)
        return self._ids[key]


# ---------------------------------------------------------------- prompts and teacher


def prompt_pool(cfg: TrainConfig) -> list[PromptPair]:
    """The prompts to sample from: `onpolicy.prompts` when set, else the input records' (unique by prompt id)."""
    if cfg.onpolicy.prompts is not None:
        from seqdistill.prompts import load_prompts

        pool = [
            PromptPair(p.id, p.messages, p.teacher_messages, p.reference) for p in load_prompts(cfg.onpolicy.prompts)
        ]
    else:
        if not cfg.input:
            raise ConfigError(
                "objective onpolicy needs prompts: an input file (seqdistill train FILE) or onpolicy.prompts"
            )
        pool, seen = [], set()
        for lineno, s in enumerate(read_samples(cfg.input), start=1):
            if s.prompt_id in seen:
                continue
            seen.add(s.prompt_id)
            messages = [{"role": m.role, "content": m.content} for m in s.prompt]
            pool.append(
                PromptPair(s.prompt_id, messages, _teacher_prompt(s, cfg.input, lineno) or messages, s.reference)
            )
    if not pool:
        raise DataError(f"{cfg.input or cfg.onpolicy.prompts.source}: no prompts to sample the student on")
    return pool


def _teacher_prompt(sample: Sample, path: str, lineno: int) -> list[dict[str, str]] | None:
    given = sample.meta.get("teacher_prompt")
    if given is None:
        return None
    if not isinstance(given, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in given):
        raise DataError(f"{path} line {lineno}: meta.teacher_prompt must be a list of {{role, content}} messages")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in given]


def teacher_name(cfg: TrainConfig) -> str:
    """`onpolicy.teacher`, else the teacher model the input samples name."""
    if cfg.onpolicy.teacher:
        return cfg.onpolicy.teacher
    if cfg.input:
        first = next(iter(read_samples(cfg.input)), None)
        name = first.teacher.model if first is not None else None
        if first is not None and getattr(first.teacher, "role", None) == "student":  # a rollouts file: its teacher
            name = (first.meta.get("onpolicy") or {}).get("teacher")
        if name:
            return str(name)
    raise ConfigError("objective onpolicy needs a teacher: set onpolicy.teacher (a model dir or bundled:smollm2)")


def _sft_pool(cfg: TrainConfig, tokenizer) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of the input's teacher samples, for the `sft_share` steps."""
    if not cfg.onpolicy.sft_share:
        return []
    if not cfg.input:
        raise ConfigError("onpolicy.sft_share > 0 needs an input file of teacher samples to train on")
    from seqdistill.stages.preflight import render
    from seqdistill.stages.train import load_examples

    pool = []
    for example in load_examples(cfg.input, cfg.reasoning, fmt=cfg.input_format):
        full, start = render(tokenizer, example)
        if 0 < start < len(full):
            pool.append((full[:start], full[start:]))
    if not pool:
        raise DataError(f"{cfg.input}: no teacher sample renders a completion to train on (sft_share > 0)")
    return pool


def _load_teacher_tokenizer(name: str, tokenizer: str | None = None):
    from seqdistill.models import load_tokenizer

    if tokenizer:
        return load_tokenizer(tokenizer, key="onpolicy.teacher_tokenizer")
    return load_tokenizer(name, key="onpolicy.teacher (or onpolicy.teacher_tokenizer, for a served name)")


def _check_vocabulary(cfg: TrainConfig, teacher: str, teacher_tokenizer, tokenizer) -> None:
    from seqdistill.kd import require_same_vocabulary

    require_same_vocabulary(
        teacher_tokenizer.get_vocab(), tokenizer.get_vocab(), teacher, str(cfg.model), needs="on-policy distillation"
    )


# ---------------------------------------------------------------- plan


def steps_per_round(cfg: TrainConfig, rollouts: int) -> tuple[int, int]:
    """(on-policy steps, SFT steps) per round: one pass over the rollouts by default, SFT steps on top."""
    o = cfg.onpolicy
    per_step = cfg.batch_size * cfg.gradient_accumulation_steps
    onpolicy = o.steps_per_round or math.ceil(rollouts / per_step)
    sft = round(onpolicy * o.sft_share / (1 - o.sft_share)) if o.sft_share else 0
    return onpolicy, sft


def _round_seed(seed: int, r: int) -> int:
    return seed * 1_000_003 + r


def round_prompts(pool: list[PromptPair], cfg: TrainConfig, r: int) -> list[PromptPair]:
    """Round r's prompts: consecutive slices of one seeded shuffle of the pool, cycling (each once per round)."""
    order = list(range(len(pool)))
    random.Random(cfg.seed).shuffle(order)
    k = min(cfg.onpolicy.prompts_per_round, len(pool))
    start = (r - 1) * k
    return [pool[order[(start + i) % len(pool)]] for i in range(k)]


def _settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a checkpoint belongs to (flat keys): resuming under different ones would mix two runs.

    Batch sizes of the sampler and the scorer are left out: they change speed, not what is trained.
    """
    keys = ("model", "input", "learning_rate", "batch_size", "gradient_accumulation_steps", "lr_scheduler_type",
            "warmup_ratio", "seed", "dtype", "bf16", "reasoning")  # fmt: skip
    flat = cfg.model_dump(include=set(keys))
    skip = {"sample_batch_size", "teacher_batch_size"}
    flat.update({f"onpolicy.{k}": v for k, v in cfg.onpolicy.model_dump().items() if k not in skip})
    return json.loads(json.dumps(flat, sort_keys=True, default=str))


# ---------------------------------------------------------------- one round


def _autocast(ctx: Context):
    import torch

    if not ctx.cfg.bf16:
        return nullcontext()
    return torch.autocast(next(ctx.model.parameters()).device.type, dtype=torch.bfloat16)


def sample_rollouts(ctx: Context, prompts: list[PromptPair]) -> list[Rollout]:
    o = ctx.cfg.onpolicy
    student_ids = [ctx.prompt_ids(p, teacher=False) for p in prompts]
    ctx.sampler.load_weights(ctx.model)
    completions = ctx.sampler.sample(student_ids, o.n, o.temperature, o.top_p, o.max_tokens)
    return [
        Rollout(p, j, ids, ctx.prompt_ids(p, teacher=True), c)
        for p, ids, group in zip(prompts, student_ids, completions, strict=True)
        for j, c in enumerate(group)
        if c.ids  # an empty completion has no token to learn from
    ]


def score_rollouts(ctx: Context, rollouts: list[Rollout]) -> None:
    """The teacher's log-probability of every student token (and its top-k for the jsd loss)."""
    top_k = ctx.cfg.onpolicy.top_k if ctx.cfg.onpolicy.loss == "jsd" else 0
    scores = ctx.scorer.score([r.teacher_prompt_ids for r in rollouts], [r.completion.ids for r in rollouts], top_k)
    for r, s in zip(rollouts, scores, strict=True):
        if len(s.logprobs) != len(r.completion.ids):
            raise DataError(f"the teacher scored {len(s.logprobs)} of {len(r.completion.ids)} tokens of a rollout")
        r.teacher = s


def student_logprobs(ctx: Context, rollouts: list[Rollout]) -> None:
    """log p_θold of each sampled token: the same forward as training, before the round's first step."""
    import torch

    from seqdistill.losses import token_logprobs

    bs = ctx.cfg.batch_size
    with torch.no_grad():
        for start in range(0, len(rollouts), bs):
            batch = rollouts[start : start + bs]
            with _autocast(ctx):
                logits, targets, mask = completion_logits(
                    ctx.model, [r.prompt_ids for r in batch], [r.completion.ids for r in batch], ctx.pad
                )
            lp = token_logprobs(logits, targets)
            width = mask.shape[1]
            for i, r in enumerate(batch):
                r.old_logprobs = lp[i, width - len(r.completion.ids) :].tolist()


def _micro_loss(ctx: Context, kind: str, items: list, num_tokens: int):
    """The loss of one micro-batch (summing to the optimizer batch's token mean) and its statistics."""
    import torch

    from seqdistill.losses import cross_entropy_loss, reverse_kl_pg_loss, token_logprobs, topk_jsd_loss

    o = ctx.cfg.onpolicy
    if kind == "sft":
        prompts, completions = [p for p, _ in items], [c for _, c in items]
    else:
        prompts, completions = [r.prompt_ids for r in items], [r.completion.ids for r in items]
    with _autocast(ctx):
        logits, targets, mask = completion_logits(ctx.model, prompts, completions, ctx.pad)
    width = mask.shape[1]
    if kind == "sft":
        return cross_entropy_loss(token_logprobs(logits, targets), mask, num_tokens), {}
    if o.loss == "jsd":
        ids = right_aligned([r.teacher.top_ids for r in items], width, -1, torch.long)
        ids = torch.where(ids < logits.shape[-1], ids, torch.full_like(ids, -1))  # ids past the student's head
        lps = right_aligned([r.teacher.top_logprobs for r in items], width, 0.0, torch.float32)
        return topk_jsd_loss(logits, ids, lps, mask, o.beta, num_tokens)
    old = right_aligned([r.old_logprobs for r in items], width, 0.0, torch.float32)
    teacher = right_aligned([r.teacher.logprobs for r in items], width, 0.0, torch.float32)
    return reverse_kl_pg_loss(token_logprobs(logits, targets), old, teacher, mask, num_tokens)


def _step(ctx: Context, kind: str, items: list) -> dict[str, Any]:
    """One optimizer step on `items` (rollouts, or (prompt, completion) pairs for SFT), in micro-batches."""
    import torch

    count = (lambda x: len(x[1])) if kind == "sft" else (lambda x: len(x.completion.ids))
    num_tokens = sum(count(x) for x in items)
    total, stats = 0.0, {}
    bs = ctx.cfg.batch_size
    for start in range(0, len(items), bs):
        loss, parts = _micro_loss(ctx, kind, items[start : start + bs], num_tokens)
        loss.backward()
        total += float(loss.detach())
        for key, value in parts.items():
            stats[key] = stats.get(key, 0.0) + value * sum(count(x) for x in items[start : start + bs]) / num_tokens
    torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.cfg.onpolicy.max_grad_norm)
    ctx.optimizer.step()
    ctx.scheduler.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.step += 1
    return {"step": ctx.step, "loss": total, "kind": kind, **{k: round(v, 6) for k, v in stats.items()}}


def _step_plan(ctx: Context, r: int, rollouts: list[Rollout]) -> list[tuple[str, list]]:
    """The round's optimizer steps: batches of its rollouts (shuffled, cycling) and SFT batches, interleaved."""
    rng = random.Random(_round_seed(ctx.cfg.seed, r))
    per_step = ctx.cfg.batch_size * ctx.cfg.gradient_accumulation_steps
    order = list(range(len(rollouts)))
    rng.shuffle(order)
    plan: list[tuple[str, list]] = []
    for s in range(ctx.steps_per_round):
        picks = [order[(s * per_step + i) % len(order)] for i in range(min(per_step, len(order)))]
        plan.append(("onpolicy", [rollouts[i] for i in picks]))
    for _ in range(ctx.sft_steps_per_round):
        plan.append(("sft", rng.sample(ctx.sft_pool, min(per_step, len(ctx.sft_pool)))))
    rng.shuffle(plan)
    return plan


def run_round(ctx: Context, r: int) -> RoundMetrics:
    """Sample, score, write the rollouts, train: one round (its randomness seeded by (seed, round))."""
    import torch

    o, t0 = ctx.cfg.onpolicy, time.monotonic()
    torch.manual_seed(_round_seed(ctx.cfg.seed, r))
    prompts = round_prompts(ctx.pool, ctx.cfg, r)
    log.info("round %d/%d: the student samples %d × %d answers", r, o.rounds, len(prompts), o.n)
    rollouts = sample_rollouts(ctx, prompts)
    if not rollouts:
        raise DataError(f"round {r}: the student produced no tokens to learn from")
    t1 = time.monotonic()
    score_rollouts(ctx, rollouts)
    t2 = time.monotonic()
    student_logprobs(ctx, rollouts)
    t3 = time.monotonic()
    write_atomic(ctx.out / ROLLOUTS.format(r), (rollout_record(ctx, r, x).to_json() for x in rollouts))
    steps = [_step(ctx, kind, items) for kind, items in _step_plan(ctx, r, rollouts)]
    for s in steps:
        s["round"] = r
    ctx.loss_history += steps
    t4 = time.monotonic()
    tokens = sum(len(x.completion.ids) for x in rollouts)
    diffs = [[a - b for a, b in zip(x.old_logprobs, x.teacher.logprobs, strict=True)] for x in rollouts]
    seconds = {"sample": t1 - t0, "teacher": t2 - t1, "student_logprobs": t3 - t2, "train": t4 - t3, "total": t4 - t0}
    m = RoundMetrics(
        round=r, prompts=len(prompts), rollouts=len(rollouts), student_tokens=tokens, teacher_tokens_scored=tokens,
        truncated=sum(x.completion.finish_reason == "length" for x in rollouts),
        reverse_kl=round(sum(map(sum, diffs)) / tokens, 6),
        reverse_kl_per_sample=round(sum(map(sum, diffs)) / len(rollouts), 6),
        steps=sum(s["kind"] == "onpolicy" for s in steps), sft_steps=sum(s["kind"] == "sft" for s in steps),
        loss=round(sum(s["loss"] for s in steps) / max(len(steps), 1), 6),
        learning_rate=ctx.scheduler.get_last_lr()[0], seconds={k: round(v, 3) for k, v in seconds.items()},
        student_tokens_per_s=round(tokens / max(t1 - t0, 1e-9), 1),
    )  # fmt: skip
    log.info(
        "round %d/%d: %d rollouts, %d student tokens, reverse KL %.4f/token; sample %.1fs, teacher %.1fs, train %.1fs",
        r, o.rounds, m.rollouts, tokens, m.reverse_kl, seconds["sample"], seconds["teacher"],
        seconds["student_logprobs"] + seconds["train"],
    )  # fmt: skip
    return m


def rollout_record(ctx: Context, r: int, x: Rollout) -> Sample:
    """A rollout as a record: the student's answer, the teacher's scores (meta.logprobs), the student's own."""
    o, tok = ctx.cfg.onpolicy, ctx.tokenizer
    ids = x.completion.ids
    texts = [tok.convert_tokens_to_string([t]) for t in tok.convert_ids_to_tokens(ids)]
    teacher: dict[str, Any] = {"tokens": texts, "ids": ids, "logprobs": [round(v, 4) for v in x.teacher.logprobs]}
    if x.teacher.top_ids is not None:
        teacher["top"] = [
            [
                [tok.convert_tokens_to_string([tok.convert_ids_to_tokens(i)]), round(v, 4)]
                for i, v in zip(ti, tv, strict=True)
            ]
            for ti, tv in zip(x.teacher.top_ids, x.teacher.top_logprobs, strict=True)
        ]
    sampling = {"temperature": o.temperature, "top_p": o.top_p, "max_tokens": o.max_tokens}
    kl = sum(a - b for a, b in zip(x.old_logprobs, x.teacher.logprobs, strict=True))
    meta: dict[str, Any] = {
        "logprobs": teacher,
        "student_logprobs": {"logprobs": [round(v, 4) for v in x.old_logprobs]},
        "onpolicy": {"round": r, "teacher": ctx.teacher_name, "reverse_kl": round(kl, 4)},
    }
    if x.prompt.teacher_messages != x.prompt.messages:
        meta["teacher_prompt"] = x.prompt.teacher_messages
    return Sample(
        id=sample_id(x.prompt.id, f"{ctx.cfg.model}@onpolicy-round-{r}", x.prompt.messages, sampling, x.index),
        prompt_id=x.prompt.id, sample_index=x.index, prompt=[Message(**m) for m in x.prompt.messages],
        completion=[Message(role="assistant", content=tok.decode(ids, skip_special_tokens=True).strip())],
        reference=x.prompt.reference, finish_reason=x.completion.finish_reason,
        usage={"prompt_tokens": len(x.prompt_ids), "completion_tokens": len(ids)},
        teacher={"model": str(ctx.cfg.model), "backend": "onpolicy", "role": "student", "round": r},
        sampling=sampling, meta=meta,
    )  # fmt: skip


# ---------------------------------------------------------------- checkpoints


def _save_checkpoint(ctx: Context, r: int, rounds: list[RoundMetrics]) -> Path:
    """Weights, optimizer and scheduler state, metrics: written beside, renamed into place, older ones removed."""
    import torch

    final = ctx.out / CHECKPOINT.format(r)
    tmp = ctx.out / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    ctx.model.save_pretrained(tmp)
    torch.save({"optimizer": ctx.optimizer.state_dict(), "scheduler": ctx.scheduler.state_dict()}, tmp / "trainer.pt")
    state = {"round": r, "step": ctx.step, "settings": _settings(ctx.cfg), "rounds": [asdict(m) for m in rounds],
             "loss_history": ctx.loss_history}  # fmt: skip
    write_json(tmp / "state.json", state)  # last: a checkpoint without it is incomplete
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in ctx.out.glob("checkpoint-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def last_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint under <output>/onpolicy (one with its state.json)."""
    done = [p for p in directory.glob("checkpoint-*") if (p / "state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1])) if done else None


def _resume(ctx: Context) -> tuple[int, list[RoundMetrics], Path | None]:
    """Load the newest checkpoint into model, optimizer and scheduler: (rounds done, their metrics, its path)."""
    import torch
    from safetensors.torch import load_file

    path = last_checkpoint(ctx.out)
    if path is None:
        return 0, [], None
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    settings = _settings(ctx.cfg)
    if state["settings"] != settings:
        key = next(k for k in settings if state["settings"].get(k) != settings[k])
        raise ConfigError(
            f"{path} was made with other settings ({key}: {state['settings'].get(key)!r}, now {settings[key]!r}): "
            f"use another output directory, or delete {ctx.out} to start over"
        )
    weights: dict[str, Any] = {}
    for f in sorted(path.glob("*.safetensors")):
        weights.update(load_file(f))
    missing, unexpected = ctx.model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - _tied(ctx.model):
        raise ConfigError(f"{path}: its weights do not fit the student {ctx.cfg.model} (delete {ctx.out} to restart)")
    trainer = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    ctx.optimizer.load_state_dict(trainer["optimizer"])
    ctx.scheduler.load_state_dict(trainer["scheduler"])
    ctx.step, ctx.loss_history = state["step"], state["loss_history"]
    return state["round"], [RoundMetrics(**m) for m in state["rounds"]], path


def _tied(model) -> set[str]:
    """Parameter names that share storage with an earlier one (save_pretrained stores them once)."""
    seen: dict[int, str] = {}
    tied = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            tied.add(name)
        seen.setdefault(tensor.data_ptr(), name)
    return tied


# ---------------------------------------------------------------- entry points


def _setup(cfg: TrainConfig) -> Context:
    """Prompts, teacher name and tokenizer (vocabulary checked), the student, optimizer and schedule."""
    import torch
    from transformers import get_scheduler

    from seqdistill.models import load_model

    pool = prompt_pool(cfg)
    teacher = teacher_name(cfg)
    teacher_tokenizer = _load_teacher_tokenizer(teacher, cfg.onpolicy.teacher_tokenizer)
    model, tokenizer = load_model(
        cfg.model, cfg.dtype, for_generation=False, attn_implementation=cfg.attn_implementation
    )
    _check_vocabulary(cfg, teacher, teacher_tokenizer, tokenizer)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    _disable_dropout(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    ctx = Context(cfg, model, tokenizer, teacher_tokenizer, teacher, pool, _sft_pool(cfg, tokenizer))
    ctx.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rollouts = min(cfg.onpolicy.prompts_per_round, len(pool)) * cfg.onpolicy.n
    ctx.steps_per_round, ctx.sft_steps_per_round = steps_per_round(cfg, rollouts)
    total = cfg.onpolicy.rounds * (ctx.steps_per_round + ctx.sft_steps_per_round)
    ctx.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    ctx.scheduler = get_scheduler(
        cfg.lr_scheduler_type, ctx.optimizer, num_warmup_steps=int(cfg.warmup_ratio * total), num_training_steps=total
    )
    return ctx


def _disable_dropout(model) -> None:
    """Dropout off: θold and θ must be the same function at a round's first step (ratio exactly 1)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def _sampler(ctx: Context) -> StudentSampler:
    import torch

    from seqdistill.models import resolve_model
    from seqdistill.rollouts import TransformersSampler, VLLMSampler

    o = ctx.cfg.onpolicy
    if o.sampler == "vllm":
        return VLLMSampler(resolve_model(ctx.cfg.model), ctx.cfg.dtype, ctx.cfg.seed)
    return TransformersSampler(ctx.model, ctx.tokenizer, o.sample_batch_size, torch.bfloat16 if ctx.cfg.bf16 else None)


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train the student on-policy for `onpolicy.rounds` rounds (resuming after the last finished one)."""
    start = time.monotonic()
    ctx = _setup(cfg)
    done, rounds, resumed = _resume(ctx)
    if resumed:
        log.info("resuming after round %d from %s", done, resumed)
    first_step = ctx.step
    if done < cfg.onpolicy.rounds:
        ctx.scorer = make_scorer(cfg.onpolicy, ctx.teacher_name, ctx.teacher_tokenizer)
        ctx.sampler = _sampler(ctx)
        try:
            for r in range(done + 1, cfg.onpolicy.rounds + 1):
                rounds.append(run_round(ctx, r))
                _save_checkpoint(ctx, r, rounds)
        finally:
            ctx.scorer.close()
    out = Path(cfg.output)
    ctx.model.save_pretrained(out)
    ctx.tokenizer.save_pretrained(out)
    report = _report(ctx, rounds, resumed, done, first_step, time.monotonic() - start)
    write_json(out / "training_report.json", report)
    return report


def _report(
    ctx: Context, rounds: list[RoundMetrics], resumed: Path | None, done: int, first_step: int, seconds: float
):
    """The training report: the fields every objective writes (report/CLI read them), then per-round lines."""
    cfg = ctx.cfg
    losses = [h["loss"] for h in ctx.loss_history]
    tokens = sum(m.student_tokens for m in rounds)
    tokens_now = sum(m.student_tokens for m in rounds if m.round > done)
    split = {
        k: round(sum(m.seconds.get(k, 0.0) for m in rounds), 1)
        for k in ("sample", "teacher", "student_logprobs", "train")
    }
    return {
        "model": cfg.model, "output": cfg.output, "objective": "onpolicy", "teacher": ctx.teacher_name,
        "examples": sum(m.rollouts for m in rounds), "epochs": None, "rounds_done": len(rounds),
        "steps": ctx.step, "train_loss": sum(losses) / len(losses) if losses else None,
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "loss_history": ctx.loss_history, "eval_loss": None,
        "resumed_from": str(resumed) if resumed else None, "start_round": done + 1,
        "steps_run": ctx.step - first_step, "lora": False, "kd": None, "packing": False,
        "tokens": tokens, "teacher_tokens_scored": sum(m.teacher_tokens_scored for m in rounds),
        "first_reverse_kl": rounds[0].reverse_kl if rounds else None,
        "last_reverse_kl": rounds[-1].reverse_kl if rounds else None,
        "seconds": round(seconds, 1), "tokens_per_s": round(tokens_now / max(seconds, 1e-9), 1),
        "seconds_split": split, "rounds": [asdict(m) for m in rounds],
        "onpolicy": cfg.onpolicy.model_dump(), "rollouts_dir": str(ctx.out),
    }  # fmt: skip


def check(cfg: TrainConfig) -> dict[str, Any]:
    """`train --check` for on-policy: prompts found, teacher vocabulary = student's, prompts render (no weights)."""
    from seqdistill.models import load_tokenizer

    pool = prompt_pool(cfg)
    teacher = teacher_name(cfg)
    teacher_tokenizer = _load_teacher_tokenizer(teacher, cfg.onpolicy.teacher_tokenizer)
    tokenizer = load_tokenizer(cfg.model)
    _check_vocabulary(cfg, teacher, teacher_tokenizer, tokenizer)
    ctx = Context(cfg, None, tokenizer, teacher_tokenizer, teacher, pool, [])
    student = [len(ctx.prompt_ids(p, teacher=False)) for p in pool]
    teacher_lengths = [len(ctx.prompt_ids(p, teacher=True)) for p in pool]
    rollouts = min(cfg.onpolicy.prompts_per_round, len(pool)) * cfg.onpolicy.n
    on, sft = steps_per_round(cfg, rollouts)
    return {
        "objective": "onpolicy", "prompts": len(pool), "teacher": teacher, "vocabulary": "shared",
        "rounds": cfg.onpolicy.rounds, "rollouts_per_round": rollouts, "steps_per_round": on,
        "sft_steps_per_round": sft,
        "longest_student_prompt": max(student), "longest_teacher_prompt": max(teacher_lengths),
        "teacher_prompt_differs": sum(p.teacher_messages != p.messages for p in pool),
    }  # fmt: skip
