"""Decontamination: n-gram overlap with eval prompts, short-prompt exact match, hits per eval set, loading."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from seqdistill.checks.decontam import Decontaminate, load_eval_texts, normalize, prompt_text
from seqdistill.checks.rules import Drop
from seqdistill.errors import DataError
from seqdistill.records import Sample
from tests.conftest import make_sample, write_jsonl

GSM = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "What is 2+2?",
]
MATH = [
    "Find the number of ordered pairs of positive integers (a, b) such that a + b = 1000 and neither "
    "a nor b has a zero digit.",
    "Compute 7 * 8.",
]
EVALS = {"gsm8k": GSM, "math": MATH}


def sample(*user: str, system: str | None = None) -> Sample:
    prompt = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": u} for u in user
    ]
    return Sample.model_validate(make_sample(prompt=prompt))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is 2+2?", "what is 2 2"),
        ("  WHAT   is\t2 + 2 ?? ", "what is 2 2"),
        ("don't_stop", "don t stop"),
        ("Café, naïve!", "café naïve"),
        ("", ""),
        ("?!.", ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        # 13+ shared words (with different surroundings, case and punctuation): dropped
        (
            "Please solve: NATALIA sold clips to 48 of her friends in April -- and then she sold half as many!",
            "prompt shares a 13-gram with eval set 'gsm8k'",
        ),
        (
            "neither a nor b has a zero digit, where a + b = 1000 and a, b are positive integers: find the "
            "number of ordered pairs of positive integers (a, b) such that",
            "prompt shares a 13-gram with eval set 'math'",
        ),
        # 12 shared words only: kept
        ("Natalia sold clips to 48 of her friends in April, and then bought pencils.", None),
        # short prompts: exact normalised match only
        ("what is 2 + 2", "prompt equals a short prompt of eval set 'gsm8k'"),
        ("Compute 7*8.", "prompt equals a short prompt of eval set 'math'"),
        ("What is 2+3?", None),
        ("What is 2+2? Explain.", None),
        ("", None),
        ("???", None),
    ],
)
def test_decontaminate_table(prompt, reason):
    rule = Decontaminate(EVALS)
    drop = rule(sample(prompt))
    assert drop == (None if reason is None else Drop("contaminated", reason))


def test_hits_are_counted_per_eval_set():
    rule = Decontaminate(EVALS)
    prompts = [
        "What is 2+2?",  # gsm8k (short)
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",  # gsm8k
        "Compute 7 * 8",  # math (short)
        "A clean prompt that is nowhere in any evaluation set at all, long enough to have n-grams.",
        "What is 2+3?",
    ]
    drops = [rule(sample(p)) for p in prompts]
    assert [d is not None for d in drops] == [True, True, True, False, False]
    assert rule.hits == Counter({"gsm8k": 2, "math": 1})


def test_an_ngram_in_two_eval_sets_is_credited_to_the_first():
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    rule = Decontaminate({"first": [text], "second": [text.upper()]})
    assert rule(sample(text)) == Drop("contaminated", "prompt shares a 13-gram with eval set 'first'")
    assert rule.hits == Counter({"first": 1})


def test_n_is_configurable_and_in_the_reason():
    evals = {"tiny": ["the quick brown fox jumps over the lazy dog"]}
    assert Decontaminate(evals, n=5)(sample("I saw the quick brown fox jumps today")) == Drop(
        "contaminated", "prompt shares a 5-gram with eval set 'tiny'"
    )
    assert Decontaminate(evals, n=5)(sample("I saw the quick brown fox today")) is None  # only a 4-gram
    # with the default n=13 the 9-word eval prompt is short: exact match only
    assert Decontaminate(evals)(sample("I saw the quick brown fox jumps today")) is None
    assert Decontaminate(evals)(sample("The quick brown fox jumps over the lazy dog.")) is not None


def test_only_user_messages_are_compared():
    long_eval = GSM[0]
    assert Decontaminate(EVALS)(sample("Hello", system=long_eval)) is None
    assert prompt_text(sample("a", "b", system="s")) == "a\nb"
    # an n-gram split across two user messages is still found (they are joined)
    half = len(long_eval) // 2
    assert Decontaminate(EVALS)(sample(long_eval[:half], long_eval[half:])) is not None


def test_index_size_and_empty_eval_prompts():
    rule = Decontaminate({"a": ["", "   ", "What is 2+2?", "what is 2 + 2"]})
    assert rule.index_size == 1  # blanks skipped, the two short prompts normalise alike
    assert rule(sample("")) is None  # an empty prompt never matches
    words = " ".join(f"w{i}" for i in range(20))
    assert Decontaminate({"a": [words]}).index_size == 20 - 13 + 1


def test_bad_n():
    with pytest.raises(ValueError):
        Decontaminate(EVALS, n=0)


# ---------------------------------------------------------------- load_eval_texts


def test_load_eval_texts_jsonl_and_parquet(tmp_path):
    from datasets import Dataset

    jsonl = write_jsonl(
        tmp_path / "gsm.jsonl",
        [
            {"question": "What is 2+2?", "answer": "4"},
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Part one."},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "Part two."},
                ]
            },
        ],
    )
    parquet = tmp_path / "math.parquet"
    Dataset.from_list([{"problem": "Compute 7 * 8.", "solution": "56"}]).to_parquet(str(parquet))

    assert load_eval_texts([str(jsonl)]) == {str(jsonl): ["What is 2+2?", "Part one.\nPart two."]}
    loaded = load_eval_texts([str(jsonl)]) | load_eval_texts([str(parquet)], question_field="problem")
    assert loaded[str(parquet)] == ["Compute 7 * 8."]
    assert list(loaded) == [str(jsonl), str(parquet)]
    both = load_eval_texts([str(jsonl), str(jsonl)])  # the same source twice: one key
    assert list(both) == [str(jsonl)]

    rule = Decontaminate(loaded)
    assert rule(sample("compute 7*8")) == Drop("contaminated", f"prompt equals a short prompt of eval set '{parquet}'")
    assert rule.hits == Counter({str(parquet): 1})


def test_load_eval_texts_parquet_messages(tmp_path):
    from datasets import Dataset

    path = tmp_path / "chat.parquet"
    Dataset.from_list([{"messages": [{"role": "user", "content": "Hi there?"}]}]).to_parquet(str(path))
    assert load_eval_texts([str(path)]) == {str(path): ["Hi there?"]}


def test_load_eval_texts_errors(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "ok"}, {"text": "no question here"}])
    with pytest.raises(DataError, match=r"bad\.jsonl line 2: no 'question' string .*fields: text"):
        load_eval_texts([str(bad)])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="eval set has no rows"):
        load_eval_texts([str(empty)])
    with pytest.raises(DataError, match="no such file"):
        load_eval_texts([str(tmp_path / "missing.jsonl")])


def test_load_eval_texts_reads_json_lines_not_a_whole_json(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "Q1"}) + "\n" + json.dumps({"question": "Q2"}) + "\n", encoding="utf-8")
    assert load_eval_texts([str(path)])[str(path)] == ["Q1", "Q2"]
