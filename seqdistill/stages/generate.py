"""generate: sample the teacher on every prompt, appending each sample the moment it arrives.

Resume is by request key: a sample whose id is already in the output is never requested again, so
re-running the same command sends only what is missing. Ctrl-C once (or SIGTERM, SIGHUP): no new
requests, wait up to `shutdown_timeout` for those in flight and keep their answers; a second signal:
abort at once. One process writes an output at a time (an OS lock, see `one_writer`).

A sample's key includes its prompt id (see `records.sample_id`); what failed and is still missing is
listed in `<output stem>.failures.jsonl` (see `FailureLog`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqdistill import __version__, fingerprint, rundir
from seqdistill.backends import Failure, Request, Result, create_backend, resolve_backend
from seqdistill.config import GenerateConfig
from seqdistill.errors import BackendError, ConfigError, SeqdistillError, Stopped
from seqdistill.io import (
    SampleWriter,
    check_output,
    exclusive_lock,
    read_samples,
    repair_tail,
    write_atomic,
    write_json,
)
from seqdistill.models import model_identity
from seqdistill.progress import progress_bar
from seqdistill.prompts import PromptItem, load_prompts
from seqdistill.records import Message, Sample, sample_id
from seqdistill.results import GenerateResult
from seqdistill.signals import STOP_SIGNALS, die_if_forked

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Raised when the user aborted with a second Ctrl-C (or signal); what was written is kept."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code  # 128 + the signal's number, as a shell reports a death by that signal


def sampling_key(cfg: GenerateConfig) -> dict[str, Any]:
    """The sampling settings that define a sample (part of its id)."""
    key = cfg.sampling.model_dump()
    if cfg.extra_body:
        key["extra_body"] = cfg.extra_body
    if cfg.response_format:  # a constrained sample is another sample
        key["response_format"] = cfg.response_format
    return key


def plan(cfg: GenerateConfig, use_student_prompt: bool = False) -> tuple[list[PromptItem], dict[tuple[str, int], str]]:
    """The prompts (this shard's), and the id of every (prompt_id, sample_index) this config asks for."""
    prompts = [p for p in load_prompts(cfg.prompts) if in_shard(p.id, cfg.shard)]
    if use_student_prompt:
        for p in prompts:
            p.teacher_messages = p.messages
    sampling = sampling_key(cfg)
    model = model_identity(cfg.model)
    ids = {
        (p.id, i): sample_id(p.id, model, p.teacher_messages, sampling, i, p.tools)
        for p in prompts
        for i in range(cfg.n)
    }
    return prompts, ids


def warn_shared_texts(prompts: list[PromptItem]) -> int:
    """Warn once when prompts under different ids send the teacher the same messages; return how many do.

    Each is sampled (and paid for) separately: a sample's identity includes its prompt id (see `sample_id`).
    """
    by_text: dict[str, list[str]] = {}
    for p in prompts:
        by_text.setdefault(json.dumps([p.teacher_messages, p.tools], sort_keys=True), []).append(p.id)
    groups = [pids for pids in by_text.values() if len(pids) > 1]
    shared = sum(len(pids) for pids in groups)
    if shared:
        log.warning(
            "%d prompts share their text with another prompt (e.g. ids %s): each is sampled separately; "
            "dedupe the prompt file to pay once",
            shared,
            ", ".join(groups[0][:2]),
        )
    return shared


def in_shard(prompt_id: str, shard: str | None) -> bool:
    """Whether a prompt belongs to shard 'I/N': by a hash of its id, so order and other prompts don't matter.

    >>> [in_shard("arith-0001", f"{i}/3") for i in range(3)].count(True)
    1
    """
    if shard is None:
        return True
    i, n = (int(x) for x in shard.split("/"))
    return int(hashlib.sha256(prompt_id.encode()).hexdigest()[:16], 16) % n == i


def read_output(path: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """Ids already in the output, and the distinct (teacher model, sampling) they were made with."""
    if not path.exists():
        return set(), set()
    repair_tail(path)
    ids, settings = set(), set()
    for s in read_samples(path):
        ids.add(s.id)
        settings.add((s.teacher.model if s.teacher else "(no teacher)", json.dumps(s.sampling, sort_keys=True)))
    return ids, settings


side_path = rundir.side  # `samples.jsonl` -> `samples.<kind>` (failures log, manifest): the names are rundir's


def _refuse_mixing(cfg: GenerateConfig, settings: set[tuple[str, str]]) -> None:
    ours = (cfg.model or "", json.dumps(sampling_key(cfg), sort_keys=True))
    others = settings - {ours}
    if others and not cfg.allow_mixed_output:
        model, sampling = sorted(others)[0]
        raise ConfigError(
            f"{cfg.output} holds samples of another teacher or sampling (model {model!r}, sampling {sampling}); "
            f"this run asks for model {ours[0]!r}, sampling {ours[1]}: choose a new --output "
            "(or --set allow_mixed_output=true to add to it)"
        )


def pending_requests(cfg: GenerateConfig, use_student_prompt: bool = False):
    """(prompts, ids, done ids, the requests still to send), refusing an output made with other settings."""
    prompts, ids = plan(cfg, use_student_prompt)
    done, settings = read_output(Path(cfg.output))
    _refuse_mixing(cfg, settings)
    warn_shared_texts(prompts)
    missing: dict[str, list[int]] = {}
    for (pid, idx), sid in ids.items():
        if sid not in done:
            missing.setdefault(pid, []).append(idx)
    by_id = {p.id: p for p in prompts}
    requests = [Request(pid, by_id[pid].teacher_messages, idxs, by_id[pid].tools) for pid, idxs in missing.items()]
    return prompts, ids, done, requests


def one_writer(fn):
    """Decorate a stage's `run(cfg, ...)`: refuse outputs that are not regular files, then hold the output's lock.

    The lock is taken before the output is read (so two runs cannot both see a sample as missing and both
    pay for it) and held until the manifest is written; a second process exits at once naming the first.
    Folders made for the output (and its lock) are removed again when the run leaves them empty.
    """

    @functools.wraps(fn)
    def wrapper(cfg, *args, **kwargs):
        output = Path(cfg.output)
        made = [d for d in (output.parent, *output.parent.parents) if not d.exists()]  # deepest first
        check_output(output)
        for kind in (rundir.FAILURES, rundir.MANIFEST):
            check_output(rundir.side(output, kind), f"the {kind.split('.')[0]} file")
        try:
            with exclusive_lock(output):
                return fn(cfg, *args, **kwargs)
        finally:
            for folder in made:
                try:
                    folder.rmdir()  # only when empty: a run that failed before writing leaves no folder behind
                except OSError:
                    break

    return wrapper


@one_writer
def run(cfg: GenerateConfig, use_student_prompt: bool = False) -> GenerateResult:
    """Generate every missing sample of `cfg` into `cfg.output` (within the budgets); return counts."""
    if cfg.backend == "auto":
        cfg = cfg.model_copy(update={"backend": resolve_backend(cfg.backend)})
    prompts, ids, done, requests = pending_requests(cfg, use_student_prompt)
    if cfg.mode != "live":  # a batch API, or batch files: stages/batch.py, on the same ledger
        from seqdistill.stages import batch

        return GenerateResult.model_validate(batch.run(cfg, prompts, ids, done))
    failures = FailureLog(Path(cfg.output), ids, done)
    summary = _summary_start(cfg, prompts, ids, requests)
    if other := len(done - set(ids.values())):
        log.info("%s: %d samples from other prompts are left as they are", cfg.output, other)
    if cfg.max_requests is not None and len(requests) > cfg.max_requests:
        log.info(
            "max_requests %d: sending %d of %d requests this run", cfg.max_requests, cfg.max_requests, len(requests)
        )
        requests = requests[: cfg.max_requests]
        summary["budget_reached"] = "max_requests"
    if not requests:
        log.info("%s: all %d samples already present; nothing to send", cfg.output, len(ids))
        failures.settle()
        _write_manifest(cfg, summary, {})  # this invocation's record too: it sent nothing, and all are present
        return GenerateResult.model_validate(summary)
    _execute(cfg, requests, {p.id: p for p in prompts}, ids, summary, failures)
    return GenerateResult.model_validate(summary)


@one_writer
def dry_run(cfg: GenerateConfig) -> dict[str, Any]:
    """Send a pilot of a few prompts (kept in the output), then project requests, tokens, cost and time."""
    if cfg.mode == "batch-file":
        raise ConfigError("--dry-run sends a pilot; mode batch-file sends nothing (its files list the requests)")
    prompts, ids, done, requests = pending_requests(cfg)
    pilot = requests[: cfg.pilot_prompts]
    summary = {**_summary_start(cfg, prompts, ids, requests), "dry_run": True}  # present counts: all requests
    if pilot:  # live even in batch mode (a pilot batch could take a day); the rest is projected at the batch price
        live = cfg.model_copy(update={"mode": "live"})
        _execute(live, pilot, {p.id: p for p in prompts}, ids, summary, FailureLog(Path(cfg.output), ids, done))
    else:  # every sample present: nothing to pilot or project
        summary.update(_Tally(cfg).summary(0.0))
        _write_manifest(cfg, summary, {})
    samples = max(summary["generated"], 1)
    remaining = requests[len(pilot) :]
    rest_samples = sum(r.n for r in remaining)
    per_sample_in = summary["prompt_tokens"] / samples
    per_sample_out = summary["completion_tokens"] / samples
    waves = -(-len(remaining) // cfg.concurrency) if cfg.backend == "openai" else len(remaining)
    pilot_waves = -(-len(pilot) // cfg.concurrency) if cfg.backend == "openai" else len(pilot)
    return {
        "pilot_requests": len(pilot),
        "pilot_samples": summary["generated"],
        "pilot_truncation_rate": round(summary["truncated"] / samples, 4),
        "pilot_seconds": summary.get("seconds", 0.0),
        "remaining_requests": len(remaining),
        "remaining_samples": rest_samples,
        "projected_prompt_tokens": round(per_sample_in * rest_samples),
        "projected_output_tokens": round(per_sample_out * rest_samples),
        "projected_cost": round(_cost(cfg, per_sample_in * rest_samples, per_sample_out * rest_samples), 4),
        "projected_seconds": round(summary.get("seconds", 0.0) / max(pilot_waves, 1) * waves, 1)
        if cfg.mode == "live"
        else f"within {cfg.batch_completion_window} (the batch completion window)",
    }


def _summary_start(cfg, prompts, ids, requests) -> dict[str, Any]:
    """This invocation's counts so far; `requests`: every request still missing (before any budget cuts them)."""
    return {
        "output": str(cfg.output),
        "prompts": len(prompts),
        "requested": len(ids),
        "already_done": len(ids) - sum(r.n for r in requests),
        "generated": 0,
        "truncated": 0,
        "failed": 0,
        "interrupted": False,
        "dry_run": False,
    }


def _cost(cfg: GenerateConfig, prompt_tokens: float, output_tokens: float) -> float:
    factor = cfg.batch_price_factor if cfg.mode != "live" else 1.0  # batch APIs sell the same tokens cheaper
    return (prompt_tokens * cfg.price_input_per_m + output_tokens * cfg.price_output_per_m) * factor / 1e6


def _over_budget(cfg: GenerateConfig, tally: _Tally) -> str | None:
    if cfg.max_output_tokens is not None and tally.completion_tokens >= cfg.max_output_tokens:
        return "max_output_tokens"
    if cfg.max_cost is not None and _cost(cfg, tally.prompt_tokens, tally.completion_tokens) >= cfg.max_cost:
        return "max_cost"
    return None


def _execute(
    cfg: GenerateConfig, requests: list[Request], by_id, ids, summary: dict[str, Any], failures: FailureLog
) -> None:
    """Send `requests`, append each sample as it arrives; Ctrl-C and budgets stop sending, in-flight is kept."""
    output = Path(cfg.output)
    start = time.monotonic()
    existed = output.exists()
    try:
        backend = create_backend(cfg)  # loading a local model takes a while: a Ctrl-C here is recorded too
    except KeyboardInterrupt as e:
        summary.update(interrupted=True, stopped_by=_signal_name(e.signum if isinstance(e, Stopped) else None))
        _write_manifest(cfg, summary, {})
        raise
    tally = _Tally(cfg)
    budget = None
    finished = False
    try:
        with SampleWriter(output) as writer, _ctrl_c(cfg.shutdown_timeout) as stop:
            with progress_bar(sum(r.n for r in requests), f"{cfg.stage} ({cfg.backend})") as bar:
                for item in backend.generate(requests, stop):
                    if isinstance(item, Failure):
                        tally.failed(item)
                        failures.add(item)
                    else:
                        sample = _to_sample(cfg, by_id[item.request.prompt_id], item, ids)
                        writer.write(sample)
                        failures.resolve(sample.id)
                        tally.sample(item)
                        bar.advance()
                    bar.status(tally.line(backend.stats(), time.monotonic() - start))
                    if budget is None and (budget := _over_budget(cfg, tally)):
                        log.warning("budget %s reached: no new requests; finishing those in flight", budget)
                        stop.set()
            summary["interrupted"] = stop.is_set() and budget is None
            if summary["interrupted"]:
                summary["stopped_by"] = _signal_name(stop.signum)
        finished = True
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
        summary.update(interrupted=True, stopped_by=_signal_name(signum))
        raise Interrupted(
            f"aborted: {tally.samples} new samples kept in {output}; run the same command to resume", 128 + signum
        ) from None
    finally:
        backend.close()
        failures.settle()
        if not existed and output.is_file() and output.stat().st_size == 0:
            output.unlink()  # nothing was written: no empty samples file (the manifest says what failed)
        summary.update(tally.summary(time.monotonic() - start))
        if budget:
            summary["budget_reached"] = budget
        try:
            _write_manifest(cfg, summary, backend.stats())
        except SeqdistillError:
            if finished:
                raise
            log.debug("no manifest: writing it failed too", exc_info=True)  # the first error is the one to report
    if summary["failed"] and not summary["interrupted"]:  # interrupted runs report "stopped" and exit 130 instead
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(tally.failures.items()))
        raise BackendError(
            f"{summary['failed']} requests failed ({kinds}); {summary['generated']} samples were written to {output}; "
            "run the same command again to retry only the failed ones"
        )


class _Tally:
    """Counts for the progress line, the summary and the manifest."""

    def __init__(self, cfg: GenerateConfig):
        self.cfg = cfg
        self.samples = self.truncated = 0
        self.prompt_tokens = self.completion_tokens = 0.0
        self.failures: Counter[str] = Counter()

    def sample(self, result: Result) -> None:
        self.samples += 1
        self.truncated += result.finish_reason == "length"
        usage = result.usage
        self.prompt_tokens += (usage.get("prompt_tokens") or 0) / max(1, result.request.n)  # once per request
        completion = usage.get("completion_tokens")
        if completion is None and usage.get("request_completion_tokens") is not None:
            completion = usage["request_completion_tokens"] / max(1, result.request.n)
        self.completion_tokens += completion or 0

    def failed(self, failure: Failure) -> None:
        self.failures[failure.kind] += 1

    def line(self, stats: dict[str, Any], elapsed: float) -> str:
        parts = [f"{self.completion_tokens / max(elapsed, 1e-9):.0f} tok/s"]
        if self.cfg.price_input_per_m or self.cfg.price_output_per_m:
            parts.append(f"${_cost(self.cfg, self.prompt_tokens, self.completion_tokens):.4f}")
        if self.samples:
            parts.append(f"trunc {self.truncated / self.samples:.0%}")
        if retries := stats.get("retries"):
            parts.append("retries " + ",".join(f"{k}:{v}" for k, v in sorted(retries.items())))
        if self.failures:
            parts.append("failed " + ",".join(f"{k}:{v}" for k, v in sorted(self.failures.items())))
        if "concurrency" in stats:
            parts.append(f"conc {stats['concurrency']}")
        return " ".join(parts)

    def summary(self, seconds: float) -> dict[str, Any]:
        return {
            "generated": self.samples,
            "truncated": self.truncated,
            "failed": sum(self.failures.values()),
            "failures": dict(self.failures),
            "prompt_tokens": round(self.prompt_tokens),
            "completion_tokens": round(self.completion_tokens),
            "cost": round(_cost(self.cfg, self.prompt_tokens, self.completion_tokens), 6),
            "seconds": round(seconds, 2),
            "samples_per_s": round(self.samples / max(seconds, 1e-9), 3),
        }


class FailureLog:
    """`<output stem>.failures.jsonl`: the requested samples missing from the output because their request failed.

    One row per failed request: prompt_id, sample_indices, sample_ids, error (the class), detail, time.
    During a run each failure is appended at once (a durable record, even after kill -9); when the run
    ends, however it ends, the file is rewritten atomically to the current state: this run's failures,
    plus earlier rows for samples still missing that this run neither wrote nor failed (not sent: a
    budget or Ctrl-C stopped it first, or they belong to another config: other prompts, shard, teacher
    or sampling written to the same output). A row drops out once its samples are in the output; rows
    without `sample_ids` (older versions) are dropped (the next run retries what is missing anyway).
    The file is removed when nothing is left: no file, no failure.
    """

    def __init__(self, output: Path, ids: dict[tuple[str, int], str], done: set[str]):
        self.path = rundir.failures_path(output)
        self.ids = ids
        self.earlier = [row for row in self._read() if not set(row["sample_ids"]) <= done]
        self.rows: list[dict[str, Any]] = []
        self.resolved: set[str] = set()

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line torn by a kill -9 mid-append
                continue
            if isinstance(row, dict) and _aligned(row.get("sample_ids"), row.get("sample_indices")):
                rows.append(row)
        return rows

    def add(self, failure: Failure) -> None:
        pid, indices = failure.request.prompt_id, failure.request.sample_indices
        row = {
            "prompt_id": pid,
            "sample_indices": indices,
            "sample_ids": [self.ids[(pid, i)] for i in indices],
            "error": failure.kind,
            "detail": failure.detail,
            "time": time.time(),
        }
        self.rows.append(row)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")  # ASCII: a detail quoting a server's bad bytes stays writable

    def resolve(self, sid: str) -> None:
        self.resolved.add(sid)

    def settle(self) -> None:
        """Rewrite the file to the current state (atomically), or remove it when nothing failed."""
        gone = self.resolved | {sid for row in self.rows for sid in row["sample_ids"]}  # written, or failed anew
        rows = []
        for row in self.earlier:
            pairs = zip(row["sample_indices"], row["sample_ids"], strict=True)
            left = [(i, sid) for i, sid in pairs if sid not in gone]
            if left:
                rows.append({**row, "sample_indices": [i for i, _ in left], "sample_ids": [sid for _, sid in left]})
        rows += _latest_unresolved(self.rows, self.resolved)
        if rows:
            write_atomic(self.path, (json.dumps(row) for row in rows))
        else:
            self.path.unlink(missing_ok=True)


def _latest_unresolved(rows: list[dict[str, Any]], resolved: set[str]) -> list[dict[str, Any]]:
    """This run's rows, less samples written after they failed, each sample in its latest row only.

    (A batch run resubmits what failed within the run: a sample may fail, then be written or fail again.)
    """
    seen: set[str] = set()
    out = []
    for row in reversed(rows):
        pairs = zip(row["sample_indices"], row["sample_ids"], strict=True)
        left = [(i, sid) for i, sid in pairs if sid not in resolved and sid not in seen]
        seen |= {sid for _, sid in left}
        if left:
            out.append({**row, "sample_indices": [i for i, _ in left], "sample_ids": [sid for _, sid in left]})
    return out[::-1]


def _aligned(sample_ids: Any, indices: Any) -> bool:
    """A row this module wrote: as many string ids as integer indices."""
    return (
        isinstance(sample_ids, list)
        and isinstance(indices, list)
        and len(sample_ids) == len(indices)
        and all(isinstance(s, str) for s in sample_ids)
        and all(type(i) is int for i in indices)
    )


def _write_manifest(cfg: GenerateConfig, summary: dict[str, Any], stats: dict[str, Any]) -> None:
    """Written when an invocation ends, however it ends (done, dry run, budget, Ctrl-C, signal, failure).

    Two kinds of counts: what exists (`requested` samples, `present` in the output, `missing`, `complete`
    only when all are present) and what this invocation did (`generated`, `failed`, `interrupted`,
    `stopped_by`, `dry_run`, `budget_reached`); then tokens, cost, retries and the settings.
    """
    output = Path(cfg.output)
    present = summary["already_done"] + summary["generated"]
    manifest = {
        **summary,
        "present": present,
        "missing": summary["requested"] - present,
        "complete": present == summary["requested"],
        "retries": stats.get("retries", {}),
        "teacher": {"model": cfg.model, "backend": cfg.backend},
        "sampling": sampling_key(cfg),
        "n": cfg.n,
        "shard": cfg.shard,
        "prompts_source": cfg.prompts.source,
        "seqdistill_version": __version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": fingerprint.recorded_config(cfg),
        "fingerprint": fingerprint.of_config(cfg).to_dict(),  # what `seqdistill run` compares to reuse it
    }
    write_json(rundir.manifest_path(output), manifest)


def _to_sample(cfg: GenerateConfig, prompt: PromptItem, result: Result, ids: dict[tuple[str, int], str]) -> Sample:
    meta: dict[str, Any] = {}
    if prompt.teacher_messages != prompt.messages:
        meta["teacher_prompt"] = prompt.teacher_messages
    if result.logprobs:
        meta["logprobs"] = result.logprobs
    return Sample(
        id=ids[(prompt.id, result.sample_index)],
        prompt_id=prompt.id,
        sample_index=result.sample_index,
        prompt=[Message(**m) for m in prompt.messages],
        completion=[
            Message(
                role="assistant", content=result.text, reasoning_content=result.reasoning, tool_calls=result.tool_calls
            )
        ],
        tools=prompt.tools,
        reference=prompt.reference,
        finish_reason=result.finish_reason,
        usage=result.usage,
        teacher={"model": cfg.model or "", "backend": cfg.backend},
        sampling=sampling_key(cfg),
        meta=meta,
    )


_SIGNALS = (signal.SIGINT, *STOP_SIGNALS)  # Ctrl-C, and what a scheduler or a closed terminal sends


def _signal_name(signum: int | None) -> str:
    return signal.Signals(signum or signal.SIGINT).name


class _Stop(threading.Event):
    """Set to stop sending; `signum` is the signal that asked (None: a budget did)."""

    signum: int | None = None


@contextmanager
def _ctrl_c(grace_seconds: float):
    """The first SIGINT, SIGTERM or SIGHUP sets the yielded event (stop sending, keep what is in flight); a
    second one, or the grace period ending, aborts (raises `Stopped`). A signal the process was started
    ignoring (`nohup`) stays ignored. A forked child dies of the signal as it would have by default.
    """
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    timer: list[threading.Timer] = []
    owner = os.getpid()

    def handler(signum, frame):
        if die_if_forked(owner, signum):
            return
        if stop.is_set():
            raise Stopped(stop.signum or signum)
        stop.signum = signum
        stop.set()
        name = "Ctrl-C" if signum == signal.SIGINT else _signal_name(signum)
        log.warning(
            "%s: sending no new requests; waiting up to %gs for those in flight (%s again to abort)",
            name,
            grace_seconds,
            name,
        )
        t = threading.Timer(grace_seconds, lambda: os.kill(owner, signum))
        t.daemon = True
        t.start()
        timer.append(t)

    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s, h in previous.items():
        if h is not signal.SIG_IGN:
            signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s, h in previous.items():
            if h is not signal.SIG_IGN:
                signal.signal(s, h if h is not None else signal.SIG_DFL)
        for t in timer:
            t.cancel()
