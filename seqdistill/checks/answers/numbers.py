"""Plain numbers, read exactly: the math check's fast path and its vote keys.

Most answers in math data are plain numbers on both sides (GSM8K, AIME, most of MATH). Reading them
with `fractions.Fraction` and comparing with math_verify's own numeric rule gives the verdict math_verify
would give, without sympy (tests/test_answers.py runs every case through both paths).

Limits: only integers, decimals, thousands separators in groups of three (``1,234``, ``1{,}234``,
``1,\\!234``), integer fractions (``3/4``, ``\\frac{3}{4}``, ``\\dfrac``, ``\\tfrac``) and a leading minus.
Anything else (percentages, units, ``3\\frac12``, ``1e5``, a decimal comma such as ``1,22``, more than 15
significant digits) is not a plain number here and goes to math_verify.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import NamedTuple

_INT = r"(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)"  # thousands groups must be exactly three digits
_PLAIN_RE = re.compile(
    rf"(?P<neg>-)?(?:"
    rf"(?P<num>{_INT}(?:\.\d+)?)"
    rf"|\\[dt]?frac\{{(?P<fn>-?\d+)\}}\{{(?P<fd>-?\d+)\}}"
    rf"|(?P<sn>\d+)/(?P<sd>\d+))"
)
_LATEX_THOUSANDS = re.compile(r"(?<=\d)(?:\{,\}|,\\!)(?=\d{3})")
MAX_DIGITS = 15  # math_verify's floats carry 15 significant digits: longer decimals are its business
# Numbers further apart than this are unequal after math_verify rounds floats to 6 decimals.
ROUNDING_MARGIN = Fraction(2, 10**6)


class Plain(NamedTuple):
    value: Fraction
    is_float: bool  # written with a decimal point: math_verify then compares rounded to 6 decimals


def plain_number(text: str) -> Plain | None:
    """``text`` as an exact plain number, or None when it is anything else.

    >>> plain_number("-1,234.50")
    Plain(value=Fraction(-2469, 2), is_float=True)
    >>> plain_number(r"\\dfrac{3}{4}").value
    Fraction(3, 4)
    >>> plain_number("1,22") is None  # a decimal comma or a list of two numbers: not plain
    True
    """
    text = text.strip()
    if "$" in text:
        text = text.strip("$").strip()
    if "\\" in text or "{" in text:
        text = _LATEX_THOUSANDS.sub(",", text)
    m = _PLAIN_RE.fullmatch(text)
    if m is None:
        return None
    if m["num"] is not None:
        digits = m["num"].replace(",", "")
        if len(digits.replace(".", "").lstrip("0")) > MAX_DIGITS:
            return None
        value, is_float = Fraction(digits), "." in digits
    else:
        top, bottom = (m["fn"], m["fd"]) if m["fn"] is not None else (m["sn"], m["sd"])
        if int(bottom) == 0 or max(len(top), len(bottom)) > MAX_DIGITS:
            return None
        value, is_float = Fraction(int(top), int(bottom)), False
    return Plain(-value if m["neg"] else value, is_float)


def equal(answer: Plain, reference: Plain) -> bool | None:
    """math_verify's verdict on two plain numbers, or None where only math_verify can say.

    What math_verify (with sympy >= 1.13) does, measured: integers and fractions compare exactly, and so
    does an integer with a decimal (2 != 2.0000004); a decimal with a decimal or with a fraction compares
    rounded to 6 decimals (1/3 == 0.3333333), so there a difference above ``ROUNDING_MARGIN`` is unequal
    and a smaller non-zero one is left to math_verify (its rounding of binary floats decides those).
    """
    if answer.value == reference.value:
        return True
    if not (answer.is_float or reference.is_float):
        return False
    other = reference if answer.is_float else answer
    if not other.is_float and other.value.denominator == 1:
        return False
    return False if abs(answer.value - reference.value) > ROUNDING_MARGIN else None


def canonical(value: Fraction) -> str:
    """Short exact text for a number: a decimal when it has one, else p/q.

    >>> [canonical(Fraction(x)) for x in ("7", "0.750", "-1/2", "1/3")]
    ['7', '0.75', '-0.5', '1/3']
    """
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    twos = fives = 0
    while d % 2 == 0:
        d, twos = d // 2, twos + 1
    while d % 5 == 0:
        d, fives = d // 5, fives + 1
    if d != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * 10**places // value.denominator
    sign = "-" if value < 0 else ""
    whole, frac = divmod(scaled, 10**places)
    return f"{sign}{whole}.{frac:0{places}d}".rstrip("0")
