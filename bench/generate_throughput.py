"""Throughput of `seqdistill generate` (openai backend, ledger on) against a bare asyncio + aiohttp client.

    .venv/bin/python bench/generate_throughput.py [--requests 3000] [--concurrency 256] [--repeats 1]
        [--src DIR] [--sdk] [--profile]

Starts `bench/instant_server.py` on 127.0.0.1 in a subprocess pinned to one core and pins this process
(the client: seqdistill's event-loop thread and its writer, or the bare client) to another. Then, in one
run, sends `--requests` requests at `--concurrency` through:

- seqdistill: `seqdistill.stages.generate.run(cfg)` in this process, n=1, one distinct question per
  prompt, a fresh output file (the ledger, appended and made durable as seqdistill does) in `--workdir`.
  When `GenerateConfig` has an `http_client` field, once per transport ("httpx", "aiohttp").
- bare: one `aiohttp.ClientSession`, `--concurrency` worker coroutines posting the same request bodies
  and parsing the answers; nothing written.
- with `--sdk`: the openai SDK's `AsyncOpenAI` alone (same workers, no seqdistill), with its default
  httpx transport and with `openai.DefaultAioHttpClient()`: what any design built on the SDK can reach.

Prints requests/s (wall) and client CPU ms per request (`time.process_time()`, all threads of this
process) for each, and seqdistill/bare. `--profile` runs seqdistill once more per transport under
cProfile (every thread) and prints the functions that dominate its CPU, with calls per request.
`--src DIR` benches the `seqdistill` package in
DIR (e.g. an export of a commit) instead of the one installed in the venv. Not a test; not run by CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import json
import logging
import os
import platform
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODEL = "bench"


# --- server -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    port: int, core: int | None, out: Path, delay: float = 0.0, log: Path | None = None
) -> subprocess.Popen:
    """The instant server in a subprocess (pinned to `core`), returned once it answers /health.

    Its stdout and stderr go to the file `out`, never to a pipe: a pipe nobody reads fills up (aiohttp
    logs a traceback per connection a killed client drops) and then blocks the server.
    """
    args = [sys.executable, str(HERE / "instant_server.py"), "--port", str(port), "--delay", str(delay)]
    if log is not None:
        args += ["--log", str(log)]

    def pin() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})

    with out.open("w") as f:
        proc = subprocess.Popen(args, preexec_fn=pin, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    proc.out = out  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"instant server exited ({proc.returncode}): {out.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError("instant server did not come up within 20 s")
        time.sleep(0.05)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid`, all its threads."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_server(proc: subprocess.Popen) -> str:
    """Stop the server; return what it printed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = getattr(proc, "out", None)
    return out.read_text(errors="replace") if out is not None and out.exists() else ""


# --- workload -----------------------------------------------------------------------------------------


def question(i: int) -> str:
    return f"What is {i} + {3 * i + 7}? Put the final answer in \\boxed{{}}."


def write_prompts(path: Path, count: int, offset: int = 0) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(offset, offset + count):
            f.write(json.dumps({"id": f"p{i}", "question": question(i)}) + "\n")


def request_bodies(count: int, offset: int = 0) -> list[dict]:
    """What seqdistill sends for these prompts with the default sampling settings (n=1)."""
    from seqdistill.config import SamplingConfig

    s = SamplingConfig()
    return [
        {
            "messages": [{"role": "user", "content": question(i)}],
            "model": MODEL,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        for i in range(offset, offset + count)
    ]


# --- the two clients ----------------------------------------------------------------------------------


def run_seqdistill(base_url: str, workdir: Path, count: int, concurrency: int, tag: str, transport: str | None):
    """generate.run over `count` fresh prompts; returns (wall s, cpu s, samples written)."""
    from seqdistill.config import GenerateConfig, PromptsConfig
    from seqdistill.stages import generate

    prompts = workdir / f"prompts-{tag}.jsonl"
    output = workdir / f"samples-{tag}.jsonl"
    write_prompts(prompts, count)
    output.unlink(missing_ok=True)
    fields = {
        "backend": "openai",
        "model": MODEL,
        "base_url": base_url,
        "prompts": PromptsConfig(source=str(prompts)),
        "output": str(output),
        "n": 1,
        "concurrency": concurrency,
    }
    if transport is not None:
        fields["http_client"] = transport
    cfg = GenerateConfig(**fields)
    c0, t0 = time.process_time(), time.perf_counter()
    summary = generate.run(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    lines = output.read_text(encoding="utf-8").count("\n")
    if summary.get("generated") != count or lines != count:
        raise RuntimeError(f"seqdistill wrote {lines} lines, summary {summary}, expected {count}")
    output.unlink()
    return wall, cpu, lines


async def _bare(url: str, bodies: list[dict], concurrency: int) -> int:
    import aiohttp

    headers = {"Content-Type": "application/json", "Authorization": "Bearer EMPTY"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    ok = 0
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        pending = iter(bodies)

        async def worker() -> None:
            nonlocal ok
            for body in pending:
                async with session.post(url, data=json.dumps(body).encode()) as resp:
                    data = json.loads(await resp.read())
                if resp.status == 200 and data["choices"][0]["message"]["content"]:
                    ok += 1

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))
    return ok


def run_bare(base_url: str, count: int, concurrency: int):
    bodies = request_bodies(count)
    c0, t0 = time.process_time(), time.perf_counter()
    ok = asyncio.run(_bare(base_url + "/chat/completions", bodies, concurrency))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if ok != count:
        raise RuntimeError(f"bare client: {ok} of {count} requests answered")
    return wall, cpu, ok


async def _sdk(base_url: str, bodies: list[dict], concurrency: int, transport: str) -> int:
    import openai

    extra = {"http_client": openai.DefaultAioHttpClient()} if transport == "aiohttp" else {}
    ok = 0
    async with openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, **extra) as client:
        pending = iter(bodies)

        async def worker() -> None:
            nonlocal ok
            for body in pending:
                resp = await client.chat.completions.create(**body)
                ok += bool(resp.choices[0].message.content)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))
    return ok


def run_sdk(base_url: str, count: int, concurrency: int, transport: str):
    """The openai SDK's async client alone, as the bare client uses aiohttp: the floor under any SDK-based design."""
    bodies = request_bodies(count)
    c0, t0 = time.process_time(), time.perf_counter()
    ok = asyncio.run(_sdk(base_url, bodies, concurrency, transport))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if ok != count:
        raise RuntimeError(f"openai SDK client: {ok} of {count} requests answered")
    return wall, cpu, ok


# --- checks and profile -------------------------------------------------------------------------------


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_logger: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.name}:{record.levelname}"
        self.by_logger[key] = self.by_logger.get(key, 0) + 1


def set_logging(level: int) -> _Count:
    """The CLI's setup (seqdistill at `level`, HTTP libraries at WARNING) with a counting, silent handler."""
    counter = _Count()
    logging.basicConfig(level=level, handlers=[counter], force=True)
    for noisy in ("httpx", "httpx2", "openai", "datasets", "filelock", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return counter


def fsync_cost(workdir: Path, count: int = 300) -> float:
    """Mean seconds of one append + flush + fsync of a ~1 KB line in `workdir` (the ledger's per-sample cost)."""
    path = workdir / "fsync-probe.jsonl"
    line = "x" * 1000 + "\n"
    with path.open("a", encoding="utf-8") as f:
        t0 = time.perf_counter()
        for _ in range(count):
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        mean = (time.perf_counter() - t0) / count
    path.unlink()
    return mean


def filesystem_of(path: Path) -> str:
    best, fstype = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return fstype


IDLE = (  # where idle threads wait: not work
    "<method 'get' of '_queue.SimpleQueue' objects>",
    "<method 'acquire' of '_thread.lock' objects>",
    "<method 'poll' of 'select.epoll' objects>",
    "<built-in method time.sleep>",
)


def profile_seqdistill(base_url: str, workdir: Path, count: int, concurrency: int, transport: str | None, top: int):
    """cProfile one generate run, every thread; print where the non-waiting time goes, per request.

    cProfile sees only the thread that enabled it, so every thread started during the run gets its own
    profiler. Its overhead is per call, so call-heavy code looks heavier than it is; the calls per
    request are exact. (An in-process sampling profiler is no better here: it can only take a sample
    when the busy thread lets go of the GIL, i.e. in system calls. py-spy would be the tool.)
    """
    profiles: list[cProfile.Profile] = []
    original_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        p = cProfile.Profile()
        profiles.append(p)
        p.enable()
        try:
            original_run(self)
        finally:
            p.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    main = cProfile.Profile()
    try:
        main.enable()
        wall, cpu, _ = run_seqdistill(base_url, workdir, count, concurrency, "profile", transport)
        main.disable()
    finally:
        threading.Thread.run = original_run  # type: ignore[method-assign]
    stats = pstats.Stats(main)
    for p in profiles:
        stats.add(p)
    raw = stats.stats  # type: ignore[attr-defined]  # func -> (cc, ncalls, tottime, cumtime, callers)

    def name(key: tuple) -> str:
        filename, line, func = key
        return func if filename == "~" else f"{'/'.join(Path(filename).parts[-2:])}:{line}({func})"

    callees: dict[tuple, dict[tuple, float]] = {}
    for key, (_, _, _, _, callers) in raw.items():
        for caller, edge in callers.items():
            callees.setdefault(caller, {})[key] = edge[3]
    waits: dict[tuple, float] = {}

    def waiting(key: tuple, path: frozenset = frozenset()) -> float:
        """Seconds of `key`'s cumulative time spent in waits, shared out along the call edges."""
        if key in waits:
            return waits[key]
        if name(key) in IDLE:
            return raw[key][2]
        total = 0.0
        for callee, edge_ct in callees.get(key, {}).items():
            if callee not in path and raw[callee][3] > 0:
                total += waiting(callee, path | {key}) * min(1.0, edge_ct / raw[callee][3])
        waits[key] = min(total, raw[key][3])
        return waits[key]

    rows = [(name(k), v[1], v[2], v[3] - waiting(k)) for k, v in raw.items() if name(k) not in IDLE]
    busy = sum(tt for _, _, tt, _ in rows)
    label = transport or "default transport"
    print(f"\n## cProfile of seqdistill ({label}), all threads: {count} requests, {wall:.2f} s wall under profiling")
    print(
        f"CPU {cpu * 1000 / count:.2f} ms/request with profiling overhead; {busy:.2f} s of profiled time outside "
        "waits (queue get, lock acquire, epoll, sleep); shares below are of that"
    )
    print("| self time | calls/request | function |")
    print("|---:|---:|---|")
    for where, ncalls, tottime, _ in sorted(rows, key=lambda r: -r[2])[:top]:
        print(f"| {tottime / busy:.1%} | {ncalls / count:.1f} | {where} |")
    print("\ncumulative (the function and all it calls, waits left out; a coroutine's calls count its resumptions):")
    for where, ncalls, _, cumtime in sorted(rows, key=lambda r: -r[3])[:top]:
        print(f"  {cumtime / busy:6.1%}  {ncalls / count:8.2f}/request  {where}")


# --- main ---------------------------------------------------------------------------------------------


def git_state() -> str:
    """HEAD, and a digest of uncommitted changes under seqdistill/ (figures from a changing tree say which)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        diff = subprocess.run(["git", "diff", "HEAD", "--", "seqdistill"], cwd=REPO, capture_output=True)
    except OSError:
        return "?"
    state = head.stdout.strip() or "?"
    if diff.stdout:
        changed = diff.stdout.count(b"\ndiff --git ") + diff.stdout.startswith(b"diff --git ")
        digest = hashlib.sha1(diff.stdout).hexdigest()[:8]
        state += f" + uncommitted changes to {changed} files under seqdistill/ (diff {digest})"
    return state


def load() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000, help="requests per measured run")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1, help="measured runs per client (interleaved); median shown")
    ap.add_argument("--warmup", type=int, default=300, help="requests per client before measuring")
    ap.add_argument("--server-core", type=int, default=None, help="default: the last CPU this process may use")
    ap.add_argument("--client-core", type=int, default=None, help="default: the first CPU this process may use")
    ap.add_argument("--workdir", default=None, help="where prompts and ledgers go (default: a temp dir)")
    ap.add_argument("--src", default=None, help="directory holding the seqdistill package to bench")
    ap.add_argument(
        "--sdk", action="store_true", help="also measure the openai SDK's async client alone (no seqdistill)"
    )
    ap.add_argument("--profile", action="store_true", help="also cProfile one seqdistill run per transport")
    ap.add_argument("--profile-top", type=int, default=25)
    args = ap.parse_args(argv)

    if args.src:
        sys.path.insert(0, str(Path(args.src).resolve()))
    os.environ["SEQDISTILL_NO_PROGRESS"] = "1"
    os.environ.pop("OPENAI_API_KEY", None)

    cpus = sorted(os.sched_getaffinity(0))
    server_core = args.server_core if args.server_core is not None else cpus[-1]
    client_core = args.client_core if args.client_core is not None else cpus[0]
    if server_core == client_core:
        print(f"warning: only CPU {client_core} available: server and client share it", file=sys.stderr)
    os.sched_setaffinity(0, {client_core})  # before any thread exists: every later thread inherits it

    import aiohttp
    import openai

    import seqdistill
    import seqdistill.backends.openai_compat  # noqa: F401  (imported here, not inside a timed run)
    from seqdistill.config import GenerateConfig

    transports: list[str | None] = [None]
    if "http_client" in GenerateConfig.model_fields:
        # the values this version accepts (older versions: httpx / aiohttp SDK transports)
        transports = list(GenerateConfig.model_fields["http_client"].annotation.__args__)

    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="seqdistill-bench-")) if own_workdir else Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    server = start_server(port, server_core, workdir / "server.out")
    try:
        print("# generate throughput: seqdistill (ledger on) vs a bare aiohttp client")
        print(
            f"python {platform.python_version()}, openai {openai.__version__}, aiohttp {aiohttp.__version__}, "
            f"seqdistill from {Path(seqdistill.__file__).parent}" + ("" if args.src else f" (git {git_state()})")
        )
        print(f"CPUs {cpus}: server pinned to {server_core}, client to {client_core}; load average {load()}")
        print(
            f"requests {args.requests} per run, concurrency {args.concurrency}, n=1, repeats {args.repeats}; "
            f"ledger in {workdir} ({filesystem_of(workdir)}), append+fsync of 1 KB: "
            f"{fsync_cost(workdir) * 1e3:.3f} ms"
        )
        if transports == [None]:
            print("GenerateConfig has no `http_client` field: measuring the openai SDK's default transport only")

        # logging check: seqdistill at INFO, as the CLI sets it up; count what a run emits
        counter = set_logging(logging.INFO)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for t in transports:
                run_seqdistill(base_url, workdir, args.warmup, args.concurrency, f"warm-{t}", t)
        emitted = sum(counter.by_logger.values())
        print(
            f"logging check ({args.warmup} requests per transport, seqdistill at INFO, HTTP libraries at WARNING "
            f"as the CLI sets them): {emitted} log records {counter.by_logger or ''}, {len(caught)} Python warnings"
        )
        set_logging(logging.WARNING)
        run_bare(base_url, args.warmup, args.concurrency)
        if args.sdk:
            for t in ("httpx", "aiohttp"):
                run_sdk(base_url, args.warmup, args.concurrency, t)

        results: dict[str, list[tuple[float, float, float]]] = {}

        def measure(name: str, fn, *fn_args) -> None:
            s0 = process_cpu(server.pid)
            wall, cpu, _ = fn(*fn_args)
            results.setdefault(name, []).append((wall, cpu, process_cpu(server.pid) - s0))

        for r in range(args.repeats):
            for t in transports:
                name = "seqdistill" + (f" ({t})" if t else "")
                measure(name, run_seqdistill, base_url, workdir, args.requests, args.concurrency, f"run{r}-{t}", t)
            if args.sdk:
                for t in ("httpx", "aiohttp"):
                    measure(f"openai SDK alone ({t})", run_sdk, base_url, args.requests, args.concurrency, t)
            measure("bare aiohttp", run_bare, base_url, args.requests, args.concurrency)

        def med(name: str) -> tuple[float, float, float]:
            rows, n = results[name], args.requests
            return (
                statistics.median(n / w for w, _, _ in rows),
                statistics.median(c * 1000 / n for _, c, _ in rows),
                statistics.median(sc / w for w, _, sc in rows),
            )

        bare_rps, bare_cpu, _ = med("bare aiohttp")
        print()
        print("| client | requests/s | client CPU ms/request | vs bare | server core busy | runs (requests/s) |")
        print("|---|---:|---:|---:|---:|---|")
        for name in results:
            rps, cpu_ms, busy = med(name)
            runs = ", ".join(f"{args.requests / w:.0f}" for w, _, _ in results[name])
            print(f"| {name} | {rps:.0f} | {cpu_ms:.3f} | {rps / bare_rps:.2f}x | {busy:.0%} | {runs} |")
        print()
        for name in results:
            if name.startswith("seqdistill"):
                rps, cpu_ms, _ = med(name)
                print(
                    f"ratio {name} / bare: {rps / bare_rps:.2f} (requests/s); "
                    f"{cpu_ms / bare_cpu:.1f}x the client CPU per request"
                )
        print(
            "(server core busy: the instant server's CPU time / wall time of the run; near 100% means the "
            "server, not the client, set the pace)"
        )

        if args.profile:
            for t in transports:
                profile_seqdistill(base_url, workdir, args.requests, args.concurrency, t, args.profile_top)
    finally:
        tail = stop_server(server)
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average at the end {load()} (other work on these CPUs skews the figures)")
    print(tail.strip().splitlines()[-1] if tail.strip() else "")


if __name__ == "__main__":
    main()
