"""Run a test's call phase in the sandbox and carry its outcome back into the pytest process.

The pytest process keeps setup and teardown. For the call phase the original ``item.runtest`` is handed to
``Sandbox.call``; in the forked, confined child :func:`_child_main` runs it and packs everything the
pytest process needs into plain data: the outcome (the exception, pickled when possible, plus pytest's own
failure representation built in the child, so assertion rewriting, ``--tb`` and ``--showlocals`` work),
the text written to in-memory captures (``--capture=sys``, ``capsys``; fd-level capture is shared through the
inherited descriptors), the caplog report text and the warnings. :func:`run_call` re-raises the outcome in
the pytest process, so skip/xfail/``-x``/``pytest.exit`` behave as usual, and records the events.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pytest

from pytest_sandlock import strict
from pytest_sandlock.engine.errors import ChildException, KernelFeatureError, SandboxCrash, SandboxError
from pytest_sandlock.engine.policy import Policy, SyscallEvent, coerce_verdict
from pytest_sandlock.fixture import FIXTURE_KEY
from pytest_sandlock.markers import SandboxSpec
from pytest_sandlock.options import Settings

SPEC_KEY = pytest.StashKey[SandboxSpec]()
UNCONFINED_KEY = pytest.StashKey[bool]()
RECORD_KEY = pytest.StashKey["CallRecord"]()

_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/shm")
_FORK_WARNING = r".*use of fork\(\) may lead to deadlocks"


@dataclass
class CallRecord:
    """What the call phase of one sandboxed test left for its report."""

    events: list[SyscallEvent] = field(default_factory=list)
    exception: Optional[BaseException] = None  # raised in the pytest process on the child's behalf
    longrepr: Any = None  # the child's failure representation, replacing the pytest-process one
    strict_denials: list[SyscallEvent] = field(default_factory=list)


class SandboxedTestError(Exception):
    """Stands in for an exception raised in the sandbox that could not be carried back as itself."""


class Runner:
    """Per-session state of the fork runner (settings, always-writable paths, descriptors to close)."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._writable: Optional[tuple[str, ...]] = None
        self._close_fds: Optional[tuple[int, ...]] = None

    def extra_writable(self) -> tuple[str, ...]:
        """Writable on top of the engine's own set (system temp dir, devices): pytest's basetemp."""
        if self._writable is None:
            paths = [tempfile.gettempdir()]
            factory = getattr(self.config, "_tmp_path_factory", None)
            if factory is not None:
                paths.append(str(factory.getbasetemp()))
            self._writable = tuple(dict.fromkeys(os.path.realpath(p) for p in paths))
        return self._writable

    def temp_roots(self) -> tuple[str, ...]:
        """Where writes are not worth listing in the audit summary."""
        return (*self.extra_writable(), *_DEVICES)

    def close_fds(self) -> tuple[int, ...]:
        """Descriptors of pytest-xdist's channel (and pytest-reportlog's file) to close in the child."""
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
        return self._close_fds


def _fileno(obj: Any) -> Optional[int]:
    try:
        return int(obj.fileno()) if obj is not None else None
    except (AttributeError, OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------------
# policy and callback composition (pytest process)
# --------------------------------------------------------------------------------------------------------


def apply_policy_hooks(item: pytest.Item, policy: Policy) -> Policy:
    """Chain the ``pytest_sandlock_policy`` implementations: each sees the previous one's result."""
    hook = item.ihook.pytest_sandlock_policy
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
    item: pytest.Item, marker_fn: Optional[Callable[..., Any]]
) -> Optional[Callable[..., Any]]:
    """One callable for the engine: the marker's policy_fn, then the pytest_sandlock_event hook.

    The most restrictive answer wins; an invalid value is returned as is, so that the engine denies the
    syscall and reports the problem. Returns None when there is nothing to consult (the engine's fast path).
    """
    hook = item.ihook.pytest_sandlock_event
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


def _try_pickle(obj: object) -> Optional[bytes]:
    try:
        return pickle.dumps(obj)
    except Exception:
        return None


def _child_main(item: pytest.Item, runtest: Callable[[], None]) -> dict[str, Any]:
    """Runs in the confined child: the test's call phase, packed into picklable data."""
    sys.dont_write_bytecode = True  # a denied .pyc write is noise, not a finding
    config = item.config
    captures = _memory_captures(config)
    for buf in captures.values():  # the pytest process keeps what was there before the fork
        buf.seek(0)
        buf.truncate()
    with warnings.catch_warnings(record=True) as recorded:
        call = pytest.CallInfo.from_call(runtest, when="call", reraise=None)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    out: dict[str, Any] = {"exception": None}
    if call.excinfo is not None:
        exc = call.excinfo.value
        report = pytest.TestReport.from_item_and_call(item, call)
        data = config.hook.pytest_report_to_serializable(config=config, report=report)
        keep = ("$report_type", "nodeid", "location", "outcome", "longrepr", "when")
        out["exception"] = {
            "outcome": _outcome_exception(exc),
            "pickled": _try_pickle(exc),
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "text": _safe_str(exc),
            "report": {k: data[k] for k in keep if k in data} | {"keywords": {}, "sections": []},
        }
    out["captures"] = {key: buf.buffer.getvalue() for key, buf in captures.items()}  # type: ignore[attr-defined]
    stream = _report_handler_stream(config)
    out["log"] = stream.getvalue() if stream is not None else ""
    out["warnings"] = [
        {
            "message": _try_pickle(w.message),
            "text": _safe_str(w.message),
            "category": _try_pickle(w.category),
            "filename": w.filename,
            "lineno": w.lineno,
            "line": w.line,
        }
        for w in recorded
    ]
    handle = item.stash.get(FIXTURE_KEY, None)
    out["denials_read"] = bool(handle is not None and handle.denials_read)
    return out


def _outcome_classes() -> tuple[tuple[str, type[BaseException]], ...]:
    return (
        ("skip", pytest.skip.Exception),
        ("fail", pytest.fail.Exception),
        ("xfail", pytest.xfail.Exception),
        ("exit", pytest.exit.Exception),
    )


def _outcome_exception(exc: BaseException) -> Optional[dict[str, Any]]:
    """pytest's outcome exceptions claim ``__module__ = "builtins"`` and so do not pickle: send fields."""
    for kind, cls in _outcome_classes():
        if type(exc) is cls:
            return {
                "kind": kind,
                "msg": getattr(exc, "msg", None),
                "pytrace": bool(getattr(exc, "pytrace", True)),
                "allow_module_level": bool(getattr(exc, "allow_module_level", False)),
                "use_item_location": bool(getattr(exc, "_use_item_location", False)),
                "returncode": getattr(exc, "returncode", None),
            }
    return None


def _rebuild_outcome(data: dict[str, Any]) -> Optional[BaseException]:
    kind, msg = data.get("kind"), data.get("msg")
    msg = msg if isinstance(msg, str) else None
    if kind == "skip":
        return pytest.skip.Exception(
            msg,
            bool(data.get("pytrace", True)),
            bool(data.get("allow_module_level")),
            _use_item_location=bool(data.get("use_item_location")),
        )
    if kind == "fail":
        return pytest.fail.Exception(msg, bool(data.get("pytrace", True)))
    if kind == "xfail":
        return pytest.xfail.Exception(msg)
    if kind == "exit":
        code = data.get("returncode")
        return pytest.exit.Exception(msg or "unknown reason", code if isinstance(code, int) else None)
    return None


def _safe_str(obj: object) -> str:
    try:
        return str(obj)
    except Exception as exc:
        return f"<unprintable {type(obj).__name__}: {type(exc).__name__}>"


# --------------------------------------------------------------------------------------------------------
# the pytest-process side
# --------------------------------------------------------------------------------------------------------


def _deliver_outputs(config: pytest.Config, out: dict[str, Any]) -> None:
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
        category = _try_unpickle(w["category"])
        if not (isinstance(category, type) and issubclass(category, Warning)):
            category = UserWarning
        message = _try_unpickle(w["message"])
        if not isinstance(message, Warning):
            try:
                message = category(w["text"])
            except Exception:
                message = UserWarning(w["text"])
        warnings.showwarning(message, category, w["filename"], w["lineno"], None, w["line"])


class _ExceptionUnpickler(pickle.Unpickler):
    """Rebuilds exceptions and warnings from the child without letting it run code here.

    The child is untrusted: a plain ``pickle.loads`` would let a test call anything in the pytest process
    (``__reduce__`` returning ``os.system``). Only builtin data types and exception/warning classes of
    modules this process has already imported are resolved; nothing is imported on the child's behalf.
    """

    _BUILTIN_DATA = frozenset(
        ("builtins", n)
        for n in ("set", "frozenset", "list", "dict", "tuple", "bytearray", "bytes", "complex")
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._BUILTIN_DATA:
            return super().find_class(module, name)
        obj: Any = sys.modules.get(module)
        for part in name.split("."):
            if obj is None or part.startswith("__"):
                obj = None
                break
            obj = getattr(obj, part, None)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            return obj
        raise pickle.UnpicklingError(f"{module}.{name} is not an exception class")


def _try_unpickle(data: Optional[bytes]) -> Any:
    if not isinstance(data, bytes):
        return None
    try:
        return _ExceptionUnpickler(io.BytesIO(data)).load()
    except Exception:
        return None


def _rebuild_exception(config: pytest.Config, info: dict[str, Any]) -> tuple[BaseException, Any]:
    outcome = info.get("outcome")
    exc = _rebuild_outcome(outcome) if isinstance(outcome, dict) else _try_unpickle(info["pickled"])
    if not isinstance(exc, BaseException):
        exc = SandboxedTestError(f"{info['type']}: {info['text']}")
    report = config.hook.pytest_report_from_serializable(config=config, data=info["report"])
    return exc, getattr(report, "longrepr", None)


def _fail(message: str) -> None:
    __tracebackhide__ = True
    pytest.fail(message, pytrace=False)


def run_call(item: pytest.Item, runtest: Callable[[], None], spec: SandboxSpec, runner: Runner) -> None:
    """Replaces ``item.runtest`` for a sandboxed test's call phase (runs in the pytest process)."""
    __tracebackhide__ = True
    from pytest_sandlock.engine.sandbox import Sandbox  # imported on first use: unsandboxed runs never pay

    settings = runner.settings
    record = CallRecord()
    item.stash[RECORD_KEY] = record
    handle = item.stash.get(FIXTURE_KEY, None)
    try:
        policy = apply_policy_hooks(item, spec.policy)
    except Exception as exc:
        _fail(f"sandlock: pytest_sandlock_policy failed for {item.nodeid}: {type(exc).__name__}: {exc}")
    policy_fn = compose_policy_fn(item, spec.policy_fn)
    out: Optional[dict[str, Any]] = None
    problem: Optional[str] = None
    try:
        sandbox = Sandbox(
            policy,
            policy_fn,
            audit=settings.audit,
            close_fds=runner.close_fds(),
            extra_fs_write=runner.extra_writable(),
        )
        with warnings.catch_warnings():
            # Forking a threaded pytest (xdist workers) is what this plugin does on purpose.
            warnings.filterwarnings("ignore", message=_FORK_WARNING, category=DeprecationWarning)
            result = sandbox.call(_child_main, item, runtest)
        out = result.value
        record.events = list(result.events)
        for text in getattr(result, "internal_errors", ()):
            warnings.warn(pytest.PytestWarning(f"sandlock: {text}"), stacklevel=1)
    except SandboxCrash as crash:
        record.events = list(crash.events)
        problem = f"sandlock: {item.nodeid} did not finish: {crash.reason}"
    except ChildException as exc:
        record.events = list(exc.events)
        problem = f"sandlock: the sandboxed child failed outside the test: {exc.exc_type}: {exc.message}"
    except KernelFeatureError as exc:
        problem = f"sandlock: this kernel cannot sandbox {item.nodeid}: {exc}"
    except SandboxError as exc:
        problem = f"sandlock: could not sandbox {item.nodeid}: {type(exc).__name__}: {exc}"
    if handle is not None:
        handle._set_final_events(record.events)

    if settings.strict and not settings.audit and not (out or {}).get("denials_read"):
        record.strict_denials = strict.unexpected_denials(record.events)
    if out is None:
        _fail((problem or "sandlock: no outcome") + strict.format_denials(record.events))
        return
    _deliver_outputs(item.config, out)
    info = out["exception"]
    if info is not None:
        rebuilt, longrepr = _rebuild_exception(item.config, info)
        record.exception = rebuilt
        record.longrepr = longrepr
        raise rebuilt
    if record.strict_denials:
        _fail(strict.failure_message(record.strict_denials))
