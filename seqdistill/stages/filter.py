"""filter: keep the samples worth learning from; write kept, rejected (with reasons) and a funnel report.

Rules in order: malformed -> decontamination -> near-duplicate prompt -> truncated -> quality (length,
think, repetition, refusal) -> answer check (wrong / unverifiable) -> exact duplicate -> near-duplicate
completion -> pass-rate band -> selection (at most K per prompt, by a policy). Two streaming passes: the
first applies the per-sample rules, writes rejects at once and sets the survivors aside in a temporary
file; the second records each prompt's pass rate (correct / samples) in `meta.pass_rate`, drops the
prompts whose rate is outside [`min_pass_rate`, `max_pass_rate`], and keeps up to K survivors per prompt
(first / shortest / random, seeded). Answer checks, and the answer extraction of `vote`, run in one
`CheckPool` (worker processes, a timeout per check). Memory holds one small entry per survivor (plus the dedup
indexes), not the samples. Outputs are written atomically; the same input and config give
byte-identical outputs.
Before every rule, a record whose sample id was already seen is dropped (`duplicate_id`, a funnel row once it drops).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from seqdistill.adapters import read_input
from seqdistill.checks.answers import NONE, majority, options_from_config, vote_key
from seqdistill.checks.decontam import Decontaminate, load_eval_texts
from seqdistill.checks.near_dup import NearDuplicateCompletion, NearDuplicatePrompt
from seqdistill.checks.pool import CheckPool
from seqdistill.checks.quality import Length, Refusal, Repetition, Think
from seqdistill.checks.rules import AnswerCheck, Drop, DuplicateId, ExactDuplicate, Rule, Truncated, WellFormed
from seqdistill.config import FilterConfig
from seqdistill.errors import ConfigError
from seqdistill.extras import require
from seqdistill.io import AtomicWriter, check_output, write_json
from seqdistill.progress import progress_bar
from seqdistill.records import Sample

log = logging.getLogger(__name__)
FUNNEL_ORDER = [
    "duplicate_id",
    "malformed", "contaminated", "near_duplicate_prompt", "truncated", "length", "think", "repetition", "refusal",
    "wrong_answer", "unverifiable", "duplicate", "near_duplicate", "pass_rate_band", "max_per_prompt",
]  # fmt: skip
EXAMPLES_PER_RULE = 3
BLOCK = 1024  # samples per batch of answer checks


def build_rules(cfg: FilterConfig) -> list[Rule]:
    """The per-sample rules of the first pass, in order (selection is the second pass)."""
    rules: list[Rule] = [DuplicateId(), WellFormed()]  # one record per id, first: ids key selection
    if cfg.decontaminate:
        rules.append(Decontaminate(load_eval_texts(cfg.decontaminate), cfg.decontam_ngram))
    if cfg.near_dup_prompt_threshold:
        rules.append(NearDuplicatePrompt(cfg.near_dup_prompt_threshold))
    if cfg.drop_truncated:
        rules.append(Truncated())
    if cfg.min_tokens is not None or cfg.max_tokens is not None:
        rules.append(Length(cfg.min_tokens, cfg.max_tokens, _token_counter(cfg.tokenizer)))
    rules.append(Think(cfg.require_think))
    if cfg.max_repetition is not None:
        rules.append(Repetition(max_ratio=cfg.max_repetition))
    if cfg.drop_refusals:
        rules.append(Refusal(cfg.refusal_phrases))
    if cfg.check != NONE:
        rules.append(AnswerCheck(cfg.check, cfg.keep_unverifiable, **options_from_config(cfg.check, cfg)))
    if cfg.dedup:
        rules.append(ExactDuplicate())
    if cfg.near_dup_threshold:
        rules.append(NearDuplicateCompletion(cfg.near_dup_threshold))
    return rules


def _token_counter(model: str | None):
    """Token count with the student's tokenizer, or None (the Length rule then counts words)."""
    if model is None:
        return None
    require(f"filter's token counts (tokenizer: {model}; unset it to count words)", "transformers")
    from transformers import AutoTokenizer

    from seqdistill.models import resolve_model

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    except (OSError, ValueError) as e:  # a missing dir, a hub id that is not cached offline, a bad config
        first = (str(e).splitlines() or [""])[0][:160]
        raise ConfigError(f"tokenizer {model!r}: cannot load it ({first}); set tokenizer to a model dir") from None
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def side_paths(output: Path) -> tuple[Path, Path]:
    """`kept.jsonl` -> (`kept.rejected.jsonl`, `kept.report.json`)."""
    return output.with_name(output.stem + ".rejected.jsonl"), output.with_name(output.stem + ".report.json")


class _Funnel:
    """Drop counts and a few example rejects per rule."""

    def __init__(self):
        self.dropped: Counter[str] = Counter()
        self.examples: dict[str, list[dict[str, str]]] = defaultdict(list)

    def reject(self, sample: Sample, drop: Drop, writer: AtomicWriter) -> None:
        self.dropped[drop.rule] += 1
        if len(self.examples[drop.rule]) < EXAMPLES_PER_RULE:
            shown = sample.text or sample.completion_text(include_reasoning=False)  # a conversation may lack an answer
            self.examples[drop.rule].append({"id": sample.id, "reason": drop.reason, "completion": shown[:200]})
        sample.meta["rejected"] = {"rule": drop.rule, "reason": drop.reason}
        writer.write(sample.to_json())


def run(cfg: FilterConfig) -> dict[str, Any]:
    if not cfg.input:
        raise ConfigError("filter needs an input file: seqdistill filter SAMPLES.jsonl")
    output = cfg.output_path()
    rejected_path, report_path = side_paths(output)
    for written in (output, rejected_path, report_path):  # none of the outputs may overwrite the input
        if written.resolve() == Path(cfg.input).resolve():
            raise ConfigError(f"--output {output} would overwrite the input file {cfg.input}: choose another name")
        check_output(written, "--output" if written == output else "output")  # never replace a device/FIFO/dir
    rules = build_rules(cfg)
    funnel = _Funnel()
    output.parent.mkdir(parents=True, exist_ok=True)
    with (
        AtomicWriter(output) as kept,
        AtomicWriter(rejected_path) as rejected,
        tempfile.TemporaryFile("w+", encoding="utf-8", dir=output.parent) as survivors,
    ):
        total, candidates, pass_counts = _first_pass(cfg, rules, funnel, rejected, survivors)
        band = _PassRateBand(cfg, pass_counts)
        selected = _select(cfg, [c for c in candidates if band.keeps(c[0])])
        survivors.seek(0)
        for line in survivors:
            sample = Sample.model_validate_json(line)
            if cfg.check != NONE:
                correct, seen = pass_counts[sample.prompt_id]
                sample.meta["pass_rate"] = round(correct / seen, 4)
            if not band.keeps(sample.prompt_id):
                funnel.reject(sample, Drop("pass_rate_band", band.reason(sample.prompt_id)), rejected)
            elif sample.id in selected:
                kept.write(sample.to_json())
            else:
                reason = f"prompt already has {cfg.max_per_prompt} kept samples (selection: {cfg.selection})"
                funnel.reject(sample, Drop("max_per_prompt", reason), rejected)
    report = _report(cfg, total, kept.count, funnel, rules)
    write_json(report_path, report)
    return report


def _first_pass(cfg, rules, funnel, rejected, survivors):
    """Apply the per-sample rules; rejects are written, survivors set aside. Returns counts for selection.

    Samples go through in blocks: the rules before the answer check, then the block's answer checks in
    one batch (worker processes with a timeout), then the rules after it, each in input order.
    """
    total = 0
    candidates: list[tuple[str, str, int, int]] = []  # (prompt_id, sample id, completion length, input order)
    pass_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # prompt_id -> [correct, samples]
    cut = next((i for i, r in enumerate(rules) if isinstance(r, AnswerCheck)), len(rules))
    before, answer, after = rules[:cut], (rules[cut] if cut < len(rules) else None), rules[cut + 1 :]
    options = options_from_config(cfg.check, cfg)
    with (
        CheckPool(cfg.check, cfg.workers, cfg.check_timeout, **options) if answer else nullcontext() as pool,
        progress_bar(None, "filter") as bar,
    ):
        votes = _votes(cfg, pool) if cfg.vote and answer is not None else {}
        for block in _blocks(read_input(cfg.input, cfg.input_format), BLOCK):
            total += len(block)
            drops: list[Drop | None] = [_first_drop(before, s) for s in block]
            if answer is not None:
                for sample in block:
                    _apply_vote(sample, votes)
                pending = [i for i, d in enumerate(drops) if d is None]
                verdicts = pool.map((block[i].text, block[i].reference) for i in pending)
                for i, verdict in zip(pending, verdicts, strict=True):
                    drops[i] = answer.decide(block[i], verdict)
            for order, (sample, drop) in enumerate(zip(block, drops, strict=True), start=total - len(block) + 1):
                drop = drop or _first_drop(after, sample)
                counts = pass_counts[sample.prompt_id]
                counts[1] += 1
                counts[0] += (sample.meta.get("check") or {}).get("result") == "correct"
                if drop is not None:
                    funnel.reject(sample, drop, rejected)
                    continue
                survivors.write(sample.to_json() + "\n")
                candidates.append((sample.prompt_id, sample.id, len(sample.text), order))
            bar.advance(len(block))
    return total, candidates, pass_counts


def _blocks(items: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    block: list[Sample] = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def _votes(cfg: FilterConfig, pool: CheckPool) -> dict[str, tuple[str | None, float]]:
    """Self-consistency: for each prompt without a reference, its majority answer and agreement rate.

    A streaming pass over the input; the pool extracts each answer (no check runs), and answers count as
    one vote when the checker says so (`answers.vote_key`: for math, 0.5 and \\frac{1}{2} agree).
    """
    prompt_ids: deque[str] = deque()  # the prompt of each completion handed to the pool, in order

    def unlabelled() -> Iterator[str]:
        for sample in read_input(cfg.input, cfg.input_format):
            if sample.reference or not sample.completion or sample.finish_reason == "length":
                continue
            prompt_ids.append(sample.prompt_id)
            yield sample.text

    keys: dict[str, list[str | None]] = defaultdict(list)
    for answer in pool.extract(unlabelled()):
        keys[prompt_ids.popleft()].append(vote_key(pool.checker, answer.text) if answer else None)
    out: dict[str, tuple[str | None, float]] = {}
    for pid, answers in keys.items():
        top, count = majority(answers)
        agreement = count / len(answers)
        out[pid] = (top if agreement >= cfg.min_agreement else None, round(agreement, 4))
    return out


def _apply_vote(sample: Sample, votes: dict[str, tuple[str | None, float]]) -> None:
    """Give a sample of an unlabelled prompt its prompt's majority answer as the reference (if agreed)."""
    if sample.reference or sample.prompt_id not in votes:
        return
    answer, agreement = votes[sample.prompt_id]
    sample.meta["vote"] = {"answer": answer, "agreement": agreement}
    sample.reference = answer  # None when too few samples agree: the sample is unverifiable


class _PassRateBand:
    """Keeps the prompts whose teacher pass rate (correct / samples) lies in [min_pass_rate, max_pass_rate]."""

    def __init__(self, cfg: FilterConfig, pass_counts: dict[str, list[int]]):
        self.active = cfg.min_pass_rate is not None or cfg.max_pass_rate is not None
        self.low = cfg.min_pass_rate if cfg.min_pass_rate is not None else 0.0
        self.high = cfg.max_pass_rate if cfg.max_pass_rate is not None else 1.0
        self.pass_counts = pass_counts

    def keeps(self, prompt_id: str) -> bool:
        if not self.active:
            return True
        correct, seen = self.pass_counts[prompt_id]
        return self.low <= correct / seen <= self.high

    def reason(self, prompt_id: str) -> str:
        correct, seen = self.pass_counts[prompt_id]
        return (
            f"prompt pass rate {correct / seen:.2f} ({correct}/{seen} correct) is outside the band "
            f"[{self.low:g}, {self.high:g}]"
        )


def _select(cfg: FilterConfig, candidates: list[tuple[str, str, int, int]]) -> set[str]:
    """Ids kept by the selection policy: at most `max_per_prompt` per prompt (all of them when unset)."""
    if not cfg.max_per_prompt:
        return {sid for _, sid, _, _ in candidates}
    by_prompt: dict[str, list[tuple[str, str, int, int]]] = defaultdict(list)
    for cand in candidates:
        by_prompt[cand[0]].append(cand)
    chosen: set[str] = set()
    for group in by_prompt.values():
        if cfg.selection == "shortest":
            group = sorted(group, key=lambda c: (c[2], c[3]))
        elif cfg.selection == "random":  # seeded by sample id: the same input gives the same choice
            group = sorted(group, key=lambda c: hashlib.sha256(f"{cfg.seed}:{c[1]}".encode()).digest())
        chosen.update(sid for _, sid, _, _ in group[: cfg.max_per_prompt])
    return chosen


def _first_drop(rules: list[Rule], sample) -> Drop | None:
    for rule in rules:
        if (drop := rule(sample)) is not None:
            return drop
    return None


def _report(cfg: FilterConfig, total: int, kept: int, funnel: _Funnel, rules: list[Rule]) -> dict[str, Any]:
    rows = []
    remaining = total
    active = {r.name for r in rules} - {"duplicate_id"} | ({"max_per_prompt"} if cfg.max_per_prompt else set())
    if cfg.min_pass_rate is not None or cfg.max_pass_rate is not None:
        active.add("pass_rate_band")
    if "answer" in active:
        active |= {"wrong_answer", "unverifiable"}
    for name in FUNNEL_ORDER:
        if name not in funnel.dropped and name not in active:
            continue
        dropped = funnel.dropped[name]
        rows.append(
            {"rule": name, "in": remaining, "dropped": dropped, "kept": remaining - dropped,
             "examples": funnel.examples.get(name, [])}
        )  # fmt: skip
        remaining -= dropped
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
        "funnel": rows,
        "answer_check": {"name": cfg.check, **dict(answer.verdicts)} if answer else {"name": NONE},
        "decontamination": next((dict(r.hits) for r in rules if isinstance(r, Decontaminate)), {}),
    }
