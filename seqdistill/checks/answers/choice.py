"""The `choice` check: the multiple-choice letter (A-J) the completion states as its answer.

The stated answer, not the last letter mentioned: "The answer is D, it can't be A or B" reads D,
"A. Because B is not valid" reads A. In order: the last ``\\boxed{}``; the last answer statement
("the answer is (B)", "Answer: C", "the correct option is D", "I choose B", "B is the correct answer");
the last bold letter (**B**); a letter that opens the completion ("C. Because ...", "(B) since ..."),
unless the completion lists the options one per line; a letter that closes it ("... we are left with B)").

Limits: a lower-case letter counts only in parentheses ("the answer is (b)"), so English "a" is never
choice A; a statement that hedges ("A or B") reads its first letter; letters past J are not choices.
"""

from __future__ import annotations

import re

from seqdistill.checks.answers.base import Answer, CheckSpec, Example, NoOptions, Verdict
from seqdistill.checks.answers.text import last_boxed

# A letter as answers write it: B, (B), **B**, $B$, \text{B}, \textbf{(B)}; lower case only in parentheses.
_L = r"(?:\(([A-Ja-j])\)|([A-J]))"
_WRAPPED = rf"[*$\s]*(?:\\text(?:bf)?\{{\s*)?{_L}\}}?[*$]*(?![A-Za-z0-9])"
# Accepts B, (B), \text{B}, \text{(B)}, \textbf{B}, (\text{B}).
_LETTER_BOX_RE = re.compile(r"\s*\(?\s*(?:\\text(?:bf)?\{\s*)?\(?\s*([A-Ja-j])\s*\)?\s*\}?\s*\)?\s*\.?\s*")
# Words are matched in any case, letters only as written (so English "a" is never choice A).
_VERB = r"(?i:\s*(?:is|would\s+be|should\s+be|must\s+be|will\s+be|=))"
_STATEMENT_RE = re.compile(
    # the answer is / Answer: / the correct option is / my choice: / I choose / I'll go with
    rf"(?:(?i:\banswer){_VERB}?|(?i:\b(?:option|choice))(?:{_VERB}|:)|(?i:\b(?:choose|pick|select|go\s+with)))"
    rf"\s*:?\s*\**\s*:?\s*(?i:(?:option|choice)\s*)?{_WRAPPED}"
    # B is correct / (B) is the right answer
    rf"|(?<![A-Za-z]){_L}[*$]*\s+(?i:is\s+(?:the\s+)?(?:correct|right|best)\b)"
)
_BOLD_RE = re.compile(r"\*\*\s*\(?([A-J])\)?[.:)]?\s*\*\*")
_LEADING_RE = re.compile(r"\s*[*$]*(?:\(([A-J])\)|([A-J])(?:[.:)]|\s*$))")
_OPTION_LINE_RE = re.compile(r"^\s*[*$]*\(?[A-J][.:)]", re.MULTILINE)
_TRAILING_RE = re.compile(r"(?:^|[\s:(*$])\(?([A-J])(?:\)|\.|\b)[*$]*\s*\.?\s*$")


def extract_choice(text: str) -> str | None:
    """Multiple-choice letter A-J that ``text`` states as its answer, or None.

    >>> extract_choice("Option C looks tempting, but the answer is (b).")
    'B'
    >>> extract_choice("The answer is D, it can't be A or B.")
    'D'
    >>> extract_choice("It is a good question.") is None
    True
    """
    boxed = last_boxed(text)
    if boxed is not None:
        m = _LETTER_BOX_RE.fullmatch(boxed)
        return m[1].upper() if m else None
    statement = None
    for m in _STATEMENT_RE.finditer(text):
        statement = next(g for g in m.groups() if g).upper()
    if statement:
        return statement
    bolds = _BOLD_RE.findall(text)
    if bolds:
        return bolds[-1]
    m = _LEADING_RE.match(text)
    if m and len(_OPTION_LINE_RE.findall(text)) == 1:  # "A. Because ...", not a list of options "A. ...\nB. ..."
        return m[1] or m[2]
    m = _TRAILING_RE.search(text)
    return m[1] if m else None


def _extract(completion: str, options: NoOptions | None = None) -> Answer | None:
    letter = extract_choice(completion)
    return None if letter is None else Answer(letter)


def compare_choice(answer: Answer, reference: str, options: NoOptions | None = None) -> Verdict:
    """Same letter as the reference (written B, (B) or B.); unverifiable when the reference is not a letter."""
    m = re.fullmatch(r"\(?([A-Ja-j])\)?\.?", reference.strip())
    if m is None:
        return Verdict(None, f"reference {reference!r} is not a letter A-J", None)
    ref = m[1].upper()
    if answer.text == ref:
        return Verdict(True, f"answer {answer.text} == reference {ref}", answer.text)
    return Verdict(False, f"answer {answer.text} != reference {ref}", answer.text)


SPEC = CheckSpec(
    name="choice",
    description="the multiple-choice letter A-J the completion states as its answer (not the last letter "
    "mentioned), compared with the reference letter",
    extract=_extract,
    compare=compare_choice,
    example=Example("The answer is D, it can't be A or B.", "D", "correct"),
    no_answer="no choice letter in completion",
)
