"""Backend for any OpenAI-compatible chat server (vllm serve, SGLang, llama.cpp, hosted APIs).

Requests go out on an event loop in a worker thread, through a lean aiohttp transport by default or the
official `openai` SDK (`http_client`, see http.py); results cross to the caller through a queue so the
stage can write each one the moment it arrives. A fixed pool of worker
coroutines sends requests, gated by an AIMD concurrency limit (halved on 429s, climbing back by one
per window of successes) and optional requests/tokens-per-minute buckets.

Each request is retried with exponential backoff and full jitter on 429 (honouring Retry-After),
5xx, timeouts, dropped connections and malformed answers, up to `max_retries`; then it is yielded as
a `Failure` with its error class and the run goes on (the next run retries it). Every answer goes
through validate.py's `check_result`; only the samples it fails are asked again. `finish_reason ==
"length"` is data, never retried. 401/403/404 stop the run with one line; so does a 400/422, or an
unreachable server, while no request has been answered yet (after that a 400 fails only its request).
With several `base_url`s, each request goes to the least busy healthy server; a server that fails is
left out for `server_cooldown` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

from seqdistill.backends.base import Backend, Failure, Request, Result, split_think, wire_messages
from seqdistill.backends.http import FastTransport, SDKTransport, StatusError, TransportError
from seqdistill.backends.validate import RETRIED, AnswerRules, check_result, what
from seqdistill.config import api_key
from seqdistill.errors import BackendError
from seqdistill.records import Logprobs

log = logging.getLogger(__name__)
_DONE = object()


class _GiveUp(Exception):
    """A request is not worth retrying (a 400 for this prompt): fail it now."""


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, cfg):
        super().__init__(cfg)
        if not cfg.model:
            raise BackendError("backend openai needs a model name: --model NAME (as the server serves it)")
        self._key = api_key(cfg)  # raises a ConfigError naming the env var when it is missing
        self._retries: Counter[str] = Counter()
        self._answered = 0
        self._limit: _AIMD | None = None
        self._rules = AnswerRules.for_config(cfg)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"retries": dict(self._retries)}
        if self._limit is not None:
            out["concurrency"] = int(self._limit.limit)
        return out

    # --- the caller's side: a thread runs the event loop, results come back through a queue -------------
    def generate(self, requests: list[Request], stop: threading.Event) -> Iterator[Result | Failure]:
        results: queue.Queue = queue.Queue()
        abort = threading.Event()
        thread = threading.Thread(
            target=self._thread_main, args=(requests, stop, abort, results), daemon=True, name="openai-client"
        )
        thread.start()
        try:
            while True:
                try:
                    item = results.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _DONE:
                    break
                if isinstance(item, _Handover):  # the stage has processed everything put before it
                    item.done()
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            abort.set()
            thread.join(timeout=5)

    def _thread_main(self, requests, stop, abort, results) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run_all(requests, stop, abort, results))
        except BaseException as e:  # forwarded to the caller's thread
            results.put(e)
        finally:
            results.put(_DONE)
            loop.close()

    # --- the event loop's side ------------------------------------------------------------------------
    async def _run_all(self, requests, stop, abort, results) -> None:
        cfg = self.cfg
        servers = [_Server(url, self._transport(url), announce=len(cfg.base_urls) > 1) for url in cfg.base_urls]
        self._limit = _AIMD(cfg.concurrency, cfg.adaptive_concurrency)
        rpm = _Bucket(cfg.requests_per_minute) if cfg.requests_per_minute else None
        tpm = _Bucket(cfg.tokens_per_minute) if cfg.tokens_per_minute else None
        fatal: list[BaseException] = []
        pending = iter(requests)  # shared by the workers: at most `concurrency` requests exist at once

        async def worker() -> None:
            for req in pending:
                if stop.is_set() or abort.is_set() or fatal:
                    return
                try:
                    if rpm:
                        await rpm.take(1)
                    if tpm:
                        await tpm.take(self._token_estimate(req))
                    await self._attempts(req, servers, stop, results.put)
                    await _handed_over(results)
                except Exception as e:  # BackendError: the user's to fix; anything else is a bug: never swallowed
                    fatal.append(e)

        async def watch_abort(tasks: list[asyncio.Task]) -> None:
            while not abort.is_set() and not fatal:
                await asyncio.sleep(0.05)
            for t in tasks:
                t.cancel()

        try:
            workers = [asyncio.create_task(worker()) for _ in range(min(cfg.concurrency, len(requests)))]
            watcher = asyncio.create_task(watch_abort(workers))
            await asyncio.gather(*workers, return_exceptions=True)
            watcher.cancel()
        finally:
            for server in servers:
                await server.transport.close()
        if fatal:
            raise fatal[0]

    def _transport(self, url: str):
        cfg = self.cfg
        if cfg.http_client == "aiohttp":
            return FastTransport(url, self._key, cfg.timeout, cfg.concurrency)
        transport = "aiohttp" if cfg.http_client == "openai" else "httpx"
        return SDKTransport(url, self._key, cfg.timeout, cfg.concurrency, transport)

    async def _attempts(self, req: Request, servers: list[_Server], stop: threading.Event, emit) -> None:
        """Send `req` until every sample is answered or out of attempts; `emit` each Result and final Failure.

        Samples of an answer that failed validation with a retried class (see validate.py) are asked
        again, alone, in the next attempt; the good samples of the same answer are emitted at once.
        """
        kind, detail = "", ""
        for attempt in range(self.cfg.max_retries + 1):
            server = await _pick(servers)
            await self._limit.acquire()
            if stop.is_set():  # stopped while this waited for a slot (or backed off): send nothing new
                self._limit.release()
                if attempt:
                    emit(Failure(req, kind, _printable(detail)))
                return
            server.in_flight += 1
            wait, unreachable, items = None, False, []
            try:
                items = self._results(await self._send(server, req), req)
                server.ok()
                self._answered += 1
                self._limit.on_success()
            except _GiveUp as e:
                emit(Failure(req, e.args[0], e.args[1]))
                return
            except _Retryable as e:
                kind, detail, wait, unreachable = e.kind, e.detail, e.wait, e.unreachable
            finally:
                server.in_flight -= 1
                self._limit.release()
            last = attempt == self.cfg.max_retries or stop.is_set()
            again = [f for f in items if isinstance(f, Failure) and f.kind in RETRIED and not last]
            for item in _merged([i for i in items if not any(i is f for f in again)]):
                emit(item)
            if items and not again:
                return
            if again:  # a malformed answer: ask again for just those samples
                kind, detail = again[0].kind, again[0].detail
                req = req.only([i for f in again for i in f.request.sample_indices])
            others_up = any(s.up() for s in servers if s is not server)
            if (
                unreachable  # nobody listening, not a dropped connection
                and not self._answered
                and not others_up
                and attempt >= min(1, self.cfg.max_retries)
            ):
                raise BackendError(
                    f"cannot reach the server at {server.url} ({detail}): is it running? "
                    "(start it with e.g. `vllm serve MODEL --port 8000`, or set --base-url)"
                )
            if last:
                break  # no new sends after a Ctrl-C: the next run retries it
            self._retries[kind] += 1
            if kind == "connection" and others_up:
                wait = 0.0  # another server takes it at once
            delay = wait if wait is not None else _backoff(attempt, self.cfg.backoff_base, self.cfg.backoff_max)
            log.debug("prompt %s: %s (%s); retry %d in %.2fs", req.prompt_id, kind, detail, attempt + 1, delay)
            await asyncio.sleep(delay)
        detail = _printable(detail)
        log.warning("prompt %s: gave up after %s (%s); the next run retries it", req.prompt_id, kind, detail)
        emit(Failure(req, kind, detail))

    def request_body(self, req: Request) -> dict[str, Any]:
        """The chat-completions body of `req` (live requests and batch input lines alike)."""
        body = {
            "model": self.cfg.model,
            "messages": wire_messages(req.messages),
            **self._params(req),
            **self.cfg.extra_body,
        }
        if req.tools:
            body["tools"] = req.tools
        return body

    async def _send(self, server: _Server, req: Request) -> dict[str, Any]:
        try:
            return await server.transport.chat(self.request_body(req))
        except StatusError as e:
            raise self._status_error(e, server) from None
        except TransportError as e:
            if e.kind == "connection":
                server.fail(self.cfg.server_cooldown)
            raise _Retryable(e.kind, e.detail, unreachable=e.unreachable) from None
        except RecursionError:  # json.loads on a body nested thousands deep: a malformed answer, not a bug here
            raise _Retryable("bad_response", "JSON nested too deeply to parse") from None

    def _params(self, req: Request) -> dict[str, Any]:
        s = self.cfg.sampling
        params: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        if s.seed is not None:
            params["seed"] = s.seed
        if s.stop:
            params["stop"] = s.stop
        if req.n > 1:
            params["n"] = req.n
        if self.cfg.logprobs is not None:
            params["logprobs"] = True
            if self.cfg.logprobs:
                params["top_logprobs"] = self.cfg.logprobs
        if self.cfg.response_format:  # OpenAI structured outputs; vLLM's server reads the same field
            params["response_format"] = self.cfg.response_format
        return params

    def _status_error(self, e: StatusError, server: _Server) -> Exception:
        code = e.code
        detail = _printable(e.detail.replace(self._key, "***"))  # some servers echo the key they got
        if code in (401, 403):
            where = (
                f"the key in ${self.cfg.api_key_env}" if self.cfg.api_key_env else "no API key (api_key_env is unset)"
            )
            return BackendError(
                f"server at {server.url} answered {code} {'Unauthorized' if code == 401 else 'Forbidden'} "
                f"with {where}: set api_key_env to the env var holding a valid key ({detail})"
            )
        if code == 404:
            return BackendError(
                f"server at {server.url} answered 404 for model {self.cfg.model!r} ({detail}): "
                "check --model against the server's /v1/models and the URL (it usually ends in /v1)"
            )
        if code == 429:
            self._limit.on_throttle()
            return _Retryable("http_429", detail, e.retry_after)
        if code >= 500 or code in (408, 409):
            if code >= 500:
                server.fail(self.cfg.server_cooldown, soft=True)
            return _Retryable(f"http_{code}", detail, e.retry_after)
        if not self._answered:  # every request would get it: a setting the server rejects
            return BackendError(f"server at {server.url} rejected the request with {code}: {detail}")
        return _GiveUp(f"http_{code}", detail)

    def _results(self, resp: Any, req: Request) -> list[Result | Failure]:
        """A chat-completions body -> one checked Result or Failure per sample index of `req` (validate.py).

        Raises `_Retryable("bad_response")` when the body as a whole is not a chat completion.
        """
        if not isinstance(resp, dict):
            raise _Retryable("bad_response", f"the body is {what(resp)}, not a chat completion")
        choices = resp.get("choices")
        if not isinstance(choices, list) or not choices:
            error = resp.get("error")  # some proxies answer 200 with an error object
            said = f": the server said {str(error.get('message', error))[:160]!r}" if isinstance(error, dict) else ""
            raise _Retryable("bad_response", f"no choices ({what(choices)}){said}")
        indices = [c.get("index") if isinstance(c, dict) else None for c in choices]
        if all(type(i) is int for i in indices) and len(set(indices)) == len(indices):
            choices = [c for _, c in sorted(zip(indices, choices, strict=True), key=lambda pair: pair[0])]
        usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
        out: list[Result | Failure] = []
        for choice, index in zip(choices, req.sample_indices, strict=False):  # choices beyond n are dropped
            result = self._result(choice, index, req, usage)
            out.append(check_result(result, self._rules) if isinstance(result, Result) else result)
        if len(choices) < req.n:  # e.g. a server that ignores `n`: the missing ones are retried next run
            missing = req.only(req.sample_indices[len(choices) :])
            out.append(Failure(missing, "short_response", f"asked for {req.n} samples, got {len(choices)}"))
        return out

    def _result(self, choice: Any, sample_index: int, req: Request, usage: dict[str, Any]) -> Result | Failure:
        """One choice as a Result (its values still unchecked), or a Failure when its shape is not a choice."""
        one = req.only([sample_index])
        msg = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(msg, dict):
            shape = f"a choice is {what(choice)}" if not isinstance(choice, dict) else f"its message is {what(msg)}"
            return Failure(one, "bad_response", f"{shape}, not an object")
        reasoning = msg.get("reasoning_content") or msg.get("reasoning")  # DeepSeek/older vLLM, newer vLLM
        content = _text_parts(msg.get("content"))
        if self.cfg.split_think and isinstance(content, str) and not reasoning:
            reasoning, content = split_think(content)
        sample_usage: dict[str, Any] = {}
        if usage:
            sample_usage["prompt_tokens"] = usage.get("prompt_tokens")
            if req.n == 1:
                sample_usage["completion_tokens"] = usage.get("completion_tokens")
            else:  # the API reports one total for all n choices
                sample_usage["request_completion_tokens"] = usage.get("completion_tokens")
        logprobs = None
        if self.cfg.logprobs is not None:
            try:
                logprobs = _compact_logprobs(choice.get("logprobs"))
            except (AttributeError, KeyError, TypeError, ValueError) as e:  # the check names what a shape lacks
                return Failure(one, "bad_logprobs", f"{type(e).__name__}: {str(e)[:120]!r}")
        if logprobs and "completion_tokens" not in sample_usage:
            sample_usage["completion_tokens"] = len(logprobs.tokens)
        return Result(
            req, sample_index, content, choice.get("finish_reason"), reasoning or None, sample_usage, logprobs,
            msg.get("tool_calls"),
        )  # fmt: skip

    def _token_estimate(self, req: Request) -> float:
        prompt_chars = sum(len(m.get("content") or "") for m in req.messages) + len(json.dumps(req.tools or []))
        return prompt_chars / 4 + self.cfg.sampling.max_tokens * req.n


class _Handover:
    """A marker a worker queues after a request's answers; the caller's thread resolves it when it reaches it.

    Why: the stage writes each answer and checks its budgets (setting `stop`) before it asks for the
    next item, so a worker that waits for its marker starts no new request until its answers were
    written and judged. Without it, a stage slowed by fsync or a loaded CPU let the workers run ahead:
    a budget overshot by more than `concurrency` requests, and a kill -9 lost more answers than were
    in flight.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()

    def done(self) -> None:
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # the loop already closed (an aborted run): nobody waits any more
            pass


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def _handed_over(results: queue.Queue) -> None:
    """Wait until the caller has taken (and the stage processed) everything this worker put in `results`."""
    marker = _Handover(asyncio.get_running_loop())
    results.put(marker)
    await marker.future


class _Retryable(Exception):
    def __init__(self, kind: str, detail: str, wait: float | None = None, unreachable: bool = False):
        super().__init__(kind, detail)
        self.kind, self.detail, self.wait, self.unreachable = kind, detail, wait, unreachable


class _Server:
    """One endpoint: its client, its load, and whether it is left out for now."""

    def __init__(self, url: str, transport: FastTransport | SDKTransport, announce: bool):
        self.url, self.transport = url, transport
        self.announce = announce  # several servers: leave a failing one out for a while, and say so
        self.in_flight = 0
        self.down_until = 0.0
        self.recent_failures = 0

    def up(self) -> bool:
        return time.monotonic() >= self.down_until

    def fail(self, cooldown: float, soft: bool = False) -> None:
        """A failed server is left out for `cooldown`; a 5xx (soft) only after three in a row."""
        self.recent_failures += 1
        if not self.announce:  # a lone server is never left out: its retries just back off
            return
        if not soft or self.recent_failures >= 3:
            if self.up() and self.announce:
                log.warning("server %s failing; leaving it out for %gs", self.url, cooldown)
            self.down_until = time.monotonic() + cooldown

    def ok(self) -> None:
        self.recent_failures = 0
        self.down_until = 0.0


async def _pick(servers: list[_Server]) -> _Server:
    """The least busy server that is up; when all are out, wait for the first to come back."""
    while True:
        up = [s for s in servers if s.up()]
        if up:
            return min(up, key=lambda s: s.in_flight)
        await asyncio.sleep(max(0.01, min(s.down_until for s in servers) - time.monotonic()))


class _AIMD:
    """Concurrency limit: halve on a 429 (at most once a second), +1 per `limit` successes, up to the max."""

    def __init__(self, maximum: int, adaptive: bool):
        self.maximum, self.adaptive = maximum, adaptive
        self.limit = float(maximum)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._last_cut = 0.0

    async def acquire(self) -> None:
        while self.in_flight >= max(1, int(self.limit)):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:  # cancelled while waiting
                    self._waiters.remove(waiter)
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        free = max(1, int(self.limit)) - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def on_throttle(self) -> None:
        now = time.monotonic()
        if self.adaptive and now - self._last_cut > 1.0:
            self.limit = max(1.0, self.limit / 2)
            self._last_cut = now
            log.info("429 from the server: concurrency down to %d", int(self.limit))

    def on_success(self) -> None:
        if self.adaptive and self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1 / self.limit)
            self._wake()


class _Bucket:
    """A per-minute rate limit (token bucket holding at most one second's worth)."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.level = 0.0
        self.last = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, amount: float) -> None:
        async with self._lock:
            now = time.monotonic()
            self.level = min(self.rate, self.level + (now - self.last) * self.rate)
            self.last = now
            if self.level < amount:
                await asyncio.sleep((amount - self.level) / self.rate)
                self.level, self.last = amount, time.monotonic()
            self.level -= amount


def _merged(items: list[Result | Failure]) -> list[Result | Failure]:
    """Results (of generation or scoring) as they are; the failures of one answer merged by class."""
    out: list[Result | Failure] = [i for i in items if not isinstance(i, Failure)]
    by_kind: dict[str, Failure] = {}
    for f in (i for i in items if isinstance(i, Failure)):
        if f.kind in by_kind:
            first = by_kind[f.kind]
            first.request = first.request.only(first.request.sample_indices + f.request.sample_indices)
        else:
            by_kind[f.kind] = f
    return out + list(by_kind.values())


def _printable(text: str) -> str:
    """`text` that any UTF-8 stream can print: a lone surrogate from a server becomes its escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _text_parts(content: Any) -> Any:
    """Content as text: null is "", a list of text parts (as some servers send) is joined; other values as is."""
    if content is None:
        return ""
    if isinstance(content, list) and content and all(_is_text_part(p) for p in content):
        return "".join(p["text"] for p in content)
    return content


def _is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _backoff(attempt: int, base: float, cap: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^attempt)] (spreads retries of many clients)."""
    return random.uniform(0, min(cap, base * 2**attempt))


def _compact_logprobs(logprobs: dict[str, Any] | None) -> Logprobs | None:
    """A chat choice's `logprobs.content` as the one logprobs type (None when the server sent none).

    A malformed one raises TypeError, which `_results` turns into a retried `bad_response`.
    """
    content = (logprobs or {}).get("content")
    if not content:
        return None
    try:
        top = None
        if any(t.get("top_logprobs") for t in content):
            top = [[(c["token"], c["logprob"]) for c in (t.get("top_logprobs") or [])] for t in content]
        return Logprobs.build([t["token"] for t in content], [t["logprob"] for t in content], top)
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # ValueError: pydantic's ValidationError
        raise TypeError(f"malformed logprobs ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
