"""Tests for seqdistill.checks.pool: order, equality with inline checks, timeouts, process cleanup."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqdistill.checks.answers import REGISTRY, Answer, CheckSpec, Example, Verdict, check, extract, get_check
from seqdistill.checks.pool import CheckPool, timed_check, timed_extract, timeout_verdict
from seqdistill.errors import ConfigError
from tests.conftest import make_sample, write_jsonl

HANG = "please hang"
DIE = "please die"
REPO = Path(__file__).resolve().parents[1]


def _numeric(completion, reference):
    return check("numeric", completion, reference)


def _sleepy(completion, reference):
    """Checker that hangs (interruptibly) on HANG, sleeps a little on odd numbers, else numeric."""
    if completion == HANG:
        while True:
            time.sleep(3600)
    if completion.endswith(("1", "3", "5")):
        time.sleep(0.002)  # uneven work so chunks finish out of order
    return _numeric(completion, reference)


def _deaf(completion, reference):
    """Checker that hangs where SIGALRM cannot reach it: only the parent's hard kill stops it."""
    if completion == HANG:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while True:
            time.sleep(3600)
    return _numeric(completion, reference)


def _crashy(completion, reference):
    if completion == DIE:
        os._exit(3)
    return _numeric(completion, reference)


def _whole(completion, options):
    return Answer(completion)


def make_spec(name, compare) -> CheckSpec:
    """A registry entry whose answer is the whole completion and whose comparison is ``compare(text, reference)``."""

    def compare_text(answer, reference, options):
        return compare(answer.text, reference)

    return CheckSpec(name, f"test checker {name}", _whole, compare_text, Example("1", "1", "correct"))


@pytest.fixture
def test_checkers(monkeypatch):
    for name, fn in (("sleepy", _sleepy), ("deaf", _deaf), ("crashy", _crashy)):
        monkeypatch.setitem(REGISTRY, name, make_spec(name, fn))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _no_children_left(pids):
    assert multiprocessing.active_children() == []
    assert not any(_alive(pid) for pid in pids)


def test_order_preserved_across_workers(test_checkers):
    items = [(f"the answer is {i}", str(i if i % 7 else i + 1)) for i in range(500)]
    with CheckPool("sleepy", workers=2, chunk_size=3) as pool:
        verdicts = list(pool.map(items))
    assert [v.answer for v in verdicts] == [str(i) for i in range(500)]
    assert [v.correct for v in verdicts] == [bool(i % 7) for i in range(500)]


MIXED = [
    ("math", r"so \boxed{\frac{6}{8}}", "0.75"),
    ("math", "the answer is $(x+1)^2$", "x^2+2x+1"),
    ("math", r"\boxed{3\frac{1}{2}}", "3.5"),
    ("math", "the answer is 3", "4"),
    ("math", "nothing here", "4"),
    ("math", "42", None),
    ("math", None, "42"),  # garbage: checker error, not a crash
    ("math", r"\boxed{[1, 3)}", "[1,3)"),
]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_results_equal_inline_check_math(workers):
    items = [(c, r) for _, c, r in MIXED] * 20
    expected = [check("math", c, r) for c, r in items]
    with CheckPool("math", workers=workers, chunk_size=7) as pool:
        assert list(pool.map(items)) == expected
    assert pool.stats["timeout"] == 0


@pytest.mark.parametrize("name", ["numeric", "choice", "exact"])
def test_results_equal_inline_check_other_checkers(name):
    items = [("The answer is (B), i.e. 42", "42"), ("B", "B"), ("1,234", "1234"), ("x", None), ("Paris", "paris")] * 30
    with CheckPool(name, workers=2, chunk_size=8) as pool:
        assert list(pool.map(items)) == [check(name, c, r) for c, r in items]


def test_regex_options_reach_the_workers():
    items = [(f"ANSWER: {w}", "paris") for w in ["Paris", "Rome", "nothing"]] + [("no marker", "x")]
    with CheckPool("regex", workers=2, pattern=r"ANSWER:\s*(\w+)") as pool:
        assert [v.correct for v in pool.map(items)] == [True, False, False, None]


def test_bad_options_fail_in_the_parent():
    with pytest.raises(ConfigError, match="check_pattern"):
        CheckPool("regex", workers=2)
    with pytest.raises(ConfigError, match="unknown check"):
        CheckPool("bogus", workers=2)
    with pytest.raises(ConfigError, match="workers"):
        CheckPool("math", workers=-1)
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_hanging_check_times_out_and_the_pool_carries_on(test_checkers, workers):
    items = [("1", "1"), (HANG, "1"), ("2", "2"), ("4", "5")] + [(str(i), str(i)) for i in range(20)]
    start = time.monotonic()
    with CheckPool("sleepy", workers=workers, timeout=0.3, chunk_size=4) as pool:
        verdicts = list(pool.map(items))
    assert time.monotonic() - start < 10
    assert verdicts[1] == Verdict(None, "timeout after 0.3s", None, timed_out=True)
    assert [v.correct for v in verdicts[:4]] == [True, None, True, False]
    assert all(v.correct for v in verdicts[4:])
    assert pool.stats["timeout"] == 1
    assert pool.stats["killed"] == 0  # the signal did it; no process had to be killed


def test_check_deaf_to_signals_is_killed_and_replaced(test_checkers):
    items = [(str(i), str(i)) for i in range(10)]
    items[3] = (HANG, "3")
    with CheckPool("deaf", workers=1, timeout=0.2, grace=0.3, chunk_size=8) as pool:
        before = pool.pids
        start = time.monotonic()
        verdicts = list(pool.map(items))
        took = time.monotonic() - start
        after = pool.pids
    assert verdicts[3] == timeout_verdict(0.2)
    assert [v.correct for v in verdicts] == [True] * 3 + [None] + [True] * 6
    assert 0.5 <= took < 10
    assert pool.stats["killed"] == 1 and pool.stats["timeout"] == 1
    assert before != after  # a fresh worker took the killed one's place
    _no_children_left(before + after)


def test_worker_that_dies_is_replaced(test_checkers):
    items = [("1", "1"), (DIE, "1"), ("2", "2"), ("3", "4")]
    with CheckPool("crashy", workers=2, chunk_size=2) as pool:
        verdicts = list(pool.map(items))
    assert verdicts[1] == Verdict(None, "checker process died (exit code 3)", None)
    assert [v.correct for v in verdicts] == [True, None, True, False]
    assert pool.stats["died"] == 1


def test_pathological_math_input_times_out():
    items = [(r"\boxed{1}", "1"), (r"\boxed{9^{9^{9^{9}}}}", "1"), (r"\boxed{2}", "2")]
    with CheckPool("math", workers=1, timeout=1.0) as pool:
        verdicts = list(pool.map(items))
    assert verdicts[1] == Verdict(None, "timeout after 1s", None, timed_out=True)
    assert [v.correct for v in verdicts] == [True, None, True]


def test_inline_pool_uses_no_processes(test_checkers):
    handler_before = signal.getsignal(signal.SIGALRM)
    with CheckPool("sleepy", workers=0, timeout=0.2) as pool:
        assert pool.pids == []
        assert multiprocessing.active_children() == []
        assert pool.check(HANG, "1") == timeout_verdict(0.2)
        assert [v.correct for v in pool.map([("1", "1"), (HANG, "1"), ("2", "3")])] == [True, None, False]
    assert signal.getsignal(signal.SIGALRM) is handler_before


def test_inline_timeout_resumes_an_outer_timer(test_checkers):
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert check_timed(HANG) == timeout_verdict(0.2)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25 < left < 30  # the outer 30 s timer runs on, minus the time the check took
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        assert check_timed(HANG) == timeout_verdict(0.2)  # outer deadline passes meanwhile
        time.sleep(0.05)
        assert fired == [True]  # ... and still fires, right after the check
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check_timed(completion):
    return timed_check(get_check("sleepy"), completion, "1", 0.2)


def test_streaming_keeps_in_flight_bounded():
    consumed = 0

    def items():
        nonlocal consumed
        for i in range(10_000):
            consumed += 1
            yield (str(i), str(i))

    with CheckPool("numeric", workers=2, chunk_size=16) as pool:
        stream = pool.map(items())
        first = next(stream)
        assert first.correct is True
        assert consumed <= 2 * 16 * 4 + 16  # not the whole input
        rest = list(stream)
    assert len(rest) == 9_999 and consumed == 10_000


def test_processes_are_shut_down():
    with CheckPool("numeric", workers=2) as pool:
        pids = pool.pids
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        list(pool.map([("1", "1")] * 10))
    _no_children_left(pids)
    pool.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        next(pool.map([("1", "1")]))


def test_abandoned_map_then_reuse_and_shutdown(test_checkers):
    pool = CheckPool("sleepy", workers=2, chunk_size=4)
    stream = pool.map((str(i), str(i)) for i in range(1_000))
    assert next(stream).correct is True
    stream.close()  # consumer stops early: busy workers are replaced, no stale answers
    items = [(str(i), str(i + i % 2)) for i in range(50)]
    assert [v.correct for v in pool.map(items)] == [i % 2 == 0 for i in range(50)]
    pids = pool.pids
    pool.close()
    _no_children_left(pids)


def test_empty_input():
    with CheckPool("math", workers=2) as pool:
        assert list(pool.map([])) == []


# ---------------------------------------------------------------------------- extraction (majority votes)

VOTE_TEXTS = [r"so \boxed{\frac{6}{8}}", "The answer is 42.", "nothing to read", r"\boxed{3}, \boxed{4}", r"\boxed{}"]


@pytest.mark.parametrize("workers", [0, 2])
def test_extract_through_the_pool_equals_inline(workers):
    math = get_check("math")
    with CheckPool("math", workers=workers, chunk_size=2) as pool:
        assert list(pool.extract(VOTE_TEXTS * 5)) == [extract(math, t) for t in VOTE_TEXTS * 5]


def _hanging_extract(completion, options):
    if completion == HANG:
        while True:
            time.sleep(3600)
    return Answer(completion)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_extraction_that_hangs_times_out_as_no_answer(monkeypatch, workers):
    spec = make_spec("hangx", _numeric)
    monkeypatch.setitem(REGISTRY, "hangx", CheckSpec("hangx", "x", _hanging_extract, spec.compare, spec.example))
    with CheckPool("hangx", workers=workers, timeout=0.3) as pool:
        assert list(pool.extract(["1", HANG, "2"])) == [Answer("1"), None, Answer("2")]
    assert pool.stats["timeout"] == 1
    assert timed_extract(get_check("hangx"), HANG, 0.2) == (None, True)


# ---------------------------------------------------------------------------- workers die with the run

# Registers a checker whose every check hangs, then runs the real CLI: the workers are mid-check when killed.
HANGING_CLI = """
import sys, time
from seqdistill.checks.answers import REGISTRY, Answer, CheckSpec, Example, Verdict
def hang(answer, reference, options):
    time.sleep(3600)
    return Verdict(True, "", None)
REGISTRY["hang"] = CheckSpec("hang", "hangs", lambda c, o: Answer(c), hang, Example("1", "1", "correct"))
from seqdistill.cli import main
sys.argv = ["seqdistill", *sys.argv[1:]]
main()
"""


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, IndexError, ValueError):
                continue
            if int(ppid) == pid and state != "Z":
                kids.append(int(entry.name))
    return kids


def _running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill_mid_run_and_wait_for_workers(argv: list[str]) -> tuple[list[int], list[int]]:
    """Start a filter with 2 workers, kill -9 it once the workers run; returns (workers, survivors after 10 s)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEQDISTILL_NO_PROGRESS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while len(workers := _children(proc.pid)) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the filter never started its workers"
            time.sleep(0.1)
        time.sleep(1.0)  # the workers are busy checking
        assert proc.poll() is None, "the filter finished before it could be killed: give it more work"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while (survivors := [w for w in workers if _running(w)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        return workers, survivors
    finally:  # whatever happened, leave no process behind (on failure: the survivors too)
        for pid in {proc.pid, *workers, *_children(proc.pid)}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_workers_busy_in_a_check_die_when_the_filter_is_killed(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [make_sample("p", i, f"answer {i}") for i in range(8)])
    argv = [sys.executable, "-c", HANGING_CLI, "filter", str(src), "--check", "hang", "--workers", "2"]
    workers, survivors = _kill_mid_run_and_wait_for_workers([*argv, "--set", "check_timeout=600"])
    assert len(workers) == 2 and survivors == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_no_worker_outlives_a_killed_filter_on_a_large_input(tmp_path):
    # answers that need sympy, so that 20k samples keep two workers busy for a while
    texts = [r"so \boxed{x^2+" + str(i % 7) + "x+1}" for i in range(20_000)]
    rows = [make_sample(f"p{i % 500}", i, text, reference="(x+1)^2") for i, text in enumerate(texts)]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    argv = [sys.executable, "-m", "seqdistill", "filter", str(src), "--check", "math", "--workers", "2"]
    workers, survivors = _kill_mid_run_and_wait_for_workers(argv)
    assert len(workers) == 2 and survivors == []
