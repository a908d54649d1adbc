"""Typing into a terminal: ``TIOCSTI`` pushes bytes into a tty's input queue as if the user typed them,
so a test could type a command into the shell that started pytest, to run unconfined once pytest exits
(bubblewrap's CVE-2017-5226); ``TIOCLINUX`` pastes on a virtual console. seccomp refuses both (EPERM),
whatever the high bits of the command register say.

The attack needs a controlling terminal; pytest's may be none (CI), so each attempt makes its own: a
new pseudo-terminal, opened by a fresh session leader. The control runs the same code unconfined, and
the injected byte is read back from the terminal.
"""

from __future__ import annotations

import errno
import fcntl
import os
import termios

import pytest
from security_helpers import LOCAL, run_unconfined

TIOCLINUX = 0x541C
HIGH_BITS = 1 << 32  # the kernel takes an ioctl command as an unsigned int: these bits are dropped


def inject(command: int) -> object:
    """In a new session whose controlling terminal is a new pty: ioctl(command) to type "X" into it.
    The ioctl's errno, or what the terminal then reads (the byte typed)."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            tty = os.open(name, os.O_RDWR)  # a session leader's first tty: its controlling terminal
            attrs = termios.tcgetattr(tty)
            attrs[3] &= ~termios.ICANON  # a byte is readable without a newline
            termios.tcsetattr(tty, termios.TCSANOW, attrs)
            try:
                fcntl.ioctl(tty, command, b"X")
            except OSError as exc:
                os.write(write_end, b"E%d" % exc.errno)
                os._exit(0)
            os.write(write_end, b"R" + os.read(tty, 1))
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    answer = os.read(read_end, 16)
    os.close(read_end)
    os.close(master)
    return int(answer[1:]) if answer.startswith(b"E") else answer[1:]


def attempts() -> dict[str, object]:
    return {
        "TIOCSTI": inject(termios.TIOCSTI),
        "TIOCSTI, high bits set": inject(termios.TIOCSTI | HIGH_BITS),
        "TIOCLINUX": inject(TIOCLINUX),
    }


@pytest.mark.sandbox(net=LOCAL)
def test_a_test_cannot_type_into_a_terminal() -> None:
    assert attempts() == {
        "TIOCSTI": errno.EPERM,
        "TIOCSTI, high bits set": errno.EPERM,
        "TIOCLINUX": errno.EPERM,
    }


def test_a_test_cannot_type_into_a_terminal_control() -> None:
    result = run_unconfined(attempts)
    if result["TIOCSTI"] == errno.EIO or result["TIOCSTI"] == errno.EPERM:
        pytest.skip(f"this kernel refuses TIOCSTI to everyone here (dev.tty.legacy_tiocsti): {result}")
    # A pty is no virtual console: TIOCLINUX fails there, but not with the filter's EPERM.
    assert result == {"TIOCSTI": b"X", "TIOCSTI, high bits set": b"X", "TIOCLINUX": errno.ENOTTY}
