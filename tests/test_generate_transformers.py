"""The in-process transformers backend on a tiny local model: batched generation, records, resume."""

from __future__ import annotations

from seqdistill.config import EvalConfig, GenerateConfig, PromptsConfig, SamplingConfig
from seqdistill.records import Sample
from seqdistill.stages import generate
from tests.conftest import read_jsonl, write_jsonl


def _cfg(tmp_path, model, **over) -> GenerateConfig:
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5)],
    )
    base = dict(
        backend="transformers",
        model=model,
        output=str(tmp_path / "samples.jsonl"),
        n=2,
        batch_size=4,
        prompts=PromptsConfig(source=str(prompts), teacher_system_prompt="Answer tersely."),
        sampling=SamplingConfig(temperature=0.8, max_tokens=6, seed=0),
    )
    base.update(over)
    return GenerateConfig(**base)


def test_generates_every_sample_once_then_resumes_with_nothing_to_do(tiny_model, tmp_path):
    cfg = _cfg(tmp_path, tiny_model)
    summary = generate.run(cfg)
    assert summary["generated"] == 10 and summary["already_done"] == 0
    rows = read_jsonl(tmp_path / "samples.jsonl")
    samples = [Sample.model_validate(r) for r in rows]
    assert sorted((s.prompt_id, s.sample_index) for s in samples) == [(f"q{i}", j) for i in range(5) for j in range(2)]
    assert len({s.id for s in samples}) == 10
    for s in samples:
        assert s.finish_reason in ("stop", "length")
        assert s.usage.completion_tokens and s.usage.completion_tokens <= 6
        assert s.prompt == [s.prompt[0]] and s.prompt[0].content.startswith("What is")  # the student's prompt
        assert s.meta["teacher_prompt"][0] == {"role": "system", "content": "Answer tersely."}
        assert s.teacher.backend == "transformers"
    again = generate.run(cfg)
    assert again["generated"] == 0 and again["already_done"] == 10
    assert len(read_jsonl(tmp_path / "samples.jsonl")) == 10


def test_raising_n_generates_only_the_new_indices(tiny_model, tmp_path):
    generate.run(_cfg(tmp_path, tiny_model, n=1))
    summary = generate.run(_cfg(tmp_path, tiny_model, n=3))
    assert summary["already_done"] == 5 and summary["generated"] == 10
    rows = read_jsonl(tmp_path / "samples.jsonl")
    assert sorted(r["sample_index"] for r in rows) == [0] * 5 + [1] * 5 + [2] * 5


def test_greedy_is_deterministic(tiny_model, tmp_path):
    # run as eval runs it: the random tiny model's greedy answers are empty, which generate counts as failed
    # requests (empty_answer) and eval keeps as the model's answer
    base = _cfg(tmp_path, tiny_model, n=1).model_dump()
    cfg = EvalConfig(**{**base, "sampling": {"temperature": 0, "max_tokens": 5}})
    generate.run(cfg)
    first = [r["completion"][0]["content"] for r in read_jsonl(tmp_path / "samples.jsonl")]
    (tmp_path / "samples.jsonl").unlink()
    generate.run(cfg)
    assert [r["completion"][0]["content"] for r in read_jsonl(tmp_path / "samples.jsonl")] == first


def test_ctrl_c_finishes_the_batch_in_progress_then_resume_completes(tiny_model, tmp_path):
    """SIGINT to an in-process run: the current batch is written, no partial line, exit 130; a rerun completes."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from collections import Counter

    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(120)],
    )
    out = tmp_path / "samples.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "seqdistill",
        "generate",
        "--backend",
        "transformers",
        "--model",
        tiny_model,
        "--prompts",
        str(prompts),
        "--output",
        str(out),
        "--set",
        "batch_size=4",
        "--set",
        "sampling.max_tokens=16",
    ]
    env = {**os.environ, "SEQDISTILL_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait for two written batches, however slow the machine (importing torch under load can take a minute):
    # the signal must land while batches are being generated, not during start-up
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 8):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    assert out.read_text().count("\n") >= 8, "no two batches written within 300 s"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Ctrl-C" in stderr and "Traceback" not in stderr
    text = out.read_text()
    written = text.count("\n")
    assert text.endswith("\n") and 8 <= written < 120 and written % 4 == 0  # whole batches only
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = read_jsonl(out)
    assert Counter(r["prompt_id"] for r in rows) == Counter({f"q{i}": 1 for i in range(120)})
