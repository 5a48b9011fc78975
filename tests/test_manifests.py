"""generate's manifest is true after every exit path (issue 14.4): a dry run, a finished run, a rerun with nothing to
send, one Ctrl-C, SIGTERM, two Ctrl-C, failed requests. It holds what exists (`requested`, `present`, `missing`,
`complete` only when all are present) and what this invocation did (`generated`, `failed`, `interrupted`,
`dry_run`); a run that writes no sample leaves no empty samples file. Signals go to real subprocesses."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill.cli import app
from tests.conftest import write_jsonl
from tests.test_generate_openai import generate_args, line_count, pending, prompt_rows, samples, spawn, wait_for
from tests.test_signals import CODES, finish


def manifest(output: Path) -> dict:
    return json.loads(output.with_name(output.stem + ".manifest.json").read_text())


def generate(server, prompts: Path, output: Path, n: int, *extra: str):
    # no --backend: --base-url alone names the openai backend
    args = [a for a in generate_args(server.base_url, prompts, output, n, *extra) if a not in ("--backend", "openai")]
    return CliRunner().invoke(app, args)


def test_dry_run_then_run_then_nothing_to_do(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 12))
    output = tmp_path / "samples.jsonl"

    result = generate(server, prompts, output, 2, "--dry-run", "--set", "pilot_prompts=2")
    assert result.exit_code == 0, result.output
    assert "run again without --dry-run to generate the rest (20 samples" in result.stdout
    m = manifest(output)
    assert len(samples(output)) == 4
    assert (m["requested"], m["already_done"], m["generated"], m["present"], m["missing"]) == (24, 0, 4, 4, 20)
    assert m["complete"] is False and m["dry_run"] is True and m["interrupted"] is False

    result = generate(server, prompts, output, 2, "--dry-run", "--set", "pilot_prompts=2")  # a second pilot
    m = manifest(output)
    assert (m["already_done"], m["generated"], m["present"], m["complete"]) == (4, 4, 8, False)

    result = generate(server, prompts, output, 2)
    assert result.exit_code == 0, result.output
    m = manifest(output)
    assert (m["already_done"], m["generated"], m["present"], m["missing"]) == (8, 16, 24, 0)
    assert m["complete"] is True and m["dry_run"] is False

    sent = len(server.chat_requests())
    result = generate(server, prompts, output, 2)  # nothing to send: this invocation is recorded all the same
    assert result.exit_code == 0 and len(server.chat_requests()) == sent
    m = manifest(output)
    assert (m["already_done"], m["generated"], m["present"], m["complete"]) == (24, 0, 24, True)

    result = generate(server, prompts, output, 2, "--dry-run")  # nothing left: no hint to run again
    assert result.exit_code == 0 and "run again without --dry-run" not in result.stdout


@pytest.mark.parametrize(
    ("signum", "times"), [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 2)], ids=["ctrl-c", "sigterm", "2x"]
)
def test_a_stopped_resumed_run_counts_what_exists_and_what_it_did(tmp_path, server, signum, times):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 40))
    output = tmp_path / "samples.jsonl"
    assert generate(server, prompts, output, 1, "--limit", "5").exit_code == 0  # an earlier invocation: 5 samples

    server.delay = 0.2
    proc = spawn(server.base_url, prompts, output, 1, "--concurrency", "4", "--set", "shutdown_timeout=30")
    wait_for(lambda: line_count(output) >= 8 and pending(server) >= 2, 30, proc)
    if times == 2:
        server.delay = 20.0  # in flight from now on: only the second signal ends the run
        slow_from = time.monotonic()
        wait_for(lambda: sum(r["received"] > slow_from for r in server.chat_requests()) >= 2, 20, proc)
    proc.send_signal(signum)
    if times == 2:
        time.sleep(0.3)
        proc.send_signal(signum)
    _, stderr = finish(proc, 40)

    assert proc.returncode == CODES[signum], stderr
    rows = len(samples(output))
    m = manifest(output)
    assert m["interrupted"] is True and m["stopped_by"] == signal.Signals(signum).name, m
    assert (m["requested"], m["already_done"], m["present"]) == (40, 5, rows)
    assert m["generated"] == rows - 5 and m["missing"] == 40 - rows > 0
    assert m["complete"] is False and m["dry_run"] is False


def test_failed_requests_on_a_fresh_output_leave_no_empty_samples_file(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
    output = tmp_path / "samples.jsonl"
    server.fail_first = 100
    result = generate(server, prompts, output, 2, "--set", "max_retries=0")
    assert result.exit_code == 1, result.output
    assert "3 requests failed" in result.stderr
    assert not output.exists()
    m = manifest(output)
    assert (m["failed"], m["generated"], m["present"], m["missing"], m["complete"]) == (3, 0, 0, 6, False)
    assert output.with_name("samples.failures.jsonl").is_file()  # what failed, for the rerun

    server.fail_first = 0
    assert generate(server, prompts, output, 2).exit_code == 0
    m = manifest(output)
    assert (m["failed"], m["generated"], m["present"], m["complete"]) == (0, 6, 6, True)
    assert not output.with_name("samples.failures.jsonl").exists()


def test_ctrl_c_while_the_backend_loads_is_recorded(tmp_path, server, monkeypatch):
    """A local model takes seconds to load: a Ctrl-C then (simulated: the loader raises it) still leaves a true
    manifest, not the previous invocation's."""
    from seqdistill.stages import generate as stage

    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 6))
    output = tmp_path / "samples.jsonl"
    assert generate(server, prompts, output, 1, "--limit", "2").exit_code == 0

    def interrupted_load(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "create_backend", interrupted_load)
    result = generate(server, prompts, output, 1)
    assert result.exit_code == 130, result.output
    m = manifest(output)
    assert m["interrupted"] is True and m["stopped_by"] == "SIGINT"
    assert (m["requested"], m["present"], m["generated"], m["complete"]) == (6, 2, 0, False)
