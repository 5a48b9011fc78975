"""The `math` check: the completion's final answer against the reference, by value (math_verify + sympy).

Which answer (``extract``), in order:
1. a final answer stated after the last box ("... \\boxed{200} ... The final answer is $10,455$."):
   the statement wins over a boxed intermediate result;
2. the last ``\\boxed{}`` (a self-correction "\\boxed{1}. Wait, actually \\boxed{2}" means 2); the
   boxes before it travel along as ``Answer.parts`` for references in several parts (below);
3. otherwise math_verify's own reading of the text ("The answer is 42.").

How it compares (``compare``): plain numbers on both sides (``numbers.py``: integers, decimals,
fractions, thousands separators) exactly, with math_verify's rounding rule, and no sympy; everything
else with math_verify (symbolic and numeric equivalence, sets, intervals, equations). A reference in
several parts ("3, 5", "x=1, y=2", "(1,2)") also matches an answer boxed in as many parts
("x = \\boxed{1}, y = \\boxed{2}") when no retraction ("wait", "actually", ...) stands between those
boxes. A decimal-comma reference (``1,22``) matches both of its readings (1.22 and the list 1, 22).

Limits: answers are compared, not the reasoning; a box that is not the final answer (parts of a
multi-part question spread over the text with retractions between them) reads as the last box only;
math_verify compares pi or e with the reference's precision (``\\pi`` vs ``3.14159`` is wrong).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from seqdistill.checks.answers import numbers
from seqdistill.checks.answers.base import Answer, CheckSpec, Example, NoOptions, Verdict
from seqdistill.checks.answers.text import Box, boxes

_outer_timeout_active = False  # True while a caller (checks.pool) bounds the whole check itself


@contextmanager
def math_verify_timeouts_disabled() -> Iterator[None]:
    """Turn off math_verify's own signal.alarm timeouts while the caller times the whole check.

    math_verify's per-call alarms would cancel an outer ``SIGALRM`` timer (each call ends with
    ``signal.alarm(0)``), so a caller that runs its own timer around a check must use this.
    """
    global _outer_timeout_active
    previous, _outer_timeout_active = _outer_timeout_active, True
    try:
        yield
    finally:
        _outer_timeout_active = previous


def _silence_math_verify_timeout_warning() -> None:
    """math_verify warns once per module that "Timeout is disabled"; mark it as shown."""
    import math_verify.grader
    import math_verify.parser

    for module in (math_verify.parser, math_verify.grader):
        if getattr(module, "TIMEOUT_WARNING_SHOWN", True) is False:
            module.TIMEOUT_WARNING_SHOWN = True


def _timeouts_off() -> bool:
    """math_verify enforces timeouts with signal.alarm, which raises off the main thread, so worker
    threads run without them (the caller then owns any time limit), and so does a caller with its own timer."""
    return threading.current_thread() is not threading.main_thread() or _outer_timeout_active


def _parse(text: str) -> list:
    """math_verify.parse with the timeout setting of this thread (see ``_timeouts_off``)."""
    if _timeouts_off():
        if _outer_timeout_active:
            _silence_math_verify_timeout_warning()  # the caller does bound the time: the warning would mislead
        return _parse_cached(text, None)
    return _parse_cached(text, 5)


@lru_cache(maxsize=256)  # references repeat for every sample of a prompt; free text is parsed by extract and compare
def _parse_cached(text: str, timeout: int | None) -> list:
    from math_verify import parse  # heavy import (sympy): only paid for when a check needs it

    return parse(text, parsing_timeout=timeout)


def _verify(gold: list, pred: list) -> bool:
    from math_verify import verify

    return verify(gold, pred, timeout_seconds=None if _timeouts_off() else 5)


# ---------------------------------------------------------------------------- extract

_FINAL_RE = re.compile(r"final\s+answer", re.IGNORECASE)
_STATEMENT_LEAD_RE = re.compile(r"^[\s*:]*(?:is\b|=)?[\s*:]*", re.IGNORECASE)
_HOPE_RE = re.compile(r"\s*\bI hope\b.*", re.IGNORECASE | re.DOTALL)
# Words that take back an earlier box: boxes on either side of one are not parts of one answer.
_RETRACTION_RE = re.compile(
    r"\b(?:wait|actually|oops|mistake|error|wrong|scratch|instead|correction|corrected|re-?check|reconsider"
    r"|recompute|recalculate|redo|hmm+|hold on|double[- ]check)\b",
    re.IGNORECASE,
)
CLUSTER_GAP = 200  # characters: k boxes further than this from an earlier box form one answer on their own


def extract_math(completion: str, options: NoOptions | None = None) -> Answer | None:
    """The final answer of ``completion`` (see the module doc for the order of rules).

    >>> extract_math(r"x = \\boxed{200}, so ... The final answer is $10,455$. I hope it is correct.")
    Answer(text='10,455', parts=(), source=None)
    >>> extract_math(r"The roots are \\boxed{-2} and \\boxed{1}.")
    Answer(text='1', parts=('-2', '1'), source=None)
    """
    text = completion.replace("\u2212", "-")  # Unicode minus: math_verify reads it only inside LaTeX
    found = boxes(text) if "box" in text else []
    stated = _stated_final(text, after=found[-1].end if found else 0)
    if stated is not None:
        return stated
    if found:
        return Answer(found[-1].content, parts=tuple(b.content for b in _trailing_run(text, found)))
    plain = text.replace("**", "")  # Markdown bold hides "**73**" from math_verify's patterns
    pred = _parse(plain)
    if not pred:
        return None
    return Answer(pred[-1] if isinstance(pred[-1], str) else str(pred[0]), source=plain)


def _stated_final(text: str, after: int) -> Answer | None:
    """The answer of the last "final answer ..." statement that starts after index ``after``, if it parses."""
    if "nswer" not in text:  # cheap test before the regex scan
        return None
    statements = list(_FINAL_RE.finditer(text, after))
    if not statements:
        return None
    last = statements[-1]
    rest = _STATEMENT_LEAD_RE.sub("", text[last.end() : last.end() + 400], count=1)
    fragment = _HOPE_RE.sub("", rest.split("\n", 1)[0]).strip()
    bare = fragment.rstrip(".").strip().strip("$").strip()
    if not bare:
        return None
    if numbers.plain_number(bare) is not None:
        return Answer(bare)
    pred = _parse(fragment)
    if not pred:
        return None
    return Answer(pred[-1] if isinstance(pred[-1], str) else str(pred[0]), source=fragment)


def _trailing_run(text: str, found: list[Box]) -> list[Box]:
    """The boxes that may be parts of one final answer: none, or two or more ending with the last box.

    The last boxes with no retraction between them; when the last of those stand apart (a gap of more
    than ``CLUSTER_GAP`` characters before them: a final summary after the working), only that cluster.
    """
    run = [found[-1]]
    for prev in reversed(found[:-1]):
        if _RETRACTION_RE.search(text, prev.end, run[0].start):
            break
        run.insert(0, prev)
    for i in range(len(run) - 1, 0, -1):  # the last gap wider than CLUSTER_GAP splits off the last cluster
        if run[i].start - run[i - 1].end > CLUSTER_GAP:
            if len(run) - i >= 2:
                run = run[i:]
            break
    return run if len(run) > 1 else []


# ---------------------------------------------------------------------------- compare

_DECIMAL_COMMA_RE = re.compile(r"-?\d+,\d+")
_THOUSANDS_RE = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+")


def compare_math(answer: Answer, reference: str, options: NoOptions | None = None) -> Verdict:
    """Plain numbers exactly (no sympy), anything else with math_verify; the same verdicts either way.

    >>> compare_math(Answer("0.75"), r"\\frac{3}{4}")
    Verdict(correct=True, reason='answer 0.75 == reference \\\\frac{3}{4}', answer='0.75', timed_out=False)
    """
    reference = reference.replace("\u2212", "-")
    fast = compare_plain(answer, reference)
    return fast if fast is not None else compare_sympy(answer, reference)


def compare_plain(answer: Answer, reference: str) -> Verdict | None:
    """The verdict when answer and reference are both plain numbers, else None (math_verify decides)."""
    if answer.source is not None:
        return None
    mine = numbers.plain_number(answer.text)
    if mine is None:
        return None
    ref = numbers.plain_number(reference)
    if ref is None:
        return None
    correct = numbers.equal(mine, ref)
    if correct is None:
        return None
    return _verdict(correct, answer.text, reference)


def compare_sympy(answer: Answer, reference: str) -> Verdict:
    """math_verify's verdict on the answer (or its boxed parts, for a reference in as many parts)."""
    golds = [g for g in _gold_readings(reference) if g]
    if not golds:
        return Verdict(None, f"cannot parse reference {reference!r}", None)
    shown, source = answer.text, answer.source or "\\boxed{" + answer.text + "}"
    parts = _reference_parts(reference)
    if len(parts) >= 2 and len(answer.parts) == len(parts):
        shown = _join_like(answer.parts, reference)
        source = "\\boxed{" + shown + "}"
    preds = [p for p in _answer_readings(source, shown, len(parts)) if p]
    if not preds:
        return Verdict(None, "no parseable answer in completion", None)
    correct = any(_verify(gold, pred) for gold in golds for pred in preds)
    return _verdict(correct, shown, reference)


def _verdict(correct: bool, shown: str, reference: str) -> Verdict:
    return Verdict(correct, f"answer {shown} {'==' if correct else '!='} reference {reference}", shown)


def _gold_readings(reference: str) -> list[list]:
    """The reference as math_verify reads it, plus the decimal reading of a decimal comma (``1,22``)."""
    # A bare reference such as "(x+1)^2" only parses inside math delimiters, and outside them "2(x+1)",
    # "2\sqrt{2}" or "1, 2" parse as their last number; so wrap first unless it has its own delimiters.
    if "$" in reference or "\\boxed" in reference:
        readings = [_parse(reference) or _parse(f"${reference}$")]
    else:
        readings = [_parse(f"${reference}$") or _parse(reference)]
    if _is_decimal_comma(reference.strip()):
        readings.append(_parse(f"${reference.strip().replace(',', '.')}$"))
    return readings


def _answer_readings(source: str, shown: str, reference_parts: int) -> list[list]:
    """The answer as math_verify reads it; a lone decimal-comma answer (``2,5``) is also read as a decimal."""
    readings = [_parse(source)]
    if reference_parts < 2 and _is_decimal_comma(shown.strip()):
        readings.append(_parse("\\boxed{" + shown.strip().replace(",", ".") + "}"))
    return readings


def _is_decimal_comma(text: str) -> bool:
    return _DECIMAL_COMMA_RE.fullmatch(text) is not None and _THOUSANDS_RE.fullmatch(text) is None


def _reference_parts(reference: str) -> list[str]:
    """The reference's top-level comma-separated parts ("3, 5" -> 2; "(1,2)" -> 2; "[1,3)" or "1,234" -> 1).

    >>> _reference_parts("x=1, y=2"), _reference_parts(r"\\frac{1}{2}"), _reference_parts("(1, 2)")
    (['x=1', 'y=2'], ['\\\\frac{1}{2}'], ['1', '2'])
    """
    text = reference.strip().strip("$").strip()
    if numbers.plain_number(text) is not None or _THOUSANDS_RE.fullmatch(text):
        return [text]
    inner = text[1:-1] if _wrapped_in_parens(text) else text
    parts, depth, start = [], 0, 0
    for i, char in enumerate(inner):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return parts if all(parts) else [text]


def _wrapped_in_parens(text: str) -> bool:
    """True for "(a, b)" whose outer parentheses pair with each other (not "(1,2) \\cup (3,4)")."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for i, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        if depth == 0 and i < len(text) - 1:
            return False
    return True


def _join_like(parts: tuple[str, ...], reference: str) -> str:
    """Boxed parts written as one answer shaped like the reference: "(1, 2)" for "(1,2)", else "1, 2"."""
    joined = ", ".join(parts)
    text = reference.strip().strip("$").strip()
    return f"({joined})" if _wrapped_in_parens(text) else joined


def vote_key_math(text: str) -> str:
    """Answers that count as one vote: equal plain numbers (0.5, \\frac{1}{2}) share a key.

    >>> vote_key_math(r"\\frac{1}{2}") == vote_key_math("0.5")
    True
    """
    plain = numbers.plain_number(text)
    return numbers.canonical(plain.value) if plain is not None else " ".join(text.split())


SPEC = CheckSpec(
    name="math",
    description="the final answer stated after the last `\\boxed{}`, else the last box (as many boxes as a "
    "reference has parts), else math_verify's reading; compared by value: plain numbers exactly, the rest with "
    "math_verify (sympy)",
    extract=extract_math,
    compare=compare_math,
    example=Example(r"So $x = \boxed{\frac{1}{2}}$.", "0.5", "correct"),
    no_answer="no parseable answer in completion",
    vote_key=vote_key_math,
)
