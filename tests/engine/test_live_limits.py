"""Live process and memory limits when the static policy sets none."""

from __future__ import annotations

import pytest

from pytest_sandlock.engine import channel
from pytest_sandlock.engine.errors import PolicyFnError
from pytest_sandlock.engine.policy import Policy
from pytest_sandlock.engine.sandbox import Sandbox


def test_live_process_limit_needs_a_static_one() -> None:
    def body() -> str:
        client = channel.client()
        assert client is not None
        try:
            client.restrict_max_processes(3)
        except PolicyFnError as exc:
            return str(exc)
        return "accepted"

    message = Sandbox(Policy(net=[])).call(body).value
    assert "static max_processes" in message
    # with a static limit the same call is accepted
    assert Sandbox(Policy(net=[], max_processes=10)).call(body).value == "accepted"


def test_live_memory_restrict_without_static_limit() -> None:
    def body() -> list[str]:
        client = channel.client()
        assert client is not None
        outcomes = []
        bytearray(64 * 1024 * 1024)  # fine before the restrict
        outcomes.append("before: ok")
        client.restrict_max_memory("32M")
        try:
            bytearray(256 * 1024 * 1024)
            outcomes.append("after: ok")
        except MemoryError:
            outcomes.append("after: MemoryError")
        bytearray(1024 * 1024)  # small allocations still work
        return outcomes

    assert Sandbox(Policy(net=[])).call(body).value == ["before: ok", "after: MemoryError"]


@pytest.mark.parametrize("limit", [None, 8])
def test_policy_fn_sees_the_same_rule(limit: int | None) -> None:
    seen: list[str] = []

    def policy_fn(event, ctx):  # type: ignore[no-untyped-def]
        try:
            ctx.restrict_max_processes(4)
            seen.append("accepted")
        except PolicyFnError:
            seen.append("refused")
        return None

    def body() -> None:
        import socket

        s = socket.socket()
        try:
            s.connect(("127.0.0.1", 9))
        except OSError:
            pass

    Sandbox(Policy(net=["127.0.0.1"], max_processes=limit), policy_fn=policy_fn).call(body)
    assert seen == (["refused"] if limit is None else ["accepted"])
