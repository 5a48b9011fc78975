"""Conversations through a tokenizer's chat template, for the in-process backends (transformers, vllm).

A request's tools and tool turns are shown to the teacher only as its chat template renders them, so a
template that would leave them out is refused before any generation (one line naming the model). Tool
calls in a generated answer are parsed back with the tokenizer's response template
(`tokenizer.parse_response`, transformers >= 5.13) when it has one. No transformers import here: the
functions take the tokenizer object the backend already holds.
"""

from __future__ import annotations

import logging
from typing import Any

from seqdistill.backends.base import Request
from seqdistill.errors import ConfigError

log = logging.getLogger(__name__)


def render_prompt(tokenizer, req: Request) -> str:
    """The request's conversation (and tools) through the chat template, with the generation prompt."""
    kwargs = {"tools": req.tools} if req.tools else {}
    return tokenizer.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True, **kwargs)


def check_tool_rendering(tokenizer, requests: list[Request], model: str, backend: str) -> bool:
    """Refuse requests whose tools or tool turns the chat template would not show; whether calls can be parsed.

    Tools: the prompt rendered with them must differ from the prompt without them. Tool turns: every
    call's name and every tool result must appear in the rendered prompt.
    """
    offered = next((r for r in requests if r.tools), None)
    if offered is not None and render_prompt(tokenizer, offered) == render_prompt(
        tokenizer, Request(offered.prompt_id, offered.messages, offered.sample_indices)
    ):
        raise ConfigError(
            f"backend {backend}: the chat template of {model} does not render tool definitions (`tools`), so "
            "the teacher would never see them: use a model whose template renders tools, or serve it (openai backend)"
        )
    for req in requests:
        needed = [c["function"]["name"] for m in req.messages for c in m.get("tool_calls") or []]
        needed += [m["content"] for m in req.messages if m["role"] == "tool" and m.get("content")]
        if needed:
            rendered = render_prompt(tokenizer, req)
            if missing := [text for text in needed if text not in rendered]:
                raise ConfigError(
                    f"backend {backend}: the chat template of {model} drops tool calls or results from prompt "
                    f"{req.prompt_id} ({missing[0][:40]!r} is not rendered): use a model whose template renders them"
                )
            break  # one conversation with tool turns shows whether the template renders them
    parses = _parser(tokenizer) is not None
    if offered is not None and not parses:
        log.warning(
            "backend %s: the tokenizer of %s has no response template, so tool calls stay in the answer's "
            "text (content) instead of tool_calls",
            backend,
            model,
        )
    return parses


def _parser(tokenizer) -> Any:
    return getattr(tokenizer, "response_template", None) or getattr(tokenizer, "response_schema", None)


def parse_answer(tokenizer, text: str, prompt: str) -> tuple[str, str | None, list[dict[str, Any]] | None]:
    """(content, reasoning, tool calls) of a generated answer, by the tokenizer's response template.

    An answer the template cannot parse (a malformed call) is kept whole as content: the teacher's data.
    """
    try:
        parsed = tokenizer.parse_response(text, prefix=prompt)
    except (ValueError, TypeError, KeyError):
        return text, None, None
    content = parsed.get("content")
    reasoning = parsed.get("reasoning_content") or parsed.get("thinking")
    return (content if isinstance(content, str) else "").strip(), reasoning, parsed.get("tool_calls") or None
