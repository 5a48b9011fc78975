"""Every stop is graceful, in real processes: SIGTERM and SIGHUP stop `generate` like a first Ctrl-C (drain
in flight, write the manifest, exit 143 / 129 with the resume hint); a second signal aborts; `filter --workers
2` unwinds on SIGTERM/SIGHUP (workers stopped, temporary files removed, the old output kept); `nohup` is honoured.
After each stop: no orphan process, no temporary file, and a rerun loses nothing and pays for nothing twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import make_sample, write_jsonl
from tests.test_generate_openai import (
    REPO,
    generate_args,
    keys,
    line_count,
    pending,
    prompt_id_of,
    prompt_rows,
    samples,
    spawn,
    wait_for,
)

CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains `text` (forked workers share their parent's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if text in cmdline and "zombie" not in state:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "zombie" not in state


def hidden_leftovers(directory: Path) -> list[str]:
    """Temporary (`.*.tmp`) and lock (`.*.lock`) files left in `directory`."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and p.suffix in (".tmp", ".lock"))


def message_lines(stderr: str) -> list[str]:
    """The command's own message lines: not the log's records ('[time] WARNING ...' and their continuations)."""
    log_record = re.compile(r"\[[^\]]*\]\s+(DEBUG|INFO|WARNING)\s")
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln[0].isspace() and not log_record.match(ln)]


def finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the process did not stop within {timeout}s:\n{err}")


# --- generate ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_generate_drains_writes_the_manifest_and_resumes_after_a_signal(tmp_path, server, signum):
    server.delay = 0.3
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 40))
    output = tmp_path / "samples.jsonl"
    grace = 10.0
    extra = ("--concurrency", "4", "--set", f"shutdown_timeout={grace}")

    proc = spawn(server.base_url, prompts, output, 2, *extra)
    wait_for(lambda: line_count(output) >= 4 and pending(server) >= 2, 30, proc)
    sent_at = time.monotonic()
    proc.send_signal(signum)
    _, stderr = finish(proc, grace + 10)

    assert proc.returncode == CODES[signum], stderr
    assert "Traceback" not in stderr
    lines = message_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"stopped by {signal.Signals(signum).name}:")
    assert "run the same command to resume" in lines[0]
    first_run = server.chat_requests()
    in_flight = [r for r in first_run if r["received"] < sent_at and not (r["answered"] or 0) < sent_at]
    assert in_flight, "the signal landed with no request in flight: the test proves nothing"
    assert all(r["answered"] for r in in_flight), "requests in flight were abandoned, not awaited"
    rows = samples(output)
    written = {s.prompt_id for s in rows}
    assert written == {prompt_id_of(r) for r in first_run if r["answered"]}  # every delivered answer kept
    assert len(written) < 40
    manifest = json.loads(output.with_name("samples.manifest.json").read_text())
    assert manifest["interrupted"] is True and manifest["complete"] is False
    assert manifest["stopped_by"] == signal.Signals(signum).name
    assert manifest["generated"] == len(rows)
    assert hidden_leftovers(tmp_path) == []
    assert processes_mentioning(str(tmp_path)) == []

    server.delay = 0.0
    again = spawn(server.base_url, prompts, output, 2, *extra)
    _, stderr = finish(again, 60)
    assert again.returncode == 0, stderr
    assert keys(samples(output)) == Counter({(f"q{i}", j): 1 for i in range(40) for j in range(2)})
    assert Counter(prompt_id_of(r) for r in server.chat_requests()) == Counter({f"q{i}": 1 for i in range(40)})


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_aborts_at_once_keeping_whole_lines_and_the_manifest(tmp_path, server, signum):
    server.delay = 0.2
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 40))
    output = tmp_path / "samples.jsonl"
    proc = spawn(server.base_url, prompts, output, 1, "--concurrency", "4", "--set", "shutdown_timeout=30")
    wait_for(lambda: line_count(output) >= 3, 30, proc)
    server.delay = 20.0  # requests from now on hang: only an abort ends the run quickly
    slow_from = time.monotonic()
    wait_for(lambda: sum(r["received"] > slow_from for r in server.chat_requests()) >= 2, 20, proc)
    proc.send_signal(signum)
    time.sleep(0.3)
    second_at = time.monotonic()
    proc.send_signal(signum)
    _, stderr = finish(proc, 10)

    assert proc.returncode == CODES[signum], stderr
    assert time.monotonic() - second_at < 8
    assert "Traceback" not in stderr
    lines = message_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("error: aborted:"), stderr
    assert output.read_text(encoding="utf-8").endswith("\n")
    rows = samples(output)
    manifest = json.loads(output.with_name("samples.manifest.json").read_text())
    assert manifest["interrupted"] is True and manifest["generated"] == len(rows)
    assert manifest["stopped_by"] == signal.Signals(signum).name
    assert hidden_leftovers(tmp_path) == []
    assert processes_mentioning(str(tmp_path)) == []

    server.delay = 0.0
    first_run = len(server.chat_requests())
    again = spawn(server.base_url, prompts, output, 1, "--concurrency", "4")
    _, stderr = finish(again, 60)
    assert again.returncode == 0, stderr
    assert keys(samples(output)) == Counter({(f"q{i}", 0): 1 for i in range(40)})
    asked_again = {prompt_id_of(r) for r in server.chat_requests()[first_run:]}
    assert not asked_again & {s.prompt_id for s in rows}  # nothing written was paid for twice


def test_nohup_keeps_generate_running_through_sighup(tmp_path, server):
    server.delay = 0.1
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 12))
    output = tmp_path / "samples.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SEQDISTILL_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", SEQDISTILL_NO_PROGRESS="1")
    args = [
        sys.executable,
        "-m",
        "seqdistill",
        *generate_args(server.base_url, prompts, output, 1, "--concurrency", "1"),
    ]
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # what `nohup` does
    )
    wait_for(lambda: line_count(output) >= 2, 30, proc)
    proc.send_signal(signal.SIGHUP)
    _, stderr = finish(proc, 60)
    assert proc.returncode == 0, stderr
    assert keys(samples(output)) == Counter({(f"q{i}", 0): 1 for i in range(12)})


# --- filter with worker processes -------------------------------------------------------------------------------


def _filter_input(path: Path, count: int) -> Path:
    rows = [
        make_sample(f"p{i}", 0, text=f"So {i} + 1 = \\boxed{{{i + 1}}}", reference=str(i + 1), id=f"s{i}")
        for i in range(count)
    ]
    return write_jsonl(path, rows)


def _spawn_filter(data: Path, output: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "SEQDISTILL_DEBUG"}
    env.update(HF_HUB_OFFLINE="1", SEQDISTILL_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    args = [sys.executable, "-m", "seqdistill", "filter", str(data), "--output", str(output)]
    args += ["--workers", "2", "--check", "math"]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_filter_with_workers_unwinds_on_a_signal(tmp_path, signum):
    data = _filter_input(tmp_path / "samples.jsonl", 1200)
    output = tmp_path / "kept.jsonl"
    output.write_text("an earlier run's output\n")
    proc = _spawn_filter(data, output)
    # mid-run: both workers started and the outputs' temporary files open
    wait_for(lambda: len(_children(proc.pid)) >= 2 and len(hidden_leftovers(tmp_path)) >= 2, 60, proc)
    workers = _children(proc.pid)
    proc.send_signal(signum)
    _, stderr = finish(proc, 20)

    assert proc.returncode == CODES[signum], stderr
    assert "Traceback" not in stderr
    lines = message_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith(f"interrupted by {signal.Signals(signum).name}"), stderr
    assert output.read_text() == "an earlier run's output\n"  # replaced only by a finished run
    assert hidden_leftovers(tmp_path) == []
    assert not [pid for pid in workers if alive(pid)]
    assert processes_mentioning(str(tmp_path)) == []

    again = _spawn_filter(data, output)
    _, stderr = finish(again, 180)
    assert again.returncode == 0, stderr
    assert [json.loads(ln)["id"] for ln in output.read_text().splitlines()] == [f"s{i}" for i in range(1200)]
    assert hidden_leftovers(tmp_path) == []


def test_filter_killed_with_sigkill_leaves_temp_files_that_the_next_run_removes(tmp_path):
    data = _filter_input(tmp_path / "samples.jsonl", 300)
    output = tmp_path / "kept.jsonl"
    proc = _spawn_filter(data, output)
    wait_for(lambda: len(hidden_leftovers(tmp_path)) >= 2, 60, proc)
    proc.kill()
    proc.wait()
    left = hidden_leftovers(tmp_path)
    assert left, "a kill -9 runs no cleanup: the temporary files are still there"

    again = _spawn_filter(data, output)
    _, stderr = finish(again, 120)
    assert again.returncode == 0, stderr
    assert hidden_leftovers(tmp_path) == []
    assert len(output.read_text().splitlines()) == 300
    deadline = time.monotonic() + 10  # workers of the killed run notice their parent is gone and exit
    while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(tmp_path)) == []
