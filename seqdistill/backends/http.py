"""Two ways to POST a chat-completions request (or, with `endpoint`, a legacy completions request, which
`seqdistill score` sends); both return the response as a dict and raise the same errors.

- `FastTransport` (the default): one aiohttp session, the body as JSON bytes, the answer parsed with
  `json.loads`. On 2 cores it costs ~0.2 ms of client CPU per request where the official `openai` SDK
  costs ~1.2 ms (typed-dict conversion, request building, response models): see docs/benchmarks.md.
- `SDKTransport`: the official `openai` async client (its aiohttp or httpx transport), for servers whose
  quirks the SDK knows about.
"""

from __future__ import annotations

import email.utils
import errno
import json
import re
import resource  # imported up front: with no file descriptors left, an import fails
import time
from collections.abc import Mapping
from typing import Any

from seqdistill.errors import BackendError

# a refused or unresolvable connection (nobody there), as opposed to a dropped one (a server that is up)
_UNREACHABLE = re.compile(r"Cannot connect|Connect call failed|connection attempts failed|refused|not known|servname")
# this process ran out of file descriptors: aiohttp and httpx wrap it in a "cannot connect" error
_NO_FDS = re.compile(r"Too many open files|\[Errno 24\]|EMFILE")


class StatusError(Exception):
    """The server answered with an HTTP error status."""

    def __init__(self, code: int, detail: str, retry_after: float | None):
        super().__init__(code, detail)
        self.code, self.detail, self.retry_after = code, detail, retry_after


class TransportError(Exception):
    """No usable answer: kind is 'connection', 'timeout' or 'bad_response'."""

    def __init__(self, kind: str, detail: str, unreachable: bool = False):
        super().__init__(kind, detail)
        self.kind, self.detail, self.unreachable = kind, detail, unreachable


def connection_error(detail: str, exc: BaseException | None = None) -> TransportError | BackendError:
    """A failed connection as a retryable TransportError; running out of file descriptors stops the run.

    EMFILE is this machine's limit, not the server's state: retrying cannot fix it and "cannot reach the
    server" would send the user looking in the wrong place. It is found in the message or, where a
    client library hides it ("All connection attempts failed"), in the exception's chain of causes.
    """
    if _NO_FDS.search(detail) or _out_of_fds(exc):
        return BackendError(
            f"too many open files (the process's limit, `ulimit -n`, is {_fd_limit()}) while connecting: "
            "lower --concurrency, or raise the limit (e.g. `ulimit -n 65536`) and run the same command again"
        )
    return TransportError("connection", detail, unreachable=_UNREACHABLE.search(detail) is not None)


def _out_of_fds(exc: BaseException | None) -> bool:
    """Whether an EMFILE/ENFILE OSError is anywhere in `exc`'s causes, contexts or exception groups."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.EMFILE, errno.ENFILE):
            return True
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return False


def _fd_limit() -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


class FastTransport:
    def __init__(self, base_url: str, api_key: str, timeout: float, concurrency: int):
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.timeout, self.concurrency = timeout, concurrency
        self._session = None

    async def chat(self, body: dict[str, Any], endpoint: str = "chat/completions") -> dict[str, Any]:
        """POST `body` to `<base_url>/<endpoint>`; the answer must be JSON with a `choices` list."""
        import aiohttp

        if self._session is None:  # created inside the running event loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        try:
            url = f"{self.base_url}/{endpoint}"
            async with self._session.post(url, data=json.dumps(body), headers=self.headers) as resp:
                raw = await resp.read()
                status, headers = resp.status, resp.headers
        except TimeoutError:
            raise TransportError("timeout", f"no answer within {self.timeout:g}s") from None
        except aiohttp.ClientConnectorError as e:
            raise connection_error(f"{type(e).__name__}: {e}", e) from None
        except aiohttp.ClientError as e:  # dropped connection, truncated body, ...
            raise connection_error(f"{type(e).__name__}: {e}", e) from None
        if status >= 400:
            raise StatusError(status, _error_message(raw), retry_after(headers))
        try:
            data = json.loads(raw)
        except ValueError:
            raise TransportError("bad_response", f"not JSON: {raw[:80]!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            what = "chat completion" if endpoint == "chat/completions" else "completion"
            raise TransportError("bad_response", f"not a {what}: {raw[:80]!r}")
        return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class SDKTransport:
    def __init__(self, base_url: str, api_key: str, timeout: float, concurrency: int, transport: str):
        import openai

        http_client = None
        if transport == "aiohttp":
            import httpx2  # the SDK's HTTP layer: keep a connection alive per concurrent request

            limits = httpx2.Limits(max_connections=max(concurrency, 100), max_keepalive_connections=concurrency)
            http_client = openai.DefaultAioHttpClient(limits=limits)
        self._openai = openai
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0, http_client=http_client
        )
        self.timeout = timeout

    async def chat(self, body: dict[str, Any], endpoint: str = "chat/completions") -> dict[str, Any]:
        openai = self._openai
        body = dict(body)
        chat = endpoint == "chat/completions"  # else the legacy completions endpoint (score)
        known = {k: body.pop(k) for k in ("model", "messages" if chat else "prompt")}
        create = self.client.chat.completions.create if chat else self.client.completions.create
        try:
            resp = await create(**known, extra_body=body)
        except openai.APIStatusError as e:
            raise StatusError(e.status_code, _sdk_message(e), retry_after(e.response.headers)) from None
        except openai.APITimeoutError as e:
            cause = e.__cause__ or e.__context__
            if type(cause).__name__ != "ConnectTimeout":
                raise TransportError("timeout", f"no answer within {self.timeout:g}s") from None
            # the SDK's aiohttp transport reports refused and dropped connections alike as connect timeouts
            raise connection_error(f"{type(cause).__name__}: {cause}", e) from None
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e.__context__
            raise connection_error(f"{type(cause).__name__}: {cause}" if cause else str(e), e) from None
        except openai.APIError as e:  # e.g. a 200 whose body is not a chat completion
            raise TransportError("bad_response", f"{type(e).__name__}: {str(e)[:200]}") from None
        if not hasattr(resp, "model_dump"):
            raise TransportError("bad_response", f"not a chat completion: {str(resp)[:80]!r}")
        return resp.model_dump(warnings=False)  # a malformed answer is judged in validate.py, not warned about

    async def close(self) -> None:
        await self.client.close()


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from Retry-After / retry-after-ms, when the server says how long to wait."""
    if not headers:
        return None
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def _error_message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace")
    if isinstance(body, dict):
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else body.get("message") or body.get("detail")
        if msg:
            return str(msg)[:200]
    return str(body)[:200]


def _sdk_message(e: Any) -> str:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else body.get("message")
        if msg:
            return str(msg)[:200]
    return str(e.message)[:200]
