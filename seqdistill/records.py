"""The one sample schema every stage reads and writes, and the request key that identifies a sample.

A record is TRL's conversational prompt-completion format plus metadata, so a kept file is a
training set as it is. `prompt` is what the student sees; the teacher's own prompt, when it differs
(a system prompt or worked examples), is kept in `meta["teacher_prompt"]`.

Conversations: the prompt may be a whole history (system, user, assistant and tool turns) and the
completion several messages: assistant turns with `tool_calls`, `tool` results, and a final assistant
message. Tool calls take TRL's and OpenAI's shape (`{"type": "function", "function": {"name",
"arguments"}}`, arguments stored as a JSON object, as chat templates render them), and `tools` holds the
OpenAI-style function definitions the conversation was given (TRL's `tools` column). "The completion's
text" is defined here once: `Sample.text` (the final answer) and `Sample.completion_text` (everything).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError


def _without_unset(data: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
    """A dump without the `optional` keys that are None: records without tool use stay as they always were."""
    return {k: v for k, v in data.items() if not (k in optional and v is None)}


class FunctionCall(BaseModel):
    """The function a tool call names, and its arguments.

    Arguments are stored as a JSON object (what chat templates render with `tojson`, and what TRL's
    examples use); OpenAI-style servers send them as a JSON string, which is parsed here. A string that
    is not a JSON object (a teacher's malformed call) is kept as it is: data for the filter to drop.
    """

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="The function's name.")
    arguments: dict[str, Any] | str = Field(default_factory=dict, description="Arguments: a JSON object.")

    @field_validator("arguments", mode="before")
    @classmethod
    def _parse_arguments(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                return value
            return parsed if isinstance(parsed, dict) else value
        return value

    @property
    def arguments_ok(self) -> bool:
        """Whether the arguments are a JSON object (a string here is one that did not parse as one)."""
        return isinstance(self.arguments, dict)


class ToolCall(BaseModel):
    """One tool call of an assistant message (OpenAI's and TRL's shape); `id` links it to its `tool` result."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["function"] = "function"
    id: str | None = Field(default=None, description="The call's id, echoed by the tool message's tool_call_id.")
    function: FunctionCall

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        return _without_unset(handler(self), ("id",))

    def as_text(self) -> str:
        """The call as one JSON object, `{"name": ..., "arguments": ...}` (how dedup and length see it)."""
        return json.dumps({"name": self.function.name, "arguments": self.function.arguments}, ensure_ascii=False)


class Message(BaseModel):
    """One chat message; `reasoning_content` holds a separate reasoning trace (R1-style servers).

    An assistant message may carry `tool_calls` (its content is then often empty: a null content is
    read as ""); a `tool` message answers one call (`tool_call_id`, and the function's `name`).
    """

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    reasoning_content: str | None = Field(default=None, description="Reasoning trace returned apart from content.")
    tool_calls: list[ToolCall] | None = Field(default=None, description="Assistant only: the tools it calls.")
    tool_call_id: str | None = Field(default=None, description="Tool only: the id of the call this answers.")
    name: str | None = Field(default=None, description="Tool only: the name of the function that answered.")

    @model_validator(mode="before")
    @classmethod
    def _null_content(cls, data: Any) -> Any:
        # OpenAI sends `content: null` beside tool calls; the record stores "" (chat templates print None as "None")
        if isinstance(data, dict) and data.get("content") is None and data.get("tool_calls"):
            return {**data, "content": ""}
        return data

    @model_validator(mode="after")
    def _fields_of_role(self) -> Message:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError(f"tool_calls on a {self.role} message: only assistant messages call tools")
        for key in ("tool_call_id", "name"):
            if getattr(self, key) is not None and self.role != "tool":
                raise ValueError(f"{key} on a {self.role} message: only tool messages have one")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        return _without_unset(handler(self), ("tool_calls", "tool_call_id", "name"))

    def plain_text(self, include_reasoning: bool = True) -> str:
        """The message as plain text: its reasoning (when wanted), content and tool calls, one per line."""
        parts = [self.reasoning_content] if include_reasoning and self.reasoning_content else []
        parts += [self.content] if self.content else []
        parts += [call.as_text() for call in self.tool_calls or []]
        return "\n".join(parts)

    def as_chat(self) -> dict[str, Any]:
        """The message as a chat template or server takes it: no null fields, no `reasoning_content`."""
        out = self.model_dump(exclude_none=True)
        out.pop("reasoning_content", None)
        return out


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Teacher(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    backend: str


LOGPROB_FLOOR = -9999.0  # what an impossible token's logprob is written as (JSON has no -inf; vLLM uses the same)


class Logprobs(BaseModel):
    """A completion's per-token log-probabilities under the teacher: the one type of `meta.logprobs`.

    On disk (JSON): `{"tokens": [...], "logprobs": [...], "top": [[[token, logprob], ...], ...], "ids": [...]}`,
    `top` and `ids` left out when unknown; floats rounded to 4 decimals by `build`. Position i is the
    teacher's raw (temperature 1) log-probability of token i given everything before it, and its top-k
    tokens at that position, best first. Tokens are texts as servers report them (' the', not 'Ġthe');
    `ids` are the teacher tokenizer's ids of the same tokens when known (in-process backends and
    `seqdistill score`), which lets a consumer with the same vocabulary line them up exactly.

    Producers: generate (openai, transformers, vllm backends) over the teacher's own samples, and
    `seqdistill score` over any completion. Consumers: kd.py (soft targets), train.

    Limits: top-k entries carry their text only (no ids); a text several ids render to (a partial
    UTF-8 byte) cannot be mapped back to one id. Which tokens a record covers depends on its producer:
    generate records the generated content tokens, score the whole rendered completion (see docs/score.md).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    tokens: list[str] = Field(description="The completion's tokens, as text.")
    logprobs: list[float] = Field(description="The teacher's log-probability of each token.")
    top: list[list[tuple[str, float]]] | None = Field(
        default=None, description="Per position, the teacher's top-k (token, logprob), best first."
    )
    ids: list[int] | None = Field(default=None, description="The tokens' ids in the teacher's tokenizer.")

    @model_validator(mode="after")
    def _same_lengths(self) -> Logprobs:
        n = len(self.tokens)
        for name in ("logprobs", "top", "ids"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} tokens")
        return self

    @classmethod
    def build(
        cls,
        tokens: Sequence[str],
        logprobs: Sequence[float],
        top: Sequence[Sequence[tuple[str, float]]] | None = None,
        ids: Sequence[int] | None = None,
    ) -> Logprobs:
        """The record from raw producer output: floats rounded to 4 decimals, -inf written as LOGPROB_FLOOR.

        >>> Logprobs.build(["a", "b"], [-0.123456, float("-inf")], [[("a", -0.1)], [("c", -1e-9)]]).to_meta()
        {'tokens': ['a', 'b'], 'logprobs': [-0.1235, -9999.0], 'top': [[['a', -0.1]], [['c', -0.0]]]}
        """
        top_rows = None if top is None else [[(str(t), _round(v)) for t, v in row] for row in top]
        return cls(
            tokens=list(tokens),
            logprobs=[_round(v) for v in logprobs],
            top=top_rows,
            ids=None if ids is None else [int(i) for i in ids],
        )

    def to_meta(self) -> dict[str, Any]:
        """The JSON form stored in `meta.logprobs` (what the files held before the type existed)."""
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def k(self) -> int:
        """The widest top-k row (0 without `top`)."""
        return max((len(row) for row in self.top or []), default=0)


def _round(value: float) -> float:
    value = float(value)
    if math.isnan(value):
        raise ValueError("a logprob is NaN")
    return round(max(value, LOGPROB_FLOOR), 4)


class LogprobsSource(BaseModel):
    """Who scored a record's `meta.logprobs` (written by `seqdistill score` as `meta.logprobs_source`)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(description="The scoring teacher, as configured.")
    backend: str = Field(description="openai | transformers | vllm.")
    k: int = Field(ge=0, description="Top-k requested per position.")
    tokenizer: str | None = Field(default=None, description="The tokenizer that made the token ids.")
    score_id: str | None = Field(default=None, description="Key of the scoring request (resume ledger).")


def _check_meta_logprobs(meta: dict[str, Any]) -> dict[str, Any]:
    """Validate `meta.logprobs` (a Logprobs or its JSON form) and `meta.logprobs_source`; store JSON forms."""
    for key, cls in (("logprobs", Logprobs), ("logprobs_source", LogprobsSource)):
        value = meta.get(key)
        if value is None:
            continue
        try:
            parsed = cls.model_validate(value)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in (key, *first["loc"]))
            message = f"{where}: {first['msg'].removeprefix('Value error, ')}"
            # a custom error, so the message is not prefixed with "Value error, " a second time
            raise PydanticCustomError("meta_logprobs", "{message}", {"message": message}) from None
        if isinstance(value, BaseModel):  # a typed producer's output: stored as its JSON form
            meta[key] = parsed.to_meta() if isinstance(parsed, Logprobs) else parsed.model_dump(exclude_none=True)
    return meta


class Sample(BaseModel):
    """One teacher sample: one JSON line in samples/kept/rejected files."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        description="Stable hash of the request (prompt id, teacher, teacher prompt, sampling, sample index)."
    )
    prompt_id: str = Field(description="Id of the source prompt.")
    sample_index: int = Field(ge=0, description="Which of the n samples for this prompt.")
    prompt: list[Message] = Field(min_length=1, description="The student's prompt messages.")
    completion: list[Message] = Field(
        description="The teacher's answer: one assistant message, or several turns (tool calls, tool results, "
        "a final assistant message)."
    )
    tools: list[dict[str, Any]] | None = Field(
        default=None, description="OpenAI-style function definitions the conversation was given (TRL's `tools`)."
    )
    reference: str | None = Field(default=None, description="Reference answer, when the prompt set has one.")
    finish_reason: str | None = Field(default=None, description="'stop', 'length' (truncated), ...")
    usage: Usage = Field(default_factory=Usage)
    teacher: Teacher | None = Field(default=None, description="Who generated it (absent for imported datasets).")
    sampling: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("meta")
    @classmethod
    def _check_meta(cls, meta: dict[str, Any]) -> dict[str, Any]:
        return _check_meta_logprobs(meta)

    @field_validator("tools", mode="before")
    @classmethod
    def _check_tools(cls, tools: Any) -> Any:
        return check_tools(tools)

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        return _without_unset(handler(self), ("tools",))

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)

    @property
    def logprobs(self) -> Logprobs | None:
        """The teacher's per-token logprobs of the completion (`meta.logprobs`), typed; None when absent."""
        value = self.meta.get("logprobs")
        return None if value is None else Logprobs.model_validate(value)

    @property
    def logprobs_source(self) -> LogprobsSource | None:
        """Who scored `meta.logprobs` (None for logprobs captured while generating)."""
        value = self.meta.get("logprobs_source")
        return None if value is None else LogprobsSource.model_validate(value)

    @property
    def final_message(self) -> Message | None:
        """The completion's last message when it is an assistant message (the teacher's final turn), else None.

        None for an empty completion and for one that ends with a tool result (the answer is missing).
        A final turn that only calls a tool is returned: the teacher ended its turn with that call.
        """
        last = self.completion[-1] if self.completion else None
        return last if last is not None and last.role == "assistant" else None

    @property
    def text(self) -> str:
        """The final answer: the content of the final assistant message ("" when there is none).

        What answer checks, votes, refusal phrases and eval read. For everything the completion holds
        (earlier turns, tool calls and results, reasoning), see `completion_text`.
        """
        final = self.final_message
        return final.content if final is not None else ""

    def completion_text(self, include_reasoning: bool = True) -> str:
        """The whole completion as text, message after message: reasoning (when wanted), content, tool calls
        as JSON, tool results. What dedup, near-dup, length and repetition rules and the report measure.

        For a single assistant message without tool calls: its reasoning, a newline, its content.
        """
        return "\n".join(text for m in self.completion if (text := m.plain_text(include_reasoning)))

    @property
    def is_conversation(self) -> bool:
        """Whether this record uses tools or has several completion messages (not a plain prompt-completion)."""
        return bool(
            self.tools
            or len(self.completion) > 1
            or any(m.tool_calls or m.role == "tool" for m in [*self.prompt, *self.completion])
        )


def check_tools(tools: Any) -> list[dict[str, Any]] | None:
    """OpenAI-style tool definitions (`[{"type": "function", "function": {"name", ...}}]`), or a ValueError.

    A JSON string holding the list (as some datasets store TRL's `tools` column) is parsed; None stays None.

    >>> check_tools('[{"type": "function", "function": {"name": "add", "parameters": {}}}]')[0]["function"]["name"]
    'add'
    """
    if tools is None:
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            raise ValueError("a JSON string that does not parse, not a list of function definitions") from None
    if not isinstance(tools, list):
        raise ValueError(f"expected a list of function definitions, got {type(tools).__name__}")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            raise ValueError(f'tool {i}: expected {{"type": "function", "function": {{"name": ...}}}}')
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise ValueError(f"tool {i}: function.name is missing or not text")
    return tools


def sample_id(
    prompt_id: str,
    model: str,
    teacher_messages: list[dict],
    sampling: dict[str, Any],
    sample_index: int,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """Stable key of one requested sample: the same request for the same prompt always gets the same id.

    The prompt id is part of the key: two prompts with the same text under different ids are two
    prompts (a file may list a question twice on purpose, with different references or metadata), so
    each gets its own samples. Without it they would share ids: both written under one id in a run,
    and after a resume one would count as done and the other never be generated. `generate` warns
    up front when prompts share their text, so a user who wants to pay once can dedupe the file.

    `n` is not part of the key: sample 2 of a prompt is the same sample whether 3 or 8 were asked for,
    so raising n only costs the new indices. `tools` are part of it when given (the same messages with
    other tools are another request); without tools the key is what it always was.

    >>> sample_id("q1", "m", [{"role": "user", "content": "hi"}], {"temperature": 0.7}, 0)[:12]
    '379c394c9b07'
    """
    key_sampling = {k: v for k, v in sorted(sampling.items()) if k != "n"}
    request = {
        "prompt_id": prompt_id,
        "model": model,
        "messages": teacher_messages,
        "sampling": key_sampling,
        "index": sample_index,
    }
    if tools:
        request["tools"] = tools
    payload = json.dumps(request, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def score_id(
    sample: str, teacher_messages: list[dict], completion: list[dict], teacher: str, tokenizer: str, k: int
) -> str:
    """Stable key of one scoring request: a sample's completion scored by one teacher under one prompt.

    The backend is not part of the key: the same teacher over a server or in-process gives the same scores.

    >>> score_id("s1", [{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "yo"}], "m", "m", 5)[:12]
    '9d1107e88fc3'
    """
    payload = json.dumps(
        {"sample": sample, "prompt": teacher_messages, "completion": completion, "teacher": teacher,
         "tokenizer": tokenizer, "k": k},
        sort_keys=True,
        ensure_ascii=False,
    )  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
