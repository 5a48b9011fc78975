"""Quality rules: completion length, `<think>` blocks, repetition and refusals.

Each rule is a self-contained `Rule` built from plain arguments and is stateless: the same sample
always gets the same verdict, whatever came before it.
"""

from __future__ import annotations

from collections.abc import Callable

from seqdistill.checks.rules import Drop, Rule
from seqdistill.records import Sample

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def word_count(text: str) -> int:
    """Whitespace word count, the default token count of `Length`.

    >>> word_count("  two\\nwords ")
    2
    """
    return len(text.split())


def completion_text(sample: Sample, include_reasoning: bool = True) -> str:
    """The whole completion's text (`Sample.completion_text`): every turn, reasoning first when wanted."""
    return sample.completion_text(include_reasoning)


class Length(Rule):
    """Drop completions shorter than `min_tokens` or longer than `max_tokens` (both inclusive bounds).

    `count` turns text into a token count; it defaults to a whitespace word count. Pass the student's
    tokenizer to count real tokens, e.g. `lambda t: len(tok(t, add_special_tokens=False).input_ids)`.
    The counted text is the content plus `reasoning_content` when present (`include_reasoning`), as the
    train stage renders it into the student's target by default. A bound of None is not checked.

    Limits: the count excludes the chat template's special tokens, so the real sequence is a few
    tokens longer; the prompt is not counted.
    """

    name = "length"

    def __init__(
        self,
        min_tokens: int | None,
        max_tokens: int | None,
        count: Callable[[str], int] | None = None,
        include_reasoning: bool = True,
    ):
        if min_tokens is not None and max_tokens is not None and min_tokens > max_tokens:
            raise ValueError(f"min_tokens ({min_tokens}) is above max_tokens ({max_tokens})")
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens
        self.count = count or word_count
        self.include_reasoning = include_reasoning

    def __call__(self, sample: Sample) -> Drop | None:
        if self.min_tokens is None and self.max_tokens is None:
            return None
        n = self.count(completion_text(sample, self.include_reasoning))
        if self.min_tokens is not None and n < self.min_tokens:
            return self.drop(f"completion has {n} tokens, below min_tokens={self.min_tokens}")
        if self.max_tokens is not None and n > self.max_tokens:
            return self.drop(f"completion has {n} tokens, above max_tokens={self.max_tokens}")
        return None


def think_state(text: str) -> str:
    """Classify the `<think>` blocks of `text`: 'none', 'unclosed', 'empty' or 'closed'.

    'unclosed' means the last `<think>` has no `</think>` after it. A `</think>` with no `<think>`
    before it counts as a block opened by the chat template (R1/Qwen3 templates put `<think>` in the
    prompt, so the completion starts inside the block). 'empty' is a closed block with only
    whitespace inside (what Qwen3 writes with thinking off).

    >>> [think_state(t) for t in ["hi", "<think>a</think>b", "<think>a", "a</think>b", "<think> </think>b"]]
    ['none', 'closed', 'unclosed', 'closed', 'empty']
    """
    last_open = text.rfind(THINK_OPEN)
    last_close = text.rfind(THINK_CLOSE)
    if last_open > last_close:
        return "unclosed"
    if last_close < 0:
        return "none"
    first_close = text.find(THINK_CLOSE)
    first_open = text.find(THINK_OPEN)
    start = first_open + len(THINK_OPEN) if 0 <= first_open < first_close else 0
    return "closed" if text[start:first_close].strip() else "empty"


class Think(Rule):
    """Check `<think>` reasoning blocks.

    Always: drop a completion whose content has an unclosed `<think>` (the model ran out of budget
    mid-thought, or never finished it). When `required`: also drop completions without reasoning,
    i.e. with no non-empty `reasoning_content` and no closed, non-empty `<think>…</think>` in content.
    A non-empty `reasoning_content` (R1-style servers) counts as the think part.

    Several assistant turns (tool use): an unclosed block in any turn drops the sample; reasoning in
    any one turn satisfies `required`.

    Limits: tags are matched literally (`<think>`, lower case); other reasoning markers (`<reasoning>`,
    `<|begin_of_thought|>`) are not recognised. Only the first block of a turn is checked for being empty.
    """

    name = "think"

    def __init__(self, required: bool):
        self.required = required

    def __call__(self, sample: Sample) -> Drop | None:
        turns = [m for m in sample.completion if m.role == "assistant"]
        if not turns:
            return self.drop("no completion message") if self.required else None
        states = [think_state(m.content) for m in turns]
        if "unclosed" in states:
            where = "" if len(turns) == 1 else f" of assistant turn {states.index('unclosed')}"
            return self.drop(f"unclosed <think> in content{where} (no </think> after the last <think>)")
        if not self.required:
            return None
        if any(m.reasoning_content and m.reasoning_content.strip() for m in turns) or "closed" in states:
            return None
        if "empty" in states:
            return self.drop("empty <think> block (required)")
        return self.drop("no <think> block (required)")


def repeated_ngram_ratio(text: str, n: int = 4) -> float:
    """1 - distinct word n-grams / total word n-grams (case-folded); 0.0 when there are no n-grams.

    >>> repeated_ngram_ratio("a b a b a b", n=2)
    0.6
    >>> repeated_ngram_ratio("one two three", n=4)
    0.0
    """
    words = text.casefold().split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    distinct = len({tuple(words[i : i + n]) for i in range(total)})
    return 1 - distinct / total


class Repetition(Rule):
    """Drop completions that loop: repeated word n-gram ratio above `max_ratio`.

    The ratio is `1 - distinct n-grams / total n-grams` over the completion (reasoning_content and
    content together), words split on whitespace and case-folded. Texts with fewer than `2 * n` words
    are never dropped: too short for the ratio to mean anything.

    Limits: word-level only, so repetition inside one long token (no spaces, e.g. CJK text or
    "aaaa…") is not seen; legitimately repetitive text (tables, enumerations, code) can score high,
    so keep `max_ratio` loose (0.3 ≈ 30% of all 4-grams are repeats).
    """

    name = "repetition"

    def __init__(self, n: int = 4, max_ratio: float = 0.3):
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if not 0 <= max_ratio <= 1:
            raise ValueError(f"max_ratio must be within [0, 1], got {max_ratio}")
        self.n = n
        self.max_ratio = max_ratio

    def __call__(self, sample: Sample) -> Drop | None:
        text = completion_text(sample)
        if len(text.split()) < 2 * self.n:
            return None
        ratio = repeated_ngram_ratio(text, self.n)
        if ratio > self.max_ratio:
            return self.drop(f"repeated {self.n}-gram ratio {ratio:.2f} above max_ratio={self.max_ratio}")
        return None


DEFAULT_REFUSALS = [
    "I can't help with",
    "I cannot help with",
    "I can't assist with",
    "I cannot assist with",
    "I'm sorry, but I can't",
    "I'm sorry, but I cannot",
    "I am sorry, but I cannot",
    "I'm unable to help with",
    "I am unable to help with",
    "I won't be able to help",
    "As an AI language model",
    "As an AI developed by",
    "I cannot fulfill this request",
    "I can't fulfill this request",
    "I must decline",
]


def _fold(text: str) -> str:
    # curly apostrophes are common in model output; match them like straight ones
    return text.replace("\u2019", "'").casefold()


class Refusal(Rule):
    """Drop completions whose content contains a refusal phrase (case-insensitive substring match).

    `phrases` defaults to `DEFAULT_REFUSALS`; an empty list disables the rule. Curly apostrophes
    match straight ones. Only `content` is searched, not `reasoning_content` (a model may consider
    refusing in its reasoning and then answer).

    Limits: a plain substring match, English only; a completion that quotes a refusal phrase (e.g.
    explaining what a chatbot says) is dropped too, and refusals worded otherwise are kept.
    """

    name = "refusal"

    def __init__(self, phrases: list[str] | None = None):
        self.phrases = list(DEFAULT_REFUSALS if phrases is None else phrases)
        self._folded = [(_fold(p), p) for p in self.phrases if p.strip()]

    def __call__(self, sample: Sample) -> Drop | None:
        text = _fold(sample.text)
        for folded, phrase in self._folded:
            if folded in text:
                return self.drop(f"refusal phrase {phrase!r}")
        return None
