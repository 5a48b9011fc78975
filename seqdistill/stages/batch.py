"""generate's batch modes (`mode: batch | batch-file`): the same ledger as live generation, through batch files.

`batch`: the requests still missing are written as batch input files beside the output, uploaded
(`/v1/files`, purpose batch), submitted (`/v1/batches`), polled with a growing interval, and each
finished batch's output and error files are downloaded and turned into samples and failures (the live
path's parsing and validation, see backends/openai_batch.py). Requests that expired, or that a finished
batch left without an answer, go into a new batch, up to `max_retries` more times.

Exactly once across crashes: `<output stem>.batch/state.json` lists every batch file, and is written
(atomically) BEFORE each step that changes something at the provider: "uploading" before an upload,
"creating" before a batch is created. A rerun after a kill -9 at any point re-attaches: a file or batch
whose id was not saved is looked up (by the file's name and size, by the batch's input file id) before
anything is sent again, and the requests of every batch not yet written to the output are left out of
new batches. Output lines for samples already in the output are skipped (a download or a write cut off
half-way is simply read again).

`batch-file`: the same input files, written and not sent (for `vllm run-batch`, or an upload by hand);
`--from-batch-output FILE` (`ingest`) reads an output file made elsewhere into the samples file.

Limits: budgets bound what a run submits, reserved at the worst case (`max_tokens` per sample, the prompt
estimated at 4 characters a token): a batch cannot be stopped half-way without paying for what it ran.
A batch cancelled by hand at the provider is collected like one cancelled with `--cancel`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seqdistill.backends import Failure, Request
from seqdistill.backends.openai_batch import (
    RESUBMITTED,
    TERMINAL,
    BatchAnswers,
    BatchClient,
    BatchInfo,
    LineOutcome,
    RequestIndex,
    read_lines,
)
from seqdistill.backends.validate import RETRIED
from seqdistill.config import GenerateConfig
from seqdistill.errors import BackendError, ConfigError, DataError, Stopped
from seqdistill.io import SampleWriter, describe_validation_error, exclusive_lock, write_atomic, write_json
from seqdistill.progress import progress_bar
from seqdistill.prompts import PromptItem
from seqdistill.stages import generate

log = logging.getLogger(__name__)

KILL_ENV = "SEQDISTILL_TEST_KILL_AT"  # tests: SIGKILL this process right after the named step


# --- one writer per output ----------------------------------------------------------------------------------

# --- the state file -----------------------------------------------------------------------------------------


class BatchEntry(BaseModel):
    """One batch input file and what became of it at the provider."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="The input file, in the batch directory.")
    requests: int
    sha256: str = Field(description="Of the input file: it names the upload (`seqdistill-<sha256[:24]>.jsonl`).")
    since: float = Field(description="When the file was written (bounds the look-ups of a re-attach).")
    status: str = Field("written", description="written, uploading, uploaded, creating, then the batch's status.")
    file_id: str | None = None
    batch_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    collected: bool = Field(False, description="Its output is in the samples file (and its failures logged).")

    @property
    def upload_name(self) -> str:
        return f"seqdistill-{self.sha256[:24]}.jsonl"


class BatchState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    base_url: str
    next_file: int = 1
    batches: list[BatchEntry] = Field(default_factory=list)

    def open(self) -> list[BatchEntry]:
        return [e for e in self.batches if not e.collected]


def batch_dir(output: str | Path) -> Path:
    """`samples.jsonl` -> `samples.batch/`: input files, downloads and `state.json` of the output's batches."""
    output = Path(output)
    return output.with_name(f"{output.stem}.batch")


def load_state(cfg: GenerateConfig) -> BatchState | None:
    path = batch_dir(cfg.output) / "state.json"
    if not path.is_file():
        return None
    try:
        return BatchState.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError) as e:
        why = describe_validation_error(e) if isinstance(e, ValidationError) else str(e)[:120]
        raise DataError(
            f"{path}: unreadable ({why}): it lists this output's batches at the provider; restore it, or remove it "
            "(its open batches are then submitted again)"
        ) from None


def _save(cfg: GenerateConfig, state: BatchState) -> None:
    write_json(batch_dir(cfg.output) / "state.json", state.model_dump())


def _checkpoint(step: str) -> None:
    """Tests only: die here, as a kill -9 would, when SEQDISTILL_TEST_KILL_AT names this step."""
    if os.environ.get(KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


# --- entry points -------------------------------------------------------------------------------------------


def run(cfg: GenerateConfig, prompts: list[PromptItem], ids: dict[tuple[str, int], str], done: set[str]) -> dict:
    """generate in `cfg.mode` (batch or batch-file); `ids`/`done` are the plan and the ledger (generate.run's)."""
    with exclusive_lock(cfg.output):
        if cfg.mode == "batch-file":
            return _write_files(cfg, prompts, ids, done)
        return _Run(cfg, prompts, ids, done).run()


@generate.one_writer
def ingest(cfg: GenerateConfig, paths: list[str]) -> dict:
    """`--from-batch-output`: read batch output files made elsewhere (OpenAI's, `vllm run-batch`'s) into the output.

    Lines whose samples are already there are skipped; lines whose custom_id this run's plan does not know
    (other prompts, teacher or sampling) are counted and reported; every answer is validated as live.
    """
    for p in paths:
        if not Path(p).is_file():
            raise DataError(f"--from-batch-output {p}: no such file")
    if cfg.mode == "live":  # the answers came through a batch: the batch price, the openai backend's parsing
        cfg = cfg.model_copy(update={"mode": "batch-file", "backend": "openai"})
    with exclusive_lock(cfg.output):
        prompts, ids, done, requests = generate.pending_requests(cfg)
        summary = generate._summary_start(cfg, prompts, ids, requests)
        summary.update(mode="ingest", lines=0, unknown_custom_ids=0, unreadable_lines=0, already_present=0)
        with _Sink(cfg, prompts, ids, done, summary, len(ids) - len(done & set(ids.values()))) as sink:
            for p in paths:
                for line in read_lines(Path(p)):
                    summary["lines"] += 1
                    sink.take(sink.answers.line_outcome(line, sink.index))
        if summary["lines"] and summary["unknown_custom_ids"] == summary["lines"]:
            raise DataError(
                f"none of the {summary['lines']} lines of {', '.join(paths)} is a request of this run: their "
                "custom_ids name samples of other prompts, teacher or sampling (use the same config that wrote "
                "the batch input)"
            )
        sink.finish()
        return summary


@generate.one_writer
def cancel(cfg: GenerateConfig) -> dict:
    """`--cancel`: cancel this output's open batches, then (batch_wait) collect what they answered before."""
    with exclusive_lock(cfg.output):
        state = load_state(cfg)
        if state is None or not state.open():
            log.info("%s: no open batches to cancel", cfg.output)
            return {"output": str(cfg.output), "cancelled": 0}
        prompts, ids, done, _ = generate.pending_requests(cfg)
        return _Run(cfg, prompts, ids, done, cancelling=True).run()


# --- batch files --------------------------------------------------------------------------------------------


def _pending(ids: dict[tuple[str, int], str], missing: set[str], skip: set[str], index: RequestIndex) -> list[Request]:
    """The requests for the samples in `missing` and not in `skip`, one per prompt, in plan order."""
    by_prompt: dict[str, list[int]] = {}
    for (pid, i), sid in ids.items():
        if sid in missing and sid not in skip:
            by_prompt.setdefault(pid, []).append(i)
    return [index.make(pid, sorted(idx)) for pid, idx in by_prompt.items()]


def _index(ids: dict[tuple[str, int], str], prompts: list[PromptItem]) -> RequestIndex:
    return RequestIndex(ids, {p.id: p.teacher_messages for p in prompts}, {p.id: p.tools for p in prompts})


def _split(cfg: GenerateConfig, lines: list[str]) -> list[list[str]]:
    """Lines cut into files of at most `batch_max_requests` lines and `batch_max_bytes` bytes."""
    files: list[list[str]] = [[]]
    size = 0
    for line in lines:
        n = len(line.encode()) + 1
        if files[-1] and (len(files[-1]) >= cfg.batch_max_requests or size + n > cfg.batch_max_bytes):
            files.append([])
            size = 0
        if n > cfg.batch_max_bytes:
            log.warning(
                "one request is %d bytes, more than batch_max_bytes (%d): it goes alone", n, cfg.batch_max_bytes
            )
        files[-1].append(line)
        size += n
    return [f for f in files if f]


def _lines(answers: BatchAnswers, index: RequestIndex, requests: list[Request]) -> list[str]:
    return [answers.input_line(index, run) for req in requests for run in index.runs(req)]


def _write_files(cfg, prompts, ids, done) -> dict:
    """batch-file: every missing request (less those in this output's open batches) as input files; nothing sent."""
    directory = batch_dir(cfg.output)
    answers = BatchAnswers(cfg)
    index = _index(ids, prompts)
    state = load_state(cfg)
    covered = set()
    for entry in state.open() if state else []:
        if not (directory / entry.name).is_file():
            raise DataError(
                f"{directory / entry.name} (open batch {entry.batch_id}) is missing: run once with --mode batch "
                "(it fetches the file back), or --cancel, before writing batch files"
            )
        reqs = _input_requests(directory / entry.name, index)
        covered |= {sid for req in reqs for sid in index.sample_ids(req)}
    requests = _pending(ids, set(ids.values()) - done, covered, index)
    files = _split(cfg, _lines(answers, index, requests))
    for old in directory.glob("requests-*.jsonl"):  # an earlier write: replaced whole
        old.unlink()
    names = []
    for k, lines in enumerate(files, start=1):
        path = directory / f"requests-{k:04d}.jsonl"
        write_atomic(path, lines)
        names.append(str(path))
    summary = {
        "output": str(cfg.output),
        "mode": "batch-file",
        "prompts": len(prompts),
        "requested": len(ids),
        "already_done": len(done & set(ids.values())),
        "in_open_batches": len(covered),
        "requests": sum(len(f) for f in files),
        "samples": sum(r.n for r in requests),
        "files": names,
    }
    if names:
        log.info(
            "%d requests in %d batch input file(s) under %s; run them (e.g. `python -m "
            "vllm.entrypoints.openai.run_batch -i %s -o out.jsonl --model MODEL`), then: seqdistill generate ... "
            "--from-batch-output out.jsonl",
            summary["requests"],
            len(names),
            directory,
            names[0],
        )
    else:
        log.info("%s: nothing missing; no batch file written", cfg.output)
    return summary


def _input_requests(path: Path, index: RequestIndex) -> list[Request]:
    """The requests of an input file this module wrote (by their custom_ids)."""
    out = []
    for line in read_lines(path):
        req = index.request(json.loads(line).get("custom_id"))
        if req is not None:
            out.append(req)
    return out


# --- collecting answers -------------------------------------------------------------------------------------


class _Sink:
    """Writes the samples of output lines (skipping those already present) and logs their failures."""

    def __init__(self, cfg, prompts, ids, done, summary: dict, total: int):
        self.cfg, self.ids, self.summary = cfg, ids, summary
        self.by_id = {p.id: p for p in prompts}
        self.present = set(done) & set(ids.values())
        self.answers = BatchAnswers(cfg)
        self.index = _index(ids, prompts)
        self.failures = generate.FailureLog(Path(cfg.output), ids, done)
        self.tally = generate._Tally(cfg)
        self.given_up: Counter[str] = Counter()  # failure classes not resubmitted within this run
        self.failed_now: dict[str, str] = {}  # sample id -> failure class, this run
        self.total = total
        self.start = time.monotonic()

    def __enter__(self) -> _Sink:
        self.writer = SampleWriter(self.cfg.output)
        self._bar_cm = progress_bar(self.total, f"generate ({self.cfg.mode})")
        self.bar = self._bar_cm.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._bar_cm.__exit__(*exc)
            self.writer.close()
        finally:
            self.failures.settle()
            self.summary.update(self.tally.summary(time.monotonic() - self.start))
            self.summary["failed"] = len(self.failed_now)
            generate._write_manifest(self.cfg, self.summary, {"retries": {}})

    def take(self, outcome: LineOutcome) -> None:
        if outcome.problem:
            key = "unknown_custom_ids" if outcome.problem == "unknown custom_id" else "unreadable_lines"
            self.summary[key] = self.summary.get(key, 0) + 1
            if self.summary[key] == 1:
                log.warning("a batch output line is left out: %s (%r)", outcome.problem, outcome.custom_id)
            return
        for item in outcome.items:
            if isinstance(item, Failure):
                self.fail(item)
            else:
                self._write(item)

    def _write(self, result) -> None:
        sid = self.ids[(result.request.prompt_id, result.sample_index)]
        if sid in self.present:
            self.summary["already_present"] = self.summary.get("already_present", 0) + 1
            return
        self.writer.write(generate._to_sample(self.cfg, self.by_id[result.request.prompt_id], result, self.ids))
        self.present.add(sid)
        self.failed_now.pop(sid, None)
        self.failures.resolve(sid)
        self.tally.sample(result)
        self.bar.advance()
        _checkpoint("ingest")

    def fail(self, failure: Failure) -> None:
        sids = [self.ids[(failure.request.prompt_id, i)] for i in failure.request.sample_indices]
        missing = [i for i, sid in zip(failure.request.sample_indices, sids, strict=True) if sid not in self.present]
        if not missing:
            return  # answered by another line (a duplicate, or an earlier batch)
        if len(missing) < len(sids):
            failure = Failure(failure.request.only(missing), failure.kind, failure.detail)
        self.tally.failed(failure)
        self.failures.add(failure)
        for i in missing:
            self.failed_now[self.ids[(failure.request.prompt_id, i)]] = failure.kind

    def retried(self, sid: str) -> bool:
        """Whether a failure of this sample in this run may be resubmitted within the run."""
        kind = self.failed_now.get(sid)
        return kind is None or kind in RETRIED or kind in RESUBMITTED or kind.startswith("http_5")

    def finish(self) -> None:
        """Exit 1 in one line when requests failed, as live generation does (the next run retries them)."""
        if self.failed_now:
            kinds = Counter(self.failed_now.values())
            listed = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
            count = len(self.failed_now)
            raise BackendError(
                f"{count} sample{'s' * (count != 1)} failed ({listed}); {self.tally.samples} samples were written to "
                f"{self.cfg.output}; they are listed in {self.failures.path.name}: run the same command again to "
                "retry only the failed ones"
            )


# --- batch mode ---------------------------------------------------------------------------------------------


class _Run:
    """One `generate --mode batch` (or `--cancel`) run: submit, poll, collect, resubmit, until done or stopped."""

    def __init__(self, cfg, prompts, ids, done, cancelling: bool = False):
        self.cfg, self.prompts, self.ids, self.done = cfg, prompts, ids, done
        self.cancelling = cancelling
        self.dir = batch_dir(cfg.output)
        self.state = load_state(cfg) or BatchState(base_url=cfg.base_urls[0])
        if self.state.open() and self.state.base_url.rstrip("/") != cfg.base_urls[0].rstrip("/"):
            raise ConfigError(
                f"{cfg.output} has {len(self.state.open())} open batches at {self.state.base_url}; this run asks "
                f"{cfg.base_urls[0]}: use the same --base-url (then --cancel them if they are not wanted)"
            )
        self.state.base_url = cfg.base_urls[0]
        self.resumed = {e.name for e in self.state.open() if e.status in ("uploading", "creating")}
        self.requests: dict[str, list[Request]] = {}  # entry name -> its requests (from its input file)
        self.attempts: Counter[str] = Counter()  # sample id -> submissions this run
        self.submitted = self.reserved_out = 0
        self.reserved_cost = 0.0
        self.budget: str | None = None  # the budget that stopped new submissions this run
        self._client: BatchClient | None = None

    @property
    def client(self) -> BatchClient:
        """Made at first use: a run with nothing to send or collect needs no key and no connection."""
        if self._client is None:
            self._client = BatchClient(self.cfg)
        return self._client

    # --- the loop ---------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        missing = set(self.ids.values()) - self.done
        summary = generate._summary_start(cfg, self.prompts, self.ids, [])
        summary.update(already_done=len(self.ids) - len(missing), mode="batch", batches_submitted=0)
        self.summary = summary
        try:
            with _Sink(cfg, self.prompts, self.ids, self.done, summary, len(missing)) as sink:
                self.sink = sink
                for entry in list(self.state.open()):
                    self._load_requests(entry)
                with generate._ctrl_c(cfg.shutdown_timeout) as stop:
                    self._loop(stop)
                    summary["interrupted"] = stop.is_set()
                    if stop.is_set() and getattr(stop, "signum", None):  # SIGTERM, SIGHUP: the CLI's exit code
                        summary["stopped_by"] = signal.Signals(stop.signum).name
                summary["batches_open"] = len(self.state.open())
        except KeyboardInterrupt as e:
            signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
            raise generate.Interrupted(
                f"aborted: the state of the batches is saved in {self.dir / 'state.json'}; they go on at the "
                "provider: run the same command to collect them (or --cancel)",
                128 + signum,
            ) from None
        finally:
            if self._client is not None:
                self._client.close()
        if summary["interrupted"] or (summary["batches_open"] and not cfg.batch_wait):
            log.warning(
                "%d batches go on at the provider; run the same command to collect their answers (or --cancel)",
                summary["batches_open"],
            )
        elif not self.cancelling:
            sink.finish()
        return summary

    def _loop(self, stop) -> None:
        cfg = self.cfg
        delay, polled_at = cfg.batch_poll_interval, None
        if self.cancelling:
            self._cancel_all()
        while True:
            for entry in self.state.open():
                if entry.batch_id is None and not stop.is_set():
                    self._submit(entry)
            if polled_at is None or time.monotonic() >= polled_at + delay:
                changed = self._poll_all()
                polled_at = time.monotonic()
                delay = cfg.batch_poll_interval if changed else min(cfg.batch_poll_max, delay * 1.5)
            for entry in self.state.open():
                if entry.status in TERMINAL and not stop.is_set():
                    self._collect(entry)
            if not stop.is_set() and not self.cancelling and self._new_round():
                continue
            open_ = self.state.open()
            if not open_ or stop.is_set():
                return
            if not cfg.batch_wait and all(e.batch_id for e in open_):
                return
            self._wait(stop, polled_at + delay)

    def _wait(self, stop, until: float) -> None:
        """Sleep until the next poll, the status line counting down; a stop (Ctrl-C, SIGTERM) ends it at once."""
        while not stop.is_set() and (left := until - time.monotonic()) > 0:
            self.sink.bar.status(self._status_line(left))
            stop.wait(min(1.0, left))

    def _status_line(self, next_poll: float) -> str:
        open_ = [e for e in self.state.open() if e.batch_id]
        total = sum(e.counts.get("total") or e.requests for e in open_)
        done = sum((e.counts.get("completed") or 0) + (e.counts.get("failed") or 0) for e in open_)
        elapsed = time.monotonic() - self.sink.start
        return (
            f"batches {len(open_)} open of {len(self.state.batches)} · requests {done}/{total} done · "
            f"{_duration(elapsed)} elapsed · next poll in {next_poll:.0f}s"
        )

    # --- new batches ----------------------------------------------------------------------------------
    def _new_round(self) -> bool:
        """Write the requests still missing (not in open batches, not given up) as new batch files; True if any."""
        covered = {sid for e in self.state.open() for r in self.requests.get(e.name, []) for sid in self._sids(r)}
        missing = set(self.ids.values()) - self.sink.present
        skip = covered | {
            sid for sid in missing if not self.sink.retried(sid) or self.attempts[sid] > self.cfg.max_retries
        }
        if self.budget:
            return False
        requests = self._within_budget(_pending(self.ids, missing, skip, self.sink.index))
        if not requests:
            return False
        lines = _lines(self.sink.answers, self.sink.index, requests)
        for chunk in _split(self.cfg, lines):
            name = f"input-{self.state.next_file:04d}.jsonl"
            path = self.dir / name
            write_atomic(path, chunk)
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            entry = BatchEntry(name=name, requests=len(chunk), sha256=sha, since=time.time())
            self.state.batches.append(entry)
            self.state.next_file += 1
            _save(self.cfg, self.state)
            self._load_requests(entry)
        for req in requests:
            for sid in self._sids(req):
                self.attempts[sid] += 1
        self.submitted += len(lines)
        return True

    def _within_budget(self, requests: list[Request]) -> list[Request]:
        """The first requests whose worst case fits the budgets left (max_requests, max_output_tokens, max_cost)."""
        cfg, out, submitted = self.cfg, [], self.submitted
        for req in requests:
            runs = len(self.sink.index.runs(req))
            worst_out = cfg.sampling.max_tokens * req.n
            chars = sum(len(str(m.get("content") or "")) for m in req.messages) + len(json.dumps(req.tools or []))
            prompt = chars / 4 * runs
            worst_cost = generate._cost(cfg, prompt, worst_out)
            over = None
            if cfg.max_requests is not None and submitted + runs > cfg.max_requests:
                over = "max_requests"
            elif cfg.max_output_tokens is not None and self.reserved_out + worst_out > cfg.max_output_tokens:
                over = "max_output_tokens"
            elif cfg.max_cost is not None and self.reserved_cost + worst_cost > cfg.max_cost:
                over = "max_cost"
            if over:
                log.warning(
                    "budget %s: %d of %d requests go out this run (reserved at their worst case)",
                    over,
                    len(out),
                    len(requests),
                )
                self.summary["budget_reached"] = self.budget = over
                break
            out.append(req)
            submitted += runs
            self.reserved_out += worst_out
            self.reserved_cost += worst_cost
        return out

    def _submit(self, entry: BatchEntry) -> None:
        """Upload and create, saving the state before each step (see the module doc)."""
        cfg, path = self.cfg, self.dir / entry.name
        if entry.status == "written":
            _checkpoint("before-upload")
            entry.status = "uploading"
            _save(cfg, self.state)
        if entry.status == "uploading":
            look = entry.name in self.resumed
            entry.file_id = self.client.upload(path, entry.upload_name, entry.since, look_first=look)
            _checkpoint("after-upload")
            entry.status = "uploaded"
            _save(cfg, self.state)
        if entry.status == "uploaded":
            entry.status = "creating"
            _save(cfg, self.state)
        if entry.status == "creating":
            look = entry.name in self.resumed
            meta = {"seqdistill_output": Path(cfg.output).name[:500], "seqdistill_file": entry.name}
            info = self.client.create(entry.file_id, entry.since, look_first=look, metadata=meta)
            _checkpoint("after-create")
            self._apply(entry, info)
            self.summary["batches_submitted"] += 1
            log.info("batch %s: %d requests submitted (%s)", info.id, entry.requests, entry.name)
            _save(cfg, self.state)

    # --- polling, collecting, cancelling --------------------------------------------------------------
    def _poll_all(self) -> bool:
        changed = False
        for entry in self.state.open():
            if entry.batch_id and entry.status not in TERMINAL:
                before = (entry.status, dict(entry.counts))
                self._apply(entry, self.client.retrieve(entry.batch_id))
                if (entry.status, entry.counts) != before:
                    changed = True
                    _save(self.cfg, self.state)
                    done = (entry.counts.get("completed") or 0) + (entry.counts.get("failed") or 0)
                    total = entry.counts.get("total") or entry.requests
                    log.info("batch %s: %s, %d/%d requests done", entry.batch_id, entry.status, done, total)
                _checkpoint("polling")
        return changed

    def _apply(self, entry: BatchEntry, info: BatchInfo) -> None:
        entry.batch_id, entry.status = info.id, info.status
        entry.output_file_id, entry.error_file_id = info.output_file_id, info.error_file_id
        entry.counts, entry.errors = info.counts, info.errors

    def _collect(self, entry: BatchEntry) -> None:
        """Download a finished batch's files and write their answers; its requests without a line fail."""
        files = []
        for kind, file_id in (("output", entry.output_file_id), ("errors", entry.error_file_id)):
            if file_id:
                dest = self.dir / f"{kind}-{entry.batch_id}.jsonl"
                if not dest.exists():
                    self.client.download(file_id, dest, on_chunk=lambda: _checkpoint("download"))
                files.append(dest)
        seen: set[str] = set()
        for path in files:
            for line in read_lines(path):
                outcome = self.sink.answers.line_outcome(line, self.sink.index)
                if outcome.request is not None:
                    seen.add(outcome.custom_id)
                self.sink.take(outcome)
        kind = {"expired": "expired", "cancelled": "cancelled", "failed": "batch_failed"}.get(entry.status, "missing")
        detail = "; ".join(entry.errors) or f"batch {entry.batch_id} ended {entry.status} without an answer for it"
        for req in self.requests.get(entry.name, []):
            if self.sink.index.custom_id(req) not in seen:
                self.sink.fail(Failure(req, kind, detail[:300]))
        if entry.status == "failed":
            log.warning("batch %s failed: %s", entry.batch_id, detail[:300])
        entry.collected = True
        _save(self.cfg, self.state)
        for path in [*files, self.dir / entry.name]:
            path.unlink(missing_ok=True)

    def _cancel_all(self) -> None:
        for entry in self.state.open():
            if entry.batch_id and entry.status not in TERMINAL and entry.status != "cancelling":
                self._apply(entry, self.client.cancel(entry.batch_id))
                _save(self.cfg, self.state)
                log.info("batch %s: %s", entry.batch_id, entry.status)
            elif entry.batch_id is None:  # never submitted: nothing to cancel, nothing to wait for
                entry.collected = True
                _save(self.cfg, self.state)
                (self.dir / entry.name).unlink(missing_ok=True)

    # --- helpers --------------------------------------------------------------------------------------
    def _sids(self, req: Request) -> list[str]:
        return [self.ids[(req.prompt_id, i)] for i in req.sample_indices]

    def _load_requests(self, entry: BatchEntry) -> None:
        """The requests of an open entry, read back from its input file (fetched from the provider when lost)."""
        path = self.dir / entry.name
        if not path.is_file() and entry.file_id and entry.batch_id:
            log.warning("%s is missing: downloading it back from the provider", path)
            self.client.download(entry.file_id, path)
        if not path.is_file():
            if entry.batch_id:
                raise DataError(
                    f"{path}: missing, and the provider has no copy of it; restore it or remove {path.parent}"
                )
            log.warning("%s is missing: it was never submitted; dropped", path)
            entry.collected = True
            _save(self.cfg, self.state)
            return
        self.requests[entry.name] = _input_requests(path, self.sink.index)


def _duration(seconds: float) -> str:
    """`3725` -> '1h02m05s'."""
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
