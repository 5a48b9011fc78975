"""generate continues conversations and offers tools: the loopback OpenAI server answers with tool calls as
OpenAI's API shapes them, and the records keep them (TRL's shape), through filter and `train --check`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill.backends.base import Request, Result
from seqdistill.backends.validate import AnswerRules, check_result
from seqdistill.cli import app
from seqdistill.config import GenerateConfig, PromptsConfig, SamplingConfig
from seqdistill.errors import DataError
from seqdistill.prompts import load_prompts
from seqdistill.records import Sample, sample_id
from seqdistill.stages import generate
from tests.conftest import SERVED_MODEL, read_jsonl, write_jsonl
from tests.fake_openai_server import FakeOpenAIServer, Malformed, tool_answer_text

MODEL = SERVED_MODEL  # the `server` fixture (conftest) answers to it
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city today.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = "What is the weather in Paris today?"
RESULT = "Sunny, 24 degrees Celsius"


@pytest.fixture
def server():
    with FakeOpenAIServer(models=[MODEL]) as s:
        s.tool_calls[ASK] = ("get_weather", {"city": "Paris"})
        yield s


def prompt_rows() -> list[dict]:
    """A question offered a tool, the same conversation after the tool answered, and a plain question."""
    called = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    }
    return [
        {"id": "ask", "messages": [{"role": "user", "content": ASK}], "tools": [WEATHER]},
        {
            "id": "answered",
            "tools": [WEATHER],
            "messages": [
                {"role": "user", "content": ASK},
                called,
                {"role": "tool", "tool_call_id": "call_7", "name": "get_weather", "content": RESULT},
            ],
        },
        {"id": "plain", "question": "What is 2 + 3?", "answer": "5"},
    ]


def generate_cli(server, prompts: Path, output: Path, *extra: str):
    args = [
        "generate",
        "--backend",
        "openai",
        "--model",
        MODEL,
        "--base-url",
        server.base_url,
        "--prompts",
        str(prompts),
        "--output",
        str(output),
        *extra,
    ]
    return CliRunner().invoke(app, args)


def by_prompt(path: Path) -> dict[str, Sample]:
    return {s.prompt_id: s for s in (Sample.model_validate(r) for r in read_jsonl(path))}


def test_generate_offers_tools_records_calls_and_continues_after_a_tool_result(server, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows())
    out = tmp_path / "samples.jsonl"
    result = generate_cli(server, prompts, out)
    assert result.exit_code == 0, result.output
    sent = {
        r["body"]["messages"][0]["content"] + str(len(r["body"]["messages"])): r["body"]
        for r in server.chat_requests()
    }
    assert sent[ASK + "1"]["tools"] == [WEATHER] and sent[ASK + "3"]["tools"] == [WEATHER]
    assert "tools" not in sent["What is 2 + 3?1"]
    wire_call = sent[ASK + "3"]["messages"][1]["tool_calls"][0]
    assert wire_call["function"]["arguments"] == '{"city": "Paris"}'  # OpenAI's wire format: a JSON string
    assert sent[ASK + "3"]["messages"][2] == {
        "role": "tool",
        "content": RESULT,
        "tool_call_id": "call_7",
        "name": "get_weather",
    }

    samples = by_prompt(out)
    ask = samples["ask"]
    (turn,) = ask.completion
    assert turn.role == "assistant" and turn.content == "" and ask.finish_reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in turn.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert turn.tool_calls[0].id.startswith("call_")
    assert ask.tools == [WEATHER] and ask.text == ""
    answered = samples["answered"]
    assert answered.text == tool_answer_text(RESULT, 0)
    assert [m.role for m in answered.prompt] == ["user", "assistant", "tool"]
    assert answered.prompt[1].tool_calls[0].function.arguments == {"city": "Paris"}
    assert samples["plain"].tools is None
    plain_row = next(r for r in read_jsonl(out) if r["prompt_id"] == "plain")
    assert "tools" not in plain_row and "tool_calls" not in plain_row["completion"][0]  # plain records unchanged

    again = generate_cli(server, prompts, out)  # resume: every sample is there, nothing is sent
    assert again.exit_code == 0 and len(server.chat_requests()) == 3


def test_tool_calls_pass_the_filter_and_a_call_with_bad_json_is_malformed(server, tmp_path):
    server.tool_calls["What is the weather in Oslo today?"] = ("get_weather", {"city": "Oslo"})
    server.malformed["What is the weather in Oslo today?"] = Malformed(_bad_arguments)
    rows = prompt_rows()[:1] + [
        {
            "id": "oslo",
            "messages": [{"role": "user", "content": "What is the weather in Oslo today?"}],
            "tools": [WEATHER],
        }
    ]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "samples.jsonl"
    assert generate_cli(server, prompts, out).exit_code == 0  # bad JSON arguments are the teacher's: kept as data
    assert by_prompt(out)["oslo"].completion[0].tool_calls[0].function.arguments == '{"city": Oslo'
    kept = tmp_path / "kept.jsonl"
    result = CliRunner().invoke(app, ["filter", str(out), "--output", str(kept), "--set", "check=none"])
    assert result.exit_code == 0, result.output
    assert [r["prompt_id"] for r in read_jsonl(kept)] == ["ask"]
    (rejected,) = read_jsonl(tmp_path / "kept.rejected.jsonl")
    assert rejected["meta"]["rejected"] == {
        "rule": "malformed",
        "reason": "completion message 0: tool call 'get_weather' has arguments that are not a JSON object",
    }


def _bad_arguments(response: dict) -> dict:
    for choice in response["choices"]:
        choice["message"]["tool_calls"][0]["function"]["arguments"] = '{"city": Oslo'
    return response


@pytest.mark.parametrize(
    ("calls", "detail"),
    [
        ("get_weather()", "tool_calls is a str, not a list"),
        ([{"type": "function", "function": {"arguments": "{}"}}], "tool call 0: function.name"),
        ([{"type": "function"}], "tool call 0 is a dict without a function object"),
        ([{"type": "function", "function": {"name": "f", "arguments": 3}}], "tool call 0: function.arguments"),
    ],
)
def test_malformed_tool_calls_are_a_retried_bad_response(calls, detail):
    req = Request("q", [{"role": "user", "content": "hi"}], [0], [WEATHER])
    failure = check_result(Result(req, 0, "", "tool_calls", tool_calls=calls), AnswerRules())
    assert failure.kind == "bad_response" and detail in failure.detail
    assert failure.request.tools == [WEATHER]


def test_null_content_with_a_tool_call_is_an_answer_and_without_one_is_empty():
    req = Request("q", [{"role": "user", "content": "hi"}], [0])
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}, "index": 0}]
    ok = check_result(Result(req, 0, "", "tool_calls", tool_calls=call), AnswerRules())
    assert isinstance(ok, Result)
    assert ok.tool_calls == [{"type": "function", "id": "c1", "function": {"name": "f", "arguments": {}}}]
    assert check_result(Result(req, 0, "", "stop", tool_calls=[]), AnswerRules()).kind == "empty_answer"


def test_configured_tools_apply_to_rows_without_their_own_and_change_the_sample_key(tmp_path):
    tools_file = tmp_path / "tools.json"
    tools_file.write_text(json.dumps([WEATHER]), encoding="utf-8")
    other = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "a", "question": "Hi?"}, {"id": "b", "question": "Hi?", "tools": [other]}]
    )
    a, b = load_prompts(PromptsConfig(source=str(prompts), tools=str(tools_file)))
    assert a.tools == [WEATHER] and b.tools == [other]
    plain = sample_id("a", "m", a.teacher_messages, {}, 0)
    assert sample_id("a", "m", a.teacher_messages, {}, 0, a.tools) != plain
    assert sample_id("a", "m", a.teacher_messages, {}, 0, None) == plain  # without tools: the key as before


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        (
            [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hello"}],
            "'messages' has no user turn: no prompt to learn to answer",
        ),
        (
            [{"role": "user", "content": "Hi", "tool_calls": [{"function": {"name": "f"}}]}],
            "messages[0]: tool_calls on a user message: only assistant messages call tools",
        ),
        (
            [
                {"role": "assistant", "content": None, "tool_calls": [{"function": {"arguments": "{}"}}]},
                {"role": "tool", "content": "3"},
            ],
            "messages[0].tool_calls.0.function.name: Field required",
        ),
    ],
)
def test_a_conversation_prompt_that_cannot_be_continued_is_one_clear_error(tmp_path, messages, message):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "x", "messages": messages}])
    with pytest.raises(DataError, match=r"p\.jsonl line 1") as info:
        list(load_prompts(PromptsConfig(source=str(prompts))))
    assert message in str(info.value)


def test_an_answered_conversation_is_asked_again_without_its_old_answer(tmp_path):
    """A dataset row whose `messages` end with the assistant's answer: the teacher answers the last user turn anew."""
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "5"},
    ]
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "x", "messages": messages}])
    (item,) = load_prompts(PromptsConfig(source=str(prompts)))
    assert item.messages == messages[:3]


def test_bad_tool_definitions_name_the_row_and_field(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "x", "question": "Hi?", "tools": [{"name": "f"}]}])
    with pytest.raises(DataError, match=r"p\.jsonl line 1: field 'tools': tool 0: expected"):
        list(load_prompts(PromptsConfig(source=str(prompts))))


def test_plain_prompt_messages_are_sent_as_before(tmp_path):
    """Extra keys of a dataset's messages are left out, so a plain conversation keeps its request key."""
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {
                "id": "x",
                "messages": [
                    {"role": "system", "content": "Be brief.", "weight": 0},
                    {"role": "user", "content": "Hi", "name": "bob"},
                ],
            }
        ],
    )
    (item,) = load_prompts(PromptsConfig(source=str(prompts)))
    assert item.teacher_messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


# --- in-process backends ------------------------------------------------------------------------------


def _with_template(tiny_model: str, tmp_path: Path, template: str) -> str:
    import shutil

    from transformers import AutoTokenizer

    out = tmp_path / "teacher"
    shutil.copytree(tiny_model, out)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = template
    tok.save_pretrained(out)
    return str(out)


def _transformers_args(model: str, prompts: Path, output: Path) -> list[str]:
    return ["generate", "--model", model, "--prompts", str(prompts), "--output", str(output),
            "--set", "sampling.max_tokens=4", "--set", "sampling.seed=0"]  # fmt: skip


def test_transformers_refuses_a_template_that_hides_tools(tiny_model, tmp_path):
    """SmolLM2's template has no `tools`: the teacher would never see the definitions."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows()[:1])
    result = CliRunner().invoke(app, _transformers_args(tiny_model, prompts, tmp_path / "s.jsonl"))
    assert result.exit_code == 1
    assert "does not render tool definitions (`tools`)" in result.output and "Traceback" not in result.output


def test_transformers_renders_tools_and_tool_turns_through_the_template(tiny_model, tmp_path, caplog):
    from seqdistill.backends.chat_template import check_tool_rendering, render_prompt

    qwen = (Path(__file__).parent / "templates" / "qwen2_5.jinja").read_text(encoding="utf-8")
    model = _with_template(tiny_model, tmp_path, qwen)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows()[:2])
    out = tmp_path / "s.jsonl"
    cfg = GenerateConfig(model=model, output=str(out), prompts=PromptsConfig(source=str(prompts)),
                         sampling=SamplingConfig(max_tokens=4, seed=0))  # fmt: skip
    assert generate.run(cfg)["generated"] == 2
    assert "has no response template, so tool calls stay in the answer's text" in caplog.text
    assert all(s.tools == [WEATHER] for s in by_prompt(out).values())

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    item = next(p for p in load_prompts(PromptsConfig(source=str(prompts))) if p.id == "answered")
    req = Request(item.id, item.teacher_messages, [0], item.tools)
    rendered = render_prompt(tok, req)
    assert '"name": "get_weather"' in rendered and "<tool_response>\n" + RESULT in rendered
    assert (
        check_tool_rendering(tok, [req], model, "transformers") is False
    )  # renders them; no response template to parse calls


def test_tool_calls_are_parsed_where_the_tokenizer_has_a_response_template(tiny_model):
    from seqdistill.backends.chat_template import parse_answer

    tok = _qwen_parsing_tokenizer(tiny_model)
    prompt = tok.apply_chat_template([{"role": "user", "content": ASK}], tokenize=False, add_generation_prompt=True)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    content, reasoning, calls = parse_answer(tok, call, prompt)
    assert content == "" and calls == [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    broken = call.replace('"Paris"', "Paris")
    assert parse_answer(tok, broken, prompt) == (broken, None, None)  # kept whole: the teacher's data
    assert parse_answer(tok, "Sunny.", prompt) == ("Sunny.", None, None)


def _qwen_parsing_tokenizer(tiny_model: str):
    from transformers import AutoTokenizer
    from trl.chat_template_utils import add_response_schema

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = (Path(__file__).parent / "templates" / "qwen2_5.jinja").read_text(encoding="utf-8")
    return add_response_schema(tok)


CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def _vllm_backend(monkeypatch, tokenizer, calls: list):
    """The vllm backend over a stand-in `vllm` module whose `LLM.chat` records its calls and answers CALL_TEXT."""
    import importlib
    import sys
    import types
    from types import SimpleNamespace

    class LLM:
        def __init__(self, **kwargs):
            pass

        def get_tokenizer(self):
            return tokenizer

        def chat(self, conversations, params, use_tqdm=False, tools=None):
            calls.append((len(conversations), tools))
            done = SimpleNamespace(text=CALL_TEXT, token_ids=[1], finish_reason="stop", logprobs=None)
            return [SimpleNamespace(outputs=[done], prompt_token_ids=[1]) for _ in conversations]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.delitem(sys.modules, "seqdistill.backends.vllm_offline", raising=False)
    module = importlib.import_module("seqdistill.backends.vllm_offline")
    monkeypatch.delitem(sys.modules, "seqdistill.backends.vllm_offline")
    return module.VLLMBackend(GenerateConfig(backend="vllm", model="m"))


def test_vllm_gets_each_requests_tools_and_its_calls_are_parsed(monkeypatch, tiny_model):
    calls: list = []
    backend = _vllm_backend(monkeypatch, _qwen_parsing_tokenizer(tiny_model), calls)
    user = [{"role": "user", "content": "hi"}]
    requests = [Request("a", user, [0], [WEATHER]), Request("b", user, [0]), Request("c", user, [0], [WEATHER])]
    results = {r.request.prompt_id: r for r in backend.generate(requests, threading.Event())}
    assert sorted(calls, key=str) == sorted([(2, [WEATHER]), (1, None)], key=str)
    parsed = [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert results["a"].tool_calls == parsed and results["a"].text == ""
    assert results["b"].tool_calls is None and results["b"].text == CALL_TEXT  # no tools offered: text as it came


def test_vllm_refuses_a_template_that_hides_tools(monkeypatch, tiny_model):
    from transformers import AutoTokenizer

    from seqdistill.errors import ConfigError

    backend = _vllm_backend(monkeypatch, AutoTokenizer.from_pretrained(tiny_model), [])
    with pytest.raises(ConfigError, match="backend vllm: the chat template of m does not render tool definitions"):
        list(backend.generate([Request("a", [{"role": "user", "content": "hi"}], [0], [WEATHER])], threading.Event()))
