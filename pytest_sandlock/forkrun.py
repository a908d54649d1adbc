"""Run a test's call phase in the sandbox and carry its outcome back into the pytest process.

The pytest process keeps setup and teardown. For the call phase the original ``item.runtest`` is handed to
``Sandbox.call``; in the forked, confined child :func:`_child_main` runs it and packs everything the
pytest process needs into plain data: the outcome (the exception, pickled when possible, plus pytest's own
failure representation built in the child, so assertion rewriting, ``--tb`` and ``--showlocals`` work),
the text written to in-memory captures (``--capture=sys``, ``capsys``; fd-level capture is shared through the
inherited descriptors), the caplog report text, the warnings, and what the test added to its item (markers,
such as a dynamic xfail, and ``user_properties``). :func:`run_call` applies those to the item and re-raises
the outcome in the pytest process, so skip/xfail/``-x``/``pytest.exit`` behave as usual, and records the
events.

Its companions: :mod:`pytest_sandlock.exception_transport` (how the outcome's exception crosses back),
:mod:`pytest_sandlock.coverage_bridge` (coverage data measured in the child) and
:mod:`pytest_sandlock.interrupt_guard` (pytest-timeout and Ctrl-C during the call).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import os
import shutil
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import pytest

from pytest_sandlock import strict
from pytest_sandlock.coverage_bridge import CoverageBridge
from pytest_sandlock.engine.errors import (
    ChildException,
    KernelFeatureError,
    SandboxCrash,
    SandboxError,
)
from pytest_sandlock.engine.policy import Policy, SyscallEvent, coerce_verdict
from pytest_sandlock.exception_transport import (
    UNRESTORED,
    exception_data,
    outcome_exception,
    rebuild_exception_value,
    rebuild_outcome,
    safe_str,
    try_pickle,
    try_unpickle,
)
from pytest_sandlock.fixture import FIXTURE_KEY
from pytest_sandlock.interrupt_guard import InterruptGuard, quiet_fork_warning
from pytest_sandlock.markers import SandboxSpec
from pytest_sandlock.options import Settings

if TYPE_CHECKING:
    from pytest_sandlock.engine.sandbox import Sandbox

SPEC_KEY = pytest.StashKey[SandboxSpec]()
UNCONFINED_KEY = pytest.StashKey[bool]()
RECORD_KEY = pytest.StashKey["CallRecord"]()

# Writes the audit summary does not list: devices, terminals and new pseudo-terminals.
_DEVICES = (
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
    "/dev/shm",
)


@dataclass
class CallRecord:
    """What the call phase of one sandboxed test left for its report."""

    events: list[SyscallEvent] = field(default_factory=list)
    exception: Optional[BaseException] = None  # raised in the pytest process on the child's behalf
    longrepr: Any = None  # the child's failure representation, replacing the pytest-process one
    strict_denials: list[SyscallEvent] = field(default_factory=list)
    threads_note: str = ""  # for a failed test's report: see _threads_left_behind


class SandboxedTestError(Exception):
    """Stands in for an exception raised in the sandbox that could not be carried back as itself."""


class Runner:
    """Per-session state of the fork runner (settings, always-writable paths, descriptors to close)."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._writable: Optional[tuple[str, ...]] = None
        self._basetemp_made = False  # set once extra_writable or basetemp_for has made it
        self._close_fds: Optional[tuple[int, ...]] = None
        self._kept: Optional[set[int]] = None
        self._coverage_staging: Optional[str] = None
        self._sandboxes: dict[tuple[Policy, Optional[Callable[..., Any]]], Sandbox] = {}

    def sandbox_for(self, policy: Policy, policy_fn: Optional[Callable[..., Any]]) -> Sandbox:
        """The Sandbox for a policy, built once: most tests of a suite share a handful of policies,
        and building one (writable paths, ruleset look-up) costs page faults in a just-forked process."""
        key = (policy, policy_fn)
        sandbox = self._sandboxes.get(key)
        if sandbox is None:
            from pytest_sandlock.engine.sandbox import Sandbox  # first use: unsandboxed runs never pay

            if gc.collect is _collect:
                gc.collect = _counting_collect  # see _INHERITED_GARBAGE

            if len(self._sandboxes) >= 64:  # per-test callables (event hooks) must not pile up
                self._sandboxes.clear()
            sandbox = Sandbox(
                policy,
                policy_fn,
                audit=self.settings.audit,
                extra_fs_write=self.extra_writable(),
                retire_fds=True,  # closed while the next test's child confines itself (see release)
                keep_random_state=True,  # a seed a fixture or pytest-randomly set reaches the test
            )
            self._sandboxes[key] = sandbox
        return sandbox

    @staticmethod
    def release() -> None:
        """Close what the last sandboxed run left to the next one (``Sandbox(retire_fds=True)``)."""
        launcher = sys.modules.get("pytest_sandlock.engine.launcher")  # never imported: nothing to do
        if launcher is not None:
            launcher.close_retired()

    def coverage_staging(self) -> str:
        """A directory the child may write (under the system temp dir) for coverage data files."""
        if self._coverage_staging is None:
            path = tempfile.mkdtemp(prefix="pytest-sandlock-cov-")
            self._coverage_staging = os.path.realpath(path)
            self.config.add_cleanup(lambda: shutil.rmtree(path, ignore_errors=True))
        return self._coverage_staging

    def extra_writable(self) -> tuple[str, ...]:
        """Writable on top of the engine's own set (system temp dir, devices): pytest's basetemp."""
        if self._writable is not None:
            return self._writable
        paths = [tempfile.gettempdir()]
        factory = getattr(self.config, "_tmp_path_factory", None)
        try:
            if factory is not None and self._basetemp_outside_temp_dir():
                paths.append(str(factory.getbasetemp()))
                self._basetemp_made = True
        except OSError:
            # pytest cannot make its basetemp (a shared /tmp where pytest-of-<user> belongs to
            # someone else, a file in the way of --basetemp): without the plugin only the tests
            # asking for tmp_path fail, at their setup, and so they do with it. Asked again next
            # time, in case it can be made by then.
            return tuple(dict.fromkeys(os.path.realpath(p) for p in paths))
        self._writable = tuple(dict.fromkeys(os.path.realpath(p) for p in paths))
        return self._writable

    def _basetemp_outside_temp_dir(self) -> bool:
        """Whether pytest's basetemp needs a rule of its own. By default it is made under the system
        temp dir, writable already: then it is left for pytest to make when a test first asks for
        ``tmp_path``, as without the plugin (making it costs a directory and, at exit, the clean-up
        of old ones). A ``--basetemp`` is always made here: pytest empties it when it makes it, which
        must not happen later in a test's child."""
        if self.config.getoption("basetemp", None):
            return True
        temp = os.path.realpath(tempfile.gettempdir())
        root = os.path.realpath(os.environ.get("PYTEST_DEBUG_TEMPROOT") or temp)
        return not (root == temp or root.startswith(temp.rstrip(os.sep) + os.sep))

    def basetemp_for(self, item: pytest.Item) -> None:
        """Make pytest's basetemp before the fork when the test could ask for ``tmp_path`` inside its
        call (through ``request``) and none was made yet. Made in a child, it would be that child's
        alone: a numbered directory the pytest process does not know, its lock never released."""
        if self._basetemp_made or "request" not in getattr(item, "fixturenames", ()):
            return
        factory = getattr(self.config, "_tmp_path_factory", None)
        try:
            if factory is not None:
                factory.getbasetemp()
        except OSError:
            return  # pytest fails the test that asks for tmp_path, at the same call (see extra_writable)
        self._basetemp_made = True

    def writable_root_of(self, path: str) -> Optional[str]:
        """The always-writable directory (system temp dir, basetemp) that contains ``path``, if any.
        Nothing is created to answer (pytest makes its basetemp when a test first asks for it)."""
        given = self.config.getoption("basetemp", None)
        temp_root = os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir()
        real = os.path.realpath(path)
        for root in dict.fromkeys(os.path.realpath(p) for p in (tempfile.gettempdir(), given or temp_root)):
            if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
                return root
        return None

    def temp_roots(self) -> tuple[str, ...]:
        """Where writes are not worth listing in the audit summary."""
        return (*self.extra_writable(), *_DEVICES)

    def snapshot_fds(self) -> None:
        """Remember the descriptors open when the session starts: pytest's, its plugins' and inherited
        ones. Descriptors opened later (by fixtures, to hand to tests) are never closed in the child."""
        self._session_fds: dict[int, tuple[int, int]] = {}
        try:
            numbers = {int(fd) for fd in os.listdir("/proc/self/fd")} - {0, 1, 2}
        except OSError:
            numbers = set()
        for fd in numbers:
            identity = _identity(fd)
            if identity is not None:
                self._session_fds[fd] = identity

    def _kept_fds(self) -> set[int]:
        """Pre-session descriptors the child keeps: capture's files (the test's output goes there,
        and ``capsys.disabled()`` restores the terminal from them) and the ``--log-file`` stream."""
        keep: set[int] = set()
        capman = self.config.pluginmanager.getplugin("capturemanager")
        multi = getattr(capman, "_global_capturing", None)
        for name in ("in_", "out", "err"):
            capture = getattr(multi, name, None)
            for attr in ("targetfd_save", "targetfd_invalid"):
                value = getattr(capture, attr, None)
                if isinstance(value, int):
                    keep.add(value)
            fd = _fileno(getattr(capture, "tmpfile", None))
            if fd is not None:
                keep.add(fd)
        logging_plugin = self.config.pluginmanager.get_plugin("logging-plugin")
        fd = _fileno(getattr(getattr(logging_plugin, "log_file_handler", None), "stream", None))
        if fd is not None:
            keep.add(fd)
        return keep

    def close_fds(self) -> tuple[int, ...]:
        """Descriptors to close in the child: every one open before the session started (pytest's and
        its plugins', inherited ones) except capture's and the log file's, and pytest-xdist's channel
        and pytest-reportlog's file in any case."""
        if self._close_fds is None:
            fds: set[int] = set()
            for plugin in self.config.pluginmanager.get_plugins():
                io_obj = getattr(getattr(getattr(plugin, "channel", None), "gateway", None), "_io", None)
                for name in ("infile", "outfile"):
                    fd = _fileno(getattr(io_obj, name, None))
                    if fd is not None:
                        fds.add(fd)
                if type(plugin).__name__ == "ReportLogPlugin":
                    fd = _fileno(getattr(plugin, "_file", None))
                    if fd is not None:
                        fds.add(fd)
            self._close_fds = tuple(sorted(fd for fd in fds if fd > 2))
        # Pre-session descriptors still open on the same file (a number closed and reused since, by
        # a fixture say, is not pytest's any more): checked at every call.
        session = getattr(self, "_session_fds", {})
        if self._kept is None:
            # Once: capture's files and the log file are the session's. Should one of them be closed
            # and its number reused, the new file no longer matches the snapshot, and is kept anyway.
            self._kept = self._kept_fds() if session else set()
        kept = self._kept
        pre_session = {fd for fd, identity in session.items() if fd not in kept and _identity(fd) == identity}
        return tuple(sorted(set(self._close_fds) | pre_session))


def _identity(fd: int) -> Optional[tuple[int, int]]:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _fileno(obj: Any) -> Optional[int]:
    try:
        return int(obj.fileno()) if obj is not None else None
    except (AttributeError, OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------------
# policy and callback composition (pytest process)
# --------------------------------------------------------------------------------------------------------


def apply_policy_hooks(item: pytest.Item, policy: Policy, ihook: Any = None) -> Policy:
    """Chain the ``pytest_sandlock_policy`` implementations: each sees the previous one's result."""
    hook = (ihook or item.ihook).pytest_sandlock_policy
    for impl in reversed(hook.get_hookimpls()):
        if impl.hookwrapper or getattr(impl, "wrapper", False):
            continue
        available = {"item": item, "policy": policy}
        result = impl.function(*[available[name] for name in impl.argnames])
        if result is None:
            continue
        if not isinstance(result, Policy):
            raise TypeError(
                f"pytest_sandlock_policy in {impl.plugin_name} returned {result!r}, not a Policy or None"
            )
        policy = result
    return policy


def compose_policy_fn(
    item: pytest.Item, marker_fn: Optional[Callable[..., Any]], ihook: Any = None
) -> Optional[Callable[..., Any]]:
    """One callable for the engine: the marker's policy_fn, then the pytest_sandlock_event hook.

    The most restrictive answer wins; an invalid value is returned as is, so that the engine denies the
    syscall and reports the problem. Returns None when there is nothing to consult (the engine's fast path).
    """
    hook = (ihook or item.ihook).pytest_sandlock_event
    if not hook.get_hookimpls():
        return marker_fn

    def combined(event: SyscallEvent, ctx: Any) -> Any:
        first = None
        if marker_fn is not None:
            first = marker_fn(event, ctx)
            verdict, problem = coerce_verdict(first)
            if problem is not None or verdict.is_deny:
                return first
        second = hook(item=item, event=event, ctx=ctx)
        if second is None:
            return first
        verdict2, problem2 = coerce_verdict(second)
        if problem2 is not None or verdict2.is_deny or first is None:
            return second
        return first if coerce_verdict(first)[0].is_audit else second

    return combined


# --------------------------------------------------------------------------------------------------------
# the child side
# --------------------------------------------------------------------------------------------------------


def _memory_captures(config: pytest.Config) -> dict[str, io.TextIOWrapper]:
    """In-memory capture buffers (sys capture, capsys) that the child's writes would not reach the parent."""
    found: dict[str, io.TextIOWrapper] = {}
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        return found
    fixture = getattr(capman, "_capture_fixture", None)
    for prefix, multi in (
        ("global", getattr(capman, "_global_capturing", None)),
        ("fixture", getattr(fixture, "_capture", None)),
    ):
        for name in ("out", "err"):
            tmp = getattr(getattr(multi, name, None), "tmpfile", None)
            if isinstance(tmp, io.TextIOWrapper) and isinstance(getattr(tmp, "buffer", None), io.BytesIO):
                found[f"{prefix}.{name}"] = tmp
    return found


def _report_handler_stream(config: pytest.Config) -> Optional[io.StringIO]:
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    stream = getattr(getattr(plugin, "report_handler", None), "stream", None)
    return stream if isinstance(stream, io.StringIO) else None


@dataclass
class _ChildPrep:
    """What the child needs from pytest's state, looked up in the pytest process before the fork
    (where those objects were touched this cycle anyway): in the child every object touched for
    the first time costs a copy-on-write page fault."""

    captures: dict[str, io.TextIOWrapper]
    log_stream: Optional[io.StringIO]
    handle: Any
    recorder: list[Any]
    # pytest.Function.runtest is ``self.ihook.pytest_pyfunc_call(pyfuncitem=self)``: the hook, looked
    # up here, spares the child the look-up through the conftest modules of the item's path.
    pyfunc_call: Optional[Callable[..., Any]] = None
    nodeid: str = ""
    failed_counts: Optional[dict[Any, int]] = None  # the subtests plugin's failed-subtest counts
    subtests_key: Any = None  # this item's key there
    suite_properties: Optional[list[Any]] = None  # record_testsuite_property's list (--junit-xml)
    uncaught_kinds: tuple[str, ...] = ()  # pytest's queues of uncaught exceptions, and their kinds
    uncaught_queues: tuple[Any, ...] = ()

    @classmethod
    def of(
        cls, item: pytest.Item, runtest: Optional[Callable[[], None]] = None, ihook: Any = None
    ) -> _ChildPrep:
        # Warnings go where they would go in the pytest process: to the innermost recorder
        # (pytest's own, per test, or ``recwarn``'s, which the test may read). What was added to
        # it travels back.
        sink = getattr(getattr(warnings, "_showwarnmsg_impl", None), "__self__", None)
        suite_properties, uncaught_kinds, uncaught_queues = _session_prep(item.config)
        return cls(
            captures=_memory_captures(item.config),
            log_stream=_report_handler_stream(item.config),
            handle=item.stash.get(FIXTURE_KEY, None),
            recorder=sink if isinstance(sink, list) else [],
            pyfunc_call=(
                (ihook or item.ihook).pytest_pyfunc_call
                if getattr(runtest, "__func__", None) is pytest.Function.runtest
                and getattr(runtest, "__self__", None) is item
                else None
            ),
            nodeid=item.nodeid,
            failed_counts=item.config.stash[_FAILED_SUBTESTS_KEY]
            if _FAILED_SUBTESTS_KEY is not None
            else None,
            subtests_key=_subtests_key(item),
            suite_properties=suite_properties,
            uncaught_kinds=uncaught_kinds,
            uncaught_queues=uncaught_queues,
        )


# In a sandboxed child, while the test's call runs: (nodeid, reports logged for it, config). Subtests
# (pytest's subtests fixture, unittest's subTest) log a report of their own during the call, i.e.
# in the child: they are carried back and logged again in the pytest process.
_child_reports: Optional[tuple[str, list[Any], pytest.Config]] = None


def record_child_report(report: pytest.TestReport) -> None:
    """pytest_runtest_logreport, called first: keeps a report the running test logs in the child.
    A no-op in the pytest process."""
    recording = _child_reports
    if recording is None or report.nodeid != recording[0] or report.when != "call":
        return
    nodeid, reports, config = recording
    if not reports:
        # The other implementations run in this child after this one: its terminal reporter would
        # print the report in the middle of the progress line, and an xdist worker's would send it
        # down a channel whose descriptors the child has closed. The pytest process does both
        # once the report is back. (Private attributes: best effort.)
        writer = getattr(config.pluginmanager.get_plugin("terminalreporter"), "_tw", None)
        if writer is not None and hasattr(writer, "_file"):
            writer._file = io.StringIO()
        for plugin in config.pluginmanager.get_plugins():
            if type(plugin).__name__ == "WorkerInteractor" and hasattr(plugin, "channel"):
                plugin.channel = _NullChannel()
    _with_shown_parameters(report)  # before the other implementations serialize it
    reports.append(report)


def _with_shown_parameters(report: Any) -> None:
    """A subtest's parameters (``subtests.test(**kwargs)``, ``self.subTest(**params)``) can be
    anything, which pytest's own serialization deep-copies (an xdist worker's too) and pickle or the
    pytest process's unpickler would refuse: those that are not builtin scalars are replaced, in
    this child's report, by stand-ins that show as they did."""
    context = getattr(report, "context", None)
    kwargs = getattr(context, "kwargs", None)
    if isinstance(kwargs, dict) and dataclasses.is_dataclass(context) and not isinstance(context, type):
        if all(value is None or isinstance(value, (str, int, float, bool)) for value in kwargs.values()):
            return  # nothing to replace (pytest 9.2+ keeps them as their reprs already)
        shown = {
            key: value
            if value is None or isinstance(value, (str, int, float, bool))
            else _Shown(_safe_repr(value))
            for key, value in kwargs.items()
        }
        report.context = dataclasses.replace(context, kwargs=shown)


def _restore_parameters(report: Any, data: Any) -> None:
    """pytest 9.2+ turns a subtest's parameters into their reprs whenever it makes a subtest context,
    rebuilding one from its serialized form included, so they would show quoted twice ("i='1'"): a
    rebuilt report gets back the values it was serialized with, already reprs, as logged in the child."""
    context = getattr(report, "context", None)
    kwargs = getattr(context, "kwargs", None)
    sent_context = data.get("_subtest.context") if isinstance(data, dict) else None
    sent = sent_context.get("kwargs") if isinstance(sent_context, dict) else None
    if not isinstance(kwargs, dict) or not isinstance(sent, dict) or not sent:
        return
    reprs = all(isinstance(v, str) for v in sent.values())
    if reprs and kwargs == {key: _safe_repr(value) for key, value in sent.items()}:
        object.__setattr__(context, "kwargs", dict(sent))  # frozen dataclass: as pytest itself sets it


def _serialized_sub_report(config: pytest.Config, report: Any) -> Any:
    """A subtest's report as plain data (see _with_shown_parameters, applied when it was logged)."""
    return _plain_data(config.hook.pytest_report_to_serializable(config=config, report=report))


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a repr that raises
        return f"<{type(value).__name__}>"


def _plain_data(value: Any, depth: int = 0) -> Any:
    """``value`` with anything but builtin data replaced by its repr: a serialized report carries
    the subtest's parameters as they are (a memoryview, an exception), which neither pickle nor the
    pytest process's restricted unpickler would take."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if depth < 20 and isinstance(value, dict):
        return {str(k): _plain_data(v, depth + 1) for k, v in value.items()}
    if depth < 20 and isinstance(value, (list, tuple)):
        return [_plain_data(v, depth + 1) for v in value]
    return {_REPR_KEY: _safe_repr(value)}


_REPR_KEY = "__sandlock_repr__"


class _Shown:
    """In the child, what stands for a subtest parameter that could not cross back: it shows as the
    original did, and serializes as its repr."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _unplain_data(value: Any) -> Any:
    """``_plain_data``'s stand-ins, back as the originals' reprs (plain strings: an xdist worker
    sends the report on, and execnet serializes builtin types only)."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(_REPR_KEY), str):
            return value[_REPR_KEY]
        return {k: _unplain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplain_data(v) for v in value]
    return value


class _NullChannel:
    """Stands in for an xdist worker's channel in a sandboxed child (see record_child_report)."""

    def send(self, item: object) -> None:
        pass


def _failed_subtests_key() -> Any:
    """pytest's count of a test's failed subtests (pytest 9+), which fails a test that passed but
    has failed subtests; None before pytest 9."""
    try:
        from _pytest.subtests import failed_subtests_key
    except ImportError:
        return None
    return failed_subtests_key


_FAILED_SUBTESTS_KEY = _failed_subtests_key()  # looked up once, not in every child


def _junitxml_key() -> Any:
    """Where pytest keeps its --junit-xml writer, whose ``global_properties`` list collects what
    ``record_testsuite_property`` records; None if that cannot be found."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:
        return None
    return xml_key


_JUNITXML_KEY = _junitxml_key()


def _uncaught_collectors() -> dict[str, tuple[Any, Any]]:
    """pytest's (8.4+) queues of exceptions no test can catch, by kind: raised in a finalizer such as
    ``__del__`` (``sys.unraisablehook``) and in a thread (``threading.excepthook``). Each kind's
    (stash key of the queue, record class); pytest warns about what is queued after each test phase,
    in the pytest process. Kinds this pytest does not have are left out."""
    found: dict[str, tuple[Any, Any]] = {}
    try:
        from _pytest.unraisableexception import UnraisableMeta, unraisable_exceptions

        found["unraisable"] = (unraisable_exceptions, UnraisableMeta)
    except ImportError:
        pass
    try:
        from _pytest.threadexception import ThreadExceptionMeta, thread_exceptions

        found["thread"] = (thread_exceptions, ThreadExceptionMeta)
    except ImportError:
        pass
    return found


_UNCAUGHT = _uncaught_collectors()


def _uncaught_queues(config: pytest.Config) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The kinds and pytest's queues for them in this session (both made at configure)."""
    found = [(kind, config.stash.get(key, None)) for kind, (key, _) in _UNCAUGHT.items()]
    found = [(kind, queue) for kind, queue in found if queue is not None]
    return tuple(kind for kind, _ in found), tuple(queue for _, queue in found)


# What the child needs from the session, looked up once per session (see _ChildPrep.of).
_SESSION_PREP_KEY = pytest.StashKey[tuple[Optional[list[Any]], tuple[str, ...], tuple[Any, ...]]]()


def _session_prep(config: pytest.Config) -> tuple[Optional[list[Any]], tuple[str, ...], tuple[Any, ...]]:
    """(record_testsuite_property's list, the uncaught-exception kinds and their queues)."""
    found = config.stash.get(_SESSION_PREP_KEY, None)
    if found is None:
        found = (_suite_properties(config), *_uncaught_queues(config))
        config.stash[_SESSION_PREP_KEY] = found
    return found


def _uncaught_data(entry: Any) -> dict[str, Any]:
    """One queued record (or the hook's own failure, an exception) as plain data."""
    if isinstance(entry, BaseException):
        return {"error": exception_data(entry)}
    exc = getattr(entry, "exc_value", None)
    return {
        "msg": safe_str(getattr(entry, "msg", "")),
        "cause_msg": safe_str(getattr(entry, "cause_msg", "")),
        "exc": exception_data(exc) if isinstance(exc, BaseException) else None,
    }


def _queue_uncaught(config: pytest.Config, uncaught: Any) -> None:
    """Queue in the pytest process what the child's test left in its copies of pytest's queues: pytest
    then warns about it after the call phase (or fails the test under -W error), as without the sandbox."""
    for kind, entries in uncaught.items() if isinstance(uncaught, dict) else ():
        key, record = _UNCAUGHT.get(kind, (None, None))
        queue = config.stash.get(key, None) if key is not None else None
        if queue is None or not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("error"), dict):
                error = rebuild_exception_value(entry["error"])
                queue.append(error or RuntimeError(str(entry["error"].get("text", ""))))
                continue
            exc = rebuild_exception_value(entry["exc"]) if isinstance(entry.get("exc"), dict) else None
            queue.append(
                record(msg=str(entry.get("msg")), cause_msg=str(entry.get("cause_msg")), exc_value=exc)
            )


def _suite_properties(config: pytest.Config) -> Optional[list[Any]]:
    """The --junit-xml writer's list of ``record_testsuite_property`` entries, if it writes one."""
    xml = config.stash.get(_JUNITXML_KEY, None) if _JUNITXML_KEY is not None else None
    found = getattr(xml, "global_properties", None)
    return found if isinstance(found, list) else None


def _subtests_key(item: pytest.Item) -> Any:
    """How pytest's subtests plugin keys an item's failed-subtest count: its ``id`` (a NodeId, pytest
    9.2+), else its node id string."""
    return getattr(item, "id", None) or item.nodeid


def _child_main(
    item: pytest.Item,
    runtest: Callable[[], None],
    coverage: Optional[CoverageBridge] = None,
    prep: Optional[_ChildPrep] = None,
) -> Optional[dict[str, Any]]:
    """Runs in the confined child: the test's call phase, packed into picklable data (None for a
    quiet pass: less to build, pickle and send in a process where every page written is copied)."""
    sys.dont_write_bytecode = True  # a denied .pyc write is noise, not a finding
    freed_before = _freed[0]  # see _INHERITED_GARBAGE
    config = item.config
    if prep is None:
        prep = _ChildPrep.of(item)
    child_problems: list[str] = []
    if "uvloop" in sys.modules:  # libuv keeps an io_uring ring in each loop (see io_uring_rings)
        from pytest_sandlock.engine.io_uring_rings import detach_rings

        child_problems.extend(detach_rings())
    if coverage is not None:
        problem = coverage.redirect_in_child()
        if problem:
            child_problems.append(problem)
    captures = prep.captures
    for buf in captures.values():  # the pytest process keeps what was there before the fork
        buf.seek(0)
        buf.truncate()
    recorder = prep.recorder
    already = len(recorder)
    # What the test adds to its own item lives in this process's copy: pytest's skipping plugin
    # evaluates a dynamic xfail (add_marker, applymarker) after the call in the pytest process, and
    # junitxml reads user_properties (record_property) there. Lengths and the first mark, not
    # copies: every object touched here is a page fault. add_marker(append=False) inserts marks in
    # front of the first one.
    own_markers = item.own_markers
    marks_before = len(own_markers)
    first_mark = own_markers[0] if own_markers else None
    properties = item.user_properties
    properties_before = len(properties)
    sections = item._report_sections  # add_report_section: shown with the test's report
    sections_before = len(sections)
    suite_properties = prep.suite_properties
    suite_before = len(suite_properties) if suite_properties is not None else 0
    uncaught_before = tuple(map(len, prep.uncaught_queues))  # no function objects: pages to copy
    global _child_reports
    sub_reports: list[Any] = []
    failed_counts = prep.failed_counts
    subtests_key = prep.subtests_key
    failed_before = failed_counts.get(subtests_key, 0) if failed_counts is not None else 0
    _child_reports = (prep.nodeid, sub_reports, config)
    excinfo: Optional[pytest.ExceptionInfo[BaseException]] = None
    try:  # what CallInfo.from_call does, without its timing objects: pages written after the fork
        if prep.pyfunc_call is not None:
            prep.pyfunc_call(pyfuncitem=item)  # runtest(), as pytest.Function has it
        else:
            runtest()
    except BaseException:  # noqa: BLE001 - every outcome crosses back
        excinfo = pytest.ExceptionInfo.from_current()
    _child_reports = None
    failed_subtests = failed_counts.get(subtests_key, 0) - failed_before if failed_counts is not None else 0
    # A unittest.TestCase's runtest raises nothing: unittest hands failures, errors, skips and
    # expected failures to the item (addFailure & co.), which keeps them in _excinfo for pytest's
    # makereport to pop. That happens in the pytest process, on its own copy of the item: take
    # the outcome here, as pytest's unittest plugin would, so that it crosses back.
    recorded_outcomes = getattr(item, "_excinfo", None)
    if recorded_outcomes:
        excinfo = recorded_outcomes.pop(0)
    recorded = [w for w in recorder[already:] if isinstance(w, warnings.WarningMessage)]
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if coverage is not None:
        problem = coverage.save_in_child()
        if problem:
            child_problems.append(f"coverage data of the sandboxed child not saved: {problem}")
    handle = prep.handle
    denials_read = bool(handle is not None and handle.denials_read)
    captured = {key: buf.buffer.getvalue() for key, buf in captures.items()}  # type: ignore[attr-defined]
    stream = prep.log_stream
    log = stream.getvalue() if stream is not None else ""
    marks_added = len(own_markers) != marks_before
    properties_added = len(properties) != properties_before
    sections_added = len(sections) != sections_before
    suite_added = suite_properties is not None and len(suite_properties) != suite_before
    uncaught_added = tuple(map(len, prep.uncaught_queues)) != uncaught_before
    freed = _freed[0] - freed_before
    if excinfo is None and not (
        child_problems
        or recorded
        or denials_read
        or log
        or any(captured.values())
        or marks_added
        or properties_added
        or sections_added
        or suite_added
        or uncaught_added
        or freed > _INHERITED_GARBAGE
        or sub_reports
        or failed_subtests
    ):
        return None  # a quiet pass, the common case: nothing to carry back (see run_call)
    out: dict[str, Any] = {"exception": None, "internal": child_problems, "gc_freed": freed}
    out["marks"] = []
    if marks_added:
        out["marks"] = _added_marks(item.nodeid, own_markers, marks_before, first_mark, out["internal"])
    out["user_properties"] = [_portable_property(p) for p in properties[properties_before:]]
    out["uncaught"] = {
        kind: [_uncaught_data(entry) for entry in list(queue)[before:]]
        for kind, queue, before in zip(prep.uncaught_kinds, prep.uncaught_queues, uncaught_before)
        if len(queue) > before
    }
    # (name, escaped text) pairs, as junitxml's add_global_property stores them
    added_to_suite = suite_properties[suite_before:] if suite_properties is not None else []
    out["suite_properties"] = [list(p) for p in added_to_suite]
    out["report_sections"] = [tuple(safe_str(part) for part in entry) for entry in sections[sections_before:]]
    out["sub_reports"] = []
    for report in sub_reports:
        try:
            out["sub_reports"].append(_serialized_sub_report(config, report))
        except Exception as problem:  # noqa: BLE001 - said, and a failed one still fails the test
            out["internal"].append(
                f"a subtest report could not cross back: {type(problem).__name__}: {problem}"
            )
            failed_subtests += bool(report.failed)
    out["failed_subtests"] = failed_subtests
    if excinfo is not None:
        exc = excinfo.value
        call = pytest.CallInfo.from_call(lambda: None, when="call")  # for the report's longrepr
        call.excinfo = excinfo
        report = pytest.TestReport.from_item_and_call(item, call)
        data = config.hook.pytest_report_to_serializable(config=config, report=report)
        keep = ("$report_type", "nodeid", "location", "outcome", "longrepr", "when")
        out["exception"] = exception_data(exc) | {
            "outcome": outcome_exception(exc),
            "report": {k: data[k] for k in keep if k in data} | {"keywords": {}, "sections": []},
            # pytest's serialization turns a representation of its own kind (a doctest's) into text.
            "longrepr_is_text": isinstance(report.longrepr, str),
        }
    out["captures"] = captured
    out["log"] = log
    out["warnings"] = [
        {
            "message": try_pickle(w.message),
            "text": safe_str(w.message),
            "category": try_pickle(w.category),
            "filename": w.filename,
            "lineno": w.lineno,
            "line": w.line,
        }
        for w in recorded
    ]
    out["denials_read"] = denials_read
    return out


def _quiet_pass() -> dict[str, Any]:
    """What ``_child_main`` means by returning None: passed, printed, logged, warned and added to
    its item nothing."""
    return {
        "exception": None,
        "internal": [],
        "captures": {},
        "log": "",
        "warnings": [],
        "marks": [],
        "user_properties": [],
        "suite_properties": [],
        "uncaught": {},
        "report_sections": [],
        "sub_reports": [],
        "failed_subtests": 0,
    }


def _added_marks(
    nodeid: str, now: list[pytest.Mark], before: int, first: Optional[pytest.Mark], problems: list[str]
) -> list[dict[str, Any]]:
    """The marks the call added to the item (which had ``before`` marks, ``first`` the first of them),
    as data: name, pickled ``(args, kwargs)``, and whether it went in front of the item's own
    (``add_marker(append=False)``). A mark whose arguments do not pickle is reported in ``problems``
    (an internal warning) instead."""
    front = next((i for i, mark in enumerate(now) if mark is first), 0) if first is not None else 0
    candidates = [(mark, True) for mark in now[:front]] + [(mark, False) for mark in now[front + before :]]
    added: list[dict[str, Any]] = []
    for mark, in_front in candidates:
        pickled = try_pickle((mark.args, dict(mark.kwargs)))
        if pickled is None:
            problems.append(
                f"the marker {mark.name!r} that {nodeid} added during the call could not be carried "
                "back to the pytest process (its arguments do not pickle): pytest did not see it"
            )
            continue
        added.append({"name": mark.name, "args": pickled, "front": in_front})
    return added


def _portable_property(entry: object) -> dict[str, Any]:
    """A ``user_properties`` entry as data: pickled, and as text in case it cannot be restored as
    itself in the pytest process (text is what junitxml writes of a value anyway)."""
    text: Any
    if isinstance(entry, tuple) and len(entry) == 2:
        text = (safe_str(entry[0]), safe_str(entry[1]))
    else:
        text = safe_str(entry)
    return {"pickled": try_pickle(entry), "text": text}


# --------------------------------------------------------------------------------------------------------
# the pytest-process side
# --------------------------------------------------------------------------------------------------------


def _deliver_outputs(config: pytest.Config, out: dict[str, Any]) -> None:
    if not (any(out.get("captures", {}).values()) or out.get("log") or out.get("warnings")):
        return  # the common case: nothing was printed, logged or warned
    captures = _memory_captures(config)
    for key, data in out.get("captures", {}).items():
        buf = captures.get(key)
        if buf is None or not data:
            continue
        buf.flush()
        raw: Any = buf.buffer  # bypasses TeeCaptureIO's echo: the child already echoed it
        raw.seek(0, io.SEEK_END)
        raw.write(data)
    stream = _report_handler_stream(config)
    if stream is not None and out.get("log"):
        stream.write(out["log"])
    for w in out.get("warnings", ()):
        category = try_unpickle(w["category"])
        if not (isinstance(category, type) and issubclass(category, Warning)):
            category = UserWarning
        message = try_unpickle(w["message"])
        if not isinstance(message, Warning):
            try:
                message = category(w["text"])
            except Exception:
                message = UserWarning(w["text"])
        warnings.showwarning(message, category, w["filename"], w["lineno"], None, w["line"])


def _apply_item_changes(item: pytest.Item, out: dict[str, Any]) -> None:
    """Apply to the pytest process's item the marks, ``user_properties`` and report sections the
    test added to its copy in the child, before the outcome is raised: pytest's skipping plugin
    re-evaluates xfail marks after the call, and the report copies ``user_properties`` (junitxml)
    and the sections (shown with a failure, or with -rA). ``record_testsuite_property`` entries go
    to the pytest process's --junit-xml writer.

    Mark arguments are restored with the same unpickler as exceptions (builtin data, exception
    classes such as xfail's ``raises``): a mark holding anything else is reported, not applied.
    A property that cannot be restored as itself is kept as its text."""
    front: list[pytest.MarkDecorator] = []
    for entry in out.get("marks", ()):
        name = entry.get("name")
        value = try_unpickle(entry.get("args"), UNRESTORED)
        if not (
            isinstance(name, str)
            and isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[0], tuple)
            and isinstance(value[1], dict)
            and all(isinstance(key, str) for key in value[1])
        ):
            warnings.warn(
                pytest.PytestWarning(
                    f"sandlock: the marker {name!r} that {item.nodeid} added during the call was not "
                    "applied: its arguments are not plain data or exception classes"
                ),
                stacklevel=1,
            )
            continue
        # pytest has no public constructor for a mark built from data; add_marker needs a decorator.
        mark = pytest.Mark(name, value[0], value[1], _ispytest=True)
        decorator = pytest.MarkDecorator(mark, _ispytest=True)
        if entry.get("front"):
            front.append(decorator)
        else:
            item.add_marker(decorator)
    for decorator in reversed(front):  # inserted one by one at the front: keeps the child's order
        item.add_marker(decorator, append=False)
    for prop in out.get("user_properties", ()):
        restored = try_unpickle(prop.get("pickled"), UNRESTORED)
        if restored is UNRESTORED:
            text = prop.get("text")
            restored = tuple(text) if isinstance(text, (list, tuple)) else text
        item.user_properties.append(restored)
    for entry in out.get("report_sections", ()):
        if isinstance(entry, (list, tuple)) and len(entry) == 3 and all(isinstance(p, str) for p in entry):
            item.add_report_section(*entry)
    _queue_uncaught(item.config, out.get("uncaught"))
    suite_properties = _suite_properties(item.config)
    for entry in out.get("suite_properties", ()):  # the child's data: two strings, else nothing
        if (
            suite_properties is not None
            and isinstance(entry, list)
            and [type(p) for p in entry] == [str, str]
        ):
            suite_properties.append((entry[0], entry[1]))
    config = item.config
    capture = config.pluginmanager.getplugin("capturemanager")
    for data in out.get("sub_reports", ()):
        # Plain data (the result unpickler admits nothing else); the hook rebuilds a report from it.
        try:
            report = config.hook.pytest_report_from_serializable(config=config, data=_unplain_data(data))
        except Exception as exc:  # noqa: BLE001 - the child's data: say so, do not lose the test
            warnings.warn(
                pytest.PytestWarning(
                    f"sandlock: a subtest report of {item.nodeid} could not be rebuilt: {exc}"
                ),
                stacklevel=1,
            )
            continue
        if report is None:
            continue
        _restore_parameters(report, data)
        # Outside the test's capture, as pytest logs a subtest's report (else its progress
        # letter would land in the test's captured output).
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            item.ihook.pytest_runtest_logreport(report=report)
    failed = out.get("failed_subtests", 0)
    if isinstance(failed, int) and failed > 0 and _FAILED_SUBTESTS_KEY is not None:
        config.stash[_FAILED_SUBTESTS_KEY][_subtests_key(item)] += failed


def _rebuild_exception(config: pytest.Config, info: dict[str, Any]) -> tuple[BaseException, Any]:
    outcome = info.get("outcome")
    exc = rebuild_outcome(outcome) if isinstance(outcome, dict) else rebuild_exception_value(info)
    if not isinstance(exc, BaseException):
        exc = SandboxedTestError(f"{info['type']}: {info['text']}")
    report = config.hook.pytest_report_from_serializable(config=config, data=info["report"])
    longrepr = getattr(report, "longrepr", None)
    if isinstance(longrepr, str) and info.get("longrepr_is_text") is False:
        longrepr = _ChildText(longrepr)
    return exc, longrepr


class _ChildText:
    """A failure representation that was not text in the child (a doctest's) and crossed back as text:
    shown the same, but not taken for a one-line message (pytest's short summary puts a text
    representation's first line after the test's name, and a doctest's is a line number)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def toterminal(self, tw: Any) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


# Garbage the pytest process holds (say, the items of a large parametrized suite, deselected) is
# inherited by every child, and a test's gc.collect() there frees it again, in every sandboxed test,
# with its finalizers; without the sandbox the first collection frees it for good. gc.collect counts
# what full collections free (installed once, with the first Sandbox, so that a child writes nothing
# for it); past this many in a child, the pytest process collects once itself.
_INHERITED_GARBAGE = 1000
_collect = gc.collect
_freed = [0]  # what explicit full collections freed in this process (a child: since its fork)
_collected_here = [False]  # the pytest process collected already (once per process)


def _counting_collect(generation: int = 2) -> int:
    """gc.collect, counting what full collections free."""
    freed = _collect(generation)
    if generation == 2:
        _freed[0] += freed
    return freed


def _collect_inherited_garbage(freed_in_child: object) -> None:
    if isinstance(freed_in_child, int) and freed_in_child > _INHERITED_GARBAGE and not _collected_here[0]:
        _collected_here[0] = True
        _collect()


# Threads of pytest itself and of its plugins, never a test's business.
_OWN_THREAD_MODULES = frozenset(("execnet", "xdist", "pytest_timeout", "_pytest", "pytest_sandlock"))


def _threads_left_behind() -> str:
    """The pytest process's other threads, which a sandboxed test's child does not have (a fork copies
    only the calling thread); said with a failed test's report, since a test that hands work to one
    of them (anyio's blocking portal behind starlette's TestClient, a fixture's worker queue) waits
    forever or fails in the child. Found running starlette's and fastapi's suites."""
    names = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.name.startswith("pytest_timeout"):
            continue
        target = getattr(thread, "_target", None)
        module = getattr(target, "__module__", None) or type(thread).__module__
        if str(module).split(".")[0] in _OWN_THREAD_MODULES:
            continue
        names.append(thread.name)
    if not names:
        return ""
    return (
        f"the pytest process has other threads, which this test's sandboxed child does not have: "
        f"{', '.join(names)}. A call that hands work to one of them (anyio's blocking portal behind "
        "starlette's TestClient, a fixture's worker queue) waits forever or fails in the child: start "
        "such a thread in the test, or mark the test sandbox(enabled=False)."
    )


def _io_uring_hint() -> str:
    """Why a child may have aborted, when this process holds io_uring rings (see io_uring_rings)."""
    if "uvloop" not in sys.modules:
        return ""
    from pytest_sandlock.engine.io_uring_rings import ring_mappings

    try:
        if not ring_mappings():
            return ""
    except (OSError, ValueError):
        return ""
    return (
        "\nThe pytest process holds io_uring rings (an event loop made outside the test: uvloop's libuv "
        "keeps one per loop). io_uring is refused in the sandbox, so such a loop cannot run in the "
        "test's child: make the loop in the test, or mark the test sandbox(enabled=False)."
    )


def _advance_random() -> None:
    """The child continues from this process's ``random`` state (a seed set by a fixture or
    pytest-randomly reaches the test: ``Sandbox(keep_random_state=True)``), and what it draws is drawn
    from its copy. One draw here, once the child has its copy, so that the next sandboxed test does
    not see the same numbers again, as it would not without the sandbox."""
    module = sys.modules.get("random")
    if module is not None:
        module.getrandbits(32)


def _fail(message: str) -> None:
    __tracebackhide__ = True
    pytest.fail(message, pytrace=False)


def run_call(item: pytest.Item, runtest: Callable[[], None], spec: SandboxSpec, runner: Runner) -> None:
    """Replaces ``item.runtest`` for a sandboxed test's call phase (runs in the pytest process)."""
    __tracebackhide__ = True
    settings = runner.settings
    record = CallRecord()
    item.stash[RECORD_KEY] = record
    handle = item.stash.get(FIXTURE_KEY, None)
    ihook = item.ihook  # a look-up through the conftest modules of the item's path: once
    try:
        policy = apply_policy_hooks(item, spec.policy, ihook)
    except Exception as exc:
        _fail(f"sandlock: pytest_sandlock_policy failed for {item.nodeid}: {type(exc).__name__}: {exc}")
    policy_fn = compose_policy_fn(item, spec.policy_fn, ihook)
    out: Optional[dict[str, Any]] = None
    quiet = False  # passed, and printed, logged, warned and added to its item nothing
    problem: Optional[str] = None
    tree_problems: list[str] = []
    coverage = CoverageBridge.for_call(runner)
    guard = InterruptGuard(item.nodeid)
    try:
        runner.basetemp_for(item)
        sandbox = runner.sandbox_for(policy, policy_fn)
        sandbox.close_fds = runner.close_fds()

        def launched(pid: int) -> None:  # in the pytest process, while the child runs
            guard.launched(pid)
            _advance_random()

        sandbox.on_launch = launched
        try:
            with quiet_fork_warning(guard):
                result = sandbox.call(
                    _child_main, item, runtest, coverage, _ChildPrep.of(item, runtest, ihook)
                )
        finally:
            sandbox.on_launch = None  # the shared Sandbox must not keep this test's guard alive
        out = result.value
        quiet = out is None
        if out is not None:
            _collect_inherited_garbage(out.get("gc_freed"))
        record.events = list(result.events)
        tree_problems = result.tree_problems
        for text in [
            *getattr(result, "internal_errors", ()),
            *(() if out is None else out.get("internal", ())),
        ]:
            warnings.warn(pytest.PytestWarning(f"sandlock: {text}"), stacklevel=1)
    except SandboxCrash as crash:
        record.events = list(crash.events)
        problem = f"sandlock: {item.nodeid} did not finish: {crash.reason}" + _io_uring_hint()
    except ChildException as exc:
        record.events = list(exc.events)
        problem = f"sandlock: the sandboxed child failed outside the test: {exc.exc_type}: {exc.message}"
    except KernelFeatureError as exc:
        problem = f"sandlock: this kernel cannot sandbox {item.nodeid}: {exc}"
    except SandboxError as exc:
        problem = f"sandlock: could not sandbox {item.nodeid}: {type(exc).__name__}: {exc}"
    finally:
        if coverage is not None:
            for text in coverage.collect():
                warnings.warn(pytest.PytestWarning(f"sandlock: {text}"), stacklevel=1)
    if handle is not None:
        handle._set_final_events(record.events)

    if record.events and settings.strict and not settings.audit and not (out and out.get("denials_read")):
        record.strict_denials = strict.unexpected_denials(record.events)
    if guard.pending is not None:  # pytest-timeout's failure or Ctrl-C, now that the tree is gone
        record.threads_note = _threads_left_behind()
        raise guard.pending
    if quiet:
        if not tree_problems and not record.strict_denials:
            return  # the common case: nothing to apply, deliver or report
        out = _quiet_pass()
    if out is None:
        record.threads_note = _threads_left_behind()
        _fail((problem or "sandlock: no outcome") + strict.format_denials(record.events))
        return
    if any(
        out.get(key)
        for key in (
            "marks",
            "user_properties",
            "suite_properties",
            "uncaught",
            "report_sections",
            "sub_reports",
            "failed_subtests",
        )
    ):
        _apply_item_changes(item, out)
    _deliver_outputs(item.config, out)
    info = out["exception"]
    # A process of the test may have outlived it (confined, no longer supervised): never a pass.
    unchecked = "".join(f"\nsandlock: {item.nodeid}: {text}" for text in tree_problems)
    if info is not None:
        record.threads_note = _threads_left_behind()
        rebuilt, longrepr = _rebuild_exception(item.config, info)
        record.exception = rebuilt
        record.longrepr = longrepr
        if unchecked:
            warnings.warn(pytest.PytestWarning(unchecked.strip()), stacklevel=1)
        raise rebuilt
    if unchecked:
        denials = strict.failure_message(record.strict_denials) if record.strict_denials else ""
        _fail(unchecked.strip() + ("\n" + denials if denials else ""))
    if record.strict_denials:
        _fail(strict.failure_message(record.strict_denials))
