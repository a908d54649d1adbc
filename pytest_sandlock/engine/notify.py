"""The seccomp user-notification listener: receive, validate and answer notifications.

The ioctls go through ``fcntl.ioctl`` on preallocated buffers: a C call per ioctl and no ctypes
marshalling, which matters at tens of microseconds per round trip.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from typing import NamedTuple

# _IOWR('!', 0, struct seccomp_notif) etc., computed for x86-64.
IOCTL_NOTIF_RECV = 0xC0502100
IOCTL_NOTIF_SEND = 0xC0182101
IOCTL_NOTIF_ID_VALID = 0x40082102
IOCTL_NOTIF_SET_FLAGS = 0x40082104
USER_NOTIF_FD_SYNC_WAKE_UP = 1
USER_NOTIF_FLAG_CONTINUE = 1

_NOTIF = struct.Struct("=QIIiIQ6Q")  # id, pid, flags, nr, arch, ip, args[6]
_RESP = struct.Struct("=QqiI")  # id, val, error, flags
_ID = struct.Struct("=Q")
_ZERO = bytes(_NOTIF.size)


class Notification(NamedTuple):
    """One notification (a NamedTuple: built per syscall, a frozen dataclass costs 1 us more)."""

    id: int
    pid: int  # a thread id
    nr: int
    args: tuple[int, ...]


class Listener:
    """Owns the listener fd in the supervising process."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray(_NOTIF.size)
        self.sync_wakeup = self._try_sync_wakeup()
        self._sync_on = self.sync_wakeup

    def set_sync(self, on: bool) -> None:
        """Switch synchronous wake-ups on or off (one ioctl, only when the state changes).

        They halve a network round trip, whose caller resumes at once on the supervisor's CPU.
        For an ``execve`` they hurt: the new program lands on that CPU and the launching process,
        woken by the exec, queues behind it (seen with ``perf sched``) while the other CPU idles.
        So the supervisor turns them off when it continues an exec and back on for network calls.
        """
        if self._sync_on == on or not self.sync_wakeup:
            return
        try:
            fcntl.ioctl(self.fd, IOCTL_NOTIF_SET_FLAGS, USER_NOTIF_FD_SYNC_WAKE_UP if on else 0)
            self._sync_on = on
        except OSError:
            pass

    def _try_sync_wakeup(self) -> bool:
        # Wakes the supervisor on the CPU the child sleeps on: 35-48 us -> 8-9 us per round trip (6.6+).
        try:
            fcntl.ioctl(self.fd, IOCTL_NOTIF_SET_FLAGS, USER_NOTIF_FD_SYNC_WAKE_UP)
            return True
        except OSError:
            return False

    def receive(self) -> Notification | None:
        """One notification, or None if it vanished (its thread was killed) before we got it."""
        buf = self._buf
        buf[:] = _ZERO  # the kernel rejects a dirty buffer with EINVAL
        try:
            fcntl.ioctl(self.fd, IOCTL_NOTIF_RECV, buf, True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                # ENOENT is both "this notification died" and, with POLLHUP, "no users left";
                # the loop tells the two apart with poll, never by retrying here (that spins).
                return None
            if exc.errno in (errno.EINTR, errno.EAGAIN):
                return None
            raise
        fields = _NOTIF.unpack(buf)
        return Notification(fields[0], fields[1], fields[3], fields[6:])

    def id_valid(self, nid: int) -> bool:
        try:
            fcntl.ioctl(self.fd, IOCTL_NOTIF_ID_VALID, _ID.pack(nid))
            return True
        except OSError:
            return False

    def _send(self, nid: int, val: int, error: int, flags: int) -> bool:
        try:
            fcntl.ioctl(self.fd, IOCTL_NOTIF_SEND, _RESP.pack(nid, val, error, flags))
            return True
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # the caller died meanwhile; nothing to answer
                return False
            raise

    def reply(self, nid: int, result: int) -> bool:
        """Answer with a syscall result: ``>= 0`` is the return value, ``< 0`` is ``-errno``."""
        if result < 0:
            return self._send(nid, 0, result, 0)
        return self._send(nid, result, 0, 0)

    def fail(self, nid: int, err: int) -> bool:
        return self._send(nid, 0, -abs(err), 0)

    def continue_(self, nid: int) -> bool:
        return self._send(nid, 0, 0, USER_NOTIF_FLAG_CONTINUE)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
