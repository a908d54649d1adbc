"""Helpers of the escape tests: the "outside" listeners, an unconfined runner, raw syscalls, machine code.

127.0.0.1 is inside (the policies under test allow it); 127.0.0.2, an abstract unix socket and a unix
socket file in a fresh directory under /var/tmp are outside. The listeners live in the pytest process;
after a test they are drained without blocking: nothing may have arrived. No traffic leaves loopback.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import pickle
import shutil
import signal
import socket
import struct
import tempfile
import time
import uuid
from typing import Any, Callable

INSIDE = "127.0.0.1"
OUTSIDE = "127.0.0.2"
LOCAL = [INSIDE]

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86-64 syscall numbers
SYS_SOCKET = 41
SYS_CONNECT = 42
SYS_SENDTO = 44
SYS_SENDMSG = 46
SYS_PTRACE = 101
SYS_SECCOMP = 317
SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438
SYS_PROCESS_VM_WRITEV = 311
X32_SYSCALL_BIT = 0x40000000


def raw_syscall(nr: int, *args: int) -> int:
    """``syscall(nr, *args)`` through libc: the result, or ``-errno``."""
    result = libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    return -ctypes.get_errno() if result == -1 else int(result)


def sockaddr_in(host: str, port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + b"\0" * 8


def sockaddr_un_abstract(name: bytes) -> bytes:
    return struct.pack("=H", socket.AF_UNIX) + b"\0" + name


# ----------------------------------------------------------------------------------------------- listeners


class Outside:
    """Every outside listener, in the pytest process; :meth:`drain` says what arrived since the last drain."""

    def __init__(self) -> None:
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((OUTSIDE, 0))
        self.tcp.listen(1024)
        self.tcp_port: int = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((OUTSIDE, 0))
        self.udp_port: int = self.udp.getsockname()[1]
        self.abstract_name = b"sandlock-security-" + uuid.uuid4().hex.encode()
        self.abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.abstract.bind(b"\0" + self.abstract_name)
        self.abstract.listen(64)
        self.abstract_dgram_name = self.abstract_name + b"-dgram"
        self.abstract_dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.abstract_dgram.bind(b"\0" + self.abstract_dgram_name)
        self.dir = tempfile.mkdtemp(prefix="sandlock-outside-", dir=outside_base())
        os.chmod(self.dir, 0o755)
        self.unix_path = os.path.join(self.dir, "outside.sock")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        os.chmod(self.unix_path, 0o777)  # reachable by any uid: only the sandbox stands in the way
        self.unix.listen(1024)
        for s in self._all():
            s.setblocking(False)

    def _all(self) -> list[socket.socket]:
        return [self.tcp, self.udp, self.abstract, self.abstract_dgram, self.unix]

    @property
    def tcp_addr(self) -> tuple[str, int]:
        return (OUTSIDE, self.tcp_port)

    @property
    def udp_addr(self) -> tuple[str, int]:
        return (OUTSIDE, self.udp_port)

    def drain(self) -> list[tuple[str, bytes]]:
        """What arrived since the last drain: (listener, bytes) per connection or datagram. Never blocks
        for more than a short read of each accepted connection."""
        got: list[tuple[str, bytes]] = []
        for kind, sock in (("tcp", self.tcp), ("abstract", self.abstract), ("unix", self.unix)):
            while True:
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                with conn:
                    conn.settimeout(0.2)
                    data = b""
                    try:
                        while True:
                            chunk = conn.recv(65536)
                            if not chunk:
                                break
                            data += chunk
                    except OSError:
                        pass
                    got.append((kind, data))
        for kind, sock in (("udp", self.udp), ("abstract-dgram", self.abstract_dgram)):
            while True:
                try:
                    got.append((kind, sock.recv(65536)))
                except (BlockingIOError, InterruptedError):
                    break
        return got

    def close(self) -> None:
        for s in self._all():
            s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Inside:
    """Allowed listeners on 127.0.0.1 (TCP, UDP), drained the same way."""

    def __init__(self, tcp_port: int = 0) -> None:
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((INSIDE, tcp_port))
        self.tcp.listen(1024)
        self.tcp_port: int = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((INSIDE, 0))
        self.udp_port: int = self.udp.getsockname()[1]
        self.tcp.setblocking(False)
        self.udp.setblocking(False)

    @property
    def tcp_addr(self) -> tuple[str, int]:
        return (INSIDE, self.tcp_port)

    @property
    def udp_addr(self) -> tuple[str, int]:
        return (INSIDE, self.udp_port)

    def drain(self) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        while True:
            try:
                conn, _ = self.tcp.accept()
            except BlockingIOError:
                break
            with conn:
                conn.settimeout(0.2)
                try:
                    got.append(("tcp", conn.recv(65536)))
                except OSError:
                    got.append(("tcp", b""))
        while True:
            try:
                got.append(("udp", self.udp.recv(65536)))
            except BlockingIOError:
                break
        return got

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


def outside_base() -> str:
    """A world-writable directory outside the system temp dir (so outside every sandbox's writable set)."""
    tmp = os.path.realpath(tempfile.gettempdir())
    for base in ("/var/tmp", "/dev/shm"):
        real = os.path.realpath(base)
        if os.path.isdir(real) and os.access(real, os.W_OK) and not is_within(real, tmp):
            if base == "/dev/shm":  # always writable in a sandbox: useless as "outside"
                continue
            return real
    raise RuntimeError("no directory outside the temp dir to put the outside unix socket in")


def is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# ------------------------------------------------------------------------------------------------ runners


def run_unconfined(fn: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
    """The positive control: ``fn(*args)`` in a plain ``os.fork()`` child, no sandbox. Returns its result,
    or ``("signal", n)`` when the child was killed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                payload = pickle.dumps(("ok", fn(*args)))
            except BaseException as exc:  # noqa: BLE001
                payload = pickle.dumps(("error", repr(exc)))
            os.write(w, payload)
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + timeout
    data = b""
    # wait for the child, then read: a grandchild it left running may hold the pipe open for ever
    os.set_blocking(r, False)
    while True:
        try:
            data += os.read(r, 1 << 20)
        except BlockingIOError:
            pass
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)
    while True:
        try:
            chunk = os.read(r, 1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    os.close(r)
    if os.WIFSIGNALED(status):
        return ("signal", os.WTERMSIG(status))
    kind, value = pickle.loads(data)
    if kind != "ok":
        raise AssertionError(f"the unconfined control raised {value}")
    return value


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != b"Z"


def errno_of(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except OSError as exc:
        return exc.errno


# ----------------------------------------------------------------------------------------- machine code

# int80(eax, ebx, ecx, edx): push rbx; mov eax,edi; mov ebx,esi; xchg ecx,edx; int 0x80; pop rbx; ret
INT80_CODE = bytes.fromhex("53 89f8 89f3 87ca cd80 5b c3")
# syscall64(nr, a, b, c): mov rax,rdi; mov rdi,rsi; mov rsi,rdx; mov rdx,rcx; syscall; ret
SYSCALL_CODE = bytes.fromhex("4889f8 4889f7 4889d6 4889ca 0f05 c3")
MAP_32BIT = 0x40

_keep: list[Any] = []  # mappings must outlive the function pointers made from them


def machine_code(code: bytes, restype: Any = ctypes.c_long) -> Callable[..., int]:
    """A ctypes function running ``code`` from an anonymous executable page."""
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    fn = ctypes.CFUNCTYPE(restype, ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long)(address)
    _keep.append(page)
    return fn


def low_memory(size: int = mmap.PAGESIZE) -> tuple[int, Any]:
    """(address, keep-alive) of a page below 4 GiB: 32-bit syscalls only see the low half of pointers."""
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    )
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_32BIT
    address = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, flags, -1, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap(MAP_32BIT) failed")
    return int(address), None


I386_SOCKETCALL = 102
I386_SOCKET = 359
I386_CONNECT = 362
SOCKETCALL_SOCKET = 1
SOCKETCALL_CONNECT = 3


def int80_socketcall_connect(host: str, port: int) -> tuple[int, int]:
    """socket() + connect() through the 32-bit entry's ``socketcall``; (socket result, connect result)."""
    int80 = machine_code(INT80_CODE, ctypes.c_int)
    base, _ = low_memory()
    args = (ctypes.c_uint32 * 3).from_address(base)
    args[0], args[1], args[2] = socket.AF_INET, socket.SOCK_STREAM, 0
    fd = int80(I386_SOCKETCALL, SOCKETCALL_SOCKET, base, 0)
    if fd < 0:
        return fd, 0
    addr = sockaddr_in(host, port)
    ctypes.memmove(base + 64, addr, len(addr))
    args[0], args[1], args[2] = fd, base + 64, len(addr)
    return fd, int80(I386_SOCKETCALL, SOCKETCALL_CONNECT, base, 0)


def x32_connect(host: str, port: int) -> tuple[int, int]:
    """socket() + connect() with x32 syscall numbers (the x32 bit set on the x86-64 numbers)."""
    call = machine_code(SYSCALL_CODE)
    fd = call(X32_SYSCALL_BIT | SYS_SOCKET, socket.AF_INET, socket.SOCK_STREAM, 0)
    if fd < 0:
        return fd, 0
    addr = ctypes.create_string_buffer(sockaddr_in(host, port))
    return fd, call(X32_SYSCALL_BIT | SYS_CONNECT, fd, ctypes.addressof(addr), 16)


def no_core_dumps() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


EPERM, EACCES = errno.EPERM, errno.EACCES
