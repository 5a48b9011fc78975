"""The one record for conversations: tool calls, tool results and tools; the completion's text defined once;
filter rules that read several completion messages (well-formed, answer check, dedup, quality)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from seqdistill.checks.near_dup import NearDuplicateCompletion
from seqdistill.checks.quality import Length, Think
from seqdistill.checks.rules import AnswerCheck, ExactDuplicate, WellFormed
from seqdistill.records import Message, Sample
from tests.conftest import make_sample

TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


def call(name: str = "add", arguments: str | dict = '{"a": 40, "b": 2}', id: str | None = "c1") -> dict:
    out = {"type": "function", "function": {"name": name, "arguments": arguments}}
    return out if id is None else {**out, "id": id}


def trace(final: str = "So the answer is \\boxed{42}.", result: str = "42", **over) -> dict:
    completion = [
        {"role": "assistant", "content": None, "tool_calls": [call()]},
        {"role": "tool", "tool_call_id": "c1", "name": "add", "content": result},
        {"role": "assistant", "content": final},
    ]
    return make_sample("t1", 0, final, completion=completion, tools=TOOLS, **over)


def sample(row: dict) -> Sample:
    return Sample.model_validate(row)


# --- the schema -----------------------------------------------------------------------------------------


def test_a_plain_record_is_written_as_before():
    """No tool use: no new keys in the file (what other tools and earlier files expect)."""
    row = json.loads(sample(make_sample()).to_json())
    assert "tools" not in row
    assert row["completion"] == [
        {"role": "assistant", "content": "The answer is \\boxed{42}.", "reasoning_content": None}
    ]


def test_openai_tool_calls_are_stored_in_trls_shape_and_round_trip():
    s = sample(trace())
    first = json.loads(s.to_json())["completion"][0]
    assert first == {"role": "assistant", "content": "", "reasoning_content": None,
                     "tool_calls": [{"type": "function", "id": "c1",
                                     "function": {"name": "add", "arguments": {"a": 40, "b": 2}}}]}  # fmt: skip
    assert Sample.model_validate_json(s.to_json()) == s
    assert s.is_conversation and not sample(make_sample()).is_conversation


def test_arguments_that_are_not_a_json_object_are_kept_as_the_teachers_text():
    m = Message.model_validate({"role": "assistant", "content": "", "tool_calls": [call(arguments='{"a": 4')]})
    assert m.tool_calls[0].function.arguments == '{"a": 4' and not m.tool_calls[0].function.arguments_ok
    listed = Message.model_validate({"role": "assistant", "content": "", "tool_calls": [call(arguments="[1, 2]")]})
    assert listed.tool_calls[0].function.arguments == "[1, 2]"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"role": "user", "content": "hi", "tool_calls": [call()]}, "tool_calls on a user message"),
        ({"role": "assistant", "content": "x", "tool_call_id": "c1"}, "tool_call_id on a assistant message"),
        ({"role": "user", "content": "x", "name": "bob"}, "name on a user message"),
        ({"role": "assistant", "content": None}, "content"),
        ({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": ""}}]}, "function.name"),
        ({"role": "assistant", "content": "", "tool_calls": [{"type": "web", "function": {"name": "f"}}]}, "type"),
    ],
)
def test_messages_of_the_wrong_shape_are_refused(message, error):
    with pytest.raises(ValidationError, match=error.replace(".", r"\.")):
        Message.model_validate(message)


def test_tools_take_trls_json_string_column_and_refuse_what_is_not_a_definition():
    assert sample(make_sample(tools=json.dumps(TOOLS))).tools == TOOLS
    with pytest.raises(ValidationError, match=r"tool 0: function\.name is missing"):
        sample(make_sample(tools=[{"type": "function", "function": {}}]))
    with pytest.raises(ValidationError, match="expected a list of function definitions"):
        sample(make_sample(tools={"name": "add"}))


def test_the_completions_text_is_defined_once():
    s = sample(trace())
    assert s.text == "So the answer is \\boxed{42}."  # the final answer: what checks read
    assert s.completion_text() == '{"name": "add", "arguments": {"a": 40, "b": 2}}\n42\nSo the answer is \\boxed{42}.'
    ends_with_result = sample(make_sample(completion=trace()["completion"][:2]))
    assert ends_with_result.final_message is None and ends_with_result.text == ""
    plain = sample(make_sample(completion=[{"role": "assistant", "content": "B", "reasoning_content": "A"}]))
    assert (plain.text, plain.completion_text(), plain.completion_text(include_reasoning=False)) == ("B", "A\nB", "B")


# --- filter rules -----------------------------------------------------------------------------------------


def _turns(*messages: dict) -> Sample:
    return sample(make_sample(completion=list(messages)))


ASSISTANT_CALL = {"role": "assistant", "content": "", "tool_calls": [call()]}
RESULT = {"role": "tool", "tool_call_id": "c1", "content": "42"}
ANSWER = {"role": "assistant", "content": "It is 42."}


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([ASSISTANT_CALL, RESULT], "no final assistant answer: the completion ends with a tool message"),
        ([RESULT, ANSWER], "the completion starts with a tool result, not the teacher's turn"),
        ([ANSWER, {"role": "user", "content": "and?"}, ANSWER], "completion message 1 is a user turn"),
        ([ANSWER, RESULT, ANSWER], "completion message 1 is a tool result that no tool call asked for"),
        ([ASSISTANT_CALL, {**RESULT, "tool_call_id": "c9"}, ANSWER], "answers tool call id 'c9', which no call made"),
        ([{"role": "assistant", "content": "", "tool_calls": [call(arguments="{oops")]}, RESULT, ANSWER],
         "completion message 0: tool call 'add' has arguments that are not a JSON object"),
        ([{"role": "assistant", "content": " "}, ANSWER], "completion message 0 is an empty assistant turn"),
        ([ASSISTANT_CALL, RESULT, {"role": "assistant", "content": "  "}], "empty completion"),
    ],
)  # fmt: skip
def test_malformed_conversations_are_dropped_with_their_reason(messages, reason):
    drop = WellFormed()(_turns(*messages))
    assert drop is not None and drop.rule == "malformed" and reason in drop.reason


@pytest.mark.parametrize(
    "messages",
    [
        [ASSISTANT_CALL, RESULT, ANSWER],
        [ASSISTANT_CALL],  # the teacher's turn ends with a call: what generate records
        [ASSISTANT_CALL, RESULT, {**RESULT, "tool_call_id": None}, ANSWER],
        [{"role": "assistant", "content": "Let me add.", "tool_calls": [call(id=None)]}, RESULT, ANSWER],
    ],
)
def test_well_formed_conversations_are_kept(messages):
    assert WellFormed()(_turns(*messages)) is None


def test_the_answer_check_reads_the_final_answer_not_the_tool_result():
    rule = AnswerCheck("math", keep_unverifiable=False)
    assert rule(sample(trace(final="So it is \\boxed{42}.", result="\\boxed{41}"))) is None
    drop = rule(sample(trace(final="So it is \\boxed{41}.", result="\\boxed{42}")))
    assert drop is not None and drop.rule == "wrong_answer"


def test_dedup_compares_whole_completions():
    same_answer_other_call = trace()
    same_answer_other_call["completion"][0]["tool_calls"] = [call(arguments='{"a": 2, "b": 40}')]
    same_answer_other_call["id"] = "other"
    exact, near = ExactDuplicate(), NearDuplicateCompletion(threshold=0.95)
    assert exact(sample(trace())) is None and near(sample(trace())) is None
    assert exact(sample(same_answer_other_call)) is None, "another tool call is another sample"
    repeat = {**trace(), "id": "again"}
    assert exact(sample(repeat)) is not None
    long_final = "Adding the two numbers gives forty two, so the answer is \\boxed{42} as the tool said."
    a, b = trace(final=long_final), {**trace(final=long_final, result="forty-two"), "id": "b"}
    near = NearDuplicateCompletion(threshold=0.95)
    assert near(sample(a)) is None and near(sample(b)) is None, "another tool result is another completion"


def test_quality_rules_read_every_assistant_turn():
    unclosed = trace()
    unclosed["completion"][0]["content"] = "<think>which tool"
    assert "of assistant turn 0" in Think(required=False)(sample(unclosed)).reason
    thought = trace()
    thought["completion"][2]["reasoning_content"] = "40 + 2"
    assert Think(required=True)(sample(thought)) is None
    assert Think(required=True)(sample(trace())).reason == "no <think> block (required)"
    assert Length(None, 8)(sample(trace())).reason.startswith("completion has 13 tokens")
