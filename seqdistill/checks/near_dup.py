"""Near-duplicate rules with MinHash LSH (datasketch): completions within a prompt, and prompts across the set.

Texts are shingled into word n-grams (default 3) after lower-casing and collapsing whitespace; two texts
are near-duplicates when their estimated Jaccard similarity reaches `threshold`. LSH finds candidates in
sub-linear time; memory grows with the number of kept texts (about num_perm × 8 bytes each plus the
index), which is the one part of the filter that is not flat in the input size.
"""

from __future__ import annotations

import re

from seqdistill.checks.rules import Drop, Rule
from seqdistill.records import Sample

_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 3) -> set[bytes]:
    """Word n-grams of a normalised text (the whole text when it is shorter than n words).

    >>> sorted(shingles("The cat sat on the mat", 3))[:2]
    [b'cat sat on', b'on the mat']
    """
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


class _Index:
    def __init__(self, threshold: float, num_perm: int, ngram: int):
        from datasketch import MinHash, MinHashLSH

        self._minhash = MinHash
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.num_perm, self.ngram = num_perm, ngram
        self.count = 0

    def signature(self, text: str):
        m = self._minhash(num_perm=self.num_perm, seed=1)
        m.update_batch(list(shingles(text, self.ngram)))
        return m

    def query(self, m) -> list[str]:
        return self.lsh.query(m)

    def add(self, key: str, m) -> None:
        self.lsh.insert(key, m)
        self.count += 1


class NearDuplicateCompletion(Rule):
    """Drop a completion that is a near-duplicate of one already kept for the same prompt.

    The text compared is the whole completion without reasoning (`Sample.completion_text`): every turn,
    tool calls as JSON, tool results.
    """

    name = "near_duplicate"

    def __init__(self, threshold: float = 0.85, num_perm: int = 64, ngram: int = 3):
        self.index = _Index(threshold, num_perm, ngram)

    def __call__(self, sample: Sample) -> Drop | None:
        m = self.index.signature(sample.completion_text(include_reasoning=False))
        prefix = f"{sample.prompt_id}\0"
        twin = next((k for k in self.index.query(m) if k.startswith(prefix)), None)
        if twin is not None:
            return self.drop(f"near-duplicate of sample {twin[len(prefix) :]} for the same prompt")
        self.index.add(prefix + sample.id, m)
        return None


class NearDuplicatePrompt(Rule):
    """Drop every sample of a prompt whose text is a near-duplicate of an earlier, different prompt."""

    name = "near_duplicate_prompt"

    def __init__(self, threshold: float = 0.9, num_perm: int = 64, ngram: int = 3):
        self.index = _Index(threshold, num_perm, ngram)
        self.verdict: dict[str, str | None] = {}  # prompt_id -> the earlier prompt it duplicates, or None

    def __call__(self, sample: Sample) -> Drop | None:
        pid = sample.prompt_id
        if pid not in self.verdict:
            text = " ".join(m.plain_text(include_reasoning=False) for m in sample.prompt if m.role != "system")
            m = self.index.signature(text)
            twin = next(iter(sorted(self.index.query(m))), None)
            self.verdict[pid] = twin
            if twin is None:
                self.index.add(pid, m)
        twin = self.verdict[pid]
        return None if twin is None else self.drop(f"prompt is a near-duplicate of prompt {twin}")
