"""The core install (`pip install seqdistill`, no extras) in its own venv: no torch, and the API workflow runs.

A venv holding what `pip install <checkout>` resolves for the core dependencies is built once per dependency
list and kept under the temp dir (`seqdistill-core-<digest>`, built under a lock, so parallel test runs share
it); pip's own cache is reused. Each test run then installs THIS checkout into a fresh folder with
`pip install --no-deps --target` (a real, non-editable build: no PYTHONPATH pointing at the source tree) and
runs that copy's `seqdistill` against the loopback OpenAI server. Set SEQDISTILL_FRESH_CORE_VENV=1 to build
the venv from scratch in this run's temp dir instead.

Not covered: the extras (`[train]`, `[vllm]`) — their resolution is checked by `.ci/check-installs`, their
code by the rest of the suite in the full dev install.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fake_openai_server import FakeOpenAIServer

pytestmark = [pytest.mark.install, pytest.mark.timeout(1800)]  # a first build downloads and unpacks ~800 MB

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "gguf", "bitsandbytes", "vllm")


@dataclass
class Core:
    """A core venv plus this checkout installed (non-editable) into `site`."""

    python: Path
    site: Path

    @property
    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        return {**keep, "PYTHONPATH": str(self.site), "HF_HUB_OFFLINE": "1", "SEQDISTILL_NO_PROGRESS": "1"}

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """`seqdistill ARGS` with the core install's console script."""
        cmd = [str(self.site / "bin" / "seqdistill"), *args]
        return subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=300)

    def python_c(self, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.python), "-c", code]
        return subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=120)


def _pip(python: Path, *args: str) -> None:
    proc = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _digest() -> str:
    """What the core venv depends on: the core requirements and this Python."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    key = json.dumps([sorted(deps), sys.version_info[:2], sys.platform])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _source(dest: Path) -> Path:
    """What a source distribution of the checkout holds, copied: pip builds in the source tree, and a stale
    `build/` there could slip old files into the wheel."""
    shutil.copytree(ROOT / "seqdistill", dest / "seqdistill", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


def _build_venv(venv: Path) -> None:
    """`pip install <checkout>` with no extras into a new venv, then drop seqdistill itself (each run adds its own)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    with tempfile.TemporaryDirectory() as tmp:
        _pip(python, "install", "--quiet", "--no-compile", str(_source(Path(tmp))))
    _pip(python, "uninstall", "--quiet", "--yes", "seqdistill")


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # one build at a time; the others wait, then reuse it
        yield


def _core_venv(tmp_path_factory) -> Path:
    if os.environ.get("SEQDISTILL_FRESH_CORE_VENV"):
        venv = tmp_path_factory.mktemp("core") / "venv"
        _build_venv(venv)
        return venv
    venv = Path(tempfile.gettempdir()) / f"seqdistill-core-{_digest()}"
    with _locked(venv.with_name(venv.name + ".lock")):
        if not (venv / ".complete").is_file():  # a build that died halfway is redone
            shutil.rmtree(venv, ignore_errors=True)
            _build_venv(venv)
            (venv / ".complete").write_text("built by tests/test_install.py\n")
    return venv


@pytest.fixture(scope="module")
def core(tmp_path_factory) -> Core:
    venv = _core_venv(tmp_path_factory)
    site, src = tmp_path_factory.mktemp("core-site"), _source(tmp_path_factory.mktemp("core-src"))
    python = venv / "bin" / "python"
    _pip(python, "install", "--quiet", "--no-deps", "--no-compile", "--target", str(site), str(src))
    return Core(python=python, site=site)


def test_core_install_has_no_training_stack_and_runs_the_installed_copy(core, tmp_path):
    code = (
        "import importlib.util, json, seqdistill\n"
        f"print(json.dumps([seqdistill.__file__, [m for m in {HEAVY!r} if importlib.util.find_spec(m)]]))\n"
    )
    proc = core.python_c(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    where, heavy = json.loads(proc.stdout)
    assert Path(where).is_relative_to(core.site), where  # the built copy, not the source tree
    assert heavy == []
    proc = core.python_c("import torch", tmp_path)
    assert proc.returncode == 1 and "No module named 'torch'" in proc.stderr


def _prompts(path: Path) -> Path:
    """Three sums; the last reference is wrong, so the math check drops its samples and eval scores 2/3."""
    rows = [
        {"id": "a", "question": "What is 2 + 3?", "answer": "5"},
        {"id": "b", "question": "What is 40 + 2?", "answer": "42"},
        {"id": "c", "question": "What is 7 + 7?", "answer": "15"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_core_workflow_generate_filter_eval_report(core, tmp_path):
    prompts, run = _prompts(tmp_path / "prompts.jsonl"), tmp_path / "run"
    with FakeOpenAIServer(models=["teacher"]) as server:
        api = ["--base-url", server.base_url, "--model", "teacher"]
        out = core.run("generate", "--prompts", str(prompts), "--backend", "openai", *api, "--n", "2",
                       "--output", str(run / "samples.jsonl"), cwd=tmp_path)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert len((run / "samples.jsonl").read_text().splitlines()) == 6
        out = core.run("filter", str(run / "samples.jsonl"), "--output", str(run / "kept.jsonl"),
                       "--check", "math", "--workers", "2", cwd=tmp_path)  # fmt: skip
        assert out.returncode == 0, out.stderr
        kept = [json.loads(line)["prompt_id"] for line in (run / "kept.jsonl").read_text().splitlines()]
        assert sorted(kept) == ["a", "a", "b", "b"]
        out = core.run("eval", "--prompts", str(prompts), *api, "--check", "math", "--n", "1",
                       "--output", str(run / "eval.jsonl"), cwd=tmp_path)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "0.6667" in out.stdout, out.stdout  # 2 of 3 correct
    # A run dir as `report` reads it: the filter's report found by its default name, the student's base model a
    # hub id whose tokenizer would need transformers: the lengths fall back to words and say how to get tokens.
    summary = {"run_dir": str(run), "train": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct"}}
    (run / "summary.json").write_text(json.dumps(summary))
    out = core.run("report", str(run), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    page = (run / "report" / "report.html").read_text()
    assert "wrong" in page and "whitespace-separated words" in page
    assert "pip install &#x27;seqdistill[train]&#x27;" in page or "pip install 'seqdistill[train]'" in page
    assert (run / "report" / "funnel.png").read_bytes().startswith(b"\x89PNG")


TRAIN_EXTRA = "needs `pip install 'seqdistill[train]'`"


@pytest.mark.parametrize(
    ("args", "feature"),
    [
        (["train", "KEPT", "--model", "bundled:smollm2", "--output", "OUT"], "train"),
        (["train", "KEPT", "--model", "m", "--check"], "train --check"),
        (["run", "--config", str(ROOT / "configs" / "demo-cpu.yaml"), "--set", "run_dir=OUT"],
         "run (the recipe trains a student)"),
        (["generate", "--prompts", "PROMPTS", "--backend", "transformers", "--model", "m", "--output", "OUT"],
         "backend transformers"),
        (["eval", "--prompts", "PROMPTS", "--model", "bundled:smollm2", "--output", "OUT"], "backend transformers"),
        (["filter", "KEPT", "--output", "OUT", "--set", "tokenizer=bundled:smollm2", "--set", "max_tokens=100"],
         "filter's token counts (tokenizer: bundled:smollm2; unset it to count words)"),
    ],
)  # fmt: skip
def test_a_command_that_needs_train_says_so_in_one_line(core, tmp_path, args, feature):
    kept = tmp_path / "kept.jsonl"
    kept.write_text(json.dumps(_sample()) + "\n")
    paths = {"KEPT": str(kept), "PROMPTS": str(_prompts(tmp_path / "p.jsonl")), "OUT": str(tmp_path / "out")}
    out = core.run(*[paths.get(a, a) for a in args], cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr  # one line, no traceback
    assert f"{feature} {TRAIN_EXTRA}" in lines[0] and "is not installed" in lines[0], out.stderr
    assert not (tmp_path / "out").exists()  # said before any work was done


def _sample() -> dict:
    return {
        "id": "s1", "prompt_id": "a", "sample_index": 0, "prompt": [{"role": "user", "content": "What is 2 + 3?"}],
        "completion": [{"role": "assistant", "content": "2 + 3 = 5. The answer is \\boxed{5}."}],
        "reference": "5", "finish_reason": "stop", "teacher": {"model": "teacher", "backend": "openai"},
    }  # fmt: skip
