"""eval: accuracy of a model on prompts with reference answers, with the filter's answer checkers.

Generation goes through the generate stage (any backend, resumable); scoring reads back exactly the
samples this config asks for and scores them as filter does (`answers.score` in a `CheckPool`: the
same checks, options, workers and timeouts). `accuracy` is pass@1 averaged over the n samples of each
prompt, with its 95% interval `accuracy_ci` (`ci_method`: Wilson for n = 1, a bootstrap over prompts for n > 1;
see stats.py); `majority_accuracy` scores each prompt by its most frequent answer (self-consistency), and is
None when it equals `accuracy` by construction (one sample per prompt, or greedy sampling). `per_prompt` holds
each prompt's (correct, scored) sample counts, so two evals on the same prompts can be compared pair by pair.
Unverifiable answers count as not correct.

Each answer's verdict is written back into the output (`meta.check`: check name, result, extracted answer,
reason; the shape filter writes), and the accuracy with its interval into the manifest beside it
(`<output stem>.manifest.json`, with the model's weights id and the fingerprint `seqdistill run` reuses).
One eval file holds one model: a model is identified by its weights (`models.model_identity`), so a
retrained student at the same path is evaluated into `<output stem>-<weights id>.jsonl`, never mixed in.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from pathlib import Path

from seqdistill import fingerprint, rundir, stats
from seqdistill.checks.answers import CHECK_NAMES, NONE, Check, get_check, majority, options_from_config, vote_key
from seqdistill.checks.answers.base import Verdict
from seqdistill.checks.pool import CheckPool
from seqdistill.checks.rules import check_record
from seqdistill.config import EvalConfig
from seqdistill.errors import ConfigError, DataError
from seqdistill.io import iter_jsonl, read_json_object, read_samples, write_atomic, write_json
from seqdistill.models import model_identity
from seqdistill.prompts import load_prompts
from seqdistill.results import EvalResult, GenerateResult
from seqdistill.stages import generate

log = logging.getLogger(__name__)


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


def run(cfg: EvalConfig, role: str | None = None) -> EvalResult | GenerateResult:
    """Evaluate `cfg.model` into `cfg.output`, or into a file of its own when that one holds another model's
    answers. `role` (teacher, student_before, ... in `seqdistill run`) is recorded in the manifest.
    A signal during sampling returns generate's result (`interrupted` True) instead of an `EvalResult`."""
    check_config(cfg)  # before any generation: a missing reference must not cost a whole run
    target = output_for_model(cfg)
    if target != Path(cfg.output):
        cfg = cfg.model_copy(update={"output": str(target)})
    return _run(cfg, role)


def output_for_model(cfg: EvalConfig) -> Path:
    """`cfg.output`, unless it holds answers of another model (or other weights at the same path): then
    `<stem>-<weights id>.jsonl` beside it, said in the log. Rows this model already wrote stay where they are."""
    output, identity = Path(cfg.output), model_identity(cfg.model)
    other = _other_model(output, cfg.model or "", identity)
    if other is None:
        return output
    tag = identity.rpartition("@")[2] if "@" in identity else hashlib.sha256(identity.encode()).hexdigest()
    target = rundir.with_weights(output, tag[:8])
    if _other_model(target, cfg.model or "", identity) is not None:
        raise ConfigError(f"{target} holds the answers of another model too: choose another --output")
    log.warning(
        "%s holds the answers of another model (%s): %s is a new model (weights %s); its answers go to %s",
        output, other, cfg.model, tag[:8], target,
    )  # fmt: skip
    return target


def _other_model(path: Path, model: str, identity: str) -> str | None:
    """The identity of another model whose answers `path` holds, or None (no file, or only this model's rows).

    A row names its model by `teacher.model` and, once scored, `meta.model` (the identity with the weights id);
    a row of a local model dir without `meta.model` (an unscored row of an older version) counts as another's.
    """
    if not path.is_file():
        return None
    local = "@" in identity
    try:
        for _, row in iter_jsonl(path):
            teacher = (row.get("teacher") or {}).get("model")
            recorded = (row.get("meta") or {}).get("model")
            if teacher != model:
                return str(teacher)
            if recorded != identity and (recorded is not None or local):
                return str(recorded or f"{teacher}, older weights")
    except DataError:  # a line torn by a crash: generate repairs the tail; what came before was read
        pass
    return None


@generate.one_writer
def _run(cfg: EvalConfig, role: str | None) -> EvalResult | GenerateResult:
    check = check_config(cfg)
    made_from = fingerprint.of_config(cfg)
    options = options_from_config(cfg.check, cfg)
    use_student = cfg.prompt == "student"
    gen = generate.run(cfg, use_student_prompt=use_student)
    if gen.interrupted:
        return gen
    prompts, ids = generate.plan(cfg, use_student_prompt=use_student)
    verdicts: Counter[str] = Counter()
    per_prompt: dict[str, list[tuple[str | None, bool | None]]] = defaultdict(list)
    order: deque[tuple[str, str]] = deque()  # (prompt id, sample id) of each sample handed to the pool, in order
    by_sample: dict[str, Verdict] = {}

    def requested() -> Iterator[tuple[str, str | None]]:
        wanted = set(ids.values())
        for sample in read_samples(Path(cfg.output)):
            if sample.id in wanted:
                wanted.discard(sample.id)  # count each requested sample once
                order.append((sample.prompt_id, sample.id))
                yield sample.text, sample.reference

    with CheckPool(cfg.check, cfg.workers, cfg.check_timeout, **options) as pool:
        for verdict in pool.map(requested()):
            verdicts[verdict.label] += 1
            prompt_id, sample_id = order.popleft()
            per_prompt[prompt_id].append((verdict.answer, verdict.correct))
            by_sample[sample_id] = verdict
    identity = model_identity(cfg.model)
    _write_verdicts(Path(cfg.output), by_sample, cfg.check, identity)
    scored = sum(verdicts.values())
    # `code` grades programs by tests: there is no answer to agree on, so no majority either
    by_majority = [_majority_correct(check, answers) for answers in per_prompt.values()] if check.spec.votable else []
    scores = prompt_scores(per_prompt)
    acc = stats.accuracy(scores)
    result = EvalResult(
        model=cfg.model,
        prompt=cfg.prompt,
        prompts=len(prompts),
        samples=scored,
        correct=verdicts["correct"],
        wrong=verdicts["wrong"],
        unverifiable=verdicts["unverifiable"],
        accuracy=verdicts["correct"] / scored if scored else None,
        accuracy_ci=None if acc.value is None else [acc.ci_low, acc.ci_high],
        ci_method=acc.method,
        majority_accuracy=sum(by_majority) / len(by_majority)
        if by_majority and not _majority_is_accuracy(cfg)
        else None,
        per_prompt={pid: list(scores[pid]) for pid in sorted(scores)},
        output=cfg.output,
        check=cfg.check,
        model_identity=identity,
        weights=identity.rpartition("@")[2][:8] if "@" in identity else None,
    )
    _write_manifest(cfg, result, role, made_from)
    return result


def _write_verdicts(path: Path, verdicts: dict[str, Verdict], check: str, identity: str) -> None:
    """Rewrite the output (atomically) with each scored answer's verdict in `meta.check` and model in `meta.model`."""

    def lines() -> Iterator[str]:
        for sample in read_samples(path):
            if (verdict := verdicts.get(sample.id)) is not None:
                sample.meta["check"] = check_record(check, verdict)
                sample.meta["model"] = identity
            yield sample.to_json()

    write_atomic(path, lines())


def _write_manifest(cfg: EvalConfig, result: EvalResult, role: str | None, made_from) -> None:
    """The eval's manifest: generate's counts for this output, then the accuracy, its interval and method."""
    path = rundir.manifest_path(cfg.output)
    manifest = read_json_object(path) or {}
    manifest.update(result.to_json(), stage="eval", role=role, config=fingerprint.recorded_config(cfg),
                    fingerprint=made_from.to_dict())  # fmt: skip
    write_json(path, manifest)


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
