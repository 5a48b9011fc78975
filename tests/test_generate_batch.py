"""`seqdistill generate --mode batch | batch-file` and `--from-batch-output`, end to end over loopback HTTP.

The server (tests/fake_batch_server.py) implements the files and batches endpoints as OpenAI's API
reference describes them, and counts what was submitted: exactly-once is checked on the server's side,
including after a real `seqdistill generate` process is SIGKILLed right after each step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill.cli import app
from tests.conftest import read_jsonl, write_jsonl
from tests.fake_batch_server import FakeBatchServer
from tests.fake_openai_server import FakeOpenAIServer, Malformed
from tests.test_generate_openai import (
    MODEL,
    REPO,
    assert_exit,
    generate_args,
    keys,
    prompt_rows,
    samples,
)

FAST = (
    *("--set", "batch_poll_interval=0.02", "--set", "batch_poll_max=0.05"),
    *("--set", "backoff_base=0.01", "--set", "backoff_max=0.02"),
)


@pytest.fixture(autouse=True)
def _no_kill_hook(monkeypatch):  # conftest's _no_ambient_key clears the API key and debug switch
    monkeypatch.delenv("SEQDISTILL_TEST_KILL_AT", raising=False)


@pytest.fixture
def server():
    with FakeBatchServer(models=[MODEL]) as s:
        yield s


def batch_args(base_url: str, prompts: Path, output: Path, n: int = 1, *extra: str) -> list[str]:
    return generate_args(base_url, prompts, output, n, "--mode", "batch", *FAST, *extra)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def complete(output: Path, count: int, n: int = 1) -> None:
    """Every (prompt, index) of prompts q0..q{count-1} is in the output exactly once."""
    assert keys(samples(output)) == Counter({(f"q{i}", j): 1 for i in range(count) for j in range(n)})


def state(output: Path) -> dict:
    return json.loads((output.with_name(output.stem + ".batch") / "state.json").read_text())


def manifest(output: Path) -> dict:
    return json.loads(output.with_name(output.stem + ".manifest.json").read_text())


def failures(output: Path) -> list[dict]:
    path = output.with_name(output.stem + ".failures.jsonl")
    return read_jsonl(path) if path.exists() else []


def error_line(result) -> str:
    """The one `error:` line, last on stderr (batch runs log their steps before it); return it."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


def question_of_custom_id(server: FakeBatchServer, custom_id: str) -> str:
    for f in server.uploads():
        for raw in f["data"].splitlines():
            line = json.loads(raw)
            if line["custom_id"] == custom_id:
                return line["body"]["messages"][-1]["content"]
    raise KeyError(custom_id)


# --- the flow ---------------------------------------------------------------------------------------------


def test_a_batch_run_writes_the_records_a_live_run_writes(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 6))
    live_out, batch_out = tmp_path / "live.jsonl", tmp_path / "batch.jsonl"
    with FakeOpenAIServer(models=[MODEL]) as live:
        assert_exit(run(*generate_args(live.base_url, prompts, live_out, 2)), 0)
        live_bodies = sorted((r["body"] for r in live.chat_requests()), key=json.dumps)

    result = run(*batch_args(server.base_url, prompts, batch_out, 2))

    assert_exit(result, 0)
    by_id = lambda path: sorted(read_jsonl(path), key=lambda r: r["id"])  # noqa: E731
    assert by_id(batch_out) == by_id(live_out)  # same ids, texts, usage, teacher, sampling
    (upload,) = server.uploads()
    lines = [json.loads(line) for line in upload["data"].splitlines()]
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/chat/completions")}
    assert sorted((line["body"] for line in lines), key=json.dumps) == live_bodies
    (batch,) = server.created_batches()
    assert batch["endpoint"] == "/v1/chat/completions" and batch["completion_window"] == "24h"
    assert batch["status"] == "completed" and set(server.submitted_custom_ids().values()) == {1}
    assert all(e["collected"] for e in state(batch_out)["batches"])
    assert sorted(p.name for p in batch_out.with_name("batch.batch").iterdir()) == ["state.json"]  # files removed


def test_input_files_are_split_at_the_request_and_byte_limits(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 5))
    out = tmp_path / "s.jsonl"
    assert_exit(run(*batch_args(server.base_url, prompts, out, 1, "--set", "batch_max_requests=2")), 0)
    assert [len(f["data"].splitlines()) for f in server.uploads()] == [2, 2, 1]
    complete(out, 5)

    line_bytes = max(len(line) + 1 for f in server.uploads() for line in f["data"].splitlines())
    out2 = tmp_path / "s2.jsonl"
    limit = ("--set", f"batch_max_bytes={line_bytes * 2 + 10}")
    assert_exit(run(*batch_args(server.base_url, prompts, out2, 1, *limit)), 0)
    new = server.uploads()[3:]
    assert [len(f["data"].splitlines()) for f in new] == [2, 2, 1] and all(
        f["bytes"] <= line_bytes * 2 + 10 for f in new
    )
    complete(out2, 5)


def test_states_are_followed_and_polls_back_off_while_nothing_changes(tmp_path, server):
    server.steps_per_state = 4  # each state lasts 4 retrieves
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    out = tmp_path / "s.jsonl"
    timing = ("--set", "batch_poll_interval=0.05", "--set", "batch_poll_max=0.2")
    result = run(*generate_args(server.base_url, prompts, out, 1, "--mode", "batch", *timing))
    assert_exit(result, 0)
    complete(out, 2)
    (batch,) = server.created_batches()
    polls = [
        r["received"] for r in server.requests() if r["method"] == "GET" and r["path"] == f"/v1/batches/{batch['id']}"
    ]
    assert len(polls) == 12  # validating, in_progress, finalizing: 4 retrieves each
    gaps = [b - a for a, b in zip(polls, polls[1:], strict=False)]
    assert max(gaps) >= 0.1  # grew from 0.05 while the state stood still (×1.5 per unchanged poll)
    assert max(gaps) < 0.2 + 0.5  # and never past batch_poll_max (plus a loaded machine's slack)


def test_lost_answers_to_an_upload_and_a_creation_do_not_submit_twice(tmp_path, server):
    server.lose_upload_answer = server.lose_create_answer = 1  # done at the server, the answer never arrives
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
    out = tmp_path / "s.jsonl"
    assert_exit(run(*batch_args(server.base_url, prompts, out)), 0)
    assert len(server.uploads()) == 1 and len(server.created_batches()) == 1
    complete(out, 3)


# --- exactly once across kill -9 ----------------------------------------------------------------------------


def spawn(base_url: str, prompts: Path, output: Path, *extra: str, kill_at: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SEQDISTILL_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", SEQDISTILL_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    if kill_at:
        env["SEQDISTILL_TEST_KILL_AT"] = kill_at
    args = [sys.executable, "-m", "seqdistill", *batch_args(base_url, prompts, output, 2, *extra)]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("step", ["before-upload", "after-upload", "after-create", "polling", "download", "ingest"])
def test_kill_9_after_each_step_then_rerun_submits_nothing_twice(tmp_path, server, step):
    """A real generate process SIGKILLs itself right after `step`; the rerun re-attaches and finishes."""
    server.long_answers = True  # an output file of several download chunks (64 KiB): a kill mid-download
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 24))
    out = tmp_path / "s.jsonl"

    proc = spawn(server.base_url, prompts, out, kill_at=step)
    _, stderr = proc.communicate(timeout=120)

    assert proc.returncode == -signal.SIGKILL, stderr
    batches = server.created_batches()
    assert len(batches) == (0 if step in ("before-upload", "after-upload") else 1)
    if step == "download":
        part = next(out.with_name("s.batch").glob("output-*.part"))
        output_file = server.files[server.created_batches()[0]["output_file_id"]]
        assert 0 < part.stat().st_size < output_file["bytes"]  # half-way through
    if step == "ingest":
        assert 0 < len(samples(out)) < 48

    result = run(*batch_args(server.base_url, prompts, out, 2))

    assert_exit(result, 0)
    complete(out, 24, 2)
    assert len(server.uploads()) == 1 and len(server.created_batches()) == 1  # re-attached, nothing made twice
    submitted = server.submitted_custom_ids()
    assert len(submitted) == 24 and set(submitted.values()) == {1}
    (batch,) = server.created_batches()
    downloads = server.content_downloads(batch["output_file_id"])
    assert downloads == (2 if step == "download" else 1)  # a cut download is fetched again; a whole one is not
    assert all(e["collected"] for e in state(out)["batches"])


def test_ctrl_c_while_waiting_leaves_the_batch_running_and_the_rerun_collects_it(tmp_path, server):
    server.hold = True  # a slow batch
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
    out = tmp_path / "s.jsonl"
    proc = spawn(server.base_url, prompts, out)
    deadline = time.monotonic() + 60
    while not any(r["path"].startswith("/v1/batches/") for r in server.requests()):  # created and polled
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 130, stderr
    assert "go on at the provider" in stderr and "Traceback" not in stderr
    assert [e["status"] for e in state(out)["batches"]] == ["validating"]
    server.hold = False
    assert_exit(run(*batch_args(server.base_url, prompts, out, 2)), 0)
    complete(out, 3, 2)
    assert len(server.created_batches()) == 1


# --- answers that failed, batches that did not finish -------------------------------------------------------


def test_expired_requests_are_resubmitted_once_the_batch_has_ended(tmp_path, server):
    server.fates = ["expired"]
    server.expire_answered = 2
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 5))
    out = tmp_path / "s.jsonl"

    assert_exit(run(*batch_args(server.base_url, prompts, out)), 0)

    complete(out, 5)
    first, second = server.created_batches()
    assert first["status"] == "expired" and second["status"] == "completed"
    resubmitted = {
        json.loads(line)["custom_id"] for line in server.files[second["input_file_id"]]["data"].splitlines()
    }
    expired = {json.loads(line)["custom_id"] for line in server.files[first["error_file_id"]]["data"].splitlines()}
    assert resubmitted == expired and len(expired) == 3
    log = server.requests()
    error_read = next(i for i, r in enumerate(log) if r["path"] == f"/v1/files/{first['error_file_id']}/content")
    second_create = [i for i, r in enumerate(log) if r["method"] == "POST" and r["path"] == "/v1/batches"][1]
    assert error_read < second_create  # resubmitted only after the first batch ended and was read


def test_error_lines_fail_their_requests_and_only_retryable_ones_go_again(tmp_path, server):
    server.error_status = {"What is 1 + 4?": 500, "What is 2 + 5?": 400}
    server.error_times = 1
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 4))
    out = tmp_path / "s.jsonl"

    result = run(*batch_args(server.base_url, prompts, out, 2))

    assert_exit(result, 1)
    line = error_line(result)
    assert "2 samples failed (http_400: 2)" in line and "retry only the failed ones" in line
    assert {s.prompt_id for s in samples(out)} == {"q0", "q1", "q3"}  # q1's 500 went into a second batch
    assert len(server.created_batches()) == 2
    (row,) = failures(out)
    assert row["prompt_id"] == "q2" and row["error"] == "http_400" and row["sample_indices"] == [0, 1]

    assert_exit(run(*batch_args(server.base_url, prompts, out, 2)), 0)  # the error was once only
    complete(out, 4, 2)
    third = server.created_batches()[2]
    assert len(server.files[third["input_file_id"]]["data"].splitlines()) == 1 and failures(out) == []


def test_a_malformed_answer_in_an_output_line_is_validated_and_asked_again(tmp_path, server):
    server.malformed["What is 1 + 4?"] = Malformed(lambda r: {**r, "choices": []}, times=1)
    server.malformed["What is 2 + 5?"] = Malformed(
        lambda r: {**r, "choices": [{**r["choices"][0], "message": {"role": "assistant", "content": "\ud800"}}]},
        times=1,
    )
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
    out = tmp_path / "s.jsonl"
    assert_exit(run(*batch_args(server.base_url, prompts, out)), 0)
    complete(out, 3)
    assert len(server.created_batches()) == 2
    assert sorted(server.submitted_custom_ids().values()) == [1, 2, 2]


def test_a_failed_batch_is_one_error_line_and_the_next_run_submits_again(tmp_path, server):
    server.fates = ["failed"]
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
    out = tmp_path / "s.jsonl"

    result = run(*batch_args(server.base_url, prompts, out))

    assert_exit(result, 1)
    assert "3 samples failed (batch_failed: 3)" in error_line(result)
    assert {r["error"] for r in failures(out)} == {"batch_failed"}
    assert "token_limit_exceeded" in failures(out)[0]["detail"]
    assert len(server.created_batches()) == 1  # not resubmitted within the run
    assert_exit(run(*batch_args(server.base_url, prompts, out)), 0)
    complete(out, 3)
    assert failures(out) == []


def test_submit_without_waiting_then_cancel_then_resubmit_the_rest(tmp_path, server):
    server.hold = True
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 5))
    out = tmp_path / "s.jsonl"
    result = run(*batch_args(server.base_url, prompts, out, 1, "--set", "batch_wait=false"))
    assert_exit(result, 0)
    assert not out.exists() or samples(out) == []
    assert [e["status"] for e in state(out)["batches"]] == ["validating"]

    server.cancel_answered = 2
    result = run(*batch_args(server.base_url, prompts, out, 1, "--cancel"))
    assert_exit(result, 0)
    (batch,) = server.created_batches()
    assert batch["status"] == "cancelled"
    assert len(samples(out)) == 2 and {r["error"] for r in failures(out)} == {"cancelled"}
    assert all(e["collected"] for e in state(out)["batches"])

    server.hold = False
    assert_exit(run(*batch_args(server.base_url, prompts, out)), 0)
    complete(out, 5)
    second = server.created_batches()[1]
    assert len(server.files[second["input_file_id"]]["data"].splitlines()) == 3


def test_a_lost_input_file_is_fetched_back_and_another_url_is_refused_while_batches_are_open(tmp_path, server):
    server.hold = True
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
    out = tmp_path / "s.jsonl"
    assert_exit(run(*batch_args(server.base_url, prompts, out, 1, "--set", "batch_wait=false")), 0)
    (out.with_name("s.batch") / "input-0001.jsonl").unlink()

    with FakeBatchServer(models=[MODEL]) as other:
        result = run(*batch_args(other.base_url, prompts, out))
    assert_exit(result, 1)
    assert "has 1 open batches at" in error_line(result) and other.created_batches() == []

    server.hold = False
    assert_exit(run(*batch_args(server.base_url, prompts, out)), 0)
    complete(out, 3)
    (upload,) = server.uploads()
    assert server.content_downloads(upload["id"]) == 1 and len(server.created_batches()) == 1


def test_the_status_line_says_batches_requests_elapsed_and_next_poll(tmp_path, server):
    from types import SimpleNamespace

    from seqdistill.config import load_stage
    from seqdistill.stages import batch, generate

    server.hold = True
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 5))
    out = tmp_path / "s.jsonl"
    assert_exit(run(*batch_args(server.base_url, prompts, out, 1, "--set", "batch_wait=false")), 0)
    flags = {"mode": "batch", "model": MODEL, "base_url": server.base_url, "prompts.source": str(prompts)}
    cfg = load_stage("generate", None, {**flags, "output": str(out)})
    prompt_items, ids, done, _ = generate.pending_requests(cfg)
    state_run = batch._Run(cfg, prompt_items, ids, done)
    state_run.state.batches[0].counts = {"total": 5, "completed": 2, "failed": 1}
    state_run.sink = SimpleNamespace(start=time.monotonic() - 65)
    line = state_run._status_line(12.4)
    assert line == "batches 1 open of 1 · requests 3/5 done · 1m05s elapsed · next poll in 12s"


# --- budgets, cost, dry run ---------------------------------------------------------------------------------


def test_budgets_bound_what_is_submitted_and_cost_is_at_the_batch_price(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 5))
    out = tmp_path / "s.jsonl"
    assert_exit(run(*batch_args(server.base_url, prompts, out, 1, "--max-requests", "2")), 0)
    assert len(samples(out)) == 2 and manifest(out)["budget_reached"] == "max_requests"

    out2 = tmp_path / "s2.jsonl"
    prices = ("--set", "price_input_per_m=0", "--set", "price_output_per_m=1000000", "--set", "sampling.max_tokens=20")
    # worst case per request: 20 tokens × $1 × 0.5 = $10: a $25 budget submits 2 requests
    result = run(*batch_args(server.base_url, prompts, out2, 1, "--max-cost", "25", *prices))
    assert_exit(result, 0)
    m = manifest(out2)
    assert len(samples(out2)) == 2 and m["budget_reached"] == "max_cost"
    assert m["cost"] == pytest.approx(m["completion_tokens"] * 1.0 * 0.5)

    result = run(*batch_args(server.base_url, prompts, out2, 1, *prices, "--set", "batch_price_factor=1"))
    assert_exit(result, 0)
    complete(out2, 5)
    assert manifest(out2)["cost"] == pytest.approx(manifest(out2)["completion_tokens"] * 1.0)


def test_a_budget_stops_new_batches_once_and_a_finished_output_needs_no_key(tmp_path, server, monkeypatch):
    server.fates = ["expired"]  # a second round is due, and the budget is already spent
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 4))
    out = tmp_path / "s.jsonl"
    result = run(*batch_args(server.base_url, prompts, out, 1, "--max-requests", "4"))
    assert_exit(result, 1)
    assert "4 samples failed (expired: 4)" in error_line(result)
    assert len(server.created_batches()) == 1 and samples(out) == []
    assert manifest(out)["budget_reached"] == "max_requests"
    assert result.stderr.count("budget max_requests") == 1  # said once, not at every poll

    assert_exit(run(*batch_args(server.base_url, prompts, out)), 0)
    complete(out, 4)
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    before = len(server.requests())
    assert_exit(run(*batch_args(server.base_url, prompts, out, 1, "--set", "api_key_env=NO_SUCH_KEY")), 0)
    assert len(server.requests()) == before  # nothing missing, nothing open: no key asked, nothing sent


def test_dry_run_in_batch_mode_pilots_live_and_projects_at_the_batch_price(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 20))
    prices = ("--set", "price_input_per_m=1000", "--set", "price_output_per_m=2000", "--set", "pilot_prompts=3")
    from seqdistill.config import load_stage
    from seqdistill.stages import generate

    def projection(output: Path, mode: str) -> dict:
        args = batch_args(server.base_url, prompts, output, 1, "--dry-run", *prices)
        args[args.index("--mode") + 1] = mode
        flags = {"backend": "openai", "model": MODEL, "base_url": server.base_url, "prompts.source": str(prompts)}
        sets = [a for a, prev in zip(args[1:], args, strict=False) if prev == "--set"] + [f"mode={mode}"]
        return generate.dry_run(load_stage("generate", None, {**flags, "output": str(output)}, sets))

    batch, live = projection(tmp_path / "b.jsonl", "batch"), projection(tmp_path / "l.jsonl", "live")
    assert len(server.chat_requests()) == 6 and server.created_batches() == []  # two live pilots of 3
    assert batch["projected_cost"] == pytest.approx(live["projected_cost"] * 0.5, rel=1e-3)
    assert "within 24h" in batch["projected_seconds"]
    result = run(
        *generate_args(server.base_url, prompts, tmp_path / "c.jsonl", 1, "--mode", "batch-file", "--dry-run")
    )
    assert_exit(result, 1)
    assert "sends nothing" in error_line(result)


# --- batch files, and output made elsewhere -----------------------------------------------------------------


def test_batch_file_mode_writes_inputs_and_an_output_made_elsewhere_ingests_once(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 5))
    out = tmp_path / "s.jsonl"
    args = generate_args("http://127.0.0.1:9/v1", prompts, out, 2, "--mode", "batch-file")  # nothing listens
    result = run(*args, "--set", "batch_max_requests=3")
    assert_exit(result, 0)
    files = sorted(out.with_name("s.batch").glob("requests-*.jsonl"))
    assert [len(f.read_text().splitlines()) for f in files] == [3, 2]
    assert not out.exists()

    output_lines, _ = server.answer_lines(b"".join(f.read_bytes() for f in files))  # as vllm run-batch would
    made = write_jsonl(tmp_path / "made-elsewhere.jsonl", output_lines[:4])
    ingest = generate_args("http://127.0.0.1:9/v1", prompts, out, 2, "--from-batch-output", str(made))
    assert_exit(run(*ingest), 0)
    assert keys(samples(out)) == Counter({(f"q{i}", j): 1 for i in range(4) for j in range(2)})

    rest = write_jsonl(tmp_path / "all.jsonl", output_lines)  # the whole output again: only q4 is new
    result = run(*generate_args("http://127.0.0.1:9/v1", prompts, out, 2, "--from-batch-output", str(rest)))
    assert_exit(result, 0)
    complete(out, 5, 2)
    assert "already_present" in result.stdout
    with FakeOpenAIServer(models=[MODEL]) as live:  # the same records as live generation
        assert_exit(run(*generate_args(live.base_url, prompts, tmp_path / "live.jsonl", 2)), 0)
    assert sorted(read_jsonl(out), key=lambda r: r["id"]) == sorted(
        read_jsonl(tmp_path / "live.jsonl"), key=lambda r: r["id"]
    )

    again = generate_args("http://127.0.0.1:9/v1", prompts, out, 2, "--mode", "batch-file")
    assert_exit(run(*again), 0)
    assert list(out.with_name("s.batch").glob("requests-*.jsonl")) == []  # nothing missing: no file


def test_from_batch_output_reports_unknown_lines_and_refuses_a_file_of_another_run(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
    out = tmp_path / "s.jsonl"
    assert_exit(run(*generate_args("http://127.0.0.1:9/v1", prompts, out, 1, "--mode", "batch-file")), 0)
    (requests,) = out.with_name("s.batch").glob("requests-*.jsonl")
    good, _ = server.answer_lines(requests.read_bytes())
    other = tmp_path / "other.jsonl"
    hotter = ("--set", "sampling.temperature=1.0")
    assert_exit(run(*generate_args("http://127.0.0.1:9/v1", prompts, other, 1, "--mode", "batch-file", *hotter)), 0)
    (other_requests,) = other.with_name("other.batch").glob("requests-*.jsonl")
    foreign, _ = server.answer_lines(other_requests.read_bytes())

    mixed = write_jsonl(tmp_path / "mixed.jsonl", good[:2] + foreign[:1])
    result = run(*generate_args("http://127.0.0.1:9/v1", prompts, out, 1, "--from-batch-output", str(mixed)))
    assert_exit(result, 0)
    assert len(samples(out)) == 2 and "unknown_custom_ids" in result.stdout and "left out" in result.stderr

    only_foreign = write_jsonl(tmp_path / "foreign.jsonl", foreign)
    result = run(*generate_args("http://127.0.0.1:9/v1", prompts, out, 1, "--from-batch-output", str(only_foreign)))
    assert_exit(result, 1)
    assert "none of the 3 lines" in error_line(result) and len(samples(out)) == 2


def test_output_lines_of_every_shape_become_results_or_named_failures(tmp_path):
    from seqdistill.backends.base import Failure, Result
    from seqdistill.backends.openai_batch import BatchAnswers, RequestIndex
    from seqdistill.config import GenerateConfig

    cfg = GenerateConfig(backend="openai", model=MODEL, mode="batch", n=2)
    index = RequestIndex({("q1", 0): "a" * 32, ("q1", 1): "b" * 32}, {"q1": [{"role": "user", "content": "hi"}]})
    answers = BatchAnswers(cfg)
    cid = "a" * 32 + "-2"
    choice = {"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}
    ok = {"choices": [choice, {**choice, "index": 1}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}

    def outcome(obj):
        return answers.line_outcome(json.dumps(obj) if not isinstance(obj, str) else obj, index)

    good = outcome({"custom_id": cid, "response": {"status_code": 200, "body": ok}, "error": None})
    assert [type(i) for i in good.items] == [Result, Result]
    expired = outcome({"custom_id": cid, "response": None, "error": {"code": "batch_expired", "message": "late"}})
    assert [(f.kind, f.request.sample_indices) for f in expired.items] == [("expired", [0, 1])]
    vllm = {
        "custom_id": cid,
        "response": {"status_code": 400, "body": None},
        "error": {"error": {"message": "too long"}},
    }
    (fail,) = outcome(vllm).items
    assert isinstance(fail, Failure) and fail.kind == "http_400" and fail.detail == "too long"
    (bad,) = outcome({"custom_id": cid, "response": {"status_code": 200, "body": "<html>"}}).items
    assert bad.kind == "bad_response"
    half = outcome({"custom_id": cid, "response": {"status_code": 200, "body": {**ok, "choices": [choice]}}})
    assert [getattr(i, "kind", "ok") for i in half.items] == ["ok", "short_response"]
    assert outcome({"custom_id": "c" * 32 + "-1", "response": None}).problem == "unknown custom_id"
    assert outcome({"custom_id": "a" * 32 + "-3", "response": None}).problem == "unknown custom_id"  # past n
    assert outcome("{not json").problem == "not a JSON line"


# --- user errors --------------------------------------------------------------------------------------------


def test_user_errors_are_one_line(tmp_path, server, monkeypatch):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    out = tmp_path / "s.jsonl"
    server.api_key = "sk-right-0123456789"
    monkeypatch.setenv("MY_KEY", "sk-wrong-9876543210")
    result = run(*batch_args(server.base_url, prompts, out, 1, "--set", "api_key_env=MY_KEY"))
    assert_exit(result, 1)
    assert "401" in error_line(result) and "sk-wrong" not in result.output

    with FakeOpenAIServer(models=[MODEL]) as plain:  # a chat server without the batch API (e.g. vllm serve)
        result = run(*batch_args(plain.base_url, prompts, tmp_path / "p2.jsonl"))
    assert_exit(result, 1)
    assert "batch-file" in error_line(result)

    result = run(*batch_args(server.base_url, prompts, out, 1, "--backend", "transformers"))
    assert_exit(result, 1)
    assert "mode batch is a way of the openai backend" in error_line(result)

    server.api_key = None
    state_file = out.with_name("s.batch") / "state.json"
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text("{not json")
    result = run(*batch_args(server.base_url, prompts, out))
    assert_exit(result, 1)
    assert "state.json: unreadable" in error_line(result) and server.created_batches() == []


def test_conversations_with_tools_go_through_a_batch_as_they_go_live(tmp_path, server):
    from tests.test_generate_tools import ASK, WEATHER
    from tests.test_generate_tools import prompt_rows as tool_rows

    server.tool_calls[ASK] = ("get_weather", {"city": "Paris"})
    prompts = write_jsonl(tmp_path / "p.jsonl", tool_rows())
    out = tmp_path / "s.jsonl"
    assert_exit(run(*batch_args(server.base_url, prompts, out)), 0)

    (upload,) = server.uploads()
    bodies = {line["custom_id"]: line["body"] for line in map(json.loads, upload["data"].splitlines())}
    by_length = {len(b["messages"]): b for b in bodies.values() if b["messages"][0]["content"] == ASK}
    assert by_length[1]["tools"] == [WEATHER] and by_length[3]["tools"] == [WEATHER]
    assert by_length[3]["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'  # wire form
    assert sum("tools" in b for b in bodies.values()) == 2  # the plain question offers none
    records = {r["prompt_id"]: r for r in read_jsonl(out)}
    ask = records["ask"]
    assert ask["finish_reason"] == "tool_calls" and ask["tools"] == [WEATHER]
    assert ask["completion"][0]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert "Sunny" in records["answered"]["completion"][0]["content"] and "tools" not in records["plain"]
    assert_exit(run(*batch_args(server.base_url, prompts, out)), 0)  # resume: nothing missing, nothing sent
    assert len(server.uploads()) == 1
