"""The `code` check, registered here and run by `seqdistill.checks.code` (imported on first use).

The answer is the completion's last fenced code block; it is correct when it passes the tests held in
the reference. Programs are graded by tests, not compared with each other: `code` takes no part in
majority votes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from seqdistill.checks.answers.base import Answer, CheckSpec, Example, Verdict


class CodeOptions(BaseModel):
    """Options of the `code` check; `unsafe` comes from the config key `unsafe_code_check`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    unsafe: bool = Field(
        False,
        alias="unsafe_code_check",
        description="run teacher code without a sandbox where none is available (only for code you trust)",
    )

    @model_validator(mode="after")
    def _sandbox_or_refuse(self) -> CodeOptions:
        """Up front, before any sample: no working sandbox is one ConfigError with the install hint (unless unsafe)."""
        from seqdistill.checks.code import code_checker

        code_checker(self.unsafe)
        return self


def extract_code(completion: str, options: CodeOptions) -> Answer | None:
    from seqdistill.checks.code import last_code_block  # it starts subprocesses: imported on use

    code = last_code_block(completion)
    return None if code is None else Answer(code)


def compare_code(answer: Answer, reference: str, options: CodeOptions) -> Verdict:
    """Run the block with the reference's tests (see `seqdistill.checks.code.check_code`)."""
    from seqdistill.checks.code import check_code

    program = "```python\n" + answer.text + "```"  # check_code reads the block back out of a completion
    if options.unsafe:
        return check_code(program, reference, unsafe=True)
    return check_code(program, reference)


SPEC = CheckSpec(
    name="code",
    description="the last fenced code block, run with the tests held in the reference (Python); "
    "correct when they pass",
    extract=extract_code,
    compare=compare_code,
    example=Example("```python\ndef add(a, b):\n    return a + b\n```", "assert add(2, 3) == 5", "correct"),
    options=CodeOptions,
    no_answer="no fenced code block in the completion",
    votable=False,
)
