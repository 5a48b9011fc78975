"""export: each format loads back with `datasets.load_dataset(DIR)` (offline) with the right rows and columns;
splits are seeded and share no prompt; a push without network is one line and writes nothing."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqdistill.adapters import read_input
from seqdistill.cli import app
from seqdistill.config import ExportConfig, FilterConfig
from seqdistill.errors import ConfigError
from seqdistill.stages import export, filter
from tests import datasets_fixtures as fx
from tests.conftest import make_sample, read_jsonl, write_jsonl

runner = CliRunner()
RECORD_COLUMNS = {
    "id", "prompt_id", "sample_index", "prompt", "completion", "reference", "finish_reason", "usage", "teacher",
    "sampling", "meta",
}  # fmt: skip


def _kept(tmp_path: Path, prompts: int = 10, per_prompt: int = 2) -> Path:
    """A kept file as filter writes it (with its report beside it), one with logprobs and a reasoning trace."""
    rows = []
    for p in range(prompts):
        for i in range(per_prompt):
            row = make_sample(f"p{p}", i, f"{p} + {i} = {p + i}. \\boxed{{{p + i}}}", reference=str(p + i))
            rows.append(row)
    rows[0]["completion"][0]["reasoning_content"] = "add them"
    rows[1]["meta"] = {"logprobs": {"tokens": ["a"], "logprobs": [-0.5], "top": [[["a", -0.5], ["b", -1.5]]]}}
    samples = write_jsonl(tmp_path / "run" / "samples.jsonl", rows)
    kept = tmp_path / "run" / "kept.jsonl"
    filter.run(FilterConfig(input=str(samples), output=str(kept), check="math"))
    return kept


def _load(folder: Path):
    import datasets

    datasets.disable_progress_bars()
    return datasets.load_dataset(str(folder))


def test_parquet_is_the_records_and_loads_back(tmp_path):
    kept = _kept(tmp_path)
    result = export.run(ExportConfig(input=str(kept), to=str(tmp_path / "out")))
    assert result.splits == {"train": 20}
    ds = _load(tmp_path / "out")
    assert list(ds) == ["train"] and ds["train"].num_rows == 20
    assert set(ds["train"].column_names) == RECORD_COLUMNS | {"tools"}  # every record field is a Parquet column
    originals = {r["id"]: r for r in read_jsonl(kept)}
    for row in ds["train"]:
        original = originals[row["id"]]
        for part in ("prompt", "completion"):  # a Parquet struct has every message field; unset ones are null
            assert _set(row[part]) == _set(original[part])
        assert row["meta"] == original["meta"] and row["teacher"] == original["teacher"]
    # read back by seqdistill too: the same records
    assert [s.model_dump() for s in read_input(result.files[0])] == [s.model_dump() for s in read_input(kept)]


def _set(messages):
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


@pytest.mark.parametrize("fmt", ["jsonl", "messages", "sharegpt"])
def test_each_format_loads_back_with_its_columns(fmt, tmp_path):
    kept = _kept(tmp_path)
    export.run(ExportConfig(input=str(kept), to=str(tmp_path / "out"), format=fmt))
    train = _load(tmp_path / "out")["train"]
    assert train.num_rows == 20
    first = read_jsonl(kept)[0]
    row = next(r for r in train if r["id"] == first["id"])
    if fmt == "jsonl":
        assert set(train.column_names) == RECORD_COLUMNS
        assert (tmp_path / "out" / "data" / "train.jsonl").read_text().splitlines() == kept.read_text().splitlines()
    elif fmt == "messages":
        assert set(train.column_names) == {"messages", "id", "reference"}
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][1]["content"] == "<think>\nadd them\n</think>\n\n" + first["completion"][0]["content"]
    else:
        assert set(train.column_names) == {"conversations", "id", "reference"}
        assert [t["from"] for t in row["conversations"]] == ["human", "gpt"]
        assert row["conversations"][0]["value"] == first["prompt"][0]["content"]
    assert row["reference"] == first["reference"]


@pytest.mark.parametrize("fmt", ["messages", "sharegpt"])
def test_exported_shapes_come_back_through_the_adapters(fmt, tmp_path):
    kept = _kept(tmp_path)
    result = export.run(ExportConfig(input=str(kept), to=str(tmp_path / "out"), format=fmt))
    back = {s.id: s for s in read_input(result.files[0])}
    for s in read_input(kept):
        assert back[s.id].prompt == s.prompt and back[s.id].reference == s.reference


def test_splits_are_seeded_and_share_no_prompt(tmp_path):
    kept = _kept(tmp_path, prompts=10, per_prompt=2)
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        result = export.run(ExportConfig(input=str(kept), to=str(tmp_path / name), test_size=0.2, seed=seed))
        assert result.splits == {"train": 16, "test": 4}  # 2 of 10 prompts, with both samples each
        ds = _load(tmp_path / name)
        train, test = ({r["prompt_id"] for r in ds[s]} for s in ("train", "test"))
        assert len(test) == 2 and not train & test
        assert {r["id"] for r in ds["train"]} | {r["id"] for r in ds["test"]} == {r["id"] for r in read_jsonl(kept)}
        runs[name] = test
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]  # for these ids, seeds 1 and 2 pick other prompts


def test_the_card_names_the_files_and_tells_how_it_was_made(tmp_path):
    kept = _kept(tmp_path)
    export.run(ExportConfig(input=str(kept), to=str(tmp_path / "out"), format="sharegpt", test_size=0.1))
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Files: `data/train.jsonl`, `data/test.jsonl`." in card
    assert "configs:" not in card  # datasets would key its cache on them and load stale copies (see front_matter)
    assert "| wrong_answer |" in card  # the filter funnel, from kept.report.json beside the input
    assert "Teacher: teacher (openai)" in card and "ShareGPT `conversations`" in card
    assert export.EXPORT_MARKER in card


def test_an_existing_folder_is_refused_unless_it_is_an_earlier_export(tmp_path):
    kept = _kept(tmp_path)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        export.run(ExportConfig(input=str(kept), to=str(other)))
    with pytest.raises(ConfigError, match="was not written by seqdistill export"):
        export.run(ExportConfig(input=str(kept), to=str(other), overwrite=True))
    assert (other / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    export.run(ExportConfig(input=str(kept), to=str(out), format="jsonl"))
    assert "prompt" in _load(out)["train"].column_names
    export.run(ExportConfig(input=str(kept), to=str(out), format="messages", overwrite=True))
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train.jsonl"]
    assert _load(out)["train"].column_names == ["messages", "id", "reference"]  # the new files, not a cached copy
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary folder left


def test_export_reads_any_shape(tmp_path):
    """A converter too: an OpenThoughts-shaped Parquet file out as TRL messages."""
    source = fx.write_rows(fx.openthoughts_rows(), tmp_path / "ot", "parquet")
    export.run(ExportConfig(input=source, to=str(tmp_path / "out"), format="messages"))
    row = _load(tmp_path / "out")["train"][0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert "Samples from ot.parquet" in (tmp_path / "out" / "README.md").read_text()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:{port}"}, "cannot reach http://127.0.0.1:{port}"),
    ],
)
def test_push_without_network_is_one_line_and_writes_nothing(env, expected, tmp_path, monkeypatch):
    kept = _kept(tmp_path)
    port = _closed_port()
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(port=port))
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", str(kept), "--to", str(out), "--push-to-hub", "me/distilled"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: --push-to-hub me/distilled: ")
    assert expected.format(port=port) in errors[0] and "nothing was written" in errors[0]
    assert "Traceback" not in result.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_export_and_recipe_section(tmp_path):
    kept = _kept(tmp_path)
    result = runner.invoke(app, ["export", str(kept), "--to", str(tmp_path / "o"), "--format", "messages",
                                 "--test-size", "0.2", "--seed", "3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "export (messages) -> " in result.output and "train 16, test 4" in result.output
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"run_dir: {tmp_path / 'run'}\nexport:\n  format: sharegpt\n")
    result = runner.invoke(app, ["export", "--config", str(recipe), "--to", str(tmp_path / "o2")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o2" / "data" / "train.jsonl").read_text().splitlines()[0])["conversations"]
    result = runner.invoke(app, ["export", str(kept)])
    assert result.exit_code == 1 and "export needs a folder to write: --to DIR" in result.stderr
