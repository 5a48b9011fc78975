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
"""

from __future__ import annotations

import math
import re
from typing import Any

from seqdistill.errors import ConfigError

CHECKED_EXAMPLES = 256  # examples rendered in full; lengths are computed for all


class PreflightError(ConfigError):
    """The data, template or settings would train the student wrongly."""


def _ids(rendered: Any) -> list[int]:
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


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
        problems += _problems(tokenizer, examples[index], index, eos_ids)
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
