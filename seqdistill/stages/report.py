"""report: one self-contained HTML page, its figures as PNGs, and a dataset card for a pipeline run dir.

Reads what `seqdistill run` left in RUN_DIR (summary.json, the kept samples, the filter and training
reports, the generate manifest) and writes:
- RUN_DIR/report/report.html: run facts, filter funnel, completion lengths, training loss, accuracy;
  figures inlined as base64 PNGs, inline CSS, no scripts, no external URLs (it opens offline, mails whole);
- RUN_DIR/report/{funnel,lengths,loss,accuracy}.png: the same figures;
- RUN_DIR/report/explore.html: the explorer of samples, rejects and model answers (seqdistill.viewer);
- README.md beside the kept samples: a Hugging Face dataset card (DATASET_CARD.md if a README.md that
  seqdistill did not write is already there).
A part the run did not produce (no eval section, no training, an interrupted eval) becomes a
"not available" note saying why; it never stops the report. A missing run dir or summary.json does.

Not covered here: comparing runs; browsing samples and rejects is the explorer's (seqdistill.viewer).
Kept completions are streamed, but their lengths are held in memory (one int each).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seqdistill import __version__, viewer
from seqdistill.errors import ConfigError, DataError, SeqdistillError
from seqdistill.extras import installed
from seqdistill.io import read_samples, write_atomic, write_bytes
from seqdistill.models import resolve_model
from seqdistill.records import Sample
from seqdistill.stats import format_interval, format_p

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


@dataclass
class Section:
    """One part of the page: a figure (PNG bytes) with its caption and an HTML body, or why it is missing."""

    key: str
    title: str
    figure: bytes | None = None
    caption: str = ""
    body: str = ""
    missing: str | None = None


def run(run_dir: str, max_samples: int = viewer.DEFAULT_MAX_SAMPLES) -> dict[str, Any]:
    """Write the report page, its figures, the explorer page and the dataset card; return their paths.

    `max_samples`: at most this many records per category in the explorer (see seqdistill.viewer).
    """
    facts = gather(Path(run_dir))
    kept = kept_stats(facts)
    sections = [funnel_section(facts.filter), lengths_section(kept), loss_section(facts), accuracy_section(facts)]
    out = facts.run_dir / "report"
    figures = {}
    for s in sections:
        png = out / f"{s.key}.png"
        if s.figure:
            write_bytes(png, s.figure)
            figures[s.key] = str(png)
        else:
            png.unlink(missing_ok=True)  # no stale figure from an earlier report
    explore = viewer.write(facts, kept, out, max_samples)
    page = out / "report.html"
    write_atomic(page, [render_html(facts, kept, sections, explore.name)])
    card = write_card(facts, kept)
    log.info("report -> %s (%d figures)", page, len(figures))
    missing = {s.key: s.missing for s in sections if s.missing}
    return {"html": str(page), "explore": str(explore), "figures": figures, "card": str(card) if card else None,
            "missing": missing}  # fmt: skip


# ---- reading the run dir -------------------------------------------------------------------------------------


def gather(run_dir: Path) -> RunFacts:
    """Locate the run's files from summary.json (falling back to the default names) and read its reports."""
    summary = _load_summary(run_dir)
    facts = RunFacts(run_dir, summary)
    f, t, g = (summary.get(k) or {} for k in ("filter", "train", "generate"))
    facts.kept = _locate(facts, f.get("output"), "kept.jsonl")
    facts.kept_name = Path(f.get("output") or "kept.jsonl").name
    facts.filter = (
        f if f.get("funnel") else _read_json(_locate(facts, f.get("report"), "kept.report.json"), FilterPart)
    )
    facts.student = _locate(facts, t.get("output"), "student")
    if t:
        facts.train = t
    elif facts.student:
        facts.train = _read_json(facts.student / "training_report.json", TrainPart)
    facts.evals = summary.get("eval") or {}
    samples = _locate(facts, g.get("output"), "samples.jsonl")
    if samples:
        facts.manifest = _read_json(samples.with_name(f"{samples.stem}.manifest.json"), ManifestPart)
    return facts


def _load_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json, which `seqdistill run` writes when the pipeline finishes; its absence is a user error."""
    hint = "run `seqdistill run --config <recipe>` first (or again, to finish an interrupted run)"
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory; {hint}")
    path = run_dir / "summary.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found, so {run_dir} is not a finished pipeline run; {hint}")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e}); rerun `seqdistill run --config <recipe>` to rewrite it") from None
    if not isinstance(summary, dict):
        raise DataError(f"{path}: expected a JSON object; rerun `seqdistill run --config <recipe>` to rewrite it")
    if problem := _type_problem(SummaryFile, summary):
        raise DataError(f"{path}: {problem}; rerun `seqdistill run --config <recipe>` to rewrite it")
    return summary


def _locate(facts: RunFacts, given: str | None, default: str) -> Path | None:
    """An existing path for a file the summary names, or None.

    Summary paths are relative to the cwd of the run (`runs/demo/kept.jsonl`): they are tried inside RUN_DIR
    first (under the recorded run_dir, then by file name), so a moved or copied run dir reads its own files,
    then as written, then the default name in RUN_DIR.
    """
    candidates = []
    if given:
        path, recorded = Path(given), Path(facts.summary.get("run_dir") or facts.run_dir)
        if not path.is_absolute() and path.is_relative_to(recorded):
            candidates.append(facts.run_dir / path.relative_to(recorded))
        candidates += [facts.run_dir / path.name, path]
    candidates.append(facts.run_dir / default)
    return next((p for p in candidates if p.exists()), None)


def _read_json(path: Path | None, schema: type[BaseModel]) -> dict[str, Any] | None:
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
    for sample, n in zip(batch, count([completion_text(s) for s in batch]), strict=True):
        if n > stats.longest_length:
            stats.longest, stats.longest_length = sample, n
        stats.lengths.append(n)


def completion_text(sample: Sample) -> str:
    """What the student learns to write: the whole completion's text (`Sample.completion_text`)."""
    return sample.completion_text()


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
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # OSError, ValueError, ImportError, hub errors: any failure means the next fallback
        log.warning("cannot load the tokenizer of %s (%s: %s)", path, type(e).__name__, _first_line(e))
        return None


# ---- sections ------------------------------------------------------------------------------------------------


def funnel_section(report: dict[str, Any] | None) -> Section:
    """The filter funnel: samples left after each rule and dropped by each, with an example reason per rule."""
    s = Section("funnel", "Filter funnel")
    if not report or not report.get("funnel"):
        s.missing = "no filter results (summary.json has no filter section and no filter report was found)"
        return s
    rows = report["funnel"]
    total, kept = report.get("total", rows[0]["in"]), report.get("kept", rows[-1]["kept"])
    s.figure = funnel_figure(rows, total)
    s.caption = f"{total} samples in, {kept} kept: samples left after each rule (left), dropped by each (right)."
    table = [[r["rule"], r["in"], r["dropped"], r["kept"], *_example(r.get("examples") or [])] for r in rows]
    s.body = html_table(["rule", "in", "dropped", "kept", "example reason", "example completion"], table)
    if check := report.get("answer_check"):
        counts = ", ".join(f"{k}: {v}" for k, v in check.items() if k != "name")
        s.body += f"<p>Answer check <code>{_e(check.get('name'))}</code> on the samples it saw: {_e(counts)}.</p>"
    return s


def _example(examples: list[dict[str, Any]]) -> list[str]:
    first = examples[0] if examples else {}
    return [first.get("reason", ""), _clip(first.get("completion", ""), 160)]


def lengths_section(kept: KeptStats) -> Section:
    """Histogram of kept completion lengths, a few quantiles, and the longest completion in full (clipped)."""
    s = Section("lengths", "Completion lengths of the kept samples")
    if kept.error or not kept.count:
        s.missing = kept.error or "the kept samples file holds no samples"
        return s
    s.figure = lengths_figure(kept.lengths, kept.unit)
    s.caption = f"{kept.count} kept completions, measured in {kept.unit}."
    q = sorted(kept.lengths)
    stats = [
        ["samples", kept.count], ["min", q[0]], ["median", statistics.median(q)],
        ["mean", round(statistics.fmean(q), 1)], ["95th percentile", q[math.ceil(0.95 * len(q)) - 1]], ["max", q[-1]],
    ]  # fmt: skip
    s.body = html_table(["", kept.unit.split(" (")[0]], stats)
    if kept.longest:
        prompt = kept.longest.prompt[-1].content
        s.body += (
            f"<h3>Longest kept completion ({kept.longest_length})</h3><p>Prompt <code>{_e(kept.longest.prompt_id)}"
            f"</code>: {_e(_clip(prompt, 300))}</p><pre>{_e(_clip(completion_text(kept.longest), 3000))}</pre>"
        )
    return s


def loss_section(facts: RunFacts) -> Section:
    """Training loss per logged step, the final eval loss when the run had one, and the training facts."""
    s = Section("loss", "Training loss")
    t = facts.train
    if not t:
        where = f"no {facts.student / 'training_report.json'}" if facts.student else "no student dir"
        s.missing = f"no training report (summary.json has no train section, and there is {where})"
        return s
    history = [h for h in t.get("loss_history") or [] if h.get("loss") is not None]
    if not history:
        s.missing = "the training report logged no loss (loss_history is empty: fewer steps than logging_steps?)"
        return s
    s.figure = loss_figure(history, t.get("eval_loss"))
    s.caption = f"Training loss of {t.get('model')} at each logged step" + (
        "; the star is the eval loss at the end." if t.get("eval_loss") is not None else "."
    )
    keys = ("examples", "epochs", "steps", "train_loss", "first_loss", "last_loss", "eval_loss", "tokens",
            "max_length", "truncated_examples", "seconds", "tokens_per_s")  # fmt: skip
    rows = [[k, t[k]] for k in keys if t.get(k) is not None]
    if kd := t.get("kd"):  # soft-target training: its settings and how much of the data it covered
        rows.append(["soft targets", f"kd_alpha {kd.get('alpha')}, T {kd.get('temperature')}, top-{kd.get('k')}, "
                                     f"{kd.get('coverage', 0):.0%} of supervised tokens"])  # fmt: skip
    s.body = html_table(["", "value"], rows)
    return s


def accuracy_section(facts: RunFacts) -> Section:
    """Held-out accuracy of teacher, student before and after training with 95% intervals; paired differences."""
    s = Section("accuracy", "Held-out accuracy")
    rows, absent = [], []
    has_majority = any(isinstance(r, dict) and r.get("majority_accuracy") is not None for r in facts.evals.values())
    for key, label in EVALS.items():
        r = facts.evals.get(key) or {}
        if not r and key in OPTIONAL_EVALS:
            continue
        if r.get("accuracy") is None:
            absent.append(f"{label}: " + ("interrupted" if r.get("interrupted") else "not evaluated in this run"))
            continue
        cells = [r.get(k) for k in ("model", "samples", "correct", "wrong", "unverifiable")]
        low, high = _ci(r)
        ci = "-" if low is None else f"{_pct(low)} – {_pct(high)} ({r.get('ci_method')})"  # e.g. 52.2% – 70.9%
        rows.append([label, *cells, _pct(r["accuracy"]), ci] + ([_pct(r.get("majority_accuracy"))] * has_majority))
    if not rows:
        s.missing = "no eval results in summary.json (the recipe has no eval section, or the evals did not finish)"
        return s
    s.figure = accuracy_figure(facts.evals)
    s.caption = (
        "Share of held-out prompts answered correctly (pass@1), with 95% confidence intervals as error bars "
        "(Wilson with one sample per prompt, a bootstrap over prompts with several)"
        + ("; majority vote over samples where it differs from pass@1." if has_majority else ".")
    )
    heads = ["", "model", "samples", "correct", "wrong", "unverifiable", "accuracy", "95% CI"]
    s.body = html_table(heads + ["majority accuracy"] * has_majority, rows)
    s.body += comparisons_html(facts.summary.get("comparisons"))
    s.body += recipes_html(facts.summary.get("recipes"))
    if absent:
        s.body += "<p class='missing'>not available: " + _e("; ".join(absent)) + "</p>"
    return s


def _ci(r: dict[str, Any]) -> tuple[float | None, float | None]:
    """An eval's (low, high) interval, or (None, None) when it has none (an older summary.json)."""
    ci = r.get("accuracy_ci")
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci):
        return float(ci[0]), float(ci[1])
    return None, None


def comparisons_html(comparisons: Any) -> str:
    """The paired differences (a - b on the prompts both answered) as a small table; empty without any."""
    rows = []
    for c in comparisons if isinstance(comparisons, list) else []:
        if not isinstance(c, dict) or not isinstance(c.get("difference"), int | float):
            continue
        names = f"{EVALS.get(c.get('a'), c.get('a'))} − {EVALS.get(c.get('b'), c.get('b'))}"
        diff = format_interval(c["difference"], c.get("ci_low"), c.get("ci_high"), signed=True)
        rows.append([names, c.get("prompts"), f"{diff} ({c.get('ci_method')})", c.get("a_better"),
                     c.get("b_better"), f"{format_p(c.get('p_value'))} ({c.get('test')})"])  # fmt: skip
    if not rows:
        return ""
    heads = ["paired difference", "prompts", "difference [95% CI]", "first better", "second better", "p-value"]
    note = (
        "<p>The trained student against each other model, on the prompts both answered; "
        '"first better" / "second better" count the prompts where one side scored higher (the discordant pairs).</p>'
    )
    return note + html_table(heads, rows)


def recipes_html(table: Any) -> str:
    """The run's `recipes` comparison (stages/recipes.py) as a table; empty when the run has none."""
    rows = []
    for r in (table or {}).get("rows", []) if isinstance(table, dict) else []:
        if not isinstance(r, dict) or not isinstance(r.get("label"), str):
            continue
        acc = format_interval(r.get("accuracy"), r.get("ci_low"), r.get("ci_high"))
        diffs = []
        for c in (r.get("vs_baseline"), r.get("vs_untrained")):
            ok = isinstance(c, dict) and isinstance(c.get("difference"), int | float)
            diffs.append(
                f"{format_interval(c['difference'], c.get('ci_low'), c.get('ci_high'), signed=True)}, "
                f"p {format_p(c.get('p_value'))}"
                if ok
                else ""
            )
        point = r.get("kind") == "point"
        keys = (
            "labels_used",
            "teacher_tokens_generated",
            "teacher_tokens_scored",
            "student_tokens_sampled",
            "seconds",
        )
        counts = ["" if point else r.get(k) for k in keys]
        rows.append([r["label"], acc, *diffs, *counts])
    if not rows:
        return ""
    heads = ["recipe", "accuracy [95% CI]", f"vs {table.get('compare_to')}", "vs untrained", "labels",
             "teacher tokens generated", "teacher tokens scored", "student tokens sampled", "seconds"]  # fmt: skip
    note = (
        "<p>The recipes (recipes.json): each student on the same held-out prompts; paired differences, p-values.</p>"
    )
    return note + html_table(heads, rows)


# ---- figures (matplotlib, Agg, imported only here) -----------------------------------------------------------


def _figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas, without pyplot (no global backend state, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: same data, same bytes
    return buf.getvalue()


def funnel_figure(rows: list[dict[str, Any]], total: int) -> bytes:
    """Bars: samples left after each rule (left), samples dropped by each rule (right)."""
    fig = _figure(10, 4.2)
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    names = ["input", *(r["rule"] for r in rows)]
    left.bar_label(left.bar(range(len(names)), [total, *(r["kept"] for r in rows)], color="#4c72b0"), padding=2)
    left.set_xticks(range(len(names)), names, rotation=30, ha="right")
    left.set(title="Samples left after each rule", ylabel="samples")
    left.margins(y=0.12)
    dropped = [r["dropped"] for r in rows]
    right.bar_label(right.barh(range(len(rows)), dropped, color="#c44e52"), padding=2)
    right.set_yticks(range(len(rows)), names[1:])
    right.invert_yaxis()
    right.set(title="Dropped by each rule", xlabel="samples dropped")
    right.margins(x=0.18)
    return _png(fig)


def lengths_figure(lengths: list[int], unit: str) -> bytes:
    """Histogram of completion lengths with the median marked; one bin per value when the range is small."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(8, 4)
    ax = fig.subplots()
    lo, hi = min(lengths), max(lengths)
    bins = range(lo, hi + 2) if hi - lo <= 60 else 40
    ax.hist(lengths, bins=bins, color="#4c72b0", edgecolor="white", align="left" if hi - lo <= 60 else "mid")
    median = statistics.median(lengths)
    ax.axvline(median, color="#dd8452", linestyle="--", label=f"median {median:g}")
    ax.set(title=f"Completion length of the {len(lengths)} kept samples", xlabel=unit, ylabel="samples")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return _png(fig)


def loss_figure(history: list[dict[str, Any]], eval_loss: float | None) -> bytes:
    """Train loss per logged step (first and last values written on the plot), eval loss as a star at the end."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(8, 4)
    ax = fig.subplots()
    steps, losses = [h["step"] for h in history], [h["loss"] for h in history]
    ax.plot(steps, losses, marker="o", color="#4c72b0", label="train loss")
    for i in {0, len(steps) - 1}:
        ax.annotate(f"{losses[i]:.3f}", (steps[i], losses[i]), textcoords="offset points", xytext=(4, 6))
    if eval_loss is not None:
        ax.plot([steps[-1]], [eval_loss], "*", markersize=14, color="#c44e52", label="eval loss (end)")
        ax.annotate(f"eval {eval_loss:.3f}", (steps[-1], eval_loss), textcoords="offset points", xytext=(6, -14))
    ax.set(title="Training loss", xlabel="optimizer step", ylabel="loss")
    ax.set_ylim(0, 1.15 * max(losses + ([eval_loss] if eval_loss is not None else [])))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.08)
    ax.legend()
    return _png(fig)


def accuracy_figure(evals: dict[str, Any]) -> bytes:
    """Bars: accuracy per model with its 95% interval as an error bar (and majority-vote accuracy where measured).

    The majority bar is drawn only for evals that report it: with one sample per prompt or greedy sampling it
    equals the accuracy by construction, and eval leaves it out (None).
    """
    keys = [k for k in EVALS if (evals.get(k) or {}).get("accuracy") is not None]
    fig = _figure(max(8, 2.6 * len(keys)), 4)  # room for each bar's model name
    draw_accuracy(fig.subplots(), evals, keys)
    return _png(fig)


def draw_accuracy(ax, evals: dict[str, Any], keys: list[str]) -> None:
    """The accuracy figure's content on `ax`: a bar per eval in `keys`, its interval, labels, legend."""
    has_majority = any(evals[k].get("majority_accuracy") is not None for k in keys)
    width = 0.38 if has_majority else 0.6
    series = [("accuracy", "#4c72b0", 0.0)] + ([("majority_accuracy", "#55a868", width)] if has_majority else [])
    for metric, color, offset in series:
        xs = [i + offset - (width / 2 if has_majority else 0) for i in range(len(keys))]
        values = [evals[k].get(metric) for k in keys]
        ax.bar(xs, [v or 0.0 for v in values], width, color=color, label=metric.replace("_", " "))
        tops = _error_bars(ax, xs, values, [_ci(evals[k]) for k in keys]) if metric == "accuracy" else values
        for x, v, top in zip(xs, values, tops, strict=True):  # the value above its bar and error bar
            ax.annotate("n/a" if v is None else f"{v:.0%}", (x, top or 0.0), textcoords="offset points",
                        xytext=(0, 3), ha="center")  # fmt: skip
    ax.set_xticks(range(len(keys)), [f"{EVALS[k]}\n{_clip(str(evals[k].get('model', '')), 32)}" for k in keys])
    samples = sorted({evals[k].get("samples") for k in keys} - {None})
    each = f" ({', '.join(map(str, samples))} samples each)" if samples else ""
    ax.set(title=f"Held-out accuracy with 95% CI{each}", ylabel="accuracy", ylim=(0, 1.3))
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.legend(loc="upper center", ncol=3)  # above the 100% line, clear of the bars and their labels


def _error_bars(ax, xs: list[float], values: list[float | None], cis: list[tuple[float | None, float | None]]):
    """Draw each known interval as an error bar around its value; return where each bar's label goes."""
    known = [
        (x, v, lo, hi) for x, v, (lo, hi) in zip(xs, values, cis, strict=True) if v is not None and lo is not None
    ]
    if known:
        x, v, lo, hi = (list(col) for col in zip(*known, strict=True))
        below = [max(0.0, a - b) for a, b in zip(v, lo, strict=True)]
        above = [max(0.0, b - a) for a, b in zip(v, hi, strict=True)]
        ax.errorbar(x, v, yerr=[below, above], fmt="none", ecolor="#222", capsize=5, label="95% CI")
    return [hi if hi is not None else v for v, (_, hi) in zip(values, cis, strict=True)]


# ---- the HTML page -------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 62rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } th { background: #f4f4f4; }
img { max-width: 100%; height: auto; } figure { margin: .8rem 0; }
figcaption { color: #555; font-size: .9rem; }
pre { background: #f6f6f6; padding: .6rem; white-space: pre-wrap; word-break: break-word; font-size: .85rem; }
.missing { color: #8a5a00; background: #fff6e0; padding: .4rem .6rem; border-left: 3px solid #e0a000; }
nav a { margin-right: 1rem; }
"""


def render_html(facts: RunFacts, kept: KeptStats, sections: list[Section], explore: str | None = None) -> str:
    """The whole page as one string: every value from the run is escaped; figures are data: URIs."""
    title = f"seqdistill report: {facts.run_dir.resolve().name}"
    nav = " ".join(f'<a href="#{s.key}">{_e(s.title)}</a>' for s in sections)
    if explore:  # the explorer page beside this one: samples, rejects and model answers
        nav += f' <a href="{_e(explore)}"><strong>Explore the samples and answers</strong></a>'
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<section id='run'><h2>Run</h2>{html_table(['', ''], run_facts(facts, kept))}</section>",
        f"<nav>{nav}</nav>",
        *(_section_html(s) for s in sections),
        f"<footer><p><small>Written by seqdistill {_e(__version__)} report at "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.</small></p></footer></body></html>",
    ]
    return "\n".join(parts)


def _section_html(s: Section) -> str:
    head = f'<section id="{s.key}"><h2>{_e(s.title)}</h2>'
    if s.missing:
        return f'{head}<p class="missing"><strong>not available</strong>: {_e(s.missing)}</p></section>'
    data = base64.b64encode(s.figure or b"").decode("ascii")
    figure = (
        f'<figure><img alt="{_e(s.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(s.caption)}</figcaption></figure>"
    )
    return f"{head}{figure}{s.body}</section>"


def run_facts(facts: RunFacts, kept: KeptStats) -> list[list[Any]]:
    """The header's rows: where the data came from and how much of it there is, at each stage."""
    g, f, t = (facts.summary.get(k) or {} for k in ("generate", "filter", "train"))
    rows: list[list[Any]] = [["run dir", str(facts.run_dir)], ["teacher", teacher_name(facts, kept)]]
    if g:
        extra = ", interrupted: run the same command to resume" if g.get("interrupted") else ""
        rows.append(
            ["prompts / samples", f"{g.get('prompts')} prompts, {g.get('requested')} samples requested{extra}"]
        )
        rows.append(
            ["generated", f"{g.get('generated')} new, {g.get('truncated')} truncated, {g.get('failed')} failed"]
        )
    if f or kept.count:
        rows.append(["kept", f"{f.get('kept', kept.count)} of {f.get('total', '?')} ({facts.kept})"])
    if t:
        rows.append(["student", f"{t.get('model')} -> {t.get('output')}"])
        rows.append(["training", f"{t.get('examples')} examples, {t.get('steps')} steps, {t.get('seconds')} s"])
    else:
        rows.append(["student", "not available (no training report)"])
    return rows


def teacher_name(facts: RunFacts, kept: KeptStats) -> str:
    """The teacher model and backend, from the generate manifest, else a kept sample, else the teacher eval."""
    if facts.manifest and facts.manifest.get("teacher"):
        t = facts.manifest["teacher"]
        return f"{t.get('model')} ({t.get('backend')})"
    if kept.first and kept.first.teacher:
        return f"{kept.first.teacher.model} ({kept.first.teacher.backend})"
    return str((facts.evals.get("teacher") or {}).get("model") or "unknown")


def html_table(headers: list[str], rows: Iterable[list[Any]]) -> str:
    """An HTML table with every cell escaped; numbers are right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers) if any(headers) else ""
    body = "".join(
        "<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows
    )  # fmt: skip
    return f"<table>{f'<thead><tr>{head}</tr></thead>' if head else ''}<tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num">{_e(_fmt(value))}</td>'
    return f"<td>{_e('' if value is None else value)}</td>"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0][:200]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- the dataset card ----------------------------------------------------------------------------------------


def write_card(facts: RunFacts, kept: KeptStats) -> Path | None:
    """Write the dataset card beside the kept samples; None (logged) when there is no readable kept file."""
    if facts.kept is None or kept.error:
        log.warning("no dataset card: %s", kept.error)
        return None
    path = card_path(facts.kept.parent)
    if path:
        write_atomic(path, [card_markdown(facts, kept)])
    return path


def card_path(directory: Path) -> Path | None:
    """README.md, unless a README.md that seqdistill did not write is there: then DATASET_CARD.md (warned)."""
    for name in ("README.md", "DATASET_CARD.md"):
        path = directory / name
        if not path.exists() or CARD_MARKER in path.read_text(encoding="utf-8", errors="replace"):
            if name != "README.md":
                log.warning("%s was not written by seqdistill: leaving it, card -> %s", directory / "README.md", path)
            return path
    log.warning("README.md and DATASET_CARD.md in %s were not written by seqdistill: no dataset card", directory)
    return None


def size_category(n: int) -> str:
    """The Hugging Face Hub's `size_categories` bucket for n examples.

    >>> size_category(82), size_category(1000), size_category(25_000), size_category(10**13)
    ('n<1K', '1K<n<10K', '10K<n<100K', 'n>1T')
    """
    labels = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
              "1B<n<10B", "10B<n<100B", "100B<n<1T"]  # fmt: skip
    return next((label for i, label in enumerate(labels) if n < 10 ** (i + 3)), "n>1T")


def card_front_matter(data_file: str, count: int) -> str:
    """YAML front matter: the default config points at the kept file, so `load_dataset(DIR)` reads only it."""
    meta = {
        "configs": [{"config_name": "default", "data_files": data_file}],
        "task_categories": ["text-generation"],
        "size_categories": [size_category(count)],
        "tags": ["distillation", "synthetic", "seqdistill"],
    }
    return f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n{CARD_MARKER}\n"


def card_markdown(facts: RunFacts, kept: KeptStats) -> str:
    """The dataset card: front matter, what the data is and how it was made, funnel, format, loading, limits."""
    assert facts.kept is not None
    name, teacher = facts.kept.name, teacher_name(facts, kept)
    intro = (
        f"**{kept.count} samples**: prompt–completion pairs sampled from the teacher {teacher} and kept by "
        "seqdistill's filter, in TRL's conversational prompt–completion format, so that "
        f"`{name}` is a training set for TRL's `SFTTrainer` as it is. Written by `seqdistill report` from the run "
        f"in `{facts.run_dir}`; running it again rewrites this card (delete the marker comment to keep your edits)."
    )
    parts = [
        card_front_matter(name, kept.count),
        f"# Distilled samples from {teacher}\n\n{intro}\n",
        "## How it was made\n\n" + "\n".join(f"- {line}" for line in provenance(facts, kept)) + "\n",
        f"## Filter funnel\n\n{funnel_markdown(facts.filter)}\n",
        f"## Record format\n\n{format_markdown(kept)}\n",
        "## Load it\n\n"
        + _fence(
            f'from datasets import load_dataset\n\nds = load_dataset("json", data_files="{name}", '
            'split="train")\n# or the directory (or a Hub repo) holding this card:\n'
            '# ds = load_dataset("path/to/dir", split="train")',
            "python",
        )
        + "\n",  # fmt: skip
        "## Limitations\n\n" + "\n".join(f"- {line}" for line in limitations(facts)) + "\n",
    ]
    return "\n".join(parts)


def provenance(facts: RunFacts, kept: KeptStats) -> list[str]:
    """Card lines on the teacher, sampling settings, prompt source and counts, from the manifest when present."""
    m, g = facts.manifest or {}, facts.summary.get("generate") or {}
    f, check = facts.filter or {}, (facts.filter or {}).get("answer_check") or {}
    sampling = m.get("sampling") or (kept.first.sampling if kept.first else None)
    per_prompt = m.get("n") or (g["requested"] // g["prompts"] if g.get("requested") and g.get("prompts") else None)
    lines = [f"Teacher: {teacher_name(facts, kept)}"]
    if sampling:
        lines.append(f"Sampling: `{json.dumps(sampling, ensure_ascii=False)}`")
    if g.get("prompts"):
        source = f" from `{m['prompts_source']}`" if m.get("prompts_source") else ""
        lines.append(f"Prompts: {g['prompts']}{source}" + (f", {per_prompt} samples each" if per_prompt else ""))
    lines.append(f"Samples: {f.get('total', g.get('requested', '?'))} generated, {kept.count} kept")
    if check:
        lines.append(f"Answer check: `{check.get('name')}` (final answer compared with the prompt's reference)")
    lines.append(f"Made with seqdistill {m.get('seqdistill_version', __version__)}")
    return lines


def funnel_markdown(report: dict[str, Any] | None) -> str:
    """The funnel as a Markdown table (rule, in, dropped, kept, example reason)."""
    if not report or not report.get("funnel"):
        return "not available: no filter report was found for this run."
    lines = ["| rule | in | dropped | kept | example reason |", "|---|---:|---:|---:|---|"]
    for r in report["funnel"]:
        reason = _example(r.get("examples") or [])[0]
        lines.append(f"| {_md(r['rule'])} | {r['in']} | {r['dropped']} | {r['kept']} | {_md(reason)} |")
    return "\n".join(lines)


def format_markdown(kept: KeptStats) -> str:
    """The record fields, with the first kept record as the example (long metadata elided)."""
    fields = (
        "One JSON object per line: `prompt` (the student's chat messages), `completion` (one assistant message; "
        "`reasoning_content` holds a separate reasoning trace, if any), `reference` (the prompt's reference "
        "answer), `finish_reason`, `usage` (token counts), `teacher` and `sampling` (how it was generated), "
        "`meta` (e.g. the teacher's own prompt when it differed, and the answer check's verdict), and `id`, "
        "a stable hash of the request."
    )
    if not kept.first:
        return fields
    record = kept.first.model_dump()
    record["meta"] = {k: v if len(json.dumps(v)) <= 200 else "…" for k, v in record["meta"].items()}
    example = _fence(json.dumps(record, ensure_ascii=False), "json")
    return f"{fields} The first record (long metadata elided):\n\n{example}"


def limitations(facts: RunFacts) -> list[str]:
    """What the card cannot promise: synthetic text, checks on final answers only, one prompt set, licence."""
    check = ((facts.filter or {}).get("answer_check") or {}).get("name")
    verified = (
        f"The `{check}` check compared final answers only: a kept completion can reach the right answer "
        "by wrong reasoning."
        if check
        else "No answer check ran: completions were kept for form (complete, unique), not correctness."
    )
    return [
        "Synthetic text written by one model: it carries that model's mistakes, style and biases.",
        verified,
        "It covers only the prompt set it was generated from; it is no general-purpose corpus.",
        "The terms of the teacher model and of the prompt source apply: set `license` in the front matter "
        "before publishing.",
    ]


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fence(text: str, lang: str) -> str:
    """A fenced code block whose fence is longer than any run of backticks inside `text`.

    >>> _fence("a ``` b", "md").splitlines()[0]
    '````md'
    """
    ticks = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{ticks}{lang}\n{text}\n{ticks}"
