"""The supervisor: a poll loop in the calling thread that answers seccomp notifications.

One loop multiplexes the listener, the child's result pipe, the live-policy channel, output pipes,
the root child's pidfd and connects still in progress. No threads: the GIL would make them slow and
forking a threaded pytest process is unsafe.

Every network syscall on a socket is performed here, on a duplicate of the child's socket obtained
with ``pidfd_getfd``, with the address bytes that were copied and checked: the kernel never re-reads
the child's memory, and no descriptor swap in the child can redirect the call. A connect that would
block is started non-blocking and answered when it completes, so one black-holed destination stalls
nothing else and never defeats the timeout.

Failure is closed: any error while deciding a notification denies it and records why.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from . import childmem, netops
from .channel import ChannelServer
from .errors import TreeUnreadable
from .notify import Listener, Notification
from .policy import (
    PolicyContext,
    SyscallCategory,
    SyscallEvent,
    Verdict,
    coerce_verdict,
)
from .proctree import ProcessTree, _children_of, read_ids
from .seccomp_lib import pyseccomp as sc
from .syscalls import PIDFD_THREAD, forget_memory_fd, forget_memory_fds, pidfd_getfd, pidfd_open

PolicyFn = Callable[[SyscallEvent, PolicyContext], Any]

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
CLONE_NAMESPACE_FLAGS = 0x7E020000
MAX_DATA = 16 * 1024 * 1024
POLICY_FN_TIMEOUT = 2.0
FORK_SETTLE = 0.1  # a continued fork whose child has not appeared by then is no longer counted
RETRY_DELAY = 0.005
SIGNAL_CHECK_MS = 20
# How often an idle supervisor reaps the orphans it adopted (see ProcessTree.reap_adopted).
ORPHAN_REAP_MS = 100
RESULT_HEADER = struct.Struct("=Q")  # Sandbox.call's result: length, then the payload


def _nr(name: str) -> int:
    return int(sc.resolve_syscall(sc.Arch.NATIVE, name))


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


# (syscall, index of dirfd or None, index of the path that gets written)
_PATH_CALLS: dict[str, tuple[tuple[Optional[int], int], ...]] = {
    "creat": ((None, 0),),
    "truncate": ((None, 0),),
    "unlink": ((None, 0),),
    "rmdir": ((None, 0),),
    "mkdir": ((None, 0),),
    "mknod": ((None, 0),),
    "chmod": ((None, 0),),
    "chown": ((None, 0),),
    "lchown": ((None, 0),),
    "utimes": ((None, 0),),
    "rename": ((None, 0), (None, 1)),
    "link": ((None, 1),),
    "symlink": ((None, 1),),
    "unlinkat": ((0, 1),),
    "mkdirat": ((0, 1),),
    "mknodat": ((0, 1),),
    "fchmodat": ((0, 1),),
    "fchmodat2": ((0, 1),),
    "fchownat": ((0, 1),),
    "utimensat": ((0, 1),),
    "futimesat": ((0, 1),),
    "renameat": ((0, 1), (2, 3)),
    "renameat2": ((0, 1), (2, 3)),
    "linkat": ((2, 3),),
    "symlinkat": ((1, 2),),
    "open": ((None, 0),),
    "openat": ((0, 1),),
}

_PROCESS_CALLS = ("fork", "vfork", "clone")
_OPEN_FLAGS_ARG = {"open": 1, "openat": 2}


def _opens_for_writing(name: str, args: tuple[int, ...]) -> bool:
    """An open whose outcome Landlock decides exactly as the supervisor predicts: one asking for
    write access (refused outside the writable set). An O_CREAT with read access only succeeds on
    an existing file, which the prediction cannot tell; chmod, chown and utimes have no Landlock
    right at all. Those are decided by the supervisor before they run."""
    if name == "creat":
        return True
    index = _OPEN_FLAGS_ARG.get(name)
    return index is not None and (args[index] & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)


# Reason of a connect/send to a unix socket path that does not exist (outside the writable paths),
# and to an abstract name nobody has bound: the kernel refuses both before any permission check.
ABSENT_UNIX_SOCKET = "no such unix socket"
ABSENT_ABSTRACT_SOCKET = "no such abstract unix socket"
_ABSENT_ERRNO = {ABSENT_UNIX_SOCKET: errno.ENOENT, ABSENT_ABSTRACT_SOCKET: errno.ECONNREFUSED}
OUTSIDE_WRITABLE = "outside the writable paths"
# A write to a path the policy denies (fs_deny, or deny_path on the live policy), writable or not.
UNDER_DENIED_PATH = "under a denied path"

# Path calls that create their (last) target and fail with EEXIST when it exists already.
_CREATES_EXCLUSIVE = frozenset(
    ("mkdir", "mkdirat", "mknod", "mknodat", "symlink", "symlinkat", "link", "linkat")
)
_RENAME_NOREPLACE = 1
_LOOKUP_FAILURES = {
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a path component is not a directory",
    errno.EEXIST: "it exists already",
}


def _creates(name: str, args: tuple[int, ...], index: int) -> tuple[bool, bool]:
    """(does target ``index`` of this call get created, must it not exist yet)."""
    flags_arg = _OPEN_FLAGS_ARG.get(name)
    if flags_arg is not None:
        flags = args[flags_arg]
        return bool(flags & os.O_CREAT), bool(flags & os.O_CREAT and flags & os.O_EXCL)
    if name == "creat" or name in _CREATES_EXCLUSIVE:
        return True, name != "creat"
    if name.startswith("rename") and index == 1:  # the new name; the old one must exist
        return True, name == "renameat2" and bool(args[4] & _RENAME_NOREPLACE)
    return False, False


def _lookup_failure(path: str, creates: bool, exclusive: bool) -> int:
    """The errno the kernel's path walk gives a call on ``path`` before any permission check (so
    before Landlock's): ENOENT, ENOTDIR or EEXIST; 0 when the walk would succeed (or cannot be
    told: then the call is decided as before)."""
    if not path.startswith("/"):
        return 0
    try:
        if creates:
            if not stat.S_ISDIR(os.stat(os.path.dirname(path) or "/").st_mode):
                return errno.ENOTDIR
            return errno.EEXIST if exclusive and os.path.lexists(path) else 0
        os.lstat(path)
    except FileNotFoundError:
        return errno.ENOENT
    except NotADirectoryError:
        return errno.ENOTDIR
    except OSError:
        return 0
    return 0


# os.path.realpath checks "is a link" then reads it: a component swapped in between (a racing
# rename) makes it fail. Whatever was racing, the answer is a denial, not an internal error.
PATH_RACE = "path changed while being checked"
_NAMES: dict[int, str] = {
    _nr(n): n
    for n in (
        *_PATH_CALLS,
        *_PROCESS_CALLS,
        "execve",
        "execveat",
        "connect",
        "bind",
        "sendto",
        "sendmsg",
        "sendmmsg",
        "seccomp",
    )
}
_NR = {name: nr for nr, name in _NAMES.items()}


class _KernelAnswer(Exception):
    """The call fails in the kernel whatever the policy says (a descriptor the caller does not
    have: EBADF): answered with that errno, no event, no internal error."""

    def __init__(self, err: int) -> None:
        super().__init__(os.strerror(err))
        self.errno = err


# A connect's (address, allowed, errno, event to record).
_ConnectVerdict = tuple[childmem.SockAddr, bool, int, SyscallEvent]


@dataclass
class _Pending:
    """A syscall answered later: a connect in progress or a send waiting for buffer space."""

    nid: int
    sock: int
    event: SyscallEvent
    retry: Optional[Callable[[], int]] = None  # a send to retry; None for a connect
    polled: bool = False  # registered with the poll object
    tid: int = 0  # the waiting thread: a signal pending for it answers EINTR
    retry_at: Optional[float] = None  # retried on a timer rather than on POLLOUT


@dataclass
class Outcome:
    result: Optional[bytes] = None
    root_status: Optional[int] = None
    timed_out: bool = False
    stdout: bytes = b""
    stderr: bytes = b""
    internal_errors: list[str] = field(default_factory=list)
    # Why the end of the run could not be checked (see ProcessTree.problems): a process of the
    # tree may still be running, confined but no longer supervised.
    tree_problems: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        *,
        listener: Listener,
        ctx: PolicyContext,
        tree: ProcessTree,
        root_pid: int,
        root_pidfd: int,
        result_fd: int,
        writable: tuple[str, ...],
        policy_fn: Optional[PolicyFn] = None,
        audit: bool = False,
        channel: Optional[ChannelServer] = None,
        output_fds: tuple[int, ...] = (),
        deadline: Optional[float] = None,
        memory_base: int = 0,
        framed_result: bool = False,
        landlock_enforced: bool = False,
        landlock_ceiling: bool = False,
    ) -> None:
        self.listener = listener
        # A Landlock ruleset confines the tree and enforces every file rule it was given (no notes).
        self.landlock_enforced = landlock_enforced
        # A Landlock ruleset confines the tree's writes to the writable paths, whether or not it
        # could express every fs_deny path (those it could not are noted, and decided here).
        self.landlock_ceiling = landlock_enforced or landlock_ceiling
        self.ctx = ctx
        self.tree = tree
        self.root_pid = root_pid
        self.root_pidfd = root_pidfd
        self.result_fd = result_fd
        self.writable = writable
        self._writable_roots = frozenset(writable)
        self._writable_prefixes = tuple(root.rstrip("/") + "/" for root in writable)
        self.policy_fn = policy_fn
        self.audit = audit
        self.channel = channel
        self.deadline = deadline
        self.memory_base = memory_base
        self.framed_result = framed_result  # the result is length-prefixed: done once it is whole
        self.events: list[SyscallEvent] = []
        self.outcome = Outcome()
        self._result_buf = bytearray()
        self._outputs = {fd: bytearray() for fd in output_fds}
        self._pending: dict[int, _Pending] = {}
        self._pidfds: dict[int, int] = {}
        self._procinfo: dict[int, tuple[int, int]] = {}
        self._abstract_bound: set[bytes] = set()
        self._unix_checked: dict[tuple[int, str], str] = {}
        self._forks_in_flight: dict[int, tuple[int, frozenset[int], float]] = {}
        # Static+live network decisions, cleared whenever the live policy changes.
        self._net_cache: dict[tuple[int, str, Any, int], tuple[bool, str]] = {}
        self._connect_cache: dict[tuple[int, str, bytes], _ConnectVerdict] = {}
        if channel is not None:
            channel.bind(self)

    # ------------------------------------------------------------------ dispatch table
    # ------------------------------------------------------------------ main loop
    def run(self) -> Outcome:
        poller = select.poll()
        poller.register(self.listener.fd, select.POLLIN)
        poller.register(self.root_pidfd, select.POLLIN)
        poller.register(self.result_fd, select.POLLIN)
        for fd in self._outputs:
            poller.register(fd, select.POLLIN)
        if self.channel is not None:
            poller.register(self.channel.request_fd, select.POLLIN)
        open_fds = {self.result_fd, *self._outputs}
        listener_fd = self.listener.fd
        root_done = False
        deferred = self._pending
        deadline = self.deadline
        next_signal_check = 0.0
        while True:
            timeout_ms: Optional[int] = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.outcome.timed_out = True
                    break
                timeout_ms = max(1, int(remaining * 1000))
            timed: list[float] = []
            if deferred:
                timed = [p.retry_at for p in deferred.values() if p.retry_at is not None]
                if timed:
                    wait_ms = max(0, int((min(timed) - time.monotonic()) * 1000))
                    timeout_ms = wait_ms if timeout_ms is None else min(timeout_ms, wait_ms)
                # A thread waiting on a deferred call cannot take signals (WAIT_KILLABLE_RECV):
                # look for pending ones regularly and answer EINTR, as the kernel would.
                timeout_ms = SIGNAL_CHECK_MS if timeout_ms is None else min(timeout_ms, SIGNAL_CHECK_MS)
            timeout_ms = ORPHAN_REAP_MS if timeout_ms is None else min(timeout_ms, ORPHAN_REAP_MS)
            try:
                ready = poller.poll(timeout_ms)
            except InterruptedError:
                continue
            if not ready:  # idle: reap the orphans that exited meanwhile
                self.tree.reap_adopted()
            if len(ready) == 1 and ready[0] == (listener_fd, select.POLLIN) and not deferred:
                # The hot path: one notification and nothing deferred before it.
                self._receive_one()
                if not deferred:
                    continue
                ready = []
            if deferred:
                now = time.monotonic()
                if now >= next_signal_check:  # /proc reads: not on every wake-up
                    next_signal_check = now + SIGNAL_CHECK_MS / 1000
                    self._interrupt_signalled()
            if timed:
                now = time.monotonic()
                for sock in [s for s, p in deferred.items() if p.retry_at is not None and p.retry_at <= now]:
                    self._complete_pending(sock)
            for fd, mask in ready:
                if fd == listener_fd:
                    if mask & select.POLLIN:
                        self._receive_one()
                    elif mask & (select.POLLHUP | select.POLLERR):
                        poller.unregister(fd)
                        listener_fd = -1
                elif fd == self.root_pidfd:
                    root_done = True
                    poller.unregister(fd)
                elif fd in open_fds:
                    if not self._read_pipe(fd):
                        poller.unregister(fd)
                        open_fds.discard(fd)
                elif self.channel is not None and fd == self.channel.request_fd:
                    if not self.channel.serve():
                        poller.unregister(fd)
                elif fd in self._pending:
                    poller.unregister(fd)
                    self._complete_pending(fd)
            for sock, pending in self._pending.items():
                if not pending.polled and pending.retry_at is None:
                    pending.polled = True
                    poller.register(sock, select.POLLOUT)
            if root_done or (self.framed_result and self._result_complete()):
                break
        self._finish(open_fds, root_done)
        return self.outcome

    def _result_complete(self) -> bool:
        buf = self._result_buf
        size = RESULT_HEADER.size
        return len(buf) >= size and len(buf) >= size + RESULT_HEADER.unpack_from(buf)[0]

    def _finish(self, open_fds: set[int], root_done: bool) -> None:
        # The root is gone, has delivered its result, or timed out: whatever else of the tree
        # lives is a straggler.
        if root_done:
            self.outcome.root_status = self.tree.reap_root()
            self.tree.kill_all()
        else:
            self.tree.kill_quickly()
            self.outcome.root_status = self.tree.root_status
        for fd in list(open_fds):
            while self._read_pipe(fd, block=False):
                pass
        self.outcome.tree_problems = list(self.tree.problems)
        self.outcome.result = bytes(self._result_buf) if self._result_buf else None
        self.outcome.stdout = bytes(self._outputs.get(self._out_fd(0), b""))
        self.outcome.stderr = bytes(self._outputs.get(self._out_fd(1), b""))
        for pending in self._pending.values():
            os.close(pending.sock)
        self._pending.clear()
        for pidfd in self._pidfds.values():
            os.close(pidfd)
        self._pidfds.clear()
        forget_memory_fds()

    def _out_fd(self, index: int) -> int:
        fds = list(self._outputs)
        return fds[index] if index < len(fds) else -1

    def _read_pipe(self, fd: int, block: bool = True) -> bool:
        try:
            if not block:
                os.set_blocking(fd, False)
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        except OSError:
            return False
        if not data:
            return False
        if fd == self.result_fd:
            self._result_buf += data
        else:
            self._outputs[fd] += data
        return True

    # ------------------------------------------------------------------ notifications
    def _receive_one(self) -> None:
        notif = self.listener.receive()
        if notif is None:
            return
        handler = _HANDLERS.get(notif.nr)
        try:
            if handler is None:
                # Not a syscall this filter notifies: a filter/engine mismatch. Deny, say so.
                self._record_internal(notif, f"unexpected syscall {notif.nr}")
                self.listener.fail(notif.id, errno.ENOSYS)
                return
            handler(self, notif)
        except _KernelAnswer as answer:  # refused before the policy has anything to decide
            self.listener.fail(notif.id, answer.errno)
        except ProcessLookupError:
            self.listener.fail(notif.id, errno.ESRCH)
        except Exception as exc:  # fail closed: an internal error is a denial, never an allow
            self._record_internal(notif, f"supervisor error: {type(exc).__name__}: {exc}")
            try:
                self.listener.fail(notif.id, errno.EACCES)
            except OSError:
                pass

    def _record_internal(self, notif: Notification, reason: str) -> None:
        self.outcome.internal_errors.append(reason)
        pid, ppid = self._proc(notif.pid)
        self.events.append(
            SyscallEvent(
                syscall=_NAMES.get(notif.nr, str(notif.nr)),
                category=SyscallCategory.PROCESS,
                pid=pid,
                parent_pid=ppid or None,
                denied=True,
                errno=errno.EACCES,
                reason=reason,
            )
        )

    def _proc(self, tid: int) -> tuple[int, int]:
        info = self._procinfo.get(tid)
        if info is None:
            info = read_ids(tid, self._pidfds.get(tid, -1))
            self._procinfo[tid] = info
        return info

    def _pidfd(self, tid: int) -> int:
        """A pidfd for the thread ``tid``, cached (see ``_grab_fd`` for staleness)."""
        fd = self._pidfds.get(tid)
        if fd is None:
            try:
                fd = pidfd_open(tid, PIDFD_THREAD)
            except OSError:
                fd = pidfd_open(self._proc(tid)[0], 0)
            self._pidfds[tid] = fd
        return fd

    def _grab_fd(self, notif: Notification, fd_arg: int) -> int:
        """Duplicate the notifying thread's descriptor.

        A cached pidfd whose thread died fails with ESRCH (it never reaches a newer thread that
        reused the tid): then the caches for that tid are dropped and the pidfd reopened once.
        That includes the cached ``/proc/<tid>/mem``, which would still read the old thread's
        memory while its process lives (harmless for this call, whose network operation uses
        exactly the bytes that were checked, but wrong for the next ones).
        """
        try:
            try:
                return pidfd_getfd(self._pidfd(notif.pid), _s32(fd_arg))
            except ProcessLookupError:
                stale = self._pidfds.pop(notif.pid, None)
                if stale is None:
                    raise
                os.close(stale)
                self._procinfo.pop(notif.pid, None)
                forget_memory_fd(notif.pid)
                return pidfd_getfd(self._pidfd(notif.pid), _s32(fd_arg))
        except OSError as exc:
            if exc.errno == errno.EBADF:  # not an open descriptor of the caller: so says the kernel
                raise _KernelAnswer(errno.EBADF) from None
            raise

    # ------------------------------------------------------------------ verdicts
    def _decide(self, event: SyscallEvent, static_ok: bool, reason: str) -> tuple[bool, int, SyscallEvent]:
        """Combine the static decision and the callback into (allowed, errno, event to record)."""
        if not static_ok and reason in _ABSENT_ERRNO:
            # Nothing to reach: fail as the kernel would, and record no denial. glibc probes nscd's
            # socket on every name or user lookup, X11 and D-Bus clients an abstract name first; a
            # strict test must not fail for that.
            return False, _ABSENT_ERRNO[reason], _with(event, reason=reason)
        if not static_ok:
            if self.audit:
                return True, 0, _with(event, reason=f"audit: would be denied ({reason})")
            return False, errno.EACCES, _with(event, denied=True, errno=errno.EACCES, reason=reason)
        if self.policy_fn is None:
            return True, 0, event
        try:
            verdict, problem = coerce_verdict(_bounded_call(self.policy_fn, event, self.ctx))
        except _CallbackTimeout:
            verdict, problem = Verdict.DENY, f"policy_fn took longer than {POLICY_FN_TIMEOUT}s"
        except Exception as exc:  # a callback that raises denies (sandlock allowed: not here)
            verdict, problem = Verdict.DENY, f"policy_fn raised {type(exc).__name__}: {exc}"
        if problem is not None:
            self.outcome.internal_errors.append(problem)
        if verdict.is_deny:
            if self.audit:
                return True, 0, _with(event, reason=f"audit: policy_fn would deny ({problem or verdict})")
            err = verdict.errno or errno.EPERM
            return False, err, _with(event, denied=True, errno=err, reason=problem or "denied by policy_fn")
        if verdict.is_audit:
            return True, 0, _with(event, reason="audit")
        return True, 0, event

    def _base_event(
        self, notif: Notification, syscall: str, category: SyscallCategory, **kw: Any
    ) -> SyscallEvent:
        pid, ppid = self._proc(notif.pid)
        return SyscallEvent(syscall=syscall, category=category, pid=pid, parent_pid=ppid or None, **kw)

    # ------------------------------------------------------------------ network
    def _net_decision(self, pid: int, sock: int, addr: childmem.SockAddr) -> tuple[bool, str, str]:
        """(allowed, reason, protocol) for sending to / connecting to ``addr`` from ``sock``."""
        protocol = netops.protocol_of(sock, addr.family)
        if addr.is_ip:
            assert addr.host is not None and addr.port is not None
            key = (pid, protocol, addr.host, addr.port)
            cached = self._net_cache.get(key)
            if cached is None:
                host = netops.reached_host(addr.host)
                cached = self._net_cache[key] = self.ctx.network_allowed(pid, protocol, host, addr.port)
            return cached[0], cached[1], protocol
        if addr.family == socket.AF_UNIX:
            if addr.abstract is not None:
                # Bound inside this sandbox, or named by a unix:@ rule. The supervisor connects
                # (or sends) from the pytest process, outside the test's Landlock scope.
                if addr.abstract in self._abstract_bound or self.ctx.policy.allows_abstract(addr.abstract):
                    return True, "", "unix"
                if not netops.abstract_name_exists(addr.abstract):
                    return False, ABSENT_ABSTRACT_SOCKET, "unix"
                return False, "abstract unix socket not created in this sandbox", "unix"
            return self._unix_path_ok(pid, addr.unix_path) + ("unix",)
        if addr.family in (socket.AF_UNSPEC, socket.AF_NETLINK):
            return True, "", protocol
        if self.ctx.policy.net is None:
            return True, "", protocol
        return False, f"address family {addr.family} not allowed", protocol

    def _unix_path_ok(self, pid: int, path: Optional[str]) -> tuple[bool, str]:
        if not path:
            return False, "empty unix socket path"
        resolved = self._resolve(pid, AT_FDCWD, path)
        real = _realpath(resolved)
        if real is None:
            return False, PATH_RACE
        self._unix_checked = {(pid, path): real}  # what _unix_target hands to netops: no 2nd realpath
        if self._unix_reachable(real):
            return True, ""
        if not os.path.lexists(real):
            return False, ABSENT_UNIX_SOCKET
        return False, f"unix socket {real} is outside the writable paths"

    def _address_and_socket(self, notif: Notification) -> Optional[tuple[childmem.SockAddr, int]]:
        """For ``connect``/``bind(fd, addr, len)``: the copied address and a duplicate of the socket,
        or None once the notification is answered (or gone)."""
        addr = childmem.read_sockaddr(notif.pid, notif.args[1], notif.args[2])
        if not self.listener.id_valid(notif.id):
            return None
        if addr is None:
            self.listener.fail(notif.id, errno.EFAULT)
            return None
        return addr, self._grab_fd(notif, notif.args[0])

    def _on_connect(self, notif: Notification) -> None:
        tid, args = notif.pid, notif.args
        raw = childmem.read_sockaddr_bytes(tid, args[1], args[2])
        if not self.listener.id_valid(notif.id):
            return
        if raw is None:
            self.listener.fail(notif.id, errno.EFAULT)
            return
        sock = self._grab_fd(notif, args[0])
        try:
            pid = self._proc(tid)[0]
            addr, allowed, err, event = self._connect_verdict(notif, pid, sock, raw)
            if not allowed:
                self.events.append(event)
                self.listener.fail(notif.id, err)
                return
            target = self._unix_target(pid, addr)
            result, state = netops.connect(sock, addr, target)
            if state == netops.CONNECT_IN_PROGRESS:
                self._pending[sock] = _Pending(notif.id, sock, event, tid=tid)
                sock = -1
                return
            if state == netops.CONNECT_RETRY:
                dup = sock

                def retry() -> int:
                    again, again_state = netops.connect(dup, addr, target)
                    return -errno.EAGAIN if again_state == netops.CONNECT_RETRY else again

                self._pending[sock] = _Pending(
                    notif.id, sock, event, retry, retry_at=time.monotonic() + RETRY_DELAY, tid=tid
                )
                sock = -1
                return
            self.listener.set_sync(True)
            # Our duplicate goes before the answer: the child may close its descriptor at once,
            # and the last close (the TCP teardown) then happens in the child, as without a sandbox.
            os.close(sock)
            sock = -1
            self.events.append(event)
            self.listener.reply(notif.id, result)
        finally:
            if sock >= 0:
                os.close(sock)

    def _connect_verdict(self, notif: Notification, pid: int, sock: int, raw: bytes) -> _ConnectVerdict:
        """(address, allowed, errno, event to record) for a connect to the address bytes ``raw``.

        Without a callback, an IP destination's whole verdict depends only on the process, the
        socket's protocol and the bytes: it is cached (events are immutable, so one is recorded
        as often as it happens) until the live policy changes. A callback sees every connect.
        """
        family = raw[0] | raw[1] << 8 if len(raw) >= 2 else -1
        key: Optional[tuple[int, str, bytes]] = None
        if self.policy_fn is None and family in (socket.AF_INET, socket.AF_INET6):
            key = (pid, netops.protocol_of(sock, family), raw)
            hit = self._connect_cache.get(key)
            if hit is not None:
                return hit
        addr = childmem.parse_sockaddr(raw)
        ok, reason, protocol = self._net_decision(pid, sock, addr)
        event = self._net_event(notif, "connect", addr, protocol)
        verdict = (addr, *self._decide(event, ok, reason))
        if key is not None and key[1] == protocol:
            self._connect_cache[key] = verdict
        return verdict

    def _unix_target(self, pid: int, addr: childmem.SockAddr) -> Optional[str]:
        if addr.family == socket.AF_UNIX and addr.unix_path:
            # Exactly the path _unix_path_ok decided on: resolving again could follow a directory
            # swapped for a symlink in between (netops then checks the opened inode is there).
            real = self._unix_checked.pop((pid, addr.unix_path), None)
            if real is None:
                real = os.path.realpath(self._resolve(pid, AT_FDCWD, addr.unix_path))
                if not self._unix_reachable(real):
                    raise PermissionError(errno.EACCES, f"unix socket {real} was not checked")
            return real
        return None

    def _net_event(
        self, notif: Notification, syscall: str, addr: childmem.SockAddr, protocol: str
    ) -> SyscallEvent:
        return self._base_event(
            notif,
            syscall,
            SyscallCategory.NETWORK,
            host=addr.host,
            port=addr.port,
            protocol=protocol,
            unix_path=addr.display_unix(),
        )

    def _complete_pending(self, sock: int) -> None:
        pending = self._pending.pop(sock)
        try:
            self._finish_pending(sock, pending)
        except Exception as exc:  # fail closed, as for a fresh notification
            self._pending.pop(sock, None)
            self.outcome.internal_errors.append(f"supervisor error: {type(exc).__name__}: {exc}")
            self.events.append(
                _with(pending.event, denied=True, errno=errno.EACCES, reason=f"supervisor error: {exc}")
            )
            try:
                self.listener.fail(pending.nid, errno.EACCES)
            except OSError:
                pass
        finally:
            if sock not in self._pending:
                os.close(sock)

    def _finish_pending(self, sock: int, pending: _Pending) -> None:
        if pending.retry is not None:
            result = pending.retry()
            if result == -errno.EAGAIN:
                retry_at = None if pending.retry_at is None else time.monotonic() + RETRY_DELAY
                self._pending[sock] = _Pending(
                    pending.nid, sock, pending.event, pending.retry, retry_at=retry_at, tid=pending.tid
                )
                return
        else:
            result = -netops.socket_error(sock)
        self.events.append(pending.event)
        self.listener.reply(pending.nid, result)

    def _interrupt_signalled(self) -> None:
        """Answer EINTR to deferred calls whose thread has a deliverable signal pending.

        Safe for a connect: the duplicate shares the child's socket, so the connection attempt
        goes on in the kernel and the caller sees its outcome as after any interrupted connect
        (CPython then polls the socket). A deferred send sent nothing yet, so EINTR is exact.
        """
        for sock, pending in list(self._pending.items()):
            if pending.tid and _signal_pending(pending.tid):
                del self._pending[sock]
                os.close(sock)
                self.events.append(pending.event)
                self.listener.fail(pending.nid, errno.EINTR)

    def _on_bind(self, notif: Notification) -> None:
        prepared = self._address_and_socket(notif)
        if prepared is None:
            return
        addr, sock = prepared
        try:
            pid = self._proc(notif.pid)[0]
            protocol = netops.protocol_of(sock, addr.family)
            if addr.is_ip:
                ok, reason = netops.bind_allowed(self.ctx, pid, protocol, addr)
            elif addr.family == socket.AF_UNIX and addr.unix_path:
                parent, name = os.path.split(self._resolve(pid, AT_FDCWD, addr.unix_path))
                real_parent = _realpath(parent or "/")
                bind_path = os.path.join(real_parent or "/", name)  # bound exactly where it was checked
                ok = real_parent is not None and self._is_writable(real_parent)
                if real_parent is None:
                    reason = PATH_RACE
                elif ok and self.ctx.has_path_denials() and self.ctx.path_denied(bind_path):
                    ok, reason = False, UNDER_DENIED_PATH  # the socket file itself is denied
                else:
                    reason = "" if ok else f"cannot create a unix socket in {parent}: not writable"
            elif addr.family in (socket.AF_UNIX, socket.AF_NETLINK, socket.AF_UNSPEC):
                ok, reason = True, ""  # abstract/autobind unix names, netlink: nothing leaves the host
            else:
                # A packet socket bound to an interface sends whatever frames it is given.
                ok = self.ctx.policy.net is None
                reason = "" if ok else f"address family {addr.family} not allowed"
            event = self._net_event(notif, "bind", addr, protocol)
            if not ok and addr.is_ip and netops.nonlocal_bind_errno(sock, addr):
                # No interface has that address: the kernel refuses it whatever the policy says.
                self.events.append(_with(event, errno=errno.EADDRNOTAVAIL, reason="no such local address"))
                self.listener.fail(notif.id, errno.EADDRNOTAVAIL)
                return
            allowed, err, event = self._decide(event, ok, reason)
            self.events.append(event)
            if not allowed:
                self.listener.fail(notif.id, err)
                return
            if addr.family == socket.AF_UNIX and addr.unix_path:
                if self.landlock_ceiling or self.audit:
                    # The child binds it itself: a socket's name is the address bytes it was bound
                    # with, and the child's must be the name getsockname() and its peers see
                    # (uvicorn, multiprocessing.connection, asyncio pass it on). Where the socket
                    # file can be created, Landlock decides (its MAKE_SOCK right, within the
                    # writable paths), whatever the child's memory says by then; in audit mode
                    # nothing is denied. A denied path inside the writable ones (a live deny_path,
                    # an fs_deny Landlock could not express) is this check's alone, as for any
                    # write-open that the supervisor decides first. Only without Landlock does the
                    # supervisor bind it, through the directory it checked, and then the name is
                    # a /proc/self/fd path.
                    self.listener.continue_(notif.id)
                    return
                result = netops.bind_unix_path(sock, bind_path)
            else:
                result = netops.bind(sock, addr)
            if result == 0 and addr.abstract is not None:
                self._abstract_bound.add(addr.abstract)
            self.listener.set_sync(True)
            self.listener.reply(notif.id, result)
        finally:
            os.close(sock)

    def _on_sendto(self, notif: Notification) -> None:
        fd_arg, buf, length, flags, addr_ptr, addr_len = notif.args
        addr = childmem.read_sockaddr(notif.pid, addr_ptr, addr_len)
        data = childmem.read_memory_safe(notif.pid, buf, min(length, MAX_DATA))
        if not self.listener.id_valid(notif.id):
            return
        if addr is None:
            self.listener.fail(notif.id, errno.EFAULT)
            return
        sock = self._grab_fd(notif, fd_arg)
        pid = self._proc(notif.pid)[0]
        ok, reason, protocol = self._net_decision(pid, sock, addr)
        event = self._net_event(notif, "sendto", addr, protocol)
        event = _with(event, size=len(data))
        allowed, err, event = self._decide(event, ok, reason)
        if not allowed:
            os.close(sock)
            self.events.append(event)
            self.listener.fail(notif.id, err)
            return
        target = self._unix_target(pid, addr)

        def attempt() -> int:
            return netops.sendto(sock, data, _s32(flags), addr, target)

        self._send_or_defer(notif.id, sock, event, attempt, notif.pid)

    def _send_or_defer(
        self, nid: int, sock: int, event: SyscallEvent, attempt: Callable[[], int], tid: int = 0
    ) -> None:
        result = attempt()
        if result == -errno.EAGAIN and netops.is_blocking(sock):
            self._pending[sock] = _Pending(nid, sock, event, attempt, tid=tid)
            return
        os.close(sock)
        self.events.append(event)
        self.listener.set_sync(True)
        self.listener.reply(nid, result)

    def _on_sendmsg(self, notif: Notification) -> None:
        fd_arg, msg_ptr, flags = notif.args[0], notif.args[1], notif.args[2]
        msg = childmem.read_msghdr(notif.pid, msg_ptr, MAX_DATA)
        if not self.listener.id_valid(notif.id):
            return
        sock = self._grab_fd(notif, fd_arg)
        pid = self._proc(notif.pid)[0]
        ok, reason, protocol, event = self._msg_decision(notif, pid, sock, msg, "sendmsg")
        allowed, err, event = self._decide(event, ok, reason)
        if not allowed:
            os.close(sock)
            self.events.append(event)
            self.listener.fail(notif.id, err)
            return
        pidfd = self._pidfd(notif.pid)
        target = self._unix_target(pid, msg.name) if msg.name is not None else None

        def attempt() -> int:
            return netops.sendmsg(sock, msg, _s32(flags), pidfd, target)

        self._send_or_defer(notif.id, sock, event, attempt, notif.pid)

    def _msg_decision(
        self, notif: Notification, pid: int, sock: int, msg: childmem.MsgHdr, syscall: str
    ) -> tuple[bool, str, str, SyscallEvent]:
        if msg.name is None:
            protocol = netops.protocol_of(sock, -1)
            event = self._base_event(
                notif, syscall, SyscallCategory.NETWORK, protocol=protocol, size=len(msg.data)
            )
            return True, "", protocol, event
        ok, reason, protocol = self._net_decision(pid, sock, msg.name)
        event = _with(self._net_event(notif, syscall, msg.name, protocol), size=len(msg.data))
        return ok, reason, protocol, event

    def _on_sendmmsg(self, notif: Notification) -> None:
        fd_arg, vec_ptr, vlen, flags = notif.args[0], notif.args[1], min(notif.args[2], 1024), notif.args[3]
        raw = childmem.read_memory_safe(notif.pid, vec_ptr, childmem.MMSGHDR_SIZE * vlen)
        msgs = []
        for i in range(len(raw) // childmem.MMSGHDR_SIZE):
            fields = childmem.MSGHDR.unpack_from(raw, i * childmem.MMSGHDR_SIZE)
            msgs.append(childmem.decode_msghdr(notif.pid, fields, MAX_DATA))
        if not self.listener.id_valid(notif.id):
            return
        sock = self._grab_fd(notif, fd_arg)
        try:
            pid = self._proc(notif.pid)[0]
            pidfd = self._pidfd(notif.pid)
            sent = 0
            first_error = 0
            for i, msg in enumerate(msgs):
                ok, reason, _protocol, event = self._msg_decision(notif, pid, sock, msg, "sendmmsg")
                allowed, err, event = self._decide(event, ok, reason)
                self.events.append(event)
                if not allowed:
                    first_error = -err
                    break
                target = self._unix_target(pid, msg.name) if msg.name is not None else None
                result = netops.sendmsg(sock, msg, _s32(flags) | socket.MSG_DONTWAIT, pidfd, target)
                if result < 0:
                    first_error = result
                    break
                childmem.write_msg_len(notif.pid, vec_ptr + i * childmem.MMSGHDR_SIZE, result)
                sent += 1
            self.listener.reply(notif.id, sent if sent else (first_error or 0))
        finally:
            os.close(sock)

    # ------------------------------------------------------------------ processes
    def _on_exec(self, notif: Notification) -> None:
        is_at = notif.nr == _NR["execveat"]
        path_arg, argv_arg = (notif.args[1], notif.args[2]) if is_at else (notif.args[0], notif.args[1])
        path, argv = childmem.read_exec_args(notif.pid, path_arg, argv_arg)
        if is_at and not path and notif.args[4] & AT_EMPTY_PATH:
            path = _readlink(f"/proc/{notif.pid}/fd/{_s32(notif.args[0])}") or ""
        if self.policy_fn is None and not self.ctx.denied_paths():
            # Nothing decides on what was read: the answer is "continue", given first so that the
            # launch waits for no bookkeeping. The answer also validates the notification: if the
            # caller died (and its pid was reused) before our reads, it fails and nothing is recorded.
            pid, ppid = self._proc(notif.pid)  # before the answer: a quick exit would lose it
            self.listener.set_sync(False)
            if self.listener.continue_(notif.id):
                self.events.append(
                    SyscallEvent(
                        syscall="execveat" if is_at else "execve",
                        category=SyscallCategory.PROCESS,
                        pid=pid,
                        parent_pid=ppid or None,
                        argv=argv,
                        path=path or None,
                    )
                )
            return
        if not self.listener.id_valid(notif.id):
            return
        event = self._base_event(
            notif, "execveat" if is_at else "execve", SyscallCategory.PROCESS, argv=argv, path=path or None
        )
        denied_path = False
        if path and self.ctx.denied_paths():  # static fs_deny is Landlock's job; live ones are ours
            resolved = self._resolve(notif.pid, AT_FDCWD, path)
            real = _realpath(resolved)
            denied_path = real is None or self.ctx.path_denied(real)
        allowed, err, event = self._decide(event, not denied_path, "path denied by the live policy")
        self.events.append(event)
        if allowed:
            self.listener.set_sync(False)
            self.listener.continue_(notif.id)  # execve cannot be performed on behalf; Landlock enforces
        else:
            self.listener.fail(notif.id, err)

    def _on_process(self, notif: Notification) -> None:
        name = _NAMES[notif.nr]
        event = self._base_event(notif, name, SyscallCategory.PROCESS)
        ok, reason = True, ""
        limit = self.ctx.current().max_processes
        self._forks_in_flight.pop(notif.pid, None)  # notified again: its previous fork has returned
        # In-flight forks first, then the tree: a child appearing in between is counted twice
        # (conservative), never zero times.
        if limit is not None and self._forks_still_running() + self.tree.count() >= limit:
            ok, reason = False, f"max_processes={limit} reached"
        if ok or self.audit:
            allowed, err, event = self._decide(event, ok, reason)
        else:
            allowed, err = False, errno.EAGAIN
            event = _with(event, denied=True, errno=errno.EAGAIN, reason=reason)
        if allowed and limit is not None:
            # Read before the event is recorded: if it raises, the fork is denied as an internal
            # error and no "allowed" event is left behind.
            tgid = self._proc(notif.pid)[0]
            before = frozenset(_children_of(tgid))
            self._forks_in_flight[notif.pid] = (tgid, before, time.monotonic() + FORK_SETTLE)
        self.events.append(event)
        if allowed:
            self.listener.continue_(notif.id)
        else:
            self.listener.fail(notif.id, err)

    def _forks_still_running(self) -> int:
        """Forks continued whose child is not in the tree yet: counted too, or concurrent forks would
        each see the same count and overshoot the limit. One is done when its forker has a new child
        (or after FORK_SETTLE seconds: the fork failed, or the child is already gone)."""
        running = 0
        now = time.monotonic()
        for tid, (tgid, before, deadline) in list(self._forks_in_flight.items()):
            if now > deadline or set(_children_of(tgid)) - before:
                del self._forks_in_flight[tid]
            else:
                running += 1
        return running

    def _on_seccomp(self, notif: Notification) -> None:
        # The kernel refuses a second listener in a filter chain itself (EBUSY): the answer is the
        # kernel's and no denial (a nested pytest probes for one to print its header). Notified
        # only to say why, in the events.
        event = self._base_event(
            notif,
            "seccomp",
            SyscallCategory.PROCESS,
            errno=errno.EBUSY,
            reason="a second seccomp notification listener cannot run inside pytest-sandlock (one per chain)",
        )
        self.events.append(event)
        self.listener.fail(notif.id, errno.EBUSY)

    # ------------------------------------------------------------------ filesystem
    def _on_path(self, notif: Notification) -> None:
        name = _NAMES[notif.nr]
        targets: list[str] = []
        for dirfd_index, path_index in _PATH_CALLS[name]:
            raw = childmem.read_path(notif.pid, notif.args[path_index])
            dirfd = AT_FDCWD if dirfd_index is None else _s32(notif.args[dirfd_index])
            if raw is None or raw == "":
                # utimensat(fd, NULL) and friends act on the descriptor itself.
                target = _readlink(f"/proc/{notif.pid}/fd/{dirfd}") if dirfd != AT_FDCWD else None
                targets.append(target or "")
            else:
                targets.append(self._resolve(notif.pid, dirfd, raw))
        follow = name in ("open", "openat", "creat", "truncate", "chmod", "chown", "utimes")
        if (
            self.landlock_enforced
            and _opens_for_writing(name, notif.args)
            and self.policy_fn is None
            and not self.ctx.has_path_denials()
        ):
            # Landlock alone decides whether this open passes, so the call goes on at once and the
            # event, with our prediction of Landlock's answer, is recorded after. Not so with any
            # denied path (static ones Landlock may not cover, e.g. a file not created yet; live
            # ones it never sees) nor a callback: those are decided here first. The answer
            # validates the notification: if the caller died before our read, nothing is recorded.
            pid, ppid = self._proc(notif.pid)
            if not self.listener.continue_(notif.id):
                return
            ok, reason = self._writable_targets(targets, follow)
            event = SyscallEvent(
                syscall=name,
                category=SyscallCategory.FILE,
                pid=pid,
                parent_pid=ppid or None,
                path=targets[-1] if targets else None,
            )
            failure = 0 if ok else self._refused_by_lookup(name, notif.args, targets, follow)
            if failure:  # what the kernel answered, before Landlock: not a denial
                self.events.append(_lookup_event(event, failure, reason))
            else:
                self.events.append(self._decide(event, ok, reason)[2])
            return
        if not self.listener.id_valid(notif.id):
            return
        ok, reason = self._writable_targets(targets, follow)
        shown = targets[-1] if targets else None
        event = self._base_event(notif, name, SyscallCategory.FILE, path=shown)
        failure = 0 if ok else self._refused_by_lookup(name, notif.args, targets, follow)
        if failure:  # fail it as the kernel would (no race: the call does not run), record no denial
            self.events.append(_lookup_event(event, failure, reason))
            self.listener.fail(notif.id, failure)
            return
        allowed, err, event = self._decide(event, ok, reason)
        self.events.append(event)
        if allowed:
            self.listener.continue_(notif.id)  # Landlock is the authority for what passes
        else:
            self.listener.fail(notif.id, err)

    def _writable_targets(self, targets: list[str], follow: bool) -> tuple[bool, str]:
        for target in targets:
            try:
                real = _predict_real(target, follow)
            except OSError:
                return False, PATH_RACE
            if self.ctx.has_path_denials() and self.ctx.path_denied(real):
                return False, UNDER_DENIED_PATH
            if not self._is_writable(real):
                return False, OUTSIDE_WRITABLE
        return True, ""

    @staticmethod
    def _refused_by_lookup(name: str, args: tuple[int, ...], targets: list[str], follow: bool) -> int:
        """For a call outside the writable paths: the errno the kernel gives it anyway, before any
        permission check (a missing parent directory, an existing name for mkdir...), or 0. Such a
        call is not a denial: it fails the same with no sandbox, and Landlock never sees it.
        (libuuid, for one, tries to create /var/lib/libuuid/clock.txt where that directory does
        not exist, and carries on.)"""
        for index, target in enumerate(targets):
            try:
                real = _predict_real(target, follow)
            except OSError:
                return 0
            failure = _lookup_failure(real, *_creates(name, args, index))
            if failure:
                return failure
        return 0

    def _resolve(self, pid: int, dirfd: int, path: str) -> str:
        path = _proc_self(path, pid)
        if path.startswith("/"):
            return os.path.normpath(path)
        base = _readlink(f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}") or "/"
        return os.path.normpath(os.path.join(base, path))

    def _unix_reachable(self, real: str) -> bool:
        """A unix socket file the test may connect or send to: in the writable paths, or named by a
        unix: rule; never under a denied path."""
        if self._is_writable(real):
            return True
        if not self.ctx.policy.allows_unix_path(real):
            return False
        return not (self.ctx.has_path_denials() and self.ctx.path_denied(real))

    def _is_writable(self, path: str) -> bool:
        if not path.startswith("/"):
            return True  # pipe:[..], socket:[..], anon_inode: no path for Landlock to refuse
        if self.ctx.has_path_denials() and self.ctx.path_denied(path):
            return False
        # One startswith over precomputed prefixes: this runs for every write-open.
        return path in self._writable_roots or path.startswith(self._writable_prefixes)

    # ------------------------------------------------------------------ live policy
    def policy_changed(self, field_name: str) -> None:
        """Called by the PolicyContext after any change (grant, restrict, override, deny_path)."""
        self._net_cache.clear()
        self._connect_cache.clear()
        if field_name == "max_memory":
            self.apply_memory_limit()

    def apply_memory_limit(self) -> None:
        """Re-apply RLIMIT_AS to every process of the tree after a grant or restrict."""
        live = self.ctx.current().max_memory
        ceiling = self.ctx.policy.max_memory
        if ceiling is None and not self.memory_base and self.tree.root:
            # No static limit, so the child did not measure its address space: take it now.
            self.memory_base = _vm_size(self.tree.root)
        try:
            members, problem = self.tree.members(), None
        except TreeUnreadable as exc:  # limit the ones found, then fail the request that asked
            members, problem = exc.found, exc
        for pid in members:
            try:
                soft = resource.RLIM_INFINITY if live is None else self.memory_base + live
                hard_src = self.ctx.restricted_fields()
                hard = soft if "max_memory" in hard_src or ceiling is None else self.memory_base + ceiling
                if soft != resource.RLIM_INFINITY and hard != resource.RLIM_INFINITY:
                    hard = max(hard, soft)
                resource.prlimit(pid, resource.RLIMIT_AS, (soft, hard))
            except (OSError, ValueError):
                continue
        if problem is not None:
            raise problem


# Dispatch by syscall number to unbound methods: a table of bound methods would make every
# Supervisor a reference cycle that only a full garbage collection frees.
_HANDLERS: dict[int, Callable[[Supervisor, Notification], None]] = {
    _NR["connect"]: Supervisor._on_connect,
    _NR["bind"]: Supervisor._on_bind,
    _NR["sendto"]: Supervisor._on_sendto,
    _NR["sendmsg"]: Supervisor._on_sendmsg,
    _NR["sendmmsg"]: Supervisor._on_sendmmsg,
    _NR["execve"]: Supervisor._on_exec,
    _NR["execveat"]: Supervisor._on_exec,
    _NR["seccomp"]: Supervisor._on_seccomp,
    **{_NR[name]: Supervisor._on_process for name in _PROCESS_CALLS},
    **{_NR[name]: Supervisor._on_path for name in _PATH_CALLS},
}


class _CallbackTimeout(BaseException):
    """Raised into a policy_fn that overran its time (BaseException: the callback cannot swallow it
    with a bare ``except Exception``)."""


def _bounded_call(fn: PolicyFn, event: SyscallEvent, ctx: PolicyContext) -> Any:
    """Call the callback with a SIGALRM deadline, restoring whatever alarm was armed before.

    Only possible in the main thread (signal handlers live there); elsewhere the call is unbounded.
    A callback that hangs must not freeze every sandboxed process: it is interrupted and denies.
    """
    if threading.current_thread() is not threading.main_thread():
        return fn(event, ctx)

    def on_alarm(signum: int, frame: Any) -> None:
        raise _CallbackTimeout()

    previous_timer = signal.setitimer(signal.ITIMER_REAL, 0)
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, POLICY_FN_TIMEOUT)
    try:
        return fn(event, ctx)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0] > 0:
            remaining = max(previous_timer[0] - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_timer[1])


def _with(event: SyscallEvent, **changes: Any) -> SyscallEvent:
    from dataclasses import replace

    return replace(event, **changes)


def _signal_pending(tid: int) -> bool:
    """True if ``tid`` has a pending signal it neither blocks nor ignores."""
    fields: dict[bytes, int] = {}
    try:
        with open(f"/proc/{tid}/status", "rb") as fh:
            for line in fh:
                key = line[:6]
                if key in (b"SigPnd", b"ShdPnd", b"SigBlk", b"SigIgn"):
                    fields[key] = int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return False
    pending = fields.get(b"SigPnd", 0) | fields.get(b"ShdPnd", 0)
    return bool(pending & ~fields.get(b"SigBlk", 0) & ~fields.get(b"SigIgn", 0))


def _vm_size(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _realpath(path: str) -> Optional[str]:
    """``os.path.realpath``, or None when the path changed under it (see PATH_RACE)."""
    try:
        return os.path.realpath(path)
    except OSError:
        return None


def _readlink(path: str) -> Optional[str]:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _lookup_event(event: SyscallEvent, failure: int, refused_because: str) -> SyscallEvent:
    """The event of a call the kernel's path walk fails anyway; ``refused_because`` is why the
    policy would have refused it (outside the writable paths, under a denied path)."""
    before = "the kernel refuses it before any permission check"
    reason = f"{_LOOKUP_FAILURES[failure]}: {before} ({refused_because})"
    return _with(event, errno=failure, reason=reason)


def _proc_self(path: str, pid: int) -> str:
    for prefix in ("/proc/self/", "/proc/thread-self/"):
        if path.startswith(prefix):
            return f"/proc/{pid}/" + path[len(prefix) :]
    return path


def _predict_real(path: str, follow: bool) -> str:
    """Where a write to ``path`` lands, as Landlock will see it (symlinks resolved)."""
    if not path.startswith("/"):
        return path
    if path.startswith("/proc/"):
        target = _readlink(path)
        if target is not None:
            return target
    if follow:
        return os.path.realpath(path)
    head, tail = os.path.split(path)
    return os.path.join(os.path.realpath(head), tail)
