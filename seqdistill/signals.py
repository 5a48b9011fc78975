"""Stop signals: SIGTERM and SIGHUP (what a scheduler, `timeout` or a closed terminal send) stop a command
the way Ctrl-C does, so every stop is graceful: `with` blocks clean up, and the exit code is 128 + the signal.

The CLI holds `stop_signals()` around every command; generate's `_ctrl_c` goes further (the first signal
stops sending and drains, a second aborts). Limits: only the main thread installs handlers (elsewhere
they are left alone), and nothing can catch SIGKILL: what a kill -9 leaves is cleaned by the next run.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from seqdistill.errors import Stopped

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def die_if_forked(owner: int, signum: int) -> bool:
    """In a process forked from `owner` (a CheckPool worker inherits the handler), die of `signum` as by default."""
    if os.getpid() == owner:
        return False
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return True


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Stopped` in the main thread, so the command unwinds like Ctrl-C.

    `with` blocks clean up on the way out (temporary files removed, CheckPool workers stopped); a signal
    that arrives while `Stopped` unwinds is ignored, so cleanup finishes (it is bounded; Ctrl-C still
    interrupts it). Python drops an exception raised where it cannot propagate (a fork hook, a `__del__`,
    reported through `sys.unraisablehook`): such a `Stopped` is sent again at once, silently; and while the
    command runs on (a library's `except BaseException`), again every second. A signal the process was
    started ignoring (`nohup`) stays ignored. A forked worker (CheckPool) inherits the handler: it dies of the
    signal as it would by default, and the parent replaces or stops it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner, active, timers = os.getpid(), threading.Event(), []

    def again(signum: int) -> None:
        if active.is_set():
            os.kill(owner, signum)

    def send_again(signum: int, after: float) -> None:  # from a thread: never inside the frame that dropped it
        timer = threading.Timer(after, again, (signum,))
        timer.daemon = True
        timer.start()
        timers.append(timer)

    def handler(signum, frame):
        if die_if_forked(owner, signum):
            return
        send_again(signum, 1.0)
        if not isinstance(sys.exc_info()[1], Stopped):  # not already unwinding from it
            raise Stopped(signum)

    previous_hook = sys.unraisablehook

    def unraisable(info) -> None:
        if isinstance(info.exc_value, Stopped) and active.is_set() and os.getpid() == owner:
            send_again(info.exc_value.signum, 0.05)  # dropped where it could not propagate: deliver it again
            return
        previous_hook(info)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    active.set()
    sys.unraisablehook = unraisable
    for s, h in previous.items():
        if h is not signal.SIG_IGN:
            signal.signal(s, handler)
    try:
        yield
    finally:
        active.clear()
        sys.unraisablehook = previous_hook
        for t in timers:
            t.cancel()
        for s, h in previous.items():
            if h is not signal.SIG_IGN:
                signal.signal(s, h if h is not None else signal.SIG_DFL)
