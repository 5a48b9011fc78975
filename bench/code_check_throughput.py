"""Code check throughput: checks/s of `check: code` on a small passing program, and where the time goes.

    .venv/bin/python bench/code_check_throughput.py [--checks 200] [--workers 0 2] [--src DIR] [--breakdown]

Each worker count runs in a fresh subprocess (``PYTHONPATH=--src``, default this checkout) that pushes
``--checks`` identical (completion, tests) pairs through ``CheckPool("code", workers)`` and prints checks/s
and the share that passed (all must pass). ``--breakdown`` also times, one after another, the parts of one
check: bwrap starting ``/usr/bin/true``, and the interpreter starting with and without ``site``.
To compare with another version: ``git archive COMMIT seqdistill | tar -x -C /tmp/old`` and ``--src /tmp/old``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPLETION = "Solution:\n```python\ndef add(a, b):\n    return a + b\n```\n"
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"

_CHILD = r"""
import json, sys, time
from seqdistill.checks.pool import CheckPool
n, workers, completion, tests = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    from seqdistill.checks import sandbox
    mode = sandbox.mode().name
except Exception as e:  # an older version without the sandbox
    mode = f"none ({type(e).__name__})"
with CheckPool("code", workers=workers, timeout=30) as pool:
    list(pool.map([(completion, tests)] * min(n, 4)))  # warm up (and probe) before timing
    start = time.perf_counter()
    verdicts = list(pool.map([(completion, tests)] * n))
    seconds = time.perf_counter() - start
print(json.dumps({"mode": mode, "seconds": seconds, "passed": sum(v.correct is True for v in verdicts)}))
"""


def run(src: Path, checks: int, workers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(checks), str(workers), COMPLETION, TESTS],
        env=env, capture_output=True, text=True, check=True, cwd=src,  # cwd: `-c` puts it first on sys.path
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def per_call_ms(cmd: list[str], n: int = 30) -> float:
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) / n * 1000


def breakdown() -> None:
    bwrap = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib64"):
        bwrap += ["--symlink", os.readlink(top), top] if os.path.islink(top) else ["--ro-bind", top, top]
    rows = [
        ("bwrap --unshare-all, /usr/bin/true", [*bwrap, "--", "/usr/bin/true"]),
        ("python -I -c pass (site on)", [sys.executable, "-I", "-c", "pass"]),
        ("python -I -S -c pass (site off)", [sys.executable, "-I", "-S", "-c", "pass"]),
    ]
    for label, cmd in rows:
        print(f"  {label:40s} {per_call_ms(cmd):6.1f} ms per start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--src", type=Path, default=REPO)
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    print(f"code check on {args.src} ({os.cpu_count()} cores), {args.checks} checks of a passing program")
    for workers in args.workers:
        r = run(args.src, args.checks, workers)
        rate = args.checks / r["seconds"]
        print(
            f"  workers={workers}: {rate:6.1f} checks/s ({1000 / rate:5.1f} ms each), "
            f"{r['passed']}/{args.checks} passed, sandbox: {r['mode']}"
        )
    if args.breakdown:
        breakdown()


if __name__ == "__main__":
    main()
