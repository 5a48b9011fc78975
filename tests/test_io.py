"""Tests for seqdistill.io: reading with file:line errors, crash-safe appends, atomic replacement."""

from __future__ import annotations

import json
import os

import pytest

from seqdistill.errors import DataError
from seqdistill.io import AtomicWriter, SampleWriter, iter_jsonl, read_samples, repair_tail, write_atomic, write_json
from seqdistill.records import Sample
from tests.conftest import make_sample, read_jsonl, write_jsonl


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_read_samples_yields_validated_samples_and_skips_blank_lines(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(
        json.dumps(make_sample("p1")) + "\n\n   \n" + json.dumps(make_sample("p2", text="7")) + "\n", encoding="utf-8"
    )
    samples = list(read_samples(path))
    assert [s.prompt_id for s in samples] == ["p1", "p2"]
    assert all(isinstance(s, Sample) for s in samples)
    assert samples[1].text == "7"


def test_iter_jsonl_reports_real_line_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(make_sample()) + "\n" + '{"id": "x", oops\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        list(read_samples(path))
    msg = str(e.value)
    assert "broken.jsonl" in msg
    assert "line 2" in msg
    assert "not valid JSON" in msg
    assert "\n" not in msg


def test_non_object_line_is_a_data_error(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"list\.jsonl line 1: expected a JSON object, got list"):
        list(iter_jsonl(path))


def test_schema_error_names_line_and_field(tmp_path):
    bad = make_sample("p2")
    del bad["completion"]
    path = write_jsonl(tmp_path / "s.jsonl", [make_sample("p1"), bad])
    with pytest.raises(DataError) as e:
        list(read_samples(path))
    msg = str(e.value)
    assert "s.jsonl line 2" in msg
    assert "completion" in msg


def test_nested_schema_error_names_dotted_field(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [make_sample(completion=[{"role": "robot", "content": "x"}])])
    with pytest.raises(DataError, match=r"line 1: completion\.0\.role"):
        list(read_samples(path))


def test_missing_file_is_a_clear_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file") as e:
        list(read_samples(tmp_path / "nope.jsonl"))
    assert "nope.jsonl" in str(e.value)


def test_directory_instead_of_file_is_a_clear_data_error(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        list(read_samples(tmp_path))


def test_repair_tail_removes_only_unterminated_last_line(tmp_path):
    path = tmp_path / "s.jsonl"
    complete = '{"a": 1}\n{"a": 2}\n'
    path.write_bytes(complete.encode() + b'{"a": 3, "trunc')
    removed = repair_tail(path)
    assert removed == len(b'{"a": 3, "trunc')
    assert path.read_text() == complete
    assert repair_tail(path) == 0  # idempotent
    assert path.read_text() == complete


def test_repair_tail_keeps_complete_file(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n')
    assert repair_tail(path) == 0
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'


def test_repair_tail_single_partial_line_and_long_tail(tmp_path):
    only = tmp_path / "only.jsonl"
    only.write_bytes(b'{"partial": ')
    assert repair_tail(only) == len(b'{"partial": ')
    assert only.read_bytes() == b""

    long_tail = tmp_path / "long.jsonl"  # tail longer than the 4 KiB scan chunk
    head = b'{"a": 1}\n'
    long_tail.write_bytes(head + b'{"x": "' + b"y" * 10_000)
    repair_tail(long_tail)
    assert long_tail.read_bytes() == head


def test_repair_tail_missing_or_empty_file(tmp_path):
    assert repair_tail(tmp_path / "absent.jsonl") == 0
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert repair_tail(empty) == 0


def test_sample_writer_appends_across_opens(tmp_path):
    path = tmp_path / "sub" / "samples.jsonl"  # parent is created
    with SampleWriter(path) as w:
        w.write(Sample.model_validate(make_sample("p1")))
        assert w.written == 1
    with SampleWriter(path, fsync_interval=0) as w:
        w.write(Sample.model_validate(make_sample("p2")))
        w.write(Sample.model_validate(make_sample("p3")))
        assert w.written == 2
    assert [r["prompt_id"] for r in read_jsonl(path)] == ["p1", "p2", "p3"]


def test_sample_writer_repairs_partial_tail_before_appending(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(make_sample("p1")) + "\n" + '{"id": "half', encoding="utf-8")
    with SampleWriter(path) as w:
        w.write(Sample.model_validate(make_sample("p2")))
    assert [s.prompt_id for s in read_samples(path)] == ["p1", "p2"]


def test_atomic_writer_replaces_on_success(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with AtomicWriter(path) as w:
        w.write("a")
        w.write("b")
        assert path.read_text() == "old\n"  # not visible before the block ends
    assert w.count == 2
    assert path.read_text() == "a\nb\n"
    assert _leftovers(tmp_path) == []


def test_atomic_writer_keeps_old_file_when_block_fails(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError, match="boom"):
        with AtomicWriter(path) as w:
            w.write("new")
            raise RuntimeError("boom")
    assert path.read_text() == "old\n"
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_atomic_keeps_old_file_when_lines_fail(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")

    def lines():
        yield "one"
        raise ValueError("generator failed")

    with pytest.raises(ValueError):
        write_atomic(path, lines())
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_atomic_new_file_and_count(tmp_path):
    path = tmp_path / "deep" / "dir" / "out.txt"
    assert write_atomic(path, ["x", "y", "z"]) == 3
    assert path.read_text() == "x\ny\nz\n"
    assert _leftovers(path.parent) == []


def test_failed_atomic_write_to_new_path_creates_nothing(tmp_path):
    path = tmp_path / "new.jsonl"
    with pytest.raises(KeyError):
        with AtomicWriter(path) as w:
            w.write("x")
            raise KeyError("k")
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_write_json_roundtrip(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"kept": 3, "name": "ünï"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"kept": 3, "name": "ünï"}


def test_atomic_writer_gives_normal_file_modes(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    new = tmp_path / "new.jsonl"
    write_atomic(new, ["x"])
    assert new.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    existing = tmp_path / "existing.jsonl"
    existing.write_text("old\n")
    existing.chmod(0o640)
    write_atomic(existing, ["y"])
    assert existing.stat().st_mode & 0o777 == 0o640
    assert existing.read_text() == "y\n"


def test_hub_dataset_unreachable_is_one_data_error(monkeypatch):
    """A hub name goes to datasets.load_dataset (with subset and split); offline, that is one clear DataError."""
    from seqdistill.io import read_table

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"^someone/no-such-dataset: cannot load hub dataset \("):
        list(read_table("someone/no-such-dataset", "train", "main"))
