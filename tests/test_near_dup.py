"""Near-duplicate completions within a prompt and near-duplicate prompts across the set (MinHash LSH)."""

from __future__ import annotations

import pytest

from seqdistill.checks.near_dup import NearDuplicateCompletion, NearDuplicatePrompt, shingles
from seqdistill.records import Sample
from tests.conftest import make_sample

BASE = "First add the tens: twenty plus forty is sixty. Then the ones: three plus five is eight. So the sum is 68."


def _s(pid: str, i: int, text: str, prompt: str | None = None) -> Sample:
    row = make_sample(pid, i, text, id=f"{pid}-{i}")
    if prompt is not None:
        row["prompt"] = [{"role": "user", "content": prompt}]
    return Sample.model_validate(row)


@pytest.mark.parametrize(
    ("second", "dropped"),
    [
        (BASE, True),  # identical
        (BASE.replace("So the sum is 68.", "So the sum is 68!"), True),  # punctuation only
        (BASE.upper(), True),  # case only
        (BASE.replace("First", "Well, first"), True),  # one word added
        ("The answer is 68 because 23 + 45 = 68, computed directly without splitting.", False),  # different
    ],
)
def test_near_duplicate_completion_within_a_prompt(second, dropped):
    rule = NearDuplicateCompletion(threshold=0.8)
    assert rule(_s("p1", 0, BASE)) is None
    drop = rule(_s("p1", 1, second))
    assert (drop is not None) == dropped
    if dropped:
        assert drop.rule == "near_duplicate" and "p1-0" in drop.reason


def test_the_same_completion_for_another_prompt_is_kept():
    rule = NearDuplicateCompletion()
    assert rule(_s("p1", 0, BASE)) is None
    assert rule(_s("p2", 0, BASE)) is None


def test_near_duplicate_prompts_drop_every_sample_of_the_later_prompt():
    rule = NearDuplicatePrompt(threshold=0.8)
    q = "A farmer has 23 cows and buys 45 more at the market on Tuesday. How many cows does the farmer have now?"
    assert rule(_s("a", 0, "x", q)) is None
    assert rule(_s("a", 1, "y", q)) is None  # the first prompt keeps all its samples
    twin = q.replace("Tuesday", "Tuesday morning")
    for i in range(2):
        drop = rule(_s("b", i, "z", twin))
        assert drop is not None and drop.rule == "near_duplicate_prompt" and "prompt a" in drop.reason
    other = "What is the capital of France? Answer with one word and explain nothing else at all please."
    assert rule(_s("c", 0, "Paris", other)) is None


def test_shingles_normalise_case_and_punctuation():
    assert shingles("Hello, World! Again") == shingles("hello world again")
    assert shingles("two words") == {b"two words"}
