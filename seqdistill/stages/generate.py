"""generate: sample the teacher on every prompt, appending each sample the moment it arrives.

Resume is by request key: a sample whose id is already in the output is never requested again, so
re-running the same command sends only what is missing. Ctrl-C once: no new requests, wait up to
`shutdown_timeout` for those in flight and keep their answers; Ctrl-C twice: abort at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqdistill.backends import Request, Result, create_backend
from seqdistill.config import GenerateConfig
from seqdistill.errors import BackendError
from seqdistill.io import SampleWriter, read_samples, repair_tail
from seqdistill.models import model_identity
from seqdistill.progress import progress_bar
from seqdistill.prompts import PromptItem, load_prompts
from seqdistill.records import Message, Sample, sample_id

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Raised when the user aborted with a second Ctrl-C; what was written is kept."""


def sampling_key(cfg: GenerateConfig) -> dict[str, Any]:
    """The sampling settings that define a sample (part of its id)."""
    key = cfg.sampling.model_dump()
    if cfg.extra_body:
        key["extra_body"] = cfg.extra_body
    return key


def plan(cfg: GenerateConfig, use_student_prompt: bool = False) -> tuple[list[PromptItem], dict[tuple[str, int], str]]:
    """The prompts, and the id of every (prompt_id, sample_index) this config asks for."""
    prompts = list(load_prompts(cfg.prompts))
    if use_student_prompt:
        for p in prompts:
            p.teacher_messages = p.messages
    sampling = sampling_key(cfg)
    model = model_identity(cfg.model)
    ids = {(p.id, i): sample_id(model, p.teacher_messages, sampling, i) for p in prompts for i in range(cfg.n)}
    return prompts, ids


def existing_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    repair_tail(path)
    return {s.id for s in read_samples(path)}


def run(cfg: GenerateConfig, use_student_prompt: bool = False) -> dict[str, Any]:
    """Generate every missing sample of `cfg` into `cfg.output`; return counts for the summary."""
    output = Path(cfg.output)
    prompts, ids = plan(cfg, use_student_prompt)
    done = existing_ids(output)
    missing: dict[str, list[int]] = {}
    for (pid, idx), sid in ids.items():
        if sid not in done:
            missing.setdefault(pid, []).append(idx)
    by_id = {p.id: p for p in prompts}
    requests = [Request(pid, by_id[pid].teacher_messages, idxs) for pid, idxs in missing.items()]
    summary: dict[str, Any] = {
        "output": str(output),
        "prompts": len(prompts),
        "requested": len(ids),
        "already_done": len(ids) - sum(r.n for r in requests),
        "generated": 0,
        "truncated": 0,
        "failed": 0,
        "interrupted": False,
    }
    if other := len(done - set(ids.values())):
        log.info("%s: %d samples from other prompts or settings are left as they are", output, other)
    if not requests:
        log.info("%s: all %d samples already present; nothing to send", output, len(ids))
        return summary
    start = time.monotonic()
    backend = create_backend(cfg)
    try:
        with SampleWriter(output) as writer, _ctrl_c(cfg.shutdown_timeout) as stop:
            total = sum(r.n for r in requests)
            with progress_bar(total, f"generate ({cfg.backend})") as advance:
                for result in backend.generate(requests, stop):
                    sample = _to_sample(cfg, by_id[result.request.prompt_id], result, ids)
                    writer.write(sample)
                    summary["generated"] += 1
                    summary["truncated"] += result.finish_reason == "length"
                    advance()
            summary["interrupted"] = stop.is_set()
    except KeyboardInterrupt:
        raise Interrupted(
            f"aborted: {summary['generated']} new samples kept in {output}; run the same command to resume"
        ) from None
    finally:
        backend.close()
    failures = backend.failures()
    summary["failed"] = sum(failures.values())
    summary["seconds"] = round(time.monotonic() - start, 2)
    summary["samples_per_s"] = round(summary["generated"] / max(summary["seconds"], 1e-9), 3)
    if failures and not summary["interrupted"]:  # interrupted runs report "stopped" and exit 130 instead
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(failures.items()))
        raise BackendError(
            f"{summary['failed']} requests failed ({kinds}); {summary['generated']} samples were written to {output}; "
            "run the same command again to retry only the failed ones"
        )
    return summary


def _to_sample(cfg: GenerateConfig, prompt: PromptItem, result: Result, ids: dict[tuple[str, int], str]) -> Sample:
    meta: dict[str, Any] = {}
    if prompt.teacher_messages != prompt.messages:
        meta["teacher_prompt"] = prompt.teacher_messages
    return Sample(
        id=ids[(prompt.id, result.sample_index)],
        prompt_id=prompt.id,
        sample_index=result.sample_index,
        prompt=[Message(**m) for m in prompt.messages],
        completion=[Message(role="assistant", content=result.text, reasoning_content=result.reasoning)],
        reference=prompt.reference,
        finish_reason=result.finish_reason,
        usage=result.usage,
        teacher={"model": cfg.model or "", "backend": cfg.backend},
        sampling=sampling_key(cfg),
        meta=meta,
    )


@contextmanager
def _ctrl_c(grace_seconds: float):
    """First SIGINT sets the yielded event (stop sending); a second one, or the grace period ending, aborts."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    timer: list[threading.Timer] = []

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        log.warning(
            "Ctrl-C: sending no new requests; waiting up to %gs for those in flight (Ctrl-C again to abort)",
            grace_seconds,
        )
        t = threading.Timer(grace_seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
        t.daemon = True
        t.start()
        timer.append(t)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
        for t in timer:
            t.cancel()
