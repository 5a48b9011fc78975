"""run: the whole recipe, each stage's output feeding the next.

generate (teacher) -> filter -> [eval teacher, eval student before] -> train -> [eval student after].
The held-out evals use the eval section's prompts: the teacher with its own prompt rendering, the
student with the bare student prompt, before and after training. Every stage resumes or is cheap to
redo, so re-running a pipeline after a crash continues where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from seqdistill.config import EvalConfig, GenerateConfig, PipelineConfig
from seqdistill.io import write_json
from seqdistill.stages import evaluate, filter, generate, train

log = logging.getLogger(__name__)


def eval_configs(cfg: PipelineConfig) -> dict[str, EvalConfig]:
    """The three held-out evals: teacher (with its context), student before and after training."""
    assert cfg.eval is not None
    d = Path(cfg.run_dir)
    g = cfg.generate
    # how to reach and run the teacher comes from generate; what to ask (prompts, sampling, n) from eval
    teacher_keys = set(GenerateConfig.model_fields) - {
        "prompts", "output", "n", "sampling", "shard", "logprobs", "max_requests", "max_output_tokens", "max_cost",
        "pilot_prompts", "allow_mixed_output",
    }  # fmt: skip
    teacher = cfg.eval.model_copy(deep=True, update={k: getattr(g, k) for k in teacher_keys})
    teacher.prompt, teacher.output = "teacher", str(d / "eval-teacher.jsonl")
    student = {"backend": "transformers", "prompt": "student"}
    before = cfg.eval.model_copy(
        deep=True, update={**student, "model": cfg.train.model, "output": str(d / "eval-student-before.jsonl")}
    )
    after = cfg.eval.model_copy(
        deep=True, update={**student, "model": cfg.train.output, "output": str(d / "eval-student-after.jsonl")}
    )
    return {"teacher": teacher, "student_before": before, "student_after": after}


def run(cfg: PipelineConfig) -> dict[str, Any]:
    summary: dict[str, Any] = {"run_dir": cfg.run_dir}
    log.info("generate: teacher %s (%s) -> %s", cfg.generate.model, cfg.generate.backend, cfg.generate.output)
    summary["generate"] = generate.run(cfg.generate)
    if summary["generate"]["interrupted"]:
        return summary
    summary["filter"] = filter.run(cfg.filter)
    evals = eval_configs(cfg) if cfg.eval else {}
    summary["eval"] = {}
    for name in ("teacher", "student_before"):
        if name in evals:
            log.info("eval %s: %s", name, evals[name].model)
            summary["eval"][name] = evaluate.run(evals[name])
    log.info("train: student %s on %s -> %s", cfg.train.model, cfg.train.input, cfg.train.output)
    summary["train"] = train.run(cfg.train)
    if "student_after" in evals:
        log.info("eval student_after: %s", evals["student_after"].model)
        summary["eval"]["student_after"] = evaluate.run(evals["student_after"])
    write_json(Path(cfg.run_dir) / "summary.json", summary)
    return summary
