"""Every user-facing failure is one line, and checked before any work: unreadable input (not UTF-8, binary,
NUL bytes, a gigantic line), outputs that cannot be written (read-only, a file in the way, a full disk),
credentials in a URL, the fd limit, wrong-typed report inputs, and recipes that would fail half-way.

Each case: exit 1, exactly one `error:` line with the key words, no traceback, no data lost or torn.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import seqdistill.io
from seqdistill.cli import app, command
from tests.conftest import make_sample, write_jsonl
from tests.test_generate_openai import MODEL, REPO, generate_args, keys, prompt_rows, samples

SECRET = "hunter2-s3cret"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_one_error(result, *needles: str) -> str:
    """Exit 1 through the CLI's own handling, stderr exactly one `error:` line holding every needle."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@contextmanager
def mounted_tmpfs(directory: Path, options: str):
    """A small tmpfs at `directory` (root only): a full disk or a read-only file system, for real."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


# --- unreadable input: named by file and line -------------------------------------------------------------------


def _bad_bytes(kind: str) -> bytes:
    good = (json.dumps(make_sample("p1")) + "\n").encode()
    return {
        "invalid UTF-8": good + b'{"id": "caf\xe9"}\n',
        "binary (gzip)": gzip.compress(good * 20),
        "UTF-16": (json.dumps(make_sample("p1")) + "\n").encode("utf-16"),
        "NUL byte": good + b'{"id": "a\x00b"}\n',
    }[kind]


BAD_INPUT = {  # kind -> (line, words in the message)
    "invalid UTF-8": ("line 2", "not valid UTF-8"),
    "binary (gzip)": ("line 1", "not valid UTF-8"),
    "UTF-16": ("line 1", "not valid UTF-8"),
    "NUL byte": ("line 2", "not valid JSON"),
}


@pytest.mark.parametrize("kind", list(BAD_INPUT))
def test_filter_input_that_is_not_utf8_jsonl(tmp_path, kind):
    data = tmp_path / "samples.jsonl"
    data.write_bytes(_bad_bytes(kind))
    line, words = BAD_INPUT[kind]
    result = invoke("filter", str(data), "--check", "numeric")
    assert_one_error(result, f"{data} {line}", words)
    assert [p.name for p in tmp_path.iterdir()] == ["samples.jsonl"]  # nothing written, no temp file left


@pytest.mark.parametrize("kind", ["invalid UTF-8", "UTF-16"])
def test_train_input_that_is_not_utf8(tmp_path, kind):
    data = tmp_path / "kept.jsonl"
    data.write_bytes(_bad_bytes(kind))
    line, words = BAD_INPUT[kind]
    result = invoke("train", str(data), "--model", "student", "--output", str(tmp_path / "student"))
    assert_one_error(result, f"{data} {line}", words)


def test_a_gigantic_line_is_refused_not_read_into_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(seqdistill.io, "MAX_LINE_BYTES", 4096)
    data = tmp_path / "samples.jsonl"
    data.write_bytes(json.dumps(make_sample("p1", text="x" * 10_000)).encode() + b"\n")
    result = invoke("filter", str(data), "--check", "numeric")
    assert_one_error(result, f"{data} line 1", "longer than 4096 bytes")


@pytest.mark.parametrize("kind", ["invalid UTF-8", "UTF-16"])
def test_prompts_file_that_is_not_utf8_fails_before_any_request(tmp_path, server, kind):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(
        {
            "invalid UTF-8": b'{"id": "q0", "question": "What is 1 + 2?"}\n{"id": "q1", "question": "\xff"}\n',
            "UTF-16": '{"id": "q0", "question": "What is 1 + 2?"}\n'.encode("utf-16"),
        }[kind]
    )
    output = tmp_path / "samples.jsonl"
    result = invoke(*generate_args(server.base_url, prompts, output, 1))
    assert_one_error(result, f"{prompts} line", "not valid UTF-8")
    assert server.chat_requests() == []
    assert not output.exists()


def test_eval_prompts_not_utf8_fails_before_any_request(tmp_path, server):
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_bytes(b'{"id": "q0", "question": "What is 1 + 2?", "answer": "3"}\n\xfe\xff\n')
    result = invoke("eval", "--prompts", str(prompts), "--model", MODEL, "--base-url", server.base_url,
                    "--output", str(tmp_path / "eval.jsonl"))  # fmt: skip
    assert_one_error(result, f"{prompts} line 2", "not valid UTF-8")
    assert server.chat_requests() == []


def test_config_and_template_not_utf8(tmp_path, server):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"n: 2\nmodel: caf\xe9\n")
    assert_one_error(invoke("generate", "--config", str(config)), f"config {config}", "not valid UTF-8")
    template = tmp_path / "user.jinja"
    template.write_bytes(b"Q: {{ question }} \xff")
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    result = invoke(
        *generate_args(server.base_url, prompts, tmp_path / "s.jsonl", 1), "--set", f"prompts.template={template}"
    )
    assert_one_error(result, f"template {template}", "not valid UTF-8")
    assert server.chat_requests() == []


def test_filter_with_a_tokenizer_that_does_not_load(tmp_path):
    data = write_jsonl(tmp_path / "samples.jsonl", [make_sample("p1")])
    result = invoke(
        "filter", str(data), "--check", "numeric", "--set", "tokenizer=/nowhere/tok", "--set", "min_tokens=2"
    )
    assert_one_error(result, "cannot load the tokenizer of '/nowhere/tok'", "set tokenizer to")


# --- outputs that cannot be written ------------------------------------------------------------------------------


def test_generate_into_a_read_only_directory(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        result = invoke(*generate_args(server.base_url, prompts, ro / "runs" / "samples.jsonl", 1))
        assert_one_error(result, f"{ro}", "Read-only file system")
    assert server.chat_requests() == []


def test_filter_into_a_read_only_directory(tmp_path):
    data = write_jsonl(tmp_path / "samples.jsonl", [make_sample("p1")])
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        result = invoke("filter", str(data), "--output", str(ro / "kept.jsonl"), "--check", "numeric")
        assert_one_error(result, str(ro), "Read-only file system")


def test_generate_when_a_file_is_in_the_way_of_the_output_directory(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    (tmp_path / "runs").write_text("not a directory")
    result = invoke(*generate_args(server.base_url, prompts, tmp_path / "runs" / "x" / "samples.jsonl", 1))
    assert_one_error(result, f"{tmp_path / 'runs'} is a file, not a directory")
    assert server.chat_requests() == []


def test_train_output_that_is_a_file_fails_before_loading_anything(tmp_path):
    data = write_jsonl(tmp_path / "kept.jsonl", [make_sample("p1")])
    (tmp_path / "student").write_text("a file")
    result = invoke("train", str(data), "--model", "no-such-model", "--output", str(tmp_path / "student"))
    assert_one_error(result, "--output", "is a file")


def test_generate_on_a_full_disk_keeps_whole_lines_and_resumes(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 200))
    with mounted_tmpfs(tmp_path / "small", "size=512k") as disk:  # the 200 samples need ~130 KB
        output = disk / "samples.jsonl"
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (512 - 40) * 1024)  # 40 KB left: the disk fills mid-run

        result = invoke(*generate_args(server.base_url, prompts, output, 1, "--concurrency", "2"))

        assert_one_error(result, f"{output}", "No space left on device")
        text = output.read_text(encoding="utf-8")
        assert text and text.endswith("\n")  # no torn last line
        first = samples(output)  # every line a whole, valid record
        assert 0 < len(first) < 200
        assert not [p for p in disk.iterdir() if p.suffix in (".tmp", ".lock")]

        filler.unlink()  # space again: the same command finishes the job
        server.delay = 0.0
        disk_left = invoke(*generate_args(server.base_url, prompts, disk / "samples.jsonl", 1))
        assert disk_left.exit_code == 0, disk_left.output
        rows = samples(output)
        assert keys(rows) == Counter({(f"q{i}", 0): 1 for i in range(200)})
        assert [r.id for r in rows[: len(first)]] == [r.id for r in first]  # what was there is unchanged


def test_filter_on_a_full_disk_keeps_the_old_output(tmp_path):
    data = write_jsonl(tmp_path / "samples.jsonl", [make_sample(f"p{i}", text="x " * 200) for i in range(100)])
    with mounted_tmpfs(tmp_path / "small", "size=16k") as disk:
        output = disk / "kept.jsonl"
        output.write_text("the previous run's kept samples\n")

        result = invoke("filter", str(data), "--output", str(output), "--check", "none")

        assert_one_error(result, "No space left on device")
        assert output.read_text() == "the previous run's kept samples\n"
        assert sorted(p.name for p in disk.iterdir()) == ["kept.jsonl"]  # temporary files removed


# --- credentials in a URL ----------------------------------------------------------------------------------------


def _files_holding(directory: Path, text: str) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_credentials_in_the_url_are_refused_and_never_echoed(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 2))
    url = server.base_url.replace("http://", f"http://alice:{SECRET}@")
    eval_args = ["eval", "--prompts", str(prompts), "--model", MODEL, "--base-url", url]
    for args in (generate_args(url, prompts, tmp_path / "s.jsonl", 1), [*eval_args, "--output", str(tmp_path / "e")]):
        result = invoke(*args)
        assert_one_error(result, "base_url", "credentials", "api_key_env")
        assert SECRET not in result.output and "alice" not in result.output
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump({"run_dir": str(tmp_path / "run"), "generate": {"base_url": [server.base_url, url]}})
    )
    result = invoke("run", "--config", str(recipe))
    assert_one_error(result, "base_url", "credentials")
    assert SECRET not in result.output
    assert _files_holding(tmp_path, SECRET) == [recipe]  # only the user's own file holds it
    assert server.chat_requests() == []


# --- the file descriptor limit ------------------------------------------------------------------------------------


def test_running_out_of_file_descriptors_says_so(tmp_path, server):
    server.delay = 0.5  # connections stay open: 200 at once cannot fit in 64 descriptors
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(0, 300))
    output = tmp_path / "samples.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SEQDISTILL_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", SEQDISTILL_NO_PROGRESS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "seqdistill", *generate_args(server.base_url, prompts, output, 1, "--concurrency", "200")],  # noqa: E501
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "too many open files" in lines[0] and "--concurrency" in lines[0] and "ulimit -n" in lines[0]
    assert "is it running" not in lines[0]
    assert output.read_text().endswith("\n") if output.exists() and output.stat().st_size else True
    assert json.loads(output.with_name("samples.manifest.json").read_text())["complete"] is False


# --- report over wrong-typed side files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("summary", "field"),
    [
        ({"generate": {"prompts": "lots"}}, "generate.prompts"),
        ({"filter": "abc"}, "filter"),
        ({"eval": {"teacher": {"accuracy": "high"}}}, "eval.teacher.accuracy"),
        ({"train": {"loss_history": [{"step": 1, "loss": "nan-ish"}]}}, "train.loss_history.0.loss"),
        ({"run_dir": 5}, "run_dir"),
        ({"filter": {"funnel": [{"rule": "x", "in": 1, "dropped": "one", "kept": 0}]}}, "filter.funnel.0.dropped"),
    ],
)
def test_report_over_a_wrong_typed_summary(tmp_path, summary, field):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(summary))
    result = invoke("report", str(run))
    assert_one_error(result, f"{run / 'summary.json'}", f"field {field}")
    assert not (run / "report").exists()


def test_report_over_unreadable_summary(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_bytes(b'{"generate": {"prompts": 3\xff')
    assert_one_error(invoke("report", str(run)), f"{run / 'summary.json'}", "unreadable")


def test_report_leaves_out_a_wrong_typed_side_file_with_a_warning(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"run_dir": str(run)}))
    write_jsonl(run / "kept.jsonl", [make_sample("p1")])
    (run / "kept.report.json").write_text(json.dumps({"funnel": [{"rule": "x", "in": "many"}]}))
    result = invoke("report", str(run))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "kept.report.json" in result.stderr and "funnel.0" in result.stderr
    assert (run / "report" / "report.html").is_file()


# --- late failures: checked before any work ----------------------------------------------------------------------


def test_eval_without_references_fails_before_generating(tmp_path, server):
    prompts = write_jsonl(tmp_path / "heldout.jsonl", [{"id": "q0", "question": "What is 1 + 2?"}])
    output = tmp_path / "eval.jsonl"
    result = invoke("eval", "--prompts", str(prompts), "--model", MODEL, "--base-url", server.base_url,
                    "--output", str(output))  # fmt: skip
    assert_one_error(result, f"{prompts}", "no reference answers", "prompts.answer_field")
    assert server.chat_requests() == []
    assert not output.exists()


def _recipe(tmp_path: Path, server, **sections) -> Path:
    prompts = write_jsonl(tmp_path / "train.jsonl", prompt_rows(0, 4))
    heldout = write_jsonl(tmp_path / "heldout.jsonl", prompt_rows(10, 12))
    recipe = {
        "run_dir": str(tmp_path / "run"),
        "generate": {"backend": "openai", "model": MODEL, "base_url": server.base_url,
                     "prompts": {"source": str(prompts)}},
        "filter": {"check": "math"},
        "train": {"model": "bundled:smollm2", "epochs": 1},
        "eval": {"prompts": {"source": str(heldout)}, "check": "math"},
    }  # fmt: skip
    for key, value in sections.items():
        if value is None:
            recipe.pop(key)
        else:
            recipe[key] = {**recipe.get(key, {}), **value}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


LATE = {
    "no train section": ({"train": None}, ["train.model", "no student model"]),
    "unknown filter check": ({"filter": {"check": "nonsense"}}, ["unknown check 'nonsense'"]),
    "soft targets without logprobs": ({"train": {"kd_alpha": 0.5}}, ["train.kd_alpha", "generate.logprobs"]),
    "eval prompts without references": ({"eval": {"prompts": {"source": "NOREF"}}}, ["no reference answers"]),
    "missing student dir": ({"train": {"model": "/nowhere/student"}}, ["train.model", "no such model directory"]),
    "missing decontamination set": ({"filter": {"decontaminate": ["/nowhere/eval.jsonl"]}}, ["/nowhere/eval.jsonl"]),
}


@pytest.mark.parametrize("case", list(LATE))
def test_pipeline_refuses_a_recipe_that_would_fail_half_way_before_any_work(tmp_path, server, case):
    sections, needles = LATE[case]
    if case == "eval prompts without references":
        sections = {
            "eval": {"prompts": {"source": str(write_jsonl(tmp_path / "noref.jsonl", [{"question": "1+1?"}]))}}
        }
    result = invoke("run", "--config", str(_recipe(tmp_path, server, **sections)))
    assert_one_error(result, *needles)
    assert server.chat_requests() == []
    assert not (tmp_path / "run" / "samples.jsonl").exists()


# --- the last resort: an OSError no stage named -------------------------------------------------------------------


def test_a_stray_os_error_with_a_file_name_is_one_line():
    import errno

    import typer

    probe = typer.Typer()

    @probe.command()
    @command
    def boom() -> None:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), "/some/where.jsonl")

    result = CliRunner().invoke(probe, [])
    assert_one_error(result, "/some/where.jsonl", "Permission denied")
