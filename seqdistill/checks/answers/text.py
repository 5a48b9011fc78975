"""Text helpers the checkers share: `\\boxed{}` spans (braces matched by counting) and text normalisation."""

from __future__ import annotations

import re
from typing import NamedTuple

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_RE = re.compile(r"[{}]")


class Box(NamedTuple):
    start: int  # index of the backslash
    end: int  # index just past the closing brace
    content: str


def boxes(text: str) -> list[Box]:
    """Every well-formed ``\\boxed{...}`` (or ``\\fbox``) in ``text``, in order; unbalanced ones are skipped.

    Braces are matched by counting, because boxed answers often contain nested braces; a box inside
    another box is part of the outer one's content.

    >>> [b.content for b in boxes(r"first \\boxed{1}, then \\boxed{\\frac{3}{4}}, cut \\boxed{5")]
    ['1', '\\\\frac{3}{4}']
    """
    out: list[Box] = []
    pos = 0
    while (match := _BOXED_RE.search(text, pos)) is not None:
        depth, start = 1, match.end()
        end = None
        for brace in _BRACE_RE.finditer(text, start):
            depth += 1 if brace.group() == "{" else -1
            if depth == 0:
                end = brace.start()
                break
        if end is None:  # unbalanced (e.g. truncated generation): look for a later box
            pos = match.end()
            continue
        out.append(Box(match.start(), end + 1, text[start:end]))
        pos = end + 1
    return out


def last_boxed(text: str) -> str | None:
    """Return the content of the last well-formed ``\\boxed{...}`` in ``text``, or None.

    >>> last_boxed(r"first \\boxed{1}, then \\boxed{\\frac{3}{4}}")
    '\\\\frac{3}{4}'
    >>> last_boxed("no box") is None
    True
    """
    if "box" not in text:  # the common case without a box costs one substring search
        return None
    found = boxes(text)
    return found[-1].content if found else None


def normalize_text(text: str) -> str:
    """Normalise for exact comparison: strip, drop surrounding $ and a trailing period, collapse spaces, casefold.

    >>> normalize_text("  $Paris$. ")
    'paris'
    """
    text = text.strip().strip("$").strip().removesuffix(".").strip().strip("$")
    return " ".join(text.split()).casefold()
