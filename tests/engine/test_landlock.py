"""Tests of the Landlock engine module.

Confinement is irreversible, so every test that restricts does it in a forked child (see
``run_in_child``), and every denial is paired with a positive control: the same operation succeeding
where the rule does not apply, so a Landlock that did nothing would fail the test.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from pytest_sandlock.engine import landlock
from pytest_sandlock.engine.errors import PolicyError
from pytest_sandlock.engine.landlock import LandlockSpec

ABI = landlock.abi_version()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="Landlock is not available on this kernel")
needs_net = pytest.mark.skipif(ABI < 4, reason="TCP port rules need Landlock ABI 4")
needs_scopes = pytest.mark.skipif(ABI < 6, reason="scopes need Landlock ABI 6")


# --- helpers --------------------------------------------------------------------------------------


def run_in_child(body: Callable[[], Any]) -> Any:
    """Run ``body`` in a forked child and return its JSON-able result; never returns in the child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 70
        try:
            os.close(read_end)
            try:
                payload = {"ok": True, "value": body()}
            except BaseException:
                payload = {"ok": False, "error": traceback.format_exc()}
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(write_end, data) :]
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        pytest.fail(f"child died without a result (wait status {status:#x})")
    result = json.loads(b"".join(chunks))
    if not result["ok"]:
        pytest.fail("child raised:\n" + result["error"])
    return result["value"]


def confined(spec: LandlockSpec, body: Callable[[], Any]) -> Any:
    """Build the ruleset here (as the launcher does), apply it in a forked child, run ``body`` there."""
    ruleset = landlock.get_ruleset(spec)

    def child() -> Any:
        landlock.set_no_new_privs()
        landlock.restrict_self(ruleset)
        return body()

    return run_in_child(child)


def attempt(operation: Callable[[], Any]) -> str:
    """'ok', or the errno name of the OSError the operation raised."""
    try:
        operation()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok"


def read(path: Path) -> Callable[[], str]:
    return lambda: path.read_text()


def write(path: Path, text: str = "x") -> Callable[[], int]:
    return lambda: path.write_text(text)


def listen_tcp() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    return listener


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def connect_tcp(port: int) -> Callable[[], None]:
    def connect() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass

    return connect


def pending_connection(listener: socket.socket) -> bool:
    """True when a connection waits on the (non-blocking) listener; accepts and closes it."""
    if not select.select([listener], [], [], 0.2)[0]:
        return False
    conn, _ = listener.accept()
    conn.close()
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return port_of(sock)


def bind_tcp(port: int) -> Callable[[], None]:
    def bind() -> None:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))

    return bind


@pytest.fixture
def tcp_listeners() -> Iterator[tuple[socket.socket, socket.socket]]:
    allowed, other = listen_tcp(), listen_tcp()
    yield allowed, other
    allowed.close()
    other.close()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


# --- what the kernel supports ---------------------------------------------------------------------


def test_masks_per_abi() -> None:
    assert landlock.handled_fs_rights(0) == 0
    assert landlock.handled_fs_rights(1) == (1 << 13) - 1
    assert landlock.handled_fs_rights(2) & landlock.ACCESS_FS_REFER
    assert not landlock.handled_fs_rights(2) & landlock.ACCESS_FS_TRUNCATE
    assert landlock.handled_fs_rights(3) & landlock.ACCESS_FS_TRUNCATE
    assert not landlock.handled_fs_rights(4) & landlock.ACCESS_FS_IOCTL_DEV
    assert landlock.handled_fs_rights(5) == landlock.handled_fs_rights(7) == (1 << 16) - 1
    assert landlock.handled_net_rights(3) == 0
    assert landlock.handled_net_rights(4) == landlock.ACCESS_NET_BIND_TCP | landlock.ACCESS_NET_CONNECT_TCP
    assert landlock.scopes(5) == 0
    assert landlock.scopes(6) == landlock.SCOPE_ABSTRACT_UNIX_SOCKET | landlock.SCOPE_SIGNAL


def test_describe_names() -> None:
    old = landlock.describe(3)
    assert old["abi"] == 3
    assert "TRUNCATE" in old["fs"] and "IOCTL_DEV" not in old["fs"]
    assert old["net"] == [] and old["scopes"] == []
    assert {"IOCTL_DEV", "BIND_TCP", "CONNECT_TCP", "SIGNAL"} <= set(old["missing"])
    new = landlock.describe(7)
    assert new["net"] == ["BIND_TCP", "CONNECT_TCP"]
    assert new["scopes"] == ["ABSTRACT_UNIX_SOCKET", "SIGNAL"]
    assert new["missing"] == []


@needs_landlock
def test_abi_version_on_this_kernel() -> None:
    assert landlock.abi_version() == 7
    assert landlock.describe()["abi"] == 7
    assert landlock.describe()["available"] is True


def test_spec_is_hashable() -> None:
    one = LandlockSpec(fs_write=("/tmp",), tcp_connect_ports=frozenset({80}))
    two = LandlockSpec(fs_write=("/tmp",), tcp_connect_ports=frozenset({80}))
    assert one == two and hash(one) == hash(two)
    assert {one: 1}[two] == 1


@needs_landlock
def test_get_ruleset_caches_per_spec(tmp_path: Path) -> None:
    spec = LandlockSpec(fs_write=(str(tmp_path),))
    first = landlock.get_ruleset(spec)
    assert landlock.get_ruleset(LandlockSpec(fs_write=(str(tmp_path),))) is first
    assert landlock.get_ruleset(LandlockSpec(fs_write=(str(tmp_path),), scope_signal=False)) is not first
    # The kernel makes ruleset fds close-on-exec: they reach forked children, never executed programs.
    assert fcntl.fcntl(first.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


@needs_landlock
def test_restrict_closes_inherited_rulesets_in_child(tmp_path: Path) -> None:
    applied = landlock.get_ruleset(LandlockSpec(fs_write=(str(tmp_path),)))
    other = landlock.get_ruleset(LandlockSpec(fs_write=(str(tmp_path),), tcp_bind_ports=frozenset()))
    fds = (applied.fd, other.fd)

    def body() -> list[str]:
        return [attempt(functools.partial(os.fstat, fd)) for fd in fds]

    # A confined child must not keep fds through which it could add rules to the parent's rulesets.
    assert confined(LandlockSpec(fs_write=(str(tmp_path),)), body) == ["EBADF", "EBADF"]
    assert not applied.closed and not other.closed
    os.fstat(applied.fd)  # still open in the parent, for the next test


def test_build_rejects_bad_port() -> None:
    if ABI < 4:
        pytest.skip("ports are only validated when handled")
    with pytest.raises(PolicyError):
        landlock.build_ruleset(LandlockSpec(tcp_connect_ports=frozenset({70000})))


@needs_landlock
def test_missing_paths_are_noted(tmp_path: Path) -> None:
    ruleset = landlock.build_ruleset(
        LandlockSpec(fs_write=(str(tmp_path / "nope"),), fs_deny=(str(tmp_path / "gone"),))
    )
    try:
        assert any("nope" in note for note in ruleset.notes)
        assert any("gone" in note for note in ruleset.notes)
    finally:
        ruleset.close()


# --- file system ----------------------------------------------------------------------------------


@needs_landlock
def test_write_outside_fs_write_is_denied(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "file.txt"
    inside = tmp_path / "file.txt"
    assert attempt(write(outside, "parent")) == "ok"  # control: writable without Landlock

    def body() -> dict[str, str]:
        return {
            "inside": attempt(write(inside)),
            "outside": attempt(write(outside)),
            "read_outside": attempt(read(outside)),
            "mkdir_outside": attempt(lambda: os.mkdir(outside.parent / "d")),
        }

    result = confined(LandlockSpec(fs_write=(str(tmp_path),)), body)
    assert result == {"inside": "ok", "outside": "EACCES", "read_outside": "ok", "mkdir_outside": "EACCES"}
    assert outside.read_text() == "parent"


def interpreter_paths() -> tuple[str, ...]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, "/usr", "/lib", "/lib64", "/etc"}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return tuple(sorted(p for p in paths if os.path.exists(p)))


@needs_landlock
def test_read_outside_fs_read_is_denied(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    assert not any(str(tmp_path).startswith(p.rstrip("/") + "/") for p in interpreter_paths())
    unimported = next(m for m in ("colorsys", "tabnanny", "wave", "netrc", "sched") if m not in sys.modules)

    def body() -> dict[str, str]:
        return {
            "secret": attempt(read(secret)),
            "list": attempt(lambda: os.listdir(tmp_path)),
            "import": attempt(lambda: __import__(unimported)),
            "exec": attempt(lambda: subprocess.run(["true"], check=True)),
        }

    # Control: the same calls without Landlock.
    assert run_in_child(body) == {"secret": "ok", "list": "ok", "import": "ok", "exec": "ok"}
    result = confined(LandlockSpec(fs_read=interpreter_paths()), body)
    assert result == {"secret": "EACCES", "list": "EACCES", "import": "ok", "exec": "ok"}


@needs_landlock
def test_dev_null_as_a_file_rule(tmp_path: Path) -> None:
    def body() -> dict[str, str]:
        return {
            "devnull": attempt(lambda: Path("/dev/null").write_text("x")),
            "tmp": attempt(write(tmp_path / "f")),
        }

    assert confined(LandlockSpec(fs_write=("/dev/null",)), body) == {"devnull": "ok", "tmp": "EACCES"}


def make_tree(root: Path) -> None:
    (root / "secret.txt").write_text("secret")
    (root / "sibling.txt").write_text("sibling")
    (root / "sub").mkdir()
    (root / "sub" / "deep.txt").write_text("deep")
    (root / "vault").mkdir()
    (root / "vault" / "key").write_text("key")


@needs_landlock
def test_deny_inside_readable_dir(tmp_path: Path) -> None:
    make_tree(tmp_path)

    def body() -> dict[str, str]:
        return {
            "secret": attempt(read(tmp_path / "secret.txt")),
            "sibling": attempt(read(tmp_path / "sibling.txt")),
            "deep": attempt(read(tmp_path / "sub" / "deep.txt")),
            "list_parent": attempt(lambda: os.listdir(tmp_path)),
            "system": attempt(lambda: Path("/etc/passwd").read_text()),
        }

    everything_ok = dict.fromkeys(["secret", "sibling", "deep", "list_parent", "system"], "ok")
    assert confined(LandlockSpec(), body) == everything_ok  # control: same rule, no deny
    result = confined(LandlockSpec(fs_deny=(str(tmp_path / "secret.txt"),)), body)
    # Only files are denied under tmp_path, so the directories along the path stay listable.
    assert result == {**everything_ok, "secret": "EACCES"}


@needs_landlock
def test_several_denies_and_a_denied_directory(tmp_path: Path) -> None:
    make_tree(tmp_path)

    def body() -> dict[str, str]:
        return {
            "secret": attempt(read(tmp_path / "secret.txt")),
            "key": attempt(read(tmp_path / "vault" / "key")),
            "list_vault": attempt(lambda: os.listdir(tmp_path / "vault")),
            "sibling": attempt(read(tmp_path / "sibling.txt")),
            "deep": attempt(read(tmp_path / "sub" / "deep.txt")),
            "list_sub": attempt(lambda: os.listdir(tmp_path / "sub")),
        }

    spec = LandlockSpec(fs_deny=(str(tmp_path / "secret.txt"), str(tmp_path / "vault")))
    assert confined(spec, body) == {
        "secret": "EACCES",
        "key": "EACCES",
        "list_vault": "EACCES",
        "sibling": "ok",
        "deep": "ok",
        "list_sub": "ok",
    }


@needs_landlock
def test_deny_inside_writable_dir(tmp_path: Path) -> None:
    make_tree(tmp_path)

    def body() -> dict[str, str]:
        return {
            "write_secret": attempt(write(tmp_path / "secret.txt")),
            "read_secret": attempt(read(tmp_path / "secret.txt")),
            "write_key": attempt(write(tmp_path / "vault" / "key")),
            "write_sibling": attempt(write(tmp_path / "sibling.txt", "changed")),
            "create_in_sub": attempt(write(tmp_path / "sub" / "new.txt")),
            # Documented limit: nothing can be created directly in a directory along a denied path.
            "create_in_parent": attempt(write(tmp_path / "new.txt")),
        }

    spec = LandlockSpec(
        fs_write=(str(tmp_path),), fs_deny=(str(tmp_path / "secret.txt"), str(tmp_path / "vault"))
    )
    assert confined(spec, body) == {
        "write_secret": "EACCES",
        "read_secret": "EACCES",
        "write_key": "EACCES",
        "write_sibling": "ok",
        "create_in_sub": "ok",
        "create_in_parent": "EACCES",
    }
    assert (tmp_path / "secret.txt").read_text() == "secret"  # control: the parent can read it
    assert (tmp_path / "sibling.txt").read_text() == "changed"


@needs_landlock
def test_deny_covering_a_rule_drops_it(tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    spec = LandlockSpec(fs_write=(str(tmp_path / "inner"),), fs_deny=(str(tmp_path),))
    assert any("inside denied" in note for note in landlock.get_ruleset(spec).notes)
    assert confined(spec, lambda: attempt(write(tmp_path / "inner" / "f"))) == "EACCES"


# --- network --------------------------------------------------------------------------------------


@needs_net
def test_tcp_connect_only_to_allowed_ports(tcp_listeners: tuple[socket.socket, socket.socket]) -> None:
    allowed, other = tcp_listeners

    def body() -> dict[str, str]:
        return {
            "allowed": attempt(connect_tcp(port_of(allowed))),
            "other": attempt(connect_tcp(port_of(other))),
        }

    assert confined(LandlockSpec(tcp_connect_ports=frozenset({port_of(allowed)})), body) == {
        "allowed": "ok",
        "other": "EACCES",
    }
    assert pending_connection(allowed)
    assert not pending_connection(other)  # the denied connect never reached the listener
    # Control: without a connect rule, the same child reaches the other listener.
    assert confined(LandlockSpec(), body) == {"allowed": "ok", "other": "ok"}
    assert pending_connection(other)


@needs_net
def test_tcp_connect_empty_set_means_none(tcp_listeners: tuple[socket.socket, socket.socket]) -> None:
    allowed, _ = tcp_listeners
    assert confined(
        LandlockSpec(tcp_connect_ports=frozenset()), lambda: attempt(connect_tcp(port_of(allowed)))
    ) == ("EACCES")
    assert not pending_connection(allowed)


@needs_net
def test_tcp_connect_with_a_large_port_set(tcp_listeners: tuple[socket.socket, socket.socket]) -> None:
    allowed, other = tcp_listeners
    ports = {p for p in range(20000, 21000) if p != port_of(other)} | {port_of(allowed)}
    spec = LandlockSpec(tcp_connect_ports=frozenset(ports))
    assert landlock.get_ruleset(spec).rule_count >= len(ports)

    def body() -> list[str]:
        return [attempt(connect_tcp(port_of(allowed))), attempt(connect_tcp(port_of(other)))]

    assert confined(spec, body) == ["ok", "EACCES"]
    assert pending_connection(allowed) and not pending_connection(other)


@needs_net
def test_tcp_bind_only_to_allowed_ports() -> None:
    allowed_port, other_port = free_port(), free_port()

    def body() -> dict[str, str]:
        return {"allowed": attempt(bind_tcp(allowed_port)), "other": attempt(bind_tcp(other_port))}

    assert confined(LandlockSpec(tcp_bind_ports=frozenset({allowed_port})), body) == {
        "allowed": "ok",
        "other": "EACCES",
    }
    assert attempt(bind_tcp(other_port)) == "ok"  # control: the port itself was free


# --- scopes ---------------------------------------------------------------------------------------


def signal_outside_and_own_child(target: int) -> dict[str, str]:
    """Send SIGCONT to ``target`` (outside the domain) and SIGTERM to a child forked here."""
    result = {"outside": attempt(lambda: os.kill(target, signal.SIGCONT))}
    pid = os.fork()
    if pid == 0:
        try:
            signal.pause()
        finally:
            os._exit(0)
    result["own_child"] = attempt(lambda: os.kill(pid, signal.SIGTERM))
    os.waitpid(pid, 0)
    return result


@needs_scopes
def test_signal_scope(sleeper: subprocess.Popen[bytes]) -> None:
    def body() -> dict[str, str]:
        return signal_outside_and_own_child(sleeper.pid)

    assert confined(LandlockSpec(), body) == {"outside": "EPERM", "own_child": "ok"}
    assert confined(LandlockSpec(scope_signal=False), body) == {"outside": "ok", "own_child": "ok"}  # control
    assert sleeper.poll() is None


@needs_scopes
def test_abstract_unix_socket_scope() -> None:
    name = f"\0pytest-sandlock-{os.getpid()}-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen(4)

    def connect() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(name)

    def pair() -> None:
        one, two = socket.socketpair()
        with one, two:
            one.sendall(b"ping")
            assert two.recv(4) == b"ping"

    def body() -> dict[str, str]:
        return {"abstract": attempt(connect), "socketpair": attempt(pair)}

    try:
        assert confined(LandlockSpec(), body) == {"abstract": "EPERM", "socketpair": "ok"}
        control: Optional[dict[str, str]] = confined(LandlockSpec(scope_abstract_unix=False), body)
        assert control == {"abstract": "ok", "socketpair": "ok"}
    finally:
        listener.close()
