"""`--check math` / `--check choice` against math-verify alone, and the math check's fast path against sympy.

math-verify alone means what a user would write without us: `verify(parse(f"${reference}$"), parse(completion))`
(letters: its StringExtractionConfig). Wherever that is right, our check must be right too.
"""

from __future__ import annotations

import itertools

import pytest
from math_verify import StringExtractionConfig, parse, verify

from seqdistill.checks.answers import check
from seqdistill.checks.answers.math import compare_plain, compare_sympy, extract_math
from tests import answer_cases, test_answers, test_check_pool

LETTERS = [StringExtractionConfig(strings=tuple("ABCDEFGHIJ"), lowercase=False)]


def math_verify_alone(completion: str, reference: str) -> bool:
    return verify(parse(f"${reference}$"), parse(completion))


def math_verify_alone_choice(completion: str, reference: str) -> bool:
    return verify(parse(reference, LETTERS), parse(completion, LETTERS))


@pytest.mark.parametrize(("completion", "reference", "expected"), answer_cases.MATH_CASES)
def test_math_cases(completion, reference, expected):
    verdict = check("math", completion, reference)
    assert verdict.correct is expected, verdict


@pytest.mark.parametrize(("completion", "reference", "expected"), answer_cases.CHOICE_CASES)
def test_choice_cases(completion, reference, expected):
    verdict = check("choice", completion, reference)
    assert verdict.correct is expected, verdict


def _older_math_cases() -> list[tuple[str, str, bool]]:
    """The math rows of test_answers.py's tables (the pytest.param rows unwrapped) with a True/False verdict."""
    rows = [(c, r, e) for c, r, e, _ in test_answers.MATH_CASES]
    for case in test_answers.AWKWARD_CASES:
        name, c, r, e = getattr(case, "values", case)
        if name == "math":
            rows.append((c, r, e))
    return [row for row in rows if row[2] is not None]


@pytest.mark.parametrize(
    ("name", "cases", "alone", "wins"),
    [
        ("math", answer_cases.MATH_CASES, math_verify_alone, 15),
        ("math", _older_math_cases(), math_verify_alone, 1),
        ("choice", answer_cases.CHOICE_CASES, math_verify_alone_choice, 5),
    ],
)
def test_never_wrong_where_math_verify_alone_is_right(name, cases, alone, wins):
    lost = [(c, r) for c, r, e in cases if alone(c, r) == e and check(name, c, r).correct is not e]
    won = [(c, r) for c, r, e in cases if alone(c, r) != e and check(name, c, r).correct is e]
    assert lost == []
    assert len(won) >= wins  # the tables hold cases math-verify alone gets wrong, or this test proves little


# ---------------------------------------------------------------------------- fast path == sympy path

NUMBERS = [
    "0", "7", "-7", "007", "1,234", "1234", "1234.0", "1{,}234", "0.5", "1/2", r"\frac{1}{2}", r"\dfrac{3}{4}",
    "0.75", "-0.75", r"-\tfrac{3}{4}", r"\frac{-3}{4}", "3/4", "2", "2.0", "2.0000004", "1.9999996", "0.3333333",
    "0.333333", "1/3", "0.333", "2/3", "0.6666667", "1,000,000", "1000000.5", "12.50", "12.5", "100", "99.9999999",
    "1.5", "1.5000005", "0.1", "0.1000004", "123456789.123456", "-0", "0.0",
]  # fmt: skip


def _all_math_pairs() -> list[tuple[str, str]]:
    tables = [(c, r) for c, r, _ in answer_cases.MATH_CASES]
    tables += [(c, r) for c, r, _, _ in test_answers.MATH_CASES]
    tables += [(c, r) for name, c, r, *_ in test_answers.AWKWARD_CASES if name == "math"]
    tables += [(c, r) for _, c, r in test_check_pool.MIXED if isinstance(c, str) and r]
    grid = [("\\boxed{" + a + "}", b) for a, b in itertools.product(NUMBERS, NUMBERS)]
    return tables + grid


def test_fast_path_gives_the_sympy_verdict_wherever_it_applies():
    applied = 0
    for completion, reference in _all_math_pairs():
        answer = extract_math(completion)
        if answer is None:
            continue
        fast = compare_plain(answer, reference)
        if fast is None:
            continue
        applied += 1
        assert fast == compare_sympy(answer, reference), (completion, reference)
    assert applied > 1000  # most of the number grid, and the plain cases of the tables
