"""The types every checker shares, and the one scoring path: `score(check, completion, reference)`.

A checker is a registry entry (`CheckSpec`): a name, an options model, `extract(completion, options)`
returning the completion's `Answer` (or None), and `compare(answer, reference, options)` returning a
`Verdict`. `score` runs the two with the guarantees every caller relies on (a missing reference is
unverifiable, an exception in a checker is an unverifiable verdict for that sample, never a crash).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

LABELS = {True: "correct", False: "wrong", None: "unverifiable"}


class Verdict(NamedTuple):
    """Outcome of one answer check: tri-state `correct`, a short reason, the answer read from the completion.

    >>> Verdict(False, "answer 41 != reference 42", "41").label
    'wrong'
    """

    correct: bool | None  # True correct, False wrong, None unverifiable
    reason: str  # short human-readable explanation
    answer: str | None  # answer extracted from the completion, if any
    timed_out: bool = False  # the check ran past its time limit (then correct is None)

    @property
    def label(self) -> str:
        """'correct', 'wrong' or 'unverifiable': the name reports and records use."""
        return LABELS[self.correct]


class Answer(NamedTuple):
    """What a checker reads from a completion, ready to compare with a reference (and to count in a vote)."""

    text: str  # the answer as the completion states it; shown in records, counted by majority votes
    parts: tuple[str, ...] = ()  # math: the boxes of an answer boxed in several parts (x=\boxed{1}, y=\boxed{2})
    source: str | None = None  # math: the text to parse when it is not simply `\boxed{text}`


class NoOptions(BaseModel):
    """Options of a checker that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Example(NamedTuple):
    """A registry entry's example: shown in docs/checks.md, and run by the tests."""

    completion: str
    reference: str
    label: str  # the verdict's label: correct, wrong or unverifiable
    options: dict[str, Any] = {}


@dataclass(frozen=True)
class CheckSpec:
    """One registry entry: everything the pool, the configs, the CLI and the docs know about a checker."""

    name: str
    description: str  # one line: what it reads from the completion and how it compares
    extract: Callable[[str, Any], Answer | None]
    compare: Callable[[Answer, str, Any], Verdict]
    example: Example
    options: type[BaseModel] = NoOptions
    no_answer: str = "no answer in completion"  # the reason when `extract` finds nothing
    votable: bool = True  # majority voting compares extracted answers; `code` has none to compare
    vote_key: Callable[[str], str] | None = None  # answers that count as the same vote (e.g. 0.5 and \frac12)
    needs_reference: bool = True  # False: `compare` also runs without a reference (json: is it valid?)


@dataclass(frozen=True)
class Check:
    """A checker bound to its options: what `score` and `extract` run (picklable, for worker processes)."""

    spec: CheckSpec
    options: BaseModel

    @property
    def name(self) -> str:
        return self.spec.name


def score(check: Check, completion: str, reference: str | None) -> Verdict:
    """The verdict for one completion against its reference: the only scoring path (filter, votes, eval).

    Never raises on odd completions or references: a missing reference (for a check that needs one), no
    answer, or a checker error is an unverifiable verdict with its reason.
    """
    no_reference = reference is None or (isinstance(reference, str) and not reference.strip())
    if no_reference and check.spec.needs_reference:
        return Verdict(None, "no reference answer", None)
    if not isinstance(completion, str):
        kind = type(completion).__name__
        return Verdict(None, f"checker error: TypeError: the completion is {kind}, not text", None)
    try:
        answer = check.spec.extract(completion, check.options)
        if answer is None:
            return Verdict(None, check.spec.no_answer, None)
        return check.spec.compare(answer, None if no_reference else reference, check.options)
    except Exception as e:  # one malformed sample must not abort a whole batch
        return Verdict(None, f"checker error: {type(e).__name__}: {e}", None)


def extract(check: Check, completion: str) -> Answer | None:
    """The answer `check` reads from `completion` (None when there is none or the checker fails on it)."""
    try:
        return check.spec.extract(completion, check.options)
    except Exception:  # an unreadable completion has no answer to count
        return None


def vote_key(check: Check, answer: str) -> str:
    """What a majority vote counts for an answer's text: answers with the same key are one vote (0.5, 1/2)."""
    return check.spec.vote_key(answer) if check.spec.vote_key else answer


def majority(answers: Iterable[str | None]) -> tuple[str | None, int]:
    """The most frequent answer and its count (ties: the smallest string); (None, 0) when there is none.

    The one majority rule of filter voting and of eval's majority accuracy; None and "" are no answer.

    >>> majority(["7", "8", "7", None])
    ('7', 2)
    >>> majority(["8", "7"])
    ('7', 1)
    >>> majority([None])
    (None, 0)
    """
    counts = Counter(a for a in answers if a)
    if not counts:
        return None, 0
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
