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
import time
from collections.abc import Iterable
from typing import Optional

from .errors import TreeUnreadable
from .syscalls import PIDFD_THREAD, PR_GET_CHILD_SUBREAPER, PR_SET_CHILD_SUBREAPER, prctl

# pid -> an open descriptor of /proc/<pid>/task/<pid>/children, re-read with pread (a seq file
# regenerates its content at offset 0). Kept for this process (read before and after every sandbox)
# and for each live root (see ProcessTree.watch): the first look-up of a new process's /proc entry
# costs ~0.1 ms on the project's VM, an open descriptor makes every later read ~5 us.
_children_fds: dict[int, int] = {}
_GONE = (errno.ENOENT, errno.ESRCH)  # the process (or thread) has ended: nothing left to list


def _read_children(fd: int) -> list[int]:
    data = b""
    while chunk := os.pread(fd, 65536, len(data)):
        data += chunk
    try:
        return [int(x) for x in data.split()]
    except ValueError:
        raise TreeUnreadable(f"unexpected content in a /proc children file: {data[:80]!r}") from None


def _unreadable(path: str, exc: OSError) -> TreeUnreadable:
    return TreeUnreadable(f"cannot read {path}: {exc.strerror or exc}")


def _children_of(pid: int) -> list[int]:
    """The children of every thread of ``pid``; [] once it is gone. Any other failure to read
    /proc raises TreeUnreadable: an unreadable list is never taken for an empty one."""
    task_dir = f"/proc/{pid}/task"
    try:
        # A single-threaded process (the usual case) has one children file: /proc/<pid>/task's
        # link count is 2 + its threads, one stat instead of listing the directory.
        single = os.stat(task_dir).st_nlink == 3
        if single and pid in _children_fds:
            return _read_children(_children_fds[pid])
        tasks = [str(pid)] if single else os.listdir(task_dir)
    except OSError as exc:
        if exc.errno in _GONE:
            return []
        raise _unreadable(task_dir, exc) from None
    kids: list[int] = []
    for tid in tasks:
        path = f"{task_dir}/{tid}/children"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in _GONE:  # that thread has ended
                continue
            raise _unreadable(path, exc) from None
        try:  # raw reads, no file object: this runs at the end of every sandboxed test
            kids.extend(_read_children(fd))
        except OSError as exc:
            if exc.errno not in _GONE:
                raise _unreadable(path, exc) from None
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
    """Every live descendant of ``roots`` (roots included), parents before children. Raises
    TreeUnreadable, carrying every process it did find, if some process's children could not be
    read (the walk goes on past it first, so that a caller killing the tree kills all it can)."""
    seen: list[int] = []
    stack = list(roots)
    known: set[int] = set()
    problem: Optional[TreeUnreadable] = None
    while stack:
        pid = stack.pop()
        if pid in known:
            continue
        known.add(pid)
        seen.append(pid)
        try:
            stack.extend(_children_of(pid))
        except TreeUnreadable as exc:
            problem = problem or exc
    if problem is not None:
        raise TreeUnreadable(str(problem), seen)
    return seen


def confined_children(own_filters: int, exclude: Iterable[int] = ()) -> list[int]:
    """This process's children that carry more seccomp filters than ``own_filters`` (this
    process's own count): sandboxed processes re-parented to it. Raises TreeUnreadable (with the
    ones found) if a child's filter count or the list of children cannot be read."""
    skip = set(exclude)
    out: list[int] = []
    problem: Optional[TreeUnreadable] = None
    for pid in _children_of(os.getpid()):
        if pid in skip:
            continue
        try:
            if seccomp_filter_count(pid) > own_filters:
                out.append(pid)
        except TreeUnreadable as exc:  # not killed: it may be a server a fixture started
            problem = problem or exc
    if problem is not None:
        raise TreeUnreadable(str(problem), out)
    return out


_flag = ctypes.c_int(0)
_own_filters: tuple[int, int] = (0, -1)  # (pid, count): the count changes only if we install one


def own_filter_count() -> int:
    """Seccomp filters of this process itself (every sandboxed process carries more); read once."""
    global _own_filters
    pid = os.getpid()
    if _own_filters[0] != pid:
        _own_filters = (pid, seccomp_filter_count(pid))
    return _own_filters[1]


def seccomp_filter_count(pid: int) -> int:
    """How many seccomp filters ``pid`` carries; -1 once it is gone. TreeUnreadable if its
    status cannot be read for another reason."""
    path = f"/proc/{pid}/status"
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if line.startswith(b"Seccomp_filters:"):
                    return int(line.split()[1])
    except OSError as exc:
        if exc.errno in _GONE:
            return -1
        raise _unreadable(path, exc) from None
    except (ValueError, IndexError):
        pass
    raise TreeUnreadable(f"no seccomp filter count in {path}")


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
        self._own_filters = own_filter_count()
        self._children_before: set[int] = set()
        self._became_subreaper = False
        self._unread = False
        # Why the tree could not be checked to be empty at the end (see kill_all): reported with
        # the run's outcome, never dropped.
        self.problems: list[str] = []

    def start(self, root: int) -> None:
        """Call right after forking ``root``, before it runs anything it was asked to run: snapshot
        our other children and become a subreaper.

        The root cannot start a process before the hand-off, so this runs while it confines itself
        and the parent would only wait. A child that another thread forks in between is not taken
        for the sandbox's: adopted processes must carry more seccomp filters than we do. If our
        children cannot be listed, TreeUnreadable: orphans could not be told apart later."""
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
        return confined_children(self._own_filters, exclude=(self.root, *self._children_before))

    def reap_adopted(self) -> None:
        """Reap the adopted orphans that have exited. They are this process's children while it is
        the subreaper; without a waitpid they would stay zombies, still seen by kill(pid, 0) and
        /proc, until the end of the run (init reaps them at once without a sandbox)."""
        try:
            pids = self.adopted()
        except TreeUnreadable as exc:  # the end of the run says so; reap what was found
            pids = exc.found
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def members(self, include_root: bool = True) -> list[int]:
        """The root (unless excluded), adopted orphans and all their descendants. TreeUnreadable,
        with every process found, when part of the tree could not be listed."""
        problem: Optional[TreeUnreadable] = None
        try:
            roots = self.adopted()
        except TreeUnreadable as exc:
            problem, roots = exc, exc.found
        if include_root and self.root:
            roots.insert(0, self.root)
        try:
            found = descendants(roots)
        except TreeUnreadable as exc:
            problem, found = problem or exc, exc.found
        if problem is not None:
            raise TreeUnreadable(str(problem), found)
        return found

    def count(self) -> int:
        return len(self.members())

    def _listed(self, include_root: bool) -> list[int]:
        """members(), except that a tree that cannot be listed is noted in ``problems`` (once) and
        what was found is returned: for the paths that kill, which must kill all they can."""
        try:
            return self.members(include_root)
        except TreeUnreadable as exc:
            text = f"could not check that every process of the sandbox has ended: {exc}"
            if text not in self.problems:
                self.problems.append(text)
            self._unread = True
            return exc.found

    def kill_all(self, rounds: int = 50) -> int:
        """SIGKILL every member until none is left; reaps the ones that are our children.

        Call after the root has been reaped (see ``reap_root``): from then on every survivor is
        an adopted orphan or a descendant of one. If /proc cannot be read, everything that could
        be listed is killed, the listing is retried (the cause, e.g. EMFILE, may pass), and
        ``problems`` says so if it never succeeded.
        """
        killed = 0
        for attempt in range(rounds):
            self._unread = False
            members = [p for p in self._listed(include_root=not self.root_reaped) if p != os.getpid()]
            if not members and not self._unread:
                self.problems.clear()  # listed in full at last: nothing is left
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
            if self._unread:
                time.sleep(min(attempt + 1, 10) / 1000)
        else:
            if not self._unread:
                self.problems.append(f"processes of the sandbox survived {rounds} rounds of SIGKILL")
        return killed

    def kill_quickly(self) -> None:
        """End the tree without waiting for the root's exit when nothing else is left.

        Used once the root has delivered its result: tearing down a forked pytest's address
        space takes about as long as the fork, and nobody needs to wait for it. The root is
        SIGKILLed (it was exiting anyway) and reaped later; if any other process of the tree
        exists, or the tree cannot be listed, fall back to the thorough loop.
        """
        self._unread = False
        members = self._listed(include_root=not self.root_reaped)
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._unread or any(pid != self.root for pid in members):
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
        try:
            mine = set(_children_of(os.getpid())) - self._children_before
        except TreeUnreadable:  # noted by kill_all already; the next round reaps them
            return
        for pid in pids:
            if pid in mine and pid != self.root:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
