"""A ``policy_fn`` that hangs, raises or returns garbage denies (fail closed) and says so on the test.

The callback runs in the pytest process (trusted code), but a broken one must never open the door: each
case is tried against the outside listener with a net policy that would otherwise allow it
(``net=["127.0.0.0/8"]``), so only the callback's failure stands between the test and 127.0.0.2. The
control is the same policy with a callback that allows: the listener is reached."""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

import pytest
from security_helpers import Outside

from pytest_sandlock.engine import supervisor
from pytest_sandlock.engine.policy import Policy
from pytest_sandlock.engine.sandbox import Sandbox

LOOPBACK = ["127.0.0.0/8"]


def hangs(event: Any, ctx: Any) -> Any:
    if event.host is not None:
        while True:
            time.sleep(0.05)
    return None


def raises(event: Any, ctx: Any) -> Any:
    if event.host is not None:
        raise RuntimeError("callback bug")
    return None


def garbage(event: Any, ctx: Any) -> Any:
    return object() if event.host is not None else None


def allows(event: Any, ctx: Any) -> Any:
    return None


def reach(addr: tuple[str, int]) -> object:
    s = socket.socket()
    try:
        s.connect(addr)
        s.sendall(b"through the callback")
        return 0
    except OSError as exc:
        return exc.errno
    finally:
        s.close()


@pytest.mark.parametrize(
    ("callback", "problem"),
    [
        (raises, "policy_fn raised RuntimeError: callback bug"),
        (garbage, "policy_fn returned"),
        (hangs, f"policy_fn took longer than {supervisor.POLICY_FN_TIMEOUT}s"),
    ],
)
def test_broken_callback_denies(outside: Outside, callback: Any, problem: str) -> None:
    started = time.monotonic()
    result = Sandbox(Policy(net=LOOPBACK), callback).call(reach, outside.tcp_addr)
    took = time.monotonic() - started
    assert result.value == errno.EPERM
    assert took < supervisor.POLICY_FN_TIMEOUT + 2  # bounded: a hanging callback is cut off
    denied = [e for e in result.events if e.denied]
    assert len(denied) == 1 and problem in (denied[0].reason or ""), denied
    assert any(problem in text for text in result.internal_errors)


def test_allowing_callback_control(outside: Outside) -> None:
    assert Sandbox(Policy(net=LOOPBACK), allows).call(reach, outside.tcp_addr).value == 0
    assert outside.drain() == [("tcp", b"through the callback")]


def test_broken_callbacks_are_reported_on_the_test(pytester: pytest.Pytester, outside: Outside) -> None:
    pytester.makepyfile(
        f"""
        import socket, time, pytest

        ADDR = {outside.tcp_addr!r}

        def raises(event, ctx):
            if event.host is not None:
                raise RuntimeError("callback bug")

        def garbage(event, ctx):
            return object() if event.host is not None else None

        def hangs(event, ctx):
            if event.host is not None:
                time.sleep(3600)

        def attempt():
            s = socket.socket()
            try:
                s.connect(ADDR)
            finally:
                s.close()

        @pytest.mark.sandbox(net=["127.0.0.0/8"], policy_fn=raises)
        def test_raises():
            attempt()

        @pytest.mark.sandbox(net=["127.0.0.0/8"], policy_fn=garbage)
        def test_garbage():
            attempt()

        @pytest.mark.sandbox(net=["127.0.0.0/8"], policy_fn=hangs)
        def test_hangs():
            attempt()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(failed=3)
    text = result.stdout.str()
    assert "PermissionError" in text
    for fragment in ("policy_fn raised RuntimeError: callback bug", "policy_fn returned", "took longer than"):
        assert fragment in text, fragment
