"""Tests for the filter stage: funnel counts per rule, outputs, determinism, and CLI error handling."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from seqdistill.cli import app
from seqdistill.config import FilterConfig
from seqdistill.errors import ConfigError, DataError
from seqdistill.stages import filter as filter_stage
from tests.conftest import make_sample, read_jsonl, write_jsonl

# One sample per rule, in input order; K = 2 per prompt.
CRAFTED = [
    make_sample("p1", 0, "The answer is \\boxed{42}."),  # kept
    make_sample("p1", 1, "   "),  # malformed: empty completion
    make_sample("p1", 2, "Long working ... so \\boxed{42}", finish_reason="length"),  # truncated
    make_sample("p1", 3, "I get \\boxed{41}."),  # wrong answer
    make_sample("p1", 4, "the  ANSWER is \\boxed{42}. "),  # duplicate of sample 0 after normalisation
    make_sample("p1", 5, "6 * 7 = \\boxed{42}"),  # kept (2nd for p1)
    make_sample("p1", 6, "Hence \\boxed{42}"),  # max_per_prompt: 3rd correct sample for p1
    make_sample("p2", 0, "It is \\boxed{7}.", reference=None),  # unverifiable: no reference
    make_sample("p3", 0, "It is \\boxed{7}.", reference="7"),  # kept
    make_sample("p3", 1, "x", completion=[]),  # malformed: no assistant message
]
KEPT_IDS = [CRAFTED[i]["id"] for i in (0, 5, 8)]
EXPECTED_FUNNEL = [
    # rule, in, dropped, kept
    ("malformed", 10, 2, 8),
    ("truncated", 8, 1, 7),
    ("think", 7, 0, 7),  # always on: drops only an unclosed <think>
    ("refusal", 7, 0, 7),  # on by default
    ("wrong_answer", 7, 1, 6),
    ("unverifiable", 6, 1, 5),
    ("duplicate", 5, 1, 4),
    ("max_per_prompt", 4, 1, 3),
]
REJECT_RULES = {
    CRAFTED[1]["id"]: "malformed",
    CRAFTED[2]["id"]: "truncated",
    CRAFTED[3]["id"]: "wrong_answer",
    CRAFTED[4]["id"]: "duplicate",
    CRAFTED[6]["id"]: "max_per_prompt",
    CRAFTED[7]["id"]: "unverifiable",
    CRAFTED[9]["id"]: "malformed",
}


@pytest.fixture
def samples(tmp_path):
    return write_jsonl(tmp_path / "samples.jsonl", CRAFTED)


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("SEQDISTILL_DEBUG", raising=False)


def _funnel(report):
    return [(r["rule"], r["in"], r["dropped"], r["kept"]) for r in report["funnel"]]


def _run(samples, out, **kw):
    return filter_stage.run(FilterConfig(input=str(samples), output=str(out), **kw))


def test_funnel_counts_per_rule_in_order(samples, tmp_path):
    out = tmp_path / "kept.jsonl"
    report = _run(samples, out, check="math", max_per_prompt=2)
    assert _funnel(report) == EXPECTED_FUNNEL
    assert (report["total"], report["kept"]) == (10, 3)
    assert report["answer_check"] == {"name": "math", "correct": 5, "wrong": 1, "unverifiable": 1}


def test_kept_rejected_and_report_files(samples, tmp_path):
    out = tmp_path / "kept.jsonl"
    report = _run(samples, out, check="math", max_per_prompt=2)

    kept = read_jsonl(out)
    assert [r["id"] for r in kept] == KEPT_IDS
    for row, original in zip(kept, (CRAFTED[0], CRAFTED[5], CRAFTED[8]), strict=True):
        assert row["completion"] == original["completion"]
        assert [{"role": m["role"], "content": m["content"]} for m in row["prompt"]] == original["prompt"]
        assert row["meta"]["check"]["name"] == "math"
        assert row["meta"]["check"]["result"] == "correct"
        assert "rejected" not in row["meta"]

    rejected_path = tmp_path / "kept.rejected.jsonl"
    report_path = tmp_path / "kept.report.json"
    rejected = read_jsonl(rejected_path)
    assert {r["id"]: r["meta"]["rejected"]["rule"] for r in rejected} == REJECT_RULES
    assert len(rejected) == len(REJECT_RULES)
    assert all(r["meta"]["rejected"]["reason"].strip() for r in rejected)
    by_id = {r["id"]: r for r in rejected}
    assert by_id[CRAFTED[1]["id"]]["meta"]["rejected"]["reason"] == "empty completion"
    assert "length" in by_id[CRAFTED[2]["id"]]["meta"]["rejected"]["reason"]
    assert "41" in by_id[CRAFTED[3]["id"]]["meta"]["rejected"]["reason"]
    assert by_id[CRAFTED[7]["id"]]["meta"]["rejected"]["reason"] == "no reference answer"

    on_disk = json.loads(report_path.read_text(encoding="utf-8"))
    assert on_disk == report.to_json()
    assert on_disk["output"] == str(out)
    assert on_disk["rejected"] == str(rejected_path)
    assert on_disk["report"] == str(report_path)
    wrong = next(r for r in on_disk["funnel"] if r["rule"] == "wrong_answer")
    assert wrong["examples"] == [
        {"id": CRAFTED[3]["id"], "reason": wrong["examples"][0]["reason"], "completion": "I get \\boxed{41}."}
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kept.jsonl",
        "kept.rejected.jsonl",
        "kept.report.json",
        "samples.jsonl",
    ]  # no temp files left behind


def test_default_output_name(samples, tmp_path):
    report = filter_stage.run(FilterConfig(input=str(samples)))
    assert report["output"] == str(tmp_path / "samples.kept.jsonl")
    assert (tmp_path / "samples.kept.jsonl").exists()
    assert (tmp_path / "samples.kept.rejected.jsonl").exists()
    assert (tmp_path / "samples.kept.report.json").exists()


def test_check_none_skips_answer_checking(samples, tmp_path):
    out = tmp_path / "kept.jsonl"
    report = _run(samples, out, check="none")
    assert _funnel(report) == [
        ("malformed", 10, 2, 8),
        ("truncated", 8, 1, 7),
        ("think", 7, 0, 7),
        ("refusal", 7, 0, 7),
        ("duplicate", 7, 1, 6),
    ]
    assert report["answer_check"] == {"name": "none"}
    kept = read_jsonl(out)
    # the wrong and the unverifiable samples are kept; no check is recorded
    assert [r["id"] for r in kept] == [CRAFTED[i]["id"] for i in (0, 3, 5, 6, 7, 8)]
    assert all("check" not in r["meta"] for r in kept)


def test_keep_unverifiable(samples, tmp_path):
    out = tmp_path / "kept.jsonl"
    report = _run(samples, out, check="math", keep_unverifiable=True)
    rows = {r[0]: r for r in _funnel(report)}
    assert rows["unverifiable"] == ("unverifiable", 6, 0, 6)
    assert "max_per_prompt" not in rows
    kept = {r["id"]: r for r in read_jsonl(out)}
    assert CRAFTED[7]["id"] in kept
    assert kept[CRAFTED[7]["id"]]["meta"]["check"]["result"] == "unverifiable"
    assert report["kept"] == len(kept) == 5  # 0, 5, 6, 7, 8


def test_max_per_prompt(samples, tmp_path):
    out = tmp_path / "kept.jsonl"
    report = _run(samples, out, check="math", max_per_prompt=1)
    assert _funnel(report)[-1] == ("max_per_prompt", 4, 2, 2)
    kept = read_jsonl(out)
    assert [r["id"] for r in kept] == [CRAFTED[0]["id"], CRAFTED[8]["id"]]  # the first kept per prompt wins


def test_dedup_and_truncation_can_be_disabled(samples, tmp_path):
    out = tmp_path / "kept.jsonl"
    report = _run(samples, out, check="none", dedup=False, drop_truncated=False)
    assert _funnel(report) == [("malformed", 10, 2, 8), ("think", 8, 0, 8), ("refusal", 8, 0, 8)]
    assert report["kept"] == 8


def test_rerun_is_byte_identical(samples, tmp_path):
    out = tmp_path / "kept.jsonl"
    names = ("kept.jsonl", "kept.rejected.jsonl", "kept.report.json")
    _run(samples, out, check="math", max_per_prompt=2)
    first = {n: (tmp_path / n).read_bytes() for n in names}
    _run(samples, out, check="math", max_per_prompt=2)
    assert {n: (tmp_path / n).read_bytes() for n in names} == first


def test_kept_file_loads_with_datasets(samples, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    out = tmp_path / "kept.jsonl"
    _run(samples, out, check="math", max_per_prompt=2)
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert ds.num_rows == 3
    assert {"prompt", "completion"} <= set(ds.column_names)
    assert ds[0]["prompt"][0]["role"] == "user"
    assert ds[0]["completion"][0]["content"] == "The answer is \\boxed{42}."


def test_output_equal_to_input_is_an_error(samples):
    with pytest.raises(ConfigError, match="would overwrite the input file"):
        _run(samples, samples)


def test_side_file_equal_to_input_is_an_error(tmp_path):
    samples = write_jsonl(tmp_path / "kept.rejected.jsonl", CRAFTED)
    before = samples.read_bytes()
    with pytest.raises(ConfigError, match="the input file"):
        _run(samples, tmp_path / "kept.jsonl")
    assert samples.read_bytes() == before


def test_missing_input_and_unknown_check(tmp_path, samples):
    with pytest.raises(ConfigError, match="needs an input file"):
        filter_stage.run(FilterConfig())
    with pytest.raises(DataError, match="no such file"):
        filter_stage.run(FilterConfig(input=str(tmp_path / "absent.jsonl")))
    with pytest.raises(ConfigError, match="unknown check 'maths'"):
        _run(samples, tmp_path / "kept.jsonl", check="maths")


def test_bad_line_keeps_previous_outputs(tmp_path):
    out = tmp_path / "kept.jsonl"
    good = write_jsonl(tmp_path / "samples.jsonl", CRAFTED[:2])
    _run(good, out)
    previous = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    good.write_text(json.dumps(CRAFTED[0]) + "\n{broken\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        _run(good, out)
    now = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "samples.jsonl"}
    assert now == {k: v for k, v in previous.items() if k != "samples.jsonl"}


# ---------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_filter(samples, tmp_path):
    out = tmp_path / "kept.jsonl"
    result = runner.invoke(
        app, ["filter", str(samples), "--output", str(out), "--check", "math", "--set", "max_per_prompt=2"]
    )
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_jsonl(out)] == KEPT_IDS
    report = json.loads((tmp_path / "kept.report.json").read_text())
    assert _funnel(report) == EXPECTED_FUNNEL
    assert "10 in, 3 kept" in result.stdout
    assert str(tmp_path / "kept.rejected.jsonl") in result.stdout.replace("\n", "")


def test_cli_check_none(samples, tmp_path):
    out = tmp_path / "kept.jsonl"
    result = runner.invoke(app, ["filter", str(samples), "--output", str(out), "--check", "none"])
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(out)) == 6


def test_cli_malformed_line_exits_1_with_one_line_and_keeps_output(tmp_path):
    bad = tmp_path / "in.jsonl"
    bad.write_text(json.dumps(CRAFTED[0]) + "\n" + '{"id": "x",\n', encoding="utf-8")
    out = tmp_path / "kept.jsonl"
    out.write_text("previous output\n", encoding="utf-8")
    result = runner.invoke(app, ["filter", str(bad), "--output", str(out), "--check", "math"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert f"{bad} line 2" in lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert out.read_text(encoding="utf-8") == "previous output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "kept.jsonl"]


def test_cli_schema_error_names_field(tmp_path):
    row = make_sample()
    del row["completion"]
    bad = write_jsonl(tmp_path / "in.jsonl", [row])
    result = runner.invoke(app, ["filter", str(bad), "--output", str(tmp_path / "k.jsonl")])
    assert result.exit_code == 1
    assert "line 1: completion" in result.stderr
    assert "Traceback" not in result.output


def test_cli_output_equal_to_input(samples):
    before = samples.read_bytes()
    result = runner.invoke(app, ["filter", str(samples), "--output", str(samples)])
    assert result.exit_code == 1
    assert "would overwrite the input file" in result.stderr
    assert samples.read_bytes() == before


def test_cli_missing_input(tmp_path):
    result = runner.invoke(app, ["filter", str(tmp_path / "absent.jsonl")])
    assert result.exit_code == 1
    assert "no such file" in result.stderr
    assert "Traceback" not in result.output


# --- selection policies and pass rate ----------------------------------------------------------------


def _prompt_samples() -> list[dict]:
    """Prompt p1: 5 samples (4 correct, of lengths 40, 13, 25, 31; one wrong); p2: 2 correct."""
    texts = ["x" * 29 + " \\boxed{42}", "\\boxed{42} ok", "y" * 14 + " \\boxed{42}", "z" * 20 + " \\boxed{42}"]
    rows = [make_sample("p1", i, t, id=f"p1-{i}") for i, t in enumerate(texts)]
    rows.append(make_sample("p1", 4, "\\boxed{41}", id="p1-4"))
    rows += [make_sample("p2", i, f"{'w' * i} \\boxed{{42}}", id=f"p2-{i}") for i in range(2)]
    return rows


@pytest.mark.parametrize(
    ("selection", "expected_p1"),
    [("first", ["p1-0", "p1-1"]), ("shortest", ["p1-1", "p1-2"])],
)
def test_selection_policy_keeps_k_per_prompt_in_input_order(tmp_path, selection, expected_p1):
    src = write_jsonl(tmp_path / "s.jsonl", _prompt_samples())
    out = tmp_path / "kept.jsonl"
    report = filter_stage.run(
        FilterConfig(input=str(src), output=str(out), check="math", max_per_prompt=2, selection=selection)
    )
    kept = read_jsonl(out)
    assert [r["id"] for r in kept if r["prompt_id"] == "p1"] == expected_p1
    assert [r["id"] for r in kept if r["prompt_id"] == "p2"] == ["p2-0", "p2-1"]
    row = {r["rule"]: r for r in report["funnel"]}["max_per_prompt"]
    assert (row["in"], row["dropped"], row["kept"]) == (6, 2, 4)
    rejected = {r["id"]: r["meta"]["rejected"]["rule"] for r in read_jsonl(tmp_path / "kept.rejected.jsonl")}
    assert rejected["p1-4"] == "wrong_answer" and sorted(
        k for k, v in rejected.items() if v == "max_per_prompt"
    ) == sorted({"p1-0", "p1-1", "p1-2", "p1-3"} - set(expected_p1))


def test_random_selection_is_seeded_and_reproducible(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", _prompt_samples())
    picks = []
    for seed in (0, 0, 1, 2, 3):
        out = tmp_path / f"kept-{seed}-{len(picks)}.jsonl"
        filter_stage.run(
            FilterConfig(
                input=str(src), output=str(out), check="math", max_per_prompt=2, selection="random", seed=seed
            )
        )
        picks.append(tuple(r["id"] for r in read_jsonl(out) if r["prompt_id"] == "p1"))
    assert picks[0] == picks[1]  # same seed, same choice
    assert len(set(picks)) > 1  # other seeds choose differently
    assert all(len(p) == 2 for p in picks)


def test_pass_rate_is_recorded_per_prompt(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", _prompt_samples())
    out = tmp_path / "kept.jsonl"
    filter_stage.run(FilterConfig(input=str(src), output=str(out), check="math"))
    rates = {r["prompt_id"]: r["meta"]["pass_rate"] for r in read_jsonl(out)}
    assert rates == {"p1": 0.8, "p2": 1.0}


def test_near_duplicates_are_opt_in_rows_of_the_funnel(tmp_path):
    base = "First the tens: twenty plus twenty is forty. Then the ones: one plus one is two. So \\boxed{42}."
    rows = [
        make_sample("p1", 0, base, id="a"),
        make_sample("p1", 1, base.replace("So", "Thus"), id="b"),  # near-duplicate of a
        make_sample("p1", 2, "The answer is \\boxed{42}, since 21 doubled is 42 as everyone knows.", id="c"),
    ]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    plain = filter_stage.run(FilterConfig(input=str(src), output=str(tmp_path / "k1.jsonl"), check="math"))
    assert plain["kept"] == 3 and "near_duplicate" not in {r["rule"] for r in plain["funnel"]}
    report = filter_stage.run(
        FilterConfig(input=str(src), output=str(tmp_path / "k2.jsonl"), check="math", near_dup_threshold=0.5)
    )
    row = {r["rule"]: r for r in report["funnel"]}["near_duplicate"]
    assert (row["dropped"], report["kept"]) == (1, 2)
    assert [r["id"] for r in read_jsonl(tmp_path / "k2.jsonl")] == ["a", "c"]


def test_quality_rules_and_decontamination_in_the_stage(tmp_path):
    leaked = "A train leaves the station at nine and travels sixty miles per hour for three hours. How far?"
    evalset = write_jsonl(tmp_path / "eval.jsonl", [{"question": leaked}])
    rows = [
        make_sample("p1", 0, "Short. \\boxed{42}", id="short"),
        make_sample("p2", 0, "I'm sorry, but I can't help with that. \\boxed{42}", id="refused"),
        make_sample("p3", 0, "<think>working it out step by step \\boxed{42}", id="unclosed"),
        make_sample("p4", 0, "We multiply sixty by three to get the distance, which is \\boxed{42}.", id="ok"),
        make_sample(
            "p5",
            0,
            "Distance is speed times time, so the answer is \\boxed{42} miles.",
            id="leak",
            prompt=[{"role": "user", "content": leaked}],
        ),
    ]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    cfg = FilterConfig(
        input=str(src), output=str(tmp_path / "k.jsonl"), check="math", min_tokens=5, decontaminate=[str(evalset)]
    )
    report = filter_stage.run(cfg)
    rejected = {r["id"]: r["meta"]["rejected"]["rule"] for r in read_jsonl(tmp_path / "k.rejected.jsonl")}
    assert rejected == {"leak": "contaminated", "short": "length", "unclosed": "think", "refused": "refusal"}
    assert [r["id"] for r in read_jsonl(tmp_path / "k.jsonl")] == ["ok"]
    assert report["decontamination"] == {str(evalset): 1}
    order = [r["rule"] for r in report["funnel"]]
    assert order.index("contaminated") < order.index("length") < order.index("think") < order.index("refusal")


# --- self-consistency voting, worker processes, timeouts ---------------------------------------------


def test_voting_labels_unlabelled_prompts_with_the_majority_answer(tmp_path):
    def unlabelled(pid, answers):  # distinct texts (draft i), so exact dedup keeps them all
        return [make_sample(pid, i, f"draft {i}: so \\boxed{{{a}}}", id=f"{pid}-{i}", reference=None)
                for i, a in enumerate(answers)]  # fmt: skip

    rows = unlabelled("u1", "77787") + unlabelled("u2", "1234")
    rows.append(make_sample("l1", 0, "so \\boxed{5}", id="l1-0", reference="6"))  # labelled: its reference rules
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    out = tmp_path / "k.jsonl"
    report = filter_stage.run(
        FilterConfig(input=str(src), output=str(out), check="math", vote=True, min_agreement=0.6)
    )
    kept = read_jsonl(out)
    assert [r["id"] for r in kept] == ["u1-0", "u1-1", "u1-2", "u1-4"]  # the 7s: 4 of 5 agree
    assert all(r["meta"]["vote"] == {"answer": "7", "agreement": 0.8} and r["reference"] == "7" for r in kept)
    rejected = {r["id"]: r for r in read_jsonl(tmp_path / "k.rejected.jsonl")}
    assert rejected["u1-3"]["meta"]["rejected"]["rule"] == "wrong_answer"
    # u2: no answer reaches 60% agreement: unverifiable, with its agreement recorded
    assert {rejected[f"u2-{i}"]["meta"]["rejected"]["rule"] for i in range(4)} == {"unverifiable"}
    assert rejected["u2-0"]["meta"]["vote"] == {"answer": None, "agreement": 0.25}
    assert rejected["l1-0"]["meta"]["rejected"]["rule"] == "wrong_answer" and "vote" not in rejected["l1-0"]["meta"]
    assert report["answer_check"]["correct"] == 4


def test_worker_processes_give_byte_identical_outputs(samples, tmp_path):
    outs = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}" / "kept.jsonl"
        filter_stage.run(
            FilterConfig(input=str(samples), output=str(out), check="math", workers=workers, max_per_prompt=2)
        )
        outs.append([(out.parent / n).read_bytes() for n in ("kept.jsonl", "kept.rejected.jsonl")])
    assert outs[0] == outs[1]


def test_a_hanging_check_times_out_and_counts_as_unverifiable(tmp_path, monkeypatch):
    import time

    from seqdistill.checks.answers import REGISTRY
    from seqdistill.checks.answers.exact import extract_exact

    def slow(completion, options):
        if "hang" in completion:
            time.sleep(60)
        return extract_exact(completion)

    monkeypatch.setitem(REGISTRY, "exact", dataclasses.replace(REGISTRY["exact"], extract=slow))
    rows = [
        make_sample("p1", 0, "\\boxed{42}", id="ok"),
        make_sample("p2", 0, "hang \\boxed{42}", id="hang"),
        make_sample("p3", 0, "\\boxed{42}", id="ok2"),
    ]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    start = time.monotonic()
    report = filter_stage.run(
        FilterConfig(input=str(src), output=str(tmp_path / "k.jsonl"), check="exact", workers=1, check_timeout=0.5)
    )
    assert time.monotonic() - start < 20
    assert [r["id"] for r in read_jsonl(tmp_path / "k.jsonl")] == ["ok", "ok2"]
    hung = read_jsonl(tmp_path / "k.rejected.jsonl")[0]
    assert hung["meta"]["rejected"]["rule"] == "unverifiable" and "timeout" in hung["meta"]["rejected"]["reason"]
    assert report["answer_check"] == {"name": "exact", "correct": 2, "unverifiable": 1, "timed_out": 1}


# --- the pass-rate band ---------------------------------------------------------------------------


def _graded(pid: str, verdicts: str) -> list[dict]:
    """One sample per letter: c correct (42), w wrong (41), u unverifiable (no answer)."""
    text = {"c": "so \\boxed{42}", "w": "so \\boxed{41}", "u": "no idea"}
    return [make_sample(pid, i, f"draft {i}: {text[v]}", id=f"{pid}-{i}") for i, v in enumerate(verdicts)]


def test_pass_rate_band_keeps_only_prompts_the_teacher_sometimes_solves(tmp_path):
    rows = _graded("always", "cccc") + _graded("often", "ccwc") + _graded("rarely", "cwww") + _graded("never", "wwuw")
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    out = tmp_path / "k.jsonl"
    report = filter_stage.run(
        FilterConfig(input=str(src), output=str(out), check="math", min_pass_rate=0.25, max_pass_rate=0.8)
    )
    kept = read_jsonl(out)
    assert [r["id"] for r in kept] == ["often-0", "often-1", "often-3", "rarely-0"]
    assert {r["meta"]["pass_rate"] for r in kept} == {0.75, 0.25}
    rows_by_rule = {row["rule"]: row for row in report["funnel"]}
    band = rows_by_rule["pass_rate_band"]
    assert (band["dropped"], band["kept"]) == (4, 4)  # the 4 correct samples of "always"; "never" kept none
    rejected = {r["id"]: r["meta"]["rejected"] for r in read_jsonl(tmp_path / "k.rejected.jsonl")}
    assert rejected["always-0"] == {
        "rule": "pass_rate_band",
        "reason": "prompt pass rate 1.00 (4/4 correct) is outside the band [0.25, 0.8]",
    }
    order = [row["rule"] for row in report["funnel"]]
    assert order.index("wrong_answer") < order.index("pass_rate_band")


def test_pass_rate_band_is_applied_before_selection(tmp_path):
    rows = _graded("always", "ccc") + _graded("often", "ccwc")
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    out = tmp_path / "k.jsonl"
    report = filter_stage.run(
        FilterConfig(input=str(src), output=str(out), check="math", max_pass_rate=0.9, max_per_prompt=1)
    )
    assert [r["id"] for r in read_jsonl(out)] == ["often-0"]
    assert [(row["rule"], row["dropped"]) for row in report["funnel"][-2:]] == [
        ("pass_rate_band", 3),
        ("max_per_prompt", 2),
    ]


def test_pass_rate_band_needs_an_answer_check_and_an_ordered_band(tmp_path):
    with pytest.raises(ConfigError, match="need an answer check"):
        FilterConfig(input="s.jsonl", check="none", min_pass_rate=0.1)
    with pytest.raises(ConfigError, match="min_pass_rate 0.9 is above max_pass_rate 0.5"):
        FilterConfig(input="s.jsonl", min_pass_rate=0.9, max_pass_rate=0.5)


def test_cli_pass_rate_band(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", _graded("always", "cc") + _graded("half", "cw"))
    out = tmp_path / "k.jsonl"
    result = runner.invoke(app, ["filter", str(src), "--output", str(out), "--set", "max_pass_rate=0.9"])
    assert result.exit_code == 0, result.output
    assert "pass_rate_band" in result.output
    assert [r["id"] for r in read_jsonl(out)] == ["half-0"]


# --- voting reads answers through the pool --------------------------------------------------------


def test_votes_count_equal_numbers_as_one_answer(tmp_path):
    texts = ["\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{1/2}", "\\boxed{3}"]
    rows = [make_sample("u", i, f"draft {i}: {t}", id=f"u-{i}", reference=None) for i, t in enumerate(texts)]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    out = tmp_path / "k.jsonl"
    filter_stage.run(FilterConfig(input=str(src), output=str(out), check="math", vote=True, workers=2))
    kept = read_jsonl(out)
    assert [r["id"] for r in kept] == ["u-0", "u-1", "u-2"]
    assert kept[0]["meta"]["vote"] == {"answer": "0.5", "agreement": 0.75}


def test_votes_never_run_a_check(tmp_path, monkeypatch):
    from seqdistill.checks.answers import REGISTRY

    calls, numeric = [], REGISTRY["numeric"]

    def counting_compare(answer, reference, options):
        calls.append(reference)
        return numeric.compare(answer, reference, options)

    monkeypatch.setitem(REGISTRY, "numeric", dataclasses.replace(REGISTRY["numeric"], compare=counting_compare))
    rows = [make_sample("u", i, f"draft {i}: it is {a}", reference=None) for i, a in enumerate("7787")]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    filter_stage.run(FilterConfig(input=str(src), output=str(tmp_path / "k.jsonl"), check="numeric", vote=True))
    assert calls == ["7"] * 4  # one check per sample, against the voted answer; none to vote


def test_vote_with_the_code_check_is_a_config_error():
    with pytest.raises(ConfigError, match="the code check has no answers to vote on"):
        FilterConfig(input="s.jsonl", check="code", vote=True)
