"""The live-policy channel, driven from inside the confined child with ``channel.client()``."""

from __future__ import annotations

import errno
import subprocess
import sys

from sandbox_helpers import TcpListener, connect_errno, only, tcp_send

from pytest_sandlock.engine import channel
from pytest_sandlock.engine.errors import PolicyError, PolicyFnError
from pytest_sandlock.engine.policy import Policy
from pytest_sandlock.engine.sandbox import Sandbox

NET = ["127.0.0.1"]


def _live() -> channel.LivePolicyClient:
    live = channel.client()
    assert live is not None, "no live-policy client inside the sandbox"
    return live


def test_no_client_outside_a_sandbox() -> None:
    assert channel.client() is None


def test_current_ceiling_and_events_seen_from_inside(tcp_inside: TcpListener) -> None:
    def body() -> dict[str, object]:
        live = _live()
        sent = tcp_send(*tcp_inside.addr, b"before events()")
        current, ceiling = live.current(), live.ceiling()
        events = live.events()
        return {
            "sent": sent,
            "current": [current.allowed_ips, current.max_memory, current.max_processes],
            "ceiling": [sorted(map(str, ceiling.allowed_ips)), ceiling.max_memory, ceiling.max_processes],
            "events": [[e.syscall, str(e.host), e.port, e.denied, e.protocol] for e in events],
            "denials": len(live.denials()),
        }

    policy = Policy(net=["127.0.0.1", "127.0.0.3"], max_processes=7, max_memory="512M")
    result = Sandbox(policy).call(body)
    value = result.value
    assert value["sent"] == "ok"
    assert tcp_inside.received() == [b"before events()"]
    assert value["current"] == [None, 512 << 20, 7]
    assert value["ceiling"] == [["127.0.0.1/32", "127.0.0.3/32"], 512 << 20, 7]
    assert value["events"] == [["connect", "127.0.0.1", tcp_inside.port, False, "tcp"]]
    assert value["denials"] == 0


def test_denials_seen_from_inside(tcp_outside: TcpListener, tcp_inside: TcpListener) -> None:
    def body() -> list[object]:
        first = [connect_errno(*tcp_outside.addr), connect_errno(*tcp_inside.addr)]
        return first + [[d.port, d.errno] for d in _live().denials()]

    value = Sandbox(Policy(net=NET)).call(body).value
    assert value == [errno.EACCES, None, [tcp_outside.port, errno.EACCES]]


def test_restrict_then_grant_raises_and_empty_restrict_denies_all(
    tcp_inside: TcpListener, tcp_inside2: TcpListener
) -> None:
    def body() -> list[object]:
        live = _live()
        out: list[object] = []
        live.restrict_network(["127.0.0.1"])
        out.append(tcp_send(*tcp_inside.addr, b"after restrict"))  # still allowed
        try:
            live.grant_network(["127.0.0.1"])
            out.append("granted")
        except PolicyFnError as exc:
            out.append(["PolicyFnError", str(exc)])
        live.restrict_network([])
        out.append(sorted(map(str, live.current().allowed_ips)))
        out.append(tcp_send(*tcp_inside2.addr, b"after restrict []"))
        return out

    result = Sandbox(Policy(net=NET)).call(body)
    assert result.value == [
        "ok",
        ["PolicyFnError", "cannot grant restricted field: allowed_ips"],
        [],
        errno.EACCES,
    ]
    assert tcp_inside.received() == [b"after restrict"]
    assert tcp_inside2.received() == []
    event = only(result.events, port=tcp_inside2.port)
    assert (event.denied, event.errno, event.reason) == (True, errno.EACCES, "restricted by live policy")


def test_grant_is_capped_at_the_ceiling(tcp_inside: TcpListener, tcp_outside: TcpListener) -> None:
    def body() -> list[object]:
        live = _live()
        live.grant_max_processes(1000)
        live.grant_network(["127.0.0.2"])
        return [
            live.current().max_processes,
            tcp_send(*tcp_outside.addr, b"x"),
            tcp_send(*tcp_inside.addr, b"y"),
        ]

    value = Sandbox(Policy(net=NET, max_processes=9)).call(body).value
    assert value == [9, errno.EACCES, "ok"]
    assert tcp_outside.received() == []
    assert tcp_inside.received() == [b"y"]


def test_invalid_request_raises_policy_error_in_child() -> None:
    def body() -> list[object]:
        live = _live()
        out: list[object] = []
        for call in (lambda: live.restrict_network(["not-an-ip"]), lambda: live.grant_max_memory("lots")):
            try:
                call()
                out.append("accepted")
            except PolicyError as exc:
                out.append(type(exc).__name__)
        return out

    assert Sandbox(Policy(net=NET)).call(body).value == ["PolicyError", "PolicyError"]


WAITER = """
import socket, sys
port = int(sys.argv[1])
for line in sys.stdin:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(line.strip().encode())
        print("ok", flush=True)
    except OSError as exc:
        print(exc.errno, flush=True)
    s.close()
"""


def test_per_pid_override_applies_to_that_pid_only(tcp_inside: TcpListener) -> None:
    def body() -> dict[str, object]:
        live = _live()
        proc = subprocess.Popen(
            [sys.executable, "-c", WAITER, str(tcp_inside.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        def ask(word: str) -> str:
            proc.stdin.write(word + "\n")
            proc.stdin.flush()
            return proc.stdout.readline().strip()

        out: dict[str, object] = {"child": proc.pid, "first": ask("child-1")}
        live.restrict_pid_network(proc.pid, [])
        out["restricted"] = ask("child-2")
        out["root_meanwhile"] = tcp_send(*tcp_inside.addr, b"root")
        live.clear_pid_override(proc.pid)
        out["cleared"] = ask("child-3")
        proc.stdin.close()
        proc.wait(timeout=10)
        return out

    result = Sandbox(Policy(net=NET)).call(body)
    value = result.value
    assert value["first"] == "ok"
    assert value["restricted"] == str(errno.EACCES)
    assert value["root_meanwhile"] == "ok"
    assert value["cleared"] == "ok"
    assert sorted(tcp_inside.received()) == [b"child-1", b"child-3", b"root"]
    child_connects = [e for e in result.events if e.syscall == "connect" and e.pid == value["child"]]
    assert [e.denied for e in child_connects] == [False, True, False]
    assert child_connects[1].reason == f"restricted for pid {value['child']}"


def test_repeated_connects_each_recorded_and_restrict_reaches_a_cached_destination(
    tcp_inside: TcpListener,
) -> None:
    """The supervisor caches a destination's verdict: every connect must still be recorded, and a
    live restriction must deny the very address bytes that were allowed a moment before."""

    def body() -> list[object]:
        out: list[object] = [tcp_send(*tcp_inside.addr, f"hello {i}".encode()) for i in range(3)]
        _live().restrict_network([])
        out.append(tcp_send(*tcp_inside.addr, b"after restrict"))
        return out

    result = Sandbox(Policy(net=NET)).call(body)
    assert result.value == ["ok", "ok", "ok", errno.EACCES]
    assert tcp_inside.received() == [b"hello 0", b"hello 1", b"hello 2"]
    connects = [e for e in result.events if e.syscall == "connect" and e.port == tcp_inside.port]
    assert [e.denied for e in connects] == [False, False, False, True]
