"""eval: accuracy of a model on prompts with reference answers, with the filter's answer checkers.

Generation goes through the generate stage (any backend, resumable); scoring reads back exactly the
samples this config asks for. `accuracy` is pass@1 averaged over the n samples of each prompt;
`majority_accuracy` scores each prompt by its most frequent answer (self-consistency).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from seqdistill.checks.answers import check, get_checker
from seqdistill.config import EvalConfig
from seqdistill.errors import ConfigError
from seqdistill.io import read_samples
from seqdistill.prompts import load_prompts
from seqdistill.stages import generate


def check_config(cfg: EvalConfig) -> None:
    """What can be checked before generating anything: an answer check, and prompts that have references."""
    if cfg.check == "none":
        raise ConfigError("eval needs an answer check: --check math|numeric|choice|exact")
    get_checker(cfg.check)
    if not any(p.reference for p in load_prompts(cfg.prompts)):
        raise ConfigError(
            f"{cfg.prompts.source}: no reference answers to score against "
            f"(no row has a non-empty '{cfg.prompts.answer_field}'; set prompts.answer_field)"
        )


@generate.one_writer
def run(cfg: EvalConfig) -> dict[str, Any]:
    check_config(cfg)  # before any generation: a missing reference must not cost a whole run
    use_student = cfg.prompt == "student"
    gen = generate.run(cfg, use_student_prompt=use_student)
    if gen["interrupted"]:
        return {"interrupted": True, **gen}
    prompts, ids = generate.plan(cfg, use_student_prompt=use_student)
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
    return {
        "model": cfg.model,
        "prompt": cfg.prompt,
        "prompts": len(prompts),
        "samples": scored,
        "correct": verdicts["correct"],
        "wrong": verdicts["wrong"],
        "unverifiable": verdicts["unverifiable"],
        "accuracy": verdicts["correct"] / scored if scored else None,
        "majority_accuracy": sum(majority) / len(majority) if majority else None,
        "output": cfg.output,
    }


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
