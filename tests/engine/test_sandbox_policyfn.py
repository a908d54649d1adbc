"""``policy_fn``: every verdict kind, failures of the callback, and the rule that it can only tighten.

The callback runs in this (pytest) process, so it can record what it saw in a plain list. Each test
connects to two live listeners: one the verdict under test applies to, and a control the callback
allows, which must receive its bytes (so the sandbox demonstrably ran the code and reached loopback).
"""

from __future__ import annotations

import errno
import ipaddress
import subprocess
from typing import Any

import pytest
from sandbox_helpers import INSIDE, TcpListener, only, tcp_send

from pytest_sandlock.engine.policy import Policy, PolicyContext, SyscallCategory, SyscallEvent, Verdict
from pytest_sandlock.engine.sandbox import Sandbox

NET = ["127.0.0.1"]


def _two_sends(target: tuple[str, int], control: tuple[str, int]) -> list[object]:
    return [tcp_send(*target, b"target"), tcp_send(*control, b"control")]


def _run_with_verdict(
    verdict_for_target: Any, target: TcpListener, control: TcpListener
) -> tuple[Any, list[SyscallEvent]]:
    """Connect to ``target`` (callback returns ``verdict_for_target``) and to ``control`` (ALLOW)."""

    def policy_fn(event: SyscallEvent, ctx: PolicyContext) -> Any:
        if event.category is SyscallCategory.NETWORK and event.port == target.port:
            if isinstance(verdict_for_target, BaseException):
                raise verdict_for_target
            return verdict_for_target
        return Verdict.ALLOW

    result = Sandbox(Policy(net=NET), policy_fn).call(_two_sends, target.addr, control.addr)
    assert result.value[1] == "ok"
    assert control.received() == [b"control"]  # positive control
    return result, result.events


ALLOWING = [
    pytest.param(Verdict.ALLOW, None, id="ALLOW"),
    pytest.param(None, None, id="None"),
    pytest.param(0, None, id="zero"),
    pytest.param(False, None, id="False"),
    pytest.param("allow", None, id="str-allow"),
    pytest.param(Verdict.AUDIT, "audit", id="AUDIT"),
    pytest.param("audit", "audit", id="str-audit"),
]


@pytest.mark.parametrize(("verdict", "reason"), ALLOWING)
def test_allowing_verdicts(verdict: Any, reason: Any, tcp_inside: TcpListener, tcp_inside2) -> None:
    result, events = _run_with_verdict(verdict, tcp_inside, tcp_inside2)
    assert result.value[0] == "ok"
    assert tcp_inside.received() == [b"target"]
    event = only(events, syscall="connect", port=tcp_inside.port)
    assert (event.denied, event.errno, event.reason) == (False, None, reason)
    assert result.internal_errors == []


DENYING = [
    pytest.param(Verdict.DENY, errno.EPERM, "denied by policy_fn", id="DENY"),
    pytest.param(
        Verdict.deny_with(errno.ECONNREFUSED), errno.ECONNREFUSED, "denied by policy_fn", id="deny_with"
    ),
    pytest.param(True, errno.EPERM, "denied by policy_fn", id="True"),
    pytest.param(errno.ENETUNREACH, errno.ENETUNREACH, "denied by policy_fn", id="int-errno"),
    pytest.param("deny", errno.EPERM, "denied by policy_fn", id="str-deny"),
]


@pytest.mark.parametrize(("verdict", "expected_errno", "reason"), DENYING)
def test_denying_verdicts(
    verdict: Any, expected_errno: int, reason: str, tcp_inside: TcpListener, tcp_inside2
) -> None:
    result, events = _run_with_verdict(verdict, tcp_inside, tcp_inside2)
    assert result.value[0] == expected_errno
    assert tcp_inside.received() == []
    event = only(events, syscall="connect", port=tcp_inside.port)
    assert (event.denied, event.errno, event.reason) == (True, expected_errno, reason)
    assert result.internal_errors == []


GARBAGE = [
    pytest.param(3.5, "3.5", id="float"),
    pytest.param(-1, "-1", id="negative-int"),
    pytest.param(4096, "4096", id="too-large-errno"),
    pytest.param("yes", "'yes'", id="unknown-string"),
    pytest.param(["allow"], "['allow']", id="list"),
    pytest.param(Verdict, "<class", id="the-class"),
]


@pytest.mark.parametrize(("garbage", "shown"), GARBAGE)
def test_invalid_verdict_denies_and_is_recorded(
    garbage: Any, shown: str, tcp_inside: TcpListener, tcp_inside2
) -> None:
    result, events = _run_with_verdict(garbage, tcp_inside, tcp_inside2)
    assert result.value[0] == errno.EPERM
    assert tcp_inside.received() == []
    event = only(events, syscall="connect", port=tcp_inside.port)
    assert event.denied and event.errno == errno.EPERM
    assert event.reason.startswith("policy_fn returned invalid verdict ")
    assert shown in event.reason
    assert result.internal_errors == [event.reason]


def test_callback_that_raises_denies_with_reason(tcp_inside: TcpListener, tcp_inside2) -> None:
    result, events = _run_with_verdict(ValueError("boom"), tcp_inside, tcp_inside2)
    assert result.value[0] == errno.EPERM
    assert tcp_inside.received() == []
    event = only(events, syscall="connect", port=tcp_inside.port)
    assert (event.denied, event.errno) == (True, errno.EPERM)
    assert event.reason == "policy_fn raised ValueError: boom"
    assert result.internal_errors == ["policy_fn raised ValueError: boom"]


def test_callback_receives_the_event_and_context(tcp_inside: TcpListener) -> None:
    seen: list[tuple[SyscallEvent, Any]] = []

    def policy_fn(event: SyscallEvent, ctx: PolicyContext) -> Verdict:
        seen.append((event, ctx.current()))
        return Verdict.ALLOW

    result = Sandbox(Policy(net=NET, max_processes=5), policy_fn).call(tcp_send, *tcp_inside.addr, b"seen")
    assert result.value == "ok"
    assert tcp_inside.received() == [b"seen"]
    (event, live), *_ = [s for s in seen if s[0].syscall == "connect"]
    assert event.host == ipaddress.ip_address(INSIDE) and event.port == tcp_inside.port
    assert event.protocol == "tcp" and event.denied is False
    assert event.pid == result.events[0].pid
    assert live.max_processes == 5 and live.allowed_ips is None


def test_callback_can_never_widen(tcp_inside: TcpListener, tcp_outside: TcpListener) -> None:
    def policy_fn(event: SyscallEvent, ctx: PolicyContext) -> Verdict:
        ctx.grant_network(["127.0.0.2"])  # outside the ceiling: ignored
        return Verdict.ALLOW

    result = Sandbox(Policy(net=NET), policy_fn).call(_two_sends, tcp_outside.addr, tcp_inside.addr)
    assert result.value == [errno.EACCES, "ok"]
    assert tcp_outside.received() == []
    assert tcp_inside.received() == [b"control"]
    event = only(result.events, syscall="connect", port=tcp_outside.port)
    assert (event.denied, event.errno, event.reason) == (True, errno.EACCES, "not in net policy")


def test_callback_does_not_widen_exact_port_rules(tcp_inside: TcpListener, tcp_inside2) -> None:
    """sandlock widened host:port rules to host:* when any callback was present: not here."""
    box = Sandbox(Policy(net=[tcp_inside.rule]), lambda event, ctx: None)
    result = box.call(_two_sends, tcp_inside2.addr, tcp_inside.addr)
    assert result.value == [errno.EACCES, "ok"]
    assert tcp_inside2.received() == []
    assert tcp_inside.received() == [b"control"]


def test_callback_does_not_open_empty_net(tcp_inside: TcpListener) -> None:
    result = Sandbox(Policy(net=[]), lambda event, ctx: Verdict.ALLOW).call(tcp_send, *tcp_inside.addr, b"x")
    assert result.value == errno.EACCES
    assert tcp_inside.received() == []
    assert (
        Sandbox(Policy(net=NET), lambda e, c: Verdict.ALLOW).call(tcp_send, *tcp_inside.addr, b"y").value
        == "ok"
    )
    assert tcp_inside.received() == [b"y"]


def test_callback_tightens_through_the_context(tcp_inside: TcpListener, tcp_inside2) -> None:
    """After the first connect the callback restricts the network to nothing: later connects fail."""

    def policy_fn(event: SyscallEvent, ctx: PolicyContext) -> Verdict:
        if event.syscall == "connect":
            ctx.restrict_network([])
        return Verdict.ALLOW

    result = Sandbox(Policy(net=NET), policy_fn).call(_two_sends, tcp_inside.addr, tcp_inside2.addr)
    assert result.value == ["ok", errno.EACCES]
    assert tcp_inside.received() == [b"target"]
    assert tcp_inside2.received() == []
    assert only(result.events, port=tcp_inside2.port).reason == "restricted by live policy"


def test_callback_denies_exec_by_argv(tmp_path) -> None:
    def policy_fn(event: SyscallEvent, ctx: PolicyContext) -> Verdict:
        if event.syscall == "execve" and event.argv_contains("forbidden-word"):
            return Verdict.deny_with(errno.EPERM)
        return Verdict.ALLOW

    def body() -> list[object]:
        out: list[object] = [subprocess.run(["/bin/echo", "fine"], capture_output=True).stdout.decode()]
        try:
            subprocess.run(["/bin/echo", "forbidden-word"], capture_output=True)
            out.append("ran")
        except PermissionError as exc:
            out.append(exc.errno)
        return out

    result = Sandbox(Policy(net=NET), policy_fn).call(body)
    assert result.value == ["fine\n", errno.EPERM]
    execs = [e for e in result.events if e.syscall == "execve"]
    assert [(e.argv, e.denied) for e in execs] == [
        (("/bin/echo", "fine"), False),
        (("/bin/echo", "forbidden-word"), True),
    ]
    assert execs[1].errno == errno.EPERM and execs[1].path == "/bin/echo"


def test_callback_denies_a_file_write(tmp_path) -> None:
    def policy_fn(event: SyscallEvent, ctx: PolicyContext) -> Any:
        if event.category is SyscallCategory.FILE and event.path and event.path.endswith("blocked.txt"):
            return errno.EROFS
        return None

    def body() -> list[object]:
        out = []
        for name in ("fine.txt", "blocked.txt"):
            try:
                with open(tmp_path / name, "w") as fh:
                    fh.write(name)
                out.append("written")
            except OSError as exc:
                out.append(exc.errno)
        return out

    result = Sandbox(Policy(net=NET), policy_fn).call(body)
    assert result.value == ["written", errno.EROFS]
    assert (tmp_path / "fine.txt").read_text() == "fine.txt"
    assert not (tmp_path / "blocked.txt").exists()
    event = only(result.events, path=str(tmp_path / "blocked.txt"))
    assert (event.denied, event.errno, event.category) == (True, errno.EROFS, SyscallCategory.FILE)


def test_audit_mode_with_denying_callback(tcp_inside: TcpListener) -> None:
    box = Sandbox(Policy(net=NET), lambda event, ctx: Verdict.DENY, audit=True)
    result = box.call(tcp_send, *tcp_inside.addr, b"audited")
    assert result.value == "ok"
    assert tcp_inside.received() == [b"audited"]
    event = only(result.events, syscall="connect")
    assert event.denied is False
    assert event.reason == "audit: policy_fn would deny (Verdict.DENY)"
