"""A newcomer's first hour, scripted: stages by hand into one run dir up to a report, and `run` resumed.

(a) generate -> filter -> train --check -> eval before -> train -> eval after -> report, by hand, against
the loopback OpenAI server (teacher) and a tiny local student: the report states the right counts, eval
wrote its verdicts and accuracy, a retrained student gets an eval file of its own, and a recipe printed
from the directory makes `seqdistill run` reuse everything. (b) a `run` resumed redoes nothing finished
(log lines and file hashes), a changed setting redoes that stage and what depends on it, `force` redoes one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from seqdistill.cli import app
from seqdistill.config import load_pipeline
from seqdistill.stages import pipeline
from tests.conftest import read_jsonl, write_jsonl
from tests.fake_openai_server import FakeOpenAIServer

runner = CliRunner()
TRAIN_PROMPTS = 6  # the last one has a wrong reference: its 2 samples are dropped as wrong answers
HELDOUT = 4
FAST_EVAL = ["--check", "math", "--set", "sampling.max_tokens=8"]
FAST_TRAIN = ["--set", "epochs=1", "--set", "batch_size=4", "--set", "learning_rate=1e-3"]


def prompts(path: Path, start: int, count: int, wrong_last: bool = False) -> Path:
    rows = [{"id": f"q{i}", "question": f"What is {i} + {i + 3}?", "answer": str(2 * i + 3)}
            for i in range(start, start + count)]  # fmt: skip
    if wrong_last:
        rows[-1]["answer"] = "999"
    return write_jsonl(path, rows)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_stages_by_hand_into_one_run_dir_end_in_a_report(tmp_path, server, tiny_model):
    d = tmp_path / "runs" / "main"
    train_prompts = prompts(tmp_path / "train.jsonl", 0, TRAIN_PROMPTS, wrong_last=True)
    heldout = prompts(tmp_path / "heldout.jsonl", 100, HELDOUT)
    teacher = ["--base-url", server.base_url, "--model", "teacher"]
    cli("generate", "--prompts", train_prompts, "--output", d / "samples.jsonl", "--backend", "openai", *teacher,
        "--n", "2")  # fmt: skip
    cli("filter", d / "samples.jsonl", "--output", d / "kept.jsonl", "--check", "math")
    cli("train", d / "kept.jsonl", "--model", tiny_model, "--output", d / "student", "--check")
    cli("eval", *teacher, "--prompts", heldout, "--output", d / "eval-teacher.jsonl", "--set", "prompt=teacher",
        *FAST_EVAL)  # fmt: skip
    cli("eval", "--model", tiny_model, "--prompts", heldout, "--output", d / "eval-student-before.jsonl", *FAST_EVAL)
    cli("train", d / "kept.jsonl", "--model", tiny_model, "--output", d / "student", *FAST_TRAIN)
    cli("eval", "--model", d / "student", "--prompts", heldout, "--output", d / "eval-student-after.jsonl",
        *FAST_EVAL)  # fmt: skip

    # eval kept its score: each answer's verdict and extracted answer, the accuracy with its interval
    rows = read_jsonl(d / "eval-teacher.jsonl")
    assert len(rows) == HELDOUT and all(r["meta"]["check"]["result"] == "correct" for r in rows)
    assert {r["meta"]["check"]["answer"] for r in rows} == {str(2 * i + 3) for i in range(100, 100 + HELDOUT)}
    assert all(r["meta"]["check"]["reason"] for r in read_jsonl(d / "eval-student-after.jsonl"))
    manifest = json.loads((d / "eval-teacher.manifest.json").read_text())
    assert manifest["accuracy"] == 1.0 and manifest["ci_method"] == "wilson" and len(manifest["accuracy_ci"]) == 2

    out = cli("report", d)  # no summary.json: built from the manifests and reports on disk
    assert not (d / "summary.json").exists() and "report ->" in out
    page = (d / "report" / "report.html").read_text(encoding="utf-8")
    samples, kept = 2 * TRAIN_PROMPTS, 2 * (TRAIN_PROMPTS - 1)
    assert f"{TRAIN_PROMPTS} prompts, {samples} samples requested, {samples} in samples.jsonl" in page
    assert re.search(rf"<td>kept</td><td>{kept} of {samples} ", page), "kept count of the whole output"
    after = json.loads((d / "eval-student-after.manifest.json").read_text())
    for label, acc in (("teacher", 1.0), ("student after", after["accuracy"])):
        assert re.search(rf"<td>{label}</td><td>[^<]*</td><td[^>]*>{HELDOUT}</td>.*?{acc:.1%}", page), label
    assert "student before" in page and "Training loss" in page

    # a retrained student at the same path is a new model: a new eval file, the old one untouched
    before_rows = sha(d / "eval-student-after.jsonl")
    cli("train", d / "kept.jsonl", "--model", tiny_model, "--output", d / "student", *FAST_TRAIN, "--set", "seed=1")
    said = cli("eval", "--model", d / "student", "--prompts", heldout, "--output", d / "eval-student-after.jsonl",
               *FAST_EVAL)  # fmt: skip
    assert sha(d / "eval-student-after.jsonl") == before_rows
    new_files = sorted(p.name for p in d.glob("eval-student-after-*.jsonl"))
    assert len(new_files) == 1 and len(read_jsonl(d / new_files[0])) == HELDOUT
    said = " ".join(said.split())  # the log line, wrapped to the terminal's width
    assert "holds the answers of another model" in said and "is a new model (weights" in said

    # the recipe of what the directory holds: `run` with it reuses every stage made by hand
    result = runner.invoke(app, ["run", "--print-recipe", str(d)])
    assert result.exit_code == 0, result.output
    recipe = result.stdout
    cfg = yaml.safe_load(recipe)
    assert cfg["generate"]["model"] == "teacher" and cfg["train"]["model"] == tiny_model
    (tmp_path / "recipe.yaml").write_text(recipe)
    weights = sha(d / "student" / "model.safetensors")
    summary = pipeline.run(load_pipeline(str(tmp_path / "recipe.yaml")))
    actions = {stage: done["action"] for stage, done in summary["invocation"].items()}
    assert actions == {"generate": "reused", "filter": "reused", "eval teacher": "reused",
                       "eval student_before": "reused", "train": "reused", "eval student_after": "reused"}  # fmt: skip
    assert sha(d / "student" / "model.safetensors") == weights
    assert summary["generate"]["samples"] == samples and summary["generate"]["generated_this_run"] == 0


def recipe_file(tmp_path: Path, server: FakeOpenAIServer, tiny_model: str) -> Path:
    recipe = {
        "run_dir": str(tmp_path / "run"),
        "generate": {"backend": "openai", "model": "teacher", "base_url": server.base_url, "n": 2,
                     "prompts": {"source": str(prompts(tmp_path / "train.jsonl", 0, 4))}},
        "filter": {"check": "math"},
        "train": {"model": tiny_model, "epochs": 1, "batch_size": 4, "learning_rate": 1e-3},
        "eval": {"check": "math", "prompts": {"source": str(prompts(tmp_path / "heldout.jsonl", 100, 3))},
                 "sampling": {"max_tokens": 8}},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def outputs(run: Path) -> dict[str, tuple[str, int]]:
    """Every file of the run dir but the summary and locks: its hash and mtime."""
    return {str(p.relative_to(run)): (sha(p), p.stat().st_mtime_ns) for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != "summary.json" and not p.name.endswith(".lock")}  # fmt: skip


def test_a_resumed_run_redoes_nothing_and_force_redoes_one_stage(tmp_path, server, tiny_model, caplog):
    recipe = recipe_file(tmp_path, server, tiny_model)
    run = tmp_path / "run"
    caplog.set_level(logging.INFO)
    first = pipeline.run(load_pipeline(str(recipe)))
    assert {done["action"] for done in first["invocation"].values()} == {"ran"}
    assert first["generate"]["samples"] == 8 and first["generate"]["generated_this_run"] == 8
    before, requests = outputs(run), len(server.chat_requests())

    caplog.clear()
    second = pipeline.run(load_pipeline(str(recipe)))
    assert {done["action"] for done in second["invocation"].values()} == {"reused"}, second["invocation"]
    assert outputs(run) == before, "no file rewritten: the student's weights, samples, kept and evals as they were"
    assert len(server.chat_requests()) == requests, "nothing sent to the teacher"
    assert "train: " in caplog.text and "unchanged: reusing the student" in caplog.text
    assert second["generate"]["samples"] == 8 and second["generate"]["generated_this_run"] == 0
    assert second["eval"]["student_after"]["accuracy"] == first["eval"]["student_after"]["accuracy"]

    caplog.clear()  # a changed setting redoes that stage, and the eval of the new student, saying why
    third = pipeline.run(load_pipeline(str(recipe), ["train.epochs=2"]))
    assert third["invocation"]["train"] == {"action": "ran", "why": "settings changed (epochs 1.0 -> 2.0)"}
    assert "train: settings changed (epochs 1.0 -> 2.0): retraining" in caplog.text
    assert third["invocation"]["filter"]["action"] == "reused"
    assert third["invocation"]["eval student_after"]["action"] == "ran"
    assert third["eval"]["student_after"]["output"] != first["eval"]["student_after"]["output"]
    assert third["train"]["epochs"] == 2
    weights = sha(run / "student" / "model.safetensors")

    caplog.clear()
    forced = pipeline.run(load_pipeline(str(recipe), ["train.epochs=2"]), force=frozenset({"train"}))
    assert forced["invocation"]["train"] == {"action": "ran", "why": "forced (--force)"}
    assert forced["invocation"]["filter"]["action"] == "reused"
    assert (run / "student" / "model.safetensors").stat().st_mtime_ns != before["student/model.safetensors"][1]
    assert sha(run / "student" / "model.safetensors") == weights, "same settings and seed: the same student again"


def test_force_names_a_stage_and_print_recipe_needs_outputs(tmp_path, server, tiny_model):
    result = runner.invoke(
        app, ["run", "--config", str(recipe_file(tmp_path, server, tiny_model)), "--force", "trian"]
    )
    assert result.exit_code == 1 and "--force trian: not a stage" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["run", "--print-recipe", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "nothing to write a recipe from" in result.output
