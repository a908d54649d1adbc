"""Thin ctypes wrappers for the Linux syscalls the standard library does not expose.

Only what the engine needs: pidfd_getfd, process_vm_readv, prctl, seccomp, and the socket calls the
supervisor performs on a child's behalf with the exact bytes it copied and checked (going through the
``socket`` module would re-encode addresses and need a socket object per call).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Optional

# The symbols already loaded into the interpreter (libc among them): find_library would spawn ldconfig.
_libc = ctypes.CDLL(None, use_errno=True)

# x86-64 syscall numbers (the engine only supports x86-64, see capabilities.py).
NR_PRCTL = 157
NR_SECCOMP = 317
NR_PIDFD_OPEN = 434
NR_PIDFD_GETFD = 438

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_GET_DUMPABLE = 3
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

PIDFD_THREAD = os.O_EXCL  # pidfd_open(tid, PIDFD_THREAD): a pidfd for a thread, kernel 6.9+


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_process_vm_readv = _libc.process_vm_readv
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_readv.argtypes = [
    ctypes.c_int,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.c_ulong,
]

_connect = _libc.connect
_connect.restype = ctypes.c_int
_connect.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_bind = _libc.bind
_bind.restype = ctypes.c_int
_bind.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_sendto = _libc.sendto
_sendto.restype = ctypes.c_ssize_t
_sendto.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint32,
]
_getsockopt = _libc.getsockopt
_getsockopt.restype = ctypes.c_int
_getsockopt.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint32),
]


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _neg_errno(result: int) -> int:
    """Return ``result`` or ``-errno``: the shape a seccomp notification answer wants."""
    if result < 0:
        return -ctypes.get_errno()
    return result


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0) -> int:
    # Through the same prototyped syscall() as the rest of the child's confinement: a second
    # ctypes function would touch (and so copy) more pages in a just-forked child.
    return _check_raw(syscall6(NR_PRCTL, option, arg2, arg3, arg4, 0))


def pidfd_open(pid: int, flags: int = 0) -> int:
    return raw_syscall(NR_PIDFD_OPEN, pid, flags)


# syscall(2) with a fixed prototype (number + five longs): no c_long objects built per call, which
# matters in a just-forked child where every new object is a copy-on-write page fault. (glibc's
# syscall() only moves registers, so the fixed prototype is safe for the variadic function.)
# Every call made through it returns at once (prctl, capget/capset, seccomp, Landlock, pidfd_open,
# pidfd_getfd), so it keeps the GIL (PyDLL: no release and re-acquire) and skips ctypes' errno
# bookkeeping (use_errno swaps errno with a thread-local copy around every call): errno is read
# from libc directly, only after a failure, with nothing between the call and the read that sets it.
# In the freshly forked child that confines itself, this is 15 us and 7 copy-on-write faults less.
_L = ctypes.c_long
_pylibc = ctypes.PyDLL(None)
# Five arguments after the number: prctl() checks that the ones it does not use are zero.
syscall6 = ctypes.PYFUNCTYPE(_L, _L, _L, _L, _L, _L, _L)(("syscall", _pylibc))
_errno_location = _pylibc.__errno_location
_errno_location.restype = ctypes.POINTER(ctypes.c_int)
_errno_location.argtypes = []


def last_errno() -> int:
    """errno of the last failed call made through ``syscall6``."""
    return int(_errno_location()[0])


def _check_raw(result: int) -> int:
    if result < 0:
        err = last_errno()
        raise OSError(err, os.strerror(err))
    return result


def raw_syscall(number: int, a: int = 0, b: int = 0, c: int = 0, d: int = 0) -> int:
    """A system call with integer or address arguments that returns at once; OSError on failure."""
    return _check_raw(syscall6(number, a, b, c, d, 0))


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """Duplicate ``targetfd`` of the process behind ``pidfd`` into this process (close-on-exec)."""
    return _check_raw(syscall6(NR_PIDFD_GETFD, pidfd, targetfd, 0, 0, 0))


def seccomp(operation: int, flags: int, prog: ctypes.c_void_p | int | None) -> int:
    address = prog if isinstance(prog, int) else (prog.value or 0 if prog is not None else 0)
    return raw_syscall(NR_SECCOMP, operation, flags, address)


# /proc/<tid>/mem descriptors, kept open: one pread beats a ctypes process_vm_readv by microseconds
# on every notification. An fd outliving its process (or an exec) reads nothing, never another
# process's memory: it pins the old mm, so a reused tid cannot alias it.
_mem_fds: dict[int, int] = {}
_MAX_MEM_FDS = 64


def forget_memory_fds() -> None:
    for fd in _mem_fds.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _mem_fds.clear()
    _seen_once.clear()


def forget_memory_fd(pid: int) -> None:
    """Drop the cached descriptor of one tid (it turned out to name another thread now)."""
    fd = _mem_fds.pop(pid, None)
    if fd is not None:
        os.close(fd)
    _seen_once.discard(pid)


def _mem_fd(pid: int) -> int:
    fd = _mem_fds.get(pid)
    if fd is None:
        if len(_mem_fds) >= _MAX_MEM_FDS:
            forget_memory_fds()
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        _mem_fds[pid] = fd
    return fd


_seen_once: set[int] = set()


def read_memory(pid: int, address: int, length: int) -> bytes:
    """Copy ``length`` bytes at ``address`` in process ``pid``; a short read returns what was read."""
    if pid not in _mem_fds and pid not in _seen_once:
        # A pid read once (a fresh subprocess about to exec) is not worth an open().
        if len(_seen_once) > 4096:
            _seen_once.clear()
        _seen_once.add(pid)
        return read_memory_vm(pid, address, length)
    for _attempt in range(2):
        try:
            data = os.pread(_mem_fd(pid), length, address)
        except OSError:
            data = b""
        if data:
            return data
        fd = _mem_fds.pop(pid, None)  # stale (process gone or exec'd): reopen once
        if fd is not None:
            os.close(fd)
    return read_memory_vm(pid, address, length)


def read_memory_spans(pid: int, spans: list[tuple[int, int]]) -> list[bytes]:
    """Read several (address, length) spans of process ``pid`` with one ``process_vm_readv``.

    The kernel stops at the first span it cannot read: that span comes back short (or empty) and
    every later one empty. Used for a process about to exec, whose ``/proc/<pid>/mem`` would be
    useless after this one notification.
    """
    count = min(len(spans), 1024)  # IOV_MAX
    total = sum(length for _, length in spans[:count])
    buf = ctypes.create_string_buffer(max(total, 1))
    base = ctypes.addressof(buf)
    local = (_IoVec * count)()
    remote = (_IoVec * count)()
    offset = 0
    for i, (address, length) in enumerate(spans[:count]):
        local[i].iov_base, local[i].iov_len = base + offset, length
        remote[i].iov_base, remote[i].iov_len = address, length
        offset += length
    got = _process_vm_readv(pid, local, count, remote, count, 0)
    got = max(got, 0)
    raw = buf.raw
    out: list[bytes] = []
    offset = 0
    for _, length in spans[:count]:
        take = max(0, min(length, got - offset))
        out.append(raw[offset : offset + take])
        offset += length
    out.extend(b"" for _ in spans[count:])
    return out


def read_memory_vm(pid: int, address: int, length: int) -> bytes:
    """One ``process_vm_readv``, no descriptor kept: an error raises OSError with the kernel's
    errno (EPERM when the ptrace access check refuses, before any page is read)."""
    buf = ctypes.create_string_buffer(length)
    local = _IoVec(ctypes.addressof(buf), length)
    remote = _IoVec(address, length)
    got = _check(_process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
    return buf.raw[:got]


def connect_raw(fd: int, sockaddr: bytes) -> int:
    return _neg_errno(_connect(fd, sockaddr, len(sockaddr)))


def bind_raw(fd: int, sockaddr: bytes) -> int:
    return _neg_errno(_bind(fd, sockaddr, len(sockaddr)))


def sendto_raw(fd: int, data: bytes, flags: int, sockaddr: Optional[bytes]) -> int:
    if sockaddr is None:
        return _neg_errno(_sendto(fd, data, len(data), flags, None, 0))
    return _neg_errno(_sendto(fd, data, len(data), flags, sockaddr, len(sockaddr)))


class _OptBuffers(threading.local):
    """getsockopt's value and size buffers, reused: a call per notification should not allocate
    ctypes objects. One pair per thread: two sandboxes supervised from two threads must not read
    each other's answer (the call releases the GIL)."""

    def __init__(self) -> None:
        self.value = ctypes.c_int(0)
        self.size = ctypes.c_uint32(4)
        self.value_ref = ctypes.byref(self.value)
        self.size_ref = ctypes.byref(self.size)


_opt = _OptBuffers()


def getsockopt_int(fd: int, level: int, option: int) -> int:
    opt = _opt
    opt.size.value = 4
    _check(_getsockopt(fd, level, option, opt.value_ref, opt.size_ref))
    return opt.value.value


_process_vm_writev = _libc.process_vm_writev
_process_vm_writev.restype = ctypes.c_ssize_t
_process_vm_writev.argtypes = _process_vm_readv.argtypes


def write_memory(pid: int, address: int, data: bytes) -> int:
    """Write ``data`` at ``address`` in process ``pid`` (used to fill in sendmmsg's msg_len fields)."""
    buf = ctypes.create_string_buffer(data, len(data))
    local = _IoVec(ctypes.addressof(buf), len(data))
    remote = _IoVec(address, len(data))
    return _check(_process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
