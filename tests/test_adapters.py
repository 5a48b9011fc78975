"""Any dataset in: each public shape maps onto the record, in JSONL, Parquet and save_to_disk dirs alike.

Rows are shaped like the public datasets (tests/datasets_fixtures.py). The shape is detected once per file;
mixed shapes and unmappable rows are one error line naming the file, the row and the config key.
"""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from seqdistill.adapters import content_prompt_id, read_input
from seqdistill.cli import app
from seqdistill.config import FilterConfig, InputFormatConfig
from seqdistill.errors import ConfigError, DataError
from seqdistill.prompts import _prompt_id
from seqdistill.records import Message
from seqdistill.stages import filter
from tests import datasets_fixtures as fx
from tests.conftest import make_sample, read_jsonl, write_jsonl

runner = CliRunner()
KINDS = ["jsonl", "parquet", "dir", "dict"]


def _fmt(**fields) -> InputFormatConfig:
    return InputFormatConfig(fields=fields)


def _read(rows, tmp_path, kind="jsonl", fmt=None, name="data"):
    return list(read_input(fx.write_rows(rows, tmp_path / name, kind), fmt))


# ---- each shape -------------------------------------------------------------------------------------------------


def test_openr1_columns_give_one_sample_per_generation(tmp_path):
    samples = _read(fx.openr1_rows(), tmp_path, fmt=_fmt(**fx.OPENR1_FIELDS))
    assert len(samples) == 4
    first, second = samples[:2]
    assert first.prompt_id == second.prompt_id == "00000002-0000-4000-8000-000000000003"  # the uuid column
    assert [s.sample_index for s in samples] == [0, 1, 0, 1]
    assert [m.role for m in first.prompt] == ["user"] and first.prompt[0].content.startswith("What is 2 + 3?")
    assert first.completion[0].role == "assistant" and first.completion[0].content.endswith("\\boxed{5}.")
    assert second.completion[0].content.endswith("\\boxed{6}.")
    assert first.reference == "5" and first.finish_reason == "stop"
    assert first.teacher is None and first.sampling == {}
    # per-generation columns keep each sample's own value; the rest of the row is kept whole
    assert first.meta["source"]["correctness_math_verify"] is True
    assert second.meta["source"]["correctness_math_verify"] is False
    assert {"solution", "problem_type", "source", "messages", "correctness_count"} <= first.meta["source"].keys()
    assert "generations" not in first.meta["source"] and "problem" not in first.meta["source"]
    assert first.id != second.id


def test_openthoughts_sharegpt_with_system_column(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    samples = _read(fx.openthoughts_rows(), tmp_path)
    assert len(samples) == 3
    s = samples[0]
    assert [m.role for m in s.prompt] == ["system", "user"]
    assert s.prompt[0].content == fx.OPENTHOUGHTS_SYSTEM
    assert s.completion[0].role == "assistant" and "<|begin_of_solution|>" in s.completion[0].content
    assert s.reference is None and "source" not in s.meta  # nothing left over: system and conversations are mapped
    assert "ShareGPT conversations (detected from" in caplog.text


def test_classic_sharegpt_speakers_and_own_id(tmp_path):
    samples = _read(fx.sharegpt_rows(), tmp_path, fmt=_fmt(reference="gold"))
    assert [(m.role, m.content) for m in samples[0].prompt] == [("user", "What is 7 + 1?")]
    assert samples[0].id == "sharegpt-7"  # a row that is one sample keeps its own id
    assert samples[0].reference == "8"


def test_ultrachat_messages_multi_turn(tmp_path):
    rows = fx.ultrachat_rows()
    samples = _read(rows, tmp_path)
    s = samples[0]
    assert [m.role for m in s.prompt] == ["user", "assistant", "user"]  # the history is the prompt
    assert [(m.role, m.content) for m in s.completion] == [("assistant", "\\boxed{11}")]
    assert s.prompt_id == rows[0]["prompt_id"]  # the dataset's own prompt id
    assert s.meta["source"] == {"prompt": rows[0]["prompt"]}


def test_numina_messages_with_extra_columns(tmp_path):
    samples = _read(fx.numina_rows(), tmp_path)
    assert samples[0].completion[0].content.endswith("$\\boxed{23}$.")
    assert samples[0].meta["source"]["source"] == "synthetic_math"
    assert samples[0].prompt_id == content_prompt_id(samples[0].prompt)


def test_trl_prompt_completion_conversational_and_standard(tmp_path):
    conv = _read(fx.trl_prompt_completion_rows(), tmp_path, name="conv")
    assert conv[0].reference == "10" and conv[0].meta["source"] == {"difficulty": "easy"}
    std = _read(fx.trl_standard_rows(), tmp_path, name="std")
    assert [(m.role, m.content) for m in std[0].prompt + std[0].completion] == [
        ("user", "1 + 1 ="),
        ("assistant", " 2"),
    ]


def test_the_issue_example_a_prompt_completion_file_seqdistill_did_not_write(tmp_path):
    """Before: `teacher: Field required` at line 1; a row without prompt_id / sample_index or with a field of its own
    was refused too."""
    row = make_sample()
    for key in ("teacher", "prompt_id", "sample_index", "id", "usage", "sampling"):
        del row[key]
    row["my_field"] = {"team": "a"}
    samples = _read([row], tmp_path)
    assert samples[0].teacher is None and samples[0].meta["source"] == {"my_field": {"team": "a"}}


# ---- ids ---------------------------------------------------------------------------------------------------------


def test_ids_are_derived_from_content_and_stable(tmp_path):
    rows = fx.trl_prompt_completion_rows()
    once = _read(rows, tmp_path, name="a")
    again = _read(list(reversed(rows)), tmp_path, name="b")  # reordered rows: the same ids
    assert sorted(s.id for s in once) == sorted(s.id for s in again)
    assert len({s.id for s in once}) == 3
    # the prompt id is the one `generate` gives the same prompt
    messages = [{"role": "user", "content": "What is 5 + 5?"}]
    assert once[0].prompt_id == _prompt_id({}, messages, "id")
    assert content_prompt_id([Message(role="user", content="What is 5 + 5?")]) == once[0].prompt_id


def test_rows_of_one_prompt_are_numbered(tmp_path):
    rows = [
        {"prompt": "q", "completion": "a1"},
        {"prompt": "other", "completion": "b"},
        {"prompt": "q", "completion": "a2"},
    ]
    assert [s.sample_index for s in _read(rows, tmp_path)] == [0, 0, 1]


# ---- the same data in every container ------------------------------------------------------------------------------


CASES = {
    "openr1": (fx.openr1_rows, fx.OPENR1_FIELDS),
    "openthoughts": (fx.openthoughts_rows, {}),
    "sharegpt": (fx.sharegpt_rows, {"reference": "gold"}),
    "ultrachat": (fx.ultrachat_rows, {}),
    "numina": (fx.numina_rows, {}),
    "trl": (fx.trl_prompt_completion_rows, {}),
}


@pytest.mark.parametrize("kind", ["parquet", "dir", "dict"])
@pytest.mark.parametrize("case", list(CASES))
def test_parquet_and_saved_dirs_read_like_jsonl(case, kind, tmp_path):
    rows_fn, fields = CASES[case]
    want = [s.model_dump() for s in _read(rows_fn(), tmp_path, "jsonl", _fmt(**fields), "j")]
    got = [s.model_dump() for s in _read(rows_fn(), tmp_path, kind, _fmt(**fields), "k")]
    assert got == want


# ---- one error line ------------------------------------------------------------------------------------------------


def test_a_row_missing_a_mapped_column_names_file_row_and_key(tmp_path):
    rows = [{"problem": "q1", "generation": "a"}, {"problem": "q2", "output": "b"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as info:
        list(read_input(path, _fmt(prompt="problem", completion="generation")))
    message = str(info.value)
    assert message.startswith(f"{path} line 2: no 'generation' field")
    assert "set input_format.fields.completion" in message


def test_a_mapped_optional_column_that_is_absent_names_its_key(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", fx.trl_prompt_completion_rows())
    with pytest.raises(DataError, match=r"line 1: no column 'answer' \(named by input_format.fields.reference"):
        list(read_input(path, _fmt(reference="answer")))


def test_mixed_shapes_are_refused(tmp_path):
    rows = [fx.trl_prompt_completion_rows()[0], fx.sharegpt_rows()[0]]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(DataError) as info:
        list(read_input(path))
    assert str(info.value).startswith(
        f"{path} line 2: a ShareGPT conversations row in a file of TRL prompt-completion"
    )
    assert "one file holds one shape" in str(info.value)


def test_a_seqdistill_file_with_a_foreign_row_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [make_sample(), {"messages": fx.numina_rows()[0]["messages"]}])
    with pytest.raises(DataError, match="line 2: a TRL messages row in a file of seqdistill records"):
        list(read_input(path))


def test_unknown_shape_says_how_to_map_it(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError) as info:
        list(read_input(path))
    assert str(info.value) == (
        f"{path} line 1: cannot tell the dataset's shape (columns: answer, question): map its columns with "
        "input_format.fields.prompt and input_format.fields.completion (see docs/datasets.md)"
    )


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "'messages' has no assistant turn after its last user"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "'messages' has no user turn"),
        ({"conversations": [{"from": "function_call", "value": "x"}]}, "conversations[0].role: Input should be"),
        ({"prompt": [{"role": "user", "content": [{"type": "image"}]}], "completion": "a"}, "has a 'image' part"),
        ({"prompt": "q", "completion": "a", "usage": "lots"}, "line 1: usage: Input should be"),
    ],
)
def test_bad_rows_are_one_line_naming_the_field(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    with pytest.raises(DataError) as info:
        list(read_input(path))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_seqdistill_records_stay_strict(tmp_path):
    row = make_sample()
    row["unknown"] = 1
    path = write_jsonl(tmp_path / "kept.jsonl", [row])
    with pytest.raises(DataError, match="line 1: unknown: Extra inputs are not permitted"):
        list(read_input(path))


def test_config_keys_are_checked():
    with pytest.raises(ValueError, match="needs fields.prompt and fields.completion"):
        InputFormatConfig(shape="columns", fields={"prompt": "p"})
    with pytest.raises(ConfigError, match="unknown config key 'input_format.fields.completions'"):
        from seqdistill.config import load_stage

        load_stage("filter", None, None, ["input_format.fields.completions=x"])


def test_explicit_shape_overrides_detection(tmp_path):
    rows = [{"messages": fx.numina_rows()[0]["messages"], "prompt": "kept in meta", "completion": "not this"}]
    detected = _read(rows, tmp_path, name="a")[0]
    assert detected.completion[0].content == "not this"  # prompt + completion: TRL prompt-completion
    forced = _read(rows, tmp_path, fmt=InputFormatConfig(shape="messages"), name="b")[0]
    assert forced.completion[0].content.startswith("We add")


# ---- through the filter stage and the CLI --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_filter_reads_openr1_in_every_container(kind, tmp_path):
    source = fx.write_rows(fx.openr1_rows(), tmp_path / "openr1", kind)
    out = tmp_path / "kept.jsonl"
    report = filter.run(
        FilterConfig(input=source, output=str(out), check="math", input_format={"fields": fx.OPENR1_FIELDS})
    )
    assert (report["total"], report["kept"]) == (4, 3)  # one of four generations is wrong
    rejected = read_jsonl(tmp_path / "kept.rejected.jsonl")
    assert rejected[0]["meta"]["rejected"]["rule"] == "wrong_answer"
    assert rejected[0]["meta"]["source"]["correctness_math_verify"] is False  # the dataset's own verdict agrees


def test_cli_filter_on_a_trl_file_and_one_line_errors(tmp_path):
    good = write_jsonl(tmp_path / "trl.jsonl", fx.trl_prompt_completion_rows())
    result = runner.invoke(app, ["filter", str(good), "--output", str(tmp_path / "kept.jsonl"), "--check", "math"])
    assert result.exit_code == 0, result.output
    assert "2 kept" in result.output
    kept = read_jsonl(tmp_path / "kept.jsonl")
    assert kept[0]["teacher"] is None and kept[0]["meta"]["source"] == {"difficulty": "easy"}

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"problem": "q", "generation": "a"}])
    result = runner.invoke(
        app,
        [
            "filter",
            str(bad),
            "--set",
            "input_format.fields.prompt=problem",
            "--set",
            "input_format.fields.completion=output",
        ],
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert f"{bad} line 1: no 'output' field" in errors[0] and "input_format.fields.completion" in errors[0]


def test_default_output_of_a_hub_dataset_is_in_the_working_directory():
    assert FilterConfig(input="open-r1/OpenR1-Math-220k").output_path().as_posix() == "OpenR1-Math-220k.kept.jsonl"
    assert FilterConfig(input="runs/x/samples.jsonl").output_path().as_posix() == "runs/x/samples.kept.jsonl"


def test_a_hub_name_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["filter", "open-r1/OpenR1-Math-220k", "--output", str(tmp_path / "k.jsonl")])
    assert result.exit_code == 1
    assert "open-r1/OpenR1-Math-220k: cannot load hub dataset" in result.stderr
    assert "Traceback" not in result.output


def test_kept_output_of_an_imported_dataset_is_a_seqdistill_file(tmp_path):
    """What filter writes from an imported shape is read back strictly, with the same ids."""
    source = write_jsonl(tmp_path / "ot.jsonl", fx.openthoughts_rows())
    out = tmp_path / "kept.jsonl"
    filter.run(FilterConfig(input=str(source), output=str(out), check="none"))
    imported = {s.id for s in read_input(source)}
    kept = read_jsonl(out)
    assert {r["id"] for r in kept} == imported
    assert json.loads(out.read_text().splitlines()[0])["teacher"] is None
    assert [s.id for s in read_input(out)] == [r["id"] for r in kept]


# ---- filter -> train on a tiny real model ---------------------------------------------------------------------


TRAIN_CASES = [  # (case, container, check): every shape in some container, each through filter and train
    ("openr1", "parquet", "math"),
    ("openthoughts", "dir", "none"),
    ("sharegpt", "jsonl", "math"),
    ("ultrachat", "dict", "none"),
    ("numina", "parquet", "none"),
    ("trl", "dir", "math"),
]


@pytest.mark.parametrize(("case", "kind", "check"), TRAIN_CASES)
def test_each_shape_goes_through_filter_and_train(case, kind, check, tiny_model, tmp_path):
    import math

    from seqdistill.config import TrainConfig
    from seqdistill.stages import train

    rows_fn, fields = CASES[case]
    source = fx.write_rows(rows_fn(), tmp_path / case, kind)
    kept = tmp_path / "kept.jsonl"
    report = filter.run(FilterConfig(input=source, output=str(kept), check=check, input_format={"fields": fields}))
    assert 0 < report["kept"] <= report["total"]
    result = train.run(
        TrainConfig(input=str(kept), model=tiny_model, output=str(tmp_path / "student"), epochs=1, batch_size=2)
    )
    assert result["examples"] == report["kept"]
    assert math.isfinite(result["train_loss"]) and result["train_loss"] > 0


def test_train_reads_a_dataset_directly(tiny_model, tmp_path):
    """No filter, no conversion: train on an OpenR1-shaped Parquet file with its columns mapped."""
    from seqdistill.config import TrainConfig
    from seqdistill.stages import train

    source = fx.write_rows(fx.openr1_rows(), tmp_path / "openr1", "parquet")
    cfg = TrainConfig(
        input=source, model=tiny_model, output=str(tmp_path / "s"), epochs=1, batch_size=4,
        input_format={"fields": fx.OPENR1_FIELDS},
    )  # fmt: skip
    examples = train.load_examples(cfg.input, cfg.reasoning, fmt=cfg.input_format)
    assert len(examples) == 4
    assert examples[1]["completion"][0]["content"].endswith("\\boxed{6}.")
    assert train.run(cfg)["examples"] == 4


# ---- generate and eval answer a sample dataset's prompts again -------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "kind", "sent"),
    [
        (fx.trl_prompt_completion_rows, "parquet", [["user"]]),
        (fx.openthoughts_rows, "dir", [["system", "user"]]),
        (fx.ultrachat_rows, "jsonl", [["user", "assistant", "user"]]),  # the history, not the last answer
    ],
)
def test_generate_sends_only_the_prompt_of_a_sample_dataset(rows, kind, sent, tmp_path):
    from tests.fake_openai_server import FakeOpenAIServer

    source = fx.write_rows(rows(), tmp_path / "set", kind)
    with FakeOpenAIServer(models=["teacher"]) as server:
        result = runner.invoke(
            app,
            ["generate", "--backend", "openai", "--model", "teacher", "--base-url", server.base_url, "--prompts",
             source, "--output", str(tmp_path / "samples.jsonl")],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        bodies = [r["body"] for r in server.chat_requests()]
    assert len(bodies) == len(rows())
    assert [[m["role"] for m in b["messages"]] for b in bodies] == sent * len(rows())  # the old answer is not sent


def test_eval_on_a_trl_prompt_completion_set(tmp_path):
    from tests.fake_openai_server import FakeOpenAIServer

    source = write_jsonl(tmp_path / "heldout.jsonl", fx.trl_prompt_completion_rows())
    with FakeOpenAIServer(models=["teacher"]) as server:
        result = runner.invoke(
            app,
            ["eval", "--base-url", server.base_url, "--model", "teacher", "--prompts", str(source), "--check", "math",
             "--output", str(tmp_path / "eval.jsonl"), "--set", "prompts.answer_field=reference"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "eval.jsonl")
    got = sorted((r["prompt"][0]["content"], r["reference"]) for r in rows)  # answers arrive in any order
    assert got == [("What is 5 + 5?", "10"), ("What is 6 + 6?", "12"), ("What is 7 + 7?", "14")]


def test_score_plans_an_imported_dataset(tmp_path):
    """`seqdistill score` reads any shape too: the plan (what the teacher scores) of a ShareGPT Parquet file."""
    from seqdistill.config import ScoreConfig
    from seqdistill.stages import score

    source = fx.write_rows(fx.sharegpt_rows(), tmp_path / "sg", "parquet")
    cfg = ScoreConfig(input=source, model="teacher", input_format={"fields": {"reference": "gold"}})
    items, empty = score.plan(cfg, "teacher")
    assert empty == 0 and [i.sample.id for i in items] == ["sharegpt-7", "sharegpt-8", "sharegpt-9"]
    assert items[0].prompt == [{"role": "user", "content": "What is 7 + 1?"}]
