"""The pipeline's held-out evals: how to reach the teacher comes from `generate`, what to ask from `eval`."""

import pytest

from seqdistill.config import PipelineConfig
from seqdistill.stages.pipeline import eval_configs


def test_teacher_eval_reaches_the_teacher_like_generate_and_asks_like_eval():
    cfg = PipelineConfig.model_validate(
        {
            "run_dir": "runs/x",
            "generate": {
                "backend": "openai",
                "model": "big",
                "base_url": ["http://a/v1", "http://b/v1"],
                "http_client": "openai",
                "api_key_env": "KEY",
                "n": 8,
                "shard": "0/2",
                "sampling": {"temperature": 0.9},
                "prompts": {"source": "train.jsonl"},
            },
            "train": {"model": "small"},
            "eval": {"prompts": {"source": "heldout.jsonl"}, "check": "numeric"},
        }
    ).resolved()
    evals = eval_configs(cfg)
    teacher, before, after = evals["teacher"], evals["student_before"], evals["student_after"]
    assert (teacher.backend, teacher.model, teacher.base_url) == ("openai", "big", ["http://a/v1", "http://b/v1"])
    assert (teacher.http_client, teacher.api_key_env, teacher.prompt) == ("openai", "KEY", "teacher")
    assert (teacher.n, teacher.shard, teacher.sampling.temperature) == (1, None, 0.0)  # eval's, not generate's
    assert teacher.prompts.source == "heldout.jsonl" and teacher.check == "numeric"
    assert (before.backend, before.model, before.prompt) == ("auto", "small", "student")  # vLLM on a GPU
    assert after.model == "runs/x/student"
    assert len({teacher.output, before.output, after.output}) == 3


def _eval(right: list[int]) -> dict:
    return {"accuracy": sum(right) / len(right), "per_prompt": {f"h{i}": [r, 1] for i, r in enumerate(right)}}


def test_the_trained_student_is_compared_with_each_other_eval_that_finished():
    from seqdistill.stages.pipeline import comparisons

    evals = {
        "teacher": _eval([1, 1, 1, 0, 0]),
        "student_before": _eval([1, 0, 0, 0, 0]),
        "student_after": _eval([1, 1, 0, 1, 0]),
        "student_reference": {"interrupted": True, "generated": 2},  # no per-prompt scores: no comparison
    }
    found = comparisons(evals)
    assert [(c["a"], c["b"]) for c in found] == [("student_after", "student_before"), ("student_after", "teacher")]
    before, teacher = found
    assert (before["prompts"], before["a_better"], before["b_better"]) == (5, 2, 0)
    assert before["difference"] == pytest.approx(0.4)
    assert (before["test"], before["p_value"]) == ("mcnemar-exact", 0.5)  # 2 vs 0 discordant: 2 * 1/4
    assert (teacher["a_better"], teacher["b_better"], teacher["difference"]) == (1, 1, 0.0)
    assert comparisons({"student_after": evals["student_after"]}) == []
