"""Small newcomer points of issue 14.8-9: `eval --limit N`, eval's progress bar says "eval (BACKEND)", filter's
progress bar shows a total ("6/6", not "6/?"). The bars are rendered for real (rich, on the captured stderr)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from seqdistill.cli import app
from seqdistill.io import count_rows
from tests.conftest import make_sample, read_jsonl, write_jsonl
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_generate_openai import MODEL, prompt_rows


@pytest.fixture(autouse=True)
def _bars_on(monkeypatch):
    monkeypatch.delenv("SEQDISTILL_NO_PROGRESS", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # the whole bar line on one line


def test_eval_limit_takes_the_first_prompts_and_the_bar_says_eval(tmp_path):
    prompts = write_jsonl(tmp_path / "heldout.jsonl", prompt_rows(0, 6))
    out = tmp_path / "eval.jsonl"
    with FakeOpenAIServer(models=[MODEL]) as server:
        args = ["eval", "--base-url", server.base_url, "--model", MODEL, "--prompts", str(prompts), "--check", "math",
                "--limit", "3", "--output", str(out)]  # fmt: skip
        result = CliRunner().invoke(app, args)
        asked = sorted(r["body"]["messages"][-1]["content"] for r in server.chat_requests())
    assert result.exit_code == 0, result.output
    assert asked == [f"What is {i} + {i + 3}?" for i in range(3)]
    assert sorted(r["prompt_id"] for r in read_jsonl(out)) == ["q0", "q1", "q2"]
    assert re.search(r"prompts\s+│ 3\b", result.stdout) and re.search(r"samples\s+│ 3\b", result.stdout)
    assert "eval (openai)" in result.stderr and "generate (" not in result.stderr


def test_filter_progress_shows_the_total(tmp_path):
    data = write_jsonl(tmp_path / "samples.jsonl", [make_sample(f"p{i}") for i in range(6)])
    with data.open("a") as f:
        f.write("\n  \n")  # blank lines are not rows
    assert count_rows(data) == 6
    result = CliRunner().invoke(app, ["filter", str(data), "--check", "numeric"])
    assert result.exit_code == 0, result.output
    bar = next(line for line in result.stderr.splitlines() if line.startswith("filter"))
    assert "6/6" in bar, result.stderr


def test_count_rows_of_parquet_and_of_what_has_no_cheap_count(tmp_path):
    import datasets

    path = tmp_path / "kept.parquet"
    datasets.Dataset.from_list([{"a": i} for i in range(5)]).to_parquet(str(path))
    assert count_rows(path) == 5
    assert count_rows(tmp_path) is None  # a dir (a saved dataset): no total, the bar counts
    assert count_rows("owner/hub-dataset") is None
