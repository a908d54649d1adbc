"""Helpers of the engine's enforcement tests: live loopback listeners and small utilities.

127.0.0.1 is "inside" (the policies under test allow it), 127.0.0.2 is "outside". Listeners live in
the pytest process and are read *after* the sandboxed call returned, so no thread is needed: a TCP
connect on loopback completes in the kernel (accept queue) and the bytes wait in the socket buffer;
a UDP datagram waits in the receive queue. A listener that "received nothing" has an empty accept
queue / receive queue once the confined tree is gone.

No traffic ever leaves loopback.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Optional

INSIDE = "127.0.0.1"
OUTSIDE = "127.0.0.2"


class TcpListener:
    """A listening TCP socket; :meth:`received` accepts what is queued and reads each peer to EOF."""

    def __init__(self, host: str, family: int = socket.AF_INET, backlog: int = 16) -> None:
        self.host = host
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(backlog)
        self.port: int = self.sock.getsockname()[1]
        self._seen: list[bytes] = []

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def rule(self) -> str:
        """The exact-port net rule for this listener."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def received(self) -> list[bytes]:
        """Every connection so far (cumulative), as the bytes its peer sent before closing."""
        self.sock.settimeout(0)
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, socket.timeout):
                break
            with conn:
                conn.settimeout(5)
                chunks = []
                while True:
                    try:
                        data = conn.recv(65536)
                    except ConnectionResetError:
                        break
                    if not data:
                        break
                    chunks.append(data)
                self._seen.append(b"".join(chunks))
        return list(self._seen)

    def close(self) -> None:
        self.sock.close()


class UdpListener:
    """A bound UDP socket; :meth:`received` drains the datagrams queued so far (cumulative)."""

    def __init__(self, host: str, family: int = socket.AF_INET) -> None:
        self.host = host
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self._seen: list[bytes] = []

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def received(self) -> list[bytes]:
        while True:
            try:
                data, _ = self.sock.recvfrom(65536)
            except BlockingIOError:
                break
            self._seen.append(data)
        return list(self._seen)

    def close(self) -> None:
        self.sock.close()


class UnixListener:
    """A listening unix stream socket at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self._tcp = TcpListener.__new__(TcpListener)
        self._tcp.sock = self.sock
        self._tcp._seen = []

    def received(self) -> list[bytes]:
        return TcpListener.received(self._tcp)

    def close(self) -> None:
        self.sock.close()


def tcp_send(host: str, port: int, payload: bytes, family: int = socket.AF_INET) -> object:
    """Connect, send, close; "ok" or the errno. Runs inside the sandbox."""
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.settimeout(10)
        s.connect((host, port))
        s.sendall(payload)
        return "ok"
    except OSError as exc:
        return exc.errno
    finally:
        s.close()


def outcomes(calls: dict[str, Callable[[], object]]) -> dict[str, object]:
    """Inside the sandbox: run each call in turn; by name, "done" or the errno it raised."""
    out: dict[str, object] = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = "done"
        except OSError as exc:
            out[name] = exc.errno
    return out


def errno_of(fn: object) -> object:
    """Call ``fn()``; its result, or the errno of the OSError it raised."""
    try:
        return fn()  # type: ignore[operator]
    except OSError as exc:
        return exc.errno


def only(events: list, **fields: object) -> object:
    """The single event whose attributes equal ``fields``; fails listing the events otherwise."""
    found = [e for e in events if all(getattr(e, k) == v for k, v in fields.items())]
    assert len(found) == 1, f"expected one event with {fields}, got {found} among {events}"
    return found[0]


def pid_alive(pid: int) -> bool:
    """True if /proc/<pid> exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != b"Z"


def connect_errno(host: str, port: int, family: int = socket.AF_INET) -> Optional[int]:
    """None if a TCP connect succeeds, else its errno (no payload)."""
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.connect((host, port))
        return None
    except OSError as exc:
        return exc.errno
    finally:
        s.close()
