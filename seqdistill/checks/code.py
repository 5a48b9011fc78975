"""The `code` check: run the completion's last fenced code block, then the prompt's tests, in a sandbox.

`reference` holds the tests: Python statements that raise when the code is wrong (asserts, or calls that
raise). The program runs inside bubblewrap (``checks/sandbox.py``: no network, no host files or
environment, CPU / memory / process / file-size / wall-clock limits, every process it started killed at
the end).

Pass or fail is decided by the tests' own outcome, never by the exit status: a harness reads a random
per-check nonce from its stdin, closes stdin, runs the code block and then the tests in a fresh namespace,
and reports ``passed=<nonce>`` on its report fd only after the last test statement ran, from its own process.
So ``os._exit(0)``, ``sys.exit(0)`` / ``raise SystemExit(0)`` anywhere, a killed harness, a forked child
that runs on, or a printed "tests passed" all grade as wrong. Reasons are one sanitised line of at most
``REASON_CHARS`` characters.

Limits: the harness and the program share one interpreter, so a program that searches the interpreter's
memory on purpose (frames, ``gc``, ``ctypes``) could find the nonce and forge a pass; it still cannot leave
the sandbox. Tests written with ``unittest.main()`` exit the program and so always fail: write plain
statements. A test that only compares with ``==`` can be fooled by an object whose ``__eq__`` is always
true; that is a property of the tests, not of the check.

>>> check_code("```python\\ndef add(a, b):\\n    return a + b\\n```", "assert add(2, 3) == 5")  # doctest: +SKIP
Verdict(correct=True, reason='tests passed', answer='def add(a, b):\\n    return a + b\\n')

(Skipped as a doctest: it needs bwrap; tests/test_check_code.py runs it where bwrap works.)
"""

from __future__ import annotations

import ast
import logging
import re
import secrets
import unicodedata
from collections.abc import Callable
from functools import partial

from seqdistill.checks import sandbox
from seqdistill.checks.answers.base import Verdict
from seqdistill.errors import ConfigError

log = logging.getLogger(__name__)

LIMITS = sandbox.Limits()  # cpu 3 s, wall 4 s, 1 GiB per process, 16 processes, 8 MiB files (see Limits)
REASON_CHARS = 200
_warned = False  # the unsafe_code_check warning, once per process
_BLOCK = re.compile(r"```[ \t]*(?:python|py|python3)?[^\n]*\n(.*?)```", re.DOTALL | re.IGNORECASE)

# Runs inside the sandbox (after sandbox._BOOT). Everything it needs is taken before the program runs, and
# it reports from its own pid only: a forked copy of it that finishes the tests stays silent.
_HARNESS = r"""
def _seqdistill_harness():
    import builtins, os, sys
    fd, me = int(sys.argv[1]), os.getpid()
    pwrite, ftruncate, getpid, exit_ = os.pwrite, os.ftruncate, os.getpid, os._exit
    chunks = []
    while chunk := os.read(0, 1 << 20):
        chunks.append(chunk)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    nonce, size, rest = b"".join(chunks).split(b"\n", 2)  # the job: nonce, len(solution), solution + tests
    del chunks
    job = {"solution": rest[: int(size)].decode("utf-8", "surrogatepass"), "tests": rest[int(size) :].decode()}

    def report(**fields):
        if getpid() == me:
            ftruncate(fd, 0)
            pwrite(fd, repr(fields).encode("utf-8", "backslashreplace"), 0)

    def describe(stage, source, e):
        name, line = type(e).__name__[:100], None
        try:
            message = e.msg if isinstance(e, SyntaxError) else str(e)
        except BaseException:
            message = ""
        if isinstance(e, SyntaxError) and e.filename == stage + ".py":
            line = e.lineno
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == stage + ".py":
                line = tb.tb_lineno
            tb = tb.tb_next
        lines = source.splitlines()
        code = lines[line - 1].strip() if isinstance(line, int) and 0 < line <= len(lines) else ""
        errno = getattr(e, "errno", None)
        return dict(stage=stage, error=name, errno=errno if type(errno) is int else None,
                    message=f"{name}: {message}"[:500] if message else name, line=line, code=code[:200])

    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for stage in ("solution", "tests"):
        source = job[stage]
        try:
            exec(compile(source, stage + ".py", "exec"), namespace)
        except SystemExit as e:
            report(stage=stage, error="SystemExit", message=f"exit({str(e.code)[:50]}) before the tests finished")
            exit_(1)
        except BaseException as e:
            report(**describe(stage, source, e))
            exit_(1)
    report(passed=nonce.decode())
    exit_(0)


_seqdistill_harness()
"""


def last_code_block(text: str) -> str | None:
    """The last fenced code block (```python … ``` or a bare ``` … ```), or None."""
    blocks = _BLOCK.findall(text)
    return blocks[-1] if blocks else None


def code_checker(unsafe: bool = False) -> Callable[[str, str], Verdict]:
    """The program runner behind the `code` check: ``check_code`` in the sandbox, probed once per process.

    The `code` check's options (`answers/code.py`) call it up front, before any sample is read.

    Without a working sandbox: a ConfigError saying how to install one, unless ``unsafe`` (the config's
    ``unsafe_code_check``), which runs programs in plain subprocesses and logs a warning once per process.
    """
    global _warned
    problem = sandbox.available()
    if problem is None:
        return check_code
    if not unsafe:
        raise ConfigError(
            f"check 'code' runs teacher code in a bubblewrap sandbox, which does not work here ({problem}): "
            f"{sandbox.INSTALL_HINT}, or set unsafe_code_check: true to run it unsandboxed"
        )
    if not _warned:
        _warned = True
        log.warning(
            "unsafe_code_check: no sandbox (%s); teacher code runs as you, with your files and network", problem
        )
    return partial(check_code, unsafe=True)


def check_code(completion: str, reference: str, *, unsafe: bool = False) -> Verdict:
    """Pass (True) when every statement of the tests in `reference` ran after the last code block, in the sandbox.

    ``unsafe=True`` runs the program in a plain subprocess instead (``unsafe_code_check``: for hosts with no
    sandbox; the program then sees the host). Raises ``sandbox.SandboxUnavailable`` when there is no sandbox
    and ``unsafe`` is False (the `code` check's options say so up front, as a ConfigError).
    """
    code = last_code_block(completion)
    if code is None:
        return Verdict(None, "no fenced code block in the completion", None)
    nonce = secrets.token_hex(16)
    solution = code.encode("utf-8", "surrogatepass")
    job = b"%s\n%d\n%s%s" % (nonce.encode(), len(solution), solution, reference.encode("utf-8", "replace"))
    run = sandbox.run_python_unsandboxed if unsafe else sandbox.run_python
    return verdict(run(_HARNESS, job, LIMITS), nonce, code)


def verdict(result: sandbox.SandboxResult, nonce: str, code: str) -> Verdict:
    """Grade one sandboxed run: correct only when the harness reported this run's nonce."""
    report = _report(result.report)
    if report.get("passed") == nonce:
        return Verdict(True, "tests passed", code)
    if result.outcome == "not_started":  # the program never ran: no grade (and nothing it could influence)
        return Verdict(None, clean_reason(f"sandbox did not start: {result.detail}"), code)
    if result.outcome == "timeout":
        return Verdict(False, f"time limit ({LIMITS.wall_seconds:g}s) exceeded", code)
    if result.limit == "cpu time":
        return Verdict(False, f"CPU time limit ({LIMITS.cpu_seconds}s) exceeded", code)
    if report.get("stage") in ("solution", "tests"):
        return Verdict(False, clean_reason(_failure(report)), code)
    if result.outcome == "killed":
        return Verdict(False, f"killed by signal {result.exit_status} before the tests finished", code)
    return Verdict(False, f"the program ended (exit status {result.exit_status}) before the tests finished", code)


def _report(raw: bytes) -> dict:
    """The harness's report: a dict literal (``repr``: no json import in the sandbox). Untrusted: the program
    may have written anything there, so only a dict of plain values counts."""
    try:
        report = ast.literal_eval(raw.decode("utf-8"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        return {}
    return report if isinstance(report, dict) else {}


_LIMIT_HINTS = {  # what a failure means when it is one of the sandbox's limits
    "MemoryError": "memory limit",
    27: "file size limit",  # EFBIG
    11: "process limit",  # EAGAIN from fork / thread start
}


def _failure(report: dict) -> str:
    """'tests failed: tests.py line 2 `assert f(1) == 2`: AssertionError' from the harness's report."""
    where = f"{report['stage']}.py"
    if isinstance(report.get("line"), int):
        where += f" line {report['line']}"
        if report.get("code"):
            where += f" `{_clip(str(report['code']), 60)}`"
    message = str(report.get("message") or report.get("error"))
    keys = [k for k in (report.get("error"), report.get("errno")) if isinstance(k, (str, int))]
    hint = next((_LIMIT_HINTS[k] for k in keys if k in _LIMIT_HINTS), None)
    if "can't start new thread" in message:
        hint = _LIMIT_HINTS[11]
    stage = "tests" if report["stage"] == "tests" else "solution"
    return f"{stage} failed: {where}: {message}" + (f" ({hint})" if hint else "")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def clean_reason(text: str) -> str:
    """One printable line of at most REASON_CHARS characters: control and format characters become spaces.

    >>> clean_reason("line one\\n\\x1b[31mred\\x1b[0m\\tend")
    'line one [31mred [0m end'
    """
    text = "".join(" " if unicodedata.category(ch)[0] in "CZ" and ch != " " else ch for ch in str(text))
    text = " ".join(text.split())
    return _clip(text, REASON_CHARS)
