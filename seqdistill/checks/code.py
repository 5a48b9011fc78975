"""The `code` check: run the completion's last fenced code block, then the prompt's tests, in a subprocess.

`reference` holds the tests (Python: asserts, or calls that raise on failure). The program is the code
block followed by the tests, run with `python -I` in a fresh temporary directory with a CPU-time limit,
an address-space limit and no network: a new network namespace where the kernel allows it (as root),
otherwise a guard that makes every socket creation fail. Exit status 0 passes, anything else fails
(the reason is the last line of stderr, or the limit that was hit). Not a security sandbox for hostile
code: it keeps honest mistakes (infinite loops, memory blow-ups, stray downloads) from hurting the run.

>>> check_code("```python\\ndef add(a, b):\\n    return a + b\\n```", "assert add(2, 3) == 5").correct
True
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from seqdistill.checks.answers import Verdict

TIME_LIMIT = 3.0  # seconds of CPU; wall time is capped 1 s later (under the filter's default check_timeout)
MEMORY_LIMIT = 1024 * 1024 * 1024  # bytes of address space
_BLOCK = re.compile(r"```[ \t]*(?:python|py|python3)?[^\n]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_NO_NETWORK = (
    "import socket as _s\n"
    "def _refuse(*a, **k):\n"
    "    raise OSError('network access is disabled in the code check')\n"
    "_s.socket = _refuse; _s.create_connection = _refuse; _s.getaddrinfo = _refuse\n"
    "del _s, _refuse\n"
)


def last_code_block(text: str) -> str | None:
    """The last fenced code block (```python … ``` or a bare ``` … ```), or None."""
    blocks = _BLOCK.findall(text)
    return blocks[-1] if blocks else None


def _limits() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_CPU, (int(TIME_LIMIT) + 1, int(TIME_LIMIT) + 1))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    try:  # a private network namespace: no interfaces but loopback-down, so nothing is reachable
        ctypes.CDLL(None, use_errno=True).unshare(0x40000000)  # CLONE_NEWNET
    except Exception:  # noqa: BLE001 (not permitted here: the socket guard in the program still applies)
        pass
    os.setsid()


def check_code(completion: str, reference: str) -> Verdict:
    """Pass (True) when the last code block plus the tests in `reference` run to exit 0 within the limits."""
    code = last_code_block(completion)
    if code is None:
        return Verdict(None, "no fenced code block in the completion", None)
    program = _NO_NETWORK + "\n" + code + "\n\n" + reference + "\n"
    with tempfile.TemporaryDirectory(prefix="seqdistill-code-") as tmp:
        path = Path(tmp) / "solution.py"
        path.write_text(program, encoding="utf-8")
        try:
            proc = subprocess.run(
                [sys.executable, "-I", str(path)], cwd=tmp, capture_output=True, text=True,
                timeout=TIME_LIMIT + 1, preexec_fn=_limits, stdin=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"},
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return Verdict(False, f"time limit ({TIME_LIMIT:g}s) exceeded", code)
    if proc.returncode == 0:
        return Verdict(True, "tests passed", code)
    if proc.returncode < 0:
        return Verdict(False, f"killed by signal {-proc.returncode} (time or memory limit)", code)
    last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return Verdict(False, f"tests failed: {last[:200]}", code)
