"""The `code` check's sandbox: each escape found by the adversarial run of issue 9, and the limits.

Each test runs a hostile program through the real check (bubblewrap, real processes, real sockets on the
host). Tests that need bwrap skip with the reason when it does not work here; CI installs it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from seqdistill.checks.answers import check, get_check
from seqdistill.errors import ConfigError

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
GOOD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return 0\n"
REPO = Path(__file__).resolve().parent.parent


def _sandbox_problem() -> str | None:
    try:
        from seqdistill.checks import sandbox
    except ImportError:  # a tree without the sandbox (these tests were first run against one): nothing to skip
        return None
    return sandbox.available()


requires_sandbox = pytest.mark.skipif(
    _sandbox_problem() is not None, reason=f"no working bubblewrap sandbox here: {_sandbox_problem()}"
)


SYSTEM_PYTHON = "/usr/bin/python3"
INTERPRETERS = ["this-python"] + (
    ["system-python"] if os.path.exists(SYSTEM_PYTHON) and os.path.realpath(sys.executable) != SYSTEM_PYTHON else []
)


@pytest.fixture(params=INTERPRETERS)
def interpreter(request, monkeypatch):
    """Run under this Python and under the system's: as root here, the first (under /root) takes the sandbox's
    root mode and the second (world-readable) its user-namespace mode. The env var reaches subprocesses."""
    if request.param == "system-python":
        monkeypatch.setenv("SEQDISTILL_SANDBOX_PYTHON", SYSTEM_PYTHON)
    return request.param


def block(code: str) -> str:
    return f"My solution:\n```python\n{code}\n```\n"


def survivors(token: str) -> list[int]:
    """Host processes whose command line holds ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def short_limits(monkeypatch):
    """Smaller limits so that the tests that hit them stay quick (forked check workers inherit them)."""
    from seqdistill.checks import code, sandbox

    def set_limits(**kw):
        monkeypatch.setattr(code, "LIMITS", sandbox.Limits(**kw))

    return set_limits


# ---------------------------------------------------------------------------- secrets


@requires_sandbox
def test_a_secret_in_the_parents_environment_reaches_no_output(interpreter, tmp_path):
    """The adversarial run's leak: /proc/<ppid>/environ held an API key that reached report.json and rejects."""
    secret = "sk-test-" + uuid.uuid4().hex
    program = (
        "import os, glob\n"
        "blobs = [repr(dict(os.environ))]\n"
        "for path in [f'/proc/{os.getppid()}/environ', *glob.glob('/proc/*/environ')]:\n"
        "    try:\n"
        "        blobs.append(open(path, 'rb').read().decode(errors='replace'))\n"
        "    except OSError:\n"
        "        pass\n"
        "found = [b[b.index('SEQDISTILL_TEST_SECRET='):][:80] for b in blobs if 'SEQDISTILL_TEST_SECRET=' in b]\n"
        "print(found)\n"
        "import sys; print(found, file=sys.stderr)\n"
        "raise AssertionError(found[0] if found else 'nothing found')\n"
    )
    rows = [_sample("leak", block(program))]
    src = tmp_path / "samples.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    env = {**os.environ, "SEQDISTILL_TEST_SECRET": secret, "PYTHONPATH": str(REPO)}
    out = str(tmp_path / "k.jsonl")
    cmd = [sys.executable, "-m", "seqdistill", "filter", str(src), "--check", "code", "--output", out]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    written = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.iterdir() if p.name != "samples.jsonl"}
    assert set(written) >= {"k.jsonl", "k.rejected.jsonl", "k.report.json"}
    for name, text in [*written.items(), ("stdout", proc.stdout), ("stderr", proc.stderr)]:
        assert secret not in text, name
    rejected = json.loads(written["k.rejected.jsonl"])["meta"]["rejected"]
    assert rejected["rule"] == "wrong_answer" and rejected["reason"].endswith("AssertionError: nothing found")


def _sample(sample_id: str, completion: str) -> dict:
    from tests.conftest import make_sample

    return make_sample("p1", 0, completion, id=sample_id, reference=TESTS)


# ---------------------------------------------------------------------------- files


@requires_sandbox
def test_an_interpreter_under_tmp_still_runs(monkeypatch):
    """A venv under /tmp (as a CI clone has): the sandbox's private /tmp must not hide it, and the program's own
    /tmp stays the private one (nothing it writes there reaches the host's /tmp)."""
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="seqdistill-venv-", dir="/tmp"))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home / "venv")], check=True)
        monkeypatch.setenv("SEQDISTILL_SANDBOX_PYTHON", str(home / "venv" / "bin" / "python"))
        mark = f"/tmp/seqdistill-mark-{uuid.uuid4().hex}"  # the program's /tmp is its own: this never reaches ours
        program = f"open({mark!r}, 'w').write('x')\n"
        verdict = check("code", block(program + GOOD), TESTS)
        assert verdict.correct is True, verdict.reason
        assert not Path(mark).exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


@requires_sandbox
def test_the_program_cannot_write_files_on_the_host(interpreter, tmp_path):
    targets = [tmp_path / "escaped.txt", Path(f"/tmp/seqdistill-escape-{uuid.uuid4().hex}")]
    program = (
        "".join(f"try:\n    open({str(t)!r}, 'w').write('x')\nexcept OSError:\n    pass\n" for t in targets) + GOOD
    )
    verdict = check("code", block(program), TESTS)
    assert verdict.correct is True  # it ran (and passed): only the writes were refused
    assert not any(t.exists() for t in targets)


# ---------------------------------------------------------------------------- processes


def _argv0(token: str) -> str:
    """``token`` as a Python expression that builds it at run time (so that no source text holds it whole)."""
    return f"{token[:12]!r} + {token[12:]!r}"


def _detached(token: str, marker: Path, double: bool) -> str:
    """Code that leaves a process behind: it sleeps 1 s, then writes ``marker`` (argv[0] is ``token``)."""
    shell = f"sleep 1; echo escaped > {marker}"
    if double:  # the classic daemon: fork, new session, fork again, the middle one exits
        return (
            "import os\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            f"        os.execv('/bin/sh', [{_argv0(token)}, '-c', {shell!r}])\n"
            "    os._exit(0)\n"
        )
    return f"import os\nif os.fork() == 0:\n    os.execv('/bin/sh', [{_argv0(token)}, '-c', {shell!r}])\n"


@requires_sandbox
@pytest.mark.parametrize(
    ("double", "then"),
    [(False, GOOD), (True, GOOD), (True, "import time\ntime.sleep(60)\n")],
    ids=["forked-child", "double-forked-daemon", "daemon-then-timeout"],
)
def test_no_process_outlives_the_check(interpreter, tmp_path, short_limits, double, then):
    short_limits(wall_seconds=1.5)
    token = f"seqdistill-survivor-{uuid.uuid4().hex}"
    marker = tmp_path / "marker"
    verdict = check("code", block(_detached(token, marker, double) + then), TESTS)
    assert verdict.correct is (then == GOOD), verdict.reason
    time.sleep(0.3)  # the kernel reaps the namespace asynchronously
    assert survivors(token) == []
    time.sleep(1.5)  # longer than a survivor would have slept
    assert not marker.exists() and survivors(token) == []


@requires_sandbox
def test_a_check_interrupted_by_the_pool_timeout_kills_the_sandbox(tmp_path):
    from seqdistill.checks.pool import CheckPool

    token = f"seqdistill-survivor-{uuid.uuid4().hex}"
    program = f"import os\nos.execv('/bin/sh', [{_argv0(token)}, '-c', 'sleep 30'])\n"
    with CheckPool("code", workers=0, timeout=1.0) as pool:
        [verdict] = list(pool.map([(block(program), TESTS)]))
    assert verdict.correct is None and verdict.reason.startswith("timeout after")
    time.sleep(0.3)
    assert survivors(token) == []


@requires_sandbox
def test_a_killed_checker_takes_its_sandbox_with_it(interpreter, tmp_path):
    """--die-with-parent (re-armed after the uid switch in root mode): a SIGKILLed checker leaves nothing."""
    token = f"seqdistill-survivor-{uuid.uuid4().hex}"
    program = f"import os\nos.execv('/bin/sh', [{_argv0(token)}, '-c', 'sleep 30'])\n"
    script = f"from seqdistill.checks.answers import check\ncheck('code', {block(program)!r}, 'pass')\n"
    checker = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        while not survivors(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert survivors(token), "the sandboxed program never started"
    finally:
        checker.kill()
        checker.wait()
    deadline = time.monotonic() + 5
    while survivors(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert survivors(token) == []


# ---------------------------------------------------------------------------- network


class _Listener:
    """A host server that records every connection it accepts."""

    def __init__(self, family: int, address):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen()
        self.sock.settimeout(0.1)
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _connect_program(family: str, address) -> str:
    # `_socket` directly: a guard that replaces socket.socket would not stop it.
    return (
        "import _socket\n"
        f"s = _socket.socket(_socket.{family}, _socket.SOCK_STREAM)\n"
        "s.settimeout(2)\n"
        "try:\n"
        f"    s.connect({address!r})\n"
        "    s.send(b'hello from the sandbox')\n"
        "except OSError:\n"
        "    pass\n" + GOOD
    )


@requires_sandbox
@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_an_af_unix_socket_reaches_no_host_service(interpreter, tmp_path, kind):
    address = str(tmp_path / "s.sock") if kind == "path" else f"\0seqdistill-test-{uuid.uuid4().hex}"
    server = _Listener(socket.AF_UNIX, address)
    try:
        verdict = check("code", block(_connect_program("AF_UNIX", address)), TESTS)
    finally:
        server.close()
    assert verdict.correct is True, verdict.reason
    assert server.accepted == 0


@requires_sandbox
def test_a_tcp_connection_reaches_no_host_service():
    server = _Listener(socket.AF_INET, ("127.0.0.1", 0))
    port = server.sock.getsockname()[1]
    try:
        verdict = check("code", block(_connect_program("AF_INET", ("127.0.0.1", port))), TESTS)
    finally:
        server.close()
    assert verdict.correct is True, verdict.reason
    assert server.accepted == 0


# ---------------------------------------------------------------------------- the grade


EXITS = {
    "os._exit(0)": "import os\nos._exit(0)\n",
    "raise SystemExit(0)": "raise SystemExit(0)\n",
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "exit() inside the tested function": "def add(a, b):\n    raise SystemExit(0)\n",
    "os._exit(0) inside the tested function": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "kill the harness": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "print a success line": "print('tests passed'); import sys; sys.stdout.flush(); import os; os._exit(0)\n",
    "a forked copy passes, the parent exits": (
        "import os\nif os.fork() == 0:\n    def add(a, b):\n        return a + b\n"
        "else:\n    os.wait()\n    os._exit(0)\n"
    ),
}


@requires_sandbox
@pytest.mark.parametrize("exit_code", EXITS.values(), ids=EXITS.keys())
def test_wrong_code_that_exits_early_is_not_correct(exit_code):
    verdict = check("code", block(WRONG + exit_code), TESTS)
    assert verdict.correct is False, verdict.reason


@requires_sandbox
def test_the_nonce_is_in_nothing_the_program_can_read(interpreter, monkeypatch):
    """No file, fd (its own or another process's), argument or environment variable holds the nonce."""
    from seqdistill.checks import code

    nonce = uuid.uuid4().hex
    monkeypatch.setattr(code.secrets, "token_hex", lambda n: nonce)
    program = (
        "import os, sys, glob\n"
        f"nonce = {nonce[:16]!r} + {nonce[16:]!r}\n"
        "seen = {'argv': ' '.join(sys.argv), 'environ': repr(dict(os.environ))}\n"
        "for pattern in ['/proc/*/fd/*', '/proc/*/task/*/fd/*', '/proc/*/cmdline', '/proc/*/environ', '/tmp/*']:\n"
        "    for path in glob.glob(pattern):\n"
        "        try:\n"
        "            with open(path, 'rb') as f:\n"
        "                seen[path] = f.read(1 << 20).decode(errors='replace')\n"
        "        except OSError:\n"
        "            pass\n"
        "leaks = [where for where, text in seen.items() if nonce in text]\n"
        "raise AssertionError(f'leaks={leaks} read={len(seen)}')\n"
    )
    verdict = check("code", block(program), TESTS)
    assert "AssertionError: leaks=[] read=" in verdict.reason, verdict.reason
    assert int(verdict.reason.rsplit("read=", 1)[1]) > 5  # it did read: its own fds, cmdlines, ...


@requires_sandbox
def test_a_failing_test_gives_one_short_clean_line():
    noisy = "def add(a, b):\n    raise ValueError('\\x1b[31mred\\x1b[0m\\n' + 'x' * 5000 + '\\r\\n\\u202eevil')\n"
    verdict = check("code", block(noisy), TESTS)
    assert verdict.correct is False
    assert verdict.reason.startswith("tests failed: tests.py line 1 `assert add(2, 3) == 5`: ValueError")
    assert len(verdict.reason) <= 200 and verdict.reason.isprintable() and "\x1b" not in verdict.reason


# ---------------------------------------------------------------------------- limits


@requires_sandbox
@pytest.mark.parametrize(
    ("program", "reason"),
    [
        ("import os\nwhile True:\n    os.fork()\n", "process limit"),
        ("x = bytearray(8 << 30)\n", "memory limit"),
        ("import sys\nwhile True:\n    sys.stdout.write('x' * (1 << 20))\n", "file size limit"),
        ("open('/tmp/big', 'wb').write(bytes(64 << 20))\n", "file size limit"),
        ("import threading, time\nts = [threading.Thread(target=time.sleep, args=(5,)) for _ in range(64)]\n"
         "[t.start() for t in ts]\n", "process limit"),
    ],
    ids=["fork-bomb", "memory", "huge-output", "huge-file", "thread-bomb"],
)  # fmt: skip
def test_a_limit_ends_the_program_as_wrong(program, reason):
    start = time.monotonic()
    verdict = check("code", block(program + GOOD), TESTS)
    assert verdict.correct is False and reason in verdict.reason, verdict.reason
    assert time.monotonic() - start < 30  # a budget, not a speed target: the wall limit is 4 s


@requires_sandbox
def test_an_infinite_loop_ends_at_the_cpu_limit(interpreter, short_limits):
    short_limits(cpu_seconds=1, wall_seconds=60)
    verdict = check("code", block("while True:\n    pass\n"), TESTS)
    assert verdict.correct is False and verdict.reason == "CPU time limit (1s) exceeded"


@requires_sandbox
def test_a_sleeping_program_ends_at_the_wall_clock_limit(short_limits):
    short_limits(wall_seconds=1.0)
    verdict = check("code", block("import time\ntime.sleep(60)\n"), TESTS)
    assert verdict.correct is False and verdict.reason == "time limit (1s) exceeded"


@requires_sandbox
def test_honest_programs_still_pass():
    """Threads, a subprocess, a temp file, /dev/null, the venv's packages: the sandbox takes none of these away."""
    program = (
        "import concurrent.futures, subprocess, tempfile, os, json\n"
        "with concurrent.futures.ThreadPoolExecutor(4) as pool:\n"
        "    assert list(pool.map(abs, [-1, -2])) == [1, 2]\n"
        "assert subprocess.run(['true']).returncode == 0\n"
        "with tempfile.NamedTemporaryFile('w') as f:\n"
        "    f.write('x')\n"
        "open(os.devnull, 'w').write('x')\n"
        "import pydantic\n" + GOOD
    )
    verdict = check("code", block(program), TESTS)
    assert verdict[:3] == (True, "tests passed", program + "\n")


# ---------------------------------------------------------------------------- no sandbox


def test_without_bwrap_the_code_check_refuses_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQDISTILL_BWRAP", str(tmp_path / "no-such-bwrap"))
    with pytest.raises(ConfigError) as err:
        get_check("code")
    message = str(err.value)
    assert "\n" not in message and "apt-get install bubblewrap" in message and "unsafe_code_check" in message


def test_a_bwrap_that_cannot_make_namespaces_is_refused_too(tmp_path, monkeypatch):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SEQDISTILL_BWRAP", str(fake))
    with pytest.raises(ConfigError, match="No permissions to create new namespace"):
        get_check("code")


def test_the_filter_refuses_before_writing_anything(tmp_path, monkeypatch):
    from seqdistill.config import FilterConfig
    from seqdistill.stages import filter as filter_stage
    from tests.conftest import write_jsonl

    monkeypatch.setenv("SEQDISTILL_BWRAP", str(tmp_path / "no-such-bwrap"))
    src = write_jsonl(tmp_path / "s.jsonl", [_sample("a", block(GOOD))])
    with pytest.raises(ConfigError, match="bubblewrap"):
        filter_stage.run(FilterConfig(input=str(src), output=str(tmp_path / "k.jsonl"), check="code"))
    assert not (tmp_path / "k.jsonl").exists()


def test_unsafe_code_check_runs_without_bwrap_and_says_so_once(tmp_path, monkeypatch, caplog):
    from seqdistill.checks import code
    from seqdistill.config import FilterConfig
    from seqdistill.stages import filter as filter_stage
    from tests.conftest import read_jsonl, write_jsonl

    monkeypatch.setenv("SEQDISTILL_BWRAP", str(tmp_path / "no-such-bwrap"))
    monkeypatch.setattr(code, "_warned", False)
    rows = [
        _sample("good", block(GOOD)),
        _sample("wrong", block(WRONG)),
        _sample("exits", block(WRONG + "import os\nos._exit(0)\n")),
    ]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    cfg = FilterConfig(
        input=str(src), output=str(tmp_path / "k.jsonl"), check="code", unsafe_code_check=True, dedup=False
    )
    with caplog.at_level("WARNING", logger="seqdistill.checks.code"):
        report = filter_stage.run(cfg)
    assert [r["id"] for r in read_jsonl(tmp_path / "k.jsonl")] == ["good"]
    assert report["answer_check"] == {"name": "code", "correct": 1, "wrong": 2}
    warnings = [r for r in caplog.records if "unsafe_code_check" in r.getMessage()]
    assert len(warnings) == 1


@requires_sandbox
def test_the_sandbox_reports_what_happened():
    from seqdistill.checks import sandbox

    script = "import os, sys\nprint('x' * 10000)\nos.write(int(sys.argv[1]), os.read(0, 100))\nsys.exit(3)\n"
    result = sandbox.run_python(script, stdin=b"ping", limits=sandbox.Limits(output_bytes=100))
    assert (result.outcome, result.exit_status, result.limit, result.report) == ("exited", 3, None, b"ping")
    assert result.stdout == "x" * 100 and result.stdout_bytes == 10001
