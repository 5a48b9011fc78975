"""Structured output: the `json` check (jsonschema, reasons naming the failing path, `check_field`), and
`response_format` sent to the server (the loopback server answers in JSON when asked), mapped to vLLM's
`StructuredOutputsParams` in-process, and reported as not enforced by the transformers backend."""

from __future__ import annotations

import importlib
import json
import logging
import sys
import threading
import types
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from seqdistill.checks.answers import Verdict, check, get_check
from seqdistill.cli import app
from seqdistill.config import GenerateConfig, PipelineConfig
from seqdistill.errors import ConfigError
from tests.conftest import make_sample, read_jsonl, write_jsonl
from tests.fake_openai_server import FakeOpenAIServer

runner = CliRunner()

ORDER = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "price": {"type": "number"}},
                "required": ["name", "price"],
            },
        },
        "total": {"type": "number"},
    },
    "required": ["items", "total"],
}
GOOD_ORDER = {"items": [{"name": "a", "price": 1}, {"name": "b", "price": 2.5}], "total": 3.5}

CASES = [  # (completion, reference, options, correct, reason)
    (json.dumps(GOOD_ORDER), None, {"json_schema": ORDER}, True, "valid JSON, matches the schema"),
    (
        '{"items": [{"name": "a", "price": 1}, {"name": "b", "price": 2}, {"name": "c", "price": "x"}], "total": 3}',
        None,
        {"json_schema": ORDER},
        False,
        "$.items[2].price: 'x' is not of type 'number'",
    ),
    ('{"items": []}', None, {"json_schema": ORDER}, False, "$: 'total' is a required property"),
    ('{"items": [], "total": 1', None, {}, False, "the whole answer is not JSON: Expecting ',' delimiter at line 1"),
    (
        'Here it is:\n```json\n{"total": 1}\n```\nand fixed:\n```json\n{"total": 2}\n```',
        "2",
        {"check_field": "$.total"},
        True,
        "valid JSON, $.total equals the reference",
    ),
    ("```json\n{oops}\n```", None, {}, False, "the last ```json block is not JSON: Expecting property name"),
    ('<think>\nthe user wants {"a": 1}\n</think>\n{"answer": 42}', "42", {"check_field": "answer"}, True, None),
    ('{"answer": 41}', "42", {"check_field": "$.answer"}, False, "$.answer: 41 != reference '42'"),
    ('{"answer": "Paris"}', "paris", {"check_field": "answer"}, True, None),
    ('{"answer": true}', "1", {"check_field": "answer"}, False, "$.answer: true != reference '1'"),
    ('{"answer": [1, 2]}', "[1, 2.0]", {"check_field": "$.answer"}, True, None),
    ('{"a": {"b": [0, {"c": 7}]}}', "7", {"check_field": "$.a.b[1].c"}, True, None),
    ('{"x": 1}', "1", {"check_field": "$.answer"}, False, "$.answer: missing (check_field)"),
    ('{"answer": 42}', None, {"check_field": "$.answer"}, None, "no reference answer"),
    ('{"x": 1, "y": 2}', '{"y": 2, "x": 1}', {"check_field": "$"}, True, None),
    ("   ", None, {}, None, "empty answer: nothing to parse as JSON"),
    ('{"answer": 42}', "41", {}, True, "valid JSON"),  # without check_field the reference is not used
]


@pytest.mark.parametrize(("completion", "reference", "options", "correct", "reason"), CASES)
def test_json_check(completion, reference, options, correct, reason):
    verdict = check("json", completion, reference, **options)
    assert verdict.correct is correct, verdict
    if reason is not None:
        assert verdict.reason.startswith(reason), verdict.reason


def test_answer_is_canonical_json_of_the_checked_value():
    assert check("json", '{"b": 1, "a": [1, 2]}', None).answer == '{"a":[1,2],"b":1}'
    assert check("json", '{"answer": {"y": 1, "x": 2}}', "{}", check_field="answer").answer == '{"x":2,"y":1}'


def test_a_remote_ref_is_never_fetched_and_makes_the_check_unverifiable():
    with FakeOpenAIServer() as server:  # a real HTTP server the schema points at
        schema = {"$ref": f"http://127.0.0.1:{server.port}/schema.json"}
        verdict = check("json", '{"a": 1}', None, json_schema=schema)
        assert server.requests() == []
    assert verdict.correct is None and verdict.reason.startswith("the schema cannot be applied: Unresolvable")
    local = {"$defs": {"n": {"type": "number"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}
    assert check("json", '{"a": "x"}', None, json_schema=local).reason == "$.a: 'x' is not of type 'number'"


def test_schema_file_and_option_errors_are_one_line(tmp_path):
    path = tmp_path / "order.schema.json"
    path.write_text(json.dumps(ORDER))
    assert get_check("json", json_schema=str(path)).options.schema_ == ORDER
    with pytest.raises(ConfigError, match=r"check 'json': json_schema: .*nope.json: no such file \(a JSON Schema"):
        get_check("json", json_schema=str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match=r"not a valid JSON Schema: \$.properties.total.type: 'numbr'"):
        get_check("json", json_schema={"properties": {"total": {"type": "numbr"}}})
    with pytest.raises(ConfigError, match=r"check_field: .*is not a field path"):
        get_check("json", check_field="$.a[")
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json: not valid JSON"):
        get_check("json", json_schema=str(bad))


def test_filter_with_the_json_check_from_the_cli(tmp_path):
    schema = tmp_path / "order.schema.json"
    schema.write_text(json.dumps(ORDER))
    rows = [
        make_sample("p1", 0, "```json\n" + json.dumps(GOOD_ORDER) + "\n```", reference="3.5"),
        make_sample("p2", 0, json.dumps({"items": [{"name": "a", "price": "1"}], "total": 1}), reference="1"),
        make_sample("p3", 0, json.dumps({"items": [], "total": 9}), reference="1"),
        make_sample("p4", 0, "not json at all", reference="1"),
    ]
    samples = write_jsonl(tmp_path / "samples.jsonl", rows)
    out = tmp_path / "kept.jsonl"
    args = ["filter", str(samples), "--output", str(out), "--check", "json"]
    result = runner.invoke(app, [*args, "--set", f"json_schema={schema}", "--set", "check_field=$.total"])
    assert result.exit_code == 0, result.output
    assert [r["prompt_id"] for r in read_jsonl(out)] == ["p1"]
    assert read_jsonl(out)[0]["meta"]["check"] == {"name": "json", "result": "correct", "answer": "3.5"}
    reasons = {r["prompt_id"]: r["meta"]["rejected"]["reason"] for r in read_jsonl(tmp_path / "kept.rejected.jsonl")}
    assert reasons == {
        "p2": "$.items[0].price: '1' is not of type 'number'",
        "p3": "$.total: 9 != reference '1'",
        "p4": "the whole answer is not JSON: Expecting value at line 1 column 1",
    }


def test_json_check_needs_no_reference_without_check_field(tmp_path):
    rows = [make_sample("p1", 0, '{"ok": true}', reference=None), make_sample("p2", 0, "{", reference=None)]
    samples = write_jsonl(tmp_path / "samples.jsonl", rows)
    result = runner.invoke(app, ["filter", str(samples), "--output", str(tmp_path / "k.jsonl"), "--check", "json"])
    assert result.exit_code == 0, result.output
    assert [r["prompt_id"] for r in read_jsonl(tmp_path / "k.jsonl")] == ["p1"]


def test_a_bad_schema_stops_filter_before_any_work(tmp_path):
    samples = write_jsonl(tmp_path / "samples.jsonl", [make_sample()])
    result = runner.invoke(
        app, ["filter", str(samples), "--output", str(tmp_path / "k.jsonl"), "--check", "json",
              "--set", "json_schema={type: objekt}"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "not a valid JSON Schema: $.type" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "k.jsonl").exists()


# ---- response_format -----------------------------------------------------------------------------------------


def test_response_format_from_a_schema_file_or_a_mapping(tmp_path):
    path = tmp_path / "order schema.json"
    path.write_text(json.dumps(ORDER))
    fmt = GenerateConfig(response_format=str(path)).response_format
    assert fmt == {"type": "json_schema", "json_schema": {"name": "order_schema", "schema": ORDER}}
    given = {"type": "json_schema", "json_schema": {"name": "o", "schema": ORDER, "strict": True}}
    assert GenerateConfig(response_format=given).response_format == given
    assert GenerateConfig(response_format={"type": "json_object"}).response_format == {"type": "json_object"}
    with pytest.raises(ValueError, match="this looks like a JSON Schema, not a response_format"):
        GenerateConfig(response_format=ORDER)
    with pytest.raises(ValueError, match="type json_schema needs json_schema: {name: ..., schema: {...}}"):
        GenerateConfig(response_format={"type": "json_schema", "schema": ORDER})
    with pytest.raises(ValueError, match=r"not a valid JSON Schema: \$.type"):
        GenerateConfig(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 3}}})


def test_response_format_is_sent_and_the_json_answers_pass_the_check(tmp_path):
    schema = tmp_path / "answer.json"
    schema.write_text(
        json.dumps({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]})
    )
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)}
                                                 for i in range(3)])  # fmt: skip
    samples = tmp_path / "samples.jsonl"
    with FakeOpenAIServer(models=["teacher"]) as server:
        result = runner.invoke(
            app,
            ["generate", "--backend", "openai", "--model", "teacher", "--base-url", server.base_url, "--prompts",
             str(prompts), "--output", str(samples), "--set", f"response_format={schema}"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        bodies = [r["body"] for r in server.chat_requests()]
    assert len(bodies) == 3
    assert all(b["response_format"]["json_schema"]["schema"]["required"] == ["answer"] for b in bodies)
    rows = read_jsonl(samples)
    assert json.loads(rows[0]["completion"][0]["content"])["answer"] == int(rows[0]["reference"])
    assert rows[0]["sampling"]["response_format"]["type"] == "json_schema"  # part of the samples' identity
    out = tmp_path / "kept.jsonl"
    result = runner.invoke(app, ["filter", str(samples), "--output", str(out), "--check", "json",
                                 "--set", f"json_schema={schema}", "--set", "check_field=answer"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(out)) == 3


def test_a_recipe_checks_against_the_schema_generate_constrained_to(tmp_path):
    fmt = {"type": "json_schema", "json_schema": {"name": "o", "schema": ORDER}}
    cfg = PipelineConfig(run_dir=str(tmp_path), generate={"response_format": fmt}, filter={"check": "json"})
    assert cfg.resolved().filter.json_schema == ORDER
    assert PipelineConfig(generate={"response_format": fmt}).resolved().filter.json_schema is None  # check math


def test_score_refuses_response_format():
    from seqdistill.config import ScoreConfig

    with pytest.raises(ValueError, match="score does not use response_format"):
        ScoreConfig(response_format={"type": "json_object"})


# ---- in-process backends -------------------------------------------------------------------------------------


@dataclass
class _StructuredOutputsParams:  # vLLM's dataclass of the same name (vllm/sampling_params.py, 0.33)
    json: Any = None
    regex: Any = None
    choice: Any = None
    grammar: Any = None
    json_object: Any = None
    structural_tag: Any = None


class _LLM:
    """vLLM's `LLM.chat` as far as the backend uses it; it records the sampling params it was given."""

    params: list[Any] = []

    def __init__(self, **kwargs):
        pass

    def chat(self, conversations, params, use_tqdm=False):
        _LLM.params.extend(params)
        done = SimpleNamespace(text='{"answer": 2}', token_ids=[1, 2], finish_reason="stop", logprobs=None)
        return [SimpleNamespace(outputs=[done] * p.n, prompt_token_ids=[1]) for p in params]


@pytest.fixture
def vllm_module(monkeypatch):
    """A stand-in `vllm` (the real one needs a GPU): LLM, SamplingParams, sampling_params.StructuredOutputsParams."""
    fake = types.ModuleType("vllm")
    fake.LLM = _LLM
    fake.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    sp = types.ModuleType("vllm.sampling_params")
    sp.StructuredOutputsParams = _StructuredOutputsParams
    fake.sampling_params = sp
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
    monkeypatch.delitem(sys.modules, "seqdistill.backends.vllm_offline", raising=False)
    _LLM.params = []
    yield importlib.import_module("seqdistill.backends.vllm_offline")
    sys.modules.pop("seqdistill.backends.vllm_offline", None)


def test_vllm_in_process_constrains_decoding_to_the_schema(vllm_module):
    from seqdistill.backends.base import Request

    fmt = {"type": "json_schema", "json_schema": {"name": "o", "schema": ORDER}}
    backend = vllm_module.VLLMBackend(GenerateConfig(backend="vllm", model="m", response_format=fmt))
    list(backend.generate([Request("q", [{"role": "user", "content": "hi"}], [0])], threading.Event()))
    assert _LLM.params[0].structured_outputs == _StructuredOutputsParams(json=ORDER)
    assert vllm_module.structured_outputs({"type": "json_object"}) == _StructuredOutputsParams(json_object=True)
    assert vllm_module.structured_outputs(None) is None
    plain = vllm_module.VLLMBackend(GenerateConfig(backend="vllm", model="m"))
    list(plain.generate([Request("q", [{"role": "user", "content": "hi"}], [0])], threading.Event()))
    assert _LLM.params[1].structured_outputs is None


def test_transformers_backend_says_it_cannot_constrain(tiny_model, caplog):
    from seqdistill.backends.transformers_local import TransformersBackend

    caplog.set_level(logging.WARNING)
    TransformersBackend(GenerateConfig(model=tiny_model, response_format={"type": "json_object"}))
    assert "does not constrain decoding to response_format" in caplog.text
    assert check("json", "{}", None) == Verdict(True, "valid JSON", "{}")
