"""Filter rules: each has a name and returns a `Drop(rule, reason)` for one sample, or None to keep it.

Rules run in order and see only what earlier rules kept; the filter stage does the counting and
writing. Stateful rules (dedup, selection) keep their memory across the stream, in input order, so
the same input always gives the same output.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import NamedTuple

from seqdistill.checks.answers import Verdict, get_check, score
from seqdistill.records import Message, Sample, ToolCall


class Drop(NamedTuple):
    rule: str  # the funnel row this drop is counted in
    reason: str


class Rule:
    name = "rule"

    def __call__(self, sample: Sample) -> Drop | None:
        raise NotImplementedError

    def drop(self, reason: str) -> Drop:
        return Drop(self.name, reason)


class DuplicateId(Rule):
    """Drop a sample whose id was already seen: the first wins (an output two runs or writers appended to).

    Memory: one 16-byte digest per sample.
    """

    name = "duplicate_id"

    def __init__(self):
        self.seen: set[bytes] = set()

    def __call__(self, sample: Sample) -> Drop | None:
        key = hashlib.blake2b(sample.id.encode(), digest_size=16).digest()
        if key in self.seen:
            return self.drop(f"sample id {sample.id} already seen: only the first record with an id is kept")
        self.seen.add(key)
        return None


class WellFormed(Rule):
    """Drop a completion that is not a well-formed teacher turn, with the reason.

    A completion is one assistant message, or several turns: assistant messages (with `tool_calls`)
    and the `tool` results that answer them, ending with an assistant message. Dropped: no message, a
    user or system turn inside it, a first message that is not the teacher's, a tool result that no
    call asked for, tool-call arguments that are not a JSON object, an empty assistant turn, and no
    final assistant answer (the completion ends with a tool result). A final turn that only calls a
    tool is kept: the teacher ended its turn with that call (what `generate` records when it calls one).
    """

    name = "malformed"

    def __call__(self, sample: Sample) -> Drop | None:
        completion = sample.completion
        if not completion:
            return self.drop("no completion message")
        problem = next((p for i, m in enumerate(completion) if (p := _turn_problem(completion, i, m))), None)
        if problem:
            return self.drop(problem)
        final = completion[-1]
        if final.role != "assistant":
            return self.drop(f"no final assistant answer: the completion ends with a {final.role} message")
        if not final.content.strip() and not final.tool_calls:
            return self.drop("empty completion")
        return None


def _turn_problem(completion: list[Message], i: int, m: Message) -> str | None:
    """What is wrong with message `i` of a completion, or None."""
    if m.role in ("system", "user"):
        return f"completion message {i} is a {m.role} turn: a completion holds assistant turns and tool results"
    if i == 0 and m.role != "assistant":
        return "the completion starts with a tool result, not the teacher's turn"
    if m.role == "tool":
        calls = _calls_before(completion, i)
        if calls is None:
            return f"completion message {i} is a tool result that no tool call asked for"
        ids = {c.id for c in calls if c.id}
        if m.tool_call_id and ids and m.tool_call_id not in ids:
            return f"completion message {i} answers tool call id {m.tool_call_id!r}, which no call made"
        return None
    for call in m.tool_calls or []:
        if not call.function.arguments_ok:
            return f"completion message {i}: tool call {call.function.name!r} has arguments that are not a JSON object"
    if i < len(completion) - 1 and not m.content.strip() and not m.tool_calls:
        return f"completion message {i} is an empty assistant turn"
    return None


def _calls_before(messages: list[Message], i: int) -> list[ToolCall] | None:
    """The tool calls a tool result at `i` may answer: those of the assistant message before its run of results."""
    j = i - 1
    while j >= 0 and messages[j].role == "tool":
        j -= 1
    if j < 0 or messages[j].role != "assistant" or not messages[j].tool_calls:
        return None
    return messages[j].tool_calls


class Truncated(Rule):
    name = "truncated"

    def __call__(self, sample: Sample) -> Drop | None:
        return self.drop("truncated (finish_reason=length)") if sample.finish_reason == "length" else None


class AnswerCheck(Rule):
    """Compare the final answer with `reference`; wrong and unverifiable are reported as separate rules.

    The filter stage computes verdicts in batches (`answers.score` in a `CheckPool`: worker processes,
    a timeout) and hands each to `decide`; calling the rule directly scores one sample inline.
    """

    name = "answer"

    def __init__(self, checker: str, keep_unverifiable: bool, **options):
        self.check = get_check(checker, **options)  # fail early on an unknown name or bad options
        self.checker = checker
        self.keep_unverifiable = keep_unverifiable
        self.verdicts: Counter[str] = Counter()

    def __call__(self, sample: Sample) -> Drop | None:
        return self.decide(sample, score(self.check, sample.text, sample.reference))

    def decide(self, sample: Sample, verdict: Verdict) -> Drop | None:
        self.verdicts[verdict.label] += 1
        if verdict.timed_out:
            self.verdicts["timed_out"] += 1
        sample.meta["check"] = {"name": self.checker, "result": verdict.label, "answer": verdict.answer}
        if verdict.correct is False:
            return Drop("wrong_answer", verdict.reason)
        if verdict.correct is None and not self.keep_unverifiable:
            return Drop("unverifiable", verdict.reason)
        return None


def normalize_completion(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


class ExactDuplicate(Rule):
    """Drop a sample whose (prompt, normalized completion) was already kept.

    The completion is all of it (every turn, tool calls and results: `Sample.completion_text`), without
    reasoning traces: two samples that answer alike after different reasoning count as one.
    """

    name = "duplicate"

    def __init__(self):
        self.seen: set[bytes] = set()

    def __call__(self, sample: Sample) -> Drop | None:
        prompt = json.dumps([m.model_dump() for m in sample.prompt], sort_keys=True)
        text = normalize_completion(sample.completion_text(include_reasoning=False))
        key = hashlib.sha256(f"{prompt}\0{text}".encode()).digest()
        if key in self.seen:
            return self.drop("exact duplicate of an earlier sample for the same prompt")
        self.seen.add(key)
        return None
