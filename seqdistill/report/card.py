"""The dataset card written beside the kept samples (a Hugging Face README.md with YAML front matter).

Not covered: the card of `seqdistill export` (export.py builds its own from the same parts).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from seqdistill import __version__
from seqdistill.io import write_atomic
from seqdistill.report.facts import CARD_MARKER, KeptStats, RunFacts, first_example, teacher_name

log = logging.getLogger(__name__)

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
        + fence(
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
        reason = first_example(r.get("examples") or [])[0]
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
    example = fence(json.dumps(record, ensure_ascii=False), "json")
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


def fence(text: str, lang: str) -> str:
    """A fenced code block whose fence is longer than any run of backticks inside `text`.

    >>> fence("a ``` b", "md").splitlines()[0]
    '````md'
    """
    ticks = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{ticks}{lang}\n{text}\n{ticks}"
