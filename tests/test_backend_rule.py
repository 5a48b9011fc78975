"""One backend rule for every stage that talks to a model (issue 14.3): `--base-url` (or `base_url` in a config)
means the openai backend unless another is named; a model name that is neither a local path, a bundled name nor
a cached hub id, with no server, is one line saying how to point at a server, before any hub lookup."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from seqdistill.cli import app
from seqdistill.config import EvalConfig, GenerateConfig, OnPolicyConfig, load_stage
from tests.conftest import write_jsonl
from tests.test_generate_openai import MODEL, REPO, free_port, prompt_rows, samples
from tests.test_user_errors import assert_one_error

HINT = "--base-url http://HOST:PORT/v1"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_generate_with_a_base_url_and_no_backend_uses_the_server(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
    out = tmp_path / "s.jsonl"
    result = invoke("generate", "--model", MODEL, "--base-url", server.base_url, "--prompts", str(prompts),
                    "--output", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(server.chat_requests()) == 3
    assert {s.teacher.backend for s in samples(out)} == {"openai"}


def test_eval_and_generate_read_the_same_rule_from_a_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": "teacher", "base_url": "http://127.0.0.1:9/v1"}))
    assert load_stage("generate", str(path)).backend == "openai"
    assert load_stage("eval", str(path)).backend == "openai"
    assert load_stage("generate", str(path), {"backend": "vllm"}).backend == "vllm"  # a named backend wins
    assert GenerateConfig(base_url="http://h/v1", backend="transformers").backend == "transformers"
    assert EvalConfig().backend == "transformers"  # no URL given: unchanged default
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"generate": {"model": "t", "base_url": "http://h/v1"}, "eval": {"model": "s"}}))
    assert load_stage("generate", str(recipe)).backend == "openai"
    assert load_stage("eval", str(recipe)).backend == "transformers"


def test_the_on_policy_teacher_with_a_base_url_is_served():
    assert OnPolicyConfig(teacher_base_url="http://h/v1").teacher_backend == "openai"
    assert OnPolicyConfig(teacher_base_url="http://h/v1", teacher_backend="vllm").teacher_backend == "vllm"
    assert OnPolicyConfig().teacher_backend == "transformers"


@pytest.mark.parametrize("stage", ["generate", "eval"])
def test_a_served_name_without_a_base_url_says_how_to_reach_a_server(tmp_path, stage):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    out = tmp_path / "runs" / "new" / "out.jsonl"
    result = invoke(stage, "--model", "Qwen/Qwen3-8B", "--prompts", str(prompts), "--output", str(out))
    line = assert_one_error(result, "'Qwen/Qwen3-8B'", HINT, "local directory")
    assert "huggingface.co" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]  # nothing written


def test_a_missing_model_directory_is_named_as_such(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    result = invoke("eval", "--model", str(tmp_path / "runs" / "student"), "--prompts", str(prompts),
                    "--output", str(tmp_path / "e.jsonl"))  # fmt: skip
    assert_one_error(result, "no such directory", HINT)


def test_no_hub_lookup_even_when_the_hub_is_not_marked_offline(tmp_path):
    """HF_HUB_OFFLINE unset and the hub endpoint a closed local port: the user sees our hint, not the hub's error."""
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", SEQDISTILL_NO_PROGRESS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "seqdistill", "generate", "--model", "teacher", "--prompts", str(prompts),
         "--output", str(tmp_path / "s.jsonl")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and HINT in lines[0], proc.stderr
    assert "127.0.0.1" not in proc.stderr and "huggingface" not in proc.stderr.replace("Hugging Face cache", "")


def test_score_with_a_served_teacher_name_needs_a_local_tokenizer_before_any_lookup(tmp_path):
    from tests.test_score import _samples

    inp = _samples(tmp_path / "in.jsonl", 1)
    result = invoke("score", str(inp), "--model", "owner/served-teacher", "--base-url", "http://127.0.0.1:9/v1",
                    "--output", str(tmp_path / "o.jsonl"))  # fmt: skip
    assert_one_error(result, "cannot load the tokenizer of 'owner/served-teacher'", "not a local directory",
                     "teacher_tokenizer")  # fmt: skip
