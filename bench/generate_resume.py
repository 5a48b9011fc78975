"""Kill `seqdistill generate` with SIGKILL at random points, resume it, and count what was paid for twice.

    .venv/bin/python bench/generate_resume.py [--prompts 2000] [--rounds 5] [--seed 0] [--delay 0.005]
        [--concurrency 64] [--n 1] [--src DIR]

Starts `bench/instant_server.py` on 127.0.0.1 with a per-request `--delay` (so requests are in flight
when the kill lands) and a request log. Runs `python -m seqdistill generate --backend openai` over
`--prompts` distinct questions as a subprocess; in each of `--rounds` rounds it picks (seeded RNG) a
random number of new samples to let through, SIGKILLs the process once the output has that many more
complete lines (plus a random 0-20 ms), and starts it again; after the last kill the run is left to
finish, and must exit 0.

Then it checks the output: every (prompt, sample index) present exactly once, every line a valid JSON
record, ids unique. Against the server's log (server clock = this machine's clock) it reports, per
kill: requests answered before the kill (the server had written the answer), requests in flight at
the kill (received, answer not yet written), requests cut before their body arrived, complete lines
in the output after the kill, and duplicates: answered before the kill and sent again by a later run,
i.e. paid for twice. An answer the server has written may still sit unread in the client's socket, or
in its queue to the writer, when the kill lands: those are the duplicates. In-flight requests are sent
again too, but were never delivered (a real server would have stopped or finished them: partly paid).
Not a test; not run by CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_throughput import (  # noqa: E402
    MODEL,
    free_port,
    git_state,
    question,
    start_server,
    stop_server,
    write_prompts,
)


class LineCounter:
    """Complete lines in a growing file, read incrementally."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.lines = 0

    def reset(self) -> None:
        """Recount from scratch (the file may have been cut by a repair since)."""
        self.offset = self.lines = 0
        self.poll()

    def poll(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.lines
        end = data.rfind(b"\n") + 1  # only complete lines count; a partial tail is read again next time
        self.lines += data.count(b"\n", 0, end)
        self.offset += end
        return self.lines


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def spawn(args: list[str], env: dict[str, str], cwd: Path, k: int) -> tuple[subprocess.Popen, Path]:
    err = cwd / f"round{k}.stderr"
    with open(cwd / f"round{k}.stdout", "w") as out, open(err, "w") as errf:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=errf)
    return proc, err


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5, help="number of SIGKILLs before the run may finish")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.005, help="server seconds per request")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--round-timeout", type=float, default=120.0, help="seconds one generate run may take")
    ap.add_argument("--src", default=None, help="directory holding the seqdistill package to run")
    ap.add_argument("--workdir", default=None, help="default: a temp dir, removed at the end")
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="seqdistill-resume-")) if own_workdir else Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    prompts, output, log = workdir / "prompts.jsonl", workdir / "samples.jsonl", workdir / "server.log.jsonl"
    for p in (output, log):
        p.unlink(missing_ok=True)
    write_prompts(prompts, args.prompts)
    total = args.prompts * args.n

    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SEQDISTILL_DEBUG")}
    env.update(SEQDISTILL_NO_PROGRESS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    cmd = [
        sys.executable, "-m", "seqdistill", "generate", "--backend", "openai", "--model", MODEL,
        "--base-url", base_url, "--prompts", str(prompts), "--output", str(output),
        "--n", str(args.n), "--concurrency", str(args.concurrency),
    ]  # fmt: skip

    server = start_server(port, None, workdir / "server.out", delay=args.delay, log=log)
    rounds: list[dict] = []  # one per generate process
    procs: list[subprocess.Popen] = []
    counter = LineCounter(output)
    try:
        print("# generate resume under SIGKILL")
        print(
            f"{args.prompts} prompts x n={args.n} = {total} samples, concurrency {args.concurrency}, "
            f"server delay {args.delay * 1000:g} ms, {args.rounds} kills, seed {args.seed}"
        )
        print("command: " + " ".join(cmd[1:]))
        print(f"seqdistill from {args.src}" if args.src else f"seqdistill from the repo (git {git_state()})")
        k = 0
        while True:
            counter.reset()
            before = counter.lines
            remaining = total - before
            kill = k < args.rounds and remaining > 1
            target = before + rng.randint(1, max(1, min(remaining - 1, 2 * remaining // (args.rounds - k + 1))))
            jitter = rng.uniform(0, 0.02)
            t_start = time.time()
            proc, err = spawn(cmd, env, workdir, k)
            procs.append(proc)
            deadline = time.monotonic() + args.round_timeout
            t_kill = None
            while proc.poll() is None:
                if time.monotonic() > deadline:  # hung: SIGABRT makes faulthandler print every thread's stack
                    proc.send_signal(signal.SIGABRT)
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    raise RuntimeError(
                        f"round {k}: generate did not finish in {args.round_timeout} s "
                        f"({counter.poll()} of {total} samples written); its stderr:\n{err.read_text()[-6000:]}"
                    )
                if kill and counter.poll() >= target:
                    time.sleep(jitter)
                    t_kill = time.time()
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    break
                time.sleep(0.001)
            rc = proc.returncode
            time.sleep(args.delay + 0.5)  # the server finishes (or drops) what was in flight and logs it
            rounds.append(
                {"k": k, "start": t_start, "kill": t_kill, "rc": rc, "before": before, "after": counter.poll()}
            )
            rounds[-1]["log_end"] = len(read_log(log))
            if t_kill is None:
                if rc != 0:
                    raise RuntimeError(f"round {k}: generate exited {rc}:\n{err.read_text()[-3000:]}")
                break
            k += 1
    except BaseException:
        print(f"{workdir} kept for inspection (output, server log, each run's stderr)", file=sys.stderr)
        raise
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server_out = stop_server(server)

    ok = report(rounds, read_log(log), output, args, total, server_out)
    if own_workdir and ok:
        shutil.rmtree(workdir, ignore_errors=True)
    if not ok:
        print(f"{workdir} kept for inspection", file=sys.stderr)
        sys.exit(1)


def report(rounds: list[dict], log: list[dict], output: Path, args, total: int, server_out: str) -> bool:
    # --- the output: every sample exactly once ---
    keys: Counter = Counter()
    ids: Counter = Counter()
    bad_lines = 0
    with output.open(encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
                keys[(row["prompt_id"], row["sample_index"])] += 1
                ids[row["id"]] += 1
            except (ValueError, KeyError):
                bad_lines += 1
    expected = {(f"p{i}", j) for i in range(args.prompts) for j in range(args.n)}
    missing = expected - set(keys)
    doubled = {key: c for key, c in keys.items() if c > 1}
    extra = set(keys) - expected
    ok = not missing and not doubled and not extra and not bad_lines and len(ids) == sum(keys.values())

    # --- the server's log, cut into the rounds ---
    start = 0
    for r in rounds:
        r["log"] = log[start : r["log_end"]]
        start = r["log_end"]
    print()
    print(
        "| run | exit | samples before | complete lines after | requests received | answered before the kill "
        "| in flight at the kill | cut before the body | duplicates: answered before the kill, sent again "
        "| in flight at the kill, sent again |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    totals = Counter()
    for i, r in enumerate(rounds):
        later = {e["q"] for nxt in rounds[i + 1 :] for e in nxt["log"] if e["q"] is not None}
        entries = [e for e in r["log"] if e["q"] is not None]
        cut = len(r["log"]) - len(entries)
        if r["kill"] is None:  # the run that finished: everything it was sent it answered
            answered, in_flight = [e for e in entries if e["answered"]], []
        else:
            answered = [e for e in entries if e["done"] < r["kill"]]
            in_flight = [e for e in entries if e["done"] >= r["kill"]]
        dup = sum(e["q"] in later for e in answered)
        resent = sum(e["q"] in later for e in in_flight)
        totals.update(dup=dup, resent=resent, cut=cut, kills=r["kill"] is not None)
        exit_ = "SIGKILL" if r["kill"] is not None else str(r["rc"])
        flight = len(in_flight) if r["kill"] is not None else "-"
        print(
            f"| {r['k'] + 1} | {exit_} | {r['before']} | {r['after']} | {len(r['log'])} | {len(answered)} "
            f"| {flight} | {cut} | {dup} | {resent} |"
        )
        if r["kill"] is not None:
            r["dup"] = dup
    chat = [e for e in log if e["q"] is not None]
    per_q = Counter(e["q"] for e in chat)
    q_of = {question(i) for i in range(args.prompts)}
    unknown = sum(1 for q in per_q if q not in q_of)
    print()
    print(
        f"kills: {totals['kills']}; generate runs: {len(rounds)}; chat requests with a body: {len(chat)} for "
        f"{args.prompts} prompts ({len(chat) - args.prompts} more than once), plus {totals['cut']} cut by a kill "
        "before their body arrived"
    )
    print(
        f"duplicates (answered before a kill, then sent again: paid twice): {totals['dup']} in all, per kill "
        f"{[r['dup'] for r in rounds if 'dup' in r]}; in flight at a kill and sent again (never delivered): "
        f"{totals['resent']}; prompts requested more than once: {sum(c > 1 for c in per_q.values())}; "
        f"requests for unknown prompts: {unknown}"
    )
    errors = server_out.count("Error handling request")
    if errors:
        print(f"server: {errors} requests dropped by a killed client while the server read them (aiohttp tracebacks)")
    print(
        f"output: {sum(keys.values())} lines for {total} expected samples; missing {len(missing)}, "
        f"present more than once {len(doubled)}, unexpected {len(extra)}, unreadable lines {bad_lines}, "
        f"distinct ids {len(ids)} -> {'OK: every sample exactly once' if ok else 'FAILED'}"
    )
    return ok


if __name__ == "__main__":
    main()
