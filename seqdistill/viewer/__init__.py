"""The explorer: `report/explore.html`, a page to browse a run's samples, rejects and model answers offline.

`seqdistill report RUN_DIR` writes it beside report.html (which links to it). The page opens from disk
with no server and loads nothing from elsewhere: data, script and style are inline under a strict
Content-Security-Policy (see `page.py`). It shows:
- the funnel, completion lengths, training loss and held-out accuracy (with intervals when summary.json
  has them), every bar a link to the samples behind it;
- the kept and rejected samples as cards, filtered by rule, reason, verdict, prompt, pass rate, length
  and free text; each card with its reject reason, extracted answer vs reference, and file:line;
- one prompt: all of its teacher samples, the teacher's pass rate, and each evaluated model's answer
  side by side with its verdict; the held-out prompts, filtered by which model got them right.
What it embeds is chosen in `data.py` (at most `max_samples` per category, by hash, with counts of the
whole); report.html stays a static page without scripts.

Not covered: comparing runs, editing or labelling samples, full texts beyond `data.MAX_TEXT` characters
(the card names the file and line).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from seqdistill import __version__
from seqdistill.io import write_atomic
from seqdistill.viewer.data import EvalInput, ViewerInputs, collect
from seqdistill.viewer.page import render

if TYPE_CHECKING:
    from seqdistill.stages.report import KeptStats, RunFacts

log = logging.getLogger(__name__)
DEFAULT_MAX_SAMPLES = 2000
PAGE = "explore.html"


def write(facts: RunFacts, kept: KeptStats, out_dir: Path, max_samples: int = DEFAULT_MAX_SAMPLES) -> Path:
    """Write `out_dir/explore.html` for the run `facts` describes; return its path."""
    start = time.perf_counter()
    payload = collect(inputs(facts, kept), max_samples)
    title = f"seqdistill explorer: {facts.run_dir.resolve().name}"
    footer = f"Written by seqdistill {__version__} report at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
    path = out_dir / PAGE
    write_atomic(path, [render(payload, title, footer)])
    shown = len(payload.samples) + sum(len(m.answers) for m in payload.evals)
    log.info("explorer -> %s (%d records, %.1f s)", path, shown, time.perf_counter() - start)
    return path


def inputs(facts: RunFacts, kept: KeptStats) -> ViewerInputs:
    """Where the viewer reads from, located the way the report locates the run's files."""
    from seqdistill.stages.report import EVALS, _locate, length_counter

    f = facts.summary.get("filter") or {}
    rejected = None
    if facts.kept is not None:
        rejected = _locate(facts, f.get("rejected"), facts.kept.with_name(f"{facts.kept.stem}.rejected.jsonl").name)
    evals = {}
    for key, entry in facts.evals.items():
        if not isinstance(entry, dict) or entry.get("accuracy") is None and not entry.get("output"):
            continue  # "comparisons" and the like, or an eval that never ran
        default = f"eval-{key.replace('_', '-')}.jsonl"
        label = EVALS.get(key, key.replace("_", " "))
        evals[key] = EvalInput(label, _locate(facts, entry.get("output"), default), entry)
    comparisons = facts.summary.get("comparisons") or facts.evals.get("comparisons") or []
    count, unit = length_counter(facts) if facts.kept is not None else (None, kept.unit)
    check = _check_name(facts)
    built = ViewerInputs(
        run_dir=facts.run_dir, kept=facts.kept, rejected=rejected, evals=evals, filter=facts.filter,
        train=facts.train, comparisons=comparisons if isinstance(comparisons, list) else [],
        kept_lengths=kept.lengths, unit=unit, check=check,
    )  # fmt: skip
    if count is not None:
        built.count = count
    return built


def _check_name(facts: RunFacts) -> str:
    """The answer check of the evals: recorded by eval if it says, else the filter's, else `math` (the demo's)."""
    for entry in facts.evals.values():
        if isinstance(entry, dict) and isinstance(entry.get("check"), str):
            return entry["check"]
    name = ((facts.filter or {}).get("answer_check") or {}).get("name")
    return name if isinstance(name, str) and name != "none" else "math"
