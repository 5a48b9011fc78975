"""eval: accuracy of a model on prompts with reference answers, with the filter's answer checkers.

Generation goes through the generate stage (any backend, resumable); scoring reads back exactly the
samples this config asks for and scores them as filter does (`answers.score` in a `CheckPool`: the
same checks, options, workers and timeouts). `accuracy` is pass@1 averaged over the n samples of each
prompt; `majority_accuracy` scores each prompt by its most frequent answer (self-consistency).
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqdistill.checks.answers import CHECK_NAMES, NONE, Check, get_check, majority, options_from_config, vote_key
from seqdistill.checks.pool import CheckPool
from seqdistill.config import EvalConfig
from seqdistill.errors import ConfigError
from seqdistill.io import read_samples
from seqdistill.prompts import load_prompts
from seqdistill.stages import generate


def check_config(cfg: EvalConfig) -> Check:
    """What can be checked before generating anything: the answer check and its options, prompts with references."""
    if cfg.check == NONE:
        raise ConfigError(f"eval needs an answer check: --check {'|'.join(n for n in CHECK_NAMES if n != NONE)}")
    check = get_check(cfg.check, **options_from_config(cfg.check, cfg))
    if not any(p.reference for p in load_prompts(cfg.prompts)):
        raise ConfigError(
            f"{cfg.prompts.source}: no reference answers to score against "
            f"(no row has a non-empty '{cfg.prompts.answer_field}'; set prompts.answer_field)"
        )
    return check


@generate.one_writer
def run(cfg: EvalConfig) -> dict[str, Any]:
    check = check_config(cfg)  # before any generation: a missing reference must not cost a whole run
    options = options_from_config(cfg.check, cfg)
    use_student = cfg.prompt == "student"
    gen = generate.run(cfg, use_student_prompt=use_student)
    if gen["interrupted"]:
        return {"interrupted": True, **gen}
    prompts, ids = generate.plan(cfg, use_student_prompt=use_student)
    verdicts: Counter[str] = Counter()
    per_prompt: dict[str, list[tuple[str | None, bool | None]]] = defaultdict(list)
    prompt_ids: deque[str] = deque()  # the prompt of each sample handed to the pool, in order

    def requested() -> Iterator[tuple[str, str | None]]:
        wanted = set(ids.values())
        for sample in read_samples(Path(cfg.output)):
            if sample.id in wanted:
                wanted.discard(sample.id)  # count each requested sample once
                prompt_ids.append(sample.prompt_id)
                yield sample.text, sample.reference

    with CheckPool(cfg.check, cfg.workers, cfg.check_timeout, **options) as pool:
        for verdict in pool.map(requested()):
            verdicts[verdict.label] += 1
            per_prompt[prompt_ids.popleft()].append((verdict.answer, verdict.correct))
    scored = sum(verdicts.values())
    # `code` grades programs by tests: there is no answer to agree on, so no majority either
    by_majority = [_majority_correct(check, answers) for answers in per_prompt.values()] if check.spec.votable else []
    return {
        "model": cfg.model,
        "prompt": cfg.prompt,
        "prompts": len(prompts),
        "samples": scored,
        "correct": verdicts["correct"],
        "wrong": verdicts["wrong"],
        "unverifiable": verdicts["unverifiable"],
        "accuracy": verdicts["correct"] / scored if scored else None,
        "majority_accuracy": sum(by_majority) / len(by_majority) if by_majority else None,
        "output": cfg.output,
    }


def _majority_correct(check: Check, answers: list[tuple[str | None, bool | None]]) -> bool:
    """Whether the prompt's most frequent answer (`answers.majority`, votes as in filter) was judged correct.

    >>> math = get_check("math")
    >>> _majority_correct(math, [("7", True), ("8", False), ("7.0", True)])
    True
    >>> _majority_correct(math, [("8", False), (None, None)])
    False
    """
    keys = [vote_key(check, a) if a else None for a, _ in answers]
    top, _ = majority(keys)
    return top is not None and next(bool(c) for k, (_, c) in zip(keys, answers, strict=True) if k == top)
