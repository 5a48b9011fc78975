"""Teacher scoring through an OpenAI-compatible server that returns prompt logprobs (vLLM; others with `echo`).

Each request sends the token ids of prompt + completion as the `prompt` of `/v1/completions` with
`max_tokens: 1` (one throw-away token) and either

- `prompt_logprobs: k` (vLLM's extension): `choices[0].prompt_logprobs` is a list as long as the prompt,
  None first, then per position a dict token_id -> {logprob, rank, decoded_token} holding the actual token
  and the top k (vLLM's `vllm/entrypoints/openai/completion/serving.py`); or
- `echo: true` with `logprobs: k` (the legacy OpenAI form): `choices[0].logprobs` covers the echoed prompt
  too: `token_logprobs` (None first) and `top_logprobs` dicts keyed by token text, or `token_id:N` with
  vLLM's `return_tokens_as_token_ids`.

`logprobs_api: auto` sends the first request alone with `prompt_logprobs`, then with `echo`, and uses the
first that answers with the prompt's logprobs; a server that gives neither stops the run with one line.
vLLM caps k at its `--max-logprobs` (20 by default) and answers a larger k with a 400: one line too.
Logprobs are vLLM's raw ones (temperature 1, before any sampling processors).

Everything else - workers, AIMD concurrency, retries with backoff on 429/5xx/timeouts/dropped
connections, several servers, one-line errors for 401/404 and unreachable servers - is the generation
backend's (`OpenAIBackend`), which this class extends: only the request body and the answer differ.
Not covered: vLLM computes prompt logprobs without its prefix cache (a shared teacher prompt is
recomputed for every request); servers that need text prompts (no token ids).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

from seqdistill.backends.base import Failure
from seqdistill.backends.http import StatusError, TransportError
from seqdistill.backends.openai_compat import OpenAIBackend, _Retryable
from seqdistill.backends.score_base import ScoreBackend, ScoreRequest, ScoreResult, logprobs_from_steps, vocab_texts
from seqdistill.errors import BackendError
from seqdistill.records import Logprobs

_CAP = re.compile(r"logprobs.*(?:greater than max|max allowed|max_logprobs)|max[_ ]logprobs", re.IGNORECASE)
_APIS = ("prompt_logprobs", "echo")


class _Unsupported(Exception):
    """The server answered without the prompt's logprobs (or refused the field): try the other API, or stop."""


class OpenAIScoreBackend(OpenAIBackend, ScoreBackend):
    name = "openai"

    def __init__(self, cfg, tokenizer):
        super().__init__(cfg)
        self.text = vocab_texts(tokenizer)
        self.api: str | None = None if cfg.logprobs_api == "auto" else cfg.logprobs_api
        self._probing = False

    def score(self, requests: list[ScoreRequest], stop: threading.Event) -> Iterator[ScoreResult | Failure]:
        if self.api is None and requests:
            yield from self._probe(requests[0], stop)
            requests = requests[1:]
        try:
            yield from self.generate(requests, stop)
        except _Unsupported as e:
            raise BackendError(self._lacks({self.api: str(e)})) from None

    def _probe(self, req: ScoreRequest, stop: threading.Event) -> list[ScoreResult | Failure]:
        """Send the first request alone, with each API in turn; keep the first API the server answers."""
        reasons: dict[str, str] = {}
        self._probing = True
        try:
            for api in _APIS:
                self.api = api
                try:
                    return list(self.generate([req], stop))
                except _Unsupported as e:
                    reasons[api] = str(e)
        finally:
            self._probing = False
        raise BackendError(self._lacks(reasons))

    def _lacks(self, reasons: dict[str | None, str]) -> str:
        why = "; ".join(f"with {api}: {reason}" for api, reason in reasons.items())
        return (
            f"the server at {', '.join(self.cfg.base_urls)} returned no prompt logprobs ({why}): seqdistill score "
            "needs a server that supports `prompt_logprobs` (vLLM) or `echo` with `logprobs` on /v1/completions, "
            "or an in-process backend (--backend transformers or vllm)"
        )

    # --- the generation backend's hooks, for /v1/completions --------------------------------------------
    def _token_estimate(self, req: ScoreRequest) -> float:
        return req.tokens

    async def _send(self, server, req: ScoreRequest) -> dict[str, Any]:
        try:
            return await server.transport.chat(self._body(req), endpoint="completions")
        except StatusError as e:
            if e.code in (400, 422):
                detail = e.detail.replace(self._key, "***")  # some servers echo the key they got
                self._refuse_cap(detail)
                if self._probing:  # e.g. a strict server refusing an unknown field: try the other API
                    raise _Unsupported(f"{e.code} {detail}") from None
            raise self._status_error(e, server) from None
        except TransportError as e:
            if e.kind == "connection":
                server.fail(self.cfg.server_cooldown)
            raise _Retryable(e.kind, e.detail, unreachable=e.unreachable) from None

    def _body(self, req: ScoreRequest) -> dict[str, Any]:
        k = self.cfg.logprobs
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "prompt": req.prompt_ids + req.completion_ids,
            "max_tokens": 1,  # vLLM needs a generation step; the token is thrown away
            "temperature": 0.0,
        }
        if self.api == "prompt_logprobs":
            body["prompt_logprobs"] = k
        else:
            body.update(echo=True, logprobs=k, return_tokens_as_token_ids=True)
        return {**body, **self.cfg.extra_body}

    def _refuse_cap(self, detail: str) -> None:
        if not _CAP.search(detail):
            return
        k = self.cfg.logprobs
        cap = re.search(r"max allowed:?\s*(\d+)", detail)
        lower = f"lower --logprobs to {cap.group(1)}" if cap else "lower --logprobs"
        raise BackendError(
            f"the server at {', '.join(self.cfg.base_urls)} allows fewer logprobs than k={k} ({detail}): "
            f"{lower}, or restart it with --max-logprobs {k}"
        )

    def _results(self, resp: dict[str, Any], req: ScoreRequest) -> list[ScoreResult]:
        try:
            choice = resp["choices"][0]
            logprobs = self._prompt_logprobs(choice, req) if self.api == "prompt_logprobs" else self._echo(choice, req)
        except _Unsupported:
            raise
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:  # malformed: retried
            raise _Retryable("bad_response", f"{type(e).__name__}: {str(e)[:200]}") from None
        usage = {"prompt_tokens": len(req.prompt_ids), "completion_tokens": len(req.completion_ids)}
        return [ScoreResult(req, logprobs, usage)]

    def _prompt_logprobs(self, choice: dict[str, Any], req: ScoreRequest) -> Logprobs:
        steps = choice.get("prompt_logprobs")
        if steps is None:
            raise _Unsupported("its answer has no `prompt_logprobs`")
        parsed = [
            None if step is None else {int(t): (float(v["logprob"]), v.get("rank")) for t, v in step.items()}
            for step in steps
        ]
        ids = req.prompt_ids + req.completion_ids
        return logprobs_from_steps(parsed, ids, len(req.prompt_ids), self.cfg.logprobs, self.text)

    def _echo(self, choice: dict[str, Any], req: ScoreRequest) -> Logprobs:
        """The echoed prompt's `token_logprobs` / `top_logprobs` (plus one generated token, ignored)."""
        lp = choice.get("logprobs") or {}
        values, tops = lp.get("token_logprobs") or [], lp.get("top_logprobs") or []
        ids = req.prompt_ids + req.completion_ids
        if len(values) < len(ids) or len(tops) < len(ids):
            raise _Unsupported(f"its answer has logprobs for {len(values)} tokens, not the {len(ids)} sent (no echo)")
        k, start = self.cfg.logprobs, len(req.prompt_ids)
        tokens, chosen, top = [], [], []
        for i in range(start, len(ids)):
            tokens.append(self.text[ids[i]])
            chosen.append(float(values[i]))
            ranked = sorted(((float(v), self._token(t)) for t, v in (tops[i] or {}).items()), reverse=True)
            top.append([(t, v) for v, t in ranked[:k]])
        return Logprobs.build(tokens, chosen, top if k else None, ids[start:])

    def _token(self, token: str) -> str:
        """A top-k token's text: vLLM's `token_id:N` form is looked up, other servers send the text."""
        if token.startswith("token_id:") and token[9:].isdigit() and int(token[9:]) < len(self.text):
            return self.text[int(token[9:])]
        return token
