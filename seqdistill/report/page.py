"""The report's HTML page: one section per part (figure, caption, table, or why it is missing), self-contained.

Inline CSS, figures as base64 PNGs, no scripts and no external URLs, so it opens offline and mails whole.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqdistill import __version__
from seqdistill.report.facts import (
    EVALS,
    OPTIONAL_EVALS,
    KeptStats,
    RunFacts,
    accuracy_ci,
    clip,
    first_example,
    pct,
    teacher_name,
)
from seqdistill.report.figures import accuracy_figure, funnel_figure, lengths_figure, loss_figure
from seqdistill.stats import format_interval, format_p

log = logging.getLogger(__name__)


@dataclass
class Section:
    """One part of the page: a figure (PNG bytes) with its caption and an HTML body, or why it is missing."""

    key: str
    title: str
    figure: bytes | None = None
    caption: str = ""
    body: str = ""
    missing: str | None = None


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
    table = [[r["rule"], r["in"], r["dropped"], r["kept"], *first_example(r.get("examples") or [])] for r in rows]
    s.body = html_table(["rule", "in", "dropped", "kept", "example reason", "example completion"], table)
    if check := report.get("answer_check"):
        counts = ", ".join(f"{k}: {v}" for k, v in check.items() if k != "name")
        s.body += f"<p>Answer check <code>{_e(check.get('name'))}</code> on the samples it saw: {_e(counts)}.</p>"
    return s


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
            f"</code>: {_e(clip(prompt, 300))}</p><pre>{_e(clip(kept.longest.completion_text(), 3000))}</pre>"
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
        low, high = accuracy_ci(r)
        ci = "-" if low is None else f"{pct(low)} – {pct(high)} ({r.get('ci_method')})"  # e.g. 52.2% – 70.9%
        rows.append([label, *cells, pct(r["accuracy"]), ci] + ([pct(r.get("majority_accuracy"))] * has_majority))
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
        held = f", {g['samples']} in {Path(str(g.get('output'))).name}" if g.get("samples") is not None else ""
        rows.append(
            ["prompts / samples", f"{g.get('prompts')} prompts, {g.get('requested')} samples requested{held}{extra}"]
        )
        this_run = f"; {g['generated_this_run']} in the last `seqdistill run`" if "generated_this_run" in g else ""
        rows.append(
            [
                "generated",
                f"{g.get('generated')} new in the last generate run{this_run}, {g.get('truncated')} truncated, "
                f"{g.get('failed')} failed",
            ]
        )
    if f or kept.count:
        rows.append(["kept", f"{f.get('kept', kept.count)} of {f.get('total', '?')} ({facts.kept})"])
    if t:
        rows.append(["student", f"{t.get('model')} -> {t.get('output')}"])
        rows.append(["training", f"{t.get('examples')} examples, {t.get('steps')} steps, {t.get('seconds')} s"])
    else:
        rows.append(["student", "not available (no training report)"])
    return rows


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
