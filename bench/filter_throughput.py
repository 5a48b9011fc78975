"""Filter throughput: samples/s of the whole `seqdistill filter` on synthetic samples, and peak memory.

    .venv/bin/python bench/filter_throughput.py [--samples 100000] [--workers 1 2] [--check math]

Builds N samples over N/4 prompts (mixed integer / fraction / decimal answers in \\boxed{}, about a third
wrong, 10% exact duplicates), then runs the filter once per worker count, each in a fresh subprocess
so its peak RSS is its own. Prints samples/s, wall time, peak memory and the funnel's kept count, and
the CPU seconds of the filter process and of its check workers: on a shared machine samples/s depends on
the other load, CPU seconds much less (`--check math` and `--check numeric` side by side compare the
checks' own cost).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    prompts = max(1, n // 4)
    rows: list[str] = []
    for i in range(n):
        if rows and rng.random() < 0.10:  # an exact duplicate of an earlier sample (same prompt, same text)
            rows.append(rows[rng.randrange(len(rows))])
            continue
        p = rng.randrange(prompts)
        a, b = p % 97 + 1, p % 13 + 2
        kind = p % 3
        if kind == 0:
            ref, good = str(a + b), f"{a + b}"
        elif kind == 1:
            ref, good = f"{a}/{b}", f"\\frac{{{a}}}{{{b}}}"
        else:
            ref, good = f"{a / 4:g}", f"{a / 4:g}"
        answer = good if rng.random() < 0.66 else str(a + b + 1 + rng.randrange(5))
        text = f"Step 1: work with {a} and {b}. Step 2: simplify (draft {i}). The answer is \\boxed{{{answer}}}."
        row = {
            "id": f"s{i}", "prompt_id": f"p{p}", "sample_index": i % 4,
            "prompt": [{"role": "user", "content": f"Question {p}: combine {a} and {b}."}],
            "completion": [{"role": "assistant", "content": text, "reasoning_content": None}],
            "reference": ref, "finish_reason": "stop", "usage": {"prompt_tokens": 12, "completion_tokens": 30},
            "teacher": {"model": "bench", "backend": "openai"}, "sampling": {"temperature": 0.7}, "meta": {},
        }  # fmt: skip
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def run_one(src: Path, out: Path, workers: int, check: str) -> dict:
    code = (
        "import json, sys, time\n"
        "from seqdistill.config import FilterConfig\n"
        "from seqdistill.stages import filter as f\n"
        f"cfg = FilterConfig(input={str(src)!r}, output={str(out)!r}, check={check!r}, workers={workers})\n"
        "t = time.perf_counter(); r = f.run(cfg); w = time.perf_counter() - t\n"
        "import resource\n"
        "me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "cpu = {'parent_cpu': me.ru_utime + me.ru_stime, 'workers_cpu': kids.ru_utime + kids.ru_stime}\n"
        "print(json.dumps({'seconds': w, 'total': r['total'], 'kept': r['kept'], **cpu}))\n"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    env = {**os.environ, "SEQDISTILL_NO_PROGRESS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"filter run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # ru_maxrss of children is the max over all children so far: runs go from fewer to more workers
    result["peak_rss_mb"] = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--check", default="math")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="seqdistill-filter-bench-") as tmp:
        src = Path(tmp) / "samples.jsonl"
        t = time.perf_counter()
        build(src, args.samples)
        print(
            f"# filter throughput: {args.samples} synthetic samples ({time.perf_counter() - t:.1f} s to build), "
            f"check={args.check}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
        )
        print("| workers | samples/s | wall s | filter CPU s | workers CPU s | peak RSS MB (largest so far) | kept |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for w in args.workers:
            r = run_one(src, Path(tmp) / f"kept-{w}.jsonl", w, args.check)
            rate = r["total"] / r["seconds"]
            cpu = f"{r['parent_cpu']:.1f} | {r['workers_cpu']:.1f}"
            print(f"| {w} | {rate:.0f} | {r['seconds']:.1f} | {cpu} | {r['peak_rss_mb']:.0f} | {r['kept']} |")


if __name__ == "__main__":
    main()
