"""Attacks on the pytest process (which is also the supervisor): signals, ptrace, /proc/<pid>/mem,
process_vm_writev, pidfd_getfd, and a test that installs its own seccomp listener.

The pytest process keeps a marker buffer and counts signals it receives; the sandboxed test attacks
``os.getppid()`` (the pytest process); afterwards, in the pytest process, the marker is intact and no
signal arrived. The controls run the same attacks from a plain fork child and do change the marker."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import time
from collections.abc import Iterator

import pytest
from security_helpers import (
    LOCAL,
    SYS_PIDFD_GETFD,
    SYS_PIDFD_OPEN,
    SYS_PROCESS_VM_WRITEV,
    SYS_PTRACE,
    SYS_SECCOMP,
    raw_syscall,
    run_unconfined,
)

from pytest_sandlock.engine.policy import Policy
from pytest_sandlock.engine.sandbox import Sandbox

MARKER = b"untouched-by-the-sandbox"
PR_SET_PTRACER = 0x59616D61
PTRACE_SEIZE = 0x4206


class Target:
    """State in the pytest process: a marker buffer (same address in a fork child) and signal counts."""

    def __init__(self) -> None:
        self.buffer = ctypes.create_string_buffer(MARKER, 64)
        self.address = ctypes.addressof(self.buffer)
        self.signals: list[int] = []
        self.expect_signals = False  # only the controls signal the pytest process

    def count(self, signum: int, frame: object) -> None:
        self.signals.append(signum)


@pytest.fixture
def target() -> Iterator[Target]:
    state = Target()
    watched = (signal.SIGTERM, signal.SIGURG, signal.SIGUSR2)
    previous = {s: signal.signal(s, state.count) for s in watched}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PTRACER, ctypes.c_ulong(-1), 0, 0, 0)  # Yama: anyone may trace (no-op without it)
    try:
        yield state
    finally:
        libc.prctl(PR_SET_PTRACER, 0, 0, 0, 0)
        time.sleep(0.05)  # a signal in flight would be counted by now
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert state.expect_signals or state.signals == [], f"the pytest process was signalled: {state.signals}"
    assert state.buffer.value == MARKER or state.expect_signals, "the pytest process memory was written"


def _errno_of(fn) -> object:  # type: ignore[no-untyped-def]
    try:
        fn()
        return 0
    except OSError as exc:
        return exc.errno


def signal_attacks(victim: int) -> dict[str, object]:
    return {
        "kill SIGTERM": _errno_of(lambda: os.kill(victim, signal.SIGTERM)),
        "kill SIGURG": _errno_of(lambda: os.kill(victim, signal.SIGURG)),
        "pidfd_send_signal": _errno_of(
            lambda: signal.pidfd_send_signal(os.pidfd_open(victim), signal.SIGUSR2)
        ),
        "tgkill": -raw_syscall(234, victim, victim, signal.SIGURG),  # tgkill(tgid, tid, sig)
    }


def memory_attacks(victim: int, address: int) -> dict[str, object]:
    payload = b"WRITTEN-BY-THE-TEST-CODE"
    out: dict[str, object] = {}
    src = ctypes.create_string_buffer(payload, len(payload))
    local = (ctypes.c_void_p * 2)(ctypes.addressof(src), len(payload))
    remote = (ctypes.c_void_p * 2)(address, len(payload))
    out["process_vm_writev"] = raw_syscall(
        SYS_PROCESS_VM_WRITEV, victim, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0
    )
    try:
        fd = os.open(f"/proc/{victim}/mem", os.O_RDWR)
        try:
            out["/proc/pid/mem"] = os.pwrite(fd, payload, address)
        finally:
            os.close(fd)
    except OSError as exc:
        out["/proc/pid/mem"] = -exc.errno
    # PTRACE_SEIZE, not ATTACH: an attach that worked (the control) would stop the pytest process
    out["ptrace seize"] = raw_syscall(SYS_PTRACE, PTRACE_SEIZE, victim, 0, 0)
    pidfd = raw_syscall(SYS_PIDFD_OPEN, victim, 0)
    out["pidfd_getfd"] = raw_syscall(SYS_PIDFD_GETFD, pidfd, 0, 0) if pidfd >= 0 else pidfd
    return out


@pytest.mark.sandbox(net=LOCAL)
def test_signals_to_the_pytest_process_are_refused(target: Target) -> None:
    pytest_pid = os.getppid()
    assert signal_attacks(pytest_pid) == {
        "kill SIGTERM": errno.EPERM,
        "kill SIGURG": errno.EPERM,
        "pidfd_send_signal": errno.EPERM,
        "tgkill": errno.EPERM,
    }
    # the process group includes pytest: the call reaches only this process (whose handler counts)
    os.kill(0, signal.SIGURG)


def test_pytest_process_received_no_signal_from_the_sandbox(target: Target) -> None:
    # runs the sandboxed attack above in-process through the engine, then looks at the counts
    Sandbox(Policy(net=LOCAL)).call(signal_attacks, os.getpid())
    time.sleep(0.05)
    assert target.signals == []


def test_signals_control(target: Target) -> None:
    target.expect_signals = True
    result = run_unconfined(signal_attacks, os.getpid())
    assert result == {"kill SIGTERM": 0, "kill SIGURG": 0, "pidfd_send_signal": 0, "tgkill": 0}
    deadline = time.monotonic() + 2
    while len(set(target.signals)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(target.signals) == {signal.SIGTERM, signal.SIGURG, signal.SIGUSR2}  # two SIGURGs may merge


@pytest.mark.sandbox(net=LOCAL)
def test_memory_and_ptrace_attacks_on_the_pytest_process_fail(target: Target) -> None:
    result = memory_attacks(os.getppid(), target.address)
    assert result == {
        "process_vm_writev": -errno.EPERM,  # seccomp
        "/proc/pid/mem": -errno.EACCES,  # Landlock: /proc is not writable
        "ptrace seize": -errno.EPERM,  # seccomp
        "pidfd_getfd": -errno.EPERM,  # Landlock: no ptrace access outside the domain
    }


def test_pytest_process_memory_untouched_by_the_sandbox(target: Target) -> None:
    result = Sandbox(Policy(net=LOCAL)).call(memory_attacks, os.getpid(), target.address)
    assert all(value < 0 for value in result.value.values()), result.value
    assert target.buffer.value == MARKER


def test_memory_attacks_control(target: Target) -> None:
    target.expect_signals = True
    result = run_unconfined(memory_attacks, os.getpid(), target.address)
    if result["process_vm_writev"] == -errno.EPERM:
        pytest.skip("this user may not write another process's memory here (ptrace restrictions)")
    assert result["process_vm_writev"] == len(b"WRITTEN-BY-THE-TEST-CODE")
    assert result["/proc/pid/mem"] == len(b"WRITTEN-BY-THE-TEST-CODE")
    assert result["ptrace seize"] == 0 and result["pidfd_getfd"] >= 0
    assert target.buffer.value == b"WRITTEN-BY-THE-TEST-CODE"


# ------------------------------------------------------------------------- a second seccomp listener

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3


def install_own_listener() -> tuple[int, float]:
    """Install an allow-all filter asking for a listener: (result or -errno, seconds it took)."""
    allow = ctypes.c_uint64(0x06 | 0x7FFF0000 << 32)  # BPF_RET|BPF_K SECCOMP_RET_ALLOW
    fprog = ctypes.create_string_buffer(16)  # struct sock_fprog {u16 len; filter *}
    ctypes.memmove(fprog, ctypes.byref(ctypes.c_uint16(1)), 2)
    ctypes.memmove(ctypes.addressof(fprog) + 8, ctypes.byref(ctypes.c_uint64(ctypes.addressof(allow))), 8)
    ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)  # no_new_privs (already set in the sandbox)
    started = time.monotonic()
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER
    result = raw_syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, ctypes.addressof(fprog))
    return result, time.monotonic() - started


@pytest.mark.sandbox(net=LOCAL)
def test_own_seccomp_listener_fails_fast_with_a_reason(sandlock_policy) -> None:  # type: ignore[no-untyped-def]
    result, took = install_own_listener()
    assert result == -errno.EBUSY
    assert took < 1.0
    event = [e for e in sandlock_policy.events if e.syscall == "seccomp"]
    # The kernel itself refuses a second listener in a chain: EBUSY is its answer, not a denial.
    assert len(event) == 1 and not event[0].denied and event[0].errno == errno.EBUSY
    assert "second seccomp notification listener" in event[0].reason


def test_own_seccomp_listener_control() -> None:
    result, _ = run_unconfined(install_own_listener)
    assert result >= 0  # a listener fd: outside the sandbox the same code works
