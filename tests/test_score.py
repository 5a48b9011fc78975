"""`seqdistill score`: the teacher's per-token logprobs of any completion, and the one type they are stored in.

The server tests run against tests/fake_openai_server.py's `/v1/completions`, which computes vLLM-shaped
prompt logprobs with a REAL model (the session's tiny Llama, one unpadded forward): what the openai backend
writes must equal what the in-process transformers backend (batched, padded) computes on the same weights.
Measured: identical after the 4-decimal rounding (max difference 0.0 over every token and top-k entry of
these samples); the assertions allow 2e-4 (two rounding steps).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill.cli import app
from seqdistill.config import ScoreConfig, load_stage
from seqdistill.errors import DataError
from seqdistill.io import read_samples
from seqdistill.records import Logprobs, Sample
from seqdistill.stages import score as score_stage
from tests.conftest import make_sample, read_jsonl, write_jsonl
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_generate_openai import assert_exit, error_line, line_count, wait_for

TOL = 2e-4  # two 4-decimal roundings; measured difference: 0.0
REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _samples(path: Path, count: int = 6) -> Path:
    """Samples whose teacher sent no logprobs: one with its own teacher prompt, one with a reasoning trace."""
    rows = [
        make_sample(f"p{i}", 0, f"{i} + {i} = {2 * i}. The answer is \\boxed{{{2 * i}}}.", reference=str(2 * i))
        for i in range(count)
    ]
    if count > 2:
        rows[1]["meta"] = {"teacher_prompt": [{"role": "system", "content": "Be exact."}, rows[1]["prompt"][0]]}
        rows[2]["completion"][0]["reasoning_content"] = "2 plus 2 is 4."
    return write_jsonl(path, rows)


def _score(inp: Path, out: Path, *extra: str):
    return runner.invoke(app, ["score", str(inp), "--output", str(out), *extra])


def _server_args(server: FakeOpenAIServer, tokenizer: str, k: int = 3) -> list[str]:
    return ["--backend", "openai", "--model", "teacher", "--base-url", server.base_url,
            "--teacher-tokenizer", tokenizer, "--logprobs", str(k)]  # fmt: skip


def _by_id(path: Path) -> dict[str, Sample]:
    rows = list(read_samples(path))
    assert len({s.id for s in rows}) == len(rows), "a sample was written twice"
    return {s.id: s for s in rows}


def _assert_same_scores(a: Logprobs, b: Logprobs) -> None:
    assert a.ids == b.ids and a.tokens == b.tokens
    assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) <= TOL
    for row_a, row_b in zip(a.top, b.top, strict=True):
        assert [t for t, _ in row_a] == [t for t, _ in row_b]
        assert max(abs(x - y) for (_, x), (_, y) in zip(row_a, row_b, strict=True)) <= TOL


# --- the one logprobs type ------------------------------------------------------------------------------


def test_logprobs_type_reads_and_writes_the_existing_format(tmp_path):
    """Files written before the type existed read back unchanged; a malformed one is a one-line DataError."""
    top = [[["4", -0.0], ["alt1", -2.0]], [["2", -0.125]]]
    openai_form = {"tokens": ["4", "2"], "logprobs": [-0.0, -0.125], "top": top}
    local_form = {"tokens": ["4"], "logprobs": [-0.5], "top": [[["4", -0.5]]], "ids": [19]}
    rows = [make_sample("p1", meta={"logprobs": openai_form}), make_sample("p2", meta={"logprobs": local_form})]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    read = list(read_samples(path))
    assert [json.loads(s.to_json())["meta"] for s in read] == [r["meta"] for r in rows]  # written back unchanged
    assert read[0].logprobs == Logprobs(tokens=["4", "2"], logprobs=[0.0, -0.125], top=openai_form["top"])
    assert read[1].logprobs.ids == [19] and read[1].logprobs.k == 1
    # a typed producer's Logprobs is stored as that same JSON form
    built = Sample.model_validate(make_sample(meta={"logprobs": Logprobs.build(["4"], [-0.123456], ids=[19])}))
    assert built.meta["logprobs"] == {"tokens": ["4"], "logprobs": [-0.1235], "ids": [19]}
    bad = make_sample("p3", meta={"logprobs": {**openai_form, "top": openai_form["top"][:1]}})
    write_jsonl(path, [rows[0], bad])
    with pytest.raises(DataError, match=r"s\.jsonl line 2: meta: logprobs: top has 1 entries for 2 tokens$"):
        list(read_samples(path))


# --- in-process transformers ----------------------------------------------------------------------------


def test_score_ids_equals_an_unbatched_forward(tiny_model):
    """The batched, right-padded function gives each sequence the log-softmax of its own plain forward."""
    import torch
    from transformers import AutoModelForCausalLM

    from seqdistill.backends.score_transformers import score_ids

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]]
    completions = [[20, 21], [22, 23, 24, 25, 26], [27]]
    scores = score_ids(model, prompts, completions, k=4, pad_id=0)
    for p, c, s in zip(prompts, completions, scores, strict=True):
        with torch.inference_mode():
            rows = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), dim=-1)
        expected = rows[len(p) - 1 : len(p) - 1 + len(c)]
        assert torch.allclose(s.logprobs, expected.gather(1, torch.tensor(c).unsqueeze(1)).squeeze(1), atol=1e-5)
        values, ids = expected.topk(4, dim=-1)
        assert torch.equal(s.top_ids, ids) and torch.allclose(s.top_logprobs, values, atol=1e-5)


def test_transformers_backend_scores_the_rendered_completion(tiny_model, tmp_path):
    """Every completion token as `train` renders it (reasoning as <think>, the end-of-turn tokens), ids recorded."""
    from transformers import AutoTokenizer

    inp, out = _samples(tmp_path / "in.jsonl"), tmp_path / "scored.jsonl"
    result = _score(inp, out, "--backend", "transformers", "--model", tiny_model, "--logprobs", "2")
    assert_exit(result, 0)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    scored = _by_id(out)
    assert len(scored) == 6
    for original in read_samples(inp):
        s = scored[original.id]
        lp = s.logprobs
        assert s.completion == original.completion and s.prompt == original.prompt  # the sample itself unchanged
        text = tok.decode(lp.ids)
        assert "".join(lp.tokens) == text and text.endswith("<|im_end|>\n")
        content = original.completion[0].content
        reasoning = original.completion[0].reasoning_content
        assert text.startswith(f"<think>\n{reasoning}\n</think>\n\n{content}" if reasoning else content)
        assert lp.k == 2 and all(v <= 0 for v in lp.logprobs) and all(len(row) == 2 for row in lp.top)
        assert all(lp_ <= row[0][1] for lp_, row in zip(lp.logprobs, lp.top, strict=True))  # top-1 is the best
        src = s.logprobs_source
        assert (src.model, src.backend, src.k, src.tokenizer) == (tiny_model, "transformers", 2, tiny_model)
    manifest = json.loads((tmp_path / "scored.manifest.json").read_text())
    assert manifest["complete"] and manifest["scored"] == 6 and manifest["k"] == 2
    # the same command again: nothing to do; another k into the same output: refused in one line
    again = _score(inp, out, "--backend", "transformers", "--model", tiny_model, "--logprobs", "2")
    assert_exit(again, 0)
    assert line_count(out) == 6
    mixed = _score(inp, out, "--backend", "transformers", "--model", tiny_model, "--logprobs", "3")
    assert_exit(mixed, 1)
    assert "holds samples scored otherwise" in error_line(mixed) and line_count(out) == 6


# --- a server's prompt logprobs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_kwargs", "sent"),
    [({}, "prompt_logprobs"), ({"prompt_logprobs": False}, "echo")],
    ids=["prompt_logprobs", "echo-fallback"],
)
def test_server_scores_equal_in_process_scores(tiny_model, tmp_path, server_kwargs, sent):
    inp = _samples(tmp_path / "in.jsonl")
    local = tmp_path / "local.jsonl"
    assert_exit(_score(inp, local, "--backend", "transformers", "--model", tiny_model, "--logprobs", "3"), 0)
    with FakeOpenAIServer(models=["teacher"], scorer=tiny_model, **server_kwargs) as server:
        remote = tmp_path / "remote.jsonl"
        assert_exit(_score(inp, remote, *_server_args(server, tiny_model)), 0)
        bodies = [r["body"] for r in server.completions_requests()]
    assert all(sent in b for b in bodies[-6:]) and len(bodies) == 6 + (sent == "echo")  # echo: after one probe
    expected = _by_id(local)
    for sid, s in _by_id(remote).items():
        _assert_same_scores(s.logprobs, expected[sid].logprobs)
        assert s.logprobs_source.backend == "openai"
    # the teacher's prompt was sent: the sample with meta.teacher_prompt carries its system message
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    sent_texts = [tok.decode(b["prompt"]) for b in bodies]
    assert sum("Be exact." in t for t in sent_texts) == 1 + (sent == "echo" and "Be exact." in sent_texts[0])


def test_a_server_without_prompt_logprobs_is_one_clear_line(tiny_model, tmp_path):
    inp, out = _samples(tmp_path / "in.jsonl"), tmp_path / "scored.jsonl"
    with FakeOpenAIServer(models=["teacher"], scorer=tiny_model, prompt_logprobs=False, echo=False) as server:
        result = _score(inp, out, *_server_args(server, tiny_model))
        assert len(server.completions_requests()) == 2  # one probe per API, then it stops
    assert_exit(result, 1)
    line = error_line(result)
    assert "returned no prompt logprobs" in line and "`prompt_logprobs` (vLLM) or `echo` with `logprobs`" in line
    assert not out.exists() or line_count(out) == 0


def test_k_above_the_servers_cap_is_one_clear_line(tiny_model, tmp_path):
    inp, out = _samples(tmp_path / "in.jsonl"), tmp_path / "scored.jsonl"
    with FakeOpenAIServer(models=["teacher"], scorer=tiny_model, max_logprobs=20) as server:
        result = _score(inp, out, *_server_args(server, tiny_model, k=25))
        assert len(server.completions_requests()) == 1
    assert_exit(result, 1)
    line = error_line(result)
    assert "allows fewer logprobs than k=25" in line and "lower --logprobs to 20" in line
    assert "--max-logprobs 25" in line


@pytest.mark.parametrize("client", ["aiohttp", "openai"])
def test_server_errors_are_retried_like_generate(tiny_model, tmp_path, client):
    """generate's retry machinery, through either transport (the lean one, or the official SDK's completions)."""
    inp, out = _samples(tmp_path / "in.jsonl", 3), tmp_path / "scored.jsonl"
    with FakeOpenAIServer(models=["teacher"], scorer=tiny_model, completions_fail_first=2) as server:
        fast = ("--set", "backoff_base=0.05", "--set", "backoff_max=0.1", "--concurrency", "1",
                "--set", f"http_client={client}")  # fmt: skip
        assert_exit(_score(inp, out, *_server_args(server, tiny_model), *fast), 0)
        statuses = [r["status"] for r in server.completions_requests()]
    assert statuses == [500, 500, 200, 200, 200]
    assert len(_by_id(out)) == 3
    assert json.loads((tmp_path / "scored.manifest.json").read_text())["retries"] == {"http_500": 2}


def test_failed_requests_are_logged_and_retried_by_the_next_run(tiny_model, tmp_path):
    inp, out = _samples(tmp_path / "in.jsonl", 3), tmp_path / "scored.jsonl"
    with FakeOpenAIServer(models=["teacher"], scorer=tiny_model, completions_fail_first=100) as server:
        failing = runner.invoke(app, ["score", str(inp), "--output", str(out), *_server_args(server, tiny_model),
                                      "--set", "max_retries=0"])  # fmt: skip
        assert_exit(failing, 1)
        errors = [line for line in failing.stderr.splitlines() if line.startswith("error: ")]  # after the warnings
        assert len(errors) == 1 and "3 samples failed (http_500: 3)" in errors[0], failing.stderr
        logged = read_jsonl(tmp_path / "scored.failures.jsonl")
        assert sorted(r["prompt_id"] for r in logged) == ["p0", "p1", "p2"]
        assert {r["error"] for r in logged} == {"http_500"}
        server.completions_fail_first = 0
        assert_exit(_score(inp, out, *_server_args(server, tiny_model)), 0)
    assert sorted(s.prompt_id for s in read_samples(out)) == ["p0", "p1", "p2"]


def test_a_served_model_name_without_a_local_tokenizer_is_one_line(tmp_path):
    inp = _samples(tmp_path / "in.jsonl", 1)
    with FakeOpenAIServer(models=["teacher"]) as server:
        result = _score(inp, tmp_path / "o.jsonl", "--backend", "openai", "--model", "teacher",
                        "--base-url", server.base_url)  # fmt: skip
        assert server.completions_requests() == []
    assert_exit(result, 1)
    assert "cannot load the tokenizer of 'teacher'" in error_line(result) and "teacher_tokenizer" in result.stderr


# --- resume: exactly once across kill -9 ----------------------------------------------------------------


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SEQDISTILL_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", SEQDISTILL_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "seqdistill", "score", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_then_resume_scores_no_sample_twice(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    inp, out = _samples(tmp_path / "in.jsonl", 40), tmp_path / "scored.jsonl"

    def sample_of(request) -> str:
        return re.search(r"Question (p\d+)\?", tok.decode(request["body"]["prompt"])).group(1)

    with FakeOpenAIServer(models=["teacher"], scorer=tiny_model, delay=0.1) as server:
        args = [str(inp), "--output", str(out), *_server_args(server, tiny_model), "--concurrency", "4"]
        proc = _spawn(args)
        wait_for(lambda: line_count(out) >= 8, 120, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        first = server.completions_requests()
        written = {s.prompt_id for s in read_samples(out)}  # a torn last line would fail validation here
        assert 8 <= len(written) < 40
        server.delay = 0.0
        proc = _spawn(args)
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        second = server.completions_requests()[len(first) :]
        proc = _spawn(args)  # a third run: nothing left to send
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert len(server.completions_requests()) == len(first) + len(second)
    assert Counter(s.prompt_id for s in read_samples(out)) == Counter({f"p{i}": 1 for i in range(40)})
    assert not {sample_of(r) for r in second} & written  # nothing already written was sent again
    answered_not_written = {sample_of(r) for r in first if r["answered"]} - written
    assert len(answered_not_written) <= 4  # only the requests in flight at the kill (concurrency 4)


# --- the teacher's prompt, config, and the soft-target use case -----------------------------------------


def test_teacher_prompt_comes_from_config_then_meta_then_the_prompt(tmp_path):
    examples = write_jsonl(tmp_path / "ex.jsonl", [{"question": "What is 1 + 1?", "completion": "2"}])
    sample = Sample.model_validate(
        make_sample(
            prompt=[{"role": "system", "content": "student system"}, {"role": "user", "content": "Q?"}],
            meta={"teacher_prompt": [{"role": "user", "content": "from meta"}]},
        )
    )
    cfg = ScoreConfig.model_validate(
        {"prompts": {"teacher_system_prompt": "You are exact.", "teacher_examples": str(examples)}}
    )
    context = score_stage._teacher_context(cfg)
    assert score_stage.teacher_messages(sample, context) == [
        {"role": "system", "content": "You are exact."},
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "Q?"},
    ]
    assert score_stage.teacher_messages(sample, None) == [{"role": "user", "content": "from meta"}]
    bare = sample.model_copy(update={"meta": {}})
    student = [{"role": "system", "content": "student system"}, {"role": "user", "content": "Q?"}]
    assert score_stage.teacher_messages(bare, None) == student


def test_config_refuses_generation_keys_and_reads_a_recipe_section(tmp_path):
    result = runner.invoke(app, ["score", "x.jsonl", "--model", "m", "--set", "n=4"])
    assert_exit(result, 1)
    assert "score does not use n" in error_line(result)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "run_dir: runs/x\ngenerate:\n  model: bundled:smollm2\n  backend: transformers\nscore:\n  logprobs: 4\n"
    )
    cfg = load_stage("score", str(recipe))
    assert (cfg.input, cfg.output) == ("runs/x/samples.jsonl", "runs/x/scored.jsonl")
    assert (cfg.model, cfg.backend, cfg.logprobs) == ("bundled:smollm2", "transformers", 4)


def test_score_then_train_on_soft_targets(tiny_model, tmp_path):
    """Soft-target KD on samples whose teacher sent no logprobs: score them, then train with kd_alpha."""
    inp, scored = _samples(tmp_path / "in.jsonl", 8), tmp_path / "scored.jsonl"
    extra = ("--set", "prompts.teacher_system_prompt=Answer exactly.")  # the teacher's prompt differs
    assert_exit(_score(inp, scored, "--backend", "transformers", "--model", tiny_model, *extra), 0)
    result = runner.invoke(
        app,
        ["train", str(scored), "--model", tiny_model, "--output", str(tmp_path / "student"),
         "--set", "kd_alpha=0.5", "--set", "epochs=1", "--set", "batch_size=4", "--set", "logging_steps=1"],
    )  # fmt: skip
    assert_exit(result, 0)
    report = json.loads((tmp_path / "student" / "training_report.json").read_text())
    kd = report["kd"]
    assert kd["coverage"] == 1.0 and kd["k"] == 5 and kd["teacher_tokenizer"] == tiny_model
    assert all("kd" in h and h["kd"] > 0 for h in report["loss_history"])
    assert read_jsonl(scored)[0]["meta"]["logprobs_source"]["tokenizer"] == tiny_model


def test_score_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom seqdistill.cli import app\n"
        "assert CliRunner().invoke(app, ['score', '--help']).exit_code == 0\n"
        "import seqdistill.stages.score, seqdistill.backends.score_openai\n"
        "print([m for m in ('torch', 'transformers', 'vllm', 'openai') if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
