"""eval: accuracy of a model on prompts with reference answers, with the filter's answer checkers.

Generation goes through the generate stage (any backend, resumable); scoring reads back exactly the
samples this config asks for. `accuracy` is pass@1 averaged over the n samples of each prompt, with its 95%
interval `accuracy_ci` (`ci_method`: Wilson for n = 1, a bootstrap over prompts for n > 1; see stats.py);
`majority_accuracy` scores each prompt by its most frequent answer (self-consistency), and is None when it
equals `accuracy` by construction (one sample per prompt, or greedy sampling). `per_prompt` holds each
prompt's (correct, scored) sample counts, so two evals on the same prompts can be compared pair by pair.
Unverifiable answers count as not correct.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from seqdistill import stats
from seqdistill.checks.answers import check, get_checker
from seqdistill.config import EvalConfig
from seqdistill.errors import ConfigError
from seqdistill.io import read_samples
from seqdistill.stages import generate


def run(cfg: EvalConfig) -> dict[str, Any]:
    if cfg.check == "none":
        raise ConfigError("eval needs an answer check: --check math|numeric|choice|exact")
    get_checker(cfg.check)
    use_student = cfg.prompt == "student"
    gen = generate.run(cfg, use_student_prompt=use_student)
    if gen["interrupted"]:
        return {"interrupted": True, **gen}
    prompts, ids = generate.plan(cfg, use_student_prompt=use_student)
    if not any(p.reference for p in prompts):
        raise ConfigError(f"{cfg.prompts.source}: no reference answers (set prompts.answer_field)")
    wanted = set(ids.values())
    verdicts: Counter[str] = Counter()
    per_prompt: dict[str, list[tuple[str | None, bool | None]]] = defaultdict(list)
    for sample in read_samples(Path(cfg.output)):
        if sample.id in wanted:
            wanted.discard(sample.id)  # count each requested sample once
            verdict = check(cfg.check, sample.text, sample.reference)
            verdicts[{True: "correct", False: "wrong", None: "unverifiable"}[verdict.correct]] += 1
            per_prompt[sample.prompt_id].append((verdict.answer, verdict.correct))
    scored = sum(verdicts.values())
    majority = [_majority_correct(answers) for answers in per_prompt.values()]
    scores = prompt_scores(per_prompt)
    acc = stats.accuracy(scores)
    return {
        "model": cfg.model,
        "prompt": cfg.prompt,
        "prompts": len(prompts),
        "samples": scored,
        "correct": verdicts["correct"],
        "wrong": verdicts["wrong"],
        "unverifiable": verdicts["unverifiable"],
        "accuracy": verdicts["correct"] / scored if scored else None,
        "accuracy_ci": None if acc.value is None else [acc.ci_low, acc.ci_high],
        "ci_method": acc.method,
        "majority_accuracy": sum(majority) / len(majority) if majority and not _majority_is_accuracy(cfg) else None,
        "per_prompt": {pid: list(scores[pid]) for pid in sorted(scores)},
        "output": cfg.output,
    }


def prompt_scores(per_prompt: dict[str, list[tuple[str | None, bool | None]]]) -> dict[str, tuple[int, int]]:
    """Per prompt id: (correct samples, scored samples); wrong and unverifiable verdicts are not correct.

    >>> prompt_scores({"p1": [("7", True), ("8", False), (None, None)]})
    {'p1': (1, 3)}
    """
    return {pid: (sum(c is True for _, c in answers), len(answers)) for pid, answers in per_prompt.items()}


def _majority_is_accuracy(cfg: EvalConfig) -> bool:
    """One sample per prompt, or greedy decoding (every sample the same answer): the vote is the answer."""
    return cfg.n == 1 or cfg.sampling.temperature == 0


def _majority_correct(answers: list[tuple[str | None, bool | None]]) -> bool:
    """Whether the prompt's most frequent answer (ties: the smallest string) was judged correct.

    >>> _majority_correct([("7", True), ("8", False), ("7", True)])
    True
    >>> _majority_correct([("8", False), (None, None)])
    False
    """
    counts = Counter(a for a, _ in answers if a is not None)
    if not counts:
        return False
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    return next(bool(c) for a, c in answers if a == top)
