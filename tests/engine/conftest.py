"""Shared fixtures of the engine's enforcement tests (helpers: ``sandbox_helpers.py``)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_helpers import INSIDE, OUTSIDE, TcpListener, UdpListener


@pytest.fixture
def tcp_inside() -> Iterator[TcpListener]:
    listener = TcpListener(INSIDE)
    yield listener
    listener.close()


@pytest.fixture
def tcp_inside2() -> Iterator[TcpListener]:
    """A second 127.0.0.1 listener on another port (exact-port rules)."""
    listener = TcpListener(INSIDE)
    yield listener
    listener.close()


@pytest.fixture
def tcp_outside() -> Iterator[TcpListener]:
    listener = TcpListener(OUTSIDE)
    yield listener
    listener.close()


@pytest.fixture
def tcp6_inside() -> Iterator[TcpListener]:
    try:
        listener = TcpListener("::1", socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    yield listener
    listener.close()


@pytest.fixture
def udp_inside() -> Iterator[UdpListener]:
    listener = UdpListener(INSIDE)
    yield listener
    listener.close()


@pytest.fixture
def udp_outside() -> Iterator[UdpListener]:
    listener = UdpListener(OUTSIDE)
    yield listener
    listener.close()


@pytest.fixture
def outside_dir() -> Iterator[Path]:
    """A directory outside every always-writable path (not under the system temp dir)."""
    base = "/var/tmp"
    tmp = os.path.realpath(tempfile.gettempdir())
    real = os.path.realpath(base)
    if not os.path.isdir(real) or real == tmp or real.startswith(tmp + os.sep):
        pytest.skip("/var/tmp is missing or inside the system temp dir")
    path = Path(tempfile.mkdtemp(prefix="sandlock-test-", dir=real))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def repo_dir(outside_dir: Path) -> Path:
    """The source tree: readable, never writable from a sandbox.

    A checkout under the system temp dir is writable by design (the temp dir always is), so there a
    stand-in tree outside it plays the source tree's part.
    """
    repo = Path(__file__).resolve().parents[2]
    tmp = os.path.realpath(tempfile.gettempdir())
    if str(repo) != tmp and not str(repo).startswith(tmp + os.sep):
        return repo
    stand_in = outside_dir / "source-tree"
    stand_in.mkdir()
    shutil.copy(repo / "pyproject.toml", stand_in / "pyproject.toml")
    return stand_in
