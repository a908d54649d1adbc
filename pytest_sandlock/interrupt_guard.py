"""Signals that interrupt a sandboxed call phase: pytest-timeout (both methods) and Ctrl-C.

A SIGALRM/SIGINT handler that raises in the pytest process would interrupt the supervisor loop and
leave the child tree running. While a sandboxed call phase runs, such a handler is wrapped
(:class:`InterruptGuard`): it runs at once (pytest-timeout dumps its stacks), the child tree is
killed, the supervisor finishes normally, and only then is the handler's exception raised.
"""

from __future__ import annotations

import _signal  # see InterruptGuard.SIGNALS
import contextlib
import os
import signal
import sys
import threading
import warnings
from typing import Any, Callable, Iterator, Optional

import pytest

from pytest_sandlock.engine.errors import TreeUnreadable

FORK_WARNING = r".*use of fork\(\) may lead to deadlocks"


class InterruptGuard:
    """While the supervisor loop runs, a timeout or Ctrl-C kills the child tree instead of the loop.

    The supervisor runs in the pytest process's main thread, where Python runs signal handlers. A handler
    that raises there (pytest-timeout's ``Timeout (>Ns)`` failure, ``KeyboardInterrupt``) would leave the
    supervisor loop in the middle, with the confined tree still running and nobody supervising it. Instead
    the handler is called from a wrapper: if it raises, the exception is kept, every confined process this
    call started is killed (so the supervisor loop ends as for any crash and reaps the tree), and the
    exception is raised once ``Sandbox.call`` has returned. A handler that returns normally changes nothing.

    pytest-timeout's thread method ends the whole pytest process with ``os._exit(1)`` because a thread cannot
    be interrupted. A sandboxed test's code runs in the child, which can: while the call phase runs, the
    timer's function is replaced so that it kills the child tree and fails the test with pytest-timeout's
    message; the session goes on. (A timeout in setup or teardown keeps pytest-timeout's own behaviour.)
    """

    # Plain ints, used with _signal, the C module that signal.signal/getsignal wrap: those turn every
    # handler into an enum member and back (a ValueError raised and caught per callable handler),
    # some 40 pages the pytest process writes per test while it shares them with the child.
    SIGNALS = (int(signal.SIGALRM), int(signal.SIGINT))
    RETRY = 0.05  # seconds: when the child is not confined yet at the alarm, try the kill again

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.pending: Optional[BaseException] = None
        self._saved: dict[int, Any] = {}
        self.root: Optional[int] = None  # the confined child, once launched (Sandbox on_launch)
        self._armed = False
        self._wrapped = False  # handlers wrapped (once per call, at launch)
        self._active = False
        self._timer: Optional[tuple[Any, Any]] = None

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._active = True
        return self

    def _arm(self) -> None:
        """Wrap the handlers; called from ``launched``, i.e. in the parent once it holds the
        listener, while the child runs the test (off the test's path). Before that moment a raising
        handler simply propagates, and the launcher or ``Sandbox._supervise`` kills the tree."""
        for signum in self.SIGNALS:
            handler = _signal.getsignal(signum)
            if callable(handler):
                self._saved[signum] = handler
                _signal.signal(signum, self._wrap(handler))
        self._hook_timeout_thread()

    def __exit__(self, *exc_info: Any) -> None:
        self._active = False
        if self._armed:  # our retry alarm must not reach the restored handler (pytest-timeout's is spent)
            signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._saved.items():
            _signal.signal(signum, handler)
        self._saved.clear()
        if self._timer is not None:
            timer, original = self._timer
            timer.function = original
            self._timer = None
        # None first: pytest.fail.Exception is three look-ups, pages written in every test's end.
        if self.pending is not None and isinstance(self.pending, pytest.fail.Exception):
            self.pending.pytrace = False  # the pytest-process traceback would only show this guard

    def _wrap(self, handler: Callable[..., Any]) -> Callable[[int, Any], None]:
        def guarded(signum: int, frame: Any) -> None:
            __tracebackhide__ = True
            if self.pending is not None:  # already interrupted: finish killing
                self._kill_or_retry()
                return
            try:
                handler(signum, frame)
            except BaseException as exc:  # noqa: BLE001 - kept and raised after the supervisor is done
                self.pending = exc
                self._kill_or_retry()

        return guarded

    def _hook_timeout_thread(self) -> None:
        module = sys.modules.get("pytest_timeout")
        original_fn = getattr(module, "timeout_timer", None)
        if original_fn is None or threading.active_count() == 1:  # no timer thread is running
            return
        name = f"pytest_timeout {self.nodeid}"
        for timer in threading.enumerate():
            if isinstance(timer, threading.Timer) and timer.name == name and timer.function is original_fn:
                break
        else:
            return
        message = str(getattr(module, "PYTEST_FAILURE_MESSAGE", "Timeout (>%ss) from pytest-timeout."))
        original = timer.function
        args = tuple(timer.args)

        def fire(*a: Any, **kw: Any) -> None:
            if not self._active:
                original(*a, **kw)
                return
            settings = args[1] if len(args) > 1 else None
            self.pending = pytest.fail.Exception(message % getattr(settings, "timeout", "?"), pytrace=False)
            while self._active and not self.kill_confined():
                threading.Event().wait(self.RETRY)

        timer.function = fire
        self._timer = (timer, original)

    def _kill_or_retry(self) -> None:
        if not self.kill_confined() and signal.SIGALRM in self._saved:
            signal.setitimer(signal.ITIMER_REAL, self.RETRY)  # the alarm comes back to ``guarded``
            self._armed = True

    def launched(self, pid: int) -> None:
        self.root = pid
        if self._active and not self._wrapped:
            self._wrapped = True
            self._arm()

    def kill_confined(self) -> bool:
        """SIGKILL the confined tree of this call (the root, its descendants, orphans it left to the
        pytest process); False while the child is not launched yet."""
        from pytest_sandlock.engine import proctree

        if self.root is None:
            return False
        # This runs in a signal handler: an unreadable /proc must not raise here. What was found
        # is killed; the supervisor's end of run lists the tree again and reports what it cannot.
        try:
            orphans = proctree.confined_children(proctree.own_filter_count())
        except TreeUnreadable as exc:
            orphans = exc.found
        try:
            tree = proctree.descendants([self.root, *orphans])
        except TreeUnreadable as exc:
            tree = exc.found or [self.root]
        found = False
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
                found = True
            except ProcessLookupError:
                pass
        return found


@contextlib.contextmanager
def _fork_warning_filtered(guard: InterruptGuard) -> Iterator[InterruptGuard]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=FORK_WARNING, category=DeprecationWarning)
        with guard:
            yield guard


def quiet_fork_warning(guard: InterruptGuard) -> contextlib.AbstractContextManager[InterruptGuard]:
    """``guard``, entered with Python 3.12+'s DeprecationWarning about forking a threaded process
    silenced: forking a threaded pytest (xdist workers) is what this plugin does on purpose. 3.11 has
    no such warning, and there only the guard is entered: the filter costs a test 0.1 ms, and even an
    empty context manager is pages the parent writes."""
    if sys.version_info < (3, 12):
        return guard
    return _fork_warning_filtered(guard)
