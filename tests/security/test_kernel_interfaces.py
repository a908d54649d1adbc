"""Syscall entry points that bypass the notified syscalls: io_uring, the 32-bit ``int 0x80`` entry
(``socketcall``) and x32 numbers. io_uring_setup fails with EPERM; the other two kill the process (SIGSYS)
before the call runs. Controls: the same code, unconfined, connects to the outside listener."""

from __future__ import annotations

import ctypes
import errno
import mmap
import signal
import socket
import struct

import pytest
from security_helpers import (
    LOCAL,
    SYS_IO_URING_ENTER,
    SYS_IO_URING_SETUP,
    Outside,
    int80_socketcall_connect,
    no_core_dumps,
    raw_syscall,
    run_unconfined,
    sockaddr_in,
    x32_connect,
)

from pytest_sandlock.engine.errors import SandboxCrash
from pytest_sandlock.engine.policy import Policy
from pytest_sandlock.engine.sandbox import Sandbox

IORING_OP_CONNECT = 16
IORING_OFF_SQES = 0x10000000
IORING_ENTER_GETEVENTS = 1


def io_uring_connect(host: str, port: int) -> int:
    """A TCP connect performed by io_uring (no connect() syscall): the CQE result, or -errno of setup."""
    params = ctypes.create_string_buffer(120)
    ring = raw_syscall(SYS_IO_URING_SETUP, 4, ctypes.addressof(params))
    if ring < 0:
        return ring
    sq_entries, cq_entries = struct.unpack_from("=II", params.raw, 0)
    sq_head, sq_tail, sq_mask, _, _, _, sq_array = struct.unpack_from("=7I", params.raw, 40)
    cq_head, cq_tail, cq_mask, _, _, cq_cqes = struct.unpack_from("=6I", params.raw, 80)
    size = max(sq_array + sq_entries * 4, cq_cqes + cq_entries * 16)
    rings = mmap.mmap(ring, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
    sqes = mmap.mmap(
        ring, sq_entries * 64, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=IORING_OFF_SQES
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    addr = ctypes.create_string_buffer(sockaddr_in(host, port), 16)
    sqe = struct.pack("=BBHiQQII", IORING_OP_CONNECT, 0, 0, sock.fileno(), 16, ctypes.addressof(addr), 0, 0)
    sqes[0:64] = sqe.ljust(64, b"\0")
    tail = struct.unpack_from("=I", rings, sq_tail)[0]
    struct.pack_into("=I", rings, sq_array + (tail & sq_mask) * 4, 0)
    struct.pack_into("=I", rings, sq_tail, tail + 1)
    submitted = raw_syscall(SYS_IO_URING_ENTER, ring, 1, 1, IORING_ENTER_GETEVENTS, 0, 0)
    if submitted < 0:
        return submitted
    head = struct.unpack_from("=I", rings, cq_head)[0]
    result = struct.unpack_from("=i", rings, cq_cqes + (head & cq_mask) * 16 + 8)[0]
    sock.close()
    return result


@pytest.mark.sandbox(net=LOCAL)
def test_io_uring_setup_is_denied(outside: Outside) -> None:
    assert io_uring_connect(*outside.tcp_addr) == -errno.EPERM


def test_io_uring_control(outside: Outside) -> None:
    result = run_unconfined(io_uring_connect, *outside.tcp_addr)
    if result == -errno.EPERM or result == -errno.ENOSYS:
        pytest.skip(f"io_uring is disabled on this machine ({result})")
    assert result == 0
    assert outside.drain() == [("tcp", b"")]


def _int80_attack(host: str, port: int) -> tuple[int, int]:
    no_core_dumps()
    return int80_socketcall_connect(host, port)


def _x32_attack(host: str, port: int) -> tuple[int, int]:
    no_core_dumps()
    return x32_connect(host, port)


def test_int80_socketcall_kills_the_process(outside: Outside) -> None:
    with pytest.raises(SandboxCrash) as info:
        Sandbox(Policy(net=LOCAL)).call(_int80_attack, *outside.tcp_addr)
    assert "SIGSYS" in info.value.reason


def test_int80_socketcall_control(outside: Outside) -> None:
    fd, connected = run_unconfined(_int80_attack, *outside.tcp_addr)
    if fd == -errno.ENOSYS:
        pytest.skip("this kernel has no 32-bit syscall entry (IA32_EMULATION off)")
    assert fd >= 0 and connected == 0
    assert outside.drain() == [("tcp", b"")]


def test_x32_syscalls_kill_the_process(outside: Outside) -> None:
    with pytest.raises(SandboxCrash) as info:
        Sandbox(Policy(net=LOCAL)).call(_x32_attack, *outside.tcp_addr)
    assert "SIGSYS" in info.value.reason


def test_x32_control(outside: Outside) -> None:
    fd, connected = run_unconfined(_x32_attack, *outside.tcp_addr)
    if fd == -errno.ENOSYS:
        # The kernel has no x32 ABI: the unconfined call fails too; what matters is that the sandbox
        # kills on the x32 bit before the kernel even looks the number up (test above).
        pytest.skip("this kernel has no x32 ABI (CONFIG_X86_X32_ABI off)")
    assert fd >= 0 and connected == 0
    assert outside.drain() == [("tcp", b"")]


def test_int80_crash_is_reported_on_a_sandboxed_test(pytester: pytest.Pytester) -> None:
    """Through the plugin: the test fails with the signal, it is not lost."""
    pytester.makepyfile(
        f"""
        import sys, pytest
        sys.path.insert(0, {str(pytester.path.parent)!r})
        sys.path.insert(0, {__file__.rsplit("/", 1)[0]!r})
        from security_helpers import int80_socketcall_connect, no_core_dumps

        @pytest.mark.sandbox(net=["127.0.0.1"])
        def test_int80():
            no_core_dumps()
            int80_socketcall_connect("127.0.0.2", 9)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*did not finish*SIGSYS*"])


_ = signal
