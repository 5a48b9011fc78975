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
from seqdistill.records import Sample


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
    """Drop samples without exactly one non-empty assistant message."""

    name = "malformed"

    def __call__(self, sample: Sample) -> Drop | None:
        if len(sample.completion) != 1 or sample.completion[0].role != "assistant":
            return self.drop("completion is not exactly one assistant message")
        if not sample.completion[0].content.strip():
            return self.drop("empty completion")
        return None


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
    """Drop a sample whose (prompt, normalized completion) was already kept."""

    name = "duplicate"

    def __init__(self):
        self.seen: set[bytes] = set()

    def __call__(self, sample: Sample) -> Drop | None:
        prompt = json.dumps([m.model_dump() for m in sample.prompt], sort_keys=True)
        key = hashlib.sha256(f"{prompt}\0{normalize_completion(sample.text)}".encode()).digest()
        if key in self.seen:
            return self.drop("exact duplicate of an earlier sample for the same prompt")
        self.seen.add(key)
        return None
