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

The work is split by job in the package seqdistill.report: facts.py (finding and reading the run's
files), figures.py, page.py (the HTML), card.py (the dataset card); this module is the stage's `run`.

Not covered here: comparing runs; browsing samples and rejects is the explorer's (seqdistill.viewer).
Kept completions are streamed, but their lengths are held in memory (one int each).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from seqdistill import viewer
from seqdistill.io import write_atomic, write_bytes
from seqdistill.report.card import write_card
from seqdistill.report.facts import CARD_MARKER, gather, kept_stats
from seqdistill.report.figures import _figure, draw_accuracy
from seqdistill.report.page import accuracy_section, funnel_section, lengths_section, loss_section, render_html

__all__ = ["CARD_MARKER", "_figure", "draw_accuracy", "run"]  # the names tests and older importers use here

log = logging.getLogger(__name__)


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
