"""An OpenAI-compatible chat-completions server that answers at once, as cheaply as it can (for the benches).

    python bench/instant_server.py --port 8123 [--delay 0.005] [--log requests.jsonl]

Listens on 127.0.0.1 only. `POST /v1/chat/completions` answers every request with `n` choices of a fixed
short content, `finish_reason` "stop" and a `usage` block; any model name is accepted. `GET /v1/models`
and `GET /health` exist for readiness checks; `GET /stats` gives the request count and how many wait
in `--delay`. The response bytes are built once per (model, n) and reused, so the server spends as
little CPU per request as aiohttp allows (the benches pin it to its own core so it does not compete
with the client it measures).

`--delay S` waits S seconds before answering (requests stay in flight, as with a real server).
`--log FILE` appends one JSON line per chat request once it is over:
`{"q": last user message, "h": hash of the messages, "n": n, "recv": t, "done": t, "answered": bool}`
with `time.time()` values; `answered` is false when the client was seen gone before the answer was
written (a client killed just before may still count as answered: the kernel accepts a write to a
socket whose peer has just died); `q` is null for a request whose body never arrived. Lines are
flushed as they are written.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys
import time

from aiohttp import web

CONTENT = "The answer is \\boxed{42}."
COMPLETION_TOKENS = 6


class InstantServer:
    def __init__(self, delay: float = 0.0, log_path: str | None = None):
        self.delay = delay
        self.log = open(log_path, "a", encoding="utf-8", buffering=1) if log_path else None  # noqa: SIM115
        self._cache: dict[tuple[str, int], bytes] = {}
        self.count = 0  # chat requests whose body was read
        self.in_flight = 0  # of which not yet answered

    def _body(self, model: str, n: int) -> bytes:
        key = (model, n)
        data = self._cache.get(key)
        if data is None:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": CONTENT},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
                for i in range(n)
            ]
            data = json.dumps(
                {
                    "id": "chatcmpl-instant",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": choices,
                    "usage": {
                        "prompt_tokens": 10,
                        "completion_tokens": COMPLETION_TOKENS * n,
                        "total_tokens": 10 + COMPLETION_TOKENS * n,
                    },
                }
            ).encode()
            if len(self._cache) < 1024:
                self._cache[key] = data
        return data

    async def chat(self, request: web.Request) -> web.StreamResponse:
        recv = time.time()
        try:
            raw = await request.read()
        except ConnectionError:  # the client died between sending the headers and the body
            if self.log is not None:
                entry = {"q": None, "h": None, "n": None, "recv": recv, "done": time.time(), "answered": False}
                self.log.write(json.dumps(entry) + "\n")
            return web.Response(status=499)
        try:
            body = json.loads(raw)
            messages = body["messages"]
            n = int(body.get("n") or 1)
            model = str(body.get("model") or "")
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": {"message": "bad request body", "code": 400}}, status=400)
        self.count += 1
        if self.delay > 0:
            self.in_flight += 1
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1
        response = web.Response(body=self._body(model, n), content_type="application/json")
        if self.log is None:
            return response
        transport = request.transport
        answered = transport is not None and not transport.is_closing()
        if answered:
            try:
                await response.prepare(request)
                await response.write_eof()
            except (ConnectionError, RuntimeError):
                answered = False
        question = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        digest = hashlib.sha1(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
        entry = {"q": question, "h": digest, "n": n, "recv": recv, "done": time.time(), "answered": answered}
        self.log.write(json.dumps(entry) + "\n")
        return response

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model", "owned_by": "b"}]})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"chat_requests": self.count, "in_flight": self.in_flight})


def make_app(server: InstantServer) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", server.chat)
    app.router.add_get("/v1/models", server.models)
    app.router.add_get("/health", server.health)
    app.router.add_get("/stats", server.stats)
    return app


async def serve(port: int, delay: float, log_path: str | None) -> None:
    server = InstantServer(delay, log_path)
    runner = web.AppRunner(make_app(server), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096, reuse_address=True)
    await site.start()
    print(f"instant server on http://127.0.0.1:{port}/v1 (delay {delay}s)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    if server.log is not None:
        server.log.close()
    print(f"instant server: {server.count} chat requests served", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    ap.add_argument("--log", default=None, help="append one JSON line per chat request to this file")
    args = ap.parse_args(argv)
    try:
        asyncio.run(serve(args.port, args.delay, args.log))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
