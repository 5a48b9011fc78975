"""generate against a misbehaving server: retries with backoff, Retry-After, dropped connections, timeouts,
two servers one of which dies, AIMD, shards, logprobs and the run manifest (all over real loopback HTTP)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from tests.conftest import write_jsonl
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_generate_openai import MODEL, assert_exit, cli, free_port, keys, prompt_rows, samples

FAST = ("--set", "backoff_base=0.05", "--set", "backoff_max=0.2")


def _manifest(output):
    return json.loads(output.with_name(output.stem + ".manifest.json").read_text())


def _complete(output, count: int, n: int = 1) -> None:
    assert keys(samples(output)) == Counter({(f"q{i}", j): 1 for i in range(count) for j in range(n)})


def test_429_retry_after_is_honoured_and_the_run_completes(tmp_path, server):
    server.throttle_first, server.retry_after = 2, 0.6
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
    out = tmp_path / "s.jsonl"
    start = time.monotonic()
    result = cli(server.base_url, prompts, out, 1, "--concurrency", "1", *FAST)
    assert_exit(result, 0)
    assert time.monotonic() - start >= 1.2  # two waits of Retry-After, not the 0.05 s backoff
    _complete(out, 3)
    assert _manifest(out)["retries"] == {"http_429": 2}
    statuses = [r["status"] for r in server.chat_requests()]
    assert statuses == [429, 429, 200, 200, 200]


def test_500_then_success_is_retried_within_the_run(tmp_path, server):
    server.fail_first = 3
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 4))
    out = tmp_path / "s.jsonl"
    assert_exit(cli(server.base_url, prompts, out, 2, "--concurrency", "2", *FAST), 0)
    _complete(out, 4, 2)
    assert _manifest(out)["retries"] == {"http_500": 3}


def test_dropped_connection_is_retried(tmp_path, server):
    server.drop_first = 2
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
    out = tmp_path / "s.jsonl"
    assert_exit(cli(server.base_url, prompts, out, 1, "--concurrency", "1", *FAST), 0)
    _complete(out, 3)
    assert _manifest(out)["retries"] == {"connection": 2}


def test_timeout_is_retried(tmp_path, server):
    server.slow_first, server.slow_seconds = 1, 6.0
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    out = tmp_path / "s.jsonl"
    # a healthy answer takes milliseconds; 2 s leaves room for a loaded CI machine, and the slow one takes 6 s
    assert_exit(cli(server.base_url, prompts, out, 1, "--concurrency", "1", "--set", "timeout=2", *FAST), 0)
    _complete(out, 2)
    assert _manifest(out)["retries"] == {"timeout": 1}


def test_malformed_json_is_retried_then_recorded_as_failed(tmp_path, server):
    server.garbage_first = 10  # more than the attempts one request gets
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 1))
    out = tmp_path / "s.jsonl"
    result = cli(server.base_url, prompts, out, 1, "--set", "max_retries=2", *FAST)
    assert_exit(result, 1)
    assert "1 requests failed (bad_response: 1)" in result.stderr
    assert len(server.chat_requests()) == 3  # one request, three attempts
    failures = [json.loads(line) for line in out.with_name("s.failures.jsonl").read_text().splitlines()]
    assert [(f["prompt_id"], f["error"]) for f in failures] == [("q0", "bad_response")]
    manifest = _manifest(out)
    assert manifest["failures"] == {"bad_response": 1} and manifest["complete"] is False


def test_length_is_never_retried(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    out = tmp_path / "s.jsonl"
    assert_exit(cli(server.base_url, prompts, out, 1, "--set", "sampling.max_tokens=2", *FAST), 0)
    assert {s.finish_reason for s in samples(out)} == {"length"}
    assert len(server.chat_requests()) == 2


def test_two_servers_one_dies_mid_run(tmp_path):
    with FakeOpenAIServer(models=[MODEL], delay=0.02) as a, FakeOpenAIServer(models=[MODEL], delay=0.02) as b:
        prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 60))
        out = tmp_path / "s.jsonl"

        def kill_b_mid_run() -> None:  # after b answered a few: not after a fixed time a loaded machine may overrun
            deadline = time.monotonic() + 30
            while sum(r["status"] == 200 for r in b.chat_requests()) < 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            b.stop()

        killer = threading.Thread(target=kill_b_mid_run)
        killer.start()
        urls = f"base_url=[{a.base_url}, {b.base_url}]"
        result = cli(a.base_url, prompts, out, 1, "--concurrency", "4", "--set", urls, *FAST)
        killer.join()
        assert_exit(result, 0)
        _complete(out, 60)
        answered_by_b = [r for r in b.chat_requests() if r["status"] == 200]
        assert answered_by_b, "both servers took requests before one died"
        assert len(answered_by_b) < 60 and len([r for r in a.chat_requests() if r["status"] == 200]) > 0


def test_429s_halve_concurrency():
    from seqdistill.backends.openai_compat import _AIMD

    limit = _AIMD(16, adaptive=True)
    limit.on_throttle()
    assert int(limit.limit) == 8
    limit.on_throttle()  # within a second of the last cut: not cut again
    assert int(limit.limit) == 8
    for _ in range(9):
        limit.on_success()
    assert int(limit.limit) == 9  # additive increase: about +1 per `limit` successes
    fixed = _AIMD(16, adaptive=False)
    fixed.on_throttle()
    assert fixed.limit == 16


def test_shards_partition_the_prompts(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 30))
    outs = []
    for i in range(3):
        out = tmp_path / f"s{i}.jsonl"
        assert_exit(cli(server.base_url, prompts, out, 1, "--set", f"shard={i}/3"), 0)
        outs.append({s.prompt_id for s in samples(out)})
    assert set().union(*outs) == {f"q{i}" for i in range(30)}
    assert sum(len(o) for o in outs) == 30 and all(outs)  # no overlap, none empty
    assert len(server.chat_requests()) == 30


def test_bad_shard_is_a_config_error(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    result = cli(server.base_url, prompts, tmp_path / "s.jsonl", 1, "--set", "shard=3/3")
    assert_exit(result, 1)
    assert "shard must be 'I/N'" in result.stderr


def test_logprobs_are_captured_compactly(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    out = tmp_path / "s.jsonl"
    assert_exit(cli(server.base_url, prompts, out, 2, "--set", "logprobs=3"), 0)
    body = server.chat_requests()[0]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    for s in samples(out):
        lp = s.meta["logprobs"]
        assert lp["tokens"] == s.text.split()
        assert lp["logprobs"][:2] == [0.0, -0.125]
        assert [len(t) for t in lp["top"]] == [3] * len(lp["tokens"]) and lp["top"][1][0] == [lp["tokens"][1], -0.125]


def test_inline_think_is_split_when_asked():
    from seqdistill.backends.base import split_think

    assert split_think("<think>\nadd them\n</think>\n\nThe answer is 7.") == ("add them", "The answer is 7.")
    assert split_think("<think>never closed") == ("never closed", "")
    assert split_think("no think here") == (None, "no think here")


def test_manifest_records_counts_tokens_and_settings(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
    out = tmp_path / "s.jsonl"
    assert_exit(cli(server.base_url, prompts, out, 2), 0)
    m = _manifest(out)
    assert (m["requested"], m["generated"], m["failed"], m["complete"]) == (6, 6, 0, True)
    assert m["prompt_tokens"] > 0 and m["completion_tokens"] > 0
    assert m["teacher"] == {"model": MODEL, "backend": "openai"} and m["sampling"]["temperature"] == 0.7
    assert m["seqdistill_version"]


# --- budgets, dry run, refusing to mix ---------------------------------------------------------------


def test_max_requests_stops_cleanly_and_the_next_run_continues(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 10))
    out = tmp_path / "s.jsonl"
    result = cli(server.base_url, prompts, out, 2, "--max-requests", "4")
    assert_exit(result, 0)
    assert "max_requests budget" in result.stderr
    assert len(server.chat_requests()) == 4 and len(samples(out)) == 8
    assert _manifest(out)["budget_reached"] == "max_requests"
    assert_exit(cli(server.base_url, prompts, out, 2), 0)
    assert len(server.chat_requests()) == 10
    _complete(out, 10, 2)


def test_max_output_tokens_and_max_cost_stop_at_the_bound(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 20))
    out = tmp_path / "s.jsonl"
    # each answer is 11 words = 11 "tokens" at the fake server. The bound is crossed by the 3rd answer; with
    # `concurrency` 1 no other request is in flight then, and no new one starts
    result = cli(server.base_url, prompts, out, 1, "--concurrency", "1", "--max-output-tokens", "30")
    assert_exit(result, 0)
    assert len(samples(out)) == 3 and _manifest(out)["budget_reached"] == "max_output_tokens"
    assert len(server.chat_requests()) == len(samples(out))
    out2 = tmp_path / "s2.jsonl"
    prices = ("--set", "price_input_per_m=0", "--set", "price_output_per_m=100000")  # $1.1 per answer
    result = cli(server.base_url, prompts, out2, 1, "--concurrency", "1", "--max-cost", "2", *prices)
    assert_exit(result, 0)
    m = _manifest(out2)
    kept = len(samples(out2))
    assert m["budget_reached"] == "max_cost" and kept == 2 and m["cost"] == pytest.approx(1.1 * kept)


def test_a_slow_writer_does_not_let_requests_run_past_a_budget(tmp_path, server, monkeypatch):
    """The stage judges budgets as it writes: workers must not run ahead of it (a slow disk, a loaded CPU).

    This was the flaky test above: under load the writer's fsync lagged, the client kept sending, and
    `--max-output-tokens 30` with `concurrency` 1 kept 5 answers. A slow writer makes the lag certain.
    """
    from seqdistill.io import SampleWriter

    write = SampleWriter.write

    def slow_write(self, sample):
        time.sleep(0.15)
        write(self, sample)

    monkeypatch.setattr(SampleWriter, "write", slow_write)
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 20))
    out = tmp_path / "s.jsonl"
    for concurrency, bound in ((1, 3), (3, 5)):  # at most concurrency - 1 requests in flight past the bound
        server.clear_log()
        out.unlink(missing_ok=True)
        result = cli(server.base_url, prompts, out, 1, "--concurrency", str(concurrency), "--max-output-tokens", "30")
        assert_exit(result, 0)
        assert 3 <= len(samples(out)) <= bound and len(server.chat_requests()) == len(samples(out))


def test_max_cost_without_prices_is_a_config_error(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    result = cli(server.base_url, prompts, tmp_path / "s.jsonl", 1, "--max-cost", "5")
    assert_exit(result, 1)
    assert "max_cost needs prices" in result.stderr


def test_dry_run_sends_a_pilot_and_projects_the_rest(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 40))
    out = tmp_path / "s.jsonl"
    prices = ("--set", "price_input_per_m=1000", "--set", "price_output_per_m=2000")
    result = cli(server.base_url, prompts, out, 2, "--dry-run", "--set", "pilot_prompts=4", *prices)
    assert_exit(result, 0)
    assert len(server.chat_requests()) == 4 and len(samples(out)) == 8  # the pilot's answers are kept
    from seqdistill.config import load_stage
    from seqdistill.stages import generate

    flags = {
        "backend": "openai",
        "model": MODEL,
        "base_url": server.base_url,
        "prompts.source": str(prompts),
        "output": str(tmp_path / "s3.jsonl"),
        "n": 2,
        "pilot_prompts": 4,
        "price_output_per_m": 2000,
    }
    projection = generate.dry_run(load_stage("generate", None, flags))
    assert projection["remaining_requests"] == 36 and projection["remaining_samples"] == 72
    assert projection["projected_output_tokens"] == pytest.approx(72 * 11, rel=0.1)
    assert projection["projected_cost"] == pytest.approx(projection["projected_output_tokens"] * 2000 / 1e6)
    assert projection["pilot_truncation_rate"] == 0
    assert "projected_cost" in result.stdout


def test_a_different_teacher_or_sampling_refuses_to_mix(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    out = tmp_path / "s.jsonl"
    assert_exit(cli(server.base_url, prompts, out, 1), 0)
    before = out.read_bytes()
    result = cli(server.base_url, prompts, out, 1, "--set", "sampling.temperature=0.2")
    assert_exit(result, 1)
    assert "holds samples of another teacher or sampling" in result.stderr and "new --output" in result.stderr
    assert out.read_bytes() == before and len(server.chat_requests()) == 2
    assert_exit(
        cli(server.base_url, prompts, out, 1, "--set", "sampling.temperature=0.2", "--set", "allow_mixed_output=true"),
        0,
    )
    assert len(samples(out)) == 4


# --- kill -9 ------------------------------------------------------------------------------------------


def test_kill_9_then_resume_loses_nothing_and_duplicates_nothing(tmp_path, server):
    """SIGKILL mid-run (no handler runs): every written sample survives whole; the restart sends only the rest."""
    import signal

    from tests.test_generate_openai import line_count, spawn, wait_for

    server.delay = 0.05
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 60))
    out = tmp_path / "s.jsonl"
    proc = spawn(server.base_url, prompts, out, 2, "--concurrency", "4")
    wait_for(lambda: line_count(out) >= 10, 30, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    first = server.chat_requests()
    written_before = {s.prompt_id for s in samples(out)}  # a torn last line would fail validation here
    assert 5 <= len(written_before) < 60
    server.delay = 0.0
    proc = spawn(server.base_url, prompts, out, 2, "--concurrency", "4")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    _complete(out, 60, 2)
    resent = {r["body"]["messages"][-1]["content"].split()[2] for r in server.chat_requests()[len(first) :]}
    assert not {f"q{i}" for i in resent} & written_before  # nothing already written was paid for again
    answered_not_written = {r["body"]["messages"][-1]["content"].split()[2] for r in first if r["answered"]}
    # only answers in flight at the kill (at most `concurrency`) can have been answered but not written
    assert len({f"q{i}" for i in answered_not_written} - written_before) <= 4


# --- the official SDK transports behave the same ----------------------------------------------------


@pytest.mark.parametrize("client", ["openai", "openai-httpx"])
def test_sdk_transports_give_the_same_records_and_errors(tmp_path, client):
    with FakeOpenAIServer(models=[MODEL], reasoning_field="reasoning", throttle_first=1, retry_after=0.1) as srv:
        prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
        out = tmp_path / "s.jsonl"
        result = cli(srv.base_url, prompts, out, 2, "--set", f"http_client={client}", "--set", "logprobs=2", *FAST)
        assert_exit(result, 0)
        _complete(out, 3, 2)
        rows = samples(out)
        assert all(s.completion[0].reasoning_content and s.meta["logprobs"]["top"] for s in rows)
        assert _manifest(out)["retries"] == {"http_429": 1}
        srv.fail_first, srv.throttle_first = 0, 0
        result = cli(
            srv.base_url, prompts, tmp_path / "x.jsonl", 1, "--set", f"http_client={client}", model="no-such-model"
        )
        assert_exit(result, 1)
        assert "404" in result.stderr
    bad = cli(
        f"http://127.0.0.1:{free_port()}/v1",
        prompts,
        tmp_path / "y.jsonl",
        1,
        "--set",
        f"http_client={client}",
        "--set",
        "max_retries=0",
    )
    assert_exit(bad, 1)
    assert "cannot reach" in bad.stderr


def test_a_bug_inside_the_client_is_never_swallowed(tmp_path, server, monkeypatch):
    """An unexpected exception in a request worker must surface, not end the run 'successfully' with nothing."""
    from seqdistill.backends import http

    async def broken(self, body):
        raise RuntimeError("boom")

    monkeypatch.setattr(http.FastTransport, "chat", broken)
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    result = cli(server.base_url, prompts, tmp_path / "s.jsonl", 1)
    assert result.exit_code != 0
    assert isinstance(result.exception, RuntimeError) and "boom" in str(result.exception)
