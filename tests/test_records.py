"""Tests for seqdistill.records: the sample schema and the stable request key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from seqdistill.records import Message, Sample, sample_id
from tests.conftest import make_sample

MSGS = [{"role": "user", "content": "What is 6 * 7?"}]
SAMPLING = {"temperature": 0.7, "top_p": 0.9}


def test_sample_id_is_stable_and_short():
    a = sample_id("q1", "teacher", MSGS, SAMPLING, 0)
    b = sample_id("q1", "teacher", [dict(m) for m in MSGS], dict(SAMPLING), 0)
    assert a == b
    assert len(a) == 32 and all(c in "0123456789abcdef" for c in a)


def test_sample_id_ignores_sampling_key_order():
    assert sample_id("q1", "t", MSGS, {"temperature": 0.7, "top_p": 0.9}, 0) == sample_id(
        "q1", "t", MSGS, {"top_p": 0.9, "temperature": 0.7}, 0
    )


@pytest.mark.parametrize(
    ("prompt_id", "model", "messages", "sampling", "index"),
    [
        ("q2", "teacher", MSGS, SAMPLING, 0),
        ("q1", "other-teacher", MSGS, SAMPLING, 0),
        ("q1", "teacher", [{"role": "user", "content": "What is 6 * 8?"}], SAMPLING, 0),
        ("q1", "teacher", [{"role": "system", "content": "Be brief."}, *MSGS], SAMPLING, 0),
        ("q1", "teacher", MSGS, {**SAMPLING, "temperature": 0.0}, 0),
        ("q1", "teacher", MSGS, {**SAMPLING, "seed": 1}, 0),
        ("q1", "teacher", MSGS, SAMPLING, 1),
    ],
    ids=["prompt-id", "model", "messages", "system-message", "temperature", "seed", "sample-index"],
)
def test_sample_id_changes_with_each_part_of_the_request(prompt_id, model, messages, sampling, index):
    assert sample_id(prompt_id, model, messages, sampling, index) != sample_id("q1", "teacher", MSGS, SAMPLING, 0)


def test_same_text_under_two_prompt_ids_gives_two_sample_ids():
    """The identity rule: a prompt id is part of a sample's identity, so identical texts are sampled apart."""
    ids = {sample_id(pid, "teacher", MSGS, SAMPLING, i) for pid in ("a", "b") for i in range(3)}
    assert len(ids) == 6


def test_sample_id_does_not_depend_on_n():
    base = sample_id("q1", "teacher", MSGS, SAMPLING, 2)
    assert sample_id("q1", "teacher", MSGS, {**SAMPLING, "n": 3}, 2) == base
    assert sample_id("q1", "teacher", MSGS, {**SAMPLING, "n": 8}, 2) == base


def test_sample_roundtrips_through_json():
    sample = Sample.model_validate(make_sample(text="It is \\boxed{42}."))
    again = Sample.model_validate_json(sample.to_json())
    assert again == sample
    assert again.text == "It is \\boxed{42}."


def test_text_is_empty_without_completion_message():
    assert Sample.model_validate(make_sample(completion=[])).text == ""


def test_sample_requires_completion():
    row = make_sample()
    del row["completion"]
    with pytest.raises(ValidationError) as e:
        Sample.model_validate(row)
    assert e.value.errors()[0]["loc"] == ("completion",)


def test_sample_rejects_bad_role():
    row = make_sample(completion=[{"role": "robot", "content": "42"}])
    with pytest.raises(ValidationError) as e:
        Sample.model_validate(row)
    assert e.value.errors()[0]["loc"][:3] == ("completion", 0, "role")


def test_sample_rejects_unknown_field_and_empty_prompt():
    with pytest.raises(ValidationError, match="extra"):
        Sample.model_validate(make_sample(score=1.0))
    with pytest.raises(ValidationError, match="prompt"):
        Sample.model_validate(make_sample(prompt=[]))
    with pytest.raises(ValidationError, match="sample_index"):
        Sample.model_validate(make_sample(sample_index=-1))


def test_message_keeps_reasoning_content():
    m = Message(role="assistant", content="42", reasoning_content="6*7=42")
    assert m.model_dump() == {"role": "assistant", "content": "42", "reasoning_content": "6*7=42"}
