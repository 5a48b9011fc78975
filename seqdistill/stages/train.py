"""train: fine-tune the student on kept samples with TRL's SFTTrainer, loss on the completion only.

The kept file is TRL's conversational prompt-completion format, so TRL masks the prompt and supervises
the completion including the chat template's end-of-turn token. `max_length` defaults to the longest
example so nothing is cut silently; a smaller explicit limit is reported with how many samples it cuts.
LoRA (peft; the adapters are merged into the saved student), packing (TRL's best-fit decreasing),
checkpoints every `save_steps` with resume from the last one, and a held-out eval split are options.
With `kd_alpha` > 0 the loss adds Hinton's soft targets from the teacher's top-k logprobs (`kd.py`,
`trainer.py`), after checking that teacher and student share a vocabulary. `objective: onpolicy` runs
on-policy distillation instead (`onpolicy.py`).

Conversations (records with tools, tool calls or several completion messages, or earlier assistant
turns to learn with `train_on: all_assistant`) are tokenized here instead: the whole conversation
through the chat template, with a loss mask over every supervised assistant turn found by rendering
prefixes (`preflight.conversation_tokens`), handed to TRL as `input_ids` + `completion_mask`. Tool
results and user turns are never learned. Plain prompt-completion records go to TRL as before, unless
one record of the file is a conversation (one dataset holds one shape). Not covered: soft targets
(`kd_alpha`) on conversations.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from seqdistill.adapters import read_input
from seqdistill.config import InputFormatConfig, TrainConfig
from seqdistill.errors import ConfigError, DataError
from seqdistill.extras import require
from seqdistill.io import check_output_dir, exclusive_lock, write_json
from seqdistill.records import Message, Sample
from seqdistill.stages.preflight import PreflightError, conversation_tokens, render, run_preflight

log = logging.getLogger(__name__)


def to_example(sample: Sample, reasoning: str = "think", train_on: str = "completion") -> dict[str, Any]:
    """A sample as a training example; a reasoning trace is rendered as <think>…</think> before the content.

    A plain record: TRL's prompt-completion example. A conversation (see the module doc): its `messages`,
    `tools`, and the indices of the assistant messages to learn (`supervised`): those of the completion,
    and with `train_on: all_assistant` the prompt's earlier assistant turns too.
    """
    earlier = train_on == "all_assistant" and any(m.role == "assistant" for m in sample.prompt)
    if not sample.is_conversation and not earlier:
        msg = sample.completion[0]
        content = msg.content
        if msg.reasoning_content and reasoning == "think":
            content = f"<think>\n{msg.reasoning_content.strip()}\n</think>\n\n{content}"
        prompt = [{"role": m.role, "content": m.content} for m in sample.prompt]
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": content}]}
    messages = [_chat(m, reasoning) for m in [*sample.prompt, *sample.completion]]
    first = 0 if earlier else len(sample.prompt)
    supervised = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i >= first]
    return {"messages": messages, "tools": sample.tools, "supervised": supervised, "id": sample.id}


def _chat(message: Message, reasoning: str) -> dict[str, Any]:
    """One message as the chat template takes it, an assistant's reasoning folded into its content."""
    out = message.as_chat()
    if message.role == "assistant" and message.reasoning_content and reasoning == "think":
        out["content"] = f"<think>\n{message.reasoning_content.strip()}\n</think>\n\n{message.content}"
    return out


def as_conversation(example: dict[str, Any]) -> dict[str, Any]:
    """A prompt-completion example in the conversation form (for a file that mixes both shapes)."""
    if "messages" in example:
        return example
    messages = example["prompt"] + example["completion"]
    return {"messages": messages, "tools": None, "supervised": list(range(len(example["prompt"]), len(messages)))}


def training_rows(tokenizer, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the trainer gets: the examples as they are, or conversations tokenized with their loss masks.

    A template without the prefix property (see `preflight.conversation_tokens`) is a PreflightError.
    """
    if not examples or "messages" not in examples[0]:
        return examples
    rows = []
    for index, example in enumerate(examples):
        try:
            ids, mask, _ = conversation_tokens(tokenizer, example)
        except PreflightError as e:
            raise PreflightError(
                f"pre-flight check failed: example {index} (sample {example.get('id')}): {e}"
            ) from None
        rows.append({"input_ids": ids, "completion_mask": mask})
    return rows


def training_samples(path: str, warn: bool = True, fmt: InputFormatConfig | None = None) -> list[Sample]:
    """The samples of `path` with a completion, each sample id once: the first wins, as in filter.

    A repeated id (a file two runs appended to, or concatenated) would train twice on one sample; it is
    dropped with a warning rather than refused, since the first record is a complete sample.
    """
    samples, seen, repeated = [], set(), 0
    for s in read_input(path, fmt):
        if s.id in seen:
            repeated += 1
            continue
        seen.add(s.id)
        if s.completion:
            samples.append(s)
    if repeated and warn:
        log.warning("%s: %d records repeat an earlier sample id; training on the first of each", path, repeated)
    return samples


def load_examples(
    path: str, reasoning: str, train_on: str = "completion", *, fmt: InputFormatConfig | None = None
) -> list[dict[str, Any]]:
    """The training examples of `path`: all prompt-completion, or all conversations when any record is one."""
    examples = [to_example(s, reasoning, train_on) for s in training_samples(path, fmt=fmt)]
    if not examples:
        raise DataError(f"{path}: no samples to train on (did the filter keep anything? see its report)")
    if any("messages" in ex for ex in examples):
        examples = [as_conversation(ex) for ex in examples]
    return examples


def example_lengths(tokenizer, examples: list[dict[str, Any]]) -> list[int]:
    """Token length of each prompt+completion as TRL tokenizes it (the chat template applied); of a tokenized row."""
    return [
        len(ex["input_ids"])
        if "input_ids" in ex
        else len(
            tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
        for ex in examples
    ]


def build_trainer(cfg: TrainConfig, model, tokenizer, examples: list[dict[str, Any]], max_length: int, kd_k: int = 0):
    """The trainer for these examples (separate from `run` so tests can inspect its masks and batches)."""
    import datasets
    import torch
    from trl import SFTConfig

    from seqdistill.trainer import DistillTrainer, readable_progress

    datasets.disable_progress_bars()

    train_rows, eval_rows = _split(examples, cfg.eval_fraction, cfg.seed)
    args = SFTConfig(
        output_dir=str(Path(cfg.output) / "checkpoints"),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,
        max_length=None if cfg.padding_free and not cfg.packing else max_length,  # TRL: no cut when padding-free
        completion_only_loss=True,
        bf16=cfg.bf16,  # TRL turns bf16 on by default; we decide explicitly
        fp16=False,
        **_checkpointing(SFTConfig, cfg.gradient_checkpointing),  # TRL defaults it on; off is ~25% faster on CPU
        logging_steps=logging_steps(cfg, len(train_rows)),
        logging_first_step=True,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        eval_strategy="epoch" if eval_rows else "no",
        packing=cfg.packing,
        padding_free=cfg.padding_free,
        report_to="none",
        ddp_find_unused_parameters=False,  # every parameter gets a gradient: skip DDP's extra graph traversal
        seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=bool(os.environ.get("SEQDISTILL_NO_PROGRESS")),
        prediction_loss_only=True,  # eval reports the loss; keeping logits would hold [B, L, V] per batch
        use_liger_kernel=cfg.liger_kernel,
    )
    trainer = DistillTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_rows),
        eval_dataset=datasets.Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=_lora_config(cfg) if cfg.lora else None,
        kd_alpha=cfg.kd_alpha,
        kd_temperature=cfg.kd_temperature,
        kd_k=kd_k,
    )
    readable_progress(trainer)
    return trainer


def logging_steps(cfg: TrainConfig, examples: int) -> int:
    """`logging_steps`, or about 25 points over the run so a short run still has a loss curve (packing: fewer).

    >>> logging_steps(TrainConfig(batch_size=8, epochs=2), 82), logging_steps(TrainConfig(batch_size=8), 8000)
    (1, 80)
    """
    if cfg.logging_steps:
        return cfg.logging_steps
    per_step = cfg.batch_size * cfg.gradient_accumulation_steps * int(os.environ.get("WORLD_SIZE") or 1)
    steps = math.ceil(examples / per_step) * cfg.epochs
    return max(1, int(steps // 25))


def _checkpointing(config_cls, on: bool) -> dict[str, bool]:
    """The checkpointing switch under the name this transformers knows: `activation_checkpointing` in 5.24
    (where `gradient_checkpointing` is a deprecated alias that warns, to go in v6), `gradient_checkpointing` in 5.20.

    Both are accepted so one environment can hold vLLM, which pins transformers < 5.21 (docs/install.md).
    """
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": on}


def _split(examples: list[dict[str, Any]], fraction: float, seed: int):
    """A seeded held-out split for eval loss (none when fraction is 0)."""
    if not fraction:
        return examples, []
    import random

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(len(examples) * fraction))
    held = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def _lora_config(cfg: TrainConfig):
    try:
        from peft import LoraConfig
    except ImportError:
        raise ConfigError("lora needs peft: pip install 'peft>=0.21'") from None
    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules="all-linear",
        task_type="CAUSAL_LM",
    )  # fmt: skip


def _qlora_config(cfg: TrainConfig):
    _require("bitsandbytes", "qlora: true needs bitsandbytes: pip install 'seqdistill[qlora]'")
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if cfg.bf16 or cfg.dtype == "bfloat16" else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
    )


def _save_merged(cfg: TrainConfig, model, out: Path) -> None:
    """Save the student with its LoRA adapters merged (QLoRA: into the full-precision base, not the 4-bit one)."""
    if not cfg.qlora:
        model.merge_and_unload().save_pretrained(str(out))
        return
    from peft import PeftModel

    from seqdistill.models import load_model

    adapter = out / "adapter"
    model.save_pretrained(str(adapter))  # the adapters alone, kept beside the merged student
    base, _ = load_model(cfg.model, cfg.dtype, for_generation=False)
    PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().save_pretrained(str(out))


def _step_counter():
    """A callback counting the optimizer steps this run takes (transformers is imported only to train)."""
    from transformers import TrainerCallback

    class StepCounter(TrainerCallback):
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1

    return StepCounter()


def _last_checkpoint(output: Path) -> str | None:
    """The newest `checkpoint-N` under <output>/checkpoints: a rerun after a crash resumes there."""
    checkpoints = sorted((output / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(checkpoints[-1]) if checkpoints else None


def _eos_list(generation_config) -> list[int] | None:
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        return None
    return list(eos) if isinstance(eos, list | tuple) else [eos]


def _inputs(cfg: TrainConfig) -> list[dict[str, Any]]:
    """The examples to train on; a missing input or student is a one-line error."""
    if not cfg.input:
        raise ConfigError("train needs an input file: seqdistill train KEPT.jsonl")
    if not cfg.model:
        raise ConfigError("train needs a student model: --model DIR (or bundled:smollm2)")
    examples = load_examples(cfg.input, cfg.reasoning, cfg.train_on, fmt=cfg.input_format)
    if cfg.kd_alpha > 0 and "messages" in examples[0]:
        raise ConfigError(
            f"{cfg.input}: kd_alpha > 0 (soft targets) covers plain prompt-completion records only, and this file "
            "holds conversations (tools, tool calls or several turns): set kd_alpha: 0"
        )
    return examples


def _require(module: str, message: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(message)


def _load_tokenizer(name: str, key: str):
    from transformers import AutoTokenizer

    from seqdistill.models import resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model(name))
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot load the tokenizer of {name!r} ({str(e).splitlines()[0][:160]}): set {key} to a local "
            "directory holding it"
        ) from None


def attach_soft_targets(cfg: TrainConfig, tokenizer, examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Add each example's teacher top-k rows (`kd_ids`, `kd_logprobs`, `kd_tokens`) for its completion tokens.

    Refuses when no sample carries top-k logprobs, when the teacher's vocabulary differs from the
    student's, or when no completion token lines up with the teacher's tokens. The teacher's tokenizer is
    `kd_teacher_tokenizer`, else the one that scored the samples (`meta.logprobs_source`, written by
    `seqdistill score`), else the samples' teacher model. Returns coverage figures.
    """
    from seqdistill.kd import TokenTable, require_same_vocabulary, teacher_targets

    # the same samples, in the same order, as load_examples
    samples = training_samples(cfg.input, warn=False, fmt=cfg.input_format)
    logprobs = [s.logprobs for s in samples]
    k = max((lp.k for lp in logprobs if lp is not None), default=0)
    if not k:
        raise DataError(
            f"{cfg.input}: kd_alpha > 0 needs the teacher's top-k logprobs and no sample has them: "
            "generate with --set logprobs=K (K ≤ 20) or run `seqdistill score` on the samples, or set kd_alpha: 0"
        )
    source = next((s.logprobs_source for s in samples if s.logprobs_source is not None), None)
    teacher = cfg.kd_teacher_tokenizer or (
        source.tokenizer or source.model if source else samples[0].teacher.model if samples[0].teacher else None
    )
    if teacher is None:
        raise ConfigError("kd_alpha > 0: the samples do not name their teacher; set kd_teacher_tokenizer")
    teacher_tok = _load_tokenizer(teacher, "kd_teacher_tokenizer")
    require_same_vocabulary(teacher_tok.get_vocab(), tokenizer.get_vocab(), teacher, str(cfg.model))
    table = TokenTable(tokenizer)
    covered = supervised = 0
    for example, lp in zip(examples, logprobs, strict=True):
        full, start = render(tokenizer, example)
        completion = full[start:]
        ids, lps = teacher_targets(lp, completion, table, k)
        example.update(kd_ids=ids, kd_logprobs=lps, kd_tokens=completion[: len(ids)])
        covered, supervised = covered + len(ids), supervised + len(completion)
    if not covered:
        raise DataError(
            f"{cfg.input}: none of the completions' tokens match the teacher's logprob tokens under the student's "
            f"tokenizer ({cfg.model}): soft targets need the teacher's tokenizer"
        )
    share = covered / max(supervised, 1)
    if share < 0.9:
        log.warning("soft targets cover %.0f%% of the supervised tokens (the rest: cross-entropy only)", 100 * share)
    return {"k": k, "teacher_tokenizer": teacher, "covered_tokens": covered, "supervised_tokens": supervised,
            "coverage": round(share, 4), "alpha": cfg.kd_alpha, "temperature": cfg.kd_temperature}  # fmt: skip


def check(cfg: TrainConfig) -> dict[str, Any]:
    """`seqdistill train --check`: the pre-flight check alone (tokenizer and configs, no weights loaded).

    With `kd_alpha` > 0 it also checks the teacher's vocabulary and reports the soft targets' coverage.
    """
    require("train --check")
    if cfg.objective == "onpolicy":
        from seqdistill import onpolicy

        return onpolicy.check(cfg)
    examples = _inputs(cfg)
    from transformers import AutoTokenizer, GenerationConfig

    from seqdistill.models import resolve_model

    path = resolve_model(cfg.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise ConfigError(f"cannot load the tokenizer of {cfg.model!r}: {str(e).splitlines()[0][:200]}") from None
    try:
        generation_eos = _eos_list(GenerationConfig.from_pretrained(path))
    except OSError:  # no generation_config.json: nothing to compare
        generation_eos = None
    lengths = example_lengths(tokenizer, training_rows(tokenizer, examples))
    report = run_preflight(tokenizer, examples, lengths, cfg.max_length, cfg.max_truncated_share, generation_eos)
    if cfg.kd_alpha > 0:  # the vocabulary check and the soft-target coverage, before any GPU time is spent
        kd = attach_soft_targets(cfg, tokenizer, examples)
        report.update(kd_top_k=kd["k"], kd_coverage=kd["coverage"], kd_teacher_tokenizer=kd["teacher_tokenizer"])
    return report


def _one_writer(fn):
    """Check the output dir before any work and hold it (an OS lock) while training: one training per output.

    Under torchrun every rank runs this: only rank 0, the one that writes, takes the lock.
    """

    @functools.wraps(fn)
    def wrapper(cfg: TrainConfig) -> dict[str, Any]:
        check_output_dir(cfg.output)
        if os.environ.get("RANK", "0") != "0":
            return fn(cfg)
        with exclusive_lock(cfg.output):  # `.NAME.lock` beside the dir: nothing is created in it before training
            return fn(cfg)

    return wrapper


@_one_writer
def run(cfg: TrainConfig) -> dict[str, Any]:
    require("train")
    if cfg.objective == "onpolicy":  # the student samples, the teacher scores: seqdistill/onpolicy.py
        from seqdistill import onpolicy

        return onpolicy.run(cfg)
    examples = _inputs(cfg)
    from seqdistill.models import load_model

    if cfg.liger_kernel:
        _require("liger_kernel", "liger_kernel: true needs `pip install liger-kernel` (and a GPU)")
    model, tokenizer = load_model(
        cfg.model, cfg.dtype, for_generation=False, attn_implementation=cfg.attn_implementation,
        quantization_config=_qlora_config(cfg) if cfg.qlora else None,
    )  # fmt: skip
    rows = training_rows(tokenizer, examples)  # conversations: tokenized with their masks
    lengths = example_lengths(tokenizer, rows)
    preflight = run_preflight(
        tokenizer, examples, lengths, cfg.max_length, cfg.max_truncated_share, _eos_list(model.generation_config)
    )
    longest = max(lengths)
    max_length = cfg.max_length or longest
    cut = preflight["truncated"]
    if cut:
        log.warning("max_length %d cuts %d of %d samples (longest: %d tokens)", max_length, cut, len(lengths), longest)
    if cut and cfg.padding_free and not cfg.packing:
        raise ConfigError(
            f"padding_free without packing cannot cut examples to max_length {max_length} ({cut} are longer, the "
            f"longest {longest} tokens): raise max_length, unset it, or set packing: true"
        )
    kd = attach_soft_targets(cfg, tokenizer, examples) if cfg.kd_alpha > 0 else None
    trainer = build_trainer(cfg, model, tokenizer, rows, max_length, kd["k"] if kd else 0)
    out = Path(cfg.output)
    resume = _last_checkpoint(out) if cfg.save_steps else None
    if resume:
        log.info("resuming from %s", resume)
    counter = _step_counter()
    trainer.add_callback(counter)
    start = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.monotonic() - start
    if cfg.lora:  # merge the adapters: the student is a plain model for eval and serving
        if trainer.accelerator.is_main_process:
            _save_merged(cfg, trainer.model, out)
    else:
        trainer.save_model(str(out))  # weights and generation config (EOS checked by the pre-flight)
    main_process = trainer.is_world_process_zero()  # several processes (torchrun): one writes the outputs
    if main_process:
        tokenizer.save_pretrained(str(out))  # includes the chat template
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens = sum(min(n, max_length) for n in lengths) * cfg.epochs
    report = {
        "model": cfg.model,
        "output": str(out),
        "examples": len(examples),
        "epochs": cfg.epochs,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "loss_history": [
            {key: h[key] for key in ("step", "loss", "kd", "ce") if key in h}
            for h in trainer.state.log_history
            if "loss" in h
        ],
        "eval_loss": next((h["eval_loss"] for h in reversed(trainer.state.log_history) if "eval_loss" in h), None),
        "resumed_from": resume,
        "steps_run": counter.steps,  # optimizer steps taken by this run (fewer than `steps` after a resume)
        "lora": cfg.lora,
        "kd": kd,
        "packing": cfg.packing,
        "tokens": int(tokens),
        "max_length": max_length,
        "longest_example": longest,
        "truncated_examples": cut,
        "preflight": preflight,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
    }
    if main_process:
        write_json(out / "training_report.json", report)
    return report
