"""Unix socket escapes: abstract sockets created outside, socket files outside the writable set, symlinks.

A unix socket file outside the writable set (a Docker socket is root on the host) may only be reached when
the policy makes its directory writable; the supervisor resolves the path, opens it ``O_PATH`` and connects
through that descriptor, so a symlink (or a swapped directory) cannot redirect what it checked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from security_helpers import LOCAL, Outside, run_unconfined


def abstract_attempts(stream_name: bytes, dgram_name: bytes) -> dict[str, object]:
    out: dict[str, object] = {}
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(b"\0" + stream_name)
        s.sendall(b"abstract stream")
        out["connect"] = 0
    except OSError as exc:
        out["connect"] = exc.errno
    finally:
        s.close()
    d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for name, fn in (
        ("sendto", lambda: d.sendto(b"abstract sendto", b"\0" + dgram_name)),
        ("sendmsg", lambda: d.sendmsg([b"abstract sendmsg"], [], 0, b"\0" + dgram_name)),
    ):
        try:
            out[name] = fn()
        except OSError as exc:
            out[name] = exc.errno
    d.close()
    return out


@pytest.mark.sandbox(net=LOCAL)
def test_abstract_socket_created_outside_is_unreachable(outside: Outside) -> None:
    result = abstract_attempts(outside.abstract_name, outside.abstract_dgram_name)
    assert result == {"connect": errno.EACCES, "sendto": errno.EACCES, "sendmsg": errno.EACCES}


@pytest.mark.sandbox(net=LOCAL)
def test_an_abstract_name_nobody_bound_is_refused_by_the_kernel(sandlock_policy) -> None:  # type: ignore[no-untyped-def]
    """Nothing listens there: ECONNREFUSED, as without a sandbox, and no denial (X11 and D-Bus
    clients try an abstract name first; anyio's test_cannot_connect expects the refusal). The
    control is the test above: a name bound outside is a denial (EACCES)."""
    name = b"sandlock-nobody-" + os.urandom(8).hex().encode()
    assert abstract_attempts(name, name + b"-dgram") == {
        "connect": errno.ECONNREFUSED,
        "sendto": errno.ECONNREFUSED,
        "sendmsg": errno.ECONNREFUSED,
    }
    events = [e for e in sandlock_policy.events if (e.unix_path or "").startswith("@sandlock-nobody-")]
    assert len(events) == 3 and not any(e.denied for e in events)


@pytest.mark.sandbox(net=LOCAL)
def test_abstract_socket_bound_inside_is_reachable() -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(b"\0sandlock-security-own-" + str(os.getpid()).encode())
    server.listen(1)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(server.getsockname())
    client.sendall(b"own")
    conn, _ = server.accept()
    assert conn.recv(10) == b"own"


def test_abstract_socket_control(outside: Outside) -> None:
    result = run_unconfined(abstract_attempts, outside.abstract_name, outside.abstract_dgram_name)
    assert result == {"connect": 0, "sendto": 15, "sendmsg": 16}
    assert sorted(outside.drain()) == [
        ("abstract", b"abstract stream"),
        ("abstract-dgram", b"abstract sendmsg"),
        ("abstract-dgram", b"abstract sendto"),
    ]


# -------------------------------------------------------------------------------- socket files


def unix_connect(path: str) -> object:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        s.sendall(b"via " + os.fsencode(path))
        return 0
    except OSError as exc:
        return exc.errno
    finally:
        s.close()


def opath_connect(path: str) -> object:
    """Open the socket file O_PATH (no read right needed) and connect through /proc/self/fd/N."""
    fd = os.open(path, os.O_PATH)
    try:
        return unix_connect(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


@pytest.mark.sandbox(net=LOCAL)
def test_unix_socket_outside_writable_set_is_denied(outside: Outside, tmp_path: Path) -> None:
    assert unix_connect(outside.unix_path) == errno.EACCES
    relative = os.path.relpath(outside.unix_path, os.getcwd())
    assert unix_connect(relative) == errno.EACCES
    assert opath_connect(outside.unix_path) == errno.EACCES
    link = tmp_path / "innocent.sock"
    link.symlink_to(outside.unix_path)  # a symlink inside the writable set, pointing outside
    assert unix_connect(str(link)) == errno.EACCES
    dir_link = tmp_path / "dir"
    dir_link.symlink_to(outside.dir)  # a directory symlink in tmp_path
    assert unix_connect(str(dir_link / "outside.sock")) == errno.EACCES
    # a hard link would put the outside inode in the writable set: Landlock refuses to link across
    with pytest.raises(OSError) as info:
        os.link(outside.unix_path, tmp_path / "hard.sock")
    assert info.value.errno == errno.EXDEV


def test_unix_socket_control(outside: Outside, tmp_path: Path) -> None:
    link = tmp_path / "innocent.sock"
    link.symlink_to(outside.unix_path)
    assert run_unconfined(unix_connect, outside.unix_path) == 0
    assert run_unconfined(opath_connect, outside.unix_path) == 0
    assert run_unconfined(unix_connect, str(link)) == 0
    assert len([kind for kind, _ in outside.drain() if kind == "unix"]) == 3


@pytest.mark.sandbox(net=LOCAL, fs_write=[])
def test_unix_socket_in_writable_dir_is_reachable(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "own.sock"))
    server.listen(1)
    assert unix_connect(str(tmp_path / "own.sock")) == 0
    assert server.accept()[0].recv(100) == b"via " + os.fsencode(tmp_path / "own.sock")


SWAPS = 3000


@contextlib.contextmanager
def swapping(tmp: str, outside_dir: str) -> Iterator[None]:
    """While the block runs, another process atomically exchanges tmp/d (which must exist) with
    tmp/link, a symlink to the outside directory, again and again (renameat2 RENAME_EXCHANGE)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    os.symlink(outside_dir, f"{tmp}/link")
    pid = os.fork()
    if pid == 0:
        a, b = f"{tmp}/d".encode(), f"{tmp}/link".encode()
        while True:
            libc.renameat2(-100, a, -100, b, 2)  # RENAME_EXCHANGE
    try:
        while not os.path.islink(f"{tmp}/d"):  # the swapper is running
            pass
        yield
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def directory_swap_race(tmp: str, outside_dir: str, tries: int) -> dict[object, int]:
    """Connect to tmp/d/s (a socket of our own) while tmp/d is swapped with a symlink to the outside
    directory: the check and the connect must see the same inode."""
    os.mkdir(f"{tmp}/d")
    own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    own.bind(f"{tmp}/d/outside.sock")
    own.listen(4096)
    counts: dict[object, int] = {}
    with swapping(tmp, outside_dir):
        for _ in range(tries):
            result = unix_connect(f"{tmp}/d/outside.sock")
            counts[result] = counts.get(result, 0) + 1
    return counts


@pytest.mark.sandbox(net=LOCAL)
@pytest.mark.filterwarnings("error:sandlock:pytest.PytestWarning")  # a racing path is a denial, not an error
def test_directory_swap_race_reaches_nothing(outside: Outside, tmp_path: Path) -> None:
    counts = directory_swap_race(str(tmp_path), outside.dir, SWAPS)
    assert set(counts) <= {0, errno.EACCES, errno.ENOENT}, counts
    assert counts.get(0, 0) > 0, counts  # our own socket was reached: the race was really run


def test_directory_swap_race_control(outside: Outside, tmp_path: Path) -> None:
    counts = run_unconfined(directory_swap_race, str(tmp_path), outside.dir, 300)
    assert counts.get(0, 0) > 0
    assert any(kind == "unix" for kind, _ in outside.drain())


def bind_swap_race(tmp: str, outside_dir: str, tries: int) -> int:
    """Bind tmp/d/<n>.sock while tmp/d is swapped with a symlink to the outside directory. The
    child binds its own sockets (so that they keep their names): where the kernel creates the file,
    Landlock decides. Returns how many binds succeeded."""
    os.mkdir(f"{tmp}/d")
    bound = 0
    with swapping(tmp, outside_dir):
        for n in range(tries):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(f"{tmp}/d/{n}.sock")
                bound += 1
            except OSError:
                pass
            finally:
                sock.close()
    return bound


@pytest.mark.sandbox(net=LOCAL)
def test_bind_swap_race_creates_nothing_outside(outside: Outside, tmp_path: Path) -> None:
    before = set(os.listdir(outside.dir))
    bound = bind_swap_race(str(tmp_path), outside.dir, 1000)
    assert set(os.listdir(outside.dir)) == before  # not one socket file landed outside
    assert bound > 0  # some binds went into tmp_path/d: the race was really run


def test_bind_swap_race_control(outside: Outside, tmp_path: Path) -> None:
    before = set(os.listdir(outside.dir))
    run_unconfined(bind_swap_race, str(tmp_path), outside.dir, 300)
    landed = set(os.listdir(outside.dir)) - before
    assert any(name.endswith(".sock") for name in landed)
    for name in landed:
        os.unlink(os.path.join(outside.dir, name))


# -------------------------------------------------------------------------------- unix: rules


def symlink_flip_race(tmp: str, allowed: str, forbidden: str, tries: int) -> dict[object, int]:
    """Connect to tmp/x while another process flips it between a symlink to ``allowed`` and one to
    ``forbidden`` (RENAME_EXCHANGE with tmp/y): a rule naming ``allowed`` must never let a connect
    reach ``forbidden``."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    os.symlink(allowed, f"{tmp}/x")
    os.symlink(forbidden, f"{tmp}/y")
    pid = os.fork()
    if pid == 0:
        while True:
            libc.renameat2(-100, f"{tmp}/x".encode(), -100, f"{tmp}/y".encode(), 2)
    counts: dict[object, int] = {}
    try:
        while os.readlink(f"{tmp}/x") != forbidden:  # the flipper is running
            pass
        for _ in range(tries):
            result = unix_connect(f"{tmp}/x")
            counts[result] = counts.get(result, 0) + 1
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return counts


def _allowed_listener(directory: str) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(os.path.join(directory, "allowed.sock"))
    server.listen(4096)
    return server


def test_a_unix_rule_opens_its_socket_and_no_other(outside: Outside, tmp_path: Path) -> None:
    """A rule names one socket file outside the writable set: a symlink flipping between it and another
    outside socket never reaches the other (the supervisor connects to the resolved path it checked,
    through an O_PATH descriptor), and a plain symlink to the other is refused."""
    from pytest_sandlock.engine.policy import Policy
    from pytest_sandlock.engine.sandbox import Sandbox

    server = _allowed_listener(outside.dir)
    try:
        allowed = os.path.join(outside.dir, "allowed.sock")
        box = Sandbox(Policy(net=[*LOCAL, f"unix:{allowed}"]))
        counts = box.call(symlink_flip_race, str(tmp_path), allowed, outside.unix_path, 1000).value
        assert set(counts) == {0, errno.EACCES}, counts  # both targets were seen: the race ran
        assert box.call(unix_connect, outside.unix_path).value == errno.EACCES
    finally:
        server.close()


def test_a_unix_rule_control(outside: Outside, tmp_path: Path) -> None:
    server = _allowed_listener(outside.dir)
    try:
        allowed = os.path.join(outside.dir, "allowed.sock")
        counts = run_unconfined(symlink_flip_race, str(tmp_path), allowed, outside.unix_path, 300)
        assert counts.get(0, 0) == 300
        assert any(kind == "unix" for kind, _ in outside.drain())
    finally:
        server.close()
