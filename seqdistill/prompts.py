"""Prompt sources + Jinja templates -> the student's and the teacher's prompt messages (+ reference answer).

The student's prompt is what the record stores and what the student is trained and evaluated on; the
teacher's prompt may add a system prompt or worked examples (distilling what the context gives into
the bare student). Both default to the same rendering.

A row may hold a ready conversation instead of a question (`messages_field`): any history of system,
user, assistant (with `tool_calls`) and tool turns that ends with a user or tool turn, which the
teacher continues. Tool definitions come from the row (`tools_field`) or the config (`tools`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from pydantic import ValidationError

from seqdistill.config import PromptsConfig
from seqdistill.errors import ConfigError, DataError
from seqdistill.io import iter_jsonl, read_table
from seqdistill.records import Message, check_tools

log = logging.getLogger(__name__)


@dataclass
class PromptItem:
    id: str
    messages: list[dict[str, Any]]  # the student's prompt
    teacher_messages: list[dict[str, Any]]  # what the teacher is sent
    reference: str | None
    tools: list[dict[str, Any]] | None = None  # tool definitions (OpenAI style) the teacher may call


def _template(spec: str | None) -> jinja2.Template:
    """A template is a path to a `.jinja` file or an inline Jinja string; None renders the question as is."""
    text = "{{ question }}" if spec is None else spec
    if spec is not None and spec.endswith((".jinja", ".j2")):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"template {spec}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"template {spec}: not valid UTF-8 (byte {e.start + 1}); save it as UTF-8") from None
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"template {spec}: line {e.lineno}: {e.message}") from None


def extract_reference(answer: Any, pattern: str | None) -> str | None:
    """Reference answer from an answer field; `pattern` (first group) pulls it out, e.g. GSM8K's '#### 42'.

    >>> extract_reference("She has 5 + 3 = 8 apples.\\n#### 8", r"####\\s*(.+?)\\s*$")
    '8'
    >>> extract_reference(42, None)
    '42'
    """
    if answer is None:
        return None
    text = str(answer).strip()
    if pattern:
        m = re.search(pattern, text, flags=re.MULTILINE)
        if m:
            return m.group(1).strip()
    return text or None


class _Renderer:
    def __init__(self, system: str | None, template: str | None, examples: str | None, cfg: PromptsConfig):
        self.system = system
        self.template = _template(template)
        self.cfg = cfg
        self.examples = self._load_examples(examples) if examples else []

    def _load_examples(self, path: str) -> list[dict[str, str]]:
        """Worked examples as prior user/assistant turns: JSONL lines with the question field and 'completion'."""
        turns: list[dict[str, str]] = []
        for lineno, row in iter_jsonl(path):
            if self.cfg.question_field not in row or "completion" not in row:
                raise DataError(
                    f"{path} line {lineno}: worked example needs '{self.cfg.question_field}' and 'completion'"
                )
            turns.append({"role": "user", "content": self._user(row, f"{path} line {lineno}")})
            turns.append({"role": "assistant", "content": str(row["completion"])})
        return turns

    def _user(self, row: dict[str, Any], where: str) -> str:
        # `question` is always the configured question field, so the default template works with any field name
        fields = {**row, "question": row[self.cfg.question_field]}
        try:
            return self.template.render(fields).strip()  # a dict, so a field may be named `self`
        except jinja2.UndefinedError as e:
            raise DataError(f"{where}: template needs a field the row lacks ({e.message})") from None

    def render(self, row: dict[str, Any], where: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages += self.examples
        if self.cfg.question_field not in row:  # a dataset of samples: answer its prompts again (docs/datasets.md)
            from seqdistill.adapters import prompt_of

            if (given := prompt_of(row, where, self.cfg.messages_field)) is not None:
                return messages + (given[1:] if given and given[0]["role"] == "system" and self.system else given)
        if self.cfg.messages_field in row and self.cfg.question_field not in row:
            given = row[self.cfg.messages_field]
            if not isinstance(given, list) or not all(isinstance(m, dict) and "role" in m for m in given):
                raise DataError(f"{where}: field '{self.cfg.messages_field}' must be a list of {{role, content}}")
            if given and given[0]["role"] == "system" and self.system:
                given = given[1:]
            turns = [_turn(m, f"{where}: {self.cfg.messages_field}[{k}]") for k, m in enumerate(given)]
            if not turns or turns[-1]["role"] not in ("user", "tool"):
                last = turns[-1]["role"] if turns else "nothing"
                raise DataError(
                    f"{where}: field '{self.cfg.messages_field}' ends with {last}: a prompt ends with a user or tool "
                    "turn for the teacher to answer"
                )
            return messages + turns
        if self.cfg.question_field not in row:
            fields = ", ".join(sorted(row)) or "none"
            raise DataError(
                f"{where}: no '{self.cfg.question_field}' or '{self.cfg.messages_field}' field (fields: {fields}); "
                "set prompts.question_field"
            )
        return messages + [{"role": "user", "content": self._user(row, where)}]


def _turn(message: dict[str, Any], where: str) -> dict[str, Any]:
    """One message of a ready conversation, checked by the record's schema, as the teacher is sent it.

    Only the chat fields are kept (role, content, an assistant's tool_calls, a tool's tool_call_id and
    name); other keys a dataset carries are left out, so a plain turn stays `{role, content}` (as before).
    """
    content = message.get("content")
    fields = {"role": message["role"], "content": "" if content is None else str(content)}
    if message.get("tool_calls"):
        fields["tool_calls"] = message["tool_calls"]
    if message["role"] == "tool":
        fields.update({k: message[k] for k in ("tool_call_id", "name") if message.get(k) is not None})
    try:
        return Message.model_validate(fields).as_chat()
    except ValidationError as e:
        first = e.errors()[0]
        loc = "".join(f".{p}" for p in first["loc"])
        raise DataError(f"{where}{loc}: {first['msg'].removeprefix('Value error, ')}") from None


def _tools(row: dict[str, Any], cfg: PromptsConfig, default: list[dict[str, Any]] | None, where: str):
    """The row's own tool definitions, else the configured ones (None: no tools)."""
    if row.get(cfg.tools_field) in (None, [], ""):
        return default
    try:
        return check_tools(row[cfg.tools_field])
    except ValueError as e:
        raise DataError(f"{where}: field '{cfg.tools_field}': {e}") from None


def configured_tools(cfg: PromptsConfig) -> list[dict[str, Any]] | None:
    """`prompts.tools`: a list of definitions, or a JSON file holding one; a bad one is a ConfigError."""
    tools = cfg.tools
    if isinstance(tools, str):
        path = Path(tools)
        if not path.is_file():
            raise ConfigError(f"prompts.tools: {tools}: no such file (a JSON list of tool definitions)")
        try:
            tools = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConfigError(f"prompts.tools: {tools}: not valid JSON ({e})") from None
    try:
        return check_tools(tools) or None
    except ValueError as e:
        raise ConfigError(f"prompts.tools: {e}") from None


def _prompt_id(
    row: dict[str, Any], messages: list[dict[str, Any]], id_field: str, tools: list[dict[str, Any]] | None = None
) -> str:
    if row.get(id_field) not in (None, ""):
        return str(row[id_field])
    content: Any = {"messages": messages, "tools": tools} if tools else messages  # without tools: ids as before
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"p-{digest[:16]}"


def _require_unicode(item: PromptItem, where: str) -> None:
    """A lone surrogate (JSON's "\\ud800" escape) is not text: no UTF-8 file or server can take it."""
    try:
        json.dumps([item.messages, item.teacher_messages, item.reference, item.tools], ensure_ascii=False).encode()
    except UnicodeEncodeError as e:
        bad = e.object[e.start : e.end].encode("unicode_escape").decode()
        raise DataError(f"{where}: holds {bad}, a lone surrogate, not valid Unicode text: fix the row") from None


def load_prompts(cfg: PromptsConfig) -> Iterator[PromptItem]:
    """Yield prompts from `cfg.source`, rendered for student and teacher.

    A prompt id given twice is a DataError naming both rows (two prompts cannot share an id: their
    samples would share ids); a row without an id whose content repeats an earlier one is the same
    prompt, skipped with a warning. Rows whose text is not valid Unicode are a DataError.
    """
    if not cfg.source:
        raise ConfigError("no prompt source: pass --prompts FILE or set prompts.source")
    student = _Renderer(cfg.system_prompt, cfg.template, None, cfg)
    teacher_same = cfg.teacher_system_prompt is None and cfg.teacher_template is None and not cfg.teacher_examples
    teacher = (
        student
        if teacher_same
        else _Renderer(
            cfg.teacher_system_prompt if cfg.teacher_system_prompt is not None else cfg.system_prompt,
            cfg.teacher_template if cfg.teacher_template is not None else cfg.template,
            cfg.teacher_examples,
            cfg,
        )
    )
    seen: dict[str, str] = {}  # prompt id -> where it was first read
    count = 0
    default_tools = configured_tools(cfg)
    for where, row in read_table(cfg.source, cfg.split, cfg.subset):
        messages = student.render(row, where)
        tools = _tools(row, cfg, default_tools, where)
        pid = _prompt_id(row, messages, cfg.id_field, tools)
        if pid in seen:
            if row.get(cfg.id_field) not in (None, ""):  # two prompts claim one id: which one is meant?
                raise DataError(
                    f"{where}: duplicate prompt id {pid!r} (first at {seen[pid]}): "
                    f"give each prompt its own '{cfg.id_field}', or remove the repeated row"
                )
            log.warning("%s: same content as %s (no id): skipped", where, seen[pid])  # one prompt, listed twice
            continue
        seen[pid] = where
        count += 1
        item = PromptItem(
            id=pid,
            messages=messages,
            teacher_messages=messages if teacher is student else teacher.render(row, where),
            reference=extract_reference(row.get(cfg.answer_field), cfg.answer_pattern),
            tools=tools,
        )
        _require_unicode(item, where)
        yield item
        if cfg.limit is not None and count >= cfg.limit:
            break  # stop before reading a row past the limit
