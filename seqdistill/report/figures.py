"""The report's figures: matplotlib (Agg backend, imported only when a figure is drawn) to PNG bytes.

Not covered: where the PNGs are written (seqdistill.stages.report) or how they are embedded (page.py).
"""

from __future__ import annotations

import logging
import statistics
from io import BytesIO
from typing import Any

from seqdistill.report.facts import EVALS, accuracy_ci, clip, pct

log = logging.getLogger(__name__)

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
        tops = _error_bars(ax, xs, values, [accuracy_ci(evals[k]) for k in keys]) if metric == "accuracy" else values
        for x, v, top in zip(xs, values, tops, strict=True):  # the value above its bar and error bar
            ax.annotate("n/a" if v is None else pct(v), (x, top or 0.0), textcoords="offset points",
                        xytext=(0, 3), ha="center")  # fmt: skip
    ax.set_xticks(range(len(keys)), [f"{EVALS[k]}\n{clip(str(evals[k].get('model', '')), 32)}" for k in keys])
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
