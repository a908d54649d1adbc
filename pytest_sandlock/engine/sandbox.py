"""The engine's public API: ``Sandbox(policy, policy_fn).run(argv)`` and ``.call(fn, *args)``.

Usable without pytest. Each run forks a child, confines it (Landlock + seccomp with a listener), and
supervises it from the calling thread until the child and every process it started are gone.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import signal
import site
import sys
import sysconfig
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from . import capabilities, landlock, proctree, seccomp_filter
from .errors import ChildException, KernelFeatureError, PolicyError, SandboxCrash
from .launcher import Confinement, close_launched, exec_target, launch, prepare_capability_drop
from .policy import Policy, PolicyContext, SyscallEvent, tcp_ports_of
from .proctree import reap_deferred
from .supervisor import RESULT_HEADER, PolicyFn, Supervisor

# Device files every program expects to write; /dev/shm backs POSIX semaphores (multiprocessing).
# /dev/ptmx with /dev/pts: a new pseudo-terminal (os.openpty, pty.fork, pexpect) opens both for writing.
ALWAYS_WRITABLE_DEVICES = (
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
    "/dev/shm",
)
SYSTEM_READABLE = (
    "/usr/lib",
    "/usr/lib64",
    "/lib",
    "/lib64",
    "/usr/share/zoneinfo",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
)
_LEN = RESULT_HEADER
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_OK_NONE = pickle.dumps(("ok", None), protocol=_PROTOCOL)  # built here, not in each child
_FRAMED_OK_NONE = _LEN.pack(len(_OK_NONE)) + _OK_NONE  # what a child returning None writes, as is


@functools.lru_cache(maxsize=256)
def _real(path: str) -> str:
    """realpath, memoised: the same few paths are resolved for every sandboxed test."""
    return os.path.realpath(path)


def _within(path: str, root: str) -> bool:
    return path.startswith(root.rstrip("/") + "/")


@functools.lru_cache(maxsize=1)
def always_writable() -> tuple[str, ...]:
    return (os.path.realpath(tempfile.gettempdir()), *ALWAYS_WRITABLE_DEVICES)


def interpreter_readable() -> tuple[str, ...]:
    """What this interpreter needs to keep running and importing when ``fs_read`` is narrowed."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        value = sysconfig.get_paths().get(key)
        if value:
            paths.add(value)
    try:
        paths.update(site.getsitepackages())
        paths.add(site.getusersitepackages())
    except AttributeError:
        pass
    paths.update(p for p in sys.path if p)
    paths.add(os.getcwd())
    paths.update(SYSTEM_READABLE)
    return tuple(sorted(os.path.realpath(p) for p in paths if os.path.exists(p)))


@dataclass
class RunResult:
    returncode: int
    stdout: bytes
    stderr: bytes
    events: list[SyscallEvent]
    timed_out: bool = False
    # Non-empty when the end of the run could not be checked: a process the command started may
    # still be running (confined, unsupervised). See ProcessTree.problems.
    tree_problems: list[str] = field(default_factory=list)

    @property
    def denials(self) -> list[SyscallEvent]:
        return [e for e in self.events if e.denied]


@dataclass
class CallResult:
    value: Any
    events: list[SyscallEvent]
    internal_errors: list[str] = field(default_factory=list)
    tree_problems: list[str] = field(default_factory=list)  # as in RunResult

    @property
    def denials(self) -> list[SyscallEvent]:
        return [e for e in self.events if e.denied]


class _PlainDataUnpickler(pickle.Unpickler):
    """Only builtin data types: the child is untrusted and must not run code in this process."""

    SAFE = {
        ("builtins", n)
        for n in (
            "set",
            "frozenset",
            "list",
            "dict",
            "tuple",
            "bytearray",
            "complex",
            "range",
            "slice",
            "bytes",
        )
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"the sandboxed callable returned a {module}.{name}; only plain data crosses back"
        )


def _load_plain(data: bytes) -> Any:
    return _PlainDataUnpickler(io.BytesIO(data)).load()


def _describe_status(status: Optional[int]) -> str:
    if status is None:
        return "the child vanished"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"the child was killed by signal {name}"
    return f"the child exited with status {os.WEXITSTATUS(status)} without a result"


class Sandbox:
    """A reusable sandbox configuration; each ``run``/``call`` is a fresh confined process tree."""

    def __init__(
        self,
        policy: Optional[Policy] = None,
        policy_fn: Optional[PolicyFn] = None,
        *,
        audit: bool = False,
        close_fds: Iterable[int] = (),
        extra_fs_write: Iterable[str] = (),
        on_launch: Optional[Callable[[int], None]] = None,
        retire_fds: bool = False,
        keep_random_state: bool = False,
    ) -> None:
        self.policy = policy if policy is not None else Policy()
        self.on_launch = on_launch  # told the root pid of each run, once the parent holds its listener
        # A run's descriptors closed by the next run instead of at its end (launcher.close_launched):
        # for callers that run many in a row and want each to end as soon as its result is in.
        self.retire_fds = retire_fds
        # The child's `random` continues from this process's state instead of being reseeded
        # (forking.fork): a seed the caller set reaches the callable.
        self.keep_random_state = keep_random_state
        self.policy_fn = policy_fn
        self.audit = audit
        self.close_fds = tuple(close_fds)
        self.writable = tuple(
            dict.fromkeys((*self.policy.fs_write, *(_real(p) for p in extra_fs_write), *always_writable()))
        )
        self.compiled = seccomp_filter.compiled_filter(
            notify_process_creation=self.policy.max_processes is not None
        )
        self.capabilities = capabilities.probe()
        self.notes: list[str] = list(self.capabilities.warnings)
        self.ruleset: Optional[landlock.Ruleset] = None
        self._spec: Optional[landlock.LandlockSpec] = None
        if not audit and self.capabilities.landlock_abi > 0:
            self._spec = self.landlock_spec()
            self.ruleset = self._current_ruleset()
            self.notes.extend(self.ruleset.notes)

    def _current_ruleset(self) -> landlock.Ruleset:
        """The ruleset for this run: the policy's writable directories made when written "dir/" and
        missing, and the ruleset built again if one of them is not the directory it was."""
        assert self._spec is not None
        for path in self.policy.fs_write:
            if os.path.exists(path) or any(_within(path, other) for other in self.writable if other != path):
                continue  # there, or inside another writable path (the temp dir...) that covers it
            if path not in self.policy.fs_write_dirs:
                raise PolicyError(
                    f"fs_write {path}: does not exist, and Landlock can only grant an existing path: "
                    f"create it first (in a fixture), or write it as {path + '/'!r} to have the "
                    "directory made"
                )
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                raise PolicyError(f"fs_write {path}: cannot make the directory: {exc}") from None
        return landlock.get_ruleset(self._spec, watch=self.policy.fs_write)

    def landlock_spec(self) -> landlock.LandlockSpec:
        policy = self.policy
        fs_read: Optional[tuple[str, ...]] = None
        if policy.fs_read is not None:
            fs_read = tuple(dict.fromkeys((*policy.fs_read, *interpreter_readable())))
        tcp: Optional[frozenset[int]] = None if policy.net is None else tcp_ports_of(policy.net)
        return landlock.LandlockSpec(
            fs_read=fs_read,
            fs_write=self.writable,
            fs_deny=policy.fs_deny,
            tcp_connect_ports=tcp,
            # Binds the supervisor allows: the rules' ports, and port 0 (an ephemeral port).
            tcp_bind_ports=None if tcp is None else tcp | {0},
        )

    # ------------------------------------------------------------------ running
    def _supervise(
        self,
        target: Callable[[int], None],
        *,
        capture_output: bool = False,
        timeout: Optional[float] = None,
        framed_result: bool = False,
        runs_python: bool = True,
    ) -> tuple[Supervisor, Any]:
        if self.capabilities.problems:  # e.g. child memory unreadable: nothing could be decided
            raise KernelFeatureError("; ".join(self.capabilities.problems))
        if self._spec is not None and (self.policy.fs_write or self.ruleset is None or self.ruleset.closed):
            # A writable path may have gone, or come back anew; or another Sandbox with the same
            # rules had the shared ruleset built again (the old one is closed then).
            self.ruleset = self._current_ruleset()
        conf = Confinement(
            ruleset=self.ruleset,
            compiled=self.compiled,
            max_memory=self.policy.max_memory,
            # The cached Landlock rulesets too: whoever holds one can add rules to it.
            close_fds=self.close_fds + landlock.cached_fds() + proctree.kept_fds(),
            wait_killable=self.capabilities.wait_killable_recv,
            capability_drop=prepare_capability_drop(),
            inherits_memory=runs_python,
            keep_random_state=self.keep_random_state and runs_python,
        )
        on_launch = self.on_launch
        effective_timeout = timeout if timeout is not None else self.policy.timeout
        supervisor: Optional[Supervisor] = None

        def on_change(field_name: str) -> None:
            if supervisor is not None:
                supervisor.policy_changed(field_name)

        launched = launch(
            conf, target, capture_output=capture_output, stdin_devnull=capture_output, runs_python=runs_python
        )
        ctx: Optional[PolicyContext] = None
        try:
            # The parent's own state is built once the child runs: it is not on the child's path.
            ctx = PolicyContext(self.policy, on_change=on_change)
            ctx.process_limit_supervised = self.policy.max_processes is not None
            deadline = None if effective_timeout is None else time.monotonic() + effective_timeout
            # Bookkeeping once the child runs its target (the hand-off did not wait for it); a
            # failure here, or a signal handler raising, kills the tree like any other below.
            reap_deferred()
            if on_launch is not None:
                on_launch(launched.pid)
            launched.tree.watch()
            supervisor = Supervisor(
                listener=launched.listener,
                ctx=ctx,
                tree=launched.tree,
                root_pid=launched.pid,
                root_pidfd=launched.pidfd,
                result_fd=launched.result_fd,
                writable=self.writable,
                policy_fn=self.policy_fn,
                audit=self.audit,
                channel=launched.channel,
                output_fds=launched.output_fds,
                deadline=deadline,
                memory_base=launched.memory_base,
                framed_result=framed_result,
                landlock_enforced=conf.ruleset is not None and not conf.ruleset.notes,
                landlock_ceiling=conf.ruleset is not None,
            )
            outcome = supervisor.run()
        except BaseException:
            # Interrupted (a signal handler raised, KeyboardInterrupt...): nothing may outlive this.
            launched.tree.kill_quickly()
            launched.tree.kill_all()
            raise
        finally:
            if supervisor is None:
                launched.tree.kill_all()
            close_launched(launched, retire=self.retire_fds)
            launched.channel.bind(None)  # break supervisor <-> channel and ctx <-> closure cycles
            if ctx is not None:
                ctx.set_on_change(None)
        return supervisor, outcome

    def run(
        self,
        argv: Sequence[str],
        timeout: Optional[float] = None,
        cwd: Optional[str] = None,
        env: Optional[dict[str, str]] = None,
    ) -> RunResult:
        """Run a command confined; returns its code, output and events."""
        if isinstance(argv, (str, bytes)) or not argv:
            raise ValueError(f"argv must be a non-empty list of strings, got {argv!r}")
        supervisor, outcome = self._supervise(
            exec_target(argv, cwd, env), capture_output=True, timeout=timeout, runs_python=False
        )
        status = outcome.root_status
        if outcome.timed_out:
            returncode = -signal.SIGKILL
        elif status is None:
            returncode = -1
        elif os.WIFSIGNALED(status):
            returncode = -os.WTERMSIG(status)
        else:
            returncode = os.WEXITSTATUS(status)
        stderr = outcome.stderr
        if outcome.result:  # exec failed: the child wrote "errno:message"
            stderr += b"pytest-sandlock: cannot execute " + argv[0].encode() + b": " + outcome.result + b"\n"
        return RunResult(
            returncode, outcome.stdout, stderr, supervisor.events, outcome.timed_out, outcome.tree_problems
        )

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> CallResult:
        """Run ``fn(*args, **kwargs)`` in a confined fork; its (plain-data) return value comes back."""

        def target(result_fd: int) -> None:
            try:
                value = fn(*args, **kwargs)
                payload = _OK_NONE if value is None else pickle.dumps(("ok", value), protocol=_PROTOCOL)
            except BaseException as exc:  # noqa: BLE001 - every failure crosses back as text
                payload = pickle.dumps(("error", type(exc).__name__, str(exc), traceback.format_exc()))
            for stream in (sys.stdout, sys.stderr):  # the root may be killed once its result is in
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001
                    pass
            _write_result(
                result_fd, _FRAMED_OK_NONE if payload is _OK_NONE else _LEN.pack(len(payload)) + payload
            )
            os._exit(0)

        supervisor, outcome = self._supervise(target, framed_result=True)
        events = supervisor.events
        also = "".join(f"; {problem}" for problem in outcome.tree_problems) if outcome.tree_problems else ""
        if outcome.timed_out:
            raise SandboxCrash(f"timeout after {self._timeout_text()}{also}", events)
        data = outcome.result
        if not data or len(data) < _LEN.size or len(data) < _LEN.size + _LEN.unpack_from(data)[0]:
            raise SandboxCrash(_describe_status(outcome.root_status) + also, events, outcome.root_status)
        payload = data[_LEN.size : _LEN.size + _LEN.unpack_from(data)[0]]
        message: Any = ("ok", None) if payload == _OK_NONE else _load_plain(payload)
        if message[0] == "ok":
            return CallResult(message[1], events, outcome.internal_errors, outcome.tree_problems)
        _, exc_type, text, tb = message
        raise ChildException(exc_type, text + also, tb, events)

    def _timeout_text(self) -> str:
        return f"{self.policy.timeout}s" if self.policy.timeout is not None else "the deadline"


def _write_result(fd: int, framed: bytes) -> None:
    data = memoryview(framed)
    while data:
        written = os.write(fd, data)
        data = data[written:]
