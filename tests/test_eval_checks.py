"""eval scores like filter: every check of the registry with its options, in the CheckPool, with timeouts.

Against the loopback server (tests/fake_openai_server.py), which answers "What is A + B?" with
"Sample I: A + B = S. The answer is \\boxed{S}."
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from typer.testing import CliRunner

from seqdistill.checks.answers import REGISTRY
from seqdistill.checks.answers.exact import extract_exact
from seqdistill.cli import app
from seqdistill.config import load_stage
from seqdistill.errors import ConfigError
from seqdistill.stages import evaluate
from tests.conftest import SERVED_MODEL, write_jsonl

MODEL = SERVED_MODEL  # the `server` fixture (conftest) answers to it


@pytest.fixture
def prompts(tmp_path):
    rows = [{"id": f"q{i}", "question": f"What is {i} + {i + 3}?", "answer": str(2 * i + 3)} for i in range(4)]
    rows[3]["answer"] = "999"  # the server answers the true sum: this one is wrong
    return write_jsonl(tmp_path / "heldout.jsonl", rows)


def _args(server, prompts, out, *extra: str) -> list[str]:
    base = ["eval", "--base-url", server.base_url, "--model", MODEL, "--prompts", str(prompts), "--output", str(out)]
    return [*base, *extra]


def test_eval_check_regex_end_to_end(server, prompts, tmp_path):
    out = tmp_path / "eval.jsonl"
    args = _args(server, prompts, out, "--check", "regex", "--n", "2", "--set", r"check_pattern== (\d+)\.")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = evaluate.run(load_stage("eval", None, {}, [f"output={out}", *_sets(server, prompts)]))
    assert (summary["samples"], summary["correct"], summary["wrong"], summary["accuracy"]) == (8, 6, 2, 0.75)
    assert summary["majority_accuracy"] is None  # greedy: both samples of a prompt are the same answer


def _sets(server, prompts) -> list[str]:
    return [
        "backend=openai",
        f"base_url={server.base_url}",
        f"model={MODEL}",
        f"prompts.source={prompts}",
        "check=regex",
        r"check_pattern== (\d+)\.",
        "n=2",
    ]


def test_eval_regex_without_a_pattern_stops_before_sending_anything(server, prompts, tmp_path):
    result = CliRunner().invoke(app, _args(server, prompts, tmp_path / "eval.jsonl", "--check", "regex"))
    assert result.exit_code == 1
    assert "check 'regex' needs check_pattern" in result.output and "Traceback" not in result.output
    assert server.chat_requests() == []


def test_eval_with_an_unknown_check_lists_the_checks(server, prompts, tmp_path):
    result = CliRunner().invoke(app, _args(server, prompts, tmp_path / "eval.jsonl", "--check", "maths"))
    assert result.exit_code == 1
    names = "exact, math, numeric, choice, regex, code, json, none"
    assert f"unknown check 'maths'; choose one of: {names}" in result.output


def test_eval_needs_a_check(server, prompts, tmp_path):
    with pytest.raises(ConfigError, match=r"--check exact\|math\|numeric\|choice\|regex\|code\|json$"):
        evaluate.run(load_stage("eval", None, {"output": str(tmp_path / "e.jsonl")}, ["check=none"]))


def test_eval_checks_run_in_workers_with_the_timeout(server, prompts, tmp_path, monkeypatch):
    def slow(completion, options):
        if "1 + 4 = 5." in completion:  # the answer to q1 hangs its check
            time.sleep(60)
        return extract_exact(completion)

    monkeypatch.setitem(REGISTRY, "exact", dataclasses.replace(REGISTRY["exact"], extract=slow))
    sets = [
        "backend=openai",
        f"base_url={server.base_url}",
        f"model={MODEL}",
        f"prompts.source={prompts}",
        "check=exact",
        "workers=1",
        "check_timeout=0.5",
        f"output={tmp_path / 'eval.jsonl'}",
    ]
    start = time.monotonic()
    summary = evaluate.run(load_stage("eval", None, {}, sets))
    assert time.monotonic() - start < 30
    # q0 and q2 correct (the box holds the sum), q3 wrong (its reference is 999), q1 timed out: unverifiable
    assert [summary[k] for k in ("samples", "correct", "wrong", "unverifiable")] == [4, 2, 1, 1]
