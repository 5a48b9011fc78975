"""Run answer checks in worker processes, with a per-sample timeout, yielding verdicts in input order.

``CheckPool(name, workers, timeout, **options).map(items)`` streams ``(completion, reference)``
pairs through ``workers`` processes and yields one ``Verdict`` per pair, in input order.

- Items go to workers in chunks (``chunk_size``, default 64): one pipe round trip per chunk.
- At most ``workers * chunk_size * 4`` items are in flight, so memory stays flat on long streams.
- Each check runs in the worker's main thread under a ``SIGALRM`` interval timer (math_verify's
  own per-call alarms are turned off meanwhile, see ``answers.math_verify_timeouts_disabled``).
  A check that runs past ``timeout`` seconds yields ``Verdict(None, "timeout after Ns", None)``.
- Backstop: a check stuck where a signal cannot reach it (inside C code, signals blocked) is
  noticed by the parent after ``timeout + grace`` seconds; that worker is killed, the item gets
  the timeout verdict, the rest of its chunk is sent again, and a fresh worker takes its place.
  A worker that dies (segfault, OOM kill) is handled the same way, with a "checker process died"
  verdict for the item it was on.
- ``workers=0`` runs inline in the calling process: no processes, no backstop; the timeout still
  applies through the same timer when called from the main thread (from another thread
  math_verify's timeouts are off and nothing bounds a check). ``workers>=1`` uses processes.

Worker processes are started with ``fork`` where available (they inherit the imported sympy /
math_verify and the checker registry); pass ``start_method="spawn"`` for a parent with threads.
One ``map`` at a time per pool.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from itertools import islice
from multiprocessing.connection import wait

from seqdistill.checks.answers import (
    Checker,
    Verdict,
    get_checker,
    math_verify_timeouts_disabled,
    run_check,
)
from seqdistill.errors import ConfigError

Item = tuple[str, "str | None"]


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
    return Verdict(None, f"timeout after {timeout:g}s", None)


def timed_check(checker: Checker, completion: str, reference: str | None, timeout: float | None) -> Verdict:
    """``run_check`` bounded by ``timeout`` seconds (main thread only; elsewhere unbounded)."""
    if not timeout or timeout <= 0 or threading.current_thread() is not threading.main_thread():
        return run_check(checker, completion, reference)
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
                verdict = run_check(checker, completion, reference)
            finally:
                alarm.armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        return verdict
    except _CheckTimeout:
        return timeout_verdict(timeout)
    finally:
        signal.signal(signal.SIGALRM, old_handler)
        if outer_left > 0:  # an outer deadline that passed meanwhile fires right after the check
            left = max(outer_left - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


def _worker_main(conn, checker_name: str, options: dict, timeout: float, progress) -> None:
    """Worker loop: receive ``(task_id, items)``, send ``(task_id, verdicts)``; ``None`` stops it.

    ``progress`` is shared memory ``[index of the item being checked, its start time or 0]``
    that lets the parent find and kill a check stuck beyond the reach of SIGALRM.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    checker = get_checker(checker_name, **options)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task_id, items = msg
        out = []
        for i, (completion, reference) in enumerate(items):
            progress[1] = 0.0
            progress[0] = i
            progress[1] = time.monotonic()
            out.append(timed_check(checker, completion, reference, timeout))
        progress[1] = 0.0
        conn.send((task_id, out))


class _Worker:
    def __init__(self, ctx, checker_name: str, options: dict, timeout: float):
        self.progress = ctx.Array("d", 2, lock=False)
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main,
            args=(child_conn, checker_name, options, timeout, self.progress),
            daemon=True,
            name="seqdistill-check",
        )
        self.process.start()
        child_conn.close()
        self.task: tuple[int, list[int], list[Item], int] | None = None  # (id, seqs, items, attempt)

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
        self.checker_name = checker_name
        self.options = options
        self.checker = get_checker(checker_name, **options)  # fail early, in the parent
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
            if checker_name == "math":
                # Import sympy / math_verify once and warm their caches before forking.
                run_check(self.checker, "\\boxed{1}", "1")
            methods = multiprocessing.get_all_start_methods()
            method = start_method or ("fork" if "fork" in methods else "spawn")
            self._ctx = multiprocessing.get_context(method)
            self._workers = [self._new_worker() for _ in range(workers)]

    def _new_worker(self) -> _Worker:
        return _Worker(self._ctx, self.checker_name, self.options, self.timeout or 0)

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
        if self._closed:
            raise RuntimeError("CheckPool is closed")
        if not self.workers:
            for completion, reference in items:
                verdict = self.check(completion, reference)
                if verdict.reason.startswith("timeout after"):
                    self.stats["timeout"] += 1
                yield verdict
            return
        yield from self._map_workers(iter(items))

    def _map_workers(self, it: Iterator[Item]) -> Iterator[Verdict]:
        chunk, workers = self.chunk_size, self._workers
        max_ahead = len(workers) * chunk * 4
        pending: deque[tuple[list[int], list[Item], int]] = deque()  # (seqs, items, attempt)
        results: dict[int, Verdict] = {}
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
                        w.task = (self._task_ids, seqs, batch, attempt)
                        w.conn.send((self._task_ids, batch))
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
                        task_id, verdicts = conn.recv()
                    except (EOFError, OSError):
                        self._replace(w, pending, results, "died")
                        continue
                    _, seqs, _, _ = w.task
                    if task_id == w.task[0]:
                        results.update(zip(seqs, verdicts, strict=True))
                        self.stats["timeout"] += sum(v.reason.startswith("timeout after") for v in verdicts)
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
        _, seqs, batch, attempt = task
        if why == "killed":
            settle = [idx]
            verdict = timeout_verdict(self.timeout)
            self.stats["timeout"] += 1
        elif started:
            settle = [idx]  # the item it died on
            verdict = Verdict(None, f"checker process died (exit code {exitcode})", None)
        elif attempt < 2:
            settle = []  # died between items: try the chunk again
        else:
            settle = list(range(len(seqs)))  # keeps dying: give up on this chunk
            verdict = Verdict(None, f"checker process died (exit code {exitcode})", None)
        for i in settle:
            results[seqs[i]] = verdict
        rest = [i for i in range(len(seqs)) if i not in settle]
        if rest:
            pending.appendleft(([seqs[i] for i in rest], [batch[i] for i in rest], attempt + 1))
