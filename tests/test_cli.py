"""CLI behaviour: instant --help, one-line user errors with exit 1, eval on a tiny local model."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from seqdistill.cli import app
from tests.conftest import make_sample, write_jsonl

runner = CliRunner()


def _one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    error_lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, text
    for needle in needles:
        assert needle in text, text
    return text


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from seqdistill.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "subs = [c.name or c.callback.__name__ for c in app.registered_commands]\n"
        "assert {'generate', 'filter', 'train', 'eval', 'run', 'report'} <= set(subs), subs\n"
        "for sub in subs:\n"
        "    assert CliRunner().invoke(app, [sub, '--help']).exit_code == 0, sub\n"
        "heavy = ('torch', 'transformers', 'trl', 'peft', 'accelerate', 'gguf', 'bitsandbytes', 'vllm',\n"
        "         'datasets', 'openai', 'aiohttp', 'matplotlib', 'PIL', 'math_verify', 'sympy', 'datasketch')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_python_dash_m_works():
    proc = subprocess.run(
        [sys.executable, "-m", "seqdistill", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.startswith("seqdistill ")


@pytest.mark.parametrize(
    ("backend", "needles"),
    [
        ("nope", ("unknown backend 'nope'", "openai, transformers, vllm")),
        ("vllm", ("pip install 'seqdistill[vllm]'",)),  # a missing extra names the install command
    ],
)
def test_backend_errors_are_one_line(tmp_path, backend, needles):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"question": "What is 1 + 1?"}])
    args = ["generate", "--prompts", str(prompts), "--backend", backend, "--model", "m"]
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "s.jsonl")])
    _one_line_error(result, *needles)


@pytest.mark.parametrize(
    ("module", "shown"),
    [("vllm", True), ("vllm.engine", True), ("torch", False), ("no_such_module", False)],
)
def test_a_missing_extra_reached_without_a_check_is_one_line(capsys, module, shown):
    """The command wrapper's net: an extra's library that is not installed becomes its install line; any other
    missing module (and an installed library failing inside) stays a traceback, as a bug should."""
    import typer

    from seqdistill.cli import command

    @command
    def train_cmd() -> None:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    if not shown:
        with pytest.raises(ModuleNotFoundError):
            train_cmd()
        return
    with pytest.raises(typer.Exit) as exit_:
        train_cmd()
    assert exit_.value.exit_code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: train needs `pip install 'seqdistill[vllm]'` (vllm is not installed)"]


def test_missing_input_file(tmp_path):
    _one_line_error(runner.invoke(app, ["filter", str(tmp_path / "nope.jsonl")]), "nope.jsonl: no such file")
    _one_line_error(runner.invoke(app, ["train", str(tmp_path / "nope.jsonl"), "--model", "m"]), "no such file")
    _one_line_error(
        runner.invoke(app, ["generate", "--prompts", str(tmp_path / "nope.jsonl"), "--model", "m"]), "no such file"
    )


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backend: openai\nsampling:\n  temprature: 0.5\n")
    _one_line_error(runner.invoke(app, ["generate", "--config", str(cfg)]), "unknown config key 'sampling.temprature'")
    _one_line_error(runner.invoke(app, ["filter", "x.jsonl", "--set", "chek=math"]), "unknown config key 'chek'")


def test_malformed_line_in_train_input(tmp_path):
    bad = tmp_path / "kept.jsonl"
    bad.write_text(json.dumps(make_sample()) + "\n" + '{"id": "x", "prompt": [}\n')
    _one_line_error(runner.invoke(app, ["train", str(bad), "--model", "m"]), "kept.jsonl line 2", "not valid JSON")


def test_debug_env_shows_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQDISTILL_DEBUG", "1")
    result = runner.invoke(app, ["filter", str(tmp_path / "nope.jsonl")])
    assert result.exit_code != 0 and result.exception is not None


@pytest.mark.parametrize("backend", ["transformers", "auto"])
def test_eval_on_tiny_model_counts_every_sample(tiny_model, tmp_path, backend):
    prompts = write_jsonl(
        tmp_path / "heldout.jsonl",
        [{"id": f"h{i}", "question": f"What is {i} + 2?", "answer": str(i + 2)} for i in range(4)],
    )
    out = tmp_path / "eval.jsonl"
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            tiny_model,
            "--prompts",
            str(prompts),
            "--check",
            "numeric",
            "--output",
            str(out),
            "--n",
            "2",
            "--set",
            "sampling.max_tokens=4",
            "--set",
            f"backend={backend}",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8
    assert {r["teacher"]["backend"] for r in rows} == {"transformers"}, "auto: no vllm and no GPU here"
    assert "accuracy" in result.output and "samples" in result.output
    assert re.search(r"│ samples\s*│ 8\s*│", result.output), result.output


def test_auto_backend_is_vllm_only_with_vllm_and_a_gpu(monkeypatch):
    import importlib.util

    import torch

    from seqdistill.backends import resolve_backend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto") == "vllm"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto") == "transformers"
    assert resolve_backend("openai") == "openai"


def test_run_summary_table_shows_intervals_and_paired_differences():
    from rich.console import Console

    from seqdistill import stats
    from seqdistill.cli import summary_table
    from seqdistill.stages.pipeline import comparisons

    def ev(right: list[int]) -> dict:
        acc = stats.accuracy({f"h{i}": (r, 1) for i, r in enumerate(right)})
        return {"accuracy": acc.value, "accuracy_ci": [acc.ci_low, acc.ci_high], "ci_method": acc.method,
                "correct": acc.correct, "samples": acc.total,
                "per_prompt": {f"h{i}": [r, 1] for i, r in enumerate(right)}}  # fmt: skip

    # 100 prompts: 40 both right, 22 only after, 8 only before, 30 neither (62% vs 48%)
    after = [1] * 40 + [1] * 22 + [0] * 8 + [0] * 30
    before = [1] * 40 + [0] * 22 + [1] * 8 + [0] * 30
    evals = {"teacher": ev(before), "student_before": ev(before), "student_after": ev(after)}
    summary = {"run_dir": "runs/x", "generate": {"prompts": 1, "requested": 1, "generated": 1, "truncated": 0},
               "eval": evals, "comparisons": comparisons(evals)}  # fmt: skip
    console = Console(width=200, record=True)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "48.0% [38.5, 57.7] (48/100) -> 62.0% [52.2, 70.9] (62/100)" in text
    low, high = stats.newcombe_paired_interval(40, 22, 8, 30)
    row = next(line for line in text.splitlines() if "paired: student after - student before" in line)
    assert f"+14.0 pts [{100 * low:+.1f}, {100 * high:+.1f}], p = 0.0161 (22 vs 8 prompts differ)" in row
    assert "wilson, newcombe-paired + mcnemar-exact" in text  # which interval and test the brackets are
    evals["student_reference"] = ev(before)
    narrow = Console(width=80, record=True)  # CliRunner's width: the long values wrap, the row names do not
    narrow.print(summary_table(summary | {"comparisons": comparisons(evals)}))
    text = narrow.export_text()
    for name in ("held-out accuracy: student on reference answers", "paired: student after - student reference"):
        assert name in text
