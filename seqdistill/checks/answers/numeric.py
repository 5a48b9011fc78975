"""The `numeric` check: the completion's final number against the reference's, within a tolerance (no sympy).

Limits: one number per answer; a percentage is its number (50% reads 50); units and words are ignored.
"""

from __future__ import annotations

import math
import re

from seqdistill.checks.answers.base import Answer, CheckSpec, Example, NoOptions, Verdict
from seqdistill.checks.answers.text import last_boxed

# Tolerances: relative for large values, absolute so that 0 == 0.0 == -0.
REL_TOL = 1e-6
ABS_TOL = 1e-9

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


def extract_numeric(completion: str, options: NoOptions | None = None) -> Answer | None:
    """The completion's final number, in canonical text (``float(answer.text)`` gives it back exactly).

    >>> extract_numeric("So the total is 1,234.")
    Answer(text='1234', parts=(), source=None)
    """
    value = last_number(completion)
    return None if value is None else Answer(_fmt(value))


def compare_numeric(answer: Answer, reference: str, options: NoOptions | None = None) -> Verdict:
    """Equal within ``REL_TOL`` / ``ABS_TOL``; unverifiable when the reference holds no number."""
    ref = last_number(reference)
    if ref is None:
        return Verdict(None, f"no number in reference {reference!r}", None)
    got = float(answer.text)
    if math.isclose(got, ref, rel_tol=REL_TOL, abs_tol=ABS_TOL):
        return Verdict(True, f"answer {answer.text} == reference {_fmt(ref)}", answer.text)
    return Verdict(False, f"answer {answer.text} != reference {_fmt(ref)}", answer.text)


SPEC = CheckSpec(
    name="numeric",
    description="the last number (inside the last `\\boxed{}` if any; `1,234`, `-3/4`, `\\frac{3}{4}`), "
    "equal within a relative tolerance of 1e-6",
    extract=extract_numeric,
    compare=compare_numeric,
    example=Example("So the total is 1,234.", "1234", "correct"),
    no_answer="no number in completion",
)
