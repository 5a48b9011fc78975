"""The explorer's data step: what of a run dir goes into the page, chosen deterministically, as typed records.

Streams the teacher's kept and rejected samples and each evaluated model's answers once, and keeps:
- for every category (kept; rejected by each rule; each model's eval answers) at most `max_samples`
  records, those whose (hash of prompt id, hash of sample id) is smallest. Hashing the prompt first
  makes the categories pick the same prompts, so a prompt in the page shows all of its samples (kept,
  rejected and every model's answers) unless one category hits its cap inside that prompt; the choice
  does not depend on file order, and a larger cap only adds records;
- counts of the whole (per category, per prompt: samples, kept, verdicts, the teacher's pass rate);
- per eval answer the verdict: `meta.check` as written by eval when present, else recomputed with the
  run's answer check (only the cheap, side-effect-free checks: a `code` check is never re-run here).
Texts longer than `MAX_TEXT` characters are clipped; every record names its file and line for the rest.

Limits: one pass, memory of one small entry per prompt plus the kept records; a line that does not
validate stops that file (named in `problems`) and the page shows what was read before it.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from seqdistill.checks.answers import check
from seqdistill.errors import DataError
from seqdistill.io import describe_validation_error
from seqdistill.records import Message, Sample

MAX_TEXT = 20_000  # characters of one completion, reasoning trace or prompt kept in the page
RECHECK = ("math", "numeric", "choice", "exact")  # checks cheap and safe enough to recompute for the page
VERDICTS = {True: "correct", False: "wrong", None: "unverifiable"}
LengthFn = Callable[[list[str]], list[int]]


@dataclass
class ViewerInputs:
    """Where the viewer reads from; built from the report's RunFacts (see `seqdistill.viewer.inputs`)."""

    run_dir: Path
    kept: Path | None = None
    rejected: Path | None = None
    evals: dict[str, EvalInput] = field(default_factory=dict)
    filter: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    comparisons: list[Any] = field(default_factory=list)
    kept_lengths: list[int] = field(default_factory=list)  # every kept completion, in `unit` (for the histogram)
    unit: str = "whitespace-separated words"
    count: LengthFn = field(default=lambda texts: [len(t.split()) for t in texts])
    check: str = "math"


@dataclass
class EvalInput:
    """One evaluated model: its label, its answers file (None when missing) and its summary.json entry."""

    label: str
    path: Path | None
    summary: dict[str, Any]


@dataclass
class Card:
    """One teacher sample as the page shows it."""

    id: str
    prompt_id: str
    index: int
    cat: str  # kept | rejected
    rule: str | None
    reason: str | None
    reason_group: str | None  # the reason with its numbers replaced, to filter by kind of reason
    verdict: str | None  # correct | wrong | unverifiable | None (no answer check ran on it)
    answer: str | None
    text: str
    reasoning: str | None
    finish: str | None
    length: int
    clipped: bool
    src: str  # file:line


@dataclass
class Answer:
    """One evaluated model's answer to a held-out prompt, with its verdict."""

    id: str
    prompt_id: str
    index: int
    verdict: str | None
    answer: str | None
    reason: str | None
    text: str
    reasoning: str | None
    clipped: bool
    src: str


@dataclass
class PromptStats:
    """Counts over all of a prompt's teacher samples (not only those in the page)."""

    samples: int = 0
    kept: int = 0
    rejected: int = 0
    correct: int = 0
    wrong: int = 0
    unverifiable: int = 0

    @property
    def pass_rate(self) -> float | None:
        """Correct / samples, the filter's `meta.pass_rate`; None when no sample was checked."""
        checked = self.correct + self.wrong + self.unverifiable
        return round(self.correct / self.samples, 4) if checked and self.samples else None


@dataclass
class PromptInfo:
    prompt: list[dict[str, str]]
    teacher_prompt: list[dict[str, str]] | None
    reference: str | None
    stats: dict[str, Any] | None  # PromptStats as a dict with its pass rate; None for a held-out-only prompt


@dataclass
class ModelAnswers:
    key: str
    label: str
    model: str
    total: int
    answers: list[Answer]


@dataclass
class Payload:
    """Everything the page embeds (as one JSON document)."""

    meta: dict[str, Any]
    counts: dict[str, Any]
    funnel: dict[str, Any] | None
    lengths: dict[str, Any] | None
    loss: dict[str, Any] | None
    accuracy: list[dict[str, Any]]
    comparisons: list[dict[str, str]]
    prompts: dict[str, PromptInfo]
    samples: list[Card]
    evals: list[ModelAnswers]
    problems: list[str]


class Reservoir:
    """The `cap` items with the smallest keys seen so far (a bounded max-heap)."""

    def __init__(self, cap: int):
        self.cap, self.heap, self.seen = cap, [], 0

    def offer(self, key: tuple[int, int], item: Any) -> None:
        self.seen += 1
        neg = (-key[0], -key[1])
        if len(self.heap) < self.cap:
            heapq.heappush(self.heap, (neg, self.seen, item))
        elif self.cap and neg > self.heap[0][0]:  # a smaller key than the largest kept one
            heapq.heapreplace(self.heap, (neg, self.seen, item))

    def items(self) -> list[Any]:
        return [e[2] for e in self.heap]


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


class Keys:
    """Selection keys: by prompt (so whole prompts are kept together), then by sample; prompt hashes cached."""

    def __init__(self):
        self.prompts: dict[str, int] = {}

    def __call__(self, prompt_id: str, sample_id: str) -> tuple[int, int]:
        p = self.prompts.get(prompt_id)
        if p is None:
            p = self.prompts[prompt_id] = _h(prompt_id)
        return p, _h(sample_id)


def numbered_samples(path: Path) -> Iterator[tuple[int, Sample]]:
    """(line number, validated sample) for each non-blank line; DataError names the first bad line.

    Parses and validates each line in one step (pydantic's JSON mode: ~2x faster than json.loads and
    validation apart, which counts on a 100,000-sample run).
    """
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, Sample.model_validate_json(line)
            except ValidationError as e:
                raise DataError(f"{path} line {lineno}: {describe_validation_error(e)}") from None


def _clip(text: str | None) -> tuple[str | None, bool]:
    if text is None or len(text) <= MAX_TEXT:
        return text, False
    return text[:MAX_TEXT], True


def _messages(messages: list[Message] | list[dict] | None) -> list[dict[str, str]] | None:
    """Chat messages as {role, content} (content clipped); None when absent or not a message list."""
    if not isinstance(messages, list):
        return None
    out = []
    for m in messages:
        if isinstance(m, Message):
            role, content = m.role, m.content
        elif isinstance(m, dict):
            role, content = m.get("role"), m.get("content")
        else:
            continue  # meta.teacher_prompt is free-form metadata: skip what is not a message
        out.append({"role": str(role), "content": _clip(str(content or ""))[0] or ""})
    return out


def reason_group(reason: str | None) -> str | None:
    """A reject reason with its numbers replaced by N, so that reasons of one kind group together.

    >>> reason_group("answer 7 != reference 42")
    'answer N != reference N'
    """
    return None if reason is None else re.sub(r"-?\d+(?:\.\d+)?", "N", reason)[:200]


def completion_parts(sample: Sample) -> tuple[str, str | None]:
    """(content, reasoning trace) of the completion, each message's parts joined."""
    content = "\n".join(m.content for m in sample.completion if m.content)
    reasoning = "\n".join(m.reasoning_content for m in sample.completion if m.reasoning_content)
    return content, reasoning or None


def collect(inputs: ViewerInputs, max_samples: int) -> Payload:
    """Read the run's samples and answers once and assemble the page's data (see the module docstring)."""
    problems: list[str] = []
    key = Keys()
    teacher, stats, totals = _read_teacher(inputs, max_samples, key, problems)
    cards = [_card(cat, f"{name}:{line}", s) for r in teacher.values() for cat, name, line, s in r.items()]
    cards.sort(key=lambda c: (c.cat != "kept", c.src.split(":")[0], int(c.src.rsplit(":", 1)[1])))
    _measure(cards, inputs.count)
    evals = _collect_evals(inputs, max_samples, problems, key)
    first_seen: dict[str, Sample] = {}  # the prompt's messages and reference come from its first record
    for s in [s for r in teacher.values() for *_, s in r.items()] + [s for _, ss in evals for s in ss]:
        first_seen.setdefault(s.prompt_id, s)
    prompts = {pid: _prompt_info(s, stats.get(pid)) for pid, s in first_seen.items()}
    models = [m for m, _ in evals]
    counts = {
        "kept": totals["kept"],
        "rejected": {k.split(":", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("rejected:")},
        "prompts": len(stats),
        "evals": {m.key: m.total for m in models},
        "max_samples": max_samples,
    }
    return Payload(
        meta={"run_dir": str(inputs.run_dir), "check": inputs.check, "unit": inputs.unit, "max_text": MAX_TEXT},
        counts=counts,
        funnel=_funnel(inputs.filter),
        lengths=_lengths(inputs.kept_lengths, inputs.unit),
        loss=_loss(inputs.train),
        accuracy=[_accuracy(k, e) for k, e in inputs.evals.items() if e.summary.get("accuracy") is not None],
        comparisons=[_flat(c) for c in inputs.comparisons if isinstance(c, dict)],
        prompts=prompts,
        samples=cards,
        evals=models,
        problems=problems,
    )


def _read_teacher(
    inputs: ViewerInputs, max_samples: int, key: Keys, problems: list[str]
) -> tuple[dict[str, Reservoir], dict[str, PromptStats], Counter[str]]:
    """Stream kept and rejected samples: a reservoir per category, per-prompt stats, counts per category."""
    teacher: dict[str, Reservoir] = {}
    stats: dict[str, PromptStats] = {}
    totals: Counter[str] = Counter()
    for cat, path in (("kept", inputs.kept), ("rejected", inputs.rejected)):
        if path is None:
            problems.append(f"no {cat} samples file was found in {inputs.run_dir}")
            continue
        try:
            for lineno, s in numbered_samples(path):
                rule = str((s.meta.get("rejected") or {}).get("rule") or "unknown") if cat == "rejected" else None
                bucket = "kept" if cat == "kept" else f"rejected:{rule}"
                totals[bucket] += 1
                _count(stats.get(s.prompt_id) or stats.setdefault(s.prompt_id, PromptStats()), cat, s)
                if (r := teacher.get(bucket)) is None:
                    r = teacher[bucket] = Reservoir(max_samples)
                r.offer(key(s.prompt_id, s.id), (cat, path.name, lineno, s))
        except (DataError, OSError, UnicodeDecodeError) as e:
            problems.append(f"{e} (the page shows what was read before it)")
    return teacher, stats, totals


def _count(st: PromptStats, cat: str, s: Sample) -> None:
    st.samples += 1
    st.kept += cat == "kept"
    st.rejected += cat == "rejected"
    result = (s.meta.get("check") or {}).get("result")
    if result in ("correct", "wrong", "unverifiable"):
        setattr(st, result, getattr(st, result) + 1)


def _card(cat: str, src: str, s: Sample) -> Card:
    rejected = s.meta.get("rejected") or {}
    check_meta = s.meta.get("check") or {}
    content, reasoning = completion_parts(s)
    text, clipped = _clip(content)
    reasoning, clipped_r = _clip(reasoning)
    reason = str(rejected["reason"]) if rejected.get("reason") is not None else None
    answer = check_meta.get("answer")
    return Card(
        id=s.id, prompt_id=s.prompt_id, index=s.sample_index, cat=cat,
        rule=str(rejected.get("rule") or "unknown") if cat == "rejected" else None,
        reason=reason, reason_group=reason_group(reason),
        verdict=check_meta.get("result") if check_meta.get("result") in VERDICTS.values() else None,
        answer=None if answer is None else str(answer), text=text or "", reasoning=reasoning,
        finish=s.finish_reason, length=0, clipped=clipped or clipped_r, src=src,
    )  # fmt: skip


def _measure(cards: list[Card], count: LengthFn) -> None:
    """Each card's completion length (reasoning + answer) in the report's unit, in batches."""
    for i in range(0, len(cards), 256):
        batch = cards[i : i + 256]
        texts = ["\n".join(p for p in (c.reasoning, c.text) if p) for c in batch]
        for c, n in zip(batch, count(texts), strict=True):
            c.length = n


def _collect_evals(
    inputs: ViewerInputs, max_samples: int, problems: list[str], key: Keys
) -> list[tuple[ModelAnswers, list[Sample]]]:
    """Each evaluated model's answers (capped, prompt-hash order) with their verdicts."""
    out = []
    for name, e in inputs.evals.items():
        if e.path is None:
            problems.append(f"{e.label}: its answers file was not found, so its answers are not shown")
            continue
        res, total = Reservoir(max_samples), 0
        try:
            for lineno, s in numbered_samples(e.path):
                total += 1
                res.offer(key(s.prompt_id, s.id), (lineno, s))
        except (DataError, OSError, UnicodeDecodeError) as err:
            problems.append(f"{err} (the page shows what was read before it)")
        chosen = sorted(res.items(), key=lambda x: x[0])
        answers = [_answer(f"{e.path.name}:{line}", s, inputs.check) for line, s in chosen]
        model = str(e.summary.get("model") or "")
        out.append((ModelAnswers(name, e.label, model, total, answers), [s for _, s in chosen]))
    return out


def verdict(s: Sample, check_name: str) -> tuple[str | None, str | None, str | None]:
    """(verdict, extracted answer, reason) of an eval answer: eval's own `meta.check` as written, else recomputed.

    Only the checks in RECHECK are recomputed; any other check (regex needs its pattern, code runs
    programs) leaves the verdict unknown, saying why.
    """
    meta = s.meta.get("check")
    if isinstance(meta, dict) and meta.get("result") in VERDICTS.values():
        answer, reason = meta.get("answer"), meta.get("reason")
        return meta["result"], None if answer is None else str(answer), None if reason is None else str(reason)
    if check_name not in RECHECK:
        return None, None, f"no verdict recorded, and the {check_name!r} check is not recomputed by the viewer"
    v = check(check_name, s.text, s.reference)
    return VERDICTS[v.correct], v.answer, f"recomputed by the viewer: {v.reason}"


def _answer(src: str, s: Sample, check_name: str) -> Answer:
    content, reasoning = completion_parts(s)
    text, clipped = _clip(content)
    reasoning, clipped_r = _clip(reasoning)
    result, answer, reason = verdict(s, check_name)
    return Answer(
        id=s.id, prompt_id=s.prompt_id, index=s.sample_index, verdict=result, answer=answer, reason=reason,
        text=text or "", reasoning=reasoning, clipped=clipped or clipped_r, src=src,
    )  # fmt: skip


def _prompt_info(s: Sample, st: PromptStats | None) -> PromptInfo:
    teacher = _messages(s.meta.get("teacher_prompt"))
    prompt = _messages(s.prompt) or []
    stats = None if st is None else {**st.__dict__, "pass_rate": st.pass_rate}
    return PromptInfo(prompt=prompt, teacher_prompt=teacher if teacher != prompt else None, reference=s.reference,
                      stats=stats)  # fmt: skip


# ---- the overview's figures, as data the page draws (and links to samples) ------------------------------------


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _funnel(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if not report or not isinstance(report.get("funnel"), list):
        return None
    rows = [
        {"rule": str(r.get("rule")), "in": _num(r.get("in")), "dropped": _num(r.get("dropped")),
         "kept": _num(r.get("kept"))}
        for r in report["funnel"] if isinstance(r, dict)
    ]  # fmt: skip
    check_counts = report.get("answer_check") if isinstance(report.get("answer_check"), dict) else {}
    return {"total": _num(report.get("total")), "kept": _num(report.get("kept")), "rows": rows,
            "check": {str(k): str(v) for k, v in check_counts.items()}}  # fmt: skip


def histogram(lengths: list[int], max_bins: int = 40) -> list[list[int]]:
    """[low, high (inclusive), count] bins over integer lengths: one per value when the range is small.

    >>> histogram([1, 2, 2, 5])
    [[1, 1, 1], [2, 2, 2], [3, 3, 0], [4, 4, 0], [5, 5, 1]]
    """
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    width = 1 if hi - lo < 60 else -(-(hi - lo + 1) // max_bins)
    bins = [[a, min(a + width - 1, hi), 0] for a in range(lo, hi + 1, width)]
    for n in lengths:
        bins[(n - lo) // width][2] += 1
    return bins


def _lengths(lengths: list[int], unit: str) -> dict[str, Any] | None:
    if not lengths:
        return None
    q = sorted(lengths)
    return {"unit": unit, "bins": histogram(lengths), "count": len(q), "median": q[len(q) // 2]}


def _loss(train: dict[str, Any] | None) -> dict[str, Any] | None:
    history = (train or {}).get("loss_history")
    if not isinstance(history, list):
        return None
    points = [[_num(h.get("step")), _num(h.get("loss"))] for h in history if isinstance(h, dict)]
    points = [p for p in points if None not in p]
    if not points:
        return None
    return {"points": points, "eval_loss": _num((train or {}).get("eval_loss")), "model": str(train.get("model"))}


def confidence_interval(value: Any) -> list[float] | None:
    """[low, high] from the shapes an interval may take in summary.json: a pair, or a dict with its bounds.

    >>> confidence_interval([0.4, 0.6]), confidence_interval({"low": 0.1, "high": 0.3}), confidence_interval("x")
    ([0.4, 0.6], [0.1, 0.3], None)
    """
    if isinstance(value, list | tuple) and len(value) == 2:
        lo, hi = (_num(v) for v in value)
    elif isinstance(value, dict):
        pick = next(((a, b) for a, b in (("low", "high"), ("lo", "hi"), ("lower", "upper")) if a in value), None)
        lo, hi = (_num(value[pick[0]]), _num(value.get(pick[1]))) if pick else (None, None)
    else:
        return None
    return None if lo is None or hi is None else [lo, hi]


def _accuracy(key: str, e: EvalInput) -> dict[str, Any]:
    r, ci = e.summary, e.summary.get("accuracy_ci")
    method = r.get("ci_method") or (ci.get("method") if isinstance(ci, dict) else None)
    return {
        "key": key, "label": e.label, "model": str(r.get("model") or ""), "accuracy": _num(r.get("accuracy")),
        "ci": confidence_interval(ci), "ci_method": str(method or ""),
        **{k: _num(r.get(k)) for k in ("samples", "correct", "wrong", "unverifiable", "majority_accuracy")},
    }  # fmt: skip


def _flat(d: dict[str, Any]) -> dict[str, str]:
    """A comparison entry as text cells (nested values as compact JSON): its shape is another stage's."""
    return {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in d.items()}
