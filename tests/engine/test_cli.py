"""``python -m pytest_sandlock check | run``, as a user types it, against live loopback listeners."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandbox_helpers import TcpListener, pid_alive

import pytest_sandlock
from pytest_sandlock.engine import landlock

MAIN = Path(pytest_sandlock.__file__).with_name("__main__.py")
pytestmark = pytest.mark.skipif(not MAIN.exists(), reason="pytest_sandlock/__main__.py does not exist yet")

CONNECT = (
    "import socket, sys\n"
    "s = socket.socket()\n"
    "s.connect((sys.argv[1], int(sys.argv[2])))\n"
    "s.sendall(b'via cli')\n"
)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest_sandlock", *args], capture_output=True, text=True, timeout=timeout
    )


def test_check_reports_the_kernel() -> None:
    done = cli("check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Landlock ABI:          {landlock.abi_version()}" in done.stdout
    assert "pidfd_getfd" in done.stdout


def test_run_denies_and_reports_destination(tcp_inside: TcpListener, tcp_outside: TcpListener) -> None:
    denied = cli(
        "run", "--net", "127.0.0.1", "--", sys.executable, "-c", CONNECT, *map(str, tcp_outside.addr)
    )
    assert denied.returncode == 1  # the command's own exit code (uncaught PermissionError)
    assert f"[Errno {errno.EACCES}]" in denied.stderr
    assert f"127.0.0.2:{tcp_outside.port}" in denied.stderr and "denied" in denied.stderr
    assert tcp_outside.received() == []
    # positive control: the same command allowed reaches the listener, and reports no denial
    allowed = cli(
        "run", "--net", "127.0.0.1", "--", sys.executable, "-c", CONNECT, *map(str, tcp_inside.addr)
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "denied" not in allowed.stderr
    assert tcp_inside.received() == [b"via cli"]


def test_run_net_none_denies_loopback(tcp_inside: TcpListener) -> None:
    done = cli("run", "--net", "none", "--", sys.executable, "-c", CONNECT, *map(str, tcp_inside.addr))
    assert done.returncode == 1
    assert f"127.0.0.1:{tcp_inside.port}" in done.stderr
    assert tcp_inside.received() == []


def test_run_json_events(tcp_outside: TcpListener) -> None:
    done = cli(
        "run",
        "--json",
        "--net",
        "127.0.0.1",
        "--",
        sys.executable,
        "-c",
        CONNECT,
        *map(str, tcp_outside.addr),
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["returncode"] == 1
    connect = [e for e in report["events"] if e["syscall"] == "connect"]
    assert connect == [
        {
            **connect[0],
            "host": "127.0.0.2",
            "port": tcp_outside.port,
            "denied": True,
            "errno": errno.EACCES,
            "protocol": "tcp",
        }
    ]
    assert any(e["syscall"] == "execve" and e["argv"][:2] == [sys.executable, "-c"] for e in report["events"])


def test_run_exit_code_and_fs_write(outside_dir: Path) -> None:
    target = outside_dir / "cli.txt"
    script = f"echo hi > {target}"
    assert cli("run", "--", "/bin/sh", "-c", "exit 7").returncode == 7
    denied = cli("run", "--", "/bin/sh", "-c", script)
    assert denied.returncode != 0
    assert not target.exists()
    assert str(target) in denied.stderr
    allowed = cli("run", "--fs-write", str(outside_dir), "--", "/bin/sh", "-c", script)
    assert allowed.returncode == 0, allowed.stderr
    assert target.read_text() == "hi\n"


def test_run_timeout_kills_the_tree(tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    start = time.monotonic()
    done = cli("run", "--timeout", "0.5", "--", "/bin/sh", "-c", f"sleep 30 & echo $! > {pid_file}; sleep 30")
    assert time.monotonic() - start < 10
    assert done.returncode != 0
    assert "timed out" in done.stderr
    background = int(pid_file.read_text())  # the background job existed...
    assert not pid_alive(background)  # ...and did not outlive the run
