"""Every pytest-sandlock feature in a few tests. Run from the repository root:

    python -m pytest examples -p no:cacheprovider                       # enforce: all pass
    python -m pytest examples -p no:cacheprovider --sandlock-strict     # test_swallowed_denial fails
    python -m pytest examples -p no:cacheprovider --sandlock-audit      # lists programs run, destinations
    python -m pytest examples --sandlock-report=sandlock.json -n 2      # JSON report, under xdist

Traffic only goes to 127.0.0.1 (allowed) and 127.0.0.2 (denied before any packet is sent).
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess

import pytest

from conftest import talk


@pytest.mark.sandbox  # default policy: loopback only, the source tree read-only, temp dirs writable
def test_allowed_loopback_call(echo_server):
    assert talk(echo_server) == b"echo: hi"


@pytest.mark.sandbox(net=["127.0.0.1"])
def test_swallowed_denial(enforcing):
    """Passes normally; --sandlock-strict fails it and names 127.0.0.2:9 as the denied destination."""
    try:
        socket.create_connection(("127.0.0.2", 9), timeout=1).close()
    except OSError:
        pass  # code under test that hides its errors


@pytest.mark.sandbox(net=["127.0.0.1"])
def test_expected_denial(sandlock_policy, enforcing):
    """Reading sandlock_policy.denials tells strict mode the denial is expected."""
    with pytest.raises(PermissionError) as info:
        socket.create_connection(("127.0.0.2", 9), timeout=1)
    assert info.value.errno == errno.EACCES
    assert [(str(e.host), e.port) for e in sandlock_policy.denials] == [("127.0.0.2", 9)]


def test_source_tree_is_read_only(sandlock_policy, enforcing, tmp_path):
    (tmp_path / "scratch.txt").write_text("tmp_path is writable")
    with pytest.raises(PermissionError):
        open(os.path.join(os.path.dirname(__file__), "not-written.txt"), "w").close()
    assert [e.path.endswith("not-written.txt") for e in sandlock_policy.denials] == [True]


def test_runs_a_program(sandlock_policy):
    """The fixture sandboxes an unmarked test; its events include the program's argv (audit lists it)."""
    out = subprocess.run(["/bin/echo", "hello from a sandboxed subprocess"], capture_output=True, check=True)
    assert out.stdout == b"hello from a sandboxed subprocess\n"
    assert any(e.argv_contains("/bin/echo") for e in sandlock_policy.events)


def test_live_policy(sandlock_policy, echo_server, enforcing):
    """The test narrows its own sandbox: after restrict_network([]) even loopback is denied."""
    assert talk(echo_server) == b"echo: hi"
    sandlock_policy.restrict_network([])
    with pytest.raises(PermissionError):
        talk(echo_server)
    assert len(sandlock_policy.denials) == 1


@pytest.mark.sandbox(enabled=False)
def test_opted_out():
    """Never sandboxed, not even under --sandlock-strict."""
    assert os.getpid() > 0
