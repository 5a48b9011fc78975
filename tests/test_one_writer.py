"""One writer per output: the OS lock on generate's/eval's output (two real processes against the loopback
server), outputs that are not regular files refused before any work, and temporary files left by a kill -9
removed by the next run (and only those)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from seqdistill.errors import DataError
from seqdistill.io import exclusive_lock, lock_path, remove_stale_temps, write_atomic
from tests.conftest import make_sample, write_jsonl
from tests.test_generate_openai import (
    MODEL,
    REPO,
    generate_args,
    keys,
    line_count,
    prompt_id_of,
    prompt_rows,
    samples,
    spawn,
    wait_for,
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SEQDISTILL_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", SEQDISTILL_NO_PROGRESS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    return env


def seqdistill(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The CLI in its own process (a hang on main, e.g. opening a FIFO, fails the test instead of blocking it)."""
    cmd = [sys.executable, "-m", "seqdistill", *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in stderr
    return lines[0]


# --- the lock: two real processes on one output -------------------------------------------------------------


def test_second_generate_on_the_same_output_exits_naming_the_first(tmp_path, server):
    server.delay = 0.15
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 30))
    output = tmp_path / "samples.jsonl"
    first = spawn(server.base_url, prompts, output, 2, "--concurrency", "2")
    wait_for(lambda: line_count(output) >= 2, 30, first)

    second = seqdistill(*generate_args(server.base_url, prompts, output, 2, "--concurrency", "2"))

    assert second.returncode == 1, second.stderr
    line = one_error_line(second.stderr)
    assert f"another seqdistill (pid {first.pid}) is writing {output}" in line
    assert "choose another --output" in line
    assert first.poll() is None, "the first run must go on"
    assert first.wait(timeout=60) == 0, first.stderr.read()

    # in sequence, the second finds everything done
    again = seqdistill(*generate_args(server.base_url, prompts, output, 2, "--concurrency", "2"))
    assert again.returncode == 0, again.stderr
    rows = samples(output)
    assert len(rows) == len({s.id for s in rows}) == 60
    assert keys(rows) == Counter({(f"q{i}", j): 1 for i in range(30) for j in range(2)})
    assert Counter(prompt_id_of(r) for r in server.chat_requests()) == Counter({f"q{i}": 1 for i in range(30)})
    assert not lock_path(output).exists()  # released and removed


def test_a_killed_writer_leaves_no_stale_lock(tmp_path, server):
    server.delay = 0.2
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 30))
    output = tmp_path / "samples.jsonl"
    first = spawn(server.base_url, prompts, output, 1, "--concurrency", "2")
    wait_for(lambda: line_count(output) >= 2, 30, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert lock_path(output).exists()  # the file stays; the lock died with the process

    server.delay = 0.0
    result = seqdistill(*generate_args(server.base_url, prompts, output, 1))

    assert result.returncode == 0, result.stderr
    rows = samples(output)
    assert keys(rows) == Counter({(f"q{i}", 0): 1 for i in range(30)})


def test_eval_holds_its_output_too(tmp_path, server):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 3))
    output = tmp_path / "eval.jsonl"
    holder = _hold_lock_in_another_process(output)
    try:
        result = seqdistill(
            "eval", "--prompts", str(prompts), "--model", MODEL, "--base-url", server.base_url, "--output", str(output)
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert f"another seqdistill (pid {holder.pid}) is writing {output}" in one_error_line(result.stderr)
    assert server.chat_requests() == []


def _hold_lock_in_another_process(output: Path) -> subprocess.Popen:
    code = (
        "import sys, time\nfrom seqdistill.io import exclusive_lock\n"
        f"with exclusive_lock({str(output)!r}):\n    print('locked', flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_exclusive_lock_is_reentrant_in_one_process_and_names_the_holder(tmp_path):
    output = tmp_path / "out.jsonl"
    with exclusive_lock(output):
        assert lock_path(output).read_text().strip() == str(os.getpid())
        with exclusive_lock(output):  # eval locks, then generate on the same output
            pass
        assert lock_path(output).exists()  # still held by the outer block
        code = f"from seqdistill.io import exclusive_lock\nwith exclusive_lock({str(output)!r}): pass"
        other = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True)
        assert other.returncode != 0
        assert f"another seqdistill (pid {os.getpid()}) is writing {output}" in other.stderr
    assert not lock_path(output).exists()
    with exclusive_lock(output):  # free again
        pass


def test_lock_through_a_symlink_is_the_lock_of_its_target(tmp_path):
    target = tmp_path / "real.jsonl"
    target.touch()
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    with exclusive_lock(target):
        code = f"from seqdistill.io import exclusive_lock\nwith exclusive_lock({str(link)!r}): pass"
        other = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True)
    assert "another seqdistill" in other.stderr


# --- outputs that are not regular files ------------------------------------------------------------------------


def _special(tmp_path: Path, kind: str) -> Path:
    if kind == "directory":
        path = tmp_path / "out"
        path.mkdir()
    elif kind == "fifo":
        path = tmp_path / "out.jsonl"
        os.mkfifo(path)
    elif kind == "socket":
        path = tmp_path / "out.sock"
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "symlink to a fifo":
        os.mkfifo(tmp_path / "pipe")
        path = tmp_path / "out.jsonl"
        path.symlink_to(tmp_path / "pipe")
    elif kind == "symlink to a directory":
        (tmp_path / "d").mkdir()
        path = tmp_path / "out.jsonl"
        path.symlink_to(tmp_path / "d")
    elif kind == "character device":
        # a private null device (1, 3) in tmp_path: never the real /dev/null, which a regression (or the old
        # code, which replaced it) would turn into a regular file for the whole machine
        if os.geteuid() != 0:
            pytest.skip("creating a device node needs root")
        path = tmp_path / "null"
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating a device node is not permitted here")
    return path


def _assert_untouched(path: Path, kind: str) -> None:
    mode = path.stat().st_mode
    expected = {
        "directory": stat.S_ISDIR, "fifo": stat.S_ISFIFO, "socket": stat.S_ISSOCK, "symlink to a fifo": stat.S_ISFIFO,
        "symlink to a directory": stat.S_ISDIR, "character device": stat.S_ISCHR,
    }[kind]  # fmt: skip
    assert expected(mode), f"{path} was replaced"
    if kind.startswith("symlink"):
        assert path.is_symlink()


KINDS = ["directory", "fifo", "socket", "symlink to a fifo", "symlink to a directory", "character device"]


@pytest.mark.parametrize("kind", KINDS)
def test_generate_refuses_an_output_that_is_not_a_regular_file(tmp_path, server, kind):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(0, 2))
    output = _special(tmp_path, kind)
    before = sorted(os.listdir(output.parent))

    result = seqdistill(*generate_args(server.base_url, prompts, output, 1))

    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr)
    assert str(output) in line
    assert ("is a directory" if "directory" in kind else "not a regular file") in line
    _assert_untouched(output, kind)
    assert sorted(os.listdir(output.parent)) == before  # no lock file, no side file, nothing
    assert server.chat_requests() == []


@pytest.mark.parametrize("kind", KINDS)
def test_filter_refuses_an_output_that_is_not_a_regular_file(tmp_path, kind):
    data = write_jsonl(tmp_path / "in" / "samples.jsonl", [make_sample("p1"), make_sample("p2")])
    output = _special(tmp_path, kind)

    result = seqdistill("filter", str(data), "--output", str(output), "--check", "numeric")

    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr)
    assert str(output) in line
    _assert_untouched(output, kind)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file started


def test_filter_writes_through_a_symlink_to_a_regular_file(tmp_path):
    data = write_jsonl(tmp_path / "samples.jsonl", [make_sample("p1"), make_sample("p2")])
    target = tmp_path / "store" / "kept.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "kept.jsonl"
    link.symlink_to(target)

    result = seqdistill("filter", str(data), "--output", str(link), "--check", "numeric")

    assert result.returncode == 0, result.stderr
    assert link.is_symlink()  # the link is kept; its target holds the new output
    assert [json.loads(line)["prompt_id"] for line in target.read_text().splitlines()] == ["p1", "p2"]


# --- temporary files left by a kill -9 ------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    output = tmp_path / "kept.jsonl"
    host = socket.gethostname()
    newcomer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = tmp_path / f".kept.jsonl.{host}-{_dead_pid()}.abcd1234.tmp"
        live = tmp_path / f".kept.jsonl.{host}-{os.getpid()}.efgh5678.tmp"  # a writer that is still running
        other_host = tmp_path / f".kept.jsonl.elsewhere-{_dead_pid()}.ijkl9012.tmp"  # cannot know: left alone
        reused = tmp_path / f".kept.jsonl.{host}-{newcomer.pid}.mnop3456.tmp"  # its pid now names a newer process
        other_file = tmp_path / f".other.jsonl.{host}-{_dead_pid()}.qrst7890.tmp"
        for p in (dead, live, other_host, reused, other_file):
            p.write_text("partial")
        day_ago = time.time() - 86400
        os.utime(reused, (day_ago, day_ago))  # written a day before the process that has its pid started

        removed = remove_stale_temps(output)
    finally:
        newcomer.kill()
        newcomer.wait()

    assert sorted(removed) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    assert live.exists() and other_host.exists() and other_file.exists()


def test_filter_after_a_kill_9_removes_the_temporary_files_it_left(tmp_path):
    data = write_jsonl(tmp_path / "samples.jsonl", [make_sample("p1"), make_sample("p2")])
    output = tmp_path / "kept.jsonl"
    host = socket.gethostname()
    left = [tmp_path / f".{name}.{host}-{_dead_pid()}.x1y2z3w4.tmp" for name in ("kept.jsonl", "kept.rejected.jsonl")]
    for p in left:
        p.write_text("half a file")

    result = seqdistill("filter", str(data), "--output", str(output), "--check", "numeric")

    assert result.returncode == 0, result.stderr
    assert [p for p in left if p.exists()] == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_atomic_writer_temp_name_carries_host_and_pid(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_atomic(tmp_path / "out.jsonl", ["x"])
    assert seen and seen[0].startswith(f".out.jsonl.{socket.gethostname()}-{os.getpid()}.")


def test_lock_refusal_is_a_data_error_in_process(tmp_path):
    output = tmp_path / "o.jsonl"
    holder = _hold_lock_in_another_process(output)
    try:
        with pytest.raises(DataError, match=rf"pid {holder.pid}\) is writing"):
            with exclusive_lock(output):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_train_holds_its_output_dir_on_rank_0_only(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from seqdistill.cli import app

    student = tmp_path / "student"
    holder = _hold_lock_in_another_process(student)
    args = ["train", str(tmp_path / "missing.jsonl"), "--model", "m", "--output", str(student)]
    try:
        monkeypatch.delenv("RANK", raising=False)
        alone = CliRunner().invoke(app, args)
        monkeypatch.setenv("RANK", "1")  # a torchrun rank other than 0 writes nothing: it takes no lock
        rank_1 = CliRunner().invoke(app, args)
    finally:
        holder.kill()
        holder.wait()
    assert alone.exit_code == 1 and f"another seqdistill (pid {holder.pid}) is writing" in alone.stderr
    assert rank_1.exit_code == 1 and "missing.jsonl: no such file" in rank_1.stderr
