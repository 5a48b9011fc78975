"""`seqdistill generate --backend openai` end to end: the real `openai` client against a real local HTTP server.

Covers request batching (n choices in one request), resume by request key, API-key handling, the
one-line errors the user must act on, per-request failures retried on the next run, and Ctrl-C
(once: keep what is in flight; twice: abort) in a real subprocess.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill import stats
from seqdistill.cli import app
from seqdistill.records import Sample
from tests.conftest import SERVED_MODEL, read_jsonl, write_jsonl
from tests.fake_openai_server import FakeOpenAIServer, answer_text, reasoning_text

MODEL = SERVED_MODEL
KEY = "sk-test-0123456789abcdef"
REPO = Path(__file__).resolve().parents[1]


def prompt_rows(start: int, stop: int) -> list[dict]:
    return [
        {"id": f"q{i}", "question": f"What is {i} + {i + 3}?", "answer": str(2 * i + 3)} for i in range(start, stop)
    ]


def question_of(pid: str) -> str:
    i = int(pid[1:])
    return f"What is {i} + {i + 3}?"


def prompt_id_of(request: dict) -> str:
    """The prompt id a logged chat request was for (from its last user message)."""
    content = request["body"]["messages"][-1]["content"]
    return "q" + content.split()[2]


def generate_args(base_url: str, prompts: Path, output: Path, n: int, *extra: str, model: str = MODEL) -> list[str]:
    return [
        "generate",
        "--backend",
        "openai",
        "--model",
        model,
        "--base-url",
        base_url,
        "--prompts",
        str(prompts),
        "--output",
        str(output),
        "--n",
        str(n),
        *extra,
    ]


def cli(base_url: str, prompts: Path, output: Path, n: int = 1, *extra: str, model: str = MODEL):
    return CliRunner().invoke(app, generate_args(base_url, prompts, output, n, *extra, model=model))


def assert_exit(result, code: int) -> None:
    """Exit `code` through the CLI's own handling: no exception escaped, no traceback printed."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


def error_line(result) -> str:
    """The CLI's stderr must be exactly one line, the `error:` line; return it."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def samples(path: Path) -> list[Sample]:
    return [Sample.model_validate(row) for row in read_jsonl(path)]


def keys(rows: list[Sample]) -> Counter:
    return Counter((s.prompt_id, s.sample_index) for s in rows)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fake_server_speaks_the_openai_protocol(server):
    """The fake parses with the official client's types: what the tests below exercise is the real wire format."""
    import openai

    server.api_key = KEY
    server.reasoning_field = "reasoning_content"
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is 3 + 4?"}], n=2, max_tokens=100
    )
    assert [c.message.content for c in resp.choices] == [answer_text("What is 3 + 4?", i) for i in range(2)]
    assert resp.choices[1].message.content.endswith("The answer is \\boxed{7}.")
    assert resp.choices[0].message.model_extra["reasoning_content"] == reasoning_text("What is 3 + 4?", 0)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    with pytest.raises(openai.AuthenticationError) as info:
        openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()
    assert info.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    assert [r["headers"]["authorization"] for r in server.requests()][-2:] == ["Bearer wrong", f"Bearer {KEY}"]
    client.close()


# --- sampling, batching and records -------------------------------------------------------------------


@pytest.mark.parametrize("reasoning_field", [None, "reasoning_content", "reasoning"])
def test_n_samples_per_prompt_in_one_request(tmp_path, server, reasoning_field):
    server.reasoning_field = reasoning_field
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 4))
    output = tmp_path / "samples.jsonl"

    result = cli(server.base_url, prompts, output, 3, "--set", "sampling.temperature=0.9")

    assert_exit(result, 0)
    rows = samples(output)
    assert keys(rows) == Counter({(f"q{i}", j): 1 for i in range(4) for j in range(3)})
    assert len({s.id for s in rows}) == 12
    for s in rows:
        question = question_of(s.prompt_id)
        assert s.prompt[0].content == question
        assert s.reference == str(2 * int(s.prompt_id[1:]) + 3)
        assert s.completion[0].role == "assistant"
        # choice i of the response is sample i: the content carries the choice index
        assert s.text == answer_text(question, s.sample_index)
        expected_reasoning = reasoning_text(question, s.sample_index) if reasoning_field else None
        assert s.completion[0].reasoning_content == expected_reasoning
        assert s.finish_reason == "stop"
        assert s.usage.prompt_tokens == len(question.split())
        assert s.usage.model_extra["request_completion_tokens"] > 0  # one total for the n choices
        assert s.teacher.model == MODEL and s.teacher.backend == "openai"
        assert s.sampling["temperature"] == 0.9 and s.sampling["max_tokens"] == 512

    chat = server.chat_requests()
    assert len(chat) == 4  # one request per prompt, not one per sample
    assert sorted(prompt_id_of(r) for r in chat) == [f"q{i}" for i in range(4)]
    for r in chat:
        assert r["body"]["n"] == 3
        assert r["body"]["model"] == MODEL
        assert r["body"]["temperature"] == 0.9
        assert r["body"]["max_tokens"] == 512


def test_n1_records_completion_tokens(tmp_path, server):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 2))
    output = tmp_path / "samples.jsonl"

    assert_exit(cli(server.base_url, prompts, output, 1), 0)

    for s in samples(output):
        assert s.usage.completion_tokens == len(answer_text(question_of(s.prompt_id), 0).split())
    assert all("n" not in r["body"] or r["body"]["n"] == 1 for r in server.chat_requests())


# --- resume -------------------------------------------------------------------------------------------


def test_resume_sends_only_missing_samples(tmp_path, server):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 3))
    output = tmp_path / "samples.jsonl"

    assert_exit(cli(server.base_url, prompts, output, 2), 0)
    assert [r["body"]["n"] for r in server.chat_requests()] == [2, 2, 2]
    first = output.read_text()

    # the same command again: nothing to send, file untouched
    server.clear_log()
    assert_exit(cli(server.base_url, prompts, output, 2), 0)
    assert server.chat_requests() == []
    assert output.read_text() == first

    # n 2 -> 3: only sample index 2 of each prompt, one sample per request
    server.clear_log()
    assert_exit(cli(server.base_url, prompts, output, 3), 0)
    chat = server.chat_requests()
    assert sorted(prompt_id_of(r) for r in chat) == ["q0", "q1", "q2"]
    assert all(r["body"].get("n", 1) == 1 for r in chat)
    assert output.read_text().startswith(first)  # appended, earlier samples kept as they were
    rows = samples(output)
    assert keys(rows) == Counter({(f"q{i}", j): 1 for i in range(3) for j in range(3)})
    new = rows[6:]
    assert {s.sample_index for s in new} == {2}
    # a single-sample request returns choice 0, recorded as sample 2
    assert all(s.text == answer_text(question_of(s.prompt_id), 0) for s in new)

    # two more prompts: only they are requested
    write_jsonl(prompts, prompt_rows(0, 5))
    server.clear_log()
    assert_exit(cli(server.base_url, prompts, output, 3), 0)
    chat = server.chat_requests()
    assert sorted(prompt_id_of(r) for r in chat) == ["q3", "q4"]
    assert all(r["body"]["n"] == 3 for r in chat)
    assert keys(samples(output)) == Counter({(f"q{i}", j): 1 for i in range(5) for j in range(3)})


# --- API key ------------------------------------------------------------------------------------------


def test_api_key_from_env_is_sent_and_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", KEY)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 2))
    output = tmp_path / "samples.jsonl"
    with FakeOpenAIServer(models=[MODEL], api_key=KEY) as server:
        result = cli(server.base_url, prompts, output, 2, "--set", "api_key_env=MY_KEY")
        chat = server.chat_requests()

    assert_exit(result, 0)
    assert len(chat) == 2
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in chat)
    assert len(samples(output)) == 4
    assert KEY not in output.read_text()
    assert KEY not in result.output


def test_missing_api_key_env_is_one_line(tmp_path, server, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 2))

    result = cli(server.base_url, prompts, tmp_path / "samples.jsonl", 1, "--set", "api_key_env=NO_SUCH_KEY_VAR")

    assert_exit(result, 1)
    assert "NO_SUCH_KEY_VAR" in error_line(result)
    assert server.chat_requests() == []


def test_wrong_api_key_401_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-wrong-key-42")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 3))
    output = tmp_path / "samples.jsonl"
    with FakeOpenAIServer(models=[MODEL], api_key=KEY) as server:
        result = cli(server.base_url, prompts, output, 1, "--set", "api_key_env=MY_KEY", "--set", "max_retries=0")
        chat = server.chat_requests()

    assert_exit(result, 1)
    line = error_line(result)
    assert "401" in line and "MY_KEY" in line
    assert "sk-wrong-key-42" not in result.output
    assert chat and all(r["status"] == 401 for r in chat)
    assert not output.exists() or output.read_text() == ""


# --- errors the user must fix -------------------------------------------------------------------------


def test_unreachable_server_is_one_line(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 3))
    url = f"http://127.0.0.1:{free_port()}/v1"

    start = time.monotonic()
    result = cli(url, prompts, tmp_path / "samples.jsonl", 1, "--set", "max_retries=0")

    assert time.monotonic() - start < 10
    assert_exit(result, 1)
    line = error_line(result)
    assert "cannot reach" in line and url in line


def test_unknown_model_404_is_one_line(tmp_path, server):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 3))

    result = cli(
        server.base_url, prompts, tmp_path / "samples.jsonl", 1, "--set", "max_retries=0", model="no-such-model"
    )

    assert_exit(result, 1)
    line = error_line(result)
    assert "404" in line and "no-such-model" in line
    assert server.chat_requests()[0]["body"]["model"] == "no-such-model"


# --- per-request failures and truncation --------------------------------------------------------------


def test_failed_requests_are_counted_kept_and_retried_next_run(tmp_path, server):
    server.fail_first = 2
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 6))
    output = tmp_path / "samples.jsonl"

    result = cli(server.base_url, prompts, output, 2, "--set", "max_retries=0", "--concurrency", "1")

    assert_exit(result, 1)
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "2 requests failed" in error[0] and "http_500: 2" in error[0]
    chat = server.chat_requests()
    failed = {prompt_id_of(r) for r in chat if r["status"] == 500}
    assert len(chat) == 6 and len(failed) == 2
    rows = samples(output)
    assert len(rows) == 8  # the 4 prompts that were answered, 2 samples each
    assert {s.prompt_id for s in rows} == {f"q{i}" for i in range(6)} - failed

    server.clear_log()
    result = cli(server.base_url, prompts, output, 2, "--set", "max_retries=0")

    assert_exit(result, 0)
    assert sorted(prompt_id_of(r) for r in server.chat_requests()) == sorted(failed)
    assert keys(samples(output)) == Counter({(f"q{i}", j): 1 for i in range(6) for j in range(2)})


def test_malformed_answer_is_a_counted_failure_not_a_silent_gap(tmp_path, server):
    server.garbage_first = 1  # a 200 that is not a chat completion (an HTML page from a proxy)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 3))
    output = tmp_path / "samples.jsonl"

    result = cli(server.base_url, prompts, output, 1, "--set", "max_retries=0", "--concurrency", "1")

    assert_exit(result, 1)
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "1 requests failed" in error[0], result.stderr
    bad = prompt_id_of(server.chat_requests()[0])
    assert {s.prompt_id for s in samples(output)} == {"q0", "q1", "q2"} - {bad}

    server.clear_log()
    assert_exit(cli(server.base_url, prompts, output, 1), 0)
    assert [prompt_id_of(r) for r in server.chat_requests()] == [bad]
    assert keys(samples(output)) == Counter({(f"q{i}", 0): 1 for i in range(3)})


def test_fewer_choices_than_n_is_a_failure_and_the_rest_is_asked_again(tmp_path, server):
    server.max_n = 1  # ignores n
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 2))
    output = tmp_path / "samples.jsonl"

    result = cli(server.base_url, prompts, output, 2)

    assert_exit(result, 1)
    assert "short_response: 2" in result.stderr
    assert keys(samples(output)) == Counter({("q0", 0): 1, ("q1", 0): 1})
    server.max_n = None
    server.clear_log()
    assert_exit(cli(server.base_url, prompts, output, 2), 0)
    assert all(r["body"].get("n", 1) == 1 for r in server.chat_requests()) and len(server.chat_requests()) == 2
    assert keys(samples(output)) == Counter({(f"q{i}", j): 1 for i in range(2) for j in range(2)})


def test_client_retries_5xx_within_a_run(tmp_path, server):
    server.fail_first = 1
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 1))
    output = tmp_path / "samples.jsonl"

    result = cli(server.base_url, prompts, output, 1, "--set", "max_retries=1")

    assert_exit(result, 0)
    assert [r["status"] for r in server.chat_requests()] == [500, 200]
    assert len(samples(output)) == 1


def test_length_finish_reason_is_recorded_not_retried(tmp_path, server):
    server.long_answers = True
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 3))
    output = tmp_path / "samples.jsonl"

    result = cli(server.base_url, prompts, output, 2, "--set", "sampling.max_tokens=8")

    assert_exit(result, 0)
    rows = samples(output)
    assert len(rows) == 6
    assert all(s.finish_reason == "length" for s in rows)
    assert all(len(s.text.split()) == 8 for s in rows)
    assert len(server.chat_requests()) == 3
    assert all(r["body"]["max_tokens"] == 8 for r in server.chat_requests())

    server.clear_log()
    assert_exit(cli(server.base_url, prompts, output, 2, "--set", "sampling.max_tokens=8"), 0)
    assert server.chat_requests() == []  # truncated samples are results, not failures


# --- Ctrl-C in a real process -------------------------------------------------------------------------


def spawn(base_url: str, prompts: Path, output: Path, n: int, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SEQDISTILL_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", SEQDISTILL_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    args = [sys.executable, "-m", "seqdistill", *generate_args(base_url, prompts, output, n, *extra)]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def line_count(path: Path) -> int:
    return path.read_text(encoding="utf-8").count("\n") if path.exists() else 0


def pending(server: FakeOpenAIServer) -> int:
    """Chat requests the server has received and not yet answered."""
    return sum(r["status"] is None for r in server.chat_requests())


def wait_for(condition, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"generate exited early ({proc.returncode}):\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"timed out waiting; stdout:\n{out}\nstderr:\n{err}")
        time.sleep(0.01)


def test_ctrl_c_once_keeps_in_flight_answers_and_resumes(tmp_path, server):
    server.delay = 0.3
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 40))
    output = tmp_path / "samples.jsonl"
    grace = 10.0
    extra = ("--concurrency", "4", "--set", f"shutdown_timeout={grace}")

    proc = spawn(server.base_url, prompts, output, 2, *extra)
    # a few answers written, and requests waiting on the server's delay: the signal lands mid-run
    wait_for(lambda: line_count(output) >= 4 and pending(server) >= 2, 30, proc)
    sigint_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=grace + 5)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("generate did not exit after one Ctrl-C")
    exited_after = time.monotonic() - sigint_at

    assert proc.returncode == 130, stderr
    assert exited_after < grace
    assert "Traceback" not in stderr
    assert "run the same command to resume" in stderr
    first_run = server.chat_requests()
    in_flight = [r for r in first_run if r["received"] < sigint_at and not (r["answered"] or 0) < sigint_at]
    assert in_flight, "the signal landed with no request in flight: the test proves nothing"
    assert all(r["answered"] for r in in_flight), "requests in flight were abandoned, not awaited"
    # no new requests once the signal was handled: at most the few that were being sent as it arrived
    assert sum(r["received"] >= sigint_at for r in first_run) <= 4 - len(in_flight)
    answered = {prompt_id_of(r) for r in first_run if r["answered"]}
    rows = samples(output)
    written = {s.prompt_id for s in rows}
    assert written == answered  # every answer the server delivered was kept, in flight ones included
    assert {prompt_id_of(r) for r in in_flight} <= written
    assert keys(rows) == Counter({(pid, j): 1 for pid in written for j in range(2)})
    assert len(written) < 40, "the run finished before Ctrl-C: nothing was interrupted"

    server.delay = 0.0
    proc = spawn(server.base_url, prompts, output, 2, *extra)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 0, stderr
    assert keys(samples(output)) == Counter({(f"q{i}", j): 1 for i in range(40) for j in range(2)})
    second_run = server.chat_requests()[len(first_run) :]
    assert not {prompt_id_of(r) for r in second_run} & written  # nothing written before was asked again
    assert Counter(prompt_id_of(r) for r in server.chat_requests()) == Counter({f"q{i}": 1 for i in range(40)})


def test_ctrl_c_twice_aborts_at_once_leaving_whole_lines(tmp_path, server):
    server.delay = 0.2
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 40))
    output = tmp_path / "samples.jsonl"
    extra = ("--concurrency", "4", "--set", "shutdown_timeout=30")

    proc = spawn(server.base_url, prompts, output, 1, *extra)
    wait_for(lambda: line_count(output) >= 3, 30, proc)
    server.delay = 20.0  # requests from now on hang: only an abort ends the run quickly
    slow_from = time.monotonic()
    wait_for(lambda: sum(r["received"] > slow_from for r in server.chat_requests()) >= 2, 20, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    second_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("generate did not abort on a second Ctrl-C")

    assert proc.returncode == 130, stderr
    assert time.monotonic() - second_at < 8
    assert "Traceback" not in stderr
    text = output.read_text(encoding="utf-8")
    assert text.endswith("\n")
    rows = samples(output)  # every line is a complete, valid record
    assert len(rows) == len({s.id for s in rows}) and 3 <= len(rows) < 40

    server.delay = 0.0
    proc = spawn(server.base_url, prompts, output, 1, *extra)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 0, stderr
    assert keys(samples(output)) == Counter({(f"q{i}", 0): 1 for i in range(40)})


# --- eval against a served model ----------------------------------------------------------------------


def test_eval_against_a_server_scores_with_the_checker(tmp_path, server):
    from seqdistill.config import load_stage
    from seqdistill.stages import evaluate

    rows = prompt_rows(0, 4)
    rows[3]["answer"] = "999"  # the server answers the true sum: this one is wrong
    prompts = write_jsonl(tmp_path / "heldout.jsonl", rows)
    out = tmp_path / "eval.jsonl"
    flags = {
        "backend": "openai",
        "base_url": server.base_url,
        "model": MODEL,
        "prompts.source": str(prompts),
        "check": "math",
        "n": 2,
        "output": str(out),
    }
    summary = evaluate.run(load_stage("eval", None, flags))
    assert (summary["samples"], summary["correct"], summary["wrong"], summary["accuracy"]) == (8, 6, 2, 0.75)
    assert summary["majority_accuracy"] is None  # greedy: both samples give the same answer, the vote adds nothing
    assert summary["per_prompt"] == {"q0": [2, 2], "q1": [2, 2], "q2": [2, 2], "q3": [0, 2]}
    assert summary["ci_method"] == "bootstrap-prompts"  # n = 2: resample the 4 prompts, not the 8 samples
    assert len(read_jsonl(out)) == 8
    assert all(r["body"]["temperature"] == 0 for r in server.chat_requests())  # eval is greedy by default
    server.clear_log()
    args = [
        "eval",
        "--base-url",
        server.base_url,
        "--model",
        MODEL,
        "--prompts",
        str(prompts),
        "--check",
        "math",
        "--n",
        "2",
        "--output",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert_exit(result, 0)
    assert server.chat_requests() == []  # already evaluated: resumed, nothing re-sent
    assert "0.75" in result.stdout


def test_fake_server_is_quiet_when_a_client_resets_the_connection(capfd):
    """A client that closes with an answer unread sends a reset: the server's thread must not print a traceback."""
    import json
    import struct

    with FakeOpenAIServer(models=[MODEL]) as server:
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "What is 1 + 2?"}]}).encode()
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(head.encode() + body)
        deadline = time.monotonic() + 10
        while not (server.chat_requests() and server.chat_requests()[0]["answered"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        client.close()
        time.sleep(0.3)  # the server's thread reads the reset while waiting for the next request
    assert "Traceback" not in capfd.readouterr().err


def test_eval_reports_a_wilson_interval_with_one_sample_per_prompt(tmp_path, server):
    rows = prompt_rows(0, 20)
    for row in rows[13:]:
        row["answer"] = "-1"  # the server answers the true sum: 7 of the 20 are wrong
    prompts = write_jsonl(tmp_path / "heldout.jsonl", rows)
    args = ["eval", "--base-url", server.base_url, "--model", MODEL, "--prompts", str(prompts), "--check", "math",
            "--output", str(tmp_path / "eval.jsonl")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert_exit(result, 0)
    low, high = stats.wilson_interval(13, 20)
    assert re.search(rf"accuracy_ci +│ \[{low:.4g}, {high:.4g}\]", result.stdout), result.stdout
    assert re.search(r"ci_method +│ wilson", result.stdout)
    assert re.search(r"majority_accuracy +│ None", result.stdout)  # one sample per prompt: the vote is the answer


def test_eval_majority_is_kept_when_sampling_several(tmp_path, server):
    from seqdistill.config import load_stage
    from seqdistill.stages import evaluate

    rows = prompt_rows(0, 4)
    rows[3]["answer"] = "999"
    prompts = write_jsonl(tmp_path / "heldout.jsonl", rows)
    flags = {"backend": "openai", "base_url": server.base_url, "model": MODEL, "check": "math", "n": 3,
             "prompts.source": str(prompts), "output": str(tmp_path / "e.jsonl")}  # fmt: skip
    summary = evaluate.run(load_stage("eval", None, flags, ["sampling.temperature=0.7"]))
    assert summary["majority_accuracy"] == 0.75
    low, high = summary["accuracy_ci"]
    assert low < summary["accuracy"] == 0.75 < high <= 1.0 and summary["ci_method"] == "bootstrap-prompts"
