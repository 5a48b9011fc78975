"""The batch face of the openai backend: batch input lines, output lines back to checked answers, and the
files + batches endpoints (OpenAI's `/v1/files` and `/v1/batches`, and the providers that copy them).

The file format is OpenAI's, which `vllm run-batch` also reads and writes: one request per input line,
`{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`, and one answer per output line,
`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}` (`error` set and
`response` null for a request that got no answer, e.g. `{"code": "batch_expired"}`).

A `custom_id` is `<sample id of the request's first sample>-<count>`: the request asks for that sample
and the next `count - 1` indices of the same prompt (see `RequestIndex`). Sample ids hash the prompt,
teacher, messages and sampling (`records.sample_id`), so an output line maps back to its samples through
the plan of the run that reads it, and a line made with other settings is reported as unknown.

Every answer goes through the live path's parsing and validate.py's `check_result`: the same `Failure`
classes, plus `expired`, `cancelled` (the batch ended before the request ran), `batch_failed` (the batch
was refused as a whole), `missing` (a finished batch without a line for it) and `batch_error` (an error
object of another code). The stage (stages/batch.py) owns the state file, the rounds and the writing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqdistill.backends.base import Backend, Failure, Request, Result
from seqdistill.backends.openai_compat import OpenAIBackend, _merged, _printable, _Retryable
from seqdistill.backends.validate import AnswerRules, what
from seqdistill.config import GenerateConfig, api_key
from seqdistill.errors import BackendError

log = logging.getLogger(__name__)

URL = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# failure classes a batch run resubmits within the run (besides validate.RETRIED): nothing wrong with the request
RESUBMITTED = frozenset({"expired", "missing", "http_429", "http_408", "http_409"})
_ERROR_KINDS = {"batch_expired": "expired", "batch_cancelled": "cancelled"}
_CHUNK = 1 << 16


# --- custom ids ------------------------------------------------------------------------------------------


class RequestIndex:
    """custom_id <-> (prompt id, sample indices), through the ids of the samples a run asks for.

    >>> ids = {("q1", 0): "a" * 32, ("q1", 1): "b" * 32}
    >>> index = RequestIndex(ids, {"q1": [{"role": "user", "content": "hi"}]})
    >>> [index.custom_id(r) for r in index.runs(Request("q1", [], [0, 1]))]
    ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-2']
    >>> index.request("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-2").sample_indices
    [0, 1]
    >>> index.request("cccccccccccccccccccccccccccccccc-1") is None
    True
    """

    def __init__(
        self,
        ids: dict[tuple[str, int], str],
        messages: dict[str, list[dict[str, Any]]],
        tools: dict[str, list[dict[str, Any]] | None] | None = None,
    ):
        self.ids = ids
        self.messages = messages
        self.tools = tools or {}  # prompt id -> the functions its teacher may call (conversations with tools)
        self.by_sid = {sid: key for key, sid in ids.items()}

    def make(self, prompt_id: str, indices: list[int]) -> Request:
        """The request for these samples of a prompt (its messages and tools from the plan)."""
        return Request(prompt_id, self.messages[prompt_id], list(indices), self.tools.get(prompt_id))

    def custom_id(self, req: Request) -> str:
        return f"{self.ids[(req.prompt_id, req.sample_indices[0])]}-{req.n}"

    def runs(self, req: Request) -> list[Request]:
        """`req` cut into runs of consecutive indices (a custom_id names a first sample and a count)."""
        out: list[list[int]] = []
        for i in req.sample_indices:
            if out and i == out[-1][-1] + 1:
                out[-1].append(i)
            else:
                out.append([i])
        return [req.only(run) for run in out]

    def request(self, custom_id: Any) -> Request | None:
        """The request a custom_id names in this plan, or None (another run's, another setting's, garbage)."""
        if not isinstance(custom_id, str):
            return None
        sid, _, count = custom_id.rpartition("-")
        key = self.by_sid.get(sid)
        if key is None or not count.isdigit() or not 0 < int(count) <= 1_000_000:
            return None
        pid, first = key
        indices = list(range(first, first + int(count)))
        if any((pid, i) not in self.ids for i in indices):
            return None
        return self.make(pid, indices)

    def sample_ids(self, req: Request) -> list[str]:
        return [self.ids[(req.prompt_id, i)] for i in req.sample_indices]


# --- input lines and output lines -------------------------------------------------------------------------


class BatchAnswers(OpenAIBackend):
    """The live backend's request bodies and answer parsing, without a connection: what batch lines need.

    Nothing is sent from here, so no API key is looked up (ingesting a file needs none).
    """

    def __init__(self, cfg: GenerateConfig):
        Backend.__init__(self, cfg)
        if not cfg.model:
            raise BackendError("batch mode needs the teacher's model name: --model NAME (as the provider names it)")
        self._rules = AnswerRules.for_config(cfg)
        self._retries: Counter[str] = Counter()
        self._answered = 0
        self._limit = None

    def input_line(self, index: RequestIndex, req: Request) -> str:
        line = {"custom_id": index.custom_id(req), "method": "POST", "url": URL, "body": self.request_body(req)}
        return json.dumps(line, ensure_ascii=False)

    def line_outcome(self, line: str | bytes, index: RequestIndex) -> LineOutcome:
        """One output (or error) file line -> its request and checked items, or why it cannot be used."""
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return LineOutcome(None, None, [], "not a JSON line")
        if not isinstance(obj, dict):
            return LineOutcome(None, None, [], f"the line is {what(obj)}, not an object")
        custom_id = obj.get("custom_id")
        req = index.request(custom_id)
        if req is None:
            return LineOutcome(custom_id if isinstance(custom_id, str) else None, None, [], "unknown custom_id")
        return LineOutcome(custom_id, req, _merged(self._items(obj, req)), None)

    def _items(self, obj: dict[str, Any], req: Request) -> list[Result | Failure]:
        response, error = obj.get("response"), obj.get("error")
        status = response.get("status_code") if isinstance(response, dict) else None
        if status == 200:
            try:
                return self._results(response.get("body"), req)
            except _Retryable as e:
                return [Failure(req, e.kind, _printable(e.detail))]
            except RecursionError:
                return [Failure(req, "bad_response", "JSON nested too deeply to parse")]
        if isinstance(status, int) and not isinstance(status, bool):
            return [Failure(req, f"http_{status}", _printable(_message(response.get("body"), error)[:200]))]
        if isinstance(error, dict | str):
            code = str(error.get("code") or "") if isinstance(error, dict) else ""
            detail = _printable(f"{code or 'error'}: {_message(None, error)[:200]}")
            return [Failure(req, _ERROR_KINDS.get(code, "batch_error"), detail)]
        return [Failure(req, "bad_response", f"a batch line without a response or an error ({what(response)})")]


def _message(body: Any, error: Any) -> str:
    """The error message of a failed line: OpenAI's `body.error.message`, vLLM's `error` (a text, or an
    ErrorResponse `{"error": {"message"}}`), or an error object's `message`.

    >>> _message(None, {"error": {"message": "max_tokens is too large", "code": 400}})
    'max_tokens is too large'
    """
    for value in (body, error):
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict):
            inner = value.get("error")
            if isinstance(inner, dict) and inner.get("message"):
                return str(inner["message"])
            if value.get("message"):
                return str(value["message"])
            if isinstance(inner, str) and inner:
                return inner
    return "no message"


@dataclass
class LineOutcome:
    custom_id: str | None
    request: Request | None
    items: list[Result | Failure]
    problem: str | None  # why the line is not used: not JSON, unknown custom_id


def read_lines(path: Path) -> Iterator[bytes]:
    """The complete lines of a downloaded or given output file, streamed (a torn last line is left out)."""
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            if not line.endswith(b"\n"):  # the last line, unterminated: whole only if it parses
                try:
                    json.loads(line)
                except ValueError:
                    log.warning("%s: its last line is cut short: left out", path)
                    return
            yield line


# --- the files and batches endpoints ---------------------------------------------------------------------


@dataclass
class BatchInfo:
    """What a provider says of one batch (the fields of OpenAI's Batch object this module reads)."""

    id: str
    status: str
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int | None = None
    counts: dict[str, int] = field(default_factory=dict)  # total, completed, failed
    errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, batch: Any) -> BatchInfo:
        counts = getattr(batch, "request_counts", None)
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        return cls(
            id=batch.id,
            status=batch.status,
            input_file_id=batch.input_file_id,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            created_at=batch.created_at,
            counts={k: getattr(counts, k) for k in ("total", "completed", "failed")} if counts else {},
            errors=[_printable(f"{e.code or 'error'}: {e.message or ''}"[:300]) for e in errors],
        )


class BatchClient:
    """The files and batches endpoints through the official `openai` SDK (sync: a handful of calls per batch).

    Uploads and creations are never retried blindly: a lost answer may hide a batch the provider did
    create, so before trying again the client looks it up (`find_upload`, `find_batch`). Reads and
    downloads use the SDK's own retries. Errors are one-line `BackendError`s; the key is never in them.
    """

    def __init__(self, cfg: GenerateConfig):
        import openai

        if len(cfg.base_urls) > 1:
            raise BackendError("batch mode talks to one provider: give one --base-url")
        self.cfg, self.url = cfg, cfg.base_urls[0]
        self._key = api_key(cfg)
        self._openai = openai
        self.client = openai.OpenAI(
            base_url=self.url, api_key=self._key, timeout=cfg.timeout, max_retries=cfg.max_retries
        )
        self._once = self.client.with_options(max_retries=0)

    def close(self) -> None:
        self.client.close()

    # --- uploads --------------------------------------------------------------------------------------
    def upload(self, path: Path, name: str, since: float, look_first: bool) -> str:
        """Upload `path` as `name` (purpose batch) and return its file id.

        `look_first` (a run that may have uploaded it before it was killed), and before each retry: reuse
        the file of that name and size uploaded since `since` instead of uploading it again.
        """
        last: Exception | None = None
        for attempt in range(self.cfg.max_retries + 1):
            if (look_first or attempt) and (found := self.find_upload(name, path.stat().st_size, since)):
                return found
            try:
                with path.open("rb") as f:
                    return self._once.files.create(file=(name, f, "application/jsonl"), purpose="batch").id
            except self._openai.APIStatusError as e:
                if e.status_code < 500 and e.status_code != 429:
                    raise self._error(e, f"upload {path.name}") from None
                last = e
            except self._openai.APIError as e:  # connection or timeout: the upload may have arrived
                last = e
            time.sleep(_backoff(attempt, self.cfg.backoff_base, self.cfg.backoff_max))
        raise self._error(last, f"upload {path.name}")

    def find_upload(self, name: str, size: int, since: float) -> str | None:
        """The id of a batch file named `name` of `size` bytes uploaded since `since` (an hour of clock slack)."""
        listing = lambda: self.client.files.list(purpose="batch", order="desc", limit=100)  # noqa: E731
        for f in self._paged("list files", listing, since):
            if f.filename == name and f.bytes == size:
                return f.id
        return None

    # --- batches --------------------------------------------------------------------------------------
    def create(self, file_id: str, since: float, look_first: bool, metadata: dict[str, str]) -> BatchInfo:
        """Create the batch of `file_id`; with `look_first`, and before each retry, first look for the batch an
        earlier attempt (or a killed run) created: a lost answer must not make a second batch."""
        last: Exception | None = None
        for attempt in range(self.cfg.max_retries + 1):
            if (look_first or attempt) and (found := self.find_batch(file_id, since)):
                return found
            try:
                batch = self._once.batches.create(
                    input_file_id=file_id,
                    endpoint=URL,
                    completion_window=self.cfg.batch_completion_window,
                    metadata=metadata,
                )
                return BatchInfo.of(batch)
            except self._openai.APIStatusError as e:
                if e.status_code < 500 and e.status_code != 429:
                    raise self._error(e, "create a batch") from None
                last = e
            except self._openai.APIError as e:
                last = e
            time.sleep(_backoff(attempt, self.cfg.backoff_base, self.cfg.backoff_max))
        raise self._error(last, "create a batch")

    def find_batch(self, file_id: str, since: float) -> BatchInfo | None:
        """The batch whose input is `file_id`, created since `since` (newest first; an hour of clock slack)."""
        for batch in self._paged("list batches", lambda: self.client.batches.list(limit=100), since):
            if batch.input_file_id == file_id:
                return BatchInfo.of(batch)
        return None

    def retrieve(self, batch_id: str) -> BatchInfo:
        return BatchInfo.of(self._call(f"poll batch {batch_id}", lambda: self.client.batches.retrieve(batch_id)))

    def cancel(self, batch_id: str) -> BatchInfo:
        return BatchInfo.of(self._call(f"cancel batch {batch_id}", lambda: self.client.batches.cancel(batch_id)))

    def download(self, file_id: str, dest: Path, on_chunk: Callable[[], None] = lambda: None) -> None:
        """Stream file `file_id` to `dest` (through `dest.part`, renamed when whole): `dest` exists only complete."""
        part = dest.with_name(dest.name + ".part")

        def fetch() -> None:
            with self.client.files.with_streaming_response.content(file_id) as resp, part.open("wb") as f:
                for chunk in resp.iter_bytes(_CHUNK):
                    f.write(chunk)
                    f.flush()
                    on_chunk()
                os.fsync(f.fileno())

        self._call(f"download file {file_id}", fetch)
        os.replace(part, dest)

    # --- errors ---------------------------------------------------------------------------------------
    def _call(self, action: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._openai.APIError as e:
            raise self._error(e, action) from None

    def _paged(self, action: str, listing: Callable[[], Any], since: float):
        """The items of a listing, newest first, page after page, until one is older than `since` - 1 hour."""
        try:
            for item in listing():  # the SDK fetches the next page when this one is used up
                if item.created_at is not None and item.created_at < since - 3600:
                    return
                yield item
        except self._openai.APIError as e:
            raise self._error(e, action) from None

    def _error(self, e: Exception, action: str) -> BackendError:
        openai = self._openai
        detail = _printable(str(getattr(e, "message", None) or e).replace(self._key, "***"))[:300]
        code = getattr(e, "status_code", None)
        where = f"the server at {self.url}"
        if code in (401, 403):
            key = f"the key in ${self.cfg.api_key_env}" if self.cfg.api_key_env else "no API key (api_key_env unset)"
            return BackendError(f"cannot {action}: {where} answered {code} with {key}: set a valid key ({detail})")
        if code in (404, 405):
            return BackendError(
                f"cannot {action}: {where} answered {code} ({detail}): does it offer the batch API? "
                "(vLLM's server does not: use --mode batch-file and `vllm run-batch`, docs/batch.md)"
            )
        if isinstance(e, openai.APIConnectionError | openai.APITimeoutError):
            return BackendError(
                f"cannot {action}: {where} is unreachable ({detail}); what was created so far is saved: "
                "run the same command again to re-attach"
            )
        return BackendError(f"cannot {action}: {where} answered {code or 'an error'} ({detail})")


def _backoff(attempt: int, base: float, cap: float) -> float:
    return min(cap, base * 2**attempt)
