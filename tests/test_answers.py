"""Tests for seqdistill.checks.answers: one table per checker, plus the check() wrapper."""

import threading

import pytest

from seqdistill.checks.answers import CHECKERS, Verdict, check, get_checker, last_boxed
from seqdistill.errors import ConfigError

# (completion, reference, expected correct, expected answer or None to skip the answer assertion)
MATH_CASES = [
    ("The answer is 42.", "42", True, "42"),
    ("The answer is 41.", "42", False, "41"),
    ("first \\boxed{3}, corrected: \\boxed{5}", "5", True, "5"),  # last box wins
    ("first \\boxed{5}, corrected: \\boxed{3}", "5", False, "3"),
    ("So the answer is **73**", "73", True, "73"),
    ("We get $x^2+2x+1$", "(x+1)^2", True, None),  # bare reference needs $...$ to parse
    ("Thus \\boxed{0.75}", "\\frac{3}{4}", True, "0.75"),  # decimal vs fraction
    ("Thus \\boxed{\\dfrac{1}{2}}", "0.5", True, None),
    ("The total is \\boxed{1,234}", "1234", True, "1,234"),
    ("It is \\boxed{-7}", "-7", True, "-7"),
    ("It is \\boxed{7}", "-7", False, "7"),
    ("I could not solve it.", "42", None, None),  # nothing to parse
    ("", "42", None, None),
    ("Hence \\boxed{}", "42", None, None),  # an empty box is no answer
    ("Thus \\boxed{\\sqrt{2}}", "\\sqrt{2}", True, None),
]


@pytest.mark.parametrize(("completion", "reference", "correct", "answer"), MATH_CASES)
def test_math(completion, reference, correct, answer):
    verdict = check("math", completion, reference)
    assert verdict.correct is correct, verdict
    if answer is not None:
        assert verdict.answer == answer
    if correct is None:
        assert verdict.answer is None


NUMERIC_CASES = [
    ("The answer is 42", "42", True, "42"),
    ("The answer is 41", "42", False, "41"),
    ("In total she pays 1,234 dollars.", "1234", True, "1234"),
    ("Total: $1,234,567.50", "1234567.5", True, "1234567.5"),
    ("It drops to -5 degrees.", "-5", True, "-5"),
    ("It drops to 5 degrees.", "-5", False, "5"),
    ("Pages 10-12", "12", True, "12"),  # a range, not minus twelve
    ("So 3/4 of them.", "0.75", True, "0.75"),
    ("So \\frac{3}{4}", "0.75", True, "0.75"),
    ("Thus \\boxed{-\\dfrac{3}{4}}", "-0.75", True, "-0.75"),
    ("The rate is 50%", "50", True, "50"),
    ("We found 7 then \\boxed{8} and then talked about 9", "8", True, "8"),  # box beats later numbers
    ("\\boxed{1} no wait \\boxed{2}", "2", True, "2"),
    ("0.1 + 0.2 = 0.30000000001", "0.3", True, None),  # within relative tolerance
    ("It is 0.3001", "0.3", False, "0.3001"),
    ("Answer: 42.", "42.0", True, "42"),
    ("I have no idea.", "42", None, None),
    ("\\boxed{\\text{undefined}}", "42", None, None),  # box without a number: do not guess
    ("1/0", "5", None, None),  # zero denominator is not a number
    ("42", "forty-two", None, None),  # reference without a number
]


@pytest.mark.parametrize(("completion", "reference", "correct", "answer"), NUMERIC_CASES)
def test_numeric(completion, reference, correct, answer):
    verdict = check("numeric", completion, reference)
    assert verdict.correct is correct, verdict
    if answer is not None:
        assert verdict.answer == answer
    if correct is None:
        assert verdict.answer is None


CHOICE_CASES = [
    ("Weighing both, the answer is (B).", "B", True, "B"),
    ("Answer: B", "(B)", True, "B"),
    ("I pick **C**", "C", True, "C"),
    ("Final: $\\boxed{D}$", "D", True, "D"),
    ("After elimination we are left with B)", "B", True, "B"),
    ("After elimination we are left with\nE", "E", True, "E"),
    ("The answer is (b)", "B", True, "B"),  # parenthesised lower case is unambiguous
    ("Option A is wrong. The correct answer is option C.", "C", True, "C"),
    ("The answer is $(B)$.", "B", True, "B"),
    ("The answer is (A).", "B", False, "A"),
    ("\\boxed{A} hmm, no: \\boxed{J}", "J", True, "J"),
    ("The answer is A. Wait, the answer is C.", "A", False, "C"),
    ("This is a good question and I am not sure.", "A", None, None),  # English "a" is not choice A
    ("the answer is a tricky one", "A", None, None),
    ("No idea.", "B", None, None),
    ("Answer: B", "42", None, None),  # reference is not a letter
]


@pytest.mark.parametrize(("completion", "reference", "correct", "answer"), CHOICE_CASES)
def test_choice(completion, reference, correct, answer):
    verdict = check("choice", completion, reference)
    assert verdict.correct is correct, verdict
    if answer is not None:
        assert verdict.answer == answer
    if correct is None:
        assert verdict.answer is None


EXACT_CASES = [
    ("Paris", "Paris", True, "paris"),
    ("  paris. ", "Paris", True, "paris"),
    ("$Paris$", "paris", True, "paris"),
    ("New   York\nCity", "new york city", True, "new york city"),
    ("The city is \\boxed{Rome}", "rome", True, "rome"),
    ("\\boxed{Rome} no, \\boxed{Paris}", "Paris", True, "paris"),
    ("London", "Paris", False, "london"),
    ("The answer is Paris", "Paris", False, None),  # exact means exact: no answer extraction
    ("   ", "Paris", None, None),
    ("Paris", "$.$", None, None),  # reference empty after normalisation
]


@pytest.mark.parametrize(("completion", "reference", "correct", "answer"), EXACT_CASES)
def test_exact(completion, reference, correct, answer):
    verdict = check("exact", completion, reference)
    assert verdict.correct is correct, verdict
    if answer is not None:
        assert verdict.answer == answer
    if correct is None:
        assert verdict.answer is None


def test_reason_texts():
    assert check("numeric", "42", "42").reason == "answer 42 == reference 42"
    assert check("numeric", "41", "42").reason == "answer 41 != reference 42"
    assert check("numeric", "none", "42").reason == "no number in completion"


@pytest.mark.parametrize("name", sorted(CHECKERS))
@pytest.mark.parametrize("reference", [None, "", "   \n"])
def test_missing_reference_is_unverifiable(name, reference):
    assert check(name, "The answer is \\boxed{42}", reference) == Verdict(None, "no reference answer", None)


def test_checker_keys():
    assert set(CHECKERS) == {"math", "numeric", "choice", "exact"}
    for name, fn in CHECKERS.items():
        assert get_checker(name) is fn


@pytest.mark.parametrize("name", ["none", "regex", "", "MATH"])
def test_unknown_checker_raises_config_error(name):
    with pytest.raises(ConfigError) as info:
        get_checker(name)
    assert str(info.value) == f"unknown check {name!r}; choose one of: exact, math, numeric, choice, none"


def test_check_with_unknown_name_raises_config_error():
    with pytest.raises(ConfigError):
        check("bogus", "42", "42")


GOOD_REFERENCE = {"math": "42", "numeric": "42", "choice": "B", "exact": "42"}


@pytest.mark.parametrize("name", sorted(CHECKERS))
@pytest.mark.parametrize("completion", [None, 42, b"42", ["42"], object()])
def test_garbage_completion_does_not_raise(name, completion):
    verdict = check(name, completion, GOOD_REFERENCE[name])
    assert isinstance(verdict, Verdict)
    assert verdict.correct is None
    assert verdict.reason.startswith("checker error: ")
    assert verdict.answer is None


@pytest.mark.parametrize("name", sorted(CHECKERS))
@pytest.mark.parametrize("reference", [42, b"B", ["42"]])
def test_garbage_reference_does_not_raise(name, reference):
    verdict = check(name, "The answer is B, i.e. 42", reference)
    assert isinstance(verdict, Verdict)
    assert isinstance(verdict.reason, str) and verdict.reason


def test_checker_error_reason_format():
    verdict = check("numeric", None, "42")
    assert verdict.reason == "checker error: TypeError: expected string or bytes-like object, got 'NoneType'"


def test_math_in_worker_thread():
    results: list[Verdict] = []
    errors: list[BaseException] = []

    def work():
        try:
            results.append(check("math", "so \\boxed{\\frac{6}{8}}", "0.75"))
            results.append(check("math", "the answer is $(x+1)^2$", "x^2+2x+1"))
            results.append(check("math", "the answer is 3", "4"))
        except BaseException as e:  # surface anything, including the signal error, in the main thread
            errors.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert errors == []
    assert [v.correct for v in results] == [True, True, False]
    # A "checker error" would also give correct=None; make sure no error reasons slipped through.
    assert not any(v.reason.startswith("checker error") for v in results)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{a} \\boxed{b}", "b"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{ok} then \\boxed{trunc", "ok"),  # unbalanced last box falls back to an earlier one
        ("no box here", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected
