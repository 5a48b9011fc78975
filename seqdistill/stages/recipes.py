"""recipes: several ways of training the same student, side by side, in one `seqdistill run`.

A pipeline config's `recipes:` lists them (config.RecipeConfig): each is an SFT start (`sft`: none, the
filtered teacher samples `kept`, the bare `reference` answers, or `vote`: the teacher samples that agree with
the teacher's majority answer, no reference answer used) optionally followed by on-policy distillation
(`onpolicy: true`, scored by the teacher or, `teacher: self`, by the SFT'd student given the teacher's prompt).
After the pipeline's own stages (which already train `kept` and, with `reference_baseline`, `reference`),
`run` trains what is still missing, evaluates every recipe's student on the held-out prompts and writes one
comparison table: `recipes.json` in the run dir and `summary["recipes"]`. Each row has the accuracy with its
95% interval, the paired difference (stats.compare: Newcombe interval and exact McNemar p with one greedy
sample per prompt) against the `compare_to` recipe and against the untrained student, the teacher tokens
generated and scored, the student tokens sampled, the reference answers used, and the seconds of the
recipe's own stages (a stage shared with an earlier row, such as the SFT that `sft: kept` recipes start from,
is counted once, in the first row that needs it; shared stages are listed under `shared_seconds`).

Run-dir parts: `samples-unlabelled.jsonl`, `kept-vote.jsonl` (+ its rejects and report), `student-vote/`,
`eval-student-vote.jsonl` for `sft: vote`; `student-<name>/` and `eval-recipe-<name>.jsonl` for on-policy
recipes. Limits: one seed per recipe (no run-to-run spread); p-values are not corrected for the several
comparisons; `teacher: self` counts the SFT'd student's scoring as teacher tokens scored (the `scorer`
column says who scored).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from seqdistill import fingerprint, rundir
from seqdistill.config import EvalConfig, PipelineConfig, RecipeConfig, TrainConfig
from seqdistill.errors import ConfigError
from seqdistill.io import read_json_object, read_samples, write_atomic, write_json
from seqdistill.stats import compare, format_interval, format_p

log = logging.getLogger(__name__)

RECIPES_FILE = "recipes.json"
# the eval that shows each SFT start's student, as pipeline.eval_configs names them
SFT_EVALS = {
    "none": "student_before", "kept": "student_after", "reference": "student_reference", "vote": "student_vote",
}  # fmt: skip
UNTRAINED = "student_before"
ONPOLICY_KEYS = (
    "learning_rate", "batch_size", "gradient_accumulation_steps", "lr_scheduler_type", "warmup_ratio", "seed", "dtype",
    "bf16", "gradient_checkpointing", "attn_implementation", "reasoning", "onpolicy",
)  # fmt: skip


@dataclass
class RecipeRow:
    """One row of the comparison table (a recipe, or a reference point: the teacher, the untrained student)."""

    name: str
    label: str
    kind: str  # "recipe", or "point": a model shown for reference (the teacher, the untrained student)
    eval: str
    model: str | None
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    correct: int | None
    samples: int | None
    labels_used: int = 0  # reference answers the recipe used (to filter, or as training targets)
    teacher_tokens_generated: int = 0
    teacher_tokens_scored: int = 0
    scorer: str | None = None  # who scored the student's tokens (on-policy recipes)
    student_tokens_sampled: int = 0
    seconds: float = 0.0  # the recipe's own stages (shared ones counted in the first row needing them)
    seconds_split: dict[str, float] = field(default_factory=dict)
    vs_baseline: dict[str, Any] | None = None  # stats.Comparison.to_dict(): this row minus compare_to
    vs_untrained: dict[str, Any] | None = None  # this row minus the untrained student


def check(cfg: PipelineConfig) -> None:
    """Refuse recipes that cannot run, before any work: one line naming the recipe and the fix."""
    for r in cfg.recipes:
        if cfg.eval is None:
            raise ConfigError("recipes: need an eval section (held-out prompts with references) to compare them")
        if r.sft == "reference" and not cfg.reference_baseline:
            raise ConfigError(f"recipe {r.name}: sft reference needs reference_baseline: true")
        if r.sft == "vote" and cfg.filter.check == "none":
            raise ConfigError(f"recipe {r.name}: sft vote needs filter.check (the answers it votes on)")
        if r.onpolicy:
            onpolicy_config(cfg, r)  # the merged train keys validate


def sft_student(cfg: PipelineConfig, sft: str) -> str:
    """Where the student a recipe starts from lives (a model name for `none`)."""
    d = Path(cfg.run_dir)
    return {"none": str(cfg.train.model), "kept": cfg.train.output, "reference": str(d / "student-reference"),
            "vote": str(d / "student-vote")}[sft]  # fmt: skip


def onpolicy_config(cfg: PipelineConfig, r: RecipeConfig) -> TrainConfig:
    """The recipe's on-policy train config: the train section, the recipe's own keys, its start and teacher.

    The student samples the generated prompts (generate.prompts: the same prompts, rendered for the student and,
    with worked examples or a system prompt, for the teacher) unless `onpolicy.prompts` is set.
    """
    # from the train section, the keys the on-policy loop uses (its SFT-only keys stay with the SFT); the recipe's
    # own `train` keys are taken as given, so one the loop cannot honour is refused
    data = cfg.train.model_dump(include=set(ONPOLICY_KEYS), exclude_unset=True)
    for key, value in r.train.items():
        if key == "onpolicy" and isinstance(value, dict):
            data["onpolicy"] = {**data.get("onpolicy", {}), **value}
        else:
            data[key] = value
    onpolicy = data.setdefault("onpolicy", {})
    onpolicy.setdefault("prompts", cfg.generate.prompts.model_dump(exclude_unset=True))
    start = sft_student(cfg, r.sft)
    if r.teacher == "self":
        onpolicy["teacher"] = start
        onpolicy["teacher_backend"] = "transformers"  # the SFT'd student is a local directory
    else:
        onpolicy.setdefault("teacher", cfg.generate.model)
    data.update(model=start, output=str(Path(cfg.run_dir) / f"student-{r.name}"), objective="onpolicy")
    data["input"] = cfg.filter.output  # the teacher samples, for onpolicy.sft_share
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:  # pydantic's first message, on one line, named by the recipe
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"recipe {r.name}: train.{loc}: {first['msg'].removeprefix('Value error, ')}") from None


def eval_configs(cfg: PipelineConfig) -> dict[str, EvalConfig]:
    """The held-out evals the recipes add: the vote-trained student, and each on-policy recipe's student."""
    assert cfg.eval is not None
    d = Path(cfg.run_dir)
    found: dict[str, EvalConfig] = {}

    def student(model: str, output: Path) -> EvalConfig:
        update = {"backend": "auto", "prompt": "student", "model": model, "output": str(output)}
        return cfg.eval.model_copy(deep=True, update=update)

    if any(r.sft == "vote" for r in cfg.recipes):
        found["student_vote"] = student(sft_student(cfg, "vote"), d / "eval-student-vote.jsonl")
    for r in cfg.recipes:
        if r.onpolicy:
            found[eval_name(r)] = student(str(d / f"student-{r.name}"), d / f"eval-recipe-{r.name}.jsonl")
    return found


def eval_name(r: RecipeConfig) -> str:
    return f"recipe_{r.name}" if r.onpolicy else SFT_EVALS[r.sft]


def unlabelled_samples(samples_path: str, output: Path) -> int:
    """The teacher's samples with their reference answers removed: what `vote` sees (labels it must not use)."""
    rows = []
    for s in read_samples(samples_path):
        s.reference = None
        rows.append(s.to_json())
    if not output.is_file() or output.read_text(encoding="utf-8").splitlines() != rows:  # unchanged: kept as is
        write_atomic(output, rows)
    return len(rows)


def train_or_reuse(tcfg: TrainConfig, what: str) -> dict[str, Any]:
    """Train `tcfg`, or reuse the student its output holds when it was trained with the same settings and inputs
    (its training report's fingerprint): a rerun of `run` redoes no finished recipe."""
    from seqdistill.stages import train

    recorded = read_json_object(rundir.training_report_path(tcfg.output))
    decision = fingerprint.decide(tcfg, recorded)
    if decision.reuse and recorded is not None:
        log.info("%s: %s unchanged: reusing it", what, tcfg.output)
        return recorded
    log.info("%s: %s: student %s on %s -> %s", what, decision.why, tcfg.model, tcfg.input, tcfg.output)
    return train.run(tcfg).to_json()


def train_vote(cfg: PipelineConfig, seconds: dict[str, float]) -> dict[str, Any]:
    """Label the prompts by the teacher's majority answer (filter `vote`), then SFT the student on what agrees."""
    from seqdistill.stages import filter

    d = Path(cfg.run_dir)
    t0 = time.monotonic()
    count = unlabelled_samples(cfg.generate.output, d / "samples-unlabelled.jsonl")
    fcfg = cfg.filter.model_copy(
        update={"input": str(d / "samples-unlabelled.jsonl"), "output": str(d / "kept-vote.jsonl"), "vote": True}
    )
    log.info("vote: %d teacher samples without their references; majority answers as the labels", count)
    recorded = read_json_object(rundir.filter_report_path(fcfg.output_path()))
    if fingerprint.decide(fcfg, recorded).reuse and recorded is not None:
        log.info("filter vote: %s unchanged: reusing it", fcfg.output_path())
        report = recorded
    else:
        report = filter.run(fcfg).to_json()
    t1 = time.monotonic()
    tcfg = cfg.train.model_copy(
        update={"input": fcfg.output, "output": sft_student(cfg, "vote"), "kd_alpha": 0.0, "objective": "sft"}
    )
    trained = train_or_reuse(tcfg, "train vote")
    seconds["filter_vote"], seconds["train_vote"] = round(t1 - t0, 1), round(time.monotonic() - t1, 1)
    return {"filter": report, "train": trained}


def run(cfg: PipelineConfig, summary: dict[str, Any], seconds: dict[str, float], evaluate_fn) -> dict[str, Any]:
    """Train and evaluate every recipe not yet done, then build, write and return the comparison table.

    `summary` is the pipeline's (its evals and training reports are reused); `seconds` its stage timings (this
    adds the recipes' own); `evaluate_fn(name, EvalConfig)` runs one eval into summary["eval"] and returns False
    when it was interrupted (the pipeline then stops).
    """
    evals = eval_configs(cfg)
    if any(r.sft == "vote" for r in cfg.recipes):
        summary["vote"] = train_vote(cfg, seconds)
        if not _timed_eval(evaluate_fn, "student_vote", evals["student_vote"], seconds):
            return {}
    reports: dict[str, dict[str, Any]] = {}
    for r in cfg.recipes:
        if not r.onpolicy:
            continue
        tcfg = onpolicy_config(cfg, r)
        log.info("recipe %s: on-policy from %s, teacher %s -> %s", r.name, tcfg.model, tcfg.onpolicy.teacher,
                 tcfg.output)  # fmt: skip
        t0 = time.monotonic()
        reports[r.name] = train_or_reuse(tcfg, f"recipe {r.name}")
        seconds[f"onpolicy_{r.name}"] = round(time.monotonic() - t0, 1)
        if not _timed_eval(evaluate_fn, eval_name(r), evals[eval_name(r)], seconds):
            return {}
    summary["train_recipes"] = reports
    table = comparison(cfg, summary, seconds, reports)
    write_json(Path(cfg.run_dir) / RECIPES_FILE, table)
    return table


def _timed_eval(evaluate_fn, name: str, ecfg: EvalConfig, seconds: dict[str, float]) -> bool:
    t0 = time.monotonic()
    ok = evaluate_fn(name, ecfg)
    seconds[f"eval_{name}"] = round(time.monotonic() - t0, 1)
    return ok


def comparison(
    cfg: PipelineConfig, summary: dict[str, Any], seconds: dict[str, float], reports: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The table: reference points (teacher, untrained student), then one row per recipe, with paired tests."""
    evals = summary.get("eval") or {}
    baseline = next(r for r in cfg.recipes if r.name == (cfg.compare_to or cfg.recipes[0].name))
    rows = [_point("teacher", "teacher (with the worked examples in its prompt)", evals),
            _point(UNTRAINED, "untrained student", evals)]  # fmt: skip
    labels = sum(1 for _ in _prompt_references(cfg))
    generated = teacher_tokens(cfg.generate.output)
    counted: set[str] = set()  # shared stages already counted in an earlier row
    for r in cfg.recipes:
        row = _point(eval_name(r), r.label or r.name, evals, name=r.name)
        row.labels_used = labels if r.sft in ("kept", "reference") else 0  # kept: the filter checked them
        row.teacher_tokens_generated = generated if r.sft in ("kept", "vote") else 0
        own = [s for s in _stages(r) if s not in counted and s in seconds]
        counted.update(own)
        row.seconds_split = {s: seconds[s] for s in own}
        row.seconds = round(sum(row.seconds_split.values()), 1)
        if r.onpolicy and (rep := reports.get(r.name)):
            row.teacher_tokens_scored = int(rep.get("teacher_tokens_scored") or 0)
            row.student_tokens_sampled = int(rep.get("tokens") or 0)
            row.scorer = "the SFT'd student, with the teacher's prompt" if r.teacher == "self" else str(rep["teacher"])
        row.vs_baseline = _compare(evals, eval_name(r), eval_name(baseline), r.name, baseline.name)
        row.vs_untrained = _compare(evals, eval_name(r), UNTRAINED, r.name, UNTRAINED)
        rows.append(row)
    shared = {k: v for k, v in seconds.items() if k not in counted}
    return {"compare_to": baseline.name, "rows": [asdict(r) for r in rows], "shared_seconds": shared,
            "markdown": markdown(rows, baseline.name)}  # fmt: skip


def teacher_tokens(samples_path: str) -> int:
    """Completion tokens the teacher generated, over every sample of the file (a resumed run's too).

    An API that reports one total for a request's n choices (`usage.request_completion_tokens`) is counted once
    per prompt and total (the samples of one request share it).
    """
    if not Path(samples_path).is_file():
        return 0
    total, requests = 0, set()
    for s in read_samples(samples_path):
        if s.usage is None:
            continue
        if s.usage.completion_tokens is not None:
            total += s.usage.completion_tokens
        elif (shared := getattr(s.usage, "request_completion_tokens", None)) is not None:
            requests.add((s.prompt_id, int(shared)))
    return total + sum(tokens for _, tokens in requests)


def _stages(r: RecipeConfig) -> list[str]:
    """The timed stages a recipe's student needs (names as in the pipeline's `seconds`)."""
    sft = {
        "none": [], "kept": ["train", "eval_student_after"],
        "reference": ["train_reference", "eval_student_reference"],
        "vote": ["filter_vote", "train_vote", "eval_student_vote"],
    }[r.sft]  # fmt: skip
    if not r.onpolicy:
        return sft
    return [s for s in sft if not s.startswith("eval_")] + [f"onpolicy_{r.name}", f"eval_{eval_name(r)}"]


def _prompt_references(cfg: PipelineConfig):
    from seqdistill.prompts import load_prompts

    return (p for p in load_prompts(cfg.generate.prompts) if p.reference)


def _point(eval_key: str, label: str, evals: dict[str, Any], name: str | None = None) -> RecipeRow:
    """A row with an eval's accuracy and interval (empty when that eval did not run)."""
    e = evals.get(eval_key) or {}
    low, high = e.get("accuracy_ci") or (None, None)
    return RecipeRow(
        name=name or eval_key, label=label, kind="recipe" if name else "point", eval=eval_key, model=e.get("model"),
        accuracy=e.get("accuracy"), ci_low=low, ci_high=high, correct=e.get("correct"), samples=e.get("samples"),
    )  # fmt: skip


def _compare(evals: dict[str, Any], a: str, b: str, name_a: str, name_b: str) -> dict[str, Any] | None:
    ra, rb = evals.get(a) or {}, evals.get(b) or {}
    if a == b or ra.get("per_prompt") is None or rb.get("per_prompt") is None:
        return None
    return compare(ra["per_prompt"], rb["per_prompt"], names=(name_a, name_b)).to_dict()


def markdown(rows: list[RecipeRow], baseline: str) -> str:
    """The comparison as a Markdown table (what `seqdistill run` prints and docs/onpolicy.md shows)."""
    heads = [
        "recipe", "held-out accuracy [95% CI]", f"vs {baseline} [95% CI], p", "vs untrained [95% CI], p", "labels",
        "teacher tokens generated", "teacher tokens scored", "student tokens sampled", "seconds",
    ]  # fmt: skip
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        acc = format_interval(r.accuracy, r.ci_low, r.ci_high)
        if r.correct is not None:
            acc += f" ({r.correct}/{r.samples})"
        cells = [r.label, acc, _diff(r.vs_baseline), _diff(r.vs_untrained)]
        if r.kind == "point":
            cells += ["", "", "", "", ""]
        else:
            cells += [str(r.labels_used), f"{r.teacher_tokens_generated:,}", f"{r.teacher_tokens_scored:,}",
                      f"{r.student_tokens_sampled:,}", f"{r.seconds:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _diff(c: dict[str, Any] | None) -> str:
    if not c or c.get("difference") is None:
        return ""
    p = format_p(c["p_value"])
    diff = format_interval(c["difference"], c["ci_low"], c["ci_high"], signed=True)
    return f"{diff}, p {'' if p.startswith('<') else '= '}{p}"
