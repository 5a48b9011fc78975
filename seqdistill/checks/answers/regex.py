"""The `regex` check: a user pattern extracts the answer, compared with the reference like `exact`.

The answer is the first capture group of the pattern's last match (the whole match when the pattern
has no group), normalised like `exact` (case, spaces, surrounding $, a final period).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from seqdistill.checks.answers.base import Answer, CheckSpec, Example
from seqdistill.checks.answers.exact import compare_text
from seqdistill.checks.answers.text import normalize_text


class RegexOptions(BaseModel):
    """Options of the `regex` check; `pattern` comes from the config key `check_pattern`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    pattern: str = Field(
        alias="check_pattern", description="a regular expression whose first group (or whole match) is the answer"
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        if not pattern:
            raise ValueError("must not be empty")
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"{pattern!r} is not a valid regular expression: {e}") from None
        return pattern


def extract_regex(completion: str, options: RegexOptions) -> Answer | None:
    """The normalised answer the pattern's last match captures; None when it matches nothing (or nothing but spaces).

    >>> extract_regex("ANSWER: x ... ANSWER: Paris", RegexOptions(pattern=r"ANSWER:\\s*(\\w+)"))
    Answer(text='paris', parts=(), source=None)
    """
    regex = re.compile(options.pattern)  # re caches compiled patterns
    matches = list(regex.finditer(completion))
    if not matches:
        return None
    last = matches[-1]
    raw = last[1] if regex.groups else last[0]
    answer = normalize_text(raw) if raw is not None else ""
    return Answer(answer) if answer else None


SPEC = CheckSpec(
    name="regex",
    description="the first group of the last match of `check_pattern` (the whole match without a group), "
    "equal to the reference after normalisation like `exact`",
    extract=extract_regex,
    compare=compare_text,
    example=Example("reasoning ... ANSWER: Paris", "paris", "correct", {"pattern": r"ANSWER:\s*(\w+)"}),
    options=RegexOptions,
    no_answer="check_pattern finds no answer in the completion",
)
