"""One identity rule for samples: a sample's id includes its prompt id. Identical texts under different ids are
sampled separately, in one run and across a kill -9 and resume; every stage that reads ids keeps one record per id."""

from __future__ import annotations

import json
import logging
import signal
from collections import Counter

from typer.testing import CliRunner

from seqdistill.cli import app
from tests.conftest import make_sample, read_jsonl, write_jsonl
from tests.test_generate_openai import (
    MODEL,
    assert_exit,
    cli,
    error_line,
    keys,
    line_count,
    samples,
    spawn,
    wait_for,
)


def twin_rows(pairs: int) -> list[dict]:
    """Prompts q0..q{2*pairs-1}: q{2k} and q{2k+1} ask the same question under two ids."""
    return [
        {"id": f"q{i}", "question": f"What is {i // 2} + {i // 2 + 3}?", "answer": str(2 * (i // 2) + 3)}
        for i in range(2 * pairs)
    ]


def _text(request: dict) -> str:
    return request["body"]["messages"][-1]["content"]


def test_same_text_under_two_ids_is_sampled_twice_with_distinct_ids(tmp_path, server):
    rows = twin_rows(2) + [{"id": "solo", "question": "What is 9 + 9?", "answer": "18"}]
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "s.jsonl"
    result = cli(server.base_url, prompts, out, 2)
    assert_exit(result, 0)
    said = " ".join(result.stderr.split())  # the log line as one line, however the console wrapped it
    assert "4 prompts share their text with another prompt (e.g. ids q0, q1)" in said
    assert said.count("share their text") == 1 and "dedupe the prompt file to pay once" in said
    rows_out = samples(out)
    assert keys(rows_out) == Counter({(r["id"], j): 1 for r in rows for j in range(2)})
    assert len({s.id for s in rows_out}) == len(rows_out) == 10
    assert Counter(_text(r) for r in server.chat_requests()) == Counter(
        {"What is 0 + 3?": 2, "What is 1 + 4?": 2, "What is 9 + 9?": 1}
    )
    server.clear_log()
    assert_exit(cli(server.base_url, prompts, out, 2), 0)  # resumed: nothing is missing, nothing is sent
    assert server.chat_requests() == []


def test_kill_9_with_duplicate_texts_then_resume_generates_every_prompt_once(tmp_path, server):
    """SIGKILL mid-run over prompts that come in same-text pairs: the resume sends exactly what is missing."""
    server.delay = 0.05
    rows = twin_rows(30)
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "s.jsonl"
    proc = spawn(server.base_url, prompts, out, 2, "--concurrency", "4")
    wait_for(lambda: line_count(out) >= 10, 30, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    first = len(server.chat_requests())
    written = keys(samples(out))  # a torn last line would fail validation here
    assert max(written.values()) == 1 and len({s.id for s in samples(out)}) == sum(written.values())
    done = {pid for pid, _ in written if written[(pid, 0)] and written[(pid, 1)]}
    assert 5 <= len(done) < 60

    server.delay = 0.0
    proc = spawn(server.base_url, prompts, out, 2, "--concurrency", "4")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "60 prompts share their text with another prompt" in " ".join(stderr.split())
    rows_out = samples(out)
    assert keys(rows_out) == Counter({(f"q{i}", j): 1 for i in range(60) for j in range(2)})
    assert len({s.id for s in rows_out}) == 120
    # the resume paid once per missing prompt (n samples in one request), for neither twin already written
    missing_texts = Counter(r["question"] for r in rows if r["id"] not in done)
    assert Counter(_text(r) for r in server.chat_requests()[first:]) == missing_texts


def test_a_prompt_id_given_twice_in_the_prompt_file_is_one_line(tmp_path, server):
    rows = [{"id": "a", "question": "What is 1 + 2?"}, {"id": "b", "question": "What is 2 + 2?"}]
    rows.append({"id": "a", "question": "What is 7 + 7?"})
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    result = cli(server.base_url, prompts, tmp_path / "s.jsonl", 1)
    assert_exit(result, 1)
    line = error_line(result)
    assert f"{prompts} line 3: duplicate prompt id 'a' (first at {prompts} line 1)" in line
    assert server.chat_requests() == []  # refused before anything was sent


# --- every stage that reads ids keeps one record per id -------------------------------------------------


def _with_repeats(tmp_path) -> tuple:
    """A samples file where two records repeat earlier ids (as two appending writers would leave it)."""
    rows = [make_sample(id=f"s{i}", prompt_id=f"p{i}", text=f"The answer is \\boxed{{{i}}}.", reference=str(i))
            for i in range(4)]  # fmt: skip
    repeat = dict(rows[1], completion=[{"role": "assistant", "content": "A later copy: \\boxed{1}."}])
    path = write_jsonl(tmp_path / "samples.jsonl", [*rows, repeat, rows[3]])
    return path, rows


def test_filter_keeps_the_first_record_of_an_id_and_counts_the_rest(tmp_path):
    path, rows = _with_repeats(tmp_path)
    kept_path = tmp_path / "kept.jsonl"
    result = CliRunner().invoke(app, ["filter", str(path), "--output", str(kept_path), "--check", "none"])
    assert_exit(result, 0)
    kept = read_jsonl(kept_path)
    assert [r["id"] for r in kept] == ["s0", "s1", "s2", "s3"]
    assert kept[1]["completion"][0]["content"] == rows[1]["completion"][0]["content"]  # the first wins
    report = json.loads(tmp_path.joinpath("kept.report.json").read_text())
    assert report["funnel"][0]["rule"] == "duplicate_id"
    assert (report["funnel"][0]["in"], report["funnel"][0]["dropped"]) == (6, 2)
    rejected = read_jsonl(tmp_path / "kept.rejected.jsonl")
    assert [(r["id"], r["meta"]["rejected"]["rule"]) for r in rejected] == [
        ("s1", "duplicate_id"),
        ("s3", "duplicate_id"),
    ]


def test_filter_report_has_no_duplicate_id_row_when_ids_are_unique(tmp_path):
    rows = [make_sample(id=f"s{i}", prompt_id=f"p{i}") for i in range(3)]
    path = write_jsonl(tmp_path / "samples.jsonl", rows)
    result = CliRunner().invoke(
        app, ["filter", str(path), "--output", str(tmp_path / "kept.jsonl"), "--check", "none"]
    )
    assert_exit(result, 0)
    report = json.loads(tmp_path.joinpath("kept.report.json").read_text())
    assert "duplicate_id" not in {row["rule"] for row in report["funnel"]}


def test_train_reads_each_id_once_with_a_warning(tmp_path, caplog):
    from seqdistill.stages.train import load_examples, training_samples

    path, rows = _with_repeats(tmp_path)
    with caplog.at_level(logging.WARNING):
        picked = training_samples(str(path))
    assert [s.id for s in picked] == ["s0", "s1", "s2", "s3"]
    assert picked[1].text == rows[1]["completion"][0]["content"]
    assert "2 records repeat an earlier sample id" in caplog.text
    assert len(load_examples(str(path), "think")) == 4


def test_eval_counts_each_sample_id_once(tmp_path, server):
    from seqdistill.config import load_stage
    from seqdistill.stages import evaluate

    prompts = write_jsonl(tmp_path / "heldout.jsonl", twin_rows(2))
    out = tmp_path / "eval.jsonl"
    flags = {"backend": "openai", "base_url": server.base_url, "model": MODEL, "prompts.source": str(prompts),
             "check": "math", "n": 2, "output": str(out)}  # fmt: skip
    first = evaluate.run(load_stage("eval", None, flags))
    assert (first["prompts"], first["samples"], first["correct"]) == (4, 8, 8)  # twins are scored apart
    lines = out.read_text().splitlines()
    out.write_text("\n".join([*lines, lines[0], lines[5]]) + "\n")  # two repeated records
    again = evaluate.run(load_stage("eval", None, flags))
    assert (again["samples"], again["correct"], again["accuracy"]) == (8, 8, 1.0)
