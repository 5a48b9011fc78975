"""Answer checks: decide whether a completion's final answer matches a reference answer.

One registry entry per checker (``registry.py``; one module each: ``math``, ``numeric``, ``choice``,
``exact``, ``regex``, ``code``, ``json``) with an options model, ``extract(completion, options) -> Answer | None``
and ``compare(answer, reference, options) -> Verdict``. ``score(check, completion, reference)`` is the
one scoring path (filter, voting and eval all reach it through ``checks.pool.CheckPool``). Verdicts
are tri-state: ``correct`` is True / False when the answer could be compared and None when it could
not (no answer, reference unparseable, timeout), so callers tell "wrong" apart from "unverifiable".
"""

from seqdistill.checks.answers.base import (
    LABELS,
    Answer,
    Check,
    CheckSpec,
    Example,
    NoOptions,
    Verdict,
    extract,
    majority,
    score,
    vote_key,
)
from seqdistill.checks.answers.choice import extract_choice
from seqdistill.checks.answers.math import math_verify_timeouts_disabled
from seqdistill.checks.answers.numeric import last_number
from seqdistill.checks.answers.registry import (
    CHECK_NAMES,
    NONE,
    REGISTRY,
    check,
    check_names_text,
    get_check,
    get_spec,
    options_from_config,
)
from seqdistill.checks.answers.text import last_boxed, normalize_text

__all__ = [
    "CHECK_NAMES",
    "LABELS",
    "NONE",
    "REGISTRY",
    "Answer",
    "Check",
    "CheckSpec",
    "Example",
    "NoOptions",
    "Verdict",
    "check",
    "check_names_text",
    "extract",
    "extract_choice",
    "get_check",
    "get_spec",
    "last_boxed",
    "last_number",
    "majority",
    "math_verify_timeouts_disabled",
    "normalize_text",
    "options_from_config",
    "score",
    "vote_key",
]
