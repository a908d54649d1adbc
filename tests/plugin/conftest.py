"""Live loopback listeners for the plugin tests: 127.0.0.1 is "inside", 127.0.0.2 plays "outside"."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Iterator, Optional

import pytest


class Listener:
    """A TCP listener in the outer test process; records the bytes each connection sent, answers b"pong"."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            conn.settimeout(5)
            try:
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(b"pong\n")
            except OSError:
                pass
        with self._lock:
            self.received.append(data)

    def wait_received(self, n: int, timeout: float = 5.0) -> list[bytes]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.01)
        return list(self.received)

    def close(self) -> None:
        self.sock.close()


def _local_non_loopback_ip() -> Optional[str]:
    """An address of this machine that is not loopback (traffic to it never leaves the machine)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # UDP connect sends nothing: it only picks the source address
        ip = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


@pytest.fixture
def inside() -> Iterator[Listener]:
    listener = Listener("127.0.0.1")
    yield listener
    listener.close()


@pytest.fixture
def outside() -> Iterator[Listener]:
    listener = Listener("127.0.0.2")
    yield listener
    listener.close()


@pytest.fixture
def local_ip_listener() -> Iterator[Listener]:
    ip = _local_non_loopback_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback address")
    listener = Listener(ip)
    yield listener
    listener.close()


# The inner test suites share this helper: connect, send one line, return the reply or the errno.
CLIENT = """
import errno, socket

def talk(host, port, payload=b"hello\\n"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
        s.sendall(payload)
        return s.recv(100)
    except OSError as e:
        return e.errno
    finally:
        s.close()
"""


@pytest.fixture
def client_module(pytester: pytest.Pytester) -> None:
    """Writes ``netclient.py`` (with ``talk()``) next to the inner tests."""
    pytester.makepyfile(netclient=CLIENT)


@pytest.fixture
def outside_dir() -> Iterator[str]:
    """A directory outside every temp dir (so not writable by default inside the sandbox)."""
    import shutil
    import tempfile

    for parent in ("/var/tmp", os.path.expanduser("~")):
        if (
            os.path.isdir(parent)
            and os.access(parent, os.W_OK)
            and not parent.startswith(tempfile.gettempdir())
        ):
            path = tempfile.mkdtemp(prefix="sandlock-plugin-test-", dir=parent)
            break
    else:
        pytest.skip("no writable directory outside the temp dirs")
    yield os.path.realpath(path)
    shutil.rmtree(path, ignore_errors=True)
