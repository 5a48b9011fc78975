"""Opt-in: a batch file written by `seqdistill generate --mode batch-file` runs through vLLM's own offline batch
runner (`python -m vllm.entrypoints.openai.run_batch`), and its output ingests (`--from-batch-output`) into
records that `filter` accepts.

Skipped unless SEQDISTILL_VLLM_PYTHON names a python that can import vllm (`make test-vllm` builds
.venv-vllm). One run of vLLM (~1-2 minutes on 2 CPU cores: the engine starts inside the runner).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill.cli import app
from seqdistill.records import Sample
from tests.conftest import read_jsonl, write_jsonl
from tests.integration.vllm_env import SKIP_REASON, VLLM_PYTHON
from tests.test_generate_openai import generate_args

REPO = Path(__file__).resolve().parents[2]
SERVED = "smollm2"
QUESTIONS = [(2, 3), (4, 4), (7, 1), (12, 5), (20, 22), (9, 6)]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(VLLM_PYTHON is None, reason=SKIP_REASON),
    pytest.mark.timeout(900),
]


def args(prompts: Path, output: Path, *extra: str) -> list[str]:
    """generate's arguments: greedy (so n=1: vLLM refuses n > 1 without sampling), the teacher shown the worked
    examples (so some answers are right, the same ones every run)."""
    return generate_args(
        "http://127.0.0.1:9/v1",  # nothing listens: batch-file and --from-batch-output send nothing
        prompts,
        output,
        1,
        *("--set", f"prompts.template={REPO / 'prompts/arithmetic/question.jinja'}"),
        *("--set", f"prompts.teacher_examples={REPO / 'prompts/arithmetic/worked_examples.jsonl'}"),
        *("--set", "sampling.max_tokens=48", "--set", "sampling.temperature=0"),
        *extra,
        model=SERVED,
    )


def run_batch(input_path: Path, output_path: Path, log: Path) -> None:
    from seqdistill.models import resolve_model

    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    cmd = [
        VLLM_PYTHON,
        *("-m", "vllm.entrypoints.openai.run_batch", "-i", str(input_path), "-o", str(output_path)),
        *("--model", resolve_model("bundled:smollm2"), "--served-model-name", SERVED),
        *("--dtype", "float32", "--max-model-len", "1024", "--enforce-eager"),
        *("--gpu-memory-utilization", "0.1"),  # on the CPU build: the share of RAM reserved for the KV cache
    ]
    with log.open("wb") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, timeout=800)
    if done.returncode != 0:
        pytest.fail(f"vllm run_batch exited {done.returncode}:\n" + "\n".join(log.read_text().splitlines()[-40:]))


def test_a_batch_file_runs_through_vllm_run_batch_and_its_output_ingests_into_filtered_records(tmp_path):
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": f"q{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)}
            for i, (a, b) in enumerate(QUESTIONS)
        ],
    )
    out = tmp_path / "samples.jsonl"
    runner = CliRunner()
    result = runner.invoke(app, args(prompts, out, "--mode", "batch-file"))
    assert result.exit_code == 0, result.output
    (batch_input,) = out.with_name("samples.batch").glob("requests-*.jsonl")
    lines = [json.loads(line) for line in batch_input.read_text().splitlines()]
    assert len(lines) == len(QUESTIONS) and all("n" not in line["body"] for line in lines)
    # one request vLLM must refuse (more new tokens than the model's context): its error line, as vLLM writes it
    lines[-1]["body"]["max_tokens"] = 100_000
    batch_input.write_text("".join(json.dumps(line) + "\n" for line in lines))

    vllm_out = tmp_path / "vllm-output.jsonl"
    run_batch(batch_input, vllm_out, tmp_path / "run_batch.log")

    result = runner.invoke(app, args(prompts, out, "--from-batch-output", str(vllm_out)))
    assert result.exit_code == 1, result.output  # the refused request is a failure, the run says so
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "1 sample failed (http_400: 1)" in error[0] and "Traceback" not in result.output
    (failure,) = read_jsonl(out.with_name("samples.failures.jsonl"))
    assert failure["prompt_id"] == f"q{len(QUESTIONS) - 1}" and failure["error"] == "http_400" and failure["detail"]
    rows = [Sample.model_validate(r) for r in read_jsonl(out)]
    assert sorted((s.prompt_id, s.sample_index) for s in rows) == [(f"q{i}", 0) for i in range(len(QUESTIONS) - 1)]
    assert all(s.teacher.model == SERVED and s.usage.prompt_tokens for s in rows)
    assert all("teacher_prompt" in s.meta for s in rows)  # the worked examples went to the teacher only

    before = out.read_bytes()
    runner.invoke(app, args(prompts, out, "--from-batch-output", str(vllm_out)))  # the same output again
    manifest = json.loads(out.with_name("samples.manifest.json").read_text())
    assert out.read_bytes() == before and manifest["already_present"] == len(rows)  # nothing written twice

    kept = tmp_path / "kept.jsonl"
    result = runner.invoke(app, ["filter", str(out), "--output", str(kept), "--check", "math"])
    assert result.exit_code == 0, result.output
    report = json.loads(kept.with_name("kept.report.json").read_text())
    funnel = {row["rule"]: row for row in report["funnel"]}
    assert funnel["malformed"]["dropped"] == 0  # every ingested record is well-formed
    assert report["kept"] >= 1 and len(read_jsonl(kept)) == report["kept"]
