"""Every teacher answer is validated at the boundary: malformed answers mixed into a healthy run over real loopback
HTTP become failures of a named class (or are repaired when harmless), never an exception in the run."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import pytest

from seqdistill.backends.base import Request, Result
from seqdistill.backends.validate import AnswerRules, check_result
from tests.conftest import write_jsonl
from tests.fake_openai_server import FakeOpenAIServer, Malformed
from tests.test_generate_openai import MODEL, assert_exit, cli, keys, prompt_rows, question_of, samples

FAST = ("--set", "backoff_base=0.01", "--set", "backoff_max=0.05", "--set", "max_retries=1")
N = 2


def _choices(fn):
    """A mangle that edits every choice: fn(choice) changes it in place."""

    def mangle(resp: dict[str, Any]) -> dict[str, Any]:
        for choice in resp["choices"]:
            fn(choice)
        return resp

    return mangle


def _message(**fields):
    return _choices(lambda c: c["message"].update(fields))


def _last_choice(**fields):
    """Only the last choice's message is bent: with n=2, sample 1 fails and sample 0 is kept."""

    def mangle(resp):
        resp["choices"][-1]["message"].update(fields)
        return resp

    return mangle


def _set(key, value):
    def mangle(resp):
        resp[key] = value
        return resp

    return mangle


def _usage(**fields):
    def mangle(resp):
        resp["usage"].update(fields)
        return resp

    return mangle


def _more_choices(resp):
    extra = json.loads(json.dumps(resp["choices"][0]))
    extra["index"] = len(resp["choices"])
    extra["message"]["content"] = "an extra choice nobody asked for"
    resp["choices"].append(extra)
    return resp


DEEP = b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

# name -> (how the answer is bent, the class its request fails with after max_retries)
FAILING: dict[str, tuple[Malformed, str]] = {
    "content-number": (Malformed(_message(content=42)), "bad_response"),
    "content-list": (Malformed(_message(content=[1, 2])), "bad_response"),
    "content-object": (Malformed(_message(content={"text": "hi"})), "bad_response"),
    "lone-surrogate": (Malformed(_message(content="The answer is \ud800.")), "bad_encoding"),
    "surrogate-in-reasoning": (Malformed(_message(reasoning_content="hmm \udfff")), "bad_encoding"),
    "content-null": (Malformed(_message(content=None)), "empty_answer"),
    "content-empty": (Malformed(_message(content="")), "empty_answer"),
    "content-blank": (Malformed(_message(content=" \n\t ")), "empty_answer"),
    "choices-empty": (Malformed(_set("choices", [])), "bad_response"),
    "choices-object": (Malformed(_set("choices", {"0": "x"})), "bad_response"),
    "choices-missing": (Malformed(lambda r: {k: v for k, v in r.items() if k != "choices"}), "bad_response"),
    "error-in-a-200": (Malformed(lambda r: {"error": {"message": "model overloaded"}}), "bad_response"),
    "body-a-list": (Malformed(lambda r: [r]), "bad_response"),
    "body-a-string": (Malformed(lambda r: "chat.completion"), "bad_response"),
    "choice-without-message": (Malformed(_choices(lambda c: c.pop("message"))), "bad_response"),
    "choice-a-string": (Malformed(_set("choices", ["hello", "world"])), "bad_response"),
    "message-a-string": (Malformed(_choices(lambda c: c.update(message="42"))), "bad_response"),
    "reasoning-a-number": (Malformed(_message(reasoning=7)), "bad_response"),
    "json-nested-deep": (Malformed(lambda r: DEEP), "bad_response"),
    "huge-answer": (Malformed(_message(content="x" * 200_000)), "too_long"),
}
# name -> how the answer is bent: repaired (or asked again), and the sample kept
KEPT: dict[str, Malformed] = {
    "usage-lots": Malformed(_usage(completion_tokens="lots", prompt_tokens=-3)),
    "usage-float-null": Malformed(_usage(completion_tokens=3.5, prompt_tokens=None)),
    "usage-a-string": Malformed(_set("usage", "lots")),
    "finish-reason-number": Malformed(_choices(lambda c: c.update(finish_reason=123))),
    "finish-reason-object": Malformed(_choices(lambda c: c.update(finish_reason={"type": "stop"}))),
    "index-duplicated": Malformed(_choices(lambda c: c.update(index=0))),
    "index-out-of-range": Malformed(_choices(lambda c: c.update(index=c["index"] + 7))),
    "index-a-string": Malformed(_choices(lambda c: c.update(index="first"))),
    "more-choices-than-asked": Malformed(_more_choices),
    "text-parts": Malformed(_choices(lambda c: c["message"].update(content=[{"type": "text", "text": "7"}]))),
    "nul-bytes": Malformed(_message(content="The answer\x00 is \\boxed{1}.")),
    "reasoning-only": Malformed(_message(content=None, reasoning_content="I think it is 7")),
    "bad-once-then-healthy": Malformed(_message(content=42), times=1),
}
PARTIAL = {"second-choice-null": Malformed(_last_choice(content=None))}  # sample 0 kept, sample 1 empty_answer


def _plan(healthy: int) -> tuple[list[dict], dict[str, str]]:
    """Prompt rows: `healthy` plain ones, then one per malformed case; and case name -> prompt id."""
    cases = [*FAILING, *KEPT, *PARTIAL]
    rows = prompt_rows(0, healthy + len(cases))
    return rows, {name: f"q{healthy + i}" for i, name in enumerate(cases)}


def _bend(server: FakeOpenAIServer, which: dict[str, str]) -> None:
    table = {**{k: v for k, (v, _) in FAILING.items()}, **KEPT, **PARTIAL}
    server.malformed = {question_of(pid): table[name] for name, pid in which.items()}


def _error(result) -> str:
    """The one `error:` line (each request given up on is also logged as a warning above it)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _failures(output) -> list[dict]:
    path = output.with_name(output.stem + ".failures.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("client", ["aiohttp", "openai", "openai-httpx"])
def test_each_malformed_answer_is_a_named_failure_or_repaired_in_a_healthy_run(tmp_path, client):
    rows, which = _plan(healthy=30)
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "s.jsonl"
    with FakeOpenAIServer(models=[MODEL]) as server:
        _bend(server, which)
        result = cli(server.base_url, prompts, out, N, "--concurrency", "6", "--set", f"http_client={client}", *FAST)

        assert_exit(result, 1)
        failing = {which[name]: kind for name, (_, kind) in FAILING.items()}
        line = _error(result)
        kinds = Counter(failing.values()) + Counter({"empty_answer": 1})  # + the one bad choice of PARTIAL
        expected = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
        assert f"{sum(kinds.values())} requests failed ({expected})" in line and "run the same command again" in line
        # every other sample is there exactly once, the repaired ones included
        partial = which["second-choice-null"]
        wanted = {(f"q{i}", j) for i in range(len(rows)) for j in range(N)}
        wanted -= {(pid, j) for pid in failing for j in range(N)} | {(partial, 1)}
        rows_out = samples(out)
        assert keys(rows_out) == Counter(dict.fromkeys(wanted, 1))
        assert len({s.id for s in rows_out}) == len(rows_out)
        # each bad one is in failures.jsonl with its class, and was asked max_retries + 1 times (too_long: once)
        logged = {(f["prompt_id"], tuple(f["sample_indices"])): f["error"] for f in _failures(out)}
        assert logged == {**{(pid, (0, 1)): kind for pid, kind in failing.items()}, (partial, (1,)): "empty_answer"}
        sent = Counter(r["body"]["messages"][-1]["content"] for r in server.chat_requests())
        for pid, kind in failing.items():
            assert sent[question_of(pid)] == (1 if kind == "too_long" else 2), pid
        _check_repairs(rows_out, which)

        server.malformed = {}  # the server heals: the rerun asks for exactly the failed samples
        server.clear_log()
        assert_exit(cli(server.base_url, prompts, out, N, "--set", f"http_client={client}", *FAST), 0)
        again = Counter((r["body"]["messages"][-1]["content"], r["body"].get("n", 1)) for r in server.chat_requests())
        assert again == Counter({**{(question_of(pid), N): 1 for pid in failing}, (question_of(partial), 1): 1})
        assert keys(samples(out)) == Counter({(f"q{i}", j): 1 for i in range(len(rows)) for j in range(N)})
        assert _failures(out) == [] and not out.with_name("s.failures.jsonl").exists()


def _check_repairs(rows_out, which) -> None:
    by = {(s.prompt_id, s.sample_index): s for s in rows_out}

    def kept(name: str, index: int = 0):
        return by[(which[name], index)]

    for name in ("usage-lots", "usage-float-null"):  # n=2: the request's total is kept as request_completion_tokens
        usage = kept(name).usage
        assert usage.prompt_tokens is None and usage.model_extra == {"request_completion_tokens": None}, name
    assert kept("usage-a-string").usage.prompt_tokens is None
    assert by[("q0", 0)].usage.prompt_tokens > 0  # a healthy answer's usage is kept
    assert kept("finish-reason-number").finish_reason is None
    assert kept("finish-reason-object").finish_reason is None
    assert kept("text-parts").text == "7"
    assert kept("nul-bytes").text == "The answer\x00 is \\boxed{1}."
    reasoning = kept("reasoning-only").completion[0]
    assert reasoning.content == "" and reasoning.reasoning_content == "I think it is 7"
    extra = {kept("more-choices-than-asked", j).text for j in range(N)}
    assert "an extra choice nobody asked for" not in extra
    assert kept("bad-once-then-healthy").text.startswith("Sample 0:")


def test_a_retried_malformed_answer_is_counted_as_a_retry(tmp_path):
    with FakeOpenAIServer(models=[MODEL]) as server:
        prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 4))
        server.malformed = {question_of("q2"): Malformed(_message(content=None), times=2)}
        out = tmp_path / "s.jsonl"
        assert_exit(cli(server.base_url, prompts, out, 1, "--set", "max_retries=2", *FAST[:4]), 0)
        manifest = json.loads(out.with_name("s.manifest.json").read_text())
        assert manifest["retries"] == {"empty_answer": 2} and manifest["failed"] == 0
        assert keys(samples(out)) == Counter({(f"q{i}", 0): 1 for i in range(4)})


@pytest.mark.parametrize(
    ("name", "logprobs", "kind"),
    [
        ("not-an-object", "nope", "bad_logprobs"),
        ("content-not-a-list", {"content": 5}, "bad_logprobs"),
        ("logprob-a-string", {"content": [{"token": "a", "logprob": "high", "top_logprobs": []}]}, "bad_logprobs"),
        ("logprob-nan", {"content": [{"token": "a", "logprob": math.nan, "top_logprobs": []}]}, "bad_logprobs"),
        ("logprob-positive", {"content": [{"token": "a", "logprob": 2.5, "top_logprobs": []}]}, "bad_logprobs"),
        ("token-a-number", {"content": [{"token": 7, "logprob": -1.0, "top_logprobs": []}]}, "bad_logprobs"),
        ("token-surrogate", {"content": [{"token": "\ud800", "logprob": -1.0}]}, "bad_encoding"),
    ],
)
def test_malformed_logprobs_fail_the_sample_when_asked_for(tmp_path, name, logprobs, kind):
    with FakeOpenAIServer(models=[MODEL]) as server:
        prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 3))
        server.malformed = {question_of("q1"): Malformed(_choices(lambda c: c.update(logprobs=logprobs)))}
        out = tmp_path / "s.jsonl"
        result = cli(server.base_url, prompts, out, 1, "--set", "logprobs=2", *FAST)
        assert_exit(result, 1)
        assert f"1 requests failed ({kind}: 1)" in _error(result)
        assert [(f["prompt_id"], f["error"]) for f in _failures(out)] == [("q1", kind)]
        assert {s.prompt_id for s in samples(out)} == {"q0", "q2"}
        assert all(s.meta["logprobs"]["tokens"] for s in samples(out))


def test_logprobs_are_not_judged_when_not_asked_for(tmp_path):
    with FakeOpenAIServer(models=[MODEL]) as server:
        prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
        server.malformed = {question_of("q1"): Malformed(_choices(lambda c: c.update(logprobs="nope")))}
        out = tmp_path / "s.jsonl"
        assert_exit(cli(server.base_url, prompts, out, 1, *FAST), 0)
        assert [s.meta.get("logprobs") for s in samples(out)] == [None, None]


# --- the one validation step, on its own: what every backend's Result goes through -------------------

REQ = Request("q1", [{"role": "user", "content": "hi"}], [0, 1])


@pytest.mark.parametrize(
    ("result", "kind"),
    [
        (Result(REQ, 1, 42, "stop"), "bad_response"),  # type: ignore[arg-type]
        (Result(REQ, 1, "ok", "stop", reasoning=["a"]), "bad_response"),  # type: ignore[arg-type]
        (Result(REQ, 1, "", "stop"), "empty_answer"),
        (Result(REQ, 1, "  ", "length", reasoning=""), "empty_answer"),
        (Result(REQ, 1, "a\udc80b", "stop"), "bad_encoding"),
        (Result(REQ, 1, "x" * 5000, "stop"), "too_long"),
        (Result(REQ, 1, "ok", "stop", logprobs={"tokens": ["o", "k"], "logprobs": [-0.1]}), "bad_logprobs"),
        (
            Result(REQ, 1, "ok", "stop", logprobs={"tokens": ["ok"], "logprobs": [-0.1], "top": [[["ok"]]]}),
            "bad_logprobs",
        ),
    ],
)
def test_check_result_names_the_failure_for_its_one_sample(result, kind):
    failure = check_result(result, AnswerRules(max_chars=4096, logprobs=True))
    assert failure.kind == kind
    assert failure.request.prompt_id == "q1" and failure.request.sample_indices == [1]  # only this sample
    json.dumps(failure.detail).encode("utf-8")  # the detail itself is always writable


def test_check_result_repairs_metadata_and_keeps_a_good_answer():
    raw = Result(REQ, 0, "7", 5, usage={"prompt_tokens": 12.0, "completion_tokens": True, "x": -1})  # type: ignore[arg-type]
    checked = check_result(raw, AnswerRules())
    assert isinstance(checked, Result) and checked.text == "7" and checked.finish_reason is None
    assert checked.usage == {"prompt_tokens": 12, "completion_tokens": None, "x": None}


def test_eval_keeps_an_empty_answer_as_the_models_answer():
    assert isinstance(check_result(Result(REQ, 0, "", "stop"), AnswerRules(keep_empty=True)), Result)


# --- failures.jsonl is the current state of the output ------------------------------------------------


def test_failures_file_lists_only_what_is_still_missing(tmp_path):
    with FakeOpenAIServer(models=[MODEL]) as server:
        first = write_jsonl(tmp_path / "a.jsonl", prompt_rows(0, 6))
        other = write_jsonl(tmp_path / "b.jsonl", prompt_rows(10, 13))
        out = tmp_path / "s.jsonl"
        bad = Malformed(_message(content=None))
        server.malformed = {question_of("q2"): bad, question_of("q4"): bad}
        assert_exit(cli(server.base_url, first, out, 2, *FAST), 1)
        rows = _failures(out)
        assert sorted((f["prompt_id"], f["sample_indices"], f["error"]) for f in rows) == [
            ("q2", [0, 1], "empty_answer"),
            ("q4", [0, 1], "empty_answer"),
        ]
        assert all(len(f["sample_ids"]) == 2 for f in rows)

        del server.malformed[question_of("q2")]  # q2 heals, q4 still fails: q2's row disappears, q4's is new
        assert_exit(cli(server.base_url, first, out, 2, *FAST), 1)
        (row,) = _failures(out)
        assert row["prompt_id"] == "q4" and row["time"] > max(f["time"] for f in rows)

        # a run of other prompts into the same output leaves q4's row: q4 is still missing from the output
        assert_exit(cli(server.base_url, other, out, 2, *FAST), 0)
        assert [f["prompt_id"] for f in _failures(out)] == ["q4"]

        server.malformed = {}
        assert_exit(cli(server.base_url, first, out, 2, *FAST), 0)
        assert not out.with_name("s.failures.jsonl").exists()  # no file, no failure
        assert keys(samples(out)) == Counter({(f"q{i}", j): 1 for i in [*range(6), 10, 11, 12] for j in range(2)})


def test_failures_file_keeps_a_failure_this_run_did_not_send_again(tmp_path):
    """A budget that stops the run before a failed request is sent again leaves its row as it was."""
    with FakeOpenAIServer(models=[MODEL]) as server:
        out = tmp_path / "s.jsonl"
        server.malformed = {question_of("q3"): Malformed(_message(content=None))}
        assert_exit(cli(server.base_url, write_jsonl(tmp_path / "a.jsonl", prompt_rows(0, 4)), out, 1, *FAST), 1)
        (before,) = _failures(out)
        assert before["prompt_id"] == "q3"
        later = write_jsonl(tmp_path / "b.jsonl", prompt_rows(4, 6) + prompt_rows(0, 4))  # q4, q5 are sent first
        server.clear_log()
        assert_exit(cli(server.base_url, later, out, 1, "--max-requests", "2", *FAST), 0)
        assert sorted(r["body"]["messages"][-1]["content"] for r in server.chat_requests()) == [
            question_of("q4"),
            question_of("q5"),
        ]
        assert _failures(out) == [before]  # q3 is still missing, for the reason recorded then
