"""A loopback echo server started by a fixture in the pytest process; sandboxed tests reach it."""

from __future__ import annotations

import socket
import threading
from typing import Iterator

import pytest


def _serve(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            data = conn.recv(1024)
            conn.sendall(b"echo: " + data)


@pytest.fixture(scope="session")
def echo_server() -> Iterator[tuple[str, int]]:
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_serve, args=(server,), daemon=True).start()
    yield server.getsockname()
    server.close()


def talk(address: tuple[str, int], payload: bytes = b"hi") -> bytes:
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(payload)
        return s.recv(1024)


@pytest.fixture
def enforcing(request: pytest.FixtureRequest) -> None:
    """Tests that show a denial skip under --sandlock-audit, which denies nothing."""
    if request.config.getoption("sandlock_audit") or request.config.getini("sandlock_audit"):
        pytest.skip("--sandlock-audit denies nothing")
