"""The fork that starts a confined child, without CPython's repairs when there is nothing to repair.

``os.fork()`` runs ``PyOS_AfterFork_Child`` in the child. It re-creates the GIL, the import lock
and the thread states, then calls every ``os.register_at_fork(after_in_child=...)`` handler, among
them ``threading._after_fork`` and logging's lock re-initialisation. All of that repairs what other
threads left behind at the fork. It is also Python code running in a fresh copy-on-write child:
about 200 page faults before the child runs a line of ours, 0.45 ms on the project's VM (a fifth of
a bare fork of a pytest process; ``benchmarks/bench_machine.py`` measures both).

When the process has exactly one thread there is nothing to repair. ``fork()`` then calls libc's
``fork()`` through ``ctypes.PyDLL``, which keeps the GIL held across the call (there is no other
thread to want it, and the child inherits a consistent GIL owned by its only thread). The at-fork
handlers that still mean something in a single-threaded process are kept, in CPython's order:
``before`` handlers in reverse registration order just before the fork, ``after_in_parent`` ones in
the parent after it, and ``after_in_child`` ones (random's reseed, and every handler this module
does not know, whatever its author meant it to do) in the child. The child's are returned to the
caller instead of run, so that they run once the child is confined: a handler that starts a thread
then starts it inside the sandbox. Only handlers whose whole job is repairing locks and thread
records of other threads are skipped, and only when there were no other threads.

Anything unusual falls back to ``os.fork()``: more than one thread, a runtime other than CPython with
a GIL, at-fork registries that could not be located, or ``PYTEST_SANDLOCK_OS_FORK=1`` in the
environment.

Written here: no library offers a fork that skips the interpreter's after-fork work.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from collections.abc import Callable
from typing import Optional

Handler = Callable[[], object]

_TASK_DIR = "/proc/self/task"


def _marker_before() -> None:
    """Registered with os.register_at_fork only to find the registry lists; does nothing."""


def _marker_parent() -> None:
    """See _marker_before."""


def _marker_child() -> None:
    """See _marker_before."""


class _Registries:
    """The interpreter's three at-fork handler lists (live: later registrations appear in them)."""

    def __init__(self, before: list[Handler], parent: list[Handler], child: list[Handler]) -> None:
        self.before = before
        self.parent = parent
        self.child = child


_registries: Optional[_Registries] = None
_located = False
_libc_fork: Optional[Callable[[], int]] = None


def _locate() -> Optional[_Registries]:
    """Find the registry lists once: register marker handlers, then look for the lists holding them.

    The lists are private interpreter state, reachable only as the garbage collector's referrers of
    a registered handler (one heap walk, about 5 ms in a pytest process, done once)."""
    global _located, _registries, _libc_fork
    if _located:
        return _registries
    _located = True
    if sys.implementation.name != "cpython" or getattr(sys, "_is_gil_enabled", lambda: True)() is False:
        return None
    try:
        fork = ctypes.PyDLL(None, use_errno=True).fork
    except (OSError, AttributeError):
        return None
    fork.restype = ctypes.c_int
    fork.argtypes = []
    os.register_at_fork(before=_marker_before, after_in_parent=_marker_parent, after_in_child=_marker_child)
    found: dict[str, list[Handler]] = {}
    for holder in gc.get_referrers(_marker_before, _marker_parent, _marker_child):
        if type(holder) is not list:
            continue
        markers = (("before", _marker_before), ("parent", _marker_parent), ("child", _marker_child))
        for name, marker in markers:
            if any(entry is marker for entry in holder):
                found.setdefault(name, holder)
    if len(found) != 3 or len({id(v) for v in found.values()}) != 3:
        return None
    _libc_fork = fork
    _registries = _Registries(found["before"], found["parent"], found["child"])
    return _registries


def _moot_when_single_threaded() -> list[Callable[[Handler], bool]]:
    """Tests for handlers whose only job is repairing other threads' locks and records."""
    tests: list[Callable[[Handler], bool]] = []
    markers = (_marker_before, _marker_parent, _marker_child)
    tests.append(lambda h: any(h is m for m in markers))
    threading = sys.modules.get("threading")
    if threading is not None:
        after_fork = getattr(threading, "_after_fork", None)
        tests.append(lambda h: h is after_fork)
    logging = sys.modules.get("logging")
    if logging is not None:
        # 3.9-3.12: _acquireLock/_releaseLock; 3.13+: _prepareFork/_afterFork. All take or release
        # the module lock around the fork, and the child handler re-creates handler locks.
        names = ["_acquireLock", "_releaseLock", "_prepareFork", "_afterFork"]
        names.append("_after_at_fork_child_reinit_locks")
        logging_handlers = [getattr(logging, n) for n in names if hasattr(logging, n)]
        tests.append(lambda h: any(h is f for f in logging_handlers))
    futures_thread = sys.modules.get("concurrent.futures.thread")
    lock = getattr(futures_thread, "_global_shutdown_lock", None) if futures_thread else None
    if lock is not None:
        tests.append(lambda h: getattr(h, "__self__", None) is lock)
    return tests


def thread_count() -> int:
    """Threads of this process, or -1 if /proc cannot tell. The link count of /proc/self/task is
    2 + the number of threads: one stat instead of a directory listing."""
    try:
        return os.stat(_TASK_DIR).st_nlink - 2
    except OSError:
        return -1


_Lists = tuple[list[Handler], list[Handler], list[Handler], list[Handler]]
_kept: tuple[tuple[int, int, int], _Lists] | None = None


def _handlers_to_run(registries: _Registries) -> _Lists:
    """The (before, parent, child) handlers to run, and the child's without ``random``'s reseed (see
    ``fork``), recomputed only when a registry has grown (handlers cannot be unregistered, so the
    lengths tell)."""
    global _kept
    sizes = (len(registries.before), len(registries.parent), len(registries.child))
    if _kept is None or _kept[0] != sizes:
        moot = _moot_when_single_threaded()

        def keep(handlers: list[Handler]) -> list[Handler]:
            return [h for h in handlers if not any(test(h) for test in moot)]

        child = keep(registries.child)
        random_module = sys.modules.get("random")
        reseed = getattr(getattr(random_module, "_inst", None), "seed", None)
        keeping_random = [h for h in child if reseed is None or h != reseed]
        _kept = (sizes, (keep(registries.before), keep(registries.parent), child, keeping_random))
    return _kept[1]


def _single_threaded() -> bool:
    return thread_count() == 1


def _run_all(handlers: list[Handler]) -> None:
    """Run at-fork handlers as CPython does: an exception is reported and the next one still runs."""
    for handler in handlers:
        try:
            handler()
        except Exception:  # noqa: BLE001 - CPython reports and carries on, so do we
            sys.stderr.write(f"Exception ignored in at-fork handler {handler!r}:\n")
            import traceback

            traceback.print_exc()


def fork(keep_random_state: bool = False) -> tuple[int, Optional[list[Handler]]]:
    """Fork; returns ``(pid, child_handlers)``.

    In the child (pid 0) ``child_handlers`` are the at-fork handlers still to run: the caller runs
    them with ``run_child_handlers`` when it is ready to (after confinement). It is None after
    ``os.fork()``: the interpreter has run them already (and a thread they started may exist).
    In the parent it is always None.

    The garbage collector is frozen around the fork (``gc.freeze()``) and unfrozen in the parent
    only: the child returns with every inherited object frozen, and its caller unfreezes once the
    child is ready to run code that may look at the collector (``launcher.launch`` does, right
    before the target). Unfrozen, those objects join the oldest generation, so the child's young
    collections still do not walk the inherited heap.

    ``keep_random_state``: the child's ``random`` module continues from this process's state instead
    of being reseeded from the system (CPython's at-fork handler): for a child that stands in for this
    process for a while, such as a test's call phase, whose seed a fixture or a plugin set. The fast
    fork leaves the handler out; after ``os.fork()``, which runs it, the saved state is put back.
    """
    registries = None
    if os.environ.get("PYTEST_SANDLOCK_OS_FORK") != "1" and _single_threaded():
        registries = _locate()  # before the freeze below: frozen objects have no referrers to find
    # Freeze every existing object: until the child's caller unfreezes, no collection in the child
    # sees an inherited object, and after it they all sit in the oldest generation, so the child's
    # frequent young collections do not walk (and so copy-on-write) the pytest process's heap.
    gc.freeze()
    try:
        pid, handlers = _fork(registries, keep_random_state)
    except BaseException:
        gc.unfreeze()
        raise
    if pid:
        gc.unfreeze()  # the parent's collector resumes; the child's caller unfreezes its own
    return pid, handlers


def _os_fork(keep_random_state: bool) -> int:
    """``os.fork()``, which runs every at-fork handler, ``random``'s reseed among them: with
    ``keep_random_state`` the child gets this process's state back."""
    module = sys.modules.get("random") if keep_random_state else None
    state = module.getstate() if module is not None else None
    pid = os.fork()
    if pid == 0 and module is not None and state is not None:
        module.setstate(state)
    return pid


def _fork(
    registries: Optional[_Registries], keep_random_state: bool = False
) -> tuple[int, Optional[list[Handler]]]:
    if registries is None or _libc_fork is None:
        return _os_fork(keep_random_state), None
    before, parent_handlers, child_handlers, keeping_random = _handlers_to_run(registries)
    if keep_random_state:
        child_handlers = keeping_random
    sys.audit("os.fork")
    if before:
        _run_all(before[::-1])
    if before and not _single_threaded():
        # A before handler started a thread: a raw fork is no longer safe. Undo what the before
        # handlers did (their parent handlers), then fork as CPython does, which runs them all.
        _run_all(parent_handlers)
        return _os_fork(keep_random_state), None
    pid = _libc_fork()
    if pid < 0:
        err = ctypes.get_errno() or 11  # EAGAIN: fork's usual failure
        raise OSError(err, os.strerror(err))
    if pid == 0:
        return 0, child_handlers
    _run_all(parent_handlers)
    return pid, None


def run_child_handlers(handlers: list[Handler]) -> None:
    _run_all(handlers)
