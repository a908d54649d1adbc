"""Internal errors in the supervisor deny, and say so."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest

from pytest_sandlock.engine import netops
from pytest_sandlock.engine.policy import Policy
from pytest_sandlock.engine.sandbox import Sandbox


def _connect(path: str) -> int:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        return 0
    except OSError as exc:
        return exc.errno or -1
    finally:
        s.close()


@pytest.fixture
def unix_listener(tmp_path: Path):
    path = tmp_path / "ok.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(8)
    yield str(path)
    server.close()


def test_control_connect_allowed(unix_listener: str) -> None:
    assert Sandbox(Policy(net=["127.0.0.1"])).call(_connect, unix_listener).value == 0


def test_error_while_completing_a_deferred_call_denies(unix_listener: str, monkeypatch) -> None:
    real = netops.connect
    calls = []

    def flaky(*args):  # type: ignore[no-untyped-def]
        calls.append(args)
        if len(calls) == 1:
            return -errno.EAGAIN, netops.CONNECT_RETRY  # as for a full backlog: retried on a timer
        raise RuntimeError("broken while retrying")

    monkeypatch.setattr(netops, "connect", flaky)
    result = Sandbox(Policy(net=["127.0.0.1"])).call(_connect, unix_listener)
    assert result.value == errno.EACCES
    assert any("broken while retrying" in text for text in result.internal_errors)
    assert [e.denied for e in result.events if e.syscall == "connect"] == [True]
    monkeypatch.setattr(netops, "connect", real)
