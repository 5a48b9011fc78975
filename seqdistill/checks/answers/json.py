"""The `json` check, and the JSON Schema helpers structured output shares with it (`response_format`).

The answer is the completion's last fenced ```json block, or else the whole completion (a leading
<think>…</think> block removed). It is correct when it parses as JSON, validates against `json_schema`
(when one is given; the `jsonschema` library, the schema's own draft or 2020-12), and, when `check_field`
is set, that field equals the reference. Not parsing, failing the schema or a different field value is
*wrong*; the reason names where (`$.items[2].price: 'x' is not of type 'number'`). A schema the validator
cannot apply to this answer (an unresolvable `$ref`) or a missing reference with `check_field` is
*unverifiable*. Without `check_field` the reference is not used (valid JSON is the whole test).

Limits: one document per answer (the last ```json block); JSON with comments or trailing commas is not
JSON; `check_field` is a simple path (`$.a.b[0]`, `a.b`, `$['odd key']`), not full JSONPath.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from seqdistill.checks.answers.base import Answer, CheckSpec, Example, Verdict
from seqdistill.checks.answers.text import normalize_text

_FENCE = re.compile(r"```[ \t]*json[ \t]*\r?\n(.*?)```", re.S | re.I)
_THINK = re.compile(r"^\s*<think>.*?</think>", re.S)
_SEGMENT = re.compile(r"""\.([^.\[\]'"]+)|\[(\d+)\]|\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\]""")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESPONSE_TYPES = ("text", "json_object", "json_schema", "structural_tag")


# ---- schemas and response_format ------------------------------------------------------------------------------


def load_schema(spec: str | dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema from a mapping or a .json file, checked against its metaschema (ValueError saying what is wrong).

    >>> load_schema({"type": "object", "required": ["answer"]})["required"]
    ['answer']
    >>> load_schema({"type": "objekt"})
    Traceback (most recent call last):
    ...
    ValueError: not a valid JSON Schema: $.type: 'objekt' is not valid under any of the given schemas
    """
    if isinstance(spec, str):
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"{spec}: no such file (a JSON Schema file, or the schema itself as a mapping)")
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"a JSON Schema is a mapping, got {type(spec).__name__}")
    import jsonschema

    try:
        jsonschema.validators.validator_for(spec).check_schema(spec)
    except jsonschema.SchemaError as e:
        raise ValueError(f"not a valid JSON Schema: {e.json_path}: {_clip(e.message)}") from None
    return spec


def response_format(value: str | dict[str, Any]) -> dict[str, Any]:
    """The OpenAI `response_format` to send: a schema file becomes `{type: json_schema, json_schema: {name, schema}}`.

    A mapping is sent as given (vLLM's server and OpenAI's API read the same field) after checking its schema.

    >>> response_format({"type": "json_object"})
    {'type': 'json_object'}
    """
    if isinstance(value, str):
        name = re.sub(r"[^A-Za-z0-9_-]", "_", Path(value).stem)[:64] or "answer"
        return {"type": "json_schema", "json_schema": {"name": name, "schema": load_schema(value)}}
    kind = value.get("type")
    if kind not in RESPONSE_TYPES:
        if kind in ("object", "array") or "properties" in value or "$schema" in value:
            raise ValueError(
                "this looks like a JSON Schema, not a response_format: give the schema's file name, or "
                "{type: json_schema, json_schema: {name: answer, schema: {...}}}"
            )
        raise ValueError(f"type must be one of {', '.join(RESPONSE_TYPES)} (got {kind!r})")
    if kind == "json_schema":
        inner = value.get("json_schema")
        if not isinstance(inner, dict) or not isinstance(inner.get("name"), str) or "schema" not in inner:
            raise ValueError("type json_schema needs json_schema: {name: ..., schema: {...}}")
        load_schema(inner["schema"])
    return value


def schema_of(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON Schema inside a `response_format` (None for text / json_object: no schema to validate against)."""
    if fmt and fmt.get("type") == "json_schema":
        return fmt["json_schema"]["schema"]
    return None


# ---- field paths -------------------------------------------------------------------------------------------------


def parse_path(path: str) -> tuple[str | int, ...]:
    """`$.items[2].price` (or `items[2].price`) as keys and indices; `$` is the whole document.

    >>> parse_path("$.items[2].price"), parse_path("answer"), parse_path("$['odd key']"), parse_path("$")
    (('items', 2, 'price'), ('answer',), ('odd key',), ())
    """
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    elif text and not text.startswith(("[", ".")):
        text = "." + text
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if not m:
            raise ValueError(f"{path!r} is not a field path like $.answer, $.items[0].price or answer")
        name, index, quoted1, quoted2 = m.groups()
        parts.append(int(index) if index is not None else next(p for p in (name, quoted1, quoted2) if p is not None))
        pos = m.end()
    return tuple(parts)


def format_path(parts: tuple[str | int, ...]) -> str:
    """The display form of a parsed path: `$.items[2].price`."""
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}" if _IDENT.fullmatch(p) else f"[{json.dumps(p)}]"
    return out


def _get(doc: Any, parts: tuple[str | int, ...]) -> tuple[bool, Any]:
    for p in parts:
        if isinstance(p, int) and isinstance(doc, list) and -len(doc) <= p < len(doc):
            doc = doc[p]
        elif isinstance(p, str) and isinstance(doc, dict) and p in doc:
            doc = doc[p]
        else:
            return False, None
    return True, doc


# ---- the check ---------------------------------------------------------------------------------------------------


class JsonOptions(BaseModel):
    """Options of the `json` check: `schema` from the config key `json_schema`, `field` from `check_field`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    schema_: dict[str, Any] | None = Field(
        None, alias="json_schema", description="the JSON Schema (a file, or inline) the answer must validate against"
    )
    field: str | None = Field(
        None, alias="check_field", description="the answer's field compared with the reference ($: the whole answer)"
    )

    @field_validator("schema_", mode="before")
    @classmethod
    def _load(cls, value: Any) -> Any:
        return None if value is None else load_schema(value)

    @field_validator("field")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_path(value)
        return value


@functools.lru_cache(maxsize=16)
def _validator(schema_text: str):
    """The schema's validator, with an empty registry: a `$ref` to another document is never fetched.

    (jsonschema 4.26 still fetches remote `$ref`s by default, with a deprecation warning: a check must not
    reach the network, nor hang on it.)
    """
    import jsonschema
    from referencing import Registry

    schema = json.loads(schema_text)
    return jsonschema.validators.validator_for(schema)(schema, registry=Registry())


def find_json(completion: str) -> tuple[str, str]:
    """(the text to parse, where it came from): the last ```json block, else the whole completion.

    >>> find_json('Sure:\\n```json\\n{"a": 1}\\n```\\nDone.')
    ('{"a": 1}\\n', 'the last ```json block')
    >>> find_json('<think>hmm</think> {"a": 1}')
    ('{"a": 1}', 'the whole answer')
    """
    blocks = _FENCE.findall(completion)
    if blocks:
        return blocks[-1], "the last ```json block"
    return _THINK.sub("", completion, count=1).strip(), "the whole answer"


def canonical(value: Any) -> str:
    """One text per JSON value (sorted keys, no spaces): what records show and votes count."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def extract_json(completion: str, options: JsonOptions) -> Answer | None:
    """The answer to check: its canonical JSON (the `check_field` value when set), or the raw text if not JSON.

    `source` holds the text to parse and `parts` where it came from (for the verdict's reason).
    """
    text, where = find_json(completion)
    if not text.strip():
        return None
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return Answer(_clip(text.strip()), (where,), text)
    shown = doc
    if options.field is not None:
        found, value = _get(doc, parse_path(options.field))
        shown = value if found else doc
    return Answer(canonical(shown), (where,), text)


def compare_json(answer: Answer, reference: str | None, options: JsonOptions) -> Verdict:
    """Parse, validate against the schema, compare `check_field` with the reference; reasons name the failing path."""
    where = answer.parts[0] if answer.parts else "the answer"
    try:
        doc = json.loads(answer.source or answer.text)
    except json.JSONDecodeError as e:
        return Verdict(False, f"{where} is not JSON: {e.msg} at line {e.lineno} column {e.colno}", None)
    except RecursionError:
        return Verdict(False, f"{where} is JSON nested too deeply to read", None)
    checked = []
    if options.schema_ is not None:
        failure = _schema_failure(doc, options.schema_)
        if failure is not None:
            return failure._replace(answer=answer.text)
        checked.append("matches the schema")
    if options.field is not None:
        parts = parse_path(options.field)
        found, value = _get(doc, parts)
        if not found:
            return Verdict(False, f"{format_path(parts)}: missing (check_field)", answer.text)
        if reference is None or not str(reference).strip():
            return Verdict(None, "no reference answer", answer.text)
        if not _equal(value, str(reference)):
            shown = f"{format_path(parts)}: {_clip(canonical(value))} != reference {reference!r}"
            return Verdict(False, shown, answer.text)
        checked.append(f"{format_path(parts)} equals the reference")
    return Verdict(True, ", ".join(["valid JSON", *checked]), answer.text)


def _schema_failure(doc: Any, schema: dict[str, Any]) -> Verdict | None:
    """Wrong with the most relevant error's path and message; unverifiable when the schema cannot be applied."""
    import jsonschema

    try:
        error = jsonschema.exceptions.best_match(_validator(canonical(schema)).iter_errors(doc))
    except Exception as e:  # an unresolvable $ref, a format checker failing: the schema, not the answer, is at fault
        detail = _clip((str(e).splitlines() or [""])[0]) or type(e).__name__
        return Verdict(None, f"the schema cannot be applied: {detail}", None)
    if error is None:
        return None
    return Verdict(False, f"{error.json_path}: {_clip(error.message)}", None)


def _equal(value: Any, reference: str) -> bool:
    """The field equals the reference: as JSON values (the reference parsed as JSON), or as normalised text.

    >>> _equal(42, "42"), _equal("Paris", "paris"), _equal(True, "1"), _equal([1, 2], "[1, 2.0]")
    (True, True, False, True)
    """
    try:
        if _same(value, json.loads(reference)):
            return True
    except (json.JSONDecodeError, RecursionError):
        pass
    return isinstance(value, str) and normalize_text(value) == normalize_text(reference)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0), but a boolean is never a number (unlike Python's True == 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


SPEC = CheckSpec(
    name="json",
    description="the last ```json block or else the whole answer, parsed as JSON and validated against "
    "`json_schema`; with `check_field`, that field equals the reference (else the reference is not used)",
    extract=extract_json,
    compare=compare_json,
    example=Example('```json\n{"answer": 42}\n```', "42", "correct", {"check_field": "$.answer"}),
    options=JsonOptions,
    no_answer="empty answer: nothing to parse as JSON",
    needs_reference=False,
)
