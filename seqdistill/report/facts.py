"""What a run dir holds, read and checked for the report: `gather` -> `RunFacts`, completion lengths -> `KeptStats`.

Every file is checked against a small pydantic shape up front, so a hand-edited or foreign file becomes one
line, not a crash; a part the run did not produce is None.
Not covered: drawing or writing anything (figures.py, page.py, card.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seqdistill import models, rundir
from seqdistill.errors import ConfigError, DataError, SeqdistillError
from seqdistill.extras import installed
from seqdistill.io import read_samples
from seqdistill.models import resolve_model
from seqdistill.records import Sample
from seqdistill.rundir import RunDir
from seqdistill.summary import comparisons, from_disk

log = logging.getLogger(__name__)

CARD_MARKER = "<!-- written by seqdistill report -->"
EVALS = {
    "teacher": "teacher",
    "student_before": "student before",
    "student_after": "student after",
    "student_reference": "student on references",  # the reference_baseline control, when the run has it
}
OPTIONAL_EVALS = {"student_reference"}
LengthFn = Callable[[list[str]], list[int]]


@dataclass
class RunFacts:
    """What a run dir holds; each part is None when the run did not produce it."""

    run_dir: Path
    summary: dict[str, Any]
    kept: Path | None = None
    kept_name: str = "kept.jsonl"
    filter: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    student: Path | None = None
    evals: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None


@dataclass
class KeptStats:
    """Completion lengths of the kept samples, measured in `unit`; `error` says why they could not be read."""

    lengths: list[int] = field(default_factory=list)
    unit: str = "whitespace-separated words"
    first: Sample | None = None
    longest: Sample | None = None
    longest_length: int = -1
    error: str | None = None

    @property
    def count(self) -> int:
        return len(self.lengths)


# ---- reading the run dir -------------------------------------------------------------------------------------


def gather(run_dir: Path) -> RunFacts:
    """What the run dir holds: the summary built from its manifests and reports (summary.from_disk), over the
    summary.json a `seqdistill run` left (its recorded paths locate files kept elsewhere; what is on disk wins)."""
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory; {HINT}")
    recorded = _load_summary(run_dir) if (run_dir / rundir.SUMMARY).is_file() else {}
    facts = RunFacts(run_dir, recorded)
    f, t, g = (recorded.get(k) or {} for k in ("filter", "train", "generate"))
    samples = locate(facts, g.get("output"), rundir.SAMPLES)
    facts.kept = locate(facts, f.get("output"), rundir.KEPT)
    facts.student = locate(facts, t.get("output"), rundir.STUDENT)
    paths = {"samples": samples, "kept": facts.kept, "student": facts.student}
    disk = from_disk(run_dir, {k: str(v) for k, v in paths.items() if v is not None})
    facts.summary = summary = _merge(recorded, disk)
    if not any(summary.get(k) for k in ("generate", "filter", "train", "eval")) and facts.kept is None:
        raise ConfigError(f"{run_dir}: no seqdistill outputs in it (samples, kept samples, student, evals); {HINT}")
    f, t = summary.get("filter") or {}, summary.get("train") or {}
    facts.kept_name = Path(f.get("output") or rundir.KEPT).name
    report_file = locate(facts, f.get("report"), "kept.report.json")
    facts.filter = read_part(report_file, FilterPart) if report_file else (f if f.get("funnel") else None)
    if report_file and facts.filter is None:  # unreadable or wrong-typed on disk (logged): summary.json's, if any
        facts.filter = summary["filter"] = recorded.get("filter") or None
    facts.train = t or (read_part(rundir.training_report_path(facts.student), TrainPart) if facts.student else None)
    facts.evals = summary.get("eval") or {}
    if samples:
        facts.manifest = read_part(rundir.manifest_path(samples), ManifestPart)
    return facts


HINT = (
    "run the stages into it (`seqdistill generate --output DIR/samples.jsonl`, `filter DIR/samples.jsonl --output "
    "DIR/kept.jsonl`, ...) or `seqdistill run --config <recipe>` first"
)


def _merge(recorded: dict[str, Any], disk: dict[str, Any]) -> dict[str, Any]:
    """summary.json's parts, each updated by what the run dir's manifests and reports say now."""
    merged = {**recorded}
    for key, part in disk.items():
        if key == "eval":
            merged["eval"] = {**(recorded.get("eval") or {}), **part}
        elif isinstance(part, dict):
            merged[key] = {**(recorded.get(key) or {}), **part}
        elif key != "run_dir" or "run_dir" not in merged:
            merged[key] = part
    if "eval" in disk:
        merged["comparisons"] = comparisons({k: v for k, v in merged["eval"].items() if isinstance(v, dict)})
    return merged


def _load_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json, as `seqdistill run` writes it: checked, so a hand-edited or foreign file is one line."""
    path = run_dir / rundir.SUMMARY
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e}); rerun `seqdistill run --config <recipe>` to rewrite it") from None
    if not isinstance(summary, dict):
        raise DataError(f"{path}: expected a JSON object; rerun `seqdistill run --config <recipe>` to rewrite it")
    if problem := _type_problem(SummaryFile, summary):
        raise DataError(f"{path}: {problem}; rerun `seqdistill run --config <recipe>` to rewrite it")
    return summary


def locate(facts: RunFacts, given: str | None, default: str) -> Path | None:
    """An existing path for a file the summary names, or None (`RunDir.locate`: inside the run dir first)."""
    return RunDir(facts.run_dir).locate(given, default, facts.summary.get("run_dir"))


def read_part(path: Path | None, schema: type[BaseModel]) -> dict[str, Any] | None:
    """A JSON object from `path`, or None (logged) when absent, unreadable or wrong-typed: reports are optional."""
    if path is None or not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s: cannot read it (%s); leaving it out of the report", path, e)
        return None
    if not isinstance(obj, dict):
        return None
    if problem := _type_problem(schema, obj):
        log.warning("%s: %s; leaving it out of the report", path, problem)
        return None
    return obj


# ---- the shapes the report reads: checked up front, so a hand-edited or foreign file is one line, not a crash ---


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class FunnelRow(_Part):
    rule: str
    in_: int = Field(alias="in")
    dropped: int
    kept: int
    examples: list[dict[str, str]] | None = None


class FilterPart(_Part):
    output: str | None = None
    report: str | None = None
    funnel: list[FunnelRow] | None = None
    total: int | None = None
    kept: int | None = None
    answer_check: dict[str, Any] | None = None


class GeneratePart(_Part):
    output: str | None = None
    prompts: int | None = None
    requested: int | None = None
    generated: int | None = None
    truncated: int | None = None
    failed: int | None = None
    interrupted: bool | None = None


class LossPoint(_Part):
    step: float
    loss: float | None = None


class KdPart(_Part):
    alpha: float | None = None
    temperature: float | None = None
    k: int | None = None
    coverage: float | None = None


class TrainPart(_Part):
    model: str | None = None
    output: str | None = None
    loss_history: list[LossPoint] | None = None
    eval_loss: float | None = None
    kd: KdPart | None = None


class EvalPart(_Part):
    model: str | None = None
    samples: int | None = None
    accuracy: float | None = None
    majority_accuracy: float | None = None
    interrupted: bool | None = None


class EvalsPart(_Part):  # the evals the report shows; other keys (e.g. comparisons) are not its business
    teacher: EvalPart | None = None
    student_before: EvalPart | None = None
    student_after: EvalPart | None = None
    student_reference: EvalPart | None = None


class SummaryFile(_Part):
    run_dir: str | None = None
    generate: GeneratePart | None = None
    filter: FilterPart | None = None
    train: TrainPart | None = None
    eval: EvalsPart | None = None


class ManifestPart(_Part):
    teacher: dict[str, Any] | None = None
    sampling: dict[str, Any] | None = None
    n: int | None = None
    prompts_source: str | None = None


def _type_problem(schema: type[BaseModel], obj: dict[str, Any]) -> str | None:
    """'field generate.prompts: Input should be a valid integer (got "lots")', or None when `obj` fits."""
    try:
        schema.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "the top level"
        got = json.dumps(first.get("input"), default=str)
        return f"field {loc}: {first['msg']} (got {got[:60]})"
    return None


# ---- completion lengths --------------------------------------------------------------------------------------


def kept_stats(facts: RunFacts) -> KeptStats:
    """Count and measure the kept completions (reasoning trace + answer), streaming the file in batches."""
    if facts.kept is None:
        return KeptStats(error=f"no kept samples: {facts.kept_name} is not in {facts.run_dir} (no filter stage ran?)")
    count, unit = length_counter(facts)
    stats, batch = KeptStats(unit=unit), []
    try:
        for sample in read_samples(facts.kept):
            stats.first = stats.first or sample
            batch.append(sample)
            if len(batch) == 256:
                _measure(stats, batch, count)
                batch = []
        _measure(stats, batch, count)
    except DataError as e:
        return KeptStats(error=str(e))
    return stats


def _measure(stats: KeptStats, batch: list[Sample], count: LengthFn) -> None:
    if not batch:
        return
    for sample, n in zip(batch, count([s.completion_text() for s in batch]), strict=True):
        if n > stats.longest_length:
            stats.longest, stats.longest_length = sample, n
        stats.lengths.append(n)


def length_counter(facts: RunFacts) -> tuple[LengthFn, str]:
    """How to measure completions: the trained student's tokenizer, else the base model's, else words."""
    candidates = []
    if facts.student and any((facts.student / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        candidates.append((str(facts.student), f"tokens (trained student's tokenizer, {facts.student})"))
    if base := (facts.train or {}).get("model"):
        candidates.append((base, f"tokens (base student model's tokenizer, {base})"))
    if candidates and not installed("transformers"):  # the core install: words, and how to get tokens
        log.info("completion lengths in words: token counts need `pip install 'seqdistill[train]'`")
        return _words, "whitespace-separated words (token counts need `pip install 'seqdistill[train]'`)"
    for name, unit in candidates:
        if (tokenizer := load_tokenizer(name)) is not None:

            def count(texts: list[str], tok=tokenizer) -> list[int]:
                return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]

            return count, unit
    return _words, "whitespace-separated words (no tokenizer could be loaded)"


def _words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def load_tokenizer(name: str):
    """transformers' AutoTokenizer for a model dir or hub id, or None (logged) when it does not load.

    A path that does not exist is skipped without importing transformers; a hub id is tried (offline with
    HF_HUB_OFFLINE=1). A bundled name is materialized into the cache first, as training does.
    """
    try:
        path = resolve_model(name)
    except SeqdistillError as e:
        log.warning("no tokenizer for %s: %s", name, e)
        return None
    local = Path(path).is_absolute() or path.startswith((".", "~")) or path.count("/") > 1
    if not Path(path).is_dir() and (local or Path(path).exists()):
        log.info("no tokenizer at %s: not a directory", path)
        return None
    try:
        return models.load_tokenizer(path)
    except SeqdistillError as e:
        log.warning("%s", e)
        return None
    except Exception as e:  # hub errors and the like: any failure means the next fallback
        log.warning("cannot load the tokenizer of %s (%s: %s)", path, type(e).__name__, _first_line(e))
        return None


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0][:200]


def first_example(examples: list[dict[str, Any]]) -> list[str]:
    first = examples[0] if examples else {}
    return [first.get("reason", ""), clip(first.get("completion", ""), 160)]


def accuracy_ci(r: dict[str, Any]) -> tuple[float | None, float | None]:
    """An eval's (low, high) interval, or (None, None) when it has none (an older summary.json)."""
    ci = r.get("accuracy_ci")
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci):
        return float(ci[0]), float(ci[1])
    return None, None


def teacher_name(facts: RunFacts, kept: KeptStats) -> str:
    """The teacher model and backend, from the generate manifest, else a kept sample, else the teacher eval."""
    if facts.manifest and facts.manifest.get("teacher"):
        t = facts.manifest["teacher"]
        return f"{t.get('model')} ({t.get('backend')})"
    if kept.first and kept.first.teacher:
        return f"{kept.first.teacher.model} ({kept.first.teacher.backend})"
    return str((facts.evals.get("teacher") or {}).get("model") or "unknown")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pct(value: float | None) -> str:
    """An accuracy as the report writes it everywhere, tables and figure labels alike: one decimal, "62.5%"."""
    return "-" if value is None else f"{value:.1%}"
