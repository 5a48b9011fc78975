"""Tests for seqdistill.prompts: prompt sources, templates, teacher-only context, ids and references."""

from __future__ import annotations

import re

import pytest

from seqdistill.config import PromptsConfig
from seqdistill.errors import ConfigError, DataError
from seqdistill.prompts import extract_reference, load_prompts
from tests.conftest import write_jsonl

ROWS = [
    {"id": "q1", "question": "What is 2 + 3?", "answer": "5"},
    {"id": "q2", "question": "What is 10 - 4?", "answer": "6"},
    {"id": "q3", "question": "What is 3 * 3?", "answer": "9"},
]


@pytest.fixture(autouse=True)
def _datasets_cache_in_tmp(tmp_path, monkeypatch):
    """Keep `datasets`' Parquet cache out of the user's home."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def _load(source, **kw):
    return list(load_prompts(PromptsConfig(source=str(source), **kw)))


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------------------- JSONL basics


def test_question_answer_jsonl(tmp_path):
    items = _load(write_jsonl(tmp_path / "p.jsonl", ROWS))
    assert [i.id for i in items] == ["q1", "q2", "q3"]
    assert items[0].messages == _user("What is 2 + 3?")
    assert [i.reference for i in items] == ["5", "6", "9"]
    assert all(i.teacher_messages == i.messages for i in items)


def test_custom_field_names(tmp_path):
    rows = [{"uid": 7, "problem": "Add 1 and 1.", "solution": "2", "question": "ignored?"}]
    items = _load(
        write_jsonl(tmp_path / "p.jsonl", rows), question_field="problem", answer_field="solution", id_field="uid"
    )
    assert len(items) == 1
    assert items[0].id == "7"
    assert items[0].messages == _user("Add 1 and 1.")
    assert items[0].reference == "2"


def test_missing_answer_field_gives_no_reference(tmp_path):
    items = _load(write_jsonl(tmp_path / "p.jsonl", [{"question": "Say hi."}, {"question": "x", "answer": ""}]))
    assert [i.reference for i in items] == [None, None]


def test_gsm8k_marker_extraction_with_default_pattern(tmp_path):
    rows = [
        {"question": "Q1", "answer": "Natalia sold 48/2 = 24 clips in May.\n48 + 24 = 72\n#### 72"},
        {"question": "Q2", "answer": "Total is 1,000 dollars.\n####   1,000  "},
        {"question": "Q3", "answer": "  42 "},  # no marker: the whole (stripped) answer
        {"question": "Q4", "answer": 17},  # not a string
    ]
    items = _load(write_jsonl(tmp_path / "gsm8k.jsonl", rows))
    assert [i.reference for i in items] == ["72", "1,000", "42", "17"]


def test_extract_reference_pattern_none_and_custom():
    assert extract_reference("The answer: 12\n#### 12", None) == "The answer: 12\n#### 12"
    assert extract_reference("ANSWER=B", r"ANSWER=(\w)") == "B"
    assert extract_reference(None, r"####\s*(.+?)\s*$") is None


def test_messages_rows(tmp_path):
    rows = [
        {
            "id": "m1",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is 1 + 1?"},
            ],
            "answer": "2",
        }
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    items = _load(path)
    assert items[0].messages == rows[0]["messages"]
    assert items[0].reference == "2"
    # a configured system prompt replaces the row's own
    items = _load(path, system_prompt="Think step by step.")
    assert items[0].messages == [
        {"role": "system", "content": "Think step by step."},
        {"role": "user", "content": "What is 1 + 1?"},
    ]


def test_bad_messages_field_is_a_data_error(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"content": "no role"}]}])
    with pytest.raises(DataError, match=r"chat\.jsonl line 1: field 'messages' must be a list"):
        _load(path)


# ---------------------------------------------------------------------------- ids, duplicates, limit


def test_content_hash_ids_are_stable_across_reorder(tmp_path):
    rows = [{"question": r["question"], "answer": r["answer"]} for r in ROWS]
    forward = _load(write_jsonl(tmp_path / "a.jsonl", rows))
    backward = _load(write_jsonl(tmp_path / "b.jsonl", rows[::-1]))
    assert all(re.fullmatch(r"p-[0-9a-f]{16}", i.id) for i in forward)
    assert len({i.id for i in forward}) == 3
    assert {i.messages[0]["content"]: i.id for i in forward} == {i.messages[0]["content"]: i.id for i in backward}


def test_content_hash_id_depends_on_rendering(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "What is 2 + 3?"}])
    plain = _load(path)[0].id
    assert _load(path)[0].id == plain
    assert _load(path, system_prompt="Be brief.")[0].id != plain


def test_empty_id_falls_back_to_hash(tmp_path):
    items = _load(write_jsonl(tmp_path / "p.jsonl", [{"id": "", "question": "Q?"}, {"id": None, "question": "R?"}]))
    assert all(i.id.startswith("p-") for i in items)


def test_repeated_content_without_id_is_one_prompt(tmp_path, caplog):
    rows = [
        {"question": "Same?", "answer": "1"},
        {"question": "Other?", "answer": "2"},
        {"question": "Same?", "answer": "1"},  # same content, no id: same hash, the same prompt
    ]
    items = _load(write_jsonl(tmp_path / "p.jsonl", rows))
    assert [i.messages[0]["content"] for i in items] == ["Same?", "Other?"]
    assert "line 3: same content as" in caplog.text and "line 1" in caplog.text


def test_duplicate_explicit_id_is_one_line_naming_both_rows(tmp_path):
    rows = [
        {"id": "x", "question": "First x", "answer": "3"},
        {"id": "y", "question": "Other", "answer": "4"},
        {"id": "x", "question": "Second x", "answer": "5"},  # same explicit id, other content
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError) as info:
        _load(path)
    message = str(info.value)
    assert message.startswith(f"{path} line 3: duplicate prompt id 'x' (first at {path} line 1)")
    assert "\n" not in message


def test_same_id_and_same_content_is_still_a_duplicate_id(tmp_path):
    rows = [{"id": "x", "question": "Q", "answer": "1"}, {"id": "x", "question": "Q", "answer": "1"}]
    with pytest.raises(DataError, match="line 2: duplicate prompt id 'x'"):
        _load(write_jsonl(tmp_path / "p.jsonl", rows))


def test_lone_surrogate_in_a_prompt_is_one_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "question": "fine"}\n{"id": "b", "question": "bad \\ud800 text"}\n')
    with pytest.raises(DataError, match=r"line 2: holds \\ud800, a lone surrogate"):
        _load(path)


def test_limit_counts_distinct_prompts(tmp_path):
    rows = [{"question": "A"}, {"question": "A"}, {"question": "B"}, {"question": "C"}]
    items = _load(write_jsonl(tmp_path / "p.jsonl", rows), limit=2)
    assert [i.messages[0]["content"] for i in items] == ["A", "B"]


def test_limit_stops_before_reading_bad_rows(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "A"}\n{"question": "B"}\nnot json\n', encoding="utf-8")
    assert len(_load(path, limit=2)) == 2
    with pytest.raises(DataError, match="line 3"):
        _load(path)


def test_no_source_is_a_config_error():
    with pytest.raises(ConfigError, match="no prompt source"):
        list(load_prompts(PromptsConfig()))


def test_missing_question_field_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [ROWS[0], {"id": "q9", "prompt": "wrong field"}])
    with pytest.raises(DataError) as e:
        _load(path)
    msg = str(e.value)
    assert "p.jsonl line 2" in msg
    assert "'question'" in msg
    assert "fields: id, prompt" in msg


def test_missing_source_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        _load(tmp_path / "absent.jsonl")


# ---------------------------------------------------------------------------- templates


def test_jinja_template_file(tmp_path):
    template = tmp_path / "q.jinja"
    template.write_text("Solve: {{ question }}\nPut the answer in \\boxed{}.\n", encoding="utf-8")
    items = _load(write_jsonl(tmp_path / "p.jsonl", ROWS[:1]), template=str(template))
    assert items[0].messages == _user("Solve: What is 2 + 3?\nPut the answer in \\boxed{}.")


def test_inline_template_uses_other_row_fields(tmp_path):
    rows = [{"question": "What is 2 + 3?", "topic": "addition"}]
    items = _load(write_jsonl(tmp_path / "p.jsonl", rows), template="[{{ topic }}] {{ question | upper }}")
    assert items[0].messages == _user("[addition] WHAT IS 2 + 3?")


def test_template_with_field_the_row_lacks(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "Q"}])
    with pytest.raises(DataError, match=r"p\.jsonl line 1: template needs a field"):
        _load(path, template="{{ question }} {{ topic }}")


def test_missing_template_file_and_syntax_error(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "Q"}])
    with pytest.raises(ConfigError, match="no such file"):
        _load(path, template=str(tmp_path / "absent.jinja"))
    with pytest.raises(ConfigError, match="line 1"):
        _load(path, template="{{ question ")


# ---------------------------------------------------------------------------- teacher-only context


def test_teacher_context_is_teacher_only(tmp_path):
    examples = write_jsonl(
        tmp_path / "worked.jsonl",
        [
            {"question": "What is 1 + 1?", "completion": "1 + 1 = 2. \\boxed{2}"},
            {"question": "What is 4 - 2?", "completion": "4 - 2 = 2. \\boxed{2}"},
        ],
    )
    items = _load(
        write_jsonl(tmp_path / "p.jsonl", ROWS[:2]),
        system_prompt="Student system.",
        teacher_system_prompt="Teacher system.",
        teacher_template="Think carefully. {{ question }}",
        teacher_examples=str(examples),
    )
    first = items[0]
    assert first.messages == [
        {"role": "system", "content": "Student system."},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    assert first.teacher_messages == [
        {"role": "system", "content": "Teacher system."},
        {"role": "user", "content": "Think carefully. What is 1 + 1?"},
        {"role": "assistant", "content": "1 + 1 = 2. \\boxed{2}"},
        {"role": "user", "content": "Think carefully. What is 4 - 2?"},
        {"role": "assistant", "content": "4 - 2 = 2. \\boxed{2}"},
        {"role": "user", "content": "Think carefully. What is 2 + 3?"},
    ]
    student_text = " ".join(m["content"] for i in items for m in i.messages)
    assert "Teacher system." not in student_text
    assert "Think carefully" not in student_text
    assert "1 + 1 = 2" not in student_text
    assert all(m["role"] != "assistant" for i in items for m in i.messages)
    # the id is the student's, so it does not change with the teacher's context
    plain = _load(write_jsonl(tmp_path / "plain.jsonl", [{"question": "Q?"}]), system_prompt="Student system.")
    with_teacher = _load(tmp_path / "plain.jsonl", system_prompt="Student system.", teacher_examples=str(examples))
    assert plain[0].id == with_teacher[0].id


def test_teacher_defaults_to_student_rendering(tmp_path):
    examples = write_jsonl(tmp_path / "worked.jsonl", [{"question": "E?", "completion": "e"}])
    items = _load(
        write_jsonl(tmp_path / "p.jsonl", ROWS[:1]),
        system_prompt="Shared system.",
        template="Q: {{ question }}",
        teacher_examples=str(examples),
    )
    assert items[0].messages == [
        {"role": "system", "content": "Shared system."},
        {"role": "user", "content": "Q: What is 2 + 3?"},
    ]
    assert items[0].teacher_messages == [
        {"role": "system", "content": "Shared system."},
        {"role": "user", "content": "Q: E?"},
        {"role": "assistant", "content": "e"},
        {"role": "user", "content": "Q: What is 2 + 3?"},
    ]


def test_worked_example_without_completion(tmp_path):
    examples = write_jsonl(tmp_path / "worked.jsonl", [{"question": "E?", "answer": "e"}])
    with pytest.raises(DataError, match=r"worked\.jsonl line 1: worked example needs 'question' and 'completion'"):
        _load(write_jsonl(tmp_path / "p.jsonl", ROWS[:1]), teacher_examples=str(examples))


# ---------------------------------------------------------------------------- Parquet and datasets dirs


def test_parquet_source(tmp_path):
    import datasets

    path = tmp_path / "p.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    items = _load(path)
    assert [i.id for i in items] == ["q1", "q2", "q3"]
    assert items[1].messages == _user("What is 10 - 4?")
    assert items[2].reference == "9"


def test_parquet_row_errors_name_the_row(tmp_path):
    import datasets

    path = tmp_path / "p.parquet"
    datasets.Dataset.from_list([{"text": "a"}, {"text": "b"}]).to_parquet(str(path))
    with pytest.raises(DataError, match=r"p\.parquet row 0: no 'question'"):
        _load(path)


def test_corrupt_parquet_is_a_data_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_text("not parquet at all")
    with pytest.raises(DataError, match=r"bad\.parquet: cannot read Parquet"):
        _load(path)


def test_saved_dataset_dir(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    items = _load(tmp_path / "ds")
    assert [i.id for i in items] == ["q1", "q2", "q3"]
    assert items[0].reference == "5"


def test_saved_dataset_dict_with_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert [i.id for i in _load(tmp_path / "dd")] == ["q1", "q2"]  # default split: train
    assert [i.id for i in _load(tmp_path / "dd", split="test")] == ["q3"]
    with pytest.raises(DataError, match=r"no split 'validation' \(has: train, test\)"):
        _load(tmp_path / "dd", split="validation")


def test_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a saved dataset dir"):
        _load(tmp_path / "empty")


def test_missing_local_source_with_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        _load(tmp_path / "prompts.csv")


def test_row_fields_named_like_python_keywords_render(tmp_path):
    items = _load(write_jsonl(tmp_path / "p.jsonl", [{"question": "Q?", "self": 1, "class": "x"}]))
    assert items[0].messages == _user("Q?")
