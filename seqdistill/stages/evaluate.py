"""eval: accuracy of a model on prompts with reference answers, with the filter's answer checkers.

Generation goes through the generate stage (any backend, resumable); scoring reads back exactly the
samples this config asks for and scores them as filter does (`answers.score` in a `CheckPool`: the
same checks, options, workers and timeouts). `accuracy` is pass@1 averaged over the n samples of each
prompt, with its 95% interval `accuracy_ci` (`ci_method`: Wilson for n = 1, a bootstrap over prompts for n > 1;
see stats.py); `majority_accuracy` scores each prompt by its most frequent answer (self-consistency), and is
None when it equals `accuracy` by construction (one sample per prompt, or greedy sampling). `per_prompt` holds
each prompt's (correct, scored) sample counts, so two evals on the same prompts can be compared pair by pair.
Unverifiable answers count as not correct.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqdistill import stats
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
        "majority_accuracy": sum(by_majority) / len(by_majority)
        if by_majority and not _majority_is_accuracy(cfg)
        else None,
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
