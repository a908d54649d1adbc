"""What this kernel can enforce, probed once per process.

Probing never confines the caller, and normally forks nothing: a fork of a pytest process costs
about 2 ms, and the page faults after it as much again, at the start of every sandboxed session.

- The seccomp flags are tried on a throwaway thread. Without ``SECCOMP_FILTER_FLAG_TSYNC`` a filter,
  like ``no_new_privs``, belongs to the one thread that installs it and ends with that thread; the
  filter allows everything, and its listener is closed before the thread ends.
- Whether the supervisor may read a child's memory (``process_vm_readv``, which Yama's ptrace_scope
  2 or 3 refuses) is asked of a child started with ``posix_spawn``, a vfork and exec that copies
  none of this process's pages.

Anything those cannot settle, and any refusal, is probed again the old way, in a forked child that
installs the filter and has its memory read: a refusal is never reported from the quick probe alone.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import platform
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from . import landlock
from .notify import IOCTL_NOTIF_SET_FLAGS, USER_NOTIF_FD_SYNC_WAKE_UP
from .seccomp_filter import FLAG_NEW_LISTENER, FLAG_WAIT_KILLABLE_RECV, SECCOMP_SET_MODE_FILTER, allow_all
from .syscalls import (
    PIDFD_THREAD,
    PR_GET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    pidfd_getfd,
    pidfd_open,
    prctl,
    read_memory_spans,
    read_memory_vm,
    seccomp,
)


@dataclass
class Capabilities:
    arch: str
    landlock_abi: int
    landlock: dict[str, Any]
    seccomp_listener: bool
    wait_killable_recv: bool
    sync_wakeup: bool
    pidfd_getfd: bool
    pidfd_thread: bool
    child_memory: bool = True  # process_vm_readv on a child works (Yama may refuse it)
    problems: list[str] = field(default_factory=list)  # sandboxing cannot work
    warnings: list[str] = field(default_factory=list)  # works, with less enforced (strict: an error)
    notes: list[str] = field(default_factory=list)  # works as well, only slower

    @property
    def usable(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if not self.usable:
            return "sandlock: UNAVAILABLE (" + "; ".join(self.problems) + ")"
        parts = [f"Landlock ABI {self.landlock_abi}" if self.landlock_abi else "no Landlock"]
        parts.append("seccomp listener" + (" (sync wake-up)" if self.sync_wakeup else ""))
        if self.landlock.get("net"):
            parts.append("TCP port rules")
        if self.landlock.get("scopes"):
            parts.append("scoped signals/abstract sockets")
        text = "sandlock: " + ", ".join(parts)
        if self.warnings:
            text += " | not enforced here: " + "; ".join(self.warnings)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "landlock_abi": self.landlock_abi,
            "landlock": self.landlock,
            "seccomp_listener": self.seccomp_listener,
            "wait_killable_recv": self.wait_killable_recv,
            "sync_wakeup": self.sync_wakeup,
            "pidfd_getfd": self.pidfd_getfd,
            "pidfd_thread": self.pidfd_thread,
            "child_memory": self.child_memory,
            "usable": self.usable,
            "problems": self.problems,
            "warnings": self.warnings,
            "notes": self.notes,
        }


_MARKER = b"pytest-sandlock memory probe"


_SECCOMP_KEYS = ("listener", "killable", "sync", "nested")


def _try_listener_flags(result: dict[str, bool]) -> None:
    """Install an allow-all filter with a listener, with each set of flags until one works (in the
    thread or child that calls this: the filter confines it)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prog = allow_all()
    for flags, key in (
        (FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV, "killable"),
        (FLAG_NEW_LISTENER, ""),
    ):
        try:
            fd = seccomp(SECCOMP_SET_MODE_FILTER, flags, prog.fprog_address)
        except OSError as exc:
            # EBUSY: a filter of this process's chain has a listener already (the kernel
            # allows one per chain), i.e. this pytest runs inside a sandbox.
            result["nested"] = result["nested"] or exc.errno == errno.EBUSY
            continue
        result["listener"] = True
        if key:
            result[key] = True
        try:
            fcntl.ioctl(fd, IOCTL_NOTIF_SET_FLAGS, USER_NOTIF_FD_SYNC_WAKE_UP)
            result["sync"] = True
        except OSError:
            pass
        os.close(fd)
        break


def _listener_flags_on_a_thread() -> Optional[dict[str, bool]]:
    """The seccomp flags, tried on a throwaway thread (see the module docstring); None if the thread
    could not run or the probe failed for another reason than the kernel's answer."""
    result = dict.fromkeys(_SECCOMP_KEYS, False)
    failed: list[BaseException] = []

    def probe() -> None:
        try:
            _try_listener_flags(result)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, which probes by fork
            failed.append(exc)

    try:
        thread = threading.Thread(target=probe, name="pytest-sandlock-probe", daemon=True)
        thread.start()
        thread.join()
    except RuntimeError:  # no thread can be started (a thread limit)
        return None
    return None if failed else result


def _spawned_child_memory_readable() -> Optional[bool]:
    """Whether ``process_vm_readv`` may read a child of this process; None if it cannot tell.

    The child is this interpreter, started with ``posix_spawn`` and killed once asked. The access
    check comes before any page is read: EPERM is a refusal, EFAULT (an address the exec has not
    mapped yet) or data is a permission. A forked child inherits this process's dumpable flag, an
    exec'd one does not: when this process is not dumpable only a forked child can tell."""
    try:
        if prctl(PR_GET_DUMPABLE) != 1:
            return None
    except OSError:
        return None
    stdin_r, stdin_w = os.pipe()
    argv = [sys.executable, "-I", "-S", "-c", "import os; os.read(0, 1)"]
    try:
        try:
            pid = os.posix_spawn(
                sys.executable, argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, stdin_r, 0)]
            )
        except OSError:
            return None
        try:
            read_memory_vm(pid, _start_stack(pid), 1)
            return True
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                return False
            return True if exc.errno == errno.EFAULT else None
        finally:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
    finally:
        os.close(stdin_r)
        os.close(stdin_w)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # reaped by someone else's SIGCHLD handler (waitpid(-1) in a plugin): gone either way


def _start_stack(pid: int) -> int:
    """A child's stack address (``/proc/<pid>/stat`` field 28; 0 while an exec is still setting
    it up, or if /proc hides it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        return int(data[data.rindex(b")") + 2 :].split()[25])
    except (OSError, ValueError, IndexError):
        return 0


def _probe_seccomp() -> dict[str, bool]:
    """The seccomp flags and child-memory access, without a fork when everything works."""
    flags = _listener_flags_on_a_thread()
    complete = flags is not None and flags["listener"] and flags["killable"] and flags["sync"]
    if flags is not None and complete and _spawned_child_memory_readable():
        return {**flags, "memory": True}
    return _probe_in_a_forked_child()  # something missing or unsettled: the full probe decides


def _probe_in_a_forked_child() -> dict[str, bool]:
    """Install an allow-all filter with a listener in a forked child and report what worked; then
    read the child's memory as the supervisor will (Yama's ptrace_scope 2 or 3 forbids it)."""
    read_fd, write_fd = os.pipe()
    done_r, done_w = os.pipe()
    marker = ctypes.create_string_buffer(_MARKER)
    pid = os.fork()
    if pid == 0:
        result = dict.fromkeys(_SECCOMP_KEYS, False)
        try:
            os.close(read_fd)
            os.close(done_w)
            _try_listener_flags(result)
        finally:
            os.write(write_fd, json.dumps(result).encode())
            os.read(done_r, 1)  # alive (and unchanged) while the parent reads its memory
            os._exit(0)
    os.close(write_fd)
    os.close(done_r)
    memory = False
    try:
        data = os.read(read_fd, 4096)
        try:
            memory = read_memory_spans(pid, [(ctypes.addressof(marker), len(_MARKER))]) == [_MARKER]
        except OSError:
            memory = False
    finally:
        os.close(read_fd)
        os.close(done_w)
        _reap(pid)
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = {}
    return {**{k: bool(parsed.get(k)) for k in _SECCOMP_KEYS}, "memory": memory}


def _ptrace_scope() -> str:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown (no Yama)"


def _probe_pidfd() -> tuple[bool, bool]:
    getfd = thread = False
    try:
        own = pidfd_open(os.getpid(), 0)
        try:
            os.close(pidfd_getfd(own, 0 if _fd_open(0) else own))
            getfd = True
        except OSError:
            pass
        finally:
            os.close(own)
    except OSError:
        pass
    try:
        os.close(pidfd_open(_gettid(), PIDFD_THREAD))
        thread = True
    except OSError:
        pass
    return getfd, thread


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _gettid() -> int:
    get = getattr(__import__("threading"), "get_native_id", None)
    return int(get()) if get else os.getpid()


_cached: Optional[Capabilities] = None


def probe(refresh: bool = False) -> Capabilities:
    global _cached
    if _cached is not None and not refresh:
        return _cached
    arch = platform.machine()
    info = landlock.describe()
    abi = int(info.get("abi", 0))
    sec = (
        _probe_seccomp()
        if arch == "x86_64"
        else {"listener": False, "killable": False, "sync": False, "memory": False, "nested": False}
    )
    getfd, thread = _probe_pidfd()
    caps = Capabilities(
        arch=arch,
        landlock_abi=abi,
        landlock=dict(info),
        seccomp_listener=sec["listener"],
        wait_killable_recv=sec["killable"],
        sync_wakeup=sec["sync"],
        pidfd_getfd=getfd,
        pidfd_thread=thread,
        child_memory=sec["memory"],
    )
    if arch != "x86_64":
        caps.problems.append(f"architecture {arch} is not supported (x86-64 only)")
    if not caps.seccomp_listener:
        caps.problems.append(
            "this process already runs under a seccomp notification listener (inside a sandbox?): "
            "the kernel allows one per filter chain, so it cannot sandbox again"
            if sec["nested"]
            else "seccomp user notification is unavailable (needs Linux 5.0+)"
        )
    if not getfd:
        caps.problems.append("pidfd_getfd is unavailable (needs Linux 5.6+)")
    if caps.seccomp_listener and not sec["memory"]:
        caps.problems.append(
            "cannot read a child process's memory (process_vm_readv refused: Yama ptrace_scope "
            f"is {_ptrace_scope()}); the supervisor must read syscall arguments"
        )
    if abi == 0:
        caps.warnings.append("Landlock is unavailable: no filesystem ceilings")
    elif abi < 4:
        caps.warnings.append(f"Landlock ABI {abi} < 4: no TCP port rules (the supervisor still decides)")
    if 0 < abi < 6:
        caps.warnings.append(f"Landlock ABI {abi} < 6: signals and abstract unix sockets are not scoped")
    if caps.seccomp_listener and not caps.wait_killable_recv:
        caps.warnings.append(
            "no SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19+): signals can fake a connect"
        )
    if caps.seccomp_listener and not caps.sync_wakeup:
        caps.notes.append("no synchronous wake-up (Linux 6.6+): supervision is slower")
    if not thread:
        caps.notes.append("no PIDFD_THREAD (Linux 6.9+): threads are resolved through /proc")
    _cached = caps
    return caps
