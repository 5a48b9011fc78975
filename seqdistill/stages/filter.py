"""filter: keep the samples worth learning from; write kept, rejected (with reasons) and a funnel report.

Rules in order: malformed -> truncated -> answer check (wrong / unverifiable) -> exact duplicate ->
max per prompt. Outputs are written atomically: a crash leaves the previous outputs intact.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from seqdistill.checks.rules import AnswerCheck, Drop, ExactDuplicate, MaxPerPrompt, Rule, Truncated, WellFormed
from seqdistill.config import FilterConfig
from seqdistill.errors import ConfigError
from seqdistill.io import AtomicWriter, read_samples, write_json
from seqdistill.progress import progress_bar

log = logging.getLogger(__name__)
FUNNEL_ORDER = ["malformed", "truncated", "wrong_answer", "unverifiable", "duplicate", "max_per_prompt"]
EXAMPLES_PER_RULE = 3


def build_rules(cfg: FilterConfig) -> list[Rule]:
    rules: list[Rule] = [WellFormed()]
    if cfg.drop_truncated:
        rules.append(Truncated())
    if cfg.check != "none":
        rules.append(AnswerCheck(cfg.check, cfg.keep_unverifiable))
    if cfg.dedup:
        rules.append(ExactDuplicate())
    if cfg.max_per_prompt:
        rules.append(MaxPerPrompt(cfg.max_per_prompt))
    return rules


def side_paths(output: Path) -> tuple[Path, Path]:
    """`kept.jsonl` -> (`kept.rejected.jsonl`, `kept.report.json`)."""
    return output.with_name(output.stem + ".rejected.jsonl"), output.with_name(output.stem + ".report.json")


def run(cfg: FilterConfig) -> dict[str, Any]:
    if not cfg.input:
        raise ConfigError("filter needs an input file: seqdistill filter SAMPLES.jsonl")
    output = cfg.output_path()
    rejected_path, report_path = side_paths(output)
    for written in (output, rejected_path, report_path):  # none of the outputs may overwrite the input
        if written.resolve() == Path(cfg.input).resolve():
            raise ConfigError(f"--output {output} would overwrite the input file {cfg.input}: choose another name")
    rules = build_rules(cfg)
    dropped: Counter[str] = Counter()
    examples: dict[str, list[dict[str, str]]] = {}
    total = 0
    with AtomicWriter(output) as kept, AtomicWriter(rejected_path) as rejected:
        with progress_bar(None, "filter") as bar:
            for sample in read_samples(cfg.input):
                total += 1
                bar.advance()
                drop = _first_drop(rules, sample)
                if drop is None:
                    kept.write(sample.to_json())
                    continue
                rule_name, reason = drop
                dropped[rule_name] += 1
                examples.setdefault(rule_name, [])
                if len(examples[rule_name]) < EXAMPLES_PER_RULE:
                    examples[rule_name].append({"id": sample.id, "reason": reason, "completion": sample.text[:200]})
                sample.meta["rejected"] = {"rule": rule_name, "reason": reason}
                rejected.write(sample.to_json())
    report = _report(cfg, total, kept.count, dropped, examples, rules)
    write_json(report_path, report)
    return report


def _first_drop(rules: list[Rule], sample) -> Drop | None:
    for rule in rules:
        if (drop := rule(sample)) is not None:
            return drop
    return None


def _report(cfg, total, kept, dropped, examples, rules) -> dict[str, Any]:
    funnel = []
    remaining = total
    for name in FUNNEL_ORDER:
        if name not in dropped and not _rule_active(name, rules):
            continue
        funnel.append(
            {
                "rule": name,
                "in": remaining,
                "dropped": dropped[name],
                "kept": remaining - dropped[name],
                "examples": examples.get(name, []),
            }
        )
        remaining -= dropped[name]
    answer = next((r for r in rules if isinstance(r, AnswerCheck)), None)
    output = cfg.output_path()
    rejected_path, report_path = side_paths(output)
    return {
        "input": cfg.input,
        "output": str(output),
        "rejected": str(rejected_path),
        "report": str(report_path),
        "total": total,
        "kept": kept,
        "funnel": funnel,
        "answer_check": {"name": cfg.check, **dict(answer.verdicts)} if answer else {"name": "none"},
    }


def _rule_active(name: str, rules: list[Rule]) -> bool:
    names = {r.name for r in rules}
    if name in ("wrong_answer", "unverifiable"):
        return "answer" in names
    return name in names
