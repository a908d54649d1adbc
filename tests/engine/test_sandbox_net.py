"""Network enforcement of ``Sandbox``: real confined processes against live loopback listeners.

Every denial is paired with a positive control in the same test: the same call to an allowed
destination reaches its listener, so a sandbox that enforced nothing would fail each test.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import ipaddress
import os
import select
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
from sandbox_helpers import (
    INSIDE,
    OUTSIDE,
    TcpListener,
    UnixListener,
    connect_errno,
    only,
    outcomes,
    tcp_send,
)

from pytest_sandlock.engine.policy import Policy, SyscallCategory
from pytest_sandlock.engine.sandbox import Sandbox

LOCAL = ["127.0.0.1"]
NOT_LOCAL = "203.0.113.7"  # TEST-NET-3: only bound to, never sent to
IP1 = ipaddress.ip_address(INSIDE)
IP2 = ipaddress.ip_address(OUTSIDE)


def _send_both(a: tuple[str, int], b: tuple[str, int]) -> list[object]:
    return [tcp_send(*a, b"to-a"), tcp_send(*b, b"to-b")]


# --------------------------------------------------------------------------------------------- TCP


def test_tcp_allowed_destination_receives_bytes(tcp_inside: TcpListener) -> None:
    result = Sandbox(Policy(net=LOCAL)).call(tcp_send, *tcp_inside.addr, b"hello inside")
    assert result.value == "ok"
    assert tcp_inside.received() == [b"hello inside"]
    event = only(result.events, syscall="connect")
    assert event.category is SyscallCategory.NETWORK
    assert (event.host, event.port, event.protocol, event.denied) == (IP1, tcp_inside.port, "tcp", False)
    assert event.pid != os.getpid() and event.parent_pid == os.getpid()


def test_tcp_denied_destination_gets_eacces_and_nothing(
    tcp_inside: TcpListener, tcp_outside: TcpListener
) -> None:
    result = Sandbox(Policy(net=LOCAL)).call(_send_both, tcp_inside.addr, tcp_outside.addr)
    assert result.value == ["ok", errno.EACCES]
    assert tcp_inside.received() == [b"to-a"]  # positive control
    assert tcp_outside.received() == []
    denied = only(result.events, syscall="connect", denied=True)
    assert (denied.host, denied.port, denied.errno) == (IP2, tcp_outside.port, errno.EACCES)
    assert denied.reason == "not in net policy"
    assert only(result.events, syscall="connect", denied=False).host == IP1


def test_exact_port_rule_allows_that_port_only(tcp_inside: TcpListener, tcp_inside2: TcpListener) -> None:
    result = Sandbox(Policy(net=[tcp_inside.rule])).call(_send_both, tcp_inside.addr, tcp_inside2.addr)
    assert result.value == ["ok", errno.EACCES]
    assert tcp_inside.received() == [b"to-a"]
    assert tcp_inside2.received() == []
    assert only(result.events, denied=True).port == tcp_inside2.port


def test_scheme_udp_rule_does_not_allow_tcp(tcp_inside: TcpListener, udp_inside) -> None:
    def body() -> list[object]:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"udp ok", udp_inside.addr)
        return [tcp_send(*tcp_inside.addr, b"tcp")]

    result = Sandbox(Policy(net=["udp://127.0.0.1"])).call(body)
    assert result.value == [errno.EACCES]
    assert udp_inside.received() == [b"udp ok"]
    assert tcp_inside.received() == []
    assert only(result.events, denied=True).protocol == "tcp"


def test_empty_net_denies_even_loopback(tcp_inside: TcpListener) -> None:
    result = Sandbox(Policy(net=[])).call(tcp_send, *tcp_inside.addr, b"x")
    assert result.value == errno.EACCES
    assert tcp_inside.received() == []
    assert only(result.events, syscall="connect").denied
    # positive control: the same call with loopback allowed reaches the listener
    assert Sandbox(Policy(net=LOCAL)).call(tcp_send, *tcp_inside.addr, b"y").value == "ok"
    assert tcp_inside.received() == [b"y"]


def test_unrestricted_net_reaches_outside(tcp_outside: TcpListener) -> None:
    result = Sandbox(Policy(net=None)).call(tcp_send, *tcp_outside.addr, b"free")
    assert result.value == "ok"
    assert tcp_outside.received() == [b"free"]


def test_cidr_rule(tcp_inside: TcpListener, tcp_outside: TcpListener) -> None:
    result = Sandbox(Policy(net=["127.0.0.0/31"])).call(_send_both, tcp_inside.addr, tcp_outside.addr)
    assert result.value == ["ok", errno.EACCES]
    result = Sandbox(Policy(net=["127.0.0.0/30"])).call(_send_both, tcp_inside.addr, tcp_outside.addr)
    assert result.value == ["ok", "ok"]
    assert tcp_inside.received() == [b"to-a", b"to-a"]
    assert tcp_outside.received() == [b"to-b"]


def test_nonblocking_connect_denied_and_allowed(tcp_inside: TcpListener, tcp_outside: TcpListener) -> None:
    def body() -> list[object]:
        out = []
        for addr in (tcp_inside.addr, tcp_outside.addr):
            s = socket.socket()
            s.setblocking(False)
            out.append(s.connect_ex(addr))
            if out[-1] in (0, errno.EINPROGRESS):
                select.select([], [s], [], 5)
                out.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
                s.setblocking(True)
                s.sendall(b"nb")
            s.close()
        return out

    result = Sandbox(Policy(net=LOCAL)).call(body)
    assert result.value[0] in (0, errno.EINPROGRESS)
    assert result.value[1:] == [0, errno.EACCES]
    assert tcp_inside.received() == [b"nb"]
    assert tcp_outside.received() == []


def test_connect_from_a_thread_is_attributed_to_the_process(tcp_inside: TcpListener) -> None:
    def body() -> list[object]:
        box: dict[str, object] = {}

        def worker() -> None:
            box["tid"] = threading.get_native_id()
            box["sent"] = tcp_send(*tcp_inside.addr, b"from thread")

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        return [os.getpid(), box["tid"], box["sent"]]

    result = Sandbox(Policy(net=LOCAL)).call(body)
    pid, tid, sent = result.value
    assert sent == "ok" and tid != pid
    assert tcp_inside.received() == [b"from thread"]
    assert only(result.events, syscall="connect").pid == pid


def test_connection_refused_is_passed_through() -> None:
    probe = socket.socket()
    probe.bind((INSIDE, 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now

    def body() -> list[object]:
        blocking = connect_errno(INSIDE, port)
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect((INSIDE, port))
            with_timeout: object = "connected"
        except OSError as exc:
            with_timeout = exc.errno
        return [blocking, with_timeout]

    result = Sandbox(Policy(net=LOCAL)).call(body)
    assert result.value == [errno.ECONNREFUSED, errno.ECONNREFUSED]
    assert result.denials == []


def test_fd_passing_over_socketpair() -> None:
    """sendmsg is performed by the supervisor: SCM_RIGHTS descriptors must arrive as the child's."""

    def body() -> bytes:
        import array

        a, b = socket.socketpair()
        r, w = os.pipe()
        a.sendmsg([b"fd"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))])
        _, ancillary, _, _ = b.recvmsg(16, socket.CMSG_LEN(4))
        passed = array.array("i")
        passed.frombytes(ancillary[0][2])
        os.write(passed[0], b"through the passed fd")
        return os.read(r, 100)

    result = Sandbox(Policy(net=LOCAL)).call(body)
    assert result.value == b"through the passed fd"
    event = only(result.events, syscall="sendmsg")
    assert (event.protocol, event.size, event.denied) == ("unix", 2, False)


# --------------------------------------------------------------------------------------------- IPv6


def test_ipv6_loopback_allowed_by_rule_denied_without(tcp6_inside: TcpListener) -> None:
    allowed = Sandbox(Policy(net=["[::1]"])).call(tcp_send, "::1", tcp6_inside.port, b"v6", socket.AF_INET6)
    assert allowed.value == "ok"
    assert tcp6_inside.received() == [b"v6"]
    assert only(allowed.events, syscall="connect").host == ipaddress.ip_address("::1")

    denied = Sandbox(Policy(net=LOCAL)).call(tcp_send, "::1", tcp6_inside.port, b"no", socket.AF_INET6)
    assert denied.value == errno.EACCES
    assert tcp6_inside.received() == [b"v6"]
    event = only(denied.events, syscall="connect")
    assert (event.denied, event.errno, event.host) == (True, errno.EACCES, ipaddress.ip_address("::1"))


def test_ipv4_mapped_ipv6_is_judged_as_ipv4(tcp_inside: TcpListener, tcp_outside: TcpListener) -> None:
    def body() -> list[object]:
        return [
            tcp_send("::ffff:127.0.0.1", tcp_inside.port, b"mapped-in", socket.AF_INET6),
            tcp_send("::ffff:127.0.0.2", tcp_outside.port, b"mapped-out", socket.AF_INET6),
        ]

    result = Sandbox(Policy(net=LOCAL)).call(body)
    assert result.value == ["ok", errno.EACCES]
    assert tcp_inside.received() == [b"mapped-in"]
    assert tcp_outside.received() == []
    denied = only(result.events, denied=True)
    assert denied.host.ipv4_mapped == IP2 and denied.port == tcp_outside.port


# --------------------------------------------------------------------------------------------- UDP


def test_udp_sendto_allowed_and_denied(udp_inside, udp_outside) -> None:
    def body() -> list[object]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out: list[object] = [s.sendto(b"udp-in", udp_inside.addr)]
        try:
            s.sendto(b"udp-out", udp_outside.addr)
            out.append("sent")
        except OSError as exc:
            out.append(exc.errno)
        return out

    result = Sandbox(Policy(net=LOCAL)).call(body)
    assert result.value == [6, errno.EACCES]
    assert udp_inside.received() == [b"udp-in"]
    assert udp_outside.received() == []
    ok = only(result.events, syscall="sendto", denied=False)
    assert (ok.host, ok.port, ok.protocol, ok.size) == (IP1, udp_inside.port, "udp", 6)
    bad = only(result.events, syscall="sendto", denied=True)
    assert (bad.host, bad.port, bad.errno, bad.size) == (IP2, udp_outside.port, errno.EACCES, 7)


def test_udp_sendmsg_allowed_and_denied(udp_inside, udp_outside) -> None:
    def body() -> list[object]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out: list[object] = [s.sendmsg([b"msg-", b"in"], [], 0, udp_inside.addr)]
        try:
            s.sendmsg([b"msg-out"], [], 0, udp_outside.addr)
            out.append("sent")
        except OSError as exc:
            out.append(exc.errno)
        return out

    result = Sandbox(Policy(net=LOCAL)).call(body)
    assert result.value == [6, errno.EACCES]
    assert udp_inside.received() == [b"msg-in"]
    assert udp_outside.received() == []
    assert only(result.events, syscall="sendmsg", denied=True).host == IP2
    assert only(result.events, syscall="sendmsg", denied=False).host == IP1


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


class _SockaddrIn(ctypes.Structure):
    _fields_ = [
        ("sin_family", ctypes.c_ushort),
        ("sin_port", ctypes.c_uint16),
        ("sin_addr", ctypes.c_uint8 * 4),
        ("sin_zero", ctypes.c_uint8 * 8),
    ]


def _sendmmsg(sock: socket.socket, items: list[tuple[bytes, tuple[str, int]]]) -> tuple[int, int, list]:
    """libc sendmmsg with one datagram per (payload, destination); (result, errno, msg_len list)."""
    libc = ctypes.CDLL(None, use_errno=True)
    n = len(items)
    vec = (_Mmsghdr * n)()
    keep = []
    for i, (payload, (host, port)) in enumerate(items):
        buf = ctypes.create_string_buffer(payload, len(payload))
        iov = _Iovec(ctypes.cast(buf, ctypes.c_void_p), len(payload))
        addr = _SockaddrIn(socket.AF_INET, socket.htons(port), (ctypes.c_uint8 * 4)(*socket.inet_aton(host)))
        keep += [buf, iov, addr]
        vec[i].msg_hdr.msg_name = ctypes.cast(ctypes.pointer(addr), ctypes.c_void_p)
        vec[i].msg_hdr.msg_namelen = ctypes.sizeof(addr)
        vec[i].msg_hdr.msg_iov = ctypes.pointer(iov)
        vec[i].msg_hdr.msg_iovlen = 1
    result = libc.sendmmsg(sock.fileno(), vec, n, 0)
    return result, ctypes.get_errno() if result < 0 else 0, [vec[i].msg_len for i in range(n)]


def test_udp_sendmmsg_stops_at_the_denied_destination(udp_inside, udp_outside) -> None:
    def body() -> list[object]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        first = _sendmmsg(s, [(b"mm-in", udp_inside.addr), (b"mm-out", udp_outside.addr)])
        second = _sendmmsg(s, [(b"mm-out2", udp_outside.addr), (b"mm-in2", udp_inside.addr)])
        return [list(first), list(second)]

    result = Sandbox(Policy(net=LOCAL)).call(body)
    # the allowed datagram goes, the denied one stops the batch: 1 sent, msg_len written back
    assert result.value[0] == [1, 0, [5, 0]]
    # denied first: nothing sent, the call fails with EACCES
    assert result.value[1] == [-1, errno.EACCES, [0, 0]]
    assert udp_inside.received() == [b"mm-in"]
    assert udp_outside.received() == []
    events = [e for e in result.events if e.syscall == "sendmmsg"]
    assert [(e.host, e.port, e.denied) for e in events] == [
        (IP1, udp_inside.port, False),
        (IP2, udp_outside.port, True),
        (IP2, udp_outside.port, True),
    ]
    assert all(e.errno == errno.EACCES for e in events if e.denied)


def test_udp_connect_then_send(udp_inside, udp_outside) -> None:
    def body() -> list[object]:
        good = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        good.connect(udp_inside.addr)
        out: list[object] = [good.send(b"connected-send"), good.send(b"again")]
        bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            bad.connect(udp_outside.addr)
            out.append("connected")
        except OSError as exc:
            out.append(exc.errno)
        try:
            bad.send(b"after-denied-connect")  # not connected: no destination at all
            out.append("sent")
        except OSError as exc:
            out.append(exc.errno)
        return out

    result = Sandbox(Policy(net=LOCAL)).call(body)
    assert result.value == [14, 5, errno.EACCES, errno.EDESTADDRREQ]
    assert udp_inside.received() == [b"connected-send", b"again"]
    assert udp_outside.received() == []
    connects = [e for e in result.events if e.syscall == "connect"]
    assert [(e.host, e.protocol, e.denied) for e in connects] == [(IP1, "udp", False), (IP2, "udp", True)]


def test_udp_send_on_socket_connected_outside_the_sandbox_is_not_a_bypass(udp_inside) -> None:
    """A sendto with an explicit destination is judged even on a connected socket."""

    def body() -> list[object]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(udp_inside.addr)
        try:
            s.sendto(b"explicit-out", (OUTSIDE, udp_inside.port))
            return ["sent"]
        except OSError as exc:
            return [exc.errno]

    assert Sandbox(Policy(net=LOCAL)).call(body).value == [errno.EACCES]


# --------------------------------------------------------------------------------------------- unix


def test_unix_socket_in_writable_dir_allowed(tmp_path) -> None:
    listener = UnixListener(tmp_path / "ok.sock")
    try:

        def body() -> object:
            s = socket.socket(socket.AF_UNIX)
            s.connect(listener.path)
            s.sendall(b"unix hello")
            s.close()
            return "ok"

        result = Sandbox(Policy(net=LOCAL)).call(body)
        assert result.value == "ok"
        assert listener.received() == [b"unix hello"]
        event = only(result.events, syscall="connect")
        assert (event.protocol, event.unix_path, event.denied) == ("unix", listener.path, False)
    finally:
        listener.close()


def test_unix_socket_outside_writable_set_denied(outside_dir) -> None:
    listener = UnixListener(outside_dir / "out.sock")

    def body() -> object:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(listener.path)
            s.sendall(b"unix escaped")
            return "ok"
        except OSError as exc:
            return exc.errno
        finally:
            s.close()

    try:
        result = Sandbox(Policy(net=LOCAL)).call(body)
        assert result.value == errno.EACCES
        assert listener.received() == []
        event = only(result.events, syscall="connect")
        assert (event.denied, event.errno, event.unix_path) == (True, errno.EACCES, listener.path)
        # positive control: with the directory writable, the same connect reaches the listener
        allowed = Sandbox(Policy(net=LOCAL, fs_write=[outside_dir])).call(body)
        assert allowed.value == "ok"
        assert listener.received() == [b"unix escaped"]
    finally:
        listener.close()


def test_absent_unix_socket_is_enoent_not_a_denial(outside_dir) -> None:
    """glibc probes nscd's socket on every name lookup: a missing socket must not count as a denial."""
    missing = outside_dir / "missing.sock"

    def body() -> list[object]:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(missing))
            first: object = "connected"
        except OSError as exc:
            first = exc.errno
        finally:
            s.close()
        return [first, len(socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)) > 0]

    result = Sandbox(Policy(net=LOCAL)).call(body)
    assert result.value == [errno.ENOENT, True]
    assert result.denials == []
    event = only(result.events, unix_path=str(missing))
    assert (event.denied, event.reason) == (False, "no such unix socket")
    # control: once the socket exists outside the writable paths, the same connect is a denial
    listener = UnixListener(missing)
    try:
        denied = Sandbox(Policy(net=LOCAL)).call(body)
        assert denied.value[0] == errno.EACCES
        assert only(denied.events, unix_path=str(missing)).denied
        assert listener.received() == []
    finally:
        listener.close()


def test_unix_bind_outside_writable_set_denied(tmp_path, outside_dir) -> None:
    def body(path: str) -> object:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.bind(path)
            return "bound"
        except OSError as exc:
            return exc.errno
        finally:
            s.close()

    box = Sandbox(Policy(net=LOCAL))
    assert box.call(body, str(tmp_path / "b.sock")).value == "bound"
    assert (tmp_path / "b.sock").exists()
    result = box.call(body, str(outside_dir / "b.sock"))
    assert result.value == errno.EACCES
    assert not (outside_dir / "b.sock").exists()
    assert only(result.events, syscall="bind").denied


def _calls_on_a_closed_socket(port: int) -> dict[str, object]:
    stale = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stale.close()  # fileno() is -1 now; CPython still makes the calls
    calls = {
        "sendto": lambda: stale.sendto(b"x", (INSIDE, port)),
        "connect": lambda: stale.connect((INSIDE, port)),
        "bind": lambda: stale.bind((INSIDE, 0)),
        "sendmsg": lambda: stale.sendmsg([b"x"], [], 0, (INSIDE, port)),
        "control: sendto outside": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
            b"x", (OUTSIDE, port)
        ),
    }
    return outcomes(calls)


def test_a_call_on_a_closed_descriptor_is_ebadf(udp_inside) -> None:
    """The kernel's answer (EBADF), not an internal error turned into EACCES and a denial: found by
    running anyio's suite (a datagram socket's send after close)."""
    result = Sandbox(Policy(net=LOCAL)).call(_calls_on_a_closed_socket, udp_inside.port)
    assert result.value == {
        "sendto": errno.EBADF,
        "connect": errno.EBADF,
        "bind": errno.EBADF,
        "sendmsg": errno.EBADF,
        "control: sendto outside": errno.EACCES,
    }
    assert result.internal_errors == []
    assert [(e.syscall, str(e.host)) for e in result.denials] == [("sendto", OUTSIDE)]


def _passive_lookup_and_connect_to_any(port: int) -> list[object]:
    # glibc sorts a passive lookup's answers (:: and 0.0.0.0) with a UDP connect to each.
    infos = socket.getaddrinfo(None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return [len(infos), tcp_send("0.0.0.0", port, b"to any")]


def test_the_unspecified_address_is_loopback(tcp_inside) -> None:
    """Linux sends a connect to 0.0.0.0 (or ::) to loopback: decided as loopback, not as an
    outside address (asyncio.start_server(host=None) does such a lookup; found running uvicorn's
    suite). Under a policy without 127.0.0.1 the same connect is denied: the control."""
    loopback = Policy(net=["127.0.0.1", "::1"])  # the default policy's loopback
    result = Sandbox(loopback).call(_passive_lookup_and_connect_to_any, tcp_inside.port)
    assert result.value == [2, "ok"]
    assert tcp_inside.received() == [b"to any"]
    assert result.denials == []
    assert {str(e.host) for e in result.events if e.syscall == "connect"} >= {"0.0.0.0", "::"}
    denied = Sandbox(Policy(net=[OUTSIDE])).call(_passive_lookup_and_connect_to_any, tcp_inside.port)
    assert denied.value == [2, errno.EACCES]
    assert tcp_inside.received() == [b"to any"]  # nothing more
    assert {str(e.host) for e in denied.denials} == {"0.0.0.0", "::"}


@pytest.mark.parametrize("rules", ["landlock", "noted fs_deny"])
def test_unix_bind_keeps_the_name_the_test_gave(tmp_path, rules: str) -> None:
    """A socket's name is the address it was bound with: getsockname() and its peers must see the
    test's own path (multiprocessing.connection, asyncio and uvicorn hand it on), never a path of
    the supervisor's. Found by running anyio's and uvicorn's suites under --sandlock-strict. Also
    when the ruleset could not express an fs_deny path (one not created yet, noted and left to the
    supervisor): Landlock still holds the write ceiling, so the child still binds itself."""

    def body(directory: str) -> list[object]:
        os.chdir(directory)
        out: list[object] = []
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(os.path.join(directory, "abs.sock"))
        server.listen(1)
        out.append(server.getsockname())
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(server.getsockname())  # reachable by the name it reports
        out.append(server.accept()[0].getsockname())
        relative = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        relative.bind("rel.sock")
        out.append(relative.getsockname())
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.bind(os.path.join(directory, "sender.sock"))
        sender.sendto(b"hi", "rel.sock")
        data, peer = relative.recvfrom(10)
        relative.sendto(b"back", peer)  # a reply to the sender's reported name arrives
        out += [data, peer, sender.recv(10)]
        return out

    denied = tmp_path / "later" / "x.sock"
    box = Sandbox(Policy(net=LOCAL, fs_deny=[denied] if rules == "noted fs_deny" else ()))
    assert bool(box.notes) == (rules == "noted fs_deny")
    result = box.call(body, str(tmp_path))
    abs_path, sender = str(tmp_path / "abs.sock"), str(tmp_path / "sender.sock")
    assert result.value == [abs_path, abs_path, "rel.sock", b"hi", sender, b"back"]
    binds = [e for e in result.events if e.syscall == "bind"]
    assert len(binds) == 3 and not any(e.denied for e in binds)
    if rules == "noted fs_deny":  # control: the noted path is still refused, by the supervisor
        (tmp_path / "later").mkdir()
        refused = box.call(_bind_unix, str(denied))
        assert refused.value == errno.EACCES and not denied.exists()
        event = only(refused.events, syscall="bind")
        assert (event.denied, event.reason) == (True, "under a denied path")


def _bind_unix(path: str) -> object:
    """Inside the sandbox: bind a unix socket to ``path``; its name, or the errno."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        return sock.getsockname()
    except OSError as exc:
        return exc.errno


def test_unix_bind_without_landlock_is_done_by_the_supervisor(tmp_path, outside_dir, monkeypatch) -> None:
    """On a kernel without Landlock nothing would hold a bind the child made to the checked path
    (a directory swapped for a symlink after the check), so the supervisor binds the socket itself,
    through the directory it checked: the socket is where the test asked, and its name is the
    supervisor's /proc/self/fd path (documented in SECURITY.md). Simulated by a capability probe
    that finds no Landlock (the Sandbox then builds no ruleset); the control is the bind outside."""
    from pytest_sandlock.engine import capabilities

    found = capabilities.probe()
    monkeypatch.setattr(capabilities, "probe", lambda: dataclasses.replace(found, landlock_abi=0))
    box = Sandbox(Policy(net=LOCAL))
    assert box.ruleset is None
    inside = box.call(_bind_unix, str(tmp_path / "in.sock"))
    assert isinstance(inside.value, str) and inside.value.startswith("/proc/self/fd/")
    assert inside.value.endswith("/in.sock")
    assert stat.S_ISSOCK((tmp_path / "in.sock").lstat().st_mode)
    assert not only(inside.events, syscall="bind").denied
    outside = box.call(_bind_unix, str(outside_dir / "out.sock"))
    assert outside.value == errno.EACCES
    assert not (outside_dir / "out.sock").exists()
    assert only(outside.events, syscall="bind").denied


# --------------------------------------------------------------------------------------------- bind


def test_tcp_bind_follows_the_net_rules() -> None:
    def body(host: str) -> object:
        s = socket.socket()
        try:
            s.bind((host, 0))
            return "bound"
        except OSError as exc:
            return exc.errno
        finally:
            s.close()

    box = Sandbox(Policy(net=LOCAL))
    assert box.call(body, INSIDE).value == "bound"
    result = box.call(body, OUTSIDE)
    assert result.value == errno.EACCES
    assert only(result.events, syscall="bind").host == IP2
    # An address no interface has (TEST-NET-3): the kernel's EADDRNOTAVAIL, no denial (urllib3's
    # source_address tests expect that error). The OUTSIDE bind above, a local address, is the control.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((NOT_LOCAL, 0))
        pytest.skip(f"{NOT_LOCAL} is an address of this machine")
    except OSError as exc:
        assert exc.errno == errno.EADDRNOTAVAIL
    finally:
        probe.close()
    missing = box.call(body, NOT_LOCAL)
    assert missing.value == errno.EADDRNOTAVAIL
    assert missing.denials == []
    assert only(missing.events, syscall="bind").errno == errno.EADDRNOTAVAIL


# --------------------------------------------------------------------------------------------- processes


CHILD_CONNECT = """
import socket, sys
s = socket.socket()
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.sendall(sys.argv[3].encode())
    print("ok")
except OSError as exc:
    print(exc.errno)
"""


def test_grandchild_is_confined_and_attributed(tcp_inside: TcpListener, tcp_outside: TcpListener) -> None:
    def body() -> list[object]:
        out: list[object] = [os.getpid()]
        for addr, text in ((tcp_inside.addr, "gc-in"), (tcp_outside.addr, "gc-out")):
            p = subprocess.run(
                [sys.executable, "-c", CHILD_CONNECT, addr[0], str(addr[1]), text],
                capture_output=True,
                text=True,
                timeout=30,
            )
            out.append([p.stdout.strip(), p.returncode])
        return out

    result = Sandbox(Policy(net=LOCAL)).call(body)
    root, inside, outside = result.value
    assert inside == ["ok", 0]
    assert outside == [str(errno.EACCES), 0]
    assert tcp_inside.received() == [b"gc-in"]
    assert tcp_outside.received() == []
    allowed = only(result.events, syscall="connect", denied=False)
    denied = only(result.events, syscall="connect", denied=True)
    execs = [e for e in result.events if e.syscall == "execve" and e.argv_contains(CHILD_CONNECT)]
    assert [e.pid for e in execs] == [allowed.pid, denied.pid]
    for event in (allowed, denied):
        assert event.pid != root
        assert event.parent_pid == root
    assert allowed.pid != denied.pid
    assert all(e.parent_pid == root for e in execs)
    assert execs[1].argv_contains("gc-out") and not execs[1].argv_contains("gc-in")


# --------------------------------------------------------------------------------------------- audit


def test_audit_mode_records_but_denies_nothing(tcp_inside: TcpListener, tcp_outside: TcpListener) -> None:
    result = Sandbox(Policy(net=LOCAL), audit=True).call(_send_both, tcp_inside.addr, tcp_outside.addr)
    assert result.value == ["ok", "ok"]
    assert tcp_inside.received() == [b"to-a"]
    assert tcp_outside.received() == [b"to-b"]
    out = only(result.events, syscall="connect", host=IP2)
    assert out.denied is False and out.errno is None
    assert out.reason == "audit: would be denied (not in net policy)"
    inside = only(result.events, syscall="connect", host=IP1)
    assert inside.denied is False and inside.reason is None


def test_audit_mode_does_not_deny_writes(repo_dir) -> None:
    target = repo_dir / f".sandlock-audit-probe-{os.getpid()}"

    def body() -> object:
        with open(target, "w") as fh:
            fh.write("x")
        return "written"

    try:
        result = Sandbox(Policy(net=LOCAL), audit=True).call(body)
        assert result.value == "written"
        assert target.read_text() == "x"
        event = only(result.events, path=str(target))
        assert event.denied is False and event.reason.startswith("audit: would be denied")
    finally:
        target.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- black hole


@pytest.fixture
def black_hole():
    """A 127.0.0.1 port whose accept queue is full: further SYNs are dropped, connects hang."""
    listener = socket.socket()
    listener.bind((INSIDE, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.socket()
    filler.connect((INSIDE, port))  # backlog 0 admits one connection, then the queue is full
    probe = socket.socket()
    probe.setblocking(False)
    assert probe.connect_ex((INSIDE, port)) == errno.EINPROGRESS
    if select.select([], [probe], [], 0.3)[1]:
        pytest.skip("this kernel completed a connect to a full accept queue: no black hole")
    probe.close()
    yield port
    filler.close()
    listener.close()


def test_black_holed_connect_does_not_stall_others(black_hole: int, tcp_inside: TcpListener) -> None:
    def body() -> dict[str, object]:
        state: dict[str, object] = {"hole": "pending"}

        def hang() -> None:
            s = socket.socket()
            try:
                s.connect((INSIDE, black_hole))
                state["hole"] = "connected"
            except OSError as exc:
                state["hole"] = exc.errno

        threading.Thread(target=hang, daemon=True).start()
        time.sleep(0.3)  # the black-holed connect is now with the supervisor
        start = time.monotonic()
        state["working"] = tcp_send(*tcp_inside.addr, b"not stalled")
        state["elapsed"] = time.monotonic() - start
        state["hole_after"] = state["hole"]
        return state

    start = time.monotonic()
    result = Sandbox(Policy(net=LOCAL, timeout=20)).call(body)
    total = time.monotonic() - start
    assert result.value["working"] == "ok"
    assert result.value["elapsed"] < 0.5
    assert result.value["hole_after"] == "pending"
    assert tcp_inside.received() == [b"not stalled"]
    assert total < 5
    # the completed connect is recorded; the abandoned one never completed
    assert only(result.events, syscall="connect", port=tcp_inside.port).denied is False


@pytest.mark.slow
def test_black_holed_connect_does_not_defeat_the_timeout(black_hole: int) -> None:
    from pytest_sandlock.engine.errors import SandboxCrash

    start = time.monotonic()
    with pytest.raises(SandboxCrash, match="timeout"):
        Sandbox(Policy(net=LOCAL, timeout=1)).call(connect_errno, INSIDE, black_hole)
    assert time.monotonic() - start < 4


@pytest.mark.slow
def test_signal_interrupts_black_holed_connect(black_hole: int) -> None:
    import signal

    def body() -> list[object]:
        class Alarm(Exception):
            pass

        def on_alarm(signum: int, frame: object) -> None:
            raise Alarm

        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        start = time.monotonic()
        try:
            connect_errno(INSIDE, black_hole)
            return ["connect returned", time.monotonic() - start]
        except Alarm:
            return ["alarm", time.monotonic() - start]

    from pytest_sandlock.engine.errors import SandboxCrash

    try:
        value = Sandbox(Policy(net=LOCAL, timeout=1.5)).call(body).value
    except SandboxCrash as exc:
        pytest.fail(f"the alarm never interrupted the connect: {exc}")
    assert value[0] == "alarm" and value[1] < 1


# --------------------------------------------------------------------------------------------- unix: rules


def _to_unix_sockets(stream: str, dgram: str, other: str) -> dict[str, object]:
    """Inside the sandbox: a stream connect+send, a datagram sendto, a connected datagram's send and a
    stream connect to a socket no rule names; "done" or the errno."""

    def stream_send(address: str, payload: bytes) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(address)
            sock.sendall(payload)

    def connected_dgram() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(dgram)
            sock.send(b"connected")  # no address: the kernel checks the peer the connect set

    return outcomes(
        {
            "stream": lambda: stream_send(stream, b"stream"),
            "dgram": lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"dgram", dgram),
            "connected dgram": connected_dgram,
            "other": lambda: stream_send(other, b"other"),
        }
    )


class _UnixTargets:
    """A stream listener, a datagram socket and another stream listener, bound by the pytest process
    (outside any sandbox) at ``prefix`` + "stream" / "dgram" / "other"."""

    def __init__(self, prefix: str) -> None:
        self.stream, self.other = UnixListener(prefix + "stream"), UnixListener(prefix + "other")  # type: ignore[arg-type]
        self.dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dgram.bind(prefix + "dgram")
        self.dgram.setblocking(False)
        self._datagrams: list[bytes] = []
        self.addresses = (prefix + "stream", prefix + "dgram", prefix + "other")

    def received(self) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """Everything received so far (stream connections and datagrams, in order)."""
        while True:
            try:
                self._datagrams.append(self.dgram.recv(100))
            except BlockingIOError:
                break
        return self.stream.received(), list(self._datagrams), self.other.received()

    def close(self) -> None:
        for sock in (self.stream, self.other, self.dgram):
            sock.close()


def test_unix_rule_reaches_an_abstract_name_bound_outside() -> None:
    """An abstract name bound outside the sandbox (a fixture's server) is out of reach (the supervisor
    refuses it, Landlock scoping would too), unless a unix:@ rule names it: then the supervisor
    connects and sends for the test, from outside its scope (found running anyio's suite)."""
    name = f"sandlock-rule-{os.getpid()}-{os.urandom(4).hex()}-"
    targets = _UnixTargets("\0" + name)
    try:
        denied = Sandbox(Policy(net=LOCAL)).call(_to_unix_sockets, *targets.addresses)
        assert denied.value == dict.fromkeys(["stream", "dgram", "connected dgram", "other"], errno.EACCES)
        assert targets.received() == ([], [], [])
        assert len(denied.denials) == 4
        rules = [*LOCAL, f"unix:@{name}stream", f"unix:@{name}dgram"]
        allowed = Sandbox(Policy(net=rules)).call(_to_unix_sockets, *targets.addresses)
        expected = {"stream": "done", "dgram": "done", "connected dgram": "done", "other": errno.EACCES}
        assert allowed.value == expected
        assert targets.received() == ([b"stream"], [b"dgram", b"connected"], [])
        assert [e.reason for e in allowed.denials] == ["abstract unix socket not created in this sandbox"]
        prefix = Sandbox(Policy(net=[f"unix:@{name}*"])).call(_to_unix_sockets, *targets.addresses)
        assert set(prefix.value.values()) == {"done"} and prefix.denials == []
        assert targets.received() == ([b"stream"] * 2, [b"dgram", b"connected"] * 2, [b"other"])
    finally:
        targets.close()


def test_unix_rule_reaches_a_socket_outside_the_writable_paths(outside_dir) -> None:
    """A socket file outside the writable paths (a database server's, under /run) is out of reach
    unless a unix: rule names it, or a directory above it; a denied path still wins."""
    run = outside_dir / "run"
    run.mkdir()
    targets = _UnixTargets(f"{run}/")
    try:
        denied = Sandbox(Policy(net=LOCAL)).call(_to_unix_sockets, *targets.addresses)
        assert set(denied.value.values()) == {errno.EACCES}
        assert targets.received() == ([], [], [])
        exact = [*LOCAL, f"unix:{run}/stream", f"unix:{run}/dgram"]
        allowed = Sandbox(Policy(net=exact)).call(_to_unix_sockets, *targets.addresses)
        expected = {"stream": "done", "dgram": "done", "connected dgram": "done", "other": errno.EACCES}
        assert allowed.value == expected
        assert targets.received() == ([b"stream"], [b"dgram", b"connected"], [])
        below = Sandbox(Policy(net=[f"unix:{outside_dir}/"])).call(_to_unix_sockets, *targets.addresses)
        assert set(below.value.values()) == {"done"} and below.denials == []
        everything = ([b"stream"] * 2, [b"dgram", b"connected"] * 2, [b"other"])
        assert targets.received() == everything
        fenced = Sandbox(Policy(net=[f"unix:{outside_dir}/"], fs_deny=[run])).call(
            _to_unix_sockets, *targets.addresses
        )
        assert set(fenced.value.values()) == {errno.EACCES}
        assert targets.received() == everything
    finally:
        targets.close()
