"""Pre-flight check of the training data against the student's tokenizer and chat template.

Training fails silently in a few well-known ways: a template that renders no assistant tokens (empty
loss mask), an end-of-turn token that is never supervised (the student never stops), reasoning text
dropped or repeated by the template, a generation config whose EOS differs from the tokenizer's, and
traces cut at `max_length`. This check renders examples exactly as TRL does for prompt-completion data
(prompt with the generation prompt, then prompt + completion; the loss covers what follows the common
prefix) and refuses to start when any of them would happen. It also reports the token-length
distribution and the `max_length` it recommends.

Masks come from that prompt / completion split, not from `{% generation %}` markers, so a template
without markers is fine here; what matters is that the completion's tokens (and EOS) are supervised.

Conversations (tool calls, several assistant turns: `conversation_tokens`) are rendered whole, and each
supervised assistant turn's tokens are found by rendering prefixes: the conversation up to the turn
with the generation prompt, then up to and including the turn; the difference is the turn, its
end-of-turn token included. That needs a template that renders earlier turns the same whatever
follows (the prefix property); one that re-renders them (e.g. drops the reasoning of earlier turns) is
refused. The check then proves the mask from the decoded text: each supervised turn's content and
tool-call JSON and its end-of-turn token are in the mask, and no tool result or user turn is.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from seqdistill.errors import ConfigError

CHECKED_EXAMPLES = 256  # examples rendered in full; lengths are computed for all


class PreflightError(ConfigError):
    """The data, template or settings would train the student wrongly."""


def _ids(rendered: Any) -> list[int]:
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


def render_ids(
    tokenizer, messages: list[dict[str, Any]], tools=None, add_generation_prompt: bool = False
) -> list[int]:
    """Token ids of `messages` (and `tools`) through the chat template; a template error is a PreflightError."""
    import jinja2

    kwargs = {"tools": tools} if tools else {}
    try:
        rendered = tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True, **kwargs
        )
    except (jinja2.TemplateError, TypeError, ValueError, KeyError) as e:
        raise PreflightError(f"the chat template cannot render this conversation ({str(e)[:160]})") from None
    return _ids(rendered)


def conversation_tokens(tokenizer, example: dict[str, Any]) -> tuple[list[int], list[int], list[tuple[int, int, int]]]:
    """(token ids, loss mask, (message index, start, end) of each supervised turn) of a conversation example.

    `example`: `messages`, `tools` (or None) and `supervised` (indices of the assistant messages to
    learn), as `train.to_example` builds it. Each supervised turn spans from the end of the conversation
    before it rendered with the generation prompt to the end of the conversation up to it (its
    end-of-turn token included). Raises PreflightError when the template does not have the prefix property.
    """
    messages, tools = example["messages"], example.get("tools")
    full = render_ids(tokenizer, messages, tools)
    mask = [0] * len(full)
    turns = []
    for i in example["supervised"]:
        before = render_ids(tokenizer, messages[:i], tools, add_generation_prompt=True)
        upto = render_ids(tokenizer, messages[: i + 1], tools)
        if upto[: len(before)] != before:
            raise PreflightError(
                f"the chat template renders the conversation before assistant message {i} differently once that "
                "message follows, so its tokens cannot be found by rendering prefixes: use a template whose "
                "generation prompt is the start of the assistant turn"
            )
        if full[: len(upto)] != upto:
            raise PreflightError(
                f"the chat template re-renders assistant message {i} once later messages follow (e.g. it drops "
                "the reasoning of earlier turns), so its loss mask cannot be computed by rendering prefixes: use a "
                "template that renders earlier turns as they are, or train on single-turn records"
            )
        mask[len(before) : len(upto)] = [1] * (len(upto) - len(before))
        turns.append((i, len(before), len(upto)))
    return full, mask, turns


def render(tokenizer, example: dict[str, Any]) -> tuple[list[int], int]:
    """(token ids of prompt + completion, index where the supervised completion starts), as TRL builds them."""
    prompt = _ids(tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=True))
    start = 0
    while start < min(len(prompt), len(full)) and prompt[start] == full[start]:
        start += 1
    return full, start


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _problems(tokenizer, example: dict[str, Any], index: int, eos_ids: set[int]) -> list[str]:
    full, start = render(tokenizer, example)
    supervised = full[start:]
    if not supervised:
        return [f"example {index}: the chat template renders no completion tokens (empty loss mask)"]
    problems = []
    if not eos_ids & set(supervised):
        eos = tokenizer.convert_ids_to_tokens(sorted(eos_ids))
        problems.append(f"example {index}: the end-of-turn token {eos} is not supervised (the student would not stop)")
    target = example["completion"][0]["content"]
    text = _squash(tokenizer.decode(supervised, skip_special_tokens=False))
    think = re.match(r"<think>(.*?)</think>\s*(.*)", target, re.DOTALL)
    parts = [("reasoning", think.group(1)), ("answer", think.group(2))] if think else [("completion", target)]
    for what, part in parts:
        part = _squash(part)
        if part and text.count(part) == 0:
            problems.append(f"example {index}: the template drops the {what} from the supervised tokens")
        elif part and len(part) > 8 and text.count(part) > 1:
            problems.append(f"example {index}: the template repeats the {what} in the supervised tokens")
    return problems


def _parts(content: str) -> list[tuple[str, str]]:
    """What of an assistant message's content must be supervised: its reasoning and answer, or all of it."""
    think = re.match(r"<think>(.*?)</think>\s*(.*)", content, re.DOTALL)
    return [("reasoning", think.group(1)), ("answer", think.group(2))] if think else [("completion", content)]


def _call_pieces(call: dict[str, Any]) -> list[str]:
    """Texts a rendered tool call must contain: the function's name, each argument's name and value.

    Bare texts, not JSON: templates write calls as JSON (Qwen, Llama) or in their own syntax (Gemma).
    """
    function = call.get("function", call)
    pieces = [str(function.get("name", ""))]
    arguments = function.get("arguments")
    if isinstance(arguments, dict):
        for key, value in arguments.items():
            pieces += [str(key), value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)]
    elif arguments:
        pieces.append(str(arguments))
    return [_squash(p) for p in pieces if _squash(p)]


def _conversation_problems(tokenizer, example: dict[str, Any], index: int, eos_ids: set[int]) -> list[str]:
    """The pre-flight of one conversation example: what the loss mask holds, turn by turn, checked on the text."""
    where = f"example {index} (sample {example.get('id', '?')})"
    try:
        ids, mask, turns = conversation_tokens(tokenizer, example)
    except PreflightError as e:
        return [f"{where}: {e}"]
    if not any(mask):
        return [f"{where}: the chat template renders no assistant tokens to learn (empty loss mask)"]
    messages, problems = example["messages"], []
    for i, start, end in turns:
        span = ids[start:end]
        text = _squash(tokenizer.decode(span, skip_special_tokens=False))
        if not eos_ids & set(span):
            eos = tokenizer.convert_ids_to_tokens(sorted(eos_ids))
            problems.append(f"{where}: the end-of-turn token {eos} of assistant message {i} is not supervised")
        for what, part in _parts(messages[i].get("content") or ""):
            if (part := _squash(part)) and part not in text:
                problems.append(f"{where}: the template drops the {what} of assistant message {i} from the loss mask")
        for call in messages[i].get("tool_calls") or []:
            if any(piece not in text for piece in _call_pieces(call)):
                name = call.get("function", {}).get("name")
                problems.append(
                    f"{where}: the template drops tool call {name!r} of assistant message {i} from the loss mask "
                    "(does it render tool_calls?)"
                )
    learned = _squash(tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m], skip_special_tokens=False))
    said = " ".join(_squash(m.get("content") or "") for k, m in enumerate(messages) if k in example["supervised"])
    for k, message in enumerate(messages):
        content = _squash(message.get("content") or "")
        if message["role"] in ("user", "tool") and len(content) > 8 and content in learned and content not in said:
            what = "tool result" if message["role"] == "tool" else "user turn"
            problems.append(
                f"{where}: the loss mask covers the {what} of message {k} (only assistant turns are learnt)"
            )
    return problems


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run_preflight(
    tokenizer,
    examples: list[dict[str, Any]],
    lengths: list[int],
    max_length: int | None,
    max_truncated_share: float,
    generation_eos: list[int] | None,
) -> dict[str, Any]:
    """Check the examples; return the length report, or raise PreflightError naming every problem found."""
    eos_ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    problems: list[str] = []
    if generation_eos is not None and tokenizer.eos_token_id not in generation_eos:
        problems.append(
            f"generation config EOS {generation_eos} does not include the tokenizer's EOS "
            f"{tokenizer.eos_token!r} (id {tokenizer.eos_token_id}): generation would not stop at end of turn"
        )
    step = max(1, len(examples) // CHECKED_EXAMPLES)
    for index in range(0, len(examples), step):
        check = _conversation_problems if "messages" in examples[index] else _problems
        problems += check(tokenizer, examples[index], index, eos_ids)
        if len(problems) >= 5:
            break
    longest = max(lengths)
    recommended = int(math.ceil(longest / 64) * 64)
    limit = max_length or longest
    truncated = sum(n > limit for n in lengths)
    report = {
        "examples": len(lengths),
        "checked": len(range(0, len(examples), step)),
        "tokens_p50": percentile(lengths, 0.50),
        "tokens_p90": percentile(lengths, 0.90),
        "tokens_p99": percentile(lengths, 0.99),
        "tokens_max": longest,
        "recommended_max_length": recommended,
        "max_length": limit,
        "truncated": truncated,
    }
    if truncated / len(lengths) > max_truncated_share:
        problems.append(
            f"max_length {limit} would cut {truncated} of {len(lengths)} examples "
            f"(longest {longest} tokens): set max_length to at least {recommended}, or raise max_truncated_share"
        )
    if problems:
        more = " (and more)" if len(problems) >= 5 else ""
        raise PreflightError("pre-flight check failed: " + "; ".join(problems[:5]) + more)
    return report
