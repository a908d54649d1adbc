"""Processes that try to outlive or outgrow their test: a detached grandchild, pytest SIGKILLed mid-test,
a fork bomb under ``max_processes``, memory beyond ``max_memory``."""

from __future__ import annotations

import errno
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from security_helpers import LOCAL, OUTSIDE, Outside, pid_alive, run_unconfined

HERE = os.path.dirname(os.path.abspath(__file__))


def detached_grandchild(pid_file: str, host: str, port: int) -> None:
    """setsid + double fork: a daemon that keeps trying to reach ``host:port``, one line per attempt."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open(pid_file, "w") as fh:
                fh.write(str(os.getpid()))
            while True:
                s = socket.socket()
                try:
                    s.connect((host, port))
                    s.sendall(b"daemon")
                except OSError:
                    pass
                finally:
                    s.close()
                time.sleep(0.02)
        os._exit(0)
    while not os.path.exists(pid_file) or not Path(pid_file).read_text():
        time.sleep(0.01)


@pytest.fixture
def grandchild_pid_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "grandchild.pid"
    yield path
    # teardown, in the pytest process: the daemon died with its test
    pid = int(path.read_text())
    alive = pid_alive(pid)
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"the detached grandchild {pid} outlived its test"


@pytest.mark.sandbox(net=LOCAL)
def test_detached_grandchild_dies_with_its_test(outside: Outside, grandchild_pid_file: Path) -> None:
    detached_grandchild(str(grandchild_pid_file), *outside.tcp_addr)
    pid = int(grandchild_pid_file.read_text())
    assert os.getsid(pid) != os.getsid(0) and pid_alive(pid)  # really detached, really running


def test_detached_grandchild_control(outside: Outside, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    run_unconfined(detached_grandchild, str(pid_file), *outside.tcp_addr)
    pid = int(pid_file.read_text())
    try:
        time.sleep(0.2)
        assert pid_alive(pid)  # without the sandbox the daemon outlives the code that started it
    finally:
        os.kill(pid, signal.SIGKILL)
    assert ("tcp", b"daemon") in outside.drain()


# ----------------------------------------------------------------------- pytest SIGKILLed mid-test

INNER = """
import os, socket, time, errno, pytest

@pytest.mark.sandbox(net=["127.0.0.1"])
def test_reaches_out_forever():
    state = {state!r}
    with open(state + "/test.pid", "w") as fh:
        fh.write(str(os.getpid()))
    if os.fork() == 0:
        log = open(state + "/attempts", "a", buffering=1)
        while True:
            s = socket.socket()
            try:
                s.connect(({host!r}, {port}))
                s.sendall(b"after pytest died")
                log.write("connected\\n")
            except OSError as exc:
                log.write(errno.errorcode.get(exc.errno, str(exc.errno)) + "\\n")
            finally:
                s.close()
            time.sleep(0.02)
    time.sleep(600)
"""


def _wait_for(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def _attempts(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_pytest_sigkilled_mid_test(outside: Outside, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_inner.py").write_text(INNER.format(state=str(state), host=OUTSIDE, port=outside.tcp_port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(suite)],
        cwd=str(suite),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    grandchild = 0
    try:
        test_pid = int(_wait_for(state / "test.pid"))
        deadline = time.monotonic() + 30
        while len(_attempts(state / "attempts")) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        before = _attempts(state / "attempts")
        assert before and set(before) == {"EACCES"}, before  # confined while pytest lives
        grandchild = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == test_pid)
        proc.kill()  # SIGKILL the pytest process mid-test
        proc.wait(10)
        deadline = time.monotonic() + 5
        while pid_alive(test_pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pid_alive(test_pid), "the sandboxed test process outlived pytest"
        count = len(_attempts(state / "attempts"))
        deadline = time.monotonic() + 5
        while len(_attempts(state / "attempts")) < count + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        after = _attempts(state / "attempts")[len(before) :]
        # a grandchild may keep running (nothing is left to kill it) but can reach nothing: every
        # supervised syscall fails with ENOSYS now that the listener is gone
        assert set(after) <= {"EACCES", "ENOSYS"} and "ENOSYS" in after, after
    finally:
        if proc.poll() is None:
            proc.kill()
        if grandchild and pid_alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def test_pytest_sigkilled_control(outside: Outside, tmp_path: Path) -> None:
    """The same inner test without the sandbox reaches the outside (and its child outlives pytest)."""
    state = tmp_path / "state"
    state.mkdir()
    suite = tmp_path / "suite"
    suite.mkdir()
    inner = INNER.format(state=str(state), host=OUTSIDE, port=outside.tcp_port)
    (suite / "test_inner.py").write_text(inner.replace('net=["127.0.0.1"]', "enabled=False"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(suite)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    test_pid = 0
    try:
        test_pid = int(_wait_for(state / "test.pid"))
        deadline = time.monotonic() + 30
        while "connected" not in _attempts(state / "attempts") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "connected" in _attempts(state / "attempts")
    finally:
        proc.kill()
        proc.wait(10)
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
            if test_pid and _ppid(pid) in (test_pid, 1) and _cmdline(pid).endswith(str(suite)):
                os.kill(pid, signal.SIGKILL)
    assert ("tcp", b"after pytest died") in outside.drain()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


# ------------------------------------------------------------------------------------- fork bomb

LIMIT = 8


def fork_bomb(result_dir: str) -> tuple[int, int]:
    """Every process forks as fast as it can; (forks that worked here, EAGAIN refusals here)."""
    ok = refused = 0
    children = []
    for _ in range(4 * LIMIT):
        try:
            pid = os.fork()
        except BlockingIOError:
            refused += 1
            continue
        if pid == 0:  # the children bomb too, then wait to be killed
            for _ in range(LIMIT):
                try:
                    if os.fork() == 0:
                        time.sleep(30)
                        os._exit(0)
                except OSError:
                    pass
            open(os.path.join(result_dir, str(os.getpid())), "w").close()
            time.sleep(30)
            os._exit(0)
        ok += 1
        children.append(pid)
    return ok, refused


@pytest.mark.sandbox(net=LOCAL, max_processes=LIMIT)
def test_fork_bomb_is_bounded(tmp_path: Path) -> None:
    ok, refused = fork_bomb(str(tmp_path))
    assert refused > 0
    time.sleep(0.3)
    live = _tree_size(os.getpid())
    assert live <= LIMIT, f"{live} processes under max_processes={LIMIT}"
    assert ok < LIMIT


def _tree_size(root: int) -> int:
    from pytest_sandlock.engine.proctree import descendants

    return len(descendants([root]))


def many_forks(n: int) -> int:
    """Fork ``n`` sleeping children; how many forks worked (the children are killed again)."""
    children = []
    for _ in range(n):
        try:
            pid = os.fork()
        except BlockingIOError:
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return len(children)


@pytest.mark.sandbox(net=LOCAL, max_processes=LIMIT)
def test_plain_forks_stop_at_the_limit() -> None:
    assert many_forks(4 * LIMIT) == LIMIT - 1  # the test process itself counts


def test_fork_bomb_control() -> None:
    assert run_unconfined(many_forks, 4 * LIMIT) == 4 * LIMIT


# ----------------------------------------------------------------------------------------- memory


def allocate(n: int) -> object:
    try:
        block = bytearray(n)
        return len(block)
    except MemoryError:
        return "MemoryError"


@pytest.mark.sandbox(net=LOCAL, max_memory="64M")
def test_memory_beyond_max_memory() -> None:
    assert allocate(256 * 1024 * 1024) == "MemoryError"
    assert allocate(8 * 1024 * 1024) == 8 * 1024 * 1024  # within the limit, allocations work
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with pytest.raises((ValueError, OSError)):
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert resource.getrlimit(resource.RLIMIT_AS) == (soft, hard)


def test_memory_control() -> None:
    assert run_unconfined(allocate, 256 * 1024 * 1024) == 256 * 1024 * 1024


_ = errno


# ---------------------------------------------------------------- an end of run that cannot be checked
def _two_generations(pid_file: str) -> None:
    """The test leaves a child, which has a child of its own: the tree still has depth at the end."""
    if os.fork() == 0:
        if os.fork() == 0:
            with open(pid_file, "a") as fh:
                fh.write(f"{os.getpid()}\n")
            time.sleep(60)
            os._exit(0)
        with open(pid_file, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(60)
        os._exit(0)
    while len(Path(pid_file).read_text().split()) < 2:
        time.sleep(0.01)


def _no_more_descriptors(_pid: int) -> None:
    """Called in the supervising process once the child runs: from now on it can open nothing."""
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def _supervise_two_generations(pid_file: str, starve: bool) -> tuple[list[str], list[int], list[bool]]:
    """Runs in a plain fork of the test process (its descriptor limit is lowered, and that must not
    touch pytest's). Returns the tree problems, the two processes' ids and whether each is alive."""
    from pytest_sandlock.engine.policy import Policy
    from pytest_sandlock.engine.sandbox import Sandbox

    sandbox = Sandbox(
        Policy(net=LOCAL, fs_write=[os.path.dirname(pid_file)]),
        on_launch=_no_more_descriptors if starve else None,
    )
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        result = sandbox.call(_two_generations, pid_file)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    pids = [int(p) for p in Path(pid_file).read_text().split()]
    time.sleep(0.05)
    return result.tree_problems, pids, [pid_alive(p) for p in pids]


def test_unreadable_proc_at_the_end_is_reported(tmp_path: Path) -> None:
    """When the supervising process cannot open /proc at the end of a run (here: no descriptor left,
    EMFILE), an unreadable list of processes is not taken for an empty one: the run says the tree
    could not be checked. (Before, it ended quietly and both processes outlived the test.)"""
    pid_file = tmp_path / "pids"
    pid_file.write_text("")
    problems, pids, alive = run_unconfined(_supervise_two_generations, str(pid_file), True)
    try:
        assert problems, "a tree that could not be listed was reported as checked"
        assert "could not check that every process of the sandbox has ended" in problems[0]
        assert "Too many open files" in problems[0]
        assert len(pids) == 2
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_unreadable_proc_control(tmp_path: Path) -> None:
    """The same run with descriptors to spare: no problem, and both processes are gone."""
    pid_file = tmp_path / "pids"
    pid_file.write_text("")
    problems, pids, alive = run_unconfined(_supervise_two_generations, str(pid_file), False)
    try:
        assert problems == []
        assert len(pids) == 2 and alive == [False, False]
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
