"""Finding and killing every process of a sandbox's tree, detached grandchildren included.

While a sandbox runs, the supervising process is a child subreaper (``PR_SET_CHILD_SUBREAPER``):
a process of the tree whose parent dies is re-parented to the supervisor instead of init, so a
double-forked daemon in a new session is still found. Processes that the supervisor adopted are
told apart from its own other children (a server a fixture started) by their seccomp filter count:
every sandboxed process carries at least one more filter than the supervisor itself.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import fcntl
import os
import signal
import struct
from collections.abc import Iterable
from typing import Optional

from .syscalls import PIDFD_THREAD, PR_GET_CHILD_SUBREAPER, PR_SET_CHILD_SUBREAPER, prctl

# pid -> an open descriptor of /proc/<pid>/task/<pid>/children, re-read with pread (a seq file
# regenerates its content at offset 0). Kept for this process (read before and after every sandbox)
# and for each live root (see ProcessTree.watch): the first look-up of a new process's /proc entry
# costs ~0.1 ms on the project's VM, an open descriptor makes every later read ~5 us.
_children_fds: dict[int, int] = {}


def _read_children(fd: int) -> list[int]:
    data = b""
    while chunk := os.pread(fd, 65536, len(data)):
        data += chunk
    return [int(x) for x in data.split()]


def _children_of(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        # A single-threaded process (the usual case) has one children file: /proc/<pid>/task's
        # link count is 2 + its threads, one stat instead of listing the directory.
        task_dir = f"/proc/{pid}/task"
        single = os.stat(task_dir).st_nlink == 3
        if single and pid in _children_fds:
            return _read_children(_children_fds[pid])
        tasks = [str(pid)] if single else os.listdir(task_dir)
    except (OSError, ValueError):
        return kids
    for tid in tasks:
        try:
            fd = os.open(f"/proc/{pid}/task/{tid}/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:  # raw reads, no file object: this runs at the end of every sandboxed test
            kids.extend(_read_children(fd))
        except (OSError, ValueError):
            continue
        finally:
            os.close(fd)
    return kids


def _keep_children_fd(pid: int) -> None:
    """Open (once) and keep the main thread's children file of ``pid``."""
    if pid not in _children_fds:
        try:
            _children_fds[pid] = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass


def _drop_children_fd(pid: int) -> None:
    fd = _children_fds.pop(pid, None)
    if fd is not None:
        os.close(fd)


def kept_fds() -> tuple[int, ...]:
    """Descriptors this module keeps open, this process's children file included (opened here if
    it is not yet, so that the list is complete before the next fork). A forked child closes them
    before running untrusted code: they only list process ids, but the test has no business
    reading the pytest process's."""
    _keep_children_fd(os.getpid())
    return tuple(_children_fds.values())


def descendants(roots: Iterable[int]) -> list[int]:
    """Every live descendant of ``roots`` (roots included), parents before children."""
    seen: list[int] = []
    stack = list(roots)
    known: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in known:
            continue
        known.add(pid)
        seen.append(pid)
        stack.extend(_children_of(pid))
    return seen


_flag = ctypes.c_int(0)
_own_filters: tuple[int, int] = (0, -1)  # (pid, count): the count changes only if we install one


def _own_filter_count() -> int:
    global _own_filters
    pid = os.getpid()
    if _own_filters[0] != pid:
        _own_filters = (pid, seccomp_filter_count(pid))
    return _own_filters[1]


def seccomp_filter_count(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Seccomp_filters:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


_deferred: list[int] = []


def reap_deferred() -> None:
    """Collect roots that were killed without waiting (see ``kill_quickly``)."""
    for pid in list(_deferred):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _deferred.remove(pid)


def _reap_all_deferred() -> None:
    for pid in _deferred:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


atexit.register(_reap_all_deferred)


# PIDFD_GET_INFO (Linux 6.13+): _IOWR(0xFF, 11, struct pidfd_info), its first version (64 bytes):
# mask, cgroupid, pid, tgid, ppid, then ids. Three syscalls instead of instantiating /proc/<tid>,
# which costs tens of microseconds for each new process on a virtual machine.
PIDFD_GET_INFO = 0xC040FF0B
_PIDFD_INFO = struct.Struct("=QQ12I")
_PIDFD_INFO_PID = 1
_pidfd_info_works = True


def _ids_from_pidfd(pidfd: int) -> Optional[tuple[int, int]]:
    global _pidfd_info_works
    buf = bytearray(_PIDFD_INFO.pack(_PIDFD_INFO_PID, 0, *(0,) * 12))
    try:
        fcntl.ioctl(pidfd, PIDFD_GET_INFO, buf, True)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
            _pidfd_info_works = False
        return None
    _mask, _cgroup, _pid, tgid, ppid, *_ = _PIDFD_INFO.unpack(buf)
    return tgid, ppid


def read_ids(tid: int, pidfd: int = -1) -> tuple[int, int]:
    """(thread group id, parent pid) of a thread, or (tid, 0) when it is gone. ``pidfd``, if
    given, is a pidfd for that thread (saves opening one)."""
    if _pidfd_info_works:
        own = pidfd < 0
        try:
            if own:
                pidfd = os.pidfd_open(tid, PIDFD_THREAD)
        except OSError:
            pass
        else:
            try:
                ids = _ids_from_pidfd(pidfd)
            finally:
                if own:
                    os.close(pidfd)
            if ids is not None:
                return ids
    return read_status(tid)


def read_status(tid: int) -> tuple[int, int]:
    """(thread group id, parent pid) of a thread from /proc, or (tid, 0) when it is gone."""
    try:
        fd = os.open(f"/proc/{tid}/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)  # Tgid and PPid are in the first lines
        finally:
            os.close(fd)
        tgid_at = data.index(b"\nTgid:") + 6
        ppid_at = data.index(b"\nPPid:") + 6
        return int(data[tgid_at : data.index(b"\n", tgid_at)]), int(
            data[ppid_at : data.index(b"\n", ppid_at)]
        )
    except (OSError, ValueError):
        return tid, 0


class ProcessTree:
    """The processes of one sandbox: the root child, its descendants and adopted orphans."""

    def __init__(self) -> None:
        self.root = 0
        self.root_reaped = False
        self.root_status: Optional[int] = None
        self._own_filters = _own_filter_count()
        self._children_before: set[int] = set()
        self._became_subreaper = False

    def start(self, root: int) -> None:
        """Call right after forking ``root``, before it runs anything it was asked to run: snapshot
        our other children and become a subreaper.

        The root cannot start a process before the hand-off, so this runs while it confines itself
        and the parent would only wait. A child that another thread forks in between is not taken
        for the sandbox's: adopted processes must carry more seccomp filters than we do."""
        self.root = root
        own = os.getpid()
        _keep_children_fd(own)
        self._children_before = set(_children_of(own))
        self._children_before.discard(root)
        try:
            prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(_flag))
            if not _flag.value:
                prctl(PR_SET_CHILD_SUBREAPER, 1)
                self._became_subreaper = True
        except OSError:
            pass

    def watch(self) -> None:
        """Open the root's children file now, while the root runs its target and this process has
        nothing to do: reading it at the end of the run is then cheap."""
        if self.root and not self.root_reaped:
            _keep_children_fd(self.root)

    def stop(self) -> None:
        if self.root:
            _drop_children_fd(self.root)
        if self._became_subreaper:
            try:
                prctl(PR_SET_CHILD_SUBREAPER, 0)
            except OSError:
                pass
            self._became_subreaper = False

    def adopted(self) -> list[int]:
        """Our children that belong to the sandbox but are not its root (orphans re-parented to us)."""
        out = []
        for pid in _children_of(os.getpid()):
            if pid == self.root or pid in self._children_before:
                continue
            if seccomp_filter_count(pid) > self._own_filters:
                out.append(pid)
        return out

    def members(self, include_root: bool = True) -> list[int]:
        roots = self.adopted()
        if include_root and self.root:
            roots.insert(0, self.root)
        return descendants(roots)

    def count(self) -> int:
        return len(self.members())

    def kill_all(self, rounds: int = 50) -> int:
        """SIGKILL every member until none is left; reaps the ones that are our children.

        Call after the root has been reaped (see ``reap_root``): from then on every survivor is
        an adopted orphan or a descendant of one.
        """
        killed = 0
        for _ in range(rounds):
            members = [p for p in self.members(include_root=not self.root_reaped) if p != os.getpid()]
            if not members:
                break
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            if not self.root_reaped and self.root in members:
                self.reap_root()
            self._reap(members)
        return killed

    def kill_quickly(self) -> None:
        """End the tree without waiting for the root's exit when nothing else is left.

        Used once the root has delivered its result: tearing down a forked pytest's address
        space takes about as long as the fork, and nobody needs to wait for it. The root is
        SIGKILLed (it was exiting anyway) and reaped later; if any other process of the tree
        exists, fall back to the thorough loop.
        """
        members = self.members(include_root=not self.root_reaped)
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if any(pid != self.root for pid in members):
            self.reap_root()
            self.kill_all()
        elif not self.root_reaped and self.reap_root(block=False) is None and not self.root_reaped:
            _deferred.append(self.root)
            self.root_reaped = True

    def reap_root(self, block: bool = True) -> Optional[int]:
        """Wait for the root child; returns its wait status (None if already reaped elsewhere)."""
        if self.root_reaped:
            return self.root_status
        try:
            pid, status = os.waitpid(self.root, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.root_reaped = True
            return None
        if pid == 0:
            return None
        self.root_reaped = True
        self.root_status = status
        return status

    def _reap(self, pids: Iterable[int]) -> None:
        mine = set(_children_of(os.getpid())) - self._children_before
        for pid in pids:
            if pid in mine and pid != self.root:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
