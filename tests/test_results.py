"""Stages hand back typed results (seqdistill/results.py) whose `to_json()` is what they write to disk."""

from __future__ import annotations

import json

from seqdistill import rundir
from seqdistill.config import FilterConfig, load_stage
from seqdistill.results import EvalResult, FilterResult, FunnelRow, GenerateResult
from seqdistill.stages import evaluate, generate
from seqdistill.stages import filter as filter_stage
from tests.conftest import make_sample, write_jsonl


def test_filter_returns_its_report_typed_and_writes_the_same_json(tmp_path):
    src = write_jsonl(
        tmp_path / "s.jsonl",
        [make_sample("p1", 0, "\\boxed{42}"), make_sample("p1", 1, "\\boxed{41}"), make_sample("p2", 0, "   ")],
    )
    report = filter_stage.run(FilterConfig(input=str(src), output=str(tmp_path / "k.jsonl"), check="numeric"))
    assert isinstance(report, FilterResult) and all(isinstance(row, FunnelRow) for row in report.funnel)
    assert (report.total, report.kept) == (3, 1)
    wrong = next(row for row in report.funnel if row.rule == "wrong_answer")
    assert (wrong.in_, wrong.dropped, wrong.kept) == (2, 1, 1)
    on_disk = json.loads((tmp_path / "k.report.json").read_text())
    assert report.to_json() == on_disk and on_disk["funnel"][0].keys() == {"rule", "in", "dropped", "kept", "examples"}
    assert report["kept"] == report.kept == 1  # read by key, as the old dict was


def test_generate_and_eval_return_typed_results(server, tmp_path):
    prompts = write_jsonl(tmp_path / "q.jsonl", [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)}
                                                 for i in range(3)])  # fmt: skip
    sets = [f"base_url={server.base_url}", "model=teacher", f"prompts.source={prompts}"]
    gen = generate.run(load_stage("generate", None, {"output": str(tmp_path / "g.jsonl"), "backend": "openai"}, sets))
    assert isinstance(gen, GenerateResult) and (gen.requested, gen.generated, gen.interrupted) == (3, 3, False)
    manifest = json.loads(rundir.manifest_path(tmp_path / "g.jsonl").read_text())
    assert {k: manifest[k] for k in ("requested", "generated", "truncated")} == {"requested": 3, "generated": 3,
                                                                                  "truncated": 0}  # fmt: skip
    result = evaluate.run(load_stage("eval", None, {"output": str(tmp_path / "e.jsonl"), "backend": "openai"}, sets))
    assert isinstance(result, EvalResult) and not result.interrupted
    assert (result.samples, result.correct, result.accuracy) == (3, 3, 1.0)
    manifest = json.loads(rundir.manifest_path(tmp_path / "e.jsonl").read_text())
    assert {k: manifest[k] for k in result.to_json()} == result.to_json()  # the manifest holds exactly the result
