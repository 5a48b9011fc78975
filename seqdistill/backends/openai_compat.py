"""Backend for any OpenAI-compatible chat server (vllm serve, SGLang, llama.cpp, hosted APIs).

The official async client runs on an event loop in a worker thread; results cross to the caller
through a queue so the stage can write each one the moment it arrives. Concurrency is a fixed pool
of worker coroutines. Failures the user must fix (401/403, unknown model, unreachable server) stop
the run; per-request failures (timeouts, 5xx/429 after the client's retries, 400 for one prompt) are
counted and left missing, so the next run retries only those.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import openai

from seqdistill.backends.base import Backend, Request, Result
from seqdistill.config import api_key
from seqdistill.errors import BackendError

log = logging.getLogger(__name__)
_DONE = object()


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, cfg):
        super().__init__(cfg)
        if not cfg.model:
            raise BackendError("backend openai needs a model name: --model NAME (as the server serves it)")
        self._key = api_key(cfg)  # raises a ConfigError naming the env var when it is missing
        self._failures: Counter[str] = Counter()
        self._got_answer = False

    def failures(self) -> dict[str, int]:
        return dict(self._failures)

    def generate(self, requests: list[Request], stop: threading.Event) -> Iterator[Result]:
        results: queue.Queue = queue.Queue()
        abort = threading.Event()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._thread_main, args=(loop, requests, stop, abort, results), daemon=True, name="openai-client"
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
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            abort.set()
            thread.join(timeout=5)

    def _thread_main(self, loop, requests, stop, abort, results) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._run_all(requests, stop, abort, results))
        except BaseException as e:  # forwarded to the caller's thread
            results.put(e)
        finally:
            results.put(_DONE)
            loop.close()

    async def _run_all(self, requests, stop, abort, results) -> None:
        client = openai.AsyncOpenAI(
            base_url=self.cfg.base_url, api_key=self._key, timeout=self.cfg.timeout, max_retries=self.cfg.max_retries
        )
        fatal: list[BaseException] = []
        pending = iter(requests)  # shared by the workers: at most `concurrency` requests exist at once

        async def worker() -> None:
            for req in pending:
                if stop.is_set() or abort.is_set() or fatal:
                    return
                try:
                    for result in await self._request(client, req):
                        results.put(result)
                except BackendError as e:
                    fatal.append(e)
                except Exception as e:  # a malformed answer: count it (gather would drop it silently)
                    self._failed("bad_response", req, f"{type(e).__name__}: {e}")

        async def watch_abort(tasks: list[asyncio.Task]) -> None:
            while not abort.is_set() and not fatal:
                await asyncio.sleep(0.05)
            for t in tasks:
                t.cancel()

        try:
            workers = [asyncio.create_task(worker()) for _ in range(min(self.cfg.concurrency, len(requests)))]
            watcher = asyncio.create_task(watch_abort(workers))
            await asyncio.gather(*workers, return_exceptions=True)
            watcher.cancel()
        finally:
            await client.close()
        if fatal:
            raise fatal[0]

    async def _request(self, client: openai.AsyncOpenAI, req: Request) -> list[Result]:
        s = self.cfg.sampling
        params: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        if s.seed is not None:
            params["seed"] = s.seed
        if s.stop:
            params["stop"] = s.stop
        if req.n > 1:
            params["n"] = req.n
        try:
            resp = await client.chat.completions.create(
                model=self.cfg.model, messages=req.messages, extra_body=self.cfg.extra_body or None, **params
            )
        except openai.APIStatusError as e:
            self._on_status_error(e, req)
            return []
        except openai.APITimeoutError:
            self._failed("timeout", req, f"no answer within {self.cfg.timeout:g}s")
            return []
        except openai.APIConnectionError as e:
            if not self._got_answer:
                raise BackendError(
                    f"cannot reach the server at {self.cfg.base_url} ({_cause(e)}): is it running? "
                    "(start it with e.g. `vllm serve MODEL --port 8000`, or set --base-url)"
                ) from None
            self._failed("connection", req, _cause(e))
            return []
        self._got_answer = True
        return self._results(resp, req)

    def _results(self, resp: Any, req: Request) -> list[Result]:
        choices = sorted(resp.choices or [], key=lambda c: c.index)
        if len(choices) < req.n:  # e.g. a server that ignores `n`: the missing ones are retried next run
            self._failed("short_response", req, f"asked for {req.n} samples, server returned {len(choices)}")
        usage = resp.usage
        out = []
        for choice, sample_index in zip(choices, req.sample_indices, strict=False):
            msg = choice.message
            extra = msg.model_extra or {}
            reasoning = (
                getattr(msg, "reasoning_content", None) or extra.get("reasoning_content") or extra.get("reasoning")
            )
            sample_usage: dict[str, Any] = {}
            if usage is not None:
                sample_usage["prompt_tokens"] = usage.prompt_tokens
                if req.n == 1:
                    sample_usage["completion_tokens"] = usage.completion_tokens
                else:  # the API reports one total for all n choices
                    sample_usage["request_completion_tokens"] = usage.completion_tokens
            out.append(
                Result(req, sample_index, msg.content or "", choice.finish_reason, reasoning or None, sample_usage)
            )
        return out

    def _on_status_error(self, e: openai.APIStatusError, req: Request) -> None:
        code = e.status_code
        detail = _server_message(e).replace(self._key, "***")  # some servers echo the key they got
        if code in (401, 403):
            where = (
                f"the key in ${self.cfg.api_key_env}" if self.cfg.api_key_env else "no API key (api_key_env is unset)"
            )
            raise BackendError(
                f"server at {self.cfg.base_url} answered {code} {'Unauthorized' if code == 401 else 'Forbidden'} "
                f"with {where}: set api_key_env to the env var holding a valid key ({detail})"
            )
        if code == 404:
            raise BackendError(
                f"server at {self.cfg.base_url} answered 404 for model {self.cfg.model!r} ({detail}): "
                "check --model against the server's /v1/models and the URL (it usually ends in /v1)"
            )
        self._got_answer = True
        self._failed(f"http_{code}", req, detail)

    def _failed(self, kind: str, req: Request, detail: str) -> None:
        self._failures[kind] += 1
        log.warning(
            "prompt %s: request failed (%s: %s); it will be retried on the next run", req.prompt_id, kind, detail
        )


def _cause(e: BaseException) -> str:
    inner = e.__cause__ or e.__context__
    return f"{type(inner).__name__}: {inner}" if inner else str(e)


def _server_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else body.get("message")
        if msg:
            return str(msg)[:200]
    return str(e.message)[:200]
