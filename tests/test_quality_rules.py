"""Quality rules: length, <think>, repetition, refusal — keep/drop decisions and their reasons."""

from __future__ import annotations

import pytest

from seqdistill.checks.quality import (
    DEFAULT_REFUSALS,
    Length,
    Refusal,
    Repetition,
    Think,
    repeated_ngram_ratio,
    think_state,
)
from seqdistill.checks.rules import Drop
from seqdistill.records import Sample
from tests.conftest import make_sample


def sample(text: str, reasoning: str | None = None, **over) -> Sample:
    row = make_sample(text=text, **over)
    row["completion"][0]["reasoning_content"] = reasoning
    return Sample.model_validate(row)


def words(k: int) -> str:
    return " ".join(f"w{i}" for i in range(k))


# ---------------------------------------------------------------- Length


@pytest.mark.parametrize(
    ("lo", "hi", "text", "reason"),
    [
        (2, 5, words(3), None),
        (2, 5, words(2), None),  # exactly at min: kept
        (2, 5, words(5), None),  # exactly at max: kept
        (2, 5, words(1), "completion has 1 tokens, below min_tokens=2"),
        (2, 5, words(6), "completion has 6 tokens, above max_tokens=5"),
        (2, 5, "", "completion has 0 tokens, below min_tokens=2"),
        (None, 5, "", None),  # no lower bound
        (None, 5, words(6), "completion has 6 tokens, above max_tokens=5"),
        (3, None, words(1000), None),  # no upper bound
        (3, None, words(2), "completion has 2 tokens, below min_tokens=3"),
        (None, None, words(10**4), None),  # both off: a no-op
        (1, 1, "  one  ", None),  # whitespace does not count
    ],
)
def test_length_bounds(lo, hi, text, reason):
    drop = Length(lo, hi)(sample(text))
    assert drop == (None if reason is None else Drop("length", reason))


def test_length_uses_the_given_counter():
    chars = Length(None, 10, count=len)
    assert chars(sample("abcdefghij")) is None
    assert chars(sample("abcdefghijk")) == Drop("length", "completion has 11 tokens, above max_tokens=10")


def test_length_counts_reasoning_content_unless_told_not_to():
    s = sample(words(3), reasoning=words(4))
    assert Length(None, 5)(s) == Drop("length", "completion has 7 tokens, above max_tokens=5")
    assert Length(None, 5, include_reasoning=False)(s) is None


def test_length_counts_with_a_real_tokenizer_shape():
    # what the lead passes: a callable over text; here a fake tokenizer that splits characters
    class Tok:
        def __call__(self, text, add_special_tokens=False):
            assert add_special_tokens is False
            return type("Enc", (), {"input_ids": list(text)})()

    tok = Tok()
    rule = Length(3, None, count=lambda t: len(tok(t, add_special_tokens=False).input_ids))
    assert rule(sample("ab")) == Drop("length", "completion has 2 tokens, below min_tokens=3")
    assert rule(sample("abc")) is None


def test_length_rejects_inverted_bounds():
    with pytest.raises(ValueError, match="min_tokens"):
        Length(10, 5)


# ---------------------------------------------------------------- Think


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "none"),
        ("plain answer", "none"),
        ("<think>steps</think>answer", "closed"),
        ("<think>steps", "unclosed"),
        ("<think>a</think> then <think>b", "unclosed"),  # the last block is open
        ("<think>a</think><think>b</think>c", "closed"),
        ("steps</think>answer", "closed"),  # template opened the block in the prompt
        ("<think>\n\n</think>answer", "empty"),
        ("</think>answer", "empty"),
    ],
)
def test_think_state(text, expected):
    assert think_state(text) == expected


@pytest.mark.parametrize(
    ("required", "text", "reasoning", "reason"),
    [
        # required
        (True, "<think>2+2=4</think>The answer is 4.", None, None),
        (True, "2+2=4</think>The answer is 4.", None, None),
        (True, "The answer is 4.", None, "no <think> block (required)"),
        (True, "", None, "no <think> block (required)"),
        (True, "<think> </think>The answer is 4.", None, "empty <think> block (required)"),
        (True, "<think>2+2=", None, "unclosed <think> in content (no </think> after the last <think>)"),
        (True, "The answer is 4.", "2+2=4", None),  # reasoning_content counts as the think part
        (True, "The answer is 4.", "   ", "no <think> block (required)"),  # blank reasoning does not
        (True, "The answer is 4.", "", "no <think> block (required)"),
        (True, "<think>x</think>4", "", None),  # blank reasoning, but content has the block
        (True, "<think>more", "2+2=4", "unclosed <think> in content (no </think> after the last <think>)"),
        # not required: only an unclosed block is dropped
        (False, "The answer is 4.", None, None),
        (False, "", None, None),
        (False, "<think> </think>4", None, None),
        (False, "<think>2+2=", None, "unclosed <think> in content (no </think> after the last <think>)"),
        (False, "<think>2+2=", "trace", "unclosed <think> in content (no </think> after the last <think>)"),
    ],
)
def test_think(required, text, reasoning, reason):
    drop = Think(required)(sample(text, reasoning))
    assert drop == (None if reason is None else Drop("think", reason))


def test_think_without_a_completion_message():
    s = Sample.model_validate(make_sample(completion=[]))
    assert Think(True)(s) == Drop("think", "no completion message")
    assert Think(False)(s) is None


# ---------------------------------------------------------------- Repetition


@pytest.mark.parametrize(
    ("text", "n", "ratio"),
    [
        ("a b a b a b", 2, 0.6),  # 5 bigrams, 2 distinct
        ("a b c d e f", 2, 0.0),
        ("A b a B", 2, 1 - 2 / 3),  # case-folded: ab, ba, ab
        ("one two", 4, 0.0),  # no n-grams at all
        ("", 4, 0.0),
        ("x x x x x", 1, 0.8),
    ],
)
def test_repeated_ngram_ratio(text, n, ratio):
    assert repeated_ngram_ratio(text, n) == pytest.approx(ratio)


LOOP = "so the answer is " * 20  # 80 words, 4 distinct 4-grams
VARIED = " ".join(f"step {i} adds {i} to the running total of {i * 3}" for i in range(10))


@pytest.mark.parametrize(
    ("text", "reasoning", "n", "max_ratio", "dropped"),
    [
        (VARIED, None, 4, 0.3, False),
        (LOOP, None, 4, 0.3, True),
        ("", None, 4, 0.3, False),
        ("ha ha ha ha ha ha ha", None, 4, 0.0, False),  # 7 words < 2n: never dropped
        ("ha ha ha ha ha ha ha ha", None, 4, 0.3, True),  # 8 words = 2n: checked (ratio 0.8)
        ("ok", LOOP, 4, 0.3, True),  # a looping reasoning trace counts
        (LOOP, None, 4, 0.99, False),  # loose threshold
    ],
)
def test_repetition(text, reasoning, n, max_ratio, dropped):
    drop = Repetition(n, max_ratio)(sample(text, reasoning))
    assert (drop is not None) == dropped
    if dropped:
        assert drop.rule == "repetition"
        assert drop.reason.startswith(f"repeated {n}-gram ratio ")
        assert drop.reason.endswith(f"above max_ratio={max_ratio}")


def test_repetition_ratio_exactly_at_the_bound_is_kept():
    text = "a b a b a b"  # bigram ratio exactly 0.6
    assert Repetition(n=2, max_ratio=0.6)(sample(text)) is None
    assert Repetition(n=2, max_ratio=0.59)(sample(text)) == Drop(
        "repetition", "repeated 2-gram ratio 0.60 above max_ratio=0.59"
    )


def test_repetition_defaults():
    rule = Repetition()
    assert (rule.n, rule.max_ratio) == (4, 0.3)
    assert rule(sample(LOOP)).reason == "repeated 4-gram ratio 0.95 above max_ratio=0.3"


@pytest.mark.parametrize("bad", [{"n": 0}, {"max_ratio": 1.5}, {"max_ratio": -0.1}])
def test_repetition_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        Repetition(**bad)


# ---------------------------------------------------------------- Refusal


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("The answer is 4.", None),
        ("", None),
        ("I can't help with that request.", 'refusal phrase "I can\'t help with"'),
        ("i CANNOT HELP WITH this", "refusal phrase 'I cannot help with'"),
        ("I\u2019m sorry, but I can\u2019t do that.", "refusal phrase \"I'm sorry, but I can't\""),  # curly quotes
        ("As an AI language model, I think 4.", "refusal phrase 'As an AI language model'"),
        ("Sure! I can help with that: 4.", None),
    ],
)
def test_refusal_defaults(text, reason):
    drop = Refusal()(sample(text))
    assert drop == (None if reason is None else Drop("refusal", reason))


def test_refusal_ignores_reasoning_content():
    assert Refusal()(sample("The answer is 4.", reasoning="Maybe I can't help with this... no, I can.")) is None


def test_refusal_custom_phrases_replace_the_defaults():
    rule = Refusal(["Nope"])
    assert rule(sample("nope, not today")) == Drop("refusal", "refusal phrase 'Nope'")
    assert rule(sample("As an AI language model")) is None
    assert Refusal([])(sample("I can't help with that")) is None  # empty list: disabled
    assert Refusal(["", "  "])(sample("anything")) is None  # blank phrases would match everything


def test_refusal_default_list():
    assert "I can't help with" in DEFAULT_REFUSALS
    assert "As an AI language model" in DEFAULT_REFUSALS
    assert Refusal().phrases == DEFAULT_REFUSALS
    assert Refusal().phrases is not DEFAULT_REFUSALS  # a copy: callers cannot mutate the default
