"""Answer checkers: decide whether a completion's final answer matches a reference answer.

Every checker is a plain function ``(completion_text, reference) -> Verdict``. ``correct`` is
True / False when the answer could be compared and None when it could not (no answer found,
reference unparseable), so callers can tell "wrong" apart from "unverifiable".
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from seqdistill.errors import ConfigError

# Tolerances for the numeric checker: relative for large values, absolute so that 0 == 0.0 == -0.
REL_TOL = 1e-6
ABS_TOL = 1e-9


class Verdict(NamedTuple):
    """Outcome of one answer check."""

    correct: bool | None  # True correct, False wrong, None unverifiable
    reason: str  # short human-readable explanation
    answer: str | None  # answer extracted from the completion, if any


Checker = Callable[[str, str], Verdict]

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Return the content of the last well-formed ``\\boxed{...}`` in ``text``, or None.

    Braces are matched by counting, because boxed answers often contain nested braces.

    >>> last_boxed(r"first \\boxed{1}, then \\boxed{\\frac{3}{4}}")
    '\\\\frac{3}{4}'
    >>> last_boxed("no box") is None
    True
    """
    for match in reversed(list(_BOXED_RE.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            if depth == 0:
                return text[start:i]
        # Unbalanced (e.g. truncated generation): try an earlier box instead.
    return None


# ---------------------------------------------------------------------------- math


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


def _mv_kwargs() -> tuple[dict, dict]:
    """Keyword arguments for math_verify's parse / verify in the current thread.

    math_verify enforces its timeouts with signal.alarm, which raises off the main thread,
    so worker threads must disable them (the caller then owns any overall time limit), and so
    must a caller that runs its own timer (see ``math_verify_timeouts_disabled``).
    """
    if threading.current_thread() is threading.main_thread() and not _outer_timeout_active:
        return {}, {}
    return {"parsing_timeout": None}, {"timeout_seconds": None}


def check_math(completion: str, reference: str) -> Verdict:
    """Compare mathematically with math_verify (symbolic and numeric equivalence).

    >>> check_math(r"So $x = \\boxed{\\frac{1}{2}}$.", "0.5").correct
    True
    """
    from math_verify import parse, verify  # heavy import (sympy): only pay for it when used

    parse_kw, verify_kw = _mv_kwargs()
    if _outer_timeout_active:
        _silence_math_verify_timeout_warning()  # the caller does bound the time: the warning would mislead
    # A bare reference such as "(x+1)^2" only parses inside math delimiters, and outside them
    # "2(x+1)", "2\\sqrt{2}" or "1, 2" parse as their last number; so wrap first unless the
    # reference already carries its own delimiters.
    if "$" in reference or "\\boxed" in reference:
        gold = parse(reference, **parse_kw) or parse(f"${reference}$", **parse_kw)
    else:
        gold = parse(f"${reference}$", **parse_kw) or parse(reference, **parse_kw)
    if not gold:
        return Verdict(None, f"cannot parse reference {reference!r}", None)
    # math_verify merges several \boxed{} into one set, so we pick the last box ourselves.
    boxed = last_boxed(completion)
    text = "\\boxed{" + boxed + "}" if boxed is not None else completion.replace("**", "")
    pred = parse(text, **parse_kw)
    if not pred:
        return Verdict(None, "no parseable answer in completion", None)
    # parse() returns [sympy_object, matched_string]; the string is the human-readable answer.
    answer = pred[-1] if isinstance(pred[-1], str) else str(pred[0])
    if verify(gold, pred, **verify_kw):
        return Verdict(True, f"answer {answer} == reference {reference}", answer)
    return Verdict(False, f"answer {answer} != reference {reference}", answer)


# ---------------------------------------------------------------------------- numeric

# Thousands groups must be exactly three digits so that "1,2,3" stays three numbers.
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(
    # No digit/letter/dot before the sign: "10-12" is a range, not 10 and -12.
    r"(?<![\w.])(?P<neg>[-\u2212]\s*)?(?:"
    rf"\\[dt]?frac\s*\{{\s*(?P<tn>-?{_NUM})\s*\}}\s*\{{\s*(?P<td>-?{_NUM})\s*\}}"
    rf"|(?P<sn>{_NUM})\s*/\s*(?P<sd>{_NUM})"
    rf"|(?P<plain>{_NUM}))"
)


def _number_value(m: re.Match) -> float | None:
    """Value of one _NUMBER_RE match; None for a zero denominator."""

    def num(s: str) -> float:
        return float(s.replace(",", ""))

    if m["plain"] is not None:
        value = num(m["plain"])
    else:
        top, bottom = (m["tn"], m["td"]) if m["tn"] is not None else (m["sn"], m["sd"])
        if num(bottom) == 0:
            return None
        value = num(top) / num(bottom)
    return -value if m["neg"] else value


def last_number(text: str) -> float | None:
    """Final number of ``text`` (inside the last ``\\boxed{}`` if there is one), or None.

    >>> last_number(r"Total: 1,234 apples, i.e. \\boxed{-\\dfrac{3}{4}}")
    -0.75
    >>> last_number("she paid $18.50 (a 10% tip).")
    10.0
    """
    boxed = last_boxed(text)
    # A box is the declared answer: if it holds no number, do not guess from the working.
    matches = _NUMBER_RE.finditer(boxed if boxed is not None else text)
    values = [v for v in map(_number_value, matches) if v is not None]
    return values[-1] if values else None


def _fmt(value: float) -> str:
    """Short canonical text for a number: 1234.0 -> '1234', 0.75 -> '0.75'."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def check_numeric(completion: str, reference: str) -> Verdict:
    """Compare the final number of the completion with the reference number, within tolerance.

    >>> check_numeric("So the total is 1,234.", "1234")
    Verdict(correct=True, reason='answer 1234 == reference 1234', answer='1234')
    """
    ref = last_number(reference)
    if ref is None:
        return Verdict(None, f"no number in reference {reference!r}", None)
    got = last_number(completion)
    if got is None:
        return Verdict(None, "no number in completion", None)
    answer = _fmt(got)
    if math.isclose(got, ref, rel_tol=REL_TOL, abs_tol=ABS_TOL):
        return Verdict(True, f"answer {answer} == reference {_fmt(ref)}", answer)
    return Verdict(False, f"answer {answer} != reference {_fmt(ref)}", answer)


# ---------------------------------------------------------------------------- choice

# Accepts B, (B), \text{B}, \text{(B)}, \textbf{B}, (\text{B}).
_LETTER_BOX_RE = re.compile(r"\s*\(?\s*(?:\\text(?:bf)?\{\s*)?\(?\s*([A-Ja-j])\s*\)?\s*\}?\s*\)?\s*\.?\s*")
# Lower-case letters only count when parenthesised: "the answer is a bit..." must not mean A.
_ANSWER_PHRASE_RE = re.compile(
    r"answer\s*(?:is|:)?\s*:?\s*(?:option\s*|choice\s*)?[*$\s]*(?:\(([A-Ja-j])\)|([A-J])(?![A-Za-z0-9]))",
    re.IGNORECASE,
)
_BOLD_RE = re.compile(r"\*\*\s*\(?([A-J])\)?[.:)]?\s*\*\*")
_TRAILING_RE = re.compile(r"(?:^|[\s:(*$])\(?([A-J])(?:\)|\.|\b)[*$]*\s*\.?\s*$")


def extract_choice(text: str) -> str | None:
    """Multiple-choice letter A-J that ``text`` commits to, or None.

    Priority: last ``\\boxed{}``, then the last "answer is X" phrase, then the last **X**, then a
    letter standing at the very end.

    >>> extract_choice("Option C looks tempting, but the answer is (b).")
    'B'
    >>> extract_choice("It is a good question.") is None
    True
    """
    boxed = last_boxed(text)
    if boxed is not None:
        m = _LETTER_BOX_RE.fullmatch(boxed)
        return m[1].upper() if m else None
    # IGNORECASE applies to the phrase; the bare-letter branch is checked for upper case here.
    phrases = [m for m in _ANSWER_PHRASE_RE.finditer(text) if m[1] or m[2].isupper()]
    if phrases:
        return (phrases[-1][1] or phrases[-1][2]).upper()
    bolds = _BOLD_RE.findall(text)
    if bolds:
        return bolds[-1]
    m = _TRAILING_RE.search(text)
    return m[1] if m else None


def check_choice(completion: str, reference: str) -> Verdict:
    """Compare the chosen multiple-choice letter with the reference letter.

    >>> check_choice("Answer: D", "(D)")
    Verdict(correct=True, reason='answer D == reference D', answer='D')
    """
    m = re.fullmatch(r"\(?([A-Ja-j])\)?\.?", reference.strip())
    if m is None:
        return Verdict(None, f"reference {reference!r} is not a letter A-J", None)
    ref = m[1].upper()
    answer = extract_choice(completion)
    if answer is None:
        return Verdict(None, "no choice letter in completion", None)
    if answer == ref:
        return Verdict(True, f"answer {answer} == reference {ref}", answer)
    return Verdict(False, f"answer {answer} != reference {ref}", answer)


# ---------------------------------------------------------------------------- exact


def normalize_text(text: str) -> str:
    """Normalise for exact comparison: strip, drop surrounding $ and a trailing period, collapse spaces, casefold.

    >>> normalize_text("  $Paris$. ")
    'paris'
    """
    text = text.strip().strip("$").strip().removesuffix(".").strip().strip("$")
    return " ".join(text.split()).casefold()


def check_exact(completion: str, reference: str) -> Verdict:
    """Normalised string equality; the last ``\\boxed{}`` content is the answer when present.

    >>> check_exact(r"The capital is \\boxed{Paris}", "paris").correct
    True
    """
    boxed = last_boxed(completion)
    answer = normalize_text(boxed if boxed is not None else completion)
    ref = normalize_text(reference)
    if not ref:
        return Verdict(None, "empty reference after normalisation", None)
    if not answer:
        return Verdict(None, "empty answer in completion", None)
    if answer == ref:
        return Verdict(True, f"answer {answer!r} == reference {ref!r}", answer)
    return Verdict(False, f"answer {answer!r} != reference {ref!r}", answer)


# ---------------------------------------------------------------------------- regex


def make_regex_checker(pattern: str) -> Checker:
    """Build a checker that extracts the answer with a user regex and compares it like ``exact``.

    The answer is the first capture group of the last match (the whole match when the pattern
    has no group); it and the reference are compared after ``normalize_text``. Raises ConfigError
    naming ``check_pattern`` when the pattern is missing or does not compile.

    >>> make_regex_checker(r"ANSWER:\\s*(\\w+)")("ANSWER: x ... ANSWER: Paris", "paris").correct
    True
    """
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError("check 'regex' needs check_pattern: a regular expression that extracts the answer")
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"check_pattern {pattern!r} is not a valid regular expression: {e}") from None

    def check_regex(completion: str, reference: str) -> Verdict:
        ref = normalize_text(reference)
        if not ref:
            return Verdict(None, "empty reference after normalisation", None)
        matches = list(regex.finditer(completion))
        if not matches:
            return Verdict(None, "check_pattern does not match the completion", None)
        last = matches[-1]
        raw = last[1] if regex.groups else last[0]
        answer = normalize_text(raw) if raw is not None else ""
        if not answer:
            return Verdict(None, "empty answer in completion", None)
        if answer == ref:
            return Verdict(True, f"answer {answer!r} == reference {ref!r}", answer)
        return Verdict(False, f"answer {answer!r} != reference {ref!r}", answer)

    check_regex.pattern = pattern  # type: ignore[attr-defined]  # for logs and tests
    return check_regex


# ---------------------------------------------------------------------------- registry

CHECKERS: dict[str, Checker] = {
    "math": check_math,
    "numeric": check_numeric,
    "choice": check_choice,
    "exact": check_exact,
}

# Checkers that need options from the config: name -> factory(**options) -> Checker.
CHECKER_FACTORIES: dict[str, Callable[..., Checker]] = {
    "regex": lambda pattern=None: make_regex_checker(pattern),  # type: ignore[arg-type]
    "code": lambda pattern=None, unsafe=False: _code_checker(unsafe),  # imported on use: it runs programs
}
_FACTORY_OPTIONS = {"regex": {"pattern"}, "code": {"unsafe"}}

CHECK_NAMES = ("exact", "math", "numeric", "choice", "regex", "code", "none")


def _code_checker(unsafe: bool = False) -> Checker:
    from seqdistill.checks.code import code_checker

    return code_checker(unsafe)


def get_checker(name: str, **options) -> Checker:
    """Look up a checker by name; "none" is not a checker, callers handle it before this.

    Plain checkers take no options (unknown options are a ConfigError); ``regex`` needs
    ``pattern`` (the config's ``check_pattern``) and builds a new checker on each call.

    >>> get_checker("numeric") is check_numeric
    True
    >>> get_checker("regex", pattern=r"is (\\d+)")("it is 7", "7").correct
    True
    """
    if isinstance(name, str) and name in CHECKER_FACTORIES:
        allowed = _FACTORY_OPTIONS[name]
        unknown = {k for k, v in options.items() if k not in allowed and (k != "pattern" or v is not None)}
        if unknown:
            raise ConfigError(f"check {name!r} does not take option(s): {', '.join(sorted(unknown))}")
        return CHECKER_FACTORIES[name](**options)
    try:
        checker = CHECKERS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown check {name!r}; choose one of: {', '.join(CHECK_NAMES)}") from None
    # A stray pattern=None from a config that always passes check_pattern is harmless.
    extra = sorted(k for k, v in options.items() if v is not None)
    if extra:
        raise ConfigError(f"check {name!r} does not take option(s): {', '.join(extra)}")
    return checker


def check(name: str, completion: str, reference: str | None, **options) -> Verdict:
    """Run checker ``name``; never raises on odd completions or references (an unknown name does raise ConfigError).

    ``options`` are passed to ``get_checker`` (``pattern`` for ``regex``). To run many checks
    with one regex, build the checker once with ``get_checker`` and call ``run_check``.

    >>> check("numeric", "42", None)
    Verdict(correct=None, reason='no reference answer', answer=None)
    """
    checker = get_checker(name, **options)  # a bad name is a config mistake and should stop the run loudly
    return run_check(checker, completion, reference)


def run_check(checker: Checker, completion: str, reference: str | None) -> Verdict:
    """Apply an already-built checker with ``check``'s guarantees (missing reference, no exceptions)."""
    if reference is None or (isinstance(reference, str) and not reference.strip()):
        return Verdict(None, "no reference answer", None)
    try:
        return checker(completion, reference)
    except Exception as e:  # one malformed sample must not abort a whole batch
        return Verdict(None, f"checker error: {type(e).__name__}: {e}", None)


_PROBE = {"choice": "A"}  # a reference each checker can parse, so that it extracts the completion's answer


def extract_answer(name: str, completion: str, **options) -> str | None:
    """The answer checker `name` reads from `completion`, as a string (for majority voting); None if none.

    Every checker extracts the completion's answer before comparing it, so checking against a probe
    reference returns it (`Verdict.answer`) whatever the probe is.

    >>> extract_answer("numeric", "so 1,200 + 34 = \\\\boxed{1,234}")
    '1234'
    """
    return check(name, completion, _PROBE.get(name, "0"), **options).answer
