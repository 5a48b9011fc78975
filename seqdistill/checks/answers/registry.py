"""The check registry: name -> `CheckSpec`, the only list of checks (configs, CLI help and docs read it).

`get_check(name, **options)` validates a name and its options and returns the `Check` that `score`
runs; `options_from_config(name, cfg)` reads a checker's options from a stage config (their config
keys are the options' aliases, e.g. `check_pattern`). `python -m seqdistill.checks.answers.registry`
prints the table of docs/checks.md.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from seqdistill.checks.answers import choice, code, exact, math, numeric, regex
from seqdistill.checks.answers import json as json_check
from seqdistill.checks.answers.base import Check, CheckSpec, Verdict, score
from seqdistill.errors import ConfigError

REGISTRY: dict[str, CheckSpec] = {
    spec.name: spec
    for spec in (exact.SPEC, math.SPEC, numeric.SPEC, choice.SPEC, regex.SPEC, code.SPEC, json_check.SPEC)
}
NONE = "none"  # no answer check: a config value, not a checker
CHECK_NAMES = (*REGISTRY, NONE)


def check_names_text(sep: str = " | ") -> str:
    """The checks' names for help texts and errors: 'exact | math | ... | none'."""
    return sep.join(CHECK_NAMES)


def get_spec(name: str) -> CheckSpec:
    """The registry entry of `name`; a ConfigError listing the checks for anything else ("none" included)."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown check {name!r}; choose one of: {check_names_text(', ')}") from None


def get_check(name: str, **options: Any) -> Check:
    """Checker `name` bound to its validated options (by option name or config key; None means unset).

    >>> get_check("regex", pattern=r"is (\\d+)").options.pattern
    'is (\\\\d+)'
    """
    spec = get_spec(name)
    given = {k: v for k, v in options.items() if v is not None}
    fields = spec.options.model_fields
    known = set(fields) | {f.alias for f in fields.values() if f.alias}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"check {name!r} does not take option(s): {', '.join(unknown)}")
    try:
        return Check(spec, spec.options.model_validate(given))
    except ValidationError as e:
        raise ConfigError(_option_error(spec, e)) from None


def _option_error(spec: CheckSpec, error: ValidationError) -> str:
    """One line naming the option by its config key (errors name the alias or the field)."""
    err = error.errors()[0]
    where = str(err["loc"][0]) if err["loc"] else ""
    fields = spec.options.model_fields.items()
    field = next((f for n, f in fields if where in (n, f.alias)), None)
    key = (field.alias or where) if field else where
    if err["type"] == "missing":
        return f"check {spec.name!r} needs {key}: {field.description if field else 'a value'}"
    return f"check {spec.name!r}: {key}: {err['msg'].removeprefix('Value error, ')}"


def options_from_config(name: str, cfg: Any) -> dict[str, Any]:
    """The options of checker `name` set in a stage config (keys: the options' config keys), unset ones left out."""
    if name == NONE:
        return {}
    fields = get_spec(name).options.model_fields
    keys = [f.alias or n for n, f in fields.items()]
    return {key: getattr(cfg, key) for key in keys if getattr(cfg, key, None) is not None}


def check(name: str, completion: str, reference: str | None, **options: Any) -> Verdict:
    """Score one completion with checker `name` (a ConfigError for an unknown name or bad options).

    >>> check("numeric", "42", None)
    Verdict(correct=None, reason='no reference answer', answer=None, timed_out=False)
    """
    return score(get_check(name, **options), completion, reference)


def markdown() -> str:
    """The table of checks and their examples, from the registry (docs/checks.md holds exactly this text)."""
    lines = [
        "| check | what it reads from the completion, and how it compares | options (config key) |",
        "|---|---|---|",
    ]
    for spec in REGISTRY.values():
        lines.append(f"| `{spec.name}` | {_cell(spec.description)} | {_options_cell(spec)} |")
    lines.append(f"| `{NONE}` | no answer check (`filter` keeps samples unchecked; `eval` needs a check) | — |")
    lines += ["", "Examples (tests/test_answers.py runs them):", "", "```python"]
    lines.append(">>> from seqdistill.checks.answers import check")
    for spec in REGISTRY.values():
        ex = spec.example
        args = ", ".join([repr(spec.name), repr(ex.completion), repr(ex.reference)])
        args += "".join(f", {k}={v!r}" for k, v in ex.options.items())
        lines += [f">>> check({args}).label", repr(ex.label)]
    lines.append("```")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def _options_cell(spec: CheckSpec) -> str:
    cells = []
    for name, field in spec.options.model_fields.items():
        key = field.alias or name
        default = "required" if field.is_required() else f"default `{json.dumps(field.get_default())}`"
        cells.append(f"`{key}` ({default}): {_cell(field.description or '')}")
    return "<br>".join(cells) or "—"


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown())
