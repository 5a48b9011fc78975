"""The one validation step every backend answer goes through: a well-formed `Result`, or a named `Failure`.

A teacher's answer is untrusted input. Whatever a server (or a local model) returns, the stage gets
either a Result whose fields have the types the record schema needs, or a Failure for that request
(counted by class, logged to `<output>.failures.jsonl`, asked again by the next run). Nothing a
backend returns can raise in the stage or make the output unwritable.

Failure classes (`Failure.kind`) and whether the openai backend asks again within the run:
- `bad_response` (retried): the 200 is not a chat completion: not a JSON object, JSON nested too
  deep, `choices` missing, empty or not a list, a choice or its `message` not an object, `content`
  neither a string, null nor a list of text parts, a reasoning field that is not a string.
- `bad_response` also: `tool_calls` that are not a list of function calls (each with a function
  name; arguments a string or an object), or an id or type of the wrong kind. Arguments that are
  not valid JSON are kept as data (the filter's `malformed` rule drops them).
- `empty_answer` (retried): no content (null, empty or blank), no tool calls and no reasoning trace:
  nothing to learn from, yet it would be counted a success and never asked again. Eval keeps it instead
  (`keep_empty`): there an empty answer is the model's answer, scored as not correct.
- `bad_encoding` (retried): a lone surrogate (`"\\ud800"`) in the text, reasoning or logprob tokens:
  JSON accepts it, UTF-8 cannot write it.
- `bad_logprobs` (retried): logprobs were asked for and came back malformed (not lists of equal
  length, a token that is not a string, a logprob that is not a finite number <= 0).
- `too_long` (not retried within the run): more text than `max_tokens` can produce (over
  `CHARS_PER_TOKEN` characters a token): the server ignores `max_tokens`, and each retry would pay
  for it again.
- `short_response` (not retried within the run): fewer choices than `n`; the missing indices are asked
  again by the next run.

Repaired, the sample kept (harmless metadata; failing the sample would throw away a good answer):
`usage` counts that are not non-negative integers (a string, a negative or fractional number, a
bool) become null, and a `usage` that is not an object is ignored; a `finish_reason` that is not a
short string becomes null; choices beyond `n` are dropped; choice `index` values order the choices
when they are distinct integers, else the arrival order stands (some servers send index 0 for all).
Kept as data: NUL and other control characters (valid JSON and UTF-8; the quality rules judge them).

Limits: a huge body is read whole before it is judged (the `too_long` check protects the output
files, not the client's memory); a server that lies about token counts is believed (its counts feed
the budgets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from seqdistill.backends.base import Failure, Request, Result  # noqa: F401 (Request: in the doctest)
from seqdistill.config import GenerateConfig
from seqdistill.records import ToolCall

RETRIED = frozenset({"bad_response", "empty_answer", "bad_encoding", "bad_logprobs"})
CHARS_PER_TOKEN = 256  # generous: the longest tokens of real vocabularies (runs of spaces or '=') are ~128 chars
_FINISH_REASON_MAX = 64


@dataclass(frozen=True)
class AnswerRules:
    """What a well-formed answer is for one run: built from the config by `for_config`."""

    max_chars: int | None = None  # content + reasoning, per sample; None: no bound
    logprobs: bool = False  # logprobs were asked for: malformed ones fail the sample
    keep_empty: bool = False  # an empty answer is data (eval), not a failure

    @classmethod
    def for_config(cls, cfg: GenerateConfig) -> AnswerRules:
        return cls(
            max_chars=CHARS_PER_TOKEN * cfg.sampling.max_tokens + 4096,
            logprobs=cfg.logprobs is not None,
            keep_empty=cfg.keep_empty_answers,
        )


def check_result(result: Result, rules: AnswerRules) -> Result | Failure:
    """`result` with its metadata repaired, or a Failure (for its one sample) naming what is wrong with it.

    >>> req = Request("q1", [{"role": "user", "content": "hi"}], [0])
    >>> check_result(Result(req, 0, "", "stop"), AnswerRules()).kind
    'empty_answer'
    >>> check_result(Result(req, 0, "4", "stop", usage={"completion_tokens": "lots"}), AnswerRules()).usage
    {'completion_tokens': None}
    """
    calls, problem = _tool_calls(result.tool_calls)
    problem = problem or _problem(result, rules, calls)
    if problem is not None:
        kind, detail = problem
        return Failure(result.request.only([result.sample_index]), kind, detail)
    return replace(
        result,
        reasoning=result.reasoning or None,
        finish_reason=_finish_reason(result.finish_reason),
        usage=_usage(result.usage),
        logprobs=result.logprobs or None,
        tool_calls=[c.model_dump() for c in calls] or None,
    )


def _problem(result: Result, rules: AnswerRules, calls: list[ToolCall]) -> tuple[str, str] | None:
    text, reasoning = result.text, result.reasoning
    if not isinstance(text, str):
        return "bad_response", f"content is {what(text)}, not text"
    if reasoning is not None and not isinstance(reasoning, str):
        return "bad_response", f"reasoning is {what(reasoning)}, not text"
    if not text.strip() and not (reasoning or "").strip() and not calls and not rules.keep_empty:
        return "empty_answer", "no content, no tool call and no reasoning"
    called = "".join(c.as_text() + (c.id or "") for c in calls)
    if bad := _surrogate(text) or _surrogate(reasoning or "") or _surrogate(called):
        return "bad_encoding", f"the text holds {bad}, a lone surrogate that UTF-8 cannot encode"
    size = len(text) + len(reasoning or "") + len(called)
    if rules.max_chars is not None and size > rules.max_chars:
        return "too_long", f"{size} characters, more than max_tokens allows ({rules.max_chars}): ignored max_tokens?"
    if result.logprobs is not None:
        return _logprobs_problem(result.logprobs)
    return None


def _tool_calls(calls: Any) -> tuple[list[ToolCall], tuple[str, str] | None]:
    """The answer's tool calls as the record's `ToolCall`s, or a `bad_response` problem.

    OpenAI's shape is read (`{"id", "type": "function", "function": {"name", "arguments"}}`); other keys a
    server adds are left out. A call that is not one (no function name, arguments neither text nor an
    object) is a bad answer, asked again; arguments that do not parse as JSON are the teacher's, kept.
    """
    if calls is None:
        return [], None
    if not isinstance(calls, list):
        return [], ("bad_response", f"tool_calls is {what(calls)}, not a list")
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            return [], ("bad_response", f"tool call {i} is {what(call)} without a function object")
        arguments = function.get("arguments")
        shaped = {
            "id": call.get("id"),
            "type": call.get("type") or "function",
            "function": {"name": function.get("name"), "arguments": {} if arguments is None else arguments},
        }
        try:
            out.append(ToolCall.model_validate(shaped))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return [], ("bad_response", f"tool call {i}: {where}: {first['msg']}"[:200])
        except RecursionError:
            return [], ("bad_response", f"tool call {i}: arguments nested too deeply")
    return out, None


def _logprobs_problem(lp: Any) -> tuple[str, str] | None:
    """The compact form {"tokens": [str], "logprobs": [float], "top"?: [[[str, float], ...]]}, one row per token."""
    if hasattr(lp, "to_meta"):  # the typed form (records.Logprobs): the same checks on what it writes
        lp = lp.to_meta()
    if not isinstance(lp, dict) or not isinstance(lp.get("tokens"), list) or not isinstance(lp.get("logprobs"), list):
        return "bad_logprobs", "not {tokens, logprobs} lists"
    tokens, values, top = lp["tokens"], lp["logprobs"], lp.get("top")
    pairs = [pair for row in top for pair in row] if isinstance(top, list) and _all(top, list) else None
    if len(tokens) != len(values) or (top is not None and (pairs is None or len(top) != len(tokens))):
        return "bad_logprobs", f"{len(tokens)} tokens, {len(values)} logprobs, top {what(top)}"
    if pairs is not None and not all(isinstance(p, list | tuple) and len(p) == 2 for p in pairs):
        return "bad_logprobs", "a top entry is not a [token, logprob] pair"
    all_tokens = tokens + [p[0] for p in pairs or []]
    if not _all(all_tokens, str):
        return "bad_logprobs", "a token is not text"
    if not all(_is_logprob(v) for v in values + [p[1] for p in pairs or []]):
        return "bad_logprobs", "a logprob is not a finite number <= 0"
    if bad := next((b for t in all_tokens if (b := _surrogate(t))), None):
        return "bad_encoding", f"a logprob token holds {bad}, a lone surrogate that UTF-8 cannot encode"
    return None


def _finish_reason(value: Any) -> str | None:
    ok = isinstance(value, str) and 0 < len(value) <= _FINISH_REASON_MAX and not _surrogate(value)
    return value if ok else None


def _usage(usage: Any) -> dict[str, Any]:
    """Token counts that are non-negative integers (12.0 counts as 12); anything else becomes None."""
    if not isinstance(usage, dict):
        return {}
    return {k: _count(v) for k, v in usage.items() if isinstance(k, str)}


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value < 2**53 else None


def _is_logprob(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value <= 0


def _surrogate(text: str) -> str | None:
    """The first lone surrogate in `text`, escaped (e.g. '\\\\ud800'), or None when `text` is valid Unicode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.object[e.start : e.end].encode("unicode_escape").decode()
    return None


def _all(items: list, cls: type) -> bool:
    return all(isinstance(x, cls) and not isinstance(x, bool) for x in items)


def what(value: Any) -> str:
    """How a value is named in a failure detail: "null", "a list", "a dict"."""
    return "null" if value is None else f"a {type(value).__name__}"
