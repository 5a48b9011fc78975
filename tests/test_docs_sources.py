"""CLI help and docs agree with the code from one source (issue 14.8-9): every check of the registry in `--help`,
every value of an enum (Literal) config key in the generated config reference, `export --format` from its config
type, the documented worked-examples file read by the real loader, and accuracy rounded alike in figure and table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill.checks.answers.registry import REGISTRY
from seqdistill.cli import app
from seqdistill.config import (
    EvalConfig,
    ExportConfig,
    FilterConfig,
    GenerateConfig,
    InputFormatConfig,
    OnPolicyConfig,
    PromptsConfig,
    ScoreConfig,
    TrainConfig,
    choices,
    reference_markdown,
)
from seqdistill.prompts import load_prompts
from seqdistill.report import facts
from seqdistill.stages import report
from tests.conftest import write_jsonl

ROOT = Path(__file__).parent.parent


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.replace("│", " ").split())  # the help's box, and its wrapping, removed


@pytest.mark.parametrize("command", ["filter", "eval"])
def test_every_registered_check_is_in_the_help(command):
    text = help_text(command)
    assert " | ".join([*REGISTRY, "none"]) in text


def test_every_value_of_every_enum_key_is_in_the_config_reference():
    text = reference_markdown()
    classes = (GenerateConfig, PromptsConfig, FilterConfig, TrainConfig, OnPolicyConfig, InputFormatConfig,
               ExportConfig, EvalConfig, ScoreConfig)  # fmt: skip
    seen = 0
    for cls in classes:
        for name, field in cls.model_fields.items():
            if values := choices(field.annotation):
                listed = "One of: " + ", ".join(f"`{v}`" for v in values) + "."
                rows = [ln for ln in text.splitlines() if re.match(rf"\| `([a-z_]+\.)?{name}` \|", ln)]
                assert any(listed in row for row in rows), (cls.__name__, name)
                seen += 1
    assert seen >= 12  # http_client, shape, selection, reasoning, train_on, objective, prompt, format, ...
    assert "| `prompt` | `student` |" in text and "One of: `student`, `teacher`." in text


def test_export_format_help_comes_from_the_config_type():
    assert " | ".join(choices(ExportConfig.model_fields["format"].annotation)) in help_text("export")


def test_the_documented_worked_examples_file_is_what_the_loader_reads(tmp_path):
    doc = (ROOT / "docs" / "generate.md").read_text(encoding="utf-8")
    section = doc.split("## Worked examples for the teacher", 1)[1]
    block = section.split("```json\n", 1)[1].split("```", 1)[0]
    rows = [json.loads(line) for line in block.splitlines()]
    assert len(rows) == 2
    examples = tmp_path / "examples.jsonl"
    examples.write_text(block, encoding="utf-8")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "q", "question": "What is 1 + 1?", "answer": "2"}])
    (item,) = load_prompts(PromptsConfig(source=str(prompts), teacher_examples=str(examples)))
    assert item.messages == [{"role": "user", "content": "What is 1 + 1?"}]  # the student sees the bare prompt
    assert item.teacher_messages == [
        {"role": "user", "content": rows[0]["question"]},
        {"role": "assistant", "content": rows[0]["completion"]},
        {"role": "user", "content": rows[1]["question"]},
        {"role": "assistant", "content": rows[1]["completion"]},
        {"role": "user", "content": "What is 1 + 1?"},
    ]
    assert "prompts/arithmetic/worked_examples.jsonl" in section and (ROOT / "prompts/arithmetic").is_dir()


def test_accuracy_figure_labels_round_like_the_tables():
    evals = {
        "teacher": {"model": "t", "samples": 8, "accuracy": 0.625, "accuracy_ci": [0.3, 0.86]},
        "student_after": {"model": "s", "samples": 8, "accuracy": 0.375, "accuracy_ci": [0.14, 0.7]},
    }
    ax = report._figure(8, 4).subplots()
    report.draw_accuracy(ax, evals, list(evals))
    labels = [t.get_text() for t in ax.texts][:2]
    assert labels == ["62.5%", "37.5%"]
    assert labels == [facts.pct(r["accuracy"]) for r in evals.values()]  # the table cells' own function
