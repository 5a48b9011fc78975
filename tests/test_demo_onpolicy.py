"""`recipes:` in a pipeline run: every recipe trained and evaluated, one comparison table with paired tests.

The wiring end to end on a tiny scale: the teacher is the loopback OpenAI server (right answers), the student a
2-layer model built in conftest (garbage answers), so the run takes seconds. The statistics of the table are
checked against stats.py on hand-made per-prompt results where the recipes differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from seqdistill.config import PipelineConfig, load_pipeline
from seqdistill.errors import ConfigError
from seqdistill.stages import recipes
from seqdistill.stats import mcnemar_exact, newcombe_paired_interval, wilson_interval
from tests.conftest import make_sample, write_jsonl
from tests.fake_openai_server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parent.parent
RECIPES = [
    {"name": "sft", "label": "(a) SFT"},
    {"name": "onpolicy", "sft": "none", "onpolicy": True},
    {"name": "sft-onpolicy", "onpolicy": True},
    {"name": "reference", "sft": "reference"},
    {"name": "vote", "sft": "vote"},
    {"name": "self", "onpolicy": True, "teacher": "self", "train": {"learning_rate": 1e-4}},
]


def _prompts(path: Path, pairs: list[tuple[int, int]], prefix: str) -> str:
    rows = [{"id": f"{prefix}{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)} for i, (a, b) in
            enumerate(pairs)]  # fmt: skip
    return str(write_jsonl(path, rows))


def _config(tmp_path: Path, base_url: str, tiny_model: str) -> dict:
    template = str(ROOT / "prompts/arithmetic/question.jinja")
    examples = str(ROOT / "prompts/arithmetic/worked_examples.jsonl")
    train = _prompts(tmp_path / "train.jsonl", [(2, 3), (4, 5), (10, 7)], "t")
    heldout = _prompts(tmp_path / "heldout.jsonl", [(1, 1), (6, 2)], "h")
    return {
        "run_dir": str(tmp_path / "run"),
        "reference_baseline": True,
        "generate": {
            "backend": "openai", "base_url": base_url, "model": "teacher", "n": 2,
            "prompts": {"source": train, "template": template, "teacher_examples": examples},
            "sampling": {"temperature": 0.7, "max_tokens": 48},
        },
        "filter": {"check": "math"},
        "train": {
            "model": tiny_model, "epochs": 1, "batch_size": 4, "learning_rate": 1e-3,
            "onpolicy": {"teacher": tiny_model, "rounds": 1, "prompts_per_round": 2, "n": 2, "max_tokens": 6,
                         "sample_batch_size": 8},
        },
        "eval": {"check": "math", "batch_size": 8, "prompts": {"source": heldout, "template": template,
                 "teacher_examples": examples}, "sampling": {"max_tokens": 16}},
        "recipes": RECIPES,
    }  # fmt: skip


def test_each_recipe_is_trained_evaluated_and_compared(tmp_path, tiny_model):
    from typer.testing import CliRunner

    from seqdistill.cli import app

    with FakeOpenAIServer(models=["teacher"]) as server:
        config = tmp_path / "recipes.yaml"
        config.write_text(yaml.safe_dump(_config(tmp_path, server.base_url, tiny_model)))
        result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    table = json.loads((run / "recipes.json").read_text())
    assert table == summary["recipes"] and table["compare_to"] == "sft"
    rows = {r["name"]: r for r in table["rows"]}
    assert list(rows) == ["teacher", "student_before"] + [r["name"] for r in RECIPES]
    # each recipe's student was trained where the recipe says, and evaluated on both held-out prompts
    expected_eval = {"sft": "student_after", "onpolicy": "recipe_onpolicy", "sft-onpolicy": "recipe_sft-onpolicy",
                     "reference": "student_reference", "vote": "student_vote", "self": "recipe_self"}  # fmt: skip
    for name, key in expected_eval.items():
        assert rows[name]["eval"] == key and summary["eval"][key]["samples"] == 2, name
        assert (
            rows[name]["ci_low"] is not None
            and rows[name]["ci_low"] <= rows[name]["accuracy"] <= rows[name]["ci_high"]
        )
    assert rows["teacher"]["accuracy"] == 1.0  # the loopback teacher answers right
    for name in ("onpolicy", "sft-onpolicy", "self"):
        report = summary["train_recipes"][name]
        assert (run / f"student-{name}" / "model.safetensors").is_file()
        assert report["objective"] == "onpolicy" and report["rounds_done"] == 1
        assert rows[name]["student_tokens_sampled"] == report["tokens"] > 0
        assert rows[name]["teacher_tokens_scored"] == report["teacher_tokens_scored"] > 0
    # where each on-policy recipe starts, and who scores it
    reports = summary["train_recipes"]
    assert reports["onpolicy"]["model"] == tiny_model and reports["onpolicy"]["teacher"] == tiny_model
    assert reports["sft-onpolicy"]["model"] == str(run / "student")
    assert reports["self"]["model"] == reports["self"]["teacher"] == str(run / "student")
    assert "SFT'd student" in rows["self"]["scorer"]
    # vote: no reference answer reached the samples it filtered, the majority did
    unlabelled = [json.loads(line) for line in (run / "samples-unlabelled.jsonl").read_text().splitlines()]
    assert len(unlabelled) == 6 and all(s["reference"] is None for s in unlabelled)
    voted = [json.loads(line) for line in (run / "kept-vote.jsonl").read_text().splitlines()]
    assert voted and all(s["meta"]["vote"]["answer"] == s["reference"] for s in voted)
    assert (run / "student-vote" / "model.safetensors").is_file()
    # labels and teacher tokens as the recipes used them
    generated = summary["generate"]["completion_tokens"]
    assert generated > 0
    assert [rows[n]["labels_used"] for n in expected_eval] == [3, 0, 3, 3, 0, 3]
    assert [rows[n]["teacher_tokens_generated"] for n in expected_eval] == [generated, 0, generated, 0, generated,
                                                                             generated]  # fmt: skip
    # the paired tests come from the evals' per-prompt verdicts, read back from the eval files
    for name, key in expected_eval.items():
        verdicts = _verdicts(run, summary["eval"][key]["output"])
        assert summary["eval"][key]["per_prompt"] == {pid: [int(ok), 1] for pid, ok in verdicts.items()}
        if name != "sft":
            assert rows[name]["vs_baseline"]["b"] == "sft" and rows[name]["vs_baseline"]["prompts"] == 2
        assert rows[name]["vs_untrained"]["b"] == "student_before"
    assert rows["sft"]["vs_baseline"] is None  # not compared with itself
    # seconds: each stage in one row only; the table is printed at the end
    stages = [s for r in table["rows"] for s in r["seconds_split"]]
    assert len(stages) == len(set(stages)) and "onpolicy_self" in rows["self"]["seconds_split"]
    assert "train" in rows["sft"]["seconds_split"] and "train" not in rows["sft-onpolicy"]["seconds_split"]
    assert set(table["shared_seconds"]) >= {"generate", "filter", "eval_teacher", "eval_student_before"}
    assert table["markdown"].splitlines()[0] in result.output
    assert "| (a) SFT |" in result.output


def _verdicts(run: Path, output: str) -> dict[str, bool]:
    """Each held-out prompt's verdict, recomputed from the eval's samples with the math check."""
    from seqdistill.checks.answers import get_check
    from seqdistill.checks.answers.base import score

    check = get_check("math")
    found = {}
    for line in Path(output).read_text().splitlines():
        s = json.loads(line)
        found[s["prompt_id"]] = score(check, s["completion"][-1]["content"], s["reference"]).correct is True
    return found


def _eval(right: list[int]) -> dict:
    c = sum(right)
    return {"accuracy": c / len(right), "accuracy_ci": list(wilson_interval(c, len(right))), "correct": c,
            "samples": len(right), "per_prompt": {f"h{i}": [r, 1] for i, r in enumerate(right)}}  # fmt: skip


def test_the_table_holds_paired_differences_computed_from_the_per_prompt_results(tmp_path):
    cfg = PipelineConfig.model_validate(
        {
            "run_dir": str(tmp_path),
            "reference_baseline": True,
            "train": {"model": "bundled:smollm2"},
            "generate": {"prompts": {"source": str(ROOT / "prompts/arithmetic/train.jsonl"), "limit": 5}},
            "eval": {"prompts": {"source": "h.jsonl"}},
            "compare_to": "reference",
            "recipes": [{"name": "sft"}, {"name": "reference", "sft": "reference"}, {"name": "onp", "onpolicy": True}],
        }  # fmt: skip
    ).resolved()
    a = [1, 1, 1, 1, 0, 0, 1, 0, 1, 1]
    ref = [0, 0, 1, 0, 0, 0, 1, 0, 0, 1]
    onp = [1, 0, 1, 1, 1, 0, 1, 0, 1, 1]
    before = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    samples = [
        make_sample("p1", 0, usage={"completion_tokens": 600}),
        make_sample("p1", 1, usage={"completion_tokens": 634}),
        make_sample("p2", 0, usage={"request_completion_tokens": 50}),
        make_sample("p2", 1, usage={"request_completion_tokens": 50}),
    ]  # one request's total: counted once
    write_jsonl(Path(cfg.generate.output), samples)
    summary = {"generate": {"completion_tokens": 0},  # a resumed run: its generate made nothing new
               "eval": {"teacher": _eval(ref), "student_before": _eval(before), "student_after": _eval(a),
                        "student_reference": _eval(ref), "recipe_onp": _eval(onp)}}  # fmt: skip
    seconds = {"generate": 10.0, "train": 5.0, "eval_student_after": 2.0, "train_reference": 3.0,
               "eval_student_reference": 2.0, "onpolicy_onp": 7.0, "eval_recipe_onp": 2.5}  # fmt: skip
    report = {"onp": {"teacher": "bundled:smollm2", "teacher_tokens_scored": 900, "tokens": 900}}
    table = recipes.comparison(cfg, summary, seconds, report)
    rows = {r["name"]: r for r in table["rows"]}
    sft = rows["sft"]["vs_baseline"]  # a - reference: a right alone on 4 prompts, reference never alone
    assert (sft["a"], sft["b"], sft["a_better"], sft["b_better"]) == ("sft", "reference", 4, 0)
    assert sft["p_value"] == mcnemar_exact(4, 0) == 0.125
    assert (sft["ci_low"], sft["ci_high"]) == pytest.approx(newcombe_paired_interval(3, 4, 0, 3))
    onp = rows["onp"]["vs_untrained"]
    assert (onp["difference"], onp["a_better"], onp["b_better"]) == (pytest.approx(0.7), 7, 0)
    assert onp["p_value"] == mcnemar_exact(7, 0)
    assert rows["reference"]["vs_baseline"] is None
    assert (rows["onp"]["ci_low"], rows["onp"]["ci_high"]) == pytest.approx(wilson_interval(7, 10))
    # the SFT start is counted once, in the first row that needs it; the rest is shared
    assert rows["sft"]["seconds"] == 7.0 and rows["onp"]["seconds_split"] == {"onpolicy_onp": 7.0,
                                                                              "eval_recipe_onp": 2.5}  # fmt: skip
    assert table["shared_seconds"] == {"generate": 10.0}
    assert (rows["onp"]["teacher_tokens_scored"], rows["onp"]["teacher_tokens_generated"]) == (900, 1284)
    assert rows["reference"]["labels_used"] == 5 and rows["reference"]["teacher_tokens_generated"] == 0
    line = next(x for x in table["markdown"].splitlines() if x.startswith("| onp |"))
    assert "70.0% [39.7, 89.2] (7/10)" in line and "+70.0 pts" in line
    # the report page shows the same table
    from seqdistill.report.page import recipes_html

    page = recipes_html(json.loads(json.dumps(table)))
    assert "<th>vs reference</th>" in page and "p 0.125" in page and page.count("<tr>") == 1 + 5


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"name": "x", "teacher": "self", "onpolicy": True, "sft": "none"}, "teacher self needs an SFT'd student"),
        ({"name": "x", "train": {"learning_rate": 1}}, "apply to on-policy recipes"),
        ({"name": "Bad Name"}, "name"),
        ({"name": "x", "onpolicy": True, "train": {"onpolicy": {"rounds": 0}}}, "recipe x: train.onpolicy.rounds"),
        ({"name": "x", "onpolicy": True, "train": {"lora": True}}, "recipe x: train.: objective onpolicy does not"),
        ({"name": "x", "sft": "reference"}, "sft reference needs reference_baseline: true"),
    ],
)
def test_a_recipe_that_cannot_run_is_refused_before_any_work(tmp_path, recipe, message):
    data = {"run_dir": str(tmp_path), "train": {"model": "bundled:smollm2"}, "eval": {"prompts": {"source": "h"}},
            "recipes": [recipe]}  # fmt: skip
    with pytest.raises((ConfigError, ValueError), match=message):
        recipes.check(PipelineConfig.model_validate(data).resolved())


def test_recipe_names_are_unique_and_compare_to_names_one():
    with pytest.raises(ValueError, match="two recipes are named 'a'"):
        PipelineConfig.model_validate({"recipes": [{"name": "a"}, {"name": "a", "sft": "vote"}]})
    with pytest.raises(ValueError, match="compare_to 'b' names no recipe"):
        PipelineConfig.model_validate({"recipes": [{"name": "a"}], "compare_to": "b"})


@pytest.mark.parametrize("path", ["configs/demo-onpolicy-cpu.yaml", "configs/gsm8k-qwen2.5-7b-to-1.5b-gpu.yaml"])
def test_the_shipped_recipe_configs_validate_without_a_gpu(path):
    cfg = load_pipeline(str(ROOT / path))
    for r in cfg.recipes:
        if r.onpolicy:
            t = recipes.onpolicy_config(cfg, r)
            assert t.objective == "onpolicy" and t.onpolicy.prompts is not None
    assert recipes.eval_configs(cfg).keys() >= {recipes.eval_name(r) for r in cfg.recipes if r.onpolicy}
