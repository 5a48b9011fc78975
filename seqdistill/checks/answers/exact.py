"""The `exact` check: the completion (or its last ``\\boxed{}``) equals the reference as normalised text.

Limits: no answer extraction beyond the box ("The answer is Paris" is not "Paris"); LaTeX is compared
as written (``\\text{Paris}`` is not ``Paris``).
"""

from __future__ import annotations

from seqdistill.checks.answers.base import Answer, CheckSpec, Example, NoOptions, Verdict
from seqdistill.checks.answers.text import last_boxed, normalize_text


def extract_exact(completion: str, options: NoOptions | None = None) -> Answer | None:
    """The last box's content, or the whole completion, normalised; None when that is empty.

    >>> extract_exact(r"The capital is \\boxed{Paris}")
    Answer(text='paris', parts=(), source=None)
    """
    boxed = last_boxed(completion)
    answer = normalize_text(boxed if boxed is not None else completion)
    return Answer(answer) if answer else None


def compare_text(answer: Answer, reference: str, options: object = None) -> Verdict:
    """Normalised text equality (shared with `regex`); unverifiable when the reference normalises to nothing."""
    ref = normalize_text(reference)
    if not ref:
        return Verdict(None, "empty reference after normalisation", None)
    if answer.text == ref:
        return Verdict(True, f"answer {answer.text!r} == reference {ref!r}", answer.text)
    return Verdict(False, f"answer {answer.text!r} != reference {ref!r}", answer.text)


SPEC = CheckSpec(
    name="exact",
    description="the last `\\boxed{}` or else the whole completion, equal to the reference after normalisation "
    "(case, spaces, surrounding `$`, a final period)",
    extract=extract_exact,
    compare=compare_text,
    example=Example(r"The capital is \boxed{Paris}.", "paris", "correct"),
    no_answer="empty answer in completion",
)
