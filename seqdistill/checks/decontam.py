"""Decontamination: drop samples whose prompt overlaps a prompt of an evaluation set.

Overlap is a shared word n-gram (default 13, the GPT-3 / Llama decontamination convention) after
normalisation; prompts shorter than n words are compared by their whole normalised text.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator

from seqdistill.checks.rules import Drop, Rule
from seqdistill.errors import DataError
from seqdistill.io import read_table
from seqdistill.records import Sample

_PUNCT = re.compile(r"[^\w\s]|_")


def normalize(text: str) -> str:
    """Case-fold, turn punctuation into spaces, collapse whitespace.

    Punctuation becomes a space (not nothing) so "3+4" and "3 + 4" normalise alike.

    >>> normalize("  What is 3+4?\\n Answer:  ")
    'what is 3 4 answer'
    """
    return " ".join(_PUNCT.sub(" ", text).casefold().split())


def _key(words: list[str]) -> int:
    # 8-byte digest instead of the n-gram string: ~4x less memory; collisions are negligible below 1e9 n-grams
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest(), "little")


def ngram_keys(text: str, n: int) -> Iterator[int]:
    """Keys of the word n-grams of normalised `text`, in order (none when it has fewer than n words)."""
    words = normalize(text).split()
    for i in range(len(words) - n + 1):
        yield _key(words[i : i + n])


def prompt_text(sample: Sample) -> str:
    """The user messages' content, joined by newlines (system prompts and worked answers are not compared)."""
    return "\n".join(m.content for m in sample.prompt if m.role == "user")


class Decontaminate(Rule):
    """Drop samples whose prompt shares a word n-gram with a prompt of any evaluation set.

    `eval_texts` maps an eval set name (shown in the reason and in `hits`) to its prompts. Every eval
    prompt's normalised word n-grams go into one index, each remembering the first eval set it came
    from; a sample is dropped at the first of its prompt's n-grams found in the index. Eval prompts
    shorter than `n` words are indexed by their whole normalised text, so a short sample prompt
    ("What is 2+2?") is caught when it equals one exactly. `hits` counts dropped samples per eval set.

    Memory: one dict entry per distinct eval n-gram, about 85 bytes each in CPython (a 64-bit hash
    key, not the text): an eval prompt of W words adds W - n + 1 n-grams, so 10,000 eval prompts of
    100 words (880,000 n-grams) take about 75 MB and ~5 s to index (measured). Samples are streamed
    and not stored; checking one costs about 3 µs per prompt word.

    Limits: word n-grams only, so paraphrases, translations and changed numbers are not caught; a
    short eval prompt is caught only as a whole prompt, not inside a longer one; only user messages
    are compared (not system prompts or the completion).

    >>> rule = Decontaminate({"gsm8k": ["What is 2+2?"]})
    >>> rule.index_size
    1
    """

    name = "contaminated"

    def __init__(self, eval_texts: dict[str, list[str]], n: int = 13):
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n = n
        self.hits: Counter[str] = Counter()
        self._ngrams: dict[int, str] = {}
        self._short: dict[str, str] = {}
        for name, texts in eval_texts.items():
            for text in texts:
                norm = normalize(text)
                words = norm.split()
                if not words:
                    continue
                if len(words) < n:
                    self._short.setdefault(norm, name)
                    continue
                for i in range(len(words) - n + 1):
                    self._ngrams.setdefault(_key(words[i : i + n]), name)

    @property
    def index_size(self) -> int:
        """Entries in the index: distinct eval n-grams plus distinct short eval prompts."""
        return len(self._ngrams) + len(self._short)

    def match(self, text: str) -> tuple[str, str] | None:
        """(eval set name, reason) for a prompt text that overlaps an eval prompt, else None."""
        norm = normalize(text)
        words = norm.split()
        if not words:
            return None
        if len(words) < self.n:
            name = self._short.get(norm)
            return (name, f"prompt equals a short prompt of eval set '{name}'") if name else None
        for i in range(len(words) - self.n + 1):
            name = self._ngrams.get(_key(words[i : i + self.n]))
            if name is not None:
                return name, f"prompt shares a {self.n}-gram with eval set '{name}'"
        return None

    def __call__(self, sample: Sample) -> Drop | None:
        found = self.match(prompt_text(sample))
        if found is None:
            return None
        name, reason = found
        self.hits[name] += 1
        return self.drop(reason)


def _row_text(row: dict, question_field: str, messages_field: str) -> str | None:
    question = row.get(question_field)
    if isinstance(question, str):
        return question
    messages = row.get(messages_field)
    if isinstance(messages, list):
        parts = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        parts = [p for p in parts if isinstance(p, str)]
        if parts:
            return "\n".join(parts)
    return None


def load_eval_texts(
    sources: list[str], question_field: str = "question", messages_field: str = "messages"
) -> dict[str, list[str]]:
    """Read eval prompts from each source (JSONL, Parquet, saved dataset dir or hub name), keyed by source.

    A row's prompt is its `question_field` string, else the joined content of the user messages in
    its `messages_field`. A row with neither, or a source with no rows, is a DataError.
    """
    out: dict[str, list[str]] = {}
    for source in sources:
        texts: list[str] = []
        for location, row in read_table(source):
            text = _row_text(row, question_field, messages_field)
            if text is None:
                fields = ", ".join(sorted(row)) or "none"
                raise DataError(
                    f"{location}: no {question_field!r} string or {messages_field!r} user messages "
                    f"(fields: {fields}); set the eval question field"
                )
            texts.append(text)
        if not texts:
            raise DataError(f"{source}: eval set has no rows")
        out[source] = texts
    return out
