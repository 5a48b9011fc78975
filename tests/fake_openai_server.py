"""A real OpenAI-compatible HTTP server for tests: stdlib `ThreadingHTTPServer` on 127.0.0.1, ephemeral port.

    with FakeOpenAIServer(models=["teacher"], api_key="sk-test") as server:
        server.base_url   # http://127.0.0.1:PORT/v1
        server.chat_requests()  # what the client sent, in arrival order

Answers are deterministic from the last user message: "What is A + B?" gets
"Sample I: A + B = S. The answer is \\boxed{S}." for choice index I, so tests can check them.
Tokens are whitespace-separated words; an answer longer than `max_tokens` words is cut there with
finish_reason "length" (`long_answers=True` makes every answer long).

Behaviours are attributes, changeable while the server runs: `api_key` (401 on a different bearer
token), `delay` (seconds before each answer), `fail_first` (the first K chat requests get 500),
`garbage_first` (the next K get a 200 HTML page, as from a misconfigured proxy),
`models` (404 "model not found" for other names), `reasoning_field` ("reasoning_content" or
"reasoning": send a reasoning trace under that name), `malformed` (question -> `Malformed`: a
healthy answer bent into a malformed one, for chosen prompts only, mixed into a healthy run),
`tool_calls` (question -> (function name, arguments): when the request offers that function in
`tools` and the conversation ends with the user's question, every choice calls it, as OpenAI's API
shapes a call: `content: null`, `tool_calls: [{id, type: "function", function: {name, arguments:
JSON string}}]`, finish_reason "tool_calls"). A conversation that ends with a tool result is answered
from it: `tool_answer_text(result, index)`.
A request with a `response_format` of type json_schema or json_object is answered in JSON, as a server
honouring structured output would: `{"answer": S, "work": "A + B = S"}` (`json_answer_text`).

`/v1/completions` (what `seqdistill score` sends) is answered when the server is given `scorer`, a local
transformers model dir: a token-id `prompt` is run through that REAL model (one unpadded forward, float32,
raw log-softmax) and answered as vLLM answers: `prompt_logprobs: k` gives `choices[0].prompt_logprobs`
(None, then per position {token_id: {logprob, rank, decoded_token}} with the actual token and the top k),
`echo` with `logprobs: k` gives the legacy `logprobs` over the echoed prompt (`token_id:N` keys with
`return_tokens_as_token_ids`). Switches: `prompt_logprobs` / `echo` (False: the server ignores that field,
like a server that lacks it), `max_logprobs` (a larger k gets vLLM's 400), `completions_fail_first` (the
first K completions requests get 500).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_QUESTION = re.compile(r"What is (-?\d+) \+ (-?\d+)\?")
_LONG_PREAMBLE = "Let me think about this very carefully, one step at a time. " * 20


@dataclass
class Malformed:
    """How to bend the healthy answer to one question: `mangle(response)` is what is sent instead.

    It may return any JSON value (sent as JSON; lone surrogates are escaped as JSON escapes them), or
    bytes (sent as they are, e.g. JSON nested too deep to build in Python). `times`: answer malformed
    this many times, then healthy; None: always.
    """

    mangle: Callable[[dict[str, Any]], Any]
    times: int | None = None


class FakeOpenAIServer:
    """An OpenAI chat-completions server in a daemon thread; a context manager that starts and stops it."""

    def __init__(
        self,
        models: list[str] | tuple[str, ...] = ("teacher",),
        api_key: str | None = None,
        delay: float = 0.0,
        fail_first: int = 0,
        garbage_first: int = 0,
        reasoning_field: str | None = None,
        long_answers: bool = False,
        max_n: int | None = None,
        throttle_first: int = 0,
        retry_after: float | None = None,
        drop_first: int = 0,
        slow_first: int = 0,
        slow_seconds: float = 0.0,
        scorer: str | None = None,
        prompt_logprobs: bool = True,
        echo: bool = True,
        max_logprobs: int = 20,
        completions_fail_first: int = 0,
    ):
        self.models = list(models)
        self.api_key = api_key
        self.delay = delay
        self.fail_first = fail_first
        self.garbage_first = garbage_first
        self.reasoning_field = reasoning_field
        self.long_answers = long_answers
        self.max_n = max_n  # a server that ignores `n` beyond this (returns fewer choices)
        # after fail_first and garbage_first, the next chat requests are, in turn: throttled (429 with
        # Retry-After when set), dropped (connection closed, no answer), slow (answered after slow_seconds)
        self.throttle_first = throttle_first
        self.retry_after = retry_after
        self.drop_first = drop_first
        self.slow_first = slow_first
        self.slow_seconds = slow_seconds
        self.scorer, self.prompt_logprobs, self.echo = scorer, prompt_logprobs, echo
        self.max_logprobs, self.completions_fail_first = max_logprobs, completions_fail_first
        self._scorer_model: Any = None
        self._scorer_lock = threading.Lock()
        self._completions_count = 0
        self.malformed: dict[str, Malformed] = {}
        self.tool_calls: dict[str, tuple[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._log: list[dict[str, Any]] = []
        self._chat_count = 0
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), daemon=True, name="fake-openai-server"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes handlers sleeping in `delay`
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- request log -----------------------------------------------------------------------------------

    def requests(self) -> list[dict[str, Any]]:
        """Every request so far (snapshot): method, path, headers, body, status, received/answered times.

        `received` and `answered` are `time.monotonic()` values; `answered` is None until the whole
        response was written (a request the client gave up on stays None).
        """
        with self._lock:
            return [dict(entry) for entry in self._log]

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["method"] == "POST" and r["path"] == "/v1/chat/completions"]

    def completions_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["method"] == "POST" and r["path"] == "/v1/completions"]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, entry: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._log.append(entry)
            if entry["path"] == "/v1/chat/completions":
                self._chat_count += 1
                entry["chat_number"] = self._chat_count
            if entry["path"] == "/v1/completions":
                self._completions_count += 1
                entry["completions_number"] = self._completions_count
        return entry

    def _update(self, entry: dict[str, Any], **fields: Any) -> None:
        with self._lock:
            entry.update(fields)

    # --- answers ---------------------------------------------------------------------------------------

    def answer(self, body: dict[str, Any]) -> Any:
        """The healthy completion, or what `malformed` makes of it for this request's question."""
        response = self.completion(body)
        with self._lock:
            bend = self.malformed.get(_question(body.get("messages") or []))
            if bend is None or bend.times == 0:
                return response
            if bend.times is not None:
                bend.times -= 1
        bent = bend.mangle(response)
        return bent if isinstance(bent, bytes) else json.dumps(bent).encode()

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat-completions response to a (valid, authorized) request body."""
        messages = body.get("messages") or []
        n = int(body.get("n") or 1)
        if self.max_n is not None:
            n = min(n, self.max_n)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        question = _question(messages)
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        offered = {t.get("function", {}).get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
        call = self.tool_calls.get(question)
        choices = []
        completion_tokens = 0
        for i in range(n):
            if call is not None and call[0] in offered and last.get("role") == "user":
                arguments = json.dumps(call[1])
                completion_tokens += len(arguments.split())
                function = {"name": call[0], "arguments": arguments}
                message = {"role": "assistant", "content": None,
                           "tool_calls": [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                                           "function": function}]}  # fmt: skip
                choices.append({"index": i, "message": message, "finish_reason": "tool_calls", "logprobs": None})
                continue
            if last.get("role") == "tool":
                text = tool_answer_text(str(last.get("content")), i)
            else:
                text = answer_text(question, i)
                if (body.get("response_format") or {}).get("type") in ("json_schema", "json_object"):
                    text = json_answer_text(question, i)
            if self.long_answers:
                text = _LONG_PREAMBLE + text
            words = text.split()
            finish_reason = "stop"
            if max_tokens is not None and len(words) > int(max_tokens):
                words = words[: int(max_tokens)]
                text = " ".join(words)
                finish_reason = "length"
            completion_tokens += len(words)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.reasoning_field:
                message[self.reasoning_field] = reasoning_text(question, i)
            logprobs = _logprobs(words, int(body.get("top_logprobs") or 0)) if body.get("logprobs") else None
            choices.append({"index": i, "message": message, "finish_reason": finish_reason, "logprobs": logprobs})
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    # --- /v1/completions: a real model's prompt logprobs -------------------------------------------------

    def _log_softmax(self, ids: list[int]):
        """[len(ids), vocab] log-probabilities of the scorer model at each position (row i predicts token i + 1)."""
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with self._scorer_lock:  # one forward at a time; the model is loaded on first use
            if self._scorer_model is None:
                transformers.utils.logging.disable_progress_bar()  # the test reads the CLI's stderr
                model = AutoModelForCausalLM.from_pretrained(self.scorer, dtype=torch.float32).eval()
                self._scorer_model = (model, AutoTokenizer.from_pretrained(self.scorer))
            model = self._scorer_model[0]
            with torch.inference_mode():
                logits = model(torch.tensor([ids])).logits[0].float()
        return torch.log_softmax(logits, dim=-1)

    def score_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """The /v1/completions answer to a token-id prompt, shaped like vLLM's (see the module doc)."""
        ids = [int(t) for t in body["prompt"]]
        rows = self._log_softmax(ids)
        decode = self._scorer_model[1].decode
        k = body.get("prompt_logprobs") if self.prompt_logprobs else None
        echo = bool(body.get("echo")) and self.echo
        lk = body.get("logprobs")
        generated = int(rows[-1].argmax())
        choice: dict[str, Any] = {"index": 0, "text": decode([generated]), "finish_reason": "length"}

        def step(i: int, width: int) -> dict[int, tuple[float, int]]:
            """Position i: the actual token and the top `width`, token id -> (logprob, rank); actual first."""
            row, actual = rows[i - 1], ids[i]
            out = {actual: (float(row[actual]), int((row > row[actual]).sum()) + 1)}
            values, top = row.topk(width) if width else ([], [])
            for rank, (v, t) in enumerate(zip(list(values), list(top), strict=True), start=1):
                out.setdefault(int(t), (float(v), rank))
            return out

        if k is not None:
            choice["prompt_logprobs"] = [None] + [
                {str(t): {"logprob": v, "rank": r, "decoded_token": decode([t])} for t, (v, r) in step(i, k).items()}
                for i in range(1, len(ids))
            ]
        if lk is not None:
            as_ids = bool(body.get("return_tokens_as_token_ids"))
            name = (lambda t: f"token_id:{t}") if as_ids else (lambda t: decode([t]))
            first = 1 if echo else len(ids)  # without echo: the generated token only
            tokens = [name(t) for t in ids[:first]] if echo else []
            values: list[float | None] = [None] if echo else []
            tops: list[dict[str, float] | None] = [None] if echo else []
            for i in range(first, len(ids)):
                tokens.append(name(ids[i]))
                values.append(float(rows[i - 1][ids[i]]))
                tops.append({name(t): v for t, (v, _) in step(i, lk).items()})
            last = rows[-1]
            tokens.append(name(generated))
            values.append(float(last[generated]))
            tops.append({name(int(t)): float(v) for v, t in zip(*last.topk(max(lk, 1)), strict=True)})
            choice["logprobs"] = {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops}
        else:
            choice["logprobs"] = None
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [choice],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1},
        }


def _question(messages: list[dict[str, Any]]) -> str:
    return next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")


def _logprobs(words: list[str], k: int) -> dict[str, Any]:
    """OpenAI-shaped logprobs: one entry per word; the chosen word first among k alternatives."""
    content = []
    for j, word in enumerate(words):
        top = [{"token": word, "logprob": -0.125 * j, "bytes": None}]
        top += [{"token": f"alt{m}", "logprob": -1.0 - m, "bytes": None} for m in range(1, k)]
        content.append({"token": word, "logprob": -0.125 * j, "bytes": None, "top_logprobs": top[:k]})
    return {"content": content, "refusal": None}


def answer_text(question: str, index: int) -> str:
    """The (untruncated, short-mode) content the server answers for choice `index` of `question`."""
    m = _QUESTION.search(question)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        return f"Sample {index}: {a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."
    return f"Sample {index}: you said {question[:60]!r}."


def tool_answer_text(result: str, index: int) -> str:
    """What the server answers for choice `index` of a conversation that ends with a tool's `result`."""
    return f"Sample {index}: the tool says {result}."


def json_answer_text(question: str, index: int) -> str:
    """The JSON content answered to a request that asks for structured output."""
    m = _QUESTION.search(question)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        return json.dumps({"answer": a + b, "work": f"{a} + {b} = {a + b}", "sample": index})
    return json.dumps({"echo": question[:60], "sample": index})


def reasoning_text(question: str, index: int) -> str:
    m = _QUESTION.search(question)
    what = f"{m.group(1)} plus {m.group(2)}" if m else "the question"
    return f"Reasoning {index}: I need {what}."


def error_body(message: str, type_: str, code: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeOpenAIServer  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def handle(self) -> None:
        """Serve the connection; a client that resets it (an aborted run closing with an answer unread) ends it.

        Why: socketserver prints the traceback of a reset to stderr, from this server's thread, into
        whichever CLI run a test is capturing at that moment, and that run's "no traceback" check fails.
        """
        try:
            super().handle()
        except ConnectionError:
            self.close_connection = True

    def _entry(self, body: Any) -> dict[str, Any]:
        return self.fake._record(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
                "status": None,
                "received": time.monotonic(),
                "answered": None,
            }
        )

    def _send(
        self,
        entry: dict[str, Any],
        status: int,
        payload: Any,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(payload, bytes):
            data = payload
        else:
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.fake._update(entry, status=status)
        try:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client went away (aborted run): nothing was delivered
            self.close_connection = True
            return
        self.fake._update(entry, answered=time.monotonic())

    def _authorized(self, entry: dict[str, Any]) -> bool:
        expected = self.fake.api_key
        if expected is None or self.headers.get("Authorization") == f"Bearer {expected}":
            return True
        self._send(
            entry,
            401,
            error_body("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        )
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        entry = self._entry(None)
        if not self._authorized(entry):
            return
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.fake.models]
            self._send(entry, 200, {"object": "list", "data": data})
        else:
            self._send(entry, 404, error_body(f"no route {self.path}", "not_found_error", 404))

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError:
            body = None
        entry = self._entry(body)
        fake = self.fake
        if fake.delay > 0:
            fake._closing.wait(fake.delay)
        if not self._authorized(entry):
            return
        if self.path == "/v1/completions" and fake.scorer:
            self._completions(entry, body)
            return
        if self.path != "/v1/chat/completions":
            self._send(entry, 404, error_body(f"no route {self.path}", "not_found_error", 404))
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send(entry, 400, error_body("body must be JSON with 'messages'", "BadRequestError", 400))
            return
        if entry["chat_number"] <= fake.fail_first:
            self._send(entry, 500, error_body("simulated server failure", "InternalServerError", 500))
            return
        if entry["chat_number"] <= fake.fail_first + fake.garbage_first:
            self._send(entry, 200, "<html><body>Welcome to the proxy</body></html>", "text/html")
            return
        number = entry["chat_number"] - fake.fail_first - fake.garbage_first
        if number <= fake.throttle_first:
            headers = {"Retry-After": f"{fake.retry_after:g}"} if fake.retry_after is not None else {}
            self._send(entry, 429, error_body("Rate limit reached", "rate_limit_error", 429), headers=headers)
            return
        number -= fake.throttle_first
        if number <= fake.drop_first:
            self.fake._update(entry, status="dropped")
            self.close_connection = True  # no status line at all: the client sees the connection drop
            return
        number -= fake.drop_first
        if number <= fake.slow_first:
            fake._closing.wait(fake.slow_seconds)
        if body.get("model") not in fake.models:
            message = f"The model `{body.get('model')}` does not exist."
            self._send(entry, 404, error_body(message, "NotFoundError", 404))
            return
        self._send(entry, 200, fake.answer(body))

    def _completions(self, entry: dict[str, Any], body: Any) -> None:
        """/v1/completions with a scorer model: vLLM's validation errors, then `FakeOpenAIServer.score_completion`."""
        fake = self.fake
        if entry["completions_number"] <= fake.completions_fail_first:
            self._send(entry, 500, error_body("simulated server failure", "InternalServerError", 500))
            return
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), list) or not body["prompt"]:
            self._send(entry, 400, error_body("body must be JSON with a token-id 'prompt'", "BadRequestError", 400))
            return
        if body.get("model") not in fake.models:
            message = f"The model `{body.get('model')}` does not exist."
            self._send(entry, 404, error_body(message, "NotFoundError", 404))
            return
        checked = (("prompt", "prompt_logprobs", fake.prompt_logprobs), ("sample", "logprobs", True))
        for name, key, supported in checked:
            asked = body.get(key)
            if supported and asked is not None and int(asked) > fake.max_logprobs:
                cap = fake.max_logprobs
                message = f"Requested {name} logprobs of {asked}, which is greater than max allowed: {cap}"
                self._send(entry, 400, error_body(message, "BadRequestError", 400))
                return
        self._send(entry, 200, fake.score_completion(body))
