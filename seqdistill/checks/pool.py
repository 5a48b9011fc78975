"""Run answer checks in worker processes, with a per-sample timeout, yielding results in input order.

The only executor of answer checks: filter, voting and eval all go through it.
``CheckPool(name, workers, timeout, **options).map(items)`` streams ``(completion, reference)``
pairs through ``workers`` processes and yields one ``Verdict`` per pair (``answers.score``), in input
order; ``.extract(completions)`` yields the answer each completion states (``answers.extract``, for
majority votes), with the same workers and timeouts.

- Items go to workers in chunks (``chunk_size``, default 64): one pipe round trip per chunk.
- At most ``workers * chunk_size * 4`` items are in flight, so memory stays flat on long streams.
- Each check runs in the worker's main thread under a ``SIGALRM`` interval timer (math_verify's
  own per-call alarms are turned off meanwhile, see ``answers.math_verify_timeouts_disabled``).
  A check that runs past ``timeout`` seconds yields ``Verdict(None, "timeout after Ns", None, timed_out=True)``
  (an extraction that does yields no answer).
- Backstop: a check stuck where a signal cannot reach it (inside C code, signals blocked) is
  noticed by the parent after ``timeout + grace`` seconds; that worker is killed, the item gets
  the timeout verdict, the rest of its chunk is sent again, and a fresh worker takes its place.
  A worker that dies (segfault, OOM kill) is handled the same way, with a "checker process died"
  verdict for the item it was on.
- ``workers=0`` runs inline in the calling process: no processes, no backstop; the timeout still
  applies through the same timer when called from the main thread (from another thread
  math_verify's timeouts are off and nothing bounds a check). ``workers>=1`` uses processes.

Worker processes are started with ``fork`` where available (they inherit whatever the parent imported
and the checker registry); pass ``start_method="spawn"`` for a parent with threads. One ``map`` or
``extract`` at a time per pool. Workers die with the run: the kernel kills each one when the process that
started it dies (``PR_SET_PDEATHSIG`` on Linux), even by kill -9, and a worker whose parent is already
gone exits at once.

Limits: the death signal follows the *thread* that started the workers (Linux semantics): start a
pool in a thread that outlives it (the main thread, typically). Elsewhere than Linux a worker notices
its parent's death only when its pipe closes, that is after the check it is running.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from itertools import islice
from multiprocessing.connection import wait
from typing import Any

from seqdistill.checks.answers import Answer, Check, Verdict, extract, get_check, math_verify_timeouts_disabled, score
from seqdistill.errors import ConfigError

Item = tuple[str, "str | None"]
SCORE, EXTRACT = "score", "extract"  # what a task asks the workers for
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class _CheckTimeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that checkers' ``except Exception`` miss it."""


class _Alarm:
    """Arms SIGALRM around one check; ignores a signal that lands after the check finished."""

    armed = False

    def handler(self, signum, frame):
        if self.armed:
            self.armed = False
            raise _CheckTimeout


def timeout_verdict(timeout: float) -> Verdict:
    return Verdict(None, f"timeout after {timeout:g}s", None, timed_out=True)


_TIMED_OUT = object()


def _timed(fn, timeout: float | None, *args):
    """``fn(*args)`` within ``timeout`` seconds (main thread only; elsewhere unbounded), else ``_TIMED_OUT``."""
    if not timeout or timeout <= 0 or threading.current_thread() is not threading.main_thread():
        return fn(*args)
    alarm = _Alarm()
    old_handler = signal.signal(signal.SIGALRM, alarm.handler)
    outer_left = outer_interval = 0.0
    started = time.monotonic()
    try:
        with math_verify_timeouts_disabled():
            alarm.armed = True
            # An outer ITIMER_REAL (pytest-timeout, a caller's own alarm) is paused, then resumed.
            outer_left, outer_interval = signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                result = fn(*args)
            finally:
                alarm.armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        return result
    except _CheckTimeout:
        return _TIMED_OUT
    finally:
        signal.signal(signal.SIGALRM, old_handler)
        if outer_left > 0:  # an outer deadline that passed meanwhile fires right after the check
            left = max(outer_left - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


def timed_check(check: Check, completion: str, reference: str | None, timeout: float | None) -> Verdict:
    """``answers.score`` bounded by ``timeout`` seconds (main thread only; elsewhere unbounded)."""
    verdict = _timed(score, timeout, check, completion, reference)
    return timeout_verdict(timeout) if verdict is _TIMED_OUT else verdict


def timed_extract(check: Check, completion: str, timeout: float | None) -> tuple[Answer | None, bool]:
    """``answers.extract`` bounded like ``timed_check``: (the answer or None, whether it timed out)."""
    answer = _timed(extract, timeout, check, completion)
    return (None, True) if answer is _TIMED_OUT else (answer, False)


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to kill this worker when its parent dies (even by kill -9); exit if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed pipe ends the worker after its current check
        pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _worker_main(conn, check: Check, timeout: float, progress, parent_pid: int) -> None:
    """Worker loop: receive ``(task_id, op, items)``, send ``(task_id, results)``; ``None`` stops it.

    ``op`` is ``SCORE`` (items are (completion, reference), results Verdicts) or ``EXTRACT`` (items are
    completions, results ``(Answer | None, timed_out)``). ``progress`` is shared memory ``[index of the
    item being checked, its start time or 0]`` that lets the parent find and kill a check stuck beyond
    the reach of SIGALRM.
    """
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task_id, op, items = msg
        out = []
        for i, item in enumerate(items):
            progress[1] = 0.0
            progress[0] = i
            progress[1] = time.monotonic()
            if op == SCORE:
                out.append(timed_check(check, item[0], item[1], timeout))
            else:
                out.append(timed_extract(check, item, timeout))
        progress[1] = 0.0
        conn.send((task_id, out))


class _Worker:
    def __init__(self, ctx, check: Check, timeout: float):
        self.progress = ctx.Array("d", 2, lock=False)
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main,
            args=(child_conn, check, timeout, self.progress, os.getpid()),
            daemon=True,
            name="seqdistill-check",
        )
        self.process.start()
        child_conn.close()
        self.task: tuple[int, str, list[int], list[Any], int] | None = None  # (id, op, seqs, items, attempt)

    def stop(self, wait_s: float) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(wait_s)
        self.kill()

    def kill(self) -> int | None:
        """Kill (if still running) and reap the process; returns its exit code."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        exitcode = self.process.exitcode
        self.conn.close()
        self.process.close()
        return exitcode


class CheckPool:
    """Answer checks across ``workers`` processes with a per-sample timeout; see the module doc.

    ``options`` are the checker's options (by name or config key, e.g. ``pattern`` or ``check_pattern``).

    >>> with CheckPool("numeric", workers=0) as pool:
    ...     [v.correct for v in pool.map([("it is 42", "42"), ("41", "42")])]
    [True, False]
    """

    def __init__(
        self,
        checker_name: str,
        workers: int,
        timeout: float = 5.0,
        *,
        chunk_size: int = 64,
        grace: float | None = None,
        start_method: str | None = None,
        **options,
    ):
        if not isinstance(workers, int) or workers < 0:
            raise ConfigError(f"workers must be an integer >= 0, got {workers!r}")
        if timeout is not None and timeout < 0:
            raise ConfigError(f"check timeout must be >= 0 seconds, got {timeout!r}")
        if chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {chunk_size!r}")
        self.checker = get_check(checker_name, **options)  # the Check every worker runs; fails early, here
        self.workers = workers
        self.timeout = timeout
        self.chunk_size = chunk_size
        # How long past the timeout the parent waits before it kills a worker the signal missed.
        self.grace = grace if grace is not None else max(1.0, 0.5 * (timeout or 0))
        self.stats: Counter[str] = Counter()  # "timeout", "killed", "died", "restarted"
        self._task_ids = 0
        self._workers: list[_Worker] = []
        self._closed = False
        if workers:
            # Checkers import what they need on first use (math_verify only for answers that are not plain
            # numbers), in each worker: nothing is imported here before forking.
            methods = multiprocessing.get_all_start_methods()
            method = start_method or ("fork" if "fork" in methods else "spawn")
            self._ctx = multiprocessing.get_context(method)
            self._workers = [self._new_worker() for _ in range(workers)]

    def _new_worker(self) -> _Worker:
        return _Worker(self._ctx, self.checker, self.timeout or 0)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> CheckPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (idempotent); kills any that do not stop within a second."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            w.stop(wait_s=1.0)
        self._workers = []

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (for tests and diagnostics)."""
        return [w.process.pid for w in self._workers]

    # ------------------------------------------------------------------ checking

    def check(self, completion: str, reference: str | None) -> Verdict:
        """One check, inline in this process, with the timeout where the main thread allows it."""
        return timed_check(self.checker, completion, reference, self.timeout)

    def map(self, items: Iterable[Item]) -> Iterator[Verdict]:
        """Yield one Verdict per ``(completion, reference)``, in input order, streaming."""
        for verdict in self._run(SCORE, items):
            self.stats["timeout"] += verdict.timed_out
            yield verdict

    def extract(self, completions: Iterable[str]) -> Iterator[Answer | None]:
        """Yield the answer each completion states (None: none, or the extraction timed out), in input order."""
        for answer, timed_out in self._run(EXTRACT, completions):
            self.stats["timeout"] += timed_out
            yield answer

    def _run(self, op: str, items: Iterable[Any]) -> Iterator[Any]:
        if self._closed:
            raise RuntimeError("CheckPool is closed")
        if not self.workers:
            for item in items:
                if op == SCORE:
                    yield timed_check(self.checker, item[0], item[1], self.timeout)
                else:
                    yield timed_extract(self.checker, item, self.timeout)
            return
        yield from self._map_workers(op, iter(items))

    def _timeout_result(self, op: str) -> Any:
        return timeout_verdict(self.timeout) if op == SCORE else (None, True)

    def _died_result(self, op: str, exitcode: int | None) -> Any:
        return Verdict(None, f"checker process died (exit code {exitcode})", None) if op == SCORE else (None, False)

    def _map_workers(self, op: str, it: Iterator[Any]) -> Iterator[Any]:
        chunk, workers = self.chunk_size, self._workers
        max_ahead = len(workers) * chunk * 4
        pending: deque[tuple[list[int], list[Any], int]] = deque()  # (seqs, items, attempt)
        results: dict[int, Any] = {}
        next_seq = next_out = 0
        exhausted = False
        try:
            while True:
                while not exhausted and next_seq - next_out < max_ahead and len(pending) < 2 * len(workers):
                    batch = list(islice(it, chunk))
                    if not batch:
                        exhausted = True
                        break
                    pending.append((list(range(next_seq, next_seq + len(batch))), batch, 0))
                    next_seq += len(batch)
                for w in workers:
                    if w.task is None and pending:
                        seqs, batch, attempt = pending.popleft()
                        self._task_ids += 1
                        w.task = (self._task_ids, op, seqs, batch, attempt)
                        w.conn.send((self._task_ids, op, batch))
                while next_out in results:
                    yield results.pop(next_out)
                    next_out += 1
                if exhausted and next_out == next_seq:
                    return
                busy = [w for w in workers if w.task is not None]
                if not busy:
                    continue  # everything read is answered; read more
                for conn in wait([w.conn for w in busy], timeout=0.05):
                    w = next(w for w in busy if w.conn is conn)
                    try:
                        task_id, out = conn.recv()
                    except (EOFError, OSError):
                        self._replace(w, pending, results, "died")
                        continue
                    if task_id == w.task[0]:
                        results.update(zip(w.task[2], out, strict=True))
                        w.task = None
                now = time.monotonic()
                for w in busy:
                    started = w.progress[1]
                    if w.task is not None and started and now - started > (self.timeout or 0) + self.grace:
                        if self.timeout:
                            self._replace(w, pending, results, "killed")
        finally:
            # An abandoned or failed map leaves busy workers with stale answers: replace them.
            for w in list(workers):
                if w.task is not None and not self._closed:
                    self._replace(w, None, None, "restarted")

    def _replace(self, w: _Worker, pending, results, why: str) -> None:
        """Kill worker ``w`` and start a new one; settle the item it was stuck on and requeue the rest."""
        task, idx, started = w.task, int(w.progress[0]), w.progress[1]
        w.task = None
        exitcode = w.kill()
        self._workers[self._workers.index(w)] = self._new_worker()
        self.stats[why] += 1
        if task is None or pending is None:
            return
        _, op, seqs, batch, attempt = task
        if why == "killed":
            settle = [idx]
            result = self._timeout_result(op)  # counted as a timeout when map/extract yields it
        elif started:
            settle = [idx]  # the item it died on
            result = self._died_result(op, exitcode)
        elif attempt < 2:
            settle = []  # died between items: try the chunk again
        else:
            settle = list(range(len(seqs)))  # keeps dying: give up on this chunk
            result = self._died_result(op, exitcode)
        for i in settle:
            results[seqs[i]] = result
        rest = [i for i in range(len(seqs)) if i not in settle]
        if rest:
            pending.appendleft(([seqs[i] for i in rest], [batch[i] for i in rest], attempt + 1))
