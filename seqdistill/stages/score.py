"""score: the teacher's log-probability of every completion token of every sample, into `meta.logprobs`.

For each input sample, the teacher's prompt (see `teacher_messages`) and the sample's completion are
rendered with the teacher's chat template and tokenizer exactly as `train` renders a prompt-completion
example (`preflight.render`: the completion's tokens are those after the longest common prefix of the
prompt alone and prompt + completion, so they include the template's end-of-turn tokens). A backend
(score_base.py: a server's prompt logprobs, or in-process transformers / vLLM) returns the teacher's raw
log-probability of each completion token and its top-k, written as `meta.logprobs` (`records.Logprobs`,
with the token ids) and `meta.logprobs_source` (who scored, k, the request key). When a template merges
the last prompt token with the first completion token, the split falls before that token: the scored
tokens start with the merged one, exactly what `train` supervises.

Resume is by request key (`records.score_id`: the sample, its completion, the teacher's prompt, the
teacher, its tokenizer and k): a sample already in the output with the same key is never sent again, so
re-running the same command sends only what is missing. Each scored sample is appended the moment it
arrives; failures go to `<stem>.failures.jsonl`, counts to `<stem>.manifest.json`; Ctrl-C as in generate.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from seqdistill import __version__
from seqdistill.adapters import read_input
from seqdistill.backends import resolve_backend
from seqdistill.backends.score_base import Failure, ScoreRequest, ScoreResult, create_score_backend
from seqdistill.config import ScoreConfig
from seqdistill.errors import BackendError, ConfigError, DataError
from seqdistill.io import SampleWriter, read_samples, repair_tail, write_json
from seqdistill.models import model_identity
from seqdistill.progress import progress_bar
from seqdistill.records import Message, Sample, score_id
from seqdistill.stages.generate import Interrupted, _ctrl_c, in_shard, side_path
from seqdistill.stages.preflight import render
from seqdistill.stages.train import _load_tokenizer, to_example

log = logging.getLogger(__name__)


@dataclass
class ScoreSummary:
    """What a score run did (also the manifest's counts)."""

    input: str
    output: str
    samples: int  # in the input (this shard's, with a completion)
    already_done: int
    scored: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    skipped_empty: int = 0  # samples without a completion message
    prompt_tokens: int = 0
    completion_tokens: int = 0  # completion tokens scored this run
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    interrupted: bool = False
    budget_reached: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Item:
    """One sample to score: its request key, the teacher's prompt and the completion as messages."""

    sample: Sample
    key: str
    prompt: list[dict[str, str]]
    completion: list[dict[str, str]]


def teacher_messages(sample: Sample, context: tuple[str | None, list[dict[str, str]]] | None) -> list[dict[str, str]]:
    """The teacher's prompt for a sample: the configured teacher context, else `meta.teacher_prompt`, else the prompt.

    `context` (from `prompts.teacher_system_prompt` / `prompts.teacher_examples`) is applied to the
    student's prompt: its system message replaced (when a teacher system prompt is set), the worked
    examples inserted before the first non-system message.
    """
    student = [{"role": m.role, "content": m.content} for m in sample.prompt]
    if context is not None:
        system, examples = context
        has_system = student[0]["role"] == "system"
        head = [{"role": "system", "content": system}] if system is not None else student[: int(has_system)]
        return head + list(examples) + student[int(has_system) :]
    given = sample.meta.get("teacher_prompt")
    if given is None:
        return student
    try:
        return [{"role": m.role, "content": m.content} for m in (Message.model_validate(x) for x in given)]
    except (TypeError, ValidationError) as e:
        raise DataError(f"sample {sample.id}: meta.teacher_prompt is not a list of chat messages ({e})") from None


def _teacher_context(cfg: ScoreConfig) -> tuple[str | None, list[dict[str, str]]] | None:
    """(system prompt, worked-example turns) from the prompts.teacher_* keys; None when neither is set."""
    p = cfg.prompts
    if p.teacher_system_prompt is None and not p.teacher_examples:
        return None
    from seqdistill.prompts import _Renderer  # renders worked examples exactly as generate does

    renderer = _Renderer(p.teacher_system_prompt, p.template, p.teacher_examples, p)
    return renderer.system, renderer.examples


def plan(cfg: ScoreConfig, tokenizer_name: str) -> tuple[list[_Item], int]:
    """The samples of this shard to score, with their keys; and how many had no completion."""
    context = _teacher_context(cfg)
    teacher = model_identity(cfg.model)
    items, empty = [], 0
    for sample in read_input(cfg.input, cfg.input_format):
        if not in_shard(sample.prompt_id, cfg.shard):
            continue
        if not sample.completion:
            empty += 1
            continue
        if sample.is_conversation:
            raise ConfigError(
                f"{cfg.input}: sample {sample.id} is a conversation (tools, tool calls or several completion "
                "messages): score covers plain prompt-completion records only"
            )
        prompt = teacher_messages(sample, context)
        completion = to_example(sample, cfg.reasoning)["completion"]
        key = score_id(sample.id, prompt, completion, teacher, tokenizer_name, cfg.logprobs)
        items.append(_Item(sample, key, prompt, completion))
    return items, empty


def read_scored(path: Path) -> tuple[set[str], set[tuple[str, str, int]]]:
    """Request keys already in the output, and the distinct (teacher, tokenizer, k) that scored them."""
    if not path.exists():
        return set(), set()
    repair_tail(path)
    keys, settings = set(), set()
    for s in read_samples(path):
        src = s.logprobs_source
        if src is None:
            settings.add(("(records not written by score)", "", -1))
            continue
        keys.add(src.score_id or "")
        settings.add((src.model, src.tokenizer or "", src.k))
    return keys, settings


def _refuse_mixing(cfg: ScoreConfig, tokenizer_name: str, settings: set[tuple[str, str, int]]) -> None:
    ours = (cfg.model or "", tokenizer_name, cfg.logprobs)
    others = settings - {ours}
    if others and not cfg.allow_mixed_output:
        model, tok, k = sorted(others)[0]
        raise ConfigError(
            f"{cfg.output} holds samples scored otherwise (teacher {model!r}, tokenizer {tok!r}, k {k}); this run "
            f"scores with teacher {ours[0]!r}, tokenizer {ours[1]!r}, k {ours[2]}: choose a new --output "
            "(or --set allow_mixed_output=true to add to it)"
        )


def _check(cfg: ScoreConfig) -> ScoreConfig:
    if not cfg.input:
        raise ConfigError("score needs an input file: seqdistill score SAMPLES.jsonl --output SCORED.jsonl")
    if not cfg.model:
        raise ConfigError("score needs a teacher: --model NAME (served name, HF dir or bundled:smollm2)")
    if Path(cfg.input).resolve() == Path(cfg.output).resolve():
        raise ConfigError(f"score: --output must differ from the input ({cfg.input}): scored samples are appended")
    if cfg.backend == "auto":
        cfg = cfg.model_copy(update={"backend": resolve_backend(cfg.backend)})
    return cfg


def requests_for(items: list[_Item], tokenizer) -> list[ScoreRequest]:
    """Token ids of each item: prompt and completion split where `train` splits them (see the module doc)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("score: the teacher's tokenizer has no chat template: set teacher_tokenizer to one that has")
    out = []
    for it in items:
        full, start = render(tokenizer, {"prompt": it.prompt, "completion": it.completion})
        if start == 0:
            raise ConfigError("score: the teacher's chat template renders no prompt tokens before the completion")
        out.append(ScoreRequest(it.key, full[:start], full[start:], it.sample.prompt_id))
    return out


def run(cfg: ScoreConfig) -> ScoreSummary:
    """Score every sample of `cfg.input` not yet in `cfg.output` (within the budget); return the counts."""
    cfg = _check(cfg)
    tokenizer_name = cfg.teacher_tokenizer or cfg.model
    tokenizer = _load_tokenizer(tokenizer_name, "teacher_tokenizer")
    items, empty = plan(cfg, tokenizer_name)
    output = Path(cfg.output)
    done, settings = read_scored(output)
    _refuse_mixing(cfg, tokenizer_name, settings)
    pending = list({it.key: it for it in items if it.key not in done}.values())
    summary = ScoreSummary(str(cfg.input), str(output), len(items), len(items) - len(pending), skipped_empty=empty)
    if cfg.max_requests is not None and len(pending) > cfg.max_requests:
        log.info("max_requests %d: scoring that many of %d samples this run", cfg.max_requests, len(pending))
        pending, summary.budget_reached = pending[: cfg.max_requests], "max_requests"
    if not pending:
        log.info("%s: all %d samples already scored; nothing to send", output, len(items))
        return summary
    log.debug("tokenizing %d samples with %s", len(pending), tokenizer_name)
    requests = requests_for(pending, tokenizer)
    _execute(cfg, tokenizer, tokenizer_name, requests, {it.key: it for it in pending}, summary)
    return summary


def _execute(cfg: ScoreConfig, tokenizer, tokenizer_name: str, requests, by_key, summary: ScoreSummary) -> None:
    """Send `requests`, append each scored sample as it arrives; Ctrl-C stops sending, in-flight is kept."""
    output = Path(cfg.output)
    start = time.monotonic()
    backend = create_score_backend(cfg, tokenizer)
    tally = _Tally()
    source = {"model": cfg.model, "backend": cfg.backend, "k": cfg.logprobs, "tokenizer": tokenizer_name}
    try:
        with SampleWriter(output) as writer, _ctrl_c(cfg.shutdown_timeout) as stop:
            with progress_bar(len(requests), f"score ({cfg.backend})") as bar:
                for item in backend.score(requests, stop):
                    if isinstance(item, Failure):
                        tally.failed(item, side_path(output, "failures.jsonl"), by_key)
                    else:
                        writer.write(_scored(by_key[item.request.key].sample, item, source))
                        tally.scored(item)
                        bar.advance()
                    bar.status(tally.line(backend.stats(), time.monotonic() - start))
            summary.interrupted = stop.is_set()
    except KeyboardInterrupt:
        raise Interrupted(
            f"aborted: {tally.count} new scored samples kept in {output}; run the same command to resume"
        ) from None
    finally:
        backend.close()
        tally.fill(summary, time.monotonic() - start)
        _write_manifest(cfg, tokenizer_name, summary, backend.stats())
    if summary.failed and not summary.interrupted:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(summary.failures.items()))
        raise BackendError(
            f"{summary.failed} samples failed ({kinds}); {summary.scored} scored samples were written to {output}; "
            "run the same command again to retry only the failed ones"
        )


def _scored(sample: Sample, result: ScoreResult, source: dict[str, Any]) -> Sample:
    meta = {**sample.meta, "logprobs": result.logprobs.to_meta()}
    meta["logprobs_source"] = {**source, "score_id": result.request.key}
    return sample.model_copy(update={"meta": meta})


class _Tally:
    """Counts for the progress line, the summary and the manifest."""

    def __init__(self) -> None:
        self.count = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.failures: Counter[str] = Counter()

    def scored(self, result: ScoreResult) -> None:
        self.count += 1
        self.prompt_tokens += len(result.request.prompt_ids)
        self.completion_tokens += len(result.request.completion_ids)

    def failed(self, failure: Failure, path: Path, by_key: dict[str, _Item]) -> None:
        self.failures[failure.kind] += 1
        sample = by_key[failure.request.key].sample
        row = {"sample_id": sample.id, "prompt_id": sample.prompt_id, "score_id": failure.request.key,
               "error": failure.kind, "detail": failure.detail, "time": time.time()}  # fmt: skip
        with path.open("a", encoding="utf-8") as f:  # a durable record of what failed and why
            f.write(json.dumps(row) + "\n")

    def line(self, stats: dict[str, Any], elapsed: float) -> str:
        parts = [f"{(self.prompt_tokens + self.completion_tokens) / max(elapsed, 1e-9):.0f} tok/s"]
        if retries := stats.get("retries"):
            parts.append("retries " + ",".join(f"{k}:{v}" for k, v in sorted(retries.items())))
        if self.failures:
            parts.append("failed " + ",".join(f"{k}:{v}" for k, v in sorted(self.failures.items())))
        if "concurrency" in stats:
            parts.append(f"conc {stats['concurrency']}")
        return " ".join(parts)

    def fill(self, summary: ScoreSummary, seconds: float) -> None:
        summary.scored, summary.failures = self.count, dict(self.failures)
        summary.failed = sum(self.failures.values())
        summary.prompt_tokens, summary.completion_tokens = self.prompt_tokens, self.completion_tokens
        summary.seconds = round(seconds, 2)
        summary.tokens_per_s = round((self.prompt_tokens + self.completion_tokens) / max(seconds, 1e-9), 1)


def _write_manifest(cfg: ScoreConfig, tokenizer_name: str, summary: ScoreSummary, stats: dict[str, Any]) -> None:
    """What this run did, written when it ends (also after a failure or Ctrl-C)."""
    manifest = {
        **summary.as_dict(),
        "complete": summary.already_done + summary.scored == summary.samples,
        "retries": stats.get("retries", {}),
        "teacher": {"model": cfg.model, "backend": cfg.backend, "tokenizer": tokenizer_name},
        "k": cfg.logprobs,
        "shard": cfg.shard,
        "seqdistill_version": __version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(side_path(Path(cfg.output), "manifest.json"), manifest)
