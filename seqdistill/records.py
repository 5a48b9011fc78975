"""The one sample schema every stage reads and writes, and the request key that identifies a sample.

A record is TRL's conversational prompt-completion format plus metadata, so a kept file is a
training set as it is. `prompt` is what the student sees; the teacher's own prompt, when it differs
(a system prompt or worked examples), is kept in `meta["teacher_prompt"]`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    """One chat message; `reasoning_content` holds a separate reasoning trace (R1-style servers)."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    reasoning_content: str | None = Field(default=None, description="Reasoning trace returned apart from content.")


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Teacher(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    backend: str


class Sample(BaseModel):
    """One teacher sample: one JSON line in samples/kept/rejected files."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        description="Stable hash of the request (prompt id, teacher, teacher prompt, sampling, sample index)."
    )
    prompt_id: str = Field(description="Id of the source prompt.")
    sample_index: int = Field(ge=0, description="Which of the n samples for this prompt.")
    prompt: list[Message] = Field(min_length=1, description="The student's prompt messages.")
    completion: list[Message] = Field(description="The teacher's answer: one assistant message.")
    reference: str | None = Field(default=None, description="Reference answer, when the prompt set has one.")
    finish_reason: str | None = Field(default=None, description="'stop', 'length' (truncated), ...")
    usage: Usage = Field(default_factory=Usage)
    teacher: Teacher
    sampling: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)

    @property
    def text(self) -> str:
        """The completion's content (empty string when there is no completion message)."""
        return self.completion[0].content if self.completion else ""


def sample_id(
    prompt_id: str, model: str, teacher_messages: list[dict], sampling: dict[str, Any], sample_index: int
) -> str:
    """Stable key of one requested sample: the same request for the same prompt always gets the same id.

    The prompt id is part of the key: two prompts with the same text under different ids are two
    prompts (a file may list a question twice on purpose, with different references or metadata), so
    each gets its own samples. Without it they would share ids: both written under one id in a run,
    and after a resume one would count as done and the other never be generated. `generate` warns
    up front when prompts share their text, so a user who wants to pay once can dedupe the file.

    `n` is not part of the key: sample 2 of a prompt is the same sample whether 3 or 8 were asked for,
    so raising n only costs the new indices.

    >>> sample_id("q1", "m", [{"role": "user", "content": "hi"}], {"temperature": 0.7}, 0)[:12]
    '379c394c9b07'
    """
    key_sampling = {k: v for k, v in sorted(sampling.items()) if k != "n"}
    payload = json.dumps(
        {
            "prompt_id": prompt_id,
            "model": model,
            "messages": teacher_messages,
            "sampling": key_sampling,
            "index": sample_index,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
