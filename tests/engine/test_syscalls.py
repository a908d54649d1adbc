"""syscalls: the raw syscall() keeps the GIL and reads errno from libc itself; a failure must still
carry the kernel's exact errno."""

from __future__ import annotations

import errno
import os

import pytest

from pytest_sandlock.engine import syscalls


def test_failures_carry_the_exact_errno() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)  # a descriptor number that is certainly closed now
    with pytest.raises(OSError) as bad_fd:
        syscalls.pidfd_getfd(r, 0)
    assert bad_fd.value.errno == errno.EBADF
    with pytest.raises(OSError) as bad_option:
        syscalls.prctl(0x7FFF)
    assert bad_option.value.errno == errno.EINVAL
    with pytest.raises(OSError) as no_process:
        syscalls.pidfd_open(2**22 + 1)  # above pid_max's ceiling
    assert no_process.value.errno in (errno.ESRCH, errno.EINVAL)


def test_success_returns_the_result() -> None:
    pidfd = syscalls.pidfd_open(os.getpid())
    try:
        assert pidfd > 2
        assert os.readlink(f"/proc/self/fd/{pidfd}") == "anon_inode:[pidfd]"
    finally:
        os.close(pidfd)


def test_getsockopt_answers_stay_with_their_thread() -> None:
    """The reused getsockopt buffers are per thread: two supervisors in two threads must each read
    their own socket's answer."""
    import socket
    import threading

    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wrong: list[tuple[int, int]] = []

    def ask(sock: socket.socket, expected: int) -> None:
        for _ in range(20000):
            got = syscalls.getsockopt_int(sock.fileno(), socket.SOL_SOCKET, socket.SO_TYPE)
            if got != expected:
                wrong.append((expected, got))
                return

    threads = [
        threading.Thread(target=ask, args=(tcp, socket.SOCK_STREAM)),
        threading.Thread(target=ask, args=(udp, socket.SOCK_DGRAM)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tcp.close()
    udp.close()
    assert wrong == []
