"""The `code` check: last fenced block + the prompt's tests, in the sandbox (escapes: tests/test_sandbox.py)."""

from __future__ import annotations

import pytest

from seqdistill.checks.answers import check
from seqdistill.checks.code import last_code_block
from tests.test_sandbox import requires_sandbox

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"


def block(code: str, lang: str = "python") -> str:
    return f"Here is my solution.\n```{lang}\n{code}\n```\nDone."


@requires_sandbox
@pytest.mark.parametrize(
    ("completion", "correct", "reason"),
    [
        (block("def add(a, b):\n    return a + b"), True, "tests passed"),
        (block("def add(a, b):\n    return a + b", lang=""), True, "tests passed"),  # a bare fence
        (block("def add(a, b):\n    return a - b"), False, "AssertionError"),
        (block("def add(a, b) return a + b"), False, "SyntaxError"),
        ("def add(a, b): return a + b", None, "no fenced code block"),
        (block("def add(a, b):\n    return 0") + "\n" + block("def add(a, b):\n    return a + b"), True, "passed"),
        # the sandbox's own loopback, where nothing listens (the host's: tests/test_sandbox.py)
        (block("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)"), False, "Connection refused"),
        (block("x = bytearray(8 * 1024**3)"), False, "MemoryError"),
    ],
)
def test_code_check(completion, correct, reason):
    verdict = check("code", completion, TESTS)
    assert verdict.correct is correct and reason in verdict.reason


@requires_sandbox
def test_an_infinite_loop_fails_within_the_time_limit():
    import time

    start = time.monotonic()
    verdict = check("code", block("while True:\n    pass"), "assert True")
    assert verdict.correct is False and time.monotonic() - start < 6


def test_last_code_block():
    assert last_code_block("```py\na = 1\n```\ntext\n```python\nb = 2\n```") == "b = 2\n"
    assert last_code_block("no code") is None


@requires_sandbox
def test_code_check_through_the_filter_in_a_worker(tmp_path):
    from seqdistill.config import FilterConfig
    from seqdistill.stages import filter as filter_stage
    from tests.conftest import make_sample, read_jsonl, write_jsonl

    rows = [
        make_sample("p1", 0, block("def add(a, b):\n    return a + b"), id="good", reference=TESTS),
        make_sample("p1", 1, block("def add(a, b):\n    return a * b"), id="bad", reference=TESTS),
    ]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    report = filter_stage.run(FilterConfig(input=str(src), output=str(tmp_path / "k.jsonl"), check="code", workers=1))
    assert [r["id"] for r in read_jsonl(tmp_path / "k.jsonl")] == ["good"]
    assert report["answer_check"] == {"name": "code", "correct": 1, "wrong": 1}
