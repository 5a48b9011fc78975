"""Samples from datasets seqdistill did not write: a file's shape is detected once, each row mapped onto the record.

Shapes (docs/datasets.md has one example each):
- seqdistill: records as seqdistill writes them (`prompt_id`, `sample_index`, `teacher`): validated strictly;
- prompt_completion: TRL's `prompt` / `completion` (message lists, or strings: one user / assistant turn);
- messages: TRL's `messages`; the completion is every turn after the last user turn;
- sharegpt: `conversations` of `{from, value}` turns (human / gpt / system / tool), a `system` column if any;
- columns: any columns mapped by `input_format.fields` (`prompt`, `completion`, ...); a completion column that
  holds a list of generations gives one sample per generation.
The shape is detected from the first row (or set by `input_format.shape`) and every row must have it: a row of
another shape, or one missing a field, is one `DataError` naming the file, the row and the config key that maps
the field. Missing ids are derived from content (the prompt id as `generate` derives it, the sample id from the
prompt id and the completion), `teacher` and `sampling` may be absent, and columns the mapping does not use are
kept in `meta.source`.

Every list of turns becomes messages through `to_messages`, and every conversation is split into prompt and
completion by `split_conversation`: the two places to extend for new message fields (tool calls).

Limits: only text content (a list of `{type: text}` parts is joined; images are refused); a row's columns are
read whole (a dataset with huge unused columns carries them into `meta.source`: map or drop them first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from seqdistill.config import FieldMap, InputFormatConfig
from seqdistill.errors import DataError
from seqdistill.io import describe_validation_error, iter_jsonl, read_table
from seqdistill.prompts import extract_reference
from seqdistill.records import Message, Sample

log = logging.getLogger(__name__)

SHAPE_NAMES = {
    "seqdistill": "seqdistill records",
    "prompt_completion": "TRL prompt-completion",
    "messages": "TRL messages",
    "sharegpt": "ShareGPT conversations",
    "columns": "mapped columns",
}
# ShareGPT speakers (and a few role spellings seen in public datasets) -> chat roles
ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "chatgpt": "assistant", "bot": "assistant", "system": "system", "tool": "tool", "observation": "tool",
    "function_response": "tool", "ipython": "tool",
}  # fmt: skip
# record fields a row of another shape may carry under their own names (taken as they are, validated)
RECORD_FIELDS = (
    "id", "prompt_id", "sample_index", "reference", "finish_reason", "usage", "teacher", "sampling", "meta",
)  # fmt: skip
KEY = "input_format.fields"  # where the mapping lives in every reading stage's config


def read_input(source: str | Path, fmt: InputFormatConfig | None = None) -> Iterator[Sample]:
    """Samples from a JSONL / Parquet file, a saved dataset dir or a hub name, in any shape (see the module doc)."""
    fmt = fmt or InputFormatConfig()
    adapter: _Adapter | None = None
    for where, row in _rows(str(source), fmt):
        if adapter is None:
            adapter = _Adapter(fmt, row, where, str(source))
        yield from adapter.samples(row, where)


def _rows(source: str, fmt: InputFormatConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows with their location; any existing file that is not Parquet is read as JSONL (whatever its suffix)."""
    path = Path(source)
    if path.is_file() and path.suffix != ".parquet":
        for lineno, obj in iter_jsonl(path):
            yield f"{path} line {lineno}", obj
        return
    yield from read_table(source, fmt.split, fmt.subset)


def detect_shape(row: dict[str, Any], fields: FieldMap) -> str | None:
    """The shape a row has by its fields (None when it has none of them).

    >>> detect_shape({"prompt": "2+2?", "completion": "4"}, FieldMap())
    'prompt_completion'
    >>> detect_shape({"system": "...", "conversations": [{"from": "human", "value": "hi"}]}, FieldMap())
    'sharegpt'
    """
    if fields.prompt is not None or fields.completion is not None:
        return "columns"
    if {"prompt_id", "sample_index", "teacher"} <= row.keys():
        return "seqdistill"
    if row.get("prompt") is not None and row.get("completion") is not None:
        return "prompt_completion"
    if row.get(fields.messages) is not None:
        return "messages"
    if row.get(fields.conversations) is not None:
        return "sharegpt"
    return None


class _Adapter:
    """Maps the rows of one file, whose shape is fixed by its first row (or by the config)."""

    def __init__(self, fmt: InputFormatConfig, first: dict[str, Any], where: str, source: str):
        self.fmt, self.fields, self.first = fmt, fmt.fields, where
        self.shape = fmt.shape if fmt.shape != "auto" else detect_shape(first, fmt.fields)
        if self.shape is None:
            columns = ", ".join(sorted(first)[:12]) or "none"
            raise DataError(
                f"{where}: cannot tell the dataset's shape (columns: {columns}): map its columns with "
                f"{KEY}.prompt and {KEY}.completion (see docs/datasets.md)"
            )
        self.indices: dict[str, int] = {}  # prompt id -> next sample index (rows holding one sample each)
        how = (
            "input_format.shape"
            if fmt.shape != "auto"
            else "input_format.fields"
            if self.shape == "columns"
            else f"detected from {where}"
        )
        (log.debug if self.shape == "seqdistill" else log.info)("%s: %s (%s)", source, SHAPE_NAMES[self.shape], how)

    def samples(self, row: dict[str, Any], where: str) -> Iterator[Sample]:
        self._check_fits(row, where)
        if self.shape == "seqdistill":
            try:
                yield Sample.model_validate(row)
            except ValidationError as e:
                raise DataError(f"{where}: {describe_validation_error(e)}") from None
            return
        if self.shape == "columns":
            yield from self._columns(row, where)
            return
        if self.shape == "prompt_completion":
            prompt = as_prompt(row["prompt"], where, "prompt")
            completion = as_completion(row["completion"], where, "completion")
            used = {"prompt", "completion"}
        else:
            field = self.fields.messages if self.shape == "messages" else self.fields.conversations
            prompt, completion = split_conversation(to_messages(row[field], where, field), where, field)
            used = {field}
            if self.shape == "sharegpt" and self.fields.system is None and isinstance(row.get("system"), str):
                prompt, used = _with_system(prompt, row["system"]), used | {"system"}
        yield self._sample(row, where, prompt, completion, used, own_fields=True)

    def _check_fits(self, row: dict[str, Any], where: str) -> None:
        """A row of another shape, or one missing its shape's fields: one line naming the key that maps them."""
        needs = {
            "seqdistill": (),
            "prompt_completion": ("prompt", "completion"),
            "messages": (self.fields.messages,),
            "sharegpt": (self.fields.conversations,),
            "columns": (self.fields.prompt, self.fields.completion),
        }[self.shape]
        missing = [k for k in needs if k is not None and row.get(k) is None]
        if self.shape == "seqdistill" and not {"prompt_id", "sample_index", "teacher"} <= row.keys():
            missing = ["prompt_id / sample_index / teacher"]
        if not missing:
            return
        other = detect_shape(row, self.fields)
        if other is not None and other != self.shape:
            raise DataError(
                f"{where}: a {SHAPE_NAMES[other]} row in a file of {SHAPE_NAMES[self.shape]} (the shape of "
                f"{self.first}): one file holds one shape; split the file, or set input_format.shape"
            )
        if self.shape == "seqdistill":
            return  # strict validation names the missing field
        maps = {
            "prompt_completion": f"{KEY}.prompt and {KEY}.completion",
            "messages": f"{KEY}.messages",
            "sharegpt": f"{KEY}.conversations",
            "columns": f"{KEY}.{_config_key(self.fields, missing[0])}",
        }[self.shape]
        raise DataError(
            f"{where}: no '{missing[0]}' field, which the {SHAPE_NAMES[self.shape]} shape needs (the shape of "
            f"{self.first}): set {maps} to the column that holds it"
        )

    def _columns(self, row: dict[str, Any], where: str) -> Iterator[Sample]:
        """Mapped columns; a completion column holding a list of generations gives one sample each."""
        f = self.fields
        prompt = as_prompt(row[f.prompt], where, f.prompt)
        value = row[f.completion]
        if value == []:
            return  # a row without generations has no sample
        several = isinstance(value, list) and all(isinstance(v, str | list) for v in value)
        completions = (
            [as_completion(v, where, f"{f.completion}[{i}]") for i, v in enumerate(value)]
            if several
            else [as_completion(value, where, f.completion)]
        )
        used = {f.prompt, f.completion}
        if not several:
            yield self._sample(row, where, prompt, completions[0], used, own_fields=True)
            return
        aligned = {name: self._aligned(row, where, name, len(completions)) for name in f.per_generation}
        for i, completion in enumerate(completions):
            extra = {name: values[i] for name, values in aligned.items()}
            yield self._sample(row, where, prompt, completion, used | set(aligned), index=i, generation=extra)

    def _aligned(self, row: dict[str, Any], where: str, name: str, n: int) -> list[Any]:
        values = _column(row, name, where, "per_generation")
        if not isinstance(values, list) or len(values) != n:
            got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
            raise DataError(f"{where}: column '{name}' ({KEY}.per_generation) has {got} for {n} generations")
        return values

    def _sample(
        self,
        row: dict[str, Any],
        where: str,
        prompt: list[Message],
        completion: list[Message],
        used: set[str],
        own_fields: bool = False,
        index: int | None = None,
        generation: dict[str, Any] | None = None,
    ) -> Sample:
        """One record: mapped fields, the row's own record fields (a row of one sample), the rest in meta.source."""
        f = self.fields
        record: dict[str, Any] = {}
        if own_fields:  # a row that is one sample may carry record fields under their own names
            record = {k: row[k] for k in RECORD_FIELDS if row.get(k) is not None}
            used = used | set(record)
        for key in ("system", "reference", "finish_reason", "reasoning", "prompt_id"):
            column = getattr(f, key)
            if column is None:
                continue
            value = _column(row, column, where, key)
            used = used | {column}
            if key in ("finish_reason", "reasoning") and index is not None and isinstance(value, list):
                value = value[index] if index < len(value) else None
            if value is None:
                continue
            if key == "system":
                prompt = _with_system(prompt, str(value))
            elif key == "reference":
                record["reference"] = extract_reference(value, f.reference_pattern)
            elif key == "finish_reason":
                record["finish_reason"] = str(value)
            elif key == "reasoning":
                completion = _with_reasoning(completion, str(value), where)
            else:
                record["prompt_id"] = str(value)
        if record.get("reference") is not None and not isinstance(record["reference"], str):
            record["reference"] = extract_reference(record["reference"], None)
        prompt_id = str(record.get("prompt_id") or content_prompt_id(prompt))
        if "sample_index" not in record:
            record["sample_index"] = index if index is not None else self._next_index(prompt_id)
        record.setdefault("id", content_sample_id(prompt_id, completion))
        meta = dict(record.get("meta") or {}) if isinstance(record.get("meta"), dict) else record.get("meta", {})
        source = {k: _jsonable(v) for k, v in row.items() if k not in used and v is not None}
        source.update({k: _jsonable(v) for k, v in (generation or {}).items()})
        if source and isinstance(meta, dict):
            meta["source"] = {**(meta.get("source") or {}), **source}
        record.update(prompt_id=prompt_id, prompt=prompt, completion=completion, meta=meta)
        try:
            return Sample.model_validate(record)
        except ValidationError as e:
            raise DataError(f"{where}: {describe_validation_error(e)}") from None

    def _next_index(self, prompt_id: str) -> int:
        i = self.indices.get(prompt_id, 0)
        self.indices[prompt_id] = i + 1
        return i


def _config_key(fields: FieldMap, column: str) -> str:
    """The `fields` key that names `column` (for error messages)."""
    return next((k for k, v in fields.model_dump().items() if v == column), "prompt")


def _column(row: dict[str, Any], column: str, where: str, key: str) -> Any:
    if column not in row:
        fields = ", ".join(sorted(row)[:12])
        raise DataError(f"{where}: no column '{column}' (named by {KEY}.{key}; the row has: {fields})")
    return row[column]


# ---- turns -> messages ---------------------------------------------------------------------------------------------


def to_messages(turns: Any, where: str, field: str) -> list[Message]:
    """A list of turns (`{role, content}` as TRL / OpenAI write them, or ShareGPT's `{from, value}`) as messages.

    Keys whose value is null are dropped (Parquet fills absent keys with null); text parts are joined.

    >>> turns = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]
    >>> [(m.role, m.content) for m in to_messages(turns, "x", "conversations")]
    [('user', 'hi'), ('assistant', 'yo')]
    """
    if not isinstance(turns, list):
        raise DataError(f"{where}: '{field}' must be a list of messages, got {type(turns).__name__}")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"{where}: {field}[{i}] must be a message object, got {type(turn).__name__}")
        msg = {k: v for k, v in turn.items() if v is not None}
        if "from" in msg or "value" in msg:  # ShareGPT
            msg["role"], msg["content"] = msg.pop("from", None), msg.pop("value", None)
        if isinstance(msg.get("role"), str):
            msg["role"] = ROLES.get(msg["role"].lower(), msg["role"])
        if isinstance(msg.get("content"), list):
            msg["content"] = _text_parts(msg["content"], where, f"{field}[{i}]")
        try:
            messages.append(Message.model_validate(msg))
        except ValidationError as e:
            raise DataError(f"{where}: {field}[{i}].{describe_validation_error(e)}") from None
    return messages


def _text_parts(parts: list[Any], where: str, field: str) -> str:
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind != "text" or not isinstance(part.get("text"), str):
            raise DataError(f"{where}: {field}.content has a {kind!r} part; only text content is supported")
        texts.append(part["text"])
    return "".join(texts)


def split_conversation(messages: list[Message], where: str, field: str) -> tuple[list[Message], list[Message]]:
    """(prompt, completion): the completion is every turn after the last user turn, and holds an assistant turn.

    >>> p, c = split_conversation(to_messages([{"role": "user", "content": "2+2?"},
    ...                                        {"role": "assistant", "content": "4"}], "x", "m"), "x", "m")
    >>> [m.role for m in p], [m.role for m in c]
    (['user'], ['assistant'])
    """
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        raise DataError(f"{where}: '{field}' has no user turn: no prompt to learn to answer")
    prompt, completion = messages[: last_user + 1], messages[last_user + 1 :]
    if not any(m.role == "assistant" for m in completion):
        raise DataError(f"{where}: '{field}' has no assistant turn after its last user turn: no completion")
    return prompt, completion


def prompt_of(row: dict[str, Any], where: str, messages_field: str = "messages") -> list[dict[str, Any]] | None:
    """The prompt of a sample-shaped row, for `generate` and `eval` to answer again; None for other rows.

    A TRL `prompt` (prompt-only or prompt-completion), ShareGPT `conversations` (with a `system` column), or
    `messages` whose last turn is the assistant's: the turns after the last user turn (the old answer) are dropped.
    `messages` ending with a user or tool turn are a conversation to continue, left to prompts.py (None).

    >>> prompt_of({"prompt": [{"role": "user", "content": "2+2?"}], "completion": "4"}, "x")
    [{'role': 'user', 'content': '2+2?'}]
    """
    given = row.get(messages_field)
    answered = (
        isinstance(given, list)
        and bool(given)
        and isinstance(given[-1], dict)
        and given[-1].get("role") == "assistant"
    )
    if row.get("prompt") is not None and (isinstance(row["prompt"], list) or "completion" in row):
        prompt = as_prompt(row["prompt"], where, "prompt")
    elif row.get("conversations") is not None or answered:
        field = "conversations" if row.get("conversations") is not None else messages_field
        prompt, _ = split_conversation(to_messages(row[field], where, field), where, field)
        if field == "conversations" and isinstance(row.get("system"), str):
            prompt = _with_system(prompt, row["system"])
    else:
        return None  # not a sample: prompts.py reads it (a question, or a conversation to continue)
    return [m.model_dump(exclude_none=True) for m in prompt]


def as_prompt(value: Any, where: str, field: str) -> list[Message]:
    """A prompt column: a string is one user turn; a list holds messages."""
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    return to_messages(value, where, field)


def as_completion(value: Any, where: str, field: str) -> list[Message]:
    """A completion column: a string is one assistant turn; a list holds messages."""
    if isinstance(value, str):
        return [Message(role="assistant", content=value)]
    return to_messages(value, where, field)


def _with_system(prompt: list[Message], system: str) -> list[Message]:
    if not system.strip() or (prompt and prompt[0].role == "system"):
        return prompt
    return [Message(role="system", content=system), *prompt]


def _with_reasoning(completion: list[Message], reasoning: str, where: str) -> list[Message]:
    """The reasoning trace on the completion's first assistant message."""
    out, done = [], False
    for m in completion:
        if not done and m.role == "assistant":
            m, done = m.model_copy(update={"reasoning_content": reasoning}), True
        out.append(m)
    return out


# ---- ids and values --------------------------------------------------------------------------------------------


def content_prompt_id(prompt: list[Message]) -> str:
    """The prompt id `generate` gives a prompt without one (prompts.py): a hash of the prompt's messages.

    >>> content_prompt_id([Message(role="user", content="2+2?")])
    'p-7c9833ca6a9ef656'
    """
    messages = [m.model_dump(exclude_none=True) for m in prompt]
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"p-{digest[:16]}"


def content_sample_id(prompt_id: str, completion: list[Message]) -> str:
    """A sample id from its prompt id and completion: the same row gets the same id in every run."""
    payload = json.dumps(
        {"prompt_id": prompt_id, "completion": [m.model_dump(exclude_none=True) for m in completion]},
        sort_keys=True,
        ensure_ascii=False,
    )
    return "s-" + hashlib.sha256(payload.encode()).hexdigest()[:32]


def _jsonable(value: Any) -> Any:
    """A value as JSON can hold it: NaN becomes null, other objects (dates, bytes) their text."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
